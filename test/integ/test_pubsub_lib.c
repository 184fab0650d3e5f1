/*
 * test_pubsub_lib.c - publish/subscribe through libbroker's public API
 * against a real brokerd: local validation, round trips with topic and
 * subscription id, overlapping subscriptions, wildcards and the '$' rule,
 * unsubscribe dropping what is already queued, GAP counts under policy
 * drop, fds and shared memory to several subscribers, the libuv-attached
 * API, and broker_register_flags.
 *
 * Ordering is what the tests lean on instead of clocks: the broker keeps
 * one publisher's messages in order for every subscriber, so a "marker"
 * publication sent last proves that everything published before it has
 * been delivered (or dropped) already.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <criterion/criterion.h>
#include "harness.h"
#include "th_uv.h"

TH_BROKER_SUITE(pubsub, 240);

static uint32_t sub_ok(broker_t *b, const char *pattern, const char *group,
                       broker_sub_policy_t policy)
{
    uint32_t id = 0;
    int r = broker_subscribe(b, pattern, group, policy, &id);

    cr_assert_eq(r, 0, "subscribe '%s': %s", pattern, broker_strerror(r));
    cr_assert_neq(id, 0, "a subscription id is never 0");
    return id;
}

static void pub_ok(broker_t *b, const char *topic, const char *text)
{
    int r = broker_publish(b, topic, text, strlen(text), NULL, 0);

    cr_assert_eq(r, 0, "publish '%s': %s", topic, broker_strerror(r));
}

/* The next event must be a publication on topic for subscription id with
 * payload text, sent by `from`. */
static void expect_pub(broker_t *b, const char *topic, uint32_t id,
                       const char *text, uint64_t from)
{
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);

    cr_assert(m->flags & BROKER_MSGF_TOPIC, "not a publication (flags %#x)",
              m->flags);
    cr_assert_eq(m->flags & (BROKER_MSGF_OPEN | BROKER_MSGF_CLOSE),
                 BROKER_MSGF_OPEN | BROKER_MSGF_CLOSE, "one-way");
    cr_assert_not_null(m->topic);
    cr_assert_str_eq(m->topic, topic);
    cr_assert_eq(m->sub_id, id, "sub_id %" PRIu32 ", want %" PRIu32,
                 m->sub_id, id);
    cr_assert_eq(m->source, from);
    cr_assert_null(m->name);
    cr_assert_eq(m->len, strlen(text), "payload length of '%s'", text);
    cr_assert_eq(memcmp(m->data, text, m->len), 0);
    broker_msg_free(m);
}

/* ---- local validation --------------------------------------------------- */

Test(pubsub, bad_patterns_topics_groups_are_einval_locally)
{
    static const char *const bad_patterns[] = {
        "", ".a", "a.", "a..b", "a.>.b", "a.b*", "a*", ">b", "a b", "a\tb",
        "a.\x7f", "caf\xc3\xa9", ">.a",
    };
    static const char *const bad_topics[] = {
        "", ".a", "a.", "a..b", "a.*", "a*", ">", "*", "a.>", "a b", "x\n",
    };
    broker_t *b = th_connect(&br);
    char longest[BK_MAX_TOPIC + 2];
    uint32_t id = 7;

    for (size_t i = 0; i < sizeof(bad_patterns) / sizeof(*bad_patterns); i++)
        cr_assert_eq(broker_subscribe(b, bad_patterns[i], NULL,
                                      BROKER_SUB_DROP, &id), -EINVAL,
                     "pattern '%s'", bad_patterns[i]);
    cr_assert_eq(id, 0, "*id is cleared on failure");
    for (size_t i = 0; i < sizeof(bad_topics) / sizeof(*bad_topics); i++)
        cr_assert_eq(broker_publish(b, bad_topics[i], "x", 1, NULL, 0),
                     -EINVAL, "topic '%s'", bad_topics[i]);
    cr_assert_eq(broker_publish(b, NULL, "x", 1, NULL, 0), -EINVAL);
    cr_assert_eq(broker_subscribe(b, NULL, NULL, BROKER_SUB_DROP, &id),
                 -EINVAL);
    cr_assert_eq(broker_subscribe(b, "a", NULL, BROKER_SUB_DROP, NULL),
                 -EINVAL);

    /* 255 bytes is the bound, for topics and patterns alike */
    memset(longest, 'x', BK_MAX_TOPIC + 1);
    longest[BK_MAX_TOPIC + 1] = '\0';
    cr_assert_eq(broker_publish(b, longest, "x", 1, NULL, 0), -EINVAL);
    cr_assert_eq(broker_subscribe(b, longest, NULL, BROKER_SUB_DROP, &id),
                 -EINVAL);
    longest[BK_MAX_TOPIC] = '\0';
    sub_ok(b, longest, NULL, BROKER_SUB_DROP);
    pub_ok(b, longest, "edge");

    /* groups follow the name rules; policies are the three there are */
    cr_assert_eq(broker_subscribe(b, "a", "", BROKER_SUB_DROP, &id),
                 -EINVAL);
    cr_assert_eq(broker_subscribe(b, "a", "bad group", BROKER_SUB_DROP, &id),
                 -EINVAL);
    cr_assert_eq(broker_subscribe(b, "a", ":x", BROKER_SUB_DROP, &id),
                 -EINVAL);
    cr_assert_eq(broker_subscribe(b, "a", NULL, (broker_sub_policy_t)3, &id),
                 -EINVAL);
    cr_assert_eq(broker_subscribe(b, "a", NULL, (broker_sub_policy_t)-1,
                                  &id), -EINVAL);

    /* the broker's own topics are not for clients to publish on */
    cr_assert_eq(broker_publish(b, "$broker.names", "x", 1, NULL, 0),
                 -EACCES);
    cr_assert_eq(broker_publish(b, "$broker", "x", 1, NULL, 0), -EACCES);

    cr_assert_eq(broker_unsubscribe(b, 0), -EINVAL);
    cr_assert_eq(broker_unsubscribe(b, 123456), -ENOENT);
    cr_assert_eq(broker_register_flags(b, "n.x", 0x8), -EINVAL);
    cr_assert_eq(broker_register_flags(b, "bad name", 0), -EINVAL);
    cr_assert_eq(broker_subscribe_async(b, "a", NULL, BROKER_SUB_DROP,
                                        NULL, NULL), -EINVAL,
                 "not attached");

    /* nothing of that hurt the connection */
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- delivery ----------------------------------------------------------- */

Test(pubsub, round_trip_with_topic_and_sub_id)
{
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint64_t pid = broker_client_id(p);
    uint32_t id = sub_ok(s, "sensors.*.temp", NULL, BROKER_SUB_DROP);
    static const char bin[] = "a\0b\xff";
    broker_msg_t *m;

    /* published before: not for this pattern */
    pub_ok(p, "sensors.kitchen.hum", "55");
    pub_ok(p, "sensors.kitchen.temp.max", "30");
    pub_ok(p, "sensors.kitchen.temp", "21.5");
    expect_pub(s, "sensors.kitchen.temp", id, "21.5", pid);

    /* binary payloads arrive byte for byte; empty ones too */
    cr_assert_eq(broker_publish(p, "sensors.x.temp", bin, sizeof(bin), NULL,
                                0), 0);
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "sensors.x.temp");
    cr_assert_eq(m->len, sizeof(bin));
    cr_assert_eq(memcmp(m->data, bin, sizeof(bin)), 0);
    broker_msg_free(m);
    pub_ok(p, "sensors.empty.temp", "");
    expect_pub(s, "sensors.empty.temp", id, "", pid);

    /* a publication bigger than a packet comes whole, in order */
    size_t big = 200000;
    char *buf = malloc(big);
    cr_assert_not_null(buf);
    th_pattern(buf, big, 42, 0);
    cr_assert_eq(broker_publish(p, "sensors.big.temp", buf, big, NULL, 0), 0);
    pub_ok(p, "sensors.after.temp", "after");
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "sensors.big.temp");
    cr_assert_eq(m->sub_id, id);
    cr_assert_eq(m->len, big);
    cr_assert_eq(th_pattern_check(m->data, big, 42, 0), -1);
    broker_msg_free(m);
    free(buf);
    expect_pub(s, "sensors.after.temp", id, "after", pid);

    /* the publisher's own subscription-free connection got nothing */
    cr_assert_eq(broker_recv(p, &m, 0), -ETIMEDOUT);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

Test(pubsub, chunked_publication_keeps_topic_on_every_piece)
{
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint32_t id = sub_ok(s, "chunk.>", NULL, BROKER_SUB_BLOCK);
    size_t big = 300000, got = 0;
    char *buf = malloc(big);
    bool last = false;

    cr_assert_not_null(buf);
    cr_assert_eq(broker_set_option(s, BROKER_OPT_MAX_MSG, 65536), 0);
    cr_assert_eq(broker_set_option(s, BROKER_OPT_CHUNKED, 1), 0);
    cr_assert_eq(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    th_pattern(buf, big, 9, 0);
    cr_assert_eq(broker_publish(p, "chunk.a.b", buf, big, NULL, 0), 0);
    while (!last) {
        broker_msg_t *m = th_recv_kind(s, BROKER_MSG_DATA);

        cr_assert(m->flags & BROKER_MSGF_CHUNK);
        cr_assert(m->flags & BROKER_MSGF_TOPIC);
        cr_assert_str_eq(m->topic, "chunk.a.b");
        cr_assert_eq(m->sub_id, id);
        cr_assert_leq(got + m->len, big);
        cr_assert_eq(th_pattern_check(m->data, m->len, 9, got), -1);
        got += m->len;
        last = m->flags & BROKER_MSGF_LAST;
        broker_msg_free(m);
    }
    cr_assert_eq(got, big);
    free(buf);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

/* A whole publication (one frame, OPEN|CLOSE) is delivered without a
 * stream entry at the subscriber: beside streams open to it and a
 * fragmented publication in progress, over the receiver's limit (refused,
 * the next one still arrives) and in chunked mode (one last chunk). */
Test(pubsub, whole_publications_beside_streams_and_limits)
{
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint64_t pid = broker_client_id(p);
    uint32_t id = sub_ok(s, "w.>", NULL, BROKER_SUB_BLOCK);
    uint32_t osid, rsid;
    size_t big = 200000;
    char *buf = malloc(big), small[2000];
    broker_msg_t *m;

    cr_assert_not_null(buf);
    cr_assert_eq(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    /* a stream from p stays open at s while publications pass it */
    cr_assert_eq(broker_stream_open(p, NULL, broker_client_id(s), &osid), 0);
    cr_assert_eq(broker_stream_write(p, osid, "open", 4, NULL, 0), 0);
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_null(m->topic);
    rsid = m->stream;
    broker_msg_free(m);
    for (int i = 0; i < 20; i++) {
        char t[16];
        snprintf(t, sizeof(t), "%d", i);
        pub_ok(p, "w.a", t);
        expect_pub(s, "w.a", id, t, pid);
    }
    /* a fragmented publication, then a whole one: both whole, in order */
    th_pattern(buf, big, 5, 0);
    cr_assert_eq(broker_publish(p, "w.big", buf, big, NULL, 0), 0);
    pub_ok(p, "w.b", "after big");
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "w.big");
    cr_assert_eq(m->len, big);
    cr_assert_eq(th_pattern_check(m->data, big, 5, 0), -1);
    broker_msg_free(m);
    expect_pub(s, "w.b", id, "after big", pid);
    /* the stream still works both ways */
    cr_assert_eq(broker_stream_write(s, rsid, "back", 4, NULL, 0), 0);
    m = th_recv_kind(p, BROKER_MSG_DATA);
    cr_assert_eq(m->stream, osid);
    cr_assert_eq(m->len, 4);
    broker_msg_free(m);
    cr_assert_eq(broker_stream_write(p, osid, "more", 4, NULL, 0), 0);
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_eq(m->stream, rsid);
    cr_assert_null(m->topic);
    broker_msg_free(m);

    /* over the subscriber's limit: an ERROR event, the next one arrives */
    memset(small, 'z', sizeof(small));
    cr_assert_eq(broker_set_option(s, BROKER_OPT_MAX_MSG, 1000), 0);
    cr_assert_eq(broker_publish(p, "w.c", small, sizeof(small), NULL, 0), 0);
    m = th_recv_kind(s, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -EMSGSIZE, "code %d", m->code);
    broker_msg_free(m);
    pub_ok(p, "w.d", "fits");
    expect_pub(s, "w.d", id, "fits", pid);

    /* chunked: the same message is one last chunk, topic kept */
    cr_assert_eq(broker_set_option(s, BROKER_OPT_CHUNKED, 1), 0);
    cr_assert_eq(broker_publish(p, "w.e", small, sizeof(small), NULL, 0), 0);
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_eq(m->flags & (BROKER_MSGF_CHUNK | BROKER_MSGF_LAST |
                             BROKER_MSGF_TOPIC | BROKER_MSGF_CLOSE),
                 BROKER_MSGF_CHUNK | BROKER_MSGF_LAST | BROKER_MSGF_TOPIC |
                 BROKER_MSGF_CLOSE, "flags %#x", m->flags);
    cr_assert_str_eq(m->topic, "w.e");
    cr_assert_eq(m->sub_id, id);
    cr_assert_eq(m->len, sizeof(small));
    cr_assert_eq(memcmp(m->data, small, sizeof(small)), 0);
    broker_msg_free(m);

    cr_assert_eq(broker_stream_close(p, osid), 0);
    m = th_recv_kind(s, BROKER_MSG_CLOSE);
    cr_assert_eq(m->stream, rsid);
    broker_msg_free(m);
    free(buf);
    cr_assert_eq(broker_recv(s, &m, 0), -ETIMEDOUT);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

Test(pubsub, overlapping_subscriptions_each_get_a_copy)
{
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint64_t pid = broker_client_id(p);
    uint32_t all = sub_ok(s, "a.>", NULL, BROKER_SUB_DROP);
    uint32_t one = sub_ok(s, "a.b", NULL, BROKER_SUB_DROP);
    bool seen_all = false, seen_one = false;

    cr_assert_neq(all, one);
    pub_ok(p, "a.b", "both");
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = th_recv_kind(s, BROKER_MSG_DATA);

        cr_assert_str_eq(m->topic, "a.b");
        cr_assert_eq(m->len, 4);
        cr_assert_eq(memcmp(m->data, "both", 4), 0);
        if (m->sub_id == all) {
            cr_assert(!seen_all, "twice for a.>");
            seen_all = true;
        } else {
            cr_assert_eq(m->sub_id, one);
            cr_assert(!seen_one, "twice for a.b");
            seen_one = true;
        }
        broker_msg_free(m);
    }
    /* a.c matches one of them only; the marker ends the sequence */
    pub_ok(p, "a.c", "wide");
    pub_ok(p, "a.z.end", "end");
    expect_pub(s, "a.c", all, "wide", pid);
    expect_pub(s, "a.z.end", all, "end", pid);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

static void marker_of(const char *pattern, char mk[64])
{
    char *o = mk;

    for (const char *c = pattern; *c; c++) {
        if (*c == '*')
            *o++ = 'm';
        else if (*c == '>')
            o += sprintf(o, "m.m");
        else
            *o++ = *c;
    }
    *o = '\0';
}

Test(pubsub, wildcards_and_the_dollar_rule)
{
    static const struct { const char *pattern, *topic; bool match; } t[] = {
        { "*", "x", true },        { "*", "x.y", false },
        { "x.*", "x.y", true },    { "x.*", "x", false },
        { "x.*", "x.y.z", false }, { "*.b", "q.b", true },
        { "x.>", "x.y.z", true },  { "x.>", "x", false },
        { ">", "any.thing", true }, { "x.*.z", "x.y.z", true },
        { "x.*.z", "x.y.w", false },
    };
    broker_t *p = th_connect(&br);
    uint64_t pid = broker_client_id(p);

    for (size_t i = 0; i < sizeof(t) / sizeof(*t); i++) {
        broker_t *s = th_connect(&br);
        uint32_t id = sub_ok(s, t[i].pattern, NULL, BROKER_SUB_DROP);
        char mk[64];

        /* a marker topic the pattern matches: '*' -> "m", '>' -> "m.m";
         * published last, it proves the probe was delivered or not */
        marker_of(t[i].pattern, mk);
        pub_ok(p, t[i].topic, "probe");
        pub_ok(p, mk, "marker");
        if (t[i].match)
            expect_pub(s, t[i].topic, id, "probe", pid);
        expect_pub(s, mk, id, "marker", pid);
        broker_close(s);
    }

    /* "$broker.names" comes to whoever names it, not to ">" */
    broker_t *wide = th_connect(&br), *named = th_connect(&br);
    uint32_t wid = sub_ok(wide, ">", NULL, BROKER_SUB_DROP);
    uint32_t nid = sub_ok(named, "$broker.*", NULL, BROKER_SUB_DROP);
    char want[128];
    broker_msg_t *m;

    th_register(p, "dollar.test");
    pub_ok(p, "z.end", "end");
    snprintf(want, sizeof(want), "name=dollar.test old=0 new=%" PRIu64 "\n",
             pid);
    m = th_recv_kind(named, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "$broker.names");
    cr_assert_eq(m->sub_id, nid);
    cr_assert_eq(m->source, 0, "the broker's own announcement");
    cr_assert_eq(m->len, strlen(want), "%.*s", (int)m->len,
                 (char *)m->data);
    cr_assert_eq(memcmp(m->data, want, m->len), 0);
    broker_msg_free(m);
    expect_pub(wide, "z.end", wid, "end", pid);
    broker_close(wide);
    broker_close(named);
    broker_close(p);
    th_broker_stop(&br);
}

/* ---- unsubscribe -------------------------------------------------------- */

Test(pubsub, unsubscribe_drops_what_is_already_queued)
{
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint64_t pid = broker_client_id(p);
    uint32_t id = sub_ok(s, "u.x", NULL, BROKER_SUB_DROP);
    int fd = memfd_create("pubsub-fd", MFD_CLOEXEC);
    uint32_t id2;

    cr_assert_geq(fd, 0);
    /* queued at s (not read yet): plain, with an fd, and big enough for
     * several fragments */
    for (int i = 0; i < 5; i++)
        pub_ok(p, "u.x", "queued");
    cr_assert_eq(broker_publish(p, "u.x", "fd", 2, &fd, 1), 0);
    size_t big = 150000;
    char *buf = calloc(1, big);
    cr_assert_not_null(buf);
    cr_assert_eq(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    cr_assert_eq(broker_publish(p, "u.x", buf, big, NULL, 0), 0);
    free(buf);
    cr_assert_eq(broker_ping(p, TH_HANG_MS), 0, "routed by now");

    cr_assert_eq(broker_unsubscribe(s, id), 0);
    cr_assert_eq(broker_unsubscribe(s, id), -ENOENT, "gone already");
    id2 = sub_ok(s, "u.x", NULL, BROKER_SUB_DROP);
    cr_assert_neq(id2, id, "ids are not reused");
    pub_ok(p, "u.x", "after");
    expect_pub(s, "u.x", id2, "after", pid);
    close(fd);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

/* ---- GAP ---------------------------------------------------------------- */

Test(pubsub, gap_counts_add_up)
{
    th_broker_restart(&br, "--queue-limit", "16K", NULL);
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint32_t id = sub_ok(s, "g.>", NULL, BROKER_SUB_DROP);
    const uint64_t total = th_scaled(400, 100);
    size_t len = 8192;
    char *buf = calloc(1, len);
    uint64_t seen = 0, gaps = 0, ngap_events = 0, next = 0;

    cr_assert_not_null(buf);
    cr_assert_eq(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    /* s reads nothing meanwhile: its queue overflows */
    for (uint64_t i = 0; i < total; i++) {
        memcpy(buf, &i, sizeof(i));
        cr_assert_eq(broker_publish(p, "g.seq", buf, len, NULL, 0), 0);
    }
    cr_assert_eq(broker_ping(p, TH_HANG_MS), 0);
    /* every message is either delivered or counted by a GAP before the
     * next delivered one (or once the queue drained) */
    while (seen + gaps < total) {
        broker_msg_t *m = th_recv(s);
        uint64_t seq;

        cr_assert_eq(m->sub_id, id);
        if (m->kind == BROKER_MSG_GAP) {
            cr_assert_gt(m->gap, 0, "an empty GAP");
            cr_assert_eq(m->code, 0);
            cr_assert_eq(m->len, 0);
            gaps += m->gap;
            next += m->gap;
            ngap_events++;
        } else {
            cr_assert_eq(m->kind, BROKER_MSG_DATA);
            cr_assert_eq(m->len, len);
            memcpy(&seq, m->data, sizeof(seq));
            cr_assert_eq(seq, next, "message %" PRIu64 " where %" PRIu64
                         " was due (gaps so far %" PRIu64 ")", seq, next,
                         gaps);
            next++;
            seen++;
        }
        broker_msg_free(m);
    }
    cr_assert_eq(seen + gaps, total);
    cr_assert_gt(ngap_events, 0, "the queue never overflowed");
    cr_assert_gt(seen, 0);
    free(buf);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

/* ---- fds and shared memory ---------------------------------------------- */

Test(pubsub, fds_reach_every_subscriber)
{
    broker_t *s1 = th_connect(&br), *s2 = th_connect(&br);
    broker_t *p = th_connect(&br);
    uint32_t id1 = sub_ok(s1, "f.*", NULL, BROKER_SUB_DROP);
    uint32_t id2 = sub_ok(s2, "f.>", NULL, BROKER_SUB_DROP);
    int fd = memfd_create("pubsub-fd", MFD_CLOEXEC);
    struct stat want;
    broker_t *subs[2] = { s1, s2 };
    uint32_t ids[2] = { id1, id2 };

    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "shared", 6), 6);
    cr_assert_eq(fstat(fd, &want), 0);
    cr_assert_eq(broker_publish(p, "f.x", "fd!", 3, &fd, 1), 0);
    close(fd);
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = th_recv_kind(subs[i], BROKER_MSG_DATA);
        struct stat st;
        char got[8] = "";

        cr_assert_str_eq(m->topic, "f.x");
        cr_assert_eq(m->sub_id, ids[i]);
        cr_assert_eq(m->nfds, 1);
        cr_assert_eq(fstat(m->fds[0], &st), 0);
        cr_assert_eq(st.st_ino, want.st_ino, "the same file");
        cr_assert_eq(pread(m->fds[0], got, 6, 0), 6);
        cr_assert_eq(memcmp(got, "shared", 6), 0);
        broker_msg_free(m);
    }
    broker_close(s1);
    broker_close(s2);
    broker_close(p);
    th_broker_stop(&br);
}

/* Read p's input until its pool has every buffer back. */
static void await_pool_empty(broker_t *p)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    broker_shm_stats_t st;

    for (;;) {
        broker_msg_t *m = NULL;
        int r;

        broker_shm_stats(p, &st);
        if (st.buffers == 0)
            return;
        cr_assert_lt(th_now_ms(), end, "buffers never came back");
        r = broker_recv(p, &m, 100);
        cr_assert(r == 0 || r == -ETIMEDOUT, "%s", broker_strerror(r));
        broker_msg_free(m);
    }
}

Test(pubsub, shared_memory_to_two_subscribers)
{
    broker_t *s1 = th_connect(&br), *s2 = th_connect(&br);
    broker_t *p = th_connect(&br);
    broker_t *subs[2] = { s1, s2 };
    uint32_t ids[2] = { sub_ok(s1, "shm.big", NULL, BROKER_SUB_BLOCK),
                        sub_ok(s2, "shm.*", NULL, BROKER_SUB_BLOCK) };
    size_t big = 1u << 20;
    char *buf = malloc(big);
    broker_buf_t *zb;

    cr_assert_not_null(buf);
    th_pattern(buf, big, 77, 0);
    /* above the threshold: one copy in p's pool, a view for each */
    cr_assert_eq(broker_publish(p, "shm.big", buf, big, NULL, 0), 0);
    free(buf);
    broker_msg_t *got[2];
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = got[i] = th_recv_kind(subs[i], BROKER_MSG_DATA);

        cr_assert(m->flags & BROKER_MSGF_SHM, "not through shared memory");
        cr_assert(m->flags & BROKER_MSGF_TOPIC);
        cr_assert_str_eq(m->topic, "shm.big");
        cr_assert_eq(m->sub_id, ids[i]);
        cr_assert_eq(m->len, big);
        cr_assert_eq(th_pattern_check(m->data, big, 77, 0), -1);
    }
    /* One subscriber is done with it, the other still reads it: the
     * buffer must not go back to p's pool yet (p could overwrite it).
     * s1's ping orders its release before the pong; p's ping then has
     * read whatever the broker passed on to p meanwhile. */
    broker_shm_stats_t st;
    broker_msg_free(got[0]);
    cr_assert_eq(broker_ping(s1, TH_HANG_MS), 0);
    cr_assert_eq(broker_ping(p, TH_HANG_MS), 0);
    broker_shm_stats(p, &st);
    cr_assert_eq(st.buffers, 1, "released while s2 still views it");
    cr_assert_eq(th_pattern_check(got[1]->data, big, 77, 0), -1);
    broker_msg_free(got[1]);
    await_pool_empty(p);

    /* zero copy from an application buffer */
    cr_assert_eq(broker_buf_alloc(p, 4096, &zb, TH_HANG_MS), 0);
    memcpy(zb->data, "zero-copy", 9);
    cr_assert_eq(broker_buf_publish(p, "shm.big", zb, 9), 0);
    cr_assert_eq(broker_buf_publish(p, "shm.*", zb, 9), -EINVAL);
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = th_recv_kind(subs[i], BROKER_MSG_DATA);

        cr_assert(m->flags & BROKER_MSGF_SHM);
        cr_assert_str_eq(m->topic, "shm.big");
        cr_assert_eq(m->len, 9);
        cr_assert_eq(memcmp(m->data, "zero-copy", 9), 0);
        broker_msg_free(m);
    }
    broker_buf_free(p, zb);
    await_pool_empty(p);
    broker_close(s1);
    broker_close(s2);
    broker_close(p);
    th_broker_stop(&br);
}

/* ---- the attached API --------------------------------------------------- */

struct actx {
    int sub_err;
    uint32_t sub_id;
    int sub_calls;
    int cancel_err;
    int ncancel;
    char got[8][32];
    uint32_t got_id[8];
    int ngot;
};

static void on_sub(broker_t *b, int err, uint32_t id, void *ud)
{
    struct actx *c = ud;

    (void)b;
    c->sub_err = err;
    c->sub_id = id;
    c->sub_calls++;
}

static void on_cancel(broker_t *b, int err, uint32_t id, void *ud)
{
    struct actx *c = ud;

    (void)b;
    cr_assert_eq(id, 0);
    c->cancel_err = err;
    c->ncancel++;
}

static void on_message(broker_t *b, broker_msg_t *m, void *ud)
{
    struct actx *c = ud;

    (void)b;
    if (m->kind == BROKER_MSG_DATA && (m->flags & BROKER_MSGF_TOPIC) &&
        c->ngot < 8) {
        snprintf(c->got[c->ngot], sizeof(c->got[0]), "%s=%.*s", m->topic,
                 (int)m->len, (char *)m->data);
        c->got_id[c->ngot++] = m->sub_id;
    }
    broker_msg_free(m);
}

static bool subscribed(void *p) { return ((struct actx *)p)->sub_calls > 0; }
static int want_got;
static bool got_enough(void *p)
{
    return ((struct actx *)p)->ngot >= want_got;
}
static broker_t *flushing;
static bool flushed(void *p) { (void)p; return broker_pending(flushing) == 0; }

Test(pubsub, attached_subscribe_publish_receive)
{
    static struct actx ctx;
    broker_callbacks_t cbs = { on_message, NULL };
    broker_t *a = th_connect(&br), *blk = th_connect(&br);
    uint64_t aid = broker_client_id(a), bid = broker_client_id(blk);
    uint32_t out_id, first;
    uv_loop_t loop;

    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(a, &loop, &cbs, &ctx), 0);
    cr_assert_eq(broker_subscribe_async(a, "att.a.b", NULL, BROKER_SUB_DROP,
                                        NULL, &ctx), -EINVAL, "no cb");
    cr_assert_eq(broker_subscribe_async(a, "att..", NULL, BROKER_SUB_DROP,
                                        on_sub, &ctx), -EINVAL);
    cr_assert_eq(broker_subscribe_async(a, "att.in", NULL, BROKER_SUB_DROP,
                                        on_sub, &ctx), 0);
    cr_assert_eq(ctx.sub_calls, 0, "the callback runs from the loop");
    th_uv_run_until(&loop, subscribed, &ctx);
    cr_assert_eq(ctx.sub_err, 0, "%s", broker_strerror(ctx.sub_err));
    cr_assert_neq(ctx.sub_id, 0);
    first = ctx.sub_id;

    /* a blocking client publishes, the attached one receives */
    out_id = sub_ok(blk, "att.out", NULL, BROKER_SUB_DROP);
    pub_ok(blk, "att.in", "hello");
    want_got = 1;
    th_uv_run_until(&loop, got_enough, &ctx);
    cr_assert_str_eq(ctx.got[0], "att.in=hello");
    cr_assert_eq(ctx.got_id[0], first);

    /* and publishes itself without blocking */
    cr_assert_eq(broker_publish(a, "att.out", "reply", 5, NULL, 0), 0);
    flushing = a;
    th_uv_run_until(&loop, flushed, NULL);
    expect_pub(blk, "att.out", out_id, "reply", aid);

    /* unsubscribe does not wait; what comes after is dropped */
    cr_assert_eq(broker_unsubscribe(a, first), 0);
    cr_assert_eq(broker_unsubscribe(a, first), -ENOENT);
    ctx.sub_calls = 0;
    cr_assert_eq(broker_subscribe_async(a, "att.in2", "grp", BROKER_SUB_BLOCK,
                                        on_sub, &ctx), 0);
    th_uv_run_until(&loop, subscribed, &ctx);
    cr_assert_eq(ctx.sub_err, 0);
    cr_assert_neq(ctx.sub_id, first);
    pub_ok(blk, "att.in", "late");
    pub_ok(blk, "att.in2", "marker");
    want_got = 2;
    th_uv_run_until(&loop, got_enough, &ctx);
    cr_assert_str_eq(ctx.got[1], "att.in2=marker", "got %s", ctx.got[1]);
    cr_assert_eq(ctx.got_id[1], ctx.sub_id);
    (void)bid;

    /* a request still pending when the connection closes is cancelled */
    cr_assert_eq(broker_subscribe_async(a, "att.never", NULL,
                                        BROKER_SUB_DROP, on_cancel, &ctx), 0);
    broker_close(a);
    cr_assert_eq(ctx.ncancel, 1);
    cr_assert_eq(ctx.cancel_err, -ECANCELED);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
    broker_close(blk);
    th_broker_stop(&br);
}

/* An attached sender queues faster than the socket drains, so the library
 * packs its messages; one-way messages must still leave, and arrive, in
 * the order they were sent, also when packing would have cut them (sizes
 * that do not divide the packet, up to one just under a packet). */
static void *attached_burst_payload(size_t size, uint32_t seq)
{
    uint8_t *p = malloc(size);

    cr_assert_not_null(p);
    memset(p, (int)(seq & 0xff), size);
    memcpy(p, &seq, sizeof(seq));
    return p;
}

static void check_attached_order(bool publish)
{
    static const size_t sizes[] = { 100, 4096, 30000, 65000 };
    /* each burst stays well under the broker's queue limit (4 MiB): the
     * receiver only reads once the burst is written */
    enum { PER_SIZE = 400, BURST_BYTES = 2 << 20 };
    broker_callbacks_t cbs = { on_message, NULL };
    broker_t *tx = th_connect(&br), *rx = th_connect(&br);
    uint32_t id = 0, seq = 0, want = 0;
    uv_loop_t loop;

    if (publish)
        id = sub_ok(rx, "order.burst", NULL, BROKER_SUB_BLOCK);
    else
        cr_assert_eq(broker_register(rx, "order.sink"), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(tx, &loop, &cbs, NULL), 0);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = BURST_BYTES / sizes[k];

        if (n > PER_SIZE)
            n = PER_SIZE;
        for (size_t i = 0; i < n; i++, seq++) {
            void *p = attached_burst_payload(sizes[k], seq);
            int r = publish
                ? broker_publish(tx, "order.burst", p, sizes[k], NULL, 0)
                : broker_send(tx, "order.sink", p, sizes[k], NULL, 0);

            cr_assert_eq(r, 0, "send %u: %s", seq, broker_strerror(r));
            free(p);
        }
        /* read what has come so far while the loop writes the rest */
        flushing = tx;
        th_uv_run_until(&loop, flushed, NULL);
        while (want < seq) {
            broker_msg_t *m = th_recv_kind(rx, BROKER_MSG_DATA);
            uint32_t got;

            cr_assert_geq(m->len, sizeof(got));
            memcpy(&got, m->data, sizeof(got));
            cr_assert_eq(got, want, "message %u arrived as number %u "
                         "(%zu bytes)", got, want, m->len);
            cr_assert_eq(m->len, sizes[k], "message %u: %zu bytes", got,
                         m->len);
            if (publish)
                cr_assert_eq(m->sub_id, id);
            broker_msg_free(m);
            want++;
        }
    }
    broker_close(tx);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    broker_close(rx);
    th_broker_stop(&br);
}

Test(pubsub, attached_publisher_keeps_publish_order)
{
    check_attached_order(true);
}

Test(pubsub, attached_sender_keeps_send_order)
{
    check_attached_order(false);
}

/* Publications larger than a packet travel as fragments; small ones
 * whole.  Two publishers alternate them; the subscriber must still see
 * each publisher's messages in publish order (the broker keeps every
 * frame of the publications to one client in one FIFO). */
struct mixed_pub {
    const char *sock;
    uint32_t tag;
};

enum { MIXED_N = 120 };

static size_t mixed_size(uint32_t seq)
{
    /* big (3 fragments, under the shared-memory threshold), small, big,
     * mid (2 fragments) ... */
    static const size_t sizes[] = { 150000, 40, 150000, 70000 };

    return sizes[seq % 4];
}

static int mixed_publisher(void *arg)
{
    const struct mixed_pub *mp = arg;
    broker_t *b;
    uint8_t *buf = malloc(150000);

    if (!buf || broker_connect(mp->sock, &b) < 0)
        return 1;
    for (uint32_t seq = 0; seq < MIXED_N; seq++) {
        size_t len = mixed_size(seq);

        memset(buf, (int)seq, len);
        memcpy(buf, &mp->tag, 4);
        memcpy(buf + 4, &seq, 4);
        if (broker_publish(b, "order.mixed", buf, len, NULL, 0) < 0)
            return 1;
    }
    free(buf);
    broker_close(b);
    return 0;
}

Test(pubsub, fragmented_publications_keep_publish_order)
{
    broker_t *rx = th_connect(&br);
    uint32_t id = sub_ok(rx, "order.mixed", NULL, BROKER_SUB_BLOCK);
    struct mixed_pub a = { br.sock, 1 }, b = { br.sock, 2 };
    uint32_t next[3] = { 0, 0, 0 };
    pid_t pa = th_spawn(mixed_publisher, &a);
    pid_t pb = th_spawn(mixed_publisher, &b);

    for (int i = 0; i < 2 * MIXED_N; i++) {
        broker_msg_t *m = th_recv_kind(rx, BROKER_MSG_DATA);
        uint32_t tag, seq;

        cr_assert_geq(m->len, 8);
        memcpy(&tag, m->data, 4);
        memcpy(&seq, (uint8_t *)m->data + 4, 4);
        cr_assert(tag == 1 || tag == 2, "tag %u", tag);
        cr_assert_eq(seq, next[tag], "publisher %u: message %u arrived "
                     "where %u was due", tag, seq, next[tag]);
        cr_assert_eq(m->len, mixed_size(seq));
        cr_assert_eq(m->sub_id, id);
        next[tag]++;
        broker_msg_free(m);
    }
    th_join(pa);
    th_join(pb);
    broker_close(rx);
    th_broker_stop(&br);
}

/* ---- name flags --------------------------------------------------------- */

Test(pubsub, register_flags_outcomes)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    broker_t *c = th_connect(&br), *w = th_connect(&br);
    uint64_t id = 0;

    cr_assert_eq(broker_register_flags(a, "lead",
                                       BROKER_NAME_ALLOW_REPLACEMENT),
                 BROKER_NAME_OWNER);
    cr_assert_eq(broker_register_flags(b, "lead", 0), -EEXIST);
    cr_assert_eq(broker_register_flags(b, "lead", BROKER_NAME_QUEUE),
                 BROKER_NAME_QUEUED);
    /* c takes it over: a allowed that and had not queued, so it is out */
    cr_assert_eq(broker_register_flags(c, "lead",
                                       BROKER_NAME_REPLACE_EXISTING),
                 BROKER_NAME_OWNER);
    cr_assert_eq(broker_resolve(w, "lead", &id), 0);
    cr_assert_eq(id, broker_client_id(c));
    /* c did not allow replacement */
    cr_assert_eq(broker_register_flags(a, "lead",
                                       BROKER_NAME_REPLACE_EXISTING), -EEXIST);
    /* c leaves: b is next in line */
    cr_assert_eq(broker_release(c, "lead"), 0);
    cr_assert_eq(broker_resolve(w, "lead", &id), 0);
    cr_assert_eq(id, broker_client_id(b));
    /* plain flags 0 is a register */
    cr_assert_eq(broker_register_flags(a, "solo", 0), BROKER_NAME_OWNER);
    cr_assert_eq(broker_register(b, "solo"), -EEXIST);
    broker_close(a);
    broker_close(b);
    broker_close(c);
    broker_close(w);
    th_broker_stop(&br);
}

/* ---- groups, limits, slow subscribers ----------------------------------- */

Test(pubsub, queue_group_delivers_each_message_once)
{
    broker_t *m1 = th_connect(&br), *m2 = th_connect(&br);
    broker_t *all = th_connect(&br), *p = th_connect(&br);
    broker_t *members[2] = { m1, m2 };
    uint32_t gid[2] = { sub_ok(m1, "q.*", "workers", BROKER_SUB_DROP),
                        sub_ok(m2, "q.*", "workers", BROKER_SUB_BLOCK) };
    uint32_t end[2] = { sub_ok(m1, "end", NULL, BROKER_SUB_DROP),
                        sub_ok(m2, "end", NULL, BROKER_SUB_DROP) };
    uint32_t aid = sub_ok(all, "q.*", NULL, BROKER_SUB_DROP);
    enum { N = 40 };
    int seen[N] = { 0 };
    char text[16];

    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "%d", i);
        pub_ok(p, "q.job", text);
    }
    pub_ok(p, "end", "end");
    /* the plain subscriber gets every one, in order */
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "%d", i);
        expect_pub(all, "q.job", aid, text, broker_client_id(p));
    }
    /* the members share them: each exactly once in all */
    for (int k = 0; k < 2; k++) {
        for (;;) {
            broker_msg_t *m = th_recv_kind(members[k], BROKER_MSG_DATA);
            bool done = !strcmp(m->topic, "end");

            if (done) {
                cr_assert_eq(m->sub_id, end[k]);
            } else {
                int i = atoi(m->data ? (char *)m->data : "-1");
                cr_assert_eq(m->sub_id, gid[k]);
                cr_assert(i >= 0 && i < N);
                seen[i]++;
            }
            broker_msg_free(m);
            if (done)
                break;
        }
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "message %d delivered %d times", i,
                     seen[i]);
    broker_close(m1);
    broker_close(m2);
    broker_close(all);
    broker_close(p);
    th_broker_stop(&br);
}

Test(pubsub, max_subscriptions_is_enosr)
{
    th_broker_restart(&br, "--max-subscriptions", "2", NULL);
    broker_t *b = th_connect(&br);
    uint32_t id, none = 1;

    sub_ok(b, "a", NULL, BROKER_SUB_DROP);
    id = sub_ok(b, "b", NULL, BROKER_SUB_DROP);
    cr_assert_eq(broker_subscribe(b, "c", NULL, BROKER_SUB_DROP, &none),
                 -ENOSR);
    cr_assert_eq(none, 0);
    /* one given back makes room again */
    cr_assert_eq(broker_unsubscribe(b, id), 0);
    sub_ok(b, "c", NULL, BROKER_SUB_DROP);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}

Test(pubsub, policy_disconnect_drops_the_slow_subscriber)
{
    th_broker_restart(&br, "--queue-limit", "16K", NULL);
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    broker_t *ok = th_connect(&br);
    size_t len = 8192;
    char *buf = calloc(1, len);
    uint64_t total = th_scaled(400, 100);
    uint32_t oid;
    broker_msg_t *m = NULL;
    int r;

    cr_assert_not_null(buf);
    sub_ok(s, "d.x", NULL, BROKER_SUB_DISCONNECT);
    oid = sub_ok(ok, "d.end", NULL, BROKER_SUB_DROP);
    cr_assert_eq(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    for (uint64_t i = 0; i < total; i++)
        cr_assert_eq(broker_publish(p, "d.x", buf, len, NULL, 0), 0);
    pub_ok(p, "d.end", "end");
    /* the publisher was never held back, others are served */
    expect_pub(ok, "d.end", oid, "end", broker_client_id(p));
    /* s sees what was written before, then ENOBUFS, then the end */
    bool enobufs = false;
    while ((r = broker_recv(s, &m, TH_HANG_MS)) == 0) {
        if (m->kind == BROKER_MSG_ERROR && m->stream == 0 &&
            m->code == -ENOBUFS)
            enobufs = true;
        broker_msg_free(m);
    }
    cr_assert(enobufs, "no ERROR ENOBUFS before the disconnect");
    cr_assert(r == -ECONNRESET || r == -ESHUTDOWN, "%s",
              broker_strerror(r));
    free(buf);
    broker_close(s);
    broker_close(p);
    broker_close(ok);
    th_broker_stop(&br);
}
