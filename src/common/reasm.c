/*
 * reasm.c - reassembly table for fragmented DATA messages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "frame.h"
#include "reasm.h"

#define KEY_LEN 12u
#define SID_KEY_LEN 4u

/* The entries of one stream id (of any source), in bk_reasm_t.bysid. */
struct bk_sidgrp {
    bk_hnode_t node;
    uint8_t key[SID_KEY_LEN];
    bk_list_t members;      /* bk_partial.glink */
};

struct bk_partial {
    bk_hnode_t node;
    uint8_t key[KEY_LEN];
    uint64_t source;
    uint32_t stream;
    struct bk_sidgrp *grp;
    bk_list_t glink;        /* on grp->members */
    bk_list_t lru;          /* on bk_reasm_t.lru */
    bk_list_t dlink;        /* discarding: on bk_reasm_t.dlru */
    uint64_t last_ms;
    bool discard;           /* refused: swallow the rest of the message */
    bool chunking;          /* oversized: being delivered in chunks */
    bool first_pending;     /* OPEN/name/fds not yet handed out */
    bool open;
    bool named;
    char name[BK_MAX_NAME + 1];
    int *fds;
    unsigned nfds;
    uint8_t *buf;
    size_t len, cap;
    uint32_t nfrags;
};

static void make_key(uint8_t key[KEY_LEN], uint64_t source, uint32_t stream)
{
    bk_put64(key, source);
    bk_put32(key + 8, stream);
}

static void close_all(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ---- activity list -------------------------------------------------- */

static struct bk_partial *lru_oldest(const bk_reasm_t *r)
{
    return bk_list_first_entry(&r->lru, struct bk_partial, lru);
}

static void touch(bk_reasm_t *r, struct bk_partial *p, uint64_t now_ms)
{
    p->last_ms = now_ms;
    bk_list_move_tail(&r->lru, &p->lru);
    if (p->discard)
        bk_list_move_tail(&r->dlru, &p->dlink);
}

/* ---- the stream id index ---------------------------------------------- */

static struct bk_sidgrp *grp_find(const bk_reasm_t *r, uint32_t stream)
{
    uint8_t key[SID_KEY_LEN];
    bk_hnode_t *n;

    bk_put32(key, stream);
    n = bk_ht_find(&r->bysid, key, SID_KEY_LEN);
    return n ? bk_container_of(n, struct bk_sidgrp, node) : NULL;
}

/* Put p on its stream id's group, making the group if needed.  0 or
 * -ENOMEM. */
static int grp_join(bk_reasm_t *r, struct bk_partial *p)
{
    struct bk_sidgrp *g = grp_find(r, p->stream);

    if (!g) {
        g = calloc(1, sizeof(*g));
        if (!g)
            return -ENOMEM;
        bk_put32(g->key, p->stream);
        g->node.key = g->key;
        g->node.keylen = SID_KEY_LEN;
        bk_list_init(&g->members);
        if (bk_ht_insert(&r->bysid, &g->node) < 0) {
            free(g);
            return -ENOMEM;
        }
    }
    p->grp = g;
    bk_list_push_tail(&g->members, &p->glink);
    return 0;
}

static void grp_leave(bk_reasm_t *r, struct bk_partial *p)
{
    struct bk_sidgrp *g = p->grp;

    bk_list_unlink(&p->glink);
    p->grp = NULL;
    if (g && bk_list_empty(&g->members)) {
        bk_ht_remove(&r->bysid, &g->node);
        free(g);
    }
}

/* ---- entries ---------------------------------------------------------- */

/* p's buffer is gone (freed or handed out): stop counting it. */
static void buf_gone(bk_reasm_t *r, struct bk_partial *p)
{
    r->alloc -= p->cap;
    p->buf = NULL;
    p->len = p->cap = 0;
}

static void release_content(bk_reasm_t *r, struct bk_partial *p)
{
    if (p->fds) {
        close_all(p->fds, p->nfds);
        free(p->fds);
        p->fds = NULL;
        p->nfds = 0;
    }
    r->bytes -= p->len;
    free(p->buf);
    buf_gone(r, p);
}

static void entry_free(bk_reasm_t *r, struct bk_partial *p)
{
    bk_ht_remove(&r->table, &p->node);
    grp_leave(r, p);
    bk_list_unlink(&p->lru);
    bk_list_unlink(&p->dlink);
    release_content(r, p);
    if (p->discard)
        r->ndiscard--;
    else
        r->npartial--;
    free(p);
}

static struct bk_partial *find(const bk_reasm_t *r, uint64_t source,
                               uint32_t stream)
{
    uint8_t key[KEY_LEN];
    bk_hnode_t *n;

    make_key(key, source, stream);
    n = bk_ht_find(&r->table, key, KEY_LEN);
    return n ? bk_container_of(n, struct bk_partial, node) : NULL;
}

static struct bk_partial *entry_new(bk_reasm_t *r, uint64_t source,
                                    uint32_t stream, uint64_t now_ms)
{
    struct bk_partial *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->source = source;
    p->stream = stream;
    make_key(p->key, source, stream);
    p->node.key = p->key;
    p->node.keylen = KEY_LEN;
    bk_list_init(&p->glink);
    bk_list_init(&p->dlink);
    if (bk_ht_insert(&r->table, &p->node) < 0) {
        free(p);
        return NULL;
    }
    if (grp_join(r, p) < 0) {
        bk_ht_remove(&r->table, &p->node);
        free(p);
        return NULL;
    }
    p->last_ms = now_ms;
    bk_list_push_tail(&r->lru, &p->lru);
    return p;
}

/* Make room for one more discarding entry by evicting the oldest one. */
static void discard_make_room(bk_reasm_t *r)
{
    struct bk_partial *p;

    if (r->ndiscard < r->lim.max_partial)
        return;
    p = bk_list_first_entry(&r->dlru, struct bk_partial, dlink);
    if (p)
        entry_free(r, p);
}

static void to_discard(bk_reasm_t *r, struct bk_partial *p, uint64_t now_ms)
{
    if (p->discard)
        return;
    release_content(r, p);
    r->npartial--;
    discard_make_room(r);
    p->discard = true;
    r->ndiscard++;
    touch(r, p, now_ms);
}

/* Start discarding a key that has no entry yet; best effort. */
static void discard_new(bk_reasm_t *r, uint64_t source, uint32_t stream,
                        uint64_t now_ms)
{
    struct bk_partial *p;

    if (r->lim.max_partial == 0)
        return;
    discard_make_room(r);
    p = entry_new(r, source, stream, now_ms);
    if (!p)
        return;
    p->discard = true;
    r->ndiscard++;
    bk_list_push_tail(&r->dlru, &p->dlink);
}

/* Whether p's buffer at cap bytes would take the total past max_bytes. */
static bool over_total(const bk_reasm_t *r, const struct bk_partial *p,
                       size_t cap)
{
    return r->lim.max_bytes && r->alloc - p->cap + cap > r->lim.max_bytes;
}

/* The capacity to grow p's buffer to for need bytes: doubling, but no
 * more than max_msg nor (exactly need then) than the total allows.  0:
 * even need bytes would pass max_bytes. */
static size_t grow_cap(const bk_reasm_t *r, const struct bk_partial *p,
                       size_t need)
{
    size_t cap = p->cap ? p->cap * 2 : 4096;

    while (cap < need)
        cap *= 2;
    if (!r->lim.chunked && cap > r->lim.max_msg && need <= r->lim.max_msg)
        cap = (size_t)r->lim.max_msg;
    if (over_total(r, p, cap))
        cap = need;
    return over_total(r, p, cap) ? 0 : cap;
}

/* Append n bytes to p.  force: grow past max_bytes if need be (chunked
 * mode, which then delivers the buffer at once).  0, -ENOBUFS (the total
 * would pass max_bytes) or -ENOMEM. */
static int append(bk_reasm_t *r, struct bk_partial *p, const uint8_t *data,
                  size_t n, bool force)
{
    if (n == 0)
        return 0;
    if (p->len + n > p->cap) {
        size_t need = p->len + n, cap = grow_cap(r, p, need);
        uint8_t *nb;

        if (cap == 0 && !force)
            return -ENOBUFS;
        if (cap == 0)
            cap = need;
        nb = realloc(p->buf, cap);
        if (!nb)
            return -ENOMEM;
        p->buf = nb;
        r->alloc += cap - p->cap;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, data, n);
    p->len += n;
    r->bytes += n;
    return 0;
}

/* ---- outputs ------------------------------------------------------------- */

static void out_init(bk_reasm_out_t *o, uint64_t source, uint32_t stream)
{
    o->source = source;
    o->stream = stream;
    o->flags = 0;
    o->named = false;
    o->name[0] = '\0';
    o->data = NULL;
    o->len = 0;
    o->data_owned = false;
    o->nfds = 0;
}

/* Hand the buffered bytes of p (and, the first time, its OPEN flag, name
 * and fds) to a new output.  close_flag: the final fragment had CLOSE. */
static void emit(bk_reasm_t *r, struct bk_partial *p, bool last,
                 bool close_flag, bk_reasm_result_t *res)
{
    bk_reasm_out_t *o = &res->out[res->nout++];

    out_init(o, p->source, p->stream);
    if (p->chunking)
        o->flags |= BK_REASM_CHUNK | (last ? BK_REASM_LAST : 0);
    if (last && close_flag)
        o->flags |= BK_REASM_CLOSE;
    if (p->first_pending) {
        p->first_pending = false;
        if (p->open)
            o->flags |= BK_REASM_OPEN;
        if (p->named) {
            o->named = true;
            memcpy(o->name, p->name, sizeof(o->name));
        }
        if (p->nfds) {
            memcpy(o->fds, p->fds, p->nfds * sizeof(int));
            o->nfds = p->nfds;
        }
        free(p->fds);
        p->fds = NULL;
        p->nfds = 0;
    }
    if (p->len) {
        o->data = p->buf;
        o->len = p->len;
        o->data_owned = true;
        r->bytes -= p->len;
    } else {
        free(p->buf);
    }
    buf_gone(r, p);
    p->nfrags = 0;
}

void bk_reasm_out_release(bk_reasm_out_t *o)
{
    if (o->data_owned)
        free(o->data);
    o->data = NULL;
    o->data_owned = false;
    o->len = 0;
    close_all(o->fds, o->nfds);
    o->nfds = 0;
}

/* ---- feeding ------------------------------------------------------------- */

static int fail(bk_reasm_result_t *res, enum bk_reasm_why why, int err,
                int *fds, unsigned nfds)
{
    if (fds)
        close_all(fds, nfds);
    res->why = why;
    return err;
}

/* Append n bytes to the message p; if that fails, p starts discarding
 * and res says why (-ENOBUFS: the total is reached, -ENOMEM). */
static int append_or_refuse(bk_reasm_t *r, struct bk_partial *p,
                            const uint8_t *data, size_t n, uint64_t now_ms,
                            bk_reasm_result_t *res)
{
    int err = append(r, p, data, n, r->lim.chunked);

    if (err == 0)
        return 0;
    to_discard(r, p, now_ms);
    if (err == -ENOBUFS)
        return fail(res, BK_REASM_FULL, -ENOBUFS, NULL, 0);
    return fail(res, BK_REASM_NOMEM, -ENOMEM, NULL, 0);
}

/* A message that fits in one fragment: no table entry needed. */
static int feed_single(bk_reasm_t *r, const bk_hdr_t *h, const uint8_t *data,
                       size_t dlen, const char *name, size_t namelen,
                       int *fds, bk_reasm_result_t *res)
{
    bk_reasm_out_t *o = &res->out[0];

    if (dlen > r->lim.max_msg && !r->lim.chunked)
        return fail(res, BK_REASM_TOO_BIG, -EMSGSIZE, fds, h->nfds);
    out_init(o, h->source, h->stream);
    if (h->flags & BK_F_OPEN)
        o->flags |= BK_REASM_OPEN;
    if (h->flags & BK_F_CLOSE)
        o->flags |= BK_REASM_CLOSE;
    if (dlen > r->lim.max_msg)
        o->flags |= BK_REASM_CHUNK | BK_REASM_LAST;
    if (name) {
        o->named = true;
        memcpy(o->name, name, namelen);
        o->name[namelen] = '\0';
    }
    o->data = dlen ? (uint8_t *)data : NULL;
    o->len = dlen;
    if (h->nfds) {
        memcpy(o->fds, fds, h->nfds * sizeof(int));
        o->nfds = h->nfds;
    }
    res->nout = 1;
    return 1;
}

static int feed_first(bk_reasm_t *r, const bk_hdr_t *h,
                      const uint8_t *payload, int *fds, uint64_t now_ms,
                      bk_reasm_result_t *res)
{
    struct bk_partial *p = find(r, h->source, h->stream);
    size_t namelen = (h->flags & BK_F_NAME) ? h->aux : 0;
    const uint8_t *data = payload + namelen;
    size_t dlen;
    int err;

    if (namelen > h->length || namelen > BK_MAX_NAME ||
        ((h->flags & BK_F_NAME) && namelen == 0))
        return fail(res, BK_REASM_BAD_FRAME, -EPROTO, fds, h->nfds);
    dlen = h->length - namelen;
    if (p && !p->discard)
        return fail(res, BK_REASM_BUSY_KEY, -EPROTO, fds, h->nfds);
    if (p)
        entry_free(r, p);
    if (!(h->flags & BK_F_MORE))
        return feed_single(r, h, data, dlen,
                           namelen ? (const char *)payload : NULL, namelen,
                           fds, res);
    if (dlen > r->lim.max_msg && !r->lim.chunked) {
        discard_new(r, h->source, h->stream, now_ms);
        return fail(res, BK_REASM_TOO_BIG, -EMSGSIZE, fds, h->nfds);
    }
    if (r->npartial >= r->lim.max_partial) {
        discard_new(r, h->source, h->stream, now_ms);
        return fail(res, BK_REASM_TOO_MANY, -ENOBUFS, fds, h->nfds);
    }
    p = entry_new(r, h->source, h->stream, now_ms);
    if (!p) {
        discard_new(r, h->source, h->stream, now_ms);
        return fail(res, BK_REASM_NOMEM, -ENOMEM, fds, h->nfds);
    }
    r->npartial++;
    p->first_pending = true;
    p->open = h->flags & BK_F_OPEN;
    if (namelen) {
        p->named = true;
        memcpy(p->name, payload, namelen);
        p->name[namelen] = '\0';
    }
    p->nfrags = 1;
    if (h->nfds) {
        p->fds = malloc(h->nfds * sizeof(int));
        if (!p->fds) {
            to_discard(r, p, now_ms);
            return fail(res, BK_REASM_NOMEM, -ENOMEM, fds, h->nfds);
        }
        memcpy(p->fds, fds, h->nfds * sizeof(int));
        p->nfds = h->nfds;
    }
    if ((err = append_or_refuse(r, p, data, dlen, now_ms, res)) < 0)
        return err;
    if (p->len > r->lim.max_msg || over_total(r, p, p->cap)) {
        p->chunking = true;
        emit(r, p, false, false, res);
    }
    return (int)res->nout;
}

static int feed_cont_chunked(bk_reasm_t *r, struct bk_partial *p,
                             const bk_hdr_t *h, const uint8_t *payload,
                             uint64_t now_ms, bk_reasm_result_t *res)
{
    bool more = h->flags & BK_F_MORE;
    int err;

    /* past max_msg, max_frags or (growing) the total: out with what is
     * buffered first */
    if (p->len + h->length > r->lim.max_msg ||
        p->nfrags >= r->lim.max_frags ||
        (p->len + h->length > p->cap &&
         over_total(r, p, p->len + h->length))) {
        p->chunking = true;
        if (p->len || p->first_pending)
            emit(r, p, false, false, res);
    }
    if ((err = append_or_refuse(r, p, payload, h->length, now_ms, res)) < 0) {
        if (!more)
            entry_free(r, p);
        return err;
    }
    p->nfrags++;
    if (!more) {
        emit(r, p, true, h->flags & BK_F_CLOSE, res);
        entry_free(r, p);
    } else if (p->len > r->lim.max_msg || over_total(r, p, p->cap)) {
        p->chunking = true;
        emit(r, p, false, false, res);
    }
    return (int)res->nout;
}

static int feed_cont(bk_reasm_t *r, const bk_hdr_t *h,
                     const uint8_t *payload, uint64_t now_ms,
                     bk_reasm_result_t *res)
{
    struct bk_partial *p = find(r, h->source, h->stream);
    bool more = h->flags & BK_F_MORE;
    int err;

    if (!p)
        return fail(res, BK_REASM_ORPHAN_CONT, -EPROTO, NULL, 0);
    if (p->discard) {
        if (more)
            touch(r, p, now_ms);
        else
            entry_free(r, p);
        return 0;
    }
    touch(r, p, now_ms);
    if (r->lim.chunked)
        return feed_cont_chunked(r, p, h, payload, now_ms, res);
    if (p->len + h->length > r->lim.max_msg ||
        p->nfrags >= r->lim.max_frags) {
        to_discard(r, p, now_ms);
        if (!more)
            entry_free(r, p);
        return fail(res, BK_REASM_TOO_BIG, -EMSGSIZE, NULL, 0);
    }
    if ((err = append_or_refuse(r, p, payload, h->length, now_ms, res)) < 0) {
        if (!more)
            entry_free(r, p);
        return err;
    }
    p->nfrags++;
    if (more)
        return 0;
    emit(r, p, true, h->flags & BK_F_CLOSE, res);
    entry_free(r, p);
    return 1;
}

int bk_reasm_feed(bk_reasm_t *r, const bk_hdr_t *h, const uint8_t *payload,
                  int *fds, uint64_t now_ms, bk_reasm_result_t *res)
{
    res->why = BK_REASM_OK;
    res->nout = 0;
    if (h->nfds && !fds)
        return fail(res, BK_REASM_BAD_FRAME, -EPROTO, NULL, 0);
    if (h->type != BK_T_DATA || h->nfds > BK_MAX_FDS_HARD)
        return fail(res, BK_REASM_BAD_FRAME, -EPROTO, fds, h->nfds);
    if (h->flags & BK_F_CONT) {
        if (h->nfds)
            return fail(res, BK_REASM_BAD_FRAME, -EPROTO, fds, h->nfds);
        return feed_cont(r, h, payload, now_ms, res);
    }
    return feed_first(r, h, payload, fds, now_ms, res);
}

/* ---- lifetime, drops, expiry ------------------------------------------- */

void bk_reasm_init(bk_reasm_t *r, const bk_reasm_limits_t *lim)
{
    memset(r, 0, sizeof(*r));
    bk_ht_init(&r->table);
    bk_ht_init(&r->bysid);
    bk_list_init(&r->lru);
    bk_list_init(&r->dlru);
    r->lim = *lim;
}

void bk_reasm_set_limits(bk_reasm_t *r, const bk_reasm_limits_t *lim)
{
    r->lim = *lim;
}

void bk_reasm_fini(bk_reasm_t *r)
{
    struct bk_partial *p;

    while ((p = lru_oldest(r)))
        entry_free(r, p);
    bk_ht_fini(&r->table);
    bk_ht_fini(&r->bysid);
}

size_t bk_reasm_drop_stream(bk_reasm_t *r, uint64_t source, uint32_t stream)
{
    struct bk_sidgrp *g;
    size_t n = 0;

    if (source) {
        struct bk_partial *p = find(r, source, stream);
        if (!p)
            return 0;
        entry_free(r, p);
        return 1;
    }
    g = grp_find(r, stream);
    if (!g)
        return 0;
    /* freeing the group's last entry frees the group too */
    for (bool last = false; !last; n++) {
        struct bk_partial *p = bk_list_first_entry(&g->members,
                                                   struct bk_partial, glink);

        last = p->glink.next == &g->members;
        entry_free(r, p);
    }
    return n;
}

size_t bk_reasm_drop_source(bk_reasm_t *r, uint64_t source)
{
    size_t n = 0;
    struct bk_partial *p;

    bk_list_for_each_safe(p, &r->lru, struct bk_partial, lru) {
        if (p->source == source) {
            entry_free(r, p);
            n++;
        }
    }
    return n;
}

size_t bk_reasm_expire(bk_reasm_t *r, uint64_t now_ms,
                       bk_reasm_expired_fn fn, void *ud)
{
    size_t n = 0;
    uint64_t t = r->lim.timeout_ms;

    if (t == 0)
        return 0;
    struct bk_partial *p;

    while ((p = lru_oldest(r)) && p->last_ms + t <= now_ms &&
           p->last_ms <= now_ms) {
        if (p->discard) {
            entry_free(r, p);
            continue;
        }
        to_discard(r, p, now_ms);
        n++;
        if (fn)
            fn(ud, p->source, p->stream);
    }
    return n;
}

bool bk_reasm_next_deadline(const bk_reasm_t *r, uint64_t *when_ms)
{
    const struct bk_partial *p = lru_oldest(r);

    if (!p || r->lim.timeout_ms == 0)
        return false;
    *when_ms = p->last_ms + r->lim.timeout_ms;
    return true;
}

size_t bk_reasm_count(const bk_reasm_t *r)
{
    return r->npartial;
}

uint64_t bk_reasm_alloc(const bk_reasm_t *r)
{
    return r->alloc;
}
