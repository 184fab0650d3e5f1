/*
 * sdaemon.c - socket activation and readiness notification, following
 * the service manager's documented environment protocol (no libsystemd).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "error.h"
#include "log.h"
#include "sdaemon.h"

/* ---- socket activation ------------------------------------------------------ */

/* Parse a whole decimal number in [min, max]; -EINVAL otherwise. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static void unset_listen_env(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

static const char *type_name(int type)
{
    switch (type) {
    case SOCK_STREAM: return "SOCK_STREAM";
    case SOCK_DGRAM: return "SOCK_DGRAM";
    case SOCK_SEQPACKET: return "SOCK_SEQPACKET";
    case SOCK_RAW: return "SOCK_RAW";
    default: return "an unknown type";
    }
}

static int sockopt_int(int fd, int opt, int *val)
{
    socklen_t len = sizeof(*val);

    if (getsockopt(fd, SOL_SOCKET, opt, val, &len) < 0)
        return -errno;
    return 0;
}

/* Refuse anything but a listening AF_UNIX SOCK_SEQPACKET socket. */
static int check_socket(int fd)
{
    int domain, type, listening, r;

    if (fcntl(fd, F_GETFD) < 0) {
        bk_err("socket activation: fd %d is not open", fd);
        return -EBADF;
    }
    if ((r = sockopt_int(fd, SO_DOMAIN, &domain)) < 0 ||
        (r = sockopt_int(fd, SO_TYPE, &type)) < 0 ||
        (r = sockopt_int(fd, SO_ACCEPTCONN, &listening)) < 0) {
        bk_err("socket activation: fd %d is not a socket: %s", fd,
               bk_sys_strerror(-r));
        return r;
    }
    if (domain != AF_UNIX) {
        bk_err("socket activation: fd %d is not an AF_UNIX socket "
               "(address family %d); use ListenSequentialPacket= with a "
               "path", fd, domain);
        return -EAFNOSUPPORT;
    }
    if (type != SOCK_SEQPACKET) {
        bk_err("socket activation: fd %d is %s, not SOCK_SEQPACKET; use "
               "ListenSequentialPacket=", fd, type_name(type));
        return -ESOCKTNOSUPPORT;
    }
    if (!listening) {
        bk_err("socket activation: fd %d is not a listening socket "
               "(Accept=yes is not supported)", fd);
        return -EINVAL;
    }
    return 0;
}

/* The socket's bound address as a path, or "@name" if abstract. */
static int bound_path(int fd, char *path, size_t len)
{
    struct sockaddr_un sa;
    socklen_t salen = sizeof(sa);
    size_t n;

    memset(&sa, 0, sizeof(sa));
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0) {
        int e = errno;
        bk_err("socket activation: getsockname: %s", bk_sys_strerror(e));
        return -e;
    }
    if (salen <= offsetof(struct sockaddr_un, sun_path)) {
        bk_err("socket activation: fd %d has no address", fd);
        return -EDESTADDRREQ;
    }
    n = salen - offsetof(struct sockaddr_un, sun_path);
    if (sa.sun_path[0] == '\0') {
        /* Abstract: the name is every byte after the leading NUL. */
        if (n > len - 1 || memchr(sa.sun_path + 1, '\0', n - 1)) {
            bk_err("socket activation: abstract address of fd %d cannot "
                   "be shown", fd);
            return -ENAMETOOLONG;
        }
        path[0] = '@';
        memcpy(path + 1, sa.sun_path + 1, n - 1);
        path[n] = '\0';
        return 0;
    }
    n = strnlen(sa.sun_path, n);
    if (n >= len) {
        bk_err("socket activation: path of fd %d is too long", fd);
        return -ENAMETOOLONG;
    }
    memcpy(path, sa.sun_path, n);
    path[n] = '\0';
    return 0;
}

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);

    if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) {
        int e = errno;
        bk_err("socket activation: fcntl on fd %d: %s", fd, bk_sys_strerror(e));
        return -e;
    }
    return 0;
}

int bk_sd_listen_fd(char *path, size_t len)
{
    const char *pid_env = getenv("LISTEN_PID");
    long pid, nfds;
    int fd = BK_SD_LISTEN_FDS_START, r;

    if (!pid_env)
        return 0;
    if (parse_long(pid_env, 1, INT_MAX, &pid) < 0) {
        bk_err("socket activation: LISTEN_PID='%s' is not a pid", pid_env);
        unset_listen_env();
        return -EINVAL;
    }
    if (pid != (long)getpid()) {
        /* Meant for another process (we inherited the environment). */
        unset_listen_env();
        return 0;
    }
    r = parse_long(getenv("LISTEN_FDS"), 0, INT_MAX - fd, &nfds);
    unset_listen_env();
    if (r < 0) {
        bk_err("socket activation: LISTEN_FDS is missing or not a number");
        return -EINVAL;
    }
    if (nfds == 0)
        return 0;
    if (nfds > 1)
        bk_warn("socket activation: %ld sockets passed; using fd %d only",
                nfds, fd);
    if ((r = check_socket(fd)) < 0 || (r = bound_path(fd, path, len)) < 0 ||
        (r = set_flags(fd)) < 0)
        return r;
    return fd;
}

/* ---- notification ------------------------------------------------------------- */

/* Fill a datagram address from $NOTIFY_SOCKET ("/path" or "@abstract"). */
static int notify_addr(const char *name, struct sockaddr_un *sa,
                       socklen_t *salen)
{
    size_t n = strlen(name);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if ((name[0] != '/' && name[0] != '@') || n < 2 ||
        n > sizeof(sa->sun_path) - (name[0] == '/'))
        return -EINVAL;
    memcpy(sa->sun_path, name, n);
    if (name[0] == '@')
        sa->sun_path[0] = '\0';
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
                         (name[0] == '/'));
    return 0;
}

int bk_sd_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t salen;
    ssize_t n;
    int fd, e;

    if (!name || !*name)
        return 0;
    if (notify_addr(name, &sa, &salen) < 0) {
        bk_warn("NOTIFY_SOCKET='%s' is not a Unix socket path; not "
                "notifying", name);
        return -EINVAL;
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        bk_warn("notify: socket: %s", bk_sys_strerror(e));
        return -e;
    }
    n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
               (struct sockaddr *)&sa, salen);
    e = errno;
    close(fd);
    if (n < 0) {
        bk_warn("cannot notify %s: %s", name, bk_sys_strerror(e));
        return -e;
    }
    return BK_SD_NOTIFIED;
}

int bk_sd_notify_ready(void)
{
    char state[48];

    snprintf(state, sizeof(state), "READY=1\nMAINPID=%d", (int)getpid());
    return bk_sd_notify(state);
}
