/*
 * bridge-bench.c - messages/s and latency from host A through brokerd-nats
 * and NATS to host B, beside libnats alone through the same server.
 *
 *   bridge-bench --nats URL [--count N] [--size BYTES] [--latency N]
 *                SOCK_A SOCK_B
 *
 * SOCK_A's bridge must export bench.> and SOCK_B's import it (test/bench/
 * bridge-bench.sh sets that up).  Throughput: the main thread publishes
 * COUNT messages of SIZE bytes on A as fast as libbroker takes them while
 * a thread subscribed on B receives them; the rate is what arrived over
 * the time from the first publication to the last arrival (a run stops
 * after 2 s without a message: core NATS may drop).  Latency: LATENCY
 * single messages, each published after the previous one arrived, one-way
 * time on one clock.  The baseline does the same with two plain libnats
 * connections on the server at URL (subject benchraw.*).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nats/nats.h>
#include <broker.h>

#define BB_QUIET_MS 2000

typedef struct bb_opts {
    const char *url, *sock_a, *sock_b;
    long count, size, latency;
} bb_opts_t;

typedef struct bb_result {
    long sent, received;
    double seconds;
    double p50, p90, p99, max;      /* one-way latency, microseconds */
} bb_result_t;

static uint64_t bb_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void bb_die(const char *what, int err)
{
    fprintf(stderr, "bridge-bench: %s: %s\n", what, broker_strerror(err));
    exit(1);
}

static void bb_nats_die(const char *what, natsStatus s)
{
    fprintf(stderr, "bridge-bench: %s: %s\n", what, natsStatus_GetText(s));
    exit(1);
}

static int bb_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void bb_percentiles(double *v, long n, bb_result_t *r)
{
    qsort(v, (size_t)n, sizeof(v[0]), bb_cmp);
    r->p50 = v[n / 2];
    r->p90 = v[n * 9 / 10];
    r->p99 = v[n * 99 / 100];
    r->max = v[n - 1];
}

/* ---- through the bridges ------------------------------------------------------ */

/* Write what batching holds (the publisher batches, BROKER_OPT_BATCH). */
static void bb_flush(broker_t *a)
{
    int e = broker_flush(a, -1);

    if (e < 0)
        bb_die("flush on A", e);
}

typedef struct bb_rx {
    broker_t *b;
    long want, got;
    uint64_t last_ns;
} bb_rx_t;

static void *bb_rx_thread(void *arg)
{
    bb_rx_t *rx = arg;
    broker_msg_t *m;

    while (rx->got < rx->want) {
        int r = broker_recv(rx->b, &m, BB_QUIET_MS);

        if (r == -ETIMEDOUT)
            break;
        if (r < 0)
            bb_die("receive on B", r);
        if (m->kind == BROKER_MSG_DATA && m->topic &&
            !strcmp(m->topic, "bench.tp")) {
            rx->got++;
            rx->last_ns = bb_now_ns();
        }
        broker_msg_free(m);
    }
    return NULL;
}

/* Probes on A until one arrives on B: both bridges are subscribed. */
static void bb_probe(broker_t *a, broker_t *b)
{
    uint64_t end = bb_now_ns() + 30000000000ull;
    broker_msg_t *m;

    for (;;) {
        int r = broker_publish(a, "bench.probe", "p", 1, NULL, 0);

        if (r < 0)
            bb_die("publish on A", r);
        if (broker_recv(b, &m, 50) == 0) {
            bool probe = m->topic && !strcmp(m->topic, "bench.probe");

            broker_msg_free(m);
            if (probe)
                return;
        }
        if (bb_now_ns() > end) {
            fprintf(stderr, "bridge-bench: nothing crosses from A to B "
                    "(A exports bench.>, B imports it?)\n");
            exit(1);
        }
    }
}

/* Wait until B has nothing more (the probes left over). */
static void bb_drain(broker_t *b)
{
    broker_msg_t *m;

    while (broker_recv(b, &m, 200) == 0)
        broker_msg_free(m);
}

static void bb_bridge_rate(const bb_opts_t *o, broker_t *a, broker_t *b,
                           char *buf, bb_result_t *r)
{
    bb_rx_t rx = { .b = b, .want = o->count };
    pthread_t t;
    uint64_t t0;

    pthread_create(&t, NULL, bb_rx_thread, &rx);
    t0 = bb_now_ns();
    for (long i = 0; i < o->count; i++) {
        int e;

        memcpy(buf, &i, sizeof(i));
        e = broker_publish(a, "bench.tp", buf, (size_t)o->size, NULL, 0);
        if (e < 0)
            bb_die("publish on A", e);
    }
    bb_flush(a);
    pthread_join(t, NULL);
    r->sent = o->count;
    r->received = rx.got;
    r->seconds = rx.got ? (double)(rx.last_ns - t0) / 1e9 : 0;
}

static void bb_bridge_latency(const bb_opts_t *o, broker_t *a, broker_t *b,
                              char *buf, bb_result_t *r)
{
    double *v = calloc((size_t)o->latency, sizeof(double));
    broker_msg_t *m;
    long n = 0;

    if (!v)
        bb_die("latency", -ENOMEM);
    for (long i = 0; i < o->latency; i++) {
        uint64_t t0 = bb_now_ns();
        int e = broker_publish(a, "bench.lat", buf, (size_t)o->size, NULL, 0);

        if (e < 0)
            bb_die("publish on A", e);
        bb_flush(a);
        for (;;) {
            e = broker_recv(b, &m, BB_QUIET_MS);
            if (e == -ETIMEDOUT)
                break;
            if (e < 0)
                bb_die("receive on B", e);
            bool mine = m->topic && !strcmp(m->topic, "bench.lat");
            broker_msg_free(m);
            if (mine) {
                v[n++] = (double)(bb_now_ns() - t0) / 1e3;
                break;
            }
        }
    }
    if (n)
        bb_percentiles(v, n, r);
    free(v);
}

static void bb_bridge(const bb_opts_t *o, char *buf, bb_result_t *rate,
                      bb_result_t *lat)
{
    broker_t *a, *b;
    uint32_t id;
    int e;

    if ((e = broker_connect(o->sock_a, &a)) < 0)
        bb_die(o->sock_a, e);
    if ((e = broker_connect(o->sock_b, &b)) < 0)
        bb_die(o->sock_b, e);
    if ((e = broker_subscribe(b, "bench.>", NULL, BROKER_SUB_BLOCK, &id)) < 0)
        bb_die("subscribe on B", e);
    bb_probe(a, b);
    bb_drain(b);
    if ((e = broker_set_option(a, BROKER_OPT_BATCH, 1)) < 0)
        bb_die("batching on A", e);
    bb_bridge_rate(o, a, b, buf, rate);
    bb_drain(b);
    bb_bridge_latency(o, a, b, buf, lat);
    broker_close(a);
    broker_close(b);
}

/* ---- libnats alone ---------------------------------------------------------------- */

static void bb_nats(const bb_opts_t *o, char *buf, bb_result_t *rate,
                    bb_result_t *lat)
{
    natsConnection *pub = NULL, *sub = NULL;
    natsSubscription *s = NULL;
    natsMsg *m = NULL;
    natsStatus st;
    double *v = calloc((size_t)o->latency, sizeof(double));
    uint64_t t0, last = 0;
    long got = 0, n = 0;

    if (!v)
        bb_die("latency", -ENOMEM);
    if ((st = natsConnection_ConnectTo(&pub, o->url)) != NATS_OK ||
        (st = natsConnection_ConnectTo(&sub, o->url)) != NATS_OK)
        bb_nats_die(o->url, st);
    if ((st = natsConnection_SubscribeSync(&s, sub, "benchraw.>")) != NATS_OK ||
        (st = natsSubscription_SetPendingLimits(s, -1, -1)) != NATS_OK ||
        (st = natsConnection_Flush(sub)) != NATS_OK)
        bb_nats_die("subscribe", st);
    t0 = bb_now_ns();
    for (long i = 0; i < o->count; i++) {
        memcpy(buf, &i, sizeof(i));
        st = natsConnection_Publish(pub, "benchraw.tp", buf, (int)o->size);
        if (st != NATS_OK)
            bb_nats_die("publish", st);
    }
    natsConnection_Flush(pub);
    while (got < o->count &&
           natsSubscription_NextMsg(&m, s, BB_QUIET_MS) == NATS_OK) {
        natsMsg_Destroy(m);
        got++;
        last = bb_now_ns();
    }
    rate->sent = o->count;
    rate->received = got;
    rate->seconds = got ? (double)(last - t0) / 1e9 : 0;
    for (long i = 0; i < o->latency; i++) {
        uint64_t t = bb_now_ns();

        natsConnection_Publish(pub, "benchraw.lat", buf, (int)o->size);
        natsConnection_Flush(pub);
        if (natsSubscription_NextMsg(&m, s, BB_QUIET_MS) != NATS_OK)
            continue;
        natsMsg_Destroy(m);
        v[n++] = (double)(bb_now_ns() - t) / 1e3;
    }
    if (n)
        bb_percentiles(v, n, lat);
    free(v);
    natsSubscription_Destroy(s);
    natsConnection_Destroy(pub);
    natsConnection_Destroy(sub);
}

/* ---- main ------------------------------------------------------------------------- */

static void bb_print(const char *path, const bb_opts_t *o,
                     const bb_result_t *rate, const bb_result_t *lat)
{
    double mps = rate->seconds > 0 ? rate->received / rate->seconds : 0;

    printf("%-22s %8ld/%-8ld %10.0f msg/s %8.1f MB/s   latency us: p50 "
           "%.0f  p90 %.0f  p99 %.0f  max %.0f\n", path, rate->received,
           rate->sent, mps, mps * (double)o->size / 1e6, lat->p50, lat->p90,
           lat->p99, lat->max);
}

static long bb_num(const char *s, long min)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*end || v < min) {
        fprintf(stderr, "bridge-bench: bad number '%s' (at least %ld)\n", s,
                min);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "nats", required_argument, NULL, 'n' },
        { "count", required_argument, NULL, 'c' },
        { "size", required_argument, NULL, 'S' },
        { "latency", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    bb_opts_t o = { .count = 100000, .size = 128, .latency = 2000 };
    bb_result_t br_rate = { 0 }, br_lat = { 0 }, n_rate = { 0 },
                n_lat = { 0 };
    char *buf;
    int c;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'n': o.url = optarg; break;
        case 'c': o.count = bb_num(optarg, 1); break;
        case 'S': o.size = bb_num(optarg, 8); break;
        case 'l': o.latency = bb_num(optarg, 1); break;
        default: return 2;
        }
    }
    if (!o.url || argc - optind != 2) {
        fprintf(stderr, "usage: bridge-bench --nats URL [--count N] "
                "[--size BYTES] [--latency N] SOCK_A SOCK_B\n");
        return 2;
    }
    o.sock_a = argv[optind];
    o.sock_b = argv[optind + 1];
    buf = calloc(1, (size_t)o.size);
    if (!buf)
        bb_die("buffer", -ENOMEM);
    bb_bridge(&o, buf, &br_rate, &br_lat);
    bb_nats(&o, buf, &n_rate, &n_lat);
    printf("%ld messages of %ld bytes, %ld latency rounds\n", o.count,
           o.size, o.latency);
    bb_print("A -> bridges -> B", &o, &br_rate, &br_lat);
    bb_print("libnats pub -> sub", &o, &n_rate, &n_lat);
    free(buf);
    nats_Close();
    return br_rate.received == 0;
}
