/*
 * broker-bench.c - what `brokerctl bench` cannot measure against a live
 * broker (prefix bb_), run by `make bench` after it.
 *
 * Starts its own `brokerd -f` (path in $BROKERD) on a socket in a fresh
 * temporary directory (pubcost: a second one beside it), measures, prints
 * and stops brokerd with SIGTERM.  The workloads, each between processes
 * of its own:
 *   fanout   1 publisher, 8 subscribers (one process and connection each),
 *            1 KiB messages published to one topic with broker_publish
 *            (subscriptions with policy block, so nothing is dropped),
 *            beside the same fan-out done the only way there was before
 *            topics: 8 broker_send per message, one to each receiver's
 *            name.  Reported: delivered messages/s summed over the
 *            subscribers (from the earliest end of warm-up to the latest
 *            last message) and the ratio publish/unicast; median of 3.
 *   pubcost  the cost of a publish as the subscription table grows: 64 B
 *            messages published to a topic with one subscriber, with 10
 *            and with 100,000 (--other-subs) other subscriptions present
 *            on topics nothing is published to (held by 4 extra
 *            connections), on two brokerd side by side (the second
 *            started with --max-subscriptions to fit), runs alternating
 *            between them.  Reported: messages/s of each and their ratio
 *            (target about 1.0: a publish must not scan the table), the
 *            subscription count brokerd's STATUS shows and how long
 *            subscribing took.
 * Round trips, streams, shared memory, brokerctl bench's own fan-out and
 * many clients are brokerctl bench's (brokerctl(1), BENCHMARK).
 * Every message carries a sequence number that the receiver checks, so a
 * lost, reordered or truncated message fails the run (exit 1); receivers
 * stop after 5 s without a message, and the run then names what arrived
 * (count of expected, out of order, dropped).
 *
 * Options: --quick (a tenth of the default counts, for CI smoke runs),
 * --count N (messages per run), --workloads LIST (fanout, pubcost, all:
 * default all), --other-subs N (pubcost; 10000 with --quick).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "broker.h"

#define BB_IO_TIMEOUT  20000        /* ms: a hang guard, not a threshold */
#define BB_SMALL       64u
#define BB_LARGE       4096u
#define BB_RUNS        3            /* runs per figure; the median counts */

/* The workloads, selectable with --workloads. */
enum {
    BB_W_FANOUT = 1u << 0,
    BB_W_PUBCOST = 1u << 1,
    BB_W_ALL = (1u << 2) - 1,
};

/* Counts per workload. */
typedef struct bb_counts {
    size_t fanout;          /* 1 KiB publications per fanout run */
    size_t pubcost;         /* 64 B publications per pubcost run */
    size_t other_subs;      /* pubcost: the "many" subscriptions */
    unsigned workloads;     /* BB_W_* */
} bb_counts_t;

static char bb_dir[64];
static char bb_sock[128];
static pid_t bb_brokerd_pid = -1;
/* The name the current workload's child registers: fresh for every
 * workload, so a previous child's name still being released by the broker
 * cannot collide with it. */
static char bb_name[64];
static unsigned bb_name_seq;

static void bb_next_name(const char *what)
{
    snprintf(bb_name, sizeof(bb_name), "bench.%s.%u", what, ++bb_name_seq);
}

/* ---- small helpers ------------------------------------------------------ */

static uint64_t bb_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void bb_sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int bb_read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? -EPIPE : -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int bb_write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void bb_put_seq(unsigned char *buf, uint64_t seq)
{
    memcpy(buf, &seq, sizeof(seq));
}

static uint64_t bb_get_seq(const unsigned char *buf)
{
    uint64_t seq;

    memcpy(&seq, buf, sizeof(seq));
    return seq;
}

/* Fill a payload with a pattern derived from its size. */
static void bb_fill(unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 7 + len);
}

/* Wait for a child; returns 0 if it exited with status 0. */
static int bb_reap(pid_t pid)
{
    int st;

    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

static void bb_fail(const char *what, int err)
{
    fprintf(stderr, "broker-bench: %s: %s\n", what, broker_strerror(err));
}

/* ---- brokerd lifecycle ----------------------------------------------------- */

/* pubcost's second brokerd (the one holding the many subscriptions). */
static char bb_sock2[128];
static pid_t bb_brokerd2_pid = -1;

/* SIGTERM, then SIGKILL after 5 s. */
static void bb_kill_brokerd(pid_t *pid)
{
    uint64_t deadline;
    int st;

    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    deadline = bb_now_ns() + 5000000000ull;
    while (waitpid(*pid, &st, WNOHANG) == 0) {
        if (bb_now_ns() > deadline) {
            fprintf(stderr, "broker-bench: brokerd ignored SIGTERM, "
                    "killing it\n");
            kill(*pid, SIGKILL);
            waitpid(*pid, &st, 0);
            break;
        }
        bb_sleep_ms(10);
    }
    *pid = -1;
}

static void bb_stop_brokerd(void)
{
    bb_kill_brokerd(&bb_brokerd2_pid);
    bb_kill_brokerd(&bb_brokerd_pid);
    if (bb_dir[0]) {
        unlink(bb_sock);
        if (bb_sock2[0])
            unlink(bb_sock2);
        rmdir(bb_dir);
    }
}

/* Start `$BROKERD -f -s SOCK [--max-subscriptions N]` and wait until a
 * client can connect.  The option is only passed when max_subs is set, so
 * the other workloads run against a brokerd that predates it. */
static int bb_spawn_brokerd(const char *sock, size_t max_subs, pid_t *pid)
{
    const char *exe = getenv("BROKERD");
    uint64_t deadline;

    if (!exe || !*exe) {
        fprintf(stderr, "broker-bench: set BROKERD to the brokerd binary "
                "(make bench does)\n");
        return -EINVAL;
    }
    *pid = fork();
    if (*pid < 0) {
        bb_fail("fork", -errno);
        return -EIO;
    }
    if (*pid == 0) {
        char ms[32];

        snprintf(ms, sizeof(ms), "%zu", max_subs);
        if (max_subs)
            execl(exe, exe, "-f", "-s", sock, "--log-level", "error",
                  "--max-subscriptions", ms, (char *)NULL);
        else
            execl(exe, exe, "-f", "-s", sock, "--log-level", "error",
                  (char *)NULL);
        fprintf(stderr, "broker-bench: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    deadline = bb_now_ns() + 10000000000ull;
    for (;;) {
        broker_t *b = NULL;
        int st;

        if (broker_connect(sock, &b) == 0) {
            broker_close(b);
            return 0;
        }
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = -1;
            fprintf(stderr, "broker-bench: brokerd exited at start\n");
            return -ECHILD;
        }
        if (bb_now_ns() > deadline) {
            fprintf(stderr, "broker-bench: brokerd did not start listening "
                    "on %s\n", sock);
            return -ETIMEDOUT;
        }
        bb_sleep_ms(10);
    }
}

/* The benchmark's brokerd, on a socket in a fresh temporary directory. */
static int bb_start_brokerd(void)
{
    snprintf(bb_dir, sizeof(bb_dir), "/tmp/broker-bench.XXXXXX");
    if (!mkdtemp(bb_dir)) {
        bb_fail("mkdtemp", -errno);
        bb_dir[0] = '\0';
        return -EIO;
    }
    snprintf(bb_sock, sizeof(bb_sock), "%s/brokerd.sock", bb_dir);
    return bb_spawn_brokerd(bb_sock, 0, &bb_brokerd_pid);
}

static int bb_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static size_t bb_warmup(size_t count)
{
    return count / 10 + 1;
}

/* ---- publish/subscribe: fanout and pubcost ---------------------------------- */

/*
 * Both workloads use one routine: a publisher (this process) and nsub
 * receivers (forked, one connection each).  In publish mode every receiver
 * subscribes to one fresh topic with policy BLOCK (lossless: a full queue
 * holds the publisher back, as unicast does) and the publisher calls
 * broker_publish once per message; in unicast mode every receiver
 * registers a name and the publisher calls broker_send once per receiver
 * and message.  Each receiver checks the length, the sequence number
 * (order) and, for publications, the topic flag and its subscription id;
 * it takes the clock when the warm-up is complete and at the last message
 * and reports those, its count and its out-of-order count.  A receiver
 * that sees nothing for BB_LOSS_TIMEOUT stops and reports what it got.
 */
#define BB_FAN_SIZE     1024u
#define BB_FAN_SUBS     8u
#define BB_LOSS_TIMEOUT 5000        /* ms without a message: lost */
#define BB_HOLDER_CONNS 4u          /* connections holding the other subs */

typedef enum bb_fan_mode {
    BB_FAN_PUBLISH,
    BB_FAN_UNICAST,
} bb_fan_mode_t;

typedef struct bb_fan_report {
    int32_t err;            /* 0 or a negative errno */
    uint32_t pad;
    uint64_t want;          /* data messages expected */
    uint64_t got;           /* data messages received */
    uint64_t bad;           /* out of order, wrong length or wrong sub */
    uint64_t gap;           /* messages the broker said it dropped */
    uint64_t t_start;       /* CLOCK_MONOTONIC ns at the warm-up mark */
    uint64_t t_last;        /* ... at the last message */
} bb_fan_report_t;

typedef struct bb_fan_run {
    bb_fan_mode_t mode;
    unsigned nsub;
    size_t size;
    size_t count;           /* measured messages (after the warm-up) */
    uint64_t ns;            /* earliest warm-up mark -> latest last msg */
} bb_fan_run_t;

/* Receiver i of a fan-out run: connect, subscribe or register, say
 * ready, count messages. */
static int bb_fan_sink(const char *sock, const char *topic,
                       bb_fan_mode_t mode, unsigned i, size_t size,
                       size_t total, size_t warm, int ready_fd,
                       int result_fd)
{
    bb_fan_report_t rep = { .want = total };
    broker_t *b = NULL;
    uint32_t sub = 0;
    uint64_t next = 0;
    char name[96];
    int r = broker_connect(sock, &b);

    if (r == 0 && mode == BB_FAN_PUBLISH) {
        r = broker_subscribe(b, topic, NULL, BROKER_SUB_BLOCK, &sub);
    } else if (r == 0) {
        snprintf(name, sizeof(name), "%s.%u", topic, i);
        r = broker_register(b, name);
    }
    if (r < 0) {
        bb_fail(mode == BB_FAN_PUBLISH ? "subscriber: subscribe"
                                       : "receiver: register", r);
        if (b)
            broker_close(b);
        return 1;
    }
    if (bb_write_full(ready_fd, "r", 1) < 0) {
        broker_close(b);
        return 1;
    }
    while (rep.got < total) {
        broker_msg_t *m = NULL;

        r = broker_recv(b, &m, BB_LOSS_TIMEOUT);
        if (r == -ETIMEDOUT)
            break;                      /* reported as missing below */
        if (r < 0) {
            rep.err = r;
            break;
        }
        if (m->kind == BROKER_MSG_GAP) {
            rep.gap += m->gap;
        } else if (m->kind != BROKER_MSG_DATA) {
            rep.err = m->code < 0 ? m->code : -EPROTO;
        } else {
            bool pub = (m->flags & BROKER_MSGF_TOPIC) != 0;
            uint64_t seq = m->len >= 8 ? bb_get_seq(m->data) : UINT64_MAX;

            if (m->len != size || seq != next ||
                pub != (mode == BB_FAN_PUBLISH) ||
                (pub && (m->sub_id != sub || !m->topic ||
                         strcmp(m->topic, topic) != 0)))
                rep.bad++;
            next = seq + 1;
            rep.got++;
            if (rep.got == warm)
                rep.t_start = bb_now_ns();
        }
        broker_msg_free(m);
        if (rep.err)
            break;
    }
    rep.t_last = bb_now_ns();
    if (rep.err == 0 && (rep.got != total || rep.bad || rep.gap))
        rep.err = -EBADMSG;
    broker_close(b);
    return bb_write_full(result_fd, &rep, sizeof(rep)) < 0 || rep.err;
}

static int bb_fan_source(broker_t *b, const char *topic, bb_fan_mode_t mode,
                         unsigned nsub, size_t size, size_t total)
{
    unsigned char buf[BB_LARGE];
    char names[BB_FAN_SUBS][96];
    int r = 0;

    for (unsigned i = 0; i < nsub && i < BB_FAN_SUBS; i++)
        snprintf(names[i], sizeof(names[i]), "%s.%u", topic, i);
    bb_fill(buf, size);
    for (size_t n = 0; n < total && r == 0; n++) {
        bb_put_seq(buf, n);
        if (mode == BB_FAN_PUBLISH) {
            r = broker_publish(b, topic, buf, size, NULL, 0);
            continue;
        }
        for (unsigned i = 0; i < nsub && r == 0; i++)
            r = broker_send(b, names[i], buf, size, NULL, 0);
    }
    if (r < 0)
        bb_fail(mode == BB_FAN_PUBLISH ? "broker_publish" : "broker_send",
                r);
    return r;
}

/* One run: fork the receivers, wait until all are ready, send warm-up and
 * measured messages, collect the reports.  Failures are described on
 * stderr (which receiver, how many of how many, out of order). */
static int bb_fan_once(const char *what, const char *sock, bb_fan_run_t *run)
{
    size_t warm = bb_warmup(run->count), total = warm + run->count;
    int ready[2], result[2], r = 0;
    pid_t pids[BB_FAN_SUBS];
    uint64_t first = UINT64_MAX, last = 0;
    broker_t *b = NULL;
    unsigned forked = 0;

    if (run->nsub < 1 || run->nsub > BB_FAN_SUBS || run->size < 8 ||
        run->size > BB_LARGE)
        return -EINVAL;
    bb_next_name(what);             /* the topic, or the names' prefix */
    run->ns = 1;
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(result, O_CLOEXEC) < 0) {
        close(ready[0]);
        close(ready[1]);
        return -errno;
    }
    for (; forked < run->nsub; forked++) {
        pid_t pid = fork();

        if (pid < 0) {
            r = -errno;
            break;
        }
        if (pid == 0) {
            close(ready[0]);
            close(result[0]);
            _exit(bb_fan_sink(sock, bb_name, run->mode, forked, run->size,
                              total, warm, ready[1], result[1]));
        }
        pids[forked] = pid;
    }
    close(ready[1]);
    close(result[1]);
    for (unsigned i = 0; i < forked && r == 0; i++) {
        char c;

        r = bb_read_full(ready[0], &c, 1);
    }
    if (r == 0)
        r = broker_connect(sock, &b);
    if (r == 0)
        r = bb_fan_source(b, bb_name, run->mode, run->nsub, run->size,
                          total);
    if (r < 0)
        for (unsigned i = 0; i < forked; i++)
            kill(pids[i], SIGTERM);
    /* The reports come in any order; the connection stays open until all
     * are in, so nothing in flight is lost at close. */
    for (unsigned i = 0; i < forked; i++) {
        bb_fan_report_t rep;
        int rr = bb_read_full(result[0], &rep, sizeof(rep));

        if (rr < 0) {
            if (r == 0)
                r = rr;
            break;
        }
        if (rep.err < 0) {
            fprintf(stderr, "broker-bench: %s (%s): a receiver got %" PRIu64
                    " of %" PRIu64 " messages, %" PRIu64 " out of order or "
                    "wrong, %" PRIu64 " dropped (GAP): %s\n", what,
                    run->mode == BB_FAN_PUBLISH ? "publish" : "unicast",
                    rep.got, rep.want, rep.bad, rep.gap,
                    rep.err == -EBADMSG ? "MESSAGES LOST OR REORDERED"
                                        : broker_strerror(rep.err));
            if (r == 0)
                r = rep.err;
            continue;
        }
        if (rep.t_start < first)
            first = rep.t_start;
        if (rep.t_last > last)
            last = rep.t_last;
    }
    if (b)
        broker_close(b);
    close(ready[0]);
    close(result[0]);
    for (unsigned i = 0; i < forked; i++)
        if (bb_reap(pids[i]) < 0 && r == 0)
            r = -ECHILD;
    if (r == 0 && last > first)
        run->ns = last - first;
    return r;
}

/* Delivered messages per second of a run, summed over its receivers. */
static double bb_fan_rate(const bb_fan_run_t *run)
{
    return (double)run->count * run->nsub * 1e9 / (double)run->ns;
}

/* fanout: BB_RUNS rounds of (publish, unicast); medians. */
static int bb_run_fanout(size_t count)
{
    uint64_t ns[2][BB_RUNS];
    double rate[2];
    int r = 0;

    printf("\nfanout: 1 publisher, %u subscribers (processes), %zu x %u B "
           "per run; median of %d runs\n", BB_FAN_SUBS, count, BB_FAN_SIZE,
           BB_RUNS);
    fflush(stdout);
    for (int i = 0; i < BB_RUNS && r == 0; i++)
        for (int m = 0; m < 2 && r == 0; m++) {
            bb_fan_run_t run = { (bb_fan_mode_t)m, BB_FAN_SUBS, BB_FAN_SIZE,
                                 count, 1 };

            r = bb_fan_once("fanout", bb_sock, &run);
            ns[m][i] = run.ns;
        }
    if (r < 0) {
        fprintf(stderr, "broker-bench: fanout failed\n");
        return r;
    }
    for (int m = 0; m < 2; m++) {
        bb_fan_run_t run = { (bb_fan_mode_t)m, BB_FAN_SUBS, BB_FAN_SIZE,
                             count, 0 };

        qsort(ns[m], BB_RUNS, sizeof(ns[m][0]), bb_cmp_u64);
        run.ns = ns[m][BB_RUNS / 2];
        rate[m] = bb_fan_rate(&run);
    }
    printf("%-14s %12s  (delivered messages/s, summed over the %u "
           "subscribers)\n", "mode", "kmsg/s", BB_FAN_SUBS);
    printf("%-14s %12.1f  (one broker_publish per message, policy block)\n",
           "publish", rate[BB_FAN_PUBLISH] / 1000.0);
    printf("%-14s %12.1f  (%u broker_send per message, one per name)\n",
           "unicast x8", rate[BB_FAN_UNICAST] / 1000.0, BB_FAN_SUBS);
    printf("%-14s %12.2f  %s\n", "publish/unicast",
           rate[BB_FAN_PUBLISH] / rate[BB_FAN_UNICAST],
           "(all messages arrived, in order)");
    return 0;
}

/*
 * pubcost: the other subscriptions.  BB_HOLDER_CONNS child processes, one
 * connection each, subscribe to `n` topics in all that no publication of
 * the bench matches: half under the publisher's first token ("bench.h<c>.
 * <i>", a wide trie node beside the measured topic), half under their own
 * roots, one in ten of those a wildcard pattern ("o<c>.<i>.*").  They stay
 * subscribed until bb_holders_stop.
 */
typedef struct bb_holders {
    pid_t pids[BB_HOLDER_CONNS];
    unsigned n;
    int stop_fd;            /* closing it makes the holders leave */
    size_t subs;
} bb_holders_t;

static void bb_holder_pattern(char *buf, size_t len, unsigned c, size_t i)
{
    if (i % 2 == 0)
        snprintf(buf, len, "bench.h%u.%zu", c, i);
    else if (i % 10 == 1)
        snprintf(buf, len, "o%u.%zu.*", c, i);
    else
        snprintf(buf, len, "o%u.%zu.leaf", c, i);
}

static int bb_holder(const char *sock, unsigned c, size_t n, int ready_fd,
                     int stop_fd)
{
    broker_t *b = NULL;
    int r = broker_connect(sock, &b);
    char pat[64], x;

    for (size_t i = 0; i < n && r == 0; i++) {
        uint32_t id;

        bb_holder_pattern(pat, sizeof(pat), c, i);
        r = broker_subscribe(b, pat, NULL, BROKER_SUB_DROP, &id);
    }
    if (r < 0) {
        bb_fail(r == -ENOSR ? "holder: subscribe (brokerd's "
                "--max-subscriptions too low)" : "holder: subscribe", r);
        if (b)
            broker_close(b);
        return 1;
    }
    if (bb_write_full(ready_fd, "r", 1) < 0) {
        broker_close(b);
        return 1;
    }
    /* Stay connected until the parent closes its end (EOF). */
    while (read(stop_fd, &x, 1) < 0 && errno == EINTR)
        ;
    broker_close(b);
    return 0;
}

static void bb_holders_stop(bb_holders_t *h)
{
    if (h->stop_fd >= 0)
        close(h->stop_fd);
    h->stop_fd = -1;
    for (unsigned i = 0; i < h->n; i++)
        bb_reap(h->pids[i]);
    h->n = 0;
    h->subs = 0;
}

/* The number after "key=" in brokerd's STATUS, or -1. */
static long long bb_status_value(const char *sock, const char *key)
{
    broker_t *b = NULL;
    char *text = NULL, *p;
    size_t klen = strlen(key);
    long long v = -1;

    if (broker_connect(sock, &b) < 0)
        return -1;
    if (broker_status(b, &text) == 0)
        for (p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1
                                                     : NULL)
            if (!strncmp(p, key, klen) && p[klen] == '=') {
                v = strtoll(p + klen + 1, NULL, 10);
                break;
            }
    free(text);
    broker_close(b);
    return v;
}

static int bb_holders_start(bb_holders_t *h, const char *sock, size_t n,
                            double *secs)
{
    int ready[2], stop[2], r = 0;
    uint64_t t0 = bb_now_ns();

    h->n = 0;
    h->stop_fd = -1;
    h->subs = n;
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(stop, O_CLOEXEC) < 0) {
        close(ready[0]);
        close(ready[1]);
        return -errno;
    }
    for (unsigned c = 0; c < BB_HOLDER_CONNS; c++) {
        size_t share = n / BB_HOLDER_CONNS + (c < n % BB_HOLDER_CONNS);
        pid_t pid = fork();

        if (pid < 0) {
            r = -errno;
            break;
        }
        if (pid == 0) {
            close(ready[0]);
            close(stop[1]);
            _exit(bb_holder(sock, c, share, ready[1], stop[0]));
        }
        h->pids[h->n++] = pid;
    }
    close(ready[1]);
    close(stop[0]);
    h->stop_fd = stop[1];
    for (unsigned i = 0; i < h->n && r == 0; i++) {
        char c;

        r = bb_read_full(ready[0], &c, 1);  /* -EPIPE: a holder failed */
    }
    close(ready[0]);
    *secs = (double)(bb_now_ns() - t0) / 1e9;
    if (r < 0)
        bb_holders_stop(h);
    return r;
}

/*
 * pubcost: publishing 64 B messages to a topic with one subscriber, on
 * two brokers side by side: this benchmark's brokerd with BB_FEW_SUBS
 * other subscriptions, and a second brokerd (started here with
 * --max-subscriptions to fit) with `many`.  Both are set up once and the
 * runs alternate between them, so machine noise hits both alike and
 * neither 100,000 subscribes nor their removal is repeated.  The figures
 * are the medians of BB_RUNS each.
 */
#define BB_FEW_SUBS 10u

static int bb_run_pubcost(size_t count, size_t many)
{
    const char *socks[2] = { bb_sock, bb_sock2 };
    size_t nsubs[2] = { BB_FEW_SUBS, many };
    bb_holders_t h[2] = { { .stop_fd = -1 }, { .stop_fd = -1 } };
    uint64_t ns[2][BB_RUNS];
    double rate[2], secs[2] = { 0, 0 };
    long long seen[2] = { -1, -1 };
    int r;

    printf("\npubcost: 1 publisher -> 1 subscriber, %zu x %u B per run, "
           "with %u and with %zu other subscriptions (on topics never "
           "published, from %u connections; two brokerd side by side, "
           "runs alternating); median of %d runs\n", count, BB_SMALL,
           BB_FEW_SUBS, many, BB_HOLDER_CONNS, BB_RUNS);
    fflush(stdout);
    snprintf(bb_sock2, sizeof(bb_sock2), "%s/brokerd-many.sock", bb_dir);
    /* Each holder connection takes its share of the subscriptions. */
    r = bb_spawn_brokerd(bb_sock2, many / BB_HOLDER_CONNS + 1024,
                         &bb_brokerd2_pid);
    for (int m = 0; m < 2 && r == 0; m++) {
        r = bb_holders_start(&h[m], socks[m], nsubs[m], &secs[m]);
        if (r == 0)
            seen[m] = bb_status_value(socks[m], "subscriptions");
    }
    for (int i = 0; i < BB_RUNS && r == 0; i++)
        for (int m = 0; m < 2 && r == 0; m++) {
            bb_fan_run_t run = { BB_FAN_PUBLISH, 1, BB_SMALL, count, 1 };

            r = bb_fan_once("pubcost", socks[m], &run);
            ns[m][i] = run.ns;
        }
    /* The second brokerd goes first: then its 100,000 subscriptions are
     * not removed one by one as their connections leave. */
    bb_kill_brokerd(&bb_brokerd2_pid);
    bb_holders_stop(&h[1]);
    bb_holders_stop(&h[0]);
    if (r < 0) {
        fprintf(stderr, "broker-bench: pubcost failed\n");
        return r;
    }
    for (int m = 0; m < 2; m++) {
        qsort(ns[m], BB_RUNS, sizeof(ns[m][0]), bb_cmp_u64);
        rate[m] = (double)count * 1e9 / (double)ns[m][BB_RUNS / 2];
    }
    printf("%-22s %12s %14s\n", "other subscriptions", "kmsg/s",
           "in STATUS");
    printf("%-22u %12.1f %14lld\n", BB_FEW_SUBS, rate[0] / 1000.0, seen[0]);
    printf("%-22zu %12.1f %14lld  (subscribed in %.1f s)\n", many,
           rate[1] / 1000.0, seen[1], secs[1]);
    printf("%-22s %12.2f  (target about 1.0; all messages arrived, in "
           "order)\n", "ratio many/few", rate[1] / rate[0]);
    return 0;
}

/* ---- driver ------------------------------------------------------------------- */

static void bb_usage(FILE *f)
{
    fprintf(f,
"Usage: BROKERD=/path/to/brokerd broker-bench [--quick] [--count N]\n"
"           [--workloads LIST] [--other-subs N]\n"
"  --quick       a tenth of the default counts (CI smoke run)\n"
"  --count N     messages per run (default: 20000 x 1 KiB fanout and\n"
"                100000 x 64 B pubcost messages)\n"
"  --workloads LIST\n"
"                comma-separated: fanout, pubcost, all (default all)\n"
"                fanout: 1 publisher -> 8 subscriber processes, 1 KiB\n"
"                  messages on one topic (broker_publish), beside the same\n"
"                  fan-out as 8 broker_send per message; delivered msgs/s\n"
"                pubcost: publish rate to a topic with 1 subscriber with 10\n"
"                  and with --other-subs unrelated subscriptions present;\n"
"                  their ratio (about 1.0 when matching does not scan)\n"
"  --other-subs N  pubcost's many subscriptions (default 100000, 10000\n"
"                with --quick), held by a second brokerd started with\n"
"                --max-subscriptions to fit\n"
"Round trips, streams, shared memory and many clients: brokerctl bench.\n");
}

/* "fanout,pubcost" -> BB_W_* bits, or 0 if a name is unknown. */
static unsigned bb_parse_workloads(const char *list)
{
    static const struct { const char *name; unsigned bit; } w[] = {
        { "fanout", BB_W_FANOUT }, { "pubcost", BB_W_PUBCOST },
        { "all", BB_W_ALL },
    };
    unsigned bits = 0;
    const char *p = list;

    while (*p) {
        size_t len = strcspn(p, ",");
        unsigned bit = 0;

        for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++)
            if (strlen(w[i].name) == len && !strncmp(w[i].name, p, len))
                bit = w[i].bit;
        if (!bit)
            return 0;
        bits |= bit;
        p += len;
        if (*p == ',')
            p++;
    }
    return bits;
}

/* A decimal option value in [min, max], or 0 after a message. */
static size_t bb_parse_num(const char *opt, const char *s, size_t min,
                           size_t max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "broker-bench: %s wants %zu..%zu\n", opt, min, max);
        return 0;
    }
    return (size_t)v;
}

static int bb_parse(int argc, char **argv, bb_counts_t *c)
{
    static const struct option opts[] = {
        { "quick", no_argument, NULL, 'q' },
        { "count", required_argument, NULL, 'n' },
        { "workloads", required_argument, NULL, 'w' },
        { "other-subs", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    bb_counts_t def = { 20000, 100000, 100000, BB_W_ALL };
    bool other_set = false;
    int o;

    *c = def;
    while ((o = getopt_long(argc, argv, "qn:w:o:h", opts, NULL)) != -1) {
        switch (o) {
        case 'q':
            c->fanout = def.fanout / 10;
            c->pubcost = def.pubcost / 10;
            if (!other_set)
                c->other_subs = def.other_subs / 10;
            break;
        case 'w':
            c->workloads = bb_parse_workloads(optarg);
            if (!c->workloads) {
                fprintf(stderr, "broker-bench: --workloads wants a list of "
                        "fanout, pubcost, all\n");
                return 2;
            }
            break;
        case 'o':
            if (!(c->other_subs = bb_parse_num("--other-subs", optarg,
                                               BB_FEW_SUBS, 1000000)))
                return 2;
            other_set = true;
            break;
        case 'n':
            if (!(c->fanout = bb_parse_num("--count", optarg, 10,
                                           100000000)))
                return 2;
            c->pubcost = c->fanout;
            break;
        case 'h':
            bb_usage(stdout);
            exit(0);
        default:
            bb_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        bb_usage(stderr);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bb_counts_t n;
    uint64_t t0 = bb_now_ns();
    int r = 0;

    if ((r = bb_parse(argc, argv, &n)) != 0)
        return r;
    signal(SIGPIPE, SIG_IGN);
    if ((r = bb_start_brokerd()) < 0) {     /* it said why */
        bb_stop_brokerd();
        return 1;
    }
    r = 0;
    printf("brokerd %s benchmark (fan-out and publish cost; brokerctl bench "
           "has the rest)\n", BROKER_VERSION_STRING);
    if (n.workloads & BB_W_FANOUT)
        r = bb_run_fanout(n.fanout);
    if (r == 0 && (n.workloads & BB_W_PUBCOST))
        r = bb_run_pubcost(n.pubcost, n.other_subs);
    bb_stop_brokerd();
    if (r < 0) {
        bb_fail("benchmark failed", r);
        return 1;
    }
    printf("\nratio = publish / unicast (fanout), many / few (pubcost); "
           "total time %.1f s\n", (double)(bb_now_ns() - t0) / 1e9);
    return 0;
}
