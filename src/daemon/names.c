/*
 * names.c - well-known names, their lines of waiting clients, hand-over
 * and replacement.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "names.h"
#include "proto.h"

void bk_names_init(bk_names_t *n)
{
    memset(n, 0, sizeof(*n));
    bk_ht_init(&n->ht);
    bk_tree_init(&n->index);
}

/* A list's count of names owned or waited for grew or shrank by one:
 * its user's count follows (names.h bk_name_list.shared). */
static void shared_inc(bk_name_list_t *l)
{
    if (l->shared)
        (*l->shared)++;
}

static void shared_dec(bk_name_list_t *l)
{
    if (l->shared && *l->shared)
        (*l->shared)--;
}

static void free_line(bk_name_t *e)
{
    bk_list_t *l;

    while ((l = bk_list_pop_head(&e->line))) {
        bk_name_wait_t *w = bk_container_of(l, bk_name_wait_t, link);
        bk_list_unlink(&w->client_link);
        w->list->nwaiting--;
        shared_dec(w->list);
        free(w);
    }
}

void bk_names_fini(bk_names_t *n)
{
    bk_hnode_t *e = bk_ht_next(&n->ht, NULL);

    while (e) {
        bk_hnode_t *next = bk_ht_next(&n->ht, e);
        bk_name_t *nm = bk_container_of(e, bk_name_t, node);
        bk_ht_remove(&n->ht, e);
        bk_tree_remove(&n->index, &nm->tnode);
        free_line(nm);
        free(nm);
        e = next;
    }
    bk_ht_fini(&n->ht);
}

static bk_name_t *find(const bk_names_t *n, const char *name, size_t len)
{
    bk_hnode_t *e = bk_ht_find(&n->ht, name, len);

    return e ? bk_container_of(e, bk_name_t, node) : NULL;
}

static void changed(bk_names_t *n, const bk_name_t *e, uint64_t old,
                    uint64_t new_owner)
{
    if (n->on_change)
        n->on_change(e->name, e->len, old, new_owner, n->arg);
}

/* e goes on `owned` as client `owner`'s name. */
static void give(bk_name_t *e, uint64_t owner, bk_name_list_t *owned,
                 uint32_t flags)
{
    e->owner = owner;
    e->flags = flags;
    e->list = owned;
    bk_list_push_head(&owned->head, &e->owned_link);
    owned->count++;
    shared_inc(owned);
}

static void take(bk_name_t *e)
{
    bk_list_unlink(&e->owned_link);
    e->list->count--;
    shared_dec(e->list);
    e->list = NULL;
}

static bk_name_wait_t *waiting(const bk_name_t *e, uint64_t client)
{
    bk_name_wait_t *w;

    bk_list_for_each(w, &e->line, bk_name_wait_t, link)
        if (w->client == client)
            return w;
    return NULL;
}

static int enqueue(bk_name_t *e, uint64_t client, bk_name_list_t *list,
                   uint32_t flags, bool front)
{
    bk_name_wait_t *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    w->name = e;
    w->client = client;
    w->flags = flags;
    w->list = list;
    if (front)
        bk_list_push_head(&e->line, &w->link);
    else
        bk_list_push_tail(&e->line, &w->link);
    bk_list_push_tail(&list->waiting, &w->client_link);
    list->nwaiting++;
    shared_inc(list);
    e->nline++;
    return 0;
}

static void leave_line(bk_name_wait_t *w)
{
    bk_list_unlink(&w->link);
    bk_list_unlink(&w->client_link);
    w->list->nwaiting--;
    shared_dec(w->list);
    w->name->nline--;
    free(w);
}

static int create(bk_names_t *n, const char *name, size_t len,
                  uint64_t owner, bk_name_list_t *owned, uint64_t now_ms,
                  uint32_t flags)
{
    bk_name_t *e = malloc(sizeof(*e) + len + 1);
    int r;

    if (!e)
        return -ENOMEM;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    e->len = len;
    e->registered_ms = now_ms;
    e->node.key = e->name;
    e->node.keylen = len;
    bk_list_init(&e->line);
    e->nline = 0;
    r = bk_ht_insert(&n->ht, &e->node);
    if (r < 0) {
        free(e);
        return r;
    }
    /* A fresh number each time: never reused, so a cursor past a released
     * name never lands on a newer one registered under the same text. */
    e->tnode.key = ++n->seq;
    bk_tree_insert(&n->index, &e->tnode);
    give(e, owner, owned, flags);
    changed(n, e, 0, owner);
    return 0;
}

/* REPLACE_EXISTING on a name whose owner allowed it. */
static int replace(bk_names_t *n, bk_name_t *e, uint64_t owner,
                   bk_name_list_t *owned, uint64_t now_ms, uint32_t flags)
{
    uint64_t old = e->owner;
    bk_name_list_t *oldlist = e->list;
    uint32_t oldflags = e->flags;

    if ((oldflags & BK_REG_QUEUE) &&
        enqueue(e, old, oldlist, oldflags, true) < 0)
        return -ENOMEM;
    take(e);
    give(e, owner, owned, flags);
    e->registered_ms = now_ms;
    changed(n, e, old, owner);
    return 0;
}

int bk_names_register(bk_names_t *n, const char *name, size_t len,
                      uint64_t owner, bk_name_list_t *owned, uint32_t max,
                      uint64_t now_ms, uint32_t flags, uint32_t *outcome)
{
    bk_name_t *e = find(n, name, len);
    int r;

    *outcome = BK_REG_OWNER;
    if (e && (e->owner == owner || waiting(e, owner)))
        return -EALREADY;
    if (e && !(flags & BK_REG_REPLACE_EXISTING && e->flags &
               BK_REG_ALLOW_REPLACEMENT) && !(flags & BK_REG_QUEUE))
        return -EEXIST;
    if ((uint64_t)owned->count + owned->nwaiting >= max)
        return -ENOSR;
    if (!e)
        return create(n, name, len, owner, owned, now_ms, flags);
    if ((flags & BK_REG_REPLACE_EXISTING) &&
        (e->flags & BK_REG_ALLOW_REPLACEMENT))
        return replace(n, e, owner, owned, now_ms, flags);
    r = enqueue(e, owner, owned, flags, false);
    if (r == 0)
        *outcome = BK_REG_QUEUED;
    return r;
}

/* The owner let go of e: the first in line gets it, or it goes. */
static void hand_over(bk_names_t *n, bk_name_t *e, uint64_t now_ms)
{
    uint64_t old = e->owner;
    bk_name_wait_t *w;

    take(e);
    w = bk_list_first_entry(&e->line, bk_name_wait_t, link);
    if (!w) {
        bk_ht_remove(&n->ht, &e->node);
        bk_tree_remove(&n->index, &e->tnode);
        changed(n, e, old, 0);
        free(e);
        return;
    }
    {
        uint64_t client = w->client;
        bk_name_list_t *list = w->list;
        uint32_t flags = w->flags;

        leave_line(w);
        give(e, client, list, flags);
        e->registered_ms = now_ms;
        changed(n, e, old, client);
    }
}

int bk_names_release(bk_names_t *n, const char *name, size_t len,
                     uint64_t owner, bk_name_list_t *owned, uint64_t now_ms)
{
    bk_name_t *e = find(n, name, len);
    bk_name_wait_t *w;

    (void)owned;
    if (!e)
        return -ENOENT;
    if (e->owner == owner) {
        hand_over(n, e, now_ms);
        return 0;
    }
    w = waiting(e, owner);
    if (!w)
        return -EPERM;
    leave_line(w);
    return 0;
}

void bk_names_release_all(bk_names_t *n, bk_name_list_t *owned,
                          uint64_t now_ms)
{
    bk_name_t *e;
    bk_list_t *l;

    while ((l = bk_list_first(&owned->waiting)))
        leave_line(bk_container_of(l, bk_name_wait_t, client_link));
    while ((e = bk_list_first_entry(&owned->head, bk_name_t, owned_link)))
        hand_over(n, e, now_ms);
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
