/*
 * monitor.c - the list of monitor connections, their filters, and building
 * MONITOR records for the frames the router delivers.
 *
 * The list is process-wide (brokerd runs one server); it is short, so a
 * tap walks it once per frame, and not at all when it is empty.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "frame.h"
#include "monitor.h"
#include "server.h"
#include "topic.h"

typedef enum mon_kind {
    MON_ALL,
    MON_NAME,                   /* exact name, or prefix if `prefix` */
    MON_ID,
    MON_TOPIC,                  /* publications whose topic matches name */
} mon_kind_t;

typedef struct bk_mon {
    bk_list_t link;             /* on srv->monitors */
    bk_port_t *port;
    mon_kind_t kind;
    bool prefix;
    uint64_t id;
    uint32_t snap;
    uint32_t dropped;           /* records lost since the last one sent */
    size_t namelen;
    char name[BK_MAX_NAME + 1];
} bk_mon_t;


/* ---- the filter ------------------------------------------------------- */

static bool word_is(const uint8_t *w, size_t n, const char *key)
{
    size_t k = strlen(key);

    return n >= k && memcmp(w, key, k) == 0;
}

/* Decimal u64 in w[0..n), no sign, no leading junk. */
static int parse_u64(const uint8_t *w, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (w[i] < '0' || w[i] > '9')
            return -EINVAL;
        if (v > (UINT64_MAX - (w[i] - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (w[i] - '0');
    }
    if (v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_name(bk_mon_t *m, const uint8_t *w, size_t n)
{
    m->prefix = n && w[n - 1] == '*';
    if (m->prefix)
        n--;
    if (n == 0 && !m->prefix)
        return -EINVAL;
    if (n && !bk_name_valid((const char *)w, n, BK_MAX_NAME))
        return -EINVAL;
    memcpy(m->name, w, n);
    m->name[n] = '\0';
    m->namelen = n;
    m->kind = MON_NAME;
    return 0;
}

static int parse_topic(bk_mon_t *m, const uint8_t *w, size_t n)
{
    if (!bk_topic_pattern_valid((const char *)w, n) ||
        n >= sizeof(m->name))
        return -EINVAL;
    memcpy(m->name, w, n);
    m->name[n] = '\0';
    m->namelen = n;
    m->kind = MON_TOPIC;
    return 0;
}

/* One word of the request: name:PATTERN, id:N, topic:PATTERN or snap:N. */
static int parse_word(bk_mon_t *m, const uint8_t *w, size_t n, bool *filt,
                      bool *snap)
{
    uint64_t v;

    if (word_is(w, n, "snap:")) {
        if (*snap || parse_u64(w + 5, n - 5, BK_MON_MAX_SNAP, &v) < 0)
            return -EINVAL;
        m->snap = (uint32_t)v;
        *snap = true;
        return 0;
    }
    if (*filt)
        return -EINVAL;
    *filt = true;
    if (word_is(w, n, "name:"))
        return parse_name(m, w + 5, n - 5);
    if (word_is(w, n, "topic:"))
        return parse_topic(m, w + 6, n - 6);
    if (word_is(w, n, "id:")) {
        if (parse_u64(w + 3, n - 3, UINT64_MAX, &v) < 0 || v == 0)
            return -EINVAL;
        m->kind = MON_ID;
        m->id = v;
        return 0;
    }
    return -EINVAL;
}

static int parse_filter(bk_mon_t *m, const uint8_t *req, size_t len)
{
    bool filt = false, snap = false;
    size_t i = 0;

    m->kind = MON_ALL;
    m->snap = BK_MON_DEF_SNAP;
    while (i < len) {
        size_t j = i;
        int r;

        while (j < len && req[j] != ' ')
            j++;
        if (j == i)
            return -EINVAL;     /* empty word: leading or double space */
        r = parse_word(m, req + i, j - i, &filt, &snap);
        if (r < 0)
            return r;
        i = j < len ? j + 1 : j;
        if (j < len && i == len)
            return -EINVAL;     /* trailing space */
    }
    return 0;
}

static bk_mon_t *find(const bk_port_t *p)
{
    bk_mon_t *m;

    bk_list_for_each(m, &p->srv->monitors, bk_mon_t, link)
        if (m->port == p)
            return m;
    return NULL;
}

int bk_mon_add(bk_port_t *p, const uint8_t *req, size_t len)
{
    bk_mon_t tmp = { .port = p }, *m;
    int r = parse_filter(&tmp, req, len);

    if (r < 0)
        return r;
    m = find(p);
    if (m) {                    /* a new filter; the place and count stay */
        tmp.link = m->link;
        tmp.dropped = m->dropped;
        *m = tmp;
        return 0;
    }
    m = malloc(sizeof(*m));
    if (!m)
        return -ENOMEM;
    *m = tmp;
    bk_list_push_head(&p->srv->monitors, &m->link);
    return 0;
}

void bk_mon_port_gone(bk_port_t *p)
{
    bk_mon_t *m = find(p);

    if (m) {
        bk_list_unlink(&m->link);
        free(m);
    }
}

unsigned bk_mon_count(const bk_server_t *s)
{
    const bk_mon_t *m;
    unsigned n = 0;

    bk_list_for_each(m, &s->monitors, bk_mon_t, link) {
        (void)m;
        n++;
    }
    return n;
}

/* ---- matching --------------------------------------------------------- */

static bool name_matches(const bk_mon_t *m, const char *name, size_t len)
{
    if (m->prefix)
        return len >= m->namelen && memcmp(name, m->name, m->namelen) == 0;
    return len == m->namelen && memcmp(name, m->name, len) == 0;
}

static bool owns_match(const bk_mon_t *m, const bk_port_t *p)
{
    const bk_name_t *n;

    if (!p)
        return false;
    bk_list_for_each(n, &p->names.head, bk_name_t, owned_link)
        if (name_matches(m, n->name, n->len))
            return true;
    return false;
}

static bool matches(const bk_mon_t *m, const bk_port_t *from,
                    const bk_port_t *to, const bk_hdr_t *o,
                    const uint8_t *payload)
{
    switch (m->kind) {
    case MON_ALL:
        return true;
    case MON_ID:
        return (from && from->id == m->id) || to->id == m->id;
    case MON_NAME:
        if (o->type == BK_T_DATA && (o->flags & BK_F_NAME) &&
            name_matches(m, (const char *)payload, o->aux))
            return true;
        return owns_match(m, from) || owns_match(m, to);
    case MON_TOPIC:             /* first fragments: they carry the topic */
        return o->type == BK_T_DATA && (o->flags & BK_F_TOPIC) &&
               bk_topic_match(m->name, m->namelen, (const char *)payload,
                              o->aux);
    }
    return false;
}

/* ---- records ---------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void send_record(bk_mon_t *m, uint8_t *rec, uint32_t olen,
                        const uint8_t *payload)
{
    bk_port_t *p = m->port;
    uint32_t room = p->srv->cfg->max_packet - BK_HDR_SIZE - BK_MON_REC_SIZE;
    uint32_t cap = m->snap < room ? m->snap : room;
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_MONITOR,
        .aux = m->dropped, .dest = p->id,
    };

    if (p->failed || p->state != BK_PORT_READY)
        return;
    if (p->out.bytes > p->srv->cfg->queue_limit) {
        if (m->dropped < UINT32_MAX)
            m->dropped++;
        return;
    }
    if (cap > olen)
        cap = olen;
    bk_put32(rec + 36, cap);
    memcpy(rec + BK_MON_REC_SIZE, payload, cap);
    h.length = BK_MON_REC_SIZE + cap;
    /* cause NULL: a monitor never pauses the traffic it watches */
    if (bk_port_send(p, &h, rec, NULL, 0, NULL) == 0)
        m->dropped = 0;
    else if (m->dropped < UINT32_MAX)
        m->dropped++;
}

void bk_mon_record(const bk_port_t *from, const bk_port_t *to,
                   uint32_t from_sid, const bk_hdr_t *o,
                   const uint8_t *payload)
{
    uint8_t rec[BK_MON_REC_SIZE + BK_MON_MAX_SNAP];
    bool built = false;
    bk_mon_t *m;

    /* a monitor's own traffic is never recorded */
    if (find(to) || (from && find(from)))
        return;
    bk_list_for_each_safe(m, &to->srv->monitors, bk_mon_t, link) {
        if (!matches(m, from, to, o, payload))
            continue;
        if (!built) {
            bk_put64(rec, now_ns());
            bk_put64(rec + 8, from ? from->id : 0);
            bk_put64(rec + 16, to->id);
            bk_put32(rec + 24, from_sid);
            bk_put32(rec + 28, o->stream);
            bk_put32(rec + 32, o->length);
            bk_hdr_encode(o, rec + BK_MON_REC_FIXED);
            built = true;
        }
        send_record(m, rec, o->length, payload);
    }
}
