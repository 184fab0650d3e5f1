/*
 * htable.h - intrusive hash table keyed by byte strings, hashed with XXH3
 * (prefix bk_ht_).
 *
 * Entries embed a bk_hnode and point it at their own key bytes; the table
 * never allocates or frees entries, only its bucket array.  Lookups compare
 * the 64-bit hash first, then the key bytes.
 */
#ifndef BK_HTABLE_H
#define BK_HTABLE_H

#include <stddef.h>
#include <stdint.h>
#include "list.h"       /* bk_container_of */

typedef struct bk_hnode {
    struct bk_hnode *next;
    uint64_t hash;
    const void *key;        /* owned by the entry, stable while linked */
    size_t keylen;
} bk_hnode_t;

typedef struct bk_htable {
    bk_hnode_t **buckets;
    size_t nbuckets;        /* power of two, or 0 before first insert */
    size_t count;
} bk_htable_t;

uint64_t bk_ht_hash(const void *key, size_t len);

void bk_ht_init(bk_htable_t *t);
/* Frees the bucket array; entries still linked are the caller's. */
void bk_ht_fini(bk_htable_t *t);

/* Link n (its key/keylen set by the caller).  Returns 0, -EEXIST if an
 * equal key is present, or -ENOMEM. */
int bk_ht_insert(bk_htable_t *t, bk_hnode_t *n);
bk_hnode_t *bk_ht_find(const bk_htable_t *t, const void *key, size_t len);
void bk_ht_remove(bk_htable_t *t, bk_hnode_t *n);

/* Iterate: pass NULL to get the first node; returns NULL at the end.  The
 * current node may be removed before asking for the next one only through
 * bk_ht_next_safe-style code: take next first, then remove. */
bk_hnode_t *bk_ht_next(const bk_htable_t *t, const bk_hnode_t *prev);
/* The first node of bucket i (i < t->nbuckets), or NULL; follow ->next
 * for the rest of the bucket.  For walking a large table a batch of
 * buckets at a time. */
bk_hnode_t *bk_ht_bucket(const bk_htable_t *t, size_t i);

#endif
