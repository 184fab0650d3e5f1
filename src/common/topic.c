/*
 * topic.c - publish/subscribe topics and patterns (see topic.h).
 *
 * Everything here works on (pointer, length) byte strings and allocates
 * nothing.  Matching walks the pattern and the topic token by token;
 * covers() decides pattern inclusion on the same token walk.
 */
#include <string.h>
#include "proto.h"
#include "topic.h"

/* A byte that may appear in a literal token. */
static bool topic_literal_byte(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '.' && c != '*' && c != '>';
}

static bool topic_is_star(const char *tok, size_t len)
{
    return len == 1 && tok[0] == '*';
}

static bool topic_is_tail(const char *tok, size_t len)
{
    return len == 1 && tok[0] == '>';
}

bool bk_topic_next_token(const char *t, size_t len, size_t *off,
                         const char **tok, size_t *toklen)
{
    if (*off > len || (*off == len && (len == 0 || t[len - 1] != '.')))
        return false;
    const char *start = t + *off;
    const char *dot = memchr(start, '.', len - *off);
    size_t n = dot ? (size_t)(dot - start) : len - *off;
    *tok = start;
    *toklen = n;
    *off += n + 1;      /* past the dot; len + 1 after the last token */
    return true;
}

/* Shared by both validators: wildcards says whether `*` and `>` tokens
 * are allowed.  One pass over the bytes: tokens are split on '.', none
 * empty; a literal token is bytes 0x21-0x7e but '.', '*' and '>'; a
 * wildcard token is exactly "*", or ">" as the last token. */
static bool topic_check(const char *t, size_t len, bool wildcards)
{
    size_t tok = 0;             /* bytes of the current token so far */

    if (len == 0 || len > BK_MAX_TOPIC)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        bool last = i + 1 == len;

        if (c == '.') {
            if (tok == 0)
                return false;
            tok = 0;
            continue;
        }
        if (c == '*' || c == '>') {
            if (!wildcards || tok != 0 || (!last && t[i + 1] != '.') ||
                (c == '>' && !last))
                return false;
            tok = 1;
            continue;
        }
        if (!topic_literal_byte(c))
            return false;
        tok++;
    }
    return tok != 0;
}

bool bk_topic_valid(const char *t, size_t len)
{
    return topic_check(t, len, false);
}

bool bk_topic_pattern_valid(const char *p, size_t len)
{
    return topic_check(p, len, true);
}

/* The `$` rule: a leading wildcard never matches a leading `$` token. */
static bool topic_dollar_blocked(const char *pat, size_t plen,
                                 const char *t, size_t tlen)
{
    if (tlen == 0 || t[0] != '$' || plen == 0)
        return false;
    return (pat[0] == '*' || pat[0] == '>') &&
           (plen == 1 || pat[1] == '.');
}

bool bk_topic_match(const char *pat, size_t plen, const char *t,
                    size_t tlen)
{
    if (topic_dollar_blocked(pat, plen, t, tlen))
        return false;
    size_t po = 0, to = 0, pn, tn;
    const char *ptok, *ttok;
    for (;;) {
        bool hp = bk_topic_next_token(pat, plen, &po, &ptok, &pn);
        bool ht = bk_topic_next_token(t, tlen, &to, &ttok, &tn);
        if (!hp || !ht)
            return hp == ht;
        if (topic_is_tail(ptok, pn))
            return true;        /* at least one topic token is left */
        if (topic_is_star(ptok, pn))
            continue;
        if (pn != tn || memcmp(ptok, ttok, pn) != 0)
            return false;
    }
}

/* Whether the first token of a pattern is a wildcard. */
static bool topic_leading_wild(const char *p, size_t len)
{
    return len > 0 && (p[0] == '*' || p[0] == '>') &&
           (len == 1 || p[1] == '.');
}

/*
 * rule covers sub when every topic sub matches is matched by rule.  Token
 * by token: a rule `>` takes any non-empty rest; a rule `*` takes any one
 * sub token other than `>` (sub `>` may stand for several); a rule literal
 * needs the same literal.  The `$` rule: if the rule starts with a
 * wildcard it misses `$` topics, so sub must not be able to reach them:
 * sub's first token must then be a literal (a literal starting with `$`
 * is not covered either, as rule cannot match it), or a wildcard (which
 * itself never matches `$` topics).
 */
bool bk_topic_covers(const char *rule, size_t rlen, const char *sub,
                     size_t slen)
{
    if (topic_leading_wild(rule, rlen) && slen > 0 && sub[0] == '$')
        return false;
    size_t ro = 0, so = 0, rn, sn;
    const char *rtok, *stok;
    for (;;) {
        bool hr = bk_topic_next_token(rule, rlen, &ro, &rtok, &rn);
        bool hs = bk_topic_next_token(sub, slen, &so, &stok, &sn);
        if (!hr || !hs)
            return hr == hs;
        if (topic_is_tail(rtok, rn))
            return true;
        if (topic_is_tail(stok, sn))
            return false;       /* sub may go deeper than rule */
        if (topic_is_star(rtok, rn))
            continue;
        if (topic_is_star(stok, sn))
            return false;       /* rule literal, sub any token */
        if (rn != sn || memcmp(rtok, stok, rn) != 0)
            return false;
    }
}

bool bk_topic_reserved(const char *t, size_t len)
{
    size_t n = sizeof BK_TOPIC_RESERVED - 1;
    return len >= n && memcmp(t, BK_TOPIC_RESERVED, n) == 0 &&
           (len == n || t[n] == '.');
}
