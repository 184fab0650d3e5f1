/*
 * test_shm_retire.c - the broker's shared-memory bookkeeping through the
 * port double (real memfds, no sockets): a receiver gets a segment before
 * its first descriptor, hears SEG_DROP only once it holds no reference
 * into the segment (so the drop never overtakes a descriptor), and a dead
 * receiver's references go back to the owner.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "frame.h"
#include "port_double.h"
#include "router.h"
#include "shm.h"

#define SEGID 7u
#define SEGSIZE 4096u

static dbl_world_t *w;
static bk_port_t *a, *b, *c;    /* a owns the segment */

static int sealed_memfd(uint64_t size)
{
    int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, BK_SEALS_REQUIRED), 0);
    return fd;
}

static int register_seg(bk_port_t *owner, uint32_t segid, int fd,
                        uint64_t size)
{
    uint8_t req[BK_SEG_REG_SIZE];

    bk_put32(req, segid);
    bk_put32(req + 4, 0);
    bk_put64(req + 8, size);
    return bk_shm_register(owner, req, fd);
}

static void setup(void)
{
    w = dbl_world_new();
    a = dbl_port_new(w, 1);
    b = dbl_port_new(w, 2);
    c = dbl_port_new(w, 3);
    cr_assert_eq(register_seg(a, SEGID, sealed_memfd(SEGSIZE), SEGSIZE), 0);
}

static void teardown(void)
{
    dbl_world_free(w);
}

TestSuite(shm_retire, .init = setup, .fini = teardown);

/* ---- helpers ---------------------------------------------------------- */

/* a sends `to` a one-way message whose payload is a descriptor. */
static void send_desc(bk_port_t *to, uint64_t offset)
{
    bk_shm_desc_t d = { .segid = SEGID, .offset = offset, .length = 64 };
    uint8_t desc[BK_SHM_DESC_SIZE];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_SHM,
        .length = BK_SHM_DESC_SIZE, .stream = 1, .dest = to->id,
    };

    bk_shm_desc_encode(&d, desc);
    bk_router_frame(a, &h, desc, NULL, 0);
}

/* `p` releases count references at offset into a's segment. */
static int release(bk_port_t *p, uint32_t count, uint64_t offset)
{
    uint8_t rec[BK_RELEASE_SIZE];
    const char *why = NULL;

    bk_put64(rec, a->id);
    bk_put32(rec + 8, SEGID);
    bk_put32(rec + 12, count);
    bk_put64(rec + 16, offset);
    return bk_shm_release(p, rec, sizeof(rec), &why);
}

static unsigned frames_of_type(const bk_port_t *to, uint8_t type)
{
    const dbl_frame_t *f;
    unsigned n = 0;

    for (unsigned i = 0; (f = dbl_nth(w, to, i)); i++)
        n += f->h.type == type;
    return n;
}

static void assert_seg_drop(const dbl_frame_t *f, const bk_port_t *to)
{
    cr_assert_not_null(f);
    cr_assert_eq(f->to, to);
    cr_assert_eq(f->h.type, BK_T_SEG_DROP);
    cr_assert_eq(f->h.source, a->id, "SEG_DROP names the owner");
    cr_assert_eq(bk_get32(f->payload), SEGID);
}

/* ---- delivery ----------------------------------------------------------- */

Test(shm_retire, the_segment_reaches_a_receiver_before_its_first_descriptor)
{
    send_desc(b, 0);
    send_desc(b, 128);
    cr_assert_eq(dbl_count(w, b), 3);
    cr_assert_eq(dbl_nth(w, b, 0)->h.type, BK_T_SEGMENT);
    cr_assert_eq(dbl_nth(w, b, 0)->nfds, 1, "with the segment's fd");
    cr_assert_eq(bk_get32(dbl_nth(w, b, 0)->payload), SEGID);
    cr_assert_eq(dbl_nth(w, b, 1)->h.type, BK_T_DATA);
    cr_assert_eq(dbl_nth(w, b, 2)->h.type, BK_T_DATA,
                 "the segment is sent once per receiver");
    cr_assert_eq(b->shm.nheld, 2);
    cr_assert_eq(w->srv.stats.shm_held, 2);
}

Test(shm_retire, a_release_goes_back_to_the_owner)
{
    send_desc(b, 128);
    dbl_clear(w);
    cr_assert_eq(release(b, 1, 128), 0);
    cr_assert_eq(dbl_count(w, a), 1);
    cr_assert_eq(dbl_nth(w, a, 0)->h.type, BK_T_RELEASE);
    cr_assert_eq(bk_get64(dbl_nth(w, a, 0)->payload), b->id);
    cr_assert_eq(bk_get32(dbl_nth(w, a, 0)->payload + 12), 1);
    cr_assert_eq(bk_get64(dbl_nth(w, a, 0)->payload + 16), 128);
    cr_assert_eq(b->shm.nheld, 0);
}

Test(shm_retire, a_release_of_a_reference_not_held_is_refused)
{
    send_desc(b, 0);
    cr_assert_eq(release(b, 1, 64), -EPROTO, "wrong offset");
    cr_assert_eq(release(b, 2, 0), -EPROTO, "more than held");
    cr_assert_eq(release(c, 1, 0), -EPROTO, "another client's reference");
    cr_assert_eq(b->shm.nheld, 1, "nothing was released");
}

/* ---- the owner leaves --------------------------------------------------- */

Test(shm_retire, seg_drop_waits_until_the_receiver_holds_no_reference)
{
    send_desc(b, 0);
    send_desc(b, 0);
    send_desc(b, 256);
    dbl_clear(w);
    dbl_port_gone(w, a);
    cr_assert_eq(frames_of_type(b, BK_T_SEG_DROP), 0,
                 "b still holds three references");
    cr_assert_eq(release(b, 1, 0), 0);
    cr_assert_eq(release(b, 1, 256), 0);
    cr_assert_eq(frames_of_type(b, BK_T_SEG_DROP), 0,
                 "b still holds one reference");
    cr_assert_eq(release(b, 1, 0), 0);
    cr_assert_eq(dbl_count(w, b), 1);
    assert_seg_drop(dbl_nth(w, b, 0), b);
}

Test(shm_retire, seg_drop_never_overtakes_a_descriptor)
{
    send_desc(b, 0);
    dbl_port_gone(w, a);
    /* The descriptor may still wait in b's stream queue; a SEG_DROP sent
     * now would go in b's control queue, served first, and pass it. */
    cr_assert_eq(dbl_count(w, b), 2, "no SEG_DROP while b may not have "
                 "read the descriptor");
    cr_assert_eq(release(b, 1, 0), 0);
    /* in b's log: the segment, the descriptor, then the drop */
    cr_assert_eq(dbl_count(w, b), 3);
    cr_assert_eq(dbl_nth(w, b, 0)->h.type, BK_T_SEGMENT);
    cr_assert_eq(dbl_nth(w, b, 1)->h.type, BK_T_DATA);
    assert_seg_drop(dbl_nth(w, b, 2), b);
}

Test(shm_retire, a_receiver_that_holds_nothing_hears_at_once)
{
    send_desc(b, 0);
    cr_assert_eq(release(b, 1, 0), 0);
    dbl_clear(w);
    dbl_port_gone(w, a);
    cr_assert_eq(dbl_count(w, b), 1);
    assert_seg_drop(dbl_nth(w, b, 0), b);
}

Test(shm_retire, each_receiver_hears_when_it_is_done)
{
    send_desc(b, 0);
    send_desc(c, 0);
    cr_assert_eq(release(b, 1, 0), 0);
    dbl_clear(w);
    dbl_port_gone(w, a);
    cr_assert_eq(dbl_count(w, b), 1);
    assert_seg_drop(dbl_nth(w, b, 0), b);
    cr_assert_eq(dbl_count(w, c), 0, "c still holds a reference");
    cr_assert_eq(release(c, 1, 0), 0);
    cr_assert_eq(dbl_count(w, c), 1);
    assert_seg_drop(dbl_nth(w, c, 0), c);
}

Test(shm_retire, a_client_never_sent_the_segment_hears_nothing)
{
    send_desc(b, 0);
    dbl_clear(w);
    dbl_port_gone(w, a);
    cr_assert_eq(dbl_count(w, c), 0);
}

/* ---- a receiver leaves -------------------------------------------------- */

Test(shm_retire, a_dead_receivers_references_return_to_the_owner)
{
    bool at0 = false, at128 = false;
    const dbl_frame_t *f;

    send_desc(b, 0);
    send_desc(b, 0);
    send_desc(b, 128);
    dbl_clear(w);
    dbl_port_gone(w, b);
    /* one record per (segment, offset), coalesced into one frame */
    cr_assert_eq(dbl_count(w, a), 1, "one RELEASE frame");
    f = dbl_nth(w, a, 0);
    cr_assert_eq(f->h.type, BK_T_RELEASE);
    cr_assert_eq(f->h.length, 2 * BK_RELEASE_SIZE, "two records");
    for (unsigned i = 0; i < 2; i++) {
        const uint8_t *rec = f->payload + i * BK_RELEASE_SIZE;
        uint32_t count = bk_get32(rec + 12);
        uint64_t offset = bk_get64(rec + 16);

        cr_assert_eq(bk_get64(rec), b->id, "on b's behalf");
        cr_assert_eq(bk_get32(rec + 8), SEGID);
        if (offset == 0) {
            cr_assert_eq(count, 2);
            at0 = true;
        } else {
            cr_assert_eq(offset, 128);
            cr_assert_eq(count, 1);
            at128 = true;
        }
    }
    cr_assert(at0 && at128);
    cr_assert_eq(w->srv.stats.shm_held, 0);
}

/* ---- registration --------------------------------------------------------- */

Test(shm_retire, registration_failures_are_negative_errnos)
{
    int p[2];

    cr_assert_eq(register_seg(a, SEGID, sealed_memfd(SEGSIZE), SEGSIZE),
                 -EEXIST);
    cr_assert_eq(register_seg(a, 8, sealed_memfd(SEGSIZE), 2 * SEGSIZE),
                 -EINVAL, "size does not match the memfd");
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    close(p[1]);
    cr_assert_eq(register_seg(a, 8, p[0], SEGSIZE), -EINVAL, "not a memfd");
    cr_assert_eq(register_seg(a, 8, sealed_memfd(w->cfg.max_shm),
                              w->cfg.max_shm), -ENOSPC);
    for (uint32_t id = 8; id < 8 + w->cfg.max_segments - 1; id++)
        cr_assert_eq(register_seg(a, id, sealed_memfd(SEGSIZE), SEGSIZE), 0);
    cr_assert_eq(register_seg(a, 100, sealed_memfd(SEGSIZE), SEGSIZE),
                 -ENOSR);
    cr_assert_eq(w->srv.stats.shm_segments, w->cfg.max_segments);
}

/* ---- the owner drops a segment (SEG_DROP from the client) ----------------- */

static int drop(bk_port_t *owner, uint32_t segid, uint32_t reserved)
{
    uint8_t pl[BK_SEG_DROP_SIZE];
    const char *why = NULL;

    bk_put32(pl, segid);
    bk_put32(pl + 4, reserved);
    return bk_shm_drop(owner, pl, &why);
}

Test(shm_retire, a_dropped_segment_goes_as_when_its_owner_leaves)
{
    send_desc(b, 0);            /* b holds a reference */
    send_desc(c, 0);
    cr_assert_eq(release(c, 1, 0), 0);      /* c holds none */
    dbl_clear(w);
    cr_assert_eq(drop(a, SEGID, 0), 0);
    cr_assert_eq(a->shm.nsegs, 0);
    cr_assert_eq(a->shm.bytes, 0);
    cr_assert_eq(frames_of_type(c, BK_T_SEG_DROP), 1, "c: at once");
    cr_assert_eq(frames_of_type(b, BK_T_SEG_DROP), 0, "b: not before its "
                 "release");
    /* its segid stays taken while b may still map the old segment */
    cr_assert_eq(register_seg(a, SEGID, sealed_memfd(SEGSIZE), SEGSIZE),
                 -EEXIST);
    cr_assert_eq(release(b, 1, 0), 0);
    cr_assert_eq(frames_of_type(b, BK_T_SEG_DROP), 1);
    assert_seg_drop(dbl_nth(w, b, dbl_count(w, b) - 1), b);
    cr_assert_eq(register_seg(a, SEGID, sealed_memfd(SEGSIZE), SEGSIZE), 0,
                 "free again once every receiver heard");
}

Test(shm_retire, a_descriptor_into_a_dropped_segment_is_refused)
{
    bk_shm_desc_t d = { .segid = SEGID, .offset = 0, .length = 64 };
    uint8_t desc[BK_SHM_DESC_SIZE];
    const char *why = NULL;

    cr_assert_eq(drop(a, SEGID, 0), 0);
    bk_shm_desc_encode(&d, desc);
    cr_assert_eq(bk_shm_check(a, desc, &why), -EPROTO);
    cr_assert_eq(drop(a, SEGID, 0), -EPROTO, "dropped twice");
    cr_assert_eq(drop(a, SEGID + 1, 0), -EPROTO, "never registered");
}

Test(shm_retire, seg_drop_reserved_field_must_be_zero)
{
    cr_assert_eq(drop(a, SEGID, 1), -EPROTO);
    cr_assert_eq(a->shm.nsegs, 1, "still registered");
}

/* ---- a receiver that does not map segments -------------------------------- */

Test(shm_retire, a_receiver_without_shm_gets_the_bytes_not_the_segment)
{
    const dbl_frame_t *f;

    b->shm.maps = false;
    send_desc(b, 128);
    cr_assert_eq(frames_of_type(b, BK_T_SEGMENT), 0, "no segment");
    cr_assert_eq(dbl_count(w, b), 1);
    f = dbl_nth(w, b, 0);
    cr_assert(f->body, "the descriptor went as a body");
    cr_assert_eq(f->body_len, 64);
    /* the double sends it at once: b's reference came back to a */
    cr_assert_eq(b->shm.nheld, 0);
    cr_assert_eq(frames_of_type(a, BK_T_RELEASE), 1);
    f = dbl_nth(w, a, dbl_count(w, a) - 1);
    cr_assert_eq(bk_get64(f->payload), b->id, "released on b's behalf");
    cr_assert_eq(bk_get64(f->payload + 16), 128);
}

/* ---- release jobs: a departed holder's references in batches ------------ */

#define NREF 20u                /* references b holds, at offsets i * 64 */

/* b holds NREF references into a's segment and goes; its job is left for
 * the test to step. */
static void holder_goes(void)
{
    for (unsigned i = 0; i < NREF; i++)
        send_desc(b, i * 64);
    cr_assert_eq(w->srv.stats.shm_held, NREF);
    dbl_clear(w);
    w->hold_releases = true;
    dbl_port_gone(w, b);
}

/* The RELEASE records a got since the log was cleared, counted per
 * offset into seen[] (index offset / 64); returns the frames. */
static unsigned releases_to_a(unsigned seen[NREF])
{
    const dbl_frame_t *f;
    unsigned frames = 0;

    for (unsigned i = 0; (f = dbl_nth(w, a, i)); i++) {
        if (f->h.type != BK_T_RELEASE)
            continue;
        frames++;
        cr_assert_leq(f->h.length, DBL_PAYLOAD, "the log keeps it whole");
        for (uint32_t off = 0; off < f->h.length; off += BK_RELEASE_SIZE) {
            const uint8_t *rec = f->payload + off;
            uint64_t offset = bk_get64(rec + 16);

            cr_assert_eq(bk_get64(rec), b->id, "on b's behalf");
            cr_assert_eq(bk_get32(rec + 8), SEGID);
            cr_assert_eq(offset % 64, 0);
            cr_assert_lt(offset / 64, NREF);
            seen[offset / 64] += bk_get32(rec + 12);
        }
    }
    return frames;
}

Test(shm_retire, a_departed_holder_is_released_in_bounded_batches)
{
    unsigned seen[NREF] = { 0 }, passes = 0, before;

    holder_goes();
    cr_assert_eq(dbl_count(w, a), 0, "nothing at once");
    cr_assert_eq(w->srv.releases.pending, NREF);
    cr_assert_eq(w->srv.stats.shm_held, NREF, "still counted");
    cr_assert_geq(w->release_wakeups, 1, "the loop was asked to run it");
    for (bool more = true; more; passes++) {
        before = dbl_count(w, a);
        more = bk_shm_drain_step(&w->srv, 8);
        cr_assert_leq(dbl_count(w, a) - before, 1, "one frame per pass");
        cr_assert_lt(passes, NREF, "it ends");
    }
    cr_assert_eq(passes, 3, "8 + 8 + 4 references");
    cr_assert_eq(releases_to_a(seen), 3);
    for (unsigned i = 0; i < NREF; i++)
        cr_assert_eq(seen[i], 1, "offset %u released %u times", i * 64,
                     seen[i]);
    cr_assert_eq(w->srv.releases.pending, 0);
    cr_assert_eq(w->srv.releases.njobs, 0);
    cr_assert_eq(w->srv.stats.shm_held, 0);
    cr_assert_not(bk_shm_drain_step(&w->srv, 8), "nothing left");
}

Test(shm_retire, a_release_job_waits_while_the_owner_is_over_its_limit)
{
    unsigned seen[NREF] = { 0 }, wakeups;

    holder_goes();
    a->out.bytes = w->cfg.queue_limit + 1;      /* a does not read */
    cr_assert_not(bk_shm_drain_step(&w->srv, 8), "nothing can go on");
    cr_assert_eq(dbl_count(w, a), 0, "no frame past the limit");
    cr_assert(a->shm.release_wait);
    cr_assert_eq(w->srv.releases.pending, NREF);
    a->out.bytes = 0;                           /* a read its queue */
    wakeups = w->release_wakeups;
    bk_shm_owner_drained(a);
    cr_assert_eq(w->release_wakeups, wakeups + 1, "the job is resumed");
    cr_assert_not(a->shm.release_wait);
    while (bk_shm_drain_step(&w->srv, 8))
        ;
    releases_to_a(seen);
    for (unsigned i = 0; i < NREF; i++)
        cr_assert_eq(seen[i], 1, "offset %u released %u times", i * 64,
                     seen[i]);
    cr_assert_eq(w->srv.stats.shm_held, 0);
}

/* The owner drops the segment while a job still holds references into
 * it: its id stays taken until the job's RELEASE went out, so a late
 * record never names a newer segment of the same id. */
Test(shm_retire, a_segment_dropped_while_releases_are_pending_stays_taken)
{
    unsigned seen[NREF] = { 0 };

    holder_goes();
    cr_assert_eq(drop(a, SEGID, 0), 0);
    cr_assert_eq(register_seg(a, SEGID, sealed_memfd(SEGSIZE), SEGSIZE),
                 -EEXIST, "releases into the old segment are pending");
    cr_assert_eq(a->shm.ndropped, 1);
    while (bk_shm_drain_step(&w->srv, 8))
        ;
    releases_to_a(seen);
    for (unsigned i = 0; i < NREF; i++)
        cr_assert_eq(seen[i], 1);
    cr_assert_eq(a->shm.ndropped, 0, "the tombstone went with the job");
    cr_assert_eq(register_seg(a, SEGID, sealed_memfd(SEGSIZE), SEGSIZE), 0);
}

Test(shm_retire, a_release_job_whose_owner_left_sends_nothing)
{
    holder_goes();
    w->hold_releases = false;
    dbl_port_gone(w, a);
    cr_assert_eq(dbl_count(w, NULL), 0);
    cr_assert_eq(w->srv.releases.pending, 0);
    cr_assert_eq(w->srv.releases.njobs, 0);
    cr_assert_eq(w->srv.stats.shm_held, 0);
}
