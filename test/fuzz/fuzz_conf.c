/*
 * fuzz_conf.c - libFuzzer target for brokerd's configuration file parser
 * (src/daemon/conf.c and the access rules of policy.c; prefix fzc_).
 * Built by `make fuzz`.
 *
 * The input is the text of a configuration file, read through
 * bk_conf_read_stream from memory (fmemopen).  Checked:
 *   - a parse that succeeds leaves every setting within the range
 *     brokerd(8) documents, and every access rule well formed; the
 *     command line applied on top (bk_conf_parse_args) still succeeds and
 *     keeps queue-limit at least the packet size;
 *   - a parse that fails says "NAME:LINE: reason" with LINE one of the
 *     input's lines; the lines before LINE parse on their own, and the
 *     lines up to LINE fail with the very same message (the error is
 *     that line's, not a later one's);
 *   - each line that sets a numeric key, alone in a file, is accepted
 *     exactly when its value is a SIZE within that key's documented
 *     range, and then sets it (sizes are compared with a reference
 *     parser too);
 *   - the same input parsed twice gives the same result, field by field;
 *   - nothing leaks (LeakSanitizer) and no byte is read out of bounds.
 * Any failed check aborts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "policy.h"
#include "proto.h"
#include "size.h"
#include "topic.h"

#define FZC_NAME "fuzz.conf"

#define fzc_require(cond) do { if (!(cond)) abort(); } while (0)

typedef struct fzc_result {
    int r;
    char err[512];
    bk_conf_t c;
} fzc_result_t;

/* Parse data[0..len) as a configuration file into res (defaults first). */
static void fzc_parse(const uint8_t *data, size_t len, fzc_result_t *res)
{
    static const char empty[1];
    /* fmemopen wants a buffer of at least one byte: an empty file is one
     * NUL-free byte long buffer read as nothing (size 0 is refused). */
    FILE *f = fmemopen(len ? (void *)data : (void *)empty, len ? len : 1,
                       "r");

    bk_conf_defaults(&res->c);
    res->err[0] = '\0';
    fzc_require(f);
    if (!len)
        fgetc(f);               /* past the stand-in byte: at EOF */
    res->r = bk_conf_read_stream(&res->c, f, FZC_NAME, res->err,
                                 sizeof(res->err));
    fclose(f);
}

/* ---- a successful parse ------------------------------------------------ */

static void fzc_check_range(uint64_t v, uint64_t min, uint64_t max)
{
    fzc_require(v >= min && v <= max);
}

static void fzc_check_who(const bk_policy_who_t *w)
{
    fzc_require(w->kind == BK_POLICY_ANY || w->kind == BK_POLICY_UID ||
                w->kind == BK_POLICY_GID);
    if (w->kind == BK_POLICY_ANY)
        fzc_require(w->id == 0);
}

/* Rules of allow-connect: no pattern. */
static void fzc_check_connect(const bk_policy_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        fzc_require(!l->v[i].pattern && !l->v[i].prefix && !l->v[i].plen);
        fzc_check_who(&l->v[i].who);
    }
}

/* allow-own, allow-send: a name, exact or a prefix followed by '*'. */
static void fzc_check_named(const bk_policy_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const bk_policy_rule_t *r = &l->v[i];
        size_t n;

        fzc_require(r->pattern);
        n = strlen(r->pattern);
        fzc_require(n > 0);
        fzc_require(r->prefix == (r->pattern[n - 1] == '*'));
        fzc_require(r->plen == n - r->prefix);
        fzc_require(!memchr(r->pattern, '*', r->plen));
        /* Split off at the first blank.  (policy.c takes any other
         * bytes: a pattern that is no name is accepted and never
         * matches; brokerd(8) says a pattern is a name.) */
        fzc_require(!strpbrk(r->pattern, " \t"));
        fzc_check_who(&r->who);
    }
}

/* allow-publish, allow-subscribe: a valid topic pattern. */
static void fzc_check_topics(const bk_policy_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const bk_policy_rule_t *r = &l->v[i];

        fzc_require(r->pattern && !r->prefix);
        fzc_require(r->plen == strlen(r->pattern));
        fzc_require(bk_topic_pattern_valid(r->pattern, r->plen));
        fzc_check_who(&r->who);
    }
}

/* Every value as brokerd(8) OPTIONS and CONFIGURATION FILE allow it. */
static void fzc_check_conf(const bk_conf_t *c)
{
    size_t sl = strnlen(c->socket_path, sizeof(c->socket_path));

    fzc_require(sl < sizeof(c->socket_path));
    fzc_require(c->log_level >= BK_LOG_ERROR &&
                c->log_level <= BK_LOG_DEBUG);
    fzc_require(!c->pidfile || c->pidfile[0]);
    fzc_require(!c->logfile || c->logfile[0] == '/');
    fzc_require(!c->conffile && !c->confpath && !c->argc && !c->argv);
    fzc_require(!c->foreground && !c->socket_cli);
    fzc_check_range(c->max_packet, BK_MIN_MAX_PACKET, BK_MAX_MAX_PACKET);
    fzc_check_range(c->max_fds, 0, BK_MAX_FDS_HARD);
    fzc_require(c->max_name == BK_MAX_NAME);      /* not settable */
    fzc_check_range(c->max_streams, 1, 1u << 20);
    fzc_check_range(c->max_names, 1, 1u << 16);
    fzc_check_range(c->max_subs, 1, 1u << 20);
    fzc_check_range(c->max_clients, 1, 1u << 20);
    fzc_check_range(c->max_clients_per_uid, 0, 1u << 20);
    fzc_check_range(c->handshake_timeout_ms, 10, 3600000);
    fzc_check_range(c->max_segments, 0, 1u << 16);
    fzc_require(c->queue_limit >= 4096);
    fzc_require(c->max_msg >= 1);
    fzc_require(c->socket_mode <= 07777);
    fzc_require(c->shutdown_grace_ms == 2000);     /* not settable */
    if (!c->socket_group_set)
        fzc_require(c->socket_group == 0);
    fzc_check_connect(&c->policy.connect);
    fzc_check_named(&c->policy.own);
    fzc_check_named(&c->policy.send);
    fzc_check_topics(&c->policy.publish);
    fzc_check_topics(&c->policy.subscribe);
}

/* The command line on top, as bk_conf_load does after the file. */
static void fzc_check_args(bk_conf_t *c)
{
    char a0[] = "brokerd", a1[] = "-s", a2[] = "/tmp/fuzz-conf.sock";
    char *argv[] = { a0, a1, a2, NULL };

    fzc_require(bk_conf_parse_args(c, 3, argv) == 0);
    fzc_require(c->queue_limit >= c->max_packet);
    fzc_require(!strcmp(c->socket_path, a2));
}

/* ---- a failed parse ----------------------------------------------------- */

/* Bytes up to and including the n-th line (1-based), or all of them. */
static size_t fzc_lines_len(const uint8_t *data, size_t len, unsigned n)
{
    size_t off = 0;

    for (unsigned k = 0; k < n && off < len; k++) {
        const uint8_t *nl = memchr(data + off, '\n', len - off);
        off = nl ? (size_t)(nl - data) + 1 : len;
    }
    return off;
}

static unsigned fzc_count_lines(const uint8_t *data, size_t len)
{
    unsigned n = 0;

    for (size_t i = 0; i < len; i++)
        n += data[i] == '\n';
    return n + (len && data[len - 1] != '\n');
}

/* "fuzz.conf:LINE: reason": LINE, or 0 if the message is not of that
 * form. */
static unsigned fzc_err_line(const char *err)
{
    size_t pre = strlen(FZC_NAME ":");
    unsigned long v;
    char *end;

    if (strncmp(err, FZC_NAME ":", pre) || err[pre] < '1' || err[pre] > '9')
        return 0;
    v = strtoul(err + pre, &end, 10);
    if (end[0] != ':' || end[1] != ' ' || !end[2] || v > UINT32_MAX)
        return 0;
    return (unsigned)v;
}

static void fzc_check_failure(const uint8_t *data, size_t len,
                              const fzc_result_t *res)
{
    unsigned line = fzc_err_line(res->err);
    fzc_result_t *part = malloc(sizeof(*part));

    fzc_require(res->r == -EINVAL);
    fzc_require(line >= 1 && line <= fzc_count_lines(data, len));
    fzc_require(part);
    fzc_parse(data, fzc_lines_len(data, len, line - 1), part);
    fzc_require(part->r == 0);
    bk_conf_free(&part->c);
    fzc_parse(data, fzc_lines_len(data, len, line), part);
    fzc_require(part->r == -EINVAL && !strcmp(part->err, res->err));
    bk_conf_free(&part->c);
    free(part);
}

/* ---- the same input twice ----------------------------------------------- */

static bool fzc_str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static void fzc_check_list_eq(const bk_policy_list_t *a,
                              const bk_policy_list_t *b)
{
    fzc_require(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        fzc_require(fzc_str_eq(a->v[i].pattern, b->v[i].pattern));
        fzc_require(a->v[i].plen == b->v[i].plen);
        fzc_require(a->v[i].prefix == b->v[i].prefix);
        fzc_require(a->v[i].who.kind == b->v[i].who.kind);
        fzc_require(a->v[i].who.id == b->v[i].who.id);
    }
}

static void fzc_check_same(const fzc_result_t *x, const fzc_result_t *y)
{
    const bk_conf_t *a = &x->c, *b = &y->c;

    fzc_require(x->r == y->r && !strcmp(x->err, y->err));
    fzc_require(!strcmp(a->socket_path, b->socket_path));
    fzc_require(fzc_str_eq(a->pidfile, b->pidfile));
    fzc_require(fzc_str_eq(a->logfile, b->logfile));
    fzc_require(a->log_level == b->log_level);
    fzc_require(a->socket_mode == b->socket_mode);
    fzc_require(a->socket_group_set == b->socket_group_set);
    fzc_require(a->socket_group == b->socket_group);
    fzc_require(a->max_packet == b->max_packet);
    fzc_require(a->max_fds == b->max_fds);
    fzc_require(a->max_streams == b->max_streams);
    fzc_require(a->max_names == b->max_names);
    fzc_require(a->max_subs == b->max_subs);
    fzc_require(a->max_clients == b->max_clients);
    fzc_require(a->max_clients_per_uid == b->max_clients_per_uid);
    fzc_require(a->max_msg == b->max_msg);
    fzc_require(a->queue_limit == b->queue_limit);
    fzc_require(a->max_segments == b->max_segments);
    fzc_require(a->max_shm == b->max_shm);
    fzc_require(a->handshake_timeout_ms == b->handshake_timeout_ms);
    fzc_check_list_eq(&a->policy.connect, &b->policy.connect);
    fzc_check_list_eq(&a->policy.own, &b->policy.own);
    fzc_check_list_eq(&a->policy.send, &b->policy.send);
    fzc_check_list_eq(&a->policy.publish, &b->policy.publish);
    fzc_check_list_eq(&a->policy.subscribe, &b->policy.subscribe);
}

/* ---- sizes ---------------------------------------------------------------- */

/* brokerd(8): a SIZE is a number of bytes, optionally followed by K, M or
 * G (lower case, KiB and KB forms too), e.g. 64K, 4MiB; plain bytes may
 * say B.  Written as a grammar walk, unlike conf.c's strtoull. */
static int fzc_ref_size(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    unsigned shift = 0;
    const char *suffix = "kKmMgG", *p;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (*s && (p = strchr(suffix, *s))) {
        shift = 10 * (unsigned)(1 + (p - suffix) / 2);
        s++;
        if (*s == 'i')
            s++;
    }
    if (*s == 'B' || *s == 'b')
        s++;
    if (*s || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = v << shift;
    return 0;
}

/* Each line (up to 64 bytes) as a SIZE, against the reference. */
static void fzc_check_sizes(const uint8_t *data, size_t len)
{
    char buf[65];
    size_t off = 0;

    while (off < len) {
        const uint8_t *nl = memchr(data + off, '\n', len - off);
        size_t n = (nl ? (size_t)(nl - data) : len) - off;
        uint64_t a = 0, b = 0;

        if (n < sizeof(buf) && !memchr(data + off, '\0', n)) {
            memcpy(buf, data + off, n);
            buf[n] = '\0';
            int ra = bk_size_parse(buf, &a), rb = fzc_ref_size(buf, &b);
            fzc_require(ra == rb && a == b);
        }
        off += n + 1;
    }
}

/* ---- numeric settings, line by line ----------------------------------------- */

/* brokerd(8)'s range of each numeric key. */
static const struct fzc_key {
    const char *key;
    uint64_t min, max;
} fzc_keys[] = {
    { "max-packet", BK_MIN_MAX_PACKET, BK_MAX_MAX_PACKET },
    { "max-fds", 0, BK_MAX_FDS_HARD },
    { "max-streams", 1, 1u << 20 },
    { "max-names", 1, 1u << 16 },
    { "max-subscriptions", 1, 1u << 20 },
    { "max-clients", 1, 1u << 20 },
    { "max-clients-per-uid", 0, 1u << 20 },
    { "handshake-timeout", 10, 3600000 },
    { "max-segments", 0, 1u << 16 },
    { "queue-limit", 4096, UINT64_MAX },
    { "max-msg", 1, UINT64_MAX },
    { "max-shm", 0, UINT64_MAX },
};

static uint64_t fzc_field(const bk_conf_t *c, size_t k)
{
    const uint64_t v[] = {
        c->max_packet, c->max_fds, c->max_streams, c->max_names,
        c->max_subs, c->max_clients, c->max_clients_per_uid,
        c->handshake_timeout_ms, c->max_segments, c->queue_limit,
        c->max_msg, c->max_shm,
    };

    return v[k];
}

/* s[0..n) without the blanks conf.c trims at either end. */
static void fzc_trim(const char **s, size_t *n)
{
    while (*n && strchr(" \t\r\n", (*s)[0]))
        (*s)++, (*n)--;
    while (*n && strchr(" \t\r\n", (*s)[*n - 1]))
        (*n)--;
}

/* A line `key = value` with a numeric key, alone in a file, is accepted
 * exactly when the value is a SIZE within the key's range, and then sets
 * the value. */
static void fzc_check_line(const uint8_t *line, size_t len)
{
    const char *l = (const char *)line, *eq, *key, *val;
    size_t n = len, kn, vn, k;
    char buf[72];
    uint64_t v = 0;
    fzc_result_t *res;
    bool ok;

    if (memchr(l, '\0', n) || memchr(l, '#', n))
        return;
    if (!(eq = memchr(l, '=', n)))
        return;
    key = l;
    kn = (size_t)(eq - l);
    val = eq + 1;
    vn = n - kn - 1;
    fzc_trim(&key, &kn);
    fzc_trim(&val, &vn);
    for (k = 0; k < sizeof(fzc_keys) / sizeof(fzc_keys[0]); k++)
        if (strlen(fzc_keys[k].key) == kn && !memcmp(key, fzc_keys[k].key, kn))
            break;
    if (k == sizeof(fzc_keys) / sizeof(fzc_keys[0]) || !vn ||
        vn >= sizeof(buf))
        return;
    memcpy(buf, val, vn);
    buf[vn] = '\0';
    ok = fzc_ref_size(buf, &v) == 0 && v >= fzc_keys[k].min &&
         v <= fzc_keys[k].max;
    res = malloc(sizeof(*res));
    fzc_require(res);
    fzc_parse(line, len, res);
    fzc_require((res->r == 0) == ok);
    if (ok)
        fzc_require(fzc_field(&res->c, k) == v);
    bk_conf_free(&res->c);
    free(res);
}

static void fzc_check_lines(const uint8_t *data, size_t len)
{
    size_t off = 0;

    while (off < len) {
        const uint8_t *nl = memchr(data + off, '\n', len - off);
        size_t n = (nl ? (size_t)(nl - data) : len) - off;

        fzc_check_line(data + off, n);
        off += n + 1;
    }
}

/* ---- the entry point ---------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fzc_result_t first, second;

    fzc_check_sizes(data, size);
    fzc_check_lines(data, size);
    fzc_parse(data, size, &first);
    fzc_parse(data, size, &second);
    fzc_check_same(&first, &second);
    if (first.r == 0) {
        fzc_require(!first.err[0]);
        fzc_check_conf(&first.c);
        fzc_check_args(&first.c);
    } else {
        fzc_check_failure(data, size, &first);
    }
    bk_conf_free(&first.c);
    bk_conf_free(&second.c);
    return 0;
}
