/*
 * test_top.c - `brokerctl top`: the refreshing view of the busiest
 * clients, in its non-terminal form (one block per refresh, no escape
 * codes), its exit codes and its option checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(top, 120);

#define TOP_SINK "top.sink"
#define TOP_NCOLS 9     /* id pid comm, 5 rates, queued_bytes; names */

/* ---- traffic: a sender and a sink --------------------------------------- */

typedef struct top_traffic {
    th_barrier_t ready;     /* children -> test: their client ids */
    th_barrier_t stop;      /* test -> sender: stop sending */
} top_traffic_t;

/* Owns TOP_SINK and takes messages until one says "stop". */
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
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

/* Sends to TOP_SINK until the stop barrier has a token, then "stop". */
static int top_sender(void *arg)
{
    top_traffic_t *t = arg;
    broker_t *b = th_connect(&br);
    char payload[100];

    memset(payload, 'x', sizeof(payload));
    th_barrier_signal(&t->ready, broker_client_id(b));
    for (;;) {
        struct pollfd p = { .fd = t->stop.rd, .events = POLLIN };

        TH_OK(broker_send(b, TOP_SINK, payload, sizeof(payload), NULL, 0));
        if (poll(&p, 1, 0) > 0)
            break;
    }
    th_barrier_wait(&t->stop);
    TH_OK(broker_send(b, TOP_SINK, "stop", 4, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
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

/* Check one client row: id, pid, comm, five non-negative rates and
 * queued bytes (names may follow).  Returns the client id. */
static unsigned long long top_check_row(char *line)
{
    char *w[TOP_NCOLS + 1];
    int n = top_words(line, w, TOP_NCOLS + 1);

    cr_assert_geq(n, TOP_NCOLS, "short row: '%s'", line);
    cr_assert(top_digits(w[0]), "id not a number: '%s'", w[0]);
    cr_assert(top_digits(w[1]), "pid not a number: '%s'", w[1]);
    for (int c = 3; c < 8; c++)
        cr_assert(top_digits(w[c]), "rate column %d is not a non-negative "
                  "integer: '%s'", c, w[c]);
    cr_assert(top_digits(w[8]), "queued_bytes not a number: '%s'", w[8]);
    return strtoull(w[0], NULL, 10);
}

/* Check the blocks of `top` output; returns how many there were.  Each
 * block: status line, blank line, legend, rows, blank line.  Every block
 * must list both traffic clients. */
static int top_check_blocks(char *out, uint64_t id_a, uint64_t id_b)
{
    int blocks = 0;
    bool seen_a = false, seen_b = false;
    enum { STATUS, BLANK, LEGEND, ROWS } state = STATUS;
    char *save = NULL;

    cr_assert_null(strchr(out, '\033'), "escape codes in non-tty output");
    /* strtok_r skips empty lines: track blocks by their status line. */
    for (char *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "brokerd ", 8)) {
            if (blocks)
                cr_assert(seen_a && seen_b, "block %d misses a client "
                          "(%d %d)", blocks, seen_a, seen_b);
            cr_assert(strstr(line, " clients,"), "status: '%s'", line);
            cr_assert(strstr(line, "msgs/s in "), "status: '%s'", line);
            blocks++;
            seen_a = seen_b = false;
            state = LEGEND;
            continue;
        }
        cr_assert_neq(state, STATUS, "output before a status line: '%s'",
                      line);
        if (state == LEGEND) {
            cr_assert(!strncmp(line, "ID ", 3) && strstr(line, "MSGS/S") &&
                      strstr(line, "BYTES_OUT/S"), "legend: '%s'", line);
            state = ROWS;
            continue;
        }
        unsigned long long id = top_check_row(line);
        seen_a |= id == id_a;
        seen_b |= id == id_b;
    }
    cr_assert(blocks == 0 || (seen_a && seen_b),
              "last block misses a client (%d %d)", seen_a, seen_b);
    return blocks;
}

/* ---- tests ---------------------------------------------------------------- */

Test(top, lists_busy_clients_without_escapes)
{
    top_traffic_t t;
    th_output_t o;
    pid_t sink, sender;
    uint64_t id_sink, id_sender;
    int st;

    th_barrier_init(&t.ready);
    th_barrier_init(&t.stop);
    sink = th_spawn(top_sink, &t);
    id_sink = th_barrier_wait(&t.ready);
    sender = th_spawn(top_sender, &t);
    id_sender = th_barrier_wait(&t.ready);

    st = th_ctl(br.sock, &o, "top", "--iterations", "2", "--interval",
                "100", NULL);
    th_barrier_signal(&t.stop, 0);
    th_barrier_signal(&t.stop, 0);
    th_join(sender);
    th_join(sink);
    cr_assert(TH_EXITED(st, 0), "top: status 0x%x, stderr: %s", st, o.err);
    cr_assert_eq(o.err_len, 0, "stderr: %s", o.err);
    cr_assert_eq(top_check_blocks(o.out, id_sink, id_sender), 2,
                 "expected 2 blocks");
    th_output_free(&o);
    th_barrier_fini(&t.ready);
    th_barrier_fini(&t.stop);
}

Test(top, sort_and_row_limit)
{
    th_output_t o;
    char *save = NULL;
    int rows = 0;
    int st = th_ctl(br.sock, &o, "top", "--iterations", "1", "--interval",
                    "10", "--sort", "bytes_out", "--top", "1",
                    "--no-legend", NULL);

    cr_assert(TH_EXITED(st, 0), "top: status 0x%x, stderr: %s", st, o.err);
    for (char *line = strtok_r(o.out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
        if (strncmp(line, "brokerd ", 8)) {
            top_check_row(line);
            rows++;
        }
    cr_assert_eq(rows, 1, "--top 1 printed %d rows", rows);
    th_output_free(&o);
}

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
