/*
 * send.c - libbroker output: fragmenting writer, blocking sends that keep
 * reading while the socket is full, and the output queue used in attached
 * mode (round-robin between streams) and for frames the library itself
 * generates (CLOSE on refused messages).
 */
#include "config.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sockio.h"
#include "client.h"

/* ---- framing ------------------------------------------------------------- */

/* Describe the next frame of m that fits in room bytes.  packing: the
 * frame joins others in a packet, so do not cut a tiny fragment. */
static bool frag_plan(const struct bk_omsg *m, size_t room, bool packing,
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
    nl = first && (m->flags & BK_F_NAME) ? m->namelen : 0;
    rest = m->len - m->off;
    if (room < BK_HDR_SIZE + nl)
        return false;
    max = room - BK_HDR_SIZE - nl;
    if (packing && rest > max && max < BK_MIN_FRAG)
        return false;
    c = rest < max ? rest : max;
    h->flags = first ? (m->flags & (BK_F_OPEN | BK_F_NAME | BK_F_SHM))
                     : BK_F_CONT;
    h->flags |= c == rest ? (m->flags & BK_F_CLOSE) : BK_F_MORE;
    if (first) {
        h->nfds = (uint8_t)m->nfds;
        if ((m->flags & BK_F_OPEN) && !(m->flags & BK_F_NAME))
            h->dest = m->dest;
    }
    h->aux = (uint32_t)nl;
    h->length = (uint32_t)(nl + c);
    *chunk = c;
    return true;
}

static void frag_advance(struct bk_omsg *m, size_t chunk)
{
    m->started = true;
    m->off += chunk;
}

static bool omsg_done(const struct bk_omsg *m)
{
    return m->started && m->off == m->len;
}

/* Gather a planned frame: header, name (first DATA fragment) and data. */
static int frag_iov(const struct bk_omsg *m, const bk_hdr_t *h, size_t c,
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

/* ---- queue objects ------------------------------------------------------- */

static void omsg_free(struct bk_omsg *m)
{
    if (m->owned && m->nfds)
        bk_close_fds((int *)m->fds, m->nfds);
    if (m->shm)
        bk_shm_unsent(m->shm);
    free(m);
}

/* Heap copy of a message: payload, name and dup()ed fds in one block. */
static int omsg_copy(uint8_t type, uint8_t flags, uint32_t stream,
                     uint32_t aux, uint64_t dest, const char *name,
                     size_t namelen, const void *data, size_t len,
                     const int *fds, unsigned nfds, struct bk_omsg **out)
{
    struct bk_omsg *m;
    int *f;
    char *p;

    m = malloc(sizeof(*m) + nfds * sizeof(int) + namelen + len);
    if (!m)
        return -ENOMEM;
    memset(m, 0, sizeof(*m));
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

static void oq_push(struct bk_oqueue *q, struct bk_omsg *m)
{
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
}

static void oq_pop(struct bk_oqueue *q)
{
    struct bk_omsg *m = q->head;

    q->head = m->next;
    if (!q->head)
        q->tail = NULL;
}

void bk_oqueue_free(struct bk_oqueue *q)
{
    while (q->head) {
        struct bk_omsg *m = q->head;
        oq_pop(q);
        omsg_free(m);
    }
}

/* Payload bytes of m still to be staged. */
static size_t omsg_pending(const struct bk_omsg *m)
{
    if (m->type != BK_T_DATA)
        return 0;
    return m->len - m->off + (m->started ? 0 : m->namelen);
}

static void ring_add(broker_t *b, struct bk_stream *s)
{
    struct bk_stream *r = b->ring;

    if (s->in_ring)
        return;
    if (!r) {
        s->rnext = s->rprev = s;
        b->ring = s;
    } else {
        s->rnext = r;
        s->rprev = r->rprev;
        r->rprev->rnext = s;
        r->rprev = s;
    }
    s->in_ring = true;
}

void bk_ring_remove(broker_t *b, struct bk_stream *s)
{
    if (!s->in_ring)
        return;
    if (s->rnext == s) {
        b->ring = NULL;
    } else {
        s->rprev->rnext = s->rnext;
        s->rnext->rprev = s->rprev;
        if (b->ring == s)
            b->ring = s->rnext;
    }
    s->rnext = s->rprev = NULL;
    s->in_ring = false;
}

void bk_stream_drop_output(broker_t *b, struct bk_stream *s)
{
    bk_ring_remove(b, s);
    for (struct bk_omsg *m = s->q.head; m; m = m->next)
        b->queued_bytes -= omsg_pending(m);
    bk_oqueue_free(&s->q);
}

/* Queue a CLOSE frame: on s after its pending data, or (s NULL) ahead of
 * all data. */
int bk_queue_close(broker_t *b, uint32_t stream, uint32_t aux,
                   struct bk_stream *s)
{
    struct bk_omsg *m;
    int r = omsg_copy(BK_T_CLOSE, 0, stream, aux, 0, NULL, 0, NULL, 0,
                      NULL, 0, &m);

    if (r < 0) {
        bk_set_fatal(b, r);
        return r;
    }
    if (s) {
        oq_push(&s->q, m);
        ring_add(b, s);
    } else {
        oq_push(&b->urgent, m);
    }
    return 0;
}

/* The broker ended a stream while our message on it was half sent: it
 * swallows the rest of that message, and expects its last fragment.  An
 * empty final fragment ends the message without sending the remainder. */
int bk_queue_terminator(broker_t *b, uint32_t stream, uint8_t flags)
{
    struct bk_omsg *m;
    int r = omsg_copy(BK_T_DATA, flags & BK_F_CLOSE, stream, 0, 0, NULL, 0,
                      NULL, 0, NULL, 0, &m);

    if (r < 0) {
        bk_set_fatal(b, r);
        return r;
    }
    m->started = true;
    oq_push(&b->urgent, m);
    return 0;
}

/* The broker or the peer ended stream s (CLOSE, ERROR, or a message with
 * CLOSE): finish a half-sent queued message, then forget s. */
void bk_stream_ended(broker_t *b, struct bk_stream *s)
{
    struct bk_omsg *m = s->q.head;

    if (m && m->type == BK_T_DATA && m->started && !omsg_done(m))
        bk_queue_terminator(b, s->id, m->flags);
    bk_stream_forget(b, s);
}

/* Attached mode: a control request takes its turn in the ring, so it
 * reaches the broker after the first frame of every message queued before
 * it (those streams are open by then) without waiting for their tails. */
int bk_queue_ctrl(broker_t *b, uint32_t id, uint32_t op, const void *arg,
                  size_t len, const int *fds, unsigned nfds)
{
    struct bk_omsg *m;
    int r = omsg_copy(BK_T_CTRL, 0, id, op, 0, NULL, 0, arg, len, fds, nfds,
                      &m);

    if (r < 0)
        return r;
    oq_push(&b->ctlq.q, m);
    ring_add(b, &b->ctlq);
    b->ctrl_queued = true;
    return 0;
}

/* Withdraw the control request (given up on): drop it if it is still
 * queued; if it is in the staged packet it goes out and its reply is
 * ignored. */
void bk_unqueue_ctrl(broker_t *b)
{
    bk_stream_drop_output(b, &b->ctlq);
    b->ctrl_queued = false;
    b->ctrl_in_stage = false;
}

/* ---- staging and flushing ------------------------------------------------ */

static void stage_frame(broker_t *b, size_t *used, const bk_hdr_t *h,
                        const struct bk_omsg *m, size_t c)
{
    uint8_t *p = b->sbuf + *used;

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

/* Take one frame of the stream at the head of the ring.  Returns false when
 * the packet is full. */
static bool stage_stream_frame(broker_t *b, size_t *used, unsigned *nfds)
{
    struct bk_stream *s = b->ring;
    struct bk_omsg *m = s->q.head;
    bk_hdr_t h;
    size_t c;

    if (!m->started && m->nfds && *nfds + m->nfds > BK_MAX_FDS_HARD)
        return false;
    if (!frag_plan(m, b->pkt_cap - *used, *used > 0, &h, &c))
        return false;
    stage_frame(b, used, &h, m, c);
    if (h.nfds) {
        memcpy(b->st_fds + *nfds, m->fds, h.nfds * sizeof(int));
        *nfds += h.nfds;
        m->nfds = 0;
    }
    m->shm = NULL;
    if (h.type == BK_T_DATA)
        b->queued_bytes -= h.length;
    else if (h.type == BK_T_CTRL && h.stream == b->ctrl_id)
        b->ctrl_in_stage = true;
    frag_advance(m, c);
    s->wire = true;
    if (omsg_done(m)) {
        oq_pop(&s->q);
        omsg_free(m);
    }
    if (s->q.head) {
        b->ring = s->rnext;
    } else {
        bk_ring_remove(b, s);
        if (s->closing)
            bk_stream_forget(b, s);
    }
    return true;
}

/* Build the next packet in sbuf: library frames first, then (all) one
 * frame per stream in turn while they fit. */
static bool stage(broker_t *b, bool all)
{
    size_t used = 0;
    unsigned nfds = 0;
    struct bk_omsg *m;
    bk_hdr_t h;
    size_t c;

    while ((m = b->urgent.head) &&
           frag_plan(m, b->pkt_cap - used, used > 0, &h, &c)) {
        stage_frame(b, &used, &h, m, c);
        frag_advance(m, c);
        oq_pop(&b->urgent);
        omsg_free(m);
    }
    used += bk_shm_stage_release(b, b->sbuf + used, b->pkt_cap - used);
    while (all && b->ring && stage_stream_frame(b, &used, &nfds))
        ;
    b->st_len = used;
    b->st_nfds = nfds;
    return used > 0;
}

static bool out_needed(const broker_t *b, bool all)
{
    return b->st_len || b->urgent.head || bk_shm_release_pending(b) ||
           (all && b->ring);
}

bool bk_out_pending(const broker_t *b)
{
    return out_needed(b, true);
}

/* Write queued output without blocking: the staged packet and library
 * frames, and with all, every stream's data.  Returns 0 once that is all
 * written, -EAGAIN if the socket is full or the budget ran out, or the
 * connection's fatal error. */
int bk_out_flush(broker_t *b, bool all, unsigned budget)
{
    while (budget--) {
        struct iovec iov;
        int r;

        if (b->err)
            return b->err;
        if (!b->st_len && !stage(b, all))
            return 0;
        iov.iov_base = b->sbuf;
        iov.iov_len = b->st_len;
        r = bk_sock_send(b->fd, &iov, 1, b->st_fds, b->st_nfds);
        if (r == -EAGAIN)
            return -EAGAIN;
        if (r < 0) {
            bk_set_fatal(b, bk_send_failed(b, r));
            return b->err;
        }
        bk_close_fds(b->st_fds, b->st_nfds);
        b->st_nfds = 0;
        b->st_len = 0;
        if (b->ctrl_in_stage)
            b->ctrl_in_stage = b->ctrl_queued = false;
    }
    return out_needed(b, all) ? -EAGAIN : 0;
}

/* A send failed with err: if the connection is gone, read what is left
 * (a BYE, errors) and make it the fatal error. */
int bk_send_failed(broker_t *b, int err)
{
    if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN) {
        bk_pump(b, 4096);
        bk_conn_lost(b);
        return b->err;
    }
    return err;
}

/* ---- blocking sends -------------------------------------------------------- */

/* Send one packet from the caller's memory, after any library frames.
 * While the socket is full, keep reading so the peer can make progress.
 * Returns 0, -ETIMEDOUT, -ECANCELED (the watched stream was closed or
 * failed meanwhile) or another negative errno. */
int bk_send_direct(broker_t *b, const struct iovec *iov, int iovcnt,
                   const int *fds, unsigned nfds, int64_t deadline)
{
    for (;;) {
        int r;

        if (b->err)
            return b->err;
        if (bk_watch_aborted(b))
            return -ECANCELED;
        r = bk_out_flush(b, false, UINT32_MAX);
        if (r == 0) {
            r = bk_sock_send(b->fd, iov, iovcnt, fds, nfds);
            if (r == 0)
                return 0;
            if (r != -EAGAIN)
                return bk_send_failed(b, r);
        } else if (r != -EAGAIN) {
            return r;
        }
        r = bk_wait(b, true, deadline);
        if (r < 0)
            return r;
    }
}

/* Send a whole message now, fragmenting it.  If it stops half way because
 * the broker ended the stream (-ECANCELED), an empty last fragment tells
 * the broker the message is over; after any other failure a CLOSE ends the
 * stream so the receiver drops the partial message. */
static int send_frames(broker_t *b, uint32_t sid, uint8_t flags,
                       const char *name, uint64_t dest, const void *data,
                       size_t len, const int *fds, unsigned nfds,
                       int64_t deadline)
{
    struct bk_omsg m = {
        .type = BK_T_DATA, .flags = flags, .stream = sid, .dest = dest,
        .name = name, .namelen = name ? (uint8_t)strlen(name) : 0,
        .data = data, .len = len, .fds = fds, .nfds = nfds,
    };
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov[3];
    struct bk_stream *s;
    int r = 0;

    while (!omsg_done(&m)) {
        bk_hdr_t h;
        size_t c;
        int n;

        frag_plan(&m, b->pkt_cap, false, &h, &c);
        n = frag_iov(&m, &h, c, hdr, iov);
        r = bk_send_direct(b, iov, n, h.nfds ? fds : NULL, h.nfds,
                           deadline);
        if (r < 0)
            break;
        if (!m.started && (s = bk_stream_find(b, sid))) {
            s->wire = true;
            s->opened = true;
        }
        frag_advance(&m, c);
    }
    if (r < 0 && m.started && !b->err) {
        if (r == -ECANCELED) {
            bk_queue_terminator(b, sid, flags);
        } else {
            bk_queue_close(b, sid, (uint32_t)-r, NULL);
            if ((s = bk_stream_find(b, sid)))
                bk_stream_forget(b, s);
        }
    }
    return r;
}

/* Send a message now: the caller's bytes (through the pool when they are
 * large enough), or the descriptor of sb.  A shared-memory message is one
 * frame, so when this fails the descriptor was never sent. */
int bk_send_blocking(broker_t *b, uint32_t sid, uint8_t flags,
                     const char *name, uint64_t dest, const void *data,
                     size_t len, const int *fds, unsigned nfds,
                     int64_t deadline, struct bk_sbuf *sb)
{
    uint8_t desc[BK_SHM_DESC_SIZE];
    int r = bk_shm_auto(b, &data, &len, &flags, nfds, deadline, &sb, desc);

    if (r < 0)
        return r;
    r = send_frames(b, sid, flags, name, dest, data, len, fds, nfds,
                    deadline);
    if (r < 0 && sb)
        bk_shm_unsent(sb);
    return r;
}

/* ---- attached mode ------------------------------------------------------- */

/* Send a message without blocking: directly if it is one frame and
 * nothing else waits, else as a copy queued on its stream (the entry is
 * created if needed).  Returns 0 when sent, 1 when queued, or a negative
 * errno. */
static int queue_msg(broker_t *b, uint32_t sid, uint8_t flags,
                     const char *name, uint64_t dest, const void *data,
                     size_t len, const int *fds, unsigned nfds,
                     struct bk_sbuf *sb)
{
    struct bk_omsg tmp = {
        .type = BK_T_DATA, .flags = flags, .stream = sid, .dest = dest,
        .name = name, .namelen = name ? (uint8_t)strlen(name) : 0,
        .data = data, .len = len, .fds = fds, .nfds = nfds,
    };
    struct bk_stream *s = bk_stream_find(b, sid);
    bool created = false;
    struct bk_omsg *m;
    bk_hdr_t h;
    size_t c;
    int r;

    if (!bk_out_pending(b) &&
        frag_plan(&tmp, b->pkt_cap, false, &h, &c) && c == len) {
        uint8_t hdr[BK_HDR_SIZE];
        struct iovec iov[3];
        int n = frag_iov(&tmp, &h, c, hdr, iov);

        r = bk_sock_send(b->fd, iov, n, fds, nfds);
        if (r == 0) {
            if (s)
                s->wire = s->opened = true;
            return 0;
        }
        if (r != -EAGAIN)
            return bk_send_failed(b, r);
    }
    if (!s) {
        s = bk_stream_add(b, sid);
        if (!s)
            return -ENOMEM;
        created = true;
    }
    r = omsg_copy(BK_T_DATA, flags, sid, 0, dest, name, tmp.namelen, data,
                  len, fds, nfds, &m);
    if (r < 0) {
        if (created)
            bk_stream_forget(b, s);
        return r;
    }
    m->shm = sb;
    oq_push(&s->q, m);
    ring_add(b, s);
    s->opened = true;
    b->queued_bytes += omsg_pending(m);
    return 1;
}

/* bk_send_queued with the shared-memory choices of bk_send_blocking; a
 * queued descriptor keeps its reference until it is staged or dropped. */
int bk_send_queued(broker_t *b, uint32_t sid, uint8_t flags,
                   const char *name, uint64_t dest, const void *data,
                   size_t len, const int *fds, unsigned nfds,
                   struct bk_sbuf *sb)
{
    uint8_t desc[BK_SHM_DESC_SIZE];
    int r = bk_shm_auto(b, &data, &len, &flags, nfds, -1, &sb, desc);

    if (r < 0)
        return r;
    r = queue_msg(b, sid, flags, name, dest, data, len, fds, nfds, sb);
    if (r < 0 && sb)
        bk_shm_unsent(sb);
    return r;
}

/* End a stream of ours after a failure or a timeout: tell the broker if
 * it knows the stream, then forget it. */
void bk_stream_abort(broker_t *b, uint32_t sid, int err)
{
    struct bk_stream *s = bk_stream_find(b, sid);

    bk_reasm_drop_stream(&b->reasm, 0, sid);
    if (!s)
        return;
    if (s->wire && !s->closing && !b->err)
        bk_queue_close(b, sid, (uint32_t)-err, NULL);
    bk_stream_forget(b, s);
}

/* ---- public send API ----------------------------------------------------- */

int bk_check_send(const broker_t *b, const void *data, size_t len,
                  const int *fds, unsigned nfds)
{
    int r;

    if (!b || (len && !data) || (nfds && !fds))
        return -EINVAL;
    r = bk_usable(b);
    if (r < 0)
        return r;
    if (nfds > b->lim.max_fds || nfds > BK_MAX_FDS_HARD)
        return -EINVAL;
    if (len > b->lim.max_msg)
        return -EMSGSIZE;
    return 0;
}

/* Finish a blocking send: an abort caused by the watched stream returns
 * that stream's error; any other captured event goes to the FIFO. */
static int send_finish(broker_t *b, int r)
{
    struct bk_lmsg *m = bk_watch_end(b);

    if (r == -ECANCELED && m) {
        r = m->pub.code ? m->pub.code : -EPIPE;
        bk_lmsg_free(m);
    } else if (m) {
        bk_fifo_push(b, m);
    }
    if (!b->err)
        bk_out_flush(b, false, BK_FLUSH_BUDGET);
    return r;
}

/* A one-way message on a fresh stream (OPEN and CLOSE on one message). */
static int send_oneway(broker_t *b, uint8_t flags, const char *name,
                       uint64_t dest, const void *data, size_t len,
                       const int *fds, unsigned nfds, struct bk_sbuf *sb)
{
    uint32_t sid;
    int r = bk_sid_alloc(b, &sid);

    if (r < 0) {
        if (sb)
            bk_shm_unsent(sb);
        return r;
    }
    if (b->as) {
        r = bk_send_queued(b, sid, flags, name, dest, data, len, fds, nfds,
                           sb);
        if (r == 1)
            bk_stream_find(b, sid)->closing = true;
        bk_async_kick(b);
        return r < 0 ? r : 0;
    }
    bk_watch_begin(b, sid, false);
    r = bk_send_blocking(b, sid, flags, name, dest, data, len, fds, nfds,
                         -1, sb);
    return send_finish(b, r);
}

/* A descriptor of sb as a one-way message (flags include BK_F_SHM). */
int bk_send_oneway(broker_t *b, uint8_t flags, const char *name,
                   uint64_t dest, const void *data, size_t len,
                   struct bk_sbuf *sb)
{
    return send_oneway(b, flags, name, dest, data, len, NULL, 0, sb);
}

BROKER_API int broker_send(broker_t *b, const char *name, const void *data,
                           size_t len, const int *fds, unsigned nfds)
{
    size_t nl;
    int r = bk_check_send(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (!bk_name_ok(b, name, &nl))
        return -EINVAL;
    return send_oneway(b, BK_F_OPEN | BK_F_NAME | BK_F_CLOSE, name, 0, data,
                       len, fds, nfds, NULL);
}

BROKER_API int broker_send_id(broker_t *b, uint64_t id, const void *data,
                              size_t len, const int *fds, unsigned nfds)
{
    int r = bk_check_send(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (id == 0)
        return -EINVAL;
    return send_oneway(b, BK_F_OPEN | BK_F_CLOSE, NULL, id, data, len, fds,
                       nfds, NULL);
}

BROKER_API int broker_stream_open(broker_t *b, const char *name, uint64_t id,
                                  uint32_t *stream)
{
    struct bk_stream *s;
    uint32_t sid;
    size_t nl;
    int r;

    if (!b || !stream || (!name && id == 0))
        return -EINVAL;
    r = bk_usable(b);
    if (r < 0)
        return r;
    if (name && !bk_name_ok(b, name, &nl))
        return -EINVAL;
    r = bk_sid_alloc(b, &sid);
    if (r < 0)
        return r;
    s = bk_stream_add(b, sid);
    if (!s)
        return -ENOMEM;
    if (name) {
        s->name = strdup(name);
        if (!s->name) {
            bk_stream_forget(b, s);
            return -ENOMEM;
        }
    } else {
        s->dest = id;
    }
    *stream = sid;
    return 0;
}

BROKER_API int broker_stream_write(broker_t *b, uint32_t stream,
                                   const void *data, size_t len,
                                   const int *fds, unsigned nfds)
{
    char name[BK_MAX_NAME + 1];
    struct bk_stream *s;
    uint8_t flags = 0;
    uint64_t dest;
    int r = bk_check_send(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    s = bk_stream_find(b, stream);
    if (!s || s->closing)
        return -ENOENT;
    if (s->ours && !s->opened)
        flags = BK_F_OPEN | (s->name ? BK_F_NAME : 0);
    if (s->name)
        snprintf(name, sizeof(name), "%s", s->name);
    dest = s->dest;
    if (b->as) {
        r = bk_send_queued(b, stream, flags, s->name ? name : NULL, dest,
                           data, len, fds, nfds, NULL);
        bk_async_kick(b);
        return r < 0 ? r : 0;
    }
    bk_watch_begin(b, stream, false);
    r = bk_send_blocking(b, stream, flags, s->name ? name : NULL, dest,
                         data, len, fds, nfds, -1, NULL);
    return send_finish(b, r);
}

BROKER_API int broker_stream_close(broker_t *b, uint32_t stream)
{
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov = { hdr, sizeof(hdr) };
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CLOSE,
                   .stream = stream };
    struct bk_stream *s;
    bool tell;
    int r;

    if (!b)
        return -EINVAL;
    r = bk_usable(b);
    if (r < 0)
        return r;
    s = bk_stream_find(b, stream);
    if (!s || s->closing)
        return -ENOENT;
    bk_reasm_drop_stream(&b->reasm, 0, stream);
    tell = s->wire || !s->ours || s->q.head;
    if (b->as) {
        if (tell) {
            r = bk_queue_close(b, stream, 0, s);
            if (r == 0)
                s->closing = true;
        } else {
            bk_stream_forget(b, s);
        }
        bk_async_kick(b);
        return r;
    }
    bk_stream_forget(b, s);
    if (!tell)
        return 0;
    bk_hdr_encode(&h, hdr);
    return bk_send_direct(b, &iov, 1, NULL, 0, -1);
}

BROKER_API int broker_reply(broker_t *b, const broker_msg_t *req,
                            const void *data, size_t len, const int *fds,
                            unsigned nfds)
{
    struct bk_stream *s;
    uint32_t sid;
    int r = bk_check_send(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (!req || req->kind != BROKER_MSG_DATA ||
        (req->flags & BROKER_MSGF_CLOSE))
        return -EINVAL;
    sid = req->stream;
    s = bk_stream_find(b, sid);
    if (!s || s->closing || (s->ours && !s->opened))
        return -ENOENT;
    if (b->as) {
        r = bk_send_queued(b, sid, BK_F_CLOSE, NULL, 0, data, len, fds,
                           nfds, NULL);
        s = bk_stream_find(b, sid);
        if (r == 0 && s)
            bk_stream_forget(b, s);
        else if (r == 1 && s)
            s->closing = true;
        bk_async_kick(b);
        return r < 0 ? r : 0;
    }
    bk_watch_begin(b, sid, false);
    r = bk_send_blocking(b, sid, BK_F_CLOSE, NULL, 0, data, len, fds, nfds,
                         -1, NULL);
    if (r == 0 && (s = bk_stream_find(b, sid)))
        bk_stream_forget(b, s);
    return send_finish(b, r);
}
