/*
 * streams.h - the broker's stream table (prefix bk_st_).
 *
 * A stream joins two ends; each end is (client id, stream id local to that
 * client) and is linked in the table under its own 12-byte key, so a frame
 * from either side finds the stream by the id its sender uses.  Every end is
 * also on its owner's list, so a departing client finds all its streams.
 *
 * An end may outlive its peer as a tombstone (`discard`): the rest of the
 * message that end was sending is swallowed, then the end goes away.
 *
 * Owns every stream (calloc'd by bk_st_open, freed once neither end is
 * linked) and the table.  The per-owner lists (bk_st_list) are embedded
 * in their owners and only hold ends.
 */
#ifndef BK_STREAMS_H
#define BK_STREAMS_H

#include <stdbool.h>
#include <stdint.h>
#include "htable.h"
#include "list.h"
#include "tree.h"

typedef struct bk_stream bk_stream_t;
typedef struct bk_st_end bk_st_end_t;

/* Per-owner list of ends (embedded in the owner, e.g. a port; the ends
 * are the table's). */
typedef struct bk_st_list {
    bk_list_t head;             /* bk_st_end.link, newest first */
    uint32_t count;
    uint32_t *shared;           /* counts the openers' ends (tombstones
                                 * too) along with count: the owner's
                                 * user's streams (user.h), or NULL */
} bk_st_list_t;

/* The streams one opener holds open towards one client (the acceptor),
 * for max-streams-per-peer (the opener a client) and
 * max-streams-per-uid-peer (the opener a user): counted while the
 * acceptor's end is linked. */
enum bk_st_pair_kind { BK_ST_PAIR_CLIENT, BK_ST_PAIR_UID, BK_ST_PAIR_KINDS_ };

typedef struct bk_st_pair {
    bk_hnode_t node;
    uint8_t key[17];            /* kind, opener (client id or uid, LE
                                 * u64), acceptor id (LE u64) */
    uint32_t count;
} bk_st_pair_t;

struct bk_st_end {
    bk_hnode_t node;
    uint8_t key[12];            /* client id (LE u64) + local id (LE u32) */
    uint64_t client;
    uint32_t sid;
    void *owner;                /* the owning port */
    bk_st_list_t *list;
    bk_list_t link;             /* on list */
    bk_stream_t *stream;
    bool linked;
    bool in_msg;                /* this end is in the middle of a message */
    bool discard;               /* swallow the rest of the current message */
    uint64_t msg_bytes;         /* bytes of the current message so far */
    uint64_t bytes;             /* payload bytes sent by this end */
};

struct bk_stream {
    bk_st_end_t end[2];         /* [0] opener, [1] acceptor */
    bk_tnode_t tnode;           /* in bk_st_table.index, keyed by its
                                 * opening number (LIST_STREAMS cursor) */
    uint64_t opened_ms;
    void *pub;                  /* a publication's receivers (pubsub.h):
                                 * the router's, freed before the end */
    bk_st_pair_t *pair[BK_ST_PAIR_KINDS_];  /* counted in, or NULL
                                             * (bk_st_pair) */
};

typedef struct bk_st_table {
    bk_htable_t ht;
    uint64_t streams;           /* live stream objects */
    bk_tree_t index;            /* the same by opening number */
    uint64_t seq;               /* last opening number given */
    bk_htable_t pairs;          /* bk_st_pair by key */
} bk_st_table_t;

static inline void bk_st_list_init(bk_st_list_t *l)
{
    bk_list_init(&l->head);
    l->count = 0;
    l->shared = NULL;
}

/* The newest end on l, or NULL when l is empty. */
static inline bk_st_end_t *bk_st_list_first(bk_st_list_t *l)
{
    return bk_list_first_entry(&l->head, bk_st_end_t, link);
}

void bk_st_init(bk_st_table_t *t);
/* Frees every stream still present. */
void bk_st_fini(bk_st_table_t *t);

/* Create a stream between (a, a_sid) and (b, b_sid); b may be NULL owner
 * for a tombstone (only end[0] is linked then).  Returns 0, -EEXIST if an
 * end's key is taken, -ENOMEM. */
int bk_st_open(bk_st_table_t *t, void *a_owner, uint64_t a, uint32_t a_sid,
               bk_st_list_t *a_list, void *b_owner, uint64_t b,
               uint32_t b_sid, bk_st_list_t *b_list, bk_stream_t **out);

/* Count stream s (both ends linked) for its opener (client end[0], and
 * its user `uid`) towards its acceptor until the acceptor's end goes.
 * Returns 0 or -ENOMEM (nothing counted). */
int bk_st_pair(bk_st_table_t *t, bk_stream_t *s, uint32_t uid);
/* The streams opener `who` (a client id or a uid, by kind) holds open
 * towards client `acceptor` now. */
uint32_t bk_st_pair_count(const bk_st_table_t *t, enum bk_st_pair_kind kind,
                          uint64_t who, uint64_t acceptor);

bk_st_end_t *bk_st_find(const bk_st_table_t *t, uint64_t client,
                        uint32_t sid);
/* The other end, or NULL if it is gone. */
bk_st_end_t *bk_st_peer(const bk_st_end_t *e);
/* Unlink one end; frees the stream once neither end is linked. */
void bk_st_remove_end(bk_st_table_t *t, bk_st_end_t *e);
/* Close the stream as seen from `from`: `from` goes away; the peer goes
 * away too unless it is mid-message, in which case it becomes a tombstone
 * that swallows the rest of that message. */
void bk_st_close(bk_st_table_t *t, bk_st_end_t *from);

#endif
