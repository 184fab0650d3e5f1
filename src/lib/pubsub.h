/*
 * pubsub.h - libbroker layer 7: publish/subscribe helpers shared by the
 * blocking API (api_pubsub.c) and the libuv one (async.c) (prefix
 * bk_pubsub_).  Not installed.
 *
 * Owns no state: it checks topics, patterns, groups and policies the way
 * the broker does, and encodes the SUBSCRIBE request.
 */
#ifndef BK_PUBSUB_H
#define BK_PUBSUB_H

#include "conn.h"

/* Encode a SUBSCRIBE request for pattern, group (NULL: none) and policy
 * into req (*len bytes).  0 or -EINVAL (bad pattern, group or policy). */
int bk_pubsub_sub_req(const broker_t *b, const char *pattern,
                      const char *group, int policy,
                      uint8_t req[BK_SUB_REQ_MAX], size_t *len);
/* Whether topic (NUL-terminated) may be published on: 0, -EINVAL (not a
 * valid topic) or -EACCES (the broker's own "$broker" topics, which the
 * broker refuses from every client).  *len its length. */
int bk_pubsub_topic_check(const char *topic, size_t *len);

#endif
