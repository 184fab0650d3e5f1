/*
 * test_frame.c - frame codec, packet iteration and validation rules.
 */
#include <errno.h>
#include <string.h>
#include <criterion/criterion.h>
#include "frame.h"

static const bk_limits_t lim = {
    .max_packet = BK_DEF_MAX_PACKET,
    .max_fds = BK_DEF_MAX_FDS,
    .max_name = BK_MAX_NAME,
};

/* Each of the n bytes at got is the one at want (every mismatch shows). */
static void expect_bytes(const uint8_t *got, const uint8_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(got[i], want[i], "byte %zu: got 0x%02x want 0x%02x", i,
                     got[i], want[i]);
}

/* ---- header codec ------------------------------------------------------ */

/* Every field gets distinct byte values so a swapped or shifted field shows. */
static const uint8_t hdr_bytes[BK_HDR_SIZE] = {
    0x01, 0x03, 0x15, 0x07,                         /* version type flags nfds */
    0x11, 0x12, 0x13, 0x14,                         /* length */
    0x21, 0x22, 0x23, 0x84,                         /* stream */
    0x31, 0x32, 0x33, 0x34,                         /* aux */
    0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, /* source */
    0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0xd8, /* dest */
};

static const bk_hdr_t hdr_fields = {
    .version = 0x01, .type = 0x03, .flags = 0x15, .nfds = 0x07,
    .length = 0x14131211u, .stream = 0x84232221u, .aux = 0x34333231u,
    .source = UINT64_C(0x4847464544434241),
    .dest = UINT64_C(0xd857565554535251),
};

Test(hdr, encode_places_every_field_little_endian)
{
    uint8_t out[BK_HDR_SIZE];

    memset(out, 0xee, sizeof(out));
    bk_hdr_encode(&hdr_fields, out);
    expect_bytes(out, hdr_bytes, BK_HDR_SIZE);
}

Test(hdr, decode_reads_every_field_little_endian)
{
    bk_hdr_t h;

    memset(&h, 0xee, sizeof(h));
    bk_hdr_decode(hdr_bytes, &h);
    cr_expect_eq(h.version, hdr_fields.version);
    cr_expect_eq(h.type, hdr_fields.type);
    cr_expect_eq(h.flags, hdr_fields.flags);
    cr_expect_eq(h.nfds, hdr_fields.nfds);
    cr_expect_eq(h.length, hdr_fields.length, "length 0x%x", h.length);
    cr_expect_eq(h.stream, hdr_fields.stream, "stream 0x%x", h.stream);
    cr_expect_eq(h.aux, hdr_fields.aux, "aux 0x%x", h.aux);
    cr_expect_eq(h.source, hdr_fields.source, "source 0x%llx",
                 (unsigned long long)h.source);
    cr_expect_eq(h.dest, hdr_fields.dest, "dest 0x%llx",
                 (unsigned long long)h.dest);
}

static void roundtrip(const bk_hdr_t *in)
{
    uint8_t wire[BK_HDR_SIZE];
    bk_hdr_t out;

    bk_hdr_encode(in, wire);
    memset(&out, 0x5a, sizeof(out));
    bk_hdr_decode(wire, &out);
    cr_assert_eq(out.version, in->version);
    cr_assert_eq(out.type, in->type);
    cr_assert_eq(out.flags, in->flags);
    cr_assert_eq(out.nfds, in->nfds);
    cr_assert_eq(out.length, in->length);
    cr_assert_eq(out.stream, in->stream);
    cr_assert_eq(out.aux, in->aux);
    cr_assert_eq(out.source, in->source);
    cr_assert_eq(out.dest, in->dest);
}

Test(hdr, roundtrip_extreme_values)
{
    bk_hdr_t zero = { 0 };
    bk_hdr_t ones = {
        .version = 0xff, .type = 0xff, .flags = 0xff, .nfds = 0xff,
        .length = UINT32_MAX, .stream = UINT32_MAX, .aux = UINT32_MAX,
        .source = UINT64_MAX, .dest = UINT64_MAX,
    };
    bk_hdr_t high = {
        .version = 0x80, .type = 0x80, .flags = 0x80, .nfds = 0x80,
        .length = 0x80000000u, .stream = 0x80000000u, .aux = 0x80000000u,
        .source = UINT64_C(1) << 63, .dest = UINT64_C(1) << 63,
    };

    roundtrip(&zero);
    roundtrip(&ones);
    roundtrip(&high);
    roundtrip(&hdr_fields);
}

Test(hdr, roundtrip_each_field_alone)
{
    /* One field set at a time: a field that leaks into a neighbour shows. */
    for (int f = 0; f < 9; f++) {
        bk_hdr_t h = { 0 };
        switch (f) {
        case 0: h.version = 0xa5; break;
        case 1: h.type = 0xa5; break;
        case 2: h.flags = 0xa5; break;
        case 3: h.nfds = 0xa5; break;
        case 4: h.length = 0xa5b6c7d8u; break;
        case 5: h.stream = 0xa5b6c7d8u; break;
        case 6: h.aux = 0xa5b6c7d8u; break;
        case 7: h.source = UINT64_C(0xa5b6c7d8e9fa0b1c); break;
        case 8: h.dest = UINT64_C(0xa5b6c7d8e9fa0b1c); break;
        }
        roundtrip(&h);
    }
}

Test(hdr, le_helpers)
{
    uint8_t b[8];

    bk_put16(b, 0x1234);
    cr_expect_eq(b[0], 0x34);
    cr_expect_eq(b[1], 0x12);
    bk_put32(b, 0x89abcdefu);
    cr_expect_eq(b[0], 0xef);
    cr_expect_eq(b[3], 0x89);
    cr_expect_eq(bk_get32(b), 0x89abcdefu);
    bk_put64(b, UINT64_C(0x0102030405060708));
    for (int i = 0; i < 8; i++)
        cr_expect_eq(b[i], 8 - i);
    cr_expect_eq(bk_get64(b), UINT64_C(0x0102030405060708));
}

/* ---- packet iteration -------------------------------------------------- */

/* Append a frame to buf at *len. */
static void put_frame(uint8_t *buf, size_t *len, uint8_t type, uint32_t stream,
                      const void *payload, uint32_t plen)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = type, .length = plen,
        .stream = stream,
    };
    bk_hdr_encode(&h, buf + *len);
    if (plen)
        memcpy(buf + *len + BK_HDR_SIZE, payload, plen);
    *len += BK_HDR_SIZE + plen;
}

Test(pkt, several_frames_in_one_packet)
{
    uint8_t pkt[1024];
    uint8_t big[300];
    size_t len = 0, off = 0;
    bk_hdr_t h;
    const uint8_t *p = NULL;

    for (unsigned i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 1);
    put_frame(pkt, &len, BK_T_CTRL, 1, NULL, 0);
    put_frame(pkt, &len, BK_T_DATA, 2, "hello", 5);
    put_frame(pkt, &len, BK_T_DATA, 3, big, sizeof(big));
    put_frame(pkt, &len, BK_T_CLOSE, 4, "x", 1);

    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(h.type, BK_T_CTRL);
    cr_assert_eq(h.stream, 1);
    cr_assert_eq(h.length, 0);
    cr_assert_eq(off, BK_HDR_SIZE);

    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(h.type, BK_T_DATA);
    cr_assert_eq(h.stream, 2);
    cr_assert_eq(h.length, 5);
    cr_assert_eq(p, pkt + 2 * BK_HDR_SIZE);
    cr_assert_arr_eq(p, "hello", 5);

    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(h.stream, 3);
    cr_assert_eq(h.length, sizeof(big));
    cr_assert_arr_eq(p, big, sizeof(big));

    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(h.type, BK_T_CLOSE);
    cr_assert_eq(h.stream, 4);
    cr_assert_eq(h.length, 1);
    cr_assert_eq(p[0], 'x');
    cr_assert_eq(off, len);

    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 0, "clean end");
    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 0, "end is sticky");
}

Test(pkt, empty_packet_is_clean_end)
{
    uint8_t pkt[1] = { 0 };
    size_t off = 0;
    bk_hdr_t h;
    const uint8_t *p;

    cr_assert_eq(bk_pkt_next(pkt, 0, &off, &h, &p), 0);
}

Test(pkt, payload_ending_exactly_at_packet_end)
{
    uint8_t pkt[64];
    size_t len = 0, off = 0;
    bk_hdr_t h;
    const uint8_t *p;

    put_frame(pkt, &len, BK_T_DATA, 9, "0123456789abcdef0123456789abcdef",
              32);
    cr_assert_eq(len, 64);
    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(h.length, 32);
    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 0);
}

Test(pkt, truncated_header)
{
    uint8_t pkt[256];
    size_t len = 0, off = 0;
    bk_hdr_t h;
    const uint8_t *p;

    put_frame(pkt, &len, BK_T_DATA, 1, "abc", 3);
    /* A second frame of which only part of the header arrived. */
    put_frame(pkt, &len, BK_T_DATA, 2, "def", 3);
    len -= 3 + 10;      /* drop the payload and 10 header bytes */

    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(h.stream, 1);
    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), -EPROTO);

    /* Shorter than one header from the start. */
    for (size_t n = 1; n < BK_HDR_SIZE; n++) {
        off = 0;
        cr_assert_eq(bk_pkt_next(pkt, n, &off, &h, &p), -EPROTO,
                     "%zu-byte packet", n);
    }
}

Test(pkt, length_beyond_packet)
{
    uint8_t pkt[256];
    size_t len = 0, off = 0;
    bk_hdr_t h;
    const uint8_t *p;

    put_frame(pkt, &len, BK_T_DATA, 1, "abcdefgh", 8);
    cr_assert_eq(bk_pkt_next(pkt, len - 1, &off, &h, &p), -EPROTO,
                 "payload one byte short");

    /* A header claiming a huge length must not wrap the bounds check. */
    bk_hdr_t big = { .version = 1, .type = BK_T_DATA, .stream = 1,
                     .length = UINT32_MAX };
    bk_hdr_encode(&big, pkt);
    off = 0;
    cr_assert_eq(bk_pkt_next(pkt, 64, &off, &h, &p), -EPROTO);

    /* Valid first frame, second one claims more than is left. */
    len = 0;
    put_frame(pkt, &len, BK_T_DATA, 1, "ab", 2);
    put_frame(pkt, &len, BK_T_DATA, 2, "cd", 2);
    bk_put32(pkt + BK_HDR_SIZE + 2 + 4, 3);
    off = 0;
    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), 1);
    cr_assert_eq(bk_pkt_next(pkt, len, &off, &h, &p), -EPROTO);
}

Test(pkt, offset_past_end)
{
    uint8_t pkt[64] = { 0 };
    size_t off = 65;
    bk_hdr_t h;
    const uint8_t *p;

    cr_assert_eq(bk_pkt_next(pkt, 64, &off, &h, &p), -EPROTO);
}

/* ---- validation helpers ------------------------------------------------ */

static bk_hdr_t hdr(uint8_t type)
{
    return (bk_hdr_t){ .version = BK_PROTO_VERSION, .type = type };
}

/* A valid client DATA frame opening stream 1 to client 7. */
static bk_hdr_t cdata(void)
{
    bk_hdr_t h = hdr(BK_T_DATA);
    h.flags = BK_F_OPEN;
    h.stream = 1;
    h.dest = 7;
    h.length = 4;
    return h;
}

/* A valid broker DATA frame delivering on the receiver's stream. */
static bk_hdr_t bdata(void)
{
    bk_hdr_t h = hdr(BK_T_DATA);
    h.flags = BK_F_OPEN;
    h.stream = BK_SID_PEER_BIT | 1;
    h.source = 3;
    h.dest = 7;
    h.length = 4;
    return h;
}

static const uint8_t pl[BK_MAX_NAME + 16] = "svc.echo";

#define CLIENT(h, want) \
    cr_expect_eq(bk_frame_check_from_client(&(h), pl, &lim), (want), \
                 "from client line %d: got %d want %d", __LINE__, \
                 bk_frame_check_from_client(&(h), pl, &lim), (want))
#define BROKER(h, want) \
    cr_expect_eq(bk_frame_check_from_broker(&(h), pl, &lim), (want), \
                 "from broker line %d: got %d want %d", __LINE__, \
                 bk_frame_check_from_broker(&(h), pl, &lim), (want))
#define BOTH(h, want) do { CLIENT(h, want); BROKER(h, want); } while (0)

/* The validation of one direction: bk_frame_check_from_client or
 * bk_frame_check_from_broker. */
typedef int (*frame_check_fn)(const bk_hdr_t *h, const uint8_t *payload,
                              const bk_limits_t *lim);

/* h, a valid frame of a type other than DATA, passes `check` as it is,
 * and is refused with the DATA flag `flag`, with BK_F_SHM, or with any
 * count of fds from nfds down to 1. */
static void expect_no_data_fields(frame_check_fn check, bk_hdr_t h,
                                  uint8_t flag, uint8_t nfds)
{
    cr_expect_eq(check(&h, pl, &lim), 0, "type %u refused as it is",
                 h.type);
    h.flags = flag;
    cr_expect_eq(check(&h, pl, &lim), -EPROTO, "type %u with flags 0x%x",
                 h.type, h.flags);
    h.flags = BK_F_SHM;
    cr_expect_eq(check(&h, pl, &lim), -EPROTO, "type %u with BK_F_SHM",
                 h.type);
    h.flags = 0;
    for (h.nfds = nfds; h.nfds > 0; h.nfds--)
        cr_expect_eq(check(&h, pl, &lim), -EPROTO, "type %u with %u fds",
                     h.type, h.nfds);
}

/* ---- rules common to both directions ----------------------------------- */

Test(check_common, version_mismatch)
{
    bk_hdr_t h = cdata();

    h.version = 0;
    CLIENT(h, -EPROTONOSUPPORT);
    h.version = 2;
    CLIENT(h, -EPROTONOSUPPORT);
    h.version = 0xff;
    CLIENT(h, -EPROTONOSUPPORT);
    h = bdata();
    h.version = 2;
    BROKER(h, -EPROTONOSUPPORT);
    h = hdr(BK_T_HELLO);
    h.version = 2;
    h.length = 4;
    CLIENT(h, -EPROTONOSUPPORT);
}

Test(check_common, bad_type)
{
    static const uint8_t bad[] = { 0, BK_T_MAX_ + 1, 0x7f, 0xff };

    for (unsigned i = 0; i < sizeof(bad); i++) {
        bk_hdr_t h = hdr(bad[i]);
        h.stream = 1;
        BOTH(h, -EPROTO);
    }
}

Test(check_common, unknown_flag_bits)
{
    /* 0x20 is BK_F_SHM, 0x40 BK_F_TOPIC: only bits above BK_F_ALL_ are
     * unknown. */
    static const uint8_t bad[] = { 0x80, 0xc0, 0xff };

    for (unsigned i = 0; i < sizeof(bad); i++) {
        bk_hdr_t h = cdata();
        h.flags |= bad[i];
        CLIENT(h, -EPROTO);
        h = bdata();
        h.flags |= bad[i];
        BROKER(h, -EPROTO);
    }
}

Test(check_common, frame_larger_than_max_packet)
{
    bk_hdr_t h = cdata();

    h.length = lim.max_packet - BK_HDR_SIZE;
    CLIENT(h, 0);
    h.length++;
    CLIENT(h, -EMSGSIZE);
    h.length = UINT32_MAX;          /* must not wrap */
    CLIENT(h, -EMSGSIZE);

    h = bdata();
    h.length = lim.max_packet - BK_HDR_SIZE;
    BROKER(h, 0);
    h.length++;
    BROKER(h, -EMSGSIZE);
    h.length = UINT32_MAX - 16;
    BROKER(h, -EMSGSIZE);

    bk_limits_t small = lim;
    small.max_packet = 4096;
    h = cdata();
    h.length = 4096 - BK_HDR_SIZE + 1;
    cr_expect_eq(bk_frame_check_from_client(&h, pl, &small), -EMSGSIZE);
}

Test(check_common, flags_or_fds_only_on_data)
{
    static const uint8_t ctypes[] = { BK_T_HELLO, BK_T_CLOSE, BK_T_CTRL,
                                      BK_T_RELEASE };
    static const uint8_t btypes[] = { BK_T_WELCOME, BK_T_CLOSE, BK_T_ERROR,
                                      BK_T_CTRL_REPLY, BK_T_BYE,
                                      BK_T_RELEASE, BK_T_SEG_DROP };

    for (unsigned i = 0; i < sizeof(ctypes); i++) {
        bk_hdr_t h = hdr(ctypes[i]);
        h.stream = (ctypes[i] == BK_T_HELLO || ctypes[i] == BK_T_RELEASE)
                   ? 0 : 1;
        h.aux = ctypes[i] == BK_T_CTRL ? BK_OP_PING : 0;
        h.length = ctypes[i] == BK_T_HELLO ? 4 :
                   ctypes[i] == BK_T_RELEASE ? BK_RELEASE_SIZE : 0;
        expect_no_data_fields(bk_frame_check_from_client, h, BK_F_MORE, 1);
    }
    for (unsigned i = 0; i < sizeof(btypes); i++) {
        bk_hdr_t h = hdr(btypes[i]);
        h.stream = btypes[i] == BK_T_RELEASE ? 0 : 1;
        h.source = btypes[i] == BK_T_SEG_DROP ? 3 : 0;
        h.length = btypes[i] == BK_T_WELCOME ? BK_WELCOME_SIZE :
                   btypes[i] == BK_T_RELEASE ? BK_RELEASE_SIZE :
                   btypes[i] == BK_T_SEG_DROP ? BK_SEG_DROP_SIZE : 0;
        expect_no_data_fields(bk_frame_check_from_broker, h, BK_F_CLOSE, 2);
    }
}

/* ---- client -> broker --------------------------------------------------- */

Test(from_client, forged_source)
{
    bk_hdr_t h = cdata();

    CLIENT(h, 0);
    h.source = 1;
    CLIENT(h, -EPROTO);
    h = hdr(BK_T_CTRL);
    h.aux = BK_OP_PING;
    h.source = UINT64_MAX;
    CLIENT(h, -EPROTO);
    h = hdr(BK_T_HELLO);
    h.length = 4;
    h.source = 5;
    CLIENT(h, -EPROTO);
}

Test(from_client, broker_only_types)
{
    static const uint8_t t[] = { BK_T_WELCOME, BK_T_ERROR, BK_T_CTRL_REPLY,
                                 BK_T_BYE, BK_T_SEG_DROP };

    for (unsigned i = 0; i < sizeof(t); i++) {
        bk_hdr_t h = hdr(t[i]);
        h.stream = 1;
        h.length = t[i] == BK_T_WELCOME ? BK_WELCOME_SIZE :
                   t[i] == BK_T_SEG_DROP ? BK_SEG_DROP_SIZE : 0;
        CLIENT(h, -EPROTO);
    }
}

Test(from_client, hello)
{
    bk_hdr_t h = hdr(BK_T_HELLO);

    h.length = 4;
    CLIENT(h, 0);
    h.length = 4 + BK_MAX_HELLO_DESC;
    CLIENT(h, 0);
    h.length = 4 + BK_MAX_HELLO_DESC + 1;
    CLIENT(h, -EPROTO);
    for (uint32_t n = 0; n < 4; n++) {
        h.length = n;
        CLIENT(h, -EPROTO);
    }
    h.length = 4;
    h.stream = 1;
    CLIENT(h, -EPROTO);
    h.stream = 0;
    h.aux = BK_HELLO_SHM;                       /* the capabilities */
    CLIENT(h, 0);
    h.aux = BK_HELLO_FLOW;
    CLIENT(h, 0);
    h.aux = BK_HELLO_SHM | BK_HELLO_FLOW;
    CLIENT(h, 0);
    for (unsigned bit = 2; bit < 32; bit++) {   /* the others: reserved */
        h.aux = BK_HELLO_SHM | 1u << bit;
        CLIENT(h, -EPROTO);
    }
    h.aux = 0;
    h.dest = 1;
    CLIENT(h, -EPROTO);
}

Test(from_client, seg_drop)
{
    bk_hdr_t h = hdr(BK_T_SEG_DROP);

    h.length = BK_SEG_DROP_SIZE;
    CLIENT(h, 0);
    h.length = BK_SEG_DROP_SIZE + 1;
    CLIENT(h, -EPROTO);
    h.length = BK_SEG_DROP_SIZE;
    h.stream = 1;
    CLIENT(h, -EPROTO);
    h.stream = 0;
    h.aux = 1;
    CLIENT(h, -EPROTO);
    h.aux = 0;
    h.dest = 1;
    CLIENT(h, -EPROTO);
}

Test(from_client, data_accepted)
{
    bk_hdr_t h = cdata();

    CLIENT(h, 0);                               /* OPEN to an id */
    h.flags = BK_F_OPEN | BK_F_CLOSE;           /* one-way send */
    CLIENT(h, 0);
    h.flags = BK_F_OPEN | BK_F_MORE;            /* first of several */
    CLIENT(h, 0);
    h.stream = BK_SID_MAX_LOCAL;
    CLIENT(h, 0);

    h = cdata();                                /* OPEN to a name */
    h.flags = BK_F_OPEN | BK_F_NAME | BK_F_CLOSE;
    h.dest = 0;
    h.aux = 8;                                  /* "svc.echo" */
    h.length = 8;
    CLIENT(h, 0);
    h.length = 100;
    CLIENT(h, 0);

    h = cdata();                                /* later message, our id */
    h.flags = 0;
    h.dest = 0;
    CLIENT(h, 0);
    h.stream = BK_SID_PEER_BIT | 5;             /* on a stream a peer opened */
    h.flags = BK_F_CLOSE;                       /* reply */
    CLIENT(h, 0);

    h = cdata();                                /* continuation fragments */
    h.flags = BK_F_CONT | BK_F_MORE;
    h.dest = 0;
    CLIENT(h, 0);
    h.flags = BK_F_CONT;
    CLIENT(h, 0);
    h.flags = BK_F_CONT | BK_F_CLOSE;
    CLIENT(h, 0);

    h = cdata();                                /* fds on the first fragment */
    h.nfds = lim.max_fds;
    CLIENT(h, 0);
    h.nfds = 1;
    h.length = 0;
    CLIENT(h, 0);
}

Test(from_client, data_stream_zero)
{
    bk_hdr_t h = cdata();

    h.stream = 0;
    CLIENT(h, -EPROTO);
    h.flags = BK_F_CONT;
    h.dest = 0;
    CLIENT(h, -EPROTO);
}

Test(from_client, data_close_with_more)
{
    bk_hdr_t h = cdata();

    h.flags = BK_F_OPEN | BK_F_CLOSE | BK_F_MORE;
    CLIENT(h, -EPROTO);
    h.flags = BK_F_CONT | BK_F_CLOSE | BK_F_MORE;
    h.dest = 0;
    CLIENT(h, -EPROTO);
}

Test(from_client, data_too_many_fds)
{
    bk_hdr_t h = cdata();

    h.nfds = lim.max_fds + 1;
    CLIENT(h, -EPROTO);
    h.nfds = 0xff;
    CLIENT(h, -EPROTO);
}

Test(from_client, data_cont_rules)
{
    bk_hdr_t base = cdata();
    bk_hdr_t h;

    base.flags = BK_F_CONT;
    base.dest = 0;

    h = base;
    h.flags |= BK_F_OPEN;
    CLIENT(h, -EPROTO);
    h = base;
    h.flags |= BK_F_NAME;
    CLIENT(h, -EPROTO);
    h = base;
    h.flags |= BK_F_OPEN | BK_F_NAME;
    h.aux = 8;
    CLIENT(h, -EPROTO);
    h = base;
    h.nfds = 1;                                 /* fds only on first */
    CLIENT(h, -EPROTO);
    h = base;
    h.aux = 1;
    CLIENT(h, -EPROTO);
    h = base;
    h.dest = 7;
    CLIENT(h, -EPROTO);
}

Test(from_client, data_name_rules)
{
    bk_hdr_t base = cdata();
    bk_hdr_t h;

    base.flags = BK_F_OPEN | BK_F_NAME;
    base.dest = 0;
    base.aux = 8;
    base.length = 12;
    CLIENT(base, 0);

    h = base;
    h.flags = BK_F_NAME;                        /* NAME without OPEN */
    CLIENT(h, -EPROTO);
    h = base;
    h.aux = 0;                                  /* empty name length */
    CLIENT(h, -EPROTO);
    h = base;
    h.aux = 13;                                 /* name beyond payload */
    CLIENT(h, -EPROTO);
    h = base;
    h.dest = 7;                                 /* both name and id */
    CLIENT(h, -EPROTO);
    h = base;
    h.aux = 12;
    h.length = 12;
    {
        uint8_t bad[12] = "svc echo.abc";     /* space */
        cr_expect_eq(bk_frame_check_from_client(&h, bad, &lim), -EINVAL);
        memcpy(bad, ":vc.echo.abc", 12);        /* reserved prefix */
        cr_expect_eq(bk_frame_check_from_client(&h, bad, &lim), -EINVAL);
        memcpy(bad, "svc\0echo.abc", 12);       /* NUL inside */
        cr_expect_eq(bk_frame_check_from_client(&h, bad, &lim), -EINVAL);
    }
    {
        uint8_t longname[BK_MAX_NAME + 1];
        bk_limits_t small = lim;
        memset(longname, 'a', sizeof(longname));
        h = base;
        h.aux = BK_MAX_NAME;
        h.length = BK_MAX_NAME + 1;
        cr_expect_eq(bk_frame_check_from_client(&h, longname, &lim), 0);
        h.aux = BK_MAX_NAME + 1;
        cr_expect_eq(bk_frame_check_from_client(&h, longname, &lim),
                     -EINVAL);
        small.max_name = 16;
        h.aux = 17;
        cr_expect_eq(bk_frame_check_from_client(&h, longname, &small),
                     -EINVAL);
        h.aux = 16;
        cr_expect_eq(bk_frame_check_from_client(&h, longname, &small), 0);
    }
}

Test(from_client, data_aux_without_name)
{
    bk_hdr_t h = cdata();

    h.aux = 3;
    CLIENT(h, -EPROTO);
    h.flags = 0;
    h.dest = 0;
    CLIENT(h, -EPROTO);
}

Test(from_client, data_addressing)
{
    bk_hdr_t h = cdata();

    h.dest = 0;                                 /* OPEN with no target */
    CLIENT(h, -EPROTO);
    h = cdata();
    h.flags = 0;                                /* dest on an open stream */
    CLIENT(h, -EPROTO);
    h = cdata();
    h.stream = BK_SID_PEER_BIT | 1;             /* opening with a peer id */
    CLIENT(h, -EPROTO);
    h.stream = UINT32_MAX;
    CLIENT(h, -EPROTO);
}

Test(from_client, close_frame)
{
    bk_hdr_t h = hdr(BK_T_CLOSE);

    h.stream = 1;
    CLIENT(h, 0);
    h.aux = 104;                                /* reason */
    h.length = BK_MAX_TEXT;
    CLIENT(h, 0);
    h.length = BK_MAX_TEXT + 1;
    CLIENT(h, -EPROTO);
    h.length = 0;
    h.stream = 0;
    CLIENT(h, -EPROTO);
    h.stream = 1;
    h.dest = 2;
    CLIENT(h, -EPROTO);
}

Test(from_client, ctrl_frame)
{
    bk_hdr_t h = hdr(BK_T_CTRL);

    /* Every op but SEGMENT (its own rules, below) takes an optional name. */
    for (uint32_t op = 1; op <= BK_OP_MAX_; op++) {
        if (op == BK_OP_SEGMENT)
            continue;
        h.aux = op;
        CLIENT(h, 0);
    }
    h.aux = 0;
    CLIENT(h, -EPROTO);
    h.aux = BK_OP_MAX_ + 1;
    CLIENT(h, -EPROTO);
    h.aux = UINT32_MAX;
    CLIENT(h, -EPROTO);
    h.aux = BK_OP_REGISTER;
    h.dest = 1;
    CLIENT(h, -EPROTO);
    h.dest = 0;
    h.length = lim.max_name;
    CLIENT(h, 0);
    h.length = lim.max_name + 1;
    CLIENT(h, -EPROTO);
    h.length = 8;
    h.stream = 12345;                           /* request id: any value */
    CLIENT(h, 0);
}

/* ---- broker -> client --------------------------------------------------- */

Test(from_broker, welcome)
{
    bk_hdr_t h = hdr(BK_T_WELCOME);

    h.length = BK_WELCOME_SIZE;
    BROKER(h, 0);
    h.length = BK_WELCOME_SIZE + 8;             /* room to grow */
    BROKER(h, 0);
    h.length = BK_WELCOME_SIZE - 1;
    BROKER(h, -EPROTO);
    h.length = 40;                              /* the old, pre-shm size */
    BROKER(h, -EPROTO);
    h.length = 0;
    BROKER(h, -EPROTO);
}

Test(from_broker, client_only_types)
{
    bk_hdr_t h = hdr(BK_T_HELLO);

    h.length = 4;
    BROKER(h, -EPROTO);
    h = hdr(BK_T_CTRL);
    h.aux = BK_OP_PING;
    BROKER(h, -EPROTO);
}

Test(from_broker, data)
{
    bk_hdr_t h = bdata();

    BROKER(h, 0);
    h.source = 0;                               /* must be stamped */
    BROKER(h, -EPROTO);
    h = bdata();
    h.stream = 0;
    BROKER(h, -EPROTO);
    h = bdata();
    h.flags = BK_F_OPEN | BK_F_MORE | BK_F_CLOSE;
    BROKER(h, -EPROTO);
    h = bdata();
    h.nfds = lim.max_fds + 1;
    BROKER(h, -EPROTO);
    h.nfds = lim.max_fds;
    BROKER(h, 0);

    /* Named delivery: the name stays in the payload, dest is stamped. */
    h = bdata();
    h.flags = BK_F_OPEN | BK_F_NAME | BK_F_CLOSE;
    h.aux = 8;
    h.length = 8;
    BROKER(h, 0);
    h.aux = 9;
    BROKER(h, -EPROTO);
    h.aux = 0;
    BROKER(h, -EPROTO);
    h.aux = 8;
    h.flags = BK_F_NAME;
    BROKER(h, -EPROTO);

    h = bdata();                                /* continuation */
    h.flags = BK_F_CONT | BK_F_MORE;
    BROKER(h, 0);
    h.nfds = 1;
    BROKER(h, -EPROTO);
    h.nfds = 0;
    h.flags |= BK_F_OPEN;
    BROKER(h, -EPROTO);
    h.flags = BK_F_CONT;
    h.aux = 2;
    BROKER(h, -EPROTO);

    h = bdata();                                /* aux without NAME */
    h.aux = 1;
    BROKER(h, -EPROTO);
}

Test(from_broker, data_bad_name)
{
    bk_hdr_t h = bdata();
    uint8_t bad[8] = "svc*echo";

    h.flags = BK_F_OPEN | BK_F_NAME;
    h.aux = 8;
    h.length = 8;
    cr_expect_eq(bk_frame_check_from_broker(&h, bad, &lim), -EINVAL);
}

Test(from_broker, close_error_reply_bye)
{
    bk_hdr_t h = hdr(BK_T_CLOSE);

    h.stream = BK_SID_PEER_BIT | 3;
    h.aux = 104;
    BROKER(h, 0);
    h.stream = 0;
    BROKER(h, -EPROTO);

    h = hdr(BK_T_ERROR);
    h.stream = 0;                               /* whole connection */
    h.aux = 71;
    h.length = 10;
    BROKER(h, 0);
    h.stream = 5;
    BROKER(h, 0);

    h = hdr(BK_T_CTRL_REPLY);
    h.stream = 1;
    h.aux = 17;
    h.length = 8;
    BROKER(h, 0);

    h = hdr(BK_T_BYE);
    h.aux = 108;
    BROKER(h, 0);
}

/* ---- shared memory: wire constants -------------------------------------- */

Test(shm_wire, constants_are_the_documented_numbers)
{
    cr_expect_eq(BK_T_SEGMENT, 9);
    cr_expect_eq(BK_T_RELEASE, 10);
    cr_expect_eq(BK_T_SEG_DROP, 11);
    cr_expect_eq(BK_T_MONITOR, 12);
    cr_expect_eq(BK_T_GAP, 13);
    cr_expect_eq(BK_T_FLOW, 14);
    cr_expect_eq(BK_T_MAX_, 14);
    cr_expect_eq(BK_F_SHM, 0x20);
    cr_expect_eq(BK_F_TOPIC, 0x40);
    cr_expect_eq(BK_F_ALL_, 0x7f);
    cr_expect_eq(BK_OP_SEGMENT, 6);
    cr_expect_eq(BK_OP_LIST_CLIENTS, 7);
    cr_expect_eq(BK_OP_SHUTDOWN, 12);
    cr_expect_eq(BK_OP_RELOAD, 13);
    cr_expect_eq(BK_OP_MONITOR, 14);
    cr_expect_eq(BK_OP_SUBSCRIBE, 15);
    cr_expect_eq(BK_OP_UNSUBSCRIBE, 16);
    cr_expect_eq(BK_OP_LIST_SUBS, 17);
    cr_expect_eq(BK_OP_REGISTER_EX, 18);
    cr_expect_eq(BK_OP_LIST_USERS, 19);
    cr_expect_eq(BK_OP_MAX_, 19);
    cr_expect_eq(BK_SUB_REQ_FIXED, 8);
    cr_expect_eq(BK_SUB_REQ_MAX, 518);
    cr_expect_eq(BK_SUB_DROP, 0);
    cr_expect_eq(BK_SUB_BLOCK, 1);
    cr_expect_eq(BK_SUB_DISCONNECT, 2);
    cr_expect_eq(BK_GAP_SIZE, 8);
    cr_expect_eq(BK_MAX_TOPIC, 255);
    cr_expect_eq(BK_REG_ALLOW_REPLACEMENT, 1);
    cr_expect_eq(BK_REG_REPLACE_EXISTING, 2);
    cr_expect_eq(BK_REG_QUEUE, 4);
    cr_expect_eq(BK_REG_OWNER, 1);
    cr_expect_eq(BK_REG_QUEUED, 2);
    cr_expect_eq(BK_SEG_REG_SIZE, 16);
    cr_expect_eq(BK_SHM_DESC_SIZE, 24);
    cr_expect_eq(BK_RELEASE_SIZE, 24);
    cr_expect_eq(BK_SEG_DROP_SIZE, 8);
    cr_expect_eq(BK_WELCOME_SIZE, 56);
    cr_expect_eq(BK_SEGID_MAX, 0x7fffffffu);
}

/* ---- shared memory: DATA with BK_F_SHM ------------------------------------ */

/* A valid one-way shm message from a client to client 7: the payload is
 * exactly one descriptor. */
static bk_hdr_t cshm(void)
{
    bk_hdr_t h = cdata();
    h.flags = BK_F_OPEN | BK_F_CLOSE | BK_F_SHM;
    h.length = BK_SHM_DESC_SIZE;
    return h;
}

/* The same message as the receiver gets it. */
static bk_hdr_t bshm(void)
{
    bk_hdr_t h = bdata();
    h.flags = BK_F_OPEN | BK_F_CLOSE | BK_F_SHM;
    h.length = BK_SHM_DESC_SIZE;
    return h;
}

Test(shm_data, accepted_shapes)
{
    bk_hdr_t h = cshm();

    CLIENT(h, 0);                               /* one-way to an id */
    h.flags = BK_F_OPEN | BK_F_SHM;             /* request */
    CLIENT(h, 0);
    h.flags = BK_F_SHM;                         /* later message, own id */
    h.dest = 0;
    CLIENT(h, 0);
    h.stream = BK_SID_PEER_BIT | 9;             /* reply on a peer's stream */
    h.flags = BK_F_CLOSE | BK_F_SHM;
    CLIENT(h, 0);

    h = cshm();                                 /* one-way to a name */
    h.flags = BK_F_OPEN | BK_F_CLOSE | BK_F_NAME | BK_F_SHM;
    h.dest = 0;
    h.aux = 8;                                  /* "svc.echo" */
    h.length = 8 + BK_SHM_DESC_SIZE;
    CLIENT(h, 0);

    h = bshm();
    BROKER(h, 0);
    h.flags = BK_F_OPEN | BK_F_CLOSE | BK_F_NAME | BK_F_SHM;
    h.aux = 8;
    h.length = 8 + BK_SHM_DESC_SIZE;
    BROKER(h, 0);
    h = bshm();
    h.flags = BK_F_CLOSE | BK_F_SHM;            /* a reply */
    BROKER(h, 0);
}

Test(shm_data, never_fragmented)
{
    bk_hdr_t h;

    h = cshm();
    h.flags = BK_F_OPEN | BK_F_SHM | BK_F_MORE;
    CLIENT(h, -EPROTO);
    h = cshm();
    h.flags = BK_F_CONT | BK_F_SHM;
    h.dest = 0;
    CLIENT(h, -EPROTO);
    h.flags = BK_F_CONT | BK_F_SHM | BK_F_MORE;
    CLIENT(h, -EPROTO);
    h.flags = BK_F_CONT | BK_F_SHM | BK_F_CLOSE;
    CLIENT(h, -EPROTO);

    h = bshm();
    h.flags = BK_F_OPEN | BK_F_SHM | BK_F_MORE;
    BROKER(h, -EPROTO);
    h.flags = BK_F_CONT | BK_F_SHM;
    BROKER(h, -EPROTO);
    h.flags = BK_F_CONT | BK_F_SHM | BK_F_MORE;
    BROKER(h, -EPROTO);
}

Test(shm_data, no_fds)
{
    bk_hdr_t h = cshm();

    h.nfds = 1;
    CLIENT(h, -EPROTO);
    h.nfds = (uint8_t)lim.max_fds;
    CLIENT(h, -EPROTO);
    h = bshm();
    h.nfds = 1;
    BROKER(h, -EPROTO);
}

Test(shm_data, payload_is_exactly_one_descriptor)
{
    static const uint32_t bad[] = { 0, 1, BK_SHM_DESC_SIZE - 1,
                                    BK_SHM_DESC_SIZE + 1,
                                    2 * BK_SHM_DESC_SIZE, 4096 };

    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bk_hdr_t h = cshm();
        h.length = bad[i];
        CLIENT(h, -EPROTO);
        h = bshm();
        h.length = bad[i];
        BROKER(h, -EPROTO);

        /* With a name: exactly one descriptor after the name. */
        h = cshm();
        h.flags |= BK_F_NAME;
        h.dest = 0;
        h.aux = 8;
        h.length = 8 + bad[i];
        CLIENT(h, -EPROTO);
        h = bshm();
        h.flags |= BK_F_NAME;
        h.aux = 8;
        h.length = 8 + bad[i];
        BROKER(h, -EPROTO);
    }
}

Test(shm_data, name_rules_still_apply)
{
    bk_hdr_t h = cshm();
    uint8_t buf[8 + BK_SHM_DESC_SIZE];

    h.flags = BK_F_OPEN | BK_F_CLOSE | BK_F_NAME | BK_F_SHM;
    h.dest = 0;
    h.aux = 8;
    h.length = 8 + BK_SHM_DESC_SIZE;
    memset(buf, 0, sizeof(buf));
    memcpy(buf, "svc echo", 8);                 /* invalid name */
    cr_expect_eq(bk_frame_check_from_client(&h, buf, &lim), -EINVAL);
    {
        bk_hdr_t b = h;
        b.source = 3;
        b.dest = 7;
        cr_expect_eq(bk_frame_check_from_broker(&b, buf, &lim), -EINVAL);
    }
    h.aux = h.length + 1;                       /* name beyond payload */
    CLIENT(h, -EPROTO);
    h.aux = 8;
    h.dest = 7;                                 /* name and id */
    CLIENT(h, -EPROTO);
    h.dest = 0;
    h.flags = BK_F_CLOSE | BK_F_NAME | BK_F_SHM; /* NAME without OPEN */
    CLIENT(h, -EPROTO);
}

Test(shm_data, addressing_rules_still_apply)
{
    bk_hdr_t h = cshm();

    h.dest = 0;                                 /* OPEN with no target */
    CLIENT(h, -EPROTO);
    h = cshm();
    h.flags = BK_F_SHM;                         /* dest on an open stream */
    CLIENT(h, -EPROTO);
    h = cshm();
    h.stream = 0;
    CLIENT(h, -EPROTO);
    h = cshm();
    h.aux = 1;                                  /* aux without NAME */
    CLIENT(h, -EPROTO);
    h = cshm();
    h.source = 7;                               /* forged source */
    CLIENT(h, -EPROTO);
    h = bshm();
    h.source = 0;                               /* unstamped delivery */
    BROKER(h, -EPROTO);
    h = bshm();
    h.stream = 0;
    BROKER(h, -EPROTO);
}

/* ---- shared memory: CTRL SEGMENT (client) and SEGMENT (broker) -------------- */

static void put_seg_reg(uint8_t *p, uint32_t segid, uint32_t reserved,
                        uint64_t size)
{
    bk_put32(p, segid);
    bk_put32(p + 4, reserved);
    bk_put64(p + 8, size);
}

static bk_hdr_t ctrl_segment(void)
{
    bk_hdr_t h = hdr(BK_T_CTRL);
    h.aux = BK_OP_SEGMENT;
    h.stream = 77;                              /* request id */
    h.nfds = 1;
    h.length = BK_SEG_REG_SIZE;
    return h;
}

static bk_hdr_t segment_frame(void)
{
    bk_hdr_t h = hdr(BK_T_SEGMENT);
    h.source = 3;                               /* the owner */
    h.dest = 7;
    h.nfds = 1;
    h.length = BK_SEG_REG_SIZE;
    return h;
}

static int seg_client(const bk_hdr_t *h, const uint8_t *p)
{
    return bk_frame_check_from_client(h, p, &lim);
}

static int seg_broker(const bk_hdr_t *h, const uint8_t *p)
{
    return bk_frame_check_from_broker(h, p, &lim);
}

Test(shm_segment, valid_registration)
{
    uint8_t p[BK_SEG_REG_SIZE];
    bk_hdr_t c = ctrl_segment(), b = segment_frame();

    put_seg_reg(p, 1, 0, 4096);
    cr_expect_eq(seg_client(&c, p), 0);
    cr_expect_eq(seg_broker(&b, p), 0);
    put_seg_reg(p, BK_SEGID_MAX, 0, 1);
    cr_expect_eq(seg_client(&c, p), 0);
    cr_expect_eq(seg_broker(&b, p), 0);
    /* Sizes are bounded by the broker's limits, not by the codec. */
    put_seg_reg(p, 5, 0, UINT64_MAX);
    cr_expect_eq(seg_client(&c, p), 0);
    cr_expect_eq(seg_broker(&b, p), 0);
    c.stream = 0;                               /* request id: any value */
    cr_expect_eq(seg_client(&c, p), 0);
    c.stream = UINT32_MAX;
    cr_expect_eq(seg_client(&c, p), 0);
}

Test(shm_segment, exactly_one_fd)
{
    uint8_t p[BK_SEG_REG_SIZE];
    bk_hdr_t c = ctrl_segment(), b = segment_frame();
    static const uint8_t bad[] = { 0, 2, 3, BK_DEF_MAX_FDS, 0xff };

    put_seg_reg(p, 1, 0, 4096);
    for (unsigned i = 0; i < sizeof(bad); i++) {
        c.nfds = bad[i];
        b.nfds = bad[i];
        cr_expect_eq(seg_client(&c, p), -EPROTO, "CTRL SEGMENT nfds %u",
                     bad[i]);
        cr_expect_eq(seg_broker(&b, p), -EPROTO, "SEGMENT nfds %u", bad[i]);
    }
    /* Other control ops carry no fd. */
    for (uint32_t op = 1; op <= BK_OP_MAX_; op++) {
        bk_hdr_t h = hdr(BK_T_CTRL);
        if (op == BK_OP_SEGMENT)
            continue;
        h.aux = op;
        h.nfds = 1;
        CLIENT(h, -EPROTO);
    }
}

Test(shm_segment, payload_size)
{
    uint8_t p[64];
    static const uint32_t bad[] = { 0, 8, BK_SEG_REG_SIZE - 1,
                                    BK_SEG_REG_SIZE + 1, 24, 32 };

    memset(p, 0, sizeof(p));
    put_seg_reg(p, 1, 0, 4096);
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bk_hdr_t c = ctrl_segment(), b = segment_frame();
        c.length = b.length = bad[i];
        cr_expect_eq(seg_client(&c, p), -EPROTO, "length %u", bad[i]);
        cr_expect_eq(seg_broker(&b, p), -EPROTO, "length %u", bad[i]);
    }
}

Test(shm_segment, payload_fields)
{
    static const struct { uint32_t segid, reserved; uint64_t size; } bad[] = {
        { 0, 0, 4096 },                         /* segid 0 */
        { BK_SEGID_MAX + 1, 0, 4096 },          /* the broker's id space */
        { UINT32_MAX, 0, 4096 },
        { 1, 1, 4096 },                         /* reserved must be 0 */
        { 1, 0x80000000u, 4096 },
        { 1, 0x00010000u, 4096 },
        { 1, 0, 0 },                            /* empty segment */
    };
    uint8_t p[BK_SEG_REG_SIZE];

    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bk_hdr_t c = ctrl_segment(), b = segment_frame();
        put_seg_reg(p, bad[i].segid, bad[i].reserved, bad[i].size);
        cr_expect_eq(seg_client(&c, p), -EPROTO, "case %u", i);
        cr_expect_eq(seg_broker(&b, p), -EPROTO, "case %u", i);
    }
}

Test(shm_segment, header_fields)
{
    uint8_t p[BK_SEG_REG_SIZE];
    bk_hdr_t h;

    put_seg_reg(p, 1, 0, 4096);
    h = ctrl_segment();
    h.dest = 1;
    cr_expect_eq(seg_client(&h, p), -EPROTO, "CTRL SEGMENT with dest");
    h = ctrl_segment();
    h.source = 1;
    cr_expect_eq(seg_client(&h, p), -EPROTO, "forged source");
    h = ctrl_segment();
    h.flags = BK_F_SHM;
    cr_expect_eq(seg_client(&h, p), -EPROTO, "flags on CTRL");
    h = ctrl_segment();
    h.length = lim.max_packet - BK_HDR_SIZE + 1;
    cr_expect_eq(seg_client(&h, p), -EMSGSIZE);

    h = segment_frame();
    h.source = 0;                               /* the owner must be named */
    cr_expect_eq(seg_broker(&h, p), -EPROTO);
    h = segment_frame();
    h.flags = BK_F_OPEN;
    cr_expect_eq(seg_broker(&h, p), -EPROTO);
}

Test(shm_segment, direction)
{
    uint8_t p[BK_SEG_REG_SIZE];
    bk_hdr_t h;

    put_seg_reg(p, 1, 0, 4096);
    h = segment_frame();                        /* broker-only */
    h.source = 0;
    h.dest = 0;
    cr_expect_eq(seg_client(&h, p), -EPROTO);
    h = ctrl_segment();                         /* client-only */
    cr_expect_eq(seg_broker(&h, p), -EPROTO);
}

/* ---- shared memory: RELEASE and SEG_DROP ----------------------------------- */

static bk_hdr_t release_frame(uint32_t records)
{
    bk_hdr_t h = hdr(BK_T_RELEASE);
    h.length = records * BK_RELEASE_SIZE;
    return h;
}

Test(shm_release, record_count)
{
    uint32_t most = (lim.max_packet - BK_HDR_SIZE) / BK_RELEASE_SIZE;
    bk_hdr_t h;

    for (uint32_t n = 1; n <= 3; n++) {
        h = release_frame(n);
        BOTH(h, 0);
    }
    h = release_frame(most);
    BOTH(h, 0);
    h = release_frame(most + 1);
    BOTH(h, -EMSGSIZE);
    h = release_frame(0);
    BOTH(h, -EPROTO);
    static const uint32_t partial[] = { 1, BK_RELEASE_SIZE - 1,
                                        BK_RELEASE_SIZE + 1,
                                        2 * BK_RELEASE_SIZE - 1, 16 };
    for (unsigned i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        h = release_frame(0);
        h.length = partial[i];
        BOTH(h, -EPROTO);
    }
}

Test(shm_release, header_fields)
{
    bk_hdr_t h;

    h = release_frame(1);
    h.stream = 1;
    BOTH(h, -EPROTO);
    h = release_frame(1);
    h.aux = 1;
    BOTH(h, -EPROTO);
    h = release_frame(1);
    h.nfds = 1;
    BOTH(h, -EPROTO);
    h = release_frame(1);
    h.flags = BK_F_SHM;
    BOTH(h, -EPROTO);
    h = release_frame(1);
    h.dest = 5;                                 /* releases go to the broker */
    CLIENT(h, -EPROTO);
    h = release_frame(1);
    h.source = 5;
    CLIENT(h, -EPROTO);
}

Test(shm_seg_drop, frame)
{
    bk_hdr_t h = hdr(BK_T_SEG_DROP);

    h.source = 3;
    h.length = BK_SEG_DROP_SIZE;
    BROKER(h, 0);
    h.source = 0;                               /* whose segment? */
    BROKER(h, -EPROTO);
    static const uint32_t bad[] = { 0, 4, BK_SEG_DROP_SIZE - 1,
                                    BK_SEG_DROP_SIZE + 1, 16 };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h.source = 3;
        h.length = bad[i];
        BROKER(h, -EPROTO);
    }
    h.length = BK_SEG_DROP_SIZE;
    h.nfds = 1;
    BROKER(h, -EPROTO);
    h.nfds = 0;
    h.source = 0;
    CLIENT(h, 0);                               /* the owner drops it */
    h.source = 3;
    CLIENT(h, -EPROTO);                         /* clients write 0 */
}

/* ---- shared memory: descriptor codec ---------------------------------------- */

Test(shm_desc, encode_layout)
{
    bk_shm_desc_t d = {
        .segid = 0x14131211u,
        .offset = UINT64_C(0x2827262524232221),
        .length = UINT64_C(0x3837363534333231),
    };
    static const uint8_t want[BK_SHM_DESC_SIZE] = {
        0x11, 0x12, 0x13, 0x14,
        0x00, 0x00, 0x00, 0x00,
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
        0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,
    };
    uint8_t out[BK_SHM_DESC_SIZE];
    bk_shm_desc_t back;

    memset(out, 0xee, sizeof(out));
    bk_shm_desc_encode(&d, out);
    expect_bytes(out, want, BK_SHM_DESC_SIZE);
    memset(&back, 0x5a, sizeof(back));
    cr_assert_eq(bk_shm_desc_decode(want, &back), 0);
    cr_expect_eq(back.segid, d.segid);
    cr_expect_eq(back.offset, d.offset);
    cr_expect_eq(back.length, d.length);
}

Test(shm_desc, roundtrip_extremes)
{
    bk_shm_desc_t in[] = {
        { 1, 0, 0 },
        { BK_SEGID_MAX, UINT64_MAX, UINT64_MAX },
        { 0x40000000u, UINT64_C(1) << 63, UINT64_C(1) << 32 },
    };

    for (unsigned i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        uint8_t wire[BK_SHM_DESC_SIZE];
        bk_shm_desc_t out;
        bk_shm_desc_encode(&in[i], wire);
        memset(&out, 0, sizeof(out));
        cr_assert_eq(bk_shm_desc_decode(wire, &out), 0, "case %u", i);
        cr_assert_eq(out.segid, in[i].segid);
        cr_assert_eq(out.offset, in[i].offset);
        cr_assert_eq(out.length, in[i].length);
    }
}

Test(shm_desc, decode_rejects)
{
    bk_shm_desc_t d = { 1, 4096, 100 }, out;
    uint8_t wire[BK_SHM_DESC_SIZE];

    bk_shm_desc_encode(&d, wire);
    bk_put32(wire, 0);
    cr_expect_eq(bk_shm_desc_decode(wire, &out), -EPROTO, "segid 0");
    bk_put32(wire, BK_SEGID_MAX + 1);
    cr_expect_eq(bk_shm_desc_decode(wire, &out), -EPROTO, "segid 2^31");
    bk_put32(wire, UINT32_MAX);
    cr_expect_eq(bk_shm_desc_decode(wire, &out), -EPROTO, "segid ~0");
    /* Each byte of the reserved word on its own. */
    for (int i = 4; i < 8; i++) {
        bk_shm_desc_encode(&d, wire);
        wire[i] = 0x01;
        cr_expect_eq(bk_shm_desc_decode(wire, &out), -EPROTO,
                     "reserved byte %d", i);
    }
}

Test(shm_desc, fits)
{
    static const struct {
        uint64_t offset, length, size;
        bool fits;
    } c[] = {
        { 0, 4096, 4096, true },                /* the whole segment */
        { 0, 4097, 4096, false },
        { 4000, 96, 4096, true },               /* ends at the end */
        { 4000, 97, 4096, false },              /* one byte past */
        { 4096, 0, 4096, true },                /* empty, at the end */
        { 4096, 1, 4096, false },
        { 4097, 0, 4096, false },               /* starts past the end */
        { 0, 0, 0, true },
        { 8, UINT64_MAX - 4, 4096, false },     /* offset + length wraps */
        { UINT64_MAX, 2, 4096, false },
        { UINT64_MAX, UINT64_MAX, UINT64_MAX, false },
        { 1, UINT64_MAX, UINT64_MAX, false },
        { 0, UINT64_MAX, UINT64_MAX, true },
        { UINT64_MAX, 0, UINT64_MAX, true },
        { UINT64_MAX - 10, 10, UINT64_MAX, true },
        { UINT64_MAX - 10, 11, UINT64_MAX, false },
    };

    for (unsigned i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        bk_shm_desc_t d = { 1, c[i].offset, c[i].length };
        cr_expect_eq(bk_shm_desc_fits(&d, c[i].size), c[i].fits,
                     "case %u: offset %llu length %llu in %llu", i,
                     (unsigned long long)c[i].offset,
                     (unsigned long long)c[i].length,
                     (unsigned long long)c[i].size);
    }
}

/* ---- names ------------------------------------------------------------- */

static bool nv(const char *s)
{
    return bk_name_valid(s, strlen(s), BK_MAX_NAME);
}

Test(name, valid)
{
    static const char *const good[] = {
        "a", "svc.echo", "org.example/Service_1-2", "a:b",
        "ABCXYZabcxyz0189._:/-", "/", "-", ".",
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect(nv(good[i]), "'%s' is a valid name", good[i]);
}

Test(name, invalid)
{
    static const char *const bad[] = {
        ":reserved", ":", "a b", "a*", "tab\tx", "new\nline",
        "caf\xc3\xa9", "a\x7f", "a@b", "a\\b",
    };

    cr_expect_not(bk_name_valid("", 0, BK_MAX_NAME));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_not(nv(bad[i]), "'%s' is not a valid name", bad[i]);
    cr_expect_not(bk_name_valid("a\0b", 3, BK_MAX_NAME));
}

Test(name, every_byte)
{
    for (int c = 0; c < 256; c++) {
        char s[2] = { 'x', (char)c };
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == '-' || c == ':' || c == '/';
        cr_expect_eq(bk_name_valid(s, 2, BK_MAX_NAME), want, "byte 0x%02x",
                     c);
    }
}

Test(name, length_limits)
{
    char buf[BK_MAX_NAME + 2];

    memset(buf, 'n', sizeof(buf));
    cr_expect(bk_name_valid(buf, BK_MAX_NAME, BK_MAX_NAME));
    cr_expect_not(bk_name_valid(buf, BK_MAX_NAME + 1, BK_MAX_NAME));
    cr_expect(bk_name_valid(buf, 10, 10));
    cr_expect_not(bk_name_valid(buf, 11, 10));
    cr_expect(bk_name_valid(buf, 1, 1));
}

/* ---- welcome ----------------------------------------------------------- */

Test(welcome, encode_layout)
{
    bk_welcome_t w = {
        .client_id = UINT64_C(0x0807060504030201),
        .max_packet = 0x14131211u,
        .max_fds = 0x24232221u,
        .max_msg = UINT64_C(0x3837363534333231),
        .max_name = 0x44434241u,
        .max_streams = 0x54535251u,
        .queue_limit = UINT64_C(0x6867666564636261),
        .max_segments = 0x74737271u,
        .reserved = 0xdeadbeefu,                /* never goes on the wire */
        .max_shm = UINT64_C(0x9897969594939291),
    };
    static const uint8_t want[BK_WELCOME_SIZE] = {
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x11, 0x12, 0x13, 0x14,
        0x21, 0x22, 0x23, 0x24,
        0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,
        0x41, 0x42, 0x43, 0x44,
        0x51, 0x52, 0x53, 0x54,
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
        0x71, 0x72, 0x73, 0x74,                 /* 40: max_segments */
        0x00, 0x00, 0x00, 0x00,                 /* 44: reserved */
        0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, /* 48: max_shm */
    };
    uint8_t out[BK_WELCOME_SIZE];
    bk_welcome_t back;

    memset(out, 0xee, sizeof(out));
    bk_welcome_encode(&w, out);
    expect_bytes(out, want, BK_WELCOME_SIZE);

    memset(&back, 0, sizeof(back));
    bk_welcome_decode(want, &back);
    cr_expect_eq(back.client_id, w.client_id);
    cr_expect_eq(back.max_packet, w.max_packet);
    cr_expect_eq(back.max_fds, w.max_fds);
    cr_expect_eq(back.max_msg, w.max_msg);
    cr_expect_eq(back.max_name, w.max_name);
    cr_expect_eq(back.max_streams, w.max_streams);
    cr_expect_eq(back.queue_limit, w.queue_limit);
    cr_expect_eq(back.max_segments, w.max_segments);
    cr_expect_eq(back.max_shm, w.max_shm);
    cr_expect_eq(back.reserved, 0);
}

Test(welcome, reserved_field_is_ignored_on_decode)
{
    uint8_t wire[BK_WELCOME_SIZE];
    bk_welcome_t w = { .max_segments = 5, .max_shm = 1234 }, back;

    bk_welcome_encode(&w, wire);
    memset(wire + 44, 0xff, 4);         /* a newer broker's use of it */
    memset(&back, 0x5a, sizeof(back));
    bk_welcome_decode(wire, &back);
    cr_expect_eq(back.reserved, 0);
    cr_expect_eq(back.max_segments, 5);
    cr_expect_eq(back.max_shm, 1234);
}

Test(welcome, roundtrip_defaults_and_extremes)
{
    bk_welcome_t in[2] = {
        { 1, BK_DEF_MAX_PACKET, BK_DEF_MAX_FDS, BK_DEF_MAX_MSG, BK_MAX_NAME,
          BK_DEF_MAX_STREAMS, BK_DEF_QUEUE_LIMIT, BK_DEF_MAX_SEGMENTS, 0,
          BK_DEF_MAX_SHM },
        { UINT64_MAX, UINT32_MAX, UINT32_MAX, UINT64_MAX, UINT32_MAX,
          UINT32_MAX, UINT64_MAX, UINT32_MAX, 0, UINT64_MAX },
    };

    for (int i = 0; i < 2; i++) {
        uint8_t wire[BK_WELCOME_SIZE];
        bk_welcome_t out;
        bk_welcome_encode(&in[i], wire);
        memset(&out, 0, sizeof(out));
        bk_welcome_decode(wire, &out);
        cr_assert_eq(out.client_id, in[i].client_id);
        cr_assert_eq(out.max_packet, in[i].max_packet);
        cr_assert_eq(out.max_fds, in[i].max_fds);
        cr_assert_eq(out.max_msg, in[i].max_msg);
        cr_assert_eq(out.max_name, in[i].max_name);
        cr_assert_eq(out.max_streams, in[i].max_streams);
        cr_assert_eq(out.queue_limit, in[i].queue_limit);
        cr_assert_eq(out.max_segments, in[i].max_segments);
        cr_assert_eq(out.max_shm, in[i].max_shm);
    }
}

/* ---- publish/subscribe: PUBLISH (client -> broker) ---------------------- */

/* A valid one-way publication to "svc.echo" (pl's first 8 bytes). */
static bk_hdr_t cpub(void)
{
    bk_hdr_t h = hdr(BK_T_DATA);
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE;
    h.stream = 1;
    h.aux = 8;
    h.length = 12;
    return h;
}

/* A valid delivered publication on subscription 5. */
static bk_hdr_t bpub(void)
{
    bk_hdr_t h = cpub();
    h.stream = BK_SID_PEER_BIT | 9;
    h.source = 3;
    h.dest = 5;
    return h;
}

#define CLIENT_P(h, p, want) \
    cr_expect_eq(bk_frame_check_from_client(&(h), (const uint8_t *)(p), \
                                            &lim), (want), \
                 "from client line %d", __LINE__)
#define BROKER_P(h, p, want) \
    cr_expect_eq(bk_frame_check_from_broker(&(h), (const uint8_t *)(p), \
                                            &lim), (want), \
                 "from broker line %d", __LINE__)

Test(publish, accepted_shapes)
{
    bk_hdr_t h = cpub();

    CLIENT(h, 0);                               /* single fragment */
    h.length = 8;                               /* no data at all */
    CLIENT(h, 0);
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_MORE; /* first of several */
    CLIENT(h, 0);
    h = cpub();
    h.nfds = lim.max_fds;                       /* fds on the first */
    CLIENT(h, 0);
    h = cpub();
    h.stream = BK_SID_MAX_LOCAL;
    CLIENT(h, 0);
    /* Continuations of a publication are plain continuations. */
    h = hdr(BK_T_DATA);
    h.stream = 1;
    h.flags = BK_F_CONT | BK_F_MORE;
    CLIENT(h, 0);
    h.flags = BK_F_CONT | BK_F_CLOSE;
    CLIENT(h, 0);
}

Test(publish, first_fragment_must_open_and_close_or_continue)
{
    bk_hdr_t h = cpub();

    h.flags = BK_F_OPEN | BK_F_TOPIC;           /* neither MORE nor CLOSE */
    CLIENT(h, -EPROTO);
    h.flags = BK_F_TOPIC | BK_F_CLOSE;          /* not OPEN */
    CLIENT(h, -EPROTO);
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_CLOSE | BK_F_MORE;
    CLIENT(h, -EPROTO);
    h.flags = BK_F_CONT | BK_F_TOPIC | BK_F_CLOSE; /* TOPIC on a cont */
    h.aux = 0;
    CLIENT(h, -EPROTO);
    h.aux = 8;
    CLIENT(h, -EPROTO);
    h = cpub();                                 /* on a peer's stream */
    h.stream = BK_SID_PEER_BIT | 1;
    CLIENT(h, -EPROTO);
    h.stream = 0;
    CLIENT(h, -EPROTO);
}

Test(publish, addressing)
{
    bk_hdr_t h = cpub();

    h.dest = 7;         /* a gateway subscription's id: the daemon checks it */
    CLIENT(h, 0);
    h.dest = UINT32_MAX;
    CLIENT(h, 0);
    h.dest = UINT64_C(1) << 32;                 /* not a subscription id */
    CLIENT(h, -EPROTO);
    h.dest = 0;
    h.flags |= BK_F_NAME;                       /* never both */
    CLIENT(h, -EPROTO);
    h.source = 1;
    h.flags &= (uint8_t)~BK_F_NAME;
    CLIENT(h, -EPROTO);
}

Test(publish, topic_length_in_aux)
{
    bk_hdr_t h = cpub();
    static uint8_t big[BK_MAX_TOPIC + 8];

    h.aux = 0;
    CLIENT(h, -EPROTO);
    h.aux = 13;                                 /* beyond the payload */
    CLIENT(h, -EPROTO);
    memset(big, 'x', sizeof big);
    h.length = sizeof big;
    h.aux = BK_MAX_TOPIC;
    CLIENT_P(h, big, 0);
    h.aux = BK_MAX_TOPIC + 1;
    CLIENT_P(h, big, -EPROTO);
    h.aux = UINT32_MAX;
    CLIENT_P(h, big, -EPROTO);
    h.length = 12;
    h.aux = 3;                                  /* "svc" alone: valid */
    CLIENT(h, 0);
    h.aux = 4;                                  /* "svc.": not a topic */
    CLIENT(h, -EINVAL);
}

Test(publish, bad_topics_are_einval)
{
    static const char *const bad[] = { "a..b", ".a", "a.", "a b", "a.*",
                                       "a*", ">", "*", "a.>", "a\x01" };
    for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
        bk_hdr_t h = cpub();
        h.aux = (uint32_t)strlen(bad[i]);
        h.length = h.aux + 2;
        char buf[16];
        memcpy(buf, bad[i], h.aux);
        memcpy(buf + h.aux, "hi", 2);
        cr_expect_eq(bk_frame_check_from_client(&h, (uint8_t *)buf, &lim),
                     -EINVAL, "topic '%s'", bad[i]);
        h.stream = BK_SID_PEER_BIT | 1;
        h.dest = 5;
        cr_expect_eq(bk_frame_check_from_broker(&h, (uint8_t *)buf, &lim),
                     -EINVAL, "topic '%s'", bad[i]);
    }
    /* A framing error wins over a bad topic. */
    bk_hdr_t h = cpub();
    h.aux = 4;
    h.dest = UINT64_C(1) << 32;
    CLIENT_P(h, "a..b", -EPROTO);
}

Test(publish, shm)
{
    bk_hdr_t h = cpub();

    h.flags |= BK_F_SHM;
    h.length = 8 + BK_SHM_DESC_SIZE;            /* topic + descriptor */
    CLIENT(h, 0);
    h.length = 8 + BK_SHM_DESC_SIZE + 1;
    CLIENT(h, -EPROTO);
    h.length = BK_SHM_DESC_SIZE;                /* topic not counted */
    CLIENT(h, -EPROTO);
    h.length = 8 + BK_SHM_DESC_SIZE;
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_SHM | BK_F_MORE;
    CLIENT(h, -EPROTO);                         /* never fragmented */
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_SHM | BK_F_CLOSE;
    h.nfds = 1;
    CLIENT(h, -EPROTO);                         /* no fds with SHM */

    h = bpub();
    h.flags |= BK_F_SHM;
    h.length = 8 + BK_SHM_DESC_SIZE;
    BROKER(h, 0);
    h.length--;
    BROKER(h, -EPROTO);
}

/* ---- publish/subscribe: delivery (broker -> client) --------------------- */

Test(delivery, accepted_shapes)
{
    bk_hdr_t h = bpub();

    BROKER(h, 0);
    h.source = 0;                               /* the broker's own */
    BROKER(h, 0);
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_MORE;
    BROKER(h, 0);
    h.dest = UINT32_MAX;                        /* largest sub id */
    BROKER(h, 0);
    h = bpub();
    h.nfds = 2;
    BROKER(h, 0);
    /* Continuations carry the subscription id too. */
    h = hdr(BK_T_DATA);
    h.stream = BK_SID_PEER_BIT | 9;
    h.source = 3;
    h.dest = 5;
    h.flags = BK_F_CONT | BK_F_CLOSE;
    BROKER(h, 0);
}

Test(delivery, refused_shapes)
{
    bk_hdr_t h = bpub();

    h.dest = 0;                                 /* no subscription */
    BROKER(h, -EPROTO);
    h.dest = (uint64_t)UINT32_MAX + 1;          /* upper bits are 0 */
    BROKER(h, -EPROTO);
    h = bpub();
    h.stream = 9;                               /* not the broker's */
    BROKER(h, -EPROTO);
    h = bpub();
    h.flags = BK_F_OPEN | BK_F_TOPIC;           /* not one-way */
    BROKER(h, -EPROTO);
    h.flags = BK_F_TOPIC | BK_F_CLOSE;
    BROKER(h, -EPROTO);
    h.flags = BK_F_OPEN | BK_F_TOPIC | BK_F_NAME | BK_F_CLOSE;
    BROKER(h, -EPROTO);
    h = bpub();
    h.aux = 0;
    BROKER(h, -EPROTO);
    h.aux = 13;
    BROKER(h, -EPROTO);
    /* Source 0 is the broker's own publications only. */
    h = bdata();
    h.source = 0;
    BROKER(h, -EPROTO);
    h.flags = BK_F_CONT;
    BROKER(h, -EPROTO);
}

/* ---- GAP (broker -> client) --------------------------------------------- */

static bk_hdr_t bgap(void)
{
    bk_hdr_t h = hdr(BK_T_GAP);
    h.aux = 5;
    h.dest = 7;
    h.length = BK_GAP_SIZE;
    return h;
}

Test(gap, accepted)
{
    bk_hdr_t h = bgap();

    BROKER(h, 0);
    h.aux = UINT32_MAX;
    BROKER(h, 0);
}

Test(gap, refused_shapes)
{
    bk_hdr_t h = bgap();

    h.aux = 0;
    BROKER(h, -EPROTO);
    h = bgap();
    h.stream = 1;
    BROKER(h, -EPROTO);
    h = bgap();
    h.source = 3;
    BROKER(h, -EPROTO);
    for (uint32_t len = 0; len < 20; len++) {
        h = bgap();
        h.length = len;
        BROKER(h, len == BK_GAP_SIZE ? 0 : -EPROTO);
    }
    h = bgap();
    expect_no_data_fields(bk_frame_check_from_broker, h, BK_F_MORE, 2);
    h.flags = BK_F_TOPIC;
    BROKER(h, -EPROTO);
}

Test(gap, never_from_a_client)
{
    bk_hdr_t h = bgap();

    CLIENT(h, -EPROTO);
    h.dest = 0;
    CLIENT(h, -EPROTO);
}

/* ---- FLOW (broker -> client) -------------------------------------------- */

static bk_hdr_t bflow(uint32_t state, uint32_t len)
{
    bk_hdr_t h = hdr(BK_T_FLOW);
    h.aux = state;
    h.stream = state == BK_FLOW_BUSY ? 5 : 0;
    h.source = 9;
    h.dest = 7;
    h.length = len;
    return h;
}

Test(flow, accepted)
{
    bk_hdr_t h = bflow(BK_FLOW_BUSY, 0);

    BROKER(h, 0);
    h = bflow(BK_FLOW_BUSY, BK_MAX_NAME);
    BROKER(h, 0);
    h = bflow(BK_FLOW_READY, 0);
    BROKER(h, 0);
}

Test(flow, refused_shapes)
{
    bk_hdr_t h = bflow(BK_FLOW_BUSY, 8);

    h.source = 0;
    BROKER(h, -EPROTO);
    h = bflow(BK_FLOW_BUSY, 8);
    h.stream = 0;
    BROKER(h, -EPROTO);
    h = bflow(BK_FLOW_READY, 0);
    h.stream = 1;
    BROKER(h, -EPROTO);
    h = bflow(2, 0);
    BROKER(h, -EPROTO);
    h = bflow(BK_FLOW_BUSY, BK_MAX_NAME + 1);
    BROKER(h, -EPROTO);
    h = bflow(BK_FLOW_READY, 1);
    BROKER(h, -EPROTO);
    h = bflow(BK_FLOW_BUSY, 8);
    h.flags = BK_F_OPEN;
    BROKER(h, -EPROTO);
}

Test(flow, never_from_a_client)
{
    bk_hdr_t h = bflow(BK_FLOW_BUSY, 0);

    CLIENT(h, -EPROTO);
    h = bflow(BK_FLOW_READY, 0);
    h.source = 0;
    h.dest = 0;
    CLIENT(h, -EPROTO);
}

/* ---- publish/subscribe: CTRL request bounds ----------------------------- */

Test(ctrl_pubsub, request_size_bounds)
{
    bk_hdr_t h = hdr(BK_T_CTRL);

    h.stream = 1;
    h.aux = BK_OP_SUBSCRIBE;
    h.length = BK_SUB_REQ_MAX;
    CLIENT(h, 0);
    h.length = BK_SUB_REQ_MAX + 1;
    CLIENT(h, -EPROTO);
    h.length = 0;                               /* ctrl.c: EINVAL */
    CLIENT(h, 0);

    h.aux = BK_OP_REGISTER_EX;
    h.length = 4 + lim.max_name;
    CLIENT(h, 0);
    h.length = 5 + lim.max_name;
    CLIENT(h, -EPROTO);
    bk_limits_t small = lim;
    small.max_name = 16;
    h.length = 20;
    cr_expect_eq(bk_frame_check_from_client(&h, pl, &small), 0);
    h.length = 21;
    cr_expect_eq(bk_frame_check_from_client(&h, pl, &small), -EPROTO);

    static const uint32_t plain[] = { BK_OP_UNSUBSCRIBE, BK_OP_LIST_SUBS,
                                      BK_OP_REGISTER };
    for (unsigned i = 0; i < sizeof plain / sizeof *plain; i++) {
        h.aux = plain[i];
        h.length = lim.max_name;
        CLIENT(h, 0);
        h.length = lim.max_name + 1;
        CLIENT(h, -EPROTO);
    }
    /* SUBSCRIBE's bound does not depend on max_name. */
    h.aux = BK_OP_SUBSCRIBE;
    h.length = BK_SUB_REQ_MAX;
    cr_expect_eq(bk_frame_check_from_client(&h, pl, &small), 0);
    /* No fds, flags or dest on the new ops. */
    h.length = 8;
    h.nfds = 1;
    CLIENT(h, -EPROTO);
    h.nfds = 0;
    h.flags = BK_F_TOPIC;
    CLIENT(h, -EPROTO);
    h.flags = 0;
    h.dest = 1;
    CLIENT(h, -EPROTO);
}

/* ---- names for people (the daemon's trace, brokerctl monitor) ---------- */

Test(names, type_names_follow_the_page)
{
    cr_assert_str_eq(bk_type_name(BK_T_HELLO), "HELLO");
    cr_assert_str_eq(bk_type_name(BK_T_DATA), "DATA");
    cr_assert_str_eq(bk_type_name(BK_T_SEG_DROP), "SEG_DROP");
    cr_assert_str_eq(bk_type_name(BK_T_GAP), "GAP");
    cr_assert_str_eq(bk_type_name(BK_T_FLOW), "FLOW");
    cr_assert_str_eq(bk_type_name(0), "?");
    cr_assert_str_eq(bk_type_name(200), "?");
}

Test(names, flags_joined_and_cut_to_the_buffer)
{
    char buf[48], small[8];

    bk_flags_str(0, buf, sizeof(buf));
    cr_assert_str_eq(buf, "-");
    bk_flags_str(BK_F_OPEN | BK_F_NAME, buf, sizeof(buf));
    cr_assert_str_eq(buf, "OPEN,NAME");
    bk_flags_str(0x7f, buf, sizeof(buf));
    cr_assert_str_eq(buf, "MORE,CONT,OPEN,CLOSE,NAME,SHM,TOPIC");
    bk_flags_str(0x7f, small, sizeof(small));
    cr_assert_str_eq(small, "MORE,CO", "cut, still terminated");
}
