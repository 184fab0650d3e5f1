/*
 * shm.h - libbroker layer 5: shared memory (prefix bk_shm_).  Not
 * installed.
 *
 * Owns b->shm: the pool of our sealed memfd segments (shmalloc.c cuts
 * them into buffers), the buffers handed out (struct bk_sbuf, public part
 * broker_buf_t), and the table of segments other clients shared with us
 * (struct bk_rseg) that received messages view.
 *
 * Ownership:
 *   - a struct bk_sbuf is freed when no reference is left: the
 *     application's (broker_buf_alloc .. broker_buf_free) and one per
 *     descriptor sent and not yet released.  A descriptor's reference is
 *     taken by bk_shm_auto() or bk_shm_buf_desc(), travels with the
 *     message through the output layer, and comes back by a RELEASE from
 *     the broker (bk_shm_on_release) or, if the descriptor never left the
 *     library, by bk_shm_unsent() (outq.c's unsent hook);
 *   - a struct bk_rseg is mapped once and lives while it is in the table
 *     or viewed: every message pointing into it holds a view
 *     (bk_shm_view_get .. bk_shm_view_put), and the end of a view pushes
 *     a RELEASE record into the output layer while the connection lives.
 */
#ifndef BK_SHM_H
#define BK_SHM_H

#include "conn.h"

struct bk_sbuf;                 /* a buffer of our pool */
struct bk_rseg;                 /* a segment another client shared with us */

/* Positive outcomes of bk_shm_auto. */
#define BK_SHM_AS_IS    0       /* send the message as it is */
#define BK_SHM_POOLED   1       /* it now is a descriptor of a pool buffer */

int bk_shm_create(broker_t *b);
/* The connection is closing: segments nobody looks at are unmapped now,
 * the others once their last message is freed.  No release is pushed any
 * more (the broker releases everything a departing client held). */
void bk_shm_close_rx(broker_t *b);
void bk_shm_destroy(broker_t *b);

/* ---- our pool ----------------------------------------------------------- */

/* Whether the broker takes shared memory from us. */
bool bk_shm_supported(const broker_t *b);
/* Get a buffer without waiting for releases (a new segment may need a
 * round trip to the broker, bounded by deadline).  Returns 0, -EAGAIN if
 * it will fit once buffers are released, -ENOSPC if it never can, or
 * another negative errno. */
int bk_shm_get(broker_t *b, size_t size, int64_t deadline,
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
/* A descriptor's reference that never reached the broker. */
void bk_shm_unsent(struct bk_sbuf *sb);
/* RELEASE from the broker: receivers are done with our buffers.  0. */
int bk_shm_on_release(broker_t *b, const bk_hdr_t *h, const uint8_t *p);

/* ---- segments of others ------------------------------------------------- */

/* SEGMENT: another client's segment, announced before its first
 * descriptor.  Takes fd.  A segment that fails the checks is remembered
 * as bad: descriptors into it are released and reported.  0 or
 * -ENOMEM. */
int bk_shm_on_segment(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                      int fd);
/* SEG_DROP: the owner is gone.  Messages still pointing into the segment
 * keep it mapped until they are freed.  0. */
int bk_shm_on_seg_drop(broker_t *b, const bk_hdr_t *h, const uint8_t *p);
/* Find the segment a descriptor from `owner` points into.  Returns 0,
 * -EBADMSG (the segment failed its checks) or -EPROTO (unknown segment,
 * or the range does not fit). */
int bk_shm_lookup(broker_t *b, uint64_t owner, const bk_shm_desc_t *d,
                  struct bk_rseg **out);
/* A message now points into seg at off: its data. */
void *bk_shm_view_get(struct bk_rseg *seg, uint64_t off);
/* A message viewing seg at off is freed: its RELEASE record is pushed. */
void bk_shm_view_put(struct bk_rseg *seg, uint64_t off);
/* The connection seg belongs to, NULL once it is closed. */
broker_t *bk_shm_view_conn(const struct bk_rseg *seg);
/* Push a RELEASE record for one descriptor of owner's we will not keep. */
void bk_shm_release(broker_t *b, uint64_t owner, uint32_t segid,
                    uint64_t off);

#endif
