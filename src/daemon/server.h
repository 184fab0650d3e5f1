/*
 * server.h - the broker as a whole: listening socket, client table, names,
 * streams, counters, signals and shutdown (prefix bk_server_).
 *
 * Owns the listening socket and its lock file fd, the spare fd for
 * EMFILE, the signal, grace-timer, flush (uv_prepare), release (uv_idle)
 * and trim-timer * handles, the receive buffer every port reads into, the client table and
 * the lists every port is on (all, reap, dirty; the ports themselves are
 * port.c's), the name, stream and subscription tables and the counters.
 * The monitor list hangs here but is monitor.c's; the configuration is
 * main's.
 *
 * Once per loop pass, just before the loop waits for events, the flush
 * handle writes every port that got frames during the pass (the dirty
 * list) and closes what failed meanwhile; the end of each callback only
 * closes what failed (bk_server_reap).  A port that reads much in one
 * callback flushes the dirty list itself once BK_FLUSH_EARLY bytes were
 * queued since the last flush, so what a burst queued is written while
 * it is still in the cache (a fan-out packet of publications queues
 * eight packets' worth).
 *
 * Memory: freed heap memory is given back to the system (malloc_trim) a
 * second after the number of connections fell below half of its peak
 * since the last trim (by BK_TRIM_MIN_DROP at least), or after an output
 * queue that had grown past queue_limit drained (bk_server_trim_soon).
 */
#ifndef BK_SERVER_H
#define BK_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>
#include "conf.h"
#include "user.h"
#include "htable.h"
#include "list.h"
#include "names.h"
#include "reap.h"
#include "shm.h"
#include "streams.h"
#include "subs.h"
#include "tree.h"

struct bk_port;

/* Packets read from a client per syscall (recvmmsg) at most: the receive
 * buffer has a slot of max_packet bytes for each. */
#define BK_RECV_BATCH 8

/* Bytes a recvmmsg call is sized for: a port whose packets were large
 * asks for fewer of them (port.c, recv_slots), so that what one call
 * brings in is still in the cache when it is routed.  Eight full 64 KiB
 * packets per call made fan-out of 1 KiB publications 1.5x slower than
 * two. */
#define BK_RECV_BYTES (128u * 1024)

/* Bytes queued in one callback after which the dirty list is flushed at
 * once rather than at the end of the loop pass. */
#define BK_FLUSH_EARLY (256u * 1024)

/* The memory rule above: connections that must have gone, at least, for
 * a fall to half the peak to count. */
#define BK_TRIM_MIN_DROP 256u

typedef struct bk_stats {
    uint64_t msgs_in, msgs_out;
    uint64_t bytes_in, bytes_out;
    uint64_t clients_total;
    uint64_t protocol_errors;
    uint64_t shm_segments;      /* registered */
    uint64_t shm_bytes;         /* registered */
    uint64_t shm_held;          /* descriptors delivered, not released */
    uint64_t published;         /* publications (first fragments) */
    uint64_t published_unmatched;   /* ... that matched no subscription */
    uint64_t delivered_pub;     /* publications queued or written */
    uint64_t dropped_pub;       /* publications dropped by a policy */
} bk_stats_t;

typedef struct bk_server {
    uv_loop_t *loop;
    bk_conf_t *cfg;           /* main's; reload changes it */
    int lfd;                    /* listening socket */
    struct sockaddr_un laddr;   /* its address (getsockname) */
    socklen_t laddr_len;        /* 0: unknown */
    int lockfd;                 /* flock()ed PATH.lock */
    int reserve_fd;             /* spare fd for EMFILE at accept */
    char lockpath[sizeof(((bk_conf_t *)0)->socket_path) + 8];
    uv_poll_t lpoll;
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t grace;
    uv_prepare_t flusher;       /* once per loop pass: flush, then reap */
    uv_timer_t trimmer;         /* one-shot: malloc_trim */
    uint8_t *rbuf;              /* BK_RECV_BATCH packets: every port reads
                                 * into it */
    size_t rbuf_len;            /* its size */
    uint8_t *wbuf;              /* one packet: packed frames are copied
                                 * into it and written as one segment */
    size_t wbuf_len;            /* its size */
    bk_htable_t clients;        /* id -> bk_port */
    bk_tree_t client_index;     /* the same ports in id order: the
                                 * LIST_CLIENTS cursor (inspect.c) */
    bk_tree_t shm_index;        /* every registered segment by its
                                 * shm_seq: the LIST_SHM cursor */
    uint64_t shm_seq;           /* last segment number given */
    uint32_t nclients;          /* past the handshake */
    uint32_t nports;            /* every connection, handshaking or not */
    uint32_t nports_peak;       /* most ports since the last trim */
    bk_names_t names;
    bk_st_table_t streams;
    bk_subs_t *subs;            /* every subscription (subs.h) */
    uint64_t next_client_id;
    uint64_t start_ms;
    bk_stats_t stats;
    bk_list_t reap;             /* bk_port.reap_link: failed during this
                                 * callback, to be closed */
    bk_list_t all;              /* bk_port.all_link: every port,
                                 * handshaking or not, newest first */
    bk_list_t dirty;            /* bk_port.dirty_link: frames to flush */
    bk_list_t handshaking;      /* bk_port.hs_link: no WELCOME yet, oldest
                                 * first */
    bk_list_t draining;         /* bk_port.drain_link: while stopping, the
                                 * ports that had frames to write */
    uv_timer_t hs_timer;        /* closes the oldest when its time is up */
    bk_users_t users;           /* one record per uid with a connection */
    uint64_t unflushed;         /* bytes queued since the dirty list was
                                 * last flushed */
    bk_list_t unstash;          /* bk_port.stash_link: resumed senders
                                   with packets read past their pause */
    bk_list_t budget_paused;    /* bk_port.budget_link: senders paused by
                                 * a budget of queued memory (port.c) */
    bk_list_t monitors;         /* bk_mon.link: traffic taps (monitor.c) */
    bk_shm_drain_t releases;    /* departed holders' references (shm.h) */
    uv_idle_t releaser;         /* runs bk_shm_drain_step while it has
                                 * work that can go on */
    bk_reap_t reaper;           /* dead clients kept open by fds in
                                 * flight (reap.h) */
    bool stopping;
    bool finished;
    bool listening;
    bool activated;             /* lfd came from the service manager */
    /* Refused connections are logged once per episode: max-clients until
     * a connection is accepted again, max-clients-per-uid until that
     * user's next client is let in (port.c). */
    bool full_logged;
    bool uid_full_logged;
    uid_t uid_full;             /* the user uid_full_logged is about */
} bk_server_t;

/* Set up: lock, stale-socket check, bind, listen, signal handlers.
 * With lfd >= 0 (a listening socket from socket activation, owned by the
 * server from now on) there is no lock, bind or unlink: the service
 * manager owns the path.  Returns 0 or a negative errno after logging. */
int bk_server_init(bk_server_t *s, uv_loop_t *loop, bk_conf_t *cfg,
                   int lfd);
/* Re-read the configuration file (SIGHUP, CTRL RELOAD).  Returns 0, or
 * -EINVAL with "FILE:LINE: reason" in err (logged; nothing changed). */
int bk_server_reload(bk_server_t *s, char *err, size_t errlen);
/* Begin an orderly shutdown (also what SIGINT/SIGTERM do). */
void bk_server_stop(bk_server_t *s);
/* Release what init took that outlives the loop. */
void bk_server_fini(bk_server_t *s);

struct bk_port *bk_server_find(const bk_server_t *s, uint64_t id);
/* Close every port marked failed during the current callback (the frames
 * this queues for others leave with the loop pass's flush). */
void bk_server_reap(bk_server_t *s);
/* The receive buffer, BK_RECV_BATCH slots of cfg->max_packet bytes
 * (resized here if a reload changed that), or NULL if it cannot be had.
 * Packets read into it must be processed before the next read: nothing
 * may keep a pointer into it, what has to outlive a packet is copied
 * (queued frames, names, monitor records). */
uint8_t *bk_server_rbuf(bk_server_t *s);
/* The write staging buffer, max_packet bytes (NULL: out of memory). */
uint8_t *bk_server_wbuf(bk_server_t *s);
/* Give freed memory back to the system a second from now (memory rule
 * above); a no-op if that is planned already. */
void bk_server_trim_soon(bk_server_t *s);
/* Release jobs (shm.h) have work: run a batch each loop pass, without
 * waiting for events meanwhile, until none can go on. */
void bk_server_release_soon(bk_server_t *s);
/* Called by a port when its queue became empty (shutdown progress). */
void bk_server_port_drained(bk_server_t *s);
uint64_t bk_now_ms(void);

#endif
