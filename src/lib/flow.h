/*
 * flow.h - libbroker layer 4: the receivers the broker has called busy
 * (prefix bk_flow_).  Not installed.
 *
 * Owns struct bk_flow (b->flow): the receivers a FLOW BUSY frame named,
 * each with the name it was addressed by, until FLOW READY for it.  A new
 * message to one of them waits (blocking mode) or fails with -EAGAIN
 * (attached mode) at bk_flow_gate, so that a full receiver holds back
 * only what is addressed to it and the broker never has to stop reading
 * this connection (broker-protocol(7), FLOW CONTROL).
 */
#ifndef BK_FLOW_H
#define BK_FLOW_H

#include "conn.h"

/* Allocate b->flow; 0 or -ENOMEM. */
int bk_flow_init(broker_t *b);
void bk_flow_fini(broker_t *b);

/* A FLOW frame (validated by frame.c).  0 or -ENOMEM. */
int bk_flow_on_frame(broker_t *b, const bk_hdr_t *h, const uint8_t *p);

/* Whether a new message to name, to client id, or on our stream sid (each
 * NULL or 0 when it does not apply) would go to a receiver the broker
 * called busy. */
bool bk_flow_busy(const broker_t *b, const char *name, uint64_t id,
                  uint32_t sid);

/* Before a new message of len bytes to name / id / on stream sid (as for
 * bk_flow_busy): in blocking mode, look
 * at the input now and then (a sender that never reads learns of a busy
 * receiver all the same), and wait while the destination is busy, until
 * deadline (-1: none).  0 (go ahead), -EAGAIN (attached mode: busy),
 * -ETIMEDOUT, or the connection's error. */
int bk_flow_gate(broker_t *b, const char *name, uint64_t id, uint32_t sid,
                 size_t len, int64_t deadline);

#endif
