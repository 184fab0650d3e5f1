/*
 * port.h - one connected client: socket I/O, the per-stream output queues,
 * and flow control (prefix bk_port_).
 *
 * Output: frames towards the client wait in per-stream queues (keyed by
 * the client's local stream id) served round-robin, one packet per queue
 * per turn; whole one-way messages share one queue on the same ring, which
 * keeps their order; frames of no stream have a queue served first.
 * Consecutive small frames of one queue are packed into one packet.  A
 * large frame is written straight to the socket, without copying, when
 * nothing is queued; small frames are queued and the port is flushed once
 * at the end of the current event callback (bk_port_flush_dirty), so a
 * burst of small messages leaves in few packets.
 *
 * Flow control: when a frame caused by sender S lands in this port's queue
 * and the queue holds more than queue_limit bytes, S is paused (its socket
 * is not read) until this queue drains below half the limit.
 */
#ifndef BK_PORT_H
#define BK_PORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include "htable.h"
#include "names.h"
#include "proto.h"
#include "shm.h"
#include "streams.h"

struct bk_server;

typedef enum bk_port_state {
    BK_PORT_HELLO,              /* waiting for HELLO */
    BK_PORT_READY,
    BK_PORT_CLOSING,            /* failed or shutting down; no more input */
} bk_port_state_t;

/* A frame waiting to be written; owns its fds and payload. */
typedef struct bk_oframe {
    struct bk_oframe *next;
    uint8_t hdr[BK_HDR_SIZE];   /* encoded, ready for sendmsg */
    uint8_t type, flags;        /* of hdr, for the counters after sending */
    uint32_t len;
    uint32_t nfds;
    int *fds;                   /* malloc'd when nfds > 0 */
    uint64_t src;               /* sender of a one-way message, for errors */
    uint32_t src_sid;
    bool oneway_first;          /* a whole one-way message: tell src if lost */
    uint8_t data[];
} bk_oframe_t;

/* Output queue of one stream (or of stream-less frames when sid == 0). */
typedef struct bk_oq {
    bk_hnode_t node;
    uint32_t sid;
    uint8_t key[4];
    bk_oframe_t *head, *tail;
    struct bk_oq *ring_next, *ring_prev;    /* NULL when not on the ring */
} bk_oq_t;

typedef struct bk_port {
    uv_poll_t poll;
    struct bk_server *srv;
    int fd;
    bk_port_state_t state;
    uint64_t id;
    bk_hnode_t node;            /* in srv->clients */
    uint8_t idkey[8];
    pid_t pid;
    uid_t uid;
    gid_t gid;
    char comm[17];
    uint64_t connected_ms;
    int events;                 /* UV_READABLE / UV_WRITABLE wanted */
    bool in_table;
    bool failed;
    int fail_err;
    struct bk_port *reap_next;
    struct bk_port *all_prev, *all_next;    /* srv->all: every port */
    bool dirty;                 /* frames queued this callback, unflushed */
    struct bk_port *dirty_next;

    uint8_t *rbuf;              /* one packet */

    /* output */
    bk_oq_t ctrl;               /* stream-less frames, served first */
    bk_oq_t dgram;              /* whole one-way messages, in order */
    bk_htable_t oqs;            /* sid -> bk_oq */
    bk_oq_t *ring;              /* next stream queue to serve */
    uint64_t queued_bytes;
    uint64_t queued_frames;

    /* flow control */
    uint32_t paused;            /* full receivers this port waits on */
    uint64_t *waiters;          /* ids of senders paused on this port */
    uint32_t nwaiters, capwaiters;

    bk_shm_port_t shm;          /* segments, references held */
    bk_st_list_t streams;       /* ends owned by this client */
    bk_name_list_t names;
    uint32_t next_psid;

    uint64_t msgs_in, msgs_out, bytes_in, bytes_out, errors;
} bk_port_t;

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

/* Send an ERROR frame (code is a positive errno) with a short text. */
void bk_port_error(bk_port_t *to, uint32_t stream, int code,
                   const char *text, bk_port_t *cause);

/* Mark the port failed (err: 0 for an orderly EOF, else why); it is closed
 * by bk_server_reap at the end of the current callback. */
void bk_port_fail(bk_port_t *p, int err);
/* Tear down now: streams, names, queue, socket.  Memory is freed once
 * libuv has released the poll handle. */
void bk_port_close(bk_port_t *p);
/* Stop reading (shutdown) and send BYE. */
void bk_port_shutdown(bk_port_t *p);

/* Flush every port that got frames during this callback. */
void bk_port_flush_dirty(struct bk_server *srv);

/* Allocate a local stream id for a stream this client accepts. */
uint32_t bk_port_alloc_sid(bk_port_t *p);

#endif
