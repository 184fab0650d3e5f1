/*
 * test_cli.c - brokerctl's command line as an operator meets it: the
 * line printed for each way connecting can fail, usage errors (exit 2,
 * the option named, bad names), help, listen --raw/--count/--timestamps,
 * serve --exec, send/call to a client id (:ID), wait, and brokerd -c on
 * a directory.  Also the library calls behind them: broker_call_id and
 * broker_reply_error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(cli, 180);

/* Run brokerctl -s <br.sock> ARGS... (NULL-terminated) with stdin in. */
static int ctl_in(const void *in, size_t in_len, th_output_t *out, ...)
{
    va_list ap;
    int st;

    va_start(ap, out);
    st = th_ctl_va(br.sock, in, in_len, out, ap);
    va_end(ap);
    return st;
}

#define CTL(out, ...) ctl_in(NULL, 0, (out), __VA_ARGS__, NULL)

/* TH_EXITED for an expression to evaluate once. */
static bool exited(int st, int code)
{
    return TH_EXITED(st, code);
}

/* brokerctl with exactly these arguments (no -s added). */
static int ctl_argv(th_output_t *out, const char *const *args)
{
    const char *argv[16] = { th_brokerctl_path() };
    size_t n = 1;

    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    return th_run(argv, NULL, NULL, 0, out);
}

/* Start brokerctl -s <br.sock> ARGS... in the background, stdout and
 * stderr to <br.dir>/<logname>, whose path goes to log. */
static pid_t ctl_bg(char *log, size_t loglen, const char *logname,
                    const char *const *args)
{
    snprintf(log, loglen, "%s/%s", br.dir, logname);
    return th_ctl_bg(br.sock, log, args);
}

/* `brokerctl wait NAME`: returns once NAME has an owner. */
static void await_owner(const char *name)
{
    th_output_t o;
    int st = CTL(&o, "wait", name, "--timeout", "-1");

    cr_assert(TH_EXITED(st, 0), "wait %s: 0x%x %s", name, st, o.err);
    th_output_free(&o);
}

/* The whole stderr of a failed ping at socket path, exit status 1. */
static char *ping_error(const char *path)
{
    const char *const args[] = { "-s", path, "ping", NULL };
    th_output_t o;
    int st = ctl_argv(&o, args);
    char *err;

    cr_assert(TH_EXITED(st, 1), "ping %s: status 0x%x, stderr %s", path, st,
              o.err);
    cr_assert_eq(o.out_len, 0, "stdout: %s", o.out);
    err = strdup(o.err);
    th_output_free(&o);
    return err;
}

/* "brokerctl: cannot connect to brokerd at PATH: WHY\n" exactly. */
static void expect_connect_error(const char *path, const char *why)
{
    char want[512];
    char *err = ping_error(path);

    snprintf(want, sizeof(want), "brokerctl: cannot connect to brokerd at "
             "%s: %s\n", path, why);
    cr_assert_str_eq(err, want);
    free(err);
}

/* ---- connect errors ------------------------------------------------------- */

Test(cli, connect_error_no_socket)
{
    char path[200], want[400];
    char *err;

    snprintf(path, sizeof(path), "%s/no-such.sock", br.dir);
    err = ping_error(path);
    snprintf(want, sizeof(want), "brokerctl: no broker socket at %s: is "
             "brokerd running? (brokerd -f, or systemctl start "
             "brokerd.socket)\n", path);
    cr_assert_str_eq(err, want);
    free(err);

    /* the same without -s: the default path from $BROKER_SOCKET */
    char env[260];
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", path);
    const char *const envv[] = { env, NULL };
    const char *const argv[] = { th_brokerctl_path(), "ping", NULL };
    th_output_t o;
    int st = th_run(argv, envv, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 1));
    cr_assert_str_eq(o.err, want);
    th_output_free(&o);
    th_broker_stop(&br);
}

Test(cli, connect_error_stale_socket_and_not_a_socket)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char path[sizeof(sa.sun_path)];
    int fd;

    /* a socket file nobody listens on any more */
    snprintf(path, sizeof(path), "%s/stale.sock", br.dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 1), 0);
    close(fd);
    expect_connect_error(path, "the socket exists but no broker listens on "
                         "it (a stale socket: start brokerd, or remove it)");

    /* a regular file, a directory */
    snprintf(path, sizeof(path), "%s/plain", br.dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    expect_connect_error(path, "not a socket (a regular file)");
    expect_connect_error(br.dir, "not a socket (a directory)");

    /* a path through the regular file */
    char below[240];
    snprintf(below, sizeof(below), "%s/sock", path);
    expect_connect_error(below, "a component of the path is not a "
                         "directory");
    th_broker_stop(&br);
}

Test(cli, connect_error_path_too_long_and_wrong_socket_type)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char path[300];
    int fd;

    memset(path, 'x', 200);
    memcpy(path, "/tmp/", 5);
    path[200] = '\0';
    expect_connect_error(path, "socket path too long (at most 107 bytes)");

    /* a stream socket listening: not the broker's kind */
    snprintf(path, sizeof(path), "%s/stream.sock", br.dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 1), 0);
    expect_connect_error(path, "a socket of another type, not a broker's "
                         "(brokerd listens with SOCK_SEQPACKET)");
    close(fd);
    th_broker_stop(&br);
}

/* A peer that accepts one connection, reads the HELLO and answers with 32
 * zero bytes: not a brokerd. */
struct fake_arg {
    int lfd;
};

static int fake_peer(void *p)
{
    struct fake_arg *a = p;
    char buf[4096], zero[32] = { 0 };
    int c = accept(a->lfd, NULL, NULL);

    TH_CHECK(c >= 0, "accept: %s", strerror(errno));
    TH_CHECK(recv(c, buf, sizeof(buf), 0) > 0, "no HELLO");
    TH_CHECK(send(c, zero, sizeof(zero), 0) == sizeof(zero), "send");
    /* keep the connection until the client has read and gone */
    while (recv(c, buf, sizeof(buf), 0) > 0)
        ;
    close(c);
    return 0;
}

Test(cli, connect_error_not_a_broker)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct fake_arg a;
    char path[sizeof(sa.sun_path)];
    pid_t pid;

    snprintf(path, sizeof(path), "%s/fake.sock", br.dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    a.lfd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_geq(a.lfd, 0);
    cr_assert_eq(bind(a.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(a.lfd, 1), 0);
    pid = th_spawn(fake_peer, &a);
    expect_connect_error(path, "the peer does not speak the broker protocol "
                         "(not a brokerd?)");
    th_join(pid);
    close(a.lfd);
    th_broker_stop(&br);
}

/* A refusing peer: it waits for the HELLO to be queued, then answers
 * ERROR ENOSR and closes without reading it, so the client's first read
 * reports a reset ahead of the queued ERROR (what brokerd does when it is
 * full and the HELLO comes quickly). */
static int refusing_peer(void *p)
{
    struct fake_arg *a = p;
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_ERROR,
                   .aux = ENOSR };
    char buf[64];
    int c = accept(a->lfd, NULL, NULL);

    TH_CHECK(c >= 0, "accept: %s", strerror(errno));
    TH_CHECK(recv(c, buf, sizeof(buf), MSG_PEEK) > 0, "no HELLO");
    TH_OK(th_raw_send(c, &h, NULL, NULL, 0));
    close(c);
    return 0;
}

Test(cli, connect_error_refused_after_the_hello)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct fake_arg a;
    char path[sizeof(sa.sun_path)];
    pid_t pid;

    snprintf(path, sizeof(path), "%s/full.sock", br.dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    a.lfd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_geq(a.lfd, 0);
    cr_assert_eq(bind(a.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(a.lfd, 1), 0);
    pid = th_spawn(refusing_peer, &a);
    expect_connect_error(path, "the broker refused the connection: too "
                         "many clients (its max-clients or "
                         "max-clients-per-uid limit)");
    th_join(pid);
    close(a.lfd);
    th_broker_stop(&br);
}

Test(cli, connect_error_too_many_clients)
{
    broker_t *b = NULL;
    unsigned us = 500;

    th_broker_restart(&br, "--max-clients", "1", NULL);
    /* the start-up check's connection may not be gone yet */
    uint64_t end = th_now_ms() + TH_HANG_MS;
    while (broker_connect(br.sock, &b) == -ENOSR && th_now_ms() < end)
        th_nap(&us);
    cr_assert_not_null(b);

    expect_connect_error(br.sock, "the broker refused the connection: too "
                         "many clients (its max-clients or "
                         "max-clients-per-uid limit)");
    broker_close(b);
    th_broker_stop(&br);
}

/* What a ping as nobody must print: the socket and a part of the
 * line. */
struct nobody_arg {
    const char *path;
    const char *want;
    char bin[512];              /* brokerctl_for_nobody's copy */
};

/* Copy file src to dst (mode 0755). */
static void copy_file(const char *src, const char *dst)
{
    char buf[65536];
    int in = open(src, O_RDONLY | O_CLOEXEC), out;
    ssize_t n;

    cr_assert_geq(in, 0, "%s: %s", src, strerror(errno));
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    cr_assert_geq(out, 0, "%s: %s", dst, strerror(errno));
    while ((n = read(in, buf, sizeof(buf))) > 0)
        cr_assert_eq(write(out, buf, (size_t)n), n);
    cr_assert_eq(n, 0);
    close(in);
    cr_assert_eq(close(out), 0);
}

/* brokerctl where nobody may run it: the build tree may sit under a
 * directory only root can enter (a clone in /root, a mktemp -d).  The
 * program (libtool's real one from .libs/ beside its wrapper script, if
 * there is one) and libbroker go into dir, which nobody may search and
 * LD_LIBRARY_PATH names. */
static const char *brokerctl_for_nobody(const char *dir, char *bin,
                                        size_t len)
{
    const char *ctl = th_brokerctl_path();
    const char *slash = strrchr(ctl, '/');
    int dl = slash ? (int)(slash - ctl) : 1;
    char real[512], lib[512];

    snprintf(real, sizeof(real), "%.*s/.libs/brokerctl", dl,
             slash ? ctl : ".");
    snprintf(lib, sizeof(lib), "%.*s/.libs/libbroker.so.0", dl,
             slash ? ctl : ".");
    snprintf(bin, len, "%s/brokerctl", dir);
    copy_file(access(real, X_OK) == 0 ? real : ctl, bin);
    if (access(lib, R_OK) == 0) {
        char to[512];

        snprintf(to, sizeof(to), "%s/libbroker.so.0", dir);
        copy_file(lib, to);
    }
    return bin;
}

/* In a child: brokerctl ping as nobody exits 1 with a.want on stderr, in
 * lower case. */
static int ping_as_nobody(void *p)
{
    const struct nobody_arg *a = p;
    char env[600];
    const char *const argv[] = { a->bin, "-s", a->path, "ping", NULL };
    const char *const envp[] = { env, NULL };
    th_output_t o;
    int st;

    snprintf(env, sizeof(env), "LD_LIBRARY_PATH=%s", br.dir);
    TH_CHECK(th_become_nobody(), "cannot become nobody");
    st = th_run(argv, envp, NULL, 0, &o);
    TH_CHECK(TH_EXITED(st, 1), "status 0x%x: %s", st, o.err);
    TH_CHECK(strstr(o.err, "cannot connect to brokerd at ") &&
             strstr(o.err, a->want), "stderr: %s", o.err);
    TH_CHECK(!strstr(o.err, "Permission"), "capitalised: %s", o.err);
    th_output_free(&o);
    return 0;
}

Test(cli, connect_error_permission_denied)
{
    struct nobody_arg a = { .path = br.sock,
                            .want = ": permission denied (the socket is "
                            "root:root mode 0600; connecting needs write "
                            "permission on it (its owner, group or root))" };

    if (geteuid() == 0) {
        /* root passes every permission check: try as nobody, through a
         * directory nobody may search, on a socket only root may use */
        cr_assert_eq(chmod(br.dir, 0755), 0);
        cr_assert_eq(chmod(br.sock, 0600), 0);
        brokerctl_for_nobody(br.dir, a.bin, sizeof(a.bin));
    th_join(th_spawn(ping_as_nobody, &a));
        th_broker_stop(&br);
        return;
    }
    cr_assert_eq(chmod(br.sock, 0), 0);
    char *err = ping_error(br.sock);
    cr_assert(strstr(err, ": permission denied (the socket is "), "%s", err);
    free(err);
    cr_assert_eq(chmod(br.sock, 0600), 0);
    th_broker_stop(&br);
}

Test(cli, connect_error_refused_by_allow_connect)
{
    struct nobody_arg a = { .path = br.sock,
                            .want = ": the broker refused the connection "
                            "(its allow-connect rules)\n" };
    char conf[64];
    FILE *f;

    if (geteuid() != 0)
        cr_skip_test("needs root to run brokerctl as uid %d", TH_NOBODY);
    snprintf(conf, sizeof(conf), "/tmp/bkt-cli-%d.conf", (int)getpid());
    cr_assert_not_null(f = fopen(conf, "w"));
    fputs("allow-connect = uid:1 gid:1\n", f);
    cr_assert_eq(fclose(f), 0);
    th_broker_restart(&br, "-c", conf, "--socket-mode", "0666", NULL);
    unlink(conf);
    cr_assert_eq(chmod(br.dir, 0755), 0);
    brokerctl_for_nobody(br.dir, a.bin, sizeof(a.bin));
    th_join(th_spawn(ping_as_nobody, &a));
    th_broker_stop(&br);
}

/* ---- usage errors ----------------------------------------------------------- */

/* brokerctl -s SOCK ARGS... exits 2 with exactly the line want. */
static void expect_usage(const char *want, const char *const *args)
{
    const char *argv[16] = { "-s", br.sock };
    size_t n = 2;
    th_output_t o;
    char line[400];
    int st;

    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    st = ctl_argv(&o, argv);
    cr_assert(TH_EXITED(st, 2), "%s: status 0x%x, stderr %s", argv[2], st,
              o.err);
    cr_assert_eq(o.out_len, 0, "stdout: %s", o.out);
    if (want) {
        snprintf(line, sizeof(line), "brokerctl: %s (try 'brokerctl "
                 "--help')\n", want);
        cr_assert_str_eq(o.err, line);
    }
    th_output_free(&o);
}

#define USAGE(want, ...) do { \
        const char *const a_[] = { __VA_ARGS__, NULL }; \
        expect_usage((want), a_); \
    } while (0)

Test(cli, usage_errors_name_the_option)
{
    USAGE("option '--top' is not valid for 'status'", "status", "--top", "3");
    USAGE("option '--top' is not valid for 'status'", "status", "--top=3");
    USAGE("option '--sort' must follow its command", "--sort", "id",
          "clients");
    USAGE("option '--top' needs an argument", "clients", "--top");
    USAGE("option '--exec' is not valid for 'call'", "call", "x", "y",
          "--exec", "cat");
    USAGE("unknown option '--frobnicate'", "ping", "--frobnicate=7");
    USAGE("invalid --top 'x' (a count >= 0, 0: no limit)", "clients",
          "--top", "x");
    USAGE("options '--raw' and '--timestamps' exclude each other", "listen",
          "svc.a", "--raw", "--timestamps");
    USAGE("serve needs one mode: --echo or --exec CMD", "serve", "svc.a");
    USAGE("serve needs one mode: --echo or --exec CMD", "serve", "svc.a",
          "--echo", "--exec", "cat");
    USAGE("unknown command 'frob'", "help", "frob");
    th_broker_stop(&br);
}

Test(cli, bad_names_are_usage_errors)
{
    USAGE("invalid name 'bad name' (1 to 255 letters, digits and . _ - : /, "
          "not starting with ':'; or :ID for client ID)", "send", "bad name",
          "x");
    USAGE(NULL, "call", "a*b", "x");
    USAGE(NULL, "send", ":0", "x");         /* no client 0 */
    USAGE(NULL, "send", ":12x", "x");
    USAGE(NULL, "call", ":", "x");
    USAGE("invalid name ':7' (1 to 255 letters, digits and . _ - : /, not "
          "starting with ':')", "listen", ":7");
    USAGE(NULL, "serve", "a b", "--echo");
    USAGE(NULL, "wait", "", NULL);
    th_broker_stop(&br);
}

/* Records in a --json listing: how many "id": keys. */
static size_t json_ids(const char *s)
{
    size_t n = 0;

    for (const char *p = strstr(s, "{\"id\":"); p; p = strstr(p + 1,
                                                               "{\"id\":"))
        n++;
    return n;
}

Test(cli, top_0_means_no_limit)
{
    broker_t *c[3];
    th_output_t all, zero, one;

    for (int i = 0; i < 3; i++)
        c[i] = th_connect(&br);
    cr_assert(exited(CTL(&all, "clients", "--json"), 0), "%s", all.err);
    cr_assert(exited(CTL(&zero, "clients", "--json", "--top", "0"), 0),
              "%s", zero.err);
    cr_assert(exited(CTL(&one, "clients", "--json", "--top", "1"), 0),
              "%s", one.err);
    cr_assert_geq(json_ids(all.out), 3, "%s", all.out);
    cr_assert_eq(json_ids(zero.out), json_ids(all.out), "--top 0: %s",
                 zero.out);
    cr_assert_eq(json_ids(one.out), 1, "--top 1: %s", one.out);
    th_output_free(&all);
    th_output_free(&zero);
    th_output_free(&one);
    for (int i = 0; i < 3; i++)
        broker_close(c[i]);
    th_broker_stop(&br);
}

/* ---- help ------------------------------------------------------------------- */

Test(cli, help_command_and_command_help)
{
    th_output_t a, b, g, h;

    cr_assert(exited(CTL(&a, "help", "listen"), 0), "%s", a.err);
    cr_assert(exited(CTL(&b, "listen", "--help"), 0), "%s", b.err);
    cr_assert_str_eq(a.out, b.out);
    cr_assert(!strncmp(a.out, "Usage: brokerctl [-s PATH] [--timeout MS] "
                       "listen NAME ", 52), "%s", a.out);
    cr_assert(strstr(a.out, "--timestamps") && strstr(a.out, "--count N"),
              "%s", a.out);
    cr_assert(!strstr(a.out, "serve NAME"), "only listen: %s", a.out);
    cr_assert_eq(a.err_len, 0);
    /* a command's --help needs none of its arguments */
    cr_assert(exited(CTL(&h, "send", "--help"), 0), "%s", h.err);
    cr_assert(strstr(h.out, "send NAME|:ID [DATA|-]"), "%s", h.out);
    th_output_free(&h);
    /* help alone is --help */
    cr_assert(exited(CTL(&g, "help"), 0));
    cr_assert(exited(CTL(&h, "--help"), 0));
    cr_assert_str_eq(g.out, h.out);
    cr_assert(strstr(g.out, "  wait NAME [--timeout MS]"), "%s", g.out);
    th_output_free(&a);
    th_output_free(&b);
    th_output_free(&g);
    th_output_free(&h);
    th_broker_stop(&br);
}

/* ---- listen --raw / --count / --timestamps ---------------------------------- */

Test(cli, listen_raw_count_is_byte_exact)
{
    static const char *const args[] = { "listen", "svc.raw", "--raw",
                                        "--count", "2", NULL };
    static const char bin[] = "a\0b\n\xff\x01 c";
    char log[200], *out;
    th_output_t o;
    size_t len;
    pid_t pid = ctl_bg(log, sizeof(log), "raw.out", args);
    int st;

    await_owner("svc.raw");
    st = ctl_in(bin, sizeof(bin) - 1, &o, "send", "svc.raw", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    th_output_free(&o);
    st = CTL(&o, "send", "svc.raw", "second");
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    th_output_free(&o);
    st = th_join_status(pid);
    cr_assert(TH_EXITED(st, 0), "listen --count 2: 0x%x", st);

    static const char want[] = "a\0b\n\xff\x01 c\nsecond\n";
    out = th_read_file(log, &len);
    cr_assert_eq(len, sizeof(want) - 1, "%zu bytes", len);
    cr_assert_eq(memcmp(out, want, len), 0, "got '%s'", out);
    free(out);
    th_broker_stop(&br);
}

/* s matches the extended regular expression re. */
static bool matches(const char *s, const char *re)
{
    regex_t r;
    bool ok;

    cr_assert_eq(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
    ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

Test(cli, listen_and_sub_timestamps)
{
    static const char *const largs[] = { "listen", "svc.ts", "--timestamps",
                                         "--count", "1", NULL };
    static const char *const sargs[] = { "sub", "ts.>", "--timestamps",
                                         "--count", "1", NULL };
    broker_t *b = th_connect(&br);
    char llog[200], slog[200], *out;
    th_output_t o;
    size_t len;
    pid_t lp = ctl_bg(llog, sizeof(llog), "ts-listen.out", largs);
    pid_t sp = ctl_bg(slog, sizeof(slog), "ts-sub.out", sargs);

    await_owner("svc.ts");
    th_await_status(b, "subscriptions", 1);
    cr_assert(exited(CTL(&o, "send", "svc.ts", "hello"), 0), "%s", o.err);
    th_output_free(&o);
    cr_assert(exited(CTL(&o, "pub", "ts.a", "world"), 0), "%s", o.err);
    th_output_free(&o);
    cr_assert(exited(th_join_status(lp), 0));
    cr_assert(exited(th_join_status(sp), 0));
    out = th_read_file(llog, &len);
    cr_assert(matches(out, "^[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{6} "
                      "\\[[0-9]+\\] stream=[0-9]+ len=5: hello\n$"),
              "listen: '%s'", out);
    free(out);
    out = th_read_file(slog, &len);
    cr_assert(matches(out, "^[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\.[0-9]{6} "
                      "ts\\.a world\n$"), "sub: '%s'", out);
    free(out);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- serve --exec ------------------------------------------------------------- */

Test(cli, serve_exec_round_trip)
{
    static const char *const args[] = { "serve", "svc.up", "--exec",
                                        "tr a-z A-Z", NULL };
    static const char *const cat[] = { "serve", "svc.cat", "--exec", "cat",
                                       NULL };
    size_t big = 300000;    /* more than a pipe holds, both ways */
    char *data = malloc(big);
    char log[200], log2[200];
    th_output_t o;
    pid_t up = ctl_bg(log, sizeof(log), "up.out", args);
    pid_t pc = ctl_bg(log2, sizeof(log2), "cat.out", cat);
    int st;

    cr_assert_not_null(data);
    await_owner("svc.up");
    st = CTL(&o, "call", "svc.up", "hello, world");
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert_eq(o.out_len, 12);
    cr_assert_arr_eq(o.out, "HELLO, WORLD", 12);
    th_output_free(&o);
    /* an empty request gets an empty reply */
    st = ctl_in("", 0, &o, "call", "svc.up", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert_eq(o.out_len, 0);
    th_output_free(&o);

    await_owner("svc.cat");
    th_pattern(data, big, 7, 0);
    st = ctl_in(data, big, &o, "call", "svc.cat", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert_eq(o.out_len, big);
    cr_assert_eq(th_pattern_check(o.out, big, 7, 0), -1);
    th_output_free(&o);

    cr_assert(exited(th_signal_join(up, SIGTERM), 0));
    cr_assert(exited(th_signal_join(pc, SIGTERM), 0));
    free(data);
    th_broker_stop(&br);
}

static bool has_exit_3(const char *text, size_t len)
{
    (void)len;
    return strstr(text, "exited with status 3");
}

Test(cli, serve_exec_failure_and_timeout)
{
    static const char *const fail[] = { "serve", "svc.fail", "--exec",
                                        "cat >/dev/null; exit 3", NULL };
    static const char *const slow[] = { "serve", "svc.slow", "--timeout",
                                        "300", "--exec", "sleep 30", NULL };
    char log[200], log2[200], *text;
    th_output_t o;
    size_t len;
    pid_t pf = ctl_bg(log, sizeof(log), "fail.out", fail);
    pid_t ps = ctl_bg(log2, sizeof(log2), "slow.out", slow);
    int st;

    await_owner("svc.fail");
    st = CTL(&o, "call", "svc.fail", "x");
    cr_assert(TH_EXITED(st, 1), "0x%x", st);
    cr_assert_str_eq(o.err, "brokerctl: call 'svc.fail': the service failed "
                     "to answer (remote I/O error)\n");
    cr_assert_eq(o.out_len, 0);
    th_output_free(&o);
    text = th_await_file(log, has_exit_3, &len);
    cr_assert(strstr(text, "'cat >/dev/null; exit 3' exited with status 3"),
              "%s", text);
    free(text);

    /* the library sees the code */
    broker_t *b = th_connect(&br);
    broker_msg_t *reply = NULL;
    cr_assert_eq(broker_call(b, "svc.fail", "y", 1, &reply, TH_HANG_MS),
                 -EREMOTEIO);
    cr_assert_null(reply);

    /* a command that runs too long is killed; serve goes on */
    await_owner("svc.slow");
    cr_assert_eq(broker_call(b, "svc.slow", "z", 1, &reply, TH_HANG_MS),
                 -ETIMEDOUT);
    cr_assert_eq(broker_call(b, "svc.slow", "z", 1, &reply, TH_HANG_MS),
                 -ETIMEDOUT);
    broker_close(b);

    cr_assert(exited(th_signal_join(pf, SIGTERM), 0));
    cr_assert(exited(th_signal_join(ps, SIGTERM), 0));
    th_broker_stop(&br);
}

/* ---- client ids as destinations ----------------------------------------------- */

static bool has_reply(const char *text, size_t len)
{
    return len >= 6 && !memcmp(text, "pong-7", 6);
}

Test(cli, send_and_call_to_a_client_id)
{
    broker_t *b = th_connect(&br);
    char id[32], log[200], *text;
    broker_msg_t *m;
    th_output_t o;
    size_t len;
    int st;

    snprintf(id, sizeof(id), ":%llu",
             (unsigned long long)broker_client_id(b));
    st = CTL(&o, "send", id, "to-id");
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    th_output_free(&o);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_null(m->name, "sent to our id, not a name");
    cr_assert_eq(m->len, 5);
    cr_assert_arr_eq(m->data, "to-id", 5);
    broker_msg_free(m);

    const char *const args[] = { "call", id, "ping-7", NULL };
    pid_t pid = ctl_bg(log, sizeof(log), "call.out", args);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_OPEN);
    cr_assert_not(m->flags & BROKER_MSGF_CLOSE, "a request");
    cr_assert_arr_eq(m->data, "ping-7", 6);
    cr_assert_eq(broker_reply(b, m, "pong-7", 6, NULL, 0), 0);
    broker_msg_free(m);
    cr_assert(exited(th_join_status(pid), 0));
    text = th_await_file(log, has_reply, &len);
    cr_assert_eq(len, 6, "'%s'", text);
    free(text);

    /* an id nobody has */
    st = CTL(&o, "call", ":999999", "x");
    cr_assert(TH_EXITED(st, 1));
    cr_assert_str_eq(o.err, "brokerctl: call ':999999': no such client\n");
    th_output_free(&o);
    broker_close(b);
    th_broker_stop(&br);
}

Test(cli, kick_takes_colon_id_too)
{
    broker_t *b = th_connect(&br);
    broker_msg_t *m = NULL;
    th_output_t o;
    char id[32];
    int st, r;

    snprintf(id, sizeof(id), ":%llu",
             (unsigned long long)broker_client_id(b));
    st = CTL(&o, "kick", id);
    cr_assert(TH_EXITED(st, 0), "kick %s: %s", id, o.err);
    th_output_free(&o);
    /* its ERROR, then the connection is gone */
    do {
        broker_msg_free(m);
        m = NULL;
        r = broker_recv(b, &m, TH_HANG_MS);
    } while (r == 0);
    cr_assert(r == -ECONNABORTED || r == -ECONNRESET, "recv after kick: %d",
              r);
    broker_close(b);
    th_broker_stop(&br);
}

/* In a child: broker_call_id to the parent's client, which answers with
 * broker_reply_error. */
static int call_id_child(void *p)
{
    uint64_t id = *(uint64_t *)p;
    broker_t *b = th_connect(&br);
    broker_msg_t *reply = NULL;
    int r = broker_call_id(b, id, "q", 1, &reply, TH_HANG_MS);

    TH_CHECK(r == -EPROTONOSUPPORT, "broker_call_id: %d", r);
    TH_CHECK(reply == NULL, "a reply with an error");
    TH_CHECK(broker_call_id(b, 0, "q", 1, &reply, 0) == -EINVAL, "id 0");
    broker_close(b);
    return 0;
}

Test(cli, library_call_id_and_reply_error)
{
    broker_t *b = th_connect(&br);
    uint64_t id = broker_client_id(b);
    pid_t pid = th_spawn(call_id_child, &id);
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);

    cr_assert_eq(broker_reply_error(b, m, 0), -EINVAL, "not an error");
    cr_assert_eq(broker_reply_error(b, m, -EPROTONOSUPPORT), 0);
    cr_assert_eq(broker_reply_error(b, m, -EIO), -ENOENT, "closed already");
    broker_msg_free(m);
    th_join(pid);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- wait ----------------------------------------------------------------------- */

Test(cli, wait_for_a_name)
{
    static const char *const args[] = { "wait", "svc.late", "--timeout",
                                        "-1", NULL };
    broker_t *b = th_connect(&br);
    broker_t *owner;
    char log[200];
    th_output_t o;
    int st;

    /* nobody: exit 1 after the timeout */
    st = CTL(&o, "wait", "svc.never", "--timeout", "100");
    cr_assert(TH_EXITED(st, 1), "0x%x", st);
    cr_assert_str_eq(o.err, "brokerctl: wait 'svc.never': no owner after "
                     "100 ms\n");
    th_output_free(&o);

    /* a name that comes later: wait is subscribed, then it appears */
    pid_t pid = ctl_bg(log, sizeof(log), "wait.out", args);
    th_await_status(b, "subscriptions", 1);
    cr_assert(th_broker_alive(&br));
    owner = th_connect(&br);
    th_register(owner, "svc.late");
    st = th_join_status(pid);
    cr_assert(TH_EXITED(st, 0), "wait: 0x%x", st);

    /* already owned: at once */
    st = CTL(&o, "wait", "svc.late");
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    cr_assert_eq(o.out_len, 0);
    th_output_free(&o);
    broker_close(owner);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- brokerd -c DIR ------------------------------------------------------------- */

Test(cli, brokerd_config_directory)
{
    char sock[200], want[300];
    const char *const argv[] = { th_brokerd_path(), "-f", "-s", sock, "-c",
                                 br.dir, NULL };
    th_output_t o;
    int st;

    snprintf(sock, sizeof(sock), "%s/other.sock", br.dir);
    st = th_run(argv, NULL, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 2), "brokerd -c DIR: 0x%x %s", st, o.err);
    snprintf(want, sizeof(want), "%s: is a directory", br.dir);
    cr_assert(strstr(o.err, want), "stderr: %s", o.err);
    th_output_free(&o);
    th_broker_stop(&br);
}
