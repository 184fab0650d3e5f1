/*
 * test_bridge.c - brokerd-nats between two brokerds ("hosts" hosta and
 * hostb, two sockets) through a real nats-server on 127.0.0.1.
 *
 * Each test starts the nats-server (a free port, max_payload 64K), two
 * brokerds and a bridge on each, and stops them by pid at the end.
 * Nothing here waits on a clock: every wait polls for a condition (a name
 * owned, a bridge's status value, a probe message that came across) with
 * TH_HANG_MS as the hang guard.  The tests skip themselves, saying why,
 * when nats-server ($NATS_SERVER or $PATH) or brokerd-nats ($BROKERD_NATS,
 * set by make check when configure found libnats) is absent.
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
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <criterion/criterion.h>
#include "harness.h"

#define BT_MAX_PAYLOAD 65536
#define BT_CALL_MS 20000

typedef struct bt_nats {
    pid_t pid;
    int port, cluster_port;
    char conf[192], log[192];
} bt_nats_t;

typedef struct bt_bridge {
    pid_t pid;
    char conf[192], log[192];
    const th_broker_t *broker;
} bt_bridge_t;

static th_broker_t hosta, hostb, hostc;
static bt_nats_t nats[3];
static bt_bridge_t bridge_a, bridge_b, bridge_c;
static char nats_server[512];

/* ---- programs ---------------------------------------------------------------- */

/* prog (a name) found in $PATH, into buf; false if it is not there. */
static bool bt_which(const char *prog, char *buf, size_t len)
{
    char *path, *save = NULL;
    bool found = false;

    if (strchr(prog, '/')) {
        snprintf(buf, len, "%s", prog);
        return access(buf, X_OK) == 0;
    }
    path = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    cr_assert_not_null(path);
    for (char *d = strtok_r(path, ":", &save); d && !found;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(buf, len, "%s/%s", d, prog);
        found = access(buf, X_OK) == 0;
    }
    free(path);
    return found;
}

/* nats-server from $NATS_SERVER or $PATH into nats_server; false if none. */
static bool bt_find_nats_server(void)
{
    const char *env = getenv("NATS_SERVER");

    return bt_which(env && *env ? env : "nats-server", nats_server,
                    sizeof(nats_server));
}

static const char *bt_bridge_path(void)
{
    const char *p = getenv("BROKERD_NATS");

    return p && *p && access(p, X_OK) == 0 ? p : NULL;
}

static void bt_skip_unless_ready(void)
{
    if (!bt_bridge_path())
        cr_skip_test("brokerd-nats was not built (configure did not find "
                     "libnats: Debian package libnats-dev) or "
                     "$BROKERD_NATS is not set");
    if (!bt_find_nats_server())
        cr_skip_test("nats-server is not installed (Debian package "
                     "nats-server)");
}

static void bt_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
}

/* A TCP port on 127.0.0.1 that nobody listens on now. */
static int bt_free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    cr_assert_geq(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool bt_port_open(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* ---- nats-server --------------------------------------------------------------- */

/* Server i of n (n > 1: a cluster with routes to all the others). */
static void bt_nats_start(int i, int n)
{
    bt_nats_t *s = &nats[i];
    char text[1024], routes[512] = "";
    size_t off = 0;
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;
    int st;

    for (int k = 0; k < n; k++)
        if (k != i)
            off += (size_t)snprintf(routes + off, sizeof(routes) - off,
                                    "    nats-route://127.0.0.1:%d\n",
                                    nats[k].cluster_port);
    if (n > 1)
        snprintf(text, sizeof(text),
                 "listen: 127.0.0.1:%d\nmax_payload: %d\n"
                 "server_name: s%d\n"
                 "cluster {\n  name: bt\n  listen: 127.0.0.1:%d\n"
                 "  routes: [\n%s  ]\n}\n", s->port, BT_MAX_PAYLOAD, i,
                 s->cluster_port, routes);
    else
        snprintf(text, sizeof(text), "listen: 127.0.0.1:%d\n"
                 "max_payload: %d\n", s->port, BT_MAX_PAYLOAD);
    snprintf(s->conf, sizeof(s->conf), "%s/nats%d.conf", hosta.dir, i);
    snprintf(s->log, sizeof(s->log), "%s/nats%d.log", hosta.dir, i);
    bt_write(s->conf, text);
    const char *argv[] = { nats_server, "-c", s->conf, NULL };
    s->pid = th_run_bg(argv, NULL, s->log);
    while (!bt_port_open(s->port)) {
        cr_assert_eq(waitpid(s->pid, &st, WNOHANG), 0,
                     "nats-server exited: %s", th_read_file(s->log,
                                                            &(size_t){0}));
        cr_assert_lt(th_now_ms(), end, "nats-server never listened");
        th_nap(&us);
    }
}

static void bt_nats_stop(int i)
{
    if (nats[i].pid > 0) {
        kill(nats[i].pid, SIGKILL);
        waitpid(nats[i].pid, &(int){0}, 0);
        nats[i].pid = 0;
    }
}

/* ---- bridges -------------------------------------------------------------------- */

static broker_t *bt_connect(const th_broker_t *b)
{
    return th_connect(b);
}

/* The value of key in the bridge's status (through c), as text into
 * buf; false if the bridge does not answer. */
static bool bt_status_text(broker_t *c, const char *key, char *buf,
                           size_t len)
{
    broker_msg_t *reply = NULL;
    char *text, *p;
    size_t kl = strlen(key);
    bool found = false;

    if (broker_call(c, "brokerd-nats", "status", 6, &reply, BT_CALL_MS) < 0)
        return false;
    text = strndup(reply->data, reply->len);
    broker_msg_free(reply);
    cr_assert_not_null(text);
    for (p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            snprintf(buf, len, "%.*s", (int)strcspn(p + kl + 1, "\n"),
                     p + kl + 1);
            found = true;
            break;
        }
    free(text);
    cr_assert(found, "the bridge's status has no %s", key);
    return true;
}

static uint64_t bt_status(broker_t *c, const char *key)
{
    char v[64];

    cr_assert(bt_status_text(c, key, v, sizeof(v)), "the bridge does not "
              "answer its status");
    return strtoull(v, NULL, 10);
}

static void bt_await_status(broker_t *c, const char *key, uint64_t want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS, v;
    unsigned us = 1000;

    while ((v = bt_status(c, key)) != want) {
        cr_assert_lt(th_now_ms(), end, "bridge status %s is %" PRIu64
                     ", want %" PRIu64, key, v, want);
        th_nap(&us);
    }
}

static void bt_await_text(broker_t *c, const char *key, const char *want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;
    char v[256] = "";

    while (!bt_status_text(c, key, v, sizeof(v)) || strcmp(v, want)) {
        cr_assert_lt(th_now_ms(), end, "bridge status %s '%s', want '%s'",
                     key, v, want);
        th_nap(&us);
    }
}

static void bt_await_state(broker_t *c, const char *want)
{
    bt_await_text(c, "state", want);
}

static bool bt_owned(broker_t *c, const char *name)
{
    uint64_t id;

    return broker_resolve(c, name, &id) == 0;
}

static void bt_await_name(broker_t *c, const char *name, bool owned)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;

    while (bt_owned(c, name) != owned) {
        cr_assert_lt(th_now_ms(), end, "%s is %s", name,
                     owned ? "never owned" : "still owned");
        th_nap(&us);
    }
}

/* Run brokerd-nats -c conf -s sock, its output to log.  When brokerd
 * runs under a checker (BROKERD_WRAPPER, dev.sh test --valgrind), so does
 * the bridge: the program libtool's wrapper script would run, with the
 * uninstalled libbroker beside it; its verdict is the exit status. */
static pid_t bt_bridge_spawn(const char *conf, const char *sock,
                             const char *log)
{
    const char *wrapper = getenv("BROKERD_WRAPPER");
    static char words[512], real[600], libs[640], env0[700];
    const char *argv[48];
    char *save = NULL, *slash;
    int n = 0;

    snprintf(real, sizeof(real), "%s", bt_bridge_path());
    slash = strrchr(real, '/');
    if (wrapper && *wrapper && slash) {
        snprintf(libs, sizeof(libs), "%.*s/.libs", (int)(slash - real),
                 real);
        snprintf(real + (slash - real), sizeof(real) - (size_t)(slash - real),
                 "/.libs/brokerd-nats");
        if (access(real, X_OK) != 0)
            snprintf(real, sizeof(real), "%s", bt_bridge_path());
        snprintf(words, sizeof(words), "%s", wrapper);
        for (char *w = strtok_r(words, " ", &save); w && n < 40;
             w = strtok_r(NULL, " ", &save))
            argv[n++] = w;
        cr_assert(bt_which(argv[0], env0, sizeof(env0)), "%s not found",
                  argv[0]);
        argv[0] = strdup(env0);
        snprintf(env0, sizeof(env0), "LD_LIBRARY_PATH=%s", libs);
    } else {
        env0[0] = '\0';
    }
    argv[n++] = real;
    argv[n++] = "-c";
    argv[n++] = conf;
    argv[n++] = "-s";
    argv[n++] = sock;
    argv[n] = NULL;
    const char *env[] = { env0[0] ? env0 : NULL, NULL };
    return th_run_bg(argv, env, log);
}

/* Start a bridge for broker b as host `host` with the settings `extra`
 * (lines) and the servers of nats[first..first+n), and wait until it is
 * connected. */
static void bt_bridge_start(bt_bridge_t *g, const th_broker_t *b,
                            const char *host, const char *extra, int first,
                            int n)
{
    char text[2048];
    size_t off;
    broker_t *c;

    off = (size_t)snprintf(text, sizeof(text), "# test_bridge\nhost = %s\n"
                           "call-timeout = %d\n", host, BT_CALL_MS);
    for (int i = first; i < first + n; i++)
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "server = nats://127.0.0.1:%d\n",
                                nats[i].port);
    snprintf(text + off, sizeof(text) - off, "%s", extra);
    snprintf(g->conf, sizeof(g->conf), "%s/bridge.conf", b->dir);
    snprintf(g->log, sizeof(g->log), "%s/bridge.log", b->dir);
    bt_write(g->conf, text);
    g->pid = bt_bridge_spawn(g->conf, b->sock, g->log);
    g->broker = b;
    c = bt_connect(b);
    bt_await_name(c, "brokerd-nats", true);
    bt_await_state(c, "connected");
    broker_close(c);
}

/* SIGTERM and the exit status 0 (the bridge's own verdict). */
static void bt_bridge_stop(bt_bridge_t *g)
{
    int st;

    if (g->pid <= 0)
        return;
    st = th_signal_join(g->pid, SIGTERM);
    g->pid = 0;
    cr_assert(TH_EXITED(st, 0), "brokerd-nats exited with status %#x:\n%s",
              st, th_read_file(g->log, &(size_t){0}));
}

static void bt_bridge_kill(bt_bridge_t *g)
{
    if (g->pid > 0) {
        kill(g->pid, SIGKILL);
        waitpid(g->pid, &(int){0}, 0);
        g->pid = 0;
    }
}

/* ---- fixture ----------------------------------------------------------------- */

static void bt_setup(void)
{
    bt_skip_unless_ready();
    th_broker_start(&hosta, NULL);
    th_broker_start(&hostb, NULL);
    for (int i = 0; i < 3; i++) {
        nats[i].port = bt_free_port();
        nats[i].cluster_port = bt_free_port();
    }
}

static void bt_teardown(void)
{
    bt_bridge_kill(&bridge_a);
    bt_bridge_kill(&bridge_b);
    bt_bridge_kill(&bridge_c);
    for (int i = 0; i < 3; i++)
        bt_nats_stop(i);
    th_broker_cleanup(&hosta);
    th_broker_cleanup(&hostb);
    if (hostc.dir[0])
        th_broker_cleanup(&hostc);
}

TestSuite(bridge, .init = bt_setup, .fini = bt_teardown, .timeout = 240);

#define BT_SYMMETRIC "export = demo.>\nimport = demo.>\n"

/* One nats-server, a bridge on each host with `a` and `b` as settings. */
static void bt_two_hosts(const char *a, const char *b)
{
    bt_nats_start(0, 1);
    bt_bridge_start(&bridge_a, &hosta, "hosta", a, 0, 1);
    bt_bridge_start(&bridge_b, &hostb, "hostb", b, 0, 1);
}

/* Publish probes on `from` until sub (subscribed to them) gets one: the
 * bridges' subscriptions are then in place end to end.  Returns how many
 * probes were published; the subscriber may get more of them later. */
static uint64_t bt_probe(broker_t *from, broker_t *sub, const char *topic)
{
    uint64_t end = th_now_ms() + TH_HANG_MS, sent = 0;
    broker_msg_t *m = NULL;

    for (;;) {
        TH_OK(broker_publish(from, topic, "probe", 5, NULL, 0));
        sent++;
        if (broker_recv(sub, &m, 50) == 0) {
            bool probe = m->topic && !strcmp(m->topic, topic);

            broker_msg_free(m);
            if (probe)
                return sent;
        }
        cr_assert_lt(th_now_ms(), end, "no probe came across on %s", topic);
    }
}

/* The next publication on sub that is not a probe (topic *.probe). */
static broker_msg_t *bt_next(broker_t *sub)
{
    for (;;) {
        broker_msg_t *m = th_recv(sub);
        size_t tl = m->topic ? strlen(m->topic) : 0;

        if (m->kind == BROKER_MSG_DATA && tl >= 6 &&
            !strcmp(m->topic + tl - 6, ".probe")) {
            broker_msg_free(m);
            continue;
        }
        cr_assert_eq(m->kind, BROKER_MSG_DATA, "got %s",
                     th_kind_str(m->kind));
        return m;
    }
}

/* A subscriber on pattern, in group (or none). */
static broker_t *bt_member(const th_broker_t *b, const char *pattern,
                           const char *group)
{
    broker_t *c = bt_connect(b);
    uint32_t id;

    TH_OK(broker_subscribe(c, pattern, group, BROKER_SUB_BLOCK, &id));
    return c;
}

static broker_t *bt_subscriber(const th_broker_t *b, const char *pattern)
{
    return bt_member(b, pattern, NULL);
}

/* ---- publications ---------------------------------------------------------------- */

Test(bridge, publications_cross_in_order)
{
    size_t n = th_scaled(2000, 100);
    broker_t *pub, *sub, *ca;
    char text[64];

    bt_two_hosts("export = demo.>\n", "import = demo.>\n");
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    bt_probe(pub, sub, "demo.probe");
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(text, sizeof(text), "message %zu", i);

        TH_OK(broker_publish(pub, "demo.seq", text, (size_t)len, NULL, 0));
    }
    for (size_t i = 0; i < n; i++) {
        broker_msg_t *m = bt_next(sub);
        int len = snprintf(text, sizeof(text), "message %zu", i);

        cr_assert_str_eq(m->topic, "demo.seq");
        cr_assert_eq(m->len, (size_t)len, "message %zu: '%.*s'", i,
                     (int)m->len, (char *)m->data);
        cr_assert_arr_eq(m->data, text, m->len, "message %zu out of order", i);
        broker_msg_free(m);
    }
    ca = bt_connect(&hosta);
    cr_assert_eq(bt_status(ca, "drops"), 0);
    broker_close(ca);
    broker_close(pub);
    broker_close(sub);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* Symmetric patterns on both hosts: every message arrives once on each
 * host, and neither bridge sends back what it brought in. */
Test(bridge, symmetric_patterns_do_not_loop)
{
    size_t n = th_scaled(300, 30);
    broker_t *pa = bt_connect(&hosta), *pb = bt_connect(&hostb);
    broker_t *sa, *sb, *ca, *cb;
    uint64_t probes_a, probes_b;
    char topic[32];

    bt_two_hosts(BT_SYMMETRIC, BT_SYMMETRIC);
    sa = bt_subscriber(&hosta, "demo.>");
    sb = bt_subscriber(&hostb, "demo.>");
    TH_OK(broker_subscribe(sa, "local.end", NULL, BROKER_SUB_BLOCK,
                           &(uint32_t){0}));
    TH_OK(broker_subscribe(sb, "local.end", NULL, BROKER_SUB_BLOCK,
                           &(uint32_t){0}));
    probes_a = bt_probe(pa, sb, "demo.a.probe");
    probes_b = bt_probe(pb, sa, "demo.b.probe");
    for (size_t i = 0; i < n; i++) {
        snprintf(topic, sizeof(topic), "demo.a.%zu", i);
        TH_OK(broker_publish(pa, topic, "A", 1, NULL, 0));
        snprintf(topic, sizeof(topic), "demo.b.%zu", i);
        TH_OK(broker_publish(pb, topic, "B", 1, NULL, 0));
    }
    ca = bt_connect(&hosta);
    cb = bt_connect(&hostb);
    /* each bridge exported exactly its host's messages and brought in
     * exactly the other's; what it brought in it saw again locally and
     * skipped */
    bt_await_status(ca, "msgs_in", n + probes_b);
    bt_await_status(cb, "msgs_in", n + probes_a);
    cr_assert_eq(bt_status(ca, "msgs_out"), n + probes_a);
    cr_assert_eq(bt_status(cb, "msgs_out"), n + probes_b);
    cr_assert_eq(bt_status(ca, "loop_skipped"), n + probes_b);
    cr_assert_eq(bt_status(cb, "loop_skipped"), n + probes_a);
    /* the subscribers: n of each host, once, then the local end mark */
    TH_OK(broker_publish(pa, "local.end", "end", 3, NULL, 0));
    TH_OK(broker_publish(pb, "local.end", "end", 3, NULL, 0));
    broker_t *subs[] = { sa, sb };
    for (int s = 0; s < 2; s++) {
        size_t got_a = 0, got_b = 0;

        for (;;) {
            broker_msg_t *m = bt_next(subs[s]);
            bool end = !strcmp(m->topic, "local.end");

            if (!strncmp(m->topic, "demo.a.", 7))
                got_a++;
            else if (!strncmp(m->topic, "demo.b.", 7))
                got_b++;
            broker_msg_free(m);
            if (end)
                break;
        }
        cr_assert_eq(got_a, n, "host %c got %zu of hosta's %zu messages",
                     'a' + s, got_a, n);
        cr_assert_eq(got_b, n, "host %c got %zu of hostb's %zu messages",
                     'a' + s, got_b, n);
    }
    broker_t *all[] = { pa, pb, sa, sb, ca, cb };
    for (size_t i = 0; i < 6; i++)
        broker_close(all[i]);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* A publication of `len` bytes of pattern `seed` on topic. */
static void bt_publish_pattern(broker_t *pub, const char *topic, size_t len,
                               uint64_t seed)
{
    char *data = malloc(len);

    cr_assert_not_null(data);
    th_pattern(data, len, seed, 0);
    TH_OK(broker_publish(pub, topic, data, len, NULL, 0));
    free(data);
}

static void bt_expect(broker_t *sub, const char *topic, const char *text)
{
    broker_msg_t *m = bt_next(sub);

    cr_assert_str_eq(m->topic, topic, "got %s, want %s", m->topic, topic);
    cr_assert_eq(m->len, strlen(text), "%s: %zu bytes", topic, m->len);
    cr_assert_arr_eq(m->data, text, m->len, "%s: '%.*s'", topic,
                     (int)m->len, (char *)m->data);
    broker_msg_free(m);
}

#define BT_BIG (5u << 20)

/* Larger than max_payload: split into parts on NATS and joined again on
 * the other host, intact and in order between small ones; larger than
 * max-message: not sent, counted at the exporter. */
Test(bridge, large_publication_split_and_joined_in_order)
{
    broker_t *pub, *sub, *ca, *cb;
    broker_msg_t *m;

    bt_two_hosts("export = demo.>\nmax-message = 6M\n", "import = demo.>\n");
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    bt_probe(pub, sub, "demo.probe");
    TH_OK(broker_publish(pub, "demo.seq", "before", 6, NULL, 0));
    bt_publish_pattern(pub, "demo.big", BT_BIG, 11);
    TH_OK(broker_publish(pub, "demo.seq", "between", 7, NULL, 0));
    bt_publish_pattern(pub, "demo.huge", (6u << 20) + 1, 12);
    /* exactly max_payload with the origin header ("NATS/1.0\r\n",
     * "Brokerd-Origin: hosta\r\n", "\r\n"): one NATS message */
    bt_publish_pattern(pub, "demo.edge", BT_MAX_PAYLOAD - 30 -
                       strlen("hosta"), 13);
    /* one byte more: two parts */
    bt_publish_pattern(pub, "demo.edge1", BT_MAX_PAYLOAD - 29 -
                       strlen("hosta"), 14);
    TH_OK(broker_publish(pub, "demo.seq", "after", 5, NULL, 0));
    bt_expect(sub, "demo.seq", "before");
    m = bt_next(sub);
    cr_assert_str_eq(m->topic, "demo.big", "got %s", m->topic);
    cr_assert_eq(m->len, BT_BIG, "%zu bytes", m->len);
    cr_assert_eq(th_pattern_check(m->data, m->len, 11, 0), -1,
                 "the joined publication differs at byte %ld",
                 th_pattern_check(m->data, m->len, 11, 0));
    broker_msg_free(m);
    bt_expect(sub, "demo.seq", "between");
    m = bt_next(sub);
    cr_assert_str_eq(m->topic, "demo.edge", "got %s", m->topic);
    cr_assert_eq(m->len, BT_MAX_PAYLOAD - 30 - strlen("hosta"));
    cr_assert_eq(th_pattern_check(m->data, m->len, 13, 0), -1);
    broker_msg_free(m);
    m = bt_next(sub);
    cr_assert_str_eq(m->topic, "demo.edge1", "got %s", m->topic);
    cr_assert_eq(m->len, BT_MAX_PAYLOAD - 29 - strlen("hosta"));
    cr_assert_eq(th_pattern_check(m->data, m->len, 14, 0), -1);
    broker_msg_free(m);
    bt_expect(sub, "demo.seq", "after");
    ca = bt_connect(&hosta);
    cb = bt_connect(&hostb);
    cr_assert_eq(bt_status(ca, "msgs_split"), 2, "demo.big and demo.edge1 "
                 "are split");
    cr_assert_eq(bt_status(ca, "drop_size"), 1, "demo.huge is counted");
    cr_assert_eq(bt_status(ca, "drops"), 1);
    cr_assert_eq(bt_status(cb, "msgs_joined"), 2);
    cr_assert_eq(bt_status(cb, "drops"), 0);
    cr_assert_eq(bt_status(cb, "partials"), 0);
    cr_assert_eq(bt_status(cb, "partial_bytes"), 0);
    broker_close(ca);
    broker_close(cb);
    broker_close(pub);
    broker_close(sub);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* A descriptor cannot cross: the bridge's export subscriptions take none
 * (BROKER_SUB_NO_FDS), so brokerd refuses the publication to its
 * publisher with EXDEV, from the bridge's id; what follows (a
 * shared-memory publication) still crosses, copied. */
Test(bridge, fd_publication_refused_to_the_publisher_with_exdev)
{
    size_t fits = BT_MAX_PAYLOAD - 64;
    char *data = calloc(1, fits);
    broker_t *pub, *sub, *ca;
    int fd = open("/dev/null", O_RDONLY);
    uint64_t bridge_id;
    broker_msg_t *m;

    cr_assert_not_null(data);
    cr_assert_geq(fd, 0);
    bt_two_hosts("export = demo.>\n", "import = demo.>\n");
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    bt_probe(pub, sub, "demo.probe");
    TH_OK(broker_resolve(pub, "brokerd-nats", &bridge_id));
    TH_OK(broker_publish(pub, "demo.fd", "fd", 2, &fd, 1));
    /* through shared memory on hosta: the bridge copies it */
    TH_OK(broker_set_option(pub, BROKER_OPT_SHM_THRESHOLD, 1024));
    th_pattern(data, fits, 7, 0);
    TH_OK(broker_publish(pub, "demo.fits", data, fits, NULL, 0));
    m = bt_next(sub);
    cr_assert_str_eq(m->topic, "demo.fits", "got %s first", m->topic);
    cr_assert_eq(m->len, fits);
    cr_assert_eq(th_pattern_check(m->data, m->len, 7, 0), -1);
    broker_msg_free(m);
    /* the publisher hears of it; its probes' echoes are not expected:
     * it subscribed to nothing */
    m = th_recv(pub);
    cr_assert_eq(m->kind, BROKER_MSG_ERROR, "got %s", th_kind_str(m->kind));
    cr_assert_eq(m->code, -EXDEV, "code %d", m->code);
    cr_assert_eq(m->source, bridge_id, "from the bridge");
    broker_msg_free(m);
    ca = bt_connect(&hosta);
    cr_assert_eq(bt_status(ca, "drop_fds"), 0, "brokerd kept it back");
    cr_assert_eq(bt_status(ca, "drops"), 0);
    broker_close(ca);
    broker_close(pub);
    broker_close(sub);
    close(fd);
    free(data);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* ---- a raw NATS client: parts as another bridge would send them ----------- */

static int bt_nats_raw(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port) };
    static const char hello[] = "CONNECT {\"verbose\":false,\"pedantic\":"
                                "false,\"headers\":true,\"name\":\"bt\"}"
                                "\r\n";
    char info[4096];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n;

    cr_assert_geq(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    n = read(fd, info, sizeof(info) - 1);       /* INFO {...} */
    cr_assert_gt(n, 4);
    cr_assert_eq(memcmp(info, "INFO", 4), 0);
    cr_assert_eq(write(fd, hello, sizeof(hello) - 1),
                 (ssize_t)sizeof(hello) - 1);
    return fd;
}

/* HPUB subject with the part headers of (origin, id) i/n, size total. */
static void bt_nats_part(int fd, const char *subject, const char *origin,
                         const char *id, int i, int n, size_t total,
                         const char *data)
{
    char hdr[512], line[700];
    int hl = snprintf(hdr, sizeof(hdr), "NATS/1.0\r\nBrokerd-Origin: %s\r\n"
                      "Brokerd-Msg: %s\r\nBrokerd-Part: %d/%d\r\n"
                      "Brokerd-Size: %zu\r\n\r\n", origin, id, i, n, total);
    int ll = snprintf(line, sizeof(line), "HPUB %s %d %zu\r\n%s%s\r\n",
                      subject, hl, (size_t)hl + strlen(data), hdr, data);

    cr_assert_eq(write(fd, line, (size_t)ll), ll);
}

/* PING, and wait for the PONG: the server has taken what came before. */
static void bt_nats_sync(int fd)
{
    char buf[4096];
    size_t have = 0;

    cr_assert_eq(write(fd, "PING\r\n", 6), 6);
    while (!memmem(buf, have, "PONG\r\n", 6)) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);

        cr_assert_gt(n, 0, "the NATS server closed the connection");
        have += (size_t)n;
        buf[have] = '\0';
        cr_assert_null(strstr(buf, "-ERR"), "%s", buf);
        if (have > sizeof(buf) / 2 && !memmem(buf, have, "PONG\r\n", 6)) {
            memmove(buf, buf + have - 8, 8);
            have = 8;
        }
    }
}

/* Parts missing (the last ones, the first ones, a part of another
 * message between): never delivered, counted once each; a complete one
 * after them arrives whole.  One whose last part never comes is dropped
 * after partial-timeout. */
Test(bridge, incomplete_split_publication_dropped_next_arrives)
{
    broker_t *pub, *sub, *cb;
    int fd;

    bt_two_hosts("export = demo.>\n", "import = demo.>\n"
                 "partial-timeout = 2000\n");
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    bt_probe(pub, sub, "demo.probe");
    fd = bt_nats_raw(nats[0].port);
    /* "a": 2 of 3 parts; "b": only its last part (ends "a" too) */
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.1", 1, 3, 9, "AAA");
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.1", 2, 3, 9, "AAA");
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.2", 2, 2, 6, "BBB");
    /* "c": whole, but a part of "d" (same origin, same subject) comes
     * between its parts: both lost */
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.3", 1, 2, 6, "CCC");
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.4", 1, 2, 6, "DDD");
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.3", 2, 2, 6, "CCC");
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.4", 2, 2, 6, "DDD");
    /* "e": complete, interleaved with another origin's complete "f" */
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.5", 1, 2, 12, "hello, ");
    bt_nats_part(fd, "brokerd.demo.x", "hosty", "r9.1", 1, 2, 6, "other");
    bt_nats_part(fd, "brokerd.demo.x", "hostz", "r1.5", 2, 2, 12, "world");
    bt_nats_part(fd, "brokerd.demo.x", "hosty", "r9.1", 2, 2, 6, "!");
    bt_nats_sync(fd);
    bt_expect(sub, "demo.x", "hello, world");
    bt_expect(sub, "demo.x", "other!");
    cb = bt_connect(&hostb);
    /* a: 1 (b's part ends it), b: 1, c: 1 (d's first part ends it), d: 1
     * (c's last part ends it); what else comes of a dead one is
     * swallowed, not counted again */
    bt_await_status(cb, "drop_incomplete", 4);
    cr_assert_eq(bt_status(cb, "msgs_joined"), 2);
    /* "g": its last part never comes; partial-timeout drops it */
    bt_nats_part(fd, "brokerd.demo.y", "hostz", "r1.6", 1, 2, 6, "GGG");
    bt_nats_sync(fd);
    bt_await_status(cb, "drop_incomplete", 5);
    bt_await_status(cb, "partials", 0);
    cr_assert_eq(bt_status(cb, "partial_bytes"), 0);
    /* nothing else was delivered in between */
    TH_OK(broker_publish(pub, "demo.end", "end", 3, NULL, 0));
    bt_expect(sub, "demo.end", "end");
    close(fd);
    broker_close(cb);
    broker_close(pub);
    broker_close(sub);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* ---- calls ------------------------------------------------------------------------ */

/* A service on hosta that answers with its request reversed. */
static int bt_reverse_service(void *arg)
{
    th_barrier_t *ready = arg;
    broker_t *b = th_connect(&hosta);
    broker_msg_t *m;

    th_register(b, "rev");
    th_barrier_signal(ready, 1);
    while (broker_recv(b, &m, -1) == 0) {
        if (broker_msg_is_request(m)) {
            char *out = malloc(m->len + 1);

            TH_CHECK(out != NULL, "out of memory");
            for (size_t i = 0; i < m->len; i++)
                out[i] = ((char *)m->data)[m->len - 1 - i];
            if (m->len == 4 && !memcmp(m->data, "fail", 4))
                TH_OK(broker_reply_error(b, m, -EPERM));
            else
                TH_OK(broker_reply(b, m, out, m->len, NULL, 0));
            free(out);
        }
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

Test(bridge, calls_cross_hosts)
{
    th_barrier_t ready;
    broker_msg_t *reply = NULL;
    broker_t *c;
    th_output_t out;
    pid_t svc;
    char *big = calloc(1, BT_MAX_PAYLOAD + 1);
    int fd = open("/dev/null", O_RDONLY), st;

    cr_assert_not_null(big);
    th_barrier_init(&ready);
    svc = th_spawn(bt_reverse_service, &ready);
    th_barrier_wait(&ready);
    bt_two_hosts("offer = rev\noffer = gone\n", "");
    c = bt_connect(&hostb);
    bt_await_name(c, "hosta/rev", true);
    bt_await_name(c, "hosta/gone", true);
    TH_OK(broker_call(c, "hosta/rev", "abc", 3, &reply, BT_CALL_MS));
    cr_assert_eq(reply->len, 3);
    cr_assert_arr_eq(reply->data, "cba", 3);
    broker_msg_free(reply);
    /* the service's error, nobody owning the offered name, size, fds */
    cr_assert_eq(broker_call(c, "hosta/rev", "fail", 4, &reply, BT_CALL_MS),
                 -EPERM);
    cr_assert_eq(broker_call(c, "hosta/gone", "x", 1, &reply, BT_CALL_MS),
                 -ENOENT);
    cr_assert_eq(broker_call(c, "hosta/rev", big, BT_MAX_PAYLOAD + 1,
                             &reply, BT_CALL_MS), -EMSGSIZE);
    cr_assert_eq(broker_call_fds(c, "hosta/rev", "x", 1, &fd, 1, &reply,
                                 BT_CALL_MS), -EXDEV);
    /* an unchanged program: brokerctl call */
    st = th_ctl(hostb.sock, &out, "call", "hosta/rev", "hello", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl call: %s", out.err);
    cr_assert_str_eq(out.out, "olleh");
    th_output_free(&out);
    /* brokerctl bridge shows it */
    st = th_ctl(hostb.sock, &out, "bridge", "--json", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl bridge: %s", out.err);
    cr_assert(strstr(out.out, "\"remotes\":\"hosta/gone,hosta/rev\"") ||
              strstr(out.out, "\"remotes\":\"hosta/rev,hosta/gone\""),
              "%s", out.out);
    cr_assert(strstr(out.out, "\"state\":\"connected\""), "%s", out.out);
    /* abc, fail, gone and brokerctl's; the size and fd refusals were
     * never sent */
    cr_assert(strstr(out.out, "\"calls_out\":4"), "%s", out.out);
    th_output_free(&out);
    broker_close(c);
    close(fd);
    free(big);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
    th_signal_join(svc, SIGKILL);
    th_barrier_fini(&ready);
}

/* ---- the bridge going and coming back --------------------------------------------- */

/* $broker.names announcements until each of the n names was announced
 * owned (or gone), in any order; others are skipped. */
static void bt_expect_names(broker_t *w, const char *const *names,
                            size_t n, bool owned)
{
    bool seen[8] = { false };
    size_t left = n;

    cr_assert_leq(n, 8);
    while (left) {
        broker_msg_t *m = th_recv_kind(w, BROKER_MSG_DATA);
        bool gone = memmem(m->data, m->len, " new=0\n", 7) != NULL;

        for (size_t i = 0; i < n; i++) {
            char want[128];

            snprintf(want, sizeof(want), "name=%s old=", names[i]);
            if (seen[i] || m->len <= strlen(want) ||
                memcmp(m->data, want, strlen(want)))
                continue;
            cr_assert_eq(!gone, owned, "%.*s", (int)m->len,
                         (char *)m->data);
            seen[i] = true;
            left--;
        }
        broker_msg_free(m);
    }
}

Test(bridge, killed_and_restarted_names_go_and_come)
{
    static const char *const names[] = { "brokerd-nats", "hosta/svc" };
    broker_t *w, *c, *pub, *sub;
    uint32_t id;

    bt_two_hosts(BT_SYMMETRIC "offer = svc\n", BT_SYMMETRIC);
    c = bt_connect(&hostb);
    bt_await_name(c, "hosta/svc", true);
    /* from here on: registered before, so no announcement of it is due */
    w = bt_connect(&hostb);
    TH_OK(broker_subscribe(w, "$broker.names", NULL, BROKER_SUB_BLOCK, &id));
    bt_bridge_kill(&bridge_b);
    bt_expect_names(w, names, 2, false);
    cr_assert(!bt_owned(c, "brokerd-nats"));
    /* the other host's bridge and the broker carry on */
    TH_OK(broker_ping(c, BT_CALL_MS));
    bt_bridge_start(&bridge_b, &hostb, "hostb", BT_SYMMETRIC, 0, 1);
    bt_expect_names(w, names, 2, true);
    /* and publications cross again */
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    bt_probe(pub, sub, "demo.probe");
    TH_OK(broker_publish(pub, "demo.after", "again", 5, NULL, 0));
    broker_msg_t *m = bt_next(sub);
    cr_assert_str_eq(m->topic, "demo.after");
    broker_msg_free(m);
    broker_t *all[] = { w, c, pub, sub };
    for (size_t i = 0; i < 4; i++)
        broker_close(all[i]);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* SIGHUP re-reads the file: a new export crosses, a removed one does
 * not; a bad file keeps the settings in use. */
Test(bridge, reload_changes_the_patterns)
{
    broker_t *pub, *sub, *ca;
    broker_msg_t *m;
    char text[512];

    bt_two_hosts("export = one.>\n", "import = one.>\nimport = two.>\n");
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "one.>");
    TH_OK(broker_subscribe(sub, "two.>", NULL, BROKER_SUB_BLOCK,
                           &(uint32_t){0}));
    bt_probe(pub, sub, "one.probe");
    snprintf(text, sizeof(text), "host = hosta\ncall-timeout = %d\n"
             "server = nats://127.0.0.1:%d\nexport = two.>\n", BT_CALL_MS,
             nats[0].port);
    bt_write(bridge_a.conf, text);
    kill(bridge_a.pid, SIGHUP);
    bt_probe(pub, sub, "two.probe");
    TH_OK(broker_publish(pub, "one.x", "old", 3, NULL, 0));
    TH_OK(broker_publish(pub, "two.x", "new", 3, NULL, 0));
    m = bt_next(sub);
    cr_assert_str_eq(m->topic, "two.x", "got %s", m->topic);
    broker_msg_free(m);
    /* a bad file: the bridge says why and keeps going */
    bt_write(bridge_a.conf, "export = two.>\nnonsense\n");
    kill(bridge_a.pid, SIGHUP);
    {
        uint64_t end = th_now_ms() + TH_HANG_MS;
        unsigned us = 1000;
        size_t len;
        char *log;

        while (!strstr(log = th_read_file(bridge_a.log, &len),
                       "bridge.conf:2: expected 'key = value'")) {
            free(log);
            cr_assert_lt(th_now_ms(), end, "no reload error logged");
            th_nap(&us);
        }
        free(log);
    }
    TH_OK(broker_publish(pub, "two.y", "still", 5, NULL, 0));
    m = bt_next(sub);
    cr_assert_str_eq(m->topic, "two.y", "got %s", m->topic);
    broker_msg_free(m);
    ca = bt_connect(&hosta);
    cr_assert_eq(bt_status(ca, "msgs_out") > 0, true);
    broker_close(ca);
    broker_close(pub);
    broker_close(sub);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* ---- settings ------------------------------------------------------------------------ */

Test(bridge, bad_settings_exit_2_with_file_and_line)
{
    const char *argv[] = { bt_bridge_path(), "--check", "-c", NULL, NULL };
    char path[192];
    th_output_t out;
    int st;

    snprintf(path, sizeof(path), "%s/bad.conf", hosta.dir);
    bt_write(path, "host = a\n# fine\nexport = demo.>\nexport = bad..x\n");
    argv[3] = path;
    st = th_run(argv, NULL, NULL, 0, &out);
    cr_assert(TH_EXITED(st, 2), "status %#x", st);
    cr_assert(strstr(out.err, "bad.conf:4: invalid value 'bad..x' for "
                     "export"), "%s", out.err);
    th_output_free(&out);
    bt_write(path, "host = a\nname = x\nname = y\n");
    st = th_run(argv, NULL, NULL, 0, &out);
    cr_assert(TH_EXITED(st, 2), "status %#x", st);
    cr_assert(strstr(out.err, "bad.conf:3: duplicate key 'name'"), "%s",
              out.err);
    th_output_free(&out);
    bt_write(path, "host = a.b\n");
    st = th_run(argv, NULL, NULL, 0, &out);
    cr_assert(TH_EXITED(st, 2), "status %#x", st);
    cr_assert(strstr(out.err, "bad.conf:1: invalid value 'a.b' for host"),
              "%s", out.err);
    th_output_free(&out);
    bt_write(path, "host = a\nimport-group = work.> \n");
    st = th_run(argv, NULL, NULL, 0, &out);
    cr_assert(TH_EXITED(st, 2), "status %#x", st);
    cr_assert(strstr(out.err, "bad.conf:2: invalid value") &&
              strstr(out.err, "not 'PATTERN GROUP'"), "%s", out.err);
    th_output_free(&out);
    bt_write(path, "host = a\nserver = nats://127.0.0.1:1\nexport = x.>\n"
             "import = y.*\noffer = svc.q\nremote = b/db.query\n"
             "import-group = work.> workers\n");
    st = th_run(argv, NULL, NULL, 0, &out);
    cr_assert(TH_EXITED(st, 0), "status %#x: %s", st, out.err);
    th_output_free(&out);
}

/* ---- a cluster ------------------------------------------------------------------------ */

/* The number in a payload "N". */
static uint64_t bt_seq(const broker_msg_t *m)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (char *)m->data);
    return strtoull(buf, NULL, 10);
}

static void bt_publish_seq(broker_t *pub, uint64_t from, uint64_t to)
{
    char text[32];

    for (uint64_t i = from; i < to; i++) {
        int len = snprintf(text, sizeof(text), "%" PRIu64, i);

        TH_OK(broker_publish(pub, "demo.seq", text, (size_t)len, NULL, 0));
    }
}

/* Three routed servers; hosta's bridge uses server 0 (then 1, 2), hostb's
 * server 2.  Server 0 is killed in the middle of a run of publications:
 * hosta's bridge reconnects to server 1, reports the disconnection, and
 * what is published after that crosses again, in order. */
Test(bridge, cluster_server_killed_mid_traffic)
{
    size_t n = th_scaled(400, 40);
    broker_t *pub, *sub, *ca;
    char server[128], want[64];
    uint64_t last = 0, expect_from;

    for (int i = 0; i < 3; i++)
        bt_nats_start(i, 3);
    bt_bridge_start(&bridge_a, &hosta, "hosta",
                    "export = demo.>\nreconnect-wait = 50\n", 0, 3);
    bt_bridge_start(&bridge_b, &hostb, "hostb", "import = demo.>\n", 2, 1);
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    ca = bt_connect(&hosta);
    bt_probe(pub, sub, "demo.probe");
    bt_publish_seq(pub, 1, n + 1);
    for (uint64_t i = 1; i <= n; i++) {
        broker_msg_t *m = bt_next(sub);

        cr_assert_eq(bt_seq(m), i, "before the kill: got %" PRIu64 ", want %"
                     PRIu64, bt_seq(m), i);
        broker_msg_free(m);
    }
    /* mid-traffic: half before the kill, half after */
    bt_publish_seq(pub, n + 1, n + 1 + n / 2);
    bt_nats_stop(0);
    bt_publish_seq(pub, n + 1 + n / 2, 2 * n + 1);
    bt_await_status(ca, "reconnects", 1);
    bt_await_state(ca, "connected");
    cr_assert_eq(bt_status(ca, "disconnects"), 1);
    cr_assert(bt_status_text(ca, "server", server, sizeof(server)));
    snprintf(want, sizeof(want), "nats://127.0.0.1:%d", nats[1].port);
    cr_assert_str_eq(server, want);
    /* what crosses of the run is in order, without duplicates; then the
     * messages published once the bridge is back all come */
    expect_from = 2 * n + 1;
    bt_probe(pub, sub, "demo.probe");
    bt_publish_seq(pub, expect_from, expect_from + n);
    for (;;) {
        broker_msg_t *m = bt_next(sub);
        uint64_t v = bt_seq(m);

        broker_msg_free(m);
        cr_assert_gt(v, last, "%" PRIu64 " after %" PRIu64, v, last);
        last = v;
        if (v >= expect_from) {
            cr_assert_eq(v, expect_from, "the first message after "
                         "the reconnection is %" PRIu64 ", want %" PRIu64,
                         v, expect_from);
            break;
        }
    }
    for (uint64_t i = expect_from + 1; i < expect_from + n; i++) {
        broker_msg_t *m = bt_next(sub);

        cr_assert_eq(bt_seq(m), i, "after the reconnection: got %" PRIu64
                     ", want %" PRIu64, bt_seq(m), i);
        broker_msg_free(m);
    }
    broker_close(ca);
    broker_close(pub);
    broker_close(sub);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* ---- queue groups ----------------------------------------------------------------------- */

/* Probes from each publisher until each member got one: every bridge's
 * queue subscription is then in place.  Returns how many messages it
 * took from the members. */
static uint64_t bt_group_probe(const char *topic, broker_t *const *pubs,
                               size_t npubs, broker_t *const *members,
                               size_t nmembers)
{
    uint64_t end = th_now_ms() + TH_HANG_MS, taken = 0;
    bool got[4] = { false };
    size_t have = 0;

    cr_assert_leq(nmembers, 4);
    while (have < nmembers) {
        for (size_t p = 0; p < npubs; p++) {
            TH_OK(broker_publish(pubs[p], topic, "p", 1, NULL, 0));
        }
        for (size_t k = 0; k < nmembers; k++) {
            broker_msg_t *m = NULL;

            if (broker_recv(members[k], &m, 20) == 0) {
                bool probe = m->topic && !strcmp(m->topic, topic);

                have += probe && !got[k];
                got[k] |= probe;
                taken++;
                broker_msg_free(m);
            }
        }
        cr_assert_lt(th_now_ms(), end, "the group never formed: %s: member "
                     "0 %s a probe, member 1 %s", topic,
                     got[0] ? "got" : "never got", got[1] ? "got" : "not");
    }
    return taken;
}

/* Read members[] until `total` jobs (data "job ORIGIN I", counted in
 * seen[ORIGIN * n + I] and per member in got[]) have come, counting the
 * probes they get too (`taken` of them read already).  A probe may have
 * found no queue subscription in place yet (NATS drops it), so the probes
 * are not counted beforehand; but each bridge's probes come before its
 * jobs, so once the jobs are in no probe is on its way: the bridges
 * (through locals[]) must have handed exactly what the members got, never
 * a message twice. */
static void bt_group_gather(broker_t *const *members,
                            broker_t *const *locals, size_t nm,
                            unsigned *seen, size_t n, size_t total,
                            uint64_t taken, size_t *got)
{
    uint64_t end = th_now_ms() + TH_HANG_MS, in = 0, probes = taken;
    size_t jobs = 0;

    while (jobs < total) {
        for (size_t k = 0; k < nm; k++) {
            broker_msg_t *m = NULL;
            unsigned origin, i;

            if (broker_recv(members[k], &m, 20) < 0)
                continue;
            cr_assert_eq(m->kind, BROKER_MSG_DATA, "got %s",
                         th_kind_str(m->kind));
            if (!strcmp(m->topic, "work.job")) {
                cr_assert_eq(sscanf((const char *)m->data, "job %u %u",
                                    &origin, &i), 2, "job '%.*s'",
                             (int)m->len, (const char *)m->data);
                cr_assert(origin < 2 && i < n);
                seen[origin * n + i]++;
                got[k]++;
                jobs++;
            } else {
                probes++;
            }
            broker_msg_free(m);
        }
        cr_assert_lt(th_now_ms(), end, "%zu of %zu jobs arrived", jobs,
                     total);
    }
    for (size_t k = 0; k < nm; k++)
        in += bt_status(locals[k], "group_in");
    cr_assert_eq(in, jobs + probes, "the bridges handed %" PRIu64 " "
                 "messages, the members got %zu jobs and %" PRIu64
                 " probes", in, jobs, probes);
}

/* The jobs (topic work.job, data "job ORIGIN I") member got up to an end
 * mark that local publishes after the bridge handed them all; each one
 * counted in seen[ORIGIN * n + I]. */
static size_t bt_group_collect(broker_t *member, broker_t *local,
                               unsigned *seen, size_t n)
{
    size_t jobs = 0;

    TH_OK(broker_subscribe(member, "local.end", NULL, BROKER_SUB_BLOCK,
                           &(uint32_t){0}));
    TH_OK(broker_publish(local, "local.end", "end", 3, NULL, 0));
    for (;;) {
        broker_msg_t *m = bt_next(member);
        bool done = !strcmp(m->topic, "local.end");
        unsigned origin, i;

        if (!strcmp(m->topic, "work.job")) {
            cr_assert_eq(sscanf((const char *)m->data, "job %u %u", &origin,
                                &i), 2, "job '%.*s'", (int)m->len,
                         (const char *)m->data);
            cr_assert(origin < 2 && i < n);
            seen[origin * n + i]++;
            jobs++;
        }
        broker_msg_free(m);
        if (done)
            return jobs;
    }
}

/* A member of "workers" on work.> at host b, once its bridge is in the
 * NATS queue group; *local gets a plain connection there. */
static broker_t *bt_worker(const th_broker_t *b, broker_t **local)
{
    broker_t *m = bt_member(b, "work.>", "workers");

    *local = bt_connect(b);
    bt_await_text(*local, "group_members", "workers:1+");
    return m;
}

static void bt_publish_jobs(broker_t *pub, unsigned origin, size_t n)
{
    char text[32];

    for (size_t i = 0; i < n; i++) {
        int len = snprintf(text, sizeof(text), "job %u %zu", origin, i);

        TH_OK(broker_publish(pub, "work.job", text, (size_t)len, NULL, 0));
    }
}

/* hosta publishes; hostb and hostc take part in group "workers": each
 * message reaches one member, and both get work. */
Test(bridge, import_group_shares_across_hosts)
{
    size_t n = th_scaled(400, 100), got[2] = { 0, 0 };
    unsigned *seen = calloc(n, sizeof(*seen));
    broker_t *pub, *sb, *sc, *cb, *cc;
    uint64_t taken;

    cr_assert_not_null(seen);
    th_broker_start(&hostc, NULL);
    bt_nats_start(0, 1);
    bt_bridge_start(&bridge_a, &hosta, "hosta", "export = work.>\n", 0, 1);
    bt_bridge_start(&bridge_b, &hostb, "hostb",
                    "import-group = work.> workers\n", 0, 1);
    bt_bridge_start(&bridge_c, &hostc, "hostc",
                    "import-group = work.> workers\n", 0, 1);
    pub = bt_connect(&hosta);
    sb = bt_worker(&hostb, &cb);
    sc = bt_worker(&hostc, &cc);
    taken = bt_group_probe("work.probe", &pub, 1, (broker_t *[]){ sb, sc },
                           2);
    bt_publish_jobs(pub, 0, n);
    bt_group_gather((broker_t *[]){ sb, sc }, (broker_t *[]){ cb, cc }, 2,
                    seen, n, n, taken, got);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(seen[i], 1, "job %zu arrived %u times", i, seen[i]);
    cr_assert_gt(got[0], 0, "hostb got no job");
    cr_assert_gt(got[1], 0, "hostc got no job");
    broker_t *all[] = { pub, sb, sc, cb, cc };
    for (size_t i = 0; i < 5; i++)
        broker_close(all[i]);
    free(seen);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
    bt_bridge_stop(&bridge_c);
}

/* A group with a member on each host and a publisher on each: every job
 * is handled once in all, the publisher's own host taking its turn too.
 * hostb also exports the group's topics: that copy is the group's
 * message, not a second one.  Once hostb's member leaves, hostb's bridge
 * leaves the NATS group and hostb's jobs go to hosta. */
Test(bridge, queue_group_with_members_on_both_hosts_handles_each_once)
{
    size_t n = th_scaled(200, 50), got[2] = { 0, 0 }, later;
    unsigned *seen = calloc(2 * n, sizeof(*seen));
    broker_t *pa, *pb, *ma, *mb, *ca, *cb;
    uint64_t taken, dropped;

    cr_assert_not_null(seen);
    bt_two_hosts("import-group = work.> workers\n",
                 "import-group = work.> workers\nexport = work.>\n");
    pa = bt_connect(&hosta);
    pb = bt_connect(&hostb);
    ma = bt_worker(&hosta, &ca);
    mb = bt_worker(&hostb, &cb);
    taken = bt_group_probe("work.probe", (broker_t *[]){ pa, pb }, 2,
                           (broker_t *[]){ ma, mb }, 2);
    bt_publish_jobs(pa, 0, n);
    bt_publish_jobs(pb, 1, n);
    bt_group_gather((broker_t *[]){ ma, mb }, (broker_t *[]){ ca, cb }, 2,
                    seen, n, 2 * n, taken, got);
    for (size_t i = 0; i < 2 * n; i++)
        cr_assert_eq(seen[i], 1, "job %zu of host %zu arrived %u times",
                     i % n, i / n, seen[i]);
    cr_assert_gt(got[0], 0, "hosta got no job");
    cr_assert_gt(got[1], 0, "hostb got no job");
    /* hosta sent its share itself; hostb's went as its export */
    cr_assert_eq(bt_status(ca, "group_out") + bt_status(cb, "group_out"),
                 bt_status(ca, "msgs_out"), "hostb sent a share twice");
    cr_assert_eq(bt_status(cb, "group_out"), 0);

    /* hostb's member leaves: its jobs now go to hosta, or are counted
     * as dropped by hostb's bridge if they were on their way to it */
    broker_close(mb);
    bt_await_text(cb, "group_members", "workers:0");
    memset(seen, 0, 2 * n * sizeof(*seen));
    dropped = bt_status(cb, "drops");
    uint64_t in_a = bt_status(ca, "group_in");
    bt_publish_jobs(pb, 1, n);
    for (uint64_t end = th_now_ms() + TH_HANG_MS;;) {
        uint64_t in = bt_status(ca, "group_in") - in_a +
                      bt_status(cb, "drops") - dropped;

        cr_assert_leq(in, n, "a job was handled twice");
        if (in == n)
            break;
        cr_assert_lt(th_now_ms(), end, "%" PRIu64 " of %zu arrived", in, n);
        th_nap(&(unsigned){1000});
    }
    later = bt_group_collect(ma, ca, seen, n);
    cr_assert_eq(later, bt_status(ca, "group_in") - in_a);
    cr_assert_gt(later, 0, "hosta got none of hostb's jobs");
    for (size_t i = n; i < 2 * n; i++)
        cr_assert_leq(seen[i], 1, "job %zu arrived twice", i - n);
    broker_t *all[] = { pa, pb, ma, ca, cb };
    for (size_t i = 0; i < 5; i++)
        broker_close(all[i]);
    free(seen);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* A publication on the group's topics larger than max_payload cannot go
 * to the group across hosts (its parts would be spread over the members):
 * the publishing host's member handles it, whole, and nobody else.
 * hostb exports the topics, so its parts still reach NATS; the queue
 * subscriptions skip them. */
Test(bridge, queue_group_keeps_what_nats_cannot_carry_whole)
{
    const size_t big = 300000;
    broker_t *pa, *pb, *ma, *mb, *ca, *cb, *members[2], *locals[2];
    uint64_t out_a;

    bt_two_hosts("import-group = work.> workers\n",
                 "import-group = work.> workers\nexport = work.>\n");
    pa = bt_connect(&hosta);
    pb = bt_connect(&hostb);
    members[0] = ma = bt_worker(&hosta, &ca);
    members[1] = mb = bt_worker(&hostb, &cb);
    locals[0] = ca;
    locals[1] = cb;
    bt_group_probe("work.probe", (broker_t *[]){ pa, pb }, 2, members, 2);
    out_a = bt_status(ca, "msgs_out");
    bt_publish_pattern(pa, "work.big", big, 21);
    bt_publish_pattern(pb, "work.big", big, 22);
    bt_await_status(ca, "group_kept", 1);
    bt_await_status(cb, "group_kept", 1);
    cr_assert_eq(bt_status(ca, "msgs_out"), out_a, "hosta sent it to NATS");
    for (int k = 0; k < 2; k++) {
        size_t bigs = 0;

        TH_OK(broker_subscribe(members[k], "local.end", NULL,
                               BROKER_SUB_BLOCK, &(uint32_t){0}));
        TH_OK(broker_publish(locals[k], "local.end", "end", 3, NULL, 0));
        for (;;) {
            broker_msg_t *m = bt_next(members[k]);
            bool done = !strcmp(m->topic, "local.end");

            if (!strcmp(m->topic, "work.big")) {
                cr_assert_eq(m->len, big, "%zu bytes", m->len);
                cr_assert_eq(th_pattern_check(m->data, m->len, 21 + k, 0),
                             -1, "host %c's publication damaged", 'a' + k);
                bigs++;
            }
            broker_msg_free(m);
            if (done)
                break;
        }
        cr_assert_eq(bigs, 1, "host %c's member got %zu", 'a' + k, bigs);
    }
    /* hostb's export sent the parts; whichever queue subscription got one
     * skipped it */
    for (uint64_t end = th_now_ms() + TH_HANG_MS;
         bt_status(ca, "group_parts_skipped") +
         bt_status(cb, "group_parts_skipped") == 0;)
        cr_assert_lt(th_now_ms(), end, "no part reached a queue "
                     "subscription");
    cr_assert_eq(bt_status(ca, "drops") + bt_status(cb, "drops"), 0);
    broker_t *all[] = { pa, pb, ma, mb, ca, cb };
    for (size_t i = 0; i < 6; i++)
        broker_close(all[i]);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* hosta's bridge uses server 0 of three (both its connections), hostb's
 * server 2.  Server 0 is killed: the queue groups' connection moves to
 * server 1 with the main one, and the group shares work again, hosta's
 * member included. */
Test(bridge, queue_group_survives_a_server_kill)
{
    size_t n = th_scaled(200, 50), got = 0, got_a = 0;
    unsigned *seen = calloc(n, sizeof(*seen));
    broker_t *pb, *ma, *mb, *ca, *cb;
    char want[64];

    cr_assert_not_null(seen);
    for (int i = 0; i < 3; i++)
        bt_nats_start(i, 3);
    bt_bridge_start(&bridge_a, &hosta, "hosta", "import-group = work.> "
                    "workers\nreconnect-wait = 50\n", 0, 3);
    bt_bridge_start(&bridge_b, &hostb, "hostb",
                    "import-group = work.> workers\n", 2, 1);
    pb = bt_connect(&hostb);
    ma = bt_worker(&hosta, &ca);
    mb = bt_worker(&hostb, &cb);
    snprintf(want, sizeof(want), "nats://127.0.0.1:%d", nats[0].port);
    bt_await_text(ca, "group_server", want);
    bt_group_probe("work.probe", &pb, 1, (broker_t *[]){ ma, mb }, 2);
    bt_nats_stop(0);
    bt_await_status(ca, "reconnects", 1);
    snprintf(want, sizeof(want), "nats://127.0.0.1:%d", nats[1].port);
    bt_await_text(ca, "group_server", want);
    bt_await_text(ca, "group_members", "workers:1+");
    /* a probe of its own reaches each member: hosta's queue subscription
     * is back on server 1 */
    bt_group_probe("work.again.probe", &pb, 1, (broker_t *[]){ ma, mb }, 2);
    bt_publish_jobs(pb, 0, n);
    for (uint64_t end = th_now_ms() + TH_HANG_MS; got < n;) {
        broker_t *members[] = { ma, mb };

        for (int k = 0; k < 2; k++) {
            broker_msg_t *m = NULL;
            unsigned origin, i;

            if (broker_recv(members[k], &m, 20) < 0)
                continue;
            if (!strcmp(m->topic, "work.job") &&
                sscanf((const char *)m->data, "job %u %u", &origin,
                       &i) == 2 && i < n) {
                cr_assert_eq(seen[i]++, 0, "job %u arrived twice", i);
                got++;
                got_a += k == 0;
            }
            broker_msg_free(m);
        }
        cr_assert_lt(th_now_ms(), end, "%zu of %zu jobs arrived", got, n);
    }
    cr_assert_gt(got_a, 0, "hosta's member got no job after the kill");
    broker_t *all[] = { pb, ma, mb, ca, cb };
    for (size_t i = 0; i < 5; i++)
        broker_close(all[i]);
    free(seen);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* ---- NATS away ------------------------------------------------------------------------- */

/* Publish n messages of len bytes on topic. */
static void bt_publish_n(broker_t *pub, const char *topic, size_t n,
                         size_t len)
{
    char *data = calloc(1, len);

    cr_assert_not_null(data);
    for (size_t i = 0; i < n; i++)
        TH_OK(broker_publish(pub, topic, data, len, NULL, 0));
    free(data);
}

/* The server goes away: both bridges keep serving their hosts and say
 * they are reconnecting; publications meanwhile fill the reconnect buffer
 * (4K) and the rest is counted as dropped; once the server is back both
 * reconnect and publications cross again. */
Test(bridge, server_away_buffers_up_to_the_bound)
{
    size_t n = 100;
    uint64_t probes, out, dropped;
    broker_t *pub, *sub, *ca, *cb;

    bt_nats_start(0, 1);
    bt_bridge_start(&bridge_a, &hosta, "hosta", "export = demo.>\n"
                    "reconnect-buffer = 4K\nreconnect-wait = 50\n", 0, 1);
    bt_bridge_start(&bridge_b, &hostb, "hostb", "import = demo.>\n"
                    "reconnect-wait = 50\noffer = x\n", 0, 1);
    pub = bt_connect(&hosta);
    sub = bt_subscriber(&hostb, "demo.>");
    ca = bt_connect(&hosta);
    cb = bt_connect(&hostb);
    bt_await_name(ca, "hostb/x", true);
    probes = bt_probe(pub, sub, "demo.probe");
    bt_nats_stop(0);
    bt_await_state(ca, "reconnecting");
    bt_await_state(cb, "reconnecting");
    bt_publish_n(pub, "demo.away", n, 200);
    /* every one of them is either buffered or dropped, and 4K cannot
     * hold them all */
    for (;;) {
        out = bt_status(ca, "msgs_out");
        dropped = bt_status(ca, "drop_reconnect_buffer");
        cr_assert_leq(out + dropped, probes + n);
        if (out + dropped == probes + n)
            break;
        th_nap(&(unsigned){1000});
    }
    cr_assert_gt(dropped, 0, "4K held %zu messages of 200 bytes", n);
    cr_assert_eq(bt_status(ca, "drops"), dropped);
    /* a call to the other host fails while the server is away */
    cr_assert_lt(broker_call(ca, "hostb/x", "?", 1, &(broker_msg_t *){NULL},
                             BT_CALL_MS), 0);
    bt_nats_start(0, 1);
    bt_await_state(ca, "connected");
    bt_await_state(cb, "connected");
    cr_assert_eq(bt_status(ca, "reconnects"), 1);
    cr_assert_eq(bt_status(ca, "disconnects"), 1);
    bt_probe(pub, sub, "demo.probe");
    TH_OK(broker_publish(pub, "demo.back", "back", 4, NULL, 0));
    for (;;) {
        broker_msg_t *m = bt_next(sub);
        bool back = !strcmp(m->topic, "demo.back");

        cr_assert(back || !strcmp(m->topic, "demo.away"), "%s", m->topic);
        broker_msg_free(m);
        if (back)
            break;
    }
    broker_t *all[] = { pub, sub, ca, cb };
    for (size_t i = 0; i < 4; i++)
        broker_close(all[i]);
    bt_bridge_stop(&bridge_a);
    bt_bridge_stop(&bridge_b);
}

/* No server yet: the bridge starts anyway, answers on its name
 * (state=connecting), and connects once the server is there. */
Test(bridge, starts_before_the_server)
{
    char text[256], state[64];
    th_output_t out;
    broker_t *ca;
    int st;

    /* no bridge at all: brokerctl bridge says so */
    st = th_ctl(hosta.sock, &out, "bridge", NULL);
    cr_assert(TH_EXITED(st, 1), "status %#x", st);
    cr_assert(strstr(out.err, "no bridge owns that name"), "%s", out.err);
    th_output_free(&out);
    snprintf(text, sizeof(text), "host = hosta\nserver = nats://127.0.0.1:%d\n"
             "reconnect-wait = 50\nexport = demo.>\n", nats[0].port);
    snprintf(bridge_a.conf, sizeof(bridge_a.conf), "%s/bridge.conf",
             hosta.dir);
    snprintf(bridge_a.log, sizeof(bridge_a.log), "%s/bridge.log", hosta.dir);
    bt_write(bridge_a.conf, text);
    bridge_a.pid = bt_bridge_spawn(bridge_a.conf, hosta.sock, bridge_a.log);
    ca = bt_connect(&hosta);
    bt_await_name(ca, "brokerd-nats", true);
    cr_assert(bt_status_text(ca, "state", state, sizeof(state)));
    cr_assert_str_eq(state, "connecting");
    cr_assert(bt_status_text(ca, "server", state, sizeof(state)));
    cr_assert_str_eq(state, "-");
    st = th_ctl(hosta.sock, &out, "bridge", NULL);
    cr_assert(TH_EXITED(st, 0), "status %#x: %s", st, out.err);
    cr_assert(strstr(out.out, "\nstate:") && strstr(out.out, "connecting"),
              "%s", out.out);
    th_output_free(&out);
    /* publications meanwhile are dropped and counted */
    TH_OK(broker_publish(ca, "demo.early", "x", 1, NULL, 0));
    bt_await_status(ca, "drop_disconnected", 1);
    bt_nats_start(0, 1);
    bt_await_state(ca, "connected");
    cr_assert_eq(bt_status(ca, "reconnects"), 0);
    broker_close(ca);
    bt_bridge_stop(&bridge_a);
}
