/*
 * recv.c - libbroker input: reading packets, validating and dispatching
 * frames, reassembly, the FIFO of received messages, waiting with poll(),
 * broker_recv and broker_call.
 */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sockio.h"
#include "client.h"

void bk_reasm_limits_of(const broker_t *b, bk_reasm_limits_t *lim)
{
    uint64_t frags = b->opt_max_msg / 64 + 16;

    lim->max_msg = b->opt_max_msg;
    lim->max_frags = frags > UINT32_MAX ? UINT32_MAX : (uint32_t)frags;
    lim->max_partial = b->opt_max_partial;
    lim->timeout_ms = b->opt_timeout_ms;
    lim->chunked = b->opt_chunked;
}

static int wire_code(uint32_t aux)
{
    if (aux == 0)
        return 0;
    return aux < 4096 ? -(int)aux : -EPROTO;
}

/* ---- delivery ----------------------------------------------------------- */

/* Route a received message or event: to the async call waiting on its
 * stream, to the blocking operation watching it, or to the FIFO. */
void bk_deliver(broker_t *b, struct bk_lmsg *m)
{
    struct bk_stream *s = m->pub.stream ? bk_stream_find(b, m->pub.stream)
                                        : NULL;

    if (s && s->acall) {
        m->acall = s->acall;
        s->acall = NULL;
        bk_async_settle(b, m->acall);
    } else if (b->watch_sid && m->pub.stream == b->watch_sid &&
               !b->watch_msg &&
               (m->pub.kind != BROKER_MSG_DATA || b->watch_data)) {
        b->watch_msg = m;
        return;
    }
    bk_fifo_push(b, m);
}

/* Refuse the message on (source, sid): tell the broker with a CLOSE
 * carrying the reason (unless the stream already ended), report an ERROR
 * event to the application and forget the stream, so that fragments still
 * in flight are dropped. */
static void refuse(broker_t *b, uint64_t source, uint32_t sid, int err,
                   bool tell)
{
    const char *text = broker_strerror(err);
    struct bk_stream *s;
    struct bk_lmsg *m;

    bk_reasm_drop_stream(&b->reasm, source, sid);
    s = bk_stream_find(b, sid);
    if (tell && !(s && s->closing))
        bk_queue_close(b, sid, (uint32_t)-err, NULL);
    m = bk_lmsg_event(BROKER_MSG_ERROR, sid, source, err, text,
                      strlen(text));
    if (m)
        bk_deliver(b, m);
    else
        bk_set_fatal(b, -ENOMEM);
    s = bk_stream_find(b, sid);
    if (s && tell)
        bk_stream_forget(b, s);
    else if (s)
        bk_stream_ended(b, s);
}

static void on_expired(void *ud, uint64_t source, uint32_t stream)
{
    refuse(ud, source, stream, -ETIMEDOUT, true);
}

void bk_run_expiry(broker_t *b)
{
    uint64_t when, now;

    if (!bk_reasm_next_deadline(&b->reasm, &when))
        return;
    now = bk_now_ms();
    if (when <= now)
        bk_reasm_expire(&b->reasm, now, on_expired, b);
}

/* ---- shared-memory messages ------------------------------------------------ */

/* A descriptor we will not deliver: its reference goes back at once. */
static void shm_return(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    size_t nl = (h->flags & BK_F_NAME) ? h->aux : 0;
    bk_shm_desc_t d;

    if (bk_shm_desc_decode(p + nl, &d) == 0)
        bk_shm_release(b, h->source, d.segid, d.offset);
}

/* DATA with BK_F_SHM (one whole message, its stream already checked):
 * deliver a message whose data is a view into the sender's segment.  The
 * name and flags go through the reassembly table like any one-fragment
 * message, so a key still busy with fragments is caught the same way. */
static int handle_shm(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    size_t nl = (h->flags & BK_F_NAME) ? h->aux : 0;
    bool ends = h->flags & BK_F_CLOSE;
    bk_hdr_t fh = *h;
    bk_reasm_result_t res;
    struct bk_rseg *seg = NULL;
    struct bk_stream *s;
    struct bk_lmsg *m;
    bk_shm_desc_t d;
    int r;

    r = bk_shm_desc_decode(p + nl, &d);
    if (r == 0) {
        r = bk_shm_lookup(b, h->source, &d, &seg);
        if (r < 0)
            bk_shm_release(b, h->source, d.segid, d.offset);
    }
    if (r < 0) {
        refuse(b, h->source, h->stream, r, !ends);
        return 0;
    }
    fh.flags &= (uint8_t)~BK_F_SHM;
    fh.length = (uint32_t)nl;
    r = bk_reasm_feed(&b->reasm, &fh, p, NULL, bk_now_ms(), &res);
    if (r != 1) {
        if (r > 0)
            for (int i = 0; i < r; i++)
                bk_reasm_out_release(&res.out[i]);
        bk_shm_release(b, h->source, d.segid, d.offset);
        if (r == -EPROTO)
            return -EPROTO;
        refuse(b, h->source, h->stream, r < 0 ? r : -EPROTO, !ends);
        return 0;
    }
    m = bk_lmsg_from_out(&res.out[0]);
    if (!m) {
        bk_reasm_out_release(&res.out[0]);
        bk_shm_release(b, h->source, d.segid, d.offset);
        return -ENOMEM;
    }
    m->pub.data = bk_shm_view_get(seg, d.offset);
    m->pub.len = (size_t)d.length;
    m->pub.flags |= BROKER_MSGF_SHM;
    m->view = seg;
    m->view_off = d.offset;
    bk_deliver(b, m);
    if (ends && (s = bk_stream_find(b, h->stream)))
        bk_stream_ended(b, s);
    return 0;
}

/* ---- frames --------------------------------------------------------------- */

static int handle_data(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                       int *fds)
{
    struct bk_stream *s = bk_stream_find(b, h->stream);
    bool ends = (h->flags & BK_F_CLOSE) && !(h->flags & BK_F_MORE);
    bool shm = h->flags & BK_F_SHM;
    bk_reasm_result_t res;
    int r;

    if (!(h->flags & BK_F_CONT) && (h->flags & BK_F_OPEN)) {
        if (!(h->stream & BK_SID_PEER_BIT)) {
            bk_close_fds(fds, h->nfds);
            return -EPROTO;
        }
        if (!s) {
            s = bk_stream_add(b, h->stream);
            if (!s) {
                if (fds)
                    bk_close_fds(fds, h->nfds);
                if (shm)
                    shm_return(b, h, p);
                refuse(b, h->source, h->stream, -ENOMEM, !ends);
                return 0;
            }
            s->opened = s->wire = true;
        }
    } else if (!s || s->closing) {
        /* a late fragment of a stream already closed on our side */
        if (fds)
            bk_close_fds(fds, h->nfds);
        if (shm)
            shm_return(b, h, p);
        return 0;
    }
    if (shm)
        return handle_shm(b, h, p);
    r = bk_reasm_feed(&b->reasm, h, p, fds, bk_now_ms(), &res);
    if (r == -EPROTO)
        return -EPROTO;
    if (r < 0) {
        refuse(b, h->source, h->stream, r, !ends);
        return 0;
    }
    for (unsigned i = 0; i < res.nout; i++) {
        bk_reasm_out_t *o = &res.out[i];
        bool last = o->flags & BK_REASM_CLOSE;
        struct bk_lmsg *m = bk_lmsg_from_out(o);

        if (!m) {
            for (unsigned j = i; j < res.nout; j++)
                bk_reasm_out_release(&res.out[j]);
            return -ENOMEM;
        }
        bk_deliver(b, m);
        if (last && (s = bk_stream_find(b, h->stream)))
            bk_stream_ended(b, s);
    }
    return 0;
}

/* CLOSE or ERROR for a stream: report it and forget the stream. */
static int handle_end(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    broker_kind_t kind = h->type == BK_T_CLOSE ? BROKER_MSG_CLOSE
                                               : BROKER_MSG_ERROR;
    size_t tl = h->length > BK_MAX_TEXT ? BK_MAX_TEXT : h->length;
    struct bk_lmsg *m = bk_lmsg_event(kind, h->stream, h->source,
                                      wire_code(h->aux), p, tl);
    struct bk_stream *s;

    if (!m)
        return -ENOMEM;
    if (h->stream)
        bk_reasm_drop_stream(&b->reasm, 0, h->stream);
    bk_deliver(b, m);
    if (h->stream && (s = bk_stream_find(b, h->stream)))
        bk_stream_ended(b, s);
    return 0;
}

static int handle_ctrl_reply(broker_t *b, const bk_hdr_t *h,
                             const uint8_t *p)
{
    if (!b->ctrl_id || h->stream != b->ctrl_id || b->ctrl_done)
        return 0;
    b->ctrl_done = true;
    b->ctrl_code = wire_code(h->aux);
    free(b->ctrl_payload);
    b->ctrl_payload = NULL;
    b->ctrl_len = 0;
    if (h->length) {
        b->ctrl_payload = malloc(h->length);
        if (!b->ctrl_payload) {
            b->ctrl_code = -ENOMEM;
            return 0;
        }
        memcpy(b->ctrl_payload, p, h->length);
        b->ctrl_len = h->length;
    }
    return 0;
}

static int handle_welcome(broker_t *b, const uint8_t *p)
{
    bk_welcome_t w;

    bk_welcome_decode(p, &w);
    if (w.client_id == 0 || w.max_packet < BK_MIN_MAX_PACKET ||
        w.max_packet > BK_MAX_MAX_PACKET || w.max_fds > BK_MAX_FDS_HARD ||
        w.max_name == 0 || w.max_name > BK_MAX_NAME || w.max_msg == 0)
        return -EPROTO;
    b->id = w.client_id;
    b->lim.max_packet = w.max_packet;
    b->lim.max_fds = w.max_fds;
    b->lim.max_msg = w.max_msg;
    b->lim.max_name = w.max_name;
    b->lim.max_streams = w.max_streams;
    b->lim.queue_limit = w.queue_limit;
    b->lim.max_segments = w.max_segments;
    b->lim.max_shm = w.max_shm;
    b->flim.max_packet = w.max_packet;
    b->flim.max_fds = w.max_fds;
    b->flim.max_name = w.max_name;
    b->welcomed = true;
    return 0;
}

/* A monitor record: delivered as is, the drop count in `code`. */
static int handle_monitor(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    int dropped = h->aux > INT_MAX ? INT_MAX : (int)h->aux;
    struct bk_lmsg *m = bk_lmsg_event(BROKER_MSG_MONITOR, 0, 0, dropped, p,
                                      h->length);

    if (!m)
        return -ENOMEM;
    bk_deliver(b, m);
    return 0;
}

/* Handle one validated frame; takes ownership of its fds. */
static int handle_frame(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                        int *fds)
{
    if (!b->welcomed) {
        switch (h->type) {
        case BK_T_WELCOME:
            return handle_welcome(b, p);
        case BK_T_ERROR:
            bk_set_fatal(b, h->aux ? wire_code(h->aux) : -EPROTO);
            return 0;
        case BK_T_BYE:
            b->bye = true;
            bk_set_fatal(b, -ESHUTDOWN);
            return 0;
        default:
            if (fds)
                bk_close_fds(fds, h->nfds);
            return -EPROTO;
        }
    }
    switch (h->type) {
    case BK_T_DATA:
        return handle_data(b, h, p, fds);
    case BK_T_CLOSE:
    case BK_T_ERROR:
        return handle_end(b, h, p);
    case BK_T_CTRL_REPLY:
        return handle_ctrl_reply(b, h, p);
    case BK_T_BYE:
        b->bye = true;
        return 0;
    case BK_T_SEGMENT:
        return bk_shm_on_segment(b, h, p, fds[0]);
    case BK_T_RELEASE:
        return bk_shm_on_release(b, h, p);
    case BK_T_SEG_DROP:
        return bk_shm_on_seg_drop(b, h, p);
    case BK_T_MONITOR:
        return handle_monitor(b, h, p);
    default:
        return -EPROTO;
    }
}

/* Validate every frame of the packet and the fd count before acting on
 * any of them, then dispatch them in order. */
static int process_packet(broker_t *b, size_t len, int *fds, unsigned nfds)
{
    const uint8_t *p;
    unsigned sum = 0, k = 0;
    size_t off = 0;
    bk_hdr_t h;
    int r;

    while ((r = bk_pkt_next(b->rbuf, len, &off, &h, &p)) == 1) {
        if (bk_frame_check_from_broker(&h, p, &b->flim) < 0) {
            r = -EPROTO;
            break;
        }
        sum += h.nfds;
    }
    if (r < 0 || sum != nfds) {
        bk_close_fds(fds, nfds);
        return -EPROTO;
    }
    off = 0;
    while (bk_pkt_next(b->rbuf, len, &off, &h, &p) == 1) {
        r = handle_frame(b, &h, p, h.nfds ? fds + k : NULL);
        k += h.nfds;
        if (r < 0) {
            bk_close_fds(fds + k, nfds - k);
            return r;
        }
    }
    return 0;
}

/* Read and handle up to budget packets that are there now.  Returns the
 * number read or the connection's fatal error. */
int bk_pump(broker_t *b, unsigned budget)
{
    int fds[BK_MAX_FDS_HARD];
    unsigned n;

    for (n = 0; n < budget; n++) {
        bool was = b->welcomed;
        unsigned nfds = 0;
        ssize_t len;
        int r;

        if (b->err)
            return b->err;
        len = bk_sock_recv(b->fd, b->rbuf, b->rbuf_len, fds, &nfds,
                           BK_MAX_FDS_HARD);
        if (len == -EAGAIN)
            break;
        if (len == 0 || len == -ECONNRESET || len == -ENOTCONN ||
            len == -EPIPE) {
            bk_conn_lost(b);
            return b->err;
        }
        if (len < 0) {
            bk_set_fatal(b, (int)len);
            return b->err;
        }
        r = process_packet(b, (size_t)len, fds, nfds);
        if (r < 0) {
            bk_set_fatal(b, r);
            return b->err;
        }
        if (!was && b->welcomed)
            return (int)n + 1;
    }
    return (int)n;
}

static int poll_timeout(broker_t *b, int64_t deadline)
{
    int64_t now = (int64_t)bk_now_ms();
    int64_t until = deadline;
    uint64_t exp;

    if (bk_reasm_next_deadline(&b->reasm, &exp) &&
        (until < 0 || (int64_t)exp < until))
        until = (int64_t)exp;
    if (until < 0)
        return -1;
    if (until <= now)
        return 0;
    return until - now > INT_MAX ? INT_MAX : (int)(until - now);
}

/* Block until something happened: input was read (and handled), an
 * expiry fired, or (want_write) the socket is writable.  Pending library
 * output is written meanwhile.  Returns 0 so the caller re-checks what it
 * waits for, -ETIMEDOUT once the deadline (-1: none) has passed, or the
 * connection's fatal error. */
int bk_wait(broker_t *b, bool want_write, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = { .fd = b->fd, .events = POLLIN };
        struct bk_lmsg *watched = b->watch_msg;
        size_t before = b->fifo_len;
        bool out;
        int n, r;

        if (b->err)
            return b->err;
        r = bk_out_flush(b, false, BK_FLUSH_BUDGET);
        if (r < 0 && r != -EAGAIN)
            return r;
        out = r == -EAGAIN;
        bk_run_expiry(b);
        if (b->fifo_len != before || b->watch_msg != watched)
            return 0;
        if (out || want_write)
            pfd.events |= POLLOUT;
        n = poll(&pfd, 1, poll_timeout(b, deadline));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            if (deadline >= 0 && (int64_t)bk_now_ms() >= deadline)
                return -ETIMEDOUT;
            continue;
        }
        if (pfd.revents & POLLNVAL) {
            bk_set_fatal(b, -EBADF);
            return b->err;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            r = bk_pump(b, BK_PUMP_BUDGET);
            if (r < 0)
                return r;
            if (r > 0)
                return 0;
        }
        if ((pfd.revents & POLLOUT) && want_write)
            return 0;
    }
}

/* ---- public receive API -------------------------------------------------- */

BROKER_API int broker_recv(broker_t *b, broker_msg_t **msg, int timeout_ms)
{
    int64_t deadline = bk_deadline(timeout_ms < 0 ? -1 : timeout_ms);
    bool tried = false;

    if (!b || !msg)
        return -EINVAL;
    *msg = NULL;
    if (b->as)
        return -EBUSY;
    if (b->closing)
        return -ECANCELED;
    for (;;) {
        struct bk_lmsg *m = bk_fifo_pop(b);
        int r;

        if (m) {
            if (bk_shm_release_pending(b) && !b->err)
                bk_out_flush(b, false, BK_FLUSH_BUDGET);
            *msg = &m->pub;
            return 0;
        }
        if (b->err)
            return b->err;
        if (!tried) {
            tried = true;
            r = bk_pump(b, BK_PUMP_BUDGET);
            if (r != 0)
                continue;
        }
        r = bk_wait(b, false, deadline);
        if (r < 0 && !b->fifo_head)
            return r;
        tried = false;
    }
}

BROKER_API int broker_call_fds(broker_t *b, const char *name,
                               const void *data, size_t len, const int *fds,
                               unsigned nfds, broker_msg_t **reply,
                               int timeout_ms)
{
    int64_t deadline = bk_deadline(timeout_ms);
    struct bk_stream *s;
    struct bk_lmsg *m;
    uint32_t sid;
    size_t nl;
    int r;

    if (!reply)
        return -EINVAL;
    *reply = NULL;
    r = bk_check_send(b, data, len, fds, nfds);
    if (r < 0)
        return r;
    if (b->as)
        return -EBUSY;
    if (!bk_name_ok(b, name, &nl))
        return -EINVAL;
    r = bk_sid_alloc(b, &sid);
    if (r < 0)
        return r;
    s = bk_stream_add(b, sid);
    if (!s)
        return -ENOMEM;
    s->opened = true;
    bk_watch_begin(b, sid, true);
    r = bk_send_blocking(b, sid, BK_F_OPEN | BK_F_NAME, name, 0, data, len,
                         fds, nfds, deadline, NULL);
    if (r == -ECANCELED)
        r = 0;
    while (r == 0 && !b->watch_msg)
        r = bk_wait(b, false, deadline);
    m = bk_watch_end(b);
    if (m) {
        if (m->pub.kind == BROKER_MSG_DATA) {
            *reply = &m->pub;
            r = 0;
        } else {
            r = m->pub.code ? m->pub.code : -ENODATA;
            bk_lmsg_free(m);
        }
    } else {
        bk_stream_abort(b, sid, r == -ETIMEDOUT ? r : -ECANCELED);
    }
    if (!b->err)
        bk_out_flush(b, false, BK_FLUSH_BUDGET);
    return r;
}

BROKER_API int broker_call(broker_t *b, const char *name, const void *data,
                           size_t len, broker_msg_t **reply, int timeout_ms)
{
    return broker_call_fds(b, name, data, len, NULL, 0, reply, timeout_ms);
}
