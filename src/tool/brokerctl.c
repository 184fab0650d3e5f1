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
#include <sys/ioctl.h>

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
    int json;               /* --json: CTL_JSON_* */
    bool no_legend;         /* --no-legend: tables without a header */
    const char *sort;       /* --sort FIELD (list commands) */
    long top;               /* --top N, -1: all rows */
    bool echo;              /* serve --echo */
    int interval_ms;        /* top --interval MS */
    long iterations;        /* top --iterations N, 0: until a signal */
    uint32_t snap;          /* monitor/capture --snap N, 0: default */
    const char *cmd;
    char **args;            /* positional arguments after the command */
    int nargs;
} ctl_opts_t;

/* Options that belong to one command (-s and --timeout are accepted
 * before or after any command). */
enum {
    CTL_ACCEPT_JSON = 0x1,
    CTL_ACCEPT_ECHO = 0x2,
    CTL_ACCEPT_LIST = 0x4,      /* --no-legend, --sort, --top */
    CTL_ACCEPT_TOP = 0x8,       /* --interval, --iterations */
    CTL_ACCEPT_SNAP = 0x10,     /* --snap */
};

enum { CTL_JSON_OFF = 0, CTL_JSON_SHORT, CTL_JSON_PRETTY };

typedef struct ctl_cmd {
    const char *name;
    int min_args, max_args;
    unsigned accepts;
    int (*run)(const ctl_opts_t *o);
} ctl_cmd_t;

enum { CTL_OPT_TIMEOUT = 0x100, CTL_OPT_JSON, CTL_OPT_ECHO, CTL_OPT_VERSION,
       CTL_OPT_NO_LEGEND, CTL_OPT_SORT, CTL_OPT_TOP, CTL_OPT_INTERVAL,
       CTL_OPT_ITERATIONS, CTL_OPT_SNAP };

static const struct option ctl_long_opts[] = {
    { "socket",  required_argument, NULL, 's' },
    { "timeout", required_argument, NULL, CTL_OPT_TIMEOUT },
    { "json",    optional_argument, NULL, CTL_OPT_JSON },
    { "no-legend", no_argument,     NULL, CTL_OPT_NO_LEGEND },
    { "sort",    required_argument, NULL, CTL_OPT_SORT },
    { "top",     required_argument, NULL, CTL_OPT_TOP },
    { "echo",    no_argument,       NULL, CTL_OPT_ECHO },
    { "interval", required_argument, NULL, CTL_OPT_INTERVAL },
    { "iterations", required_argument, NULL, CTL_OPT_ITERATIONS },
    { "snap",    required_argument, NULL, CTL_OPT_SNAP },
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
"      --json[=short|pretty]  JSON output (status and the lists)\n"
"      --no-legend     tables without their header line\n"
"      --version       print the version and exit\n"
"  -h, --help          print this help and exit\n"
"\n"
"Commands:\n"
"  ping                     round trip to the broker\n"
"  status [--json]          broker counters and limits\n"
"  clients, names, streams, shm [--sort FIELD] [--top N]\n"
"                           list connected clients, owned names, open\n"
"                           streams, shared-memory segments (needs root\n"
"                           or the broker's user)\n"
"  top [--sort FIELD] [--top N] [--interval MS] [--iterations N]\n"
"                           live view of the busiest clients: rates per\n"
"                           second, refreshed every MS (default 1000)\n"
"  kick ID                  disconnect client ID\n"
"  shutdown                 stop the broker as SIGTERM would\n"
"  reload                   re-read the broker's configuration file (-c)\n"
"  send NAME [DATA|-]       one-way message (no DATA or '-': read stdin)\n"
"  call NAME [DATA|-]       request; the reply is written to stdout\n"
"  listen NAME              register NAME and print every message\n"
"  serve NAME --echo        register NAME and answer requests with\n"
"                           their own payload\n"
"  monitor [FILTER] [--snap N] [--json]\n"
"                           print every message the broker forwards\n"
"                           (FILTER: name:PATTERN or id:N)\n"
"  capture FILE [FILTER] [--snap N]\n"
"                           write the same records as pcapng to FILE\n"
"                           ('-': stdout)\n"
"\n"
"-s, --timeout, --json and --no-legend may also follow the command.\n"
"--sort takes a field (JSON key) of the list; numbers sort largest first,\n"
"text in byte order.  listen, serve, monitor and capture run\n"
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

static void ctl_status_json(char **keys, char **vals, size_t n, int mode)
{
    putchar('{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            putchar(',');
        if (mode == CTL_JSON_PRETTY)
            fputs("\n  ", stdout);
        ctl_json_string(stdout, keys[i]);
        fputs(mode == CTL_JSON_PRETTY ? ": " : ":", stdout);
        if (ctl_is_json_int(vals[i]))
            fputs(vals[i], stdout);
        else
            ctl_json_string(stdout, vals[i]);
    }
    puts(mode == CTL_JSON_PRETTY && n ? "\n}" : "}");
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
        ctl_status_json(keys, vals, n, o->json);
    else
        ctl_status_text(keys, vals, n);
    free(text);
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

/* ---- listings (clients, names, streams, shm) ------------------------------ */

/* One listing: which op, which wire keys its table shows, which keys are
 * text (JSON strings) and which one is a comma-separated list. */
typedef struct ctl_list_kind {
    const char *cmd;
    uint32_t op;
    const char *const *cols;    /* table columns, NULL-terminated */
} ctl_list_kind_t;

static const char *const ctl_cols_clients[] = {
    "id", "pid", "uid", "comm", "names", "queued_bytes", "msgs_in",
    "msgs_out", "streams", "shm_segments", "age_ms", NULL };
static const char *const ctl_cols_names[] = {
    "name", "owner", "pid", "comm", "age_ms", NULL };
static const char *const ctl_cols_streams[] = {
    "opener", "opener_sid", "acceptor", "acceptor_sid", "opener_bytes",
    "acceptor_bytes", "age_ms", NULL };
static const char *const ctl_cols_shm[] = {
    "owner", "segid", "size", "receivers", NULL };

static const ctl_list_kind_t ctl_lists[] = {
    { "clients", BROKER_CTRL_LIST_CLIENTS, ctl_cols_clients },
    { "names",   BROKER_CTRL_LIST_NAMES,   ctl_cols_names },
    { "streams", BROKER_CTRL_LIST_STREAMS, ctl_cols_streams },
    { "shm",     BROKER_CTRL_LIST_SHM,     ctl_cols_shm },
};

static bool ctl_key_is_text(const char *key)
{
    return !strcmp(key, "comm") || !strcmp(key, "name");
}

static bool ctl_key_is_list(const char *key)
{
    return !strcmp(key, "names");
}

#define CTL_REC_MAX_KEYS 32

/* One record; keys and raw (still escaped) values point into the text. */
typedef struct ctl_rec {
    char *keys[CTL_REC_MAX_KEYS];
    char *vals[CTL_REC_MAX_KEYS];
    size_t n;
} ctl_rec_t;

static int ctl_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decode n bytes of s into a new string (NULL on no memory). */
static char *ctl_unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1), *d = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = ctl_hexval(s[i + 1])) >= 0 &&
            (lo = ctl_hexval(s[i + 2])) >= 0) {
            *d++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *d++ = s[i];
        }
    }
    *d = '\0';
    return out;
}

/* Split the listing text into records, in place.  Returns how many, or
 * -ENOMEM; *out is malloc'd. */
static ssize_t ctl_records(char *text, ctl_rec_t **out)
{
    ctl_rec_t *recs = NULL;
    size_t n = 0, cap = 0;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *fsave = NULL;
        ctl_rec_t *r;

        if (n == cap) {
            ctl_rec_t *t = realloc(recs, (cap = cap ? cap * 2 : 64) *
                                   sizeof(*recs));
            if (!t) {
                free(recs);
                return -ENOMEM;
            }
            recs = t;
        }
        r = &recs[n++];
        r->n = 0;
        for (char *f = strtok_r(line, " ", &fsave);
             f && r->n < CTL_REC_MAX_KEYS; f = strtok_r(NULL, " ", &fsave)) {
            char *eq = strchr(f, '=');
            if (!eq || eq == f)
                continue;
            *eq = '\0';
            r->keys[r->n] = f;
            r->vals[r->n++] = eq + 1;
        }
    }
    *out = recs;
    return (ssize_t)n;
}

static const char *ctl_rec_get(const ctl_rec_t *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->keys[i], key))
            return r->vals[i];
    return NULL;
}

/* ---- sorting ---- */

static const char *ctl_sort_key;
static bool ctl_sort_desc;      /* numbers: largest first */

static bool ctl_all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static int ctl_rec_cmp(const void *a, const void *b)
{
    const char *x = ctl_rec_get(a, ctl_sort_key);
    const char *y = ctl_rec_get(b, ctl_sort_key);
    int c;

    if (!x || !y)
        return !x - !y;
    if (ctl_all_digits(x) && ctl_all_digits(y)) {
        unsigned long long u = strtoull(x, NULL, 10);
        unsigned long long v = strtoull(y, NULL, 10);
        c = (u > v) - (u < v);
        return ctl_sort_desc ? -c : c;
    }
    return strcmp(x, y);
}

static bool ctl_list_has_key(const ctl_list_kind_t *k, const ctl_rec_t *recs,
                             size_t n, const char *key)
{
    for (size_t i = 0; k->cols[i]; i++)
        if (!strcmp(k->cols[i], key))
            return true;
    for (size_t i = 0; i < n; i++)
        if (ctl_rec_get(&recs[i], key))
            return true;
    return false;
}

/* ---- JSON ---- */

static void ctl_json_value(const char *key, const char *raw)
{
    char *v;

    if (ctl_key_is_list(key)) {
        const char *p = raw;
        putchar('[');
        for (bool first = true; *raw; first = false) {
            size_t len = strcspn(p, ",");
            if (!first)
                putchar(',');
            v = ctl_unescape(p, len);
            ctl_json_string(stdout, v ? v : "");
            free(v);
            if (!p[len])
                break;
            p += len + 1;
        }
        putchar(']');
        return;
    }
    v = ctl_unescape(raw, strlen(raw));
    if (!ctl_key_is_text(key) && v && ctl_is_json_int(v))
        fputs(v, stdout);
    else
        ctl_json_string(stdout, v ? v : "");
    free(v);
}

static void ctl_list_json(const ctl_rec_t *recs, size_t n, int mode)
{
    bool pretty = mode == CTL_JSON_PRETTY;

    putchar('[');
    for (size_t i = 0; i < n; i++) {
        fputs(i ? "," : "", stdout);
        fputs(pretty ? "\n  {" : "{", stdout);
        for (size_t j = 0; j < recs[i].n; j++) {
            fputs(j ? "," : "", stdout);
            if (pretty)
                fputs("\n    ", stdout);
            ctl_json_string(stdout, recs[i].keys[j]);
            fputs(pretty ? ": " : ":", stdout);
            ctl_json_value(recs[i].keys[j], recs[i].vals[j]);
        }
        fputs(pretty && recs[i].n ? "\n  }" : "}", stdout);
    }
    puts(pretty && n ? "\n]" : "]");
}

/* ---- tables ---- */

/* Display form of a value: unescaped, control bytes shown as '?'. */
static char *ctl_cell(const char *raw)
{
    char *v = ctl_unescape(raw ? raw : "", raw ? strlen(raw) : 0);

    for (char *p = v; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return v;
}

static void ctl_list_table(const ctl_list_kind_t *k, const ctl_rec_t *recs,
                           size_t n, bool legend)
{
    size_t ncols = 0, width[CTL_REC_MAX_KEYS];
    bool num[CTL_REC_MAX_KEYS];
    bool tty = isatty(STDOUT_FILENO);

    while (k->cols[ncols])
        ncols++;
    for (size_t c = 0; c < ncols; c++) {
        width[c] = legend ? strlen(k->cols[c]) : 0;
        num[c] = !ctl_key_is_text(k->cols[c]) && !ctl_key_is_list(k->cols[c]);
        for (size_t i = 0; i < n; i++) {
            char *v = ctl_cell(ctl_rec_get(&recs[i], k->cols[c]));
            size_t w = v ? strlen(v) : 0;
            free(v);
            if (w > width[c])
                width[c] = w;
        }
    }
    if (legend) {
        fputs(tty ? "\033[1m" : "", stdout);
        for (size_t c = 0; c < ncols; c++) {
            char head[64];
            size_t j = 0;
            for (; k->cols[c][j] && j < sizeof(head) - 1; j++)
                head[j] = (char)(k->cols[c][j] >= 'a' && k->cols[c][j] <= 'z'
                                 ? k->cols[c][j] - 'a' + 'A' : k->cols[c][j]);
            head[j] = '\0';
            printf(num[c] ? "%s%*s" : "%s%-*s", c ? "  " : "",
                   c + 1 == ncols && !num[c] ? 0 : (int)width[c], head);
        }
        fputs(tty ? "\033[0m\n" : "\n", stdout);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < ncols; c++) {
            char *v = ctl_cell(ctl_rec_get(&recs[i], k->cols[c]));
            printf(num[c] ? "%s%*s" : "%s%-*s", c ? "  " : "",
                   c + 1 == ncols && !num[c] ? 0 : (int)width[c],
                   v ? v : "");
            free(v);
        }
        putchar('\n');
    }
}

/* Errors of the privileged operations, EPERM spelled out. */
static const char *ctl_admin_strerror(int r)
{
    if (r == -EPERM)
        return "permission denied (needs root or the broker's user)";
    return broker_strerror(r);
}

static const ctl_list_kind_t *ctl_list_kind(const char *cmd)
{
    for (size_t i = 0; i < sizeof(ctl_lists) / sizeof(ctl_lists[0]); i++)
        if (!strcmp(ctl_lists[i].cmd, cmd))
            return &ctl_lists[i];
    return NULL;
}

/* Sort (default: by the first column, ascending) and print. */
static int ctl_list_print(const ctl_opts_t *o, const ctl_list_kind_t *k,
                          ctl_rec_t *recs, size_t n)
{
    if (o->sort && !ctl_list_has_key(k, recs, n, o->sort))
        return ctl_usage_error("unknown field '%s' for '%s'", o->sort,
                               k->cmd);
    ctl_sort_key = o->sort ? o->sort : k->cols[0];
    ctl_sort_desc = o->sort != NULL;
    if (n > 1)
        qsort(recs, n, sizeof(*recs), ctl_rec_cmp);
    if (o->top >= 0 && (size_t)o->top < n)
        n = (size_t)o->top;
    if (o->json)
        ctl_list_json(recs, n, o->json);
    else
        ctl_list_table(k, recs, n, !o->no_legend);
    return fflush(stdout) == EOF ? CTL_EXIT_RUNTIME : CTL_EXIT_OK;
}

static int ctl_run_list(const ctl_opts_t *o)
{
    const ctl_list_kind_t *k = ctl_list_kind(o->cmd);
    char path[CTL_PATH_MAX];
    ctl_rec_t *recs = NULL;
    char *text = NULL;
    broker_t *b;
    ssize_t n;
    int r;

    if (o->sort && !*o->sort)
        return ctl_usage_error("--sort needs a field name");
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_list(b, k->op, &text, NULL);
    broker_close(b);
    if (r < 0) {
        ctl_err("%s %s: %s", k->cmd, path, ctl_admin_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    n = ctl_records(text, &recs);
    if (n < 0) {
        ctl_err("%s: %s", k->cmd, broker_strerror((int)n));
        r = CTL_EXIT_RUNTIME;
    } else {
        r = ctl_list_print(o, k, recs, (size_t)n);
    }
    free(recs);
    free(text);
    return r;
}

/* ---- kick / shutdown --------------------------------------------------------- */

static int ctl_run_kick(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX], *end;
    unsigned long long id;
    broker_t *b;
    int r;

    errno = 0;
    id = strtoull(o->args[0], &end, 10);
    if (errno || end == o->args[0] || *end || id == 0 ||
        o->args[0][0] == '-')
        return ctl_usage_error("invalid client id '%s'", o->args[0]);
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_kick(b, (uint64_t)id);
    broker_close(b);
    if (r < 0) {
        ctl_err("kick %llu: %s", id, r == -ENOENT ? "no such client" :
                ctl_admin_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

static int ctl_run_shutdown(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    broker_t *b;
    int r;

    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_shutdown(b);
    broker_close(b);
    if (r < 0) {
        ctl_err("shutdown %s: %s", path, ctl_admin_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

static int ctl_run_reload(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    void *why = NULL;
    broker_t *b;
    int r;

    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = broker_ctrl(b, BROKER_CTRL_RELOAD, NULL, 0, &why, NULL);
    broker_close(b);
    if (r == -EINVAL) {
        ctl_err("reload %s: configuration not changed: %s", path,
                why && *(char *)why ? (char *)why
                : "brokerd was started without -c");
        free(why);
        return CTL_EXIT_RUNTIME;
    }
    free(why);
    if (r < 0) {
        ctl_err("reload %s: %s", path, ctl_admin_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
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

/* ---- top ------------------------------------------------------------------ */

/* A live view of the busiest clients: every interval a LIST_CLIENTS and a
 * STATUS snapshot; rates are the counters' deltas over the time between
 * two snapshots. */

#define CTL_TOP_DEF_INTERVAL_MS 1000
#define CTL_TOP_DEF_ROWS        20      /* when stdout is not a terminal */
#define CTL_TOP_HEADER_LINES    3       /* status line, blank, legend */

/* Counters of one client, kept from one snapshot to the next. */
typedef struct ctl_top_prev {
    uint64_t id;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} ctl_top_prev_t;

/* The broker-wide counters of STATUS. */
typedef struct ctl_top_status {
    uint64_t uptime_ms, clients, names;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} ctl_top_status_t;

/* One displayed row: rates, and the cell text the table shows. */
enum { CTL_TOP_MSGS, CTL_TOP_MSGS_IN, CTL_TOP_MSGS_OUT, CTL_TOP_BYTES,
       CTL_TOP_BYTES_IN, CTL_TOP_BYTES_OUT, CTL_TOP_NRATES };

typedef struct ctl_top_row {
    const ctl_rec_t *src;       /* the client's record in the listing */
    uint64_t id;
    uint64_t rate[CTL_TOP_NRATES];  /* per second */
    char cell[CTL_TOP_NRATES][24];
} ctl_top_row_t;

/* The --sort fields of top: the rates, or a key of the client record. */
static const char *const ctl_top_rate_keys[CTL_TOP_NRATES] = {
    "msgs", "msgs_in", "msgs_out", "bytes", "bytes_in", "bytes_out" };
static const char *const ctl_top_rec_keys[] = {
    "id", "pid", "uid", "comm", "queued_bytes", "streams", "age_ms", NULL };

static const char *const ctl_cols_top[] = {
    "id", "pid", "comm", "msgs/s", "msgs_in/s", "msgs_out/s", "bytes_in/s",
    "bytes_out/s", "queued_bytes", "names", NULL };
static const ctl_list_kind_t ctl_top_kind = {
    "top", BROKER_CTRL_LIST_CLIENTS, ctl_cols_top };

static int ctl_top_sort_rate = CTL_TOP_MSGS;  /* -1: ctl_sort_key */

/* Validate --sort: a rate name or a client field.  Returns 0 or -EINVAL. */
static int ctl_top_set_sort(const char *field)
{
    ctl_top_sort_rate = CTL_TOP_MSGS;
    if (!field)
        return 0;
    for (int i = 0; i < CTL_TOP_NRATES; i++)
        if (!strcmp(field, ctl_top_rate_keys[i])) {
            ctl_top_sort_rate = i;
            return 0;
        }
    for (size_t i = 0; ctl_top_rec_keys[i]; i++)
        if (!strcmp(field, ctl_top_rec_keys[i])) {
            ctl_top_sort_rate = -1;
            ctl_sort_key = field;
            ctl_sort_desc = true;
            return 0;
        }
    return -EINVAL;
}

/* Busiest first; ties by client id so the order is stable. */
static int ctl_top_row_cmp(const void *a, const void *b)
{
    const ctl_top_row_t *x = a, *y = b;
    int c;

    if (ctl_top_sort_rate >= 0) {
        uint64_t u = x->rate[ctl_top_sort_rate];
        uint64_t v = y->rate[ctl_top_sort_rate];
        c = (u < v) - (u > v);
    } else {
        c = ctl_rec_cmp(x->src, y->src);
    }
    if (c)
        return c;
    return (x->id > y->id) - (x->id < y->id);
}

static uint64_t ctl_top_u64(const char *s)
{
    return s && ctl_all_digits(s) ? strtoull(s, NULL, 10) : 0;
}

/* Counters that went backwards (a restarted broker) count as 0. */
static uint64_t ctl_top_rate(uint64_t now, uint64_t before, uint64_t ns)
{
    if (now <= before || ns == 0)
        return 0;
    return (uint64_t)((double)(now - before) * 1e9 / (double)ns + 0.5);
}

static int ctl_top_prev_cmp(const void *a, const void *b)
{
    const ctl_top_prev_t *x = a, *y = b;

    return (x->id > y->id) - (x->id < y->id);
}

/* Rows with the rates since `prev` (n_prev entries sorted by id); a
 * client not in prev (new since then) shows 0. */
static void ctl_top_rows(const ctl_rec_t *recs, size_t n,
                         const ctl_top_prev_t *prev, size_t n_prev,
                         uint64_t ns, ctl_top_row_t *rows)
{
    for (size_t i = 0; i < n; i++) {
        ctl_top_prev_t cur = {
            .id = ctl_top_u64(ctl_rec_get(&recs[i], "id")),
            .msgs_in = ctl_top_u64(ctl_rec_get(&recs[i], "msgs_in")),
            .msgs_out = ctl_top_u64(ctl_rec_get(&recs[i], "msgs_out")),
            .bytes_in = ctl_top_u64(ctl_rec_get(&recs[i], "bytes_in")),
            .bytes_out = ctl_top_u64(ctl_rec_get(&recs[i], "bytes_out")),
        };
        const ctl_top_prev_t *p = n_prev ? bsearch(&cur, prev, n_prev,
            sizeof(*prev), ctl_top_prev_cmp) : NULL;
        ctl_top_prev_t zero = cur;
        ctl_top_row_t *r = &rows[i];

        if (!p)
            p = &zero;
        r->src = &recs[i];
        r->id = cur.id;
        r->rate[CTL_TOP_MSGS_IN] = ctl_top_rate(cur.msgs_in, p->msgs_in, ns);
        r->rate[CTL_TOP_MSGS_OUT] = ctl_top_rate(cur.msgs_out, p->msgs_out,
                                                 ns);
        r->rate[CTL_TOP_BYTES_IN] = ctl_top_rate(cur.bytes_in, p->bytes_in,
                                                 ns);
        r->rate[CTL_TOP_BYTES_OUT] = ctl_top_rate(cur.bytes_out,
                                                  p->bytes_out, ns);
        r->rate[CTL_TOP_MSGS] = r->rate[CTL_TOP_MSGS_IN] +
                                r->rate[CTL_TOP_MSGS_OUT];
        r->rate[CTL_TOP_BYTES] = r->rate[CTL_TOP_BYTES_IN] +
                                 r->rate[CTL_TOP_BYTES_OUT];
        for (int k = 0; k < CTL_TOP_NRATES; k++)
            snprintf(r->cell[k], sizeof(r->cell[k]), "%" PRIu64, r->rate[k]);
    }
}

/* Remember this snapshot's counters (sorted by id) for the next one.
 * *prev is replaced; returns 0 or -ENOMEM. */
static int ctl_top_remember(const ctl_rec_t *recs, size_t n,
                            ctl_top_prev_t **prev, size_t *n_prev)
{
    ctl_top_prev_t *p = n ? calloc(n, sizeof(*p)) : NULL;

    if (n && !p)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        p[i].id = ctl_top_u64(ctl_rec_get(&recs[i], "id"));
        p[i].msgs_in = ctl_top_u64(ctl_rec_get(&recs[i], "msgs_in"));
        p[i].msgs_out = ctl_top_u64(ctl_rec_get(&recs[i], "msgs_out"));
        p[i].bytes_in = ctl_top_u64(ctl_rec_get(&recs[i], "bytes_in"));
        p[i].bytes_out = ctl_top_u64(ctl_rec_get(&recs[i], "bytes_out"));
    }
    if (n > 1)
        qsort(p, n, sizeof(*p), ctl_top_prev_cmp);
    free(*prev);
    *prev = p;
    *n_prev = n;
    return 0;
}

static int ctl_top_status(broker_t *b, ctl_top_status_t *st)
{
    char *keys[CTL_STATUS_MAX_KEYS], *vals[CTL_STATUS_MAX_KEYS];
    char *text = NULL;
    size_t n;
    int r = broker_status(b, &text);

    if (r < 0)
        return r;
    memset(st, 0, sizeof(*st));
    n = ctl_status_parse(text, keys, vals, CTL_STATUS_MAX_KEYS);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = ctl_top_u64(vals[i]);
        if (!strcmp(keys[i], "uptime_ms")) st->uptime_ms = v;
        else if (!strcmp(keys[i], "clients")) st->clients = v;
        else if (!strcmp(keys[i], "names")) st->names = v;
        else if (!strcmp(keys[i], "msgs_in")) st->msgs_in = v;
        else if (!strcmp(keys[i], "msgs_out")) st->msgs_out = v;
        else if (!strcmp(keys[i], "bytes_in")) st->bytes_in = v;
        else if (!strcmp(keys[i], "bytes_out")) st->bytes_out = v;
    }
    free(text);
    return 0;
}

static void ctl_top_header(const char *path, const ctl_top_status_t *now,
                           const ctl_top_status_t *before, uint64_t ns)
{
    uint64_t up = now->uptime_ms / 1000;

    printf("brokerd %s: up %" PRIu64 "d %02" PRIu64 ":%02" PRIu64 ":%02"
           PRIu64 ", %" PRIu64 " clients, %" PRIu64 " names, msgs/s in %"
           PRIu64 " out %" PRIu64 ", bytes/s in %" PRIu64 " out %" PRIu64
           "\n\n", path, up / 86400, up / 3600 % 24, up / 60 % 60, up % 60,
           now->clients, now->names,
           ctl_top_rate(now->msgs_in, before->msgs_in, ns),
           ctl_top_rate(now->msgs_out, before->msgs_out, ns),
           ctl_top_rate(now->bytes_in, before->bytes_in, ns),
           ctl_top_rate(now->bytes_out, before->bytes_out, ns));
}

/* How many client rows fit: --top, else the terminal's height. */
static size_t ctl_top_max_rows(const ctl_opts_t *o, bool tty)
{
    struct winsize ws;

    if (o->top >= 0)
        return (size_t)o->top;
    if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
        return ws.ws_row > CTL_TOP_HEADER_LINES + 1 ?
               (size_t)ws.ws_row - CTL_TOP_HEADER_LINES - 1 : 1;
    return CTL_TOP_DEF_ROWS;
}

/* Print one screen: sorted rows, cut to what fits.  rows has n entries. */
static int ctl_top_draw(const ctl_opts_t *o, ctl_top_row_t *rows, size_t n,
                        bool tty)
{
    size_t max = ctl_top_max_rows(o, tty);
    ctl_rec_t *view;

    if (n > 1)
        qsort(rows, n, sizeof(*rows), ctl_top_row_cmp);
    if (n > max)
        n = max;
    view = calloc(n ? n : 1, sizeof(*view));
    if (!view)
        return -ENOMEM;
    /* The table shows the record's own fields plus the rate cells. */
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; ctl_cols_top[c]; c++) {
            const char *col = ctl_cols_top[c];
            const char *v = NULL;
            for (int k = 0; k < CTL_TOP_NRATES; k++)
                if (!strncmp(col, ctl_top_rate_keys[k],
                             strlen(ctl_top_rate_keys[k])) &&
                    !strcmp(col + strlen(ctl_top_rate_keys[k]), "/s"))
                    v = rows[i].cell[k];
            if (!v)
                v = ctl_rec_get(rows[i].src, col);
            view[i].keys[view[i].n] = (char *)col;
            view[i].vals[view[i].n++] = (char *)(v ? v : "");
        }
    }
    ctl_list_table(&ctl_top_kind, view, n, !o->no_legend);
    free(view);
    return 0;
}

/* Wait until `deadline` (monotonic ns) or a signal. */
static void ctl_top_sleep(uint64_t deadline)
{
    for (;;) {
        uint64_t now = ctl_now_ns();
        struct pollfd p = { .fd = ctl_sig_pipe[0], .events = POLLIN };

        if (ctl_stop || now >= deadline)
            return;
        (void)poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
    }
}

/* One refresh: fetch, compute and print.  *prev, *st and *t are updated
 * to this snapshot.  Returns 0 or a negative errno. */
static int ctl_top_refresh(const ctl_opts_t *o, broker_t *b,
                           const char *path, ctl_top_prev_t **prev,
                           size_t *n_prev, ctl_top_status_t *st,
                           uint64_t *t, bool tty)
{
    ctl_top_status_t st_now;
    ctl_top_row_t *rows = NULL;
    ctl_rec_t *recs = NULL;
    char *text = NULL;
    uint64_t now, ns;
    ssize_t n;
    int r;

    if ((r = broker_list(b, BROKER_CTRL_LIST_CLIENTS, &text, NULL)) < 0 ||
        (r = ctl_top_status(b, &st_now)) < 0) {
        free(text);
        return r;
    }
    now = ctl_now_ns();
    ns = now - *t;
    if ((n = ctl_records(text, &recs)) < 0) {
        free(text);
        return (int)n;
    }
    rows = calloc(n ? (size_t)n : 1, sizeof(*rows));
    if (!rows) {
        r = -ENOMEM;
        goto out;
    }
    ctl_top_rows(recs, (size_t)n, *prev, *n_prev, ns, rows);
    if (tty)
        fputs("\033[H\033[2J", stdout);
    ctl_top_header(path, &st_now, st, ns);
    if ((r = ctl_top_draw(o, rows, (size_t)n, tty)) < 0)
        goto out;
    if (!tty)
        putchar('\n');      /* blocks are separated by a blank line */
    if (fflush(stdout) == EOF) {
        r = -errno;
        goto out;
    }
    r = ctl_top_remember(recs, (size_t)n, prev, n_prev);
    *st = st_now;
    *t = now;
out:
    free(rows);
    free(recs);
    free(text);
    return r;
}

/* The first snapshot: counters only, nothing printed. */
static int ctl_top_baseline(broker_t *b, ctl_top_prev_t **prev,
                            size_t *n_prev, ctl_top_status_t *st,
                            uint64_t *t)
{
    ctl_rec_t *recs = NULL;
    char *text = NULL;
    ssize_t n;
    int r;

    if ((r = broker_list(b, BROKER_CTRL_LIST_CLIENTS, &text, NULL)) < 0 ||
        (r = ctl_top_status(b, st)) < 0) {
        free(text);
        return r;
    }
    *t = ctl_now_ns();
    n = ctl_records(text, &recs);
    r = n < 0 ? (int)n : ctl_top_remember(recs, (size_t)n, prev, n_prev);
    free(recs);
    free(text);
    return r;
}

static int ctl_run_top(const ctl_opts_t *o)
{
    char path[CTL_PATH_MAX];
    bool tty = isatty(STDOUT_FILENO);
    ctl_top_prev_t *prev = NULL;
    size_t n_prev = 0;
    ctl_top_status_t st;
    uint64_t t;
    broker_t *b;
    int r;

    if (ctl_top_set_sort(o->sort) < 0)
        return ctl_usage_error("unknown field '%s' for 'top'", o->sort);
    if ((r = ctl_signals_init()) < 0) {
        ctl_err("signals: %s", broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    r = ctl_top_baseline(b, &prev, &n_prev, &st, &t);
    for (long i = 0; r == 0 && !ctl_stop &&
         (o->iterations == 0 || i < o->iterations); i++) {
        ctl_top_sleep(t + (uint64_t)o->interval_ms * 1000000u);
        if (ctl_stop)
            break;
        r = ctl_top_refresh(o, b, path, &prev, &n_prev, &st, &t, tty);
    }
    broker_close(b);
    free(prev);
    if (r < 0) {
        ctl_err("top %s: %s", path, r == -ECONNRESET || r == -ESHUTDOWN ||
                r == -EPIPE ? "lost the connection to brokerd" :
                ctl_admin_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

/* ---- monitor / capture ------------------------------------------------------ */

#define CTL_MON_PREVIEW 40          /* message bytes shown per record */
#define CTL_MON_DEF_SNAP 256u       /* the broker's default snap length */
#define CTL_PCAP_LINKTYPE 147u      /* LINKTYPE_USER0 */

static uint64_t ctl_mon_records, ctl_mon_dropped;
static int ctl_opts_json;       /* monitor --json */
static FILE *ctl_cap_file;

static const char *ctl_mon_type(uint8_t type)
{
    switch (type) {
    case 3: return "DATA";
    case 4: return "CLOSE";
    case 5: return "ERROR";
    default: return "OTHER";
    }
}

/* Frame flags as words joined by ',' ("-" for none). */
static void ctl_mon_flags(uint8_t flags, char *buf, size_t len)
{
    static const char *const names[] = {
        "MORE", "CONT", "OPEN", "CLOSE", "NAME", "SHM",
    };
    size_t n = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & (1u << i))
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "," : "",
                                  names[i]);
    if (n == 0)
        snprintf(buf, len, "-");
}

static void ctl_mon_time(uint64_t ns, char *buf, size_t len)
{
    time_t sec = (time_t)(ns / 1000000000u);
    struct tm tm;

    if (!localtime_r(&sec, &tm)) {
        snprintf(buf, len, "?");
        return;
    }
    snprintf(buf, len, "%02d:%02d:%02d.%06u", tm.tm_hour, tm.tm_min,
             tm.tm_sec, (unsigned)(ns % 1000000000u / 1000u));
}

/* The message bytes of a record (after a destination name) and how many
 * there were in the original frame. */
static const uint8_t *ctl_mon_body(const broker_monitor_rec_t *r,
                                   size_t *shown, uint32_t *size)
{
    uint32_t skip = 0;

    if (r->type == 3 && (r->flags & 0x10))
        skip = r->aux <= r->length ? r->aux : r->length;
    *size = r->length - skip;
    *shown = r->captured > skip ? r->captured - skip : 0;
    return r->preview + (r->captured > skip ? skip : r->captured);
}

/* Escaped preview text of at most CTL_MON_PREVIEW bytes into buf. */
static void ctl_mon_preview(const uint8_t *p, size_t shown, uint32_t size,
                            char *buf, size_t len)
{
    size_t n = shown < CTL_MON_PREVIEW ? shown : CTL_MON_PREVIEW, o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && o + 5 < len; i++) {
        unsigned char c = p[i];
        if (c == '\\')
            o += (size_t)snprintf(buf + o, len - o, "\\\\");
        else if (c >= 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
        buf[o] = '\0';
    }
    if (n < size && o + 4 < len)
        snprintf(buf + o, len - o, "...");
}

static int ctl_monitor_msg(broker_t *b, broker_msg_t *m)
{
    char tbuf[32], fbuf[48], pbuf[4 * CTL_MON_PREVIEW + 8];
    broker_monitor_rec_t r;
    const uint8_t *body;
    size_t shown;
    uint32_t size;

    (void)b;
    if (m->kind != BROKER_MSG_MONITOR || broker_monitor_parse(m, &r) < 0)
        return 0;
    ctl_mon_records++;
    ctl_mon_dropped += (uint64_t)m->code;
    ctl_mon_time(r.time_ns, tbuf, sizeof(tbuf));
    ctl_mon_flags(r.flags, fbuf, sizeof(fbuf));
    body = ctl_mon_body(&r, &shown, &size);
    ctl_mon_preview(body, shown, size, pbuf, sizeof(pbuf));
    if (ctl_opts_json) {
        printf("{\"time\":\"%s\",\"time_ns\":%" PRIu64 ",\"type\":\"%s\","
               "\"flags\":\"%s\",\"sender\":%" PRIu64 ",\"receiver\":%"
               PRIu64 ",\"sender_stream\":%" PRIu32 ",\"receiver_stream\":%"
               PRIu32 ",\"size\":%" PRIu32 ",\"captured\":%zu,\"aux\":%"
               PRIu32 ",\"dropped\":%d,\"preview\":", tbuf, r.time_ns,
               ctl_mon_type(r.type), fbuf, r.sender, r.receiver,
               r.sender_stream, r.receiver_stream, size, shown, r.aux,
               m->code);
        ctl_json_string(stdout, pbuf);
        puts("}");
    } else {
        printf("%s %s %s %" PRIu64 " -> %" PRIu64 " stream=%" PRIu32 "->%"
               PRIu32 " size=%" PRIu32 " %s\n", tbuf, ctl_mon_type(r.type),
               fbuf, r.sender, r.receiver, r.sender_stream,
               r.receiver_stream, size, pbuf);
    }
    return fflush(stdout) == EOF ? -errno : 0;
}

/* pcapng blocks, little-endian. */
static void ctl_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int ctl_cap_write(const void *buf, size_t len)
{
    if (fwrite(buf, 1, len, ctl_cap_file) != len ||
        fflush(ctl_cap_file) == EOF)
        return errno ? -errno : -EIO;
    return 0;
}

/* Section Header Block and one Interface Description Block. */
static int ctl_cap_header(uint32_t snap)
{
    uint8_t b[28 + 20];

    ctl_le32(b, 0x0A0D0D0Au);
    ctl_le32(b + 4, 28);
    ctl_le32(b + 8, 0x1A2B3C4Du);
    b[12] = 1; b[13] = 0;               /* major 1 */
    b[14] = 0; b[15] = 0;               /* minor 0 */
    memset(b + 16, 0xff, 8);            /* section length unknown */
    ctl_le32(b + 24, 28);
    ctl_le32(b + 28, 1);
    ctl_le32(b + 32, 20);
    b[36] = CTL_PCAP_LINKTYPE & 0xff;
    b[37] = CTL_PCAP_LINKTYPE >> 8;
    b[38] = 0; b[39] = 0;
    ctl_le32(b + 40, 32 + snap);
    ctl_le32(b + 44, 20);
    return ctl_cap_write(b, sizeof(b));
}

/* One Enhanced Packet Block: the frame header, then the captured bytes. */
static int ctl_capture_msg(broker_t *b, broker_msg_t *m)
{
    static const uint8_t pad[4];
    broker_monitor_rec_t r;
    uint8_t h[28], t[4];
    uint64_t us;
    uint32_t cap, padded;
    int e;

    (void)b;
    if (m->kind != BROKER_MSG_MONITOR || broker_monitor_parse(m, &r) < 0)
        return 0;
    ctl_mon_records++;
    ctl_mon_dropped += (uint64_t)m->code;
    cap = 32 + r.captured;
    padded = (cap + 3) & ~3u;
    us = r.time_ns / 1000u;
    ctl_le32(h, 6);
    ctl_le32(h + 4, 32 + padded);
    ctl_le32(h + 8, 0);
    ctl_le32(h + 12, (uint32_t)(us >> 32));
    ctl_le32(h + 16, (uint32_t)us);
    ctl_le32(h + 20, cap);
    ctl_le32(h + 24, r.length > UINT32_MAX - 32 ? UINT32_MAX : 32 + r.length);
    ctl_le32(t, 32 + padded);
    if ((e = ctl_cap_write(h, sizeof(h))) < 0 ||
        (e = ctl_cap_write(r.header, 32)) < 0 ||
        (e = ctl_cap_write(r.preview, r.captured)) < 0 ||
        (e = ctl_cap_write(pad, padded - cap)) < 0 ||
        (e = ctl_cap_write(t, sizeof(t))) < 0)
        return e;
    return 0;
}

/* Connect, become a monitor and hand records to fn until a signal. */
static int ctl_monitor_loop(const ctl_opts_t *o, const char *verb,
                            const char *filter, ctl_msg_fn fn)
{
    char path[CTL_PATH_MAX];
    broker_t *b;
    int r;

    if ((r = ctl_signals_init()) < 0) {
        ctl_err("signals: %s", broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    if (!(b = ctl_connect(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    if ((r = broker_monitor(b, filter, o->snap)) < 0) {
        ctl_err("%s %s: %s", verb, path, r == -EINVAL ?
                "invalid filter (name:PATTERN or id:N)" :
                ctl_admin_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_event_loop(b, fn);
    broker_close(b);
    fprintf(stderr, "%" PRIu64 " records, %" PRIu64 " dropped\n",
            ctl_mon_records, ctl_mon_dropped);
    if (r < 0) {
        ctl_err("%s: %s", verb, r == -ECONNRESET ?
                "lost the connection to brokerd" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

static int ctl_run_monitor(const ctl_opts_t *o)
{
    ctl_opts_json = o->json;
    return ctl_monitor_loop(o, "monitor", o->nargs ? o->args[0] : NULL,
                            ctl_monitor_msg);
}

static int ctl_run_capture(const ctl_opts_t *o)
{
    const char *file = o->args[0];
    int r;

    if (!strcmp(file, "-")) {
        ctl_cap_file = stdout;
    } else if (!(ctl_cap_file = fopen(file, "wbe"))) {
        ctl_err("capture %s: %s", file, strerror(errno));
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_cap_header(o->snap ? o->snap : CTL_MON_DEF_SNAP);
    if (r == 0)
        r = ctl_monitor_loop(o, "capture", o->nargs > 1 ? o->args[1] : NULL,
                             ctl_capture_msg);
    else {
        ctl_err("capture %s: %s", file, strerror(-r));
        r = CTL_EXIT_RUNTIME;
    }
    if (ctl_cap_file != stdout && fclose(ctl_cap_file) == EOF &&
        r == CTL_EXIT_OK) {
        ctl_err("capture %s: %s", file, strerror(errno));
        r = CTL_EXIT_RUNTIME;
    }
    return r;
}

/* ---- command line ---------------------------------------------------------- */

static const ctl_cmd_t ctl_cmds[] = {
    { "ping",   0, 0, 0,               ctl_run_ping },
    { "status", 0, 0, CTL_ACCEPT_JSON, ctl_run_status },
    { "send",   1, 2, 0,               ctl_run_send },
    { "call",   1, 2, 0,               ctl_run_call },
    { "listen", 1, 1, 0,               ctl_run_listen },
    { "serve",  1, 1, CTL_ACCEPT_ECHO, ctl_run_serve },
    { "clients", 0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, ctl_run_list },
    { "names",   0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, ctl_run_list },
    { "streams", 0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, ctl_run_list },
    { "shm",     0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, ctl_run_list },
    { "top",     0, 0, CTL_ACCEPT_LIST | CTL_ACCEPT_TOP, ctl_run_top },
    { "kick",    1, 1, 0, ctl_run_kick },
    { "shutdown", 0, 0, 0, ctl_run_shutdown },
    { "reload",   0, 0, 0, ctl_run_reload },
    { "monitor",  0, 1, CTL_ACCEPT_JSON | CTL_ACCEPT_SNAP, ctl_run_monitor },
    { "capture",  1, 2, CTL_ACCEPT_SNAP, ctl_run_capture },
};

static const ctl_cmd_t *ctl_find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
        if (strcmp(ctl_cmds[i].name, name) == 0)
            return &ctl_cmds[i];
    return NULL;
}

static int ctl_parse_top(const char *s, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -EINVAL;
    *out = v;
    return 0;
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
    long snap;

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
        if (!optarg || !strcmp(optarg, "short"))
            o->json = CTL_JSON_SHORT;
        else if (!strcmp(optarg, "pretty"))
            o->json = CTL_JSON_PRETTY;
        else
            return ctl_usage_error("invalid --json mode '%s' (short or "
                                   "pretty)", optarg);
        if (!cmd)
            return -1;          /* global: before the command */
        need = CTL_ACCEPT_JSON;
        break;
    case CTL_OPT_NO_LEGEND:
        o->no_legend = true;
        if (!cmd)
            return -1;
        need = CTL_ACCEPT_LIST;
        break;
    case CTL_OPT_SORT:
        o->sort = optarg;
        need = CTL_ACCEPT_LIST;
        break;
    case CTL_OPT_TOP:
        if (ctl_parse_top(optarg, &o->top) < 0)
            return ctl_usage_error("invalid --top '%s' (a count >= 0)",
                                   optarg);
        need = CTL_ACCEPT_LIST;
        break;
    case CTL_OPT_ECHO:
        o->echo = true;
        need = CTL_ACCEPT_ECHO;
        break;
    case CTL_OPT_INTERVAL:
        if (ctl_parse_timeout(optarg, &o->interval_ms) < 0 ||
            o->interval_ms < 1)
            return ctl_usage_error("invalid --interval '%s' (milliseconds "
                                   ">= 1)", optarg);
        need = CTL_ACCEPT_TOP;
        break;
    case CTL_OPT_ITERATIONS:
        if (ctl_parse_top(optarg, &o->iterations) < 0)
            return ctl_usage_error("invalid --iterations '%s' (a count >= "
                                   "0, 0: no limit)", optarg);
        need = CTL_ACCEPT_TOP;
        break;
    case CTL_OPT_SNAP:
        if (ctl_parse_top(optarg, &snap) < 0 || snap < 1 || snap > 4096)
            return ctl_usage_error("invalid --snap '%s' (bytes, 1 to 4096)",
                                   optarg);
        o->snap = (uint32_t)snap;
        need = CTL_ACCEPT_SNAP;
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
    /* --echo, --sort and --top belong to their command. */
    if (!cmd)
        return ctl_usage_error("option '%s' must follow its command",
                               c == CTL_OPT_SORT ? "--sort" :
                               c == CTL_OPT_TOP ? "--top" :
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
                               !strcmp(cmd->name, "kick") ? "a client ID" :
                               !strcmp(cmd->name, "capture") ? "a FILE" :
                               cmd->min_args == 1 ? "a NAME" : "arguments");
    if (o->nargs > cmd->max_args)
        return ctl_usage_error("too many arguments for '%s'", cmd->name);
    *cmdp = cmd;
    return -1;
}

int main(int argc, char **argv)
{
    ctl_opts_t o = { .timeout_ms = CTL_DEF_TIMEOUT_MS, .top = -1,
                     .interval_ms = CTL_TOP_DEF_INTERVAL_MS };
    const ctl_cmd_t *cmd = NULL;
    int r = ctl_parse(argc, argv, &o, &cmd);

    if (r >= 0)
        return r;
    return cmd->run(&o);
}
