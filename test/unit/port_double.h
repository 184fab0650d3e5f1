/*
 * port_double.h - a test double for the daemon's ports, so router.c and
 * shm.c run in a unit test without sockets or a loop.
 *
 * port_double.c defines the functions of port.c, server.c and monitor.c
 * that router.c and shm.c call (bk_port_send and friends, bk_server_find,
 * bk_now_ms, bk_mon_record) and links in their place: a frame "sent" to a
 * port is appended to the world's log instead.  The real router, shm,
 * streams, names and policy code runs unchanged.
 *
 * Owns: the world (one server, its configuration and up to DBL_PORTS
 * ports, all calloc'd by dbl_world_new and freed by dbl_world_free) and
 * the log; the fds of a logged frame are closed as it is logged (only
 * their count is kept).
 */
#ifndef PORT_DOUBLE_H
#define PORT_DOUBLE_H

#include <stdbool.h>
#include <stdint.h>
#include "port.h"
#include "server.h"

#define DBL_PORTS 8
#define DBL_LOG 256
#define DBL_PAYLOAD 256

typedef struct dbl_frame {
    bk_port_t *to;
    bk_hdr_t h;
    uint8_t payload[DBL_PAYLOAD];   /* the first DBL_PAYLOAD bytes */
    unsigned nfds;
    bool body;                      /* bk_port_send_body: bytes instead */
    uint64_t body_len;
} dbl_frame_t;

typedef struct dbl_world {
    bk_server_t srv;
    bk_conf_t cfg;
    bk_port_t *ports[DBL_PORTS];
    unsigned nports;
    dbl_frame_t log[DBL_LOG];
    unsigned nlog;
    /* The next DATA frame sent to fail_to (NULL: none) fails with
     * fail_err (0: -ENOMEM, as a full heap would make it) instead of
     * being logged. */
    bk_port_t *fail_to;
    int fail_err;
    /* A port whose queue counts as past queue_limit: bk_port_note_busy
     * logs the FLOW BUSY frame port.c would send a `flow` sender. */
    bk_port_t *busy;
    /* Release jobs (shm.h): dbl_port_gone runs them to the end unless
     * hold_releases is set (the test steps them); release_wakeups counts
     * bk_server_release_soon calls. */
    bool hold_releases;
    unsigned release_wakeups;
} dbl_world_t;

/* A world with default limits (max_streams 4, max_msg 1 MiB); tests may
 * change w->cfg before adding ports. */
dbl_world_t *dbl_world_new(void);
void dbl_world_free(dbl_world_t *w);

/* A connected client (past the handshake) with this id. */
bk_port_t *dbl_port_new(dbl_world_t *w, uint64_t id);
/* The client disconnects: what bk_port_close does for streams and shared
 * memory, in its order (it leaves the client table first), then its
 * release job's passes (unless w->hold_releases). */
void dbl_port_gone(dbl_world_t *w, bk_port_t *p);

/* Frames logged for `to` (NULL: for anyone) since the log was cleared;
 * the i-th of them, or NULL. */
unsigned dbl_count(const dbl_world_t *w, const bk_port_t *to);
const dbl_frame_t *dbl_nth(const dbl_world_t *w, const bk_port_t *to,
                           unsigned i);
void dbl_clear(dbl_world_t *w);

#endif
