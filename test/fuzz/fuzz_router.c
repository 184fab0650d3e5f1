/*
 * fuzz_router.c - libFuzzer target for the router (router.c) and what it
 * drives: the stream table, names, subscriptions and the fan-out of
 * publications (prefix fzr_).  Built by `make fuzz`.
 *
 * No sockets: the port double of the unit tests (test/unit/port_double.c)
 * stands in for port.c and server.c, so a frame "sent" to a client is
 * logged.  The input is a short configuration and then a sequence of
 * steps; each picks a fake client and makes it send a DATA or CLOSE frame
 * (header fields, name or topic, payload and fds from the input), register
 * or release a name, subscribe or unsubscribe, register a shared-memory
 * segment (a sealed memfd), release references or drop a segment,
 * disconnect, or a new client connect (mapping segments or not).  Frames are first validated as port.c does
 * (bk_frame_check_from_client); one that fails is the client's protocol
 * error, and like every client that failed it is closed at the end of the
 * step (what bk_server_reap does).
 *
 * After each step:
 *   - every logged frame went to a client in the world, carries its
 *     version, and is addressed to that client: dest is its id, or for a
 *     publication's fragment one of its subscription ids;
 *   - a stream's frames go where the stream leads: a model, built from the
 *     OPEN fragments delivered, maps each (client, stream id) to the other
 *     end; an OPEN goes to the id or the name's owner it names;
 *   - a publication reaches exactly the subscriptions that match its topic
 *     (one member of each queue group) and nobody else;
 *   - the stream table, the names and the subscriptions are consistent
 *     with every client's lists and counters, a client's live streams,
 *     names and subscriptions are within its limits, and nothing refers to
 *     a client that is gone;
 *   - shared memory adds up: the broker's counters of segments, bytes
 *     and held references are the sums over the clients, each client
 *     within max-segments and max-shm;
 *   - every fd a frame carried is closed (delivered fds are closed by the
 *     double as it logs them).
 * At the end every client disconnects, all tables must be empty, no fd
 * is left open and LeakSanitizer reports anything left allocated.
 * Any failed check aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "error.h"
#include "frame.h"
#include "log.h"
#include "names.h"
#include "port_double.h"
#include "proto.h"
#include "pubsub.h"
#include "router.h"
#include "shm.h"
#include "sockio.h"
#include "streams.h"
#include "subs.h"
#include "topic.h"

#define fzr_require(cond) do { if (!(cond)) abort(); } while (0)

#define FZR_LIVE        6       /* clients connected at once, at most */
#define FZR_MAP         512     /* stream ends remembered by the model */
#define FZR_FDS         4       /* fds on one frame, at most */
#define FZR_PAYLOAD     64

/* ---- the input ---------------------------------------------------------- */

typedef struct fzr_in {
    const uint8_t *p;
    size_t len, off;
} fzr_in_t;

static uint8_t fzr_byte(fzr_in_t *in)
{
    return in->off < in->len ? in->p[in->off++] : 0;
}

static uint64_t fzr_bytes(fzr_in_t *in, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)fzr_byte(in) << (8 * i);
    return v;
}

static const char *const fzr_names[] = { "a", "b", "svc.x", "c:1" };
static const char *const fzr_topics[] = {
    "a", "a.b", "a.b.c", "x.y", "$broker.names", "$broker.x", "b.a",
};
static const char *const fzr_patterns[] = {
    "a", "a.b", "a.*", "a.>", ">", "*", "*.b", "$broker.>",
    "$broker.names", "$broker.clients", "x.*", "a.b.c",
};
static const char *const fzr_groups[] = { "g1", "g2" };

/* A string from the table, or (one time in eight) raw input bytes. */
static size_t fzr_pick_str(fzr_in_t *in, const char *const *tab, size_t n,
                           char *out, size_t cap)
{
    uint8_t b = fzr_byte(in);
    size_t len;

    if ((b & 7) == 7) {
        len = (size_t)(b >> 3) % cap;
        for (size_t i = 0; i < len; i++)
            out[i] = (char)fzr_byte(in);
        return len;
    }
    len = strlen(tab[(b >> 3) % n]);
    memcpy(out, tab[(b >> 3) % n], len);
    return len;
}

#define FZR_PICK_N(in, tab, out, cap) \
    fzr_pick_str(in, tab, sizeof(tab) / sizeof(tab[0]), out, cap)
#define FZR_PICK(in, tab, out) FZR_PICK_N(in, tab, out, sizeof(out))

/* ---- the world ------------------------------------------------------------ */

/* One remembered stream end: (client, sid) leads to (peer, peer_sid); a
 * publication's delivery stream records its subscription (sub != 0). */
typedef struct fzr_end {
    uint64_t client, peer;
    uint32_t sid, peer_sid, sub;
} fzr_end_t;

typedef struct fzr {
    dbl_world_t *w;
    uint64_t next_id;
    int devnull;                /* every port's stand-in socket */
    fzr_end_t map[FZR_MAP];
    unsigned nmap, map_next;
    bool map_lost;              /* an entry was overwritten for room */
} fzr_t;

static fzr_end_t *fzr_map_find(fzr_t *z, uint64_t client, uint32_t sid)
{
    for (unsigned i = 0; i < z->nmap; i++)
        if (z->map[i].client == client && z->map[i].sid == sid)
            return &z->map[i];
    return NULL;
}

static void fzr_map_set(fzr_t *z, uint64_t client, uint32_t sid,
                        uint64_t peer, uint32_t peer_sid, uint32_t sub)
{
    fzr_end_t *e = fzr_map_find(z, client, sid);

    if (!e) {
        if (z->nmap < FZR_MAP) {
            e = &z->map[z->nmap++];
        } else {
            e = &z->map[z->map_next++ % FZR_MAP];
            z->map_lost = true;
        }
    }
    *e = (fzr_end_t){ client, peer, sid, peer_sid, sub };
}

static unsigned fzr_live(const fzr_t *z)
{
    unsigned n = 0;

    for (unsigned i = 0; i < z->w->nports; i++)
        n += z->w->ports[i]->in_table;
    return n;
}

/* The k-th connected client (k modulo their number), or NULL. */
static bk_port_t *fzr_client(const fzr_t *z, unsigned k)
{
    unsigned n = fzr_live(z);

    if (!n)
        return NULL;
    k %= n;
    for (unsigned i = 0; i < z->w->nports; i++)
        if (z->w->ports[i]->in_table && k-- == 0)
            return z->w->ports[i];
    return NULL;
}

static bool fzr_is_port(const fzr_t *z, const bk_port_t *p)
{
    for (unsigned i = 0; i < z->w->nports; i++)
        if (z->w->ports[i] == p)
            return true;
    return false;
}

/* A client connects (past its HELLO, as port.c's welcome leaves it). */
static void fzr_connect(fzr_t *z, bool maps)
{
    bk_port_t *p;

    if (z->w->nports >= DBL_PORTS || fzr_live(z) >= FZR_LIVE)
        return;
    p = dbl_port_new(z->w, z->next_id++);
    p->fd = z->devnull;
    p->uid = 1000;
    p->gid = 1000;
    bk_list_init(&p->subs);
    p->next_sub = 1;
    p->shm.maps = maps;
    bk_pub_client_event(p, "connect");
}

/* The peers that must hear ECONNRESET when p goes: the other end of
 * each of p's streams, unless it is swallowing the rest of a message. */
typedef struct fzr_reset {
    uint64_t client;
    uint32_t sid;
    unsigned got;
} fzr_reset_t;

static unsigned fzr_resets_due(bk_port_t *p, fzr_reset_t *out, unsigned cap)
{
    unsigned n = 0;
    bk_st_end_t *e;

    bk_list_for_each(e, &p->streams.head, bk_st_end_t, link) {
        bk_st_end_t *peer = bk_st_peer(e);
        bk_port_t *op = peer ? peer->owner : NULL;

        if (!peer || peer->discard || e->stream->pub || op == p ||
            !op->in_table || op->failed)
            continue;
        fzr_require(n < cap);
        out[n++] = (fzr_reset_t){ peer->client, peer->sid, 0 };
    }
    return n;
}

/* A client goes, in bk_port_close's order; each peer it had a stream
 * with hears ERROR ECONNRESET on that stream, once. */
static void fzr_disconnect(fzr_t *z, bk_port_t *p)
{
    static fzr_reset_t due[4 * DBL_PORTS * 8];
    unsigned ndue = fzr_resets_due(p, due, sizeof(due) / sizeof(due[0]));
    unsigned first = z->w->nlog;

    bk_pub_port_gone(p);
    dbl_port_gone(z->w, p);
    bk_pub_client_event(p, "disconnect");
    p->fd = -1;
    for (unsigned i = first; i < z->w->nlog; i++) {
        const dbl_frame_t *f = &z->w->log[i];
        if (f->h.type != BK_T_ERROR || f->h.source != p->id)
            continue;
        for (unsigned k = 0; k < ndue; k++)
            if (due[k].client == f->to->id && due[k].sid == f->h.stream) {
                fzr_require(bk_err_from_wire(f->h.aux) == -ECONNRESET);
                due[k].got++;
            }
    }
    for (unsigned k = 0; k < ndue; k++)
        fzr_require(due[k].got == 1);
}

/* ---- what the step expects ------------------------------------------------ */

/* One subscription a publication must reach (or, for a group, one of the
 * group's members). */
typedef struct fzr_want {
    bk_port_t *to;              /* NULL for a group */
    uint32_t sub;
    const bk_subs_group_t *group;
    bool may_miss;              /* a shared-memory body too large for it */
    unsigned got;
} fzr_want_t;

typedef struct fzr_step {
    bk_port_t *from;            /* NULL: no client frame in this step */
    bk_hdr_t h;                 /* the frame it sent */
    const uint8_t *payload;
    bool open_to_known;         /* an OPEN whose target is known */
    uint64_t open_target;       /* its id, 0 if nobody */
    bool pub;                   /* a publication that must go out */
    bool pub_seen;              /* a publication first fragment went */
    fzr_want_t want[DBL_PORTS * 8];
    unsigned nwant;
    uint64_t gone;              /* the client leaving in this step */
    int fds[FZR_FDS];
    unsigned nfds;
} fzr_step_t;

static fzr_want_t *fzr_want_group(fzr_step_t *st, const bk_subs_group_t *g)
{
    for (unsigned i = 0; i < st->nwant; i++)
        if (st->want[i].group == g)
            return &st->want[i];
    return NULL;
}

static bool fzr_eligible(const bk_port_t *p)
{
    return p->in_table && !p->failed && p->fd >= 0 && !p->hangup;
}

static bk_sub_t *fzr_port_sub(bk_port_t *p, uint32_t id)
{
    bk_sub_t *s;

    bk_list_for_each(s, &p->subs, bk_sub_t, client_link)
        if (s->id == id)
            return s;
    return NULL;
}

/* Whether p holds a gateway subscription in g. */
static bool fzr_gateway_of(bk_port_t *p, const bk_subs_group_t *g)
{
    bk_sub_t *s;

    bk_list_for_each(s, &p->subs, bk_sub_t, client_link)
        if (s->group == g && (s->flags & BK_SUB_F_GATEWAY))
            return true;
    return false;
}

/* The subscriptions a publication of topic t[0..n) reaches.  A
 * shared-memory descriptor longer than max-msg cannot go to a receiver
 * that does not map segments (shm.h), nor fds to a subscription that
 * takes none: that one is left out, and a group may have picked such a
 * member. */
static void fzr_expect_pub(fzr_t *z, fzr_step_t *st, const char *t, size_t n)
{
    bk_shm_desc_t d = { 0 };
    bool big = false;
    /* addressed by a gateway: one ordinary member of its group only */
    const bk_sub_t *gw = st->h.dest ? fzr_port_sub(st->from,
                                                   (uint32_t)st->h.dest)
                                    : NULL;

    if ((st->h.flags & BK_F_SHM) &&
        bk_shm_desc_decode(st->payload + st->h.aux, &d) == 0)
        big = d.length > z->w->srv.cfg->max_msg;
    for (unsigned i = 0; i < z->w->nports; i++) {
        bk_port_t *p = z->w->ports[i];
        bk_sub_t *s;

        if (!fzr_eligible(p))
            continue;
        bk_list_for_each(s, &p->subs, bk_sub_t, client_link) {
            if (!bk_topic_match(s->pattern, s->plen, t, n))
                continue;
            if (s->group && fzr_want_group(st, s->group))
                continue;
            if (gw && s->group != gw->group)
                continue;
            /* the publisher is a gateway of the group: it had its share
             * on the host the message came from */
            if (!gw && s->group && s->group->ngateways &&
                fzr_gateway_of(st->from, s->group))
                continue;
            /* one that takes no fds refuses a publication with some
             * (EXDEV to the publisher); a group may have picked it */
            if (st->h.nfds && (s->flags & BK_SUB_F_NOFDS) && !s->group)
                continue;
            fzr_require(st->nwant < sizeof(st->want) / sizeof(st->want[0]));
            st->want[st->nwant++] = (fzr_want_t){
                .to = s->group ? NULL : p, .sub = s->id, .group = s->group,
                .may_miss = (big && (s->group || !p->shm.maps)) ||
                            (st->h.nfds && s->group),
            };
        }
    }
}

/* Whether the router will fan the publication out (pub_refusal and the
 * stream-in-use check of router.c, restated). */
static bool fzr_pub_goes(const bk_port_t *from, const bk_hdr_t *h,
                         const uint8_t *payload)
{
    const bk_conf_t *c = from->srv->cfg;

    const char *why;

    if ((h->flags & BK_F_SHM) &&
        bk_shm_check((bk_port_t *)from, payload + h->aux, &why) < 0)
        return false;
    if (bk_st_find(&from->srv->streams, from->id, h->stream))
        return false;
    if (!bk_topic_valid((const char *)payload, h->aux) ||
        bk_topic_reserved((const char *)payload, h->aux))
        return false;
    if (h->length - h->aux > c->max_msg)
        return false;
    if (h->dest) {              /* pubsub.c's bk_pub_addressed, restated */
        const bk_sub_t *gw = fzr_port_sub((bk_port_t *)from,
                                          (uint32_t)h->dest);
        if (!gw || !(gw->flags & BK_SUB_F_GATEWAY) ||
            !bk_topic_match(gw->pattern, gw->plen, (const char *)payload,
                            h->aux) ||
            gw->group->nmembers == gw->group->ngateways)
            return false;
    }
    return !(h->flags & BK_F_MORE) || from->streams.count < c->max_streams;
}

/* ---- checking what was sent ------------------------------------------------- */

/* A publication's first fragment to f->to: one the step expects. */
static void fzr_check_pub_first(fzr_t *z, fzr_step_t *st,
                                const dbl_frame_t *f)
{
    bk_sub_t *s = fzr_port_sub(f->to, (uint32_t)f->h.dest);
    bool from_client = f->h.source != 0;

    fzr_require(f->h.dest && f->h.dest <= UINT32_MAX && s);
    fzr_require(f->h.aux && f->h.aux <= f->h.length &&
                f->h.aux <= DBL_PAYLOAD);
    /* a gateway's member count comes on a topic its pattern need not
     * match */
    fzr_require(bk_topic_match(s->pattern, s->plen,
                               (const char *)f->payload, f->h.aux) ||
                (!from_client && (s->flags & BK_SUB_F_GATEWAY) &&
                 f->h.aux == sizeof(BK_TOPIC_MEMBERS) - 1 &&
                 !memcmp(f->payload, BK_TOPIC_MEMBERS, f->h.aux)));
    fzr_require(f->h.stream & BK_SID_PEER_BIT);
    if (from_client) {
        fzr_want_t *want = NULL;

        fzr_require(st->from && f->h.source == st->from->id);
        fzr_require(f->h.aux == st->h.aux &&
                    !memcmp(f->payload, st->payload, f->h.aux));
        st->pub_seen = true;
        for (unsigned i = 0; i < st->nwant && !want; i++) {
            fzr_want_t *w = &st->want[i];
            if (w->group ? w->group == s->group
                         : w->to == f->to && w->sub == s->id)
                want = w;
        }
        fzr_require(want && want->got++ == 0);
        /* a group with gateways gives its share to one of them, and an
         * addressed publication goes to a member that is not one */
        if (want->group)
            fzr_require(!!(s->flags & BK_SUB_F_GATEWAY) ==
                        (!st->h.dest && s->group->ngateways > 0));
        if (f->h.flags & BK_F_MORE)
            fzr_map_set(z, f->to->id, f->h.stream, st->from->id,
                        st->h.stream, s->id);
    } else {
        /* the broker's announcement: whole, on its own topics */
        fzr_require((f->h.flags & BK_F_CLOSE) && !(f->h.flags & BK_F_MORE));
        fzr_require(bk_topic_reserved((const char *)f->payload, f->h.aux));
    }
}

/* A DATA or CLOSE frame on a stream the model knows, from the stepping
 * client's frame on its stream st->h.stream. */
static void fzr_check_on_stream(fzr_t *z, fzr_step_t *st,
                                const dbl_frame_t *f)
{
    const fzr_end_t *e = fzr_map_find(z, f->to->id, f->h.stream);

    fzr_require(st->from && f->h.source == st->from->id);
    if (!e) {
        fzr_require(z->map_lost);
        return;
    }
    fzr_require(e->peer == st->from->id && e->peer_sid == st->h.stream);
    if (e->sub && f->h.type == BK_T_DATA)
        fzr_require(f->h.dest == e->sub);
    else
        fzr_require(f->h.dest == f->to->id);
}

/* An OPEN fragment to a client, not a publication. */
static void fzr_check_open(fzr_t *z, fzr_step_t *st, const dbl_frame_t *f)
{
    fzr_require(st->from && f->h.source == st->from->id);
    fzr_require(st->h.flags & BK_F_OPEN);
    fzr_require(st->open_to_known && f->to->id == st->open_target);
    fzr_require(f->h.dest == f->to->id);
    fzr_require(f->h.stream & BK_SID_PEER_BIT);
    fzr_require(f->h.length == st->h.length &&
                f->h.flags == st->h.flags && f->h.aux == st->h.aux);
    fzr_map_set(z, f->to->id, f->h.stream, st->from->id, st->h.stream, 0);
    fzr_map_set(z, st->from->id, st->h.stream, f->to->id, f->h.stream, 0);
}

/* ERROR towards a client: its own id, and if it names a peer that left,
 * a stream that led to that peer. */
static void fzr_check_error(fzr_t *z, fzr_step_t *st, const dbl_frame_t *f)
{
    fzr_require(f->h.dest == f->to->id && f->h.length <= BK_MAX_TEXT);
    if (st->gone && f->h.source == st->gone && f->h.stream) {
        const fzr_end_t *e = fzr_map_find(z, f->to->id, f->h.stream);
        fzr_require(z->map_lost || (e && e->peer == st->gone));
    }
}

static void fzr_check_frame(fzr_t *z, fzr_step_t *st, const dbl_frame_t *f)
{
    fzr_require(fzr_is_port(z, f->to));
    fzr_require(f->h.version == BK_PROTO_VERSION);
    fzr_require(f->nfds <= FZR_FDS);
    /* a body only for a client that does not map segments */
    fzr_require(!f->body ||
                ((f->h.flags & BK_F_SHM) && !f->to->shm.maps));
    switch (f->h.type) {
    case BK_T_DATA:
        if (f->h.flags & BK_F_TOPIC)
            fzr_check_pub_first(z, st, f);
        else if (f->h.flags & BK_F_OPEN)
            fzr_check_open(z, st, f);
        else
            fzr_check_on_stream(z, st, f);
        break;
    case BK_T_CLOSE:
        fzr_check_on_stream(z, st, f);
        break;
    case BK_T_ERROR:
        fzr_check_error(z, st, f);
        break;
    case BK_T_GAP:
        fzr_require(f->h.dest == f->to->id && f->h.aux);
        break;
    case BK_T_SEGMENT:          /* a sender's segment, before its first
                                 * descriptor: only to those who map */
        fzr_require(f->h.dest == f->to->id && f->nfds == 1);
        fzr_require(f->to->shm.maps && f->h.source);
        break;
    case BK_T_RELEASE:
    case BK_T_SEG_DROP:
        fzr_require(f->h.dest == f->to->id && f->h.length);
        break;
    default:
        abort();                /* the router sends nothing else */
    }
}

static void fzr_check_log(fzr_t *z, fzr_step_t *st)
{
    for (unsigned i = 0; i < z->w->nlog; i++)
        fzr_check_frame(z, st, &z->w->log[i]);
    if (st->pub && !(st->from && st->from->failed)) {
        for (unsigned i = 0; i < st->nwant; i++)
            fzr_require(st->want[i].got == 1 ||
                        (st->want[i].may_miss && !st->want[i].got));
    }
    if (!st->pub)
        fzr_require(!st->pub_seen);
}

/* ---- checking the tables -------------------------------------------------- */

static bk_port_t *fzr_owner_of(fzr_t *z, uint64_t id)
{
    for (unsigned i = 0; i < z->w->nports; i++)
        if (z->w->ports[i]->id == id)
            return z->w->ports[i];
    return NULL;
}

static void fzr_check_streams(fzr_t *z)
{
    bk_st_table_t *t = &z->w->srv.streams;
    const bk_conf_t *c = z->w->srv.cfg;
    uint32_t ends[DBL_PORTS] = { 0 }, live[DBL_PORTS] = { 0 };
    uint64_t streams = 0;
    size_t nodes = 0;

    for (bk_hnode_t *n = bk_ht_next(&t->ht, NULL); n;
         n = bk_ht_next(&t->ht, n)) {
        bk_st_end_t *e = bk_container_of(n, bk_st_end_t, node);
        bk_st_end_t *peer = bk_st_peer(e);
        bk_stream_t *s = e->stream;
        bk_port_t *p = e->owner;
        unsigned i;

        nodes++;
        fzr_require(e->linked && fzr_is_port(z, p) && p->in_table);
        fzr_require(e->client == p->id && e->list == &p->streams);
        fzr_require(bk_st_find(t, e->client, e->sid) == e);
        fzr_require(e == &s->end[0] || e == &s->end[1]);
        /* an opened stream: the opener's id, the broker's for the
         * acceptor (a tombstone keeps whatever id the fragments use) */
        if (e == &s->end[1])
            fzr_require(e->sid & BK_SID_PEER_BIT);
        else if (s->end[1].owner)
            fzr_require(e->sid && e->sid <= BK_SID_MAX_LOCAL);
        fzr_require(!e->discard || e->in_msg);
        if (!peer)              /* a lone end swallows or publishes */
            fzr_require(e->in_msg && (e->discard || s->pub));
        if (s->pub)
            fzr_require(e == &s->end[0] && !peer);
        fzr_require(e->msg_bytes <= c->max_msg || e->discard);
        for (i = 0; z->w->ports[i] != p; i++)
            ;
        ends[i]++;
        /* a stream counts once per client taking part in it */
        if (!e->discard && !(peer && peer->owner == p && e == &s->end[1]))
            live[i]++;
        /* each stream once: at its first linked end */
        streams += e == &s->end[0] || !s->end[0].linked;
    }
    fzr_require(nodes == t->ht.count);
    fzr_require(streams == t->streams);
    for (unsigned i = 0; i < z->w->nports; i++) {
        fzr_require(ends[i] == z->w->ports[i]->streams.count);
        fzr_require(live[i] <= c->max_streams);
    }
}

static void fzr_check_names(fzr_t *z)
{
    bk_names_t *names = &z->w->srv.names;
    uint32_t owned[DBL_PORTS] = { 0 };
    size_t nodes = 0;

    for (bk_hnode_t *n = bk_ht_next(&names->ht, NULL); n;
         n = bk_ht_next(&names->ht, n)) {
        bk_name_t *nm = bk_container_of(n, bk_name_t, node);
        bk_port_t *p = fzr_owner_of(z, nm->owner);
        unsigned i;

        nodes++;
        fzr_require(p && p->in_table && nm->list == &p->names);
        fzr_require(bk_names_lookup(names, nm->name, nm->len) == p->id);
        fzr_require(bk_name_valid(nm->name, nm->len, BK_MAX_NAME));
        for (i = 0; z->w->ports[i] != p; i++)
            ;
        owned[i]++;
    }
    fzr_require(nodes == bk_names_count(names));
    for (unsigned i = 0; i < z->w->nports; i++) {
        bk_port_t *p = z->w->ports[i];
        fzr_require(owned[i] == p->names.count);
        fzr_require(p->names.count + p->names.nwaiting <=
                    z->w->srv.cfg->max_names);
        if (!p->in_table)
            fzr_require(!p->names.count && !p->names.nwaiting);
    }
}

static void fzr_check_subs(fzr_t *z)
{
    size_t total = 0;

    for (unsigned i = 0; i < z->w->nports; i++) {
        bk_port_t *p = z->w->ports[i];
        uint32_t n = 0;
        bk_sub_t *s;

        if (!p->in_table) {
            fzr_require(bk_list_empty(&p->subs) && !p->nsubs);
            continue;
        }
        bk_list_for_each(s, &p->subs, bk_sub_t, client_link) {
            fzr_require(s->owner == p && s->client == p->id);
            fzr_require(s->id && s->id < p->next_sub);
            fzr_require(bk_topic_pattern_valid(s->pattern, s->plen));
            n++;
        }
        fzr_require(n == p->nsubs && n <= z->w->srv.cfg->max_subs);
        total += n;
    }
    fzr_require(total == bk_subs_count(z->w->srv.subs));
}

static void fzr_check_shm(fzr_t *z)
{
    const bk_conf_t *c = z->w->srv.cfg;
    uint64_t segs = 0, bytes = 0, held = 0;

    for (unsigned i = 0; i < z->w->nports; i++) {
        const bk_shm_port_t *s = &z->w->ports[i]->shm;

        if (!z->w->ports[i]->in_table)
            fzr_require(!s->nsegs && !s->ndropped && !s->bytes &&
                        !s->nheld);
        fzr_require(s->nsegs == s->segs.count);
        fzr_require(s->ndropped == s->dropped.count);
        fzr_require(s->nsegs + s->ndropped <= c->max_segments);
        fzr_require(s->bytes <= c->max_shm);
        fzr_require(s->nheld >= s->held.count);
        segs += s->nsegs;
        bytes += s->bytes;
        held += s->nheld;
    }
    fzr_require(segs == z->w->srv.stats.shm_segments);
    fzr_require(bytes == z->w->srv.stats.shm_bytes);
    fzr_require(held == z->w->srv.stats.shm_held);
}

static void fzr_check_fds(const fzr_step_t *st)
{
    for (unsigned i = 0; i < st->nfds; i++)
        fzr_require(fcntl(st->fds[i], F_GETFD) < 0 && errno == EBADF);
}

/* ---- the steps -------------------------------------------------------------- */

/* port.c's only_topic_invalid: a bad topic is the publication's error. */
static bool fzr_only_topic_invalid(const bk_hdr_t *h)
{
    return h->type == BK_T_DATA && (h->flags & BK_F_TOPIC) &&
           h->stream <= BK_SID_MAX_LOCAL &&
           (!(h->flags & BK_F_SHM) || h->length - h->aux == BK_SHM_DESC_SIZE);
}

/* port.c's process_packet for a packet of this one frame: 0 to dispatch,
 * or the client's protocol error. */
static int fzr_validate(const bk_port_t *p, const bk_hdr_t *h,
                        const uint8_t *payload)
{
    const bk_conf_t *c = p->srv->cfg;
    bk_limits_t lim = { c->max_packet, c->max_fds, c->max_name };
    int e = bk_frame_check_from_client(h, payload, &lim);

    if (e == -EINVAL && (h->flags & BK_F_TOPIC))
        e = fzr_only_topic_invalid(h) ? 0 : -EPROTO;
    return e;
}

static uint32_t fzr_pick_sid(fzr_in_t *in, bk_port_t *p)
{
    uint8_t b = fzr_byte(in);

    if ((b & 0xc0) == 0xc0)
        return (uint32_t)fzr_bytes(in, 4);
    if ((b & 0x80) && p->streams.count) {
        unsigned k = (b & 0x3f) % p->streams.count;
        bk_st_end_t *e;
        bk_list_for_each(e, &p->streams.head, bk_st_end_t, link)
            if (k-- == 0)
                return e->sid;
    }
    return 1 + (b & 7);
}

static uint64_t fzr_pick_dest(fzr_in_t *in)
{
    uint8_t b = fzr_byte(in);

    if (b == 0xff)
        return fzr_bytes(in, 8);
    return b % (DBL_PORTS + 2);     /* 0, the ids and one never used */
}

/* Flag combinations a client sends; one byte in eight is raw. */
static uint8_t fzr_pick_flags(fzr_in_t *in)
{
    static const uint8_t valid[] = {
        BK_F_OPEN | BK_F_CLOSE, BK_F_OPEN | BK_F_MORE, BK_F_OPEN,
        BK_F_OPEN | BK_F_NAME | BK_F_CLOSE, BK_F_OPEN | BK_F_NAME |
        BK_F_MORE, BK_F_OPEN | BK_F_NAME, BK_F_CONT | BK_F_MORE, BK_F_CONT,
        BK_F_CONT | BK_F_CLOSE, 0, BK_F_MORE, BK_F_CLOSE,
        BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, BK_F_OPEN | BK_F_TOPIC |
        BK_F_MORE, BK_F_CONT | BK_F_MORE, BK_F_CONT,
        BK_F_OPEN | BK_F_CLOSE | BK_F_SHM, BK_F_OPEN | BK_F_SHM,
        BK_F_OPEN | BK_F_NAME | BK_F_CLOSE | BK_F_SHM, BK_F_SHM,
        BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE | BK_F_SHM,
    };
    uint8_t b = fzr_byte(in);

    if ((b & 7) == 7)
        return b >> 1;
    return valid[(b >> 3) % sizeof(valid)];
}

static void fzr_make_fds(fzr_in_t *in, fzr_step_t *st, bk_hdr_t *h)
{
    unsigned n = fzr_byte(in) % 8;

    n = n < 4 ? 0 : n - 4;      /* half the frames carry none */
    for (unsigned i = 0; i < n && i < FZR_FDS; i++) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        fzr_require(fd >= 0);
        st->fds[st->nfds++] = fd;
    }
    h->nfds = (uint8_t)st->nfds;
}

/* A shared-memory descriptor: mostly inside a segment of 4 or 8 KiB. */
static void fzr_desc(fzr_in_t *in, uint8_t out[BK_SHM_DESC_SIZE])
{
    static const uint64_t offs[] = { 0, 64, 128, 4000, 4096, 8191 };
    static const uint64_t lens[] = { 1, 64, 200, 4096, 5000, 0 };
    uint8_t b = fzr_byte(in), c = fzr_byte(in);
    bk_shm_desc_t d = {
        .segid = 1 + b % 4,
        .offset = offs[(b >> 2) % 6],
        .length = lens[c % 6],
    };

    bk_shm_desc_encode(&d, out);
    if ((c & 0xc0) == 0xc0)         /* now and then, any bytes */
        for (unsigned i = 0; i < BK_SHM_DESC_SIZE; i++)
            out[i] ^= fzr_byte(in);
}

/* A sealed memfd of `size` bytes as libbroker makes one, or -1. */
static int fzr_memfd(uint64_t size)
{
    int fd = memfd_create("fuzz-seg", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) < 0 ||
        fcntl(fd, F_ADD_SEALS, BK_SEALS_REQUIRED) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* CTRL SEGMENT, RELEASE or SEG_DROP from p (validated as frame.c would:
 * one segment id, whole records). */
static void fzr_shm(fzr_in_t *in, fzr_step_t *st, bk_port_t *p)
{
    uint8_t buf[2 * BK_RELEASE_SIZE];
    uint8_t b = fzr_byte(in);
    uint32_t segid = 1 + ((b >> 2) & 3);
    const char *why = NULL;
    int r = 0;

    switch (b & 3) {
    case 0:
    case 3: {
        uint64_t size = (b & 0x10) ? 8192 : 4096;
        int fd = fzr_memfd(size);
        if (fd < 0)
            return;
        st->fds[st->nfds++] = fd;
        bk_put32(buf, segid);
        bk_put32(buf + 4, 0);
        bk_put64(buf + 8, size);
        bk_shm_register(p, buf, fd);     /* an error is the reply's */
        return;
    }
    case 1: {
        unsigned n = 1 + ((b >> 4) & 1);
        for (unsigned i = 0; i < n; i++) {
            uint8_t *rec = buf + i * BK_RELEASE_SIZE;
            uint8_t c = fzr_byte(in);
            bk_put64(rec, fzr_pick_dest(in));
            bk_put32(rec + 8, 1 + c % 4);
            bk_put32(rec + 12, 1 + (c >> 2) % 2);
            bk_put64(rec + 16, (uint64_t[]){ 0, 64, 128, 4000 }[c >> 6]);
        }
        r = bk_shm_release(p, buf, n * BK_RELEASE_SIZE, &why);
        break;
    }
    case 2:
        bk_put32(buf, segid);
        bk_put32(buf + 4, 0);
        r = bk_shm_drop(p, buf, &why);
        break;
    }
    if (r < 0)
        bk_port_protocol_error(p, -EPROTO, 0, why);
}

/* What the router is about to do with an OPEN or a publication. */
static void fzr_expect(fzr_t *z, fzr_step_t *st, bk_port_t *p)
{
    const bk_hdr_t *h = &st->h;

    if (h->type != BK_T_DATA || (h->flags & BK_F_CONT))
        return;
    if (h->flags & BK_F_TOPIC) {
        st->pub = fzr_pub_goes(p, h, st->payload);
        if (st->pub)
            fzr_expect_pub(z, st, (const char *)st->payload, h->aux);
    } else if (h->flags & BK_F_OPEN) {
        st->open_to_known = true;
        st->open_target = h->flags & BK_F_NAME ?
            bk_names_lookup(&z->w->srv.names, (const char *)st->payload,
                            h->aux) : h->dest;
    }
}

/* A DATA (or, with close, CLOSE) frame from client p. */
static void fzr_frame(fzr_t *z, fzr_in_t *in, fzr_step_t *st, bk_port_t *p,
                      bool close)
{
    static uint8_t payload[BK_MAX_TOPIC + FZR_PAYLOAD];
    bk_hdr_t *h = &st->h;
    size_t pre = 0, body;
    int e;

    *h = (bk_hdr_t){ .version = BK_PROTO_VERSION,
                     .type = close ? BK_T_CLOSE : BK_T_DATA };
    h->flags = close ? 0 : fzr_pick_flags(in);
    h->stream = fzr_pick_sid(in, p);
    if (!close && (h->flags & BK_F_OPEN) && !(h->flags & BK_F_NAME))
        h->dest = fzr_pick_dest(in);    /* a publication: a gateway's sub */
    if (!close && (h->flags & BK_F_NAME))
        pre = FZR_PICK_N(in, fzr_names, (char *)payload, BK_MAX_TOPIC);
    else if (!close && (h->flags & BK_F_TOPIC))
        pre = FZR_PICK_N(in, fzr_topics, (char *)payload, BK_MAX_TOPIC);
    h->aux = close ? bk_err_to_wire(-(int)(fzr_byte(in) % 8)) :
             (uint32_t)pre;
    if (!close && (h->flags & BK_F_SHM)) {
        body = BK_SHM_DESC_SIZE;
        fzr_desc(in, payload + pre);
    } else {
        body = fzr_byte(in) % FZR_PAYLOAD;
        for (size_t i = 0; i < body; i++)
            payload[pre + i] = fzr_byte(in);
    }
    h->length = (uint32_t)(pre + body);
    if (!close && !(h->flags & BK_F_SHM))
        fzr_make_fds(in, st, h);
    st->payload = payload;
    e = fzr_validate(p, h, payload);
    if (e < 0) {
        bk_close_fds(st->fds, st->nfds);
        bk_port_protocol_error(p, e, 0, "malformed frame");
        return;
    }
    st->from = p;
    fzr_expect(z, st, p);
    {
        int fds[FZR_FDS];
        memcpy(fds, st->fds, sizeof(fds));
        bk_router_frame(p, h, payload, fds, h->nfds);
    }
}

/* REGISTER_EX or RELEASE, as ctrl.c does them. */
static void fzr_name(fzr_t *z, fzr_in_t *in, bk_port_t *p)
{
    bk_server_t *srv = &z->w->srv;
    char name[BK_MAX_NAME + 1];
    uint8_t b = fzr_byte(in);
    size_t len = FZR_PICK(in, fzr_names, name);
    uint32_t outcome = 0, flags = (b >> 1) & 7;

    if (!bk_name_valid(name, len, srv->cfg->max_name))
        return;
    if (b & 1)
        bk_names_release(&srv->names, name, len, p->id, &p->names,
                         bk_now_ms());
    else
        bk_names_register(&srv->names, name, len, p->id, &p->names,
                          srv->cfg->max_names, bk_now_ms(), flags, &outcome);
}

/* SUBSCRIBE (checked as ctrl.c's parse_subscribe does) or UNSUBSCRIBE. */
static void fzr_sub(fzr_in_t *in, bk_port_t *p)
{
    char pat[BK_MAX_TOPIC + 1], group[16];
    uint8_t b = fzr_byte(in);
    size_t plen, glen = 0;
    uint32_t id;

    if (b & 1) {
        bk_pub_unsubscribe(p, 1 + (b >> 1) % 8);
        return;
    }
    plen = FZR_PICK(in, fzr_patterns, pat);
    if (b & 2)
        glen = FZR_PICK(in, fzr_groups, group);
    if (!bk_topic_pattern_valid(pat, plen) ||
        (glen && !bk_name_valid(group, glen, BK_MAX_NAME)))
        return;
    bk_pub_subscribe(p, pat, plen, glen ? group : NULL, glen,
                     (uint8_t)((b >> 2) % (BK_SUB_POLICY_MAX_ + 1)),
                     (uint8_t)((b >> 4) & BK_SUB_F_ALL_), &id);
}

/* Close every client that failed (bk_server_reap). */
static void fzr_reap(fzr_t *z, fzr_step_t *st)
{
    for (unsigned i = 0; i < z->w->nports; i++) {
        bk_port_t *p = z->w->ports[i];
        if (p->in_table && p->failed) {
            st->gone = p->id;
            fzr_disconnect(z, p);
            fzr_check_log(z, st);
            dbl_clear(z->w);
        }
    }
}

static void fzr_check_all(fzr_t *z, const fzr_step_t *st)
{
    fzr_check_streams(z);
    fzr_check_names(z);
    fzr_check_subs(z);
    fzr_check_shm(z);
    fzr_check_fds(st);
}

static void fzr_step(fzr_t *z, fzr_in_t *in)
{
    static fzr_step_t st;
    uint8_t op = fzr_byte(in);
    bk_port_t *p = fzr_client(z, fzr_byte(in));

    memset(&st, 0, sizeof(st));
    if (!p || op % 16 == 15) {
        fzr_connect(z, !(op & 0x80));
    } else {
        switch (op % 16) {
        case 10: fzr_shm(in, &st, p); break;
        case 11: fzr_frame(z, in, &st, p, true); break;
        case 12: fzr_name(z, in, p); break;
        case 13: fzr_sub(in, p); break;
        case 14:
            st.gone = p->id;
            fzr_disconnect(z, p);
            break;
        default: fzr_frame(z, in, &st, p, false); break;
        }
    }
    fzr_check_log(z, &st);
    dbl_clear(z->w);
    memset(st.want, 0, sizeof(st.want));
    st.nwant = 0;
    st.pub = false;
    st.pub_seen = false;
    fzr_reap(z, &st);
    fzr_check_all(z, &st);
}

/* ---- the entry point ------------------------------------------------------ */

static unsigned fzr_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    unsigned n = 0;

    fzr_require(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    bk_log_init(BK_LOG_ERROR, 0);      /* refusals are logged at warn */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fzr_t z;
    static int devnull = -1;
    fzr_in_t in = { data, size, 0 };
    unsigned fds_before, nclients;
    uint8_t b0 = fzr_byte(&in), b1 = fzr_byte(&in), b2 = fzr_byte(&in);
    static fzr_step_t last;

    if (devnull < 0)
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    fzr_require(devnull >= 0);
    fds_before = fzr_open_fds();
    memset(&z, 0, sizeof(z));
    z.devnull = devnull;
    z.next_id = 1;
    z.w = dbl_world_new();
    z.w->srv.names.on_change = bk_pub_name_changed;
    z.w->srv.names.arg = &z.w->srv;
    z.w->cfg.max_streams = 1 + b0 % 6;
    z.w->cfg.max_names = 1 + (b0 >> 3) % 3;
    z.w->cfg.max_subs = 1 + (b0 >> 5) % 3;
    z.w->cfg.max_msg = 1 + (uint64_t)b1 * 4;
    z.w->cfg.max_fds = b2 % (FZR_FDS + 1);
    z.w->cfg.max_segments = 1 + (b1 & 3);
    z.w->cfg.max_shm = 8192u * (1 + ((b1 >> 2) & 3));
    nclients = 2 + (b2 >> 4) % 3;
    for (unsigned i = 0; i < nclients; i++)      /* b2's top bits: who */
        fzr_connect(&z, !((b2 >> (6 + i % 2)) & 1));  /* maps segments */
    while (in.off < in.len)
        fzr_step(&z, &in);
    /* everybody leaves */
    memset(&last, 0, sizeof(last));
    for (unsigned i = 0; i < z.w->nports; i++)
        if (z.w->ports[i]->in_table) {
            last.gone = z.w->ports[i]->id;
            fzr_disconnect(&z, z.w->ports[i]);
            fzr_check_log(&z, &last);
            dbl_clear(z.w);
        }
    fzr_check_all(&z, &last);
    fzr_require(z.w->srv.streams.streams == 0);
    fzr_require(bk_names_count(&z.w->srv.names) == 0);
    fzr_require(bk_subs_count(z.w->srv.subs) == 0);
    fzr_require(!z.w->srv.stats.shm_segments && !z.w->srv.stats.shm_held);
    dbl_world_free(z.w);
    fzr_require(fzr_open_fds() == fds_before);
    return 0;
}
