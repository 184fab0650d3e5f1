/*
 * api_ctl.c - libbroker layer 7, public API: control requests (names,
 * ping, status, operator requests, listings, monitoring) over ctrl.c.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ctrl.h"
#include "subs.h"
#include "recon.h"

_Static_assert(BROKER_NAME_ALLOW_REPLACEMENT == BK_REG_ALLOW_REPLACEMENT &&
               BROKER_NAME_REPLACE_EXISTING == BK_REG_REPLACE_EXISTING &&
               BROKER_NAME_QUEUE == BK_REG_QUEUE &&
               BROKER_NAME_OWNER == BK_REG_OWNER &&
               BROKER_NAME_QUEUED == BK_REG_QUEUED,
               "name flags must match the wire");

static int ctrl_call(broker_t *b, uint32_t op, const char *arg, size_t len,
                     int timeout_ms, uint8_t **payload, size_t *plen)
{
    return bk_ctrl_call(b, op, arg, len, -1, bk_io_deadline(timeout_ms),
                        payload, plen);
}

static int name_op(broker_t *b, uint32_t op, const char *name,
                   uint8_t **payload, size_t *plen)
{
    size_t len;

    if (!b)
        return -EINVAL;
    if (!bk_conn_name_ok(b, name, &len))
        return -EINVAL;
    return ctrl_call(b, op, name, len, -1, payload, plen);
}

/* BROKER_OPT_RECONNECT: remember what r (a registration's outcome)
 * made ours.  r, or -ENOMEM if it could not be remembered. */
static int remember_name(broker_t *b, const char *name, bool ex,
                         uint32_t flags, int r)
{
    if (r < 0 || !b->rc || bk_recon_replaying(b))
        return r;
    if (bk_recon_name_add(b, name, ex, flags,
                          r == 0 ? BROKER_NAME_OWNER : r) < 0) {
        (void)broker_release(b, name);
        return -ENOMEM;
    }
    return r;
}

BROKER_API int broker_register(broker_t *b, const char *name)
{
    int r = name_op(b, BK_OP_REGISTER, name, NULL, NULL);

    return remember_name(b, name, false, 0, r);
}

BROKER_API int broker_register_flags(broker_t *b, const char *name,
                                     uint32_t flags)
{
    uint8_t req[4 + BK_MAX_NAME];
    uint8_t *p = NULL;
    size_t len, plen = 0;
    int r;

    if (!b || (flags & ~BK_REG_FLAGS_ALL_) || !bk_conn_name_ok(b, name, &len))
        return -EINVAL;
    bk_put32(req, flags);
    memcpy(req + 4, name, len);
    r = ctrl_call(b, BK_OP_REGISTER_EX, (const char *)req, 4 + len, -1, &p,
                  &plen);
    if (r == 0) {
        uint32_t outcome = plen == 4 ? bk_get32(p) : 0;

        r = outcome == BK_REG_OWNER || outcome == BK_REG_QUEUED
            ? (int)outcome : -EPROTO;
    }
    free(p);
    return remember_name(b, name, true, flags, r);
}

BROKER_API int broker_release(broker_t *b, const char *name)
{
    if (b && b->rc && name)
        bk_recon_name_remove(b, name);
    return name_op(b, BK_OP_RELEASE, name, NULL, NULL);
}

BROKER_API int broker_resolve(broker_t *b, const char *name, uint64_t *id)
{
    uint8_t *p = NULL;
    size_t len = 0;
    int r;

    if (!id)
        return -EINVAL;
    r = name_op(b, BK_OP_RESOLVE, name, &p, &len);
    if (r == 0) {
        if (len >= 8 && bk_get64(p))
            *id = bk_get64(p);
        else
            r = -EPROTO;
    }
    free(p);
    return r;
}

BROKER_API int broker_ping(broker_t *b, int timeout_ms)
{
    if (!b)
        return -EINVAL;
    return ctrl_call(b, BK_OP_PING, NULL, 0, timeout_ms, NULL, NULL);
}

BROKER_API int broker_status(broker_t *b, char **text)
{
    uint8_t *p = NULL;
    size_t len = 0;
    char *t;
    int r;

    if (!b || !text)
        return -EINVAL;
    *text = NULL;
    r = ctrl_call(b, BK_OP_STATUS, NULL, 0, -1, &p, &len);
    if (r < 0) {
        free(p);
        return r;
    }
    t = malloc(len + 1);
    if (!t) {
        free(p);
        return -ENOMEM;
    }
    if (len)
        memcpy(t, p, len);
    t[len] = '\0';
    free(p);
    *text = t;
    return 0;
}

/* ---- operator control --------------------------------------------------- */

/* The largest request the broker takes for op. */
static size_t ctrl_max_len(const broker_t *b, uint32_t op)
{
    if (op == BK_OP_SUBSCRIBE)
        return BK_SUB_REQ_MAX;
    if (op == BK_OP_REGISTER_EX)
        return 4 + (size_t)b->lim.max_name;
    return b->lim.max_name;
}

BROKER_API int broker_ctrl(broker_t *b, uint32_t op, const void *req,
                           size_t len, void **reply, size_t *reply_len)
{
    uint8_t *p = NULL, *t;
    size_t plen = 0;
    int r;

    if (reply)
        *reply = NULL;
    if (reply_len)
        *reply_len = 0;
    if (!b || op == 0 || op == BK_OP_SEGMENT || (len && !req) ||
        len > ctrl_max_len(b, op))
        return -EINVAL;
    if (op == BK_OP_UNSUBSCRIBE && len == 4)
        bk_subs_remove(b, bk_get32(req));       /* see broker_unsubscribe */
    r = ctrl_call(b, op, req, len, -1, &p, &plen);
    /* on an error too, the broker may explain itself in the payload */
    if (!reply || (r < 0 && !plen)) {
        free(p);
        return r;
    }
    t = malloc(plen + 1);
    if (!t) {
        free(p);
        return r < 0 ? r : -ENOMEM;
    }
    if (plen)
        memcpy(t, p, plen);
    t[plen] = '\0';
    free(p);
    *reply = t;
    if (reply_len)
        *reply_len = plen;
    return r;
}

/* Split a LIST page into its records and the `next=C` trailer (the last
 * line).  Returns the length of the records part or -EPROTO. */
static ssize_t list_page_split(const char *page, size_t len, uint64_t *next)
{
    size_t i;
    char *end;
    unsigned long long v;

    if (len < 7 || page[len - 1] != '\n')
        return -EPROTO;
    i = len - 1;
    while (i > 0 && page[i - 1] != '\n')
        i--;
    if (strncmp(page + i, "next=", 5) != 0)
        return -EPROTO;
    errno = 0;
    v = strtoull(page + i + 5, &end, 10);
    if (errno || end != page + len - 1 || page[i + 5] < '0' ||
        page[i + 5] > '9')
        return -EPROTO;
    *next = (uint64_t)v;
    return (ssize_t)i;
}

static int list_append(char **text, size_t *len, const char *add, size_t n)
{
    char *t = realloc(*text, *len + n + 1);

    if (!t)
        return -ENOMEM;
    memcpy(t + *len, add, n);
    *len += n;
    t[*len] = '\0';
    *text = t;
    return 0;
}

BROKER_API int broker_list(broker_t *b, uint32_t op, char **text, size_t *len)
{
    uint64_t cursor = 0, next;
    size_t total = 0;
    char *all = NULL;
    int r;

    if (!b || !text || ((op < BK_OP_LIST_CLIENTS || op > BK_OP_LIST_SHM) &&
                        op != BK_OP_LIST_SUBS && op != BK_OP_LIST_USERS))
        return -EINVAL;
    r = list_append(&all, &total, "", 0);
    while (r == 0) {
        uint8_t req[BK_LIST_REQ_SIZE];
        void *page = NULL;
        size_t plen = 0;
        ssize_t rec;

        /* The first page too is asked with a cursor (0), so one request
         * form serves every page. */
        bk_put64(req, cursor);
        r = broker_ctrl(b, op, req, sizeof(req), &page, &plen);
        if (r < 0)
            break;
        rec = list_page_split(page, plen, &next);
        /* Cursors only grow: anything else would loop forever. */
        if (rec < 0 || (next != 0 && next <= cursor))
            r = -EPROTO;
        else
            r = list_append(&all, &total, page, (size_t)rec);
        free(page);
        if (r < 0 || next == 0)
            break;
        cursor = next;
    }
    if (r < 0) {
        free(all);
        return r;
    }
    *text = all;
    if (len)
        *len = total;
    return 0;
}

BROKER_API int broker_kick(broker_t *b, uint64_t id)
{
    uint8_t req[BK_KICK_REQ_SIZE];

    bk_put64(req, id);
    return broker_ctrl(b, BK_OP_KICK, req, sizeof(req), NULL, NULL);
}

BROKER_API int broker_shutdown(broker_t *b)
{
    return broker_ctrl(b, BK_OP_SHUTDOWN, NULL, 0, NULL, NULL);
}

/* ---- monitoring --------------------------------------------------------- */

#define MON_MAX_SNAP 4096u

BROKER_API int broker_monitor(broker_t *b, const char *filter, uint32_t snap)
{
    char req[BK_MAX_NAME + 1];
    int n;

    if (!b || snap > MON_MAX_SNAP || (filter && strchr(filter, ' ')))
        return -EINVAL;
    if (!filter)
        filter = "";
    if (snap)
        n = snprintf(req, sizeof(req), "%s%ssnap:%u", filter,
                     *filter ? " " : "", snap);
    else
        n = snprintf(req, sizeof(req), "%s", filter);
    if (n < 0 || (size_t)n >= sizeof(req) || (size_t)n > b->lim.max_name)
        return -EINVAL;
    return broker_ctrl(b, BK_OP_MONITOR, req, (size_t)n, NULL, NULL);
}

BROKER_API int broker_monitor_parse(const broker_msg_t *m,
                                    broker_monitor_rec_t *rec)
{
    const uint8_t *p;

    if (!m || !rec || m->kind != BROKER_MSG_MONITOR || !m->data ||
        m->len < BK_MON_FIXED_SIZE)
        return -EINVAL;
    p = m->data;
    rec->time_ns = bk_get64(p);
    rec->sender = bk_get64(p + 8);
    rec->receiver = bk_get64(p + 16);
    rec->sender_stream = bk_get32(p + 24);
    rec->receiver_stream = bk_get32(p + 28);
    rec->length = bk_get32(p + 32);
    rec->captured = bk_get32(p + 36);
    if (rec->captured != m->len - BK_MON_FIXED_SIZE ||
        rec->captured > rec->length)
        return -EINVAL;
    rec->header = p + BK_MON_HDR_OFF;
    rec->type = rec->header[1];
    rec->flags = rec->header[2];
    rec->nfds = rec->header[3];
    rec->aux = bk_get32(rec->header + 12);
    rec->preview = p + BK_MON_FIXED_SIZE;
    return 0;
}
