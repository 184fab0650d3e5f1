/*
 * test_messaging.c - unicast by name and id, request/reply, unknown
 * destinations, bidirectional streams, ordering under volume.
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

TH_BROKER_SUITE(msg, 180);

/* ---- unicast ------------------------------------------------------------- */

Test(msg, unicast_by_name)
{
    broker_t *rx = th_connect(&br), *tx = th_connect(&br);
    uint8_t all[256];
    broker_msg_t *m;

    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    th_register(rx, "svc.rx");
    cr_assert_eq(broker_send(tx, "svc.rx", all, sizeof(all), NULL, 0), 0);
    cr_assert_eq(broker_send(tx, "svc.rx", "", 0, NULL, 0), 0);

    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert_eq(m->len, sizeof(all));
    cr_assert_arr_eq(m->data, all, sizeof(all));
    cr_assert_eq(m->source, broker_client_id(tx), "source %llu want %llu",
                 (unsigned long long)m->source,
                 (unsigned long long)broker_client_id(tx));
    cr_assert_not_null(m->name);
    cr_assert_str_eq(m->name, "svc.rx");
    cr_assert(m->flags & BROKER_MSGF_OPEN, "one-way: OPEN");
    cr_assert(m->flags & BROKER_MSGF_CLOSE, "one-way: CLOSE");
    cr_assert_eq(m->nfds, 0);
    cr_assert_eq(m->code, 0);
    broker_msg_free(m);

    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 0, "empty message");
    cr_assert_eq(m->source, broker_client_id(tx));
    broker_msg_free(m);

    /* Nothing else arrives: no stray CLOSE events for one-way messages. */
    cr_assert_eq(broker_recv(rx, &m, 0), -ETIMEDOUT);
    broker_close(rx);
    broker_close(tx);
    th_broker_stop(&br);
}

Test(msg, unicast_by_id)
{
    broker_t *rx = th_connect(&br), *tx = th_connect(&br);
    broker_msg_t *m;

    cr_assert_eq(broker_send_id(tx, broker_client_id(rx), "by-id", 5, NULL,
                                0), 0);
    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 5);
    cr_assert_arr_eq(m->data, "by-id", 5);
    cr_assert_eq(m->source, broker_client_id(tx));
    cr_assert_null(m->name, "sent to our id, not a name");
    broker_msg_free(m);

    /* To ourselves. */
    cr_assert_eq(broker_send_id(tx, broker_client_id(tx), "self", 4, NULL,
                                0), 0);
    m = th_recv_kind(tx, BROKER_MSG_DATA);
    cr_assert_arr_eq(m->data, "self", 4);
    cr_assert_eq(m->source, broker_client_id(tx));
    broker_msg_free(m);
    broker_close(rx);
    broker_close(tx);
    th_broker_stop(&br);
}

Test(msg, unknown_destination)
{
    broker_t *tx = th_connect(&br), *gone = th_connect(&br);
    uint64_t gone_id = broker_client_id(gone);
    broker_msg_t *m = NULL;

    cr_assert_eq(broker_send(tx, "svc.nobody", "x", 1, NULL, 0), 0);
    m = th_recv_kind(tx, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -ENOENT, "code %d", m->code);
    broker_msg_free(m);

    cr_assert_eq(broker_call(tx, "svc.nobody", "x", 1, &m, TH_HANG_MS),
                 -ENOENT);
    cr_assert_null(m);

    /* An id that was never given out, and one whose client left. */
    cr_assert_eq(broker_send_id(tx, gone_id + 1000, "x", 1, NULL, 0), 0);
    m = th_recv_kind(tx, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -ENOENT);
    broker_msg_free(m);

    /* `gone` holds a stream to us, so we learn when the broker has seen
     * it leave (ERROR ECONNRESET on that stream). */
    uint32_t gsid;
    cr_assert_eq(broker_stream_open(gone, NULL, broker_client_id(tx), &gsid),
                 0);
    cr_assert_eq(broker_stream_write(gone, gsid, "g", 1, NULL, 0), 0);
    m = th_recv_kind(tx, BROKER_MSG_DATA);
    uint32_t tsid = m->stream;
    broker_msg_free(m);
    broker_close(gone);
    m = th_recv_kind(tx, BROKER_MSG_ERROR);
    cr_assert_eq(m->stream, tsid);
    cr_assert_eq(m->code, -ECONNRESET, "code %d", m->code);
    broker_msg_free(m);
    cr_assert_eq(broker_send_id(tx, gone_id, "x", 1, NULL, 0), 0);
    m = th_recv_kind(tx, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -ENOENT, "code %d", m->code);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(tx, TH_HANG_MS), 0, "connection still fine");
    broker_close(tx);
    th_broker_stop(&br);
}

/* ---- request / reply ---------------------------------------------------- */

struct srv_arg {
    const char *name;
    th_barrier_t ready;         /* server -> test */
    th_barrier_t done;          /* test -> server */
};

/* Echo server: replies to each request with "re:" + payload, stops on a
 * one-way "quit". */
static int echo_server(void *p)
{
    struct srv_arg *a = p;
    broker_t *b = th_connect(&br);

    th_register(b, a->name);
    th_barrier_signal(&a->ready, broker_client_id(b));
    for (;;) {
        broker_msg_t *m = th_recv(b);
        TH_CHECK(m->kind == BROKER_MSG_DATA, "got %s code %d",
                 th_kind_str(m->kind), m->code);
        if (m->flags & BROKER_MSGF_CLOSE) {
            bool quit = m->len == 4 && !memcmp(m->data, "quit", 4);
            broker_msg_free(m);
            if (quit)
                break;
            continue;
        }
        TH_CHECK(m->flags & BROKER_MSGF_OPEN, "request without OPEN");
        uint8_t *out = malloc(m->len + 3);
        TH_CHECK(out != NULL, "oom");
        memcpy(out, "re:", 3);
        memcpy(out + 3, m->data, m->len);
        TH_OK(broker_reply(b, m, out, m->len + 3, NULL, 0));
        free(out);
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

Test(msg, request_reply)
{
    struct srv_arg arg = { .name = "svc.echo" };
    broker_t *c;
    uint64_t srv_id;
    pid_t pid;

    th_barrier_init(&arg.ready);
    pid = th_spawn(echo_server, &arg);
    srv_id = th_barrier_wait(&arg.ready);
    c = th_connect(&br);
    for (int i = 0; i < 200; i++) {
        uint8_t req[300];
        size_t len = (size_t)(i * 37 % 300);
        broker_msg_t *rep = NULL;
        th_pattern(req, len, (uint64_t)i, 0);
        int r = broker_call(c, "svc.echo", req, len, &rep, TH_HANG_MS);
        cr_assert_eq(r, 0, "call %d: %s", i, broker_strerror(r));
        cr_assert_eq(rep->kind, BROKER_MSG_DATA);
        cr_assert_eq(rep->len, len + 3, "reply %d length %zu", i, rep->len);
        cr_assert_arr_eq(rep->data, "re:", 3);
        cr_assert_arr_eq((uint8_t *)rep->data + 3, req, len, "reply %d", i);
        cr_assert_eq(rep->source, srv_id);
        cr_assert(rep->flags & BROKER_MSGF_CLOSE, "a reply ends its stream");
        broker_msg_free(rep);
    }
    cr_assert_eq(broker_send(c, "svc.echo", "quit", 4, NULL, 0), 0);
    th_join(pid);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* Requests arriving while a call waits are kept for broker_recv. */
Test(msg, call_queues_other_messages)
{
    struct srv_arg arg = { .name = "svc.echo2" };
    broker_t *c, *other;
    broker_msg_t *rep = NULL, *m;
    pid_t pid;

    th_barrier_init(&arg.ready);
    pid = th_spawn(echo_server, &arg);
    th_barrier_wait(&arg.ready);
    c = th_connect(&br);
    other = th_connect(&br);
    th_register(c, "svc.caller");
    cr_assert_eq(broker_send(other, "svc.caller", "early", 5, NULL, 0), 0);
    cr_assert_eq(broker_ping(other, TH_HANG_MS), 0);
    cr_assert_eq(broker_call(c, "svc.echo2", "q", 1, &rep, TH_HANG_MS), 0);
    cr_assert_arr_eq(rep->data, "re:q", 4);
    broker_msg_free(rep);
    m = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 5);
    cr_assert_arr_eq(m->data, "early", 5);
    cr_assert_eq(m->source, broker_client_id(other));
    broker_msg_free(m);
    cr_assert_eq(broker_send(c, "svc.echo2", "quit", 4, NULL, 0), 0);
    th_join(pid);
    broker_close(c);
    broker_close(other);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* A server that answers the first request only after the second came. */
static int late_server(void *p)
{
    struct srv_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *r1, *r2;

    th_register(b, a->name);
    th_barrier_signal(&a->ready, broker_client_id(b));
    r1 = th_recv_kind(b, BROKER_MSG_DATA);
    /* The caller gave up on r1 and closes its stream; that may arrive as
     * a CLOSE event before the second request. */
    for (;;) {
        r2 = th_recv(b);
        if (r2->kind == BROKER_MSG_DATA)
            break;
        TH_CHECK(r2->kind == BROKER_MSG_CLOSE && r2->stream == r1->stream,
                 "unexpected %s", th_kind_str(r2->kind));
        broker_msg_free(r2);
    }
    (void)broker_reply(b, r1, "reply-1", 7, NULL, 0);  /* may be refused */
    TH_OK(broker_reply(b, r2, "reply-2", 7, NULL, 0));
    broker_msg_free(r1);
    broker_msg_free(r2);
    TH_OK(broker_ping(b, TH_HANG_MS));
    th_barrier_wait(&a->done);
    broker_close(b);
    return 0;
}

Test(msg, call_timeout_and_late_reply)
{
    struct srv_arg arg = { .name = "svc.late" };
    broker_t *c;
    broker_msg_t *rep = NULL;
    pid_t pid;

    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    pid = th_spawn(late_server, &arg);
    th_barrier_wait(&arg.ready);
    c = th_connect(&br);
    cr_assert_eq(broker_call(c, "svc.late", "one", 3, &rep, 100),
                 -ETIMEDOUT);
    cr_assert_null(rep);
    cr_assert_eq(broker_call(c, "svc.late", "two", 3, &rep, TH_HANG_MS), 0);
    cr_assert_eq(rep->len, 7);
    cr_assert_arr_eq(rep->data, "reply-2", 7,
                     "the late reply to the first call was taken for the "
                     "second");
    broker_msg_free(rep);
    /* The stale reply must not surface later either. */
    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0);
    while (broker_recv(c, &rep, 0) == 0) {
        cr_assert_neq(rep->kind, BROKER_MSG_DATA,
                      "stale reply delivered to broker_recv");
        broker_msg_free(rep);
    }
    th_barrier_signal(&arg.done, 0);
    th_join(pid);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_broker_stop(&br);
}

/* ---- streams ----------------------------------------------------------- */

struct stream_arg {
    th_barrier_t ready;
    int count;
};

static void put_seq(uint8_t *buf, char tag, uint32_t i)
{
    buf[0] = (uint8_t)tag;
    bk_put32(buf + 1, i);
    th_pattern(buf + 5, i % 64, i, 0);
}

static void check_seq(const broker_msg_t *m, char tag, uint32_t i)
{
    TH_CHECK(m->kind == BROKER_MSG_DATA, "message %u: %s code %d", i,
             th_kind_str(m->kind), m->code);
    TH_CHECK(m->len == 5 + i % 64, "message %u: length %zu", i, m->len);
    const uint8_t *p = m->data;
    TH_CHECK(p[0] == (uint8_t)tag && bk_get32(p + 1) == i,
             "message %u: got %c%u (lost or reordered)", i, p[0],
             bk_get32(p + 1));
    TH_CHECK(th_pattern_check(p + 5, i % 64, i, 0) < 0, "message %u bytes",
             i);
}

/* The accepting side: write its own messages, then read the opener's, then
 * wait for the opener's close. */
static int stream_peer(void *p)
{
    struct stream_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;
    uint32_t sid;
    uint64_t opener;
    uint8_t buf[80];

    th_register(b, "svc.stream");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv(b);
    check_seq(m, 'a', 0);
    TH_CHECK(m->flags & BROKER_MSGF_OPEN, "first message has OPEN");
    TH_CHECK(!(m->flags & BROKER_MSGF_CLOSE), "stream stays open");
    TH_CHECK(m->stream & BK_SID_PEER_BIT, "accepting side id 0x%x",
             m->stream);
    sid = m->stream;
    opener = m->source;
    broker_msg_free(m);
    for (uint32_t i = 0; i < (uint32_t)a->count; i++) {
        put_seq(buf, 'b', i);
        TH_OK(broker_stream_write(b, sid, buf, 5 + i % 64, NULL, 0));
    }
    for (uint32_t i = 1; i < (uint32_t)a->count; i++) {
        m = th_recv(b);
        TH_CHECK(m->stream == sid, "stream 0x%x want 0x%x", m->stream, sid);
        TH_CHECK(m->source == opener, "source");
        TH_CHECK(!(m->flags & BROKER_MSGF_OPEN), "OPEN only once");
        check_seq(m, 'a', i);
        broker_msg_free(m);
    }
    m = th_recv(b);
    TH_CHECK(m->kind == BROKER_MSG_CLOSE, "expected CLOSE, got %s",
             th_kind_str(m->kind));
    TH_CHECK(m->stream == sid, "CLOSE on stream 0x%x", m->stream);
    TH_CHECK(m->code == 0, "normal close has code 0, got %d", m->code);
    broker_msg_free(m);
    broker_close(b);
    return 0;
}

Test(msg, bidirectional_stream)
{
    struct stream_arg arg = { .count = (int)th_scaled(5000, 10) };
    broker_t *a;
    broker_msg_t *m;
    uint64_t peer;
    uint32_t sid;
    uint8_t buf[80];
    pid_t pid;

    th_barrier_init(&arg.ready);
    pid = th_spawn(stream_peer, &arg);
    peer = th_barrier_wait(&arg.ready);
    a = th_connect(&br);
    cr_assert_eq(broker_stream_open(a, "svc.stream", 0, &sid), 0);
    cr_assert_eq(sid & BK_SID_PEER_BIT, 0, "opener's id has bit 31 clear");
    for (uint32_t i = 0; i < (uint32_t)arg.count; i++) {
        put_seq(buf, 'a', i);
        cr_assert_eq(broker_stream_write(a, sid, buf, 5 + i % 64, NULL, 0),
                     0, "write %u", i);
    }
    for (uint32_t i = 0; i < (uint32_t)arg.count; i++) {
        m = th_recv(a);
        cr_assert_eq(m->stream, sid, "reply on our stream id");
        cr_assert_eq(m->source, peer);
        check_seq(m, 'b', i);
        broker_msg_free(m);
    }
    cr_assert_eq(broker_stream_close(a, sid), 0);
    th_join(pid);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

Test(msg, stream_to_id_and_many_streams)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    enum { K = 50 };
    uint32_t sids[K], peer_sid[K];
    broker_msg_t *m;

    for (int i = 0; i < K; i++) {
        uint8_t v = (uint8_t)i;
        cr_assert_eq(broker_stream_open(a, NULL, broker_client_id(b),
                                        &sids[i]), 0);
        for (int k = 0; k < i; k++)
            cr_assert_neq(sids[k], sids[i], "stream id reused");
        cr_assert_eq(broker_stream_write(a, sids[i], &v, 1, NULL, 0), 0);
    }
    for (int i = 0; i < K; i++) {
        m = th_recv_kind(b, BROKER_MSG_DATA);
        cr_assert_eq(m->len, 1);
        cr_assert_eq(((uint8_t *)m->data)[0], i, "stream order");
        cr_assert_null(m->name);
        peer_sid[i] = m->stream;
        for (int k = 0; k < i; k++)
            cr_assert_neq(peer_sid[k], peer_sid[i]);
        broker_msg_free(m);
    }
    /* Answer on each in reverse order; each answer comes back on the
     * matching stream. */
    for (int i = K - 1; i >= 0; i--) {
        uint8_t v = (uint8_t)(100 + i);
        cr_assert_eq(broker_stream_write(b, peer_sid[i], &v, 1, NULL, 0), 0);
    }
    for (int i = K - 1; i >= 0; i--) {
        m = th_recv_kind(a, BROKER_MSG_DATA);
        cr_assert_eq(m->stream, sids[i], "answer %d on stream 0x%x", i,
                     m->stream);
        cr_assert_eq(((uint8_t *)m->data)[0], 100 + i);
        broker_msg_free(m);
    }
    /* Closing from the accepting side reaches the opener. */
    cr_assert_eq(broker_stream_close(b, peer_sid[7]), 0);
    m = th_recv_kind(a, BROKER_MSG_CLOSE);
    cr_assert_eq(m->stream, sids[7]);
    broker_msg_free(m);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- volume and order ----------------------------------------------------- */

struct flood_arg {
    th_barrier_t ready;
    uint32_t index;
    size_t count;
    const char *to;
};

static size_t flood_len(uint32_t sender, uint64_t seq)
{
    return 12 + (size_t)((seq * 7 + sender) % 21);
}

static void flood_fill(uint8_t *buf, uint32_t sender, uint64_t seq)
{
    bk_put32(buf, sender);
    bk_put64(buf + 4, seq);
    th_pattern(buf + 12, flood_len(sender, seq) - 12, seq ^ sender, 0);
}

static int flood_sender(void *p)
{
    struct flood_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t buf[64];

    th_barrier_signal(&a->ready, broker_client_id(b));
    for (uint64_t i = 0; i < a->count; i++) {
        flood_fill(buf, a->index, i);
        int r = broker_send(b, a->to, buf, flood_len(a->index, i), NULL, 0);
        TH_CHECK(r == 0, "send %llu: %s", (unsigned long long)i,
                 broker_strerror(r));
    }
    /* Every message is routed once a ping round trip completes; an ERROR
     * event before it would mean a lost message. */
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_msg_t *m;
    while (broker_recv(b, &m, 0) == 0) {
        TH_CHECK(m->kind != BROKER_MSG_ERROR, "sender got ERROR %d",
                 m->code);
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

static void flood(int nsenders, size_t per_sender)
{
    struct flood_arg args[8];
    uint64_t ids[8], next[8] = { 0 };
    broker_t *rx = th_connect(&br);
    pid_t pids[8];
    size_t total = (size_t)nsenders * per_sender;

    th_register(rx, "svc.sink");
    for (int s = 0; s < nsenders; s++) {
        args[s] = (struct flood_arg){ .index = (uint32_t)s,
                                      .count = per_sender,
                                      .to = "svc.sink" };
        th_barrier_init(&args[s].ready);
        pids[s] = th_spawn(flood_sender, &args[s]);
        ids[s] = th_barrier_wait(&args[s].ready);
    }
    for (size_t n = 0; n < total; n++) {
        broker_msg_t *m = th_recv(rx);
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "message %zu: %s %d", n,
                     th_kind_str(m->kind), m->code);
        cr_assert_geq(m->len, 12);
        const uint8_t *p = m->data;
        uint32_t s = bk_get32(p);
        uint64_t seq = bk_get64(p + 4);
        cr_assert_lt(s, (uint32_t)nsenders, "bad sender index %u", s);
        cr_assert_eq(m->source, ids[s], "source stamp of sender %u", s);
        cr_assert_eq(seq, next[s], "sender %u: got seq %llu want %llu "
                     "(lost or reordered)", s, (unsigned long long)seq,
                     (unsigned long long)next[s]);
        cr_assert_eq(m->len, flood_len(s, seq));
        cr_assert_lt(th_pattern_check(p + 12, m->len - 12, seq ^ s, 0), 0,
                     "bytes of %u/%llu", s, (unsigned long long)seq);
        next[s]++;
        broker_msg_free(m);
    }
    for (int s = 0; s < nsenders; s++) {
        th_join(pids[s]);
        cr_assert_eq(next[s], per_sender);
        th_barrier_fini(&args[s].ready);
    }
    broker_msg_t *m;
    cr_assert_eq(broker_ping(rx, TH_HANG_MS), 0);
    cr_assert_eq(broker_recv(rx, &m, 0), -ETIMEDOUT, "extra messages");
    broker_close(rx);
}

Test(msg, one_million_in_order, .timeout = 900)
{
    flood(1, th_scaled(1000000, 1000));
    th_broker_stop(&br);
}

Test(msg, several_senders_keep_order, .timeout = 600)
{
    flood(4, th_scaled(50000, 500));
    th_broker_stop(&br);
}

/* ---- limits ------------------------------------------------------------- */

Test(msg, too_many_streams)
{
    broker_t *a, *b;
    broker_msg_t *m;
    uint32_t s[3];

    th_broker_restart(&br, "--max-streams", "2", NULL);
    a = th_connect(&br);
    b = th_connect(&br);
    cr_assert_eq(broker_limits(a)->max_streams, 2);
    for (int i = 0; i < 3; i++) {
        uint8_t v = (uint8_t)i;
        cr_assert_eq(broker_stream_open(a, NULL, broker_client_id(b), &s[i]),
                     0);
        int r = broker_stream_write(a, s[i], &v, 1, NULL, 0);
        if (i < 2)
            cr_assert_eq(r, 0, "stream %d: %s", i, broker_strerror(r));
        else if (r < 0)
            cr_assert_eq(r, -ENOSR, "third stream refused locally: %d", r);
        else {
            m = th_recv_kind(a, BROKER_MSG_ERROR);
            cr_assert_eq(m->stream, s[2]);
            cr_assert_eq(m->code, -ENOSR, "code %d", m->code);
            broker_msg_free(m);
        }
    }
    for (int i = 0; i < 2; i++) {
        m = th_recv_kind(b, BROKER_MSG_DATA);
        cr_assert_eq(((uint8_t *)m->data)[0], i);
        broker_msg_free(m);
    }
    /* Closing one frees a slot; one-way messages need none. */
    cr_assert_eq(broker_send_id(a, broker_client_id(b), "1w", 2, NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_arr_eq(m->data, "1w", 2);
    broker_msg_free(m);
    cr_assert_eq(broker_stream_close(a, s[0]), 0);
    m = th_recv_kind(b, BROKER_MSG_CLOSE);
    broker_msg_free(m);
    uint32_t s4;
    cr_assert_eq(broker_stream_open(a, NULL, broker_client_id(b), &s4), 0);
    cr_assert_eq(broker_stream_write(a, s4, "again", 5, NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_arr_eq(m->data, "again", 5);
    broker_msg_free(m);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}
