/*
 * subs.h - the subscription table: every SUBSCRIBE of every client, a
 * token trie to match topics against them, a cache of topic -> matches,
 * and queue groups (prefix bk_subs_).
 *
 * Owns: bk_sub_t objects (created by bk_subs_add, freed by
 * bk_subs_remove), the trie nodes, the groups and the cache.  It does not
 * own or know ports: a subscription names its client by id and carries an
 * opaque `owner` pointer for the router.
 *
 * Matching never scans every subscription: the trie is walked along the
 * topic's tokens (literal child, `*` child, `>` child at each level), and
 * the result is kept in a cache keyed by the topic, which every add or
 * remove invalidates.  A match set lists single subscriptions and groups;
 * the router picks one member of each group (bk_subs_group_pick).
 */
#ifndef BK_SUBS_H
#define BK_SUBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "htable.h"
#include "list.h"
#include "tree.h"

#define BK_SUBS_CACHE_MAX 4096u     /* topics cached before a flush */

struct bk_subs_node;
struct bk_subs_group;

typedef struct bk_sub {
    uint32_t id;                /* per client, never 0 */
    uint64_t client;            /* owner's client id */
    void *owner;                /* the router's pointer (its port) */
    uint8_t policy;             /* enum bk_sub_policy */
    uint8_t flags;              /* BK_SUB_F_*, set by the caller after
                                   bk_subs_add (GATEWAY only through
                                   bk_subs_set_gateway) */
    struct bk_subs_group *group; /* NULL when not in a group */
    bk_list_t client_link;      /* the owner's list of subscriptions */
    bk_list_t all_link;         /* the table's list, oldest first */
    uint64_t seq;               /* creation order */
    bk_tnode_t tnode;           /* the table's index, keyed by seq */
    bk_list_t node_link;        /* its trie node's (or group's) list */
    struct bk_subs_node *node;
    uint64_t delivered, dropped; /* messages */
    uint64_t gap_pending;       /* drops not yet reported by GAP */
    uint64_t queued;            /* messages of it queued now */
    size_t plen;
    char *pattern;              /* NUL-terminated copy */
} bk_sub_t;

typedef struct bk_subs_group {
    struct bk_subs_node *node;
    bk_list_t node_link;
    bk_list_t members;          /* bk_sub_t node_link */
    uint32_t nmembers;
    uint32_t ngateways;         /* members with BK_SUB_F_GATEWAY */
    bk_sub_t *last;             /* member chosen last (round robin) */
    bk_sub_t *last_gw;          /* gateway chosen last */
    size_t namelen;
    char *name;
} bk_subs_group_t;

/* The matches of one topic: pointers owned by the table, valid until the
 * next call of bk_subs_match (which may flush the cache when it is full),
 * bk_subs_add, bk_subs_remove or bk_subs_free: a caller that does any of
 * those while it still walks a match set (a publication made during a
 * fan-out, a subscriber removed by its policy) copies the set first. */
typedef struct bk_subs_match {
    bk_sub_t **subs;            /* single subscriptions */
    size_t nsubs;
    bk_subs_group_t **groups;
    size_t ngroups;
} bk_subs_match_t;

typedef struct bk_subs bk_subs_t;

/* Returns NULL on allocation failure. */
bk_subs_t *bk_subs_new(void);
/* Frees everything, including every bk_sub_t still in the table. */
void bk_subs_free(bk_subs_t *t);

/* Add a subscription of `client` (pattern must be valid; group NULL or
 * glen 0 for none).  On success *out is the new subscription, linked into
 * the trie (and group); the caller links client_link.  Returns 0 or
 * -ENOMEM. */
int bk_subs_add(bk_subs_t *t, uint64_t client, void *owner, uint32_t id,
                const char *pattern, size_t plen, const char *group,
                size_t glen, uint8_t policy, bk_sub_t **out);
/* Make group member s a gateway (BK_SUB_F_GATEWAY): it is then picked
 * only by bk_subs_group_pick(..., true, ...). */
void bk_subs_set_gateway(bk_sub_t *s);
/* Members of g that are not gateways. */
uint32_t bk_subs_group_ordinary(const bk_subs_group_t *g);
/* Unlink and free (also unlinks client_link; frees an emptied group and
 * prunes empty trie nodes). */
void bk_subs_remove(bk_subs_t *t, bk_sub_t *s);

/* The matches of a valid topic.  Returns 0, or -ENOMEM (then *m is
 * empty and nothing is delivered).  Order of m->subs: by subscription
 * creation (oldest first), so fan-out order is stable. */
int bk_subs_match(bk_subs_t *t, const char *topic, size_t tlen,
                  bk_subs_match_t *m);

/* Choose the member of a group to get the next message, among its
 * gateways or among its other members (`gateways`): the one whose
 * load(member) is lowest, among equals the one after g->last in the
 * member order; records it as g->last (g->last_gw).  load is the router's measure
 * (queued bytes of the member's client).  NULL if there is none. */
bk_sub_t *bk_subs_group_pick(bk_subs_group_t *g, bool gateways,
                             uint64_t (*load)(const bk_sub_t *s, void *ctx),
                             void *ctx);

/* Counters for STATUS. */
size_t bk_subs_count(const bk_subs_t *t);
size_t bk_subs_groups(const bk_subs_t *t);

/* For listings: the oldest subscription created after creation number
 * `cursor` (its seq; 0 for the oldest of all), or NULL.  O(log n),
 * whether or not the subscription `cursor` names is still there. */
bk_sub_t *bk_subs_after(const bk_subs_t *t, uint64_t cursor);

#endif
