/*
 * test_outq.c - the daemon's output queue without a socket: order of
 * service (control first, streams round-robin, one-way messages in
 * order), packing of small frames into packets, fds travelling with their
 * frame, the byte/frame accounting, that dropping a queue closes the
 * fds in it, and bodies (shared-memory messages read out for a receiver
 * without shm) going out as fragments in their stream's turn.
 *
 * "Writing" a packet here is what port.c does with a socket: gather the
 * next packet, read what its iovec holds, consume it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create */
#endif
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "frame.h"
#include "outq.h"

#define MAX_PACKET 4096u

static bk_outq_t q;

static void setup(void)
{
    bk_outq_init(&q);
}

static void teardown(void)
{
    bk_outq_fini(&q, NULL, NULL);
}

TestSuite(outq, .init = setup, .fini = teardown);

/* ---- helpers ---------------------------------------------------------- */

/* Queue a frame whose payload is `len` bytes starting with the u32 tag. */
static void push(uint8_t type, uint8_t flags, uint32_t stream,
                 uint64_t source, uint32_t len, uint32_t tag, int *fds,
                 unsigned nfds)
{
    static uint8_t payload[2 * MAX_PACKET];
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = type, .flags = flags,
        .nfds = (uint8_t)nfds, .length = len, .stream = stream,
        .source = source, .dest = 9,
    };
    bk_oframe_t *f;

    cr_assert_geq(len, 4);
    memset(payload, 0xab, len);
    bk_put32(payload, tag);
    cr_assert_eq(bk_outq_push(&q, &h, payload, fds, nfds, &f), 0);
    cr_assert_not_null(f);
}

/* A fragment of a stream's message relayed from a peer. */
static void push_data(uint32_t stream, uint32_t len, uint32_t tag)
{
    push(BK_T_DATA, BK_F_MORE, stream, 42, len, tag, NULL, 0);
}

/* A whole one-way message. */
static void push_oneway(uint32_t stream, uint32_t tag)
{
    push(BK_T_DATA, BK_F_OPEN | BK_F_CLOSE, stream, 42, 8, tag, NULL, 0);
}

/* One of the broker's own frames (no stream). */
static void push_ctrl(uint32_t tag)
{
    push(BK_T_CTRL_REPLY, 0, 0, 0, 8, tag, NULL, 0);
}

typedef struct packet {
    unsigned nframes;
    uint32_t tags[BK_OUTQ_PACK_MAX];
    uint32_t streams[BK_OUTQ_PACK_MAX];
    size_t bytes;
    int fds[4];
    unsigned nfds;
} packet_t;

/* Write the next packet of at most max bytes: what the socket would have
 * received. */
static bool write_packet_max(packet_t *out, bk_outq_tally_t *sent,
                             size_t max)
{
    bk_outq_pkt_t pkt;
    bk_outq_tally_t ignored = { 0, 0 };
    unsigned n = bk_outq_gather(&q, max, &pkt);

    memset(out, 0, sizeof(*out));
    if (n == 0)
        return false;
    cr_assert_eq(pkt.niov, 2 * n);
    cr_assert_leq(pkt.nfds, 4);
    out->nframes = n;
    for (unsigned i = 0; i < n; i++) {
        bk_hdr_t h;

        cr_assert_eq(pkt.iov[2 * i].iov_len, BK_HDR_SIZE);
        bk_hdr_decode(pkt.iov[2 * i].iov_base, &h);
        cr_assert_eq(pkt.iov[2 * i + 1].iov_len, h.length);
        out->tags[i] = bk_get32(pkt.iov[2 * i + 1].iov_base);
        out->streams[i] = h.stream;
        out->bytes += BK_HDR_SIZE + h.length;
    }
    if (pkt.nfds)
        memcpy(out->fds, pkt.fds, pkt.nfds * sizeof(int));
    out->nfds = pkt.nfds;
    bk_outq_consume(&q, &pkt, sent ? sent : &ignored);
    return true;
}

static bool write_packet(packet_t *out, bk_outq_tally_t *sent)
{
    return write_packet_max(out, sent, MAX_PACKET);
}

/* Write everything; the tags in the order they reached the socket. */
static unsigned write_all(uint32_t *tags, unsigned max)
{
    packet_t p;
    unsigned n = 0;

    while (write_packet(&p, NULL))
        for (unsigned i = 0; i < p.nframes; i++) {
            cr_assert_lt(n, max);
            tags[n++] = p.tags[i];
        }
    return n;
}

static void assert_tags(const uint32_t *got, unsigned n, const uint32_t *want,
                        unsigned nwant)
{
    cr_assert_eq(n, nwant, "%u frames written, %u expected", n, nwant);
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "frame %u: tag %u, expected %u", i,
                     got[i], want[i]);
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static void make_pipe(int fds[2])
{
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
}

/* Larger than half a packet: never two of these in one packet. */
#define BIG (MAX_PACKET / 2 + 100)

/* ---- order of service ----------------------------------------------- */

Test(outq, the_brokers_own_frames_go_first)
{
    uint32_t got[8];
    static const uint32_t want[] = { 100, 101, 1, 2 };

    push_data(5, BIG, 1);
    push_data(5, BIG, 2);
    push_ctrl(100);
    push_ctrl(101);
    assert_tags(got, write_all(got, 8), want, 4);
}

Test(outq, a_ctrl_frame_queued_later_overtakes_waiting_streams)
{
    packet_t p;
    uint32_t got[8];
    static const uint32_t want[] = { 100, 2, 3 };

    push_data(5, BIG, 1);
    push_data(5, BIG, 2);
    push_data(5, BIG, 3);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.tags[0], 1);
    push_ctrl(100);
    assert_tags(got, write_all(got, 8), want, 3);
}

Test(outq, streams_take_turns_one_packet_each)
{
    uint32_t got[16];
    static const uint32_t want[] = { 10, 20, 30, 11, 21, 12, 22, 13 };

    /* stream 1 has four large frames, streams 2 and 3 fewer */
    push_data(1, BIG, 10);
    push_data(1, BIG, 11);
    push_data(1, BIG, 12);
    push_data(1, BIG, 13);
    push_data(2, BIG, 20);
    push_data(2, BIG, 21);
    push_data(2, BIG, 22);
    push_data(3, BIG, 30);
    assert_tags(got, write_all(got, 16), want, 8);
}

Test(outq, a_stream_that_starts_late_waits_its_turn_at_the_back)
{
    packet_t p;
    uint32_t got[16];
    static const uint32_t want[] = { 20, 11, 30, 21, 12 };

    push_data(1, BIG, 10);
    push_data(1, BIG, 11);
    push_data(1, BIG, 12);
    push_data(2, BIG, 20);
    push_data(2, BIG, 21);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.tags[0], 10);
    push_data(3, BIG, 30);      /* joins behind 2 and 1 */
    assert_tags(got, write_all(got, 16), want, 5);
}

Test(outq, one_way_messages_keep_their_order_across_streams)
{
    static const uint32_t want[] = { 1, 2, 3, 4, 5 };
    packet_t p;

    /* each one-way message has its own receiver stream id */
    push_oneway(0x80000001u, 1);
    push_oneway(0x80000002u, 2);
    push_oneway(0x80000003u, 3);
    push_oneway(0x80000004u, 4);
    push_oneway(0x80000005u, 5);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 5, "small one-way messages share a packet");
    assert_tags(p.tags, p.nframes, want, 5);
    cr_assert_not(write_packet(&p, NULL));
}

Test(outq, one_way_messages_take_one_turn_on_the_ring)
{
    uint32_t got[16];
    static const uint32_t want[] = { 10, 1, 11, 2 };

    push_data(1, BIG, 10);
    push(BK_T_DATA, BK_F_OPEN | BK_F_CLOSE, 0x80000001u, 42, BIG, 1,
         NULL, 0);
    push(BK_T_DATA, BK_F_OPEN | BK_F_CLOSE, 0x80000002u, 42, BIG, 2,
         NULL, 0);
    push_data(1, BIG, 11);
    assert_tags(got, write_all(got, 16), want, 4);
}

Test(outq, a_peers_close_and_error_keep_their_streams_order)
{
    uint32_t got[8];
    static const uint32_t want[] = { 100, 1, 2, 3 };

    push_data(5, BIG, 1);
    push(BK_T_CLOSE, 0, 5, 42, 4, 2, NULL, 0);      /* from a peer */
    push(BK_T_ERROR, 0, 5, 42, 4, 3, NULL, 0);      /* from a peer */
    push(BK_T_ERROR, 0, 5, 0, 4, 100, NULL, 0);     /* the broker's */
    assert_tags(got, write_all(got, 8), want, 4);
}

/* ---- packing ---------------------------------------------------------- */

Test(outq, small_frames_of_a_stream_share_a_packet_up_to_its_size)
{
    /* 100-byte payloads: 132 bytes a frame, 31 fit in 4096 */
    const unsigned per = MAX_PACKET / (BK_HDR_SIZE + 100);
    packet_t p;

    for (uint32_t i = 0; i < 40; i++)
        push_data(7, 100, i);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, per);
    cr_assert_leq(p.bytes, MAX_PACKET);
    for (unsigned i = 0; i < p.nframes; i++)
        cr_assert_eq(p.tags[i], i);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 40 - per);
    cr_assert_eq(p.tags[0], per);
    cr_assert_not(write_packet(&p, NULL));
}

Test(outq, no_more_than_pack_max_frames_in_a_packet)
{
    packet_t p;

    /* room for more in a 64 KiB packet: the frame count is the bound */
    for (uint32_t i = 0; i < BK_OUTQ_PACK_MAX + 6; i++)
        push_data(7, 4, i);
    cr_assert(write_packet_max(&p, NULL, 65536));
    cr_assert_eq(p.nframes, BK_OUTQ_PACK_MAX);
    cr_assert(write_packet_max(&p, NULL, 65536));
    cr_assert_eq(p.nframes, 6);
    cr_assert_eq(p.tags[0], BK_OUTQ_PACK_MAX);
}

Test(outq, a_frame_that_does_not_fit_waits_for_the_next_packet)
{
    packet_t p;

    push_data(7, 100, 1);
    push_data(7, MAX_PACKET - BK_HDR_SIZE, 2);     /* a full packet */
    push_data(7, 100, 3);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 1);
    cr_assert_eq(p.tags[0], 1);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 1, "a full-packet frame goes alone");
    cr_assert_eq(p.tags[0], 2);
    cr_assert_eq(p.bytes, MAX_PACKET);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.tags[0], 3);
}

Test(outq, frames_of_different_streams_never_share_a_packet)
{
    packet_t p;

    push_data(1, 8, 10);
    push_data(2, 8, 20);
    push_data(1, 8, 11);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 2);
    cr_assert_eq(p.streams[0], 1);
    cr_assert_eq(p.streams[1], 1);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 1);
    cr_assert_eq(p.streams[0], 2);
}

Test(outq, only_an_empty_queue_lets_a_large_frame_bypass_it)
{
    cr_assert(bk_outq_bypass(&q, MAX_PACKET / 2 + 1, MAX_PACKET));
    cr_assert_not(bk_outq_bypass(&q, MAX_PACKET / 2, MAX_PACKET),
                  "half a packet or less is worth packing");
    push_ctrl(1);
    cr_assert_not(bk_outq_bypass(&q, MAX_PACKET, MAX_PACKET),
                  "a frame may not overtake queued frames");
}

/* ---- fds ----------------------------------------------------------------- */

Test(outq, fds_travel_with_their_own_frame)
{
    int a[2], b[2];
    packet_t p;

    make_pipe(a);
    make_pipe(b);
    push_data(7, 8, 1);
    push(BK_T_DATA, BK_F_MORE, 7, 42, 8, 2, a, 2);
    push(BK_T_DATA, BK_F_MORE, 7, 42, 8, 3, b, 1);
    push_data(7, 8, 4);

    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 1, "a frame with fds starts a packet");
    cr_assert_eq(p.nfds, 0);

    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 1, "a frame with fds ends the previous one");
    cr_assert_eq(p.tags[0], 2);
    cr_assert_eq(p.nfds, 2);
    cr_assert_eq(p.fds[0], a[0]);
    cr_assert_eq(p.fds[1], a[1]);
    cr_assert_not(fd_open(a[0]), "the broker's copy is closed once sent");
    cr_assert_not(fd_open(a[1]));

    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 2, "frames without fds follow in its packet");
    cr_assert_eq(p.tags[0], 3);
    cr_assert_eq(p.tags[1], 4);
    cr_assert_eq(p.nfds, 1);
    cr_assert_eq(p.fds[0], b[0]);
    cr_assert_not(fd_open(b[0]));
    close(b[1]);
}

Test(outq, dropping_the_queue_closes_every_fd_in_it)
{
    int a[2], b[2], c[2];

    make_pipe(a);
    make_pipe(b);
    make_pipe(c);
    push(BK_T_SEGMENT, 0, 0, 42, 16, 1, a, 2);             /* control */
    push(BK_T_DATA, BK_F_MORE, 7, 42, 8, 2, b, 2);          /* a stream */
    push(BK_T_DATA, BK_F_OPEN | BK_F_CLOSE, 9, 42, 8, 3, c, 2); /* one-way */
    bk_outq_fini(&q, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert_not(fd_open(a[i]));
        cr_assert_not(fd_open(b[i]));
        cr_assert_not(fd_open(c[i]));
    }
    cr_assert_eq(q.frames, 0);
    cr_assert_eq(q.bytes, 0);
    bk_outq_init(&q);           /* for teardown */
}

typedef struct lost_log {
    unsigned n;
    uint32_t src_sid[8];
} lost_log_t;

static void on_lost(const bk_oframe_t *f, void *arg)
{
    lost_log_t *log = arg;

    cr_assert_lt(log->n, 8);
    cr_assert_eq(f->src, 42);
    log->src_sid[log->n++] = f->src_sid;
}

Test(outq, dropping_the_queue_reports_each_lost_one_way_message)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = BK_F_OPEN | BK_F_CLOSE, .length = 4, .stream = 9,
        .source = 42,
    };
    lost_log_t log = { 0 };
    bk_oframe_t *f;

    push_data(7, 8, 1);
    for (uint32_t sid = 1; sid <= 3; sid++) {
        cr_assert_eq(bk_outq_push(&q, &h, "abcd", NULL, 0, &f), 0);
        f->oneway_first = true;
        f->src = 42;
        f->src_sid = sid;
    }
    push_ctrl(100);
    bk_outq_fini(&q, on_lost, &log);
    cr_assert_eq(log.n, 3, "only the one-way messages are reported");
    cr_assert_eq(log.src_sid[0], 1);
    cr_assert_eq(log.src_sid[1], 2);
    cr_assert_eq(log.src_sid[2], 3);
    bk_outq_init(&q);
}

/* ---- accounting --------------------------------------------------------- */

Test(outq, queued_bytes_and_frames_count_what_waits)
{
    packet_t p;

    cr_assert_eq(q.frames, 0);
    cr_assert_eq(q.bytes, 0);
    push_data(1, BIG, 1);
    push_data(2, 100, 2);
    push_ctrl(3);
    cr_assert_eq(q.frames, 3);
    cr_assert_eq(q.bytes, 3 * BK_HDR_SIZE + BIG + 100 + 8);
    cr_assert(write_packet(&p, NULL));                  /* the ctrl frame */
    cr_assert_eq(q.frames, 2);
    cr_assert_eq(q.bytes, 2 * BK_HDR_SIZE + BIG + 100);
    cr_assert(write_packet(&p, NULL));
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(q.frames, 0);
    cr_assert_eq(q.bytes, 0);
}

/* The memory a queue takes is what its frames allocated: more than their
 * wire bytes for small frames (bookkeeping, rounding to 64-byte blocks),
 * about the same for large ones; the counters the port shares follow it
 * and come back to zero with the queue. */
Test(outq, queued_memory_is_what_the_frames_take)
{
    uint64_t user = 0, all = 5;
    packet_t p;

    push_oneway(1, 1);
    bk_outq_set_acct(&q, &user, &all);
    cr_assert_geq(q.mem, 128, "a small frame takes %llu",
                  (unsigned long long)q.mem);
    cr_assert_eq(q.mem % 64, 0, "block-sized: %llu",
                 (unsigned long long)q.mem);
    cr_assert_gt(q.mem, q.bytes);
    cr_assert_eq(user, q.mem, "what was queued before counts");
    cr_assert_eq(all, 5 + q.mem);
    push_data(2, BIG, 2);
    cr_assert_geq(q.mem, q.bytes);
    cr_assert_leq(q.mem, q.bytes + 2 * 256, "a large frame: %llu of %llu",
                  (unsigned long long)q.mem, (unsigned long long)q.bytes);
    cr_assert_eq(user, q.mem);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(user, q.mem, "consumed frames give theirs back");
    push_ctrl(3);
    bk_outq_fini(&q, NULL, NULL);
    cr_assert_eq(q.mem, 0);
    cr_assert_eq(user, 0);
    cr_assert_eq(all, 5);
    bk_outq_init(&q);
}

Test(outq, a_packet_not_consumed_stays_queued)
{
    bk_outq_pkt_t pkt;
    packet_t p;

    push_data(1, 8, 1);
    push_data(1, 8, 2);
    /* the socket was full: gather, but never consume */
    cr_assert_eq(bk_outq_gather(&q, MAX_PACKET, &pkt), 2);
    cr_assert_eq(q.frames, 2);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.nframes, 2);
    cr_assert_eq(p.tags[0], 1);
}

Test(outq, what_was_sent_is_tallied_as_data_bytes_and_messages)
{
    bk_outq_tally_t sent = { 0, 0 };
    packet_t p;

    push(BK_T_DATA, BK_F_MORE, 1, 42, 10, 1, NULL, 0);
    push(BK_T_DATA, BK_F_CONT, 1, 42, 20, 2, NULL, 0);  /* ends it */
    push(BK_T_CLOSE, 0, 1, 42, 4, 3, NULL, 0);          /* not DATA */
    cr_assert(write_packet(&p, &sent));
    cr_assert_eq(p.nframes, 3);
    cr_assert_eq(sent.bytes, 30);
    cr_assert_eq(sent.msgs, 1);
}

/* ---- shared payloads and tags (publications) ----------------------------- */

static unsigned sent_calls;
static void *sent_tag;

static void on_sent(void *tag, void *arg)
{
    (void)arg;
    sent_calls++;
    sent_tag = tag;
}

/* A whole publication delivered on subscription `tag`'s behalf. */
static bk_oframe_t *push_pub(bk_outq_t *oq, bk_opayload_t *pl, void *tag)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE, .length = pl->len,
        .stream = 0x80000001u, .aux = 1, .source = 42, .dest = 7,
    };
    bk_oframe_t *f;

    cr_assert_eq(bk_outq_push_shared(oq, &h, pl, NULL, 0, &f), 0);
    f->tag = tag;
    f->tag_first = true;
    return f;
}

Test(outq, a_shared_payload_lives_until_the_last_frame_goes)
{
    uint8_t data[16];
    bk_opayload_t *pl;
    bk_outq_t other;
    packet_t p;
    int tag;

    memset(data, 0, sizeof(data));
    bk_put32(data, 77);
    pl = bk_opayload_new(data, sizeof(data));
    cr_assert_not_null(pl);
    bk_outq_init(&other);
    q.on_sent = on_sent;
    sent_calls = 0;
    push_pub(&q, pl, &tag);
    push_pub(&other, pl, NULL);
    cr_assert_eq(pl->refs, 3);
    bk_opayload_put(pl);              /* the fan-out's own reference */
    cr_assert_eq(pl->refs, 2);
    cr_assert(write_packet(&p, NULL));
    cr_assert_eq(p.tags[0], 77, "the shared bytes went out");
    cr_assert_eq(sent_calls, 1);
    cr_assert_eq(sent_tag, &tag);
    cr_assert_eq(pl->refs, 1);
    /* the other receiver's copy is still intact; dropping it frees it */
    bk_outq_fini(&other, NULL, NULL);   /* (leak checkers judge the rest) */
    q.on_sent = NULL;
}

Test(outq, tagged_whole_messages_can_be_taken_and_requeued_in_order)
{
    uint8_t data[8] = { 0 };
    int t1, t2;
    bk_outq_t other;
    bk_list_t moving;
    bk_list_t *l;
    uint32_t tags[8];
    unsigned n = 0;

    bk_outq_init(&other);
    bk_list_init(&moving);
    for (uint32_t i = 0; i < 4; i++) {
        bk_opayload_t *pl;
        bk_put32(data, 100 + i);
        pl = bk_opayload_new(data, sizeof(data));
        push_pub(&q, pl, i % 2 ? &t1 : &t2);
        bk_opayload_put(pl);
    }
    push_oneway(5, 200);              /* untagged: stays */
    cr_assert_eq(bk_outq_take_tagged(&q, &t1, &moving), 2);
    cr_assert_eq(q.frames, 3);
    while ((l = bk_list_pop_head(&moving))) {
        bk_oframe_t *f = bk_container_of(l, bk_oframe_t, link);
        bk_hdr_t h;
        bk_hdr_decode(f->hdr, &h);
        h.dest = 9;
        cr_assert_eq(bk_outq_push_frame(&other, f, &h), 0);
    }
    cr_assert_eq(other.frames, 2);
    bk_outq_untag(&q, &t2);
    {
        bk_outq_pkt_t pkt;
        bk_outq_tally_t t = { 0, 0 };
        while (bk_outq_gather(&other, MAX_PACKET, &pkt)) {
            for (unsigned i = 0; i < pkt.nframes; i++) {
                bk_hdr_t h;
                bk_hdr_decode(pkt.iov[2 * i].iov_base, &h);
                cr_assert_eq(h.dest, 9, "the header was rewritten");
                tags[n++] = bk_get32(pkt.iov[2 * i + 1].iov_base);
            }
            bk_outq_consume(&other, &pkt, &t);
        }
    }
    assert_tags(tags, n, (uint32_t[]){ 101, 103 }, 2);
    n = write_all(tags, 8);
    assert_tags(tags, n, (uint32_t[]){ 100, 102, 200 }, 3);
    bk_outq_fini(&other, NULL, NULL);
}

/* Freed frame nodes and payloads are reused: every size around the
 * payload classes' edges comes back with its own bytes, whatever block
 * held another size before, and trimming gives them all back. */
Test(outq, recycled_payloads_and_nodes_keep_their_bytes)
{
    static const uint32_t sizes[] = { 1, 1023, 1024, 1025, 1536, 1537,
                                      4000, 8191, 8192, 8193, 20000 };
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    static uint8_t data[20000];

    for (int round = 0; round < 3; round++) {
        bk_opayload_t *pl[N];

        for (unsigned i = 0; i < N; i++) {
            memset(data, (int)(i + 16 * round), sizes[i]);
            pl[i] = bk_opayload_new(data, sizes[i]);
            cr_assert_not_null(pl[i]);
            cr_assert_eq(pl[i]->len, sizes[i]);
            cr_assert_eq(pl[i]->refs, 1);
            push_pub(&q, pl[i], NULL);
            bk_opayload_put(pl[i]);
        }
        for (unsigned i = 0; i < N; i++) {
            bk_outq_pkt_t pkt;
            bk_outq_tally_t sent = { 0, 0 };

            cr_assert_eq(bk_outq_gather(&q, 1 << 20, &pkt), N - i,
                         "one-way publications pack together");
            cr_assert_eq(pkt.iov[1].iov_len, sizes[i]);
            for (uint32_t j = 0; j < sizes[i]; j++)
                cr_assert_eq(((uint8_t *)pkt.iov[1].iov_base)[j],
                             (uint8_t)(i + 16 * round), "size %u byte %u",
                             sizes[i], j);
            /* send only the first frame: the rest stays for the next */
            pkt.nframes = 1;
            bk_outq_consume(&q, &pkt, &sent);
            cr_assert_eq(sent.bytes, sizes[i]);
        }
        cr_assert_eq(q.frames, 0);
    }
    bk_outq_cache_trim();
    bk_outq_cache_trim();       /* twice: nothing left the second time */
}

/* ---- bodies: descriptors read out for a receiver without shm ------------- */

static unsigned bodies_done;

static void body_done(bk_obody_t *b)
{
    bodies_done++;
    free(b);
}

/* Queue a descriptor frame (name "ear", flags) whose body is bytes
 * [off, off + len) of the file fd. */
static void push_body(int fd, uint8_t flags, uint32_t stream, uint64_t off,
                      uint64_t len)
{
    uint8_t payload[3 + BK_SHM_DESC_SIZE] = { 'e', 'a', 'r' };
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_DATA,
        .flags = (uint8_t)(flags | BK_F_NAME | BK_F_SHM), .aux = 3,
        .length = sizeof(payload), .stream = stream, .source = 42,
        .dest = 9,
    };
    bk_obody_t *b = calloc(1, sizeof(*b));
    bk_oframe_t *f;

    cr_assert_not_null(b);
    b->fd = fd;
    b->pos = off;
    b->end = off + len;
    b->done = body_done;
    cr_assert_eq(bk_outq_push_body(&q, &h, payload, b, false, &f), 0);
}

/* A memfd of n bytes, byte i = i * 7 + 1 (mod 256). */
static int body_file(size_t n)
{
    int fd = memfd_create("body", MFD_CLOEXEC);
    uint8_t *buf = malloc(n);

    cr_assert(fd >= 0 && buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    cr_assert_eq(write(fd, buf, n), (ssize_t)n);
    free(buf);
    return fd;
}

Test(outq, a_body_goes_out_as_fragments_a_packet_each)
{
    size_t size = 3 * MAX_PACKET, off = 100, len = 2 * MAX_PACKET + 5;
    int fd = body_file(size);
    bk_outq_tally_t sent = { 0, 0 };
    uint64_t pos = off, got = 0;
    unsigned n = 0;
    bool last = false;

    bodies_done = 0;
    push_body(fd, BK_F_OPEN | BK_F_CLOSE, 5, off, len);
    cr_assert_eq(q.frames, 1);
    while (!last) {
        bk_outq_pkt_t pkt;
        bk_hdr_t h;
        const uint8_t *p;
        size_t name = n == 0 ? 3 : 0;

        cr_assert_eq(bk_outq_gather(&q, MAX_PACKET, &pkt), 1);
        cr_assert_eq(pkt.niov, 2);
        bk_hdr_decode(pkt.iov[0].iov_base, &h);
        p = pkt.iov[1].iov_base;
        cr_assert_eq(h.type, BK_T_DATA);
        cr_assert_eq(h.stream, 5);
        cr_assert_eq(h.source, 42);
        cr_assert_leq(BK_HDR_SIZE + h.length, MAX_PACKET);
        cr_assert_eq(pkt.iov[1].iov_len, h.length);
        cr_assert_eq(h.flags & BK_F_SHM, 0, "fragment %u: SHM kept", n);
        last = !(h.flags & BK_F_MORE);
        if (n == 0) {
            cr_assert_eq(h.flags, BK_F_OPEN | BK_F_NAME | BK_F_MORE,
                         "first: 0x%x", h.flags);
            cr_assert_eq(h.aux, 3);
            cr_assert_arr_eq(p, "ear", 3);
        } else {
            cr_assert_eq(h.flags, last ? BK_F_CONT | BK_F_CLOSE
                                       : BK_F_CONT | BK_F_MORE,
                         "fragment %u: 0x%x", n, h.flags);
            cr_assert_eq(h.aux, 0);
        }
        for (size_t i = name; i < h.length; i++, pos++)
            cr_assert_eq(p[i], (uint8_t)(pos * 7 + 1), "byte %llu",
                         (unsigned long long)pos);
        got += h.length - name;
        bk_outq_consume(&q, &pkt, &sent);
        cr_assert_eq(bodies_done, last ? 1u : 0u, "done once, at the end");
        n++;
    }
    cr_assert_eq(got, len);
    cr_assert_eq(n, 3, "%u fragments", n);
    cr_assert_eq(sent.msgs, 1);
    cr_assert_eq(sent.bytes, len + 3);
    cr_assert_eq(q.frames, 0);
    cr_assert_eq(q.bytes, 0);
    close(fd);
}

Test(outq, a_body_keeps_its_streams_order_and_takes_turns)
{
    int fd = body_file(4 * MAX_PACKET);
    uint32_t streams[16];
    unsigned n = 0;
    packet_t p;

    bodies_done = 0;
    push_body(fd, 0, 5, 0, 2 * MAX_PACKET);     /* 3 fragments */
    push(BK_T_DATA, 0, 5, 42, 8, 50, NULL, 0);  /* behind it on 5 */
    push_data(6, 8, 60);
    push_data(6, 8, 61);
    while (write_packet(&p, NULL)) {
        cr_assert_lt(n, 16);
        streams[n++] = p.streams[0];
        if (p.streams[0] == 5 && p.nframes == 1 && p.tags[0] == 50)
            cr_assert_eq(bodies_done, 1, "the next message waited");
    }
    /* 5 (fragment), 6 (both, packed), 5, 5, then 5's next message */
    cr_assert_eq(n, 5, "%u packets", n);
    cr_assert_eq(streams[0], 5);
    cr_assert_eq(streams[1], 6);
    cr_assert_eq(streams[2], 5);
    cr_assert_eq(streams[3], 5);
    cr_assert_eq(streams[4], 5);
    close(fd);
}

Test(outq, a_dropped_body_is_done_once)
{
    int fd = body_file(MAX_PACKET * 2);
    packet_t p;

    bodies_done = 0;
    push_body(fd, BK_F_OPEN | BK_F_CLOSE, 5, 0, 2 * MAX_PACKET);
    cr_assert(write_packet(&p, NULL));          /* half way */
    cr_assert_eq(bodies_done, 0);
    bk_outq_fini(&q, NULL, NULL);
    bk_outq_init(&q);
    cr_assert_eq(bodies_done, 1);
    close(fd);
}
