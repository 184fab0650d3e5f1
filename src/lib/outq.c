/*
 * outq.c - libbroker layer 3: outgoing messages, the queues they wait
 * in, packing frames into the staged packet, and flushing it.
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sockio.h"
#include "outq.h"

#define BK_MIN_FRAG         512u    /* smallest fragment worth packing */
#define BK_REL_COALESCE     8u      /* pending records searched for a twin */

struct bk_relrec {
    uint64_t peer;
    uint32_t segid;
    uint32_t count;
    uint64_t off;
};

struct bk_out {
    bk_list_t urgent;           /* library frames: before any data */
    bk_list_t ring;             /* struct bk_outq with pending output */
    bk_list_t oneway_line;      /* one-way queues waiting for the ring */
    struct bk_outq *oneway_on_ring; /* the one-way queue on the ring */
    uint8_t *sbuf;              /* the staged packet */
    size_t st_len;
    int st_fds[BK_MAX_FDS_HARD];
    unsigned st_nfds;
    size_t queued_bytes;        /* payload not yet staged */
    /* the control request waits its turn in the ring on this queue */
    struct bk_outq ctlq;
    /* requests whose replies nobody blocks for (ctrl.c's async ones) */
    struct bk_outq actlq;
    uint32_t ctl_id;
    bool ctl_queued;            /* not yet written to the socket */
    bool ctl_in_stage;          /* it is in the staged packet */
    struct bk_relrec *rel;      /* RELEASE records not yet staged */
    size_t nrel, relcap;
    struct bk_out_hooks hooks;
};

/* ---- setup -------------------------------------------------------------- */

void bk_outq_init(struct bk_outq *q)
{
    bk_list_init(&q->msgs);
    bk_list_init(&q->ring);
    q->oneway = false;
    q->wire = false;
    q->closing = false;
}

int bk_out_init(broker_t *b)
{
    struct bk_out *o = calloc(1, sizeof(*o));

    if (!o)
        return -ENOMEM;
    o->sbuf = malloc(BK_MIN_MAX_PACKET);
    if (!o->sbuf) {
        free(o);
        return -ENOMEM;
    }
    bk_list_init(&o->urgent);
    bk_list_init(&o->ring);
    bk_list_init(&o->oneway_line);
    bk_outq_init(&o->ctlq);
    bk_outq_init(&o->actlq);
    b->out = o;
    return 0;
}

void bk_out_set_hooks(broker_t *b, const struct bk_out_hooks *hooks)
{
    if (hooks->drained)
        b->out->hooks.drained = hooks->drained;
    if (hooks->unsent)
        b->out->hooks.unsent = hooks->unsent;
}

int bk_out_resize(broker_t *b)
{
    uint8_t *sb = realloc(b->out->sbuf, b->pkt_cap);

    if (!sb)
        return -ENOMEM;
    b->out->sbuf = sb;
    return 0;
}

/* ---- outgoing messages -------------------------------------------------- */

static void omsg_free(broker_t *b, struct bk_omsg *m)
{
    if (m->owned && m->nfds)
        bk_close_fds((int *)m->fds, m->nfds);
    if (m->shm && b->out->hooks.unsent)
        b->out->hooks.unsent(b, m->shm);
    free(m);
}

int bk_out_copy(uint8_t type, uint8_t flags, uint32_t stream, uint32_t aux,
                uint64_t dest, const char *name, size_t namelen,
                const void *data, size_t len, const int *fds, unsigned nfds,
                struct bk_omsg **out)
{
    struct bk_omsg *m;
    int *f;
    char *p;

    m = malloc(sizeof(*m) + nfds * sizeof(int) + namelen + len);
    if (!m)
        return -ENOMEM;
    memset(m, 0, sizeof(*m));
    bk_list_init(&m->link);
    f = (int *)(m + 1);
    for (unsigned i = 0; i < nfds; i++) {
        f[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (f[i] < 0) {
            int e = errno;
            bk_close_fds(f, i);
            free(m);
            return -e;
        }
    }
    p = (char *)(f + nfds);
    if (namelen)
        memcpy(p, name, namelen);
    if (len)
        memcpy(p + namelen, data, len);
    m->type = type;
    m->flags = flags;
    m->namelen = (uint8_t)namelen;
    m->owned = true;
    m->stream = stream;
    m->aux = aux;
    m->dest = dest;
    m->name = p;
    m->data = (const uint8_t *)p + namelen;
    m->len = len;
    m->fds = f;
    m->nfds = nfds;
    *out = m;
    return 0;
}

bool bk_out_plan(const struct bk_omsg *m, size_t room, bool packing,
                 bk_hdr_t *h, size_t *chunk)
{
    bool first = !m->started;
    size_t nl, rest, max, c;

    memset(h, 0, sizeof(*h));
    h->version = BK_PROTO_VERSION;
    h->type = m->type;
    h->stream = m->stream;
    if (m->type != BK_T_DATA) {
        if (room < BK_HDR_SIZE + m->len)
            return false;
        h->nfds = first ? (uint8_t)m->nfds : 0;
        h->aux = m->aux;
        h->length = (uint32_t)m->len;
        *chunk = m->len;
        return true;
    }
    nl = first && (m->flags & BK_OUT_PREFIXED) ? m->namelen : 0;
    rest = m->len - m->off;
    if (room < BK_HDR_SIZE + nl)
        return false;
    max = room - BK_HDR_SIZE - nl;
    if (packing && rest > max && max < BK_MIN_FRAG)
        return false;
    c = rest < max ? rest : max;
    h->flags = first ? (m->flags & (BK_F_OPEN | BK_OUT_PREFIXED | BK_F_SHM))
                     : BK_F_CONT;
    h->flags |= c == rest ? (m->flags & BK_F_CLOSE) : BK_F_MORE;
    if (first) {
        h->nfds = (uint8_t)m->nfds;
        /* a name addresses the message by itself; a topic may come
         * with a gateway's subscription id (broker_publish_group) */
        if ((m->flags & BK_F_OPEN) && !(m->flags & BK_F_NAME))
            h->dest = m->dest;
    }
    h->aux = (uint32_t)nl;
    h->length = (uint32_t)(nl + c);
    *chunk = c;
    return true;
}

void bk_out_advance(struct bk_omsg *m, size_t chunk)
{
    m->started = true;
    m->off += chunk;
}

bool bk_out_done(const struct bk_omsg *m)
{
    return m->started && m->off == m->len;
}

int bk_out_iov(const struct bk_omsg *m, const bk_hdr_t *h, size_t c,
               uint8_t hdr[BK_HDR_SIZE], struct iovec iov[3])
{
    int n = 0;

    bk_hdr_encode(h, hdr);
    iov[n].iov_base = hdr;
    iov[n++].iov_len = BK_HDR_SIZE;
    if (h->type == BK_T_DATA && h->aux) {
        iov[n].iov_base = (void *)m->name;
        iov[n++].iov_len = h->aux;
    }
    if (c) {
        iov[n].iov_base = (void *)(m->data + m->off);
        iov[n++].iov_len = c;
    }
    return n;
}

/* Payload bytes of m still to be staged. */
static size_t omsg_pending(const struct bk_omsg *m)
{
    if (m->type != BK_T_DATA)
        return 0;
    return m->len - m->off + (m->started ? 0 : m->namelen);
}

/* ---- queues ------------------------------------------------------------- */

static void list_free(broker_t *b, bk_list_t *head)
{
    bk_list_t *l;

    while ((l = bk_list_pop_head(head)))
        omsg_free(b, bk_container_of(l, struct bk_omsg, link));
}

static bool omsg_oneway(const struct bk_omsg *m)
{
    return m->type == BK_T_DATA &&
           (m->flags & (BK_F_OPEN | BK_F_CLOSE)) == (BK_F_OPEN | BK_F_CLOSE);
}

/* q has work: put it on the ring, or a one-way queue on the line behind
 * the one-way queue already on the ring. */
static void ring_join(struct bk_out *o, struct bk_outq *q)
{
    if (q->oneway) {
        if (o->oneway_on_ring) {
            bk_list_push_tail(&o->oneway_line, &q->ring);
            return;
        }
        o->oneway_on_ring = q;
    }
    bk_list_push_tail(&o->ring, &q->ring);
}

/* q leaves the ring (or the line): drained or dropped.  The next one-way
 * queue in line takes its turn. */
static void ring_leave(struct bk_out *o, struct bk_outq *q)
{
    bk_list_t *next;

    bk_list_unlink(&q->ring);
    if (o->oneway_on_ring != q)
        return;
    o->oneway_on_ring = NULL;
    next = bk_list_pop_head(&o->oneway_line);
    if (next)
        ring_join(o, bk_container_of(next, struct bk_outq, ring));
}

void bk_out_push(broker_t *b, struct bk_outq *q, struct bk_omsg *m)
{
    if (bk_list_empty(&q->msgs))
        q->oneway = omsg_oneway(m);
    bk_list_push_tail(&q->msgs, &m->link);
    if (!bk_list_linked(&q->ring))
        ring_join(b->out, q);
    b->out->queued_bytes += omsg_pending(m);
}

void bk_out_drop(broker_t *b, struct bk_outq *q)
{
    struct bk_omsg *m;

    ring_leave(b->out, q);
    bk_list_for_each(m, &q->msgs, struct bk_omsg, link)
        b->out->queued_bytes -= omsg_pending(m);
    list_free(b, &q->msgs);
}

bool bk_out_half_sent(const struct bk_outq *q, uint8_t *flags)
{
    struct bk_omsg *m = bk_list_first_entry(&q->msgs, struct bk_omsg, link);

    if (!m || m->type != BK_T_DATA || !m->started || bk_out_done(m))
        return false;
    *flags = m->flags;
    return true;
}

int bk_out_queue_close(broker_t *b, uint32_t stream, int err,
                       struct bk_outq *q)
{
    struct bk_omsg *m;
    int r = bk_out_copy(BK_T_CLOSE, 0, stream, bk_err_to_wire(err), 0, NULL,
                        0, NULL, 0, NULL, 0, &m);

    if (r < 0) {
        bk_io_fail(&b->io, r);
        return r;
    }
    if (q)
        bk_out_push(b, q, m);
    else
        bk_list_push_tail(&b->out->urgent, &m->link);
    return 0;
}

int bk_out_queue_terminator(broker_t *b, uint32_t stream, uint8_t flags)
{
    struct bk_omsg *m;
    int r = bk_out_copy(BK_T_DATA, flags & BK_F_CLOSE, stream, 0, 0, NULL, 0,
                        NULL, 0, NULL, 0, &m);

    if (r < 0) {
        bk_io_fail(&b->io, r);
        return r;
    }
    m->started = true;
    bk_list_push_tail(&b->out->urgent, &m->link);
    return 0;
}

int bk_out_queue_ctrl(broker_t *b, uint32_t id, uint32_t op, const void *arg,
                      size_t len, const int *fds, unsigned nfds)
{
    struct bk_out *o = b->out;
    struct bk_omsg *m;
    int r = bk_out_copy(BK_T_CTRL, 0, id, op, 0, NULL, 0, arg, len, fds,
                        nfds, &m);

    if (r < 0)
        return r;
    bk_out_push(b, &o->ctlq, m);
    o->ctl_id = id;
    o->ctl_queued = true;
    return 0;
}

int bk_out_queue_ctrl_async(broker_t *b, uint32_t id, uint32_t op,
                            const void *arg, size_t len)
{
    struct bk_omsg *m;
    int r = bk_out_copy(BK_T_CTRL, 0, id, op, 0, NULL, 0, arg, len, NULL, 0,
                        &m);

    if (r < 0)
        return r;
    bk_out_push(b, &b->out->actlq, m);
    return 0;
}

int bk_out_queue_seg_drop(broker_t *b, uint32_t segid)
{
    uint8_t pl[BK_SEG_DROP_SIZE];
    struct bk_omsg *m;
    int r;

    bk_put32(pl, segid);
    bk_put32(pl + 4, 0);
    r = bk_out_copy(BK_T_SEG_DROP, 0, 0, 0, 0, NULL, 0, pl, sizeof(pl),
                    NULL, 0, &m);
    if (r < 0) {
        bk_io_fail(&b->io, r);
        return r;
    }
    bk_list_push_tail(&b->out->urgent, &m->link);
    return 0;
}

bool bk_out_ctrl_queued(const broker_t *b)
{
    return b->out->ctl_queued;
}

void bk_out_unqueue_ctrl(broker_t *b)
{
    bk_out_drop(b, &b->out->ctlq);
    b->out->ctl_queued = false;
    b->out->ctl_in_stage = false;
}

void bk_out_release(broker_t *b, uint64_t owner, uint32_t segid,
                    uint64_t off)
{
    struct bk_out *o = b->out;
    size_t lo = o->nrel > BK_REL_COALESCE ? o->nrel - BK_REL_COALESCE : 0;
    struct bk_relrec *r;

    for (size_t i = o->nrel; i-- > lo; ) {
        r = &o->rel[i];
        if (r->peer == owner && r->segid == segid && r->off == off &&
            r->count < UINT32_MAX) {
            r->count++;
            return;
        }
    }
    if (o->nrel == o->relcap) {
        size_t cap = o->relcap ? o->relcap * 2 : 16;
        struct bk_relrec *n = realloc(o->rel, cap * sizeof(*n));

        if (!n) {
            bk_io_fail(&b->io, -ENOMEM);
            return;
        }
        o->rel = n;
        o->relcap = cap;
    }
    o->rel[o->nrel++] = (struct bk_relrec){
        .peer = owner, .segid = segid, .count = 1, .off = off,
    };
}

bool bk_out_release_pending(const broker_t *b)
{
    return b->out->nrel > 0;
}

void bk_out_fini(broker_t *b)
{
    struct bk_out *o = b->out;

    if (!o)
        return;
    list_free(b, &o->urgent);
    bk_out_drop(b, &o->ctlq);
    bk_out_drop(b, &o->actlq);
    bk_close_fds(o->st_fds, o->st_nfds);
    free(o->rel);
    free(o->sbuf);
    free(o);
    b->out = NULL;
}

/* ---- staging ------------------------------------------------------------ */

static void stage_frame(struct bk_out *o, size_t *used, const bk_hdr_t *h,
                        const struct bk_omsg *m, size_t c)
{
    uint8_t *p = o->sbuf + *used;

    bk_hdr_encode(h, p);
    p += BK_HDR_SIZE;
    if (h->type == BK_T_DATA && h->aux) {
        memcpy(p, m->name, h->aux);
        p += h->aux;
    }
    if (c)
        memcpy(p, m->data + m->off, c);
    *used += BK_HDR_SIZE + h->length;
}

/* Write one RELEASE frame with as many pending records as fit in room
 * bytes at out.  Returns the bytes written (0: nothing pending or no
 * room). */
static size_t stage_release(struct bk_out *o, uint8_t *out, size_t room)
{
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_RELEASE };
    size_t k;

    if (!o->nrel || room < BK_HDR_SIZE + BK_RELEASE_SIZE)
        return 0;
    k = (room - BK_HDR_SIZE) / BK_RELEASE_SIZE;
    if (k > o->nrel)
        k = o->nrel;
    h.length = (uint32_t)(k * BK_RELEASE_SIZE);
    bk_hdr_encode(&h, out);
    for (size_t i = 0; i < k; i++) {
        uint8_t *rec = out + BK_HDR_SIZE + i * BK_RELEASE_SIZE;

        bk_put64(rec, o->rel[i].peer);
        bk_put32(rec + 8, o->rel[i].segid);
        bk_put32(rec + 12, o->rel[i].count);
        bk_put64(rec + 16, o->rel[i].off);
    }
    o->nrel -= k;
    memmove(o->rel, o->rel + k, o->nrel * sizeof(*o->rel));
    return BK_HDR_SIZE + h.length;
}

/* Whether starting m in the room left would cut a message that fits
 * whole in a packet of its own.  Such a message waits for the next
 * packet instead: a message that travels whole reaches the receiver
 * through the broker's FIFO of whole one-way messages, in order. */
static bool splits_needlessly(const struct bk_omsg *m, size_t cap,
                              size_t room)
{
    size_t whole;

    if (m->started || m->type != BK_T_DATA)
        return false;
    whole = BK_HDR_SIZE + (m->flags & BK_OUT_PREFIXED ? m->namelen : 0) +
            m->len;
    return whole <= cap && whole > room;
}

/* Take one frame of the queue at the head of the ring.  Returns false when
 * the packet is full. */
static bool stage_stream_frame(broker_t *b, size_t *used, unsigned *nfds)
{
    struct bk_out *o = b->out;
    struct bk_outq *q = bk_list_first_entry(&o->ring, struct bk_outq, ring);
    struct bk_omsg *m = bk_list_first_entry(&q->msgs, struct bk_omsg, link);
    bk_hdr_t h;
    size_t c;

    if (!m->started && m->nfds && *nfds + m->nfds > BK_MAX_FDS_HARD)
        return false;
    if (*used > 0 && splits_needlessly(m, b->pkt_cap, b->pkt_cap - *used))
        return false;
    if (!bk_out_plan(m, b->pkt_cap - *used, *used > 0, &h, &c))
        return false;
    stage_frame(o, used, &h, m, c);
    if (h.nfds) {
        memcpy(o->st_fds + *nfds, m->fds, h.nfds * sizeof(int));
        *nfds += h.nfds;
        m->nfds = 0;
    }
    m->shm = NULL;
    if (h.type == BK_T_DATA)
        o->queued_bytes -= h.length;
    else if (h.type == BK_T_CTRL && h.stream == o->ctl_id)
        o->ctl_in_stage = true;
    bk_out_advance(m, c);
    q->wire = true;
    if (bk_out_done(m)) {
        bk_list_unlink(&m->link);
        omsg_free(b, m);
    }
    if (!bk_list_empty(&q->msgs)) {
        bk_list_move_tail(&o->ring, &q->ring);
    } else {
        ring_leave(o, q);
        if (q->closing && o->hooks.drained)
            o->hooks.drained(b, q);
    }
    return true;
}

/* Build the next packet in sbuf: library frames first, then releases,
 * then (all) one frame per stream in turn while they fit. */
static bool stage(broker_t *b, bool all)
{
    struct bk_out *o = b->out;
    size_t used = 0;
    unsigned nfds = 0;
    struct bk_omsg *m;
    bk_hdr_t h;
    size_t c;

    while ((m = bk_list_first_entry(&o->urgent, struct bk_omsg, link)) &&
           bk_out_plan(m, b->pkt_cap - used, used > 0, &h, &c)) {
        stage_frame(o, &used, &h, m, c);
        bk_out_advance(m, c);
        bk_list_unlink(&m->link);
        omsg_free(b, m);
    }
    used += stage_release(o, o->sbuf + used, b->pkt_cap - used);
    while (all && !bk_list_empty(&o->ring) &&
           stage_stream_frame(b, &used, &nfds))
        ;
    o->st_len = used;
    o->st_nfds = nfds;
    return used > 0;
}

/* ---- batching ----------------------------------------------------------- */

int bk_out_batch(broker_t *b, const struct bk_omsg *m)
{
    struct bk_out *o = b->out;
    bk_hdr_t h;
    size_t c;

    if (m->nfds || m->started || !bk_list_empty(&o->urgent) || o->nrel ||
        !bk_list_empty(&o->ring) ||
        !bk_out_plan(m, b->pkt_cap, false, &h, &c) || c != m->len)
        return BK_OUT_UNBATCHED;
    if (BK_HDR_SIZE + h.length > b->pkt_cap - o->st_len)
        return BK_OUT_FULL;
    stage_frame(o, &o->st_len, &h, m, c);
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

static bool out_needed(const struct bk_out *o, bool all)
{
    return o->st_len || !bk_list_empty(&o->urgent) || o->nrel > 0 ||
           (all && !bk_list_empty(&o->ring));
}

bool bk_out_pending(const broker_t *b)
{
    return out_needed(b->out, true);
}

size_t bk_out_backlog(const broker_t *b)
{
    return b->out->queued_bytes + b->out->st_len;
}

int bk_out_flush(broker_t *b, bool all, unsigned budget)
{
    struct bk_out *o = b->out;

    while (budget--) {
        struct iovec iov;
        int r;

        if (b->io.err)
            return b->io.err;
        if (!o->st_len && !stage(b, all))
            return 0;
        iov.iov_base = o->sbuf;
        iov.iov_len = o->st_len;
        r = bk_io_send(&b->io, &iov, 1, o->st_fds, o->st_nfds);
        if (r == -EAGAIN)
            return -EAGAIN;
        if (r < 0) {
            bk_io_fail(&b->io, r);
            return b->io.err;
        }
        bk_close_fds(o->st_fds, o->st_nfds);
        o->st_nfds = 0;
        o->st_len = 0;
        if (o->ctl_in_stage)
            o->ctl_in_stage = o->ctl_queued = false;
    }
    return out_needed(o, all) ? -EAGAIN : 0;
}

int bk_out_flush_wait(broker_t *b, int64_t deadline)
{
    for (;;) {
        int r = bk_out_flush(b, true, UINT32_MAX);

        if (r != -EAGAIN)
            return r;
        r = bk_io_wait(&b->io, true, deadline);
        if (r < 0)
            return r;
    }
}

int bk_out_send_direct(broker_t *b, const struct iovec *iov, int iovcnt,
                       const int *fds, unsigned nfds, int64_t deadline)
{
    for (;;) {
        int r;

        if (b->io.err)
            return b->io.err;
        if (bk_io_aborted(&b->io))
            return -ECANCELED;
        r = bk_out_flush(b, false, UINT32_MAX);
        if (r == 0) {
            r = bk_io_send(&b->io, iov, iovcnt, fds, nfds);
            if (r != -EAGAIN)
                return r;
        } else if (r != -EAGAIN) {
            return r;
        }
        r = bk_io_wait(&b->io, true, deadline);
        if (r < 0)
            return r;
    }
}
