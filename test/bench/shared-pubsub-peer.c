/* brokerd_pubsub.c - brokerd through libbroker's blocking API, with topics.
 *
 * A driver for the shared cross-broker benchmark (../shared/bench, see its
 * README.md), kept in the project as test/bench/shared-pubsub-peer.c.  That
 * folder is read-only; to run it:
 *
 *   W=$(mktemp -d) && cp -r ../shared/bench/. "$W"/ && chmod -R u+w "$W"
 *   cp test/bench/shared-pubsub-peer.c "$W"/peers/brokerd_pubsub.c
 *   BROKERD_BUILD=$PWD/build "$W"/run.sh -w fanout -r 3 \
 *       brokerd brokerd_pubsub relay redis nats
 *   BROKERD_BUILD=$PWD/build "$W"/run.sh -w fanout -r 3 -c 0 \
 *       brokerd brokerd_pubsub relay redis nats      # all on CPU 0
 *
 * from the project's root after a build (bash contrib/dev.sh test leaves
 * one in build/).  The stock `brokerd` driver (one name per client,
 * broker_send; fan-out = one broker_send per receiver) runs beside it.
 *
 * What this one does: every client subscribes (policy BROKER_SUB_BLOCK,
 * lossless, as the other peers are configured) to a topic of its own
 * ("A", "B<i>"); in the fanout workload the receivers subscribe to "F"
 * instead, and fan-out is ONE broker_publish per message to "F" (the
 * broker copies nothing per receiver: one refcounted payload).  Every
 * other send, in every workload, is a broker_publish to the receiver's own
 * topic (pingpong, stream64, stream4k, the acknowledgements of the
 * probes), so the other workloads measure the publication path one to one
 * rather than unicast; bulk goes through broker_publish's automatic
 * shared-memory path (payloads >= 256 KiB, the sender's sealed memfd pool),
 * as broker_send's does.  A GAP (dropped publications) cannot happen with
 * policy block; if one came it is counted on stderr, and the harness sees
 * the missing sequence numbers.
 *
 * Every client batches (BROKER_OPT_BATCH, libbroker(3) "Batching"): a
 * burst of publications leaves in packets of hundreds, written when a
 * packet is full, when the client waits (the harness's receive) and by
 * the harness's flush hook (broker_flush).  BROKERD_PUBSUB_BATCH=0 turns
 * that off (one packet per publication).
 *
 * BROKERD_PUBSUB_ASYNC=1 (environment, off by default): client A of
 * stream64, stream4k and fanout publishes through the libuv-attached API
 * instead (broker_attach; what one loop pass publishes is packed and
 * written before the loop sleeps, and the driver lets at most PENDING_MAX
 * bytes wait in the library: the pipelining the redis driver does with
 * its batches of 256).
 * BROKERD_SRC is the source tree (for include/), BROKERD_BUILD the build
 * tree that holds brokerd and .libs/libbroker.so (run.sh sets both).
 * CFLAGS: -I${BROKERD_SRC}/include
 * LDLIBS: -L${BROKERD_BUILD}/.libs -Wl,-rpath,${BROKERD_BUILD}/.libs -lbroker -luv
 * APT:
 */
#define _GNU_SOURCE
#include "../harness.h"
#include <broker.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static const char *build_dir(void) {
    const char *p = getenv("BROKERD_BUILD");
    return p && *p ? p : "build";
}

static int start(const char *tmp, pid_t *pid) {
    char sock[300], bin[300], log[300];
    snprintf(sock, sizeof sock, "%s/brokerd.sock", tmp);
    snprintf(bin, sizeof bin, "%s/brokerd", build_dir());
    snprintf(log, sizeof log, "%s/brokerd.log", tmp);
    char *argv[] = {bin, "-f", "-s", sock, "--log-level", "warning", NULL};
    *pid = bench_spawn(argv, log);
    return bench_wait_path(sock, 5000);
}

/* A message received in attached mode, waiting for rcv(). */
typedef struct qmsg { struct qmsg *next; broker_msg_t *m; } qmsg_t;

typedef struct {
    broker_t *b;
    broker_msg_t *last;
    uint64_t gaps;
    /* attached mode (client A of stream64/stream4k/fanout) */
    uv_loop_t *loop;
    uv_timer_t timer;
    qmsg_t *head, **tail;
    int err, fired;
} h_t;

/* Sends queue in the library beyond this many bytes only while the loop
 * drains them (the pipelining depth, like redis's batches of 256). */
#define PENDING_MAX (256u << 10)

static void on_msg(broker_t *b, broker_msg_t *m, void *ud) {
    h_t *h = ud;
    qmsg_t *q = malloc(sizeof *q);
    (void)b;
    if (!q) { broker_msg_free(m); h->err = -ENOMEM; return; }
    q->next = NULL; q->m = m;
    *h->tail = q; h->tail = &q->next;
}
static void on_disc(broker_t *b, int err, void *ud) { (void)b; ((h_t *)ud)->err = err ? err : -EPIPE; }
static void on_timer(uv_timer_t *t) { ((h_t *)t->data)->fired = 1; }

/* Run the loop until a message is queued, or for ms (< 0: until the
 * library has written everything). */
static void run_loop(h_t *h, int ms, int want_msg) {
    h->fired = 0;
    if (ms >= 0) uv_timer_start(&h->timer, on_timer, (uint64_t)ms, 0);
    while (!h->err && !h->fired && !(want_msg && h->head) &&
           (ms >= 0 || broker_pending(h->b) > 0))
        uv_run(h->loop, UV_RUN_ONCE);
    uv_timer_stop(&h->timer);
}

static void *op(int role, int nsub, int wl, const char *tmp) {
    (void)nsub;
    char sock[300], topic[16];
    uint32_t id;
    snprintf(sock, sizeof sock, "%s/brokerd.sock", tmp);
    h_t *h = calloc(1, sizeof *h);
    if (!h || broker_connect(sock, &h->b) < 0) return NULL;
    broker_set_option(h->b, BROKER_OPT_MAX_MSG, 64u << 20);
    const char *batch = getenv("BROKERD_PUBSUB_BATCH");
    if (!(batch && *batch == '0'))
        broker_set_option(h->b, BROKER_OPT_BATCH, 1);
    if (role == 0) strcpy(topic, "A");
    else if (wl == WL_FANOUT) strcpy(topic, "F");
    else snprintf(topic, sizeof topic, "B%d", role);
    /* broker_subscribe returns once the broker has it: live from here */
    int r = broker_subscribe(h->b, topic, NULL, BROKER_SUB_BLOCK, &id);
    if (r < 0) {
        fprintf(stderr, "brokerd_pubsub: subscribe %s: %s\n", topic, broker_strerror(r));
        return NULL;
    }
    /* BROKERD_PUBSUB_ASYNC=1: the sender of the throughput workloads
     * publishes through libbroker's libuv-attached API (see the top). */
    const char *async = getenv("BROKERD_PUBSUB_ASYNC");
    if (async && *async == '1' && role == 0 &&
        (wl == WL_STREAM64 || wl == WL_STREAM4K || wl == WL_FANOUT)) {
        static const broker_callbacks_t cbs = { on_msg, on_disc };
        h->loop = malloc(sizeof *h->loop);
        h->tail = &h->head;
        if (!h->loop || uv_loop_init(h->loop) < 0) return NULL;
        uv_timer_init(h->loop, &h->timer);
        h->timer.data = h;
        r = broker_attach(h->b, h->loop, &cbs, h);
        if (r < 0) {
            fprintf(stderr, "brokerd_pubsub: attach: %s\n", broker_strerror(r));
            return NULL;
        }
    }
    return h;
}

static int snd(void *hh, int dst, const void *buf, size_t len) {
    h_t *h = hh;
    char t[16];
    if (dst == DST_ALL) strcpy(t, "F");
    else if (dst == 0) strcpy(t, "A");
    else snprintf(t, sizeof t, "B%d", dst);
    if (broker_publish(h->b, t, buf, len, NULL, 0) < 0) return -1;
    if (h->loop && broker_pending(h->b) > PENDING_MAX) {
        while (!h->err && broker_pending(h->b) > PENDING_MAX / 2)
            uv_run(h->loop, UV_RUN_ONCE);
    }
    return h->err ? -1 : 0;
}

static void fl(void *hh) {
    h_t *h = hh;
    if (h->loop) run_loop(h, -1, 0);
    else broker_flush(h->b, -1);
}

static void idl(void *hh, int ms) {
    h_t *h = hh;
    if (h->loop) run_loop(h, ms, 0);
    else usleep((useconds_t)ms * 1000);
}

static long rcv(void *hh, const void **out, int tmo) {
    h_t *h = hh;
    broker_msg_free(h->last); h->last = NULL;
    for (;;) {
        broker_msg_t *m;
        int r = 0;
        if (h->loop) {
            if (!h->head) run_loop(h, tmo, 1);
            if (h->err) return -1;
            if (!h->head) return 0;
            qmsg_t *q = h->head;
            h->head = q->next;
            if (!h->head) h->tail = &h->head;
            m = q->m;
            free(q);
        } else {
            r = broker_recv(h->b, &m, tmo);
        }
        if (r == -ETIMEDOUT) return 0;
        if (r < 0) return -1;
        if (m->kind == BROKER_MSG_GAP) h->gaps += m->gap;
        if (m->kind != BROKER_MSG_DATA) { broker_msg_free(m); continue; }
        h->last = m;
        *out = m->data;
        return (long)m->len;
    }
}

static void cl(void *hh) {
    h_t *h = hh;
    if (h->gaps)
        fprintf(stderr, "brokerd_pubsub: %" PRIu64 " publications dropped (GAP)\n", h->gaps);
    broker_msg_free(h->last);
    if (h->loop) {
        fl(h);
        while (h->head) { qmsg_t *q = h->head; h->head = q->next; broker_msg_free(q->m); free(q); }
    }
    broker_close(h->b);
    if (h->loop) {
        uv_close((uv_handle_t *)&h->timer, NULL);
        uv_run(h->loop, UV_RUN_DEFAULT);   /* lets libuv release the handles */
        uv_loop_close(h->loop);
        free(h->loop);
    }
    free(h);
}
static const char *ver(void) { return "libbroker-" BROKER_VERSION_STRING "-publish"; }

const peer_t PEER = {
    .name = "brokerd_pubsub", .kind = "brokered",
    .server_start = start, .open = op, .send = snd, .recv = rcv, .flush = fl, .idle = idl,
    .close = cl, .version = ver,
};
