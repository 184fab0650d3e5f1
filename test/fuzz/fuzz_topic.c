/*
 * fuzz_topic.c - libFuzzer target for topics, patterns, bk_topic_match,
 * bk_topic_covers and the subscription table (prefix fz_).  Built by
 * `make fuzz`.
 *
 * The input is text split at '\n' into at most FZ_MAX_LINES lines.  Line 0
 * is the topic; every line is also tried as a pattern.  For each line the
 * validators are compared with a reference written differently (a
 * character-class state machine here, token walks in topic.c); for each
 * valid pattern bk_topic_match is compared with a recursive reference
 * matcher; consecutive valid patterns are checked with bk_topic_covers
 * against a brute-force reference that searches for a topic the second
 * pattern matches and the first does not.  The valid patterns are added
 * to a bk_subs table (some in queue groups) and its match set for the
 * topic is compared with the reference over all of them, then the table
 * is torn down pattern by pattern, checking again half way.  Any
 * disagreement aborts; LeakSanitizer reports anything left behind.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "subs.h"
#include "topic.h"

#define FZ_MAX_LINES    48u
#define FZ_MAX_TOKENS   256     /* a topic has 128; counterexamples more */
#define FZ_MAX_WILD     6       /* wildcards in a sub for brute force */

#define fz_require(cond) do { if (!(cond)) abort(); } while (0)

typedef struct fz_str {
    const char *p;
    size_t len;
} fz_str_t;

/* ---- reference validators --------------------------------------------- */

/* One pass over the bytes, remembering the kind of the current token. */
static bool fz_ref_valid(const char *s, size_t len, bool pattern)
{
    enum { START, LIT, STAR, TAIL } st = START;
    if (len == 0 || len > BK_MAX_TOPIC)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (st == START || st == TAIL)
                return false;
            st = START;
        } else if (c == '*' || c == '>') {
            if (!pattern || st != START)
                return false;
            st = c == '*' ? STAR : TAIL;
        } else if (c >= 0x21 && c <= 0x7e) {
            if (st == STAR || st == TAIL)
                return false;
            st = LIT;
        } else {
            return false;
        }
    }
    return st != START;
}

/* ---- reference matcher ------------------------------------------------ */

static size_t fz_split(const char *s, size_t len, fz_str_t *tok)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++)
        if (i == len || s[i] == '.') {
            fz_require(n < FZ_MAX_TOKENS);
            tok[n++] = (fz_str_t){ s + start, i - start };
            start = i + 1;
        }
    return n;
}

static bool fz_is(const fz_str_t *t, char c)
{
    return t->len == 1 && t->p[0] == c;
}

static bool fz_ref_match_tok(const fz_str_t *p, size_t np, const fz_str_t *t,
                             size_t nt)
{
    if (np == 0)
        return nt == 0;
    if (fz_is(&p[0], '>'))
        return nt >= 1;
    if (nt == 0)
        return false;
    if (!fz_is(&p[0], '*') &&
        (p[0].len != t[0].len || memcmp(p[0].p, t[0].p, p[0].len) != 0))
        return false;
    return fz_ref_match_tok(p + 1, np - 1, t + 1, nt - 1);
}

static bool fz_ref_match(const char *pat, size_t plen, const char *t,
                         size_t tlen)
{
    fz_str_t pt[FZ_MAX_TOKENS], tt[FZ_MAX_TOKENS];
    size_t np = fz_split(pat, plen, pt), nt = fz_split(t, tlen, tt);
    if (tt[0].p[0] == '$' && (fz_is(&pt[0], '*') || fz_is(&pt[0], '>')))
        return false;
    return fz_ref_match_tok(pt, np, tt, nt);
}

/* ---- reference covers: search for a counterexample -------------------- */

/*
 * A topic that sub matches and rule does not exists iff one exists among
 * those built by giving each `*` of sub (and each token a `>` expands to,
 * 1 .. rule's token count + 1 of them) either the rule's literal at that
 * position or a token that appears nowhere in the rule.
 */
typedef struct fz_cover {
    const char *rule;
    size_t rlen;
    fz_str_t rt[FZ_MAX_TOKENS];
    size_t nr;
    fz_str_t st[FZ_MAX_TOKENS];
    size_t ns;
    char topic[2048];
    size_t tlen;
    size_t depth;               /* tokens in topic */
} fz_cover_t;

/* A token of 1..13 '~' that is no token of the rule (it has at most 12
 * tokens); it does not start with '$'. */
static const char *fz_fresh_token(const fz_cover_t *c, size_t *len)
{
    static const char tildes[] = "~~~~~~~~~~~~~";
    for (size_t k = 1; k < sizeof tildes; k++) {
        bool used = false;
        for (size_t i = 0; i < c->nr; i++)
            used |= c->rt[i].len == k && memcmp(c->rt[i].p, tildes, k) == 0;
        if (!used) {
            *len = k;
            return tildes;
        }
    }
    abort();
}

static bool fz_push(fz_cover_t *c, const char *p, size_t len, size_t *saved)
{
    *saved = c->tlen;
    fz_require(c->tlen + len + 1 <= sizeof c->topic);   /* see the bound */
    if (c->depth)
        c->topic[c->tlen++] = '.';
    memcpy(c->topic + c->tlen, p, len);
    c->tlen += len;
    c->depth++;
    return true;
}

static void fz_pop(fz_cover_t *c, size_t saved)
{
    c->tlen = saved;
    c->depth--;
}

/* The choices for the token at the topic's current depth. */
static bool fz_counter(fz_cover_t *c, size_t si, size_t pending);

static bool fz_try_token(fz_cover_t *c, size_t si, size_t pending,
                         bool first_wild)
{
    size_t flen, saved;
    const char *fresh = fz_fresh_token(c, &flen);
    /* A wildcard never takes a leading `$` token; a fresh token does not
     * start with `$`, so only the rule's literal needs the check. */
    if (fz_push(c, fresh, flen, &saved)) {
        bool r = fz_counter(c, si, pending);
        fz_pop(c, saved);
        if (r)
            return true;
    }
    if (c->depth < c->nr && !fz_is(&c->rt[c->depth], '*') &&
        !fz_is(&c->rt[c->depth], '>') &&
        !(first_wild && c->rt[c->depth].p[0] == '$')) {
        const fz_str_t *lit = &c->rt[c->depth];
        if (fz_push(c, lit->p, lit->len, &saved)) {
            bool r = fz_counter(c, si, pending);
            fz_pop(c, saved);
            if (r)
                return true;
        }
    }
    return false;
}

/* si: next sub token; pending: tokens a `>` still owes (0: none). */
static bool fz_counter(fz_cover_t *c, size_t si, size_t pending)
{
    if (pending > 0)
        return fz_try_token(c, si, pending - 1, false);
    if (si == c->ns)
        return !fz_ref_match(c->rule, c->rlen, c->topic, c->tlen);
    const fz_str_t *s = &c->st[si];
    if (fz_is(s, '*'))
        return fz_try_token(c, si + 1, 0, c->depth == 0);
    if (fz_is(s, '>')) {
        for (size_t n = 1; n <= c->nr + 1; n++) {
            /* The first expanded token is this one; n - 1 follow. */
            if (fz_try_token(c, si + 1, n - 1, c->depth == 0))
                return true;
        }
        return false;
    }
    size_t saved;
    if (!fz_push(c, s->p, s->len, &saved))
        return false;
    bool r = fz_counter(c, si + 1, 0);
    fz_pop(c, saved);
    return r;
}

/* -1: too many wildcards to search, else whether rule covers sub. */
static int fz_ref_covers(const char *rule, size_t rlen, const char *sub,
                         size_t slen)
{
    static fz_cover_t c;
    c.rule = rule;
    c.rlen = rlen;
    c.nr = fz_split(rule, rlen, c.rt);
    c.ns = fz_split(sub, slen, c.st);
    int wild = 0;
    for (size_t i = 0; i < c.ns; i++)
        wild += fz_is(&c.st[i], '*') || fz_is(&c.st[i], '>');
    if (wild > FZ_MAX_WILD || c.nr > 12)
        return -1;
    c.tlen = 0;
    c.depth = 0;
    return !fz_counter(&c, 0, 0);
}

/* ---- the subscription table ------------------------------------------- */

static uint64_t fz_load(const bk_sub_t *s, void *ctx)
{
    (void)ctx;
    return s->id % 3;
}

static void fz_check_table(bk_subs_t *t, bk_sub_t **subs, size_t n,
                           const fz_str_t *topic)
{
    bk_subs_match_t m;
    if (bk_subs_match(t, topic->p, topic->len, &m) < 0)
        return;                 /* -ENOMEM: allowed, nothing to check */
    size_t ns = 0, ng = 0;
    for (size_t i = 0; i < n; i++) {
        if (!subs[i] ||
            !fz_ref_match(subs[i]->pattern, subs[i]->plen, topic->p,
                          topic->len))
            continue;
        if (subs[i]->group) {
            bool seen = false;
            for (size_t j = 0; j < m.ngroups; j++)
                seen |= m.groups[j] == subs[i]->group;
            fz_require(seen);
            continue;
        }
        fz_require(ns < m.nsubs && m.subs[ns] == subs[i]);
        ns++;
    }
    fz_require(ns == m.nsubs);
    for (size_t j = 0; j < m.ngroups; j++, ng++) {
        bk_sub_t *picked = bk_subs_group_pick(m.groups[j], false, fz_load, NULL);
        fz_require(picked && picked->group == m.groups[j]);
        fz_require(fz_ref_match(picked->pattern, picked->plen, topic->p,
                                topic->len));
    }
    (void)ng;
}

static void fz_table(const fz_str_t *lines, size_t n)
{
    bk_subs_t *t = bk_subs_new();
    if (!t)
        return;
    bk_sub_t *subs[FZ_MAX_LINES] = { 0 };
    for (size_t i = 0; i < n; i++) {
        if (!bk_topic_pattern_valid(lines[i].p, lines[i].len))
            continue;
        const char *group = i % 3 == 2 ? "g" : NULL;
        if (bk_subs_add(t, i % 4, NULL, (uint32_t)i + 1, lines[i].p,
                        lines[i].len, group, group ? 1 : 0, BK_SUB_DROP,
                        &subs[i]) < 0)
            subs[i] = NULL;
    }
    fz_check_table(t, subs, n, &lines[0]);
    fz_check_table(t, subs, n, &lines[0]);      /* from the cache */
    for (size_t i = 0; i < n; i += 2)
        if (subs[i]) {
            bk_subs_remove(t, subs[i]);
            subs[i] = NULL;
        }
    fz_check_table(t, subs, n, &lines[0]);
    for (size_t i = 0; i < n; i++)
        if (subs[i] && i % 4 == 1)
            bk_subs_remove(t, subs[i]);         /* the rest: by free */
    bk_subs_free(t);
}

/* ---- the entry point -------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_str_t lines[FZ_MAX_LINES];
    size_t n = 0, start = 0;
    const char *s = (const char *)data;
    for (size_t i = 0; i <= size && n < FZ_MAX_LINES; i++)
        if (i == size || s[i] == '\n') {
            lines[n++] = (fz_str_t){ s + start, i - start };
            start = i + 1;
        }

    bool pvalid[FZ_MAX_LINES];
    for (size_t i = 0; i < n; i++) {
        const fz_str_t *l = &lines[i];
        bool tv = bk_topic_valid(l->p, l->len);
        pvalid[i] = bk_topic_pattern_valid(l->p, l->len);
        fz_require(tv == fz_ref_valid(l->p, l->len, false));
        fz_require(pvalid[i] == fz_ref_valid(l->p, l->len, true));
        fz_require(!tv || pvalid[i]);
        if (tv)
            fz_require(bk_topic_reserved(l->p, l->len) ==
                       (l->len >= 7 && memcmp(l->p, "$broker", 7) == 0 &&
                        (l->len == 7 || l->p[7] == '.')));
    }

    const fz_str_t *topic = &lines[0];
    if (!bk_topic_valid(topic->p, topic->len))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!pvalid[i])
            continue;
        bool m = bk_topic_match(lines[i].p, lines[i].len, topic->p,
                                topic->len);
        fz_require(m == fz_ref_match(lines[i].p, lines[i].len, topic->p,
                                     topic->len));
        /* A valid topic is a pattern that matches exactly itself. */
        if (i > 0 && bk_topic_valid(lines[i].p, lines[i].len))
            fz_require(m == (lines[i].len == topic->len &&
                             memcmp(lines[i].p, topic->p, topic->len) == 0));
    }
    for (size_t i = 0; i + 1 < n; i++) {
        if (!pvalid[i] || !pvalid[i + 1])
            continue;
        bool cov = bk_topic_covers(lines[i].p, lines[i].len, lines[i + 1].p,
                                   lines[i + 1].len);
        int ref = fz_ref_covers(lines[i].p, lines[i].len, lines[i + 1].p,
                                lines[i + 1].len);
        if (ref >= 0)
            fz_require(cov == (bool)ref);
        fz_require(bk_topic_covers(lines[i].p, lines[i].len, lines[i].p,
                                   lines[i].len));
        /* Whatever the rule covers and the sub matches, the rule matches. */
        if (cov && bk_topic_match(lines[i + 1].p, lines[i + 1].len, topic->p,
                                  topic->len))
            fz_require(bk_topic_match(lines[i].p, lines[i].len, topic->p,
                                      topic->len));
    }
    fz_table(lines, n);
    return 0;
}
