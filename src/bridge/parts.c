/*
 * parts.c - publications larger than what one NATS message may carry:
 * split into parts by the exporting bridge, joined again by the importing
 * one (prefix bn_parts_).  brokerd-nats(8), "PAYLOADS", is the contract.
 *
 * Exporting: the parts go out one after the other on the publication's
 * subject, in order, each with the headers Brokerd-Origin, Brokerd-Msg (an
 * id unique per origin host: this run's random prefix and a counter),
 * Brokerd-Part (I/N) and Brokerd-Size (the whole payload's bytes), each
 * part's data at most max_payload - BN_PART_ROOM bytes.
 *
 * Importing: a publication being joined is a bn_partial_t, keyed by
 * (origin, id), holding a buffer of Brokerd-Size bytes allocated at part 1
 * (bounded by max-message each and partial-bytes together).  Core NATS
 * loses messages but never reorders one connection's messages to one
 * subscriber, so the parts of one publication arrive 1, 2, ... N with
 * nothing of the same origin on the same subject between them; anything
 * else means parts were lost.  Then the publication is dropped and counted
 * once (drop_incomplete) and its entry stays "dead" (no buffer) to swallow
 * its remaining parts without counting them again, until part N or
 * partial-timeout.  A publication is published locally only whole, its
 * parts all of one (origin, id), in order, adding up to Brokerd-Size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include "bridge.h"
#include "log.h"
#include "map.h"
#include "proto.h"

#define BN_PARTS_MAX 1024           /* entries, dead ones included */

/* The keys of the two indexes: "ORIGIN\0ID" and "ORIGIN\0TOPIC". */
#define BN_PARTS_IDKEY (BN_HOST_MAX + BN_MAP_ID_MAX + 1)
#define BN_PARTS_TKEY (BN_HOST_MAX + BK_MAX_TOPIC + 1)

/* A publication being joined.  Found by (origin, id) for each part, and,
 * while it lives, by (origin, topic): parts of one origin on one topic
 * come one publication at a time, so at most one entry of an (origin,
 * topic) lives, and a part or a whole publication of that pair ends it
 * in O(1) unless it is its own. */
typedef struct bn_partial {
    bk_list_t link;                 /* on br->partials, newest first */
    bk_hnode_t by_id;               /* in br->partial_ids */
    bk_hnode_t by_topic;            /* in br->partial_live while living */
    char idkey[BN_PARTS_IDKEY];     /* ORIGIN NUL ID */
    char *tkey;                     /* ORIGIN NUL TOPIC NUL */
    const char *origin, *topic;     /* into idkey and tkey */
    uint32_t next_part, count;
    uint64_t total, have;
    char *buf;                      /* NULL: dead (swallows its parts) */
    uint64_t touched_ms;
} bn_partial_t;

/* ---- exporting ------------------------------------------------------------- */

void bn_parts_init(bn_bridge_t *br)
{
    unsigned long long r = 0;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (unsigned long long)time(NULL) << 20 ^ (unsigned long long)getpid()
            ^ bn_now_ms();
    snprintf(br->msg_run, sizeof(br->msg_run), "%016llx", r);
    br->msg_seq = 0;
    bk_list_init(&br->partials);
    bk_ht_init(&br->partial_ids);
    bk_ht_init(&br->partial_live);
    br->npartials = 0;
    br->partial_bytes = 0;
}

int bn_parts_send(bn_bridge_t *br, const char *subject, const void *data,
                  size_t len)
{
    char id[BN_MAP_ID_MAX + 1];
    const char *p = data;
    bn_part_t part = { .id = id, .total = len };
    size_t chunk;
    int r = 0;

    if (br->max_payload <= 2 * BN_PART_ROOM)
        return -EMSGSIZE;
    chunk = (size_t)br->max_payload - BN_PART_ROOM;
    part.count = (uint32_t)((len + chunk - 1) / chunk);
    if (part.count < 2)
        return -EMSGSIZE;           /* it fits: the caller's business */
    snprintf(id, sizeof(id), "%s.%llu", br->msg_run,
             (unsigned long long)++br->msg_seq);
    for (part.index = 1; part.index <= part.count && r == 0; part.index++) {
        size_t n = part.index < part.count ? chunk : len - (part.count - 1) *
                                                         chunk;

        r = bn_nats_publish_part(br, subject, p, n, &part);
        p += n;
    }
    return r;
}

/* ---- importing: the headers ------------------------------------------------ */

bool bn_parts_is_part(natsMsg *msg)
{
    const char *v = NULL;

    return natsMsgHeader_Get(msg, BN_MAP_PART, &v) == NATS_OK && v;
}

/* A decimal number without sign or leading zeros, at most max. */
static bool bn_parts_num(const char *s, size_t len, uint64_t max,
                         uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 20 || (s[0] == '0' && len > 1))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (max - (uint64_t)(s[i] - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static bool bn_parts_id_ok(const char *id)
{
    size_t n = strlen(id);

    if (n == 0 || n > BN_MAP_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789._-", id[i]))
            return false;
    return true;
}

/* The part headers of msg: 0, or -EINVAL (missing or malformed). */
static int bn_parts_headers(natsMsg *msg, const char **id, uint32_t *index,
                            uint32_t *count, uint64_t *total)
{
    const char *part = NULL, *size = NULL, *slash;
    uint64_t i, n;

    if (natsMsgHeader_Get(msg, BN_MAP_PART, &part) != NATS_OK ||
        natsMsgHeader_Get(msg, BN_MAP_MSG, id) != NATS_OK ||
        natsMsgHeader_Get(msg, BN_MAP_SIZE, &size) != NATS_OK ||
        !part || !*id || !size || !bn_parts_id_ok(*id) ||
        !(slash = strchr(part, '/')) ||
        !bn_parts_num(part, (size_t)(slash - part), UINT32_MAX, &i) ||
        !bn_parts_num(slash + 1, strlen(slash + 1), UINT32_MAX, &n) ||
        !bn_parts_num(size, strlen(size), UINT64_MAX, total) ||
        i < 1 || i > n || n < 2 || n > *total)
        return -EINVAL;
    *index = (uint32_t)i;
    *count = (uint32_t)n;
    return 0;
}

/* ---- importing: the table -------------------------------------------------- */

/* "A\0B" into buf[0..cap): its length, or 0 if it does not fit. */
static size_t bn_parts_key(char *buf, size_t cap, const char *a,
                           const char *b)
{
    size_t al = strlen(a), bl = strlen(b);

    if (al + 1 + bl >= cap)
        return 0;
    memcpy(buf, a, al + 1);
    memcpy(buf + al + 1, b, bl + 1);
    return al + 1 + bl;
}

static bn_partial_t *bn_parts_find(bn_bridge_t *br, const char *origin,
                                   const char *id)
{
    char key[BN_PARTS_IDKEY];
    size_t len = bn_parts_key(key, sizeof(key), origin, id);
    bk_hnode_t *n = len ? bk_ht_find(&br->partial_ids, key, len) : NULL;

    return n ? bk_container_of(n, bn_partial_t, by_id) : NULL;
}

/* The living entry of (origin, topic), or NULL. */
static bn_partial_t *bn_parts_living(bn_bridge_t *br, const char *origin,
                                     const char *topic)
{
    char key[BN_PARTS_TKEY];
    size_t len = bn_parts_key(key, sizeof(key), origin, topic);
    bk_hnode_t *n = len ? bk_ht_find(&br->partial_live, key, len) : NULL;

    return n ? bk_container_of(n, bn_partial_t, by_topic) : NULL;
}

/* Free e's buffer: it is dead from now on. */
static void bn_parts_kill(bn_bridge_t *br, bn_partial_t *e)
{
    if (!e->buf)
        return;
    br->partial_bytes -= e->total;
    free(e->buf);
    e->buf = NULL;
    bk_ht_remove(&br->partial_live, &e->by_topic);
}

/* A living e will not be whole: counted once, dead. */
static void bn_parts_lost(bn_bridge_t *br, bn_partial_t *e, const char *why)
{
    if (!e->buf)
        return;
    bn_stats_drop(br, &br->st.drop_incomplete, why, e->topic);
    bn_parts_kill(br, e);
}

static void bn_parts_remove(bn_bridge_t *br, bn_partial_t *e)
{
    bn_parts_kill(br, e);
    bk_list_unlink(&e->link);
    bk_ht_remove(&br->partial_ids, &e->by_id);
    free(e->tkey);
    free(e);
    br->npartials--;
}

/* A dead entry for (origin, id) on topic, or NULL (no room, no memory,
 * or keys too long: bn_parts_headers and bn_map_topic bound them). */
static bn_partial_t *bn_parts_add(bn_bridge_t *br, const char *origin,
                                  const char *id, const char *topic,
                                  uint32_t count, uint64_t total)
{
    size_t olen = strlen(origin), tlen = strlen(topic), idlen;
    bn_partial_t *e;

    if (br->npartials >= BN_PARTS_MAX || tlen > BK_MAX_TOPIC ||
        !(e = calloc(1, sizeof(*e))))
        return NULL;
    idlen = bn_parts_key(e->idkey, sizeof(e->idkey), origin, id);
    if (!idlen || !(e->tkey = malloc(olen + 1 + tlen + 1))) {
        free(e);
        return NULL;
    }
    bn_parts_key(e->tkey, olen + 1 + tlen + 1, origin, topic);
    e->origin = e->idkey;
    e->topic = e->tkey + olen + 1;
    e->by_id.key = e->idkey;
    e->by_id.keylen = idlen;
    e->by_topic.key = e->tkey;
    e->by_topic.keylen = olen + 1 + tlen;
    if (bk_ht_insert(&br->partial_ids, &e->by_id) < 0) {
        free(e->tkey);
        free(e);
        return NULL;
    }
    e->count = count;
    e->total = total;
    e->next_part = 1;
    e->touched_ms = bn_now_ms();
    bk_list_push_head(&br->partials, &e->link);
    br->npartials++;
    return e;
}

/* The living entry of origin on topic, unless it is keep, lost parts:
 * it dies (and swallows what still comes of it). */
static void bn_parts_end_others(bn_bridge_t *br, const char *topic,
                                const char *origin, const bn_partial_t *keep)
{
    bn_partial_t *e = bn_parts_living(br, origin, topic);

    if (e && e != keep)
        bn_parts_lost(br, e, "a split publication lost parts");
}

/* Part 1: a new entry, living if the publication may be joined here. */
static bn_partial_t *bn_parts_first(bn_bridge_t *br, const char *topic,
                                    const char *origin, const char *id,
                                    uint32_t count, uint64_t total)
{
    bn_partial_t *e = bn_parts_add(br, origin, id, topic, count, total);

    if (!e) {
        bn_stats_drop(br, &br->st.drop_partial_bytes, "too many split "
                      "publications in progress", topic);
        return NULL;
    }
    if (total > br->conf.max_message) {
        bn_stats_drop(br, &br->st.drop_size, "larger than max-message",
                      topic);
    } else if (br->partial_bytes + total > br->conf.partial_bytes) {
        bn_stats_drop(br, &br->st.drop_partial_bytes, "no room to join it "
                      "(partial-bytes)", topic);
    } else if (!(e->buf = malloc(total))) {
        bn_stats_drop(br, &br->st.drop_partial_bytes, "out of memory",
                      topic);
    } else {
        bn_parts_end_others(br, topic, origin, e);
        if (bk_ht_insert(&br->partial_live, &e->by_topic) < 0) {
            free(e->buf);           /* out of memory: dead */
            e->buf = NULL;
            bn_stats_drop(br, &br->st.drop_partial_bytes, "out of memory",
                          topic);
        } else {
            br->partial_bytes += total;
        }
    }
    return e;
}

void bn_parts_whole(bn_bridge_t *br, const char *topic, const char *origin)
{
    if (br->npartials && origin)
        bn_parts_end_others(br, topic, origin, NULL);
}

/* Part index of a living e: appended if it is the one e waits for. */
static void bn_parts_append(bn_bridge_t *br, bn_partial_t *e,
                            const char *topic, uint32_t index,
                            uint32_t count, uint64_t total, natsMsg *msg)
{
    size_t len = (size_t)natsMsg_GetDataLength(msg);

    if (index != e->next_part || count != e->count || total != e->total ||
        strcmp(topic, e->topic)) {
        bn_parts_lost(br, e, "a split publication lost parts");
        return;
    }
    if (len > e->total - e->have || (index == count &&
                                     e->have + len != e->total)) {
        bn_parts_lost(br, e, "split publication parts do not add up to "
                      "Brokerd-Size");
        return;
    }
    memcpy(e->buf + e->have, natsMsg_GetData(msg), len);
    e->have += len;
}

void bn_parts_take(bn_bridge_t *br, const char *topic, const char *origin,
                   natsMsg *msg)
{
    const char *id = NULL;
    uint32_t index, count;
    uint64_t total;
    bn_partial_t *e;

    if (!origin || !bn_map_host_ok(origin) ||
        bn_parts_headers(msg, &id, &index, &count, &total) < 0) {
        bn_stats_drop(br, &br->st.drop_invalid, "bad part headers", topic);
        return;
    }
    e = bn_parts_find(br, origin, id);
    if (e && index == 1) {          /* an id used again: the old one ends */
        bn_parts_lost(br, e, "a split publication lost parts");
        bn_parts_remove(br, e);
        e = NULL;
    }
    if (!e) {
        e = index == 1 ? bn_parts_first(br, topic, origin, id, count, total)
                       : bn_parts_add(br, origin, id, topic, count, total);
        if (index > 1)
            bn_stats_drop(br, &br->st.drop_incomplete, "a split "
                          "publication lost its first parts", topic);
    }
    bn_parts_end_others(br, topic, origin, e);
    if (!e)
        return;
    e->touched_ms = bn_now_ms();
    if (e->buf)
        bn_parts_append(br, e, topic, index, count, total, msg);
    e->next_part = index + 1;
    if (index < e->count)
        return;
    if (e->buf) {
        br->st.msgs_joined++;
        bn_import_publish(br, e->topic, e->buf, e->total);
    }
    bn_parts_remove(br, e);
}

void bn_parts_tick(bn_bridge_t *br)
{
    uint64_t now = bn_now_ms();

    bn_partial_t *e;

    bk_list_for_each_safe(e, &br->partials, bn_partial_t, link) {
        if (now - e->touched_ms >= br->conf.partial_timeout_ms) {
            bn_parts_lost(br, e, "a split publication's next part did not "
                          "come (partial-timeout)");
            bn_parts_remove(br, e);
        }
    }
}

void bn_parts_stop(bn_bridge_t *br)
{
    bn_partial_t *e;

    while ((e = bk_list_first_entry(&br->partials, bn_partial_t, link)))
        bn_parts_remove(br, e);
    bk_ht_fini(&br->partial_ids);
    bk_ht_fini(&br->partial_live);
}
