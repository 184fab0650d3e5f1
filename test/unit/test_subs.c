/*
 * test_subs.c - the subscription table: add/remove/match, queue groups and
 * their choice rule, cache invalidation, allocation failures, and a
 * randomized churn test against a brute-force reference (bk_topic_match
 * over every live subscription).
 *
 * subs.c is compiled into this file so that its allocations can be made
 * to fail on demand (the macros below apply to subs.c only).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "proto.h"
#include "topic.h"
#include "subs.h"

/* Allocation n (counting from 1) after arming fails; 0: none fails. */
static long fail_at, alloc_count;

static bool alloc_fails(void)
{
    return fail_at > 0 && ++alloc_count == fail_at;
}
static void *test_malloc(size_t n) { return alloc_fails() ? NULL : malloc(n); }
static void *test_calloc(size_t a, size_t b)
{
    return alloc_fails() ? NULL : calloc(a, b);
}
static void *test_realloc(void *p, size_t n)
{
    return alloc_fails() ? NULL : realloc(p, n);
}
static void fail_alloc(long n)
{
    fail_at = n;
    alloc_count = 0;
}

#define malloc(n) test_malloc(n)
#define calloc(a, b) test_calloc(a, b)
#define realloc(p, n) test_realloc(p, n)
#include "../../src/daemon/subs.c"
#undef malloc
#undef calloc
#undef realloc

#define S(x) x, sizeof(x) - 1

static bk_subs_t *tab;

static void setup(void)
{
    fail_alloc(0);
    tab = bk_subs_new();
    cr_assert_not_null(tab);
}

static void teardown(void)
{
    bk_subs_free(tab);
}

static bk_sub_t *add(uint64_t client, uint32_t id, const char *pat,
                     const char *group)
{
    bk_sub_t *s = NULL;
    int r = bk_subs_add(tab, client, NULL, id, pat, strlen(pat), group,
                        group ? strlen(group) : 0, BK_SUB_DROP, &s);
    cr_assert_eq(r, 0, "add %s: %d", pat, r);
    cr_assert_not_null(s);
    return s;
}

/* The ids (client * 1000 + id) of m's single subscriptions, as text. */
static const char *ids(const bk_subs_match_t *m)
{
    static char buf[4096];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < m->nsubs; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%u",
                                i ? " " : "", m->subs[i]->id);
    return buf;
}

static const char *match_ids(const char *topic)
{
    bk_subs_match_t m;
    cr_assert_eq(bk_subs_match(tab, topic, strlen(topic), &m), 0);
    return ids(&m);
}

TestSuite(subs, .init = setup, .fini = teardown);

Test(subs, empty_table_matches_nothing)
{
    bk_subs_match_t m;
    cr_expect_eq(bk_subs_match(tab, S("a.b"), &m), 0);
    cr_expect_eq(m.nsubs, 0);
    cr_expect_eq(m.ngroups, 0);
    cr_expect_eq(bk_subs_count(tab), 0);
    cr_expect_null(bk_subs_after(tab, 0));
}

Test(subs, add_fills_the_subscription)
{
    int owner;
    bk_sub_t *s = NULL;
    cr_assert_eq(bk_subs_add(tab, 7, &owner, 3, S("a.*"), NULL, 0,
                             BK_SUB_BLOCK, &s), 0);
    cr_expect_eq(s->id, 3);
    cr_expect_eq(s->client, 7);
    cr_expect_eq(s->owner, &owner);
    cr_expect_eq(s->policy, BK_SUB_BLOCK);
    cr_expect_null(s->group);
    cr_expect_str_eq(s->pattern, "a.*");
    cr_expect_eq(s->plen, 3);
    cr_expect_eq(s->delivered + s->dropped + s->gap_pending + s->queued, 0);
    cr_expect_not(bk_list_linked(&s->client_link));
    cr_expect_eq(bk_subs_count(tab), 1);
}

Test(subs, match_basics_and_wildcards)
{
    add(1, 1, "a", NULL);
    add(1, 2, "a.b", NULL);
    add(1, 3, "a.*", NULL);
    add(1, 4, "a.>", NULL);
    add(1, 5, "*", NULL);
    add(1, 6, ">", NULL);
    add(1, 7, "*.b", NULL);
    add(1, 8, "a.*.c", NULL);
    add(1, 9, "$broker.names", NULL);
    add(1, 10, "$broker.>", NULL);
    cr_expect_str_eq(match_ids("a"), "1 5 6");
    cr_expect_str_eq(match_ids("a.b"), "2 3 4 6 7");
    cr_expect_str_eq(match_ids("a.b.c"), "4 6 8");
    cr_expect_str_eq(match_ids("x.b"), "6 7");
    cr_expect_str_eq(match_ids("x"), "5 6");
    cr_expect_str_eq(match_ids("$broker.names"), "9 10");
    cr_expect_str_eq(match_ids("$broker"), "");
    cr_expect_str_eq(match_ids("$x.b"), "");
    cr_expect_str_eq(match_ids("q.r.s.t"), "6");
}

Test(subs, order_is_creation_order_not_trie_order)
{
    add(1, 1, ">", NULL);
    add(2, 2, "a.b", NULL);
    add(3, 3, "a.*", NULL);
    add(1, 4, "a.b", NULL);     /* two of one client on one pattern */
    add(2, 5, "*.b", NULL);
    add(3, 6, "a.>", NULL);
    cr_expect_str_eq(match_ids("a.b"), "1 2 3 4 5 6");
}

Test(subs, remove_and_cache_invalidation)
{
    bk_sub_t *a = add(1, 1, "a.b", NULL);
    cr_expect_str_eq(match_ids("a.b"), "1");
    bk_sub_t *b = add(1, 2, "a.>", NULL);
    cr_expect_str_eq(match_ids("a.b"), "1 2");   /* cached then changed */
    bk_subs_remove(tab, a);
    cr_expect_str_eq(match_ids("a.b"), "2");
    cr_expect_str_eq(match_ids("a.b"), "2");     /* from the cache */
    bk_subs_remove(tab, b);
    cr_expect_str_eq(match_ids("a.b"), "");
    cr_expect_eq(bk_subs_count(tab), 0);
    /* The trie is empty again: only the root is left. */
    cr_expect(subs_node_empty(tab->root));
}

Test(subs, remove_unlinks_client_link)
{
    bk_list_t client = BK_LIST_INIT(client);
    bk_sub_t *a = add(1, 1, "x", NULL);
    bk_sub_t *b = add(1, 2, "y", NULL);
    bk_list_push_tail(&client, &a->client_link);
    bk_list_push_tail(&client, &b->client_link);
    bk_subs_remove(tab, a);
    cr_expect_eq(bk_list_first(&client), &b->client_link);
    bk_subs_remove(tab, b);
    cr_expect(bk_list_empty(&client));
}

Test(subs, prune_keeps_shared_nodes)
{
    bk_sub_t *a = add(1, 1, "a.b.c", NULL);
    add(1, 2, "a.b", NULL);
    bk_subs_remove(tab, a);
    cr_expect_str_eq(match_ids("a.b"), "2");
    cr_expect_str_eq(match_ids("a.b.c"), "");
    subs_node_t *an = bk_container_of(bk_ht_find(&tab->root->children,
                                                 "a", 1), subs_node_t, hn);
    subs_node_t *bn = bk_container_of(bk_ht_find(&an->children, "b", 1),
                                      subs_node_t, hn);
    cr_expect_eq(bn->children.count, 0);
}

/* The listing cursor: after a creation number, oldest first, also from
 * the number of a subscription that is gone or between numbers (a group
 * takes one too). */
Test(subs, after_walks_oldest_first)
{
    bk_sub_t *a = add(1, 1, "x", NULL);
    bk_sub_t *b = add(2, 1, "y", "g");
    bk_sub_t *c = add(3, 1, "z", NULL);
    uint64_t bseq = b->seq;

    cr_expect_eq(bk_subs_after(tab, 0), a);
    cr_expect_eq(bk_subs_after(tab, a->seq), b);
    cr_expect_eq(bk_subs_after(tab, b->seq), c);
    cr_expect_null(bk_subs_after(tab, c->seq));
    cr_expect_eq(bk_subs_after(tab, b->seq - 1), b);
    bk_subs_remove(tab, b);
    cr_expect_eq(bk_subs_after(tab, a->seq), c);
    cr_expect_eq(bk_subs_after(tab, bseq), c);
    cr_expect_null(bk_subs_after(tab, UINT64_MAX));
}

/* ---- groups ---------------------------------------------------------- */

static uint64_t loads[16];

static uint64_t load_of(const bk_sub_t *s, void *ctx)
{
    cr_expect_eq(ctx, loads);
    return loads[s->client];
}

static uint32_t pick(bk_subs_group_t *g)
{
    bk_sub_t *s = bk_subs_group_pick(g, false, load_of, loads);
    cr_assert_not_null(s);
    return (uint32_t)s->client;
}

Test(subs, groups_form_by_pattern_and_name)
{
    bk_sub_t *a = add(1, 1, "job.*", "w");
    bk_sub_t *b = add(2, 1, "job.*", "w");
    bk_sub_t *c = add(3, 1, "job.*", "other");
    bk_sub_t *d = add(4, 1, "job.>", "w");
    add(5, 1, "job.*", NULL);
    cr_expect_eq(a->group, b->group);
    cr_expect_neq(a->group, c->group);
    cr_expect_neq(a->group, d->group);
    cr_expect_str_eq(a->group->name, "w");
    cr_expect_eq(a->group->nmembers, 2);
    cr_expect_eq(bk_subs_groups(tab), 3);
    cr_expect_eq(bk_subs_count(tab), 5);

    bk_subs_match_t m;
    cr_assert_eq(bk_subs_match(tab, S("job.x"), &m), 0);
    cr_expect_str_eq(ids(&m), "1");     /* the one single subscription */
    cr_assert_eq(m.ngroups, 3);
    cr_expect_eq(m.groups[0], a->group); /* groups in creation order */
    cr_expect_eq(m.groups[1], c->group);
    cr_expect_eq(m.groups[2], d->group);

    bk_subs_remove(tab, c);
    cr_expect_eq(bk_subs_groups(tab), 2);
    cr_assert_eq(bk_subs_match(tab, S("job.x"), &m), 0);
    cr_expect_eq(m.ngroups, 2);
}

Test(subs, pick_round_robin_among_equals)
{
    bk_sub_t *m1 = add(1, 1, "q", "g");
    add(2, 1, "q", "g");
    add(3, 1, "q", "g");
    bk_subs_group_t *g = m1->group;
    memset(loads, 0, sizeof loads);
    cr_expect_eq(pick(g), 1);
    cr_expect_eq(pick(g), 2);
    cr_expect_eq(pick(g), 3);
    cr_expect_eq(pick(g), 1);
    cr_expect_eq(g->last, m1);
}

Test(subs, pick_least_load_first)
{
    bk_sub_t *m1 = add(1, 1, "q", "g");
    add(2, 1, "q", "g");
    add(3, 1, "q", "g");
    bk_subs_group_t *g = m1->group;
    loads[1] = 10; loads[2] = 5; loads[3] = 7;
    cr_expect_eq(pick(g), 2);
    cr_expect_eq(pick(g), 2);           /* still the lightest */
    loads[2] = 10;
    cr_expect_eq(pick(g), 3);
    loads[3] = 10;
    /* All equal now: the one after the last chosen (3) is 1. */
    cr_expect_eq(pick(g), 1);
    cr_expect_eq(pick(g), 2);
    loads[1] = 0; loads[3] = 0;
    /* 3 and 1 tie at 0: 3 comes first after 2. */
    cr_expect_eq(pick(g), 3);
    cr_expect_eq(pick(g), 1);
}

Test(subs, pick_after_removing_the_last_chosen)
{
    bk_sub_t *m1 = add(1, 1, "q", "g");
    bk_sub_t *m2 = add(2, 1, "q", "g");
    add(3, 1, "q", "g");
    bk_subs_group_t *g = m1->group;
    memset(loads, 0, sizeof loads);
    cr_expect_eq(pick(g), 1);
    cr_expect_eq(pick(g), 2);
    bk_subs_remove(tab, m2);            /* the last chosen */
    cr_expect_eq(pick(g), 3);           /* the one after it */
    cr_expect_eq(pick(g), 1);
    bk_subs_remove(tab, m1);            /* last chosen, and first */
    cr_expect_eq(pick(g), 3);
    cr_expect_eq(g->nmembers, 1);
}

Test(subs, pick_after_removing_first_member_as_last)
{
    bk_sub_t *m1 = add(1, 1, "q", "g");
    add(2, 1, "q", "g");
    add(3, 1, "q", "g");
    bk_subs_group_t *g = m1->group;
    memset(loads, 0, sizeof loads);
    cr_expect_eq(pick(g), 1);
    bk_subs_remove(tab, m1);
    cr_expect_null(g->last);
    cr_expect_eq(pick(g), 2);
    cr_expect_eq(pick(g), 3);
}

Test(subs, newcomer_joins_the_rotation)
{
    bk_sub_t *m1 = add(1, 1, "q", "g");
    add(2, 1, "q", "g");
    bk_subs_group_t *g = m1->group;
    memset(loads, 0, sizeof loads);
    cr_expect_eq(pick(g), 1);
    cr_expect_eq(pick(g), 2);
    add(3, 1, "q", "g");
    cr_expect_eq(pick(g), 3);
    cr_expect_eq(pick(g), 1);
}

Test(subs, last_member_leaving_frees_the_group)
{
    bk_sub_t *a = add(1, 1, "q.r", "g");
    bk_sub_t *b = add(2, 1, "q.r", "g");
    bk_subs_remove(tab, a);
    cr_expect_eq(bk_subs_groups(tab), 1);
    bk_subs_remove(tab, b);
    cr_expect_eq(bk_subs_groups(tab), 0);
    cr_expect_str_eq(match_ids("q.r"), "");
    cr_expect(subs_node_empty(tab->root));
    /* A new group of the same name starts afresh. */
    bk_sub_t *c = add(3, 1, "q.r", "g");
    cr_expect_eq(c->group->nmembers, 1);
    cr_expect_null(c->group->last);
}

/* ---- allocation failures --------------------------------------------- */

Test(subs, add_fails_cleanly_at_every_allocation)
{
    add(9, 1, "a.b", "g");
    for (long n = 1; ; n++) {
        bk_sub_t *s = (bk_sub_t *)0x1;
        fail_alloc(n);
        int r = bk_subs_add(tab, 1, NULL, 2, S("a.b.c.*.>"), S("h"),
                            BK_SUB_DROP, &s);
        fail_alloc(0);
        if (r == 0) {
            cr_expect_gt(n, 3);     /* it does allocate */
            cr_expect_eq(bk_subs_count(tab), 2);
            cr_expect_eq(bk_subs_groups(tab), 2);
            break;
        }
        cr_assert_eq(r, -ENOMEM);
        cr_expect_eq(s, (bk_sub_t *)0x1, "*out untouched on failure");
        cr_expect_eq(bk_subs_count(tab), 1);
        cr_expect_eq(bk_subs_groups(tab), 1);
        /* Nothing half-made is left in the trie: only a.b's nodes. */
        subs_node_t *an = bk_container_of(bk_ht_find(&tab->root->children,
                                                     "a", 1),
                                          subs_node_t, hn);
        subs_node_t *bn = bk_container_of(bk_ht_find(&an->children, "b", 1),
                                          subs_node_t, hn);
        cr_expect_eq(bn->children.count, 0, "failure at allocation %ld", n);
        cr_expect_eq(tab->root->children.count, 1);
    }
    bk_subs_match_t m;
    cr_assert_eq(bk_subs_match(tab, S("a.b.c.x.y"), &m), 0);
    cr_expect_eq(m.nsubs, 0);
    cr_assert_eq(m.ngroups, 1);
    cr_expect_str_eq(m.groups[0]->name, "h");
}

Test(subs, match_fails_cleanly_and_recovers)
{
    for (uint32_t i = 1; i <= 40; i++)
        add(1, i, i % 2 ? "a.>" : "*.b", NULL);
    add(2, 1, "a.b", "g");
    for (long n = 1; ; n++) {
        bk_subs_match_t m = { (bk_sub_t **)0x1, 5, NULL, 7 };
        fail_alloc(n);
        int r = bk_subs_match(tab, S("a.b"), &m);
        fail_alloc(0);
        if (r == 0) {
            cr_expect_eq(m.nsubs, 40);
            cr_expect_eq(m.ngroups, 1);
            break;
        }
        cr_assert_eq(r, -ENOMEM);
        cr_expect_eq(m.nsubs, 0);
        cr_expect_eq(m.ngroups, 0);
        cr_expect_null(m.subs);
        cr_expect_null(m.groups);
        cr_expect_eq(tab->cache.count, 0, "no half entry is cached");
    }
    /* A stale cached entry whose recomputation fails is dropped. */
    add(3, 1, "a.b", NULL);
    fail_alloc(1);
    bk_subs_match_t m;
    cr_expect_eq(bk_subs_match(tab, S("a.b"), &m), -ENOMEM);
    fail_alloc(0);
    cr_expect_eq(tab->cache.count, 0);
    cr_expect_eq(bk_subs_match(tab, S("a.b"), &m), 0);
    cr_expect_eq(m.nsubs, 41);
}

Test(subs, new_fails_cleanly)
{
    for (long n = 1; n <= 2; n++) {
        fail_alloc(n);
        cr_expect_null(bk_subs_new());
    }
    fail_alloc(0);
}

/* ---- the cache bound ------------------------------------------------- */

Test(subs, cache_is_bounded_and_flushed_whole)
{
    add(1, 1, ">", NULL);
    char topic[32];
    for (unsigned i = 0; i < BK_SUBS_CACHE_MAX; i++) {
        int l = snprintf(topic, sizeof topic, "t.%u", i);
        bk_subs_match_t m;
        cr_assert_eq(bk_subs_match(tab, topic, (size_t)l, &m), 0);
        cr_assert_eq(m.nsubs, 1);
    }
    cr_expect_eq(tab->cache.count, BK_SUBS_CACHE_MAX);
    cr_expect_str_eq(match_ids("one.more"), "1");
    cr_expect_eq(tab->cache.count, 1);
}

/* ---- scale ----------------------------------------------------------- */

Test(subs, many_unrelated_subscriptions_do_not_change_a_match)
{
    add(1, 1, "sensors.kitchen.temp", NULL);
    add(1, 2, "sensors.*.temp", NULL);
    add(1, 3, "sensors.>", NULL);
    char pat[64];
    for (uint32_t i = 0; i < 100000; i++) {
        int l = snprintf(pat, sizeof pat, i % 3 ? "u%u.x.%u" : "v%u.>",
                         i % 997, i);
        bk_sub_t *s;
        cr_assert_eq(bk_subs_add(tab, 2 + i % 100, NULL, 100 + i, pat,
                                 (size_t)l, NULL, 0, BK_SUB_DROP, &s), 0);
    }
    cr_expect_eq(bk_subs_count(tab), 100003);
    cr_expect_str_eq(match_ids("sensors.kitchen.temp"), "1 2 3");
    cr_expect_str_eq(match_ids("sensors.hall.temp"), "2 3");
    cr_expect_str_eq(match_ids("u5.x.5"), "105");
    cr_expect_str_eq(match_ids("u5.x.6"), "");
    /* v5.> was subscribed by every i = 5 + 997k with i % 3 == 0. */
    bk_subs_match_t m;
    cr_assert_eq(bk_subs_match(tab, S("v5.y"), &m), 0);
    for (size_t i = 0; i < m.nsubs; i++) {
        cr_expect_eq((m.subs[i]->id - 100) % 997, 5);
        cr_expect_eq((m.subs[i]->id - 100) % 3, 0);
        if (i)
            cr_expect_lt(m.subs[i - 1]->seq, m.subs[i]->seq);
    }
    cr_expect_eq(m.nsubs, 34);
}

/* ---- randomized churn against a brute-force reference ---------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33) % n;
}

static const char *const toks[] = { "a", "b", "c", "$d" };

static size_t random_string(char *out, bool pattern)
{
    int depth = 1 + (int)rnd(4);
    size_t len = 0;
    for (int i = 0; i < depth; i++) {
        if (i)
            out[len++] = '.';
        uint32_t k = rnd(pattern ? 6 : 4);
        const char *t = k < 4 ? toks[k] : k == 4 ? "*" : ">";
        if (k == 5 && i + 1 < depth)
            t = "*";
        size_t l = strlen(t);
        memcpy(out + len, t, l);
        len += l;
    }
    out[len] = '\0';
    return len;
}

#define CHURN_LIVE 400

static void churn(uint64_t seed, int ops)
{
    static bk_sub_t *live[CHURN_LIVE];
    size_t nlive = 0;
    uint32_t next_id = 1;
    rng_state = seed;
    for (int op = 0; op < ops; op++) {
        uint32_t what = rnd(10);
        char buf[32];
        if (what < 4 && nlive < CHURN_LIVE) {
            size_t l = random_string(buf, true);
            cr_assert(bk_topic_pattern_valid(buf, l), "%s", buf);
            static const char *const groups[] = { NULL, "g", "h" };
            const char *g = groups[rnd(3)];
            bk_sub_t *s;
            cr_assert_eq(bk_subs_add(tab, rnd(5), NULL, next_id++, buf, l,
                                     g, g ? 1 : 0, BK_SUB_DROP, &s), 0);
            live[nlive++] = s;
        } else if (what < 7 && nlive > 0) {
            size_t k = rnd((uint32_t)nlive);
            bk_subs_remove(tab, live[k]);
            memmove(live + k, live + k + 1,
                    (nlive - k - 1) * sizeof *live);
            nlive--;
        } else {
            size_t l = random_string(buf, false);
            bk_subs_match_t m;
            cr_assert_eq(bk_subs_match(tab, buf, l, &m), 0);
            /* The reference: every live subscription, oldest first
             * (live[] is in creation order). */
            size_t ns = 0, ng = 0;
            for (size_t i = 0; i < nlive; i++) {
                bk_sub_t *s = live[i];
                if (!bk_topic_match(s->pattern, s->plen, buf, l))
                    continue;
                if (!s->group) {
                    cr_assert_lt(ns, m.nsubs, "seed %lu op %d %s", seed,
                                 op, buf);
                    cr_assert_eq(m.subs[ns], s, "seed %lu op %d %s", seed,
                                 op, buf);
                    ns++;
                    continue;
                }
                bool seen = false;
                for (size_t j = 0; j < m.ngroups; j++)
                    seen |= m.groups[j] == s->group;
                cr_assert(seen, "seed %lu op %d: group of %s missing for "
                          "%s", seed, op, s->pattern, buf);
            }
            cr_assert_eq(ns, m.nsubs, "seed %lu op %d %s", seed, op, buf);
            /* Each group listed once, and only groups with a match. */
            for (size_t j = 0; j < m.ngroups; j++) {
                bk_subs_group_t *g = m.groups[j];
                bk_sub_t *first = bk_list_first_entry(&g->members, bk_sub_t,
                                                      node_link);
                cr_assert(bk_topic_match(first->pattern, first->plen, buf,
                                         l));
                for (size_t k = 0; k < j; k++)
                    cr_assert_neq(m.groups[k], g);
                ng++;
            }
            (void)ng;
        }
        cr_assert_eq(bk_subs_count(tab), nlive);
    }
    while (nlive > 0)
        bk_subs_remove(tab, live[--nlive]);
    cr_expect_eq(bk_subs_groups(tab), 0);
    cr_expect(subs_node_empty(tab->root), "the trie is pruned to the root");
}

Test(subs, churn_seed_1) { churn(1, 20000); }
Test(subs, churn_seed_2) { churn(0x9e3779b97f4a7c15u, 20000); }
Test(subs, churn_seed_3) { churn(424242, 20000); }
