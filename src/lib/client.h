/*
 * client.h - libbroker internals shared by client.c, send.c, recv.c and
 * async.c.  Not installed.
 *
 * Ownership rules used throughout:
 *   - a struct bk_lmsg is owned by whoever holds it: the FIFO, the watch
 *     slot of a blocking call, or the application once handed out;
 *   - a queued struct bk_omsg owns its copy of the payload and dup()ed fds
 *     (owned == true); a stack omsg built by a blocking send borrows the
 *     caller's buffer and fds;
 *   - never keep a struct bk_stream pointer across bk_wait() or bk_pump():
 *     an incoming CLOSE/ERROR frees it.  Look it up again by id.
 */
#ifndef BK_CLIENT_H
#define BK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "broker.h"
#include "proto.h"
#include "frame.h"
#include "htable.h"
#include "reasm.h"

#define BROKER_API __attribute__((visibility("default")))

#define BK_DEF_LIB_MAX_MSG      (UINT64_C(256) << 20)
#define BK_DEF_LIB_MAX_PARTIAL  1024u
#define BK_DEF_LIB_TIMEOUT_MS   30000u
#define BK_HANDSHAKE_MS         10000
#define BK_PUMP_BUDGET          64u     /* packets read per wake-up */
#define BK_FLUSH_BUDGET         64u     /* packets written per wake-up */
#define BK_MIN_FRAG             512u    /* smallest fragment worth packing */
#define BK_MAX_SPARE            16u     /* stream entries kept for reuse */
#define BK_DEF_SHM_THRESHOLD    262144u
#define BK_DEF_SHM_SEGMENT      (UINT64_C(64) << 20)
#define BK_MAX_SHM_SEGMENT      (UINT64_C(1) << 40)

struct bk_sbuf;                 /* a buffer of our shared-memory pool */
struct bk_rseg;                 /* a segment another client shared with us */
struct bk_shm;

/* A received message or event. */
struct bk_lmsg {
    struct bk_lmsg *next;
    struct bk_acall *acall;     /* async call it answers, or NULL */
    void *own_data;             /* payload allocated apart, or NULL */
    struct bk_rseg *view;       /* BROKER_MSGF_SHM: the segment data is in */
    uint64_t view_off;          /* and the descriptor's offset */
    broker_msg_t pub;
};

/* An outgoing message (or a CLOSE/CTRL frame) and its framing cursor. */
struct bk_omsg {
    struct bk_omsg *next;
    uint8_t type;               /* BK_T_DATA, BK_T_CLOSE or BK_T_CTRL */
    uint8_t flags;              /* DATA: BK_F_OPEN | BK_F_NAME | BK_F_CLOSE */
    uint8_t namelen;
    bool started;               /* the first frame has been sent/staged */
    bool owned;                 /* heap copy: owns data and fds */
    uint32_t stream;            /* CTRL: request id */
    uint32_t aux;               /* CLOSE: code; CTRL: op */
    uint64_t dest;
    const char *name;
    const uint8_t *data;
    size_t len;
    size_t off;                 /* data bytes already framed */
    const int *fds;
    unsigned nfds;
    struct bk_sbuf *shm;        /* descriptor of a pool buffer not yet
                                   staged: its reference */
};

struct bk_oqueue {
    struct bk_omsg *head, *tail;
};

/* A stream as the library sees it. */
struct bk_stream {
    bk_hnode_t node;
    uint8_t key[4];
    uint32_t id;
    bool ours;                  /* we chose the id (peer bit clear) */
    bool opened;                /* OPEN assigned to a message already */
    bool wire;                  /* the broker knows the stream */
    bool closing;               /* our last frame is queued: free on drain */
    uint64_t dest;              /* ours, opened to a client id */
    char *name;                 /* ours, opened to a name */
    struct bk_oqueue q;         /* attached mode: pending output */
    struct bk_stream *rnext, *rprev;
    bool in_ring;
    struct bk_acall *acall;     /* broker_call_async waiting on it */
};

struct bk_async;
struct bk_acall;

struct broker {
    int fd;
    uint64_t id;
    broker_limits_t lim;
    bk_limits_t flim;           /* what frames from the broker are held to */
    size_t pkt_cap;             /* largest packet we send */
    int err;                    /* sticky fatal error, negative */
    bool bye;                   /* the broker said BYE */
    bool welcomed;
    bool closing;

    uint64_t opt_max_msg;
    bool opt_chunked;
    uint32_t opt_max_partial;
    uint64_t opt_timeout_ms;
    uint64_t opt_shm_threshold;
    uint64_t opt_shm_seg_size;
    uint64_t opt_shm_pool_max;
    bool opt_shm_fallback;

    /* input */
    uint8_t *rbuf;
    size_t rbuf_len;
    bk_reasm_t reasm;
    struct bk_lmsg *fifo_head, *fifo_tail;
    size_t fifo_len;

    /* the blocking operation in progress and the stream it watches */
    uint32_t watch_sid;
    bool watch_data;            /* capture DATA too, not only CLOSE/ERROR */
    struct bk_lmsg *watch_msg;

    /* the control request in flight */
    uint32_t ctrl_next;
    uint32_t ctrl_id;
    bool ctrl_done;
    int ctrl_code;
    uint8_t *ctrl_payload;
    size_t ctrl_len;
    /* attached mode: the request waits its turn in the ring on this
     * pseudo-stream (id 0, never in the table) */
    struct bk_stream ctlq;
    bool ctrl_queued;           /* not yet written to the socket */
    bool ctrl_in_stage;         /* it is in the staged packet */

    /* streams */
    bk_htable_t streams;
    uint32_t sid_next;
    struct bk_stream *spare;    /* freed entries kept for reuse */
    unsigned nspare;

    /* output */
    struct bk_oqueue urgent;    /* library CLOSE frames: before any data */
    struct bk_stream *ring;     /* next stream with pending output */
    uint8_t *sbuf;              /* the staged packet */
    size_t st_len;
    int st_fds[BK_MAX_FDS_HARD];
    unsigned st_nfds;
    size_t queued_bytes;        /* payload not yet staged */

    struct bk_async *as;        /* non-NULL once attached */
    struct bk_shm *shm;         /* pool, mapped segments, releases */
};

/* ---- client.c ---------------------------------------------------------- */
uint64_t bk_now_ms(void);
int64_t bk_deadline(int timeout_ms);
void bk_set_fatal(broker_t *b, int err);
void bk_conn_lost(broker_t *b);
int bk_usable(const broker_t *b);
void bk_free(broker_t *b);

struct bk_stream *bk_stream_find(broker_t *b, uint32_t id);
struct bk_stream *bk_stream_add(broker_t *b, uint32_t id);
void bk_stream_forget(broker_t *b, struct bk_stream *s);
int bk_sid_alloc(broker_t *b, uint32_t *sid);
bool bk_name_ok(const broker_t *b, const char *name, size_t *len);

void bk_fifo_push(broker_t *b, struct bk_lmsg *m);
struct bk_lmsg *bk_fifo_pop(broker_t *b);
struct bk_lmsg *bk_lmsg_event(broker_kind_t kind, uint32_t stream,
                              uint64_t source, int code, const void *text,
                              size_t textlen);
struct bk_lmsg *bk_lmsg_from_out(bk_reasm_out_t *o);
void bk_lmsg_free(struct bk_lmsg *m);
void bk_watch_begin(broker_t *b, uint32_t sid, bool data);
struct bk_lmsg *bk_watch_end(broker_t *b);
bool bk_watch_aborted(const broker_t *b);
int bk_ctrl_call(broker_t *b, uint32_t op, const void *arg, size_t len,
                 int fd, int64_t deadline, uint8_t **payload, size_t *plen);

/* ---- send.c ------------------------------------------------------------ */
bool bk_out_pending(const broker_t *b);
int bk_out_flush(broker_t *b, bool all, unsigned budget);
int bk_send_failed(broker_t *b, int err);
int bk_send_direct(broker_t *b, const struct iovec *iov, int iovcnt,
                   const int *fds, unsigned nfds, int64_t deadline);
int bk_queue_close(broker_t *b, uint32_t stream, uint32_t aux,
                   struct bk_stream *s);
void bk_stream_drop_output(broker_t *b, struct bk_stream *s);
int bk_queue_terminator(broker_t *b, uint32_t stream, uint8_t flags);
int bk_queue_ctrl(broker_t *b, uint32_t id, uint32_t op, const void *arg,
                  size_t len, const int *fds, unsigned nfds);
void bk_unqueue_ctrl(broker_t *b);
void bk_stream_ended(broker_t *b, struct bk_stream *s);
void bk_oqueue_free(struct bk_oqueue *q);
void bk_stream_abort(broker_t *b, uint32_t sid, int err);
int bk_send_blocking(broker_t *b, uint32_t sid, uint8_t flags,
                     const char *name, uint64_t dest, const void *data,
                     size_t len, const int *fds, unsigned nfds,
                     int64_t deadline, struct bk_sbuf *sb);
int bk_send_queued(broker_t *b, uint32_t sid, uint8_t flags,
                   const char *name, uint64_t dest, const void *data,
                   size_t len, const int *fds, unsigned nfds,
                   struct bk_sbuf *sb);
int bk_send_oneway(broker_t *b, uint8_t flags, const char *name,
                   uint64_t dest, const void *data, size_t len,
                   struct bk_sbuf *sb);
void bk_ring_remove(broker_t *b, struct bk_stream *s);
int bk_check_send(const broker_t *b, const void *data, size_t len,
                  const int *fds, unsigned nfds);

/* ---- recv.c ------------------------------------------------------------ */
int bk_pump(broker_t *b, unsigned budget);
int bk_wait(broker_t *b, bool want_write, int64_t deadline);
void bk_deliver(broker_t *b, struct bk_lmsg *m);
void bk_run_expiry(broker_t *b);
void bk_reasm_limits_of(const broker_t *b, bk_reasm_limits_t *lim);

/* ---- shm.c -------------------------------------------------------------
 * The sb argument of the send functions above: a descriptor of a pool
 * buffer (data/len are its encoded form) whose reference the call takes
 * over, giving it back if the descriptor is never sent.  With sb NULL,
 * large messages may take the automatic shared-memory path. */
int bk_shm_create(broker_t *b);
void bk_shm_close_rx(broker_t *b);
void bk_shm_destroy(broker_t *b);
int bk_shm_auto(broker_t *b, const void **data, size_t *len,
                uint8_t *flags, unsigned nfds, int64_t deadline,
                struct bk_sbuf **out, uint8_t desc[BK_SHM_DESC_SIZE]);
void bk_shm_unsent(struct bk_sbuf *sb);
int bk_shm_on_release(broker_t *b, const bk_hdr_t *h, const uint8_t *p);
int bk_shm_on_segment(broker_t *b, const bk_hdr_t *h, const uint8_t *p,
                      int fd);
int bk_shm_on_seg_drop(broker_t *b, const bk_hdr_t *h, const uint8_t *p);
int bk_shm_lookup(broker_t *b, uint64_t owner, const bk_shm_desc_t *d,
                  struct bk_rseg **out);
void *bk_shm_view_get(struct bk_rseg *seg, uint64_t off);
void bk_shm_view_put(struct bk_rseg *seg, uint64_t off, bool flush);
void bk_shm_release(broker_t *b, uint64_t owner, uint32_t segid,
                    uint64_t off);
bool bk_shm_release_pending(const broker_t *b);
size_t bk_shm_stage_release(broker_t *b, uint8_t *out, size_t room);

/* ---- async.c ----------------------------------------------------------- */
void bk_async_settle(broker_t *b, struct bk_acall *ac);
void bk_async_kick(broker_t *b);
void bk_async_close(broker_t *b);

#endif
