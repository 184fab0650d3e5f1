/*
 * reap.h - ending the connections of clients that died while the broker
 * itself keeps their connection open (prefix bk_reap_).
 *
 * The case: a client makes a socketpair (S1, S2), sends its connection to
 * the broker, C, over S2 (C now sits in flight in S1's receive queue),
 * then sends S1 to itself through the broker while it does not read its
 * own socket, so the broker holds S1 in that client's output queue.  When
 * the client dies, C is still open -- inside S1, which the broker holds --
 * so the broker never sees EOF, and the dead client keeps its name,
 * slots, fds and shared memory.  (C itself, or the listening socket, is
 * refused outright: router.c, refuse_broker_fds.)
 *
 * Had the broker written S1 out, the whole cycle would be in flight (S1
 * in C's receive queue, C in S1's), and the kernel's garbage collector of
 * Unix sockets would take it: it knows what a search of /proc/PID/fd
 * cannot (descriptors in flight, processes the broker may not inspect),
 * and never takes a socket some process can still reach.  So that is
 * what the broker does, once per client:
 *
 *  1. Every reap-interval milliseconds (0: never) a sweep looks at a
 *     batch of the client table for suspects: clients whose output queue
 *     holds fds and wrote nothing since the sweep before.
 *  2. For a suspect, is the connecting process (SO_PEERCRED's pid at
 *     accept, with its start time from /proc/PID/stat, so a reused pid is
 *     not taken for it) still there?  Then nothing is done: a live client
 *     that does not read is flow control's business.
 *  3. If it is gone, its queue is pushed: written at once past the
 *     socket's usual send buffer (grown for the moment: SO_SNDBUFFORCE
 *     as root, else up to net.core.wmem_max), then a Unix socket is
 *     closed to wake the collector.  If only fds in flight kept the
 *     connection open, the collector frees the client's end and the
 *     broker sees EOF: the client goes the usual way, releasing
 *     everything it holds, and counts as reaped (STATUS `reaped`,
 *     logged at info).  If some process holds the connection -- a child
 *     the client forked before it exited, or one it was passed to -- that
 *     process reads what was pushed as it would have anyway: nothing is
 *     lost, and the client is never pushed again.
 *
 * Cost: nothing per frame but a count of packets written (bk_port
 * writes); a sweep looks at BK_REAP_BATCH clients at most and checks
 * BK_REAP_SUSPECTS of them (one small /proc read each).  A push moves at
 * most the queue (bounded by the queue limits) into the kernel, once per
 * client.  If the queue does not fit (not root, a small wmem_max), what
 * is left stays and why is logged once at debug.
 */
#ifndef BK_REAP_H
#define BK_REAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct bk_server;
struct bk_port;

/* Clients a sweep looks at, and suspects it checks. */
#define BK_REAP_BATCH 1024u
#define BK_REAP_SUSPECTS 64u

/* The server's part (bk_server.reaper). */
typedef struct bk_reap {
    uv_timer_t timer;           /* the sweep, every reap-interval ms */
    size_t cursor;              /* the bucket of the client table the next
                                 * sweep starts at */
    bool short_logged;          /* a push that did not fit, said once */
    uint64_t checks;            /* suspects checked (STATUS reap_checks) */
    uint64_t pushes;            /* queues pushed (STATUS reap_pushes) */
    uint64_t reaped;            /* pushed clients that then went without a
                                 * word (STATUS reaped) */
} bk_reap_t;

/* A port's part (bk_port.reap). */
typedef struct bk_reap_port {
    uint64_t start;             /* start time of the connecting process
                                 * (clock ticks after boot), 0: unknown */
    uint64_t mark;              /* bk_port.writes at the last sweep that
                                 * saw fds queued (armed) */
    uint64_t msgs_in;           /* bk_port.msgs_in when pushed */
    bool armed;
    bool pushed;                /* once per client */
} bk_reap_port_t;

/* Set up the sweep's timer (not started). */
void bk_reap_init(struct bk_server *s, uv_loop_t *loop);
/* (Re)start the sweep with cfg->reap_interval_ms, or stop it (0): at
 * start once listening, and after each reload. */
void bk_reap_configure(struct bk_server *s);
/* No more sweeps (the broker stops). */
void bk_reap_stop(struct bk_server *s);
/* Close the timer handle (with the server's other handles). */
void bk_reap_close(struct bk_server *s);

/* At accept: note when the connecting process started (p->pid). */
void bk_reap_port_new(struct bk_port *p);
/* A port is being closed: a pushed client whose peer went (EOF) without
 * a message since the push was reaped; count and log it. */
void bk_reap_port_gone(struct bk_port *p);

/* The start time (field 22 of /proc/PID/stat) of process pid, and
 * whether it is a zombie (or dead).  0, -ENOENT (no such process) or
 * another negative errno. */
int bk_reap_proc_stat(pid_t pid, uint64_t *start, bool *zombie);

#endif
