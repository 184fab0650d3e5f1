/*
 * ctrl.c - libbroker layer 4: one control request at a time.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "outq.h"
#include "subs.h"
#include "ctrl.h"

/* An async request waiting for its reply. */
struct bk_areq {
    bk_list_t link;
    uint32_t id;
    uint32_t op;
};

struct bk_ctrl {
    uint32_t next;              /* id of the next request */
    uint32_t id;                /* the request in flight, or 0 */
    uint32_t op;                /* and its op */
    bool done;                  /* its reply arrived */
    int code;                   /* the reply's answer, negative or 0 */
    uint8_t *payload;
    size_t len;
    bk_list_t areqs;            /* struct bk_areq, oldest first */
    struct bk_ctrl_hooks hooks;
};

static uint32_t next_id(struct bk_ctrl *c)
{
    uint32_t id = c->next++;

    if (c->next == 0)
        c->next = 1;
    return id;
}

int bk_ctrl_init(broker_t *b)
{
    struct bk_ctrl *c = calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    c->next = 1;
    bk_list_init(&c->areqs);
    b->ctrl = c;
    return 0;
}

void bk_ctrl_set_hooks(broker_t *b, const struct bk_ctrl_hooks *hooks)
{
    b->ctrl->hooks = *hooks;
}

void bk_ctrl_fini(broker_t *b)
{
    bk_list_t *l;

    if (!b->ctrl)
        return;
    while ((l = bk_list_pop_head(&b->ctrl->areqs)))
        free(bk_container_of(l, struct bk_areq, link));
    free(b->ctrl->payload);
    free(b->ctrl);
    b->ctrl = NULL;
}

/* Attached mode: queue the request in the ring and write until it is out
 * (reading meanwhile). */
static int send_queued(broker_t *b, uint32_t id, uint32_t op,
                       const void *arg, size_t len, int fd, int64_t deadline)
{
    int r = bk_out_queue_ctrl(b, id, op, arg, len, fd >= 0 ? &fd : NULL,
                              fd >= 0);

    if (r < 0)
        return r;
    while (bk_out_ctrl_queued(b)) {
        r = bk_out_flush(b, true, BK_FLUSH_BUDGET);
        if (!bk_out_ctrl_queued(b))
            break;
        if (r == -EAGAIN)
            r = bk_io_wait(&b->io, true, deadline);
        if (r < 0) {
            bk_out_unqueue_ctrl(b);
            return r;
        }
    }
    return b->io.err;
}

int bk_ctrl_call(broker_t *b, uint32_t op, const void *arg, size_t len,
                 int fd, int64_t deadline, uint8_t **payload, size_t *plen)
{
    struct bk_ctrl *c = b->ctrl;
    uint8_t hdr[BK_HDR_SIZE];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .length = (uint32_t)len, .aux = op, .nfds = fd >= 0 };
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)arg, len } };
    int r = bk_conn_usable(b);

    if (r < 0)
        return r;
    h.stream = next_id(c);
    bk_hdr_encode(&h, hdr);
    free(c->payload);
    c->payload = NULL;
    c->len = 0;
    c->done = false;
    c->id = h.stream;
    c->op = op;
    if (bk_conn_attached(b))
        r = send_queued(b, h.stream, op, arg, len, fd, deadline);
    else
        r = bk_out_send_direct(b, iov, len ? 2 : 1, fd >= 0 ? &fd : NULL,
                               fd >= 0, deadline);
    while (r == 0 && !c->done)
        r = bk_io_wait(&b->io, false, deadline);
    c->id = 0;
    if (r == 0 || c->done) {
        r = c->code;
        if (payload) {
            *payload = c->payload;
            *plen = c->len;
            c->payload = NULL;
        }
    }
    free(c->payload);
    c->payload = NULL;
    bk_conn_kick(b);
    return r;
}

int bk_ctrl_send_async(broker_t *b, uint32_t op, const void *arg,
                       size_t len, uint32_t *id)
{
    struct bk_ctrl *c = b->ctrl;
    struct bk_areq *a = calloc(1, sizeof(*a));
    int r;

    if (!a)
        return -ENOMEM;
    a->id = next_id(c);
    a->op = op;
    r = bk_out_queue_ctrl_async(b, a->id, op, arg, len);
    if (r < 0) {
        free(a);
        return r;
    }
    bk_list_push_tail(&c->areqs, &a->link);
    *id = a->id;
    bk_conn_kick(b);
    return 0;
}

uint32_t bk_ctrl_sub_id(const uint8_t *p, size_t len)
{
    return len == 4 ? bk_get32(p) : 0;
}

/* A SUBSCRIBE granted: the id is live from this frame on.  A malformed
 * grant reads as -EPROTO. */
static int granted(broker_t *b, uint32_t op, int code, const uint8_t *p,
                   size_t len)
{
    uint32_t id;
    int r;

    if (op != BK_OP_SUBSCRIBE || code < 0)
        return code;
    id = bk_ctrl_sub_id(p, len);
    if (id == 0)
        return -EPROTO;
    r = bk_subs_add(b, id);
    return r < 0 ? r : 0;
}

static int on_async_reply(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    struct bk_ctrl *c = b->ctrl;
    struct bk_areq *a = NULL, *it;
    int code;

    bk_list_for_each(it, &c->areqs, struct bk_areq, link)
        if (it->id == h->stream) {
            a = it;
            break;
        }
    if (!a)
        return 0;
    bk_list_unlink(&a->link);
    code = granted(b, a->op, bk_conn_wire_code(h->aux), p, h->length);
    if (c->hooks.async_reply)
        c->hooks.async_reply(b, a->id, code, p, h->length);
    free(a);
    return 0;
}

int bk_ctrl_on_reply(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    struct bk_ctrl *c = b->ctrl;

    if (!c->id || h->stream != c->id || c->done)
        return on_async_reply(b, h, p);
    c->done = true;
    c->code = granted(b, c->op, bk_conn_wire_code(h->aux), p, h->length);
    free(c->payload);
    c->payload = NULL;
    c->len = 0;
    if (h->length) {
        c->payload = malloc(h->length);
        if (!c->payload) {
            if (c->op == BK_OP_SUBSCRIBE && c->code == 0)
                bk_subs_remove(b, bk_ctrl_sub_id(p, h->length));
            c->code = -ENOMEM;
            return 0;
        }
        memcpy(c->payload, p, h->length);
        c->len = h->length;
    }
    return 0;
}
