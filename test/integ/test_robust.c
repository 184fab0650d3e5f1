/*
 * test_robust.c - peers dying, malformed input, version mismatch, a second
 * broker on a live socket, a stale socket file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

TH_BROKER_SUITE(robust, 300);

/* ---- peers killed ------------------------------------------------------ */

struct peer_arg {
    th_barrier_t ready;
    size_t big;
};

/* Accept a stream and wait to be killed. */
static int stream_acceptor(void *p)
{
    struct peer_arg *a = p;
    broker_t *b = th_connect(&br);
    broker_msg_t *m;

    th_register(b, "svc.victim");
    th_barrier_signal(&a->ready, broker_client_id(b));
    m = th_recv_kind(b, BROKER_MSG_DATA);
    TH_OK(broker_stream_write(b, m->stream, "ack", 3, NULL, 0));
    broker_msg_free(m);
    th_barrier_signal(&a->ready, 1);
    for (;;)
        pause();
}

Test(robust, peer_killed_mid_stream)
{
    struct peer_arg arg;
    broker_t *a = th_connect(&br), *other = th_connect(&br);
    broker_msg_t *m;
    uint32_t sid, sid2;
    pid_t pid;

    th_barrier_init(&arg.ready);
    pid = th_spawn(stream_acceptor, &arg);
    th_barrier_wait(&arg.ready);
    cr_assert_eq(broker_stream_open(a, "svc.victim", 0, &sid), 0);
    cr_assert_eq(broker_stream_write(a, sid, "hello", 5, NULL, 0), 0);
    m = th_recv_kind(a, BROKER_MSG_DATA);
    cr_assert_eq(m->stream, sid);
    broker_msg_free(m);
    /* A second stream, to someone else, must survive. */
    cr_assert_eq(broker_stream_open(a, NULL, broker_client_id(other), &sid2),
                 0);
    cr_assert_eq(broker_stream_write(a, sid2, "x", 1, NULL, 0), 0);
    m = th_recv_kind(other, BROKER_MSG_DATA);
    uint32_t osid = m->stream;
    broker_msg_free(m);

    th_barrier_wait(&arg.ready);
    kill(pid, SIGKILL);
    cr_assert(WIFSIGNALED(th_join_status(pid)));

    m = th_recv_kind(a, BROKER_MSG_ERROR);
    cr_assert_eq(m->stream, sid, "ERROR on stream 0x%x, want 0x%x",
                 m->stream, sid);
    cr_assert_eq(m->code, -ECONNRESET, "code %d", m->code);
    broker_msg_free(m);
    /* Writing on the dead stream fails; the other stream still works. */
    cr_assert_lt(broker_stream_write(a, sid, "late", 4, NULL, 0), 0);
    cr_assert_eq(broker_stream_write(a, sid2, "y", 1, NULL, 0), 0);
    m = th_recv_kind(other, BROKER_MSG_DATA);
    cr_assert_eq(m->stream, osid);
    cr_assert_arr_eq(m->data, "y", 1);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(a, TH_HANG_MS), 0);
    broker_close(a);
    broker_close(other);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* Start a message far larger than the receiver's queue, then hang. */
static int big_sender(void *p)
{
    struct peer_arg *a = p;
    broker_t *b = th_connect(&br);
    uint8_t *data = malloc(a->big);

    TH_CHECK(data != NULL, "oom");
    /* this test is about the socket path: no shared memory */
    TH_OK(broker_set_option(b, BROKER_OPT_SHM_THRESHOLD, 0));
    th_pattern(data, a->big, 5, 0);
    th_barrier_signal(&a->ready, broker_client_id(b));
    (void)broker_send(b, "svc.rx", data, a->big, NULL, 0);
    for (;;)
        pause();
}

Test(robust, sender_killed_mid_message)
{
    struct peer_arg arg = { .big = 64u << 20 };
    broker_t *rx = th_connect(&br), *obs = th_connect(&br);
    broker_msg_t *m;
    unsigned us = 1000;
    pid_t pid;

    th_register(rx, "svc.rx");
    th_barrier_init(&arg.ready);
    pid = th_spawn(big_sender, &arg);
    uint64_t sender = th_barrier_wait(&arg.ready);
    /* rx does not read: fragments pile up in the broker's queue. */
    while (th_status_value(obs, "queued_bytes") == 0)
        th_nap(&us);
    kill(pid, SIGKILL);
    cr_assert(WIFSIGNALED(th_join_status(pid)));

    /* The partial message is dropped with an ERROR, never delivered. */
    m = th_recv(rx);
    cr_assert_eq(m->kind, BROKER_MSG_ERROR, "got %s of %zu bytes",
                 th_kind_str(m->kind), m->len);
    cr_assert_eq(m->code, -ECONNRESET, "code %d", m->code);
    broker_msg_free(m);
    cr_assert_eq(broker_ping(rx, TH_HANG_MS), 0);
    cr_assert_eq(broker_recv(rx, &m, 0), -ETIMEDOUT, "nothing else");
    (void)sender;
    broker_close(rx);
    broker_close(obs);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- malformed input ------------------------------------------------------ */

/* Two well-behaved clients exchanging messages the whole time. */
struct chatter_arg {
    th_barrier_t ready;
    int stop_rd;
};

static int chatter(void *p)
{
    struct chatter_arg *a = p;
    broker_t *x = th_connect(&br), *y = th_connect(&br);
    uint64_t n = 0;

    th_register(y, "svc.chat");
    th_barrier_signal(&a->ready, 0);
    for (;;) {
        struct pollfd pf = { .fd = a->stop_rd, .events = POLLIN };
        if (poll(&pf, 1, 0) == 1)
            break;
        uint8_t out[16], back[16];
        th_pattern(out, sizeof(out), n, 0);
        TH_OK(broker_send(x, "svc.chat", out, sizeof(out), NULL, 0));
        broker_msg_t *m = th_recv_kind(y, BROKER_MSG_DATA);
        TH_CHECK(m->len == 16 && !memcmp(m->data, out, 16), "bytes %llu",
                 (unsigned long long)n);
        for (int i = 0; i < 16; i++)
            back[i] = (uint8_t)~out[i];
        TH_OK(broker_send_id(y, m->source, back, 16, NULL, 0));
        broker_msg_free(m);
        m = th_recv_kind(x, BROKER_MSG_DATA);
        TH_CHECK(m->len == 16 && !memcmp(m->data, back, 16), "reply %llu",
                 (unsigned long long)n);
        broker_msg_free(m);
        n++;
    }
    TH_CHECK(n > 0, "no exchange completed");
    broker_close(x);
    broker_close(y);
    return 0;
}

enum garbage_kind {
    G_RANDOM_BEFORE_HELLO,
    G_RANDOM_AFTER_HELLO,
    G_DATA_BEFORE_HELLO,
    G_HELLO_TWICE,
    G_BAD_VERSION,
    G_BAD_TYPE,
    G_BROKER_TYPE,
    G_BAD_FLAGS,
    G_CONT_WITHOUT_FIRST,
    G_FORGED_SOURCE,
    G_NFDS_OVER_MAX,
    G_NFDS_MORE_THAN_SENT,
    G_FDS_WITHOUT_NFDS,
    G_LENGTH_BEYOND_PACKET,
    G_TRUNCATED_HEADER,
    G_OVERSIZED_PACKET,
    G_BAD_CTRL_OP,
    G_EMPTY_PACKET,
    G_COUNT_
};

static const char *const garbage_names[] = {
    "random bytes before HELLO", "random bytes after HELLO",
    "DATA before HELLO", "HELLO twice", "bad version", "bad type",
    "broker-only type", "unknown flags", "CONT without first fragment",
    "forged source", "nfds over max_fds", "nfds more than sent",
    "fds without nfds", "length beyond packet", "truncated header",
    "packet over max_packet", "bad CTRL op", "empty packet",
};

/* A valid DATA frame opening a stream to `dest`. */
static bk_hdr_t data_to(uint64_t dest, uint32_t stream, uint32_t len)
{
    return (bk_hdr_t){ .version = BK_PROTO_VERSION, .type = BK_T_DATA,
                       .flags = BK_F_OPEN, .length = len, .stream = stream,
                       .dest = dest };
}

/* Send garbage of one kind; returns the write end of a pipe whose fd was
 * passed (or -1). */
static int send_garbage(enum garbage_kind g, int fd, uint64_t sink,
                        uint64_t victim, uint64_t seed)
{
    static uint8_t big[BK_DEF_MAX_PACKET + 4096];
    bk_hdr_t h;
    uint8_t pkt[256];
    int p[2], wr = -1;

    switch (g) {
    case G_RANDOM_BEFORE_HELLO:
    case G_RANDOM_AFTER_HELLO:
        th_raw_send_garbage(fd, seed);
        break;
    case G_DATA_BEFORE_HELLO:
        h = data_to(sink, 1, 2);
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        break;
    case G_HELLO_TWICE:
        h = (bk_hdr_t){ .version = 1, .type = BK_T_HELLO, .length = 4 };
        bk_put32(pkt, BK_PROTO_VERSION);
        (void)th_raw_send(fd, &h, pkt, NULL, 0);
        break;
    case G_BAD_VERSION:
        h = data_to(sink, 1, 2);
        h.version = 2;
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        break;
    case G_BAD_TYPE:
        h = data_to(sink, 1, 2);
        h.type = 9 + (uint8_t)(seed % 200);
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        break;
    case G_BROKER_TYPE:
        h = (bk_hdr_t){ .version = 1, .type = BK_T_WELCOME,
                        .length = BK_WELCOME_SIZE };
        memset(pkt, 0, BK_WELCOME_SIZE);
        (void)th_raw_send(fd, &h, pkt, NULL, 0);
        break;
    case G_BAD_FLAGS:
        h = data_to(sink, 1, 2);
        h.flags |= 0x80;
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        break;
    case G_CONT_WITHOUT_FIRST:
        /* A complete message opens stream 3, then a continuation fragment
         * arrives with no first fragment before it. */
        h = data_to(sink, 3, 2);
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        h = (bk_hdr_t){ .version = 1, .type = BK_T_DATA, .flags = BK_F_CONT,
                        .length = 2, .stream = 3 };
        (void)th_raw_send(fd, &h, "xx", NULL, 0);
        break;
    case G_FORGED_SOURCE:
        h = data_to(sink, 1, 2);
        h.source = victim;
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        break;
    case G_NFDS_OVER_MAX:
        h = data_to(sink, 1, 2);
        h.nfds = 200;
        (void)th_raw_send(fd, &h, "hi", NULL, 0);
        break;
    case G_NFDS_MORE_THAN_SENT:
        TH_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");
        h = data_to(sink, 1, 2);
        h.nfds = 3;
        (void)th_raw_send(fd, &h, "hi", &p[1], 1);
        close(p[1]);
        wr = p[0];
        break;
    case G_FDS_WITHOUT_NFDS:
        TH_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");
        h = data_to(sink, 1, 2);
        (void)th_raw_send(fd, &h, "hi", &p[1], 1);
        close(p[1]);
        wr = p[0];
        break;
    case G_LENGTH_BEYOND_PACKET:
        h = data_to(sink, 1, 100);
        bk_hdr_encode(&h, pkt);
        memcpy(pkt + BK_HDR_SIZE, "short", 5);
        (void)th_raw_send_bytes(fd, pkt, BK_HDR_SIZE + 5, NULL, 0);
        break;
    case G_TRUNCATED_HEADER:
        h = data_to(sink, 1, 0);
        bk_hdr_encode(&h, pkt);
        (void)th_raw_send_bytes(fd, pkt, BK_HDR_SIZE - 7, NULL, 0);
        break;
    case G_OVERSIZED_PACKET:
        h = data_to(sink, 1, (uint32_t)(sizeof(big) - BK_HDR_SIZE));
        bk_hdr_encode(&h, big);
        (void)th_raw_send_bytes(fd, big, sizeof(big), NULL, 0);
        break;
    case G_BAD_CTRL_OP:
        h = (bk_hdr_t){ .version = 1, .type = BK_T_CTRL, .aux = 99,
                        .stream = 1 };
        (void)th_raw_send(fd, &h, NULL, NULL, 0);
        break;
    case G_EMPTY_PACKET:
        (void)th_raw_send_bytes(fd, "", 0, NULL, 0);
        break;
    case G_COUNT_:
        break;
    }
    return wr;
}

static bool before_hello(enum garbage_kind g)
{
    return g == G_RANDOM_BEFORE_HELLO || g == G_DATA_BEFORE_HELLO;
}

static void check_one_garbage(enum garbage_kind g, uint64_t sink,
                              uint64_t victim, uint64_t seed)
{
    int fd = before_hello(g) ? th_raw_connect(br.sock)
                             : th_raw_connect_hello(br.sock, NULL);
    uint32_t aux;
    int nerr;
    int rd = send_garbage(g, fd, sink, victim, seed);
    int n = th_raw_drain_to_eof(fd, &aux, &nerr);

    cr_assert_geq(n, 0, "%s: not disconnected", garbage_names[g]);
    if (nerr)
        cr_assert(aux == EPROTO ||
                  (g == G_BAD_VERSION && aux == EPROTONOSUPPORT) ||
                  (g == G_OVERSIZED_PACKET && aux == EMSGSIZE),
                  "%s: ERROR code %u", garbage_names[g], aux);
    close(fd);
    if (rd >= 0) {
        /* The fd we passed was closed by the broker: EOF on the pipe. */
        struct pollfd pf = { .fd = rd, .events = POLLIN };
        char c;
        cr_assert_eq(poll(&pf, 1, TH_HANG_MS), 1, "%s: passed fd kept",
                     garbage_names[g]);
        cr_assert_eq(read(rd, &c, 1), 0, "%s", garbage_names[g]);
        close(rd);
    }
    cr_assert(th_broker_alive(&br), "brokerd died on %s", garbage_names[g]);
}

Test(robust, garbage_clients_are_disconnected, .timeout = 300)
{
    struct chatter_arg arg;
    broker_t *sink = th_connect(&br), *victim = th_connect(&br);
    int stop[2];
    pid_t pid;

    th_register(sink, "svc.sink");
    cr_assert_eq(pipe2(stop, O_CLOEXEC), 0);
    arg.stop_rd = stop[0];
    th_barrier_init(&arg.ready);
    pid = th_spawn(chatter, &arg);
    th_barrier_wait(&arg.ready);

    for (int g = 0; g < G_COUNT_; g++) {
        int rounds = (g == G_RANDOM_BEFORE_HELLO ||
                      g == G_RANDOM_AFTER_HELLO || g == G_BAD_TYPE) ? 20 : 1;
        for (int i = 0; i < rounds; i++)
            check_one_garbage((enum garbage_kind)g,
                              broker_client_id(sink),
                              broker_client_id(victim), (uint64_t)i + 1);
    }
    /* The victim whose id was forged received nothing. */
    broker_msg_t *m;
    cr_assert_eq(broker_ping(victim, TH_HANG_MS), 0);
    cr_assert_eq(broker_recv(victim, &m, 0), -ETIMEDOUT);

    cr_assert_eq(write(stop[1], "s", 1), 1);
    th_join(pid);
    cr_assert_eq(broker_ping(sink, TH_HANG_MS), 0, "broker still answers");
    broker_close(sink);
    broker_close(victim);
    close(stop[0]);
    close(stop[1]);
    th_barrier_fini(&arg.ready);
    th_broker_stop(&br);
}

/* ---- version mismatch --------------------------------------------------- */

static void hello_mismatch(uint8_t hdr_version, uint32_t payload_version)
{
    int fd = th_raw_connect(br.sock);
    bk_hdr_t h = { .version = hdr_version, .type = BK_T_HELLO, .length = 4 };
    uint8_t pl[4];
    uint32_t aux;
    int nerr;

    bk_put32(pl, payload_version);
    cr_assert_eq(th_raw_send(fd, &h, pl, NULL, 0), 0);
    cr_assert_geq(th_raw_drain_to_eof(fd, &aux, &nerr), 0, "not closed");
    cr_assert_geq(nerr, 1, "no ERROR frame before the close");
    cr_assert_eq(aux, EPROTONOSUPPORT, "ERROR code %u", aux);
    close(fd);
}

Test(robust, hello_version_mismatch)
{
    hello_mismatch(BK_PROTO_VERSION, BK_PROTO_VERSION + 1);
    hello_mismatch(BK_PROTO_VERSION, 0);
    hello_mismatch(BK_PROTO_VERSION + 1, BK_PROTO_VERSION + 1);
    broker_t *b = th_connect(&br);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}

/* The ERROR frame a mismatching client gets must be readable by it: the
 * first frame it reads is a well-formed version-1 ERROR. */
Test(robust, hello_mismatch_error_frame_is_wellformed)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    int fd = th_raw_connect(br.sock);
    bk_hdr_t h = { .version = 1, .type = BK_T_HELLO, .length = 4 };
    uint8_t pl[4];
    const uint8_t *payload;
    size_t off = 0;
    bk_limits_t lim = { BK_MAX_MAX_PACKET, BK_MAX_FDS_HARD, BK_MAX_NAME };

    bk_put32(pl, 77);
    cr_assert_eq(th_raw_send(fd, &h, pl, NULL, 0), 0);
    ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
    cr_assert_gt(n, 0, "no reply: %zd", n);
    cr_assert_eq(bk_pkt_next(pkt, (size_t)n, &off, &h, &payload), 1);
    cr_assert_eq(h.type, BK_T_ERROR, "type %u", h.type);
    cr_assert_eq(bk_frame_check_from_broker(&h, payload, &lim), 0);
    cr_assert_eq(h.aux, EPROTONOSUPPORT);
    close(fd);
    th_broker_stop(&br);
}

/* ---- the socket file --------------------------------------------------- */

Test(robust, second_broker_on_live_socket)
{
    char log2[160];
    const char *const none[] = { NULL };
    struct stat st;
    int status;

    snprintf(log2, sizeof(log2), "%s/second.log", br.dir);
    pid_t pid = th_brokerd_spawn(br.sock, log2, NULL, none);
    status = th_join_status(pid);
    cr_assert(WIFEXITED(status), "second brokerd did not exit normally");
    cr_assert_eq(WEXITSTATUS(status), 1, "exit status %d",
                 WEXITSTATUS(status));

    char text[4096] = "";
    FILE *f = fopen(log2, "r");
    cr_assert_not_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    cr_assert_not_null(strstr(text, "another broker is listening"),
                       "stderr: %s", text);

    /* The first broker is untouched. */
    cr_assert_eq(stat(br.sock, &st), 0, "socket file removed");
    cr_assert(S_ISSOCK(st.st_mode));
    broker_t *b = th_connect(&br);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&br);
}

Test(robust, stale_socket_is_replaced)
{
    th_broker_t stale = { 0 };
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    const char *const none[] = { NULL };
    struct stat st;
    int fd, status;

    th_broker_stop(&br);        /* this test runs its own */
    strcpy(stale.dir, "/tmp/bkt-XXXXXX");
    cr_assert_not_null(mkdtemp(stale.dir));
    snprintf(stale.sock, sizeof(stale.sock), "%s/sock", stale.dir);
    snprintf(stale.log, sizeof(stale.log), "%s/brokerd.log", stale.dir);

    /* A socket file nobody listens on, as left by a crashed broker. */
    strcpy(sa.sun_path, stale.sock);
    fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    cr_assert_eq(stat(stale.sock, &st), 0);
    cr_assert_eq(bk_sock_connect(stale.sock), -ECONNREFUSED);

    stale.pid = th_brokerd_spawn(stale.sock, stale.log, NULL, none);
    if (th_wait_listening(stale.sock, stale.pid, &status) < 0) {
        stale.pid = 0;
        th_broker_dump_log(&stale);
        th_broker_cleanup(&stale);
        cr_assert_fail("brokerd refused a stale socket file (status 0x%x)",
                       status);
    }
    broker_t *b = th_connect(&stale);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    broker_close(b);
    th_broker_stop(&stale);
}

Test(robust, clients_that_vanish_early)
{
    /* Connect and close at every stage of the handshake. */
    for (int i = 0; i < 50; i++) {
        int fd = th_raw_connect(br.sock);
        if (i % 3 == 1) {
            bk_hdr_t h = { .version = 1, .type = BK_T_HELLO, .length = 4 };
            uint8_t pl[4];
            bk_put32(pl, BK_PROTO_VERSION);
            (void)th_raw_send(fd, &h, pl, NULL, 0);
        } else if (i % 3 == 2) {
            close(fd);
            fd = th_raw_connect_hello(br.sock, NULL);
        }
        close(fd);
    }
    broker_t *b = th_connect(&br);
    cr_assert_eq(broker_ping(b, TH_HANG_MS), 0);
    char *text = NULL;
    cr_assert_eq(broker_status(b, &text), 0);
    cr_assert_not_null(strstr(text, "clients="));
    free(text);
    broker_close(b);
    th_broker_stop(&br);
}

/* ---- daemon mode ------------------------------------------------------------ */

static bool pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

Test(robust, daemonize_and_pidfile)
{
    char pidfile[160], buf[32] = "";
    const char *bin = th_brokerd_path();
    pid_t daemon_pid = 0;
    th_output_t o;
    struct stat st;
    int fd;

    th_broker_stop(&br);        /* this test runs its own */
    strcpy(br.dir, "/tmp/bkt-XXXXXX");
    cr_assert_not_null(mkdtemp(br.dir));
    snprintf(br.sock, sizeof(br.sock), "%s/sock", br.dir);
    snprintf(pidfile, sizeof(pidfile), "%s/brokerd.pid", br.dir);
    const char *const argv[] = { bin, "-s", br.sock, "--pidfile", pidfile,
                                 NULL };
    int status = th_run(argv, NULL, NULL, 0, &o);
    cr_assert(TH_EXITED(status, 0),
              "daemonizing brokerd: 0x%x %s", status, o.err);
    th_output_free(&o);

    /* The parent exits only once the socket listens: no retry needed. */
    fd = bk_sock_connect(br.sock);
    cr_assert_geq(fd, 0, "not listening when the parent exited: %s",
                  strerror(-fd));
    close(fd);
    FILE *f = fopen(pidfile, "r");
    cr_assert_not_null(f, "no pidfile");
    cr_assert_not_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    daemon_pid = (pid_t)strtol(buf, NULL, 10);
    cr_assert_gt(daemon_pid, 1, "pidfile holds '%s'", buf);
    cr_assert(pid_alive(daemon_pid));

    broker_t *b = th_connect(&br);
    char *text = NULL;
    cr_assert_eq(broker_status(b, &text), 0);
    char want[48];
    snprintf(want, sizeof(want), "pid=%d\n", (int)daemon_pid);
    cr_assert_not_null(strstr(text, want), "status: %s", text);
    free(text);
    broker_close(b);

    cr_assert_eq(kill(daemon_pid, SIGTERM), 0);
    for (int i = 0; pid_alive(daemon_pid); i++) {
        if (i > TH_HANG_MS / 10) {
            kill(daemon_pid, SIGKILL);
            cr_assert_fail("daemon ignored SIGTERM");
        }
        usleep(10000);
    }
    cr_assert_neq(stat(br.sock, &st), 0, "socket file left behind");
    th_broker_cleanup(&br);
}
