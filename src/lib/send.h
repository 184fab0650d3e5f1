/*
 * send.h - libbroker layer 7: sending a message (prefix bk_send_).  Not
 * installed.
 *
 * Owns no state: it is the one path a DATA message takes out, choosing
 * between the shared-memory pool (shm.h), a blocking send fragmented from
 * the caller's memory, and a copy queued on its stream (outq.h) in
 * attached mode; and it finishes a blocking send with what the watch
 * (in.h) caught meanwhile.
 *
 * The sb argument: a descriptor of a pool buffer (data/len are its
 * encoded form) whose reference the call takes over, giving it back if
 * the descriptor is never sent.  With sb NULL, large messages may take
 * the automatic shared-memory path.  The caller's data and fds are only
 * borrowed: a queued message holds copies.
 */
#ifndef BK_SEND_H
#define BK_SEND_H

#include "conn.h"

struct bk_sbuf;

/* Positive outcome of bk_send_queued. */
#define BK_SEND_QUEUED  1       /* a copy waits on its stream's queue */

/* The checks every send makes: 0, -EINVAL, -EMSGSIZE or why b is not
 * usable. */
int bk_send_check(const broker_t *b, const void *data, size_t len,
                  const int *fds, unsigned nfds);
/* Send a message now, waiting (and reading) while the socket is full.
 * 0 or a negative errno (-ECANCELED: the watched stream ended). */
int bk_send_blocking(broker_t *b, uint32_t sid, uint8_t flags,
                     const char *name, uint64_t dest, const void *data,
                     size_t len, const int *fds, unsigned nfds,
                     int64_t deadline, struct bk_sbuf *sb);
/* Send a message without blocking: directly if it is one frame and
 * nothing else waits, else as a copy queued on its stream (the entry is
 * created if needed).  Returns 0 when sent, BK_SEND_QUEUED, or a negative
 * errno. */
int bk_send_queued(broker_t *b, uint32_t sid, uint8_t flags,
                   const char *name, uint64_t dest, const void *data,
                   size_t len, const int *fds, unsigned nfds,
                   struct bk_sbuf *sb);
/* Finish a blocking send begun with bk_in_watch_begin(): an abort caused
 * by the watched stream returns that stream's error; any other captured
 * event goes to the FIFO.  Returns r or that error. */
int bk_send_finish(broker_t *b, int r);
/* A one-way message on a fresh stream (OPEN and CLOSE on one message),
 * blocking or queued as b is attached.  0 or a negative errno. */
int bk_send_oneway(broker_t *b, uint8_t flags, const char *name,
                   uint64_t dest, const void *data, size_t len,
                   const int *fds, unsigned nfds, struct bk_sbuf *sb);

#endif
