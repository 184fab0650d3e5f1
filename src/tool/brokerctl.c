/*
 * brokerctl.c - operator tool for brokerd (prefix ctl_).
 *
 * Uses only the public API of libbroker (include/broker.h).
 *
 * Exit codes: 0 success, 1 runtime error (one line on stderr), 2 usage
 * error (one line on stderr with a hint to --help).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "broker.h"

#ifdef BROKER_VERSION
#define CTL_VERSION BROKER_VERSION
#else
#define CTL_VERSION BROKER_VERSION_STRING
#endif

#define CTL_EXIT_OK      0
#define CTL_EXIT_RUNTIME 1
#define CTL_EXIT_USAGE   2

#define CTL_DEF_TIMEOUT_MS 10000   /* ping, call, send's check */
#define CTL_PREVIEW_MAX    64      /* payload bytes shown by listen */
#define CTL_PATH_MAX       512

/* Parsed command line. */
typedef struct ctl_opts {
    const char *socket;     /* -s PATH, or NULL for the default path */
    int timeout_ms;         /* -1 = wait forever */
    bool json;              /* status --json */
    bool echo;              /* serve --echo */
    const char *cmd;
    char **args;            /* positional arguments after the command */
    int nargs;
} ctl_opts_t;

/* Options that belong to one command (-s and --timeout are accepted
 * before or after any command). */
enum {
    CTL_ACCEPT_JSON = 0x1,
    CTL_ACCEPT_ECHO = 0x2,
};

typedef struct ctl_cmd {
    const char *name;
    int min_args, max_args;
    unsigned accepts;
    int (*run)(const ctl_opts_t *o);
} ctl_cmd_t;

enum { CTL_OPT_TIMEOUT = 0x100, CTL_OPT_JSON, CTL_OPT_ECHO, CTL_OPT_VERSION };

static const struct option ctl_long_opts[] = {
    { "socket",  required_argument, NULL, 's' },
    { "timeout", required_argument, NULL, CTL_OPT_TIMEOUT },
    { "json",    no_argument,       NULL, CTL_OPT_JSON },
    { "echo",    no_argument,       NULL, CTL_OPT_ECHO },
    { "version", no_argument,       NULL, CTL_OPT_VERSION },
    { "help",    no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

/* ---- messages ----------------------------------------------------------- */

static void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ctl_err(const char *fmt, ...)
{
    va_list ap;

    fputs("brokerctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int ctl_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int ctl_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("brokerctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try 'brokerctl --help')\n", stderr);
    return CTL_EXIT_USAGE;
}

static void ctl_help(void)
{
    printf(
"Usage: brokerctl [OPTIONS] COMMAND [ARGS]\n"
"Operator tool for the brokerd local message broker.\n"
"\n"
"Options:\n"
"  -s, --socket PATH   broker socket (default: $BROKER_SOCKET,\n"
"                      $XDG_RUNTIME_DIR/brokerd.sock, /run/brokerd.sock\n"
"                      for root, else /tmp/brokerd-$UID/brokerd.sock)\n"
"      --timeout MS    how long ping, call and send's delivery check\n"
"                      wait, in milliseconds (default %d, -1: no limit)\n"
"      --version       print the version and exit\n"
"  -h, --help          print this help and exit\n"
"\n"
"Commands:\n"
"  ping                     round trip to the broker\n"
"  status [--json]          broker counters and limits\n"
"  send NAME [DATA|-]       one-way message (no DATA or '-': read stdin)\n"
"  call NAME [DATA|-]       request; the reply is written to stdout\n"
"  listen NAME              register NAME and print every message\n"
"  serve NAME --echo        register NAME and answer requests with\n"
"                           their own payload\n"
"\n"
"-s and --timeout may also follow the command.  listen and serve run\n"
"until SIGINT/SIGTERM or broker shutdown.\n"
"Exit status: 0 success, 1 runtime error, 2 usage error.\n",
           CTL_DEF_TIMEOUT_MS);
}

/* ---- helpers ------------------------------------------------------------ */

static uint64_t ctl_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The path shown to the user: the explicit one or the library's default. */
static int ctl_path(const ctl_opts_t *o, char *buf, size_t len)
{
    if (o->socket && *o->socket) {
        if (strlen(o->socket) >= len)
            return -ENAMETOOLONG;
        strcpy(buf, o->socket);
        return 0;
    }
    return broker_default_path(buf, len);
}

/* Connect, or print why not.  Returns NULL on failure. */
static broker_t *ctl_connect(const ctl_opts_t *o, char *path, size_t len)
{
    broker_t *b = NULL;
    int r = ctl_path(o, path, len);

    if (r < 0) {
        ctl_err("socket path: %s", broker_strerror(r));
        return NULL;
    }
    r = broker_connect(path, &b);
    if (r < 0) {
        ctl_err("cannot connect to brokerd at %s: %s", path,
                broker_strerror(r));
        return NULL;
    }
    return b;
}

/* Read all of fd into a new buffer; the caller frees *out. */
static int ctl_read_all(int fd, void **out, size_t *outlen)
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

/* The payload of send/call: args[1] as text, or stdin for "-" or none.
 * *owned is set when the buffer must be freed. */
static int ctl_payload(const ctl_opts_t *o, const void **data, size_t *len,
                       void **owned)
{
    *owned = NULL;
    if (o->nargs >= 2 && strcmp(o->args[1], "-") != 0) {
        *data = o->args[1];
        *len = strlen(o->args[1]);
        return 0;
    }
    int r = ctl_read_all(STDIN_FILENO, owned, len);
    if (r < 0) {
        ctl_err("reading stdin: %s", broker_strerror(r));
        return r;
    }
    *data = *owned;
    return 0;
}

static int ctl_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- signals for listen/serve -------------------------------------------- */

static volatile sig_atomic_t ctl_stop;
static int ctl_sig_pipe[2] = { -1, -1 };

static void ctl_on_signal(int sig)
{
    int saved = errno;
    ssize_t n;

    (void)sig;
    ctl_stop = 1;
    n = write(ctl_sig_pipe[1], "s", 1);
    (void)n;
    errno = saved;
}

/* The first SIGINT/SIGTERM asks the loop to stop; SA_RESETHAND lets a
 * second one end the process if it is stuck. */
static int ctl_signals_init(void)
{
    struct sigaction sa;

    if (pipe2(ctl_sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ctl_on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -errno;
    return 0;
}

typedef int (*ctl_msg_fn)(broker_t *b, broker_msg_t *msg);

/* Deliver messages to fn until a signal or the broker's shutdown.  fn
 * owns nothing: the loop frees each message.  Returns 0, or a negative
 * errno for a failure worth reporting (a connection lost without the
 * broker's BYE is one). */
static int ctl_event_loop(broker_t *b, ctl_msg_fn fn)
{
    while (!ctl_stop) {
        broker_msg_t *msg = NULL;
        int r = broker_recv(b, &msg, 0);

        if (r == 0) {
            r = fn(b, msg);
            broker_msg_free(msg);
            if (r < 0)
                return r;
            continue;
        }
        if (r == -ESHUTDOWN)    /* the broker said BYE */
            return 0;
        if (r != -ETIMEDOUT && r != -EAGAIN && r != -EINTR)
            return r;
        /* Nothing buffered: sleep on the socket and the signal pipe.  The
         * 1 s wake-up lets the library expire stale partial messages. */
        struct pollfd p[2] = {
            { .fd = broker_fd(b), .events = POLLIN },
            { .fd = ctl_sig_pipe[0], .events = POLLIN },
        };
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            return -errno;
    }
    return 0;
}

/* ---- listen -------------------------------------------------------------- */

/* Printable preview: ASCII graphic bytes as is, the rest escaped. */
static void ctl_preview(FILE *f, const unsigned char *p, size_t len)
{
    size_t n = len < CTL_PREVIEW_MAX ? len : CTL_PREVIEW_MAX;

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

static int ctl_listen_msg(broker_t *b, broker_msg_t *m)
{
    switch (m->kind) {
    case BROKER_MSG_DATA:
        printf("[%" PRIu64 "] stream=%" PRIu32 " len=%zu: ", m->source,
               m->stream, m->len);
        ctl_preview(stdout, m->data, m->len);
        putchar('\n');
        if (fflush(stdout) == EOF)
            return -errno;
        /* A request cannot be answered by a listener: close its stream so
         * the caller is not left waiting. */
        if ((m->flags & BROKER_MSGF_OPEN) && !(m->flags & BROKER_MSGF_CLOSE))
            (void)broker_stream_close(b, m->stream);
        return 0;
    case BROKER_MSG_ERROR:
        fprintf(stderr, "brokerctl: stream %" PRIu32 ": %s: %.*s\n",
                m->stream, broker_strerror(m->code),
                (int)(m->len > INT_MAX ? INT_MAX : m->len),
                m->data ? (const char *)m->data : "");
        return 0;
    default:
        return 0;       /* CLOSE events of one-way streams */
    }
}

/* Own NAME and hand every message to `handle` until a signal or BYE. */
static int ctl_own_and_loop(const ctl_opts_t *o, const char *verb,
                            int (*handle)(broker_t *, broker_msg_t *))
{
    char path[CTL_PATH_MAX];
    const char *name = o->args[0];
    broker_t *b;
    int r;

    if ((r = ctl_signals_init()) < 0) {
        ctl_err("signals: %s", broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    if ((r = broker_register(b, name)) < 0) {
        ctl_err("register '%s': %s", name, broker_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_event_loop(b, handle);
    broker_close(b);
    if (r < 0) {
        ctl_err("%s '%s': %s", verb, name, r == -ECONNRESET ?
                "lost the connection to brokerd" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

static int ctl_run_listen(const ctl_opts_t *o)
{
    return ctl_own_and_loop(o, "listen", ctl_listen_msg);
}

/* ---- serve --echo --------------------------------------------------------- */

static int ctl_echo_msg(broker_t *b, broker_msg_t *m)
{
    int r;

    if (m->kind != BROKER_MSG_DATA || !(m->flags & BROKER_MSGF_OPEN) ||
        (m->flags & BROKER_MSGF_CLOSE))
        return 0;       /* one-way messages and events are ignored */
    r = broker_reply(b, m, m->data, m->len, NULL, 0);
    /* The caller may have given up (closed stream, gone): not fatal. */
    if (r < 0 && r != -ENOENT && r != -ECONNRESET && r != -EPIPE)
        return r;
    return 0;
}

static int ctl_run_serve(const ctl_opts_t *o)
{
    if (!o->echo)
        return ctl_usage_error("serve needs a mode: --echo");
    return ctl_own_and_loop(o, "serve", ctl_echo_msg);
}

/* ---- ping ---------------------------------------------------------------- */

static int ctl_run_ping(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    broker_t *b = ctl_connect(o, path, sizeof(path));
    uint64_t t0;
    int r;

    if (!b)
        return CTL_EXIT_RUNTIME;
    t0 = ctl_now_ns();
    r = broker_ping(b, o->timeout_ms);
    uint64_t us = (ctl_now_ns() - t0) / 1000;
    broker_close(b);
    if (r < 0) {
        ctl_err("ping %s: %s", path, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    printf("pong from brokerd at %s: %" PRIu64 " us\n", path, us);
    return CTL_EXIT_OK;
}

/* ---- status -------------------------------------------------------------- */

/* Split "key=value" lines in place.  Returns the number of pairs stored
 * in keys/vals (at most max). */
static size_t ctl_status_parse(char *text, char **keys, char **vals,
                               size_t max)
{
    size_t n = 0;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq || eq == line)
            continue;
        *eq = '\0';
        keys[n] = line;
        vals[n] = eq + 1;
        n++;
    }
    return n;
}

/* A value made only of digits is printed as a JSON number (one with a
 * leading zero would not be valid JSON and stays a string). */
static bool ctl_is_json_int(const char *s)
{
    if (!*s || (s[0] == '0' && s[1]))
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t ctl_utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;

    if (p[0] < 0xc2 || p[0] > 0xf4)
        return 0;
    len = p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
    if (len > n)
        return 0;
    cp = p[0] & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string; invalid UTF-8 bytes become U+FFFD. */
static void ctl_json_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);

    fputc('"', f);
    for (size_t i = 0; i < n; ) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else if (c >= 0x80) {
            size_t k = ctl_utf8_len(p + i, n - i);
            if (k == 0) {
                fputs("\\ufffd", f);
                i++;
                continue;
            }
            fwrite(p + i, 1, k, f);
            i += k;
            continue;
        } else {
            fputc(c, f);
        }
        i++;
    }
    fputc('"', f);
}

static void ctl_status_json(char **keys, char **vals, size_t n)
{
    putchar('{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            putchar(',');
        ctl_json_string(stdout, keys[i]);
        putchar(':');
        if (ctl_is_json_int(vals[i]))
            fputs(vals[i], stdout);
        else
            ctl_json_string(stdout, vals[i]);
    }
    puts("}");
}

static void ctl_status_text(char **keys, char **vals, size_t n)
{
    int width = 0;

    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(keys[i]);
        if (k > (size_t)width)
            width = k > 64 ? 64 : (int)k;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s:%*s %s\n", keys[i], width - (int)strlen(keys[i]), "",
               vals[i]);
}

#define CTL_STATUS_MAX_KEYS 128

static int ctl_run_status(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    char *keys[CTL_STATUS_MAX_KEYS], *vals[CTL_STATUS_MAX_KEYS];
    char *text = NULL;
    broker_t *b = ctl_connect(o, path, sizeof(path));
    size_t n;
    int r;

    if (!b)
        return CTL_EXIT_RUNTIME;
    r = broker_status(b, &text);
    broker_close(b);
    if (r < 0) {
        ctl_err("status %s: %s", path, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    n = ctl_status_parse(text, keys, vals, CTL_STATUS_MAX_KEYS);
    if (o->json)
        ctl_status_json(keys, vals, n);
    else
        ctl_status_text(keys, vals, n);
    free(text);
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

/* ---- send / call ----------------------------------------------------------- */

/* After a one-way send: a ping round trip proves the broker has routed
 * the message; an ERROR event queued before the pong (unknown name, too
 * big, ...) is the send's outcome. */
static int ctl_send_outcome(broker_t *b, int timeout_ms)
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

static int ctl_run_send(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    const char *name = o->args[0];
    const void *data;
    void *owned;
    size_t len;
    broker_t *b;
    int r;

    if (ctl_payload(o, &data, &len, &owned) < 0)
        return CTL_EXIT_RUNTIME;
    if (!(b = ctl_connect(o, path, sizeof(path)))) {
        free(owned);
        return CTL_EXIT_RUNTIME;
    }
    r = broker_send(b, name, data, len, NULL, 0);
    if (r == 0)
        r = ctl_send_outcome(b, o->timeout_ms);
    broker_close(b);
    free(owned);
    if (r < 0) {
        ctl_err("send to '%s': %s", name, broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

static int ctl_run_call(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    const char *name = o->args[0];
    broker_msg_t *reply = NULL;
    const void *data;
    void *owned;
    size_t len;
    broker_t *b;
    int r;

    if (ctl_payload(o, &data, &len, &owned) < 0)
        return CTL_EXIT_RUNTIME;
    if (!(b = ctl_connect(o, path, sizeof(path)))) {
        free(owned);
        return CTL_EXIT_RUNTIME;
    }
    r = broker_call(b, name, data, len, &reply, o->timeout_ms);
    free(owned);
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

/* ---- command line ---------------------------------------------------------- */

static const ctl_cmd_t ctl_cmds[] = {
    { "ping",   0, 0, 0,               ctl_run_ping },
    { "status", 0, 0, CTL_ACCEPT_JSON, ctl_run_status },
    { "send",   1, 2, 0,               ctl_run_send },
    { "call",   1, 2, 0,               ctl_run_call },
    { "listen", 1, 1, 0,               ctl_run_listen },
    { "serve",  1, 1, CTL_ACCEPT_ECHO, ctl_run_serve },
};

static const ctl_cmd_t *ctl_find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
        if (strcmp(ctl_cmds[i].name, name) == 0)
            return &ctl_cmds[i];
    return NULL;
}

static int ctl_parse_timeout(const char *s, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < -1 || v > INT_MAX)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* Name of the option getopt stopped at, for error messages. */
static const char *ctl_bad_opt(char **argv, int idx)
{
    return argv[idx - 1] ? argv[idx - 1] : "?";
}

/* Handle one option shared by both passes.  cmd is NULL for the options
 * before the command.  Returns -1 to go on, else an exit code. */
static int ctl_take_opt(int c, ctl_opts_t *o, const ctl_cmd_t *cmd,
                        char **argv)
{
    unsigned need = 0;

    switch (c) {
    case 's':
        o->socket = optarg;
        return -1;
    case CTL_OPT_TIMEOUT:
        if (ctl_parse_timeout(optarg, &o->timeout_ms) < 0)
            return ctl_usage_error("invalid --timeout '%s' (milliseconds, "
                                   "or -1 for none)", optarg);
        return -1;
    case CTL_OPT_JSON:
        o->json = true;
        need = CTL_ACCEPT_JSON;
        break;
    case CTL_OPT_ECHO:
        o->echo = true;
        need = CTL_ACCEPT_ECHO;
        break;
    case CTL_OPT_VERSION:
        printf("brokerctl %s\n", CTL_VERSION);
        return CTL_EXIT_OK;
    case 'h':
        ctl_help();
        return CTL_EXIT_OK;
    case ':':
        return ctl_usage_error("option '%s' needs an argument",
                               ctl_bad_opt(argv, optind));
    default:
        if (optopt && optopt < 0x100)
            return ctl_usage_error("unknown option '-%c'", optopt);
        return ctl_usage_error("unknown option '%s'",
                               ctl_bad_opt(argv, optind));
    }
    /* --json and --echo belong to their command. */
    if (!cmd)
        return ctl_usage_error("option '%s' must follow its command",
                               ctl_bad_opt(argv, optind));
    if (cmd && !(cmd->accepts & need))
        return ctl_usage_error("option '%s' is not valid for '%s'",
                               ctl_bad_opt(argv, optind), cmd->name);
    return -1;
}

static int ctl_parse(int argc, char **argv, ctl_opts_t *o,
                     const ctl_cmd_t **cmdp)
{
    const ctl_cmd_t *cmd;
    int c, r, sub_argc;
    char **sub_argv;

    opterr = 0;
    /* Pass 1: options before the command ('+' stops at the command). */
    while ((c = getopt_long(argc, argv, "+:s:h", ctl_long_opts, NULL)) != -1)
        if ((r = ctl_take_opt(c, o, NULL, argv)) >= 0)
            return r;
    if (optind >= argc)
        return ctl_usage_error("no command given");
    o->cmd = argv[optind];
    if (!(cmd = ctl_find_cmd(o->cmd)))
        return ctl_usage_error("unknown command '%s'", o->cmd);

    /* Pass 2: the command's own arguments, options in any position. */
    sub_argc = argc - optind;
    sub_argv = argv + optind;
    optind = 0;     /* GNU getopt: restart scanning on a new vector */
    while ((c = getopt_long(sub_argc, sub_argv, "-:s:h", ctl_long_opts,
                            NULL)) != -1) {
        if (c == 1) {           /* a positional argument, in order */
            sub_argv[1 + o->nargs++] = optarg;
            continue;
        }
        if ((r = ctl_take_opt(c, o, cmd, sub_argv)) >= 0)
            return r;
    }
    /* Arguments after "--" are positional too. */
    while (optind < sub_argc)
        sub_argv[1 + o->nargs++] = sub_argv[optind++];
    o->args = sub_argv + 1;
    if (o->nargs < cmd->min_args)
        return ctl_usage_error("'%s' needs %s", cmd->name,
                               cmd->min_args == 1 ? "a NAME" : "arguments");
    if (o->nargs > cmd->max_args)
        return ctl_usage_error("too many arguments for '%s'", cmd->name);
    *cmdp = cmd;
    return -1;
}

int main(int argc, char **argv)
{
    ctl_opts_t o = { .timeout_ms = CTL_DEF_TIMEOUT_MS };
    const ctl_cmd_t *cmd = NULL;
    int r = ctl_parse(argc, argv, &o, &cmd);

    if (r >= 0)
        return r;
    return cmd->run(&o);
}
