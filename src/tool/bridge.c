/*
 * bridge.c - brokerctl bridge: the status of a brokerd-nats bridge
 * (prefix ctl_bridge_).
 *
 * The bridge owns a local name (brokerd-nats by default, its `name`
 * setting) and answers a request "status" with "key=value" lines:
 * host, state, server, imports, exports, offers, remote names, counts,
 * rates and drops (brokerd-nats(8), "STATUS").  This prints them as
 * `status` prints the broker's, or as one JSON object with --json.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "frame.h"
#include "proto.h"

#define CTL_BRIDGE_DEF_NAME "brokerd-nats"

int ctl_run_bridge(const ctl_opts_t *o);    /* the table in brokerctl.c */

int ctl_run_bridge(const ctl_opts_t *o)
{
    const char *name = o->nargs > 0 ? o->args[0] : CTL_BRIDGE_DEF_NAME;
    char path[CTL_PATH_MAX];
    broker_msg_t *reply = NULL;
    broker_t *b;
    char *text;
    int r;

    if (!bk_name_valid(name, strlen(name), BK_MAX_NAME))
        return ctl_usage_error("bridge: '%s' is not a valid name", name);
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_call(b, name, "status", 6, &reply, o->timeout_ms);
    broker_close(b);
    if (r < 0) {
        ctl_err("bridge '%s': %s", name, r == -ENOENT ?
                "no bridge owns that name (is brokerd-nats running?)" :
                broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    text = malloc(reply->len + 1);
    if (!text) {
        broker_msg_free(reply);
        ctl_err("bridge: %s", broker_strerror(-ENOMEM));
        return CTL_EXIT_RUNTIME;
    }
    memcpy(text, reply->data, reply->len);
    text[reply->len] = '\0';
    broker_msg_free(reply);
    r = ctl_out_status(text, o->json);
    free(text);
    return r;
}
