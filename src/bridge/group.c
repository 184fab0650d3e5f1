/*
 * group.c - queue groups spanning hosts (prefix bn_group_).
 *
 * For `import-group = PATTERN GROUP` the bridge is a gateway of the local
 * queue group GROUP on PATTERN (libbroker BROKER_SUB_GATEWAY): brokerd
 * gives it the group's share of every local publication instead of a
 * local member, and tells it how many members the group has here.
 *
 *   local share    goes to NATS as PREFIX.TOPIC, once: when an export
 *                  pattern matches the topic too, the export's copy is
 *                  that message and the share is not sent again.  One
 *                  that NATS cannot carry whole (it would be split) is
 *                  handed to a local member instead: parts spread over
 *                  a queue group could never be joined.
 *   NATS side      while the group has members here, a queue
 *                  subscription on PREFIX.PATTERN in NATS queue group
 *                  GROUP, on the group connection (nats.c: it gets this
 *                  host's own publications too, so the members here are
 *                  chosen for them like any other).  What it gets is
 *                  handed to one local member (broker_publish_group).
 *
 * brokerd never gives the group a publication of the bridge itself (it
 * came from NATS: the group had its share where it was published), so a
 * message crosses to the group once whatever the other imports do.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"
#include "map.h"
#include "proto.h"
#include "topic.h"

static bn_group_t *bn_group_by_sub(bn_bridge_t *br, uint32_t sub_id)
{
    for (size_t i = 0; i < BN_MAX_LIST && sub_id; i++)
        if (br->groups[i].key && br->groups[i].sub_id == sub_id)
            return &br->groups[i];
    return NULL;
}

static bn_group_t *bn_group_by_tag(bn_bridge_t *br, uint32_t tag)
{
    for (size_t i = 0; i < BN_MAX_LIST; i++)
        if (br->groups[i].key && tag &&
            ((br->groups[i].nsub && br->groups[i].nats_id == tag) ||
             br->groups[i].drain_id == tag))
            return &br->groups[i];
    return NULL;
}

/* ---- the NATS side ------------------------------------------------------- */

static void bn_group_nats_one(bn_bridge_t *br, bn_group_t *g)
{
    bool want = br->gnc && g->key && g->sub_id && g->members > 0 &&
                !br->stopping;
    char subj[BN_MAP_SUBJ_MAX];

    if (want && !g->nsub) {
        if (bn_map_subject(br->conf.prefix, g->pattern, subj,
                           sizeof(subj)) == 0 &&
            bn_nats_subscribe(br, subj, g->name, BN_SUB_GROUP, &g->nats_id,
                              &g->nsub) == 0)
            bn_log(BN_LOG_INFO, "group %s on %s: joined the NATS queue "
                   "group (%u member(s) here)", g->name, g->pattern,
                   (unsigned)g->members);
    } else if (!want && g->nsub) {
        /* what NATS chose this host for before it learns is still
         * taken: handed on if a member came back, else counted */
        g->drain_id = g->nats_id;
        bn_nats_drain(&g->nsub);
        bn_log(BN_LOG_INFO, "group %s on %s: left the NATS queue group "
               "(no member here)", g->name, g->pattern);
    }
}

void bn_group_nats_sync(bn_bridge_t *br)
{
    for (size_t i = 0; i < BN_MAX_LIST; i++)
        if (br->groups[i].key)
            bn_group_nats_one(br, &br->groups[i]);
}

/* Hand data on topic to one local member of g. */
static int bn_group_hand(bn_bridge_t *br, bn_group_t *g, const char *topic,
                         const void *data, size_t len)
{
    int r;

    if (!br->b || !g->sub_id || g->members == 0) {
        bn_stats_drop(br, &br->st.drop_group, "the group has no member "
                      "here", topic);
        return -ENOENT;
    }
    if (broker_pending(br->b) > br->conf.local_backlog) {
        bn_stats_drop(br, &br->st.drop_local_backlog,
                      "brokerd is behind (local-backlog)", topic);
        return -ENOBUFS;
    }
    r = broker_publish_group(br->b, g->sub_id, topic, data, len, NULL, 0);
    if (r < 0)
        bn_stats_drop(br, &br->st.drop_invalid, broker_strerror(r), topic);
    return r;
}

void bn_group_nats_msg(bn_bridge_t *br, uint32_t id, natsMsg *msg)
{
    const char *subject = natsMsg_GetSubject(msg);
    const char *topic = bn_map_topic(br->conf.prefix, subject);
    bn_group_t *g = bn_group_by_tag(br, id);

    if (!topic) {
        bn_stats_drop(br, &br->st.drop_invalid, "not a topic", subject);
    } else if (!g) {                /* it left the queue group meanwhile */
        bn_stats_drop(br, &br->st.drop_group, "the group has no member "
                      "here", topic);
    } else if (bn_parts_is_part(msg)) {
        /* a split publication's parts: its origin handed it to a member
         * there (see the top) */
        br->st.group_parts_skipped++;
    } else if (bn_group_hand(br, g, topic, natsMsg_GetData(msg),
                             (size_t)natsMsg_GetDataLength(msg)) == 0) {
        br->st.msgs_in++;
        br->st.bytes_in += (size_t)natsMsg_GetDataLength(msg);
        br->st.group_in++;
    }
    natsMsg_Destroy(msg);
}

/* ---- the local side ------------------------------------------------------ */

static void bn_group_members(bn_bridge_t *br, bn_group_t *g,
                             const broker_msg_t *m)
{
    unsigned n;
    char text[32];

    if (m->len >= sizeof(text))
        return;
    memcpy(text, m->data, m->len);
    text[m->len] = '\0';
    if (sscanf(text, "members=%u", &n) != 1) {
        bn_log(BN_LOG_WARN, "group %s: brokerd's notice '%s' not understood",
               g->name, text);
        return;
    }
    bn_log(BN_LOG_DEBUG, "group %s on %s: %u member(s) here", g->name,
           g->pattern, n);
    g->members = n;
    bn_group_nats_one(br, g);
}

/* The group's share of a local publication. */
static void bn_group_share(bn_bridge_t *br, bn_group_t *g,
                           const broker_msg_t *m)
{
    if (m->flags & BROKER_MSGF_CHUNK) {
        bn_stats_drop(br, &br->st.drop_size, "larger than the library's "
                      "max message", m->topic);
    } else if (m->nfds) {
        bn_stats_drop(br, &br->st.drop_fds, "carries file descriptors",
                      m->topic);
    } else if (!bn_nats_fits(br, m->len)) {
        if (bn_group_hand(br, g, m->topic, m->data, m->len) == 0)
            br->st.group_kept++;
    } else if (!bn_export_covers(br, m->topic)) {
        bn_export_send(br, m);
        br->st.group_out++;
    }
}

bool bn_group_local_msg(bn_bridge_t *br, broker_msg_t *msg)
{
    static const char members[] = BK_TOPIC_MEMBERS;
    bn_group_t *g = bn_group_by_sub(br, msg->sub_id);

    if (!g)
        return false;
    if (msg->source == 0 && !strcmp(msg->topic, members))
        bn_group_members(br, g, msg);
    else
        bn_group_share(br, g, msg);
    broker_msg_free(msg);
    return true;
}

static void bn_group_subscribed(broker_t *b, int err, uint32_t id, void *ud)
{
    bn_group_t *g = ud;

    g->pending = false;
    if (err == -ECANCELED)
        return;
    if (err < 0) {
        bn_log(BN_LOG_ERROR, "import-group %s: cannot join the local group "
               "as its gateway: %s", g->key ? g->key : "?",
               broker_strerror(err));
        free(g->key);
        g->key = NULL;
        return;
    }
    if (!g->key) {                  /* a reload removed it meanwhile */
        broker_unsubscribe(b, id);
        return;
    }
    g->sub_id = id;
    bn_log(BN_LOG_DEBUG, "import-group %s: the local gateway", g->key);
}

/* key "PATTERN GROUP" into g: key, then pattern and name after it. */
static int bn_group_parse(bn_group_t *g, const char *key)
{
    size_t kl = strlen(key), pl = strcspn(key, " ");

    if (pl == kl || !(g->key = malloc(2 * kl + 2)))
        return -ENOMEM;
    memcpy(g->key, key, kl + 1);
    g->pattern = g->key + kl + 1;
    memcpy(g->pattern, key, pl);
    g->pattern[pl] = '\0';
    g->name = g->pattern + pl + 1;
    memcpy(g->name, key + pl + 1, kl - pl);
    return 0;
}

static void bn_group_add(bn_bridge_t *br, const char *key)
{
    bn_group_t *g = NULL;
    int r;

    for (size_t i = 0; i < BN_MAX_LIST && !g; i++)
        if (!br->groups[i].key && !br->groups[i].pending)
            g = &br->groups[i];
    if (!g || bn_group_parse(g, key) < 0) {
        bn_log(BN_LOG_ERROR, "import-group %s: no room", key);
        return;
    }
    g->sub_id = 0;
    g->members = 0;
    g->drain_id = 0;
    r = broker_subscribe_async(br->b, g->pattern, g->name,
                               (broker_sub_policy_t)(br->conf.export_policy |
                                                     BROKER_SUB_NO_FDS |
                                                     BROKER_SUB_GATEWAY),
                               bn_group_subscribed, g);
    if (r < 0) {
        bn_log(BN_LOG_ERROR, "import-group %s: %s", key, broker_strerror(r));
        free(g->key);
        g->key = NULL;
        return;
    }
    g->pending = true;
}

static void bn_group_remove(bn_bridge_t *br, bn_group_t *g)
{
    bn_nats_unsubscribe(&g->nsub);
    if (g->sub_id && br->b)
        broker_unsubscribe(br->b, g->sub_id);
    g->sub_id = 0;
    g->members = 0;
    free(g->key);
    g->key = NULL;
}

void bn_group_sync(bn_bridge_t *br)
{
    const bn_list_t *want = &br->conf.groups;
    bool have;

    for (size_t i = 0; i < BN_MAX_LIST; i++)
        if (br->groups[i].key && !bn_list_has(want, br->groups[i].key))
            bn_group_remove(br, &br->groups[i]);
    for (size_t w = 0; w < want->n; w++) {
        have = false;
        for (size_t i = 0; i < BN_MAX_LIST && !have; i++)
            have = br->groups[i].key && !strcmp(br->groups[i].key,
                                                want->v[w]);
        if (!have)
            bn_group_add(br, want->v[w]);
    }
    bn_nats_group_connect(br);
}

void bn_group_nats_lost(bn_bridge_t *br)
{
    for (size_t i = 0; i < BN_MAX_LIST; i++)
        bn_nats_unsubscribe(&br->groups[i].nsub);
}

void bn_group_stop(bn_bridge_t *br)
{
    for (size_t i = 0; i < BN_MAX_LIST; i++) {
        bn_nats_unsubscribe(&br->groups[i].nsub);
        free(br->groups[i].key);
        br->groups[i].key = NULL;
    }
}
