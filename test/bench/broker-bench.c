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
 * Every message carries a sequence number that the receiver checks, so a
 * lost, reordered or truncated message fails the run (exit 1).
 *
 * Options: --quick (about a tenth of the default counts, for CI smoke
 * runs), --count N (messages or round trips per workload), --bulk-gib N
 * (GiB per bulk run, default 10; 1 with --quick), --bulk-only.
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

/* Counts per workload. */
typedef struct bb_counts {
    size_t rtt;
    size_t small;
    size_t large;
    size_t bulk;            /* 16 MiB messages per bulk run */
    bool bulk_only;
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

static void bb_stop_brokerd(void)
{
    uint64_t deadline;
    int st;

    if (bb_brokerd_pid <= 0)
        goto clean;
    kill(bb_brokerd_pid, SIGTERM);
    deadline = bb_now_ns() + 5000000000ull;
    while (waitpid(bb_brokerd_pid, &st, WNOHANG) == 0) {
        if (bb_now_ns() > deadline) {
            fprintf(stderr, "broker-bench: brokerd ignored SIGTERM, "
                    "killing it\n");
            kill(bb_brokerd_pid, SIGKILL);
            waitpid(bb_brokerd_pid, &st, 0);
            break;
        }
        bb_sleep_ms(10);
    }
    bb_brokerd_pid = -1;
clean:
    if (bb_dir[0]) {
        unlink(bb_sock);
        rmdir(bb_dir);
    }
}

/* Start `$BROKERD -f -s SOCK` and wait until a client can connect. */
static int bb_start_brokerd(void)
{
    const char *exe = getenv("BROKERD");
    uint64_t deadline;

    if (!exe || !*exe) {
        fprintf(stderr, "broker-bench: set BROKERD to the brokerd binary "
                "(make bench does)\n");
        return -EINVAL;
    }
    snprintf(bb_dir, sizeof(bb_dir), "/tmp/broker-bench.XXXXXX");
    if (!mkdtemp(bb_dir)) {
        bb_fail("mkdtemp", -errno);
        bb_dir[0] = '\0';
        return -EIO;
    }
    snprintf(bb_sock, sizeof(bb_sock), "%s/brokerd.sock", bb_dir);
    bb_brokerd_pid = fork();
    if (bb_brokerd_pid < 0) {
        bb_fail("fork", -errno);
        return -EIO;
    }
    if (bb_brokerd_pid == 0) {
        execl(exe, exe, "-f", "-s", bb_sock, "--log-level", "error",
              (char *)NULL);
        fprintf(stderr, "broker-bench: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    deadline = bb_now_ns() + 10000000000ull;
    for (;;) {
        broker_t *b = NULL;
        int st;

        if (broker_connect(bb_sock, &b) == 0) {
            broker_close(b);
            return 0;
        }
        if (waitpid(bb_brokerd_pid, &st, WNOHANG) == bb_brokerd_pid) {
            bb_brokerd_pid = -1;
            fprintf(stderr, "broker-bench: brokerd exited at start\n");
            return -ECHILD;
        }
        if (bb_now_ns() > deadline) {
            fprintf(stderr, "broker-bench: brokerd did not start listening "
                    "on %s\n", bb_sock);
            return -ETIMEDOUT;
        }
        bb_sleep_ms(10);
    }
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
"                                [--bulk-gib N] [--bulk-only]\n"
"  --quick       about a tenth of the default counts (CI smoke run)\n"
"  --count N     round trips / messages per workload (default: 50000 round\n"
"                trips, 500000 x 64 B and 100000 x 4 KiB one-way messages)\n"
"  --bulk-gib N  GiB of 16 MiB messages per bulk run and mode (default 10,\n"
"                1 with --quick)\n"
"  --bulk-only   run only the bulk workload\n");
}

static int bb_parse(int argc, char **argv, bb_counts_t *c)
{
    static const struct option opts[] = {
        { "quick", no_argument, NULL, 'q' },
        { "count", required_argument, NULL, 'n' },
        { "bulk-gib", required_argument, NULL, 'g' },
        { "bulk-only", no_argument, NULL, 'b' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    /* 64 messages of 16 MiB are 1 GiB */
    bb_counts_t def = { 50000, 500000, 100000, 10 * 64, false };
    bool bulk_set = false;
    int o;

    *c = def;
    while ((o = getopt_long(argc, argv, "qn:g:bh", opts, NULL)) != -1) {
        char *end;
        unsigned long long v;

        switch (o) {
        case 'q':
            c->rtt = def.rtt / 10;
            c->small = def.small / 10;
            c->large = def.large / 10;
            if (!bulk_set)
                c->bulk = 64;
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
            c->bulk_only = true;
            break;
        case 'n':
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || *end || v < 10 || v > 100000000ull) {
                fprintf(stderr, "broker-bench: --count wants 10..1e8\n");
                return 2;
            }
            c->rtt = c->small = c->large = (size_t)v;
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
    int r;

    if ((r = bb_parse(argc, argv, &n)) != 0)
        return r;
    signal(SIGPIPE, SIG_IGN);
    if ((r = bb_start_brokerd()) < 0) {     /* it said why */
        bb_stop_brokerd();
        return 1;
    }
    printf("brokerd %s benchmark: %zu round trips, %zu x 64 B and %zu x "
           "4 KiB one-way messages (one-way: median of %d runs)\n", BROKER_VERSION_STRING, n.rtt, n.small,
           n.large, BB_RUNS);
    printf("broker = through brokerd with libbroker (round trips: "
           "broker_call/broker_reply)\n"
           "baseline = direct socketpair(AF_UNIX, SOCK_SEQPACKET) between "
           "two processes\n\n");
    printf("%-14s %-8s %12s %12s  %-7s %7s\n", "workload", "metric",
           "broker", "baseline", "unit", "ratio");
    fflush(stdout);
    if (!n.bulk_only) {
        r = bb_run_rtt(n.rtt);
        if (r == 0)
            r = bb_run_tput("one-way 64 B", BB_SMALL, n.small);
        if (r == 0)
            r = bb_run_tput("one-way 4 KiB", BB_LARGE, n.large);
    }
    if (r == 0)
        r = bb_run_bulk(n.bulk);
    bb_stop_brokerd();
    if (r < 0) {
        bb_fail("benchmark failed", r);
        return 1;
    }
    printf("\nratio = broker / baseline; total time %.1f s\n",
           (double)(bb_now_ns() - t0) / 1e9);
    return 0;
}
