/*
 * conf.h - brokerd-nats's settings (prefix bn_conf_): defaults, the
 * command line and the configuration file in brokerd's `key = value`
 * style (see brokerd-nats(8) for every key).
 *
 * A bn_conf_t owns every string in it; bn_conf_free releases them.
 * Errors are reported as text in a caller's buffer ("FILE:LINE: reason"
 * for the file) and returned as -EINVAL.
 */
#ifndef BN_CONF_H
#define BN_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BN_MAX_LIST     64      /* entries of one repeatable key */
#define BN_HOST_MAX     64      /* this host's name, NUL included */
#define BN_PREFIX_MAX   128     /* the subject prefix, NUL included */
#define BN_MAX_MESSAGE  (256u << 20) /* max-message and partial-bytes:
                                        libbroker's default max message */

/* A repeatable key's values, in file order; strings malloc'd. */
typedef struct bn_list {
    char *v[BN_MAX_LIST];
    size_t n;
} bn_list_t;

typedef struct bn_conf {
    char *conffile;             /* -c FILE (absolute), or NULL */
    char *socket;               /* the local brokerd, NULL: the default */
    bool socket_cli;            /* -s given: the file's socket is ignored */
    char host[BN_HOST_MAX];     /* this host's name (one subject token) */
    char prefix[BN_PREFIX_MAX]; /* the site's subject prefix */
    char name[64];              /* the local status name */
    bn_list_t servers;          /* nats://HOST:PORT ... */
    bn_list_t exports;          /* topic patterns sent to NATS */
    bn_list_t imports;          /* topic patterns brought in */
    bn_list_t offers;           /* local names callable from elsewhere */
    bn_list_t remotes;          /* HOST/NAME registered here (static) */
    bn_list_t groups;           /* "PATTERN GROUP": imports shared by a
                                   NATS queue group */
    char *user, *password, *token, *creds;
    bool tls;                   /* tls = yes (implied by tls-* files) */
    bool tls_verify;            /* tls-verify (default yes) */
    char *tls_ca, *tls_cert, *tls_key, *tls_hostname, *tls_ciphers;
    uint64_t reconnect_buffer;  /* bytes libnats keeps while reconnecting */
    uint32_t reconnect_wait_ms;
    int32_t max_reconnect;      /* -1: forever */
    uint32_t connect_timeout_ms;
    uint32_t call_timeout_ms;   /* calls across hosts */
    uint32_t max_calls;         /* calls in flight each way */
    uint64_t import_backlog;    /* bytes waiting for the loop */
    uint64_t local_backlog;     /* bytes queued towards brokerd */
    uint64_t max_message;       /* largest publication that crosses
                                   (split into parts past max_payload) */
    uint64_t partial_bytes;     /* split publications being joined */
    uint32_t partial_timeout_ms; /* a part may wait this long for the
                                    next one */
    int export_policy;          /* BROKER_SUB_BLOCK or _DROP */
    int log_level;              /* BN_LOG_* */
    bool check_only;            /* --check: parse, print nothing, exit */
} bn_conf_t;

/* What bn_conf_args returns when it printed --help or --version. */
#define BN_CONF_HANDLED 1

void bn_conf_defaults(bn_conf_t *c);
void bn_conf_free(bn_conf_t *c);

/* The command line: -c FILE, -s PATH, --log-level, --check, --help,
 * --version.  0, BN_CONF_HANDLED, or -EINVAL after a message on stderr. */
int bn_conf_args(bn_conf_t *c, int argc, char **argv);

/* Read c->conffile (if any) into c, which holds the defaults and the
 * command line.  0 or -EINVAL with "FILE:LINE: reason" in err. */
int bn_conf_read(bn_conf_t *c, char *err, size_t errlen);

/* Set one key (the file's spelling).  0 or -EINVAL with the reason. */
int bn_conf_set(bn_conf_t *c, const char *key, const char *val,
                char *err, size_t errlen);

/* Whether the list holds s. */
bool bn_list_has(const bn_list_t *l, const char *s);
/* Whether two lists hold the same strings in the same order. */
bool bn_list_eq(const bn_list_t *a, const bn_list_t *b);
/* Whether two optional strings are both unset or equal. */
bool bn_str_eq(const char *a, const char *b);

/* Reload: settings that only take effect at start (socket, host,
 * prefix, name, servers, credentials, TLS, reconnect and connect
 * settings, import-backlog, export-policy) go back from `old` into `fresh`, and each one that differed
 * is logged as needing a restart.  Returns how many differed. */
int bn_conf_keep_restart(bn_conf_t *fresh, bn_conf_t *old);

#endif
