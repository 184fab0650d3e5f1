/*
 * test_router.c - the router's tombstones, through the port double: a
 * message whose stream died while it was being sent leaves a tombstone
 * that swallows the rest of its fragments, and a last fragment or a CLOSE
 * frees it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include "error.h"
#include "port_double.h"
#include "router.h"

static dbl_world_t *w;
static bk_port_t *a, *b;        /* a sends to b */

static void setup(void)
{
    w = dbl_world_new();
    a = dbl_port_new(w, 1);
    b = dbl_port_new(w, 2);
    cr_assert_eq(bk_names_register(&w->srv.names, "svc.b", 5, b->id,
                                   &b->names, 16, 0, 0, &(uint32_t){ 0 }),
                 0);
}

static void teardown(void)
{
    dbl_world_free(w);
}

TestSuite(router, .init = setup, .fini = teardown);

/* ---- helpers ---------------------------------------------------------- */

/* A DATA fragment from `from` on its stream `sid`, to client id `dest`. */
static void data(bk_port_t *from, uint32_t sid, uint8_t flags, uint64_t dest)
{
    static const char payload[] = "fragment";
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA, .flags = flags,
        .length = sizeof(payload) - 1, .stream = sid, .dest = dest,
    };

    bk_router_frame(from, &h, (const uint8_t *)payload, NULL, 0);
}

/* A DATA fragment opening a stream to a well-known name. */
static void data_to_name(bk_port_t *from, uint32_t sid, uint8_t flags,
                         const char *name)
{
    uint8_t payload[64];
    size_t n = strlen(name);
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = flags | BK_F_NAME, .aux = (uint32_t)n,
        .length = (uint32_t)n + 4, .stream = sid,
    };

    memcpy(payload, name, n);
    memcpy(payload + n, "body", 4);
    bk_router_frame(from, &h, payload, NULL, 0);
}

static void close_from(bk_port_t *from, uint32_t sid)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_CLOSE, .stream = sid,
    };

    bk_router_frame(from, &h, (const uint8_t *)"", NULL, 0);
}

static unsigned data_frames_to(const bk_port_t *to)
{
    unsigned n = 0;
    const dbl_frame_t *f;

    for (unsigned i = 0; (f = dbl_nth(w, to, i)); i++)
        n += f->h.type == BK_T_DATA;
    return n;
}

/* b's id for the stream a opened: from the first DATA b got. */
static uint32_t b_sid(void)
{
    const dbl_frame_t *f = dbl_nth(w, b, 0);

    cr_assert_not_null(f);
    cr_assert_eq(f->h.type, BK_T_DATA);
    return f->h.stream;
}

static void assert_no_streams(void)
{
    cr_assert_eq(w->srv.streams.streams, 0, "%llu streams left",
                 (unsigned long long)w->srv.streams.streams);
    cr_assert_eq(a->streams.count, 0);
    cr_assert_eq(b->streams.count, 0);
}

static void assert_healthy(void)
{
    cr_assert_not(a->failed, "the sender was cut off");
    cr_assert_not(b->failed, "the receiver was cut off");
}

/* ---- a stream closed by its receiver mid-message --------------------------- */

/* a is halfway through a message on stream 3 when b closes the stream. */
static void receiver_closes_mid_message(void)
{
    data(a, 3, BK_F_OPEN | BK_F_MORE, b->id);
    data(a, 3, BK_F_CONT | BK_F_MORE, b->id);
    cr_assert_eq(data_frames_to(b), 2);
    close_from(b, b_sid());
    cr_assert_eq(dbl_count(w, a), 1);
    cr_assert_eq(dbl_nth(w, a, 0)->h.type, BK_T_CLOSE, "a hears the close");
    cr_assert_eq(dbl_nth(w, a, 0)->h.stream, 3);
    dbl_clear(w);
}

Test(router, the_rest_of_a_message_whose_receiver_closed_is_swallowed)
{
    receiver_closes_mid_message();
    cr_assert_not_null(bk_st_find(&w->srv.streams, a->id, 3),
                       "a tombstone stands for a's unfinished message");
    for (int i = 0; i < 5; i++)
        data(a, 3, BK_F_CONT | BK_F_MORE, b->id);
    cr_assert_eq(dbl_count(w, NULL), 0,
                 "no fragment reaches b and a hears nothing more");
    data(a, 3, BK_F_CONT, b->id);               /* the last fragment */
    cr_assert_eq(dbl_count(w, NULL), 0);
    assert_no_streams();
    assert_healthy();
}

Test(router, a_close_instead_of_the_last_fragment_frees_the_tombstone)
{
    receiver_closes_mid_message();
    data(a, 3, BK_F_CONT | BK_F_MORE, b->id);
    close_from(a, 3);
    cr_assert_eq(dbl_count(w, NULL), 0, "b never hears of it");
    assert_no_streams();
    assert_healthy();
}

Test(router, once_the_tombstone_is_gone_the_stream_id_is_free_again)
{
    receiver_closes_mid_message();
    data(a, 3, BK_F_CONT, b->id);
    data(a, 3, BK_F_OPEN | BK_F_MORE, b->id);
    cr_assert_eq(data_frames_to(b), 1, "a new stream 3 reaches b");
    cr_assert_eq(dbl_count(w, a), 0, "without an error for a");
    assert_healthy();
}

Test(router, a_fragment_after_the_tombstone_is_gone_is_a_protocol_error)
{
    receiver_closes_mid_message();
    data(a, 3, BK_F_CONT, b->id);
    data(a, 3, BK_F_CONT, b->id);
    cr_assert(a->failed);
    cr_assert_eq(a->fail_err, -EPROTO);
    cr_assert_eq(dbl_nth(w, a, 0)->h.type, BK_T_ERROR);
    cr_assert_eq(bk_err_from_wire(dbl_nth(w, a, 0)->h.aux), -EPROTO);
}

/* ---- a receiver that disconnects mid-message ------------------------------ */

Test(router, a_receiver_gone_mid_message_leaves_a_tombstone)
{
    data(a, 3, BK_F_OPEN | BK_F_MORE, b->id);
    dbl_clear(w);
    dbl_port_gone(w, b);
    cr_assert_eq(dbl_count(w, a), 1);
    cr_assert_eq(dbl_nth(w, a, 0)->h.type, BK_T_ERROR);
    cr_assert_eq(bk_err_from_wire(dbl_nth(w, a, 0)->h.aux), -ECONNRESET);
    dbl_clear(w);
    data(a, 3, BK_F_CONT | BK_F_MORE, b->id);
    data(a, 3, BK_F_CONT, b->id);
    cr_assert_eq(dbl_count(w, NULL), 0);
    cr_assert_eq(w->srv.streams.streams, 0);
    cr_assert_not(a->failed);
}

/* ---- a message refused at its first fragment ------------------------------- */

Test(router, a_refused_message_is_reported_once_and_swallowed)
{
    data_to_name(a, 5, BK_F_OPEN | BK_F_MORE, "nobody.here");
    cr_assert_eq(dbl_count(w, a), 1);
    cr_assert_eq(dbl_nth(w, a, 0)->h.type, BK_T_ERROR);
    cr_assert_eq(dbl_nth(w, a, 0)->h.stream, 5);
    cr_assert_eq(bk_err_from_wire(dbl_nth(w, a, 0)->h.aux), -ENOENT);
    dbl_clear(w);
    data(a, 5, BK_F_CONT | BK_F_MORE, 0);
    data(a, 5, BK_F_CONT, 0);
    cr_assert_eq(dbl_count(w, NULL), 0, "one error, not one per fragment");
    assert_no_streams();
    assert_healthy();
}

Test(router, a_refused_whole_message_leaves_no_tombstone)
{
    data_to_name(a, 5, BK_F_OPEN | BK_F_CLOSE, "nobody.here");
    cr_assert_eq(dbl_count(w, a), 1);
    assert_no_streams();
}

Test(router, a_message_to_a_name_reaches_its_owner)
{
    data_to_name(a, 5, BK_F_OPEN | BK_F_MORE, "svc.b");
    cr_assert_eq(data_frames_to(b), 1);
    cr_assert_eq(dbl_nth(w, b, 0)->h.source, a->id);
    cr_assert_eq(dbl_count(w, a), 0);
}

Test(router, too_many_refused_messages_in_flight_cut_the_sender_off)
{
    /* tombstones may exceed max_streams by a factor of two */
    for (uint32_t sid = 1; sid <= 2 * w->cfg.max_streams; sid++)
        data_to_name(a, sid, BK_F_OPEN | BK_F_MORE, "nobody.here");
    cr_assert_not(a->failed);
    cr_assert_eq(a->streams.count, 2 * w->cfg.max_streams);
    data_to_name(a, 100, BK_F_OPEN | BK_F_MORE, "nobody.here");
    cr_assert(a->failed);
    cr_assert_eq(a->fail_err, -ENOSR);
}

/* ---- a fragment the broker cannot queue ------------------------------------ */

/* The frames of type `type` logged for `to`, the n-th of them. */
static const dbl_frame_t *nth_of(const bk_port_t *to, uint8_t type,
                                 unsigned n)
{
    const dbl_frame_t *f;

    for (unsigned i = 0; (f = dbl_nth(w, to, i)); i++)
        if (f->h.type == type && n-- == 0)
            return f;
    return NULL;
}

/* A middle fragment lost for lack of memory would leave b to join the
 * rest into a corrupt message: both ends hear ENOMEM instead, and the
 * rest of a's message is swallowed. */
Test(router, a_fragment_that_cannot_be_queued_resets_the_stream)
{
    const dbl_frame_t *f;
    uint32_t sid;

    data(a, 3, BK_F_OPEN | BK_F_MORE, b->id);
    sid = b_sid();
    w->fail_to = b;
    data(a, 3, BK_F_CONT | BK_F_MORE, b->id);
    f = nth_of(a, BK_T_ERROR, 0);
    cr_assert_not_null(f, "the sender is told");
    cr_assert_eq(f->h.stream, 3);
    cr_assert_eq(f->h.aux, ENOMEM);
    f = nth_of(b, BK_T_CLOSE, 0);
    cr_assert_not_null(f, "the receiver sees the stream end");
    cr_assert_eq(f->h.stream, sid);
    cr_assert_eq(f->h.aux, ENOMEM);
    dbl_clear(w);
    data(a, 3, BK_F_CONT | BK_F_MORE, b->id);
    data(a, 3, BK_F_CONT | BK_F_CLOSE, b->id);
    cr_assert_eq(dbl_count(w, NULL), 0, "the rest is swallowed");
    assert_no_streams();
    assert_healthy();
}

/* The first fragment lost: b never heard of the stream and hears
 * nothing; a hears ENOMEM and its later fragments are swallowed. */
Test(router, a_first_fragment_that_cannot_be_queued_is_refused)
{
    const dbl_frame_t *f;

    w->fail_to = b;
    data(a, 3, BK_F_OPEN | BK_F_MORE, b->id);
    cr_assert_eq(dbl_count(w, b), 0, "%u frames to b", dbl_count(w, b));
    f = nth_of(a, BK_T_ERROR, 0);
    cr_assert_not_null(f);
    cr_assert_eq(f->h.aux, ENOMEM);
    dbl_clear(w);
    data(a, 3, BK_F_CONT | BK_F_CLOSE, b->id);
    cr_assert_eq(dbl_count(w, NULL), 0);
    assert_no_streams();
    assert_healthy();
}

/* A whole one-way message that cannot be queued is refused to its
 * sender, not lost in silence. */
Test(router, a_oneway_message_that_cannot_be_queued_is_refused)
{
    const dbl_frame_t *f;

    w->fail_to = b;
    data(a, 5, BK_F_OPEN | BK_F_CLOSE, b->id);
    cr_assert_eq(dbl_count(w, b), 0);
    f = nth_of(a, BK_T_ERROR, 0);
    cr_assert_not_null(f);
    cr_assert_eq(f->h.stream, 5);
    cr_assert_eq(f->h.aux, ENOMEM);
    assert_no_streams();
    assert_healthy();
}

/* A one-way message whose receiver's socket failed as it was written is
 * reported lost, with ECONNRESET from that receiver. */
Test(router, a_oneway_message_to_a_failing_receiver_is_reported)
{
    const dbl_frame_t *f;

    w->fail_to = b;
    w->fail_err = -EPIPE;
    data(a, 5, BK_F_OPEN | BK_F_CLOSE, b->id);
    f = nth_of(a, BK_T_ERROR, 0);
    cr_assert_not_null(f);
    cr_assert_eq(f->h.stream, 5);
    cr_assert_eq(f->h.aux, ECONNRESET);
    cr_assert_eq(f->h.source, b->id);
}

/* ---- flow control: a full receiver (port.h) ------------------------------ */

/* A message queued for a busy receiver tells a FLOW sender so, with the
 * name it was addressed by (or none when addressed by id); a sender
 * without FLOW is not told. */
Test(router, a_message_queued_for_a_busy_receiver_tells_the_sender)
{
    const dbl_frame_t *f;

    a->flow = true;
    data_to_name(a, 5, BK_F_OPEN | BK_F_CLOSE, "svc.b");
    cr_assert_null(nth_of(a, BK_T_FLOW, 0), "not busy: nothing said");
    w->busy = b;
    data_to_name(a, 7, BK_F_OPEN | BK_F_CLOSE, "svc.b");
    cr_assert_eq(data_frames_to(b), 2, "queued all the same");
    f = nth_of(a, BK_T_FLOW, 0);
    cr_assert_not_null(f);
    cr_assert_eq(f->h.aux, BK_FLOW_BUSY);
    cr_assert_eq(f->h.source, b->id);
    cr_assert_eq(f->h.stream, 7, "the sender's stream");
    cr_assert_eq(f->h.length, 5);
    cr_assert_arr_eq(f->payload, "svc.b", 5);
    data(a, 9, BK_F_OPEN | BK_F_CLOSE, b->id);
    f = nth_of(a, BK_T_FLOW, 1);
    cr_assert_not_null(f);
    cr_assert_eq(f->h.length, 0, "by id: no name");
    a->flow = false;
    data_to_name(a, 11, BK_F_OPEN | BK_F_CLOSE, "svc.b");
    cr_assert_null(nth_of(a, BK_T_FLOW, 2), "no FLOW for a sender "
                   "without it");
    assert_no_streams();
    assert_healthy();
}
