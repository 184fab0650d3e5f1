/*
 * export.c - local publications on the export patterns, sent to NATS as
 * PREFIX.TOPIC (prefix bn_export_).
 *
 * One local subscription per pattern (export-policy: BLOCK holds the
 * local publishers back while the bridge is behind, DROP lets brokerd
 * drop and count).  A publication is not exported when it was published
 * by the bridge itself (its sender is the bridge's client id: it came
 * from NATS), when an earlier export pattern matches it too (that
 * subscription delivers it as well), or when it is larger than
 * max-message; each is counted.  One larger than the server's max_payload
 * goes as parts (parts.c).  The subscriptions take no file descriptors
 * (BROKER_SUB_NO_FDS): brokerd refuses such a publication to its
 * publisher with EXDEV, and one that comes anyway is dropped (drop_fds).
 * Shared-memory payloads are copied into the NATS messages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"
#include "map.h"
#include "topic.h"

static void bn_export_subscribed(broker_t *b, int err, uint32_t id,
                                 void *ud)
{
    bn_export_t *e = ud;

    e->pending = false;
    if (err == -ECANCELED)
        return;
    if (err < 0) {
        bn_log(BN_LOG_ERROR, "export %s: cannot subscribe: %s",
               e->pattern ? e->pattern : "?", broker_strerror(err));
        free(e->pattern);
        e->pattern = NULL;
        return;
    }
    if (!e->pattern) {              /* a reload removed it meanwhile */
        broker_unsubscribe(b, id);
        return;
    }
    e->sub_id = id;
    bn_log(BN_LOG_DEBUG, "export %s: subscribed", e->pattern);
}

static void bn_export_add(bn_bridge_t *br, const char *pattern)
{
    bn_export_t *e = NULL;
    int r;

    for (size_t i = 0; i < BN_MAX_LIST && !e; i++)
        if (!br->exports[i].pattern && !br->exports[i].pending)
            e = &br->exports[i];
    if (!e || !(e->pattern = strdup(pattern))) {
        bn_log(BN_LOG_ERROR, "export %s: no room", pattern);
        return;
    }
    e->br = br;
    e->sub_id = 0;
    r = broker_subscribe_async(br->b, pattern, NULL,
                               (broker_sub_policy_t)(br->conf.export_policy |
                                                     BROKER_SUB_NO_FDS),
                               bn_export_subscribed, e);
    if (r < 0) {
        bn_log(BN_LOG_ERROR, "export %s: %s", pattern, broker_strerror(r));
        free(e->pattern);
        e->pattern = NULL;
        return;
    }
    e->pending = true;
}

static void bn_export_remove(bn_bridge_t *br, bn_export_t *e)
{
    if (e->sub_id && br->b)
        broker_unsubscribe(br->b, e->sub_id);
    e->sub_id = 0;
    free(e->pattern);
    e->pattern = NULL;
}

void bn_export_sync(bn_bridge_t *br)
{
    const bn_list_t *want = &br->conf.exports;
    bool have;

    for (size_t i = 0; i < BN_MAX_LIST; i++)
        if (br->exports[i].pattern &&
            !bn_list_has(want, br->exports[i].pattern))
            bn_export_remove(br, &br->exports[i]);
    for (size_t w = 0; w < want->n; w++) {
        have = false;
        for (size_t i = 0; i < BN_MAX_LIST && !have; i++)
            have = br->exports[i].pattern &&
                   !strcmp(br->exports[i].pattern, want->v[w]);
        if (!have)
            bn_export_add(br, want->v[w]);
    }
}

void bn_export_stop(bn_bridge_t *br)
{
    for (size_t i = 0; i < BN_MAX_LIST; i++) {
        free(br->exports[i].pattern);
        br->exports[i].pattern = NULL;
    }
}

/* The export whose subscription delivered msg, if it is the first export
 * that matches the topic (else another copy is on its way). */
static bn_export_t *bn_export_owner(bn_bridge_t *br, const broker_msg_t *m)
{
    size_t tl = strlen(m->topic);

    for (size_t i = 0; i < BN_MAX_LIST; i++) {
        bn_export_t *e = &br->exports[i];

        if (!e->pattern || !e->sub_id)
            continue;
        if (e->sub_id == m->sub_id)
            return e;
        if (bk_topic_match(e->pattern, strlen(e->pattern), m->topic, tl))
            return NULL;
    }
    return NULL;
}

bool bn_export_covers(const bn_bridge_t *br, const char *topic)
{
    size_t tl = strlen(topic);

    for (size_t i = 0; i < BN_MAX_LIST; i++) {
        const bn_export_t *e = &br->exports[i];

        if (e->pattern && e->sub_id &&
            bk_topic_match(e->pattern, strlen(e->pattern), topic, tl))
            return true;
    }
    return false;
}

void bn_export_send(bn_bridge_t *br, const broker_msg_t *m)
{
    char subj[BN_MAP_SUBJ_MAX];
    int r;

    if (m->nfds) {
        bn_stats_drop(br, &br->st.drop_fds, "carries file descriptors",
                      m->topic);
        return;
    }
    if (!bn_map_exportable(m->topic) ||
        bn_map_subject(br->conf.prefix, m->topic, subj, sizeof(subj)) < 0) {
        bn_stats_drop(br, &br->st.drop_invalid, "reserved topic", m->topic);
        return;
    }
    if (m->len > br->conf.max_message) {
        bn_stats_drop(br, &br->st.drop_size, "larger than max-message",
                      m->topic);
        return;
    }
    r = bn_nats_publish(br, subj, NULL, m->data, m->len, 0);
    if (r == -EMSGSIZE && (r = bn_parts_send(br, subj, m->data,
                                             m->len)) == 0)
        br->st.msgs_split++;
    if (r == 0) {
        br->st.msgs_out++;
        br->st.bytes_out += m->len;
    } else if (r == -EMSGSIZE) {
        bn_stats_drop(br, &br->st.drop_size, "max_payload too small to "
                      "split", m->topic);
    } else if (r == -ENOBUFS) {
        bn_stats_drop(br, &br->st.drop_reconnect_buffer,
                      "reconnect buffer full", m->topic);
    } else {
        bn_stats_drop(br, &br->st.drop_disconnected, "NATS not connected",
                      m->topic);
    }
}

void bn_export_publication(bn_bridge_t *br, broker_msg_t *msg)
{
    if (bn_export_owner(br, msg)) {
        if (msg->source == br->self_id)
            br->st.loop_skipped++;
        else if (!(msg->flags & BROKER_MSGF_CHUNK))
            bn_export_send(br, msg);
        else
            bn_stats_drop(br, &br->st.drop_size, "larger than the "
                          "library's max message", msg->topic);
    }
    broker_msg_free(msg);
}
