/*
 * test_scale.c - many clients: 10,000 connect (scaled by
 * $BROKER_TEST_SCALE), each sends one 64 KiB one-way message to a sink
 * that checks every byte, then all leave.  Afterwards the broker holds
 * the fds it held before and `brokerctl status` counts only the sink.  In
 * plain builds the broker's resident memory is held to its budget: under
 * 16 KiB per client while they are connected, and near its idle size once
 * they left.  The broker raises its own file descriptor limit at start.
 *
 * Clients are split over WORKERS forked processes, so no process of the
 * test needs as many fds as the broker.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"

#define KiB 1024u
#define MSG_LEN (64u * KiB)
#define WORKERS 10
/* RSS budget (plain builds): per connected client that sent a message,
 * and the headroom over idle once they have all gone. */
#define RSS_PER_CLIENT_KB 16L
#define RSS_AFTER_SLACK_KB (4L * 1024)
/* The soft fd limit the broker starts with in nofile_raised. */
#define LOW_NOFILE 512

static th_broker_t br;

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(scale, .fini = teardown, .timeout = 900);

/* brokerd runs under a checker (dev.sh test --valgrind sets
 * BROKERD_WRAPPER to a valgrind command line). */
static bool wrapped(void)
{
    const char *w = getenv("BROKERD_WRAPPER");

    return w && *w;
}

/* RSS figures mean something only for the broker itself: under ASan they
 * include shadow memory and the quarantine of freed blocks, under
 * valgrind they are valgrind's own. */
static bool rss_meaningful(void)
{
#ifdef __SANITIZE_ADDRESS__
    return false;
#else
    return !wrapped();
#endif
}

/* Soft fd limit of this process (and its children) at least `want`,
 * raising the hard limit too if we may.  False if that cannot be had. */
static bool nofile_at_least(rlim_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return false;
    if (rl.rlim_max < want) {
        rl.rlim_max = want;     /* root only */
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return false;
    }
    if (rl.rlim_cur < want)
        rl.rlim_cur = rl.rlim_max;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* Message of client i: i, then its pattern. */
static void fill_msg(uint8_t *buf, uint64_t i)
{
    bk_put64(buf, i);
    th_pattern(buf + 8, MSG_LEN - 8, i, 0);
}

/* ---- the sink ------------------------------------------------------------- */

struct sink_arg {
    size_t n;
    th_barrier_t ready, done, quit;
};

static void check_msg(const broker_msg_t *m, size_t n, uint8_t *seen)
{
    uint64_t i;

    TH_CHECK(m->kind == BROKER_MSG_DATA, "sink got %s (code %d)",
             th_kind_str(m->kind), m->code);
    TH_CHECK(m->len == MSG_LEN, "sink got %zu bytes", m->len);
    i = bk_get64(m->data);
    TH_CHECK(i < n, "message of client %llu", (unsigned long long)i);
    TH_CHECK(!seen[i], "client %llu's message twice", (unsigned long long)i);
    seen[i] = 1;
    TH_CHECK(th_pattern_check((uint8_t *)m->data + 8, MSG_LEN - 8, i, 0) < 0,
             "client %llu's message corrupted", (unsigned long long)i);
}

/* Owns "sink", takes every client's message (all partly received at
 * once, at worst), reports the count, stays until told to go. */
static int sink(void *p)
{
    struct sink_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *seen = calloc(a->n, 1);
    size_t got = 0;

    TH_CHECK(seen != NULL, "out of memory");
    TH_OK(broker_set_option(b, BROKER_OPT_MAX_PARTIAL, a->n + 16));
    th_register(b, "sink");
    th_barrier_signal(&a->ready, 0);
    for (; got < a->n; got++) {
        broker_msg_t *m = th_recv(b);
        check_msg(m, a->n, seen);
        broker_msg_free(m);
    }
    th_barrier_signal(&a->done, got);
    th_barrier_wait(&a->quit);
    free(seen);
    broker_close(b);
    return 0;
}

/* ---- the clients ------------------------------------------------------------ */

struct worker_arg {
    size_t first, count;        /* client numbers [first, first + count) */
    th_barrier_t connected, go, leave;
};

static int worker(void *p)
{
    struct worker_arg *a = p;
    broker_t **b = calloc(a->count, sizeof(*b));
    uint8_t *buf = malloc(MSG_LEN);

    TH_CHECK(b && buf, "out of memory");
    for (size_t i = 0; i < a->count; i++)
        b[i] = th_connect(&br);
    th_barrier_signal(&a->connected, 0);
    th_barrier_wait(&a->go);
    for (size_t i = 0; i < a->count; i++) {
        fill_msg(buf, a->first + i);
        TH_OK(broker_send(b[i], "sink", buf, MSG_LEN, NULL, 0));
    }
    th_barrier_wait(&a->leave);
    for (size_t i = 0; i < a->count; i++)
        broker_close(b[i]);
    free(b);
    free(buf);
    return 0;
}

/* ---- the broker's view ------------------------------------------------------ */

static long broker_rss(void)
{
    long kb = th_proc_kb(br.pid, "VmRSS");

    cr_assert_gt(kb, 0, "cannot read brokerd's VmRSS");
    return kb;
}

/* Wait (hang-guarded) until the broker's RSS is at most max_kb: freed
 * memory goes back to the system a second after a queue drained or many
 * clients left (brokerd(8)). */
static void await_rss_at_most(long max_kb, const char *when)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;
    long kb;

    while ((kb = broker_rss()) > max_kb && th_now_ms() < end)
        th_nap(&us);
    cr_log_info("brokerd RSS %s: %ld KiB (at most %ld)", when, kb, max_kb);
    cr_assert_leq(kb, max_kb, "brokerd RSS %s: %ld KiB, more than %ld",
                  when, kb, max_kb);
}

static bool one_client(const char *out)
{
    const char *c = strstr(out, "\nclients:");

    return c && strtoul(c + strlen("\nclients:"), NULL, 10) == 1;
}

/* Wait (hang-guarded) until `brokerctl status` counts one client: its
 * own connection. */
static void await_one_client(void)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;

    for (;;) {
        th_output_t out;
        int st = th_ctl(br.sock, &out, "status", NULL);
        bool ok = TH_EXITED(st, 0) && one_client(out.out);

        if (ok || th_now_ms() >= end)
            cr_assert(ok, "brokerctl status (status %d):\n%s%s", st,
                      out.out, out.err);
        th_output_free(&out);
        if (ok)
            return;
        th_nap(&us);
    }
}

/* Wait (hang-guarded) until the broker holds `want` fds (the fds of
 * clients that left are closed when it gets to their EOF). */
static void await_fds(int want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;
    int n;

    while ((n = th_fd_count(br.pid)) != want && th_now_ms() < end)
        th_nap(&us);
    cr_assert_eq(n, want, "brokerd holds %d fds, %d before the clients",
                 n, want);
}

/* ---- tests ---------------------------------------------------------------- */

Test(scale, ten_thousand_clients_send_and_leave)
{
    size_t n = th_scaled(10000, 100);
    char limit[24];
    struct sink_arg sa = { .n = n };
    struct worker_arg wa[WORKERS];
    pid_t spid, wpid[WORKERS];
    long idle_kb, base_kb;
    int base_fds;

    if (!nofile_at_least(n + 256))
        cr_skip_test("cannot have %zu file descriptors", n + 256);
    snprintf(limit, sizeof(limit), "%zu", n + 64);
    th_broker_start(&br, "--max-clients", limit, "--max-clients-per-uid",
                    limit, "--max-streams", limit, NULL);
    idle_kb = broker_rss();

    th_barrier_init(&sa.ready);
    th_barrier_init(&sa.done);
    th_barrier_init(&sa.quit);
    spid = th_spawn(sink, &sa);
    th_barrier_wait(&sa.ready);
    base_kb = broker_rss();
    base_fds = th_fd_count(br.pid);
    cr_assert_gt(base_fds, 0);

    for (int w = 0; w < WORKERS; w++) {
        wa[w].first = n * w / WORKERS;
        wa[w].count = n * (w + 1) / WORKERS - wa[w].first;
        th_barrier_init(&wa[w].connected);
        th_barrier_init(&wa[w].go);
        th_barrier_init(&wa[w].leave);
        wpid[w] = th_spawn(worker, &wa[w]);
    }
    for (int w = 0; w < WORKERS; w++)
        th_barrier_wait(&wa[w].connected);
    cr_assert_eq(th_fd_count(br.pid), base_fds + (int)n,
                 "brokerd does not hold one fd per client");
    for (int w = 0; w < WORKERS; w++)
        th_barrier_signal(&wa[w].go, 0);
    cr_assert_eq(th_barrier_wait(&sa.done), n, "the sink's count");
    if (rss_meaningful())
        await_rss_at_most(base_kb + RSS_PER_CLIENT_KB * (long)n,
                          "with every client connected");

    for (int w = 0; w < WORKERS; w++)
        th_barrier_signal(&wa[w].leave, 0);
    for (int w = 0; w < WORKERS; w++)
        th_join(wpid[w]);
    await_fds(base_fds);
    if (rss_meaningful())
        await_rss_at_most(idle_kb + RSS_AFTER_SLACK_KB, "once they left");
    th_barrier_signal(&sa.quit, 0);
    th_join(spid);
    await_one_client();
    for (int w = 0; w < WORKERS; w++) {
        th_barrier_fini(&wa[w].connected);
        th_barrier_fini(&wa[w].go);
        th_barrier_fini(&wa[w].leave);
    }
    th_barrier_fini(&sa.ready);
    th_barrier_fini(&sa.done);
    th_barrier_fini(&sa.quit);
    th_broker_stop(&br);
}

/* "Max open files  SOFT  HARD  files" of /proc/PID/limits. */
static bool nofile_limits(pid_t pid, unsigned long *soft, unsigned long *hard)
{
    char path[64], *text, *line;
    size_t len;
    bool ok = false;

    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    text = th_read_file(path, &len);
    line = strstr(text, "Max open files");
    if (line)
        ok = sscanf(line + strlen("Max open files"), "%lu %lu", soft,
                    hard) == 2;
    free(text);
    return ok;
}

static bool says_raised(const char *log, size_t len)
{
    (void)len;
    return strstr(log, "file descriptor limit") != NULL;
}

Test(scale, nofile_raised)
{
    struct rlimit rl, low;
    char want[96], *log;
    unsigned long soft, hard;
    size_t len;

    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max <= LOW_NOFILE || rl.rlim_max == RLIM_INFINITY)
        cr_skip_test("hard fd limit %llu", (unsigned long long)rl.rlim_max);
    low = (struct rlimit){ LOW_NOFILE, rl.rlim_max };
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    th_broker_start(&br, "--log-level", "info", NULL);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);

    log = th_await_file(br.log, says_raised, &len);
    /* valgrind keeps some fds for itself: it shows its guest lower limits
     * and keeps the guest's soft limit to itself */
    if (wrapped())
        snprintf(want, sizeof(want), "file descriptor limit ");
    else
        snprintf(want, sizeof(want), "file descriptor limit %llu (raised "
                 "from %d)", (unsigned long long)rl.rlim_max, LOW_NOFILE);
    cr_assert(strstr(log, want), "no \"%s\" in brokerd's log:\n%s", want, log);
    free(log);
    if (!wrapped()) {
        cr_assert(nofile_limits(br.pid, &soft, &hard));
        cr_assert_eq(soft, hard, "brokerd's soft fd limit %lu, hard %lu",
                     soft, hard);
    }
    th_broker_stop(&br);
}
