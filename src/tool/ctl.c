/*
 * ctl.c - what every brokerctl command uses (prefix ctl_): messages to
 * the user, the connection to brokerd, SIGINT/SIGTERM, and the event
 * loop of the commands that run until a signal.
 *
 * Owns the signal state: a flag and a self-pipe (both ends close-on-exec,
 * kept open until the process exits) that the handler writes to, so that
 * a poll() wakes up on a signal.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ctl.h"

/* ---- messages ----------------------------------------------------------- */

/* "brokerctl: ", the message, then tail on stderr. */
static void ctl_vsay(const char *tail, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void ctl_vsay(const char *tail, const char *fmt, va_list ap)
{
    fputs("brokerctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(tail, stderr);
}

void ctl_err(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vsay("\n", fmt, ap);
    va_end(ap);
}

int ctl_usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vsay(" (try 'brokerctl --help')\n", fmt, ap);
    va_end(ap);
    return CTL_EXIT_USAGE;
}

const char *ctl_priv_strerror(int err)
{
    if (err == -EPERM)
        return "permission denied (needs root or the broker's user)";
    return broker_strerror(err);
}

uint64_t ctl_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- connection --------------------------------------------------------- */

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

/* Who may connect to the socket at path: its owner, group and mode, for
 * the permission error. */
static void ctl_socket_owner(const char *path, char *buf, size_t len)
{
    struct stat st;
    struct passwd *pw;
    struct group *gr;

    if (stat(path, &st) < 0) {
        snprintf(buf, len, "a directory on the way may not be searched");
        return;
    }
    pw = getpwuid(st.st_uid);
    gr = getgrgid(st.st_gid);
    snprintf(buf, len, "the socket is %s:%s mode %04o; connecting needs "
             "write permission on it (its owner, group or root)",
             pw ? pw->pw_name : "?", gr ? gr->gr_name : "?",
             (unsigned)(st.st_mode & 07777));
}

/* ECONNREFUSED: a file that is no socket, or a socket nobody listens on. */
static void ctl_refused(const char *path)
{
    struct stat st;

    if (stat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
        ctl_err("cannot connect to brokerd at %s: not a socket (%s)", path,
                S_ISDIR(st.st_mode) ? "a directory" :
                S_ISREG(st.st_mode) ? "a regular file" : "another file type");
    else
        ctl_err("cannot connect to brokerd at %s: the socket exists but no "
                "broker listens on it (a stale socket: start brokerd, or "
                "remove it)", path);
}

/* The words for a failed connect or handshake, or NULL where the caller
 * needs more than a fixed text (ENOENT, ECONNREFUSED, EACCES). */
static const char *ctl_connect_why(int err)
{
    switch (err) {
    case -ENOTDIR:      return "a component of the path is not a directory";
    case -ENAMETOOLONG: return "socket path too long (at most 107 bytes)";
    case -ELOOP:        return "too many symbolic links in the path";
    case -ENOTSOCK:     return "not a socket";
    case -EPROTOTYPE:   return "a socket of another type, not a broker's "
                               "(brokerd listens with SOCK_SEQPACKET)";
    case -EAGAIN:       return "the broker's listen backlog is full (it is "
                               "overloaded or stuck): try again";
    case -ENOSR:        return "the broker refused the connection: too many "
                               "clients (its max-clients or "
                               "max-clients-per-uid limit)";
    case -EPROTO:       return "the peer does not speak the broker protocol "
                               "(not a brokerd?)";
    case -EPROTONOSUPPORT:
                        return "the broker speaks another protocol version";
    case -ETIMEDOUT:    return "no answer to the handshake (not a brokerd, "
                               "or it is stuck)";
    case -ECONNRESET:
    case -EPIPE:        return "the connection closed during the handshake "
                               "(not a brokerd, or it is stopping)";
    case -ESHUTDOWN:    return "the broker is shutting down";
    case -EMFILE:
    case -ENFILE:       return "out of file descriptors";
    default:            return NULL;
    }
}

void ctl_connect_error(const char *path, int err)
{
    const char *why = ctl_connect_why(err);
    char who[256];

    if (err == -ENOENT) {
        ctl_err("no broker socket at %s: is brokerd running? (brokerd -f, "
                "or systemctl start brokerd.socket)", path);
    } else if (err == -ECONNREFUSED) {
        ctl_refused(path);
    } else if ((err == -EACCES || err == -EPERM) && access(path, W_OK) == 0) {
        /* the socket let us in: the broker said no in the handshake */
        ctl_err("cannot connect to brokerd at %s: the broker refused the "
                "connection (its allow-connect rules)", path);
    } else if (err == -EACCES || err == -EPERM) {
        ctl_socket_owner(path, who, sizeof(who));
        ctl_err("cannot connect to brokerd at %s: permission denied (%s)",
                path, who);
    } else {
        ctl_err("cannot connect to brokerd at %s: %s", path,
                why ? why : broker_strerror(err));
    }
}

broker_t *ctl_connect(const ctl_opts_t *o, char *path, size_t len)
{
    broker_t *b = NULL;
    int r = ctl_path(o, path, len);

    if (r < 0) {
        ctl_err("cannot connect to brokerd at %s: %s",
                o->socket && *o->socket ? o->socket : "the default path",
                ctl_connect_why(r) ? ctl_connect_why(r)
                                   : broker_strerror(r));
        return NULL;
    }
    r = broker_connect(path, &b);
    if (r < 0) {
        ctl_connect_error(path, r);
        return NULL;
    }
    return b;
}

/* ---- signals ------------------------------------------------------------ */

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

broker_t *ctl_start(const ctl_opts_t *o, char *path, size_t len)
{
    int r = ctl_signals_init();

    if (r < 0) {
        ctl_err("signals: %s", broker_strerror(r));
        return NULL;
    }
    return ctl_connect(o, path, len);
}

bool ctl_stopped(void)
{
    return ctl_stop != 0;
}

int ctl_write_all(int fd, const void *data, size_t len)
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

int ctl_wait(int fd, int timeout_ms)
{
    struct pollfd p[2] = {
        { .fd = fd, .events = POLLIN },         /* poll skips fd < 0 */
        { .fd = ctl_sig_pipe[0], .events = POLLIN },
    };

    if (poll(p, 2, timeout_ms) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

/* ---- event loop --------------------------------------------------------- */

/* --reconnect (BROKER_OPT_RECONNECT): one line on stderr when the
 * connection is lost and one when it is back, with what did not come
 * back.  Whether msg was such an event. */
static bool ctl_reconnect_event(const broker_msg_t *msg, bool *down)
{
    if (msg->kind == BROKER_MSG_DISCONNECTED) {
        fprintf(stderr, "brokerctl: lost the connection to brokerd (%s): "
                "reconnecting\n", broker_strerror(msg->code));
        *down = true;
        return true;
    }
    if (msg->kind != BROKER_MSG_RECONNECTED)
        return false;
    *down = false;
    if (msg->code == 0) {
        fprintf(stderr, "brokerctl: reconnected to brokerd\n");
        return true;
    }
    fprintf(stderr, "brokerctl: reconnected to brokerd; not back: ");
    for (size_t i = 0; i < msg->len; i++) {
        char c = ((const char *)msg->data)[i];

        fputs(c == '\n' ? (i + 1 < msg->len ? "; " : "") : "", stderr);
        if (c != '\n')
            fputc(c, stderr);
    }
    fputc('\n', stderr);
    return true;
}

int ctl_event_loop(broker_t *b, ctl_handle_fn fn, void *ctx)
{
    bool down = false;          /* reconnecting: broker_recv waits */

    while (!ctl_stop) {
        broker_msg_t *msg = NULL;
        int r = broker_recv(b, &msg, down ? 1000 : 0);

        if (r == 0 && ctl_reconnect_event(msg, &down)) {
            broker_msg_free(msg);
            continue;
        }
        if (r == 0) {
            r = fn(b, msg, ctx);
            broker_msg_free(msg);
            if (r != 0)
                return r < 0 ? r : 0;
            continue;
        }
        if (r == -ESHUTDOWN)    /* the broker said BYE */
            return 0;
        if (r != -ETIMEDOUT && r != -EAGAIN && r != -EINTR)
            return r;
        if (down)
            continue;
        /* Nothing buffered: sleep on the socket and the signal pipe.  The
         * 1 s wake-up lets the library expire stale partial messages. */
        if ((r = ctl_wait(broker_fd(b), 1000)) < 0)
            return r;
    }
    return 0;
}
