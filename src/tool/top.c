/*
 * top.c - brokerctl top, a live view of the busiest clients (prefix
 * ctl_top_).
 *
 * Every interval a LIST_CLIENTS and a STATUS snapshot; rates are the
 * counters' deltas over the time between two snapshots.  top's own
 * connection is left out of the rows and of the status line's figures.
 * Lines fit the terminal's width ($COLUMNS or 80 when stdout is not a
 * terminal); on a terminal rows fit its height, a resize (SIGWINCH)
 * redraws at once, and when stdin is a terminal too it is read key by
 * key: q quits, m b u e sort by msgs, bytes, queued, errors.
 *
 * Owns one ctl_top_t for the run: the connection, the previous
 * snapshot's counters (replaced at each refresh, freed at the end), the
 * terminal's settings and the SIGWINCH action it had before (restored on
 * every way out).  Each refresh's listing text,
 * records and rows are freed before the next one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

#include "ctl.h"

#define CTL_TOP_DEF_ROWS        20      /* when stdout is not a terminal */
#define CTL_TOP_DEF_WIDTH       80      /* ... and $COLUMNS is not set */
#define CTL_TOP_HEADER_LINES    4       /* 2 status lines, blank, legend */

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
    uint64_t self;              /* our own client id: not shown */
    bool tty;                   /* stdout is a terminal */
    size_t width;               /* this refresh's line width */
    bool keys;                  /* stdin is a terminal, read key by key */
    bool reading;               /* ... and not failed */
    struct termios term;        /* stdin's settings before (if keys) */
    struct sigaction winch;     /* SIGWINCH's action before */
    int sort_rate;              /* CTL_TOP_*, or -1: by sort_rec */
    ctl_rec_order_t sort_rec;
    ctl_top_counts_t *prev;     /* owned: last snapshot, sorted by id */
    size_t n_prev;
    ctl_top_status_t st;        /* last snapshot's STATUS ... */
    uint64_t t;                 /* ... and when it was taken */
} ctl_top_t;

/* The --sort fields of top: the rates, or a key of the client record
 * (queued and errors are short for queued_bytes and the errors count). */
static const char *const ctl_top_rate_keys[CTL_TOP_NRATES] = {
    "msgs", "msgs_in", "msgs_out", "bytes", "bytes_in", "bytes_out" };
static const char *const ctl_top_rec_keys[] = {
    "id", "pid", "uid", "comm", "queued_bytes", "errors", "streams",
    "age_ms", NULL };

/* The columns: "msgs/s" and "bytes/s" are rates (in plus out), the others
 * keys of the client record. */
static const char *const ctl_top_cols[] = {
    "id", "pid", "comm", "msgs/s", "bytes/s", "queued_bytes", "errors",
    "names", NULL };

/* The keys that sort interactively. */
static const struct { char key; const char *field; } ctl_top_sort_keys[] = {
    { 'm', "msgs" }, { 'b', "bytes" }, { 'u', "queued" }, { 'e', "errors" },
};

/* ---- order -------------------------------------------------------------- */

/* Take --sort: a rate name or a client field.  Returns 0 or -EINVAL. */
static int ctl_top_set_sort(ctl_top_t *top, const char *field)
{
    top->sort_rate = CTL_TOP_MSGS;
    if (!field)
        return 0;
    if (!strcmp(field, "queued"))
        field = "queued_bytes";
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

/* Saturating a - b: our own share taken out of the broker's totals. */
static uint64_t ctl_top_minus(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* The terminal's size, or 0 where unknown. */
static struct winsize ctl_top_winsize(const ctl_top_t *top)
{
    struct winsize ws = { 0 };

    if (!top->tty || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0)
        memset(&ws, 0, sizeof(ws));
    return ws;
}

/* How wide lines may be: the terminal's width, else $COLUMNS, else 80. */
static size_t ctl_top_width(const ctl_top_t *top)
{
    struct winsize ws = ctl_top_winsize(top);
    const char *env = getenv("COLUMNS");

    if (ws.ws_col > 0)
        return ws.ws_col;
    if (env && ctl_rec_is_num(env) && strlen(env) < 6 && atoi(env) > 0)
        return (size_t)atoi(env);
    return CTL_TOP_DEF_WIDTH;
}

/* One line of the status, cut at width. */
static void ctl_top_line(size_t width, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ctl_top_line(size_t width, const char *fmt, ...)
{
    char buf[CTL_PATH_MAX + 256];
    size_t len;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    fwrite(buf, 1, len < width ? len : width, stdout);
    putchar('\n');
}

/* The status lines: the broker's figures without our own connection
 * (own_now, own_before: our counters in this and the last listing). */
static void ctl_top_header(const ctl_top_t *top, const ctl_top_status_t *now,
                           const ctl_top_counts_t *own_now,
                           const ctl_top_counts_t *own_before, uint64_t ns)
{
    const ctl_top_status_t *before = &top->st;
    char up[16], bin[16], bout[16];

    ctl_out_duration(up, sizeof(up), now->uptime_ms);
    ctl_out_size(bin, sizeof(bin), ctl_top_rate(
        ctl_top_minus(now->bytes_in, own_now->bytes_in),
        ctl_top_minus(before->bytes_in, own_before->bytes_in), ns));
    ctl_out_size(bout, sizeof(bout), ctl_top_rate(
        ctl_top_minus(now->bytes_out, own_now->bytes_out),
        ctl_top_minus(before->bytes_out, own_before->bytes_out), ns));
    ctl_top_line(top->width, "brokerd %s: up %s, %" PRIu64 " clients, %"
                 PRIu64 " names", top->path, up,
                 ctl_top_minus(now->clients, 1), now->names);
    ctl_top_line(top->width, "msgs/s in %" PRIu64 " out %" PRIu64
                 ", bytes/s in %s out %s", ctl_top_rate(
                     ctl_top_minus(now->msgs_in, own_now->msgs_in),
                     ctl_top_minus(before->msgs_in, own_before->msgs_in), ns),
                 ctl_top_rate(
                     ctl_top_minus(now->msgs_out, own_now->msgs_out),
                     ctl_top_minus(before->msgs_out, own_before->msgs_out),
                     ns), bin, bout);
    putchar('\n');
}

/* How many client rows fit: --top N (none, or 0 which the parser turns
 * into none: 20), and on a terminal no more than its height leaves below
 * the header, one line kept free so that nothing scrolls. */
static size_t ctl_top_max_rows(const ctl_top_t *top)
{
    struct winsize ws = ctl_top_winsize(top);
    long want = top->o->top;
    size_t lim = want > 0 ? (size_t)want : CTL_TOP_DEF_ROWS;
    size_t fit;

    if (ws.ws_row == 0)
        return lim;
    fit = ws.ws_row > CTL_TOP_HEADER_LINES + 2 ?
          (size_t)ws.ws_row - CTL_TOP_HEADER_LINES - 1 : 1;
    return want < 0 || fit < lim ? fit : lim;
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

/* Print the table: sorted rows, cut to what fits.  rows has n entries.
 * The table is of records made of the rows' cells (pointing into rows
 * and the listing text), and their names_more for the NAMES count. */
static int ctl_top_draw(ctl_top_t *top, ctl_top_row_t *rows, size_t n)
{
    size_t max = ctl_top_max_rows(top);
    ctl_rec_t *view;
    int r;

    if (n > 1)
        qsort_r(rows, n, sizeof(*rows), ctl_top_row_cmp, top);
    if (n > max)
        n = max;
    view = calloc(n ? n : 1, sizeof(*view));
    if (!view)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        ctl_rec_t *v = &view[i];
        const char *more = ctl_rec_get(rows[i].src, "names_more");

        for (size_t c = 0; ctl_top_cols[c]; c++) {
            v->keys[v->n] = (char *)ctl_top_cols[c];
            v->vals[v->n++] = (char *)ctl_top_cell(&rows[i], ctl_top_cols[c]);
        }
        v->keys[v->n] = (char *)"names_more";
        v->vals[v->n++] = (char *)(more ? more : "0");
    }
    r = ctl_out_table_fit(ctl_top_cols, view, n, !top->o->no_legend,
                          top->width);
    free(view);
    return r;
}

/* ---- the terminal ------------------------------------------------------- */

static volatile sig_atomic_t ctl_top_resized;

static void ctl_top_on_winch(int sig)
{
    (void)sig;
    ctl_top_resized = 1;
}

/* SIGWINCH asks for a redraw (what it interrupts goes on). */
static int ctl_top_signals(ctl_top_t *top)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ctl_top_on_winch;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGWINCH, &sa, &top->winch) < 0)
        return -errno;
    return 0;
}

/* On a terminal: the alternate screen without a cursor, and when stdin
 * is a terminal too, keys without echo or waiting for a newline. */
static void ctl_top_term_on(ctl_top_t *top)
{
    struct termios t;

    if (!top->tty)
        return;
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &top->term) == 0) {
        t = top->term;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        top->keys = top->reading =
            tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
    }
    fputs("\033[?1049h\033[?25l", stdout);
}

/* Everything as it was: the terminal and SIGWINCH. */
static void ctl_top_restore(ctl_top_t *top)
{
    if (top->keys)
        (void)tcsetattr(STDIN_FILENO, TCSANOW, &top->term);
    if (top->tty)
        fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    (void)sigaction(SIGWINCH, &top->winch, NULL);
}

/* ---- the run ------------------------------------------------------------ */

/* What ends a wait. */
enum { CTL_TOP_TICK, CTL_TOP_REDRAW, CTL_TOP_QUIT };

/* The keys read: q quits, a sort key sorts and redraws, others are
 * ignored; the end of input (a hang-up) quits too.  A CTL_TOP_*. */
static int ctl_top_keys(ctl_top_t *top)
{
    char buf[32];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    int ev = CTL_TOP_TICK;

    if (n == 0)
        return CTL_TOP_QUIT;
    if (n < 0) {
        if (errno != EINTR && errno != EAGAIN)
            top->reading = false;
        return CTL_TOP_TICK;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == 'q')
            return CTL_TOP_QUIT;
        for (size_t k = 0; k < sizeof(ctl_top_sort_keys) /
                                sizeof(ctl_top_sort_keys[0]); k++)
            if (buf[i] == ctl_top_sort_keys[k].key) {
                (void)ctl_top_set_sort(top, ctl_top_sort_keys[k].field);
                ev = CTL_TOP_REDRAW;
            }
    }
    return ev;
}

/* ctl_top_wait's loop; mask: the signal mask to wait with. */
static int ctl_top_wait_blocked(ctl_top_t *top, uint64_t deadline,
                                const sigset_t *mask)
{
    for (;;) {
        struct pollfd p = { .fd = top->reading ? STDIN_FILENO : -1,
                            .events = POLLIN };
        uint64_t now = ctl_now_ns(), left;
        struct timespec ts;
        int r;

        if (ctl_stopped())
            return CTL_TOP_QUIT;
        if (ctl_top_resized) {
            ctl_top_resized = 0;
            return CTL_TOP_REDRAW;
        }
        if (now >= deadline)
            return CTL_TOP_TICK;
        left = deadline - now;
        ts = (struct timespec){ (time_t)(left / 1000000000u),
                                (long)(left % 1000000000u) };
        r = ppoll(&p, 1, &ts, mask);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0 && (r = ctl_top_keys(top)) != CTL_TOP_TICK)
            return r;
    }
}

/* Wait until `deadline` (monotonic ns), a signal or a key.  A CTL_TOP_*
 * (QUIT also for SIGINT/SIGTERM) or -errno.  SIGINT, SIGTERM and SIGWINCH
 * are blocked but in ppoll, so that the wait cannot miss one. */
static int ctl_top_wait(ctl_top_t *top, uint64_t deadline)
{
    sigset_t set, mask;
    int r;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGWINCH);
    if (sigprocmask(SIG_BLOCK, &set, &mask) < 0)
        return -errno;
    r = ctl_top_wait_blocked(top, deadline, &mask);
    (void)sigprocmask(SIG_SETMASK, &mask, NULL);
    return r;
}

/* Our own counters in a listing (zeros if absent). */
static ctl_top_counts_t ctl_top_own(const ctl_top_t *top,
                                    const ctl_rec_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ctl_rec_u64(ctl_rec_get(&recs[i], "id")) == top->self)
            return ctl_top_counts(&recs[i]);
    return (ctl_top_counts_t){ .id = top->self };
}

/* Our own counters in the previous snapshot (zeros if absent). */
static ctl_top_counts_t ctl_top_own_before(const ctl_top_t *top)
{
    ctl_top_counts_t key = { .id = top->self };
    const ctl_top_counts_t *p = top->n_prev ? bsearch(&key, top->prev,
        top->n_prev, sizeof(*top->prev), ctl_top_counts_cmp) : NULL;

    return p ? *p : key;
}

/* One refresh: fetch, compute and print; the previous snapshot becomes
 * this one.  Returns 0 or a negative errno. */
static int ctl_top_refresh(ctl_top_t *top)
{
    ctl_top_status_t st_now;
    ctl_top_counts_t own_now, own_before;
    ctl_top_row_t *rows = NULL;
    ctl_rec_t *recs;
    char *text;
    uint64_t now, ns;
    size_t nrows = 0;
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
        if (ctl_rec_u64(ctl_rec_get(&recs[i], "id")) != top->self)
            ctl_top_row(top, &recs[i], ns, &rows[nrows++]);
    own_now = ctl_top_own(top, recs, (size_t)n);
    own_before = ctl_top_own_before(top);
    if (top->tty)
        fputs("\033[H\033[2J", stdout);
    top->width = ctl_top_width(top);
    ctl_top_header(top, &st_now, &own_now, &own_before, ns);
    if ((r = ctl_top_draw(top, rows, nrows)) < 0)
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

/* Refresh every interval, at once after a key or a resize, until a
 * signal, q, or the last iteration.  On a terminal the first screen
 * comes at once.  0 or -errno. */
static int ctl_top_loop(ctl_top_t *top)
{
    const ctl_opts_t *o = top->o;
    bool now = top->tty;
    int r = ctl_top_baseline(top);

    for (long i = 0; r == 0 && (o->iterations == 0 || i < o->iterations);
         i++) {
        if (!now) {
            r = ctl_top_wait(top, top->t +
                             (uint64_t)o->interval_ms * 1000000u);
            if (r < 0 || r == CTL_TOP_QUIT)
                break;
        }
        now = false;
        r = ctl_top_refresh(top);
    }
    return r < 0 ? r : 0;
}

int ctl_run_top(const ctl_opts_t *o)
{
    ctl_top_t top = { .o = o, .tty = isatty(STDOUT_FILENO) };
    int r;

    if (ctl_top_set_sort(&top, o->sort) < 0)
        return ctl_usage_error("unknown field '%s' for 'top' (msgs, bytes, "
                               "queued, errors ...)", o->sort);
    if (!(top.b = ctl_start(o, top.path, sizeof(top.path))))
        return CTL_EXIT_RUNTIME;
    top.self = broker_client_id(top.b);
    if ((r = ctl_top_signals(&top)) == 0) {
        ctl_top_term_on(&top);
        r = ctl_top_loop(&top);
        ctl_top_restore(&top);
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
