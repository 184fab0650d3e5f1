/*
 * test_flow.c - flow control: a slow consumer cannot make the broker
 * buffer a fast producer's data; senders sending to each other at once do
 * not deadlock; a client that never reads its errors is not buffered for
 * without bound.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static th_broker_t br;
static char asan_env[512];

/* The broker runs with a 1 MiB queue limit.  Under ASan, freed memory sits
 * in a quarantine (256 MiB by default) that would count as resident; keep
 * it small so the memory bound measures the broker, not the sanitizer. */
static void setup(void)
{
    const char *old = getenv("ASAN_OPTIONS");

    snprintf(asan_env, sizeof(asan_env), "ASAN_OPTIONS=%s%squarantine_size_mb=8",
             old ? old : "", old && *old ? ":" : "");
    br.env[0] = asan_env;
    br.env[1] = NULL;
    th_broker_start(&br, "--queue-limit", "1048576", NULL);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(flow, .init = setup, .fini = teardown, .timeout = 600);

/* Headroom over the broker's starting peak: generous, and still far below
 * the data that passes through. */
#define MEM_SLACK_KB (64L * 1024)

static long broker_hwm(void)
{
    long kb = th_proc_kb(br.pid, "VmHWM");

    cr_assert_gt(kb, 0, "cannot read brokerd's VmHWM");
    return kb;
}

/* ---- slow consumer, fast producer --------------------------------------- */

struct prod_arg {
    th_barrier_t ready;
    size_t total;
    size_t msg;
};

/* Message number seq: seq itself, then its pattern. */
static void fill_msg(uint8_t *buf, size_t len, uint64_t seq)
{
    bk_put64(buf, seq);
    th_pattern(buf + 8, len - 8, seq, 0);
}

/* m is fill_msg's message number seq, len bytes long. */
static void check_msg(const broker_msg_t *m, size_t len, uint64_t seq)
{
    TH_CHECK(m->kind == BROKER_MSG_DATA, "message %llu: %s code %d",
             (unsigned long long)seq, th_kind_str(m->kind), m->code);
    TH_CHECK(m->len == len, "message %llu length %zu",
             (unsigned long long)seq, m->len);
    TH_CHECK(bk_get64(m->data) == seq, "got seq %llu want %llu",
             (unsigned long long)bk_get64(m->data), (unsigned long long)seq);
    TH_CHECK(th_pattern_check((uint8_t *)m->data + 8, m->len - 8, seq, 0) < 0,
             "message %llu bytes", (unsigned long long)seq);
}

static int producer(void *p)
{
    struct prod_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *buf = malloc(a->msg);
    uint32_t sid;

    TH_CHECK(buf != NULL, "oom");
    th_barrier_wait(&a->ready);
    TH_OK(broker_stream_open(b, "svc.slow", 0, &sid));
    for (uint64_t seq = 0; seq * a->msg < a->total; seq++) {
        fill_msg(buf, a->msg, seq);
        int r = broker_stream_write(b, sid, buf, a->msg, NULL, 0);
        TH_CHECK(r == 0, "write %llu: %s", (unsigned long long)seq,
                 broker_strerror(r));
    }
    TH_OK(broker_stream_close(b, sid));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(buf);
    broker_close(b);
    return 0;
}

Test(flow, slow_consumer_bounded_memory)
{
    struct prod_arg arg = { .total = th_scaled(256 * MiB, 8 * MiB),
                            .msg = 64 * KiB };
    broker_t *c = th_connect(&br);
    uint64_t count, seq;
    long base;
    pid_t pid;

    arg.total -= arg.total % arg.msg;       /* whole messages */
    count = arg.total / arg.msg;
    th_register(c, "svc.slow");
    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0);
    base = broker_hwm();
    th_barrier_init(&arg.ready);
    pid = th_spawn(producer, &arg);
    th_barrier_signal(&arg.ready, 0);

    for (seq = 0; seq < count; seq++) {
        broker_msg_t *m = th_recv(c);
        check_msg(m, arg.msg, seq);
        broker_msg_free(m);
        /* Be much slower than the producer (at most ~100 MB/s) so that,
         * without flow control, most of the data would pile up in the
         * broker.  Only a pace, not a timing assertion. */
        if (seq % 16 == 15)
            usleep(10000);
    }
    broker_msg_t *m = th_recv_kind(c, BROKER_MSG_CLOSE);
    broker_msg_free(m);
    th_join(pid);

    long hwm = broker_hwm();
    cr_log_info("slow consumer: %zu MiB passed, brokerd VmHWM %ld -> %ld KiB",
                arg.total / MiB, base, hwm);
    cr_assert_lt(hwm, base + MEM_SLACK_KB,
                 "brokerd peak RSS grew from %ld to %ld KiB while %zu MiB "
                 "passed through a 1 MiB queue", base, hwm,
                 arg.total / MiB);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- two clients sending big messages to each other at once -------------- */

/* Run fn in two children with the arguments x and y, which share the
 * barriers ready and go.  fn signals ready and waits for go twice: once
 * set up, once done; so the two start at once, and neither disconnects
 * before both have reported success. */
static void run_both_sides(th_fn fn, void *x, void *y, th_barrier_t *ready,
                           th_barrier_t *go)
{
    pid_t px = th_spawn(fn, x), py = th_spawn(fn, y);

    for (int phase = 0; phase < 2; phase++) {
        th_barrier_wait(ready);
        th_barrier_wait(ready);
        th_barrier_signal(go, 0);
        th_barrier_signal(go, 0);
    }
    th_join(px);
    th_join(py);
}

struct pair_arg {
    th_barrier_t ready, go;
    const char *me, *peer;
    size_t len;
    uint64_t seed;
};

static int pair_side(void *p)
{
    struct pair_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = malloc(a->len);
    broker_msg_t *m;

    TH_CHECK(data != NULL, "oom");
    th_pattern(data, a->len, a->seed, 0);
    TH_OK(broker_set_option(b, BROKER_OPT_MAX_MSG, a->len + MiB));
    th_register(b, a->me);
    th_barrier_signal(&a->ready, broker_client_id(b));
    th_barrier_wait(&a->go);
    /* Both sides are inside broker_send at the same time; each one's
     * library must keep reading the other's message meanwhile. */
    int r = broker_send(b, a->peer, data, a->len, NULL, 0);
    TH_CHECK(r == 0, "send: %s", broker_strerror(r));
    m = th_recv_kind(b, BROKER_MSG_DATA);
    TH_CHECK(m->len == a->len, "got %zu bytes", m->len);
    TH_CHECK(th_pattern_check(m->data, m->len, a->seed ^ 1, 0) < 0,
             "received bytes differ");
    broker_msg_free(m);
    free(data);
    th_barrier_signal(&a->ready, 0);
    th_barrier_wait(&a->go);
    broker_close(b);
    return 0;
}

Test(flow, crossing_big_messages_no_deadlock)
{
    size_t len = th_scaled(64 * MiB, 4 * MiB);
    struct pair_arg x = { .me = "svc.x", .peer = "svc.y", .len = len,
                          .seed = 10 };
    struct pair_arg y = { .me = "svc.y", .peer = "svc.x", .len = len,
                          .seed = 11 };

    th_barrier_init(&x.ready);
    th_barrier_init(&x.go);
    y.ready = x.ready;
    y.go = x.go;
    run_both_sides(pair_side, &x, &y, &x.ready, &x.go);
    th_barrier_fini(&x.ready);
    th_barrier_fini(&x.go);
    th_broker_stop(&br);
}

/* Many streams in both directions between the same two clients. */
struct bulk_arg {
    th_barrier_t ready, go;
    const char *me, *peer;
    int count;
};

static int bulk_side(void *p)
{
    struct bulk_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *buf = malloc(200 * KiB);
    uint32_t sid;

    TH_CHECK(buf != NULL, "oom");
    th_register(b, a->me);
    th_barrier_signal(&a->ready, 0);
    th_barrier_wait(&a->go);
    TH_OK(broker_stream_open(b, a->peer, 0, &sid));
    for (int i = 0; i < a->count; i++) {
        fill_msg(buf, 200 * KiB, (uint64_t)i);
        TH_OK(broker_stream_write(b, sid, buf, 200 * KiB, NULL, 0));
    }
    for (int i = 0; i < a->count; i++) {
        broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
        check_msg(m, 200 * KiB, (uint64_t)i);
        broker_msg_free(m);
    }
    th_barrier_signal(&a->ready, 0);
    th_barrier_wait(&a->go);
    broker_close(b);
    return 0;
}

Test(flow, streams_both_ways_no_deadlock)
{
    int count = (int)th_scaled(300, 20);
    struct bulk_arg x = { .me = "svc.bx", .peer = "svc.by", .count = count };
    struct bulk_arg y = { .me = "svc.by", .peer = "svc.bx", .count = count };

    th_barrier_init(&x.ready);
    th_barrier_init(&x.go);
    y.ready = x.ready;
    y.go = x.go;
    run_both_sides(bulk_side, &x, &y, &x.ready, &x.go);
    th_barrier_fini(&x.ready);
    th_barrier_fini(&x.go);
    th_broker_stop(&br);
}

/* ---- a client that never reads what the broker sends it ---------------- */

Test(flow, unread_errors_do_not_grow_the_broker)
{
    int fd = th_raw_connect_hello(br.sock, NULL);
    size_t limit = th_scaled(2000000, 100000), sent = 0;
    broker_t *c = th_connect(&br);
    uint8_t pl[16];
    long base;

    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0);
    base = broker_hwm();
    memcpy(pl, "svc.nobody", 10);
    pl[10] = 'x';
    /* One-way messages to a name nobody owns: each earns an ERROR frame
     * that we never read.  Stop when the broker stops reading us. */
    while (sent < limit) {
        bk_hdr_t h = { .version = 1, .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_NAME,
                       .length = 11, .aux = 10,
                       .stream = (uint32_t)(sent % BK_SID_MAX_LOCAL) + 1 };
        uint8_t hdr[BK_HDR_SIZE];
        struct iovec iov[2] = { { hdr, BK_HDR_SIZE }, { pl, 11 } };
        bk_hdr_encode(&h, hdr);
        int r = bk_sock_send(fd, iov, 2, NULL, 0);
        if (r == -EAGAIN) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            if (poll(&p, 1, 200) == 0)
                break;          /* the broker has stopped reading us */
            continue;
        }
        cr_assert_eq(r, 0, "send: %s", strerror(-r));
        sent++;
    }
    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0, "broker still serves others");
    long hwm = broker_hwm();
    cr_log_info("unread errors: %zu messages sent, brokerd VmHWM %ld -> "
                "%ld KiB", sent, base, hwm);
    cr_assert_lt(hwm, base + MEM_SLACK_KB,
                 "brokerd peak RSS grew from %ld to %ld KiB buffering "
                 "errors for a client that never reads (%zu messages)",
                 base, hwm, sent);
    close(fd);
    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0);
    broker_close(c);
    th_broker_stop(&br);
}
