/*
 * outq.c - a client's output queue: queues per stream on a round-robin
 * ring, the control and one-way queues, packing frames into packets.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "blkcache.h"
#include "error.h"
#include "frame.h"
#include "outq.h"
#include "sockio.h"
#include "size.h"

/* The queue of a frame: its receiver's stream id, NO_SID for the control
 * queue, DGRAM_SID for the one-way queue. */
#define NO_SID    0u
#define DGRAM_SID UINT32_MAX

static void oq_init(bk_oq_t *oq, uint32_t sid)
{
    oq->sid = sid;
    bk_list_init(&oq->frames);
    bk_list_init(&oq->ring);
}

void bk_outq_init(bk_outq_t *q)
{
    memset(q, 0, sizeof(*q));
    oq_init(&q->ctrl, NO_SID);
    oq_init(&q->dgram, DGRAM_SID);
    bk_ht_init(&q->oqs);
    bk_list_init(&q->ring);
}

/* ---- recycled blocks ----------------------------------------------------
 *
 * Every queued frame allocates a node (with its payload inline, or with a
 * reference to a shared one), every publication one shared payload, and
 * they are freed a packet later.  They come from one block cache
 * (blkcache.h; brokerd is one thread) holding at most CACHE_BYTES: a
 * packed packet of hundreds of small messages is queued from the blocks
 * the previous one freed, without malloc.  bk_outq_cache_trim gives
 * everything back. */

#ifdef BK_FAULT_INJECTION
/* brokerd-fault (fault.c) keeps nothing, so that every queued frame's
 * allocation is one that can fail */
#define CACHE_BYTES  0u
#else
#define CACHE_BYTES  (2048u * 1024)
#endif

static bk_blkcache_t cache = { .max_bytes = CACHE_BYTES };

static void stage_free(void);

void bk_outq_cache_trim(void)
{
    bk_blk_trim(&cache);
    stage_free();
}

static void *blk_alloc(size_t size, uint8_t *cls)
{
    return bk_blk_alloc(&cache, size, cls);
}

static void blk_free(void *p, uint8_t cls)
{
    bk_blk_free(&cache, p, cls);
}

bk_opayload_t *bk_opayload_new(const void *data, uint32_t len)
{
    uint8_t cls;
    bk_opayload_t *p = blk_alloc(sizeof(*p) + len, &cls);

    if (!p)
        return NULL;
    p->refs = 1;
    p->len = len;
    p->cls = cls;
    memcpy(p->data, data, len);
    return p;
}

static uint32_t frame_mem(const bk_oframe_t *f)
{
    uint64_t m = bk_blk_mem(f->blk, sizeof(*f) + (f->shared ? 0 : f->len));

    if (f->nfds)
        m += f->nfds * sizeof(int) + BK_BLK_MALLOC_OVERHEAD;
    if (f->shared)
        m += bk_blk_mem((uint8_t)f->shared->cls,
                        sizeof(*f->shared) + f->shared->len);
    if (f->body)
        m += sizeof(*f->body) + BK_BLK_MALLOC_OVERHEAD;
    return m > UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

static void mem_add(bk_outq_t *q, uint64_t n)
{
    q->mem += n;
    if (q->mem_user)
        *q->mem_user += n;
    if (q->mem_all)
        *q->mem_all += n;
}

static void mem_sub(bk_outq_t *q, uint64_t n)
{
    q->mem = bk_size_sub(q->mem, n);
    if (q->mem_user)
        *q->mem_user = bk_size_sub(*q->mem_user, n);
    if (q->mem_all)
        *q->mem_all = bk_size_sub(*q->mem_all, n);
}

void bk_outq_set_acct(bk_outq_t *q, uint64_t *user, uint64_t *all)
{
    q->mem_user = user;
    q->mem_all = all;
    if (user)
        *user += q->mem;
    if (all)
        *all += q->mem;
}

void bk_opayload_put(bk_opayload_t *p)
{
    if (!p || --p->refs)
        return;
    blk_free(p, (uint8_t)p->cls);
}

static void frame_free(bk_oframe_t *f)
{
    bk_opayload_t *shared = f->shared;

    if (f->nfds) {
        bk_close_fds(f->fds, f->nfds);
        free(f->fds);
    }
    if (f->charge)
        f->charge->put(f->charge, f->nfds, f->mem);
    bk_opayload_put(shared);
    if (f->body)
        f->body->done(f->body);
    blk_free(f, f->blk);
}

void bk_outq_frame_free(bk_oframe_t *f)
{
    frame_free(f);
}

/* Which queue a frame belongs to: frames relayed from a peer keep their
 * order with the rest of their stream; the broker's own frames (source 0:
 * replies, rejections, BYE) keep their order among themselves in the
 * control queue, so a PING after a send is a barrier for its errors. */
static uint32_t queue_sid(const bk_hdr_t *h)
{
    const uint8_t whole = BK_F_OPEN | BK_F_CLOSE;

    switch (h->type) {
    case BK_T_GAP:              /* in order with whole publications */
        return DGRAM_SID;
    case BK_T_DATA:
        if ((h->flags & (whole | BK_F_MORE | BK_F_CONT)) == whole)
            return DGRAM_SID;
        return h->stream;
    case BK_T_CLOSE:
    case BK_T_ERROR:
        return h->source ? h->stream : NO_SID;
    default:
        return NO_SID;
    }
}

static bk_oq_t *stream_oq(bk_outq_t *q, uint32_t sid)
{
    uint8_t key[4];
    bk_hnode_t *n;
    bk_oq_t *oq;

    bk_put32(key, sid);
    n = bk_ht_find(&q->oqs, key, sizeof(key));
    if (n)
        return bk_container_of(n, bk_oq_t, node);
    oq = calloc(1, sizeof(*oq));
    if (!oq)
        return NULL;
    oq_init(oq, sid);
    memcpy(oq->key, key, sizeof(key));
    oq->node.key = oq->key;
    oq->node.keylen = sizeof(oq->key);
    if (bk_ht_insert(&q->oqs, &oq->node) < 0) {
        free(oq);
        return NULL;
    }
    bk_list_push_tail(&q->ring, &oq->ring);
    return oq;
}

/* The queue for sid; a stream or the one-way queue joins the ring (at the
 * back, served after every queue already waiting). */
static bk_oq_t *oq_get(bk_outq_t *q, uint32_t sid)
{
    if (sid == NO_SID)
        return &q->ctrl;
    if (sid == DGRAM_SID) {
        if (!bk_list_linked(&q->dgram.ring))
            bk_list_push_tail(&q->ring, &q->dgram.ring);
        return &q->dgram;
    }
    return stream_oq(q, sid);
}

/* An emptied queue leaves the ring (and is freed if it is a stream's). */
static void oq_drop(bk_outq_t *q, bk_oq_t *oq)
{
    if (oq == &q->ctrl)
        return;
    bk_list_unlink(&oq->ring);
    if (oq == &q->dgram)
        return;
    bk_ht_remove(&q->oqs, &oq->node);
    free(oq);
}

static bk_oframe_t *frame_new(const bk_hdr_t *h, const void *payload,
                              bk_opayload_t *shared, const int *fds,
                              unsigned nfds)
{
    uint8_t cls;
    bk_oframe_t *f = blk_alloc(sizeof(*f) + (shared ? 0 : h->length), &cls);

    if (!f)
        return NULL;
    f->blk = cls;
    f->fds = NULL;
    f->charge = NULL;
    if (nfds) {
        f->fds = malloc(nfds * sizeof(int));
        if (!f->fds) {
            blk_free(f, cls);
            return NULL;
        }
        memcpy(f->fds, fds, nfds * sizeof(int));
    }
    bk_list_init(&f->link);
    bk_hdr_encode(h, f->hdr);
    f->type = h->type;
    f->flags = h->flags;
    f->len = h->length;
    f->shared = shared;
    if (shared) {
        shared->refs++;
        f->pdata = shared->data;
    } else {
        memcpy(f->data, payload, h->length);
        f->pdata = f->data;
    }
    f->nfds = nfds;
    f->oneway_first = false;
    f->tag_first = false;
    f->tag = NULL;
    f->body = NULL;
    f->mem = frame_mem(f);
    return f;
}

static int push(bk_outq_t *q, uint32_t sid, const bk_hdr_t *h,
                const void *payload, bk_opayload_t *shared, int *fds,
                unsigned nfds, bk_oframe_t **out)
{
    bk_oq_t *oq = oq_get(q, sid);
    bk_oframe_t *f = oq ? frame_new(h, payload, shared, fds, nfds) : NULL;

    if (!f) {
        if (oq && bk_list_empty(&oq->frames))
            oq_drop(q, oq);
        bk_close_fds(fds, nfds);
        return -ENOMEM;
    }
    bk_list_push_tail(&oq->frames, &f->link);
    q->bytes += BK_HDR_SIZE + h->length;
    mem_add(q, f->mem);
    q->frames++;
    q->nfds += nfds;
    *out = f;
    return 0;
}

int bk_outq_push(bk_outq_t *q, const bk_hdr_t *h, const void *payload,
                 int *fds, unsigned nfds, bk_oframe_t **out)
{
    return push(q, queue_sid(h), h, payload, NULL, fds, nfds, out);
}

int bk_outq_push_shared(bk_outq_t *q, const bk_hdr_t *h, bk_opayload_t *pl,
                        int *fds, unsigned nfds, bk_oframe_t **out)
{
    return push(q, DGRAM_SID, h, NULL, pl, fds, nfds, out);
}

int bk_outq_push_body(bk_outq_t *q, const bk_hdr_t *h, const void *payload,
                      bk_obody_t *body, bool pub, bk_oframe_t **out)
{
    int r = push(q, pub ? DGRAM_SID : queue_sid(h), h, payload, NULL, NULL,
                 0, out);

    if (r < 0) {
        body->done(body);
        return r;
    }
    body->h = *h;
    body->started = false;
    (*out)->body = body;
    mem_sub(q, (*out)->mem);
    (*out)->mem = frame_mem(*out);
    mem_add(q, (*out)->mem);
    return 0;
}

unsigned bk_outq_take_tagged(bk_outq_t *q, const void *tag, bk_list_t *out)
{
    bk_oframe_t *f;
    unsigned n = 0;

    bk_list_for_each_safe(f, &q->dgram.frames, bk_oframe_t, link) {
        if (f->tag != tag || !f->tag_first ||
            (f->flags & (BK_F_SHM | BK_F_MORE)))
            continue;
        bk_list_unlink(&f->link);
        bk_list_push_tail(out, &f->link);
        q->bytes -= BK_HDR_SIZE + f->len;
        mem_sub(q, f->mem);
        q->frames--;
        q->nfds -= f->nfds;
        n++;
    }
    if (n && bk_list_empty(&q->dgram.frames))
        oq_drop(q, &q->dgram);
    return n;
}

int bk_outq_push_frame(bk_outq_t *q, bk_oframe_t *f, const bk_hdr_t *h)
{
    bk_oq_t *oq = oq_get(q, queue_sid(h));

    if (!oq) {
        frame_free(f);
        return -ENOMEM;
    }
    bk_hdr_encode(h, f->hdr);
    bk_list_init(&f->link);
    bk_list_push_tail(&oq->frames, &f->link);
    q->bytes += BK_HDR_SIZE + f->len;
    mem_add(q, f->mem);
    q->frames++;
    q->nfds += f->nfds;
    return 0;
}

void bk_outq_untag(bk_outq_t *q, const void *tag)
{
    bk_oframe_t *f;
    bk_oq_t *oq;

    bk_list_for_each(oq, &q->ring, bk_oq_t, ring)
        bk_list_for_each(f, &oq->frames, bk_oframe_t, link)
            if (f->tag == tag)
                f->tag = NULL;
}

/* The queue served next: the control queue, else the front of the ring. */
static bk_oq_t *next_oq(bk_outq_t *q)
{
    if (!bk_list_empty(&q->ctrl.frames))
        return &q->ctrl;
    return bk_list_first_entry(&q->ring, bk_oq_t, ring);
}

/* ---- bodies ------------------------------------------------------------- */

/* The buffer a body's fragment is read into: one packet, shared by every
 * queue (brokerd writes one gathered packet at a time; given back with
 * the cache, never between a gather and its write). */
static struct {
    uint8_t *buf;
    size_t cap;
} stage;

static void stage_free(void)
{
    free(stage.buf);
    stage.buf = NULL;
    stage.cap = 0;
}

static uint8_t *stage_get(size_t size)
{
    if (stage.cap < size) {
        uint8_t *b = realloc(stage.buf, size);
        if (!b)
            return NULL;
        stage.buf = b;
        stage.cap = size;
    }
    return stage.buf;
}

static int read_full(int fd, uint8_t *buf, size_t n, uint64_t off)
{
    while (n) {
        ssize_t r = pread(fd, buf, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        buf += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* The next fragment of body frame f: the descriptor frame's header with
 * SHM off, MORE while bytes remain, CLOSE moved to the last fragment, the
 * name or topic on the first only.  If the segment cannot be read, a CLOSE
 * with EIO ends the stream at the receiver instead, and the body ends. */
static void body_gather(bk_oframe_t *f, size_t max_packet, bk_outq_pkt_t *pkt)
{
    bk_obody_t *b = f->body;
    bk_hdr_t h = b->h;
    uint32_t name = b->started ? 0 : (h.flags & (BK_F_NAME | BK_F_TOPIC)
                                      ? h.aux : 0);
    uint64_t left = b->end - b->pos;
    size_t room = max_packet - BK_HDR_SIZE - name;
    size_t n = left < room ? (size_t)left : room;
    uint8_t *buf = stage_get(max_packet);

    if (!buf || read_full(b->fd, buf + name, n, b->pos) < 0) {
        h = (bk_hdr_t){ .version = BK_PROTO_VERSION, .type = BK_T_CLOSE,
                        .stream = h.stream, .aux = bk_err_to_wire(-EIO),
                        .source = h.source, .dest = h.dest };
        n = (size_t)left;
        buf = NULL;
    } else {
        memcpy(buf, f->pdata, name);
        h.flags = (uint8_t)(b->started ? BK_F_CONT : h.flags & ~BK_F_SHM);
        if (b->started)
            h.aux = 0;
        if (left > n)
            h.flags = (uint8_t)((h.flags | BK_F_MORE) & ~BK_F_CLOSE);
        else if (b->started)
            h.flags |= b->h.flags & BK_F_CLOSE;
        h.length = (uint32_t)(name + n);
    }
    bk_hdr_encode(&h, f->hdr);
    b->chunk = (uint32_t)n;
    b->frag_flags = h.type == BK_T_DATA ? h.flags : 0;
    b->frag_len = h.type == BK_T_DATA ? h.length : 0;
    pkt->iov[0] = (struct iovec){ f->hdr, BK_HDR_SIZE };
    pkt->iov[1] = (struct iovec){ buf, h.length };
}

/* A body's fragment went out; true when it was the last. */
static bool body_sent(bk_oframe_t *f, bk_outq_tally_t *sent)
{
    bk_obody_t *b = f->body;

    if (b->frag_len || b->frag_flags)
        bk_outq_tally(sent, BK_T_DATA, b->frag_flags, b->frag_len);
    b->pos += b->chunk;
    b->started = true;
    return b->pos >= b->end;
}

unsigned bk_outq_gather(bk_outq_t *q, size_t max_packet, bk_outq_pkt_t *pkt)
{
    bk_oq_t *oq = q->frames ? next_oq(q) : NULL;
    size_t room = max_packet;
    unsigned n = 0;
    bk_oframe_t *f;

    pkt->oq = oq;
    pkt->fds = NULL;
    pkt->nfds = 0;
    if (oq) {
        bk_list_for_each(f, &oq->frames, bk_oframe_t, link) {
            size_t sz = BK_HDR_SIZE + (size_t)f->len;
            if (n == BK_OUTQ_PACK_MAX ||
                (n && (sz > room || f->nfds || f->body)))
                break;
            if (f->body) {      /* a packet of its own */
                body_gather(f, max_packet, pkt);
                n = 1;
                break;
            }
            if (n == 0) {
                pkt->fds = f->fds;
                pkt->nfds = f->nfds;
            }
            __builtin_prefetch(f->pdata);   /* read by the write soon */
            pkt->iov[2 * n] = (struct iovec){ f->hdr, BK_HDR_SIZE };
            pkt->iov[2 * n + 1] = (struct iovec){ (void *)f->pdata,
                                                  f->len };
            room -= sz < room ? sz : room;
            n++;
        }
    }
    pkt->nframes = n;
    pkt->niov = 2 * n;
    return n;
}

void bk_outq_consume(bk_outq_t *q, const bk_outq_pkt_t *pkt,
                     bk_outq_tally_t *sent)
{
    bk_oq_t *oq = pkt->oq;

    for (unsigned i = 0; i < pkt->nframes; i++) {
        bk_oframe_t *f = bk_list_first_entry(&oq->frames, bk_oframe_t, link);

        if (f->body) {
            if (!body_sent(f, sent))
                break;          /* more to come: stays at the head */
        } else {
            bk_outq_tally(sent, f->type, f->flags, f->len);
        }
        bk_list_unlink(&f->link);
        if (f->tag && f->tag_first && q->on_sent)
            q->on_sent(f->tag, q->on_sent_arg);
        q->bytes -= BK_HDR_SIZE + f->len;
        mem_sub(q, f->mem);
        q->frames--;
        q->nfds -= f->nfds;
        frame_free(f);
    }
    if (bk_list_empty(&oq->frames))
        oq_drop(q, oq);
    else if (oq != &q->ctrl)
        bk_list_move_tail(&q->ring, &oq->ring);
}

static void drop_frames(bk_outq_t *q, bk_oq_t *oq, bk_outq_lost_fn *lost,
                        void *arg)
{
    bk_list_t *l;

    while ((l = bk_list_pop_head(&oq->frames))) {
        bk_oframe_t *f = bk_container_of(l, bk_oframe_t, link);

        if (f->oneway_first && lost)
            lost(f, arg);
        frame_free(f);
    }
    oq_drop(q, oq);
}

void bk_outq_fini(bk_outq_t *q, bk_outq_lost_fn *lost, void *arg)
{
    bk_oq_t *oq;

    drop_frames(q, &q->ctrl, lost, arg);
    while ((oq = bk_list_first_entry(&q->ring, bk_oq_t, ring)))
        drop_frames(q, oq, lost, arg);
    bk_ht_fini(&q->oqs);
    mem_sub(q, q->mem);
    q->bytes = 0;
    q->frames = 0;
    q->nfds = 0;
}
