/*
 * names.h - well-known names: one owner each (prefix bk_names_).
 */
#ifndef BK_NAMES_H
#define BK_NAMES_H

#include <stddef.h>
#include <stdint.h>
#include "htable.h"

typedef struct bk_name {
    bk_hnode_t node;
    uint64_t owner;             /* client id */
    struct bk_name *next_owned; /* owner's list */
    struct bk_name **pprev_owned;
    uint64_t registered_ms;
    size_t len;
    char name[];                /* NUL-terminated */
} bk_name_t;

/* A client's owned names. */
typedef struct bk_name_list {
    bk_name_t *head;
    uint32_t count;
} bk_name_list_t;

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
