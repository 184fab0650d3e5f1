/*
 * test_shm_caps.c - shared memory negotiated in HELLO: a client that does
 * not declare BK_HELLO_SHM gets the bytes of shared-memory messages over
 * its socket (broker-protocol(7), SHARED MEMORY, "Receivers without shared
 * memory"), whoever sent them and however: replies of `brokerctl serve
 * --echo`, one-way messages, publications fanned out to a mix of
 * receivers; the owner's buffers come back either way.  Idle segments of
 * a pool are dropped after BROKER_OPT_SHM_IDLE_MS, brokerd's fds with
 * them, and the page's HELLO and SEG_DROP dumps do what the page says
 * against brokerd.
 *
 * The receivers without shared memory are raw clients: they speak the
 * wire format as a client written from the page alone would, and check
 * that no SEGMENT frame and no descriptor ever reaches them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create, F_ADD_SEALS */
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <criterion/criterion.h>
#include "error.h"
#include "frame.h"
#include "sockio.h"
#include "harness.h"
#include "mandump.h"

TH_BROKER_SUITE(shm_caps, 300);

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* ---- a raw client without shared memory ---------------------------------- */

typedef struct raw {
    int fd;
    bk_welcome_t w;
    uint8_t *pkt;
    size_t len, off;            /* the packet being walked */
} raw_t;

static void raw_open(raw_t *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = th_raw_connect_hello_caps(br.sock, 0, &c->w);
    c->pkt = malloc(BK_MAX_MAX_PACKET);
    TH_CHECK(c->pkt != NULL, "oom");
}

static void raw_close(raw_t *c)
{
    close(c->fd);
    free(c->pkt);
}

/* The next frame from the broker (hang-guarded). */
static void raw_next(raw_t *c, bk_hdr_t *h, const uint8_t **pl)
{
    while (c->off >= c->len) {
        ssize_t n = th_raw_recv(c->fd, c->pkt, BK_MAX_MAX_PACKET);
        TH_CHECK(n > 0, "raw client: no frame (%zd)", n);
        c->len = (size_t)n;
        c->off = 0;
    }
    TH_CHECK(bk_pkt_next(c->pkt, c->len, &c->off, h, pl) == 1,
             "raw client: bad packet");
    TH_CHECK(h->type != BK_T_SEGMENT && h->nfds == 0,
             "a client without shared memory was sent a segment");
    TH_CHECK(h->type != BK_T_DATA || !(h->flags & BK_F_SHM),
             "a client without shared memory was sent a descriptor");
}

/* A control request; returns the reply's code (and payload to out). */
static int raw_ctrl(raw_t *c, uint32_t op, uint32_t req, const void *pl,
                    size_t len, uint8_t *out)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .aux = op, .stream = req, .length = (uint32_t)len };
    const uint8_t *p;

    TH_OK(th_raw_send(c->fd, &h, pl, NULL, 0));
    for (;;) {
        raw_next(c, &h, &p);
        if (h.type == BK_T_CTRL_REPLY && h.stream == req) {
            if (out)
                memcpy(out, p, h.length);
            return bk_err_from_wire(h.aux);
        }
    }
}

/* One whole message from the broker, its fragments put together: the
 * first DATA frame that starts one, then its continuations on the same
 * stream.  *first gets the first fragment's header.  Returns the body
 * (malloc'd, without the name or topic) and its length in *len. */
static uint8_t *raw_recv_msg(raw_t *c, bk_hdr_t *first, size_t *len)
{
    size_t cap = MIB, n = 0;
    uint8_t *body = malloc(cap);
    bk_hdr_t h;
    const uint8_t *p;
    bool more;

    TH_CHECK(body != NULL, "oom");
    do
        raw_next(c, &h, &p);
    while (h.type != BK_T_DATA);
    TH_CHECK(!(h.flags & BK_F_CONT), "a message began with a continuation");
    *first = h;
    do {
        size_t skip = h.flags & (BK_F_NAME | BK_F_TOPIC) ? h.aux : 0;
        size_t add = h.length - skip;
        if (n + add > cap) {
            while (n + add > cap)
                cap *= 2;
            body = realloc(body, cap);
            TH_CHECK(body != NULL, "oom");
        }
        memcpy(body + n, p + skip, add);
        n += add;
        more = h.flags & BK_F_MORE;
        if (more) {
            do
                raw_next(c, &h, &p);
            while (h.type != BK_T_DATA && h.type != BK_T_CLOSE);
            TH_CHECK(h.type == BK_T_DATA, "message cut by CLOSE %u", h.aux);
            TH_CHECK(h.stream == first->stream &&
                     (h.flags & BK_F_CONT) && h.aux == 0,
                     "fragment 0x%x on stream 0x%x in a message on 0x%x",
                     h.flags, h.stream, first->stream);
        }
    } while (more);
    first->flags |= h.flags & BK_F_CLOSE;       /* as the message ends */
    *len = n;
    return body;
}

/* Send `len` bytes of data as a request to `name` on stream `sid`, in
 * fragments of a packet each. */
static void raw_request(raw_t *c, const char *name, uint32_t sid,
                        const uint8_t *data, size_t len)
{
    size_t nl = strlen(name), room = c->w.max_packet - BK_HDR_SIZE, off = 0;
    uint8_t *pl = malloc(room);
    bool firstf = true;

    TH_CHECK(pl != NULL, "oom");
    do {
        size_t hl = firstf ? nl : 0;
        size_t n = len - off < room - hl ? len - off : room - hl;
        bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .stream = sid, .length = (uint32_t)(hl + n) };
        h.flags = firstf ? BK_F_OPEN | BK_F_NAME : BK_F_CONT;
        h.aux = firstf ? (uint32_t)nl : 0;
        if (off + n < len)
            h.flags |= BK_F_MORE;
        memcpy(pl, name, hl);
        memcpy(pl + hl, data + off, n);
        TH_OK(th_raw_send(c->fd, &h, pl, NULL, 0));
        off += n;
        firstf = false;
    } while (off < len);
    free(pl);
}

/* ---- helpers --------------------------------------------------------------- */

static void wait_registered(broker_t *b, const char *name)
{
    uint64_t id;

    for (int i = 0;; i++) {
        int r = broker_resolve(b, name, &id);
        if (r == 0)
            return;
        cr_assert_eq(r, -ENOENT, "resolve: %s", broker_strerror(r));
        cr_assert_lt(i, TH_HANG_MS / 10, "%s never registered", name);
        usleep(10000);
    }
}

static void check_body(const uint8_t *got, size_t got_len, size_t want_len,
                       uint64_t seed)
{
    long bad;

    cr_assert_eq(got_len, want_len, "got %zu bytes, want %zu", got_len,
                 want_len);
    bad = th_pattern_check(got, got_len, seed, 0);
    cr_assert_eq(bad, -1, "bytes differ from offset %ld", bad);
}

/* Ping until the pool of b holds `want` buffers (hang guard only). */
static void await_buffers(broker_t *b, uint64_t want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        broker_shm_stats_t st;
        TH_OK(broker_ping(b, TH_HANG_MS));
        broker_shm_stats(b, &st);
        if (st.buffers == want)
            return;
        TH_CHECK(th_now_ms() < end, "pool holds %llu buffers, want %llu",
                 (unsigned long long)st.buffers, (unsigned long long)want);
        th_nap(&us);
    }
}

/* ---- tests ------------------------------------------------------------------ */

/* The HELLO of broker-protocol(7), HANDSHAKE, declares SHM: brokerd
 * welcomes it and sends that client segments and descriptors. */
Test(shm_caps, page_hello_declares_shm)
{
    md_dump_t dumps[32], *hs[2];
    size_t nd = md_load(TOP_SRCDIR "/man/broker-protocol.7", dumps, 32);
    broker_t *b = th_connect(&br);
    uint8_t *pkt = malloc(BK_MAX_MAX_PACKET), *data = malloc(MIB);
    uint8_t reg[4 + 8];
    bool segment = false, desc = false;
    uint64_t id = 0;
    int fd;

    cr_assert(pkt && data);
    cr_assert_eq(md_section(dumps, nd, "HANDSHAKE", hs, 2), 1);
    fd = th_raw_connect(br.sock);
    TH_OK(th_raw_send_bytes(fd, hs[0]->b, hs[0]->len, NULL, 0));
    memcpy(reg, "raw.shm", 7);
    while (!desc) {
        ssize_t n = th_raw_recv(fd, pkt, BK_MAX_MAX_PACKET);
        size_t off = 0;
        const uint8_t *pl;
        bk_hdr_t h;

        cr_assert_gt(n, 0, "no frame (%zd)", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1) {
            if (h.type == BK_T_WELCOME) {
                bk_hdr_t r = { .version = 1, .type = BK_T_CTRL, .stream = 1,
                               .aux = BK_OP_REGISTER, .length = 7 };
                id = bk_get64(pl);
                TH_OK(th_raw_send(fd, &r, reg, NULL, 0));
            } else if (h.type == BK_T_CTRL_REPLY) {
                cr_assert_eq(h.aux, 0, "REGISTER: %u", h.aux);
                th_pattern(data, MIB, 9, 0);
                TH_OK(broker_send(b, "raw.shm", data, MIB, NULL, 0));
            } else if (h.type == BK_T_SEGMENT) {
                cr_assert_eq(h.dest, id);
                segment = true;
            } else if (h.type == BK_T_DATA) {
                cr_assert(segment, "a descriptor before its SEGMENT");
                cr_assert(h.flags & BK_F_SHM, "flags 0x%x", h.flags);
                desc = true;
            } else {
                cr_assert_fail("unexpected frame type %u", h.type);
            }
        }
    }
    close(fd);
    free(pkt);
    free(data);
    broker_close(b);
    th_broker_stop(&br);
}

/* A client written from the page alone asks `brokerctl serve --echo` (a
 * libbroker client: replies from 256 KiB on go through its pool) and gets
 * a 1 MiB and a 64 MiB reply over its socket, byte-exact. */
Test(shm_caps, raw_client_gets_echo_replies_over_the_socket)
{
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "serve",
                           "svc.echo", "--echo", NULL };
    size_t sizes[] = { MIB, th_scaled(64 * MIB, 4 * MIB) };
    char log[160];
    broker_t *b = th_connect(&br);
    raw_t c;
    pid_t pid;
    int st;

    snprintf(log, sizeof(log), "%s/serve.out", br.dir);
    pid = th_run_bg(argv, NULL, log);
    wait_registered(b, "svc.echo");
    raw_open(&c);
    for (unsigned i = 0; i < 2; i++) {
        uint8_t *data = malloc(sizes[i]), *got;
        bk_hdr_t h;
        size_t n;

        cr_assert_not_null(data);
        th_pattern(data, sizes[i], 40 + i, 0);
        raw_request(&c, "svc.echo", 1 + i, data, sizes[i]);
        got = raw_recv_msg(&c, &h, &n);
        cr_assert_eq(h.stream, 1 + i, "reply on stream %u", h.stream);
        cr_assert(h.flags & BK_F_CLOSE, "the reply does not end the stream");
        cr_assert(h.flags & BK_F_MORE, "a %zu-byte reply in one frame", n);
        check_body(got, n, sizes[i], 40 + i);
        free(got);
        free(data);
    }
    raw_close(&c);
    st = th_signal_join(pid, SIGTERM);
    cr_assert(TH_EXITED(st, 0), "serve on SIGTERM: 0x%x", st);
    broker_close(b);
    th_broker_stop(&br);
}

/* One-way messages from a libbroker client's pool to a raw client: the
 * bytes arrive in order with the socket-sized ones around them, and
 * every pool buffer comes back to the sender. */
Test(shm_caps, oneway_from_pool_to_raw_client)
{
    broker_t *b = th_connect(&br);
    size_t sizes[] = { MIB, 100, 3 * MIB + 7, 0 };
    broker_buf_t *buf = NULL;
    raw_t c;

    raw_open(&c);
    cr_assert_eq(raw_ctrl(&c, BK_OP_REGISTER, 1, "raw.ear", 7, NULL), 0);
    for (unsigned i = 0; i < 3; i++) {
        uint8_t *data = malloc(sizes[i]);
        cr_assert_not_null(data);
        th_pattern(data, sizes[i], 7 + i, 0);
        TH_OK(broker_send(b, "raw.ear", data, sizes[i], NULL, 0));
        free(data);
    }
    /* and an empty body written in place */
    TH_OK(broker_buf_alloc(b, 1, &buf, TH_HANG_MS));
    TH_OK(broker_buf_send(b, "raw.ear", buf, 0));
    broker_buf_free(b, buf);
    for (unsigned i = 0; i < 4; i++) {
        bk_hdr_t h;
        size_t n;
        uint8_t *got = raw_recv_msg(&c, &h, &n);

        cr_assert_eq(h.flags & (BK_F_OPEN | BK_F_NAME | BK_F_CLOSE),
                     BK_F_OPEN | BK_F_NAME | BK_F_CLOSE,
                     "message %u: flags 0x%x", i, h.flags);
        cr_assert_eq(h.source, broker_client_id(b));
        check_body(got, n, sizes[i], 7 + i);
        free(got);
    }
    await_buffers(b, 0);
    raw_close(&c);
    broker_close(b);
    th_broker_stop(&br);
}

/* A publication from the pool to one subscriber that maps shared memory
 * and one that does not: the first gets a view, the second the bytes, in
 * publish order with the socket-sized publication between; the publisher
 * gets its buffers back once both are done. */
Test(shm_caps, publication_to_mixed_subscribers)
{
    broker_t *pub = th_connect(&br), *s1 = th_connect(&br);
    size_t sizes[] = { MIB, 50, 2 * MIB };
    uint8_t req[8 + 8];
    uint8_t out[4];
    uint32_t id1, id2;
    raw_t c;

    raw_open(&c);
    memset(req, 0, sizeof(req));
    bk_put16(req + 2, 5);
    memcpy(req + 8, "big.>", 5);
    cr_assert_eq(raw_ctrl(&c, BK_OP_SUBSCRIBE, 1, req, 8 + 5, out), 0);
    id2 = bk_get32(out);
    TH_OK(broker_subscribe(s1, "big.>", NULL, BROKER_SUB_DROP, &id1));
    for (unsigned i = 0; i < 3; i++) {
        uint8_t *data = malloc(sizes[i]);
        cr_assert_not_null(data);
        th_pattern(data, sizes[i], 60 + i, 0);
        TH_OK(broker_publish(pub, "big.data", data, sizes[i], NULL, 0));
        free(data);
    }
    for (unsigned i = 0; i < 3; i++) {
        broker_msg_t *m = th_recv(s1);
        bk_hdr_t h;
        size_t n;
        uint8_t *got = raw_recv_msg(&c, &h, &n);

        cr_assert_eq(!!(m->flags & BROKER_MSGF_SHM), sizes[i] >= 262144,
                     "publication %u: flags 0x%x", i, m->flags);
        check_body(m->data, m->len, sizes[i], 60 + i);
        cr_assert_eq(m->sub_id, id1);
        broker_msg_free(m);
        cr_assert(h.flags & BK_F_TOPIC, "no TOPIC on publication %u", i);
        cr_assert_eq(h.dest, id2, "dest %llu, want the subscription id",
                     (unsigned long long)h.dest);
        check_body(got, n, sizes[i], 60 + i);
        free(got);
    }
    await_buffers(pub, 0);
    raw_close(&c);
    broker_close(s1);
    broker_close(pub);
    th_broker_stop(&br);
}

/* A raw receiver that never reads and then disconnects: the bodies queued
 * for it are dropped, the sender gets every buffer back, and brokerd
 * holds no more fds than before. */
Test(shm_caps, unread_bodies_released_when_receiver_goes)
{
    broker_t *b = th_connect(&br), *r = th_connect(&br);
    uint8_t *data = malloc(MIB);
    uint64_t end;
    unsigned us = 500;
    broker_msg_t *m;
    int base;
    raw_t c;

    cr_assert_not_null(data);
    th_pattern(data, MIB, 3, 0);
    /* the pool's segment exists and is registered before the count */
    th_register(r, "lib.ear");
    TH_OK(broker_send(b, "lib.ear", data, MIB, NULL, 0));
    m = th_recv(r);
    cr_assert(m->flags & BROKER_MSGF_SHM);
    broker_msg_free(m);
    await_buffers(b, 0);
    base = th_fd_count(br.pid);
    raw_open(&c);
    cr_assert_eq(raw_ctrl(&c, BK_OP_REGISTER, 1, "raw.deaf", 8, NULL), 0);
    for (int i = 0; i < 3; i++)
        TH_OK(broker_send(b, "raw.deaf", data, MIB, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    raw_close(&c);
    await_buffers(b, 0);
    end = th_now_ms() + TH_HANG_MS;
    for (;;) {
        int n;
        TH_OK(broker_ping(b, TH_HANG_MS));
        n = th_fd_count(br.pid);
        if (n == base)
            break;
        TH_CHECK(th_now_ms() < end, "brokerd holds %d fds, had %d", n, base);
        th_nap(&us);
    }
    free(data);
    broker_close(r);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- idle segments ------------------------------------------------------ */

/* A segment with no buffer in use for BROKER_OPT_SHM_IDLE_MS is dropped:
 * the sender's pool shrinks to nothing, brokerd's fd for it goes (back to
 * the count before the segment existed), `brokerctl shm` lists nothing,
 * the receiver unmaps its view; the next large message gets a new
 * segment and arrives intact. */
Test(shm_caps, idle_segments_are_dropped)
{
    broker_t *b = th_connect(&br), *r = th_connect(&br);
    uint8_t *data = malloc(MIB);
    broker_shm_stats_t st;
    broker_msg_t *m;
    th_output_t o;
    uint64_t end;
    unsigned us = 500;
    int base, mine;

    cr_assert_not_null(data);
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_IDLE_MS, 200));
    th_register(r, "lib.ear");
    TH_OK(broker_ping(b, TH_HANG_MS));
    base = th_fd_count(br.pid);
    mine = th_fd_count(getpid());
    for (uint64_t round = 0; round < 2; round++) {
        th_pattern(data, MIB, 70 + round, 0);
        TH_OK(broker_send(b, "lib.ear", data, MIB, NULL, 0));
        m = th_recv(r);
        cr_assert(m->flags & BROKER_MSGF_SHM);
        check_body(m->data, m->len, MIB, 70 + round);
        broker_msg_free(m);
        broker_shm_stats(b, &st);
        cr_assert_eq(st.segments, 1, "round %llu: %u segments",
                     (unsigned long long)round, st.segments);
        end = th_now_ms() + TH_HANG_MS;
        for (;;) {
            int n, mn;
            TH_OK(broker_ping(b, TH_HANG_MS));
            TH_OK(broker_ping(r, TH_HANG_MS));      /* reads SEG_DROP */
            broker_shm_stats(b, &st);
            n = th_fd_count(br.pid);
            mn = th_fd_count(getpid());
            if (st.segments == 0 && st.mapped == 0 && n == base &&
                mn == mine)
                break;
            TH_CHECK(th_now_ms() < end, "round %llu: %u segments, brokerd "
                     "%d fds (had %d), this process %d fds (had %d)",
                     (unsigned long long)round, st.segments, n, base, mn,
                     mine);
            th_nap(&us);
        }
        cr_assert(TH_EXITED(th_ctl(br.sock, &o, "--no-legend", "shm",
                                   NULL), 0));
        cr_assert_eq(o.out_len, 0, "brokerctl shm lists: %s", o.out);
        th_output_free(&o);
    }
    free(data);
    broker_close(r);
    broker_close(b);
    th_broker_stop(&br);
}

/* With the option at 0 a segment stays however long it is idle (the
 * broker still holds it after the idle time of the test above). */
Test(shm_caps, idle_drop_off)
{
    broker_t *b = th_connect(&br), *r = th_connect(&br);
    uint8_t *data = malloc(MIB);
    broker_shm_stats_t st;
    broker_msg_t *m;

    cr_assert_not_null(data);
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_IDLE_MS, 0));
    th_register(r, "lib.ear");
    th_pattern(data, MIB, 1, 0);
    TH_OK(broker_send(b, "lib.ear", data, MIB, NULL, 0));
    m = th_recv(r);
    broker_msg_free(m);
    await_buffers(b, 0);
    usleep(400 * 1000);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 1);
    cr_assert_eq(th_status_value(b, "shm_segments"), 1);
    free(data);
    broker_close(r);
    broker_close(b);
    th_broker_stop(&br);
}

/* The SEG_DROP of broker-protocol(7), "Dropping a segment", sent by a raw
 * owner of segment 3: brokerd closes its fd at once, lists nothing more,
 * and takes segid 3 again afterwards (no receiver ever had it). */
Test(shm_caps, page_seg_drop_unregisters)
{
    md_dump_t dumps[32], *sm[8], *drop = NULL;
    size_t nd = md_load(TOP_SRCDIR "/man/broker-protocol.7", dumps, 32);
    size_t n = md_section(dumps, nd, "SHARED MEMORY", sm, 8);
    uint8_t reg[BK_SEG_REG_SIZE];
    int base, fd;
    raw_t c;

    for (size_t i = 0; i < n; i++)
        if (sm[i]->b[1] == BK_T_SEG_DROP)
            drop = sm[i];
    cr_assert_not_null(drop, "no SEG_DROP dump in SHARED MEMORY");
    raw_open(&c);
    cr_assert_eq(raw_ctrl(&c, BK_OP_PING, 1, NULL, 0, NULL), 0);
    base = th_fd_count(br.pid);
    bk_put32(reg, 3);
    bk_put32(reg + 4, 0);
    bk_put64(reg + 8, 4096);
    for (int round = 0; round < 2; round++) {
        bk_hdr_t h = { .version = 1, .type = BK_T_CTRL, .stream = 2,
                       .aux = BK_OP_SEGMENT, .nfds = 1,
                       .length = sizeof(reg) };
        const uint8_t *pl;

        fd = memfd_create("caps", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, 4096), 0);
        cr_assert_eq(fcntl(fd, F_ADD_SEALS, BK_SEALS_REQUIRED), 0);
        TH_OK(th_raw_send(c.fd, &h, reg, &fd, 1));
        close(fd);
        do
            raw_next(&c, &h, &pl);
        while (h.type != BK_T_CTRL_REPLY);
        cr_assert_eq(h.aux, 0, "round %d: SEGMENT refused: %u", round,
                     h.aux);
        cr_assert_eq(th_fd_count(br.pid), base + 1);
        TH_OK(th_raw_send_bytes(c.fd, drop->b, drop->len, NULL, 0));
        cr_assert_eq(raw_ctrl(&c, BK_OP_PING, 3, NULL, 0, NULL), 0);
        cr_assert_eq(th_fd_count(br.pid), base, "round %d: fd kept", round);
    }
    raw_close(&c);
    th_broker_stop(&br);
}

/* ---- a reserved pool ----------------------------------------------------- */

/* Resident shared memory of this process (RssShmem), in bytes. */
static uint64_t rss_shmem(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kib = 0;

    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "RssShmem: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return (uint64_t)kib << 10;
}

/* Ping until the pool of b has `want` segments (hang guard only). */
static void await_segments(broker_t *b, uint32_t want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        broker_shm_stats_t st;
        TH_OK(broker_ping(b, TH_HANG_MS));
        broker_shm_stats(b, &st);
        if (st.segments == want)
            return;
        TH_CHECK(th_now_ms() < end, "pool has %u segments, want %u",
                 st.segments, want);
        th_nap(&us);
    }
}

/* BROKER_OPT_SHM_RESERVE sets up whole segments at once, every page of
 * them resident before the call returns; large messages then take no new
 * memory, the reserved segments outlive BROKER_OPT_SHM_IDLE_MS, and a
 * lower reservation lets the rest idle out. */
Test(shm_caps, reserved_pool_is_set_up_at_once_and_kept)
{
    broker_t *b = th_connect(&br), *r = th_connect(&br);
    uint8_t *data = malloc(768 * KIB);
    broker_shm_stats_t st;
    uint64_t rss0;

    cr_assert_not_null(data);
    th_register(r, "lib.ear");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_SEGMENT_SIZE, MIB));
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_IDLE_MS, 100));
    rss0 = rss_shmem();
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_RESERVE, 2 * MIB + 1));
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 3, "rounded up to whole segments: %u",
                 st.segments);
    cr_assert_eq(st.mapped, 3 * MIB);
    cr_assert_eq(st.buffers, 0);
    cr_assert_geq(rss_shmem(), rss0 + 3 * MIB, "resident: %llu more bytes",
                  (unsigned long long)(rss_shmem() - rss0));
    cr_assert_eq(th_status_value(b, "shm_segments"), 3, "registered");

    /* three messages, the receiver holding each: one per segment, no new
     * memory */
    broker_msg_t *m[3];
    for (unsigned i = 0; i < 3; i++) {
        th_pattern(data, 768 * KIB, 90 + i, 0);
        TH_OK(broker_send(b, "lib.ear", data, 768 * KIB, NULL, 0));
        m[i] = th_recv(r);
        cr_assert(m[i]->flags & BROKER_MSGF_SHM, "message %u by socket", i);
        check_body(m[i]->data, m[i]->len, 768 * KIB, 90 + i);
    }
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 3);
    for (unsigned i = 0; i < 3; i++)
        broker_msg_free(m[i]);
    await_buffers(b, 0);

    /* idle for longer than SHM_IDLE_MS: kept */
    usleep(400 * 1000);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 3, "reserved segments dropped: %u left",
                 st.segments);

    /* a lower reservation: the first segment stays, the others go */
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_RESERVE, MIB));
    await_segments(b, 1);
    usleep(300 * 1000);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 1);
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_RESERVE, 0));
    await_segments(b, 0);
    free(data);
    broker_close(r);
    broker_close(b);
    th_broker_stop(&br);
}

/* A reservation the pool's limit does not allow: -ENOSPC, and what fit
 * stays reserved and usable. */
Test(shm_caps, reserve_beyond_the_pool_limit_is_enospc)
{
    broker_t *b = th_connect(&br), *r = th_connect(&br);
    uint8_t *data = malloc(MIB);
    broker_shm_stats_t st;
    broker_msg_t *m;

    cr_assert_not_null(data);
    th_register(r, "lib.ear");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_SEGMENT_SIZE, MIB));
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_POOL_MAX, 2 * MIB));
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_IDLE_MS, 50));
    cr_assert_eq(broker_set_option(b, BROKER_OPT_SHM_RESERVE, 8 * MIB),
                 -ENOSPC);
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 2, "%u segments", st.segments);
    cr_assert_eq(st.mapped, 2 * MIB);
    th_pattern(data, MIB, 7, 0);
    TH_OK(broker_send(b, "lib.ear", data, MIB, NULL, 0));
    m = th_recv(r);
    cr_assert(m->flags & BROKER_MSGF_SHM);
    check_body(m->data, m->len, MIB, 7);
    broker_msg_free(m);
    await_buffers(b, 0);
    usleep(250 * 1000);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_shm_stats(b, &st);
    cr_assert_eq(st.segments, 2, "what fit is kept");
    free(data);
    broker_close(r);
    broker_close(b);
    th_broker_stop(&br);
}
