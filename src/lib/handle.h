/*
 * handle.h - libbroker layer 7: a broker_t as a whole (prefix
 * bk_handle_).  Not installed.
 *
 * Creates a handle's modules in layer order (conn, out, subs, streams,
 * ctrl, shm, shmview, in) and frees them in reverse, so that each module's
 * fini runs while the modules below it still exist; but shmview goes first:
 * from then on, messages the application still holds keep their segments
 * mapped without pushing releases.  The handle owns them all; the socket
 * goes last.
 */
#ifndef BK_HANDLE_H
#define BK_HANDLE_H

#include "conn.h"

/* A new handle on the connected socket fd, which it takes over on
 * success.  NULL: -ENOMEM (fd is left to the caller). */
broker_t *bk_handle_new(int fd);
/* Connect to the socket path sp and complete the handshake; with opts
 * non-NULL, the new handle takes its options (bk_conn_copy_opts) first.
 * 0 and *out, or a negative errno. */
int bk_handle_connect(const char *sp, const broker_t *opts, broker_t **out);
/* Free everything, close the socket.  Async calls are not told. */
void bk_handle_free(broker_t *b);

#endif
