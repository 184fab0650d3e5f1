/*
 * names.c - well-known names.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "names.h"

void bk_names_init(bk_names_t *n)
{
    bk_ht_init(&n->ht);
}

void bk_names_fini(bk_names_t *n)
{
    bk_hnode_t *e = bk_ht_next(&n->ht, NULL);

    while (e) {
        bk_hnode_t *next = bk_ht_next(&n->ht, e);
        bk_ht_remove(&n->ht, e);
        free(bk_container_of(e, bk_name_t, node));
        e = next;
    }
    bk_ht_fini(&n->ht);
}

static bk_name_t *find(const bk_names_t *n, const char *name, size_t len)
{
    bk_hnode_t *e = bk_ht_find(&n->ht, name, len);

    return e ? bk_container_of(e, bk_name_t, node) : NULL;
}

int bk_names_register(bk_names_t *n, const char *name, size_t len,
                      uint64_t owner, bk_name_list_t *owned, uint32_t max,
                      uint64_t now_ms)
{
    bk_name_t *e = find(n, name, len);
    int r;

    if (e)
        return e->owner == owner ? -EALREADY : -EEXIST;
    if (owned->count >= max)
        return -ENOSR;
    e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return -ENOMEM;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    e->len = len;
    e->owner = owner;
    e->registered_ms = now_ms;
    e->node.key = e->name;
    e->node.keylen = len;
    r = bk_ht_insert(&n->ht, &e->node);
    if (r < 0) {
        free(e);
        return r;
    }
    bk_list_push_head(&owned->head, &e->owned_link);
    owned->count++;
    return 0;
}

static void drop(bk_names_t *n, bk_name_t *e, bk_name_list_t *owned)
{
    bk_ht_remove(&n->ht, &e->node);
    bk_list_unlink(&e->owned_link);
    owned->count--;
    free(e);
}

int bk_names_release(bk_names_t *n, const char *name, size_t len,
                     uint64_t owner, bk_name_list_t *owned)
{
    bk_name_t *e = find(n, name, len);

    if (!e)
        return -ENOENT;
    if (e->owner != owner)
        return -EPERM;
    drop(n, e, owned);
    return 0;
}

void bk_names_release_all(bk_names_t *n, bk_name_list_t *owned)
{
    bk_name_t *e;

    while ((e = bk_list_first_entry(&owned->head, bk_name_t, owned_link)))
        drop(n, e, owned);
}

uint64_t bk_names_lookup(const bk_names_t *n, const char *name, size_t len)
{
    bk_name_t *e = find(n, name, len);

    return e ? e->owner : 0;
}

size_t bk_names_count(const bk_names_t *n)
{
    return n->ht.count;
}
