/*
 * api_msg.c - libbroker layer 7, public API: messages and streams
 * (send, shared-memory buffer send, stream open/write/close, reply,
 * receive, call, what a received message is, freeing a message).
 *
 * A DATA frame from broker_send() to the socket (blocking mode); each
 * file appears once, the functions it uses from lower layers in brackets:
 *
 *   api_msg.c  broker_send          checks the name [conn.c] and the
 *                                   message [send.c bk_send_check]
 *   send.c     bk_send_oneway       a fresh stream id [stream.c], the watch
 *                                   on it [in.c]; bk_send_blocking lets
 *                                   [shm.c bk_shm_auto] turn a large
 *                                   message into a pool descriptor, then
 *                                   send_frames cuts frames out of the
 *                                   caller's memory (no copy) with
 *                                   [outq.c bk_out_plan, bk_out_iov]
 *   outq.c     bk_out_send_direct   flushes library frames and RELEASE
 *                                   records queued before, then the frame
 *   io.c       bk_io_send           one sendmsg() with the fds
 *                                   [src/common/sockio.c]
 *
 * (Attached mode: send.c bk_send_queued writes it at once if nothing else
 * waits, else copies it onto its stream's queue in outq.c, whose stager
 * packs one frame per stream in turn when async.c sees the socket
 * writable and calls bk_out_flush; then io.c as above.)
 *
 * And from the socket to broker_recv():
 *
 *   io.c       bk_io_read           one recvmsg() into the read buffer,
 *                                   the fds apart [sockio.c]
 *   in.c       bk_in_pump           process_packet checks every frame
 *                                   [frame.c], handle_data feeds the
 *                                   reassembly table [reasm.c], wraps the
 *                                   completed message [msg.c
 *                                   bk_msg_from_out] and deliver() puts it
 *                                   on the FIFO (or in the watch slot of a
 *                                   blocking call, or tags it for an async
 *                                   call)
 *   api_msg.c  broker_recv          pops it [in.c bk_in_pop] and hands out
 *                                   &m->pub
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "outq.h"
#include "stream.h"
#include "flow.h"
#include "shm.h"
#include "shmview.h"
#include "in.h"
#include "send.h"
#include "recon.h"

BROKER_API int broker_send(broker_t *b, const char *name, const void *data,
                           size_t len, const int *fds, unsigned nfds)
{
    size_t nl;
    int r = bk_send_check(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (!bk_conn_name_ok(b, name, &nl))
        return -EINVAL;
    return bk_send_oneway(b, BK_F_OPEN | BK_F_NAME | BK_F_CLOSE, name, 0,
                          data, len, fds, nfds, NULL);
}

BROKER_API int broker_send_id(broker_t *b, uint64_t id, const void *data,
                              size_t len, const int *fds, unsigned nfds)
{
    int r = bk_send_check(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (id == 0)
        return -EINVAL;
    return bk_send_oneway(b, BK_F_OPEN | BK_F_CLOSE, NULL, id, data, len,
                          fds, nfds, NULL);
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
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    if (name && !bk_conn_name_ok(b, name, &nl))
        return -EINVAL;
    r = bk_stream_alloc_id(b, &sid);
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
    char buf[BK_MAX_NAME + 1];
    const char *name = NULL;    /* a copy: the stream may go while we wait */
    struct bk_stream *s;
    uint8_t flags = 0;
    uint64_t dest;
    int r = bk_send_check(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    s = bk_stream_find(b, stream);
    if (!s || s->q.closing)
        return -ENOENT;
    if (s->name)
        name = strcpy(buf, s->name);    /* a valid name fits */
    r = bk_flow_gate(b, name, s->dest, stream, len, -1);
    if (r < 0)
        return r;
    if (!(s = bk_stream_find(b, stream)) || s->q.closing)
        return -ENOENT;         /* ended while we waited */
    if (s->ours && !s->opened)
        flags = BK_F_OPEN | (name ? BK_F_NAME : 0);
    dest = s->dest;
    if (bk_conn_attached(b)) {
        r = bk_send_queued(b, stream, flags, name, dest, data, len, fds,
                           nfds, NULL);
        bk_conn_kick(b);
        return r < 0 ? r : 0;
    }
    bk_in_watch_begin(b, stream, false);
    r = bk_send_blocking(b, stream, flags, name, dest, data, len, fds, nfds,
                         -1, NULL);
    return bk_send_finish(b, r);
}

/* A CLOSE frame for stream with reason err (0 or a negative errno). */
static int close_stream(broker_t *b, uint32_t stream, int err)
{
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov = { hdr, sizeof(hdr) };
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CLOSE,
                   .stream = stream, .aux = bk_err_to_wire(err) };
    struct bk_stream *s;
    bool tell;
    int r;

    if (!b)
        return -EINVAL;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    s = bk_stream_find(b, stream);
    if (!s || s->q.closing)
        return -ENOENT;
    bk_in_drop_stream(b, stream);
    tell = s->q.wire || !s->ours || !bk_list_empty(&s->q.msgs);
    if (bk_conn_attached(b)) {
        if (tell) {
            r = bk_out_queue_close(b, stream, err, &s->q);
            if (r == 0)
                s->q.closing = true;
        } else {
            bk_stream_forget(b, s);
        }
        bk_conn_kick(b);
        return r;
    }
    bk_stream_forget(b, s);
    if (!tell)
        return 0;
    bk_hdr_encode(&h, hdr);
    return bk_out_send_direct(b, &iov, 1, NULL, 0, -1);
}

BROKER_API int broker_stream_close(broker_t *b, uint32_t stream)
{
    return close_stream(b, stream, 0);
}

BROKER_API int broker_reply(broker_t *b, const broker_msg_t *req,
                            const void *data, size_t len, const int *fds,
                            unsigned nfds)
{
    struct bk_stream *s;
    uint32_t sid;
    int r = bk_send_check(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (!req || req->kind != BROKER_MSG_DATA ||
        (req->flags & BROKER_MSGF_CLOSE))
        return -EINVAL;
    sid = req->stream;
    s = bk_stream_find(b, sid);
    if (!s || s->q.closing || (s->ours && !s->opened))
        return -ENOENT;
    if ((r = bk_flow_gate(b, NULL, req->source, sid, len, -1)) < 0)
        return r;
    if (!(s = bk_stream_find(b, sid)) || s->q.closing)
        return -ENOENT;         /* ended while we waited */
    if (bk_conn_attached(b)) {
        r = bk_send_queued(b, sid, BK_F_CLOSE, NULL, 0, data, len, fds,
                           nfds, NULL);
        s = bk_stream_find(b, sid);
        if (r == 0 && s)
            bk_stream_forget(b, s);
        else if (r == BK_SEND_QUEUED && s)
            s->q.closing = true;
        bk_conn_kick(b);
        return r < 0 ? r : 0;
    }
    bk_in_watch_begin(b, sid, false);
    r = bk_send_blocking(b, sid, BK_F_CLOSE, NULL, 0, data, len, fds, nfds,
                         -1, NULL);
    if (r == 0 && (s = bk_stream_find(b, sid)))
        bk_stream_forget(b, s);
    return bk_send_finish(b, r);
}

BROKER_API bool broker_msg_is_request(const broker_msg_t *msg)
{
    uint32_t f;

    if (!msg || msg->kind != BROKER_MSG_DATA)
        return false;
    f = msg->flags;
    if ((f & BROKER_MSGF_CHUNK) && !(f & BROKER_MSGF_LAST))
        return false;           /* a piece: CLOSE may still come */
    return (f & (BROKER_MSGF_OPEN | BROKER_MSGF_CLOSE | BROKER_MSGF_TOPIC))
           == BROKER_MSGF_OPEN;
}

BROKER_API int broker_reply_error(broker_t *b, const broker_msg_t *req,
                                  int err)
{
    if (!b || !req || req->kind != BROKER_MSG_DATA ||
        (req->flags & BROKER_MSGF_CLOSE) || err >= 0)
        return -EINVAL;
    return close_stream(b, req->stream, err);
}

static int buf_send(broker_t *b, uint8_t flags, const char *name,
                    uint64_t dest, broker_buf_t *buf, size_t len)
{
    uint8_t desc[BK_SHM_DESC_SIZE];
    struct bk_sbuf *sb;
    int r;

    if (!b || !buf)
        return -EINVAL;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    r = bk_shm_buf_desc(b, buf, len, desc, &sb);
    if (r < 0)
        return r;
    return bk_send_oneway(b, flags | BK_F_SHM, name, dest, desc,
                          sizeof(desc), NULL, 0, sb);
}

BROKER_API int broker_buf_send(broker_t *b, const char *name,
                               broker_buf_t *buf, size_t len)
{
    size_t nl;

    if (b && !bk_conn_name_ok(b, name, &nl))
        return -EINVAL;
    return buf_send(b, BK_F_OPEN | BK_F_NAME | BK_F_CLOSE, name, 0, buf,
                    len);
}

BROKER_API int broker_buf_send_id(broker_t *b, uint64_t id,
                                  broker_buf_t *buf, size_t len)
{
    if (id == 0)
        return -EINVAL;
    return buf_send(b, BK_F_OPEN | BK_F_CLOSE, NULL, id, buf, len);
}

BROKER_API int broker_recv(broker_t *b, broker_msg_t **msg, int timeout_ms)
{
    int64_t deadline = 0;
    bool tried = false, timed = false;

    if (!b || !msg)
        return -EINVAL;
    *msg = NULL;
    if (bk_conn_attached(b))
        return -EBUSY;
    if (b->closing)
        return -ECANCELED;
    for (;;) {
        struct bk_msg *m = bk_in_pop(b);
        int r;

        if (m) {
            if (bk_out_release_pending(b) && !b->io.err)
                bk_out_flush(b, false, BK_FLUSH_BUDGET);
            if (b->rc && m->pub.sub_id)
                m->pub.sub_id = bk_recon_sub_user(b, m->pub.sub_id);
            *msg = &m->pub;
            return 0;
        }
        if (b->io.err && b->rc) {
            r = bk_recon_recv(b, &m, timeout_ms);
            if (r == 0)
                *msg = &m->pub;
            return r;
        }
        if (b->io.err)
            return b->io.err;
        if (!tried) {
            tried = true;
            r = bk_in_first_pump(b);
            if (r != 0)
                continue;
        }
        if (!timed) {           /* the clock only once we must wait */
            deadline = bk_io_deadline(timeout_ms < 0 ? -1 : timeout_ms);
            timed = true;
        }
        r = bk_in_wait(b, false, deadline);
        if (r < 0 && !bk_in_has_msgs(b) && !(b->rc && b->io.err))
            return r;
        tried = false;
    }
}

/* A request to name or, with name NULL, to client id; then its reply. */
static int call(broker_t *b, const char *name, uint64_t id, const void *data,
                size_t len, const int *fds, unsigned nfds,
                broker_msg_t **reply, int timeout_ms)
{
    int64_t deadline = bk_io_deadline(timeout_ms);
    struct bk_stream *s;
    struct bk_msg *m;
    uint32_t sid;
    size_t nl;
    int r;

    if (!reply)
        return -EINVAL;
    *reply = NULL;
    r = bk_send_check(b, data, len, fds, nfds);
    if (r < 0)
        return r;
    if (bk_conn_attached(b))
        return -EBUSY;
    if (name ? !bk_conn_name_ok(b, name, &nl) : id == 0)
        return -EINVAL;
    r = bk_flow_gate(b, name, id, 0, len, deadline);
    if (r < 0)
        return r;
    r = bk_stream_alloc_id(b, &sid);
    if (r < 0)
        return r;
    s = bk_stream_add(b, sid);
    if (!s)
        return -ENOMEM;
    s->opened = true;
    bk_in_watch_begin(b, sid, true);
    r = bk_send_blocking(b, sid, name ? BK_F_OPEN | BK_F_NAME : BK_F_OPEN,
                         name, name ? 0 : id, data, len, fds, nfds, deadline,
                         NULL);
    if (r == -ECANCELED)
        r = 0;
    while (r == 0 && !bk_in_watch_caught(b))
        r = bk_in_wait(b, false, deadline);
    m = bk_in_watch_end(b);
    if (m) {
        if (m->pub.kind == BROKER_MSG_DATA) {
            *reply = &m->pub;
            r = 0;
        } else {
            r = m->pub.code ? m->pub.code : -ENODATA;
            bk_msg_free(m);
        }
    } else {
        bk_in_abort_stream(b, sid, r == -ETIMEDOUT || r == -ENOBUFS
                                   ? r : -ECANCELED);
    }
    if (!b->io.err)
        bk_out_flush(b, false, BK_FLUSH_BUDGET);
    return r;
}

BROKER_API int broker_call_fds(broker_t *b, const char *name,
                               const void *data, size_t len, const int *fds,
                               unsigned nfds, broker_msg_t **reply,
                               int timeout_ms)
{
    if (!name)
        return -EINVAL;
    return call(b, name, 0, data, len, fds, nfds, reply, timeout_ms);
}

BROKER_API int broker_call_id(broker_t *b, uint64_t id, const void *data,
                              size_t len, broker_msg_t **reply,
                              int timeout_ms)
{
    return call(b, NULL, id, data, len, NULL, 0, reply, timeout_ms);
}

BROKER_API int broker_call(broker_t *b, const char *name, const void *data,
                           size_t len, broker_msg_t **reply, int timeout_ms)
{
    return broker_call_fds(b, name, data, len, NULL, 0, reply, timeout_ms);
}

BROKER_API size_t broker_queued(const broker_t *b)
{
    uint64_t q = b && b->in ? bk_in_queued(b) : 0;

    return q > SIZE_MAX ? SIZE_MAX : (size_t)q;
}

BROKER_API void broker_msg_free(broker_msg_t *msg)
{
    struct bk_msg *m;

    if (!msg)
        return;
    m = bk_msg_of(msg);
    if (m->view) {
        /* the application frees it, not the library's own I/O: the
         * RELEASE record may be written right away */
        broker_t *b = bk_shmview_conn(m->view);

        bk_shmview_put(m->view, m->view_off);
        m->view = NULL;
        if (b && !b->io.err && !b->closing) {
            bk_out_flush(b, false, BK_FLUSH_BUDGET);
            bk_conn_kick(b);
        }
    }
    bk_msg_free(m);
}

