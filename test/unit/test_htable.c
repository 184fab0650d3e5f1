/*
 * test_htable.c - the intrusive XXH3 hash table.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "htable.h"

typedef struct ent {
    bk_hnode_t node;
    char key[24];
    int value;
    int visits;
} ent_t;

static void ent_set(ent_t *e, const void *key, size_t len, int value)
{
    cr_assert_leq(len, sizeof(e->key));
    memcpy(e->key, key, len);
    e->node.key = e->key;
    e->node.keylen = len;
    e->value = value;
    e->visits = 0;
}

static ent_t *lookup(const bk_htable_t *t, const void *key, size_t len)
{
    bk_hnode_t *n = bk_ht_find(t, key, len);

    return n ? bk_container_of(n, ent_t, node) : NULL;
}

Test(htable, empty_table)
{
    bk_htable_t t;

    bk_ht_init(&t);
    cr_assert_eq(t.count, 0);
    cr_assert_null(bk_ht_find(&t, "x", 1));
    cr_assert_null(bk_ht_next(&t, NULL));
    bk_ht_fini(&t);
    bk_ht_fini(&t);         /* fini twice is harmless */
}

Test(htable, insert_find_remove)
{
    bk_htable_t t;
    ent_t a, b, c;

    bk_ht_init(&t);
    ent_set(&a, "alpha", 5, 1);
    ent_set(&b, "beta", 4, 2);
    ent_set(&c, "gamma", 5, 3);
    cr_assert_eq(bk_ht_insert(&t, &a.node), 0);
    cr_assert_eq(bk_ht_insert(&t, &b.node), 0);
    cr_assert_eq(bk_ht_insert(&t, &c.node), 0);
    cr_assert_eq(t.count, 3);

    cr_assert_eq(lookup(&t, "alpha", 5), &a);
    cr_assert_eq(lookup(&t, "beta", 4), &b);
    cr_assert_eq(lookup(&t, "gamma", 5), &c);
    cr_assert_null(lookup(&t, "delta", 5));
    cr_assert_null(lookup(&t, "alph", 4));

    /* A lookup key in a different buffer compares by bytes. */
    char copy[8];
    memcpy(copy, "beta", 4);
    cr_assert_eq(lookup(&t, copy, 4), &b);

    bk_ht_remove(&t, &b.node);
    cr_assert_eq(t.count, 2);
    cr_assert_null(lookup(&t, "beta", 4));
    cr_assert_eq(lookup(&t, "alpha", 5), &a);
    cr_assert_eq(lookup(&t, "gamma", 5), &c);

    /* Re-insert after remove. */
    cr_assert_eq(bk_ht_insert(&t, &b.node), 0);
    cr_assert_eq(lookup(&t, "beta", 4), &b);
    cr_assert_eq(t.count, 3);

    bk_ht_remove(&t, &a.node);
    bk_ht_remove(&t, &b.node);
    bk_ht_remove(&t, &c.node);
    cr_assert_eq(t.count, 0);
    cr_assert_null(lookup(&t, "alpha", 5));
    cr_assert_null(bk_ht_next(&t, NULL));
    bk_ht_fini(&t);
}

Test(htable, duplicate_key_is_eexist)
{
    bk_htable_t t;
    ent_t a, dup, other;

    bk_ht_init(&t);
    ent_set(&a, "svc.echo", 8, 1);
    ent_set(&dup, "svc.echo", 8, 2);
    ent_set(&other, "svc.echo2", 9, 3);
    cr_assert_eq(bk_ht_insert(&t, &a.node), 0);
    cr_assert_eq(bk_ht_insert(&t, &dup.node), -EEXIST);
    cr_assert_eq(t.count, 1);
    cr_assert_eq(lookup(&t, "svc.echo", 8), &a, "the first entry stays");
    cr_assert_eq(bk_ht_insert(&t, &other.node), 0);
    cr_assert_eq(t.count, 2);

    /* Once the first is removed the duplicate can take its place. */
    bk_ht_remove(&t, &a.node);
    cr_assert_eq(bk_ht_insert(&t, &dup.node), 0);
    cr_assert_eq(lookup(&t, "svc.echo", 8)->value, 2);
    bk_ht_fini(&t);
}

Test(htable, keys_of_different_lengths)
{
    /* Prefixes of each other, embedded NULs, and the empty key. */
    static const struct { const char *k; size_t len; } keys[] = {
        { "", 0 }, { "a", 1 }, { "ab", 2 }, { "abc", 3 }, { "ab\0", 3 },
        { "\0", 1 }, { "\0\0", 2 }, { "abcdefghijklmnop", 16 },
        { "abcdefghijklmnopq", 17 }, { "abcdefghijklmnopqrstuvw", 23 },
        { "abcdefghijklmnopqrstuvwx", 24 },
    };
    enum { N = sizeof(keys) / sizeof(keys[0]) };
    bk_htable_t t;
    ent_t e[N];

    bk_ht_init(&t);
    for (int i = 0; i < N; i++) {
        ent_set(&e[i], keys[i].k, keys[i].len, i);
        cr_assert_eq(bk_ht_insert(&t, &e[i].node), 0, "key %d", i);
    }
    cr_assert_eq(t.count, N);
    for (int i = 0; i < N; i++) {
        ent_t *f = lookup(&t, keys[i].k, keys[i].len);
        cr_assert_not_null(f, "key %d", i);
        cr_assert_eq(f->value, i, "key %d found %d", i, f->value);
    }
    cr_assert_null(lookup(&t, "abcd", 4));
    cr_assert_null(lookup(&t, "\0\0\0", 3));
    bk_ht_fini(&t);
}

/* The daemon's stream key: u64 client id + u32 local stream id. */
static void stream_key(char out[12], uint64_t id, uint32_t sid)
{
    memcpy(out, &id, 8);
    memcpy(out + 8, &sid, 4);
}

Test(htable, growth_100k, .timeout = 120)
{
    enum { N = 100000 };
    bk_htable_t t;
    ent_t *e = calloc(N, sizeof(*e));
    char key[12];

    cr_assert_not_null(e);
    bk_ht_init(&t);
    for (int i = 0; i < N; i++) {
        /* Many streams per client, many clients; bit 31 set on odd ones. */
        stream_key(key, (uint64_t)(i / 37) + 1,
                   (uint32_t)(i % 37) | (i & 1 ? 0x80000000u : 0));
        ent_set(&e[i], key, 12, i);
        cr_assert_eq(bk_ht_insert(&t, &e[i].node), 0, "insert %d", i);
        cr_assert_eq(t.count, (size_t)i + 1);
    }
    cr_assert_geq(t.nbuckets, N / 2, "table grew (%zu buckets)", t.nbuckets);
    cr_assert_eq(t.nbuckets & (t.nbuckets - 1), 0, "power of two");

    for (int i = 0; i < N; i++) {
        stream_key(key, (uint64_t)(i / 37) + 1,
                   (uint32_t)(i % 37) | (i & 1 ? 0x80000000u : 0));
        ent_t *f = lookup(&t, key, 12);
        cr_assert_eq(f, &e[i], "find %d", i);
    }
    /* Absent: same ids with the other bit-31 polarity. */
    for (int i = 0; i < 1000; i++) {
        stream_key(key, (uint64_t)(i / 37) + 1,
                   (uint32_t)(i % 37) | (i & 1 ? 0 : 0x80000000u));
        cr_assert_null(lookup(&t, key, 12), "absent %d", i);
    }

    /* Remove every third entry; the rest stay findable. */
    size_t left = N;
    for (int i = 0; i < N; i += 3) {
        bk_ht_remove(&t, &e[i].node);
        left--;
    }
    cr_assert_eq(t.count, left);
    for (int i = 0; i < N; i++) {
        ent_t *f = lookup(&t, e[i].key, 12);
        if (i % 3 == 0)
            cr_assert_null(f, "removed %d still found", i);
        else
            cr_assert_eq(f, &e[i], "kept %d", i);
    }
    bk_ht_fini(&t);
    free(e);
}

Test(htable, iteration_visits_each_once, .timeout = 120)
{
    enum { N = 5000 };
    bk_htable_t t;
    ent_t *e = calloc(N, sizeof(*e));
    size_t seen = 0;

    cr_assert_not_null(e);
    bk_ht_init(&t);
    for (int i = 0; i < N; i++) {
        char k[24];
        int len = snprintf(k, sizeof(k), "name.%d", i * 7919);
        ent_set(&e[i], k, (size_t)len, i);
        cr_assert_eq(bk_ht_insert(&t, &e[i].node), 0);
    }
    for (bk_hnode_t *n = bk_ht_next(&t, NULL); n; n = bk_ht_next(&t, n)) {
        ent_t *x = bk_container_of(n, ent_t, node);
        cr_assert(x >= e && x < e + N, "node not ours");
        x->visits++;
        seen++;
        cr_assert_leq(seen, N, "iteration does not end");
    }
    cr_assert_eq(seen, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(e[i].visits, 1, "entry %d visited %d times", i,
                     e[i].visits);
    bk_ht_fini(&t);
    free(e);
}

Test(htable, remove_while_iterating)
{
    enum { N = 3000 };
    bk_htable_t t;
    ent_t *e = calloc(N, sizeof(*e));
    size_t seen = 0;

    cr_assert_not_null(e);
    bk_ht_init(&t);
    for (int i = 0; i < N; i++) {
        char k[12];
        stream_key(k, (uint64_t)i, (uint32_t)i);
        ent_set(&e[i], k, 12, i);
        cr_assert_eq(bk_ht_insert(&t, &e[i].node), 0);
    }
    /* Take the next node first, then remove the current one. */
    bk_hnode_t *n = bk_ht_next(&t, NULL);
    while (n) {
        bk_hnode_t *next = bk_ht_next(&t, n);
        ent_t *x = bk_container_of(n, ent_t, node);
        x->visits++;
        if (x->value % 2 == 0)
            bk_ht_remove(&t, n);
        seen++;
        cr_assert_leq(seen, N);
        n = next;
    }
    cr_assert_eq(seen, N);
    cr_assert_eq(t.count, N / 2);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(e[i].visits, 1, "entry %d", i);
        cr_assert_eq(lookup(&t, e[i].key, 12) != NULL, i % 2 == 1,
                     "entry %d", i);
    }
    bk_ht_fini(&t);
    free(e);
}

Test(htable, hash_is_stable_and_length_sensitive)
{
    cr_assert_eq(bk_ht_hash("abc", 3), bk_ht_hash("abc", 3));
    cr_assert_neq(bk_ht_hash("abc", 3), bk_ht_hash("abc", 2));
    cr_assert_neq(bk_ht_hash("abc", 3), bk_ht_hash("abd", 3));
}
