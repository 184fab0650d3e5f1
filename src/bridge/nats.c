/*
 * nats.c - the libnats connection on the bridge's libuv loop (prefix
 * bn_nats_).
 *
 * libnats does the socket I/O on the loop through evloop.c.  libnats still
 * calls message and connection callbacks on threads of its own; those
 * callbacks only append an event to the hand-off queue below and wake the
 * loop (a uv_async_t), and everything else happens on the loop's thread.
 * A message's event holds the natsMsg, which the loop's handler destroys.
 * The queue holds at most import-backlog bytes of messages: past that,
 * messages are dropped (and counted) in libnats's thread.
 *
 * The first connection is made on the loop's thread (the adapter needs
 * that); while it fails, a timer tries again with backoff up to
 * reconnect-wait.  After that libnats reconnects by itself, buffering
 * publications up to reconnect-buffer bytes.
 *
 * The main connection is made with no_echo: the server never sends the
 * bridge what it published itself.  That also keeps a NATS queue group
 * from choosing the publisher's own queue subscription, so the queue
 * subscriptions of import-group (group.c) live on a second connection,
 * made while the first is connected and groups are configured (again
 * every reconnect-wait while that fails, or after libnats closed it for
 * good); it gets the bridge's own publications like anybody's.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"
#include "map.h"

enum { BN_EV_DISCONNECTED = 100, BN_EV_RECONNECTED, BN_EV_CLOSED };

typedef struct bn_ev {
    struct bn_ev *next;
    int kind;                   /* BN_SUB_* or BN_EV_* */
    uint32_t id;
    natsMsg *msg;
    size_t bytes;
} bn_ev_t;

/* The hand-off: one per process (libnats's callbacks find it here). */
static struct {
    uv_mutex_t lock;
    uv_async_t async;
    bn_ev_t *head, *tail;
    uint64_t bytes, limit;
    uint64_t dropped;           /* picked up by the loop */
    bool open;
} bn_hand;

static uint32_t bn_nats_next_id = 1;

/* ---- hand-off ----------------------------------------------------------------- */

static void bn_hand_push(int kind, uint32_t id, natsMsg *msg)
{
    size_t bytes = msg ? (size_t)natsMsg_GetDataLength(msg) + 64 : 0;
    bn_ev_t *ev;

    uv_mutex_lock(&bn_hand.lock);
    if (!bn_hand.open || (msg && bn_hand.bytes + bytes > bn_hand.limit)) {
        bn_hand.dropped += msg != NULL;
        uv_mutex_unlock(&bn_hand.lock);
        natsMsg_Destroy(msg);
        return;
    }
    ev = calloc(1, sizeof(*ev));
    if (!ev) {
        bn_hand.dropped += msg != NULL;
        uv_mutex_unlock(&bn_hand.lock);
        natsMsg_Destroy(msg);
        return;
    }
    ev->kind = kind;
    ev->id = id;
    ev->msg = msg;
    ev->bytes = bytes;
    bn_hand.bytes += bytes;
    if (bn_hand.tail)
        bn_hand.tail->next = ev;
    else
        bn_hand.head = ev;
    bn_hand.tail = ev;
    uv_async_send(&bn_hand.async);
    uv_mutex_unlock(&bn_hand.lock);
}

static void bn_nats_on_msg(natsConnection *nc, natsSubscription *sub,
                           natsMsg *msg, void *closure)
{
    uintptr_t tag = (uintptr_t)closure;

    (void)nc;
    (void)sub;
    bn_hand_push((int)(tag >> 24), (uint32_t)(tag & 0xffffffu), msg);
}

static void bn_nats_on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    bn_hand_push(BN_EV_DISCONNECTED, 0, NULL);
}

static void bn_nats_on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    bn_hand_push(BN_EV_RECONNECTED, 0, NULL);
}

static void bn_nats_on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    bn_hand_push(BN_EV_CLOSED, 0, NULL);
}

static void bn_nats_on_error(natsConnection *nc, natsSubscription *sub,
                             natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    /* Slow consumers are counted from the subscriptions (stats.c); the
     * log writes one line with one stdio call, safe from this thread. */
    if (err != NATS_SLOW_CONSUMER)
        bn_log(BN_LOG_WARN, "NATS: %s", natsStatus_GetText(err));
}

/* ---- events on the loop ---------------------------------------------------- */

static void bn_nats_learn_server(bn_bridge_t *br)
{
    br->server[0] = '\0';
    if (br->nc)
        natsConnection_GetConnectedUrl(br->nc, br->server,
                                       sizeof(br->server));
    br->max_payload = br->nc ? natsConnection_GetMaxPayload(br->nc) : 0;
}

static void bn_nats_state_event(bn_bridge_t *br, int kind)
{
    switch (kind) {
    case BN_EV_DISCONNECTED:
        if (br->stopping)
            return;
        br->st.disconnects++;
        br->state = "reconnecting";
        bn_log(BN_LOG_WARN, "NATS: disconnected from %s; reconnecting",
               br->server[0] ? br->server : "the server");
        return;
    case BN_EV_RECONNECTED:
        br->st.reconnects++;
        br->state = "connected";
        bn_nats_learn_server(br);
        bn_log(BN_LOG_INFO, "NATS: reconnected to %s", br->server);
        bn_offers_announce(br, true);
        return;
    case BN_EV_CLOSED:
        br->state = "closed";
        if (br->stopping)
            return;
        bn_log(BN_LOG_ERROR, "NATS: the connection is closed for good "
               "(max-reconnect attempts failed)");
        br->exit_code = 1;
        uv_stop(br->loop);
        return;
    }
}

static void bn_nats_dispatch(bn_bridge_t *br, bn_ev_t *ev)
{
    switch (ev->kind) {
    case BN_SUB_IMPORT:
        bn_import_msg(br, ev->id, ev->msg);
        break;
    case BN_SUB_GROUP:
        bn_group_nats_msg(br, ev->id, ev->msg);
        break;
    case BN_SUB_OFFER:
        bn_call_offer_msg(br, ev->id, ev->msg);
        break;
    case BN_SUB_INBOX:
        bn_call_reply_msg(br, ev->msg);
        break;
    case BN_SUB_CTL:
        bn_offers_ctl_msg(br, ev->msg);
        break;
    default:
        natsMsg_Destroy(ev->msg);
        bn_nats_state_event(br, ev->kind);
    }
}

static void bn_hand_run(uv_async_t *a)
{
    bn_bridge_t *br = a->data;
    bn_ev_t *ev, *next;

    uv_mutex_lock(&bn_hand.lock);
    ev = bn_hand.head;
    bn_hand.head = bn_hand.tail = NULL;
    bn_hand.bytes = 0;
    br->st.drop_backlog += bn_hand.dropped;
    bn_hand.dropped = 0;
    uv_mutex_unlock(&bn_hand.lock);
    for (; ev; ev = next) {
        next = ev->next;
        if (br->stopping && ev->msg)
            natsMsg_Destroy(ev->msg);
        else
            bn_nats_dispatch(br, ev);
        free(ev);
    }
}

/* ---- options and connecting ---------------------------------------------- */

static int bn_nats_fail(const char *what, natsStatus s)
{
    bn_log(BN_LOG_ERROR, "NATS: %s: %s", what, natsStatus_GetText(s));
    return -EINVAL;
}

static natsStatus bn_nats_tls(natsOptions *o, const bn_conf_t *c)
{
    natsStatus s = natsOptions_SetSecure(o, true);

    if (s == NATS_OK && c->tls_ca)
        s = natsOptions_LoadCATrustedCertificates(o, c->tls_ca);
    if (s == NATS_OK && c->tls_cert)
        s = natsOptions_LoadCertificatesChain(o, c->tls_cert, c->tls_key);
    if (s == NATS_OK && c->tls_hostname)
        s = natsOptions_SetExpectedHostname(o, c->tls_hostname);
    if (s == NATS_OK && c->tls_ciphers)
        s = natsOptions_SetCiphers(o, c->tls_ciphers);
    if (s == NATS_OK && !c->tls_verify)
        s = natsOptions_SkipServerVerification(o, true);
    return s;
}

static natsStatus bn_nats_auth(natsOptions *o, const bn_conf_t *c)
{
    natsStatus s = NATS_OK;

    if (c->user)
        s = natsOptions_SetUserInfo(o, c->user, c->password);
    if (s == NATS_OK && c->token)
        s = natsOptions_SetToken(o, c->token);
    if (s == NATS_OK && c->creds)
        s = natsOptions_SetUserCredentialsFromFiles(o, c->creds, NULL);
    return s;
}

/* The group connection reports only errors: libnats reconnects it and
 * restores its subscriptions by itself, and the main connection's state
 * is the bridge's. */
static natsStatus bn_nats_callbacks(natsOptions *o, bn_bridge_t *br,
                                    bool main)
{
    natsStatus s = natsOptions_SetEventLoop(o, br->loop, bn_evloop_attach,
                                            bn_evloop_read, bn_evloop_write,
                                            bn_evloop_detach);

    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, bn_nats_on_error, NULL);
    if (!main)
        return s;
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, bn_nats_on_disconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, bn_nats_on_reconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(o, bn_nats_on_closed, NULL);
    return s;
}

/* The options of the main connection (main) or of the group one. */
static int bn_nats_options(bn_bridge_t *br, bool main, natsOptions **out)
{
    const bn_conf_t *c = &br->conf;
    char name[128];
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);

    snprintf(name, sizeof(name), "brokerd-nats %s%s", c->host,
             main ? "" : " groups");
    if (s == NATS_OK)
        s = natsOptions_SetServers(o, (const char **)c->servers.v,
                                   (int)c->servers.n);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, name);
    if (s == NATS_OK)
        s = natsOptions_SetNoEcho(o, main);
    if (s == NATS_OK)
        s = natsOptions_SetNoRandomize(o, true);
    if (s == NATS_OK)
        s = natsOptions_UseGlobalMessageDelivery(o, true);
    /* Without it libnats holds publications back for its flusher (about
     * a millisecond each way); on the loop, what one pass publishes is
     * still written together. */
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(o, true);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, c->connect_timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, c->reconnect_wait_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, c->max_reconnect);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(o, (int)c->reconnect_buffer);
    if (s == NATS_OK)
        s = bn_nats_auth(o, c);
    if (s == NATS_OK && c->tls)
        s = bn_nats_tls(o, c);
    if (s == NATS_OK)
        s = bn_nats_callbacks(o, br, main);
    if (s != NATS_OK) {
        natsOptions_Destroy(o);
        return bn_nats_fail("options", s);
    }
    *out = o;
    return 0;
}

/* The bridge's own subscriptions: replies to its calls, announcements. */
static int bn_nats_own_subs(bn_bridge_t *br)
{
    char subj[BN_MAP_SUBJ_MAX], *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    int r;

    if (s != NATS_OK)
        return bn_nats_fail("inbox", s);
    snprintf(br->inbox, sizeof(br->inbox), "%s", inbox);
    natsInbox_Destroy(inbox);
    snprintf(subj, sizeof(subj), "%s.*", br->inbox);
    r = bn_nats_subscribe(br, subj, NULL, BN_SUB_INBOX, &br->inbox_id,
                          &br->inbox_sub);
    if (r == 0)
        r = bn_map_ctl_subject(br->conf.prefix, ">", subj, sizeof(subj));
    if (r == 0)
        r = bn_nats_subscribe(br, subj, NULL, BN_SUB_CTL, &br->ctl_id,
                              &br->ctl_sub);
    return r;
}

static void bn_nats_connected_first(bn_bridge_t *br)
{
    br->state = "connected";
    bn_nats_learn_server(br);
    bn_log(BN_LOG_INFO, "NATS: connected to %s (max_payload %lld)",
           br->server, (long long)br->max_payload);
    if (bn_nats_own_subs(br) < 0)
        bn_log(BN_LOG_ERROR, "NATS: cannot subscribe the bridge's own "
               "subjects: calls across hosts will fail");
    bn_import_sync(br);
    bn_call_sync_offers(br);
    bn_offers_announce(br, true);
    bn_nats_group_connect(br);
}

void bn_nats_group_connect(bn_bridge_t *br)
{
    uint64_t now = bn_now_ms();
    natsStatus s;

    if (br->gnc && natsConnection_IsClosed(br->gnc)) {
        bn_log(BN_LOG_WARN, "NATS: the queue groups' connection is closed "
               "(max-reconnect attempts failed); connecting again");
        bn_group_nats_lost(br);
        natsConnection_Destroy(br->gnc);
        br->gnc = NULL;
    }
    /* a connection attempt blocks the loop: only while the main one is up,
     * and once per reconnect-wait */
    if (br->gnc || !bn_nats_connected(br) || !br->conf.groups.n ||
        br->stopping || now < br->group_retry_ms)
        return;
    s = natsConnection_Connect(&br->gnc, br->gopts);
    if (s != NATS_OK) {
        br->gnc = NULL;
        br->group_retry_ms = now + br->conf.reconnect_wait_ms;
        bn_log(br->group_failed ? BN_LOG_DEBUG : BN_LOG_WARN,
               "NATS: cannot connect for the queue groups: %s; trying "
               "again", natsStatus_GetText(s));
        br->group_failed = true;
        return;
    }
    br->group_failed = false;
    bn_log(BN_LOG_DEBUG, "NATS: connected for the queue groups");
    bn_group_nats_sync(br);
}

static void bn_nats_try(uv_timer_t *t)
{
    bn_bridge_t *br = t->data;
    natsStatus s;

    s = natsConnection_Connect(&br->nc, br->nopts);
    if (s == NATS_OK) {
        bn_nats_connected_first(br);
        return;
    }
    br->nc = NULL;
    bn_log(br->connect_delay_ms ? BN_LOG_DEBUG : BN_LOG_WARN,
           "NATS: cannot connect to %s%s: %s; trying again",
           br->conf.servers.v[0], br->conf.servers.n > 1 ? " (and the "
           "other servers)" : "", natsStatus_GetText(s));
    br->connect_delay_ms = br->connect_delay_ms ? br->connect_delay_ms * 2
                                                : 50;
    if (br->connect_delay_ms > br->conf.reconnect_wait_ms)
        br->connect_delay_ms = br->conf.reconnect_wait_ms;
    uv_timer_start(&br->connect_timer, bn_nats_try, br->connect_delay_ms, 0);
}

int bn_nats_start(bn_bridge_t *br)
{
    natsStatus s = nats_Open(-1);
    int r;

    if (s != NATS_OK)
        return bn_nats_fail("library", s);
    r = bn_nats_options(br, true, &br->nopts);
    if (r == 0 && (r = bn_nats_options(br, false, &br->gopts)) < 0) {
        natsOptions_Destroy(br->nopts);
        br->nopts = NULL;
    }
    if (r < 0)
        return r;
    if (uv_mutex_init(&bn_hand.lock) < 0 ||
        uv_async_init(br->loop, &bn_hand.async, bn_hand_run) < 0)
        return bn_nats_fail("hand-off", NATS_ERR);
    bn_hand.async.data = br;
    bn_hand.limit = br->conf.import_backlog;
    bn_hand.open = true;
    br->state = "connecting";
    uv_timer_init(br->loop, &br->connect_timer);
    br->connect_timer.data = br;
    uv_timer_start(&br->connect_timer, bn_nats_try, 0, 0);
    return 0;
}

bool bn_nats_connected(const bn_bridge_t *br)
{
    return br->nc && !strcmp(br->state, "connected");
}

/* ---- subscribing and publishing ----------------------------------------- */

int bn_nats_subscribe(bn_bridge_t *br, const char *subject,
                      const char *group, int kind, uint32_t *id,
                      natsSubscription **sub)
{
    natsConnection *nc = kind == BN_SUB_GROUP ? br->gnc : br->nc;
    uintptr_t tag;
    natsStatus s;

    if (!nc)
        return -ENOTCONN;
    if (bn_nats_next_id > 0xffffffu)
        bn_nats_next_id = 1;
    *id = bn_nats_next_id++;
    tag = ((uintptr_t)kind << 24) | *id;
    if (group)
        s = natsConnection_QueueSubscribe(sub, nc, subject, group,
                                          bn_nats_on_msg, (void *)tag);
    else
        s = natsConnection_Subscribe(sub, nc, subject, bn_nats_on_msg,
                                     (void *)tag);
    if (s != NATS_OK) {
        bn_log(BN_LOG_ERROR, "NATS: subscribe %s: %s", subject,
               natsStatus_GetText(s));
        *sub = NULL;
        *id = 0;
        return -EINVAL;
    }
    bn_log(BN_LOG_DEBUG, "NATS: subscribed %s%s%s", subject,
           group ? " in group " : "", group ? group : "");
    return 0;
}

/* Subscriptions draining (bn_nats_drain), destroyed once closed. */
#define BN_DRAINS (2 * BN_MAX_LIST)
static natsSubscription *bn_drains[BN_DRAINS];
static size_t bn_ndrains;

void bn_nats_drain(natsSubscription **sub)
{
    if (!*sub)
        return;
    if (bn_ndrains < BN_DRAINS &&
        natsSubscription_DrainTimeout(*sub, 2000) == NATS_OK) {
        bn_drains[bn_ndrains++] = *sub;
        *sub = NULL;
        return;
    }
    bn_nats_unsubscribe(sub);
}

void bn_nats_reap_drains(bool all)
{
    for (size_t i = bn_ndrains; i-- > 0;)
        if (all || !natsSubscription_IsValid(bn_drains[i])) {
            natsSubscription_Destroy(bn_drains[i]);
            bn_drains[i] = bn_drains[--bn_ndrains];
        }
}

void bn_nats_unsubscribe(natsSubscription **sub)
{
    if (!*sub)
        return;
    natsSubscription_Unsubscribe(*sub);
    natsSubscription_Destroy(*sub);
    *sub = NULL;
}

static int bn_nats_errno(natsStatus s)
{
    switch (s) {
    case NATS_OK: return 0;
    case NATS_MAX_PAYLOAD: return -EMSGSIZE;
    case NATS_INSUFFICIENT_BUFFER: return -ENOBUFS;
    case NATS_CONNECTION_CLOSED: return -ENOTCONN;
    case NATS_NO_MEMORY: return -ENOMEM;
    default: return -EIO;
    }
}

/* What the header block takes on the wire ("NATS/1.0\r\n", a line
 * "Key: value\r\n" each, "\r\n"): the server counts it in max_payload. */
static size_t bn_nats_hdr_len(const char *const *kv, size_t n)
{
    size_t len = 12;

    for (size_t i = 0; i + 1 < 2 * n; i += 2)
        len += strlen(kv[i]) + 2 + strlen(kv[i + 1]) + 2;
    return len;
}

/* One NATS message with the header pairs kv[0..2n). */
static int bn_nats_send(bn_bridge_t *br, const char *subject,
                        const char *reply, const void *data, size_t len,
                        const char *const *kv, size_t n)
{
    natsMsg *m = NULL;
    natsStatus s;

    if (!br->nc)
        return -ENOTCONN;
    if (len > INT_MAX || (br->max_payload > 0 &&
                          len + bn_nats_hdr_len(kv, n) >
                          (uint64_t)br->max_payload))
        return -EMSGSIZE;
    s = natsMsg_Create(&m, subject, reply, data, (int)len);
    for (size_t i = 0; s == NATS_OK && i < n; i++)
        s = natsMsgHeader_Set(m, kv[2 * i], kv[2 * i + 1]);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(br->nc, m);
    natsMsg_Destroy(m);
    return bn_nats_errno(s);
}

bool bn_nats_fits(const bn_bridge_t *br, size_t len)
{
    const char *kv[2] = { BN_MAP_ORIGIN, br->conf.host };

    return br->max_payload <= 0 ||
           len + bn_nats_hdr_len(kv, 1) <= (uint64_t)br->max_payload;
}

int bn_nats_publish(bn_bridge_t *br, const char *subject, const char *reply,
                    const void *data, size_t len, int err)
{
    char code[16];
    const char *kv[4] = { BN_MAP_ORIGIN, br->conf.host, BN_MAP_ERROR, code };

    snprintf(code, sizeof(code), "%d", -err);
    return bn_nats_send(br, subject, reply, data, len, kv, err < 0 ? 2 : 1);
}

int bn_nats_publish_part(bn_bridge_t *br, const char *subject,
                         const void *data, size_t len, const bn_part_t *p)
{
    char part[32], size[24];
    const char *kv[8] = { BN_MAP_ORIGIN, br->conf.host, BN_MAP_MSG, p->id,
                          BN_MAP_PART, part, BN_MAP_SIZE, size };

    snprintf(part, sizeof(part), "%u/%u", p->index, p->count);
    snprintf(size, sizeof(size), "%llu", (unsigned long long)p->total);
    return bn_nats_send(br, subject, NULL, data, len, kv, 4);
}

/* ---- stopping ----------------------------------------------------------- */

typedef struct bn_nats_wait {
    uv_timer_t timer;
    bool expired, closed;
} bn_nats_wait_t;

static void bn_nats_flush_timeout(uv_timer_t *t)
{
    ((bn_nats_wait_t *)t->data)->expired = true;
}

static void bn_nats_flush_closed(uv_handle_t *h)
{
    ((bn_nats_wait_t *)h->data)->closed = true;
}

/* Run the loop until libnats has written what it buffered (the bye), at
 * most timeout_ms: its writes happen only when the loop polls. */
static void bn_nats_flush(bn_bridge_t *br, unsigned timeout_ms)
{
    bn_nats_wait_t w = { .expired = false, .closed = false };

    if (!br->nc || !bn_nats_connected(br) ||
        natsConnection_Buffered(br->nc) <= 0)
        return;
    uv_timer_init(br->loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, bn_nats_flush_timeout, timeout_ms, 0);
    while (!w.expired && natsConnection_Buffered(br->nc) > 0)
        uv_run(br->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&w.timer, bn_nats_flush_closed);
    while (!w.closed)
        uv_run(br->loop, UV_RUN_NOWAIT);
}

void bn_nats_stop(bn_bridge_t *br)
{
    bn_ev_t *ev, *next;

    /* From here libnats's callbacks destroy what they get themselves. */
    uv_mutex_lock(&bn_hand.lock);
    bn_hand.open = false;
    ev = bn_hand.head;
    bn_hand.head = bn_hand.tail = NULL;
    uv_mutex_unlock(&bn_hand.lock);
    for (; ev; ev = next) {
        next = ev->next;
        natsMsg_Destroy(ev->msg);
        free(ev);
    }
    bn_nats_flush(br, 1000);
    uv_timer_stop(&br->connect_timer);
    uv_close((uv_handle_t *)&br->connect_timer, NULL);
    bn_nats_unsubscribe(&br->inbox_sub);
    bn_nats_unsubscribe(&br->ctl_sub);
    bn_nats_reap_drains(true);
    natsConnection *conns[] = { br->gnc, br->nc };
    for (size_t i = 0; i < 2; i++)
        if (conns[i]) {
            natsConnection_Close(conns[i]);
            natsConnection_Destroy(conns[i]);
        }
    br->gnc = br->nc = NULL;
    natsOptions_Destroy(br->nopts);
    natsOptions_Destroy(br->gopts);
    br->nopts = br->gopts = NULL;
    /* libnats's threads end here; none of its callbacks runs after. */
    nats_CloseAndWait(2000);
    uv_close((uv_handle_t *)&bn_hand.async, NULL);
}
