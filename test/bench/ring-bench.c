/*
 * ring-bench.c - would shared-memory rings beat brokerd's batched socket
 * path for small messages?  (prefix rb_; `make bench-ring`)
 *
 * Issue 9 asks to consider rings between a client and the broker with the
 * socket only as a doorbell (NGINX Unit's nxt_port_queue) and to keep the
 * socket path unless the ring wins clearly.  This measures the two
 * transports' floors side by side, in one run, in the topology brokerd
 * has: a producer P, a relay R standing for the broker (it reads each
 * message and writes a copy of it onward, as brokerd routes it), a
 * consumer C; three processes.  Nothing of brokerd runs: these are the
 * best either transport could do, to set beside brokerd's own figures
 * (brokerd_batch in ../shared/bench, which runs the socket floor's
 * topology with the broker's work added).
 *
 *   socket  SOCK_SEQPACKET pairs P-R and R-C.  Messages are packed into
 *           packets of up to 64 KiB (a 32-byte header each, as brokerd's
 *           frames have) while a burst lasts, as libbroker's batching
 *           does; R re-packs what one packet brought into one packet.
 *           Ping-pong writes each message at once.
 *   ring    one single-producer single-consumer ring per hop and
 *           direction in a memfd both sides map (1 MiB, messages with
 *           the same 32-byte header, never split at the end: a pad
 *           record skips it).  A consumer that finds its ring empty sets
 *           a flag, looks once more, and sleeps in read() on a
 *           socketpair; a producer that publishes while the flag is set
 *           clears it and writes one byte (the doorbell).  A full ring
 *           puts its producer to sleep the same way.
 *
 * Workloads: stream (COUNT messages of SIZE bytes P -> R -> C, msg/s at
 * C from its first to its last message; every message's sequence number
 * is checked) and pingpong (P -> R -> C -> R -> P, 64 bytes, median and
 * p99 of the round trips).  REPS repetitions, medians with [min-max].
 * Run it pinned (taskset -c 0) and free, as ../shared/bench/run.sh.
 *
 * Usage: ring-bench [--count N] [--size BYTES] [--reps R]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define RB_HDR       32u            /* per message, as brokerd's frame */
#define RB_PKT       65536u         /* socket packets, as max_packet */
#define RB_RING      (1u << 20)     /* bytes of one ring */
#define RB_PAD       UINT32_MAX     /* record length: skip to the start */
#define RB_PING      64u
#define RB_PING_N    20000u
#define RB_WARM      2000u

static void rb_die(const char *what)
{
    fprintf(stderr, "ring-bench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint64_t rb_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- rings ---------------------------------------------------------------- */

typedef struct rb_shared {
    _Alignas(64) _Atomic uint64_t head;     /* written by the producer */
    _Alignas(64) _Atomic uint64_t tail;     /* written by the consumer */
    _Alignas(64) _Atomic uint32_t cons_waiting;
    _Atomic uint32_t prod_waiting;
    _Alignas(64) uint8_t data[RB_RING];
} rb_shared_t;

/* One end of a ring: the shared part and the two doorbells (a socketpair:
 * bell[0] is the consumer's to sleep on, bell[1] the producer's). */
typedef struct rb_ring {
    rb_shared_t *s;
    int cons_bell[2];           /* producer writes [1], consumer reads [0] */
    int prod_bell[2];           /* consumer writes [1], producer reads [0] */
    uint64_t need;              /* bytes the producer waits for (its own) */
} rb_ring_t;

static void rb_ring_make(rb_ring_t *r)
{
    int fd = memfd_create("ring-bench", MFD_CLOEXEC);

    if (fd < 0 || ftruncate(fd, sizeof(rb_shared_t)) < 0)
        rb_die("memfd");
    r->s = mmap(NULL, sizeof(rb_shared_t), PROT_READ | PROT_WRITE,
                MAP_SHARED, fd, 0);
    if (r->s == MAP_FAILED)
        rb_die("mmap");
    close(fd);
    memset(r->s, 0, sizeof(*r->s));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r->cons_bell) ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r->prod_bell))
        rb_die("socketpair");
}

static void rb_bell_ring(int fd)
{
    char c = 1;

    while (write(fd, &c, 1) < 0)
        if (errno != EINTR)
            rb_die("doorbell");
}

static void rb_bell_wait(int fd)
{
    char c[64];

    while (read(fd, c, sizeof(c)) < 0)
        if (errno != EINTR)
            rb_die("doorbell");
}

/* Sleep until the flag's owner is rung, unless ready() turns true after
 * the flag is up (then take the flag back; a bell already on its way
 * only makes a later wait return early). */
static void rb_sleep_on(_Atomic uint32_t *flag, int bell,
                        bool (*ready)(const rb_ring_t *), const rb_ring_t *r)
{
    atomic_store(flag, 1);
    if (ready(r)) {
        atomic_exchange(flag, 0);
        return;
    }
    rb_bell_wait(bell);
}

static bool rb_has_data(const rb_ring_t *r)
{
    return atomic_load(&r->s->head) != atomic_load(&r->s->tail);
}

static bool rb_has_room(const rb_ring_t *r)
{
    return RB_RING - (atomic_load(&r->s->head) -
                      atomic_load(&r->s->tail)) >= r->need;
}

static uint32_t rb_rec(uint32_t len)
{
    return (RB_HDR + len + 7u) & ~7u;
}

/* Append one message (header + data); sleeps while the ring is full. */
static void rb_ring_send(rb_ring_t *r, const void *data, uint32_t len)
{
    rb_shared_t *s = r->s;
    uint64_t head = atomic_load_explicit(&s->head, memory_order_relaxed);
    uint32_t pos = (uint32_t)(head & (RB_RING - 1)), need = rb_rec(len);
    uint32_t pad = pos + need > RB_RING ? RB_RING - pos : 0;

    r->need = pad + need;
    while (!rb_has_room(r))
        rb_sleep_on(&s->prod_waiting, r->prod_bell[0], rb_has_room, r);
    if (pad) {
        uint32_t mark = RB_PAD;
        memcpy(s->data + pos, &mark, sizeof(mark));
        head += pad;
        pos = 0;
    }
    memcpy(s->data + pos, &len, sizeof(len));
    memcpy(s->data + pos + RB_HDR, data, len);
    atomic_store(&s->head, head + need);
    if (atomic_load(&s->cons_waiting) && atomic_exchange(&s->cons_waiting, 0))
        rb_bell_ring(r->cons_bell[1]);
}

/* The next message, or NULL when the ring is empty (block: sleep until
 * there is one).  Valid until rb_ring_done. */
static const uint8_t *rb_ring_peek(rb_ring_t *r, uint32_t *len, bool block)
{
    rb_shared_t *s = r->s;

    for (;;) {
        uint64_t tail = atomic_load_explicit(&s->tail, memory_order_relaxed);
        uint32_t pos = (uint32_t)(tail & (RB_RING - 1));

        if (atomic_load_explicit(&s->head, memory_order_acquire) == tail) {
            if (!block)
                return NULL;
            rb_sleep_on(&s->cons_waiting, r->cons_bell[0], rb_has_data, r);
            continue;
        }
        memcpy(len, s->data + pos, sizeof(*len));
        if (*len == RB_PAD) {
            atomic_store_explicit(&s->tail, tail + (RB_RING - pos),
                                  memory_order_release);
            continue;
        }
        return s->data + pos + RB_HDR;
    }
}

static void rb_ring_done(rb_ring_t *r, uint32_t len)
{
    rb_shared_t *s = r->s;

    atomic_store(&s->tail, atomic_load(&s->tail) + rb_rec(len));
    if (atomic_load(&s->prod_waiting) && atomic_exchange(&s->prod_waiting, 0))
        rb_bell_ring(r->prod_bell[1]);
}

/* ---- packed socket packets ---------------------------------------------- */

typedef struct rb_pkt {
    uint8_t buf[RB_PKT];
    size_t len;
} rb_pkt_t;

static void rb_pkt_flush(int fd, rb_pkt_t *p)
{
    while (p->len && send(fd, p->buf, p->len, 0) < 0)
        if (errno != EINTR)
            rb_die("send");
    p->len = 0;
}

/* Add a message; the packet goes out when the next would not fit. */
static void rb_pkt_add(int fd, rb_pkt_t *p, const void *data, uint32_t len)
{
    if (p->len + RB_HDR + len > RB_PKT)
        rb_pkt_flush(fd, p);
    memcpy(p->buf + p->len, &len, sizeof(len));
    memset(p->buf + p->len + sizeof(len), 0, RB_HDR - sizeof(len));
    memcpy(p->buf + p->len + RB_HDR, data, len);
    p->len += RB_HDR + len;
}

static size_t rb_pkt_recv(int fd, uint8_t *buf)
{
    ssize_t n;

    while ((n = recv(fd, buf, RB_PKT, 0)) < 0)
        if (errno != EINTR)
            rb_die("recv");
    return (size_t)n;
}

/* ---- the runs --------------------------------------------------------------- */

typedef struct rb_opts {
    uint64_t count;
    uint32_t size;
    unsigned reps;
} rb_opts_t;

static void rb_check(const uint8_t *m, uint32_t len, uint32_t want_len,
                     uint64_t want_seq)
{
    uint64_t seq;

    memcpy(&seq, m, sizeof(seq));
    if (len != want_len || seq != want_seq) {
        fprintf(stderr, "ring-bench: message %llu: got seq %llu, %u bytes\n",
                (unsigned long long)want_seq, (unsigned long long)seq, len);
        exit(1);
    }
}

/* stream over sockets: returns msg/s at C (through a pipe from C). */
static void rb_sock_stream(const rb_opts_t *o, int out)
{
    int pr[2], rc[2];
    uint8_t *msg = calloc(1, o->size);

    if (!msg || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pr) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, rc))
        rb_die("socketpair");
    if (fork() == 0) {                  /* R */
        rb_pkt_t *op = calloc(1, sizeof(*op));
        uint8_t *in = malloc(RB_PKT);
        uint64_t got = 0;
        while (got < o->count) {
            size_t n = rb_pkt_recv(pr[1], in), off = 0;
            while (off + RB_HDR <= n) {
                uint32_t len;
                memcpy(&len, in + off, sizeof(len));
                rb_pkt_add(rc[0], op, in + off + RB_HDR, len);
                off += RB_HDR + len;
                got++;
            }
            rb_pkt_flush(rc[0], op);
        }
        _exit(0);
    }
    if (fork() == 0) {                  /* C */
        uint8_t *in = malloc(RB_PKT);
        uint64_t got = 0, t0 = 0;
        while (got < o->count) {
            size_t n = rb_pkt_recv(rc[1], in), off = 0;
            if (!t0)
                t0 = rb_now_ns();
            while (off + RB_HDR <= n) {
                uint32_t len;
                memcpy(&len, in + off, sizeof(len));
                rb_check(in + off + RB_HDR, len, o->size, got++);
                off += RB_HDR + len;
            }
        }
        double rate = (double)(got - 1) * 1e9 / (double)(rb_now_ns() - t0);
        if (write(out, &rate, sizeof(rate)) != sizeof(rate))
            _exit(2);
        _exit(0);
    }
    rb_pkt_t *p = calloc(1, sizeof(*p));
    for (uint64_t i = 0; i < o->count; i++) {
        memcpy(msg, &i, sizeof(i));
        rb_pkt_add(pr[0], p, msg, o->size);
    }
    rb_pkt_flush(pr[0], p);
    free(p);
    free(msg);
    close(pr[0]); close(pr[1]); close(rc[0]); close(rc[1]);
}

static void rb_ring_stream(const rb_opts_t *o, int out)
{
    rb_ring_t pr, rc;
    uint8_t *msg = calloc(1, o->size);

    if (!msg)
        rb_die("calloc");
    rb_ring_make(&pr);
    rb_ring_make(&rc);
    if (fork() == 0) {                  /* R */
        for (uint64_t got = 0; got < o->count; got++) {
            uint32_t len;
            const uint8_t *m = rb_ring_peek(&pr, &len, true);
            rb_ring_send(&rc, m, len);
            rb_ring_done(&pr, len);
        }
        _exit(0);
    }
    if (fork() == 0) {                  /* C */
        uint64_t t0 = 0;
        for (uint64_t got = 0; got < o->count; got++) {
            uint32_t len;
            const uint8_t *m = rb_ring_peek(&rc, &len, true);
            if (!t0)
                t0 = rb_now_ns();
            rb_check(m, len, o->size, got);
            rb_ring_done(&rc, len);
        }
        double rate = (double)(o->count - 1) * 1e9 /
                      (double)(rb_now_ns() - t0);
        if (write(out, &rate, sizeof(rate)) != sizeof(rate))
            _exit(2);
        _exit(0);
    }
    for (uint64_t i = 0; i < o->count; i++) {
        memcpy(msg, &i, sizeof(i));
        rb_ring_send(&pr, msg, o->size);
    }
    free(msg);
}

/* ping-pong: P -> R -> C -> R -> P.  R serves both directions: over
 * sockets it polls both; over rings it drains both and sleeps on both
 * doorbells. */
static int rb_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void rb_report_rtt(uint64_t *rtt, unsigned n, int out)
{
    double fig[2];

    qsort(rtt, n, sizeof(*rtt), rb_cmp_u64);
    fig[0] = (double)rtt[n / 2] / 1000.0;
    fig[1] = (double)rtt[(size_t)n * 99 / 100] / 1000.0;
    if (write(out, fig, sizeof(fig)) != sizeof(fig))
        rb_die("pipe");
}

static void rb_sock_ping(int out)
{
    int pr[2], rc[2];
    uint8_t buf[RB_PKT];

    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pr) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, rc))
        rb_die("socketpair");
    if (fork() == 0) {                  /* R */
        struct pollfd pf[2] = { { pr[1], POLLIN, 0 }, { rc[0], POLLIN, 0 } };
        for (unsigned n = 0; n < 2 * (RB_PING_N + RB_WARM); ) {
            if (poll(pf, 2, -1) < 0)
                rb_die("poll");
            for (int i = 0; i < 2; i++)
                if (pf[i].revents & POLLIN) {
                    size_t len = rb_pkt_recv(pf[i].fd, buf);
                    if (send(i ? pr[1] : rc[0], buf, len, 0) < 0)
                        rb_die("send");
                    n++;
                }
        }
        _exit(0);
    }
    if (fork() == 0) {                  /* C: echo */
        for (unsigned n = 0; n < RB_PING_N + RB_WARM; n++) {
            size_t len = rb_pkt_recv(rc[1], buf);
            if (send(rc[1], buf, len, 0) < 0)
                rb_die("send");
        }
        _exit(0);
    }
    uint64_t *rtt = malloc(RB_PING_N * sizeof(*rtt));
    uint8_t msg[RB_HDR + RB_PING] = { 0 };
    for (uint64_t i = 0; i < RB_PING_N + RB_WARM; i++) {
        uint64_t t0 = rb_now_ns();
        memcpy(msg + RB_HDR, &i, sizeof(i));
        if (send(pr[0], msg, sizeof(msg), 0) < 0)
            rb_die("send");
        size_t len = rb_pkt_recv(pr[0], buf);
        rb_check(buf + RB_HDR, (uint32_t)(len - RB_HDR), RB_PING, i);
        if (i >= RB_WARM)
            rtt[i - RB_WARM] = rb_now_ns() - t0;
    }
    rb_report_rtt(rtt, RB_PING_N, out);
    free(rtt);
}

static bool rb_either(const rb_ring_t *r)
{
    return rb_has_data(&r[0]) || rb_has_data(&r[1]);
}

static void rb_ring_ping(int out)
{
    rb_ring_t in[2], outr[2];   /* R's: in[0] from P, in[1] from C */

    for (int i = 0; i < 2; i++) {
        rb_ring_make(&in[i]);
        rb_ring_make(&outr[i]);
    }
    if (fork() == 0) {                  /* R: in[0] -> outr[0] (to C),
                                         * in[1] -> outr[1] (to P) */
        for (unsigned n = 0; n < 2 * (RB_PING_N + RB_WARM); ) {
            bool any = false;
            for (int i = 0; i < 2; i++) {
                uint32_t len;
                const uint8_t *m = rb_ring_peek(&in[i], &len, false);
                if (!m)
                    continue;
                rb_ring_send(&outr[i], m, len);
                rb_ring_done(&in[i], len);
                any = true;
                n++;
            }
            if (any)
                continue;
            /* both empty: flags up on both, look again, sleep on both */
            struct pollfd pf[2] = { { in[0].cons_bell[0], POLLIN, 0 },
                                    { in[1].cons_bell[0], POLLIN, 0 } };
            atomic_store(&in[0].s->cons_waiting, 1);
            atomic_store(&in[1].s->cons_waiting, 1);
            if (!rb_either(in) && poll(pf, 2, -1) < 0)
                rb_die("poll");
            for (int i = 0; i < 2; i++) {
                char c[64];
                if (!atomic_exchange(&in[i].s->cons_waiting, 0) &&
                    !(pf[i].revents & POLLIN))
                    continue;       /* its producer took the flag: a bell */
                if (pf[i].revents & POLLIN &&
                    read(in[i].cons_bell[0], c, sizeof(c)) < 0)
                    rb_die("doorbell");
            }
        }
        _exit(0);
    }
    if (fork() == 0) {                  /* C: echo outr[0] -> in[1] */
        for (unsigned n = 0; n < RB_PING_N + RB_WARM; n++) {
            uint32_t len;
            const uint8_t *m = rb_ring_peek(&outr[0], &len, true);
            rb_ring_send(&in[1], m, len);
            rb_ring_done(&outr[0], len);
        }
        _exit(0);
    }
    uint64_t *rtt = malloc(RB_PING_N * sizeof(*rtt));
    uint8_t msg[RB_PING] = { 0 };
    for (uint64_t i = 0; i < RB_PING_N + RB_WARM; i++) {
        uint64_t t0 = rb_now_ns();
        uint32_t len;
        memcpy(msg, &i, sizeof(i));
        rb_ring_send(&in[0], msg, sizeof(msg));
        const uint8_t *m = rb_ring_peek(&outr[1], &len, true);
        rb_check(m, len, RB_PING, i);
        rb_ring_done(&outr[1], len);
        if (i >= RB_WARM)
            rtt[i - RB_WARM] = rb_now_ns() - t0;
    }
    rb_report_rtt(rtt, RB_PING_N, out);
    free(rtt);
}

/* ---- main ------------------------------------------------------------------- */

/* Run fn in a child of its own (it forks R and C and is P), wait for all
 * three, and read its nfig figures from the pipe. */
static void rb_run(void (*fn)(const rb_opts_t *, int), const rb_opts_t *o,
                   double *fig, size_t nfig)
{
    int p[2];
    pid_t pid;
    int st;

    if (pipe(p) < 0)
        rb_die("pipe");
    pid = fork();
    if (pid < 0)
        rb_die("fork");
    if (pid == 0) {
        close(p[0]);
        fn(o, p[1]);
        while (wait(&st) > 0)
            if (!WIFEXITED(st) || WEXITSTATUS(st))
                _exit(1);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], fig, nfig * sizeof(*fig)) != (ssize_t)(nfig * sizeof(*fig)))
        fig[0] = -1;
    close(p[0]);
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) ||
        fig[0] < 0) {
        fprintf(stderr, "ring-bench: a run failed\n");
        exit(1);
    }
}

static void rb_ping_sock(const rb_opts_t *o, int out) { (void)o; rb_sock_ping(out); }
static void rb_ping_ring(const rb_opts_t *o, int out) { (void)o; rb_ring_ping(out); }

static int rb_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) and returns its median. */
static double rb_median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), rb_cmp_d);
    return v[n / 2];
}

/* median [min-max] of v[0..n), and its ratio to base when base > 0 */
static void rb_print(double *v, unsigned n, double base)
{
    double med = rb_median(v, n);

    printf(" %12.1f [%.1f-%.1f]", med, v[0], v[n - 1]);
    if (base > 0)
        printf("  %.2fx", med / base);
}

int main(int argc, char **argv)
{
    rb_opts_t o = { .count = 2000000, .size = 64, .reps = 3 };
    static const struct option lo[] = {
        { "count", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 'z' },
        { "reps", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        char *end;
        unsigned long long v;
        if (c == 'h' || c == '?') {
            fprintf(c == 'h' ? stdout : stderr, "usage: ring-bench "
                    "[--count N] [--size BYTES] [--reps R]\n");
            return c == 'h' ? 0 : 2;
        }
        errno = 0;
        v = strtoull(optarg, &end, 10);
        if (errno || *end || v == 0 ||
            (c == 'z' && (v < 8 || v > RB_PKT - RB_HDR)) ||
            (c == 'r' && v > 99)) {
            fprintf(stderr, "ring-bench: bad value for --%s: %s\n",
                    c == 'n' ? "count" : c == 'z' ? "size" : "reps", optarg);
            return 2;
        }
        if (c == 'n') o.count = v;
        if (c == 'z') o.size = (uint32_t)v;
        if (c == 'r') o.reps = (unsigned)v;
    }
    double ss[99], rs[99], sp[99][2], rp[99][2], t[99];
    for (unsigned i = 0; i < o.reps; i++) {     /* alternating */
        rb_run(rb_sock_stream, &o, &ss[i], 1);
        rb_run(rb_ring_stream, &o, &rs[i], 1);
        rb_run(rb_ping_sock, &o, sp[i], 2);
        rb_run(rb_ping_ring, &o, rp[i], 2);
    }
    printf("ring-bench: P -> R -> C, %u reps, median [min-max], "
           "ring/socket\n", o.reps);
    printf("%-34s %28s %34s\n", "workload", "socket (packed)",
           "ring + doorbell");
    printf("stream %5u B, %8llu msgs, msg/s", o.size,
           (unsigned long long)o.count);
    rb_print(ss, o.reps, 0);
    rb_print(rs, o.reps, rb_median(ss, o.reps));
    printf("\n");
    for (int k = 0; k < 2; k++) {
        double base;
        printf("pingpong %u B, %s us         ", RB_PING,
               k ? "p99   " : "median");
        for (unsigned i = 0; i < o.reps; i++) t[i] = sp[i][k];
        rb_print(t, o.reps, 0);
        base = rb_median(t, o.reps);
        for (unsigned i = 0; i < o.reps; i++) t[i] = rp[i][k];
        rb_print(t, o.reps, base);
        printf("\n");
    }
    return 0;
}
