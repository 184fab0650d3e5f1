/*
 * test_topic.c - topic and pattern grammar, matching with the `$` rule,
 * covers() for access rules, the reserved prefix, token iteration.
 */
#include <stdio.h>
#include <string.h>
#include <criterion/criterion.h>
#include "proto.h"
#include "topic.h"

#define S(x) x, sizeof(x) - 1

typedef struct { const char *s; bool topic, pattern; } valid_case;

static const valid_case valid_cases[] = {
    { "a", true, true },
    { "sensors.kitchen.temp", true, true },
    { "$broker.names", true, true },
    { "x-1.y_2:z/3", true, true },
    { "~!@#$%^&()", true, true },
    { "*", false, true },
    { ">", false, true },
    { "a.*", false, true },
    { "a.>", false, true },
    { "*.b", false, true },
    { "*.*.>", false, true },
    { "$broker.*", false, true },
    { "", false, false },
    { ".", false, false },
    { ".a", false, false },
    { "a.", false, false },
    { "a..b", false, false },
    { "a b", false, false },
    { " a", false, false },
    { "a*", false, false },
    { "a.b*", false, false },
    { "*a", false, false },
    { ">b", false, false },
    { "a>", false, false },
    { "a.>.b", false, false },
    { ">.a", false, false },
    { "**", false, false },
    { ">>", false, false },
    { "a.>.", false, false },
    { "a.*.", false, false },
    { "a\tb", false, false },
    { "a\x7f", false, false },
    { "a\x80", false, false },
    { "\x01", false, false },
};

Test(topic, validity_table)
{
    for (size_t i = 0; i < sizeof valid_cases / sizeof *valid_cases; i++) {
        const valid_case *c = &valid_cases[i];
        size_t n = strlen(c->s);
        cr_expect_eq(bk_topic_valid(c->s, n), c->topic, "topic '%s'", c->s);
        cr_expect_eq(bk_topic_pattern_valid(c->s, n), c->pattern,
                     "pattern '%s'", c->s);
    }
}

Test(topic, nul_byte_is_invalid)
{
    cr_expect_not(bk_topic_valid("a\0b", 3));
    cr_expect_not(bk_topic_pattern_valid("a\0b", 3));
}

Test(topic, every_byte_value)
{
    for (int c = 0; c < 256; c++) {
        char t[3] = { 'a', (char)c, 'b' };
        bool want = c >= 0x21 && c <= 0x7e && c != '*' && c != '>';
        /* '.' is a separator: "a.b" is a valid two-token topic. */
        cr_expect_eq(bk_topic_valid(t, 3), want, "byte 0x%02x", c);
        cr_expect_eq(bk_topic_pattern_valid(t, 3), want, "byte 0x%02x", c);
    }
}

Test(topic, length_limits)
{
    char buf[BK_MAX_TOPIC + 2];
    memset(buf, 'x', sizeof buf);
    cr_expect(bk_topic_valid(buf, BK_MAX_TOPIC));
    cr_expect_not(bk_topic_valid(buf, BK_MAX_TOPIC + 1));
    cr_expect(bk_topic_pattern_valid(buf, BK_MAX_TOPIC));
    cr_expect_not(bk_topic_pattern_valid(buf, BK_MAX_TOPIC + 1));
    /* 255 bytes made of 128 one-byte tokens, with a trailing `>`. */
    for (size_t i = 0; i < BK_MAX_TOPIC; i++)
        buf[i] = i % 2 ? '.' : 'a';
    buf[BK_MAX_TOPIC - 1] = '>';
    cr_expect(bk_topic_pattern_valid(buf, BK_MAX_TOPIC));
    cr_expect_not(bk_topic_valid(buf, BK_MAX_TOPIC));
    cr_expect_not(bk_topic_valid(NULL, 0));
}

typedef struct { const char *pat, *topic; bool match; } match_case;

static const match_case match_cases[] = {
    { "a", "a", true },
    { "a", "b", false },
    { "a", "a.b", false },
    { "a.b", "a", false },
    { "a.b", "a.b", true },
    { "a.b", "a.bc", false },
    { "a.bc", "a.b", false },
    { ">", "a", true },
    { ">", "a.b.c", true },
    { "*", "a", true },
    { "*", "a.b", false },
    { "a.>", "a", false },
    { "a.>", "a.b", true },
    { "a.>", "a.b.c", true },
    { "a.>", "b.c", false },
    { "a.*", "a.b", true },
    { "a.*", "a.b.c", false },
    { "a.*", "a", false },
    { "*.b", "x.b", true },
    { "*.b", "x.c", false },
    { "*.b", "b", false },
    { "a.*.c", "a.x.c", true },
    { "a.*.c", "a.x.d", false },
    { "*.*", "a.b", true },
    { "*.>", "a", false },
    { "*.>", "a.b", true },
    /* The `$` rule. */
    { ">", "$broker.names", false },
    { "*", "$x", false },
    { "*.names", "$broker.names", false },
    { "*.>", "$broker.names", false },
    { "$broker.names", "$broker.names", true },
    { "$broker.*", "$broker.names", true },
    { "$broker.>", "$broker.names", true },
    { "$broker.>", "$broker", false },
    { "a.>", "a.$b", true },    /* only the first token counts */
    { "a.*", "a.$b", true },
    { ">", "x$", true },
    { "*", "x$", true },
};

Test(topic, match_table)
{
    for (size_t i = 0; i < sizeof match_cases / sizeof *match_cases; i++) {
        const match_case *c = &match_cases[i];
        cr_assert(bk_topic_pattern_valid(c->pat, strlen(c->pat)), "%s",
                  c->pat);
        cr_assert(bk_topic_valid(c->topic, strlen(c->topic)), "%s",
                  c->topic);
        cr_expect_eq(bk_topic_match(c->pat, strlen(c->pat), c->topic,
                                    strlen(c->topic)), c->match,
                     "'%s' vs '%s'", c->pat, c->topic);
    }
}

Test(topic, match_long_topics)
{
    char t[BK_MAX_TOPIC], p[BK_MAX_TOPIC];
    for (size_t i = 0; i < BK_MAX_TOPIC; i++)
        t[i] = i % 2 ? '.' : 'q';
    memcpy(p, t, BK_MAX_TOPIC);
    cr_expect(bk_topic_match(p, BK_MAX_TOPIC, t, BK_MAX_TOPIC));
    p[BK_MAX_TOPIC - 1] = '*';
    cr_expect(bk_topic_match(p, BK_MAX_TOPIC, t, BK_MAX_TOPIC));
    p[BK_MAX_TOPIC - 1] = '>';
    cr_expect(bk_topic_match(p, BK_MAX_TOPIC, t, BK_MAX_TOPIC));
    cr_expect_not(bk_topic_match(p, BK_MAX_TOPIC, t, BK_MAX_TOPIC - 2));
}

typedef struct { const char *rule, *sub; bool covers; } covers_case;

static const covers_case covers_cases[] = {
    { ">", "a", true },
    { ">", "a.*.c", true },
    { ">", "*", true },
    { ">", ">", true },
    { ">", "*.>", true },
    { ">", "$broker.names", false },
    { ">", "$broker.>", false },
    { "*", "a", true },
    { "*", "*", true },
    { "*", ">", false },
    { "*", "a.b", false },
    { "*", "$x", false },
    { "a.>", "a.b", true },
    { "a.>", "a.*.c", true },
    { "a.>", "a.*", true },
    { "a.>", "a.>", true },
    { "a.>", "a", false },
    { "a.>", ">", false },
    { "a.>", "*.b", false },
    { "a.*", "a.b", true },
    { "a.*", "a.*", true },
    { "a.*", "a.>", false },
    { "a.*", "a.b.c", false },
    { "*.b", "x.b", true },
    { "*.b", "*.b", true },
    { "*.b", "x.c", false },
    { "*.b", "x.>", false },
    { "*.>", ">", false },      /* ">" matches one-token topics too */
    { "*.>", "*.>", true },
    { "*.>", "a.b.c", true },
    { "a", "a", true },
    { "a", "*", false },
    { "a", "a.b", false },
    { "a.b", "a", false },
    { "$broker.>", "$broker.names", true },
    { "$broker.>", "$broker.*", true },
    { "$broker.*", "$broker.>", false },
    { "$broker.names", "$broker.names", true },
    { "$broker.names", "$broker.*", false },
    { "*.names", "$broker.names", false },
};

Test(topic, covers_table)
{
    for (size_t i = 0; i < sizeof covers_cases / sizeof *covers_cases; i++) {
        const covers_case *c = &covers_cases[i];
        cr_expect_eq(bk_topic_covers(c->rule, strlen(c->rule), c->sub,
                                     strlen(c->sub)), c->covers,
                     "'%s' covers '%s'", c->rule, c->sub);
    }
}

/* covers(rule, sub) means: every topic sub matches, rule matches.  Check
 * that over every topic of up to 3 tokens from a small alphabet, for
 * every pattern of up to 3 tokens from the same alphabet plus wildcards. */
static const char *const alpha[] = { "a", "b", "$c", "*", ">" };
#define NALPHA 5

static size_t build(char *out, const int *tok, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (i)
            out[len++] = '.';
        size_t l = strlen(alpha[tok[i]]);
        memcpy(out + len, alpha[tok[i]], l);
        len += l;
    }
    return len;
}

typedef struct { char s[16]; size_t len; } str_t;

static size_t all_strings(str_t *out, bool patterns)
{
    size_t n = 0;
    int tok[3];
    for (int depth = 1; depth <= 3; depth++) {
        int total = 1;
        for (int i = 0; i < depth; i++)
            total *= NALPHA;
        for (int k = 0; k < total; k++) {
            int v = k;
            for (int i = 0; i < depth; i++, v /= NALPHA)
                tok[i] = v % NALPHA;
            size_t len = build(out[n].s, tok, depth);
            bool ok = patterns ? bk_topic_pattern_valid(out[n].s, len)
                               : bk_topic_valid(out[n].s, len);
            if (ok)
                out[n++].len = len;
        }
    }
    return n;
}

Test(topic, covers_agrees_with_match_exhaustively)
{
    static str_t pats[200], topics[200];
    size_t np = all_strings(pats, true), nt = all_strings(topics, false);
    cr_assert_gt(np, 50);
    cr_assert_gt(nt, 20);
    /* Topics of up to 3 tokens suffice, except that a `>` in sub can
     * reach deeper than any rule of up to 3 tokens; a rule that covers
     * sub must then end in `>` too, which the walk also tests with
     * 4-token topics below. */
    for (size_t r = 0; r < np; r++)
        for (size_t s = 0; s < np; s++) {
            bool want = true;
            for (size_t t = 0; t < nt && want; t++)
                if (bk_topic_match(pats[s].s, pats[s].len, topics[t].s,
                                   topics[t].len) &&
                    !bk_topic_match(pats[r].s, pats[r].len, topics[t].s,
                                    topics[t].len))
                    want = false;
            char deep[32];
            for (size_t t = 0; t < nt && want; t++) {
                int l = snprintf(deep, sizeof deep, "%.*s.a",
                                 (int)topics[t].len, topics[t].s);
                if (bk_topic_match(pats[s].s, pats[s].len, deep, (size_t)l)
                    && !bk_topic_match(pats[r].s, pats[r].len, deep,
                                       (size_t)l))
                    want = false;
            }
            cr_expect_eq(bk_topic_covers(pats[r].s, pats[r].len, pats[s].s,
                                         pats[s].len), want,
                         "'%s' covers '%s'", pats[r].s, pats[s].s);
        }
}

Test(topic, reserved)
{
    cr_expect(bk_topic_reserved(S("$broker")));
    cr_expect(bk_topic_reserved(S("$broker.names")));
    cr_expect(bk_topic_reserved(S("$broker.x.y")));
    cr_expect_not(bk_topic_reserved(S("$brokerx")));
    cr_expect_not(bk_topic_reserved(S("$broke")));
    cr_expect_not(bk_topic_reserved(S("broker.names")));
    cr_expect_not(bk_topic_reserved(S("a.$broker")));
    cr_expect_not(bk_topic_reserved(S("$other.names")));
    cr_expect_not(bk_topic_reserved("", 0));
    cr_expect_eq(strcmp(BK_TOPIC_NAMES, "$broker.names"), 0);
    cr_expect_eq(strcmp(BK_TOPIC_CLIENTS, "$broker.clients"), 0);
}

/* Collect the tokens of s as "tok|tok|..." */
static void tokens(const char *s, size_t len, char *out)
{
    size_t off = 0, n;
    const char *tok;
    out[0] = '\0';
    while (bk_topic_next_token(s, len, &off, &tok, &n)) {
        strcat(out, "[");
        strncat(out, tok, n);
        strcat(out, "]");
    }
}

Test(topic, token_iteration)
{
    char out[64];
    tokens(S("a"), out);
    cr_expect_str_eq(out, "[a]");
    tokens(S("sensors.kitchen.temp"), out);
    cr_expect_str_eq(out, "[sensors][kitchen][temp]");
    tokens(S("a.*.>"), out);
    cr_expect_str_eq(out, "[a][*][>]");
    tokens("", 0, out);
    cr_expect_str_eq(out, "");
    /* Empty tokens show, so validators can refuse them. */
    tokens(S("a..b"), out);
    cr_expect_str_eq(out, "[a][][b]");
    tokens(S(".a"), out);
    cr_expect_str_eq(out, "[][a]");
    tokens(S("a."), out);
    cr_expect_str_eq(out, "[a][]");
    tokens(S("."), out);
    cr_expect_str_eq(out, "[][]");
    /* Only the given length counts. */
    tokens("a.b.c", 3, out);
    cr_expect_str_eq(out, "[a][b]");
}
