/*
 * test_top.c - `brokerctl top`: the refreshing view of the busiest
 * clients.  Its non-terminal form (one block per refresh, no escape
 * codes, lines cut to $COLUMNS), the sort keys, its own connection left
 * out, and its terminal form driven in a pseudo-terminal: keys (q and
 * the sort keys), a resize (TIOCSWINSZ, which sends SIGWINCH), the
 * terminal restored on q and on SIGINT; then exit codes and option
 * checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(top, 120);

#define TOP_SINK "top.sink"
#define TOP_STUCK "top.stuck"
#define TOP_NCOLS 7     /* id pid comm msgs/s bytes/s queued errors; names */
#define TOP_STUFF_MSGS 32
#define TOP_STUFF_LEN 64000     /* 2 MB for a client that never reads */
#define TOP_ERRORS 3

/* ---- traffic: a sender, a sink, a client with errors, one stuck --------- */

typedef struct top_traffic {
    th_barrier_t ready;     /* children -> test: their client ids */
    th_barrier_t stop;      /* test -> children: stop */
    pid_t pid[4];
    uint64_t sink, sender, erring, stuck;
    broker_t *watch;        /* the test's own: waits for the others */
} top_traffic_t;

#define TOP_CLIENTS 5       /* the four children and watch */

/* Owns TOP_SINK and answers requests until a message says "stop". */
static int top_sink(void *arg)
{
    top_traffic_t *t = arg;
    broker_t *b = th_connect(&br);
    bool done = false;

    th_register(b, TOP_SINK);
    th_barrier_signal(&t->ready, broker_client_id(b));
    while (!done) {
        broker_msg_t *m = th_recv(b);
        done = m->kind == BROKER_MSG_DATA && m->len == 4 &&
               !memcmp(m->data, "stop", 4);
        if (m->kind == BROKER_MSG_DATA && (m->flags & BROKER_MSGF_OPEN) &&
            !(m->flags & BROKER_MSGF_CLOSE))
            TH_OK(broker_reply(b, m, "ok", 2, NULL, 0));
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

/* Calls TOP_SINK until the stop barrier has a token, then sends "stop":
 * one request at a time, so that nothing piles up in the sink's queue
 * however slow it is. */
static int top_sender(void *arg)
{
    top_traffic_t *t = arg;
    broker_t *b = th_connect(&br);
    char payload[100];

    memset(payload, 'x', sizeof(payload));
    th_barrier_signal(&t->ready, broker_client_id(b));
    for (;;) {
        struct pollfd p = { .fd = t->stop.rd, .events = POLLIN };

        broker_msg_t *reply = NULL;

        TH_OK(broker_call(b, TOP_SINK, payload, sizeof(payload), &reply,
                          TH_HANG_MS));
        broker_msg_free(reply);
        if (poll(&p, 1, 0) > 0)
            break;
    }
    th_barrier_wait(&t->stop);
    TH_OK(broker_send(b, TOP_SINK, "stop", 4, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

/* Fills TOP_STUCK's queue (more than its socket holds), then sends to a
 * name nobody owns TOP_ERRORS times: as many ERROR frames. */
static int top_erring(void *arg)
{
    top_traffic_t *t = arg;
    broker_t *b = th_connect(&br);
    char *payload = calloc(1, TOP_STUFF_LEN);

    if (!payload)
        return 1;
    for (int i = 0; i < TOP_STUFF_MSGS; i++)
        TH_OK(broker_send(b, TOP_STUCK, payload, TOP_STUFF_LEN, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));     /* the broker has them all */
    free(payload);
    for (int i = 0; i < TOP_ERRORS; i++) {
        TH_OK(broker_send(b, "top.nobody", "x", 1, NULL, 0));
        broker_msg_free(th_recv_kind(b, BROKER_MSG_ERROR));
    }
    th_barrier_signal(&t->ready, broker_client_id(b));
    th_barrier_wait(&t->stop);
    broker_close(b);
    return 0;
}

/* Owns TOP_STUCK and never reads: what it is sent stays queued. */
static int top_stuck(void *arg)
{
    top_traffic_t *t = arg;
    broker_t *b = th_connect(&br);

    th_register(b, TOP_STUCK);
    th_barrier_signal(&t->ready, broker_client_id(b));
    th_barrier_wait(&t->stop);
    broker_close(b);
    return 0;
}

static void top_traffic_start(top_traffic_t *t)
{
    memset(t, 0, sizeof(*t));
    th_barrier_init(&t->ready);
    th_barrier_init(&t->stop);
    t->pid[0] = th_spawn(top_sink, t);
    t->sink = th_barrier_wait(&t->ready);
    t->pid[1] = th_spawn(top_sender, t);
    t->sender = th_barrier_wait(&t->ready);
    t->pid[2] = th_spawn(top_stuck, t);
    t->stuck = th_barrier_wait(&t->ready);
    t->pid[3] = th_spawn(top_erring, t);
    t->erring = th_barrier_wait(&t->ready);
    t->watch = th_connect(&br);
}

/* Until the broker has only the known clients (an earlier brokerctl's
 * connection may not be gone yet). */
static void top_settle(top_traffic_t *t)
{
    th_await_status(t->watch, "clients", TOP_CLIENTS);
}

static void top_traffic_stop(top_traffic_t *t)
{
    broker_close(t->watch);
    for (int i = 0; i < 4; i++)
        th_barrier_signal(&t->stop, 0);
    for (int i = 3; i >= 0; i--)
        th_join(t->pid[i]);
    th_barrier_fini(&t->ready);
    th_barrier_fini(&t->stop);
}

/* ---- parsing the output --------------------------------------------------- */

static bool top_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* A size as the tables show it ("850B", "1.2KiB" ...) in bytes, or -1. */
static double top_size(const char *s)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    char *end;
    double v = strtod(s, &end), m = 1;

    if (end == s)
        return -1;
    for (size_t i = 0; i < sizeof(unit) / sizeof(unit[0]); i++, m *= 1024)
        if (!strcmp(end, unit[i]))
            return v * m;
    return -1;
}

/* Split a line into at most max whitespace-separated words (in place). */
static int top_words(char *line, char **w, int max)
{
    int n = 0;
    char *save = NULL;

    for (char *tok = strtok_r(line, " \t", &save); tok && n < max;
         tok = strtok_r(NULL, " \t", &save))
        w[n++] = tok;
    return n;
}

/* One client row, parsed. */
typedef struct top_row {
    unsigned long long id, pid;
    double key[4];              /* msgs/s bytes/s queued errors */
} top_row_t;

enum { TOP_MSGS, TOP_BYTES, TOP_QUEUED, TOP_ERRS };
static const char *const top_keys[] = { "msgs", "bytes", "queued", "errors" };

/* Check one client row (a copy of line is split): id, pid, comm, a
 * non-negative rate of messages, one of bytes with a unit, the queued
 * size, the error count (names may follow). */
static top_row_t top_check_row(const char *line)
{
    char copy[512], *w[TOP_NCOLS + 1];
    top_row_t r;
    int n;

    snprintf(copy, sizeof(copy), "%s", line);
    n = top_words(copy, w, TOP_NCOLS + 1);
    cr_assert_geq(n, TOP_NCOLS, "short row: '%s'", line);
    cr_assert(top_digits(w[0]), "id not a number: '%s'", line);
    cr_assert(top_digits(w[1]), "pid not a number: '%s'", line);
    cr_assert(top_digits(w[3]), "msgs/s not a count: '%s'", line);
    r.id = strtoull(w[0], NULL, 10);
    r.pid = strtoull(w[1], NULL, 10);
    r.key[TOP_MSGS] = strtod(w[3], NULL);
    r.key[TOP_BYTES] = top_size(w[4]);
    r.key[TOP_QUEUED] = top_size(w[5]);
    cr_assert(r.key[TOP_BYTES] >= 0, "bytes/s not a size: '%s'", line);
    cr_assert(r.key[TOP_QUEUED] >= 0, "queued not a size: '%s'", line);
    cr_assert(top_digits(w[6]), "errors not a count: '%s'", line);
    r.key[TOP_ERRS] = strtod(w[6], NULL);
    return r;
}

/* One block or screen, split into lines. */
typedef struct top_screen {
    char *line[64];
    int n;
} top_screen_t;

/* What a block must be: lines no wider than width and no more than
 * max_lines (0: any); the status lines, a blank line, the legend; rows
 * in order of key (largest first); not the row of pid `self` (0: not
 * known).  rows gets them (at most max_rows).  Returns the row count. */
static int top_check_screen(const top_screen_t *s, size_t width,
                            int max_lines, int key, unsigned long long self,
                            top_row_t *rows, int max_rows)
{
    int nrows = 0;

    cr_assert_geq(s->n, 4, "short screen: %d lines", s->n);
    if (max_lines)
        cr_assert_leq(s->n, max_lines, "%d lines on a screen of %d", s->n,
                      max_lines + 1);
    for (int i = 0; i < s->n; i++)
        cr_assert_leq(strlen(s->line[i]), width, "line %d wider than %zu: "
                      "'%s'", i, width, s->line[i]);
    cr_assert(!strncmp(s->line[0], "brokerd ", 8), "status: '%s'",
              s->line[0]);
    cr_assert(!strncmp(s->line[1], "msgs/s in ", 10), "rates: '%s'",
              s->line[1]);
    cr_assert_str_empty(s->line[2], "not blank: '%s'", s->line[2]);
    cr_assert(!strncmp(s->line[3], "ID ", 3) && strstr(s->line[3], "MSGS/S"),
              "legend: '%s'", s->line[3]);
    if (width < 60)
        return s->n - 4;        /* lines cut: only the layout is checked */
    cr_assert(strstr(s->line[0], " clients"), "status: '%s'", s->line[0]);
    cr_assert(strstr(s->line[1], "bytes/s in "), "rates: '%s'", s->line[1]);
    cr_assert(strstr(s->line[3], "BYTES/S  QUEUED  ERRORS  NAMES"),
              "legend: '%s'", s->line[3]);
    for (int i = 4; i < s->n; i++) {
        top_row_t r = top_check_row(s->line[i]);
        cr_assert(self == 0 || r.pid != self, "top's own connection shown: "
                  "'%s'", s->line[i]);
        if (nrows)
            cr_assert_leq(r.key[key], rows[nrows - 1].key[key],
                          "not sorted by %s: '%s' after a smaller one",
                          top_keys[key], s->line[i]);
        cr_assert_lt(nrows, max_rows);
        rows[nrows++] = r;
    }
    return nrows;
}

static const top_row_t *top_find(const top_row_t *rows, int n, uint64_t id)
{
    for (int i = 0; i < n; i++)
        if (rows[i].id == id)
            return &rows[i];
    return NULL;
}

/* The traffic's clients and only them (not top's own), with the
 * errors and the queue where they are. */
static void top_check_clients(const top_traffic_t *t, const top_row_t *rows,
                              int n)
{
    const top_row_t *erring = top_find(rows, n, t->erring);
    const top_row_t *stuck = top_find(rows, n, t->stuck);

    cr_assert_eq(n, TOP_CLIENTS, "%d rows for the %d clients", n,
                 TOP_CLIENTS);
    cr_assert(top_find(rows, n, t->sink) && top_find(rows, n, t->sender) &&
              top_find(rows, n, broker_client_id(t->watch)) && erring &&
              stuck, "a client is missing");
    cr_assert_eq(erring->key[TOP_ERRS], TOP_ERRORS);
    cr_assert_gt(stuck->key[TOP_QUEUED], 0, "nothing queued for the stuck "
                 "client");
}

/* Cut the non-terminal output into its blocks (each starts with a
 * "brokerd " line); lines in place. */
static int top_blocks(char *out, top_screen_t *blk, int max)
{
    int n = 0;

    cr_assert_null(strchr(out, '\033'), "escape codes in non-tty output");
    for (char *p = out; *p; ) {
        char *nl = strchr(p, '\n');
        cr_assert_not_null(nl, "unterminated line: '%s'", p);
        *nl = '\0';
        if (!strncmp(p, "brokerd ", 8)) {
            cr_assert_lt(n, max);
            blk[n++].n = 0;
        }
        cr_assert_gt(n, 0, "output before a status line: '%s'", p);
        if (*p || blk[n - 1].n < 3)     /* the blank line after the rows */
            blk[n - 1].line[blk[n - 1].n++] = p;
        cr_assert_lt(blk[n - 1].n, 64);
        p = nl + 1;
    }
    return n;
}

/* `brokerctl top ARGS` with COLUMNS=cols, not on a terminal. */
static int top_run(th_output_t *o, const char *cols, const char *a1,
                   const char *a2)
{
    char env[32];
    const char *envp[] = { env, NULL };
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "top",
                           "--iterations", "2", "--interval", "100", a1, a2,
                           NULL };

    snprintf(env, sizeof(env), "COLUMNS=%s", cols);
    return th_run(argv, envp, NULL, 0, o);
}

/* ---- not on a terminal ---------------------------------------------------- */

Test(top, blocks_fit_80_columns_without_itself)
{
    top_traffic_t t;
    top_screen_t blk[4];
    top_row_t rows[16];
    th_output_t o;
    int st, n;

    top_traffic_start(&t);
    top_settle(&t);
    st = top_run(&o, "80", NULL, NULL);
    cr_assert(TH_EXITED(st, 0), "top: status 0x%x, stderr: %s", st, o.err);
    cr_assert_eq(o.err_len, 0, "stderr: %s", o.err);
    n = top_blocks(o.out, blk, 4);
    cr_assert_eq(n, 2, "expected 2 blocks");
    for (int i = 0; i < n; i++) {
        int k = top_check_screen(&blk[i], 80, 0, TOP_MSGS, 0, rows, 16);
        top_check_clients(&t, rows, k);
        /* top itself is not counted either. */
        cr_assert(strstr(blk[i].line[0], ", 5 clients,"), "%s",
                  blk[i].line[0]);
    }
    th_output_free(&o);
    top_traffic_stop(&t);
}

Test(top, sorts_by_each_key)
{
    top_traffic_t t;
    top_screen_t blk[4];
    top_row_t rows[16];
    th_output_t o;

    top_traffic_start(&t);
    for (int key = 0; key < 4; key++) {
        int st, k;

        top_settle(&t);
        st = top_run(&o, "80", "--sort", top_keys[key]);
        cr_assert(TH_EXITED(st, 0), "top --sort %s: 0x%x, %s", top_keys[key],
                  st, o.err);
        cr_assert_eq(top_blocks(o.out, blk, 4), 2);
        k = top_check_screen(&blk[1], 80, 0, key, 0, rows, 16);
        top_check_clients(&t, rows, k);
        if (key == TOP_QUEUED)
            cr_assert_eq(rows[0].id, t.stuck, "queued: %s", blk[1].line[4]);
        if (key == TOP_ERRS)
            cr_assert_eq(rows[0].id, t.erring, "errors: %s", blk[1].line[4]);
        th_output_free(&o);
    }
    top_traffic_stop(&t);
}

Test(top, narrow_columns_cut_lines_and_row_limit)
{
    top_screen_t blk[4];
    th_output_t o;
    char *save = NULL;
    int rows = 0;
    int st = top_run(&o, "40", "--top", "1");

    cr_assert(TH_EXITED(st, 0), "top: status 0x%x, stderr: %s", st, o.err);
    cr_assert_eq(top_blocks(o.out, blk, 4), 2);
    top_check_screen(&blk[0], 40, 0, TOP_MSGS, 0, NULL, 0);
    th_output_free(&o);

    /* --top 1 with a client besides top: one row. */
    broker_t *b = th_connect(&br);
    st = th_ctl(br.sock, &o, "top", "--iterations", "1", "--interval",
                "10", "--sort", "bytes_out", "--top", "1", "--no-legend",
                NULL);
    cr_assert(TH_EXITED(st, 0), "top: status 0x%x, stderr: %s", st, o.err);
    for (char *line = strtok_r(o.out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
        if (strncmp(line, "brokerd ", 8) && strncmp(line, "msgs/s ", 7)) {
            top_check_row(line);
            rows++;
        }
    cr_assert_eq(rows, 1, "--top 1 printed %d rows", rows);
    th_output_free(&o);
    broker_close(b);
}

/* ---- on a terminal -------------------------------------------------------- */

/* top in a pseudo-terminal: the master side and what came out of it. */
typedef struct top_pty {
    int fd;
    pid_t pid;
    char *out;
    size_t len, cap;
} top_pty_t;

static const char top_clear[] = "\033[H\033[2J";

static void top_pty_start(top_pty_t *p, unsigned short cols,
                          unsigned short rows)
{
    struct winsize ws = { .ws_row = rows, .ws_col = cols };
    const char *ctl = th_brokerctl_path();

    memset(p, 0, sizeof(*p));
    p->pid = forkpty(&p->fd, NULL, NULL, &ws);
    cr_assert_geq(p->pid, 0, "forkpty: %s", strerror(errno));
    if (p->pid == 0) {
        /* Only keys and resizes redraw: no refresh comes on its own. */
        execl(ctl, ctl, "-s", br.sock, "top", "--interval", "600000",
              (char *)NULL);
        _exit(127);
    }
}

/* Read once what top wrote (at most 4 KiB).  Returns the byte count, 0
 * at the end. */
static ssize_t top_pty_more(top_pty_t *p)
{
    ssize_t n;

    if (p->len + 4097 > p->cap) {
        p->cap = (p->len + 4097) * 2;
        p->out = realloc(p->out, p->cap);
        cr_assert_not_null(p->out);
    }
    n = read(p->fd, p->out + p->len, 4096);
    if (n <= 0)                 /* EIO: the other side is closed */
        return 0;
    p->len += (size_t)n;
    p->out[p->len] = '\0';
    return n;
}

/* Read what top wrote until its count of screens (clear sequences)
 * reaches want, or the end when want is 0 (hang-guarded). */
static void top_pty_read(top_pty_t *p, int want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;

    for (;;) {
        int screens = 0;
        for (const char *s = p->out; s && (s = strstr(s, top_clear));
             s += sizeof(top_clear) - 1)
            screens++;
        if (want && screens >= want)
            return;
        struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
        cr_assert_lt(th_now_ms(), end, "top showed %d screens of %d:\n%s",
                     screens, want, p->out ? p->out : "");
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        if (top_pty_more(p) == 0) {
            cr_assert_eq(want, 0, "top ended after %d screens of %d:\n%s",
                         screens, want, p->out ? p->out : "");
            return;
        }
    }
}

/* Screen i (from 1) as lines: escape sequences and carriage returns
 * taken out, in a copy *buf the caller frees. */
static void top_pty_screen(const top_pty_t *p, int i, top_screen_t *s,
                           char **buf);

/* Read until screen i (the last so far) has n whole lines. */
static void top_pty_read_lines(top_pty_t *p, int i, int n)
{
    top_screen_t s;
    char *buf;

    for (;;) {
        top_pty_read(p, i);
        top_pty_screen(p, i, &s, &buf);
        free(buf);
        if (s.n >= n)
            return;
        struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
        cr_assert_gt(poll(&pfd, 1, TH_HANG_MS), 0, "screen %d stops at %d "
                     "lines:\n%s", i, s.n, p->out);
        cr_assert_gt(top_pty_more(p), 0, "top ended in screen %d:\n%s", i,
                     p->out);
    }
}

static void top_pty_key(top_pty_t *p, char key)
{
    cr_assert_eq(write(p->fd, &key, 1), 1);
}

static void top_pty_screen(const top_pty_t *p, int i, top_screen_t *s,
                           char **buf)
{
    const char *a = p->out;
    char *d;

    for (int k = 0; k < i; k++) {
        a = strstr(a, top_clear);
        cr_assert_not_null(a, "no screen %d", i);
        a += sizeof(top_clear) - 1;
    }
    const char *b = strstr(a, top_clear);
    size_t len = b ? (size_t)(b - a) : strlen(a);
    *buf = d = calloc(1, len + 1);
    cr_assert_not_null(d);
    for (size_t k = 0; k < len; k++) {
        if (a[k] == '\033' && k + 1 < len && a[k + 1] == '[') {
            for (k += 2; k < len && !isalpha((unsigned char)a[k]); k++)
                ;
            continue;
        }
        if (a[k] != '\r')
            *d++ = a[k];
    }
    s->n = 0;
    for (char *line = *buf, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        cr_assert_lt(s->n, 64);
        s->line[s->n++] = line;
    }
}

/* The terminal's settings now (the master reads the slave's). */
static tcflag_t top_pty_lflag(const top_pty_t *p)
{
    struct termios t;

    cr_assert_eq(tcgetattr(p->fd, &t), 0, "tcgetattr: %s", strerror(errno));
    return t.c_lflag;
}

Test(top, terminal_keys_sort_resize_keeps_header_q_quits)
{
    static const struct { char key; int sort; } steps[] = {
        { 'b', TOP_MSGS },      /* the key ends the screen before it */
        { 'e', TOP_BYTES }, { 'u', TOP_ERRS }, { 'm', TOP_QUEUED },
    };
    struct winsize small = { .ws_row = 7, .ws_col = 50 };
    top_traffic_t t;
    top_screen_t s;
    top_row_t rows[16];
    top_pty_t p;
    char *buf;
    int st, k;

    top_traffic_start(&t);
    top_settle(&t);
    top_pty_start(&p, 80, 24);
    top_pty_read(&p, 1);
    cr_assert_eq(top_pty_lflag(&p) & (ICANON | ECHO), 0,
                 "keys are not read one by one");
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        top_pty_key(&p, steps[i].key);
        top_pty_read(&p, (int)i + 2);
        top_pty_screen(&p, (int)i + 1, &s, &buf);
        k = top_check_screen(&s, 80, 23, steps[i].sort,
                             (unsigned long long)p.pid, rows, 16);
        top_check_clients(&t, rows, k);
        if (steps[i].sort == TOP_ERRS)
            cr_assert_eq(rows[0].id, t.erring, "errors: %s", s.line[4]);
        if (steps[i].sort == TOP_QUEUED)
            cr_assert_eq(rows[0].id, t.stuck, "queued: %s", s.line[4]);
        free(buf);
    }
    /* Screen 5 is by msgs again; once it is whole, the resize draws
     * screen 6 at once. */
    top_pty_read_lines(&p, 5, 4 + TOP_CLIENTS);
    cr_assert_eq(ioctl(p.fd, TIOCSWINSZ, &small), 0);
    top_pty_read(&p, 6);
    top_pty_key(&p, 'q');
    top_pty_read(&p, 0);
    st = th_join_status(p.pid);
    cr_assert(TH_EXITED(st, 0), "top: status 0x%x:\n%s", st, p.out);
    top_pty_screen(&p, 5, &s, &buf);
    k = top_check_screen(&s, 80, 23, TOP_MSGS, (unsigned long long)p.pid,
                         rows, 16);
    top_check_clients(&t, rows, k);
    free(buf);
    /* 50 x 7: the header stays, 2 rows of the 5 fit below it. */
    top_pty_screen(&p, 6, &s, &buf);
    top_check_screen(&s, 50, 6, TOP_MSGS, 0, NULL, 0);
    cr_assert_eq(s.n, 6, "%d lines", s.n);
    free(buf);
    cr_assert(strstr(p.out, "\033[?1049l"), "the screen is not restored");
    cr_assert_eq(top_pty_lflag(&p) & (ICANON | ECHO), ICANON | ECHO,
                 "the terminal is not restored");
    close(p.fd);
    free(p.out);
    top_traffic_stop(&t);
}

Test(top, terminal_restored_on_sigint)
{
    top_pty_t p;
    int st;

    top_pty_start(&p, 80, 24);
    top_pty_read(&p, 1);
    cr_assert_eq(top_pty_lflag(&p) & (ICANON | ECHO), 0);
    cr_assert_eq(kill(p.pid, SIGINT), 0);
    top_pty_read(&p, 0);
    st = th_join_status(p.pid);
    cr_assert(TH_EXITED(st, 0), "top: status 0x%x:\n%s", st, p.out);
    cr_assert(strstr(p.out, "\033[?1049l"), "the screen is not restored");
    cr_assert_eq(top_pty_lflag(&p) & (ICANON | ECHO), ICANON | ECHO,
                 "the terminal is not restored");
    close(p.fd);
    free(p.out);
}

/* ---- errors --------------------------------------------------------------- */

Test(top, usage_errors)
{
    static const char *const bad[][2] = {
        { "--sort", "no_such_field" }, { "--interval", "0" },
        { "--interval", "x" }, { "--iterations", "-1" },
    };
    th_output_t o;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = th_ctl(br.sock, &o, "top", bad[i][0], bad[i][1], NULL);
        cr_assert(TH_EXITED(st, 2), "top %s %s: status 0x%x", bad[i][0],
                  bad[i][1], st);
        cr_assert(strstr(o.err, "--help"), "stderr: %s", o.err);
        th_output_free(&o);
    }
    int st = th_ctl(br.sock, &o, "ping", "--interval", "10", NULL);
    cr_assert(TH_EXITED(st, 2), "ping --interval accepted: 0x%x", st);
    th_output_free(&o);
}

Test(top, no_broker_exits_1)
{
    char sock[192];
    th_output_t o;
    int st;

    snprintf(sock, sizeof(sock), "%s/absent.sock", br.dir);
    st = th_ctl(sock, &o, "top", "--iterations", "1", NULL);
    cr_assert(TH_EXITED(st, 1), "status 0x%x", st);
    cr_assert(strstr(o.err, "brokerctl: "), "stderr: %s", o.err);
    th_output_free(&o);
}

Test(top, broker_going_away_exits_1)
{
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "top",
                           "--interval", "50", NULL };
    char log[192], *text;
    th_output_t o;
    size_t len;
    FILE *f;
    pid_t pid;
    int st;

    /* No --iterations: only the broker's going away ends this top (it
     * may notice at connect time or at any refresh: exit 1 either way). */
    snprintf(log, sizeof(log), "%s/top.log", br.dir);
    pid = th_run_bg(argv, NULL, log);
    st = th_ctl(br.sock, &o, "shutdown", NULL);
    cr_assert(TH_EXITED(st, 0), "shutdown: 0x%x %s", st, o.err);
    th_output_free(&o);
    st = th_join_status(pid);
    cr_assert(TH_EXITED(st, 1), "top: status 0x%x", st);
    f = fopen(log, "r");
    cr_assert_not_null(f);
    text = calloc(1, 65536);
    cr_assert_not_null(text);
    len = fread(text, 1, 65535, f);
    fclose(f);
    cr_assert(len > 0 && strstr(text, "brokerctl: "), "log: %s", text);
    free(text);
}
