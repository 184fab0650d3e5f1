/*
 * shm.c - libbroker layer 5: our shared-memory pool of sealed memfd
 * segments and its buffers (the rules of ownership are in shm.h; the
 * segments of others are shmview.c's).
 *
 * Pool.  Every segment is a memfd (sealed against shrinking and growing)
 * mapped read-write once and registered with the broker (CTRL SEGMENT).
 * The pool grows up to BROKER_OPT_SHM_POOL_MAX bytes (default and
 * ceiling: the broker's max_shm) and the broker's max_segments, and
 * shrinks by idle segments: one with no buffer in it (so with every
 * descriptor into it released) for BROKER_OPT_SHM_IDLE_MS is unmapped,
 * closed and unregistered with SEG_DROP (bk_shm_idle_run, from the input
 * layer's expiry); the segments of BROKER_OPT_SHM_RESERVE are kept,
 * every page of them populated when they are made (bk_shm_reserve).
 * Segment ids are never reused on a connection.  A new segment has
 * BROKER_OPT_SHM_SEGMENT_SIZE bytes, or the request's size if that is
 * larger, or whatever the byte limit still allows if that is smaller and
 * still enough for the request.
 *
 * Allocator.  A segment is cut into 64 KiB chunks and a buffer is a run
 * of contiguous chunks, found first-fit in a bitmap (one bit per chunk,
 * shmalloc.c), trying the segments in the order they were created.  The
 * chunk size keeps the bitmap tiny (128 bytes for a 64 MiB segment) and
 * makes a scan cheap; the price is that a small buffer takes a whole
 * chunk, which is why the automatic path only handles large messages.
 * The bitmaps and the buffers' reference counts are private heap memory:
 * a receiver can read the segment but nothing in it steers the sender.
 *
 * Warm memory first.  Memory used for the first time costs far more than
 * the copy into it: the kernel allocates and zeroes every page, and the
 * sender and every receiver take a page fault for it (a fresh 16 MiB
 * buffer costs about ten warm copies of 16 MiB).  Pages once used stay in
 * the segment and mapped on both sides, so a buffer is taken, in this
 * order: from the runs freed last (LIFO, a short list; the freshest in
 * the caches), from the chunks handed out before (first fit below each
 * segment's `touched` mark); then, after reading the RELEASEs already
 * waiting on the socket (a blocking sender reads nothing while it sends,
 * so without this its pool would grow by a segment whenever the
 * releases merely had not been read yet), warm memory again; then, in
 * blocking mode with two or more buffers in flight, a wait for a release
 * bounded by the rent-or-buy rule (await_warm); only then new memory,
 * the untouched end of a segment or a new segment, allocated with one
 * fallocate() and mapped with one madvise(MADV_POPULATE_WRITE) instead
 * of a fault per page (a segment's memfd stays open for that until all
 * of it has been used).  A stream
 * thus settles on two buffers when the receivers keep up (one written,
 * one read), and in a steady stream no syscall is made beyond the
 * sendmsg of the descriptor: the socket is read only when warm memory
 * runs out.
 *
 * References.  A buffer holds one reference for the application (dropped
 * by broker_buf_free) plus one per descriptor sent and not yet released
 * (RELEASE records from the broker, keyed by segment id and the buffer's
 * offset).  Its chunks go back to the bitmap when both are gone.  A
 * descriptor that never left the library (the send failed, or its queued
 * copy was dropped) gives its reference back at once.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include "outq.h"
#include "ctrl.h"
#include "shm.h"
#include "shmalloc.h"

/* A segment of our pool. */
struct bk_pseg {
    bk_list_t link;             /* on shm->segs, oldest first */
    uint32_t segid;
    int fd;                     /* our memfd while part of it was never
                                 * used (to allocate it), then -1 */
    uint8_t *map;
    uint64_t size;
    bk_shma_t alloc;
    uint32_t nbufs;             /* buffers in it */
    uint64_t idle_ms;           /* bk_io_now_ms() when nbufs became 0 */
    bool reserved;              /* part of BROKER_OPT_SHM_RESERVE: kept
                                 * while idle */
};

/* A buffer handed out by broker_buf_alloc or used by the automatic path. */
struct bk_sbuf {
    broker_buf_t pub;
    bk_hnode_t node;
    uint8_t key[12];            /* segid, offset */
    struct bk_shm *shm;
    struct bk_pseg *seg;
    uint64_t off;
    uint32_t first, nchunks;
    uint32_t sent;              /* descriptors not yet released */
    bool owned;                 /* the application's reference */
};

/* A run of chunks that went back to the pool. */
struct bk_frun {
    struct bk_pseg *seg;
    uint32_t first, n;
};

#define BK_SHM_RECENT   16u     /* freed runs remembered for reuse */

struct bk_shm {
    bk_list_t segs;             /* struct bk_pseg */
    uint32_t nsegs;
    uint32_t segid_next;
    bool no_grow;               /* the broker refused a segment for limits */
    uint64_t mapped;
    uint64_t in_use;
    uint64_t nbufs;
    bk_htable_t bufs;           /* struct bk_sbuf by (segid, offset) */
    struct bk_frun recent[BK_SHM_RECENT];   /* most recently freed last */
    uint32_t nrecent;
    uint64_t nfreed;            /* buffers that went back, ever */
    uint32_t awaiting;          /* buffers with descriptors unreleased */
    uint64_t fresh_ns;          /* faulting in a new chunk took, 0: unknown */
    uint64_t waited_ns;         /* waited for releases since new memory */
};

/* ---- setup and teardown ------------------------------------------------- */

static void on_unsent(broker_t *b, struct bk_sbuf *sb)
{
    (void)b;
    bk_shm_unsent(sb);
}

static const struct bk_out_hooks shm_out_hooks = {
    .unsent = on_unsent,
};

int bk_shm_create(broker_t *b)
{
    struct bk_shm *shm = calloc(1, sizeof(*shm));

    if (!shm)
        return -ENOMEM;
    shm->segid_next = 1;
    bk_list_init(&shm->segs);
    bk_ht_init(&shm->bufs);
    b->shm = shm;
    bk_out_set_hooks(b, &shm_out_hooks);
    return 0;
}

void bk_shm_destroy(broker_t *b)
{
    struct bk_shm *shm = b->shm;
    bk_hnode_t *n;
    bk_list_t *l;

    if (!shm)
        return;
    for (n = bk_ht_next(&shm->bufs, NULL); n; ) {
        struct bk_sbuf *sb = bk_container_of(n, struct bk_sbuf, node);

        n = bk_ht_next(&shm->bufs, n);
        bk_ht_remove(&shm->bufs, &sb->node);
        free(sb);
    }
    bk_ht_fini(&shm->bufs);
    while ((l = bk_list_pop_head(&shm->segs))) {
        struct bk_pseg *seg = bk_container_of(l, struct bk_pseg, link);

        munmap(seg->map, seg->size);
        if (seg->fd >= 0)
            close(seg->fd);
        bk_shma_fini(&seg->alloc);
        free(seg);
    }
    free(shm);
    b->shm = NULL;
}

/* ---- pool: segments ----------------------------------------------------- */

bool bk_shm_supported(const broker_t *b)
{
    return b->lim.max_shm > 0 && b->lim.max_segments > 0;
}

static uint64_t pool_limit(const broker_t *b)
{
    return b->opt_shm_pool_max < b->lim.max_shm ? b->opt_shm_pool_max
                                                 : b->lim.max_shm;
}

/* A sealed memfd of `size` bytes, mapped read-write at *map. */
static int memfd_make(uint64_t size, uint8_t **map)
{
    int fd = memfd_create("libbroker-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void *p;
    int e;

    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
        goto fail;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        goto fail;
    /* our mapping stays writable; no one can make a new writable one */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
        e = errno;
        munmap(p, size);
        close(fd);
        return -e;
    }
    *map = p;
    return fd;
fail:
    e = errno;
    close(fd);
    return -e;
}

/* Create, map and register a segment of nchunks chunks. */
static int pseg_new(broker_t *b, uint32_t nchunks, int64_t deadline,
                    struct bk_pseg **out)
{
    struct bk_shm *shm = b->shm;
    uint64_t size = (uint64_t)nchunks * BK_SHMA_CHUNK;
    uint8_t reg[BK_SEG_REG_SIZE];
    struct bk_pseg *seg;
    int fd, r;

    if (shm->segid_next > BK_SEGID_MAX)
        return -ENOSR;
    if (size > SIZE_MAX || size > (uint64_t)INT64_MAX)
        return -ENOMEM;
    seg = calloc(1, sizeof(*seg));
    if (!seg)
        return -ENOMEM;
    r = bk_shma_init(&seg->alloc, nchunks);
    if (r < 0) {
        free(seg);
        return r;
    }
    fd = memfd_make(size, &seg->map);
    if (fd < 0) {
        bk_shma_fini(&seg->alloc);
        free(seg);
        return fd;
    }
    seg->size = size;
    seg->segid = shm->segid_next++;
    bk_put32(reg, seg->segid);
    bk_put32(reg + 4, 0);
    bk_put64(reg + 8, size);
    r = bk_ctrl_call(b, BK_OP_SEGMENT, reg, sizeof(reg), fd, deadline, NULL,
                     NULL);
    seg->fd = fd;
    if (r < 0) {
        close(fd);
        munmap(seg->map, size);
        bk_shma_fini(&seg->alloc);
        free(seg);
        return r;
    }
    bk_list_push_tail(&shm->segs, &seg->link);
    shm->nsegs++;
    shm->mapped += size;
    seg->idle_ms = bk_io_now_ms();
    *out = seg;
    return 0;
}

/* Unmap, close and unregister an idle segment. */
static void pseg_drop(broker_t *b, struct bk_pseg *seg)
{
    struct bk_shm *shm = b->shm;

    for (uint32_t i = shm->nrecent; i-- > 0; )
        if (shm->recent[i].seg == seg) {
            memmove(&shm->recent[i], &shm->recent[i + 1],
                    (shm->nrecent - i - 1) * sizeof(shm->recent[0]));
            shm->nrecent--;
        }
    bk_list_unlink(&seg->link);
    shm->nsegs--;
    shm->mapped -= seg->size;
    shm->no_grow = false;       /* the limits have room again */
    munmap(seg->map, seg->size);
    if (seg->fd >= 0)
        close(seg->fd);
    bk_shma_fini(&seg->alloc);
    (void)bk_out_queue_seg_drop(b, seg->segid);
    free(seg);
}

bool bk_shm_idle_next(const broker_t *b, uint64_t *when)
{
    const struct bk_pseg *seg;
    bool any = false;

    if (!b->shm || !b->opt_shm_idle_ms)
        return false;
    bk_list_for_each(seg, &b->shm->segs, struct bk_pseg, link)
        if (!seg->nbufs && !seg->reserved &&
            (!any || seg->idle_ms + b->opt_shm_idle_ms < *when)) {
            *when = seg->idle_ms + b->opt_shm_idle_ms;
            any = true;
        }
    return any;
}

void bk_shm_idle_run(broker_t *b)
{
    struct bk_pseg *seg;
    uint64_t now;

    if (!b->shm || !b->opt_shm_idle_ms || b->io.err)
        return;
    now = bk_io_now_ms();
    bk_list_for_each_safe(seg, &b->shm->segs, struct bk_pseg, link)
        if (!seg->nbufs && !seg->reserved &&
            now >= seg->idle_ms + b->opt_shm_idle_ms)
            pseg_drop(b, seg);
}

/* ---- pool: buffers ------------------------------------------------------ */

static struct bk_sbuf *sbuf_find(struct bk_shm *shm, uint32_t segid,
                                 uint64_t off)
{
    uint8_t key[12];
    bk_hnode_t *n;

    bk_put32(key, segid);
    bk_put64(key + 4, off);
    n = bk_ht_find(&shm->bufs, key, sizeof(key));
    return n ? bk_container_of(n, struct bk_sbuf, node) : NULL;
}

/* Descriptors of sb sent (add) or released or never sent (sub). */
static void sent_add(struct bk_sbuf *sb, uint32_t n)
{
    if (!sb->sent && n)
        sb->shm->awaiting++;
    sb->sent += n;
}

static void sent_sub(struct bk_sbuf *sb, uint32_t n)
{
    if (n > sb->sent)
        n = sb->sent;
    sb->sent -= n;
    if (n && !sb->sent)
        sb->shm->awaiting--;
}

/* A buffer on the run [first, first + need) of seg, already marked in
 * use (given back if this fails). */
static int sbuf_make(struct bk_shm *shm, struct bk_pseg *seg, uint32_t first,
                     uint32_t need, size_t size, struct bk_sbuf **out)
{
    struct bk_sbuf *sb = calloc(1, sizeof(*sb));

    if (!sb) {
        bk_shma_free(&seg->alloc, first, need);
        return -ENOMEM;
    }
    sb->shm = shm;
    sb->seg = seg;
    sb->first = first;
    sb->nchunks = need;
    sb->off = (uint64_t)first * BK_SHMA_CHUNK;
    sb->owned = true;
    sb->pub.data = seg->map + sb->off;
    sb->pub.size = size;
    bk_put32(sb->key, seg->segid);
    bk_put64(sb->key + 4, sb->off);
    sb->node.key = sb->key;
    sb->node.keylen = sizeof(sb->key);
    if (bk_ht_insert(&shm->bufs, &sb->node) < 0) {
        bk_shma_free(&seg->alloc, first, need);
        free(sb);
        return -ENOMEM;
    }
    shm->in_use += (uint64_t)need * BK_SHMA_CHUNK;
    shm->nbufs++;
    seg->nbufs++;
    *out = sb;
    return 0;
}

/* Remember a run that went back to the pool, most recent last; the
 * oldest is forgotten when the list is full. */
static void recent_push(struct bk_shm *shm, struct bk_pseg *seg,
                        uint32_t first, uint32_t n)
{
    if (shm->nrecent == BK_SHM_RECENT) {
        memmove(shm->recent, shm->recent + 1,
                (BK_SHM_RECENT - 1) * sizeof(shm->recent[0]));
        shm->nrecent--;
    }
    shm->recent[shm->nrecent++] = (struct bk_frun){ seg, first, n };
}

static void recent_remove(struct bk_shm *shm, uint32_t i)
{
    memmove(shm->recent + i, shm->recent + i + 1,
            (shm->nrecent - i - 1) * sizeof(shm->recent[0]));
    shm->nrecent--;
}

/* LIFO: the start of the most recently freed run that still is free and
 * has need chunks (its rest stays remembered), or -ENOSPC.  Runs taken
 * meanwhile by first fit are forgotten on the way. */
static int64_t recent_take(struct bk_shm *shm, uint32_t need,
                           struct bk_pseg **seg)
{
    for (uint32_t i = shm->nrecent; i-- > 0; ) {
        struct bk_frun *fr = &shm->recent[i];
        uint32_t first = fr->first;

        if (fr->n < need)
            continue;
        if (bk_shma_take(&fr->seg->alloc, first, need) < 0) {
            recent_remove(shm, i);
            continue;
        }
        *seg = fr->seg;
        if (fr->n > need) {
            fr->first += need;
            fr->n -= need;
        } else {
            recent_remove(shm, i);
        }
        return first;
    }
    return -ENOSPC;
}

/* A buffer on memory that was used before: the most recently freed run,
 * else first fit among the warm chunks of the segments, oldest first. */
static int get_warm(struct bk_shm *shm, uint32_t need, size_t size,
                    struct bk_sbuf **out)
{
    struct bk_pseg *seg;
    int64_t first = recent_take(shm, need, &seg);

    if (first >= 0)
        return sbuf_make(shm, seg, (uint32_t)first, need, size, out);
    bk_list_for_each(seg, &shm->segs, struct bk_pseg, link) {
        if (seg->alloc.nfree < need)
            continue;
        first = bk_shma_alloc_warm(&seg->alloc, need);
        if (first >= 0)
            return sbuf_make(shm, seg, (uint32_t)first, need, size, out);
    }
    return -ENOSPC;
}

/* Chunks [from, to) of seg, never used before, are about to be: their
 * pages are allocated with one fallocate() and mapped with one
 * madvise(MADV_POPULATE_WRITE) rather than one page fault per page on
 * the first write (each in batches, about 30% cheaper than the faults).
 * The memfd is closed once no chunk of it is new any more.  Returns 0,
 * or -1 if the pages were not mapped, which is harmless: they then fault
 * in as they are written. */
static int pseg_populate(struct bk_pseg *seg, uint32_t from, uint32_t to)
{
    uint64_t off = (uint64_t)from * BK_SHMA_CHUNK;
    uint64_t len = (uint64_t)(to - from) * BK_SHMA_CHUNK;
    int r = -1;

    if (seg->fd >= 0)
        (void)fallocate(seg->fd, 0, (off_t)off, (off_t)len);
    if (seg->fd >= 0 && seg->alloc.touched == seg->alloc.nchunks) {
        close(seg->fd);
        seg->fd = -1;
    }
#ifdef MADV_POPULATE_WRITE
    r = madvise(seg->map + off, len, MADV_POPULATE_WRITE) == 0 ? 0 : -1;
#endif
    return r;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* First fit in seg, new memory included: faulted in at once, and how
 * long that took per chunk is remembered (await_warm). */
static int get_in(struct bk_shm *shm, struct bk_pseg *seg, uint32_t need,
                  size_t size, struct bk_sbuf **out)
{
    uint32_t touched = seg->alloc.touched, end, from;
    int64_t first = bk_shma_alloc(&seg->alloc, need);
    uint64_t t0;

    if (first < 0)
        return (int)first;
    end = (uint32_t)first + need;
    if (end > touched) {
        from = (uint32_t)first > touched ? (uint32_t)first : touched;
        t0 = now_ns();
        if (pseg_populate(seg, from, end) == 0)
            shm->fresh_ns = (now_ns() - t0) / (end - from);
        shm->waited_ns = 0;
    }
    return sbuf_make(shm, seg, (uint32_t)first, need, size, out);
}

/* Read the RELEASEs that arrived meanwhile: a blocking sender reads
 * nothing while it sends.  An attached connection reads in its loop, and
 * what is read here would not wake it, so it is left alone.  Returns
 * whether a buffer went back to the pool, or the connection's error. */
static int pump_releases(broker_t *b)
{
    struct bk_shm *shm = b->shm;
    uint64_t freed = shm->nfreed;
    int r;

    if (bk_conn_attached(b) || !shm->awaiting || b->io.err)
        return 0;
    r = bk_io_pump(&b->io, BK_PUMP_BUDGET);
    if (r < 0)
        return r;
    return shm->nfreed != freed;
}

/* Buffers are in flight but none is free: wait for a release rather
 * than take new memory, as long as all the waiting since new memory was
 * last taken stays below what new memory would cost to fault in (as
 * measured the last time).  That is the rent-or-buy rule: it never costs
 * more than twice the better choice, and usually much less, since a
 * release tends to be a round trip away and new memory costs about ten
 * copies of it.  Not while fewer than two buffers are in flight: one
 * being written while the receivers read another is what lets the
 * sender and the receivers work at the same time.  Returns 0 with *out,
 * -ENOSPC (no release in time: take new memory), or the connection's
 * error. */
static int await_warm(broker_t *b, uint32_t need, size_t size,
                      int64_t deadline, struct bk_sbuf **out)
{
    struct bk_shm *shm = b->shm;
    uint64_t cost = (uint64_t)need * shm->fresh_ns, t0 = now_ns();
    int64_t until;
    int r = -ENOSPC;

    if (shm->awaiting < 2 || cost <= shm->waited_ns + 1000000u)
        return -ENOSPC;
    until = (int64_t)bk_io_now_ms() +
            (int64_t)((cost - shm->waited_ns) / 1000000u);
    if (deadline >= 0 && deadline < until)
        until = deadline;
    while (shm->awaiting && !bk_io_aborted(&b->io)) {
        r = bk_io_wait(&b->io, false, until);
        if (r == -ETIMEDOUT) {
            r = -ENOSPC;
            break;
        }
        if (r < 0 || (r = get_warm(shm, need, size, out)) != -ENOSPC)
            break;
    }
    shm->waited_ns += now_ns() - t0;
    return r;
}

/* Back to the pool once nobody references the buffer. */
static void sbuf_maybe_free(struct bk_sbuf *sb)
{
    struct bk_shm *shm = sb->shm;

    if (sb->owned || sb->sent)
        return;
    bk_ht_remove(&shm->bufs, &sb->node);
    bk_shma_free(&sb->seg->alloc, sb->first, sb->nchunks);
    recent_push(shm, sb->seg, sb->first, sb->nchunks);
    if (--sb->seg->nbufs == 0)
        sb->seg->idle_ms = bk_io_now_ms();
    shm->in_use -= (uint64_t)sb->nchunks * BK_SHMA_CHUNK;
    shm->nbufs--;
    shm->nfreed++;
    free(sb);
}

/* A new segment for a request of need chunks, if the limits allow one:
 * 0, -ENOSPC (they do not), or another negative errno. */
static int pool_grow(broker_t *b, uint32_t need, int64_t deadline,
                     struct bk_pseg **seg)
{
    struct bk_shm *shm = b->shm;
    uint64_t limit = pool_limit(b);
    uint64_t left = limit > shm->mapped ?
                    (limit - shm->mapped) / BK_SHMA_CHUNK : 0;
    uint32_t seg_chunks = bk_shma_chunks_for(b->opt_shm_seg_size);
    uint32_t n = bk_shma_plan(need, seg_chunks ? seg_chunks : need, left);
    int r;

    if (shm->no_grow || shm->nsegs >= b->lim.max_segments || !n)
        return -ENOSPC;
    r = pseg_new(b, n, deadline, seg);
    if (r == -ENOSR || r == -ENOSPC)
        shm->no_grow = true;
    return r == -ENOSR ? -ENOSPC : r;
}

/* Memory used before comes first (its pages are there already); then,
 * after reading the releases that came meanwhile, memory used before
 * again, and with may_wait, a short wait for a release; only then new
 * memory: the untouched end of a segment, else a new segment. */
int bk_shm_get(broker_t *b, size_t size, bool may_wait, int64_t deadline,
               struct bk_sbuf **out)
{
    struct bk_shm *shm = b->shm;
    uint32_t need = bk_shma_chunks_for(size);
    struct bk_pseg *seg;
    int r;

    if (need == 0)
        return -ENOSPC;
    r = get_warm(shm, need, size, out);
    if (r != -ENOSPC)
        return r;
    r = pump_releases(b);
    if (r < 0)
        return r;
    if (r > 0 && (r = get_warm(shm, need, size, out)) != -ENOSPC)
        return r;
    if (may_wait && !bk_conn_attached(b) &&
        (r = await_warm(b, need, size, deadline, out)) != -ENOSPC)
        return r;
    bk_list_for_each(seg, &shm->segs, struct bk_pseg, link) {
        if (seg->alloc.nfree < need)
            continue;
        r = get_in(shm, seg, need, size, out);
        if (r != -ENOSPC)
            return r;
    }
    r = pool_grow(b, need, deadline, &seg);
    if (r == 0)
        return get_in(shm, seg, need, size, out);
    if (r != -ENOSPC)
        return r;
    bk_list_for_each(seg, &shm->segs, struct bk_pseg, link)
        if (seg->alloc.nchunks >= need)
            return -EAGAIN;
    return -ENOSPC;
}

/* Every chunk of seg never used before, allocated and mapped now: the
 * whole segment counts as warm from here on. */
static void pseg_warm_all(struct bk_pseg *seg)
{
    uint32_t from = bk_shma_warm_all(&seg->alloc);

    if (from < seg->alloc.nchunks)
        (void)pseg_populate(seg, from, seg->alloc.nchunks);
}

int bk_shm_reserve(broker_t *b, uint64_t bytes, int64_t deadline)
{
    struct bk_shm *shm = b->shm;
    uint64_t kept = 0;
    struct bk_pseg *seg;
    int r = 0;

    if (bytes && !bk_shm_supported(b))
        return -ENOTSUP;
    bk_list_for_each(seg, &shm->segs, struct bk_pseg, link) {
        seg->reserved = kept < bytes;
        if (seg->reserved) {
            pseg_warm_all(seg);
            kept += seg->size;
        }
    }
    while (kept < bytes) {
        uint64_t want = bytes - kept;
        uint32_t need = bk_shma_chunks_for(want < b->opt_shm_seg_size
                                           ? want : b->opt_shm_seg_size);

        r = pool_grow(b, need, deadline, &seg);
        if (r < 0)
            break;
        seg->reserved = true;
        pseg_warm_all(seg);
        kept += seg->size;
    }
    return r;
}

int bk_shm_auto(broker_t *b, const void **data, size_t *len,
                uint8_t *flags, unsigned nfds, int64_t deadline,
                struct bk_sbuf **out, uint8_t desc[BK_SHM_DESC_SIZE])
{
    struct bk_sbuf *sb = NULL;
    bk_shm_desc_t d;
    int r;

    if (*out || (*flags & BK_F_SHM) || nfds || !b->opt_shm_threshold ||
        *len < b->opt_shm_threshold || !bk_shm_supported(b))
        return BK_SHM_AS_IS;
    for (;;) {
        r = bk_shm_get(b, *len, true, deadline, &sb);
        if (r == 0)
            break;
        if (r == -ENOSPC || (b->opt_shm_fallback && !b->io.err &&
                             r != -ECANCELED && r != -ETIMEDOUT))
            return BK_SHM_AS_IS;
        if (r != -EAGAIN)
            return r;
        if (bk_conn_attached(b))
            return -EAGAIN;
        if (bk_io_aborted(&b->io))
            return -ECANCELED;
        r = bk_io_wait(&b->io, false, deadline);
        if (r < 0)
            return r;
    }
    memcpy(sb->pub.data, *data, *len);
    sb->owned = false;
    sent_add(sb, 1);
    d.segid = sb->seg->segid;
    d.offset = sb->off;
    d.length = *len;
    bk_shm_desc_encode(&d, desc);
    *out = sb;
    *data = desc;
    *len = BK_SHM_DESC_SIZE;
    *flags |= BK_F_SHM;
    return BK_SHM_POOLED;
}

void bk_shm_unsent(struct bk_sbuf *sb)
{
    sent_sub(sb, 1);
    sbuf_maybe_free(sb);
}

int bk_shm_on_release(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    for (uint32_t i = 0; i + BK_RELEASE_SIZE <= h->length;
         i += BK_RELEASE_SIZE) {
        const uint8_t *rec = p + i;
        uint32_t count = bk_get32(rec + 12);
        struct bk_sbuf *sb = sbuf_find(b->shm, bk_get32(rec + 8),
                                       bk_get64(rec + 16));

        if (!sb)
            continue;
        sent_sub(sb, count);
        sbuf_maybe_free(sb);
    }
    return 0;
}

BROKER_API int broker_buf_alloc(broker_t *b, size_t size, broker_buf_t **buf,
                                int timeout_ms)
{
    int64_t deadline = bk_io_deadline(timeout_ms);
    struct bk_sbuf *sb = NULL;
    bool nowait;
    int r;

    if (!buf)
        return -EINVAL;
    *buf = NULL;
    if (!b || size == 0)
        return -EINVAL;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    if (!bk_shm_supported(b))
        return -EOPNOTSUPP;
    nowait = bk_conn_attached(b) || timeout_ms == 0;
    for (;;) {
        r = bk_shm_get(b, size, !nowait, nowait ? -1 : deadline, &sb);
        if (r != -EAGAIN)
            break;
        if (nowait)
            return -EAGAIN;
        r = bk_io_wait(&b->io, false, deadline);
        if (r < 0)
            return r;
    }
    if (r < 0)
        return r;
    *buf = &sb->pub;
    return 0;
}

int bk_shm_buf_desc(broker_t *b, broker_buf_t *buf, size_t len,
                    uint8_t desc[BK_SHM_DESC_SIZE], struct bk_sbuf **out)
{
    struct bk_sbuf *sb = bk_container_of(buf, struct bk_sbuf, pub);
    bk_shm_desc_t d;

    if (sb->shm != b->shm || !sb->owned || len > buf->size)
        return -EINVAL;
    if (len > b->lim.max_msg)
        return -EMSGSIZE;
    if (sb->sent == UINT32_MAX)
        return -ENOBUFS;
    d.segid = sb->seg->segid;
    d.offset = sb->off;
    d.length = len;
    bk_shm_desc_encode(&d, desc);
    sent_add(sb, 1);
    *out = sb;
    return 0;
}

BROKER_API void broker_buf_free(broker_t *b, broker_buf_t *buf)
{
    struct bk_sbuf *sb;

    if (!b || !buf)
        return;
    sb = bk_container_of(buf, struct bk_sbuf, pub);
    if (sb->shm != b->shm || !sb->owned)
        return;
    sb->owned = false;
    sbuf_maybe_free(sb);
}

BROKER_API void broker_shm_stats(const broker_t *b, broker_shm_stats_t *st)
{
    const struct bk_shm *shm;

    if (!st)
        return;
    memset(st, 0, sizeof(*st));
    if (!b || !(shm = b->shm))
        return;
    st->segments = shm->nsegs;
    st->mapped = shm->mapped;
    st->in_use = shm->in_use;
    st->buffers = shm->nbufs;
}
