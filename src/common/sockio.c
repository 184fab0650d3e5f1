/*
 * sockio.c - packet I/O with fd passing, socket path resolution.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "proto.h"
#include "sockio.h"

int bk_sock_path(const char *explicit_path, char *out, size_t outlen)
{
    const char *env;
    int n;
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path);

    if (outlen < max)
        max = outlen;
    if (explicit_path && *explicit_path)
        n = snprintf(out, outlen, "%s", explicit_path);
    else if ((env = getenv("BROKER_SOCKET")) && *env)
        n = snprintf(out, outlen, "%s", env);
    else if ((env = getenv("XDG_RUNTIME_DIR")) && *env)
        n = snprintf(out, outlen, "%s/brokerd.sock", env);
    else if (geteuid() == 0)
        n = snprintf(out, outlen, "/run/brokerd.sock");
    else
        n = snprintf(out, outlen, "/tmp/brokerd-%u/brokerd.sock",
                     (unsigned)geteuid());
    if (n < 0 || (size_t)n >= max)
        return -ENAMETOOLONG;
    return 0;
}

void bk_close_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

int bk_sock_take_fds(struct msghdr *mh, int *fds, unsigned *nfds,
                     unsigned maxfds)
{
    bool bad = mh->msg_flags & (MSG_CTRUNC | MSG_TRUNC);

    *nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        const unsigned char *d = CMSG_DATA(c);
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            bad = true;
            continue;
        }
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, d + i * sizeof(int), sizeof(f));
            if (*nfds < maxfds) {
                fds[(*nfds)++] = f;
            } else {
                close(f);
                bad = true;
            }
        }
    }
    if (bad) {
        bk_close_fds(fds, *nfds);
        *nfds = 0;
        return -EPROTO;
    }
    return 0;
}

ssize_t bk_sock_recv(int fd, void *buf, size_t len, int *fds,
                     unsigned *nfds, unsigned maxfds)
{
    return bk_sock_recv_wait(fd, buf, len, fds, nfds, maxfds, false);
}

ssize_t bk_sock_recv_wait(int fd, void *buf, size_t len, int *fds,
                          unsigned *nfds, unsigned maxfds, bool wait)
{
    union {
        char buf[CMSG_SPACE(BK_MAX_FDS_HARD * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { buf, len };
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
    };
    ssize_t n;

    *nfds = 0;
    if (wait) {                 /* a signal ends the wait: the caller
                                   decides whether to wait again */
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            return -EINTR;
    } else {
        do {
            n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
    }
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (bk_sock_take_fds(&mh, fds, nfds, maxfds) < 0)
        return -EPROTO;
    if (n == 0 && *nfds) {
        bk_close_fds(fds, *nfds);
        *nfds = 0;
        return -EPROTO;
    }
    return n;
}

int bk_sock_send(int fd, const struct iovec *iov, int iovcnt,
                 const int *fds, unsigned nfds)
{
    union {
        char buf[CMSG_SPACE(BK_MAX_FDS_HARD * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = { .msg_iov = (struct iovec *)iov,
                         .msg_iovlen = (size_t)iovcnt };
    ssize_t n;

    if (nfds > BK_MAX_FDS_HARD)
        return -EINVAL;
    if (nfds) {
        struct cmsghdr *c;
        memset(ctl.buf, 0, CMSG_SPACE(nfds * sizeof(int)));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    do {
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return 0;
}

int bk_sock_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* connect blocking, so a full backlog waits instead of failing; the
     * socket stays blocking: every read and write but one that means to
     * wait (bk_sock_recv_wait) passes MSG_DONTWAIT */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}
