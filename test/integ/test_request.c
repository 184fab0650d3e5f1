/*
 * test_request.c - broker_msg_is_request() on every kind of message a
 * real broker delivers (requests by call and by stream, one-way messages,
 * replies, later stream messages, CLOSE, ERROR, publications, GAP,
 * monitor records, shared-memory and chunked messages), and the libuv
 * example contrib/examples/example-uv: run against a real broker, and
 * the same text as in libbroker(3).
 *
 * The tests of suite request_doc need no broker.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifndef TOP_SRCDIR
#error "TOP_SRCDIR must name the source tree"
#endif
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(request, 180);

#define SVC "rq.svc"

/* The next message on b, of kind `kind`, whose is_request must be `want`
 * (checked in the test process or in a child). */
static broker_msg_t *expect(broker_t *b, broker_kind_t kind, bool want,
                            const char *what)
{
    broker_msg_t *m = th_recv(b);

    TH_CHECK(m->kind == kind, "%s: kind %s, want %s", what,
             th_kind_str(m->kind), th_kind_str(kind));
    TH_CHECK(broker_msg_is_request(m) == want,
             "%s: is_request %d (flags 0x%x), want %d", what,
             broker_msg_is_request(m), (unsigned)m->flags, want);
    return m;
}

/* ---- the flags alone (no broker) ------------------------------------------- */

Test(request_doc, flags)
{
    static const struct {
        broker_kind_t kind;
        uint32_t flags;
        bool want;
    } cases[] = {
        { BROKER_MSG_DATA, BROKER_MSGF_OPEN, true },
        { BROKER_MSG_DATA, BROKER_MSGF_OPEN | BROKER_MSGF_SHM, true },
        { BROKER_MSG_DATA, BROKER_MSGF_OPEN | BROKER_MSGF_CHUNK |
                           BROKER_MSGF_LAST, true },
        { BROKER_MSG_DATA, BROKER_MSGF_OPEN | BROKER_MSGF_CLOSE, false },
        { BROKER_MSG_DATA, BROKER_MSGF_CLOSE, false },
        { BROKER_MSG_DATA, 0, false },
        { BROKER_MSG_DATA, BROKER_MSGF_OPEN | BROKER_MSGF_CHUNK, false },
        { BROKER_MSG_DATA, BROKER_MSGF_CHUNK | BROKER_MSGF_LAST, false },
        { BROKER_MSG_DATA, BROKER_MSGF_OPEN | BROKER_MSGF_TOPIC, false },
        { BROKER_MSG_CLOSE, BROKER_MSGF_OPEN, false },
        { BROKER_MSG_ERROR, BROKER_MSGF_OPEN, false },
        { BROKER_MSG_MONITOR, BROKER_MSGF_OPEN, false },
        { BROKER_MSG_GAP, BROKER_MSGF_OPEN, false },
    };

    cr_assert_not(broker_msg_is_request(NULL));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        broker_msg_t m = { .kind = cases[i].kind, .flags = cases[i].flags };

        cr_assert_eq(broker_msg_is_request(&m), cases[i].want,
                     "kind %s flags 0x%x: want %d",
                     th_kind_str(cases[i].kind), (unsigned)cases[i].flags,
                     cases[i].want);
    }
}

/* ---- request and reply by broker_call ------------------------------------- */

/* A child calls SVC; the reply it gets is not a request. */
static int call_child(void *arg)
{
    const th_broker_t *b = arg;
    broker_t *c = th_connect(b);
    broker_msg_t *reply;

    TH_OK(broker_call(c, SVC, "question", 8, &reply, TH_HANG_MS));
    TH_CHECK(reply->kind == BROKER_MSG_DATA, "reply kind %s",
             th_kind_str(reply->kind));
    TH_CHECK(reply->len == 6 && !memcmp(reply->data, "answer", 6),
             "reply %.*s", (int)reply->len, (const char *)reply->data);
    TH_CHECK(!broker_msg_is_request(reply), "a reply is not a request");
    broker_msg_free(reply);
    broker_close(c);
    return 0;
}

Test(request, call_and_reply)
{
    broker_t *svc = th_connect(&br);
    broker_msg_t *m;
    pid_t pid;

    th_register(svc, SVC);
    pid = th_spawn(call_child, &br);
    m = expect(svc, BROKER_MSG_DATA, true, "broker_call's request");
    cr_assert_eq(broker_reply(svc, m, "answer", 6, NULL, 0), 0);
    broker_msg_free(m);
    th_join(pid);
    broker_close(svc);
    th_broker_stop(&br);
}

/* A request that travels in shared memory is a request as well. */
Test(request, call_in_shared_memory)
{
    broker_t *svc = th_connect(&br), *cli = th_connect(&br);
    size_t len = 300 * 1024;
    char *big = calloc(1, len);
    broker_msg_t *m;
    uint32_t sid;

    cr_assert_not_null(big);
    th_register(svc, SVC);
    cr_assert_eq(broker_stream_open(cli, SVC, 0, &sid), 0);
    cr_assert_eq(broker_stream_write(cli, sid, big, len, NULL, 0), 0);
    m = expect(svc, BROKER_MSG_DATA, true, "a request in shared memory");
    cr_assert(m->flags & BROKER_MSGF_SHM, "flags 0x%x", (unsigned)m->flags);
    cr_assert_eq(m->len, len);
    broker_msg_free(m);
    free(big);
    broker_close(cli);
    broker_close(svc);
    th_broker_stop(&br);
}

/* ---- one-way messages, streams, events ---------------------------------------- */

Test(request, one_way)
{
    broker_t *svc = th_connect(&br), *cli = th_connect(&br);
    broker_msg_t *m;

    th_register(svc, SVC);
    cr_assert_eq(broker_send(cli, SVC, "note", 4, NULL, 0), 0);
    broker_msg_free(expect(svc, BROKER_MSG_DATA, false, "one-way by name"));
    cr_assert_eq(broker_send_id(cli, broker_client_id(svc), "note", 4, NULL,
                                0), 0);
    broker_msg_free(expect(svc, BROKER_MSG_DATA, false, "one-way by id"));

    /* to a name nobody owns: an ERROR event */
    cr_assert_eq(broker_send(cli, "rq.nobody", "x", 1, NULL, 0), 0);
    m = expect(cli, BROKER_MSG_ERROR, false, "ERROR for an unknown name");
    cr_assert_eq(m->code, -ENOENT);
    broker_msg_free(m);
    broker_close(cli);
    broker_close(svc);
    th_broker_stop(&br);
}

Test(request, stream_messages)
{
    broker_t *svc = th_connect(&br), *cli = th_connect(&br);
    broker_msg_t *m;
    uint32_t sid, peer;

    th_register(svc, SVC);
    cr_assert_eq(broker_stream_open(cli, SVC, 0, &sid), 0);
    cr_assert_eq(broker_stream_write(cli, sid, "one", 3, NULL, 0), 0);
    cr_assert_eq(broker_stream_write(cli, sid, "two", 3, NULL, 0), 0);
    /* the stream's first message looks like a call's request */
    m = expect(svc, BROKER_MSG_DATA, true, "a stream's first message");
    peer = m->stream;
    broker_msg_free(m);
    broker_msg_free(expect(svc, BROKER_MSG_DATA, false,
                           "a stream's second message"));

    /* answers on the stream, without and with CLOSE */
    cr_assert_eq(broker_stream_write(svc, peer, "back", 4, NULL, 0), 0);
    m = expect(cli, BROKER_MSG_DATA, false, "a message back on our stream");
    cr_assert_eq(m->stream, sid);
    broker_msg_free(m);
    cr_assert_eq(broker_stream_write(cli, sid, "three", 5, NULL, 0), 0);
    m = expect(svc, BROKER_MSG_DATA, false, "a later message");
    cr_assert_eq(broker_reply(svc, m, "done", 4, NULL, 0), 0);
    broker_msg_free(m);
    m = expect(cli, BROKER_MSG_DATA, false, "a reply with CLOSE");
    cr_assert(m->flags & BROKER_MSGF_CLOSE);
    broker_msg_free(m);

    /* a CLOSE event */
    cr_assert_eq(broker_stream_open(cli, SVC, 0, &sid), 0);
    cr_assert_eq(broker_stream_write(cli, sid, "open", 4, NULL, 0), 0);
    broker_msg_free(expect(svc, BROKER_MSG_DATA, true, "a new stream"));
    cr_assert_eq(broker_stream_close(cli, sid), 0);
    broker_msg_free(expect(svc, BROKER_MSG_CLOSE, false, "a CLOSE event"));
    broker_close(cli);
    broker_close(svc);
    th_broker_stop(&br);
}

/* ---- publications, GAP, monitor records ---------------------------------------- */

Test(request, publication_and_monitor)
{
    broker_t *sub = th_connect(&br), *pub = th_connect(&br);
    broker_t *mon = th_connect(&br);
    broker_msg_t *m;
    uint32_t id;

    cr_assert_eq(broker_subscribe(sub, "rq.>", NULL, BROKER_SUB_DROP, &id),
                 0);
    cr_assert_eq(broker_monitor(mon, NULL, 0), 0);
    cr_assert_eq(broker_publish(pub, "rq.topic", "21.5", 4, NULL, 0), 0);
    m = expect(sub, BROKER_MSG_DATA, false, "a publication");
    cr_assert(m->flags & BROKER_MSGF_TOPIC);
    cr_assert_eq(m->sub_id, id);
    broker_msg_free(m);
    broker_msg_free(expect(mon, BROKER_MSG_MONITOR, false,
                           "a monitor record"));
    broker_close(mon);
    broker_close(pub);
    broker_close(sub);
    th_broker_stop(&br);
}

Test(request, gap)
{
    th_broker_restart(&br, "--queue-limit", "16K", NULL);
    broker_t *s = th_connect(&br), *p = th_connect(&br);
    const size_t len = 8192, total = 100;
    char *buf = calloc(1, len);
    bool gap = false;
    uint32_t id;

    cr_assert_not_null(buf);
    cr_assert_eq(broker_subscribe(s, "rq.>", NULL, BROKER_SUB_DROP, &id), 0);
    cr_assert_eq(broker_set_option(p, BROKER_OPT_SHM_THRESHOLD, 0), 0);
    /* s reads nothing meanwhile: its queue overflows */
    for (size_t i = 0; i < total; i++)
        cr_assert_eq(broker_publish(p, "rq.seq", buf, len, NULL, 0), 0);
    cr_assert_eq(broker_ping(p, TH_HANG_MS), 0);
    for (size_t n = 0; n < total && !gap; n++) {
        broker_msg_t *m = th_recv(s);

        cr_assert_not(broker_msg_is_request(m), "kind %s",
                      th_kind_str(m->kind));
        gap = m->kind == BROKER_MSG_GAP;
        broker_msg_free(m);
    }
    cr_assert(gap, "no GAP event came");
    free(buf);
    broker_close(p);
    broker_close(s);
    th_broker_stop(&br);
}

/* ---- chunked mode ------------------------------------------------------------- */

/* Only a message that came in one piece can be judged by itself. */
Test(request, chunked)
{
    broker_t *svc = th_connect(&br), *cli = th_connect(&br);
    size_t big = 200 * 1024;        /* several fragments, below the shm
                                       threshold */
    char *buf = calloc(1, big);
    broker_msg_t *m;
    uint32_t sid;
    size_t got = 0;

    cr_assert_not_null(buf);
    th_register(svc, SVC);
    cr_assert_eq(broker_set_option(svc, BROKER_OPT_MAX_MSG, 16), 0);
    cr_assert_eq(broker_set_option(svc, BROKER_OPT_CHUNKED, 1), 0);

    /* one fragment, so one piece: judged like a whole message */
    cr_assert_eq(broker_stream_open(cli, SVC, 0, &sid), 0);
    cr_assert_eq(broker_stream_write(cli, sid, buf, 100, NULL, 0), 0);
    m = expect(svc, BROKER_MSG_DATA, true, "a request in one piece");
    cr_assert_eq(m->flags & (BROKER_MSGF_CHUNK | BROKER_MSGF_LAST),
                 BROKER_MSGF_CHUNK | BROKER_MSGF_LAST);
    broker_msg_free(m);
    cr_assert_eq(broker_send(cli, SVC, buf, 100, NULL, 0), 0);
    broker_msg_free(expect(svc, BROKER_MSG_DATA, false,
                           "a one-way message in one piece"));

    /* several pieces: none of them alone says whether CLOSE follows */
    cr_assert_eq(broker_stream_open(cli, SVC, 0, &sid), 0);
    cr_assert_eq(broker_stream_write(cli, sid, buf, big, NULL, 0), 0);
    while (got < big) {
        m = expect(svc, BROKER_MSG_DATA, false, "a piece of a request");
        cr_assert(m->flags & BROKER_MSGF_CHUNK, "flags 0x%x",
                  (unsigned)m->flags);
        got += m->len;
        cr_assert_eq(!!(m->flags & BROKER_MSGF_LAST), got == big);
        broker_msg_free(m);
    }
    free(buf);
    broker_close(cli);
    broker_close(svc);
    th_broker_stop(&br);
}

/* ---- the libuv example -------------------------------------------------------- */

/* contrib/examples/example-uv next to $BROKERD in the build tree. */
static void example_uv_path(char *buf, size_t len)
{
    char dir[512];

    snprintf(dir, sizeof(dir), "%s", th_brokerd_path());
    snprintf(buf, len, "%s/contrib/examples/example-uv", dirname(dir));
    cr_assert_eq(access(buf, X_OK), 0, "%s: %s", buf, strerror(errno));
}

Test(request, example_uv)
{
    char prog[600], env[200];
    const char *const envs[] = { env, NULL };
    const char *const argv[] = { prog, "rq.upper", "4", NULL };
    th_output_t o;
    int status;

    example_uv_path(prog, sizeof(prog));
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", br.sock);
    status = th_run(argv, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(status, 0), "status 0x%x, stderr: %s", status,
              o.err);
    cr_assert_str_eq(o.out,
                     "service: note \"hello from the client\" needs no reply\n"
                     "client: reply 1: \"REQUEST 1\"\n"
                     "client: reply 2: \"REQUEST 2\"\n"
                     "client: reply 3: \"REQUEST 3\"\n"
                     "client: reply 4: \"REQUEST 4\"\n"
                     "done: 4 replies\n");
    cr_assert_str_eq(o.err, "");
    th_output_free(&o);
    th_broker_stop(&br);
}

/* A name another client owns: the example says so and exits 1. */
Test(request, example_uv_name_taken)
{
    char prog[600], env[200];
    const char *const envs[] = { env, NULL };
    const char *const argv[] = { prog, "rq.taken", NULL };
    broker_t *owner = th_connect(&br);
    th_output_t o;
    int status;

    th_register(owner, "rq.taken");
    example_uv_path(prog, sizeof(prog));
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", br.sock);
    status = th_run(argv, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(status, 1), "status 0x%x", status);
    cr_assert_str_eq(o.out, "");
    cr_assert_not_null(strstr(o.err, "register rq.taken"), "stderr: %s",
                       o.err);
    th_output_free(&o);
    broker_close(owner);
    th_broker_stop(&br);
}

/* No broker: connect fails, the example says so and exits 1. */
Test(request, example_uv_no_broker)
{
    char prog[600], env[200];
    const char *const envs[] = { env, NULL };
    const char *const argv[] = { prog, NULL };
    th_output_t o;
    int status;

    example_uv_path(prog, sizeof(prog));
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", br.sock);
    th_broker_stop(&br);
    status = th_run(argv, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(status, 1), "status 0x%x", status);
    cr_assert_not_null(strstr(o.err, "connect"), "stderr: %s", o.err);
    th_output_free(&o);
}

/* ---- the example in libbroker(3) ------------------------------------------- */

/* The file under the source tree, NUL-terminated (fails if empty). */
static char *src_file(const char *rel)
{
    char path[1024];
    size_t len;
    char *text;

    snprintf(path, sizeof(path), "%s/%s", TOP_SRCDIR, rel);
    text = th_read_file(path, &len);
    cr_assert_gt(len, 0, "%s is missing or empty", path);
    return text;
}

/* text as an .EX block holds it, between ".EX" and ".EE" lines: a
 * backslash is written \e, '-' as \-, and a line starting with '.' or a
 * quote gets a leading \&. */
static char *roff_ex(const char *text)
{
    char *out = malloc(3 * strlen(text) + sizeof(".EX\n.EE\n")), *o = out;
    bool bol = true;

    cr_assert_not_null(out);
    o = stpcpy(o, ".EX\n");
    for (const char *p = text; *p; p++) {
        if (bol && (*p == '.' || *p == '\''))
            o = stpcpy(o, "\\&");
        if (*p == '\\')
            o = stpcpy(o, "\\e");
        else if (*p == '-')
            o = stpcpy(o, "\\-");
        else
            *o++ = *p;
        bol = *p == '\n';
    }
    stpcpy(o, ".EE\n");
    return out;
}

Test(request_doc, example_uv_in_man_page)
{
    char *c = src_file("contrib/examples/example-uv.c");
    char *man = src_file("man/libbroker.3");
    char *body = strstr(c, "*/\n"), *want;

    cr_assert_not_null(body, "example-uv.c has no first comment");
    want = roff_ex(body + 3);
    cr_assert_not_null(strstr(man, want),
                       "the libuv example in man/libbroker.3 is not "
                       "contrib/examples/example-uv.c after its first "
                       "comment, escaped for an .EX block (\\ as \\e, "
                       "- as \\-, a leading . or ' after \\&)");
    free(want);
    free(man);
    free(c);
}
