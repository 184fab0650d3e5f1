/*
 * test_packed.c - packets that hold many frames (broker-protocol(7)
 * PACKETS AND FRAMES), built by hand on a raw socket and received with
 * libbroker and with raw sockets: order across the frames of a packet and
 * across packets, a packet with one bad frame (nothing of it acts), file
 * descriptors on a frame in the middle of a packet, packed publications
 * to block and drop subscribers, flow control and fairness with packed
 * senders.
 *
 * Counts scale with BROKER_TEST_SCALE (contrib/dev.sh --valgrind runs
 * them at a tenth).  No test measures time: every wait is for an event or
 * a state of the broker, bounded by TH_HANG_MS.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

/* Frames per packet the tests pack (as the library is about to). */
#define PER_PACKET 100u

static th_broker_t br;

static void setup(void)
{
    th_broker_start(&br, NULL);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(packed, .init = setup, .fini = teardown, .timeout = 600);

/* ---- building packets ---------------------------------------------------- */

/* A packet being built: frames back to back, and the fds sent with it. */
typedef struct pk {
    uint8_t *buf;
    size_t len, cap;
    int fds[BK_MAX_FDS_HARD];
    unsigned nfds;
    unsigned nframes;
} pk_t;

static void pk_init(pk_t *p, size_t cap)
{
    memset(p, 0, sizeof(*p));
    p->buf = malloc(cap);
    p->cap = cap;
    TH_CHECK(p->buf != NULL, "oom");
}

static void pk_fini(pk_t *p)
{
    free(p->buf);
    p->buf = NULL;
}

static void pk_reset(pk_t *p)
{
    p->len = 0;
    p->nfds = 0;
    p->nframes = 0;
}

static bool pk_room(const pk_t *p, size_t payload)
{
    return p->len + BK_HDR_SIZE + payload <= p->cap;
}

/* Append a frame: the header h (its length set here) and a payload in two
 * parts (a name or topic, then data; either may be empty). */
static void pk_frame(pk_t *p, bk_hdr_t h, const void *a, size_t alen,
                     const void *b, size_t blen)
{
    TH_CHECK(pk_room(p, alen + blen), "packet full (%zu + %zu)", p->len,
             alen + blen);
    h.version = h.version ? h.version : BK_PROTO_VERSION;
    h.length = (uint32_t)(alen + blen);
    bk_hdr_encode(&h, p->buf + p->len);
    p->len += BK_HDR_SIZE;
    if (alen)
        memcpy(p->buf + p->len, a, alen);
    p->len += alen;
    if (blen)
        memcpy(p->buf + p->len, b, blen);
    p->len += blen;
    p->nframes++;
}

static void pk_add_fds(pk_t *p, const int *fds, unsigned n)
{
    TH_CHECK(p->nfds + n <= BK_MAX_FDS_HARD, "too many fds");
    memcpy(p->fds + p->nfds, fds, n * sizeof(int));
    p->nfds += n;
}

/* Room in fd's send buffer for packets of max_packet bytes, as libbroker
 * makes it (the kernel refuses a packet larger than the buffer). */
static void raw_sndbuf_for(int fd, uint32_t max_packet)
{
    int want = (int)(2 * max_packet + 4096), cur = 0;
    socklen_t sl = sizeof(cur);

    TH_CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want)) == 0,
             "SO_SNDBUF: %s", strerror(errno));
    TH_CHECK(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) == 0 &&
             cur > (int)max_packet, "SO_SNDBUF is %d, packets up to %u", cur,
             max_packet);
}

/* Send the packet (waiting while the socket is full) and start a new one. */
static void pk_send(int fd, pk_t *p)
{
    int r = th_raw_send_bytes(fd, p->buf, p->len, p->fds, p->nfds);

    TH_CHECK(r == 0, "sending a packet of %u frames (%zu bytes): %s",
             p->nframes, p->len, strerror(-r));
    pk_reset(p);
}

/* Frame headers a client sends. */
static bk_hdr_t hdr_oneway(uint32_t sid, uint64_t dest)
{
    return (bk_hdr_t){ .type = BK_T_DATA, .flags = BK_F_OPEN | BK_F_CLOSE,
                       .stream = sid, .dest = dest };
}

static bk_hdr_t hdr_oneway_name(uint32_t sid, size_t namelen)
{
    return (bk_hdr_t){ .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_NAME,
                       .stream = sid, .aux = (uint32_t)namelen };
}

static bk_hdr_t hdr_pub(uint32_t sid, size_t topiclen, uint8_t more)
{
    return (bk_hdr_t){ .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_TOPIC |
                                (more ? BK_F_MORE : BK_F_CLOSE),
                       .stream = sid, .aux = (uint32_t)topiclen };
}

/* A fragment of a multi-fragment message: first (OPEN|MORE to dest, or
 * OPEN|TOPIC|MORE with a topic), middle (CONT|MORE) or last
 * (CONT|CLOSE). */
enum frag { FRAG_FIRST, FRAG_MID, FRAG_LAST };

static bk_hdr_t hdr_frag(uint32_t sid, enum frag k, uint64_t dest)
{
    bk_hdr_t h = { .type = BK_T_DATA, .stream = sid };

    switch (k) {
    case FRAG_FIRST:
        h.flags = BK_F_OPEN | BK_F_MORE;
        h.dest = dest;
        break;
    case FRAG_MID:
        h.flags = BK_F_CONT | BK_F_MORE;
        break;
    case FRAG_LAST:
        h.flags = BK_F_CONT | BK_F_CLOSE;
        break;
    }
    return h;
}

/* ---- message contents ------------------------------------------------------ */

/* Message `seq` of sender `tag`: the u64 seq, then a pattern that depends
 * on both, so a message delivered twice, from the wrong sender or with
 * bytes of another shows. */
static uint64_t msg_seed(uint32_t tag, uint64_t seq)
{
    return (uint64_t)tag << 40 ^ seq;
}

static void msg_fill(uint8_t *buf, size_t len, uint32_t tag, uint64_t seq)
{
    TH_CHECK(len >= 8, "message too short");
    bk_put64(buf, seq);
    th_pattern(buf + 8, len - 8, msg_seed(tag, seq), 0);
}

/* Small messages of 8 to 64 bytes, the length a function of seq. */
static size_t small_len(uint64_t seq)
{
    return 8 + (size_t)(seq * 7 % 57);
}

/* m is a one-way DATA message, `seq` of sender tag, `len` bytes. */
static void msg_check(const broker_msg_t *m, size_t len, uint32_t tag,
                      uint64_t seq)
{
    TH_CHECK(m->kind == BROKER_MSG_DATA, "message %llu: got %s (code %d)",
             (unsigned long long)seq, th_kind_str(m->kind), m->code);
    TH_CHECK(m->len >= 8 && bk_get64(m->data) == seq,
             "got message %llu, expected %llu (out of order or lost)",
             m->len >= 8 ? (unsigned long long)bk_get64(m->data) : 0ull,
             (unsigned long long)seq);
    TH_CHECK(m->len == len, "message %llu: %zu bytes, expected %zu",
             (unsigned long long)seq, m->len, len);
    TH_CHECK(th_pattern_check((const uint8_t *)m->data + 8, len - 8,
                              msg_seed(tag, seq), 0) < 0,
             "message %llu: bytes differ", (unsigned long long)seq);
}

/* ---- raw clients -------------------------------------------------------------- */

static uint8_t rxbuf[BK_MAX_MAX_PACKET];

/* One packet with its fds (the caller owns them), hang-guarded: returns
 * its length, 0 on EOF, or a negative errno. */
static ssize_t raw_recv_fds(int fd, int *fds, unsigned *nfds)
{
    for (;;) {
        ssize_t n;

        *nfds = 0;
        n = bk_sock_recv(fd, rxbuf, sizeof(rxbuf), fds, nfds,
                         BK_MAX_FDS_HARD);
        if (n != -EAGAIN)
            return n;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, TH_HANG_MS) != 1)
            return -ETIMEDOUT;
    }
}

/* The last words of a connection the broker closes: every frame until
 * EOF, which must be exactly one ERROR, whose stream and code we return. */
struct last_words {
    int nframes, nerrors;
    uint32_t err_stream, err_aux;
};

static struct last_words raw_last_words(int fd)
{
    struct last_words w = { 0, 0, 0, 0 };

    for (;;) {
        int fds[BK_MAX_FDS_HARD];
        unsigned nfds;
        ssize_t n = raw_recv_fds(fd, fds, &nfds);
        const uint8_t *payload;
        size_t off = 0;
        bk_hdr_t h;

        bk_close_fds(fds, nfds);
        if (n == 0 || n == -ECONNRESET)
            return w;
        TH_CHECK(n > 0, "waiting for the broker to hang up: %s",
                 strerror((int)-n));
        while (bk_pkt_next(rxbuf, (size_t)n, &off, &h, &payload) == 1) {
            w.nframes++;
            if (h.type == BK_T_ERROR) {
                w.nerrors++;
                w.err_stream = h.stream;
                w.err_aux = h.aux;
            }
        }
    }
}

static bk_hdr_t hdr_ping(uint32_t req)
{
    return (bk_hdr_t){ .type = BK_T_CTRL, .stream = req, .aux = BK_OP_PING };
}

/* Wait for the reply to PING `req` (frames before it that are not the
 * reply are skipped; an ERROR fails). */
static void raw_await_pong(int fd, uint32_t req)
{
    for (;;) {
        int fds[BK_MAX_FDS_HARD];
        unsigned nfds;
        ssize_t n = raw_recv_fds(fd, fds, &nfds);
        const uint8_t *payload;
        size_t off = 0;
        bk_hdr_t r;

        bk_close_fds(fds, nfds);
        TH_CHECK(n > 0, "PING: no reply (%zd)", n);
        while (bk_pkt_next(rxbuf, (size_t)n, &off, &r, &payload) == 1) {
            if (r.type == BK_T_CTRL_REPLY && r.stream == req) {
                TH_CHECK(r.aux == 0, "PING failed: %u", r.aux);
                return;
            }
            TH_CHECK(r.type != BK_T_ERROR, "ERROR %u on stream %u while "
                     "waiting for PING", r.aux, r.stream);
        }
    }
}

/* A CTRL PING on a raw connection and its reply: everything sent before
 * it has been processed once this returns. */
static void raw_ping(int fd, uint32_t req)
{
    bk_hdr_t h = hdr_ping(req);

    h.version = BK_PROTO_VERSION;
    TH_OK(th_raw_send(fd, &h, NULL, NULL, 0));
    raw_await_pong(fd, req);
}

/* ---- broker state ---------------------------------------------------------------- */

/* The value of `key` in the LIST_CLIENTS record of client `id`, asked
 * through b. */
static uint64_t client_value(broker_t *b, uint64_t id, const char *key)
{
    char *text, want[32], kk[64];
    const char *rec, *v;
    size_t len;
    uint64_t val;

    TH_OK(broker_list(b, BROKER_CTRL_LIST_CLIENTS, &text, &len));
    snprintf(want, sizeof(want), "id=%llu ", (unsigned long long)id);
    rec = strstr(text, want);
    while (rec && rec != text && rec[-1] != '\n')
        rec = strstr(rec + 1, want);
    TH_CHECK(rec != NULL, "client %llu not listed", (unsigned long long)id);
    snprintf(kk, sizeof(kk), " %s=", key);
    v = strstr(rec, kk);
    TH_CHECK(v && (!strchr(rec, '\n') || v < strchr(rec, '\n')),
             "no %s for client %llu", key, (unsigned long long)id);
    val = strtoull(v + strlen(kk), NULL, 10);
    free(text);
    return val;
}

/* Ask until client id's queue in the broker holds more than `bytes`. */
static uint64_t await_queued_over(broker_t *obs, uint64_t id, uint64_t bytes)
{
    uint64_t end = th_now_ms() + TH_HANG_MS, q;
    unsigned nap = 500;

    while ((q = client_value(obs, id, "queued_mem")) <= bytes) {
        TH_CHECK(th_now_ms() < end, "client %llu's queue never passed %llu "
                 "bytes (%llu)", (unsigned long long)id,
                 (unsigned long long)bytes, (unsigned long long)q);
        th_nap(&nap);
    }
    return q;
}

/* ---- order ------------------------------------------------------------------------ */

struct order_arg {
    uint64_t dest[2];           /* receivers' ids */
    const char *name2;          /* dest[1] is addressed by this name */
    size_t count;               /* messages in all */
    th_barrier_t done;          /* the receivers have everything */
};

/* Message seq goes to receiver seq % 2 when there are two, every
 * PER_PACKET messages one packet. */
static int order_sender(void *p)
{
    struct order_arg *a = p;
    int fd = th_raw_connect_hello(br.sock, NULL);
    unsigned nrx = a->dest[1] ? 2 : 1;
    uint8_t buf[64];
    pk_t pk;

    pk_init(&pk, BK_DEF_MAX_PACKET);
    for (uint64_t seq = 0; seq < a->count; seq++) {
        unsigned rx = (unsigned)(seq % nrx);
        uint64_t rseq = seq / nrx;      /* the receiver's own numbering */
        size_t len = small_len(rseq);
        uint32_t sid = (uint32_t)(seq % BK_SID_MAX_LOCAL) + 1;

        msg_fill(buf, len, rx, rseq);
        if (rx == 1 && a->name2)
            pk_frame(&pk, hdr_oneway_name(sid, strlen(a->name2)), a->name2,
                     strlen(a->name2), buf, len);
        else
            pk_frame(&pk, hdr_oneway(sid, a->dest[rx]), NULL, 0, buf, len);
        if (pk.nframes == PER_PACKET)
            pk_send(fd, &pk);
    }
    if (pk.nframes)
        pk_send(fd, &pk);
    th_barrier_wait(&a->done);
    pk_fini(&pk);
    close(fd);
    return 0;
}

/* m is the next message `seq` from `source` on a one-way stream. */
static void check_next(broker_msg_t *m, uint32_t tag, uint64_t seq,
                       uint64_t source)
{
    msg_check(m, small_len(seq), tag, seq);
    TH_CHECK(m->source == source, "message %llu from %llu",
             (unsigned long long)seq, (unsigned long long)m->source);
    TH_CHECK((m->flags & (BROKER_MSGF_OPEN | BROKER_MSGF_CLOSE)) ==
             (BROKER_MSGF_OPEN | BROKER_MSGF_CLOSE),
             "message %llu is not one-way: flags 0x%x",
             (unsigned long long)seq, m->flags);
    TH_CHECK(m->nfds == 0, "message %llu has %u fds",
             (unsigned long long)seq, m->nfds);
    broker_msg_free(m);
}

/* The raw sender's client id: the one connected after the receivers. */
static uint64_t next_client_id(broker_t *any)
{
    return th_status_value(any, "clients_total") + 1;
}

Test(packed, order_100_per_packet_one_receiver)
{
    broker_t *r = th_connect(&br);
    struct order_arg a = { .count = th_scaled(10000, 1000) };
    uint64_t sender = next_client_id(r);
    pid_t pid;

    a.dest[0] = broker_client_id(r);
    th_barrier_init(&a.done);
    pid = th_spawn(order_sender, &a);
    for (uint64_t seq = 0; seq < a.count; seq++)
        check_next(th_recv(r), 0, seq, sender);
    th_barrier_signal(&a.done, 0);
    th_join(pid);
    cr_assert_eq(th_status_value(r, "protocol_errors"), 0);
    th_barrier_fini(&a.done);
    broker_close(r);
    th_broker_stop(&br);
}

Test(packed, order_interleaved_two_receivers)
{
    broker_t *r0 = th_connect(&br), *r1 = th_connect(&br);
    struct order_arg a = { .count = 2 * th_scaled(5000, 500),
                           .name2 = "pk.second" };
    uint64_t sender;
    pid_t pid;

    th_register(r1, a.name2);
    sender = next_client_id(r0);
    a.dest[0] = broker_client_id(r0);
    a.dest[1] = broker_client_id(r1);
    th_barrier_init(&a.done);
    pid = th_spawn(order_sender, &a);
    /* In turns, as they were sent, so that neither queue fills up while
     * the other is read. */
    for (uint64_t seq = 0; seq < a.count / 2; seq++) {
        check_next(th_recv(r0), 0, seq, sender);
        check_next(th_recv(r1), 1, seq, sender);
    }
    th_barrier_signal(&a.done, 0);
    th_join(pid);
    th_barrier_fini(&a.done);
    broker_close(r0);
    broker_close(r1);
    th_broker_stop(&br);
}

/* ---- order with fragmented messages in the same packets --------------------------- */

#define FRAG_SIZE   (8 * KiB)
#define FRAGS       16u             /* fragments per fragmented message */
#define FRAG_TAG    (UINT64_C(1) << 63)
#define WHOLE_PER_PACKET 48u

struct mix_arg {
    uint64_t dest;              /* 0: publish on MIX_TOPIC instead */
    size_t whole;               /* whole messages */
    size_t nfrag;               /* fragmented messages */
    th_barrier_t done;
};

#define MIX_TOPIC "pk.mix"

/* Byte `off` of fragmented message j's body (after its u64 id). */
static void frag_body(uint8_t *buf, size_t len, uint64_t j, size_t off)
{
    th_pattern(buf, len, msg_seed(7, j), off);
}

static size_t frag_msg_len(void)
{
    return (size_t)FRAGS * FRAG_SIZE;
}

/* Fragment k of fragmented message j, appended to the packet: the first
 * fragment starts with the id FRAG_TAG | j. */
static void add_fragment(pk_t *pk, const struct mix_arg *a, uint32_t sid,
                         uint64_t j, unsigned k)
{
    uint8_t buf[FRAG_SIZE];
    enum frag kind = k == 0 ? FRAG_FIRST : k + 1 == FRAGS ? FRAG_LAST
                                                          : FRAG_MID;
    bk_hdr_t h = hdr_frag(sid, kind, a->dest);
    size_t body_off = (size_t)k * FRAG_SIZE;

    if (k == 0) {
        bk_put64(buf, FRAG_TAG | j);
        frag_body(buf + 8, FRAG_SIZE - 8, j, 8);
    } else {
        frag_body(buf, FRAG_SIZE, j, body_off);
    }
    if (!a->dest && k == 0) {
        h = hdr_pub(sid, strlen(MIX_TOPIC), 1);
        pk_frame(pk, h, MIX_TOPIC, strlen(MIX_TOPIC), buf, FRAG_SIZE);
        return;
    }
    pk_frame(pk, h, NULL, 0, buf, FRAG_SIZE);
}

static void add_whole(pk_t *pk, const struct mix_arg *a, uint32_t sid,
                      uint64_t seq)
{
    uint8_t buf[64];
    size_t len = small_len(seq);

    msg_fill(buf, len, 0, seq);
    if (a->dest)
        pk_frame(pk, hdr_oneway(sid, a->dest), NULL, 0, buf, len);
    else
        pk_frame(pk, hdr_pub(sid, strlen(MIX_TOPIC), 0), MIX_TOPIC,
                 strlen(MIX_TOPIC), buf, len);
}

/* Unicast: every packet carries WHOLE_PER_PACKET whole messages and,
 * between them, one fragment each of two fragmented messages in
 * progress (streams 0x40000000 + j). */
static int mix_unicast_sender(void *p)
{
    struct mix_arg *a = p;
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint64_t seq = 0, started = 0, cur[2] = { 0, 0 };
    unsigned next_frag[2] = { FRAGS, FRAGS };   /* FRAGS: none open */
    pk_t pk;

    pk_init(&pk, BK_DEF_MAX_PACKET);
    while (seq < a->whole || next_frag[0] < FRAGS || next_frag[1] < FRAGS ||
           started < a->nfrag) {
        for (unsigned slot = 0; slot < 2; slot++) {
            for (unsigned i = 0; i < WHOLE_PER_PACKET / 3 && seq < a->whole;
                 i++, seq++)
                add_whole(&pk, a, (uint32_t)seq + 1, seq);
            if (next_frag[slot] == FRAGS && started < a->nfrag) {
                cur[slot] = started++;
                next_frag[slot] = 0;
            }
            if (next_frag[slot] < FRAGS)
                add_fragment(&pk, a, 0x40000000u + (uint32_t)cur[slot],
                             cur[slot], next_frag[slot]++);
        }
        for (unsigned i = 0; i < WHOLE_PER_PACKET / 3 && seq < a->whole;
             i++, seq++)
            add_whole(&pk, a, (uint32_t)seq + 1, seq);
        pk_send(fd, &pk);
    }
    th_barrier_wait(&a->done);
    pk_fini(&pk);
    close(fd);
    return 0;
}

static void check_fragmented(const broker_msg_t *m, uint64_t j)
{
    size_t len = frag_msg_len();

    TH_CHECK(m->len == len, "fragmented message %llu: %zu bytes, expected "
             "%zu", (unsigned long long)j, m->len, len);
    TH_CHECK(th_pattern_check((const uint8_t *)m->data + 8, len - 8,
                              msg_seed(7, j), 8) < 0,
             "fragmented message %llu: bytes differ", (unsigned long long)j);
}

Test(packed, order_whole_and_fragmented_unicast)
{
    broker_t *r = th_connect(&br);
    struct mix_arg a = { .whole = th_scaled(10000, 1000),
                         .nfrag = th_scaled(40, 6) };
    uint64_t next_whole = 0, got_frag = 0;
    bool *seen = calloc(a.nfrag, sizeof(bool));
    pid_t pid;

    cr_assert_not_null(seen);
    a.dest = broker_client_id(r);
    th_barrier_init(&a.done);
    pid = th_spawn(mix_unicast_sender, &a);
    /* broker-protocol(7) FAIRNESS, libbroker(3): whole one-way messages
     * keep their order; a fragmented one travels on a stream of its own
     * and may be overtaken, but arrives whole. */
    while (next_whole < a.whole || got_frag < a.nfrag) {
        broker_msg_t *m = th_recv(r);
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "%s code %d",
                     th_kind_str(m->kind), m->code);
        cr_assert_geq(m->len, 8);
        uint64_t id = bk_get64(m->data);
        if (id & FRAG_TAG) {
            uint64_t j = id & ~FRAG_TAG;
            cr_assert_lt(j, a.nfrag, "unknown fragmented message %llu",
                         (unsigned long long)j);
            cr_assert_not(seen[j], "fragmented message %llu twice",
                          (unsigned long long)j);
            check_fragmented(m, j);
            seen[j] = true;
            got_frag++;
        } else {
            msg_check(m, small_len(next_whole), 0, next_whole);
            next_whole++;
        }
        broker_msg_free(m);
    }
    th_barrier_signal(&a.done, 0);
    th_join(pid);
    free(seen);
    th_barrier_fini(&a.done);
    broker_close(r);
    th_broker_stop(&br);
}

/* Publications: a client must send all fragments of one publication
 * before the next publication (broker-protocol(7) "Delivery"), so here a
 * fragmented publication starts at the end of a packet of whole ones,
 * continues over the next packets and ends at the start of one that goes
 * on with whole ones.  After every FRAG_EVERY whole publications comes a
 * fragmented one. */
#define FRAG_EVERY 64u
static int mix_pub_sender(void *p)
{
    struct mix_arg *a = p;
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint64_t seq = 0, j = 0;
    uint32_t sid = 1;
    pk_t pk;

    pk_init(&pk, BK_DEF_MAX_PACKET);
    while (seq < a->whole) {
        for (unsigned i = 0; i < WHOLE_PER_PACKET && seq < a->whole; i++) {
            add_whole(&pk, a, sid++, seq++);
            if (seq % FRAG_EVERY == 0 && j < a->nfrag) {
                /* fragments 0..FRAGS-1, at most 3 per packet */
                for (unsigned k = 0; k < FRAGS; k++) {
                    if (!pk_room(&pk, FRAG_SIZE + strlen(MIX_TOPIC)) ||
                        (k && k % 3 == 0))
                        pk_send(fd, &pk);
                    add_fragment(&pk, a, sid, j, k);
                }
                sid++;
                j++;
            }
        }
        pk_send(fd, &pk);
    }
    th_barrier_wait(&a->done);
    pk_fini(&pk);
    close(fd);
    return 0;
}

Test(packed, order_whole_and_fragmented_publications)
{
    broker_t *s = th_connect(&br);
    struct mix_arg a = { .whole = th_scaled(8000, 800) };
    uint32_t sub;

    a.nfrag = a.whole / FRAG_EVERY;
    cr_assert_eq(broker_subscribe(s, "pk.>", NULL, BROKER_SUB_BLOCK, &sub),
                 0);
    th_barrier_init(&a.done);
    pid_t pid = th_spawn(mix_pub_sender, &a);
    /* Publication order is total, whatever the size: after whole
     * publication FRAG_EVERY * k - 1 comes fragmented publication k - 1. */
    for (uint64_t seq = 0, j = 0; seq < a.whole || j < a.nfrag;) {
        broker_msg_t *m = th_recv(s);
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "%s code %d",
                     th_kind_str(m->kind), m->code);
        cr_assert_str_eq(m->topic, MIX_TOPIC);
        cr_assert_eq(m->sub_id, sub);
        if (seq > 0 && seq % FRAG_EVERY == 0 && j < seq / FRAG_EVERY) {
            cr_assert_geq(m->len, 8);
            cr_assert_eq(bk_get64(m->data), FRAG_TAG | j,
                         "after publication %llu: got id 0x%llx, expected "
                         "fragmented publication %llu",
                         (unsigned long long)seq - 1,
                         (unsigned long long)bk_get64(m->data),
                         (unsigned long long)j);
            check_fragmented(m, j);
            j++;
        } else {
            msg_check(m, small_len(seq), 0, seq);
            seq++;
        }
        broker_msg_free(m);
    }
    th_barrier_signal(&a.done, 0);
    th_join(pid);
    th_barrier_fini(&a.done);
    broker_close(s);
    th_broker_stop(&br);
}

/* ---- a packet with one bad frame ----------------------------------------------------- */

enum bad_kind {
    BAD_FLAG_BIT,       /* flag 0x80 */
    BAD_FLAG_COMBO,     /* MORE with CLOSE */
    BAD_TYPE,           /* 14, above the last type */
    BAD_TYPE_ZERO,
    BAD_TYPE_BROKERS,   /* a WELCOME, which only the broker sends */
    BAD_VERSION,
    BAD_SOURCE,         /* a client always writes source 0 */
    BAD_NAME,           /* not a valid name: EINVAL, fatal in DATA */
    BAD_TRUNC_PAYLOAD,  /* the last frame's payload is cut short */
    BAD_TRUNC_HEADER,   /* the packet ends inside a header */
    BAD_FDS_EXTRA,      /* an fd, and no frame has nfds */
    BAD_FDS_MISSING,    /* nfds add up to one more than was sent */
};

#define BAD_FRAMES 20u          /* frames in the bad packet */

/* Append the bad frame (for the truncations: the packet's end). */
static void add_bad(pk_t *pk, enum bad_kind kind, uint32_t sid, uint64_t dest)
{
    static const char bad_name[] = "pk bad";
    uint8_t data[16] = "not delivered";
    bk_hdr_t h = hdr_oneway(sid, dest);
    uint8_t raw[BK_HDR_SIZE];

    switch (kind) {
    case BAD_FLAG_BIT:      h.flags |= 0x80; break;
    case BAD_FLAG_COMBO:    h.flags |= BK_F_MORE; break;
    case BAD_TYPE:          h.type = BK_T_MAX_ + 1; break;
    case BAD_TYPE_ZERO:     h.type = 0; break;
    case BAD_TYPE_BROKERS:
        h = (bk_hdr_t){ .type = BK_T_WELCOME };
        break;
    case BAD_VERSION:       h.version = BK_PROTO_VERSION + 1; break;
    case BAD_SOURCE:        h.source = dest; break;
    case BAD_NAME:
        h = hdr_oneway_name(sid, strlen(bad_name));
        pk_frame(pk, h, bad_name, strlen(bad_name), data, sizeof(data));
        return;
    case BAD_TRUNC_PAYLOAD:
        h.version = BK_PROTO_VERSION;
        h.length = 64;
        bk_hdr_encode(&h, pk->buf + pk->len);
        memcpy(pk->buf + pk->len + BK_HDR_SIZE, data, 10);
        pk->len += BK_HDR_SIZE + 10;
        pk->nframes++;
        return;
    case BAD_TRUNC_HEADER:
        h.version = BK_PROTO_VERSION;
        h.length = 0;
        bk_hdr_encode(&h, raw);
        memcpy(pk->buf + pk->len, raw, 20);
        pk->len += 20;
        pk->nframes++;
        return;
    case BAD_FDS_MISSING:
        h.nfds = 1;
        break;
    case BAD_FDS_EXTRA:
        break;
    }
    pk_frame(pk, h, NULL, 0, data, sizeof(data));
}

static bool bad_at_end(enum bad_kind kind)
{
    return kind == BAD_TRUNC_PAYLOAD || kind == BAD_TRUNC_HEADER;
}

/* Wait (hang-guarded) until fd, a pipe's read end, reads EOF: every copy
 * of its write end is closed. */
static void await_pipe_eof(int fd, const char *what)
{
    char c;
    struct pollfd p = { .fd = fd, .events = POLLIN };

    TH_CHECK(poll(&p, 1, TH_HANG_MS) == 1, "%s: the write end is still "
             "open somewhere", what);
    TH_CHECK(read(fd, &c, 1) == 0, "%s: data in the pipe", what);
}

/* A raw sender whose first packet is good, and whose second packet of
 * BAD_FRAMES frames to receiver r has one bad frame at `pos` (the frames
 * before it are good one-way messages, one of them carrying the write end
 * of a pipe).  broker-protocol(7) VALIDATION: the whole packet is checked
 * before any of it acts, so r gets none of it; the sender gets one ERROR
 * on stream 0 with `want`, then the end of the connection; the fds of the
 * packet are closed; other clients go on. */
static void bad_packet(enum bad_kind kind, unsigned pos, uint32_t want)
{
    broker_t *r = th_connect(&br), *c = th_connect(&br);
    uint64_t rid = broker_client_id(r);
    bk_welcome_t w;
    int fd = th_raw_connect_hello(br.sock, &w), pfd[2];
    uint64_t errors0 = th_status_value(c, "protocol_errors");
    uint8_t buf[64];
    unsigned fd_frame = pos ? 0 : 1;    /* which good frame has the fd */
    struct last_words lw;
    broker_msg_t *m;
    pk_t pk;

    if (bad_at_end(kind))
        pos = BAD_FRAMES - 1;
    pk_init(&pk, BK_DEF_MAX_PACKET);
    for (uint64_t seq = 0; seq < 5; seq++) {
        msg_fill(buf, small_len(seq), 0, seq);
        pk_frame(&pk, hdr_oneway((uint32_t)seq + 1, rid), NULL, 0, buf,
                 small_len(seq));
    }
    pk_send(fd, &pk);
    for (uint64_t seq = 0; seq < 5; seq++)
        check_next(th_recv(r), 0, seq, w.client_id);

    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    for (unsigned i = 0; i < BAD_FRAMES && !(bad_at_end(kind) && i > pos);
         i++) {
        uint64_t seq = 5 + i;
        bk_hdr_t h = hdr_oneway((uint32_t)seq + 1, rid);

        if (i == pos) {
            add_bad(&pk, kind, (uint32_t)seq + 1, rid);
            continue;
        }
        if (i == fd_frame && kind != BAD_FDS_EXTRA)
            h.nfds = 1;
        msg_fill(buf, small_len(seq), 0, seq);
        pk_frame(&pk, h, NULL, 0, buf, small_len(seq));
    }
    pk_add_fds(&pk, &pfd[1], 1);
    pk_send(fd, &pk);
    close(pfd[1]);

    lw = raw_last_words(fd);
    cr_assert_eq(lw.nerrors, 1, "%d ERROR frames (%d frames in all)",
                 lw.nerrors, lw.nframes);
    cr_assert_eq(lw.nframes, 1, "%d frames before the end", lw.nframes);
    cr_assert_eq(lw.err_stream, 0, "ERROR on stream %u", lw.err_stream);
    cr_assert_eq(lw.err_aux, want, "ERROR code %u, expected %u (%s)",
                 lw.err_aux, want, strerror((int)want));
    close(fd);
    await_pipe_eof(pfd[0], "the failed packet's fd");
    close(pfd[0]);

    /* The marker is queued after anything the bad packet could have
     * queued for r (one-way messages keep the order the broker got them
     * in), so it must be the next thing r gets. */
    cr_assert_eq(broker_send_id(c, rid, "marker", 6, NULL, 0), 0);
    m = th_recv(r);
    cr_assert_eq(m->kind, BROKER_MSG_DATA, "%s", th_kind_str(m->kind));
    cr_assert_eq(m->source, broker_client_id(c),
                 "r got a message from %llu before the marker: a frame of "
                 "the bad packet was delivered",
                 (unsigned long long)m->source);
    cr_assert_eq(m->len, 6);
    cr_assert_eq(memcmp(m->data, "marker", 6), 0);
    broker_msg_free(m);
    cr_assert_eq(th_status_value(c, "protocol_errors"), errors0 + 1);
    cr_assert_eq(broker_ping(r, TH_HANG_MS), 0);
    pk_fini(&pk);
    broker_close(r);
    broker_close(c);
    th_broker_stop(&br);
}

Test(packed, bad_flag_bit_first) { bad_packet(BAD_FLAG_BIT, 0, EPROTO); }
Test(packed, bad_flag_bit_middle) { bad_packet(BAD_FLAG_BIT, 10, EPROTO); }
Test(packed, bad_flag_bit_last)
{
    bad_packet(BAD_FLAG_BIT, BAD_FRAMES - 1, EPROTO);
}
Test(packed, bad_flag_combination) { bad_packet(BAD_FLAG_COMBO, 7, EPROTO); }
Test(packed, bad_type) { bad_packet(BAD_TYPE, 10, EPROTO); }
Test(packed, bad_type_zero) { bad_packet(BAD_TYPE_ZERO, 3, EPROTO); }
Test(packed, bad_type_of_the_broker)
{
    bad_packet(BAD_TYPE_BROKERS, 12, EPROTO);
}
Test(packed, bad_version) { bad_packet(BAD_VERSION, 10, EPROTONOSUPPORT); }
Test(packed, bad_source) { bad_packet(BAD_SOURCE, 10, EPROTO); }
Test(packed, bad_name) { bad_packet(BAD_NAME, 10, EINVAL); }
Test(packed, truncated_last_payload)
{
    bad_packet(BAD_TRUNC_PAYLOAD, 0, EPROTO);
}
Test(packed, truncated_last_header)
{
    bad_packet(BAD_TRUNC_HEADER, 0, EPROTO);
}
Test(packed, nfds_without_fds) { bad_packet(BAD_FDS_MISSING, 10, EPROTO); }
Test(packed, fds_without_nfds) { bad_packet(BAD_FDS_EXTRA, 10, EPROTO); }

/* The one exception (VALIDATION): a publication whose only fault is its
 * topic is refused on its own stream; the rest of the packet acts and
 * the connection stays.  Here with fds on the bad one and a fragmented
 * bad one whose continuation is in the same packet. */
Test(packed, bad_topic_refused_alone)
{
    broker_t *s = th_connect(&br);
    int fd = th_raw_connect_hello(br.sock, NULL), pfd[2];
    static const char bad[] = "pk..bad";
    uint8_t buf[64];
    uint32_t sub, errs[2] = { 0, 0 };
    unsigned nerr = 0;
    uint64_t seq = 0;
    pk_t pk;

    cr_assert_eq(broker_subscribe(s, "pk.>", NULL, BROKER_SUB_DROP, &sub), 0);
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    pk_init(&pk, BK_DEF_MAX_PACKET);
    for (uint32_t sid = 1; sid <= 30; sid++) {
        bk_hdr_t h = hdr_pub(sid, strlen(MIX_TOPIC), 0);
        if (sid == 10) {                /* whole, with an fd */
            h = hdr_pub(sid, strlen(bad), 0);
            h.nfds = 1;
            pk_frame(&pk, h, bad, strlen(bad), "x", 1);
            continue;
        }
        if (sid == 20) {                /* fragmented: two frames */
            pk_frame(&pk, hdr_pub(sid, strlen(bad), 1), bad, strlen(bad),
                     "first", 5);
            pk_frame(&pk, hdr_frag(sid, FRAG_LAST, 0), NULL, 0, "last", 4);
            continue;
        }
        msg_fill(buf, small_len(seq), 0, seq);
        pk_frame(&pk, h, MIX_TOPIC, strlen(MIX_TOPIC), buf, small_len(seq));
        seq++;
    }
    pk_add_fds(&pk, &pfd[1], 1);
    pk_send(fd, &pk);
    close(pfd[1]);

    for (uint64_t i = 0; i < seq; i++) {
        broker_msg_t *m = th_recv(s);
        cr_assert_str_eq(m->topic ? m->topic : "(none)", MIX_TOPIC);
        msg_check(m, small_len(i), 0, i);
        broker_msg_free(m);
    }
    while (nerr < 2) {
        int fds[BK_MAX_FDS_HARD];
        unsigned nfds;
        ssize_t n = raw_recv_fds(fd, fds, &nfds);
        const uint8_t *payload;
        size_t off = 0;
        bk_hdr_t h;

        bk_close_fds(fds, nfds);
        cr_assert_gt(n, 0, "publisher: %zd", n);
        while (bk_pkt_next(rxbuf, (size_t)n, &off, &h, &payload) == 1) {
            cr_assert_eq(h.type, BK_T_ERROR, "type %u", h.type);
            cr_assert_eq(h.aux, EINVAL, "ERROR %u", h.aux);
            cr_assert_lt(nerr, 2, "a third ERROR (stream %u)", h.stream);
            errs[nerr++] = h.stream;
        }
    }
    cr_assert_eq(errs[0], 10);
    cr_assert_eq(errs[1], 20);
    await_pipe_eof(pfd[0], "the bad publication's fd");
    close(pfd[0]);
    raw_ping(fd, 77);                   /* still connected */
    cr_assert_eq(th_status_value(s, "protocol_errors"), 0);
    /* nothing of the bad ones, not even the continuation, came */
    cr_assert_eq(broker_send_id(s, broker_client_id(s), "marker", 6, NULL, 0),
                 0);
    broker_msg_t *m = th_recv(s);
    cr_assert_null(m->topic, "a publication after the good ones: %s",
                   m->topic);
    cr_assert_eq(m->len, 6);
    broker_msg_free(m);
    pk_fini(&pk);
    close(fd);
    broker_close(s);
    th_broker_stop(&br);
}

/* ---- fds on a frame in the middle of a packet ------------------------------------------ */

/* A memfd named after `tag` holding `tag`; its inode tells it apart. */
static int memfd_with(const char *tag)
{
    int fd = memfd_create(tag, MFD_CLOEXEC);

    TH_CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
    TH_CHECK(write(fd, tag, strlen(tag)) == (ssize_t)strlen(tag), "write");
    return fd;
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;

    TH_CHECK(fstat(a, &sa) == 0 && fstat(b, &sb) == 0, "fstat: %s",
             strerror(errno));
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Frames 0..FD_FRAMES-1 of one packet to one receiver: frame 3 carries a
 * memfd and a pipe's write end, frame 6 another memfd, the rest none. */
#define FD_FRAMES 10u

struct fd_plan {
    int mem3, pipe3[2], mem6;
};

static void fd_plan_open(struct fd_plan *f)
{
    f->mem3 = memfd_with("pk-three");
    f->mem6 = memfd_with("pk-six");
    TH_CHECK(pipe2(f->pipe3, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
}

static unsigned fd_plan_nfds(unsigned i)
{
    return i == 3 ? 2 : i == 6 ? 1 : 0;
}

/* The packet: frames to dest[i % ndest]. */
static void fd_plan_packet(const struct fd_plan *f, pk_t *pk,
                           const uint64_t *dest, unsigned ndest)
{
    uint8_t buf[64];

    for (unsigned i = 0; i < FD_FRAMES; i++) {
        bk_hdr_t h = hdr_oneway(i + 1, dest[i % ndest]);
        h.nfds = (uint8_t)fd_plan_nfds(i);
        msg_fill(buf, small_len(i), 0, i);
        pk_frame(pk, h, NULL, 0, buf, small_len(i));
    }
    pk_add_fds(pk, &f->mem3, 1);
    pk_add_fds(pk, &f->pipe3[1], 1);
    pk_add_fds(pk, &f->mem6, 1);
}

/* Message i came with the fds the plan gave frame i. */
static void fd_plan_check(const struct fd_plan *f, unsigned i,
                          const int *fds, unsigned nfds)
{
    TH_CHECK(nfds == fd_plan_nfds(i), "message %u has %u fds, expected %u",
             i, nfds, fd_plan_nfds(i));
    if (i == 3) {
        TH_CHECK(same_file(fds[0], f->mem3), "message 3: first fd is not "
                 "its memfd");
        char msg[] = "via message 3", got[sizeof(msg)];
        TH_CHECK(write(fds[1], msg, sizeof(msg)) == (ssize_t)sizeof(msg),
                 "message 3: second fd is not a pipe's write end: %s",
                 strerror(errno));
        TH_CHECK(read(f->pipe3[0], got, sizeof(got)) == (ssize_t)sizeof(got)
                 && !memcmp(got, msg, sizeof(msg)),
                 "message 3: second fd is not its pipe");
    }
    if (i == 6)
        TH_CHECK(same_file(fds[0], f->mem6), "message 6: fd is not its "
                 "memfd");
}

/* Once every copy the broker and the receivers had is closed. */
static void fd_plan_close(struct fd_plan *f)
{
    close(f->mem3);
    close(f->mem6);
    close(f->pipe3[1]);
    await_pipe_eof(f->pipe3[0], "message 3's pipe");
    close(f->pipe3[0]);
}

Test(packed, fds_in_the_middle_libbroker)
{
    broker_t *r = th_connect(&br);
    uint64_t rid = broker_client_id(r);
    bk_welcome_t w;
    int fd = th_raw_connect_hello(br.sock, &w);
    struct fd_plan f;
    pk_t pk;

    fd_plan_open(&f);
    pk_init(&pk, BK_DEF_MAX_PACKET);
    fd_plan_packet(&f, &pk, &rid, 1);
    pk_send(fd, &pk);
    for (unsigned i = 0; i < FD_FRAMES; i++) {
        broker_msg_t *m = th_recv(r);
        msg_check(m, small_len(i), 0, i);
        cr_assert_eq(m->source, w.client_id);
        fd_plan_check(&f, i, m->fds, m->nfds);
        broker_msg_free(m);             /* closes the received fds */
    }
    fd_plan_close(&f);
    pk_fini(&pk);
    close(fd);
    broker_close(r);
    th_broker_stop(&br);
}

/* Filler messages (ids from FILLER_ID on) that a raw receiver skips. */
#define FILLER_ID 1000000u

/* The packets brokerd packs for a raw receiver: per packet, the fds add
 * up to the frames' nfds and belong to them in frame order (only a
 * packet's first frame may have any, outq.h).  Returns the number of
 * packets that held more than one frame. */
static unsigned raw_receive_plan(int fd, const struct fd_plan *f,
                                 const unsigned *want, unsigned nwant)
{
    unsigned got = 0, packed = 0;

    while (got < nwant) {
        int fds[BK_MAX_FDS_HARD];
        unsigned nfds, used = 0, nframes = 0;
        ssize_t n = raw_recv_fds(fd, fds, &nfds);
        const uint8_t *payload;
        size_t off = 0;
        bk_hdr_t h;

        cr_assert_gt(n, 0, "receiver: %zd", n);
        while (bk_pkt_next(rxbuf, (size_t)n, &off, &h, &payload) == 1) {
            nframes++;
            cr_assert_eq(h.type, BK_T_DATA, "type %u", h.type);
            cr_assert_geq(h.length, 8);
            cr_assert_leq(used + h.nfds, nfds, "frame nfds beyond the "
                          "packet's fds");
            cr_assert(used == 0 || h.nfds == 0, "fds on a frame that is "
                      "not the packet's first");
            if (bk_get64(payload) >= FILLER_ID) {
                cr_assert_eq(h.nfds, 0, "a filler message with fds");
                continue;
            }
            cr_assert_lt(got, nwant, "more frames than sent");
            cr_assert_eq(bk_get64(payload), want[got], "frame %u is "
                         "message %llu, expected %u", got,
                         (unsigned long long)bk_get64(payload), want[got]);
            fd_plan_check(f, want[got], fds + used, h.nfds);
            used += h.nfds;
            got++;
        }
        cr_assert_eq(used, nfds, "packet with %u fds, frames claim %u",
                     nfds, used);
        packed += nframes > 1;
        bk_close_fds(fds, nfds);
    }
    return packed;
}

/* Two raw receivers, the frames of one packet alternating between them:
 * each gets its own frames, and the fds of frame 3 (to the second) and of
 * frame 6 (to the first) with them. */
Test(packed, fds_in_the_middle_two_raw_receivers)
{
    bk_welcome_t w0, w1;
    int r0 = th_raw_connect_hello(br.sock, &w0);
    int r1 = th_raw_connect_hello(br.sock, &w1);
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint64_t dest[2] = { w0.client_id, w1.client_id };
    static const unsigned even[] = { 0, 2, 4, 6, 8 }, odd[] = { 1, 3, 5, 7, 9 };
    struct fd_plan f;
    pk_t pk;

    fd_plan_open(&f);
    pk_init(&pk, BK_DEF_MAX_PACKET);
    fd_plan_packet(&f, &pk, dest, 2);
    pk_send(fd, &pk);
    raw_receive_plan(r0, &f, even, 5);
    raw_receive_plan(r1, &f, odd, 5);
    fd_plan_close(&f);
    pk_fini(&pk);
    close(fd);
    close(r0);
    close(r1);
    th_broker_stop(&br);
}

/* While the receiver's queue holds a backlog (its socket is full of
 * filler), the broker packs the queued frames: the frames around the ones
 * with fds still come without them, in order. */
Test(packed, fds_in_the_middle_behind_a_backlog)
{
    bk_welcome_t wr;
    int r = th_raw_connect_hello(br.sock, &wr);
    int fd = th_raw_connect_hello(br.sock, NULL);
    broker_t *obs = th_connect(&br);
    unsigned rounds = (unsigned)th_scaled(100, 20), packed;
    unsigned *want = calloc(rounds * FD_FRAMES, sizeof(unsigned));
    uint8_t filler[600];
    uint64_t queued;
    struct fd_plan f;
    pk_t pk;

    cr_assert_not_null(want);
    fd_plan_open(&f);
    pk_init(&pk, BK_DEF_MAX_PACKET);
    /* 1 MiB of filler: more than the receiver's socket holds */
    for (uint32_t i = 0; i < 1700; i++) {
        msg_fill(filler, sizeof(filler), 2, FILLER_ID + i);
        pk_frame(&pk, hdr_oneway(i + 1, wr.client_id), NULL, 0, filler,
                 sizeof(filler));
        if (pk.nframes == PER_PACKET)
            pk_send(fd, &pk);
    }
    if (pk.nframes)
        pk_send(fd, &pk);
    for (unsigned k = 0; k < rounds; k++) {
        fd_plan_packet(&f, &pk, &wr.client_id, 1);
        pk_send(fd, &pk);
        for (unsigned i = 0; i < FD_FRAMES; i++)
            want[k * FD_FRAMES + i] = i;
    }
    raw_ping(fd, 1);                /* all of it is queued or written */
    queued = client_value(obs, wr.client_id, "queued_frames");
    cr_assert_geq(queued, rounds * FD_FRAMES, "only %llu frames queued: no "
                  "backlog", (unsigned long long)queued);
    packed = raw_receive_plan(r, &f, want, rounds * FD_FRAMES);
    cr_log_info("fds behind a backlog: %llu frames queued, %u packets of "
                "several frames", (unsigned long long)queued, packed);
    cr_assert_gt(packed, 0, "the broker packed nothing");
    fd_plan_close(&f);
    free(want);
    pk_fini(&pk);
    close(fd);
    close(r);
    broker_close(obs);
    th_broker_stop(&br);
}

/* ---- packed publications to block and drop subscribers ----------------------------------- */

#define PUB_TOPIC "pk.pub"
#define PUB_QUEUE_LIMIT 65536u

struct pub_arg {
    size_t count, len;          /* publications, data bytes each */
    bool split;                 /* fill packets: cut a publication that
                                   does not fit into two fragments */
    unsigned bursts;
    th_barrier_t sent;          /* the broker has processed a burst */
    th_barrier_t go;            /* send the next burst, or finish */
};

/* Publication seq as the frames of one packet, or split over the end of
 * this one and the start of the next. */
static void add_pub(int fd, pk_t *pk, const struct pub_arg *a, uint64_t seq,
                    const uint8_t *buf)
{
    size_t tlen = strlen(PUB_TOPIC), room = pk->cap - pk->len;
    size_t fixed = BK_HDR_SIZE + tlen, part;
    uint32_t sid = (uint32_t)(seq % BK_SID_MAX_LOCAL) + 1;

    if (pk->nframes == PER_PACKET || room < fixed + 1) {
        pk_send(fd, pk);
        room = pk->cap;
    }
    if (room >= fixed + a->len) {
        pk_frame(pk, hdr_pub(sid, tlen, 0), PUB_TOPIC, tlen, buf, a->len);
        return;
    }
    if (!a->split) {
        pk_send(fd, pk);
        pk_frame(pk, hdr_pub(sid, tlen, 0), PUB_TOPIC, tlen, buf, a->len);
        return;
    }
    part = room - fixed;
    pk_frame(pk, hdr_pub(sid, tlen, 1), PUB_TOPIC, tlen, buf, part);
    pk_send(fd, pk);
    pk_frame(pk, hdr_frag(sid, FRAG_LAST, 0), NULL, 0, buf + part,
             a->len - part);
}

/* Publication seq: len bytes of data (msg_fill) on PUB_TOPIC, packed up
 * to PER_PACKET per packet as far as max_packet allows, in `bursts`
 * bursts: after each one a PING makes sure the broker has processed it,
 * `sent` says so, and the next burst waits for `go`. */
static int pub_sender(void *p)
{
    struct pub_arg *a = p;
    bk_welcome_t w;
    int fd = th_raw_connect_hello(br.sock, &w);
    uint8_t *buf = malloc(a->len);
    uint64_t seq = 0;
    pk_t pk;

    TH_CHECK(buf != NULL, "oom");
    raw_sndbuf_for(fd, w.max_packet);
    pk_init(&pk, w.max_packet);
    for (unsigned k = 0; k < a->bursts; k++) {
        for (uint64_t end = a->count * (k + 1) / a->bursts; seq < end; seq++) {
            msg_fill(buf, a->len, 0, seq);
            add_pub(fd, &pk, a, seq, buf);
        }
        if (pk.nframes)
            pk_send(fd, &pk);
        raw_ping(fd, k + 1);
        th_barrier_signal(&a->sent, 0);
        th_barrier_wait(&a->go);
    }
    free(buf);
    pk_fini(&pk);
    close(fd);
    return 0;
}

static void pub_start(struct pub_arg *a, pid_t *pid)
{
    th_barrier_init(&a->sent);
    th_barrier_init(&a->go);
    *pid = th_spawn(pub_sender, a);
}

static void pub_finish(struct pub_arg *a, pid_t pid)
{
    th_join(pid);
    th_barrier_fini(&a->sent);
    th_barrier_fini(&a->go);
}

static void restart_small_queue(void)
{
    char limit[32];

    snprintf(limit, sizeof(limit), "%u", PUB_QUEUE_LIMIT);
    th_broker_restart(&br, "--queue-limit", limit, NULL);
}

/* Wait until client `rx`'s queue in the broker holds more than half its
 * limit while rx does not read.  Then a sender that feeds it is held
 * back: it was paused when the queue passed the limit, and stays paused
 * until the queue drains to half (broker-protocol(7) FLOW CONTROL). */
static uint64_t await_backlog(broker_t *obs, uint64_t rx, uint64_t limit)
{
    return await_queued_over(obs, rx, limit / 2);
}

/* Policy block: the subscriber starts reading only once the publisher is
 * held back, then reads slowly, so the publisher is held back again and
 * again.  Nothing is lost, the order is kept, the publisher's socket is
 * not read meanwhile, and the queue never holds more than the limit plus
 * one packet. */
static void pub_block(size_t count, size_t len, bool split)
{
    restart_small_queue();
    broker_t *s = th_connect(&br), *obs = th_connect(&br);
    uint64_t sid = broker_client_id(s), publisher = next_client_id(s);
    uint64_t limit = broker_limits(s)->queue_limit, most, bound, read_in;
    unsigned every = len >= 1024 ? 8 : 64;
    struct pub_arg a = { .count = count, .len = len, .split = split,
                         .bursts = 1 };
    uint32_t sub;
    pid_t pid;

    cr_assert_eq(limit, PUB_QUEUE_LIMIT);
    bound = limit + broker_limits(s)->max_packet;
    cr_assert_eq(broker_subscribe(s, "pk.*", NULL, BROKER_SUB_BLOCK, &sub),
                 0);
    pub_start(&a, &pid);
    most = await_backlog(obs, sid, limit);
    read_in = client_value(obs, publisher, "msgs_in");
    cr_assert_lt(read_in, count, "the broker read all %zu publications "
                 "from the publisher of a block subscriber that reads "
                 "nothing", count);
    for (uint64_t seq = 0; seq < count; seq++) {
        broker_msg_t *m = th_recv(s);
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "publication %llu: %s "
                     "(gap %llu)", (unsigned long long)seq,
                     th_kind_str(m->kind), (unsigned long long)m->gap);
        cr_assert_eq(m->sub_id, sub);
        msg_check(m, len, 0, seq);
        broker_msg_free(m);
        if (seq % every == every - 1) {
            uint64_t q = client_value(obs, sid, "queued_bytes");
            most = q > most ? q : most;
            cr_assert_leq(q, bound, "after %llu: %llu bytes queued for a "
                          "block subscriber (limit %llu)",
                          (unsigned long long)seq, (unsigned long long)q,
                          (unsigned long long)limit);
            usleep(1000);       /* a slow reader: a pace, not a check */
        }
    }
    th_barrier_wait(&a.sent);
    th_barrier_signal(&a.go, 0);
    cr_log_info("block, %zu x %zu bytes%s: %llu read by the broker when "
                "the subscriber started; at most %llu bytes queued (limit "
                "%llu, bound %llu)", count, len, split ? ", split" : "",
                (unsigned long long)read_in, (unsigned long long)most,
                (unsigned long long)limit, (unsigned long long)bound);
    cr_assert_eq(th_status_value(obs, "dropped_pub"), 0);
    pub_finish(&a, pid);
    broker_close(s);
    broker_close(obs);
    th_broker_stop(&br);
}

/* The `dropped` of subscription sub in LIST_SUBS. */
static uint64_t sub_dropped(broker_t *b, uint64_t client, uint32_t sub)
{
    char *text, want[64];
    size_t len;
    const char *rec, *v;
    uint64_t n;

    TH_OK(broker_list(b, BROKER_CTRL_LIST_SUBS, &text, &len));
    snprintf(want, sizeof(want), "client=%llu sub=%u ",
             (unsigned long long)client, sub);
    rec = strstr(text, want);
    TH_CHECK(rec != NULL, "subscription %u not listed", sub);
    v = strstr(rec, " dropped=");
    TH_CHECK(v != NULL, "no dropped=");
    n = strtoull(v + 9, NULL, 10);
    free(text);
    return n;
}

#define DROP_BURSTS 4u

/* Policy drop: the publisher sends in DROP_BURSTS bursts, and the
 * subscriber reads nothing of a burst until the broker has processed all
 * of it, so most of each is dropped.  What arrives is in order, intact,
 * and before each delivery a GAP counts exactly the publications missing
 * since the previous one (the drops at a burst's end are reported once
 * the queue drains); the GAPs add up to the subscription's dropped
 * count. */
static void pub_drop(size_t count, size_t len, bool split)
{
    restart_small_queue();
    broker_t *s = th_connect(&br), *obs = th_connect(&br);
    struct pub_arg a = { .count = count, .len = len, .split = split,
                         .bursts = DROP_BURSTS };
    uint64_t next = 0, pending = 0, gaps = 0, ngap = 0, got = 0;
    uint32_t sub;
    pid_t pid;

    cr_assert_eq(broker_subscribe(s, "pk.*", NULL, BROKER_SUB_DROP, &sub),
                 0);
    pub_start(&a, &pid);
    for (unsigned k = 0; k < DROP_BURSTS; k++) {
        uint64_t end = count * (k + 1) / DROP_BURSTS, gaps0 = gaps;

        th_barrier_wait(&a.sent);
        while (next + pending < end) {
            broker_msg_t *m = th_recv(s);
            cr_assert_eq(m->sub_id, sub);
            if (m->kind == BROKER_MSG_GAP) {
                cr_assert_gt(m->gap, 0, "empty GAP");
                pending += m->gap;
                gaps += m->gap;
                ngap++;
                broker_msg_free(m);
                continue;
            }
            cr_assert_eq(m->kind, BROKER_MSG_DATA, "%s",
                         th_kind_str(m->kind));
            cr_assert_geq(m->len, 8);
            uint64_t seq = bk_get64(m->data);
            cr_assert_geq(seq, next, "publication %llu after %llu",
                          (unsigned long long)seq,
                          (unsigned long long)next - 1);
            cr_assert_eq(seq - next, pending, "publication %llu after "
                         "%llu: %llu missing, GAPs said %llu",
                         (unsigned long long)seq,
                         (unsigned long long)next - 1,
                         (unsigned long long)(seq - next),
                         (unsigned long long)pending);
            msg_check(m, len, 0, seq);
            broker_msg_free(m);
            pending = 0;
            next = seq + 1;
            got++;
        }
        cr_assert_gt(gaps, gaps0, "burst %u: nothing was dropped, the "
                     "test did not test", k);
        th_barrier_signal(&a.go, 0);
    }
    cr_log_info("drop, %zu x %zu bytes%s: %llu delivered, %llu dropped in "
                "%llu GAPs", count, len, split ? ", split" : "",
                (unsigned long long)got, (unsigned long long)gaps,
                (unsigned long long)ngap);
    cr_assert_eq(got + gaps, count);
    cr_assert_eq(sub_dropped(obs, broker_client_id(s), sub), gaps);
    cr_assert_eq(th_status_value(obs, "dropped_pub"), gaps);
    cr_assert_eq(th_status_value(obs, "delivered_pub"), got);
    pub_finish(&a, pid);
    broker_close(s);
    broker_close(obs);
    th_broker_stop(&br);
}

/* The counts are large enough that even the scaled-down runs send many
 * times what the subscriber's socket and queue can hold. */
Test(packed, publications_block_small)
{
    pub_block(th_scaled(20000, 10000), 40, false);
}

Test(packed, publications_drop_small)
{
    pub_drop(th_scaled(40000, 20000), 40, false);
}

/* 4 KiB publications: 15 fit into a packet of 64 KiB. */
Test(packed, publications_block_4k)
{
    pub_block(th_scaled(3000, 1000), 4 * KiB, false);
}

Test(packed, publications_drop_4k)
{
    pub_drop(th_scaled(3000, 1000), 4 * KiB, false);
}

/* Packets filled to the last byte, as a packing library would: the
 * publication that does not fit starts at the end of one packet and ends
 * at the start of the next. */
Test(packed, publications_block_4k_split)
{
    pub_block(th_scaled(3000, 1000), 4 * KiB, true);
}

Test(packed, publications_drop_4k_split)
{
    pub_drop(th_scaled(3000, 1000), 4 * KiB, true);
}

/* ---- flow control with packed frames ---------------------------------------------------------- */

#define FLOW_QUEUE_LIMIT (256u * KiB)
#define FLOW_MSG 600u               /* 100 of them fill a 64 KiB packet */

struct flow_arg {
    uint64_t dest;
    size_t count;
};

static int flow_sender(void *p)
{
    struct flow_arg *a = p;
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint8_t buf[FLOW_MSG];
    pk_t pk;

    pk_init(&pk, BK_DEF_MAX_PACKET);
    for (uint64_t seq = 0; seq < a->count; seq++) {
        msg_fill(buf, FLOW_MSG, 0, seq);
        pk_frame(&pk, hdr_oneway((uint32_t)(seq % BK_SID_MAX_LOCAL) + 1,
                                 a->dest), NULL, 0, buf, FLOW_MSG);
        if (pk.nframes == PER_PACKET)
            pk_send(fd, &pk);
    }
    if (pk.nframes)
        pk_send(fd, &pk);
    raw_ping(fd, 1);
    pk_fini(&pk);
    close(fd);
    return 0;
}

/* A sender packing 100 messages per packet to a receiver that does not
 * read: the broker stops reading the sender (what it has read is far less
 * than what was sent), the receiver's queue stays within queue_limit plus
 * one packet, and once the receiver reads, everything arrives in order. */
Test(packed, flow_control_packed_sender)
{
    char limit[32];

    snprintf(limit, sizeof(limit), "%u", FLOW_QUEUE_LIMIT);
    th_broker_restart(&br, "--queue-limit", limit, NULL);
    broker_t *r = th_connect(&br), *obs = th_connect(&br);
    uint64_t rid = broker_client_id(r), sender = next_client_id(r);
    uint64_t bound = FLOW_QUEUE_LIMIT + broker_limits(r)->max_packet;
    struct flow_arg a = { .dest = rid, .count = th_scaled(20000, 5000) };
    uint64_t q, most, read_in;
    pid_t pid;

    cr_assert_eq(broker_limits(r)->queue_limit, FLOW_QUEUE_LIMIT);
    pid = th_spawn(flow_sender, &a);
    most = await_backlog(obs, rid, FLOW_QUEUE_LIMIT);
    read_in = client_value(obs, sender, "msgs_in");
    q = client_value(obs, rid, "queued_bytes");
    cr_assert_leq(q, bound, "%llu bytes queued, limit %u",
                  (unsigned long long)q, FLOW_QUEUE_LIMIT);
    cr_assert_lt(read_in, a.count, "the broker read every message of a "
                 "sender to a receiver that reads nothing");
    for (uint64_t seq = 0; seq < a.count; seq++) {
        broker_msg_t *m = th_recv(r);
        cr_assert_eq(m->source, sender);
        msg_check(m, FLOW_MSG, 0, seq);
        broker_msg_free(m);
        if (seq % 256 == 255) {
            q = client_value(obs, rid, "queued_bytes");
            most = q > most ? q : most;
            cr_assert_leq(q, bound, "after %llu: %llu bytes queued, limit "
                          "%u", (unsigned long long)seq,
                          (unsigned long long)q, FLOW_QUEUE_LIMIT);
        }
    }
    th_join(pid);
    cr_log_info("flow: %zu messages of %u bytes; %llu read by the broker "
                "when the receiver started; at most %llu bytes queued "
                "(limit %u, bound %llu)", a.count, FLOW_MSG,
                (unsigned long long)read_in, (unsigned long long)most,
                FLOW_QUEUE_LIMIT, (unsigned long long)bound);
    cr_assert_eq(client_value(obs, rid, "queued_bytes"), 0);
    broker_close(r);
    broker_close(obs);
    th_broker_stop(&br);
}

/* ---- fairness: a bulk stream and small messages to one receiver ------------------------------- */

#define FAIR_SMALL 100u

struct bulk_arg {
    uint64_t dest;
    size_t len;
};

/* One one-way message of len bytes through libbroker, which cuts it into
 * fragments of a packet each (shared memory off). */
static int bulk_sender(void *p)
{
    struct bulk_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = malloc(a->len);

    TH_CHECK(data != NULL, "oom");
    th_pattern(data, a->len, 99, 0);
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    TH_OK(broker_send_id(b, a->dest, data, a->len, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(data);
    broker_close(b);
    return 0;
}

/* X sends one 64 MiB message; once the receiver's queue holds a backlog of
 * X's fragments, Y sends 100 small messages in one packet.  The receiver
 * (raw) sees Y's messages come between X's fragments, long before the
 * backlog that was queued ahead of them is through (FAIRNESS: queues
 * take turns, one packet each). */
Test(packed, fairness_bulk_stream_and_small_messages)
{
    bk_welcome_t wr;
    int r = th_raw_connect_hello(br.sock, &wr);
    broker_t *obs = th_connect(&br);
    struct bulk_arg a = { .dest = wr.client_id,
                          .len = th_scaled(64 * MiB, 16 * MiB) };
    uint64_t x = next_client_id(obs), xbytes = 0, xfrags = 0;
    uint64_t backlog, xq, x_before_last_y = 0, ynext = 0;
    bk_welcome_t wy;
    int y;
    uint8_t buf[64];
    bool xdone = false;
    pk_t pk;
    pid_t pid;

    pid = th_spawn(bulk_sender, &a);
    await_backlog(obs, wr.client_id, wr.queue_limit);

    y = th_raw_connect_hello(br.sock, &wy);
    pk_init(&pk, BK_DEF_MAX_PACKET);
    for (uint64_t seq = 0; seq < FAIR_SMALL; seq++) {
        msg_fill(buf, small_len(seq), 1, seq);
        pk_frame(&pk, hdr_oneway((uint32_t)seq + 1, wr.client_id), NULL, 0,
                 buf, small_len(seq));
    }
    /* the PING rides in the same packet: a paused Y still gets its
     * answer, and then all of Y's messages are queued */
    pk_frame(&pk, hdr_ping(9), NULL, 0, NULL, 0);
    pk_send(y, &pk);
    raw_await_pong(y, 9);
    backlog = client_value(obs, wr.client_id, "queued_bytes");
    /* X's fragments queued ahead of Y's messages, about a packet each */
    xq = backlog / wr.max_packet;

    while (!xdone || ynext < FAIR_SMALL) {
        int fds[BK_MAX_FDS_HARD];
        unsigned nfds;
        ssize_t n = raw_recv_fds(r, fds, &nfds);
        const uint8_t *payload;
        size_t off = 0;
        bk_hdr_t h;

        bk_close_fds(fds, nfds);
        cr_assert_gt(n, 0, "receiver: %zd", n);
        while (bk_pkt_next(rxbuf, (size_t)n, &off, &h, &payload) == 1) {
            cr_assert_eq(h.type, BK_T_DATA, "type %u aux %u", h.type, h.aux);
            if (h.source == x) {
                cr_assert_not(xdone, "X: a fragment after the last");
                cr_assert_leq(xbytes + h.length, a.len);
                cr_assert_lt(th_pattern_check(payload, h.length, 99, xbytes),
                             0, "X: bytes differ at offset %llu",
                             (unsigned long long)xbytes);
                xbytes += h.length;
                xfrags++;
                xdone = !(h.flags & BK_F_MORE);
                continue;
            }
            cr_assert_eq(h.source, wy.client_id, "a frame from %llu",
                         (unsigned long long)h.source);
            cr_assert_geq(h.length, 8);
            cr_assert_eq(bk_get64(payload), ynext, "Y: message %llu, "
                         "expected %llu",
                         (unsigned long long)bk_get64(payload),
                         (unsigned long long)ynext);
            cr_assert_lt(th_pattern_check(payload + 8, h.length - 8,
                                          msg_seed(1, ynext), 0), 0);
            if (++ynext == FAIR_SMALL)
                x_before_last_y = xfrags;
        }
    }
    cr_log_info("fairness: %zu MiB from X in %llu fragments; %llu bytes "
                "(~%llu fragments) queued ahead of Y's %u messages; the "
                "last of them came after %llu fragments of X",
                a.len / MiB, (unsigned long long)xfrags,
                (unsigned long long)backlog, (unsigned long long)xq,
                FAIR_SMALL, (unsigned long long)x_before_last_y);
    cr_assert_eq(xbytes, a.len);
    cr_assert_geq(xq, 8, "no backlog to be fair about (%llu bytes)",
                  (unsigned long long)backlog);
    /* in order of arrival Y would wait for all xq of them (and those in
     * the socket); taking turns it waits for a few */
    cr_assert_leq(x_before_last_y, xq / 2, "Y's last message came after "
                  "%llu of X's fragments, with ~%llu queued ahead of it",
                  (unsigned long long)x_before_last_y,
                  (unsigned long long)xq);
    th_join(pid);
    pk_fini(&pk);
    close(y);
    close(r);
    broker_close(obs);
    th_broker_stop(&br);
}

/* ---- packets larger than the default socket buffer ---------------------- */

/* With --max-packet above what a default socket send buffer holds
 * (212992 bytes), the broker's packets towards a receiver must still go
 * out: it sizes each client's send buffer for max_packet. */
Test(packed, a_max_packet_above_the_default_send_buffer_is_carried)
{
    th_broker_t big = { 0 };
    broker_t *tx, *rx;
    broker_msg_t *m;
    size_t len = 600000;
    uint8_t *buf = malloc(len);

    cr_assert_not_null(buf);
    th_broker_start(&big, "--max-packet", "1048576", NULL);
    tx = th_connect(&big);
    rx = th_connect(&big);
    cr_assert_eq(broker_limits(tx)->max_packet, 1048576);
    cr_assert_eq(broker_set_option(tx, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    th_pattern(buf, len, 0x600d, 0);
    cr_assert_eq(broker_send_id(tx, broker_client_id(rx), buf, len, NULL,
                                0), 0);
    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert_eq(m->len, len);
    cr_assert_eq(th_pattern_check(m->data, len, 0x600d, 0), -1,
                 "the 600 KB message arrived corrupted");
    broker_msg_free(m);
    broker_close(tx);
    broker_close(rx);
    th_broker_cleanup(&big);
    free(buf);
}
