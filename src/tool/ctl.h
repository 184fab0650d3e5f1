/*
 * ctl.h - what the parts of brokerctl share (prefix ctl_).
 *
 * Owns nothing itself: it declares the parsed command line (ctl_opts_t)
 * and what one part of brokerctl offers the others:
 *
 *   brokerctl.c  ctl_        main, the command table ctl_cmds (with each
 *                            command's usage and help text), option
 *                            parsing, --help and help
 *   ctl.c        ctl_        messages to the user, connecting, signals and
 *                            the event loop of the long-running commands
 *   record.c     ctl_rec_    the broker's listing and status text, parsed
 *                            in place into records, and their order
 *   output.c     ctl_out_    tables and JSON on stdout
 *   messaging.c  ctl_msg_    send, call, listen, serve, pub, sub
 *   inspect.c    ctl_inspect_  status, clients, names, streams, shm, subs
 *   admin.c      ctl_admin_  ping, wait, kick, shutdown, reload
 *   top.c        ctl_top_    top
 *   monitor.c    ctl_mon_    monitor, and the monitor session it shares
 *                            with capture
 *   capture.c    ctl_cap_    capture (pcapng)
 *   bench.c      bench_      bench: workloads in forked clients, the
 *                            socketpair and relay baselines
 *
 * Each command is a ctl_run_NAME(opts) in its family's file that returns
 * an exit code (CTL_EXIT_*); the files' own helpers carry their prefix.
 * Everything else follows src/common/error.h: failures are negative errno
 * values, positive returns are named outcomes or counts.
 *
 * brokerctl uses only the public API of libbroker (include/broker.h), and
 * the pure topic and name checks of src/common (topic.h, frame.h) so that
 * a bad pattern is a usage error before anything is sent.
 */
#ifndef CTL_H
#define CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "broker.h"

#define CTL_EXIT_OK      0
#define CTL_EXIT_RUNTIME 1
#define CTL_EXIT_USAGE   2

#define CTL_PATH_MAX       512

enum { CTL_JSON_OFF = 0, CTL_JSON_SHORT, CTL_JSON_PRETTY };

/* Parsed command line.  The strings point into argv. */
typedef struct ctl_opts {
    const char *socket;     /* -s PATH, or NULL for the default path */
    int timeout_ms;         /* -1 = wait forever */
    int json;               /* --json: CTL_JSON_* */
    bool no_legend;         /* --no-legend: tables without a header */
    const char *sort;       /* --sort FIELD (list commands) */
    long top;               /* --top N, -1: all rows (also --top 0) */
    bool echo;              /* serve --echo */
    const char *exec;       /* serve --exec CMD, or NULL */
    int interval_ms;        /* top --interval MS */
    long iterations;        /* top --iterations N, 0: until a signal */
    uint32_t snap;          /* monitor/capture --snap N, 0: default */
    const char *group;      /* sub --group G, or NULL */
    int policy;             /* sub --policy: BROKER_SUB_* */
    long count;             /* listen/sub --count N, 0: until a signal;
                               bench --count N, 0: each workload's
                               default */
    bool raw;               /* listen/sub --raw */
    bool timestamps;        /* listen/sub --timestamps */
    bool reconnect;         /* listen/sub/serve --reconnect */
    uint32_t reg_flags;     /* listen --queue/--replace/--allow-replacement:
                               BROKER_NAME_* */
    size_t bench_size;      /* bench --size, 0: each workload's default */
    long bench_subs;        /* bench --subs, 0: default */
    long bench_clients;     /* bench --clients, 0: default */
    long bench_procs;       /* bench --procs, 0: default */
    long bench_reps;        /* bench --reps, 0: one */
    bool bench_baseline;    /* bench --baseline */
    bool bench_no_batch;    /* bench --no-batch */
    const char *cmd;
    char **args;            /* positional arguments after the command */
    int nargs;
} ctl_opts_t;

/* ---- ctl.c: messages, connection, signals, event loop ------------------- */

/* "brokerctl: ..." and a newline on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The same with a hint to --help; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Errors of the privileged operations, EPERM spelled out. */
const char *ctl_priv_strerror(int err);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t ctl_now_ns(void);

/* Connect to -s PATH or the library's default, and write the path shown
 * to the user into path.  On failure print why and return NULL; the
 * caller owns (broker_close) what it returns. */
broker_t *ctl_connect(const ctl_opts_t *o, char *path, size_t len);

/* Print why connecting to path failed with err (one line per errno,
 * ENOENT: no broker socket). */
void ctl_connect_error(const char *path, int err);

/* For the commands that run until a signal: catch SIGINT/SIGTERM, then
 * connect.  NULL (after a message) on failure. */
broker_t *ctl_start(const ctl_opts_t *o, char *path, size_t len);

/* Whether SIGINT/SIGTERM arrived since ctl_start. */
bool ctl_stopped(void);

/* Sleep until fd (ignored if negative) is readable, a signal arrives or
 * timeout_ms pass.  Returns 0 or a negative errno. */
int ctl_wait(int fd, int timeout_ms);
/* Write all of data[0..len) to fd, across short writes and EINTR.  0 or
 * -errno. */
int ctl_write_all(int fd, const void *data, size_t len);

/* Handles one message; it owns nothing (the loop frees the message).
 * ctx is the loop's caller's.  0 to go on, CTL_LOOP_DONE to end the loop
 * successfully, or a negative errno that ends it. */
typedef int (*ctl_handle_fn)(broker_t *b, broker_msg_t *msg, void *ctx);
#define CTL_LOOP_DONE 1

/* Deliver messages to fn until a signal, the broker's shutdown or fn's
 * CTL_LOOP_DONE.  Returns 0, or a negative errno for a failure worth
 * reporting (a connection lost without the broker's BYE is one). */
int ctl_event_loop(broker_t *b, ctl_handle_fn fn, void *ctx);

/* ---- record.c: the broker's text, parsed in place ----------------------- */

#define CTL_REC_MAX_KEYS    32      /* fields of one listing record */
#define CTL_REC_STATUS_MAX 128      /* key=value lines of STATUS */

/* One record; keys and raw (still percent-escaped) values point into the
 * listing text, which must outlive the record. */
typedef struct ctl_rec {
    char *keys[CTL_REC_MAX_KEYS];
    char *vals[CTL_REC_MAX_KEYS];
    size_t n;
} ctl_rec_t;

/* How records sort: by key, numbers largest first if desc, text in byte
 * order; a record without the key comes last. */
typedef struct ctl_rec_order {
    const char *key;
    bool desc;
} ctl_rec_order_t;

/* Split STATUS's "key=value" lines in place.  Returns the number of pairs
 * stored in keys/vals (at most max). */
size_t ctl_rec_status(char *text, char **keys, char **vals, size_t max);

/* Split the listing text into records, in place.  Returns how many, or
 * -ENOMEM; *out is malloc'd and the caller frees it (before the text
 * would dangle it). */
ssize_t ctl_rec_parse(char *text, ctl_rec_t **out);

/* The raw value of key in r, or NULL. */
const char *ctl_rec_get(const ctl_rec_t *r, const char *key);

/* Whether s is a non-empty string of decimal digits. */
bool ctl_rec_is_num(const char *s);

/* s as a number; 0 when s is NULL or not a number. */
uint64_t ctl_rec_u64(const char *s);

/* Percent-decode n bytes of s into a new string the caller frees (NULL
 * on no memory). */
char *ctl_rec_unescape(const char *s, size_t n);

int ctl_rec_cmp(const ctl_rec_t *a, const ctl_rec_t *b,
                const ctl_rec_order_t *ord);
void ctl_rec_sort(ctl_rec_t *recs, size_t n, const ctl_rec_order_t *ord);

/* ---- output.c: tables and JSON on stdout -------------------------------- */

/* s as a JSON string on f; invalid UTF-8 bytes become U+FFFD. */
void ctl_out_json_string(FILE *f, const char *s);

/* The text output shows values for people: sizes in B, KiB, MiB, GiB
 * (keys with "bytes" in them, size, the max_* sizes, queue_limit),
 * durations (keys ending in _ms, labelled without the suffix) as 850ms,
 * 2.8s, 42s, 3m, 2h, 5d, a uid as its user name, and lists (names,
 * queue) cut to CTL_OUT_LIST_WIDTH bytes with a count of the items left
 * out ("svc.a, svc.b +18", names_more included).  JSON keeps the raw
 * values. */
#define CTL_OUT_LIST_WIDTH 40

/* bytes as "850B", "1.2KiB", "34MiB" ... into buf. */
void ctl_out_size(char *buf, size_t len, uint64_t bytes);

/* ms as "850ms", "2.8s", "42s", "3m", "2h", "5d" into buf. */
void ctl_out_duration(char *buf, size_t len, uint64_t ms);

/* key: value lines, values aligned, in human units. */
void ctl_out_pairs(char *const *keys, char *const *vals, size_t n);

/* A STATUS-style text (key=value lines, parsed in place) as pairs, or
 * with json (o->json) as one JSON object; then stdout flushed.  Returns
 * CTL_EXIT_OK or CTL_EXIT_RUNTIME (stdout failed). */
int ctl_out_status(char *text, int json);

/* One JSON object of the pairs; digit-only values are numbers. */
void ctl_out_json_pairs(char *const *keys, char *const *vals, size_t n,
                        int mode);

/* The records as a JSON array of objects. */
void ctl_out_json_records(const ctl_rec_t *recs, size_t n, int mode);

/* The records as a table of the columns cols (NULL-terminated), with a
 * header line if legend.  0 or -ENOMEM (nothing printed). */
int ctl_out_table(const char *const *cols, const ctl_rec_t *recs,
                  size_t n, bool legend);

/* The same in lines of at most width bytes: a last list column gets the
 * room the others leave, and lines are cut at width. */
int ctl_out_table_fit(const char *const *cols, const ctl_rec_t *recs,
                      size_t n, bool legend, size_t width);

/* ---- monitor.c: the monitor session monitor and capture share ----------- */

/* What a monitor session counts, and what its handler writes to. */
typedef struct ctl_mon {
    uint64_t records, dropped;
    int json;                   /* monitor --json */
    FILE *file;                 /* capture: the pcapng output (not owned) */
    struct ctl_mon_names *names;    /* owned by ctl_mon_loop: comm names
                                       of client ids, names and sizes of
                                       streams */
} ctl_mon_t;

/* One record with what the session knows around it.  The strings live
 * until the next record; comm and dest are raw (unescaped) text. */
typedef struct ctl_mon_view {
    broker_monitor_rec_t rec;
    const char *from_comm;      /* the sender's comm, "broker", or "?" */
    const char *to_comm;        /* the receiver's comm, or "?" */
    const char *dest_key;       /* "dest" (frame towards a name), "src"
                                   (answer from a name's owner), "topic",
                                   or NULL when none is known */
    const char *dest;           /* the name or topic, when dest_key */
    const uint8_t *body;        /* message bytes captured (after a name or
                                   topic), `shown` of them */
    size_t shown;
    uint32_t frag;              /* message bytes in this frame */
    uint64_t size;              /* message bytes so far: the whole message
                                   once `more` is false */
    bool more;                  /* more fragments follow */
    bool size_known;            /* false: a continuation whose start this
                                   session did not see */
} ctl_mon_view_t;

/* If m is a monitor record, decode it into v, count it and return true;
 * other messages (the $broker.clients announcements the session
 * subscribes to, to learn comm names) are used and give false. */
bool ctl_mon_take(broker_t *b, ctl_mon_t *mon, const broker_msg_t *m,
                  ctl_mon_view_t *v);

/* Text of at most max bytes of p[0..n) with bytes outside printable
 * ASCII, space and backslash as \xHH ("\\" for backslash), and "..."
 * when cut short or when `more`; into buf of len bytes. */
void ctl_mon_escape(const uint8_t *p, size_t n, size_t max, bool more,
                    char *buf, size_t len, bool keep_space);

/* Connect, become a monitor with filter and hand records to fn (ctx: mon)
 * until a signal; then print the counts.  Returns an exit code. */
int ctl_mon_loop(const ctl_opts_t *o, const char *verb, const char *filter,
                 ctl_handle_fn fn, ctl_mon_t *mon);

/* ---- the commands (one file per family) --------------------------------- */

int ctl_run_send(const ctl_opts_t *o);
int ctl_run_call(const ctl_opts_t *o);
int ctl_run_listen(const ctl_opts_t *o);
int ctl_run_serve(const ctl_opts_t *o);
int ctl_run_pub(const ctl_opts_t *o);
int ctl_run_sub(const ctl_opts_t *o);

int ctl_run_status(const ctl_opts_t *o);
int ctl_run_list(const ctl_opts_t *o);      /* clients names streams shm
                                               subs */

int ctl_run_ping(const ctl_opts_t *o);
int ctl_run_wait(const ctl_opts_t *o);
int ctl_run_kick(const ctl_opts_t *o);
int ctl_run_shutdown(const ctl_opts_t *o);
int ctl_run_reload(const ctl_opts_t *o);

int ctl_run_top(const ctl_opts_t *o);

int ctl_run_monitor(const ctl_opts_t *o);
int ctl_run_capture(const ctl_opts_t *o);

int ctl_run_bench(const ctl_opts_t *o);

#endif
