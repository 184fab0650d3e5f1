/*
 * config.c - brokerd's settings and command line.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "log.h"
#include "proto.h"
#include "sockio.h"

void bk_config_defaults(bk_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->log_level = BK_LOG_INFO;
    c->max_packet = BK_DEF_MAX_PACKET;
    c->max_fds = BK_DEF_MAX_FDS;
    c->max_name = BK_MAX_NAME;
    c->max_streams = BK_DEF_MAX_STREAMS;
    c->max_names = 256;
    c->max_clients = 4096;
    c->max_msg = BK_DEF_MAX_MSG;
    c->queue_limit = BK_DEF_QUEUE_LIMIT;
    c->max_segments = BK_DEF_MAX_SEGMENTS;
    c->max_shm = BK_DEF_MAX_SHM;
    c->shutdown_grace_ms = 2000;
}

int bk_config_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (!*s || *s == '-')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end == 'i' && shift)
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
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
"  -f, --foreground        stay in the foreground and log to stderr\n"
"      --log-level LEVEL   error, warn, info (default) or debug\n"
"      --pidfile FILE      write the daemon's pid to FILE\n"
"      --queue-limit SIZE  bytes queued towards one client before its\n"
"                          senders are paused (default 4M)\n"
"      --max-packet SIZE   largest packet, headers included (default 64K)\n"
"      --max-msg SIZE      largest message (default 4G)\n"
"      --max-fds N         fds per message, at most 253 (default 64)\n"
"      --max-streams N     open streams per client (default 4096)\n"
"      --max-names N       names per client (default 256)\n"
"      --max-clients N     connected clients (default 4096)\n"
"      --max-segments N    shared-memory segments per client (default 64)\n"
"      --max-shm SIZE      bytes of shared memory per client (default 2G)\n"
"      --version           print the version and exit\n"
"  -h, --help              print this help and exit\n");
}

static int bad(const char *opt, const char *val, const char *why)
{
    fprintf(stderr, "brokerd: invalid value '%s' for %s: %s\n", val, opt,
            why);
    return -EINVAL;
}

static int parse_u32(const char *opt, const char *val, uint64_t min,
                     uint64_t max, uint32_t *out)
{
    uint64_t v;

    if (bk_config_parse_size(val, &v) < 0)
        return bad(opt, val, "not a number");
    if (v < min || v > max) {
        char why[64];
        snprintf(why, sizeof(why), "must be between %llu and %llu",
                 (unsigned long long)min, (unsigned long long)max);
        return bad(opt, val, why);
    }
    *out = (uint32_t)v;
    return 0;
}

enum {
    OPT_LOG_LEVEL = 256, OPT_PIDFILE, OPT_QUEUE_LIMIT, OPT_MAX_PACKET,
    OPT_MAX_MSG, OPT_MAX_FDS, OPT_MAX_STREAMS, OPT_MAX_NAMES,
    OPT_MAX_CLIENTS, OPT_MAX_SEGMENTS, OPT_MAX_SHM, OPT_VERSION,
};

static int apply(bk_config_t *c, int opt, const char *arg)
{
    int lvl;

    switch (opt) {
    case 's':
        if (strlen(arg) >= sizeof(c->socket_path) || !*arg)
            return bad("--socket", arg, "path empty or too long");
        strcpy(c->socket_path, arg);
        return 0;
    case 'f':
        c->foreground = true;
        return 0;
    case OPT_LOG_LEVEL:
        if ((lvl = bk_log_parse_level(arg)) < 0)
            return bad("--log-level", arg, "use error, warn, info or debug");
        c->log_level = lvl;
        return 0;
    case OPT_PIDFILE:
        c->pidfile = arg;
        return 0;
    case OPT_QUEUE_LIMIT:
        if (bk_config_parse_size(arg, &c->queue_limit) < 0 ||
            c->queue_limit < 4096)
            return bad("--queue-limit", arg, "a size of at least 4K");
        return 0;
    case OPT_MAX_MSG:
        if (bk_config_parse_size(arg, &c->max_msg) < 0 || c->max_msg == 0)
            return bad("--max-msg", arg, "a size of at least 1");
        return 0;
    case OPT_MAX_PACKET:
        return parse_u32("--max-packet", arg, BK_MIN_MAX_PACKET,
                         BK_MAX_MAX_PACKET, &c->max_packet);
    case OPT_MAX_FDS:
        return parse_u32("--max-fds", arg, 0, BK_MAX_FDS_HARD, &c->max_fds);
    case OPT_MAX_STREAMS:
        return parse_u32("--max-streams", arg, 1, 1u << 20, &c->max_streams);
    case OPT_MAX_NAMES:
        return parse_u32("--max-names", arg, 1, 1u << 16, &c->max_names);
    case OPT_MAX_CLIENTS:
        return parse_u32("--max-clients", arg, 1, 1u << 20, &c->max_clients);
    case OPT_MAX_SEGMENTS:
        return parse_u32("--max-segments", arg, 0, 1u << 16,
                         &c->max_segments);
    case OPT_MAX_SHM:
        if (bk_config_parse_size(arg, &c->max_shm) < 0)
            return bad("--max-shm", arg, "not a size");
        return 0;
    }
    return -EINVAL;
}

int bk_config_parse_args(bk_config_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "foreground", no_argument, NULL, 'f' },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "pidfile", required_argument, NULL, OPT_PIDFILE },
        { "queue-limit", required_argument, NULL, OPT_QUEUE_LIMIT },
        { "max-packet", required_argument, NULL, OPT_MAX_PACKET },
        { "max-msg", required_argument, NULL, OPT_MAX_MSG },
        { "max-fds", required_argument, NULL, OPT_MAX_FDS },
        { "max-streams", required_argument, NULL, OPT_MAX_STREAMS },
        { "max-names", required_argument, NULL, OPT_MAX_NAMES },
        { "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
        { "max-segments", required_argument, NULL, OPT_MAX_SEGMENTS },
        { "max-shm", required_argument, NULL, OPT_MAX_SHM },
        { "version", no_argument, NULL, OPT_VERSION },
        { "help", no_argument, NULL, 'h' },
        { 0 }
    };
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":s:fh", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            usage(stdout);
            return 1;
        case OPT_VERSION:
            printf("brokerd %s (protocol %u)\n", BROKER_VERSION,
                   BK_PROTO_VERSION);
            return 1;
        case ':':
            fprintf(stderr, "brokerd: option '%s' needs a value "
                    "(see brokerd --help)\n", argv[optind - 1]);
            return -EINVAL;
        case '?':
            fprintf(stderr, "brokerd: unknown option '%s' "
                    "(see brokerd --help)\n", argv[optind - 1]);
            return -EINVAL;
        default:
            if (apply(c, opt, optarg) < 0)
                return -EINVAL;
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
