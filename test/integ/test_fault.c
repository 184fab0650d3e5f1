/*
 * test_fault.c - brokerd whose heap keeps running out (brokerd-fault, see
 * src/daemon/fault.c): while every N-th of its allocations fails, a
 * sender streams fragmented messages and a publisher fans out to three
 * subscribers.  What a user relies on: a message arrives intact or not
 * at all (never joined from the wrong fragments), the broker does not
 * crash, and once memory is back it serves clients and exits cleanly
 * (under ASan and valgrind: without errors or leaks).  Clients the broker
 * had to disconnect for lack of memory just stop; the rest go on.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "harness.h"

static th_broker_t br;

/* The fault build in place of brokerd, with failures every `every`-th
 * allocation once SIGUSR2 turns them on. */
static void start_fault_broker(const char *every)
{
    const char *fault = getenv("BROKERD_FAULT");

    if (!fault || !*fault)
        cr_skip_test("BROKERD_FAULT is not set: run with make check");
    cr_assert_eq(setenv("BROKERD", fault, 1), 0);
    cr_assert_eq(setenv("BROKERD_FAIL_EVERY", every, 1), 0);
    th_broker_start(&br, NULL);
}

/* Allocation failures on or off (SIGUSR2 toggles them). */
static void toggle_failures(void)
{
    cr_assert_eq(kill(br.pid, SIGUSR2), 0);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(fault, .fini = teardown, .timeout = 300);

#define MSG_LEN (150u * 1024)   /* three fragments of a 64 KiB packet */

/* A payload: its sequence number, then the pattern of that number. */
static void fill(uint8_t *buf, uint64_t seq)
{
    memcpy(buf, &seq, sizeof(seq));
    th_pattern(buf + 8, MSG_LEN - 8, seq, 0);
}

/* Whether msg is one whole payload made by fill. */
static bool intact(const broker_msg_t *m)
{
    uint64_t seq;

    if (m->len != MSG_LEN)
        return false;
    memcpy(&seq, m->data, sizeof(seq));
    return th_pattern_check((const uint8_t *)m->data + 8, MSG_LEN - 8, seq,
                            0) < 0;
}

struct sink {
    const char *name;           /* to register, or NULL: subscribe "f.>" */
    th_barrier_t ready, report;
};

/* A receiver: reads until "done" or until the broker lets it go.
 * Reports the messages that arrived intact, those that did not and the
 * error events it saw (REPORT). */
#define REPORT(good, bad, errs) \
    ((uint64_t)(good) | (uint64_t)(bad) << 20 | (uint64_t)(errs) << 40)
#define GOOD(rep) ((rep) & 0xfffff)
#define BAD(rep) (((rep) >> 20) & 0xfffff)
#define ERRS(rep) ((rep) >> 40)
static int sink(void *arg)
{
    struct sink *s = arg;
    uint64_t got = 0, bad = 0, errs = 0;
    broker_t *b;

    TH_OK(broker_connect(br.sock, &b));
    if (s->name)
        TH_OK(broker_register(b, s->name));
    else
        TH_OK(broker_subscribe(b, "f.>", NULL, BROKER_SUB_BLOCK,
                               &(uint32_t){ 0 }));
    th_barrier_signal(&s->ready, 1);
    for (;;) {
        broker_msg_t *m;
        int r = broker_recv(b, &m, TH_HANG_MS);

        if (r < 0)
            break;              /* disconnected for lack of memory */
        if (m->kind == BROKER_MSG_DATA && m->len == 4 &&
            !memcmp(m->data, "done", 4)) {
            broker_msg_free(m);
            break;
        }
        if (m->kind == BROKER_MSG_DATA) {
            if (intact(m))
                got++;
            else
                bad++;
        } else {
            errs++;
        }
        broker_msg_free(m);
    }
    broker_close(b);
    th_barrier_signal(&s->report, REPORT(got, bad, errs));
    return 0;
}

/* After the storm: a new client gets in and a message goes through, and
 * the broker stops with status 0 (no crash, no checker's complaint). */
static void expect_recovered(void)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    broker_msg_t *m;

    th_register(b, "svc.after");
    cr_assert_eq(broker_send(a, "svc.after", "ok", 2, NULL, 0), 0);
    m = th_recv(b);
    cr_assert_eq(m->len, 2);
    broker_msg_free(m);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* Once failures are off again (the broker takes SIGUSR2 when it next
 * runs, so the first tries may still meet a failing heap), send "done"
 * with send() until the sink has reported; returns its report. */
static uint64_t finish(struct sink *s, int (*send)(broker_t *, const char *),
                       broker_t **a)
{
    struct pollfd p = { .fd = s->report.rd, .events = POLLIN };
    uint64_t end = th_now_ms() + TH_HANG_MS;

    while (poll(&p, 1, 0) == 0) {
        int r;

        cr_assert_lt(th_now_ms(), end, "the sink never finished");
        r = send(*a, s->name);
        if (r == -ECONNRESET || r == -EPIPE) {
            broker_close(*a);       /* the broker let the sender go */
            *a = th_connect(&br);
        }
        poll(&p, 1, 100);
    }
    return th_barrier_wait(&s->report);
}

static int send_done(broker_t *a, const char *name)
{
    return broker_send(a, name, "done", 4, NULL, 0);
}

static int publish_done(broker_t *a, const char *name)
{
    (void)name;
    return broker_publish(a, "f.x", "done", 4, NULL, 0);
}

/* Drain what the broker told the sender (errors for lost messages) and
 * return how many such events there were. */
static unsigned drain_events(broker_t *b)
{
    unsigned n = 0;
    broker_msg_t *m;

    while (broker_recv(b, &m, 0) == 0) {
        n += m->kind != BROKER_MSG_DATA;
        broker_msg_free(m);
    }
    return n;
}

Test(fault, fragmented_messages_arrive_intact_or_not_at_all)
{
    enum { N = 300 };
    struct sink s = { .name = "svc.sink" };
    uint8_t *buf = malloc(MSG_LEN);
    unsigned events = 0, refused = 0;
    uint64_t rep;
    broker_t *a;
    pid_t pid;

    cr_assert_not_null(buf);
    start_fault_broker("29");
    th_barrier_init(&s.ready);
    th_barrier_init(&s.report);
    pid = th_spawn(sink, &s);
    th_barrier_wait(&s.ready);
    a = th_connect(&br);
    toggle_failures();            /* on */
    for (uint64_t i = 0; i < N; i++) {
        int r;

        fill(buf, i);
        r = broker_send(a, "svc.sink", buf, MSG_LEN, NULL, 0);
        if (r == -ECONNRESET || r == -EPIPE)
            break;              /* the broker let the sender go */
        refused += r < 0;
        events += drain_events(a);
    }
    toggle_failures();            /* off */
    rep = finish(&s, send_done, &a);
    th_join(pid);
    broker_close(a);
    cr_assert_eq(BAD(rep), 0, "%llu messages arrived corrupt",
                 (unsigned long long)BAD(rep));
    /* the heap did run out: some message did not make it, or was
     * reported */
    cr_assert(GOOD(rep) < N || events || refused || ERRS(rep),
              "no failure seen: every allocation succeeded?");
    expect_recovered();
    th_barrier_fini(&s.ready);
    th_barrier_fini(&s.report);
    free(buf);
}

Test(fault, fan_out_arrives_intact_or_not_at_all)
{
    enum { N = 300, SUBS = 3 };
    struct sink s[SUBS];
    uint8_t *buf = malloc(MSG_LEN);
    uint64_t got = 0, bad = 0;
    broker_t *a;
    pid_t pid[SUBS];

    cr_assert_not_null(buf);
    start_fault_broker("11");
    for (int i = 0; i < SUBS; i++) {
        s[i].name = NULL;
        th_barrier_init(&s[i].ready);
        th_barrier_init(&s[i].report);
        pid[i] = th_spawn(sink, &s[i]);
        th_barrier_wait(&s[i].ready);
    }
    a = th_connect(&br);
    toggle_failures();            /* on */
    for (uint64_t i = 0; i < N; i++) {
        int r;

        fill(buf, i);
        r = broker_publish(a, "f.x", buf, MSG_LEN, NULL, 0);
        if (r == -ECONNRESET || r == -EPIPE)
            break;
        drain_events(a);
    }
    toggle_failures();            /* off */
    for (int i = 0; i < SUBS; i++) {
        uint64_t rep = finish(&s[i], publish_done, &a);

        got += GOOD(rep);
        bad += BAD(rep);
        th_join(pid[i]);
        th_barrier_fini(&s[i].ready);
        th_barrier_fini(&s[i].report);
    }
    broker_close(a);
    cr_assert_eq(bad, 0, "%llu publications arrived corrupt",
                 (unsigned long long)bad);
    cr_assert_lt(got, (uint64_t)N * SUBS, "no failure seen: every "
                 "allocation succeeded?");
    expect_recovered();
    free(buf);
}
