/*
 * port.h - one connected client: its socket and poll handle, reading and
 * dispatching its packets, writing its output queue, flow control, and
 * its teardown (prefix bk_port_).
 *
 * Owns: the client's socket fd, the uv_poll handle, the output queue
 * (outq.h: the frames waiting for this client, with their fds), the list
 * of senders paused on it, and the port itself (freed once libuv has
 * released the poll handle).  The server (server.h) owns the lists a port
 * is on and the one receive buffer every port reads its packets into.
 *
 * Input: a packet is read into the server's buffer and processed whole
 * before the next read; what must outlive it is copied.
 *
 * Output: a large frame is written straight to the socket, without
 * copying, when nothing is queued (bk_outq_bypass); other frames are
 * queued and the port is flushed once per loop pass, before the loop
 * waits (bk_port_flush_dirty from the server's flush handle), so a burst
 * of small messages, from one sender or many, leaves in few packets.
 * outq.h says in which order and how they are packed.
 *
 * Flow control: when a frame caused by sender S lands in this port's queue
 * and the queue takes more than queue_limit bytes of memory (outq.h mem;
 * or its user's queues more than max-queued-per-uid: bk_port_full), S is
 * paused (its socket
 * is not read) until this queue drains below half the limit -- unless S
 * said BK_HELLO_FLOW: then S is told this receiver is busy (a FLOW frame,
 * once per episode and name) and is not paused, so its traffic to others,
 * its pings and control requests go on; S holds back new messages to
 * this receiver itself.  Past the hard limit (bk_port_hard_limit: S did
 * not hold back in time), S is paused all the same.  When the queue
 * drains below half the limit, told senders get FLOW READY and paused
 * ones are read again.  Budgets of queued memory (what S's user's sends
 * keep queued, all queues together) pause S whatever it said, until they
 * are back under half (bk_port_resume_budget, once per loop pass).
 */
#ifndef BK_PORT_H
#define BK_PORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include "htable.h"
#include "names.h"
#include "outq.h"
#include "proto.h"
#include "reap.h"
#include "shm.h"
#include "streams.h"
#include "tree.h"

struct bk_server;

typedef enum bk_port_state {
    BK_PORT_HELLO,              /* waiting for HELLO */
    BK_PORT_READY,
    BK_PORT_CLOSING,            /* failed or shutting down; no more input */
} bk_port_state_t;

/* A sender waiting on a full port: paused (not read), told (sent FLOW
 * BUSY; name_hash: of the name, or stream, it was last told about), or
 * both. */
typedef struct bk_waiter {
    uint64_t id;
    uint32_t name_hash;
    bool paused, told;
} bk_waiter_t;

/* The broker's notices to a port that were folded into a count while
 * its queue was full, for one summary ERROR (port.c, "Notices"). */
typedef struct bk_port_fold {
    uint64_t count;             /* folded, not yet summed up */
    uint64_t source;            /* the peer they all came from, 0: several */
} bk_port_fold_t;

typedef struct bk_port {
    uv_poll_t poll;
    struct bk_server *srv;
    int fd;
    bk_port_state_t state;
    uint64_t id;
    bk_hnode_t node;            /* in srv->clients */
    bk_tnode_t tnode;           /* in srv->client_index, keyed by id */
    uint8_t idkey[8];
    pid_t pid;
    uid_t uid;
    gid_t gid;
    char comm[17];
    char desc[BK_MAX_HELLO_DESC];   /* HELLO's description (LIST_CLIENTS) */
    uint16_t desc_len;
    uint64_t connected_ms;
    struct bk_user *user;       /* its uid's record, referenced from accept */
    struct bk_user *acct;       /* the same, held from admission until the
                                 * port is closed: what it holds is
                                 * charged there (user.h) */
    bk_list_t hs_link;          /* on srv->handshaking until WELCOME */
    bk_list_t drain_link;       /* on srv->draining while the broker stops */
    int events;                 /* UV_READABLE / UV_WRITABLE wanted */
    bool in_table;
    bool failed;
    bool hangup;                /* closed once its last words are out */
    int fail_err;
    bk_list_t reap_link;        /* on srv->reap once failed */
    bk_list_t all_link;         /* on srv->all: every port */
    bk_list_t stash;            /* packets read past a pause (port.c) */
    bk_list_t stash_link;       /* on srv->unstash: resumed with a stash */
    uint32_t rx_avg;            /* mean length of the packets the last
                                 * recvmmsg brought, 0 before the first */
    bk_list_t dirty_link;       /* on srv->dirty: frames queued this
                                 * loop pass, not flushed yet */
    bool overfull;              /* the queue went past queue_limit since
                                 * it was last empty (server.h: memory) */

    bk_outq_t out;              /* frames waiting to be written */
    uint64_t writes;            /* packets written from the queue: its
                                 * progress, for reap.c */
    bk_reap_port_t reap;        /* reap.c's view of it */

    /* flow control */
    uint32_t paused;            /* full receivers this port waits on, and
                                 * one while budget_paused */
    bool budget_paused;         /* by a budget of queued memory */
    bool departed;              /* left (or shut its sending side down)
                                 * while paused: what it sent is read all
                                 * the same, see held_back() in port.c */
    bk_list_t budget_link;      /* on bk_server.budget_paused */
    bool flow;                  /* HELLO said BK_HELLO_FLOW */
    bk_waiter_t *waiters;       /* senders paused on or told about this
                                 * port */
    uint32_t nwaiters, capwaiters;

    bk_shm_port_t shm;          /* segments, references held */
    bk_st_list_t streams;       /* ends owned by this client */
    bk_name_list_t names;
    uint32_t next_psid;

    /* publish/subscribe (pubsub.c) */
    bk_list_t subs;             /* bk_sub_t.client_link, oldest first */
    uint32_t nsubs;
    uint32_t ngateways;         /* of them, BK_SUB_F_GATEWAY */
    uint32_t next_sub;          /* the next subscription id (never 0) */
    uint32_t gaps_pending;      /* subscriptions with a GAP to send */
    uint64_t pub_dropped;       /* publications dropped towards it */

    uint64_t msgs_in, msgs_out, bytes_in, bytes_out, errors;
    bk_port_fold_t lost;        /* one-way losses folded (port.c) */

    uint16_t refusals_logged;   /* 1 << bk_port_refusal kinds logged */
    /* requests refused over quotas, budgets and access rules
     * (bk_port_count_refusal): in all, and in the current minute */
    uint64_t refusals;
    uint32_t refusals_minute;
    uint64_t refusals_since_ms; /* start of that minute */
} bk_port_t;

/* What a client can be refused over and over: its limits and the access
 * rules.  Each kind is logged once per client (bk_port_refused). */
enum bk_port_refusal {
    BK_REFUSE_STREAMS,          /* max-streams */
    BK_REFUSE_NAMES,            /* max-names */
    BK_REFUSE_SUBS,             /* max-subscriptions */
    BK_REFUSE_SEGMENTS,         /* max-segments */
    BK_REFUSE_SHM,              /* max-shm */
    BK_REFUSE_OWN,              /* allow-own */
    BK_REFUSE_SEND,             /* allow-send */
    BK_REFUSE_PUBLISH,          /* allow-publish */
    BK_REFUSE_SUBSCRIBE,        /* allow-subscribe */
};

/* Log a refusal of kind `kind` (a warning naming the client's id, pid,
 * uid and comm, then the text) the first time this client meets it; a
 * client that keeps hitting the same limit makes one line, not one per
 * request. */
void bk_port_refused(bk_port_t *p, enum bk_port_refusal kind,
                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A budget was hit by client p (kind: user.h bk_user_quota): counted on
 * its user's record and logged (a warning naming the client's id, pid,
 * uid and comm, then the text) once per episode of that user's hits of
 * that kind. */
void bk_port_quota(bk_port_t *p, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A check of kind `kind` passed for p: an episode of its user's is over. */
void bk_port_quota_ok(bk_port_t *p, int kind);
/* Whether p's user may hold `want` more of something it has `have` of,
 * with the per-uid limit `max` (0: none; root and brokerd's user are
 * exempt).  A refusal is counted and logged (bk_port_quota, `what`
 * naming the limit). */
bool bk_port_uid_fits(bk_port_t *p, int kind, uint64_t have, uint64_t want,
                      uint64_t max, const char *what);

/* Size the send buffer of a client's socket for packets of max_packet
 * bytes (past net.core.wmem_max where the broker may).  *got: the
 * buffer it has.  0, -ENOBUFS (too small for such packets) or -errno. */
int bk_port_size_sndbuf(int fd, uint32_t max_packet, int *got);

/* Take ownership of an accepted socket.  Returns the port or NULL (the fd
 * is closed then). */
bk_port_t *bk_port_new(struct bk_server *srv, int fd, uint64_t id);

/* Queue (or write at once) a frame towards `to`.  `h` is the header as it
 * must go out; payload is copied if the frame has to wait.  Ownership of
 * fds[0..nfds) passes to the port in every case (closed after sending, or
 * on failure).  `cause` is the port whose input produced this frame, for
 * flow control (NULL for the broker's own frames).  Returns 0 or a
 * negative errno (the frame is then dropped and its fds closed). */
int bk_port_send(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                 int *fds, unsigned nfds, bk_port_t *cause);
/* Same, remembering that this frame is a whole one-way message from
 * (src, src_sid), so the sender hears if the receiver dies before it. */
int bk_port_send_oneway(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                        int *fds, unsigned nfds, bk_port_t *cause,
                        uint32_t src_sid);

/* An outcome of bk_port_send_pub: the frame was queued (not written). */
#define BK_PORT_QUEUED 1

/* Send one receiver's frame of a publication: written at once from
 * `payload` when it may bypass the queue, else queued with a reference to
 * *shared (created from payload[0..h->length) on first need; the caller
 * puts its own reference once the fan-out is done).  The queued frame is
 * tagged with `tag` (its first fragment: bk_outq on_sent).  fds as for
 * bk_port_send.  Returns 0 (written), BK_PORT_QUEUED, or a negative errno
 * (dropped, fds closed). */
int bk_port_send_pub(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                     bk_opayload_t **shared, int *fds, unsigned nfds,
                     bk_port_t *cause, void *tag);
/* Queue a shared-memory descriptor frame for a receiver that does not map
 * segments, as `body` (ownership passes, outq.h bk_obody): its bytes go
 * out instead.  pub: a publication delivery tagged `tag`, as for
 * bk_port_send_pub; else oneway_sid, if not 0, marks a whole one-way
 * message from that stream of h->source, as for bk_port_send_oneway.
 * Returns BK_PORT_QUEUED or a negative errno (dropped). */
int bk_port_send_body(bk_port_t *to, const bk_hdr_t *h, const void *payload,
                      bk_obody_t *body, bk_port_t *cause, bool pub,
                      void *tag, uint32_t oneway_sid);
/* Queue a frame taken out of another port's queue (bk_outq_take_tagged)
 * with its header rewritten to h.  Returns 0 or a negative errno (the
 * frame is freed then). */
int bk_port_requeue(bk_port_t *to, bk_oframe_t *f, const bk_hdr_t *h);

/* Once per loop pass: resume the senders paused by a budget of queued
 * memory that is back under half of it. */
void bk_port_resume_budget(struct bk_server *srv);
/* Whether `to` counts as full for flow control: its queue takes more
 * than queue_limit (outq.h mem), or its user's queues more than
 * max-queued-per-uid. */
bool bk_port_full(const bk_port_t *to);
/* The queue length past which a BK_HELLO_FLOW sender is paused all the
 * same: 1.5 x queue_limit (saturating). */
uint64_t bk_port_hard_limit(const bk_port_t *to);
/* A new message from `from` (its first fragment h, as from sent it) was
 * just queued for `to`: if to's queue is past queue_limit and from takes
 * FLOW frames, tell from that `to` is busy (FLOW BUSY with h's stream and
 * the name h was addressed by), unless it was told already about that
 * name, about `to` by id, or about that stream. */
void bk_port_note_busy(bk_port_t *to, bk_port_t *from, const bk_hdr_t *h,
                       const uint8_t *payload);

/* Send an ERROR frame (err: a negative errno) with a short text.  An
 * ERROR caused by to itself (cause == to) counts as a refusal
 * (bk_port_count_refusal). */
void bk_port_error(bk_port_t *to, uint32_t stream, int err,
                   const char *text, bk_port_t *cause);
/* A request of p's was answered with err: if that is a refusal over a
 * quota or budget (EDQUOT, ENOBUFS) or an access rule (EACCES), count
 * it; a client refused more than max-refusals times within a minute is
 * persistent abuse: it is logged and hung up on (ERROR EDQUOT, then the
 * connection closes). */
void bk_port_count_refusal(bk_port_t *p, int err);

/* The client broke the protocol: count it, log it, send an ERROR (err: a
 * negative errno; stream: the stream it concerns, or 0) saying "protocol
 * error: what", and fail the port. */
/* A one-way message from src (its stream src_sid) will never reach `p`,
 * which is going away: src hears ECONNRESET from p (nothing while the
 * broker stops) -- an ERROR of its own while src's queue is within
 * queue_limit, else counted into one summary ERROR (stream
 * BK_SID_SUMMARY, summary.h) sent once src's queue has drained to half
 * the limit.  Counted in src->errors either way. */
void bk_port_oneway_lost(bk_port_t *p, bk_port_t *src, uint32_t src_sid);

/* A connection just accepted (and counted against its user): refused
 * with ENOSR when its user has more than max-clients-per-uid. */
void bk_port_admit(bk_port_t *p);
/* A connection that sent no HELLO in time: ERROR ETIMEDOUT and close. */
void bk_port_handshake_expired(bk_port_t *p);

void bk_port_protocol_error(bk_port_t *p, int err, uint32_t stream,
                            const char *what);

/* Disconnect a client whose socket may be full (a slow consumer): drop
 * everything queued for it, stop reading it, queue an ERROR (err, text)
 * on stream 0, release its names, and close it once that ERROR has been
 * written (or the client goes away).  Meanwhile nothing more is queued
 * for it: to senders it is gone. */
void bk_port_hangup(bk_port_t *p, int err, const char *text);

/* Mark the port failed (err: 0 for an orderly EOF, else why, as a
 * negative errno); it is closed by bk_server_reap at the end of the
 * current callback (or of the loop pass's flush). */
void bk_port_fail(bk_port_t *p, int err);
/* Tear down now: streams, names, queue, socket.  Memory is freed once
 * libuv has released the poll handle. */
void bk_port_close(bk_port_t *p);
/* Stop reading (shutdown) and send BYE. */
void bk_port_shutdown(bk_port_t *p);

/* Write p's whole queue now, past the socket's usual send buffer (grown
 * for the moment, as far as the broker may: SO_SNDBUFFORCE, else up to
 * net.core.wmem_max; restored after).  For reap.c: the queue of a client
 * whose process is gone goes into the kernel, which can then collect a
 * connection that only fds in flight keep open.  Returns 0 (no fds left
 * queued), -ENOBUFS (some did not fit) or another negative errno (the
 * port failed, or the buffer could not be sized). */
int bk_port_push(bk_port_t *p);

/* Flush every port that got frames during this loop pass. */
void bk_port_flush_dirty(struct bk_server *srv);
/* Act on the packets of resumed senders that were read past their pause
 * (see read_packets in port.c); the flush handle does this first. */
void bk_port_unstash_resumed(struct bk_server *srv);

/* Allocate a local stream id for a stream this client accepts. */
uint32_t bk_port_alloc_sid(bk_port_t *p);

#endif
