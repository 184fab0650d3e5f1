/*
 * inspect.c - operator listings (LIST_CLIENTS, LIST_NAMES, LIST_STREAMS,
 * LIST_SHM, LIST_SUBS, LIST_USERS), one reply page at a time.
 *
 * Records are produced in the iteration order of the broker's tables; a
 * page starting at index N skips the first N records.  Pages are built
 * independently, so a listing taken while clients come and go may miss or
 * repeat a record (documented in broker-protocol(7)).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "inspect.h"
#include "server.h"
#include "shm.h"

/* Room kept at the end of every page for the `next=N\n` line. */
#define TRAILER_ROOM 24u

/* One page under construction, plus the record being built. */
typedef struct page {
    char *buf;                  /* committed records */
    size_t len, cap;            /* cap excludes TRAILER_ROOM */
    char *rec;                  /* current record */
    size_t rlen;
    bool rover;                 /* current record overflowed rec */
    uint32_t start, index, next;
    bool full;
    bool oversize;              /* a record larger than an empty page */
} page_t;

bool bk_inspect_allowed(const bk_port_t *p)
{
    return p->uid == 0 || p->uid == geteuid();
}

static bool plain_byte(unsigned char c)
{
    return c > ' ' && c <= '~' && c != '%' && c != '=' && c != ',';
}

static void rec_raw(page_t *pg, const char *s, size_t n)
{
    if (pg->rover || n > pg->cap - pg->rlen) {
        pg->rover = true;
        return;
    }
    memcpy(pg->rec + pg->rlen, s, n);
    pg->rlen += n;
}

static void rec_escaped(page_t *pg, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[3] = { '%', hex[c >> 4], hex[c & 15] };

        if (plain_byte(c))
            rec_raw(pg, (const char *)&s[i], 1);
        else
            rec_raw(pg, esc, 3);
    }
}

static void rec_key(page_t *pg, const char *key)
{
    if (pg->rlen)
        rec_raw(pg, " ", 1);
    rec_raw(pg, key, strlen(key));
    rec_raw(pg, "=", 1);
}

static void rec_u64(page_t *pg, const char *key, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRIu64, v);

    rec_key(pg, key);
    rec_raw(pg, num, (size_t)n);
}

static void rec_str(page_t *pg, const char *key, const char *s)
{
    rec_key(pg, key);
    rec_escaped(pg, s, strlen(s));
}

/* True if the next record is not wanted on this page (before `start`, or
 * the page is full); otherwise the record buffer is reset for it. */
static bool page_skip(page_t *pg)
{
    if (pg->full)
        return true;
    if (pg->index < pg->start) {
        pg->index++;
        return true;
    }
    pg->rlen = 0;
    pg->rover = false;
    return false;
}

static void page_commit(page_t *pg)
{
    if (pg->rover || pg->rlen + 1 > pg->cap - pg->len) {
        pg->full = true;
        pg->next = pg->index;
        pg->oversize = pg->len == 0;
        return;
    }
    memcpy(pg->buf + pg->len, pg->rec, pg->rlen);
    pg->len += pg->rlen;
    pg->buf[pg->len++] = '\n';
    pg->index++;
}

/* ---- clients -------------------------------------------------------------- */

/* A client's names, comma-separated, within `budget` bytes; returns how
 * many did not fit. */
static uint32_t rec_names(page_t *pg, const bk_port_t *c, size_t budget)
{
    size_t begin;
    uint32_t left = c->names.count;
    const bk_name_t *n;

    rec_key(pg, "names");
    begin = pg->rlen;
    bk_list_for_each(n, &c->names.head, bk_name_t, owned_link) {
        size_t before = pg->rlen;

        if (before != begin)
            rec_raw(pg, ",", 1);
        rec_escaped(pg, n->name, n->len);
        if (pg->rover || pg->rlen - begin > budget) {
            pg->rlen = before;
            pg->rover = false;
            break;
        }
        left--;
    }
    return left;
}

static void rec_client(page_t *pg, const bk_port_t *c, uint64_t now)
{
    uint32_t more;

    rec_u64(pg, "id", c->id);
    rec_u64(pg, "pid", (uint64_t)c->pid);
    rec_u64(pg, "uid", c->uid);
    rec_u64(pg, "gid", c->gid);
    rec_str(pg, "comm", c->comm);
    rec_u64(pg, "age_ms", now - c->connected_ms);
    more = rec_names(pg, c, pg->cap / 4);
    rec_u64(pg, "names_more", more);
    rec_u64(pg, "queued_frames", c->out.frames);
    rec_u64(pg, "queued_bytes", c->out.bytes);
    rec_u64(pg, "queued_mem", c->out.mem);
    rec_u64(pg, "msgs_in", c->msgs_in);
    rec_u64(pg, "msgs_out", c->msgs_out);
    rec_u64(pg, "bytes_in", c->bytes_in);
    rec_u64(pg, "bytes_out", c->bytes_out);
    rec_u64(pg, "errors", c->errors);
    rec_u64(pg, "streams", c->streams.count);
    rec_u64(pg, "shm_segments", c->shm.nsegs);
    rec_u64(pg, "shm_bytes", c->shm.bytes);
    rec_u64(pg, "shm_held", c->shm.nheld);
    rec_u64(pg, "subs", c->nsubs);
    rec_u64(pg, "dropped", c->pub_dropped);
    rec_u64(pg, "queued_fds", c->out.nfds);
    rec_u64(pg, "refusals", c->refusals);
    rec_key(pg, "desc");
    rec_escaped(pg, c->desc, c->desc_len);
}

static void list_clients(page_t *pg, const bk_server_t *srv, uint64_t now)
{
    for (bk_hnode_t *e = bk_ht_next(&srv->clients, NULL); e && !pg->full;
         e = bk_ht_next(&srv->clients, e)) {
        if (page_skip(pg))
            continue;
        rec_client(pg, bk_container_of(e, bk_port_t, node), now);
        page_commit(pg);
    }
}

/* ---- names ---------------------------------------------------------------- */

/* The clients in a name's line, in order, comma-separated. */
static void rec_line(page_t *pg, const bk_name_t *n)
{
    const bk_name_wait_t *w;
    bool first = true;

    rec_key(pg, "queue");
    bk_list_for_each(w, &n->line, bk_name_wait_t, link) {
        char num[24];
        int len = snprintf(num, sizeof(num), "%s%" PRIu64, first ? "" : ",",
                           w->client);
        rec_raw(pg, num, (size_t)len);
        first = false;
    }
}

static void list_names(page_t *pg, const bk_server_t *srv, uint64_t now)
{
    for (bk_hnode_t *e = bk_ht_next(&srv->names.ht, NULL); e && !pg->full;
         e = bk_ht_next(&srv->names.ht, e)) {
        const bk_name_t *n = bk_container_of(e, bk_name_t, node);
        const bk_port_t *o;

        if (page_skip(pg))
            continue;
        o = bk_server_find(srv, n->owner);
        rec_key(pg, "name");
        rec_escaped(pg, n->name, n->len);
        rec_u64(pg, "owner", n->owner);
        rec_u64(pg, "pid", o ? (uint64_t)o->pid : 0);
        rec_str(pg, "comm", o ? o->comm : "");
        rec_u64(pg, "age_ms", now - n->registered_ms);
        rec_line(pg, n);
        rec_str(pg, "flags", n->flags & BK_REG_ALLOW_REPLACEMENT ?
                             "allow-replacement" : "");
        page_commit(pg);
    }
}

/* ---- streams -------------------------------------------------------------- */

/* Each stream is listed once: under its opener's end, or under the
 * acceptor's end when the opener's is gone. */
static bool stream_listed_here(const bk_st_end_t *e)
{
    const bk_stream_t *s = e->stream;

    return e == &s->end[0] || !s->end[0].linked;
}

static void rec_end(page_t *pg, const char *who, const char *sid_key,
                    const char *bytes_key, const bk_st_end_t *e)
{
    rec_u64(pg, who, e->linked ? e->client : 0);
    rec_u64(pg, sid_key, e->linked ? e->sid : 0);
    rec_u64(pg, bytes_key, e->bytes);
}

static void list_streams(page_t *pg, const bk_server_t *srv, uint64_t now)
{
    const bk_htable_t *ht = &srv->streams.ht;

    for (bk_hnode_t *n = bk_ht_next(ht, NULL); n && !pg->full;
         n = bk_ht_next(ht, n)) {
        const bk_st_end_t *e = bk_container_of(n, bk_st_end_t, node);
        const bk_stream_t *s = e->stream;

        if (!stream_listed_here(e) || page_skip(pg))
            continue;
        rec_end(pg, "opener", "opener_sid", "opener_bytes", &s->end[0]);
        rec_end(pg, "acceptor", "acceptor_sid", "acceptor_bytes", &s->end[1]);
        rec_u64(pg, "age_ms", now - s->opened_ms);
        page_commit(pg);
    }
}

/* ---- subscriptions -------------------------------------------------------- */

static const char *policy_name(uint8_t policy)
{
    switch (policy) {
    case BK_SUB_BLOCK: return "block";
    case BK_SUB_DISCONNECT: return "disconnect";
    default: return "drop";
    }
}

static void list_subs(page_t *pg, const bk_server_t *srv)
{
    for (const bk_sub_t *s = bk_subs_next(srv->subs, NULL); s && !pg->full;
         s = bk_subs_next(srv->subs, s)) {
        if (page_skip(pg))
            continue;
        rec_u64(pg, "client", s->client);
        rec_u64(pg, "sub", s->id);
        rec_key(pg, "pattern");
        rec_escaped(pg, s->pattern, s->plen);
        rec_key(pg, "group");
        if (s->group)
            rec_escaped(pg, s->group->name, s->group->namelen);
        rec_str(pg, "policy", policy_name(s->policy));
        rec_u64(pg, "delivered", s->delivered);
        rec_u64(pg, "dropped", s->dropped);
        rec_u64(pg, "queued", s->queued);
        page_commit(pg);
    }
}

/* ---- shared memory -------------------------------------------------------- */

static void list_port_segs(page_t *pg, const bk_port_t *c)
{
    for (bk_hnode_t *n = bk_ht_next(&c->shm.segs, NULL); n && !pg->full;
         n = bk_ht_next(&c->shm.segs, n)) {
        uint32_t segid, nrecv;
        uint64_t size;

        if (page_skip(pg))
            continue;
        bk_shm_seg_info(n, &segid, &size, &nrecv);
        rec_u64(pg, "owner", c->id);
        rec_u64(pg, "segid", segid);
        rec_u64(pg, "size", size);
        rec_u64(pg, "receivers", nrecv);
        page_commit(pg);
    }
}

static void list_shm(page_t *pg, const bk_server_t *srv)
{
    for (bk_hnode_t *e = bk_ht_next(&srv->clients, NULL); e && !pg->full;
         e = bk_ht_next(&srv->clients, e))
        list_port_segs(pg, bk_container_of(e, bk_port_t, node));
}

/* ---- users ---------------------------------------------------------------- */

static void rec_user(page_t *pg, const bk_user_t *u)
{
    rec_u64(pg, "uid", u->uid);
    rec_u64(pg, "connections", u->nports);
    rec_u64(pg, "fds", u->fds);
    rec_u64(pg, "streams", u->streams);
    rec_u64(pg, "names", u->names);
    rec_u64(pg, "subs", u->subs);
    rec_u64(pg, "shm_segments", u->segments);
    rec_u64(pg, "shm_bytes", u->shm_bytes);
    rec_u64(pg, "shm_held", u->held);
    rec_u64(pg, "queued", u->queued);
    rec_u64(pg, "queued_by", u->queued_by);
    rec_u64(pg, "quota_hits", u->hits);
}

static void list_users(page_t *pg, const bk_server_t *srv)
{
    const bk_htable_t *ht = &srv->users.table;

    for (bk_hnode_t *n = bk_ht_next(ht, NULL); n && !pg->full;
         n = bk_ht_next(ht, n)) {
        if (page_skip(pg))
            continue;
        rec_user(pg, bk_container_of(n, bk_user_t, node));
        page_commit(pg);
    }
}

/* ---- entry point ---------------------------------------------------------- */

static int page_fill(page_t *pg, const bk_server_t *srv, uint32_t op)
{
    uint64_t now = bk_now_ms();

    switch (op) {
    case BK_OP_LIST_CLIENTS:
        list_clients(pg, srv, now);
        return 0;
    case BK_OP_LIST_NAMES:
        list_names(pg, srv, now);
        return 0;
    case BK_OP_LIST_STREAMS:
        list_streams(pg, srv, now);
        return 0;
    case BK_OP_LIST_SHM:
        list_shm(pg, srv);
        return 0;
    case BK_OP_LIST_SUBS:
        list_subs(pg, srv);
        return 0;
    case BK_OP_LIST_USERS:
        list_users(pg, srv);
        return 0;
    default:
        return -EINVAL;
    }
}

int bk_inspect_list(const bk_port_t *p, uint32_t op, uint32_t start,
                    size_t room, char **out, size_t *len)
{
    page_t pg = { .start = start };
    int r;

    if (room <= TRAILER_ROOM + 1)
        return -EMSGSIZE;
    pg.cap = room - TRAILER_ROOM;
    pg.buf = malloc(room);
    pg.rec = malloc(pg.cap);
    if (!pg.buf || !pg.rec) {
        free(pg.buf);
        free(pg.rec);
        return -ENOMEM;
    }
    r = page_fill(&pg, p->srv, op);
    free(pg.rec);
    if (!r && pg.oversize)
        r = -EMSGSIZE;
    if (r < 0) {
        free(pg.buf);
        return r;
    }
    pg.len += (size_t)snprintf(pg.buf + pg.len, TRAILER_ROOM, "next=%" PRIu32
                               "\n", pg.full ? pg.next : 0);
    *out = pg.buf;
    *len = pg.len;
    return 0;
}
