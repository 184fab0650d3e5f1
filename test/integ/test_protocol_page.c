/*
 * test_protocol_page.c - broker-protocol(7) taken at its word: the places
 * where a client written from the page alone once met a different broker
 * (issue 13), each checked on a raw socket against the documented
 * behaviour.  The order of the checks on a bad packet (VALIDATION), the
 * source of every ECONNRESET, the keys of STATUS (read from the page) and
 * of the listings, the bounds of frame types and operations, max_msg,
 * PING as a barrier for errors, the handshake's corners (a second HELLO,
 * frames batched with HELLO, the description, ids given at accept, the
 * refusal before HELLO), the ENOSR disconnect, a listing past its end,
 * the last ERROR behind an ECONNRESET from recvmsg, the poll-writable
 * rule of SOCK_SEQPACKET and the range of snap.
 *
 * No test measures time: brokerd is stopped with SIGSTOP where a test
 * needs packets to wait unread, and every wait is bounded by TH_HANG_MS.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

#ifndef TOP_SRCDIR
#error "TOP_SRCDIR must name the source tree"
#endif

TH_BROKER_SUITE(page, 300);

/* ---- frames in, frames out -------------------------------------------- */

/* Frames received on one raw connection, one packet at a time. */
typedef struct rd {
    int fd;
    uint8_t buf[BK_MAX_MAX_PACKET];
    size_t len, off;
} rd_t;

static rd_t *rd_new(int fd)
{
    rd_t *r = calloc(1, sizeof(*r));

    TH_CHECK(r != NULL, "oom");
    r->fd = fd;
    return r;
}

static void rd_free(rd_t *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

/* The next frame: 1 (*h, *pl set), 0 at EOF, or the negative errno of
 * recvmsg (which a later call may follow with more frames). */
static int rd_next(rd_t *r, bk_hdr_t *h, const uint8_t **pl)
{
    for (;;) {
        int k = bk_pkt_next(r->buf, r->len, &r->off, h, pl);
        ssize_t n;

        if (k == 1)
            return 1;
        TH_CHECK(k == 0, "a malformed packet from the broker");
        n = th_raw_recv(r->fd, r->buf, sizeof(r->buf));
        r->len = n > 0 ? (size_t)n : 0;
        r->off = 0;
        if (n <= 0)
            return (int)n;
    }
}

/* The next frame, which must be of `type`. */
static void rd_expect(rd_t *r, uint8_t type, bk_hdr_t *h, const uint8_t **pl)
{
    int k = rd_next(r, h, pl);

    TH_CHECK(k == 1, "no frame (%d), want type %u", k, type);
    TH_CHECK(h->type == type, "type %u (aux %u, stream 0x%x), want %u",
             h->type, h->aux, h->stream, type);
}

/* An ERROR with this stream and code, then the end of the connection. */
static void rd_expect_last_error(rd_t *r, uint32_t stream, int err)
{
    bk_hdr_t h;
    const uint8_t *pl;

    rd_expect(r, BK_T_ERROR, &h, &pl);
    TH_CHECK(h.aux == (uint32_t)-err && h.stream == stream,
             "ERROR %u on stream 0x%x (%.*s), want %d on 0x%x", h.aux,
             h.stream, (int)h.length, (const char *)pl, -err, stream);
    TH_CHECK(rd_next(r, &h, &pl) == 0, "frame type %u after the last ERROR",
             h.type);
}

/* A packet under construction. */
typedef struct pkt {
    uint8_t buf[BK_MAX_MAX_PACKET];
    size_t len;
} pkt_t;

static void pkt_add(pkt_t *p, bk_hdr_t h, const void *payload, size_t len)
{
    TH_CHECK(p->len + BK_HDR_SIZE + len <= sizeof(p->buf), "packet full");
    h.version = h.version ? h.version : BK_PROTO_VERSION;
    h.length = (uint32_t)len;
    bk_hdr_encode(&h, p->buf + p->len);
    if (len)
        memcpy(p->buf + p->len + BK_HDR_SIZE, payload, len);
    p->len += BK_HDR_SIZE + len;
}

static void pkt_send(int fd, pkt_t *p)
{
    TH_OK(th_raw_send_bytes(fd, p->buf, p->len, NULL, 0));
    p->len = 0;
}

static void send1(int fd, bk_hdr_t h, const void *payload, size_t len)
{
    static pkt_t p;

    pkt_add(&p, h, payload, len);
    pkt_send(fd, &p);
}

static void hello_frame(pkt_t *p, uint32_t version, const char *desc)
{
    uint8_t pl[4 + BK_MAX_HELLO_DESC];
    size_t dlen = strlen(desc);

    bk_put32(pl, version);
    memcpy(pl + 4, desc, dlen);
    pkt_add(p, (bk_hdr_t){ .type = BK_T_HELLO }, pl, 4 + dlen);
}

/* A raw client past WELCOME: its reader, and its id in *id. */
static rd_t *client(uint64_t *id)
{
    bk_welcome_t w;
    rd_t *r = rd_new(th_raw_connect_hello(br.sock, &w));

    if (id)
        *id = w.client_id;
    return r;
}

/* CTRL op with request id req; returns the reply's code (aux) and leaves
 * its payload NUL-terminated in a static buffer (*out, *out_len).  Frames
 * that come before the reply fail the test. */
static uint32_t ctrl(rd_t *r, uint32_t op, uint32_t req, const void *payload,
                     size_t len, const char **out, size_t *out_len)
{
    static char reply[BK_MAX_MAX_PACKET + 1];
    bk_hdr_t h;
    const uint8_t *pl;

    send1(r->fd, (bk_hdr_t){ .type = BK_T_CTRL, .stream = req, .aux = op },
          payload, len);
    rd_expect(r, BK_T_CTRL_REPLY, &h, &pl);
    TH_CHECK(h.stream == req, "reply to request %u, want %u", h.stream, req);
    memcpy(reply, pl, h.length);
    reply[h.length] = '\0';
    if (out)
        *out = reply;
    if (out_len)
        *out_len = h.length;
    return h.aux;
}

/* The keys of one line of key=value fields, space-separated, into keys. */
static void line_keys(const char *line, char *keys, size_t cap)
{
    size_t k = 0;

    keys[0] = '\0';
    while (*line && *line != '\n') {
        size_t n = strcspn(line, "=");

        TH_CHECK(k + n + 2 < cap, "too many keys");
        if (k)
            keys[k++] = ' ';
        memcpy(keys + k, line, n);
        k += n;
        keys[k] = '\0';
        line += n;
        line += strcspn(line, " \n");
        if (*line == ' ')
            line++;
    }
}

/* ---- VALIDATION: the packet is cut into frames first ------------------- */

/* A frame whose length is over max_packet cannot fit its packet: the
 * packet check comes first and answers EPROTO, even before the version. */
Test(page, frame_over_max_packet_is_a_truncated_packet)
{
    static const uint8_t pl[4];
    static const uint32_t versions[] = { BK_PROTO_VERSION, 2 };

    for (unsigned i = 0; i < 2; i++) {
        rd_t *r = client(NULL);
        uint8_t hdr[BK_HDR_SIZE + sizeof(pl)];
        bk_hdr_t h = { .version = (uint8_t)versions[i], .type = BK_T_CTRL,
                       .aux = BK_OP_PING, .length = BK_DEF_MAX_PACKET };

        bk_hdr_encode(&h, hdr);
        memcpy(hdr + BK_HDR_SIZE, pl, sizeof(pl));
        TH_OK(th_raw_send_bytes(r->fd, hdr, sizeof(hdr), NULL, 0));
        rd_expect_last_error(r, 0, -EPROTO);
        rd_free(r);
    }
    /* the same bad version in a frame that fits: EPROTONOSUPPORT */
    rd_t *r = client(NULL);
    send1(r->fd, (bk_hdr_t){ .version = 2, .type = BK_T_CTRL,
                             .aux = BK_OP_PING }, NULL, 0);
    rd_expect_last_error(r, 0, -EPROTONOSUPPORT);
    rd_free(r);
}

/* Rule 2 and 8: types 1 to 14 exist, the broker-only ones are EPROTO
 * from a client, and so are 0 and 15. */
Test(page, frame_types_bounds)
{
    static const uint8_t bad[] = { 0, 15, BK_T_MONITOR, BK_T_GAP, BK_T_FLOW,
                                   255 };

    for (unsigned i = 0; i < sizeof(bad); i++) {
        rd_t *r = client(NULL);

        send1(r->fd, (bk_hdr_t){ .type = bad[i] }, NULL, 0);
        rd_expect_last_error(r, 0, -EPROTO);
        rd_free(r);
    }
}

/* Rule 11: operations 1 to 19 exist; 0 and 20 are EPROTO. */
Test(page, ctrl_operation_bounds)
{
    static const uint32_t bad[] = { 0, BK_OP_MAX_ + 1 };
    rd_t *r = client(NULL);
    uint8_t ex[4 + 7];

    cr_assert_eq(BK_OP_MAX_, 19);
    bk_put32(ex, 0);
    memcpy(ex + 4, "page.ex", 7);
    cr_assert_eq(ctrl(r, BK_OP_REGISTER_EX, 1, ex, sizeof(ex), NULL, NULL),
                 0);
    cr_assert_eq(ctrl(r, BK_OP_MONITOR, 2, NULL, 0, NULL, NULL), 0);
    rd_free(r);
    for (unsigned i = 0; i < 2; i++) {
        r = client(NULL);
        send1(r->fd, (bk_hdr_t){ .type = BK_T_CTRL, .aux = bad[i] }, NULL, 0);
        rd_expect_last_error(r, 0, -EPROTO);
        rd_free(r);
    }
}

/* Operations 7 to 14, 17 and 19 are privileged: EPERM to another user. */
static int unprivileged(void *arg)
{
    static const uint32_t ops[] = {
        BK_OP_LIST_CLIENTS, BK_OP_LIST_NAMES, BK_OP_LIST_STREAMS,
        BK_OP_LIST_SHM, BK_OP_KICK, BK_OP_SHUTDOWN, BK_OP_RELOAD,
        BK_OP_MONITOR, BK_OP_LIST_SUBS, BK_OP_LIST_USERS,
    };
    rd_t *r;

    (void)arg;
    if (!th_become_nobody())
        return 10;
    r = client(NULL);
    for (unsigned i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        uint32_t code = ctrl(r, ops[i], ops[i], NULL, 0, NULL, NULL);
        TH_CHECK(code == EPERM, "op %u: code %u, want EPERM", ops[i], code);
    }
    TH_CHECK(ctrl(r, BK_OP_STATUS, 99, NULL, 0, NULL, NULL) == 0,
             "STATUS is for everyone");
    rd_free(r);
    return 0;
}

Test(page, privileged_operations)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to become another user");
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
    th_join(th_spawn(unprivileged, NULL));
}

/* ---- sources of ECONNRESET ---------------------------------------------- */

/* A one-way message its receiver never read: the sender's ERROR
 * ECONNRESET names the receiver in source, like any peer disconnect. */
Test(page, unread_oneway_reset_names_the_receiver)
{
    enum { MSGS = 48, SIZE = 16 * 1024 };
    uint64_t sid_s, rid;
    rd_t *s = client(&sid_s), *recv = client(&rid);
    broker_t *b = th_connect(&br);
    static uint8_t body[SIZE];
    int resets = 0;
    bk_hdr_t h;
    const uint8_t *pl;

    memset(body, 'x', sizeof(body));
    for (uint32_t i = 1; i <= MSGS; i++)
        send1(s->fd, (bk_hdr_t){ .type = BK_T_DATA, .stream = i,
                                 .flags = BK_F_OPEN | BK_F_CLOSE,
                                 .dest = rid }, body, sizeof(body));
    cr_assert_eq(ctrl(s, BK_OP_PING, 7, NULL, 0, NULL, NULL), 0);
    /* the receiver's socket is full: the rest waits in the broker */
    cr_assert_gt(th_status_value(b, "queued_bytes"), 0);
    close(recv->fd);
    recv->fd = -1;
    while (resets == 0) {
        rd_expect(s, BK_T_ERROR, &h, &pl);
        cr_assert_eq(h.aux, ECONNRESET, "ERROR %u", h.aux);
        cr_assert_eq(h.source, rid, "source %llu, want the receiver %llu",
                     (unsigned long long)h.source, (unsigned long long)rid);
        cr_assert_eq(h.dest, sid_s);
        cr_assert(h.stream >= 1 && h.stream <= MSGS, "stream %u", h.stream);
        resets++;
    }
    broker_close(b);
    rd_free(recv);
    rd_free(s);
}

/* ---- keys of STATUS and the listings ------------------------------------ */

/* The STATUS keys as the page lists them: the `.B key` lines between
 * "5 STATUS" and the `.RE` that ends the list. */
static void page_status_keys(char *keys, size_t cap)
{
    char path[1024], line[256];
    bool in = false;
    size_t k = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/man/broker-protocol.7", TOP_SRCDIR);
    f = fopen(path, "r");
    cr_assert_not_null(f, "open %s", path);
    keys[0] = '\0';
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strcmp(line, ".B 5 STATUS"))
            in = true;
        else if (in && !strcmp(line, ".RE"))
            break;
        else if (in && !strncmp(line, ".B ", 3) && k + strlen(line) < cap) {
            k += (size_t)snprintf(keys + k, cap - k, "%s%s", k ? " " : "",
                                  line + 3);
        }
    }
    fclose(f);
    cr_assert(in && k > 0, "no STATUS key list in %s", path);
}

Test(page, status_keys_in_the_documented_order)
{
    char want[2048], got[2048], *lines;
    rd_t *r = client(NULL);
    const char *text;
    size_t k = 0;

    page_status_keys(want, sizeof(want));
    cr_assert_eq(ctrl(r, BK_OP_STATUS, 1, NULL, 0, &text, NULL), 0);
    lines = strdup(text);
    for (char *save = NULL, *l = strtok_r(lines, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        k += (size_t)snprintf(got + k, sizeof(got) - k, "%s%.*s",
                              k ? " " : "", (int)strcspn(l, "="), l);
    }
    free(lines);
    cr_assert_str_eq(got, want);
    cr_assert(strstr(want, " monitors "), "monitors is documented");
    rd_free(r);
}

Test(page, listing_keys_in_the_documented_order)
{
    uint64_t aid, bid;
    rd_t *a = client(&aid), *b = client(&bid);
    const char *text;
    char keys[1024];
    bk_hdr_t h;
    const uint8_t *pl;

    send1(a->fd, (bk_hdr_t){ .type = BK_T_DATA, .stream = 3,
                             .flags = BK_F_OPEN, .dest = bid }, "req", 3);
    rd_expect(b, BK_T_DATA, &h, &pl);
    cr_assert_eq(ctrl(a, BK_OP_LIST_STREAMS, 1, NULL, 0, &text, NULL), 0);
    line_keys(text, keys, sizeof(keys));
    cr_assert_str_eq(keys, "opener opener_sid opener_bytes acceptor "
                           "acceptor_sid acceptor_bytes age_ms");
    cr_assert_eq(ctrl(a, BK_OP_LIST_CLIENTS, 2, NULL, 0, &text, NULL), 0);
    line_keys(text, keys, sizeof(keys));
    cr_assert_str_eq(keys, "id pid uid gid comm age_ms names names_more "
                           "queued_frames queued_bytes queued_mem msgs_in "
                           "msgs_out bytes_in bytes_out errors streams "
                           "shm_segments shm_bytes shm_held subs dropped "
                           "queued_fds refusals desc");
    cr_assert_eq(ctrl(a, BK_OP_LIST_USERS, 3, NULL, 0, &text, NULL), 0);
    line_keys(text, keys, sizeof(keys));
    cr_assert_str_eq(keys, "uid connections fds streams names subs "
                           "shm_segments shm_bytes shm_held queued "
                           "queued_by quota_hits");
    rd_free(a);
    rd_free(b);
}

/* A cursor past the last record: a page of only next=0. */
Test(page, listing_past_the_end)
{
    static const uint32_t ops[] = {
        BK_OP_LIST_CLIENTS, BK_OP_LIST_NAMES, BK_OP_LIST_STREAMS,
        BK_OP_LIST_SHM, BK_OP_LIST_SUBS, BK_OP_LIST_USERS,
    };
    rd_t *r = client(NULL);
    uint8_t cursor[8];
    const char *text;

    for (unsigned i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        bk_put64(cursor, UINT64_C(1) << 40);
        cr_assert_eq(ctrl(r, ops[i], i, cursor, 8, &text, NULL), 0);
        cr_assert_str_eq(text, "next=0\n", "op %u", ops[i]);
        bk_put64(cursor, UINT64_MAX);
        cr_assert_eq(ctrl(r, ops[i], i, cursor, 8, &text, NULL), 0);
        cr_assert_str_eq(text, "next=0\n", "op %u", ops[i]);
    }
    rd_free(r);
}

/* ---- LIMITS: max_msg is a brokerd option -------------------------------- */

Test(page, max_msg_option_in_welcome)
{
    bk_welcome_t w;
    rd_t *r;
    bk_hdr_t h;
    const uint8_t *pl;
    static uint8_t body[1001];

    th_broker_restart(&br, "--max-msg", "1000", NULL);
    r = rd_new(th_raw_connect_hello(br.sock, &w));
    cr_assert_eq(w.max_msg, 1000);
    send1(r->fd, (bk_hdr_t){ .type = BK_T_DATA, .stream = 1,
                             .flags = BK_F_OPEN | BK_F_CLOSE,
                             .dest = w.client_id }, body, sizeof(body));
    rd_expect(r, BK_T_ERROR, &h, &pl);
    cr_assert_eq(h.aux, EMSGSIZE);
    cr_assert_eq(h.stream, 1);
    rd_free(r);
}

/* ---- PING after errors ------------------------------------------------------ */

/* The errors the broker raises about a client's frames come before the
 * reply to a PING sent after them. */
Test(page, ping_reply_follows_the_errors_before_it)
{
    uint64_t id;
    rd_t *r = client(&id), *busy = client(NULL);
    static pkt_t p;
    static uint8_t body[8 * 1024];
    bk_hdr_t h;
    const uint8_t *pl;

    /* a backlog of relayed frames for r, so the errors are queued */
    for (uint32_t i = 1; i <= 64; i++)
        send1(busy->fd, (bk_hdr_t){ .type = BK_T_DATA, .stream = i,
                                    .flags = BK_F_OPEN | BK_F_CLOSE,
                                    .dest = id }, body, sizeof(body));
    pkt_add(&p, (bk_hdr_t){ .type = BK_T_DATA, .stream = 1,
                            .flags = BK_F_OPEN | BK_F_CLOSE,
                            .dest = 999999 }, "a", 1);
    pkt_add(&p, (bk_hdr_t){ .type = BK_T_DATA, .stream = 2,
                            .flags = BK_F_OPEN | BK_F_NAME, .aux = 9 },
            "no.such.x", 9);
    pkt_add(&p, (bk_hdr_t){ .type = BK_T_CTRL, .stream = 5,
                            .aux = BK_OP_PING }, NULL, 0);
    pkt_send(r->fd, &p);
    /* relayed DATA may come in between; the broker's own frames are in
     * order: both errors, then the reply */
    for (uint32_t want = 1; want <= 3;) {
        TH_CHECK(rd_next(r, &h, &pl) == 1, "connection ended");
        if (h.type == BK_T_DATA)
            continue;
        if (want < 3) {
            cr_assert_eq(h.type, BK_T_ERROR, "type %u, want ERROR", h.type);
            cr_assert_eq(h.aux, ENOENT);
            cr_assert_eq(h.stream, want, "ERROR for %u, want %u", h.stream,
                         want);
        } else {
            cr_assert_eq(h.type, BK_T_CTRL_REPLY, "type %u", h.type);
            cr_assert_eq(h.stream, 5);
        }
        want++;
    }
    rd_free(busy);
    rd_free(r);
}

/* ---- the handshake ------------------------------------------------------------ */

Test(page, second_hello_is_a_protocol_error)
{
    rd_t *r = client(NULL);
    static pkt_t p;

    hello_frame(&p, BK_PROTO_VERSION, "again");
    pkt_send(r->fd, &p);
    rd_expect_last_error(r, 0, -EPROTO);
    rd_free(r);
}

/* Frames after HELLO, in its packet, are handled after WELCOME. */
Test(page, frames_batched_with_hello)
{
    rd_t *r = rd_new(th_raw_connect(br.sock));
    static pkt_t p;
    bk_hdr_t h;
    const uint8_t *pl;

    hello_frame(&p, BK_PROTO_VERSION, "");
    pkt_add(&p, (bk_hdr_t){ .type = BK_T_CTRL, .stream = 4,
                            .aux = BK_OP_PING }, "hi", 2);
    pkt_send(r->fd, &p);
    rd_expect(r, BK_T_WELCOME, &h, &pl);
    rd_expect(r, BK_T_CTRL_REPLY, &h, &pl);
    cr_assert_eq(h.stream, 4);
    cr_assert(h.length == 2 && !memcmp(pl, "hi", 2));
    rd_free(r);
    /* a refused HELLO: the frames after it are not handled */
    r = rd_new(th_raw_connect(br.sock));
    hello_frame(&p, 2, "");
    pkt_add(&p, (bk_hdr_t){ .type = BK_T_CTRL, .stream = 4,
                            .aux = BK_OP_PING }, NULL, 0);
    pkt_send(r->fd, &p);
    rd_expect_last_error(r, 0, -EPROTONOSUPPORT);
    rd_free(r);
}

/* The description goes to LIST_CLIENTS as desc, escaped. */
Test(page, hello_description_in_list_clients)
{
    rd_t *r = rd_new(th_raw_connect(br.sock));
    static pkt_t p;
    char want[64];
    const char *text;
    bk_hdr_t h;
    const uint8_t *pl;

    hello_frame(&p, BK_PROTO_VERSION, "page test=1");
    pkt_send(r->fd, &p);
    rd_expect(r, BK_T_WELCOME, &h, &pl);
    snprintf(want, sizeof(want), "id=%llu ", (unsigned long long)h.dest);
    cr_assert_eq(ctrl(r, BK_OP_LIST_CLIENTS, 1, NULL, 0, &text, NULL), 0);
    cr_assert(!strncmp(text, want, strlen(want)), "%s", text);
    cr_assert(strstr(text, " desc=page%20test%3D1\n"), "%s", text);
    rd_free(r);
}

/* brokerctl clients --json shows a description as a string, also one
 * made of digits only. */
Test(page, hello_description_in_clients_json)
{
    rd_t *r = rd_new(th_raw_connect(br.sock));
    static pkt_t p;
    th_output_t o;
    bk_hdr_t h;
    const uint8_t *pl;
    int st;

    hello_frame(&p, BK_PROTO_VERSION, "12345");
    pkt_send(r->fd, &p);
    rd_expect(r, BK_T_WELCOME, &h, &pl);
    st = th_ctl(br.sock, &o, "clients", "--json", NULL);
    cr_assert(TH_EXITED(st, 0), "0x%x %s", st, o.err);
    cr_assert(strstr(o.out, "\"desc\":\"12345\""), "%s", o.out);
    th_output_free(&o);
    rd_free(r);
}

/* Ids are given at accept: the earlier connection gets the lower id
 * whatever the order of the HELLOs. */
Test(page, ids_assigned_at_accept)
{
    rd_t *early = rd_new(th_raw_connect(br.sock));
    uint64_t late_id;
    rd_t *late = client(&late_id);
    static pkt_t p;
    bk_hdr_t h;
    const uint8_t *pl;

    hello_frame(&p, BK_PROTO_VERSION, "");
    pkt_send(early->fd, &p);
    rd_expect(early, BK_T_WELCOME, &h, &pl);
    cr_assert_lt(h.dest, late_id);
    cr_assert_eq(bk_get64(pl), h.dest);
    rd_free(early);
    rd_free(late);
}

/* max_clients: the refusal comes at accept, before any HELLO, with dest
 * 0 (the connection never got an id). */
Test(page, max_clients_refused_before_hello)
{
    static pkt_t p;
    rd_t *first, *second;
    int k;
    bk_hdr_t h;
    const uint8_t *pl;

    th_broker_restart(&br, "--max-clients", "1", NULL);
    /* the harness's probe of the socket may still count for a moment */
    for (unsigned us = 500;; th_nap(&us)) {
        int sr;

        first = rd_new(th_raw_connect(br.sock));
        hello_frame(&p, BK_PROTO_VERSION, "");
        /* refused at accept, the connection may be closed before the
         * HELLO is written: the ERROR is still there to read */
        sr = th_raw_send_bytes(first->fd, p.buf, p.len, NULL, 0);
        p.len = 0;
        TH_CHECK(sr == 0 || sr == -EPIPE || sr == -ECONNRESET,
                 "sending HELLO: %d", sr);
        k = rd_next(first, &h, &pl);
        if (k == -ECONNRESET)   /* refused with the HELLO unread */
            k = rd_next(first, &h, &pl);
        TH_CHECK(k == 1, "no answer to HELLO: %d", k);
        if (h.type == BK_T_WELCOME)
            break;
        cr_assert(h.type == BK_T_ERROR && h.aux == ENOSR && h.dest == 0,
                  "type %u aux %u", h.type, h.aux);
        rd_free(first);
    }
    second = rd_new(th_raw_connect(br.sock));
    rd_expect(second, BK_T_ERROR, &h, &pl);
    cr_assert_eq(h.aux, ENOSR);
    cr_assert_eq(h.stream, 0);
    cr_assert_eq(h.dest, 0);
    cr_assert_eq(rd_next(second, &h, &pl), 0);
    rd_free(second);
    rd_free(first);
}

/* Too many refused messages in flight: ENOSR on the stream of the one
 * that went over, after the ERROR that refused it. */
Test(page, enosr_disconnect_names_the_stream)
{
    rd_t *r;
    static pkt_t p;
    bk_hdr_t h;
    const uint8_t *pl;

    th_broker_restart(&br, "--max-streams", "2", NULL);
    r = client(NULL);
    for (uint32_t sid = 1; sid <= 5; sid++)
        pkt_add(&p, (bk_hdr_t){ .type = BK_T_DATA, .stream = sid,
                                .flags = BK_F_OPEN | BK_F_MORE,
                                .dest = 999999 }, "x", 1);
    pkt_send(r->fd, &p);
    for (uint32_t sid = 1; sid <= 5; sid++) {
        rd_expect(r, BK_T_ERROR, &h, &pl);
        cr_assert_eq(h.aux, ENOENT);
        cr_assert_eq(h.stream, sid);
    }
    rd_expect_last_error(r, 5, -ENOSR);
    rd_free(r);
}

/* ---- the end of a connection ---------------------------------------------- */

/* Stop brokerd and wait until it is stopped (kill only asks). */
static void broker_stop_now(void)
{
    char path[64], *stat;
    unsigned us = 500;

    cr_assert_eq(kill(br.pid, SIGSTOP), 0);
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)br.pid);
    for (uint64_t end = th_now_ms() + TH_HANG_MS;;) {
        char *state;
        bool stopped;
        size_t len;

        stat = th_read_file(path, &len);
        state = strrchr(stat, ')');
        stopped = state && (state[2] == 'T' || state[2] == 't');
        free(stat);
        if (stopped)
            return;
        cr_assert_lt(th_now_ms(), end, "brokerd does not stop");
        th_nap(&us);
    }
}

/* The broker closes with our packets unread: once it has hung up,
 * recvmsg fails with ECONNRESET first, and the next recvmsg still has the
 * last ERROR. */
Test(page, last_error_after_econnreset)
{
    rd_t *r = client(NULL);
    static pkt_t p;
    struct pollfd pfd;
    bk_hdr_t h;
    const uint8_t *pl;
    int k;

    broker_stop_now();
    send1(r->fd, (bk_hdr_t){ .type = BK_T_DATA }, NULL, 0);  /* stream 0 */
    for (int i = 0; i < 20; i++) {
        pkt_add(&p, (bk_hdr_t){ .type = BK_T_CTRL, .aux = BK_OP_PING },
                NULL, 0);
        pkt_send(r->fd, &p);
    }
    cr_assert_eq(kill(br.pid, SIGCONT), 0);
    do {                        /* no events asked: POLLHUP or POLLERR */
        pfd = (struct pollfd){ .fd = r->fd };
        k = poll(&pfd, 1, TH_HANG_MS);
    } while (k == 0 || (k < 0 && errno == EINTR) ||
             !(pfd.revents & POLLHUP));
    k = rd_next(r, &h, &pl);
    cr_assert_eq(k, -ECONNRESET, "first read: %d (type %u aux %u)", k,
                 h.type, h.aux);
    rd_expect_last_error(r, 0, -EPROTO);
    rd_free(r);
}

/* ---- TRANSPORT: when poll says writable ------------------------------------ */

/* poll reports POLLOUT only while less than a quarter of the send buffer
 * is in flight; a send still succeeds after that. */
Test(page, seqpacket_writable_below_a_quarter)
{
    rd_t *r = client(NULL);
    static uint8_t text[BK_MAX_TEXT];
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { text, sizeof(text) } };
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CLOSE,
                   .stream = 77, .length = sizeof(text) };
    struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };
    int sent = 0;

    bk_hdr_encode(&h, hdr);
    broker_stop_now();
    while (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT)) {
        cr_assert_eq(bk_sock_send(r->fd, iov, 2, NULL, 0), 0, "send %d",
                     sent);
        sent++;
        cr_assert_lt(sent, 100000);
    }
    /* not writable, and yet there is room */
    int rc = bk_sock_send(r->fd, iov, 2, NULL, 0);
    cr_assert_eq(kill(br.pid, SIGCONT), 0);
    cr_assert_eq(rc, 0, "send after POLLOUT went away: %d", rc);
    cr_assert_gt(sent, 0);
    /* CLOSE for an unknown stream is ignored: the connection goes on */
    cr_assert_eq(ctrl(r, BK_OP_PING, 1, NULL, 0, NULL, NULL), 0);
    rd_free(r);
}

/* ---- MONITOR: snap 0 to 4096 ------------------------------------------------- */

Test(page, monitor_snap_range)
{
    uint64_t bid;
    rd_t *m = client(NULL), *a = client(NULL), *b = client(&bid);
    bk_hdr_t h;
    const uint8_t *pl;
    th_output_t o;
    int st;

    cr_assert_eq(ctrl(m, BK_OP_MONITOR, 1, "snap:4097", 9, NULL, NULL),
                 EINVAL);
    cr_assert_eq(ctrl(m, BK_OP_MONITOR, 2, "snap:0", 6, NULL, NULL), 0);
    send1(a->fd, (bk_hdr_t){ .type = BK_T_DATA, .stream = 1,
                             .flags = BK_F_OPEN | BK_F_CLOSE, .dest = bid },
          "hello", 5);
    rd_expect(b, BK_T_DATA, &h, &pl);
    rd_expect(m, BK_T_MONITOR, &h, &pl);
    cr_assert_eq(h.length, BK_MON_FIXED_SIZE, "headers only");
    cr_assert_eq(bk_get32(pl + 32), 5, "the frame's length");
    cr_assert_eq(bk_get32(pl + 36), 0, "captured");
    rd_free(a);
    rd_free(b);
    rd_free(m);
    /* brokerctl's --snap starts at 1: 0 means the default there */
    st = th_ctl(br.sock, &o, "monitor", "--snap", "0", NULL);
    cr_assert(!TH_EXITED(st, 0));
    cr_assert(strstr(o.err, "1 to 4096"), "%s", o.err);
    th_output_free(&o);
}
