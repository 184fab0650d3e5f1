/*
 * test_inspect.c - the operator listings (LIST_CLIENTS, LIST_NAMES,
 * LIST_STREAMS, LIST_SHM) through libbroker and brokerctl, their paging,
 * --sort/--top, the tables' human units and cut NAMES cells beside
 * --json's raw numbers, KICK, SHUTDOWN and the privilege rule.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "harness.h"

static th_broker_t br;

static void ins_setup(void)
{
    th_broker_start(&br, "--max-names", "4000", NULL);
}

static void ins_teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(inspect, .init = ins_setup, .fini = ins_teardown, .timeout = 180);

/* Parse what brokerctl prints for a listing with --json: an array of
 * objects, plain strings and unsigned numbers, names as lists. */
static int parse_listing(const char *text, th_json_obj_t **out)
{
    return th_json_array(text, TH_JSON_LISTS | TH_JSON_PLAIN, out);
}

/* Run `brokerctl CMD --json [extra]` and parse it. */
static int ctl_json(th_json_obj_t **out, const char *cmd, const char *extra)
{
    th_output_t o;
    int st = th_ctl(br.sock, &o, cmd, "--json", extra, NULL);
    int n;

    cr_assert(TH_EXITED(st, 0), "brokerctl %s --json: 0x%x, %s", cmd, st,
              o.err);
    n = parse_listing(o.out, out);
    cr_assert_geq(n, 0, "not a JSON array of objects: %s", o.out);
    th_output_free(&o);
    return n;
}

/* Lines of a table; returns the count, first line in *first. */
static int lines_of(const char *s, char *first, size_t len)
{
    int n = 0;

    if (first && len) {
        size_t k = strcspn(s, "\n");
        snprintf(first, len, "%.*s", (int)k, s);
    }
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A size as the tables show it ("850B", "1.2KiB" ...) in bytes, or -1. */
static double size_of(const char *s)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    char *end;
    double v = strtod(s, &end), m = 1;

    if (end == s || !isdigit((unsigned char)*s))
        return -1;
    for (size_t i = 0; i < sizeof(unit) / sizeof(unit[0]); i++, m *= 1024)
        if (!strcmp(end, unit[i]))
            return v * m;
    return -1;
}

/* Whether s is a duration as the tables show it: 850ms, 2.8s, 42s, 3m,
 * 2h, 5d. */
static bool is_duration(const char *s)
{
    size_t d = strspn(s, "0123456789");

    if (d == 0)
        return false;
    if (!strcmp(s + d, "ms") || !strcmp(s + d, "s") || !strcmp(s + d, "m") ||
        !strcmp(s + d, "h") || !strcmp(s + d, "d"))
        return true;
    return s[d] == '.' && isdigit((unsigned char)s[d + 1]) &&
           !strcmp(s + d + 2, "s");
}

/* The line of the table in text whose first word is id, copied into
 * line (fails the test if there is none). */
static void row_of(const char *text, uint64_t id, char *line, size_t len)
{
    char want[32];

    snprintf(want, sizeof(want), "%llu ", (unsigned long long)id);
    for (const char *p = text; *p; ) {
        size_t k = strcspn(p, "\n");
        const char *w = p + strspn(p, " ");
        if (!strncmp(w, want, strlen(want))) {
            snprintf(line, len, "%.*s", (int)k, p);
            return;
        }
        p += k + (p[k] == '\n');
    }
    cr_assert_fail("no row for client %llu in:\n%s", (unsigned long long)id,
                   text);
}

/* The last whitespace-separated word of line. */
static const char *last_word(const char *line)
{
    const char *e = line + strlen(line), *b;

    while (e > line && e[-1] == ' ')
        e--;
    for (b = e; b > line && b[-1] != ' '; b--)
        ;
    return b;
}

/* A NAMES cell of a clients row: names of the form prefix%d shown, then
 * " +N"; checks that it fits CTL's 40 bytes and that shown + N == total. */
static void check_cut_names(const char *row, const char *prefix, int total)
{
    const char *first = strstr(row, prefix), *plus, *p;
    int shown = 0;

    cr_assert_not_null(first, "no names in: %s", row);
    plus = strstr(first, " +");
    cr_assert_not_null(plus, "no count of the names left out: %s", row);
    for (p = first; (p = strstr(p, prefix)) && p < plus; p += strlen(prefix))
        shown++;
    cr_assert_geq(shown, 1);
    cr_assert_eq(shown + atoi(plus + 2), total, "%d shown + %d: %s", shown,
                 atoi(plus + 2), row);
    p = plus + 2 + strspn(plus + 2, "0123456789");
    cr_assert_leq(p - first, 40, "NAMES cell of %d bytes: %s",
                  (int)(p - first), row);
}

/* ---- the listings ------------------------------------------------------------ */

Test(inspect, clients_names_streams_match_known_state)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    uint64_t ida = broker_client_id(a), idb = broker_client_id(b);
    broker_msg_t *m;
    th_json_obj_t *arr;
    uint32_t sid;
    int n;

    th_register(a, "svc.alpha");
    th_register(b, "svc.beta1");
    th_register(b, "svc.beta2");
    cr_assert_eq(broker_stream_open(a, "svc.beta1", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(a, sid, "hello", 5, NULL, 0), 0);
    m = th_recv(b);
    cr_assert_eq(m->len, 5);
    broker_msg_free(m);
    th_await_status(a, "clients", 2);

    /* clients --json: a, b and brokerctl itself. */
    n = ctl_json(&arr, "clients", NULL);
    cr_assert_eq(n, 3, "clients: %d", n);
    const th_json_obj_t *ca = th_json_find(arr, n, "id", ida);
    const th_json_obj_t *cb = th_json_find(arr, n, "id", idb);
    cr_assert(ca && cb, "a or b missing");
    cr_assert_eq(th_json_u64(ca, "pid"), (unsigned long long)getpid());
    cr_assert_eq(th_json_u64(ca, "uid"), (unsigned long long)getuid());
    cr_assert_str_eq(th_json_str(ca, "names"), "svc.alpha");
    cr_assert(!strcmp(th_json_str(cb, "names"), "svc.beta1,svc.beta2") ||
              !strcmp(th_json_str(cb, "names"), "svc.beta2,svc.beta1"),
              "b's names: %s", th_json_str(cb, "names"));
    cr_assert_eq(th_json_u64(ca, "streams"), 1);
    cr_assert_eq(th_json_u64(cb, "streams"), 1);
    cr_assert_eq(th_json_u64(cb, "names_more"), 0);
    cr_assert_geq(th_json_u64(ca, "bytes_in"), 5);
    cr_assert_geq(th_json_u64(ca, "msgs_in"), 1);
    th_json_array_free(arr, n);

    /* names --json */
    n = ctl_json(&arr, "names", NULL);
    cr_assert_eq(n, 3);
    for (int i = 0; i < n; i++) {
        const char *name = th_json_str(&arr[i], "name");
        uint64_t want = !strcmp(name, "svc.alpha") ? ida : idb;
        cr_assert_eq(th_json_u64(&arr[i], "owner"), want, "owner of %s", name);
        cr_assert_eq(th_json_u64(&arr[i], "pid"),
                     (unsigned long long)getpid());
        th_json_u64(&arr[i], "age_ms");
    }
    th_json_array_free(arr, n);

    /* streams --json: one stream, a's id and b's broker-assigned id. */
    n = ctl_json(&arr, "streams", NULL);
    cr_assert_eq(n, 1);
    cr_assert_eq(th_json_u64(&arr[0], "opener"), ida);
    cr_assert_eq(th_json_u64(&arr[0], "opener_sid"), sid);
    cr_assert_eq(th_json_u64(&arr[0], "acceptor"), idb);
    cr_assert_geq(th_json_u64(&arr[0], "acceptor_sid"), 0x80000000ull);
    cr_assert_eq(th_json_u64(&arr[0], "opener_bytes"), 5);
    cr_assert_eq(th_json_u64(&arr[0], "acceptor_bytes"), 0);
    th_json_array_free(arr, n);

    /* Tables: a header, then one row per record; --no-legend drops it. */
    th_output_t o;
    char first[256], row[64];
    int st = th_ctl(br.sock, &o, "names", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, first, sizeof(first)), 4, "%s", o.out);
    cr_assert(!strncmp(first, "NAME", 4), "header: %s", first);
    cr_assert(strstr(o.out, "svc.alpha") && strstr(o.out, "svc.beta2"));
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "--no-legend", "names", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, first, sizeof(first)), 3, "%s", o.out);
    cr_assert(!strstr(o.out, "NAME"), "%s", o.out);
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "clients", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, first, sizeof(first)), 4, "%s", o.out);
    cr_assert(!strncmp(first, "ID", 2) && strstr(first, "NAMES"), "%s", first);
    cr_assert(strstr(o.out, "svc.alpha"), "%s", o.out);
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "streams", "--no-legend", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, NULL, 0), 1, "%s", o.out);
    snprintf(row, sizeof(row), "%llu", (unsigned long long)ida);
    cr_assert(!strncmp(o.out + strspn(o.out, " "), row, strlen(row)),
              "%s", o.out);
    th_output_free(&o);

    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(inspect, shm_segments_after_buffer_send)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    uint64_t ida = broker_client_id(a), idb = broker_client_id(b);
    broker_buf_t *buf = NULL;
    broker_msg_t *m;
    th_json_obj_t *arr;
    int n;

    th_register(b, "svc.sink");
    cr_assert_eq(broker_buf_alloc(a, 4096, &buf, TH_HANG_MS), 0);
    memset(buf->data, 0x5a, 4096);
    cr_assert_eq(broker_buf_send(a, "svc.sink", buf, 4096), 0);
    m = th_recv(b);
    cr_assert_eq(m->len, 4096);

    n = ctl_json(&arr, "shm", NULL);
    cr_assert_eq(n, 1, "segments: %d", n);
    cr_assert_eq(th_json_u64(&arr[0], "owner"), ida);
    cr_assert_geq(th_json_u64(&arr[0], "size"), 4096);
    cr_assert_eq(th_json_u64(&arr[0], "receivers"), 1);
    cr_assert_gt(th_json_u64(&arr[0], "segid"), 0);
    th_json_array_free(arr, n);

    n = ctl_json(&arr, "clients", NULL);
    const th_json_obj_t *ca = th_json_find(arr, n, "id", ida);
    const th_json_obj_t *cb = th_json_find(arr, n, "id", idb);
    cr_assert(ca && cb);
    cr_assert_eq(th_json_u64(ca, "shm_segments"), 1);
    cr_assert_geq(th_json_u64(ca, "shm_bytes"), 4096);
    cr_assert_eq(th_json_u64(cb, "shm_held"), 1);
    th_json_array_free(arr, n);

    th_output_t o;
    char row[256], owner[24], segid[24], size[24];
    int st = th_ctl(br.sock, &o, "shm", "--no-legend", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, row, sizeof(row)), 1, "%s", o.out);
    cr_assert_eq(sscanf(row, "%23s %23s %23s", owner, segid, size), 3);
    cr_assert(size_of(size) >= 4096 && strcmp(size, "4096"),
              "SIZE not in units: %s", row);
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "shm", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, NULL, 0), 2, "%s", o.out);
    cr_assert(!strncmp(o.out, "OWNER", 5), "%s", o.out);
    th_output_free(&o);

    broker_msg_free(m);
    broker_buf_free(a, buf);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- units ------------------------------------------------------------------- */

#define CUT_NAMES 25

Test(inspect, tables_in_units_json_raw_names_cut)
{
    broker_t *a = th_connect(&br);
    uint64_t ida = broker_client_id(a);
    struct passwd *pw = getpwuid(getuid());
    char name[64], row[512], first[256], *w[16], *save = NULL;
    th_json_obj_t *arr;
    th_output_t o;
    int n, st, nw = 0;

    for (int i = 0; i < CUT_NAMES; i++) {
        snprintf(name, sizeof(name), "svc.cut.%02d", i);
        th_register(a, name);
    }
    cr_assert_eq(broker_send(a, "svc.cut.00", "0123456789", 10, NULL, 0), 0);
    broker_msg_free(th_recv(a));

    /* The table: QUEUED and AGE in units, UID as a name, NAMES cut. */
    st = th_ctl(br.sock, &o, "clients", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    lines_of(o.out, first, sizeof(first));
    cr_assert(strstr(first, " QUEUED ") && strstr(first, " AGE") &&
              !strstr(first, "AGE_MS") && !strstr(first, "QUEUED_BYTES"),
              "legend: %s", first);
    row_of(o.out, ida, row, sizeof(row));
    check_cut_names(row, "svc.cut.", CUT_NAMES);
    cr_assert(is_duration(last_word(row)), "AGE: %s", row);
    for (char *t = strtok_r(row, " ", &save); t && nw < 16;
         t = strtok_r(NULL, " ", &save))
        w[nw++] = t;
    cr_assert_geq(nw, 5);
    if (pw)
        cr_assert_str_eq(w[2], pw->pw_name, "UID: %s", w[2]);
    th_output_free(&o);

    /* JSON: every name, raw numbers. */
    n = ctl_json(&arr, "clients", NULL);
    const th_json_obj_t *ca = th_json_find(arr, n, "id", ida);
    cr_assert_not_null(ca);
    cr_assert_eq(th_json_u64(ca, "uid"), (unsigned long long)getuid());
    cr_assert_eq(th_json_u64(ca, "names_more"), 0);
    cr_assert_geq(th_json_u64(ca, "bytes_in"), 10);
    th_json_u64(ca, "age_ms");
    const char *names = th_json_str(ca, "names");
    int items = *names != '\0';
    for (const char *p = names; *p; p++)
        items += *p == ',';
    cr_assert_eq(items, CUT_NAMES, "names: %s", names);
    th_json_array_free(arr, n);

    /* status: sizes and the uptime in units, raw in JSON. */
    st = th_ctl(br.sock, &o, "status", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    const char *up = strstr(o.out, "\nuptime:");
    const char *bin = strstr(o.out, "\nbytes_in:");
    const char *shm = strstr(o.out, "\nmax_shm:");
    cr_assert(up && bin && shm && !strstr(o.out, "uptime_ms"), "%s", o.out);
    char val[64];
    cr_assert_eq(sscanf(up + 8, " %63s", val), 1);
    cr_assert(is_duration(val), "uptime: %s", val);
    cr_assert_eq(sscanf(bin + 10, " %63s", val), 1);
    cr_assert_geq(size_of(val), 10, "bytes_in: %s", val);
    cr_assert_eq(sscanf(shm + 9, " %63s", val), 1);
    cr_assert_gt(size_of(val), 1024, "max_shm: %s", val);
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "status", "--json", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert(strstr(o.out, "\"uptime_ms\":") && strstr(o.out, "\"bytes_in\":"),
              "%s", o.out);
    cr_assert_null(strstr(o.out, "iB\""), "units in JSON: %s", o.out);
    th_output_free(&o);

    broker_close(a);
    th_broker_stop(&br);
}

/* ---- paging ------------------------------------------------------------------- */

#define MANY_NAMES 3000

Test(inspect, many_names_span_pages_each_once)
{
    broker_t *a = th_connect(&br);
    char name[64], *text = NULL, *save = NULL;
    static unsigned char seen[MANY_NAMES];
    void *page = NULL;
    size_t len = 0;
    uint8_t start[8] = { 0 };
    unsigned total = 0;
    th_json_obj_t *arr;
    int n;

    for (int i = 0; i < MANY_NAMES; i++) {
        snprintf(name, sizeof(name), "page.test.name.%04d", i);
        th_register(a, name);
    }
    /* One raw page is not the whole listing. */
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, start, 8, &page,
                             &len), 0);
    cr_assert_leq(len, broker_limits(a)->max_packet - BK_HDR_SIZE);
    const char *last = strrchr((char *)page, '\n');
    cr_assert_not_null(last);
    while (last > (char *)page && last[-1] != '\n')
        last--;
    cr_assert(!strncmp(last, "next=", 5) && strtoull(last + 5, NULL, 10) > 0,
              "first page's trailer: %s", last);
    free(page);

    /* The library joins the pages: every name exactly once. */
    cr_assert_eq(broker_list(a, BROKER_CTRL_LIST_NAMES, &text, &len), 0);
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned idx;
        cr_assert_eq(sscanf(line, "name=page.test.name.%u ", &idx), 1,
                     "record: %s", line);
        cr_assert_lt(idx, MANY_NAMES);
        cr_assert_eq(seen[idx], 0, "name %u listed twice", idx);
        seen[idx] = 1;
        total++;
    }
    cr_assert_eq(total, MANY_NAMES);
    free(text);

    /* Past the end: an empty last page. */
    uint8_t far[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, far, 8, &page,
                             &len), 0);
    cr_assert_str_eq((char *)page, "next=0\n");
    free(page);
    /* Payload sizes are checked per operation. */
    uint8_t junk[8] = { 0 };
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, junk, 3, NULL, NULL),
                 -EINVAL);
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, junk, 4, NULL, NULL),
                 -EINVAL, "the old u32 start index");
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_KICK, junk, 4, NULL, NULL),
                 -EINVAL);
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_SHUTDOWN, junk, 1, NULL, NULL),
                 -EINVAL);
    cr_assert_eq(broker_ctrl(a, 6 /* SEGMENT needs an fd */, junk, 8, NULL,
                             NULL), -EINVAL);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);

    /* brokerctl too. */
    n = ctl_json(&arr, "names", NULL);
    cr_assert_eq(n, MANY_NAMES);
    th_json_array_free(arr, n);

    /* The owner's client record stays within one page: the names it
     * could not carry are counted. */
    cr_assert_eq(broker_list(a, BROKER_CTRL_LIST_CLIENTS, &text, &len), 0);
    char idkey[48];
    snprintf(idkey, sizeof(idkey), "id=%llu ",
             (unsigned long long)broker_client_id(a));
    char *rec = strstr(text, idkey);
    cr_assert_not_null(rec, "%s", text);
    char *names = strstr(rec, " names="), *more = strstr(rec, " names_more=");
    cr_assert(names && more);
    unsigned listed = 1;
    for (char *p = names + 7; p < more; p++)
        listed += *p == ',';
    cr_assert_eq(listed + strtoul(more + 12, NULL, 10), MANY_NAMES);
    free(text);

    /* The table's NAMES cell counts them all, those left out of the
     * record too. */
    th_output_t o;
    char row[512];
    int st = th_ctl(br.sock, &o, "clients", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    row_of(o.out, broker_client_id(a), row, sizeof(row));
    check_cut_names(row, "page.test.name.", MANY_NAMES);
    th_output_free(&o);

    broker_close(a);
    th_broker_stop(&br);
}

Test(inspect, sort_and_top)
{
    broker_t *c[3];
    th_json_obj_t *arr;
    th_output_t o;
    int n, st;

    for (int i = 0; i < 3; i++)
        c[i] = th_connect(&br);
    th_register(c[0], "zz.last");
    th_register(c[1], "aa.first");
    th_register(c[2], "mm.middle");
    th_await_status(c[0], "clients", 3);

    n = ctl_json(&arr, "names", NULL);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(th_json_str(&arr[0], "name"), "aa.first");  /* default */
    th_json_array_free(arr, n);

    st = th_ctl(br.sock, &o, "names", "--json", "--sort", "name", "--top",
                "2", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    n = parse_listing(o.out, &arr);
    cr_assert_eq(n, 2, "%s", o.out);
    cr_assert_str_eq(th_json_str(&arr[0], "name"), "aa.first");
    cr_assert_str_eq(th_json_str(&arr[1], "name"), "mm.middle");
    th_json_array_free(arr, n);
    th_output_free(&o);

    /* Numbers sort largest first: the newest client has the highest id. */
    st = th_ctl(br.sock, &o, "clients", "--json", "--sort", "id", "--top",
                "1", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    n = parse_listing(o.out, &arr);
    cr_assert_eq(n, 1, "%s", o.out);
    cr_assert_gt(th_json_u64(&arr[0], "id"), broker_client_id(c[2]));
    cr_assert_str_eq(th_json_str(&arr[0], "comm"), "brokerctl");
    th_json_array_free(arr, n);
    th_output_free(&o);

    st = th_ctl(br.sock, &o, "--no-legend", "names", "--sort", "owner", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert(!strncmp(o.out, "mm.middle", 9), "%s", o.out);
    th_output_free(&o);

    st = th_ctl(br.sock, &o, "names", "--sort", "nosuchfield", NULL);
    cr_assert(TH_EXITED(st, 2), "unknown field: 0x%x", st);
    th_output_free(&o);
    /* --top 0, like no --top: all of them. */
    st = th_ctl(br.sock, &o, "names", "--json", "--top", "0", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    n = parse_listing(o.out, &arr);
    cr_assert_eq(n, 3, "--top 0: %s", o.out);
    th_json_array_free(arr, n);
    th_output_free(&o);

    st = th_ctl(br.sock, &o, "names", "--top", "-3", NULL);
    cr_assert(TH_EXITED(st, 2), "bad --top: 0x%x", st);
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "ping", "--sort", "id", NULL);
    cr_assert(TH_EXITED(st, 2), "--sort on ping: 0x%x", st);
    th_output_free(&o);

    /* status honours the global --json=pretty. */
    st = th_ctl(br.sock, &o, "--json=pretty", "status", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert(!strncmp(o.out, "{\n  \"version\": ", 15), "%s", o.out);
    th_output_free(&o);

    for (int i = 0; i < 3; i++)
        broker_close(c[i]);
    th_broker_stop(&br);
}

/* ---- kick and shutdown ------------------------------------------------------- */

Test(inspect, kick_disconnects_only_that_client)
{
    broker_t *a = th_connect(&br), *victim = th_connect(&br);
    char id[32];
    th_output_t o;
    broker_msg_t *m = NULL;
    int st, r;

    th_register(victim, "svc.victim");
    snprintf(id, sizeof(id), "%llu",
             (unsigned long long)broker_client_id(victim));
    st = th_ctl(br.sock, &o, "kick", id, NULL);
    cr_assert(TH_EXITED(st, 0), "kick: 0x%x %s", st, o.err);
    th_output_free(&o);

    /* The victim hears why (ERROR, ECONNABORTED), then the connection
     * ends. */
    bool told = false;
    r = broker_recv(victim, &m, TH_HANG_MS);
    while (r == 0) {
        if (m->kind == BROKER_MSG_ERROR && m->code == -ECONNABORTED)
            told = true;
        broker_msg_free(m);
        r = broker_recv(victim, &m, TH_HANG_MS);
    }
    cr_assert(told, "no ERROR ECONNABORTED before the end");
    cr_assert(r == -ECONNRESET || r == -ECONNABORTED || r == -EPIPE,
              "victim: %d (%s)", r, broker_strerror(r));
    cr_assert_lt(broker_ping(victim, TH_HANG_MS), 0);

    /* Others keep working; the victim's name is free again. */
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    th_register(a, "svc.victim");
    cr_assert_eq(broker_kick(a, 999999), -ENOENT);
    st = th_ctl(br.sock, &o, "kick", "999999", NULL);
    cr_assert(TH_EXITED(st, 1), "unknown client: 0x%x", st);
    cr_assert_gt(o.err_len, 0);
    th_output_free(&o);
    st = th_ctl(br.sock, &o, "kick", "notanumber", NULL);
    cr_assert(TH_EXITED(st, 2), "bad id: 0x%x", st);
    th_output_free(&o);

    broker_close(victim);
    broker_close(a);
    th_broker_stop(&br);
}

Test(inspect, shutdown_stops_broker_with_exit_0)
{
    broker_t *a = th_connect(&br);
    th_output_t o;
    int st;

    st = th_ctl(br.sock, &o, "shutdown", NULL);
    cr_assert(TH_EXITED(st, 0), "shutdown: 0x%x %s", st, o.err);
    th_output_free(&o);
    st = th_join_status(br.pid);
    br.pid = 0;
    cr_assert(TH_EXITED(st, 0), "brokerd: 0x%x", st);
    cr_assert_neq(access(br.sock, F_OK), 0, "socket still there");
    cr_assert_lt(broker_ping(a, TH_HANG_MS), 0);
    broker_close(a);
}

/* ---- privilege ---------------------------------------------------------------- */

/* arg: the brokerctl binary, found while still root. */
static int as_nobody(void *arg)
{
    const char *ctl = arg;
    broker_t *b = NULL;
    char *text = NULL;
    th_output_t o;
    int st;

    if (!th_become_nobody())
        return 10;
    if (broker_connect(br.sock, &b) < 0)
        return 11;
    if (broker_ping(b, TH_HANG_MS) != 0)
        return 12;
    for (uint32_t op = BROKER_CTRL_LIST_CLIENTS;
         op <= BROKER_CTRL_LIST_SHM; op++)
        if (broker_list(b, op, &text, NULL) != -EPERM)
            return 13;
    if (broker_kick(b, broker_client_id(b)) != -EPERM)
        return 14;
    if (broker_shutdown(b) != -EPERM)
        return 15;
    broker_close(b);
    if (access(ctl, X_OK) != 0)
        return 0;               /* the build tree is closed to nobody */
    st = th_ctl(br.sock, &o, "clients", NULL);
    if (!TH_EXITED(st, 1) || !strstr(o.err, "permission denied") ||
        o.out_len != 0) {
        fprintf(stderr, "brokerctl as nobody: 0x%x, %s", st, o.err);
        return 16;
    }
    th_output_free(&o);
    return 0;
}

Test(inspect, other_uid_gets_eperm)
{
    broker_t *a;
    int st;

    if (geteuid() != 0)
        cr_skip_test("needs root to switch to uid %d", TH_NOBODY);
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
    a = th_connect(&br);
    st = th_join_status(th_spawn(as_nobody, (void *)th_brokerctl_path()));
    cr_assert(TH_EXITED(st, 0), "child as nobody: 0x%x", st);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0, "broker still serves");
    broker_close(a);
    th_broker_stop(&br);
}
