/*
 * test_sockio.c - socket path resolution and packet I/O with fd passing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <criterion/criterion.h>
#include "proto.h"
#include "sockio.h"

#define SUN_LEN_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    cr_assert_not_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;       /* the directory's own fd */
}

static void clear_env(void)
{
    unsetenv("BROKER_SOCKET");
    unsetenv("XDG_RUNTIME_DIR");
}

/* ---- bk_sock_path ------------------------------------------------------ */

Test(path, explicit_wins)
{
    char out[256];

    setenv("BROKER_SOCKET", "/env/sock", 1);
    setenv("XDG_RUNTIME_DIR", "/xdg", 1);
    cr_assert_eq(bk_sock_path("/explicit/sock", out, sizeof(out)), 0);
    cr_assert_str_eq(out, "/explicit/sock");
}

Test(path, empty_explicit_falls_through)
{
    char out[256];

    setenv("BROKER_SOCKET", "/env/sock", 1);
    cr_assert_eq(bk_sock_path("", out, sizeof(out)), 0);
    cr_assert_str_eq(out, "/env/sock");
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "/env/sock");
}

Test(path, broker_socket_before_xdg)
{
    char out[256];

    setenv("BROKER_SOCKET", "/env/b.sock", 1);
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "/env/b.sock");
}

Test(path, xdg_runtime_dir)
{
    char out[256];

    clear_env();
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "/run/user/1000/brokerd.sock");
    setenv("BROKER_SOCKET", "", 1);     /* empty counts as unset */
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "/run/user/1000/brokerd.sock");
}

Test(path, fallback_by_uid)
{
    char out[256], want[256];

    clear_env();
    setenv("XDG_RUNTIME_DIR", "", 1);   /* empty counts as unset */
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), 0);
    if (geteuid() == 0) {
        cr_assert_str_eq(out, "/run/brokerd.sock");
        /* Check the unprivileged fallback too, as nobody. */
        cr_assert_eq(seteuid(65534), 0, "seteuid: %s", strerror(errno));
        cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), 0);
        cr_assert_eq(seteuid(0), 0);
        cr_assert_str_eq(out, "/tmp/brokerd-65534/brokerd.sock");
    } else {
        snprintf(want, sizeof(want), "/tmp/brokerd-%u/brokerd.sock",
                 (unsigned)geteuid());
        cr_assert_str_eq(out, want);
    }
}

Test(path, too_long)
{
    char longp[SUN_LEN_MAX + 8];
    char out[512];

    clear_env();
    /* SUN_LEN_MAX - 1 characters plus the NUL fit exactly. */
    memset(longp, 'p', sizeof(longp));
    longp[0] = '/';
    longp[SUN_LEN_MAX - 1] = '\0';
    cr_assert_eq(bk_sock_path(longp, out, sizeof(out)), 0);
    cr_assert_eq(strlen(out), SUN_LEN_MAX - 1);

    longp[SUN_LEN_MAX - 1] = 'p';
    longp[SUN_LEN_MAX] = '\0';
    cr_assert_eq(bk_sock_path(longp, out, sizeof(out)), -ENAMETOOLONG);

    setenv("BROKER_SOCKET", longp, 1);
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), -ENAMETOOLONG);

    /* The XDG directory fits but the appended file name does not. */
    unsetenv("BROKER_SOCKET");
    longp[SUN_LEN_MAX - 10] = '\0';
    setenv("XDG_RUNTIME_DIR", longp, 1);
    cr_assert_eq(bk_sock_path(NULL, out, sizeof(out)), -ENAMETOOLONG);

    /* An output buffer smaller than the path. */
    cr_assert_eq(bk_sock_path("/a/b/c/d", out, 5), -ENAMETOOLONG);
    cr_assert_eq(bk_sock_path("/a/b/c/d", out, 9), 0);
    cr_assert_str_eq(out, "/a/b/c/d");
}

/* ---- bk_sock_send / bk_sock_recv ---------------------------------------- */

static void sp(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

Test(io, bytes_intact_over_iovecs)
{
    int sv[2];
    uint8_t a[100], b[3000], buf[8192];
    struct iovec iov[3] = { { a, sizeof(a) }, { b, sizeof(b) },
                            { (void *)"tail", 4 } };
    int fds[4];
    unsigned nfds = 99;

    for (unsigned i = 0; i < sizeof(a); i++)
        a[i] = (uint8_t)(i ^ 0x5a);
    for (unsigned i = 0; i < sizeof(b); i++)
        b[i] = (uint8_t)(i * 13);
    sp(sv);
    cr_assert_eq(bk_sock_send(sv[0], iov, 3, NULL, 0), 0);
    cr_assert_eq(bk_sock_send(sv[0], iov, 1, NULL, 0), 0);

    ssize_t n = bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 4);
    cr_assert_eq(n, (ssize_t)(sizeof(a) + sizeof(b) + 4));
    cr_assert_eq(nfds, 0);
    cr_assert_arr_eq(buf, a, sizeof(a));
    cr_assert_arr_eq(buf + sizeof(a), b, sizeof(b));
    cr_assert_arr_eq(buf + sizeof(a) + sizeof(b), "tail", 4);

    /* Packet boundaries are kept. */
    n = bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 4);
    cr_assert_eq(n, (ssize_t)sizeof(a));
    cr_assert_arr_eq(buf, a, sizeof(a));
    close(sv[0]);
    close(sv[1]);
}

Test(io, fd_passing)
{
    int sv[2], p[2], fds[4];
    unsigned nfds = 0;
    char buf[64];
    struct iovec iov = { (void *)"fd!", 3 };

    sp(sv);
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, &p[1], 1), 0);
    close(p[1]);        /* the sender's copy: only the passed one remains */

    ssize_t n = bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 4);
    cr_assert_eq(n, 3);
    cr_assert_eq(nfds, 1);
    cr_assert_geq(fds[0], 0);
    cr_assert_neq(fds[0], p[0]);

    int fl = fcntl(fds[0], F_GETFD);
    cr_assert_geq(fl, 0);
    cr_assert(fl & FD_CLOEXEC, "received fd is not close-on-exec");

    cr_assert_eq(write(fds[0], "through the pipe", 16), 16);
    close(fds[0]);
    cr_assert_eq(read(p[0], buf, sizeof(buf)), 16);
    cr_assert_arr_eq(buf, "through the pipe", 16);
    cr_assert_eq(read(p[0], buf, sizeof(buf)), 0, "write end still open");
    close(p[0]);
    close(sv[0]);
    close(sv[1]);
}

Test(io, several_fds_in_order)
{
    enum { K = 5 };
    int sv[2], pipes[K][2], sent[K], fds[8];
    unsigned nfds = 0;
    char buf[16];
    struct iovec iov = { (void *)"x", 1 };

    sp(sv);
    for (int i = 0; i < K; i++) {
        cr_assert_eq(pipe(pipes[i]), 0);
        sent[i] = pipes[i][1];
    }
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, sent, K), 0);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 8), 1);
    cr_assert_eq(nfds, K);
    for (int i = 0; i < K; i++) {
        char c = (char)('A' + i);
        cr_assert_eq(write(fds[i], &c, 1), 1);
        cr_assert_eq(read(pipes[i][0], buf, 1), 1);
        cr_assert_eq(buf[0], c, "fd %d went to pipe of %c", i, buf[0]);
        cr_assert(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
    }
    bk_close_fds(fds, nfds);
    for (unsigned i = 0; i < nfds; i++)
        cr_assert_eq(fds[i], -1, "bk_close_fds marks closed entries");
    for (int i = 0; i < K; i++) {
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    close(sv[0]);
    close(sv[1]);
}

Test(io, packet_larger_than_buffer)
{
    int sv[2], p[2], fds[4];
    unsigned nfds = 7;
    uint8_t big[2048], buf[1024];
    struct iovec iov = { big, sizeof(big) };

    memset(big, 0x33, sizeof(big));
    sp(sv);
    cr_assert_eq(pipe(p), 0);
    int before = count_fds();
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, &p[1], 1), 0);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 4),
                 -EPROTO);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(count_fds(), before, "fd of a truncated packet leaked");

    /* The next packet is unaffected. */
    iov.iov_len = 10;
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, NULL, 0), 0);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 4), 10);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}

Test(io, more_fds_than_maxfds)
{
    enum { K = 6 };
    int sv[2], p[2], sent[K], fds[K];
    unsigned nfds = 9;
    char buf[64];
    struct iovec iov = { (void *)"many", 4 };
    struct pollfd pfd;

    sp(sv);
    cr_assert_eq(pipe(p), 0);
    for (int i = 0; i < K; i++)
        sent[i] = p[1];
    int before = count_fds();
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, sent, K), 0);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 2),
                 -EPROTO);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(count_fds(), before, "received fds leaked");

    /* Proof that no copy of the write end survives anywhere. */
    close(p[1]);
    pfd = (struct pollfd){ .fd = p[0], .events = POLLIN };
    cr_assert_eq(poll(&pfd, 1, 0), 1, "pipe write end still held");
    cr_assert_eq(read(p[0], buf, sizeof(buf)), 0);
    close(p[0]);
    close(sv[0]);
    close(sv[1]);
}

Test(io, zero_maxfds_rejects_any_fd)
{
    int sv[2], p[2], fds[1];
    unsigned nfds = 0;
    char buf[16];
    struct iovec iov = { (void *)"x", 1 };

    sp(sv);
    cr_assert_eq(pipe(p), 0);
    int before = count_fds();
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, &p[0], 1), 0);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 0),
                 -EPROTO);
    cr_assert_eq(count_fds(), before);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}

Test(io, eof_and_eagain)
{
    int sv[2], fds[1];
    unsigned nfds = 0;
    char buf[16];
    struct iovec iov = { (void *)"last", 4 };

    sp(sv);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 1),
                 -EAGAIN, "empty socket");
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, NULL, 0), 0);
    close(sv[0]);
    /* Data sent before the close is still delivered, then EOF. */
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 1), 4);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 1), 0);
    cr_assert_eq(bk_sock_recv(sv[1], buf, sizeof(buf), fds, &nfds, 1), 0);
    close(sv[1]);
}

Test(io, send_errors)
{
    int sv[2];
    uint8_t blob[4096] = { 0 };
    struct iovec iov = { blob, sizeof(blob) };
    int many[BK_MAX_FDS_HARD + 1];
    int r;

    sp(sv);
    for (unsigned i = 0; i <= BK_MAX_FDS_HARD; i++)
        many[i] = 0;
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, many, BK_MAX_FDS_HARD + 1),
                 -EINVAL);

    /* Fill the socket: a non-blocking send reports -EAGAIN. */
    for (int i = 0; i < 100000; i++) {
        r = bk_sock_send(sv[0], &iov, 1, NULL, 0);
        if (r != 0)
            break;
    }
    cr_assert_eq(r, -EAGAIN);

    close(sv[1]);
    close(sv[0]);

    /* Peer gone: an error, never SIGPIPE (which would kill this test). */
    sp(sv);
    close(sv[1]);
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, NULL, 0), -EPIPE);
    close(sv[0]);
}

/* ---- bk_sock_connect --------------------------------------------------- */

Test(connect, to_listener_and_errors)
{
    char dir[] = "/tmp/bk-sockio-XXXXXX";
    char path[128];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int l, c, a;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/s", dir);
    strcpy(sa.sun_path, path);
    l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_geq(l, 0);
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(l, 4), 0);

    c = bk_sock_connect(path);
    cr_assert_geq(c, 0, "connect: %s", strerror(-c));
    cr_assert(fcntl(c, F_GETFD) & FD_CLOEXEC, "not close-on-exec");
    cr_assert_not(fcntl(c, F_GETFL) & O_NONBLOCK,
                  "sockio.h documents a blocking socket (reads and writes "
                  "pass MSG_DONTWAIT, bk_sock_recv_wait waits)");
    a = accept(l, NULL, NULL);
    cr_assert_geq(a, 0);
    int type = 0;
    socklen_t tl = sizeof(type);
    cr_assert_eq(getsockopt(c, SOL_SOCKET, SO_TYPE, &type, &tl), 0);
    cr_assert_eq(type, SOCK_SEQPACKET);

    struct iovec iov = { (void *)"ping", 4 };
    char buf[8];
    cr_assert_eq(bk_sock_send(c, &iov, 1, NULL, 0), 0);
    cr_assert_eq(recv(a, buf, sizeof(buf), 0), 4);
    close(a);
    close(c);
    close(l);
    unlink(path);

    cr_assert_lt(bk_sock_connect(path), 0);
    cr_assert_eq(bk_sock_connect(path), -ENOENT);

    char longp[SUN_LEN_MAX + 4];
    memset(longp, 'x', sizeof(longp));
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    cr_assert_eq(bk_sock_connect(longp), -ENAMETOOLONG);
    rmdir(dir);
}

Test(connect, refused_on_stale_socket)
{
    char dir[] = "/tmp/bk-sockio-XXXXXX";
    char path[128];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int l;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/s", dir);
    strcpy(sa.sun_path, path);
    l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(l);           /* the file stays, nobody listens */
    cr_assert_eq(bk_sock_connect(path), -ECONNREFUSED);
    unlink(path);
    rmdir(dir);
}

/* bk_sock_recv_wait on a blocking socket: it waits for the packet and
 * brings its fds; with nothing sent, SO_RCVTIMEO ends the wait with
 * -EAGAIN; without `wait` it never waits. */
Test(recv, wait_brings_the_packet_and_a_timeout_ends_it)
{
    int sv[2], fds[4], p[2];
    unsigned nfds = 9;
    char buf[64];
    struct timeval tv = { .tv_sec = 0, .tv_usec = 20000 };
    struct iovec iov = { "ping", 4 };

    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    cr_assert_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)),
                 0);
    cr_assert_eq(bk_sock_recv_wait(sv[1], buf, sizeof(buf), fds, &nfds, 4,
                                   true), -EAGAIN, "the timeout ends it");
    cr_assert_eq(nfds, 0);
    cr_assert_eq(bk_sock_recv_wait(sv[1], buf, sizeof(buf), fds, &nfds, 4,
                                   false), -EAGAIN);
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(bk_sock_send(sv[0], &iov, 1, &p[1], 1), 0);
    cr_assert_eq(bk_sock_recv_wait(sv[1], buf, sizeof(buf), fds, &nfds, 4,
                                   true), 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
    cr_assert_eq(nfds, 1);
    cr_assert_eq(write(fds[0], "x", 1), 1, "the pipe's write end came");
    cr_assert_eq(read(p[0], buf, 1), 1);
    close(fds[0]);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}
