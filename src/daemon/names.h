/*
 * names.h - well-known names: one owner each (prefix bk_names_).
 *
 * Owns every bk_name (malloc'd by bk_names_register, freed when released
 * or by bk_names_fini) and the table of them.  Each name is also on its
 * owner's bk_name_list, embedded in the owner (a port), so a departing
 * client releases all its names; the list holds, it does not own.
 */
#ifndef BK_NAMES_H
#define BK_NAMES_H

#include <stddef.h>
#include <stdint.h>
#include "htable.h"
#include "list.h"

typedef struct bk_name {
    bk_hnode_t node;
    uint64_t owner;             /* client id */
    bk_list_t owned_link;       /* on the owner's bk_name_list */
    uint64_t registered_ms;
    size_t len;
    char name[];                /* NUL-terminated */
} bk_name_t;

/* A client's owned names (the entries are the bk_names table's). */
typedef struct bk_name_list {
    bk_list_t head;             /* bk_name.owned_link, newest first */
    uint32_t count;
} bk_name_list_t;

static inline void bk_name_list_init(bk_name_list_t *l)
{
    bk_list_init(&l->head);
    l->count = 0;
}

typedef struct bk_names {
    bk_htable_t ht;
} bk_names_t;

void bk_names_init(bk_names_t *n);
void bk_names_fini(bk_names_t *n);

/* Returns 0, -EEXIST (owned by another client), -EALREADY (owned by this
 * client), -ENOSR (the client owns `max` names already), -ENOMEM. */
int bk_names_register(bk_names_t *n, const char *name, size_t len,
                      uint64_t owner, bk_name_list_t *owned, uint32_t max,
                      uint64_t now_ms);
/* Returns 0, -ENOENT (nobody owns it), -EPERM (another client owns it). */
int bk_names_release(bk_names_t *n, const char *name, size_t len,
                     uint64_t owner, bk_name_list_t *owned);
/* Release every name in `owned`. */
void bk_names_release_all(bk_names_t *n, bk_name_list_t *owned);
/* The owner's client id, or 0 if the name is not owned. */
uint64_t bk_names_lookup(const bk_names_t *n, const char *name, size_t len);
size_t bk_names_count(const bk_names_t *n);

#endif
