/*
 * test_gateway.c - queue groups with a gateway (BROKER_SUB_GATEWAY), the
 * broker's side of a group that spans hosts: the gateway takes the
 * group's share of every local publication, its own publications skip
 * the group, it hands messages to the members with broker_publish_group,
 * and it hears how many members there are on "$broker.members".
 *
 * Order is what the tests lean on instead of clocks: one publisher's
 * messages reach each subscriber in order, so a marker published last on
 * a topic every client subscribes to proves that whatever was going to
 * reach that client before it has arrived.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(gateway, 120);

#define GW (BROKER_SUB_DROP | BROKER_SUB_GATEWAY)

static uint32_t sub_ok(broker_t *b, const char *pattern, const char *group,
                       int policy)
{
    uint32_t id = 0;
    int r = broker_subscribe(b, pattern, group, (broker_sub_policy_t)policy,
                             &id);

    cr_assert_eq(r, 0, "subscribe '%s': %s", pattern, broker_strerror(r));
    return id;
}

static void pub_ok(broker_t *b, const char *topic, const char *text)
{
    int r = broker_publish(b, topic, text, strlen(text), NULL, 0);

    cr_assert_eq(r, 0, "publish '%s': %s", topic, broker_strerror(r));
}

/* The next event: a publication on topic for subscription id with
 * payload text.  Returns its source. */
static uint64_t expect_pub(broker_t *b, const char *topic, uint32_t id,
                           const char *text)
{
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
    uint64_t src;

    cr_assert(m->flags & BROKER_MSGF_TOPIC, "not a publication");
    cr_assert_str_eq(m->topic, topic);
    cr_assert_eq(m->sub_id, id, "sub_id %" PRIu32 ", want %" PRIu32
                 " (topic %s, data %.*s)", m->sub_id, id, m->topic,
                 (int)m->len, (char *)m->data);
    cr_assert_eq(m->len, strlen(text), "'%.*s', want '%s'", (int)m->len,
                 (char *)m->data, text);
    cr_assert_eq(memcmp(m->data, text, m->len), 0);
    src = m->source;
    broker_msg_free(m);
    return src;
}

static void expect_members(broker_t *gw, uint32_t id, unsigned n)
{
    char text[32];

    snprintf(text, sizeof(text), "members=%u\n", n);
    cr_assert_eq(expect_pub(gw, "$broker.members", id, text), 0,
                 "the broker's own");
}

/* Publish the marker on "mark" from b; each of the clients (subscribed
 * to "mark" with the ids given) must see it next. */
static void marker(broker_t *from, broker_t *const *c, const uint32_t *id,
                   size_t n)
{
    pub_ok(from, "mark", "end");
    for (size_t i = 0; i < n; i++)
        expect_pub(c[i], "mark", id[i], "end");
}

Test(gateway, needs_a_group_and_privilege)
{
    broker_t *b = th_connect(&br);
    uint32_t id = 5;

    cr_assert_eq(broker_subscribe(b, "w.>", NULL, GW, &id), -EINVAL,
                 "a gateway is a member of a group");
    cr_assert_eq(id, 0);
    cr_assert_eq(broker_publish_group(b, 0, "w.x", "x", 1, NULL, 0),
                 -EINVAL);
    cr_assert_eq(broker_publish_group(b, 1, "w.*", "x", 1, NULL, 0),
                 -EINVAL, "a topic has no wildcards");
    broker_close(b);
}

static int nobody_gateway(void *arg)
{
    const th_broker_t *tb = arg;
    broker_t *b;
    uint32_t id;

    if (!th_become_nobody())
        return 10;
    if (broker_connect(tb->sock, &b) < 0)
        return 11;
    if (broker_subscribe(b, "w.>", "g", GW, &id) != -EPERM)
        return 12;
    if (broker_subscribe(b, "w.>", "g", BROKER_SUB_DROP, &id) != 0)
        return 13;              /* an ordinary member it may be */
    broker_close(b);
    return 0;
}

Test(gateway, only_a_privileged_client_is_a_gateway)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to become another user");
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
    cr_assert_eq(th_join_status(th_spawn(nobody_gateway, &br)), 0);
}

/* Members m[0], m[1], gateway gw in group "g" on "w.>"; publisher p.
 * Every client subscribes to "mark" too. */
typedef struct scene {
    broker_t *m[2], *gw, *p;
    uint32_t mid[2], gid;
    broker_t *all[4];
    uint32_t mark[4];
} scene_t;

static void scene_start(scene_t *s)
{
    for (int i = 0; i < 2; i++) {
        s->m[i] = th_connect(&br);
        s->mid[i] = sub_ok(s->m[i], "w.>", "g", BROKER_SUB_BLOCK);
    }
    s->gw = th_connect(&br);
    s->gid = sub_ok(s->gw, "w.>", "g", GW | BROKER_SUB_BLOCK);
    expect_members(s->gw, s->gid, 2);
    s->p = th_connect(&br);
    s->all[0] = s->m[0];
    s->all[1] = s->m[1];
    s->all[2] = s->gw;
    s->all[3] = s->p;
    for (int i = 0; i < 4; i++)
        s->mark[i] = sub_ok(s->all[i], "mark", NULL, BROKER_SUB_BLOCK);
}

static void scene_stop(scene_t *s)
{
    for (int i = 0; i < 4; i++)
        if (s->all[i])
            broker_close(s->all[i]);
}

Test(gateway, takes_the_group_share_of_local_publications)
{
    scene_t s;
    char text[16];

    scene_start(&s);
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof(text), "job %d", i);
        pub_ok(s.p, "w.a", text);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof(text), "job %d", i);
        cr_assert_eq(expect_pub(s.gw, "w.a", s.gid, text),
                     broker_client_id(s.p));
    }
    /* and the members got none of them: the marker comes first */
    marker(s.p, s.all, s.mark, 4);
    scene_stop(&s);
}

/* The operator sees which subscription is the gateway. */
Test(gateway, brokerctl_subs_shows_the_gateway)
{
    scene_t s;
    th_output_t o;
    int st;

    scene_start(&s);
    st = th_ctl(br.sock, &o, "subs", "--json", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl exit 0x%x: %s", st, o.err);
    cr_assert_not_null(strstr(o.out, "\"policy\":\"block\",\"flags\":"
                              "\"gateway\""), "%s", o.out);
    cr_assert_not_null(strstr(o.out, "\"policy\":\"block\",\"flags\":"
                              "\"\""), "the members: %s", o.out);
    th_output_free(&o);
    scene_stop(&s);
}

Test(gateway, hands_messages_to_one_member_each)
{
    scene_t s;
    uint32_t plain;
    char text[16];
    int got[2] = { 0, 0 };

    scene_start(&s);
    plain = sub_ok(s.p, "w.>", NULL, BROKER_SUB_BLOCK);
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof(text), "in %d", i);
        cr_assert_eq(broker_publish_group(s.gw, s.gid, "w.b", text,
                                          strlen(text), NULL, 0), 0);
    }
    /* equal loads: the members take turns, each message to one of them,
     * in order; a plain subscriber does not get them */
    for (int i = 0; i < 10; i++) {
        int k = i % 2;
        snprintf(text, sizeof(text), "in %d", i);
        cr_assert_eq(expect_pub(s.m[k], "w.b", s.mid[k], text),
                     broker_client_id(s.gw));
        got[k]++;
    }
    cr_assert_eq(got[0] + got[1], 10);
    marker(s.gw, s.all, s.mark, 4);
    (void)plain;
    scene_stop(&s);
}

Test(gateway, its_own_publications_skip_the_group)
{
    scene_t s;
    broker_t *other = th_connect(&br);
    uint32_t plain, local, omark;

    scene_start(&s);
    plain = sub_ok(s.p, "w.>", NULL, BROKER_SUB_BLOCK);
    /* a group of the same name on another pattern has no gateway */
    local = sub_ok(other, "w.*", "g", BROKER_SUB_BLOCK);
    omark = sub_ok(other, "mark", NULL, BROKER_SUB_BLOCK);
    pub_ok(s.gw, "w.c", "from afar");
    expect_pub(s.p, "w.c", plain, "from afar");
    expect_pub(other, "w.c", local, "from afar");
    marker(s.gw, s.all, s.mark, 4);
    expect_pub(other, "mark", omark, "end");
    broker_close(other);
    scene_stop(&s);
}

/* An ERROR event on the stream of the last publication. */
static void expect_error(broker_t *b, int code)
{
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_ERROR);

    cr_assert_eq(m->code, code, "code %d (%s), want %d", m->code,
                 broker_strerror(m->code), code);
    broker_msg_free(m);
}

Test(gateway, addressing_errors_come_back_on_the_stream)
{
    scene_t s;
    uint32_t plain;

    scene_start(&s);
    plain = sub_ok(s.gw, "z", "h", BROKER_SUB_BLOCK);
    /* not a gateway subscription, an unknown id, a topic off its pattern */
    cr_assert_eq(broker_publish_group(s.gw, plain, "z", "x", 1, NULL, 0), 0);
    expect_error(s.gw, -EINVAL);
    cr_assert_eq(broker_publish_group(s.gw, 999, "w.x", "x", 1, NULL, 0), 0);
    expect_error(s.gw, -EINVAL);
    cr_assert_eq(broker_publish_group(s.gw, s.gid, "v.x", "x", 1, NULL, 0),
                 0);
    expect_error(s.gw, -EINVAL);
    /* the members leave: the gateway hears it, and then ENOENT */
    broker_close(s.m[0]);
    expect_members(s.gw, s.gid, 1);
    broker_close(s.m[1]);
    expect_members(s.gw, s.gid, 0);
    cr_assert_eq(broker_publish_group(s.gw, s.gid, "w.x", "x", 1, NULL, 0),
                 0);
    expect_error(s.gw, -ENOENT);
    /* a member comes back */
    s.m[0] = th_connect(&br);
    s.mid[0] = sub_ok(s.m[0], "w.>", "g", BROKER_SUB_BLOCK);
    expect_members(s.gw, s.gid, 1);
    cr_assert_eq(broker_publish_group(s.gw, s.gid, "w.x", "back", 4, NULL,
                                      0), 0);
    expect_pub(s.m[0], "w.x", s.mid[0], "back");
    broker_close(s.m[0]);
    broker_close(s.gw);
    broker_close(s.p);
}

Test(gateway, without_its_gateway_the_group_is_local_again)
{
    scene_t s;

    scene_start(&s);
    cr_assert_eq(broker_unsubscribe(s.gw, s.gid), 0);
    pub_ok(s.p, "w.d", "one");
    pub_ok(s.p, "w.d", "two");
    expect_pub(s.m[0], "w.d", s.mid[0], "one");
    expect_pub(s.m[1], "w.d", s.mid[1], "two");
    marker(s.p, s.all, s.mark, 4);
    scene_stop(&s);
}

/* Whole messages waiting in the broker for a gateway that goes go to
 * the members: nothing is lost when the bridge dies. */
Test(gateway, what_waits_for_a_gateway_that_goes_moves_to_the_members)
{
    scene_t s;
    char *fill = malloc(32768);
    char text[16];
    int n = 0, seen = 0;

    scene_start(&s);
    /* fill the gateway's socket, so that the jobs wait in its queue */
    sub_ok(s.gw, "fill", NULL, BROKER_SUB_BLOCK);
    memset(fill, 'f', 32768);
    TH_OK(broker_set_option(s.p, BROKER_OPT_SHM_THRESHOLD, 0));
    for (int i = 0; i < 32; i++)
        TH_OK(broker_publish(s.p, "fill", fill, 32768, NULL, 0));
    for (int i = 0; i < 6; i++) {
        snprintf(text, sizeof(text), "w%d", i);
        pub_ok(s.p, "w.e", text);
    }
    TH_OK(broker_ping(s.p, 10000));     /* all of it is routed */
    broker_close(s.gw);
    s.all[2] = NULL;
    th_await_status(s.p, "clients", 3);
    marker(s.p, s.all + 3, s.mark + 3, 1);
    for (int k = 0; k < 2; k++) {
        int last = -1;
        for (;;) {
            broker_msg_t *m = th_recv_kind(s.m[k], BROKER_MSG_DATA);
            bool mark = !strcmp(m->topic, "mark");
            if (!mark) {
                int j = ((char *)m->data)[1] - '0';
                cr_assert_eq(m->sub_id, s.mid[k]);
                cr_assert_eq(m->len, 2);
                cr_assert(j > last && j < 6, "w%d after w%d", j, last);
                cr_assert_eq(seen & 1 << j, 0, "w%d twice", j);
                seen |= 1 << j;
                last = j;
                n++;
            }
            broker_msg_free(m);
            if (mark)
                break;
        }
    }
    cr_assert_eq(n, 6, "%d of the 6 reached a member", n);
    cr_assert_eq(th_status_value(s.p, "dropped_pub"), 0);
    free(fill);
    scene_stop(&s);
}
