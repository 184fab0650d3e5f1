/*
 * test_hol.c - no head-of-line blocking: a receiver whose queue is full
 * holds back only what is addressed to it.  The sender's messages to
 * others, its pings and its control requests go on; the library waits
 * (blocking mode) or says -EAGAIN (attached mode) only for the full
 * receiver; a client that ignores FLOW BUSY is paused past the hard
 * limit; nothing is lost or reordered.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include <uv.h>
#include "frame.h"
#include "sockio.h"
#include "error.h"
#include "harness.h"
#include "th_uv.h"

#define KiB 1024u
#define LIMIT (64u * KiB)           /* the broker's --queue-limit */
#define HARD (LIMIT + LIMIT / 2)    /* bk_port_hard_limit */
#define MSG (16u * KiB)

static th_broker_t br;

static void setup(void)
{
    th_broker_start(&br, "--queue-limit", "65536", NULL);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(hol, .init = setup, .fini = teardown, .timeout = 300);

/* The memory of what brokerd has queued towards client id (LIST_CLIENTS
 * queued_mem: what queue-limit bounds). */
static uint64_t queued_mem(broker_t *b, uint64_t id)
{
    char *text = NULL, key[40], *line, *q;
    uint64_t v = UINT64_MAX;
    size_t len;

    TH_OK(broker_list(b, BROKER_CTRL_LIST_CLIENTS, &text, &len));
    snprintf(key, sizeof(key), "id=%" PRIu64 " ", id);
    for (line = text; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, key, strlen(key)) == 0 &&
            (q = strstr(line, "queued_mem=")) &&
            (!strchr(line, '\n') || q < strchr(line, '\n'))) {
            v = strtoull(q + strlen("queued_mem="), NULL, 10);
            break;
        }
    }
    free(text);
    TH_CHECK(v != UINT64_MAX, "client %" PRIu64 " not listed", id);
    return v;
}

static void fill_msg(uint8_t *buf, size_t len, uint64_t seq)
{
    bk_put64(buf, seq);
    th_pattern(buf + 8, len - 8, seq, 0);
}

static void check_msg(const broker_msg_t *m, size_t len, uint64_t seq)
{
    cr_assert_eq(m->kind, BROKER_MSG_DATA, "message %" PRIu64 ": %s %d",
                 seq, th_kind_str(m->kind), m->code);
    cr_assert_eq(m->len, len, "message %" PRIu64 ": %zu bytes", seq, m->len);
    cr_assert_eq(bk_get64(m->data), seq, "message %" PRIu64 " came as %"
                 PRIu64, seq, bk_get64(m->data));
    cr_assert_lt(th_pattern_check((const uint8_t *)m->data + 8, len - 8,
                                  seq, 0), 0, "message %" PRIu64
                 " corrupted", seq);
}

/* ---- blocking mode ------------------------------------------------------- */

struct hol_arg {
    th_barrier_t sent;      /* S -> main: one more message queued (seq) */
    th_barrier_t verdict;   /* main -> S: 1 more, 0 enough */
    th_barrier_t last;      /* S -> main: about to send the last one */
};

/* S: messages to hol.slow until brokerd holds more than its queue limit
 * for it, each followed by a ping (answered: S is still read); then a
 * message to hol.fast and a control request, both answered while hol.slow
 * is full; then one more message to hol.slow, which waits for room. */
static int hol_sender(void *p)
{
    struct hol_arg *a = p;
    broker_t *s = th_connect(&br);
    uint8_t *buf = malloc(MSG);
    uint64_t seq = 0;
    char *text = NULL;
    size_t len;

    TH_OK(broker_set_option(s, BROKER_OPT_SHM_THRESHOLD, 0));
    do {
        fill_msg(buf, MSG, seq);
        TH_OK(broker_send(s, "hol.slow", buf, MSG, NULL, 0));
        TH_OK(broker_ping(s, TH_HANG_MS));
        th_barrier_signal(&a->sent, ++seq);
    } while (th_barrier_wait(&a->verdict));
    TH_OK(broker_send(s, "hol.fast", "to the fast one", 15, NULL, 0));
    TH_OK(broker_list(s, BROKER_CTRL_LIST_NAMES, &text, &len));
    TH_CHECK(strstr(text, "hol.slow") != NULL, "names: %s", text);
    free(text);
    TH_OK(broker_ping(s, TH_HANG_MS));
    th_barrier_signal(&a->last, seq);
    fill_msg(buf, MSG, seq);
    TH_OK(broker_send(s, "hol.slow", buf, MSG, NULL, 0));
    TH_OK(broker_send(s, "hol.fast", "last one sent", 13, NULL, 0));
    TH_OK(broker_ping(s, TH_HANG_MS));
    free(buf);
    broker_close(s);
    return 0;
}

Test(hol, full_receiver_holds_back_only_its_own_messages)
{
    broker_t *slow = th_connect(&br), *fast = th_connect(&br);
    struct hol_arg a;
    broker_msg_t *m;
    uint64_t n = 0, last;
    pid_t pid;

    th_register(slow, "hol.slow");
    th_register(fast, "hol.fast");
    th_barrier_init(&a.sent);
    th_barrier_init(&a.verdict);
    th_barrier_init(&a.last);
    pid = th_spawn(hol_sender, &a);
    for (;;) {
        n = th_barrier_wait(&a.sent);
        cr_assert_lt(n, 4096, "hol.slow never filled");
        if (queued_mem(fast, broker_client_id(slow)) > LIMIT)
            break;
        th_barrier_signal(&a.verdict, 1);
    }
    th_barrier_signal(&a.verdict, 0);
    /* with hol.slow full, the fast receiver still gets its message */
    m = th_recv_kind(fast, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 15);
    cr_assert_arr_eq(m->data, "to the fast one", 15);
    broker_msg_free(m);
    last = th_barrier_wait(&a.last);
    cr_assert_eq(last, n);
    /* hol.slow reads: everything, in order; S's last message follows */
    for (uint64_t i = 0; i <= n; i++) {
        m = th_recv_kind(slow, BROKER_MSG_DATA);
        check_msg(m, MSG, i);
        broker_msg_free(m);
    }
    m = th_recv_kind(fast, BROKER_MSG_DATA);
    cr_assert_arr_eq(m->data, "last one sent", 13);
    broker_msg_free(m);
    th_join(pid);
    th_barrier_fini(&a.sent);
    th_barrier_fini(&a.verdict);
    th_barrier_fini(&a.last);
    broker_close(slow);
    broker_close(fast);
}

/* ---- attached mode --------------------------------------------------------- */

struct async_arg {
    broker_t *b;
    uv_timer_t timer;
    unsigned sent;
    bool done;
    int slow_r, fast_r;
    uint8_t buf[MSG];
};

/* Each turn of the loop: one more message to hol.slow once the last one
 * is written, until the library says it is busy; then one to hol.fast,
 * which must go.  (What the socket holds beyond the limit when BUSY comes
 * must stay below the hard limit's margin: see the test's queue limit.) */
static void async_turn(uv_timer_t *t)
{
    struct async_arg *a = t->data;

    if (a->done || broker_pending(a->b))
        return;
    fill_msg(a->buf, MSG, a->sent);
    a->slow_r = broker_send(a->b, "hol.slow", a->buf, MSG, NULL, 0);
    if (a->slow_r == 0) {
        a->sent++;
        return;
    }
    a->fast_r = broker_send(a->b, "hol.fast", "not blocked", 11, NULL, 0);
    a->done = true;
    uv_timer_stop(t);
}

static bool async_done(void *p)
{
    return ((struct async_arg *)p)->done;
}

/* ... and everything the library queued is written. */
static bool async_flushed(void *p)
{
    return broker_pending(((struct async_arg *)p)->b) == 0;
}

Test(hol, attached_mode_says_eagain_for_the_full_receiver_only)
{
    broker_t *slow, *fast;
    struct async_arg *a = calloc(1, sizeof(*a));
    uv_loop_t loop;
    broker_msg_t *m;

    /* a margin (half the limit) above a socket buffer or two */
    th_broker_restart(&br, "--queue-limit", "2097152", NULL);
    slow = th_connect(&br);
    fast = th_connect(&br);
    th_register(slow, "hol.slow");
    th_register(fast, "hol.fast");
    a->b = th_connect(&br);
    cr_assert_eq(broker_set_option(a->b, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(a->b, &loop, NULL, NULL), 0);
    uv_timer_init(&loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, async_turn, 0, 1);
    th_uv_run_until(&loop, async_done, a);
    th_uv_run_until(&loop, async_flushed, a);
    cr_assert_eq(a->slow_r, -EAGAIN, "hol.slow: %d (%s) after %u messages",
                 a->slow_r, broker_strerror(a->slow_r), a->sent);
    cr_assert_eq(a->fast_r, 0, "hol.fast: %d (%s)", a->fast_r,
                 broker_strerror(a->fast_r));
    m = th_recv_kind(fast, BROKER_MSG_DATA);
    cr_assert_arr_eq(m->data, "not blocked", 11);
    broker_msg_free(m);
    for (unsigned i = 0; i < a->sent; i++) {
        m = th_recv_kind(slow, BROKER_MSG_DATA);
        check_msg(m, MSG, i);
        broker_msg_free(m);
    }
    broker_close(a->b);
    uv_close((uv_handle_t *)&a->timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    free(a);
    broker_close(slow);
    broker_close(fast);
}

/* ---- the wire: FLOW frames, the hard limit ------------------------------- */

static uint8_t pkt[BK_MAX_MAX_PACKET];

/* What a raw connection has read so far. */
struct raw_seen {
    unsigned errors;
    bool busy, ready;           /* FLOW BUSY / READY */
    uint64_t busy_src, ready_src;
    uint32_t ready_len;
    uint32_t last_sid;          /* the stream of the last message sent */
    char name[BK_MAX_NAME + 1]; /* BUSY's name */
};

/* FLOW comes in episodes: BUSY, then READY once the receiver has room
 * again (its queue can also drain into its socket buffer meanwhile). */
static void raw_frame(struct raw_seen *seen, const bk_hdr_t *h,
                      const uint8_t *pl)
{
    if (h->type == BK_T_ERROR) {
        seen->errors++;
    } else if (h->type == BK_T_FLOW && h->aux == BK_FLOW_BUSY) {
        TH_CHECK(!seen->busy, "BUSY twice in one episode");
        TH_CHECK(h->stream && h->stream <= seen->last_sid, "BUSY about "
                 "stream %u, the last message was on %u", h->stream,
                 seen->last_sid);
        seen->busy = true;
        seen->ready = false;
        seen->busy_src = h->source;
        memcpy(seen->name, pl, h->length);
        seen->name[h->length] = '\0';
    } else if (h->type == BK_T_FLOW) {
        TH_CHECK(h->aux == BK_FLOW_READY && h->stream == 0,
                 "FLOW %u on stream %u", h->aux, h->stream);
        TH_CHECK(seen->busy, "READY without BUSY");
        seen->busy = false;
        seen->ready = true;
        seen->ready_src = h->source;
        seen->ready_len = h->length;
    }
}

/* Read a raw connection until a frame of `type` came (and the packet it
 * is in is handled), or (type 0) until READY. */
static void raw_until(int fd, uint8_t type, struct raw_seen *seen)
{
    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        const uint8_t *pl;
        size_t off = 0;
        bk_hdr_t h;
        bool done = false;

        TH_CHECK(n > 0, "raw read: %zd", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1) {
            raw_frame(seen, &h, pl);
            done |= type ? h.type == type : seen->ready;
        }
        if (done)
            return;
    }
}

static void raw_oneway(int fd, uint8_t *buf, uint32_t sid)
{
    TH_OK(th_raw_send(fd, &(bk_hdr_t){ .version = BK_PROTO_VERSION,
              .type = BK_T_DATA, .flags = BK_F_OPEN | BK_F_NAME | BK_F_CLOSE,
              .stream = sid, .aux = 8, .length = 8 + MSG }, buf, NULL, 0));
}

/* A ping; its reply shows brokerd has handled what came before. */
static void raw_ping(int fd, struct raw_seen *seen)
{
    TH_OK(th_raw_send(fd, &(bk_hdr_t){ .version = BK_PROTO_VERSION,
              .type = BK_T_CTRL, .aux = BK_OP_PING, .stream = 1 },
              NULL, NULL, 0));
    raw_until(fd, BK_T_CTRL_REPLY, seen);
}

struct raw_arg {
    th_barrier_t sent;      /* S -> main: one more message handled (count) */
    th_barrier_t verdict;   /* main -> S: 1 more, 0 hol.slow is full */
    th_barrier_t done;      /* S -> main: how many it sent in all */
    uint64_t slow_id;
};

/* S: a raw client with BK_HELLO_FLOW that sends to hol.slow until it is
 * told hol.slow is busy, then ignores that and sends as much again past
 * the hard limit: brokerd pauses it there, loses and refuses nothing;
 * once hol.slow has read, S gets READY and is served again. */
static int raw_sender(void *p)
{
    struct raw_arg *a = p;
    int fd = th_raw_connect_hello_caps(br.sock, BK_HELLO_FLOW, NULL);
    uint8_t *buf = malloc(8 + MSG);
    struct raw_seen seen = { 0 };
    unsigned sent = 0;

    memcpy(buf, "hol.slow", 8);
    do {
        fill_msg(buf + 8, MSG, sent);
        raw_oneway(fd, buf, seen.last_sid = ++sent);
        raw_ping(fd, &seen);
        th_barrier_signal(&a->sent, sent);
    } while (th_barrier_wait(&a->verdict));
    /* brokerd said hol.slow is past its limit: this episode's BUSY came
     * before the ping's reply, and no READY after it */
    TH_CHECK(seen.busy, "no FLOW BUSY once hol.slow is past its limit");
    TH_CHECK(seen.busy_src == a->slow_id, "BUSY about %llu",
             (unsigned long long)seen.busy_src);
    TH_CHECK(strcmp(seen.name, "hol.slow") == 0, "BUSY names %s",
             seen.name);
    for (unsigned i = 0; i < 2 * HARD / MSG; i++) {
        fill_msg(buf + 8, MSG, sent);
        raw_oneway(fd, buf, seen.last_sid = ++sent);
    }
    if (seen.busy)
        raw_until(fd, 0, &seen);
    TH_CHECK(seen.ready_src == a->slow_id && seen.ready_len == 0,
             "READY about %llu, %u bytes",
             (unsigned long long)seen.ready_src, seen.ready_len);
    raw_ping(fd, &seen);
    TH_CHECK(seen.errors == 0, "%u errors", seen.errors);
    th_barrier_signal(&a->done, sent);
    close(fd);
    free(buf);
    return 0;
}

Test(hol, flow_frames_and_the_hard_limit)
{
    broker_t *slow = th_connect(&br), *obs = th_connect(&br);
    struct raw_arg a = { .slow_id = broker_client_id(slow) };
    uint64_t n, q, deadline;
    broker_msg_t *m;
    pid_t pid;

    th_register(slow, "hol.slow");
    th_barrier_init(&a.sent);
    th_barrier_init(&a.verdict);
    th_barrier_init(&a.done);
    pid = th_spawn(raw_sender, &a);
    for (;;) {
        n = th_barrier_wait(&a.sent);
        cr_assert_lt(n, 4096, "hol.slow never filled");
        if (queued_mem(obs, a.slow_id) > LIMIT)
            break;
        th_barrier_signal(&a.verdict, 1);
    }
    th_barrier_signal(&a.verdict, 0);
    /* S sends on regardless: brokerd stops reading it past the hard
     * limit, so the queue stays within it (and one packet) */
    deadline = th_now_ms() + TH_HANG_MS;
    while ((q = queued_mem(obs, a.slow_id)) <= HARD) {
        unsigned us = 1000;

        cr_assert_lt(th_now_ms(), deadline, "queue stuck at %" PRIu64, q);
        th_nap(&us);
    }
    for (int i = 0; i < 20; i++) {
        unsigned us = 2000;

        q = queued_mem(obs, a.slow_id);
        cr_assert_leq(q, HARD + BK_DEF_MAX_PACKET + 64, "brokerd queued %"
                      PRIu64 " bytes for hol.slow", q);
        th_nap(&us);
    }
    /* hol.slow reads: everything S sent, in order, none refused */
    for (uint64_t i = 0; i < n + 2 * HARD / MSG; i++) {
        m = th_recv_kind(slow, BROKER_MSG_DATA);
        check_msg(m, MSG, i);
        broker_msg_free(m);
    }
    cr_assert_eq(th_barrier_wait(&a.done), n + 2 * HARD / MSG);
    th_join(pid);
    th_barrier_fini(&a.sent);
    th_barrier_fini(&a.verdict);
    th_barrier_fini(&a.done);
    broker_close(slow);
    broker_close(obs);
}

/* A client without BK_HELLO_FLOW is paused as before: never told, never
 * refused; everything it sent arrives once the receiver reads. */
static int legacy_sender(void *p)
{
    unsigned *count = p;
    int fd = th_raw_connect_hello_caps(br.sock, 0, NULL);
    uint8_t *buf = malloc(8 + MSG);

    memcpy(buf, "hol.slow", 8);
    for (unsigned i = 0; i < *count; i++) {
        fill_msg(buf + 8, MSG, i);
        TH_OK(th_raw_send(fd, &(bk_hdr_t){ .version = BK_PROTO_VERSION,
                  .type = BK_T_DATA, .flags = BK_F_OPEN | BK_F_NAME |
                  BK_F_CLOSE, .stream = i + 1, .aux = 8,
                  .length = 8 + MSG }, buf, NULL, 0));
    }
    TH_OK(th_raw_send(fd, &(bk_hdr_t){ .version = BK_PROTO_VERSION,
              .type = BK_T_CTRL, .aux = BK_OP_PING, .stream = 1 }, NULL, NULL, 0));
    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        const uint8_t *pl;
        size_t off = 0;
        bk_hdr_t h;

        TH_CHECK(n > 0, "legacy read: %zd", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1) {
            TH_CHECK(h.type != BK_T_FLOW && h.type != BK_T_ERROR,
                     "legacy sender got type %u", h.type);
            if (h.type == BK_T_CTRL_REPLY) {
                close(fd);
                free(buf);
                return 0;
            }
        }
    }
}

Test(hol, a_sender_without_flow_is_paused_not_refused)
{
    broker_t *slow = th_connect(&br);
    unsigned count = 3 * HARD / MSG + 32;
    broker_msg_t *m;
    pid_t pid;

    th_register(slow, "hol.slow");
    pid = th_spawn(legacy_sender, &count);
    for (unsigned i = 0; i < count; i++) {
        m = th_recv_kind(slow, BROKER_MSG_DATA);
        check_msg(m, MSG, i);
        broker_msg_free(m);
    }
    th_join(pid);
    broker_close(slow);
}
