/*
 * test_pubsub_tool.c - publish/subscribe from the shell and from the
 * examples: brokerctl pub, sub (--raw, --count, text lines, --group),
 * subs and names listings, listen --queue, the usage errors, and
 * contrib/examples' publisher and subscriber against a real brokerd.
 *
 * A subscriber runs in the background; the test waits until the broker
 * counts its subscription (STATUS `subscriptions`) before publishing, and
 * for the subscriber's exit (--count) before reading what it printed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(pubsub_tool, 180);

/* brokerctl with ARGS, which must exit with `code`; its output in *o. */
#define CTL_EXPECT(code, o, ...) do { \
        int st_ = th_ctl(br.sock, (o), __VA_ARGS__, NULL); \
        cr_assert(TH_EXITED(st_, code), "brokerctl exit 0x%x, stderr: %s", \
                  st_, (o)->err); \
    } while (0)

/* Start `brokerctl -s SOCK ARGS...` in the background, output to log. */
static pid_t ctl_bg(const char *log, const char *const *args)
{
    return th_ctl_bg(br.sock, log, args);
}

/* brokerctl with stdin bytes in[0..len) and ARGS (NULL-terminated). */
static int ctl_in(const void *in, size_t len, th_output_t *o, ...)
{
    va_list ap;
    int st;

    va_start(ap, o);
    st = th_ctl_va(br.sock, in, len, o, ap);
    va_end(ap);
    return st;
}

static void log_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", br.dir, name);
}

Test(pubsub_tool, sub_count_raw_prints_exactly_the_payloads)
{
    static const char *const args[] = { "sub", "t.>", "--count", "3",
                                        "--raw", NULL };
    broker_t *b = th_connect(&br);
    char log[200], *out;
    th_output_t o;
    size_t len;
    pid_t pid;
    int st;

    log_path(log, sizeof(log), "sub.out");
    pid = ctl_bg(log, args);
    th_await_status(b, "subscriptions", 1);
    CTL_EXPECT(0, &o, "pub", "t.a", "one");
    th_output_free(&o);
    CTL_EXPECT(0, &o, "pub", "other.topic", "not for it");
    th_output_free(&o);
    CTL_EXPECT(0, &o, "pub", "t.b.c", "two words");
    th_output_free(&o);
    /* the payload from stdin, binary bytes and all */
    static const char in[] = "th\x01ree";
    st = ctl_in(in, sizeof(in) - 1, &o, "pub", "t.c", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "%s", o.err);
    th_output_free(&o);
    st = th_join_status(pid);
    cr_assert(TH_EXITED(st, 0), "sub exit 0x%x", st);
    out = th_read_file(log, &len);
    cr_assert_eq(len, strlen("one\ntwo words\nth\x01ree\n"), "got '%s'", out);
    cr_assert_eq(memcmp(out, "one\ntwo words\nth\x01ree\n", len), 0,
                 "got '%s'", out);
    free(out);
    th_await_status(b, "subscriptions", 0);
    broker_close(b);
    th_broker_stop(&br);
}

Test(pubsub_tool, sub_text_lines_and_subs_listing)
{
    static const char *const args[] = { "sub", "k.*", "--count", "2",
                                        "--group", "workers", "--policy",
                                        "block", NULL };
    broker_t *b = th_connect(&br);
    char log[200], *out;
    th_output_t o;
    size_t len;
    pid_t pid;
    int st;

    log_path(log, sizeof(log), "sub.out");
    pid = ctl_bg(log, args);
    th_await_status(b, "subscriptions", 1);

    /* subs shows it, as a table and as JSON */
    CTL_EXPECT(0, &o, "subs");
    cr_assert_not_null(strstr(o.out, "PATTERN"), "%s", o.out);
    cr_assert_not_null(strstr(o.out, "k.*"), "%s", o.out);
    cr_assert_not_null(strstr(o.out, "workers"), "%s", o.out);
    cr_assert_not_null(strstr(o.out, "block"), "%s", o.out);
    cr_assert_not_null(strstr(o.out, "brokerctl"), "comm: %s", o.out);
    th_output_free(&o);
    CTL_EXPECT(0, &o, "subs", "--json");
    cr_assert_not_null(strstr(o.out, "\"pattern\":\"k.*\""), "%s", o.out);
    cr_assert_not_null(strstr(o.out, "\"group\":\"workers\""), "%s", o.out);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "subs", "--sort", "nosuchfield");
    th_output_free(&o);

    CTL_EXPECT(0, &o, "pub", "k.a", "hello world");
    th_output_free(&o);
    CTL_EXPECT(0, &o, "pub", "k.b", "tab\there\\");
    th_output_free(&o);
    st = th_join_status(pid);
    cr_assert(TH_EXITED(st, 0), "sub exit 0x%x", st);
    out = th_read_file(log, &len);
    cr_assert_str_eq(out, "k.a hello world\nk.b tab\\there\\\\\n");
    free(out);
    broker_close(b);
    th_broker_stop(&br);
}

Test(pubsub_tool, usage_errors_exit_2)
{
    th_output_t o;

    CTL_EXPECT(2, &o, "sub", "a..b");
    cr_assert_not_null(strstr(o.err, "invalid pattern"), "%s", o.err);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "sub", "a.>.b");
    th_output_free(&o);
    CTL_EXPECT(2, &o, "sub", "x", "--policy", "bogus");
    cr_assert_not_null(strstr(o.err, "--policy"), "%s", o.err);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "sub", "x", "--count", "0");
    cr_assert_not_null(strstr(o.err, "--count"), "%s", o.err);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "sub", "x", "--count", "-3");
    th_output_free(&o);
    CTL_EXPECT(2, &o, "sub", "x", "--group", "bad group");
    th_output_free(&o);
    CTL_EXPECT(2, &o, "sub");
    cr_assert_not_null(strstr(o.err, "PATTERN"), "%s", o.err);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "pub");
    cr_assert_not_null(strstr(o.err, "TOPIC"), "%s", o.err);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "pub", "a.*", "x");
    cr_assert_not_null(strstr(o.err, "invalid topic"), "%s", o.err);
    th_output_free(&o);
    CTL_EXPECT(2, &o, "pub", "t", "x", "--raw");
    th_output_free(&o);
    CTL_EXPECT(2, &o, "listen", "n", "--group", "g");   /* sub's only */
    th_output_free(&o);
    /* the broker's own topics: refused, a runtime error */
    CTL_EXPECT(1, &o, "pub", "$broker.names", "x");
    cr_assert_not_null(strstr(o.err, "$broker.names"), "%s", o.err);
    th_output_free(&o);
    th_broker_stop(&br);
}

static bool got_message(const char *text, size_t len)
{
    (void)len;
    return strstr(text, "to-listener") != NULL;
}

Test(pubsub_tool, listen_queue_and_names_listing)
{
    static const char *const args[] = { "listen", "lead", "--queue", NULL };
    broker_t *a = th_connect(&br), *w = th_connect(&br);
    char log[200], *out;
    uint64_t id = 0;
    th_output_t o;
    size_t len;
    pid_t pid;
    int st;

    cr_assert_eq(broker_register_flags(a, "lead",
                                       BROKER_NAME_ALLOW_REPLACEMENT),
                 BROKER_NAME_OWNER);
    log_path(log, sizeof(log), "listen.out");
    pid = ctl_bg(log, args);
    /* names shows the owner's flag and, once it has queued, the line */
    for (unsigned us = 500;; th_nap(&us)) {
        CTL_EXPECT(0, &o, "names", "--json");
        bool queued = strstr(o.out, "\"queue\":[]") == NULL &&
                      strstr(o.out, "\"queue\":[\"") != NULL;
        cr_assert_not_null(strstr(o.out, "allow-replacement"), "%s", o.out);
        th_output_free(&o);
        if (queued)
            break;
    }
    cr_assert_eq(broker_release(a, "lead"), 0);
    cr_assert_eq(broker_resolve(w, "lead", &id), 0);
    cr_assert_neq(id, broker_client_id(a), "the one in line owns it now");
    cr_assert_eq(broker_send(w, "lead", "to-listener", 11, NULL, 0), 0);
    out = th_await_file(log, got_message, &len);
    cr_assert_not_null(strstr(out, "waiting in line"), "%s", out);
    free(out);
    st = th_signal_join(pid, SIGTERM);
    cr_assert(TH_EXITED(st, 0), "listen exit 0x%x", st);
    broker_close(a);
    broker_close(w);
    th_broker_stop(&br);
}

static bool got_end(const char *text, size_t len)
{
    (void)len;
    return strstr(text, "topic=mon.end") != NULL;
}

Test(pubsub_tool, monitor_topic_filter)
{
    static const char *const args[] = { "monitor", "topic:mon.>", NULL };
    broker_t *b = th_connect(&br), *s = th_connect(&br);
    uint32_t id;
    char log[200], *out;
    th_output_t o;
    size_t len;
    pid_t pid;
    int st;

    /* the monitor records what the broker delivers: s takes it all */
    cr_assert_eq(broker_subscribe(s, ">", NULL, BROKER_SUB_DROP, &id), 0);
    log_path(log, sizeof(log), "monitor.out");
    pid = ctl_bg(log, args);
    /* the monitor is in place once it has recorded a probe */
    for (unsigned us = 500;; th_nap(&us)) {
        cr_assert_eq(broker_publish(b, "mon.probe", "p", 1, NULL, 0), 0);
        out = th_read_file(log, &len);
        bool ready = strstr(out, "topic=mon.probe") != NULL;
        free(out);
        if (ready)
            break;
    }
    cr_assert_eq(broker_publish(b, "other.topic", "unseen", 6, NULL, 0), 0);
    cr_assert_eq(broker_publish(b, "mon.a", "seen", 4, NULL, 0), 0);
    cr_assert_eq(broker_publish(b, "mon.end", "end", 3, NULL, 0), 0);
    out = th_await_file(log, got_end, &len);
    cr_assert_not_null(strstr(out, "topic=mon.a"), "%s", out);
    cr_assert_not_null(strstr(out, "TOPIC"), "%s", out);
    cr_assert_null(strstr(out, "other.topic"), "%s", out);
    cr_assert_null(strstr(out, "unseen"), "%s", out);
    free(out);
    st = th_signal_join(pid, SIGINT);
    cr_assert(TH_EXITED(st, 0), "monitor exit 0x%x", st);
    CTL_EXPECT(1, &o, "monitor", "topic:a..b");
    cr_assert_not_null(strstr(o.err, "invalid filter"), "%s", o.err);
    th_output_free(&o);
    broker_close(s);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- the examples ------------------------------------------------------- */

/* contrib/examples/PROG next to $BROKERD in the build tree. */
static void example_path(const char *prog, char *buf, size_t len)
{
    char dir[512];

    snprintf(dir, sizeof(dir), "%s", th_brokerd_path());
    snprintf(buf, len, "%s/contrib/examples/%s", dirname(dir), prog);
}

Test(pubsub_tool, example_publisher_and_subscriber)
{
    char pub[600], sub[600], env[200], line[128] = "";
    const char *const envs[] = { env, NULL };
    th_output_t o;
    int out[2], st;
    pid_t pid;
    FILE *f;

    example_path("example-publisher", pub, sizeof(pub));
    example_path("example-subscriber", sub, sizeof(sub));
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", br.sock);

    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        putenv(env);
        execl(sub, sub, "demo.*.temp", "2", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    f = fdopen(out[0], "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof(line), f), "no ready line");
    cr_assert_str_eq(line, "ready\n");

    const char *const a1[] = { pub, "demo.kitchen.hum", "60", NULL };
    st = th_run(a1, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 0), "publisher: %s", o.err);
    th_output_free(&o);
    const char *const a2[] = { pub, "demo.kitchen.temp", "21.5", "22", NULL };
    st = th_run(a2, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 0), "publisher: %s", o.err);
    th_output_free(&o);

    cr_assert_not_null(fgets(line, sizeof(line), f));
    cr_assert_str_eq(line, "demo.kitchen.temp: 21.5\n");
    cr_assert_not_null(fgets(line, sizeof(line), f));
    cr_assert_str_eq(line, "demo.kitchen.temp: 22\n");
    st = th_join_status(pid);
    cr_assert(TH_EXITED(st, 0), "subscriber exit 0x%x", st);
    fclose(f);

    /* a bad topic and a reserved one: the publisher says so, exits 1 */
    const char *const a3[] = { pub, "demo.*", "x", NULL };
    st = th_run(a3, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 1));
    cr_assert_not_null(strstr(o.err, "demo.*"), "%s", o.err);
    th_output_free(&o);
    const char *const a4[] = { pub, "$broker.clients", "x", NULL };
    st = th_run(a4, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 1));
    th_output_free(&o);
    th_broker_stop(&br);
}
