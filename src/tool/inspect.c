/*
 * inspect.c - the commands that show the broker's state (prefix
 * ctl_inspect_): status, and the listings clients, names, streams, shm,
 * subs and users.
 *
 * Owns, per command, its connection (closed as soon as the answer is in)
 * and the answer's text with the records parsed from it, freed before the
 * command returns.  subs also owns the clients listing, whose comm values
 * its records borrow.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* ---- status ------------------------------------------------------------- */

int ctl_run_status(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    char *text = NULL;
    broker_t *b = ctl_connect(o, path, sizeof(path));
    int r;

    if (!b)
        return CTL_EXIT_RUNTIME;
    r = broker_status(b, &text);
    broker_close(b);
    if (r < 0) {
        ctl_err("status %s: %s", path, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_out_status(text, o->json);
    free(text);
    return r;
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
    "name", "owner", "pid", "comm", "flags", "queue", "age_ms", NULL };
static const char *const ctl_inspect_cols_streams[] = {
    "opener", "opener_sid", "acceptor", "acceptor_sid", "opener_bytes",
    "acceptor_bytes", "age_ms", NULL };
static const char *const ctl_inspect_cols_shm[] = {
    "owner", "segid", "size", "receivers", NULL };
static const char *const ctl_inspect_cols_subs[] = {
    "client", "comm", "sub", "pattern", "group", "policy", "flags",
    "delivered", "dropped", "queued", NULL };

static const char *const ctl_inspect_cols_users[] = {
    "uid", "connections", "fds", "streams", "names", "subs", "shm_segments",
    "shm_bytes", "shm_held", "queued", "queued_by", "quota_hits", NULL };

static const ctl_inspect_list_t ctl_inspect_lists[] = {
    { "clients", BROKER_CTRL_LIST_CLIENTS, ctl_inspect_cols_clients },
    { "names",   BROKER_CTRL_LIST_NAMES,   ctl_inspect_cols_names },
    { "streams", BROKER_CTRL_LIST_STREAMS, ctl_inspect_cols_streams },
    { "shm",     BROKER_CTRL_LIST_SHM,     ctl_inspect_cols_shm },
    { "subs",    BROKER_CTRL_LIST_SUBS,    ctl_inspect_cols_subs },
    { "users",   BROKER_CTRL_LIST_USERS,   ctl_inspect_cols_users },
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
    if (o->top > 0 && (size_t)o->top < n)      /* --top 0: all */
        n = (size_t)o->top;
    if (o->json) {
        ctl_out_json_records(recs, n, o->json);
    } else if (ctl_out_table(k->cols, recs, n, !o->no_legend) < 0) {
        ctl_err("%s: %s", k->cmd, broker_strerror(-ENOMEM));
        return CTL_EXIT_RUNTIME;
    }
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

/* subs: each record gains its client's comm from the clients listing
 * (ctext, parsed into crecs; the values stay in ctext). */
static void ctl_inspect_add_comm(ctl_rec_t *recs, size_t n,
                                 const ctl_rec_t *crecs, size_t nc)
{
    for (size_t i = 0; i < n; i++) {
        const char *id = ctl_rec_get(&recs[i], "client");

        if (!id || recs[i].n >= CTL_REC_MAX_KEYS)
            continue;
        for (size_t j = 0; j < nc; j++) {
            const char *cid = ctl_rec_get(&crecs[j], "id");
            char *comm = (char *)ctl_rec_get(&crecs[j], "comm");

            if (cid && comm && !strcmp(cid, id)) {
                recs[i].keys[recs[i].n] = (char *)"comm";
                recs[i].vals[recs[i].n++] = comm;
                break;
            }
        }
    }
}

/* The clients listing for subs' comm column: best effort (a client gone
 * meanwhile just has none).  *ctext and *crecs are the caller's to free. */
static void ctl_inspect_clients(broker_t *b, char **ctext, ctl_rec_t **crecs,
                                size_t *nc)
{
    ssize_t n;

    *nc = 0;
    if (broker_list(b, BROKER_CTRL_LIST_CLIENTS, ctext, NULL) < 0)
        return;
    n = ctl_rec_parse(*ctext, crecs);
    if (n > 0)
        *nc = (size_t)n;
}

int ctl_run_list(const ctl_opts_t *o)
{
    char *ctext = NULL;
    ctl_rec_t *crecs = NULL;
    size_t nc = 0;
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
    if (r == 0 && k->op == BROKER_CTRL_LIST_SUBS)
        ctl_inspect_clients(b, &ctext, &crecs, &nc);
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
        ctl_inspect_add_comm(recs, (size_t)n, crecs, nc);
        r = ctl_inspect_print(o, k, recs, (size_t)n);
    }
    free(recs);
    free(text);
    free(crecs);
    free(ctext);
    return r;
}
