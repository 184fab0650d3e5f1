/*
 * harness.c - helpers for the integration tests.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* pipe2, memfd_create */
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <criterion/criterion.h>
#include "frame.h"
#include "sockio.h"
#include "harness.h"

static bool th_child;

bool th_in_child(void)
{
    return th_child;
}

static void fail_msg(const char *file, int line, const char *msg)
    __attribute__((noreturn));

void th_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fail_msg(file, line, msg);
}

void th_fail_check(const char *file, int line, const char *cond,
                   const char *fmt, ...)
{
    char msg[1024];
    int n;
    va_list ap;

    n = snprintf(msg, sizeof(msg), "check failed: %s: ", cond);
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = 0;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    fail_msg(file, line, msg);
}

static void fail_msg(const char *file, int line, const char *msg)
{
    if (th_child) {
        fprintf(stderr, "[child %d] %s:%d: %s\n", (int)getpid(), file, line,
                msg);
        _exit(1);
    }
    cr_assert_fail("%s:%d: %s", file, line, msg);
    abort();        /* not reached: cr_assert_fail ends the test */
}

uint64_t th_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void th_nap(unsigned *us)
{
    usleep(*us);
    if (*us < 20000)
        *us *= 2;
}

/* In a freshly forked child: die with the parent, default crash signals
 * (criterion's handlers belong to the test process). */
static void child_setup(pid_t parent)
{
    static const int sigs[] = { SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL,
                                SIGTERM, SIGINT, SIGPIPE, SIGCHLD };

    th_child = true;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
}

/* Fork a child set up by child_setup, flushing stdio first so that nothing
 * buffered is written twice.  Returns the child's pid, 0 in the child. */
static pid_t fork_child(void)
{
    pid_t parent = getpid(), pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    TH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        child_setup(parent);
    return pid;
}

/* In a child: stdin from /dev/null; stdout and stderr appended to log,
 * if there is one and it opens. */
static void redirect_to_log(const char *log)
{
    int in = open("/dev/null", O_RDONLY);
    int out = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0644) : -1;

    if (in >= 0)
        dup2(in, 0);
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
    }
}

/* In a child: put the NAME=VALUE strings of env (at most max_env; a NULL
 * ends the list) in the environment and run argv, looked up in $PATH if
 * `search`.  A failed exec is exit status 127. */
__attribute__((noreturn))
static void exec_child(const char *const *argv, const char *const *env,
                       int max_env, bool search)
{
    for (int i = 0; env && i < max_env && env[i]; i++)
        putenv((char *)env[i]);
    if (search)
        execvp(argv[0], (char *const *)argv);
    else
        execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* ---- brokerd ----------------------------------------------------------- */

/* The program named by the environment variable `var` (as `make check`
 * sets it); fails clearly if it is unset or not executable. */
static const char *program_from_env(const char *var, const char *prog)
{
    const char *p = getenv(var);

    if (!p || !*p)
        th_fail(__FILE__, __LINE__,
                "%s is not set: run the tests with `make check`, or "
                "export %s=/path/to/%s", var, var, prog);
    if (access(p, X_OK) != 0)
        th_fail(__FILE__, __LINE__, "%s=%s is not executable: %s", var, p,
                strerror(errno));
    return p;
}

const char *th_brokerd_path(void)
{
    return program_from_env("BROKERD", "brokerd");
}

pid_t th_brokerd_spawn(const char *sock, const char *log,
                       const char *const *env, const char *const *args)
{
    const char *bin = th_brokerd_path();
    const char *wrapper = getenv("BROKERD_WRAPPER");
    const char *argv[64];
    char *words = NULL;
    int n = 0;
    pid_t pid;

    /* BROKERD_WRAPPER="valgrind --error-exitcode=99 ..." runs the broker
     * under a checker; its verdict shows in the exit status at stop. */
    if (wrapper && *wrapper) {
        char *save = NULL;
        words = strdup(wrapper);
        TH_CHECK(words != NULL, "out of memory");
        for (char *w = strtok_r(words, " ", &save); w;
             w = strtok_r(NULL, " ", &save)) {
            TH_CHECK(n < 40, "BROKERD_WRAPPER has too many words");
            argv[n++] = w;
        }
    }
    argv[n++] = bin;
    argv[n++] = "-f";
    argv[n++] = "-s";
    argv[n++] = sock;
    for (int i = 0; args && args[i]; i++) {
        TH_CHECK(n < 62, "too many brokerd arguments");
        argv[n++] = args[i];
    }
    argv[n] = NULL;

    pid = fork_child();
    if (pid == 0) {
        redirect_to_log(log);
        exec_child(argv, env, TH_MAX_ENV, true);    /* the wrapper: $PATH */
    }
    free(words);
    return pid;
}

int th_wait_listening(const char *sock, pid_t pid, int *status)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 1000;

    for (;;) {
        int st, fd;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            if (status)
                *status = st;
            return -1;
        }
        fd = bk_sock_connect(sock);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        TH_CHECK(th_now_ms() < end,
                 "brokerd never accepted on %s (last: %s)", sock,
                 strerror(-fd));
        th_nap(&us);
    }
}

void th_broker_dump_log(const th_broker_t *br)
{
    char buf[4096];
    size_t n;
    FILE *f = fopen(br->log, "r");

    if (!f)
        return;
    fprintf(stderr, "---- brokerd log (%s) ----\n", br->log);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, stderr);
    fprintf(stderr, "---- end of brokerd log ----\n");
    fclose(f);
}

static void describe_status(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
    else
        snprintf(buf, len, "wait status 0x%x", st);
}

void th_broker_startv(th_broker_t *br, const char *const *args)
{
    int st;

    br->pid = 0;
    strcpy(br->dir, "/tmp/bkt-XXXXXX");
    TH_CHECK(mkdtemp(br->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(br->sock, sizeof(br->sock), "%s/sock", br->dir);
    snprintf(br->log, sizeof(br->log), "%s/brokerd.log", br->dir);
    br->pid = th_brokerd_spawn(br->sock, br->log, br->env, args);
    if (th_wait_listening(br->sock, br->pid, &st) < 0) {
        char why[64];
        describe_status(st, why, sizeof(why));
        br->pid = 0;
        th_broker_dump_log(br);
        th_fail(__FILE__, __LINE__, "brokerd exited at start: %s", why);
    }
}

/* th_broker_startv with the NULL-terminated arguments in ap. */
static void start_va(th_broker_t *br, va_list ap)
{
    const char *args[48];
    int n = 0;

    while (n < 47 && (args[n] = va_arg(ap, const char *)))
        n++;
    args[n] = NULL;
    th_broker_startv(br, args);
}

void th_broker_start(th_broker_t *br, ...)
{
    va_list ap;

    va_start(ap, br);
    start_va(br, ap);
    va_end(ap);
}

void th_broker_restart(th_broker_t *br, ...)
{
    va_list ap;

    th_broker_cleanup(br);
    va_start(ap, br);
    start_va(br, ap);
    va_end(ap);
}

bool th_broker_alive(const th_broker_t *br)
{
    int st;

    return br->pid > 0 && waitpid(br->pid, &st, WNOHANG) == 0;
}

int th_broker_signal_wait(th_broker_t *br, int sig)
{
    int st;

    TH_CHECK(br->pid > 0, "brokerd not running");
    st = th_signal_join(br->pid, sig);
    br->pid = 0;
    return st;
}

static void remove_dir(const char *dir)
{
    DIR *d;
    struct dirent *de;
    char p[512];

    if (!dir[0] || !(d = opendir(dir)))
        return;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

void th_broker_cleanup(th_broker_t *br)
{
    if (br->pid > 0) {
        int st;
        kill(br->pid, SIGKILL);
        waitpid(br->pid, &st, 0);
        br->pid = 0;
    }
    remove_dir(br->dir);
    br->dir[0] = '\0';
}

void th_broker_stop(th_broker_t *br)
{
    int st = th_broker_signal_wait(br, SIGTERM);

    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char why[64];
        describe_status(st, why, sizeof(why));
        th_broker_dump_log(br);
        th_fail(__FILE__, __LINE__, "brokerd did not exit 0 on SIGTERM: %s",
                why);
    }
    th_broker_cleanup(br);
}

int th_fd_count(pid_t pid)
{
    char p[64];
    DIR *d;
    struct dirent *de;
    int n = 0;

    snprintf(p, sizeof(p), "/proc/%d/fd", (int)pid);
    if (!(d = opendir(p)))
        return -1;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    if (pid == getpid())
        n--;        /* the directory stream's own fd */
    return n;
}

long th_proc_kb(pid_t pid, const char *key)
{
    char p[64], line[256];
    size_t klen = strlen(key);
    long v = -1;
    FILE *f;

    snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
    if (!(f = fopen(p, "r")))
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* ---- child processes ---------------------------------------------------- */

pid_t th_spawn(th_fn fn, void *arg)
{
    pid_t pid = fork_child();

    if (pid == 0)
        _exit(fn(arg) == 0 ? 0 : 1);
    return pid;
}

int th_join_status(pid_t pid)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;
    int st;

    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            th_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid,
                    strerror(errno));
        if (th_now_ms() >= end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            th_fail(__FILE__, __LINE__, "process %d hung (killed)",
                    (int)pid);
        }
        th_nap(&us);
    }
}

int th_signal_join(pid_t pid, int sig)
{
    kill(pid, sig);
    return th_join_status(pid);
}

void th_join(pid_t pid)
{
    int st = th_join_status(pid);

    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char why[64];
        describe_status(st, why, sizeof(why));
        th_fail(__FILE__, __LINE__, "child %d failed: %s (see its stderr)",
                (int)pid, why);
    }
}

/* ---- barriers ------------------------------------------------------------ */

void th_barrier_init(th_barrier_t *b)
{
    int p[2];

    TH_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    b->rd = p[0];
    b->wr = p[1];
}

void th_barrier_signal(th_barrier_t *b, uint64_t value)
{
    ssize_t n;

    do {
        n = write(b->wr, &value, sizeof(value));
    } while (n < 0 && errno == EINTR);
    TH_CHECK(n == sizeof(value), "barrier write: %s", strerror(errno));
}

uint64_t th_barrier_wait(th_barrier_t *b)
{
    struct pollfd p = { .fd = b->rd, .events = POLLIN };
    uint64_t v;
    ssize_t n;
    int r;

    do {
        r = poll(&p, 1, TH_HANG_MS);
    } while (r < 0 && errno == EINTR);
    TH_CHECK(r == 1, "barrier: nobody signalled (hang guard)");
    do {
        n = read(b->rd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
    TH_CHECK(n == sizeof(v), "barrier read: %zd", n);
    return v;
}

void th_barrier_fini(th_barrier_t *b)
{
    close(b->rd);
    close(b->wr);
    b->rd = b->wr = -1;
}

/* ---- library helpers ---------------------------------------------------- */

const char *th_kind_str(broker_kind_t k)
{
    switch (k) {
    case BROKER_MSG_DATA: return "DATA";
    case BROKER_MSG_CLOSE: return "CLOSE";
    case BROKER_MSG_ERROR: return "ERROR";
    case BROKER_MSG_MONITOR: return "MONITOR";
    case BROKER_MSG_GAP: return "GAP";
    case BROKER_MSG_DISCONNECTED: return "DISCONNECTED";
    case BROKER_MSG_RECONNECTED: return "RECONNECTED";
    }
    return "?";
}

broker_t *th_connect(const th_broker_t *br)
{
    broker_t *b = NULL;

    TH_OK(broker_connect(br->sock, &b));
    TH_CHECK(b != NULL, "broker_connect gave no handle");
    return b;
}

broker_msg_t *th_recv(broker_t *b)
{
    broker_msg_t *m = NULL;
    int r = broker_recv(b, &m, TH_HANG_MS);

    TH_CHECK(r == 0, "broker_recv: %d (%s)", r, broker_strerror(r));
    TH_CHECK(m != NULL, "broker_recv returned 0 and no message");
    return m;
}

broker_msg_t *th_recv_kind(broker_t *b, broker_kind_t kind)
{
    broker_msg_t *m = th_recv(b);

    TH_CHECK(m->kind == kind,
             "expected %s, got %s (code %d %s, stream 0x%x, %zu bytes%s%.*s)",
             th_kind_str(kind), th_kind_str(m->kind), m->code,
             m->code ? broker_strerror(m->code) : "", m->stream, m->len,
             m->kind == BROKER_MSG_ERROR ? ": " : "",
             m->kind == BROKER_MSG_ERROR ? (int)(m->len > 200 ? 200 : m->len)
                                         : 0,
             m->kind == BROKER_MSG_ERROR && m->data ? (const char *)m->data
                                                    : "");
    return m;
}

void th_register(broker_t *b, const char *name)
{
    int r = broker_register(b, name);

    TH_CHECK(r == 0, "register '%s': %d (%s)", name, r, broker_strerror(r));
}

/* The value of `key` in STATUS text, or false if it has no such line. */
static bool status_find(const char *text, const char *key, uint64_t *v)
{
    size_t klen = strlen(key);
    const char *line = text;

    while (line) {
        if (!strncmp(line, key, klen) && line[klen] == '=') {
            *v = strtoull(line + klen + 1, NULL, 10);
            return true;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

uint64_t th_status_value(broker_t *b, const char *key)
{
    char *text = NULL;
    uint64_t v = 0;

    TH_OK(broker_status(b, &text));
    TH_CHECK(status_find(text, key, &v), "STATUS has no %s:\n%s", key, text);
    free(text);
    return v;
}

void th_await_status(broker_t *b, const char *key, uint64_t want)
{
    uint64_t end = th_now_ms() + TH_HANG_MS, v;
    unsigned us = 500;

    while ((v = th_status_value(b, key)) != want) {
        TH_CHECK(th_now_ms() < end, "STATUS %s stays %llu, want %llu", key,
                 (unsigned long long)v, (unsigned long long)want);
        th_nap(&us);
    }
}

uint64_t th_broker_status(const th_broker_t *br, const char *key)
{
    broker_t *b = th_connect(br);
    uint64_t v = th_status_value(b, key);

    broker_close(b);
    return v;
}

void th_broker_await_status(const th_broker_t *br, const char *key,
                            uint64_t want)
{
    broker_t *b = th_connect(br);

    th_await_status(b, key, want);
    broker_close(b);
}

/* The value of " key=" in one LIST record, -1 if it has none. */
static long record_value(const char *line, const char *key)
{
    size_t kl = strlen(key);

    for (const char *k = strstr(line, key); k; k = strstr(k + 1, key))
        if ((k == line || k[-1] == ' ') && k[kl] == '=')
            return strtol(k + kl + 1, NULL, 10);
    return -1;
}

long th_user_value(const th_broker_t *br, uid_t uid, const char *key)
{
    broker_t *b = th_connect(br);
    char *text = NULL, want[32], *line, *save = NULL;
    long v = -1;

    TH_OK(broker_list(b, BROKER_CTRL_LIST_USERS, &text, NULL));
    broker_close(b);
    snprintf(want, sizeof(want), "uid=%u ", (unsigned)uid);
    for (line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, want, strlen(want)))
            continue;
        v = record_value(line, key);
        TH_CHECK(v >= 0, "no %s in '%s'", key, line);
    }
    free(text);
    return v;
}

void th_await_user(const th_broker_t *br, uid_t uid, const char *key,
                   long want)
{
    uint64_t until = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;
    long v;

    while ((v = th_user_value(br, uid, key)) != want) {
        TH_CHECK(th_now_ms() < until, "uid %u %s: %ld, want %ld",
                 (unsigned)uid, key, v, want);
        th_nap(&us);
    }
}

/* ---- patterns ------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static uint64_t pattern_word(uint64_t seed, uint64_t block)
{
    return mix64(block ^ (seed * UINT64_C(0xd6e8feb86659fd93)));
}

static uint8_t pattern_byte(uint64_t seed, uint64_t i)
{
    return (uint8_t)(pattern_word(seed, i / 8) >> (8 * (i % 8)));
}

void th_pattern(void *buf, size_t len, uint64_t seed, uint64_t offset)
{
    uint8_t *p = buf;
    size_t i = 0;

    while (i < len && (offset + i) % 8)
        p[i] = pattern_byte(seed, offset + i), i++;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) / 8);
        bk_put64(p + i, w);
    }
    for (; i < len; i++)
        p[i] = pattern_byte(seed, offset + i);
}

long th_pattern_check(const void *buf, size_t len, uint64_t seed,
                      uint64_t offset)
{
    const uint8_t *p = buf;
    size_t i = 0;

    while (i < len && (offset + i) % 8) {
        if (p[i] != pattern_byte(seed, offset + i))
            return (long)i;
        i++;
    }
    for (; i + 8 <= len; i += 8) {
        if (bk_get64(p + i) != pattern_word(seed, (offset + i) / 8)) {
            for (size_t k = i; k < i + 8; k++)
                if (p[k] != pattern_byte(seed, offset + k))
                    return (long)k;
        }
    }
    for (; i < len; i++)
        if (p[i] != pattern_byte(seed, offset + i))
            return (long)i;
    return -1;
}

double th_scale(void)
{
    const char *s = getenv("BROKER_TEST_SCALE");
    double v;

    if (!s || !*s)
        return 1.0;
    v = strtod(s, NULL);
    if (!(v > 0.0))
        return 1.0;
    return v > 100.0 ? 100.0 : v;
}

size_t th_scaled(size_t n, size_t min)
{
    double v = (double)n * th_scale();

    return v < (double)min ? min : (size_t)v;
}

/* ---- raw protocol ------------------------------------------------------- */

int th_raw_connect(const char *sock)
{
    int fd = bk_sock_connect(sock);

    TH_OK(fd);
    return fd;
}

static int wait_fd(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev };
    int r;

    do {
        r = poll(&p, 1, TH_HANG_MS);
    } while (r < 0 && errno == EINTR);
    return r == 1 ? 0 : -ETIMEDOUT;
}

int th_raw_send_bytes(int fd, const void *buf, size_t len, const int *fds,
                      unsigned nfds)
{
    struct iovec iov = { (void *)buf, len };

    for (;;) {
        int r = bk_sock_send(fd, &iov, 1, fds, nfds);
        if (r != -EAGAIN)
            return r;
        if (wait_fd(fd, POLLOUT) < 0)
            return -ETIMEDOUT;
    }
}

int th_raw_send(int fd, const bk_hdr_t *h, const void *payload,
                const int *fds, unsigned nfds)
{
    uint8_t hdr[BK_HDR_SIZE];
    struct iovec iov[2] = { { hdr, BK_HDR_SIZE },
                            { (void *)payload, payload ? h->length : 0 } };

    bk_hdr_encode(h, hdr);
    for (;;) {
        int r = bk_sock_send(fd, iov, 2, fds, nfds);
        if (r != -EAGAIN)
            return r;
        if (wait_fd(fd, POLLOUT) < 0)
            return -ETIMEDOUT;
    }
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

void th_raw_send_garbage(int fd, uint64_t seed)
{
    uint8_t buf[512];
    uint64_t s = seed * 0x9e3779b97f4a7c15u + 7;
    size_t len = 1 + xorshift(&s) % sizeof(buf);

    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)xorshift(&s);
    buf[0] = 0xee;              /* BK_PROTO_VERSION is 1 */
    (void)th_raw_send_bytes(fd, buf, len, NULL, 0);
}

ssize_t th_raw_recv(int fd, void *buf, size_t len)
{
    int fds[BK_MAX_FDS_HARD];
    unsigned nfds = 0;

    for (;;) {
        ssize_t n = bk_sock_recv(fd, buf, len, fds, &nfds, BK_MAX_FDS_HARD);
        bk_close_fds(fds, nfds);
        if (n != -EAGAIN)
            return n;
        if (wait_fd(fd, POLLIN) < 0)
            return -ETIMEDOUT;
    }
}

int th_raw_connect_hello(const char *sock, bk_welcome_t *w)
{
    return th_raw_connect_hello_caps(sock, 0, w);
}

int th_raw_connect_hello_caps(const char *sock, uint32_t caps,
                              bk_welcome_t *w)
{
    int fd = th_raw_connect(sock);
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    uint8_t pl[4 + 8];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_HELLO,
                   .aux = caps, .length = sizeof(pl) };
    size_t off = 0;
    const uint8_t *payload;
    ssize_t n;

    bk_put32(pl, BK_PROTO_VERSION);
    memcpy(pl + 4, "raw-test", 8);
    TH_OK(th_raw_send(fd, &h, pl, NULL, 0));
    n = th_raw_recv(fd, pkt, sizeof(pkt));
    TH_CHECK(n > 0, "no WELCOME: %zd", n);
    TH_CHECK(bk_pkt_next(pkt, (size_t)n, &off, &h, &payload) == 1,
             "bad WELCOME packet");
    TH_CHECK(h.type == BK_T_WELCOME, "expected WELCOME, got type %u",
             h.type);
    TH_CHECK(h.length >= BK_WELCOME_SIZE, "short WELCOME");
    if (w)
        bk_welcome_decode(payload, w);
    return fd;
}

int th_raw_drain_to_eof(int fd, uint32_t *err_aux, int *nerr)
{
    static uint8_t pkt[BK_MAX_MAX_PACKET];
    int count = 0;
    bool reset = false;

    *err_aux = 0;
    *nerr = 0;
    for (;;) {
        ssize_t n = th_raw_recv(fd, pkt, sizeof(pkt));
        size_t off = 0;
        bk_hdr_t h;
        const uint8_t *payload;

        /* ECONNRESET: the broker closed while our packets were unread;
         * what it wrote before, its last ERROR, is still to be read
         * (broker-protocol(7) TRANSPORT). */
        if (n == -ECONNRESET && !reset) {
            reset = true;
            continue;
        }
        if (n == 0 || n == -ECONNRESET)
            return count;
        if (n < 0)
            return -1;
        count++;
        while (bk_pkt_next(pkt, (size_t)n, &off, &h, &payload) == 1) {
            if (h.type == BK_T_ERROR) {
                *err_aux = h.aux;
                (*nerr)++;
            }
        }
    }
}

/* ---- running programs ----------------------------------------------------- */

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    char *nb = realloc(*buf, *len + n + 1);

    TH_CHECK(nb != NULL, "out of memory");
    memcpy(nb + *len, data, n);
    *len += n;
    nb[*len] = '\0';
    *buf = nb;
}

int th_run(const char *const *argv, const char *const *env, const void *in,
           size_t in_len, th_output_t *out)
{
    int pin[2], pout[2], perr[2];
    size_t in_off = 0;
    pid_t pid;

    signal(SIGPIPE, SIG_IGN);
    memset(out, 0, sizeof(*out));
    append(&out->out, &out->out_len, "", 0);
    append(&out->err, &out->err_len, "", 0);
    TH_CHECK(pipe2(pin, O_CLOEXEC) == 0 && pipe2(pout, O_CLOEXEC) == 0 &&
             pipe2(perr, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    pid = fork_child();
    if (pid == 0) {
        if (in)
            dup2(pin[0], 0);
        else {
            int nul = open("/dev/null", O_RDONLY);
            dup2(nul, 0);
        }
        dup2(pout[1], 1);
        dup2(perr[1], 2);
        exec_child(argv, env, INT_MAX, false);
    }
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    if (!in || in_len == 0) {
        close(pin[1]);
        pin[1] = -1;
    }

    uint64_t end = th_now_ms() + TH_HANG_MS;
    int open_out = 2;
    while (open_out > 0 || pin[1] >= 0) {
        struct pollfd p[3] = {
            { .fd = pout[0], .events = POLLIN },
            { .fd = perr[0], .events = POLLIN },
            { .fd = pin[1], .events = POLLOUT },
        };
        int r = poll(p, 3, 1000);
        TH_CHECK(th_now_ms() < end, "%s hung (hang guard)", argv[0]);
        if (r < 0 && errno == EINTR)
            continue;
        TH_CHECK(r >= 0, "poll: %s", strerror(errno));
        for (int i = 0; i < 2; i++) {
            char buf[65536];
            ssize_t n;
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            n = read(p[i].fd, buf, sizeof(buf));
            if (n > 0) {
                if (i == 0)
                    append(&out->out, &out->out_len, buf, (size_t)n);
                else
                    append(&out->err, &out->err_len, buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                close(p[i].fd);
                if (i == 0)
                    pout[0] = -1;
                else
                    perr[0] = -1;
                open_out--;
            }
        }
        if (pin[1] >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(pin[1], (const char *)in + in_off,
                              in_len - in_off);
            if (n > 0)
                in_off += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) ||
                in_off == in_len) {
                close(pin[1]);
                pin[1] = -1;
            }
        }
    }
    return th_join_status(pid);
}

void th_output_free(th_output_t *out)
{
    free(out->out);
    free(out->err);
    memset(out, 0, sizeof(*out));
}

pid_t th_run_bg(const char *const *argv, const char *const *env,
                const char *log)
{
    pid_t pid = fork_child();

    if (pid == 0) {
        redirect_to_log(log);
        exec_child(argv, env, INT_MAX, false);
    }
    return pid;
}

/* ---- files -------------------------------------------------------------- */

char *th_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, k;

    *len = 0;
    if (!f) {
        append(&buf, len, "", 0);
        return buf;
    }
    do {
        char chunk[4096];
        k = fread(chunk, 1, sizeof(chunk), f);
        append(&buf, &n, chunk, k);
    } while (k > 0);
    fclose(f);
    *len = n;
    return buf;
}

char *th_await_file(const char *path, bool (*ok)(const char *, size_t),
                    size_t *len)
{
    uint64_t end = th_now_ms() + TH_HANG_MS;
    unsigned us = 500;

    for (;;) {
        char *t = th_read_file(path, len);
        if (ok(t, *len))
            return t;
        if (th_now_ms() >= end)
            th_fail(__FILE__, __LINE__,
                    "%s never got the expected content; it has:\n%s", path,
                    t);
        free(t);
        th_nap(&us);
    }
}

/* ---- brokerctl ---------------------------------------------------------- */

const char *th_brokerctl_path(void)
{
    return program_from_env("BROKERCTL", "brokerctl");
}

int th_ctl_va(const char *sock, const void *in, size_t in_len,
              th_output_t *out, va_list args)
{
    const char *argv[16];
    int n = 0;

    argv[n++] = th_brokerctl_path();
    argv[n++] = "-s";
    argv[n++] = sock;
    while (n < 15 && (argv[n] = va_arg(args, const char *)))
        n++;
    argv[n] = NULL;
    return th_run(argv, NULL, in, in_len, out);
}

pid_t th_ctl_bg(const char *sock, const char *log, const char *const *args)
{
    const char *argv[16] = { th_brokerctl_path(), "-s", sock };
    size_t n = 3;

    while (*args && n < 15)
        argv[n++] = *args++;
    argv[n] = NULL;
    return th_run_bg(argv, NULL, log);
}

int th_ctl(const char *sock, th_output_t *out, ...)
{
    va_list ap;
    int st;

    va_start(ap, out);
    st = th_ctl_va(sock, NULL, 0, out, ap);
    va_end(ap);
    return st;
}

/* ---- another user ------------------------------------------------------- */

bool th_become_nobody(void)
{
    return setgroups(0, NULL) == 0 && setgid(TH_NOBODY) == 0 &&
           setuid(TH_NOBODY) == 0;
}
