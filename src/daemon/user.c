/*
 * user.c - one record per uid with a connection, counted from accept.
 */
#include "config.h"
#include <stdlib.h>
#include "frame.h"
#include "user.h"

void bk_users_init(bk_users_t *u)
{
    bk_ht_init(&u->table);
}

void bk_users_fini(bk_users_t *u)
{
    bk_hnode_t *n = bk_ht_next(&u->table, NULL);

    while (n) {
        bk_hnode_t *next = bk_ht_next(&u->table, n);

        bk_ht_remove(&u->table, n);
        free(bk_container_of(n, bk_user_t, node));
        n = next;
    }
    bk_ht_fini(&u->table);
}

bk_user_t *bk_user_ref(bk_users_t *u, uid_t uid)
{
    uint8_t key[4];
    bk_hnode_t *n;
    bk_user_t *user;

    bk_put32(key, (uint32_t)uid);
    n = bk_ht_find(&u->table, key, sizeof(key));
    if (n) {
        user = bk_container_of(n, bk_user_t, node);
        user->nports++;
        return user;
    }
    user = calloc(1, sizeof(*user));
    if (!user)
        return NULL;
    bk_put32(user->key, (uint32_t)uid);
    user->uid = uid;
    user->nports = 1;
    user->node.key = user->key;
    user->node.keylen = sizeof(user->key);
    if (bk_ht_insert(&u->table, &user->node) < 0) {
        free(user);
        return NULL;
    }
    return user;
}

void bk_user_unref(bk_users_t *u, bk_user_t *user)
{
    if (!user || --user->nports)
        return;
    bk_ht_remove(&u->table, &user->node);
    free(user);
}
