/*
 * test_service.c - running brokerd under a service manager: socket
 * activation, readiness notification, and the contrib/examples service
 * and client against a real broker.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "sockio.h"
#include "harness.h"

static th_broker_t br;

static void make_dir(void)
{
    memset(&br, 0, sizeof(br));
    strcpy(br.dir, "/tmp/bkt-XXXXXX");
    cr_assert_not_null(mkdtemp(br.dir));
    snprintf(br.sock, sizeof(br.sock), "%s/sock", br.dir);
    snprintf(br.log, sizeof(br.log), "%s/brokerd.log", br.dir);
}

static void teardown(void)
{
    th_broker_cleanup(&br);
}

TestSuite(service, .fini = teardown, .timeout = 120);

/* ---- socket activation ------------------------------------------------------ */

/* A bound, listening AF_UNIX socket of `type` at path. */
static int listening_socket(const char *path, int type)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    cr_assert_lt(strlen(path), sizeof(sa.sun_path), "path too long: %s", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0,
                 "bind %s: %s", path, strerror(errno));
    cr_assert_eq(listen(fd, 16), 0, "listen: %s", strerror(errno));
    return fd;
}

/* Start `brokerd -f -s <dir>/other` the way a service manager does: fd
 * (or nothing, if fd < 0) as fd 3, LISTEN_PID naming the child itself.
 * Output goes to br.log. */
static pid_t spawn_activated(int fd)
{
    const char *bin = th_brokerd_path();
    char other[160];
    pid_t pid;

    snprintf(other, sizeof(other), "%s/other", br.dir);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        char num[24];
        int log = open(br.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                       0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        if (log >= 0) {
            dup2(log, 1);
            dup2(log, 2);
        }
        if (fd < 0)
            close(3);
        else if (fd == 3)
            fcntl(3, F_SETFD, 0);
        else
            dup2(fd, 3);        /* dup2 clears FD_CLOEXEC on the copy */
        snprintf(num, sizeof(num), "%d", (int)getpid());
        setenv("LISTEN_PID", num, 1);
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_FDNAMES", "brokerd.socket", 1);
        execl(bin, bin, "-f", "-s", other, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    return pid;
}

static char *read_log(void)
{
    static char buf[8192];
    FILE *f = fopen(br.log, "r");
    size_t n = 0;

    if (f) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

Test(service, socket_activation)
{
    struct stat st;
    char path[160], want[200], *text = NULL;
    broker_msg_t *m;
    broker_t *b;
    int lfd, status, fd;

    make_dir();
    lfd = listening_socket(br.sock, SOCK_SEQPACKET);
    br.pid = spawn_activated(lfd);

    /* The socket listened before brokerd ran: connect, then talk. */
    cr_assert_eq(broker_connect(br.sock, &b), 0);
    th_register(b, "svc.self");
    cr_assert_eq(broker_send(b, "svc.self", "ping", 4, NULL, 0), 0);
    m = th_recv_kind(b, BROKER_MSG_DATA);
    cr_assert(m->len == 4 && !memcmp(m->data, "ping", 4));
    broker_msg_free(m);
    cr_assert_eq(broker_status(b, &text), 0);
    snprintf(want, sizeof(want), "socket=%s\n", br.sock);
    cr_assert_not_null(strstr(text, want), "status: %s", text);
    free(text);
    broker_close(b);

    status = th_broker_signal_wait(&br, SIGTERM);
    cr_assert(TH_EXITED(status, 0),
              "status 0x%x, log:\n%s", status, read_log());
    /* The service manager owns the path: still there, no lock, and the
     * -s path was neither bound nor locked. */
    cr_assert_eq(stat(br.sock, &st), 0, "socket path was unlinked");
    cr_assert(S_ISSOCK(st.st_mode));
    snprintf(path, sizeof(path), "%s.lock", br.sock);
    cr_assert_neq(access(path, F_OK), 0, "%s was created", path);
    snprintf(path, sizeof(path), "%s/other", br.dir);
    cr_assert_neq(access(path, F_OK), 0, "-s path was bound");
    /* Our copy of the socket still accepts (a restarted broker would). */
    fd = bk_sock_connect(br.sock);
    cr_assert_geq(fd, 0, "connect after exit: %s", strerror(-fd));
    close(fd);
    close(lfd);
}

/* brokerd refuses the inherited fd: exit 1 and `why` in its log. */
static void expect_refused(int fd, const char *why)
{
    int status;

    br.pid = spawn_activated(fd);
    status = th_join_status(br.pid);
    br.pid = 0;
    cr_assert(TH_EXITED(status, 1),
              "status 0x%x, log:\n%s", status, read_log());
    cr_assert_not_null(strstr(read_log(), why), "log:\n%s", read_log());
}

Test(service, activation_refuses_stream_socket)
{
    make_dir();
    int fd = listening_socket(br.sock, SOCK_STREAM);

    expect_refused(fd, "fd 3 is SOCK_STREAM, not SOCK_SEQPACKET");
    close(fd);
}

Test(service, activation_refuses_unlistened_socket)
{
    make_dir();
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    expect_refused(fd, "fd 3 is not a listening socket");
    close(fd);
}

Test(service, activation_refuses_missing_fd)
{
    make_dir();
    expect_refused(-1, "fd 3 is not open");
}

/* ---- readiness notification -------------------------------------------------- */

/* Receive one datagram (hang-guarded) as a string. */
static void recv_note(int fd, char *buf, size_t len)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t n;

    cr_assert_eq(poll(&p, 1, TH_HANG_MS), 1, "no notification");
    n = recv(fd, buf, len - 1, 0);
    cr_assert_geq(n, 0, "recv: %s", strerror(errno));
    buf[n] = '\0';
}

/* Bind a datagram socket for `name` (a path, or "@abstract"), run brokerd
 * with NOTIFY_SOCKET=name and check READY, MAINPID and STOPPING. */
static void check_notify(const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    socklen_t salen;
    char env[200], want[64], note[256];
    int fd, status;

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", name);
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                        strlen(name));
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, salen), 0, "bind: %s",
                 strerror(errno));
    snprintf(env, sizeof(env), "NOTIFY_SOCKET=%s", name);
    br.env[0] = env;
    br.pid = th_brokerd_spawn(br.sock, br.log, br.env, NULL);

    recv_note(fd, note, sizeof(note));
    snprintf(want, sizeof(want), "READY=1\nMAINPID=%d", (int)br.pid);
    cr_assert_str_eq(note, want);
    /* Ready means listening: connecting needs no retry. */
    int c = bk_sock_connect(br.sock);
    cr_assert_geq(c, 0, "not listening when ready: %s", strerror(-c));
    close(c);

    kill(br.pid, SIGTERM);
    recv_note(fd, note, sizeof(note));
    cr_assert_str_eq(note, "STOPPING=1");
    status = th_join_status(br.pid);
    br.pid = 0;
    cr_assert(TH_EXITED(status, 0),
              "status 0x%x, log:\n%s", status, read_log());
    close(fd);
}

Test(service, notify_path)
{
    char name[160];

    make_dir();
    snprintf(name, sizeof(name), "%s/notify", br.dir);
    check_notify(name);
}

Test(service, notify_abstract)
{
    char name[64];

    make_dir();
    snprintf(name, sizeof(name), "@bkt-notify-%d", (int)getpid());
    check_notify(name);
}

/* ---- the examples --------------------------------------------------------------- */

/* contrib/examples/PROG next to $BROKERD in the build tree. */
static void example_path(const char *prog, char *buf, size_t len)
{
    char dir[512];

    snprintf(dir, sizeof(dir), "%s", th_brokerd_path());
    snprintf(buf, len, "%s/contrib/examples/%s", dirname(dir), prog);
    cr_assert_eq(access(buf, X_OK), 0, "%s: %s", buf, strerror(errno));
}

Test(service, examples)
{
    char service[600], client[600], env[200], line[16] = "";
    const char *const envs[] = { env, NULL };
    th_output_t o;
    int out[2], status;
    pid_t pid;

    th_broker_start(&br, NULL);
    example_path("example-service", service, sizeof(service));
    example_path("example-client", client, sizeof(client));
    snprintf(env, sizeof(env), "BROKER_SOCKET=%s", br.sock);

    /* The service prints "ready" once its name is registered. */
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        putenv(env);
        execl(service, service, "svc.greeter", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof(line), f), "service did not start");
    cr_assert_str_eq(line, "ready\n");

    const char *const argv1[] = { client, "svc.greeter", "brokerd", NULL };
    status = th_run(argv1, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(status, 0), "client: %s", o.err);
    cr_assert_str_eq(o.out, "hello, brokerd\n");
    th_output_free(&o);

    /* A name nobody serves: the client reports it and exits 1. */
    const char *const argv2[] = { client, "svc.nobody", "x", NULL };
    status = th_run(argv2, envs, NULL, 0, &o);
    cr_assert(TH_EXITED(status, 1));
    cr_assert_not_null(strstr(o.err, "svc.nobody"), "stderr: %s", o.err);
    th_output_free(&o);

    status = th_signal_join(pid, SIGTERM);
    cr_assert(TH_EXITED(status, 0), "service status 0x%x", status);
    fclose(f);
    th_broker_stop(&br);
}
