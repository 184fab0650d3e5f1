/*
 * monitor.c - brokerctl monitor, and the monitor session it shares with
 * capture (prefix ctl_mon_).
 *
 * A monitor session owns its connection, a ctl_mon_t of counts that the
 * record handler updates (printed on stderr when the session ends), and
 * the session's names (struct ctl_mon_names, allocated by ctl_mon_loop
 * and freed there): the comm of client ids, learnt from LIST_CLIENTS and
 * the $broker.clients announcements the session subscribes to, and per
 * stream end the name or topic it was opened to and the size of the
 * message under way.  Both tables are direct-mapped and bounded: a clash
 * forgets the older entry.  monitor prints each record as a text line or
 * a JSON object on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "frame.h"

#define CTL_MON_PREVIEW 40          /* message bytes shown per record */

/* ---- names: comm of client ids, what each stream is about --------------- */

#define CTL_MON_SLOTS    1024u      /* direct-mapped: a clash forgets one */
#define CTL_MON_LABEL    256u       /* a name or topic, NUL-terminated */
#define CTL_MON_RELIST_NS 1000000000u   /* at most one LIST_CLIENTS a second */
#define CTL_MON_CLIENTS_TOPIC "$broker.clients"

enum { CTL_MON_T_DATA = 3, CTL_MON_T_CLOSE = 4, CTL_MON_T_ERROR = 5,
       CTL_MON_T_GAP = 13 };
enum { CTL_MON_F_MORE = 0x01, CTL_MON_F_CONT = 0x02, CTL_MON_F_OPEN = 0x04,
       CTL_MON_F_NAME = 0x10, CTL_MON_F_SHM = 0x20, CTL_MON_F_TOPIC = 0x40 };
#define CTL_MON_SHM_DESC 24u        /* u32 segid, u32 0, u64 offset, len */

typedef struct ctl_mon_client {
    uint64_t id;                    /* 0: free slot */
    char comm[17];
} ctl_mon_client_t;

/* One end of a stream: (client, its stream id). */
typedef struct ctl_mon_stream {
    uint64_t id;                    /* 0: free slot */
    uint32_t sid;
    const char *key;                /* dest, src, topic or NULL */
    bool size_known;
    uint64_t size;                  /* bytes of the message under way */
    char label[CTL_MON_LABEL];
} ctl_mon_stream_t;

struct ctl_mon_names {
    ctl_mon_client_t clients[CTL_MON_SLOTS];
    ctl_mon_stream_t streams[CTL_MON_SLOTS];
    uint64_t listed_ns;             /* CLOCK_MONOTONIC of the last listing */
};

static ctl_mon_client_t *ctl_mon_client_slot(struct ctl_mon_names *n,
                                             uint64_t id)
{
    return &n->clients[id % CTL_MON_SLOTS];
}

static void ctl_mon_learn(struct ctl_mon_names *n, const char *id,
                          const char *comm)
{
    ctl_mon_client_t *c;
    uint64_t v = ctl_rec_u64(id);
    char *raw;

    if (!v || !comm || !(raw = ctl_rec_unescape(comm, strlen(comm))))
        return;
    c = ctl_mon_client_slot(n, v);
    c->id = v;
    snprintf(c->comm, sizeof(c->comm), "%s", raw);
    free(raw);
}

/* Records of "id=... comm=..." lines (a listing or an announcement). */
static void ctl_mon_learn_text(struct ctl_mon_names *n, char *text)
{
    ctl_rec_t *recs;
    ssize_t k = ctl_rec_parse(text, &recs);

    for (ssize_t i = 0; i < k; i++)
        ctl_mon_learn(n, ctl_rec_get(&recs[i], "id"),
                      ctl_rec_get(&recs[i], "comm"));
    if (k >= 0)
        free(recs);
}

static void ctl_mon_relist(broker_t *b, struct ctl_mon_names *n)
{
    char *text = NULL;
    size_t len;

    n->listed_ns = ctl_now_ns();
    if (broker_list(b, BROKER_CTRL_LIST_CLIENTS, &text, &len) == 0)
        ctl_mon_learn_text(n, text);
    free(text);
}

/* The comm of client id: from the announcements, else from a listing
 * (refreshed at most once a second), else "?". */
static const char *ctl_mon_comm(broker_t *b, struct ctl_mon_names *n,
                                uint64_t id)
{
    ctl_mon_client_t *c;

    if (id == 0)
        return "broker";
    if (!n)
        return "?";
    c = ctl_mon_client_slot(n, id);
    if (c->id != id && ctl_now_ns() - n->listed_ns >= CTL_MON_RELIST_NS)
        ctl_mon_relist(b, n);
    return c->id == id ? c->comm : "?";
}

/* The value of `key` ("id=") in one announcement line t[0..n), or NULL;
 * *len gets its length. */
static const char *ctl_mon_field(const char *t, size_t n, const char *key,
                                 size_t *len)
{
    size_t k = strlen(key);

    for (size_t i = 0; i + k <= n; i++) {
        if ((i == 0 || t[i - 1] == ' ') && !memcmp(t + i, key, k)) {
            const char *v = t + i + k, *end = memchr(v, ' ', n - i - k);
            *len = end ? (size_t)(end - v) : n - i - k;
            while (*len && v[*len - 1] == '\n')
                (*len)--;
            return v;
        }
    }
    return NULL;
}

/* A $broker.clients announcement: remember the comm of a new client (a
 * client that left keeps its slot for the records still to come). */
static void ctl_mon_announce(struct ctl_mon_names *n, const broker_msg_t *m)
{
    static const char connect[] = "event=connect ";
    const char *t = m->data, *id, *comm;
    size_t len = m->len, il, cl;
    char idbuf[24], *raw;
    ctl_mon_client_t *c;
    uint64_t v;

    if (!n || !m->topic || strcmp(m->topic, CTL_MON_CLIENTS_TOPIC) ||
        len < sizeof(connect) - 1 || memcmp(t, connect, sizeof(connect) - 1))
        return;
    if (!(id = ctl_mon_field(t, len, "id=", &il)) || il >= sizeof(idbuf) ||
        !(comm = ctl_mon_field(t, len, "comm=", &cl)))
        return;
    memcpy(idbuf, id, il);
    idbuf[il] = '\0';
    if (!(v = ctl_rec_u64(idbuf)) || !(raw = ctl_rec_unescape(comm, cl)))
        return;
    c = ctl_mon_client_slot(n, v);
    c->id = v;
    snprintf(c->comm, sizeof(c->comm), "%s", raw);
    free(raw);
}

static ctl_mon_stream_t *ctl_mon_stream_slot(struct ctl_mon_names *n,
                                             uint64_t id, uint32_t sid)
{
    uint64_t h = (id * 0x9E3779B97F4A7C15u) ^ (sid * 0xC2B2AE3D27D4EB4Fu);

    return &n->streams[(h >> 32) % CTL_MON_SLOTS];
}

/* The slot of (id, sid) if it holds that stream end; with `claim`, the
 * slot taken over for it (forgetting what it held) otherwise. */
static ctl_mon_stream_t *ctl_mon_stream(struct ctl_mon_names *n,
                                        uint64_t id, uint32_t sid,
                                        bool claim)
{
    ctl_mon_stream_t *s;

    if (!n || id == 0)
        return NULL;
    s = ctl_mon_stream_slot(n, id, sid);
    if (s->id == id && s->sid == sid)
        return s;
    if (!claim)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->sid = sid;
    return s;
}

static void ctl_mon_label(ctl_mon_stream_t *s, const char *key,
                          const uint8_t *p, size_t n)
{
    if (!s)
        return;
    if (n >= CTL_MON_LABEL)
        n = CTL_MON_LABEL - 1;
    memcpy(s->label, p, n);
    s->label[n] = '\0';
    s->key = key;
}

/* ---- one record, decoded with what the session knows -------------------- */

static uint64_t ctl_mon_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The name or topic a first fragment starts with, and the message bytes
 * after it. */
static void ctl_mon_split(ctl_mon_view_t *v, uint32_t *skip)
{
    const broker_monitor_rec_t *r = &v->rec;

    *skip = 0;
    if (r->type == CTL_MON_T_DATA && !(r->flags & CTL_MON_F_CONT) &&
        (r->flags & (CTL_MON_F_NAME | CTL_MON_F_TOPIC)))
        *skip = r->aux <= r->length ? r->aux : r->length;
    v->frag = r->length - *skip;
    v->shown = r->captured > *skip ? r->captured - *skip : 0;
    v->body = r->preview + (r->captured > *skip ? *skip : r->captured);
}

/* A first fragment: the stream's label and the message's size start. */
static void ctl_mon_first(ctl_mon_view_t *v, struct ctl_mon_names *n,
                          uint32_t skip)
{
    const broker_monitor_rec_t *r = &v->rec;
    ctl_mon_stream_t *to = ctl_mon_stream(n, r->receiver,
                                          r->receiver_stream, true);
    size_t lab = skip < r->captured ? skip : r->captured;

    if (to && (r->flags & (CTL_MON_F_OPEN | CTL_MON_F_NAME |
                           CTL_MON_F_TOPIC)))
        to->key = NULL;         /* a new stream: forget the old label */
    if (r->flags & CTL_MON_F_NAME) {
        ctl_mon_label(to, "dest", r->preview, lab);
        /* the answers come back to the sender's end under the name */
        if (r->sender_stream)
            ctl_mon_label(ctl_mon_stream(n, r->sender, r->sender_stream,
                                         true), "src", r->preview, lab);
    } else if (r->flags & CTL_MON_F_TOPIC) {
        ctl_mon_label(to, "topic", r->preview, lab);
    }
    v->size = v->frag;
    v->size_known = true;
    if ((r->flags & CTL_MON_F_SHM) && v->shown >= CTL_MON_SHM_DESC)
        v->size = ctl_mon_le64(v->body + 16);
    if (to) {
        to->size = v->size;
        to->size_known = true;
    }
}

static void ctl_mon_fill(broker_t *b, ctl_mon_t *mon, ctl_mon_view_t *v)
{
    struct ctl_mon_names *n = mon->names;
    const broker_monitor_rec_t *r = &v->rec;
    ctl_mon_stream_t *s;
    uint32_t skip;

    ctl_mon_split(v, &skip);
    v->size = v->frag;
    v->size_known = true;
    v->more = r->type == CTL_MON_T_DATA && (r->flags & CTL_MON_F_MORE);
    if (r->type == CTL_MON_T_DATA && !(r->flags & CTL_MON_F_CONT)) {
        ctl_mon_first(v, n, skip);
    } else if (r->type == CTL_MON_T_DATA) {
        s = ctl_mon_stream(n, r->receiver, r->receiver_stream, false);
        v->size_known = s && s->size_known;
        if (s)
            v->size = s->size += v->frag;
    }
    s = ctl_mon_stream(n, r->receiver, r->receiver_stream, false);
    v->dest_key = s ? s->key : NULL;
    v->dest = s ? s->label : NULL;
    v->from_comm = ctl_mon_comm(b, n, r->sender);
    v->to_comm = ctl_mon_comm(b, n, r->receiver);
}

bool ctl_mon_take(broker_t *b, ctl_mon_t *mon, const broker_msg_t *m,
                  ctl_mon_view_t *v)
{
    if (m->kind == BROKER_MSG_DATA && (m->flags & BROKER_MSGF_TOPIC)) {
        ctl_mon_announce(mon->names, m);
        return false;
    }
    if (m->kind != BROKER_MSG_MONITOR || broker_monitor_parse(m, &v->rec) < 0)
        return false;
    mon->records++;
    mon->dropped += (uint64_t)m->code;
    ctl_mon_fill(b, mon, v);
    return true;
}

/* Learn comm names from now on: the announcements of new clients first,
 * then the clients already there (so that none falls in between), all
 * before the monitor starts: a client the monitor shows was either listed
 * or announced before its first record.  A broker that refuses the
 * subscription leaves the listings alone. */
static int ctl_mon_names_start(broker_t *b, ctl_mon_t *mon)
{
    uint32_t id;

    if (!(mon->names = calloc(1, sizeof(*mon->names))))
        return -ENOMEM;
    (void)broker_subscribe(b, CTL_MON_CLIENTS_TOPIC, NULL, BROKER_SUB_DROP,
                           &id);
    ctl_mon_relist(b, mon->names);
    return 0;
}

int ctl_mon_loop(const ctl_opts_t *o, const char *verb, const char *filter,
                 ctl_handle_fn fn, ctl_mon_t *mon)
{
    char path[CTL_PATH_MAX];
    broker_t *b;
    int r;

    if (!(b = ctl_start(o, path, sizeof(path))))
        return CTL_EXIT_RUNTIME;
    /* names first: a client that connects, sends and leaves before the
     * monitor starts is neither announced nor listed, but its records are
     * not seen either */
    if ((r = ctl_mon_names_start(b, mon)) < 0) {
        ctl_err("%s: %s", verb, broker_strerror(r));
        broker_close(b);
        return CTL_EXIT_RUNTIME;
    }
    if ((r = broker_monitor(b, filter, o->snap)) < 0) {
        ctl_err("%s %s: %s", verb, path, r == -EINVAL ?
                "invalid filter (name:PATTERN, id:N or topic:PATTERN)" :
                ctl_priv_strerror(r));
        broker_close(b);
        free(mon->names);
        mon->names = NULL;
        return CTL_EXIT_RUNTIME;
    }
    r = ctl_event_loop(b, fn, mon);
    broker_close(b);
    free(mon->names);
    mon->names = NULL;
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
    case CTL_MON_T_DATA: return "DATA";
    case CTL_MON_T_CLOSE: return "CLOSE";
    case CTL_MON_T_ERROR: return "ERROR";
    case CTL_MON_T_GAP: return "GAP";
    default: return "OTHER";
    }
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

void ctl_mon_escape(const uint8_t *p, size_t n, size_t max, bool more,
                    char *buf, size_t len, bool keep_space)
{
    size_t k = n < max ? n : max, o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < k && o + 5 < len; i++) {
        unsigned char c = p[i];
        if (c == '\\')
            o += (size_t)snprintf(buf + o, len - o, "\\\\");
        else if (c > 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else if (c == ' ' && keep_space)
            buf[o++] = ' ';
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
        buf[o] = '\0';
    }
    if ((k < n || more) && o + 4 < len)
        snprintf(buf + o, len - o, "...");
}

/* Escaped preview of the message bytes; a shared-memory descriptor is
 * spelled out instead. */
static void ctl_mon_preview(const ctl_mon_view_t *v, char *buf, size_t len)
{
    const uint8_t *d = v->body;

    if (v->rec.type == CTL_MON_T_DATA && (v->rec.flags & CTL_MON_F_SHM) &&
        v->shown >= CTL_MON_SHM_DESC) {
        snprintf(buf, len, "[shm segment=%u offset=%" PRIu64 " length=%"
                 PRIu64 "]", (unsigned)(d[0] | d[1] << 8 | d[2] << 16 |
                                        (uint32_t)d[3] << 24),
                 ctl_mon_le64(d + 8), ctl_mon_le64(d + 16));
        return;
    }
    ctl_mon_escape(d, v->shown, CTL_MON_PREVIEW, v->shown < v->frag, buf,
                   len, true);
}

/* "12", "65500+" (more fragments follow) or "?" (start not seen). */
static void ctl_mon_size(const ctl_mon_view_t *v, char *buf, size_t len)
{
    if (!v->size_known)
        snprintf(buf, len, "?");
    else
        snprintf(buf, len, "%" PRIu64 "%s", v->size, v->more ? "+" : "");
}

static void ctl_mon_print_json(const ctl_mon_view_t *v, const char *tbuf,
                               const char *fbuf, const char *pbuf,
                               int dropped)
{
    const broker_monitor_rec_t *r = &v->rec;

    printf("{\"time\":\"%s\",\"time_ns\":%" PRIu64 ",\"type\":\"%s\","
           "\"flags\":\"%s\",\"sender\":%" PRIu64 ",\"sender_comm\":",
           tbuf, r->time_ns, ctl_mon_type(r->type), fbuf, r->sender);
    ctl_out_json_string(stdout, v->from_comm);
    printf(",\"receiver\":%" PRIu64 ",\"receiver_comm\":", r->receiver);
    ctl_out_json_string(stdout, v->to_comm);
    printf(",\"sender_stream\":%" PRIu32 ",\"receiver_stream\":%" PRIu32,
           r->sender_stream, r->receiver_stream);
    if (v->size_known)
        printf(",\"size\":%" PRIu64, v->size);
    else
        fputs(",\"size\":null", stdout);
    printf(",\"frag\":%" PRIu32 ",\"more\":%s,\"captured\":%zu,\"aux\":%"
           PRIu32 ",\"dropped\":%d,\"preview\":", v->frag,
           v->more ? "true" : "false", v->shown, r->aux, dropped);
    ctl_out_json_string(stdout, pbuf);
    if (v->dest_key) {
        printf(",\"%s\":", v->dest_key);
        ctl_out_json_string(stdout, v->dest);
    }
    puts("}");
}

static void ctl_mon_print_text(const ctl_mon_view_t *v, const char *tbuf,
                               const char *fbuf, const char *pbuf)
{
    const broker_monitor_rec_t *r = &v->rec;
    char from[80], to[80], dest[4 * CTL_MON_LABEL + 8];
    char lab[4 * CTL_MON_LABEL + 16], size[32];

    ctl_mon_escape((const uint8_t *)v->from_comm, strlen(v->from_comm), 16,
                   false, from, sizeof(from), false);
    ctl_mon_escape((const uint8_t *)v->to_comm, strlen(v->to_comm), 16,
                   false, to, sizeof(to), false);
    lab[0] = '\0';
    if (v->dest_key) {
        ctl_mon_escape((const uint8_t *)v->dest, strlen(v->dest),
                       CTL_MON_LABEL, false, dest, sizeof(dest), false);
        snprintf(lab, sizeof(lab), " %s=%s", v->dest_key, dest);
    }
    ctl_mon_size(v, size, sizeof(size));
    printf("%s %s %s %" PRIu64 "(%s) -> %" PRIu64 "(%s)%s stream=0x%" PRIx32
           "->0x%" PRIx32 " size=%s frag=%" PRIu32 " %s\n", tbuf,
           ctl_mon_type(r->type), fbuf, r->sender, from, r->receiver, to,
           lab, r->sender_stream, r->receiver_stream, size, v->frag, pbuf);
}

static int ctl_mon_print(broker_t *b, broker_msg_t *m, void *ctx)
{
    char tbuf[32], fbuf[48], pbuf[4 * CTL_MON_PREVIEW + 80];
    ctl_mon_t *mon = ctx;
    ctl_mon_view_t v;

    if (!ctl_mon_take(b, mon, m, &v))
        return 0;
    ctl_mon_time(v.rec.time_ns, tbuf, sizeof(tbuf));
    bk_flags_str(v.rec.flags, fbuf, sizeof(fbuf));
    ctl_mon_preview(&v, pbuf, sizeof(pbuf));
    if (mon->json)
        ctl_mon_print_json(&v, tbuf, fbuf, pbuf, m->code);
    else
        ctl_mon_print_text(&v, tbuf, fbuf, pbuf);
    return fflush(stdout) == EOF ? -errno : 0;
}

int ctl_run_monitor(const ctl_opts_t *o)
{
    ctl_mon_t mon = { .json = o->json };

    return ctl_mon_loop(o, "monitor", o->nargs ? o->args[0] : NULL,
                        ctl_mon_print, &mon);
}
