/*
 * test_fragments.c - messages larger than a packet: byte-exact round trips,
 * fairness between a huge and a small message, the reassembly limit and
 * chunked delivery.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"

#define MiB (UINT64_C(1) << 20)

TH_BROKER_SUITE(frag, 300);

static uint8_t *alloc_pattern(size_t len, uint64_t seed)
{
    uint8_t *p = malloc(len ? len : 1);

    TH_CHECK(p != NULL, "cannot allocate %zu bytes", len);
    th_pattern(p, len, seed, 0);
    return p;
}

/* ---- 64 MiB round trip -------------------------------------------------- */

struct echo_arg {
    th_barrier_t ready;         /* server -> test */
    th_barrier_t done;          /* test -> server */
    uint64_t max_msg;
};

/* Reply to one request with its exact payload. */
static int echo_once(void *p)
{
    struct echo_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;

    TH_OK(broker_set_option(b, BROKER_OPT_MAX_MSG, a->max_msg));
    th_register(b, "svc.bigecho");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv_kind(b, BROKER_MSG_DATA);
    TH_CHECK(m->flags & BROKER_MSGF_OPEN, "request has OPEN");
    TH_CHECK(!(m->flags & BROKER_MSGF_CHUNK), "not chunked");
    TH_OK(broker_reply(b, m, m->data, m->len, NULL, 0));
    broker_msg_free(m);
    /* Stay until the caller has its reply. */
    th_barrier_wait(&a->done);
    broker_close(b);
    return 0;
}

Test(frag, roundtrip_64mib)
{
    struct echo_arg arg;
    size_t len = th_scaled(64 * MiB, 1 * MiB) + 12345;  /* odd tail */
    uint8_t *req = alloc_pattern(len, 0xfeed);
    broker_msg_t *rep = NULL;
    broker_t *c;
    pid_t pid;

    arg.max_msg = len + MiB;
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    pid = th_spawn(echo_once, &arg);
    uint64_t srv = th_barrier_wait(&arg.ready);
    c = th_connect(&br);
    cr_assert_eq(broker_set_option(c, BROKER_OPT_MAX_MSG, len + MiB), 0);
    int r = broker_call(c, "svc.bigecho", req, len, &rep, TH_HANG_MS);
    cr_assert_eq(r, 0, "call: %s", broker_strerror(r));
    cr_assert_eq(rep->kind, BROKER_MSG_DATA);
    cr_assert_eq(rep->source, srv);
    cr_assert_eq(rep->len, len, "reply length %zu want %zu", rep->len, len);
    cr_assert_eq(memcmp(rep->data, req, len), 0, "first bad byte at %ld",
                 th_pattern_check(rep->data, len, 0xfeed, 0));
    broker_msg_free(rep);
    th_barrier_signal(&arg.done, 0);
    th_join(pid);
    broker_close(c);
    free(req);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_broker_stop(&br);
}

/* ---- a small message overtakes a huge one --------------------------------- */

struct race_arg {
    th_barrier_t ready;         /* senders -> test: connected (their id) */
    th_barrier_t done;          /* test -> small sender: may leave */
    th_barrier_t big_started;   /* big sender -> small sender */
    th_barrier_t small_sent;    /* small sender -> test */
    size_t big_len;
};

static int big_sender(void *p)
{
    struct race_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = alloc_pattern(a->big_len, 0xb16);

    /* this test is about the socket path: no shared memory */
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_barrier_signal(&a->ready, broker_client_id(b));
    th_barrier_signal(&a->big_started, 1);
    int r = broker_send(b, "svc.c", data, a->big_len, NULL, 0);
    TH_CHECK(r == 0, "big send: %s", broker_strerror(r));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(data);
    broker_close(b);
    return 0;
}

static int small_sender(void *p)
{
    struct race_arg *a = p;
    broker_t *b = th_connect(&br);
    unsigned us = 1000;

    th_barrier_signal(&a->ready, broker_client_id(b));
    th_barrier_wait(&a->big_started);
    /* Wait until the broker holds fragments of the big message for C
     * (C is not reading, so they pile up in its queue). */
    while (th_status_value(b, "queued_bytes") == 0)
        th_nap(&us);
    TH_OK(broker_send(b, "svc.c", "small", 5, NULL, 0));
    /* No ping here: C's queue is over its limit, so the broker stops
     * reading us until C drains; a ping would wait for that. */
    th_barrier_signal(&a->small_sent, 1);
    th_barrier_wait(&a->done);
    broker_close(b);
    return 0;
}

Test(frag, small_overtakes_big, .timeout = 600)
{
    struct race_arg arg = { .big_len = th_scaled(256 * MiB, 16 * MiB) };
    broker_t *c = th_connect(&br);
    broker_msg_t *m;
    uint64_t big_id, small_id;
    pid_t pbig, psmall;

    cr_assert_eq(broker_set_option(c, BROKER_OPT_MAX_MSG,
                                   arg.big_len + MiB), 0);
    th_register(c, "svc.c");
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    th_barrier_init(&arg.big_started);
    th_barrier_init(&arg.small_sent);
    psmall = th_spawn(small_sender, &arg);
    small_id = th_barrier_wait(&arg.ready);
    pbig = th_spawn(big_sender, &arg);
    big_id = th_barrier_wait(&arg.ready);

    th_barrier_wait(&arg.small_sent);
    m = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(m->source, small_id,
                 "the big message (%zu bytes) completed before the small "
                 "one sent while it was in flight", m->len);
    cr_assert_eq(m->len, 5);
    cr_assert_arr_eq(m->data, "small", 5);
    broker_msg_free(m);
    th_barrier_signal(&arg.done, 0);

    m = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(m->source, big_id);
    cr_assert_eq(m->len, arg.big_len);
    cr_assert_lt(th_pattern_check(m->data, m->len, 0xb16, 0), 0,
                 "big message corrupted");
    broker_msg_free(m);
    th_join(pbig);
    th_join(psmall);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_barrier_fini(&arg.big_started);
    th_barrier_fini(&arg.small_sent);
    th_broker_stop(&br);
}

/* ---- the library's reassembly limit -------------------------------------- */

struct limit_arg {
    th_barrier_t ready;
    size_t len;
};

static int oversize_sender(void *p)
{
    struct limit_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = alloc_pattern(a->len, 7);
    broker_msg_t *m;

    /* this test is about the socket path: no shared memory */
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_barrier_wait(&a->ready);
    int r = broker_send(b, "svc.limited", data, a->len, NULL, 0);
    if (r == 0) {
        /* Handed over in full: the refusal arrives as an event. */
        m = th_recv(b);
        TH_CHECK(m->kind == BROKER_MSG_CLOSE || m->kind == BROKER_MSG_ERROR,
                 "sender got %s", th_kind_str(m->kind));
        TH_CHECK(m->code == -EMSGSIZE, "sender's code %d (%s)", m->code,
                 broker_strerror(m->code));
        broker_msg_free(m);
    } else {
        TH_CHECK(r == -EMSGSIZE, "broker_send: %d (%s)", r,
                 broker_strerror(r));
    }
    /* The connection stays usable. */
    TH_OK(broker_send(b, "svc.limited", "after", 5, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(data);
    broker_close(b);
    return 0;
}

Test(frag, reassembly_limit)
{
    struct limit_arg arg = { .len = 8 * MiB + 1 };
    broker_t *c = th_connect(&br), *s = th_connect(&br);
    broker_msg_t *m;
    pid_t pid;

    cr_assert_eq(broker_set_option(c, BROKER_OPT_MAX_MSG, 1 * MiB), 0);
    th_register(c, "svc.limited");

    /* Exactly the limit is still fine. */
    uint8_t *exact = alloc_pattern(MiB, 3);
    cr_assert_eq(broker_send(s, "svc.limited", exact, MiB, NULL, 0), 0);
    m = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(m->len, MiB);
    cr_assert_eq(memcmp(m->data, exact, MiB), 0);
    cr_assert_eq(m->flags & BROKER_MSGF_CHUNK, 0);
    broker_msg_free(m);
    free(exact);

    th_barrier_init(&arg.ready);
    pid = th_spawn(oversize_sender, &arg);
    th_barrier_signal(&arg.ready, 0);
    m = th_recv_kind(c, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -EMSGSIZE, "receiver's code %d", m->code);
    broker_msg_free(m);
    /* No piece of the refused message is delivered; the next one is. */
    m = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 5, "got %zu bytes", m->len);
    cr_assert_arr_eq(m->data, "after", 5);
    broker_msg_free(m);
    th_join(pid);
    broker_close(c);
    broker_close(s);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- chunked delivery ------------------------------------------------------ */

static int chunk_sender(void *p)
{
    struct limit_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = alloc_pattern(a->len, 0xc4);

    /* this test is about the socket path: no shared memory */
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_barrier_wait(&a->ready);
    TH_OK(broker_send(b, "svc.chunked", data, a->len, NULL, 0));
    TH_OK(broker_send(b, "svc.chunked", "tail", 4, NULL, 0));
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(data);
    broker_close(b);
    return 0;
}

Test(frag, chunked_receive)
{
    struct limit_arg arg = { .len = th_scaled(24 * MiB, 3 * MiB) + 777 };
    const uint64_t max = 1 * MiB;
    broker_t *c = th_connect(&br);
    broker_msg_t *m;
    uint64_t got = 0;
    unsigned chunks = 0;
    uint32_t stream = 0;
    pid_t pid;

    cr_assert_eq(broker_set_option(c, BROKER_OPT_MAX_MSG, max), 0);
    cr_assert_eq(broker_set_option(c, BROKER_OPT_CHUNKED, 1), 0);
    th_register(c, "svc.chunked");
    th_barrier_init(&arg.ready);
    pid = th_spawn(chunk_sender, &arg);
    th_barrier_signal(&arg.ready, 0);

    /* The small "tail" message may overtake the big one (fairness); it
     * is told apart by having no CHUNK flag and its own stream. */
    bool done = false, tail = false;
    while (!done || !tail) {
        m = th_recv_kind(c, BROKER_MSG_DATA);
        if (!(m->flags & BROKER_MSGF_CHUNK)) {
            cr_assert_not(tail, "second whole message");
            cr_assert_eq(m->len, 4, "whole message of %zu bytes: the big "
                         "one was not chunked", m->len);
            cr_assert_arr_eq(m->data, "tail", 4);
            cr_assert(chunks == 0 || m->stream != stream);
            tail = true;
            broker_msg_free(m);
            continue;
        }
        cr_assert_not(done, "chunk after the LAST one");
        cr_assert_leq(m->len, max, "chunk of %zu bytes over MAX_MSG",
                      m->len);
        if (chunks == 0) {
            stream = m->stream;
            cr_assert(m->flags & BROKER_MSGF_OPEN, "first chunk has OPEN");
        } else {
            cr_assert_eq(m->stream, stream, "chunks on one stream");
        }
        cr_assert_leq(got + m->len, arg.len, "more bytes than sent");
        long bad = th_pattern_check(m->data, m->len, 0xc4, got);
        cr_assert_lt(bad, 0, "chunk %u: bad byte at message offset %llu",
                     chunks, (unsigned long long)(got + (uint64_t)bad));
        got += m->len;
        chunks++;
        done = m->flags & BROKER_MSGF_LAST;
        broker_msg_free(m);
    }
    cr_assert_eq(got, arg.len, "chunks add up to %llu of %zu bytes",
                 (unsigned long long)got, arg.len);
    cr_assert_geq(chunks, (unsigned)(arg.len / max), "chunk count %u",
                  chunks);
    th_join(pid);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- many mid-size messages interleaved from two senders ------------------ */

/* Messages of mixed sizes may legitimately overtake each other (fairness),
 * so this checks that each arrives exactly once and intact. */
struct mid_arg {
    th_barrier_t ready;
    uint32_t seed;
    int count;
};

#define MID_MAX (300 * 1024)

static size_t mid_len(uint32_t seed, int i)
{
    return 8 + (size_t)((uint32_t)i * 40009u + seed * 7u) % MID_MAX;
}

static int mid_sender(void *p)
{
    struct mid_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *buf = malloc(MID_MAX + 8);

    TH_CHECK(buf != NULL, "oom");
    th_barrier_signal(&a->ready, broker_client_id(b));
    for (int i = 0; i < a->count; i++) {
        size_t len = mid_len(a->seed, i);
        memcpy(buf, &a->seed, 4);
        memcpy(buf + 4, &i, 4);
        th_pattern(buf + 8, len - 8, (uint64_t)a->seed << 32 | (uint32_t)i,
                   0);
        TH_OK(broker_send(b, "svc.mid", buf, len, NULL, 0));
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    free(buf);
    broker_close(b);
    return 0;
}

Test(frag, interleaved_multi_fragment_messages)
{
    struct mid_arg args[2] = { { .seed = 1 }, { .seed = 2 } };
    broker_t *c = th_connect(&br);
    uint64_t ids[2];
    pid_t pids[2];
    int count = (int)th_scaled(200, 20);
    bool *seen = calloc(2 * (size_t)count, sizeof(bool));

    cr_assert_not_null(seen);
    th_register(c, "svc.mid");
    for (int s = 0; s < 2; s++) {
        args[s].count = count;
        th_barrier_init(&args[s].ready);
        pids[s] = th_spawn(mid_sender, &args[s]);
        ids[s] = th_barrier_wait(&args[s].ready);
    }
    for (int n = 0; n < 2 * count; n++) {
        broker_msg_t *m = th_recv_kind(c, BROKER_MSG_DATA);
        uint32_t seed;
        int i;
        cr_assert_geq(m->len, 8);
        memcpy(&seed, m->data, 4);
        memcpy(&i, (uint8_t *)m->data + 4, 4);
        cr_assert(seed == 1 || seed == 2, "bad header");
        cr_assert(i >= 0 && i < count, "bad index %d", i);
        cr_assert_eq(m->source, ids[seed - 1], "source stamp");
        cr_assert_not(seen[(seed - 1) * (size_t)count + (size_t)i],
                      "sender %u message %d delivered twice", seed, i);
        seen[(seed - 1) * (size_t)count + (size_t)i] = true;
        cr_assert_eq(m->len, mid_len(seed, i), "sender %u message %d length",
                     seed, i);
        cr_assert_lt(th_pattern_check((uint8_t *)m->data + 8, m->len - 8,
                                      (uint64_t)seed << 32 | (uint32_t)i, 0),
                     0, "sender %u message %d corrupted", seed, i);
        broker_msg_free(m);
    }
    for (int s = 0; s < 2; s++) {
        th_join(pids[s]);
        th_barrier_fini(&args[s].ready);
    }
    free(seen);
    broker_close(c);
    th_broker_stop(&br);
}

/* ---- sizes around the fragment boundaries ---------------------------------- */

/* Echo every request back until a one-way "quit". */
static int echo_loop(void *p)
{
    struct echo_arg *a = p;
    broker_t *b = th_connect(&br);

    TH_OK(broker_set_option(b, BROKER_OPT_MAX_MSG, a->max_msg));
    th_register(b, "svc.loop");
    th_barrier_signal(&a->ready, broker_client_id(b));
    for (;;) {
        broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
        if (m->flags & BROKER_MSGF_CLOSE) {
            broker_msg_free(m);
            break;
        }
        TH_OK(broker_reply(b, m, m->data, m->len, m->fds, m->nfds));
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

static void roundtrip_sizes(broker_t *c, const size_t *sizes, size_t n,
                            bool with_fd)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = sizes[i];
        uint8_t *req = alloc_pattern(len, len);
        broker_msg_t *rep = NULL;
        int p[2] = { -1, -1 };
        int r;

        if (with_fd) {
            cr_assert_eq(pipe(p), 0);
            r = broker_call_fds(c, "svc.loop", req, len, &p[1], 1, &rep,
                                TH_HANG_MS);
            close(p[1]);
        } else {
            r = broker_call(c, "svc.loop", req, len, &rep, TH_HANG_MS);
        }
        cr_assert_eq(r, 0, "%zu bytes: %s", len, broker_strerror(r));
        cr_assert_eq(rep->len, len, "sent %zu, got %zu back", len, rep->len);
        cr_assert_eq(memcmp(rep->data, req, len), 0, "%zu bytes differ", len);
        if (with_fd) {
            cr_assert_eq(rep->nfds, 1, "%zu bytes: fd lost", len);
            cr_assert_eq(write(rep->fds[0], "!", 1), 1);
            char ch;
            cr_assert_eq(read(p[0], &ch, 1), 1, "%zu bytes: wrong fd", len);
            close(p[0]);
        }
        broker_msg_free(rep);
        free(req);
    }
}

static void boundaries(bool with_fd)
{
    struct echo_arg arg = { .max_msg = 16 * MiB };
    broker_t *c = th_connect(&br);
    size_t pay = broker_limits(c)->max_packet - BK_HDR_SIZE;
    size_t nl = strlen("svc.loop");
    /* A request to a name carries the name in its first fragment. */
    size_t sizes[] = {
        0, 1, pay - nl - 1, pay - nl, pay - nl + 1, pay - 1, pay, pay + 1,
        2 * pay - nl - 1, 2 * pay - nl, 2 * pay - nl + 1, 2 * pay - 1,
        2 * pay, 2 * pay + 1, 3 * pay + 17, 1 * MiB, 1 * MiB + 1,
    };
    pid_t pid;

    cr_assert_eq(broker_set_option(c, BROKER_OPT_MAX_MSG, 16 * MiB), 0);
    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    pid = th_spawn(echo_loop, &arg);
    th_barrier_wait(&arg.ready);
    roundtrip_sizes(c, sizes, sizeof(sizes) / sizeof(sizes[0]), with_fd);
    cr_assert_eq(broker_send(c, "svc.loop", "quit", 4, NULL, 0), 0);
    th_join(pid);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
}

Test(frag, fragment_boundary_sizes)
{
    boundaries(false);
    boundaries(true);
    th_broker_stop(&br);
}

Test(frag, small_max_packet)
{
    th_broker_restart(&br, "--max-packet", "4096", NULL);
    broker_t *c = th_connect(&br);
    cr_assert_eq(broker_limits(c)->max_packet, 4096,
                 "WELCOME announces max_packet");
    broker_close(c);
    boundaries(false);
    boundaries(true);
    th_broker_stop(&br);
}

/* ---- the broker's own message limit ---------------------------------------- */

Test(frag, broker_max_msg)
{
    th_broker_restart(&br, "--max-msg", "1048576", NULL);
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    uint8_t *data = alloc_pattern(2 * MiB, 9);
    broker_msg_t *m;

    cr_assert_eq(broker_limits(a)->max_msg, MiB, "WELCOME announces max_msg");
    th_register(b, "svc.b");
    /* The library refuses what the broker would refuse. */
    cr_assert_eq(broker_send(a, "svc.b", data, MiB + 1, NULL, 0),
                 -EMSGSIZE);
    cr_assert_eq(broker_send(a, "svc.b", data, MiB, NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, MiB);
    cr_assert_eq(memcmp(m->data, data, MiB), 0);
    broker_msg_free(m);

    /* A raw client that ignores the limit: the broker stops it. */
    bk_welcome_t w;
    int fd = th_raw_connect_hello(br.sock, &w);
    size_t chunk = w.max_packet - BK_HDR_SIZE, sent = 0;
    bk_hdr_t h = { .version = 1, .type = BK_T_DATA,
                   .flags = BK_F_OPEN | BK_F_MORE, .stream = 1,
                   .dest = broker_client_id(b) };
    while (sent < MiB + MiB / 2) {
        h.length = (uint32_t)chunk;
        cr_assert_eq(th_raw_send(fd, &h, data + sent, NULL, 0), 0);
        sent += chunk;
        h.flags = BK_F_CONT | BK_F_MORE;
        h.dest = 0;
    }
    h.flags = BK_F_CONT | BK_F_CLOSE;
    h.length = 1;
    cr_assert_eq(th_raw_send(fd, &h, data, NULL, 0), 0);

    /* The sender hears EMSGSIZE on its stream... */
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    bool seen = false;
    while (!seen) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        size_t off = 0;
        const uint8_t *pl;
        cr_assert_gt(n, 0, "raw sender: %zd", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1)
            if (h.type == BK_T_ERROR || h.type == BK_T_CLOSE) {
                cr_assert_eq(h.stream, 1);
                cr_assert_eq(h.aux, EMSGSIZE, "code %u", h.aux);
                seen = true;
            }
    }
    /* ...the receiver sees the stream end with EMSGSIZE, no data. */
    m = th_recv(b);
    cr_assert(m->kind == BROKER_MSG_CLOSE || m->kind == BROKER_MSG_ERROR,
              "receiver got %s of %zu bytes", th_kind_str(m->kind), m->len);
    cr_assert_eq(m->code, -EMSGSIZE, "code %d", m->code);
    broker_msg_free(m);
    /* Both connections still work. */
    h = (bk_hdr_t){ .version = 1, .type = BK_T_DATA,
                    .flags = BK_F_OPEN | BK_F_CLOSE, .stream = 2,
                    .length = 2, .dest = broker_client_id(b) };
    cr_assert_eq(th_raw_send(fd, &h, "ok", NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 2);
    cr_assert_arr_eq(m->data, "ok", 2);
    broker_msg_free(m);
    close(fd);
    free(data);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}
