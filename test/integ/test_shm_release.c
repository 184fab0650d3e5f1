/*
 * test_shm_release.c - a departed holder's shared-memory references go
 * back to their owner in bounded batches across loop passes (brokerd(8)
 * Budgets, shm_releasing in broker-protocol(7) STATUS), against a real
 * brokerd with raw clients: a receiver holds as many references as the
 * default max-held-per-client allows, one per offset of one segment, and
 * goes (disconnects, is kicked); while the release work waits for an
 * owner that does not read, a well-behaved pair is served and the owner's
 * queue does not grow; the owner then receives a release of every
 * reference exactly once, and the counters of STATUS and LIST_USERS come
 * back to their baseline.  An owner that goes while its releases are
 * pending takes them with it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create, F_ADD_SEALS */
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "frame.h"
#include "harness.h"

#define SEGID 7u
#define HELD_DEFAULT 16384u     /* brokerd(8): max-held-per-client */
#define QUEUE_LIMIT (256u * 1024)
#define QUEUE_LIMIT_STR "262144"    /* QUEUE_LIMIT, for --queue-limit */
#define BATCH 1024u             /* brokerd(8): references per loop pass */

static th_broker_t br;

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(release, .fini = teardown, .timeout = 240);

/* ---- what the owner hears ------------------------------------------------ */

/* The releases one owner received: per offset, on behalf of `peer`. */
typedef struct owner_seen {
    uint64_t peer;
    uint32_t n;                 /* offsets 0 .. n-1 were sent */
    uint32_t *count;            /* releases per offset */
    uint64_t total, frames, strays;
} owner_seen_t;

static uint8_t pkt[BK_MAX_MAX_PACKET];

static void note(owner_seen_t *s, const bk_hdr_t *h, const uint8_t *pl)
{
    if (!s || h->type != BK_T_RELEASE)
        return;
    s->frames++;
    for (uint32_t off = 0; off + BK_RELEASE_SIZE <= h->length;
         off += BK_RELEASE_SIZE) {
        const uint8_t *r = pl + off;
        uint64_t offset = bk_get64(r + 16);
        uint32_t count = bk_get32(r + 12);

        if (bk_get64(r) != s->peer || bk_get32(r + 8) != SEGID ||
            offset >= s->n) {
            s->strays++;
            continue;
        }
        s->count[offset] += count;
        s->total += count;
    }
}

/* Read one packet on fd, noting the releases in it. */
static void read_one(int fd, owner_seen_t *s, uint32_t req, bool *replied)
{
    ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
    const uint8_t *payload;
    size_t off = 0;
    bk_hdr_t h;

    TH_CHECK(n > 0, "the broker closed the connection (%zd)", n);
    while (bk_pkt_next(pkt, (size_t)n, &off, &h, &payload) == 1) {
        note(s, &h, payload);
        if (replied && h.type == BK_T_CTRL_REPLY && h.stream == req)
            *replied = true;
    }
}

/* CTRL op on a raw connection, reading until its reply. */
static void raw_ctrl(int fd, uint32_t op, uint32_t req, const void *pl,
                     uint32_t len, int xfd, owner_seen_t *s)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .aux = op, .stream = req, .length = len,
                   .nfds = xfd >= 0 ? 1 : 0 };
    bool replied = false;

    TH_OK(th_raw_send(fd, &h, pl, xfd >= 0 ? &xfd : NULL, xfd >= 0));
    while (!replied)
        read_one(fd, s, req, &replied);
}

/* PING as a barrier: everything the broker sent before is noted. */
static void raw_ping(int fd, uint32_t req, owner_seen_t *s)
{
    raw_ctrl(fd, BK_OP_PING, req, "", 0, -1, s);
}

static int raw_hello(uint64_t *id, uint32_t caps)
{
    bk_welcome_t w;
    int fd = th_raw_connect_hello_caps(br.sock, caps, &w);

    TH_CHECK(fd >= 0, "connect: %d", fd);
    *id = w.client_id;
    return fd;
}

static void raw_register(int fd, uint64_t size)
{
    int mfd = memfd_create("test-release", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    uint8_t pl[BK_SEG_REG_SIZE];

    TH_CHECK(mfd >= 0, "memfd_create: %s", strerror(errno));
    TH_CHECK(ftruncate(mfd, (off_t)size) == 0, "ftruncate");
    TH_CHECK(fcntl(mfd, F_ADD_SEALS, BK_SEALS_REQUIRED | F_SEAL_SEAL) == 0,
             "F_ADD_SEALS: %s", strerror(errno));
    bk_put32(pl, SEGID);
    bk_put32(pl + 4, 0);
    bk_put64(pl + 8, size);
    raw_ctrl(fd, BK_OP_SEGMENT, 1, pl, sizeof(pl), mfd, NULL);
    close(mfd);
}

/* ---- the broker's counters ------------------------------------------------ */

/* shm_held in the LIST_USERS record of uid (0 if it has none). */
static long user_held(uid_t uid)
{
    long v = th_user_value(&br, uid, "shm_held");

    return v < 0 ? 0 : v;
}

/* ---- the set-up --------------------------------------------------------- */

/* Descriptors at offsets 0 .. n-1 of the owner's segment to receiver rid
 * (fd r, which reads them and never releases): packets of 256 one-way
 * frames, each read by the receiver before the next is sent. */
static void feed(int owner, uint64_t rid, int r, uint32_t n)
{
    static uint8_t buf[256 * (BK_HDR_SIZE + BK_SHM_DESC_SIZE)];
    uint32_t sid = 100;

    for (uint32_t done = 0; done < n;) {
        uint32_t k = n - done < 256 ? n - done : 256, got = 0;
        size_t len = 0;

        for (uint32_t i = 0; i < k; i++) {
            bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                           .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_SHM,
                           .stream = ++sid, .dest = rid,
                           .length = BK_SHM_DESC_SIZE };
            uint8_t *pl = buf + len + BK_HDR_SIZE;

            bk_hdr_encode(&h, buf + len);
            bk_put32(pl, SEGID);
            bk_put32(pl + 4, 0);
            bk_put64(pl + 8, done + i);
            bk_put64(pl + 16, 1);
            len += BK_HDR_SIZE + BK_SHM_DESC_SIZE;
        }
        TH_OK(th_raw_send_bytes(owner, buf, len, NULL, 0));
        while (got < k) {
            ssize_t m = th_raw_recv(r, pkt, sizeof(pkt));
            const uint8_t *payload;
            size_t off = 0;
            bk_hdr_t h;

            TH_CHECK(m > 0, "the receiver was closed (%zd)", m);
            while (bk_pkt_next(pkt, (size_t)m, &off, &h, &payload) == 1) {
                TH_CHECK(h.type != BK_T_ERROR, "ERROR %u to the receiver",
                         h.aux);
                got += h.type == BK_T_DATA;
            }
        }
        done += k;
    }
}

/* Make the owner, which does not read, have more than queue_limit bytes
 * queued: one-way messages of 40 KB from a FLOW sender (told, not
 * paused), each followed by a PING so that the broker has taken it. */
static int fill_owner(uint64_t owner_id)
{
    static uint8_t big[40000];
    uint64_t fid;
    int f = raw_hello(&fid, BK_HELLO_FLOW);
    uint32_t sid = 0;

    while (th_broker_status(&br, "queued_bytes") <= QUEUE_LIMIT) {
        bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .flags = BK_F_OPEN | BK_F_CLOSE, .stream = ++sid,
                       .dest = owner_id, .length = sizeof(big) };
        TH_CHECK(sid < 200, "the owner's queue never filled");
        TH_OK(th_raw_send(f, &h, big, NULL, 0));
        raw_ping(f, 1000 + sid, NULL);
    }
    return f;
}

/* A well-behaved pair: a message from x to y's name arrives intact, and
 * x's ping is answered. */
static void pair_works(broker_t *x, broker_t *y, unsigned round)
{
    char text[32];
    broker_msg_t *m;
    int len = snprintf(text, sizeof(text), "message %u", round);

    TH_OK(broker_send(x, "release.pair", text, (size_t)len, NULL, 0));
    m = th_recv(y);
    cr_assert_eq(m->len, (size_t)len);
    cr_assert_eq(memcmp(m->data, text, (size_t)len), 0, "bytes intact");
    broker_msg_free(m);
    cr_assert_eq(broker_ping(x, TH_HANG_MS), 0);
}

static uint32_t held_count(void)
{
    return (uint32_t)th_scaled(HELD_DEFAULT, 256);
}

static void seen_init(owner_seen_t *s, uint64_t peer, uint32_t n)
{
    *s = (owner_seen_t){ .peer = peer, .n = n };
    s->count = calloc(n, sizeof(*s->count));
    cr_assert_not_null(s->count);
}

/* The owner reads until every reference came back, then a PING: each
 * offset exactly once, nothing else. */
static void owner_hears_every_release_once(int owner, owner_seen_t *s)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;

    while (s->total < s->n) {
        cr_assert_lt(th_now_ms(), end, "%" PRIu64 " of %u releases",
                     s->total, s->n);
        read_one(owner, s, 0, NULL);
    }
    raw_ping(owner, 9, s);
    cr_assert_eq(s->strays, 0, "records for other references");
    cr_assert_eq(s->total, s->n, "%" PRIu64 " releases for %u references",
                 s->total, s->n);
    for (uint32_t i = 0; i < s->n; i++)
        cr_assert_eq(s->count[i], 1, "offset %u released %u times", i,
                     s->count[i]);
}

/* What every test sets up: a broker (args: extra brokerd arguments or
 * NULL), a pair of library clients x and y ("release.pair" is y's), a raw
 * holder r that maps segments and a raw owner whose segment r holds n
 * references to. */
typedef struct {
    broker_t *x, *y;
    uint64_t rid, oid;
    int r, owner;
    uint32_t n;
} scene_t;

static void scene_start(scene_t *sc, const char *const *args)
{
    sc->n = held_count();
    th_broker_startv(&br, args);
    sc->x = th_connect(&br);
    sc->y = th_connect(&br);
    th_register(sc->y, "release.pair");
    sc->r = raw_hello(&sc->rid, BK_HELLO_SHM);
    sc->owner = raw_hello(&sc->oid, 0);
    raw_register(sc->owner, 1u << 20);
    feed(sc->owner, sc->rid, sc->r, sc->n);
}

/* Nothing is held any more and the pair still works; then what is left
 * of the scene (r and owner unless -1) is closed and the broker stops. */
static void scene_stop(scene_t *sc)
{
    th_broker_await_status(&br, "shm_releasing", 0);
    th_broker_await_status(&br, "shm_held", 0);
    cr_assert_eq(user_held(geteuid()), 0);
    pair_works(sc->x, sc->y, 100);
    if (sc->r >= 0)
        close(sc->r);
    if (sc->owner >= 0)
        close(sc->owner);
    broker_close(sc->x);
    broker_close(sc->y);
    th_broker_stop(&br);
}

static const char *const limited[] = { "--queue-limit", QUEUE_LIMIT_STR,
                                       NULL };

/* ---- tests ---------------------------------------------------------------- */

Test(release, a_departed_holder_waits_for_its_owner_and_others_are_served)
{
    uint64_t queued;
    owner_seen_t s;
    scene_t sc;
    int filler;

    scene_start(&sc, limited);
    cr_assert_eq(th_broker_status(&br, "shm_held"), sc.n);
    cr_assert_eq(user_held(geteuid()), sc.n);
    seen_init(&s, sc.rid, sc.n);

    filler = fill_owner(sc.oid);
    queued = th_broker_status(&br, "queued_bytes");
    close(sc.r);
    sc.r = -1;
    th_broker_await_status(&br, "shm_releasing", sc.n);
    /* the owner does not read: its releases wait, the others go on */
    for (unsigned i = 0; i < 8; i++)
        pair_works(sc.x, sc.y, i);
    cr_assert_eq(th_broker_status(&br, "shm_releasing"), sc.n, "still "
                 "pending after the pair was served");
    cr_assert_eq(th_broker_status(&br, "shm_held"), sc.n);
    cr_assert_eq(user_held(geteuid()), sc.n, "still charged to the user");
    cr_assert_eq(th_broker_status(&br, "queued_bytes"), queued, "no RELEASE "
                 "queued to an owner over its limit");

    owner_hears_every_release_once(sc.owner, &s);
    cr_assert_geq(s.frames, (sc.n + BATCH - 1) / BATCH, "in batches");
    cr_assert_leq(s.frames, sc.n / 64, "coalesced: %" PRIu64 " frames",
                  s.frames);
    scene_stop(&sc);
    free(s.count);
    close(filler);
}

Test(release, a_kicked_holder_is_released_exactly_once)
{
    owner_seen_t s;
    th_output_t o;
    scene_t sc;
    char id[32];
    int st;

    scene_start(&sc, NULL);
    seen_init(&s, sc.rid, sc.n);
    snprintf(id, sizeof(id), "%" PRIu64, sc.rid);
    st = th_ctl(br.sock, &o, "kick", id, NULL);
    cr_assert(TH_EXITED(st, 0), "kick: %s", o.err);
    th_output_free(&o);
    pair_works(sc.x, sc.y, 0);
    owner_hears_every_release_once(sc.owner, &s);
    pair_works(sc.x, sc.y, 1);
    scene_stop(&sc);
    free(s.count);
}

Test(release, an_owner_that_goes_takes_its_pending_releases_along)
{
    scene_t sc;
    int filler;

    scene_start(&sc, limited);
    filler = fill_owner(sc.oid);
    close(sc.r);
    sc.r = -1;
    th_broker_await_status(&br, "shm_releasing", sc.n);
    close(sc.owner);
    sc.owner = -1;
    th_broker_await_status(&br, "shm_segments", 0);
    close(filler);
    scene_stop(&sc);
}
