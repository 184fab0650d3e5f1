/*
 * ctrl.h - control requests a client sends to the broker itself
 * (prefix bk_ctrl_).
 *
 * Owns nothing that outlives a request: it decodes one CTRL frame, acts
 * through the modules that own the state (names, shm, monitor, inspect,
 * server) and answers with a CTRL_REPLY, the one place its negative
 * errnos become wire codes.
 */
#ifndef BK_CTRL_H
#define BK_CTRL_H

#include "port.h"

/* Handle one validated CTRL frame and send its CTRL_REPLY. */
/* fds: the frame's fds (one for SEGMENT, none otherwise); taken. */
void bk_ctrl_handle(bk_port_t *p, const bk_hdr_t *h, const uint8_t *payload,
                    int *fds);

/* Answer the CTRL frame h with err (a negative errno) without acting on
 * it: a request whose fd the broker could not take (port.c). */
void bk_ctrl_refuse(bk_port_t *p, const bk_hdr_t *h, int err);

#endif
