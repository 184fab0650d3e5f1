/*
 * pubsub.c - subscriptions per client, fan-out of publications, the
 * slow-subscriber policies, GAPs, queue-group hand-over, announcements.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "error.h"
#include "frame.h"
#include "log.h"
#include "monitor.h"
#include "policy.h"
#include "pubsub.h"
#include "server.h"
#include "shm.h"
#include "sockio.h"
#include "topic.h"

static bk_sub_t *sub_of(bk_list_t *l)
{
    return bk_container_of(l, bk_sub_t, client_link);
}

/* Subscription `id` of p, or NULL (it ended). */
static bk_sub_t *port_sub(bk_port_t *p, uint32_t id)
{
    bk_sub_t *s;

    bk_list_for_each(s, &p->subs, bk_sub_t, client_link)
        if (s->id == id)
            return s;
    return NULL;
}

/* ---- counters and GAPs ---------------------------------------------------- */

void bk_pub_sent(void *tag, void *arg)
{
    bk_sub_t *s = tag;

    (void)arg;
    if (s->queued)
        s->queued--;
}

static void send_gap(bk_port_t *to, bk_sub_t *s)
{
    uint8_t buf[BK_GAP_SIZE];
    bk_hdr_t g = {
        .version = BK_PROTO_VERSION, .type = BK_T_GAP, .aux = s->id,
        .dest = to->id, .length = BK_GAP_SIZE,
    };

    bk_put64(buf, s->gap_pending);
    s->gap_pending = 0;
    if (to->gaps_pending)
        to->gaps_pending--;
    bk_port_send(to, &g, buf, NULL, 0, NULL);
}

void bk_pub_flush_gaps(bk_port_t *p)
{
    bk_sub_t *s;

    bk_list_for_each(s, &p->subs, bk_sub_t, client_link)
        if (s->gap_pending)
            send_gap(p, s);
    p->gaps_pending = 0;
}

/* A message not delivered on subscription s of port to. */
static void count_drop(bk_port_t *to, bk_sub_t *s, uint64_t n)
{
    s->dropped += n;
    to->pub_dropped += n;
    to->srv->stats.dropped_pub += n;
    if (s->policy != BK_SUB_DROP)
        return;
    if (!s->gap_pending)
        to->gaps_pending++;
    s->gap_pending += n;
}

static void slow_consumer(bk_port_t *to)
{
    bk_info("client %llu (pid %d, %s): slow consumer, disconnecting",
            (unsigned long long)to->id, (int)to->pid, to->comm);
    bk_port_hangup(to, -ENOBUFS, "slow consumer");
}

/* ---- subscriptions ---------------------------------------------------------- */

static bool may_subscribe(const bk_port_t *p, const char *pat, size_t plen)
{
    bk_policy_peer_t who = { .uid = p->uid, .gid = p->gid };

    return bk_policy_may_subscribe(&p->srv->cfg->policy, &who, pat, plen);
}

static void notify_gateways(bk_server_t *srv, bk_subs_group_t *g,
                            bk_sub_t *only, const bk_port_t *leaving);

int bk_pub_subscribe(bk_port_t *p, const char *pat, size_t plen,
                     const char *group, size_t glen, uint8_t policy,
                     uint8_t flags, uint32_t *id)
{
    bk_server_t *srv = p->srv;
    bk_sub_t *s;
    int r;

    if ((flags & BK_SUB_F_GATEWAY) && !glen)
        return -EINVAL;
    if (!may_subscribe(p, pat, plen)) {
        bk_port_refused(p, BK_REFUSE_SUBSCRIBE, "allow-subscribe refuses "
                        "'%.*s'", (int)plen, pat);
        return -EACCES;
    }
    if (p->nsubs >= srv->cfg->max_subs || p->next_sub == 0) {
        bk_port_refused(p, BK_REFUSE_SUBS, "max-subscriptions reached "
                        "(%u subscriptions)", p->nsubs);
        return -ENOSR;
    }
    r = bk_subs_add(srv->subs, p->id, p, p->next_sub, pat, plen, group, glen,
                    policy, &s);
    if (r < 0)
        return r;
    s->flags = flags & ~BK_SUB_F_GATEWAY;
    p->next_sub++;
    bk_list_push_tail(&p->subs, &s->client_link);
    p->nsubs++;
    *id = s->id;
    if (flags & BK_SUB_F_GATEWAY) {
        bk_subs_set_gateway(s);
        p->ngateways++;
        notify_gateways(srv, s->group, s, NULL);
    } else if (s->group && s->group->ngateways) {
        notify_gateways(srv, s->group, NULL, NULL);
    }
    return 0;
}

static uint64_t member_load(const bk_sub_t *s, void *ctx)
{
    const bk_port_t *p = s->owner;

    (void)ctx;
    return p->failed || p->fd < 0 || p->hangup ? UINT64_MAX : p->out.bytes;
}

/* Whole messages of a leaving group member, waiting in its queue, go to
 * the other members (same choice rule; among the gateways or the others),
 * in their order. */
static void move_group_msgs(bk_subs_group_t *g, bool gateways,
                            bk_list_t *frames, uint64_t *lost)
{
    bk_list_t *l;

    while ((l = bk_list_pop_head(frames))) {
        bk_oframe_t *f = bk_container_of(l, bk_oframe_t, link);
        bk_sub_t *s = g ? bk_subs_group_pick(g, gateways, member_load, NULL)
                        : NULL;
        bk_port_t *to = s ? s->owner : NULL;
        bk_hdr_t h;

        if (!to || to->failed || to->fd < 0 || to->hangup) {
            bk_outq_frame_free(f);
            (*lost)++;
            continue;
        }
        bk_hdr_decode(f->hdr, &h);
        h.dest = s->id;
        h.stream = bk_port_alloc_sid(to);
        f->tag = s;
        if (bk_port_requeue(to, f, &h) < 0) {
            count_drop(to, s, 1);
            continue;
        }
        s->queued++;
        s->delivered++;
    }
}

/* End subscription s of p.  Its messages still queued stay (the client
 * drops them) unless s is in a group with other members: those move.
 * `closing`: p's queue is dropped next, nothing in it is sent again. */
static void sub_end(bk_port_t *p, bk_sub_t *s, bool closing)
{
    bk_subs_group_t *g = s->group;
    bool others = g && g->nmembers > 1;   /* the group outlives s */
    bool gateway = s->flags & BK_SUB_F_GATEWAY;
    bk_list_t moving;
    uint64_t lost = 0;

    bk_list_init(&moving);
    if (g)
        bk_outq_take_tagged(&p->out, s, &moving);
    if (!closing)
        bk_outq_untag(&p->out, s);
    if (s->gap_pending && p->gaps_pending)
        p->gaps_pending--;
    p->nsubs--;
    p->ngateways -= gateway;
    bk_subs_remove(p->srv->subs, s);   /* unlinks client_link too */
    /* a gateway's share goes to another gateway, or to the members here
     * once the last gateway is gone */
    move_group_msgs(others ? g : NULL, others && gateway && g->ngateways,
                    &moving, &lost);
    if (lost)
        p->srv->stats.dropped_pub += lost;
    if (others && !gateway && g->ngateways)
        notify_gateways(p->srv, g, NULL, closing ? p : NULL);
}

int bk_pub_unsubscribe(bk_port_t *p, uint32_t id)
{
    bk_sub_t *s;

    bk_list_for_each(s, &p->subs, bk_sub_t, client_link)
        if (s->id == id) {
            sub_end(p, s, false);
            return 0;
        }
    return -ENOENT;
}

void bk_pub_port_gone(bk_port_t *p)
{
    bk_list_t *l;

    while ((l = bk_list_first(&p->subs)))
        sub_end(p, sub_of(l), true);
}

/* ---- fan-out ----------------------------------------------------------------- */

typedef struct fan {
    bk_server_t *srv;
    bk_port_t *from;            /* NULL: the broker's own */
    const bk_hdr_t *h;
    const uint8_t *payload;
    const int *fds;
    bk_opayload_t *shared;      /* one copy for every queued frame */
    bk_pub_t *rec;
    int delivered;
    uint32_t shm_refs;          /* references counted by bk_shm_deliver */
} fan_t;

static const uint8_t *shm_desc(const bk_hdr_t *h, const uint8_t *payload)
{
    return payload + h->aux;
}

/* Each receiver gets its own dup of the publisher's fds. */
static int dup_fds(const int *fds, unsigned n, int *out)
{
    for (unsigned i = 0; i < n; i++) {
        out[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (out[i] < 0) {
            bk_close_fds(out, i);
            return -errno;
        }
    }
    return 0;
}

/* Whether the message goes to s now, by its policy. */
static bool admit(fan_t *fan, bk_port_t *to, bk_sub_t *s)
{
    if (to->failed || to->fd < 0 || to->hangup)
        return false;
    if (to->out.bytes <= fan->srv->cfg->queue_limit)
        return true;
    switch (s->policy) {
    case BK_SUB_BLOCK:
        return true;
    case BK_SUB_DISCONNECT:
        count_drop(to, s, 1);
        slow_consumer(to);
        return false;
    default:
        count_drop(to, s, 1);
        return false;
    }
}

/* A subscription that cannot take fds (BK_SUB_F_NOFDS) and a publication
 * that carries some: not delivered; the publisher hears of it as of any
 * undelivered one-way message, ERROR EXDEV on its stream from the
 * subscriber's id.  Not a drop of the subscription (no GAP): it asked.
 * The publisher is the cause, as for every error about what it sent: one
 * that does not read is held back once its queue is full. */
static void refuse_fds(const fan_t *fan, const bk_port_t *to)
{
    static const char text[] = "the subscriber cannot take file "
                               "descriptors";
    bk_port_t *from = fan->from;
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
        .stream = fan->h->stream, .aux = bk_err_to_wire(-EXDEV),
        .source = to->id, .dest = from ? from->id : 0,
        .length = sizeof(text) - 1,
    };

    if (!from || from->failed || from->fd < 0 || from->hangup)
        return;
    from->errors++;
    bk_mon_tap(NULL, from, 0, &h, text);
    bk_port_send(from, &h, text, NULL, 0, from);
}

static void deliver_first(fan_t *fan, bk_sub_t *s)
{
    const bk_hdr_t *h = fan->h;
    bk_port_t *to = s->owner;
    bk_port_t *cause = s->policy == BK_SUB_BLOCK ? fan->from : NULL;
    int fds[BK_MAX_FDS_HARD];
    bk_obody_t *body = NULL;
    bk_hdr_t o = *h;
    int r;

    if (h->nfds && (s->flags & BK_SUB_F_NOFDS)) {
        if (!to->failed && to->fd >= 0 && !to->hangup)
            refuse_fds(fan, to);
        return;
    }
    if (!admit(fan, to, s))
        return;
    if (s->gap_pending)
        send_gap(to, s);
    if (h->nfds && dup_fds(fan->fds, h->nfds, fds) < 0) {
        count_drop(to, s, 1);
        return;
    }
    if ((h->flags & BK_F_SHM) &&
        bk_shm_deliver(fan->from, to, shm_desc(h, fan->payload), &body) < 0) {
        bk_close_fds(fds, h->nfds);
        count_drop(to, s, 1);
        return;
    }
    fan->shm_refs += !!(h->flags & BK_F_SHM);
    o.source = fan->from ? fan->from->id : 0;
    o.dest = s->id;
    o.stream = bk_port_alloc_sid(to);
    bk_mon_tap(fan->from, to, h->stream, &o, fan->payload);
    if (body)                   /* SHM frames carry no fds */
        r = bk_port_send_body(to, &o, fan->payload, body, cause, true, s, 0);
    else
        r = bk_port_send_pub(to, &o, fan->payload, &fan->shared, fds,
                             h->nfds, cause, s);
    if (r < 0) {
        if (r != -ECONNRESET)   /* else the receiver is going away */
            count_drop(to, s, 1);   /* out of memory, or an fd budget */
        return;
    }
    if (r == BK_PORT_QUEUED)
        s->queued++;
    s->delivered++;
    fan->srv->stats.delivered_pub++;
    fan->delivered++;
    if (fan->rec)
        fan->rec->r[fan->rec->n++] = (bk_pub_rcpt_t){
            .client = to->id, .sid = o.stream, .sub = s->id,
            .policy = s->policy,
        };
}

/* Whether p has a gateway subscription in g. */
static bool is_gateway_of(const bk_port_t *p, const bk_subs_group_t *g)
{
    const bk_sub_t *s;

    if (!p || p->ngateways == 0)
        return false;
    bk_list_for_each(s, &p->subs, bk_sub_t, client_link)
        if (s->group == g && (s->flags & BK_SUB_F_GATEWAY))
            return true;
    return false;
}

/* A group's share: to a gateway when it has one, unless the publisher is
 * one of them (what it publishes came from another host, where the group
 * had its share); a publication addressed to the group (`to_group`) goes
 * to one of the members that are not gateways. */
static void fan_group(fan_t *fan, bk_subs_group_t *g, bool to_group)
{
    bk_sub_t *s;

    if (to_group)
        s = bk_subs_group_pick(g, false, member_load, NULL);
    else if (!g->ngateways)
        s = bk_subs_group_pick(g, false, member_load, NULL);
    else if (!is_gateway_of(fan->from, g))
        s = bk_subs_group_pick(g, true, member_load, NULL);
    else
        s = NULL;
    if (s)
        deliver_first(fan, s);
}

static int fan_run(fan_t *fan, const bk_subs_match_t *m, bool to_group)
{
    for (size_t i = 0; i < m->nsubs; i++)
        deliver_first(fan, m->subs[i]);
    for (size_t i = 0; i < m->ngroups; i++)
        fan_group(fan, m->groups[i], to_group);
    return fan->delivered;
}

int bk_pub_fanout(bk_server_t *srv, bk_port_t *from, const bk_hdr_t *h,
                  const uint8_t *payload, int *fds, bk_pub_t **rec)
{
    fan_t fan = {
        .srv = srv, .from = from, .h = h, .payload = payload, .fds = fds,
    };
    bk_subs_match_t m;
    bk_sub_t *gw = h->dest && from ? port_sub(from, (uint32_t)h->dest) : NULL;
    bk_subs_group_t *g = gw ? gw->group : NULL;
    int r = 0;

    /* addressed to the group of gateway gw (bk_pub_addressed checked it):
     * that group alone */
    if (g)
        m = (bk_subs_match_t){ .groups = &g, .ngroups = 1 };
    else
        r = bk_subs_match(srv->subs, (const char *)payload, h->aux, &m);
    if (rec)
        *rec = NULL;
    if (r == 0 && rec && m.nsubs + m.ngroups) {
        size_t cap = m.nsubs + m.ngroups;
        fan.rec = malloc(sizeof(*fan.rec) + cap * sizeof(fan.rec->r[0]));
        if (!fan.rec)
            r = -ENOMEM;
        else
            *fan.rec = (bk_pub_t){ .n = 0, .cap = (uint32_t)cap };
    }
    if (r == 0) {
        r = fan_run(&fan, &m, g != NULL);
        if (from) {             /* the broker's announcements not counted */
            srv->stats.published++;
            srv->stats.published_unmatched += m.nsubs + m.ngroups == 0;
        }
    }
    bk_opayload_put(fan.shared);
    bk_close_fds(fds, h->nfds);
    if (fan.rec && fan.rec->n == 0) {
        free(fan.rec);
        fan.rec = NULL;
    }
    if (rec)
        *rec = fan.rec;
    if (from && (h->flags & BK_F_SHM)) {
        /* a reference that was counted and then not sent comes back when
         * its receiver goes: it counts among the releases too */
        if (fan.shm_refs == 0)
            bk_shm_undelivered(from, shm_desc(h, payload));
        else if (bk_shm_fanout(from, shm_desc(h, payload), fan.shm_refs) < 0)
            bk_warn("client %llu: out of memory counting a shared-memory "
                    "publication; its buffer may be released early",
                    (unsigned long long)from->id);
    }
    return r;
}

int bk_pub_addressed(bk_port_t *from, const bk_hdr_t *h,
                     const uint8_t *payload, const char **why)
{
    bk_sub_t *s = h->dest ? port_sub(from, (uint32_t)h->dest) : NULL;

    if (!h->dest)
        return 0;
    if (!s || !(s->flags & BK_SUB_F_GATEWAY)) {
        *why = "dest is not a gateway subscription of this client";
        return -EINVAL;
    }
    if (!bk_topic_match(s->pattern, s->plen, (const char *)payload, h->aux)) {
        *why = "the topic does not match the gateway's pattern";
        return -EINVAL;
    }
    if (bk_subs_group_ordinary(s->group) == 0) {
        *why = "the group has no member here";
        return -ENOENT;
    }
    return 0;
}

/* "members=N" on BK_TOPIC_MEMBERS to gateway `only`, or to every gateway
 * of g but those of a client `leaving`: how many members that are not
 * gateways g has now. */
static void notify_gateways(bk_server_t *srv, bk_subs_group_t *g,
                            bk_sub_t *only, const bk_port_t *leaving)
{
    static const char topic[] = BK_TOPIC_MEMBERS;
    uint8_t buf[sizeof(topic) + 32];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, .stream = 1,
        .aux = (uint32_t)(sizeof(topic) - 1),
    };
    fan_t fan = { .srv = srv, .h = &h, .payload = buf };
    int n;

    memcpy(buf, topic, sizeof(topic) - 1);
    n = snprintf((char *)buf + h.aux, sizeof(buf) - h.aux, "members=%u\n",
                 (unsigned)bk_subs_group_ordinary(g));
    h.length = h.aux + (uint32_t)n;
    if (only) {
        deliver_first(&fan, only);
    } else {
        bk_sub_t *s;
        bk_list_for_each(s, &g->members, bk_sub_t, node_link)
            if ((s->flags & BK_SUB_F_GATEWAY) && s->owner != leaving)
                deliver_first(&fan, s);
    }
    bk_opayload_put(fan.shared);
}

static bk_port_t *rcpt_port(bk_server_t *srv, const bk_pub_rcpt_t *r)
{
    bk_port_t *to = bk_server_find(srv, r->client);

    return to && !to->failed && to->fd >= 0 && !to->hangup ? to : NULL;
}

/* A fragment of the publication could not be queued for r (out of
 * memory): since fragments carry no offset, r must not get the rest
 * joined to what it has.  Its delivery ends with an ERROR (it drops the
 * partial message), counts as a drop, and r gets no more fragments. */
static void drop_delivery(bk_port_t *from, bk_port_t *to, bk_pub_rcpt_t *r)
{
    static const char text[] = "broker out of memory: the publication was "
                               "dropped";
    bk_sub_t *s = port_sub(to, r->sub);
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_ERROR, .stream = r->sid,
        .aux = bk_err_to_wire(-ENOMEM), .source = from->id, .dest = to->id,
        .length = sizeof(text) - 1,
    };

    /* bounded: once per delivery (r is skipped from now on), and only
     * while the broker is out of memory */
    to->errors++;
    bk_mon_tap(from, to, 0, &h, text);
    bk_port_send(to, &h, text, NULL, 0, NULL);
    if (s)
        count_drop(to, s, 1);
    r->client = 0;              /* no port has id 0: skipped from now on */
}

void bk_pub_forward(bk_port_t *from, bk_pub_t *rec, const bk_hdr_t *h,
                    const uint8_t *payload)
{
    bk_opayload_t *shared = NULL;

    for (uint32_t i = 0; i < rec->n; i++) {
        bk_pub_rcpt_t *r = &rec->r[i];
        bk_port_t *to = rcpt_port(from->srv, r);
        bk_hdr_t o = *h;

        if (!to)
            continue;
        o.source = from->id;
        o.dest = h->type == BK_T_DATA ? r->sub : to->id;
        o.stream = r->sid;
        bk_mon_tap(from, to, h->stream, &o, payload);
        if (bk_port_send_pub(to, &o, payload, &shared, NULL, 0,
                             r->policy == BK_SUB_BLOCK ? from : NULL,
                             NULL) == -ENOMEM)
            drop_delivery(from, to, r);
    }
    bk_opayload_put(shared);
}

void bk_pub_abort(bk_port_t *from, const bk_pub_t *rec, int err,
                  const char *text)
{
    bk_opayload_t *shared = NULL;

    for (uint32_t i = 0; i < rec->n; i++) {
        bk_port_t *to = rcpt_port(from->srv, &rec->r[i]);
        bk_hdr_t h = {
            .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
            .stream = rec->r[i].sid, .aux = bk_err_to_wire(err),
            .source = from->id, .length = (uint32_t)strlen(text),
        };

        if (!to)
            continue;
        h.dest = to->id;
        /* bounded: once per delivery in progress, each a stream the
         * publisher holds (max-streams) */
        to->errors++;
        bk_mon_tap(from, to, 0, &h, text);
        /* behind the fragments already queued for that delivery */
        bk_port_send_pub(to, &h, text, &shared, NULL, 0, NULL, NULL);
    }
    bk_opayload_put(shared);
}

void bk_pub_free(bk_pub_t *rec)
{
    free(rec);
}

/* ---- announcements ------------------------------------------------------------ */

void bk_pub_announce(bk_server_t *srv, const char *topic, const char *text,
                     size_t len)
{
    size_t tlen = strlen(topic);
    uint8_t buf[BK_MAX_TOPIC + 512];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, .stream = 1,
        .aux = (uint32_t)tlen,
    };

    if (srv->stopping || tlen + len > sizeof(buf) ||
        bk_subs_count(srv->subs) == 0)
        return;
    memcpy(buf, topic, tlen);
    memcpy(buf + tlen, text, len);
    h.length = (uint32_t)(tlen + len);
    bk_pub_fanout(srv, NULL, &h, buf, NULL, NULL);
}

void bk_pub_name_changed(const char *name, size_t len, uint64_t old,
                         uint64_t new_owner, void *arg)
{
    char text[BK_MAX_NAME + 64];
    int n = snprintf(text, sizeof(text), "name=%.*s old=%llu new=%llu\n",
                     (int)len, name, (unsigned long long)old,
                     (unsigned long long)new_owner);

    if (n > 0 && (size_t)n < sizeof(text))
        bk_pub_announce(arg, BK_TOPIC_NAMES, text, (size_t)n);
}

/* comm percent-escaped as in listings (inspect.h). */
static void escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c > ' ' && c <= '~' && c != '%' && c != '=' && c != ',') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

void bk_pub_client_event(bk_port_t *p, const char *event)
{
    char comm[3 * sizeof(p->comm) + 1], text[160];
    int n;

    escape(p->comm, comm, sizeof(comm));
    n = snprintf(text, sizeof(text), "event=%s id=%llu pid=%d uid=%u "
                 "comm=%s\n", event, (unsigned long long)p->id, (int)p->pid,
                 (unsigned)p->uid, comm);
    if (n > 0 && (size_t)n < sizeof(text))
        bk_pub_announce(p->srv, BK_TOPIC_CLIENTS, text, (size_t)n);
}
