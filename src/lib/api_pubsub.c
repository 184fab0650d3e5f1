/*
 * api_pubsub.c - libbroker layer 7, public API: publish/subscribe
 * (subscribe, unsubscribe, publish, publish to a group through a
 * gateway, shared-memory publish).
 *
 * Topics, patterns and groups are checked here (src/common/topic.h,
 * bk_name_valid) before anything is sent, so a bad one is -EINVAL without
 * a round trip.  A subscription is a CTRL round trip (ctrl.c), whose reply
 * makes its id live (subs.h); a publication is a one-way DATA message
 * with BK_F_TOPIC on a fresh stream (send.c), the topic where a name
 * would be.  broker_subscribe_async is in async.c.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "topic.h"
#include "ctrl.h"
#include "subs.h"
#include "shm.h"
#include "in.h"
#include "send.h"
#include "recon.h"
#include "pubsub.h"

_Static_assert(BROKER_SUB_NO_FDS >> 8 == BK_SUB_F_NOFDS,
               "BROKER_SUB_NO_FDS is the SUBSCRIBE flag byte shifted");
_Static_assert(BROKER_SUB_GATEWAY >> 8 == BK_SUB_F_GATEWAY,
               "BROKER_SUB_GATEWAY is the SUBSCRIBE flag byte shifted");

int bk_pubsub_sub_req(const broker_t *b, const char *pattern,
                      const char *group, int policy,
                      uint8_t req[BK_SUB_REQ_MAX], size_t *len)
{
    int pol = policy & 0xff, flags = (policy >> 8) & 0xff;
    size_t pl, gl = 0;

    if (!b || !pattern || policy < 0 || pol > BK_SUB_POLICY_MAX_ ||
        policy & ~(0xff | BROKER_SUB_NO_FDS | BROKER_SUB_GATEWAY) ||
        ((policy & BROKER_SUB_GATEWAY) && !group))
        return -EINVAL;
    pl = strnlen(pattern, BK_MAX_TOPIC + 1);
    if (!bk_topic_pattern_valid(pattern, pl))
        return -EINVAL;
    if (group) {
        gl = strnlen(group, BK_MAX_NAME + 1);
        if (!bk_name_valid(group, gl, b->lim.max_name))
            return -EINVAL;
    }
    req[0] = (uint8_t)pol;
    req[1] = (uint8_t)flags;    /* BROKER_SUB_* >> 8 are the BK_SUB_F_* */
    bk_put16(req + 2, (uint16_t)pl);
    bk_put16(req + 4, (uint16_t)gl);
    bk_put16(req + 6, 0);
    memcpy(req + BK_SUB_REQ_FIXED, pattern, pl);
    if (gl)
        memcpy(req + BK_SUB_REQ_FIXED + pl, group, gl);
    *len = BK_SUB_REQ_FIXED + pl + gl;
    return 0;
}

int bk_pubsub_topic_check(const char *topic, size_t *len)
{
    if (!topic)
        return -EINVAL;
    *len = strnlen(topic, BK_MAX_TOPIC + 1);
    if (!bk_topic_valid(topic, *len))
        return -EINVAL;
    return bk_topic_reserved(topic, *len) ? -EACCES : 0;
}

BROKER_API int broker_subscribe(broker_t *b, const char *pattern,
                                const char *group,
                                broker_sub_policy_t policy, uint32_t *id)
{
    uint8_t req[BK_SUB_REQ_MAX];
    uint8_t *p = NULL;
    size_t len, plen = 0;
    int r;

    if (!id)
        return -EINVAL;
    *id = 0;
    r = bk_pubsub_sub_req(b, pattern, group, (int)policy, req, &len);
    if (r < 0)
        return r;
    r = bk_ctrl_call(b, BK_OP_SUBSCRIBE, req, len, -1, -1, &p, &plen);
    if (r == 0)
        *id = bk_ctrl_sub_id(p, plen);
    free(p);
    if (r == 0 && b->rc && !bk_recon_replaying(b) &&
        bk_recon_sub_add(b, pattern, group, (int)policy, *id, id) < 0) {
        (void)broker_unsubscribe(b, *id);
        *id = 0;
        return -ENOMEM;
    }
    return r;
}

BROKER_API int broker_unsubscribe(broker_t *b, uint32_t id)
{
    uint8_t req[4];
    uint32_t rid;
    int r;

    if (!b || id == 0)
        return -EINVAL;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    if (b->rc)
        id = bk_recon_sub_take(b, id);
    /* from now on, what still arrives for it is dropped */
    if (bk_subs_remove(b, id) < 0)
        return -ENOENT;
    bk_put32(req, id);
    if (bk_conn_attached(b))
        return bk_ctrl_send_async(b, BK_OP_UNSUBSCRIBE, req, sizeof(req),
                                  &rid);
    return bk_ctrl_call(b, BK_OP_UNSUBSCRIBE, req, sizeof(req), -1, -1,
                        NULL, NULL);
}

BROKER_API int broker_publish(broker_t *b, const char *topic,
                              const void *data, size_t len, const int *fds,
                              unsigned nfds)
{
    size_t tl;
    int r = bk_send_check(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    r = bk_pubsub_topic_check(topic, &tl);
    if (r < 0)
        return r;
    return bk_send_oneway(b, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, topic, 0,
                          data, len, fds, nfds, NULL);
}

BROKER_API int broker_publish_group(broker_t *b, uint32_t gateway,
                                    const char *topic, const void *data,
                                    size_t len, const int *fds,
                                    unsigned nfds)
{
    size_t tl;
    int r = bk_send_check(b, data, len, fds, nfds);

    if (r < 0)
        return r;
    if (gateway == 0)
        return -EINVAL;
    r = bk_pubsub_topic_check(topic, &tl);
    if (r < 0)
        return r;
    if (b->rc)
        gateway = bk_recon_sub_broker(b, gateway);
    return bk_send_oneway(b, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, topic,
                          gateway, data, len, fds, nfds, NULL);
}

BROKER_API int broker_buf_publish(broker_t *b, const char *topic,
                                  broker_buf_t *buf, size_t len)
{
    uint8_t desc[BK_SHM_DESC_SIZE];
    struct bk_sbuf *sb;
    size_t tl;
    int r;

    if (!b || !buf)
        return -EINVAL;
    r = bk_pubsub_topic_check(topic, &tl);
    if (r < 0)
        return r;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    r = bk_shm_buf_desc(b, buf, len, desc, &sb);
    if (r < 0)
        return r;
    return bk_send_oneway(b, BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE | BK_F_SHM,
                          topic, 0, desc, sizeof(desc), NULL, 0, sb);
}
