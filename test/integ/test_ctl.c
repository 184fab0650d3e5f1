/*
 * test_ctl.c - brokerctl end to end (the binary named by $BROKERCTL), what
 * connected clients see when brokerd gets SIGTERM, and the library's async
 * API on a libuv loop (this is the test linked with libuv).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <stdarg.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <uv.h>
#include <criterion/criterion.h>
#include "harness.h"
#include "th_uv.h"

TH_BROKER_SUITE(ctl, 180);

/* Run brokerctl -s <sock> ARGS... with optional stdin. */
static int ctl(th_output_t *out, const void *in, size_t in_len, ...)
{
    va_list ap;
    int st;

    va_start(ap, in_len);
    st = th_ctl_va(br.sock, in, in_len, out, ap);
    va_end(ap);
    return st;
}

/* ---- commands ------------------------------------------------------------ */

Test(ctl, ping)
{
    th_output_t o;
    int st = ctl(&o, NULL, 0, "ping", NULL);

    cr_assert(TH_EXITED(st, 0), "exit 0x%x, stderr: %s", st, o.err);
    cr_assert_not_null(strstr(o.out, "pong"), "stdout: %s", o.out);
    th_output_free(&o);

    /* The socket from $BROKER_SOCKET, without -s. */
    char env[200];
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", br.sock);
    const char *const envv[] = { env, NULL };
    const char *const argv[] = { th_brokerctl_path(), "ping", NULL };
    st = th_run(argv, envv, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 0), "BROKER_SOCKET ping: 0x%x %s", st, o.err);
    th_output_free(&o);
    th_broker_stop(&br);
}

Test(ctl, status_json)
{
    static const char *const keys[] = {
        "version", "pid", "uptime_ms", "socket", "clients", "names",
        "streams", "msgs_in", "msgs_out", "bytes_in", "bytes_out",
        "queued_bytes", "max_packet", "max_fds", "max_msg", "queue_limit",
    };
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    th_output_t o;
    th_json_obj_t obj;
    int n, st;

    th_register(a, "svc.one");
    th_register(b, "svc.two");
    th_register(b, "svc.three");
    /* Only a and b remain once the harness's readiness probe is gone. */
    th_await_status(a, "clients", 2);
    st = ctl(&o, NULL, 0, "status", "--json", NULL);
    cr_assert(TH_EXITED(st, 0), "exit 0x%x, stderr: %s", st, o.err);
    n = th_json_object(o.out, 0, &obj);
    cr_assert_geq(n, 0, "not a JSON object: %s", o.out);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_assert_not_null(th_json_get(&obj, keys[i]), "no \"%s\" in %s",
                           keys[i], o.out);

    const th_json_member_t *v = th_json_get(&obj, "clients");
    cr_assert(v->type == TH_JSON_NUM, "clients is a number");
    /* a, b and brokerctl itself. */
    cr_assert_eq(strtol(v->val, NULL, 10), 3, "clients=%s", v->val);
    v = th_json_get(&obj, "names");
    cr_assert(v->type == TH_JSON_NUM);
    cr_assert_eq(strtol(v->val, NULL, 10), 3, "names=%s", v->val);
    v = th_json_get(&obj, "pid");
    cr_assert(v->type == TH_JSON_NUM);
    cr_assert_eq(strtol(v->val, NULL, 10), (long)br.pid);
    v = th_json_get(&obj, "socket");
    cr_assert(v->type == TH_JSON_STR);
    cr_assert_str_eq(v->val, br.sock);
    v = th_json_get(&obj, "max_packet");
    cr_assert_eq(strtoul(v->val, NULL, 10), broker_limits(a)->max_packet);
    v = th_json_get(&obj, "queue_limit");
    cr_assert_eq(strtoull(v->val, NULL, 10), broker_limits(a)->queue_limit);
    th_json_obj_free(&obj);
    th_output_free(&o);

    /* Plain text form: one "key: value" line per key. */
    st = ctl(&o, NULL, 0, "status", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_not_null(strstr(o.out, "clients:"), "%s", o.out);
    th_output_free(&o);

    broker_close(b);
    /* After b left: a and the new brokerctl. */
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    for (int i = 0;; i++) {
        cr_assert_lt(i, 2000, "the broker never noticed a client leave");
        st = ctl(&o, NULL, 0, "status", "--json", NULL);
        cr_assert(TH_EXITED(st, 0));
        n = th_json_object(o.out, 0, &obj);
        cr_assert_geq(n, 0);
        long clients = strtol(th_json_str(&obj, "clients"), NULL, 10);
        long names = strtol(th_json_str(&obj, "names"), NULL, 10);
        th_json_obj_free(&obj);
        th_output_free(&o);
        cr_assert(clients == 2 || clients == 3, "clients=%ld", clients);
        if (clients == 3)
            continue;       /* the broker has not seen b leave yet */
        cr_assert_eq(names, 1, "b's names released");
        break;
    }
    broker_close(a);
    th_broker_stop(&br);
}

/* Wait until someone owns `name` (hang-guarded). */
static void wait_registered(const char *name)
{
    broker_t *b = th_connect(&br);
    uint64_t id;

    for (int i = 0;; i++) {
        int r = broker_resolve(b, name, &id);
        if (r == 0)
            break;
        cr_assert_eq(r, -ENOENT, "resolve: %s", broker_strerror(r));
        cr_assert_lt(i, TH_HANG_MS / 10, "%s never registered", name);
        usleep(10000);
    }
    broker_close(b);
}

/* The listener's output has both messages of send_and_listen. */
static bool heard_both(const char *text, size_t len)
{
    (void)len;
    return strstr(text, "hello-listener") && strstr(text, "from\\tstdin");
}

Test(ctl, send_and_listen)
{
    char log[160];
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "listen", "svc.ear",
                           NULL };
    th_output_t o;
    size_t len;
    char *text;
    int st;

    snprintf(log, sizeof(log), "%s/listen.out", br.dir);
    pid_t pid = th_run_bg(argv, NULL, log);
    wait_registered("svc.ear");

    st = ctl(&o, NULL, 0, "send", "svc.ear", "hello-listener", NULL);
    cr_assert(TH_EXITED(st, 0), "send exit 0x%x: %s", st, o.err);
    th_output_free(&o);
    st = ctl(&o, "from\tstdin\n", 11, "send", "svc.ear", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "send - exit 0x%x: %s", st, o.err);
    th_output_free(&o);

    /* The listener prints each message as it arrives. */
    text = th_await_file(log, heard_both, &len);
    cr_assert_not_null(strstr(text, "len=14: hello-listener"), "%s", text);
    cr_assert_not_null(strstr(text, "len=11: from\\tstdin\\n"), "%s", text);
    cr_assert(strstr(text, "hello-listener") < strstr(text, "from\\tstdin"),
              "order: %s", text);
    free(text);

    st = th_signal_join(pid, SIGTERM);
    cr_assert(TH_EXITED(st, 0), "listen on SIGTERM: 0x%x", st);
    th_broker_stop(&br);
}

Test(ctl, call_and_serve_echo_binary)
{
    char log[160];
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "serve", "svc.echo",
                           "--echo", NULL };
    size_t len = 100000;
    uint8_t *data = malloc(len);
    th_output_t o;
    int st;

    cr_assert_not_null(data);
    for (size_t i = 0; i < 256; i++)
        data[i] = (uint8_t)i;       /* every byte value, NUL included */
    th_pattern(data + 256, len - 256, 99, 0);
    snprintf(log, sizeof(log), "%s/serve.out", br.dir);
    pid_t pid = th_run_bg(argv, NULL, log);
    wait_registered("svc.echo");

    st = ctl(&o, data, len, "call", "svc.echo", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "call exit 0x%x: %s", st, o.err);
    cr_assert_eq(o.out_len, len, "reply of %zu bytes, sent %zu", o.out_len,
                 len);
    cr_assert_eq(memcmp(o.out, data, len), 0, "reply differs");
    th_output_free(&o);

    st = ctl(&o, NULL, 0, "call", "svc.echo", "text arg", NULL);
    cr_assert(TH_EXITED(st, 0));
    cr_assert_eq(o.out_len, 8);
    cr_assert_arr_eq(o.out, "text arg", 8);
    th_output_free(&o);

    /* Empty stdin is an empty request. */
    st = ctl(&o, "", 0, "call", "svc.echo", "-", NULL);
    cr_assert(TH_EXITED(st, 0), "empty call: %s", o.err);
    cr_assert_eq(o.out_len, 0);
    th_output_free(&o);

    st = th_signal_join(pid, SIGTERM);
    cr_assert(TH_EXITED(st, 0), "serve on SIGTERM: 0x%x", st);
    free(data);
    th_broker_stop(&br);
}

Test(ctl, usage_errors_exit_2)
{
    static const char *const cases[][4] = {
        { "frobnicate", NULL },
        { "send", NULL },                       /* missing NAME */
        { "ping", "extra", NULL },
        { "serve", "svc.x", NULL },             /* no mode */
        { "ping", "--json", NULL },             /* option of another cmd */
        { "--bogus-option", "ping", NULL },
    };
    th_output_t o;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = ctl(&o, NULL, 0, cases[i][0], cases[i][1], cases[i][2],
                     NULL);
        cr_assert(TH_EXITED(st, 2), "brokerctl %s %s: status 0x%x", cases[i][0],
                  cases[i][1] ? cases[i][1] : "", st);
        cr_assert_gt(o.err_len, 0, "usage error without a message");
        cr_assert_eq(o.out_len, 0, "stdout: %s", o.out);
        th_output_free(&o);
    }
    const char *const none[] = { th_brokerctl_path(), NULL };
    int st = th_run(none, NULL, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 2), "no command: 0x%x", st);
    th_output_free(&o);
    th_broker_stop(&br);
}

Test(ctl, runtime_errors_exit_1)
{
    th_output_t o;
    int st;

    st = ctl(&o, NULL, 0, "call", "svc.nobody", "x", NULL);
    cr_assert(TH_EXITED(st, 1), "call to unknown name: 0x%x", st);
    cr_assert_not_null(strstr(o.err, "svc.nobody"), "stderr: %s", o.err);
    cr_assert_eq(o.out_len, 0);
    th_output_free(&o);

    st = ctl(&o, NULL, 0, "send", "svc.nobody", "x", NULL);
    cr_assert(TH_EXITED(st, 1), "send to unknown name: 0x%x", st);
    cr_assert_gt(o.err_len, 0);
    th_output_free(&o);

    /* The name is taken by someone else. */
    broker_t *a = th_connect(&br);
    th_register(a, "svc.taken");
    st = ctl(&o, NULL, 0, "listen", "svc.taken", NULL);
    cr_assert(TH_EXITED(st, 1), "listen on a taken name: 0x%x", st);
    cr_assert_gt(o.err_len, 0);
    th_output_free(&o);
    broker_close(a);

    th_broker_stop(&br);

    /* No broker at all. */
    char sock[160];
    snprintf(sock, sizeof(sock), "/tmp/bkt-no-such-dir-%d/sock", getpid());
    const char *const argv[] = { th_brokerctl_path(), "-s", sock, "ping", NULL };
    st = th_run(argv, NULL, NULL, 0, &o);
    cr_assert(TH_EXITED(st, 1), "ping without broker: 0x%x", st);
    cr_assert_not_null(strstr(o.err, sock), "stderr names the socket: %s",
                       o.err);
    th_output_free(&o);
}

/* ---- SIGTERM with clients connected ----------------------------------------- */

struct waiter_arg {
    th_barrier_t ready;
};

static int blocked_receiver(void *p)
{
    struct waiter_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m = NULL;

    th_register(b, "svc.waiting");
    th_barrier_signal(&a->ready, 0);
    int r = broker_recv(b, &m, TH_HANG_MS);
    TH_CHECK(r == -ESHUTDOWN, "broker_recv during shutdown: %d (%s)", r,
             broker_strerror(r));
    TH_CHECK(m == NULL, "message on error");
    r = broker_ping(b, 1000);
    TH_CHECK(r < 0, "ping after shutdown succeeded");
    broker_close(b);
    return 0;
}

Test(ctl, sigterm_shuts_down_cleanly)
{
    struct waiter_arg arg;
    broker_t *idle = th_connect(&br);
    broker_msg_t *m = NULL;
    struct stat st;
    char log[160];
    const char *argv[] = { th_brokerctl_path(), "-s", br.sock, "serve", "svc.srv",
                           "--echo", NULL };
    pid_t pid, serve;
    int status;

    th_barrier_init(&arg.ready);
    pid = th_spawn(blocked_receiver, &arg);
    th_barrier_wait(&arg.ready);
    snprintf(log, sizeof(log), "%s/serve.out", br.dir);
    serve = th_run_bg(argv, NULL, log);
    wait_registered("svc.srv");
    cr_assert_eq(broker_ping(idle, TH_HANG_MS), 0);

    status = th_broker_signal_wait(&br, SIGTERM);
    if (!TH_EXITED(status, 0))
        th_broker_dump_log(&br);
    cr_assert(TH_EXITED(status, 0), "brokerd on SIGTERM: 0x%x", status);
    cr_assert_neq(stat(br.sock, &st), 0, "socket file left behind");
    cr_assert_eq(errno, ENOENT);

    /* A client that was not waiting learns on its next receive. */
    cr_assert_eq(broker_recv(idle, &m, TH_HANG_MS), -ESHUTDOWN);
    cr_assert_null(m);
    broker_close(idle);
    th_join(pid);
    status = th_join_status(serve);
    cr_assert(TH_EXITED(status, 0), "brokerctl serve after shutdown: 0x%x",
              status);
    th_barrier_fini(&arg.ready);
}

Test(ctl, sigint_is_like_sigterm)
{
    broker_t *b = th_connect(&br);
    broker_msg_t *m = NULL;
    struct stat st;

    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    int status = th_broker_signal_wait(&br, SIGINT);
    cr_assert(TH_EXITED(status, 0), "brokerd on SIGINT: 0x%x", status);
    cr_assert_neq(stat(br.sock, &st), 0, "socket file left behind");
    cr_assert_eq(broker_recv(b, &m, TH_HANG_MS), -ESHUTDOWN);
    broker_close(b);
}

/* ---- the async API on a libuv loop ------------------------------------------ */

#define ASYNC_CALLS 20
#define ASYNC_BIG (8u << 20)

struct async_srv {
    th_barrier_t ready;
};

/* Blocking-API peer: answers requests with "re:" + payload; checks a big
 * one-way message and answers "ok"; leaves on "quit". */
static int async_peer(void *p)
{
    struct async_srv *a = p;
    broker_t *b = th_connect(&br);

    th_register(b, "svc.aecho");
    th_barrier_signal(&a->ready, broker_client_id(b));
    for (;;) {
        broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
        if (!(m->flags & BROKER_MSGF_CLOSE)) {
            char out[64];
            int n = snprintf(out, sizeof(out), "re:%.*s",
                             (int)(m->len > 32 ? 32 : m->len),
                             (const char *)m->data);
            TH_OK(broker_reply(b, m, out, (size_t)n, NULL, 0));
        } else if (m->len == 4 && !memcmp(m->data, "quit", 4)) {
            broker_msg_free(m);
            break;
        } else {
            bool good = m->len == ASYNC_BIG &&
                        th_pattern_check(m->data, m->len, 77, 0) < 0;
            TH_OK(broker_send_id(b, m->source, good ? "ok" : "bad", good ? 2 : 3,
                                 NULL, 0));
        }
        broker_msg_free(m);
    }
    broker_close(b);
    return 0;
}

struct acall_slot {
    bool done;
    int err;
    char data[64];
    size_t len;
};

struct actx {
    struct acall_slot calls[ASYNC_CALLS];
    struct acall_slot nobody, silent;
    char msgs[8][16];
    size_t nmsgs;
    bool disconnected;
    int disconnect_err;
};

static void on_reply(broker_t *b, int err, broker_msg_t *reply, void *ud)
{
    struct acall_slot *s = ud;

    s->done = true;
    s->err = err;
    if (reply) {
        s->len = reply->len < sizeof(s->data) ? reply->len : sizeof(s->data);
        memcpy(s->data, reply->data, s->len);
        broker_msg_free(reply);
    }
}

static void on_message(broker_t *b, broker_msg_t *m, void *ud)
{
    struct actx *c = ud;

    if (m->kind == BROKER_MSG_DATA && c->nmsgs < 8) {
        size_t n = m->len < 15 ? m->len : 15;
        memcpy(c->msgs[c->nmsgs], m->data, n);
        c->msgs[c->nmsgs][n] = '\0';
        c->nmsgs++;
    }
    broker_msg_free(m);
}

static void on_disconnect(broker_t *b, int err, void *ud)
{
    struct actx *c = ud;

    c->disconnected = true;
    c->disconnect_err = err;
}

static bool calls_done(void *p)
{
    struct actx *c = p;

    for (int i = 0; i < ASYNC_CALLS; i++)
        if (!c->calls[i].done)
            return false;
    return c->nobody.done && c->silent.done;
}

static size_t want_msgs;
static bool msgs_done(void *p)
{
    return ((struct actx *)p)->nmsgs >= want_msgs;
}

static bool disconnected(void *p)
{
    return ((struct actx *)p)->disconnected;
}

Test(ctl, async_api)
{
    static struct actx ctx;
    struct async_srv srv;
    broker_callbacks_t cbs = { on_message, on_disconnect };
    uv_loop_t loop;
    broker_t *b, *other, *silent;
    broker_msg_t *m = NULL;
    pid_t pid;

    memset(&ctx, 0, sizeof(ctx));
    th_barrier_init(&srv.ready);
    pid = th_spawn(async_peer, &srv);
    th_barrier_wait(&srv.ready);
    silent = th_connect(&br);
    th_register(silent, "svc.silent");      /* never answers */
    other = th_connect(&br);

    cr_assert_eq(uv_loop_init(&loop), 0);
    b = th_connect(&br);
    cr_assert_eq(broker_attach(b, &loop, &cbs, &ctx), 0);
    cr_assert_eq(broker_attach(b, &loop, &cbs, &ctx), -EBUSY);
    cr_assert_eq(broker_recv(b, &m, 0), -EBUSY, "blocking receive while "
                 "attached");

    /* Calls: answered, unknown name, timed out. */
    for (int i = 0; i < ASYNC_CALLS; i++) {
        char req[16];
        int n = snprintf(req, sizeof(req), "n=%d", i);
        cr_assert_eq(broker_call_async(b, "svc.aecho", req, (size_t)n,
                                       TH_HANG_MS, on_reply, &ctx.calls[i]),
                     0);
    }
    cr_assert_eq(broker_call_async(b, "svc.nobody", "x", 1, TH_HANG_MS,
                                   on_reply, &ctx.nobody), 0);
    cr_assert_eq(broker_call_async(b, "svc.silent", "x", 1, 100, on_reply,
                                   &ctx.silent), 0);
    th_uv_run_until(&loop, calls_done, &ctx);
    for (int i = 0; i < ASYNC_CALLS; i++) {
        char want[16];
        int n = snprintf(want, sizeof(want), "re:n=%d", i);
        cr_assert_eq(ctx.calls[i].err, 0, "call %d: %s", i,
                     broker_strerror(ctx.calls[i].err));
        cr_assert_eq(ctx.calls[i].len, (size_t)n);
        cr_assert_arr_eq(ctx.calls[i].data, want, (size_t)n, "call %d", i);
    }
    cr_assert_eq(ctx.nobody.err, -ENOENT, "unknown name: %d", ctx.nobody.err);
    cr_assert_eq(ctx.silent.err, -ETIMEDOUT, "no answer: %d", ctx.silent.err);

    /* Messages from others arrive through on_message, in order. */
    cr_assert_eq(broker_send_id(other, broker_client_id(b), "m1", 2, NULL, 0),
                 0);
    cr_assert_eq(broker_send_id(other, broker_client_id(b), "m2", 2, NULL, 0),
                 0);
    cr_assert_eq(broker_send_id(other, broker_client_id(b), "m3", 2, NULL, 0),
                 0);
    want_msgs = 3;
    th_uv_run_until(&loop, msgs_done, &ctx);
    cr_assert_str_eq(ctx.msgs[0], "m1");
    cr_assert_str_eq(ctx.msgs[1], "m2");
    cr_assert_str_eq(ctx.msgs[2], "m3");

    /* A big send does not block: it queues and the loop flushes it
     * (through the socket: shared memory would not queue anything). */
    cr_assert_eq(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    uint8_t *big = malloc(ASYNC_BIG);
    cr_assert_not_null(big);
    th_pattern(big, ASYNC_BIG, 77, 0);
    cr_assert_eq(broker_send(b, "svc.aecho", big, ASYNC_BIG, NULL, 0), 0);
    free(big);                  /* the library keeps its own copy */
    cr_assert_gt(broker_pending(b), 0, "8 MiB cannot all be in the socket");
    want_msgs = 4;
    th_uv_run_until(&loop, msgs_done, &ctx);
    cr_assert_str_eq(ctx.msgs[3], "ok", "peer says the big message was %s",
                     ctx.msgs[3]);
    cr_assert_eq(broker_pending(b), 0);

    /* Shutdown reaches on_disconnect. */
    cr_assert_eq(broker_send(other, "svc.aecho", "quit", 4, NULL, 0), 0);
    th_join(pid);
    int status = th_broker_signal_wait(&br, SIGTERM);
    cr_assert(TH_EXITED(status, 0), "brokerd on SIGTERM: 0x%x", status);
    th_uv_run_until(&loop, disconnected, &ctx);
    cr_assert_eq(ctx.disconnect_err, -ESHUTDOWN, "on_disconnect(%d)",
                 ctx.disconnect_err);

    broker_close(b);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
    broker_close(other);
    broker_close(silent);
    th_barrier_fini(&srv.ready);
}
