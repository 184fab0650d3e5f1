/*
 * config.h - brokerd's settings: defaults, command-line parsing and
 * validation (prefix bk_config_).
 */
#ifndef BK_CONFIG_H
#define BK_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

typedef struct bk_config {
    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool foreground;
    int log_level;
    const char *pidfile;        /* argv-owned or NULL */
    uint32_t max_packet;
    uint32_t max_fds;
    uint32_t max_name;
    uint32_t max_streams;       /* open streams per client */
    uint32_t max_names;         /* names per client */
    uint32_t max_clients;
    uint64_t max_msg;
    uint64_t queue_limit;       /* bytes queued towards one client */
    uint32_t max_segments;      /* shared-memory segments per client */
    uint64_t max_shm;           /* bytes of segments per client */
    uint32_t shutdown_grace_ms;
} bk_config_t;

void bk_config_defaults(bk_config_t *c);

/* Parse argv.  Returns 0 to run, 1 when --help/--version was handled
 * (exit 0), or -EINVAL after printing a one-line error (exit 2). */
int bk_config_parse_args(bk_config_t *c, int argc, char **argv);

/* Parse a byte size with an optional K/M/G suffix (powers of 1024). */
int bk_config_parse_size(const char *s, uint64_t *out);

#endif
