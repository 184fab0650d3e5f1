/*
 * record.c - the broker's listing and status text, read in place
 * (prefix ctl_rec_).
 *
 * Owns nothing: the parsers cut the caller's text into pieces with NUL
 * bytes and point at them, so the text must live as long as the keys,
 * values and records made from it.  Only ctl_rec_parse's record array
 * and ctl_rec_unescape's strings are allocated, and the caller frees
 * them.
 *
 * A listing is one record a line, "key=value" fields separated by
 * spaces, values percent-escaped; STATUS is one "key=value" a line.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

size_t ctl_rec_status(char *text, char **keys, char **vals, size_t max)
{
    size_t n = 0;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq || eq == line)
            continue;
        *eq = '\0';
        keys[n] = line;
        vals[n] = eq + 1;
        n++;
    }
    return n;
}

/* The space-separated key=value fields of one line into r. */
static void ctl_rec_fields(char *line, ctl_rec_t *r)
{
    char *save = NULL;

    r->n = 0;
    for (char *f = strtok_r(line, " ", &save);
         f && r->n < CTL_REC_MAX_KEYS; f = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(f, '=');
        if (!eq || eq == f)
            continue;
        *eq = '\0';
        r->keys[r->n] = f;
        r->vals[r->n++] = eq + 1;
    }
}

ssize_t ctl_rec_parse(char *text, ctl_rec_t **out)
{
    ctl_rec_t *recs = NULL;
    size_t n = 0, cap = 0;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (n == cap) {
            ctl_rec_t *t = realloc(recs, (cap = cap ? cap * 2 : 64) *
                                   sizeof(*recs));
            if (!t) {
                free(recs);
                return -ENOMEM;
            }
            recs = t;
        }
        ctl_rec_fields(line, &recs[n++]);
    }
    *out = recs;
    return (ssize_t)n;
}

const char *ctl_rec_get(const ctl_rec_t *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->keys[i], key))
            return r->vals[i];
    return NULL;
}

bool ctl_rec_is_num(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

uint64_t ctl_rec_u64(const char *s)
{
    return s && ctl_rec_is_num(s) ? strtoull(s, NULL, 10) : 0;
}

static int ctl_rec_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

char *ctl_rec_unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1), *d = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n &&
            (hi = ctl_rec_hexval(s[i + 1])) >= 0 &&
            (lo = ctl_rec_hexval(s[i + 2])) >= 0) {
            *d++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *d++ = s[i];
        }
    }
    *d = '\0';
    return out;
}

/* ---- order -------------------------------------------------------------- */

int ctl_rec_cmp(const ctl_rec_t *a, const ctl_rec_t *b,
                const ctl_rec_order_t *ord)
{
    const char *x = ctl_rec_get(a, ord->key);
    const char *y = ctl_rec_get(b, ord->key);
    int c;

    if (!x || !y)
        return !x - !y;
    if (ctl_rec_is_num(x) && ctl_rec_is_num(y)) {
        unsigned long long u = strtoull(x, NULL, 10);
        unsigned long long v = strtoull(y, NULL, 10);
        c = (u > v) - (u < v);
        return ord->desc ? -c : c;
    }
    return strcmp(x, y);
}

static int ctl_rec_qcmp(const void *a, const void *b, void *ord)
{
    return ctl_rec_cmp(a, b, ord);
}

void ctl_rec_sort(ctl_rec_t *recs, size_t n, const ctl_rec_order_t *ord)
{
    if (n > 1)
        qsort_r(recs, n, sizeof(*recs), ctl_rec_qcmp, (void *)ord);
}
