/*
 * top.c - brokerctl top, a live view of the busiest clients (prefix
 * ctl_top_).
 *
 * Every interval a LIST_CLIENTS and a STATUS snapshot; rates are the
 * counters' deltas over the time between two snapshots.
 *
 * Owns one ctl_top_t for the run: the connection and the previous
 * snapshot's counters (replaced at each refresh, freed at the end).
 * Each refresh's listing text, records and rows are freed before the
 * next one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ctl.h"

#define CTL_TOP_DEF_ROWS        20      /* when stdout is not a terminal */
#define CTL_TOP_HEADER_LINES    3       /* status line, blank, legend */

/* Counters of one client, kept from one snapshot to the next. */
typedef struct ctl_top_counts {
    uint64_t id;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} ctl_top_counts_t;

/* The broker-wide counters of STATUS. */
typedef struct ctl_top_status {
    uint64_t uptime_ms, clients, names;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} ctl_top_status_t;

/* One displayed row: rates, and the cell text the table shows. */
enum { CTL_TOP_MSGS, CTL_TOP_MSGS_IN, CTL_TOP_MSGS_OUT, CTL_TOP_BYTES,
       CTL_TOP_BYTES_IN, CTL_TOP_BYTES_OUT, CTL_TOP_NRATES };

typedef struct ctl_top_row {
    const ctl_rec_t *src;       /* the client's record in the listing */
    uint64_t id;
    uint64_t rate[CTL_TOP_NRATES];  /* per second */
    char cell[CTL_TOP_NRATES][24];
} ctl_top_row_t;

/* One run of top. */
typedef struct ctl_top {
    const ctl_opts_t *o;
    broker_t *b;                /* owned: closed at the end of the run */
    char path[CTL_PATH_MAX];
    bool tty;                   /* stdout is a terminal */
    int sort_rate;              /* CTL_TOP_*, or -1: by sort_rec */
    ctl_rec_order_t sort_rec;
    ctl_top_counts_t *prev;     /* owned: last snapshot, sorted by id */
    size_t n_prev;
    ctl_top_status_t st;        /* last snapshot's STATUS ... */
    uint64_t t;                 /* ... and when it was taken */
} ctl_top_t;

/* The --sort fields of top: the rates, or a key of the client record. */
static const char *const ctl_top_rate_keys[CTL_TOP_NRATES] = {
    "msgs", "msgs_in", "msgs_out", "bytes", "bytes_in", "bytes_out" };
static const char *const ctl_top_rec_keys[] = {
    "id", "pid", "uid", "comm", "queued_bytes", "streams", "age_ms", NULL };

static const char *const ctl_top_cols[] = {
    "id", "pid", "comm", "msgs/s", "msgs_in/s", "msgs_out/s", "bytes_in/s",
    "bytes_out/s", "queued_bytes", "names", NULL };

/* ---- order -------------------------------------------------------------- */

/* Take --sort: a rate name or a client field.  Returns 0 or -EINVAL. */
static int ctl_top_set_sort(ctl_top_t *top, const char *field)
{
    top->sort_rate = CTL_TOP_MSGS;
    if (!field)
        return 0;
    for (int i = 0; i < CTL_TOP_NRATES; i++)
        if (!strcmp(field, ctl_top_rate_keys[i])) {
            top->sort_rate = i;
            return 0;
        }
    for (size_t i = 0; ctl_top_rec_keys[i]; i++)
        if (!strcmp(field, ctl_top_rec_keys[i])) {
            top->sort_rate = -1;
            top->sort_rec = (ctl_rec_order_t){ field, true };
            return 0;
        }
    return -EINVAL;
}

/* Busiest first; ties by client id so the order is stable. */
static int ctl_top_row_cmp(const void *a, const void *b, void *ctx)
{
    const ctl_top_row_t *x = a, *y = b;
    const ctl_top_t *top = ctx;
    int c;

    if (top->sort_rate >= 0) {
        uint64_t u = x->rate[top->sort_rate];
        uint64_t v = y->rate[top->sort_rate];
        c = (u < v) - (u > v);
    } else {
        c = ctl_rec_cmp(x->src, y->src, &top->sort_rec);
    }
    if (c)
        return c;
    return (x->id > y->id) - (x->id < y->id);
}

static int ctl_top_counts_cmp(const void *a, const void *b)
{
    const ctl_top_counts_t *x = a, *y = b;

    return (x->id > y->id) - (x->id < y->id);
}

/* ---- rates -------------------------------------------------------------- */

/* Counters that went backwards (a restarted broker) count as 0. */
static uint64_t ctl_top_rate(uint64_t now, uint64_t before, uint64_t ns)
{
    if (now <= before || ns == 0)
        return 0;
    return (uint64_t)((double)(now - before) * 1e9 / (double)ns + 0.5);
}

static ctl_top_counts_t ctl_top_counts(const ctl_rec_t *rec)
{
    return (ctl_top_counts_t){
        .id = ctl_rec_u64(ctl_rec_get(rec, "id")),
        .msgs_in = ctl_rec_u64(ctl_rec_get(rec, "msgs_in")),
        .msgs_out = ctl_rec_u64(ctl_rec_get(rec, "msgs_out")),
        .bytes_in = ctl_rec_u64(ctl_rec_get(rec, "bytes_in")),
        .bytes_out = ctl_rec_u64(ctl_rec_get(rec, "bytes_out")),
    };
}

/* The row of rec with the rates since the previous snapshot; a client
 * not in it (new since then) shows 0. */
static void ctl_top_row(const ctl_top_t *top, const ctl_rec_t *rec,
                        uint64_t ns, ctl_top_row_t *r)
{
    ctl_top_counts_t cur = ctl_top_counts(rec);
    const ctl_top_counts_t *p = top->n_prev ? bsearch(&cur, top->prev,
        top->n_prev, sizeof(*top->prev), ctl_top_counts_cmp) : NULL;

    if (!p)
        p = &cur;
    r->src = rec;
    r->id = cur.id;
    r->rate[CTL_TOP_MSGS_IN] = ctl_top_rate(cur.msgs_in, p->msgs_in, ns);
    r->rate[CTL_TOP_MSGS_OUT] = ctl_top_rate(cur.msgs_out, p->msgs_out, ns);
    r->rate[CTL_TOP_BYTES_IN] = ctl_top_rate(cur.bytes_in, p->bytes_in, ns);
    r->rate[CTL_TOP_BYTES_OUT] = ctl_top_rate(cur.bytes_out, p->bytes_out,
                                              ns);
    r->rate[CTL_TOP_MSGS] = r->rate[CTL_TOP_MSGS_IN] +
                            r->rate[CTL_TOP_MSGS_OUT];
    r->rate[CTL_TOP_BYTES] = r->rate[CTL_TOP_BYTES_IN] +
                             r->rate[CTL_TOP_BYTES_OUT];
    for (int k = 0; k < CTL_TOP_NRATES; k++)
        snprintf(r->cell[k], sizeof(r->cell[k]), "%" PRIu64, r->rate[k]);
}

/* Remember this snapshot's counters (sorted by id) for the next one,
 * replacing top->prev.  Returns 0 or -ENOMEM. */
static int ctl_top_remember(ctl_top_t *top, const ctl_rec_t *recs, size_t n)
{
    ctl_top_counts_t *p = n ? calloc(n, sizeof(*p)) : NULL;

    if (n && !p)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        p[i] = ctl_top_counts(&recs[i]);
    if (n > 1)
        qsort(p, n, sizeof(*p), ctl_top_counts_cmp);
    free(top->prev);
    top->prev = p;
    top->n_prev = n;
    return 0;
}

/* ---- snapshots ---------------------------------------------------------- */

static int ctl_top_status(broker_t *b, ctl_top_status_t *st)
{
    char *keys[CTL_REC_STATUS_MAX], *vals[CTL_REC_STATUS_MAX];
    char *text = NULL;
    size_t n;
    int r = broker_status(b, &text);

    if (r < 0)
        return r;
    memset(st, 0, sizeof(*st));
    n = ctl_rec_status(text, keys, vals, CTL_REC_STATUS_MAX);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = ctl_rec_u64(vals[i]);
        if (!strcmp(keys[i], "uptime_ms")) st->uptime_ms = v;
        else if (!strcmp(keys[i], "clients")) st->clients = v;
        else if (!strcmp(keys[i], "names")) st->names = v;
        else if (!strcmp(keys[i], "msgs_in")) st->msgs_in = v;
        else if (!strcmp(keys[i], "msgs_out")) st->msgs_out = v;
        else if (!strcmp(keys[i], "bytes_in")) st->bytes_in = v;
        else if (!strcmp(keys[i], "bytes_out")) st->bytes_out = v;
    }
    free(text);
    return 0;
}

/* Fetch the clients' records and STATUS into *st, and the time into *t.
 * Returns the number of records or a negative errno; *text and *recs are
 * the caller's to free either way. */
static ssize_t ctl_top_snapshot(ctl_top_t *top, char **text, ctl_rec_t **recs,
                                ctl_top_status_t *st, uint64_t *t)
{
    int r;

    *text = NULL;
    *recs = NULL;
    if ((r = broker_list(top->b, BROKER_CTRL_LIST_CLIENTS, text, NULL)) < 0 ||
        (r = ctl_top_status(top->b, st)) < 0)
        return r;
    *t = ctl_now_ns();
    return ctl_rec_parse(*text, recs);
}

/* ---- screen ------------------------------------------------------------- */

static void ctl_top_header(const char *path, const ctl_top_status_t *now,
                           const ctl_top_status_t *before, uint64_t ns)
{
    uint64_t up = now->uptime_ms / 1000;

    printf("brokerd %s: up %" PRIu64 "d %02" PRIu64 ":%02" PRIu64 ":%02"
           PRIu64 ", %" PRIu64 " clients, %" PRIu64 " names, msgs/s in %"
           PRIu64 " out %" PRIu64 ", bytes/s in %" PRIu64 " out %" PRIu64
           "\n\n", path, up / 86400, up / 3600 % 24, up / 60 % 60, up % 60,
           now->clients, now->names,
           ctl_top_rate(now->msgs_in, before->msgs_in, ns),
           ctl_top_rate(now->msgs_out, before->msgs_out, ns),
           ctl_top_rate(now->bytes_in, before->bytes_in, ns),
           ctl_top_rate(now->bytes_out, before->bytes_out, ns));
}

/* How many client rows fit: --top, else the terminal's height. */
static size_t ctl_top_max_rows(const ctl_top_t *top)
{
    struct winsize ws;

    if (top->o->top >= 0)
        return (size_t)top->o->top;
    if (top->tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 &&
        ws.ws_row > 0)
        return ws.ws_row > CTL_TOP_HEADER_LINES + 1 ?
               (size_t)ws.ws_row - CTL_TOP_HEADER_LINES - 1 : 1;
    return CTL_TOP_DEF_ROWS;
}

/* The cell of column col in row r: a rate ("msgs/s" ...) or the
 * record's own field ("" if it has none). */
static const char *ctl_top_cell(const ctl_top_row_t *r, const char *col)
{
    const char *v = NULL;

    for (int k = 0; k < CTL_TOP_NRATES; k++) {
        size_t len = strlen(ctl_top_rate_keys[k]);
        if (!strncmp(col, ctl_top_rate_keys[k], len) &&
            !strcmp(col + len, "/s"))
            v = r->cell[k];
    }
    if (!v)
        v = ctl_rec_get(r->src, col);
    return v ? v : "";
}

/* Print one screen: sorted rows, cut to what fits.  rows has n entries.
 * The table is of records made of the rows' cells (pointing into rows
 * and the listing text). */
static int ctl_top_draw(ctl_top_t *top, ctl_top_row_t *rows, size_t n)
{
    size_t max = ctl_top_max_rows(top);
    ctl_rec_t *view;

    if (n > 1)
        qsort_r(rows, n, sizeof(*rows), ctl_top_row_cmp, top);
    if (n > max)
        n = max;
    view = calloc(n ? n : 1, sizeof(*view));
    if (!view)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; ctl_top_cols[c]; c++) {
            const char *col = ctl_top_cols[c];
            view[i].keys[view[i].n] = (char *)col;
            view[i].vals[view[i].n++] = (char *)ctl_top_cell(&rows[i], col);
        }
    }
    ctl_out_table(ctl_top_cols, view, n, !top->o->no_legend);
    free(view);
    return 0;
}

/* ---- the run ------------------------------------------------------------ */

/* Wait until `deadline` (monotonic ns) or a signal. */
static void ctl_top_sleep(uint64_t deadline)
{
    for (;;) {
        uint64_t now = ctl_now_ns();

        if (ctl_stopped() || now >= deadline)
            return;
        (void)ctl_wait(-1, (int)((deadline - now + 999999) / 1000000));
    }
}

/* One refresh: fetch, compute and print; the previous snapshot becomes
 * this one.  Returns 0 or a negative errno. */
static int ctl_top_refresh(ctl_top_t *top)
{
    ctl_top_status_t st_now;
    ctl_top_row_t *rows = NULL;
    ctl_rec_t *recs;
    char *text;
    uint64_t now, ns;
    ssize_t n;
    int r;

    n = ctl_top_snapshot(top, &text, &recs, &st_now, &now);
    if (n < 0) {
        r = (int)n;
        goto out;
    }
    ns = now - top->t;
    rows = calloc(n ? (size_t)n : 1, sizeof(*rows));
    if (!rows) {
        r = -ENOMEM;
        goto out;
    }
    for (ssize_t i = 0; i < n; i++)
        ctl_top_row(top, &recs[i], ns, &rows[i]);
    if (top->tty)
        fputs("\033[H\033[2J", stdout);
    ctl_top_header(top->path, &st_now, &top->st, ns);
    if ((r = ctl_top_draw(top, rows, (size_t)n)) < 0)
        goto out;
    if (!top->tty)
        putchar('\n');      /* blocks are separated by a blank line */
    if (fflush(stdout) == EOF) {
        r = -errno;
        goto out;
    }
    r = ctl_top_remember(top, recs, (size_t)n);
    top->st = st_now;
    top->t = now;
out:
    free(rows);
    free(recs);
    free(text);
    return r;
}

/* The first snapshot: counters only, nothing printed. */
static int ctl_top_baseline(ctl_top_t *top)
{
    ctl_rec_t *recs;
    char *text;
    ssize_t n = ctl_top_snapshot(top, &text, &recs, &top->st, &top->t);
    int r = n < 0 ? (int)n : ctl_top_remember(top, recs, (size_t)n);

    free(recs);
    free(text);
    return r;
}

int ctl_run_top(const ctl_opts_t *o)
{
    ctl_top_t top = { .o = o, .tty = isatty(STDOUT_FILENO) };
    int r;

    if (ctl_top_set_sort(&top, o->sort) < 0)
        return ctl_usage_error("unknown field '%s' for 'top'", o->sort);
    if (!(top.b = ctl_start(o, top.path, sizeof(top.path))))
        return CTL_EXIT_RUNTIME;
    r = ctl_top_baseline(&top);
    for (long i = 0; r == 0 && !ctl_stopped() &&
         (o->iterations == 0 || i < o->iterations); i++) {
        ctl_top_sleep(top.t + (uint64_t)o->interval_ms * 1000000u);
        if (ctl_stopped())
            break;
        r = ctl_top_refresh(&top);
    }
    broker_close(top.b);
    free(top.prev);
    if (r < 0) {
        ctl_err("top %s: %s", top.path, r == -ECONNRESET ||
                r == -ESHUTDOWN || r == -EPIPE ?
                "lost the connection to brokerd" : ctl_priv_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}
