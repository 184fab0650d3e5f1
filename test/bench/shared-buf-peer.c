/* brokerd_buf.c - brokerd through libbroker's blocking API, large messages
 * written in place in the sender's shared-memory buffers.
 *
 * A driver for the shared cross-broker benchmark (../shared/bench, see its
 * README.md), kept in the project as test/bench/shared-buf-peer.c.  That
 * folder is read-only; to run it:
 *
 *   W=$(mktemp -d) && cp -r ../shared/bench/. "$W"/ && chmod -R u+w "$W"
 *   cp test/bench/shared-buf-peer.c "$W"/peers/brokerd_buf.c
 *   BROKERD_BUILD=$PWD/build "$W"/run.sh -w bulk -r 3 \
 *       brokerd brokerd_buf iceoryx relay
 *
 * from the project's root after a build (bash contrib/dev.sh test leaves
 * one in build/).  The stock `brokerd` driver runs beside it: there the
 * bulk payload is broker_send()'s, which copies it once into a pool buffer
 * (the automatic shared-memory path), as iceoryx's driver copies it once
 * into a loaned chunk.
 *
 * What this one does: clients and names as in the stock driver (one name
 * per client, "A", "B<i>"); the sender reserves 64 MiB of its pool when
 * it connects (BROKER_OPT_SHM_RESERVE).  A message of BUF_MIN bytes or more (bulk's
 * 16 MiB) is produced in place instead: broker_buf_alloc(), the 16-byte
 * harness header copied in, the rest of the payload filled where it lies
 * (memset with a byte of the sequence number: the producer writes its
 * data once, straight into shared memory), broker_buf_send() to each
 * destination (fan-out sends the one buffer to every receiver), then
 * broker_buf_free(); the buffer goes back to the pool once the receivers
 * released it.  Smaller messages (the other workloads, the probes and
 * their acknowledgements) are broker_send()s as in the stock driver.  The
 * receiving side is the stock one: broker_recv(), a read-only view into
 * the sender's segment, freed by the next receive.
 *
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

#define BUF_MIN  (256u << 10)   /* in place from this size on */
#define HDR_LEN  16u            /* the harness header: type, from, seq */

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
    /* the sender's pool set up before the clock starts, as iceoryx's
     * RouDi sets up its mempools (BROKER_OPT_SHM_RESERVE: one 64 MiB
     * segment, room for the two or three 16 MiB buffers in flight) */
    if (role == 0) broker_set_option(h->b, BROKER_OPT_SHM_RESERVE, 64u << 20);
    if (role == 0) strcpy(name, "A"); else snprintf(name, sizeof name, "B%d", role);
    if (broker_register(h->b, name) < 0) return NULL;
    return h;
}

static void dst_name(int dst, char t[16]) {
    if (dst == 0) strcpy(t, "A"); else snprintf(t, 16, "B%d", dst);
}

/* The payload produced in place: header, then the data written once. */
static int send_in_place(h_t *h, int dst, const void *buf, size_t len) {
    broker_buf_t *bb;
    uint64_t seq;
    char t[16];
    int r = 0;

    if (broker_buf_alloc(h->b, len, &bb, -1) < 0) return -1;
    memcpy(bb->data, buf, HDR_LEN);
    memcpy(&seq, (const char *)buf + 8, sizeof seq);
    memset((char *)bb->data + HDR_LEN, (int)(seq & 0xff), len - HDR_LEN);
    for (int i = dst == DST_ALL ? 1 : dst; r == 0; i++) {
        dst_name(i, t);
        r = broker_buf_send(h->b, t, bb, len) < 0 ? -1 : 0;
        if (dst != DST_ALL || i == h->nsub) break;
    }
    broker_buf_free(h->b, bb);
    return r;
}

static int snd(void *hh, int dst, const void *buf, size_t len) {
    h_t *h = hh;
    char t[16];
    if (len >= BUF_MIN) return send_in_place(h, dst, buf, len);
    if (dst == DST_ALL) {
        for (int i = 1; i <= h->nsub; i++) {
            dst_name(i, t);
            if (broker_send(h->b, t, buf, len, NULL, 0) < 0) return -1;
        }
        return 0;
    }
    dst_name(dst, t);
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

static void cl(void *hh) {
    h_t *h = hh;
    broker_msg_free(h->last);
    broker_close(h->b);
}
static const char *ver(void) { return "libbroker-" BROKER_VERSION_STRING "-buf"; }

const peer_t PEER = {
    .name = "brokerd_buf", .kind = "brokered",
    .server_start = start, .open = op, .send = snd, .recv = rcv, .close = cl, .version = ver,
};
