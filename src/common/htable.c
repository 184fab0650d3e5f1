/*
 * htable.c - intrusive chained hash table with XXH3 hashing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "htable.h"

uint64_t bk_ht_hash(const void *key, size_t len)
{
    return XXH3_64bits(key, len);
}

void bk_ht_init(bk_htable_t *t)
{
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

void bk_ht_fini(bk_htable_t *t)
{
    free(t->buckets);
    bk_ht_init(t);
}

static int grow(bk_htable_t *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 16;
    bk_hnode_t **b = calloc(n, sizeof(*b));

    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        bk_hnode_t *e = t->buckets[i];
        while (e) {
            bk_hnode_t *next = e->next;
            size_t j = e->hash & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

static bk_hnode_t *find_hashed(const bk_htable_t *t, uint64_t h,
                               const void *key, size_t len)
{
    if (!t->nbuckets)
        return NULL;
    for (bk_hnode_t *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->keylen == len && !memcmp(e->key, key, len))
            return e;
    return NULL;
}

bk_hnode_t *bk_ht_find(const bk_htable_t *t, const void *key, size_t len)
{
    if (!t->count)
        return NULL;
    return find_hashed(t, bk_ht_hash(key, len), key, len);
}

int bk_ht_insert(bk_htable_t *t, bk_hnode_t *n)
{
    size_t j;

    n->hash = bk_ht_hash(n->key, n->keylen);
    if (find_hashed(t, n->hash, n->key, n->keylen))
        return -EEXIST;
    if (t->count + 1 > t->nbuckets / 4 * 3 || !t->nbuckets) {
        int r = grow(t);
        if (r < 0)
            return r;
    }
    j = n->hash & (t->nbuckets - 1);
    n->next = t->buckets[j];
    t->buckets[j] = n;
    t->count++;
    return 0;
}

void bk_ht_remove(bk_htable_t *t, bk_hnode_t *n)
{
    bk_hnode_t **pp;

    if (!t->nbuckets)
        return;
    for (pp = &t->buckets[n->hash & (t->nbuckets - 1)]; *pp;
         pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return;
        }
    }
}

bk_hnode_t *bk_ht_next(const bk_htable_t *t, const bk_hnode_t *prev)
{
    size_t i = 0;

    if (prev) {
        if (prev->next)
            return prev->next;
        i = (prev->hash & (t->nbuckets - 1)) + 1;
    }
    for (; i < t->nbuckets; i++)
        if (t->buckets[i])
            return t->buckets[i];
    return NULL;
}

bk_hnode_t *bk_ht_bucket(const bk_htable_t *t, size_t i)
{
    return i < t->nbuckets ? t->buckets[i] : NULL;
}
