/*
 * fuzz_bridge.c - libFuzzer target for brokerd-nats's parsers (prefix
 * fzb_): its configuration file (src/bridge/conf.c) and the rejoining of
 * split publications from NATS message headers (src/bridge/parts.c).
 * Built by `make fuzz` when configure found libnats.
 *
 * The input's first byte picks what the rest is:
 *
 *   'c' or 'C'  the text of a configuration file, read by bn_conf_read
 *               from a memfd ('C': after `-s PATH`, which the file's
 *               socket does not change).  Checked: the result is 0 or -EINVAL with
 *               "FILE:LINE: reason" (or the file's name and a reason);
 *               a successful parse leaves every setting within what
 *               brokerd-nats(8) documents; a second parse of the same
 *               text equals the first (bn_conf_keep_restart finds
 *               nothing to keep); the restart settings kept from it into
 *               a fresh configuration are the parsed ones.
 *
 *   anything else  three bytes of limits (max-message, partial-bytes,
 *               partial-timeout), then a script of steps (fzb_step):
 *               parts with well-formed or raw Brokerd-Msg/-Part/-Size
 *               headers from one of several origins on one of several
 *               topics, whole publications, clock steps, bn_parts_tick,
 *               bn_parts_send round trips whose parts are fed back, and
 *               floods of first parts that fill the table.
 *               Checked after each step, against the history of steps
 *               rather than a copy of parts.c's table: a part is counted
 *               invalid exactly when its headers break brokerd-nats(8)'s
 *               rules (a reference parser here); a publication is
 *               published locally only at its last part, only if its
 *               parts 1..N came in order with nothing of its origin on
 *               its topic between them, within partial-timeout, adding up
 *               to Brokerd-Size, and then with exactly their bytes; such
 *               a publication within max-message is always published,
 *               unless its first part was refused for partial-bytes;
 *               the bytes held never exceed partial-bytes, and
 *               bn_parts_stop leaves nothing (LeakSanitizer checks the
 *               rest).
 *
 * parts.c's neighbours (stats, import, the NATS publisher, the clock) are
 * replaced by the recording stubs below, so only the parsers and what
 * they need are linked.  Any failed check aborts.
 *
 * bn_parts_take does not take the message (import.c destroys it after
 * the call); the messages of one input are kept until its end, since
 * the checks compare what was published with their data.  libnats frees
 * a destroyed message on its collector thread, which needs nats_Open and
 * happens after the input: `make fuzz-run` passes -detect_leaks=0 and
 * leaves leaks to LeakSanitizer's check at exit.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "bridge.h"
#include "conf.h"
#include "log.h"
#include "map.h"
#include "proto.h"
#include "topic.h"

#define fzb_require(cond) do { if (!(cond)) abort(); } while (0)

/* ---- the stubs parts.c calls ------------------------------------------- */

static uint64_t fzb_clock;          /* bn_now_ms */

/* What the last step published locally (at most one publication). */
typedef struct fzb_delivery {
    int n;
    char *topic;
    char *data;
    size_t len;
} fzb_delivery_t;
static fzb_delivery_t fzb_out;

/* The parts bn_parts_send handed to NATS. */
typedef struct fzb_sent {
    char *data;
    size_t len;
    char id[BN_MAP_ID_MAX + 8];
    bn_part_t p;
} fzb_sent_t;
#define FZB_MAX_SENT 64
static fzb_sent_t fzb_sent[FZB_MAX_SENT];
static size_t fzb_nsent;
static uint32_t fzb_fail_at;        /* this part's publish fails (0: none) */

uint64_t bn_now_ms(void)
{
    return fzb_clock;
}

void bn_stats_drop(bn_bridge_t *br, uint64_t *counter, const char *what,
                   const char *where)
{
    (void)br;
    fzb_require(what && where);
    (*counter)++;
}

void bn_import_publish(bn_bridge_t *br, const char *topic, const void *data,
                       size_t len)
{
    (void)br;
    fzb_require(fzb_out.n == 0);    /* one publication per step at most */
    fzb_out.n++;
    fzb_out.topic = strdup(topic);
    fzb_out.data = malloc(len ? len : 1);
    fzb_require(fzb_out.topic && fzb_out.data);
    memcpy(fzb_out.data, data, len);
    fzb_out.len = len;
}

int bn_nats_publish_part(bn_bridge_t *br, const char *subject,
                         const void *data, size_t len, const bn_part_t *p)
{
    fzb_sent_t *s;

    (void)br;
    fzb_require(subject && p && p->id);
    fzb_require(fzb_nsent < FZB_MAX_SENT);
    s = &fzb_sent[fzb_nsent++];
    s->data = malloc(len ? len : 1);
    fzb_require(s->data);
    memcpy(s->data, data, len);
    s->len = len;
    fzb_require(strlen(p->id) < sizeof(s->id));
    strcpy(s->id, p->id);
    s->p = *p;
    s->p.id = s->id;
    return p->index == fzb_fail_at ? -ENOBUFS : 0;
}

static void fzb_sent_clear(void)
{
    for (size_t i = 0; i < fzb_nsent; i++)
        free(fzb_sent[i].data);
    fzb_nsent = 0;
}

static void fzb_out_clear(void)
{
    free(fzb_out.topic);
    free(fzb_out.data);
    memset(&fzb_out, 0, sizeof(fzb_out));
}

/* ---- the configuration ------------------------------------------------- */

typedef struct fzb_conf {
    int r;
    char err[512];
    bn_conf_t c;
} fzb_conf_t;

#define FZB_CLI_SOCKET "/run/fzb-cli.sock"

/* Parse the file behind fd (as /proc/self/fd/N) into res; cli: as after
 * `-s FZB_CLI_SOCKET` (the file's socket is ignored). */
static void fzb_conf_parse(int fd, bool cli, fzb_conf_t *res)
{
    char path[64];

    bn_conf_defaults(&res->c);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    res->c.conffile = strdup(path);
    fzb_require(res->c.conffile);
    if (cli) {
        res->c.socket = strdup(FZB_CLI_SOCKET);
        fzb_require(res->c.socket);
        res->c.socket_cli = true;
    }
    res->err[0] = '\0';
    res->r = bn_conf_read(&res->c, res->err, sizeof(res->err));
}

static void fzb_check_list(const bn_list_t *l, bool (*ok)(const char *))
{
    fzb_require(l->n <= BN_MAX_LIST);
    for (size_t i = 0; i < l->n; i++) {
        fzb_require(l->v[i] && ok(l->v[i]));
        for (size_t j = 0; j < i; j++)
            fzb_require(strcmp(l->v[i], l->v[j]));  /* no duplicates */
    }
}

static bool fzb_server_ok(const char *s)
{
    return !strncmp(s, "nats://", 7) || !strncmp(s, "tls://", 6);
}

static bool fzb_pattern_ok(const char *s)
{
    return bk_topic_pattern_valid(s, strlen(s)) &&
           !bk_topic_reserved(s, strlen(s));
}

static bool fzb_offer_ok(const char *s)
{
    return bn_map_name_ok(s);
}

static bool fzb_remote_ok(const char *s)
{
    return bn_map_split_remote(s) > 0;
}

static bool fzb_group_ok(const char *s)
{
    const char *sp = strchr(s, ' ');
    char pat[BK_MAX_TOPIC + 1];

    if (!sp || sp == s || (size_t)(sp - s) > BK_MAX_TOPIC)
        return false;
    memcpy(pat, s, (size_t)(sp - s));
    pat[sp - s] = '\0';
    return fzb_pattern_ok(pat) && bn_map_host_ok(sp + 1);
}

static void fzb_check_conf(const bn_conf_t *c)
{
    fzb_require(bn_map_host_ok(c->host));
    fzb_require(bk_topic_valid(c->prefix, strlen(c->prefix)) &&
                !strchr(c->prefix, '$'));
    fzb_require(c->servers.n >= 1);
    fzb_check_list(&c->servers, fzb_server_ok);
    fzb_check_list(&c->exports, fzb_pattern_ok);
    fzb_check_list(&c->imports, fzb_pattern_ok);
    fzb_check_list(&c->offers, fzb_offer_ok);
    fzb_check_list(&c->remotes, fzb_remote_ok);
    fzb_check_list(&c->groups, fzb_group_ok);
    fzb_require(!c->socket || strlen(c->socket) < 108);
    fzb_require((c->user != NULL) == (c->password != NULL));
    fzb_require((c->tls_cert != NULL) == (c->tls_key != NULL));
    fzb_require(c->reconnect_buffer >= 4096 &&
                c->reconnect_buffer <= INT32_MAX);
    fzb_require(c->import_backlog >= 4096 && c->import_backlog <= INT32_MAX);
    fzb_require(c->local_backlog >= 4096 && c->local_backlog <= INT32_MAX);
    fzb_require(c->max_message >= 4096 && c->max_message <= BN_MAX_MESSAGE);
    fzb_require(c->partial_bytes >= 4096 &&
                c->partial_bytes <= BN_MAX_MESSAGE);
    fzb_require(c->partial_timeout_ms >= 10 &&
                c->partial_timeout_ms <= 3600000);
    fzb_require(c->reconnect_wait_ms >= 10 && c->reconnect_wait_ms <= 600000);
    fzb_require(c->connect_timeout_ms >= 10 &&
                c->connect_timeout_ms <= 600000);
    fzb_require(c->call_timeout_ms >= 10 && c->call_timeout_ms <= 86400000);
    fzb_require(c->max_calls >= 1 && c->max_calls <= 1u << 20);
    fzb_require(c->max_reconnect >= -1);
    fzb_require(c->export_policy == BROKER_SUB_BLOCK ||
                c->export_policy == BROKER_SUB_DROP);
    fzb_require(c->log_level >= BN_LOG_ERROR && c->log_level <= BN_LOG_DEBUG);
}

/* The settings bn_conf_keep_restart keeps are equal in a and b. */
static bool fzb_restart_eq(const bn_conf_t *a, const bn_conf_t *b)
{
    return bn_list_eq(&a->servers, &b->servers) &&
           bn_str_eq(a->socket, b->socket) &&
           !strcmp(a->host, b->host) && !strcmp(a->prefix, b->prefix) &&
           !strcmp(a->name, b->name) && bn_str_eq(a->user, b->user) &&
           bn_str_eq(a->password, b->password) &&
           bn_str_eq(a->token, b->token) && bn_str_eq(a->creds, b->creds) &&
           a->tls == b->tls && a->tls_verify == b->tls_verify &&
           bn_str_eq(a->tls_ca, b->tls_ca) &&
           bn_str_eq(a->tls_cert, b->tls_cert) &&
           bn_str_eq(a->tls_key, b->tls_key) &&
           bn_str_eq(a->tls_hostname, b->tls_hostname) &&
           bn_str_eq(a->tls_ciphers, b->tls_ciphers) &&
           a->reconnect_buffer == b->reconnect_buffer &&
           a->reconnect_wait_ms == b->reconnect_wait_ms &&
           a->max_reconnect == b->max_reconnect &&
           a->connect_timeout_ms == b->connect_timeout_ms &&
           a->import_backlog == b->import_backlog &&
           a->export_policy == b->export_policy;
}

/* Everything bn_conf_read sets, equal in a and b. */
static bool fzb_conf_eq(const bn_conf_t *a, const bn_conf_t *b)
{
    return fzb_restart_eq(a, b) && bn_list_eq(&a->exports, &b->exports) &&
           bn_list_eq(&a->imports, &b->imports) &&
           bn_list_eq(&a->offers, &b->offers) &&
           bn_list_eq(&a->remotes, &b->remotes) &&
           bn_list_eq(&a->groups, &b->groups) &&
           a->call_timeout_ms == b->call_timeout_ms &&
           a->max_calls == b->max_calls &&
           a->local_backlog == b->local_backlog &&
           a->max_message == b->max_message &&
           a->partial_bytes == b->partial_bytes &&
           a->partial_timeout_ms == b->partial_timeout_ms &&
           a->log_level == b->log_level;
}

static void fzb_conf(const uint8_t *data, size_t len, bool cli)
{
    static fzb_conf_t first, second, fresh;
    int fd = memfd_create("fzb-conf", MFD_CLOEXEC);
    size_t plen;

    fzb_require(fd >= 0);
    fzb_require(len == 0 || write(fd, data, len) == (ssize_t)len);
    fzb_conf_parse(fd, cli, &first);
    fzb_conf_parse(fd, cli, &second);
    close(fd);
    plen = strlen(first.c.conffile);
    fzb_require(first.r == second.r && !strcmp(first.err, second.err));
    if (first.r < 0) {
        /* "FILE:LINE: reason" from the lines, "FILE: reason" after them
         * (host, user and password, ...) */
        fzb_require(first.r == -EINVAL && first.err[0]);
        if (!strncmp(first.err, first.c.conffile, plen) &&
            first.err[plen] == ':' && first.err[plen + 1] != ' ') {
            char *end;
            unsigned long line = strtoul(first.err + plen + 1, &end, 10);
            size_t lines = 1;

            for (size_t i = 0; i + 1 < len; i++)
                lines += data[i] == '\n';
            fzb_require(first.err[plen + 1] >= '1' &&
                        first.err[plen + 1] <= '9');
            fzb_require(*end == ':' && line >= 1 && line <= lines);
        }
    } else {
        fzb_require(!first.err[0]);
        fzb_check_conf(&first.c);
        fzb_require(!cli || !strcmp(first.c.socket, FZB_CLI_SOCKET));
        fzb_require(fzb_conf_eq(&first.c, &second.c));
        /* a reload of the same file changes nothing */
        fzb_require(bn_conf_keep_restart(&second.c, &first.c) == 0);
        fzb_require(fzb_conf_eq(&first.c, &second.c));
        /* a reload from the defaults keeps the running restart settings
         * (second now holds first's strings, first second's: equal) */
        bn_conf_defaults(&fresh.c);
        strcpy(fresh.c.host, "fzb");
        fresh.r = bn_conf_read(&fresh.c, fresh.err, sizeof(fresh.err));
        fzb_require(fresh.r == 0);
        fzb_require(bn_conf_keep_restart(&fresh.c, &first.c) >= 0);
        fzb_require(fzb_restart_eq(&fresh.c, &second.c));
        bn_conf_free(&fresh.c);
    }
    bn_conf_free(&first.c);
    bn_conf_free(&second.c);
}

/* ---- the split publications -------------------------------------------- */

/* Reads the script; past its end every byte is 0. */
typedef struct fzb_in {
    const uint8_t *p;
    size_t n;
} fzb_in_t;

static uint8_t fzb_byte(fzb_in_t *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint16_t fzb_u16(fzb_in_t *in)
{
    uint16_t hi = fzb_byte(in);

    return (uint16_t)(hi << 8 | fzb_byte(in));
}

/* At most max bytes of the input as a string (up to a NUL). */
static void fzb_str(fzb_in_t *in, char *buf, size_t max)
{
    size_t n = fzb_byte(in) % (max + 1);

    if (n > in->n)
        n = in->n;
    memcpy(buf, in->p, n);
    buf[n] = '\0';
    in->p += n;
    in->n -= n;
}

static const char *const fzb_origins[] = {
    "hostz", "hosty", "h-1_Z", "", "bad.host", NULL, "h w",
    "h123456789012345678901234567890123456789012345678901234567890ab",
    "h123456789012345678901234567890123456789012345678901234567890abc",
};
#define FZB_NORIGINS (sizeof(fzb_origins) / sizeof(fzb_origins[0]))

static const char *const fzb_topics[] = { "demo.x", "demo.y", "a" };
#define FZB_NTOPICS (sizeof(fzb_topics) / sizeof(fzb_topics[0]))

static const char *const fzb_ids[] = {
    "r1.1", "r1.2", "x", "abc-_.9Z", "", "bad id", "r1/1", "\xc3\xbc",
    "i123456789012345678901234567890123456789012345678901234567890abc",
    "i123456789012345678901234567890123456789012345678901234567890abcd",
};
#define FZB_NIDS (sizeof(fzb_ids) / sizeof(fzb_ids[0]))

/* One step the rejoiner saw that matters to a publication. */
enum { FZB_TAKE, FZB_WHOLE, FZB_TICK };
typedef struct fzb_event {
    int kind;
    uint64_t now;
    /* a take with valid headers or a whole: */
    int origin, topic;
    char id[BN_MAP_ID_MAX + 1];
    uint32_t index, count;
    uint64_t total;
    const char *data;               /* the part's bytes (the message's) */
    size_t len;
    bool refused;                   /* part 1 dropped for its size or for
                                       partial-bytes */
} fzb_event_t;

typedef struct fzb_run {
    bn_bridge_t *br;
    fzb_event_t *ev;
    size_t nev, cap;
    natsMsg **msgs;                 /* kept for their data until the end */
    size_t nmsgs, msgs_cap;
} fzb_run_t;

static fzb_event_t *fzb_event(fzb_run_t *run, int kind)
{
    fzb_event_t *e;

    if (run->nev == run->cap) {
        run->cap = run->cap ? 2 * run->cap : 64;
        run->ev = realloc(run->ev, run->cap * sizeof(*run->ev));
        fzb_require(run->ev);
    }
    e = &run->ev[run->nev++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->now = fzb_clock;
    return e;
}

static void fzb_keep_msg(fzb_run_t *run, natsMsg *m)
{
    if (run->nmsgs == run->msgs_cap) {
        run->msgs_cap = run->msgs_cap ? 2 * run->msgs_cap : 64;
        run->msgs = realloc(run->msgs, run->msgs_cap * sizeof(*run->msgs));
        fzb_require(run->msgs);
    }
    run->msgs[run->nmsgs++] = m;
}

/* The reference rules (brokerd-nats(8), PAYLOADS): a decimal number
 * without sign or leading zeros within max. */
static bool fzb_num(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';

        if (d > 9)
            return false;
        if (v > max / 10 || v * 10 > max - d)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool fzb_id_ok(const char *id)
{
    size_t n = strlen(id);

    if (n == 0 || n > BN_MAP_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Whether (part, id, size) are valid part headers; then the fields. */
static bool fzb_headers_ok(const char *part, const char *id,
                           const char *size, fzb_event_t *e)
{
    const char *slash;
    uint64_t i, n, t;

    if (!part || !id || !size || !fzb_id_ok(id) ||
        !(slash = strchr(part, '/')) ||
        !fzb_num(part, (size_t)(slash - part), UINT32_MAX, &i) ||
        !fzb_num(slash + 1, strlen(slash + 1), UINT32_MAX, &n) ||
        !fzb_num(size, strlen(size), UINT64_MAX, &t) ||
        i < 1 || i > n || n < 2 || n > t)
        return false;
    e->index = (uint32_t)i;
    e->count = (uint32_t)n;
    e->total = t;
    snprintf(e->id, sizeof(e->id), "%s", id);
    return true;
}

static bool fzb_origin_ok(const char *o)
{
    size_t n;

    if (!o || !(n = strlen(o)) || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789-_", o[i]))
            return false;
    return true;
}

/* Whether event k (a valid last part) completes a publication that must
 * be published: *first gets the index of its part 1 in the history (or
 * SIZE_MAX if the parts were not 1..N in order without anything of the
 * same origin on the same topic between them). */
static bool fzb_expect(const fzb_run_t *run, size_t k, size_t *first,
                       size_t *parts, size_t max_parts)
{
    const fzb_event_t *last = &run->ev[k];
    uint32_t want = last->count;
    size_t np = 0;

    *first = SIZE_MAX;
    for (size_t j = k + 1; j-- > 0;) {
        const fzb_event_t *e = &run->ev[j];

        if (e->kind == FZB_TICK || e->origin != last->origin)
            continue;
        if (e->kind == FZB_WHOLE) {
            if (e->topic == last->topic)
                return false;
            continue;
        }
        if (e->topic != last->topic && strcmp(e->id, last->id))
            continue;
        /* of this origin, on this topic or with this id: must be the
         * publication's part `want` */
        if (e->topic != last->topic || strcmp(e->id, last->id) ||
            e->index != want || e->count != last->count ||
            e->total != last->total)
            return false;
        if (np == max_parts)
            return false;
        parts[np++] = j;
        if (--want == 0) {
            *first = j;
            break;
        }
    }
    if (*first == SIZE_MAX)
        return false;
    /* parts[] runs backwards: parts[np - 1] is part 1 */
    for (size_t m = np; m-- > 1;) {
        /* a tick between part m and m+1 that found part m too old */
        for (size_t j = parts[m] + 1; j < parts[m - 1]; j++)
            if (run->ev[j].kind == FZB_TICK &&
                run->ev[j].now - run->ev[parts[m]].now >=
                run->br->conf.partial_timeout_ms)
                return false;
    }
    return true;
}

#define FZB_MAX_PARTS 4096

/* After a valid take (event k): what must have been published. */
static void fzb_check_take(fzb_run_t *run, size_t k)
{
    static size_t parts[FZB_MAX_PARTS];
    const fzb_event_t *last = &run->ev[k];
    size_t first = SIZE_MAX, sum = 0, off = 0;
    size_t np = last->count <= FZB_MAX_PARTS ? last->count : 0;
    bool clean;

    if (last->index != last->count) {
        fzb_require(fzb_out.n == 0);
        return;
    }
    if (!np)                        /* more parts than a script can hold */
        return;
    clean = fzb_expect(run, k, &first, parts, np);
    if (clean)
        for (size_t m = 0; m < np; m++)
            sum += run->ev[parts[m]].len;
    if (!clean || sum != last->total ||
        last->total > run->br->conf.max_message) {
        fzb_require(fzb_out.n == 0);
        return;
    }
    if (run->ev[first].refused) {
        fzb_require(fzb_out.n == 0);
        return;
    }
    /* whole, in order, within the limits: published as it came */
    fzb_require(fzb_out.n == 1);
    fzb_require(!strcmp(fzb_out.topic, fzb_topics[last->topic]));
    fzb_require(fzb_out.len == last->total);
    for (size_t m = np; m-- > 0;) {
        const fzb_event_t *e = &run->ev[parts[m]];

        fzb_require(!memcmp(fzb_out.data + off, e->data, e->len));
        off += e->len;
    }
}

static void fzb_check_state(const bn_bridge_t *br)
{
    fzb_require(br->partial_bytes <= br->conf.partial_bytes);
    fzb_require(bk_list_empty(&br->partials) == (br->npartials == 0));
    fzb_require(br->partial_ids.count == br->npartials);
    fzb_require(br->partial_live.count <= br->npartials);
    fzb_require(br->npartials <= 1024);
}

/* Take one message (its headers already set) from origin oi on topic ti;
 * the message is kept until the end of the input (events point into its
 * data), unless it has no data: then the caller may use it again. */
static void fzb_take(fzb_run_t *run, natsMsg *m, size_t oi, size_t ti,
                     const char *part, const char *id, const char *size)
{
    bn_bridge_t *br = run->br;
    fzb_event_t probe = { 0 };
    uint64_t invalid = br->st.drop_invalid;
    uint64_t refused = br->st.drop_size + br->st.drop_partial_bytes;
    uint64_t joined = br->st.msgs_joined;
    bool ok = fzb_origin_ok(fzb_origins[oi]) &&
              fzb_headers_ok(part, id, size, &probe);

    fzb_require(bn_map_host_ok(fzb_origins[oi] ? fzb_origins[oi] : "") ==
                fzb_origin_ok(fzb_origins[oi]));
    fzb_require(bn_parts_is_part(m) == (part != NULL));
    if (natsMsg_GetDataLength(m) > 0)
        fzb_keep_msg(run, m);
    bn_parts_take(br, fzb_topics[ti], fzb_origins[oi], m);
    fzb_check_state(br);
    fzb_require(br->st.drop_invalid - invalid == (ok ? 0 : 1));
    fzb_require(br->st.msgs_joined - joined == (uint64_t)fzb_out.n);
    if (ok) {
        fzb_event_t *e = fzb_event(run, FZB_TAKE);

        *e = probe;
        e->kind = FZB_TAKE;
        e->now = fzb_clock;
        e->origin = (int)oi;
        e->topic = (int)ti;
        e->len = (size_t)natsMsg_GetDataLength(m);
        e->data = e->len ? natsMsg_GetData(m) : "";
        e->refused = e->index == 1 &&
                     br->st.drop_size + br->st.drop_partial_bytes > refused;
        fzb_check_take(run, run->nev - 1);
    } else {
        fzb_require(fzb_out.n == 0);
    }
    fzb_out_clear();
}

static natsMsg *fzb_msg(const char *data, size_t len)
{
    natsMsg *m = NULL;

    fzb_require(natsMsg_Create(&m, "brokerd.demo", NULL, data,
                               (int)len) == NATS_OK);
    return m;
}

static void fzb_set(natsMsg *m, const char *key, const char *val, bool add)
{
    fzb_require((add ? natsMsgHeader_Add : natsMsgHeader_Set)(m, key, val) ==
                NATS_OK);
}

/* A part with headers from numbers: origin, id, index, count, size,
 * topic, data. */
static void fzb_step_part(fzb_run_t *run, fzb_in_t *in)
{
    size_t oi = fzb_byte(in) % FZB_NORIGINS;
    const char *id = fzb_ids[fzb_byte(in) % FZB_NIDS];
    unsigned index = fzb_byte(in), count = fzb_byte(in);
    unsigned total = fzb_u16(in);
    size_t ti = fzb_byte(in) % FZB_NTOPICS;
    size_t len = fzb_byte(in);
    char part[32], size[32];
    natsMsg *m;

    if (len > in->n)
        len = in->n;
    m = fzb_msg((const char *)in->p, len);
    in->p += len;
    in->n -= len;
    snprintf(part, sizeof(part), "%u/%u", index, count);
    snprintf(size, sizeof(size), "%u", total);
    fzb_set(m, BN_MAP_MSG, id, false);
    fzb_set(m, BN_MAP_PART, part, false);
    fzb_set(m, BN_MAP_SIZE, size, false);
    fzb_take(run, m, oi, ti, part, id, size);
    if (!len)
        natsMsg_Destroy(m);
}

/* A part with raw header values, each present or not, once or twice
 * (natsMsgHeader_Get gives the first). */
static void fzb_step_raw(fzb_run_t *run, fzb_in_t *in)
{
    static const char *const keys[3] = { BN_MAP_PART, BN_MAP_MSG,
                                         BN_MAP_SIZE };
    char vals[3][2][72];
    const char *first[3] = { NULL, NULL, NULL };
    size_t oi = fzb_byte(in) % FZB_NORIGINS;
    size_t ti = fzb_byte(in) % FZB_NTOPICS;
    uint8_t how = fzb_byte(in);
    size_t len = fzb_byte(in);
    natsMsg *m;

    for (int h = 0; h < 3; h++) {
        fzb_str(in, vals[h][0], 70);
        if (how >> (2 * h + 1) & 1)
            fzb_str(in, vals[h][1], 70);
    }
    if (len > in->n)
        len = in->n;
    m = fzb_msg((const char *)in->p, len);
    in->p += len;
    in->n -= len;
    for (int h = 0; h < 3; h++) {
        if (!(how >> (2 * h) & 1))
            continue;
        fzb_set(m, keys[h], vals[h][0], false);
        first[h] = vals[h][0];
        if (how >> (2 * h + 1) & 1)
            fzb_set(m, keys[h], vals[h][1], true);
    }
    fzb_take(run, m, oi, ti, first[0], first[1], first[2]);
    if (!len)
        natsMsg_Destroy(m);
}

/* Many first parts of new publications (ids "f1", "f2", ... of this
 * input), so that the table of BN_PARTS_MAX entries fills up: earlier
 * ones of the same origin and topic die but stay until their timeout.
 * One message without data, its id changed each time: libnats's
 * collector is slow to free thousands. */
#define FZB_MAX_FLOOD 1100
static void fzb_step_flood(fzb_run_t *run, fzb_in_t *in, unsigned *flooded)
{
    uint8_t b = fzb_byte(in);
    /* a full table costs a million strcmps (parts.c's table is a list):
     * only 255 fills it, other values give a few entries */
    unsigned n = b == 255 ? FZB_MAX_FLOOD : b % 16u;
    size_t oi = fzb_byte(in) % FZB_NORIGINS;
    size_t ti = fzb_byte(in) % FZB_NTOPICS;
    char size[16];
    natsMsg *m = fzb_msg("", 0);

    snprintf(size, sizeof(size), "%u", fzb_byte(in) + 2u);
    fzb_set(m, BN_MAP_PART, "1/2", false);
    fzb_set(m, BN_MAP_SIZE, size, false);
    for (unsigned i = 0; i < n && *flooded < FZB_MAX_FLOOD; i++) {
        char id[16];

        snprintf(id, sizeof(id), "f%u", ++*flooded);
        fzb_set(m, BN_MAP_MSG, id, false);
        fzb_take(run, m, oi, ti, "1/2", id, size);
    }
    natsMsg_Destroy(m);
}

static void fzb_step_whole(fzb_run_t *run, fzb_in_t *in)
{
    size_t oi = fzb_byte(in) % FZB_NORIGINS;
    size_t ti = fzb_byte(in) % FZB_NTOPICS;

    bn_parts_whole(run->br, fzb_topics[ti], fzb_origins[oi]);
    fzb_check_state(run->br);
    fzb_require(fzb_out.n == 0);
    /* without an origin (or with a bad one) nothing ends */
    if (fzb_origin_ok(fzb_origins[oi])) {
        fzb_event_t *e = fzb_event(run, FZB_WHOLE);

        e->origin = (int)oi;
        e->topic = (int)ti;
    }
}

static void fzb_step_tick(fzb_run_t *run)
{
    bn_parts_tick(run->br);
    fzb_check_state(run->br);
    fzb_require(fzb_out.n == 0);
    fzb_event(run, FZB_TICK);
}

/* bn_parts_send of len generated bytes with max_payload 2 * ROOM + 1 +
 * room; a part's publish may fail; the parts sent come back in from
 * origin oi on topic ti. */
static void fzb_step_send(fzb_run_t *run, fzb_in_t *in)
{
    bn_bridge_t *br = run->br;
    unsigned room = fzb_byte(in) * 4u;
    size_t len = fzb_u16(in) % 8192;
    uint8_t seed = fzb_byte(in);
    uint8_t fail = fzb_byte(in);
    size_t oi = fzb_byte(in) % FZB_NORIGINS;
    size_t ti = fzb_byte(in) % FZB_NTOPICS;
    static char prev_id[BN_MAP_ID_MAX + 8];
    char *data = malloc(len ? len : 1);
    size_t chunk, count, off = 0;
    int r;

    fzb_require(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)(seed + i * 7 + (i >> 8));
    /* below 2 * ROOM nothing can be sent */
    br->max_payload = (int64_t)(fail & 0x80 ? room : 2 * BN_PART_ROOM + 1 +
                                                     room);
    fzb_fail_at = fail & 0x40 ? (fail & 0x3f) + 1u : 0;
    fzb_nsent = 0;
    r = bn_parts_send(br, fzb_topics[ti], data, len);
    if (br->max_payload <= 2 * BN_PART_ROOM) {
        fzb_require(r == -EMSGSIZE && fzb_nsent == 0);
        goto out;
    }
    chunk = (size_t)br->max_payload - BN_PART_ROOM;
    count = (len + chunk - 1) / chunk;
    if (count < 2 || count > FZB_MAX_SENT) {
        fzb_require(count > FZB_MAX_SENT || r == -EMSGSIZE);
        fzb_require(count > FZB_MAX_SENT || fzb_nsent == 0);
        goto out;
    }
    if (fzb_fail_at && fzb_fail_at <= count) {
        fzb_require(r == -ENOBUFS && fzb_nsent == fzb_fail_at);
    } else {
        fzb_require(r == 0 && fzb_nsent == count);
    }
    for (size_t i = 0; i < fzb_nsent; i++) {
        const fzb_sent_t *s = &fzb_sent[i];

        fzb_require(s->p.index == i + 1 && s->p.count == count &&
                    s->p.total == len);
        fzb_require(!strcmp(s->id, fzb_sent[0].id) && fzb_id_ok(s->id));
        fzb_require(s->len == (i + 1 < count ? chunk : len - off));
        fzb_require(!memcmp(s->data, data + off, s->len));
        off += s->len;
    }
    /* every split publication gets an id of its own */
    fzb_require(strcmp(fzb_sent[0].id, prev_id));
    strcpy(prev_id, fzb_sent[0].id);
    /* what was sent (all or up to the failure) comes in again */
    for (size_t i = 0; i < fzb_nsent; i++) {
        const fzb_sent_t *s = &fzb_sent[i];
        char part[32], size[32];
        natsMsg *m = fzb_msg(s->data, s->len);

        snprintf(part, sizeof(part), "%u/%u", s->p.index, s->p.count);
        snprintf(size, sizeof(size), "%llu", (unsigned long long)s->p.total);
        fzb_set(m, BN_MAP_MSG, s->id, false);
        fzb_set(m, BN_MAP_PART, part, false);
        fzb_set(m, BN_MAP_SIZE, size, false);
        fzb_take(run, m, oi, ti, part, s->id, size);
        if (!s->len)
            natsMsg_Destroy(m);
    }
out:
    fzb_sent_clear();
    free(data);
}

static void fzb_parts(const uint8_t *data, size_t len)
{
    static bn_bridge_t br;
    fzb_in_t in = { data, len };
    fzb_run_t run = { .br = &br };
    size_t steps = 0;
    unsigned flooded = 0;

    memset(&br, 0, sizeof(br));
    bn_conf_defaults(&br.conf);
    /* small limits, so that they matter with small inputs */
    br.conf.max_message = (uint64_t)fzb_byte(&in) * 64;
    br.conf.partial_bytes = (uint64_t)fzb_byte(&in) * 64;
    br.conf.partial_timeout_ms = 10 + (uint32_t)fzb_byte(&in) * 10;
    fzb_clock = 1000000;
    bn_parts_init(&br);
    fzb_require(strlen(br.msg_run) == 16);
    while (in.n && steps++ < 2000) {
        switch (fzb_byte(&in) % 7) {
        case 0: fzb_step_part(&run, &in); break;
        case 1: fzb_step_raw(&run, &in); break;
        case 2: fzb_step_whole(&run, &in); break;
        case 3: fzb_clock += fzb_byte(&in) * 10u; break;
        case 4: fzb_step_tick(&run); break;
        case 5: fzb_step_send(&run, &in); break;
        default: fzb_step_flood(&run, &in, &flooded); break;
        }
    }
    bn_parts_stop(&br);
    fzb_require(bk_list_empty(&br.partials) && br.npartials == 0 &&
                br.partial_bytes == 0 && !br.partial_ids.count &&
                !br.partial_live.count);
    for (size_t i = 0; i < run.nmsgs; i++)
        natsMsg_Destroy(run.msgs[i]);
    free(run.msgs);
    free(run.ev);
    bn_conf_free(&br.conf);
}

/* ---- the entry point ---------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;      /* set up once */

    if (!quiet) {
        bn_log_set_level(BN_LOG_ERROR);     /* reload warnings */
        /* natsMsg_Destroy hands messages to libnats's collector, which
         * nats_Open sets up (the bridge opens it via its connection) */
        fzb_require(nats_Open(-1) == NATS_OK);
        quiet = true;
    }
    if (size == 0)
        return 0;
    if ((data[0] | 0x20) == 'c')
        fzb_conf(data + 1, size - 1, data[0] == 'C');
    else
        fzb_parts(data + 1, size - 1);
    return 0;
}
