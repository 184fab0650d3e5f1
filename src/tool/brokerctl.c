/*
 * brokerctl.c - operator tool for brokerd: main, the command table and
 * the command line (prefix ctl_).
 *
 * Owns the parsed command line (ctl_opts_t, its strings in argv) and the
 * table ctl_cmds that maps each command to its ctl_run_* in the files of
 * src/tool/ (see ctl.h).  test/unit/test_docs.c reads the table's
 * { "name", ... } lines, and man/brokerctl.1 and
 * contrib/bash-completion/brokerctl follow it.
 *
 * Uses only the public API of libbroker (include/broker.h).
 *
 * Exit codes: 0 success, 1 runtime error (one line on stderr), 2 usage
 * error (one line on stderr with a hint to --help).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#ifdef BROKER_VERSION
#define CTL_VERSION BROKER_VERSION
#else
#define CTL_VERSION BROKER_VERSION_STRING
#endif

#define CTL_DEF_TIMEOUT_MS 10000   /* ping, call, send's check */
#define CTL_TOP_DEF_INTERVAL_MS 1000

/* Not an exit code: what the parser returns while the command is still
 * to run. */
#define CTL_PARSE_GO_ON 256

/* Options that belong to one command (-s and --timeout are accepted
 * before or after any command). */
enum {
    CTL_ACCEPT_JSON = 0x1,
    CTL_ACCEPT_SERVE = 0x2,     /* --echo, --exec */
    CTL_ACCEPT_LIST = 0x4,      /* --no-legend, --sort, --top */
    CTL_ACCEPT_TOP = 0x8,       /* --interval, --iterations */
    CTL_ACCEPT_SNAP = 0x10,     /* --snap */
    CTL_ACCEPT_SUB = 0x20,      /* --group, --policy */
    CTL_ACCEPT_REG = 0x40,      /* --queue, --replace, --allow-replacement */
    CTL_ACCEPT_BENCH = 0x80,    /* --count, --size, --subs, --clients,
                                   --reps, --baseline, --no-batch,
                                   --no-legend */
    CTL_ACCEPT_RECV = 0x100,    /* --raw, --count, --timestamps */
    CTL_ACCEPT_RECONNECT = 0x200, /* --reconnect */
};

/* One command: its arguments, options, what it runs, and its usage (after
 * "brokerctl "; '\n' continues on an indented line) and help text ('\n'
 * between lines) for --help, `help CMD` and `CMD --help`. */
typedef struct ctl_cmd {
    const char *name;
    int min_args, max_args;
    unsigned accepts;           /* CTL_ACCEPT_* */
    const char *needs;          /* what min_args are, for the usage error */
    int (*run)(const ctl_opts_t *o);
    const char *usage;
    const char *help;
} ctl_cmd_t;

static int ctl_run_help(const ctl_opts_t *o);
int ctl_run_bridge(const ctl_opts_t *o);    /* bridge.c */

#define CTL_LIST_USAGE "[--sort FIELD] [--top N] [--json] [--no-legend]"
#define CTL_LIST_HELP "(needs root or the broker's user)"

static const ctl_cmd_t ctl_cmds[] = {
    { "ping",   0, 0, 0,               NULL,     ctl_run_ping,
      "ping", "round trip to the broker" },
    { "status", 0, 0, CTL_ACCEPT_JSON, NULL,     ctl_run_status,
      "status [--json]", "broker counters and limits" },
    { "clients", 0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, NULL, ctl_run_list,
      "clients " CTL_LIST_USAGE, "list the connected clients\n" CTL_LIST_HELP },
    { "names",   0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, NULL, ctl_run_list,
      "names " CTL_LIST_USAGE,
      "list the owned names and who waits for them\n" CTL_LIST_HELP },
    { "streams", 0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, NULL, ctl_run_list,
      "streams " CTL_LIST_USAGE, "list the open streams\n" CTL_LIST_HELP },
    { "shm",     0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, NULL, ctl_run_list,
      "shm " CTL_LIST_USAGE,
      "list the shared-memory segments\n" CTL_LIST_HELP },
    { "subs",    0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, NULL, ctl_run_list,
      "subs " CTL_LIST_USAGE, "list the subscriptions\n" CTL_LIST_HELP },
    { "users",   0, 0, CTL_ACCEPT_JSON | CTL_ACCEPT_LIST, NULL, ctl_run_list,
      "users " CTL_LIST_USAGE,
      "per-user accounting: connections, fds in\nflight, streams, names, "
      "subscriptions,\nshared memory, quota hits\n" CTL_LIST_HELP },
    { "top",     0, 0, CTL_ACCEPT_LIST | CTL_ACCEPT_TOP, NULL, ctl_run_top,
      "top [--sort FIELD] [--top N] [--interval MS] [--iterations N]",
      "live view of the busiest clients: rates per\n"
      "second, refreshed every MS (default 1000);\n"
      "--sort msgs|bytes|queued|errors (or any field);\n"
      "on a terminal, keys q (quit), m b u e (sort)" },
    { "kick",    1, 1, 0, "a client ID", ctl_run_kick,
      "kick ID", "disconnect client ID" },
    { "shutdown", 0, 0, 0, NULL, ctl_run_shutdown,
      "shutdown", "stop the broker as SIGTERM would" },
    { "reload",   0, 0, 0, NULL, ctl_run_reload,
      "reload", "re-read the broker's configuration file (-c)" },
    { "send",   1, 2, 0,               "a NAME", ctl_run_send,
      "send NAME|:ID [DATA|-]",
      "one-way message to the owner of NAME or to\n"
      "client ID (no DATA or '-': read stdin)" },
    { "call",   1, 2, 0,               "a NAME", ctl_run_call,
      "call NAME|:ID [DATA|-]",
      "request; the reply is written to stdout" },
    { "listen", 1, 1, CTL_ACCEPT_REG | CTL_ACCEPT_RECV | CTL_ACCEPT_RECONNECT,
      "a NAME", ctl_run_listen,
      "listen NAME [--queue] [--replace] [--allow-replacement]\n"
      "[--raw] [--count N] [--timestamps] [--reconnect]",
      "register NAME and print every message; with\n"
      "--queue wait in line if it is taken, with\n"
      "--replace take it from an owner that allows\n"
      "it, with --allow-replacement let others take it;\n"
      "--raw: only the payloads; --count: exit after\n"
      "N messages; --timestamps: time of day first;\n"
      "--reconnect: survive a broker restart" },
    { "serve",  1, 1, CTL_ACCEPT_SERVE | CTL_ACCEPT_RECONNECT, "a NAME",
      ctl_run_serve,
      "serve NAME --echo | --exec CMD [--reconnect]",
      "register NAME and answer requests with their\n"
      "own payload (--echo) or with what CMD (run by\n"
      "/bin/sh -c, the request on its stdin) writes\n"
      "to stdout; CMD failing is an error reply;\n"
      "--reconnect: survive a broker restart" },
    { "wait",   1, 1, 0, "a NAME", ctl_run_wait,
      "wait NAME [--timeout MS]",
      "exit 0 once NAME has an owner, 1 after MS\n"
      "(default 10000, -1: no limit)" },
    { "pub",    1, 2, 0,               "a TOPIC", ctl_run_pub,
      "pub TOPIC [DATA|-]",
      "publish a message on TOPIC (no DATA or '-':\nread stdin)" },
    { "sub",    1, 1, CTL_ACCEPT_SUB | CTL_ACCEPT_RECV | CTL_ACCEPT_RECONNECT,
      "a PATTERN", ctl_run_sub,
      "sub PATTERN [--group G] [--policy drop|block|disconnect]\n"
      "[--count N] [--raw] [--timestamps] [--reconnect]",
      "subscribe and print 'TOPIC DATA' per message\n"
      "('*' one token, '>' the rest); --raw: only the\n"
      "payloads; --count: exit after N messages;\n"
      "--timestamps: time of day first;\n"
      "--reconnect: survive a broker restart" },
    { "monitor",  0, 1, CTL_ACCEPT_JSON | CTL_ACCEPT_SNAP, NULL,
      ctl_run_monitor,
      "monitor [FILTER] [--snap N] [--json]",
      "print every message the broker forwards\n"
      "(FILTER: name:PATTERN, id:N or topic:PATTERN)" },
    { "capture",  1, 2, CTL_ACCEPT_SNAP, "a FILE", ctl_run_capture,
      "capture FILE [FILTER] [--snap N]",
      "write the same records as pcapng to FILE\n('-': stdout)" },
    { "bench",    0, 6, CTL_ACCEPT_JSON | CTL_ACCEPT_BENCH, NULL,
      ctl_run_bench,
      "bench [WORKLOAD...] [--count N] [--size BYTES] [--subs N]\n"
      "[--clients N] [--procs P] [--reps R] [--baseline] [--no-batch] [--json]",
      "measure the broker with forked clients\n"
      "(pingpong, stream, bulk, fanout, clients;\n"
      "default all); --baseline: also over a\n"
      "socketpair and an epoll relay, with ratios" },
    { "bridge",   0, 1, CTL_ACCEPT_JSON, NULL, ctl_run_bridge,
      "bridge [NAME] [--json]",
      "status of the brokerd-nats bridge that owns\n"
      "NAME (default brokerd-nats): server, state,\n"
      "imports, exports, offers, rates and drops" },
    { "help",     0, 1, 0, NULL, ctl_run_help,
      "help [COMMAND]", "this help, or COMMAND's" },
};

enum { CTL_OPT_TIMEOUT = 0x100, CTL_OPT_JSON, CTL_OPT_ECHO, CTL_OPT_VERSION,
       CTL_OPT_NO_LEGEND, CTL_OPT_SORT, CTL_OPT_TOP, CTL_OPT_INTERVAL,
       CTL_OPT_ITERATIONS, CTL_OPT_SNAP, CTL_OPT_GROUP, CTL_OPT_POLICY,
       CTL_OPT_COUNT, CTL_OPT_RAW, CTL_OPT_QUEUE, CTL_OPT_REPLACE,
       CTL_OPT_ALLOW_REPLACEMENT, CTL_OPT_SIZE, CTL_OPT_SUBS, CTL_OPT_CLIENTS,
       CTL_OPT_PROCS,
       CTL_OPT_REPS, CTL_OPT_BASELINE, CTL_OPT_NO_BATCH, CTL_OPT_TIMESTAMPS,
       CTL_OPT_EXEC, CTL_OPT_RECONNECT };

static const struct option ctl_long_opts[] = {
    { "socket",  required_argument, NULL, 's' },
    { "timeout", required_argument, NULL, CTL_OPT_TIMEOUT },
    { "json",    optional_argument, NULL, CTL_OPT_JSON },
    { "no-legend", no_argument,     NULL, CTL_OPT_NO_LEGEND },
    { "sort",    required_argument, NULL, CTL_OPT_SORT },
    { "top",     required_argument, NULL, CTL_OPT_TOP },
    { "echo",    no_argument,       NULL, CTL_OPT_ECHO },
    { "exec",    required_argument, NULL, CTL_OPT_EXEC },
    { "interval", required_argument, NULL, CTL_OPT_INTERVAL },
    { "iterations", required_argument, NULL, CTL_OPT_ITERATIONS },
    { "snap",    required_argument, NULL, CTL_OPT_SNAP },
    { "group",   required_argument, NULL, CTL_OPT_GROUP },
    { "policy",  required_argument, NULL, CTL_OPT_POLICY },
    { "count",   required_argument, NULL, CTL_OPT_COUNT },
    { "raw",     no_argument,       NULL, CTL_OPT_RAW },
    { "timestamps", no_argument,    NULL, CTL_OPT_TIMESTAMPS },
    { "reconnect", no_argument,     NULL, CTL_OPT_RECONNECT },
    { "queue",   no_argument,       NULL, CTL_OPT_QUEUE },
    { "replace", no_argument,       NULL, CTL_OPT_REPLACE },
    { "allow-replacement", no_argument, NULL, CTL_OPT_ALLOW_REPLACEMENT },
    { "size",    required_argument, NULL, CTL_OPT_SIZE },
    { "subs",    required_argument, NULL, CTL_OPT_SUBS },
    { "clients", required_argument, NULL, CTL_OPT_CLIENTS },
    { "procs",   required_argument, NULL, CTL_OPT_PROCS },
    { "reps",    required_argument, NULL, CTL_OPT_REPS },
    { "baseline", no_argument,      NULL, CTL_OPT_BASELINE },
    { "no-batch", no_argument,      NULL, CTL_OPT_NO_BATCH },
    { "version", no_argument,       NULL, CTL_OPT_VERSION },
    { "help",    no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

/* ---- help --------------------------------------------------------------- */

#define CTL_HELP_COL 27     /* where the help texts of --help start */

/* text's '\n'-separated lines, each after `indent` spaces; the first one
 * after `first` spaces instead. */
static void ctl_help_lines(const char *text, int first, int indent)
{
    for (int pad = first; *text; pad = indent) {
        size_t n = strcspn(text, "\n");

        printf("%*s%.*s\n", pad, "", (int)n, text);
        text += n;
        if (*text == '\n')
            text++;
    }
}

/* A usage's '\n'-separated lines: the first after the text `lead`, the
 * others after `indent` spaces. */
static void ctl_help_usage(const char *lead, const char *usage, int indent)
{
    size_t n = strcspn(usage, "\n");

    printf("%s%.*s\n", lead, (int)n, usage);
    if (usage[n] == '\n')
        ctl_help_lines(usage + n + 1, indent, indent);
}

/* One command's entry of --help: its usage, then its help text in the
 * column, on the usage's line when that is short. */
static void ctl_help_entry(const ctl_cmd_t *c)
{
    size_t n = strlen(c->usage);

    if (!strchr(c->usage, '\n') && 2 + n + 1 <= CTL_HELP_COL) {
        printf("  %s", c->usage);
        ctl_help_lines(c->help, (int)(CTL_HELP_COL - 2 - n), CTL_HELP_COL);
        return;
    }
    ctl_help_usage("  ", c->usage, 6);
    ctl_help_lines(c->help, CTL_HELP_COL, CTL_HELP_COL);
}

static void ctl_help(void)
{
    printf(
"Usage: brokerctl [OPTIONS] COMMAND [ARGS]\n"
"Operator tool for the brokerd local message broker.\n"
"\n"
"Options:\n"
"  -s, --socket PATH   broker socket (default: $BROKER_SOCKET,\n"
"                      $XDG_RUNTIME_DIR/brokerd.sock, /run/brokerd.sock\n"
"                      for root, else /tmp/brokerd-$UID/brokerd.sock)\n"
"      --timeout MS    how long ping, call, wait, serve --exec and send's\n"
"                      delivery check wait, in milliseconds (default %d,\n"
"                      -1: no limit)\n"
"      --json[=short|pretty]  JSON output (status and the lists)\n"
"      --no-legend     tables without their header line\n"
"      --version       print the version and exit\n"
"  -h, --help          print this help and exit\n"
"\n"
"Commands:\n", CTL_DEF_TIMEOUT_MS);
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
        ctl_help_entry(&ctl_cmds[i]);
    printf(
"\n"
"-s, --timeout, --json and --no-legend may also follow the command.\n"
"--sort takes a field (JSON key) of the list; numbers sort largest first,\n"
"text in byte order.  --top 0 and --iterations 0 mean no limit, as when\n"
"they are not given.  listen, serve, sub (without --count), monitor and\n"
"capture run until SIGINT/SIGTERM or broker shutdown.\n"
"'brokerctl help COMMAND' or 'brokerctl COMMAND --help': one command.\n"
"Exit status: 0 success, 1 runtime error, 2 usage error.\n");
}

/* `help CMD` and `CMD --help`: the command's usage and help text. */
static void ctl_help_cmd(const ctl_cmd_t *c)
{
    ctl_help_usage("Usage: brokerctl [-s PATH] [--timeout MS] ", c->usage,
                   9);
    ctl_help_lines(c->help, 0, 0);
    printf("See brokerctl(1).\n");
}

/* ---- command line ------------------------------------------------------- */

static const ctl_cmd_t *ctl_find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
        if (strcmp(ctl_cmds[i].name, name) == 0)
            return &ctl_cmds[i];
    return NULL;
}

/* s as a decimal number in [min, max].  0 or -EINVAL. */
static int ctl_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* An option's argument as an int in [min, max].  0 or -EINVAL. */
static int ctl_parse_int(const char *s, int min, int max, int *out)
{
    long v;
    int r = ctl_parse_long(s, min, max, &v);

    if (r == 0)
        *out = (int)v;
    return r;
}

/* The option c as the user wrote it, for error messages (never its
 * value): "--NAME" when getopt_long matched a long option (longidx),
 * else "-c", else the long name of c's value; an unknown option is the
 * word getopt stopped at (argv[optind - 1]), cut at '='.  Points into a
 * static buffer. */
static const char *ctl_opt_label(int c, int longidx, char **argv)
{
    static char buf[64];
    const char *w;

    if (c == '?' || c == ':')
        c = optopt;
    if (longidx >= 0) {
        snprintf(buf, sizeof(buf), "--%s", ctl_long_opts[longidx].name);
        return buf;
    }
    if (c > 0 && c < 0x100) {
        snprintf(buf, sizeof(buf), "-%c", c);
        return buf;
    }
    for (const struct option *lo = ctl_long_opts; c && lo->name; lo++)
        if (lo->val == c) {
            snprintf(buf, sizeof(buf), "--%s", lo->name);
            return buf;
        }
    w = optind > 0 && argv[optind - 1] ? argv[optind - 1] : "?";
    snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(w, "="), w);
    return buf;
}

/* --json[=short|pretty].  0 or -EINVAL. */
static int ctl_parse_json(const char *arg, int *mode)
{
    if (!arg || !strcmp(arg, "short"))
        *mode = CTL_JSON_SHORT;
    else if (!strcmp(arg, "pretty"))
        *mode = CTL_JSON_PRETTY;
    else
        return -EINVAL;
    return 0;
}

/* Which commands take option c: CTL_ACCEPT_*, or 0 where it is valid
 * anywhere (before the command when global). */
static unsigned ctl_opt_scope(int c, bool global)
{
    switch (c) {
    case CTL_OPT_JSON:
        return global ? 0 : CTL_ACCEPT_JSON;
    case CTL_OPT_NO_LEGEND:
        return global ? 0 : CTL_ACCEPT_LIST | CTL_ACCEPT_BENCH;
    case CTL_OPT_SORT:
    case CTL_OPT_TOP:
        return CTL_ACCEPT_LIST;
    case CTL_OPT_ECHO:
    case CTL_OPT_EXEC:
        return CTL_ACCEPT_SERVE;
    case CTL_OPT_INTERVAL:
    case CTL_OPT_ITERATIONS:
        return CTL_ACCEPT_TOP;
    case CTL_OPT_SNAP:
        return CTL_ACCEPT_SNAP;
    case CTL_OPT_COUNT:
        return CTL_ACCEPT_RECV | CTL_ACCEPT_BENCH;
    case CTL_OPT_RAW:
    case CTL_OPT_TIMESTAMPS:
        return CTL_ACCEPT_RECV;
    case CTL_OPT_GROUP:
    case CTL_OPT_POLICY:
        return CTL_ACCEPT_SUB;
    case CTL_OPT_RECONNECT:
        return CTL_ACCEPT_RECONNECT;
    case CTL_OPT_SIZE:
    case CTL_OPT_SUBS:
    case CTL_OPT_CLIENTS:
    case CTL_OPT_PROCS:
    case CTL_OPT_REPS:
    case CTL_OPT_BASELINE:
    case CTL_OPT_NO_BATCH:
        return CTL_ACCEPT_BENCH;
    case CTL_OPT_QUEUE:
    case CTL_OPT_REPLACE:
    case CTL_OPT_ALLOW_REPLACEMENT:
        return CTL_ACCEPT_REG;
    default:
        return 0;
    }
}

/* --policy NAME.  0 or -EINVAL. */
static int ctl_parse_policy(const char *s, int *policy)
{
    if (!strcmp(s, "drop"))
        *policy = BROKER_SUB_DROP;
    else if (!strcmp(s, "block"))
        *policy = BROKER_SUB_BLOCK;
    else if (!strcmp(s, "disconnect"))
        *policy = BROKER_SUB_DISCONNECT;
    else
        return -EINVAL;
    return 0;
}

/* The options of sub, listen and serve.  Returns CTL_PARSE_GO_ON or an exit
 * code. */
static int ctl_take_pubsub(int c, ctl_opts_t *o)
{
    switch (c) {
    case CTL_OPT_GROUP:
        o->group = optarg;
        break;
    case CTL_OPT_POLICY:
        if (ctl_parse_policy(optarg, &o->policy) < 0)
            return ctl_usage_error("unknown --policy '%s' (drop, block or "
                                   "disconnect)", optarg);
        break;
    case CTL_OPT_COUNT:
        if (ctl_parse_long(optarg, 1, LONG_MAX, &o->count) < 0)
            return ctl_usage_error("invalid --count '%s' (a count >= 1)",
                                   optarg);
        break;
    case CTL_OPT_RAW:
        o->raw = true;
        break;
    case CTL_OPT_TIMESTAMPS:
        o->timestamps = true;
        break;
    case CTL_OPT_RECONNECT:
        o->reconnect = true;
        break;
    case CTL_OPT_EXEC:
        if (!*optarg)
            return ctl_usage_error("option '--exec' needs a command");
        o->exec = optarg;
        break;
    case CTL_OPT_QUEUE:
        o->reg_flags |= BROKER_NAME_QUEUE;
        break;
    case CTL_OPT_REPLACE:
        o->reg_flags |= BROKER_NAME_REPLACE_EXISTING;
        break;
    case CTL_OPT_ALLOW_REPLACEMENT:
        o->reg_flags |= BROKER_NAME_ALLOW_REPLACEMENT;
        break;
    }
    return CTL_PARSE_GO_ON;
}

/* --size BYTES: a number with an optional K, M or G (powers of 1024),
 * from 8 (the sequence number) to 1 GiB.  0 or -EINVAL. */
static int ctl_parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;
    int shift = 0;

    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    v = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (errno || *end || v > (1ull << 30) >> shift)
        return -EINVAL;
    v <<= shift;
    if (v < 8)
        return -EINVAL;
    *out = (size_t)v;
    return 0;
}

/* The options of bench (--count is sub's too).  Returns CTL_PARSE_GO_ON
 * or an exit code. */
static int ctl_take_bench(int c, ctl_opts_t *o)
{
    switch (c) {
    case CTL_OPT_SIZE:
        if (ctl_parse_size(optarg, &o->bench_size) < 0)
            return ctl_usage_error("invalid --size '%s' (bytes, 8 to 1G; "
                                   "K, M, G allowed)", optarg);
        break;
    case CTL_OPT_SUBS:
        if (ctl_parse_long(optarg, 1, 256, &o->bench_subs) < 0)
            return ctl_usage_error("invalid --subs '%s' (1 to 256)", optarg);
        break;
    case CTL_OPT_CLIENTS:
        if (ctl_parse_long(optarg, 1, 1000, &o->bench_clients) < 0)
            return ctl_usage_error("invalid --clients '%s' (1 to 1000)",
                                   optarg);
        break;
    case CTL_OPT_PROCS:
        if (ctl_parse_long(optarg, 1, 1000, &o->bench_procs) < 0)
            return ctl_usage_error("invalid --procs '%s' (1 to 1000)",
                                   optarg);
        break;
    case CTL_OPT_REPS:
        if (ctl_parse_long(optarg, 1, 99, &o->bench_reps) < 0)
            return ctl_usage_error("invalid --reps '%s' (1 to 99)", optarg);
        break;
    case CTL_OPT_BASELINE:
        o->bench_baseline = true;
        break;
    case CTL_OPT_NO_BATCH:
        o->bench_no_batch = true;
        break;
    }
    return CTL_PARSE_GO_ON;
}

/* Store option c's value in o.  Returns CTL_PARSE_GO_ON, or an exit code
 * to stop with (--help, --version, an invalid value or option); label
 * names the option in messages. */
static int ctl_take_value(int c, ctl_opts_t *o, const char *label)
{
    long snap;

    switch (c) {
    case CTL_OPT_GROUP:
    case CTL_OPT_POLICY:
    case CTL_OPT_COUNT:
    case CTL_OPT_RAW:
    case CTL_OPT_TIMESTAMPS:
    case CTL_OPT_RECONNECT:
    case CTL_OPT_EXEC:
    case CTL_OPT_QUEUE:
    case CTL_OPT_REPLACE:
    case CTL_OPT_ALLOW_REPLACEMENT:
        return ctl_take_pubsub(c, o);
    case CTL_OPT_SIZE:
    case CTL_OPT_SUBS:
    case CTL_OPT_CLIENTS:
    case CTL_OPT_PROCS:
    case CTL_OPT_REPS:
    case CTL_OPT_BASELINE:
    case CTL_OPT_NO_BATCH:
        return ctl_take_bench(c, o);
    case 's':
        o->socket = optarg;
        break;
    case CTL_OPT_TIMEOUT:
        if (ctl_parse_int(optarg, -1, INT_MAX, &o->timeout_ms) < 0)
            return ctl_usage_error("invalid --timeout '%s' (milliseconds, "
                                   "or -1 for none)", optarg);
        break;
    case CTL_OPT_JSON:
        if (ctl_parse_json(optarg, &o->json) < 0)
            return ctl_usage_error("invalid --json mode '%s' (short or "
                                   "pretty)", optarg);
        break;
    case CTL_OPT_NO_LEGEND:
        o->no_legend = true;
        break;
    case CTL_OPT_SORT:
        o->sort = optarg;
        break;
    case CTL_OPT_TOP:
        if (ctl_parse_long(optarg, 0, LONG_MAX, &o->top) < 0)
            return ctl_usage_error("invalid --top '%s' (a count >= 0, 0: "
                                   "no limit)", optarg);
        if (o->top == 0)
            o->top = -1;    /* as --iterations 0: no limit */
        break;
    case CTL_OPT_ECHO:
        o->echo = true;
        break;
    case CTL_OPT_INTERVAL:
        if (ctl_parse_int(optarg, 1, INT_MAX, &o->interval_ms) < 0)
            return ctl_usage_error("invalid --interval '%s' (milliseconds "
                                   ">= 1)", optarg);
        break;
    case CTL_OPT_ITERATIONS:
        if (ctl_parse_long(optarg, 0, LONG_MAX, &o->iterations) < 0)
            return ctl_usage_error("invalid --iterations '%s' (a count >= "
                                   "0, 0: no limit)", optarg);
        break;
    case CTL_OPT_SNAP:
        if (ctl_parse_long(optarg, 1, 4096, &snap) < 0)
            return ctl_usage_error("invalid --snap '%s' (bytes, 1 to 4096)",
                                   optarg);
        o->snap = (uint32_t)snap;
        break;
    case CTL_OPT_VERSION:
        printf("brokerctl %s\n", CTL_VERSION);
        return CTL_EXIT_OK;
    case 'h':
        ctl_help();
        return CTL_EXIT_OK;
    case ':':
        return ctl_usage_error("option '%s' needs an argument", label);
    default:
        return ctl_usage_error("unknown option '%s'", label);
    }
    return CTL_PARSE_GO_ON;
}

/* Handle one option of either pass.  cmd is NULL for the options before
 * the command.  Returns CTL_PARSE_GO_ON, or an exit code to stop with. */
static int ctl_take_opt(int c, ctl_opts_t *o, const ctl_cmd_t *cmd,
                        const char *label)
{
    unsigned need = ctl_opt_scope(c, !cmd);
    int r;

    if (c == 'h' && cmd) {
        ctl_help_cmd(cmd);
        return CTL_EXIT_OK;
    }
    if ((r = ctl_take_value(c, o, label)) != CTL_PARSE_GO_ON || need == 0)
        return r;
    /* --echo, --sort, --top ... belong to their command. */
    if (!cmd)
        return ctl_usage_error("option '%s' must follow its command", label);
    if (!(cmd->accepts & need))
        return ctl_usage_error("option '%s' is not valid for '%s'", label,
                               cmd->name);
    return CTL_PARSE_GO_ON;
}

/* getopt_long once; *label names what it returned, for messages. */
static int ctl_getopt(int argc, char **argv, const char *shorts,
                      const char **label)
{
    int longidx = -1;
    int c = getopt_long(argc, argv, shorts, ctl_long_opts, &longidx);

    *label = c == -1 || c == 1 ? NULL : ctl_opt_label(c, longidx, argv);
    return c;
}

/* Pass 2: the command's own arguments, options in any position; the
 * positional ones are gathered at sub_argv[1...] in order. */
static int ctl_parse_args(int sub_argc, char **sub_argv, ctl_opts_t *o,
                          const ctl_cmd_t *cmd)
{
    const char *label;
    int c, r;

    optind = 0;     /* GNU getopt: restart scanning on a new vector */
    while ((c = ctl_getopt(sub_argc, sub_argv, "-:s:h", &label)) != -1) {
        if (c == 1) {           /* a positional argument, in order */
            sub_argv[1 + o->nargs++] = optarg;
            continue;
        }
        if ((r = ctl_take_opt(c, o, cmd, label)) != CTL_PARSE_GO_ON)
            return r;
    }
    /* Arguments after "--" are positional too. */
    while (optind < sub_argc)
        sub_argv[1 + o->nargs++] = sub_argv[optind++];
    o->args = sub_argv + 1;
    if (o->nargs < cmd->min_args)
        return ctl_usage_error("'%s' needs %s", cmd->name,
                               cmd->needs ? cmd->needs : "arguments");
    if (o->nargs > cmd->max_args)
        return ctl_usage_error("too many arguments for '%s'", cmd->name);
    return CTL_PARSE_GO_ON;
}

/* Fill o and *cmdp from argv.  Returns CTL_PARSE_GO_ON when the command
 * is to run, else the exit code to stop with. */
static int ctl_parse(int argc, char **argv, ctl_opts_t *o,
                     const ctl_cmd_t **cmdp)
{
    const char *label;
    int c, r;

    opterr = 0;
    /* Pass 1: options before the command ('+' stops at the command). */
    while ((c = ctl_getopt(argc, argv, "+:s:h", &label)) != -1)
        if ((r = ctl_take_opt(c, o, NULL, label)) != CTL_PARSE_GO_ON)
            return r;
    if (optind >= argc)
        return ctl_usage_error("no command given");
    o->cmd = argv[optind];
    if (!(*cmdp = ctl_find_cmd(o->cmd)))
        return ctl_usage_error("unknown command '%s'", o->cmd);
    return ctl_parse_args(argc - optind, argv + optind, o, *cmdp);
}

static int ctl_run_help(const ctl_opts_t *o)
{
    const ctl_cmd_t *c;

    if (o->nargs == 0) {
        ctl_help();
        return CTL_EXIT_OK;
    }
    if (!(c = ctl_find_cmd(o->args[0])))
        return ctl_usage_error("unknown command '%s'", o->args[0]);
    ctl_help_cmd(c);
    return CTL_EXIT_OK;
}

int main(int argc, char **argv)
{
    ctl_opts_t o = { .timeout_ms = CTL_DEF_TIMEOUT_MS, .top = -1,
                     .interval_ms = CTL_TOP_DEF_INTERVAL_MS };
    const ctl_cmd_t *cmd = NULL;
    int r = ctl_parse(argc, argv, &o, &cmd);

    if (r != CTL_PARSE_GO_ON)
        return r;
    return cmd->run(&o);
}
