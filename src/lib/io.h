/*
 * io.h - libbroker layer 1: the socket (prefix bk_io_).  Not installed.
 *
 * Owns the connection's fd, the buffer packets are read into, and the
 * sticky fatal error.  Below it, src/common/sockio.c makes the raw
 * syscalls; above it, every other module reaches the socket only through
 * these functions.
 *
 * Ownership:
 *   - io->fd is the library's socket, closed by bk_io_fini();
 *   - io->rbuf holds the packet last read by bk_io_read() until the next
 *     read; fds received with it belong to the caller of bk_io_read();
 *   - fds passed to bk_io_send() stay the caller's (SCM_RIGHTS dups them).
 *
 * The sticky error (io->err, negative errno, 0 while the connection is
 * fine) is set once by bk_io_fail() and never cleared: every later
 * operation returns it.
 *
 * Waiting.  Whoever reads input (in.c, layer 6) registers bk_io_hooks
 * once at creation: lower layers that must wait for the socket (a full
 * socket, a reply, a released buffer) call bk_io_wait(), which reads and
 * handles input meanwhile through the hook, without calling up.
 */
#ifndef BK_IO_H
#define BK_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct bk_io;

/* Set by the input layer (in.c); every hook is required. */
struct bk_io_hooks {
    /* Read and handle what is there now, up to budget packets.  Returns
     * the number of packets read or the sticky error. */
    int (*pump)(struct bk_io *io, unsigned budget);
    /* Block until something happened (see bk_io_wait). */
    int (*wait)(struct bk_io *io, bool want_write, int64_t deadline);
    /* The stream watched by the blocking operation in progress was closed
     * or failed meanwhile. */
    bool (*aborted)(const struct bk_io *io);
};

struct bk_io {
    int fd;
    int err;                    /* sticky fatal error, negative, or 0 */
    bool bye;                   /* the broker said BYE */
    uint8_t *rbuf;              /* input packet buffer */
    size_t rbuf_len;
    int64_t rcvtimeo_ms;        /* SO_RCVTIMEO now set (0: none) */
    const struct bk_io_hooks *hooks;
};

/* Monotonic milliseconds, and a deadline timeout_ms from now (-1: none). */
uint64_t bk_io_now_ms(void);
int64_t bk_io_deadline(int timeout_ms);

/* Take fd; allocate a read buffer of rbuf_len bytes.  0 or -ENOMEM (fd is
 * then left to the caller). */
int bk_io_init(struct bk_io *io, int fd, size_t rbuf_len);
void bk_io_fini(struct bk_io *io);
/* Resize the read buffer (after WELCOME).  0 or -ENOMEM. */
int bk_io_resize(struct bk_io *io, size_t rbuf_len);

/* Make err (negative; anything else counts as -EPROTO) the sticky error,
 * unless one is set already. */
void bk_io_fail(struct bk_io *io, int err);
/* The peer went away: -ESHUTDOWN after a BYE, else -ECONNRESET. */
void bk_io_lost(struct bk_io *io);

/* Read one packet into io->rbuf, its fds into fds[0..*nfds).  Returns the
 * packet length (> 0), -EAGAIN when nothing is there, or (after making it
 * sticky) the connection's fatal error. */
ssize_t bk_io_read(struct bk_io *io, int *fds, unsigned *nfds,
                   unsigned maxfds);

/* Write one packet.  Returns 0, -EAGAIN, another negative errno of the
 * send (not made sticky), or, when the connection is gone, the sticky
 * error after reading what is left (a BYE, errors) through the pump
 * hook. */
/* Read one packet, waiting for it until `until` (bk_io_now_ms time; -1:
 * no limit) in the read itself: one system call where poll and two reads
 * would be; once until has passed, only what is there now.  Returns as
 * bk_io_read: -EAGAIN when nothing came (until passed, or the socket's
 * timeout ran out first: try again), -EINTR on a signal. */
ssize_t bk_io_read_wait(struct bk_io *io, int *fds, unsigned *nfds,
                        unsigned maxfds, int64_t until);
int bk_io_send(struct bk_io *io, const struct iovec *iov, int iovcnt,
               const int *fds, unsigned nfds);

/* poll() the socket for events (POLLIN, POLLOUT) until the absolute time
 * until (ms, -1: no limit).  Returns the revents (0 once until has
 * passed), -EINTR, another negative errno, or the sticky error -EBADF
 * when the fd is not open. */
int bk_io_poll(struct bk_io *io, short events, int64_t until);

/* Block until something happened: input was read (and handled), a timer
 * of the input layer fired, or (want_write) the socket is writable;
 * pending output is written meanwhile.  Returns 0 so the caller re-checks
 * what it waits for, -ETIMEDOUT once deadline (-1: none) has passed, or
 * the sticky error. */
static inline int bk_io_wait(struct bk_io *io, bool want_write,
                             int64_t deadline)
{
    return io->hooks->wait(io, want_write, deadline);
}

/* Whether the blocking operation in progress must give up (-ECANCELED). */
static inline bool bk_io_aborted(const struct bk_io *io)
{
    return io->hooks->aborted(io);
}

/* Read and handle what input is there now (see bk_io_hooks.pump). */
static inline int bk_io_pump(struct bk_io *io, unsigned budget)
{
    return io->hooks->pump(io, budget);
}

#endif
