/*
 * ctrl.c - PING, REGISTER, REGISTER_EX, RELEASE, RESOLVE and STATUS; SUBSCRIBE and
 * UNSUBSCRIBE (pubsub.c keeps the subscriptions); the privileged LIST_*
 * (built by inspect.c), KICK, SHUTDOWN and RELOAD.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ctrl.h"
#include "error.h"
#include "frame.h"
#include "inspect.h"
#include "log.h"
#include "monitor.h"
#include "pubsub.h"
#include "server.h"
#include "shm.h"
#include "topic.h"
#include "user.h"

/* The CTRL_REPLY to req: err is 0 or a negative errno. */
static void reply(bk_port_t *p, const bk_hdr_t *req, int err,
                  const void *payload, size_t len)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_CTRL_REPLY,
        .stream = req->stream, .aux = bk_err_to_wire(err), .dest = p->id,
        .length = (uint32_t)len,
    };

    bk_port_send(p, &h, payload, NULL, 0, p);
    if (err < 0)
        bk_port_count_refusal(p, err);
}

static int check_name(bk_port_t *p, const bk_hdr_t *h, const uint8_t *name)
{
    return bk_name_valid((const char *)name, h->length,
                         p->srv->cfg->max_name) ? 0 : -EINVAL;
}

/* REGISTER (flags 0) and REGISTER_EX: a REGISTER_EX reply carries the
 * outcome (BK_REG_OWNER or BK_REG_QUEUED). */
static void register_name(bk_port_t *p, const bk_hdr_t *h,
                          const uint8_t *name, size_t len, uint32_t flags)
{
    bk_server_t *srv = p->srv;
    uint32_t outcome = 0;
    uint8_t out[4];
    int r = bk_name_valid((const char *)name, len, srv->cfg->max_name) ?
            0 : -EINVAL;

    if (!r && (flags & ~BK_REG_FLAGS_ALL_))
        r = -EINVAL;
    if (!r && !bk_policy_may_own(&srv->cfg->policy,
                                 &(bk_policy_peer_t){ p->uid, p->gid },
                                 (const char *)name, len)) {
        bk_port_refused(p, BK_REFUSE_OWN, "allow-own refuses '%.*s'",
                        (int)len, (const char *)name);
        r = -EACCES;
    }
    if (!r && p->acct &&
        !bk_port_uid_fits(p, BK_QUOTA_NAMES, p->acct->names, 1,
                          srv->cfg->max_names_per_uid, "max-names-per-uid"))
        r = -EDQUOT;
    if (!r)
        r = bk_names_register(&srv->names, (const char *)name, len, p->id,
                              &p->names, srv->cfg->max_names, bk_now_ms(),
                              flags, &outcome);
    if (r == -ENOSR)
        bk_port_refused(p, BK_REFUSE_NAMES, "max-names reached (%u names "
                        "owned or waited for)", srv->cfg->max_names);
    if (!r)
        bk_info("client %" PRIu64 " (pid %d, uid %d, %s) %s '%.*s'", p->id,
                (int)p->pid, (int)p->uid, p->comm,
                outcome == BK_REG_QUEUED ? "waits for" : "owns", (int)len,
                (const char *)name);
    bk_put32(out, outcome);
    if (h->aux == BK_OP_REGISTER_EX && !r)
        reply(p, h, 0, out, sizeof(out));
    else
        reply(p, h, r, "", 0);
}

static void do_register(bk_port_t *p, const bk_hdr_t *h, const uint8_t *name)
{
    register_name(p, h, name, h->length, 0);
}

static void do_register_ex(bk_port_t *p, const bk_hdr_t *h,
                           const uint8_t *b)
{
    if (h->length < 4) {
        reply(p, h, -EINVAL, "", 0);
        return;
    }
    register_name(p, h, b + 4, h->length - 4, bk_get32(b));
}

static void do_release(bk_port_t *p, const bk_hdr_t *h, const uint8_t *name)
{
    int r = check_name(p, h, name);

    if (!r)
        r = bk_names_release(&p->srv->names, (const char *)name, h->length,
                              p->id, &p->names, bk_now_ms());
    reply(p, h, r, "", 0);
}

static void do_resolve(bk_port_t *p, const bk_hdr_t *h, const uint8_t *name)
{
    uint8_t out[8];
    uint64_t id;
    int r = check_name(p, h, name);

    if (r) {
        reply(p, h, r, "", 0);
        return;
    }
    id = bk_names_lookup(&p->srv->names, (const char *)name, h->length);
    if (!id) {
        reply(p, h, -ENOENT, "", 0);
        return;
    }
    bk_put64(out, id);
    reply(p, h, 0, out, sizeof(out));
}

static void do_status(bk_port_t *p, const bk_hdr_t *h)
{
    bk_server_t *srv = p->srv;
    const bk_conf_t *c = srv->cfg;
    uint64_t queued = 0;
    char buf[2048];
    int n;

    for (bk_hnode_t *e = bk_ht_next(&srv->clients, NULL); e;
         e = bk_ht_next(&srv->clients, e))
        queued += bk_container_of(e, bk_port_t, node)->out.bytes;
    n = snprintf(buf, sizeof(buf),
                 "version=%s\npid=%d\nuptime_ms=%" PRIu64 "\nsocket=%s\n"
                 "clients=%u\nnames=%zu\nstreams=%" PRIu64 "\n"
                 "msgs_in=%" PRIu64 "\nmsgs_out=%" PRIu64 "\n"
                 "bytes_in=%" PRIu64 "\nbytes_out=%" PRIu64 "\n"
                 "queued_bytes=%" PRIu64 "\nclients_total=%" PRIu64 "\n"
                 "shm_segments=%" PRIu64 "\nshm_bytes=%" PRIu64 "\n"
                 "shm_held=%" PRIu64 "\nshm_releasing=%" PRIu64 "\nmax_segments=%u\nmax_shm=%" PRIu64 "\n"
                 "protocol_errors=%" PRIu64 "\n"
                 "max_packet=%u\nmax_fds=%u\nmax_msg=%" PRIu64 "\n"
                 "queue_limit=%" PRIu64 "\nmax_streams=%u\nmax_names=%u\n"
                 "max_clients=%u\nmonitors=%u\n"
                 "subscriptions=%zu\npublished=%" PRIu64 "\n"
                 "published_unmatched=%" PRIu64 "\ndelivered_pub=%" PRIu64
                 "\ndropped_pub=%" PRIu64 "\ngroups=%zu\n"
                 "max_subscriptions=%u\n"
                 "users=%zu\nfds_in_flight=%" PRIu64 "\n"
                 "max_fds_in_flight=%" PRIu64 "\nfd_limit=%" PRIu64 "\n"
                 "quota_hits=%" PRIu64 "\nqueued_mem=%" PRIu64 "\n"
                 "max_queued=%" PRIu64 "\nmax_queued_per_uid=%" PRIu64 "\n"
                 "reap_interval=%u\nreap_checks=%" PRIu64 "\nreap_pushes=%"
                 PRIu64 "\nreaped=%" PRIu64 "\n",
                 BROKER_VERSION, (int)getpid(), bk_now_ms() - srv->start_ms,
                 c->socket_path, srv->nclients, bk_names_count(&srv->names),
                 srv->streams.streams, srv->stats.msgs_in,
                 srv->stats.msgs_out, srv->stats.bytes_in,
                 srv->stats.bytes_out, queued, srv->stats.clients_total,
                 srv->stats.shm_segments, srv->stats.shm_bytes,
                 srv->stats.shm_held, srv->releases.pending, c->max_segments, c->max_shm,
                 srv->stats.protocol_errors, c->max_packet, c->max_fds,
                 c->max_msg, c->queue_limit, c->max_streams, c->max_names,
                 c->max_clients, bk_mon_count(srv),
                 bk_subs_count(srv->subs), srv->stats.published,
                 srv->stats.published_unmatched, srv->stats.delivered_pub,
                 srv->stats.dropped_pub, bk_subs_groups(srv->subs),
                 c->max_subs, bk_users_count(&srv->users), srv->users.fds,
                 bk_conf_fds_in_flight(c, srv->users.nofile),
                 srv->users.nofile, srv->users.hits, srv->users.queued,
                 c->max_queued, c->max_queued_per_uid, c->reap_interval_ms,
                 srv->reaper.checks, srv->reaper.pushes,
                 srv->reaper.reaped);
    if (n < 0 || (size_t)n >= sizeof(buf))
        n = (int)strlen(buf);
    reply(p, h, 0, buf, (size_t)n);
}

static uint16_t get16(const uint8_t *b)
{
    return (uint16_t)(b[0] | b[1] << 8);
}

/* SUBSCRIBE: u8 policy, u8 flags, u16 P, u16 G, u16 0, pattern, group. */
static int parse_subscribe(const bk_hdr_t *h, const uint8_t *b,
                           uint16_t *plen, uint16_t *glen)
{
    if (h->length < BK_SUB_REQ_FIXED)
        return -EINVAL;
    *plen = get16(b + 2);
    *glen = get16(b + 4);
    if (b[0] > BK_SUB_POLICY_MAX_ || (b[1] & ~BK_SUB_F_ALL_) ||
        get16(b + 6) ||
        h->length != BK_SUB_REQ_FIXED + (uint32_t)*plen + *glen)
        return -EINVAL;
    if (!bk_topic_pattern_valid((const char *)b + BK_SUB_REQ_FIXED, *plen))
        return -EINVAL;
    if (*glen && !bk_name_valid((const char *)b + BK_SUB_REQ_FIXED + *plen,
                                *glen, BK_MAX_NAME))
        return -EINVAL;
    if ((b[1] & BK_SUB_F_GATEWAY) && !*glen)
        return -EINVAL;         /* a gateway is a group's member */
    return 0;
}

static void do_subscribe(bk_port_t *p, const bk_hdr_t *h, const uint8_t *b)
{
    uint16_t plen, glen;
    uint32_t id = 0;
    uint8_t out[4];
    int r = parse_subscribe(h, b, &plen, &glen);

    /* a gateway sees every message of its group: the operator's right */
    if (!r && (b[1] & BK_SUB_F_GATEWAY) && !bk_inspect_allowed(p))
        r = -EPERM;
    if (!r && p->acct &&
        !bk_port_uid_fits(p, BK_QUOTA_SUBS, p->acct->subs, 1,
                          p->srv->cfg->max_subs_per_uid,
                          "max-subscriptions-per-uid"))
        r = -EDQUOT;
    if (!r)
        r = bk_pub_subscribe(p, (const char *)b + BK_SUB_REQ_FIXED, plen,
                             glen ? (const char *)b + BK_SUB_REQ_FIXED + plen
                                  : NULL, glen, b[0], b[1], &id);
    if (!r && p->acct)
        p->acct->subs++;        /* bk_port_close takes the rest back */
    if (r) {
        reply(p, h, r, "", 0);
        return;
    }
    bk_debug("client %" PRIu64 " subscribes to '%.*s' (sub %u)", p->id,
             (int)plen, (const char *)b + BK_SUB_REQ_FIXED, id);
    bk_put32(out, id);
    reply(p, h, 0, out, sizeof(out));
}

static void do_unsubscribe(bk_port_t *p, const bk_hdr_t *h,
                           const uint8_t *b)
{
    int r;

    if (h->length != 4) {
        reply(p, h, -EINVAL, "", 0);
        return;
    }
    r = bk_pub_unsubscribe(p, bk_get32(b));
    if (!r && p->acct && p->acct->subs)
        p->acct->subs--;
    reply(p, h, r, "", 0);
}

/* LIST_*: payload empty (from the first record) or a u64 cursor, the
 * `next=` of the previous page.  The 4-byte start index of older brokers
 * is refused like any other length (EINVAL): an index would be read as a
 * cursor and silently list the wrong records. */
static void do_list(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload)
{
    size_t room = p->srv->cfg->max_packet - BK_HDR_SIZE, len = 0;
    char *text = NULL;
    uint64_t cursor = 0;
    int r;

    if (h->length != 0 && h->length != BK_LIST_REQ_SIZE) {
        reply(p, h, -EINVAL, "", 0);
        return;
    }
    if (h->length)
        cursor = bk_get64(payload);
    r = bk_inspect_list(p, h->aux, cursor, room, &text, &len);
    reply(p, h, r, r ? "" : text, r ? 0 : len);
    free(text);
}

/* KICK: the target hears an ERROR (ECONNABORTED) and is disconnected. */
static void do_kick(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload)
{
    bk_port_t *t;
    char why[64];

    if (h->length != BK_KICK_REQ_SIZE) {
        reply(p, h, -EINVAL, "", 0);
        return;
    }
    t = bk_server_find(p->srv, bk_get64(payload));
    if (!t || t->failed) {
        reply(p, h, -ENOENT, "", 0);
        return;
    }
    reply(p, h, 0, "", 0);
    bk_info("client %" PRIu64 " (%s) kicks client %" PRIu64 " (%s)", p->id,
            p->comm, t->id, t->comm);
    snprintf(why, sizeof(why), "disconnected by client %" PRIu64, p->id);
    bk_port_error(t, 0, -ECONNABORTED, why, NULL);
    bk_port_fail(t, -ECONNABORTED);
}

static void do_shutdown(bk_port_t *p, const bk_hdr_t *h)
{
    if (h->length) {
        reply(p, h, -EINVAL, "", 0);
        return;
    }
    reply(p, h, 0, "", 0);
    bk_info("client %" PRIu64 " (pid %d, %s) asks for shutdown", p->id,
            (int)p->pid, p->comm);
    bk_server_stop(p->srv);
}

/* RELOAD: re-read the configuration file; on failure the reply carries
 * "FILE:LINE: reason". */
static void do_reload(bk_port_t *p, const bk_hdr_t *h)
{
    char err[512];

    if (h->length) {
        reply(p, h, -EINVAL, "", 0);
        return;
    }
    bk_info("client %" PRIu64 " (pid %d, %s) asks for a reload", p->id,
            (int)p->pid, p->comm);
    if (bk_server_reload(p->srv, err, sizeof(err)) < 0)
        reply(p, h, -EINVAL, err, strlen(err));
    else
        reply(p, h, 0, "", 0);
}

/* MONITOR: from the reply on, the requester gets MONITOR frames. */
static void do_monitor(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload)
{
    int r = bk_mon_add(p, payload, h->length);

    if (r == 0)
        bk_info("client %" PRIu64 " (pid %d, %s) monitors '%.*s'", p->id,
                (int)p->pid, p->comm, (int)h->length, (const char *)payload);
    reply(p, h, r, "", 0);
}

/* The privileged operations, once the requester is known to be allowed. */
static void do_admin(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload)
{
    if (!bk_inspect_allowed(p)) {
        reply(p, h, -EPERM, "", 0);
        return;
    }
    if (h->aux == BK_OP_KICK)
        do_kick(p, h, payload);
    else if (h->aux == BK_OP_SHUTDOWN)
        do_shutdown(p, h);
    else if (h->aux == BK_OP_RELOAD)
        do_reload(p, h);
    else if (h->aux == BK_OP_MONITOR)
        do_monitor(p, h, payload);
    else
        do_list(p, h, payload);
}

void bk_ctrl_refuse(bk_port_t *p, const bk_hdr_t *h, int err)
{
    reply(p, h, err, "", 0);
}

void bk_ctrl_handle(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload,
                    int *fds)
{
    switch (h->aux) {
    case BK_OP_SEGMENT:         /* validated: exactly one fd */
        reply(p, h, bk_shm_register(p, payload, fds[0]), "", 0);
        break;
    case BK_OP_PING:
        reply(p, h, 0, payload, h->length);
        break;
    case BK_OP_REGISTER:
        do_register(p, h, payload);
        break;
    case BK_OP_RELEASE:
        do_release(p, h, payload);
        break;
    case BK_OP_RESOLVE:
        do_resolve(p, h, payload);
        break;
    case BK_OP_STATUS:
        do_status(p, h);
        break;
    case BK_OP_REGISTER_EX:
        do_register_ex(p, h, payload);
        break;
    case BK_OP_SUBSCRIBE:
        do_subscribe(p, h, payload);
        break;
    case BK_OP_UNSUBSCRIBE:
        do_unsubscribe(p, h, payload);
        break;
    case BK_OP_LIST_CLIENTS:
    case BK_OP_LIST_NAMES:
    case BK_OP_LIST_STREAMS:
    case BK_OP_LIST_SHM:
    case BK_OP_LIST_SUBS:
    case BK_OP_LIST_USERS:
    case BK_OP_KICK:
    case BK_OP_SHUTDOWN:
    case BK_OP_RELOAD:
    case BK_OP_MONITOR:
        do_admin(p, h, payload);
        break;
    default:                    /* bk_frame_check_from_client rejects it */
        reply(p, h, -EINVAL, "", 0);
        break;
    }
}
