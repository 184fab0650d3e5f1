/*
 * config.h - brokerd's settings: defaults, command-line parsing and
 * validation (prefix bk_config_).
 */
#ifndef BK_CONFIG_H
#define BK_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>
#include "policy.h"

typedef struct bk_config {
    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool foreground;
    int log_level;
    char *pidfile;              /* malloc'd or NULL */
    char *logfile;              /* malloc'd absolute path, or NULL */
    const char *conffile;       /* -c FILE (argv-owned) or NULL */
    char *confpath;             /* its absolute path (malloc'd) or NULL */
    bool socket_cli;            /* -s given: the file cannot change it */
    unsigned socket_mode;       /* applied after bind */
    bool socket_group_set;
    gid_t socket_group;
    bk_policy_t policy;         /* allow-* rules of the file */
    int argc;                   /* the command line, kept for reload */
    char **argv;
    uint32_t max_packet;
    uint32_t max_fds;
    uint32_t max_name;
    uint32_t max_streams;       /* open streams per client */
    uint32_t max_names;         /* names per client */
    uint32_t max_clients;
    uint32_t max_clients_per_uid;   /* 0: no limit */
    uint64_t max_msg;
    uint64_t queue_limit;       /* bytes queued towards one client */
    uint32_t max_segments;      /* shared-memory segments per client */
    uint64_t max_shm;           /* bytes of segments per client */
    uint32_t shutdown_grace_ms;
} bk_config_t;

void bk_config_defaults(bk_config_t *c);
/* Free what a configuration owns (pidfile, rules). */
void bk_config_free(bk_config_t *c);

/* Parse argv.  Returns 0 to run, 1 when --help/--version was handled
 * (exit 0), or -EINVAL after printing a one-line error (exit 2). */
int bk_config_parse_args(bk_config_t *c, int argc, char **argv);

/* The whole configuration: defaults, then the file named by -c (if
 * any), then the command line on top.  Returns as parse_args does; a bad
 * file prints "brokerd: FILE:LINE: reason" and returns -EINVAL. */
int bk_config_load(bk_config_t *c, int argc, char **argv);

/* Read the file given with -c again (defaults, file, command line) and
 * apply what can change while running to `live`; settings that need a
 * restart are kept and a warning is logged.  On a bad file `live` is
 * unchanged and err holds "FILE:LINE: reason".  Returns 0 or -EINVAL
 * (also when no file was given: err says so). */
int bk_config_reload(bk_config_t *live, char *err, size_t errlen);

/* Apply the `key = value` lines of `path` to c (conffile.c).  Returns 0,
 * or -EINVAL with "FILE:LINE: reason" (or "FILE: reason") in err. */
int bk_config_read_file(bk_config_t *c, const char *path, char *err,
                        size_t errlen);
/* Set one option by its long name (without dashes) from a string;
 * returns 0 or -EINVAL with the reason in err; -ENOENT if the key is not
 * a settable option.  *scalar tells whether it may appear only once. */
int bk_config_set(bk_config_t *c, const char *key, const char *value,
                  bool *scalar, char *err, size_t errlen);

/* Parse a byte size with an optional K/M/G suffix (powers of 1024). */
int bk_config_parse_size(const char *s, uint64_t *out);

#endif
