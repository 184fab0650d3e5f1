/*
 * test_notices.c - the broker's own frames towards a client that does not
 * read are bounded (issue 12).
 *
 * A sender fills the queues of several receivers that do not read with
 * small one-way messages (each queue below the limit, so the sender is
 * never held back), then the receivers disconnect: every message still
 * queued for them is lost, and the sender hears of each one.  While the
 * sender does not read, brokerd's queue towards it stays within
 * queue_limit and one frame; the rest is counted into a summary ERROR on
 * stream BK_SID_SUMMARY.  Once the sender reads, the individual ERRORs
 * plus the summaries' counts are exactly the messages lost.
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
#include "error.h"
#include "frame.h"
#include "summary.h"
#include "harness.h"

#define KiB 1024u
#define LIMIT (128u * KiB)          /* the broker's --queue-limit */
#define NRECV 4
#define BODY 16u                    /* payload bytes of each message */
#define BATCH 128u                  /* messages per packet */
/* The most one notice frame adds past the limit: a header and its text
 * with the broker's bookkeeping, in the memory it takes. */
#define NOTICE_MAX 512u

static th_broker_t br;

static void setup(void)
{
    char limit[16];

    snprintf(limit, sizeof(limit), "%u", LIMIT);
    th_broker_start(&br, "--queue-limit", limit, NULL);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(notices, .init = setup, .fini = teardown, .timeout = 300);

/* Field `key` of client id in LIST_CLIENTS, asked through obs. */
static uint64_t client_field(broker_t *obs, uint64_t id, const char *key)
{
    char *text = NULL, want[40], k[48], *line, *end, *q;
    uint64_t v = UINT64_MAX;
    size_t len;

    TH_OK(broker_list(obs, BROKER_CTRL_LIST_CLIENTS, &text, &len));
    snprintf(want, sizeof(want), "id=%" PRIu64 " ", id);
    snprintf(k, sizeof(k), " %s=", key);
    for (line = text; line && *line; line = end ? end + 1 : NULL) {
        end = strchr(line, '\n');
        if (strncmp(line, want, strlen(want)) == 0 &&
            (q = strstr(line, k)) && (!end || q < end)) {
            v = strtoull(q + strlen(k), NULL, 10);
            break;
        }
    }
    free(text);
    TH_CHECK(v != UINT64_MAX, "client %" PRIu64 " has no %s", id, key);
    return v;
}

/* Ask until client id's field `key` is `want` (hang-guarded). */
static void await_field(broker_t *obs, uint64_t id, const char *key,
                        uint64_t want)
{
    uint64_t deadline = th_now_ms() + TH_HANG_MS, v;
    unsigned us = 500;

    while ((v = client_field(obs, id, key)) != want) {
        TH_CHECK(th_now_ms() < deadline, "client %" PRIu64 ": %s is %"
                 PRIu64 ", want %" PRIu64, id, key, v, want);
        th_nap(&us);
    }
}

/* A raw receiver: HELLO, then it never reads. */
struct rcv {
    int fd;
    uint64_t id;
};

static void receivers_open(struct rcv *r)
{
    for (int i = 0; i < NRECV; i++) {
        bk_welcome_t w;

        r[i].fd = th_raw_connect_hello(br.sock, &w);
        r[i].id = w.client_id;
    }
}

static void receivers_close(struct rcv *r)
{
    for (int i = 0; i < NRECV; i++)
        close(r[i].fd);
}

static bool is_receiver(const struct rcv *r, uint64_t id)
{
    for (int i = 0; i < NRECV; i++)
        if (r[i].id == id)
            return true;
    return false;
}

/* How a sender puts BATCH one-way messages to `to` on the wire, the
 * first on stream *sid (advanced past the last). */
typedef void (*send_batch_fn)(void *s, uint64_t to, uint32_t *sid);

/* Send to each receiver in batches until brokerd holds 3/4 of the
 * limit for it (in the memory its frames take, which the limit bounds) (below the limit, so nothing holds the sender back), each
 * batch handled before the next is looked at.  Returns the messages
 * brokerd holds for the receivers: those lost once they go. */
static uint64_t fill(broker_t *obs, uint64_t sender, struct rcv *r,
                     send_batch_fn send, void *s)
{
    uint64_t sent = client_field(obs, sender, "msgs_in"), lost = 0;
    uint32_t sid = 1;

    for (int i = 0; i < NRECV; i++) {
        uint64_t q;

        do {
            send(s, r[i].id, &sid);
            sent += BATCH;
            await_field(obs, sender, "msgs_in", sent);
            q = client_field(obs, r[i].id, "queued_mem");
            cr_assert_lt(q, LIMIT, "receiver %d past the limit: %" PRIu64,
                         i, q);
            cr_assert_lt(sid, 1u << 20, "receiver %d never filled", i);
        } while (q < LIMIT / 4 * 3);
        /* nobody reads: these stay queued, and are lost when it goes */
        lost += client_field(obs, r[i].id, "queued_frames");
    }
    cr_assert_eq(client_field(obs, sender, "errors"), 0);
    /* enough notices to pass the sender's limit several times over (a
     * notice takes more than 160 bytes in the queue: header, text and
     * bookkeeping) */
    cr_assert_gt(lost * 160, 2 * LIMIT,
                 "only %" PRIu64 " messages queued", lost);
    return lost;
}

/* Close the receivers and wait until brokerd has counted an error for
 * every lost message towards the sender, which has not read: then its
 * queue is within the limit and one notice frame. */
static void lose(broker_t *obs, uint64_t sender, struct rcv *r,
                 uint64_t lost)
{
    uint64_t q;

    receivers_close(r);
    await_field(obs, sender, "errors", lost);
    q = client_field(obs, sender, "queued_mem");
    cr_assert_leq(q, LIMIT + NOTICE_MAX, "%" PRIu64 " bytes queued for the "
                  "sender for %" PRIu64 " lost messages (limit %u)", q,
                  lost, LIMIT);
}

/* ---- a raw sender --------------------------------------------------------- */

static uint8_t pkt[BK_MAX_MAX_PACKET];

static void raw_batch(void *s, uint64_t to, uint32_t *sid)
{
    uint8_t *w = pkt;

    for (unsigned i = 0; i < BATCH; i++) {
        bk_hdr_t h = {
            .version = BK_PROTO_VERSION, .type = BK_T_DATA,
            .flags = BK_F_OPEN | BK_F_CLOSE, .stream = (*sid)++,
            .dest = to, .length = BODY,
        };

        bk_hdr_encode(&h, w);
        memset(w + BK_HDR_SIZE, 'n', BODY);
        w += BK_HDR_SIZE + BODY;
    }
    TH_OK(th_raw_send_bytes(*(int *)s, pkt, (size_t)(w - pkt), NULL, 0));
}

struct tally {
    uint64_t single, summed, summaries, ctrl_replies;
};

/* Take one frame the raw sender read: an ERROR about a lost message, a
 * summary of them, or the ping's reply. */
static void raw_frame(struct tally *t, const struct rcv *r, uint32_t last,
                      const bk_hdr_t *h, const uint8_t *pl)
{
    uint64_t n;

    if (h->type == BK_T_CTRL_REPLY) {
        t->ctrl_replies++;
        return;
    }
    cr_assert_eq(h->type, BK_T_ERROR, "frame of type %u", h->type);
    cr_assert_eq(bk_err_from_wire(h->aux), -ECONNRESET, "ERROR %u", h->aux);
    if (h->stream == BK_SID_SUMMARY) {
        cr_assert_eq(bk_sum_parse(pl, h->length, &n), 0,
                     "summary text \"%.*s\"", (int)h->length, pl);
        cr_assert(h->source == 0 || is_receiver(r, h->source),
                  "summary from %" PRIu64, h->source);
        t->summed += n;
        t->summaries++;
        return;
    }
    cr_assert(h->stream >= 1 && h->stream < last, "ERROR on stream %u",
              h->stream);
    cr_assert(is_receiver(r, h->source), "ERROR from %" PRIu64, h->source);
    t->single++;
}

static void raw_read(int fd, struct tally *t, const struct rcv *r,
                     uint32_t last, bool (*done)(const struct tally *,
                                                 uint64_t), uint64_t arg)
{
    while (!done(t, arg)) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        const uint8_t *pl;
        size_t off = 0;
        bk_hdr_t h;

        cr_assert_gt(n, 0, "raw read: %zd", n);
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &pl) == 1)
            raw_frame(t, r, last, &h, pl);
    }
}

static bool all_told(const struct tally *t, uint64_t lost)
{
    return t->single + t->summed >= lost;
}

static bool pinged(const struct tally *t, uint64_t unused)
{
    return t->ctrl_replies > 0;
}

Test(notices, a_raw_sender_that_does_not_read_gets_a_bounded_queue)
{
    broker_t *obs = th_connect(&br);
    struct rcv r[NRECV];
    struct tally t = { 0 };
    bk_welcome_t w;
    int fd = th_raw_connect_hello(br.sock, &w);
    uint64_t lost;

    receivers_open(r);
    lost = fill(obs, w.client_id, r, raw_batch, &fd);
    lose(obs, w.client_id, r, lost);
    raw_read(fd, &t, r, (uint32_t)(client_field(obs, w.client_id,
                                                "msgs_in") + 1),
             all_told, lost);
    cr_assert_eq(t.single + t.summed, lost, "%" PRIu64 " ERRORs and %"
                 PRIu64 " in summaries for %" PRIu64 " lost messages",
                 t.single, t.summed, lost);
    cr_assert_geq(t.summaries, 1, "no summary");
    cr_assert_lt(t.single, lost, "no notice was folded");
    /* nothing more comes: the ping's reply is the next frame */
    TH_OK(th_raw_send(fd, &(bk_hdr_t){ .version = BK_PROTO_VERSION,
              .type = BK_T_CTRL, .aux = BK_OP_PING, .stream = 1 },
              NULL, NULL, 0));
    raw_read(fd, &t, r, 1u << 20, pinged, 0);
    cr_assert_eq(t.single + t.summed, lost);
    /* the sender's counter has every notice, folded or not */
    cr_assert_eq(client_field(obs, w.client_id, "errors"), lost);
    close(fd);
    broker_close(obs);
    th_broker_stop(&br);        /* exit 0: clean under valgrind too */
}

/* ---- a libbroker sender -------------------------------------------------- */

static void lib_batch(void *s, uint64_t to, uint32_t *sid)
{
    char body[BODY];

    memset(body, 'l', sizeof(body));
    for (unsigned i = 0; i < BATCH; i++, (*sid)++)
        TH_OK(broker_send_id(s, to, body, sizeof(body), NULL, 0));
    TH_OK(broker_flush(s, TH_HANG_MS));
}

Test(notices, libbroker_reports_every_lost_message)
{
    broker_t *obs = th_connect(&br), *b = th_connect(&br);
    uint64_t lost, single = 0, summed = 0, summaries = 0;
    struct rcv r[NRECV];
    broker_msg_t *m;

    receivers_open(r);
    lost = fill(obs, broker_client_id(b), r, lib_batch, b);
    lose(obs, broker_client_id(b), r, lost);
    while (single + summed < lost) {
        m = th_recv_kind(b, BROKER_MSG_ERROR);
        cr_assert_eq(m->code, -ECONNRESET, "code %d", m->code);
        cr_assert(is_receiver(r, m->source) ||
                  (m->stream == BROKER_STREAM_SUMMARY && m->source == 0),
                  "ERROR from %" PRIu64, m->source);
        if (m->stream == BROKER_STREAM_SUMMARY) {
            cr_assert_geq(m->count, 1);
            summed += m->count;
            summaries++;
        } else {
            cr_assert_eq(m->count, 0);
            single++;
        }
        broker_msg_free(m);
    }
    cr_assert_eq(single + summed, lost, "%" PRIu64 " ERRORs and %" PRIu64
                 " in summaries for %" PRIu64 " lost messages", single,
                 summed, lost);
    cr_assert_geq(summaries, 1, "no summary");
    /* nothing more comes */
    TH_OK(broker_ping(b, TH_HANG_MS));
    cr_assert_eq(broker_recv(b, &m, 0), -ETIMEDOUT, "one more event");
    broker_close(b);
    broker_close(obs);
    th_broker_stop(&br);
}
