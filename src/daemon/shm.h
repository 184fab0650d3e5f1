/*
 * shm.h - the broker's shared-memory bookkeeping (prefix bk_shm_).
 *
 * The broker never maps a payload.  It keeps, per client:
 *   - the segments the client owns: a read-only reopen of each sealed memfd
 *     (forwarded to receivers) and the ids of the clients it went to;
 *   - the segments the client was sent ("known"), with how many references
 *     into each it holds, so the owner's departure is announced only once
 *     every descriptor it sent there has been released;
 *   - the references it holds, by (owner, segment, offset), so releases
 *     are checked and a departing receiver's references go back to their
 *     owners.
 *
 * An owner may drop one segment (SEG_DROP from the client): it goes as on
 * the owner's departure, its fd is closed at once.
 *
 * Owns all of that (a bk_shm_port embedded in each port, freed by
 * bk_shm_port_gone), including each segment's read-only fd; receivers get
 * dups of it, which their output queue owns until sent.
 *
 * A receiver that did not declare BK_HELLO_SHM never gets a segment: a
 * descriptor for it becomes a body (outq.h bk_obody) that its output
 * queue reads out of the segment and sends as ordinary fragments.  The
 * body holds the segment's fd (counted, so it outlives the segment's
 * owner) and the receiver's reference, released on its behalf once the
 * last byte went out or the body was dropped.
 */
#ifndef BK_SHM_H
#define BK_SHM_H

#include <stdbool.h>
#include <stdint.h>
#include "htable.h"
#include "list.h"
#include "outq.h"
#include "proto.h"
#include "tree.h"

struct bk_port;

typedef struct bk_shm_port {
    bool maps;                  /* HELLO said BK_HELLO_SHM */
    bk_htable_t segs;           /* owned: segid -> bk_segment */
    uint32_t nsegs;
    /* Dropped segments some receiver still holds references into: their
     * segid stays taken (and counts towards max_segments) until every
     * receiver was sent SEG_DROP, so (owner, segid) never means two
     * segments to one receiver. */
    bk_htable_t dropped;        /* segid -> bk_segment, fd closed */
    uint32_t ndropped;
    uint64_t bytes;
    bk_htable_t known;          /* received: (owner, segid) -> bk_known */
    bk_htable_t held;           /* (owner, segid, offset) -> bk_held */
    uint64_t nheld;             /* references held */
    bool release_wait;          /* a release job waits for this owner's
                                 * queue to drain (bk_shm_owner_drained) */
} bk_shm_port_t;

/* Releases in bounded batches.  When a client goes, the references it
 * held are not given back all at once (a million of them blocked the
 * loop for 400 ms): its tables move, in O(1), to a release job, and each
 * loop pass gives back at most BK_SHM_RELEASE_BATCH of a job's entries
 * (server.c runs bk_shm_drain_step from an idle handle), so the other
 * clients are served in between.  The owners get coalesced RELEASE
 * frames (one per owner and pass, as many records as a packet holds);
 * a job pauses while the owner it comes to has more than queue_limit
 * bytes queued (bk_shm_owner_drained resumes it once that queue is below
 * half), so the broker's own frames respect the owner's limit within one
 * batch.  While a job still holds references into a segment its owner
 * dropped, the segment id stays taken (as for a live receiver), so a
 * late RELEASE never names a newer segment.  The references count in
 * shm_held (and on the departed client's user, whose record the job
 * holds) until they are released, and in shm_releasing meanwhile; each
 * is released exactly once, or dropped if its owner has gone too. */
#define BK_SHM_RELEASE_BATCH 1024u

typedef struct bk_shm_drain {
    bk_list_t jobs;             /* bk_shm_job.link, oldest first */
    uint32_t njobs;
    uint64_t pending;           /* references whose release is pending */
} bk_shm_drain_t;

struct bk_server;

void bk_shm_drain_init(bk_shm_drain_t *d);
/* Free every job without sending anything (the broker stops). */
void bk_shm_drain_fini(bk_shm_drain_t *d);
/* One pass: give back at most `budget` entries of the jobs, each job in
 * turn.  Returns true if a job could go on at once (call again next
 * pass), false if every job is done or waits for a full owner. */
bool bk_shm_drain_step(struct bk_server *s, uint32_t budget);
/* Owner p's queue is below half its limit again: jobs waiting for it
 * may go on.  Called by port.c when p->shm.release_wait is set. */
void bk_shm_owner_drained(struct bk_port *p);

void bk_shm_port_init(bk_shm_port_t *s);

/* CTRL SEGMENT: check and register the memfd `fd` (ownership taken).
 * Returns 0, -EINVAL (not a sealed memfd of that size on tmpfs), -EEXIST
 * (segid taken), -ENOSR (max_segments), -ENOSPC (max_shm) or -ENOMEM. */
int bk_shm_register(struct bk_port *p, const uint8_t *payload, int fd);

/* A DATA frame with BK_F_SHM from `from`: 0 if its descriptor names one of
 * from's segments and lies inside it, else -EPROTO with *why set. */
int bk_shm_check(struct bk_port *from, const uint8_t *desc, const char **why);

/* The descriptor is about to be queued for `to`: send `to` the segment
 * first if it never got it, and count the reference `to` now holds.  If
 * `to` does not map segments, *body is the body to queue instead (its
 * ownership the caller's); else NULL.  Returns 0, -EMSGSIZE (a body
 * larger than max_msg) or -ENOMEM. */
int bk_shm_deliver(struct bk_port *from, struct bk_port *to,
                   const uint8_t *desc, bk_obody_t **body);

/* The descriptor was published to n receivers (n references counted by
 * bk_shm_deliver): `from` sent one, so it will hear one release, once
 * the last receiver released its view.  Returns 0 or -ENOMEM. */
int bk_shm_fanout(struct bk_port *from, const uint8_t *desc, uint32_t n);

/* The descriptor was not delivered: give the reference back to `from`. */
void bk_shm_undelivered(struct bk_port *from, const uint8_t *desc);
/* bk_shm_deliver counted the reference for `to` but the descriptor could
 * not be queued: `to` no longer holds it, and `from` gets it back. */
void bk_shm_unhold(struct bk_port *from, struct bk_port *to,
                   const uint8_t *desc);

/* A RELEASE frame from `p`.  Returns 0 or -EPROTO (releases a reference
 * it does not hold) with *why set. */
int bk_shm_release(struct bk_port *p, const uint8_t *payload, uint32_t len,
                   const char **why);

/* A SEG_DROP frame from `p`: its segment goes as when its owner leaves
 * (receivers hear SEG_DROP once they hold no reference into it).
 * Returns 0 or -EPROTO (not a segment it registered) with *why set. */
int bk_shm_drop(struct bk_port *p, const uint8_t *payload, const char **why);

/* For listings: the segment behind a node of the server's shm_index
 * (every registered segment, by registration number). */
void bk_shm_seg_info(const bk_tnode_t *n, uint64_t *owner, uint32_t *segid,
                     uint64_t *size, uint32_t *nreceivers);

/* `p` is going away: its references go to a release job (above), its
 * segments are closed and announced gone to those who got them. */
void bk_shm_port_gone(struct bk_port *p);

#endif
