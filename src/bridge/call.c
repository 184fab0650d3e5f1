/*
 * call.c - requests and one-way messages across hosts (prefix bn_call_).
 *
 * Calling out: a local client calls HOST/NAME, a name the bridge owns for
 * a remote offer (offers.c).  The bridge publishes the request on
 * PREFIX._call.HOST.NAME with the reply subject INBOX.N (its own inbox,
 * one subscription INBOX.*) and keeps the request until the reply, an
 * error or call-timeout; then answers the local caller.  A one-way
 * message to HOST/NAME is published without a reply subject.
 *
 * Called in: the bridge subscribes PREFIX._call.HOST.NAME for every
 * `offer = NAME` of this host, makes the call locally (broker_call_async)
 * and publishes the answer on the request's reply subject.  An error goes
 * back as an empty reply with the header Brokerd-Error: ERRNO.
 *
 * Nothing with file descriptors crosses (-EXDEV), nor anything larger than
 * the server's max_payload (-EMSGSIZE); streams do not cross either: only
 * a stream's first message, as a request or a one-way message.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"
#include "map.h"

typedef struct bn_call_out {
    struct bn_call_out *next;
    uint64_t id;
    uint64_t deadline_ms;
    broker_msg_t *req;              /* the local request, answered later */
} bn_call_out_t;

/* A call in from NATS, waiting for the local answer. */
typedef struct bn_call_in {
    bn_bridge_t *br;
    char reply[];                   /* the NATS reply subject */
} bn_call_in_t;

/* ---- calling out ------------------------------------------------------------ */

static int bn_call_errno_of(int publish_err)
{
    switch (publish_err) {
    case -EMSGSIZE: return -EMSGSIZE;
    case -ENOBUFS: return -ENOBUFS;
    case -ENOMEM: return -ENOMEM;
    default: return -ENETDOWN;
    }
}

static void bn_call_answer(bn_bridge_t *br, broker_msg_t *req, int err,
                           const void *data, size_t len)
{
    int r = err < 0 ? broker_reply_error(br->b, req, err)
                    : broker_reply(br->b, req, data, len, NULL, 0);

    if (err < 0)
        br->st.calls_out_failed++;
    if (r < 0 && r != -ENOENT)
        bn_log(BN_LOG_DEBUG, "reply to %s: %s", req->name,
               broker_strerror(r));
}

/* Publish the request; 0 or the error for the caller. */
static int bn_call_out(bn_bridge_t *br, broker_msg_t *msg, const char *subj)
{
    char reply[sizeof(br->inbox) + 24];
    bn_call_out_t *c;
    int r;

    if (br->ncalls_out >= br->conf.max_calls)
        return -EAGAIN;
    if (!br->inbox_sub)
        return -ENETDOWN;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->id = ++br->next_call;
    snprintf(reply, sizeof(reply), "%s.%llu", br->inbox,
             (unsigned long long)c->id);
    r = bn_nats_publish(br, subj, reply, msg->data, msg->len, 0);
    if (r < 0) {
        free(c);
        if (r == -EMSGSIZE)
            bn_stats_drop(br, &br->st.drop_size, "larger than max_payload",
                          msg->name);
        return bn_call_errno_of(r);
    }
    c->deadline_ms = bn_now_ms() + br->conf.call_timeout_ms;
    c->req = msg;
    c->next = br->calls;
    br->calls = c;
    br->ncalls_out++;
    br->st.calls_out++;
    return 0;
}

/* A one-way message to HOST/NAME. */
static void bn_call_send_out(bn_bridge_t *br, broker_msg_t *msg,
                             const char *subj)
{
    int r = bn_nats_publish(br, subj, NULL, msg->data, msg->len, 0);

    if (r == 0)
        br->st.sends_out++;
    else if (r == -EMSGSIZE)
        bn_stats_drop(br, &br->st.drop_size, "larger than max_payload",
                      msg->name);
    else
        bn_stats_drop(br, &br->st.drop_disconnected, "NATS not connected",
                      msg->name);
}

void bn_call_local_msg(bn_bridge_t *br, broker_msg_t *msg)
{
    char subj[BN_MAP_SUBJ_MAX], host[64];
    int hl = bn_map_split_remote(msg->name), err = 0;
    bool request = broker_msg_is_request(msg);

    if (hl < 0 || !(msg->flags & BROKER_MSGF_OPEN)) {
        broker_msg_free(msg);       /* later messages of a stream */
        return;
    }
    snprintf(host, sizeof(host), "%.*s", hl, msg->name);
    if (msg->nfds) {
        bn_stats_drop(br, &br->st.drop_fds, "carries file descriptors",
                      msg->name);
        err = -EXDEV;
    } else if (msg->flags & BROKER_MSGF_CHUNK) {
        err = -EMSGSIZE;
    } else if (bn_map_call_subject(br->conf.prefix, host,
                                   msg->name + hl + 1, subj,
                                   sizeof(subj)) < 0) {
        err = -EINVAL;
    } else if (!request) {
        bn_call_send_out(br, msg, subj);
    } else {
        err = bn_call_out(br, msg, subj);
        if (err == 0)
            return;                 /* the request waits in br->calls */
    }
    if (request && err < 0)
        bn_call_answer(br, msg, err, NULL, 0);
    broker_msg_free(msg);
}

static bn_call_out_t *bn_call_take(bn_bridge_t *br, uint64_t id)
{
    for (bn_call_out_t **p = &br->calls; *p; p = &(*p)->next)
        if ((*p)->id == id) {
            bn_call_out_t *c = *p;

            *p = c->next;
            br->ncalls_out--;
            return c;
        }
    return NULL;
}

/* The code of a Brokerd-Error header: a positive errno, or 0. */
static int bn_call_header_err(natsMsg *msg)
{
    const char *v = NULL;
    char *end;
    long e;

    if (natsMsgHeader_Get(msg, BN_MAP_ERROR, &v) != NATS_OK || !v)
        return 0;
    e = strtol(v, &end, 10);
    return *end || e < 1 || e > 4095 ? EPROTO : (int)e;
}

void bn_call_reply_msg(bn_bridge_t *br, natsMsg *msg)
{
    const char *subj = natsMsg_GetSubject(msg);
    size_t il = strlen(br->inbox);
    bn_call_out_t *c = NULL;
    char *end;
    unsigned long long id;
    int e;

    if (!strncmp(subj, br->inbox, il) && subj[il] == '.') {
        id = strtoull(subj + il + 1, &end, 10);
        if (!*end)
            c = bn_call_take(br, id);
    }
    if (c) {
        e = natsMsg_IsNoResponders(msg) ? ENOENT : bn_call_header_err(msg);
        bn_call_answer(br, c->req, -e, natsMsg_GetData(msg),
                       (size_t)natsMsg_GetDataLength(msg));
        broker_msg_free(c->req);
        free(c);
    }
    natsMsg_Destroy(msg);
}

void bn_call_tick(bn_bridge_t *br)
{
    uint64_t now = bn_now_ms();
    bn_call_out_t **p = &br->calls, *c;

    while ((c = *p)) {
        if (c->deadline_ms > now) {
            p = &c->next;
            continue;
        }
        *p = c->next;
        br->ncalls_out--;
        bn_call_answer(br, c->req, -ETIMEDOUT, NULL, 0);
        broker_msg_free(c->req);
        free(c);
    }
}

/* ---- called in ------------------------------------------------------------ */

static void bn_call_in_answer(bn_bridge_t *br, const char *reply, int err,
                              const void *data, size_t len)
{
    int r = bn_nats_publish(br, reply, NULL, data, len, err);

    if (r == -EMSGSIZE) {
        bn_stats_drop(br, &br->st.drop_size, "reply larger than "
                      "max_payload", reply);
        r = bn_nats_publish(br, reply, NULL, NULL, 0, -EMSGSIZE);
    }
    if (err < 0 || r < 0)
        br->st.calls_in_failed++;
}

static void bn_call_in_done(broker_t *b, int err, broker_msg_t *reply,
                            void *ud)
{
    bn_call_in_t *ci = ud;
    bn_bridge_t *br = ci->br;

    (void)b;
    br->ncalls_in--;
    if (err == -ECANCELED) {
        /* broker_close during shutdown: nobody answers */
    } else if (err < 0) {
        bn_call_in_answer(br, ci->reply, err, NULL, 0);
    } else if (reply->nfds) {
        bn_stats_drop(br, &br->st.drop_fds, "reply carries file "
                      "descriptors", ci->reply);
        bn_call_in_answer(br, ci->reply, -EXDEV, NULL, 0);
    } else {
        bn_call_in_answer(br, ci->reply, 0, reply->data, reply->len);
    }
    broker_msg_free(reply);
    free(ci);
}

static const char *bn_call_offer_name(const bn_bridge_t *br, uint32_t id)
{
    for (size_t i = 0; i < br->noffers; i++)
        if (br->offers[i].id == id)
            return br->offers[i].key;
    return NULL;
}

static void bn_call_in(bn_bridge_t *br, const char *name, natsMsg *msg,
                       const char *reply)
{
    size_t rl = strlen(reply);
    bn_call_in_t *ci;
    int r;

    if (br->ncalls_in >= br->conf.max_calls) {
        bn_call_in_answer(br, reply, -EAGAIN, NULL, 0);
        return;
    }
    ci = malloc(sizeof(*ci) + rl + 1);
    if (!ci) {
        bn_call_in_answer(br, reply, -ENOMEM, NULL, 0);
        return;
    }
    ci->br = br;
    memcpy(ci->reply, reply, rl + 1);
    r = broker_call_async(br->b, name, natsMsg_GetData(msg),
                          (size_t)natsMsg_GetDataLength(msg),
                          (int)br->conf.call_timeout_ms, bn_call_in_done, ci);
    if (r < 0) {
        free(ci);
        bn_call_in_answer(br, reply, r, NULL, 0);
        return;
    }
    br->ncalls_in++;
    br->st.calls_in++;
}

void bn_call_offer_msg(bn_bridge_t *br, uint32_t id, natsMsg *msg)
{
    const char *name = bn_call_offer_name(br, id);
    const char *reply = natsMsg_GetReply(msg);
    int r;

    if (!name || !br->b) {
        /* unsubscribed by a reload meanwhile */
    } else if (reply && *reply) {
        bn_call_in(br, name, msg, reply);
    } else {
        r = broker_send(br->b, name, natsMsg_GetData(msg),
                        (size_t)natsMsg_GetDataLength(msg), NULL, 0);
        if (r == 0)
            br->st.sends_in++;
        else
            bn_stats_drop(br, &br->st.drop_invalid, broker_strerror(r),
                          name);
    }
    natsMsg_Destroy(msg);
}

/* ---- the offers' subscriptions ------------------------------------------------ */

static void bn_call_offer_remove(bn_bridge_t *br, size_t i)
{
    bn_nats_unsubscribe(&br->offers[i].sub);
    free(br->offers[i].key);
    memmove(&br->offers[i], &br->offers[i + 1],
            (br->noffers - i - 1) * sizeof(br->offers[0]));
    br->noffers--;
}

static void bn_call_offer_add(bn_bridge_t *br, const char *name)
{
    char subj[BN_MAP_SUBJ_MAX];
    bn_nsub_t *n = &br->offers[br->noffers];

    if (br->noffers == BN_MAX_LIST ||
        bn_map_call_subject(br->conf.prefix, br->conf.host, name, subj,
                            sizeof(subj)) < 0 ||
        !(n->key = strdup(name)))
        return;
    if (bn_nats_subscribe(br, subj, NULL, BN_SUB_OFFER, &n->id,
                          &n->sub) < 0) {
        free(n->key);
        n->key = NULL;
        return;
    }
    br->noffers++;
}

void bn_call_sync_offers(bn_bridge_t *br)
{
    bool have;

    if (!br->nc)
        return;
    for (size_t i = br->noffers; i-- > 0;)
        if (!bn_list_has(&br->conf.offers, br->offers[i].key))
            bn_call_offer_remove(br, i);
    for (size_t w = 0; w < br->conf.offers.n; w++) {
        have = false;
        for (size_t i = 0; i < br->noffers && !have; i++)
            have = !strcmp(br->offers[i].key, br->conf.offers.v[w]);
        if (!have)
            bn_call_offer_add(br, br->conf.offers.v[w]);
    }
}

void bn_call_stop(bn_bridge_t *br)
{
    bn_call_out_t *c;

    while ((c = br->calls)) {
        br->calls = c->next;
        if (br->b)
            broker_reply_error(br->b, c->req, -ESHUTDOWN);
        broker_msg_free(c->req);
        free(c);
    }
    br->ncalls_out = 0;
    while (br->noffers)
        bn_call_offer_remove(br, br->noffers - 1);
}
