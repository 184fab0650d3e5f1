/*
 * conn.h - libbroker layer 2: the connection (prefix bk_conn_).  Not
 * installed.
 *
 * Owns struct broker, the handle every module takes.  It holds the
 * connection's core by value: the socket (io.h), the client id, the
 * limits the broker announced in WELCOME, the options the application
 * set, and the handshake state.  Each higher layer keeps its own state
 * behind one pointer here, opaque to this file and to every layer below
 * the one that defines it:
 *
 *   out    outq.h    layer 3   output queues, staging, flushing
 *   subs   subs.h    layer 3   the live subscription ids
 *   st     stream.h  layer 4   the stream table
 *   flow   flow.h    layer 4   receivers the broker called busy
 *   ctrl   ctrl.h    layer 4   the control request in flight
 *   shm    shm.h     layer 5   our shared-memory pool
 *   views  shmview.h layer 5   segments others share with us
 *   in     in.h      layer 6   reading, dispatch, the FIFO, the watch
 *   as     async.h   layer 7   the libuv attachment (NULL if detached)
 *   rc     recon.h   layer 7   what BROKER_OPT_RECONNECT restores (NULL
 *                              while the option is off)
 *
 * handle.c creates them in that order and frees them in reverse.
 */
#ifndef BK_CONN_H
#define BK_CONN_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "broker.h"
#include "error.h"
#include "proto.h"
#include "frame.h"
#include "htable.h"
#include "list.h"
#include "io.h"

#define BROKER_API __attribute__((visibility("default")))

#define BK_DEF_LIB_MAX_MSG      (UINT64_C(256) << 20)
#define BK_DEF_LIB_MAX_PARTIAL  1024u
#define BK_DEF_LIB_MAX_QUEUED   (UINT64_C(32) << 20) /* FIFO bound */
#define BK_DEF_LIB_TIMEOUT_MS   30000u
#define BK_HANDSHAKE_MS         10000
#define BK_PUMP_BUDGET          64u     /* packets read per wake-up */
#define BK_PUMP_FIFO            256u    /* ... unless this many messages */
#define BK_PUMP_FIFO_BYTES      (256u << 10) /* or bytes wait in the FIFO */
#define BK_FLUSH_BUDGET         64u     /* packets written per wake-up */
#define BK_DEF_SHM_THRESHOLD    262144u
#define BK_DEF_SHM_SEGMENT      (UINT64_C(64) << 20)
#define BK_MAX_SHM_SEGMENT      (UINT64_C(1) << 40)
#define BK_DEF_SHM_IDLE_MS      10000u

struct bk_out;
struct bk_subs;
struct bk_streams;
struct bk_flow;
struct bk_ctrl;
struct bk_shm;
struct bk_shmview;
struct bk_in;
struct bk_async;
struct bk_recon;

struct broker {
    struct bk_io io;
    uint64_t id;
    broker_limits_t lim;
    bk_limits_t flim;           /* what frames from the broker are held to */
    size_t pkt_cap;             /* largest packet we send */
    bool welcomed;
    bool closing;               /* broker_close has begun */

    uint64_t opt_max_msg;
    bool opt_chunked;
    uint32_t opt_max_partial;
    uint64_t opt_max_partial_bytes; /* 0: the default (in.c) */
    uint64_t opt_max_queued;    /* BROKER_OPT_MAX_QUEUED */
    uint64_t opt_timeout_ms;
    uint64_t opt_shm_threshold;
    uint64_t opt_shm_seg_size;
    uint64_t opt_shm_pool_max;
    bool opt_shm_fallback;
    uint64_t opt_shm_idle_ms;   /* BROKER_OPT_SHM_IDLE_MS, 0: never */
    uint64_t opt_shm_reserve;   /* BROKER_OPT_SHM_RESERVE, 0: none */
    bool opt_batch;             /* BROKER_OPT_BATCH (blocking mode) */
    char path[108];             /* the socket path connected to */

    /* attached mode: brings the loop's handles in line with the state
     * after an operation; set by async.c */
    void (*kick)(broker_t *b);

    struct bk_out *out;
    struct bk_subs *subs;
    struct bk_streams *st;
    struct bk_flow *flow;
    struct bk_ctrl *ctrl;
    struct bk_shm *shm;
    struct bk_shmview *views;
    struct bk_in *in;
    struct bk_async *as;
    struct bk_recon *rc;
};

static inline broker_t *bk_conn_of(struct bk_io *io)
{
    return bk_container_of(io, struct broker, io);
}

/* A handle with default limits and options, owning fd.  NULL: -ENOMEM
 * (fd is left to the caller). */
broker_t *bk_conn_new(int fd);
/* Copy the options the application set (opt_*) from src to dst. */
void bk_conn_copy_opts(broker_t *dst, const broker_t *src);
/* Close the socket and free the handle (every module is gone by then). */
void bk_conn_free(broker_t *b);

/* HELLO, sent without waiting for anything else: the first packet. */
int bk_conn_send_hello(broker_t *b, int64_t deadline);
/* WELCOME from the broker: record id and limits.  0 or -EPROTO. */
int bk_conn_on_welcome(broker_t *b, const uint8_t *p);
/* After WELCOME: size the read buffer, SO_SNDBUF and pkt_cap. */
int bk_conn_apply_limits(broker_t *b);

/* 0 if new work may start on b, else the error to return. */
int bk_conn_usable(const broker_t *b);
/* Whether name is a valid name within the broker's limit; *len its
 * length. */
bool bk_conn_name_ok(const broker_t *b, const char *name, size_t *len);

/* An ERROR / CTRL_REPLY code as a negative errno (bk_err_from_wire),
 * where a code beyond the errno range reads as -EPROTO. */
static inline int bk_conn_wire_code(uint32_t aux)
{
    int err = bk_err_from_wire(aux);

    return err < -4095 ? -EPROTO : err;
}

/* Whether b is attached to a libuv loop (async.c): nothing may block,
 * output waits in queues until the loop finds the socket writable. */
static inline bool bk_conn_attached(const broker_t *b)
{
    return b->as != NULL;
}

/* Attached mode: let the loop see what the operation changed. */
static inline void bk_conn_kick(broker_t *b)
{
    if (bk_conn_attached(b) && b->kick)
        b->kick(b);
}

#endif
