/*
 * messaging.c - the commands that send and receive messages (prefix
 * ctl_msg_): send, call and pub (one message, the payload from the
 * command line or stdin), listen and serve --echo (own a name until a
 * signal), sub (one subscription until a signal or --count messages).
 *
 * Owns, per command, its connection and the payload read from stdin;
 * both are released before the command returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "frame.h"
#include "topic.h"

#define CTL_MSG_PREVIEW_MAX 64      /* payload bytes shown by listen */

/* ---- fd I/O ------------------------------------------------------------- */

/* Read all of fd into a new buffer; the caller frees *out. */
static int ctl_msg_read_all(int fd, void **out, size_t *outlen)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);

    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t n;

        if (len == cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return -e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *out = buf;
    *outlen = len;
    return 0;
}

/* ---- send / call -------------------------------------------------------- */

/* The payload of send/call: args[1] as text, or stdin for "-" or none.
 * owned is the buffer read from stdin (NULL for args[1]); free it. */
typedef struct ctl_msg_payload {
    const void *data;
    size_t len;
    void *owned;
} ctl_msg_payload_t;

static int ctl_msg_payload(const ctl_opts_t *o, ctl_msg_payload_t *pl)
{
    pl->owned = NULL;
    if (o->nargs >= 2 && strcmp(o->args[1], "-") != 0) {
        pl->data = o->args[1];
        pl->len = strlen(o->args[1]);
        return 0;
    }
    int r = ctl_msg_read_all(STDIN_FILENO, &pl->owned, &pl->len);
    if (r < 0) {
        ctl_err("reading stdin: %s", broker_strerror(r));
        return r;
    }
    pl->data = pl->owned;
    return 0;
}

/* Take the payload, then connect.  On failure (reported) returns NULL
 * and owns nothing; else the caller closes the connection and frees
 * pl->owned. */
static broker_t *ctl_msg_open(const ctl_opts_t *o, ctl_msg_payload_t *pl)
{
    char path[CTL_PATH_MAX];
    broker_t *b;

    if (ctl_msg_payload(o, pl) < 0)
        return NULL;
    if (!(b = ctl_connect(o, path, sizeof(path))))
        free(pl->owned);
    return b;
}

/* After a one-way send: a ping round trip proves the broker has routed
 * the message; an ERROR event queued before the pong (unknown name, too
 * big, ...) is the send's outcome. */
static int ctl_msg_send_outcome(broker_t *b, int timeout_ms)
{
    broker_msg_t *m = NULL;
    int r = broker_ping(b, timeout_ms);

    if (r < 0)
        return r;
    while (broker_recv(b, &m, 0) == 0) {
        if (m->kind == BROKER_MSG_ERROR && m->code < 0)
            r = m->code;
        broker_msg_free(m);
        m = NULL;
        if (r < 0)
            break;
    }
    return r;
}

/* One one-way message to a name (send) or a topic (pub), then the
 * broker's verdict; `what` starts the error line ("send to", "pub"). */
static int ctl_msg_one_way(const ctl_opts_t *o, bool publish,
                           const char *target, const char *what)
{
    ctl_msg_payload_t pl;
    broker_t *b;
    int r;

    if (!(b = ctl_msg_open(o, &pl)))
        return CTL_EXIT_RUNTIME;
    r = publish ? broker_publish(b, target, pl.data, pl.len, NULL, 0)
                : broker_send(b, target, pl.data, pl.len, NULL, 0);
    if (r == 0)
        r = ctl_msg_send_outcome(b, o->timeout_ms);
    broker_close(b);
    free(pl.owned);
    if (r < 0) {
        ctl_err("%s '%s': %s", what, target, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

int ctl_run_send(const ctl_opts_t *o)
{
    return ctl_msg_one_way(o, false, o->args[0], "send to");
}

int ctl_run_call(const ctl_opts_t *o)
{
    const char *name = o->args[0];
    broker_msg_t *reply = NULL;
    ctl_msg_payload_t pl;
    broker_t *b;
    int r;

    if (!(b = ctl_msg_open(o, &pl)))
        return CTL_EXIT_RUNTIME;
    r = broker_call(b, name, pl.data, pl.len, &reply, o->timeout_ms);
    free(pl.owned);
    if (r < 0) {
        ctl_err("call '%s': %s", name, broker_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_write_all(STDOUT_FILENO, reply->data, reply->len);
    broker_msg_free(reply);
    broker_close(b);
    if (r < 0) {
        ctl_err("writing reply: %s", broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

/* ---- listen / serve ----------------------------------------------------- */

/* Printable text of at most max bytes of p: ASCII graphic bytes and
 * spaces as is, the rest escaped, "..." when cut. */
static void ctl_msg_escape(FILE *f, const unsigned char *p, size_t len,
                           size_t max)
{
    size_t n = len < max ? len : max;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        switch (c) {
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c >= 0x20 && c < 0x7f)
                fputc(c, f);
            else
                fprintf(f, "\\x%02x", c);
        }
    }
    if (n < len)
        fputs("...", f);
}

static int ctl_msg_listen_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    (void)ctx;
    switch (m->kind) {
    case BROKER_MSG_DATA:
        printf("[%" PRIu64 "] stream=%" PRIu32 " len=%zu: ", m->source,
               m->stream, m->len);
        ctl_msg_escape(stdout, m->data, m->len, CTL_MSG_PREVIEW_MAX);
        putchar('\n');
        if (fflush(stdout) == EOF)
            return -errno;
        /* A request cannot be answered by a listener: close its stream so
         * the caller is not left waiting. */
        if ((m->flags & BROKER_MSGF_OPEN) && !(m->flags & BROKER_MSGF_CLOSE))
            (void)broker_stream_close(b, m->stream);
        return 0;
    case BROKER_MSG_ERROR:
        ctl_err("stream %" PRIu32 ": %s: %.*s", m->stream,
                broker_strerror(m->code),
                (int)(m->len > INT_MAX ? INT_MAX : m->len),
                m->data ? (const char *)m->data : "");
        return 0;
    default:
        return 0;       /* CLOSE events of one-way streams */
    }
}

static int ctl_msg_echo_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    int r;

    (void)ctx;
    if (m->kind != BROKER_MSG_DATA || !(m->flags & BROKER_MSGF_OPEN) ||
        (m->flags & BROKER_MSGF_CLOSE))
        return 0;       /* one-way messages and events are ignored */
    r = broker_reply(b, m, m->data, m->len, NULL, 0);
    /* The caller may have given up (closed stream, gone): not fatal. */
    if (r < 0 && r != -ENOENT && r != -ECONNRESET && r != -EPIPE)
        return r;
    return 0;
}

/* Own NAME and hand every message to `handle` until a signal or BYE. */
static int ctl_msg_own_and_loop(const ctl_opts_t *o, const char *verb,
                                ctl_handle_fn handle)
{
    char path[CTL_PATH_MAX];
    const char *name = o->args[0];
    broker_t *b;
    int r;

    if (!(b = ctl_start(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = o->reg_flags ? broker_register_flags(b, name, o->reg_flags)
                     : broker_register(b, name);
    if (r < 0) {
        ctl_err("register '%s': %s", name, r == -EEXIST ?
                "the name is taken (--queue waits for it)" :
                broker_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    if (r == BROKER_NAME_QUEUED)
        fprintf(stderr, "brokerctl: '%s' is taken: waiting in line\n",
                name);
    r = ctl_event_loop(b, handle, NULL);
    broker_close(b);
    if (r < 0) {
        ctl_err("%s '%s': %s", verb, name, r == -ECONNRESET ?
                "lost the connection to brokerd" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

int ctl_run_listen(const ctl_opts_t *o)
{
    return ctl_msg_own_and_loop(o, "listen", ctl_msg_listen_one);
}

int ctl_run_serve(const ctl_opts_t *o)
{
    if (!o->echo)
        return ctl_usage_error("serve needs a mode: --echo");
    return ctl_msg_own_and_loop(o, "serve", ctl_msg_echo_one);
}

/* ---- pub / sub ---------------------------------------------------------- */

int ctl_run_pub(const ctl_opts_t *o)
{
    const char *topic = o->args[0];

    if (strlen(topic) > BK_MAX_TOPIC || !bk_topic_valid(topic, strlen(topic)))
        return ctl_usage_error("invalid topic '%s' ('.'-separated tokens "
                               "of printable characters, no '*' or '>')",
                               topic);
    return ctl_msg_one_way(o, true, topic, "pub");
}

/* What sub's handler needs: the options and the messages so far. */
typedef struct ctl_msg_sub {
    const ctl_opts_t *o;
    long received;
} ctl_msg_sub_t;

static int ctl_msg_sub_print(const ctl_opts_t *o, const broker_msg_t *m)
{
    if (o->raw) {
        if (m->len && fwrite(m->data, 1, m->len, stdout) != m->len)
            return -EIO;
        putchar('\n');
    } else {
        printf("%s ", m->topic);
        ctl_msg_escape(stdout, m->data, m->len, SIZE_MAX);
        putchar('\n');
    }
    return fflush(stdout) == EOF ? -errno : 0;
}

static int ctl_msg_sub_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    ctl_msg_sub_t *s = ctx;
    int r;

    (void)b;
    switch (m->kind) {
    case BROKER_MSG_DATA:
        if (!(m->flags & BROKER_MSGF_TOPIC))
            return 0;   /* not a publication: not ours to print */
        if ((r = ctl_msg_sub_print(s->o, m)) < 0)
            return r;
        return s->o->count && ++s->received >= s->o->count ? CTL_LOOP_DONE
                                                           : 0;
    case BROKER_MSG_GAP:
        /* with --raw stdout holds payloads only */
        fprintf(s->o->raw ? stderr : stdout,
                "gap: %" PRIu64 " messages missed on subscription %"
                PRIu32 "\n", m->gap, m->sub_id);
        return fflush(stdout) == EOF ? -errno : 0;
    case BROKER_MSG_ERROR:
        ctl_err("stream %" PRIu32 ": %s: %.*s", m->stream,
                broker_strerror(m->code),
                (int)(m->len > INT_MAX ? INT_MAX : m->len),
                m->data ? (const char *)m->data : "");
        return 0;
    default:
        return 0;
    }
}

int ctl_run_sub(const ctl_opts_t *o)
{
    const char *pattern = o->args[0];
    ctl_msg_sub_t s = { .o = o };
    char path[CTL_PATH_MAX];
    uint32_t id;
    broker_t *b;
    int r;

    if (strlen(pattern) > BK_MAX_TOPIC ||
        !bk_topic_pattern_valid(pattern, strlen(pattern)))
        return ctl_usage_error("invalid pattern '%s' ('.'-separated tokens; "
                               "'*' is one token, '>' the last ones)",
                               pattern);
    if (o->group && !bk_name_valid(o->group, strlen(o->group), BK_MAX_NAME))
        return ctl_usage_error("invalid --group '%s' (a name: letters, "
                               "digits and . _ - : /)", o->group);
    if (!(b = ctl_start(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_subscribe(b, pattern, o->group,
                         (broker_sub_policy_t)o->policy, &id);
    if (r < 0) {
        ctl_err("subscribe '%s': %s", pattern, broker_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_event_loop(b, ctl_msg_sub_one, &s);
    broker_close(b);
    if (r < 0) {
        ctl_err("sub '%s': %s", pattern, r == -ECONNRESET ?
                "lost the connection to brokerd" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}
