/*
 * inspect.c - operator listings (LIST_CLIENTS, LIST_NAMES, LIST_STREAMS,
 * LIST_SHM, LIST_SUBS, LIST_USERS), one reply page at a time.
 *
 * Every kind of record has an ordered index (tree.h) beside its hash
 * table, keyed by a u64 that is fixed for the record's life and never
 * given to another record: clients by id, names, streams, segments and
 * subscriptions by their creation number, users by uid + 1 (so that no
 * key is 0, the cursor that starts a listing).  A page lists the records
 * whose key is above the request's cursor, in key order, and ends with
 * the key of its last record as the next cursor.  Resuming is a search
 * from the tree's root, O(log n), and so is each step to the next
 * record: no page walks from the first record.  Because a record keeps
 * its key while it exists, keys are unique and the cursor grows from page
 * to page, a record present from the first page to the last is listed
 * exactly once, whatever comes and goes in between (broker-protocol(7)
 * "Listings").
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

/* Room kept at the end of every page for the `next=C\n` line (C up to
 * 20 digits). */
#define TRAILER_ROOM 24u

/* One page under construction, plus the record being built. */
typedef struct page {
    char *buf;                  /* committed records */
    size_t len, cap;            /* cap excludes TRAILER_ROOM */
    char *rec;                  /* current record */
    size_t rlen;
    bool rover;                 /* current record overflowed rec */
    uint64_t last;              /* key of the last committed record */
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

static void page_begin(page_t *pg)
{
    pg->rlen = 0;
    pg->rover = false;
}

/* Add the record built for the node of `key`, or mark the page full if it
 * does not fit (the next page starts with it). */
static void page_commit(page_t *pg, uint64_t key)
{
    if (pg->rover || pg->rlen + 1 > pg->cap - pg->len) {
        pg->full = true;
        pg->oversize = pg->len == 0;
        return;
    }
    memcpy(pg->buf + pg->len, pg->rec, pg->rlen);
    pg->len += pg->rlen;
    pg->buf[pg->len++] = '\n';
    pg->last = key;
}

/* Builds the record of one index node. */
typedef void rec_fn(page_t *pg, const bk_tnode_t *n, const bk_server_t *srv,
                    uint64_t now);

/* The records of index t after `cursor`, in key order, while they fit. */
static void page_walk(page_t *pg, const bk_tree_t *t, uint64_t cursor,
                      rec_fn *rec, const bk_server_t *srv, uint64_t now)
{
    for (const bk_tnode_t *n = bk_tree_after(t, cursor); n && !pg->full;
         n = bk_tree_after(t, n->key)) {
        page_begin(pg);
        rec(pg, n, srv, now);
        page_commit(pg, n->key);
    }
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

static void rec_client(page_t *pg, const bk_tnode_t *n,
                       const bk_server_t *srv, uint64_t now)
{
    const bk_port_t *c = bk_container_of(n, bk_port_t, tnode);
    uint32_t more;

    (void)srv;
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

static void rec_name(page_t *pg, const bk_tnode_t *t,
                     const bk_server_t *srv, uint64_t now)
{
    const bk_name_t *n = bk_container_of(t, bk_name_t, tnode);
    const bk_port_t *o = bk_server_find(srv, n->owner);

    rec_key(pg, "name");
    rec_escaped(pg, n->name, n->len);
    rec_u64(pg, "owner", n->owner);
    rec_u64(pg, "pid", o ? (uint64_t)o->pid : 0);
    rec_str(pg, "comm", o ? o->comm : "");
    rec_u64(pg, "age_ms", now - n->registered_ms);
    rec_line(pg, n);
    rec_str(pg, "flags", n->flags & BK_REG_ALLOW_REPLACEMENT ?
                         "allow-replacement" : "");
}

/* ---- streams -------------------------------------------------------------- */

static void rec_end(page_t *pg, const char *who, const char *sid_key,
                    const char *bytes_key, const bk_st_end_t *e)
{
    rec_u64(pg, who, e->linked ? e->client : 0);
    rec_u64(pg, sid_key, e->linked ? e->sid : 0);
    rec_u64(pg, bytes_key, e->bytes);
}

/* One record per stream (the index holds streams, not ends). */
static void rec_stream(page_t *pg, const bk_tnode_t *n,
                       const bk_server_t *srv, uint64_t now)
{
    const bk_stream_t *s = bk_container_of(n, bk_stream_t, tnode);

    (void)srv;
    rec_end(pg, "opener", "opener_sid", "opener_bytes", &s->end[0]);
    rec_end(pg, "acceptor", "acceptor_sid", "acceptor_bytes", &s->end[1]);
    rec_u64(pg, "age_ms", now - s->opened_ms);
}

/* ---- subscriptions -------------------------------------------------------- */

static const char *sub_flags_name(uint8_t flags)
{
    switch (flags & (BK_SUB_F_NOFDS | BK_SUB_F_GATEWAY)) {
    case BK_SUB_F_NOFDS:    return "no-fds";
    case BK_SUB_F_GATEWAY:  return "gateway";
    case BK_SUB_F_NOFDS | BK_SUB_F_GATEWAY: return "gateway,no-fds";
    default:                return "";
    }
}

static const char *policy_name(uint8_t policy)
{
    switch (policy) {
    case BK_SUB_BLOCK: return "block";
    case BK_SUB_DISCONNECT: return "disconnect";
    default: return "drop";
    }
}

/* Subscriptions live in subs.c's own index (bk_subs_after), so they
 * have their own walk. */
static void list_subs(page_t *pg, const bk_server_t *srv, uint64_t cursor)
{
    for (const bk_sub_t *s = bk_subs_after(srv->subs, cursor); s && !pg->full;
         s = bk_subs_after(srv->subs, s->seq)) {
        page_begin(pg);
        rec_u64(pg, "client", s->client);
        rec_u64(pg, "sub", s->id);
        rec_key(pg, "pattern");
        rec_escaped(pg, s->pattern, s->plen);
        rec_key(pg, "group");
        if (s->group)
            rec_escaped(pg, s->group->name, s->group->namelen);
        rec_str(pg, "policy", policy_name(s->policy));
        rec_str(pg, "flags", sub_flags_name(s->flags));
        rec_u64(pg, "delivered", s->delivered);
        rec_u64(pg, "dropped", s->dropped);
        rec_u64(pg, "queued", s->queued);
        page_commit(pg, s->seq);
    }
}

/* ---- shared memory -------------------------------------------------------- */

static void rec_seg(page_t *pg, const bk_tnode_t *n, const bk_server_t *srv,
                    uint64_t now)
{
    uint64_t owner, size;
    uint32_t segid, nrecv;

    (void)srv;
    (void)now;
    bk_shm_seg_info(n, &owner, &segid, &size, &nrecv);
    rec_u64(pg, "owner", owner);
    rec_u64(pg, "segid", segid);
    rec_u64(pg, "size", size);
    rec_u64(pg, "receivers", nrecv);
}

/* ---- users ---------------------------------------------------------------- */

static void rec_user(page_t *pg, const bk_tnode_t *n, const bk_server_t *srv,
                     uint64_t now)
{
    const bk_user_t *u = bk_container_of(n, bk_user_t, tnode);

    (void)srv;
    (void)now;    rec_u64(pg, "uid", u->uid);
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

/* ---- entry point ---------------------------------------------------------- */

static int page_fill(page_t *pg, const bk_server_t *srv, uint32_t op,
                     uint64_t cursor)
{
    uint64_t now = bk_now_ms();

    switch (op) {
    case BK_OP_LIST_CLIENTS:
        page_walk(pg, &srv->client_index, cursor, rec_client, srv, now);
        return 0;
    case BK_OP_LIST_NAMES:
        page_walk(pg, &srv->names.index, cursor, rec_name, srv, now);
        return 0;
    case BK_OP_LIST_STREAMS:
        page_walk(pg, &srv->streams.index, cursor, rec_stream, srv, now);
        return 0;
    case BK_OP_LIST_SHM:
        page_walk(pg, &srv->shm_index, cursor, rec_seg, srv, now);
        return 0;
    case BK_OP_LIST_SUBS:
        list_subs(pg, srv, cursor);
        return 0;
    case BK_OP_LIST_USERS:
        page_walk(pg, &srv->users.index, cursor, rec_user, srv, now);
        return 0;
    default:
        return -EINVAL;
    }
}

int bk_inspect_list(const bk_port_t *p, uint32_t op, uint64_t cursor,
                    size_t room, char **out, size_t *len)
{
    page_t pg = { .last = cursor };
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
    r = page_fill(&pg, p->srv, op, cursor);
    free(pg.rec);
    if (!r && pg.oversize)
        r = -EMSGSIZE;
    if (r < 0) {
        free(pg.buf);
        return r;
    }
    /* A full page has committed at least one record (else oversize), so
     * its cursor is a record's key, never 0. */
    pg.len += (size_t)snprintf(pg.buf + pg.len, TRAILER_ROOM, "next=%" PRIu64
                               "\n", pg.full ? pg.last : 0);
    *out = pg.buf;
    *len = pg.len;
    return 0;
}
