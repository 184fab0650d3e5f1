/*
 * streams.c - the broker's stream table.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "frame.h"
#include "streams.h"

void bk_st_init(bk_st_table_t *t)
{
    bk_ht_init(&t->ht);
    bk_tree_init(&t->index);
    t->seq = 0;
    bk_ht_init(&t->pairs);
    t->streams = 0;
}

static void make_key(uint8_t key[12], uint64_t client, uint32_t sid)
{
    bk_put64(key, client);
    bk_put32(key + 8, sid);
}

static void list_add(bk_st_end_t *e)
{
    bk_list_push_head(&e->list->head, &e->link);
    e->list->count++;
    if (e->list->shared && e == &e->stream->end[0])
        (*e->list->shared)++;
}

static void unpair(bk_st_table_t *t, bk_stream_t *s);

/* e leaves its owner's list (and an acceptor's end its pair's count). */
static void list_del(bk_st_table_t *t, bk_st_end_t *e)
{
    bk_list_unlink(&e->link);
    e->list->count--;
    if (e->list->shared && *e->list->shared && e == &e->stream->end[0])
        (*e->list->shared)--;
    if (e == &e->stream->end[1])
        unpair(t, e->stream);
}

/* ---- max-streams-per-peer, max-streams-per-uid-peer ---------------------- */

static void pair_key(uint8_t key[17], enum bk_st_pair_kind kind,
                     uint64_t who, uint64_t acceptor)
{
    key[0] = (uint8_t)kind;
    bk_put64(key + 1, who);
    bk_put64(key + 9, acceptor);
}

static bk_st_pair_t *pair_find(const bk_st_table_t *t,
                               enum bk_st_pair_kind kind, uint64_t who,
                               uint64_t acceptor)
{
    uint8_t key[17];
    bk_hnode_t *n;

    pair_key(key, kind, who, acceptor);
    n = bk_ht_find(&t->pairs, key, sizeof(key));
    return n ? bk_container_of(n, bk_st_pair_t, node) : NULL;
}

static void pair_put(bk_st_table_t *t, bk_st_pair_t *p)
{
    if (!p || --p->count)
        return;
    bk_ht_remove(&t->pairs, &p->node);
    free(p);
}

static bk_st_pair_t *pair_get(bk_st_table_t *t, enum bk_st_pair_kind kind,
                              uint64_t who, uint64_t acceptor)
{
    bk_st_pair_t *p = pair_find(t, kind, who, acceptor);

    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return NULL;
        pair_key(p->key, kind, who, acceptor);
        p->node.key = p->key;
        p->node.keylen = sizeof(p->key);
        if (bk_ht_insert(&t->pairs, &p->node) < 0) {
            free(p);
            return NULL;
        }
    }
    p->count++;
    return p;
}

int bk_st_pair(bk_st_table_t *t, bk_stream_t *s, uint32_t uid)
{
    uint64_t to = s->end[1].client;
    bk_st_pair_t *c = pair_get(t, BK_ST_PAIR_CLIENT, s->end[0].client, to);
    bk_st_pair_t *u = c ? pair_get(t, BK_ST_PAIR_UID, uid, to) : NULL;

    if (!u) {
        pair_put(t, c);
        return -ENOMEM;
    }
    s->pair[BK_ST_PAIR_CLIENT] = c;
    s->pair[BK_ST_PAIR_UID] = u;
    return 0;
}

uint32_t bk_st_pair_count(const bk_st_table_t *t, enum bk_st_pair_kind kind,
                          uint64_t who, uint64_t acceptor)
{
    const bk_st_pair_t *p = pair_find(t, kind, who, acceptor);

    return p ? p->count : 0;
}

static void unpair(bk_st_table_t *t, bk_stream_t *s)
{
    for (int k = 0; k < BK_ST_PAIR_KINDS_; k++) {
        pair_put(t, s->pair[k]);
        s->pair[k] = NULL;
    }
}

static int link_end(bk_st_table_t *t, bk_st_end_t *e, bk_stream_t *s,
                    void *owner, uint64_t client, uint32_t sid,
                    bk_st_list_t *list)
{
    int r;

    e->stream = s;
    e->owner = owner;
    e->client = client;
    e->sid = sid;
    e->list = list;
    make_key(e->key, client, sid);
    e->node.key = e->key;
    e->node.keylen = sizeof(e->key);
    r = bk_ht_insert(&t->ht, &e->node);
    if (r < 0)
        return r;
    e->linked = true;
    list_add(e);
    return 0;
}

int bk_st_open(bk_st_table_t *t, void *a_owner, uint64_t a, uint32_t a_sid,
               bk_st_list_t *a_list, void *b_owner, uint64_t b,
               uint32_t b_sid, bk_st_list_t *b_list, bk_stream_t **out)
{
    bk_stream_t *s = calloc(1, sizeof(*s));
    int r;

    if (!s)
        return -ENOMEM;
    r = link_end(t, &s->end[0], s, a_owner, a, a_sid, a_list);
    if (r < 0) {
        free(s);
        return r;
    }
    if (b_owner) {
        r = link_end(t, &s->end[1], s, b_owner, b, b_sid, b_list);
        if (r < 0) {
            bk_ht_remove(&t->ht, &s->end[0].node);
            list_del(t, &s->end[0]);
            free(s);
            return r;
        }
    }
    /* Numbers are never reused, so the index cannot refuse the key. */
    s->tnode.key = ++t->seq;
    bk_tree_insert(&t->index, &s->tnode);
    t->streams++;
    *out = s;
    return 0;
}

bk_st_end_t *bk_st_find(const bk_st_table_t *t, uint64_t client,
                        uint32_t sid)
{
    uint8_t key[12];
    bk_hnode_t *n;

    make_key(key, client, sid);
    n = bk_ht_find(&t->ht, key, sizeof(key));
    return n ? bk_container_of(n, bk_st_end_t, node) : NULL;
}

bk_st_end_t *bk_st_peer(const bk_st_end_t *e)
{
    bk_stream_t *s = e->stream;
    bk_st_end_t *p = (e == &s->end[0]) ? &s->end[1] : &s->end[0];

    return p->linked ? p : NULL;
}

void bk_st_remove_end(bk_st_table_t *t, bk_st_end_t *e)
{
    bk_stream_t *s = e->stream;

    if (e->linked) {
        bk_ht_remove(&t->ht, &e->node);
        list_del(t, e);
        e->linked = false;
    }
    if (!s->end[0].linked && !s->end[1].linked) {
        bk_tree_remove(&t->index, &s->tnode);
        t->streams--;
        free(s);
    }
}

void bk_st_close(bk_st_table_t *t, bk_st_end_t *from)
{
    bk_st_end_t *peer = bk_st_peer(from);

    if (peer) {
        if (peer->in_msg && !peer->discard)
            peer->discard = true;
        else if (!peer->in_msg)
            bk_st_remove_end(t, peer);
    }
    bk_st_remove_end(t, from);
}

void bk_st_fini(bk_st_table_t *t)
{
    bk_hnode_t *n = bk_ht_next(&t->ht, NULL);

    while (n) {
        bk_hnode_t *next = bk_ht_next(&t->ht, n);
        bk_st_end_t *e = bk_container_of(n, bk_st_end_t, node);
        bk_ht_remove(&t->ht, n);
        e->linked = false;
        list_del(t, e);
        bk_stream_t *s = e->stream;
        if (!s->end[0].linked && !s->end[1].linked) {
            bk_tree_remove(&t->index, &s->tnode);
            t->streams--;
            free(s);
        }
        n = next;
    }
    bk_ht_fini(&t->ht);
    bk_ht_fini(&t->pairs);      /* empty: every acceptor's end is gone */
}
