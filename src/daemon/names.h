/*
 * names.h - well-known names: one owner each, and a line of clients
 * waiting to own it (prefix bk_names_).
 *
 * Owns every bk_name (malloc'd by bk_names_register, freed when released
 * with nobody in line, or by bk_names_fini), every bk_name_wait (a place
 * in a name's line), and the table of names.  Each name is also on its
 * owner's bk_name_list and each place in line on its client's, both lists
 * embedded in the client (a port), so a departing client releases its
 * names and leaves every line; the lists hold, they do not own.
 *
 * Owner changes: when the owner leaves or releases a name, the first
 * client in line becomes its owner (hand-over); a client registering with
 * BK_REG_REPLACE_EXISTING takes a name whose owner allowed replacement
 * (the old owner goes to the head of the line if it had registered with
 * BK_REG_QUEUE, else it loses the name).  Every change of owner is
 * reported through the table's on_change hook (announcements).
 */
#ifndef BK_NAMES_H
#define BK_NAMES_H

#include <stddef.h>
#include <stdint.h>
#include "htable.h"
#include "list.h"
#include "tree.h"

struct bk_name_list;

typedef struct bk_name {
    bk_hnode_t node;
    bk_tnode_t tnode;           /* in bk_names.index: keyed by creation
                                 * number, which hand-overs keep */
    uint64_t owner;             /* client id */
    uint32_t flags;             /* the owner's BK_REG_* flags */
    struct bk_name_list *list;  /* the owner's list */
    bk_list_t owned_link;       /* on the owner's bk_name_list */
    bk_list_t line;             /* bk_name_wait.link, first in line first */
    uint32_t nline;
    uint64_t registered_ms;
    size_t len;
    char name[];                /* NUL-terminated */
} bk_name_t;

/* A client's place in the line of a name. */
typedef struct bk_name_wait {
    bk_list_t link;             /* on bk_name.line */
    bk_list_t client_link;      /* on the client's bk_name_list.waiting */
    bk_name_t *name;
    uint64_t client;
    uint32_t flags;             /* its BK_REG_* flags for when it owns it */
    struct bk_name_list *list;
} bk_name_wait_t;

/* A client's owned names and places in line (the entries are the table's). */
typedef struct bk_name_list {
    bk_list_t head;             /* bk_name.owned_link, newest first */
    uint32_t count;
    bk_list_t waiting;          /* bk_name_wait.client_link */
    uint32_t nwaiting;
    uint32_t *shared;           /* counts count + nwaiting along (the
                                 * owner's user's names, user.h), or NULL */
} bk_name_list_t;

static inline void bk_name_list_init(bk_name_list_t *l)
{
    bk_list_init(&l->head);
    l->count = 0;
    bk_list_init(&l->waiting);
    l->nwaiting = 0;
    l->shared = NULL;
}

/* Called after every change of a name's owner (0: nobody). */
typedef void bk_names_change_fn(const char *name, size_t len, uint64_t old,
                                uint64_t new_owner, void *arg);

typedef struct bk_names {
    bk_htable_t ht;
    bk_tree_t index;            /* the names by creation number, for
                                 * LIST_NAMES cursors */
    uint64_t seq;               /* last creation number given */
    bk_names_change_fn *on_change;  /* may be NULL */
    void *arg;
} bk_names_t;

void bk_names_init(bk_names_t *n);
void bk_names_fini(bk_names_t *n);

/* Register with BK_REG_* flags (0 for plain REGISTER).  Returns 0 with
 * *outcome BK_REG_OWNER or BK_REG_QUEUED, -EEXIST (owned by another
 * client, no replacement or line asked for or allowed), -EALREADY (owned
 * by this client, or it is in line already), -ENOSR (the client owns or
 * waits for `max` names already), -ENOMEM. */
int bk_names_register(bk_names_t *n, const char *name, size_t len,
                      uint64_t owner, bk_name_list_t *owned, uint32_t max,
                      uint64_t now_ms, uint32_t flags, uint32_t *outcome);
/* Release a name this client owns (the next in line gets it, registered
 * at now_ms) or leave its line.  Returns 0, -ENOENT (nobody owns it),
 * -EPERM (another client owns it and this one is not in line). */
int bk_names_release(bk_names_t *n, const char *name, size_t len,
                     uint64_t owner, bk_name_list_t *owned, uint64_t now_ms);
/* Leave every line, release every name in `owned` (the next in line of
 * each gets it, registered at now_ms). */
void bk_names_release_all(bk_names_t *n, bk_name_list_t *owned,
                          uint64_t now_ms);
/* The owner's client id, or 0 if the name is not owned. */
uint64_t bk_names_lookup(const bk_names_t *n, const char *name, size_t len);
size_t bk_names_count(const bk_names_t *n);

#endif
