/*
 * inspect.c - the commands that show the broker's state (prefix
 * ctl_inspect_): status, and the listings clients, names, streams and shm.
 *
 * Owns, per command, its connection (closed as soon as the answer is in)
 * and the answer's text with the records parsed from it, freed before the
 * command returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* ---- status ------------------------------------------------------------- */

int ctl_run_status(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    char *keys[CTL_REC_STATUS_MAX], *vals[CTL_REC_STATUS_MAX];
    char *text = NULL;
    broker_t *b = ctl_connect(o, path, sizeof(path));
    size_t n;
    int r;

    if (!b)
        return CTL_EXIT_RUNTIME;
    r = broker_status(b, &text);
    broker_close(b);
    if (r < 0) {
        ctl_err("status %s: %s", path, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    n = ctl_rec_status(text, keys, vals, CTL_REC_STATUS_MAX);
    if (o->json)
        ctl_out_json_pairs(keys, vals, n, o->json);
    else
        ctl_out_pairs(keys, vals, n);
    free(text);
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

/* ---- listings ----------------------------------------------------------- */

/* One listing: its command, its op, and the wire keys its table shows. */
typedef struct ctl_inspect_list {
    const char *cmd;
    uint32_t op;
    const char *const *cols;    /* table columns, NULL-terminated */
} ctl_inspect_list_t;

static const char *const ctl_inspect_cols_clients[] = {
    "id", "pid", "uid", "comm", "names", "queued_bytes", "msgs_in",
    "msgs_out", "streams", "shm_segments", "age_ms", NULL };
static const char *const ctl_inspect_cols_names[] = {
    "name", "owner", "pid", "comm", "age_ms", NULL };
static const char *const ctl_inspect_cols_streams[] = {
    "opener", "opener_sid", "acceptor", "acceptor_sid", "opener_bytes",
    "acceptor_bytes", "age_ms", NULL };
static const char *const ctl_inspect_cols_shm[] = {
    "owner", "segid", "size", "receivers", NULL };

static const ctl_inspect_list_t ctl_inspect_lists[] = {
    { "clients", BROKER_CTRL_LIST_CLIENTS, ctl_inspect_cols_clients },
    { "names",   BROKER_CTRL_LIST_NAMES,   ctl_inspect_cols_names },
    { "streams", BROKER_CTRL_LIST_STREAMS, ctl_inspect_cols_streams },
    { "shm",     BROKER_CTRL_LIST_SHM,     ctl_inspect_cols_shm },
};

static const ctl_inspect_list_t *ctl_inspect_find(const char *cmd)
{
    size_t n = sizeof(ctl_inspect_lists) / sizeof(ctl_inspect_lists[0]);

    for (size_t i = 0; i < n; i++)
        if (!strcmp(ctl_inspect_lists[i].cmd, cmd))
            return &ctl_inspect_lists[i];
    return NULL;
}

/* Whether --sort key names a column or a field of any record. */
static bool ctl_inspect_has_key(const ctl_inspect_list_t *k,
                                const ctl_rec_t *recs, size_t n,
                                const char *key)
{
    for (size_t i = 0; k->cols[i]; i++)
        if (!strcmp(k->cols[i], key))
            return true;
    for (size_t i = 0; i < n; i++)
        if (ctl_rec_get(&recs[i], key))
            return true;
    return false;
}

/* Sort (default: by the first column, ascending), cut to --top, print. */
static int ctl_inspect_print(const ctl_opts_t *o, const ctl_inspect_list_t *k,
                             ctl_rec_t *recs, size_t n)
{
    ctl_rec_order_t ord = { o->sort ? o->sort : k->cols[0], o->sort != NULL };

    if (o->sort && !ctl_inspect_has_key(k, recs, n, o->sort))
        return ctl_usage_error("unknown field '%s' for '%s'", o->sort,
                               k->cmd);
    ctl_rec_sort(recs, n, &ord);
    if (o->top >= 0 && (size_t)o->top < n)
        n = (size_t)o->top;
    if (o->json)
        ctl_out_json_records(recs, n, o->json);
    else
        ctl_out_table(k->cols, recs, n, !o->no_legend);
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

int ctl_run_list(const ctl_opts_t *o)
{
    const ctl_inspect_list_t *k = ctl_inspect_find(o->cmd);
    char path[CTL_PATH_MAX];
    ctl_rec_t *recs = NULL;
    char *text = NULL;
    broker_t *b;
    ssize_t n;
    int r;

    if (o->sort && !*o->sort)
        return ctl_usage_error("--sort needs a field name");
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_list(b, k->op, &text, NULL);
    broker_close(b);
    if (r < 0) {
        ctl_err("%s %s: %s", k->cmd, path, ctl_priv_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    n = ctl_rec_parse(text, &recs);
    if (n < 0) {
        ctl_err("%s: %s", k->cmd, broker_strerror((int)n));
        r = CTL_EXIT_RUNTIME;
    } else {
        r = ctl_inspect_print(o, k, recs, (size_t)n);
    }
    free(recs);
    free(text);
    return r;
}
