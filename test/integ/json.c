/*
 * json.c - a small strict reader for what `brokerctl --json` prints.
 *
 * A recursive-descent parser over the text: each parse_* function reads
 * one piece at j->p, advances past it and returns false if the text there
 * is not that piece.  Strings are copied (decoded) into memory of their
 * own, so a parsed document does not refer to the text.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

typedef struct jparse {
    const char *p;          /* the next character to read */
    unsigned flags;         /* TH_JSON_* */
} jparse_t;

static void skip_ws(jparse_t *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
        j->p++;
}

/* Take the character c (after white space) if it is next. */
static bool take(jparse_t *j, char c)
{
    skip_ws(j);
    if (*j->p != c)
        return false;
    j->p++;
    return true;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);

    TH_CHECK(p != NULL, "out of memory");
    return p;
}

/* The character an escape stands for (after the backslash), or -1.  A
 * \uXXXX escape reads as '?': brokerctl's output needs no more. */
static int parse_escape(jparse_t *j)
{
    char c = *j->p++;

    switch (c) {
    case '"': case '\\': case '/': return c;
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'u':
        for (int i = 0; i < 4; i++)
            if (!isxdigit((unsigned char)*j->p++))
                return -1;
        return '?';
    }
    return -1;
}

/* The length of the string text at p (just after its opening quote) up to
 * its closing quote or the end of the text: enough room for it decoded. */
static size_t raw_str_len(const char *p)
{
    const char *q = p;

    while (*q && *q != '"')
        q += (q[0] == '\\' && q[1]) ? 2 : 1;
    return (size_t)(q - p);
}

/* A string, decoded into *out (malloc'd).  No control characters; with
 * TH_JSON_PLAIN no escapes either. */
static bool parse_str(jparse_t *j, char **out)
{
    char *s;
    size_t n = 0;

    if (*j->p != '"')
        return false;
    j->p++;
    s = xmalloc(raw_str_len(j->p) + 1);
    while (*j->p != '"') {
        int c = (unsigned char)*j->p++;
        if (c < 0x20)                   /* NUL included: unterminated */
            goto bad;
        if (c == '\\' &&
            ((j->flags & TH_JSON_PLAIN) || (c = parse_escape(j)) < 0))
            goto bad;
        s[n++] = (char)c;
    }
    j->p++;
    s[n] = '\0';
    *out = s;
    return true;
bad:
    free(s);
    return false;
}

/* A number: -?(0|[1-9][0-9]*)(.[0-9]+)?, copied as written into *out.
 * With TH_JSON_PLAIN only the unsigned integers. */
static bool parse_num(jparse_t *j, char **out)
{
    const char *s = j->p;
    bool plain = j->flags & TH_JSON_PLAIN;

    if (*j->p == '-' && !plain)
        j->p++;
    if (*j->p == '0')
        j->p++;
    else if (*j->p >= '1' && *j->p <= '9')
        while (isdigit((unsigned char)*j->p))
            j->p++;
    else
        return false;
    if (*j->p == '.' && !plain) {
        j->p++;
        if (!isdigit((unsigned char)*j->p))
            return false;
        while (isdigit((unsigned char)*j->p))
            j->p++;
    }
    *out = strndup(s, (size_t)(j->p - s));
    TH_CHECK(*out != NULL, "out of memory");
    return true;
}

/* Append s to the list m: m->val holds its strings joined by ','. */
static void list_add(th_json_member_t *m, const char *s)
{
    size_t len = strlen(m->val), add = strlen(s);
    char *v = realloc(m->val, len + 1 + add + 1);

    TH_CHECK(v != NULL, "out of memory");
    sprintf(v + len, "%s%s", m->count ? "," : "", s);
    m->val = v;
    m->count++;
}

/* An array of strings, into m->val and m->count. */
static bool parse_list(jparse_t *j, th_json_member_t *m)
{
    j->p++;                             /* the '[' */
    m->val = xmalloc(1);
    m->val[0] = '\0';
    if (take(j, ']'))
        return true;
    do {
        char *s;
        skip_ws(j);
        if (!parse_str(j, &s))
            return false;
        list_add(m, s);
        free(s);
    } while (take(j, ','));
    return take(j, ']');
}

/* A member's value: a string, a number or (TH_JSON_LISTS) a list. */
static bool parse_value(jparse_t *j, th_json_member_t *m)
{
    skip_ws(j);
    if (*j->p == '"') {
        m->type = TH_JSON_STR;
        return parse_str(j, &m->val);
    }
    if (*j->p == '[' && (j->flags & TH_JSON_LISTS)) {
        m->type = TH_JSON_LIST;
        return parse_list(j, m);
    }
    m->type = TH_JSON_NUM;
    return parse_num(j, &m->val);
}

/* One member, "key": value, appended to o. */
static bool parse_member(jparse_t *j, th_json_obj_t *o)
{
    th_json_member_t *m;

    o->m = realloc(o->m, (size_t)(o->n + 1) * sizeof(*o->m));
    TH_CHECK(o->m != NULL, "out of memory");
    m = &o->m[o->n++];
    memset(m, 0, sizeof(*m));
    skip_ws(j);
    return parse_str(j, &m->key) && take(j, ':') && parse_value(j, m);
}

/* {"key": value, ...} into *o (which the caller frees, also on failure). */
static bool parse_object(jparse_t *j, th_json_obj_t *o)
{
    memset(o, 0, sizeof(*o));
    if (!take(j, '{'))
        return false;
    if (take(j, '}'))
        return true;
    do {
        if (!parse_member(j, o))
            return false;
    } while (take(j, ','));
    return take(j, '}');
}

/* Only white space is left. */
static bool at_end(jparse_t *j)
{
    skip_ws(j);
    return *j->p == '\0';
}

int th_json_object(const char *text, unsigned flags, th_json_obj_t *o)
{
    jparse_t j = { text, flags };

    if (parse_object(&j, o) && at_end(&j))
        return o->n;
    th_json_obj_free(o);
    return -1;
}

int th_json_array(const char *text, unsigned flags, th_json_obj_t **out)
{
    jparse_t j = { text, flags };
    th_json_obj_t *a = NULL;
    int n = 0;
    bool ok;

    *out = NULL;
    if (!take(&j, '['))
        return -1;
    ok = take(&j, ']');
    if (!ok) {
        do {
            a = realloc(a, (size_t)(n + 1) * sizeof(*a));
            TH_CHECK(a != NULL, "out of memory");
            ok = parse_object(&j, &a[n++]);
        } while (ok && take(&j, ','));
        ok = ok && take(&j, ']');
    }
    if (!ok || !at_end(&j)) {
        th_json_array_free(a, n);
        return -1;
    }
    *out = a;
    return n;
}

void th_json_obj_free(th_json_obj_t *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->m[i].key);
        free(o->m[i].val);
    }
    free(o->m);
    o->m = NULL;
    o->n = 0;
}

void th_json_array_free(th_json_obj_t *a, int n)
{
    for (int i = 0; i < n; i++)
        th_json_obj_free(&a[i]);
    free(a);
}

/* ---- reading a parsed document ------------------------------------------ */

const th_json_member_t *th_json_get(const th_json_obj_t *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->m[i].key, key))
            return &o->m[i];
    return NULL;
}

const char *th_json_str(const th_json_obj_t *o, const char *key)
{
    const th_json_member_t *m = th_json_get(o, key);

    TH_CHECK(m != NULL, "no key \"%s\"", key);
    return m->val;
}

/* A number member that is an unsigned integer. */
static bool is_u64(const th_json_member_t *m)
{
    return m->type == TH_JSON_NUM && m->val[0] != '-' && !strchr(m->val, '.');
}

unsigned long long th_json_u64(const th_json_obj_t *o, const char *key)
{
    const th_json_member_t *m = th_json_get(o, key);

    TH_CHECK(m != NULL, "no key \"%s\"", key);
    TH_CHECK(is_u64(m), "\"%s\" is not an unsigned number: %s", key, m->val);
    return strtoull(m->val, NULL, 10);
}

const th_json_obj_t *th_json_find(const th_json_obj_t *a, int n,
                                  const char *key, unsigned long long v)
{
    for (int i = 0; i < n; i++) {
        const th_json_member_t *m = th_json_get(&a[i], key);
        if (m && m->type == TH_JSON_NUM && strtoull(m->val, NULL, 10) == v)
            return &a[i];
    }
    return NULL;
}
