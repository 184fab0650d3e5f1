/*
 * conf.c - brokerd-nats's settings: defaults, the command line and the
 * configuration file (`key = value` lines, `#` comments, blank lines;
 * the repeatable keys may appear many times, any other key once).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "broker.h"
#include "conf.h"
#include "error.h"
#include "frame.h"
#include "log.h"
#include "map.h"
#include "kvfile.h"
#include "size.h"
#include "proto.h"
#include "topic.h"

void bn_conf_defaults(bn_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->prefix, "brokerd");
    strcpy(c->name, "brokerd-nats");
    c->tls_verify = true;
    c->reconnect_buffer = 8u << 20;
    c->reconnect_wait_ms = 2000;
    c->max_reconnect = -1;
    c->connect_timeout_ms = 2000;
    c->call_timeout_ms = 30000;
    c->max_calls = 1024;
    c->import_backlog = 16u << 20;
    c->local_backlog = 16u << 20;
    c->max_message = 64u << 20;
    c->partial_bytes = 128u << 20;
    c->partial_timeout_ms = 10000;
    c->export_policy = BROKER_SUB_BLOCK;
    c->log_level = BN_LOG_INFO;
}

static void bn_list_free(bn_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    l->n = 0;
}

void bn_conf_free(bn_conf_t *c)
{
    bn_list_t *lists[] = { &c->servers, &c->exports, &c->imports,
                           &c->offers, &c->remotes, &c->groups };
    char **strs[] = { &c->conffile, &c->socket, &c->user, &c->password,
                      &c->token, &c->creds, &c->tls_ca, &c->tls_cert,
                      &c->tls_key, &c->tls_hostname, &c->tls_ciphers };

    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        bn_list_free(lists[i]);
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

bool bn_list_has(const bn_list_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return true;
    return false;
}

/* ---- values ---------------------------------------------------------------- */

static int bn_bad(char *err, size_t el, const char *key, const char *val,
                  const char *why)
{
    snprintf(err, el, "invalid value '%s' for %s: %s", val, key, why);
    return -EINVAL;
}

static int bn_parse_u32(const char *key, const char *val, uint64_t min,
                        uint64_t max, uint32_t *out, char *err, size_t el)
{
    uint64_t v;
    char why[64];

    if (bk_size_parse(val, &v) < 0)
        return bn_bad(err, el, key, val, "not a number");
    if (v < min || v > max) {
        snprintf(why, sizeof(why), "must be between %llu and %llu",
                 (unsigned long long)min, (unsigned long long)max);
        return bn_bad(err, el, key, val, why);
    }
    *out = (uint32_t)v;
    return 0;
}

static int bn_parse_bool(const char *key, const char *val, bool *out,
                         char *err, size_t el)
{
    if (!strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1"))
        *out = true;
    else if (!strcmp(val, "no") || !strcmp(val, "false") ||
             !strcmp(val, "0"))
        *out = false;
    else
        return bn_bad(err, el, key, val, "yes or no");
    return 0;
}

/* One subject token: what a host name (or a group) may be. */
static bool bn_token_valid(const char *s)
{
    return bn_map_host_ok(s);
}

static int bn_set_str(char **dst, const char *val)
{
    char *s = strdup(val);

    if (!s)
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

static int bn_list_add(bn_list_t *l, const char *key, const char *val,
                       char *err, size_t el)
{
    if (bn_list_has(l, val))
        return 0;
    if (l->n == BN_MAX_LIST) {
        snprintf(err, el, "more than %d %s entries", BN_MAX_LIST, key);
        return -EINVAL;
    }
    l->v[l->n] = strdup(val);
    if (!l->v[l->n]) {
        snprintf(err, el, "out of memory");
        return -EINVAL;
    }
    l->n++;
    return 0;
}

static bool bn_pattern_ok(const char *p)
{
    return bk_topic_pattern_valid(p, strlen(p)) &&
           !bk_topic_reserved(p, strlen(p));
}

/* "HOST/NAME" with a valid host token and a valid broker name. */
static bool bn_remote_ok(const char *v)
{
    return bn_map_split_remote(v) > 0 &&
           bk_name_valid(v, strlen(v), BK_MAX_NAME);
}

/* "PATTERN GROUP" */
static bool bn_group_ok(const char *v)
{
    const char *sp = strchr(v, ' ');
    char pat[BK_MAX_TOPIC + 1];
    size_t pl = sp ? (size_t)(sp - v) : 0;

    if (!sp || pl == 0 || pl > BK_MAX_TOPIC || strchr(sp + 1, ' '))
        return false;
    memcpy(pat, v, pl);
    pat[pl] = '\0';
    /* GROUP names the NATS queue group and the local one */
    return bn_pattern_ok(pat) && bn_token_valid(sp + 1) &&
           bk_name_valid(sp + 1, strlen(sp + 1), BK_MAX_NAME);
}

/* ---- keys ------------------------------------------------------------------ */

static int bn_set_list(bn_conf_t *c, const char *key, const char *val,
                       char *err, size_t el)
{
    if (!strcmp(key, "server")) {
        if (strncmp(val, "nats://", 7) && strncmp(val, "tls://", 6))
            return bn_bad(err, el, key, val, "a nats:// or tls:// URL");
        return bn_list_add(&c->servers, key, val, err, el);
    }
    if (!strcmp(key, "export") || !strcmp(key, "import")) {
        if (!bn_pattern_ok(val))
            return bn_bad(err, el, key, val, "not a topic pattern "
                          "('.'-separated tokens, '*', '>'; not $broker)");
        return bn_list_add(key[0] == 'e' ? &c->exports : &c->imports, key,
                           val, err, el);
    }
    if (!strcmp(key, "offer")) {
        if (!bk_name_valid(val, strlen(val), BK_MAX_NAME) ||
            !bn_map_name_ok(val))
            return bn_bad(err, el, key, val, "not a broker name");
        return bn_list_add(&c->offers, key, val, err, el);
    }
    if (!strcmp(key, "remote")) {
        if (!bn_remote_ok(val))
            return bn_bad(err, el, key, val, "not HOST/NAME");
        return bn_list_add(&c->remotes, key, val, err, el);
    }
    if (!strcmp(key, "import-group")) {
        if (!bn_group_ok(val))
            return bn_bad(err, el, key, val, "not 'PATTERN GROUP'");
        return bn_list_add(&c->groups, key, val, err, el);
    }
    return 1;
}

static int bn_set_text(bn_conf_t *c, const char *key, const char *val,
                       char *err, size_t el)
{
    static const struct { const char *key; size_t off; bool tls; } keys[] = {
        { "user", offsetof(bn_conf_t, user), false },
        { "password", offsetof(bn_conf_t, password), false },
        { "token", offsetof(bn_conf_t, token), false },
        { "creds", offsetof(bn_conf_t, creds), false },
        { "tls-ca", offsetof(bn_conf_t, tls_ca), true },
        { "tls-cert", offsetof(bn_conf_t, tls_cert), true },
        { "tls-key", offsetof(bn_conf_t, tls_key), true },
        { "tls-hostname", offsetof(bn_conf_t, tls_hostname), true },
        { "tls-ciphers", offsetof(bn_conf_t, tls_ciphers), true },
    };

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(key, keys[i].key))
            continue;
        if (bn_set_str((char **)((char *)c + keys[i].off), val) < 0) {
            snprintf(err, el, "out of memory");
            return -EINVAL;
        }
        c->tls |= keys[i].tls;
        return 0;
    }
    return 1;
}

static int bn_set_name(bn_conf_t *c, const char *key, const char *val,
                       char *err, size_t el)
{
    if (!strcmp(key, "host")) {
        if (!bn_token_valid(val) || strlen(val) >= sizeof(c->host))
            return bn_bad(err, el, key, val, "letters, digits, '-' and "
                          "'_' only (one subject token), at most 63");
        strcpy(c->host, val);
        return 0;
    }
    if (!strcmp(key, "prefix")) {
        if (!bk_topic_valid(val, strlen(val)) ||
            strlen(val) >= sizeof(c->prefix) || strchr(val, '$'))
            return bn_bad(err, el, key, val, "a subject without wildcards");
        strcpy(c->prefix, val);
        return 0;
    }
    if (!strcmp(key, "name")) {
        if (!bk_name_valid(val, strlen(val), BK_MAX_NAME) ||
            strlen(val) >= sizeof(c->name))
            return bn_bad(err, el, key, val, "not a broker name");
        strcpy(c->name, val);
        return 0;
    }
    if (!strcmp(key, "socket")) {
        if (c->socket_cli)
            return 0;
        if (strlen(val) >= 108)
            return bn_bad(err, el, key, val, "longer than a socket path");
        return bn_set_str(&c->socket, val) < 0 ? -ENOMEM : 0;
    }
    return 1;
}

static int bn_set_number(bn_conf_t *c, const char *key, const char *val,
                         char *err, size_t el)
{
    uint32_t v;
    int r;

    if (!strcmp(key, "reconnect-buffer") || !strcmp(key, "import-backlog") ||
        !strcmp(key, "local-backlog")) {
        uint64_t *dst = key[0] == 'r' ? &c->reconnect_buffer :
                        key[1] == 'm' ? &c->import_backlog : &c->local_backlog;
        uint64_t s;

        if (bk_size_parse(val, &s) < 0 || s < 4096 || s > INT32_MAX)
            return bn_bad(err, el, key, val, "a size from 4K to 2G");
        *dst = s;
        return 0;
    }
    if (!strcmp(key, "max-message") || !strcmp(key, "partial-bytes")) {
        uint64_t s;

        if (bk_size_parse(val, &s) < 0 || s < 4096 || s > BN_MAX_MESSAGE)
            return bn_bad(err, el, key, val, "a size from 4K to 256M");
        *(key[0] == 'm' ? &c->max_message : &c->partial_bytes) = s;
        return 0;
    }
    if (!strcmp(key, "partial-timeout"))
        return bn_parse_u32(key, val, 10, 3600000, &c->partial_timeout_ms,
                            err, el);
    if (!strcmp(key, "reconnect-wait"))
        return bn_parse_u32(key, val, 10, 600000, &c->reconnect_wait_ms,
                            err, el);
    if (!strcmp(key, "connect-timeout"))
        return bn_parse_u32(key, val, 10, 600000, &c->connect_timeout_ms,
                            err, el);
    if (!strcmp(key, "call-timeout"))
        return bn_parse_u32(key, val, 10, 86400000, &c->call_timeout_ms,
                            err, el);
    if (!strcmp(key, "max-calls"))
        return bn_parse_u32(key, val, 1, 1u << 20, &c->max_calls, err, el);
    if (!strcmp(key, "max-reconnect")) {
        if (!strcmp(val, "-1") || !strcmp(val, "forever")) {
            c->max_reconnect = -1;
            return 0;
        }
        r = bn_parse_u32(key, val, 0, INT32_MAX, &v, err, el);
        if (r == 0)
            c->max_reconnect = (int32_t)v;
        return r;
    }
    return 1;
}

static int bn_set_choice(bn_conf_t *c, const char *key, const char *val,
                         char *err, size_t el)
{
    int lvl;

    if (!strcmp(key, "tls"))
        return bn_parse_bool(key, val, &c->tls, err, el);
    if (!strcmp(key, "tls-verify"))
        return bn_parse_bool(key, val, &c->tls_verify, err, el);
    if (!strcmp(key, "export-policy")) {
        if (!strcmp(val, "block"))
            c->export_policy = BROKER_SUB_BLOCK;
        else if (!strcmp(val, "drop"))
            c->export_policy = BROKER_SUB_DROP;
        else
            return bn_bad(err, el, key, val, "block or drop");
        return 0;
    }
    if (!strcmp(key, "log-level")) {
        lvl = bn_log_parse_level(val);
        if (lvl < 0)
            return bn_bad(err, el, key, val, "error, warn, info or debug");
        c->log_level = lvl;
        return 0;
    }
    return 1;
}

int bn_conf_set(bn_conf_t *c, const char *key, const char *val, char *err,
                size_t el)
{
    int (*const setters[])(bn_conf_t *, const char *, const char *, char *,
                           size_t) = { bn_set_list, bn_set_text, bn_set_name,
                                       bn_set_number, bn_set_choice };

    for (size_t i = 0; i < sizeof(setters) / sizeof(setters[0]); i++) {
        int r = setters[i](c, key, val, err, el);

        if (r == -ENOMEM)
            snprintf(err, el, "out of memory");
        if (r <= 0)
            return r < 0 ? -EINVAL : 0;
    }
    snprintf(err, el, "unknown key '%s'", key);
    return -EINVAL;
}

static bool bn_repeatable(const char *key)
{
    static const char *const keys[] = { "server", "export", "import",
                                        "offer", "remote", "import-group" };

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strcmp(key, keys[i]))
            return true;
    return false;
}

/* ---- the file -------------------------------------------------------------- */

/* bk_kv_read's setter: one key of the file. */
static int bn_kv_set(void *arg, const char *key, const char *value,
                     bool *once, char *why, size_t wl)
{
    *once = !bn_repeatable(key);
    return bn_conf_set(arg, key, value, why, wl);
}

/* The host name's first label, if it is a valid token. */
static void bn_default_host(bn_conf_t *c)
{
    char h[256];

    if (c->host[0] || gethostname(h, sizeof(h)) < 0)
        return;
    h[sizeof(h) - 1] = '\0';
    h[strcspn(h, ".")] = '\0';
    if (bn_token_valid(h) && strlen(h) < sizeof(c->host))
        strcpy(c->host, h);
}

static int bn_conf_finish(bn_conf_t *c, char *err, size_t el)
{
    bn_default_host(c);
    if (!c->host[0]) {
        snprintf(err, el, "the host name is not one subject token: set "
                 "host = NAME");
        return -EINVAL;
    }
    if (c->servers.n == 0 &&
        bn_list_add(&c->servers, "server", "nats://127.0.0.1:4222", err,
                    el) < 0)
        return -EINVAL;
    if ((c->user != NULL) != (c->password != NULL)) {
        snprintf(err, el, "user and password go together");
        return -EINVAL;
    }
    if ((c->tls_cert != NULL) != (c->tls_key != NULL)) {
        snprintf(err, el, "tls-cert and tls-key go together");
        return -EINVAL;
    }
    return 0;
}

int bn_conf_read(bn_conf_t *c, char *err, size_t el)
{
    struct stat st;
    FILE *f;
    int r;

    if (!c->conffile)
        return bn_conf_finish(c, err, el);
    f = fopen(c->conffile, "re");
    if (!f) {
        snprintf(err, el, "%s: %s", c->conffile, bk_sys_strerror(errno));
        return -EINVAL;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, el, "%s: is a directory", c->conffile);
        fclose(f);
        return -EINVAL;
    }
    r = bk_kv_read(f, c->conffile, bn_kv_set, c, err, el);
    fclose(f);
    if (r == 0)
        r = bn_conf_finish(c, err, el);
    return r;
}

/* ---- the command line ------------------------------------------------------ */

static void bn_usage(FILE *f)
{
    fprintf(f,
"Usage: brokerd-nats [OPTION]...\n"
"Bridge the topics and names of the local brokerd to a NATS cluster.\n"
"\n"
"  -c, --config FILE     read the settings from FILE (key = value lines,\n"
"                        see brokerd-nats(8)); SIGHUP re-reads it\n"
"  -s, --socket PATH     the local brokerd's socket (default: the file's\n"
"                        socket, else libbroker's default path)\n"
"      --log-level LEVEL error, warn, info (default) or debug\n"
"      --check           check the configuration and exit (0 or 2)\n"
"      --version         print the version and exit\n"
"  -h, --help            print this help and exit\n");
}

enum { BN_OPT_LOG_LEVEL = 256, BN_OPT_CHECK, BN_OPT_VERSION };

static const struct option bn_opts[] = {
    { "config", required_argument, NULL, 'c' },
    { "socket", required_argument, NULL, 's' },
    { "log-level", required_argument, NULL, BN_OPT_LOG_LEVEL },
    { "check", no_argument, NULL, BN_OPT_CHECK },
    { "version", no_argument, NULL, BN_OPT_VERSION },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static int bn_conf_opt(bn_conf_t *c, int opt, const char *arg)
{
    char *abs;

    switch (opt) {
    case 'c':
        abs = realpath(arg, NULL);
        if (!abs) {
            fprintf(stderr, "brokerd-nats: %s: %s\n", arg,
                    bk_sys_strerror(errno));
            return -EINVAL;
        }
        free(c->conffile);
        c->conffile = abs;
        return 0;
    case 's':
        if (!*arg || strlen(arg) >= 108 || bn_set_str(&c->socket, arg) < 0) {
            fprintf(stderr, "brokerd-nats: invalid socket path '%s'\n", arg);
            return -EINVAL;
        }
        c->socket_cli = true;
        return 0;
    case BN_OPT_LOG_LEVEL:
        c->log_level = bn_log_parse_level(arg);
        if (c->log_level < 0) {
            fprintf(stderr, "brokerd-nats: invalid value '%s' for "
                    "--log-level: error, warn, info or debug\n", arg);
            return -EINVAL;
        }
        return 0;
    case BN_OPT_CHECK:
        c->check_only = true;
        return 0;
    }
    return -EINVAL;
}

int bn_conf_args(bn_conf_t *c, int argc, char **argv)
{
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":c:s:h", bn_opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            bn_usage(stdout);
            return BN_CONF_HANDLED;
        case BN_OPT_VERSION:
            printf("brokerd-nats %s\n", BROKER_VERSION);
            return BN_CONF_HANDLED;
        case ':':
            fprintf(stderr, "brokerd-nats: option '%s' needs a value "
                    "(see brokerd-nats --help)\n", argv[optind - 1]);
            return -EINVAL;
        case '?':
            fprintf(stderr, "brokerd-nats: unknown option '%s' "
                    "(see brokerd-nats --help)\n", argv[optind - 1]);
            return -EINVAL;
        default:
            if (bn_conf_opt(c, opt, optarg) < 0)
                return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "brokerd-nats: unexpected argument '%s' "
                "(see brokerd-nats --help)\n", argv[optind]);
        return -EINVAL;
    }
    return 0;
}

/* ---- reload ---------------------------------------------------------------- */

bool bn_str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

bool bn_list_eq(const bn_list_t *a, const bn_list_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]))
            return false;
    return true;
}

#define BN_SWAP(a, b) do { __typeof__(a) t_ = (a); (a) = (b); (b) = t_; } \
    while (0)

int bn_conf_keep_restart(bn_conf_t *fresh, bn_conf_t *old)
{
    int n = 0;
    const char *what[8] = { NULL };
    size_t nw = 0;

#define BN_KEEP_STR(field, key) do { \
        if (!bn_str_eq(fresh->field, old->field)) { \
            what[nw < 8 ? nw++ : 7] = key; n++; } \
        BN_SWAP(fresh->field, old->field); } while (0)
#define BN_KEEP_VAL(field, key) do { \
        if (memcmp(&fresh->field, &old->field, sizeof(old->field))) { \
            what[nw < 8 ? nw++ : 7] = key; n++; } \
        memcpy(&fresh->field, &old->field, sizeof(old->field)); } while (0)

    if (!bn_list_eq(&fresh->servers, &old->servers)) {
        what[nw++] = "server";
        n++;
    }
    BN_SWAP(fresh->servers, old->servers);
    BN_KEEP_STR(socket, "socket");
    BN_KEEP_VAL(host, "host");
    BN_KEEP_VAL(prefix, "prefix");
    BN_KEEP_VAL(name, "name");
    BN_KEEP_STR(user, "user");
    BN_KEEP_STR(password, "password");
    BN_KEEP_STR(token, "token");
    BN_KEEP_STR(creds, "creds");
    BN_KEEP_VAL(tls, "tls");
    BN_KEEP_VAL(tls_verify, "tls-verify");
    BN_KEEP_STR(tls_ca, "tls-ca");
    BN_KEEP_STR(tls_cert, "tls-cert");
    BN_KEEP_STR(tls_key, "tls-key");
    BN_KEEP_STR(tls_hostname, "tls-hostname");
    BN_KEEP_STR(tls_ciphers, "tls-ciphers");
    BN_KEEP_VAL(reconnect_buffer, "reconnect-buffer");
    BN_KEEP_VAL(reconnect_wait_ms, "reconnect-wait");
    BN_KEEP_VAL(max_reconnect, "max-reconnect");
    BN_KEEP_VAL(connect_timeout_ms, "connect-timeout");
    BN_KEEP_VAL(import_backlog, "import-backlog");
    BN_KEEP_VAL(export_policy, "export-policy");
    for (size_t i = 0; i < nw; i++)
        bn_log(BN_LOG_WARN, "reload: %s%s changed: takes effect at the "
               "next start", what[i], i == 7 && n > 8 ? " (and more)" : "");
    return n;
#undef BN_KEEP_STR
#undef BN_KEEP_VAL
}
