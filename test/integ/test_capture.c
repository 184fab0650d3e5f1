/*
 * test_capture.c - brokerctl capture files decoded by tshark with
 * contrib/wireshark/brokerd.lua: a call, its reply, a message in shared
 * memory and a publication captured through a real brokerd, field by
 * field; a packet of several frames (DATA, RELEASE, SEGMENT, GAP, CTRL)
 * and a malformed one, read with the dissector installed as a personal
 * plugin and no options.  Skipped, saying so, when tshark is absent
 * (Debian package tshark).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"

#ifndef TOP_SRCDIR
#error "TOP_SRCDIR must be defined (Makefile.am)"
#endif
#define CAP_LUA TOP_SRCDIR "/contrib/wireshark/brokerd.lua"

static th_broker_t br;

static void cap_setup(void)
{
    th_broker_start(&br, NULL);
}

static void cap_teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(capture, .init = cap_setup, .fini = cap_teardown, .timeout = 180);

/* tshark from $TSHARK or $PATH into buf; skips the test without it. */
static const char *tshark_path(char *buf, size_t len)
{
    const char *env = getenv("TSHARK"), *path = getenv("PATH");

    if (env && *env && access(env, X_OK) == 0)
        return env;
    for (const char *p = path ? path : ""; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(buf, len, "%.*s/tshark", (int)n, p);
        if (n && access(buf, X_OK) == 0)
            return buf;
        p += n + (p[n] == ':');
    }
    cr_skip_test("tshark is not installed (Debian package tshark): the "
                 "Wireshark dissector contrib/wireshark/brokerd.lua is "
                 "not checked");
    return NULL;
}

/* A HOME for tshark of its own (no user profile, no plugin unless
 * `plugin`: then brokerd.lua as a personal Lua plugin). */
static void tshark_home(char *home, size_t len, bool plugin)
{
    char dir[512], cmd[1200];

    snprintf(home, len, "%s/home-%d", br.dir, plugin);
    snprintf(dir, sizeof(dir), "%s/.local/lib/wireshark/plugins", home);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s/.config'", dir, home);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    if (plugin) {
        snprintf(cmd, sizeof(cmd), "cp '%s' '%s/'", CAP_LUA, dir);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
    }
}

/* Run tshark on file with the extra arguments (NULL-terminated, at most
 * 40) and return its standard output (free it). */
static char *tshark(const char *file, bool installed, const char *const *args)
{
    char path[512], home[256], env_home[300], env_xdg[300];
    const char *argv[64];
    const char *env[] = { env_home, env_xdg, NULL };
    th_output_t out;
    int n = 0, st;

    argv[n++] = tshark_path(path, sizeof(path));
    tshark_home(home, sizeof(home), installed);
    snprintf(env_home, sizeof(env_home), "HOME=%s", home);
    snprintf(env_xdg, sizeof(env_xdg), "XDG_CONFIG_HOME=%s/.config", home);
    if (!installed) {
        argv[n++] = "-X";
        argv[n++] = "lua_script:" CAP_LUA;
    }
    argv[n++] = "-r";
    argv[n++] = file;
    while (*args && n < 62)
        argv[n++] = *args++;
    argv[n] = NULL;
    st = th_run(argv, env, NULL, 0, &out);
    cr_assert(TH_EXITED(st, 0), "tshark: 0x%x\n%s", st, out.err);
    cr_assert_null(strstr(out.err, "Lua: Error"), "%s", out.err);
    free(out.err);
    return out.out;
}

/* ---- pcapng -------------------------------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static int pcap_blocks(const char *t, size_t len)
{
    const uint8_t *b = (const uint8_t *)t;
    size_t off = 0;
    int n = 0;

    while (off + 12 <= len) {
        uint32_t bl = le32(b + off + 4);
        if (bl < 12 || bl % 4 || off + bl > len)
            break;
        off += bl;
        n++;
    }
    return n;
}

/* Section header, interface, four packets. */
static bool six_blocks(const char *t, size_t len)
{
    return pcap_blocks(t, len) >= 6;
}

/* ---- fields -------------------------------------------------------------- */

#define CAP_FIELDS 16

/* Split line (in place) at '|' into at most CAP_FIELDS fields. */
static int split(char *line, char **f)
{
    int n = 0;

    for (char *p = line; n < CAP_FIELDS;) {
        f[n++] = p;
        if (!(p = strchr(p, '|')))
            break;
        *p++ = '\0';
    }
    return n;
}

static char *next_line(char **cur)
{
    char *line = *cur, *nl;

    cr_assert(line && *line, "tshark printed fewer lines than expected");
    nl = strchr(line, '\n');
    cr_assert_not_null(nl);
    *nl = '\0';
    *cur = nl + 1;
    return line;
}

static void expect_field(char **f, int i, const char *want, const char *line)
{
    cr_assert_str_eq(f[i], want, "field %d of \"%s\"", i, line);
}

static char *u64s(char *buf, uint64_t v)
{
    sprintf(buf, "%" PRIu64, v);
    return buf;
}

static char *hex(char *buf, uint32_t v)
{
    sprintf(buf, "0x%08" PRIx32, v);
    return buf;
}

/* tshark -T fields, in this order. */
static const char *const cap_fields[] = {
    "-T", "fields", "-E", "separator=|", "-e", "brokerd.type",
    "-e", "brokerd.flags", "-e", "brokerd.stream", "-e", "brokerd.source",
    "-e", "brokerd.dest", "-e", "brokerd.length", "-e", "brokerd.aux",
    "-e", "brokerd.name", "-e", "brokerd.topic", "-e", "brokerd.payload",
    "-e", "brokerd.flags.shm", "-e", "brokerd.shm.segid",
    "-e", "brokerd.shm.length", "-e", "frame.interface_name",
    "-e", "frame.comment", NULL };
enum { F_TYPE, F_FLAGS, F_STREAM, F_SOURCE, F_DEST, F_LENGTH, F_AUX,
       F_NAME, F_TOPIC, F_PAYLOAD, F_SHM, F_SEGID, F_SHMLEN, F_IFNAME,
       F_COMMENT };

/* The capture's frames as the receivers got them. */
typedef struct cap_call {
    uint64_t c, s;              /* client and server ids */
    uint32_t c_sid, s_sid;      /* the call's stream, both ends */
    uint32_t shm_sid;           /* the shared-memory message at s */
    uint32_t pub_sid, sub_id;   /* the publication at s */
} cap_call_t;

static void run_traffic(broker_t *c, broker_t *s, cap_call_t *k)
{
    size_t big = 300000;
    char *buf = calloc(1, big);
    broker_msg_t *req, *rep, *m;

    cr_assert_not_null(buf);
    k->c = broker_client_id(c);
    k->s = broker_client_id(s);
    th_register(s, "cap.svc");
    cr_assert_eq(broker_subscribe(s, "cap.t.>", NULL, BROKER_SUB_DROP,
                                  &k->sub_id), 0);
    cr_assert_eq(broker_stream_open(c, "cap.svc", 0, &k->c_sid), 0);
    cr_assert_eq(broker_stream_write(c, k->c_sid, "ping?", 5, NULL, 0), 0);
    req = th_recv_kind(s, BROKER_MSG_DATA);
    k->s_sid = req->stream;
    cr_assert_eq(broker_reply(s, req, "pong!", 5, NULL, 0), 0);
    broker_msg_free(req);
    rep = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(rep->stream, k->c_sid);
    broker_msg_free(rep);
    cr_assert_eq(broker_send(c, "cap.svc", buf, big, NULL, 0), 0);
    m = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_SHM, "300000 bytes went by socket");
    k->shm_sid = m->stream;
    broker_msg_free(m);
    cr_assert_eq(broker_publish(c, "cap.t.x", "21.5", 4, NULL, 0), 0);
    m = th_recv_kind(s, BROKER_MSG_DATA);
    k->pub_sid = m->stream;
    broker_msg_free(m);
    free(buf);
}

/* The packet comment: both ends with their comm names, the stream ids
 * (fs 0: the sender's id is the library's business), the size and the
 * name or topic. */
static void expect_comment(const char *got, uint64_t from, uint64_t to,
                           uint32_t fs, uint32_t ts, const char *size,
                           const char *label)
{
    char want[256], tail[128];
    size_t n;

    snprintf(want, sizeof(want), "%" PRIu64 "(test_capture) -> %" PRIu64
             "(test_capture) stream=0x", from, to);
    snprintf(tail, sizeof(tail), "->0x%" PRIx32 " size=%s%s", ts, size,
             label);
    n = strlen(want);
    cr_assert_eq(strncmp(got, want, n), 0, "comment %s", got);
    if (fs)
        cr_assert_eq(strtoul(got + n, NULL, 16), fs, "comment %s", got);
    cr_assert(strlen(got) > strlen(tail) &&
              !strcmp(got + strlen(got) - strlen(tail), tail),
              "comment %s, want ...%s", got, tail);
}

/* One line of tshark fields: the frame's header fields, its name or
 * topic, and the interface the capture names. */
typedef struct cap_want {
    const char *type, *flags;
    uint32_t stream;
    uint64_t source, dest;
    const char *length, *aux, *name, *topic, *payload, *shm;
} cap_want_t;

static void expect_line(char **cur, const cap_want_t *w, const char *ifname,
                        char **f)
{
    char *line = next_line(cur), b[32], copy[1024];
    int n;

    snprintf(copy, sizeof(copy), "%s", line);
    n = split(line, f);
    cr_assert_eq(n, F_COMMENT + 1, "%s", copy);
    expect_field(f, F_TYPE, w->type, copy);
    expect_field(f, F_FLAGS, w->flags, copy);
    expect_field(f, F_STREAM, hex(b, w->stream), copy);
    expect_field(f, F_SOURCE, u64s(b, w->source), copy);
    expect_field(f, F_DEST, u64s(b, w->dest), copy);
    expect_field(f, F_LENGTH, w->length, copy);
    expect_field(f, F_AUX, w->aux, copy);
    expect_field(f, F_NAME, w->name, copy);
    expect_field(f, F_TOPIC, w->topic, copy);
    expect_field(f, F_PAYLOAD, w->payload, copy);
    expect_field(f, F_SHM, w->shm, copy);
    expect_field(f, F_IFNAME, ifname, copy);
}

Test(capture, tshark_decodes_a_call)
{
    broker_t *s = th_connect(&br), *c = th_connect(&br);
    char file[160], log[160], ifname[200];
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "capture",
                           file, "--snap", "64", NULL };
    char *out, *cur, *f[CAP_FIELDS];
    cap_call_t k;
    size_t len;
    pid_t pid;
    int st;

    tshark_path(file, sizeof(file));    /* skip early without tshark */
    snprintf(file, sizeof(file), "%s/call.pcapng", br.dir);
    snprintf(log, sizeof(log), "%s/capture.err", br.dir);
    snprintf(ifname, sizeof(ifname), "brokerd:%s", br.sock);
    pid = th_run_bg(argv, NULL, log);
    th_await_status(s, "monitors", 1);
    run_traffic(c, s, &k);
    free(th_await_file(file, six_blocks, &len));
    st = th_signal_join(pid, SIGINT);
    cr_assert(TH_EXITED(st, 0), "brokerctl capture: 0x%x", st);

    out = tshark(file, false, cap_fields);
    cur = out;
    /* the request: OPEN|NAME to cap.svc, on the server's stream id */
    expect_line(&cur, &(cap_want_t){ "3", "0x14", k.s_sid, k.c, k.s, "12",
                                     "7", "cap.svc", "", "70696e673f", "0" },
                ifname, f);
    expect_comment(f[F_COMMENT], k.c, k.s, k.c_sid, k.s_sid, "5",
                   " dest=cap.svc");
    /* the reply: CLOSE, on the caller's stream id */
    expect_line(&cur, &(cap_want_t){ "3", "0x08", k.c_sid, k.s, k.c, "5",
                                     "0", "", "", "706f6e6721", "0" },
                ifname, f);
    expect_comment(f[F_COMMENT], k.s, k.c, k.s_sid, k.c_sid, "5",
                   " src=cap.svc");
    /* 300000 bytes in shared memory: the descriptor */
    expect_line(&cur, &(cap_want_t){ "3", "0x3c", k.shm_sid, k.c, k.s,
                                     "31", "7", "cap.svc", "", "", "1" },
                ifname, f);
    cr_assert(strtoul(f[F_SEGID], NULL, 10) > 0, "segid %s", f[F_SEGID]);
    expect_field(f, F_SHMLEN, "300000", "shm");
    /* the publication: dest is the subscription id */
    expect_line(&cur, &(cap_want_t){ "3", "0x4c", k.pub_sid, k.c, k.sub_id,
                                     "11", "7", "", "cap.t.x", "32312e35",
                                     "0" },
                ifname, f);
    expect_comment(f[F_COMMENT], k.c, k.s, 0, k.pub_sid, "4",
                   " topic=cap.t.x");
    cr_assert_str_eq(cur, "", "more packets than expected");
    free(out);
    broker_close(c);
    broker_close(s);
}

/* ---- a packet of several frames, and a malformed one ---------------------- */

typedef struct cap_pkt {
    uint8_t b[1024];
    size_t n;
} cap_pkt_t;

static void put_frame(cap_pkt_t *p, const bk_hdr_t *h, const void *pl)
{
    bk_hdr_encode(h, p->b + p->n);
    memcpy(p->b + p->n + BK_HDR_SIZE, pl, h->length);
    p->n += BK_HDR_SIZE + h->length;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* One broker packet as the broker would write it to a client: a DATA to
 * a name, a RELEASE of two records, a SEGMENT, a GAP; and a CTRL
 * SUBSCRIBE as a client writes it. */
static void packed_packet(cap_pkt_t *p)
{
    uint8_t rel[48], seg[16], gap[8], sub[8 + 7 + 2];

    put_frame(p, &(bk_hdr_t){ .version = 1, .type = BK_T_DATA,
              .flags = BK_F_OPEN | BK_F_CLOSE | BK_F_NAME, .length = 6,
              .stream = 0x80000007u, .aux = 3, .source = 9, .dest = 4 },
              "svchi!");
    put64(rel, 9); put32(rel + 8, 4); put32(rel + 12, 2); put64(rel + 16, 0);
    put64(rel + 24, 9); put32(rel + 32, 5); put32(rel + 36, 1);
    put64(rel + 40, 65536);
    put_frame(p, &(bk_hdr_t){ .version = 1, .type = BK_T_RELEASE,
              .length = sizeof(rel), .dest = 4 }, rel);
    put32(seg, 6); put32(seg + 4, 0); put64(seg + 8, 1u << 20);
    put_frame(p, &(bk_hdr_t){ .version = 1, .type = BK_T_SEGMENT,
              .nfds = 1, .length = sizeof(seg), .source = 9, .dest = 4 },
              seg);
    put64(gap, 3);
    put_frame(p, &(bk_hdr_t){ .version = 1, .type = BK_T_GAP,
              .length = sizeof(gap), .aux = 2, .dest = 4 }, gap);
    memset(sub, 0, sizeof(sub));
    sub[0] = BK_SUB_BLOCK; sub[2] = 7; sub[4] = 2;
    memcpy(sub + 8, "a.*.tmp", 7);
    memcpy(sub + 15, "gr", 2);
    put_frame(p, &(bk_hdr_t){ .version = 1, .type = BK_T_CTRL,
              .length = sizeof(sub), .stream = 12,
              .aux = BK_OP_SUBSCRIBE }, sub);
}

/* Flags on a CLOSE frame, and 5 bytes that are no frame. */
static void bad_packet(cap_pkt_t *p)
{
    put_frame(p, &(bk_hdr_t){ .version = 1, .type = BK_T_CLOSE,
              .flags = BK_F_MORE, .stream = 3, .aux = 104, .dest = 4 }, "");
    memcpy(p->b + p->n, "junk!", 5);
    p->n += 5;
}

static void write_block(FILE *f, uint32_t type, const void *body,
                        size_t len)
{
    uint8_t h[8], pad[4] = { 0 };
    uint32_t total = 12 + (uint32_t)((len + 3) & ~(size_t)3);

    put32(h, type);
    put32(h + 4, total);
    cr_assert_eq(fwrite(h, 1, 8, f), 8);
    cr_assert_eq(fwrite(body, 1, len, f), len);
    cr_assert_eq(fwrite(pad, 1, (4 - len % 4) % 4, f), (4 - len % 4) % 4);
    put32(h, total);
    cr_assert_eq(fwrite(h, 1, 4, f), 4);
}

static void write_packet(FILE *f, const cap_pkt_t *p)
{
    uint8_t e[20 + sizeof(p->b)];

    memset(e, 0, 20);
    put32(e + 12, (uint32_t)p->n);
    put32(e + 16, (uint32_t)p->n);
    memcpy(e + 20, p->b, p->n);
    write_block(f, 6, e, 20 + p->n);
}

static void write_pcapng(const char *file)
{
    uint8_t shb[16] = { 0 }, idb[8] = { 0 };
    cap_pkt_t a = { .n = 0 }, b = { .n = 0 };
    FILE *f = fopen(file, "wb");

    cr_assert_not_null(f, "%s: %s", file, strerror(errno));
    put32(shb, 0x1A2B3C4Du);
    shb[4] = 1;
    memset(shb + 8, 0xff, 8);
    write_block(f, 0x0A0D0D0Au, shb, sizeof(shb));
    idb[0] = 147;                       /* LINKTYPE_USER0, snaplen 0 */
    write_block(f, 1, idb, sizeof(idb));
    packed_packet(&a);
    write_packet(f, &a);
    bad_packet(&b);
    write_packet(f, &b);
    cr_assert_eq(fclose(f), 0);
}

static const char *const packed_fields[] = {
    "-T", "fields", "-E", "separator=|", "-e", "brokerd.type",
    "-e", "brokerd.name", "-e", "brokerd.payload",
    "-e", "brokerd.release.peer", "-e", "brokerd.release.segid",
    "-e", "brokerd.release.count", "-e", "brokerd.release.offset",
    "-e", "brokerd.shm.segid", "-e", "brokerd.shm.segment_size",
    "-e", "brokerd.gap.dropped", "-e", "brokerd.sub_id",
    "-e", "brokerd.ctrl.op", "-e", "brokerd.ctrl.policy",
    "-e", "brokerd.ctrl.pattern", "-e", "brokerd.ctrl.group",
    "-e", "_ws.expert.message", NULL };

Test(capture, installed_dissector_decodes_packed_frames)
{
    char file[200], *out, *cur, *line, *f[CAP_FIELDS], copy[1024];
    static const char *const want[] = {
        "3,10,9,13,6", "svc", "686921", "9,9", "4,5", "2,1", "0,65536",
        "6", "1048576", "3", "2", "15", "1", "a.*.tmp", "gr", };
    int n;

    tshark_path(file, sizeof(file));
    snprintf(file, sizeof(file), "%s/packed.pcapng", br.dir);
    write_pcapng(file);
    out = tshark(file, true, packed_fields);
    cur = out;
    line = next_line(&cur);
    snprintf(copy, sizeof(copy), "%s", line);
    n = split(line, f);
    cr_assert_eq(n, 16, "%s", copy);
    for (int i = 0; i < 15; i++)
        expect_field(f, i, want[i], copy);
    cr_assert_str_eq(f[15], "", "expert info on a good packet: %s", copy);
    line = next_line(&cur);
    snprintf(copy, sizeof(copy), "%s", line);
    n = split(line, f);
    expect_field(f, 0, "4", copy);
    cr_assert_not_null(strstr(f[15], "flags on a frame that is not DATA"),
                       "%s", copy);
    cr_assert_not_null(strstr(f[15], "a packet must end on a frame "
                                     "boundary"), "%s", copy);
    cr_assert_str_eq(cur, "");
    free(out);
}
