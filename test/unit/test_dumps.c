/*
 * test_dumps.c - the hex dumps of man/broker-protocol.7 are real frames.
 *
 * Every dump in the page (an .EX block of "0000: xx xx ..." lines) must be
 * exactly one frame that the frame checks of its direction accept.  The
 * dumps of "PUBLISH AND SUBSCRIBE" must also be byte for byte the frames
 * the codec builds from the fields the text around them describes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "summary.h"

#include "mandump.h"

#define DUMPS_MAX 32

static md_dump_t dumps[DUMPS_MAX];
static size_t ndumps;

static void load_dumps(void)
{
    ndumps = md_load(TOP_SRCDIR "/man/broker-protocol.7", dumps, DUMPS_MAX);
}

static const bk_limits_t lim = {
    .max_packet = BK_DEF_MAX_PACKET,
    .max_fds = BK_DEF_MAX_FDS,
    .max_name = BK_MAX_NAME,
};

/* Who sends a frame of this type (DATA: by its source or stream). */
static bool from_client(const bk_hdr_t *h)
{
    switch (h->type) {
    case BK_T_HELLO:
    case BK_T_CTRL:
        return true;
    case BK_T_DATA:
        return h->source == 0 && !(h->stream & BK_SID_PEER_BIT);
    case BK_T_RELEASE:
    case BK_T_SEG_DROP:
        return h->dest == 0;
    default:
        return false;
    }
}

Test(dumps, every_dump_is_one_valid_frame)
{
    load_dumps();
    /* 1 in HANDSHAKE, 1 in STREAMS, 1 in CONTROL OPERATIONS, 4 in
     * EXAMPLE, 6 in SHARED MEMORY, 7 in PUBLISH AND SUBSCRIBE, 1 in FLOW
     * CONTROL */
    cr_assert_eq(ndumps, 23, "found %zu dumps", ndumps);
    for (size_t i = 0; i < ndumps; i++) {
        const md_dump_t *d = &dumps[i];
        size_t off = 0;
        bk_hdr_t h;
        const uint8_t *payload;
        cr_assert_eq(bk_pkt_next(d->b, d->len, &off, &h, &payload), 1,
                     "dump at line %d", d->line);
        cr_expect_eq(off, d->len, "dump at line %d: %zu bytes, frame %zu",
                     d->line, d->len, off);
        int r = from_client(&h) ? bk_frame_check_from_client(&h, payload,
                                                             &lim)
                                : bk_frame_check_from_broker(&h, payload,
                                                             &lim);
        cr_expect_eq(r, 0, "dump at line %d (type %u) refused: %d", d->line,
                     h.type, r);
    }
}

static size_t frame(uint8_t *out, bk_hdr_t h, const void *p1, size_t n1,
                    const void *p2, size_t n2)
{
    h.version = BK_PROTO_VERSION;
    h.length = (uint32_t)(n1 + n2);
    bk_hdr_encode(&h, out);
    memcpy(out + BK_HDR_SIZE, p1, n1);
    if (n2)
        memcpy(out + BK_HDR_SIZE + n1, p2, n2);
    return BK_HDR_SIZE + n1 + n2;
}

/* HANDSHAKE's HELLO declaring SHM is the codec's frame. */
Test(dumps, hello_with_capabilities_is_the_codec_s_frame)
{
    md_dump_t *hs[2];
    uint8_t want[MD_BYTES], ver[4];
    size_t n, wlen;

    load_dumps();
    n = md_section(dumps, ndumps, "HANDSHAKE", hs, 2);
    cr_assert_eq(n, 1, "%zu dumps in HANDSHAKE", n);
    bk_put32(ver, BK_PROTO_VERSION);
    wlen = frame(want, (bk_hdr_t){ .type = BK_T_HELLO, .aux = BK_HELLO_SHM },
                 ver, 4, "demo", 4);
    cr_assert_eq(hs[0]->len, wlen, "HELLO dump of %zu bytes, want %zu",
                 hs[0]->len, wlen);
    cr_assert_arr_eq(hs[0]->b, want, wlen, "HELLO dump differs");
}

/* FLOW CONTROL's BUSY is the frame brokerd sends (port.c send_flow). */
Test(dumps, flow_busy_is_the_codec_s_frame)
{
    md_dump_t *fc[2];
    uint8_t want[MD_BYTES];
    size_t n, wlen;

    load_dumps();
    n = md_section(dumps, ndumps, "FLOW CONTROL", fc, 2);
    cr_assert_eq(n, 1, "%zu dumps in FLOW CONTROL", n);
    wlen = frame(want, (bk_hdr_t){ .type = BK_T_FLOW, .aux = BK_FLOW_BUSY,
                                   .stream = 5, .source = 7, .dest = 3 },
                 "svc.slow", 8, NULL, 0);
    cr_assert_eq(fc[0]->len, wlen, "FLOW dump of %zu bytes, want %zu",
                 fc[0]->len, wlen);
    cr_assert_arr_eq(fc[0]->b, want, wlen, "FLOW dump differs");
}

/* CONTROL OPERATIONS' LIST request resuming after a cursor: the frame
 * libbroker's broker_list sends (api_ctl.c), and the cursor reads back as
 * the text says. */
Test(dumps, list_request_with_cursor_is_the_codec_s_frame)
{
    md_dump_t *co[2];
    uint8_t want[MD_BYTES], cursor[BK_LIST_REQ_SIZE];
    const uint8_t *payload;
    size_t n, wlen, off = 0;
    bk_hdr_t h;

    load_dumps();
    n = md_section(dumps, ndumps, "CONTROL OPERATIONS", co, 2);
    cr_assert_eq(n, 1, "%zu dumps in CONTROL OPERATIONS", n);
    cr_assert_eq(bk_pkt_next(co[0]->b, co[0]->len, &off, &h, &payload), 1);
    cr_assert_eq(h.type, BK_T_CTRL);
    cr_assert_eq(h.aux, BK_OP_LIST_NAMES);
    cr_assert_eq(h.stream, 4);
    cr_assert_eq(h.length, BK_LIST_REQ_SIZE);
    cr_assert_eq(bk_get64(payload), 1234);
    bk_put64(cursor, 1234);
    wlen = frame(want, (bk_hdr_t){ .type = BK_T_CTRL,
                                   .aux = BK_OP_LIST_NAMES, .stream = 4 },
                 cursor, sizeof(cursor), NULL, 0);
    cr_assert_eq(co[0]->len, wlen, "LIST dump of %zu bytes, want %zu",
                 co[0]->len, wlen);
    cr_assert_arr_eq(co[0]->b, want, wlen, "LIST dump differs");
}

/* STREAMS' summary ERROR is the frame brokerd sends (port.c sum_lost). */
Test(dumps, summary_error_is_the_codec_s_frame)
{
    md_dump_t *st[2];
    uint8_t want[MD_BYTES];
    char text[128];
    size_t n, wlen, tl;
    uint64_t count = 0;

    load_dumps();
    n = md_section(dumps, ndumps, "STREAMS", st, 2);
    cr_assert_eq(n, 1, "%zu dumps in STREAMS", n);
    tl = bk_sum_format(text, sizeof(text), 5000, BK_SUM_LOST);
    wlen = frame(want, (bk_hdr_t){ .type = BK_T_ERROR, .aux = 104,
                                   .stream = BK_SID_SUMMARY, .source = 7,
                                   .dest = 3 },
                 text, tl, NULL, 0);
    cr_assert_eq(st[0]->len, wlen, "summary dump of %zu bytes, want %zu",
                 st[0]->len, wlen);
    cr_assert_arr_eq(st[0]->b, want, wlen, "summary dump differs");
    cr_assert_eq(bk_sum_parse(st[0]->b + BK_HDR_SIZE, tl, &count), 0);
    cr_assert_eq(count, 5000);
}

/* The SEG_DROP a client sends, in SHARED MEMORY, is the codec's frame. */
Test(dumps, client_seg_drop_is_the_codec_s_frame)
{
    md_dump_t *sm[8];
    uint8_t want[MD_BYTES], pl[BK_SEG_DROP_SIZE] = { 3, 0, 0, 0, 0, 0, 0, 0 };
    size_t n, wlen;

    load_dumps();
    n = md_section(dumps, ndumps, "SHARED MEMORY", sm, 8);
    cr_assert_eq(n, 6, "%zu dumps in SHARED MEMORY", n);
    wlen = frame(want, (bk_hdr_t){ .type = BK_T_SEG_DROP }, pl, sizeof pl,
                 NULL, 0);
    /* the first: "Dropping a segment" comes before "Example" */
    cr_assert_eq(sm[0]->len, wlen, "SEG_DROP dump of %zu bytes", sm[0]->len);
    cr_assert_arr_eq(sm[0]->b, want, wlen, "SEG_DROP dump differs");
}

Test(dumps, publish_and_subscribe_dumps_are_the_codec_s_frames)
{
    load_dumps();
    md_dump_t *ps[10];
    size_t n = md_section(dumps, ndumps, "PUBLISH AND SUBSCRIBE", ps, 10);
    cr_assert_eq(n, 9, "%zu dumps in PUBLISH AND SUBSCRIBE", n);

    uint8_t want[9][MD_BYTES];
    size_t wlen[9];
    static const char pat[] = "sensors.*.temp";
    static const char topic[] = "sensors.kitchen.temp";
    uint8_t req[BK_SUB_REQ_FIXED] = { BK_SUB_DROP, 0 };
    bk_put16(req + 2, sizeof pat - 1);
    wlen[0] = frame(want[0], (bk_hdr_t){ .type = BK_T_CTRL, .stream = 3,
                                         .aux = BK_OP_SUBSCRIBE },
                    req, sizeof req, pat, sizeof pat - 1);
    uint8_t id[4];
    bk_put32(id, 1);
    wlen[1] = frame(want[1], (bk_hdr_t){ .type = BK_T_CTRL_REPLY,
                                         .stream = 3, .dest = 2 },
                    id, 4, NULL, 0);
    uint8_t pf = BK_F_OPEN | BK_F_CLOSE | BK_F_TOPIC;
    wlen[2] = frame(want[2], (bk_hdr_t){ .type = BK_T_DATA, .flags = pf,
                                         .stream = 1,
                                         .aux = sizeof topic - 1 },
                    topic, sizeof topic - 1, "21.5", 4);
    wlen[3] = frame(want[3], (bk_hdr_t){ .type = BK_T_DATA, .flags = pf,
                                         .stream = BK_SID_PEER_BIT | 1,
                                         .aux = sizeof topic - 1,
                                         .source = 1, .dest = 1 },
                    topic, sizeof topic - 1, "21.5", 4);
    uint8_t count[BK_GAP_SIZE];
    bk_put64(count, 3);
    wlen[4] = frame(want[4], (bk_hdr_t){ .type = BK_T_GAP, .aux = 1,
                                         .dest = 2 },
                    count, sizeof count, NULL, 0);
    /* a NOFDS subscription, and the EXDEV its publisher gets */
    static const char gw[] = "sensors.>";
    static const char exdev[] = "the subscriber cannot take file "
                                "descriptors";
    uint8_t nreq[BK_SUB_REQ_FIXED] = { BK_SUB_BLOCK, BK_SUB_F_NOFDS };
    bk_put16(nreq + 2, sizeof gw - 1);
    wlen[5] = frame(want[5], (bk_hdr_t){ .type = BK_T_CTRL, .stream = 5,
                                         .aux = BK_OP_SUBSCRIBE },
                    nreq, sizeof nreq, gw, sizeof gw - 1);
    wlen[6] = frame(want[6], (bk_hdr_t){ .type = BK_T_ERROR, .stream = 2,
                                         .aux = EXDEV, .source = 3,
                                         .dest = 1 },
                    exdev, sizeof exdev - 1, NULL, 0);
    /* a gateway of group w, and a publication it addresses to w */
    static const char jobs[] = "jobs.>w";
    uint8_t greq[BK_SUB_REQ_FIXED] = { BK_SUB_BLOCK,
                                       BK_SUB_F_NOFDS | BK_SUB_F_GATEWAY };
    bk_put16(greq + 2, 6);
    bk_put16(greq + 4, 1);
    wlen[7] = frame(want[7], (bk_hdr_t){ .type = BK_T_CTRL, .stream = 6,
                                         .aux = BK_OP_SUBSCRIBE },
                    greq, sizeof greq, jobs, sizeof jobs - 1);
    wlen[8] = frame(want[8], (bk_hdr_t){ .type = BK_T_DATA, .flags = pf,
                                         .stream = 1, .aux = 6, .dest = 1 },
                    "jobs.b", 6, "x", 1);
    for (size_t i = 0; i < 9; i++) {
        cr_expect_eq(ps[i]->len, wlen[i], "dump %zu (line %d): %zu bytes, "
                     "want %zu", i, ps[i]->line, ps[i]->len, wlen[i]);
        for (size_t k = 0; k < wlen[i] && k < ps[i]->len; k++)
            cr_expect_eq(ps[i]->b[k], want[i][k],
                         "dump %zu (line %d) byte 0x%02zx: 0x%02x want "
                         "0x%02x", i, ps[i]->line, k, ps[i]->b[k],
                         want[i][k]);
    }
}
