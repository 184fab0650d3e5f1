/*
 * shmview.c - libbroker layer 5: the segments other clients shared with
 * us, and the views received messages hold on them (the rules of
 * ownership are in shmview.h).
 *
 * A SEGMENT frame brings a read-only fd of another client's segment: it
 * is checked (seals, size), mapped PROT_READ once and closed.  The table
 * is keyed by (owner id, segment id).  A DATA frame with BK_F_SHM becomes
 * an ordinary message whose data points into the mapping; the message
 * counts as a view of the segment, and freeing it pushes a RELEASE record
 * into the output layer (outq.c) for the broker.  A segment whose owner
 * is gone (SEG_DROP) or whose connection is closed is unmapped when its
 * last view goes, so messages stay readable until they are freed.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include "outq.h"
#include "shmview.h"

#define BK_SHM_MAX_RX_SEGS  65536u  /* segments mapped from other clients */

/* A segment another client shared with us. */
struct bk_rseg {
    bk_hnode_t node;
    uint8_t key[12];            /* owner id, segid */
    struct bk_shmview *sv;      /* NULL once the connection is gone */
    uint64_t owner;
    uint32_t segid;
    const uint8_t *map;         /* NULL when bad */
    uint64_t size;
    uint64_t views;             /* messages pointing into it */
    bool bad;                   /* failed the checks: never mapped */
    bool dropped;               /* the owner is gone */
};

struct bk_shmview {
    broker_t *b;
    bk_htable_t rx;             /* struct bk_rseg by (owner, segid) */
};

int bk_shmview_init(broker_t *b)
{
    struct bk_shmview *sv = calloc(1, sizeof(*sv));

    if (!sv)
        return -ENOMEM;
    sv->b = b;
    bk_ht_init(&sv->rx);
    b->views = sv;
    return 0;
}

void bk_shmview_rebind(broker_t *b)
{
    if (b->views)
        b->views->b = b;
}

static void rseg_destroy(struct bk_rseg *seg)
{
    if (seg->map)
        munmap((void *)seg->map, seg->size);
    free(seg);
}

/* The connection is closing: segments nobody looks at are unmapped now,
 * the others once their last message is freed.  No release is sent any
 * more (the broker releases everything a departing client held). */
void bk_shmview_fini(broker_t *b)
{
    struct bk_shmview *sv = b->views;
    bk_hnode_t *n;

    if (!sv)
        return;
    for (n = bk_ht_next(&sv->rx, NULL); n; ) {
        struct bk_rseg *seg = bk_container_of(n, struct bk_rseg, node);

        n = bk_ht_next(&sv->rx, n);
        bk_ht_remove(&sv->rx, &seg->node);
        seg->sv = NULL;
        if (!seg->views)
            rseg_destroy(seg);
    }
    bk_ht_fini(&sv->rx);
    free(sv);
    b->views = NULL;
}

/* ---- segments ------------------------------------------------- */

static void rseg_key(uint8_t key[12], uint64_t owner, uint32_t segid)
{
    bk_put64(key, owner);
    bk_put32(key + 8, segid);
}

static struct bk_rseg *rseg_find(struct bk_shmview *sv, uint64_t owner,
                                 uint32_t segid)
{
    uint8_t key[12];
    bk_hnode_t *n;

    rseg_key(key, owner, segid);
    n = bk_ht_find(&sv->rx, key, sizeof(key));
    return n ? bk_container_of(n, struct bk_rseg, node) : NULL;
}

/* Check a received segment fd and map it read-only.  NULL if it is not a
 * sealed memfd at least `size` bytes long or cannot be mapped.  Only
 * ordinary (tmpfs) memfds are taken: reading a hugetlbfs one raises
 * SIGBUS when the huge page pool runs dry. */
static const uint8_t *rseg_map(int fd, uint64_t size)
{
    int need = BK_SEALS_REQUIRED;
    int seals = fcntl(fd, F_GET_SEALS);
    struct statfs sfs;
    struct stat st;
    void *p;

    if (seals < 0 || (seals & need) != need)
        return NULL;
    if (fstatfs(fd, &sfs) < 0 || sfs.f_type != TMPFS_MAGIC)
        return NULL;
    if (fstat(fd, &st) < 0 || st.st_size < 0 ||
        (uint64_t)st.st_size < size || size > SIZE_MAX)
        return NULL;
    p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

int bk_shmview_on_segment(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                      int fd)
{
    struct bk_shmview *sv = b->views;
    uint32_t segid = bk_get32(p);
    struct bk_rseg *seg;

    if (rseg_find(sv, h->source, segid) ||
        sv->rx.count >= BK_SHM_MAX_RX_SEGS) {
        close(fd);
        return 0;
    }
    seg = calloc(1, sizeof(*seg));
    if (!seg) {
        close(fd);
        return -ENOMEM;
    }
    seg->sv = sv;
    seg->owner = h->source;
    seg->segid = segid;
    seg->size = bk_get64(p + 8);
    seg->map = rseg_map(fd, seg->size);
    seg->bad = !seg->map;
    close(fd);
    rseg_key(seg->key, seg->owner, segid);
    seg->node.key = seg->key;
    seg->node.keylen = sizeof(seg->key);
    if (bk_ht_insert(&sv->rx, &seg->node) < 0) {
        rseg_destroy(seg);
        return -ENOMEM;
    }
    return 0;
}

int bk_shmview_on_seg_drop(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    struct bk_rseg *seg = rseg_find(b->views, h->source, bk_get32(p));

    if (!seg)
        return 0;
    seg->dropped = true;
    if (!seg->views) {
        bk_ht_remove(&b->views->rx, &seg->node);
        rseg_destroy(seg);
    }
    return 0;
}

int bk_shmview_lookup(broker_t *b, uint64_t owner, const bk_shm_desc_t *d,
                  struct bk_rseg **out)
{
    struct bk_rseg *seg = rseg_find(b->views, owner, d->segid);

    if (!seg || seg->dropped)
        return -EPROTO;
    if (seg->bad)
        return -EBADMSG;
    if (!bk_shm_desc_fits(d, seg->size))
        return -EPROTO;
    *out = seg;
    return 0;
}

void *bk_shmview_get(struct bk_rseg *seg, uint64_t off)
{
    seg->views++;
    return (void *)(seg->map + off);
}

/* ---- views and releases ------------------------------------------------- */

void bk_shmview_release(broker_t *b, uint64_t owner, uint32_t segid,
                    uint64_t off)
{
    bk_out_release(b, owner, segid, off);
}

void bk_shmview_put(struct bk_rseg *seg, uint64_t off)
{
    struct bk_shmview *sv = seg->sv;

    seg->views--;
    if (sv) {
        bk_shmview_release(sv->b, seg->owner, seg->segid, off);
        if (seg->dropped && !seg->views) {
            bk_ht_remove(&sv->rx, &seg->node);
            rseg_destroy(seg);
        }
    } else if (!seg->views) {
        rseg_destroy(seg);
    }
}

broker_t *bk_shmview_conn(const struct bk_rseg *seg)
{
    return seg->sv ? seg->sv->b : NULL;
}

/* ---- public API --------------------------------------------------------- */

