/*
 * bench.c - brokerctl bench: workloads run through a live broker by
 * forked client processes, with an optional baseline over plain sockets
 * (prefix bench_).
 *
 * Owns the session (bench_t: the socket path, the broker's pid, the
 * options), the results (bench_res_t, one per workload instance) and, per
 * measured run, a bench_run_t: the pipes that start and end it, the
 * baseline's sockets and the child processes.  Every child is forked
 * from this process, dies with it (PR_SET_PDEATHSIG) and talks to it only
 * through its report pipe: first a READY report, then one DONE report
 * with its counts and clock readings (CLOCK_MONOTONIC, which all
 * processes share).  The parent starts the run by closing the write end
 * of the go pipe (every child waits for its EOF), collects the reports of
 * the receivers, then closes the end pipe so that the senders, which kept
 * their connections open until then (nothing they sent is still in
 * flight when they close), report and exit; relays are killed.
 *
 * Workloads (see brokerctl(1), BENCH):
 *   pingpong  broker_send to a name, echoed with broker_send_id; latency
 *   stream    one producer, one consumer (a name), sequence-checked;
 *             the producer batches (BROKER_OPT_BATCH) unless --no-batch
 *   bulk      shared memory: broker_buf_alloc written in place, and
 *             broker_send; the consumer touches every 4 KiB page
 *   fanout    broker_publish to N subscribers with policy block,
 *             batched as stream
 *   clients   N connections spread over P processes (--procs, default
 *             one per CPU), each keeping one broker_call_async to one
 *             echo service in flight; brokerd's VmRSS per client
 * pingpong, stream and fanout also run over a direct SOCK_SEQPACKET
 * socketpair ("pair") and through an epoll relay process between two
 * socketpairs ("relay") with --baseline.
 *
 * Every payload starts with its 64-bit sequence number; receivers count
 * what arrives and what is out of order, and stop after BENCH_IO_MS
 * without a message (the rest is counted as lost).  No figure is a pass
 * or fail criterion; losses and bad sequence numbers are (exit 1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <uv.h>

#include "ctl.h"

#define BENCH_IO_MS        10000    /* a child's hang guard per wait */
#define BENCH_GUARD_MS     900000   /* the parent's per report */
#define BENCH_MAX_FIGS     3
#define BENCH_SMALL        64u      /* pingpong and clients payloads */
#define BENCH_PAGE         4096u
#define BENCH_PAIR_MAX     65536u   /* largest payload of the baseline */
#define BENCH_BULK_DEF     ((size_t)16 << 20)
#define BENCH_RING_SLOTS   4u       /* bulk floor: messages in flight */

/* Default counts, per workload (--count overrides them all). */
#define BENCH_DEF_PINGPONG 20000
#define BENCH_DEF_STREAM   200000
#define BENCH_DEF_BULK     64
#define BENCH_DEF_FANOUT   20000
#define BENCH_DEF_CLIENTS  200      /* round trips per client */
#define BENCH_DEF_SUBS     8
#define BENCH_DEF_NCLIENTS 100

/* The transports of one workload shape. */
typedef enum bench_via {
    BENCH_VIA_BROKER,
    BENCH_VIA_PAIR,
    BENCH_VIA_RELAY,
    BENCH_VIAS
} bench_via_t;

static const char *const bench_via_names[BENCH_VIAS] =
    { "brokerd", "pair", "relay" };

typedef enum bench_kind {
    BENCH_PINGPONG,
    BENCH_STREAM,
    BENCH_BULK,
    BENCH_FANOUT,
    BENCH_CLIENTS,
} bench_kind_t;

/* What a child writes on its report pipe (twice: READY, then DONE). */
typedef struct bench_rep {
    int32_t err;            /* 0 or a negative errno */
    uint32_t done;          /* 0: READY, 1: DONE */
    uint64_t sent, got, badseq;
    uint64_t measured;      /* messages received in [t0, t1] after the
                               first of them */
    uint64_t t0, t1;        /* CLOCK_MONOTONIC ns */
    double fig[BENCH_MAX_FIGS];     /* pingpong: median, p99, p99.9 us */
} bench_rep_t;

typedef struct bench_child {
    pid_t pid;
    int fd;                 /* its report pipe, read end */
    bool late;              /* a sender: reports after the end pipe */
    bool relay;             /* never reports; killed at the end */
    bench_rep_t rep;
} bench_child_t;

/* One figure of a workload, its values per transport and repetition. */
typedef struct bench_fig {
    const char *key;        /* JSON key, e.g. "median_us" */
    const char *label;      /* table */
    const char *unit;
    double *v[BENCH_VIAS];  /* reps values each (NAN: not measured) */
} bench_fig_t;

/* One workload instance (stream runs once per size). */
typedef struct bench_res {
    bench_kind_t kind;
    char label[32];         /* "pingpong", "stream64", ... */
    size_t size, count;
    unsigned n;             /* fanout: subscribers; clients: clients */
    unsigned procs;         /* clients: the processes that run them */
    unsigned vias;          /* 1 << BENCH_VIA_*: the transports run */
    unsigned nfig;
    bench_fig_t fig[BENCH_MAX_FIGS];
    uint64_t sent, received, badseq;    /* all runs, all transports */
    uint64_t failed;        /* runs that failed */
} bench_res_t;

/* The session. */
typedef struct bench {
    const ctl_opts_t *o;
    char sock[CTL_PATH_MAX];
    pid_t broker_pid;       /* 0: unknown */
    unsigned seq;           /* for fresh names and topics */
    unsigned reps;
    bool batch;             /* producers batch their sends */
    bool tty;               /* progress on stderr */
} bench_t;

/* One measured run: a workload over one transport. */
typedef struct bench_run {
    bench_t *bt;
    const bench_res_t *res;
    bench_via_t via;
    char name[64];          /* bench.PID.SEQ: the name or topic */
    size_t count;           /* per sender (clients: per client) */
    unsigned n;             /* receivers or clients */
    int mode;               /* bulk: 0 buf_alloc in place, 1 broker_send */
    int go[2], end[2];
    /* The baseline's sockets: the sender's side a (pair: one per
     * receiver; relay: one), receiver i's b[i], the relay's l and r[i]. */
    int *a, *b, *r;
    unsigned na;
    int l;
    unsigned char *ring;    /* bulk over pair: BENCH_RING_SLOTS messages
                               in memory both processes share */
    bench_child_t *kids;
    unsigned nkids;
} bench_run_t;

/* A child's role: fn(run, index, rep, report fd) returns 0 or a negative
 * errno and fills rep. */
typedef int (*bench_role_fn)(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                             int fd);

/* ---- small helpers --------------------------------------------------------- */

static void bench_put_seq(unsigned char *p, uint64_t seq)
{
    memcpy(p, &seq, sizeof(seq));
}

static uint64_t bench_get_seq(const unsigned char *p)
{
    uint64_t seq;

    memcpy(&seq, p, sizeof(seq));
    return seq;
}

/* Wait up to ms for fd to be readable.  0, -ETIMEDOUT or -errno. */
static int bench_poll_in(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n;

    while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return -errno;
    return n == 0 ? -ETIMEDOUT : 0;
}

/* Read exactly len bytes (hang-guarded per read).  0, -EPIPE on EOF,
 * -ETIMEDOUT or -errno. */
static int bench_read_full(int fd, void *buf, size_t len, int ms)
{
    char *p = buf;

    while (len) {
        int r = bench_poll_in(fd, ms);
        if (r < 0)
            return r;
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

/* A child waits for EOF on a pipe the parent holds open (go, end). */
static int bench_wait_eof(int fd)
{
    char c;
    int r = bench_poll_in(fd, BENCH_GUARD_MS);

    if (r < 0)
        return r;
    return read(fd, &c, 1) == 0 ? 0 : -EPROTO;
}

/* One packet on a baseline socket. */
static int bench_pkt_send(int fd, const void *data, size_t len)
{
    ssize_t n;

    while ((n = send(fd, data, len, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EMSGSIZE;
}

static ssize_t bench_pkt_recv(int fd, void *buf, size_t cap, int ms)
{
    int r = bench_poll_in(fd, ms);
    ssize_t n;

    if (r < 0)
        return r;
    while ((n = recv(fd, buf, cap, 0)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return -errno;
    return n == 0 ? -EPIPE : n;
}

static int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int bench_cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The q-quantile (0 < q <= 1) of n sorted samples: the smallest sample
 * that at least q*n samples do not exceed. */
static uint64_t bench_quantile(const uint64_t *s, size_t n, double q)
{
    size_t i = (size_t)ceil(q * (double)n);

    return s[i ? i - 1 : 0];
}

/* Messages received after the warm-up: the first tenth. */
static size_t bench_warm(size_t count)
{
    return count / 10;
}

/* VmRSS of pid in KiB, or -1. */
static long bench_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long v = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6)) {
            v = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* ---- endpoints: one message interface over libbroker and sockets -------- */

typedef struct bench_ep {
    broker_t *b;            /* the broker, or NULL for a baseline socket */
    const char *dest;       /* broker: the name (or topic) to send to */
    bool publish;           /* broker: dest is a topic */
    uint64_t dest_id;       /* broker: send to this id instead */
    const int *wfds;        /* baseline: sockets a message is written to */
    unsigned nwfds;
    int rfd;                /* baseline: the socket read from */
    unsigned char *buf;     /* baseline: receive buffer */
    size_t cap;
    broker_msg_t *m;        /* broker: the message last received */
    uint64_t source;        /* broker: its sender */
} bench_ep_t;

static int bench_ep_send(bench_ep_t *ep, const void *data, size_t len)
{
    int r = 0;

    if (ep->b && ep->publish)
        return broker_publish(ep->b, ep->dest, data, len, NULL, 0);
    if (ep->b && ep->dest_id)
        return broker_send_id(ep->b, ep->dest_id, data, len, NULL, 0);
    if (ep->b)
        return broker_send(ep->b, ep->dest, data, len, NULL, 0);
    for (unsigned i = 0; i < ep->nwfds && r == 0; i++)
        r = bench_pkt_send(ep->wfds[i], data, len);
    return r;
}

/* The next message: *data and *len stay valid until the next call or
 * bench_ep_close.  0, -ETIMEDOUT after ms of silence, or -errno. */
static int bench_ep_recv(bench_ep_t *ep, const unsigned char **data,
                         size_t *len, int ms)
{
    if (!ep->b) {
        ssize_t n = bench_pkt_recv(ep->rfd, ep->buf, ep->cap, ms);
        if (n < 0)
            return (int)n;
        *data = ep->buf;
        *len = (size_t)n;
        return 0;
    }
    for (;;) {
        broker_msg_free(ep->m);
        ep->m = NULL;
        int r = broker_recv(ep->b, &ep->m, ms);
        if (r < 0)
            return r;
        if (ep->m->kind == BROKER_MSG_DATA) {
            *data = ep->m->data;
            *len = ep->m->len;
            ep->source = ep->m->source;
            return 0;
        }
        if (ep->m->kind == BROKER_MSG_ERROR || ep->m->kind == BROKER_MSG_GAP)
            return ep->m->code < 0 ? ep->m->code : -EPROTO;
        /* CLOSE events of streams: nothing to count. */
    }
}

static void bench_ep_close(bench_ep_t *ep)
{
    broker_msg_free(ep->m);
    ep->m = NULL;
    if (ep->b)
        broker_close(ep->b);
    ep->b = NULL;
    free(ep->buf);
    ep->buf = NULL;
}

/* Write what batching holds (baseline sockets hold nothing). */
static int bench_ep_flush(bench_ep_t *ep)
{
    return ep->b ? broker_flush(ep->b, BENCH_GUARD_MS) : 0;
}

/* Connect to the session's broker; register `name` if not NULL. */
static int bench_connect(const bench_run_t *run, const char *name,
                         broker_t **out)
{
    int r = broker_connect(run->bt->sock, out);

    if (r == 0 && name && (r = broker_register(*out, name)) < 0) {
        broker_close(*out);
        *out = NULL;
    }
    return r;
}

/* Receiver idx's side: the broker (registered as the run's name, or
 * subscribed to it as a topic when subscribe) or its baseline socket. */
static int bench_ep_receiver(bench_run_t *run, unsigned idx, bool subscribe,
                             bench_ep_t *ep)
{
    uint32_t id;
    int r;

    memset(ep, 0, sizeof(*ep));
    ep->rfd = -1;
    if (run->via != BENCH_VIA_BROKER) {
        ep->rfd = run->b[idx];
        ep->wfds = &run->b[idx];
        ep->nwfds = 1;
        ep->cap = BENCH_PAIR_MAX;
        ep->buf = malloc(ep->cap);
        return ep->buf ? 0 : -ENOMEM;
    }
    r = bench_connect(run, subscribe ? NULL : run->name, &ep->b);
    if (r == 0 && subscribe)
        r = broker_subscribe(ep->b, run->name, NULL, BROKER_SUB_BLOCK, &id);
    return r;
}

/* The sender's side: to the run's name (or topic) or the baseline's
 * side-a sockets. */
static int bench_ep_sender(bench_run_t *run, bool publish, bench_ep_t *ep)
{
    memset(ep, 0, sizeof(*ep));
    ep->rfd = -1;
    if (run->via != BENCH_VIA_BROKER) {
        ep->rfd = run->a[0];
        ep->wfds = run->a;
        ep->nwfds = run->na;
        ep->cap = BENCH_PAIR_MAX;
        ep->buf = malloc(ep->cap);
        return ep->buf ? 0 : -ENOMEM;
    }
    ep->dest = run->name;
    ep->publish = publish;
    return bench_connect(run, NULL, &ep->b);
}

/* ---- child processes ------------------------------------------------------- */

static int bench_ready(int fd)
{
    bench_rep_t rep = { .done = 0 };

    return ctl_write_all(fd, &rep, sizeof(rep));
}

static int bench_child_main(bench_run_t *run, bench_role_fn fn, unsigned idx,
                            int fd, pid_t parent)
{
    bench_rep_t rep = { .done = 1 };

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        return 1;
    close(run->go[1]);
    close(run->end[1]);
    rep.err = fn(run, idx, &rep, fd);
    rep.done = 1;
    if (ctl_write_all(fd, &rep, sizeof(rep)) < 0)
        return 1;
    return rep.err < 0;
}

/* Fork a child running fn(run, idx).  late: it sends, and reports after
 * the end pipe closed; relay: it never reports. */
static int bench_spawn(bench_run_t *run, bench_role_fn fn, unsigned idx,
                       bool late, bool relay)
{
    bench_child_t *k = &run->kids[run->nkids];
    pid_t parent = getpid();
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL);
    k->pid = fork();
    if (k->pid < 0) {
        int r = -errno;
        close(p[0]);
        close(p[1]);
        return r;
    }
    if (k->pid == 0) {
        close(p[0]);
        _exit(bench_child_main(run, fn, idx, p[1], parent));
    }
    close(p[1]);
    k->fd = p[0];
    k->late = late;
    k->relay = relay;
    memset(&k->rep, 0, sizeof(k->rep));
    run->nkids++;
    return 0;
}

/* Read child k's next report. */
static int bench_take(bench_child_t *k)
{
    int r = bench_read_full(k->fd, &k->rep, sizeof(k->rep), BENCH_GUARD_MS);

    if (r < 0)
        return r == -EPIPE ? -ECHILD : r;
    return k->rep.err;
}

/* Wait for the READY reports of kids [from, nkids). */
static int bench_await_ready(bench_run_t *run, unsigned from)
{
    for (unsigned i = from; i < run->nkids; i++) {
        int r = bench_take(&run->kids[i]);
        if (r < 0)
            return r;
        if (run->kids[i].rep.done)
            return -EPROTO;
    }
    return 0;
}

/* Start the run, collect every report: receivers, then (end closed)
 * senders.  Returns the first error; after a receiver's, the senders are
 * not waited for (one may be blocked on it: bench_reap kills them). */
static int bench_collect(bench_run_t *run)
{
    int r = 0, e;

    close(run->go[1]);
    run->go[1] = -1;
    for (int pass = 0; pass < 2 && r == 0; pass++) {
        if (pass == 1) {
            close(run->end[1]);
            run->end[1] = -1;
        }
        for (unsigned i = 0; i < run->nkids; i++) {
            bench_child_t *k = &run->kids[i];
            if (k->relay || k->late != (pass == 1))
                continue;
            if ((e = bench_take(k)) < 0 && r == 0)
                r = e;
        }
    }
    return r;
}

/* Kill what still runs (relays, or everything after a failure), reap
 * all and close what the run holds. */
static int bench_reap(bench_run_t *run, bool kill_all)
{
    int r = 0, st;

    for (unsigned i = 0; i < run->nkids; i++)
        if (kill_all || run->kids[i].relay)
            kill(run->kids[i].pid, SIGKILL);
    for (unsigned i = 0; i < run->nkids; i++) {
        bench_child_t *k = &run->kids[i];
        while (waitpid(k->pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (!k->relay && !kill_all && !(WIFEXITED(st) && !WEXITSTATUS(st))
            && r == 0)
            r = -ECHILD;
        close(k->fd);
        k->fd = -1;
    }
    return r;
}

/* ---- runs: their pipes and the baseline's sockets -------------------------- */

static void bench_close_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; fds && i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* Close the baseline's sockets in this process (the children have
 * theirs). */
static void bench_run_close_net(bench_run_t *run)
{
    bench_close_fds(run->a, run->n);
    bench_close_fds(run->b, run->n);
    bench_close_fds(run->r, run->n);
    bench_close_fds(&run->l, 1);
}

static int bench_pair(int *x, int *y)
{
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    *x = sv[0];
    *y = sv[1];
    return 0;
}

/* The sockets of a baseline run: pair: a[i]-b[i] per receiver; relay:
 * a[0]-l, then r[i]-b[i] per receiver. */
static int bench_run_net(bench_run_t *run)
{
    unsigned n = run->n;
    int r = 0;

    run->a = malloc(n * sizeof(int));
    run->b = malloc(n * sizeof(int));
    run->r = malloc(n * sizeof(int));
    if (!run->a || !run->b || !run->r)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++)
        run->a[i] = run->b[i] = run->r[i] = -1;
    if (run->via == BENCH_VIA_PAIR) {
        run->na = n;
        for (unsigned i = 0; i < n && r == 0; i++)
            r = bench_pair(&run->a[i], &run->b[i]);
        return r;
    }
    run->na = 1;
    r = bench_pair(&run->a[0], &run->l);
    for (unsigned i = 0; i < n && r == 0; i++)
        r = bench_pair(&run->r[i], &run->b[i]);
    return r;
}

/* A run of res over via with n receivers (or clients). */
static int bench_run_init(bench_run_t *run, bench_t *bt,
                          const bench_res_t *res, bench_via_t via,
                          unsigned n, unsigned nkids)
{
    memset(run, 0, sizeof(*run));
    run->bt = bt;
    run->res = res;
    run->via = via;
    run->n = n;
    run->count = res->count;
    run->l = -1;
    run->go[0] = run->go[1] = run->end[0] = run->end[1] = -1;
    snprintf(run->name, sizeof(run->name), "bench.%d.%u", (int)getpid(),
             ++bt->seq);
    if (pipe2(run->go, O_CLOEXEC) < 0 || pipe2(run->end, O_CLOEXEC) < 0)
        return -errno;
    run->kids = calloc(nkids, sizeof(*run->kids));
    if (!run->kids)
        return -ENOMEM;
    if (via != BENCH_VIA_BROKER && res->kind == BENCH_BULK) {
        run->ring = mmap(NULL, BENCH_RING_SLOTS * res->size,
                         PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                         -1, 0);
        if (run->ring == MAP_FAILED) {
            run->ring = NULL;
            return -errno;
        }
    }
    return via == BENCH_VIA_BROKER ? 0 : bench_run_net(run);
}

static void bench_run_fini(bench_run_t *run)
{
    bench_run_close_net(run);
    bench_close_fds(run->go, 2);
    bench_close_fds(run->end, 2);
    free(run->a);
    free(run->b);
    free(run->r);
    free(run->kids);
    if (run->ring)
        munmap(run->ring, BENCH_RING_SLOTS * run->res->size);
}

/* ---- the relay ---------------------------------------------------------- */

/* Forward every packet from l to every r[i], and from any r[i] to l,
 * until killed.  A packet it fails to forward is lost: the receiver
 * counts it so. */
static int bench_relay(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                       int fd)
{
    struct epoll_event ev[16];
    unsigned char *buf = malloc(BENCH_PAIR_MAX);
    int ep = epoll_create1(EPOLL_CLOEXEC), r;

    (void)idx;
    (void)rep;
    if (ep < 0)
        return -errno;
    if (!buf)
        return -ENOMEM;
    for (unsigned i = 0; i <= run->n; i++) {
        struct epoll_event e = { .events = EPOLLIN };
        e.data.u32 = i;         /* 0: l, i: r[i-1] */
        if (epoll_ctl(ep, EPOLL_CTL_ADD, i ? run->r[i - 1] : run->l, &e) < 0)
            return -errno;
    }
    if ((r = bench_ready(fd)) < 0)
        return r;
    for (;;) {
        int n = epoll_wait(ep, ev, 16, -1);
        for (int j = 0; j < n; j++) {
            unsigned i = ev[j].data.u32;
            int from = i ? run->r[i - 1] : run->l;
            ssize_t len = recv(from, buf, BENCH_PAIR_MAX, MSG_DONTWAIT);
            if (len <= 0)
                continue;
            if (i)
                bench_pkt_send(run->l, buf, (size_t)len);
            for (unsigned k = 0; !i && k < run->n; k++)
                bench_pkt_send(run->r[k], buf, (size_t)len);
        }
    }
}

/* ---- receiving and checking --------------------------------------------- */

/* A receiver's counts: got and badseq, and the clock at the warm-up mark
 * (t0) and at the last message (t1). */
typedef struct bench_count {
    size_t size, want, warm;
    uint64_t next;
} bench_count_t;

/* Take message (data, len) into rep. */
static void bench_count_msg(bench_count_t *c, bench_rep_t *rep,
                            const unsigned char *data, size_t len)
{
    uint64_t seq = len >= 8 ? bench_get_seq(data) : UINT64_MAX;

    if (len != c->size || seq != c->next)
        rep->badseq++;
    c->next = seq + 1;
    rep->got++;
    if (rep->got == c->warm + 1)
        rep->t0 = ctl_now_ns();
    rep->t1 = ctl_now_ns();
    if (rep->got > c->warm + 1)
        rep->measured++;
}

/* Receive until c->want messages arrived or BENCH_IO_MS passed without
 * one (the rest is lost: the parent compares the counts). */
static int bench_receive(bench_ep_t *ep, bench_count_t *c, bench_rep_t *rep)
{
    while (rep->got < c->want) {
        const unsigned char *data;
        size_t len;
        int r = bench_ep_recv(ep, &data, &len, BENCH_IO_MS);
        if (r == -ETIMEDOUT)
            return 0;
        if (r < 0)
            return r;
        bench_count_msg(c, rep, data, len);
    }
    return 0;
}

/* ---- stream and fanout ---------------------------------------------------- */

static bool bench_is_fanout(const bench_run_t *run)
{
    return run->res->kind == BENCH_FANOUT;
}

static int bench_flow_receiver(bench_run_t *run, unsigned idx,
                               bench_rep_t *rep, int fd)
{
    bench_count_t c = { .size = run->res->size, .want = run->count,
                        .warm = bench_warm(run->count) };
    bench_ep_t ep;
    int r = bench_ep_receiver(run, idx, bench_is_fanout(run), &ep);

    if (r == 0)
        r = bench_ready(fd);
    if (r == 0)
        r = bench_receive(&ep, &c, rep);
    bench_ep_close(&ep);
    return r;
}

/* Send count sequence-numbered messages of the workload's size. */
static int bench_send_seq(bench_ep_t *ep, size_t size, size_t count,
                          bench_rep_t *rep)
{
    unsigned char *buf = calloc(1, size);
    int r = buf ? 0 : -ENOMEM;

    for (size_t i = 0; i < count && r == 0; i++) {
        bench_put_seq(buf, i);
        if ((r = bench_ep_send(ep, buf, size)) == 0)
            rep->sent++;
    }
    if (r == 0)
        r = bench_ep_flush(ep);
    free(buf);
    return r;
}

static int bench_flow_sender(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                             int fd)
{
    bench_ep_t ep;
    int r = bench_ep_sender(run, bench_is_fanout(run), &ep);

    (void)idx;
    if (r == 0 && ep.b && run->bt->batch)
        r = broker_set_option(ep.b, BROKER_OPT_BATCH, 1);
    if (r == 0)
        r = bench_ready(fd);
    if (r == 0)
        r = bench_wait_eof(run->go[0]);
    if (r == 0)
        r = bench_send_seq(&ep, run->res->size, run->count, rep);
    if (r == 0)
        r = bench_wait_eof(run->end[0]);
    bench_ep_close(&ep);
    return r;
}

/* ---- pingpong ------------------------------------------------------------- */

static int bench_echo(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                      int fd)
{
    bench_ep_t ep;
    int r = bench_ep_receiver(run, 0, false, &ep);

    (void)idx;
    if (r == 0)
        r = bench_ready(fd);
    while (r == 0 && rep->got < run->count) {
        const unsigned char *data;
        size_t len;
        if ((r = bench_ep_recv(&ep, &data, &len, BENCH_IO_MS)) < 0)
            break;
        rep->got++;
        ep.dest_id = ep.source;
        if ((r = bench_ep_send(&ep, data, len)) == 0)
            rep->sent++;
    }
    if (r == 0)
        r = bench_wait_eof(run->end[0]);
    bench_ep_close(&ep);
    return r;
}

/* Round trip i: send, wait for the echo, check it.  *ns: its latency. */
static int bench_ping_once(bench_ep_t *ep, unsigned char *buf, uint64_t i,
                           bench_rep_t *rep, uint64_t *ns)
{
    const unsigned char *data;
    size_t len;
    uint64_t t = ctl_now_ns();
    int r;

    bench_put_seq(buf, i);
    if ((r = bench_ep_send(ep, buf, BENCH_SMALL)) < 0)
        return r;
    rep->sent++;
    if ((r = bench_ep_recv(ep, &data, &len, BENCH_IO_MS)) < 0)
        return r;
    *ns = ctl_now_ns() - t;
    rep->got++;
    if (len != BENCH_SMALL || bench_get_seq(data) != i)
        rep->badseq++;
    return 0;
}

/* Median, p99 and p99.9 of the samples, in microseconds. */
static void bench_latency_figs(uint64_t *s, size_t n, bench_rep_t *rep)
{
    static const double q[BENCH_MAX_FIGS] = { 0.5, 0.99, 0.999 };

    if (n == 0)
        return;
    qsort(s, n, sizeof(*s), bench_cmp_u64);
    for (int i = 0; i < BENCH_MAX_FIGS; i++)
        rep->fig[i] = (double)bench_quantile(s, n, q[i]) / 1000.0;
}

static int bench_pinger(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                        int fd)
{
    size_t warm = bench_warm(run->count), n = run->count - warm;
    uint64_t *s = malloc((n ? n : 1) * sizeof(*s)), ns;
    unsigned char buf[BENCH_SMALL] = { 0 };
    bench_ep_t ep;
    int r = s ? bench_ep_sender(run, false, &ep) : -ENOMEM;

    (void)idx;
    if (r < 0) {
        free(s);
        return r;
    }
    if ((r = bench_ready(fd)) == 0)
        r = bench_wait_eof(run->go[0]);
    for (size_t i = 0; i < run->count && r == 0; i++)
        if ((r = bench_ping_once(&ep, buf, i, rep, &ns)) == 0 && i >= warm)
            s[i - warm] = ns;
    if (r == 0)
        bench_latency_figs(s, n, rep);
    free(s);
    bench_ep_close(&ep);
    return r;
}

/* ---- bulk ----------------------------------------------------------------- */

/* Message seq: its number at the start of every 4 KiB page. */
static void bench_bulk_stamp(unsigned char *p, size_t len, uint64_t seq)
{
    for (size_t off = 0; off + 8 <= len; off += BENCH_PAGE)
        bench_put_seq(p + off, seq);
}

/* Touch every page: each must carry the message's number. */
static void bench_bulk_check(bench_count_t *c, bench_rep_t *rep,
                             const unsigned char *p, size_t len)
{
    uint64_t seq = len >= 8 ? bench_get_seq(p) : UINT64_MAX;
    uint64_t bad = rep->badseq;
    bool pages_ok = true;

    for (size_t off = BENCH_PAGE; off + 8 <= len; off += BENCH_PAGE)
        pages_ok &= bench_get_seq(p + off) == seq;
    bench_count_msg(c, rep, p, len);
    if (!pages_ok && rep->badseq == bad)
        rep->badseq++;          /* a torn message, right number in front */
}

static int bench_bulk_receiver(bench_run_t *run, unsigned idx,
                               bench_rep_t *rep, int fd)
{
    bench_count_t c = { .size = run->res->size, .want = run->count,
                        .warm = bench_warm(run->count) };
    bench_ep_t ep;
    int r = bench_ep_receiver(run, idx, false, &ep);

    if (r == 0)
        r = bench_ready(fd);
    while (r == 0 && rep->got < c.want) {
        const unsigned char *data;
        size_t len;
        r = bench_ep_recv(&ep, &data, &len, BENCH_IO_MS);
        if (r == 0)
            bench_bulk_check(&c, rep, data, len);
    }
    bench_ep_close(&ep);
    return r == -ETIMEDOUT ? 0 : r;
}

/* Mode 0: each message is a pool buffer written in place. */
static int bench_bulk_send_buf(broker_t *b, const char *name, size_t size,
                               uint64_t seq)
{
    broker_buf_t *buf = NULL;
    int r = broker_buf_alloc(b, size, &buf, BENCH_IO_MS);

    if (r < 0)
        return r;
    bench_bulk_stamp(buf->data, size, seq);
    r = broker_buf_send(b, name, buf, size);
    broker_buf_free(b, buf);
    return r;
}

static int bench_bulk_sender(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                             int fd)
{
    size_t size = run->res->size;
    unsigned char *priv = run->mode ? malloc(size) : NULL;
    broker_t *b = NULL;
    int r = run->mode && !priv ? -ENOMEM : bench_connect(run, NULL, &b);

    (void)idx;
    /* broker_send waits for pool buffers rather than falling back to the
     * socket: a message in fragments could be overtaken (libbroker(3)). */
    if (r == 0 && priv)
        r = broker_set_option(b, BROKER_OPT_SHM_FALLBACK, 0);
    /* two buffers' worth of pool set up before the clock starts, as the
     * floor's ring is; a broker that allows less gets what fits */
    if (r == 0) {
        int e = broker_set_option(b, BROKER_OPT_SHM_RESERVE, 2 * (uint64_t)size);
        if (e < 0 && e != -ENOSPC && e != -ENOTSUP)
            r = e;
    }
    if (r == 0 && (r = bench_ready(fd)) == 0)
        r = bench_wait_eof(run->go[0]);
    for (size_t i = 0; i < run->count && r == 0; i++) {
        if (priv) {
            bench_bulk_stamp(priv, size, i);
            r = broker_send(b, run->name, priv, size, NULL, 0);
        } else {
            r = bench_bulk_send_buf(b, run->name, size, i);
        }
        if (r == 0)
            rep->sent++;
    }
    if (r == 0)
        r = bench_wait_eof(run->end[0]);
    if (b)
        broker_close(b);
    free(priv);
    return r;
}

/*
 * The floor of bulk (its "pair" baseline): BENCH_RING_SLOTS messages in
 * memory both processes map (no broker, no library), a socketpair
 * carrying slot numbers: full ones to the consumer, read ones back.  The
 * same pages are stamped and checked as through the broker.
 */
static int bench_slot_recv(int fd, uint32_t *slot)
{
    ssize_t n = bench_pkt_recv(fd, slot, sizeof(*slot), BENCH_IO_MS);

    if (n < 0)
        return (int)n;
    return n == sizeof(*slot) && *slot < BENCH_RING_SLOTS ? 0 : -EPROTO;
}

static int bench_floor_receiver(bench_run_t *run, unsigned idx,
                                bench_rep_t *rep, int fd)
{
    size_t size = run->res->size;
    bench_count_t c = { .size = size, .want = run->count,
                        .warm = bench_warm(run->count) };
    int r = bench_ready(fd);

    (void)idx;
    while (r == 0 && rep->got < c.want) {
        uint32_t slot;
        if ((r = bench_slot_recv(run->b[0], &slot)) < 0)
            break;
        bench_bulk_check(&c, rep, run->ring + slot * size, size);
        r = bench_pkt_send(run->b[0], &slot, sizeof(slot));
    }
    return r == -ETIMEDOUT ? 0 : r;
}

static int bench_floor_sender(bench_run_t *run, unsigned idx,
                              bench_rep_t *rep, int fd)
{
    size_t size = run->res->size;
    int r = bench_ready(fd);

    (void)idx;
    if (r == 0)
        r = bench_wait_eof(run->go[0]);
    for (size_t i = 0; i < run->count && r == 0; i++) {
        uint32_t slot = (uint32_t)i;
        if (i >= BENCH_RING_SLOTS && (r = bench_slot_recv(run->a[0], &slot)))
            break;
        bench_bulk_stamp(run->ring + slot * size, size, i);
        if ((r = bench_pkt_send(run->a[0], &slot, sizeof(slot))) == 0)
            rep->sent++;
    }
    if (r == 0)
        r = bench_wait_eof(run->end[0]);
    return r;
}

/* ---- clients ---------------------------------------------------------------- */

/* The echo service: answer n * count requests. */
static int bench_service(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                         int fd)
{
    uint64_t want = (uint64_t)run->n * run->count;
    broker_t *b = NULL;
    int r = bench_connect(run, run->name, &b);

    (void)idx;
    if (r == 0)
        r = bench_ready(fd);
    while (r == 0 && rep->got < want) {
        broker_msg_t *m = NULL;
        if ((r = broker_recv(b, &m, BENCH_IO_MS)) < 0)
            break;
        if (broker_msg_is_request(m)) {
            rep->got++;
            if ((r = broker_reply(b, m, m->data, m->len, NULL, 0)) == 0)
                rep->sent++;
        }
        broker_msg_free(m);
    }
    if (r == 0)
        r = bench_wait_eof(run->end[0]);
    if (b)
        broker_close(b);
    return r == -ETIMEDOUT ? 0 : r;
}

/* A client process's connections: each keeps one broker_call_async in
 * flight and issues the next from its reply, count times (closed loop,
 * as redis-benchmark and nats bench drive their many clients). */
typedef struct bench_conn {
    broker_t *b;
    struct bench_mux *mux;
    uint64_t next;          /* the sequence number in flight */
} bench_conn_t;

typedef struct bench_mux {
    const bench_run_t *run;
    bench_rep_t *rep;
    uv_loop_t loop;
    bench_conn_t *c;
    unsigned n;
    unsigned active;        /* connections not yet done */
    int err;                /* the first error */
} bench_mux_t;

/* How many of the clients process idx of procs connects: an even share,
 * the first ones one more when they do not divide. */
static unsigned bench_mux_share(const bench_run_t *run, unsigned idx)
{
    unsigned procs = run->res->procs;

    return run->n / procs + (idx < run->n % procs);
}

static void bench_mux_reply(broker_t *b, int err, broker_msg_t *reply,
                            void *userdata);

static int bench_mux_call(bench_conn_t *c)
{
    unsigned char buf[BENCH_SMALL] = { 0 };

    bench_put_seq(buf, c->next);
    c->mux->rep->sent++;
    return broker_call_async(c->b, c->mux->run->name, buf, sizeof(buf),
                             BENCH_IO_MS, bench_mux_reply, c);
}

/* Connection c is done (err 0) or failed. */
static void bench_mux_end(bench_conn_t *c, int err)
{
    bench_mux_t *m = c->mux;

    if (err < 0 && m->err == 0)
        m->err = err;
    if (--m->active == 0 || err < 0)
        uv_stop(&m->loop);
}

static void bench_mux_reply(broker_t *b, int err, broker_msg_t *reply,
                            void *userdata)
{
    bench_conn_t *c = userdata;
    bench_rep_t *rep = c->mux->rep;

    (void)b;
    if (err < 0) {
        if (err != -ECANCELED)
            bench_mux_end(c, err);
        return;
    }
    rep->got++;
    rep->measured++;
    if (reply->len != BENCH_SMALL || bench_get_seq(reply->data) != c->next)
        rep->badseq++;
    broker_msg_free(reply);
    if (++c->next == c->mux->run->count) {
        bench_mux_end(c, 0);
        return;
    }
    if ((err = bench_mux_call(c)) < 0)
        bench_mux_end(c, err);
}

/* Close what bench_mux_open opened (nothing when its loop or array
 * failed). */
static void bench_mux_close(bench_mux_t *m)
{
    if (!m->c)
        return;
    for (unsigned i = 0; i < m->n; i++)
        if (m->c[i].b)
            broker_close(m->c[i].b);
    uv_run(&m->loop, UV_RUN_NOWAIT);    /* libuv releases the handles */
    uv_loop_close(&m->loop);
    free(m->c);
}

/* Connect and attach process idx's share of the clients.  No callbacks:
 * a lost connection fails its call in flight, which ends the run. */
static int bench_mux_open(bench_mux_t *m, const bench_run_t *run,
                          unsigned idx, bench_rep_t *rep)
{
    int r;

    memset(m, 0, sizeof(*m));
    m->run = run;
    m->rep = rep;
    m->n = bench_mux_share(run, idx);
    if ((r = uv_loop_init(&m->loop)) < 0)
        return r;
    if (!(m->c = calloc(m->n, sizeof(*m->c)))) {
        uv_loop_close(&m->loop);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < m->n && r == 0; i++) {
        m->c[i].mux = m;
        if ((r = bench_connect(run, NULL, &m->c[i].b)) == 0)
            r = broker_attach(m->c[i].b, &m->loop, NULL, NULL);
    }
    return r;
}

/* A client process: its connections, each calling the echo service
 * count times with one call in flight. */
static int bench_client(bench_run_t *run, unsigned idx, bench_rep_t *rep,
                        int fd)
{
    bench_mux_t m;
    int r = bench_mux_open(&m, run, idx, rep);

    if (r == 0 && (r = bench_ready(fd)) == 0)
        r = bench_wait_eof(run->go[0]);
    rep->t0 = ctl_now_ns();
    for (unsigned i = 0; i < m.n && r == 0; i++)
        if ((r = bench_mux_call(&m.c[i])) == 0)
            m.active++;
    if (r == 0 && m.active) {
        uv_run(&m.loop, UV_RUN_DEFAULT);
        r = m.err;
    }
    rep->t1 = ctl_now_ns();
    bench_mux_close(&m);
    return r;
}

/* ---- one run: spawn, measure, figures ------------------------------------- */

/* What one run measured. */
typedef struct bench_out {
    double fig[BENCH_MAX_FIGS];
    uint64_t sent, received, badseq;
} bench_out_t;

/* Spawn the children of run's workload (clients: see bench_run_clients). */
static int bench_spawn_roles(bench_run_t *run)
{
    int r = 0;

    if (run->via == BENCH_VIA_RELAY)
        r = bench_spawn(run, bench_relay, 0, false, true);
    switch (run->res->kind) {
    case BENCH_PINGPONG:
        if (r == 0)
            r = bench_spawn(run, bench_echo, 0, true, false);
        if (r == 0)
            r = bench_spawn(run, bench_pinger, 0, false, false);
        break;
    case BENCH_STREAM:
    case BENCH_FANOUT:
        for (unsigned i = 0; i < run->n && r == 0; i++)
            r = bench_spawn(run, bench_flow_receiver, i, false, false);
        if (r == 0)
            r = bench_spawn(run, bench_flow_sender, 0, true, false);
        break;
    case BENCH_BULK:
        if (r == 0)
            r = bench_spawn(run, run->ring ? bench_floor_receiver
                                           : bench_bulk_receiver,
                            0, false, false);
        if (r == 0)
            r = bench_spawn(run, run->ring ? bench_floor_sender
                                           : bench_bulk_sender,
                            0, true, false);
        break;
    case BENCH_CLIENTS:
        r = -EINVAL;
        break;
    }
    return r;
}

/* clients: the service, brokerd's VmRSS, n clients, VmRSS again.
 * *kib: the growth per client, NAN when not readable. */
static int bench_spawn_clients(bench_run_t *run, double *kib)
{
    long rss0, rss1;
    int r = bench_spawn(run, bench_service, 0, true, false);

    if (r == 0)
        r = bench_await_ready(run, 0);
    rss0 = bench_rss_kb(run->bt->broker_pid);
    for (unsigned i = 0; i < run->res->procs && r == 0; i++)
        r = bench_spawn(run, bench_client, i, false, false);
    if (r == 0)
        r = bench_await_ready(run, 1);
    rss1 = bench_rss_kb(run->bt->broker_pid);
    *kib = rss0 < 0 || rss1 < 0 ? NAN
                                : (double)(rss1 - rss0) / (double)run->n;
    return r;
}

/* Messages per second of the receivers' measured messages, from the
 * earliest warm-up mark to the latest last message. */
static double bench_rate(const bench_run_t *run)
{
    uint64_t t0 = UINT64_MAX, t1 = 0, n = 0;

    for (unsigned i = 0; i < run->nkids; i++) {
        const bench_child_t *k = &run->kids[i];
        if (k->late || k->relay || !k->rep.measured)
            continue;
        n += k->rep.measured;
        t0 = k->rep.t0 < t0 ? k->rep.t0 : t0;
        t1 = k->rep.t1 > t1 ? k->rep.t1 : t1;
    }
    return n && t1 > t0 ? (double)n * 1e9 / (double)(t1 - t0) : 0.0;
}

/* The counts: received and badseq from the receivers; sent from those
 * who originate the messages (fanout: every publication once per
 * subscriber). */
static void bench_counts(const bench_run_t *run, bench_out_t *out)
{
    bench_kind_t kind = run->res->kind;
    bool self = kind == BENCH_PINGPONG || kind == BENCH_CLIENTS;

    for (unsigned i = 0; i < run->nkids; i++) {
        const bench_child_t *k = &run->kids[i];
        if (k->relay)
            continue;
        if (!k->late) {
            out->received += k->rep.got;
            out->badseq += k->rep.badseq;
        }
        if (k->late != self)
            out->sent += k->rep.sent * (kind == BENCH_FANOUT ? run->n : 1);
    }
}

static void bench_figures(const bench_run_t *run, double rss_kib,
                          bench_out_t *out)
{
    const bench_child_t *first = NULL;
    double rate = bench_rate(run);

    for (unsigned i = 0; i < run->nkids && !first; i++)
        if (!run->kids[i].late && !run->kids[i].relay)
            first = &run->kids[i];
    if (!first)
        return;
    switch (run->res->kind) {
    case BENCH_PINGPONG:
        memcpy(out->fig, first->rep.fig, sizeof(out->fig));
        break;
    case BENCH_STREAM:
        out->fig[0] = rate;
        out->fig[1] = rate * (double)run->res->size / 1e6;
        break;
    case BENCH_BULK:
        out->fig[run->mode] = rate * (double)run->res->size / 1e9;
        break;
    case BENCH_FANOUT:
        out->fig[0] = rate;
        break;
    case BENCH_CLIENTS:
        out->fig[0] = rate;
        out->fig[1] = rss_kib;
        break;
    }
}

/* Run res once over via (bulk: in mode).  out gets the figures and the
 * counts. */
static int bench_run_once(bench_t *bt, const bench_res_t *res,
                          bench_via_t via, int mode, bench_out_t *out)
{
    unsigned n = res->kind == BENCH_FANOUT || res->kind == BENCH_CLIENTS
                 ? res->n : 1;
    double rss_kib = NAN;
    bench_run_t run;
    int r = bench_run_init(&run, bt, res, via, n, n + 3), e;

    run.mode = mode;
    if (r == 0 && res->kind == BENCH_CLIENTS)
        r = bench_spawn_clients(&run, &rss_kib);     /* and their READY */
    else if (r == 0 && (r = bench_spawn_roles(&run)) == 0)
        r = bench_await_ready(&run, 0);
    bench_run_close_net(&run);
    if (r == 0)
        r = bench_collect(&run);
    if ((e = bench_reap(&run, r < 0)) < 0 && r == 0)
        r = e;
    if (r == 0) {
        bench_counts(&run, out);
        bench_figures(&run, rss_kib, out);
    }
    bench_run_fini(&run);
    return r;
}

/* ---- workloads and results ----------------------------------------------- */

/* On a tty a line that changes with every run; else a line per
 * workload. */
static void bench_progress(const bench_t *bt, const bench_res_t *res,
                           bench_via_t via, int mode, unsigned rep)
{
    if (bt->tty)
        fprintf(stderr, "\r\033[Kbench: %s%s over %s, %u/%u", res->label,
                res->kind != BENCH_BULK ? "" : mode ? " broker_send"
                                                    : " buf_alloc",
                bench_via_names[via], rep + 1, bt->reps);
    else if (rep == 0 && via == BENCH_VIA_BROKER && mode == 0)
        fprintf(stderr, "brokerctl bench: %s: %zu x %u\n", res->label,
                res->count, bt->reps);
    fflush(stderr);
}

/* Store run (rep, via)'s figures and counts in res. */
static void bench_store(bench_res_t *res, bench_via_t via, unsigned rep,
                        const bench_out_t *out, int mode)
{
    /* bulk: a run per path through brokerd, the floor serves both. */
    for (unsigned f = 0; f < res->nfig; f++)
        if (res->kind != BENCH_BULK || (int)f == mode)
            res->fig[f].v[via][rep] = out->fig[f];
        else if (via != BENCH_VIA_BROKER)
            res->fig[f].v[via][rep] = out->fig[0];
    if (via == BENCH_VIA_BROKER) {
        res->sent += out->sent;
        res->received += out->received;
        res->badseq += out->badseq;
    } else if (out->received != out->sent || out->badseq) {
        res->failed++;          /* a baseline must not lose anything */
    }
}

/* How many runs res makes over via: none if via is not measured; bulk
 * through brokerd: one per path. */
static int bench_modes(const bench_res_t *res, bench_via_t via)
{
    if (!(res->vias & (1u << via)))
        return 0;
    return res->kind == BENCH_BULK && via == BENCH_VIA_BROKER ? 2 : 1;
}

/* Every repetition of res: brokerd, then (--baseline) pair and relay,
 * so all three see the same machine noise. */
static void bench_measure(bench_t *bt, bench_res_t *res)
{
    for (unsigned rep = 0; rep < bt->reps; rep++)
        for (unsigned v = 0; v < BENCH_VIAS; v++)
            for (int mode = 0; mode < bench_modes(res, (bench_via_t)v);
                 mode++) {
                bench_out_t out = { .fig = { 0 } };
                bench_progress(bt, res, (bench_via_t)v, mode, rep);
                int r = bench_run_once(bt, res, (bench_via_t)v, mode, &out);
                if (r < 0) {
                    if (bt->tty)
                        fputc('\n', stderr);
                    ctl_err("bench %s over %s: %s", res->label,
                            bench_via_names[v], broker_strerror(r));
                    res->failed++;
                    continue;
                }
                bench_store(res, (bench_via_t)v, rep, &out, mode);
            }
}

static int bench_fig(bench_res_t *res, unsigned reps, const char *key,
                     const char *label, const char *unit)
{
    bench_fig_t *f = &res->fig[res->nfig++];

    f->key = key;
    f->label = label;
    f->unit = unit;
    for (int v = 0; v < BENCH_VIAS; v++) {
        if (!(f->v[v] = malloc(reps * sizeof(double))))
            return -ENOMEM;
        for (unsigned i = 0; i < reps; i++)
            f->v[v][i] = NAN;
    }
    return 0;
}

/* clients: --procs, by default one process per online CPU; never more
 * processes than clients. */
static unsigned bench_procs(const ctl_opts_t *o, unsigned clients)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned p = o->bench_procs ? (unsigned)o->bench_procs
                                : cpus > 0 ? (unsigned)cpus : 1;

    return p < clients ? p : clients;
}

/* A result of kind with its figures. */
static int bench_res_init(bench_res_t *res, const bench_t *bt,
                          bench_kind_t kind, size_t size)
{
    const ctl_opts_t *o = bt->o;
    unsigned reps = bt->reps;
    int r = 0;

    memset(res, 0, sizeof(*res));
    res->kind = kind;
    res->size = size;
    switch (kind) {
    case BENCH_PINGPONG:
        snprintf(res->label, sizeof(res->label), "pingpong");
        res->count = BENCH_DEF_PINGPONG;
        r |= bench_fig(res, reps, "median_us", "median", "us");
        r |= bench_fig(res, reps, "p99_us", "p99", "us");
        r |= bench_fig(res, reps, "p999_us", "p99.9", "us");
        break;
    case BENCH_STREAM:
        snprintf(res->label, sizeof(res->label), "stream%zu", size);
        res->count = BENCH_DEF_STREAM;
        r |= bench_fig(res, reps, "msg_s", "rate", "msg/s");
        r |= bench_fig(res, reps, "mb_s", "consumer", "MB/s");
        break;
    case BENCH_BULK:
        snprintf(res->label, sizeof(res->label), "bulk");
        res->count = BENCH_DEF_BULK;
        r |= bench_fig(res, reps, "buf_gb_s", "buf_alloc", "GB/s");
        r |= bench_fig(res, reps, "send_gb_s", "broker_send", "GB/s");
        break;
    case BENCH_FANOUT:
        snprintf(res->label, sizeof(res->label), "fanout");
        res->count = BENCH_DEF_FANOUT;
        res->n = o->bench_subs ? (unsigned)o->bench_subs : BENCH_DEF_SUBS;
        r |= bench_fig(res, reps, "msg_s", "delivered", "msg/s");
        break;
    case BENCH_CLIENTS:
        snprintf(res->label, sizeof(res->label), "clients");
        res->count = BENCH_DEF_CLIENTS;
        res->n = o->bench_clients ? (unsigned)o->bench_clients
                                  : BENCH_DEF_NCLIENTS;
        res->procs = bench_procs(o, res->n);
        r |= bench_fig(res, reps, "rtt_s", "round trips", "rt/s");
        r |= bench_fig(res, reps, "rss_kib", "rss/client", "KiB");
        break;
    }
    if (o->count)
        res->count = (size_t)o->count;
    res->vias = 1u << BENCH_VIA_BROKER;
    if (o->bench_baseline && kind == BENCH_BULK)
        res->vias |= 1u << BENCH_VIA_PAIR;      /* the shared-memory floor */
    else if (o->bench_baseline && kind != BENCH_CLIENTS &&
             size <= BENCH_PAIR_MAX)
        res->vias |= 1u << BENCH_VIA_PAIR | 1u << BENCH_VIA_RELAY;
    return r ? -ENOMEM : 0;
}

static void bench_res_fini(bench_res_t *res)
{
    for (unsigned f = 0; f < res->nfig; f++)
        for (int v = 0; v < BENCH_VIAS; v++)
            free(res->fig[f].v[v]);
}

/* Median, min and max of the measured values (NAN if none). */
static void bench_stats(const double *v, unsigned n, double *med,
                        double *min, double *max)
{
    double s[n ? n : 1];
    unsigned k = 0;

    for (unsigned i = 0; i < n; i++)
        if (!isnan(v[i]))
            s[k++] = v[i];
    *med = *min = *max = NAN;
    if (k == 0)
        return;
    qsort(s, k, sizeof(*s), bench_cmp_dbl);
    *med = k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2.0;
    *min = s[0];
    *max = s[k - 1];
}

static double bench_median(const double *v, unsigned n)
{
    double med, min, max;

    bench_stats(v, n, &med, &min, &max);
    return med;
}

static double bench_ratio(double broker, double base)
{
    return isnan(broker) || isnan(base) || base == 0.0 ? NAN : broker / base;
}

/* ---- output ------------------------------------------------------------------ */

/* A figure in a table cell: three significant digits or more. */
static const char *bench_fmt(double v, char *buf, size_t len)
{
    if (isnan(v))
        snprintf(buf, len, "n/a");
    else if (fabs(v) >= 1000.0)
        snprintf(buf, len, "%.0f", v);
    else if (fabs(v) >= 100.0)
        snprintf(buf, len, "%.1f", v);
    else
        snprintf(buf, len, "%.2f", v);
    return buf;
}

static void bench_table_row(const bench_t *bt, const bench_res_t *res,
                            const bench_fig_t *f)
{
    char a[32], b[32], c[32], mm[72];
    double med, min, max;

    bench_stats(f->v[BENCH_VIA_BROKER], bt->reps, &med, &min, &max);
    snprintf(mm, sizeof(mm), "%s-%s", bench_fmt(min, a, sizeof(a)),
             bench_fmt(max, b, sizeof(b)));
    printf("%-11s %-12s %-6s %12s %21s", res->label, f->label, f->unit,
           bench_fmt(med, c, sizeof(c)), bt->reps > 1 ? mm : "-");
    for (int v = 1; bt->o->bench_baseline && v < BENCH_VIAS; v++) {
        double base = bench_median(f->v[v], bt->reps);
        if (res->vias & (1u << v))
            printf(" %12s %7sx", bench_fmt(base, a, sizeof(a)),
                   bench_fmt(bench_ratio(med, base), b, sizeof(b)));
        else
            printf(" %12s %8s", "-", "-");
    }
    putchar('\n');
}

static uint64_t bench_lost(const bench_res_t *res)
{
    return res->sent > res->received ? res->sent - res->received : 0;
}

static void bench_table(const bench_t *bt, const bench_res_t *res,
                        unsigned nres)
{
    bool legend = !bt->o->no_legend;

    if (legend) {
        printf("%-11s %-12s %-6s %12s %21s", "WORKLOAD", "FIGURE", "UNIT",
               "BROKERD", bt->reps > 1 ? "MIN-MAX" : "");
        if (bt->o->bench_baseline)
            printf(" %12s %8s %12s %8s", "PAIR", "RATIO", "RELAY", "RATIO");
        putchar('\n');
    }
    for (unsigned i = 0; i < nres; i++)
        for (unsigned f = 0; f < res[i].nfig; f++)
            bench_table_row(bt, &res[i], &res[i].fig[f]);
    putchar('\n');
    if (legend)
        printf("%-11s %10s %10s %12s %12s %8s %8s %6s\n", "WORKLOAD", "SIZE",
               "COUNT", "SENT", "RECEIVED", "BADSEQ", "LOST", "FAILED");
    for (unsigned i = 0; i < nres; i++)
        printf("%-11s %10zu %10zu %12" PRIu64 " %12" PRIu64 " %8" PRIu64
               " %8" PRIu64 " %6" PRIu64 "\n", res[i].label, res[i].size,
               res[i].count, res[i].sent, res[i].received, res[i].badseq,
               bench_lost(&res[i]), res[i].failed);
}

/* JSON: one flat object; keys are LABEL.FIELD, numbers raw. */
static void bench_json_num(bool *first, const char *label, const char *key,
                           const char *sub, double v, bool integer)
{
    if (isnan(v))
        return;
    printf("%s\"%s%s%s%s%s\":", *first ? "" : ",", label, *label ? "." : "",
           key, sub ? "." : "", sub ? sub : "");
    *first = false;
    if (integer)
        printf("%.0f", v);
    else
        printf("%.3f", v);
}

static void bench_json_fig(const bench_t *bt, const bench_res_t *res,
                           const bench_fig_t *f, bool *first)
{
    double med, min, max;

    bench_stats(f->v[BENCH_VIA_BROKER], bt->reps, &med, &min, &max);
    bench_json_num(first, res->label, f->key, NULL, med, false);
    bench_json_num(first, res->label, f->key, "min", min, false);
    bench_json_num(first, res->label, f->key, "max", max, false);
    for (int v = 1; v < BENCH_VIAS; v++) {
        char ratio[32];
        if (!(res->vias & (1u << v)))
            continue;
        double base = bench_median(f->v[v], bt->reps);
        snprintf(ratio, sizeof(ratio), "%s_ratio", bench_via_names[v]);
        bench_json_num(first, res->label, f->key, bench_via_names[v], base,
                       false);
        bench_json_num(first, res->label, f->key, ratio,
                       bench_ratio(med, base), false);
    }
}

static void bench_json(const bench_t *bt, const bench_res_t *res,
                       unsigned nres)
{
    bool first = false;

    printf("{\"socket\":");
    ctl_out_json_string(stdout, bt->sock);
    bench_json_num(&first, "", "broker_pid", NULL,
                   bt->broker_pid > 0 ? (double)bt->broker_pid : NAN, true);
    bench_json_num(&first, "", "reps", NULL, bt->reps, true);
    bench_json_num(&first, "", "batch", NULL, bt->batch, true);
    bench_json_num(&first, "", "baseline", NULL, bt->o->bench_baseline,
                   true);
    for (unsigned i = 0; i < nres; i++) {
        const bench_res_t *r = &res[i];
        bench_json_num(&first, r->label, "size", NULL, (double)r->size, true);
        bench_json_num(&first, r->label, "count", NULL, (double)r->count,
                       true);
        if (r->n)
            bench_json_num(&first, r->label, "n", NULL, r->n, true);
        if (r->procs)
            bench_json_num(&first, r->label, "procs", NULL, r->procs, true);
        bench_json_num(&first, r->label, "sent", NULL, (double)r->sent, true);
        bench_json_num(&first, r->label, "received", NULL,
                       (double)r->received, true);
        bench_json_num(&first, r->label, "badseq", NULL, (double)r->badseq,
                       true);
        bench_json_num(&first, r->label, "lost", NULL,
                       (double)bench_lost(r), true);
        bench_json_num(&first, r->label, "failed", NULL, (double)r->failed,
                       true);
        for (unsigned f = 0; f < r->nfig; f++)
            bench_json_fig(bt, r, &r->fig[f], &first);
    }
    printf("}\n");
}

/* ---- the command ------------------------------------------------------------ */

#define BENCH_MAX_RES 8

static const struct {
    const char *name;
    unsigned mask;
} bench_names[] = {
    { "pingpong", 1u << BENCH_PINGPONG },
    { "stream", 1u << BENCH_STREAM },
    { "bulk", 1u << BENCH_BULK },
    { "fanout", 1u << BENCH_FANOUT },
    { "clients", 1u << BENCH_CLIENTS },
    { "all", (1u << (BENCH_CLIENTS + 1)) - 1 },
};

/* The workloads named on the command line (none: all).  0 or -EINVAL
 * after the usage message. */
static int bench_select(const ctl_opts_t *o, unsigned *mask)
{
    *mask = o->nargs ? 0 : bench_names[5].mask;
    for (int i = 0; i < o->nargs; i++) {
        size_t k = 0;
        while (k < sizeof(bench_names) / sizeof(bench_names[0]) &&
               strcmp(bench_names[k].name, o->args[i]))
            k++;
        if (k == sizeof(bench_names) / sizeof(bench_names[0])) {
            ctl_usage_error("unknown bench workload '%s' (pingpong, stream, "
                            "bulk, fanout, clients or all)", o->args[i]);
            return -EINVAL;
        }
        *mask |= bench_names[k].mask;
    }
    return 0;
}

/* The workload instances of mask, in the order they run. */
static int bench_plan(const bench_t *bt, unsigned mask, bench_res_t *res,
                      unsigned *nres)
{
    size_t size = bt->o->bench_size;
    int r = 0;

    *nres = 0;
    if (mask & (1u << BENCH_PINGPONG))
        r |= bench_res_init(&res[(*nres)++], bt, BENCH_PINGPONG, BENCH_SMALL);
    if (mask & (1u << BENCH_STREAM)) {
        r |= bench_res_init(&res[(*nres)++], bt, BENCH_STREAM,
                            size ? size : BENCH_SMALL);
        if (!size)
            r |= bench_res_init(&res[(*nres)++], bt, BENCH_STREAM, 4096);
    }
    if (mask & (1u << BENCH_BULK))
        r |= bench_res_init(&res[(*nres)++], bt, BENCH_BULK,
                            size ? size : BENCH_BULK_DEF);
    if (mask & (1u << BENCH_FANOUT))
        r |= bench_res_init(&res[(*nres)++], bt, BENCH_FANOUT,
                            size ? size : BENCH_SMALL);
    if (mask & (1u << BENCH_CLIENTS))
        r |= bench_res_init(&res[(*nres)++], bt, BENCH_CLIENTS, BENCH_SMALL);
    return r ? -ENOMEM : 0;
}

/* brokerd's pid: STATUS's pid=, else the socket's peer. */
static pid_t bench_broker_pid(broker_t *b)
{
    char *text = NULL, *keys[CTL_REC_STATUS_MAX], *vals[CTL_REC_STATUS_MAX];
    struct ucred cr;
    socklen_t len = sizeof(cr);
    pid_t pid = 0;

    if (broker_status(b, &text) == 0) {
        size_t n = ctl_rec_status(text, keys, vals, CTL_REC_STATUS_MAX);
        for (size_t i = 0; i < n; i++)
            if (!strcmp(keys[i], "pid"))
                pid = (pid_t)ctl_rec_u64(vals[i]);
    }
    free(text);
    if (pid <= 0 && getsockopt(broker_fd(b), SOL_SOCKET, SO_PEERCRED, &cr,
                               &len) == 0)
        pid = cr.pid;
    return pid;
}

/* Check the broker, learn its pid and path; no connection stays open
 * (the children must not inherit one). */
static int bench_open(bench_t *bt)
{
    broker_t *b = ctl_connect(bt->o, bt->sock, sizeof(bt->sock));
    struct rlimit rl;

    if (!b)
        return -ECONNREFUSED;
    bt->broker_pid = bench_broker_pid(b);
    broker_close(b);
    /* pair and relay fan-outs hold four sockets per subscriber. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int ctl_run_bench(const ctl_opts_t *o)
{
    bench_t bt = { .o = o, .reps = o->bench_reps ? (unsigned)o->bench_reps
                                                 : 1 };
    bench_res_t res[BENCH_MAX_RES];
    unsigned mask, nres = 0;
    int rc = CTL_EXIT_OK;

    if (bench_select(o, &mask) < 0)
        return CTL_EXIT_USAGE;
    if (bench_open(&bt) < 0)
        return CTL_EXIT_RUNTIME;
    bt.tty = isatty(STDERR_FILENO);
    bt.batch = !o->bench_no_batch;
    if (bench_plan(&bt, mask, res, &nres) < 0) {
        ctl_err("bench: %s", broker_strerror(-ENOMEM));
        rc = CTL_EXIT_RUNTIME;
    }
    for (unsigned i = 0; i < nres && rc == CTL_EXIT_OK; i++)
        bench_measure(&bt, &res[i]);
    if (bt.tty)
        fputs("\r\033[K", stderr);
    if (rc == CTL_EXIT_OK && o->json)
        bench_json(&bt, res, nres);
    else if (rc == CTL_EXIT_OK)
        bench_table(&bt, res, nres);
    for (unsigned i = 0; i < nres; i++) {
        if (res[i].failed || res[i].badseq || bench_lost(&res[i]))
            rc = CTL_EXIT_RUNTIME;
        bench_res_fini(&res[i]);
    }
    if (rc == CTL_EXIT_RUNTIME)
        ctl_err("bench: a run failed, lost or reordered messages");
    return rc;
}
