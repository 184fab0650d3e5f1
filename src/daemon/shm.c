/*
 * shm.c - shared-memory bookkeeping: segment registration, descriptor
 * checks, delivery of segment fds, references held and released.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include "frame.h"
#include "log.h"
#include "port.h"
#include "server.h"
#include "shm.h"
#include "user.h"

/* A segment's read-only fd, shared by the segment and the bodies read
 * from it: closed with the last reference. */
typedef struct bk_segfile {
    int fd;
    uint32_t refs;
} bk_segfile_t;

typedef struct bk_segment {
    bk_hnode_t node;
    uint8_t key[4];
    uint32_t segid;
    bk_tnode_t tnode;           /* in srv->shm_index while registered
                                 * (not dropped), by registration number */
    uint64_t owner;             /* the owner's client id */
    uint64_t size;
    bk_segfile_t *file;         /* read-only reopen, forwarded to receivers */
    uint64_t *sent_to;          /* client ids that were sent rofd */
    uint32_t nsent, capsent;
    /* Publications of one buffer to n receivers: the owner counts one
     * descriptor sent, so n - 1 of the receivers' releases are absorbed
     * (the owner hears only the last). */
    struct bk_fanref { uint64_t offset, extra; } *fan;
    uint32_t nfan, capfan;
} bk_segment_t;

typedef struct bk_known {
    bk_hnode_t node;
    uint8_t key[12];            /* owner id, segid */
    uint64_t refs;              /* references into it held or in flight */
    bool owner_gone;
} bk_known_t;

typedef struct bk_held {
    bk_hnode_t node;
    uint8_t key[20];            /* owner id, segid, offset */
    uint64_t count;
} bk_held_t;

/* A body read out for a receiver without shared memory. */
typedef struct bk_copy {
    bk_obody_t body;
    bk_segfile_t *file;
    bk_port_t *to;              /* its queue holds the body: outlives it */
    uint64_t owner;
    uint32_t segid;
    uint64_t offset;            /* the descriptor's: the reference's key */
} bk_copy_t;

static void file_put(bk_segfile_t *f)
{
    if (f && --f->refs == 0) {
        close(f->fd);
        free(f);
    }
}

void bk_shm_seg_info(const bk_tnode_t *n, uint64_t *owner, uint32_t *segid,
                     uint64_t *size, uint32_t *nreceivers)
{
    const bk_segment_t *seg = bk_container_of(n, bk_segment_t, tnode);

    *owner = seg->owner;
    *segid = seg->segid;
    *size = seg->size;
    *nreceivers = seg->nsent;
}

void bk_shm_port_init(bk_shm_port_t *s)
{
    memset(s, 0, sizeof(*s));
    bk_ht_init(&s->segs);
    bk_ht_init(&s->dropped);
    bk_ht_init(&s->known);
    bk_ht_init(&s->held);
}

/* ---- keys and lookups --------------------------------------------------- */

static void known_key(uint8_t k[12], uint64_t owner, uint32_t segid)
{
    bk_put64(k, owner);
    bk_put32(k + 8, segid);
}

static void held_key(uint8_t k[20], uint64_t owner, uint32_t segid,
                     uint64_t offset)
{
    bk_put64(k, owner);
    bk_put32(k + 8, segid);
    bk_put64(k + 12, offset);
}

static bk_segment_t *seg_find(bk_port_t *p, uint32_t segid)
{
    uint8_t k[4];
    bk_hnode_t *n;

    bk_put32(k, segid);
    n = bk_ht_find(&p->shm.segs, k, sizeof(k));
    return n ? bk_container_of(n, bk_segment_t, node) : NULL;
}

static bk_segment_t *dropped_find(bk_port_t *p, uint32_t segid)
{
    uint8_t k[4];
    bk_hnode_t *n;

    bk_put32(k, segid);
    n = bk_ht_find(&p->shm.dropped, k, sizeof(k));
    return n ? bk_container_of(n, bk_segment_t, node) : NULL;
}

static bk_known_t *known_find(bk_port_t *p, uint64_t owner, uint32_t segid)
{
    uint8_t k[12];
    bk_hnode_t *n;

    known_key(k, owner, segid);
    n = bk_ht_find(&p->shm.known, k, sizeof(k));
    return n ? bk_container_of(n, bk_known_t, node) : NULL;
}

static bk_held_t *held_find(bk_port_t *p, uint64_t owner, uint32_t segid,
                            uint64_t offset)
{
    uint8_t k[20];
    bk_hnode_t *n;

    held_key(k, owner, segid, offset);
    n = bk_ht_find(&p->shm.held, k, sizeof(k));
    return n ? bk_container_of(n, bk_held_t, node) : NULL;
}

/* ---- frames the broker sends ------------------------------------------- */

static void send_release(bk_port_t *owner, uint64_t peer, uint32_t segid,
                         uint64_t count, uint64_t offset, bk_port_t *cause)
{
    uint8_t rec[BK_RELEASE_SIZE];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_RELEASE,
        .length = BK_RELEASE_SIZE, .dest = owner->id,
    };

    /* counts beyond 32 bits are split into several records */
    while (count) {
        uint32_t c = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        bk_put64(rec, peer);
        bk_put32(rec + 8, segid);
        bk_put32(rec + 12, c);
        bk_put64(rec + 16, offset);
        bk_port_send(owner, &h, rec, NULL, 0, cause);
        count -= c;
    }
}

static void send_seg_drop(bk_port_t *to, uint64_t owner, uint32_t segid)
{
    uint8_t buf[BK_SEG_DROP_SIZE];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_SEG_DROP,
        .length = BK_SEG_DROP_SIZE, .source = owner, .dest = to->id,
    };

    bk_put32(buf, segid);
    bk_put32(buf + 4, 0);
    bk_port_send(to, &h, buf, NULL, 0, NULL);
}

/* ---- registration --------------------------------------------------------- */

static int check_memfd(int fd, uint64_t size)
{
    struct statfs sfs;
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);

    if (seals < 0)
        return -EINVAL;         /* not a memfd (or sealing not allowed) */
    if ((seals & BK_SEALS_REQUIRED) != BK_SEALS_REQUIRED)
        return -EINVAL;
    /* only ordinary shared memory: a hugetlbfs memfd can SIGBUS its
     * readers when the huge page pool runs dry */
    if (fstatfs(fd, &sfs) < 0 || sfs.f_type != TMPFS_MAGIC)
        return -EINVAL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size != size)
        return -EINVAL;
    return 0;
}

/* A new open file description of the same memfd, read-only: what
 * receivers get, so they cannot map the sender's memory writable. */
static int reopen_ro(int fd)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void settle(bk_port_t *p, uint32_t segid);
static void settle_all(bk_port_t *p);

/* The per-uid and global segment budgets (user.h): every segment holds
 * an fd in the broker, so the global one is tied to RLIMIT_NOFILE and
 * leaves fd_reserve free besides the connections and fds in flight.
 * Returns 0, -EDQUOT (max-segments-per-uid) or -ENOBUFS (global). */
static int segment_budget(bk_port_t *p)
{
    const bk_server_t *s = p->srv;
    const bk_conf_t *cfg = s->cfg;
    uint64_t nofile = s->users.nofile;

    if (p->acct && !bk_port_uid_fits(p, BK_QUOTA_SEGMENTS,
                                     p->acct->segments, 1,
                                     cfg->max_segments_per_uid,
                                     "max-segments-per-uid"))
        return -EDQUOT;
    if (!bk_user_fits(s->stats.shm_segments, 1,
                      bk_conf_segments_total(cfg, nofile)) ||
        !bk_users_fd_room(&s->users, (uint64_t)s->nports +
                          s->stats.shm_segments, cfg->fd_reserve, 1)) {
        bk_port_quota(p, BK_QUOTA_GLOBAL, "the broker's budget of shared-"
                      "memory segments is spent (%" PRIu64 " registered, "
                      "fd limit %" PRIu64 "); refused (ENOBUFS)",
                      s->stats.shm_segments, nofile);
        return -ENOBUFS;
    }
    bk_port_quota_ok(p, BK_QUOTA_GLOBAL);
    return 0;
}

/* A segment of `size` bytes is p's now (add) or no longer. */
static void charge_segment(bk_port_t *p, uint64_t size, bool add)
{
    bk_user_t *u = p->acct;

    if (!u)
        return;
    if (add) {
        u->segments++;
        u->shm_bytes += size;
        return;
    }
    u->segments -= u->segments ? 1 : 0;
    u->shm_bytes -= size <= u->shm_bytes ? size : u->shm_bytes;
}

int bk_shm_register(bk_port_t *p, const uint8_t *payload, int fd)
{
    const bk_conf_t *cfg = p->srv->cfg;
    uint32_t segid = bk_get32(payload);
    uint64_t size = bk_get64(payload + 8);
    bk_segment_t *seg;
    int r = check_memfd(fd, size), rofd;

    if (!r && p->shm.ndropped) {
        settle(p, segid);
        if (p->shm.nsegs + p->shm.ndropped >= cfg->max_segments)
            settle_all(p);
    }
    if (!r && (seg_find(p, segid) || dropped_find(p, segid)))
        r = -EEXIST;
    if (!r && p->shm.nsegs + p->shm.ndropped >= cfg->max_segments) {
        r = -ENOSR;
        bk_port_refused(p, BK_REFUSE_SEGMENTS, "max-segments reached (%u "
                        "shared-memory segments)", cfg->max_segments);
    }
    if (!r)
        r = segment_budget(p);
    /* overflow-safe: a reload may have lowered max_shm below what p holds */
    if (!r && (p->shm.bytes > cfg->max_shm ||
               size > cfg->max_shm - p->shm.bytes)) {
        r = -ENOSPC;
        bk_port_refused(p, BK_REFUSE_SHM, "max-shm reached (%" PRIu64
                        " of %" PRIu64 " bytes of shared memory, a segment "
                        "of %" PRIu64 " refused)", p->shm.bytes,
                        cfg->max_shm, size);
    }
    if (r) {
        close(fd);
        return r;
    }
    rofd = reopen_ro(fd);
    close(fd);
    if (rofd < 0)
        return rofd;
    seg = calloc(1, sizeof(*seg));
    if (seg && !(seg->file = malloc(sizeof(*seg->file)))) {
        free(seg);
        seg = NULL;
    }
    if (!seg) {
        close(rofd);
        return -ENOMEM;
    }
    *seg->file = (bk_segfile_t){ .fd = rofd, .refs = 1 };
    seg->segid = segid;
    seg->size = size;
    bk_put32(seg->key, segid);
    seg->node.key = seg->key;
    seg->node.keylen = sizeof(seg->key);
    if (bk_ht_insert(&p->shm.segs, &seg->node) < 0) {
        file_put(seg->file);
        free(seg);
        return -ENOMEM;
    }
    /* Numbers are never reused, so the index cannot refuse the key. */
    seg->owner = p->id;
    seg->tnode.key = ++p->srv->shm_seq;
    bk_tree_insert(&p->srv->shm_index, &seg->tnode);
    p->shm.nsegs++;
    p->shm.bytes += size;
    charge_segment(p, size, true);
    p->srv->stats.shm_segments++;
    p->srv->stats.shm_bytes += size;
    bk_debug("client %" PRIu64 " registered segment %" PRIu32 " (%" PRIu64
             " bytes)", p->id, segid, size);
    return 0;
}

/* ---- descriptors -------------------------------------------------------- */

int bk_shm_check(bk_port_t *from, const uint8_t *desc, const char **why)
{
    bk_shm_desc_t d;
    bk_segment_t *seg;

    if (bk_shm_desc_decode(desc, &d) < 0) {
        *why = "malformed shared-memory descriptor";
        return -EPROTO;
    }
    seg = seg_find(from, d.segid);
    if (!seg) {
        *why = "descriptor names a segment that is not registered";
        return -EPROTO;
    }
    if (!bk_shm_desc_fits(&d, seg->size)) {
        *why = "descriptor points outside its segment";
        return -EPROTO;
    }
    return 0;
}

static int remember_receiver(bk_segment_t *seg, uint64_t id)
{
    if (seg->nsent == seg->capsent) {
        uint32_t cap = seg->capsent ? seg->capsent * 2 : 4;
        uint64_t *v = realloc(seg->sent_to, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        seg->sent_to = v;
        seg->capsent = cap;
    }
    seg->sent_to[seg->nsent++] = id;
    return 0;
}

/* Send `to` the segment's fd once, before the first descriptor into it. */
static bk_known_t *introduce(bk_port_t *from, bk_port_t *to,
                             bk_segment_t *seg)
{
    uint8_t buf[BK_SEG_REG_SIZE];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_SEGMENT, .nfds = 1,
        .length = BK_SEG_REG_SIZE, .source = from->id, .dest = to->id,
    };
    bk_known_t *k = calloc(1, sizeof(*k));
    int fd;

    if (!k)
        return NULL;
    known_key(k->key, from->id, seg->segid);
    k->node.key = k->key;
    k->node.keylen = sizeof(k->key);
    fd = fcntl(seg->file->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0 || remember_receiver(seg, to->id) < 0 ||
        bk_ht_insert(&to->shm.known, &k->node) < 0) {
        if (fd >= 0)
            close(fd);
        free(k);
        return NULL;
    }
    bk_put32(buf, seg->segid);
    bk_put32(buf + 4, 0);
    bk_put64(buf + 8, seg->size);
    bk_port_send(to, &h, buf, &fd, 1, from);
    return k;
}

static void release_one(bk_port_t *p, uint64_t owner, uint32_t segid,
                        uint32_t count, uint64_t offset);

/* The body went out or was dropped: its receiver's reference ends. */
static void copy_done(bk_obody_t *b)
{
    bk_copy_t *c = bk_container_of(b, bk_copy_t, body);

    if (held_find(c->to, c->owner, c->segid, c->offset))
        release_one(c->to, c->owner, c->segid, 1, c->offset);
    file_put(c->file);
    free(c);
}

static bk_obody_t *copy_new(bk_port_t *from, bk_port_t *to,
                            bk_segment_t *seg, const bk_shm_desc_t *d)
{
    bk_copy_t *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->file = seg->file;
    c->file->refs++;
    c->to = to;
    c->owner = from->id;
    c->segid = d->segid;
    c->offset = d->offset;
    c->body.fd = seg->file->fd;
    c->body.pos = d->offset;
    c->body.end = d->offset + d->length;
    c->body.done = copy_done;
    return &c->body;
}

/* Whether `to` may hold one more reference: max-held-per-client
 * (ENOBUFS) and its user's max-held-per-uid (EDQUOT).  A receiver that
 * never releases is refused further descriptors; the refusal is counted
 * and logged for it, the hoarder, and its sender hears the error. */
static int held_budget(bk_port_t *from, bk_port_t *to)
{
    const bk_conf_t *cfg = to->srv->cfg;

    if (!bk_user_fits(to->shm.nheld, 1, cfg->max_held_per_client)) {
        bk_port_quota(to, BK_QUOTA_RECV_HELD, "max-held-per-client "
                      "reached (%" PRIu64 " shared-memory references "
                      "held); descriptors to it are refused (ENOBUFS)",
                      to->shm.nheld);
        return -ENOBUFS;
    }
    bk_port_quota_ok(to, BK_QUOTA_RECV_HELD);
    if (to->acct && !bk_port_uid_fits(to, BK_QUOTA_HELD, to->acct->held, 1,
                                      cfg->max_held_per_uid,
                                      "max-held-per-uid"))
        return -EDQUOT;
    (void)from;
    return 0;
}

/* Count one reference of `to` to (from, segid, offset). */
static int hold(bk_port_t *from, bk_port_t *to, const bk_shm_desc_t *d)
{
    bk_held_t *held = held_find(to, from->id, d->segid, d->offset);

    if (!held) {
        held = calloc(1, sizeof(*held));
        if (!held)
            return -ENOMEM;
        held_key(held->key, from->id, d->segid, d->offset);
        held->node.key = held->key;
        held->node.keylen = sizeof(held->key);
        if (bk_ht_insert(&to->shm.held, &held->node) < 0) {
            free(held);
            return -ENOMEM;
        }
    }
    held->count++;
    to->shm.nheld++;
    if (to->acct)
        to->acct->held++;
    to->srv->stats.shm_held++;
    return 0;
}

/* A receiver without shared memory: the bytes go instead. */
static int deliver_copy(bk_port_t *from, bk_port_t *to, bk_segment_t *seg,
                        const bk_shm_desc_t *d, bk_obody_t **body)
{
    if (d->length > to->srv->cfg->max_msg)
        return -EMSGSIZE;
    if (!(*body = copy_new(from, to, seg, d)))
        return -ENOMEM;
    if (hold(from, to, d) < 0) {
        file_put(seg->file);
        free(bk_container_of(*body, bk_copy_t, body));
        *body = NULL;
        return -ENOMEM;
    }
    return 0;
}

int bk_shm_deliver(bk_port_t *from, bk_port_t *to, const uint8_t *desc,
                   bk_obody_t **body)
{
    bk_shm_desc_t d;
    bk_segment_t *seg;
    bk_known_t *k;

    int r;

    *body = NULL;
    if (bk_shm_desc_decode(desc, &d) < 0 || !(seg = seg_find(from, d.segid)))
        return -EPROTO;         /* bk_shm_check ran first: cannot happen */
    if ((r = held_budget(from, to)) < 0)
        return r;
    if (!to->shm.maps)
        return deliver_copy(from, to, seg, &d, body);
    k = known_find(to, from->id, d.segid);
    if (!k && !(k = introduce(from, to, seg)))
        return -ENOMEM;
    if (hold(from, to, &d) < 0)
        return -ENOMEM;
    k->refs++;
    return 0;
}

void bk_shm_undelivered(bk_port_t *from, const uint8_t *desc)
{
    bk_shm_desc_t d;

    if (bk_shm_desc_decode(desc, &d) == 0)
        send_release(from, 0, d.segid, 1, d.offset, from);
}

int bk_shm_fanout(bk_port_t *from, const uint8_t *desc, uint32_t n)
{
    bk_shm_desc_t d;
    bk_segment_t *seg;

    if (n <= 1)
        return 0;
    if (bk_shm_desc_decode(desc, &d) < 0 || !(seg = seg_find(from, d.segid)))
        return -EPROTO;
    for (uint32_t i = 0; i < seg->nfan; i++)
        if (seg->fan[i].offset == d.offset) {
            seg->fan[i].extra += n - 1;
            return 0;
        }
    if (seg->nfan == seg->capfan) {
        uint32_t cap = seg->capfan ? 2 * seg->capfan : 4;
        struct bk_fanref *v = realloc(seg->fan, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        seg->fan = v;
        seg->capfan = cap;
    }
    seg->fan[seg->nfan++] = (struct bk_fanref){ d.offset, n - 1 };
    return 0;
}

/* Of `count` releases of (owner's segid, offset), how many the owner is
 * told: those beyond the publications' extra receivers. */
static uint64_t absorb(bk_port_t *owner, uint32_t segid, uint64_t offset,
                       uint64_t count)
{
    bk_segment_t *seg = seg_find(owner, segid);

    if (!seg)
        return count;
    for (uint32_t i = 0; i < seg->nfan; i++) {
        struct bk_fanref *f = &seg->fan[i];
        uint64_t take;

        if (f->offset != offset)
            continue;
        take = count < f->extra ? count : f->extra;
        f->extra -= take;
        if (!f->extra)
            *f = seg->fan[--seg->nfan];
        return count - take;
    }
    return count;
}

/* ---- release --------------------------------------------------------------- */

/* p's user holds n references fewer. */
static void uncharge_held(bk_port_t *p, uint64_t n)
{
    if (p->acct)
        p->acct->held -= n <= p->acct->held ? n : p->acct->held;
}

/* `p` no longer holds `count` references into (owner, segid). */
static void drop_known_refs(bk_port_t *p, uint64_t owner, uint32_t segid,
                            uint64_t count)
{
    bk_known_t *k = known_find(p, owner, segid);

    if (!k)
        return;
    k->refs -= count < k->refs ? count : k->refs;
    if (k->owner_gone && k->refs == 0) {
        bk_port_t *op;
        bk_ht_remove(&p->shm.known, &k->node);
        free(k);
        send_seg_drop(p, owner, segid);
        if ((op = bk_server_find(p->srv, owner)))
            settle(op, segid);
    }
}

/* `p` releases `count` references to (owner, segid, offset), which it
 * holds: the owner hears of those its publications do not absorb. */
static void release_one(bk_port_t *p, uint64_t owner, uint32_t segid,
                        uint32_t count, uint64_t offset)
{
    bk_held_t *held = held_find(p, owner, segid, offset);
    bk_port_t *op;

    held->count -= count;
    p->shm.nheld -= count;
    uncharge_held(p, count);
    p->srv->stats.shm_held -= count;
    if (!held->count) {
        bk_ht_remove(&p->shm.held, &held->node);
        free(held);
    }
    drop_known_refs(p, owner, segid, count);
    op = bk_server_find(p->srv, owner);
    if (op && (count = (uint32_t)absorb(op, segid, offset, count)))
        send_release(op, p->id, segid, count, offset, p);
}

void bk_shm_unhold(bk_port_t *from, bk_port_t *to, const uint8_t *desc)
{
    bk_shm_desc_t d;

    if (bk_shm_desc_decode(desc, &d) < 0)
        return;
    if (held_find(to, from->id, d.segid, d.offset))
        release_one(to, from->id, d.segid, 1, d.offset);
    else                        /* cannot happen: deliver counted it */
        send_release(from, 0, d.segid, 1, d.offset, from);
}

int bk_shm_release(bk_port_t *p, const uint8_t *payload, uint32_t len,
                   const char **why)
{
    for (uint32_t off = 0; off < len; off += BK_RELEASE_SIZE) {
        const uint8_t *r = payload + off;
        uint64_t owner = bk_get64(r), offset = bk_get64(r + 16);
        uint32_t segid = bk_get32(r + 8), count = bk_get32(r + 12);
        bk_held_t *held = held_find(p, owner, segid, offset);

        if (!held || count == 0 || count > held->count) {
            *why = "release of a shared-memory buffer it does not hold";
            return -EPROTO;
        }
        release_one(p, owner, segid, count, offset);
    }
    return 0;
}

/* ---- departure --------------------------------------------------------------- */

/* A departed holder's references, one record each, gathered during a
 * pass so that each owner gets them in few RELEASE frames (as many
 * records as a packet holds) rather than a frame per reference. */
typedef struct rel_rec {
    uint64_t owner, peer, count, offset;
    uint32_t segid;
} rel_rec_t;

static int rel_cmp(const void *a, const void *b)
{
    const rel_rec_t *x = a, *y = b;

    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

/* recs[0..n), sorted by owner, to their owners; a record whose count
 * exceeds 32 bits goes as several.  Out of memory, one frame each. */
static void send_releases(bk_server_t *s, rel_rec_t *recs, size_t n)
{
    size_t per = (s->cfg->max_packet - BK_HDR_SIZE) / BK_RELEASE_SIZE;
    uint8_t *buf = n ? malloc(per * BK_RELEASE_SIZE) : NULL;
    size_t i = 0;

    while (i < n) {
        uint64_t owner = recs[i].owner;
        bk_port_t *op = bk_server_find(s, owner);
        bk_hdr_t h = {
            .version = BK_PROTO_VERSION, .type = BK_T_RELEASE,
            .dest = owner,
        };
        size_t k = 0;

        if (!buf && op)
            send_release(op, recs[i].peer, recs[i].segid, recs[i].count,
                         recs[i].offset, NULL);
        if (!buf || !op) {
            i++;
            continue;
        }
        while (i < n && recs[i].owner == owner && k < per) {
            uint8_t *r = buf + k++ * BK_RELEASE_SIZE;
            uint32_t c = recs[i].count > UINT32_MAX ? UINT32_MAX
                                                    : (uint32_t)recs[i].count;
            bk_put64(r, recs[i].peer);
            bk_put32(r + 8, recs[i].segid);
            bk_put32(r + 12, c);
            bk_put64(r + 16, recs[i].offset);
            if ((recs[i].count -= c) == 0)
                i++;
        }
        h.length = (uint32_t)(k * BK_RELEASE_SIZE);
        bk_port_send(op, &h, buf, NULL, 0, NULL);
    }
    free(buf);
}

/* ---- release jobs (shm.h) ------------------------------------------------ */

/* A departed holder's references and known segments, given back a batch
 * per loop pass: first the held entries (cursor next), then the known
 * ones (their count only matters for the tombstones of dropped segments:
 * jobs_know). */
typedef struct bk_shm_job {
    bk_list_t link;             /* on bk_shm_drain.jobs */
    uint64_t id;                /* the departed client */
    bk_user_t *acct;            /* its user, held; charged `nheld` */
    bk_htable_t held, known;    /* moved from its bk_shm_port */
    bk_hnode_t *next;           /* the next entry of held, then of known */
    bool known_phase;
    uint64_t nheld;             /* references still to release */
} bk_shm_job_t;

/* What one pass of a job did. */
enum { JOB_MORE, JOB_WAIT, JOB_DONE };

/* Records gathered in one pass. */
typedef struct rel_batch {
    rel_rec_t *v;               /* NULL out of memory: sent one by one */
    size_t n;
} rel_batch_t;

void bk_shm_drain_init(bk_shm_drain_t *d)
{
    memset(d, 0, sizeof(*d));
    bk_list_init(&d->jobs);
}

/* Whether a job still counts references into (owner, segid): the
 * segment's id stays taken while it does (settle, bk_shm_drop). */
static bool jobs_know(const bk_server_t *s, uint64_t owner, uint32_t segid)
{
    const bk_shm_job_t *j;
    uint8_t key[12];

    if (!s->releases.njobs)
        return false;
    known_key(key, owner, segid);
    bk_list_for_each(j, &s->releases.jobs, bk_shm_job_t, link) {
        bk_hnode_t *n = bk_ht_find(&j->known, key, sizeof(key));
        if (n && bk_container_of(n, bk_known_t, node)->refs)
            return true;
    }
    return false;
}

/* The job gave back `count` references into (owner, segid); op: the
 * owner if it is still there. */
static void job_known_drop(bk_shm_job_t *j, bk_port_t *op, uint64_t owner,
                           uint32_t segid, uint64_t count)
{
    uint8_t key[12];
    bk_hnode_t *n;
    bk_known_t *k;

    known_key(key, owner, segid);
    if (!(n = bk_ht_find(&j->known, key, sizeof(key))))
        return;
    k = bk_container_of(n, bk_known_t, node);
    k->refs -= count < k->refs ? count : k->refs;
    if (k->refs)
        return;
    if (j->next == n)
        j->next = bk_ht_next(&j->known, n);
    bk_ht_remove(&j->known, n);
    free(k);
    if (op)
        settle(op, segid);
}

static void batch_add(bk_server_t *s, rel_batch_t *b, const rel_rec_t *r)
{
    bk_port_t *op;

    if (b->v) {
        b->v[b->n++] = *r;
        return;
    }
    if ((op = bk_server_find(s, r->owner)))
        send_release(op, r->peer, r->segid, r->count, r->offset, NULL);
}

/* One held entry of j (its cursor) goes back; false (nothing done) if
 * its owner's queue is over queue_limit and `force` is not set. */
static bool job_release_next(bk_server_t *s, bk_shm_job_t *j,
                             rel_batch_t *b, bool force)
{
    bk_hnode_t *n = j->next;
    bk_held_t *held = bk_container_of(n, bk_held_t, node);
    uint64_t owner = bk_get64(held->key), off = bk_get64(held->key + 12);
    uint32_t segid = bk_get32(held->key + 8);
    bk_port_t *op = bk_server_find(s, owner);
    uint64_t c;

    if (op && !force && op->out.bytes > s->cfg->queue_limit) {
        op->shm.release_wait = true;
        return false;
    }
    j->next = bk_ht_next(&j->held, n);
    bk_ht_remove(&j->held, n);
    c = op ? absorb(op, segid, off, held->count) : 0;
    if (c)
        batch_add(s, b, &(rel_rec_t){ owner, j->id, c, off, segid });
    s->stats.shm_held -= held->count;
    s->releases.pending -= held->count;
    j->nheld -= held->count;
    if (j->acct)
        j->acct->held -= held->count <= j->acct->held ? held->count
                                                      : j->acct->held;
    job_known_drop(j, op, owner, segid, held->count);
    free(held);
    return true;
}

/* One known entry of j (its cursor) is forgotten. */
static void job_forget_next(bk_server_t *s, bk_shm_job_t *j)
{
    bk_hnode_t *n = j->next;
    bk_known_t *k = bk_container_of(n, bk_known_t, node);
    uint64_t owner = bk_get64(k->key);
    bool counted = k->refs != 0;        /* cannot be: held went first */
    bk_port_t *op;

    j->next = bk_ht_next(&j->known, n);
    bk_ht_remove(&j->known, n);
    if (counted && (op = bk_server_find(s, owner)))
        settle(op, bk_get32(k->key + 8));
    free(k);
}

/* Up to *budget entries of j; force: ignore full owners (out of memory,
 * no job could be made). */
static int job_step(bk_server_t *s, bk_shm_job_t *j, rel_batch_t *b,
                    uint32_t *budget, bool force)
{
    for (; *budget; --*budget) {
        if (!j->next && !j->known_phase) {
            j->known_phase = true;
            j->next = bk_ht_next(&j->known, NULL);
        }
        if (!j->next)
            return JOB_DONE;
        if (j->known_phase)
            job_forget_next(s, j);
        else if (!job_release_next(s, j, b, force))
            return JOB_WAIT;
    }
    return JOB_MORE;
}

/* Drop what is left of j without sending anything: its entries, its
 * counts (st: the server's counters, NULL when they go too) and its
 * hold on the user. */
static void job_clear(bk_shm_drain_t *d, bk_shm_job_t *j, bk_stats_t *st)
{
    bk_hnode_t *n, *next;

    for (n = bk_ht_next(&j->held, NULL); n; n = next) {
        next = bk_ht_next(&j->held, n);
        free(bk_container_of(n, bk_held_t, node));
    }
    for (n = bk_ht_next(&j->known, NULL); n; n = next) {
        next = bk_ht_next(&j->known, n);
        free(bk_container_of(n, bk_known_t, node));
    }
    bk_ht_fini(&j->held);
    bk_ht_fini(&j->known);
    if (st)
        st->shm_held -= j->nheld <= st->shm_held ? j->nheld : st->shm_held;
    d->pending -= j->nheld <= d->pending ? j->nheld : d->pending;
    if (j->acct) {
        j->acct->held -= j->nheld <= j->acct->held ? j->nheld
                                                   : j->acct->held;
        bk_user_release(j->acct);
        j->acct = NULL;
    }
    j->nheld = 0;
}

static void job_free(bk_shm_drain_t *d, bk_shm_job_t *j, bk_stats_t *st)
{
    job_clear(d, j, st);
    bk_list_unlink(&j->link);
    d->njobs--;
    free(j);
}

void bk_shm_drain_fini(bk_shm_drain_t *d)
{
    bk_list_t *l;

    while ((l = bk_list_first(&d->jobs)))
        job_free(d, bk_container_of(l, bk_shm_job_t, link), NULL);
}

bool bk_shm_drain_step(bk_server_t *s, uint32_t budget)
{
    bk_shm_drain_t *d = &s->releases;
    rel_batch_t b = { 0 };
    bk_shm_job_t *j;
    bool more = false;

    if (s->stopping) {          /* the owners are leaving too */
        while (!bk_list_empty(&d->jobs))
            job_free(d, bk_container_of(bk_list_first(&d->jobs),
                                        bk_shm_job_t, link), &s->stats);
        return false;
    }
    b.v = malloc((budget < d->pending ? budget : d->pending) *
                 sizeof(*b.v) + 1);
    bk_list_for_each_safe(j, &d->jobs, bk_shm_job_t, link) {
        int r;

        if (!budget) {
            more = true;
            break;
        }
        r = job_step(s, j, &b, &budget, false);
        if (r == JOB_DONE)
            job_free(d, j, &s->stats);
        more |= r == JOB_MORE;
    }
    if (b.v) {
        qsort(b.v, b.n, sizeof(*b.v), rel_cmp);
        send_releases(s, b.v, b.n);
        free(b.v);
    }
    return more;
}

void bk_shm_owner_drained(bk_port_t *p)
{
    p->shm.release_wait = false;
    bk_server_release_soon(p->srv);
}

/* Move p's references and known segments to a release job, O(1).  Out
 * of memory they are given back at once instead, ignoring full queues. */
static void return_held(bk_port_t *p)
{
    bk_server_t *s = p->srv;
    bk_shm_job_t *j, local = { 0 };
    uint32_t all = UINT32_MAX;

    if (!p->shm.held.count && !p->shm.known.count) {
        bk_ht_fini(&p->shm.held);
        bk_ht_fini(&p->shm.known);
        return;
    }
    j = malloc(sizeof(*j));
    *(j ? j : &local) = (bk_shm_job_t){
        .id = p->id, .acct = p->acct, .held = p->shm.held,
        .known = p->shm.known, .nheld = p->shm.nheld,
    };
    bk_list_init(&(j ? j : &local)->link);
    bk_ht_init(&p->shm.held);
    bk_ht_init(&p->shm.known);
    p->shm.nheld = 0;
    if (p->acct)
        bk_user_hold(p->acct);
    s->releases.pending += (j ? j : &local)->nheld;
    if (!j) {
        rel_batch_t b = { 0 };
        local.next = bk_ht_next(&local.held, NULL);
        job_step(s, &local, &b, &all, true);
        job_clear(&s->releases, &local, &s->stats);
        return;
    }
    j->next = bk_ht_next(&j->held, NULL);
    bk_list_push_tail(&s->releases.jobs, &j->link);
    s->releases.njobs++;
    bk_server_release_soon(s);
}

/* The owner of `seg` is gone or dropped it: each receiver hears it once
 * it holds no reference into the segment, so the news never overtakes a
 * descriptor.  Returns how many receivers still hold one. */
static uint32_t retire_receivers(bk_port_t *p, bk_segment_t *seg)
{
    uint32_t pending = 0;

    for (uint32_t i = 0; i < seg->nsent; i++) {
        bk_port_t *r = bk_server_find(p->srv, seg->sent_to[i]);
        bk_known_t *k;

        if (!r || r == p || !(k = known_find(r, p->id, seg->segid)))
            continue;
        if (k->refs) {
            k->owner_gone = true;
            pending++;
            continue;
        }
        bk_ht_remove(&r->shm.known, &k->node);
        free(k);
        send_seg_drop(r, p->id, seg->segid);
    }
    return pending + jobs_know(p->srv, p->id, seg->segid);
}

static void retire(bk_port_t *p, bk_segment_t *seg)
{
    retire_receivers(p, seg);
    file_put(seg->file);
    free(seg->sent_to);
    free(seg->fan);
}

/* Whether some receiver of p's dropped seg has not been sent SEG_DROP. */
static bool still_known(bk_port_t *p, const bk_segment_t *seg)
{
    for (uint32_t i = 0; i < seg->nsent; i++) {
        bk_port_t *r = bk_server_find(p->srv, seg->sent_to[i]);
        if (r && r != p && known_find(r, p->id, seg->segid))
            return true;
    }
    return jobs_know(p->srv, p->id, seg->segid);
}

static void tomb_free(bk_port_t *p, bk_segment_t *seg)
{
    bk_ht_remove(&p->shm.dropped, &seg->node);
    p->shm.ndropped--;
    free(seg->sent_to);
    free(seg);
}

/* Forget p's dropped segment segid once every receiver heard of it. */
static void settle(bk_port_t *p, uint32_t segid)
{
    bk_segment_t *seg = p->shm.ndropped ? dropped_find(p, segid) : NULL;

    if (seg && !still_known(p, seg))
        tomb_free(p, seg);
}

static void settle_all(bk_port_t *p)
{
    bk_hnode_t *n, *next;

    for (n = bk_ht_next(&p->shm.dropped, NULL); n; n = next) {
        bk_segment_t *seg = bk_container_of(n, bk_segment_t, node);
        next = bk_ht_next(&p->shm.dropped, n);
        if (!still_known(p, seg))
            tomb_free(p, seg);
    }
}

int bk_shm_drop(bk_port_t *p, const uint8_t *payload, const char **why)
{
    uint32_t segid = bk_get32(payload);
    bk_segment_t *seg = seg_find(p, segid);

    if (bk_get32(payload + 4) != 0) {
        *why = "SEG_DROP with a reserved field not 0";
        return -EPROTO;
    }
    if (!seg) {
        *why = "SEG_DROP of a segment it has not registered";
        return -EPROTO;
    }
    bk_ht_remove(&p->shm.segs, &seg->node);
    bk_tree_remove(&p->srv->shm_index, &seg->tnode);
    p->shm.nsegs--;
    p->shm.bytes -= seg->size;
    charge_segment(p, seg->size, false);
    p->srv->stats.shm_segments--;
    p->srv->stats.shm_bytes -= seg->size;
    file_put(seg->file);        /* bodies being sent keep their reference */
    seg->file = NULL;
    free(seg->fan);
    seg->fan = NULL;
    seg->nfan = seg->capfan = 0;
    bk_debug("client %" PRIu64 " dropped segment %" PRIu32, p->id, segid);
    if (retire_receivers(p, seg) == 0 || bk_ht_insert(&p->shm.dropped,
                                                      &seg->node) < 0) {
        free(seg->sent_to);
        free(seg);
        return 0;
    }
    p->shm.ndropped++;
    return 0;
}

void bk_shm_port_gone(bk_port_t *p)
{
    bk_hnode_t *n, *next;

    if (p->shm.release_wait)    /* jobs waiting for it drop its share */
        bk_shm_owner_drained(p);
    return_held(p);
    for (n = bk_ht_next(&p->shm.segs, NULL); n; n = next) {
        bk_segment_t *seg = bk_container_of(n, bk_segment_t, node);

        next = bk_ht_next(&p->shm.segs, n);
        bk_tree_remove(&p->srv->shm_index, &seg->tnode);
        retire(p, seg);
        charge_segment(p, seg->size, false);
        p->srv->stats.shm_segments--;
        p->srv->stats.shm_bytes -= seg->size;
        free(seg);
    }
    bk_ht_fini(&p->shm.segs);
    p->shm.nsegs = 0;
    for (n = bk_ht_next(&p->shm.dropped, NULL); n; n = next) {
        bk_segment_t *seg = bk_container_of(n, bk_segment_t, node);
        next = bk_ht_next(&p->shm.dropped, n);
        free(seg->sent_to);
        free(seg);
    }
    bk_ht_fini(&p->shm.dropped);
    p->shm.ndropped = 0;
    p->shm.bytes = 0;
}
