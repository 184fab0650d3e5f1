/*
 * example-uv.c - a libbroker service and a client on one libuv loop.
 *
 * Two connections in one process, both attached to the same loop.  The
 * service owns NAME (default "example.upper") and answers every request
 * with its text in capitals; a message that needs no answer is only
 * printed.  The client sends the service a one-way note, then COUNT
 * requests (default 3) with broker_call_async, one at a time: each reply
 * callback prints the reply and sends the next request.  After the last
 * reply it closes both connections, and uv_run returns once libuv has
 * released their handles.  Exit status 0 if every reply came back right.
 *
 *   cc -o example-uv example-uv.c \
 *       $(pkg-config --cflags --libs libbroker libuv)
 *   ./example-uv [NAME [COUNT]]       (socket: $BROKER_SOCKET or the default)
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <broker.h>

#define CALL_TIMEOUT_MS 5000

struct app {
    const char *name;
    broker_t *service;          /* NULL once closed */
    broker_t *client;
    int count;                  /* requests to make */
    int replies;                /* correct replies so far */
    int status;                 /* the exit status */
};

/* Close both connections (from any callback: libbroker allows it). */
static void finish(struct app *app, int status)
{
    if (status)
        app->status = status;
    broker_close(app->client);
    broker_close(app->service);
    app->client = app->service = NULL;
}

/* ---- the service ----------------------------------------------------- */

/* Reply to req with its text in capitals.  req->data may be a read-only
 * view of the sender's shared memory: work on a copy. */
static int reply_upper(broker_t *b, const broker_msg_t *req)
{
    const unsigned char *in = req->data;
    char *out = malloc(req->len + 1);
    int r;

    if (!out)
        return -ENOMEM;
    for (size_t i = 0; i < req->len; i++)
        out[i] = (char)toupper(in[i]);
    r = broker_reply(b, req, out, req->len, NULL, 0);
    free(out);
    return r;
}

static void service_message(broker_t *b, broker_msg_t *msg, void *userdata)
{
    struct app *app = userdata;
    int r = 0;

    if (broker_msg_is_request(msg)) {
        r = reply_upper(b, msg);            /* queued: never blocks */
    } else if (msg->kind == BROKER_MSG_DATA) {
        printf("service: note \"%.*s\" needs no reply\n", (int)msg->len,
               (const char *)msg->data);
    } else if (msg->kind == BROKER_MSG_ERROR) {
        fprintf(stderr, "example-uv: service: stream %u: %s\n",
                (unsigned)msg->stream, broker_strerror(msg->code));
    }
    broker_msg_free(msg);
    /* -ENOENT: the caller gave up before the reply; not our failure */
    if (r < 0 && r != -ENOENT) {
        fprintf(stderr, "example-uv: reply: %s\n", broker_strerror(r));
        finish(app, 1);
    }
}

/* ---- the client ------------------------------------------------------ */

static int call_next(struct app *app);

static void client_reply(broker_t *b, int err, broker_msg_t *reply,
                         void *userdata)
{
    struct app *app = userdata;
    char want[32];
    int n = app->replies + 1;

    (void)b;
    if (err == -ECANCELED)      /* broker_close ran first: nothing to do */
        return;
    if (err < 0) {
        fprintf(stderr, "example-uv: call %d to %s: %s\n", n, app->name,
                broker_strerror(err));
        finish(app, 1);
        return;
    }
    printf("client: reply %d: \"%.*s\"\n", n, (int)reply->len,
           (const char *)reply->data);
    snprintf(want, sizeof(want), "REQUEST %d", n);
    if (reply->len != strlen(want) || memcmp(reply->data, want, reply->len))
        app->status = 1;
    broker_msg_free(reply);
    app->replies = n;
    if (n == app->count) {
        printf("done: %d replies\n", n);
        finish(app, 0);
    } else if (call_next(app) < 0) {
        finish(app, 1);
    }
}

/* The next request; its reply arrives in client_reply. */
static int call_next(struct app *app)
{
    char text[32];
    int len = snprintf(text, sizeof(text), "request %d", app->replies + 1);
    int r = broker_call_async(app->client, app->name, text, (size_t)len,
                              CALL_TIMEOUT_MS, client_reply, app);

    if (r < 0)
        fprintf(stderr, "example-uv: call: %s\n", broker_strerror(r));
    return r;
}

/* The client gets no messages other than replies, which go to
 * client_reply; anything else (an ERROR event) is only reported. */
static void client_message(broker_t *b, broker_msg_t *msg, void *userdata)
{
    (void)b;
    (void)userdata;
    if (msg->kind == BROKER_MSG_ERROR)
        fprintf(stderr, "example-uv: client: stream %u: %s\n",
                (unsigned)msg->stream, broker_strerror(msg->code));
    broker_msg_free(msg);
}

/* Either connection failed (the broker went away): end both. */
static void on_disconnect(broker_t *b, int err, void *userdata)
{
    (void)b;
    fprintf(stderr, "example-uv: disconnected: %s\n", broker_strerror(err));
    finish(userdata, 1);
}

/* ---- main ------------------------------------------------------------ */

static int connect_attached(uv_loop_t *loop, const broker_callbacks_t *cbs,
                            struct app *app, broker_t **out)
{
    int r = broker_connect(NULL, out);

    if (r == 0) {
        r = broker_attach(*out, loop, cbs, app);
        if (r < 0) {
            broker_close(*out);
            *out = NULL;
        }
    }
    if (r < 0)
        fprintf(stderr, "example-uv: connect: %s\n", broker_strerror(r));
    return r;
}

/* Both connections, the service's name, and the first messages. */
static int start(uv_loop_t *loop, struct app *app)
{
    static const broker_callbacks_t service_cbs = {
        .on_message = service_message, .on_disconnect = on_disconnect,
    };
    static const broker_callbacks_t client_cbs = {
        .on_message = client_message, .on_disconnect = on_disconnect,
    };
    static const char note[] = "hello from the client";
    int r = connect_attached(loop, &service_cbs, app, &app->service);

    if (r < 0)
        return r;
    /* Waits for the broker (blocking the loop thread): fine here, before
     * the loop runs. */
    r = broker_register(app->service, app->name);
    if (r < 0) {
        fprintf(stderr, "example-uv: register %s: %s\n", app->name,
                broker_strerror(r));
        return r;
    }
    r = connect_attached(loop, &client_cbs, app, &app->client);
    if (r < 0)
        return r;
    /* Queued; the loop writes it with the first request in one packet. */
    r = broker_send(app->client, app->name, note, strlen(note), NULL, 0);
    if (r < 0) {
        fprintf(stderr, "example-uv: send: %s\n", broker_strerror(r));
        return r;
    }
    return call_next(app);
}

int main(int argc, char **argv)
{
    struct app app = {
        .name = argc > 1 ? argv[1] : "example.upper",
        .count = argc > 2 ? atoi(argv[2]) : 3,
    };
    uv_loop_t loop;
    int r;

    if (app.count < 1) {
        fprintf(stderr, "usage: example-uv [NAME [COUNT]] (COUNT >= 1)\n");
        return 2;
    }
    r = uv_loop_init(&loop);
    if (r < 0) {
        fprintf(stderr, "example-uv: %s\n", uv_strerror(r));
        return 1;
    }
    if (start(&loop, &app) < 0)
        finish(&app, 1);
    /* Runs until both connections are closed and their handles gone. */
    uv_run(&loop, UV_RUN_DEFAULT);
    r = uv_loop_close(&loop);
    if (r < 0) {
        fprintf(stderr, "example-uv: loop: %s\n", uv_strerror(r));
        return 1;
    }
    return app.status;
}
