/*
 * stream.c - libbroker layer 4: the stream table.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "stream.h"

#define BK_MAX_SPARE    16u     /* stream entries kept for reuse */

struct bk_streams {
    bk_htable_t table;          /* struct bk_stream by id */
    uint32_t sid_next;
    bk_list_t spare;            /* freed entries kept for reuse */
    unsigned nspare;
    struct bk_stream_hooks hooks;
};

static void on_drained(broker_t *b, struct bk_outq *q)
{
    bk_stream_forget(b, bk_container_of(q, struct bk_stream, q));
}

static const struct bk_out_hooks stream_out_hooks = {
    .drained = on_drained,
};

int bk_stream_init(broker_t *b)
{
    struct bk_streams *st = calloc(1, sizeof(*st));

    if (!st)
        return -ENOMEM;
    bk_ht_init(&st->table);
    st->sid_next = 1;
    bk_list_init(&st->spare);
    b->st = st;
    bk_out_set_hooks(b, &stream_out_hooks);
    return 0;
}

void bk_stream_set_hooks(broker_t *b, const struct bk_stream_hooks *hooks)
{
    b->st->hooks = *hooks;
}

void bk_stream_fini(broker_t *b)
{
    struct bk_streams *st = b->st;
    bk_hnode_t *n;
    bk_list_t *l;

    if (!st)
        return;
    for (n = bk_ht_next(&st->table, NULL); n; ) {
        struct bk_stream *s = bk_container_of(n, struct bk_stream, node);
        n = bk_ht_next(&st->table, n);
        s->acall = NULL;
        bk_stream_forget(b, s);
    }
    bk_ht_fini(&st->table);
    while ((l = bk_list_pop_head(&st->spare)))
        free(bk_container_of(l, struct bk_stream, spare));
    free(st);
    b->st = NULL;
}

struct bk_stream *bk_stream_find(broker_t *b, uint32_t id)
{
    uint8_t key[4];
    bk_hnode_t *n;

    bk_put32(key, id);
    n = bk_ht_find(&b->st->table, key, sizeof(key));
    return n ? bk_container_of(n, struct bk_stream, node) : NULL;
}

struct bk_stream *bk_stream_add(broker_t *b, uint32_t id)
{
    struct bk_streams *st = b->st;
    bk_list_t *l = bk_list_pop_head(&st->spare);
    struct bk_stream *s;

    if (l) {
        s = bk_container_of(l, struct bk_stream, spare);
        st->nspare--;
        memset(s, 0, sizeof(*s));
    } else {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
    }
    bk_outq_init(&s->q);
    bk_list_init(&s->spare);
    s->id = id;
    s->ours = !(id & BK_SID_PEER_BIT);
    bk_put32(s->key, id);
    s->node.key = s->key;
    s->node.keylen = sizeof(s->key);
    if (bk_ht_insert(&st->table, &s->node) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

void bk_stream_forget(broker_t *b, struct bk_stream *s)
{
    struct bk_streams *st = b->st;

    if (s->acall) {
        if (st->hooks.call_dropped)
            st->hooks.call_dropped(b, s);
        s->acall = NULL;
    }
    bk_out_drop(b, &s->q);
    bk_ht_remove(&st->table, &s->node);
    free(s->name);
    s->name = NULL;
    free(s->topic);
    s->topic = NULL;
    s->sub_id = 0;
    if (st->nspare < BK_MAX_SPARE && !b->closing) {
        bk_list_push_head(&st->spare, &s->spare);
        st->nspare++;
    } else {
        free(s);
    }
}

int bk_stream_alloc_id(broker_t *b, uint32_t *sid)
{
    struct bk_streams *st = b->st;

    for (size_t tries = 0; tries <= st->table.count; tries++) {
        uint32_t id = st->sid_next;

        st->sid_next = id >= BK_SID_MAX_LOCAL ? 1 : id + 1;
        if (!bk_stream_find(b, id)) {
            *sid = id;
            return 0;
        }
    }
    return -ENOSR;
}

void bk_stream_ended(broker_t *b, struct bk_stream *s)
{
    uint8_t flags;

    if (bk_out_half_sent(&s->q, &flags))
        bk_out_queue_terminator(b, s->id, flags);
    bk_stream_forget(b, s);
}

void bk_stream_abort(broker_t *b, uint32_t sid, int err)
{
    struct bk_stream *s = bk_stream_find(b, sid);

    if (!s)
        return;
    if (s->q.wire && !s->q.closing && !b->io.err)
        bk_out_queue_close(b, sid, err, NULL);
    bk_stream_forget(b, s);
}
