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
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

broker_t *ctl_connect(const ctl_opts_t *o, char *path, size_t len)
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

int ctl_event_loop(broker_t *b, ctl_handle_fn fn, void *ctx)
{
    while (!ctl_stop) {
        broker_msg_t *msg = NULL;
        int r = broker_recv(b, &msg, 0);

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
        /* Nothing buffered: sleep on the socket and the signal pipe.  The
         * 1 s wake-up lets the library expire stale partial messages. */
        if ((r = ctl_wait(broker_fd(b), 1000)) < 0)
            return r;
    }
    return 0;
}
