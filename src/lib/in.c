/*
 * in.c - libbroker layer 6: reading packets, dispatching their frames,
 * reassembly hand-off, the FIFO, the watch, and waiting with poll().
 */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sockio.h"
#include "outq.h"
#include "stream.h"
#include "flow.h"
#include "ctrl.h"
#include "shm.h"
#include "shmview.h"
#include "subs.h"
#include "summary.h"
#include "in.h"

struct bk_in {
    bk_reasm_t reasm;
    bk_list_t fifo;             /* struct bk_msg, oldest first */
    size_t fifo_len;
    size_t fifo_bytes;          /* payload bytes of the FIFO's messages */
    uint64_t queued;            /* what the FIFO's messages cost
                                 * (msg_cost), against opt_max_queued */
    /* the blocking operation in progress and the stream it watches */
    uint32_t watch_sid;
    bool watch_data;            /* capture DATA too, not only CLOSE/ERROR */
    struct bk_msg *watch_msg;
    bool recv_waited;           /* the last receive had to wait */
    uint64_t pkt_now_ms;        /* the clock for this packet's frames, 0:
                                 * not read yet (in_now) */
    struct bk_in_hooks hooks;
};

static const struct bk_io_hooks in_io_hooks;

/* The time the frames of the packet being handled arrived: read once per
 * packet, not once per message (reassembly only needs milliseconds). */
static uint64_t in_now(broker_t *b)
{
    if (!b->in->pkt_now_ms)
        b->in->pkt_now_ms = bk_io_now_ms();
    return b->in->pkt_now_ms;
}

/* BROKER_OPT_MAX_PARTIAL_BYTES's default: room for one message of the
 * largest size, or for a packet in each of the partial messages allowed,
 * whichever is more. */
static uint64_t def_partial_bytes(const broker_t *b)
{
    uint64_t each = (uint64_t)b->opt_max_partial * b->lim.max_packet;

    return b->opt_max_msg > each ? b->opt_max_msg : each;
}

static void limits_of(const broker_t *b, bk_reasm_limits_t *lim)
{
    uint64_t frags = b->opt_max_msg / 64 + 16;

    lim->max_msg = b->opt_max_msg;
    lim->max_frags = frags > UINT32_MAX ? UINT32_MAX : (uint32_t)frags;
    lim->max_partial = b->opt_max_partial;
    lim->max_bytes = b->opt_max_partial_bytes ? b->opt_max_partial_bytes
                                              : def_partial_bytes(b);
    lim->timeout_ms = b->opt_timeout_ms;
    lim->chunked = b->opt_chunked;
}

int bk_in_init(broker_t *b)
{
    struct bk_in *in = calloc(1, sizeof(*in));
    bk_reasm_limits_t rl;

    if (!in)
        return -ENOMEM;
    limits_of(b, &rl);
    bk_reasm_init(&in->reasm, &rl);
    bk_list_init(&in->fifo);
    b->in = in;
    b->io.hooks = &in_io_hooks;
    return 0;
}

void bk_in_set_hooks(broker_t *b, const struct bk_in_hooks *hooks)
{
    b->in->hooks = *hooks;
}

void bk_in_fini(broker_t *b)
{
    struct bk_in *in = b->in;
    struct bk_msg *m;

    if (!in)
        return;
    while ((m = bk_in_pop(b)))
        bk_msg_free(m);
    bk_msg_free(bk_in_watch_end(b));
    bk_reasm_fini(&in->reasm);
    free(in);
    b->in = NULL;
}

void bk_in_set_limits(broker_t *b)
{
    bk_reasm_limits_t rl;

    limits_of(b, &rl);
    bk_reasm_set_limits(&b->in->reasm, &rl);
}

/* ---- the FIFO and the watch --------------------------------------------- */

/* What a message in the FIFO counts against BROKER_OPT_MAX_QUEUED: its
 * object and, unless it is a view of shared memory (the sender's pool
 * bounds those), its payload. */
static uint64_t msg_cost(const struct bk_msg *m)
{
    return sizeof(*m) + (m->view ? 0 : m->pub.len);
}

/* The ceiling of a blocking wait: the bound plus the larger of the bound
 * and twice the broker's queue_limit (what the broker may hold for us
 * ahead of an answer, and the socket besides). */
static uint64_t hard_limit(const broker_t *b)
{
    uint64_t soft = b->opt_max_queued, ql = b->lim.queue_limit;
    uint64_t room = ql > UINT64_MAX / 2 ? UINT64_MAX : 2 * ql;

    if (room < soft)
        room = soft;
    return soft + room < soft ? UINT64_MAX : soft + room;
}

uint64_t bk_in_queued(const broker_t *b)
{
    return b->in->queued;
}

bool bk_in_full(const broker_t *b)
{
    return b->in->queued >= b->opt_max_queued;
}

void bk_in_push(broker_t *b, struct bk_msg *m)
{
    bk_list_push_tail(&b->in->fifo, &m->link);
    b->in->fifo_len++;
    b->in->fifo_bytes += m->pub.len;
    b->in->queued += msg_cost(m);
}

struct bk_msg *bk_in_pop(broker_t *b)
{
    bk_list_t *l = bk_list_pop_head(&b->in->fifo);
    struct bk_msg *m;

    if (!l)
        return NULL;
    m = bk_container_of(l, struct bk_msg, link);
    b->in->fifo_len--;
    b->in->fifo_bytes -= m->pub.len;
    b->in->queued -= msg_cost(m);
    return m;
}

bool bk_in_has_msgs(const broker_t *b)
{
    return !bk_list_empty(&b->in->fifo);
}

void bk_in_watch_begin(broker_t *b, uint32_t sid, bool data)
{
    b->in->watch_sid = sid;
    b->in->watch_data = data;
    b->in->watch_msg = NULL;
}

bool bk_in_watch_caught(const broker_t *b)
{
    return b->in->watch_msg != NULL;
}

struct bk_msg *bk_in_watch_end(broker_t *b)
{
    struct bk_in *in = b->in;
    struct bk_msg *m = in->watch_msg;

    in->watch_sid = 0;
    in->watch_data = false;
    in->watch_msg = NULL;
    return m;
}

/* The watched stream was closed or failed while a blocking send ran. */
static bool watch_aborted(const broker_t *b)
{
    const struct bk_in *in = b->in;

    return in->watch_msg && in->watch_msg->pub.kind != BROKER_MSG_DATA;
}

/* Route a received message or event: to the async call waiting on its
 * stream, to the blocking operation watching it, or to the FIFO. */
static void deliver(broker_t *b, struct bk_msg *m)
{
    struct bk_in *in = b->in;
    /* only an attached connection has async calls waiting on streams */
    struct bk_stream *s = m->pub.stream && bk_conn_attached(b)
                          ? bk_stream_find(b, m->pub.stream) : NULL;

    if (s && s->acall) {
        m->acall = s->acall;
        s->acall = NULL;
        if (in->hooks.call_answered)
            in->hooks.call_answered(b, m->acall);
    } else if (in->watch_sid && m->pub.stream == in->watch_sid &&
               !in->watch_msg &&
               (m->pub.kind != BROKER_MSG_DATA || in->watch_data)) {
        in->watch_msg = m;
        return;
    }
    bk_in_push(b, m);
}

void bk_in_drop_stream(broker_t *b, uint32_t sid)
{
    bk_reasm_drop_stream(&b->in->reasm, 0, sid);
}

void bk_in_abort_stream(broker_t *b, uint32_t sid, int err)
{
    bk_in_drop_stream(b, sid);
    bk_stream_abort(b, sid, err);
}

/* ---- frames ------------------------------------------------------------- */

/* Refuse the message on (source, sid): tell the broker with a CLOSE
 * carrying the reason (unless the stream already ended), report an ERROR
 * event to the application and forget the stream, so that fragments still
 * in flight are dropped. */
static void refuse(broker_t *b, uint64_t source, uint32_t sid, int err,
                   bool tell)
{
    const char *text = broker_strerror(err);
    struct bk_stream *s;
    struct bk_msg *m;

    bk_reasm_drop_stream(&b->in->reasm, source, sid);
    s = bk_stream_find(b, sid);
    if (tell && !(s && s->q.closing) &&
        bk_out_queue_close(b, sid, err, NULL) == 0)
        /* At once, not after the rest of this read burst: the broker
         * tells the sender only while the message is still passing, and
         * a refused message's remaining fragments are being swallowed. */
        (void)bk_out_flush(b, false, 1);
    m = bk_msg_event(BROKER_MSG_ERROR, sid, source, err, text,
                     strlen(text));
    if (m)
        deliver(b, m);
    else
        bk_io_fail(&b->io, -ENOMEM);
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

void bk_in_run_expiry(broker_t *b)
{
    uint64_t when, now;

    bk_shm_idle_run(b);
    if (!bk_reasm_next_deadline(&b->in->reasm, &when))
        return;
    now = bk_io_now_ms();
    if (when <= now)
        bk_reasm_expire(&b->in->reasm, now, on_expired, b);
}

/* ---- shared-memory messages --------------------------------------------- */

/* A descriptor we will not deliver: its reference goes back at once. */
static void shm_return(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    size_t nl = (h->flags & (BK_F_NAME | BK_F_TOPIC)) ? h->aux : 0;
    bk_shm_desc_t d;

    if (bk_shm_desc_decode(p + nl, &d) == 0)
        bk_shmview_release(b, h->source, d.segid, d.offset);
}

/* DATA with BK_F_SHM (one whole message, its stream already checked):
 * deliver a message whose data is a view into the sender's segment.  The
 * name and flags go through the reassembly table like any one-fragment
 * message, so a key still busy with fragments is caught the same way. */
static int handle_shm(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                      const char *topic, uint32_t sub_id)
{
    size_t nl = (h->flags & BK_F_NAME) ? h->aux : 0;
    bool ends = h->flags & BK_F_CLOSE;
    bk_hdr_t fh = *h;
    bk_reasm_result_t res;
    struct bk_rseg *seg = NULL;
    struct bk_stream *s;
    struct bk_msg *m;
    bk_shm_desc_t d;
    int r;

    r = bk_shm_desc_decode(p + nl, &d);
    if (r == 0) {
        r = bk_shmview_lookup(b, h->source, &d, &seg);
        if (r < 0)
            bk_shmview_release(b, h->source, d.segid, d.offset);
    }
    if (r < 0) {
        refuse(b, h->source, h->stream, r, !ends);
        return 0;
    }
    fh.flags &= (uint8_t)~BK_F_SHM;
    fh.length = (uint32_t)nl;
    r = bk_reasm_feed(&b->in->reasm, &fh, p, NULL, in_now(b), &res);
    if (r != 1) {
        if (r > 0)
            for (int i = 0; i < r; i++)
                bk_reasm_out_release(&res.out[i]);
        bk_shmview_release(b, h->source, d.segid, d.offset);
        if (r == -EPROTO)
            return -EPROTO;
        refuse(b, h->source, h->stream, r < 0 ? r : -EPROTO, !ends);
        return 0;
    }
    m = bk_msg_from_out(&res.out[0], topic, sub_id);
    if (!m) {
        bk_reasm_out_release(&res.out[0]);
        bk_shmview_release(b, h->source, d.segid, d.offset);
        return -ENOMEM;
    }
    m->pub.data = bk_shmview_get(seg, d.offset);
    m->pub.len = (size_t)d.length;
    m->pub.flags |= BROKER_MSGF_SHM;
    m->view = seg;
    m->view_off = d.offset;
    deliver(b, m);
    if (ends && (s = bk_stream_find(b, h->stream)))
        bk_stream_ended(b, s);
    return 0;
}

/* ---- publications ------------------------------------------------------- */

/* A message we drop unseen: its fds closed, its descriptor released. */
static void discard(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                    int *fds)
{
    if (fds)
        bk_close_fds(fds, h->nfds);
    if (h->flags & BK_F_SHM)
        shm_return(b, h, p);
}

/* The first fragment of a publication (dest = our subscription id):
 * *h and *p become those of a plain message without the topic, which is
 * copied into topic.  Returns 1 to go on, 0 when the subscription is no
 * longer ours (the message is dropped: no stream entry is made, so its
 * later fragments are dropped too), or -EPROTO. */
static int strip_topic(broker_t *b, bk_hdr_t *h, const uint8_t **p,
                       int *fds, char topic[BK_MAX_TOPIC + 1])
{
    size_t tl = h->aux;

    if (!(h->flags & BK_F_OPEN) || (h->flags & BK_F_NAME) || tl == 0 ||
        tl > BK_MAX_TOPIC || tl > h->length || h->dest == 0 ||
        h->dest > UINT32_MAX) {
        bk_close_fds(fds, h->nfds);
        return -EPROTO;
    }
    if (!bk_subs_live(b, (uint32_t)h->dest)) {
        discard(b, h, *p, fds);
        return 0;
    }
    memcpy(topic, *p, tl);
    topic[tl] = '\0';
    h->flags &= (uint8_t)~BK_F_TOPIC;
    h->aux = 0;
    h->length -= (uint32_t)tl;
    *p += tl;
    return 1;
}

/* Remember on its stream what a publication is, for all its pieces. */
static int stream_set_topic(struct bk_stream *s, const char *topic,
                            uint32_t sub_id)
{
    char *t = strdup(topic);

    if (!t)
        return -ENOMEM;
    free(s->topic);
    s->topic = t;
    s->sub_id = sub_id;
    return 0;
}

/* Hand a reassembled message (or chunk) of stream sid out, unless it is
 * a publication for a subscription that ended meanwhile. */
static int deliver_out(broker_t *b, uint32_t sid, bk_reasm_out_t *o)
{
    struct bk_stream *s = bk_stream_find(b, sid);
    const char *topic = s ? s->topic : NULL;
    struct bk_msg *m;

    if (topic && !bk_subs_live(b, s->sub_id)) {
        bk_reasm_out_release(o);
        return 0;
    }
    m = bk_msg_from_out(o, topic, topic ? s->sub_id : 0);
    if (!m)
        return -ENOMEM;
    deliver(b, m);
    return 0;
}

/* GAP: publications the broker dropped for one of our subscriptions. */
static int handle_gap(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    struct bk_msg *m;

    if (h->length != BK_GAP_SIZE)
        return -EPROTO;
    if (!bk_subs_live(b, h->aux))
        return 0;
    m = bk_msg_gap(h->aux, bk_get64(p));
    if (!m)
        return -ENOMEM;
    deliver(b, m);
    return 0;
}

/* ---- frames ------------------------------------------------------------- */

/* A whole one-way message or publication (OPEN|CLOSE, no MORE) on a
 * stream id we have no entry for: it opens and ends at once, so no stream
 * entry is made; a publication's topic (NULL: none) and subscription go
 * straight onto the message.  Everything else (limits, chunked delivery,
 * fds, a reassembly key still busy) is as for any one-fragment message. */
static int handle_whole(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                        int *fds, const char *topic)
{
    uint32_t sub_id = topic ? (uint32_t)h->dest : 0;
    bk_reasm_result_t res;
    int r;

    if (h->flags & BK_F_SHM)
        return handle_shm(b, h, p, topic, sub_id);
    r = bk_reasm_feed(&b->in->reasm, h, p, fds, in_now(b), &res);
    if (r == -EPROTO)
        return -EPROTO;
    if (r < 0) {
        refuse(b, h->source, h->stream, r, false);
        return 0;
    }
    for (unsigned i = 0; i < res.nout; i++) {
        struct bk_msg *m = bk_msg_from_out(&res.out[i], topic, sub_id);

        if (!m) {
            for (unsigned j = i; j < res.nout; j++)
                bk_reasm_out_release(&res.out[j]);
            return -ENOMEM;
        }
        deliver(b, m);
    }
    return 0;
}

static int handle_data(broker_t *b, const bk_hdr_t *hin, const uint8_t *p,
                       int *fds)
{
    char topic[BK_MAX_TOPIC + 1];
    bool pub = !(hin->flags & BK_F_CONT) && (hin->flags & BK_F_TOPIC);
    bk_hdr_t hs = *hin;
    const bk_hdr_t *h = &hs;
    struct bk_stream *s;
    bool ends = (h->flags & BK_F_CLOSE) && !(h->flags & BK_F_MORE);
    bool shm = h->flags & BK_F_SHM;
    bk_reasm_result_t res;
    int r;

    if (pub) {
        r = strip_topic(b, &hs, &p, fds, topic);
        if (r <= 0)
            return r;
    }
    s = bk_stream_find(b, h->stream);
    if (!(h->flags & BK_F_CONT) && (h->flags & BK_F_OPEN)) {
        if (!(h->stream & BK_SID_PEER_BIT)) {
            bk_close_fds(fds, h->nfds);
            return -EPROTO;
        }
        if (!s && ends)
            return handle_whole(b, h, p, fds, pub ? topic : NULL);
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
            s->opened = s->q.wire = true;
        }
        if (pub && stream_set_topic(s, topic, (uint32_t)h->dest) < 0) {
            discard(b, h, p, fds);
            refuse(b, h->source, h->stream, -ENOMEM, !ends);
            return 0;
        }
    } else if (!s || s->q.closing) {
        /* a late fragment of a stream already closed on our side, or of
         * a publication for a subscription we ended */
        discard(b, h, p, fds);
        return 0;
    }
    if (shm)
        return handle_shm(b, h, p, s->topic, s->sub_id);
    r = bk_reasm_feed(&b->in->reasm, h, p, fds, in_now(b), &res);
    if (r == -EPROTO)
        return -EPROTO;
    if (r < 0) {
        refuse(b, h->source, h->stream, r, !ends);
        return 0;
    }
    for (unsigned i = 0; i < res.nout; i++) {
        bk_reasm_out_t *o = &res.out[i];
        bool last = o->flags & BK_REASM_CLOSE;

        if (deliver_out(b, h->stream, o) < 0) {
            for (unsigned j = i; j < res.nout; j++)
                bk_reasm_out_release(&res.out[j]);
            return -ENOMEM;
        }
        if (last && (s = bk_stream_find(b, h->stream)))
            bk_stream_ended(b, s);
    }
    return 0;
}

/* A summary ERROR (summary.h): no stream ends; the event carries the
 * count its text starts with.  A text without a valid count: -EPROTO. */
static int handle_summary(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    size_t tl = h->length > BK_MAX_TEXT ? BK_MAX_TEXT : h->length;
    struct bk_msg *m;
    uint64_t n;

    if (bk_sum_parse(p, tl, &n) < 0)
        return -EPROTO;
    m = bk_msg_event(BROKER_MSG_ERROR, BROKER_STREAM_SUMMARY, h->source,
                     bk_conn_wire_code(h->aux), p, tl);
    if (!m)
        return -ENOMEM;
    m->pub.count = n;
    deliver(b, m);
    return 0;
}

/* CLOSE or ERROR for a stream: report it and forget the stream. */
static int handle_end(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    broker_kind_t kind = h->type == BK_T_CLOSE ? BROKER_MSG_CLOSE
                                               : BROKER_MSG_ERROR;
    size_t tl = h->length > BK_MAX_TEXT ? BK_MAX_TEXT : h->length;
    struct bk_msg *m;
    struct bk_stream *s;

    if (kind == BROKER_MSG_ERROR && h->stream == BK_SID_SUMMARY)
        return handle_summary(b, h, p);
    m = bk_msg_event(kind, h->stream, h->source, bk_conn_wire_code(h->aux),
                     p, tl);
    if (!m)
        return -ENOMEM;
    if (h->stream)
        bk_reasm_drop_stream(&b->in->reasm, 0, h->stream);
    deliver(b, m);
    if (h->stream && (s = bk_stream_find(b, h->stream)))
        bk_stream_ended(b, s);
    return 0;
}

/* A monitor record: delivered as is, the drop count in `code`. */
static int handle_monitor(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    int dropped = h->aux > INT_MAX ? INT_MAX : (int)h->aux;
    struct bk_msg *m = bk_msg_event(BROKER_MSG_MONITOR, 0, 0, dropped, p,
                                    h->length);

    if (!m)
        return -ENOMEM;
    deliver(b, m);
    return 0;
}

/* Handle one validated frame; takes ownership of its fds. */
static int handle_frame(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                        int *fds)
{
    if (!b->welcomed) {
        switch (h->type) {
        case BK_T_WELCOME:
            return bk_conn_on_welcome(b, p);
        case BK_T_ERROR:
            bk_io_fail(&b->io, h->aux ? bk_conn_wire_code(h->aux) : -EPROTO);
            return 0;
        case BK_T_BYE:
            b->io.bye = true;
            bk_io_fail(&b->io, -ESHUTDOWN);
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
        return bk_ctrl_on_reply(b, h, p);
    case BK_T_BYE:
        b->io.bye = true;
        return 0;
    case BK_T_SEGMENT:
        return bk_shmview_on_segment(b, h, p, fds[0]);
    case BK_T_RELEASE:
        return bk_shm_on_release(b, h, p);
    case BK_T_SEG_DROP:
        return bk_shmview_on_seg_drop(b, h, p);
    case BK_T_MONITOR:
        return handle_monitor(b, h, p);
    case BK_T_GAP:
        return handle_gap(b, h, p);
    case BK_T_FLOW:
        return bk_flow_on_frame(b, h, p);
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

    while ((r = bk_pkt_next(b->io.rbuf, len, &off, &h, &p)) == 1) {
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
    b->in->pkt_now_ms = 0;
    while (bk_pkt_next(b->io.rbuf, len, &off, &h, &p) == 1) {
        r = handle_frame(b, &h, p, h.nfds ? fds + k : NULL);
        k += h.nfds;
        if (r < 0) {
            bk_close_fds(fds + k, nfds - k);
            return r;
        }
    }
    return 0;
}

/* A read's outcome: the packet of len bytes handled (1), or why not: the
 * read's error, or the packet's, made sticky. */
static int handle_read(broker_t *b, ssize_t len, int *fds, unsigned nfds)
{
    int r;

    if (len < 0)
        return (int)len;
    r = process_packet(b, (size_t)len, fds, nfds);
    if (r < 0) {
        bk_io_fail(&b->io, r);
        return b->io.err;
    }
    return 1;
}

/* Read and handle up to budget packets that are there now, while the FIFO
 * costs less than limit. */
static int pump_upto(broker_t *b, unsigned budget, uint64_t limit)
{
    int fds[BK_MAX_FDS_HARD];
    unsigned n;

    for (n = 0; n < budget; n++) {
        bool was = b->welcomed;
        unsigned nfds = 0;
        ssize_t len;
        int r;

        if (b->in->queued >= limit)
            break;
        len = bk_io_read(&b->io, fds, &nfds, BK_MAX_FDS_HARD);
        if (len == -EAGAIN)
            break;
        r = handle_read(b, len, fds, nfds);
        if (r < 0)
            return r;
        if (!was && b->welcomed)
            return (int)n + 1;
        /* packed packets hold hundreds of messages: hand these out
         * before reading more (their blocks are then reused, msg.c) */
        if (b->in->fifo_len >= BK_PUMP_FIFO ||
            b->in->fifo_bytes >= BK_PUMP_FIFO_BYTES)
            return (int)n + 1;
    }
    return (int)n;
}

int bk_in_pump(broker_t *b, unsigned budget)
{
    return pump_upto(b, budget, b->opt_max_queued);
}

int bk_in_pump_past(broker_t *b, unsigned budget)
{
    return pump_upto(b, budget, hard_limit(b));
}

/* Wait in the read for one packet (until: bk_io_now_ms time, -1: none)
 * and handle it.  1, -EAGAIN (until passed, or the socket's timeout ran
 * out first), -EINTR, or the sticky error. */
static int pump_wait(broker_t *b, int64_t until)
{
    int fds[BK_MAX_FDS_HARD];
    unsigned nfds = 0;
    ssize_t len = bk_io_read_wait(&b->io, fds, &nfds, BK_MAX_FDS_HARD, until);

    return handle_read(b, len, fds, nfds);
}

int bk_in_first_pump(broker_t *b)
{
    int r = b->in->recv_waited ? 0 : bk_in_pump(b, BK_PUMP_BUDGET);

    if (r > 0)
        b->in->recv_waited = false;
    return r;
}

bool bk_in_next_deadline(const broker_t *b, uint64_t *when)
{
    uint64_t idle;
    bool any = bk_reasm_next_deadline(&b->in->reasm, when);

    if (bk_shm_idle_next(b, &idle) && (!any || idle < *when)) {
        *when = idle;
        any = true;
    }
    return any;
}

int bk_in_wait(broker_t *b, bool want_write, int64_t deadline)
{
    struct bk_in *in = b->in;

    for (;;) {
        struct bk_msg *watched = in->watch_msg;
        size_t before = in->fifo_len;
        short events = POLLIN;
        int64_t until = deadline;
        uint64_t exp;
        bool out;
        int r, revents;

        if (b->io.err)
            return b->io.err;
        bk_in_run_expiry(b);    /* first: its frames leave with the flush */
        r = bk_out_flush(b, false, BK_FLUSH_BUDGET);
        if (r < 0 && r != -EAGAIN)
            return r;
        out = r == -EAGAIN;
        if (in->fifo_len != before || in->watch_msg != watched)
            return 0;
        /* reading on would take the FIFO past the ceiling: the caller
         * gives up rather than wait for what lies behind it */
        if (in->queued >= hard_limit(b))
            return -ENOBUFS;
        if (out || want_write)
            events |= POLLOUT;
        if (bk_in_next_deadline(b, &exp) &&
            (until < 0 || (int64_t)exp < until))
            until = (int64_t)exp;
        if (!(events & POLLOUT) && !bk_conn_attached(b)) {
            /* only input to wait for: wait in the read itself */
            r = pump_wait(b, until);
            if (r == 1) {
                in->recv_waited = true;
                return 0;
            }
            if (r == -EAGAIN && deadline >= 0 &&
                (int64_t)bk_io_now_ms() >= deadline)
                return -ETIMEDOUT;
            if (r < 0 && r != -EAGAIN && r != -EINTR)
                return r;
            continue;
        }
        revents = bk_io_poll(&b->io, events, until);
        if (revents == -EINTR)
            continue;
        if (revents < 0)
            return revents;
        if (revents == 0) {
            if (deadline >= 0 && (int64_t)bk_io_now_ms() >= deadline)
                return -ETIMEDOUT;
            continue;
        }
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
            r = bk_in_pump_past(b, BK_PUMP_BUDGET);
            if (r < 0)
                return r;
            /* one packet after a wait: the peer is not ahead of us, the
             * next receive would likely read nothing first */
            in->recv_waited = r == 1;
            if (r > 0)
                return 0;
        }
        if ((revents & POLLOUT) && want_write)
            return 0;
    }
}

/* ---- the socket layer's hooks ------------------------------------------- */

static int io_pump(struct bk_io *io, unsigned budget)
{
    return bk_in_pump(bk_conn_of(io), budget);
}

static int io_wait(struct bk_io *io, bool want_write, int64_t deadline)
{
    return bk_in_wait(bk_conn_of(io), want_write, deadline);
}

static bool io_aborted(const struct bk_io *io)
{
    return watch_aborted(bk_conn_of((struct bk_io *)io));
}

static const struct bk_io_hooks in_io_hooks = {
    .pump = io_pump,
    .wait = io_wait,
    .aborted = io_aborted,
};
