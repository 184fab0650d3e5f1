/*
 * async.h - libbroker layer 7: the libuv attachment (prefix bk_async_).
 * Not installed.
 *
 * Owns b->as, the loop's handles and the async calls (struct bk_acall)
 * of an attached connection; the public functions broker_attach,
 * broker_call_async and broker_pending are in async.c.
 */
#ifndef BK_ASYNC_H
#define BK_ASYNC_H

#include "conn.h"

/* broker_close on an attached connection: cancel what waits, then close
 * the handles; memory and the socket go once libuv has released them
 * (bk_handle_free). */
void bk_async_close(broker_t *b);

#endif
