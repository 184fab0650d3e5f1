/*
 * flow.c - libbroker layer 4: busy receivers (flow.h).
 *
 * The table is a short array: a sender rarely has more than a few full
 * receivers at once, and an empty table costs one test per message.  When
 * it is full the oldest entry goes; the broker then refuses new messages
 * to that receiver past its hard limit (ENOBUFS), which is safe, only
 * less smooth.
 */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "flow.h"
#include "in.h"

#define BK_FLOW_MAX        64u          /* busy receivers remembered */
#define BK_FLOW_LOOK_MSGS  32u          /* look at the input after this */
#define BK_FLOW_LOOK_BYTES (64u << 10)  /* many messages or bytes ... */
#define BK_FLOW_LOOK_NS    100000u      /* ... if this long has passed */
#define BK_FLOW_LOOK_PKTS  8u           /* packets read per look */

struct bk_flow_ent {
    uint64_t rid;               /* the receiver's client id */
    uint32_t sid;               /* our stream the message was on */
    char *name;                 /* the name it was addressed by, or NULL */
};

struct bk_flow {
    struct bk_flow_ent ent[BK_FLOW_MAX];
    unsigned n;
    unsigned msgs;              /* messages since the last look */
    size_t bytes;               /* and their bytes */
    uint64_t looked_ns;
};

int bk_flow_init(broker_t *b)
{
    b->flow = calloc(1, sizeof(*b->flow));
    return b->flow ? 0 : -ENOMEM;
}

void bk_flow_fini(broker_t *b)
{
    struct bk_flow *f = b->flow;

    if (!f)
        return;
    for (unsigned i = 0; i < f->n; i++)
        free(f->ent[i].name);
    free(f);
    b->flow = NULL;
}

static void drop_at(struct bk_flow *f, unsigned i)
{
    free(f->ent[i].name);
    memmove(&f->ent[i], &f->ent[i + 1], (f->n - i - 1) * sizeof(f->ent[0]));
    f->n--;
}

static bool same_name(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static int busy(struct bk_flow *f, uint64_t rid, uint32_t sid,
                const uint8_t *p, size_t len)
{
    char *name = NULL;

    if (len) {
        if (!(name = malloc(len + 1)))
            return -ENOMEM;
        memcpy(name, p, len);
        name[len] = '\0';
    }
    for (unsigned i = 0; i < f->n; i++) {
        if (f->ent[i].rid == rid && f->ent[i].sid == sid &&
            same_name(f->ent[i].name, name)) {
            free(name);
            return 0;
        }
    }
    if (f->n == BK_FLOW_MAX)
        drop_at(f, 0);
    f->ent[f->n++] = (struct bk_flow_ent){ .rid = rid, .sid = sid,
                                           .name = name };
    return 0;
}

static void ready(struct bk_flow *f, uint64_t rid)
{
    for (unsigned i = f->n; i-- > 0;)
        if (f->ent[i].rid == rid)
            drop_at(f, i);
}

int bk_flow_on_frame(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    if (h->aux == BK_FLOW_BUSY)
        return busy(b->flow, h->source, h->stream, p, h->length);
    ready(b->flow, h->source);
    return 0;
}

bool bk_flow_busy(const broker_t *b, const char *name, uint64_t id,
                  uint32_t sid)
{
    const struct bk_flow *f = b->flow;

    for (unsigned i = 0; i < f->n; i++) {
        const struct bk_flow_ent *e = &f->ent[i];

        if ((name && e->name && strcmp(e->name, name) == 0) ||
            (id && e->rid == id) || (sid && e->sid == sid))
            return true;
    }
    return false;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Every BK_FLOW_LOOK_MSGS messages or BK_FLOW_LOOK_BYTES bytes, and at
 * most once per BK_FLOW_LOOK_NS, read what input is there: a sender that
 * only sends hears of busy receivers before it fills them past the
 * broker's hard limit. */
static int look(broker_t *b, size_t len)
{
    struct bk_flow *f = b->flow;
    uint64_t now;
    int r;

    f->bytes += len;
    if (++f->msgs < BK_FLOW_LOOK_MSGS && f->bytes < BK_FLOW_LOOK_BYTES)
        return 0;
    f->msgs = 0;
    f->bytes = 0;
    now = now_ns();
    if (now - f->looked_ns < BK_FLOW_LOOK_NS)
        return 0;
    f->looked_ns = now;
    r = bk_in_pump(b, BK_FLOW_LOOK_PKTS);
    return r < 0 ? r : 0;
}

int bk_flow_gate(broker_t *b, const char *name, uint64_t id, uint32_t sid,
                 size_t len, int64_t deadline)
{
    int r;

    if (!bk_conn_attached(b) && (r = look(b, len)) < 0)
        return r;
    while (b->flow->n && bk_flow_busy(b, name, id, sid)) {
        if (bk_conn_attached(b))
            return -EAGAIN;
        r = bk_in_wait(b, false, deadline);
        if (r < 0)
            return r;
    }
    return 0;
}
