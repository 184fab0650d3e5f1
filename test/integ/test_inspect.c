/*
 * test_inspect.c - the operator listings (LIST_CLIENTS, LIST_NAMES,
 * LIST_STREAMS, LIST_SHM) through libbroker and brokerctl, their paging,
 * --sort/--top, KICK, SHUTDOWN and the privilege rule.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <grp.h>
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

#define EXITED(st, code) (WIFEXITED(st) && WEXITSTATUS(st) == (code))

static const char *ctl_path(void)
{
    const char *p = getenv("BROKERCTL");

    if (!p || !*p)
        cr_assert_fail("BROKERCTL is not set: run the tests with `make "
                       "check`, or export BROKERCTL=/path/to/brokerctl");
    return p;
}

/* Run brokerctl -s <sock> ARGS... and return its wait status. */
static int ctl(th_output_t *out, ...)
{
    const char *argv[16];
    int n = 0;
    va_list ap;

    argv[n++] = ctl_path();
    argv[n++] = "-s";
    argv[n++] = br.sock;
    va_start(ap, out);
    while (n < 15 && (argv[n] = va_arg(ap, const char *)))
        n++;
    va_end(ap);
    argv[n] = NULL;
    return th_run(argv, NULL, NULL, 0, out);
}

/* ---- a small strict reader for an array of flat JSON objects -------------- */

#define J_MAX_KEYS 24

typedef struct jobj {
    char key[J_MAX_KEYS][32];
    char val[J_MAX_KEYS][128];  /* string, number, or list joined by ',' */
    bool num[J_MAX_KEYS];
    int count[J_MAX_KEYS];      /* list elements */
    int n;
} jobj_t;

static const char *j_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static const char *j_str(const char *p, char *out, size_t len)
{
    size_t n = 0;

    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        if (!*p || (unsigned char)*p < 0x20 || *p == '\\')
            return NULL;
        if (n + 1 < len)
            out[n++] = *p;
        p++;
    }
    out[n] = '\0';
    return p + 1;
}

static const char *j_value(const char *p, jobj_t *o, int k)
{
    size_t n = 0;

    o->num[k] = false;
    o->count[k] = 0;
    o->val[k][0] = '\0';
    if (*p == '"')
        return j_str(p, o->val[k], sizeof(o->val[k]));
    if (*p == '[') {
        p = j_ws(p + 1);
        while (*p != ']') {
            char s[128];
            if (!(p = j_str(p, s, sizeof(s))))
                return NULL;
            n += (size_t)snprintf(o->val[k] + n, sizeof(o->val[k]) - n,
                                  "%s%s", o->count[k] ? "," : "", s);
            if (n >= sizeof(o->val[k]))
                n = sizeof(o->val[k]) - 1;
            o->count[k]++;
            p = j_ws(p);
            if (*p == ',')
                p = j_ws(p + 1);
            else if (*p != ']')
                return NULL;
        }
        return p + 1;
    }
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9') {
        if (n + 1 < sizeof(o->val[k]))
            o->val[k][n++] = *p;
        p++;
    }
    o->val[k][n] = '\0';
    o->num[k] = true;
    return p;
}

static const char *j_object(const char *p, jobj_t *o)
{
    o->n = 0;
    if (*p++ != '{')
        return NULL;
    p = j_ws(p);
    while (*p != '}') {
        if (o->n == J_MAX_KEYS)
            return NULL;
        if (!(p = j_str(p, o->key[o->n], sizeof(o->key[0]))))
            return NULL;
        p = j_ws(p);
        if (*p++ != ':')
            return NULL;
        if (!(p = j_value(j_ws(p), o, o->n)))
            return NULL;
        o->n++;
        p = j_ws(p);
        if (*p == ',')
            p = j_ws(p + 1);
        else if (*p != '}')
            return NULL;
    }
    return p + 1;
}

/* Parse the whole document; returns the number of objects (malloc'd in
 * *out) or -1. */
static int j_array(const char *p, jobj_t **out)
{
    jobj_t *a = NULL;
    int n = 0, cap = 0;

    p = j_ws(p);
    if (*p++ != '[')
        return -1;
    p = j_ws(p);
    while (*p != ']') {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            a = realloc(a, (size_t)cap * sizeof(*a));
            cr_assert_not_null(a);
        }
        if (!(p = j_object(p, &a[n++])))
            goto bad;
        p = j_ws(p);
        if (*p == ',')
            p = j_ws(p + 1);
        else if (*p != ']')
            goto bad;
    }
    if (*j_ws(p + 1))
        goto bad;
    *out = a;
    return n;
bad:
    free(a);
    return -1;
}

static int j_idx(const jobj_t *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->key[i], key))
            return i;
    return -1;
}

static const char *j_get(const jobj_t *o, const char *key)
{
    int i = j_idx(o, key);

    cr_assert_geq(i, 0, "no key \"%s\"", key);
    return o->val[i];
}

static unsigned long long j_num(const jobj_t *o, const char *key)
{
    int i = j_idx(o, key);

    cr_assert_geq(i, 0, "no key \"%s\"", key);
    cr_assert(o->num[i], "\"%s\" is not a number: %s", key, o->val[i]);
    return strtoull(o->val[i], NULL, 10);
}

/* The object whose numeric `key` equals v, or NULL. */
static const jobj_t *j_find(const jobj_t *a, int n, const char *key,
                            unsigned long long v)
{
    for (int i = 0; i < n; i++) {
        int k = j_idx(&a[i], key);
        if (k >= 0 && a[i].num[k] && strtoull(a[i].val[k], NULL, 10) == v)
            return &a[i];
    }
    return NULL;
}

/* Run `brokerctl CMD --json [extra]` and parse it. */
static int ctl_json(jobj_t **out, const char *cmd, const char *extra)
{
    th_output_t o;
    int st = ctl(&o, cmd, "--json", extra, NULL);
    int n;

    cr_assert(EXITED(st, 0), "brokerctl %s --json: 0x%x, %s", cmd, st, o.err);
    n = j_array(o.out, out);
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

/* Wait until the broker counts exactly `n` clients (the harness's
 * readiness probe may still be connected). */
static void settle_clients(broker_t *b, unsigned n)
{
    char want[32];

    snprintf(want, sizeof(want), "\nclients=%u\n", n);
    for (int i = 0;; i++) {
        char *text = NULL;
        cr_assert_eq(broker_status(b, &text), 0);
        bool ok = strstr(text, want) != NULL;
        free(text);
        if (ok)
            return;
        cr_assert_lt(i, TH_HANG_MS / 10, "clients never settled at %u", n);
        usleep(10000);
    }
}

/* ---- the listings ------------------------------------------------------------ */

Test(inspect, clients_names_streams_match_known_state)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    uint64_t ida = broker_client_id(a), idb = broker_client_id(b);
    broker_msg_t *m;
    jobj_t *arr;
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
    settle_clients(a, 2);

    /* clients --json: a, b and brokerctl itself. */
    n = ctl_json(&arr, "clients", NULL);
    cr_assert_eq(n, 3, "clients: %d", n);
    const jobj_t *ca = j_find(arr, n, "id", ida), *cb = j_find(arr, n, "id", idb);
    cr_assert(ca && cb, "a or b missing");
    cr_assert_eq(j_num(ca, "pid"), (unsigned long long)getpid());
    cr_assert_eq(j_num(ca, "uid"), (unsigned long long)getuid());
    cr_assert_str_eq(j_get(ca, "names"), "svc.alpha");
    cr_assert(!strcmp(j_get(cb, "names"), "svc.beta1,svc.beta2") ||
              !strcmp(j_get(cb, "names"), "svc.beta2,svc.beta1"),
              "b's names: %s", j_get(cb, "names"));
    cr_assert_eq(j_num(ca, "streams"), 1);
    cr_assert_eq(j_num(cb, "streams"), 1);
    cr_assert_eq(j_num(cb, "names_more"), 0);
    cr_assert_geq(j_num(ca, "bytes_in"), 5);
    cr_assert_geq(j_num(ca, "msgs_in"), 1);
    free(arr);

    /* names --json */
    n = ctl_json(&arr, "names", NULL);
    cr_assert_eq(n, 3);
    for (int i = 0; i < n; i++) {
        const char *name = j_get(&arr[i], "name");
        uint64_t want = !strcmp(name, "svc.alpha") ? ida : idb;
        cr_assert_eq(j_num(&arr[i], "owner"), want, "owner of %s", name);
        cr_assert_eq(j_num(&arr[i], "pid"), (unsigned long long)getpid());
        j_num(&arr[i], "age_ms");
    }
    free(arr);

    /* streams --json: one stream, a's id and b's broker-assigned id. */
    n = ctl_json(&arr, "streams", NULL);
    cr_assert_eq(n, 1);
    cr_assert_eq(j_num(&arr[0], "opener"), ida);
    cr_assert_eq(j_num(&arr[0], "opener_sid"), sid);
    cr_assert_eq(j_num(&arr[0], "acceptor"), idb);
    cr_assert_geq(j_num(&arr[0], "acceptor_sid"), 0x80000000ull);
    cr_assert_eq(j_num(&arr[0], "opener_bytes"), 5);
    cr_assert_eq(j_num(&arr[0], "acceptor_bytes"), 0);
    free(arr);

    /* Tables: a header, then one row per record; --no-legend drops it. */
    th_output_t o;
    char first[256], row[64];
    int st = ctl(&o, "names", NULL);
    cr_assert(EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, first, sizeof(first)), 4, "%s", o.out);
    cr_assert(!strncmp(first, "NAME", 4), "header: %s", first);
    cr_assert(strstr(o.out, "svc.alpha") && strstr(o.out, "svc.beta2"));
    th_output_free(&o);
    st = ctl(&o, "--no-legend", "names", NULL);
    cr_assert(EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, first, sizeof(first)), 3, "%s", o.out);
    cr_assert(!strstr(o.out, "NAME"), "%s", o.out);
    th_output_free(&o);
    st = ctl(&o, "clients", NULL);
    cr_assert(EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, first, sizeof(first)), 4, "%s", o.out);
    cr_assert(!strncmp(first, "ID", 2) && strstr(first, "NAMES"), "%s", first);
    cr_assert(strstr(o.out, "svc.alpha"), "%s", o.out);
    th_output_free(&o);
    st = ctl(&o, "streams", "--no-legend", NULL);
    cr_assert(EXITED(st, 0));
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
    jobj_t *arr;
    int n;

    th_register(b, "svc.sink");
    cr_assert_eq(broker_buf_alloc(a, 4096, &buf, TH_HANG_MS), 0);
    memset(buf->data, 0x5a, 4096);
    cr_assert_eq(broker_buf_send(a, "svc.sink", buf, 4096), 0);
    m = th_recv(b);
    cr_assert_eq(m->len, 4096);

    n = ctl_json(&arr, "shm", NULL);
    cr_assert_eq(n, 1, "segments: %d", n);
    cr_assert_eq(j_num(&arr[0], "owner"), ida);
    cr_assert_geq(j_num(&arr[0], "size"), 4096);
    cr_assert_eq(j_num(&arr[0], "receivers"), 1);
    cr_assert_gt(j_num(&arr[0], "segid"), 0);
    free(arr);

    n = ctl_json(&arr, "clients", NULL);
    const jobj_t *ca = j_find(arr, n, "id", ida), *cb = j_find(arr, n, "id", idb);
    cr_assert(ca && cb);
    cr_assert_eq(j_num(ca, "shm_segments"), 1);
    cr_assert_geq(j_num(ca, "shm_bytes"), 4096);
    cr_assert_eq(j_num(cb, "shm_held"), 1);
    free(arr);

    th_output_t o;
    int st = ctl(&o, "shm", NULL);
    cr_assert(EXITED(st, 0));
    cr_assert_eq(lines_of(o.out, NULL, 0), 2, "%s", o.out);
    cr_assert(!strncmp(o.out, "OWNER", 5), "%s", o.out);
    th_output_free(&o);

    broker_msg_free(m);
    broker_buf_free(a, buf);
    broker_close(a);
    broker_close(b);
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
    uint8_t start[4] = { 0 };
    unsigned total = 0;
    jobj_t *arr;
    int n;

    for (int i = 0; i < MANY_NAMES; i++) {
        snprintf(name, sizeof(name), "page.test.name.%04d", i);
        th_register(a, name);
    }
    /* One raw page is not the whole listing. */
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, start, 4, &page,
                             &len), 0);
    cr_assert_leq(len, broker_limits(a)->max_packet - BK_HDR_SIZE);
    const char *last = strrchr((char *)page, '\n');
    cr_assert_not_null(last);
    while (last > (char *)page && last[-1] != '\n')
        last--;
    cr_assert(!strncmp(last, "next=", 5) && strtoul(last + 5, NULL, 10) > 0,
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
    uint8_t far[4] = { 0xff, 0xff, 0, 0 };
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, far, 4, &page,
                             &len), 0);
    cr_assert_str_eq((char *)page, "next=0\n");
    free(page);
    /* Payload sizes are checked per operation. */
    uint8_t junk[8] = { 0 };
    cr_assert_eq(broker_ctrl(a, BROKER_CTRL_LIST_NAMES, junk, 3, NULL, NULL),
                 -EINVAL);
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
    free(arr);

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

    broker_close(a);
    th_broker_stop(&br);
}

Test(inspect, sort_and_top)
{
    broker_t *c[3];
    jobj_t *arr;
    th_output_t o;
    int n, st;

    for (int i = 0; i < 3; i++)
        c[i] = th_connect(&br);
    th_register(c[0], "zz.last");
    th_register(c[1], "aa.first");
    th_register(c[2], "mm.middle");
    settle_clients(c[0], 3);

    n = ctl_json(&arr, "names", NULL);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(j_get(&arr[0], "name"), "aa.first");  /* default */
    free(arr);

    st = ctl(&o, "names", "--json", "--sort", "name", "--top", "2", NULL);
    cr_assert(EXITED(st, 0), "%s", o.err);
    n = j_array(o.out, &arr);
    cr_assert_eq(n, 2, "%s", o.out);
    cr_assert_str_eq(j_get(&arr[0], "name"), "aa.first");
    cr_assert_str_eq(j_get(&arr[1], "name"), "mm.middle");
    free(arr);
    th_output_free(&o);

    /* Numbers sort largest first: the newest client has the highest id. */
    st = ctl(&o, "clients", "--json", "--sort", "id", "--top", "1", NULL);
    cr_assert(EXITED(st, 0), "%s", o.err);
    n = j_array(o.out, &arr);
    cr_assert_eq(n, 1, "%s", o.out);
    cr_assert_gt(j_num(&arr[0], "id"), broker_client_id(c[2]));
    cr_assert_str_eq(j_get(&arr[0], "comm"), "brokerctl");
    free(arr);
    th_output_free(&o);

    st = ctl(&o, "--no-legend", "names", "--sort", "owner", NULL);
    cr_assert(EXITED(st, 0), "%s", o.err);
    cr_assert(!strncmp(o.out, "mm.middle", 9), "%s", o.out);
    th_output_free(&o);

    st = ctl(&o, "names", "--sort", "nosuchfield", NULL);
    cr_assert(EXITED(st, 2), "unknown field: 0x%x", st);
    th_output_free(&o);
    st = ctl(&o, "names", "--top", "-3", NULL);
    cr_assert(EXITED(st, 2), "bad --top: 0x%x", st);
    th_output_free(&o);
    st = ctl(&o, "ping", "--sort", "id", NULL);
    cr_assert(EXITED(st, 2), "--sort on ping: 0x%x", st);
    th_output_free(&o);

    /* status honours the global --json=pretty. */
    st = ctl(&o, "--json=pretty", "status", NULL);
    cr_assert(EXITED(st, 0), "%s", o.err);
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
    st = ctl(&o, "kick", id, NULL);
    cr_assert(EXITED(st, 0), "kick: 0x%x %s", st, o.err);
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
    st = ctl(&o, "kick", "999999", NULL);
    cr_assert(EXITED(st, 1), "unknown client: 0x%x", st);
    cr_assert_gt(o.err_len, 0);
    th_output_free(&o);
    st = ctl(&o, "kick", "notanumber", NULL);
    cr_assert(EXITED(st, 2), "bad id: 0x%x", st);
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

    st = ctl(&o, "shutdown", NULL);
    cr_assert(EXITED(st, 0), "shutdown: 0x%x %s", st, o.err);
    th_output_free(&o);
    st = th_join_status(br.pid);
    br.pid = 0;
    cr_assert(EXITED(st, 0), "brokerd: 0x%x", st);
    cr_assert_neq(access(br.sock, F_OK), 0, "socket still there");
    cr_assert_lt(broker_ping(a, TH_HANG_MS), 0);
    broker_close(a);
}

/* ---- privilege ---------------------------------------------------------------- */

#define NOBODY 65534

static int as_nobody(void *arg)
{
    broker_t *b = NULL;
    char *text = NULL;
    th_output_t o;
    int st;

    (void)arg;
    if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
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
    if (access(ctl_path(), X_OK) != 0)
        return 0;               /* the build tree is closed to nobody */
    st = ctl(&o, "clients", NULL);
    if (!EXITED(st, 1) || !strstr(o.err, "permission denied") ||
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
        cr_skip_test("needs root to switch to uid %d", NOBODY);
    cr_assert_eq(chmod(br.dir, 0755), 0);
    cr_assert_eq(chmod(br.sock, 0777), 0);
    a = th_connect(&br);
    st = th_join_status(th_spawn(as_nobody, NULL));
    cr_assert(EXITED(st, 0), "child as nobody: 0x%x", st);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0, "broker still serves");
    broker_close(a);
    th_broker_stop(&br);
}
