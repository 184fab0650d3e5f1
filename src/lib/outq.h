/*
 * outq.h - libbroker layer 3: the output queues and packing (prefix
 * bk_out_).  Not installed.
 *
 * Owns everything on its way to the socket:
 *   - struct bk_omsg, an outgoing message (or CLOSE / CTRL frame) and its
 *     framing cursor;
 *   - per-stream queues (struct bk_outq, embedded in the stream that owns
 *     it, stream.h) and the round-robin ring of those with work;
 *   - the urgent queue: frames the library itself generates (CLOSE of a
 *     refused message, the terminator of a cut-short one), ahead of data;
 *   - the control queue: the one CTRL request of ctrl.c in attached mode,
 *     and the queue of ctrl.c's asynchronous requests;
 *   - RELEASE records pushed by shmview.c, packed into one frame;
 *   - the staged packet and its fds, and flushing it to the socket.
 *
 * Ownership:
 *   - a queued omsg (owned == true, from bk_out_copy) owns its copy of
 *     payload and name and its dup()ed fds; it is freed when its last
 *     frame is staged or its queue is dropped.  A stack omsg built by a
 *     blocking send (owned == false) borrows the caller's memory;
 *   - m->shm is a shared-memory buffer reference (shm.h) the queued
 *     message holds until its frame is staged (the reference then
 *     travels with the descriptor) or it is dropped (hooks.unsent gives
 *     it back);
 *   - fds of staged frames belong to the staged packet until it is
 *     written (then closed: the kernel holds its own copies).
 *
 * Notifications up go through bk_out_hooks, registered by stream.c
 * (drained) and shm.c (unsent).
 */
#ifndef BK_OUTQ_H
#define BK_OUTQ_H

#include "conn.h"

struct bk_sbuf;

struct bk_omsg {
    bk_list_t link;             /* on a bk_outq's msgs, or the urgent queue */
    uint8_t type;               /* BK_T_DATA, BK_T_CLOSE or BK_T_CTRL */
    uint8_t flags;              /* DATA: BK_F_OPEN | BK_F_NAME or
                                   BK_F_TOPIC | BK_F_CLOSE | BK_F_SHM */
    uint8_t namelen;
    bool started;               /* the first frame has been sent/staged */
    bool owned;                 /* heap copy: owns data and fds */
    uint32_t stream;            /* CTRL: request id */
    uint32_t aux;               /* CLOSE: wire code; CTRL: op */
    uint64_t dest;
    const char *name;           /* BK_F_NAME: the name; BK_F_TOPIC: the
                                   topic (namelen bytes, first frame) */
    const uint8_t *data;
    size_t len;
    size_t off;                 /* data bytes already framed */
    const int *fds;
    unsigned nfds;
    struct bk_sbuf *shm;        /* descriptor of a pool buffer not yet
                                   staged: its reference */
};

/* Flags whose first frame carries namelen bytes of m->name before the
 * data, counted in aux. */
#define BK_OUT_PREFIXED (BK_F_NAME | BK_F_TOPIC)

/* A stream's pending output (attached mode).  A queue whose first
 * message is a whole one-way message (OPEN and CLOSE: broker_send,
 * broker_publish) is a one-way queue: one-way queues take the ring one
 * at a time, in the order they were queued, so one-way messages leave
 * (and arrive) in the order they were sent even when they are cut into
 * fragments; the others wait on the one-way line. */
struct bk_outq {
    bk_list_t msgs;             /* struct bk_omsg, oldest first */
    bk_list_t ring;             /* on the ring (or the one-way line) while
                                   msgs is not empty */
    bool oneway;                /* a one-way queue, see above */
    bool wire;                  /* a frame of the stream went out */
    bool closing;               /* our last frame is queued: hooks.drained
                                   once it is staged */
};

struct bk_out_hooks {
    /* q (closing) has staged its last frame. */
    void (*drained)(broker_t *b, struct bk_outq *q);
    /* A queued descriptor's reference never left the library. */
    void (*unsent)(broker_t *b, struct bk_sbuf *sb);
};

/* Allocate b->out and its staging buffer; 0 or -ENOMEM. */
int bk_out_init(broker_t *b);
/* Register the hooks hooks sets (not NULL); stream.c and shm.c each
 * register their own. */
void bk_out_set_hooks(broker_t *b, const struct bk_out_hooks *hooks);
/* After the handshake: the staging buffer grows to b->pkt_cap. */
int bk_out_resize(broker_t *b);
/* Free every queue but the streams' (dropped by stream.c before). */
void bk_out_fini(broker_t *b);

/* ---- outgoing messages and their frames --------------------------------- */

/* Heap copy of a message: payload, name and dup()ed fds in one block.
 * 0 or a negative errno. */
int bk_out_copy(uint8_t type, uint8_t flags, uint32_t stream, uint32_t aux,
                uint64_t dest, const char *name, size_t namelen,
                const void *data, size_t len, const int *fds, unsigned nfds,
                struct bk_omsg **out);
/* Describe the next frame of m that fits in room bytes (false: none
 * does).  packing: the frame joins others in a packet, so do not cut a
 * tiny fragment. */
bool bk_out_plan(const struct bk_omsg *m, size_t room, bool packing,
                 bk_hdr_t *h, size_t *chunk);
/* Gather a planned frame: header, name (first DATA fragment) and data.
 * Returns the number of iov entries used. */
int bk_out_iov(const struct bk_omsg *m, const bk_hdr_t *h, size_t c,
               uint8_t hdr[BK_HDR_SIZE], struct iovec iov[3]);
void bk_out_advance(struct bk_omsg *m, size_t chunk);
bool bk_out_done(const struct bk_omsg *m);

/* ---- queues ------------------------------------------------------------- */

void bk_outq_init(struct bk_outq *q);
/* Queue m (from bk_out_copy) on q and put q on the ring. */
void bk_out_push(broker_t *b, struct bk_outq *q, struct bk_omsg *m);
/* Take q off the ring and free its messages. */
void bk_out_drop(broker_t *b, struct bk_outq *q);
/* Whether q's head message is DATA cut short after its first frame; its
 * flags in *flags. */
bool bk_out_half_sent(const struct bk_outq *q, uint8_t *flags);

/* Queue a CLOSE frame carrying err (negative errno or 0): on q after its
 * pending data, or (q NULL) on the urgent queue.  0 or -ENOMEM (then made
 * the sticky error). */
int bk_out_queue_close(broker_t *b, uint32_t stream, int err,
                       struct bk_outq *q);
/* Queue on the urgent queue the empty last fragment that ends a message
 * the broker stopped swallowing half way.  0 or -ENOMEM (sticky). */
int bk_out_queue_terminator(broker_t *b, uint32_t stream, uint8_t flags);
/* Queue on the urgent queue the SEG_DROP that unregisters our segment
 * segid at the broker.  0 or -ENOMEM (sticky). */
int bk_out_queue_seg_drop(broker_t *b, uint32_t segid);

/* The control request in attached mode: it takes its turn in the ring,
 * so it reaches the broker after the first frame of every message queued
 * before it without waiting for their tails.  0 or a negative errno. */
int bk_out_queue_ctrl(broker_t *b, uint32_t id, uint32_t op, const void *arg,
                      size_t len, const int *fds, unsigned nfds);
/* A request whose reply nobody waits for here (ctrl.c matches it by
 * id): queued in the ring after what was queued before, never withdrawn.
 * 0 or a negative errno. */
int bk_out_queue_ctrl_async(broker_t *b, uint32_t id, uint32_t op,
                            const void *arg, size_t len);
/* Whether the queued request has not been written to the socket yet. */
bool bk_out_ctrl_queued(const broker_t *b);
/* Withdraw it: dropped if still queued; if it is in the staged packet it
 * goes out and its reply is ignored. */
void bk_out_unqueue_ctrl(broker_t *b);

/* A RELEASE record for one descriptor of owner's (shmview.c pushes it
 * when a view ends).  Coalesced with a recent twin; -ENOMEM is made
 * sticky. */
void bk_out_release(broker_t *b, uint64_t owner, uint32_t segid,
                    uint64_t off);

/* Whether RELEASE records wait to be written. */
bool bk_out_release_pending(const broker_t *b);

/* ---- batching ----------------------------------------------------------- */

/* Outcomes of bk_out_batch besides 0 (the message is in the staged packet,
 * copied: the caller's memory is free again). */
#define BK_OUT_UNBATCHED 1      /* it cannot be batched now: send it the
                                   usual way (that writes the packet
                                   first) */
#define BK_OUT_FULL      2      /* no room left: write the staged packet
                                   (bk_out_flush_wait), then try again */

/* Add the whole message m (a DATA message not started, without fds) to
 * the staged packet as one frame, behind what it holds.  Only when nothing
 * else waits (no library frame, release or queued stream output, which
 * must leave first) and m fits one packet.  A shared-memory descriptor's
 * reference (m->shm) travels with the frame from here on. */
int bk_out_batch(broker_t *b, const struct bk_omsg *m);

/* ---- writing ------------------------------------------------------------ */

/* Whether anything waits to be written. */
bool bk_out_pending(const broker_t *b);
/* Payload bytes queued and staged, not yet written (broker_pending). */
size_t bk_out_backlog(const broker_t *b);
/* Write queued output without blocking: the staged packet, library frames
 * and releases, and with all every stream's data.  Returns 0 once that is
 * all written, -EAGAIN if the socket is full or the budget ran out, or the
 * sticky error. */
int bk_out_flush(broker_t *b, bool all, unsigned budget);
/* Blocking mode: bk_out_flush everything, waiting (reading meanwhile)
 * while the socket is full.  0, -ETIMEDOUT (the rest stays queued) or the
 * sticky error. */
int bk_out_flush_wait(broker_t *b, int64_t deadline);
/* Send one packet from the caller's memory, after any library frames.
 * While the socket is full, wait (reading meanwhile).  Returns 0,
 * -ETIMEDOUT, -ECANCELED (the watched stream was closed or failed
 * meanwhile) or another negative errno. */
int bk_out_send_direct(broker_t *b, const struct iovec *iov, int iovcnt,
                       const int *fds, unsigned nfds, int64_t deadline);

#endif
