/*
 * ctrl.h - libbroker layer 4: the control request in flight (prefix
 * bk_ctrl_).  Not installed.
 *
 * Owns the one CTRL request a connection has outstanding (b->ctrl): its
 * id, and the reply once it arrives (code and payload).  A request is
 * written directly in blocking mode, or through the output ring's control
 * queue (outq.h) in attached mode; the reply comes back from the input
 * layer through bk_ctrl_on_reply().
 *
 * Ownership: the reply payload is malloc()ed by bk_ctrl_on_reply() and
 * handed to the caller of bk_ctrl_call() (who frees it), or freed.
 */
#ifndef BK_CTRL_H
#define BK_CTRL_H

#include "conn.h"

int bk_ctrl_init(broker_t *b);
void bk_ctrl_fini(broker_t *b);

/* Send a CTRL request (with fd attached unless it is -1; the caller
 * keeps it) and wait for its reply until deadline.  Returns the broker's
 * answer (0 or a negative errno) or the failure to get one, and, when
 * payload is not NULL, the reply payload (malloc, owned by the caller;
 * NULL when empty). */
int bk_ctrl_call(broker_t *b, uint32_t op, const void *arg, size_t len,
                 int fd, int64_t deadline, uint8_t **payload, size_t *plen);

/* CTRL_REPLY frame from the broker (a reply to no request is ignored).
 * Always 0. */
int bk_ctrl_on_reply(broker_t *b, const bk_hdr_t *h, const uint8_t *p);

#endif
