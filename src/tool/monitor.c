/*
 * monitor.c - brokerctl monitor, and the monitor session it shares with
 * capture (prefix ctl_mon_).
 *
 * A monitor session owns its connection and a ctl_mon_t of counts that
 * the record handler updates; the counts are printed on stderr when the
 * session ends.  monitor prints each record as a text line or a JSON
 * object on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

#define CTL_MON_PREVIEW 40          /* message bytes shown per record */

/* ---- the session -------------------------------------------------------- */

bool ctl_mon_take(ctl_mon_t *mon, const broker_msg_t *m,
                  broker_monitor_rec_t *r)
{
    if (m->kind != BROKER_MSG_MONITOR || broker_monitor_parse(m, r) < 0)
        return false;
    mon->records++;
    mon->dropped += (uint64_t)m->code;
    return true;
}

int ctl_mon_loop(const ctl_opts_t *o, const char *verb, const char *filter,
                 ctl_handle_fn fn, ctl_mon_t *mon)
{
    char path[CTL_PATH_MAX];
    broker_t *b;
    int r;

    if (!(b = ctl_start(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    if ((r = broker_monitor(b, filter, o->snap)) < 0) {
        ctl_err("%s %s: %s", verb, path, r == -EINVAL ?
                "invalid filter (name:PATTERN, id:N or topic:PATTERN)" :
                ctl_priv_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_event_loop(b, fn, mon);
    broker_close(b);
    fprintf(stderr, "%" PRIu64 " records, %" PRIu64 " dropped\n",
            mon->records, mon->dropped);
    if (r < 0) {
        ctl_err("%s: %s", verb, r == -ECONNRESET ?
                "lost the connection to brokerd" : broker_strerror(r));
        return CTL_EXIT_RUNTIME;
    }
    return CTL_EXIT_OK;
}

/* ---- one record as text ------------------------------------------------- */

static const char *ctl_mon_type(uint8_t type)
{
    switch (type) {
    case 3: return "DATA";
    case 4: return "CLOSE";
    case 5: return "ERROR";
    case 13: return "GAP";
    default: return "OTHER";
    }
}

/* Frame flags as words joined by ',' ("-" for none). */
static void ctl_mon_flags(uint8_t flags, char *buf, size_t len)
{
    static const char *const names[] = {
        "MORE", "CONT", "OPEN", "CLOSE", "NAME", "SHM", "TOPIC",
    };
    size_t n = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & (1u << i))
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "," : "",
                                  names[i]);
    if (n == 0)
        snprintf(buf, len, "-");
}

static void ctl_mon_time(uint64_t ns, char *buf, size_t len)
{
    time_t sec = (time_t)(ns / 1000000000u);
    struct tm tm;

    if (!localtime_r(&sec, &tm)) {
        snprintf(buf, len, "?");
        return;
    }
    snprintf(buf, len, "%02d:%02d:%02d.%06u", tm.tm_hour, tm.tm_min,
             tm.tm_sec, (unsigned)(ns % 1000000000u / 1000u));
}

#define CTL_MON_F_PREFIXED 0x50     /* NAME, TOPIC: aux bytes lead */
#define CTL_MON_F_TOPIC    0x40

/* The message bytes of a record (after a destination name or a topic)
 * and how many there were in the original frame. */
static const uint8_t *ctl_mon_body(const broker_monitor_rec_t *r,
                                   size_t *shown, uint32_t *size)
{
    uint32_t skip = 0;

    if (r->type == 3 && (r->flags & CTL_MON_F_PREFIXED))
        skip = r->aux <= r->length ? r->aux : r->length;
    *size = r->length - skip;
    *shown = r->captured > skip ? r->captured - skip : 0;
    return r->preview + (r->captured > skip ? skip : r->captured);
}

/* Escaped preview text of at most CTL_MON_PREVIEW bytes into buf. */
static void ctl_mon_preview(const uint8_t *p, size_t shown, uint32_t size,
                            char *buf, size_t len)
{
    size_t n = shown < CTL_MON_PREVIEW ? shown : CTL_MON_PREVIEW, o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && o + 5 < len; i++) {
        unsigned char c = p[i];
        if (c == '\\')
            o += (size_t)snprintf(buf + o, len - o, "\\\\");
        else if (c >= 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
        buf[o] = '\0';
    }
    if (n < size && o + 4 < len)
        snprintf(buf + o, len - o, "...");
}

/* A publication's topic as far as it was captured ("" for others). */
static void ctl_mon_topic(const broker_monitor_rec_t *r, char *buf,
                          size_t len)
{
    size_t n = 0;

    if (r->type == 3 && (r->flags & CTL_MON_F_TOPIC)) {
        n = r->aux < r->captured ? r->aux : r->captured;
        if (n >= len)
            n = len - 1;
        memcpy(buf, r->preview, n);
    }
    buf[n] = '\0';
}

static int ctl_mon_print(broker_t *b, broker_msg_t *m, void *ctx)
{
    char tbuf[32], fbuf[48], pbuf[4 * CTL_MON_PREVIEW + 8], topic[256];
    ctl_mon_t *mon = ctx;
    broker_monitor_rec_t r;
    const uint8_t *body;
    size_t shown;
    uint32_t size;

    (void)b;
    if (!ctl_mon_take(mon, m, &r))
        return 0;
    ctl_mon_time(r.time_ns, tbuf, sizeof(tbuf));
    ctl_mon_flags(r.flags, fbuf, sizeof(fbuf));
    body = ctl_mon_body(&r, &shown, &size);
    ctl_mon_preview(body, shown, size, pbuf, sizeof(pbuf));
    ctl_mon_topic(&r, topic, sizeof(topic));
    if (mon->json) {
        printf("{\"time\":\"%s\",\"time_ns\":%" PRIu64 ",\"type\":\"%s\","
               "\"flags\":\"%s\",\"sender\":%" PRIu64 ",\"receiver\":%"
               PRIu64 ",\"sender_stream\":%" PRIu32 ",\"receiver_stream\":%"
               PRIu32 ",\"size\":%" PRIu32 ",\"captured\":%zu,\"aux\":%"
               PRIu32 ",\"dropped\":%d,\"preview\":", tbuf, r.time_ns,
               ctl_mon_type(r.type), fbuf, r.sender, r.receiver,
               r.sender_stream, r.receiver_stream, size, shown, r.aux,
               m->code);
        ctl_out_json_string(stdout, pbuf);
        if (*topic) {
            fputs(",\"topic\":", stdout);
            ctl_out_json_string(stdout, topic);
        }
        puts("}");
    } else {
        printf("%s %s %s %" PRIu64 " -> %" PRIu64 " stream=%" PRIu32 "->%"
               PRIu32 " size=%" PRIu32 "%s%s %s\n", tbuf,
               ctl_mon_type(r.type), fbuf, r.sender, r.receiver,
               r.sender_stream, r.receiver_stream, size,
               *topic ? " topic=" : "", topic, pbuf);
    }
    return fflush(stdout) == EOF ? -errno : 0;
}

int ctl_run_monitor(const ctl_opts_t *o)
{
    ctl_mon_t mon = { .json = o->json };

    return ctl_mon_loop(o, "monitor", o->nargs ? o->args[0] : NULL,
                        ctl_mon_print, &mon);
}
