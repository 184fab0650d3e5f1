/*
 * user.c - one record per uid, counted from accept, and what is charged
 * to it.
 */
#include "config.h"
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include "frame.h"
#include "user.h"
#include "size.h"

static void broker_put(bk_ocharge_t *c, unsigned n, uint64_t mem)
{
    bk_users_t *u = bk_container_of(c, bk_users_t, broker);

    (void)mem;
    u->fds = bk_size_sub(u->fds, n);
}

void bk_users_init(bk_users_t *u)
{
    bk_ht_init(&u->table);
    bk_tree_init(&u->index);
    u->broker.put = broker_put;
    u->fds = 0;
    u->queued = 0;
    u->hits = 0;
    bk_users_read_nofile(u);
}

void bk_users_read_nofile(bk_users_t *u)
{
    struct rlimit rl;

    u->nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
                rl.rlim_cur != RLIM_INFINITY ? (uint64_t)rl.rlim_cur
                                             : UINT64_C(1) << 20;
}

void bk_users_fini(bk_users_t *u)
{
    bk_hnode_t *n = bk_ht_next(&u->table, NULL);

    while (n) {
        bk_hnode_t *next = bk_ht_next(&u->table, n);

        bk_ht_remove(&u->table, n);
        bk_tree_remove(&u->index, &bk_container_of(n, bk_user_t, node)->tnode);
        free(bk_container_of(n, bk_user_t, node));
        n = next;
    }
    bk_ht_fini(&u->table);
}

/* The record goes once no connection, port or queued frame refers to it. */
static void maybe_free(bk_user_t *user)
{
    if (user->nports || user->holds || user->fds || user->queued ||
        user->queued_by)
        return;
    bk_ht_remove(&user->users->table, &user->node);
    bk_tree_remove(&user->users->index, &user->tnode);
    free(user);
}

static void user_put(bk_ocharge_t *c, unsigned n, uint64_t mem)
{
    bk_user_t *user = bk_container_of(c, bk_user_t, charge);
    bk_users_t *u = user->users;

    user->fds = bk_size_sub(user->fds, n);
    user->queued_by = bk_size_sub(user->queued_by, mem);
    u->fds = bk_size_sub(u->fds, n);
    maybe_free(user);
}

void bk_user_charge(bk_users_t *u, bk_ocharge_t *c, unsigned n, uint64_t mem)
{
    u->fds += n;
    if (c != &u->broker) {
        bk_user_t *user = bk_container_of(c, bk_user_t, charge);

        user->fds += n;
        user->queued_by += mem;
    }
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
    user->users = u;
    user->nports = 1;
    user->charge.put = user_put;
    user->node.key = user->key;
    user->node.keylen = sizeof(user->key);
    if (bk_ht_insert(&u->table, &user->node) < 0) {
        free(user);
        return NULL;
    }
    /* One record per uid (the hash table just said the key is free); + 1
     * so that root's key is not 0, the cursor that starts a listing. */
    user->tnode.key = (uint64_t)uid + 1;
    bk_tree_insert(&u->index, &user->tnode);
    return user;
}

void bk_user_unref(bk_users_t *u, bk_user_t *user)
{
    (void)u;
    if (!user || !user->nports)
        return;
    user->nports--;
    maybe_free(user);
}

void bk_user_hold(bk_user_t *user)
{
    user->holds++;
}

void bk_user_release(bk_user_t *user)
{
    if (!user || !user->holds)
        return;
    user->holds--;
    maybe_free(user);
}

bool bk_user_exempt(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

bool bk_user_hit(bk_user_t *user, enum bk_user_quota kind)
{
    uint32_t bit = 1u << kind;

    user->hits++;
    user->users->hits++;
    if (user->episodes & bit)
        return false;
    user->episodes |= bit;
    return true;
}
