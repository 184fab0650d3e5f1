/*
 * messaging.c - the commands that send and receive messages (prefix
 * ctl_msg_): send, call and pub (one message, the payload from the
 * command line or stdin, to a name, a client id ":ID" or a topic),
 * listen and serve --echo/--exec (own a name until a signal or, listen,
 * --count messages), sub (one subscription until a signal or --count
 * messages).
 *
 * Owns, per command, its connection and the payload read from stdin;
 * both are released before the command returns.  serve --exec owns one
 * child process at a time (and its two pipes), waited for or killed
 * before the next request is read.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

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

/* ---- destinations --------------------------------------------------------- */

/* Where send and call go: a name, or a client id written ":ID" (names
 * never begin with ':'). */
typedef struct ctl_msg_dest {
    const char *name;       /* NULL for a client id */
    uint64_t id;
} ctl_msg_dest_t;

/* s as a destination.  0 or -EINVAL (not a name, not ":ID"). */
static int ctl_msg_parse_dest(const char *s, ctl_msg_dest_t *d)
{
    unsigned long long v;
    char *end;

    d->name = NULL;
    d->id = 0;
    if (s[0] != ':') {
        if (!bk_name_valid(s, strlen(s), BK_MAX_NAME))
            return -EINVAL;
        d->name = s;
        return 0;
    }
    errno = 0;
    if (s[1] < '1' || s[1] > '9')
        return -EINVAL;
    v = strtoull(s + 1, &end, 10);
    if (errno || *end)
        return -EINVAL;
    d->id = (uint64_t)v;
    return 0;
}

/* A bad name is a usage error; returns CTL_EXIT_USAGE after saying so. */
static int ctl_msg_bad_name(const char *s, bool id_too)
{
    return ctl_usage_error("invalid name '%s' (1 to %d letters, digits and "
                           ". _ - : /, not starting with ':'%s)", s,
                           BK_MAX_NAME, id_too ? "; or :ID for client ID"
                                               : "");
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

/* One one-way message to a destination (send; dest) or a topic (pub;
 * dest NULL), then the broker's verdict; `what` starts the error line
 * ("send to", "pub"). */
static int ctl_msg_one_way(const ctl_opts_t *o, const ctl_msg_dest_t *dest,
                           const char *target, const char *what)
{
    ctl_msg_payload_t pl;
    broker_t *b;
    int r;

    if (!(b = ctl_msg_open(o, &pl)))
        return CTL_EXIT_RUNTIME;
    if (!dest)
        r = broker_publish(b, target, pl.data, pl.len, NULL, 0);
    else if (dest->name)
        r = broker_send(b, dest->name, pl.data, pl.len, NULL, 0);
    else
        r = broker_send_id(b, dest->id, pl.data, pl.len, NULL, 0);
    if (r == 0)
        r = ctl_msg_send_outcome(b, o->timeout_ms);
    broker_close(b);
    free(pl.owned);
    if (r < 0) {
        ctl_err("%s '%s': %s", what, target, r == -ENOENT && dest &&
                !dest->name ? "no such client" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

int ctl_run_send(const ctl_opts_t *o)
{
    ctl_msg_dest_t d;

    if (ctl_msg_parse_dest(o->args[0], &d) < 0)
        return ctl_msg_bad_name(o->args[0], true);
    return ctl_msg_one_way(o, &d, o->args[0], "send to");
}

/* What call says when the request failed with r. */
static const char *ctl_msg_call_why(const ctl_msg_dest_t *d, int r)
{
    if (r == -ENOENT)
        return d->name ? "nobody owns the name" : "no such client";
    if (r == -EREMOTEIO)
        return "the service failed to answer (remote I/O error)";
    return broker_strerror(r);
}

int ctl_run_call(const ctl_opts_t *o)
{
    broker_msg_t *reply = NULL;
    ctl_msg_payload_t pl;
    ctl_msg_dest_t d;
    broker_t *b;
    int r;

    if (ctl_msg_parse_dest(o->args[0], &d) < 0)
        return ctl_msg_bad_name(o->args[0], true);
    if (!(b = ctl_msg_open(o, &pl)))
        return CTL_EXIT_RUNTIME;
    r = d.name ? broker_call(b, d.name, pl.data, pl.len, &reply,
                             o->timeout_ms)
               : broker_call_id(b, d.id, pl.data, pl.len, &reply,
                                o->timeout_ms);
    free(pl.owned);
    if (r < 0) {
        ctl_err("call '%s': %s", o->args[0], ctl_msg_call_why(&d, r));
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

/* What the receiving commands' handlers share: the options and the
 * messages printed so far (for --count). */
typedef struct ctl_msg_recv {
    const ctl_opts_t *o;
    long received;
} ctl_msg_recv_t;

/* --timestamps: the local time of day with microseconds and a space,
 * "HH:MM:SS.uuuuuu ", before a message's line. */
static void ctl_msg_stamp(const ctl_opts_t *o)
{
    struct timespec ts;
    struct tm tm;

    if (!o->timestamps)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    printf("%02d:%02d:%02d.%06ld ", tm.tm_hour, tm.tm_min, tm.tm_sec,
           ts.tv_nsec / 1000);
}

/* --raw: the payload as it is and a newline, nothing else. */
static int ctl_msg_raw(const broker_msg_t *m)
{
    if (m->len && fwrite(m->data, 1, m->len, stdout) != m->len)
        return -EIO;
    putchar('\n');
    return 0;
}

/* After a message is printed: flush, and CTL_LOOP_DONE once --count
 * messages were. */
static int ctl_msg_printed(ctl_msg_recv_t *rc)
{
    if (fflush(stdout) == EOF)
        return -errno;
    return rc->o->count && ++rc->received >= rc->o->count ? CTL_LOOP_DONE
                                                          : 0;
}

static void ctl_msg_stream_error(const broker_msg_t *m)
{
    ctl_err("stream %" PRIu32 ": %s: %.*s", m->stream,
            broker_strerror(m->code),
            (int)(m->len > INT_MAX ? INT_MAX : m->len),
            m->data ? (const char *)m->data : "");
}

static int ctl_msg_listen_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    ctl_msg_recv_t *rc = ctx;
    int r = 0;

    switch (m->kind) {
    case BROKER_MSG_DATA:
        if (rc->o->raw) {
            r = ctl_msg_raw(m);
        } else {
            ctl_msg_stamp(rc->o);
            printf("[%" PRIu64 "] stream=%" PRIu32 " len=%zu: ", m->source,
                   m->stream, m->len);
            ctl_msg_escape(stdout, m->data, m->len, CTL_MSG_PREVIEW_MAX);
            putchar('\n');
        }
        /* A request cannot be answered by a listener: close its stream so
         * the caller is not left waiting. */
        if (broker_msg_is_request(m))
            (void)broker_stream_close(b, m->stream);
        return r < 0 ? r : ctl_msg_printed(rc);
    case BROKER_MSG_ERROR:
        ctl_msg_stream_error(m);
        return 0;
    default:
        return 0;       /* CLOSE events of one-way streams */
    }
}

static int ctl_msg_echo_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    int r;

    (void)ctx;
    if (!broker_msg_is_request(m))
        return 0;       /* one-way messages and events are ignored */
    r = broker_reply(b, m, m->data, m->len, NULL, 0);
    /* The caller may have given up (closed stream, gone): not fatal. */
    if (r < 0 && r != -ENOENT && r != -ECONNRESET && r != -EPIPE)
        return r;
    return 0;
}

/* ---- serve --exec ---------------------------------------------------------- */

/* What serve --exec's handler needs. */
typedef struct ctl_msg_exec {
    const ctl_opts_t *o;
} ctl_msg_exec_t;

/* The command's output so far: buf[0..len) of cap bytes (ours to free),
 * at most max. */
typedef struct ctl_msg_out {
    char *buf;
    size_t len, cap, max;
} ctl_msg_out_t;

/* Run `sh -c cmd` in a process group of its own, its stdin and stdout
 * pipes (non-blocking, close-on-exec) in *in and *out.  Returns its pid or
 * a negative errno (nothing left open). */
static pid_t ctl_msg_exec_spawn(const char *cmd, int *in, int *out)
{
    int pin[2], pout[2];
    pid_t pid;

    if (pipe2(pin, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(pout, O_CLOEXEC) < 0) {
        int e = errno;
        close(pin[0]);
        close(pin[1]);
        return -e;
    }
    if ((pid = fork()) == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        if (dup2(pin[0], STDIN_FILENO) < 0 || dup2(pout[1], STDOUT_FILENO) < 0)
            _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    if (pid < 0) {
        int e = errno;
        close(pin[1]);
        close(pout[0]);
        return -e;
    }
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    *in = pin[1];
    *out = pout[0];
    return pid;
}

/* Read what out has into o.  1 at end of file, 0 to go on, or a negative
 * errno (-EMSGSIZE: more than o->max). */
static int ctl_msg_exec_read(int fd, ctl_msg_out_t *o)
{
    for (;;) {
        ssize_t n;

        if (o->len == o->cap) {
            size_t cap = o->cap ? o->cap * 2 : 4096;
            char *nb;

            if (o->cap > o->max)
                return -EMSGSIZE;
            if (!(nb = realloc(o->buf, cap)))
                return -ENOMEM;
            o->buf = nb;
            o->cap = cap;
        }
        n = read(fd, o->buf + o->len, o->cap - o->len);
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == EAGAIN ? 0 : errno == EINTR ? 0 : -errno;
        o->len += (size_t)n;
        if (o->len > o->max)
            return -EMSGSIZE;
    }
}

/* Milliseconds until deadline_ns (0: none) for poll(), at least 0. */
static int ctl_msg_poll_ms(uint64_t deadline_ns)
{
    uint64_t now = ctl_now_ns();

    if (!deadline_ns)
        return -1;
    if (now >= deadline_ns)
        return 0;
    return (int)((deadline_ns - now + 999999) / 1000000);
}

/* Feed data[0..len) to the command's stdin (*in, closed here once all is
 * written or the command stops reading) while reading its stdout into o,
 * until end of file on stdout.  0, or -ETIMEDOUT, -ECANCELED (a signal
 * for brokerctl) or another negative errno. */
static int ctl_msg_exec_pump(int *in, int out, const void *data, size_t len,
                             uint64_t deadline_ns, ctl_msg_out_t *o)
{
    size_t off = 0;

    for (;;) {
        struct pollfd p[2] = { { .fd = out, .events = POLLIN },
                               { .fd = *in, .events = POLLOUT } };
        int n, r;

        if (*in >= 0 && off == len) {
            close(*in);
            *in = -1;
            p[1].fd = -1;
        }
        n = poll(p, 2, ctl_msg_poll_ms(deadline_ns));
        if (ctl_stopped())
            return -ECANCELED;
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n == 0)
            return -ETIMEDOUT;
        if (p[1].revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = write(*in, (const char *)data + off, len - off);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                off = len;      /* it stopped reading: the rest is moot */
        }
        if (p[0].revents && (r = ctl_msg_exec_read(out, o)) != 0)
            return r < 0 ? r : 0;
    }
}

/* Wait for the command, at most until deadline_ns (then it is killed).
 * Returns its wait status, or -ETIMEDOUT (killed) or -errno. */
static int ctl_msg_exec_reap(pid_t pid, uint64_t deadline_ns, bool kill_it)
{
    unsigned us = 1000;
    int st;

    for (;;) {
        pid_t w = kill_it ? 0 : waitpid(pid, &st, WNOHANG);

        if (w == pid)
            return st;
        if (w < 0 && errno != EINTR)
            return -errno;
        if (kill_it || (deadline_ns && ctl_now_ns() >= deadline_ns) ||
            ctl_stopped()) {
            kill(-pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            return -ETIMEDOUT;
        }
        /* stdout is closed, the command is about to exit: brief naps */
        usleep(us);
        us = us < 50000 ? us * 2 : us;
    }
}

/* Run the command for one request.  0 with its output in *o, or the error
 * to reply with: -EREMOTEIO (it failed: non-zero exit, killed by a
 * signal), -ETIMEDOUT (still running after --timeout), -EMSGSIZE (more
 * output than a message may hold), another negative errno (it could not
 * run). */
static int ctl_msg_exec_run(const ctl_msg_exec_t *ex, broker_t *b,
                            const broker_msg_t *m, ctl_msg_out_t *o)
{
    uint64_t deadline = ex->o->timeout_ms < 0 ? 0 : ctl_now_ns() +
                        (uint64_t)ex->o->timeout_ms * 1000000u;
    int in = -1, out = -1, r, st;
    pid_t pid = ctl_msg_exec_spawn(ex->o->exec, &in, &out);

    if (pid < 0)
        return pid;
    o->max = broker_limits(b)->max_msg;
    r = ctl_msg_exec_pump(&in, out, m->data, m->len, deadline, o);
    if (in >= 0)
        close(in);
    close(out);
    st = ctl_msg_exec_reap(pid, deadline, r < 0);
    if (r < 0)
        return r;
    if (st < 0)
        return st;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFEXITED(st))
            ctl_err("serve: request from %" PRIu64 ": '%s' exited with "
                    "status %d", m->source, ex->o->exec, WEXITSTATUS(st));
        else
            ctl_err("serve: request from %" PRIu64 ": '%s' killed by "
                    "signal %d", m->source, ex->o->exec, WTERMSIG(st));
        return -EREMOTEIO;
    }
    return 0;
}

static int ctl_msg_exec_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    ctl_msg_out_t out = { 0 };
    int r;

    if (!broker_msg_is_request(m))
        return 0;       /* one-way messages and events are ignored */
    r = ctl_msg_exec_run(ctx, b, m, &out);
    /* -EREMOTEIO was explained; -ECANCELED: brokerctl is stopping */
    if (r == -ETIMEDOUT)
        ctl_err("serve: request from %" PRIu64 ": '%s' still ran after "
                "%d ms: killed", m->source, ((ctl_msg_exec_t *)ctx)->o->exec,
                ((ctl_msg_exec_t *)ctx)->o->timeout_ms);
    else if (r < 0 && r != -EREMOTEIO && r != -ECANCELED)
        ctl_err("serve: request from %" PRIu64 ": %s", m->source,
                broker_strerror(r));
    r = r < 0 ? broker_reply_error(b, m, r)
              : broker_reply(b, m, out.buf, out.len, NULL, 0);
    free(out.buf);
    /* The caller may have given up (closed stream, gone): not fatal. */
    if (r < 0 && r != -ENOENT && r != -ECONNRESET && r != -EPIPE)
        return r;
    return 0;
}

/* ctl_start, then BROKER_OPT_RECONNECT with --reconnect (before the
 * name or subscription, so the library restores them). */
static broker_t *ctl_msg_start(const ctl_opts_t *o, char *path, size_t len)
{
    broker_t *b = ctl_start(o, path, len);
    int r;

    if (b && o->reconnect &&
        (r = broker_set_option(b, BROKER_OPT_RECONNECT, 1)) < 0) {
        ctl_err("--reconnect: %s", broker_strerror(r));
        broker_close(b);
        return NULL;
    }
    return b;
}

/* Own NAME and hand every message to `handle` (with ctx) until a signal,
 * BYE or the handler's CTL_LOOP_DONE. */
static int ctl_msg_own_and_loop(const ctl_opts_t *o, const char *verb,
                                ctl_handle_fn handle, void *ctx)
{
    char path[CTL_PATH_MAX];
    const char *name = o->args[0];
    broker_t *b;
    int r;

    if (!(b = ctl_msg_start(o, path, sizeof(path))))
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
    r = ctl_event_loop(b, handle, ctx);
    broker_close(b);
    if (r < 0) {
        ctl_err("%s '%s': %s", verb, name, r == -ECONNRESET ?
                "lost the connection to brokerd" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

/* --raw and --timestamps: both would write to stdout. */
static int ctl_msg_check_recv_opts(const ctl_opts_t *o)
{
    if (o->raw && o->timestamps)
        return ctl_usage_error("options '--raw' and '--timestamps' exclude "
                               "each other");
    return 0;
}

int ctl_run_listen(const ctl_opts_t *o)
{
    ctl_msg_recv_t rc = { .o = o };

    if (!bk_name_valid(o->args[0], strlen(o->args[0]), BK_MAX_NAME))
        return ctl_msg_bad_name(o->args[0], false);
    if (ctl_msg_check_recv_opts(o))
        return CTL_EXIT_USAGE;
    return ctl_msg_own_and_loop(o, "listen", ctl_msg_listen_one, &rc);
}

int ctl_run_serve(const ctl_opts_t *o)
{
    ctl_msg_exec_t ex = { .o = o };

    if (!o->echo == !o->exec)
        return ctl_usage_error("serve needs one mode: --echo or --exec CMD");
    if (!bk_name_valid(o->args[0], strlen(o->args[0]), BK_MAX_NAME))
        return ctl_msg_bad_name(o->args[0], false);
    if (o->echo)
        return ctl_msg_own_and_loop(o, "serve", ctl_msg_echo_one, NULL);
    /* a command that does not read its stdin must not kill serve */
    signal(SIGPIPE, SIG_IGN);
    return ctl_msg_own_and_loop(o, "serve", ctl_msg_exec_one, &ex);
}

/* ---- pub / sub ---------------------------------------------------------- */

int ctl_run_pub(const ctl_opts_t *o)
{
    const char *topic = o->args[0];

    if (strlen(topic) > BK_MAX_TOPIC || !bk_topic_valid(topic, strlen(topic)))
        return ctl_usage_error("invalid topic '%s' ('.'-separated tokens "
                               "of printable characters, no '*' or '>')",
                               topic);
    return ctl_msg_one_way(o, NULL, topic, "pub");
}

static int ctl_msg_sub_print(const ctl_opts_t *o, const broker_msg_t *m)
{
    if (o->raw)
        return ctl_msg_raw(m);
    ctl_msg_stamp(o);
    printf("%s ", m->topic);
    ctl_msg_escape(stdout, m->data, m->len, SIZE_MAX);
    putchar('\n');
    return 0;
}

static int ctl_msg_sub_one(broker_t *b, broker_msg_t *m, void *ctx)
{
    ctl_msg_recv_t *s = ctx;
    int r;

    (void)b;
    switch (m->kind) {
    case BROKER_MSG_DATA:
        if (!(m->flags & BROKER_MSGF_TOPIC))
            return 0;   /* not a publication: not ours to print */
        if ((r = ctl_msg_sub_print(s->o, m)) < 0)
            return r;
        return ctl_msg_printed(s);
    case BROKER_MSG_GAP:
        /* with --raw stdout holds payloads only */
        fprintf(s->o->raw ? stderr : stdout,
                "gap: %" PRIu64 " messages missed on subscription %"
                PRIu32 "\n", m->gap, m->sub_id);
        return fflush(stdout) == EOF ? -errno : 0;
    case BROKER_MSG_ERROR:
        ctl_msg_stream_error(m);
        return 0;
    default:
        return 0;
    }
}

int ctl_run_sub(const ctl_opts_t *o)
{
    const char *pattern = o->args[0];
    ctl_msg_recv_t s = { .o = o };
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
    if (ctl_msg_check_recv_opts(o))
        return CTL_EXIT_USAGE;
    if (!(b = ctl_msg_start(o, path, sizeof(path))))
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
