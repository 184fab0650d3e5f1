/*
 * in.h - libbroker layer 6: input (prefix bk_in_).  Not installed.
 *
 * Owns b->in: the reassembly table (src/common/reasm.c), the FIFO of
 * received messages waiting for the application, and the watch of the
 * blocking operation in progress (the one message on its stream it
 * captures).  It reads packets (io.h), checks every frame and dispatches
 * it: DATA through reassembly (or, with BK_F_SHM, as a view of a shared
 * segment) into struct bk_msg objects; CLOSE / ERROR / GAP into events;
 * control replies, WELCOME and shared-memory frames to the modules that
 * own them.  A publication's topic and subscription id (first fragment)
 * stay on its stream entry for every piece of it; a publication or GAP
 * whose subscription is not live (subs.h) is dropped, fds closed and
 * shared memory released.
 * It also implements the socket layer's wait and pump hooks.
 *
 * Bounds: the FIFO holds at most BROKER_OPT_MAX_QUEUED bytes (see
 * bk_in_queued) as far as reading for it goes: once there, nothing more
 * is read until the application takes messages, so the socket fills and
 * the broker's flow control holds the senders back.  Only a blocking
 * operation reads on, to a ceiling (bk_in_wait).  The reassembly table
 * holds at most BROKER_OPT_MAX_PARTIAL_BYTES of partial messages.
 *
 * Ownership: a message is owned by the FIFO until popped, by the watch
 * slot until bk_in_watch_end(), then by whoever took it.  A message that
 * answers an async call is tagged with it (m->acall) and goes to the FIFO;
 * hooks.call_answered tells async.c at once so that the call stops
 * waiting.
 */
#ifndef BK_IN_H
#define BK_IN_H

#include "conn.h"
#include "msg.h"

struct bk_in_hooks {
    /* ac (s->acall of the message's stream) has its answer in the FIFO. */
    void (*call_answered)(broker_t *b, struct bk_acall *ac);
};

/* Allocate b->in and register the socket layer's hooks.  0 or -ENOMEM. */
int bk_in_init(broker_t *b);
void bk_in_set_hooks(broker_t *b, const struct bk_in_hooks *hooks);
/* Free the FIFO, the watched message and the reassembly table. */
void bk_in_fini(broker_t *b);
/* The options changed: new reassembly limits. */
void bk_in_set_limits(broker_t *b);

/* ---- the FIFO ----------------------------------------------------------- */
void bk_in_push(broker_t *b, struct bk_msg *m);
struct bk_msg *bk_in_pop(broker_t *b);
bool bk_in_has_msgs(const broker_t *b);
/* What the FIFO's messages count against BROKER_OPT_MAX_QUEUED: each its
 * object's size plus its payload (a view of shared memory: the object
 * only). */
uint64_t bk_in_queued(const broker_t *b);
/* The FIFO is at its bound: reading for it stops (bk_in_pump reads
 * nothing; an attached connection stops polling for input). */
bool bk_in_full(const broker_t *b);

/* ---- the watch of a blocking operation ---------------------------------- */
/* Capture the next CLOSE/ERROR on sid (and with data, DATA too). */
void bk_in_watch_begin(broker_t *b, uint32_t sid, bool data);
/* Whether a message was captured. */
bool bk_in_watch_caught(const broker_t *b);
/* Stop watching; the captured message (owned by the caller) or NULL. */
struct bk_msg *bk_in_watch_end(broker_t *b);

/* ---- reading ------------------------------------------------------------ */
/* Read and handle up to budget packets that are there now, but none while
 * the FIFO is full (bk_in_full).  Returns the number read or the sticky
 * error. */
int bk_in_pump(broker_t *b, unsigned budget);
/* The same past the bound, up to the ceiling of blocking waits (see
 * bk_in_wait): for what a failing connection still has to say. */
int bk_in_pump_past(broker_t *b, unsigned budget);
/* A receive's first look at the socket: bk_in_pump, unless the last wait
 * (bk_in_wait) woke to a single packet: a request/reply client then goes
 * straight to bk_in_wait, whose poll tells when the reply is there, one
 * read that finds nothing less per reply.  Returns what bk_in_pump does,
 * or 0 if it did not pump. */
int bk_in_first_pump(broker_t *b);
/* See bk_io_wait().  A blocking operation must read while it waits (for
 * its answer, or for the broker to take its packet), so this reads past
 * the FIFO's bound, up to a ceiling: the bound plus the larger of the
 * bound and twice the broker's queue_limit (all the broker may hold for
 * us ahead of an answer).  At the ceiling it reads no more and returns
 * -ENOBUFS: the operation fails instead of the memory growing. */
int bk_in_wait(broker_t *b, bool want_write, int64_t deadline);
/* Expire partial messages whose time is up, and drop the pool's segments
 * idle long enough (shm.h bk_shm_idle_run). */
void bk_in_run_expiry(broker_t *b);
/* When the next partial message expires or pool segment turns idle long
 * enough (false: neither will). */
bool bk_in_next_deadline(const broker_t *b, uint64_t *when);

/* Drop what is reassembled on stream sid (from any source). */
void bk_in_drop_stream(broker_t *b, uint32_t sid);
/* bk_stream_abort(), dropping what is reassembled of sid first. */
void bk_in_abort_stream(broker_t *b, uint32_t sid, int err);

#endif
