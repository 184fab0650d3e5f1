/*
 * ctrl.h - libbroker layer 4: the control request in flight (prefix
 * bk_ctrl_).  Not installed.
 *
 * Owns the one CTRL request a connection has outstanding and waits for
 * (b->ctrl): its id, and the reply once it arrives (code and payload).  A
 * request is written directly in blocking mode, or through the output
 * ring's control queue (outq.h) in attached mode; the reply comes back
 * from the input layer through bk_ctrl_on_reply().
 *
 * Also the asynchronous requests of attached mode (bk_ctrl_send_async):
 * their ids and ops until the reply arrives, which then goes to
 * hooks.async_reply (async.c) while the input is being read.
 *
 * A successful SUBSCRIBE reply, blocking or not, puts the granted id in
 * the live set (subs.h) at once, before the frames after it are handled.
 *
 * Ownership: the reply payload is malloc()ed by bk_ctrl_on_reply() and
 * handed to the caller of bk_ctrl_call() (who frees it), or freed.  An
 * async reply's payload is only lent to the hook.
 */
#ifndef BK_CTRL_H
#define BK_CTRL_H

#include "conn.h"

struct bk_ctrl_hooks {
    /* The reply to async request id: code (0 or a negative errno) and
     * payload (lent for the call).  Runs while input is read. */
    void (*async_reply)(broker_t *b, uint32_t id, int code,
                        const uint8_t *p, size_t len);
};

int bk_ctrl_init(broker_t *b);
void bk_ctrl_set_hooks(broker_t *b, const struct bk_ctrl_hooks *hooks);
/* Forget the async requests too (their replies will be ignored). */
void bk_ctrl_fini(broker_t *b);

/* Send a CTRL request (with fd attached unless it is -1; the caller
 * keeps it) and wait for its reply until deadline.  Returns the broker's
 * answer (0 or a negative errno) or the failure to get one, and, when
 * payload is not NULL, the reply payload (malloc, owned by the caller;
 * NULL when empty). */
int bk_ctrl_call(broker_t *b, uint32_t op, const void *arg, size_t len,
                 int fd, int64_t deadline, uint8_t **payload, size_t *plen);

/* Queue a request in attached mode without waiting for its reply; the
 * request id in *id.  0 or a negative errno. */
int bk_ctrl_send_async(broker_t *b, uint32_t op, const void *arg,
                       size_t len, uint32_t *id);

/* The subscription id a SUBSCRIBE reply payload carries, or 0 when it is
 * malformed. */
uint32_t bk_ctrl_sub_id(const uint8_t *p, size_t len);

/* CTRL_REPLY frame from the broker (a reply to no request is ignored).
 * Always 0. */
int bk_ctrl_on_reply(broker_t *b, const bk_hdr_t *h, const uint8_t *p);

#endif
