/*
 * user.h - the users of the broker: one record per uid with a connection
 * (prefix bk_user_).
 *
 * Owns the table uid -> bk_user_t and the records.  A port takes a
 * reference on its user's record at accept (SO_PEERCRED is known then),
 * before its HELLO, and drops it when it is closed, so a user's count of
 * connections includes those still in the handshake: a user cannot take
 * every slot with connections that never say HELLO.  The record goes
 * with its last connection.  Counting is O(1) per connection.
 */
#ifndef BK_USER_H
#define BK_USER_H

#include <stdint.h>
#include <sys/types.h>
#include "htable.h"

typedef struct bk_user {
    bk_hnode_t node;            /* in bk_users.table, keyed by key */
    uint8_t key[4];             /* the uid, big-endian */
    uid_t uid;
    uint32_t nports;            /* connections, handshaking ones too */
} bk_user_t;

typedef struct bk_users {
    bk_htable_t table;
} bk_users_t;

void bk_users_init(bk_users_t *u);
/* Free every record (the ports that referred to them are gone). */
void bk_users_fini(bk_users_t *u);

/* The record of uid with one more connection counted (created if it is
 * the user's first), or NULL out of memory. */
bk_user_t *bk_user_ref(bk_users_t *u, uid_t uid);
/* One connection of the user's fewer; its last frees the record. */
void bk_user_unref(bk_users_t *u, bk_user_t *user);

/* Users with a connection now. */
static inline size_t bk_users_count(const bk_users_t *u)
{
    return u->table.count;
}

#endif
