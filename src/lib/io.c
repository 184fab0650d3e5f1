/*
 * io.c - libbroker layer 1: the socket, its read buffer, the sticky
 * fatal error, and poll() with deadlines.
 */
#include "config.h"
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include "sockio.h"
#include "io.h"

uint64_t bk_io_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t bk_io_deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return -1;
    return (int64_t)bk_io_now_ms() + timeout_ms;
}

int bk_io_init(struct bk_io *io, int fd, size_t rbuf_len)
{
    io->rbuf = malloc(rbuf_len);
    if (!io->rbuf)
        return -ENOMEM;
    io->rbuf_len = rbuf_len;
    io->rcvtimeo_ms = 0;
    io->fd = fd;
    return 0;
}

void bk_io_fini(struct bk_io *io)
{
    free(io->rbuf);
    io->rbuf = NULL;
    if (io->fd >= 0)
        close(io->fd);
    io->fd = -1;
}

int bk_io_resize(struct bk_io *io, size_t rbuf_len)
{
    uint8_t *rb = realloc(io->rbuf, rbuf_len);

    if (!rb)
        return -ENOMEM;
    io->rbuf = rb;
    io->rbuf_len = rbuf_len;
    return 0;
}

void bk_io_fail(struct bk_io *io, int err)
{
    if (!io->err)
        io->err = err < 0 ? err : -EPROTO;
}

void bk_io_lost(struct bk_io *io)
{
    bk_io_fail(io, io->bye ? -ESHUTDOWN : -ECONNRESET);
}

static ssize_t read_result(struct bk_io *io, ssize_t len)
{
    if (len == -EAGAIN || len == -EINTR || len > 0)
        return len;
    if (len == 0 || len == -ECONNRESET || len == -ENOTCONN ||
        len == -EPIPE) {
        bk_io_lost(io);
        return io->err;
    }
    bk_io_fail(io, (int)len);
    return io->err;
}

/* A reset is reported before the packets the peer sent ahead of it (a
 * broker that refuses a client writes its ERROR and closes without
 * reading the HELLO): after ECONNRESET, take what is still queued. */
static ssize_t after_reset(struct bk_io *io, ssize_t len, int *fds,
                           unsigned *nfds, unsigned maxfds)
{
    if (len != -ECONNRESET)
        return len;
    len = bk_sock_recv(io->fd, io->rbuf, io->rbuf_len, fds, nfds, maxfds);
    return len > 0 ? len : -ECONNRESET;
}

ssize_t bk_io_read(struct bk_io *io, int *fds, unsigned *nfds,
                   unsigned maxfds)
{
    ssize_t len;

    if (io->err)
        return io->err;
    len = bk_sock_recv(io->fd, io->rbuf, io->rbuf_len, fds, nfds, maxfds);
    return read_result(io, after_reset(io, len, fds, nfds, maxfds));
}

/* SO_RCVTIMEO for a wait of ms (0: none).  A timeout already set that is
 * no longer than ms and at least half of it is kept: the read may end
 * early and is then repeated, but the option is not set for every read. */
static void set_rcvtimeo(struct bk_io *io, int64_t ms)
{
    struct timeval tv;

    if (ms == io->rcvtimeo_ms ||
        (ms > 0 && io->rcvtimeo_ms > 0 && io->rcvtimeo_ms <= ms &&
         2 * io->rcvtimeo_ms >= ms))
        return;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (setsockopt(io->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0)
        io->rcvtimeo_ms = ms;
}

ssize_t bk_io_read_wait(struct bk_io *io, int *fds, unsigned *nfds,
                        unsigned maxfds, int64_t until)
{
    int64_t ms = 0;
    ssize_t len;

    if (io->err)
        return io->err;
    if (until >= 0) {
        ms = until - (int64_t)bk_io_now_ms();
        if (ms <= 0)            /* no time left: what is there now */
            return bk_io_read(io, fds, nfds, maxfds);
    }
    set_rcvtimeo(io, ms);
    len = bk_sock_recv_wait(io->fd, io->rbuf, io->rbuf_len, fds, nfds,
                            maxfds, true);
    return read_result(io, after_reset(io, len, fds, nfds, maxfds));
}

int bk_io_send(struct bk_io *io, const struct iovec *iov, int iovcnt,
               const int *fds, unsigned nfds)
{
    int r = bk_sock_send(io->fd, iov, iovcnt, fds, nfds);

    if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) {
        bk_io_pump(io, 4096);
        bk_io_lost(io);
        return io->err;
    }
    return r;
}

int bk_io_poll(struct bk_io *io, short events, int64_t until)
{
    struct pollfd pfd = { .fd = io->fd, .events = events };
    int64_t now = (int64_t)bk_io_now_ms();
    int timeout, n;

    if (until < 0)
        timeout = -1;
    else if (until <= now)
        timeout = 0;
    else
        timeout = until - now > INT_MAX ? INT_MAX : (int)(until - now);
    n = poll(&pfd, 1, timeout);
    if (n < 0)
        return -errno;
    if (n == 0)
        return 0;
    if (pfd.revents & POLLNVAL) {
        bk_io_fail(io, -EBADF);
        return io->err;
    }
    return pfd.revents;
}
