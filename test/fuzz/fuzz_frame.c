/*
 * fuzz_frame.c - libFuzzer target for the frame parser, frame validation
 * (names, publication topics, GAP, CTRL bounds) and message reassembly
 * (prefix fz_).  Built by `make fuzz`; fuzz_topic.c covers the topic
 * grammar and the matcher on their own.
 *
 * The input is one packet.  Its frames are walked with bk_pkt_next and
 * each is validated in both directions.  DATA frames that pass either
 * check are fed, in order, to two reassembly tables with tiny limits (one
 * whole-message, one chunked) so the size, fragment-count, partial-count
 * and timeout bounds are all reachable; CLOSE and ERROR frames drop their
 * stream as a receiver would.  The clock advances a few milliseconds per
 * frame and entries expire on the way.  At the end everything is expired
 * and freed: LeakSanitizer reports anything left behind.
 *
 * No real descriptors are used: a frame's nfds is honoured with entries of
 * -1, which the table owns and "closes" like real ones.
 *
 * Besides the sanitizers, the target checks a few promises of the APIs
 * (outputs within bounds, partial count within max_partial) and aborts if
 * one is broken.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "reasm.h"

#define FZ_MAX_MSG      64u     /* bytes per message */
#define FZ_MAX_FRAGS    4u      /* fragments per message */
#define FZ_MAX_PARTIAL  3u      /* partial messages held */
#define FZ_TIMEOUT_MS   20u     /* idle timeout of a partial message */
#define FZ_MS_PER_FRAME 7u      /* clock step per frame */

#define fz_require(cond) do { if (!(cond)) abort(); } while (0)

static const bk_limits_t fz_frame_limits = {
    .max_packet = BK_DEF_MAX_PACKET,
    .max_fds = 8,
    .max_name = BK_MAX_NAME,
};

static void fz_on_expired(void *ud, uint64_t source, uint32_t stream)
{
    (void)source;
    (void)stream;
    (*(size_t *)ud)++;
}

/* Check and release the outputs of one feed. */
static void fz_release(bk_reasm_t *t, bk_reasm_result_t *res, int n)
{
    fz_require(n <= BK_REASM_MAX_OUT && (unsigned)n == res->nout);
    if (!t->lim.chunked)
        fz_require(n <= 1);
    for (int i = 0; i < n; i++) {
        bk_reasm_out_t *o = &res->out[i];

        if (!t->lim.chunked)
            fz_require(o->len <= t->lim.max_msg);
        fz_require(o->len == 0 || o->data != NULL);
        fz_require(o->nfds <= BK_MAX_FDS_HARD);
        if (o->named)
            fz_require(memchr(o->name, '\0', sizeof(o->name)) != NULL);
        bk_reasm_out_release(o);
    }
}

static void fz_feed(bk_reasm_t *t, const bk_hdr_t *h, const uint8_t *payload,
                    uint64_t now)
{
    int fds[BK_MAX_FDS_HARD];
    bk_reasm_result_t res;
    int n;

    for (unsigned i = 0; i < h->nfds; i++)
        fds[i] = -1;
    memset(&res, 0, sizeof(res));
    n = bk_reasm_feed(t, h, payload, h->nfds ? fds : NULL, now, &res);
    if (n > 0)
        fz_release(t, &res, n);
    else
        fz_require(n == 0 || res.why != BK_REASM_OK);
    fz_require(bk_reasm_count(t) <= t->lim.max_partial);
}

static void fz_tick(bk_reasm_t *t, uint64_t now, size_t *expired)
{
    uint64_t when;

    if (bk_reasm_next_deadline(t, &when) && when <= now)
        bk_reasm_expire(t, now, fz_on_expired, expired);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bk_reasm_limits_t lim = {
        .max_msg = FZ_MAX_MSG,
        .max_frags = FZ_MAX_FRAGS,
        .max_partial = FZ_MAX_PARTIAL,
        .timeout_ms = FZ_TIMEOUT_MS,
        .chunked = false,
    };
    bk_reasm_t whole, chunked;
    const uint8_t *payload;
    size_t off = 0, expired = 0;
    uint64_t now = 1000;
    bk_hdr_t h;

    bk_reasm_init(&whole, &lim);
    lim.chunked = true;
    bk_reasm_init(&chunked, &lim);

    while (bk_pkt_next(data, size, &off, &h, &payload) == 1) {
        int from_client = bk_frame_check_from_client(&h, payload,
                                                     &fz_frame_limits);
        int from_broker = bk_frame_check_from_broker(&h, payload,
                                                     &fz_frame_limits);

        now += FZ_MS_PER_FRAME;
        if (from_client != 0 && from_broker != 0)
            continue;
        switch (h.type) {
        case BK_T_DATA:
            fz_feed(&whole, &h, payload, now);
            fz_feed(&chunked, &h, payload, now);
            break;
        case BK_T_CLOSE:
        case BK_T_ERROR:
            bk_reasm_drop_stream(&whole, h.source, h.stream);
            bk_reasm_drop_stream(&chunked, h.source, h.stream);
            break;
        case BK_T_BYE:
            bk_reasm_drop_source(&whole, h.source);
            bk_reasm_drop_source(&chunked, h.source);
            break;
        default:
            break;
        }
        fz_tick(&whole, now, &expired);
        fz_tick(&chunked, now, &expired);
    }

    /* Everything left expires, then the tables go. */
    now += FZ_TIMEOUT_MS;
    bk_reasm_expire(&whole, now, fz_on_expired, &expired);
    bk_reasm_expire(&chunked, now, fz_on_expired, &expired);
    fz_require(bk_reasm_count(&whole) == 0);
    fz_require(bk_reasm_count(&chunked) == 0);
    bk_reasm_fini(&whole);
    bk_reasm_fini(&chunked);
    return 0;
}
