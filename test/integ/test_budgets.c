/*
 * test_budgets.c - per-uid accounting and the budgets of brokerd(8)
 * LIMITS against a real brokerd, with hostile clients on raw sockets:
 * fds in flight (per receiver, per uid, global, a publication's; the
 * flood of 252-fd packets towards a receiver that never reads; the
 * broker's own EMFILE while taking a packet's fds), shared-memory
 * references held and segments, streams towards one receiver, names and
 * subscriptions per uid, `brokerctl users`, and a reload that lowers the
 * budgets.  After each attacker leaves, the counters of STATUS and
 * LIST_USERS come back to their baseline.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create, F_ADD_SEALS */
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "frame.h"
#include "harness.h"
#include "sockio.h"

static th_broker_t br;

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(budgets, .fini = teardown, .timeout = 240);

/* ---- a raw client ------------------------------------------------------- */

/* What a raw client saw while it waited for a CTRL_REPLY. */
typedef struct seen {
    unsigned errors[256];       /* ERROR frames by code (aux) */
    unsigned releases;          /* RELEASE frames */
    unsigned release_records;   /* their 24-byte records */
} seen_t;

static uint8_t pkt[BK_MAX_MAX_PACKET];

static void note(seen_t *s, const bk_hdr_t *h)
{
    if (!s)
        return;
    if (h->type == BK_T_ERROR && h->aux < 256)
        s->errors[h->aux]++;
    if (h->type == BK_T_RELEASE) {
        s->releases++;
        s->release_records += h->length / BK_RELEASE_SIZE;
    }
}

/* Send CTRL op (payload pl[0..len), at most one fd) on a raw connection
 * and read until its CTRL_REPLY, noting what came before it.  Returns
 * the reply's code (0 or a positive errno); fails if the broker closed
 * the connection. */
static uint32_t raw_ctrl(int fd, uint32_t op, uint32_t req, const void *pl,
                         uint32_t len, int xfd, seen_t *s)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .aux = op, .stream = req, .length = len,
                   .nfds = xfd >= 0 ? 1 : 0 };

    TH_OK(th_raw_send(fd, &h, pl, xfd >= 0 ? &xfd : NULL, xfd >= 0));
    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        const uint8_t *payload;
        size_t off = 0;
        bk_hdr_t r;

        TH_CHECK(n > 0, "the broker closed the connection (%zd)", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &r, &payload) == 1) {
            note(s, &r);
            if (r.type == BK_T_CTRL_REPLY && r.stream == req)
                return r.aux;
        }
    }
}

/* PING as a barrier: everything the broker sent before is in *s. */
static void raw_ping(int fd, uint32_t req, seen_t *s)
{
    TH_CHECK(raw_ctrl(fd, BK_OP_PING, req, "", 0, -1, s) == 0, "PING");
}

/* One packet of `n` whole one-way messages to client `dest`, each with
 * `k` copies of fd `xfd`. */
static void send_fd_msgs(int fd, uint64_t dest, uint32_t *sid, unsigned n,
                         unsigned k, int xfd)
{
    static uint8_t buf[4 * (BK_HDR_SIZE + 8)];
    int fds[BK_MAX_FDS_HARD];
    size_t len = 0;

    TH_CHECK(n <= 4 && n * k <= BK_MAX_FDS_HARD, "too many");
    for (unsigned i = 0; i < n; i++) {
        bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_CLOSE, .nfds = (uint8_t)k,
                       .stream = ++*sid, .dest = dest, .length = 8 };
        bk_hdr_encode(&h, buf + len);
        memcpy(buf + len + BK_HDR_SIZE, "fdbudget", 8);
        len += BK_HDR_SIZE + 8;
    }
    for (unsigned i = 0; i < n * k; i++)
        fds[i] = xfd;
    TH_OK(th_raw_send_bytes(fd, buf, len, fds, n * k));
}

/* An unfinished first fragment opening stream `sid` to client `dest`. */
static void open_unfinished(int fd, uint64_t dest, uint32_t sid)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                   .flags = BK_F_OPEN | BK_F_MORE, .stream = sid,
                   .dest = dest, .length = 4 };

    TH_OK(th_raw_send(fd, &h, "part", NULL, 0));
}

/* Make client `dest`, which never reads, stop taking packets: one-way
 * messages of 40 KB (each a packet of its own) until its socket is full
 * and the rest wait in the broker's queue towards it, where frames sent
 * after them stay (well under queue_limit, so nobody is paused). */
static void fill_receiver(int fd, uint64_t dest, uint32_t *sid)
{
    static uint8_t big[40000];

    for (unsigned i = 0; i < 24; i++) {
        bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_CLOSE, .stream = ++*sid,
                       .dest = dest, .length = sizeof(big) };
        TH_OK(th_raw_send(fd, &h, big, NULL, 0));
    }
}

static int raw_hello(uint64_t *id, uint32_t caps)
{
    bk_welcome_t w;
    int fd = th_raw_connect_hello_caps(br.sock, caps, &w);

    *id = w.client_id;
    return fd;
}

/* Let "nobody" reach the broker's socket. */
static void open_socket(void)
{
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
}

static void need_root(void)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to become another user");
}

/* ---- fds in flight ---------------------------------------------------- */

/* Four messages of 63 fds in one packet towards a receiver that never
 * reads: with max-fds-per-client 100 the first is queued, the other three
 * are refused with ENOBUFS; the connection stays, and the count goes
 * when the receiver does. */
Test(budgets, fds_per_receiver)
{
    uint64_t rid, aid;
    uint32_t sid = 0;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r, a;

    th_broker_start(&br, "--max-fds-per-client", "100", NULL);
    r = raw_hello(&rid, 0);
    a = raw_hello(&aid, 0);
    fill_receiver(a, rid, &sid);
    send_fd_msgs(a, rid, &sid, 4, 63, devnull);
    raw_ping(a, 1, &s);
    cr_assert_eq(s.errors[ENOBUFS], 3, "ENOBUFS errors: %u",
                 s.errors[ENOBUFS]);
    cr_assert_eq(th_broker_status(&br, "fds_in_flight"), 63);
    cr_assert_geq(th_broker_status(&br, "quota_hits"), 1);
    cr_assert_eq(th_broker_status(&br, "protocol_errors"), 0);
    close(r);
    th_broker_await_status(&br, "fds_in_flight", 0);
    close(a);
    close(devnull);
    th_broker_stop(&br);
}

/* A global budget: 63 fds towards one receiver fit max-fds-in-flight
 * 100, the next 63 towards another do not. */
Test(budgets, fds_global)
{
    uint64_t r1id, r2id, aid;
    uint32_t sid = 0;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r1, r2, a;

    th_broker_start(&br, "--max-fds-in-flight", "100", NULL);
    r1 = raw_hello(&r1id, 0);
    r2 = raw_hello(&r2id, 0);
    a = raw_hello(&aid, 0);
    fill_receiver(a, r1id, &sid);
    fill_receiver(a, r2id, &sid);
    send_fd_msgs(a, r1id, &sid, 1, 63, devnull);
    raw_ping(a, 1, &s);
    cr_assert_eq(s.errors[ENOBUFS], 0);
    send_fd_msgs(a, r2id, &sid, 1, 63, devnull);
    raw_ping(a, 2, &s);
    cr_assert_eq(s.errors[ENOBUFS], 1);
    cr_assert_eq(th_broker_status(&br, "fds_in_flight"), 63);
    close(r1);
    close(r2);
    th_broker_await_status(&br, "fds_in_flight", 0);
    close(a);
    close(devnull);
    th_broker_stop(&br);
}

typedef struct uid_fds_arg {
    uint64_t rid;
} uid_fds_arg_t;

/* As nobody: of four messages of 63 fds, one fits max-fds-per-uid 100. */
static int uid_fds_attacker(void *p)
{
    uid_fds_arg_t *arg = p;
    uint64_t id;
    uint32_t sid = 0;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int a;

    TH_CHECK(th_become_nobody(), "cannot become nobody");
    a = raw_hello(&id, 0);
    fill_receiver(a, arg->rid, &sid);
    send_fd_msgs(a, arg->rid, &sid, 4, 63, devnull);
    raw_ping(a, 1, &s);
    TH_CHECK(s.errors[EDQUOT] == 3, "EDQUOT errors: %u", s.errors[EDQUOT]);
    close(a);
    return 0;
}

/* The user's record outlives its connections while its fds are queued;
 * root is exempt from the quota. */
Test(budgets, fds_per_uid)
{
    uid_fds_arg_t arg;
    uint64_t aid;
    uint32_t sid = 100;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r, a;

    need_root();
    th_broker_start(&br, "--max-fds-per-uid", "100", NULL);
    open_socket();
    r = raw_hello(&arg.rid, 0);
    th_join(th_spawn(uid_fds_attacker, &arg));
    th_await_user(&br, TH_NOBODY, "connections", 0);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "fds"), 63);
    cr_assert_geq(th_user_value(&br, TH_NOBODY, "quota_hits"), 3);
    a = raw_hello(&aid, 0);     /* root: no quota */
    send_fd_msgs(a, arg.rid, &sid, 2, 63, devnull);
    raw_ping(a, 1, &s);
    cr_assert_eq(s.errors[EDQUOT] + s.errors[ENOBUFS], 0);
    close(r);
    th_await_user(&br, TH_NOBODY, "fds", -1);       /* the record is gone */
    th_broker_await_status(&br, "fds_in_flight", 0);
    close(a);
    close(devnull);
    th_broker_stop(&br);
}

/* SUBSCRIBE `pattern` (policy drop) on a raw connection. */
static void raw_subscribe(int fd, const char *pattern)
{
    uint8_t pl[BK_SUB_REQ_FIXED + BK_MAX_TOPIC];
    size_t n = strlen(pattern);

    memset(pl, 0, BK_SUB_REQ_FIXED);
    pl[0] = BK_SUB_DROP;
    pl[2] = (uint8_t)n;
    memcpy(pl + BK_SUB_REQ_FIXED, pattern, n);
    TH_CHECK(raw_ctrl(fd, BK_OP_SUBSCRIBE, 77, pl,
                      (uint32_t)(BK_SUB_REQ_FIXED + n), -1, NULL) == 0,
             "SUBSCRIBE");
}

/* One packet of four publications on `topic`, each with 63 copies of
 * fd xfd. */
static void publish_fds(int fd, const char *topic, uint32_t *sid, int xfd)
{
    static uint8_t buf[4 * (BK_HDR_SIZE + 64)];
    size_t tl = strlen(topic), len = 0;
    int fds[4 * 63];

    for (unsigned i = 0; i < 4; i++) {
        bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_TOPIC,
                       .nfds = 63, .stream = ++*sid, .aux = (uint32_t)tl,
                       .length = (uint32_t)tl + 4 };
        bk_hdr_encode(&h, buf + len);
        memcpy(buf + len + BK_HDR_SIZE, topic, tl);
        memcpy(buf + len + BK_HDR_SIZE + tl, "pubf", 4);
        len += BK_HDR_SIZE + tl + 4;
    }
    for (unsigned i = 0; i < 4 * 63; i++)
        fds[i] = xfd;
    TH_OK(th_raw_send_bytes(fd, buf, len, fds, 4 * 63));
}

static int nobody_publisher(void *p)
{
    uint64_t id;
    uint32_t sid = 0;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int a;

    (void)p;
    TH_CHECK(th_become_nobody(), "cannot become nobody");
    a = raw_hello(&id, 0);
    publish_fds(a, "b.fds", &sid, devnull);
    raw_ping(a, 1, &s);
    close(a);
    close(devnull);
    return 0;
}

/* A publication's fds are the publisher's, even towards a subscription
 * that does not hold it back: past its user's quota the copies are
 * dropped for the subscriber (GAP), and what is queued stays charged to
 * the publisher's user after it left. */
Test(budgets, publication_fds_are_the_publishers)
{
    uint64_t rid, fid;
    uint32_t sid = 0;
    int r, f;

    need_root();
    th_broker_start(&br, "--max-fds-per-uid", "100", NULL);
    open_socket();
    r = raw_hello(&rid, 0);
    f = raw_hello(&fid, 0);
    raw_subscribe(r, "b.>");
    fill_receiver(f, rid, &sid);
    raw_ping(f, 1, NULL);
    th_join(th_spawn(nobody_publisher, NULL));
    th_await_user(&br, TH_NOBODY, "connections", 0);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "fds"), 63);
    cr_assert_eq(th_broker_status(&br, "dropped_pub"), 3);
    close(r);
    th_await_user(&br, TH_NOBODY, "fds", -1);
    th_broker_await_status(&br, "fds_in_flight", 0);
    close(f);
    th_broker_stop(&br);
}

/* ---- the flood of the issue --------------------------------------------- */

#define PAIR_MSGS 2000

typedef struct pair_arg {
    th_barrier_t ready, go;
} pair_arg_t;

static int pair_rx(void *p)
{
    pair_arg_t *arg = p;
    broker_t *b = th_connect(&br);

    th_register(b, "pair.rx");
    th_barrier_signal(&arg->ready, 0);
    for (unsigned i = 0; i < PAIR_MSGS; i++) {
        broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
        unsigned got;
        TH_CHECK(m->len == sizeof(got), "size %zu", m->len);
        memcpy(&got, m->data, sizeof(got));
        TH_CHECK(got == i, "message %u arrived as number %u", got, i);
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

static int pair_tx(void *p)
{
    pair_arg_t *arg = p;
    broker_t *b = th_connect(&br);

    th_barrier_wait(&arg->go);
    for (unsigned i = 0; i < PAIR_MSGS; i++)
        TH_OK(broker_send(b, "pair.rx", &i, sizeof(i), NULL, 0));
    broker_close(b);
    return 0;
}

/* Packets of four one-way frames with 63 copies of one fd each (252 fds
 * a packet) towards a receiver that never reads: brokerd's fds stay
 * within the receiver's budget, the attacker hears ENOBUFS and stays
 * connected, and a well-behaved pair exchanges every message meanwhile. */
Test(budgets, fd_flood_stays_bounded)
{
    const unsigned packets = (unsigned)th_scaled(100, 20);
    pair_arg_t arg;
    uint64_t rid, aid;
    uint32_t sid = 0;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int r, a, base, most = 0;
    pid_t rx, tx;

    th_broker_start(&br, NULL);
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.go);
    rx = th_spawn(pair_rx, &arg);
    th_barrier_wait(&arg.ready);
    tx = th_spawn(pair_tx, &arg);
    r = raw_hello(&rid, 0);
    a = raw_hello(&aid, 0);
    base = th_fd_count(br.pid);
    th_barrier_signal(&arg.go, 0);
    for (unsigned i = 0; i < packets; i++) {
        int n;
        send_fd_msgs(a, rid, &sid, 4, 63, devnull);
        if (i % 10 == 9) {
            raw_ping(a, i + 1, &s);
            n = th_fd_count(br.pid);
            most = n > most ? n : most;
        }
    }
    raw_ping(a, packets + 1, &s);
    cr_assert_gt(s.errors[ENOBUFS], 0);
    cr_assert_leq(most, base + 1024 + 64, "brokerd had %d fds (base %d)",
                  most, base);
    cr_assert_leq(th_broker_status(&br, "fds_in_flight"), 1024);
    th_join(tx);
    th_join(rx);
    cr_assert_eq(th_broker_status(&br, "protocol_errors"), 0);
    close(r);
    close(a);
    th_broker_await_status(&br, "fds_in_flight", 0);
    th_broker_await_status(&br, "clients", 1);         /* the asking connection */
    cr_assert_leq(th_fd_count(br.pid), base);
    close(devnull);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.go);
    th_broker_stop(&br);
}

/* brokerd at its RLIMIT_NOFILE: the fd a client passes cannot be taken.
 * That is the broker's shortage, not the client's fault: the message is
 * refused with ENOBUFS and the connection stays. */
Test(budgets, emfile_on_receive_refuses_the_message)
{
    struct rlimit low = { 96, 96 };
    uint64_t rid, aid;
    uint32_t sid = 0;
    seen_t s = { 0 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int fill[128], nfill = 0, r, a;
    uint64_t until;
    unsigned us = 500;
    const char *wrapper = getenv("BROKERD_WRAPPER");

    if (wrapper && *wrapper)
        cr_skip_test("brokerd runs under a checker (BROKERD_WRAPPER), which "
                     "keeps descriptors of its own and its own idea of "
                     "RLIMIT_NOFILE");
    th_broker_start(&br, "--handshake-timeout", "3600000", NULL);
    /* its budgets were sized for the limit it started with: only the
     * fd table runs out */
    cr_assert_eq(prlimit(br.pid, RLIMIT_NOFILE, &low, NULL), 0,
                 "prlimit: %s", strerror(errno));
    r = raw_hello(&rid, 0);
    a = raw_hello(&aid, 0);
    /* connections that never say HELLO until brokerd has no fd left.  A
     * count of 96 may include a file brokerd opens for a moment while it
     * has a slot free (a new client's /proc/PID/comm, the reaper's
     * /proc/PID/stat), so the table counts as full only when it still has
     * 96 after brokerd answered two PINGs, a moment apart. */
    until = th_now_ms() + TH_HANG_MS;
    for (uint32_t req = 100, full = 0; full < 2; req++) {
        while (th_fd_count(br.pid) < 96) {
            if (nfill < 128)
                fill[nfill++] = th_raw_connect(br.sock);
            else
                th_nap(&us);
            cr_assert_lt(th_now_ms(), until, "brokerd never ran out of fds");
            full = 0;
        }
        usleep(5000);
        raw_ping(a, req, &s);
        full += th_fd_count(br.pid) >= 96;
    }
    send_fd_msgs(a, rid, &sid, 1, 1, devnull);
    raw_ping(a, 1, &s);
    cr_assert_eq(s.errors[ENOBUFS], 1, "ENOBUFS: %u, EPROTO: %u",
                 s.errors[ENOBUFS], s.errors[EPROTO]);
    cr_assert_eq(s.errors[EPROTO], 0);
    while (nfill)
        close(fill[--nfill]);
    until = th_now_ms() + TH_HANG_MS;
    while (th_fd_count(br.pid) > 80) {     /* the closes were seen */
        cr_assert_lt(th_now_ms(), until, "brokerd kept its fds");
        th_nap(&us);
    }
    {
        size_t len;
        char *log = th_read_file(br.log, &len);
        cr_assert(strstr(log, "out of file descriptors receiving"),
                  "the refusal was not the EMFILE path:\n%s", log);
        free(log);
    }
    cr_assert_eq(th_broker_status(&br, "protocol_errors"), 0);
    raw_ping(a, 2, &s);         /* still connected */
    close(r);
    close(a);
    close(devnull);
    th_broker_stop(&br);
}

/* ---- shared memory ------------------------------------------------------ */

static int sealed_memfd(uint64_t size)
{
    int fd = memfd_create("test-budgets", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    TH_CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
    TH_CHECK(ftruncate(fd, (off_t)size) == 0, "ftruncate");
    TH_CHECK(fcntl(fd, F_ADD_SEALS, BK_SEALS_REQUIRED | F_SEAL_SEAL) == 0,
             "F_ADD_SEALS: %s", strerror(errno));
    return fd;
}

static uint32_t raw_register(int fd, uint32_t req, uint32_t segid,
                             uint64_t size)
{
    uint8_t pl[BK_SEG_REG_SIZE];
    int mfd = sealed_memfd(size);
    uint32_t code;

    bk_put32(pl, segid);
    bk_put32(pl + 4, 0);
    bk_put64(pl + 8, size);
    code = raw_ctrl(fd, BK_OP_SEGMENT, req, pl, sizeof(pl), mfd, NULL);
    close(mfd);
    return code;
}

/* A one-way descriptor of (segid, offset, 1 byte) to client dest. */
static void send_desc(int fd, uint64_t dest, uint32_t sid, uint32_t segid,
                      uint64_t offset)
{
    uint8_t pl[BK_SHM_DESC_SIZE];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                   .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_SHM,
                   .stream = sid, .dest = dest, .length = sizeof(pl) };

    bk_put32(pl, segid);
    bk_put32(pl + 4, 0);
    bk_put64(pl + 8, offset);
    bk_put64(pl + 16, 1);
    TH_OK(th_raw_send(fd, &h, pl, NULL, 0));
}

/* A receiver that takes descriptors and never releases them, fed
 * descriptors at offsets 0, 1, 2, ...: past max-held-per-client its
 * sender hears ENOBUFS; when it goes, the owner gets its references back
 * in one RELEASE frame of many records. */
Test(budgets, held_references_per_receiver)
{
    uint64_t rid, sid_;
    seen_t s = { 0 };
    int r, a;

    th_broker_start(&br, "--max-held-per-client", "40", NULL);
    r = raw_hello(&rid, BK_HELLO_SHM);
    a = raw_hello(&sid_, 0);
    cr_assert_eq(raw_register(a, 1, 7, 4096), 0);
    for (uint32_t i = 0; i < 50; i++)
        send_desc(a, rid, i + 1, 7, i);
    raw_ping(a, 2, &s);
    cr_assert_eq(s.errors[ENOBUFS], 10, "ENOBUFS: %u", s.errors[ENOBUFS]);
    cr_assert_eq(th_broker_status(&br, "shm_held"), 40);
    cr_assert_eq(th_user_value(&br, 0, "shm_held"), 40);
    memset(&s, 0, sizeof(s));
    close(r);
    th_broker_await_status(&br, "shm_held", 0);
    raw_ping(a, 3, &s);
    cr_assert_eq(s.release_records, 40);
    cr_assert_eq(s.releases, 1, "RELEASE frames: %u", s.releases);
    close(a);
    th_broker_stop(&br);
}

typedef struct holder_arg {
    th_barrier_t ready, done;
} holder_arg_t;

/* As nobody: a receiver that maps segments and never releases. */
static int nobody_holder(void *p)
{
    holder_arg_t *arg = p;
    uint64_t id;
    int r;

    TH_CHECK(th_become_nobody(), "cannot become nobody");
    r = raw_hello(&id, BK_HELLO_SHM);
    th_barrier_signal(&arg->ready, id);
    th_barrier_wait(&arg->done);
    close(r);
    return 0;
}

/* The receiver's user's quota of references (EDQUOT to the sender), and
 * the global budget of segments (ENOBUFS). */
Test(budgets, held_per_uid_and_segments_total)
{
    holder_arg_t arg;
    uint64_t rid, aid;
    seen_t s = { 0 };
    pid_t pid;
    int a;

    need_root();
    th_broker_start(&br, "--max-held-per-uid", "4", "--max-segments-total",
                    "2", NULL);
    open_socket();
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    pid = th_spawn(nobody_holder, &arg);
    rid = th_barrier_wait(&arg.ready);
    a = raw_hello(&aid, 0);
    cr_assert_eq(raw_register(a, 1, 7, 4096), 0);
    cr_assert_eq(raw_register(a, 2, 8, 4096), 0);
    cr_assert_eq(raw_register(a, 3, 9, 4096), ENOBUFS, "a third segment");
    for (uint32_t i = 0; i < 6; i++)
        send_desc(a, rid, i + 1, 7, i);
    raw_ping(a, 4, &s);
    cr_assert_eq(s.errors[EDQUOT], 2, "EDQUOT: %u", s.errors[EDQUOT]);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "shm_held"), 4);
    cr_assert_eq(th_user_value(&br, 0, "shm_segments"), 2);
    th_barrier_signal(&arg.done, 0);
    th_join(pid);
    th_broker_await_status(&br, "shm_held", 0);
    th_await_user(&br, TH_NOBODY, "connections", -1);
    close(a);
    th_broker_await_status(&br, "shm_segments", 0);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_broker_stop(&br);
}

/* ---- streams ------------------------------------------------------------ */

typedef struct other_arg {
    uint64_t rid;
} other_arg_t;

/* Another user, with two connections, towards the receiver root filled
 * its connections' share of: 10 streams each fit max-streams-per-peer,
 * but together only 15 fit max-streams-per-uid-peer. */
static int other_user_streams(void *p)
{
    other_arg_t *arg = p;
    uint64_t id;
    seen_t s = { 0 };
    int c1, c2;

    TH_CHECK(th_become_nobody(), "cannot become nobody");
    c1 = raw_hello(&id, 0);
    c2 = raw_hello(&id, 0);
    for (uint32_t i = 1; i <= 10; i++)
        open_unfinished(c1, arg->rid, i);
    raw_ping(c1, 1, &s);
    TH_CHECK(s.errors[ENOSR] + s.errors[EDQUOT] == 0,
             "another user was refused");
    for (uint32_t i = 1; i <= 10; i++)
        open_unfinished(c2, arg->rid, i);
    raw_ping(c2, 1, &s);
    TH_CHECK(s.errors[EDQUOT] == 5 && s.errors[ENOSR] == 0,
             "EDQUOT %u, ENOSR %u", s.errors[EDQUOT], s.errors[ENOSR]);
    close(c1);
    close(c2);
    return 0;
}

/* Unfinished first fragments by the thousand must not fill a receiver's
 * stream table for everyone: past max-streams-per-peer a client's new
 * streams towards it are refused (ENOSR), past max-streams-per-uid-peer
 * those of its user's other connections too (EDQUOT; root is exempt);
 * others still get through. */
Test(budgets, streams_per_peer)
{
    other_arg_t arg;
    uint64_t a1id, a2id;
    seen_t s = { 0 };
    int r, a1, a2;

    need_root();
    th_broker_start(&br, "--max-streams-per-peer", "10",
                    "--max-streams-per-uid-peer", "15", NULL);
    open_socket();
    r = raw_hello(&arg.rid, 0);
    a1 = raw_hello(&a1id, 0);
    a2 = raw_hello(&a2id, 0);
    for (uint32_t i = 1; i <= 15; i++) {
        open_unfinished(a1, arg.rid, i);
        open_unfinished(a2, arg.rid, i);
    }
    raw_ping(a1, 100, &s);
    raw_ping(a2, 100, &s);
    cr_assert_eq(s.errors[ENOSR], 10, "ENOSR: %u", s.errors[ENOSR]);
    cr_assert_eq(s.errors[EDQUOT], 0, "root is exempt from the uid's");
    th_join(th_spawn(other_user_streams, &arg));
    /* root's 20 streams, and the 10 refused ones' tombstones (which
     * swallow the rest of their messages); the streams opened towards
     * root's receiver do not count against root */
    th_await_user(&br, 0, "streams", 20 + 10);
    close(a1);
    close(a2);
    th_await_user(&br, 0, "streams", 0);
    th_broker_await_status(&br, "streams", 0);
    close(r);
    th_broker_stop(&br);
}

/* ---- names, subscriptions, segments per uid; brokerctl users ----------- */

typedef struct uid_arg {
    th_barrier_t counted, checked;
} uid_arg_t;

static int uid_quotas(void *p)
{
    uid_arg_t *arg = p;
    broker_t *b1, *b2;
    uint32_t id;
    uint64_t cid;
    int c1, c2;

    TH_CHECK(th_become_nobody(), "cannot become nobody");
    b1 = th_connect(&br);
    b2 = th_connect(&br);
    TH_OK(broker_register(b1, "q.a"));
    TH_OK(broker_register(b1, "q.b"));
    TH_OK(broker_register(b2, "q.c"));
    TH_CHECK(broker_register(b2, "q.d") == -EDQUOT, "4th name");
    TH_OK(broker_subscribe(b1, "t.a", NULL, BROKER_SUB_DROP, &id));
    TH_OK(broker_subscribe(b2, "t.b", NULL, BROKER_SUB_DROP, &id));
    TH_CHECK(broker_subscribe(b2, "t.c", NULL, BROKER_SUB_DROP, &id) ==
             -EDQUOT, "3rd subscription");
    c1 = raw_hello(&cid, 0);
    c2 = raw_hello(&cid, 0);
    TH_CHECK(raw_register(c1, 1, 1, 4096) == 0, "segment 1");
    TH_CHECK(raw_register(c2, 1, 1, 4096) == 0, "segment 2");
    TH_CHECK(raw_register(c2, 2, 2, 4096) == EDQUOT, "segment 3");
    th_barrier_signal(&arg->counted, 0);
    th_barrier_wait(&arg->checked);
    close(c1);
    close(c2);
    broker_close(b1);
    broker_close(b2);
    return 0;
}

Test(budgets, names_subs_segments_per_uid)
{
    uid_arg_t arg;
    th_output_t out;
    pid_t pid;
    int st;

    need_root();
    th_broker_start(&br, "--max-names-per-uid", "3",
                    "--max-subscriptions-per-uid", "2",
                    "--max-segments-per-uid", "2", NULL);
    open_socket();
    th_barrier_init(&arg.counted);
    th_barrier_init(&arg.checked);
    pid = th_spawn(uid_quotas, &arg);
    th_barrier_wait(&arg.counted);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "connections"), 4);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "names"), 3);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "subs"), 2);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "shm_segments"), 2);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "shm_bytes"), 8192);
    cr_assert_eq(th_user_value(&br, TH_NOBODY, "quota_hits"), 3);
    st = th_ctl(br.sock, &out, "users", "--json", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl users: %s", out.err);
    cr_assert(strstr(out.out, "65534"), "%s", out.out);
    th_output_free(&out);
    st = th_ctl(br.sock, &out, "users", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl users: %s", out.err);
    cr_assert(strstr(out.out, "QUOTA_HITS") || strstr(out.out, "quota_hits"),
              "%s", out.out);
    th_output_free(&out);
    th_barrier_signal(&arg.checked, 0);
    th_join(pid);
    th_await_user(&br, TH_NOBODY, "connections", -1);      /* back to baseline */
    cr_assert_eq(th_broker_status(&br, "users"), 1);   /* root's, asking */
    th_barrier_fini(&arg.counted);
    th_barrier_fini(&arg.checked);
    th_broker_stop(&br);
}

/* ---- reload ------------------------------------------------------------- */

static void write_conf(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
}

/* A reload that lowers budgets below what is in use takes nothing away
 * and grants nothing more: no check wraps around. */
Test(budgets, reload_lowers_budgets_below_use)
{
    char conf[] = "/tmp/test-budgets-XXXXXX";
    uint64_t rid, aid;
    uint32_t sid = 0;
    seen_t s = { 0 };
    broker_t *b;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int fd = mkstemp(conf), r, a;

    cr_assert_geq(fd, 0);
    close(fd);
    write_conf(conf, "max-fds-per-client = 1000\nmax-streams-per-peer = 100\n");
    th_broker_start(&br, "-c", conf, NULL);
    r = raw_hello(&rid, 0);
    a = raw_hello(&aid, 0);
    fill_receiver(a, rid, &sid);
    send_fd_msgs(a, rid, &sid, 1, 63, devnull);
    for (uint32_t i = 0; i < 5; i++)
        open_unfinished(a, rid, 1000 + i);
    raw_ping(a, 1, &s);
    cr_assert_eq(s.errors[ENOBUFS] + s.errors[ENOSR], 0);
    write_conf(conf, "max-fds-per-client = 10\nmax-streams-per-peer = 2\n");
    b = th_connect(&br);
    TH_OK(broker_ctrl(b, BK_OP_RELOAD, NULL, 0, NULL, NULL));
    broker_close(b);
    send_fd_msgs(a, rid, &sid, 1, 1, devnull);
    open_unfinished(a, rid, 2000);
    raw_ping(a, 2, &s);
    cr_assert_eq(s.errors[ENOBUFS], 1, "fds over a lowered budget");
    cr_assert_eq(s.errors[ENOSR], 1, "streams over a lowered budget");
    cr_assert_eq(th_broker_status(&br, "fds_in_flight"), 63, "nothing taken away");
    close(a);
    close(r);
    th_broker_await_status(&br, "fds_in_flight", 0);
    th_broker_await_status(&br, "streams", 0);
    close(devnull);
    unlink(conf);
    th_broker_stop(&br);
}

/* ---- queued memory ------------------------------------------------------ */

#define QMSG 8000u              /* one-way message size */
#define QRECV 4                 /* receivers */

/* One whole one-way message of QMSG bytes to `dest` (its first 8 bytes:
 * n), without waiting: 0, or -EAGAIN when the socket is full. */
static int send_numbered(int fd, uint64_t dest, uint32_t sid, uint64_t n)
{
    static uint8_t buf[BK_HDR_SIZE + QMSG];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                   .flags = BK_F_OPEN | BK_F_CLOSE, .stream = sid,
                   .dest = dest, .length = QMSG };

    bk_hdr_encode(&h, buf);
    memcpy(buf + BK_HDR_SIZE, &n, sizeof(n));
    if (send(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL) ==
        (ssize_t)sizeof(buf))
        return 0;
    TH_CHECK(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s",
             strerror(errno));
    return -EAGAIN;
}

/* Send numbered messages round robin to ids[0..n) until the broker stops
 * reading (the socket stays full after the broker had time to read it,
 * STATUS answered on another connection in between); sent[i] counts what
 * went to ids[i]. */
static void send_until_paused(int fd, const uint64_t *ids, unsigned n,
                              uint64_t *sent)
{
    uint32_t sid = 0;
    unsigned full = 0;

    for (unsigned i = 0; full < 3 && i < 100000; i++) {
        unsigned k = i % n;

        if (send_numbered(fd, ids[k], ++sid, sent[k]) == 0) {
            sent[k]++;
            full = 0;
            continue;
        }
        full++;
        (void)th_broker_status(&br, "clients");        /* a loop pass of the broker */
    }
    TH_CHECK(full == 3, "the sender was never paused");
}

/* Read what raw receivers fds[0..n) got, all at once (a sender paused by
 * a budget of several queues goes on only once they drain together),
 * until each has want[i] DATA frames, numbered in order from 0. */
static void read_numbered(const int *fds, const uint64_t *want, unsigned n)
{
    uint64_t next[QRECV] = { 0 }, end = th_now_ms() + TH_HANG_MS;
    unsigned left = n;

    TH_CHECK(n <= QRECV, "too many receivers");
    for (unsigned i = 0; i < n; i++)
        left -= want[i] == 0;
    while (left) {
        struct pollfd pfd[QRECV];

        for (unsigned i = 0; i < n; i++)
            pfd[i] = (struct pollfd){ .fd = next[i] < want[i] ? fds[i] : -1,
                                      .events = POLLIN };
        TH_CHECK(th_now_ms() < end, "receivers: messages missing");
        if (poll(pfd, n, 100) <= 0)
            continue;
        for (unsigned i = 0; i < n; i++) {
            const uint8_t *payload;
            size_t off = 0;
            ssize_t len;
            bk_hdr_t r;

            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            len = th_raw_recv(fds[i], pkt, sizeof(pkt));
            TH_CHECK(len > 0, "receiver %u: closed after %llu of %llu", i,
                     (unsigned long long)next[i],
                     (unsigned long long)want[i]);
            while (bk_pkt_next(pkt, (size_t)len, &off, &r, &payload) == 1) {
                uint64_t got;

                if (r.type != BK_T_DATA)
                    continue;
                TH_CHECK(r.length == QMSG, "length %u", r.length);
                memcpy(&got, payload, sizeof(got));
                TH_CHECK(got == next[i], "receiver %u: message %llu where "
                         "%llu was due", i, (unsigned long long)got,
                         (unsigned long long)next[i]);
                if (++next[i] == want[i])
                    left--;
            }
        }
    }
}

typedef struct qrecv_arg {
    th_barrier_t ready, go, done;
    uint64_t want[QRECV];
} qrecv_arg_t;

/* As nobody: QRECV receivers that read nothing until told, then read
 * their numbered messages. */
static int nobody_receivers(void *p)
{
    qrecv_arg_t *arg = p;
    int fds[QRECV];
    uint64_t id;

    TH_CHECK(th_become_nobody(), "cannot become nobody");
    for (unsigned i = 0; i < QRECV; i++) {
        fds[i] = raw_hello(&id, 0);
        th_barrier_signal(&arg->ready, id);
    }
    for (unsigned i = 0; i < QRECV; i++)
        arg->want[i] = th_barrier_wait(&arg->go);
    read_numbered(fds, arg->want, QRECV);
    th_barrier_signal(&arg->done, 0);
    for (unsigned i = 0; i < QRECV; i++)
        close(fds[i]);
    return 0;
}

/* A root pair exchanges numbered messages through brokerd: none lost. */
static void pair_works(void)
{
    uint64_t rid, sid_;
    int r = raw_hello(&rid, 0), s = raw_hello(&sid_, 0);
    static const uint64_t want[1] = { 20 };
    unsigned us = 500;

    for (uint64_t i = 0; i < 20; i++)
        while (send_numbered(s, rid, (uint32_t)i + 1, i) < 0)
            th_nap(&us);
    read_numbered(&r, want, 1);
    close(s);
    close(r);
}

/* The receivers of one user that read nothing: with max-queued-per-uid
 * 256K their queues together stay near 256K although each could take a
 * queue-limit of 1M; the sender is held back (a sender without FLOW is
 * paused), another pair is not, and once the receivers read, every
 * message arrives, in order. */
Test(budgets, queued_per_uid_towards_its_clients)
{
    qrecv_arg_t *arg = mmap(NULL, sizeof(*arg), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t ids[QRECV], sent[QRECV] = { 0 }, total = 0, aid;
    pid_t pid;
    long q;
    int a;

    need_root();
    cr_assert_neq(arg, MAP_FAILED);
    th_broker_start(&br, "--queue-limit", "1M", "--max-queued-per-uid",
                    "256K", NULL);
    open_socket();
    th_barrier_init(&arg->ready);
    th_barrier_init(&arg->go);
    th_barrier_init(&arg->done);
    pid = th_spawn(nobody_receivers, arg);
    for (unsigned i = 0; i < QRECV; i++)
        ids[i] = th_barrier_wait(&arg->ready);
    a = raw_hello(&aid, 0);
    send_until_paused(a, ids, QRECV, sent);
    for (unsigned i = 0; i < QRECV; i++)
        total += sent[i];
    q = th_user_value(&br, TH_NOBODY, "queued");
    /* the budget, plus what the broker read past it: one recvmmsg batch
     * of packets of the paused sender */
    cr_assert_leq(q, 256 * 1024 + 8 * (QMSG + 512), "nobody's queues: %ld",
                  q);
    cr_assert_geq(q, 256 * 1024, "nobody's queues: %ld", q);
    cr_assert_lt(total * QMSG, QRECV * 1024 * 1024 / 2,
                 "sent %llu messages", (unsigned long long)total);
    cr_assert_geq(th_user_value(&br, TH_NOBODY, "quota_hits"), 1);
    pair_works();
    for (unsigned i = 0; i < QRECV; i++)
        th_barrier_signal(&arg->go, sent[i]);
    th_barrier_wait(&arg->done);
    th_join(pid);
    close(a);
    th_await_user(&br, TH_NOBODY, "connections", -1);
    th_broker_await_status(&br, "queued_mem", 0);
    th_barrier_fini(&arg->ready);
    th_barrier_fini(&arg->go);
    th_barrier_fini(&arg->done);
    munmap(arg, sizeof(*arg));
    th_broker_stop(&br);
}

typedef struct qsend_arg {
    th_barrier_t ready, go, done;
    uint64_t ids[QRECV], sent[QRECV];
} qsend_arg_t;

/* As nobody: send to the given receivers until paused, say how many went
 * to each, and stay until told. */
static int nobody_sender(void *p)
{
    qsend_arg_t *arg = p;
    uint64_t id;
    int a;

    TH_CHECK(th_become_nobody(), "cannot become nobody");
    a = raw_hello(&id, 0);
    for (unsigned i = 0; i < QRECV; i++)
        arg->ids[i] = th_barrier_wait(&arg->go);
    send_until_paused(a, arg->ids, QRECV, arg->sent);
    th_barrier_signal(&arg->ready, 0);
    th_barrier_wait(&arg->done);
    close(a);
    return 0;
}

/* What one user's sends keep queued, towards receivers of another user
 * (root: no budget of its own), stays near max-queued-per-uid: its sender
 * is paused; then everything arrives in order. */
Test(budgets, queued_per_uid_by_its_sends)
{
    qsend_arg_t *arg = mmap(NULL, sizeof(*arg), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int r[QRECV];
    uint64_t id;
    pid_t pid;
    long q;

    need_root();
    cr_assert_neq(arg, MAP_FAILED);
    th_broker_start(&br, "--queue-limit", "1M", "--max-queued-per-uid",
                    "256K", NULL);
    open_socket();
    th_barrier_init(&arg->ready);
    th_barrier_init(&arg->go);
    th_barrier_init(&arg->done);
    pid = th_spawn(nobody_sender, arg);
    for (unsigned i = 0; i < QRECV; i++) {
        r[i] = raw_hello(&id, 0);
        th_barrier_signal(&arg->go, id);
    }
    th_barrier_wait(&arg->ready);
    q = th_user_value(&br, TH_NOBODY, "queued_by");
    cr_assert_leq(q, 256 * 1024 + 8 * (QMSG + 512), "queued by nobody: %ld",
                  q);
    cr_assert_geq(q, 256 * 1024, "queued by nobody: %ld", q);
    cr_assert_eq(th_user_value(&br, 0, "queued"), q, "root's queues");
    cr_assert_geq(th_user_value(&br, TH_NOBODY, "quota_hits"), 1);
    pair_works();
    read_numbered(r, arg->sent, QRECV);
    th_barrier_signal(&arg->done, 0);
    th_join(pid);
    th_await_user(&br, TH_NOBODY, "connections", -1);
    for (unsigned i = 0; i < QRECV; i++)
        close(r[i]);
    th_broker_await_status(&br, "queued_mem", 0);
    th_barrier_fini(&arg->ready);
    th_barrier_fini(&arg->go);
    th_barrier_fini(&arg->done);
    munmap(arg, sizeof(*arg));
    th_broker_stop(&br);
}

/* The whole broker's budget binds root too; what is queued is counted as
 * the memory the frames take, more than their wire bytes. */
Test(budgets, queued_global)
{
    int r[QRECV], a;
    uint64_t ids[QRECV], sent[QRECV] = { 0 }, aid, mem, bytes;

    th_broker_start(&br, "--queue-limit", "1M", "--max-queued", "256K",
                    NULL);
    for (unsigned i = 0; i < QRECV; i++)
        r[i] = raw_hello(&ids[i], 0);
    a = raw_hello(&aid, 0);
    send_until_paused(a, ids, QRECV, sent);
    mem = th_broker_status(&br, "queued_mem");
    bytes = th_broker_status(&br, "queued_bytes");
    cr_assert_leq(mem, 256 * 1024 + 8 * (QMSG + 512), "queued: %llu",
                  (unsigned long long)mem);
    cr_assert_geq(mem, 256 * 1024, "queued: %llu", (unsigned long long)mem);
    cr_assert_gt(mem, bytes, "memory %llu, bytes %llu",
                 (unsigned long long)mem, (unsigned long long)bytes);
    read_numbered(r, sent, QRECV);
    close(a);
    for (unsigned i = 0; i < QRECV; i++)
        close(r[i]);
    th_broker_await_status(&br, "queued_mem", 0);
    th_broker_stop(&br);
}

/* A sender paused on a receiver that does not read, then gone: the
 * broker reads what it had sent all the same (it can send no more), so
 * its connection is torn down at once, not when the receiver reads, and
 * the receiver gets every message it sent, in order.  Both a queue limit
 * and a budget of queued memory pause it. */
static void departs_while_paused(const char *opt, const char *val)
{
    uint64_t rid, aid, sent[1] = { 0 };
    int r, a;

    th_broker_start(&br, opt, val, NULL);
    r = raw_hello(&rid, 0);
    a = raw_hello(&aid, 0);
    send_until_paused(a, &rid, 1, sent);
    cr_assert_eq(th_broker_status(&br, "clients"), 3);  /* status's own */
    close(a);
    th_broker_await_status(&br, "clients", 2);
    read_numbered(&r, sent, 1);
    cr_assert_eq(th_broker_status(&br, "queued_mem"), 0, "more than was "
                 "sent");
    close(r);
    th_broker_stop(&br);
}

Test(budgets, a_sender_that_departs_while_paused_is_read_to_its_end)
{
    departs_while_paused("--queue-limit", "64K");
    departs_while_paused("--max-queued", "128K");
}

/* Persistent abuse: past max-refusals refusals within a minute the client
 * is told EDQUOT and disconnected; up to it, it stays. */
Test(budgets, persistent_refusals_disconnect)
{
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uint64_t rid, aid;
    uint32_t sid = 0, aux = 0;
    seen_t s = { 0 };
    int r, a, nerr = 0;

    th_broker_start(&br, "--max-fds-per-client", "1", "--max-refusals", "6",
                    NULL);
    r = raw_hello(&rid, 0);
    a = raw_hello(&aid, 0);
    fill_receiver(a, rid, &sid);
    send_fd_msgs(a, rid, &sid, 4, 1, devnull);  /* 1 queued, 3 refused */
    send_fd_msgs(a, rid, &sid, 3, 1, devnull);  /* 3 refused: 6 */
    raw_ping(a, 1, &s);
    cr_assert_eq(s.errors[ENOBUFS], 6, "ENOBUFS: %u", s.errors[ENOBUFS]);
    send_fd_msgs(a, rid, &sid, 1, 1, devnull);  /* the 7th */
    cr_assert_geq(th_raw_drain_to_eof(a, &aux, &nerr), 0);
    cr_assert_eq(aux, EDQUOT, "last ERROR: %u", aux);
    close(a);
    pair_works();
    close(r);
    close(devnull);
    th_broker_stop(&br);
}
