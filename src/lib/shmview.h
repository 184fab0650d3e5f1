/*
 * shmview.h - libbroker layer 5: the segments other clients share with
 * us, and the views messages hold on them (prefix bk_shmview_).  Not
 * installed.
 *
 * Owns b->views: the table of segments (struct bk_rseg) announced by
 * SEGMENT frames, each mapped read-only once.
 *
 * Ownership: a struct bk_rseg lives while it is in the table or viewed.
 * Every received message pointing into it holds a view
 * (bk_shmview_get .. bk_shmview_put); the end of a view pushes a RELEASE
 * record into the output layer (outq.h) while the connection lives.  Once
 * the owner is gone (SEG_DROP) or the connection closes, the segment
 * leaves the table and is unmapped with its last view.
 */
#ifndef BK_SHMVIEW_H
#define BK_SHMVIEW_H

#include "conn.h"

struct bk_rseg;                 /* a segment another client shared with us */

/* Allocate b->views; 0 or -ENOMEM. */
int bk_shmview_init(broker_t *b);
/* The connection is closing: segments nobody looks at are unmapped now,
 * the others once their last message is freed.  No release is pushed any
 * more (the broker releases everything a departing client held). */
void bk_shmview_fini(broker_t *b);
/* b's module now lives in b (recon.c moved it between handles). */
void bk_shmview_rebind(broker_t *b);

/* SEGMENT: another client's segment, announced before its first
 * descriptor.  Takes fd.  A segment that fails the checks is remembered
 * as bad: descriptors into it are released and reported.  0 or
 * -ENOMEM. */
int bk_shmview_on_segment(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                          int fd);
/* SEG_DROP: the owner is gone.  Messages still pointing into the segment
 * keep it mapped until they are freed.  0. */
int bk_shmview_on_seg_drop(broker_t *b, const bk_hdr_t *h,
                           const uint8_t *p);
/* Find the segment a descriptor from `owner` points into.  Returns 0,
 * -EBADMSG (the segment failed its checks) or -EPROTO (unknown segment,
 * or the range does not fit). */
int bk_shmview_lookup(broker_t *b, uint64_t owner, const bk_shm_desc_t *d,
                      struct bk_rseg **out);
/* A message now points into seg at off: its data. */
void *bk_shmview_get(struct bk_rseg *seg, uint64_t off);
/* A message viewing seg at off is freed: its RELEASE record is pushed. */
void bk_shmview_put(struct bk_rseg *seg, uint64_t off);
/* The connection seg belongs to, NULL once it is closed. */
broker_t *bk_shmview_conn(const struct bk_rseg *seg);
/* Push a RELEASE record for one descriptor of owner's we will not keep. */
void bk_shmview_release(broker_t *b, uint64_t owner, uint32_t segid,
                        uint64_t off);

#endif
