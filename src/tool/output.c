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
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

/* Listing keys whose values are text (JSON strings, left-aligned). */
static bool ctl_out_key_is_text(const char *key)
{
    static const char *const text[] = {
        "comm", "name", "pattern", "group", "policy", "flags", "desc",
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

/* ---- human units -------------------------------------------------------- */

/* How the text output shows a key's values. */
typedef enum ctl_out_kind {
    CTL_OUT_PLAIN,      /* as the broker sent it */
    CTL_OUT_SIZE,       /* bytes: B, KiB, MiB, GiB, TiB */
    CTL_OUT_MS,         /* milliseconds: 850ms, 2.8s, 42s, 3m, 2h, 5d */
    CTL_OUT_USER,       /* a uid: the user's name */
    CTL_OUT_LIST,       /* a comma-separated list, cut with a count */
} ctl_out_kind_t;

static bool ctl_out_ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), k = strlen(tail);

    return n >= k && !strcmp(s + n - k, tail);
}

static ctl_out_kind_t ctl_out_kind(const char *key)
{
    static const char *const sizes[] = {
        "size", "max_shm", "max_packet", "max_msg", "queue_limit",
    };

    if (ctl_out_key_is_list(key))
        return CTL_OUT_LIST;
    if (!strcmp(key, "uid"))
        return CTL_OUT_USER;
    if (ctl_out_ends_with(key, "_ms"))
        return CTL_OUT_MS;
    if (strstr(key, "bytes"))
        return CTL_OUT_SIZE;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (!strcmp(key, sizes[i]))
            return CTL_OUT_SIZE;
    return CTL_OUT_PLAIN;
}

void ctl_out_size(char *buf, size_t len, uint64_t bytes)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)bytes;
    size_t k = 0;

    while (v >= 1024 && k + 1 < sizeof(unit) / sizeof(unit[0])) {
        v /= 1024;
        k++;
    }
    if (k == 0)
        snprintf(buf, len, "%" PRIu64 "B", bytes);
    else
        snprintf(buf, len, "%.*f%s", v < 9.95 ? 1 : 0, v, unit[k]);
}

void ctl_out_duration(char *buf, size_t len, uint64_t ms)
{
    if (ms < 1000)
        snprintf(buf, len, "%" PRIu64 "ms", ms);
    else if (ms < 10000)
        snprintf(buf, len, "%" PRIu64 ".%" PRIu64 "s", ms / 1000,
                 ms / 100 % 10);
    else if (ms < 60000)
        snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
    else if (ms < 3600000)
        snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
    else if (ms < 86400000)
        snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
    else
        snprintf(buf, len, "%" PRIu64 "d", ms / 86400000);
}

/* The user name of uid, or the number when it has none. */
static void ctl_out_user(char *buf, size_t len, const char *raw)
{
    struct passwd *pw = ctl_rec_is_num(raw) ?
                        getpwuid((uid_t)strtoul(raw, NULL, 10)) : NULL;

    snprintf(buf, len, "%s", pw ? pw->pw_name : raw);
}

/* Display form of n bytes of a raw value: unescaped, control bytes
 * shown as '?'.  The caller frees it (NULL on no memory). */
static char *ctl_out_text(const char *raw, size_t n)
{
    char *v = ctl_rec_unescape(raw, n);

    for (char *p = v; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return v;
}

static char *ctl_out_cell_text(const char *raw)
{
    return ctl_out_text(raw ? raw : "", raw ? strlen(raw) : 0);
}

/* Append to a growing string; false on no memory (it is then freed). */
typedef struct ctl_out_str {
    char *s;
    size_t len, cap;
} ctl_out_str_t;

static bool ctl_out_put(ctl_out_str_t *d, const char *s, size_t n)
{
    if (d->len + n + 1 > d->cap) {
        size_t cap = (d->len + n + 1) * 2;
        char *t = realloc(d->s, cap);
        if (!t) {
            free(d->s);
            d->s = NULL;
            return false;
        }
        d->s = t;
        d->cap = cap;
    }
    memcpy(d->s + d->len, s, n);
    d->len += n;
    d->s[d->len] = '\0';
    return true;
}

/* How many items a comma-separated list has. */
static size_t ctl_out_list_count(const char *raw)
{
    size_t n = *raw ? 1 : 0;

    for (; *raw; raw++)
        n += *raw == ',';
    return n;
}

/* Append item to d as the next of a list cut at budget bytes, if it
 * fits with the " +left" count that would follow it.  A first item too
 * long alone is cut with "...".  Returns 1 if it was added whole, 2 if
 * cut (the list ends), 0 if not added (the list ends), or -ENOMEM. */
static int ctl_out_list_add(ctl_out_str_t *d, const char *item, size_t left,
                            size_t budget)
{
    char tail[32];
    size_t len = strlen(item), sep = d->len ? 2 : 0;
    size_t tlen = left ? (size_t)snprintf(tail, sizeof(tail), " +%zu", left)
                       : 0;

    if (d->len + sep + len + tlen <= budget)
        return ctl_out_put(d, ", ", sep) && ctl_out_put(d, item, len) ?
               1 : -ENOMEM;
    if (d->len || budget < tlen + 3 + 4)
        return 0;
    return ctl_out_put(d, item, budget - tlen - 3) &&
           ctl_out_put(d, "...", 3) ? 2 : -ENOMEM;
}

/* A list shown as "a, b +N" in at most budget bytes: as many items as
 * fit, then how many are left out (more: those the broker left out
 * already).  The caller frees the result (NULL on no memory). */
static char *ctl_out_list(const char *raw, uint64_t more, size_t budget)
{
    size_t total = ctl_out_list_count(raw), shown = 0;
    ctl_out_str_t d = { 0 };
    char tail[32];
    int r = 1;

    if (!ctl_out_put(&d, "", 0))
        return NULL;
    for (const char *p = raw; r == 1 && shown < total; ) {
        size_t len = strcspn(p, ",");
        char *item = ctl_out_text(p, len);

        r = item ? ctl_out_list_add(&d, item, total - shown - 1 +
                                    (size_t)more, budget) : -ENOMEM;
        free(item);
        if (r < 0)
            return NULL;        /* d.s was freed */
        shown += r > 0;
        p += len + (p[len] == ',');
    }
    if (total - shown + more) {
        snprintf(tail, sizeof(tail), "%s+%zu", d.len ? " " : "",
                 total - shown + (size_t)more);
        if (!ctl_out_put(&d, tail, strlen(tail)))
            return NULL;
    }
    return d.s;
}

/* The text of key's raw value in rec for people: units, user names, a
 * cut list (in at most budget bytes).  The caller frees it (NULL on no
 * memory). */
static char *ctl_out_human(const ctl_rec_t *rec, const char *key,
                           const char *raw, size_t budget)
{
    char buf[64];

    if (!raw)
        raw = "";
    switch (ctl_out_kind(key)) {
    case CTL_OUT_LIST:
        return ctl_out_list(raw, rec && !strcmp(key, "names") ?
                            ctl_rec_u64(ctl_rec_get(rec, "names_more")) : 0,
                            budget);
    case CTL_OUT_SIZE:
        if (!ctl_rec_is_num(raw))
            break;
        ctl_out_size(buf, sizeof(buf), ctl_rec_u64(raw));
        return strdup(buf);
    case CTL_OUT_MS:
        if (!ctl_rec_is_num(raw))
            break;
        ctl_out_duration(buf, sizeof(buf), ctl_rec_u64(raw));
        return strdup(buf);
    case CTL_OUT_USER:
        ctl_out_user(buf, sizeof(buf), raw);
        return strdup(buf);
    case CTL_OUT_PLAIN:
        break;
    }
    return ctl_out_cell_text(raw);
}

/* The heading of a key's column (or its label in status): the key in
 * capitals, without a unit the values now carry. */
static void ctl_out_heading(char *buf, size_t len, const char *key,
                            bool upper)
{
    size_t n = strlen(key), j = 0;

    if (!strcmp(key, "queued_bytes"))
        n = strlen("queued");
    else if (ctl_out_ends_with(key, "_ms"))
        n -= 3;
    for (; j < n && j + 1 < len; j++)
        buf[j] = (char)(upper && key[j] >= 'a' && key[j] <= 'z' ?
                        key[j] - 'a' + 'A' : key[j]);
    buf[j] = '\0';
}

/* ---- text --------------------------------------------------------------- */

int ctl_out_status(char *text, int json)
{
    char *keys[CTL_REC_STATUS_MAX], *vals[CTL_REC_STATUS_MAX];
    size_t n = ctl_rec_status(text, keys, vals, CTL_REC_STATUS_MAX);

    if (json)
        ctl_out_json_pairs(keys, vals, n, json);
    else
        ctl_out_pairs(keys, vals, n);
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

void ctl_out_pairs(char *const *keys, char *const *vals, size_t n)
{
    char label[64];
    int width = 0;

    for (size_t i = 0; i < n; i++) {
        ctl_out_heading(label, sizeof(label), keys[i], false);
        if (strlen(label) > (size_t)width)
            width = (int)strlen(label);
    }
    for (size_t i = 0; i < n; i++) {
        char *v = ctl_out_human(NULL, keys[i], vals[i], CTL_OUT_LIST_WIDTH);
        ctl_out_heading(label, sizeof(label), keys[i], false);
        printf("%s:%*s %s\n", label, width - (int)strlen(label), "",
               v ? v : vals[i]);
        free(v);
    }
}

/* A table's cells for people, and per column its width and whether it
 * is a number (right-aligned).  cell[i * ncols + c]: row i, column c;
 * all owned, freed by ctl_out_layout_free. */
typedef struct ctl_out_layout {
    size_t ncols, nrows;
    size_t width[CTL_REC_MAX_KEYS];
    bool num[CTL_REC_MAX_KEYS];
    char head[CTL_REC_MAX_KEYS][64];
    char **cell;
} ctl_out_layout_t;

static void ctl_out_layout_free(ctl_out_layout_t *t)
{
    for (size_t i = 0; t->cell && i < t->nrows * t->ncols; i++)
        free(t->cell[i]);
    free(t->cell);
}

/* Fill in the cells of columns [from, to) with list cells cut at budget,
 * and their widths.  Returns 0 or -ENOMEM. */
static int ctl_out_fill(ctl_out_layout_t *t, const char *const *cols,
                        const ctl_rec_t *recs, size_t from, size_t to,
                        size_t budget)
{
    for (size_t c = from; c < to; c++) {
        for (size_t i = 0; i < t->nrows; i++) {
            char **v = &t->cell[i * t->ncols + c];
            *v = ctl_out_human(&recs[i], cols[c], ctl_rec_get(&recs[i],
                               cols[c]), budget);
            if (!*v)
                return -ENOMEM;
            if (strlen(*v) > t->width[c])
                t->width[c] = strlen(*v);
        }
    }
    return 0;
}

/* Measure and format: a last list column gets what width leaves of it
 * (0: no limit, lists get CTL_OUT_LIST_WIDTH).  0 or -ENOMEM. */
static int ctl_out_layout(ctl_out_layout_t *t, const char *const *cols,
                          const ctl_rec_t *recs, size_t n, bool legend,
                          size_t width)
{
    size_t last, used = 0;

    memset(t, 0, sizeof(*t));
    while (cols[t->ncols] && t->ncols < CTL_REC_MAX_KEYS)
        t->ncols++;
    t->nrows = n;
    if (!t->ncols || !(t->cell = calloc(n * t->ncols + 1, sizeof(char *))))
        return t->ncols ? -ENOMEM : 0;
    for (size_t c = 0; c < t->ncols; c++) {
        ctl_out_heading(t->head[c], sizeof(t->head[c]), cols[c], true);
        t->width[c] = legend ? strlen(t->head[c]) : 0;
        t->num[c] = !ctl_out_key_is_text(cols[c]) &&
                    !ctl_out_key_is_list(cols[c]);
    }
    last = t->ncols - 1;
    if (!width || !ctl_out_key_is_list(cols[last]))
        return ctl_out_fill(t, cols, recs, 0, t->ncols, CTL_OUT_LIST_WIDTH);
    if (ctl_out_fill(t, cols, recs, 0, last, CTL_OUT_LIST_WIDTH) < 0)
        return -ENOMEM;
    for (size_t c = 0; c < last; c++)
        used += t->width[c] + 2;
    return ctl_out_fill(t, cols, recs, last, t->ncols,
                        width > used ? width - used : 0);
}

/* One cell of column c, padded (the last text column is not). */
static void ctl_out_cell(FILE *f, const ctl_out_layout_t *t, size_t c,
                         const char *text)
{
    fprintf(f, t->num[c] ? "%s%*s" : "%s%-*s", c ? "  " : "",
            c + 1 == t->ncols && !t->num[c] ? 0 : (int)t->width[c], text);
}

/* Write line (len bytes, no newline) cut to width bytes (0: whole), in
 * bold if asked, then a newline. */
static void ctl_out_line(const char *line, size_t len, size_t width,
                         bool bold)
{
    if (width && len > width)
        len = width;
    while (len && line[len - 1] == ' ')
        len--;
    fputs(bold ? "\033[1m" : "", stdout);
    fwrite(line, 1, len, stdout);
    fputs(bold ? "\033[0m\n" : "\n", stdout);
}

/* The table into a string, one line per row after the legend. */
static char *ctl_out_render(const ctl_out_layout_t *t, bool legend)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (!f)
        return NULL;
    for (size_t c = 0; legend && c < t->ncols; c++)
        ctl_out_cell(f, t, c, t->head[c]);
    if (legend)
        fputc('\n', f);
    for (size_t i = 0; i < t->nrows; i++) {
        for (size_t c = 0; c < t->ncols; c++)
            ctl_out_cell(f, t, c, t->cell[i * t->ncols + c]);
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int ctl_out_table_fit(const char *const *cols, const ctl_rec_t *recs,
                      size_t n, bool legend, size_t width)
{
    bool bold = legend && isatty(STDOUT_FILENO);
    ctl_out_layout_t t;
    char *text, *line;
    int r = ctl_out_layout(&t, cols, recs, n, legend, width);

    if (r < 0 || !(text = ctl_out_render(&t, legend))) {
        ctl_out_layout_free(&t);
        return -ENOMEM;
    }
    line = text;
    for (char *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        ctl_out_line(line, (size_t)(nl - line), width, bold);
        bold = false;
    }
    free(text);
    ctl_out_layout_free(&t);
    return 0;
}

int ctl_out_table(const char *const *cols, const ctl_rec_t *recs,
                  size_t n, bool legend)
{
    return ctl_out_table_fit(cols, recs, n, legend, 0);
}
