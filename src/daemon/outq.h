/*
 * outq.h - one client's output queue: the frames waiting to be written
 * towards it, and how they are packed into packets (prefix bk_outq_).
 *
 * Owns: every queued frame (bk_oframe) with its copy of the payload and
 * its fds, the per-stream queues (bk_oq) and their round-robin ring, the
 * byte/frame counts of what is queued.  It knows nothing of sockets or
 * libuv: the port (port.c) asks it for the next packet as an iovec and an
 * fd list, writes that, and tells it the packet went out.
 *
 * Order of service: frames of no stream (the broker's own replies, BYE)
 * sit in the control queue, served first.  Frames of a stream wait in
 * that stream's queue (keyed by the receiver's stream id); whole one-way
 * messages share one queue, which keeps their order.  Stream queues and
 * the one-way queue take turns on a ring, one packet per queue per turn;
 * a queue joins the ring at the back when it gets its first frame and
 * leaves it when it is empty.
 *
 * Packing: one packet holds the head frames of one queue, as many as fit
 * max_packet (BK_OUTQ_PACK_MAX at most); only the first frame of a packet
 * may carry fds, so fds always travel with their own frame.  A frame
 * larger than the room left goes in the next packet; the first frame of a
 * packet always goes, whatever its size.
 *
 * Bodies: a shared-memory descriptor queued for a receiver that cannot
 * map segments carries a bk_obody instead.  It stays at the head of its
 * queue until the bytes it names have gone out as DATA fragments read
 * from the segment, one fragment per packet and per turn on the ring,
 * so its stream keeps its order and other streams interleave with it.
 */
#ifndef BK_OUTQ_H
#define BK_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "htable.h"
#include "list.h"
#include "proto.h"

/* Frames packed into one packet at most. */
#define BK_OUTQ_PACK_MAX 256

/* A payload shared by the queued frames of several receivers: `refs`
 * references, freed by the last bk_opayload_put. */
typedef struct bk_opayload {
    uint32_t refs;
    uint32_t len;
    uint32_t cls;               /* outq.c's block class, 0: none */
    uint8_t data[];
} bk_opayload_t;

/* A new payload holding a copy of data[0..len) and one reference (the
 * caller's), or NULL on allocation failure. */
bk_opayload_t *bk_opayload_new(const void *data, uint32_t len);
void bk_opayload_put(bk_opayload_t *p);

/* Free the frame nodes and payloads kept for reuse (outq.c keeps a
 * bounded number of freed ones, process-wide). */
void bk_outq_cache_trim(void);

/* The body of a descriptor, read out of its segment for a receiver that
 * cannot map it (shm.c makes it, this module sends it).  Memory stays
 * bounded: the bytes are read (pread) one packet at a time into a
 * buffer the module shares between all queues. */
typedef struct bk_obody {
    int fd;                     /* the segment; borrowed from the maker */
    uint64_t pos, end;          /* segment bytes still to send */
    bk_hdr_t h;                 /* the descriptor frame, set when queued */
    bool started;               /* the first fragment went out */
    uint8_t frag_flags;         /* the fragment gathered last */
    uint32_t frag_len, chunk;
    /* Called once, when the body is sent or dropped: frees it. */
    void (*done)(struct bk_obody *b);
} bk_obody_t;

/* Who a queued frame's fds and memory are counted against (user.h):
 * put(c, n, mem) is called once, when the frame with its n fds and `mem`
 * bytes (bk_oframe.mem) leaves the queue, sent or dropped. */
typedef struct bk_ocharge {
    void (*put)(struct bk_ocharge *c, unsigned nfds, uint64_t mem);
} bk_ocharge_t;

/* A frame waiting to be written.  Owned by its queue: the payload is a
 * copy (or a reference to a shared one), the fds are the queue's and are
 * closed when the frame is freed (after it was sent, or when the queue is
 * dropped). */
typedef struct bk_oframe {
    bk_list_t link;             /* on its bk_oq's frames, oldest first */
    uint8_t hdr[BK_HDR_SIZE];   /* encoded, ready for sendmsg */
    uint8_t type, flags;        /* of hdr, for the counters after sending */
    uint8_t blk;                /* outq.c's block class, 0: none */
    uint32_t len;
    uint32_t nfds;
    uint32_t mem;               /* the memory it takes (bk_outq.mem) */
    int *fds;                   /* malloc'd when nfds > 0 */
    bk_ocharge_t *charge;       /* its fds' and memory's account, or NULL
                                 * (port.c) */
    uint64_t src;               /* sender of a one-way message, for errors */
    uint32_t src_sid;
    bool oneway_first;          /* a whole one-way message: tell src if lost */
    bool tag_first;             /* first fragment of a tagged message */
    void *tag;                  /* the router's (a subscription), or NULL */
    const uint8_t *pdata;       /* the payload: data, or shared->data */
    bk_opayload_t *shared;      /* a reference, or NULL */
    bk_obody_t *body;           /* owned: the bytes go instead, or NULL */
    uint8_t data[];
} bk_oframe_t;

/* Queue of one stream (or of stream-less frames, or of one-way messages). */
typedef struct bk_oq {
    bk_hnode_t node;            /* in bk_outq.oqs (stream queues only) */
    uint32_t sid;
    uint8_t key[4];
    bk_list_t frames;           /* bk_oframe.link */
    bk_list_t ring;             /* on bk_outq.ring; unlinked when off it */
} bk_oq_t;

typedef struct bk_outq {
    bk_oq_t ctrl;               /* stream-less frames, served first */
    bk_oq_t dgram;              /* whole one-way messages, in order */
    bk_htable_t oqs;            /* sid -> bk_oq, malloc'd, freed when empty */
    bk_list_t ring;             /* bk_oq.ring; the first is served next */
    uint64_t bytes;             /* queued, headers included */
    /* The memory the queued frames take: each frame's block (header,
     * bookkeeping and payload, rounded up to its block class, or the
     * malloc'd size plus malloc's overhead), its fd array, the shared
     * payload it refers to (counted in full for every frame that holds
     * it: the last one keeps it alive) and its body's record.  Limits
     * are checked against this, not against bytes: a 64-byte message
     * queued takes about twice its wire size. */
    uint64_t mem;
    /* Counters that follow mem besides it (the receiver's user and the
     * whole broker, port.c), or NULL: bk_outq_set_acct. */
    uint64_t *mem_user, *mem_all;
    uint64_t frames;            /* queued */
    uint64_t nfds;              /* fds the queued frames carry */
    /* Called by bk_outq_consume for every sent frame with tag_first. */
    void (*on_sent)(void *tag, void *arg);
    void *on_sent_arg;
} bk_outq_t;

/* Also count the queue's memory into *user and *all (either may be
 * NULL); what is queued now is added to them, and every later change
 * follows.  bk_outq_init forgets them (call again after it). */
void bk_outq_set_acct(bk_outq_t *q, uint64_t *user, uint64_t *all);

/* One packet's worth of the queue, as gather found it: iov has two
 * entries (header, payload) per frame; fds/nfds are the first frame's,
 * still owned by the queue.  Valid until the queue next changes. */
typedef struct bk_outq_pkt {
    struct iovec iov[2 * BK_OUTQ_PACK_MAX];
    unsigned niov;
    unsigned nframes;
    int *fds;
    unsigned nfds;
    bk_oq_t *oq;                /* the queue the frames are at the head of */
} bk_outq_pkt_t;

/* What went out, in the terms of the counters: payload bytes of DATA
 * frames and DATA frames that end a message. */
typedef struct bk_outq_tally {
    uint64_t bytes;
    uint64_t msgs;
} bk_outq_tally_t;

static inline void bk_outq_tally(bk_outq_tally_t *t, uint8_t type,
                                 uint8_t flags, uint32_t length)
{
    if (type != BK_T_DATA)
        return;
    t->bytes += length;
    t->msgs += !(flags & BK_F_MORE);
}

void bk_outq_init(bk_outq_t *q);

/* Whether a frame of `length` payload bytes may skip the queue and be
 * written at once, straight from the caller's buffer: nothing is queued
 * (so order is kept) and it is large enough (more than half a packet)
 * that packing would not help. */
static inline bool bk_outq_bypass(const bk_outq_t *q, uint32_t length,
                                  size_t max_packet)
{
    return q->frames == 0 && length > max_packet / 2;
}

/* Queue a copy of the frame `h` + payload[0..h->length) behind the frames
 * of its queue.  Ownership of fds[0..nfds) passes to the queue in every
 * case: they travel with the frame, or are closed on failure.  *out is the
 * queued frame, borrowed (the queue frees it once sent).  Returns 0 or
 * -ENOMEM. */
int bk_outq_push(bk_outq_t *q, const bk_hdr_t *h, const void *payload,
                 int *fds, unsigned nfds, bk_oframe_t **out);

/* A frame of a publication delivery: it refers to the shared payload
 * `pl` (one more reference taken; pl->len must be h->length) instead of
 * a copy, and goes on the one-way queue whatever its flags, so that every
 * frame of every publication to this client (fragments, the CLOSE or
 * ERROR that ends one early, GAPs) leaves in the order it came: one
 * publisher's messages then complete at the receiver in publish order. */
int bk_outq_push_shared(bk_outq_t *q, const bk_hdr_t *h, bk_opayload_t *pl,
                        int *fds, unsigned nfds, bk_oframe_t **out);

/* Queue the descriptor frame `h` + payload (name or topic, then the
 * descriptor) as `body`: its bytes go instead (see bk_obody).  pub: as a
 * publication delivery, on the one-way queue.  Ownership of body passes
 * in every case (body->done on failure).  Returns 0 or -ENOMEM. */
int bk_outq_push_body(bk_outq_t *q, const bk_hdr_t *h, const void *payload,
                      bk_obody_t *body, bool pub, bk_oframe_t **out);

/* Take every whole one-way message tagged `tag` (tag_first, in the
 * one-way queue, unsent) out of the queue, in order, onto `out`
 * (bk_oframe.link).  Shared-memory descriptors stay: their reference is
 * this receiver's.  Returns how many. */
unsigned bk_outq_take_tagged(bk_outq_t *q, const void *tag, bk_list_t *out);
/* Queue a frame taken with bk_outq_take_tagged (its header rewritten from
 * h, which must keep its type, flags and length) behind the frames of its
 * queue here.  Returns 0 or -ENOMEM (the frame is freed then). */
int bk_outq_push_frame(bk_outq_t *q, bk_oframe_t *f, const bk_hdr_t *h);
/* Free a frame that is on no queue (its fds closed, its payload put). */
void bk_outq_frame_free(bk_oframe_t *f);
/* Forget `tag` on every queued frame (set it to NULL). */
void bk_outq_untag(bk_outq_t *q, const void *tag);

/* The next packet to write, at most max_packet bytes but for a single
 * large frame.  Returns the number of frames in it, 0 if nothing is
 * queued. */
unsigned bk_outq_gather(bk_outq_t *q, size_t max_packet, bk_outq_pkt_t *pkt);

/* The packet gather described was written: free its frames (closing the
 * broker's copies of their fds), add them to *sent, and move their queue
 * to the back of the ring (or off it, when empty). */
void bk_outq_consume(bk_outq_t *q, const bk_outq_pkt_t *pkt,
                     bk_outq_tally_t *sent);

/* A frame about to be dropped unsent that was a whole one-way message. */
typedef void bk_outq_lost_fn(const bk_oframe_t *f, void *arg);

/* Drop every queued frame, control queue first, then the ring in order of
 * service, calling lost(f, arg) for each one-way message among them before
 * it is freed; every fd still queued is closed.  The queue is empty and
 * its table released afterwards: only bk_outq_init makes it usable again. */
void bk_outq_fini(bk_outq_t *q, bk_outq_lost_fn *lost, void *arg);

#endif
