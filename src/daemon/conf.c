/*
 * conf.c - brokerd's settings: defaults, the command line, the
 * configuration file (`key = value` lines, `#` comments and blank lines;
 * keys are the long options without dashes plus the allow-* access rules
 * of policy.c), and reloading it.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "conf.h"
#include "kvfile.h"
#include "size.h"
#include "error.h"
#include "log.h"
#include "proto.h"
#include "sockio.h"

void bk_conf_defaults(bk_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->log_level = BK_LOG_INFO;
    c->max_packet = BK_DEF_MAX_PACKET;
    c->max_fds = BK_DEF_MAX_FDS;
    c->max_name = BK_MAX_NAME;
    c->max_streams = BK_DEF_MAX_STREAMS;
    c->max_names = 256;
    c->max_subs = BK_DEF_MAX_SUBS;
    c->max_clients = 4096;
    c->max_clients_per_uid = 0;
    c->max_msg = BK_DEF_MAX_MSG;
    c->queue_limit = BK_DEF_QUEUE_LIMIT;
    c->max_segments = BK_DEF_MAX_SEGMENTS;
    c->max_shm = BK_DEF_MAX_SHM;
    c->shutdown_grace_ms = 2000;
    c->handshake_timeout_ms = BK_DEF_HANDSHAKE_TIMEOUT_MS;
    c->reap_interval_ms = BK_DEF_REAP_INTERVAL_MS;
    c->socket_mode = 0600;
    c->fd_reserve = BK_DEF_FD_RESERVE;
    c->max_fds_per_client = BK_DEF_MAX_FDS_PER_CLIENT;
    c->max_fds_per_uid = BK_DEF_MAX_FDS_PER_UID;
    c->max_held_per_client = BK_DEF_MAX_HELD_PER_CLIENT;
    c->max_held_per_uid = BK_DEF_MAX_HELD_PER_UID;
    c->max_segments_per_uid = BK_DEF_MAX_SEGS_PER_UID;
    c->max_streams_per_peer = BK_DEF_MAX_STREAMS_PER_PEER;
    c->max_streams_per_uid_peer = BK_DEF_MAX_STREAMS_PER_UID_PEER;
    c->max_streams_per_uid = BK_DEF_MAX_STREAMS_PER_UID;
    c->max_names_per_uid = BK_DEF_MAX_NAMES_PER_UID;
    c->max_subs_per_uid = BK_DEF_MAX_SUBS_PER_UID;
    c->max_refusals = BK_DEF_MAX_REFUSALS;
    c->max_queued = BK_DEF_MAX_QUEUED;
    c->max_queued_per_uid = BK_DEF_MAX_QUEUED_PER_UID;
    bk_policy_init(&c->policy);
}

void bk_conf_free(bk_conf_t *c)
{
    free(c->pidfile);
    c->pidfile = NULL;
    free(c->logfile);
    c->logfile = NULL;
    free(c->confpath);
    c->confpath = NULL;
    bk_policy_free(&c->policy);
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: brokerd [OPTION]...\n"
"Local message broker: routes framed messages, streams and file\n"
"descriptors between processes over a Unix-domain socket.\n"
"\n"
"  -s, --socket PATH       listen on PATH (default: $BROKER_SOCKET,\n"
"                          $XDG_RUNTIME_DIR/brokerd.sock, /run/brokerd.sock\n"
"                          for root, else /tmp/brokerd-$UID/brokerd.sock)\n"
"  -c, --config FILE       read settings from FILE (key = value lines);\n"
"                          options given here override it\n"
"  -f, --foreground        stay in the foreground and log to stderr\n"
"      --log-level LEVEL   error, warn, info (default) or debug\n"
"      --pidfile FILE      write the daemon's pid to FILE\n"
"      --log-file FILE     log to FILE (appending; reopened on SIGHUP)\n"
"                          instead of stderr (-f) or syslog\n"
"      --queue-limit SIZE  bytes queued towards one client before its\n"
"                          senders are paused (default 4M)\n"
"      --max-packet SIZE   largest packet, headers included (default 64K)\n"
"      --max-msg SIZE      largest message (default 4G)\n"
"      --max-fds N         fds per message, at most 253 (default 64)\n"
"      --max-streams N     open streams per client (default 4096)\n"
"      --max-names N       names per client (default 256)\n"
"      --max-subscriptions N\n"
"                          subscriptions per client (default 1024)\n"
"      --max-clients N     connected clients (default 4096)\n"
"      --max-clients-per-uid N\n"
"                          connected clients of one user, 0 for no limit;\n"
"                          root and brokerd's user are exempt (default 0)\n"
"      --handshake-timeout MS\n"
"                          close a connection that sent no HELLO within MS\n"
"                          milliseconds (default 5000)\n"
"      --reap-interval MS  look for dead clients kept open only by fds in\n"
"                          flight every MS milliseconds, 0 for never\n"
"                          (default 5000)\n"
"      --max-segments N    shared-memory segments per client (default 64)\n"
"      --max-shm SIZE      bytes of shared memory per client (default 2G)\n"
"  Budgets (0: no limit; for the two global ones 0 derives them from\n"
"  RLIMIT_NOFILE less the reserve: a half and a quarter of it):\n"
"      --fd-reserve N      fds kept free below RLIMIT_NOFILE (default 256)\n"
"      --max-fds-in-flight N  fds queued towards all clients (default 0)\n"
"      --max-fds-per-client N fds queued towards one client (default 1024)\n"
"      --max-fds-per-uid N    fds queued because of one user's sends\n"
"                             (default 4096)\n"
"      --max-held-per-client N shared-memory references one client holds\n"
"                             (default 16384)\n"
"      --max-held-per-uid N   ... one user's clients hold (default 65536)\n"
"      --max-segments-per-uid N  segments of one user (default 1024)\n"
"      --max-segments-total N    segments of all clients (default 0)\n"
"      --max-streams-per-peer N  streams one client holds open towards\n"
"                             one client (default 1024; root too)\n"
"      --max-streams-per-uid-peer N  ... one user's clients (default 2048)\n"
"      --max-streams-per-uid N   open streams of one user (default 16384)\n"
"      --max-names-per-uid N     names of one user (default 4096)\n"
"      --max-subscriptions-per-uid N  (default 16384)\n"
"      --max-queued SIZE   memory of all queued frames; past it senders are\n"
"                          paused (default 1G)\n"
"      --max-queued-per-uid SIZE  ... of the frames queued towards one\n"
"                          user's clients, and of those its sends queued\n"
"                          (default 256M)\n"
"      --max-refusals N    refusals (quota, budget, access) per client and\n"
"                          minute before it is disconnected (default 10000)\n"
"  Root and brokerd's own user are exempt from the -per-uid budgets.\n"
"      --socket-mode MODE  permissions of the socket file (default 0600)\n"
"      --socket-group GROUP  group of the socket file (name or gid)\n"
"      --version           print the version and exit\n"
"  -h, --help              print this help and exit\n");
}

static int bad(char *err, size_t errlen, const char *opt, const char *val,
               const char *why)
{
    snprintf(err, errlen, "invalid value '%s' for %s: %s", val, opt, why);
    return -EINVAL;
}

static int parse_u32(char *err, size_t errlen, const char *opt,
                     const char *val, uint64_t min, uint64_t max,
                     uint32_t *out)
{
    uint64_t v;

    if (bk_size_parse(val, &v) < 0)
        return bad(err, errlen, opt, val, "not a number");
    if (v < min || v > max) {
        char why[64];
        snprintf(why, sizeof(why), "must be between %llu and %llu",
                 (unsigned long long)min, (unsigned long long)max);
        return bad(err, errlen, opt, val, why);
    }
    *out = (uint32_t)v;
    return 0;
}

/* 0 (never), or 10 ms to an hour. */
static int parse_reap_interval(char *err, size_t errlen, const char *opt,
                               const char *val, uint32_t *out)
{
    uint64_t v;

    if (bk_size_parse(val, &v) < 0 || (v && (v < 10 || v > 3600000)))
        return bad(err, errlen, opt, val, "milliseconds between 10 and "
                   "3600000, or 0 for never");
    *out = (uint32_t)v;
    return 0;
}

static int parse_mode(const char *val, unsigned *out)
{
    char *end;
    unsigned long v;

    if (*val < '0' || *val > '7')
        return -EINVAL;
    errno = 0;
    v = strtoul(val, &end, 8);
    if (errno || *end || v > 07777)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

static int parse_group(const char *val, gid_t *out)
{
    struct group *gr;
    char *end;
    unsigned long v;

    if (*val >= '0' && *val <= '9') {
        errno = 0;
        v = strtoul(val, &end, 10);
        if (errno || *end || v >= (unsigned long)(gid_t)-1)
            return -EINVAL;
        *out = (gid_t)v;
        return 0;
    }
    gr = *val ? getgrnam(val) : NULL;
    if (!gr)
        return -EINVAL;
    *out = gr->gr_gid;
    return 0;
}

enum {
    OPT_LOG_LEVEL = 256, OPT_PIDFILE, OPT_QUEUE_LIMIT, OPT_MAX_PACKET,
    OPT_MAX_MSG, OPT_MAX_FDS, OPT_MAX_STREAMS, OPT_MAX_NAMES, OPT_MAX_SUBS,
    OPT_MAX_CLIENTS, OPT_MAX_SEGMENTS, OPT_MAX_SHM, OPT_VERSION,
    OPT_SOCKET_MODE, OPT_SOCKET_GROUP, OPT_LOG_FILE, OPT_MAX_CLIENTS_UID,
    OPT_HANDSHAKE_TIMEOUT, OPT_MAX_QUEUED, OPT_MAX_QUEUED_UID,
    OPT_REAP_INTERVAL,
    OPT_BUDGET_,                /* budget i (budgets[] below) is
                                 * OPT_BUDGET_ + i */
};

/* The budgets, all u32 counts set alike, in the order of their OPT_BUDGET_
 * values in opts[]. */
static const size_t budgets[] = {
    offsetof(bk_conf_t, fd_reserve),
    offsetof(bk_conf_t, max_fds_in_flight),
    offsetof(bk_conf_t, max_fds_per_client),
    offsetof(bk_conf_t, max_fds_per_uid),
    offsetof(bk_conf_t, max_held_per_client),
    offsetof(bk_conf_t, max_held_per_uid),
    offsetof(bk_conf_t, max_segments_per_uid),
    offsetof(bk_conf_t, max_segments_total),
    offsetof(bk_conf_t, max_streams_per_peer),
    offsetof(bk_conf_t, max_streams_per_uid),
    offsetof(bk_conf_t, max_names_per_uid),
    offsetof(bk_conf_t, max_subs_per_uid),
    offsetof(bk_conf_t, max_streams_per_uid_peer),
    offsetof(bk_conf_t, max_refusals),
};
#define NBUDGETS (sizeof(budgets) / sizeof(budgets[0]))

static uint32_t *budget_field(bk_conf_t *c, size_t i)
{
    return (uint32_t *)((char *)c + budgets[i]);
}

static const struct option opts[] = {
    { "socket", required_argument, NULL, 's' },
    { "foreground", no_argument, NULL, 'f' },
    { "config", required_argument, NULL, 'c' },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "pidfile", required_argument, NULL, OPT_PIDFILE },
    { "log-file", required_argument, NULL, OPT_LOG_FILE },
    { "queue-limit", required_argument, NULL, OPT_QUEUE_LIMIT },
    { "max-packet", required_argument, NULL, OPT_MAX_PACKET },
    { "max-msg", required_argument, NULL, OPT_MAX_MSG },
    { "max-fds", required_argument, NULL, OPT_MAX_FDS },
    { "max-streams", required_argument, NULL, OPT_MAX_STREAMS },
    { "max-names", required_argument, NULL, OPT_MAX_NAMES },
    { "max-subscriptions", required_argument, NULL, OPT_MAX_SUBS },
    { "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
    { "max-clients-per-uid", required_argument, NULL, OPT_MAX_CLIENTS_UID },
    { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
    { "reap-interval", required_argument, NULL, OPT_REAP_INTERVAL },
    { "max-segments", required_argument, NULL, OPT_MAX_SEGMENTS },
    { "max-shm", required_argument, NULL, OPT_MAX_SHM },
    { "fd-reserve", required_argument, NULL, OPT_BUDGET_ + 0 },
    { "max-fds-in-flight", required_argument, NULL, OPT_BUDGET_ + 1 },
    { "max-fds-per-client", required_argument, NULL, OPT_BUDGET_ + 2 },
    { "max-fds-per-uid", required_argument, NULL, OPT_BUDGET_ + 3 },
    { "max-held-per-client", required_argument, NULL, OPT_BUDGET_ + 4 },
    { "max-held-per-uid", required_argument, NULL, OPT_BUDGET_ + 5 },
    { "max-segments-per-uid", required_argument, NULL, OPT_BUDGET_ + 6 },
    { "max-segments-total", required_argument, NULL, OPT_BUDGET_ + 7 },
    { "max-streams-per-peer", required_argument, NULL, OPT_BUDGET_ + 8 },
    { "max-streams-per-uid", required_argument, NULL, OPT_BUDGET_ + 9 },
    { "max-names-per-uid", required_argument, NULL, OPT_BUDGET_ + 10 },
    { "max-subscriptions-per-uid", required_argument, NULL,
      OPT_BUDGET_ + 11 },
    { "max-streams-per-uid-peer", required_argument, NULL,
      OPT_BUDGET_ + 12 },
    { "max-refusals", required_argument, NULL, OPT_BUDGET_ + 13 },
    { "max-queued", required_argument, NULL, OPT_MAX_QUEUED },
    { "max-queued-per-uid", required_argument, NULL, OPT_MAX_QUEUED_UID },
    { "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
    { "socket-group", required_argument, NULL, OPT_SOCKET_GROUP },
    { "version", no_argument, NULL, OPT_VERSION },
    { "help", no_argument, NULL, 'h' },
    { 0 }
};

/* Set option `opt` from `arg`; `name` is how messages call it. */
static int apply(bk_conf_t *c, int opt, const char *arg, const char *name,
                 char *err, size_t el)
{
    int lvl;

    switch (opt) {
    case 's':
        if (strlen(arg) >= sizeof(c->socket_path) || !*arg)
            return bad(err, el, name, arg, "path empty or too long");
        strcpy(c->socket_path, arg);
        return 0;
    case OPT_LOG_LEVEL:
        if ((lvl = bk_log_parse_level(arg)) < 0)
            return bad(err, el, name, arg, "use error, warn, info or debug");
        c->log_level = lvl;
        return 0;
    case OPT_PIDFILE: {
        char *copy = *arg ? strdup(arg) : NULL;
        if (!copy)
            return bad(err, el, name, arg, "empty or out of memory");
        free(c->pidfile);
        c->pidfile = copy;
        return 0;
    }
    case OPT_LOG_FILE: {
        /* absolute, since the daemon leaves its working directory */
        char cwd[2048], *copy = NULL;
        if (!*arg)
            return bad(err, el, name, arg, "an empty path");
        if (*arg == '/')
            copy = strdup(arg);
        else if (getcwd(cwd, sizeof(cwd)) &&
                 asprintf(&copy, "%s/%s", cwd, arg) < 0)
            copy = NULL;
        if (!copy)
            return bad(err, el, name, arg, "path too long or out of memory");
        free(c->logfile);
        c->logfile = copy;
        return 0;
    }
    case OPT_QUEUE_LIMIT:
        if (bk_size_parse(arg, &c->queue_limit) < 0 ||
            c->queue_limit < 4096)
            return bad(err, el, name, arg, "a size of at least 4K");
        return 0;
    case OPT_MAX_QUEUED:
    case OPT_MAX_QUEUED_UID: {
        uint64_t v;
        if (bk_size_parse(arg, &v) < 0 || (v && v < 4096))
            return bad(err, el, name, arg, "a size of at least 4K, or 0 "
                       "for no limit");
        *(opt == OPT_MAX_QUEUED ? &c->max_queued : &c->max_queued_per_uid) =
            v;
        return 0;
    }
    case OPT_MAX_MSG:
        if (bk_size_parse(arg, &c->max_msg) < 0 || c->max_msg == 0)
            return bad(err, el, name, arg, "a size of at least 1");
        return 0;
    case OPT_MAX_PACKET:
        return parse_u32(err, el, name, arg, BK_MIN_MAX_PACKET,
                         BK_MAX_MAX_PACKET, &c->max_packet);
    case OPT_MAX_FDS:
        return parse_u32(err, el, name, arg, 0, BK_MAX_FDS_HARD,
                         &c->max_fds);
    case OPT_MAX_STREAMS:
        return parse_u32(err, el, name, arg, 1, 1u << 20, &c->max_streams);
    case OPT_MAX_NAMES:
        return parse_u32(err, el, name, arg, 1, 1u << 16, &c->max_names);
    case OPT_MAX_SUBS:
        return parse_u32(err, el, name, arg, 1, 1u << 20, &c->max_subs);
    case OPT_MAX_CLIENTS:
        return parse_u32(err, el, name, arg, 1, 1u << 20, &c->max_clients);
    case OPT_MAX_CLIENTS_UID:
        return parse_u32(err, el, name, arg, 0, 1u << 20,
                         &c->max_clients_per_uid);
    case OPT_HANDSHAKE_TIMEOUT:
        return parse_u32(err, el, name, arg, 10, 3600000,
                         &c->handshake_timeout_ms);
    case OPT_REAP_INTERVAL:
        return parse_reap_interval(err, el, name, arg,
                                   &c->reap_interval_ms);
    case OPT_MAX_SEGMENTS:
        return parse_u32(err, el, name, arg, 0, 1u << 16, &c->max_segments);
    case OPT_MAX_SHM:
        if (bk_size_parse(arg, &c->max_shm) < 0)
            return bad(err, el, name, arg, "not a size");
        return 0;
    case OPT_SOCKET_MODE:
        if (parse_mode(arg, &c->socket_mode) < 0)
            return bad(err, el, name, arg, "an octal mode such as 0660");
        return 0;
    case OPT_SOCKET_GROUP:
        if (parse_group(arg, &c->socket_group) < 0)
            return bad(err, el, name, arg, "not a group name or gid");
        c->socket_group_set = true;
        return 0;
    }
    if (opt >= OPT_BUDGET_ && (size_t)(opt - OPT_BUDGET_) < NBUDGETS)
        return parse_u32(err, el, name, arg, 0, 1u << 30,
                         budget_field(c, (size_t)(opt - OPT_BUDGET_)));
    snprintf(err, el, "%s cannot be set here", name);
    return -EINVAL;
}

int bk_conf_set(bk_conf_t *c, const char *key, const char *value,
                  bool *scalar, char *err, size_t errlen)
{
    int opt = 0;

    *scalar = false;
    if (!strcmp(key, "allow-connect"))
        return bk_policy_add_connect(&c->policy, value, err, errlen);
    if (!strcmp(key, "allow-own"))
        return bk_policy_add_own(&c->policy, value, err, errlen);
    if (!strcmp(key, "allow-send"))
        return bk_policy_add_send(&c->policy, value, err, errlen);
    if (!strcmp(key, "allow-publish"))
        return bk_policy_add_publish(&c->policy, value, err, errlen);
    if (!strcmp(key, "allow-subscribe"))
        return bk_policy_add_subscribe(&c->policy, value, err, errlen);
    for (const struct option *o = opts; o->name; o++)
        if (o->has_arg == required_argument && !strcmp(o->name, key) &&
            o->val != 'c')
            opt = o->val;
    if (!opt) {
        snprintf(err, errlen, "unknown key '%s'", key);
        return -ENOENT;
    }
    *scalar = true;
    return apply(c, opt, value, key, err, errlen);
}

static const char *opt_name(int opt, char *buf, size_t len)
{
    for (const struct option *o = opts; o->name; o++)
        if (o->val == opt) {
            snprintf(buf, len, "--%s", o->name);
            return buf;
        }
    return "option";
}

int bk_conf_parse_args(bk_conf_t *c, int argc, char **argv)
{
    char err[256], name[32];
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":s:c:fh", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            usage(stdout);
            return BK_CONF_HANDLED;
        case OPT_VERSION:
            printf("brokerd %s (protocol %u)\n", BROKER_VERSION,
                   BK_PROTO_VERSION);
            return BK_CONF_HANDLED;
        case ':':
            fprintf(stderr, "brokerd: option '%s' needs a value "
                    "(see brokerd --help)\n", argv[optind - 1]);
            return -EINVAL;
        case '?':
            fprintf(stderr, "brokerd: unknown option '%s' "
                    "(see brokerd --help)\n", argv[optind - 1]);
            return -EINVAL;
        case 'f':
            c->foreground = true;
            break;
        case 'c':
            c->conffile = optarg;
            break;
        default:
            if (apply(c, opt, optarg, opt_name(opt, name, sizeof(name)),
                      err, sizeof(err)) < 0) {
                fprintf(stderr, "brokerd: %s\n", err);
                return -EINVAL;
            }
            c->socket_cli |= opt == 's';
        }
    }
    if (optind < argc) {
        fprintf(stderr, "brokerd: unexpected argument '%s' "
                "(see brokerd --help)\n", argv[optind]);
        return -EINVAL;
    }
    if (c->queue_limit < c->max_packet)
        c->queue_limit = c->max_packet;
    if (!c->socket_path[0] &&
        bk_sock_path(NULL, c->socket_path, sizeof(c->socket_path)) < 0) {
        fprintf(stderr, "brokerd: the default socket path is too long; "
                "use --socket\n");
        return -EINVAL;
    }
    return 0;
}

int bk_conf_load(bk_conf_t *c, int argc, char **argv)
{
    char err[PATH_MAX + 256], *abs;
    int r;

    bk_conf_defaults(c);
    c->argc = argc;
    c->argv = argv;
    r = bk_conf_parse_args(c, argc, argv);
    if (r != 0 || !c->conffile)
        return r;
    abs = realpath(c->conffile, NULL);
    if (!abs) {
        fprintf(stderr, "brokerd: %s: %s\n", c->conffile, bk_sys_strerror(errno));
        return -EINVAL;
    }
    bk_conf_free(c);
    bk_conf_defaults(c);
    c->argc = argc;
    c->argv = argv;
    c->confpath = abs;
    if (bk_conf_read_file(c, abs, err, sizeof(err)) < 0) {
        fprintf(stderr, "brokerd: %s\n", err);
        return -EINVAL;
    }
    return bk_conf_parse_args(c, argc, argv);
}

/* Settings fixed at startup: warn when the file now says otherwise. */
static void restart_warnings(const bk_conf_t *live, const bk_conf_t *n)
{
    const char *what[6];
    int k = 0;

    if (!live->socket_cli && strcmp(live->socket_path, n->socket_path))
        what[k++] = "socket";
    if (live->socket_mode != n->socket_mode)
        what[k++] = "socket-mode";
    if (live->socket_group_set != n->socket_group_set ||
        live->socket_group != n->socket_group)
        what[k++] = "socket-group";
    if (live->max_packet != n->max_packet)
        what[k++] = "max-packet";
    if (live->max_fds != n->max_fds)
        what[k++] = "max-fds";
    if (live->max_msg != n->max_msg)
        what[k++] = "max-msg";
    for (int i = 0; i < k; i++)
        bk_warn("reload: %s changed; it takes effect only after a restart",
                what[i]);
}

int bk_conf_reload(bk_conf_t *live, char *err, size_t errlen)
{
    bk_conf_t n;

    if (!live->confpath) {
        snprintf(err, errlen, "brokerd was started without a "
                 "configuration file (-c)");
        return -EINVAL;
    }
    bk_conf_defaults(&n);
    if (bk_conf_read_file(&n, live->confpath, err, errlen) < 0 ||
        bk_conf_parse_args(&n, live->argc, live->argv) != 0) {
        bk_conf_free(&n);
        return -EINVAL;
    }
    restart_warnings(live, &n);
    live->log_level = n.log_level;
    live->queue_limit = n.queue_limit < live->max_packet ?
                        live->max_packet : n.queue_limit;
    live->max_streams = n.max_streams;
    live->max_names = n.max_names;
    live->max_subs = n.max_subs;
    live->max_clients = n.max_clients;
    live->max_clients_per_uid = n.max_clients_per_uid;
    live->handshake_timeout_ms = n.handshake_timeout_ms;
    live->reap_interval_ms = n.reap_interval_ms;
    live->max_segments = n.max_segments;
    live->max_shm = n.max_shm;
    live->max_queued = n.max_queued;
    live->max_queued_per_uid = n.max_queued_per_uid;
    for (size_t i = 0; i < NBUDGETS; i++)
        *budget_field(live, i) = *budget_field(&n, i);
    free(live->logfile);
    live->logfile = n.logfile;
    n.logfile = NULL;
    bk_policy_free(&live->policy);
    live->policy = n.policy;
    bk_policy_init(&n.policy);
    bk_conf_free(&n);
    return 0;
}

/* ---- the configuration file --------------------------------------------- */

/* A directory opens for reading; getline would only fail on it. */
static bool conf_is_dir(FILE *f)
{
    struct stat st;

    return fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
}

/* bk_kv_read's setter: one option of the file. */
static int conf_kv_set(void *arg, const char *key, const char *value,
                       bool *once, char *why, size_t whylen)
{
    return bk_conf_set(arg, key, value, once, why, whylen);
}

int bk_conf_read_stream(bk_conf_t *c, FILE *f, const char *name,
                        char *err, size_t errlen)
{
    return bk_kv_read(f, name, conf_kv_set, c, err, errlen);
}

int bk_conf_read_file(bk_conf_t *c, const char *path, char *err,
                        size_t errlen)
{
    FILE *f = fopen(path, "re");
    int r;

    if (!f) {
        snprintf(err, errlen, "%s: %s", path, bk_sys_strerror(errno));
        return -EINVAL;
    }
    if (conf_is_dir(f)) {       /* it opens, and reads as nothing */
        snprintf(err, errlen, "%s: is a directory", path);
        fclose(f);
        return -EINVAL;
    }
    r = bk_conf_read_stream(c, f, path, err, errlen);
    fclose(f);
    return r;
}
