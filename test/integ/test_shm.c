/*
 * test_shm.c - shared-memory (zero-copy) messages through a real brokerd:
 * byte-exact delivery, read-only views, hostile segments, descriptors and
 * releases, releases when processes die, the pool, fan-out, the automatic
 * threshold (one-way, request/reply, streams, attached mode), buffer rules,
 * warm reuse (a sender that never reads still gets its buffers back, held
 * views survive, one mapping per segment) and the broker's limits.
 *
 * Ordering facts the tests lean on (design.md, "Shared memory"): a client's
 * frames are handled by the broker in the order it sent them, and the
 * broker queues a RELEASE for an owner when it handles the receiver's
 * RELEASE.  So "receiver frees, then pings" means the broker has handled
 * the release, and "owner pings" then makes the owner's library read it.
 * Waits that depend on a process dying are loops of pings with the hang
 * guard only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create, F_ADD_SEALS, fallocate */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include <uv.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

TH_BROKER_SUITE(shm, 300);

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
/* The library's documented default for BROKER_OPT_SHM_THRESHOLD. */
#define DEF_THRESHOLD ((size_t)262144)

/* ---- small helpers ------------------------------------------------------ */

static broker_shm_stats_t pool(const broker_t *b)
{
    broker_shm_stats_t st;

    memset(&st, 0xa5, sizeof(st));
    broker_shm_stats(b, &st);
    return st;
}

/* Ping until the pool's in_use and buffers equal `want` (hang guard only):
 * the owner's library learns of releases by reading its socket. */
static void await_pool(broker_t *b, const broker_shm_stats_t *want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        TH_OK(broker_ping(b, TH_HANG_MS));
        broker_shm_stats_t st = pool(b);
        if (st.in_use == want->in_use && st.buffers == want->buffers)
            return;
        TH_CHECK(th_now_ms() < end,
                 "pool never went back: in_use %llu buffers %llu, want "
                 "in_use %llu buffers %llu",
                 (unsigned long long)st.in_use,
                 (unsigned long long)st.buffers,
                 (unsigned long long)want->in_use,
                 (unsigned long long)want->buffers);
        th_nap(&us);
    }
}

static void await_buffers(broker_t *b, uint64_t want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        TH_OK(broker_ping(b, TH_HANG_MS));
        broker_shm_stats_t st = pool(b);
        if (st.buffers == want)
            return;
        TH_CHECK(th_now_ms() < end, "pool holds %llu buffers, want %llu",
                 (unsigned long long)st.buffers, (unsigned long long)want);
        th_nap(&us);
    }
}

/* Ping (through b) until the broker holds `want` fds. */
static void await_broker_fds(broker_t *b, int want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        TH_OK(broker_ping(b, TH_HANG_MS));
        int n = th_fd_count(br.pid);
        if (n == want)
            return;
        TH_CHECK(th_now_ms() < end, "brokerd holds %d fds, want %d", n, want);
        th_nap(&us);
    }
}

/* Allocate a pool buffer of len bytes filled with pattern `seed`. */
static broker_buf_t *filled_buf(broker_t *b, size_t len, uint64_t seed)
{
    broker_buf_t *buf = NULL;

    TH_OK(broker_buf_alloc(b, len, &buf, TH_HANG_MS));
    TH_CHECK(buf != NULL && buf->data != NULL, "alloc gave no buffer");
    TH_CHECK(buf->size >= len, "asked %zu bytes, got %zu", len, buf->size);
    th_pattern(buf->data, len, seed, 0);
    return buf;
}

/* A received message is a byte-exact shm (or socket) delivery of seed. */
static void check_msg(const broker_msg_t *m, size_t len, uint64_t seed,
                      bool shm)
{
    long bad;

    TH_CHECK(m->kind == BROKER_MSG_DATA, "got %s", th_kind_str(m->kind));
    TH_CHECK(m->len == len, "message of %zu bytes, want %zu", m->len, len);
    TH_CHECK(!!(m->flags & BROKER_MSGF_SHM) == shm,
             "%zu-byte message %s BROKER_MSGF_SHM (flags 0x%x)", len,
             shm ? "without" : "with", m->flags);
    bad = th_pattern_check(m->data, len, seed, 0);
    TH_CHECK(bad < 0, "%zu-byte message differs at byte %ld", len, bad);
}

/* Lines of /proc/self/maps that map a memfd. */
static int memfd_mappings(void)
{
    char line[512];
    int n = 0;
    FILE *f = fopen("/proc/self/maps", "r");

    TH_CHECK(f != NULL, "maps: %s", strerror(errno));
    while (fgets(line, sizeof(line), f))
        if (strstr(line, "/memfd:"))
            n++;
    fclose(f);
    return n;
}

/* A memfd of `size` bytes holding pattern `seed`, with `seals` added. */
static int test_memfd(uint64_t size, unsigned seals, uint64_t seed)
{
    int fd = memfd_create("test-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    TH_CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
    TH_CHECK(ftruncate(fd, (off_t)size) == 0, "ftruncate: %s",
             strerror(errno));
    if (size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        TH_CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
        th_pattern(p, size, seed, 0);
        munmap(p, size);
    }
    if (seals)
        TH_CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0, "F_ADD_SEALS: %s",
                 strerror(errno));
    return fd;
}

#define SEALS_OK (BK_SEALS_REQUIRED | F_SEAL_SEAL)

/* ---- a raw protocol client ---------------------------------------------- */

/* Speaks the wire format directly: for hostile senders and receivers and
 * to see exactly what the broker sends (SEGMENT frames and their fds,
 * RELEASE records). */
typedef struct raw {
    int fd;
    uint64_t id;
    uint32_t next_req, next_sid;
    uint8_t *pkt;
    size_t len, off;
    int fds[BK_MAX_FDS_HARD];
    unsigned nfds, fdi;
    int nerr;                   /* ERROR frames seen */
    uint32_t last_err;          /* aux of the last one */
} raw_t;

static const bk_limits_t raw_lim = { BK_MAX_MAX_PACKET, BK_MAX_FDS_HARD,
                                     BK_MAX_NAME };

static void raw_open(raw_t *c)
{
    bk_welcome_t w;

    memset(c, 0, sizeof(*c));
    c->fd = th_raw_connect_hello_caps(br.sock, BK_HELLO_SHM, &w);
    c->id = w.client_id;
    c->pkt = malloc(BK_MAX_MAX_PACKET);
    TH_CHECK(c->pkt != NULL, "oom");
}

static void raw_close(raw_t *c)
{
    while (c->fdi < c->nfds)
        close(c->fds[c->fdi++]);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->pkt);
    c->pkt = NULL;
}

/* The next frame from the broker: 1 with *h, *payload (valid until the
 * next call) and *fd (the frame's first fd, now the caller's, or -1); 0
 * once the broker closed the connection. */
static int raw_next(raw_t *c, bk_hdr_t *h, const uint8_t **payload, int *fd)
{
    for (;;) {
        if (c->off < c->len) {
            TH_CHECK(bk_pkt_next(c->pkt, c->len, &c->off, h, payload) == 1,
                     "malformed packet from the broker");
            int v = bk_frame_check_from_broker(h, *payload, &raw_lim);
            TH_CHECK(v == 0, "broker sent an invalid frame (type %u): %d",
                     h->type, v);
            *fd = -1;
            for (unsigned k = 0; k < h->nfds; k++) {
                TH_CHECK(c->fdi < c->nfds, "frame announces %u fds, packet "
                         "has %u", h->nfds, c->nfds);
                if (k == 0)
                    *fd = c->fds[c->fdi++];
                else
                    close(c->fds[c->fdi++]);
            }
            if (h->type == BK_T_ERROR) {
                c->nerr++;
                c->last_err = h->aux;
            }
            return 1;
        }
        TH_CHECK(c->fdi == c->nfds, "%u fds arrived for no frame",
                 c->nfds - c->fdi);
        c->len = c->off = 0;
        c->nfds = c->fdi = 0;

        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int r;
        do {
            r = poll(&p, 1, TH_HANG_MS);
        } while (r < 0 && errno == EINTR);
        TH_CHECK(r == 1, "raw client: the broker sent nothing (hang guard)");
        ssize_t n = bk_sock_recv(c->fd, c->pkt, BK_MAX_MAX_PACKET, c->fds,
                                 &c->nfds, BK_MAX_FDS_HARD);
        if (n == -EAGAIN)
            continue;
        if (n == 0 || n == -ECONNRESET)
            return 0;
        TH_CHECK(n > 0, "raw recv: %s", strerror((int)-n));
        c->len = (size_t)n;
    }
}

/* Read until the broker closes the connection; fds are closed. */
static void raw_drain(raw_t *c)
{
    bk_hdr_t h;
    const uint8_t *pl;
    int fd;

    while (raw_next(c, &h, &pl, &fd) == 1)
        if (fd >= 0)
            close(fd);
}

/* The broker disconnects c with ERROR EPROTO. */
static void raw_expect_eproto(raw_t *c, const char *what)
{
    raw_drain(c);
    TH_CHECK(c->nerr >= 1, "%s: disconnected without an ERROR", what);
    TH_CHECK(c->last_err == EPROTO, "%s: ERROR code %u, want EPROTO (%d)",
             what, c->last_err, EPROTO);
}

/* Send a CTRL request (with at most one fd) and return the CTRL_REPLY
 * code (0 or a positive errno), or -1 if the broker closed first.  Other
 * frames met on the way are dropped. */
static long raw_ctrl(raw_t *c, uint32_t op, const void *pl, uint32_t len,
                     int fd)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .aux = op, .stream = ++c->next_req, .length = len,
                   .nfds = fd >= 0 ? 1 : 0 };
    const uint8_t *rp;
    bk_hdr_t r;
    int rfd;

    TH_OK(th_raw_send(c->fd, &h, pl, fd >= 0 ? &fd : NULL, fd >= 0));
    while (raw_next(c, &r, &rp, &rfd) == 1) {
        if (rfd >= 0)
            close(rfd);
        if (r.type == BK_T_CTRL_REPLY && r.stream == h.stream)
            return r.aux;
    }
    return -1;
}

/* Register memfd `fd` as segment `segid` of `size` bytes. */
static long raw_register(raw_t *c, uint32_t segid, uint64_t size, int fd)
{
    uint8_t pl[BK_SEG_REG_SIZE];

    bk_put32(pl, segid);
    bk_put32(pl + 4, 0);
    bk_put64(pl + 8, size);
    return raw_ctrl(c, BK_OP_SEGMENT, pl, sizeof(pl), fd);
}

/* Send a one-way shm message carrying descriptor bytes `desc`, to client
 * `dest` or (dest 0) to `name`. */
static int raw_send_desc_bytes(raw_t *c, uint64_t dest, const char *name,
                               const uint8_t desc[BK_SHM_DESC_SIZE])
{
    uint8_t pl[BK_MAX_NAME + BK_SHM_DESC_SIZE];
    size_t nlen = name ? strlen(name) : 0;
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                   .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_SHM,
                   .stream = ++c->next_sid, .dest = name ? 0 : dest,
                   .length = (uint32_t)(nlen + BK_SHM_DESC_SIZE) };

    if (name) {
        h.flags |= BK_F_NAME;
        h.aux = (uint32_t)nlen;
        memcpy(pl, name, nlen);
    }
    memcpy(pl + nlen, desc, BK_SHM_DESC_SIZE);
    return th_raw_send(c->fd, &h, pl, NULL, 0);
}

static int raw_send_desc(raw_t *c, uint64_t dest, const char *name,
                         uint32_t segid, uint64_t offset, uint64_t length)
{
    bk_shm_desc_t d = { segid, offset, length };
    uint8_t pl[BK_SHM_DESC_SIZE];

    bk_shm_desc_encode(&d, pl);
    return raw_send_desc_bytes(c, dest, name, pl);
}

/* Send one RELEASE frame of `n` records {peer, segid, count, offset}. */
typedef struct rel_rec {
    uint64_t peer;
    uint32_t segid;
    uint32_t count;
    uint64_t offset;
} rel_rec_t;

static int raw_release(raw_t *c, const rel_rec_t *r, unsigned n)
{
    uint8_t pl[8 * BK_RELEASE_SIZE];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_RELEASE,
                   .length = n * BK_RELEASE_SIZE };

    TH_CHECK(n <= 8, "too many records");
    for (unsigned i = 0; i < n; i++) {
        uint8_t *p = pl + i * BK_RELEASE_SIZE;
        bk_put64(p, r[i].peer);
        bk_put32(p + 8, r[i].segid);
        bk_put32(p + 12, r[i].count);
        bk_put64(p + 16, r[i].offset);
    }
    return th_raw_send(c->fd, &h, pl, NULL, 0);
}

/* What a raw receiver learnt from the broker: the segments it was given
 * (mapped read-only) and the descriptors delivered. */
#define RAW_MAX_SEG 8
#define RAW_MAX_DESC 16

typedef struct raw_seg {
    uint64_t owner;
    uint32_t segid;
    uint64_t size;
    int fd;
    const uint8_t *map;
} raw_seg_t;

typedef struct raw_rx {
    raw_seg_t seg[RAW_MAX_SEG];
    unsigned nseg;
    bk_shm_desc_t desc[RAW_MAX_DESC];
    uint64_t source[RAW_MAX_DESC];
    unsigned ndesc;
} raw_rx_t;

static raw_seg_t *raw_rx_seg(raw_rx_t *rx, uint64_t owner, uint32_t segid)
{
    for (unsigned i = 0; i < rx->nseg; i++)
        if (rx->seg[i].owner == owner && rx->seg[i].segid == segid)
            return &rx->seg[i];
    return NULL;
}

/* Read frames until `want` more shm descriptors arrived.  Checks every
 * SEGMENT frame (one read-only fd, sealed, the announced size, announced
 * once) and that each descriptor's segment was announced before it and
 * the range fits. */
static void raw_rx_collect(raw_t *c, raw_rx_t *rx, unsigned want)
{
    unsigned goal = rx->ndesc + want;
    bk_hdr_t h;
    const uint8_t *pl;
    int fd;

    while (rx->ndesc < goal) {
        TH_CHECK(raw_next(c, &h, &pl, &fd) == 1,
                 "broker closed the raw receiver (ERROR %u)", c->last_err);
        if (h.type == BK_T_SEGMENT) {
            uint32_t segid = bk_get32(pl);
            uint64_t size = bk_get64(pl + 8);
            struct stat st;
            TH_CHECK(fd >= 0, "SEGMENT without an fd");
            TH_CHECK(!raw_rx_seg(rx, h.source, segid),
                     "segment %u of %llu announced twice", segid,
                     (unsigned long long)h.source);
            TH_CHECK(rx->nseg < RAW_MAX_SEG, "too many segments");
            TH_CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY,
                     "the segment fd given to a receiver is writable");
            int seals = fcntl(fd, F_GET_SEALS);
            TH_CHECK(seals >= 0 &&
                     (seals & BK_SEALS_REQUIRED) == BK_SEALS_REQUIRED,
                     "segment seals 0x%x", seals);
            /* Not even a read-write reopen lets a receiver write. */
            char rw_path[64];
            snprintf(rw_path, sizeof(rw_path), "/proc/self/fd/%d", fd);
            int rw = open(rw_path, O_RDWR | O_CLOEXEC);
            if (rw >= 0) {
                TH_CHECK(write(rw, "x", 1) < 0 && errno == EPERM,
                         "a receiver could write the owner's segment");
                TH_CHECK(mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_SHARED, rw, 0) == MAP_FAILED,
                         "a receiver could map the segment writable");
                close(rw);
            }
            TH_CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == size,
                     "SEGMENT says %llu bytes, the memfd has %lld",
                     (unsigned long long)size, (long long)st.st_size);
            void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
            TH_CHECK(map != MAP_FAILED, "mmap segment: %s", strerror(errno));
            rx->seg[rx->nseg++] = (raw_seg_t){ h.source, segid, size, fd,
                                              map };
            continue;
        }
        if (fd >= 0)
            close(fd);
        if (h.type != BK_T_DATA)
            continue;
        TH_CHECK(h.flags & BK_F_SHM, "plain DATA where shm was expected");
        TH_CHECK(h.length == BK_SHM_DESC_SIZE, "descriptor of %u bytes",
                 h.length);
        TH_CHECK(rx->ndesc < RAW_MAX_DESC, "too many descriptors");
        bk_shm_desc_t *d = &rx->desc[rx->ndesc];
        TH_CHECK(bk_shm_desc_decode(pl, d) == 0, "bad descriptor");
        raw_seg_t *s = raw_rx_seg(rx, h.source, d->segid);
        TH_CHECK(s != NULL, "descriptor for segment %u before its SEGMENT",
                 d->segid);
        TH_CHECK(bk_shm_desc_fits(d, s->size), "descriptor out of range");
        rx->source[rx->ndesc++] = h.source;
    }
}

static const uint8_t *raw_rx_data(raw_rx_t *rx, unsigned i)
{
    raw_seg_t *s = raw_rx_seg(rx, rx->source[i], rx->desc[i].segid);

    return s->map + rx->desc[i].offset;
}

static void raw_rx_free(raw_rx_t *rx)
{
    for (unsigned i = 0; i < rx->nseg; i++) {
        munmap((void *)rx->seg[i].map, rx->seg[i].size);
        close(rx->seg[i].fd);
    }
    rx->nseg = rx->ndesc = 0;
}

/* ---- zero-copy round trip -------------------------------------------------- */

struct echo_arg {
    th_barrier_t ready;         /* echo -> test: its client id */
    th_barrier_t done;          /* test -> echo */
    size_t len;
};

/* Receives one shm message, checks it, copies it into its own pool buffer
 * and sends that back. */
static int shm_echo(void *p)
{
    struct echo_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_shm_stats_t base = pool(b);
    broker_buf_t *buf;
    broker_msg_t *m;

    th_register(b, "svc.shm.echo");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv(b);
    check_msg(m, a->len, 1, true);
    TH_CHECK(m->name && !strcmp(m->name, "svc.shm.echo"),
             "name '%s'", m->name ? m->name : "(null)");
    TH_OK(broker_buf_alloc(b, a->len, &buf, TH_HANG_MS));
    memcpy(buf->data, m->data, a->len);
    TH_OK(broker_buf_send_id(b, m->source, buf, a->len));
    broker_buf_free(b, buf);
    broker_msg_free(m);
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_wait(&a->done);
    await_pool(b, &base);
    broker_close(b);
    return 0;
}

Test(shm, roundtrip_zero_copy_byte_exact)
{
    struct echo_arg arg = { .len = th_scaled(256 * MIB, MIB) };
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    long hwm0 = th_proc_kb(br.pid, "VmHWM");
    broker_buf_t *buf;
    broker_msg_t *m;
    pid_t pid;

    cr_assert_eq(broker_limits(a)->max_segments, BK_DEF_MAX_SEGMENTS);
    cr_assert_eq(broker_limits(a)->max_shm, BK_DEF_MAX_SHM);
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    pid = th_spawn(shm_echo, &arg);
    uint64_t echo_id = th_barrier_wait(&arg.ready);

    buf = filled_buf(a, arg.len, 1);
    cr_assert_eq(broker_buf_send(a, "svc.shm.echo", buf, arg.len), 0);
    broker_buf_free(a, buf);
    m = th_recv(a);
    check_msg(m, arg.len, 1, true);
    cr_assert_eq(m->source, echo_id);
    cr_assert_null(m->name, "sent to our id, not to a name");
    broker_msg_free(m);
    await_pool(a, &base);
    th_barrier_signal(&arg.done, 0);
    th_join(pid);

    /* Zero copy: the payload never passed through the broker.  (Memory,
     * not time; only meaningful when the payload dwarfs the noise.) */
    long hwm1 = th_proc_kb(br.pid, "VmHWM");
    if (arg.len >= 64 * MIB && hwm0 > 0 && hwm1 > 0)
        cr_assert_lt((size_t)(hwm1 - hwm0) * KIB, arg.len / 4,
                     "brokerd's peak RSS grew by %ld KiB for a %zu-byte "
                     "message", hwm1 - hwm0, arg.len);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_broker_stop(&br);
}

/* ---- the receiver's view is read-only --------------------------------------- */

struct ro_arg {
    th_barrier_t ready;
    size_t len;
};

static int write_to_view(void *p)
{
    volatile uint8_t *d = p;

    d[0] = (uint8_t)(d[0] ^ 0xff);
    return 0;                   /* reached only if the write went through */
}

static int mprotect_view(void *p)
{
    long page = sysconf(_SC_PAGESIZE);
    void *start = (void *)((uintptr_t)p & ~(uintptr_t)(page - 1));

    if (mprotect(start, (size_t)page, PROT_READ | PROT_WRITE) == 0) {
        fprintf(stderr, "mprotect made the shared view writable\n");
        return 1;
    }
    return errno == EACCES ? 0 : 1;
}

/* The file behind the mapping that holds addr, reopened read-write
 * through /proc/self/map_files (needs CAP_SYS_ADMIN), or -1. */
static int reopen_view_rw(const void *addr)
{
    char line[512], path[128];
    uintptr_t a = (uintptr_t)addr;
    FILE *f = fopen("/proc/self/maps", "r");
    int fd = -1;

    TH_CHECK(f != NULL, "maps: %s", strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2 || a < lo || a >= hi)
            continue;
        snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", lo, hi);
        fd = open(path, O_RDWR | O_CLOEXEC);
        break;
    }
    fclose(f);
    return fd;
}

/* Even with the file reopened read-write, the owner's memory cannot be
 * written: no writable mapping, no write(2) (F_SEAL_FUTURE_WRITE). */
static void check_no_write_through(int rw, uint64_t size)
{
    void *w = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);

    TH_CHECK(w == MAP_FAILED, "a writable mapping of the owner's segment");
    TH_CHECK(errno == EPERM, "mmap: %s, want EPERM", strerror(errno));
    TH_CHECK(pwrite(rw, "x", 1, 0) == -1, "write(2) to the owner's segment");
    TH_CHECK(errno == EPERM, "pwrite: %s, want EPERM", strerror(errno));
    TH_CHECK(ftruncate(rw, 0) == -1 && errno == EPERM, "truncate");
}

static int ro_receiver(void *p)
{
    struct ro_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;
    int st;

    th_register(b, "svc.shm.ro");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv(b);
    check_msg(m, a->len, 2, true);

    /* A write through the view faults (in a grandchild, which dies). */
    st = th_join_status(th_spawn(write_to_view, m->data));
    TH_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
             "writing to a received view: wait status 0x%x, want SIGSEGV",
             st);
    st = th_join_status(th_spawn(write_to_view,
                                 (uint8_t *)m->data + a->len - 1));
    TH_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
             "writing the last byte: wait status 0x%x", st);
    /* Nor can the mapping be made writable: the fd is read-only. */
    st = th_join_status(th_spawn(mprotect_view, m->data));
    TH_CHECK(TH_EXITED(st, 0),
             "mprotect(PROT_WRITE) on a view must fail with EACCES");
    /* Nor through the file behind it, where /proc lets us reopen it. */
    int rw = reopen_view_rw(m->data);
    if (rw >= 0) {
        check_no_write_through(rw, a->len);
        close(rw);
    }
    check_msg(m, a->len, 2, true);
    broker_msg_free(m);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

Test(shm, receiver_view_is_read_only)
{
    struct ro_arg arg = { .len = MIB };
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    broker_buf_t *buf;
    pid_t pid;

    th_barrier_init(&arg.ready);
    pid = th_spawn(ro_receiver, &arg);
    th_barrier_wait(&arg.ready);
    buf = filled_buf(a, arg.len, 2);
    cr_assert_eq(broker_buf_send(a, "svc.shm.ro", buf, arg.len), 0);
    broker_buf_free(a, buf);
    th_join(pid);
    await_pool(a, &base);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- hostile segment registrations ----------------------------------------- */

Test(shm, bad_segments_are_refused_with_einval)
{
    const uint64_t size = 64 * KIB;
    broker_t *obs = th_connect(&br);
    raw_t c;
    int fd, p[2];
    char path[192];

    raw_open(&c);
    TH_OK(broker_ping(obs, TH_HANG_MS));
    int fd0 = th_fd_count(br.pid);

    /* Not sealed at all. */
    fd = test_memfd(size, 0, 3);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "unsealed memfd");
    close(fd);
    /* Sealed against only one of shrinking and growing. */
    fd = test_memfd(size, F_SEAL_SHRINK, 3);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "SHRINK only");
    close(fd);
    fd = test_memfd(size, F_SEAL_GROW | F_SEAL_SEAL, 3);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "GROW only");
    close(fd);
    /* Without FUTURE_WRITE a receiver could reopen it read-write. */
    fd = test_memfd(size, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, 3);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "no FUTURE_WRITE");
    close(fd);
    /* Created without MFD_ALLOW_SEALING: only F_SEAL_SEAL is set. */
    fd = memfd_create("test-shm-nosealing", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "no sealing");
    close(fd);
    /* Sealed, but the size it claims is not its size. */
    fd = test_memfd(size, SEALS_OK, 3);
    cr_assert_eq(raw_register(&c, 1, size - 4096, fd), EINVAL, "smaller");
    cr_assert_eq(raw_register(&c, 1, size + 4096, fd), EINVAL, "larger");
    cr_assert_eq(raw_register(&c, 1, size + 1, fd), EINVAL, "one more");
    close(fd);
    /* Not a memfd. */
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(raw_register(&c, 1, size, p[0]), EINVAL, "pipe read end");
    cr_assert_eq(raw_register(&c, 1, size, p[1]), EINVAL, "pipe write end");
    close(p[0]);
    close(p[1]);
    snprintf(path, sizeof(path), "%s/plain-file", br.dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "regular file");
    close(fd);
    unlink(path);
    fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(raw_register(&c, 1, size, fd), EINVAL, "/dev/zero");
    close(fd);

    /* None of the refused fds stayed in the broker; the connection is
     * still fine and segment id 1 is still free. */
    cr_assert(th_broker_alive(&br));
    cr_assert_eq(raw_ctrl(&c, BK_OP_PING, NULL, 0, -1), 0);
    cr_assert_eq(th_fd_count(br.pid), fd0, "brokerd kept refused fds");
    cr_assert_eq(th_status_value(obs, "shm_segments"), 0);

    fd = test_memfd(size, SEALS_OK, 3);
    cr_assert_eq(raw_register(&c, 1, size, fd), 0, "a good segment");
    close(fd);
    /* SHRINK|GROW|FUTURE_WRITE is what is required; SEAL is optional. */
    fd = test_memfd(2 * size, BK_SEALS_REQUIRED, 3);
    cr_assert_eq(raw_register(&c, 2, 2 * size, fd), 0, "no F_SEAL_SEAL");
    close(fd);
    cr_assert_eq(th_fd_count(br.pid), fd0 + 2,
                 "brokerd keeps one fd per segment");
    /* A segment id in use. */
    fd = test_memfd(size, SEALS_OK, 3);
    cr_assert_eq(raw_register(&c, 1, size, fd), EEXIST);
    cr_assert_eq(raw_register(&c, 2, size, fd), EEXIST);
    close(fd);
    cr_assert_eq(th_fd_count(br.pid), fd0 + 2);
    cr_assert_eq(th_status_value(obs, "shm_segments"), 2);
    cr_assert_eq(th_status_value(obs, "shm_bytes"), 3 * size);

    raw_close(&c);
    await_broker_fds(obs, fd0 - 1);
    cr_assert_eq(th_status_value(obs, "shm_segments"), 0);
    cr_assert_eq(th_status_value(obs, "shm_bytes"), 0);
    broker_close(obs);
    th_broker_stop(&br);
}

/* Malformed SEGMENT requests are protocol errors, not refusals. */
Test(shm, malformed_segment_requests_disconnect)
{
    const uint64_t size = 64 * KIB;
    broker_t *obs = th_connect(&br);
    uint8_t pl[BK_SEG_REG_SIZE];
    raw_t c;
    int fd;

    TH_OK(broker_ping(obs, TH_HANG_MS));
    int fd0 = th_fd_count(br.pid);
    fd = test_memfd(size, SEALS_OK, 4);

    /* No fd. */
    raw_open(&c);
    bk_put32(pl, 1);
    bk_put32(pl + 4, 0);
    bk_put64(pl + 8, size);
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .aux = BK_OP_SEGMENT, .stream = 1,
                   .length = BK_SEG_REG_SIZE };
    cr_assert_eq(th_raw_send(c.fd, &h, pl, NULL, 0), 0);
    raw_expect_eproto(&c, "SEGMENT without an fd");
    raw_close(&c);

    /* nfds says 1, nothing attached. */
    raw_open(&c);
    h.nfds = 1;
    cr_assert_eq(th_raw_send(c.fd, &h, pl, NULL, 0), 0);
    raw_expect_eproto(&c, "nfds 1 with no fd");
    raw_close(&c);

    /* Two fds. */
    raw_open(&c);
    int two[2] = { fd, fd };
    h.nfds = 2;
    cr_assert_eq(th_raw_send(c.fd, &h, pl, two, 2), 0);
    raw_expect_eproto(&c, "two fds");
    raw_close(&c);

    /* Segment id 0, reserved word set, size 0. */
    static const struct { uint32_t segid, rsv; uint64_t size; } bad[] = {
        { 0, 0, 64 * KIB }, { BK_SEGID_MAX + 1, 0, 64 * KIB },
        { 1, 7, 64 * KIB }, { 1, 0, 0 },
    };
    h.nfds = 1;
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        raw_open(&c);
        bk_put32(pl, bad[i].segid);
        bk_put32(pl + 4, bad[i].rsv);
        bk_put64(pl + 8, bad[i].size);
        cr_assert_eq(th_raw_send(c.fd, &h, pl, &fd, 1), 0);
        raw_expect_eproto(&c, "bad SEGMENT payload");
        raw_close(&c);
    }
    close(fd);
    cr_assert(th_broker_alive(&br));
    await_broker_fds(obs, fd0);
    cr_assert_eq(th_status_value(obs, "shm_segments"), 0);
    broker_close(obs);
    th_broker_stop(&br);
}

/* ---- seals: no truncation, no SIGBUS ------------------------------------------ */

struct sealed_arg {
    th_barrier_t ready;         /* receiver -> test */
    th_barrier_t got;           /* receiver -> test: read it all */
    size_t len;
    size_t hole;                /* offset of a punched-out page */
};

static int sealed_receiver(void *p)
{
    struct sealed_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;

    th_register(b, "svc.shm.sealed");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv_kind(b, BROKER_MSG_DATA);
    TH_CHECK(m->flags & BROKER_MSGF_SHM, "not an shm message");
    TH_CHECK(m->len == a->len, "len %zu", m->len);
    /* Every byte, intact: the owner could not punch a hole either. */
    const uint8_t *d = m->data;
    TH_CHECK(th_pattern_check(d, a->len, 5, 0) < 0, "content changed");
    th_barrier_signal(&a->got, 0);
    broker_msg_free(m);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

Test(shm, sealed_segment_cannot_be_truncated)
{
    struct sealed_arg arg = { .len = MIB, .hole = 512 * KIB };
    long page = sysconf(_SC_PAGESIZE);
    raw_t s;
    int fd;
    pid_t pid;

    /* A sender of its own memfd: it cannot take the memory away from
     * under a receiver. */
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.got);
    pid = th_spawn(sealed_receiver, &arg);
    th_barrier_wait(&arg.ready);
    raw_open(&s);
    fd = test_memfd(arg.len, SEALS_OK, 5);
    cr_assert_eq(raw_register(&s, 1, arg.len, fd), 0);
    cr_assert_eq(ftruncate(fd, 0), -1);
    cr_assert_eq(errno, EPERM, "shrink: %s", strerror(errno));
    cr_assert_eq(ftruncate(fd, (off_t)arg.len / 2), -1);
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(ftruncate(fd, (off_t)arg.len * 2), -1);
    cr_assert_eq(errno, EPERM, "grow: %s", strerror(errno));
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1,
                 "F_SEAL_SEAL holds");
    /* F_SEAL_FUTURE_WRITE refuses hole punching through the fd too. */
    cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           (off_t)arg.hole, page), -1);
    cr_assert_eq(errno, EPERM, "punch hole: %s", strerror(errno));
    cr_assert_eq(raw_send_desc(&s, 0, "svc.shm.sealed", 1, 0, arg.len), 0);
    th_barrier_wait(&arg.got);
    cr_assert_eq(ftruncate(fd, 0), -1, "still sealed after delivery");
    th_join(pid);               /* a SIGBUS would show here */
    cr_assert(th_broker_alive(&br));
    close(fd);
    raw_close(&s);

    /* The library's own segments, as the broker hands them to a
     * receiver: read-only, sealed; even reopened writable through /proc
     * they cannot change size. */
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    raw_t r;
    raw_rx_t rx = { .nseg = 0 };
    raw_open(&r);
    broker_buf_t *buf = filled_buf(a, 64 * KIB, 6);
    cr_assert_eq(broker_buf_send_id(a, r.id, buf, 64 * KIB), 0);
    broker_buf_free(a, buf);
    raw_rx_collect(&r, &rx, 1);
    cr_assert_eq(rx.desc[0].length, 64 * KIB);
    cr_assert_lt(th_pattern_check(raw_rx_data(&rx, 0), 64 * KIB, 6, 0), 0);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", rx.seg[0].fd);
    int rw = open(path, O_RDWR | O_CLOEXEC);
    if (rw >= 0) {
        cr_assert_eq(ftruncate(rw, 0), -1);
        cr_assert_eq(errno, EPERM);
        cr_assert_eq(ftruncate(rw, (off_t)rx.seg[0].size * 2), -1);
        cr_assert_eq(errno, EPERM);
        check_no_write_through(rw, rx.seg[0].size);
        close(rw);
    }
    cr_assert_lt(th_pattern_check(raw_rx_data(&rx, 0), 64 * KIB, 6, 0), 0);
    rel_rec_t rel = { broker_client_id(a), rx.desc[0].segid, 1,
                      rx.desc[0].offset };
    cr_assert_eq(raw_release(&r, &rel, 1), 0);
    await_pool(a, &base);
    raw_rx_free(&rx);
    raw_close(&r);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.got);
    th_broker_stop(&br);
}

/* ---- descriptors out of range --------------------------------------------------- */

/* A library client that sends one message to another and checks it. */
static void bystanders_talk(broker_t *x, broker_t *y, uint64_t n)
{
    uint8_t out[32];
    broker_msg_t *m;

    th_pattern(out, sizeof(out), 1000 + n, 0);
    TH_OK(broker_send_id(x, broker_client_id(y), out, sizeof(out), NULL, 0));
    m = th_recv_kind(y, BROKER_MSG_DATA);
    TH_CHECK(m->len == sizeof(out) && !memcmp(m->data, out, sizeof(out)),
             "bystander message %llu", (unsigned long long)n);
    broker_msg_free(m);
}

enum bad_desc {
    BD_PAST_END,            /* offset 0, length size + 1 */
    BD_LAST_BYTE,           /* ends one byte past the end */
    BD_START_PAST_END,      /* offset size + 1, length 0 */
    BD_WRAP,                /* offset + length wraps around 2^64 */
    BD_HUGE_OFFSET,
    BD_UNREGISTERED,        /* a segment id nobody registered */
    BD_NOT_OURS,            /* the id of another client's segment */
    BD_RESERVED,            /* reserved word not 0 */
    BD_SEGID_ZERO,
    BD_NAMED_PAST_END,      /* to a name, out of range */
    BD_COUNT_
};

static const char *const bad_desc_names[] = {
    "length past the end", "last byte past the end", "offset past the end",
    "offset+length wraps", "huge offset", "unregistered segment",
    "another client's segment", "reserved word set", "segment id 0",
    "named, out of range",
};

Test(shm, out_of_range_descriptor_disconnects_sender)
{
    const uint64_t size = 64 * KIB;
    broker_t *rx = th_connect(&br), *x = th_connect(&br),
             *y = th_connect(&br);
    broker_msg_t *m;
    raw_t good, bad;
    int gfd;

    th_register(rx, "svc.shm.target");
    TH_OK(broker_ping(rx, TH_HANG_MS));
    int fd_pre = th_fd_count(br.pid);
    raw_open(&good);
    gfd = test_memfd(size, SEALS_OK, 7);
    cr_assert_eq(raw_register(&good, 1, size, gfd), 0);
    int fd_mid = th_fd_count(br.pid);

    for (int k = 0; k < BD_COUNT_; k++) {
        const char *what = bad_desc_names[k];
        uint8_t desc[BK_SHM_DESC_SIZE];
        bk_shm_desc_t d = { 1, 0, 16 };
        int bfd = -1;
        raw_open(&bad);
        if (k != BD_NOT_OURS) {
            bfd = test_memfd(size, SEALS_OK, 8);
            cr_assert_eq(raw_register(&bad, 1, size, bfd), 0, "%s", what);
        }
        switch ((enum bad_desc)k) {
        case BD_PAST_END:       d.length = size + 1; break;
        case BD_LAST_BYTE:      d.offset = size - 10; d.length = 11; break;
        case BD_START_PAST_END: d.offset = size + 1; d.length = 0; break;
        case BD_WRAP:           d.offset = 8; d.length = UINT64_MAX - 4;
                                break;
        case BD_HUGE_OFFSET:    d.offset = UINT64_MAX - 1; d.length = 4;
                                break;
        case BD_UNREGISTERED:   d.segid = 2; break;
        case BD_NOT_OURS:       break;      /* segid 1 is good's */
        case BD_RESERVED:       break;
        case BD_SEGID_ZERO:     d.segid = 0; break;
        case BD_NAMED_PAST_END: d.length = size + 1; break;
        case BD_COUNT_:         break;
        }
        bk_shm_desc_encode(&d, desc);
        if (k == BD_RESERVED)
            desc[5] = 1;
        cr_assert_eq(raw_send_desc_bytes(&bad, broker_client_id(rx),
                                         k == BD_NAMED_PAST_END
                                             ? "svc.shm.target" : NULL,
                                         desc), 0, "%s", what);
        raw_expect_eproto(&bad, what);
        raw_close(&bad);
        if (bfd >= 0)
            close(bfd);
        cr_assert(th_broker_alive(&br), "brokerd died on: %s", what);
        /* Nothing reached the receiver; everybody else is fine. */
        cr_assert_eq(broker_ping(rx, TH_HANG_MS), 0, "%s", what);
        cr_assert_eq(broker_recv(rx, &m, 0), -ETIMEDOUT,
                     "%s: the receiver got something", what);
        bystanders_talk(x, y, (uint64_t)k);
        await_broker_fds(x, fd_mid);
    }

    /* In range, up to the last byte, and an empty one at the end. */
    cr_assert_eq(raw_send_desc(&good, broker_client_id(rx), NULL, 1,
                               size - 10, 10), 0);
    cr_assert_eq(raw_send_desc(&good, 0, "svc.shm.target", 1, size, 0), 0);
    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_SHM);
    cr_assert_eq(m->source, good.id);
    cr_assert_eq(m->len, 10);
    cr_assert_lt(th_pattern_check(m->data, 10, 7, size - 10), 0);
    broker_msg_free(m);
    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_SHM);
    cr_assert_eq(m->len, 0);
    cr_assert_str_eq(m->name, "svc.shm.target");
    broker_msg_free(m);
    TH_OK(broker_ping(rx, TH_HANG_MS));

    /* The owner is told: one record per release, naming the receiver. */
    uint64_t want_off[2] = { size - 10, size };
    bool seen[2] = { false, false };
    while (!seen[0] || !seen[1]) {
        bk_hdr_t h;
        const uint8_t *pl;
        int fd;
        cr_assert_eq(raw_next(&good, &h, &pl, &fd), 1, "no RELEASE");
        if (fd >= 0)
            close(fd);
        if (h.type != BK_T_RELEASE)
            continue;
        for (uint32_t o = 0; o < h.length; o += BK_RELEASE_SIZE) {
            uint64_t peer = bk_get64(pl + o), off = bk_get64(pl + o + 16);
            uint32_t segid = bk_get32(pl + o + 8), n = bk_get32(pl + o + 12);
            cr_assert_eq(peer, broker_client_id(rx), "peer %llu",
                         (unsigned long long)peer);
            cr_assert_eq(segid, 1);
            cr_assert_eq(n, 1);
            cr_assert(off == want_off[0] || off == want_off[1],
                      "offset %llu", (unsigned long long)off);
            seen[off == want_off[1]] = true;
        }
    }
    raw_close(&good);
    close(gfd);
    await_broker_fds(x, fd_pre);
    bystanders_talk(y, x, 99);
    broker_close(rx);
    broker_close(x);
    broker_close(y);
    th_broker_stop(&br);
}

/* ---- hostile receivers: releases ------------------------------------------------- */

Test(shm, bad_release_disconnects_receiver)
{
    broker_t *a = th_connect(&br);
    uint64_t aid = broker_client_id(a);
    broker_shm_stats_t base = pool(a);
    raw_rx_t rx = { .nseg = 0 };
    raw_t r;

    TH_OK(broker_ping(a, TH_HANG_MS));
    /* Two buffers to a raw receiver. */
    raw_open(&r);
    for (uint64_t i = 0; i < 2; i++) {
        broker_buf_t *buf = filled_buf(a, 8 * KIB, 60 + i);
        cr_assert_eq(broker_buf_send_id(a, r.id, buf, 8 * KIB), 0);
        broker_buf_free(a, buf);
    }
    raw_rx_collect(&r, &rx, 2);
    for (unsigned i = 0; i < 2; i++) {
        cr_assert_eq(rx.source[i], aid);
        cr_assert_eq(rx.desc[i].length, 8 * KIB);
        cr_assert_lt(th_pattern_check(raw_rx_data(&rx, i), 8 * KIB, 60 + i,
                                      0), 0, "descriptor %u", i);
    }
    cr_assert_eq(th_status_value(a, "shm_held"), 2);
    cr_assert_eq(pool(a).buffers, base.buffers + 2);

    /* A correct release of the first... */
    rel_rec_t rel = { aid, rx.desc[0].segid, 1, rx.desc[0].offset };
    cr_assert_eq(raw_release(&r, &rel, 1), 0);
    await_buffers(a, base.buffers + 1);
    cr_assert_eq(th_status_value(a, "shm_held"), 1);
    /* ...then two releases of the second, which it holds once. */
    rel = (rel_rec_t){ aid, rx.desc[1].segid, 2, rx.desc[1].offset };
    cr_assert_eq(raw_release(&r, &rel, 1), 0);
    raw_expect_eproto(&r, "releasing more than held");
    raw_close(&r);
    raw_rx_free(&rx);
    /* Its remaining reference went with it. */
    await_pool(a, &base);
    cr_assert_eq(th_status_value(a, "shm_held"), 0);

    /* Releasing what was never delivered to us. */
    raw_open(&r);
    rel = (rel_rec_t){ aid, 1, 1, 0 };
    cr_assert_eq(raw_release(&r, &rel, 1), 0);
    raw_expect_eproto(&r, "releasing a buffer never received");
    raw_close(&r);

    /* A record with count 0. */
    raw_open(&r);
    broker_buf_t *buf = filled_buf(a, 8 * KIB, 63);
    cr_assert_eq(broker_buf_send_id(a, r.id, buf, 8 * KIB), 0);
    broker_buf_free(a, buf);
    raw_rx_collect(&r, &rx, 1);
    rel = (rel_rec_t){ aid, rx.desc[0].segid, 0, rx.desc[0].offset };
    cr_assert_eq(raw_release(&r, &rel, 1), 0);
    raw_expect_eproto(&r, "count 0");
    raw_close(&r);
    raw_rx_free(&rx);
    await_pool(a, &base);

    /* The owner's connection was never disturbed. */
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    broker_msg_t *m;
    cr_assert_eq(broker_recv(a, &m, 0), -ETIMEDOUT);
    broker_close(a);
    th_broker_stop(&br);
}

/* ---- processes killed ------------------------------------------------------------- */

struct holder_arg {
    th_barrier_t ready;         /* holder -> test: client id */
    th_barrier_t got;           /* holder -> test: read n_read messages */
    unsigned n_read;
    size_t len;
};

/* Reads n_read shm messages, keeps them all, waits to be killed. */
static int holder(void *p)
{
    struct holder_arg *a = p;
    broker_t *b = th_connect(&br);

    th_register(b, "svc.shm.holder");
    th_barrier_signal(&a->ready, broker_client_id(b));
    for (unsigned i = 0; i < a->n_read; i++) {
        broker_msg_t *m = th_recv(b);
        check_msg(m, a->len, 100 + i, true);
        /* m is kept: a held view */
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->got, a->n_read);
    for (;;)
        pause();
}

Test(shm, receiver_killed_returns_buffers)
{
    struct holder_arg arg = { .n_read = 4, .len = 64 * KIB };
    const unsigned n_queued = 3;
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    pid_t pid;

    TH_OK(broker_ping(a, TH_HANG_MS));
    int fd0 = th_fd_count(br.pid);
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.got);
    pid = th_spawn(holder, &arg);
    th_barrier_wait(&arg.ready);
    for (unsigned i = 0; i < arg.n_read; i++) {
        broker_buf_t *buf = filled_buf(a, arg.len, 100 + i);
        cr_assert_eq(broker_buf_send(a, "svc.shm.holder", buf, arg.len), 0);
        broker_buf_free(a, buf);
    }
    th_barrier_wait(&arg.got);
    /* More that it never reads: still queued when it dies. */
    for (unsigned i = 0; i < n_queued; i++) {
        broker_buf_t *buf = filled_buf(a, arg.len, 200 + i);
        cr_assert_eq(broker_buf_send(a, "svc.shm.holder", buf, arg.len), 0);
        broker_buf_free(a, buf);
    }
    cr_assert_eq(th_status_value(a, "shm_held"), arg.n_read + n_queued);
    broker_shm_stats_t held = pool(a);
    cr_assert_eq(held.buffers, base.buffers + arg.n_read + n_queued);
    cr_assert_geq(held.in_use,
                  base.in_use + (arg.n_read + n_queued) * arg.len);

    kill(pid, SIGKILL);
    cr_assert(WIFSIGNALED(th_join_status(pid)));
    await_pool(a, &base);
    cr_assert_eq(th_status_value(a, "shm_held"), 0);
    /* The broker keeps one fd per registered segment and nothing for the
     * dead receiver. */
    await_broker_fds(a, fd0 + (int)th_status_value(a, "shm_segments"));

    /* The pool works as before. */
    broker_t *r2 = th_connect(&br);
    broker_buf_t *buf = filled_buf(a, arg.len, 300);
    cr_assert_eq(broker_buf_send_id(a, broker_client_id(r2), buf, arg.len),
                 0);
    broker_buf_free(a, buf);
    broker_msg_t *m = th_recv(r2);
    check_msg(m, arg.len, 300, true);
    broker_msg_free(m);
    TH_OK(broker_ping(r2, TH_HANG_MS));
    await_pool(a, &base);
    broker_close(r2);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.got);
    th_broker_stop(&br);
}

struct doomed_arg {
    th_barrier_t sent;          /* sender -> test */
    uint64_t to;
    size_t len;
};

/* Sends one shm message and waits to be killed. */
static int doomed_sender(void *p)
{
    struct doomed_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_buf_t *buf = filled_buf(b, a->len, 9);

    TH_OK(broker_buf_send_id(b, a->to, buf, a->len));
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->sent, 0);
    for (;;)
        pause();
}

Test(shm, sender_killed_view_stays_valid)
{
    broker_t *r = th_connect(&br);
    struct doomed_arg arg = { .to = broker_client_id(r),
                              .len = th_scaled(32 * MIB, MIB) };
    broker_msg_t *m;
    pid_t pid;

    TH_OK(broker_ping(r, TH_HANG_MS));
    th_barrier_init(&arg.sent);
    int fd0 = th_fd_count(br.pid);
    int self0 = th_fd_count(getpid());
    int maps0 = memfd_mappings();
    pid = th_spawn(doomed_sender, &arg);
    th_barrier_wait(&arg.sent);
    m = th_recv_kind(r, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_SHM);
    cr_assert_eq(m->len, arg.len);

    kill(pid, SIGKILL);
    cr_assert(WIFSIGNALED(th_join_status(pid)));
    /* The broker dropped the owner's segments (and told us). */
    await_broker_fds(r, fd0);
    cr_assert_eq(th_status_value(r, "shm_segments"), 0);
    TH_OK(broker_ping(r, TH_HANG_MS));
    /* Our view is intact, every byte of it. */
    long bad = th_pattern_check(m->data, m->len, 9, 0);
    cr_assert_lt(bad, 0, "view differs at byte %ld after its owner died",
                 bad);
    broker_msg_free(m);
    /* The release of a gone owner's buffer is dropped silently. */
    cr_assert_eq(broker_ping(r, TH_HANG_MS), 0);
    cr_assert_eq(broker_recv(r, &m, 0), -ETIMEDOUT);
    await_broker_fds(r, fd0);
    /* With no view left, the segment is unmapped and its fd closed. */
    cr_assert_eq(memfd_mappings(), maps0, "the dead owner's segment is "
                 "still mapped");
    cr_assert_eq(th_fd_count(getpid()), self0, "fds leaked in the receiver");
    broker_close(r);
    th_barrier_fini(&arg.sent);
    th_broker_stop(&br);
}

/* ---- the pool: exhaustion and reuse ---------------------------------------------- */

struct pool_arg {
    th_barrier_t ready;         /* receiver -> test */
    th_barrier_t got;           /* receiver -> test */
    th_barrier_t go;            /* test -> receiver: value = how many to free */
    unsigned n_hold;            /* phase 1: hold this many */
    size_t len;
    unsigned n_stream;          /* phase 2: receive, check, free each */
    size_t fallback_len;
};

static int pool_receiver(void *p)
{
    struct pool_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t **held = calloc(a->n_hold, sizeof(*held));
    broker_msg_t *m;

    TH_CHECK(held != NULL, "oom");
    th_register(b, "svc.shm.pool");
    th_barrier_signal(&a->ready, broker_client_id(b));
    for (unsigned i = 0; i < a->n_hold; i++) {
        held[i] = th_recv(b);
        check_msg(held[i], a->len, 400 + i, true);
    }
    th_barrier_signal(&a->got, 0);
    /* With the pool full, a big broker_send() takes the socket path. */
    m = th_recv(b);
    check_msg(m, a->fallback_len, 499, false);
    broker_msg_free(m);
    th_barrier_signal(&a->got, 0);
    /* Free one, then the rest, when told. */
    th_barrier_wait(&a->go);
    broker_msg_free(held[0]);
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->got, 0);
    th_barrier_wait(&a->go);
    for (unsigned i = 1; i < a->n_hold; i++)
        broker_msg_free(held[i]);
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->got, 0);
    free(held);
    /* Reuse: many more than the pool holds. */
    for (unsigned i = 0; i < a->n_stream; i++) {
        m = th_recv(b);
        check_msg(m, a->len, 1000 + i, true);
        broker_msg_free(m);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->got, 0);
    broker_close(b);
    return 0;
}

Test(shm, pool_exhaustion_and_reuse)
{
    const uint64_t seg = MIB, pool_max = 2 * MIB;
    struct pool_arg arg = { .len = 256 * KIB,
                            .n_stream = (unsigned)th_scaled(400, 40),
                            .fallback_len = 512 * KIB };
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    broker_buf_t *bufs[64], *extra = NULL;
    unsigned n = 0;
    int r;
    pid_t pid;

    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, seg), 0);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_POOL_MAX, pool_max), 0);

    /* Fill the pool: allocation without waiting fails with EAGAIN. */
    for (;;) {
        broker_buf_t *b = NULL;
        cr_assert_lt(n, 64, "the pool never filled up");
        r = broker_buf_alloc(a, arg.len, &b, 0);
        if (r == -EAGAIN)
            break;
        cr_assert_eq(r, 0, "alloc: %s", broker_strerror(r));
        th_pattern(b->data, arg.len, 400 + n, 0);
        bufs[n++] = b;
    }
    cr_assert_geq(n, 2, "only %u buffers of %zu in a pool of %llu", n,
                  arg.len, (unsigned long long)pool_max);
    cr_assert_leq(n * arg.len, pool_max);
    broker_shm_stats_t full = pool(a);
    cr_assert_leq(full.mapped, pool_max, "mapped %llu",
                  (unsigned long long)full.mapped);
    cr_assert_eq(full.buffers, base.buffers + n);
    /* A buffer bigger than the whole pool can never be had. */
    broker_buf_t *huge = NULL;
    cr_assert_lt(broker_buf_alloc(a, pool_max + 1, &huge, 0), 0);

    /* Hand them all to the receiver, which holds them. */
    arg.n_hold = n;
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.got);
    th_barrier_init(&arg.go);
    pid = th_spawn(pool_receiver, &arg);
    th_barrier_wait(&arg.ready);
    for (unsigned i = 0; i < n; i++) {
        cr_assert_eq(broker_buf_send(a, "svc.shm.pool", bufs[i], arg.len), 0);
        broker_buf_free(a, bufs[i]);
    }
    th_barrier_wait(&arg.got);
    cr_assert_eq(broker_buf_alloc(a, arg.len, &extra, 0), -EAGAIN,
                 "the receiver holds the whole pool");
    /* broker_send() over the threshold falls back to the socket. */
    uint8_t *big = malloc(arg.fallback_len);
    cr_assert_not_null(big);
    th_pattern(big, arg.fallback_len, 499, 0);
    cr_assert_eq(broker_send(a, "svc.shm.pool", big, arg.fallback_len, NULL,
                             0), 0);
    free(big);
    th_barrier_wait(&arg.got);

    /* One release: a waiting allocation gets it. */
    th_barrier_signal(&arg.go, 0);
    th_barrier_wait(&arg.got);
    cr_assert_eq(broker_buf_alloc(a, arg.len, &extra, TH_HANG_MS), 0);
    cr_assert_eq(broker_buf_alloc(a, arg.len, &bufs[0], 0), -EAGAIN);
    broker_buf_free(a, extra);
    th_barrier_signal(&arg.go, 0);
    th_barrier_wait(&arg.got);
    await_pool(a, &base);

    /* Reuse: many times the pool, one buffer at a time or several in
     * flight, all byte-exact at the other end. */
    for (unsigned i = 0; i < arg.n_stream; i++) {
        broker_buf_t *b = filled_buf(a, arg.len, 1000 + i);
        cr_assert_eq(broker_buf_send(a, "svc.shm.pool", b, arg.len), 0);
        broker_buf_free(a, b);
    }
    th_barrier_wait(&arg.got);
    th_join(pid);
    await_pool(a, &base);
    broker_shm_stats_t end = pool(a);
    cr_assert_leq(end.mapped, pool_max);
    cr_assert_leq((uint64_t)end.segments * seg, pool_max);
    cr_assert_leq(th_status_value(a, "shm_bytes"), pool_max,
                  "segments are reused, not piled up in the broker");
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.got);
    th_barrier_fini(&arg.go);
    th_broker_stop(&br);
}

struct wait_arg {
    th_barrier_t ready, got, go;
    size_t len;
};

static int nofallback_receiver(void *p)
{
    struct wait_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *first, *m;

    th_register(b, "svc.shm.wait");
    th_barrier_signal(&a->ready, 0);
    first = th_recv(b);
    check_msg(first, a->len, 500, true);
    th_barrier_signal(&a->got, 0);
    th_barrier_wait(&a->go);
    broker_msg_free(first);
    m = th_recv(b);
    check_msg(m, a->len, 501, true);
    broker_msg_free(m);
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->got, 0);
    broker_close(b);
    return 0;
}

/* With BROKER_OPT_SHM_FALLBACK 0, broker_send() waits for the pool. */
Test(shm, no_fallback_waits_for_a_release)
{
    struct wait_arg arg = { .len = 768 * KIB };
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    uint8_t *data = malloc(arg.len);
    pid_t pid;

    cr_assert_not_null(data);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, MIB), 0);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_POOL_MAX, MIB), 0);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_FALLBACK, 0), 0);
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.got);
    th_barrier_init(&arg.go);
    pid = th_spawn(nofallback_receiver, &arg);
    th_barrier_wait(&arg.ready);
    th_pattern(data, arg.len, 500, 0);
    cr_assert_eq(broker_send(a, "svc.shm.wait", data, arg.len, NULL, 0), 0);
    th_barrier_wait(&arg.got);
    /* The pool is full; the receiver frees once we are (about to be)
     * blocked in broker_send. */
    th_barrier_signal(&arg.go, 0);
    th_pattern(data, arg.len, 501, 0);
    cr_assert_eq(broker_send(a, "svc.shm.wait", data, arg.len, NULL, 0), 0);
    th_barrier_wait(&arg.got);
    th_join(pid);
    await_pool(a, &base);
    free(data);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.got);
    th_barrier_fini(&arg.go);
    th_broker_stop(&br);
}

/* ---- fan-out ---------------------------------------------------------------------- */

#define FAN 3

struct fan_arg {
    th_barrier_t ready;         /* receivers -> test */
    th_barrier_t got;           /* receivers -> test */
    th_barrier_t go[FAN];       /* test -> receiver i: release now */
    th_barrier_t released;      /* receiver -> test */
    int idx;
    size_t len;
};

static int fan_receiver(void *p)
{
    struct fan_arg *a = p;
    broker_t *b = th_connect(&br);
    char name[32];
    broker_msg_t *m;

    snprintf(name, sizeof(name), "svc.shm.fan.%d", a->idx);
    th_register(b, name);
    th_barrier_signal(&a->ready, (uint64_t)a->idx);
    m = th_recv(b);
    check_msg(m, a->len, 700, true);
    TH_CHECK(m->name && !strcmp(m->name, name), "sent to %s", name);
    th_barrier_signal(&a->got, (uint64_t)a->idx);
    th_barrier_wait(&a->go[a->idx]);
    check_msg(m, a->len, 700, true);    /* untouched meanwhile */
    broker_msg_free(m);
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->released, (uint64_t)a->idx);
    broker_close(b);
    return 0;
}

Test(shm, fan_out_returns_after_last_release)
{
    struct fan_arg arg = { .len = MIB };
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    pid_t pid[FAN];
    char name[32];

    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.got);
    th_barrier_init(&arg.released);
    for (int i = 0; i < FAN; i++)
        th_barrier_init(&arg.go[i]);
    for (int i = 0; i < FAN; i++) {
        arg.idx = i;
        pid[i] = th_spawn(fan_receiver, &arg);
        th_barrier_wait(&arg.ready);
    }
    broker_buf_t *buf = filled_buf(a, arg.len, 700);
    for (int i = 0; i < FAN; i++) {
        snprintf(name, sizeof(name), "svc.shm.fan.%d", i);
        cr_assert_eq(broker_buf_send(a, name, buf, arg.len), 0);
    }
    broker_buf_free(a, buf);        /* our reference */
    for (int i = 0; i < FAN; i++)
        th_barrier_wait(&arg.got);
    cr_assert_eq(th_status_value(a, "shm_held"), FAN);
    broker_shm_stats_t held = pool(a);
    cr_assert_eq(held.buffers, base.buffers + 1, "one buffer, %d views", FAN);
    cr_assert_geq(held.in_use, base.in_use + arg.len);

    for (int i = 0; i < FAN; i++) {
        th_barrier_signal(&arg.go[i], 0);
        cr_assert_eq(th_barrier_wait(&arg.released), (uint64_t)i);
        /* The broker has handled that release (the receiver pinged after
         * it); our STATUS request makes us read the RELEASE it sent us. */
        cr_assert_eq(th_status_value(a, "shm_held"), (uint64_t)(FAN - 1 - i));
        broker_shm_stats_t st = pool(a);
        if (i < FAN - 1) {
            cr_assert_eq(st.buffers, held.buffers,
                         "back in the pool after %d of %d releases", i + 1,
                         FAN);
            cr_assert_eq(st.in_use, held.in_use);
        }
    }
    await_pool(a, &base);
    for (int i = 0; i < FAN; i++)
        th_join(pid[i]);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.got);
    th_barrier_fini(&arg.released);
    for (int i = 0; i < FAN; i++)
        th_barrier_fini(&arg.go[i]);
    th_broker_stop(&br);
}

/* ---- the automatic threshold ------------------------------------------------------ */

/* broker_send of len bytes from a to b: arrives byte-exact, through shared
 * memory or not. */
static void send_and_check(broker_t *a, broker_t *b, size_t len,
                           uint64_t seed, bool shm)
{
    uint8_t *data = malloc(len ? len : 1);
    broker_msg_t *m;

    TH_CHECK(data != NULL, "oom");
    th_pattern(data, len, seed, 0);
    TH_OK(broker_send_id(a, broker_client_id(b), data, len, NULL, 0));
    free(data);
    m = th_recv(b);
    check_msg(m, len, seed, shm);
    TH_CHECK(m->source == broker_client_id(a), "source");
    broker_msg_free(m);
}

Test(shm, automatic_threshold)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    broker_msg_t *m;

    send_and_check(a, b, MIB, 800, true);
    send_and_check(a, b, 64 * KIB, 801, false);
    send_and_check(a, b, DEF_THRESHOLD, 802, true);
    send_and_check(a, b, DEF_THRESHOLD - 1, 803, false);
    send_and_check(a, b, 10, 804, false);

    /* By name too. */
    th_register(b, "svc.shm.auto");
    uint8_t *data = malloc(MIB);
    cr_assert_not_null(data);
    th_pattern(data, MIB, 805, 0);
    cr_assert_eq(broker_send(a, "svc.shm.auto", data, MIB, NULL, 0), 0);
    m = th_recv(b);
    check_msg(m, MIB, 805, true);
    cr_assert_str_eq(m->name, "svc.shm.auto");
    broker_msg_free(m);

    /* With fds: the descriptor frame carries none, yet fds and bytes
     * arrive. */
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(broker_send(a, "svc.shm.auto", data, MIB, &p[1], 1), 0);
    close(p[1]);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, MIB);
    cr_assert_lt(th_pattern_check(m->data, MIB, 805, 0), 0);
    cr_assert_eq(m->nfds, 1);
    cr_assert_eq(write(m->fds[0], "!", 1), 1);
    broker_msg_free(m);
    char c;
    cr_assert_eq(read(p[0], &c, 1), 1);
    close(p[0]);
    free(data);

    /* A lower threshold, then none. */
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_THRESHOLD, 4096), 0);
    send_and_check(a, b, 4096, 806, true);
    send_and_check(a, b, 4095, 807, false);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    send_and_check(a, b, MIB, 808, false);
    send_and_check(a, b, 4096, 809, false);

    TH_OK(broker_ping(b, TH_HANG_MS));
    await_pool(a, &base);
    cr_assert_eq(th_status_value(a, "shm_held"), 0);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- undeliverable descriptors ------------------------------------------------------- */

Test(shm, undeliverable_buffer_returns_to_pool)
{
    broker_t *a = th_connect(&br), *gone = th_connect(&br);
    uint64_t gone_id = broker_client_id(gone);
    broker_shm_stats_t base = pool(a);
    broker_msg_t *m;
    int r;

    broker_close(gone);
    TH_OK(broker_ping(a, TH_HANG_MS));

    broker_buf_t *buf = filled_buf(a, 64 * KIB, 900);
    r = broker_buf_send(a, "svc.shm.nobody", buf, 64 * KIB);
    if (r == 0) {
        m = th_recv_kind(a, BROKER_MSG_ERROR);
        cr_assert_eq(m->code, -ENOENT);
        broker_msg_free(m);
    } else {
        cr_assert_eq(r, -ENOENT, "buf_send: %s", broker_strerror(r));
    }
    r = broker_buf_send_id(a, gone_id, buf, 64 * KIB);
    if (r == 0) {
        m = th_recv_kind(a, BROKER_MSG_ERROR);
        cr_assert_eq(m->code, -ENOENT);
        broker_msg_free(m);
    } else {
        cr_assert_eq(r, -ENOENT, "buf_send_id: %s", broker_strerror(r));
    }
    broker_buf_free(a, buf);
    await_pool(a, &base);
    cr_assert_eq(th_status_value(a, "shm_held"), 0);
    broker_close(a);
    th_broker_stop(&br);
}

/* ---- the broker's limits ------------------------------------------------------------- */

struct lim_arg {
    th_barrier_t ready, got;
    unsigned n;
    size_t len;
    uint64_t shm_mask;          /* bit i: message i must come through shm */
    uint64_t check_mask;        /* bit i: check the shm flag of message i */
};

/* Receives n messages, holding all of them until the end. */
static int lim_receiver(void *p)
{
    struct lim_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m[16];

    TH_CHECK(a->n <= 16, "too many");
    th_register(b, "svc.shm.lim");
    th_barrier_signal(&a->ready, 0);
    for (unsigned i = 0; i < a->n; i++) {
        m[i] = th_recv(b);
        if (a->check_mask >> i & 1)
            check_msg(m[i], a->len, 1100 + i, a->shm_mask >> i & 1);
        else
            check_msg(m[i], a->len, 1100 + i,
                      !!(m[i]->flags & BROKER_MSGF_SHM));
    }
    th_barrier_signal(&a->got, 0);
    for (unsigned i = 0; i < a->n; i++)
        broker_msg_free(m[i]);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

static void run_lim_receiver(broker_t *a, struct lim_arg *arg)
{
    uint8_t *data = malloc(arg->len);
    pid_t pid;

    TH_CHECK(data != NULL, "oom");
    th_barrier_init(&arg->ready);
    th_barrier_init(&arg->got);
    pid = th_spawn(lim_receiver, arg);
    th_barrier_wait(&arg->ready);
    for (unsigned i = 0; i < arg->n; i++) {
        th_pattern(data, arg->len, 1100 + i, 0);
        TH_OK(broker_send(a, "svc.shm.lim", data, arg->len, NULL, 0));
    }
    th_barrier_wait(&arg->got);
    th_join(pid);
    free(data);
    th_barrier_fini(&arg->ready);
    th_barrier_fini(&arg->got);
}

Test(shm, max_segments_refused_with_enosr)
{
    const uint64_t size = 64 * KIB;
    broker_t *a;
    raw_t c, c2;
    int fd;

    th_broker_restart(&br, "--max-segments", "2", NULL);
    a = th_connect(&br);
    cr_assert_eq(broker_limits(a)->max_segments, 2, "WELCOME announces it");

    raw_open(&c);
    fd = test_memfd(size, SEALS_OK, 10);
    cr_assert_eq(raw_register(&c, 1, size, fd), 0);
    cr_assert_eq(raw_register(&c, 2, size, fd), 0, "the same memfd twice "
                 "is two segments");
    TH_OK(broker_ping(a, TH_HANG_MS));
    int fds = th_fd_count(br.pid);
    cr_assert_eq(raw_register(&c, 3, size, fd), ENOSR);
    cr_assert_eq(raw_register(&c, 4, size, fd), ENOSR);
    cr_assert_eq(th_fd_count(br.pid), fds, "refused fds are closed");
    cr_assert_eq(th_status_value(a, "shm_segments"), 2);
    /* Per client. */
    raw_open(&c2);
    cr_assert_eq(raw_register(&c2, 1, size, fd), 0);
    raw_close(&c2);
    /* Still a working connection. */
    cr_assert_eq(raw_ctrl(&c, BK_OP_PING, NULL, 0, -1), 0);
    raw_close(&c);
    close(fd);

    /* The library: each 768 KiB message needs a 1 MiB segment of its own
     * while the receiver holds the others; a third segment is over the
     * limit (the broker refuses it, or the library, which knows the
     * limit from WELCOME, does not ask) and the message goes through the
     * socket instead. */
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, MIB), 0);
    struct lim_arg arg = { .n = 3, .len = 768 * KIB, .shm_mask = 0x3,
                           .check_mask = 0x7 };
    run_lim_receiver(a, &arg);
    broker_close(a);
    th_broker_stop(&br);
}

/* A reload that lowers max-shm below what a client holds: its quota
 * stays on (the check once wrapped around and let everything in). */
Test(shm, max_shm_lowered_by_reload_below_what_is_held)
{
    char conf[64];
    th_output_t o;
    raw_t c;
    FILE *f;
    int fd, st;

    snprintf(conf, sizeof(conf), "/tmp/bkt-shm-%d.conf", (int)getpid());
    cr_assert_not_null(f = fopen(conf, "w"));
    fputs("max-shm = 1M\n", f);
    cr_assert_eq(fclose(f), 0);
    th_broker_restart(&br, "-c", conf, NULL);
    raw_open(&c);
    fd = test_memfd(512 * KIB, SEALS_OK, 11);
    cr_assert_eq(raw_register(&c, 1, 512 * KIB, fd), 0);
    cr_assert_eq(raw_register(&c, 2, 512 * KIB, fd), 0);
    close(fd);
    cr_assert_not_null(f = fopen(conf, "w"));
    fputs("max-shm = 256K\n", f);
    cr_assert_eq(fclose(f), 0);
    st = th_ctl(br.sock, &o, "reload", NULL);
    unlink(conf);
    cr_assert(TH_EXITED(st, 0), "reload: 0x%x %s", st, o.err);
    th_output_free(&o);
    fd = test_memfd(4096, SEALS_OK, 11);
    cr_assert_eq(raw_register(&c, 3, 4096, fd), ENOSPC,
                 "a client over the lowered limit registers nothing more");
    close(fd);
    raw_close(&c);
    th_broker_stop(&br);
}

Test(shm, max_shm_refused_with_enospc)
{
    broker_t *a;
    raw_t c, c2;
    int fd;

    th_broker_restart(&br, "--max-shm", "1048576", NULL);
    a = th_connect(&br);
    cr_assert_eq(broker_limits(a)->max_shm, MIB, "WELCOME announces it");

    raw_open(&c);
    fd = test_memfd(2 * MIB, SEALS_OK, 11);
    cr_assert_eq(raw_register(&c, 1, 2 * MIB, fd), ENOSPC, "over alone");
    close(fd);
    fd = test_memfd(512 * KIB, SEALS_OK, 11);
    cr_assert_eq(raw_register(&c, 1, 512 * KIB, fd), 0);
    cr_assert_eq(raw_register(&c, 2, 512 * KIB, fd), 0, "up to the limit");
    close(fd);
    fd = test_memfd(4096, SEALS_OK, 11);
    TH_OK(broker_ping(a, TH_HANG_MS));
    int fds = th_fd_count(br.pid);
    cr_assert_eq(raw_register(&c, 3, 4096, fd), ENOSPC, "one page over");
    cr_assert_eq(th_fd_count(br.pid), fds, "refused fds are closed");
    cr_assert_eq(th_status_value(a, "shm_bytes"), MIB);
    raw_open(&c2);                              /* per client */
    cr_assert_eq(raw_register(&c2, 1, 4096, fd), 0);
    raw_close(&c2);
    close(fd);
    cr_assert_eq(raw_ctrl(&c, BK_OP_PING, NULL, 0, -1), 0);
    raw_close(&c);

    /* The library, told it may use more than the broker allows: no
     * segment that could hold these messages is within the broker's
     * limit, and they still arrive, through the socket. */
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, 2 * MIB),
                 0);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_POOL_MAX, 64 * MIB), 0);
    struct lim_arg arg = { .n = 2, .len = 1536 * KIB, .shm_mask = 0,
                           .check_mask = 0x3 };
    run_lim_receiver(a, &arg);
    broker_close(a);

    /* Default options: whatever the library chooses, it arrives. */
    a = th_connect(&br);
    struct lim_arg arg2 = { .n = 3, .len = 700 * KIB, .check_mask = 0 };
    run_lim_receiver(a, &arg2);
    broker_close(a);
    th_broker_stop(&br);
}

/* ---- requests, replies and streams through shared memory --------------------- */

struct rr_arg {
    th_barrier_t ready;
    size_t len;
};

static int shm_server(void *p)
{
    struct rr_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_shm_stats_t base = pool(b);
    uint8_t *data = malloc(a->len);
    broker_msg_t *m;

    TH_CHECK(data != NULL, "oom");
    th_register(b, "svc.shm.rr");
    th_barrier_signal(&a->ready, broker_client_id(b));
    /* A request: answered through shared memory too. */
    m = th_recv(b);
    check_msg(m, a->len, 1200, true);
    TH_CHECK((m->flags & BROKER_MSGF_OPEN) && !(m->flags & BROKER_MSGF_CLOSE),
             "a request, flags 0x%x", m->flags);
    th_pattern(data, a->len, 1201, 0);
    TH_OK(broker_reply(b, m, data, a->len, NULL, 0));
    broker_msg_free(m);
    /* A stream: one message each way, then the client closes it. */
    m = th_recv(b);
    check_msg(m, a->len, 1202, true);
    uint32_t sid = m->stream;
    broker_msg_free(m);
    th_pattern(data, a->len, 1203, 0);
    TH_OK(broker_stream_write(b, sid, data, a->len, NULL, 0));
    m = th_recv_kind(b, BROKER_MSG_CLOSE);
    TH_CHECK(m->stream == sid, "CLOSE on 0x%x", m->stream);
    broker_msg_free(m);
    await_pool(b, &base);
    free(data);
    broker_close(b);
    return 0;
}

Test(shm, request_reply_and_streams)
{
    struct rr_arg arg = { .len = MIB };
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    uint8_t *data = malloc(arg.len);
    broker_msg_t *m = NULL;
    uint32_t sid;
    pid_t pid;

    cr_assert_not_null(data);
    th_barrier_init(&arg.ready);
    pid = th_spawn(shm_server, &arg);
    uint64_t srv = th_barrier_wait(&arg.ready);

    th_pattern(data, arg.len, 1200, 0);
    int r = broker_call(a, "svc.shm.rr", data, arg.len, &m, TH_HANG_MS);
    cr_assert_eq(r, 0, "call: %s", broker_strerror(r));
    check_msg(m, arg.len, 1201, true);
    cr_assert_eq(m->source, srv);
    cr_assert(m->flags & BROKER_MSGF_CLOSE);
    broker_msg_free(m);

    cr_assert_eq(broker_stream_open(a, "svc.shm.rr", 0, &sid), 0);
    th_pattern(data, arg.len, 1202, 0);
    cr_assert_eq(broker_stream_write(a, sid, data, arg.len, NULL, 0), 0);
    m = th_recv(a);
    check_msg(m, arg.len, 1203, true);
    cr_assert_eq(m->stream, sid);
    broker_msg_free(m);
    cr_assert_eq(broker_stream_close(a, sid), 0);
    th_join(pid);
    await_pool(a, &base);
    cr_assert_eq(th_status_value(a, "shm_held"), 0);
    free(data);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- a view outlives its connection ---------------------------------------------- */

Test(shm, view_outlives_receiver_close)
{
    broker_t *a = th_connect(&br), *r = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    broker_buf_t *buf = filled_buf(a, MIB, 1300);
    broker_msg_t *m;

    cr_assert_eq(broker_buf_send_id(a, broker_client_id(r), buf, MIB), 0);
    broker_buf_free(a, buf);
    int maps0 = memfd_mappings();       /* a's pool */
    m = th_recv(r);
    check_msg(m, MIB, 1300, true);
    cr_assert_eq(memfd_mappings(), maps0 + 1, "r mapped a's segment");
    broker_close(r);
    /* Still readable; freed after the close without any connection. */
    check_msg(m, MIB, 1300, true);
    broker_msg_free(m);
    cr_assert_eq(memfd_mappings(), maps0, "unmapped with its last view");
    /* The broker gave r's reference back when r left. */
    await_pool(a, &base);
    cr_assert_eq(th_status_value(a, "shm_held"), 0);
    broker_close(a);
    th_broker_stop(&br);
}

/* ---- warm reuse: the pool stays as small as what is in flight ------------------ */

/* Wait until b's socket has input (hang guard only): the broker has
 * written what it queued for b, a RELEASE here, which b has not read. */
static void await_input(broker_t *b)
{
    struct pollfd pfd = { .fd = broker_fd(b), .events = POLLIN };
    int r;

    do
        r = poll(&pfd, 1, TH_HANG_MS);
    while (r < 0 && errno == EINTR);
    TH_CHECK(r == 1, "no input came: %s", r < 0 ? strerror(errno)
                                                : "hang guard");
}

/* Send message i of len bytes (pattern seed0 + i) from a to r, through
 * broker_send's automatic path (even i) or a buffer written in place (odd
 * i); r checks every byte and frees it; then the release waits, unread,
 * in a's socket.  Returns where r saw the data. */
static const void *lockstep(broker_t *a, broker_t *r, size_t len,
                            uint64_t seed, uint8_t *scratch)
{
    uint64_t to = broker_client_id(r);
    const void *at;
    broker_msg_t *m;

    if (seed % 2 == 0) {
        th_pattern(scratch, len, seed, 0);
        TH_OK(broker_send_id(a, to, scratch, len, NULL, 0));
    } else {
        broker_buf_t *buf = filled_buf(a, len, seed);
        TH_OK(broker_buf_send_id(a, to, buf, len));
        broker_buf_free(a, buf);
    }
    m = th_recv(r);
    check_msg(m, len, seed, true);
    at = m->data;
    broker_msg_free(m);
    TH_OK(broker_ping(r, TH_HANG_MS));  /* the broker handled the release */
    await_input(a);
    return at;
}

/* A sender that never reads (blocking broker_send and broker_buf_alloc
 * only) still gets its buffers back: before it takes memory never used,
 * it reads the releases waiting for it, and the pool does not grow.  The
 * memory a message lands on is the memory the last one used. */
Test(shm, released_buffers_are_reused_before_new_memory)
{
    const size_t len = MIB;
    unsigned n = (unsigned)th_scaled(100, 20);
    broker_t *a = th_connect(&br), *r = th_connect(&br);
    uint8_t *scratch = malloc(len);
    const void *first;

    cr_assert_not_null(scratch);
    /* one buffer per segment: any new memory would be a new segment */
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, len), 0);
    first = lockstep(a, r, len, 2000, scratch);
    for (unsigned i = 1; i < n; i++) {
        const void *at = lockstep(a, r, len, 2000 + i, scratch);
        cr_assert_eq(at, first, "message %u landed on other memory", i);
    }
    broker_shm_stats_t st = pool(a);
    cr_assert_eq(st.segments, 1, "the pool grew to %u segments",
                 st.segments);
    cr_assert_eq(st.mapped, len);
    cr_assert_eq(th_status_value(a, "shm_bytes"), len);
    free(scratch);
    broker_close(r);
    broker_close(a);
    th_broker_stop(&br);
}

/* A view a receiver holds is never reused, however many messages go
 * through the other buffers of the pool meanwhile. */
Test(shm, held_view_survives_reuse_of_other_buffers)
{
    const size_t len = MIB;
    unsigned n = (unsigned)th_scaled(60, 12);
    broker_t *r = th_connect(&br);
    int fds0 = th_fd_count(getpid());
    broker_t *a = th_connect(&br);
    broker_shm_stats_t base = pool(a);
    uint8_t *scratch = malloc(len);
    broker_buf_t *buf;
    broker_msg_t *held;

    cr_assert_not_null(scratch);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, 4 * len),
                 0);
    buf = filled_buf(a, len, 2500);
    cr_assert_eq(broker_buf_send_id(a, broker_client_id(r), buf, len), 0);
    broker_buf_free(a, buf);
    held = th_recv(r);
    check_msg(held, len, 2500, true);
    for (unsigned i = 0; i < n; i++) {
        const void *at = lockstep(a, r, len, 2600 + i, scratch);
        cr_assert(at != held->data, "message %u reused the held buffer", i);
    }
    /* every byte of the held view is still the first message's */
    check_msg(held, len, 2500, true);
    cr_assert_eq(pool(a).segments, 1);
    broker_msg_free(held);
    await_pool(a, &base);
    free(scratch);
    broker_close(a);
    cr_assert_eq(th_fd_count(getpid()), fds0, "the closed pool left fds "
                 "open (its segment was only partly used)");
    broker_close(r);
    th_broker_stop(&br);
}

/* The receiver maps each segment once, whatever the number of messages
 * into it, keeps no fd of it, and unmaps it when the owner is gone. */
Test(shm, receiver_maps_a_segment_once_until_it_is_dropped)
{
    const size_t len = MIB;
    unsigned n = (unsigned)th_scaled(40, 10);
    broker_t *r = th_connect(&br), *a;
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;
    broker_msg_t *m0, *m1;
    uint8_t *scratch = malloc(len);

    cr_assert_not_null(scratch);
    TH_OK(broker_ping(r, TH_HANG_MS));
    int maps0 = memfd_mappings(), fds0 = th_fd_count(getpid());
    a = th_connect(&br);
    int fds_a = th_fd_count(getpid());  /* a's socket */
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_SEGMENT_SIZE, len), 0);
    /* two views held at once: two segments, each mapped on both sides */
    for (unsigned i = 0; i < 2; i++) {
        broker_buf_t *buf = filled_buf(a, len, 2800 + i);
        cr_assert_eq(broker_buf_send_id(a, broker_client_id(r), buf, len), 0);
        broker_buf_free(a, buf);
    }
    m0 = th_recv(r);
    m1 = th_recv(r);
    check_msg(m0, len, 2800, true);
    check_msg(m1, len, 2801, true);
    cr_assert_eq(memfd_mappings(), maps0 + 4);
    broker_msg_free(m0);
    broker_msg_free(m1);
    TH_OK(broker_ping(r, TH_HANG_MS));  /* the broker handled both */
    await_buffers(a, 0);                /* and a read both releases */
    for (unsigned i = 0; i < n; i++)
        lockstep(a, r, len, 2900 + i, scratch);
    cr_assert_eq(memfd_mappings(), maps0 + 4, "mapped once per segment, "
                 "not once per message");
    cr_assert_eq(th_fd_count(getpid()), fds_a, "segment fds kept open");
    broker_close(a);
    /* SEG_DROP: the receiver unmaps both */
    for (;;) {
        TH_OK(broker_ping(r, TH_HANG_MS));
        if (memfd_mappings() == maps0)
            break;
        TH_CHECK(th_now_ms() < end, "%d memfd mappings, want %d",
                 memfd_mappings(), maps0);
        th_nap(&us);
    }
    cr_assert_eq(th_fd_count(getpid()), fds0);
    free(scratch);
    broker_close(r);
    th_broker_stop(&br);
}

/* ---- hugetlbfs segments ---------------------------------------------------------- */

struct huge_arg {
    th_barrier_t ready;
};

/* Gets the descriptor into a hugetlbfs segment: it must be told, never
 * handed a view whose pages may be missing (SIGBUS on read). */
static int huge_receiver(void *p)
{
    struct huge_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;

    th_register(b, "svc.shm.huge");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv(b);
    /* An ERROR for the refused descriptor, or (the broker refused the
     * segment) the test's plain "done". */
    TH_CHECK(!(m->flags & BROKER_MSGF_SHM),
             "a view into a hugetlbfs segment was delivered (%zu bytes)",
             m->len);
    TH_CHECK(m->kind == BROKER_MSG_ERROR ||
             (m->kind == BROKER_MSG_DATA && m->len == 4 &&
              !memcmp(m->data, "done", 4)), "got %s", th_kind_str(m->kind));
    broker_msg_free(m);
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

Test(shm, hugetlb_segment_never_reaches_a_reader)
{
    const uint64_t size = 2 * MIB;
    struct huge_arg arg;
    raw_t s;
    pid_t pid;
    int fd = memfd_create("test-shm-huge",
                          MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);

    if (fd < 0)
        cr_skip_test("no hugetlbfs memfd here: %s", strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0 ||
        fcntl(fd, F_ADD_SEALS, SEALS_OK) < 0) {
        close(fd);
        cr_skip_test("cannot size and seal a hugetlbfs memfd");
    }
    th_barrier_init(&arg.ready);
    pid = th_spawn(huge_receiver, &arg);
    uint64_t rid = th_barrier_wait(&arg.ready);
    raw_open(&s);
    long r = raw_register(&s, 1, size, fd);
    cr_assert_eq(r, EINVAL, "brokerd must refuse a hugetlbfs segment");
    /* A descriptor into the refused segment is a protocol error; the
     * receiver gets nothing but our "done". */
    cr_assert_eq(raw_send_desc(&s, rid, NULL, 1, 0, size), 0);
    raw_expect_eproto(&s, "descriptor into a refused segment");
    broker_t *c = th_connect(&br);
    cr_assert_eq(broker_send_id(c, rid, "done", 4, NULL, 0), 0);
    broker_close(c);
    th_join(pid);
    cr_assert(th_broker_alive(&br));
    raw_close(&s);
    close(fd);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- attached (libuv) senders ------------------------------------------------------ */

struct as_ctx {
    broker_t *b;
    int disconnect_err;
    unsigned events;
    int done_fd;                /* readable once the receiver is done */
    broker_shm_stats_t want;
};

static void as_on_message(broker_t *b, broker_msg_t *m, void *ud)
{
    struct as_ctx *c = ud;

    (void)b;
    c->events++;
    broker_msg_free(m);
}

static void as_on_disconnect(broker_t *b, int err, void *ud)
{
    struct as_ctx *c = ud;

    (void)b;
    c->disconnect_err = err;
}

static void as_tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until cond(c) holds; the timer only keeps it turning. */
static void as_run_until(uv_loop_t *loop, bool (*cond)(struct as_ctx *),
                         struct as_ctx *c)
{
    uv_timer_t t;
    uint64_t end = th_now_ms() + TH_HANG_MS;

    uv_timer_init(loop, &t);
    uv_timer_start(&t, as_tick, 5, 5);
    while (!cond(c) && c->disconnect_err == 0) {
        cr_assert_lt(th_now_ms(), end,
                     "attached: nothing happened (hang guard)");
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    cr_assert_eq(c->disconnect_err, 0, "disconnected: %s",
                 broker_strerror(c->disconnect_err));
}

static bool as_receiver_done(struct as_ctx *c)
{
    struct pollfd p = { .fd = c->done_fd, .events = POLLIN };

    return poll(&p, 1, 0) == 1;
}

static bool as_pool_back(struct as_ctx *c)
{
    broker_shm_stats_t st = pool(c->b);

    return st.in_use == c->want.in_use && st.buffers == c->want.buffers;
}

struct as_rx_arg {
    th_barrier_t ready, done;
    unsigned n;
    size_t len;
};

static int as_receiver(void *p)
{
    struct as_rx_arg *a = p;
    broker_t *b = th_connect(&br);

    th_register(b, "svc.shm.async");
    th_barrier_signal(&a->ready, 0);
    for (unsigned i = 0; i < a->n; i++) {
        broker_msg_t *m = th_recv(b);
        check_msg(m, a->len, 1400 + i, true);
        broker_msg_free(m);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_signal(&a->done, 0);
    broker_close(b);
    return 0;
}

Test(shm, attached_sender)
{
    struct as_rx_arg arg = { .n = 8, .len = MIB };
    broker_callbacks_t cbs = { as_on_message, as_on_disconnect };
    broker_t *a = th_connect(&br);
    struct as_ctx ctx = { .b = a, .want = pool(a) };
    uint8_t *data = malloc(arg.len);
    broker_buf_t *buf;
    uv_loop_t loop;
    pid_t pid;

    cr_assert_not_null(data);
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    ctx.done_fd = arg.done.rd;
    pid = th_spawn(as_receiver, &arg);
    th_barrier_wait(&arg.ready);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(a, &loop, &cbs, &ctx), 0);

    /* Half through the automatic path (the caller's bytes are copied at
     * once: the buffer is reused right away), half written in place. */
    for (unsigned i = 0; i < arg.n / 2; i++) {
        th_pattern(data, arg.len, 1400 + i, 0);
        cr_assert_eq(broker_send(a, "svc.shm.async", data, arg.len, NULL, 0),
                     0);
    }
    for (unsigned i = arg.n / 2; i < arg.n; i++) {
        cr_assert_eq(broker_buf_alloc(a, arg.len, &buf, -1), 0);
        th_pattern(buf->data, arg.len, 1400 + i, 0);
        cr_assert_eq(broker_buf_send(a, "svc.shm.async", buf, arg.len), 0);
        broker_buf_free(a, buf);
    }
    as_run_until(&loop, as_receiver_done, &ctx);
    th_barrier_wait(&arg.done);
    th_join(pid);
    /* The loop reads the releases: the pool empties. */
    as_run_until(&loop, as_pool_back, &ctx);

    /* Attached, a full pool never blocks: -EAGAIN even with timeout -1. */
    cr_assert_eq(broker_set_option(a, BROKER_OPT_SHM_POOL_MAX,
                                   pool(a).mapped), 0);
    broker_buf_t *all[64];
    unsigned n = 0;
    int r;
    while ((r = broker_buf_alloc(a, 8 * MIB, &all[n], -1)) == 0) {
        n++;
        cr_assert_lt(n, 64, "the pool never filled up");
    }
    cr_assert_eq(r, -EAGAIN, "alloc on a full pool: %s", broker_strerror(r));
    cr_assert_geq(n, 1);
    for (unsigned i = 0; i < n; i++)
        broker_buf_free(a, all[i]);
    cr_assert(as_pool_back(&ctx));
    cr_assert_eq(ctx.events, 0, "unexpected events");

    broker_close(a);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
    free(data);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_broker_stop(&br);
}

/* ---- buffer rules ------------------------------------------------------------------ */

Test(shm, buffer_rules)
{
    broker_t *a = th_connect(&br), *r = th_connect(&br),
             *other = th_connect(&br);
    uint64_t rid = broker_client_id(r);
    broker_shm_stats_t base = pool(a);
    broker_buf_t *buf = NULL;
    broker_msg_t *m1, *m2;

    /* Misuse is refused and sends nothing. */
    cr_assert_lt(broker_buf_alloc(a, 0, &buf, 0), 0, "a 0-byte buffer");
    buf = filled_buf(a, 64 * KIB, 1500);
    cr_assert_lt(broker_buf_send_id(a, rid, buf, buf->size + 1), 0,
                 "longer than the buffer");
    cr_assert_lt(broker_buf_send_id(a, 0, buf, 10), 0, "client id 0");
    cr_assert_lt(broker_buf_send(a, "no spaces", buf, 10), 0, "bad name");
    cr_assert_lt(broker_buf_send_id(other, rid, buf, 10), 0,
                 "another connection's buffer");
    broker_buf_free(a, NULL);
    TH_OK(broker_ping(r, TH_HANG_MS));
    cr_assert_eq(broker_recv(r, &m1, 0), -ETIMEDOUT, "something was sent");
    cr_assert_eq(pool(a).buffers, base.buffers + 1);

    /* A prefix, then the whole buffer, to the same receiver: two views
     * of the same memory, two references. */
    cr_assert_eq(broker_buf_send_id(a, rid, buf, 1000), 0);
    cr_assert_eq(broker_buf_send_id(a, rid, buf, 64 * KIB), 0);
    broker_buf_free(a, buf);
    m1 = th_recv(r);
    check_msg(m1, 1000, 1500, true);
    m2 = th_recv(r);
    check_msg(m2, 64 * KIB, 1500, true);
    cr_assert_eq(m1->data, m2->data, "one mapping, the same bytes");
    cr_assert_eq(th_status_value(a, "shm_held"), 2);
    broker_msg_free(m2);
    TH_OK(broker_ping(r, TH_HANG_MS));
    cr_assert_eq(th_status_value(a, "shm_held"), 1);
    cr_assert_eq(pool(a).buffers, base.buffers + 1, "still viewed once");
    broker_msg_free(m1);
    TH_OK(broker_ping(r, TH_HANG_MS));
    await_pool(a, &base);

    /* Larger than the segment size: a segment of its own. */
    broker_t *c = th_connect(&br);
    broker_shm_stats_t cbase = pool(c);
    cr_assert_eq(broker_set_option(c, BROKER_OPT_SHM_SEGMENT_SIZE, MIB), 0);
    buf = filled_buf(c, 3 * MIB + 5, 1501);
    broker_shm_stats_t st = pool(c);
    cr_assert_eq(st.segments, 1);
    cr_assert_geq(st.mapped, 3 * MIB + 5);
    cr_assert_eq(broker_buf_send_id(c, rid, buf, 3 * MIB + 5), 0);
    broker_buf_free(c, buf);
    m1 = th_recv(r);
    check_msg(m1, 3 * MIB + 5, 1501, true);
    broker_msg_free(m1);
    TH_OK(broker_ping(r, TH_HANG_MS));
    await_pool(c, &cbase);

    broker_close(c);
    broker_close(other);
    broker_close(r);
    broker_close(a);
    th_broker_stop(&br);
}

/* An attached client that answers every message from inside on_message
 * with a large broker_send: the first one creates and registers a pool
 * segment (a control round trip) while more messages are arriving. */
struct cb_ctx {
    struct as_ctx as;
    unsigned seen;
    unsigned n;
    size_t len;
    uint8_t *data;
    int err;
    bool nested;                /* on_message ran inside on_message */
    bool inside;
};

static void cb_on_message(broker_t *b, broker_msg_t *m, void *ud)
{
    struct cb_ctx *c = ud;

    if (c->inside)
        c->nested = true;
    c->inside = true;
    if (m->kind == BROKER_MSG_DATA && m->len == 8) {
        uint64_t seq = bk_get64(m->data);
        if (seq != c->seen)
            c->err = -EBADMSG;
        th_pattern(c->data, c->len, 1600 + seq, 0);
        int r = broker_send_id(b, m->source, c->data, c->len, NULL, 0);
        if (r < 0 && !c->err)
            c->err = r;
        c->seen++;
    } else if (!c->err) {
        c->err = -EPROTO;
    }
    broker_msg_free(m);
    c->inside = false;
}

static bool cb_all_seen(struct as_ctx *as)
{
    struct cb_ctx *c = (struct cb_ctx *)as;

    return c->seen == c->n || c->err;
}

struct cb_client_arg {
    th_barrier_t ready;         /* test -> client: the server's id */
    unsigned n;
    size_t len;
};

static int cb_client(void *p)
{
    struct cb_client_arg *a = p;
    broker_t *b = th_connect(&br);
    uint64_t server = th_barrier_wait(&a->ready);
    uint8_t seq[8];

    for (unsigned i = 0; i < a->n; i++) {
        bk_put64(seq, i);
        TH_OK(broker_send_id(b, server, seq, sizeof(seq), NULL, 0));
    }
    for (unsigned i = 0; i < a->n; i++) {
        broker_msg_t *m = th_recv(b);
        check_msg(m, a->len, 1600 + i, true);
        broker_msg_free(m);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

Test(shm, attached_send_from_callback)
{
    struct cb_client_arg arg = { .n = 6, .len = MIB };
    broker_callbacks_t cbs = { cb_on_message, as_on_disconnect };
    broker_t *a = th_connect(&br);
    struct cb_ctx ctx = { .as = { .b = a, .want = pool(a) }, .n = arg.n,
                          .len = arg.len, .data = malloc(arg.len) };
    uv_loop_t loop;
    pid_t pid;

    cr_assert_not_null(ctx.data);
    th_barrier_init(&arg.ready);
    pid = th_spawn(cb_client, &arg);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(a, &loop, &cbs, &ctx), 0);
    th_barrier_signal(&arg.ready, broker_client_id(a));
    as_run_until(&loop, cb_all_seen, &ctx.as);
    cr_assert_eq(ctx.err, 0, "in the callback: %s", broker_strerror(ctx.err));
    cr_assert_not(ctx.nested, "on_message was re-entered");
    th_join(pid);
    as_run_until(&loop, as_pool_back, &ctx.as);
    broker_close(a);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
    free(ctx.data);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}
