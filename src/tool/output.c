/*
 * output.c - tables and JSON on stdout (prefix ctl_out_).
 *
 * Owns nothing beyond the call: values are unescaped into temporary
 * strings freed before each function returns.  The records printed are
 * those of record.c; which listing keys are text and which are lists is
 * decided here, because only the output treats them differently.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

/* Listing keys whose values are text (JSON strings, left-aligned). */
static bool ctl_out_key_is_text(const char *key)
{
    static const char *const text[] = {
        "comm", "name", "pattern", "group", "policy", "flags",
    };

    for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
        if (!strcmp(key, text[i]))
            return true;
    return false;
}

/* The listing keys whose values are comma-separated lists (JSON arrays
 * of strings). */
static bool ctl_out_key_is_list(const char *key)
{
    return !strcmp(key, "names") || !strcmp(key, "queue");
}

/* ---- JSON --------------------------------------------------------------- */

/* A value made only of digits is printed as a JSON number (one with a
 * leading zero would not be valid JSON and stays a string). */
static bool ctl_out_is_json_int(const char *s)
{
    return ctl_rec_is_num(s) && !(s[0] == '0' && s[1]);
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t ctl_out_utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;

    if (p[0] < 0xc2 || p[0] > 0xf4)
        return 0;
    len = p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
    if (len > n)
        return 0;
    cp = p[0] & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void ctl_out_json_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);

    fputc('"', f);
    for (size_t i = 0; i < n; ) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else if (c >= 0x80) {
            size_t k = ctl_out_utf8_len(p + i, n - i);
            if (k == 0) {
                fputs("\\ufffd", f);
                i++;
                continue;
            }
            fwrite(p + i, 1, k, f);
            i += k;
            continue;
        } else {
            fputc(c, f);
        }
        i++;
    }
    fputc('"', f);
}

/* n bytes of raw, unescaped, as a JSON string. */
static void ctl_out_json_raw(const char *raw, size_t n)
{
    char *v = ctl_rec_unescape(raw, n);

    ctl_out_json_string(stdout, v ? v : "");
    free(v);
}

/* A comma-separated list as a JSON array of strings. */
static void ctl_out_json_list(const char *raw)
{
    const char *p = raw;

    putchar('[');
    for (bool first = true; *raw; first = false) {
        size_t len = strcspn(p, ",");
        if (!first)
            putchar(',');
        ctl_out_json_raw(p, len);
        if (!p[len])
            break;
        p += len + 1;
    }
    putchar(']');
}

static void ctl_out_json_value(const char *key, const char *raw)
{
    char *v;

    if (ctl_out_key_is_list(key)) {
        ctl_out_json_list(raw);
        return;
    }
    v = ctl_rec_unescape(raw, strlen(raw));
    if (!ctl_out_key_is_text(key) && v && ctl_out_is_json_int(v))
        fputs(v, stdout);
    else
        ctl_out_json_string(stdout, v ? v : "");
    free(v);
}

/* "key": in the mode's layout, after a ',' unless first. */
static void ctl_out_json_key(const char *key, bool first, const char *indent,
                             int mode)
{
    bool pretty = mode == CTL_JSON_PRETTY;

    fputs(first ? "" : ",", stdout);
    if (pretty)
        fputs(indent, stdout);
    ctl_out_json_string(stdout, key);
    fputs(pretty ? ": " : ":", stdout);
}

void ctl_out_json_pairs(char *const *keys, char *const *vals, size_t n,
                        int mode)
{
    putchar('{');
    for (size_t i = 0; i < n; i++) {
        ctl_out_json_key(keys[i], i == 0, "\n  ", mode);
        if (ctl_out_is_json_int(vals[i]))
            fputs(vals[i], stdout);
        else
            ctl_out_json_string(stdout, vals[i]);
    }
    puts(mode == CTL_JSON_PRETTY && n ? "\n}" : "}");
}

void ctl_out_json_records(const ctl_rec_t *recs, size_t n, int mode)
{
    bool pretty = mode == CTL_JSON_PRETTY;

    putchar('[');
    for (size_t i = 0; i < n; i++) {
        fputs(i ? "," : "", stdout);
        fputs(pretty ? "\n  {" : "{", stdout);
        for (size_t j = 0; j < recs[i].n; j++) {
            ctl_out_json_key(recs[i].keys[j], j == 0, "\n    ", mode);
            ctl_out_json_value(recs[i].keys[j], recs[i].vals[j]);
        }
        fputs(pretty && recs[i].n ? "\n  }" : "}", stdout);
    }
    puts(pretty && n ? "\n]" : "]");
}

/* ---- text --------------------------------------------------------------- */

void ctl_out_pairs(char *const *keys, char *const *vals, size_t n)
{
    int width = 0;

    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(keys[i]);
        if (k > (size_t)width)
            width = k > 64 ? 64 : (int)k;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s:%*s %s\n", keys[i], width - (int)strlen(keys[i]), "",
               vals[i]);
}

/* Display form of a value: unescaped, control bytes shown as '?'.  The
 * caller frees it (NULL on no memory). */
static char *ctl_out_cell_text(const char *raw)
{
    char *v = ctl_rec_unescape(raw ? raw : "", raw ? strlen(raw) : 0);

    for (char *p = v; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return v;
}

/* The layout of a table: per column its width and whether it is a
 * number (right-aligned). */
typedef struct ctl_out_layout {
    size_t ncols;
    size_t width[CTL_REC_MAX_KEYS];
    bool num[CTL_REC_MAX_KEYS];
} ctl_out_layout_t;

static void ctl_out_measure(ctl_out_layout_t *t, const char *const *cols,
                            const ctl_rec_t *recs, size_t n, bool legend)
{
    t->ncols = 0;
    while (cols[t->ncols])
        t->ncols++;
    for (size_t c = 0; c < t->ncols; c++) {
        t->width[c] = legend ? strlen(cols[c]) : 0;
        t->num[c] = !ctl_out_key_is_text(cols[c]) &&
                    !ctl_out_key_is_list(cols[c]);
        for (size_t i = 0; i < n; i++) {
            char *v = ctl_out_cell_text(ctl_rec_get(&recs[i], cols[c]));
            size_t w = v ? strlen(v) : 0;
            free(v);
            if (w > t->width[c])
                t->width[c] = w;
        }
    }
}

/* One cell of column c, padded (the last text column is not). */
static void ctl_out_cell(const ctl_out_layout_t *t, size_t c,
                         const char *text)
{
    printf(t->num[c] ? "%s%*s" : "%s%-*s", c ? "  " : "",
           c + 1 == t->ncols && !t->num[c] ? 0 : (int)t->width[c], text);
}

/* The header line: column names in capitals, bold on a terminal. */
static void ctl_out_legend(const ctl_out_layout_t *t, const char *const *cols)
{
    bool tty = isatty(STDOUT_FILENO);

    fputs(tty ? "\033[1m" : "", stdout);
    for (size_t c = 0; c < t->ncols; c++) {
        char head[64];
        size_t j = 0;
        for (; cols[c][j] && j < sizeof(head) - 1; j++)
            head[j] = (char)(cols[c][j] >= 'a' && cols[c][j] <= 'z'
                             ? cols[c][j] - 'a' + 'A' : cols[c][j]);
        head[j] = '\0';
        ctl_out_cell(t, c, head);
    }
    fputs(tty ? "\033[0m\n" : "\n", stdout);
}

void ctl_out_table(const char *const *cols, const ctl_rec_t *recs,
                   size_t n, bool legend)
{
    ctl_out_layout_t t;

    ctl_out_measure(&t, cols, recs, n, legend);
    if (legend)
        ctl_out_legend(&t, cols);
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < t.ncols; c++) {
            char *v = ctl_out_cell_text(ctl_rec_get(&recs[i], cols[c]));
            ctl_out_cell(&t, c, v ? v : "");
            free(v);
        }
        putchar('\n');
    }
}
