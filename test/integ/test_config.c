/*
 * test_config.c - brokerd -c FILE: syntax errors, limits from the file,
 * the command line on top, access rules (allow-connect, allow-own,
 * allow-send) and reload by SIGHUP and by `brokerctl reload`.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "harness.h"


static th_broker_t br;
static char confdir[64];
static char conf[128];

static void setup(void)
{
    snprintf(confdir, sizeof(confdir), "/tmp/bk-conf-XXXXXX");
    cr_assert(mkdtemp(confdir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(conf, sizeof(conf), "%s/brokerd.conf", confdir);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
    unlink(conf);
    rmdir(confdir);
}

TestSuite(config, .init = setup, .fini = teardown, .timeout = 120);

/* Replace the configuration file with the given lines. */
static void write_conf(const char *text)
{
    FILE *f = fopen(conf, "w");

    cr_assert(f != NULL, "%s: %s", conf, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

/* Register names n0, n1, ... until one fails; returns how many worked
 * and the first error in *err. */
static int register_until_error(broker_t *b, const char *prefix, int *err)
{
    char name[64];

    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof(name), "%s%d", prefix, i);
        if ((*err = broker_register(b, name)) < 0)
            return i;
    }
    return 64;
}

/* ---- syntax errors ------------------------------------------------------ */

static void expect_rejected(const char *text, int line, const char *why)
{
    const char *argv[] = { th_brokerd_path(), "-f", "-s", "", "-c", conf,
                           NULL };
    char sock[160], want[192];
    th_output_t o;
    int st;

    snprintf(sock, sizeof(sock), "%s/sock", confdir);
    argv[3] = sock;
    write_conf(text);
    st = th_run(argv, NULL, NULL, 0, &o);
    snprintf(want, sizeof(want), "brokerd: %s:%d: ", conf, line);
    cr_assert(TH_EXITED(st, 2), "brokerd exit 0x%x for:\n%s", st, text);
    cr_assert(strstr(o.err, want) != NULL, "stderr '%s' lacks '%s'", o.err,
              want);
    cr_assert(strstr(o.err, why) != NULL, "stderr '%s' lacks '%s'", o.err,
              why);
    cr_assert_neq(access(sock, F_OK), 0, "socket created anyway");
    th_output_free(&o);
}

Test(config, bad_files_exit_2_with_file_and_line)
{
    expect_rejected("# limits\n\nmax-names = 4\nmax-sockets = 3\n", 4,
                    "unknown key 'max-sockets'");
    expect_rejected("max-names = lots\n", 1, "max-names");
    expect_rejected("queue-limit = 4M\nmax-streams = 0\n", 2, "max-streams");
    expect_rejected("socket-mode = 0999\n", 1, "socket-mode");
    expect_rejected("max-names = 2\nmax-names = 3\n", 2, "duplicate key");
    expect_rejected("log-level = info\nnonsense\n", 2, "key = value");
    expect_rejected("allow-own = svc.*\n", 1, "no principal");
    expect_rejected("allow-connect = uid:x\n", 1, "uid:x");
}

/* allow-own / allow-send patterns are checked against the name alphabet
 * (broker-protocol(7) NAMES): one that no name can match is an error, not
 * a rule that silently locks every name out. */
Test(config, name_patterns_outside_the_alphabet_exit_2)
{
    char longname[300];

    expect_rejected("allow-own = svc.* *\nallow-own = svc,* uid:0\n", 2,
                    "bad name pattern 'svc,*': a name has only");
    expect_rejected("allow-send = s\xc3\xa9rvice *\n", 1,
                    "bad name pattern");
    expect_rejected("allow-send = app*.x *\n", 1, "'*' only at the end");
    expect_rejected("allow-own = **  uid:0\n", 1, "'*' only at the end");
    expect_rejected("allow-own = :reserved.* uid:0\n", 1,
                    "may not begin with ':'");
    memcpy(longname, "allow-own = ", 12);
    memset(longname + 12, 'n', 256);
    memcpy(longname + 12 + 256, " *\n", 4);
    expect_rejected(longname, 1, "longer than a name");
    /* a prefix of 255 bytes leaves no room for the rest of a name */
    memcpy(longname + 12 + 255, "* *\n", 5);
    expect_rejected(longname, 1, "longer than a name");
}

/* A reload whose file has a bad name pattern changes nothing: the old
 * limits and rules stay, and the reason (FILE:LINE) is returned. */
Test(config, reload_with_bad_name_pattern_keeps_old_config)
{
    char want[192];
    th_output_t o;
    broker_t *b;
    int st;

    write_conf("max-names = 2\nallow-own = svc.* *\n");
    th_broker_start(&br, "-c", conf, NULL);
    b = th_connect(&br);
    write_conf("max-names = 5\nallow-own = svc.\\* *\n");
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 1), "brokerctl reload: 0x%x", st);
    snprintf(want, sizeof(want), "%s:2: bad name pattern 'svc.\\*'", conf);
    cr_assert(strstr(o.err, want) != NULL, "no '%s' in: %s", want, o.err);
    th_output_free(&o);
    cr_assert_eq(th_status_value(b, "max_names"), 2, "old limit kept");
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- limits ----------------------------------------------------------- */

Test(config, limit_from_file_takes_effect)
{
    broker_t *b;
    int n, err;

    write_conf("# two names per client\nmax-names = 2   # small\n"
               "queue-limit = 1M\n");
    th_broker_start(&br, "-c", conf, NULL);
    b = th_connect(&br);
    n = register_until_error(b, "svc.lim.", &err);
    cr_assert_eq(n, 2, "registered %d names", n);
    cr_assert_eq(err, -ENOSR, "third REGISTER: %d", err);
    cr_assert_eq(th_status_value(b, "queue_limit"), 1 << 20);
    broker_close(b);
    th_broker_stop(&br);
}

Test(config, command_line_overrides_the_file)
{
    broker_t *b;
    int n, err;

    write_conf("max-names = 2\nmax-streams = 10\n");
    th_broker_start(&br, "--max-names", "3", "-c", conf, NULL);
    b = th_connect(&br);
    n = register_until_error(b, "svc.cli.", &err);
    cr_assert_eq(n, 3, "registered %d names", n);
    cr_assert_eq(err, -ENOSR);
    cr_assert_eq(th_status_value(b, "max_streams"), 10, "file value kept");
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- access rules ------------------------------------------------------ */

static void become_nobody(void)
{
    TH_CHECK(th_become_nobody(), "cannot become uid %d", TH_NOBODY);
}

/* Start a broker whose socket the uid nobody can reach. */
static void start_open_broker(const char *rules)
{
    char text[1536];

    if (geteuid() != 0)
        cr_skip_test("needs root to switch to uid %d", TH_NOBODY);
    snprintf(text, sizeof(text), "socket-mode = 0666\n%s", rules);
    write_conf(text);
    th_broker_start(&br, "-c", conf, NULL);
    cr_assert_eq(chmod(br.dir, 0755), 0);
}

static int nobody_connect_refused(void *arg)
{
    broker_t *b = NULL;
    int r;

    (void)arg;
    become_nobody();
    r = broker_connect(br.sock, &b);
    TH_CHECK(r == -EACCES, "connect as nobody: %d, want -EACCES", r);
    return 0;
}

static int nobody_fills_its_quota(void *arg)
{
    broker_t *b[3] = { NULL, NULL, NULL }, *extra = NULL;
    int r;

    (void)arg;
    become_nobody();
    for (int i = 0; i < 3; i++)
        TH_OK(broker_connect(br.sock, &b[i]));
    r = broker_connect(br.sock, &extra);
    TH_CHECK(r == -ENOSR, "fourth client of one uid: %d, want -ENOSR", r);
    broker_close(b[0]);
    /* a place is free again once the broker has seen b[0] go */
    for (int tries = 0; r != 0; tries++) {
        TH_CHECK(tries < 1000, "the quota never freed up: %d", r);
        r = broker_connect(br.sock, &extra);
        if (r != 0 && r != -ENOSR)
            TH_CHECK(0, "connect: %d", r);
        if (r != 0)
            usleep(1000);
    }
    broker_close(extra);
    broker_close(b[1]);
    broker_close(b[2]);
    return 0;
}

Test(config, max_clients_per_uid)
{
    broker_t *a[5];

    start_open_broker("max-clients-per-uid = 3\n");
    th_join(th_spawn(nobody_fills_its_quota, NULL));
    for (int i = 0; i < 5; i++)    /* root is exempt */
        a[i] = th_connect(&br);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(broker_ping(a[i], TH_HANG_MS), 0);
        broker_close(a[i]);
    }
    th_broker_stop(&br);
}

/* Connections that never say HELLO count against their user from accept
 * on: two silent ones use up a quota of two, and a third (a real client)
 * is refused with ENOSR; closing a silent one frees its place. */
static int nobody_silent_connections_count(void *arg)
{
    broker_t *b = NULL;
    int silent[2], r;

    (void)arg;
    become_nobody();
    for (int i = 0; i < 2; i++)
        TH_CHECK((silent[i] = th_raw_connect(br.sock)) >= 0, "connect");
    r = broker_connect(br.sock, &b);
    TH_CHECK(r == -ENOSR, "third connection of one uid, two of them "
             "silent: %d, want -ENOSR", r);
    close(silent[0]);
    for (int tries = 0; r != 0; tries++) {
        TH_CHECK(tries < 1000, "the place never freed up: %d", r);
        r = broker_connect(br.sock, &b);
        TH_CHECK(r == 0 || r == -ENOSR, "connect: %d", r);
        if (r != 0)
            usleep(1000);
    }
    TH_OK(broker_ping(b, TH_HANG_MS));
    broker_close(b);
    close(silent[1]);
    return 0;
}

Test(config, unhandshaken_connections_count_against_their_uid)
{
    broker_t *a;

    start_open_broker("max-clients-per-uid = 2\n"
                      "handshake-timeout = 3600000\n");
    th_join(th_spawn(nobody_silent_connections_count, NULL));
    a = th_connect(&br);            /* root is exempt */
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    broker_close(a);
    th_broker_stop(&br);
}

Test(config, allow_connect_refuses_other_users)
{
    broker_t *a;
    char *log = NULL;
    size_t cap = 0;
    FILE *f;
    bool logged = false;

    start_open_broker("allow-connect = uid:1 gid:1\n");
    th_join(th_spawn(nobody_connect_refused, NULL));
    a = th_connect(&br);       /* root is always allowed */
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    broker_close(a);     /* its ping ran after the refusal was logged */
    f = fopen(br.log, "r");
    cr_assert(f != NULL);
    while (getline(&log, &cap, f) > 0)
        logged |= strstr(log, "refused by allow-connect") != NULL;
    free(log);
    fclose(f);
    cr_assert(logged, "the refusal is not in the log");
    th_broker_stop(&br);
}

static int nobody_owns(void *arg)
{
    broker_t *b = NULL;

    (void)arg;
    become_nobody();
    TH_OK(broker_connect(br.sock, &b));
    TH_OK(broker_register(b, "svc.pub.one"));
    TH_OK(broker_register(b, "svc.exact"));
    TH_CHECK(broker_register(b, "svc.private") == -EACCES, "svc.private");
    TH_CHECK(broker_register(b, "svc.pub") == -EACCES, "svc.pub");
    TH_CHECK(broker_register(b, "svc.exactly") == -EACCES, "svc.exactly");
    broker_close(b);
    return 0;
}

/* Every character of the alphabet, an exact name of 255 bytes, a prefix
 * of 254 and '*' alone are patterns; the rules work (nobody may own what
 * they allow, and only that). */
static int nobody_owns_alphabet(void *arg)
{
    broker_t *b;
    int r;

    (void)arg;
    become_nobody();
    TH_OK(broker_connect(br.sock, &b));
    TH_OK(broker_register(b, "Az09._:/-x"));
    TH_OK(broker_register(b, "p.any"));
    r = broker_register(b, "other");
    TH_CHECK(r == -EACCES, "register other: %d, want -EACCES", r);
    broker_close(b);
    return 0;
}

Test(config, name_patterns_in_the_alphabet_are_accepted)
{
    char text[1200];
    int n;

    n = snprintf(text, sizeof(text), "allow-own = Az09._:/-* uid:65534\n"
                 "allow-own = p.* uid:65534\nallow-send = * *\n"
                 "allow-send = ");
    memset(text + n, 'e', 255);
    n += 255;
    n += snprintf(text + n, sizeof(text) - (size_t)n, " *\nallow-send = ");
    memset(text + n, 'p', 254);
    n += 254;
    snprintf(text + n, sizeof(text) - (size_t)n, "* *\n");
    start_open_broker(text);
    th_join(th_spawn(nobody_owns_alphabet, NULL));
    th_broker_stop(&br);
}

Test(config, allow_own_limits_names)
{
    broker_t *a;

    start_open_broker("allow-own = svc.pub.* uid:65534\n"
                      "allow-own = svc.exact user:nobody\n"
                      "allow-own = svc.root uid:0\n");
    th_join(th_spawn(nobody_owns, NULL));
    a = th_connect(&br);
    th_register(a, "svc.private");     /* root is not bound by the rules */
    th_register(a, "svc.pub.root");
    broker_close(a);
    th_broker_stop(&br);
}

struct send_arg {
    uint64_t closed_id;
};

static int nobody_sends(void *arg)
{
    struct send_arg *sa = arg;
    broker_t *b = NULL;
    broker_msg_t *m = NULL;
    int r;

    become_nobody();
    TH_OK(broker_connect(br.sock, &b));
    r = broker_call(b, "svc.closed", "x", 1, &m, TH_HANG_MS);
    TH_CHECK(r == -EACCES, "call svc.closed: %d, want -EACCES", r);
    r = broker_call(b, "svc.open.a", "ping", 4, &m, TH_HANG_MS);
    TH_CHECK(r == 0, "call svc.open.a: %d", r);
    TH_CHECK(m->len == 4 && !memcmp(m->data, "pong", 4), "reply");
    broker_msg_free(m);
    /* by client id: the target owns only names nobody may not send to */
    m = NULL;
    r = broker_send_id(b, sa->closed_id, "y", 1, NULL, 0);
    TH_OK(r);
    m = th_recv_kind(b, BROKER_MSG_ERROR);
    TH_CHECK(m->code == -EACCES, "send by id: error %d", m->code);
    broker_msg_free(m);
    broker_close(b);
    return 0;
}

Test(config, allow_send_limits_destinations)
{
    struct send_arg sa;
    broker_t *open, *closed, *root;
    broker_msg_t *m;
    pid_t pid;

    start_open_broker("allow-send = svc.open.* uid:65534\n");
    open = th_connect(&br);
    closed = th_connect(&br);
    th_register(open, "svc.open.a");
    th_register(closed, "svc.closed");
    sa.closed_id = broker_client_id(closed);
    pid = th_spawn(nobody_sends, &sa);
    m = th_recv_kind(open, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 4);
    cr_assert_eq(broker_reply(open, m, "pong", 4, NULL, 0), 0);
    broker_msg_free(m);
    th_join(pid);
    /* root may send anywhere */
    root = th_connect(&br);
    cr_assert_eq(broker_send(root, "svc.closed", "z", 1, NULL, 0), 0);
    m = th_recv_kind(closed, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 1);
    cr_assert_eq(((const char *)m->data)[0], 'z', "only root's message");
    broker_msg_free(m);
    broker_close(root);
    broker_close(open);
    broker_close(closed);
    th_broker_stop(&br);
}

/* ---- reload ------------------------------------------------------------ */

static bool file_has(const char *path, const char *needle)
{
    char buf[8192];
    size_t n;
    FILE *f = fopen(path, "r");

    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

Test(config, log_file_is_written_and_reopened_on_reload)
{
    char log[160], rotated[170], text[200], line[64];
    broker_t *b, *c;

    snprintf(log, sizeof(log), "%s/brokerd.log", confdir);
    snprintf(rotated, sizeof(rotated), "%s.1", log);
    /* debug: connect lines are debug lines */
    snprintf(text, sizeof(text), "log-file = %s\nlog-level = debug\n", log);
    write_conf(text);
    th_broker_start(&br, "-c", conf, NULL);
    b = th_connect(&br);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);    /* its line is out */
    snprintf(line, sizeof(line), "client %llu connected",
             (unsigned long long)broker_client_id(b));
    cr_assert(file_has(log, line), "no '%s' in %s", line, log);

    /* what logrotate does: move the file, then ask for a reload */
    cr_assert_eq(rename(log, rotated), 0);
    cr_assert_eq(broker_ctrl(b, BROKER_CTRL_RELOAD, NULL, 0, NULL, NULL), 0);
    c = th_connect(&br);
    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0);
    snprintf(line, sizeof(line), "client %llu connected",
             (unsigned long long)broker_client_id(c));
    cr_assert(file_has(log, line), "reopened log lacks '%s'", line);
    cr_assert(!file_has(rotated, line), "rotated log still written");
    broker_close(c);
    broker_close(b);
    th_broker_stop(&br);
    unlink(log);
    unlink(rotated);
}

Test(config, reload_changes_limits_and_keeps_clients)
{
    broker_t *b;
    th_output_t o;
    int st, err;

    write_conf("max-names = 1\n");
    th_broker_start(&br, "-c", conf, NULL);
    b = th_connect(&br);
    th_register(b, "svc.r0");
    cr_assert_eq(broker_register(b, "svc.r1"), -ENOSR);

    write_conf("max-names = 2\n");
    cr_assert_eq(kill(br.pid, SIGHUP), 0);
    th_await_status(b, "max_names", 2);
    th_register(b, "svc.r1");           /* same connection, new limit */
    cr_assert_eq(broker_register(b, "svc.r2"), -ENOSR);

    write_conf("max-names = 3\nmax-clients = 50\n");
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl reload: 0x%x %s", st, o.err);
    th_output_free(&o);
    cr_assert_eq(th_status_value(b, "max_names"), 3);
    cr_assert_eq(th_status_value(b, "max_clients"), 50);
    cr_assert_eq(register_until_error(b, "svc.more.", &err), 1);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0, "client still connected");
    broker_close(b);
    th_broker_stop(&br);
}

/* handshake-timeout comes from the file, and a reload that shortens it
 * applies to the connections already waiting: one silent for an hour's
 * timeout is closed with ETIMEDOUT once the file says 100 ms. */
Test(config, reload_shortens_the_handshake_timeout)
{
    uint32_t aux;
    int fd, nerr, n;
    th_output_t o;
    int st;

    write_conf("handshake-timeout = 3600000\n");
    th_broker_start(&br, "-c", conf, NULL);
    fd = th_raw_connect(br.sock);
    cr_assert_geq(fd, 0);
    write_conf("handshake-timeout = 100\n");
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl reload: 0x%x %s", st, o.err);
    th_output_free(&o);
    n = th_raw_drain_to_eof(fd, &aux, &nerr);
    cr_assert_eq(n, 1, "%d packets before EOF", n);
    cr_assert_eq(aux, ETIMEDOUT, "ERROR code %u", aux);
    close(fd);
    write_conf("handshake-timeout = 5\n");
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 1), "a timeout below 10 ms: 0x%x", st);
    cr_assert(strstr(o.err, "handshake-timeout") != NULL, "%s", o.err);
    th_output_free(&o);
    th_broker_stop(&br);
}

/* --reap-interval: 0 (never) or 10 ms to an hour; anything else is a
 * usage error (exit 2, naming the option), on the command line and in
 * the file. */
Test(config, bad_reap_intervals_exit_2)
{
    const char *const bad[] = { "1", "9", "3600001", "x", "-5", "" };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[] = { th_brokerd_path(), "-f", "-s", "/nonexistent/s",
                               "--reap-interval", bad[i], NULL };
        th_output_t o;
        int st = th_run(argv, NULL, NULL, 0, &o);

        cr_assert(TH_EXITED(st, 2), "--reap-interval '%s': 0x%x", bad[i], st);
        cr_assert(strstr(o.err, "brokerd: invalid value") &&
                  strstr(o.err, "for --reap-interval: milliseconds between "
                         "10 and 3600000, or 0 for never"),
                  "--reap-interval '%s': %s", bad[i], o.err);
        th_output_free(&o);
    }
    expect_rejected("reap-interval = 5\n", 1, "reap-interval");
    expect_rejected("max-names = 4\nreap-interval = soon\n", 2,
                    "reap-interval");
}

/* The reap interval comes from the file (STATUS reap_interval) and a
 * reload changes it, to 0 (off) too. */
Test(config, reload_changes_the_reap_interval)
{
    broker_t *b;
    th_output_t o;
    int st;

    write_conf("reap-interval = 250\n");
    th_broker_start(&br, "-c", conf, NULL);
    b = th_connect(&br);
    cr_assert_eq(th_status_value(b, "reap_interval"), 250);
    write_conf("reap-interval = 0\n");
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl reload: 0x%x %s", st, o.err);
    th_output_free(&o);
    th_await_status(b, "reap_interval", 0);
    write_conf("# the default\n");
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 0), "brokerctl reload: 0x%x %s", st, o.err);
    th_output_free(&o);
    th_await_status(b, "reap_interval", 5000);
    broker_close(b);
    th_broker_stop(&br);
}

Test(config, reload_with_bad_file_keeps_old_config)
{
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_CTRL, .stream = 7,
        .aux = BK_OP_RELOAD,
    }, r;
    uint8_t buf[1024];
    char want[192];
    broker_t *b;
    th_output_t o;
    ssize_t n;
    int fd, st;

    write_conf("max-names = 2\n");
    th_broker_start(&br, "-c", conf, NULL);
    b = th_connect(&br);
    write_conf("max-names = 5\nmax-frobs = 1\n");

    fd = th_raw_connect_hello(br.sock, NULL);
    cr_assert_geq(fd, 0);
    cr_assert_eq(th_raw_send(fd, &h, NULL, NULL, 0), 0);
    n = th_raw_recv(fd, buf, sizeof(buf) - 1);
    cr_assert_geq(n, BK_HDR_SIZE);
    bk_hdr_decode(buf, &r);
    cr_assert_eq(r.type, BK_T_CTRL_REPLY);
    cr_assert_eq(r.stream, 7u);
    cr_assert_eq(r.aux, (uint32_t)EINVAL);
    buf[n] = '\0';
    snprintf(want, sizeof(want), "%s:2: unknown key 'max-frobs'", conf);
    cr_assert_str_eq((char *)buf + BK_HDR_SIZE, want);
    close(fd);

    void *why = NULL;
    cr_assert_eq(broker_ctrl(b, BROKER_CTRL_RELOAD, NULL, 0, &why, NULL),
                 -EINVAL);
    cr_assert_not_null(why, "the broker's reason reaches the caller");
    cr_assert_str_eq(why, want);
    free(why);
    st = th_ctl(br.sock, &o, "reload", NULL);
    cr_assert(TH_EXITED(st, 1), "brokerctl reload: 0x%x", st);
    cr_assert(strstr(o.err, "not changed") != NULL, "%s", o.err);
    cr_assert(strstr(o.err, want) != NULL, "no file:line in: %s", o.err);
    th_output_free(&o);
    cr_assert_eq(th_status_value(b, "max_names"), 2, "old limit kept");
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}

Test(config, reload_without_file_is_refused)
{
    broker_t *b;

    th_broker_start(&br, NULL);
    b = th_connect(&br);
    cr_assert_eq(broker_ctrl(b, BK_OP_RELOAD, NULL, 0, NULL, NULL), -EINVAL);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}
