/*
 * test_faults.c - the fault tests of issue 12 against a real brokerd,
 * beyond test_robust (garbage clients one at a time, a peer killed mid
 * stream), test_fault (allocation failures) and test_budgets (each budget
 * on its own):
 *
 *  - a hostile user mixing every kind of abuse while a well-behaved pair
 *    exchanges numbered messages;
 *  - brokerd at its RLIMIT_NOFILE: no busy loop, accept resumes;
 *  - clients killed with SIGKILL at each stage of a stream, a fan-out and
 *    a shared-memory transfer;
 *  - a client that sent itself its own connection, killed;
 *  - a client kept open by fds in flight in the broker, killed (reaped),
 *    and one whose forked child keeps its connection (not reaped);
 *  - reloads lowering every limit a reload can change, under traffic.
 *
 * After each, the broker's fds (/proc/PID/fd) and the counters of
 * `brokerctl status --json` and `brokerctl users --json` come back to
 * their baseline (polled, with the hang guard as the only bound).  Counts
 * scale with BROKER_TEST_SCALE (dev.sh test --valgrind).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

static th_broker_t br;

static broker_t *probe;

static void teardown(void)
{
    th_broker_cleanup(&br);
    broker_close(probe);
    probe = NULL;
}

TestSuite(faults, .fini = teardown, .timeout = 600);

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* brokerd runs under a checker (dev.sh test --valgrind). */
static bool wrapped(void)
{
    const char *w = getenv("BROKERD_WRAPPER");

    return w && *w;
}

/* ---- baselines ------------------------------------------------------------ */

/* What must come back once the clients of a scenario are gone: the
 * gauges of STATUS (not the totals), the LIST_USERS records of root and
 * of nobody, and brokerd's open fds. */
static const char *const status_keys[] = {
    "clients", "names", "streams", "queued_bytes", "shm_segments",
    "shm_bytes", "shm_held", "subscriptions", "groups", "users",
    "fds_in_flight", "monitors", NULL
};
static const char *const user_keys[] = {
    "connections", "fds", "streams", "names", "subs", "shm_segments",
    "shm_bytes", "shm_held", NULL
};

typedef struct snap {
    char text[1024];
} snap_t;

/* `probe`, a connection of the test's own from the baseline to the
 * check, makes the broker finish with the connections of the last
 * brokerctl before its fds are counted (two PINGs: two loop passes). */
static void settle(void)
{
    if (!probe)
        probe = th_connect(&br);
    for (int i = 0; i < 2; i++)
        TH_OK(broker_ping(probe, TH_HANG_MS));
}

static void snap_add(snap_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void snap_add(snap_t *s, const char *fmt, ...)
{
    size_t used = strlen(s->text);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->text + used, sizeof(s->text) - used, fmt, ap);
    va_end(ap);
}

/* `brokerctl ARGS --json` on br, parsed as an array (or one object). */
static char *ctl_json(const char *what)
{
    th_output_t o;
    int st = th_ctl(br.sock, &o, what, "--json", NULL);

    TH_CHECK(TH_EXITED(st, 0), "brokerctl %s --json: 0x%x %s", what, st,
             o.err);
    free(o.err);
    return o.out;
}

static void snap_user(snap_t *s, const th_json_obj_t *a, int n, uid_t uid)
{
    const th_json_obj_t *u = th_json_find(a, n, "uid", uid);

    snap_add(s, " uid%u:", (unsigned)uid);
    if (!u) {
        snap_add(s, "none");
        return;
    }
    for (int i = 0; user_keys[i]; i++)
        snap_add(s, " %s=%s", user_keys[i], th_json_str(u, user_keys[i]));
}

static void snap_take(snap_t *s)
{
    th_json_obj_t o, *a = NULL;
    char *text;
    int n;

    s->text[0] = '\0';
    /* Before brokerctl connects: its own connection is not counted. */
    settle();
    snap_add(s, "fds=%d", th_fd_count(br.pid));
    text = ctl_json("status");
    TH_CHECK(th_json_object(text, 0, &o) > 0, "status --json: %s", text);
    for (int i = 0; status_keys[i]; i++)
        snap_add(s, " %s=%llu", status_keys[i], th_json_u64(&o, status_keys[i]));
    th_json_obj_free(&o);
    free(text);
    text = ctl_json("users");
    n = th_json_array(text, TH_JSON_LISTS | TH_JSON_PLAIN, &a);
    TH_CHECK(n >= 0, "users --json: %s", text);
    snap_user(s, a, n, 0);
    snap_user(s, a, n, TH_NOBODY);
    th_json_array_free(a, n);
    free(text);
}

/* The baseline: two snapshots in a row that agree (the close of the last
 * brokerctl may still be on its way). */
static void baseline(snap_t *base)
{
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;
    snap_t again;

    snap_take(base);
    for (;;) {
        snap_take(&again);
        if (!strcmp(again.text, base->text))
            return;
        TH_CHECK(th_now_ms() < until, "no stable baseline: %s / %s",
                 base->text, again.text);
        *base = again;
        th_nap(&us);
    }
}

/* Poll until everything is back to `base`. */
static void await_baseline(const snap_t *base, const char *after)
{
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;
    snap_t now;

    for (;;) {
        snap_take(&now);
        if (!strcmp(now.text, base->text))
            break;
        if (th_now_ms() >= until) {
            th_broker_dump_log(&br);
            cr_assert_fail("after %s, not back to the baseline:\n"
                           "  now:  %s\n  base: %s", after, now.text,
                           base->text);
        }
        th_nap(&us);
    }
    cr_assert(th_broker_alive(&br), "brokerd died (%s)", after);
    broker_close(probe);
    probe = NULL;
}

/* Let "nobody" reach the broker's socket. */
static void open_socket(void)
{
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
}

/* ---- a well-behaved pair ---------------------------------------------------- */

/* tx opens a stream to rx and sends numbered messages on it (under a
 * packet, a packet, and fragmented: a stream keeps their order whatever
 * their size) until told to stop and at least `min` have gone, then an
 * end marker with the count, and closes the stream; rx checks every
 * byte, the order and the count.  Each runs in its own process. */
#define PAIR_END UINT64_MAX

typedef struct pair {
    const char *name;
    size_t min;
    th_barrier_t rx_ready;      /* rx -> test */
    th_barrier_t tx_id;         /* tx -> rx: tx's client id */
    th_barrier_t tx_ready;      /* tx -> test: its stream is open */
    th_barrier_t rx_done;       /* rx -> test: messages received */
    int stop[2];                /* test -> tx: a byte means stop */
    volatile uint64_t *sent;    /* tx's progress (shared memory) */
    pid_t rx, tx;
} pair_t;

static size_t pair_len(uint64_t seq)
{
    static const size_t lens[] = { 16, 700, 5000, 150000, 40, 65536 };

    return lens[seq % (sizeof(lens) / sizeof(lens[0]))];
}

static int pair_rx(void *p)
{
    pair_t *a = p;
    broker_t *b = th_connect(&br);
    uint64_t expect = 0, tx;

    /* Hostile first fragments may arrive by the thousand: keep room for
     * them beside the pair's own (the broker's limits are under test). */
    TH_OK(broker_set_option(b, BROKER_OPT_MAX_PARTIAL, 16384));
    th_register(b, a->name);
    th_barrier_signal(&a->rx_ready, broker_client_id(b));
    tx = th_barrier_wait(&a->tx_id);
    for (;;) {
        broker_msg_t *m = th_recv(b);
        uint64_t seq;

        if (m->source != tx) {
            broker_msg_free(m); /* a hostile client's leftovers */
            continue;
        }
        TH_CHECK(m->kind == BROKER_MSG_DATA, "pair: %s (code %d) after "
                 "%llu messages", th_kind_str(m->kind), m->code,
                 (unsigned long long)expect);
        TH_CHECK(m->len >= 8, "pair: short message %zu", m->len);
        memcpy(&seq, m->data, 8);
        if (seq == PAIR_END) {
            uint64_t count;
            TH_CHECK(m->len == 16, "end marker of %zu bytes", m->len);
            memcpy(&count, (uint8_t *)m->data + 8, 8);
            TH_CHECK(count == expect, "pair: %llu sent, %llu received",
                     (unsigned long long)count,
                     (unsigned long long)expect);
            broker_msg_free(m);
            m = th_recv(b);
            TH_CHECK(m->kind == BROKER_MSG_CLOSE && m->code == 0,
                     "pair: %s (code %d) after the end marker",
                     th_kind_str(m->kind), m->code);
            broker_msg_free(m);
            break;
        }
        TH_CHECK(seq == expect, "pair: message %llu where %llu was due",
                 (unsigned long long)seq, (unsigned long long)expect);
        TH_CHECK(m->len == pair_len(seq), "pair: message %llu has %zu "
                 "bytes, not %zu", (unsigned long long)seq, m->len,
                 pair_len(seq));
        long bad = th_pattern_check((uint8_t *)m->data + 8, m->len - 8,
                                    seq, 0);
        TH_CHECK(bad < 0, "pair: message %llu differs at byte %ld",
                 (unsigned long long)seq, bad + 8);
        expect++;
        broker_msg_free(m);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->rx_done, expect);
    broker_close(b);
    return 0;
}

static bool stop_asked(int fd)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };

    return poll(&pf, 1, 0) == 1;
}

static int pair_tx(void *p)
{
    pair_t *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *buf = malloc(150000);
    uint64_t seq = 0, end[2] = { PAIR_END, 0 };
    broker_msg_t *m;
    uint32_t sid;

    TH_CHECK(buf != NULL, "oom");
    /* the socket path: the broker's queues and flow control */
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_barrier_signal(&a->tx_id, broker_client_id(b));
    TH_OK(broker_stream_open(b, a->name, 0, &sid));
    th_barrier_signal(&a->tx_ready, 0);
    while (seq < a->min || !stop_asked(a->stop[0])) {
        size_t len = pair_len(seq);
        memcpy(buf, &seq, 8);
        th_pattern(buf + 8, len - 8, seq, 0);
        int r = broker_stream_write(b, sid, buf, len, NULL, 0);
        TH_CHECK(r == 0, "pair: message %llu: %s", (unsigned long long)seq,
                 broker_strerror(r));
        *a->sent = ++seq;
    }
    end[1] = seq;
    TH_OK(broker_stream_write(b, sid, end, sizeof(end), NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    /* No message of ours was refused or lost on the way. */
    int r = broker_recv(b, &m, 0);
    TH_CHECK(r == -ETIMEDOUT, "pair: the sender got %s (code %d)",
             r == 0 ? th_kind_str(m->kind) : broker_strerror(r),
             r == 0 ? m->code : 0);
    TH_OK(broker_stream_close(b, sid));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(buf);
    broker_close(b);
    return 0;
}

/* Start rx, then tx, and return rx's client id once both are connected
 * (so that a lower max-clients cannot refuse them). */
static uint64_t pair_start(pair_t *a, const char *name, size_t min)
{
    a->name = name;
    a->min = min;
    th_barrier_init(&a->rx_ready);
    th_barrier_init(&a->tx_id);
    th_barrier_init(&a->tx_ready);
    th_barrier_init(&a->rx_done);
    cr_assert_eq(pipe2(a->stop, O_CLOEXEC), 0);
    a->sent = mmap(NULL, sizeof(*a->sent), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)a->sent, MAP_FAILED);
    *a->sent = 0;
    a->rx = th_spawn(pair_rx, a);
    uint64_t id = th_barrier_wait(&a->rx_ready);
    a->tx = th_spawn(pair_tx, a);
    th_barrier_wait(&a->tx_ready);
    return id;
}

/* Tell tx to finish and check the pair's verdict; returns the count. */
static uint64_t pair_finish(pair_t *a)
{
    cr_assert_eq(write(a->stop[1], "s", 1), 1);
    uint64_t n = th_barrier_wait(&a->rx_done);
    th_join(a->tx);
    th_join(a->rx);
    cr_assert_geq(n, a->min, "the pair exchanged %llu messages",
                  (unsigned long long)n);
    close(a->stop[0]);
    close(a->stop[1]);
    munmap((void *)a->sent, sizeof(*a->sent));
    th_barrier_fini(&a->rx_ready);
    th_barrier_fini(&a->tx_id);
    th_barrier_fini(&a->tx_ready);
    th_barrier_fini(&a->rx_done);
    return n;
}

/* ---- raw frames ------------------------------------------------------------ */

static bk_hdr_t data_hdr(uint64_t dest, uint32_t sid, uint8_t flags,
                         uint32_t len)
{
    return (bk_hdr_t){ .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .flags = flags, .length = len, .stream = sid,
                       .dest = dest };
}

/* The broker must close this connection: read to EOF. */
static void expect_disconnect(int fd, const char *what)
{
    uint32_t aux;
    int nerr;

    TH_CHECK(th_raw_drain_to_eof(fd, &aux, &nerr) >= 0,
             "%s: not disconnected", what);
    close(fd);
}

/* ---- 1. a hostile user beside a well-behaved pair ------------------------- */

struct hostile_arg {
    uint64_t rx;                /* the pair's receiver */
    unsigned rounds;
    unsigned unfinished;        /* first fragments per round */
    unsigned storm;             /* connections per round */
    bool as_nobody;
};

/* Protocol violations, each on a connection of its own. */
static void hostile_garbage(unsigned round, uint64_t rx)
{
    static uint8_t big[BK_DEF_MAX_PACKET + 4096];
    uint8_t pkt[BK_HDR_SIZE];
    bk_hdr_t h;
    int fd, p[2];

    fd = th_raw_connect(br.sock);
    th_raw_send_garbage(fd, round * 2);
    expect_disconnect(fd, "random bytes before HELLO");

    fd = th_raw_connect_hello(br.sock, NULL);
    th_raw_send_garbage(fd, round * 2 + 1);
    expect_disconnect(fd, "random bytes after HELLO");

    fd = th_raw_connect_hello(br.sock, NULL);
    h = data_hdr(rx, 1, BK_F_OPEN | BK_F_CLOSE, 0);
    bk_hdr_encode(&h, pkt);
    (void)th_raw_send_bytes(fd, pkt, BK_HDR_SIZE - 5, NULL, 0);
    expect_disconnect(fd, "truncated header");

    fd = th_raw_connect_hello(br.sock, NULL);
    h = data_hdr(rx, 1, BK_F_OPEN | BK_F_CLOSE, 100);
    bk_hdr_encode(&h, big);
    (void)th_raw_send_bytes(fd, big, BK_HDR_SIZE + 10, NULL, 0);
    expect_disconnect(fd, "length beyond the packet");

    fd = th_raw_connect_hello(br.sock, NULL);
    h = data_hdr(rx, 1, BK_F_OPEN | BK_F_CLOSE,
                 (uint32_t)(sizeof(big) - BK_HDR_SIZE));
    bk_hdr_encode(&h, big);
    (void)th_raw_send_bytes(fd, big, sizeof(big), NULL, 0);
    expect_disconnect(fd, "oversized packet");

    /* Bad fds: more announced than sent, and sent but not announced. */
    TH_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");
    fd = th_raw_connect_hello(br.sock, NULL);
    h = data_hdr(rx, 1, BK_F_OPEN | BK_F_CLOSE, 2);
    h.nfds = 5;
    (void)th_raw_send(fd, &h, "hi", &p[1], 1);
    expect_disconnect(fd, "nfds more than sent");
    fd = th_raw_connect_hello(br.sock, NULL);
    h.nfds = 0;
    (void)th_raw_send(fd, &h, "hi", &p[1], 1);
    expect_disconnect(fd, "fds without nfds");
    close(p[0]);
    close(p[1]);
}

/* 253 fds in one packet (four messages of 63, 63, 63 and 64) towards a
 * sink of our own that never reads, then `n` unfinished first fragments
 * towards the pair's receiver, packed 64 to a packet.  Nothing is read:
 * what the broker answers must stay bounded. */
static void hostile_flood(uint64_t rx, unsigned n)
{
    static uint8_t buf[64 * (BK_HDR_SIZE + 8)];
    int fds[BK_MAX_FDS_HARD], devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    bk_welcome_t w;
    int sink = th_raw_connect_hello(br.sock, &w);
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint32_t sid = 1;
    size_t len = 0;

    TH_CHECK(devnull >= 0, "/dev/null");
    for (unsigned i = 0; i < 4; i++) {
        bk_hdr_t h = data_hdr(w.client_id, sid++, BK_F_OPEN | BK_F_CLOSE, 8);
        h.nfds = i < 3 ? 63 : 64;
        bk_hdr_encode(&h, buf + len);
        memcpy(buf + len + BK_HDR_SIZE, "fd flood", 8);
        len += BK_HDR_SIZE + 8;
    }
    for (unsigned i = 0; i < BK_MAX_FDS_HARD; i++)
        fds[i] = devnull;
    TH_OK(th_raw_send_bytes(fd, buf, len, fds, BK_MAX_FDS_HARD));
    close(devnull);

    for (unsigned done = 0; done < n;) {
        len = 0;
        for (unsigned k = 0; k < 64 && done < n; k++, done++) {
            bk_hdr_t h = data_hdr(rx, sid++, BK_F_OPEN | BK_F_MORE, 8);
            bk_hdr_encode(&h, buf + len);
            memcpy(buf + len + BK_HDR_SIZE, "unfinish", 8);
            len += BK_HDR_SIZE + 8;
        }
        if (th_raw_send_bytes(fd, buf, len, NULL, 0) < 0)
            break;              /* disconnected for persistent abuse */
    }
    close(fd);
    close(sink);
}

/* Connect and leave at every stage, raw and through libbroker. */
static void hostile_storm(unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        int fd;
        switch (i % 4) {
        case 0:
            close(th_raw_connect(br.sock));
            break;
        case 1:
            fd = th_raw_connect(br.sock);
            bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_HELLO,
                           .length = 4 };
            uint8_t pl[4];
            bk_put32(pl, BK_PROTO_VERSION);
            (void)th_raw_send(fd, &h, pl, NULL, 0);
            close(fd);
            break;
        case 2:
            close(th_raw_connect_hello(br.sock, NULL));
            break;
        default:
            broker_close(th_connect(&br));
            break;
        }
    }
}

static int hostile(void *p)
{
    struct hostile_arg *a = p;

    if (a->as_nobody)
        TH_CHECK(th_become_nobody(), "cannot become nobody");
    for (unsigned r = 0; r < a->rounds; r++) {
        hostile_garbage(r, a->rx);
        hostile_flood(a->rx, a->unfinished);
        hostile_storm(a->storm);
    }
    return 0;
}

Test(faults, hostile_mix_beside_a_pair)
{
    struct hostile_arg h = { .rounds = (unsigned)th_scaled(6, 2),
                             .unfinished = (unsigned)th_scaled(1500, 300),
                             .storm = (unsigned)th_scaled(200, 20),
                             .as_nobody = geteuid() == 0 };
    pair_t pair;
    snap_t base;

    th_broker_start(&br, NULL);
    if (h.as_nobody)
        open_socket();
    baseline(&base);
    h.rx = pair_start(&pair, "pair.hostile", th_scaled(2000, 200));
    pid_t pid = th_spawn(hostile, &h);
    th_join(pid);
    pair_finish(&pair);
    await_baseline(&base, "the hostile mix");
    th_broker_stop(&br);
}

/* ---- 2. brokerd at its RLIMIT_NOFILE ---------------------------------------- */

#define NOFILE_LIMIT 96

/* Connect and say HELLO.  Returns the fd once WELCOMEd, or the negative
 * errno the broker refused it with (-ECONNRESET for a bare close). */
static int try_hello(const char *sock)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    uint8_t pl[4];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_HELLO,
                   .length = 4 };
    const uint8_t *payload;
    size_t off = 0;
    int fd = bk_sock_connect(sock);

    if (fd < 0)
        return fd;
    bk_put32(pl, BK_PROTO_VERSION);
    /* A refused connection may be closed already: its ERROR is there to
     * read all the same. */
    (void)th_raw_send(fd, &h, pl, NULL, 0);
    ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
    if (n == -ECONNRESET)       /* our unread HELLO; the ERROR follows */
        n = th_raw_recv(fd, pkt, sizeof(pkt));
    if (n > 0 && bk_pkt_next(pkt, (size_t)n, &off, &h, &payload) == 1) {
        if (h.type == BK_T_WELCOME)
            return fd;
        close(fd);
        return h.type == BK_T_ERROR ? -(int)h.aux : -EPROTO;
    }
    close(fd);
    return n < 0 && n != -ETIMEDOUT ? (int)n : -ECONNRESET;
}

/* utime + stime of a process, in clock ticks. */
static long cpu_ticks(pid_t pid)
{
    char path[64], *text, *p;
    unsigned long ut = 0, st = 0;
    size_t len;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    text = th_read_file(path, &len);
    p = strrchr(text, ')');     /* comm may hold spaces */
    TH_CHECK(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                         "%*u %lu %lu", &ut, &st) == 2,
             "cannot parse %s", path);
    free(text);
    return (long)(ut + st);
}

/* Start br's brokerd with RLIMIT_NOFILE n (soft and hard: it raises the
 * soft limit to the hard one), through prlimit(1) before any wrapper. */
static void start_with_nofile(unsigned n, const char *const *args)
{
    const char *old = getenv("BROKERD_WRAPPER");
    char *keep = old ? strdup(old) : NULL;
    char wrapper[512];

    snprintf(wrapper, sizeof(wrapper), "prlimit --nofile=%u:%u%s%s", n, n,
             keep ? " " : "", keep ? keep : "");
    cr_assert_eq(setenv("BROKERD_WRAPPER", wrapper, 1), 0);
    th_broker_startv(&br, args);
    if (keep)
        setenv("BROKERD_WRAPPER", keep, 1);
    else
        unsetenv("BROKERD_WRAPPER");
    free(keep);
}

Test(faults, accept_resumes_at_the_fd_limit)
{
    const char *const args[] = { "--fd-reserve", "4",
                                 "--handshake-timeout", "600000", NULL };
    int fds[NOFILE_LIMIT + 16], n = 0, r;

    if (access("/usr/bin/prlimit", X_OK) && access("/bin/prlimit", X_OK))
        cr_skip_test("needs prlimit(1) to start brokerd with a low limit");
    start_with_nofile(NOFILE_LIMIT, args);
    int fd0 = th_fd_count(br.pid);

    /* Fill it with connections until it refuses one. */
    while ((r = try_hello(br.sock)) >= 0) {
        cr_assert_lt(n, NOFILE_LIMIT + 16, "%d connections with a limit of "
                     "%d fds", n, NOFILE_LIMIT);
        fds[n++] = r;
    }
    /* Under valgrind, whose own fds lie between brokerd's limit and the
     * kernel's, accept4 succeeds and valgrind closes the connection
     * without a word before brokerd sees EMFILE. */
    cr_assert(r == -EMFILE || (wrapped() && r == -ECONNRESET),
              "refused with %d (%s) after %d connections, want EMFILE", r,
              strerror(-r), n);
    cr_assert_gt(n, NOFILE_LIMIT / 2, "only %d connections", n);
    cr_assert(th_broker_alive(&br));

    /* Waiting at the limit, with a connection knocking now and then, costs
     * next to no CPU: no busy loop on EMFILE.  A bug detector, not a
     * timing assertion: the bound is a quarter of the wall time. */
    if (!wrapped()) {
        long hz = sysconf(_SC_CLK_TCK), t0 = cpu_ticks(br.pid);
        for (int i = 0; i < 4; i++) {
            r = try_hello(br.sock);
            cr_assert_eq(r, -EMFILE, "at the limit: %d (%s)", r,
                         strerror(-r));
            usleep(500 * 1000);
        }
        long used = cpu_ticks(br.pid) - t0;
        cr_assert_lt(used, hz / 2, "brokerd used %ld of %ld ticks/s in 2 s "
                     "at its fd limit", used, hz);
    }

    /* Free some fds: accept resumes and the newcomer works. */
    for (int i = 0; i < 8; i++)
        close(fds[--n]);
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;
    while ((r = try_hello(br.sock)) < 0) {
        cr_assert_lt(th_now_ms(), until, "no connection got in after fds "
                     "were freed: %s", strerror(-r));
        th_nap(&us);
    }
    close(r);
    broker_t *b = th_connect(&br), *c = th_connect(&br);
    broker_msg_t *m;
    th_register(c, "svc.after.limit");
    cr_assert_eq(broker_send(b, "svc.after.limit", "in", 2, NULL, 0), 0);
    m = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 2);
    cr_assert_arr_eq(m->data, "in", 2);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    broker_close(c);
    while (n > 0)
        close(fds[--n]);
    until = th_now_ms() + TH_HANG_MS;
    /* fd0 may count the connection th_wait_listening probed with, if
     * brokerd had not seen it go yet: back to fd0 or below. */
    while (th_fd_count(br.pid) > fd0) {
        cr_assert_lt(th_now_ms(), until, "brokerd holds %d fds, %d at "
                     "start", th_fd_count(br.pid), fd0);
        th_nap(&us);
    }
    th_broker_stop(&br);
}

/* ---- 3. SIGKILL at every stage ----------------------------------------------- */

/* A victim runs `stage` in a child, which signals `at` when it has
 * reached the point where it is to die, then waits for SIGKILL. */
struct victim {
    th_barrier_t at;
    uint64_t peer;              /* the surviving side's client id */
    size_t len;
    const char *name;
};

static void kill_victim(pid_t pid)
{
    kill(pid, SIGKILL);
    cr_assert(WIFSIGNALED(th_join_status(pid)), "the victim was not killed");
}

/* An ERROR event with ECONNRESET on `stream` (0: any) is next on b. */
static void expect_reset(broker_t *b, uint32_t stream, const char *when)
{
    broker_msg_t *m = th_recv(b);

    cr_assert_eq(m->kind, BROKER_MSG_ERROR, "%s: got %s of %zu bytes", when,
                 th_kind_str(m->kind), m->len);
    cr_assert_eq(m->code, -ECONNRESET, "%s: code %d", when, m->code);
    if (stream)
        cr_assert_eq(m->stream, stream, "%s: ERROR on stream 0x%x, not "
                     "0x%x", when, m->stream, stream);
    broker_msg_free(m);
}

/* Every one of subs[0..n) gets an ERROR ECONNRESET next.  They are read
 * side by side: BLOCK subscriptions hold their publisher back together,
 * so the broker may reach the end of a dead publisher's data (and send
 * the resets) only once all of them have taken what was queued. */
static void expect_resets(broker_t **subs, int n, const char *when)
{
    bool done[n];
    int left = n;
    unsigned us = 500;

    memset(done, 0, sizeof(done));
    uint64_t until = th_now_ms() + TH_HANG_MS;
    while (left > 0) {
        bool any = false;
        for (int i = 0; i < n; i++) {
            broker_msg_t *m;
            if (done[i] || broker_recv(subs[i], &m, 0) != 0)
                continue;
            cr_assert_eq(m->kind, BROKER_MSG_ERROR, "%s: subscriber %d got "
                         "%s of %zu bytes", when, i, th_kind_str(m->kind),
                         m->len);
            cr_assert_eq(m->code, -ECONNRESET, "%s: subscriber %d: code %d",
                         when, i, m->code);
            broker_msg_free(m);
            done[i] = true;
            left--;
            any = true;
        }
        if (any)
            us = 500;
        else {
            cr_assert_lt(th_now_ms(), until, "%s: %d subscribers got no "
                         "reset", when, left);
            th_nap(&us);
        }
    }
}

static void expect_nothing(broker_t *b, const char *when)
{
    broker_msg_t *m;

    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0, "%s", when);
    int r = broker_recv(b, &m, 0);
    cr_assert_eq(r, -ETIMEDOUT, "%s: then %s", when,
                 r == 0 ? th_kind_str(m->kind) : broker_strerror(r));
}

static _Noreturn void await_kill(struct victim *v)
{
    th_barrier_signal(&v->at, 0);
    for (;;)
        pause();
}

/* Opened a stream with its first (whole) message. */
static int stage_after_open(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint32_t sid;

    TH_OK(broker_stream_open(b, v->name, 0, &sid));
    TH_OK(broker_stream_write(b, sid, "open", 4, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    await_kill(v);
}

/* Sent two fragments of a message, not its last one. */
static int stage_mid_fragments(void *p)
{
    struct victim *v = p;
    static uint8_t frag[4000];
    int fd = th_raw_connect_hello(br.sock, NULL);
    bk_hdr_t h = data_hdr(v->peer, 5, BK_F_OPEN | BK_F_MORE, sizeof(frag));

    TH_OK(th_raw_send(fd, &h, frag, NULL, 0));
    h.flags = BK_F_CONT | BK_F_MORE;
    TH_OK(th_raw_send(fd, &h, frag, NULL, 0));
    await_kill(v);
}

/* Sent a whole request of many fragments on a stream; waits for the
 * reply that it will not live to read. */
static int stage_before_reply(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint8_t *req = malloc(v->len);
    uint32_t sid;

    TH_CHECK(req != NULL, "oom");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_pattern(req, v->len, 77, 0);
    TH_OK(broker_stream_open(b, v->name, 0, &sid));
    TH_OK(broker_stream_write(b, sid, req, v->len, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    await_kill(v);
}

/* The service of the last stage: replies with a message far larger than
 * the broker queues towards one client, to a client that stops reading,
 * and must learn that it died. */
struct replier {
    th_barrier_t ready;         /* replier -> test: its client id */
    th_barrier_t replying;      /* replier -> test */
    size_t len;
};

static int replier(void *p)
{
    struct replier *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *rep = malloc(a->len);
    broker_msg_t *m;

    TH_CHECK(rep != NULL, "oom");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_register(b, "svc.kill.replier");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv_kind(b, BROKER_MSG_DATA);
    uint32_t sid = m->stream;
    broker_msg_free(m);
    th_pattern(rep, a->len, 3, 0);
    th_barrier_signal(&a->replying, 0);
    int r = broker_stream_write(b, sid, rep, a->len, NULL, 0);
    TH_CHECK(r == 0 || r == -ECONNRESET, "reply: %s", broker_strerror(r));
    if (r == 0) {
        /* Written before the broker saw the death: the ERROR follows. */
        m = th_recv(b);
        TH_CHECK(m->kind == BROKER_MSG_ERROR && m->code == -ECONNRESET &&
                 m->stream == sid, "after the reply: %s code %d",
                 th_kind_str(m->kind), m->code);
        broker_msg_free(m);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(rep);
    broker_close(b);
    return 0;
}

/* Asks the replier and never reads again. */
static int stage_while_replying(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint32_t sid;

    TH_OK(broker_stream_open(b, "svc.kill.replier", 0, &sid));
    TH_OK(broker_stream_write(b, sid, "ask", 3, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    await_kill(v);
}

/* Until STATUS says the broker queues at least `bytes` somewhere. */
static void await_queued(broker_t *obs, uint64_t bytes)
{
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    while (th_status_value(obs, "queued_bytes") < bytes) {
        cr_assert_lt(th_now_ms(), until, "the broker never queued %llu "
                     "bytes", (unsigned long long)bytes);
        th_nap(&us);
    }
}

static pid_t spawn_victim(th_fn stage, struct victim *v)
{
    th_barrier_init(&v->at);
    pid_t pid = th_spawn(stage, v);
    th_barrier_wait(&v->at);
    return pid;
}

Test(faults, killed_at_every_stage_of_a_stream)
{
    broker_t *svc, *obs;
    broker_msg_t *m;
    snap_t base;
    pid_t pid;

    th_broker_start(&br, NULL);
    baseline(&base);
    svc = th_connect(&br);
    obs = th_connect(&br);
    th_register(svc, "svc.kill.stream");
    struct victim v = { .peer = broker_client_id(svc),
                        .name = "svc.kill.stream",
                        .len = th_scaled(1 * MIB, 200 * KIB) + 13 };

    /* After OPEN: the service's side of the stream is reset. */
    pid = spawn_victim(stage_after_open, &v);
    m = th_recv_kind(svc, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_OPEN);
    uint32_t sid = m->stream;
    broker_msg_free(m);
    kill_victim(pid);
    expect_reset(svc, sid, "killed after OPEN");
    cr_assert_lt(broker_stream_write(svc, sid, "late", 4, NULL, 0), 0);
    expect_nothing(svc, "killed after OPEN");
    th_barrier_fini(&v.at);

    /* Mid fragments: the partial message is dropped with the ERROR. */
    pid = spawn_victim(stage_mid_fragments, &v);
    kill_victim(pid);
    expect_reset(svc, 0, "killed mid fragments");
    expect_nothing(svc, "killed mid fragments");
    th_barrier_fini(&v.at);

    /* After the last fragment, before the reply: the request is whole,
     * the reply finds the stream reset. */
    pid = spawn_victim(stage_before_reply, &v);
    m = th_recv_kind(svc, BROKER_MSG_DATA);
    cr_assert_eq(m->len, v.len);
    cr_assert_lt(th_pattern_check(m->data, m->len, 77, 0), 0);
    sid = m->stream;
    kill_victim(pid);
    expect_reset(svc, sid, "killed before the reply");
    cr_assert_lt(broker_reply(svc, m, "late", 4, NULL, 0), 0);
    broker_msg_free(m);
    expect_nothing(svc, "killed before the reply");
    th_barrier_fini(&v.at);

    /* While its peer is replying: the replier's write ends with the
     * reset instead of waiting for a reader that is gone. */
    struct replier rp = { .len = th_scaled(32 * MIB, 8 * MIB) };
    th_barrier_init(&rp.ready);
    th_barrier_init(&rp.replying);
    pid_t rpid = th_spawn(replier, &rp);
    th_barrier_wait(&rp.ready);
    pid = spawn_victim(stage_while_replying, &v);
    th_barrier_wait(&rp.replying);
    await_queued(obs, 1 * MIB);
    kill_victim(pid);
    th_join(rpid);
    th_barrier_fini(&v.at);
    th_barrier_fini(&rp.ready);
    th_barrier_fini(&rp.replying);

    cr_assert_eq(broker_ping(svc, TH_HANG_MS), 0);
    broker_close(svc);
    broker_close(obs);
    await_baseline(&base, "the killed stream clients");
    th_broker_stop(&br);
}

/* A publisher stopped by its slow (blocking) subscribers in the middle
 * of one large publication. */
static int stage_mid_publication(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = malloc(v->len);

    TH_CHECK(data != NULL, "oom");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_pattern(data, v->len, 11, 0);
    th_barrier_signal(&v->at, 0);
    (void)broker_publish(b, "fan.kill.big", data, v->len, NULL, 0);
    TH_CHECK(false, "the publication completed to subscribers that do not "
             "read");
}

/* A subscriber that blocks its publisher and never reads. */
static int stage_slow_subscriber(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint32_t id;

    TH_OK(broker_subscribe(b, "fan.kill.>", NULL, BROKER_SUB_BLOCK, &id));
    TH_OK(broker_ping(b, TH_HANG_MS));
    await_kill(v);
}

/* Reads `count` numbered publications, in order and intact: every
 * other one is fragmented. */
struct reader {
    th_barrier_t ready;
    size_t count;
};

static size_t pub_len(uint64_t i)
{
    return i % 2 ? 100 * KIB + 17 : 8 * KIB;
}

static int pub_reader(void *p)
{
    struct reader *a = p;
    broker_t *b = th_connect(&br);
    uint32_t id;

    TH_OK(broker_subscribe(b, "fan.kill.>", NULL, BROKER_SUB_BLOCK, &id));
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->ready, 0);
    for (uint64_t i = 0; i < a->count; i++) {
        broker_msg_t *m = th_recv(b);
        TH_CHECK(m->kind == BROKER_MSG_DATA, "publication %llu: %s (%d)",
                 (unsigned long long)i, th_kind_str(m->kind), m->code);
        TH_CHECK(m->len == pub_len(i), "publication %llu: %zu bytes",
                 (unsigned long long)i, m->len);
        TH_CHECK(th_pattern_check(m->data, m->len, i, 0) < 0,
                 "publication %llu differs", (unsigned long long)i);
        broker_msg_free(m);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

static int numbered_publisher(void *p)
{
    struct reader *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = malloc(pub_len(1));

    TH_CHECK(data != NULL, "oom");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    for (uint64_t i = 0; i < a->count; i++) {
        th_pattern(data, pub_len(i), i, 0);
        TH_OK(broker_publish(b, "fan.kill.n", data, pub_len(i), NULL, 0));
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(data);
    broker_close(b);
    return 0;
}

Test(faults, killed_in_a_fan_out)
{
    enum { NSUB = 3 };
    broker_t *sub[NSUB], *pub, *obs;
    uint32_t id;
    snap_t base;
    pid_t pid;

    th_broker_start(&br, NULL);
    baseline(&base);
    obs = th_connect(&br);
    pub = th_connect(&br);

    /* The publisher dies mid publication: every subscriber gets the
     * reset, none a part of the message; the next publication arrives. */
    for (int i = 0; i < NSUB; i++) {
        sub[i] = th_connect(&br);
        cr_assert_eq(broker_subscribe(sub[i], "fan.kill.>", NULL,
                                      BROKER_SUB_BLOCK, &id), 0);
        cr_assert_eq(broker_ping(sub[i], TH_HANG_MS), 0);
    }
    struct victim v = { .len = th_scaled(48 * MIB, 16 * MIB) };
    pid = spawn_victim(stage_mid_publication, &v);
    await_queued(obs, 2 * MIB);
    kill_victim(pid);
    th_barrier_fini(&v.at);
    expect_resets(sub, NSUB, "publisher killed mid publication");
    cr_assert_eq(broker_publish(pub, "fan.kill.after", "next", 4, NULL, 0),
                 0);
    for (int i = 0; i < NSUB; i++) {
        broker_msg_t *m = th_recv_kind(sub[i], BROKER_MSG_DATA);
        cr_assert_str_eq(m->topic, "fan.kill.after");
        cr_assert_eq(m->len, 4);
        cr_assert_arr_eq(m->data, "next", 4);
        broker_msg_free(m);
        expect_nothing(sub[i], "after the publisher's death");
        broker_close(sub[i]);
    }

    /* A subscriber dies mid delivery: the publisher goes on, the others
     * get every publication in order. */
    struct reader rd = { .count = th_scaled(600, 200) };
    pid_t readers[2], publisher;
    th_barrier_init(&rd.ready);
    for (int i = 0; i < 2; i++) {
        readers[i] = th_spawn(pub_reader, &rd);
        th_barrier_wait(&rd.ready);
    }
    pid = spawn_victim(stage_slow_subscriber, &v);
    publisher = th_spawn(numbered_publisher, &rd);
    await_queued(obs, 1 * MIB);
    kill_victim(pid);
    th_join(publisher);
    th_join(readers[0]);
    th_join(readers[1]);
    th_barrier_fini(&v.at);
    th_barrier_fini(&rd.ready);

    cr_assert_eq(broker_ping(pub, TH_HANG_MS), 0);
    broker_close(pub);
    broker_close(obs);
    await_baseline(&base, "the killed fan-out clients");
    th_broker_stop(&br);
}

/* Publishes one buffer through shared memory and waits to be killed. */
static int stage_shm_owner(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = malloc(v->len);

    TH_CHECK(data != NULL, "oom");
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 4096));
    th_pattern(data, v->len, 21, 0);
    TH_OK(broker_publish(b, "shm.kill.owner", data, v->len, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(data);
    await_kill(v);
}

/* Receives one shared-memory publication, holds it, waits to be killed. */
static int stage_shm_holder(void *p)
{
    struct victim *v = p;
    broker_t *b = th_connect(&br);
    uint32_t id;

    TH_OK(broker_subscribe(b, "shm.kill.>", NULL, BROKER_SUB_BLOCK, &id));
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&v->at, 0);
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
    TH_CHECK(m->flags & BROKER_MSGF_SHM, "not through shared memory");
    TH_CHECK(th_pattern_check(m->data, m->len, 22, 0) < 0, "bytes differ");
    await_kill(v);              /* holding m */
}

static void subscribe_all(broker_t **s, int n, const char *pattern)
{
    uint32_t id;

    for (int i = 0; i < n; i++) {
        s[i] = th_connect(&br);
        cr_assert_eq(broker_subscribe(s[i], pattern, NULL, BROKER_SUB_BLOCK,
                                      &id), 0);
        cr_assert_eq(broker_ping(s[i], TH_HANG_MS), 0);
    }
}

Test(faults, killed_in_a_shared_memory_transfer)
{
    enum { NRX = 3 };
    broker_t *rx[NRX], *obs;
    broker_msg_t *m[NRX];
    snap_t base;
    pid_t pid;

    th_broker_start(&br, NULL);
    baseline(&base);
    obs = th_connect(&br);

    /* The owner dies while three receivers hold their views: its segment
     * goes at once, the views stay whole, and their references go when
     * the receivers release them. */
    subscribe_all(rx, NRX, "shm.kill.>");
    struct victim v = { .len = th_scaled(4 * MIB, 1 * MIB) + 5 };
    pid = spawn_victim(stage_shm_owner, &v);
    for (int i = 0; i < NRX; i++) {
        m[i] = th_recv_kind(rx[i], BROKER_MSG_DATA);
        cr_assert(m[i]->flags & BROKER_MSGF_SHM, "not through shm");
        cr_assert_eq(m[i]->len, v.len);
    }
    cr_assert_eq(th_status_value(obs, "shm_held"), NRX);
    kill_victim(pid);
    th_barrier_fini(&v.at);
    th_await_status(obs, "shm_segments", 0);
    for (int i = 0; i < NRX; i++) {
        long bad = th_pattern_check(m[i]->data, m[i]->len, 21, 0);
        cr_assert_lt(bad, 0, "view %d differs at %ld after the owner died",
                     i, bad);
        broker_msg_free(m[i]);
        expect_nothing(rx[i], "the owner's death");
    }
    th_await_status(obs, "shm_held", 0);

    /* A receiver dies holding its view: its reference goes, the owner
     * gets its buffer back once the others release theirs. */
    broker_t *own = th_connect(&br);
    broker_shm_stats_t st;
    cr_assert_eq(broker_set_option(own, BROKER_OPT_SHM_THRESHOLD, 4096), 0);
    v.len = th_scaled(2 * MIB, 512 * KIB) + 3;
    th_barrier_init(&v.at);
    pid = th_spawn(stage_shm_holder, &v);
    th_barrier_wait(&v.at);
    uint8_t *data = malloc(v.len);
    cr_assert_not_null(data);
    th_pattern(data, v.len, 22, 0);
    cr_assert_eq(broker_publish(own, "shm.kill.holder", data, v.len, NULL, 0),
                 0);
    free(data);
    for (int i = 0; i < NRX; i++) {
        m[i] = th_recv_kind(rx[i], BROKER_MSG_DATA);
        cr_assert(m[i]->flags & BROKER_MSGF_SHM);
    }
    th_barrier_wait(&v.at);     /* the victim holds it too */
    cr_assert_eq(broker_ping(own, TH_HANG_MS), 0);
    cr_assert_eq(th_status_value(obs, "shm_held"), NRX + 1);
    kill_victim(pid);
    th_barrier_fini(&v.at);
    th_await_status(obs, "shm_held", NRX);
    for (int i = 0; i < NRX; i++) {
        cr_assert_lt(th_pattern_check(m[i]->data, m[i]->len, 22, 0), 0);
        broker_msg_free(m[i]);
        cr_assert_eq(broker_ping(rx[i], TH_HANG_MS), 0);
    }
    th_await_status(obs, "shm_held", 0);
    /* The owner reads its RELEASE: no buffer of its pool is in use. */
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;
    for (;;) {
        cr_assert_eq(broker_ping(own, TH_HANG_MS), 0);
        broker_shm_stats(own, &st);
        if (st.in_use == 0)
            break;
        cr_assert_lt(th_now_ms(), until, "%llu bytes of the owner's pool "
                     "still in use", (unsigned long long)st.in_use);
        th_nap(&us);
    }
    expect_nothing(own, "the receiver's death");
    for (int i = 0; i < NRX; i++)
        broker_close(rx[i]);
    broker_close(own);
    broker_close(obs);
    await_baseline(&base, "the killed shared-memory clients");
    th_broker_stop(&br);
}

/* ---- 4. a client that sent itself its own connection, killed ----------- */

/* Fills its own socket (never reads), then sends itself its own
 * connection and another idle connection of its own, then dies. */
static int stage_self_passer(void *p)
{
    struct victim *v = p;
    static uint8_t big[40000];
    broker_t *b = th_connect(&br), *idle = th_connect(&br);
    bk_welcome_t w;
    int raw = th_raw_connect_hello(br.sock, &w);
    int fds[2] = { raw, broker_fd(idle) };

    th_register(b, "svc.kill.self");
    for (uint32_t i = 0; i < 24; i++) {
        bk_hdr_t h = data_hdr(w.client_id, 2 * i + 1,
                              BK_F_OPEN | BK_F_CLOSE, sizeof(big));
        TH_OK(th_raw_send(raw, &h, big, NULL, 0));
    }
    bk_hdr_t h = data_hdr(w.client_id, 101, BK_F_OPEN | BK_F_CLOSE, 2);
    h.nfds = 2;
    TH_OK(th_raw_send(raw, &h, "me", fds, 2));
    fds[0] = broker_fd(b);
    TH_OK(broker_send(b, "svc.kill.self", "me", 2, fds, 2));
    TH_OK(broker_ping(b, TH_HANG_MS));
    TH_OK(broker_ping(idle, TH_HANG_MS));
    await_kill(v);
}

Test(faults, self_passing_client_killed)
{
    struct victim v = { 0 };
    snap_t base;

    th_broker_start(&br, NULL);
    baseline(&base);
    pid_t pid = spawn_victim(stage_self_passer, &v);
    kill_victim(pid);
    th_barrier_fini(&v.at);
    /* Nothing of it survives: not its connections, fds, queue or name. */
    await_baseline(&base, "the self-passing client's death");
    broker_t *b = th_connect(&br);
    cr_assert_eq(broker_register(b, "svc.kill.self"), 0,
                 "a successor gets the dead client's name");
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- 5. a client kept open by fds in flight, killed; a forked child --- */

/* Sends its connection C (and its other connection) over a socketpair, so
 * that they sit in flight in S1's receive queue, then S1 to itself while
 * its own socket is full (never read): the broker holds S1 in its queue,
 * S1 holds C, and no EOF comes when the client dies.  Not refused: S1 is
 * no connection to the broker.  Only reaping (reap-interval) ends it. */
static int stage_indirect_passer(void *p)
{
    struct victim *v = p;
    static uint8_t big[40000];
    broker_t *b = th_connect(&br);
    bk_welcome_t w;
    int raw = th_raw_connect_hello(br.sock, &w);
    int sv[2], fds[2] = { raw, broker_fd(b) };
    struct iovec one = { "c", 1 };

    th_register(b, "svc.kill.indirect");
    for (uint32_t i = 0; i < 24; i++) {
        bk_hdr_t h = data_hdr(w.client_id, 2 * i + 1,
                              BK_F_OPEN | BK_F_CLOSE, sizeof(big));
        TH_OK(th_raw_send(raw, &h, big, NULL, 0));
    }
    TH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0,
             "socketpair: %s", strerror(errno));
    TH_OK(bk_sock_send(sv[1], &one, 1, fds, 2));
    bk_hdr_t h = data_hdr(w.client_id, 101, BK_F_OPEN | BK_F_CLOSE, 2);
    h.nfds = 1;
    TH_OK(th_raw_send(raw, &h, "s1", &sv[0], 1));
    close(sv[0]);               /* the broker's copy is the only one */
    TH_OK(broker_ping(b, TH_HANG_MS));
    await_kill(v);
}

/* Until STATUS `key` through obs is at least `want`. */
static void await_status_geq(broker_t *obs, const char *key, uint64_t want)
{
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    while (th_status_value(obs, key) < want) {
        if (th_now_ms() >= until) {
            th_broker_dump_log(&br);
            cr_assert_fail("STATUS %s never reached %llu", key,
                           (unsigned long long)want);
        }
        th_nap(&us);
    }
}

Test(faults, client_kept_open_by_fds_in_flight_is_reaped)
{
    struct victim v = { 0 };
    snap_t base;

    th_broker_start(&br, "--reap-interval", "100", NULL);
    baseline(&base);
    broker_t *obs = th_connect(&br);
    pid_t pid = spawn_victim(stage_indirect_passer, &v);
    /* S1 is queued: the cycle is in place before the kill */
    await_status_geq(obs, "fds_in_flight", 1);
    kill_victim(pid);
    th_barrier_fini(&v.at);
    await_status_geq(obs, "reaped", 1);
    cr_assert_eq(th_status_value(obs, "reaped"), 1, "one client reaped");
    cr_assert_eq(th_status_value(obs, "reap_pushes"), 1, "one push");
    broker_close(obs);
    await_baseline(&base, "the death of a client kept open by fds in "
                   "flight");
    broker_t *b = th_connect(&br);
    cr_assert_eq(broker_register(b, "svc.kill.indirect"), 0,
                 "a successor gets the dead client's name");
    broker_close(b);
    th_broker_stop(&br);
}

/* The parent connects, stalls its queue with an fd (its socket full,
 * never read), forks, and exits when told; the child keeps the
 * connection and, once told, reads it all and sends itself a message:
 * while the parent lives its queue stays, and once it is gone the push
 * loses nothing and leaves the connection working. */
struct forker {
    th_barrier_t at;            /* parent: the child's pid; child: 1 if it
                                 * got the fd and its own message */
    th_barrier_t leave;         /* the test: parent, exit now */
    th_barrier_t go;            /* the test: child, read now */
};

static int forked_child(struct forker *f, int raw, uint64_t self)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    bool saw_fd = false, saw_end = false;
    bk_hdr_t h = data_hdr(self, 201, BK_F_OPEN | BK_F_CLOSE, 4);

    th_barrier_wait(&f->go);
    TH_OK(th_raw_send(raw, &h, "end!", NULL, 0));
    while (!saw_end) {
        ssize_t n = th_raw_recv(raw, pkt, sizeof(pkt));
        const uint8_t *pl;
        size_t off = 0;

        TH_CHECK(n > 0, "the connection ended: %zd", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1) {
            if (h.type != BK_T_DATA)
                continue;
            saw_fd |= h.nfds == 1 && h.length == 2 && !memcmp(pl, "fd", 2);
            saw_end |= h.length == 4 && !memcmp(pl, "end!", 4);
        }
    }
    th_barrier_signal(&f->at, saw_fd ? 1 : 2);
    close(raw);
    return 0;
}

static int stage_forker(void *p)
{
    struct forker *f = p;
    static uint8_t big[40000];
    bk_welcome_t w;
    int raw = th_raw_connect_hello(br.sock, &w), pfd[2];
    pid_t child;

    for (uint32_t i = 0; i < 24; i++) {
        bk_hdr_t h = data_hdr(w.client_id, 2 * i + 1,
                              BK_F_OPEN | BK_F_CLOSE, sizeof(big));
        TH_OK(th_raw_send(raw, &h, big, NULL, 0));
    }
    TH_CHECK(pipe2(pfd, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
    bk_hdr_t h = data_hdr(w.client_id, 101, BK_F_OPEN | BK_F_CLOSE, 2);
    h.nfds = 1;
    TH_OK(th_raw_send(raw, &h, "fd", &pfd[0], 1));
    close(pfd[0]);
    close(pfd[1]);
    child = fork();
    TH_CHECK(child >= 0, "fork: %s", strerror(errno));
    if (child == 0)
        _exit(forked_child(f, raw, w.client_id));
    th_barrier_signal(&f->at, (uint64_t)child);
    th_barrier_wait(&f->leave);
    return 0;
}

Test(faults, forked_child_keeps_a_dead_clients_connection)
{
    struct forker f;
    snap_t base;

    th_broker_start(&br, "--reap-interval", "100", NULL);
    baseline(&base);
    broker_t *obs = th_connect(&br);
    th_barrier_init(&f.at);
    th_barrier_init(&f.leave);
    th_barrier_init(&f.go);
    pid_t pid = th_spawn(stage_forker, &f);
    th_barrier_wait(&f.at);
    await_status_geq(obs, "fds_in_flight", 1);
    /* sweeps that checked the stalled queue of a live client */
    await_status_geq(obs, "reap_checks", 2);
    cr_assert_eq(th_status_value(obs, "reap_pushes"), 0, "a live client's "
                 "queue was pushed");
    th_barrier_signal(&f.leave, 1);
    th_join(pid);               /* the connecting process is gone */
    await_status_geq(obs, "reap_pushes", 1);
    cr_assert_eq(th_status_value(obs, "reaped"), 0, "the child's "
                 "connection was reaped");
    th_barrier_signal(&f.go, 1);
    cr_assert_eq(th_barrier_wait(&f.at), 1, "the child did not get the fd "
                 "queued before its parent died");
    th_barrier_fini(&f.at);
    th_barrier_fini(&f.leave);
    th_barrier_fini(&f.go);
    cr_assert_eq(th_status_value(obs, "reaped"), 0);
    broker_close(obs);
    await_baseline(&base, "the forked child's exit");
    th_broker_stop(&br);
}

/* ---- 6. reloads lowering every limit, under traffic --------------------- */

static void write_conf(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
}

/* Every setting brokerd(8) says a reload changes, lowered: some below
 * what the pair, the subscriber and the observer use when it comes, and
 * max-clients to the nine connections open then (the probe, the
 * observer, the publisher, the subscriber, the pair and three that never
 * send HELLO, which the lowered handshake-timeout closes). */
static const char lowered[] =
    "log-level = warn\n"
    "queue-limit = 64K\n"
    "max-streams = 16\n"
    "max-names = 1\n"
    "max-subscriptions = 1\n"
    "max-clients = 9\n"
    "max-clients-per-uid = 9\n"
    "handshake-timeout = 2000\n"
    "max-segments = 1\n"
    "max-shm = 64K\n"
    "fd-reserve = 8\n"
    "max-fds-in-flight = 4\n"
    "max-fds-per-client = 2\n"
    "max-fds-per-uid = 4\n"
    "max-held-per-client = 1\n"
    "max-held-per-uid = 2\n"
    "max-segments-per-uid = 1\n"
    "max-segments-total = 2\n"
    "max-streams-per-peer = 4\n"
    "max-streams-per-uid-peer = 8\n"
    "max-streams-per-uid = 16\n"
    "max-names-per-uid = 2\n"
    "max-subscriptions-per-uid = 1\n";

static const char generous[] =
    "log-level = warn\n"
    "queue-limit = 8M\n"
    "handshake-timeout = 3600000\n"
    "max-subscriptions = 64\n"
    "max-subscriptions-per-uid = 64\n";

Test(faults, reloads_lower_every_limit_under_traffic)
{
    char conf[] = "/tmp/test-faults-XXXXXX";
    int fd = mkstemp(conf);
    unsigned rounds = (unsigned)th_scaled(10, 4);
    broker_t *obs, *sub, *pub;
    uint32_t sub_id;
    snap_t base;
    pair_t pair;

    cr_assert_geq(fd, 0);
    close(fd);
    write_conf(conf, generous);
    th_broker_start(&br, "-c", conf, NULL);
    baseline(&base);
    obs = th_connect(&br);
    sub = th_connect(&br);
    pub = th_connect(&br);
    cr_assert_eq(broker_subscribe(sub, "reload.>", NULL, BROKER_SUB_BLOCK,
                                  &sub_id), 0);
    pair_start(&pair, "pair.reload", th_scaled(3000, 200));
    int silent[3];
    for (int i = 0; i < 3; i++)
        silent[i] = th_raw_connect(br.sock);

    /* Reload until the pair is done with its minimum, at least `rounds`
     * times: the reloads fall in the middle of its traffic. */
    uint64_t published = 0, until = th_now_ms() + TH_HANG_MS;
    for (unsigned r = 0; r < rounds || *pair.sent < pair.min; r++) {
        if (th_now_ms() >= until) {
            th_broker_dump_log(&br);
            cr_assert_fail("the pair stopped after %llu messages",
                           (unsigned long long)*pair.sent);
        }
        write_conf(conf, r % 2 ? generous : lowered);
        cr_assert_eq(broker_ctrl(obs, BK_OP_RELOAD, NULL, 0, NULL, NULL), 0,
                     "reload %u", r);
        /* Traffic of our own between the reloads: a publication to a
         * blocking subscriber, read back whole. */
        for (int k = 0; k < 20; k++, published++) {
            uint8_t data[3000];
            th_pattern(data, sizeof(data), published, 0);
            cr_assert_eq(broker_publish(pub, "reload.n", data, sizeof(data),
                                        NULL, 0), 0);
            broker_msg_t *m = th_recv_kind(sub, BROKER_MSG_DATA);
            cr_assert_eq(m->len, sizeof(data));
            cr_assert_lt(th_pattern_check(m->data, m->len, published, 0), 0,
                         "publication %llu", (unsigned long long)published);
            broker_msg_free(m);
        }
        cr_assert(th_broker_alive(&br), "brokerd died at reload %u", r);
    }
    write_conf(conf, lowered);
    cr_assert_eq(broker_ctrl(obs, BK_OP_RELOAD, NULL, 0, NULL, NULL), 0);
    pair_finish(&pair);
    expect_nothing(sub, "the reloads");
    expect_nothing(pub, "the reloads");
    for (int i = 0; i < 3; i++) {
        uint32_t aux;
        int nerr;
        cr_assert_geq(th_raw_drain_to_eof(silent[i], &aux, &nerr), 0,
                      "a connection without HELLO outlived the lowered "
                      "handshake-timeout");
        cr_assert_eq(aux, ETIMEDOUT, "closed with ERROR %u", aux);
        close(silent[i]);
    }
    broker_close(sub);
    broker_close(pub);
    broker_close(obs);
    /* Under the lowered limits, the counters still come back. */
    await_baseline(&base, "the reloads");
    unlink(conf);
    th_broker_stop(&br);
}
