/*
 * test_lib_bounds.c - libbroker's memory stays bounded against a real
 * brokerd: the FIFO of received messages (BROKER_OPT_MAX_QUEUED) stops
 * reading the socket when full, so the broker's flow control holds the
 * sender back; a blocking call still gets its reply, and at the ceiling
 * of what blocking calls read it fails with -ENOBUFS instead of growing;
 * after draining, every message is there, intact and in order.  The
 * total of partial messages (BROKER_OPT_MAX_PARTIAL_BYTES) refuses the
 * one that would pass it and lets the other through.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"
#include "th_uv.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

#define QUEUE_LIMIT (256 * KiB)     /* the broker's, per client */
#define BOUND       (2 * MiB)       /* the receiver's BROKER_OPT_MAX_QUEUED */
#define MSG_SIZE    (16 * KiB)

static th_broker_t br;

static void setup(void)
{
    th_broker_start(&br, "--queue-limit", "262144", NULL);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(bounds, .init = setup, .fini = teardown, .timeout = 300);

/* ---- helpers ---------------------------------------------------------------- */

/* Message number seq: seq itself, then its pattern. */
static void fill_msg(uint8_t *buf, size_t len, uint64_t seq)
{
    bk_put64(buf, seq);
    th_pattern(buf + 8, len - 8, seq, 0);
}

static void check_msg(const broker_msg_t *m, uint64_t seq)
{
    cr_assert_eq(m->kind, BROKER_MSG_DATA, "message %llu: %s code %d",
                 (unsigned long long)seq, th_kind_str(m->kind), m->code);
    cr_assert_eq(m->len, MSG_SIZE, "message %llu: %zu bytes",
                 (unsigned long long)seq, m->len);
    cr_assert_eq(bk_get64(m->data), seq, "got message %llu, want %llu",
                 (unsigned long long)bk_get64(m->data),
                 (unsigned long long)seq);
    cr_assert_lt(th_pattern_check((uint8_t *)m->data + 8, m->len - 8, seq, 0),
                 0, "message %llu corrupt", (unsigned long long)seq);
}

/* The value of key in client id's record of the broker's client list. */
static uint64_t client_value(broker_t *b, uint64_t id, const char *key)
{
    char *text, want[32], kk[64];
    const char *rec, *v, *eol;
    uint64_t val;
    size_t len;

    TH_OK(broker_list(b, BROKER_CTRL_LIST_CLIENTS, &text, &len));
    snprintf(want, sizeof(want), "id=%llu ", (unsigned long long)id);
    rec = strstr(text, want);
    while (rec && rec != text && rec[-1] != '\n')
        rec = strstr(rec + 1, want);
    cr_assert_not_null(rec, "client %llu not listed", (unsigned long long)id);
    snprintf(kk, sizeof(kk), " %s=", key);
    v = strstr(rec, kk);
    eol = strchr(rec, '\n');
    cr_assert(v && (!eol || v < eol), "no %s for client %llu", key,
              (unsigned long long)id);
    val = strtoull(v + strlen(kk), NULL, 10);
    free(text);
    return val;
}

/* Ask until client id's queue in the broker holds more than `bytes`.
 * (A receiver that stopped reading holds more than half the limit for
 * good: the broker pauses the sender past the limit and resumes it at
 * half.) */
static void await_broker_queue_over(broker_t *obs, uint64_t id,
                                    uint64_t bytes)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned nap = 500;

    while (client_value(obs, id, "queued_mem") <= bytes) {
        cr_assert_lt(th_now_ms(), end, "client %llu's queue in the broker "
                     "never passed %llu bytes", (unsigned long long)id,
                     (unsigned long long)bytes);
        th_nap(&nap);
    }
}

/* What blocking calls of a receiver with BOUND may read up to (in.h). */
static uint64_t ceiling(broker_t *b)
{
    uint64_t room = 2 * broker_limits(b)->queue_limit;

    return BOUND + (room > BOUND ? room : BOUND);
}

/* What one read may add past a limit checked before it: one packet's
 * messages, each with the library's object. */
static uint64_t read_slack(broker_t *b)
{
    return broker_limits(b)->max_packet + 2 * MSG_SIZE + 64 * KiB;
}

/* ---- the flood: a sender and an echo service in children ------------------ */

struct flood {
    size_t count;                   /* messages of MSG_SIZE */
    volatile uint64_t *sent;        /* shared: messages written so far */
    th_barrier_t echo_ready;
};

/* Writes count numbered messages on one stream to "sink" (in order: one
 * stream), then closes it. */
static int sender(void *p)
{
    struct flood *f = p;
    broker_t *b = th_connect(&br);
    uint8_t *buf = malloc(MSG_SIZE);
    uint32_t sid;

    TH_CHECK(buf != NULL, "oom");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    TH_OK(broker_stream_open(b, "sink", 0, &sid));
    for (uint64_t seq = 0; seq < f->count; seq++) {
        fill_msg(buf, MSG_SIZE, seq);
        int r = broker_stream_write(b, sid, buf, MSG_SIZE, NULL, 0);
        TH_CHECK(r == 0, "write %llu: %s", (unsigned long long)seq,
                 broker_strerror(r));
        __atomic_store_n(f->sent, seq + 1, __ATOMIC_RELEASE);
    }
    TH_OK(broker_stream_close(b, sid));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(buf);
    broker_close(b);
    return 0;
}

/* Answers requests to "echo" with their own bytes until a one-way "quit". */
static int echo_service(void *p)
{
    struct flood *f = p;
    broker_t *b = th_connect(&br);

    th_register(b, "echo");
    th_barrier_signal(&f->echo_ready, 0);
    for (;;) {
        broker_msg_t *m = th_recv(b);

        if (broker_msg_is_request(m)) {
            TH_OK(broker_reply(b, m, m->data, m->len, NULL, 0));
        } else if (m->kind == BROKER_MSG_DATA && m->len == 4 &&
                   !memcmp(m->data, "quit", 4)) {
            broker_msg_free(m);
            break;
        }
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

static void flood_init(struct flood *f, size_t total)
{
    f->count = total / MSG_SIZE;
    f->sent = mmap(NULL, sizeof(*f->sent), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)f->sent, MAP_FAILED);
    *f->sent = 0;
    th_barrier_init(&f->echo_ready);
}

static void flood_fini(struct flood *f)
{
    munmap((void *)f->sent, sizeof(*f->sent));
    th_barrier_fini(&f->echo_ready);
}

static uint64_t flood_sent(const struct flood *f)
{
    return __atomic_load_n(f->sent, __ATOMIC_ACQUIRE);
}

/* The receiver: "sink", with the FIFO bound. */
static broker_t *sink_connect(void)
{
    broker_t *r = th_connect(&br);

    cr_assert_eq(broker_set_option(r, BROKER_OPT_MAX_QUEUED, 0), -EINVAL);
    cr_assert_eq(broker_set_option(r, BROKER_OPT_MAX_QUEUED, BOUND), 0);
    th_register(r, "sink");
    cr_assert_eq(broker_limits(r)->queue_limit, QUEUE_LIMIT);
    return r;
}

/* Receive every message of the flood, in order and intact, then its
 * CLOSE, checking the FIFO's figure as the library reads on: below the
 * ceiling, and once it has come down below the bound (no blocking call
 * runs any more), below the bound plus one read. */
static void drain(broker_t *r, const struct flood *f)
{
    bool came_down = false;

    for (uint64_t seq = 0; seq < f->count; seq++) {
        broker_msg_t *m = th_recv(r);
        uint64_t q = broker_queued(r);

        check_msg(m, seq);
        broker_msg_free(m);
        came_down = came_down || q < BOUND;
        cr_assert_leq(q, came_down ? BOUND + read_slack(r)
                                   : ceiling(r) + read_slack(r),
                      "message %llu: %llu bytes queued",
                      (unsigned long long)seq, (unsigned long long)q);
    }
    broker_msg_free(th_recv_kind(r, BROKER_MSG_CLOSE));
    cr_assert_eq(broker_queued(r), 0);
}

/* ---- the FIFO bound ------------------------------------------------------- */

/* A receiver that does not receive reads nothing, so the sender is held
 * back by the broker; blocking calls read only up to their reply, the
 * FIFO's figure staying below the ceiling; a call gets its reply while
 * the FIFO is full; then everything arrives, in order. */
Test(bounds, full_fifo_holds_the_sender_back_and_a_call_gets_its_reply)
{
    struct flood f;
    broker_t *r = sink_connect(), *obs = th_connect(&br);
    broker_msg_t *reply = NULL;
    uint64_t id = broker_client_id(r), q;
    pid_t ps, pe;
    int rc;

    /* The whole flood stays below the ceiling, so that no call here can
     * reach it however the processes are scheduled; and it is more than
     * the broker and the sockets hold (the queue limit, 8 packets put
     * aside, two socket buffers). */
    flood_init(&f, ceiling(r) - 512 * KiB);
    cr_assert_lt(f.count * MSG_SIZE + read_slack(r), ceiling(r));
    pe = th_spawn(echo_service, &f);
    th_barrier_wait(&f.echo_ready);
    ps = th_spawn(sender, &f);

    /* Not receiving: the library reads nothing, the broker's queue for
     * us fills and the broker stops reading the sender. */
    await_broker_queue_over(obs, id, QUEUE_LIMIT / 2);
    cr_assert_eq(broker_queued(r), 0, "read without being asked");
    cr_assert_lt(flood_sent(&f), f.count,
                 "the sender finished although nobody read (%llu of %zu)",
                 (unsigned long long)flood_sent(&f), f.count);
    cr_log_info("held back: %llu of %zu messages written",
                (unsigned long long)flood_sent(&f), f.count);

    /* Pings read (they must, to reach their replies) and queue what
     * they read, up to the bound. */
    uint64_t end = th_now_ms() + TH_HANG_MS;
    while ((q = broker_queued(r)) < BOUND) {
        cr_assert_lt(th_now_ms(), end, "the FIFO never filled (%llu)",
                     (unsigned long long)q);
        rc = broker_ping(r, TH_HANG_MS);
        cr_assert_eq(rc, 0, "ping: %s", broker_strerror(rc));
        cr_assert_leq(broker_queued(r), ceiling(r) + read_slack(r));
    }
    /* Full: a call still gets its reply, through what waits before it. */
    rc = broker_call(r, "echo", "while full", 10, &reply, TH_HANG_MS);
    cr_assert_eq(rc, 0, "call with a full FIFO: %s", broker_strerror(rc));
    cr_assert_eq(reply->len, 10);
    cr_assert_arr_eq(reply->data, "while full", 10);
    broker_msg_free(reply);
    cr_assert_geq(broker_queued(r), q, "queued messages went missing");
    cr_assert_leq(broker_queued(r), ceiling(r) + read_slack(r));

    drain(r, &f);
    th_join(ps);
    TH_OK(broker_send(r, "echo", "quit", 4, NULL, 0));
    th_join(pe);
    broker_close(obs);
    broker_close(r);
    flood_fini(&f);
}

/* Under a flood without end, blocking calls read up to the ceiling and
 * then fail with -ENOBUFS; from then on nothing is read until the
 * application receives, while the broker holds the sender back; after
 * draining, the connection works and nothing was lost. */
Test(bounds, blocking_calls_stop_at_the_ceiling_with_enobufs)
{
    struct flood f;
    broker_t *r = sink_connect(), *obs = th_connect(&br);
    uint64_t id = broker_client_id(r), q;
    unsigned pings = 0;
    pid_t ps;
    int rc;

    flood_init(&f, 4 * ceiling(r));
    ps = th_spawn(sender, &f);
    uint64_t end = th_now_ms() + TH_HANG_MS;
    while ((rc = broker_ping(r, TH_HANG_MS)) == 0) {
        cr_assert_lt(th_now_ms(), end, "pings never reached the ceiling "
                     "(%llu queued)", (unsigned long long)broker_queued(r));
        cr_assert_lt(flood_sent(&f), f.count, "the whole flood was read "
                     "(%llu queued)", (unsigned long long)broker_queued(r));
        pings++;
        cr_assert_leq(broker_queued(r), ceiling(r) + read_slack(r));
    }
    cr_assert_eq(rc, -ENOBUFS, "ping: %s", broker_strerror(rc));
    q = broker_queued(r);
    cr_assert_geq(q, ceiling(r));
    cr_assert_leq(q, ceiling(r) + read_slack(r));
    cr_log_info("ceiling after %u pings: %llu bytes queued", pings,
                (unsigned long long)q);
    /* other blocking calls too, at once */
    cr_assert_eq(broker_ping(r, TH_HANG_MS), -ENOBUFS);
    cr_assert_eq(broker_queued(r), q);
    /* nothing is read meanwhile: the broker holds the rest back */
    await_broker_queue_over(obs, id, QUEUE_LIMIT / 2);
    cr_assert_eq(broker_queued(r), q);
    cr_assert_lt(flood_sent(&f), f.count);

    drain(r, &f);
    th_join(ps);
    cr_assert_eq(broker_ping(r, TH_HANG_MS), 0, "works again once drained");
    broker_close(obs);
    broker_close(r);
    flood_fini(&f);
}

/* ---- attached mode ---------------------------------------------------------- */

struct async_sink {
    uint64_t next;                  /* the message expected next */
    uint64_t max_queued;            /* the most broker_queued() showed */
    bool closed;
};

static void async_on_message(broker_t *b, broker_msg_t *m, void *ud)
{
    struct async_sink *a = ud;
    uint64_t q = broker_queued(b);

    if (q > a->max_queued)
        a->max_queued = q;
    if (m->kind == BROKER_MSG_CLOSE) {
        a->closed = true;
    } else {
        check_msg(m, a->next);
        a->next++;
    }
    broker_msg_free(m);
}

static bool async_done(void *ud)
{
    return ((struct async_sink *)ud)->closed;
}

/* An attached connection at its bound stops polling for input and polls
 * again once the callbacks had the messages: with a bound of one byte it
 * reads one packet per pass, and still gets everything, in order. */
Test(bounds, attached_connection_at_the_bound_reads_a_packet_per_pass)
{
    struct async_sink a = { 0 };
    broker_t *r = th_connect(&br);
    broker_callbacks_t cbs = { .on_message = async_on_message };
    struct flood f;
    uv_loop_t loop;
    pid_t ps;

    cr_assert_eq(broker_set_option(r, BROKER_OPT_MAX_QUEUED, 1), 0);
    th_register(r, "sink");
    flood_init(&f, 4 * MiB);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(r, &loop, &cbs, &a), 0);
    ps = th_spawn(sender, &f);
    th_uv_run_until(&loop, async_done, &a);
    cr_assert_eq(a.next, f.count);
    cr_assert_leq(a.max_queued, read_slack(r),
                  "%llu bytes queued at once with a bound of 1",
                  (unsigned long long)a.max_queued);
    th_join(ps);
    broker_close(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    flood_fini(&f);
}

/* ---- the partial messages' total ------------------------------------------ */

#define PART_TOTAL (4 * MiB)
#define PART_MSG   (3 * MiB)

struct partial_arg {
    uint64_t dest;                  /* the receiver's client id */
    th_barrier_t refused;           /* the sender's stream refused */
    th_barrier_t done;
};

/* Send the first part of a PART_MSG message on stream sid (seeded sid)
 * and then its last byte, with a raw connection. */
static void raw_part(int fd, uint64_t dest, uint32_t sid, bool last,
                     const uint8_t *data, size_t chunk)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                   .stream = sid };

    if (last) {
        h.flags = BK_F_CONT | BK_F_CLOSE;
        h.length = 1;
        TH_CHECK(th_raw_send(fd, &h, data + PART_MSG - 1, NULL, 0) == 0,
                 "send last");
        return;
    }
    for (size_t off = 0; off < PART_MSG - 1; off += chunk) {
        size_t n = PART_MSG - 1 - off < chunk ? PART_MSG - 1 - off : chunk;

        h.flags = (off ? BK_F_CONT : BK_F_OPEN) | BK_F_MORE;
        h.dest = off ? 0 : dest;
        h.length = (uint32_t)n;
        TH_CHECK(th_raw_send(fd, &h, data + off, NULL, 0) == 0, "send");
    }
}

/* The CLOSE or ERROR the broker relays for one of our streams: its
 * stream id, after checking the code. */
static uint32_t raw_await_end(int fd)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];

    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        size_t off = 0;
        const uint8_t *pl;
        bk_hdr_t h;

        TH_CHECK(n > 0, "raw sender: %zd", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1)
            if (h.type == BK_T_ERROR || h.type == BK_T_CLOSE) {
                TH_CHECK(h.aux == ENOBUFS, "stream %u ended with code %u",
                         h.stream, h.aux);
                return h.stream;
            }
    }
}

/* Two messages partly sent on streams 1 and 2, then, once the receiver
 * has refused one, the last byte of the other. */
static int partial_sender(void *p)
{
    struct partial_arg *a = p;
    uint8_t *m1 = malloc(PART_MSG), *m2 = malloc(PART_MSG);
    bk_welcome_t w;
    int fd = th_raw_connect_hello(br.sock, &w);
    uint32_t gone;

    TH_CHECK(fd >= 0 && m1 && m2, "setup");
    th_pattern(m1, PART_MSG, 1, 0);
    th_pattern(m2, PART_MSG, 2, 0);
    raw_part(fd, a->dest, 1, false, m1, w.max_packet - BK_HDR_SIZE);
    raw_part(fd, a->dest, 2, false, m2, w.max_packet - BK_HDR_SIZE);
    gone = raw_await_end(fd);
    TH_CHECK(gone == 1 || gone == 2, "stream %u", gone);
    raw_part(fd, a->dest, gone == 1 ? 2 : 1, true, gone == 1 ? m2 : m1, 0);
    th_barrier_signal(&a->refused, gone);
    th_barrier_wait(&a->done);
    close(fd);
    free(m1);
    free(m2);
    return 0;
}

Test(bounds, partial_total_refuses_one_message_and_keeps_the_other)
{
    struct partial_arg a;
    broker_t *r = th_connect(&br);
    uint8_t *want = malloc(PART_MSG);
    bool got_data = false, got_err = false;
    uint64_t gone;
    pid_t pid;

    cr_assert_not_null(want);
    cr_assert_eq(broker_set_option(r, BROKER_OPT_MAX_PARTIAL_BYTES,
                                   PART_TOTAL), 0);
    a.dest = broker_client_id(r);
    th_barrier_init(&a.refused);
    th_barrier_init(&a.done);
    pid = th_spawn(partial_sender, &a);
    /* each message alone fits the total, both at once do not */
    while (!got_data || !got_err) {
        broker_msg_t *m = th_recv(r);

        if (m->kind == BROKER_MSG_DATA) {
            cr_assert_not(got_data, "two messages came through");
            cr_assert_eq(m->len, PART_MSG);
            got_data = true;
            /* which one it is shows in its bytes */
            th_pattern(want, PART_MSG, th_pattern_check(m->data, 64, 1, 0)
                                       < 0 ? 1 : 2, 0);
            cr_assert_eq(memcmp(m->data, want, PART_MSG), 0,
                         "the message that got through is corrupt");
        } else {
            cr_assert_eq(m->kind, BROKER_MSG_ERROR, "got %s",
                         th_kind_str(m->kind));
            cr_assert_not(got_err, "two messages refused");
            cr_assert_eq(m->code, -ENOBUFS, "refused with %d", m->code);
            got_err = true;
        }
        broker_msg_free(m);
    }
    gone = th_barrier_wait(&a.refused);
    cr_assert(gone == 1 || gone == 2);
    th_barrier_signal(&a.done, 0);
    th_join(pid);
    /* the connection goes on */
    cr_assert_eq(broker_ping(r, TH_HANG_MS), 0);
    broker_close(r);
    free(want);
    th_barrier_fini(&a.refused);
    th_barrier_fini(&a.done);
}
