/*
 * user.h - the users of the broker: one record per uid with a connection
 * or with something still charged to it, and the per-uid and global
 * budgets (prefix bk_user_).
 *
 * Owns the table uid -> bk_user_t and the records.  A port takes a
 * reference on its user's record at accept (SO_PEERCRED is known then),
 * before its HELLO, and drops it when it is closed, so a user's count of
 * connections includes those still in the handshake: a user cannot take
 * every slot with connections that never say HELLO.  Counting is O(1)
 * per connection.
 *
 * Charges (dbus-broker style): everything a user's connections hold is
 * counted on its record: fds in flight (queued towards receivers because
 * of its sends, and in its ports' stashes), the memory of the frames
 * queued towards its connections (through their queues' mem_user) and
 * because of its sends (through the frames' charge), streams it opened,
 * names, subscriptions, shared-memory segments, bytes and held
 * references.  A port holds its
 * record (bk_user_hold) from admission until it is closed, so its lists
 * may count into the record while they are torn down; a queued frame
 * carrying fds holds the record through its charge (outq.h bk_ocharge)
 * until the frame is sent or dropped.  The record goes once nothing
 * refers to it.  All arithmetic is overflow-safe: a check is
 * `have > max || want > max - have`, correct after a reload lowered max.
 *
 * Quota hits are counted per record and logged once per episode: the
 * first hit of a kind logs (with uid, client id, pid and comm), later
 * ones are silent until a check of that kind passes for the user again
 * (bk_user_hit, bk_user_episode_over).
 */
#ifndef BK_USER_H
#define BK_USER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "htable.h"
#include "outq.h"
#include "tree.h"

struct bk_users;

/* What a user can hit; one bit of bk_user.episodes each. */
enum bk_user_quota {
    BK_QUOTA_FDS,               /* max-fds-per-uid */
    BK_QUOTA_STREAMS,           /* max-streams-per-uid */
    BK_QUOTA_PEER_STREAMS,      /* max-streams-per-peer (a client's) */
    BK_QUOTA_UID_PEER_STREAMS,  /* max-streams-per-uid-peer */
    BK_QUOTA_NAMES,             /* max-names-per-uid */
    BK_QUOTA_SUBS,              /* max-subscriptions-per-uid */
    BK_QUOTA_SEGMENTS,          /* max-segments-per-uid */
    BK_QUOTA_HELD,              /* max-held-per-uid */
    BK_QUOTA_RECV_FDS,          /* max-fds-per-client (a receiver's) */
    BK_QUOTA_RECV_HELD,         /* max-held-per-client (a receiver's) */
    BK_QUOTA_GLOBAL,            /* a global budget (fds, segments) */
    BK_QUOTA_QUEUED,            /* max-queued-per-uid, towards its clients */
    BK_QUOTA_QUEUED_BY,         /* max-queued-per-uid, caused by its sends */
    BK_QUOTA_QUEUED_ALL,        /* max-queued, the whole broker */
    BK_QUOTA_KINDS_
};

typedef struct bk_user {
    bk_hnode_t node;            /* in bk_users.table, keyed by key */
    bk_tnode_t tnode;           /* in bk_users.index, keyed by uid + 1 */
    uint8_t key[4];             /* the uid, big-endian */
    uid_t uid;
    struct bk_users *users;     /* the table it is in */
    uint32_t nports;            /* connections, handshaking ones too */
    uint32_t holds;             /* ports between admission and close */
    bk_ocharge_t charge;        /* what queued frames' fds and memory are
                                 * put back to */
    uint64_t fds;               /* fds in flight caused by its sends */
    uint64_t queued;            /* memory of the frames queued towards its
                                 * connections (outq.h mem) */
    uint64_t queued_by;         /* ... queued because of its sends */
    uint32_t streams;           /* streams its connections opened (the
                                 * opener's ends, tombstones too) */
    uint32_t names;             /* names owned or waited for */
    uint32_t subs;              /* subscriptions */
    uint32_t segments;          /* shared-memory segments registered */
    uint64_t shm_bytes;         /* their bytes */
    uint64_t held;              /* shared-memory references held */
    uint64_t hits;              /* quota hits, every kind */
    uint32_t episodes;          /* 1 << bk_user_quota: logged, not over */
} bk_user_t;

typedef struct bk_users {
    bk_htable_t table;
    bk_tree_t index;            /* the same records in uid order
                                 * (LIST_USERS cursor) */
    bk_ocharge_t broker;        /* the broker's own frames with fds */
    uint64_t fds;               /* fds in flight, every user and the broker */
    uint64_t queued;            /* memory of every queued frame */
    uint64_t hits;              /* quota hits of every user */
    uint64_t nofile;            /* RLIMIT_NOFILE when last read */
} bk_users_t;

void bk_users_init(bk_users_t *u);
/* Free every record (the ports and frames that referred to them are
 * gone). */
void bk_users_fini(bk_users_t *u);
/* Read RLIMIT_NOFILE again (start-up, reload). */
void bk_users_read_nofile(bk_users_t *u);

/* The record of uid with one more connection counted (created if it is
 * the user's first), or NULL out of memory. */
bk_user_t *bk_user_ref(bk_users_t *u, uid_t uid);
/* One connection of the user's fewer; the record goes once nothing
 * refers to it. */
void bk_user_unref(bk_users_t *u, bk_user_t *user);
/* A port's hold on its record, from admission until it is closed. */
void bk_user_hold(bk_user_t *user);
void bk_user_release(bk_user_t *user);

/* Whether uid is exempt from the per-uid quotas: root and brokerd's own
 * user, as for max-clients-per-uid. */
bool bk_user_exempt(uid_t uid);

/* Whether adding `want` to `have` stays within `max` (0: no limit),
 * correct whatever have is (a reload may have lowered max below it). */
static inline bool bk_user_fits(uint64_t have, uint64_t want, uint64_t max)
{
    return !max || (have <= max && want <= max - have);
}

/* Fds the broker holds for itself: listening socket, lock, spare fd,
 * log, event loop. */
#define BK_FDS_OWN 16u

/* Whether n more fds fit below RLIMIT_NOFILE with `reserve` kept free,
 * besides the fds in flight and `others` (connections, segments) the
 * broker holds. */
static inline bool bk_users_fd_room(const bk_users_t *u, uint64_t others,
                                    uint64_t reserve, uint64_t n)
{
    uint64_t held = others + u->fds + BK_FDS_OWN + reserve;

    return held <= u->nofile && n <= u->nofile - held;
}

/* Charge a queued frame's n fds in flight and `mem` bytes to c (a user's
 * charge, or the broker's, which counts fds only): the user's and the
 * global counts grow; bk_ocharge put gives them back. */
void bk_user_charge(bk_users_t *u, bk_ocharge_t *c, unsigned n,
                    uint64_t mem);

/* A quota of `kind` was hit by a client of `user`: counted, and true if
 * this starts an episode (the caller logs it then, port.c
 * bk_port_quota).  bk_user_episode_over ends the episode: a later check
 * of that kind passed. */
bool bk_user_hit(bk_user_t *user, enum bk_user_quota kind);
/* Whether an episode of `kind` is on (logged, not over). */
static inline bool bk_user_in_episode(const bk_user_t *user,
                                      enum bk_user_quota kind)
{
    return user->episodes & (1u << kind);
}
static inline void bk_user_episode_over(bk_user_t *user,
                                        enum bk_user_quota kind)
{
    user->episodes &= ~(1u << kind);
}

/* Users with a record now. */
static inline size_t bk_users_count(const bk_users_t *u)
{
    return u->table.count;
}

#endif
