/*
 * test_monitor.c - CTRL MONITOR: records of forwarded frames (ids,
 * streams, sizes, preview bytes), filters, the privilege rule, a monitor
 * that never reads (its records are dropped, nobody is paused), and the
 * brokerctl monitor / capture commands.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"

static th_broker_t br;

/* The message behind the last record: a record's pointers (header,
 * preview) point into it, so it lives until the next record or the
 * teardown. */
static broker_msg_t *rec_msg;

static void mon_setup(void)
{
    th_broker_start(&br, "--queue-limit", "65536", NULL);
}

static void mon_teardown(void)
{
    broker_msg_free(rec_msg);
    rec_msg = NULL;
    th_broker_cleanup(&br);
}

TestSuite(monitor, .init = mon_setup, .fini = mon_teardown, .timeout = 180);

/* The next monitor record of m, decoded; *dropped gets its drop count. */
static void next_rec(broker_t *m, broker_monitor_rec_t *r, int *dropped)
{
    broker_msg_free(rec_msg);
    rec_msg = th_recv_kind(m, BROKER_MSG_MONITOR);
    cr_assert_eq(broker_monitor_parse(rec_msg, r), 0);
    cr_assert_geq(rec_msg->code, 0);
    if (dropped)
        *dropped = rec_msg->code;
}

/* Records already produced are in m's queue before the PING reply:
 * count what is there now (and free it). */
static int drain_count(broker_t *m, uint64_t *dropped)
{
    broker_msg_t *msg;
    int n = 0;

    cr_assert_eq(broker_ping(m, TH_HANG_MS), 0);
    while (broker_recv(m, &msg, 0) == 0) {
        cr_assert_eq(msg->kind, BROKER_MSG_MONITOR);
        if (dropped)
            *dropped += (uint64_t)msg->code;
        broker_msg_free(msg);
        n++;
    }
    return n;
}

static void check_preview(const broker_monitor_rec_t *r, const char *name,
                          const char *data)
{
    size_t nl = name ? strlen(name) : 0, dl = strlen(data);

    cr_assert_eq(r->length, nl + dl);
    cr_assert_eq(r->captured, nl + dl);
    cr_assert_eq(r->aux, name ? nl : 0);
    if (name)
        cr_assert_eq(memcmp(r->preview, name, nl), 0);
    cr_assert_eq(memcmp(r->preview + nl, data, dl), 0);
}

Test(monitor, sees_oneway_and_request_reply)
{
    broker_t *m = th_connect(&br), *s = th_connect(&br), *c = th_connect(&br);
    broker_msg_t *msg, *req, *rep;
    broker_monitor_rec_t r;
    uint32_t sid;
    int dropped;

    cr_assert_eq(broker_monitor(m, NULL, 0), 0);
    cr_assert_eq(th_status_value(m, "monitors"), 1);
    th_register(s, "mon.svc");

    cr_assert_eq(broker_send(c, "mon.svc", "one-way", 7, NULL, 0), 0);
    msg = th_recv_kind(s, BROKER_MSG_DATA);
    next_rec(m, &r, &dropped);
    cr_assert_eq(dropped, 0);
    cr_assert_eq(r.type, BK_T_DATA);
    cr_assert_eq(r.flags, BK_F_OPEN | BK_F_CLOSE | BK_F_NAME);
    cr_assert_eq(r.sender, broker_client_id(c));
    cr_assert_eq(r.receiver, broker_client_id(s));
    cr_assert_eq(r.receiver_stream, msg->stream);
    cr_assert(r.sender_stream >= 1 && r.sender_stream <= BK_SID_MAX_LOCAL);
    check_preview(&r, "mon.svc", "one-way");
    cr_assert_eq(bk_get32(r.header + 4), r.length);
    cr_assert_eq(bk_get32(r.header + 8), msg->stream);
    broker_msg_free(msg);

    cr_assert_eq(broker_stream_open(c, "mon.svc", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(c, sid, "question", 8, NULL, 0), 0);
    req = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_eq(broker_reply(s, req, "answer!", 7, NULL, 0), 0);
    rep = th_recv_kind(c, BROKER_MSG_DATA);
    cr_assert_eq(rep->len, 7);

    next_rec(m, &r, NULL);
    cr_assert_eq(r.sender, broker_client_id(c));
    cr_assert_eq(r.receiver, broker_client_id(s));
    cr_assert_eq(r.sender_stream, sid);
    cr_assert_eq(r.receiver_stream, req->stream);
    cr_assert_eq(r.flags, BK_F_OPEN | BK_F_NAME);
    check_preview(&r, "mon.svc", "question");

    next_rec(m, &r, NULL);
    cr_assert_eq(r.type, BK_T_DATA);
    cr_assert_eq(r.sender, broker_client_id(s));
    cr_assert_eq(r.receiver, broker_client_id(c));
    cr_assert_eq(r.sender_stream, req->stream);
    cr_assert_eq(r.receiver_stream, sid);
    cr_assert(r.flags & BK_F_CLOSE);
    check_preview(&r, NULL, "answer!");
    cr_assert_eq(drain_count(m, NULL), 0, "no record of m's own traffic");
    broker_msg_free(req);
    broker_msg_free(rep);
    broker_close(c);
    broker_close(s);
    broker_close(m);
    th_broker_stop(&br);
}

Test(monitor, snap_length_and_bad_filters)
{
    broker_t *m = th_connect(&br), *s = th_connect(&br), *c = th_connect(&br);
    broker_monitor_rec_t r;
    char big[1000];

    cr_assert_eq(broker_monitor(m, "nope:x", 0), -EINVAL);
    cr_assert_eq(broker_monitor(m, "id:0", 0), -EINVAL);
    cr_assert_eq(broker_monitor(m, "", 5000), -EINVAL);
    cr_assert_eq(broker_ctrl(m, BROKER_CTRL_MONITOR, "snap:1 snap:2", 13,
                             NULL, NULL), -EINVAL);
    cr_assert_eq(broker_monitor(m, "", 16), 0);
    th_register(s, "mon.big");
    memset(big, 'z', sizeof(big));
    cr_assert_eq(broker_send(c, "mon.big", big, sizeof(big), NULL, 0), 0);
    broker_msg_free(th_recv_kind(s, BROKER_MSG_DATA));
    next_rec(m, &r, NULL);
    cr_assert_eq(r.length, 7 + sizeof(big));
    cr_assert_eq(r.captured, 16);
    cr_assert_eq(memcmp(r.preview, "mon.bigzzzzzzzzz", 16), 0);
    broker_close(c);
    broker_close(s);
    broker_close(m);
}

Test(monitor, filters_by_name_and_id)
{
    broker_t *mn = th_connect(&br), *mi = th_connect(&br);
    broker_t *a = th_connect(&br), *o = th_connect(&br);
    broker_t *c1 = th_connect(&br), *c2 = th_connect(&br);
    broker_monitor_rec_t r;
    char filt[64];

    th_register(a, "mon.a1");
    th_register(o, "other");
    cr_assert_eq(broker_monitor(mn, "name:mon.a*", 0), 0);
    snprintf(filt, sizeof(filt), "id:%" PRIu64, broker_client_id(c2));
    cr_assert_eq(broker_monitor(mi, filt, 64), 0);

    cr_assert_eq(broker_send(c1, "mon.a1", "x1", 2, NULL, 0), 0);
    cr_assert_eq(broker_send(c2, "other", "x2", 2, NULL, 0), 0);
    cr_assert_eq(broker_send_id(c1, broker_client_id(a), "x3", 2, NULL, 0),
                 0);
    cr_assert_eq(broker_send_id(c1, broker_client_id(o), "x4", 2, NULL, 0),
                 0);
    for (int i = 0; i < 2; i++) {
        broker_msg_free(th_recv_kind(a, BROKER_MSG_DATA));
        broker_msg_free(th_recv_kind(o, BROKER_MSG_DATA));
    }

    /* by name: the name it was sent to, or the receiver owns a match */
    next_rec(mn, &r, NULL);
    check_preview(&r, "mon.a1", "x1");
    next_rec(mn, &r, NULL);
    check_preview(&r, NULL, "x3");
    cr_assert_eq(r.receiver, broker_client_id(a));
    cr_assert_eq(drain_count(mn, NULL), 0);

    /* by id: only c2's message */
    next_rec(mi, &r, NULL);
    check_preview(&r, "other", "x2");
    cr_assert_eq(r.sender, broker_client_id(c2));
    cr_assert_eq(drain_count(mi, NULL), 0);
    broker_close(c1);
    broker_close(c2);
    broker_close(a);
    broker_close(o);
    broker_close(mi);
    broker_close(mn);
}

/* ---- privilege ---------------------------------------------------------- */

static int as_nobody(void *arg)
{
    broker_t *b = NULL;

    (void)arg;
    if (!th_become_nobody())
        return 10;
    if (broker_connect(br.sock, &b) < 0)
        return 11;
    if (broker_monitor(b, NULL, 0) != -EPERM)
        return 12;
    if (broker_ping(b, TH_HANG_MS) != 0)
        return 13;
    broker_close(b);
    return 0;
}

Test(monitor, other_uid_gets_eperm)
{
    broker_t *a;
    int s;

    if (geteuid() != 0)
        cr_skip_test("needs root to switch to uid %d", TH_NOBODY);
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
    s = th_join_status(th_spawn(as_nobody, NULL));
    cr_assert(TH_EXITED(s, 0), "child as nobody: 0x%x", s);
    a = th_connect(&br);
    cr_assert_eq(th_status_value(a, "monitors"), 0);
    broker_close(a);
}

/* ---- a monitor that never reads ------------------------------------------ */

typedef struct flood {
    size_t n;
} flood_t;

static int flood_producer(void *arg)
{
    const flood_t *f = arg;
    broker_t *b = NULL;
    uint8_t buf[100];

    TH_OK(broker_connect(br.sock, &b));
    for (size_t i = 0; i < f->n; i++) {
        th_pattern(buf, sizeof(buf), i, 0);
        TH_OK(broker_send(b, "mon.sink", buf, sizeof(buf), NULL, 0));
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    return 0;
}

Test(monitor, unread_monitor_drops_and_pauses_nobody)
{
    flood_t f = { .n = th_scaled(20000, 5000) };
    broker_t *m = th_connect(&br), *sink = th_connect(&br);
    uint64_t dropped = 0;
    pid_t pid;
    size_t recs;

    cr_assert_eq(broker_monitor(m, NULL, 0), 0);
    th_register(sink, "mon.sink");
    pid = th_spawn(flood_producer, &f);
    /* every message arrives while m reads nothing */
    for (size_t i = 0; i < f.n; i++) {
        broker_msg_t *msg = th_recv_kind(sink, BROKER_MSG_DATA);
        cr_assert_eq(msg->len, 100);
        cr_assert_eq(th_pattern_check(msg->data, msg->len, i, 0), -1,
                     "message %zu damaged or out of order", i);
        broker_msg_free(msg);
    }
    th_join(pid);

    recs = (size_t)drain_count(m, &dropped);
    cr_assert_lt(recs, f.n, "the monitor cannot have kept up: %zu", recs);
    /* one more record carries the drops still pending */
    cr_assert_eq(broker_send(sink, "mon.sink", "last", 4, NULL, 0), 0);
    broker_msg_free(th_recv_kind(sink, BROKER_MSG_DATA));
    recs += (size_t)drain_count(m, &dropped);
    cr_assert_gt(dropped, 0);
    cr_assert_eq(recs + dropped, f.n + 1, "%zu records + %" PRIu64
                 " dropped", recs, dropped);
    broker_close(sink);
    broker_close(m);
}

/* ---- brokerctl monitor / capture ------------------------------------------- */

static int count_str(const char *t, const char *s)
{
    int n = 0;

    for (const char *p = strstr(t, s); p; p = strstr(p + 1, s))
        n++;
    return n;
}

static bool two_lines_json(const char *t, size_t len)
{
    (void)len;
    return count_str(t, "\"type\":\"DATA\"") >= 2;
}

static bool summary_line(const char *t, size_t len)
{
    (void)len;
    return strstr(t, " dropped\n") != NULL;
}

static void two_messages(broker_t *c, broker_t *s)
{
    cr_assert_eq(broker_send(c, "mon.ctl", "hello\tworld", 11, NULL, 0), 0);
    cr_assert_eq(broker_send(c, "mon.ctl", "second", 6, NULL, 0), 0);
    broker_msg_free(th_recv_kind(s, BROKER_MSG_DATA));
    broker_msg_free(th_recv_kind(s, BROKER_MSG_DATA));
}

/* One monitor line, cut into its fields. */
typedef struct mon_line {
    char tm[32], type[16], flags[64], from_comm[32], to_comm[32];
    char label[80], size[32], prev[160];
    unsigned long long from, to;
    unsigned ss, rs, frag;
} mon_line_t;

/* Parse the line at *cur (and step past it): "TIME TYPE FLAGS S(comm) ->
 * R(comm) [dest=|src=|topic=X] stream=0xS->0xR size=N frag=N PREVIEW". */
static void mon_line(char **cur, mon_line_t *l)
{
    char *line = *cur, *nl = strchr(line, '\n'), *st;
    int n;

    cr_assert_not_null(nl, "no more lines: %s", line);
    *nl = '\0';
    *cur = nl + 1;
    memset(l, 0, sizeof(*l));
    n = sscanf(line, "%31s %15s %63s %llu(%31[^)]) -> %llu(%31[^)])",
               l->tm, l->type, l->flags, &l->from, l->from_comm, &l->to,
               l->to_comm);
    cr_assert_eq(n, 7, "line: %s", line);
    st = strstr(line, " stream=0x");
    cr_assert_not_null(st, "line: %s", line);
    n = sscanf(st, " stream=0x%x->0x%x size=%31s frag=%u %159[^\n]", &l->ss,
               &l->rs, l->size, &l->frag, l->prev);
    cr_assert(n >= 4, "line: %s", line);
    *st = '\0';
    if ((st = strrchr(line, ' ')) && strchr(st, '='))
        snprintf(l->label, sizeof(l->label), "%s", st + 1);
    cr_assert_eq(l->tm[2], ':');
    cr_assert_eq(l->tm[8], '.');
}

/* Start `brokerctl monitor ARGS` into dir/name; returns its pid once the
 * broker counts it as a monitor. */
static pid_t start_monitor(broker_t *b, const char *log, const char *arg1,
                           const char *arg2)
{
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "monitor",
                           arg1, arg2, NULL };
    pid_t pid = th_run_bg(argv, NULL, log);

    th_await_status(b, "monitors", 1);
    return pid;
}

static bool three_lines(const char *t, size_t len)
{
    (void)len;
    return count_str(t, " DATA ") >= 3;
}

Test(monitor, brokerctl_monitor_lines)
{
    broker_t *s = th_connect(&br), *c = th_connect(&br), *c2;
    char log[160], *t, *cur;
    uint64_t id2;
    mon_line_t l;
    size_t len;
    pid_t pid;
    int st;

    snprintf(log, sizeof(log), "%s/monitor.out", br.dir);
    th_register(s, "mon.ctl");
    pid = start_monitor(s, log, "name:mon.ctl", NULL);
    two_messages(c, s);
    /* a client that comes and goes while the monitor runs: its comm can
     * only come from the $broker.clients announcement */
    c2 = th_connect(&br);
    id2 = broker_client_id(c2);
    cr_assert_eq(broker_send(c2, "mon.ctl", "bye", 3, NULL, 0), 0);
    broker_close(c2);
    broker_msg_free(th_recv_kind(s, BROKER_MSG_DATA));
    free(th_await_file(log, three_lines, &len));
    st = th_signal_join(pid, SIGINT);
    cr_assert(TH_EXITED(st, 0), "brokerctl monitor: 0x%x", st);
    t = th_await_file(log, summary_line, &len);
    cur = t;
    mon_line(&cur, &l);
    cr_assert_str_eq(l.type, "DATA");
    cr_assert_str_eq(l.flags, "OPEN,CLOSE,NAME");
    cr_assert_eq(l.from, broker_client_id(c));
    cr_assert_eq(l.to, broker_client_id(s));
    /* the test's own comm, as /proc shows it */
    cr_assert_str_eq(l.from_comm, "test_monitor");
    cr_assert_str_eq(l.to_comm, "test_monitor");
    cr_assert_str_eq(l.label, "dest=mon.ctl");
    cr_assert(l.ss >= 1 && l.ss < 0x80000000u, "sender's sid %x", l.ss);
    cr_assert_geq(l.rs, 0x80000000u, "the broker's sid %x", l.rs);
    cr_assert_str_eq(l.size, "11");
    cr_assert_eq(l.frag, 11);
    cr_assert_str_eq(l.prev, "hello\\x09world");
    mon_line(&cur, &l);
    cr_assert_str_eq(l.size, "6");
    cr_assert_eq(l.frag, 6);
    cr_assert_str_eq(l.prev, "second");
    mon_line(&cur, &l);
    cr_assert_eq(l.from, id2);
    cr_assert_str_eq(l.from_comm, "test_monitor");
    cr_assert_str_eq(l.prev, "bye");
    cr_assert_not_null(strstr(cur, "3 records, 0 dropped\n"), "%s", cur);
    free(t);
    broker_close(c);
    broker_close(s);
}

static bool four_lines(const char *t, size_t len)
{
    (void)len;
    return count_str(t, " DATA ") >= 4;
}

/* A request of three fragments and its reply: the message size beside
 * each fragment's, the name on both directions of the stream. */
Test(monitor, brokerctl_monitor_fragments_and_reply)
{
    broker_t *s = th_connect(&br), *c = th_connect(&br);
    size_t big = 2 * 65536 + 1000, len, sum = 0;
    char log[160], *t, *cur, want[32], *buf = malloc(big);
    broker_msg_t *req, *rep;
    mon_line_t l;
    uint32_t sid;
    pid_t pid;
    int st;

    cr_assert_not_null(buf);
    memset(buf, 'x', big);
    snprintf(log, sizeof(log), "%s/monitor.out", br.dir);
    th_register(s, "mon.frag");
    pid = start_monitor(s, log, NULL, NULL);
    cr_assert_eq(broker_stream_open(c, "mon.frag", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(c, sid, buf, big, NULL, 0), 0);
    req = th_recv_kind(s, BROKER_MSG_DATA);
    cr_assert_eq(req->len, big);
    cr_assert_eq(broker_reply(s, req, "done", 4, NULL, 0), 0);
    broker_msg_free(req);
    rep = th_recv_kind(c, BROKER_MSG_DATA);
    broker_msg_free(rep);
    free(th_await_file(log, four_lines, &len));
    st = th_signal_join(pid, SIGINT);
    cr_assert(TH_EXITED(st, 0), "brokerctl monitor: 0x%x", st);
    t = th_await_file(log, summary_line, &len);
    cur = t;
    for (int i = 0; ; i++) {
        mon_line(&cur, &l);
        cr_assert_str_eq(l.label, "dest=mon.frag");
        cr_assert_eq(l.ss, sid);
        sum += l.frag;
        if (i == 0)
            cr_assert_str_eq(l.flags, "MORE,OPEN,NAME");
        if (!strstr(l.flags, "MORE"))
            break;
        /* the size so far, with a + while fragments are to come */
        snprintf(want, sizeof(want), "%zu+", sum);
        cr_assert_str_eq(l.size, want);
        cr_assert(i < 8, "too many fragments");
    }
    cr_assert_eq(sum, big);
    snprintf(want, sizeof(want), "%zu", big);
    cr_assert_str_eq(l.size, want);
    cr_assert_str_eq(l.flags, "CONT");
    mon_line(&cur, &l);
    cr_assert_str_eq(l.flags, "CLOSE");
    cr_assert_eq(l.from, broker_client_id(s));
    cr_assert_eq(l.rs, sid);
    cr_assert_str_eq(l.label, "src=mon.frag");
    cr_assert_str_eq(l.size, "4");
    cr_assert_str_eq(l.prev, "done");
    free(t);
    free(buf);
    broker_close(c);
    broker_close(s);
}

/* --json: raw numbers, comm names and the name as their own keys. */
Test(monitor, brokerctl_monitor_json)
{
    broker_t *s = th_connect(&br), *c = th_connect(&br);
    char log[160], want[256], *t;
    size_t len;
    pid_t pid;
    int st;

    snprintf(log, sizeof(log), "%s/monitor.out", br.dir);
    th_register(s, "mon.ctl");
    pid = start_monitor(s, log, "--json", NULL);
    two_messages(c, s);
    free(th_await_file(log, two_lines_json, &len));
    st = th_signal_join(pid, SIGINT);
    cr_assert(TH_EXITED(st, 0), "brokerctl monitor: 0x%x", st);
    t = th_await_file(log, summary_line, &len);
    snprintf(want, sizeof(want), "\"sender\":%" PRIu64 ",\"sender_comm\":"
             "\"test_monitor\",\"receiver\":%" PRIu64 ",\"receiver_comm\":"
             "\"test_monitor\"", broker_client_id(c), broker_client_id(s));
    cr_assert_not_null(strstr(t, want), "%s", t);
    cr_assert_not_null(strstr(t, "\"size\":11,\"frag\":11,\"more\":false"),
                       "%s", t);
    cr_assert_not_null(strstr(t, "\"preview\":\"second\",\"dest\":"
                                 "\"mon.ctl\"}"), "%s", t);
    free(t);
    broker_close(c);
    broker_close(s);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* Count the complete pcapng blocks at the start of buf (checking that
 * each one's leading and trailing lengths agree). */
static int pcap_blocks(const uint8_t *buf, size_t len, size_t *offs,
                       int max)
{
    size_t off = 0;
    int n = 0;

    while (off + 12 <= len && n < max) {
        uint32_t bl = le32(buf + off + 4);
        if (bl < 12 || bl % 4 || off + bl > len)
            break;
        cr_assert_eq(le32(buf + off + bl - 4), bl, "block %d trailer", n);
        offs[n++] = off;
        off += bl;
    }
    return n;
}

/* The value of the first option `code` in the options [p, end), or
 * NULL; *len gets its length. */
static const uint8_t *pcap_find(const uint8_t *p, const uint8_t *end,
                                unsigned code, size_t *len)
{
    while (p + 4 <= end) {
        unsigned c = p[0] | p[1] << 8, l = p[2] | p[3] << 8;
        if (c == 0 || p + 4 + l > end)
            return NULL;
        if (c == code) {
            *len = l;
            return p + 4;
        }
        p += 4 + ((l + 3) & ~3u);
    }
    return NULL;
}

static bool pcap_option(const uint8_t *p, const uint8_t *end, unsigned code,
                        const char *want, size_t wlen)
{
    size_t len;
    const uint8_t *v = pcap_find(p, end, code, &len);

    return v && len == wlen && memcmp(v, want, len) == 0;
}

static bool pcap_option_prefix(const uint8_t *p, const uint8_t *end,
                               unsigned code, const char *want)
{
    size_t len;
    const uint8_t *v = pcap_find(p, end, code, &len);

    return v && len >= strlen(want) && memcmp(v, want, strlen(want)) == 0;
}

static bool four_blocks(const char *t, size_t len)
{
    size_t offs[8];

    return pcap_blocks((const uint8_t *)t, len, offs, 8) >= 4;
}

Test(monitor, brokerctl_capture_pcapng)
{
    broker_t *s = th_connect(&br), *c = th_connect(&br);
    char file[160], log[160];
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "capture",
                           file, "--snap", "8", NULL };
    static const uint32_t want_len[2] = { 7 + 11, 7 + 6 };
    const uint8_t *b;
    size_t len, offs[8];
    char *t, want[300];
    pid_t pid;
    int st, n;

    snprintf(file, sizeof(file), "%s/cap.pcapng", br.dir);
    snprintf(log, sizeof(log), "%s/capture.err", br.dir);
    th_register(s, "mon.ctl");
    pid = th_run_bg(argv, NULL, log);
    th_await_status(s, "monitors", 1);
    two_messages(c, s);
    t = th_await_file(file, four_blocks, &len);
    st = th_signal_join(pid, SIGINT);
    cr_assert(TH_EXITED(st, 0), "brokerctl capture: 0x%x", st);
    free(t);
    t = th_read_file(file, &len);
    b = (const uint8_t *)t;
    n = pcap_blocks(b, len, offs, 8);
    cr_assert_eq(n, 4);
    cr_assert_eq(offs[3] + le32(b + offs[3] + 4), len, "trailing bytes");
    /* Section Header Block */
    cr_assert_eq(le32(b), 0x0A0D0D0Au);
    cr_assert_eq(le32(b + 8), 0x1A2B3C4Du);
    cr_assert_eq(b[12] | b[13] << 8, 1);
    /* Interface Description Block: LINKTYPE_USER0, snaplen 32 + 8, the
     * socket as its name, nanoseconds */
    cr_assert_eq(le32(b + offs[1]), 1);
    cr_assert_eq(b[offs[1] + 8] | b[offs[1] + 9] << 8, 147);
    cr_assert_eq(le32(b + offs[1] + 12), 32 + 8);
    snprintf(want, sizeof(want), "brokerd:%s", br.sock);
    cr_assert(pcap_option(b + offs[1] + 16, b + offs[2] - 4, 2, want,
                          strlen(want)), "if_name %s", want);
    cr_assert(pcap_option(b + offs[1] + 16, b + offs[2] - 4, 9, "\x09", 1),
              "if_tsresol 9");
    for (int i = 0; i < 2; i++) {
        const uint8_t *e = b + offs[2 + i];
        bk_hdr_t h;

        cr_assert_eq(le32(e), 6, "Enhanced Packet Block");
        cr_assert_eq(le32(e + 8), 0);
        cr_assert_eq(le32(e + 20), 32 + 8, "captured length");
        cr_assert_eq(le32(e + 24), 32 + want_len[i], "original length");
        cr_assert_gt(le32(e + 4), 28 + 40 + 4, "with a comment");
        snprintf(want, sizeof(want), "%" PRIu64 "(test_monitor) -> %" PRIu64
                 "(test_monitor) stream=0x", broker_client_id(c),
                 broker_client_id(s));
        cr_assert(pcap_option_prefix(e + 28 + 40, e + le32(e + 4) - 4, 1,
                                     want), "comment %s", want);
        bk_hdr_decode(e + 28, &h);
        cr_assert_eq(h.type, BK_T_DATA);
        cr_assert_eq(h.length, want_len[i]);
        cr_assert_eq(h.source, broker_client_id(c));
        cr_assert_eq(h.dest, broker_client_id(s));
        cr_assert_eq(memcmp(e + 28 + 32, "mon.ctl", 7), 0);
        cr_assert_eq(e[28 + 32 + 7], i == 0 ? 'h' : 's');
    }
    free(t);
    t = th_await_file(log, summary_line, &len);
    cr_assert_not_null(strstr(t, "2 records, 0 dropped\n"), "%s", t);
    free(t);
    broker_close(c);
    broker_close(s);
}
