/*
 * sockio.h - packet I/O on SOCK_SEQPACKET sockets with fd passing, and the
 * socket path rules shared by brokerd, libbroker and brokerctl
 * (prefix bk_sock_).
 */
#ifndef BK_SOCKIO_H
#define BK_SOCKIO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Resolve the socket path: explicit (if non-NULL and non-empty), else
 * $BROKER_SOCKET, else $XDG_RUNTIME_DIR/brokerd.sock, else
 * /run/brokerd.sock for root, else /tmp/brokerd-$UID/brokerd.sock.
 * Returns 0 or -ENAMETOOLONG (the path must fit sockaddr_un). */
int bk_sock_path(const char *explicit_path, char *out, size_t outlen);

/* Receive one packet.  Received fds are opened close-on-exec and stored in
 * fds[0..*nfds); the caller owns them.  Returns the packet length, 0 on
 * orderly EOF, or a negative errno: -EAGAIN when nothing is there, -EPROTO
 * when the packet or its control data was truncated (any fds that did
 * arrive are closed before returning). */
/* The fds a received packet's control data carries, into fds[0..*nfds)
 * (close-on-exec if received with MSG_CMSG_CLOEXEC).  0, or -EPROTO with
 * every fd closed when the control data holds anything but SCM_RIGHTS,
 * more than maxfds fds, or it or the packet was cut short. */
int bk_sock_take_fds(struct msghdr *mh, int *fds, unsigned *nfds,
                     unsigned maxfds);
/* The same, waiting for a packet when `wait` (on a socket without
 * O_NONBLOCK; SO_RCVTIMEO bounds the wait, -EAGAIN once it passed). */
ssize_t bk_sock_recv_wait(int fd, void *buf, size_t len, int *fds,
                          unsigned *nfds, unsigned maxfds, bool wait);
ssize_t bk_sock_recv(int fd, void *buf, size_t len, int *fds,
                     unsigned *nfds, unsigned maxfds);

/* Send one packet made of iov[0..iovcnt) with nfds descriptors attached.
 * The fds stay owned by the caller.  Returns 0, -EAGAIN, -EPIPE or another
 * negative errno.  A SEQPACKET send is all-or-nothing. */
int bk_sock_send(int fd, const struct iovec *iov, int iovcnt,
                 const int *fds, unsigned nfds);

/* Connect to a broker socket (close-on-exec).  The socket is left
 * blocking: every call here passes MSG_DONTWAIT but bk_sock_recv_wait. */
int bk_sock_connect(const char *path);

void bk_close_fds(int *fds, unsigned n);

#endif
