/*
 * broker-bench.c - brokerd benchmark (prefix bb_), run by `make bench`.
 *
 * Starts its own `brokerd -f` (path in $BROKERD) on a socket in a fresh
 * temporary directory, measures a few workloads through it and the same
 * workloads over a direct socketpair(AF_UNIX, SOCK_SEQPACKET) between two
 * processes (the baseline), prints a table with the ratio broker/baseline,
 * and stops brokerd with SIGTERM.
 *
 * Workloads (every one between two processes):
 *   rtt      64-byte request/reply round trips.  Through the broker this is
 *            broker_call() to a name served by a process that answers with
 *            broker_reply(): every round trip opens a stream by name and the
 *            reply closes it.  Baseline: write + read of the same bytes,
 *            echoed by the peer.  Reported: median and p99 latency.
 *   one-way  broker_send() of N messages of 64 B and of 4 KiB to a name;
 *            the receiver counts them with broker_recv().  Baseline: write()
 *            / read() of one packet per message.  Reported: messages/s and
 *            payload MB/s (10^6 bytes), measured at the receiver between
 *            the end of a warm-up (a tenth of the count, sent first) and
 *            the last message; each figure is the median of 3 runs.
 *   bulk     16 MiB messages the producer writes in place and the consumer
 *            reads in full, in GB/s (10^9 bytes/s): through shared memory
 *            (broker_buf_alloc/broker_buf_send), beside two figures of the
 *            same run: the floor (a memfd shared by two processes, no
 *            broker) and the socket path (shared memory off).  Also
 *            brokerd's VmRSS before and after.  See "bulk" below.
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
 *            between them.  Reported: messages/s
 *            of each and their ratio (target about 1.0: a publish must
 *            not scan the table), the subscription count brokerd's STATUS
 *            shows and how long subscribing took.
 * Every message carries a sequence number that the receiver checks, so a
 * lost, reordered or truncated message fails the run (exit 1); fanout and
 * pubcost receivers also stop after 5 s without a message, and the run
 * then names what arrived (count of expected, out of order, dropped).
 *
 * Options: --quick (about a tenth of the default counts, for CI smoke
 * runs), --count N (messages or round trips per workload), --bulk-gib N
 * (GiB per bulk run, default 10; 1 with --quick), --bulk-only,
 * --workloads LIST (rtt, one-way, bulk, fanout, pubcost, all: default
 * all), --other-subs N (pubcost; 10000 with --quick).
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
#define BB_RUNS        3            /* throughput runs; the median counts */

/* The workloads, selectable with --workloads. */
enum {
    BB_W_RTT = 1u << 0,
    BB_W_ONEWAY = 1u << 1,
    BB_W_BULK = 1u << 2,
    BB_W_FANOUT = 1u << 3,
    BB_W_PUBCOST = 1u << 4,
    BB_W_ALL = (1u << 5) - 1,
};

/* Counts per workload. */
typedef struct bb_counts {
    size_t rtt;
    size_t small;
    size_t large;
    size_t bulk;            /* 16 MiB messages per bulk run */
    size_t fanout;          /* 1 KiB publications per fanout run */
    size_t pubcost;         /* 64 B publications per pubcost run */
    size_t other_subs;      /* pubcost: the "many" subscriptions */
    unsigned workloads;     /* BB_W_* */
} bb_counts_t;

/* One measured row pair: a broker figure and its baseline. */
typedef struct bb_result {
    double broker;
    double base;
} bb_result_t;

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

/* A child connects and registers name, then reports on the ready pipe. */
static broker_t *bb_child_connect(const char *name, int ready_fd)
{
    broker_t *b = NULL;
    int r = broker_connect(bb_sock, &b);

    if (r == 0 && name)
        r = broker_register(b, name);
    if (r < 0) {
        bb_fail("child connect/register", r);
        if (b)
            broker_close(b);
        return NULL;
    }
    if (ready_fd >= 0 && bb_write_full(ready_fd, "r", 1) < 0) {
        broker_close(b);
        return NULL;
    }
    return b;
}

/* ---- round trips ----------------------------------------------------------- */

static int bb_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Median and p99 in microseconds of samples[0..n) (sorted in place). */
static void bb_percentiles(uint64_t *s, size_t n, double *med, double *p99)
{
    size_t i99 = (n * 99 + 99) / 100;

    qsort(s, n, sizeof(*s), bb_cmp_u64);
    *med = (double)s[n / 2] / 1000.0;
    *p99 = (double)s[i99 ? i99 - 1 : 0] / 1000.0;
}

/* Child: answer every request with its own payload; a one-way message
 * ends the loop. */
static int bb_echo_server(int ready_fd)
{
    broker_t *b = bb_child_connect(bb_name, ready_fd);
    int r = -EIO;

    if (!b)
        return 1;
    for (;;) {
        broker_msg_t *m = NULL;

        r = broker_recv(b, &m, BB_IO_TIMEOUT);
        if (r < 0)
            break;
        bool request = m->kind == BROKER_MSG_DATA &&
                       (m->flags & BROKER_MSGF_OPEN) &&
                       !(m->flags & BROKER_MSGF_CLOSE);
        bool stop = m->kind == BROKER_MSG_DATA && !request;
        if (request)
            r = broker_reply(b, m, m->data, m->len, NULL, 0);
        broker_msg_free(m);
        if (r < 0 || stop)
            break;
    }
    if (r < 0)
        bb_fail("echo server", r);
    broker_close(b);
    return r < 0;
}

static int bb_rtt_calls(broker_t *b, unsigned char *buf, size_t size,
                        uint64_t *samples, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        broker_msg_t *reply = NULL;
        uint64_t t0 = bb_now_ns();
        int r;

        bb_put_seq(buf, i);
        r = broker_call(b, bb_name, buf, size, &reply, BB_IO_TIMEOUT);
        if (samples)
            samples[i] = bb_now_ns() - t0;
        if (r < 0) {
            bb_fail("broker_call", r);
            return r;
        }
        bool ok = reply->len == size && memcmp(reply->data, buf, size) == 0;
        broker_msg_free(reply);
        if (!ok) {
            fprintf(stderr, "broker-bench: reply %zu differs from its "
                    "request\n", i);
            return -EBADMSG;
        }
    }
    return 0;
}

static int bb_rtt_broker(size_t count, uint64_t *samples)
{
    unsigned char buf[BB_SMALL];
    int ready[2], r;
    broker_t *b = NULL;
    char c;
    pid_t pid;

    bb_next_name("echo");
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -errno;
    if ((pid = fork()) < 0)
        return -errno;
    if (pid == 0) {
        close(ready[0]);
        _exit(bb_echo_server(ready[1]));
    }
    close(ready[1]);
    r = bb_read_full(ready[0], &c, 1);
    close(ready[0]);
    if (r == 0)
        r = broker_connect(bb_sock, &b);
    if (r == 0) {
        bb_fill(buf, sizeof(buf));
        r = bb_rtt_calls(b, buf, sizeof(buf), NULL, count / 10 + 1);
        if (r == 0)
            r = bb_rtt_calls(b, buf, sizeof(buf), samples, count);
        /* A one-way message stops the server; the ping makes sure the
         * broker has routed it before we disconnect. */
        int s = broker_send(b, bb_name, "", 0, NULL, 0);
        if (s == 0)
            s = broker_ping(b, BB_IO_TIMEOUT);
        if (r == 0)
            r = s;
        broker_close(b);
    }
    if (bb_reap(pid) < 0 && r == 0)
        r = -ECHILD;
    return r;
}

/* Child side of the socketpair round trips: echo until EOF. */
static int bb_pair_echo(int fd)
{
    unsigned char buf[BB_LARGE];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0;
        if (bb_write_full(fd, buf, (size_t)n) < 0)
            return 1;
    }
}

static int bb_pair_calls(int fd, unsigned char *buf, size_t size,
                         uint64_t *samples, size_t n)
{
    unsigned char in[BB_LARGE];

    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = bb_now_ns();
        ssize_t got;

        bb_put_seq(buf, i);
        if (bb_write_full(fd, buf, size) < 0)
            return -errno;
        do
            got = read(fd, in, sizeof(in));
        while (got < 0 && errno == EINTR);
        if (samples)
            samples[i] = bb_now_ns() - t0;
        if (got != (ssize_t)size || memcmp(in, buf, size) != 0) {
            fprintf(stderr, "broker-bench: socketpair echo %zu differs\n",
                    i);
            return -EBADMSG;
        }
    }
    return 0;
}

static int bb_rtt_pair(size_t count, uint64_t *samples)
{
    unsigned char buf[BB_SMALL];
    int sv[2], r;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    if ((pid = fork()) < 0)
        return -errno;
    if (pid == 0) {
        close(sv[0]);
        _exit(bb_pair_echo(sv[1]));
    }
    close(sv[1]);
    bb_fill(buf, sizeof(buf));
    r = bb_pair_calls(sv[0], buf, sizeof(buf), NULL, count / 10 + 1);
    if (r == 0)
        r = bb_pair_calls(sv[0], buf, sizeof(buf), samples, count);
    close(sv[0]);
    if (bb_reap(pid) < 0 && r == 0)
        r = -ECHILD;
    return r;
}

/* ---- one-way throughput ------------------------------------------------------- */

/* What a receiver reports on its result pipe. */
typedef struct bb_report {
    int32_t err;            /* 0 or a negative errno */
    uint64_t ns;            /* from the end of the warm-up to the last msg */
} bb_report_t;

static size_t bb_warmup(size_t count)
{
    return count / 10 + 1;
}

/* Check message i and take the clock at the warm-up mark. */
static int bb_account(const unsigned char *data, size_t len, size_t size,
                      size_t i, size_t warm, uint64_t *t_start)
{
    if (len != size || bb_get_seq(data) != i) {
        fprintf(stderr, "broker-bench: message %zu: got len %zu seq %" PRIu64
                "\n", i, len, len >= 8 ? bb_get_seq(data) : 0);
        return -EBADMSG;
    }
    if (i + 1 == warm)
        *t_start = bb_now_ns();
    return 0;
}

/* Child: receive warm + count one-way messages through the broker. */
static int bb_sink_broker(int ready_fd, int result_fd, size_t size,
                          size_t total, size_t warm)
{
    broker_t *b = bb_child_connect(bb_name, ready_fd);
    bb_report_t rep = { 0, 0 };
    uint64_t t_start = 0;

    if (!b)
        return 1;
    for (size_t i = 0; i < total && rep.err == 0; i++) {
        broker_msg_t *m = NULL;
        int r = broker_recv(b, &m, BB_IO_TIMEOUT);

        if (r == 0 && m->kind != BROKER_MSG_DATA)
            r = m->code < 0 ? m->code : -EBADMSG;
        if (r == 0)
            r = bb_account(m->data, m->len, size, i, warm, &t_start);
        broker_msg_free(m);
        rep.err = r;
    }
    rep.ns = bb_now_ns() - t_start;
    broker_close(b);
    return bb_write_full(result_fd, &rep, sizeof(rep)) < 0 || rep.err;
}

/* Child: receive warm + count packets over the socketpair. */
static int bb_sink_pair(int fd, int result_fd, size_t size, size_t total,
                        size_t warm)
{
    unsigned char buf[BB_LARGE];
    bb_report_t rep = { 0, 0 };
    uint64_t t_start = 0;

    for (size_t i = 0; i < total && rep.err == 0; i++) {
        ssize_t n;

        do
            n = read(fd, buf, sizeof(buf));
        while (n < 0 && errno == EINTR);
        if (n < 0)
            rep.err = -errno;
        else
            rep.err = bb_account(buf, (size_t)n, size, i, warm, &t_start);
    }
    rep.ns = bb_now_ns() - t_start;
    return bb_write_full(result_fd, &rep, sizeof(rep)) < 0 || rep.err;
}

/* Send the messages on b; the caller keeps the connection open until the
 * receiver has reported, so nothing in flight is lost at close. */
static int bb_send_broker(broker_t *b, size_t size, size_t total)
{
    unsigned char buf[BB_LARGE];
    int r = 0;

    bb_fill(buf, size);
    for (size_t i = 0; i < total && r == 0; i++) {
        bb_put_seq(buf, i);
        r = broker_send(b, bb_name, buf, size, NULL, 0);
    }
    if (r < 0)
        bb_fail("broker_send", r);
    return r;
}

static int bb_send_pair(int fd, size_t size, size_t total)
{
    unsigned char buf[BB_LARGE];

    bb_fill(buf, size);
    for (size_t i = 0; i < total; i++) {
        bb_put_seq(buf, i);
        if (bb_write_full(fd, buf, size) < 0)
            return -errno;
    }
    return 0;
}

/* Run one throughput workload; *ns gets the receiver's measured time for
 * `count` messages after the warm-up. */
static int bb_tput(bool via_broker, size_t size, size_t count, uint64_t *ns)
{
    size_t warm = bb_warmup(count), total = warm + count;
    int ready[2], result[2], sv[2] = { -1, -1 }, r = 0;
    bb_report_t rep;
    broker_t *b = NULL;
    char c;
    pid_t pid;

    bb_next_name("sink");
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(result, O_CLOEXEC) < 0)
        return -errno;
    if (!via_broker &&
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    if ((pid = fork()) < 0)
        return -errno;
    if (pid == 0) {
        close(ready[0]);
        close(result[0]);
        if (via_broker)
            _exit(bb_sink_broker(ready[1], result[1], size, total, warm));
        close(sv[0]);
        _exit(bb_sink_pair(sv[1], result[1], size, total, warm));
    }
    close(ready[1]);
    close(result[1]);
    if (via_broker) {
        r = bb_read_full(ready[0], &c, 1);
        if (r == 0)
            r = broker_connect(bb_sock, &b);
        if (r == 0)
            r = bb_send_broker(b, size, total);
    } else {
        close(sv[1]);
        r = bb_send_pair(sv[0], size, total);
    }
    if (r < 0)
        kill(pid, SIGTERM);     /* the receiver would wait for nothing */
    int rr = bb_read_full(result[0], &rep, sizeof(rep));
    if (b)
        broker_close(b);
    if (sv[0] >= 0)
        close(sv[0]);
    close(ready[0]);
    close(result[0]);
    if (r == 0)
        r = rr < 0 ? rr : rep.err;
    if (bb_reap(pid) < 0 && r == 0)
        r = -ECHILD;
    *ns = rr == 0 ? rep.ns : 0;
    return r;
}

/* ---- bulk: 16 MiB messages written in place --------------------------------- */

/*
 * The producer writes each message where the consumer will read it and
 * the consumer reads every byte of it (a sum of 64-bit words), so all
 * three figures do the same work per byte:
 *   floor   a memfd mapped in both processes after fork, BB_BULK_SLOTS
 *           message slots, a pipe carrying slot numbers each way (no
 *           broker, no library): the best any local transport can do;
 *   shm     broker_buf_alloc + fill + broker_buf_send through brokerd, the
 *           receiver reading the read-only view; the pool is limited to
 *           BB_BULK_SLOTS buffers, the same depth as the floor's ring;
 *   socket  the same messages with shared memory off
 *           (BROKER_OPT_SHM_THRESHOLD 0): filled in a private buffer,
 *           broker_send, reassembled by the receiver's library.
 * Each message starts with its sequence number and is otherwise filled
 * with its low byte; the consumer checks both ends.
 */
#define BB_BULK_MSG    ((size_t)16 << 20)
#define BB_BULK_SLOTS  4u

typedef enum bb_bulk_mode {
    BB_BULK_FLOOR,
    BB_BULK_SHM,
    BB_BULK_SOCKET,
    BB_BULK_MODES_
} bb_bulk_mode_t;

static const char *const bb_bulk_names[] = { "floor", "shm", "socket" };

static size_t bb_bulk_warmup(size_t count)
{
    size_t w = count / 10 + 1;

    return w < 2 * BB_BULK_SLOTS ? 2 * BB_BULK_SLOTS : w;
}

static void bb_bulk_fill(unsigned char *p, uint64_t seq)
{
    memset(p, (int)(seq & 0xff), BB_BULK_MSG);
    bb_put_seq(p, seq);
}

/* Where the consumer's sums go, so that the reads are not optimised out. */
volatile uint64_t bb_bulk_sink;

/* Read every byte of a message; check that it is message `seq`. */
static int bb_bulk_consume(const unsigned char *p, size_t len, uint64_t seq)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t sum = 0;

    if (len != BB_BULK_MSG || bb_get_seq(p) != seq ||
        p[len - 1] != (unsigned char)seq) {
        fprintf(stderr, "broker-bench: bulk message %" PRIu64 " is wrong "
                "(%zu bytes)\n", seq, len);
        return -EBADMSG;
    }
    for (size_t i = 0; i < len / sizeof(*w); i++)
        sum += w[i];
    bb_bulk_sink += sum;
    return 0;
}

/* VmRSS or VmHWM of a process in KiB, or -1. */
static long bb_proc_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    size_t klen = strlen(key);
    long v = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Floor consumer: slot numbers arrive on full_fd, go back on free_fd. */
static int bb_floor_sink(const unsigned char *ring, int full_fd, int free_fd,
                         int result_fd, size_t total, size_t warm)
{
    bb_report_t rep = { 0, 0 };
    uint64_t t_start = 0;

    for (size_t i = 0; i < total && rep.err == 0; i++) {
        uint32_t slot;

        rep.err = bb_read_full(full_fd, &slot, sizeof(slot));
        if (rep.err == 0 && slot >= BB_BULK_SLOTS)
            rep.err = -EBADMSG;
        if (rep.err == 0)
            rep.err = bb_bulk_consume(ring + (size_t)slot * BB_BULK_MSG,
                                      BB_BULK_MSG, i);
        if (rep.err == 0)
            rep.err = bb_write_full(free_fd, &slot, sizeof(slot));
        if (i + 1 == warm)
            t_start = bb_now_ns();
    }
    rep.ns = bb_now_ns() - t_start;
    return bb_write_full(result_fd, &rep, sizeof(rep)) < 0 || rep.err;
}

static int bb_floor_source(unsigned char *ring, int full_fd, int free_fd,
                           size_t total)
{
    for (size_t i = 0; i < total; i++) {
        uint32_t slot = (uint32_t)i;
        int r = 0;

        if (i >= BB_BULK_SLOTS)
            r = bb_read_full(free_fd, &slot, sizeof(slot));
        if (r == 0 && slot >= BB_BULK_SLOTS)
            r = -EBADMSG;
        if (r < 0)
            return r;
        bb_bulk_fill(ring + (size_t)slot * BB_BULK_MSG, i);
        r = bb_write_full(full_fd, &slot, sizeof(slot));
        if (r < 0)
            return r;
    }
    return 0;
}

/* Consumer through the broker: every message must (or must not) have
 * come through shared memory. */
static int bb_bulk_sink_broker(int ready_fd, int result_fd, bool shm,
                               size_t total, size_t warm)
{
    broker_t *b = bb_child_connect(bb_name, ready_fd);
    bb_report_t rep = { 0, 0 };
    uint64_t t_start = 0;

    if (!b)
        return 1;
    for (size_t i = 0; i < total && rep.err == 0; i++) {
        broker_msg_t *m = NULL;
        int r = broker_recv(b, &m, BB_IO_TIMEOUT);

        if (r == 0 && m->kind != BROKER_MSG_DATA)
            r = m->code < 0 ? m->code : -EBADMSG;
        if (r == 0 && !!(m->flags & BROKER_MSGF_SHM) != shm) {
            fprintf(stderr, "broker-bench: bulk message %zu %s shared "
                    "memory\n", i, shm ? "did not use" : "used");
            r = -EPROTO;
        }
        if (r == 0)
            r = bb_bulk_consume(m->data, m->len, i);
        broker_msg_free(m);
        if (i + 1 == warm)
            t_start = bb_now_ns();
        rep.err = r;
    }
    rep.ns = bb_now_ns() - t_start;
    broker_close(b);
    return bb_write_full(result_fd, &rep, sizeof(rep)) < 0 || rep.err;
}

static int bb_bulk_source_shm(broker_t *b, size_t total)
{
    int r = broker_set_option(b, BROKER_OPT_SHM_POOL_MAX,
                              (uint64_t)BB_BULK_SLOTS * BB_BULK_MSG);

    for (size_t i = 0; i < total && r == 0; i++) {
        broker_buf_t *buf = NULL;

        r = broker_buf_alloc(b, BB_BULK_MSG, &buf, BB_IO_TIMEOUT);
        if (r < 0)
            break;
        bb_bulk_fill(buf->data, i);
        r = broker_buf_send(b, bb_name, buf, BB_BULK_MSG);
        broker_buf_free(b, buf);
    }
    if (r < 0)
        bb_fail("bulk shm send", r);
    return r;
}

static int bb_bulk_source_socket(broker_t *b, size_t total)
{
    unsigned char *buf = malloc(BB_BULK_MSG);
    int r = buf ? broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0) : -ENOMEM;

    for (size_t i = 0; i < total && r == 0; i++) {
        bb_bulk_fill(buf, i);
        r = broker_send(b, bb_name, buf, BB_BULK_MSG, NULL, 0);
    }
    if (r < 0)
        bb_fail("bulk socket send", r);
    free(buf);
    return r;
}

/* One run of one mode: *ns gets the consumer's time for `count` messages
 * after the warm-up. */
static int bb_bulk_run(bb_bulk_mode_t mode, size_t count, uint64_t *ns)
{
    size_t warm = bb_bulk_warmup(count), total = warm + count;
    size_t ring_len = (size_t)BB_BULK_SLOTS * BB_BULK_MSG;
    int ready[2], result[2], full[2] = { -1, -1 }, freed[2] = { -1, -1 };
    unsigned char *ring = NULL;
    broker_t *b = NULL;
    bb_report_t rep;
    int r = 0, mfd = -1;
    char c;
    pid_t pid;

    *ns = 0;
    bb_next_name("bulk");
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(result, O_CLOEXEC) < 0)
        return -errno;
    if (mode == BB_BULK_FLOOR) {
        mfd = memfd_create("broker-bench-floor", MFD_CLOEXEC);
        if (mfd < 0 || ftruncate(mfd, (off_t)ring_len) < 0 ||
            pipe2(full, O_CLOEXEC) < 0 || pipe2(freed, O_CLOEXEC) < 0)
            return -errno;
        ring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, mfd,
                    0);
        close(mfd);
        if (ring == MAP_FAILED)
            return -errno;
    }
    if ((pid = fork()) < 0)
        return -errno;
    if (pid == 0) {
        close(ready[0]);
        close(result[0]);
        if (mode != BB_BULK_FLOOR)
            _exit(bb_bulk_sink_broker(ready[1], result[1],
                                      mode == BB_BULK_SHM, total, warm));
        close(full[1]);
        close(freed[0]);
        _exit(bb_floor_sink(ring, full[0], freed[1], result[1], total,
                            warm));
    }
    close(ready[1]);
    close(result[1]);
    if (mode == BB_BULK_FLOOR) {
        close(full[0]);
        close(freed[1]);
        r = bb_floor_source(ring, full[1], freed[0], total);
    } else {
        r = bb_read_full(ready[0], &c, 1);
        if (r == 0)
            r = broker_connect(bb_sock, &b);
        if (r == 0)
            r = mode == BB_BULK_SHM ? bb_bulk_source_shm(b, total)
                                    : bb_bulk_source_socket(b, total);
    }
    if (r < 0)
        kill(pid, SIGTERM);
    /* The slot pipes stay open until the consumer has reported: it
     * still hands back the last slots. */
    int rr = bb_read_full(result[0], &rep, sizeof(rep));
    if (b)
        broker_close(b);
    if (ring) {
        close(full[1]);
        close(freed[0]);
        munmap(ring, ring_len);
    }
    close(ready[0]);
    close(result[0]);
    if (r == 0)
        r = rr < 0 ? rr : rep.err;
    if (bb_reap(pid) < 0 && r == 0)
        r = -ECHILD;
    *ns = rr == 0 && rep.ns ? rep.ns : 1;
    return r;
}

static double bb_gbs(size_t count, uint64_t ns)
{
    return (double)count * (double)BB_BULK_MSG / (double)ns;
}

static void bb_print_kb(const char *label, long kb)
{
    if (kb < 0)
        printf("  %-34s n/a\n", label);
    else
        printf("  %-34s %8.1f MiB\n", label, (double)kb / 1024.0);
}

/* BB_RUNS rounds of floor, shm and socket (in that order, so all three
 * see the same machine noise); each figure is the median.  The broker's
 * RSS is sampled before the first round and after its shm and socket
 * runs. */
static int bb_run_bulk(size_t count)
{
    uint64_t ns[BB_BULK_MODES_][BB_RUNS];
    double gbs[BB_BULK_MODES_];
    long rss0 = bb_proc_kb(bb_brokerd_pid, "VmRSS"), rss_shm = -1,
         rss_sock = -1;
    int r = 0;

    printf("\nbulk: %zu x 16 MiB per run (%.2f GiB), producer writes in "
           "place, consumer reads every byte; median of %d runs\n", count,
           (double)count / 64.0, BB_RUNS);
    fflush(stdout);
    for (int run = 0; run < BB_RUNS && r == 0; run++) {
        for (int m = 0; m < BB_BULK_MODES_ && r == 0; m++) {
            r = bb_bulk_run((bb_bulk_mode_t)m, count, &ns[m][run]);
            if (r < 0) {
                fprintf(stderr, "broker-bench: bulk %s run %d failed\n",
                        bb_bulk_names[m], run + 1);
                return r;
            }
            if (run == 0 && m == BB_BULK_SHM)
                rss_shm = bb_proc_kb(bb_brokerd_pid, "VmRSS");
            if (run == 0 && m == BB_BULK_SOCKET)
                rss_sock = bb_proc_kb(bb_brokerd_pid, "VmRSS");
        }
    }
    for (int m = 0; m < BB_BULK_MODES_; m++) {
        qsort(ns[m], BB_RUNS, sizeof(ns[m][0]), bb_cmp_u64);
        gbs[m] = bb_gbs(count, ns[m][BB_RUNS / 2]);
    }
    printf("%-14s %10s\n", "mode", "GB/s");
    printf("%-14s %10.2f  (memfd shared after fork, pipe handshake, no "
           "broker)\n", "floor", gbs[BB_BULK_FLOOR]);
    printf("%-14s %10.2f  (broker_buf_alloc/broker_buf_send through "
           "brokerd)\n", "shm", gbs[BB_BULK_SHM]);
    printf("%-14s %10.2f  (broker_send, BROKER_OPT_SHM_THRESHOLD 0)\n",
           "socket", gbs[BB_BULK_SOCKET]);
    printf("%-14s %10.2f\n", "shm/floor", gbs[BB_BULK_SHM] /
           gbs[BB_BULK_FLOOR]);
    printf("%-14s %10.2f\n", "shm/socket", gbs[BB_BULK_SHM] /
           gbs[BB_BULK_SOCKET]);
    printf("brokerd memory:\n");
    bb_print_kb("VmRSS before the bulk runs", rss0);
    bb_print_kb("VmRSS after the first shm run", rss_shm);
    bb_print_kb("VmRSS after the first socket run", rss_sock);
    bb_print_kb("VmHWM (peak) at the end", bb_proc_kb(bb_brokerd_pid,
                                                      "VmHWM"));
    return 0;
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

static void bb_row(const char *work, const char *metric, const char *unit,
                   bb_result_t res)
{
    printf("%-14s %-8s %12.2f %12.2f  %-7s %7.2f\n", work, metric,
           res.broker, res.base, unit, res.base > 0 ? res.broker / res.base
                                                    : 0.0);
}

static int bb_run_rtt(size_t count)
{
    uint64_t *s = calloc(count, sizeof(*s));
    bb_result_t med, p99;
    int r;

    if (!s)
        return -ENOMEM;
    r = bb_rtt_broker(count, s);
    if (r == 0) {
        bb_percentiles(s, count, &med.broker, &p99.broker);
        r = bb_rtt_pair(count, s);
    }
    if (r == 0) {
        bb_percentiles(s, count, &med.base, &p99.base);
        bb_row("rtt 64 B", "median", "us", med);
        bb_row("rtt 64 B", "p99", "us", p99);
    }
    free(s);
    return r;
}

/* The median of BB_RUNS runs of one throughput workload, alternating
 * broker and baseline runs so both see the same machine noise. */
static int bb_tput_median(size_t size, size_t count, uint64_t *ns_broker,
                          uint64_t *ns_base)
{
    uint64_t b[BB_RUNS], p[BB_RUNS];
    int r = 0;

    for (int i = 0; i < BB_RUNS && r == 0; i++) {
        r = bb_tput(true, size, count, &b[i]);
        if (r == 0)
            r = bb_tput(false, size, count, &p[i]);
    }
    if (r < 0)
        return r;
    qsort(b, BB_RUNS, sizeof(b[0]), bb_cmp_u64);
    qsort(p, BB_RUNS, sizeof(p[0]), bb_cmp_u64);
    *ns_broker = b[BB_RUNS / 2] ? b[BB_RUNS / 2] : 1;
    *ns_base = p[BB_RUNS / 2] ? p[BB_RUNS / 2] : 1;
    return 0;
}

static int bb_run_tput(const char *label, size_t size, size_t count)
{
    uint64_t ns_broker, ns_base;
    bb_result_t rate, mbs;
    int r = bb_tput_median(size, count, &ns_broker, &ns_base);

    if (r < 0)
        return r;
    rate.broker = (double)count * 1e9 / (double)ns_broker;
    rate.base = (double)count * 1e9 / (double)ns_base;
    mbs.broker = rate.broker * (double)size / 1e6;
    mbs.base = rate.base * (double)size / 1e6;
    rate.broker /= 1000.0;
    rate.base /= 1000.0;
    bb_row(label, "rate", "kmsg/s", rate);
    bb_row(label, "payload", "MB/s", mbs);
    return 0;
}

static void bb_usage(FILE *f)
{
    fprintf(f,
"Usage: BROKERD=/path/to/brokerd broker-bench [--quick] [--count N]\n"
"           [--bulk-gib N] [--bulk-only] [--workloads LIST] [--other-subs N]\n"
"  --quick       about a tenth of the default counts (CI smoke run)\n"
"  --count N     round trips / messages per workload (default: 50000 round\n"
"                trips, 500000 x 64 B and 100000 x 4 KiB one-way messages,\n"
"                20000 x 1 KiB fanout and 100000 x 64 B pubcost messages)\n"
"  --bulk-gib N  GiB of 16 MiB messages per bulk run and mode (default 10,\n"
"                1 with --quick)\n"
"  --bulk-only   run only the bulk workload (= --workloads bulk)\n"
"  --workloads LIST\n"
"                comma-separated: rtt, one-way, bulk, fanout, pubcost, all\n"
"                (default all)\n"
"                fanout: 1 publisher -> 8 subscriber processes, 1 KiB\n"
"                  messages on one topic (broker_publish), beside the same\n"
"                  fan-out as 8 broker_send per message; delivered msgs/s\n"
"                pubcost: publish rate to a topic with 1 subscriber with 10\n"
"                  and with --other-subs unrelated subscriptions present;\n"
"                  their ratio (about 1.0 when matching does not scan)\n"
"  --other-subs N  pubcost's many subscriptions (default 100000, 10000\n"
"                with --quick), held by a second brokerd started with\n"
"                --max-subscriptions to fit\n");
}

/* "rtt,fanout" -> BB_W_* bits, or 0 if a name is unknown. */
static unsigned bb_parse_workloads(const char *list)
{
    static const struct { const char *name; unsigned bit; } w[] = {
        { "rtt", BB_W_RTT }, { "one-way", BB_W_ONEWAY },
        { "oneway", BB_W_ONEWAY }, { "bulk", BB_W_BULK },
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

static int bb_parse(int argc, char **argv, bb_counts_t *c)
{
    static const struct option opts[] = {
        { "quick", no_argument, NULL, 'q' },
        { "count", required_argument, NULL, 'n' },
        { "bulk-gib", required_argument, NULL, 'g' },
        { "bulk-only", no_argument, NULL, 'b' },
        { "workloads", required_argument, NULL, 'w' },
        { "other-subs", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    /* 64 messages of 16 MiB are 1 GiB */
    bb_counts_t def = { 50000, 500000, 100000, 10 * 64, 20000, 100000,
                        100000, BB_W_ALL };
    bool bulk_set = false, other_set = false;
    int o;

    *c = def;
    while ((o = getopt_long(argc, argv, "qn:g:bw:o:h", opts, NULL)) != -1) {
        char *end;
        unsigned long long v;

        switch (o) {
        case 'q':
            c->rtt = def.rtt / 10;
            c->small = def.small / 10;
            c->large = def.large / 10;
            c->fanout = def.fanout / 10;
            c->pubcost = def.pubcost / 10;
            if (!bulk_set)
                c->bulk = 64;
            if (!other_set)
                c->other_subs = def.other_subs / 10;
            break;
        case 'g':
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || *end || v < 1 || v > 1000) {
                fprintf(stderr, "broker-bench: --bulk-gib wants 1..1000\n");
                return 2;
            }
            c->bulk = (size_t)v * 64;
            bulk_set = true;
            break;
        case 'b':
            c->workloads = BB_W_BULK;
            break;
        case 'w':
            c->workloads = bb_parse_workloads(optarg);
            if (!c->workloads) {
                fprintf(stderr, "broker-bench: --workloads wants a list of "
                        "rtt, one-way, bulk, fanout, pubcost, all\n");
                return 2;
            }
            break;
        case 'o':
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || *end || v < BB_FEW_SUBS || v > 1000000) {
                fprintf(stderr, "broker-bench: --other-subs wants %u..1e6\n",
                        BB_FEW_SUBS);
                return 2;
            }
            c->other_subs = (size_t)v;
            other_set = true;
            break;
        case 'n':
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || *end || v < 10 || v > 100000000ull) {
                fprintf(stderr, "broker-bench: --count wants 10..1e8\n");
                return 2;
            }
            c->rtt = c->small = c->large = (size_t)v;
            c->fanout = c->pubcost = (size_t)v;
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
    printf("brokerd %s benchmark\n", BROKER_VERSION_STRING);
    if (n.workloads & (BB_W_RTT | BB_W_ONEWAY)) {
        printf("%zu round trips, %zu x 64 B and %zu x 4 KiB one-way "
               "messages (one-way: median of %d runs)\n", n.rtt, n.small,
               n.large, BB_RUNS);
        printf("broker = through brokerd with libbroker (round trips: "
               "broker_call/broker_reply)\n"
               "baseline = direct socketpair(AF_UNIX, SOCK_SEQPACKET) "
               "between two processes\n\n");
        printf("%-14s %-8s %12s %12s  %-7s %7s\n", "workload", "metric",
               "broker", "baseline", "unit", "ratio");
        fflush(stdout);
    }
    if (n.workloads & BB_W_RTT)
        r = bb_run_rtt(n.rtt);
    if (r == 0 && (n.workloads & BB_W_ONEWAY))
        r = bb_run_tput("one-way 64 B", BB_SMALL, n.small);
    if (r == 0 && (n.workloads & BB_W_ONEWAY))
        r = bb_run_tput("one-way 4 KiB", BB_LARGE, n.large);
    if (r == 0 && (n.workloads & BB_W_BULK))
        r = bb_run_bulk(n.bulk);
    if (r == 0 && (n.workloads & BB_W_FANOUT))
        r = bb_run_fanout(n.fanout);
    if (r == 0 && (n.workloads & BB_W_PUBCOST))
        r = bb_run_pubcost(n.pubcost, n.other_subs);
    bb_stop_brokerd();
    if (r < 0) {
        bb_fail("benchmark failed", r);
        return 1;
    }
    printf("\nratio = broker / baseline (fanout: publish / unicast, "
           "pubcost: many / few); total time %.1f s\n",
           (double)(bb_now_ns() - t0) / 1e9);
    return 0;
}
