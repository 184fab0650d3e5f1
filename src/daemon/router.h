/*
 * router.h - routing of DATA and CLOSE frames between clients
 * (prefix bk_router_).
 *
 * Owns no memory of its own: it decides where a frame goes and what the
 * stream table (streams.h, which owns the streams and tombstones) and the
 * receivers' output queues get.  The fds of a routed frame are the
 * router's from bk_router_frame until it passes them to bk_port_send or
 * closes them.
 */
#ifndef BK_ROUTER_H
#define BK_ROUTER_H

#include "port.h"

/* Route one validated DATA or CLOSE frame from `from`.  Takes ownership of
 * fds[0..nfds): they are forwarded with the frame or closed. */
void bk_router_frame(bk_port_t *from, const bk_hdr_t *h,
                     const uint8_t *payload, int *fds, unsigned nfds);

/* `p` is going away: every stream it has ends, and each peer gets an
 * ERROR (ECONNRESET) on its side of the stream. */
void bk_router_port_gone(bk_port_t *p);

/* Refuse the DATA frame h (which carried fds) with err and text, as a
 * message that cannot be delivered: a first fragment as any refused
 * message (a tombstone swallows the rest), a further message on an open
 * stream by resetting the stream at both ends. */
void bk_router_refuse(bk_port_t *from, const bk_hdr_t *h,
                      const uint8_t *payload, int err, const char *text);

#endif
