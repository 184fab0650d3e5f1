/*
 * conf.h - brokerd's settings (prefix bk_conf_): defaults, the command
 * line, the configuration file given with -c, and reloading it.
 *
 * Owns a bk_conf_t's strings and rules (pidfile, logfile, confpath,
 * policy): bk_conf_free releases them.  The server keeps the one live
 * configuration; bk_conf_reload builds a fresh one and copies over what
 * may change while running.  Named conf, not config, so that it is never
 * confused with autoconf's config.h.
 */
#ifndef BK_CONF_H
#define BK_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/un.h>
#include "policy.h"

typedef struct bk_conf {
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
    uint32_t max_subs;          /* subscriptions per client */
    uint32_t max_clients;
    uint32_t max_clients_per_uid;   /* 0: no limit */
    uint64_t max_msg;
    uint64_t queue_limit;       /* bytes queued towards one client */
    uint32_t max_segments;      /* shared-memory segments per client */
    uint64_t max_shm;           /* bytes of segments per client */
    uint32_t shutdown_grace_ms;
    uint32_t handshake_timeout_ms;  /* accept to HELLO, at most */
    uint32_t reap_interval_ms;  /* sweeps for dead clients (reap.h); 0:
                                 * none */
    /* Budgets (brokerd(8) LIMITS; user.h): 0 is no limit, but for the
     * two global ones, where 0 derives them from RLIMIT_NOFILE. */
    uint32_t fd_reserve;        /* fds kept free below RLIMIT_NOFILE */
    uint32_t max_fds_in_flight; /* queued, every client; 0: auto */
    uint32_t max_fds_per_client;    /* queued towards one client */
    uint32_t max_fds_per_uid;   /* queued because of one user's sends */
    uint32_t max_held_per_client;   /* shm references one client holds */
    uint32_t max_held_per_uid;  /* ... one user's clients hold */
    uint32_t max_segments_per_uid;
    uint32_t max_segments_total;    /* every client; 0: auto */
    uint32_t max_streams_per_peer;  /* one client's towards one client */
    uint32_t max_streams_per_uid_peer;  /* one user's towards one client */
    uint32_t max_streams_per_uid;
    uint32_t max_names_per_uid;
    uint32_t max_subs_per_uid;
    uint32_t max_refusals;      /* refusals per client and minute before
                                 * it is disconnected */
    uint64_t max_queued;        /* memory of every queue */
    uint64_t max_queued_per_uid;    /* ... of one user's (either way) */
} bk_conf_t;

/* The defaults of the budgets. */
#define BK_DEF_FD_RESERVE          256u
#define BK_DEF_MAX_FDS_PER_CLIENT  1024u
#define BK_DEF_MAX_FDS_PER_UID     4096u
#define BK_DEF_MAX_HELD_PER_CLIENT 16384u
#define BK_DEF_MAX_HELD_PER_UID    65536u
#define BK_DEF_MAX_SEGS_PER_UID    1024u
#define BK_DEF_MAX_STREAMS_PER_PEER 1024u
#define BK_DEF_MAX_STREAMS_PER_UID_PEER 2048u
#define BK_DEF_MAX_STREAMS_PER_UID 16384u
#define BK_DEF_MAX_NAMES_PER_UID   4096u
#define BK_DEF_MAX_SUBS_PER_UID    16384u
#define BK_DEF_MAX_REFUSALS        10000u
#define BK_DEF_MAX_QUEUED          (UINT64_C(1) << 30)
#define BK_DEF_MAX_QUEUED_PER_UID  (UINT64_C(256) << 20)
#define BK_DEF_REAP_INTERVAL_MS    5000u

/* The global budgets in force with RLIMIT_NOFILE `nofile`: the
 * configured value, or with 0 half (fds in flight) or a quarter
 * (segments) of what the reserve leaves. */
static inline uint64_t bk_conf_after_reserve(const bk_conf_t *c,
                                             uint64_t nofile)
{
    return nofile > c->fd_reserve ? nofile - c->fd_reserve : 0;
}

static inline uint64_t bk_conf_fds_in_flight(const bk_conf_t *c,
                                             uint64_t nofile)
{
    return c->max_fds_in_flight ? c->max_fds_in_flight
                                : bk_conf_after_reserve(c, nofile) / 2;
}

static inline uint64_t bk_conf_segments_total(const bk_conf_t *c,
                                              uint64_t nofile)
{
    return c->max_segments_total ? c->max_segments_total
                                 : bk_conf_after_reserve(c, nofile) / 4;
}

void bk_conf_defaults(bk_conf_t *c);
/* Free what a configuration owns (pidfile, rules). */
void bk_conf_free(bk_conf_t *c);

/* An outcome of parsing the command line: --help or --version was
 * printed, and brokerd exits 0 without running. */
#define BK_CONF_HANDLED 1

/* Parse argv.  Returns 0 to run, BK_CONF_HANDLED when --help/--version
 * was handled (exit 0), or -EINVAL after printing a one-line error
 * (exit 2). */
int bk_conf_parse_args(bk_conf_t *c, int argc, char **argv);

/* The whole configuration: defaults, then the file named by -c (if
 * any), then the command line on top.  Returns as parse_args does; a bad
 * file prints "brokerd: FILE:LINE: reason" and returns -EINVAL. */
int bk_conf_load(bk_conf_t *c, int argc, char **argv);

/* Read the file given with -c again (defaults, file, command line) and
 * apply what can change while running to `live`; settings that need a
 * restart are kept and a warning is logged.  On a bad file `live` is
 * unchanged and err holds "FILE:LINE: reason".  Returns 0 or -EINVAL
 * (also when no file was given: err says so). */
int bk_conf_reload(bk_conf_t *live, char *err, size_t errlen);

/* Apply the `key = value` lines of `path` to c (the file part of conf.c).  Returns 0,
 * or -EINVAL with "FILE:LINE: reason" (or "FILE: reason") in err. */
int bk_conf_read_file(bk_conf_t *c, const char *path, char *err,
                        size_t errlen);
/* The same for lines read from `f` (not closed), called `name` in the
 * messages ("NAME:LINE: reason"); the fuzz target feeds it memory. */
int bk_conf_read_stream(bk_conf_t *c, FILE *f, const char *name,
                        char *err, size_t errlen);
/* Set one option by its long name (without dashes) from a string;
 * returns 0 or -EINVAL with the reason in err; -ENOENT if the key is not
 * a settable option.  *scalar tells whether it may appear only once. */
int bk_conf_set(bk_conf_t *c, const char *key, const char *value,
                  bool *scalar, char *err, size_t errlen);

#endif
