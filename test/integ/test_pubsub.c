/*
 * test_pubsub.c - the broker's side of publish/subscribe: fan-out volume
 * and order, queue groups, the slow-subscriber policies, publishers dying
 * mid-message, fds and shared memory to several receivers, access rules,
 * and bad input spoken as raw frames.  (Names and announcements:
 * test_names_queue.c.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "error.h"
#include "frame.h"
#include "harness.h"

TH_BROKER_SUITE(pubsub_broker, 600);

/* ---- helpers ------------------------------------------------------------ */

static uint32_t sub_ok(broker_t *b, const char *pattern, const char *group,
                       broker_sub_policy_t policy)
{
    uint32_t id = 0;
    int r = broker_subscribe(b, pattern, group, policy, &id);

    TH_CHECK(r == 0, "subscribe '%s': %s", pattern, broker_strerror(r));
    TH_CHECK(id != 0, "subscription id 0");
    return id;
}

/* A publication carrying (publisher tag, sequence number) and `pad` more
 * bytes of a pattern. */
struct seqmsg {
    uint32_t tag;
    uint32_t seq;
};

static void pub_seq(broker_t *b, const char *topic, uint32_t tag,
                    uint32_t seq, size_t pad)
{
    static uint8_t buf[1 << 16];
    struct seqmsg m = { tag, seq };
    int r;

    memcpy(buf, &m, sizeof(m));
    memset(buf + sizeof(m), (int)(seq & 0xff), pad);
    r = broker_publish(b, topic, buf, sizeof(m) + pad, NULL, 0);
    TH_CHECK(r == 0, "publish %s #%u: %s", topic, seq, broker_strerror(r));
}

/* The next publication (GAPs are returned too, with *gap set). */
static broker_msg_t *next_pub(broker_t *b)
{
    for (;;) {
        broker_msg_t *m = th_recv(b);
        if (m->kind == BROKER_MSG_GAP ||
            (m->kind == BROKER_MSG_DATA && (m->flags & BROKER_MSGF_TOPIC)))
            return m;
        TH_CHECK(false, "unexpected %s (code %d)", th_kind_str(m->kind),
                 m->code);
    }
}

static struct seqmsg seq_of(const broker_msg_t *m)
{
    struct seqmsg s;

    TH_CHECK(m->len >= sizeof(s), "short publication (%zu)", m->len);
    memcpy(&s, m->data, sizeof(s));
    return s;
}

/* Wait until the broker has handled everything b sent. */
static void barrier(broker_t *b)
{
    TH_OK(broker_ping(b, TH_HANG_MS));
}

/* ---- fan-out volume and order ----------------------------------------- */

#define FAN_SUBS 50
#define FAN_PUBS 2

struct pub_arg {
    const char *topic;
    uint32_t tag;
    uint32_t count;
    size_t pad;
    th_barrier_t *go;
};

static int publisher(void *p)
{
    struct pub_arg *a = p;
    broker_t *b = th_connect(&br);

    if (a->go)
        th_barrier_wait(a->go);
    for (uint32_t i = 0; i < a->count; i++)
        pub_seq(b, a->topic, a->tag, i, a->pad);
    barrier(b);
    broker_close(b);
    return 0;
}

Test(pubsub_broker, fan_out_50_subscribers_nothing_lost_or_duplicated)
{
    uint32_t per_pub = (uint32_t)th_scaled(5000, 200);
    broker_t *s[FAN_SUBS];
    uint32_t next[FAN_SUBS][FAN_PUBS] = { { 0 } };
    uint32_t id[FAN_SUBS];
    struct pub_arg pa[FAN_PUBS];
    pid_t pid[FAN_PUBS];
    broker_t *obs = th_connect(&br);
    uint64_t left = (uint64_t)FAN_SUBS * FAN_PUBS * per_pub;

    for (int i = 0; i < FAN_SUBS; i++) {
        s[i] = th_connect(&br);
        /* block: the test reads them in turn, so nothing may be dropped */
        id[i] = sub_ok(s[i], i % 2 ? "fan.*" : "fan.>", NULL,
                       BROKER_SUB_BLOCK);
    }
    for (int p = 0; p < FAN_PUBS; p++) {
        pa[p] = (struct pub_arg){ "fan.out", (uint32_t)p, per_pub, 24, NULL };
        pid[p] = th_spawn(publisher, &pa[p]);
    }
    /* round robin over the subscribers, one message each per turn */
    while (left) {
        for (int i = 0; i < FAN_SUBS; i++) {
            broker_msg_t *m;
            struct seqmsg q;

            if (next[i][0] == per_pub && next[i][1] == per_pub)
                continue;
            m = next_pub(s[i]);
            cr_assert_eq(m->kind, BROKER_MSG_DATA, "a GAP under block");
            cr_assert_eq(m->sub_id, id[i]);
            cr_assert_str_eq(m->topic, "fan.out");
            q = seq_of(m);
            cr_assert_lt(q.tag, FAN_PUBS);
            cr_assert_eq(q.seq, next[i][q.tag],
                         "subscriber %d: publisher %u's #%u, want #%u", i,
                         q.tag, q.seq, next[i][q.tag]);
            cr_assert_eq(m->len, sizeof(q) + 24);
            for (size_t k = sizeof(q); k < m->len; k++)
                cr_assert_eq(((uint8_t *)m->data)[k], q.seq & 0xff);
            next[i][q.tag]++;
            left--;
            broker_msg_free(m);
        }
    }
    for (int p = 0; p < FAN_PUBS; p++)
        th_join(pid[p]);
    /* nothing more (no duplicate) before a marker */
    for (int i = 0; i < FAN_SUBS; i++) {
        broker_msg_t *m;
        TH_OK(broker_publish(obs, "fan.end", "end", 3, NULL, 0));
        m = next_pub(s[i]);
        cr_assert_eq(m->len, 3, "subscriber %d got more than it should", i);
        broker_msg_free(m);
        broker_close(s[i]);
        barrier(obs);
    }
    cr_assert_eq(th_status_value(obs, "published"),
                 (uint64_t)FAN_PUBS * per_pub + FAN_SUBS);
    cr_assert_eq(th_status_value(obs, "dropped_pub"), 0);
    broker_close(obs);
    th_broker_stop(&br);
}

/* ---- overlapping subscriptions ------------------------------------------ */

Test(pubsub_broker, overlapping_subscriptions_one_delivery_each)
{
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    uint32_t a = sub_ok(s, "ov.x", NULL, BROKER_SUB_DROP);
    uint32_t b = sub_ok(s, "ov.*", NULL, BROKER_SUB_DROP);
    uint32_t c = sub_ok(s, ">", NULL, BROKER_SUB_DROP);
    bool seen[3] = { false, false, false };

    TH_OK(broker_publish(p, "ov.x", "one", 3, NULL, 0));
    for (int i = 0; i < 3; i++) {
        broker_msg_t *m = next_pub(s);
        int k = m->sub_id == a ? 0 : m->sub_id == b ? 1 : m->sub_id == c ? 2
                                                                        : -1;
        cr_assert_geq(k, 0, "unknown sub id %u", m->sub_id);
        cr_assert_not(seen[k], "two deliveries for sub %u", m->sub_id);
        seen[k] = true;
        cr_assert_eq(m->source, broker_client_id(p));
        cr_assert_eq(m->len, 3);
        cr_assert_arr_eq(m->data, "one", 3);
        broker_msg_free(m);
    }
    /* only "ov.*" and ">" match ov.y */
    TH_OK(broker_publish(p, "ov.y", "two", 3, NULL, 0));
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = next_pub(s);
        cr_assert(m->sub_id == b || m->sub_id == c);
        broker_msg_free(m);
    }
    TH_OK(broker_unsubscribe(s, b));
    TH_OK(broker_publish(p, "ov.x", "three", 5, NULL, 0));
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = next_pub(s);
        cr_assert(m->sub_id == a || m->sub_id == c, "sub %u after its "
                  "unsubscribe", m->sub_id);
        cr_assert_eq(m->len, 5);
        broker_msg_free(m);
    }
    cr_assert_eq(th_status_value(p, "subscriptions"), 2);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

/* ---- queue groups -------------------------------------------------------- */

#define GROUP_N 3

/* Read a member until the "end" marker (its own non-group subscription);
 * record what it got in got[] (index: seq). */
static uint32_t drain_member(broker_t *b, uint32_t gid, uint8_t *got,
                             uint32_t n)
{
    uint32_t count = 0, last = 0;

    for (;;) {
        broker_msg_t *m = next_pub(b);
        struct seqmsg q;

        cr_assert_eq(m->kind, BROKER_MSG_DATA);
        if (!strcmp(m->topic, "grp.end")) {
            broker_msg_free(m);
            return count;
        }
        cr_assert_eq(m->sub_id, gid);
        q = seq_of(m);
        cr_assert_lt(q.seq, n);
        cr_assert_eq(got[q.seq], 0, "message %u delivered twice", q.seq);
        cr_assert(count == 0 || q.seq > last, "order: %u after %u", q.seq,
                  last);
        got[q.seq] = 1;
        last = q.seq;
        count++;
        broker_msg_free(m);
    }
}

Test(pubsub_broker, queue_group_every_message_to_exactly_one_member)
{
    uint32_t n = (uint32_t)th_scaled(3000, 300);
    broker_t *m[GROUP_N], *p = th_connect(&br);
    uint32_t gid[GROUP_N], total = 0;
    uint8_t *got = calloc(n, 1);

    for (int i = 0; i < GROUP_N; i++) {
        m[i] = th_connect(&br);
        gid[i] = sub_ok(m[i], "grp.work", "workers",
                        i == 0 ? BROKER_SUB_BLOCK : BROKER_SUB_DROP);
        sub_ok(m[i], "grp.end", NULL, BROKER_SUB_BLOCK);
    }
    cr_assert_eq(th_status_value(p, "groups"), 1);
    for (uint32_t i = 0; i < n; i++)
        pub_seq(p, "grp.work", 0, i, 8);
    TH_OK(broker_publish(p, "grp.end", "e", 1, NULL, 0));
    for (int i = 0; i < GROUP_N; i++) {
        uint32_t c = drain_member(m[i], gid[i], got, n);
        cr_assert_gt(c, 0, "member %d got nothing", i);
        total += c;
    }
    cr_assert_eq(total, n, "%u of %u delivered", total, n);
    cr_assert_eq(th_status_value(p, "dropped_pub"), 0);
    for (int i = 0; i < GROUP_N; i++)
        broker_close(m[i]);
    broker_close(p);
    free(got);
    th_broker_stop(&br);
}

Test(pubsub_broker, queue_group_members_join_and_leave_mid_run)
{
    uint32_t n = 600;
    broker_t *a = th_connect(&br), *b = th_connect(&br), *p = th_connect(&br);
    uint32_t ga = sub_ok(a, "grp.work", "g", BROKER_SUB_BLOCK), gb;
    uint8_t *got = calloc(n, 1);
    uint32_t ca, cb;

    sub_ok(a, "grp.end", NULL, BROKER_SUB_BLOCK);
    sub_ok(b, "grp.end", NULL, BROKER_SUB_BLOCK);
    /* phase 1: only a */
    for (uint32_t i = 0; i < n / 3; i++)
        pub_seq(p, "grp.work", 0, i, 0);
    TH_OK(broker_publish(p, "grp.end", "e", 1, NULL, 0));
    cr_assert_eq(drain_member(a, ga, got, n), n / 3);
    cr_assert_eq(drain_member(b, 0, got, n), 0);
    /* phase 2: b joins */
    gb = sub_ok(b, "grp.work", "g", BROKER_SUB_DROP);
    for (uint32_t i = n / 3; i < 2 * n / 3; i++)
        pub_seq(p, "grp.work", 0, i, 0);
    TH_OK(broker_publish(p, "grp.end", "e", 1, NULL, 0));
    ca = drain_member(a, ga, got, n);
    cb = drain_member(b, gb, got, n);
    cr_assert_eq(ca + cb, n / 3);
    cr_assert_gt(cb, 0, "the new member got nothing");
    /* phase 3: b leaves; everything goes to a */
    TH_OK(broker_unsubscribe(b, gb));
    for (uint32_t i = 2 * n / 3; i < n; i++)
        pub_seq(p, "grp.work", 0, i, 0);
    TH_OK(broker_publish(p, "grp.end", "e", 1, NULL, 0));
    cr_assert_eq(drain_member(a, ga, got, n), n - 2 * n / 3);
    cr_assert_eq(drain_member(b, 0, got, n), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(got[i], 1, "message %u lost", i);
    broker_close(a);
    broker_close(b);
    broker_close(p);
    free(got);
    th_broker_stop(&br);
}

/* The delivered= of subscription `sub` of client `client` (LIST_SUBS). */
static uint64_t listed_delivered(broker_t *b, uint64_t client, uint32_t sub)
{
    char *text = NULL, want[64], *rec;
    size_t len = 0;
    uint64_t v = UINT64_MAX;

    TH_OK(broker_list(b, BROKER_CTRL_LIST_SUBS, &text, &len));
    snprintf(want, sizeof(want), "client=%" PRIu64 " sub=%" PRIu32 " ",
             client, sub);
    rec = strstr(text, want);
    TH_CHECK(rec != NULL, "no record '%s' in:\n%s", want, text);
    rec = strstr(rec, " delivered=");
    TH_CHECK(rec && sscanf(rec, " delivered=%" SCNu64, &v) == 1, "%s", text);
    free(text);
    return v;
}

Test(pubsub_broker, queue_group_leaver_messages_move_to_another_member)
{
    uint32_t n = 200;
    broker_t *a = th_connect(&br), *x = th_connect(&br), *p = th_connect(&br);
    uint32_t ga = sub_ok(a, "grp.work", "g", BROKER_SUB_DROP);
    uint32_t gx = sub_ok(x, "grp.work", "g", BROKER_SUB_DROP);
    uint8_t *got = calloc(n, 1), *fill = malloc(32768);
    uint64_t on_x;

    /* fill both members' sockets, so what follows waits in their queues */
    sub_ok(a, "grp.fill", NULL, BROKER_SUB_BLOCK);
    sub_ok(x, "grp.fill", NULL, BROKER_SUB_BLOCK);
    sub_ok(a, "grp.end", NULL, BROKER_SUB_BLOCK);
    memset(fill, 'f', 32768);
    TH_OK(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0));
    for (int i = 0; i < 32; i++)
        TH_OK(broker_publish(p, "grp.fill", fill, 32768, NULL, 0));
    for (uint32_t i = 0; i < n; i++)
        pub_seq(p, "grp.work", 0, i, 0);
    barrier(p);
    on_x = listed_delivered(p, broker_client_id(x), gx);
    cr_assert_gt(on_x, 0, "x was never chosen");
    broker_close(x);                  /* its queued share moves to a */
    th_await_status(p, "clients", 2);
    TH_OK(broker_publish(p, "grp.end", "e", 1, NULL, 0));
    {
        uint32_t count = 0;
        for (;;) {
            broker_msg_t *m = next_pub(a);
            if (!strcmp(m->topic, "grp.fill")) {
                broker_msg_free(m);
                continue;
            }
            if (!strcmp(m->topic, "grp.end")) {
                broker_msg_free(m);
                break;
            }
            struct seqmsg q = seq_of(m);
            cr_assert_eq(m->sub_id, ga);
            cr_assert_eq(got[q.seq], 0, "%u twice", q.seq);
            got[q.seq] = 1;
            count++;
            broker_msg_free(m);
        }
        /* what x had written to its socket already is x's; the rest moved */
        cr_assert_eq(th_status_value(p, "dropped_pub"), 0);
        cr_assert_geq(count, n - on_x);
        cr_assert_gt(count, n - on_x, "nothing moved from x to a");
    }
    broker_close(a);
    broker_close(p);
    free(got);
    free(fill);
    th_broker_stop(&br);
}

/* ---- slow subscribers -------------------------------------------------- */

struct fast_arg {
    th_barrier_t *ready;
    uint32_t count;
};

/* A subscriber that reads all the time: it must see every message, in
 * order, whatever the slow one does.  (Its own policy is block, so that
 * its being descheduled for a while cannot drop anything for it: only the
 * slow one's policy is under test.) */
static int fast_subscriber(void *p)
{
    struct fast_arg *a = p;
    broker_t *b = th_connect(&br);
    uint32_t id = sub_ok(b, "slow.topic", NULL, BROKER_SUB_BLOCK);

    th_barrier_signal(a->ready, 1);
    for (uint32_t i = 0; i < a->count; i++) {
        broker_msg_t *m = next_pub(b);
        TH_CHECK(m->kind == BROKER_MSG_DATA, "the fast subscriber got a GAP");
        TH_CHECK(m->sub_id == id, "sub id");
        TH_CHECK(seq_of(m).seq == i, "fast: #%u, want #%u", seq_of(m).seq,
                 i);
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

static void restart_small_queue(void)
{
    th_broker_restart(&br, "--queue-limit", "65536", NULL);
}

Test(pubsub_broker, drop_policy_gaps_and_deliveries_add_up)
{
    uint32_t n = (uint32_t)th_scaled(4000, 2000);
    th_barrier_t ready;
    struct fast_arg fa = { &ready, 0 };
    broker_t *slow, *p;
    uint32_t sid, got = 0, expect = 0;
    uint64_t gaps = 0;
    pid_t fast;

    restart_small_queue();
    fa.count = n;
    slow = th_connect(&br);
    p = th_connect(&br);
    sid = sub_ok(slow, "slow.topic", NULL, BROKER_SUB_DROP);
    th_barrier_init(&ready);
    fast = th_spawn(fast_subscriber, &fa);
    th_barrier_wait(&ready);
    /* the slow one reads nothing while this runs: 1 KiB x n >> 64 KiB */
    for (uint32_t i = 0; i < n; i++)
        pub_seq(p, "slow.topic", 0, i, 1024);
    barrier(p);
    th_join(fast);
    cr_assert_gt(th_status_value(p, "dropped_pub"), 0, "nothing dropped");
    /* now it reads: every message or a GAP accounting for it, in order */
    while (expect < n) {
        broker_msg_t *m = next_pub(slow);
        if (m->kind == BROKER_MSG_GAP) {
            cr_assert_eq(m->sub_id, sid);
            cr_assert_gt(m->gap, 0);
            gaps += m->gap;
            expect += (uint32_t)m->gap;
        } else {
            cr_assert_eq(m->sub_id, sid);
            cr_assert_eq(seq_of(m).seq, expect, "#%u after %u accounted",
                         seq_of(m).seq, expect);
            expect++;
            got++;
        }
        broker_msg_free(m);
    }
    cr_assert_eq(expect, n);
    cr_assert_eq(got + gaps, n);
    cr_assert_eq(th_status_value(p, "dropped_pub"), gaps);
    broker_close(slow);
    broker_close(p);
    th_barrier_fini(&ready);
    th_broker_stop(&br);
}

Test(pubsub_broker, block_policy_loses_nothing)
{
    uint32_t n = (uint32_t)th_scaled(2000, 1000);
    struct pub_arg pa = { "slow.topic", 0, n, 1024, NULL };
    broker_t *slow;
    uint32_t sid;
    pid_t pid;

    restart_small_queue();
    slow = th_connect(&br);
    sid = sub_ok(slow, "slow.topic", NULL, BROKER_SUB_BLOCK);
    pid = th_spawn(publisher, &pa);
    for (uint32_t i = 0; i < n; i++) {
        broker_msg_t *m = next_pub(slow);
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "GAP under block");
        cr_assert_eq(m->sub_id, sid);
        cr_assert_eq(seq_of(m).seq, i);
        broker_msg_free(m);
    }
    th_join(pid);
    cr_assert_eq(th_status_value(slow, "dropped_pub"), 0);
    broker_close(slow);
    th_broker_stop(&br);
}

Test(pubsub_broker, disconnect_policy_disconnects_the_slow_one)
{
    uint32_t n = (uint32_t)th_scaled(2000, 1000);
    th_barrier_t ready;
    struct fast_arg fa = { &ready, 0 };
    broker_t *slow, *p;
    pid_t fast;
    bool saw_error = false;

    restart_small_queue();
    fa.count = n;
    slow = th_connect(&br);
    p = th_connect(&br);
    sub_ok(slow, "slow.topic", NULL, BROKER_SUB_DISCONNECT);
    th_barrier_init(&ready);
    fast = th_spawn(fast_subscriber, &fa);
    th_barrier_wait(&ready);
    for (uint32_t i = 0; i < n; i++)
        pub_seq(p, "slow.topic", 0, i, 1024);
    barrier(p);
    th_join(fast);                    /* the fast one got everything */
    for (;;) {
        broker_msg_t *m = NULL;
        int r = broker_recv(slow, &m, TH_HANG_MS);
        if (r < 0) {
            cr_assert(r == -ENOBUFS || r == -ECONNRESET || r == -EPIPE,
                      "recv: %s", broker_strerror(r));
            saw_error |= r == -ENOBUFS;
            break;
        }
        if (m->kind == BROKER_MSG_ERROR) {
            cr_assert_eq(m->code, -ENOBUFS, "code %d", m->code);
            saw_error = true;
        }
        broker_msg_free(m);
    }
    cr_assert(saw_error, "no ERROR ENOBUFS before the end");
    th_await_status(p, "clients", 1);   /* p; the slow one is gone */
    cr_assert_gt(th_status_value(p, "dropped_pub"), 0);
    broker_close(slow);
    broker_close(p);
    th_barrier_fini(&ready);
    th_broker_stop(&br);
}

/* ---- fds and shared memory to several receivers -------------------------- */

Test(pubsub_broker, fds_published_to_three_receivers_each_get_a_dup)
{
    broker_t *s[3], *p = th_connect(&br);
    int pfd[2];
    char c;

    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    for (int i = 0; i < 3; i++) {
        s[i] = th_connect(&br);
        sub_ok(s[i], "fd.pipe", NULL, BROKER_SUB_DROP);
    }
    TH_OK(broker_publish(p, "fd.pipe", "w", 1, &pfd[1], 1));
    close(pfd[1]);
    for (int i = 0; i < 3; i++) {
        broker_msg_t *m = next_pub(s[i]);
        char byte = (char)('a' + i);

        cr_assert_eq(m->nfds, 1, "receiver %d got %u fds", i, m->nfds);
        cr_assert_eq(write(m->fds[0], &byte, 1), 1, "a working write end");
        broker_msg_free(m);           /* closes its dup */
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(read(pfd[0], &c, 1), 1);
        cr_assert_eq(c, 'a' + i);
    }
    /* every dup is closed now: the pipe reads EOF */
    for (int i = 0; i < 3; i++)
        broker_close(s[i]);
    barrier(p);
    cr_assert_eq(read(pfd[0], &c, 1), 0, "a dup of the write end leaked");
    close(pfd[0]);
    broker_close(p);
    th_broker_stop(&br);
}

Test(pubsub_broker, fds_of_an_unmatched_publication_are_closed)
{
    broker_t *p = th_connect(&br);
    int pfd[2];
    char c;

    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    TH_OK(broker_publish(p, "nobody.listens", "x", 1, &pfd[1], 1));
    close(pfd[1]);
    barrier(p);
    cr_assert_eq(read(pfd[0], &c, 1), 0, "the broker kept the fd");
    cr_assert_eq(th_status_value(p, "published_unmatched"), 1);
    close(pfd[0]);
    broker_close(p);
    th_broker_stop(&br);
}

/* The next event on p that is not a publication (p subscribes to
 * nothing here, so any DATA is a failure). */
static broker_msg_t *next_error(broker_t *p)
{
    broker_msg_t *m = th_recv(p);

    cr_assert_eq(m->kind, BROKER_MSG_ERROR, "got %s, want an ERROR",
                 th_kind_str(m->kind));
    return m;
}

/* A subscription that cannot take fds (BROKER_SUB_NO_FDS): an fd-carrying
 * publication goes to the others; the publisher gets -EXDEV from the
 * no-fds subscriber (source its client id), once per such subscription,
 * and that subscriber gets nothing of it (no GAP either) but the next
 * publication without fds. */
Test(pubsub_broker, no_fds_subscriber_skipped_publisher_gets_exdev)
{
    broker_t *p = th_connect(&br), *plain = th_connect(&br);
    broker_t *nofds = th_connect(&br);
    uint32_t sid_plain, sid_nofds, sid_grp;
    broker_msg_t *m;
    int pfd[2];
    char c;

    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    sid_plain = sub_ok(plain, "fd.>", NULL, BROKER_SUB_BLOCK);
    sid_nofds = sub_ok(nofds, "fd.>", NULL,
                       BROKER_SUB_BLOCK | BROKER_SUB_NO_FDS);
    /* a queue group whose only member takes no fds: refused as well */
    sid_grp = sub_ok(nofds, "fd.*", "g", BROKER_SUB_DROP | BROKER_SUB_NO_FDS);
    cr_assert_eq(broker_subscribe(nofds, "fd.x", NULL, 0x200,
                                  &(uint32_t){0}), -EINVAL,
                 "an unknown option bit");
    TH_OK(broker_publish(p, "fd.pipe", "w", 1, &pfd[1], 1));
    close(pfd[1]);
    TH_OK(broker_publish(p, "fd.plain", "n", 1, NULL, 0));
    m = next_pub(plain);
    cr_assert_eq(m->kind, BROKER_MSG_DATA);
    cr_assert_str_eq(m->topic, "fd.pipe");
    cr_assert_eq(m->sub_id, sid_plain);
    cr_assert_eq(m->nfds, 1, "the plain subscriber gets the fd");
    cr_assert_eq(write(m->fds[0], "a", 1), 1, "a working write end");
    broker_msg_free(m);
    cr_assert_eq(read(pfd[0], &c, 1), 1);
    cr_assert_eq(c, 'a');
    m = next_pub(plain);
    cr_assert_str_eq(m->topic, "fd.plain");
    broker_msg_free(m);
    /* the no-fds subscriber: only the publication without fds, on both
     * of its subscriptions, in order, no GAP */
    for (int i = 0; i < 2; i++) {
        m = next_pub(nofds);
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "got %s",
                     th_kind_str(m->kind));
        cr_assert_str_eq(m->topic, "fd.plain");
        cr_assert(m->sub_id == sid_nofds || m->sub_id == sid_grp);
        cr_assert_eq(m->nfds, 0);
        broker_msg_free(m);
    }
    /* the publisher: EXDEV for each of the two refused deliveries */
    for (int i = 0; i < 2; i++) {
        m = next_error(p);
        cr_assert_eq(m->code, -EXDEV, "code %d (%s)", m->code,
                     broker_strerror(m->code));
        cr_assert_eq(m->source, broker_client_id(nofds));
        broker_msg_free(m);
    }
    barrier(p);
    m = NULL;
    cr_assert_eq(broker_recv(p, &m, 0), -ETIMEDOUT,
                 "one ERROR per refused delivery, nothing else");
    /* no dup of the write end stayed anywhere */
    broker_close(plain);
    broker_close(nofds);
    barrier(p);
    cr_assert_eq(read(pfd[0], &c, 1), 0, "a dup of the write end leaked");
    close(pfd[0]);
    broker_close(p);
    th_broker_stop(&br);
}

static void await_buffers(broker_t *p, uint64_t want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    broker_shm_stats_t st;

    for (;;) {
        broker_msg_t *m = NULL;
        int r;

        broker_shm_stats(p, &st);
        if (st.buffers == want)
            return;
        cr_assert_lt(th_now_ms(), end, "%" PRIu64 " buffers, want %" PRIu64,
                     st.buffers, want);
        r = broker_recv(p, &m, 50);
        cr_assert(r == 0 || r == -ETIMEDOUT, "%s", broker_strerror(r));
        broker_msg_free(m);
    }
}

Test(pubsub_broker, shm_publication_released_after_the_last_receiver)
{
    enum { N = 4 };
    broker_t *s[N], *p = th_connect(&br);
    broker_msg_t *got[N];
    broker_buf_t *zb;
    broker_shm_stats_t st;

    for (int i = 0; i < N; i++) {
        s[i] = th_connect(&br);
        sub_ok(s[i], "shm.many", NULL, BROKER_SUB_DROP);
    }
    TH_OK(broker_buf_alloc(p, 1 << 16, &zb, TH_HANG_MS));
    th_pattern(zb->data, 1 << 16, 9, 0);
    TH_OK(broker_buf_publish(p, "shm.many", zb, 1 << 16));
    broker_buf_free(p, zb);
    for (int i = 0; i < N; i++) {
        got[i] = next_pub(s[i]);
        cr_assert(got[i]->flags & BROKER_MSGF_SHM);
        cr_assert_eq(th_pattern_check(got[i]->data, 1 << 16, 9, 0), -1);
    }
    /* all but the last release: the buffer stays out of the pool */
    for (int i = 0; i < N - 1; i++) {
        broker_msg_free(got[i]);
        barrier(s[i]);
    }
    barrier(p);
    broker_shm_stats(p, &st);
    cr_assert_eq(st.buffers, 1, "back in the pool while one still views it");
    /* the last one leaves without releasing: its view goes back too */
    cr_assert_eq(th_pattern_check(got[N - 1]->data, 1 << 16, 9, 0), -1);
    broker_msg_free(got[N - 1]);
    barrier(s[N - 1]);
    await_buffers(p, 0);
    for (int i = 0; i < N; i++)
        broker_close(s[i]);
    broker_close(p);
    th_broker_stop(&br);
}

/* ---- a publisher that dies mid-message -------------------------------- */

static void raw_pub_frame(int fd, uint8_t flags, uint32_t sid,
                          const char *topic, const void *data, size_t len)
{
    uint8_t buf[1024];
    size_t tl = topic ? strlen(topic) : 0;
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA, .flags = flags,
        .stream = sid, .aux = (uint32_t)tl, .length = (uint32_t)(tl + len),
    };

    if (tl)
        memcpy(buf, topic, tl);
    memcpy(buf + tl, data, len);
    TH_OK(th_raw_send(fd, &h, buf, NULL, 0));
}

Test(pubsub_broker, publisher_gone_mid_fragmented_publication)
{
    broker_t *s[3], *p2 = th_connect(&br);
    int raw = th_raw_connect_hello(br.sock, NULL);

    for (int i = 0; i < 3; i++) {
        s[i] = th_connect(&br);
        sub_ok(s[i], "frag.>", NULL, BROKER_SUB_DROP);
    }
    raw_pub_frame(raw, BK_F_OPEN | BK_F_TOPIC | BK_F_MORE, 1, "frag.x",
                  "first part ", 11);
    raw_pub_frame(raw, BK_F_CONT | BK_F_MORE, 1, NULL, "second part", 11);
    barrier(p2);                        /* not an order guarantee for raw */
    close(raw);                         /* as SIGKILL would */
    th_await_status(p2, "clients", 4);
    TH_OK(broker_publish(p2, "frag.y", "whole", 5, NULL, 0));
    for (int i = 0; i < 3; i++) {
        broker_msg_t *m = th_recv(s[i]);
        cr_assert_eq(m->kind, BROKER_MSG_ERROR, "receiver %d: %s first", i,
                     th_kind_str(m->kind));
        cr_assert_eq(m->code, -ECONNRESET, "code %d", m->code);
        broker_msg_free(m);
        m = next_pub(s[i]);
        cr_assert_str_eq(m->topic, "frag.y");
        cr_assert_eq(m->len, 5);
        broker_msg_free(m);
    }
    cr_assert_eq(th_status_value(p2, "streams"), 0, "a record leaked");
    for (int i = 0; i < 3; i++)
        broker_close(s[i]);
    broker_close(p2);
    th_broker_stop(&br);
}

Test(pubsub_broker, fragmented_publication_arrives_whole_to_each)
{
    broker_t *s[2], *obs = th_connect(&br);
    int raw = th_raw_connect_hello(br.sock, NULL);

    for (int i = 0; i < 2; i++) {
        s[i] = th_connect(&br);
        sub_ok(s[i], "frag.*", NULL, BROKER_SUB_DROP);
    }
    raw_pub_frame(raw, BK_F_OPEN | BK_F_TOPIC | BK_F_MORE, 1, "frag.x",
                  "abc", 3);
    raw_pub_frame(raw, BK_F_CONT | BK_F_MORE, 1, NULL, "def", 3);
    raw_pub_frame(raw, BK_F_CONT | BK_F_CLOSE, 1, NULL, "ghi", 3);
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = next_pub(s[i]);
        cr_assert_str_eq(m->topic, "frag.x");
        cr_assert_eq(m->len, 9);
        cr_assert_arr_eq(m->data, "abcdefghi", 9);
        broker_msg_free(m);
    }
    /* the stream id is free again: the publication closed it */
    raw_pub_frame(raw, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, 1, "frag.x",
                  "again", 5);
    for (int i = 0; i < 2; i++) {
        broker_msg_t *m = next_pub(s[i]);
        cr_assert_eq(m->len, 5);
        broker_msg_free(m);
    }
    cr_assert_eq(th_status_value(obs, "streams"), 0);
    close(raw);
    for (int i = 0; i < 2; i++)
        broker_close(s[i]);
    broker_close(obs);
    th_broker_stop(&br);
}

/* ---- raw frames: bad input ------------------------------------------------ */

/* Send a CTRL request and wait for its reply; returns the reply's code (0
 * or a negative errno), its payload in out (if any). */
static int raw_ctrl(int fd, uint32_t op, uint32_t req, const void *payload,
                    size_t len, uint8_t *out, size_t *outlen)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_CTRL, .aux = op,
        .stream = req, .length = (uint32_t)len,
    };

    TH_OK(th_raw_send(fd, &h, payload, NULL, 0));
    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        const uint8_t *pl;
        size_t off = 0;

        TH_CHECK(n > 0, "no reply to op %u: %zd", op, n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1) {
            if (h.type != BK_T_CTRL_REPLY || h.stream != req)
                continue;
            if (out) {
                memcpy(out, pl, h.length);
                *outlen = h.length;
            }
            return bk_err_from_wire(h.aux);
        }
    }
}

static size_t sub_req(uint8_t *b, uint8_t policy, uint8_t r1, uint16_t r3,
                      const char *pat, const char *grp)
{
    size_t pl = strlen(pat), gl = grp ? strlen(grp) : 0;

    b[0] = policy;
    b[1] = r1;
    bk_put16(b + 2, (uint16_t)pl);
    bk_put16(b + 4, (uint16_t)gl);
    bk_put16(b + 6, r3);
    memcpy(b + 8, pat, pl);
    memcpy(b + 8 + pl, grp ? grp : "", gl);
    return 8 + pl + gl;
}

Test(pubsub_broker, malformed_subscribe_requests_are_einval)
{
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint8_t b[600], out[16];
    size_t n, ol = 0;
    static const char *bad_pat[] = { "a.>.b", "a..b", ".a", "a.", "a.b*",
                                     "a b", ">b" };
    static const char *bad_grp[] = { "g r", ":g", "g*" };
    uint32_t req = 1;

    for (size_t i = 0; i < sizeof(bad_pat) / sizeof(*bad_pat); i++) {
        n = sub_req(b, 0, 0, 0, bad_pat[i], NULL);
        cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                     -EINVAL, "pattern '%s'", bad_pat[i]);
    }
    for (size_t i = 0; i < sizeof(bad_grp) / sizeof(*bad_grp); i++) {
        n = sub_req(b, 0, 0, 0, "a.b", bad_grp[i]);
        cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                     -EINVAL, "group '%s'", bad_grp[i]);
    }
    n = sub_req(b, 3, 0, 0, "a.b", NULL);           /* policy */
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                 -EINVAL);
    n = sub_req(b, 0, 4, 0, "a.b", "g");            /* unknown flag bit */
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                 -EINVAL);
    n = sub_req(b, 0, BK_SUB_F_GATEWAY, 0, "a.b", NULL);  /* no group */
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                 -EINVAL);
    n = sub_req(b, 0, 0x80 | BK_SUB_F_NOFDS, 0, "a.b", NULL);
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                 -EINVAL);
    n = sub_req(b, 0, 0, 7, "a.b", NULL);           /* reserved u16 */
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                 -EINVAL);
    n = sub_req(b, 0, 0, 0, "a.b", NULL);           /* lengths disagree */
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n - 1, NULL, NULL),
                 -EINVAL);
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, 5, NULL, NULL),
                 -EINVAL);
    n = sub_req(b, 0, 0, 0, "", NULL);              /* empty pattern */
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, NULL, NULL),
                 -EINVAL);
    /* nothing was subscribed; a good request works on the same link */
    n = sub_req(b, 2, 0, 0, "a.*", "grp");
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, out, &ol), 0);
    cr_assert_eq(ol, 4);
    cr_assert_eq(bk_get32(out), 1, "the first subscription is id 1");
    /* unsubscribe: unknown id, bad size, then the real one, then again */
    bk_put32(out, 99);
    cr_assert_eq(raw_ctrl(fd, BK_OP_UNSUBSCRIBE, req++, out, 4, NULL, NULL),
                 -ENOENT);
    cr_assert_eq(raw_ctrl(fd, BK_OP_UNSUBSCRIBE, req++, out, 3, NULL, NULL),
                 -EINVAL);
    bk_put32(out, 1);
    cr_assert_eq(raw_ctrl(fd, BK_OP_UNSUBSCRIBE, req++, out, 4, NULL, NULL),
                 0);
    cr_assert_eq(raw_ctrl(fd, BK_OP_UNSUBSCRIBE, req++, out, 4, NULL, NULL),
                 -ENOENT);
    /* ids are never reused on a connection */
    n = sub_req(b, 0, 0, 0, "a.*", NULL);
    cr_assert_eq(raw_ctrl(fd, BK_OP_SUBSCRIBE, req++, b, n, out, &ol), 0);
    cr_assert_eq(bk_get32(out), 2);
    cr_assert_eq(raw_ctrl(fd, BK_OP_PING, req++, "", 0, NULL, NULL), 0);
    close(fd);
    th_broker_stop(&br);
}

/* The next ERROR frame on fd (other frames skipped); its stream in *sid. */
static int raw_next_error(int fd, uint32_t *sid)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];

    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        const uint8_t *pl;
        size_t off = 0;
        bk_hdr_t h;

        if (n <= 0)
            return 1;                   /* EOF without ERROR */
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1)
            if (h.type == BK_T_ERROR) {
                *sid = h.stream;
                return bk_err_from_wire(h.aux);
            }
    }
}

Test(pubsub_broker, publication_errors_on_the_stream_keep_the_link)
{
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint32_t sid = 0;

    raw_pub_frame(fd, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, 5, "a..b", "x",
                  1);
    cr_assert_eq(raw_next_error(fd, &sid), -EINVAL);
    cr_assert_eq(sid, 5);
    raw_pub_frame(fd, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, 6, "$broker.names",
                  "name=x old=0 new=1\n", 19);
    cr_assert_eq(raw_next_error(fd, &sid), -EACCES);
    cr_assert_eq(sid, 6);
    /* a refused fragmented publication: the rest is swallowed */
    raw_pub_frame(fd, BK_F_OPEN | BK_F_TOPIC | BK_F_MORE, 7, "$broker.x",
                  "a", 1);
    cr_assert_eq(raw_next_error(fd, &sid), -EACCES);
    raw_pub_frame(fd, BK_F_CONT | BK_F_CLOSE, 7, NULL, "b", 1);
    cr_assert_eq(raw_ctrl(fd, BK_OP_PING, 1, "", 0, NULL, NULL), 0);
    close(fd);
    th_broker_stop(&br);
}

/* A TOPIC frame that breaks the one-way rule: the client is cut off with
 * EPROTO. */
static void expect_cut_off(uint8_t flags1, uint8_t flags2, bool second)
{
    int fd = th_raw_connect_hello(br.sock, NULL);
    uint32_t aux = 0;
    int nerr = 0;

    raw_pub_frame(fd, flags1, 3, "one.way", "x", 1);
    if (second)
        raw_pub_frame(fd, flags2, 3, NULL, "y", 1);
    cr_assert_geq(th_raw_drain_to_eof(fd, &aux, &nerr), 0);
    cr_assert_eq(nerr, 1, "flags %#x/%#x: %d errors", flags1, flags2, nerr);
    cr_assert_eq(bk_err_from_wire(aux), -EPROTO);
    close(fd);
}

Test(pubsub_broker, topic_frames_breaking_the_one_way_rule)
{
    broker_t *s = th_connect(&br);
    uint64_t errs;

    sub_ok(s, "one.way", NULL, BROKER_SUB_DROP);
    /* first fragment neither CLOSE nor MORE */
    expect_cut_off(BK_F_OPEN | BK_F_TOPIC, 0, false);
    /* the message ends without CLOSE: the subscriber hears ECONNRESET */
    expect_cut_off(BK_F_OPEN | BK_F_TOPIC | BK_F_MORE, BK_F_CONT, true);
    {
        broker_msg_t *m = th_recv(s);
        cr_assert_eq(m->kind, BROKER_MSG_ERROR);
        cr_assert_eq(m->code, -ECONNRESET);
        broker_msg_free(m);
    }
    /* TOPIC with NAME; TOPIC without OPEN */
    expect_cut_off(BK_F_OPEN | BK_F_TOPIC | BK_F_NAME | BK_F_CLOSE, 0,
                   false);
    expect_cut_off(BK_F_TOPIC | BK_F_CLOSE, 0, false);
    /* an invalid topic does not excuse a malformed rest of the frame */
    {
        int fd = th_raw_connect_hello(br.sock, NULL);
        uint32_t aux = 0;
        int nerr = 0;

        raw_pub_frame(fd, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE | BK_F_SHM, 3,
                      "a..b", "short", 5);
        cr_assert_geq(th_raw_drain_to_eof(fd, &aux, &nerr), 0);
        cr_assert_eq(nerr, 1);
        cr_assert_eq(bk_err_from_wire(aux), -EPROTO);
        close(fd);
    }
    errs = th_status_value(s, "protocol_errors");
    cr_assert_eq(errs, 5);
    cr_assert_eq(th_status_value(s, "streams"), 0);
    TH_OK(broker_ping(s, TH_HANG_MS));
    broker_close(s);
    th_broker_stop(&br);
}

/* ---- limits and access rules ------------------------------------------- */

Test(pubsub_broker, max_subscriptions_refuses_beyond_it)
{
    broker_t *s;
    uint32_t id;

    th_broker_restart(&br, "--max-subscriptions", "3", NULL);
    s = th_connect(&br);
    for (int i = 0; i < 3; i++)
        sub_ok(s, "lim.x", NULL, BROKER_SUB_DROP);
    cr_assert_eq(broker_subscribe(s, "lim.y", NULL, BROKER_SUB_DROP, &id),
                 -ENOSR);
    cr_assert_eq(th_status_value(s, "max_subscriptions"), 3);
    broker_close(s);
    th_broker_stop(&br);
}

static char conf_path[256];

static void write_conf(const char *text)
{
    FILE *f = fopen(conf_path, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

/* A broker reading `text` as its configuration file (0666 socket). */
static void start_with_conf(const char *text)
{
    char full[1024];

    snprintf(conf_path, sizeof(conf_path), "/tmp/bk-pubsub-conf-%d",
             (int)getpid());
    snprintf(full, sizeof(full), "socket-mode = 0666\n%s", text);
    write_conf(full);
    th_broker_restart(&br, "-c", conf_path, NULL);
    cr_assert_eq(chmod(br.dir, 0755), 0);
}

static int reload(broker_t *b)
{
    void *out = NULL;
    size_t len = 0;
    int r = broker_ctrl(b, BROKER_CTRL_RELOAD, NULL, 0, &out, &len);

    free(out);
    return r;
}

Test(pubsub_broker, reload_lowering_max_subscriptions_keeps_existing)
{
    broker_t *s, *p;
    uint32_t id;

    start_with_conf("max-subscriptions = 4\n");
    s = th_connect(&br);
    p = th_connect(&br);
    for (int i = 0; i < 3; i++)
        sub_ok(s, "lim.x", NULL, BROKER_SUB_DROP);
    write_conf("socket-mode = 0666\nmax-subscriptions = 1\n");
    TH_OK(reload(p));
    cr_assert_eq(broker_subscribe(s, "lim.y", NULL, BROKER_SUB_DROP, &id),
                 -ENOSR);
    cr_assert_eq(th_status_value(p, "subscriptions"), 3);
    /* the three still deliver */
    TH_OK(broker_publish(p, "lim.x", "k", 1, NULL, 0));
    for (int i = 0; i < 3; i++) {
        broker_msg_t *m = next_pub(s);
        broker_msg_free(m);
    }
    unlink(conf_path);
    broker_close(s);
    broker_close(p);
    th_broker_stop(&br);
}

static int nobody_pubsub(void *arg)
{
    broker_t *b = NULL, *me = NULL;
    broker_msg_t *m;
    uint32_t id;
    int r;

    (void)arg;
    TH_CHECK(th_become_nobody(), "cannot become nobody");
    TH_OK(broker_connect(br.sock, &b));
    TH_OK(broker_connect(br.sock, &me));
    /* subscribe: covered by the rule, or not */
    TH_OK(broker_subscribe(me, "sub.ok.*", NULL, BROKER_SUB_DROP, &id));
    TH_OK(broker_subscribe(me, "sub.ok.>", NULL, BROKER_SUB_DROP, &id));
    r = broker_subscribe(b, ">", NULL, BROKER_SUB_DROP, &id);
    TH_CHECK(r == -EACCES, "'>': %d", r);
    r = broker_subscribe(b, "sub.*", NULL, BROKER_SUB_DROP, &id);
    TH_CHECK(r == -EACCES, "'sub.*': %d", r);
    r = broker_subscribe(b, "$broker.names", NULL, BROKER_SUB_DROP, &id);
    TH_CHECK(r == -EACCES, "'$broker.names': %d", r);
    /* publish: matched by the rule, or refused on the stream */
    TH_OK(broker_publish(b, "sub.ok.a", "yes", 3, NULL, 0));
    m = th_recv_kind(me, BROKER_MSG_DATA);
    TH_CHECK(m->len == 3, "len");
    broker_msg_free(m);
    TH_OK(broker_publish(b, "other.topic", "no", 2, NULL, 0));
    m = th_recv_kind(b, BROKER_MSG_ERROR);
    TH_CHECK(m->code == -EACCES, "publish refused with %d", m->code);
    broker_msg_free(m);
    broker_close(b);
    broker_close(me);
    return 0;
}

Test(pubsub_broker, allow_publish_and_allow_subscribe)
{
    broker_t *root;
    uint32_t id;

    if (geteuid() != 0)
        cr_skip_test("needs root to switch to uid %d", TH_NOBODY);
    start_with_conf("allow-publish = sub.ok.> uid:65534\n"
                    "allow-subscribe = sub.ok.> uid:65534\n");
    th_join(th_spawn(nobody_pubsub, NULL));
    /* root is not bound by the rules */
    root = th_connect(&br);
    TH_OK(broker_subscribe(root, ">", NULL, BROKER_SUB_DROP, &id));
    TH_OK(broker_publish(root, "other.topic", "r", 1, NULL, 0));
    broker_msg_free(next_pub(root));
    cr_assert_eq(th_status_value(root, "dropped_pub"), 0);
    unlink(conf_path);
    broker_close(root);
    th_broker_stop(&br);
}

Test(pubsub_broker, bad_topic_patterns_in_rules_are_refused)
{
    char *argv[] = { (char *)th_brokerd_path(), "-f", "-c", conf_path, "-s",
                     "/tmp/bk-pubsub-never.sock", NULL };
    th_output_t o;
    int st;

    snprintf(conf_path, sizeof(conf_path), "/tmp/bk-pubsub-bad-%d",
             (int)getpid());
    write_conf("allow-publish = a.>.b *\n");
    st = th_run((const char *const *)argv, NULL, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 2), "status %#x", st);
    cr_assert_not_null(strstr(o.err, "bad topic pattern"), "%s", o.err);
    th_output_free(&o);
    unlink(conf_path);
    th_broker_stop(&br);
}

/* ---- monitor ------------------------------------------------------------ */

Test(pubsub_broker, monitor_topic_filter_records_matching_publications)
{
    broker_t *mon = th_connect(&br), *s1 = th_connect(&br),
             *s2 = th_connect(&br), *p = th_connect(&br);
    broker_monitor_rec_t r;
    broker_msg_t *m;
    uint64_t seen = 0;
    int n = 0;

    cr_assert_eq(broker_monitor(mon, "topic:a..b", 0), -EINVAL);
    TH_OK(broker_monitor(mon, "topic:mon.*", 0));
    sub_ok(s1, "mon.>", NULL, BROKER_SUB_DROP);
    sub_ok(s2, ">", NULL, BROKER_SUB_DROP);
    th_register(s1, "mon.svc");
    TH_OK(broker_publish(p, "other.x", "no", 2, NULL, 0));
    TH_OK(broker_send(p, "mon.svc", "unicast", 7, NULL, 0));
    TH_OK(broker_publish(p, "mon.a", "yes", 3, NULL, 0));
    barrier(p);
    barrier(mon);
    /* one record per receiver of mon.a, nothing else */
    while (broker_recv(mon, &m, 0) == 0) {
        cr_assert_eq(m->kind, BROKER_MSG_MONITOR);
        cr_assert_eq(broker_monitor_parse(m, &r), 0);
        cr_assert_eq(r.type, BK_T_DATA);
        cr_assert(r.flags & BK_F_TOPIC);
        cr_assert_eq(r.sender, broker_client_id(p));
        cr_assert_eq(r.aux, 5);
        cr_assert_eq(memcmp(r.preview, "mon.ayes", 8), 0);
        seen |= r.receiver == broker_client_id(s1) ? 1 : 2;
        n++;
        broker_msg_free(m);
    }
    cr_assert_eq(n, 2, "%d records", n);
    cr_assert_eq(seen, 3);
    broker_close(mon);
    broker_close(s1);
    broker_close(s2);
    broker_close(p);
    th_broker_stop(&br);
}
