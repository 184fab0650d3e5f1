/*
 * send.c - libbroker layer 7: the way out of a DATA message.
 */
#include "config.h"
#include <errno.h>
#include <string.h>
#include "outq.h"
#include "stream.h"
#include "flow.h"
#include "shm.h"
#include "in.h"
#include "send.h"

int bk_send_check(const broker_t *b, const void *data, size_t len,
                  const int *fds, unsigned nfds)
{
    int r;

    if (!b || (len && !data) || (nfds && !fds))
        return -EINVAL;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    if (nfds > b->lim.max_fds || nfds > BK_MAX_FDS_HARD)
        return -EINVAL;
    if (len > b->lim.max_msg)
        return -EMSGSIZE;
    return 0;
}

/* An outgoing DATA message in the caller's memory (not owned). */
static struct bk_omsg data_msg(uint32_t sid, uint8_t flags, const char *name,
                               uint64_t dest, const void *data, size_t len,
                               const int *fds, unsigned nfds)
{
    return (struct bk_omsg){
        .type = BK_T_DATA, .flags = flags, .stream = sid, .dest = dest,
        .name = name, .namelen = name ? (uint8_t)strlen(name) : 0,
        .data = data, .len = len, .fds = fds, .nfds = nfds,
    };
}

/* Send m whole now, fragmenting it.  If it stops half way because the
 * broker ended the stream (-ECANCELED), an empty last fragment tells the
 * broker the message is over; after any other failure a CLOSE ends the
 * stream so the receiver drops the partial message. */
static int send_frames(broker_t *b, struct bk_omsg m, int64_t deadline)
{
    uint32_t sid = m.stream;
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov[3];
    struct bk_stream *s;
    int r = 0;

    while (!bk_out_done(&m)) {
        bk_hdr_t h;
        size_t c;
        int n;

        bk_out_plan(&m, b->pkt_cap, false, &h, &c);
        n = bk_out_iov(&m, &h, c, hdr, iov);
        r = bk_out_send_direct(b, iov, n, h.nfds ? m.fds : NULL, h.nfds,
                               deadline);
        if (r < 0)
            break;
        if (!m.started && (s = bk_stream_find(b, sid))) {
            s->q.wire = true;
            s->opened = true;
        }
        bk_out_advance(&m, c);
    }
    if (r < 0 && m.started && !b->io.err) {
        if (r == -ECANCELED) {
            bk_out_queue_terminator(b, sid, m.flags);
        } else {
            bk_out_queue_close(b, sid, r, NULL);
            if ((s = bk_stream_find(b, sid)))
                bk_stream_forget(b, s);
        }
    }
    return r;
}

/* BROKER_OPT_BATCH: add m (without fds, fitting one packet) to the
 * staged packet, writing that first if it is full.  0 (batched),
 * BK_OUT_UNBATCHED or a negative errno. */
static int send_batched(broker_t *b, const struct bk_omsg *m,
                        int64_t deadline)
{
    struct bk_stream *s;
    int r = bk_out_batch(b, m);

    if (r == BK_OUT_FULL) {
        r = bk_out_flush_wait(b, deadline);
        if (r < 0)
            return r;
        r = bk_out_batch(b, m);
    }
    if (r != 0)
        return BK_OUT_UNBATCHED;
    if ((s = bk_stream_find(b, m->stream)))
        s->q.wire = s->opened = true;
    return 0;
}

/* A shared-memory message is one frame, so when this fails the
 * descriptor was never sent. */
int bk_send_blocking(broker_t *b, uint32_t sid, uint8_t flags,
                     const char *name, uint64_t dest, const void *data,
                     size_t len, const int *fds, unsigned nfds,
                     int64_t deadline, struct bk_sbuf *sb)
{
    uint8_t desc[BK_SHM_DESC_SIZE];
    struct bk_omsg m;
    int r = bk_shm_auto(b, &data, &len, &flags, nfds, deadline, &sb, desc);

    if (r < 0)
        return r;
    m = data_msg(sid, flags, name, dest, data, len, fds, nfds);
    r = BK_OUT_UNBATCHED;
    if (b->opt_batch && nfds == 0)
        r = send_batched(b, &m, deadline);
    if (r == BK_OUT_UNBATCHED)
        r = send_frames(b, m, deadline);
    if (r < 0 && sb)
        bk_shm_unsent(sb);
    return r;
}

static int queue_msg(broker_t *b, uint32_t sid, uint8_t flags,
                     const char *name, uint64_t dest, const void *data,
                     size_t len, const int *fds, unsigned nfds,
                     struct bk_sbuf *sb)
{
    struct bk_omsg tmp = data_msg(sid, flags, name, dest, data, len, fds,
                                  nfds);
    struct bk_stream *s = bk_stream_find(b, sid);
    bool created = false;
    struct bk_omsg *m;
    bk_hdr_t h;
    size_t c;
    int r;

    /* without fds it joins the packet the loop writes before it waits
     * (async.c); while that is full and the socket too, it queues */
    r = nfds ? BK_OUT_UNBATCHED : bk_out_batch(b, &tmp);
    if (r == BK_OUT_FULL && bk_out_flush(b, true, BK_FLUSH_BUDGET) == 0)
        r = bk_out_batch(b, &tmp);
    if (r == 0) {
        if (s)
            s->q.wire = s->opened = true;
        return 0;
    }
    if (nfds && !bk_out_pending(b) &&
        bk_out_plan(&tmp, b->pkt_cap, false, &h, &c) && c == len) {
        uint8_t hdr[BK_HDR_SIZE];
        struct iovec iov[3];
        int n = bk_out_iov(&tmp, &h, c, hdr, iov);

        r = bk_io_send(&b->io, iov, n, fds, nfds);
        if (r == 0) {
            if (s)
                s->q.wire = s->opened = true;
            return 0;
        }
        if (r != -EAGAIN)
            return r;
    }
    if (!s) {
        s = bk_stream_add(b, sid);
        if (!s)
            return -ENOMEM;
        created = true;
    }
    r = bk_out_copy(BK_T_DATA, flags, sid, 0, dest, name, tmp.namelen, data,
                    len, fds, nfds, &m);
    if (r < 0) {
        if (created)
            bk_stream_forget(b, s);
        return r;
    }
    m->shm = sb;
    bk_out_push(b, &s->q, m);
    s->opened = true;
    return BK_SEND_QUEUED;
}

/* A queued descriptor keeps its reference until it is staged or
 * dropped. */
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

int bk_send_finish(broker_t *b, int r)
{
    struct bk_msg *m = bk_in_watch_end(b);

    if (r == -ECANCELED && m) {
        r = m->pub.code ? m->pub.code : -EPIPE;
        bk_msg_free(m);
    } else if (m) {
        bk_in_push(b, m);
    }
    /* frames the library queued meanwhile; batching writes them with
     * its packet (bk_out_batch leaves them first in line) */
    if (!b->io.err && !b->opt_batch)
        bk_out_flush(b, false, BK_FLUSH_BUDGET);
    return r;
}

int bk_send_oneway(broker_t *b, uint8_t flags, const char *name,
                   uint64_t dest, const void *data, size_t len,
                   const int *fds, unsigned nfds, struct bk_sbuf *sb)
{
    uint32_t sid;
    int r = flags & BK_F_TOPIC ? 0 : bk_flow_gate(b, name, dest, 0, len, -1);

    if (r == 0)
        r = bk_stream_alloc_id(b, &sid);
    if (r < 0) {
        if (sb)
            bk_shm_unsent(sb);
        return r;
    }
    if (bk_conn_attached(b)) {
        r = bk_send_queued(b, sid, flags, name, dest, data, len, fds, nfds,
                           sb);
        if (r == BK_SEND_QUEUED)
            bk_stream_find(b, sid)->q.closing = true;
        bk_conn_kick(b);
        return r < 0 ? r : 0;
    }
    bk_in_watch_begin(b, sid, false);
    r = bk_send_blocking(b, sid, flags, name, dest, data, len, fds, nfds,
                         -1, sb);
    return bk_send_finish(b, r);
}
