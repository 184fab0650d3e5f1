/*
 * test_reconnect.c - BROKER_OPT_RECONNECT and brokerctl --reconnect
 * against a real brokerd that is killed with SIGKILL and started again on
 * the same socket path (over its stale socket and lock).
 *
 * The library: DISCONNECTED then RECONNECTED, names and subscriptions
 * back (with the subscription ids the application got before), a name
 * taken meanwhile reported as lost, and without the option the handle
 * stays failed.  brokerctl listen, sub and serve: with --reconnect each
 * works again after the restart; without it each exits non-zero.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(reconnect, 240);

/* SIGKILL brokerd and start a new one on the same socket path. */
static void kill_and_restart(void)
{
    static const char *const none[] = { NULL };
    int st;

    th_broker_signal_wait(&br, SIGKILL);
    br.pid = th_brokerd_spawn(br.sock, br.log, br.env, none);
    cr_assert_eq(th_wait_listening(br.sock, br.pid, &st), 0,
                 "brokerd did not start over the stale socket (0x%x)", st);
}

static broker_t *connect_reconnecting(void)
{
    broker_t *b = th_connect(&br);

    TH_OK(broker_set_option(b, BROKER_OPT_RECONNECT, 1));
    return b;
}

/* The next event is kind; returns its code. */
static int expect_event(broker_t *b, broker_kind_t kind)
{
    broker_msg_t *m = th_recv_kind(b, kind);
    int code = m->code;

    broker_msg_free(m);
    return code;
}

static void expect_text(broker_t *b, const char *name, const char *text)
{
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);

    cr_assert_str_eq(m->name ? m->name : "(none)", name);
    cr_assert_eq(m->len, strlen(text));
    cr_assert_eq(memcmp(m->data, text, m->len), 0);
    broker_msg_free(m);
}

Test(reconnect, names_and_subscriptions_come_back)
{
    broker_t *a = connect_reconnecting(), *c;
    uint32_t gone, id;
    broker_msg_t *m;

    th_register(a, "svc.back");
    TH_OK(broker_subscribe(a, "rc.gone", NULL, BROKER_SUB_DROP, &gone));
    TH_OK(broker_subscribe(a, "rc.>", NULL, BROKER_SUB_DROP, &id));
    /* the new broker grants another id: ours must stay */
    TH_OK(broker_unsubscribe(a, gone));
    kill_and_restart();
    cr_assert_eq(expect_event(a, BROKER_MSG_DISCONNECTED), -ECONNRESET);
    cr_assert_eq(broker_ping(a, 1000), -ECONNRESET,
                 "other calls fail until broker_recv reconnects");
    cr_assert_eq(expect_event(a, BROKER_MSG_RECONNECTED), 0);
    c = th_connect(&br);
    TH_OK(broker_send(c, "svc.back", "to the name", 11, NULL, 0));
    TH_OK(broker_publish(c, "rc.x", "published", 9, NULL, 0));
    expect_text(a, "svc.back", "to the name");
    m = th_recv_kind(a, BROKER_MSG_DATA);
    cr_assert(m->flags & BROKER_MSGF_TOPIC);
    cr_assert_eq(m->sub_id, id, "sub_id %u, the application's id is %u",
                 m->sub_id, id);
    broker_msg_free(m);
    TH_OK(broker_unsubscribe(a, id));
    cr_assert_eq(th_status_value(a, "subscriptions"), 0);
    broker_close(c);
    broker_close(a);
}

Test(reconnect, a_name_taken_meanwhile_is_reported)
{
    broker_t *a = connect_reconnecting(), *c;
    broker_msg_t *m;

    th_register(a, "svc.taken");
    th_register(a, "svc.kept");
    kill_and_restart();
    cr_assert_eq(expect_event(a, BROKER_MSG_DISCONNECTED), -ECONNRESET);
    c = th_connect(&br);
    th_register(c, "svc.taken");
    m = th_recv_kind(a, BROKER_MSG_RECONNECTED);
    cr_assert_eq(m->code, 1, "one name lost, got %d: %s", m->code,
                 (char *)m->data);
    cr_assert(strstr(m->data, "name svc.taken: ") != NULL, "%s",
              (char *)m->data);
    cr_assert(strstr(m->data, "svc.kept") == NULL, "%s", (char *)m->data);
    broker_msg_free(m);
    TH_OK(broker_send(c, "svc.kept", "k", 1, NULL, 0));
    expect_text(a, "svc.kept", "k");
    broker_close(c);
    broker_close(a);
}

Test(reconnect, without_the_option_the_handle_stays_failed)
{
    broker_t *a = th_connect(&br), *c;
    broker_msg_t *m = NULL;

    th_register(a, "svc.once");
    kill_and_restart();
    cr_assert_eq(broker_recv(a, &m, 5000), -ECONNRESET);
    cr_assert_null(m);
    cr_assert_eq(broker_recv(a, &m, 0), -ECONNRESET);
    cr_assert_eq(broker_ping(a, 1000), -ECONNRESET);
    c = th_connect(&br);
    cr_assert_eq(broker_resolve(c, "svc.once", &(uint64_t){ 0 }), -ENOENT);
    broker_close(c);
    broker_close(a);
}

Test(reconnect, attached_mode_refuses_the_option)
{
    broker_t *a = connect_reconnecting();
    const broker_callbacks_t cbs = { 0 };
    uv_loop_t loop;

    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(a, &loop, &cbs, NULL), -ENOTSUP);
    cr_assert_eq(broker_set_option(a, BROKER_OPT_RECONNECT, 2), -EINVAL);
    TH_OK(broker_set_option(a, BROKER_OPT_RECONNECT, 0));
    TH_OK(broker_attach(a, &loop, &cbs, NULL));
    cr_assert_eq(broker_set_option(a, BROKER_OPT_RECONNECT, 1), -ENOTSUP);
    broker_close(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- brokerctl ------------------------------------------------------------ */

static pid_t ctl_bg(const char *logname, const char *const *args, char *log,
                    size_t loglen)
{
    snprintf(log, loglen, "%s/%s", br.dir, logname);
    return th_ctl_bg(br.sock, log, args);
}

static void await_owner(const char *name)
{
    th_output_t o;
    int st = th_ctl(br.sock, &o, "wait", name, "--timeout", "-1", NULL);

    cr_assert(TH_EXITED(st, 0), "wait %s: 0x%x %s", name, st, o.err);
    th_output_free(&o);
}

static const char *want_text;
static bool has_text(const char *s, size_t len)
{
    (void)len;
    return strstr(s, want_text) != NULL;
}

static void await_log(const char *log, const char *text)
{
    want_text = text;
    size_t len;

    free(th_await_file(log, has_text, &len));
}

/* Publish on topic until the log of a `sub` shows the text (a
 * subscription has no owner to wait for). */
static void publish_until_seen(const char *log, const char *topic,
                               const char *text)
{
    broker_t *c = th_connect(&br);
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        size_t len;
        char *s;
        bool seen;

        TH_OK(broker_publish(c, topic, text, strlen(text), NULL, 0));
        TH_OK(broker_ping(c, 5000));
        s = th_read_file(log, &len);
        seen = strstr(s, text) != NULL;
        free(s);
        if (seen)
            break;
        cr_assert(th_now_ms() < end, "'%s' never reached %s", text, log);
        th_nap(&us);
    }
    broker_close(c);
}

static void send_text(const char *name, const char *text)
{
    broker_t *c = th_connect(&br);

    TH_OK(broker_send(c, name, text, strlen(text), NULL, 0));
    TH_OK(broker_ping(c, 5000));
    broker_close(c);
}

static void call_echo(const char *name, const char *text)
{
    broker_t *c = th_connect(&br);
    broker_msg_t *r = NULL;

    TH_OK(broker_call(c, name, text, strlen(text), &r, 10000));
    cr_assert_eq(r->len, strlen(text));
    cr_assert_eq(memcmp(r->data, text, r->len), 0);
    broker_msg_free(r);
    broker_close(c);
}

/* brokerctl ended by SIGTERM after its work: a clean exit. */
static void stop_ok(pid_t pid, const char *log)
{
    int st = th_signal_join(pid, SIGTERM);
    size_t len;
    char *s = th_read_file(log, &len);

    cr_assert(TH_EXITED(st, 0), "status 0x%x, log: %s", st, s);
    free(s);
}

/* brokerctl without --reconnect: non-zero once brokerd is killed. */
static void expect_exit_failure(pid_t pid, const char *log)
{
    int st = th_join_status(pid);
    size_t len;
    char *s = th_read_file(log, &len);

    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "status 0x%x: %s",
              st, s);
    cr_assert(strstr(s, "lost the connection to brokerd") != NULL, "%s", s);
    free(s);
}

Test(reconnect, brokerctl_listen)
{
    static const char *const args[] = { "listen", "svc.l", "--reconnect",
                                        NULL };
    char log[192];
    pid_t pid = ctl_bg("listen.log", args, log, sizeof(log));

    await_owner("svc.l");
    send_text("svc.l", "before");
    await_log(log, "before");
    kill_and_restart();
    await_log(log, "brokerctl: lost the connection to brokerd");
    await_owner("svc.l");
    await_log(log, "brokerctl: reconnected to brokerd\n");
    send_text("svc.l", "after");
    await_log(log, "after");
    stop_ok(pid, log);
}

Test(reconnect, brokerctl_listen_reports_a_lost_name)
{
    static const char *const args[] = { "listen", "svc.lost", "--reconnect",
                                        NULL };
    char log[192];
    pid_t pid = ctl_bg("lost.log", args, log, sizeof(log));
    broker_t *c;

    await_owner("svc.lost");
    th_broker_signal_wait(&br, SIGKILL);
    await_log(log, "brokerctl: lost the connection to brokerd");
    {
        static const char *const none[] = { NULL };
        int st;

        br.pid = th_brokerd_spawn(br.sock, br.log, br.env, none);
        cr_assert_eq(th_wait_listening(br.sock, br.pid, &st), 0);
    }
    c = th_connect(&br);
    th_register(c, "svc.lost");
    await_log(log, "not back: name svc.lost: ");
    broker_close(c);
    stop_ok(pid, log);
}

Test(reconnect, brokerctl_sub)
{
    static const char *const args[] = { "sub", "rc.s.>", "--reconnect",
                                        NULL };
    char log[192];
    pid_t pid = ctl_bg("sub.log", args, log, sizeof(log));

    publish_until_seen(log, "rc.s.a", "before");
    kill_and_restart();
    await_log(log, "brokerctl: reconnected to brokerd\n");
    publish_until_seen(log, "rc.s.b", "after");
    stop_ok(pid, log);
}

Test(reconnect, brokerctl_serve)
{
    static const char *const args[] = { "serve", "svc.e", "--echo",
                                        "--reconnect", NULL };
    char log[192];
    pid_t pid = ctl_bg("serve.log", args, log, sizeof(log));

    await_owner("svc.e");
    call_echo("svc.e", "before");
    kill_and_restart();
    await_log(log, "brokerctl: reconnected to brokerd\n");
    call_echo("svc.e", "after");
    stop_ok(pid, log);
}

Test(reconnect, brokerctl_without_reconnect_exits_non_zero)
{
    static const char *const la[] = { "listen", "svc.nl", NULL };
    static const char *const sa[] = { "sub", "rc.n.>", NULL };
    static const char *const ea[] = { "serve", "svc.ne", "--echo", NULL };
    char l1[192], l2[192], l3[192];
    pid_t p1 = ctl_bg("nl.log", la, l1, sizeof(l1));
    pid_t p2 = ctl_bg("ns.log", sa, l2, sizeof(l2));
    pid_t p3 = ctl_bg("ne.log", ea, l3, sizeof(l3));

    await_owner("svc.nl");
    await_owner("svc.ne");
    publish_until_seen(l2, "rc.n.a", "ready");
    kill_and_restart();
    expect_exit_failure(p1, l1);
    expect_exit_failure(p2, l2);
    expect_exit_failure(p3, l3);
}
