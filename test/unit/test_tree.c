/*
 * test_tree.c - the intrusive AVL tree (tree.c): order, balance, and
 * random inserts and removes checked against a plain array.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <criterion/criterion.h>
#include "tree.h"

typedef struct ent {
    bk_tnode_t node;
    bool linked;
} ent_t;

#define NKEYS 2000u

/* Keys are spread (i * 7 + 3) so bk_tree_after is asked between keys. */
static uint64_t key_of(size_t i)
{
    return (uint64_t)i * 7 + 3;
}

/* A small deterministic generator: the test is the same on every run. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Walk t in order with bk_tree_after and compare with the linked
 * entries of ents. */
static void expect_same(const bk_tree_t *t, const ent_t *ents, size_t n)
{
    const bk_tnode_t *x = bk_tree_first(t);
    size_t seen = 0;

    for (size_t i = 0; i < n; i++) {
        if (!ents[i].linked)
            continue;
        cr_assert_not_null(x, "missing key %zu", i);
        cr_assert_eq(x, &ents[i].node, "key %zu: wrong node", i);
        x = bk_tree_after(t, x->key);
        seen++;
    }
    cr_assert_null(x);
    cr_assert_eq(t->count, seen);
}

Test(tree, empty)
{
    bk_tree_t t;

    bk_tree_init(&t);
    cr_assert_null(bk_tree_first(&t));
    cr_assert_null(bk_tree_find(&t, 0));
    cr_assert_null(bk_tree_after(&t, 0));
    cr_assert_null(bk_tree_lower_bound(&t, 0));
    cr_assert_eq(bk_tree_check(&t), 0);
}

Test(tree, duplicate_key_refused)
{
    bk_tree_t t;
    ent_t a = { .node.key = 5 }, b = { .node.key = 5 };

    bk_tree_init(&t);
    cr_assert_eq(bk_tree_insert(&t, &a.node), 0);
    cr_assert_eq(bk_tree_insert(&t, &b.node), -EEXIST);
    cr_assert_eq(t.count, 1);
    cr_assert_eq(bk_tree_find(&t, 5), &a.node);
    /* Removing the node that was refused leaves the other one. */
    bk_tree_remove(&t, &b.node);
    cr_assert_eq(bk_tree_find(&t, 5), &a.node);
    bk_tree_remove(&t, &a.node);
    cr_assert_null(bk_tree_find(&t, 5));
    cr_assert_eq(t.count, 0);
}

Test(tree, extreme_keys)
{
    bk_tree_t t;
    ent_t lo = { .node.key = 0 }, hi = { .node.key = UINT64_MAX };

    bk_tree_init(&t);
    cr_assert_eq(bk_tree_insert(&t, &hi.node), 0);
    cr_assert_eq(bk_tree_insert(&t, &lo.node), 0);
    cr_assert_eq(bk_tree_first(&t), &lo.node);
    cr_assert_eq(bk_tree_after(&t, 0), &hi.node);
    cr_assert_null(bk_tree_after(&t, UINT64_MAX));
    cr_assert_eq(bk_tree_lower_bound(&t, UINT64_MAX), &hi.node);
}

/* Ascending inserts, the worst case of an unbalanced tree: the height
 * stays logarithmic. */
Test(tree, sorted_inserts_stay_balanced)
{
    static ent_t ents[1u << 14];
    bk_tree_t t;
    int h;

    bk_tree_init(&t);
    for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
        ents[i].node.key = i;
        cr_assert_eq(bk_tree_insert(&t, &ents[i].node), 0);
    }
    h = bk_tree_check(&t);
    /* An AVL tree of 2^14 nodes is at most 1.44 * 14 + 1 high. */
    cr_assert(h >= 15 && h <= 21, "height %d", h);
    for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i += 2)
        bk_tree_remove(&t, &ents[i].node);
    cr_assert_geq(bk_tree_check(&t), 0);
    cr_assert_eq(t.count, sizeof(ents) / sizeof(ents[0]) / 2);
    cr_assert_eq(bk_tree_first(&t), &ents[1].node);
}

Test(tree, random_against_reference)
{
    static ent_t ents[NKEYS];
    bk_tree_t t;
    uint64_t s = 0x9e3779b97f4a7c15u;

    bk_tree_init(&t);
    for (size_t i = 0; i < NKEYS; i++)
        ents[i] = (ent_t){ .node.key = key_of(i) };
    for (int round = 0; round < 40000; round++) {
        size_t i = rng_next(&s) % NKEYS;
        ent_t *e = &ents[i];

        if (e->linked) {
            bk_tree_remove(&t, &e->node);
            e->linked = false;
        } else {
            cr_assert_eq(bk_tree_insert(&t, &e->node), 0);
            e->linked = true;
        }
        cr_assert_eq(bk_tree_find(&t, key_of(i)),
                     e->linked ? &e->node : NULL);
        if (round % 997 == 0) {
            cr_assert_geq(bk_tree_check(&t), 0, "round %d", round);
            expect_same(&t, ents, NKEYS);
        }
    }
    cr_assert_geq(bk_tree_check(&t), 0);
    expect_same(&t, ents, NKEYS);
}

/* bk_tree_after and bk_tree_lower_bound for a cursor at, between and
 * beyond the keys, against a linear scan of the reference. */
Test(tree, after_and_lower_bound)
{
    static ent_t ents[NKEYS];
    bk_tree_t t;
    uint64_t s = 12345;

    bk_tree_init(&t);
    for (size_t i = 0; i < NKEYS; i++) {
        ents[i] = (ent_t){ .node.key = key_of(i) };
        if (rng_next(&s) % 3) {
            cr_assert_eq(bk_tree_insert(&t, &ents[i].node), 0);
            ents[i].linked = true;
        }
    }
    for (uint64_t c = 0; c <= key_of(NKEYS) + 2; c++) {
        const bk_tnode_t *want_after = NULL, *want_lb = NULL;

        for (size_t i = 0; i < NKEYS && !want_after; i++) {
            if (!ents[i].linked)
                continue;
            if (!want_lb && key_of(i) >= c)
                want_lb = &ents[i].node;
            if (key_of(i) > c)
                want_after = &ents[i].node;
        }
        cr_assert_eq(bk_tree_after(&t, c), want_after, "after %" PRIu64, c);
        cr_assert_eq(bk_tree_lower_bound(&t, c), want_lb, "lb %" PRIu64, c);
    }
}

/* Removing every node, in random order, leaves an empty valid tree. */
Test(tree, drain)
{
    static ent_t ents[NKEYS];
    static size_t order[NKEYS];
    bk_tree_t t;
    uint64_t s = 777;

    bk_tree_init(&t);
    for (size_t i = 0; i < NKEYS; i++) {
        ents[i] = (ent_t){ .node.key = rng_next(&s) };
        order[i] = i;
        if (bk_tree_insert(&t, &ents[i].node) == 0)
            ents[i].linked = true;
    }
    for (size_t i = NKEYS - 1; i > 0; i--) {
        size_t j = rng_next(&s) % (i + 1), x = order[i];

        order[i] = order[j];
        order[j] = x;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        if (ents[order[i]].linked)
            bk_tree_remove(&t, &ents[order[i]].node);
        if (i % 101 == 0)
            cr_assert_geq(bk_tree_check(&t), 0);
    }
    cr_assert_eq(t.count, 0);
    cr_assert_null(t.root);
}
