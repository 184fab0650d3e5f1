/*
 * subs.c - libbroker layer 3: the set of live subscription ids.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include "subs.h"

struct bk_sub {
    bk_hnode_t node;
    uint8_t key[4];
};

struct bk_subs {
    bk_htable_t table;          /* struct bk_sub by id */
};

int bk_subs_init(broker_t *b)
{
    struct bk_subs *ss = calloc(1, sizeof(*ss));

    if (!ss)
        return -ENOMEM;
    bk_ht_init(&ss->table);
    b->subs = ss;
    return 0;
}

void bk_subs_fini(broker_t *b)
{
    struct bk_subs *ss = b->subs;
    bk_hnode_t *n;

    if (!ss)
        return;
    while ((n = bk_ht_next(&ss->table, NULL))) {
        bk_ht_remove(&ss->table, n);
        free(bk_container_of(n, struct bk_sub, node));
    }
    bk_ht_fini(&ss->table);
    free(ss);
    b->subs = NULL;
}

static struct bk_sub *find(const broker_t *b, uint32_t id)
{
    uint8_t key[4];
    bk_hnode_t *n;

    bk_put32(key, id);
    n = bk_ht_find(&b->subs->table, key, sizeof(key));
    return n ? bk_container_of(n, struct bk_sub, node) : NULL;
}

int bk_subs_add(broker_t *b, uint32_t id)
{
    struct bk_sub *s;

    if (find(b, id))
        return 1;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    bk_put32(s->key, id);
    s->node.key = s->key;
    s->node.keylen = sizeof(s->key);
    if (bk_ht_insert(&b->subs->table, &s->node) < 0) {
        free(s);
        return -ENOMEM;
    }
    return 0;
}

int bk_subs_remove(broker_t *b, uint32_t id)
{
    struct bk_sub *s = find(b, id);

    if (!s)
        return -ENOENT;
    bk_ht_remove(&b->subs->table, &s->node);
    free(s);
    return 0;
}

bool bk_subs_live(const broker_t *b, uint32_t id)
{
    return id != 0 && find(b, id) != NULL;
}

size_t bk_subs_count(const broker_t *b)
{
    return b->subs->table.count;
}
