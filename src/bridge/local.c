/*
 * local.c - the bridge's libbroker connection to the local brokerd
 * (prefix bn_local_).
 *
 * The connection is attached to the loop; every message goes to
 * bn_local_message, which hands it on: deliveries to the gateway
 * subscriptions to group.c, publications on exported topics to export.c,
 * messages to HOST/NAME names to call.c; requests to the status name are
 * answered here, and brokerd's ERROR events about the bridge's one-way
 * messages counted (drop_refused).  If brokerd goes away the bridge ends (exit 1;
 * its service manager starts it again).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "bridge.h"
#include "log.h"

/* A request to the status name: "status" (or nothing) gets the text. */
static void bn_local_status(bn_bridge_t *br, broker_msg_t *msg)
{
    size_t len = 0;
    char *text;
    int r;

    if (!broker_msg_is_request(msg))
        return;
    if (msg->nfds || (msg->len && (msg->len != 6 ||
                                   memcmp(msg->data, "status", 6)))) {
        broker_reply_error(br->b, msg, -EINVAL);
        return;
    }
    text = bn_stats_text(br, &len);
    r = text ? broker_reply(br->b, msg, text, len, NULL, 0)
             : broker_reply_error(br->b, msg, -ENOMEM);
    if (r < 0 && r != -ENOENT)
        bn_log(BN_LOG_WARN, "status reply: %s", broker_strerror(r));
    free(text);
}

static void bn_local_message(broker_t *b, broker_msg_t *msg, void *ud)
{
    bn_bridge_t *br = ud;

    (void)b;
    if (msg->kind == BROKER_MSG_DATA && (msg->flags & BROKER_MSGF_TOPIC)) {
        if (!bn_group_local_msg(br, msg))
            bn_export_publication(br, msg);
        return;
    }
    if (msg->kind == BROKER_MSG_DATA && msg->name &&
        bn_offers_is_remote(br, msg->name)) {
        bn_call_local_msg(br, msg);
        return;
    }
    if (msg->kind == BROKER_MSG_DATA && msg->name &&
        !strcmp(msg->name, br->conf.name))
        bn_local_status(br, msg);
    else if (msg->kind == BROKER_MSG_GAP)
        br->st.drop_gap += msg->gap;
    else if (msg->kind == BROKER_MSG_DATA && broker_msg_is_request(msg))
        broker_reply_error(br->b, msg, -ENOENT);
    else if (msg->kind == BROKER_MSG_ERROR)   /* a one-way message lost */
        bn_stats_drop(br, &br->st.drop_refused, broker_strerror(msg->code),
                      "brokerd");
    broker_msg_free(msg);
}

static void bn_local_disconnect(broker_t *b, int err, void *ud)
{
    bn_bridge_t *br = ud;

    bn_log(BN_LOG_ERROR, "lost the local brokerd: %s", broker_strerror(err));
    broker_close(b);
    br->b = NULL;
    bn_quit(br, 1);
}

int bn_local_start(bn_bridge_t *br)
{
    static const broker_callbacks_t cbs = {
        .on_message = bn_local_message,
        .on_disconnect = bn_local_disconnect,
    };
    int r = broker_connect(br->conf.socket, &br->b);

    if (r < 0) {
        bn_log(BN_LOG_ERROR, "cannot connect to brokerd%s%s: %s",
               br->conf.socket ? " at " : "",
               br->conf.socket ? br->conf.socket : "", broker_strerror(r));
        br->b = NULL;
        return r;
    }
    r = broker_attach(br->b, br->loop, &cbs, br);
    if (r < 0) {
        bn_log(BN_LOG_ERROR, "attach: %s", broker_strerror(r));
        broker_close(br->b);
        br->b = NULL;
        return r;
    }
    br->self_id = broker_client_id(br->b);
    r = bn_local_register(br, br->conf.name);
    return r < 0 ? r : 0;
}

void bn_local_stop(bn_bridge_t *br)
{
    if (!br->b)
        return;
    broker_close(br->b);
    br->b = NULL;
}

int bn_local_register(bn_bridge_t *br, const char *name)
{
    int r = br->b ? broker_register(br->b, name) : -ENOTCONN;

    if (r < 0)
        bn_log(BN_LOG_WARN, "cannot register the local name %s: %s", name,
               broker_strerror(r));
    return r;
}

void bn_local_release(bn_bridge_t *br, const char *name)
{
    int r = br->b ? broker_release(br->b, name) : -ENOTCONN;

    if (r < 0 && r != -ENOTCONN)
        bn_log(BN_LOG_WARN, "cannot release the local name %s: %s", name,
               broker_strerror(r));
}
