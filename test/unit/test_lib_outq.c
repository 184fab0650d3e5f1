/*
 * test_outq.c - libbroker's output layer (src/lib/outq.c) on its own:
 * a handle made of the socket and connection layers only (io.c, conn.c)
 * on one end of a socketpair, the packets read back from the other end.
 *
 * Checks what the stager promises: library frames first, then RELEASE
 * records (coalesced, packed into one frame), then one frame per stream
 * in turn; the byte accounting of broker_pending; and the hooks it calls
 * up (drained, unsent) instead of calling the layers above.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "outq.h"

static broker_t *b;
static int peer = -1;
static unsigned drained, unsent;
static struct bk_outq *last_drained;

/* The hooks of the input layer, which is not linked: nothing to read,
 * never a watched stream, and no waiting (the tests never fill the
 * socket). */
static int stub_pump(struct bk_io *io, unsigned budget)
{
    return 0;
}

static int stub_wait(struct bk_io *io, bool want_write, int64_t deadline)
{
    return -ETIMEDOUT;
}

static bool stub_aborted(const struct bk_io *io)
{
    return false;
}

static const struct bk_io_hooks stub_io_hooks = {
    .pump = stub_pump, .wait = stub_wait, .aborted = stub_aborted,
};

static void on_drained(broker_t *h, struct bk_outq *q)
{
    drained++;
    last_drained = q;
}

static void on_unsent(broker_t *h, struct bk_sbuf *sb)
{
    unsent++;
}

static const struct bk_out_hooks test_out_hooks = {
    .drained = on_drained, .unsent = on_unsent,
};

static void setup(void)
{
    int sv[2];

    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
                            SOCK_CLOEXEC, 0, sv), 0);
    b = bk_conn_new(sv[0]);
    cr_assert_not_null(b);
    b->io.hooks = &stub_io_hooks;
    cr_assert_eq(bk_out_init(b), 0);
    bk_out_set_hooks(b, &test_out_hooks);
    peer = sv[1];
    drained = unsent = 0;
    last_drained = NULL;
}

static void teardown(void)
{
    bk_out_fini(b);
    bk_conn_free(b);
    close(peer);
}

TestSuite(outq, .init = setup, .fini = teardown);

/* Read one packet from the peer and split it into its frames. */
#define MAX_FRAMES 16
struct packet {
    uint8_t buf[BK_MIN_MAX_PACKET];
    size_t len;
    unsigned n;
    bk_hdr_t h[MAX_FRAMES];
    const uint8_t *p[MAX_FRAMES];
};

static void read_packet(struct packet *pk)
{
    unsigned nfds = 0;
    int fds[BK_MAX_FDS_HARD];
    ssize_t len = bk_sock_recv(peer, pk->buf, sizeof(pk->buf), fds, &nfds,
                               BK_MAX_FDS_HARD);
    size_t off = 0;

    cr_assert_gt(len, 0, "no packet (%zd)", len);
    pk->len = (size_t)len;
    pk->n = 0;
    while (pk->n < MAX_FRAMES &&
           bk_pkt_next(pk->buf, pk->len, &off, &pk->h[pk->n],
                       &pk->p[pk->n]) == 1)
        pk->n++;
    cr_assert_eq(off, pk->len, "trailing bytes in the packet");
}

static void no_packet(void)
{
    uint8_t buf[64];
    unsigned nfds = 0;
    int fds[BK_MAX_FDS_HARD];

    cr_assert_eq(bk_sock_recv(peer, buf, sizeof(buf), fds, &nfds,
                              BK_MAX_FDS_HARD), -EAGAIN);
}

static void queue_flags(struct bk_outq *q, uint32_t sid, uint8_t flags,
                        const char *text)
{
    struct bk_omsg *m;

    cr_assert_eq(bk_out_copy(BK_T_DATA, flags, sid, 0, 7, NULL, 0, text,
                             strlen(text), NULL, 0, &m), 0);
    bk_out_push(b, q, m);
}

/* A message on an open stream (a call's request, a stream write). */
static void queue_stream(struct bk_outq *q, uint32_t sid, const char *text)
{
    queue_flags(q, sid, BK_F_OPEN, text);
}

/* A whole one-way message. */
static void queue_data(struct bk_outq *q, uint32_t sid, const char *text)
{
    queue_flags(q, sid, BK_F_OPEN | BK_F_CLOSE, text);
}

Test(outq, one_frame_per_stream_in_turn)
{
    struct bk_outq q1, q2;
    struct packet pk;

    bk_outq_init(&q1);
    bk_outq_init(&q2);
    queue_stream(&q1, 1, "a1");
    queue_stream(&q1, 1, "a2");
    queue_stream(&q2, 2, "b1");
    cr_assert(bk_out_pending(b));
    cr_assert_eq(bk_out_backlog(b), 6);
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    cr_assert_not(bk_out_pending(b));
    cr_assert_eq(bk_out_backlog(b), 0);
    read_packet(&pk);
    cr_assert_eq(pk.n, 3);
    cr_assert_eq(pk.h[0].stream, 1);
    cr_assert_eq(pk.h[1].stream, 2);
    cr_assert_eq(pk.h[2].stream, 1);
    cr_assert_eq(memcmp(pk.p[0], "a1", 2), 0);
    cr_assert_eq(memcmp(pk.p[1], "b1", 2), 0);
    cr_assert_eq(memcmp(pk.p[2], "a2", 2), 0);
    cr_assert_eq(pk.h[0].dest, 7);
    cr_assert(q1.wire && q2.wire);
    cr_assert_not(bk_list_linked(&q1.ring));
    cr_assert_not(bk_list_linked(&q2.ring));
    no_packet();
}

/* One-way messages do not take turns: each queue of one goes out whole,
 * in the order they were queued, while stream queues keep their turns. */
Test(outq, one_way_messages_leave_in_order)
{
    struct bk_outq q1, q2, q3;
    struct packet pk;

    bk_outq_init(&q1);
    bk_outq_init(&q2);
    bk_outq_init(&q3);
    queue_data(&q1, 1, "o1");
    queue_stream(&q3, 3, "s1");
    queue_data(&q2, 2, "o2");
    queue_stream(&q3, 3, "s2");
    cr_assert(q1.oneway && q2.oneway && !q3.oneway);
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    read_packet(&pk);
    cr_assert_eq(pk.n, 4);
    /* o1 and s1 take their turns; o2 waits for o1, then s2 */
    cr_assert_eq(memcmp(pk.p[0], "o1", 2), 0);
    cr_assert_eq(memcmp(pk.p[1], "s1", 2), 0);
    cr_assert_eq(memcmp(pk.p[2], "o2", 2), 0);
    cr_assert_eq(memcmp(pk.p[3], "s2", 2), 0);
    cr_assert_not(bk_list_linked(&q1.ring));
    cr_assert_not(bk_list_linked(&q2.ring));
    cr_assert_not(bk_list_linked(&q3.ring));
    no_packet();
}

/* Packing does not cut a message that fits a packet of its own. */
Test(outq, packing_keeps_small_messages_whole)
{
    static char big[3000];
    struct bk_outq q1, q2;
    struct packet pk;

    memset(big, 'x', sizeof(big) - 1);
    bk_outq_init(&q1);
    bk_outq_init(&q2);
    queue_data(&q1, 1, big);
    queue_data(&q2, 2, big);
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    read_packet(&pk);
    cr_assert_eq(pk.n, 1, "a 4 KiB packet holds one 3 KB message");
    cr_assert_eq(pk.h[0].flags & (BK_F_MORE | BK_F_CONT), 0);
    read_packet(&pk);
    cr_assert_eq(pk.n, 1);
    cr_assert_eq(pk.h[0].stream, 2);
    cr_assert_eq(pk.h[0].flags & (BK_F_MORE | BK_F_CONT), 0,
                 "the second went whole in a packet of its own");
    no_packet();
}

Test(outq, without_all_only_library_frames_go)
{
    struct bk_outq q;
    struct packet pk;

    bk_outq_init(&q);
    queue_data(&q, 5, "data");
    cr_assert_eq(bk_out_queue_close(b, 9, -EPIPE, NULL), 0);
    cr_assert_eq(bk_out_flush(b, false, 8), 0);
    read_packet(&pk);
    cr_assert_eq(pk.n, 1);
    cr_assert_eq(pk.h[0].type, BK_T_CLOSE);
    cr_assert_eq(pk.h[0].stream, 9);
    cr_assert_eq(pk.h[0].aux, EPIPE, "the wire carries the errno positive");
    no_packet();
    cr_assert(bk_out_pending(b), "the stream's data still waits");
    bk_out_drop(b, &q);
    cr_assert_not(bk_out_pending(b));
    cr_assert_eq(bk_out_backlog(b), 0);
}

Test(outq, urgent_then_releases_then_streams)
{
    struct bk_outq q;
    struct packet pk;

    bk_outq_init(&q);
    queue_data(&q, 3, "x");
    bk_out_release(b, 42, 1, 65536);
    bk_out_release(b, 43, 2, 0);
    bk_out_release(b, 42, 1, 65536);     /* a twin: counted, not added */
    cr_assert(bk_out_release_pending(b));
    cr_assert_eq(bk_out_queue_terminator(b, 8, BK_F_CLOSE), 0);
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    cr_assert_not(bk_out_release_pending(b));
    read_packet(&pk);
    cr_assert_eq(pk.n, 3);
    cr_assert_eq(pk.h[0].type, BK_T_DATA);
    cr_assert_eq(pk.h[0].stream, 8);
    cr_assert_eq(pk.h[0].length, 0);
    cr_assert_eq(pk.h[0].flags, BK_F_CONT | BK_F_CLOSE);
    cr_assert_eq(pk.h[1].type, BK_T_RELEASE);
    cr_assert_eq(pk.h[1].length, 2 * BK_RELEASE_SIZE);
    cr_assert_eq(bk_get64(pk.p[1]), 42);
    cr_assert_eq(bk_get32(pk.p[1] + 8), 1);
    cr_assert_eq(bk_get32(pk.p[1] + 12), 2);
    cr_assert_eq(bk_get64(pk.p[1] + 16), 65536);
    cr_assert_eq(bk_get64(pk.p[1] + BK_RELEASE_SIZE), 43);
    cr_assert_eq(bk_get32(pk.p[1] + BK_RELEASE_SIZE + 12), 1);
    cr_assert_eq(pk.h[2].type, BK_T_DATA);
    cr_assert_eq(pk.h[2].stream, 3);
}

Test(outq, a_closing_queue_is_reported_once_drained)
{
    struct bk_outq q;
    struct packet pk;

    bk_outq_init(&q);
    queue_data(&q, 4, "last");
    cr_assert_eq(bk_out_queue_close(b, 4, 0, &q), 0);
    q.closing = true;
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    cr_assert_eq(drained, 1);
    cr_assert_eq(last_drained, &q);
    read_packet(&pk);
    cr_assert_eq(pk.n, 2);
    cr_assert_eq(pk.h[0].type, BK_T_DATA);
    cr_assert_eq(pk.h[1].type, BK_T_CLOSE);
    cr_assert_eq(pk.h[1].aux, 0);
}

Test(outq, a_dropped_descriptor_goes_back_unsent)
{
    struct bk_outq q;
    struct bk_omsg *m;

    bk_outq_init(&q);
    cr_assert_eq(bk_out_copy(BK_T_DATA, BK_F_OPEN | BK_F_SHM, 6, 0, 7, NULL,
                             0, "desc", 4, NULL, 0, &m), 0);
    m->shm = (struct bk_sbuf *)&q;      /* only compared, never used */
    bk_out_push(b, &q, m);
    bk_out_drop(b, &q);
    cr_assert_eq(unsent, 1);
    cr_assert_not(bk_out_pending(b));
}

Test(outq, a_staged_descriptor_travels_with_its_frame)
{
    struct bk_outq q;
    struct bk_omsg *m;
    struct packet pk;

    bk_outq_init(&q);
    cr_assert_eq(bk_out_copy(BK_T_DATA, BK_F_OPEN | BK_F_SHM, 6, 0, 7, NULL,
                             0, "desc", 4, NULL, 0, &m), 0);
    m->shm = (struct bk_sbuf *)&q;
    bk_out_push(b, &q, m);
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    cr_assert_eq(unsent, 0);
    read_packet(&pk);
    cr_assert_eq(pk.n, 1);
    cr_assert(pk.h[0].flags & BK_F_SHM);
}

Test(outq, the_control_request_is_out_once_written)
{
    struct packet pk;

    cr_assert_eq(bk_out_queue_ctrl(b, 11, BK_OP_PING, NULL, 0, NULL, 0), 0);
    cr_assert(bk_out_ctrl_queued(b));
    cr_assert_eq(bk_out_flush(b, true, 8), 0);
    cr_assert_not(bk_out_ctrl_queued(b));
    read_packet(&pk);
    cr_assert_eq(pk.n, 1);
    cr_assert_eq(pk.h[0].type, BK_T_CTRL);
    cr_assert_eq(pk.h[0].stream, 11);
    cr_assert_eq(pk.h[0].aux, BK_OP_PING);
}

Test(outq, send_direct_goes_after_library_frames)
{
    uint8_t hdr[BK_HDR_SIZE];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CLOSE,
                   .stream = 21 };
    struct iovec iov = { hdr, sizeof(hdr) };
    struct packet pk;

    bk_hdr_encode(&h, hdr);
    cr_assert_eq(bk_out_queue_close(b, 20, -ECANCELED, NULL), 0);
    cr_assert_eq(bk_out_send_direct(b, &iov, 1, NULL, 0, -1), 0);
    read_packet(&pk);
    cr_assert_eq(pk.h[0].stream, 20);
    read_packet(&pk);
    cr_assert_eq(pk.h[0].stream, 21);
    no_packet();
}
