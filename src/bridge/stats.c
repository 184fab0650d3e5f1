/*
 * stats.c - the bridge's counters, rates and status text (prefix
 * bn_stats_).  The status text is what `brokerctl bridge` shows: one
 * "key=value" line per item, lists comma-separated (brokerd-nats(8),
 * "STATUS").
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bridge.h"
#include "log.h"

uint64_t bn_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void bn_stats_tick(bn_bridge_t *br)
{
    bn_stats_t *s = &br->st;
    uint64_t now = bn_now_ms(), dt = now - s->rate_at_ms;

    if (dt < 500)
        return;
    s->rate_out = (double)(s->msgs_out - s->rate_msgs_out) * 1000.0 /
                  (double)dt;
    s->rate_in = (double)(s->msgs_in - s->rate_msgs_in) * 1000.0 /
                 (double)dt;
    s->rate_msgs_out = s->msgs_out;
    s->rate_msgs_in = s->msgs_in;
    s->rate_at_ms = now;
}

void bn_stats_drop(bn_bridge_t *br, uint64_t *counter, const char *what,
                   const char *where)
{
    (*counter)++;
    bn_log(*counter == 1 ? BN_LOG_WARN : BN_LOG_DEBUG,
           "not bridged (%s): %s%s", what, where,
           *counter == 1 ? " (further ones are counted)" : "");
}

/* A growing text buffer; on no memory it stays NULL. */
typedef struct bn_text {
    char *buf;
    size_t len, cap;
} bn_text_t;

__attribute__((format(printf, 2, 3)))
static void bn_text_add(bn_text_t *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!t->buf)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            free(t->buf);
            t->buf = NULL;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        char *nb = realloc(t->buf, t->cap * 2 + (size_t)n);
        if (!nb) {
            free(t->buf);
            t->buf = NULL;
            return;
        }
        t->buf = nb;
        t->cap = t->cap * 2 + (size_t)n;
    }
}

static void bn_text_list(bn_text_t *t, const char *key, char *const *v,
                         size_t n)
{
    bn_text_add(t, "%s=", key);
    for (size_t i = 0; i < n; i++)
        bn_text_add(t, "%s%s", i ? "," : "", v[i]);
    bn_text_add(t, "\n");
}

/* Messages libnats dropped for its subscriptions (slow consumers). */
static uint64_t bn_stats_slow(const bn_bridge_t *br)
{
    uint64_t sum = br->st.drop_slow_consumer;
    int64_t d;

    for (size_t i = 0; i < br->nimports; i++)
        if (br->imports[i].sub &&
            natsSubscription_GetDropped(br->imports[i].sub, &d) == NATS_OK)
            sum += (uint64_t)d;
    for (size_t i = 0; i < BN_MAX_LIST; i++)
        if (br->groups[i].nsub &&
            natsSubscription_GetDropped(br->groups[i].nsub, &d) == NATS_OK)
            sum += (uint64_t)d;
    for (size_t i = 0; i < br->noffers; i++)
        if (br->offers[i].sub &&
            natsSubscription_GetDropped(br->offers[i].sub, &d) == NATS_OK)
            sum += (uint64_t)d;
    return sum;
}

/* group_server: the group connection's server, "reconnecting" or "-";
 * group_members=GROUP:N[+] for each import-group whose gateway is in
 * place: its members here, + while its NATS queue subscription is up. */
static void bn_stats_groups(bn_text_t *t, const bn_bridge_t *br)
{
    bool first = true;
    char url[256] = "-";

    if (br->gnc &&
        natsConnection_Status(br->gnc) == NATS_CONN_STATUS_CONNECTED)
        natsConnection_GetConnectedUrl(br->gnc, url, sizeof(url));
    else if (br->gnc)
        snprintf(url, sizeof(url), "reconnecting");
    bn_text_add(t, "group_server=%s\n", url);
    bn_text_add(t, "group_members=");
    for (size_t i = 0; i < BN_MAX_LIST; i++) {
        const bn_group_t *g = &br->groups[i];

        if (!g->key || !g->sub_id)
            continue;
        bn_text_add(t, "%s%s:%u%s", first ? "" : ",", g->name,
                    (unsigned)g->members, g->nsub ? "+" : "");
        first = false;
    }
    bn_text_add(t, "\n");
}

static void bn_stats_config(bn_text_t *t, const bn_bridge_t *br)
{
    char *names[BN_MAX_REMOTES];

    bn_text_add(t, "host=%s\nprefix=%s\nname=%s\n", br->conf.host,
                br->conf.prefix, br->conf.name);
    bn_text_add(t, "state=%s\nserver=%s\n", br->state,
                br->server[0] && br->nc ? br->server : "-");
    bn_text_list(t, "servers", br->conf.servers.v, br->conf.servers.n);
    bn_text_add(t, "max_payload=%lld\nmax_message=%llu\n",
                (long long)br->max_payload,
                (unsigned long long)br->conf.max_message);
    bn_text_list(t, "exports", br->conf.exports.v, br->conf.exports.n);
    bn_text_list(t, "imports", br->conf.imports.v, br->conf.imports.n);
    bn_text_list(t, "import_groups", br->conf.groups.v, br->conf.groups.n);
    bn_stats_groups(t, br);
    bn_text_list(t, "offers", br->conf.offers.v, br->conf.offers.n);
    for (size_t i = 0; i < br->nremotes; i++)
        names[i] = br->remotes[i].name;
    bn_text_list(t, "remotes", names, br->nremotes);
}

static void bn_stats_counts(bn_text_t *t, const bn_bridge_t *br)
{
    const bn_stats_t *s = &br->st;
    uint64_t slow = bn_stats_slow(br);
    uint64_t drops = s->drop_size + s->drop_incomplete +
                     s->drop_partial_bytes + s->drop_fds +
                     s->drop_disconnected +
                     s->drop_reconnect_buffer + slow + s->drop_backlog +
                     s->drop_local_backlog + s->drop_gap + s->drop_invalid +
                     s->drop_group + s->drop_refused;

    bn_text_add(t, "msgs_out=%llu\nbytes_out=%llu\nmsgs_in=%llu\n"
                "bytes_in=%llu\n", (unsigned long long)s->msgs_out,
                (unsigned long long)s->bytes_out,
                (unsigned long long)s->msgs_in,
                (unsigned long long)s->bytes_in);
    bn_text_add(t, "rate_out=%.1f\nrate_in=%.1f\n", s->rate_out, s->rate_in);
    bn_text_add(t, "msgs_split=%llu\nmsgs_joined=%llu\npartials=%zu\n"
                "partial_bytes=%llu\n", (unsigned long long)s->msgs_split,
                (unsigned long long)s->msgs_joined, br->npartials,
                (unsigned long long)br->partial_bytes);
    bn_text_add(t, "group_out=%llu\ngroup_in=%llu\ngroup_kept=%llu\n"
                "group_parts_skipped=%llu\n",
                (unsigned long long)s->group_out,
                (unsigned long long)s->group_in,
                (unsigned long long)s->group_kept,
                (unsigned long long)s->group_parts_skipped);
    bn_text_add(t, "calls_out=%llu\ncalls_out_failed=%llu\ncalls_in=%llu\n"
                "calls_in_failed=%llu\ncalls_pending=%zu\nsends_out=%llu\n"
                "sends_in=%llu\n", (unsigned long long)s->calls_out,
                (unsigned long long)s->calls_out_failed,
                (unsigned long long)s->calls_in,
                (unsigned long long)s->calls_in_failed,
                br->ncalls_out + br->ncalls_in,
                (unsigned long long)s->sends_out,
                (unsigned long long)s->sends_in);
    bn_text_add(t, "drops=%llu\ndrop_size=%llu\ndrop_incomplete=%llu\n"
                "drop_partial_bytes=%llu\ndrop_fds=%llu\n"
                "drop_disconnected=%llu\ndrop_reconnect_buffer=%llu\n"
                "drop_slow_consumer=%llu\ndrop_backlog=%llu\n"
                "drop_local_backlog=%llu\ndrop_gap=%llu\n"
                "drop_invalid=%llu\ndrop_group=%llu\ndrop_refused=%llu\n"
                "loop_skipped=%llu\n",
                (unsigned long long)drops, (unsigned long long)s->drop_size,
                (unsigned long long)s->drop_incomplete,
                (unsigned long long)s->drop_partial_bytes,
                (unsigned long long)s->drop_fds,
                (unsigned long long)s->drop_disconnected,
                (unsigned long long)s->drop_reconnect_buffer,
                (unsigned long long)slow,
                (unsigned long long)s->drop_backlog,
                (unsigned long long)s->drop_local_backlog,
                (unsigned long long)s->drop_gap,
                (unsigned long long)s->drop_invalid,
                (unsigned long long)s->drop_group,
                (unsigned long long)s->drop_refused,
                (unsigned long long)s->loop_skipped);
    bn_text_add(t, "disconnects=%llu\nreconnects=%llu\nuptime_ms=%llu\n",
                (unsigned long long)s->disconnects,
                (unsigned long long)s->reconnects,
                (unsigned long long)(bn_now_ms() - s->started_ms));
}

char *bn_stats_text(const bn_bridge_t *br, size_t *len)
{
    bn_text_t t = { .buf = malloc(4096), .cap = 4096 };

    if (t.buf)
        t.buf[0] = '\0';
    bn_stats_config(&t, br);
    bn_stats_counts(&t, br);
    *len = t.buf ? t.len : 0;
    return t.buf;
}
