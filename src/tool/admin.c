/*
 * admin.c - the commands that act on the broker itself (prefix
 * ctl_admin_): ping, kick, shutdown and reload.
 *
 * Owns, per command, its connection, closed before the outcome is
 * reported, and reload's explanation text from the broker.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"

int ctl_run_ping(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    broker_t *b = ctl_connect(o, path, sizeof(path));
    uint64_t t0;
    int r;

    if (!b)
        return CTL_EXIT_RUNTIME;
    t0 = ctl_now_ns();
    r = broker_ping(b, o->timeout_ms);
    uint64_t us = (ctl_now_ns() - t0) / 1000;
    broker_close(b);
    if (r < 0) {
        ctl_err("ping %s: %s", path, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    printf("pong from brokerd at %s: %" PRIu64 " us\n", path, us);
    return CTL_EXIT_OK;
}

/* A client id: decimal, not 0, no sign.  0 or -EINVAL. */
static int ctl_admin_client_id(const char *s, uint64_t *id)
{
    unsigned long long v;
    char *end;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0 || s[0] == '-')
        return -EINVAL;
    *id = (uint64_t)v;
    return 0;
}

int ctl_run_kick(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    uint64_t id;
    broker_t *b;
    int r;

    if (ctl_admin_client_id(o->args[0], &id) < 0)
        return ctl_usage_error("invalid client id '%s'", o->args[0]);
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_kick(b, id);
    broker_close(b);
    if (r < 0) {
        ctl_err("kick %" PRIu64 ": %s", id, r == -ENOENT ? "no such client"
                : ctl_priv_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

int ctl_run_shutdown(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    broker_t *b;
    int r;

    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_shutdown(b);
    broker_close(b);
    if (r < 0) {
        ctl_err("shutdown %s: %s", path, ctl_priv_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

int ctl_run_reload(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    void *why = NULL;       /* the broker's reason, ours to free */
    broker_t *b;
    int r;

    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_ctrl(b, BROKER_CTRL_RELOAD, NULL, 0, &why, NULL);
    broker_close(b);
    if (r == -EINVAL) {
        ctl_err("reload %s: configuration not changed: %s", path,
                why && *(char *)why ? (char *)why
                : "brokerd was started without -c");
        free(why);
        return CTL_EXIT_RUNTIME;
    }
    free(why);
    if (r < 0) {
        ctl_err("reload %s: %s", path, ctl_priv_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}
