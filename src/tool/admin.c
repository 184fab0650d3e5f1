/*
 * admin.c - the commands that act on the broker itself or wait for it
 * (prefix ctl_admin_): ping, wait, kick, shutdown and reload.
 *
 * Owns, per command, its connection, closed before the outcome is
 * reported, reload's explanation text from the broker and, for wait, the
 * announcement being read.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "frame.h"

#define CTL_ADMIN_NAMES_TOPIC "$broker.names"
#define CTL_ADMIN_POLL_MS 100       /* wait without the announcements */

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

/* ---- wait ------------------------------------------------------------------ */

/* Milliseconds left until deadline_ns (0: no deadline, -1). */
static int ctl_admin_left_ms(uint64_t deadline_ns)
{
    uint64_t now = ctl_now_ns();

    if (!deadline_ns)
        return -1;
    return now >= deadline_ns ? 0
                              : (int)((deadline_ns - now + 999999) / 1000000);
}

/* Whether a $broker.names announcement ("name=N old=ID new=ID") gives
 * name an owner. */
static bool ctl_admin_names_owned(const broker_msg_t *m, const char *name)
{
    char *text = malloc(m->len + 1);
    ctl_rec_t *recs = NULL;
    bool owned = false;
    ssize_t n;

    if (!text)
        return false;
    memcpy(text, m->data, m->len);
    text[m->len] = '\0';
    n = ctl_rec_parse(text, &recs);
    for (ssize_t i = 0; i < n && !owned; i++) {
        const char *v = ctl_rec_get(&recs[i], "name");
        char *nm = v ? ctl_rec_unescape(v, strlen(v)) : NULL;

        owned = nm && !strcmp(nm, name) &&
                ctl_rec_u64(ctl_rec_get(&recs[i], "new")) != 0;
        free(nm);
    }
    free(recs);
    free(text);
    return owned;
}

/* Wait for an announcement that name has an owner.  1 when it has, 0 on
 * timeout, or a negative errno. */
static int ctl_admin_wait_announced(broker_t *b, const char *name,
                                    uint64_t deadline_ns)
{
    for (;;) {
        broker_msg_t *m = NULL;
        int r = broker_recv(b, &m, ctl_admin_left_ms(deadline_ns));
        bool owned;

        if (r == -ETIMEDOUT)
            return 0;
        if (r < 0)
            return r;
        owned = m->kind == BROKER_MSG_DATA && m->topic &&
                !strcmp(m->topic, CTL_ADMIN_NAMES_TOPIC) &&
                ctl_admin_names_owned(m, name);
        broker_msg_free(m);
        if (owned)
            return 1;
    }
}

/* Where the announcements are not allowed: ask every CTL_ADMIN_POLL_MS.
 * 1 when name has an owner, 0 on timeout, or a negative errno. */
static int ctl_admin_wait_polling(broker_t *b, const char *name,
                                  uint64_t deadline_ns)
{
    for (;;) {
        uint64_t id;
        int r = broker_resolve(b, name, &id);
        int left = ctl_admin_left_ms(deadline_ns);

        if (r == 0)
            return 1;
        if (r != -ENOENT)
            return r;
        if (left == 0)
            return 0;
        usleep(1000u * (unsigned)(left < 0 || left > CTL_ADMIN_POLL_MS
                                  ? CTL_ADMIN_POLL_MS : left));
    }
}

/* Whether name has an owner now (1), not (0), or a negative errno. */
static int ctl_admin_owned(broker_t *b, const char *name)
{
    uint64_t id;
    int r = broker_resolve(b, name, &id);

    return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

int ctl_run_wait(const ctl_opts_t *o)
{
    const char *name = o->args[0];
    uint64_t deadline = o->timeout_ms < 0 ? 0 : ctl_now_ns() +
                        (uint64_t)o->timeout_ms * 1000000u;
    char path[CTL_PATH_MAX];
    uint32_t sub;
    broker_t *b;
    int r;

    if (!bk_name_valid(name, strlen(name), BK_MAX_NAME))
        return ctl_usage_error("invalid name '%s' (1 to %d letters, digits "
                               "and . _ - : /, not starting with ':')", name,
                               BK_MAX_NAME);
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    /* subscribe first, then look: an owner that comes in between is
     * announced */
    r = broker_subscribe(b, CTL_ADMIN_NAMES_TOPIC, NULL, BROKER_SUB_BLOCK,
                         &sub);
    if (r == -EACCES)
        r = ctl_admin_wait_polling(b, name, deadline);
    else if (r == 0 && (r = ctl_admin_owned(b, name)) == 0)
        r = ctl_admin_wait_announced(b, name, deadline);
    broker_close(b);
    if (r == 0) {
        ctl_err("wait '%s': no owner after %d ms", name, o->timeout_ms);
        return CTL_EXIT_RUNTIME;
    }
    if (r < 0) {
        ctl_err("wait '%s': %s", name, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

/* ---- kick, shutdown, reload ------------------------------------------------- */

/* A client id: decimal, not 0, no sign, optionally written ":ID" as
 * send and call take it.  0 or -EINVAL. */
static int ctl_admin_client_id(const char *s, uint64_t *id)
{
    unsigned long long v;
    char *end;

    if (s[0] == ':')
        s++;
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
