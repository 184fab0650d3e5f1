/* brokerd_batch.c - brokerd through libbroker's blocking API, batched.
 *
 * A driver for the shared cross-broker benchmark (../shared/bench, see its
 * README.md), kept in the project as test/bench/shared-batch-peer.c.  It is
 * the stock `brokerd` driver (one name per client, broker_send to it;
 * fan-out = one broker_send per receiver) with BROKER_OPT_BATCH on for
 * every client and broker_flush() as the harness's flush hook: what a
 * producer that sends in bursts gets from libbroker.  To run it (that
 * folder is read-only):
 *
 *   W=$(mktemp -d) && cp -r ../shared/bench/. "$W"/ && chmod -R u+w "$W"
 *   cp test/bench/shared-batch-peer.c "$W"/peers/brokerd_batch.c
 *   cp test/bench/shared-pubsub-peer.c "$W"/peers/brokerd_pubsub.c
 *   BROKERD_BUILD=$PWD/build "$W"/run.sh brokerd brokerd_batch \
 *       brokerd_pubsub relay redis nats zmq
 *
 * from the project's root after a build.
 * CFLAGS: -I${BROKERD_SRC}/include
 * LDLIBS: -L${BROKERD_BUILD}/.libs -Wl,-rpath,${BROKERD_BUILD}/.libs -lbroker
 * APT:
 */
#define _GNU_SOURCE
#include "../harness.h"
#include <broker.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct { broker_t *b; broker_msg_t *last; int nsub; } h_t;

static void *op(int role, int nsub, int wl, const char *tmp) {
    (void)wl;
    char sock[300], name[16];
    snprintf(sock, sizeof sock, "%s/brokerd.sock", tmp);
    h_t *h = calloc(1, sizeof *h);
    h->nsub = nsub;
    if (broker_connect(sock, &h->b) < 0) return NULL;
    broker_set_option(h->b, BROKER_OPT_MAX_MSG, 64u << 20);
    broker_set_option(h->b, BROKER_OPT_BATCH, 1);
    if (role == 0) strcpy(name, "A"); else snprintf(name, sizeof name, "B%d", role);
    if (broker_register(h->b, name) < 0) return NULL;
    return h;
}

static int snd(void *hh, int dst, const void *buf, size_t len) {
    h_t *h = hh;
    char t[16];
    if (dst == DST_ALL) {
        for (int i = 1; i <= h->nsub; i++) {
            snprintf(t, sizeof t, "B%d", i);
            if (broker_send(h->b, t, buf, len, NULL, 0) < 0) return -1;
        }
        return 0;
    }
    if (dst == 0) strcpy(t, "A"); else snprintf(t, sizeof t, "B%d", dst);
    return broker_send(h->b, t, buf, len, NULL, 0) < 0 ? -1 : 0;
}

static long rcv(void *hh, const void **out, int tmo) {
    h_t *h = hh;
    broker_msg_free(h->last); h->last = NULL;
    for (;;) {
        broker_msg_t *m;
        int r = broker_recv(h->b, &m, tmo);
        if (r == -ETIMEDOUT) return 0;
        if (r < 0) return -1;
        if (m->kind != BROKER_MSG_DATA) { broker_msg_free(m); continue; }
        h->last = m;
        *out = m->data;
        return (long)m->len;
    }
}

static void fl(void *hh) {
    broker_flush(((h_t *)hh)->b, -1);
}

static void cl(void *hh) {
    h_t *h = hh;
    broker_msg_free(h->last);
    broker_close(h->b);
}
static const char *ver(void) { return "libbroker-" BROKER_VERSION_STRING "-batch"; }

const peer_t PEER = {
    .name = "brokerd_batch", .kind = "brokered",
    .server_start = start, .open = op, .send = snd, .recv = rcv, .flush = fl, .close = cl, .version = ver,
};
