/*
 * test_pubsub_dumps.c - the hex dumps of broker-protocol(7) "PUBLISH AND
 * SUBSCRIBE", sent to and compared with a real brokerd, byte for byte.
 *
 * The page's example has client 1 publish and client 2 subscribe; here
 * the client ids (and the stream id the broker picks for the delivery)
 * are whatever brokerd assigns, so the expected bytes are the dump's with
 * those fields put in.  Everything else must be identical.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"
#include "mandump.h"

static th_broker_t br;
static md_dump_t dumps[32];
static md_dump_t *ps[10];       /* SUBSCRIBE, reply, PUBLISH, delivery, GAP,
                                   then (test_dumps only) a NOFDS SUBSCRIBE,
                                   its EXDEV, a GATEWAY SUBSCRIBE and its
                                   addressed PUBLISH */

static void setup(void)
{
    size_t n = md_load(TOP_SRCDIR "/man/broker-protocol.7", dumps, 32);
    cr_assert_eq(md_section(dumps, n, "PUBLISH AND SUBSCRIBE", ps, 10), 9);
    th_broker_start(&br, "--queue-limit", "65536", NULL);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(pubsub_dumps, .init = setup, .fini = teardown, .timeout = 120);

/* Frames of the packets read from one connection, one at a time. */
typedef struct reader {
    int fd;
    uint8_t pkt[BK_MAX_MAX_PACKET];
    size_t len, off;
} reader_t;

/* The next frame: its header and its bytes (header + payload) in *raw. */
static void next_frame(reader_t *r, bk_hdr_t *h, const uint8_t **raw)
{
    const uint8_t *payload;
    while (r->off == r->len) {
        ssize_t n = th_raw_recv(r->fd, r->pkt, sizeof r->pkt);
        cr_assert_gt(n, 0, "connection ended: %zd", n);
        r->len = (size_t)n;
        r->off = 0;
    }
    size_t start = r->off;
    cr_assert_eq(bk_pkt_next(r->pkt, r->len, &r->off, h, &payload), 1);
    *raw = r->pkt + start;
}

/* The frame equals dump d, with the u64 at offset `at` (and `at2`, if
 * not 0) replaced by v (v2). */
static void expect_dump(const uint8_t *raw, const bk_hdr_t *h,
                        const md_dump_t *d, size_t at, uint64_t v,
                        size_t at2, uint64_t v2)
{
    uint8_t want[MD_BYTES];
    memcpy(want, d->b, d->len);
    bk_put64(want + at, v);
    if (at2)
        bk_put64(want + at2, v2);
    cr_assert_eq(BK_HDR_SIZE + h->length, d->len,
                 "frame of %u bytes, dump at line %d has %zu",
                 BK_HDR_SIZE + h->length, d->line, d->len);
    for (size_t i = 0; i < d->len; i++)
        cr_expect_eq(raw[i], want[i], "dump at line %d, byte 0x%02zx: got "
                     "0x%02x want 0x%02x", d->line, i, raw[i], want[i]);
}

/* Client `sub` sends the page's SUBSCRIBE and gets the page's reply. */
static void subscribe(reader_t *sub, uint64_t sub_id)
{
    bk_hdr_t h;
    const uint8_t *raw;
    TH_OK(th_raw_send_bytes(sub->fd, ps[0]->b, ps[0]->len, NULL, 0));
    next_frame(sub, &h, &raw);
    cr_assert_eq(h.type, BK_T_CTRL_REPLY);
    expect_dump(raw, &h, ps[1], 24, sub_id, 0, 0);   /* dest */
}

Test(pubsub_dumps, subscribe_publish_delivery)
{
    static reader_t sub;
    bk_welcome_t wp, ws;
    int pub = th_raw_connect_hello(br.sock, &wp);
    sub.fd = th_raw_connect_hello(br.sock, &ws);
    sub.len = sub.off = 0;

    subscribe(&sub, ws.client_id);
    TH_OK(th_raw_send_bytes(pub, ps[2]->b, ps[2]->len, NULL, 0));
    bk_hdr_t h;
    const uint8_t *raw;
    next_frame(&sub, &h, &raw);
    cr_assert_eq(h.type, BK_T_DATA);
    cr_assert(h.stream & BK_SID_PEER_BIT, "stream 0x%x", h.stream);
    /* The dump's stream id is 0x80000001, its source client 1. */
    uint8_t want_stream[4];
    bk_put32(want_stream, h.stream);
    md_dump_t d = *ps[3];
    memcpy(d.b + 8, want_stream, 4);
    expect_dump(raw, &h, &d, 16, wp.client_id, 0, 0);
    close(pub);
    close(sub.fd);
}

/* STATUS's dropped_pub, asked on fd. */
static uint64_t dropped_pub(int fd, uint32_t req)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .aux = BK_OP_STATUS, .stream = req };
    TH_OK(th_raw_send(fd, &h, NULL, NULL, 0));
    ssize_t n = th_raw_recv(fd, pkt, sizeof pkt - 1);
    const uint8_t *pl;
    size_t off = 0;
    cr_assert_gt(n, 0);
    cr_assert_eq(bk_pkt_next(pkt, (size_t)n, &off, &h, &pl), 1);
    cr_assert_eq(h.type, BK_T_CTRL_REPLY);
    cr_assert_eq(h.stream, req);
    char text[4096];
    size_t len = h.length < sizeof text - 1 ? h.length : sizeof text - 1;
    memcpy(text, pl, len);
    text[len] = '\0';
    const char *k = strstr(text, "\ndropped_pub=");
    cr_assert_not_null(k, "no dropped_pub in STATUS");
    return strtoull(k + 13, NULL, 10);
}

Test(pubsub_dumps, gap_after_three_drops)
{
    static reader_t sub;
    static uint8_t msg[BK_HDR_SIZE + 20 + 16384];
    bk_welcome_t wp, ws;
    int pub = th_raw_connect_hello(br.sock, &wp);
    sub.fd = th_raw_connect_hello(br.sock, &ws);
    sub.len = sub.off = 0;
    subscribe(&sub, ws.client_id);

    /* The page's publication with 16 KiB of data, on streams 1, 2, ...,
     * until the broker has dropped exactly 3 for the subscriber, which
     * reads nothing meanwhile (policy drop: the publisher is never held
     * back, and STATUS after each one says how many were dropped). */
    bk_hdr_t h;
    bk_hdr_decode(ps[2]->b, &h);
    memcpy(msg + BK_HDR_SIZE, ps[2]->b + BK_HDR_SIZE, 20);
    memset(msg + BK_HDR_SIZE + 20, 'x', 16384);
    h.length = 20 + 16384;
    uint32_t sent = 0;
    uint64_t dropped = 0;
    while (dropped < 3) {
        cr_assert_lt(sent, 100000, "no drops after %u messages", sent);
        h.stream = ++sent;
        bk_hdr_encode(&h, msg);
        TH_OK(th_raw_send_bytes(pub, msg, sizeof msg, NULL, 0));
        uint64_t now = dropped_pub(pub, sent);
        cr_assert(now == dropped || now == dropped + 1, "%lu after %lu",
                  (unsigned long)now, (unsigned long)dropped);
        dropped = now;
    }

    /* Every message accepted comes first, then the GAP of the page. */
    uint32_t delivered = 0;
    const uint8_t *raw;
    for (;;) {
        next_frame(&sub, &h, &raw);
        if (h.type != BK_T_DATA)
            break;
        cr_expect_eq(h.dest, 1, "the subscription id");
        delivered++;
    }
    cr_assert_eq(h.type, BK_T_GAP, "type %u after %u messages", h.type,
                 delivered);
    cr_expect_eq(delivered, sent - 3);
    expect_dump(raw, &h, ps[4], 24, ws.client_id, 0, 0);       /* dest */
    close(pub);
    close(sub.fd);
}
