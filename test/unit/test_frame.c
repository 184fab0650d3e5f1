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
    for (unsigned i = 0; i < BK_HDR_SIZE; i++)
        cr_expect_eq(out[i], hdr_bytes[i], "byte %u: got 0x%02x want 0x%02x",
                     i, out[i], hdr_bytes[i]);
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
    static const uint8_t bad[] = { 0x20, 0x40, 0x80, 0xe0 };

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
    static const uint8_t ctypes[] = { BK_T_HELLO, BK_T_CLOSE, BK_T_CTRL };
    static const uint8_t btypes[] = { BK_T_WELCOME, BK_T_CLOSE, BK_T_ERROR,
                                      BK_T_CTRL_REPLY, BK_T_BYE };

    for (unsigned i = 0; i < sizeof(ctypes); i++) {
        bk_hdr_t h = hdr(ctypes[i]);
        h.stream = ctypes[i] == BK_T_HELLO ? 0 : 1;
        h.aux = ctypes[i] == BK_T_CTRL ? BK_OP_PING : 0;
        h.length = ctypes[i] == BK_T_HELLO ? 4 : 0;
        CLIENT(h, 0);
        h.flags = BK_F_MORE;
        CLIENT(h, -EPROTO);
        h.flags = 0;
        h.nfds = 1;
        CLIENT(h, -EPROTO);
    }
    for (unsigned i = 0; i < sizeof(btypes); i++) {
        bk_hdr_t h = hdr(btypes[i]);
        h.stream = 1;
        h.length = btypes[i] == BK_T_WELCOME ? BK_WELCOME_SIZE : 0;
        BROKER(h, 0);
        h.flags = BK_F_CLOSE;
        BROKER(h, -EPROTO);
        h.flags = 0;
        h.nfds = 2;
        BROKER(h, -EPROTO);
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
                                 BK_T_BYE };

    for (unsigned i = 0; i < sizeof(t); i++) {
        bk_hdr_t h = hdr(t[i]);
        h.stream = 1;
        h.length = t[i] == BK_T_WELCOME ? BK_WELCOME_SIZE : 0;
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

    for (uint32_t op = 1; op <= BK_OP_MAX_; op++) {
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

/* ---- names ------------------------------------------------------------- */

static bool nv(const char *s)
{
    return bk_name_valid(s, strlen(s), BK_MAX_NAME);
}

Test(name, valid)
{
    cr_expect(nv("a"));
    cr_expect(nv("svc.echo"));
    cr_expect(nv("org.example/Service_1-2"));
    cr_expect(nv("a:b"));
    cr_expect(nv("ABCXYZabcxyz0189._:/-"));
    cr_expect(nv("/"));
    cr_expect(nv("-"));
    cr_expect(nv("."));
}

Test(name, invalid)
{
    cr_expect_not(bk_name_valid("", 0, BK_MAX_NAME));
    cr_expect_not(nv(":reserved"));
    cr_expect_not(nv(":"));
    cr_expect_not(nv("a b"));
    cr_expect_not(nv("a*"));
    cr_expect_not(nv("tab\tx"));
    cr_expect_not(nv("new\nline"));
    cr_expect_not(nv("caf\xc3\xa9"));
    cr_expect_not(nv("a\x7f"));
    cr_expect_not(nv("a@b"));
    cr_expect_not(nv("a\\b"));
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
    };
    static const uint8_t want[BK_WELCOME_SIZE] = {
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x11, 0x12, 0x13, 0x14,
        0x21, 0x22, 0x23, 0x24,
        0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,
        0x41, 0x42, 0x43, 0x44,
        0x51, 0x52, 0x53, 0x54,
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    };
    uint8_t out[BK_WELCOME_SIZE];
    bk_welcome_t back;

    memset(out, 0xee, sizeof(out));
    bk_welcome_encode(&w, out);
    for (unsigned i = 0; i < BK_WELCOME_SIZE; i++)
        cr_expect_eq(out[i], want[i], "byte %u: 0x%02x want 0x%02x", i,
                     out[i], want[i]);

    memset(&back, 0, sizeof(back));
    bk_welcome_decode(want, &back);
    cr_expect_eq(back.client_id, w.client_id);
    cr_expect_eq(back.max_packet, w.max_packet);
    cr_expect_eq(back.max_fds, w.max_fds);
    cr_expect_eq(back.max_msg, w.max_msg);
    cr_expect_eq(back.max_name, w.max_name);
    cr_expect_eq(back.max_streams, w.max_streams);
    cr_expect_eq(back.queue_limit, w.queue_limit);
}

Test(welcome, roundtrip_defaults_and_extremes)
{
    bk_welcome_t in[2] = {
        { 1, BK_DEF_MAX_PACKET, BK_DEF_MAX_FDS, BK_DEF_MAX_MSG, BK_MAX_NAME,
          BK_DEF_MAX_STREAMS, BK_DEF_QUEUE_LIMIT },
        { UINT64_MAX, UINT32_MAX, UINT32_MAX, UINT64_MAX, UINT32_MAX,
          UINT32_MAX, UINT64_MAX },
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
    }
}
