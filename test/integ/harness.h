/*
 * harness.h - helpers for the integration tests (prefix th_).
 *
 * A test starts a real brokerd (the binary named by $BROKERD, which
 * `make check` sets) in a private temporary directory, runs clients in
 * forked child processes and checks what they report.  Nothing here waits
 * on a clock except as a hang guard: every wait is for an event (a
 * connection, a byte on a pipe, a process exit), and TH_HANG_MS only stops
 * a test that would otherwise hang forever.
 *
 * Checks: use criterion's cr_assert in the test process itself.  In a
 * forked child use TH_CHECK / TH_OK, which print the failure and _exit(1)
 * (a criterion assertion must not run in a grandchild of the runner); in
 * the test process they turn into criterion failures.
 */
#ifndef TH_HARNESS_H
#define TH_HARNESS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include "broker.h"
#include "proto.h"
#include "json.h"

/* Upper bound of any single wait; only a hang guard. */
#define TH_HANG_MS 90000

/* The monotonic clock in milliseconds (for hang guards). */
uint64_t th_now_ms(void);
/* Sleep a little between polls of something that has no event to wait on
 * (a process exit, a connect that may be refused): *us microseconds, then
 * double it up to 20 ms for the next time.  Start with e.g. 500. */
void th_nap(unsigned *us);

/* ---- brokerd ----------------------------------------------------------- */

#define TH_MAX_ENV 8

typedef struct th_broker {
    pid_t pid;                  /* 0 once stopped */
    char dir[64];               /* private temp dir, removed at the end */
    char sock[128];             /* <dir>/sock */
    char log[128];              /* <dir>/brokerd.log: brokerd's output */
    /* Optional NAME=VALUE strings set in brokerd's environment only;
     * fill before th_broker_start (NULL-terminated or full). */
    const char *env[TH_MAX_ENV];
} th_broker_t;

/* The brokerd binary from $BROKERD (fails the test clearly if unset). */
const char *th_brokerd_path(void);

/* Create the temp dir, run `brokerd -f -s <dir>/sock ARGS...` (a
 * NULL-terminated list of extra arguments) and wait until it accepts
 * connections.  Fails the test if brokerd exits instead. */
void th_broker_start(th_broker_t *br, ...);
void th_broker_startv(th_broker_t *br, const char *const *args);
/* For a test that needs other options than its suite's broker: end that
 * one (th_broker_cleanup) and start one with ARGS... instead. */
void th_broker_restart(th_broker_t *br, ...);

/* Like th_broker_start without the temp dir and the readiness wait: run
 * brokerd with exactly `-f -s sock ARGS` and return its pid.  Its output
 * goes to `log` (appended). */
pid_t th_brokerd_spawn(const char *sock, const char *log,
                       const char *const *env, const char *const *args);

/* Wait until a connection to `sock` succeeds while `pid` is alive.
 * Returns 0, or -1 if pid exited first (its wait status in *status). */
int th_wait_listening(const char *sock, pid_t pid, int *status);

/* SIGTERM, wait, assert exit status 0, remove the temp dir. */
void th_broker_stop(th_broker_t *br);
/* Send sig and return the wait status (for tests of abnormal exits). */
int th_broker_signal_wait(th_broker_t *br, int sig);
/* Kill (if still running) and remove the temp dir; for .fini. */
void th_broker_cleanup(th_broker_t *br);
/* Print brokerd's log to stderr (for failures). */
void th_broker_dump_log(const th_broker_t *br);
bool th_broker_alive(const th_broker_t *br);

/* Open fds of a process (/proc/PID/fd), or -1. */
int th_fd_count(pid_t pid);
/* A "VmRSS"/"VmHWM"/... line of /proc/PID/status in KiB, or -1. */
long th_proc_kb(pid_t pid, const char *key);

/* ---- child processes ---------------------------------------------------- */

/* Run fn(arg) in a forked child which exits 0 if fn returned 0, else 1.
 * The child dies with the test process (PR_SET_PDEATHSIG). */
typedef int (*th_fn)(void *arg);
pid_t th_spawn(th_fn fn, void *arg);
/* Wait for a child (hang-guarded); assert it exited 0. */
void th_join(pid_t pid);
/* Wait for a child (hang-guarded) and return its wait status. */
int th_join_status(pid_t pid);
/* Send sig to a child, then th_join_status it. */
int th_signal_join(pid_t pid, int sig);
/* True in a child made by th_spawn. */
bool th_in_child(void);

/* ---- barriers (pipe based, no sleeps) ---------------------------------- */

/* A one-way channel of 8-byte tokens.  signal() writes one token (which
 * may carry a value, e.g. a client id); wait() takes one, failing the test
 * on EOF or after TH_HANG_MS.  Create it before forking. */
typedef struct th_barrier {
    int rd, wr;
} th_barrier_t;

void th_barrier_init(th_barrier_t *b);
void th_barrier_signal(th_barrier_t *b, uint64_t value);
uint64_t th_barrier_wait(th_barrier_t *b);
void th_barrier_fini(th_barrier_t *b);

/* ---- checks usable in children and in the test process ----------------- */

__attribute__((noreturn, format(printf, 3, 4)))
void th_fail(const char *file, int line, const char *fmt, ...);
__attribute__((noreturn, format(printf, 4, 5)))
void th_fail_check(const char *file, int line, const char *cond,
                   const char *fmt, ...);

#define TH_CHECK(cond, ...) do { \
        if (!(cond)) \
            th_fail_check(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)

/* expr must return >= 0; a negative errno fails with its text. */
#define TH_OK(expr) do { \
        long th_r_ = (long)(expr); \
        if (th_r_ < 0) \
            th_fail(__FILE__, __LINE__, "%s = %ld (%s)", #expr, th_r_, \
                    broker_strerror((int)th_r_)); \
    } while (0)

/* ---- library helpers ---------------------------------------------------- */

broker_t *th_connect(const th_broker_t *br);
/* broker_recv with the hang guard; fails unless it returns 0. */
broker_msg_t *th_recv(broker_t *b);
/* Like th_recv but also asserts the kind. */
broker_msg_t *th_recv_kind(broker_t *b, broker_kind_t kind);
/* Register a name and fail on error. */
void th_register(broker_t *b, const char *name);
const char *th_kind_str(broker_kind_t k);

/* The value of `key` in the broker's STATUS text (its "key=value" lines),
 * asked through b.  Fails the test (or the child) if STATUS fails or has
 * no such key. */
uint64_t th_status_value(broker_t *b, const char *key);
/* Ask STATUS through b until `key` has the value `want` (hang-guarded):
 * for counts the broker updates when it gets to it, like "clients" after
 * a disconnect. */
void th_await_status(broker_t *b, const char *key, uint64_t want);
/* The same two on a connection of their own to br's broker, closed
 * before they return. */
uint64_t th_broker_status(const th_broker_t *br, const char *key);
void th_broker_await_status(const th_broker_t *br, const char *key,
                            uint64_t want);
/* The value of `key` in the LIST_USERS record of uid, -1 if the broker
 * has no record for uid (fails the test if the record lacks the key). */
long th_user_value(const th_broker_t *br, uid_t uid, const char *key);
/* Ask LIST_USERS until uid's `key` is `want` (-1: no record). */
void th_await_user(const th_broker_t *br, uid_t uid, const char *key,
                   long want);

/* ---- payload patterns ---------------------------------------------------- */

/* Deterministic pseudo-random bytes: byte i of stream `seed` depends only
 * on (seed, i), so any slice can be produced or checked on its own. */
void th_pattern(void *buf, size_t len, uint64_t seed, uint64_t offset);
/* Returns -1 if buf matches, else the index of the first bad byte. */
long th_pattern_check(const void *buf, size_t len, uint64_t seed,
                      uint64_t offset);

/* $BROKER_TEST_SCALE (default 1.0) times n, at least `min`. */
double th_scale(void);
size_t th_scaled(size_t n, size_t min);

/* ---- raw protocol (for malformed input) --------------------------------- */

/* Connect a raw socket to the broker; no handshake. */
int th_raw_connect(const char *sock);
/* Connect and complete HELLO/WELCOME; *w gets the WELCOME if non-NULL. */
int th_raw_connect_hello(const char *sock, bk_welcome_t *w);
/* The same, declaring `caps` in HELLO's aux (BK_HELLO_SHM: it maps the
 * segments of others; without, it gets their bytes over the socket). */
int th_raw_connect_hello_caps(const char *sock, uint32_t caps,
                              bk_welcome_t *w);
/* Send one frame (a packet of its own). */
int th_raw_send(int fd, const bk_hdr_t *h, const void *payload,
                const int *fds, unsigned nfds);
/* Send raw bytes as one packet. */
int th_raw_send_bytes(int fd, const void *buf, size_t len, const int *fds,
                      unsigned nfds);
/* Wait (hang-guarded) for one packet.  Returns its length, 0 on EOF or a
 * negative errno.  Any received fds are closed. */
ssize_t th_raw_recv(int fd, void *buf, size_t len);
/* One packet of 1 to 512 pseudo-random bytes (the same for the same
 * seed) that is never a frame: its first byte is not the version. */
void th_raw_send_garbage(int fd, uint64_t seed);
/* Read until EOF (hang-guarded), reading on past one ECONNRESET (the
 * broker's last ERROR may follow it).  Returns the number of packets read
 * before EOF, or -1 on timeout/error; *err_aux gets the aux of the last
 * ERROR frame seen (0 if none).  *nerr counts ERROR frames. */
int th_raw_drain_to_eof(int fd, uint32_t *err_aux, int *nerr);

/* ---- running programs ----------------------------------------------------- */

typedef struct th_output {
    char *out;              /* stdout, NUL-terminated (also binary) */
    size_t out_len;
    char *err;              /* stderr, NUL-terminated */
    size_t err_len;
} th_output_t;

/* Run argv[0] (a path) with the given stdin bytes (NULL: /dev/null) and
 * extra environment (NAME=VALUE list, NULL-terminated, may be NULL);
 * capture stdout and stderr.  Returns the wait status. */
int th_run(const char *const *argv, const char *const *env, const void *in,
           size_t in_len, th_output_t *out);
void th_output_free(th_output_t *out);
/* Start argv in the background (stdout/stderr to `log` if non-NULL). */
pid_t th_run_bg(const char *const *argv, const char *const *env,
                const char *log);

/* A wait status is a normal exit with this code. */
#define TH_EXITED(st, code) (WIFEXITED(st) && WEXITSTATUS(st) == (code))

/* The whole of a file, NUL-terminated (also binary: its length in *len);
 * a file that cannot be opened reads as empty.  Free the result. */
char *th_read_file(const char *path, size_t *len);
/* Read path until ok(contents, len) accepts what is there and return that
 * (hang-guarded; fails the test with the last contents otherwise). */
char *th_await_file(const char *path, bool (*ok)(const char *, size_t),
                    size_t *len);

/* ---- brokerctl ---------------------------------------------------------- */

/* The brokerctl binary from $BROKERCTL (which `make check` sets); fails
 * the test clearly if it is unset or this process may not run it. */
const char *th_brokerctl_path(void);
/* Run `brokerctl -s SOCK ARGS...`: the arguments (at most 12) end with a
 * NULL; stdin is /dev/null.  Returns the wait status, as th_run. */
int th_ctl(const char *sock, th_output_t *out, ...);
/* The same with the given stdin bytes (NULL: /dev/null) and the arguments
 * in a va_list, for a test's own wrapper. */
int th_ctl_va(const char *sock, const void *in, size_t in_len,
              th_output_t *out, va_list args);
/* Start `brokerctl -s SOCK ARGS...` (args NULL-terminated, at most 12) in
 * the background, stdout and stderr to `log`. */
pid_t th_ctl_bg(const char *sock, const char *log, const char *const *args);

/* ---- another user ------------------------------------------------------- */

/* The uid (and gid) of "nobody", for tests of the privilege rules; they
 * need root and skip otherwise. */
#define TH_NOBODY 65534
/* In a child: drop the supplementary groups and become TH_NOBODY.  Returns
 * false if that failed. */
bool th_become_nobody(void);


/* A suite whose every test gets its own broker with default options:
 * defines `br` (the running broker) and the fixture. */
#define TH_BROKER_SUITE(suite, seconds)                                   \
    static th_broker_t br;                                                \
    static void th_suite_setup(void) { th_broker_start(&br, NULL); }      \
    static void th_suite_teardown(void) { th_broker_cleanup(&br); }       \
    TestSuite(suite, .init = th_suite_setup, .fini = th_suite_teardown,   \
              .timeout = seconds)

#endif
