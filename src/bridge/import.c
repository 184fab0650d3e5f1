/*
 * import.c - NATS subjects PREFIX.TOPIC on the import patterns, published
 * locally on TOPIC (prefix bn_import_).
 *
 * One NATS subscription per `import` pattern (`import-group` is
 * group.c's).  The bridge's connection does not
 * get its own publications back (NATS no_echo); a message that carries
 * this host's origin mark anyway is dropped as a loop.  A message that an
 * earlier import also matches is taken from that one only.  Parts of a
 * split publication (header Brokerd-Part) go to parts.c, which publishes
 * the whole once it has every part.  While more
 * than local-backlog bytes wait to be written to brokerd, imports are
 * dropped and counted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"
#include "map.h"
#include "topic.h"

static void bn_import_add(bn_bridge_t *br, const char *pattern)
{
    char subj[BN_MAP_SUBJ_MAX];
    bn_nsub_t *n = &br->imports[br->nimports];

    if (br->nimports == sizeof(br->imports) / sizeof(br->imports[0]) ||
        bn_map_subject(br->conf.prefix, pattern, subj, sizeof(subj)) < 0)
        return;
    n->key = strdup(pattern);
    if (!n->key)
        return;
    if (bn_nats_subscribe(br, subj, NULL, BN_SUB_IMPORT, &n->id,
                          &n->sub) < 0) {
        free(n->key);
        n->key = NULL;
        return;
    }
    br->nimports++;
}

static void bn_import_remove(bn_bridge_t *br, size_t i)
{
    bn_nats_unsubscribe(&br->imports[i].sub);
    free(br->imports[i].key);
    memmove(&br->imports[i], &br->imports[i + 1],
            (br->nimports - i - 1) * sizeof(br->imports[0]));
    br->nimports--;
}

static bool bn_import_have(const bn_bridge_t *br, const char *key)
{
    for (size_t i = 0; i < br->nimports; i++)
        if (!strcmp(br->imports[i].key, key))
            return true;
    return false;
}

void bn_import_sync(bn_bridge_t *br)
{
    const bn_list_t *want = &br->conf.imports;

    if (!br->nc)
        return;
    for (size_t i = br->nimports; i-- > 0;)
        if (!bn_list_has(want, br->imports[i].key))
            bn_import_remove(br, i);
    for (size_t w = 0; w < want->n; w++)
        if (!bn_import_have(br, want->v[w]))
            bn_import_add(br, want->v[w]);
}

void bn_import_stop(bn_bridge_t *br)
{
    while (br->nimports)
        bn_import_remove(br, br->nimports - 1);
}

/* The entry of tag id, if no earlier import matches topic too. */
static const bn_nsub_t *bn_import_owner(const bn_bridge_t *br, uint32_t id,
                                        const char *topic)
{
    size_t tl = strlen(topic);

    for (size_t i = 0; i < br->nimports; i++) {
        const char *k = br->imports[i].key;

        if (br->imports[i].id == id)
            return &br->imports[i];
        if (bk_topic_match(k, strlen(k), topic, tl))
            return NULL;
    }
    return NULL;
}

void bn_import_publish(bn_bridge_t *br, const char *topic, const void *data,
                       size_t len)
{
    int r;

    if (!br->b)
        return;
    if (broker_pending(br->b) > br->conf.local_backlog) {
        bn_stats_drop(br, &br->st.drop_local_backlog,
                      "brokerd is behind (local-backlog)", topic);
        return;
    }
    r = broker_publish(br->b, topic, data, len, NULL, 0);
    if (r < 0) {
        bn_stats_drop(br, &br->st.drop_invalid, broker_strerror(r), topic);
        return;
    }
    br->st.msgs_in++;
    br->st.bytes_in += len;
}

void bn_import_msg(bn_bridge_t *br, uint32_t id, natsMsg *msg)
{
    const char *topic = bn_map_topic(br->conf.prefix, natsMsg_GetSubject(msg));
    const char *origin = NULL;

    if (!topic) {
        if (!bn_map_is_own(br->conf.prefix, natsMsg_GetSubject(msg)))
            bn_stats_drop(br, &br->st.drop_invalid, "not a topic",
                          natsMsg_GetSubject(msg));
    } else if (bn_import_owner(br, id, topic)) {
        natsMsgHeader_Get(msg, BN_MAP_ORIGIN, &origin);
        if (origin && !strcmp(origin, br->conf.host)) {
            br->st.loop_skipped++;
        } else if (bn_parts_is_part(msg)) {
            bn_parts_take(br, topic, origin, msg);
        } else {
            bn_parts_whole(br, topic, origin);
            bn_import_publish(br, topic, natsMsg_GetData(msg),
                              (size_t)natsMsg_GetDataLength(msg));
        }
    }
    natsMsg_Destroy(msg);
}
