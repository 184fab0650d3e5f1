/*
 * router.c - where DATA and CLOSE frames go: opening streams to a name or a
 * client id, forwarding fragments as they arrive, closing streams, and
 * telling the survivors when a client disappears.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "error.h"
#include "log.h"
#include "monitor.h"
#include "policy.h"
#include "port.h"
#include "pubsub.h"
#include "router.h"
#include "server.h"
#include "shm.h"
#include "sockio.h"
#include "topic.h"
#include "user.h"

/* Tombstones may exceed the stream limit by this factor before the client
 * is cut off: they only live until the failed message's last fragment. */
#define TOMBSTONE_SLACK 2

static bk_st_table_t *table(bk_port_t *p)
{
    return &p->srv->streams;
}

/* The shared-memory descriptor of a DATA frame with BK_F_SHM. */
static const uint8_t *shm_desc(const bk_hdr_t *h, const uint8_t *payload)
{
    return payload + (h->flags & (BK_F_NAME | BK_F_TOPIC) ? h->aux : 0);
}

/* The payload bytes of a DATA frame that belong to the message. */
static uint64_t data_bytes(const bk_hdr_t *h)
{
    return h->flags & (BK_F_NAME | BK_F_TOPIC) ? h->length - h->aux
                                               : h->length;
}

/* A message failed at its first fragment (err: a negative errno): report it, and if fragments are
 * still to come, leave a tombstone that swallows them. */
static void reject(bk_port_t *from, const bk_hdr_t *h, const uint8_t *payload,
                   int err, const char *text)
{
    bk_stream_t *s;

    /* bounded: `from` is the cause, so it is not read while its own queue
     * is past the limit (port.c, notices) */
    bk_port_error(from, h->stream, err, text, from);
    if (h->flags & BK_F_SHM)
        bk_shm_undelivered(from, shm_desc(h, payload));
    if (!(h->flags & BK_F_MORE))
        return;
    if (from->streams.count >=
        from->srv->cfg->max_streams * TOMBSTONE_SLACK) {
        bk_port_protocol_error(from, -ENOSR, h->stream,
                               "too many failed messages in flight");
        return;
    }
    if (bk_st_open(table(from), from, from->id, h->stream, &from->streams,
                   NULL, 0, 0, NULL, &s) < 0) {
        bk_port_protocol_error(from, -ENOMEM, h->stream,
                               "out of memory");
        return;
    }
    s->end[0].in_msg = true;
    s->end[0].discard = true;
}

static bk_port_t *resolve(bk_port_t *from, const bk_hdr_t *h,
                          const uint8_t *payload, char *why, size_t whylen)
{
    bk_server_t *srv = from->srv;
    uint64_t id = h->dest;
    bk_port_t *to;

    if (h->flags & BK_F_NAME) {
        id = bk_names_lookup(&srv->names, (const char *)payload, h->aux);
        if (!id) {
            snprintf(why, whylen, "no client owns the name '%.*s'",
                     (int)h->aux, (const char *)payload);
            return NULL;
        }
    }
    to = bk_server_find(srv, id);
    if (!to || to->failed || to->hangup) {
        snprintf(why, whylen, "no client with id %" PRIu64, id);
        return NULL;
    }
    return to;
}

/* Count the reference `to` will hold (and introduce the segment) before
 * the descriptor is queued.  *body: what to queue instead for a receiver
 * that does not map segments (shm.h), else NULL.  Returns 0, -EMSGSIZE
 * (too large for such a receiver) or -ENOMEM: nothing counted, and the
 * caller gives the reference back and tells the sender (queue_failure). */
static int deliver_shm(bk_port_t *from, bk_port_t *to, const bk_hdr_t *h,
                       const uint8_t *payload, bk_obody_t **body)
{
    *body = NULL;
    if (!(h->flags & BK_F_SHM))
        return 0;
    return bk_shm_deliver(from, to, shm_desc(h, payload), body);
}

/* What the sender hears when a message could not be queued (err from
 * deliver_shm or the port). */
static const char *queue_failure(int err)
{
    switch (err) {
    case -EMSGSIZE:
        return "message exceeds the broker's limit for a receiver without "
               "shared memory";
    case -ENOBUFS:
        return "over a budget of the receiver or of the broker (fds in "
               "flight or shared-memory references held): the message "
               "was refused";
    case -EDQUOT:
        return "over this user's quota (fds in flight or shared-memory "
               "references held): the message was refused";
    default:
        return "broker out of memory: the message was dropped";
    }
}

/* Whether a failure to queue is the message's (refused: the sender hears
 * it), not the receiver's departure (-ECONNRESET: it hears that when the
 * receiver is closed). */
static bool queue_refused(int err)
{
    return err == -ENOMEM || err == -EMSGSIZE || err == -ENOBUFS ||
           err == -EDQUOT;
}

/* Queue one fragment of a stream for `to`.  Returns what bk_port_send
 * does: negative when nothing was queued (-EMSGSIZE, -ENOMEM, or the
 * receiver is going away); then a descriptor's reference went back to
 * the sender and the fds are closed. */
static int forward(bk_port_t *from, bk_port_t *to, uint32_t to_sid,
                   const bk_hdr_t *h, const uint8_t *payload, int *fds)
{
    bk_hdr_t o = *h;
    bk_obody_t *body;
    int r = deliver_shm(from, to, h, payload, &body);

    if (r < 0) {
        bk_close_fds(fds, h->nfds);
        bk_shm_undelivered(from, shm_desc(h, payload));
        return r;
    }
    o.source = from->id;
    o.dest = to->id;
    o.stream = to_sid;
    from->srv->stats.bytes_in += data_bytes(h);
    if (!(h->flags & BK_F_MORE))
        from->srv->stats.msgs_in++;
    bk_mon_tap(from, to, h->stream, &o, payload);
    if (body)       /* a failed send_body released the reference itself */
        return bk_port_send_body(to, &o, payload, body, from, false, NULL, 0);
    r = bk_port_send(to, &o, payload, fds, h->nfds, from);
    if (r < 0 && (h->flags & BK_F_SHM))
        bk_shm_unhold(from, to, shm_desc(h, payload));
    return r;
}

static bool over_limit(bk_port_t *from, bk_st_end_t *e, const bk_hdr_t *h)
{
    e->msg_bytes += data_bytes(h);
    return e->msg_bytes > from->srv->cfg->max_msg;
}

/* The message `h` belongs to cannot go on (err: a negative errno): the
 * sender hears err on its stream, the receiver sees the stream closed with
 * err (and drops what it has of the message), the rest of the message is
 * swallowed. */
static void reset_stream(bk_port_t *from, bk_st_end_t *e, const bk_hdr_t *h,
                         int err, const char *text, bool receiver_knows)
{
    bk_st_end_t *peer = bk_st_peer(e);

    bk_port_error(from, e->sid, err, text, from);
    if (peer && !peer->discard && receiver_knows) {
        bk_hdr_t c = {
            .version = BK_PROTO_VERSION, .type = BK_T_CLOSE,
            .stream = peer->sid, .aux = bk_err_to_wire(err),
            .source = from->id,
            .dest = peer->client, .length = (uint32_t)strlen(text),
        };
        bk_mon_tap(from, peer->owner, e->sid, &c, text);
        bk_port_send(peer->owner, &c, text, NULL, 0, from);
    }
    if (peer) {
        if (peer->in_msg)
            peer->discard = true;
        else
            bk_st_remove_end(table(from), peer);
    }
    if (h->flags & BK_F_MORE) {
        e->in_msg = true;
        e->discard = true;
    } else {
        bk_st_remove_end(table(from), e);
    }
}

/* The sender's message grew past max_msg. */
static void too_big(bk_port_t *from, bk_st_end_t *e, const bk_hdr_t *h)
{
    char text[96];

    snprintf(text, sizeof(text), "message exceeds the broker's limit of %"
             PRIu64 " bytes", from->srv->cfg->max_msg);
    reset_stream(from, e, h, -EMSGSIZE, text, true);
}

/* A fragment of e's message could not be queued (err: -ENOMEM, or
 * -EMSGSIZE for a shared-memory body too large for its receiver).  Later
 * fragments carry no offset, so the receiver would join the rest into a
 * corrupt message: the stream is reset at both ends instead.  (A receiver
 * that is going away, the other failure, tells the sender itself, with
 * ECONNRESET, when it is closed.) */
static void lost_fragment(bk_port_t *from, bk_st_end_t *e, const bk_hdr_t *h,
                          int err)
{
    reset_stream(from, e, h, err, queue_failure(err), true);
}

/* allow-send: a name is checked as given; a client id passes if the
 * sender may send to one of the names the target owns (or it owns none). */
static bool may_send(bk_port_t *from, bk_port_t *to, const bk_hdr_t *h,
                     const uint8_t *payload)
{
    const bk_policy_t *pol = &from->srv->cfg->policy;
    bk_policy_peer_t who = { .uid = from->uid, .gid = from->gid };
    const bk_name_t *n;

    if (!bk_policy_has_send_rules(pol))
        return true;
    if (h->flags & BK_F_NAME)
        return bk_policy_may_send(pol, &who, (const char *)payload, h->aux);
    if (bk_list_empty(&to->names.head))
        return true;
    bk_list_for_each(n, &to->names.head, bk_name_t, owned_link)
        if (bk_policy_may_send(pol, &who, n->name, n->len))
            return true;
    return false;
}

/* A stream refused because `from` or `to` has max-streams open: logged
 * once per client that is full. */
static void streams_refused(bk_port_t *from, bk_port_t *to)
{
    uint32_t max = from->srv->cfg->max_streams;

    if (from->streams.count >= max)
        bk_port_refused(from, BK_REFUSE_STREAMS, "max-streams reached "
                        "(%u open streams); new streams are refused", max);
    else
        bk_port_refused(to, BK_REFUSE_STREAMS, "max-streams reached "
                        "(%u open streams); streams from client %" PRIu64
                        " (%s) are refused", max, from->id, from->comm);
}

/* The stream budgets of the opener (user.h): max-streams-per-peer (ENOSR,
 * streams one client holds open towards one receiver, so that one caller
 * cannot fill a service's stream table for everyone; every client),
 * max-streams-per-uid-peer (EDQUOT, the same for all clients of one
 * user, so that more connections do not help) and max-streams-per-uid
 * (EDQUOT, streams one user's clients opened: streams opened towards a
 * user do not count against it, or others could use up its quota).
 * Returns 0 or the refusal, counted and logged. */
static int stream_budget(bk_port_t *from, bk_port_t *to)
{
    const bk_conf_t *cfg = from->srv->cfg;
    uint32_t mine = bk_st_pair_count(table(from), BK_ST_PAIR_CLIENT,
                                     from->id, to->id);
    uint32_t ours = bk_st_pair_count(table(from), BK_ST_PAIR_UID,
                                     from->uid, to->id);

    if (!bk_user_fits(mine, 1, cfg->max_streams_per_peer)) {
        bk_port_quota(from, BK_QUOTA_PEER_STREAMS, "max-streams-per-peer "
                      "reached: %u streams open towards client %" PRIu64
                      " (%s); refused (ENOSR)", mine, to->id, to->comm);
        return -ENOSR;
    }
    bk_port_quota_ok(from, BK_QUOTA_PEER_STREAMS);
    if (!bk_port_uid_fits(from, BK_QUOTA_UID_PEER_STREAMS, ours, 1,
                          cfg->max_streams_per_uid_peer,
                          "max-streams-per-uid-peer"))
        return -EDQUOT;
    if (from->acct && !bk_port_uid_fits(from, BK_QUOTA_STREAMS,
                                        from->acct->streams, 1,
                                        cfg->max_streams_per_uid,
                                        "max-streams-per-uid"))
        return -EDQUOT;
    return 0;
}

/* A whole one-way message: no stream outlives it.  One that cannot be
 * queued is refused to its sender (out of memory), or reported as lost
 * (its receiver is going away). */
static void send_whole(bk_port_t *from, bk_port_t *to, uint32_t to_sid,
                       const bk_hdr_t *h, const uint8_t *payload, int *fds)
{
    bk_hdr_t o = *h;
    bk_obody_t *body;
    int r;

    o.source = from->id;
    o.dest = to->id;
    o.stream = to_sid;
    from->srv->stats.bytes_in += data_bytes(h);
    from->srv->stats.msgs_in++;
    r = deliver_shm(from, to, h, payload, &body);
    if (r < 0) {
        bk_close_fds(fds, h->nfds);
        reject(from, h, payload, r, queue_failure(r));
        return;
    }
    bk_mon_tap(from, to, h->stream, &o, payload);
    if (body) {     /* a failed send_body released the reference itself */
        r = bk_port_send_body(to, &o, payload, body, from, false, NULL,
                              h->stream);
    } else {
        r = bk_port_send_oneway(to, &o, payload, fds, h->nfds, from,
                                h->stream);
        if (r < 0 && (h->flags & BK_F_SHM))
            bk_shm_unhold(from, to, shm_desc(h, payload));
    }
    if (queue_refused(r))
        bk_port_error(from, h->stream, r, queue_failure(r), from);
    else if (r < 0)     /* folded past from's limit (port.c, notices) */
        bk_port_oneway_lost(to, from, h->stream);
    else
        bk_port_note_busy(to, from, h, payload);
}

/* First fragment with OPEN: a new stream to a name or a client id. */
static void open_stream(bk_port_t *from, const bk_hdr_t *h,
                        const uint8_t *payload, int *fds)
{
    const bk_conf_t *cfg = from->srv->cfg;
    char why[BK_MAX_NAME + 64];
    bk_port_t *to;
    bk_stream_t *s;
    uint32_t to_sid;
    int r;

    if (bk_st_find(table(from), from->id, h->stream)) {
        bk_close_fds(fds, h->nfds);
        bk_port_protocol_error(from, -EPROTO, h->stream,
                               "OPEN on a stream id already in use");
        return;
    }
    to = resolve(from, h, payload, why, sizeof(why));
    if (!to) {
        bk_close_fds(fds, h->nfds);
        reject(from, h, payload, -ENOENT, why);
        return;
    }
    if (!may_send(from, to, h, payload)) {
        bk_close_fds(fds, h->nfds);
        bk_port_refused(from, BK_REFUSE_SEND, "allow-send refuses sending "
                        "to client %" PRIu64 " (%s)", to->id, to->comm);
        reject(from, h, payload, -EACCES, "not allowed to send there");
        return;
    }
    if (data_bytes(h) > cfg->max_msg) {
        bk_close_fds(fds, h->nfds);
        reject(from, h, payload, -EMSGSIZE,
               "message exceeds the broker's limit");
        return;
    }
    to_sid = bk_port_alloc_sid(to);
    if ((h->flags & BK_F_CLOSE) && !(h->flags & BK_F_MORE)) {
        send_whole(from, to, to_sid, h, payload, fds);
        return;
    }
    if (from->streams.count >= cfg->max_streams ||
        to->streams.count >= cfg->max_streams) {
        bk_close_fds(fds, h->nfds);
        streams_refused(from, to);
        reject(from, h, payload, -ENOSR,
               from->streams.count >= cfg->max_streams ?
               "too many open streams" :
               "the receiver has too many open streams");
        return;
    }
    if ((r = stream_budget(from, to)) < 0) {
        bk_close_fds(fds, h->nfds);
        reject(from, h, payload, r, r == -EDQUOT ?
               "this user has too many open streams (towards the receiver, "
               "or in all)" :
               "too many open streams towards the receiver");
        return;
    }
    if (bk_st_open(table(from), from, from->id, h->stream, &from->streams,
                   to, to->id, to_sid, &to->streams, &s) < 0) {
        bk_close_fds(fds, h->nfds);
        reject(from, h, payload, -ENOMEM, "out of memory");
        return;
    }
    if (bk_st_pair(table(from), s, from->uid) < 0) {
        bk_st_close(table(from), &s->end[0]);
        bk_close_fds(fds, h->nfds);
        reject(from, h, payload, -ENOMEM, "out of memory");
        return;
    }
    s->opened_ms = bk_now_ms();
    s->end[0].in_msg = h->flags & BK_F_MORE;
    s->end[0].msg_bytes = data_bytes(h);
    s->end[0].bytes += data_bytes(h);
    r = forward(from, to, to_sid, h, payload, fds);
    if (queue_refused(r))
        reset_stream(from, &s->end[0], h, r, queue_failure(r), false);
    else if (r >= 0)
        bk_port_note_busy(to, from, h, payload);
}

/* ---- publications ------------------------------------------------------ */

static bool may_publish(const bk_port_t *from, const char *topic, size_t len)
{
    bk_policy_peer_t who = { .uid = from->uid, .gid = from->gid };

    return bk_policy_may_publish(&from->srv->cfg->policy, &who, topic, len);
}

/* Why a publication is refused: its error on the stream (and *why), or
 * 0. */
static int pub_refusal(bk_port_t *from, const bk_hdr_t *h,
                       const uint8_t *payload, const char **why)
{
    const char *topic = (const char *)payload;
    const bk_conf_t *cfg = from->srv->cfg;

    if (!bk_topic_valid(topic, h->aux)) {
        *why = "invalid topic";
        return -EINVAL;
    }
    if (bk_topic_reserved(topic, h->aux)) {
        *why = "the $broker topics are the broker's own";
        return -EACCES;
    }
    if (!may_publish(from, topic, h->aux)) {
        *why = "not allowed to publish to this topic";
        return -EACCES;
    }
    if (data_bytes(h) > cfg->max_msg) {
        *why = "message exceeds the broker's limit";
        return -EMSGSIZE;
    }
    if ((h->flags & BK_F_MORE) && from->streams.count >= cfg->max_streams) {
        *why = "too many open streams";
        return -ENOSR;
    }
    return bk_pub_addressed(from, h, payload, why);
}

/* A tombstone that swallows the rest of a message nobody gets. */
static void swallow(bk_port_t *from, const bk_hdr_t *h)
{
    bk_stream_t *s;

    if (bk_st_open(table(from), from, from->id, h->stream, &from->streams,
                   NULL, 0, 0, NULL, &s) < 0) {
        bk_port_protocol_error(from, -ENOMEM, h->stream, "out of memory");
        return;
    }
    s->end[0].in_msg = true;
    s->end[0].discard = true;
}

/* First fragment of a publication (OPEN|TOPIC). */
static void publish(bk_port_t *from, const bk_hdr_t *h,
                    const uint8_t *payload, int *fds)
{
    bool more = h->flags & BK_F_MORE;
    const char *why;
    bk_pub_t *rec = NULL;
    bk_stream_t *s;
    int r;

    if (bk_st_find(table(from), from->id, h->stream)) {
        bk_close_fds(fds, h->nfds);
        bk_port_protocol_error(from, -EPROTO, h->stream,
                               "OPEN on a stream id already in use");
        return;
    }
    r = pub_refusal(from, h, payload, &why);
    if (r < 0) {
        bk_close_fds(fds, h->nfds);
        if (r == -EACCES)
            bk_port_refused(from, BK_REFUSE_PUBLISH, "may not publish to "
                            "'%.*s'", (int)h->aux, (const char *)payload);
        else if (r == -ENOSR)
            streams_refused(from, from);
        reject(from, h, payload, r, why);
        return;
    }
    from->srv->stats.bytes_in += data_bytes(h);
    from->srv->stats.msgs_in += !more;
    r = bk_pub_fanout(from->srv, from, h, payload, fds, more ? &rec : NULL);
    if (r == -ENOMEM)
        bk_port_error(from, h->stream, -ENOMEM, "broker out of memory", from);
    if (!more)
        return;
    if (!rec) {
        swallow(from, h);
        return;
    }
    if (bk_st_open(table(from), from, from->id, h->stream, &from->streams,
                   NULL, 0, 0, NULL, &s) < 0) {
        bk_pub_abort(from, rec, -ENOMEM, "broker out of memory");
        bk_pub_free(rec);
        bk_port_protocol_error(from, -ENOMEM, h->stream, "out of memory");
        return;
    }
    s->opened_ms = bk_now_ms();
    s->pub = rec;
    s->end[0].in_msg = true;
    s->end[0].msg_bytes = data_bytes(h);
    s->end[0].bytes = data_bytes(h);
}

/* The publication on end e is over (or abandoned): the record goes. */
static void pub_done(bk_port_t *from, bk_st_end_t *e)
{
    bk_pub_free(e->stream->pub);
    e->stream->pub = NULL;
    bk_st_remove_end(table(from), e);
}

static void pub_continuation(bk_port_t *from, bk_st_end_t *e,
                             const bk_hdr_t *h, const uint8_t *payload)
{
    bool last = !(h->flags & BK_F_MORE);

    if (last && !(h->flags & BK_F_CLOSE)) {
        /* the receivers hear ECONNRESET when the port goes */
        bk_port_protocol_error(from, -EPROTO, h->stream,
                               "a publication must end with CLOSE");
        return;
    }
    e->msg_bytes += h->length;
    if (e->msg_bytes > from->srv->cfg->max_msg) {
        char text[96];
        snprintf(text, sizeof(text), "message exceeds the broker's limit "
                 "of %" PRIu64 " bytes", from->srv->cfg->max_msg);
        bk_port_error(from, h->stream, -EMSGSIZE, text, from);
        bk_pub_abort(from, e->stream->pub, -EMSGSIZE, text);
        bk_pub_free(e->stream->pub);
        e->stream->pub = NULL;
        if (last)
            bk_st_remove_end(table(from), e);
        else
            e->discard = true;
        return;
    }
    e->bytes += h->length;
    from->srv->stats.bytes_in += h->length;
    from->srv->stats.msgs_in += last;
    bk_pub_forward(from, e->stream->pub, h, payload);
    if (last)
        pub_done(from, e);
}

/* The end of a message with CLOSE ends the stream. */
static void after_message(bk_port_t *from, bk_st_end_t *e, const bk_hdr_t *h)
{
    e->in_msg = false;
    if (h->flags & BK_F_CLOSE)
        bk_st_close(table(from), e);
}

/* First fragment of a further message on an existing stream. */
static void next_message(bk_port_t *from, const bk_hdr_t *h,
                         const uint8_t *payload, int *fds)
{
    bk_st_end_t *e = bk_st_find(table(from), from->id, h->stream);
    bk_st_end_t *peer;
    int r;

    if (e && e->in_msg) {
        bk_close_fds(fds, h->nfds);
        bk_port_protocol_error(from, -EPROTO, h->stream,
              "first fragment while the previous message is unfinished");
        return;
    }
    peer = e ? bk_st_peer(e) : NULL;
    if (!peer || peer->discard) {
        bk_close_fds(fds, h->nfds);
        if (e)
            bk_st_remove_end(table(from), e);
        reject(from, h, payload, -ENOENT,
               "no such stream (closed, or never opened)");
        return;
    }
    e->msg_bytes = 0;
    if (over_limit(from, e, h)) {
        bk_close_fds(fds, h->nfds);
        too_big(from, e, h);
        return;
    }
    e->bytes += data_bytes(h);
    r = forward(from, peer->owner, peer->sid, h, payload, fds);
    if (r >= 0)
        bk_port_note_busy(peer->owner, from, h, payload);
    if (queue_refused(r)) {
        lost_fragment(from, e, h, r);
        return;
    }
    if (h->flags & BK_F_MORE)
        e->in_msg = true;
    else
        after_message(from, e, h);
}

static void continuation(bk_port_t *from, const bk_hdr_t *h,
                         const uint8_t *payload)
{
    bk_st_end_t *e = bk_st_find(table(from), from->id, h->stream);
    bk_st_end_t *peer;
    int r;

    if (!e || !e->in_msg) {
        bk_port_protocol_error(from, -EPROTO, h->stream,
              "continuation fragment without a first fragment");
        return;
    }
    if (e->discard) {
        if (!(h->flags & BK_F_MORE))
            bk_st_remove_end(table(from), e);
        return;
    }
    if (e->stream->pub) {
        pub_continuation(from, e, h, payload);
        return;
    }
    peer = bk_st_peer(e);
    if (!peer) {                /* cannot happen: a lone end is a tombstone */
        bk_st_remove_end(table(from), e);
        return;
    }
    if (over_limit(from, e, h)) {
        too_big(from, e, h);
        return;
    }
    e->bytes += h->length;
    r = forward(from, peer->owner, peer->sid, h, payload, NULL);
    if (queue_refused(r)) {
        lost_fragment(from, e, h, r);
        return;
    }
    if (!(h->flags & BK_F_MORE))
        after_message(from, e, h);
}

static void close_stream(bk_port_t *from, const bk_hdr_t *h,
                         const uint8_t *payload)
{
    bk_st_end_t *e = bk_st_find(table(from), from->id, h->stream);
    bk_st_end_t *peer;

    /* Closing a stream the peer already closed is a harmless race. */
    if (!e)
        return;
    /* A sender that gives up a message the peer no longer wants ends it
     * with CLOSE instead of a last fragment: the tombstone goes. */
    if (e->discard) {
        bk_st_remove_end(table(from), e);
        return;
    }
    if (e->stream->pub) {       /* the publisher abandons the message */
        bk_pub_forward(from, e->stream->pub, h, payload);
        pub_done(from, e);
        return;
    }
    peer = bk_st_peer(e);
    if (peer && !peer->discard) {
        bk_hdr_t c = *h;
        c.source = from->id;
        c.dest = peer->client;
        c.stream = peer->sid;
        bk_mon_tap(from, peer->owner, h->stream, &c, payload);
        bk_port_send(peer->owner, &c, payload, NULL, 0, from);
    }
    bk_st_close(table(from), e);
}

/* Whether address a (len bytes) is the broker's listening address. */
static bool is_listen_addr(const bk_server_t *s, const struct sockaddr_un *a,
                           socklen_t len)
{
    return s->laddr_len > sizeof(sa_family_t) && len == s->laddr_len &&
           memcmp(a, &s->laddr, len) == 0;
}

/* Whether fd is the broker's listening socket or a client's end of a
 * connection to it.  Passed on, such a descriptor can keep a connection
 * alive from inside a queue: a client that queues its own connection to
 * itself and dies is never seen to go, and keeps its names, slots and
 * memory.  Not a socket: getsockname fails at once. */
static bool is_broker_socket(const bk_server_t *s, int fd)
{
    struct sockaddr_un a;
    socklen_t len = sizeof(a);

    if (getsockname(fd, (struct sockaddr *)&a, &len) == 0 &&
        is_listen_addr(s, &a, len))
        return true;
    len = sizeof(a);
    return getpeername(fd, (struct sockaddr *)&a, &len) == 0 &&
           is_listen_addr(s, &a, len);
}

/* A message carrying one of the broker's own sockets is refused (EBADF)
 * with all its descriptors: a new stream or publication as any refused
 * one, a further message on an open stream by resetting that stream. */
static bool refuse_broker_fds(bk_port_t *from, const bk_hdr_t *h,
                              const uint8_t *payload, int *fds)
{
    static const char text[] = "a file descriptor is a connection to this "
                               "broker (or its socket): not passed on";

    for (unsigned i = 0; i < h->nfds; i++) {
        if (!is_broker_socket(from->srv, fds[i]))
            continue;
        bk_close_fds(fds, h->nfds);
        bk_router_refuse(from, h, payload, -EBADF, text);
        return true;
    }
    return false;
}

void bk_router_refuse(bk_port_t *from, const bk_hdr_t *h,
                      const uint8_t *payload, int err, const char *text)
{
    bk_st_end_t *e = (h->flags & (BK_F_OPEN | BK_F_TOPIC)) ? NULL :
                     bk_st_find(table(from), from->id, h->stream);

    if (e && e->in_msg) {
        bk_port_protocol_error(from, -EPROTO, h->stream, "first fragment "
                               "while the previous message is unfinished");
    } else if (e && !e->discard && bk_st_peer(e)) {
        reset_stream(from, e, h, err, text, true);
    } else {
        if (e)                  /* the stream is gone at the other end */
            bk_st_remove_end(table(from), e);
        reject(from, h, payload, err, text);
    }
}

void bk_router_frame(bk_port_t *from, const bk_hdr_t *h,
                     const uint8_t *payload, int *fds, unsigned nfds)
{
    const char *why;

    (void)nfds;
    if (h->type == BK_T_DATA && (h->flags & BK_F_SHM) &&
        bk_shm_check(from, shm_desc(h, payload), &why) < 0) {
        bk_port_protocol_error(from, -EPROTO, h->stream, why);
        return;
    }
    if (h->type == BK_T_DATA && h->nfds &&
        refuse_broker_fds(from, h, payload, fds))
        return;
    if (h->type == BK_T_CLOSE)
        close_stream(from, h, payload);
    else if (h->flags & BK_F_CONT)
        continuation(from, h, payload);
    else if (h->flags & BK_F_TOPIC)
        publish(from, h, payload, fds);
    else if (h->flags & BK_F_OPEN)
        open_stream(from, h, payload, fds);
    else
        next_message(from, h, payload, fds);
}

void bk_router_port_gone(bk_port_t *p)
{
    bk_st_table_t *t = table(p);

    bk_st_end_t *e;

    while ((e = bk_st_list_first(&p->streams))) {
        bk_st_end_t *peer = bk_st_peer(e);

        if (e->stream->pub) {
            if (!p->srv->stopping)
                bk_pub_abort(p, e->stream->pub, -ECONNRESET,
                             "publisher disconnected");
            pub_done(p, e);
            continue;
        }
        if (peer && !peer->discard && !p->srv->stopping) {
            bk_port_t *op = peer->owner;
            bk_hdr_t h = {
                .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
                .stream = peer->sid, .aux = bk_err_to_wire(-ECONNRESET),
                .source = p->id,
                .dest = op->id,
            };
            static const char text[] = "peer disconnected";
            /* bounded: one per stream op holds (max-streams) */
            h.length = sizeof(text) - 1;
            op->errors++;
            bk_mon_tap(p, op, e->sid, &h, text);
            bk_port_send(op, &h, text, NULL, 0, NULL);
        }
        bk_st_close(t, e);
    }
}
