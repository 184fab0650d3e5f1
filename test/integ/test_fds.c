/*
 * test_fds.c - file descriptor passing through the broker.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <criterion/criterion.h>
#include "harness.h"

TH_BROKER_SUITE(fds, 180);

/* A pipe's read end holding `text`, its write end closed: reading it to
 * EOF proves which pipe a descriptor is. */
static int pipe_with(const char *text)
{
    int p[2];

    TH_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    TH_CHECK(write(p[1], text, strlen(text)) == (ssize_t)strlen(text),
             "write");
    close(p[1]);
    return p[0];
}

/* Read fd to EOF (hang-guarded) into buf; returns the length. */
static size_t read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        TH_CHECK(poll(&p, 1, TH_HANG_MS) == 1,
                 "fd %d never reached EOF: someone still holds the write "
                 "end", fd);
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        TH_CHECK(n >= 0, "read: %s", strerror(errno));
        if (n == 0)
            return got;
        got += (size_t)n;
        TH_CHECK(got < len, "too much data");
    }
}

static void expect_fd_text(int fd, const char *text)
{
    char buf[256];
    size_t n = read_all(fd, buf, sizeof(buf));

    TH_CHECK(n == strlen(text) && !memcmp(buf, text, n),
             "fd holds '%.*s', expected '%s'", (int)n, buf, text);
}

static bool is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

Test(fds, pass_pipe_both_ways)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    broker_msg_t *m;
    int p[2], rd;

    th_register(b, "svc.fdrx");

    /* Sender fills a pipe and passes its read end. */
    rd = pipe_with("written by the sender");
    cr_assert_eq(broker_send(a, "svc.fdrx", "r", 1, &rd, 1), 0);
    close(rd);          /* the sender's copy; the receiver gets its own */
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->nfds, 1);
    cr_assert_geq(m->fds[0], 0);
    cr_assert(fcntl(m->fds[0], F_GETFD) & FD_CLOEXEC,
              "received fds are close-on-exec");
    expect_fd_text(m->fds[0], "written by the sender");
    broker_msg_free(m);

    /* Sender passes a write end; the receiver writes, the sender reads. */
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(broker_send(a, "svc.fdrx", "w", 1, &p[1], 1), 0);
    close(p[1]);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->nfds, 1);
    cr_assert_eq(write(m->fds[0], "written by the receiver", 23), 23);
    broker_msg_free(m);         /* closes the received write end */
    expect_fd_text(p[0], "written by the receiver");
    close(p[0]);

    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(fds, several_fds_in_order)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    unsigned max = broker_limits(a)->max_fds;
    enum { K = 7 };
    int fds[K];
    char text[K][32];
    broker_msg_t *m;

    cr_assert_geq(max, K, "broker allows %u fds", max);
    for (int i = 0; i < K; i++) {
        snprintf(text[i], sizeof(text[i]), "pipe number %d", i);
        fds[i] = pipe_with(text[i]);
    }
    cr_assert_eq(broker_send_id(a, broker_client_id(b), "many", 4, fds, K),
                 0);
    for (int i = 0; i < K; i++)
        close(fds[i]);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 4);
    cr_assert_arr_eq(m->data, "many", 4);
    cr_assert_eq(m->nfds, K);
    for (int i = 0; i < K; i++)
        expect_fd_text(m->fds[i], text[i]);
    broker_msg_free(m);

    /* The most the broker allows, on a message spanning many packets. */
    size_t len = 300 * 1024;
    uint8_t *big = malloc(len);
    int *many = malloc(max * sizeof(int));
    cr_assert(big && many);
    th_pattern(big, len, 42, 0);
    for (unsigned i = 0; i < max; i++) {
        char t[32];
        snprintf(t, sizeof(t), "fd %u of %u", i, max);
        many[i] = pipe_with(t);
    }
    cr_assert_eq(broker_send_id(a, broker_client_id(b), big, len, many, max),
                 0);
    for (unsigned i = 0; i < max; i++)
        close(many[i]);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, len);
    cr_assert_lt(th_pattern_check(m->data, len, 42, 0), 0);
    cr_assert_eq(m->nfds, max);
    for (unsigned i = 0; i < max; i++) {
        char t[32];
        snprintf(t, sizeof(t), "fd %u of %u", i, max);
        expect_fd_text(m->fds[i], t);
    }
    broker_msg_free(m);
    free(big);
    free(many);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

Test(fds, msg_free_closes_unless_kept)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    broker_msg_t *m;
    int p[2], q[2], kept;
    char c;

    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(q, O_CLOEXEC), 0);
    int two[2] = { p[1], q[1] };
    cr_assert_eq(broker_send_id(a, broker_client_id(b), "", 0, two, 2), 0);
    close(p[1]);
    close(q[1]);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->nfds, 2);
    kept = m->fds[0];
    m->fds[0] = -1;             /* keep the first one */
    broker_msg_free(m);
    cr_assert(is_open(kept), "an fd set to -1 in msg->fds stays ours");
    /* The second was closed by broker_msg_free: q sees EOF. */
    cr_assert_eq(read_all(q[0], &c, 1), 0);
    cr_assert_eq(write(kept, "k", 1), 1);
    close(kept);
    expect_fd_text(p[0], "k");
    close(p[0]);
    close(q[0]);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* Send `fd` in a message that cannot be delivered, close our copy, and
 * check that the broker let go of it: its fd count is back at the
 * baseline and the pipe's reader sees EOF. */
static void check_dropped(broker_t *a, int baseline, int rd)
{
    char c;

    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    cr_assert_eq(th_fd_count(br.pid), baseline,
                 "broker holds %d fds, %d before the message",
                 th_fd_count(br.pid), baseline);
    cr_assert_eq(read_all(rd, &c, 1), 0);
    close(rd);
}

Test(fds, undeliverable_fds_are_closed)
{
    broker_t *a = th_connect(&br), *gone = th_connect(&br);
    uint64_t gone_id = broker_client_id(gone);
    broker_msg_t *m;
    uint32_t sid, tsid;
    int p[2], baseline;

    /* `gone` keeps a stream to us so we see when it has left. */
    cr_assert_eq(broker_stream_open(gone, NULL, broker_client_id(a), &sid),
                 0);
    cr_assert_eq(broker_stream_write(gone, sid, "g", 1, NULL, 0), 0);
    m = th_recv_kind(a, BROKER_MSG_DATA);
    tsid = m->stream;
    broker_msg_free(m);
    broker_close(gone);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->stream, tsid);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    baseline = th_fd_count(br.pid);
    cr_assert_gt(baseline, 0);

    /* To a name nobody owns. */
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(broker_send(a, "svc.nobody", "x", 1, &p[1], 1), 0);
    close(p[1]);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -ENOENT);
    broker_msg_free(m);
    check_dropped(a, baseline, p[0]);

    /* To a client that has disconnected. */
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    int three[3] = { p[1], p[1], p[1] };
    cr_assert_eq(broker_send_id(a, gone_id, "x", 1, three, 3), 0);
    close(p[1]);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -ENOENT);
    broker_msg_free(m);
    check_dropped(a, baseline, p[0]);

    /* On a multi-packet message to nobody. */
    size_t len = 200 * 1024;
    uint8_t *big = calloc(1, len);
    cr_assert_not_null(big);
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    int r = broker_send(a, "svc.nobody", big, len, &p[1], 1);
    close(p[1]);
    if (r == 0) {
        m = th_recv_kind(a, BROKER_MSG_ERROR);
        cr_assert_eq(m->code, -ENOENT);
        broker_msg_free(m);
    } else {
        /* The refusal arrived while the library was still writing. */
        cr_assert_eq(r, -ENOENT, "broker_send: %d", r);
    }
    check_dropped(a, baseline, p[0]);
    free(big);

    broker_close(a);
    th_broker_stop(&br);
}

struct quitter_arg {
    th_barrier_t ready;         /* quitter -> test */
    th_barrier_t go;            /* test -> quitter */
};

/* Registers a name, never reads, leaves when told. */
static int quitter(void *p)
{
    struct quitter_arg *a = p;
    broker_t *b = th_connect(&br);

    th_register(b, "svc.quitter");
    th_barrier_signal(&a->ready, broker_client_id(b));
    th_barrier_wait(&a->go);
    _exit(0);
}

Test(fds, receiver_leaves_before_reading)
{
    struct quitter_arg arg;
    broker_t *a = th_connect(&br);
    broker_msg_t *m;
    int p[2];
    char c;
    uint32_t sid;
    pid_t pid;

    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.go);
    pid = th_spawn(quitter, &arg);
    th_barrier_wait(&arg.ready);
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    /* A stream, so we are told when the receiver is gone. */
    cr_assert_eq(broker_stream_open(a, "svc.quitter", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(a, sid, "fd", 2, &p[1], 1), 0);
    close(p[1]);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    th_barrier_signal(&arg.go, 0);
    th_join(pid);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->stream, sid);
    cr_assert_eq(m->code, -ECONNRESET);
    broker_msg_free(m);
    /* Nobody holds the write end any more. */
    cr_assert_eq(read_all(p[0], &c, 1), 0);
    close(p[0]);
    broker_close(a);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.go);
    th_broker_stop(&br);
}

/* ---- request and reply with fds --------------------------------------------- */

struct fdsrv_arg {
    th_barrier_t ready;         /* server -> test */
    th_barrier_t done;          /* test -> server */
};

static int fd_server(void *p)
{
    struct fdsrv_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;
    int fds[2];

    th_register(b, "svc.fdsrv");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv_kind(b, BROKER_MSG_DATA);
    TH_CHECK(m->nfds == 2, "request has %u fds", m->nfds);
    expect_fd_text(m->fds[0], "request fd 0");
    expect_fd_text(m->fds[1], "request fd 1");
    fds[0] = pipe_with("reply fd 0");
    fds[1] = memfd_create("reply", MFD_CLOEXEC);
    TH_CHECK(fds[1] >= 0, "memfd: %s", strerror(errno));
    TH_CHECK(write(fds[1], "in a memfd", 10) == 10, "write");
    TH_OK(broker_reply(b, m, "ok", 2, fds, 2));
    close(fds[0]);
    close(fds[1]);
    broker_msg_free(m);
    th_barrier_wait(&a->done);
    broker_close(b);
    return 0;
}

Test(fds, on_request_and_reply)
{
    struct fdsrv_arg arg;
    broker_t *c = th_connect(&br);
    broker_msg_t *rep = NULL;
    int fds[2];
    char buf[32];
    pid_t pid;

    th_barrier_init(&arg.ready);
    th_barrier_init(&arg.done);
    pid = th_spawn(fd_server, &arg);
    th_barrier_wait(&arg.ready);
    fds[0] = pipe_with("request fd 0");
    fds[1] = pipe_with("request fd 1");
    int r = broker_call_fds(c, "svc.fdsrv", "req", 3, fds, 2, &rep,
                            TH_HANG_MS);
    cr_assert_eq(r, 0, "call: %s", broker_strerror(r));
    close(fds[0]);
    close(fds[1]);
    cr_assert_eq(rep->len, 2);
    cr_assert_arr_eq(rep->data, "ok", 2);
    cr_assert_eq(rep->nfds, 2);
    expect_fd_text(rep->fds[0], "reply fd 0");
    /* The memfd's file offset is shared: seek back and read it. */
    cr_assert_eq(pread(rep->fds[1], buf, sizeof(buf), 0), 10);
    cr_assert_arr_eq(buf, "in a memfd", 10);
    broker_msg_free(rep);
    th_barrier_signal(&arg.done, 0);
    th_join(pid);
    broker_close(c);
    th_barrier_fini(&arg.ready);
    th_barrier_fini(&arg.done);
    th_broker_stop(&br);
}

Test(fds, broker_fd_limit)
{
    broker_t *a, *b;
    broker_msg_t *m;
    int fds[3];

    th_broker_restart(&br, "--max-fds", "2", NULL);
    a = th_connect(&br);
    b = th_connect(&br);
    cr_assert_eq(broker_limits(a)->max_fds, 2, "WELCOME announces max_fds");
    for (int i = 0; i < 3; i++)
        fds[i] = pipe_with("x");
    int baseline = th_fd_count(br.pid);
    cr_assert_lt(broker_send_id(a, broker_client_id(b), "3", 1, fds, 3), 0,
                 "more fds than the broker allows");
    cr_assert_eq(broker_send_id(a, broker_client_id(b), "2", 1, fds, 2), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_arr_eq(m->data, "2", 1, "the refused message was not sent");
    cr_assert_eq(m->nfds, 2);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    cr_assert_eq(th_fd_count(br.pid), baseline);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}

/* A connection to the broker is not passed on: sent to itself, it would
 * keep a dead client's connection alive inside its own queue.  The
 * message is refused with EBADF (its other fds closed), nothing reaches
 * the receiver, and the connection and other fds go on working. */
Test(fds, connections_to_the_broker_are_refused)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br), *c = th_connect(&br);
    int fds[2], rd = pipe_with("a pipe is fine");
    broker_msg_t *m;

    th_register(a, "svc.self");
    th_register(b, "svc.fdrx");
    fds[0] = rd;
    fds[1] = broker_fd(a);
    cr_assert_eq(broker_send(a, "svc.self", "me", 2, &fds[1], 1), 0);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -EBADF, "%d", m->code);
    broker_msg_free(m);
    fds[1] = broker_fd(c);      /* another client's connection */
    cr_assert_eq(broker_send(a, "svc.fdrx", "c", 1, fds, 2), 0);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -EBADF, "%d", m->code);
    broker_msg_free(m);
    cr_assert_eq(broker_send(a, "svc.fdrx", "r", 1, &rd, 1), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 1, "only the message without a connection");
    cr_assert_eq(((const char *)m->data)[0], 'r');
    cr_assert_eq(m->nfds, 1);
    expect_fd_text(m->fds[0], "a pipe is fine");
    broker_msg_free(m);
    close(rd);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    cr_assert_eq(broker_ping(c, TH_HANG_MS), 0);
    broker_close(a);
    broker_close(b);
    broker_close(c);
    th_broker_stop(&br);
}

/* On a stream already open, a message carrying a connection to the
 * broker resets the stream at both ends with EBADF. */
Test(fds, a_connection_on_an_open_stream_resets_it)
{
    broker_t *a = th_connect(&br), *b = th_connect(&br);
    broker_msg_t *m;
    uint32_t sid;
    int fd;

    th_register(b, "svc.stream");
    cr_assert_eq(broker_stream_open(a, "svc.stream", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(a, sid, "one", 3, NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 3);
    broker_msg_free(m);
    fd = broker_fd(a);
    cr_assert_eq(broker_stream_write(a, sid, "two", 3, &fd, 1), 0);
    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -EBADF, "%d", m->code);
    cr_assert_eq(m->stream, sid);
    broker_msg_free(m);
    m = th_recv_kind(b, BROKER_MSG_CLOSE);
    cr_assert_eq(m->code, -EBADF, "the receiver sees the stream reset: %d",
                 m->code);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    broker_close(a);
    broker_close(b);
    th_broker_stop(&br);
}
