/*
 * shm.h - libbroker layer 5: our shared-memory pool (prefix bk_shm_).
 * Not installed.
 *
 * Owns b->shm: the pool of our sealed memfd segments (shmalloc.c cuts
 * them into buffers) and the buffers handed out (struct bk_sbuf, public
 * part broker_buf_t).  The segments other clients share with us are
 * shmview.h's.
 *
 * Ownership:
 *   - a segment's memfd stays open (for fallocate) until every chunk of
 *     it has been handed out once, or until bk_shm_destroy;
 *   - a struct bk_sbuf is freed when no reference is left: the
 *     application's (broker_buf_alloc .. broker_buf_free) and one per
 *     descriptor sent and not yet released.  A descriptor's reference is
 *     taken by bk_shm_auto() or bk_shm_buf_desc(), travels with the
 *     message through the output layer, and comes back by a RELEASE from
 *     the broker (bk_shm_on_release) or, if the descriptor never left the
 *     library, by bk_shm_unsent() (outq.c's unsent hook).
 */
#ifndef BK_SHM_H
#define BK_SHM_H

#include "conn.h"

struct bk_sbuf;                 /* a buffer of our pool */

/* Positive outcomes of bk_shm_auto. */
#define BK_SHM_AS_IS    0       /* send the message as it is */
#define BK_SHM_POOLED   1       /* it now is a descriptor of a pool buffer */

/* Allocate b->shm; 0 or -ENOMEM. */
int bk_shm_create(broker_t *b);
/* Unmap every segment, free every buffer. */
void bk_shm_destroy(broker_t *b);

/* Whether the broker takes shared memory from us. */
bool bk_shm_supported(const broker_t *b);
/* Get a buffer, memory used before first (shm.c explains the order).
 * Blocking mode reads the releases already there when no used memory is
 * free; with may_wait it then waits for a release a little (no longer
 * than new memory would take to fault in, nor than deadline) before it
 * takes new memory; a new segment may need a round trip to the broker,
 * bounded by deadline.  Beyond that short wait it does not wait for a
 * full pool: returns 0, -EAGAIN if it will fit once buffers are
 * released, -ENOSPC if it never can, or another negative errno. */
int bk_shm_get(broker_t *b, size_t size, bool may_wait, int64_t deadline,
               struct bk_sbuf **out);
/* The automatic path: should this message travel through the pool?
 * Nothing to decide when *out already holds a buffer or the message is a
 * descriptor.  Returns BK_SHM_AS_IS, or BK_SHM_POOLED after copying the
 * data into a pool buffer (*out, holding one reference) and turning the
 * message into its descriptor: *data points at desc, *len and *flags
 * follow; or a negative errno.  Blocking mode with fallback off waits for
 * releases until deadline. */
int bk_shm_auto(broker_t *b, const void **data, size_t *len,
                uint8_t *flags, unsigned nfds, int64_t deadline,
                struct bk_sbuf **out, uint8_t desc[BK_SHM_DESC_SIZE]);
/* broker_buf_send: the descriptor of len bytes of the application's buf
 * in desc, taking a reference for it (*out).  0, -EINVAL (not a buffer of
 * b's, freed, or len too large), -EMSGSIZE or -ENOBUFS. */
int bk_shm_buf_desc(broker_t *b, broker_buf_t *buf, size_t len,
                    uint8_t desc[BK_SHM_DESC_SIZE], struct bk_sbuf **out);
/* BROKER_OPT_SHM_RESERVE: the pool's first segments, up to `bytes` in
 * all, are marked reserved (never dropped while idle) and every page of
 * them allocated and mapped; the pool grows by new segments (a round
 * trip to the broker each, bounded by deadline) until they hold `bytes`.
 * 0 ends the reservation.  Returns 0, -ENOTSUP (the broker takes no
 * shared memory from us), -ENOSPC (the pool's limits do not allow that
 * much; what fit stays reserved) or another negative errno. */
int bk_shm_reserve(broker_t *b, uint64_t bytes, int64_t deadline);
/* A descriptor's reference that never reached the broker. */
void bk_shm_unsent(struct bk_sbuf *sb);
/* When the next segment of the pool turns idle long enough to be dropped
 * (bk_io_now_ms time in *when); false if none will (BROKER_OPT_SHM_IDLE_MS). */
bool bk_shm_idle_next(const broker_t *b, uint64_t *when);
/* Drop the segments idle for BROKER_OPT_SHM_IDLE_MS: unmapped, closed, and
 * a SEG_DROP queued for the broker. */
void bk_shm_idle_run(broker_t *b);
/* RELEASE from the broker: receivers are done with our buffers.  0. */
int bk_shm_on_release(broker_t *b, const bk_hdr_t *h, const uint8_t *p);

#endif
