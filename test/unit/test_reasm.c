/*
 * test_reasm.c - unit tests for the reassembly table (src/common/reasm.c).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "frame.h"
#include "reasm.h"

static bk_reasm_t R;
static bk_reasm_result_t res;

static void limits(uint64_t max_msg, uint32_t max_frags,
                   uint32_t max_partial, uint64_t timeout, bool chunked)
{
    bk_reasm_limits_t l = {
        .max_msg = max_msg, .max_frags = max_frags,
        .max_partial = max_partial, .timeout_ms = timeout,
        .chunked = chunked,
    };
    bk_reasm_init(&R, &l);
}

static void setup_default(void)
{
    limits(1 << 20, 100000, 16, 1000, false);
}

static void teardown(void)
{
    bk_reasm_fini(&R);
}

static bk_hdr_t frag(uint64_t src, uint32_t sid, uint8_t flags, size_t len)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA, .flags = flags,
        .length = (uint32_t)len, .stream = sid, .source = src,
    };
    return h;
}

static int feed(uint64_t src, uint32_t sid, uint8_t flags,
                const void *p, size_t len, uint64_t now)
{
    bk_hdr_t h = frag(src, sid, flags, len);
    return bk_reasm_feed(&R, &h, p, NULL, now, &res);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static bool fd_closed(int fd)
{
    return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/* Send buf as fragments of at most `step` bytes; returns the output. */
static void send_split(uint64_t src, uint32_t sid, uint8_t first_flags,
                       uint8_t last_flags, const uint8_t *buf, size_t len,
                       size_t step, int *rc_last)
{
    size_t off = 0;

    do {
        size_t n = len - off < step ? len - off : step;
        uint8_t fl = off == 0 ? first_flags : BK_F_CONT;
        int rc;

        fl |= off + n < len ? BK_F_MORE : last_flags;
        rc = feed(src, sid, fl, buf + off, n, 0);
        off += n;
        if (off < len)
            cr_assert_eq(rc, 0, "intermediate fragment at %zu gave %d", off,
                         rc);
        else
            *rc_last = rc;
    } while (off < len);
}

TestSuite(reasm, .init = setup_default, .fini = teardown);

Test(reasm, single_fragment_is_borrowed_and_exact)
{
    uint8_t buf[100];

    fill(buf, sizeof(buf), 1);
    cr_assert_eq(feed(7, 3, BK_F_OPEN | BK_F_CLOSE, buf, sizeof(buf), 0), 1);
    cr_assert_eq(res.nout, 1);
    cr_assert_eq(res.out[0].source, 7);
    cr_assert_eq(res.out[0].stream, 3);
    cr_assert_eq(res.out[0].flags, BK_REASM_OPEN | BK_REASM_CLOSE);
    cr_assert_eq(res.out[0].len, sizeof(buf));
    cr_assert_not(res.out[0].data_owned);
    cr_assert_arr_eq(res.out[0].data, buf, sizeof(buf));
    cr_assert_eq(bk_reasm_count(&R), 0);
}

Test(reasm, in_order_reassembly_is_byte_exact)
{
    size_t len = 300000;
    uint8_t *buf = malloc(len);
    int rc;

    fill(buf, len, 2);
    send_split(5, 9, BK_F_OPEN, BK_F_CLOSE, buf, len, 65504, &rc);
    cr_assert_eq(rc, 1);
    cr_assert_eq(res.out[0].len, len);
    cr_assert(res.out[0].data_owned);
    cr_assert_eq(memcmp(res.out[0].data, buf, len), 0);
    cr_assert_eq(res.out[0].flags, BK_REASM_OPEN | BK_REASM_CLOSE);
    cr_assert_eq(bk_reasm_count(&R), 0);
    cr_assert_eq(R.bytes, 0);
    bk_reasm_out_release(&res.out[0]);
    free(buf);
}

Test(reasm, name_is_stripped)
{
    uint8_t pl[5 + 3000];
    uint8_t *data = pl + 5;

    memcpy(pl, "svc.a", 5);
    fill(data, 3000, 3);
    bk_hdr_t h = frag(4, 0x80000001u, BK_F_OPEN | BK_F_NAME | BK_F_MORE,
                      5 + 1000);
    h.aux = 5;
    cr_assert_eq(bk_reasm_feed(&R, &h, pl, NULL, 0, &res), 0);
    cr_assert_eq(feed(4, 0x80000001u, BK_F_CONT, data + 1000, 2000, 0), 1);
    cr_assert(res.out[0].named);
    cr_assert_str_eq(res.out[0].name, "svc.a");
    cr_assert_eq(res.out[0].len, 3000);
    cr_assert_arr_eq(res.out[0].data, data, 3000);
    cr_assert_eq(res.out[0].flags, BK_REASM_OPEN);
    bk_reasm_out_release(&res.out[0]);
}

Test(reasm, interleaved_streams_from_several_sources)
{
    enum { NSRC = 3, NSID = 4, LEN = 20000, STEP = 1500 };
    static uint8_t buf[NSRC][NSID][LEN];
    size_t off[NSRC][NSID] = { { 0 } };
    unsigned done = 0;

    for (int s = 0; s < NSRC; s++)
        for (int k = 0; k < NSID; k++)
            fill(buf[s][k], LEN, (unsigned)(s * 10 + k));
    while (done < NSRC * NSID) {
        for (int k = 0; k < NSID; k++) {
            for (int s = 0; s < NSRC; s++) {
                size_t o = off[s][k];
                size_t n = LEN - o < STEP ? LEN - o : STEP;
                uint8_t fl;
                int rc;

                if (o == LEN)
                    continue;
                fl = o ? BK_F_CONT : BK_F_OPEN;
                fl |= o + n < LEN ? BK_F_MORE : BK_F_CLOSE;
                /* the same stream id on different sources is distinct */
                rc = feed((uint64_t)s + 1, (uint32_t)k + 1, fl,
                          buf[s][k] + o, n, 0);
                off[s][k] = o + n;
                if (o + n < LEN) {
                    cr_assert_eq(rc, 0);
                    continue;
                }
                cr_assert_eq(rc, 1);
                cr_assert_eq(res.out[0].source, (uint64_t)s + 1);
                cr_assert_eq(res.out[0].stream, (uint32_t)k + 1);
                cr_assert_eq(res.out[0].len, LEN);
                cr_assert_eq(memcmp(res.out[0].data, buf[s][k], LEN), 0,
                             "source %d stream %d corrupted", s, k);
                bk_reasm_out_release(&res.out[0]);
                done++;
            }
        }
    }
    cr_assert_eq(bk_reasm_count(&R), 0);
}

Test(reasm, cont_without_first_is_protocol_error)
{
    uint8_t b[10] = { 0 };

    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 10, 0), -EPROTO);
    cr_assert_eq(res.why, BK_REASM_ORPHAN_CONT);
    cr_assert_eq(feed(1, 1, BK_F_CONT, b, 10, 0), -EPROTO);
    cr_assert_eq(res.why, BK_REASM_ORPHAN_CONT);
}

Test(reasm, second_first_on_busy_key_is_protocol_error)
{
    uint8_t a[100], c[100];
    int p[2];

    fill(a, 100, 4);
    cr_assert_eq(feed(1, 2, BK_F_OPEN | BK_F_MORE, a, 50, 0), 0);
    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(1, 2, BK_F_MORE, 10);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, c, p, 0, &res), -EPROTO);
    cr_assert_eq(res.why, BK_REASM_BUSY_KEY);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]),
              "fds of a rejected fragment must be closed");
    /* the partial message is untouched and still completes */
    cr_assert_eq(feed(1, 2, BK_F_CONT, a + 50, 50, 0), 1);
    cr_assert_eq(res.out[0].len, 100);
    cr_assert_arr_eq(res.out[0].data, a, 100);
    bk_reasm_out_release(&res.out[0]);
}

Test(reasm, fds_on_cont_fragment_are_rejected_and_closed)
{
    uint8_t b[10] = { 0 };
    int p[2];

    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(1, 1, BK_F_CONT, 10);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 0, &res), -EPROTO);
    cr_assert_eq(res.why, BK_REASM_BAD_FRAME);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]));
}

Test(reasm, fds_travel_with_the_completed_message)
{
    uint8_t b[64] = { 0 };
    int p[2];

    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(3, 8, BK_F_OPEN | BK_F_MORE, 32);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 0, &res), 0);
    cr_assert(fd_open(p[0]) && fd_open(p[1]), "held while partial");
    cr_assert_eq(feed(3, 8, BK_F_CONT, b, 32, 0), 1);
    cr_assert_eq(res.out[0].nfds, 2);
    cr_assert_eq(res.out[0].fds[0], p[0]);
    cr_assert_eq(res.out[0].fds[1], p[1]);
    cr_assert(fd_open(p[0]) && fd_open(p[1]), "owned by the caller now");
    bk_reasm_out_release(&res.out[0]);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]));
}

Test(reasm, byte_limit_refuses_then_swallows_the_rest)
{
    uint8_t b[600];

    bk_reasm_fini(&R);
    limits(1000, 1000, 16, 1000, false);
    fill(b, sizeof(b), 5);
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 600, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 600, 0), -EMSGSIZE);
    cr_assert_eq(res.why, BK_REASM_TOO_BIG);
    cr_assert_eq(R.bytes, 0, "refused bytes are freed");
    /* fragments already in flight are dropped silently */
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 600, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT, b, 600, 0), 0);
    /* the key is free again: a further CONT is an orphan */
    cr_assert_eq(feed(1, 1, BK_F_CONT, b, 10, 0), -EPROTO);
    cr_assert_eq(res.why, BK_REASM_ORPHAN_CONT);
    /* and a new message on it works; exactly max_msg is allowed */
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 500, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT, b, 500, 0), 1);
    cr_assert_eq(res.out[0].len, 1000);
    bk_reasm_out_release(&res.out[0]);
}

Test(reasm, oversized_single_fragment_is_refused)
{
    uint8_t b[1500] = { 0 };

    bk_reasm_fini(&R);
    limits(1000, 1000, 16, 1000, false);
    cr_assert_eq(feed(1, 1, BK_F_OPEN | BK_F_CLOSE, b, 1500, 0), -EMSGSIZE);
    cr_assert_eq(res.why, BK_REASM_TOO_BIG);
    cr_assert_eq(bk_reasm_count(&R), 0);
}

Test(reasm, first_fragment_replaces_a_discarding_key)
{
    uint8_t b[800] = { 0 };

    bk_reasm_fini(&R);
    limits(1000, 1000, 16, 1000, false);
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 800, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 800, 0), -EMSGSIZE);
    /* the broker dropped the tail; the sender starts a new message */
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 100, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT, b, 100, 0), 1);
    cr_assert_eq(res.out[0].len, 200);
    bk_reasm_out_release(&res.out[0]);
}

Test(reasm, fragment_count_limit)
{
    uint8_t b[1] = { 0 };

    bk_reasm_fini(&R);
    limits(1 << 20, 4, 16, 1000, false);
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 1, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 0, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 0, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 0, 0), 0);
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 0, 0), -EMSGSIZE);
    cr_assert_eq(res.why, BK_REASM_TOO_BIG);
}

Test(reasm, partial_count_limit)
{
    uint8_t b[10] = { 0 };
    int p[2];

    bk_reasm_fini(&R);
    limits(1 << 20, 1000, 2, 1000, false);
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(1, 2, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(2, 1, BK_F_MORE, 10);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 0, &res), -ENOBUFS);
    cr_assert_eq(res.why, BK_REASM_TOO_MANY);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]));
    cr_assert_eq(bk_reasm_count(&R), 2);
    /* its tail is swallowed, not a protocol error */
    cr_assert_eq(feed(2, 1, BK_F_CONT, b, 10, 0), 0);
    /* single-fragment messages need no slot */
    cr_assert_eq(feed(3, 1, 0, b, 10, 0), 1);
    /* finishing one frees a slot */
    cr_assert_eq(feed(1, 1, BK_F_CONT, b, 10, 0), 1);
    bk_reasm_out_release(&res.out[0]);
    cr_assert_eq(feed(2, 2, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_count(&R), 2);
}

struct expired {
    unsigned n;
    uint64_t source;
    uint32_t stream;
};

static void on_expired(void *ud, uint64_t source, uint32_t stream)
{
    struct expired *e = ud;

    e->n++;
    e->source = source;
    e->stream = stream;
}

Test(reasm, expiry)
{
    uint8_t b[10] = { 0 };
    struct expired e = { 0 };
    uint64_t when;
    int p[2];

    cr_assert_not(bk_reasm_next_deadline(&R, &when));
    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(6, 4, BK_F_MORE, 10);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 100, &res), 0);
    cr_assert_eq(feed(7, 4, BK_F_MORE, b, 10, 200), 0);
    cr_assert(bk_reasm_next_deadline(&R, &when));
    cr_assert_eq(when, 1100);
    /* activity on (6,4) makes (7,4) the oldest */
    cr_assert_eq(feed(6, 4, BK_F_CONT | BK_F_MORE, b, 10, 500), 0);
    cr_assert(bk_reasm_next_deadline(&R, &when));
    cr_assert_eq(when, 1200);
    cr_assert_eq(bk_reasm_expire(&R, 1199, on_expired, &e), 0);
    cr_assert_eq(bk_reasm_expire(&R, 1200, on_expired, &e), 1);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.source, 7);
    cr_assert_eq(e.stream, 4);
    cr_assert_eq(bk_reasm_count(&R), 1);
    cr_assert(fd_open(p[0]) && fd_open(p[1]));
    /* late fragments of the expired message are swallowed */
    cr_assert_eq(feed(7, 4, BK_F_CONT | BK_F_MORE, b, 10, 1300), 0);
    cr_assert_eq(bk_reasm_expire(&R, 1500, on_expired, &e), 1);
    cr_assert_eq(e.source, 6);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]), "expiry closes fds");
    cr_assert_eq(bk_reasm_count(&R), 0);
    /* discarding entries vanish silently after another idle period */
    cr_assert_eq(bk_reasm_expire(&R, 5000, on_expired, &e), 0);
    cr_assert_eq(e.n, 2);
    cr_assert_not(bk_reasm_next_deadline(&R, &when));
    cr_assert_eq(feed(7, 4, BK_F_CONT, b, 10, 5000), -EPROTO);
}

Test(reasm, drop_by_source_frees_fds)
{
    uint8_t b[10] = { 0 };
    int p[2], q[2];

    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pipe(q), 0);
    bk_hdr_t h = frag(9, 1, BK_F_OPEN | BK_F_MORE, 10);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 0, &res), 0);
    h.stream = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, q, 0, &res), 0);
    cr_assert_eq(feed(10, 1, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_count(&R), 3);
    cr_assert_eq(bk_reasm_drop_source(&R, 9), 2);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]));
    cr_assert(fd_closed(q[0]) && fd_closed(q[1]));
    cr_assert_eq(bk_reasm_count(&R), 1);
    cr_assert_eq(feed(9, 1, BK_F_CONT, b, 10, 0), -EPROTO);
    cr_assert_eq(feed(10, 1, BK_F_CONT, b, 10, 0), 1);
}

Test(reasm, drop_by_stream)
{
    uint8_t b[10] = { 0 };
    int p[2];

    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(9, 5, BK_F_MORE, 10);
    h.nfds = 1;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 0, &res), 0);
    cr_assert_eq(feed(8, 5, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(8, 6, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_drop_stream(&R, 9, 5), 1);
    cr_assert(fd_closed(p[0]));
    cr_assert(fd_open(p[1]));
    close(p[1]);
    /* source 0 matches any source */
    cr_assert_eq(bk_reasm_drop_stream(&R, 0, 5), 1);
    cr_assert_eq(bk_reasm_count(&R), 1);
    cr_assert_eq(bk_reasm_drop_stream(&R, 0, 6), 1);
    cr_assert_eq(bk_reasm_count(&R), 0);
}

Test(reasm, fini_closes_fds_of_partials)
{
    uint8_t b[10] = { 0 };
    int p[2];

    cr_assert_eq(pipe(p), 0);
    bk_hdr_t h = frag(1, 1, BK_F_MORE, 10);
    h.nfds = 2;
    cr_assert_eq(bk_reasm_feed(&R, &h, b, p, 0, &res), 0);
    bk_reasm_fini(&R);
    cr_assert(fd_closed(p[0]) && fd_closed(p[1]));
    setup_default();
}

Test(reasm, chunked_delivery)
{
    enum { LEN = 10000, STEP = 700, MAX = 2000 };
    uint8_t buf[LEN], got[LEN];
    size_t off = 0, have = 0;
    unsigned chunks = 0;
    int p[2];

    bk_reasm_fini(&R);
    limits(MAX, 1000, 16, 1000, true);
    fill(buf, LEN, 6);
    cr_assert_eq(pipe(p), 0);
    while (off < LEN) {
        size_t n = LEN - off < STEP ? LEN - off : STEP;
        uint8_t fl = off ? BK_F_CONT : BK_F_OPEN;
        bk_hdr_t h;
        int rc;

        fl |= off + n < LEN ? BK_F_MORE : BK_F_CLOSE;
        h = frag(2, 3, fl, n);
        if (!off)
            h.nfds = 1;
        rc = bk_reasm_feed(&R, &h, buf + off, off ? NULL : p, 0, &res);
        off += n;
        cr_assert_geq(rc, 0);
        for (int i = 0; i < rc; i++) {
            bk_reasm_out_t *o = &res.out[i];
            bool last = off == LEN && i == rc - 1;

            cr_assert(o->flags & BK_REASM_CHUNK);
            cr_assert_leq(o->len, MAX);
            cr_assert_eq(!!(o->flags & BK_REASM_OPEN), chunks == 0);
            cr_assert_eq(o->nfds, chunks == 0 ? 1u : 0u);
            cr_assert_eq(!!(o->flags & BK_REASM_LAST), last);
            cr_assert_eq(!!(o->flags & BK_REASM_CLOSE), last);
            memcpy(got + have, o->data, o->len);
            have += o->len;
            chunks++;
            bk_reasm_out_release(o);
        }
    }
    cr_assert_eq(have, LEN);
    cr_assert_arr_eq(got, buf, LEN);
    cr_assert_geq(chunks, LEN / MAX);
    cr_assert(fd_closed(p[0]), "released with the first chunk");
    close(p[1]);
    cr_assert_eq(bk_reasm_count(&R), 0);
}

Test(reasm, chunked_mode_keeps_small_messages_whole)
{
    uint8_t buf[1500];
    int rc;

    bk_reasm_fini(&R);
    limits(2000, 1000, 16, 1000, true);
    fill(buf, sizeof(buf), 7);
    send_split(1, 1, BK_F_OPEN, BK_F_CLOSE, buf, sizeof(buf), 400, &rc);
    cr_assert_eq(rc, 1);
    cr_assert_eq(res.out[0].flags, BK_REASM_OPEN | BK_REASM_CLOSE);
    cr_assert_eq(res.out[0].len, sizeof(buf));
    cr_assert_arr_eq(res.out[0].data, buf, sizeof(buf));
    bk_reasm_out_release(&res.out[0]);
}

/* ---- the partial messages' total (max_bytes) ------------------------------ */

static void limits_total(uint64_t max_msg, uint64_t max_bytes, bool chunked)
{
    bk_reasm_limits_t l = {
        .max_msg = max_msg, .max_frags = 100000, .max_partial = 16,
        .timeout_ms = 1000, .chunked = chunked, .max_bytes = max_bytes,
    };

    bk_reasm_fini(&R);
    bk_reasm_init(&R, &l);
}

Test(reasm, total_refuses_the_message_that_passes_it_and_keeps_the_other)
{
    enum { LEN = 20000, STEP = 1000, TOTAL = 24576 };
    static uint8_t a[LEN], b[LEN];
    bool b_refused = false;
    int rc;

    limits_total(1 << 20, TOTAL, false);
    fill(a, LEN, 11);
    fill(b, LEN, 12);
    /* A and B interleaved, fragment by fragment: together they would
     * need more than TOTAL, each alone fits */
    for (size_t off = 0; off < LEN; off += STEP) {
        uint8_t fl = off ? BK_F_CONT : BK_F_OPEN;

        fl |= off + STEP < LEN ? BK_F_MORE : BK_F_CLOSE;
        rc = feed(1, 1, fl, a + off, STEP, 0);
        cr_assert_eq(rc, off + STEP < LEN ? 0 : 1, "A at %zu: %d", off, rc);
        cr_assert_leq(bk_reasm_alloc(&R), TOTAL);
        if (rc == 1)
            break;
        rc = feed(2, 1, fl, b + off, STEP, 0);
        if (rc == -ENOBUFS) {
            cr_assert_not(b_refused, "refused once, then swallowed");
            cr_assert_eq(res.why, BK_REASM_FULL);
            b_refused = true;
        } else {
            cr_assert_eq(rc, 0, "B at %zu: %d", off, rc);
        }
        cr_assert_leq(bk_reasm_alloc(&R), TOTAL);
    }
    cr_assert(b_refused, "B never passed the total");
    cr_assert_eq(res.nout, 1);
    cr_assert_eq(res.out[0].source, 1);
    cr_assert_eq(res.out[0].len, LEN);
    cr_assert_arr_eq(res.out[0].data, a, LEN);
    bk_reasm_out_release(&res.out[0]);
    cr_assert_eq(bk_reasm_alloc(&R), 0);
    cr_assert_eq(R.bytes, 0);
    cr_assert_eq(bk_reasm_count(&R), 0, "B's key is only discarding");
    cr_assert_eq(R.ndiscard, 1);
    /* B's last fragment is swallowed and ends the discarding */
    cr_assert_eq(feed(2, 1, BK_F_CONT, b, 10, 0), 0);
    cr_assert_eq(R.ndiscard, 0);
    cr_assert_eq(feed(2, 1, BK_F_CONT, b, 10, 0), -EPROTO);
    cr_assert_eq(res.why, BK_REASM_ORPHAN_CONT);
}

Test(reasm, total_counts_allocation_and_room_comes_back)
{
    uint8_t b[3000];

    limits_total(1 << 20, 8192, false);
    fill(b, sizeof(b), 13);
    /* a first fragment takes a 4096-byte buffer */
    cr_assert_eq(feed(1, 1, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_alloc(&R), 4096);
    cr_assert_eq(feed(1, 2, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_alloc(&R), 8192);
    /* a third buffer does not fit, even a small one */
    cr_assert_eq(feed(1, 3, BK_F_MORE, b, 10, 0), -ENOBUFS);
    cr_assert_eq(res.why, BK_REASM_FULL);
    cr_assert_eq(bk_reasm_alloc(&R), 8192);
    /* growth within a buffer costs nothing more */
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 3000, 0), 0);
    /* past it does not fit either: stream 1 is refused and freed */
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 3000, 0), -ENOBUFS);
    cr_assert_eq(bk_reasm_alloc(&R), 4096);
    cr_assert_eq(bk_reasm_count(&R), 1);
    /* which leaves room for a new message */
    cr_assert_eq(feed(1, 4, BK_F_MORE, b, 3000, 0), 0);
    cr_assert_eq(feed(1, 4, BK_F_CONT, b, 1000, 0), 1);
    cr_assert_eq(res.out[0].len, 4000);
    bk_reasm_out_release(&res.out[0]);
    /* single-fragment messages are never buffered, so never refused */
    cr_assert_eq(feed(1, 5, BK_F_OPEN | BK_F_CLOSE, b, 3000, 0), 1);
    bk_reasm_out_release(&res.out[0]);
}

Test(reasm, chunked_mode_delivers_early_at_the_total)
{
    enum { LEN = 30000, STEP = 1000, TOTAL = 8192 };
    static uint8_t buf[LEN], got[LEN];
    size_t have = 0;

    limits_total(100000, TOTAL, true);
    fill(buf, LEN, 14);
    /* another partial message holds half of the total */
    cr_assert_eq(feed(7, 9, BK_F_MORE, buf, 4000, 0), 0);
    for (size_t off = 0; off < LEN; off += STEP) {
        uint8_t fl = off ? BK_F_CONT : BK_F_OPEN;
        int rc;

        fl |= off + STEP < LEN ? BK_F_MORE : BK_F_CLOSE;
        rc = feed(1, 1, fl, buf + off, STEP, 0);
        cr_assert_geq(rc, 0, "at %zu: %d (never refused in chunked mode)",
                      off, rc);
        for (int i = 0; i < rc; i++) {
            cr_assert(res.out[i].flags & BK_REASM_CHUNK);
            memcpy(got + have, res.out[i].data, res.out[i].len);
            have += res.out[i].len;
            bk_reasm_out_release(&res.out[i]);
        }
        cr_assert_leq(bk_reasm_alloc(&R), TOTAL);
    }
    cr_assert_eq(have, LEN);
    cr_assert_arr_eq(got, buf, LEN);
    cr_assert_eq(bk_reasm_count(&R), 1, "the other one is still there");
}

/* ---- dropping by stream id ---------------------------------------------- */

Test(reasm, drop_by_stream_of_any_source_takes_every_entry_of_that_id)
{
    uint8_t b[10] = { 0 };

    limits_total(1000, 0, false);
    cr_assert_eq(feed(1, 5, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(2, 5, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(3, 6, BK_F_MORE, b, 10, 0), 0);
    /* a refused message on stream 5 leaves a discarding entry */
    cr_assert_eq(feed(4, 5, BK_F_MORE, b, 10, 0), 0);
    {
        uint8_t big[1200] = { 0 };
        cr_assert_eq(feed(4, 5, BK_F_CONT | BK_F_MORE, big, 1200, 0),
                     -EMSGSIZE);
    }
    cr_assert_eq(bk_reasm_count(&R), 3);
    cr_assert_eq(R.ndiscard, 1);
    cr_assert_eq(bk_reasm_drop_stream(&R, 0, 5), 3);
    cr_assert_eq(R.ndiscard, 0);
    cr_assert_eq(bk_reasm_count(&R), 1);
    cr_assert_eq(bk_reasm_drop_stream(&R, 0, 5), 0);
    cr_assert_eq(bk_reasm_drop_stream(&R, 0, 7), 0);
    /* the id works again, from either path */
    cr_assert_eq(feed(1, 5, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(2, 5, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_drop_stream(&R, 1, 5), 1);
    cr_assert_eq(bk_reasm_drop_stream(&R, 0, 5), 1);
    cr_assert_eq(feed(3, 6, BK_F_CONT, b, 10, 0), 1, "stream 6 untouched");
    bk_reasm_out_release(&res.out[0]);
    cr_assert_eq(R.bysid.count, 0, "no index entry left behind");
}

Test(reasm, drop_by_stream_among_many)
{
    enum { N = 1000 };
    uint8_t b[10] = { 0 };

    bk_reasm_fini(&R);
    limits(1000, 1000, N, 1000, false);
    for (uint32_t sid = 1; sid <= N; sid++)
        cr_assert_eq(feed(sid % 3 + 1, sid, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_count(&R), N);
    for (uint32_t sid = N; sid >= 1; sid -= 2) {
        cr_assert_eq(bk_reasm_drop_stream(&R, 0, sid), 1, "sid %u", sid);
        if (sid < 2)
            break;
    }
    cr_assert_eq(bk_reasm_count(&R), N / 2);
    for (uint32_t sid = 1; sid <= N; sid++) {
        int rc = feed(sid % 3 + 1, sid, BK_F_CONT, b, 10, 0);

        cr_assert_eq(rc, sid % 2 ? 1 : -EPROTO, "sid %u: %d", sid, rc);
        if (rc == 1)
            bk_reasm_out_release(&res.out[0]);
    }
    cr_assert_eq(bk_reasm_count(&R), 0);
    cr_assert_eq(R.bysid.count, 0);
}

/* Discarding entries are as many as max_partial: a new one evicts the
 * one that swallowed a fragment least recently. */
Test(reasm, discarding_entries_evict_the_least_recently_active)
{
    static uint8_t big[1200];
    uint8_t b[10] = { 0 };

    bk_reasm_fini(&R);
    limits(1000, 1000, 2, 0, false);
    for (uint32_t sid = 1; sid <= 2; sid++) {
        cr_assert_eq(feed(1, sid, BK_F_MORE, b, 10, 0), 0);
        cr_assert_eq(feed(1, sid, BK_F_CONT | BK_F_MORE, big, 1200, 0),
                     -EMSGSIZE);
    }
    cr_assert_eq(R.ndiscard, 2);
    /* stream 1 swallows a fragment: now stream 2 is the oldest */
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(1, 3, BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(1, 3, BK_F_CONT | BK_F_MORE, big, 1200, 0), -EMSGSIZE);
    cr_assert_eq(R.ndiscard, 2);
    cr_assert_eq(feed(1, 2, BK_F_CONT | BK_F_MORE, b, 10, 0), -EPROTO,
                 "stream 2 was evicted");
    cr_assert_eq(feed(1, 1, BK_F_CONT | BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(feed(1, 3, BK_F_CONT | BK_F_MORE, b, 10, 0), 0);
    cr_assert_eq(bk_reasm_count(&R), 0);
}
