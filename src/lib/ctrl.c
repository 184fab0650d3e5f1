/*
 * ctrl.c - libbroker layer 4: one control request at a time.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "outq.h"
#include "ctrl.h"

struct bk_ctrl {
    uint32_t next;              /* id of the next request */
    uint32_t id;                /* the request in flight, or 0 */
    bool done;                  /* its reply arrived */
    int code;                   /* the reply's answer, negative or 0 */
    uint8_t *payload;
    size_t len;
};

int bk_ctrl_init(broker_t *b)
{
    struct bk_ctrl *c = calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    c->next = 1;
    b->ctrl = c;
    return 0;
}

void bk_ctrl_fini(broker_t *b)
{
    if (!b->ctrl)
        return;
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
    h.stream = c->next++;
    if (c->next == 0)
        c->next = 1;
    bk_hdr_encode(&h, hdr);
    free(c->payload);
    c->payload = NULL;
    c->len = 0;
    c->done = false;
    c->id = h.stream;
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

int bk_ctrl_on_reply(broker_t *b, const bk_hdr_t *h, const uint8_t *p)
{
    struct bk_ctrl *c = b->ctrl;

    if (!c->id || h->stream != c->id || c->done)
        return 0;
    c->done = true;
    c->code = bk_conn_wire_code(h->aux);
    free(c->payload);
    c->payload = NULL;
    c->len = 0;
    if (h->length) {
        c->payload = malloc(h->length);
        if (!c->payload) {
            c->code = -ENOMEM;
            return 0;
        }
        memcpy(c->payload, p, h->length);
        c->len = h->length;
    }
    return 0;
}
