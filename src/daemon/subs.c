/*
 * subs.c - the subscription table (see subs.h).
 *
 * A token trie: each node has its literal children in an htable keyed by
 * the token, a `*` child and a `>` child.  A subscription (or a group)
 * hangs on the node its whole pattern leads to.  Matching walks the
 * topic's tokens; the result is cached per topic.  Every add and remove
 * bumps the generation, which makes every cached result stale; a stale
 * entry is recomputed in place when its topic comes again, and the cache
 * is flushed whole when it holds BK_SUBS_CACHE_MAX topics.  So add and
 * remove cost O(pattern), never O(cache).
 *
 * Ownership: the table owns the nodes (and their token copies), the
 * subscriptions, the groups (name copies) and the cache entries (topic
 * copies and the match arrays handed out by bk_subs_match).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "proto.h"
#include "subs.h"
#include "topic.h"

/* Tokens in a topic: at most one per two bytes, rounded up. */
#define SUBS_MAX_TOKENS ((BK_MAX_TOPIC + 1) / 2)

typedef struct bk_subs_node {
    bk_hnode_t hn;              /* in parent->children (literals only) */
    struct bk_subs_node *parent;
    bk_htable_t children;       /* literal tokens */
    struct bk_subs_node *star, *tail;
    bk_list_t subs;             /* bk_sub_t node_link, not in a group */
    bk_list_t groups;           /* subs_group_t g.node_link */
    bk_htable_t group_index;    /* subs_group_t by name */
    size_t toklen;
    char tok[];                 /* the literal token ("*"/">" for those) */
} subs_node_t;

/* A group as the table keeps it: the public part and its index entry. */
typedef struct subs_group {
    bk_subs_group_t g;
    bk_hnode_t hn;              /* in node->group_index, key g.name */
    uint64_t seq;               /* creation order, for match order */
} subs_group_t;

/* One cached topic. */
typedef struct subs_cached {
    bk_hnode_t hn;              /* key: topic */
    uint64_t gen;               /* t->gen when computed */
    bk_subs_match_t m;          /* arrays owned by the entry */
    size_t tlen;
    char topic[];
} subs_cached_t;

struct bk_subs {
    subs_node_t *root;
    bk_list_t all;              /* bk_sub_t all_link, oldest first */
    bk_tree_t index;            /* bk_sub_t tnode, by seq (listings) */
    size_t nsubs, ngroups;
    uint64_t seq;               /* next creation number */
    uint64_t gen;               /* bumped by every add / remove */
    bk_htable_t cache;          /* subs_cached_t */
};

/* ---- nodes ----------------------------------------------------------- */

static subs_node_t *subs_node_new(subs_node_t *parent, const char *tok,
                                  size_t len)
{
    subs_node_t *n = calloc(1, sizeof *n + len + 1);
    if (!n)
        return NULL;
    n->parent = parent;
    bk_ht_init(&n->children);
    bk_ht_init(&n->group_index);
    bk_list_init(&n->subs);
    bk_list_init(&n->groups);
    memcpy(n->tok, tok, len);
    n->toklen = len;
    n->hn.key = n->tok;
    n->hn.keylen = len;
    return n;
}

static bool subs_node_empty(const subs_node_t *n)
{
    return !n->star && !n->tail && n->children.count == 0 &&
           bk_list_empty(&n->subs) && bk_list_empty(&n->groups);
}

static void subs_node_free(subs_node_t *n)
{
    bk_ht_fini(&n->children);
    bk_ht_fini(&n->group_index);
    free(n);
}

/* Take an empty node out of its parent and free it; then its parent if
 * that became empty, up to (not including) the root. */
static void subs_node_prune(subs_node_t *n)
{
    while (n->parent && subs_node_empty(n)) {
        subs_node_t *p = n->parent;
        if (p->star == n)
            p->star = NULL;
        else if (p->tail == n)
            p->tail = NULL;
        else
            bk_ht_remove(&p->children, &n->hn);
        subs_node_free(n);
        n = p;
    }
}

/* The child of n for one pattern token, created if missing. */
static subs_node_t *subs_node_child(subs_node_t *n, const char *tok,
                                    size_t len)
{
    subs_node_t **slot = NULL;
    if (len == 1 && tok[0] == '*')
        slot = &n->star;
    else if (len == 1 && tok[0] == '>')
        slot = &n->tail;
    if (slot) {
        if (!*slot)
            *slot = subs_node_new(n, tok, len);
        return *slot;
    }
    bk_hnode_t *hn = bk_ht_find(&n->children, tok, len);
    if (hn)
        return bk_container_of(hn, subs_node_t, hn);
    subs_node_t *c = subs_node_new(n, tok, len);
    if (c && bk_ht_insert(&n->children, &c->hn) < 0) {
        subs_node_free(c);
        return NULL;
    }
    return c;
}

/* The node of a whole pattern, created as needed.  On -ENOMEM the nodes
 * made on the way are pruned again and NULL returned. */
static subs_node_t *subs_node_path(subs_node_t *root, const char *p,
                                   size_t plen)
{
    subs_node_t *n = root;
    size_t off = 0, len;
    const char *tok;
    while (bk_topic_next_token(p, plen, &off, &tok, &len)) {
        subs_node_t *c = subs_node_child(n, tok, len);
        if (!c) {
            subs_node_prune(n);
            return NULL;
        }
        n = c;
    }
    return n;
}

/* Free a node's whole subtree (the table is going away). */
static void subs_node_destroy(subs_node_t *n)
{
    bk_hnode_t *hn, *next;
    for (hn = bk_ht_next(&n->children, NULL); hn; hn = next) {
        next = bk_ht_next(&n->children, hn);
        bk_ht_remove(&n->children, hn);
        subs_node_destroy(bk_container_of(hn, subs_node_t, hn));
    }
    if (n->star)
        subs_node_destroy(n->star);
    if (n->tail)
        subs_node_destroy(n->tail);
    subs_node_free(n);
}

/* ---- the cache ------------------------------------------------------- */

static void subs_match_release(bk_subs_match_t *m)
{
    free(m->subs);
    free(m->groups);
    *m = (bk_subs_match_t){ 0 };
}

static void subs_cache_drop(bk_subs_t *t, subs_cached_t *c)
{
    bk_ht_remove(&t->cache, &c->hn);
    subs_match_release(&c->m);
    free(c);
}

static void subs_cache_flush(bk_subs_t *t)
{
    bk_hnode_t *hn, *next;
    for (hn = bk_ht_next(&t->cache, NULL); hn; hn = next) {
        next = bk_ht_next(&t->cache, hn);
        subs_cache_drop(t, bk_container_of(hn, subs_cached_t, hn));
    }
}

/* ---- the table ------------------------------------------------------- */

bk_subs_t *bk_subs_new(void)
{
    bk_subs_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->root = subs_node_new(NULL, "", 0);
    if (!t->root) {
        free(t);
        return NULL;
    }
    bk_list_init(&t->all);
    bk_tree_init(&t->index);
    bk_ht_init(&t->cache);
    t->seq = 1;
    return t;
}

static void subs_free_one(bk_sub_t *s)
{
    bk_list_unlink(&s->client_link);
    free(s->pattern);
    free(s);
}

void bk_subs_free(bk_subs_t *t)
{
    if (!t)
        return;
    bk_sub_t *s;
    bk_list_for_each_safe(s, &t->all, bk_sub_t, all_link) {
        if (s->group && s->group->nmembers == 1) {
            subs_group_t *g = bk_container_of(s->group, subs_group_t, g);
            free(g->g.name);
            free(g);
        } else if (s->group) {
            s->group->nmembers--;
        }
        subs_free_one(s);
    }
    subs_cache_flush(t);
    bk_ht_fini(&t->cache);
    subs_node_destroy(t->root);
    free(t);
}

/* The group (pattern node, name), created if missing. */
static subs_group_t *subs_group_get(bk_subs_t *t, subs_node_t *n,
                                    const char *name, size_t len)
{
    bk_hnode_t *hn = bk_ht_find(&n->group_index, name, len);
    if (hn)
        return bk_container_of(hn, subs_group_t, hn);
    subs_group_t *g = calloc(1, sizeof *g);
    char *copy = malloc(len + 1);
    if (!g || !copy)
        goto fail;
    memcpy(copy, name, len);
    copy[len] = '\0';
    g->g.name = copy;
    g->g.namelen = len;
    g->g.node = n;
    bk_list_init(&g->g.members);
    g->hn.key = copy;
    g->hn.keylen = len;
    if (bk_ht_insert(&n->group_index, &g->hn) < 0)
        goto fail;
    bk_list_push_tail(&n->groups, &g->g.node_link);
    g->seq = t->seq++;
    t->ngroups++;
    return g;
fail:
    free(copy);
    free(g);
    return NULL;
}

static void subs_group_put(bk_subs_t *t, subs_group_t *g)
{
    if (g->g.nmembers > 0)
        return;
    bk_ht_remove(&g->g.node->group_index, &g->hn);
    bk_list_unlink(&g->g.node_link);
    t->ngroups--;
    free(g->g.name);
    free(g);
}

int bk_subs_add(bk_subs_t *t, uint64_t client, void *owner, uint32_t id,
                const char *pattern, size_t plen, const char *group,
                size_t glen, uint8_t policy, bk_sub_t **out)
{
    bk_sub_t *s = calloc(1, sizeof *s);
    char *pat = malloc(plen + 1);
    if (!s || !pat)
        goto nomem;
    memcpy(pat, pattern, plen);
    pat[plen] = '\0';
    subs_node_t *n = subs_node_path(t->root, pattern, plen);
    if (!n)
        goto nomem;
    subs_group_t *g = NULL;
    if (group && glen > 0) {
        g = subs_group_get(t, n, group, glen);
        if (!g) {
            subs_node_prune(n);
            goto nomem;
        }
    }
    s->id = id;
    s->client = client;
    s->owner = owner;
    s->policy = policy;
    s->pattern = pat;
    s->plen = plen;
    s->node = n;
    s->seq = t->seq++;
    s->tnode.key = s->seq;      /* never reused: the index takes it */
    bk_tree_insert(&t->index, &s->tnode);
    bk_list_init(&s->client_link);
    bk_list_push_tail(&t->all, &s->all_link);
    if (g) {
        s->group = &g->g;
        bk_list_push_tail(&g->g.members, &s->node_link);
        g->g.nmembers++;
    } else {
        bk_list_push_tail(&n->subs, &s->node_link);
    }
    t->nsubs++;
    t->gen++;
    *out = s;
    return 0;
nomem:
    free(pat);
    free(s);
    return -ENOMEM;
}

/* The member before s in its group's order, or NULL if s is first. */
static bk_sub_t *subs_member_prev(const bk_sub_t *s)
{
    if (s->node_link.prev == &s->group->members)
        return NULL;
    return bk_container_of(s->node_link.prev, bk_sub_t, node_link);
}

void bk_subs_remove(bk_subs_t *t, bk_sub_t *s)
{
    subs_node_t *n = s->node;
    if (s->group) {
        bk_subs_group_t *g = s->group;
        /* The next pick starts after the member before s, which is where
         * it would have started had s never been chosen. */
        if (g->last == s)
            g->last = subs_member_prev(s);
        if (g->last_gw == s)
            g->last_gw = subs_member_prev(s);
        bk_list_unlink(&s->node_link);
        g->nmembers--;
        g->ngateways -= !!(s->flags & BK_SUB_F_GATEWAY);
        subs_group_put(t, bk_container_of(g, subs_group_t, g));
    } else {
        bk_list_unlink(&s->node_link);
    }
    bk_list_unlink(&s->all_link);
    bk_tree_remove(&t->index, &s->tnode);
    subs_free_one(s);
    subs_node_prune(n);
    t->nsubs--;
    t->gen++;
}

/* ---- matching -------------------------------------------------------- */

/* Growable result arrays while walking. */
typedef struct subs_collect {
    bk_subs_match_t m;
    size_t subs_cap, groups_cap;
    int err;
} subs_collect_t;

static bool subs_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = ncap;
    return true;
}

/* Everything hanging on node n goes into the result. */
static void subs_collect_node(subs_collect_t *c, const subs_node_t *n)
{
    bk_sub_t *s;
    bk_list_for_each(s, &n->subs, bk_sub_t, node_link) {
        if (!subs_grow((void **)&c->m.subs, &c->subs_cap, c->m.nsubs + 1,
                       sizeof *c->m.subs)) {
            c->err = -ENOMEM;
            return;
        }
        c->m.subs[c->m.nsubs++] = s;
    }
    bk_subs_group_t *g;
    bk_list_for_each(g, &n->groups, bk_subs_group_t, node_link) {
        if (!subs_grow((void **)&c->m.groups, &c->groups_cap,
                       c->m.ngroups + 1, sizeof *c->m.groups)) {
            c->err = -ENOMEM;
            return;
        }
        c->m.groups[c->m.ngroups++] = g;
    }
}

typedef struct subs_token {
    const char *p;
    size_t len;
} subs_token_t;

/* n has consumed the first i of ntok tokens. */
static void subs_walk(subs_collect_t *c, const subs_node_t *n,
                      const subs_token_t *tok, size_t i, size_t ntok)
{
    if (c->err)
        return;
    if (i == ntok) {
        subs_collect_node(c, n);
        return;
    }
    /* The `$` rule: no wildcard takes a first token starting with '$'. */
    bool wild_ok = i > 0 || tok[0].p[0] != '$';
    if (n->tail && wild_ok)
        subs_collect_node(c, n->tail);
    if (n->star && wild_ok)
        subs_walk(c, n->star, tok, i + 1, ntok);
    bk_hnode_t *hn = bk_ht_find(&n->children, tok[i].p, tok[i].len);
    if (hn)
        subs_walk(c, bk_container_of(hn, subs_node_t, hn), tok, i + 1,
                  ntok);
}

static int subs_cmp_sub(const void *a, const void *b)
{
    uint64_t x = (*(bk_sub_t *const *)a)->seq;
    uint64_t y = (*(bk_sub_t *const *)b)->seq;
    return x < y ? -1 : x > y;
}

static int subs_cmp_group(const void *a, const void *b)
{
    const bk_subs_group_t *ga = *(bk_subs_group_t *const *)a;
    const bk_subs_group_t *gb = *(bk_subs_group_t *const *)b;
    uint64_t x = bk_container_of(ga, subs_group_t, g)->seq;
    uint64_t y = bk_container_of(gb, subs_group_t, g)->seq;
    return x < y ? -1 : x > y;
}

/* Compute the matches of a topic into *m (arrays newly allocated). */
static int subs_compute(const bk_subs_t *t, const char *topic, size_t tlen,
                        bk_subs_match_t *m)
{
    subs_token_t tok[SUBS_MAX_TOKENS];
    size_t ntok = 0, off = 0;
    const char *p;
    size_t len;
    while (ntok < SUBS_MAX_TOKENS &&
           bk_topic_next_token(topic, tlen, &off, &p, &len))
        tok[ntok++] = (subs_token_t){ p, len };
    subs_collect_t c = { 0 };
    if (ntok > 0)
        subs_walk(&c, t->root, tok, 0, ntok);
    if (c.err) {
        subs_match_release(&c.m);
        return c.err;
    }
    if (c.m.nsubs > 1)
        qsort(c.m.subs, c.m.nsubs, sizeof *c.m.subs, subs_cmp_sub);
    if (c.m.ngroups > 1)
        qsort(c.m.groups, c.m.ngroups, sizeof *c.m.groups, subs_cmp_group);
    *m = c.m;
    return 0;
}

int bk_subs_match(bk_subs_t *t, const char *topic, size_t tlen,
                  bk_subs_match_t *m)
{
    *m = (bk_subs_match_t){ 0 };
    bk_hnode_t *hn = bk_ht_find(&t->cache, topic, tlen);
    subs_cached_t *c = hn ? bk_container_of(hn, subs_cached_t, hn) : NULL;
    if (c && c->gen == t->gen) {
        *m = c->m;
        return 0;
    }
    bk_subs_match_t fresh;
    int r = subs_compute(t, topic, tlen, &fresh);
    if (r < 0) {
        if (c)
            subs_cache_drop(t, c);
        return r;
    }
    if (c) {
        subs_match_release(&c->m);
    } else {
        if (t->cache.count >= BK_SUBS_CACHE_MAX)
            subs_cache_flush(t);
        c = malloc(sizeof *c + tlen);
        if (!c) {
            subs_match_release(&fresh);
            return -ENOMEM;
        }
        memcpy(c->topic, topic, tlen);
        c->tlen = tlen;
        c->hn.key = c->topic;
        c->hn.keylen = tlen;
        if (bk_ht_insert(&t->cache, &c->hn) < 0) {
            free(c);
            subs_match_release(&fresh);
            return -ENOMEM;
        }
    }
    c->m = fresh;
    c->gen = t->gen;
    *m = c->m;
    return 0;
}

/* ---- groups, counters, walking --------------------------------------- */

void bk_subs_set_gateway(bk_sub_t *s)
{
    if (s->group && !(s->flags & BK_SUB_F_GATEWAY)) {
        s->flags |= BK_SUB_F_GATEWAY;
        s->group->ngateways++;
    }
}

uint32_t bk_subs_group_ordinary(const bk_subs_group_t *g)
{
    return g->nmembers - g->ngateways;
}

bk_sub_t *bk_subs_group_pick(bk_subs_group_t *g, bool gateways,
                             uint64_t (*load)(const bk_sub_t *s, void *ctx),
                             void *ctx)
{
    if ((gateways ? g->ngateways : bk_subs_group_ordinary(g)) == 0)
        return NULL;
    /* Go round once from the member after last; the first member with
     * the lowest load wins, so equals take turns. */
    bk_sub_t **last = gateways ? &g->last_gw : &g->last;
    bk_list_t *start = *last ? (*last)->node_link.next : g->members.next;
    bk_sub_t *best = NULL;
    uint64_t best_load = 0;
    bk_list_t *l = start;
    for (uint32_t seen = 0; seen < g->nmembers; l = l->next) {
        if (l == &g->members)
            continue;
        bk_sub_t *s = bk_container_of(l, bk_sub_t, node_link);
        seen++;
        if (!(s->flags & BK_SUB_F_GATEWAY) != !gateways)
            continue;
        uint64_t v = load(s, ctx);
        if (!best || v < best_load) {
            best = s;
            best_load = v;
        }
    }
    *last = best;
    return best;
}

size_t bk_subs_count(const bk_subs_t *t)
{
    return t->nsubs;
}

size_t bk_subs_groups(const bk_subs_t *t)
{
    return t->ngroups;
}

bk_sub_t *bk_subs_after(const bk_subs_t *t, uint64_t cursor)
{
    bk_tnode_t *n = bk_tree_after(&t->index, cursor);

    return n ? bk_container_of(n, bk_sub_t, tnode) : NULL;
}
