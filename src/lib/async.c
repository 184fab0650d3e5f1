/*
 * async.c - libbroker layer 7: the connection on the application's libuv
 * loop (prefix bk_async_): a poll handle on
 * the socket (readable unless the FIFO is full, writable while output is
 * queued), an idle
 * handle that dispatches messages received outside the poll callback, a
 * timer for partial-message expiry, broker_call_async with per-call
 * timers, and broker_subscribe_async (a CTRL request of ctrl.c's async
 * kind, whose reply ctrl.c hands to async_reply below).
 *
 * User callbacks only run from the top of a libuv callback (or, for
 * cancellations, from broker_close), never while the library is in the
 * middle of reading or writing, so they may call any libbroker function,
 * including broker_close.
 *
 * Ownership: b->as (struct bk_async) lives from broker_attach until its
 * three handles are closed after broker_close, which then frees the whole
 * handle.  A struct bk_acall (a call, or a subscription request) is owned
 * by its connection's list of pending calls until its answer arrives (the
 * answering message in the FIFO then points at it, stream.c, in.c and
 * ctrl.c tell us through hooks), and is freed after its callback ran
 * (once its timer handle is closed).
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "outq.h"
#include "stream.h"
#include "flow.h"
#include "ctrl.h"
#include "in.h"
#include "send.h"
#include "pubsub.h"
#include "handle.h"
#include "async.h"

struct bk_acall {
    bk_list_t link;                 /* on as->calls while pending */
    broker_t *b;
    uint32_t sid;                   /* a call's stream, or 0 */
    uint32_t ctrl_id;               /* a subscription's request id */
    broker_reply_cb cb;             /* a call's callback, or NULL */
    broker_sub_cb sub_cb;           /* a subscription's, or NULL */
    void *ud;
    bool has_timer;
    uv_timer_t timer;
};

struct bk_async {
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t expire;
    uv_prepare_t prepare;           /* writes output before the loop waits */
    broker_callbacks_t cbs;
    void *ud;
    int events;                     /* current poll mask */
    bool prepared;                  /* prepare is active */
    bool wblocked;                  /* the last flush left output: wait
                                       for the socket to be writable */
    unsigned open_handles;
    bool reported;                  /* on_disconnect has run */
    bk_list_t calls;                /* struct bk_acall, newest first */
};

static void update(broker_t *b);

/* Write what the socket takes; the rest waits for it to be writable. */
static void flush_out(broker_t *b)
{
    b->as->wblocked = bk_out_flush(b, true, BK_FLUSH_BUDGET) == -EAGAIN;
}

/* ---- async calls -------------------------------------------------------- */

static struct bk_acall *calls_first(struct bk_async *as)
{
    return bk_list_first_entry(&as->calls, struct bk_acall, link);
}

static void acall_closed(uv_handle_t *h)
{
    free(h->data);
}

static void acall_free(struct bk_acall *ac)
{
    if (ac->has_timer)
        uv_close((uv_handle_t *)&ac->timer, acall_closed);
    else
        free(ac);
}

/* The answer to ac has arrived (it travels in the FIFO tagged with ac):
 * it can no longer time out. */
static void settle(struct bk_acall *ac)
{
    bk_list_unlink(&ac->link);
    if (ac->has_timer)
        uv_timer_stop(&ac->timer);
}

static void on_call_answered(broker_t *b, struct bk_acall *ac)
{
    (void)b;
    settle(ac);
}

/* s is forgotten while ac waits on it: the call ends with -ECANCELED,
 * reported through the FIFO like an answer. */
static void on_call_dropped(broker_t *b, struct bk_stream *s)
{
    struct bk_msg *m = bk_msg_event(BROKER_MSG_ERROR, s->id, 0, -ECANCELED,
                                    NULL, 0);

    if (m) {
        m->acall = s->acall;
        settle(s->acall);
        bk_in_push(b, m);
    } else {
        bk_io_fail(&b->io, -ENOMEM);
    }
}

static const struct bk_stream_hooks async_stream_hooks = {
    .call_dropped = on_call_dropped,
};

static const struct bk_in_hooks async_in_hooks = {
    .call_answered = on_call_answered,
};

/* The reply to a subscription request (read just now; ctrl.c has made a
 * granted id live already): it waits in the FIFO, in order with the
 * messages around it, for dispatch() to run the callback.  A reply
 * nobody waits for (an unsubscription) is dropped. */
static void on_async_reply(broker_t *b, uint32_t id, int code,
                           const uint8_t *p, size_t len)
{
    struct bk_acall *ac = NULL, *it;
    struct bk_msg *m;

    if (!b->as)
        return;
    bk_list_for_each(it, &b->as->calls, struct bk_acall, link)
        if (it->sub_cb && it->ctrl_id == id) {
            ac = it;
            break;
        }
    if (!ac)
        return;
    m = bk_msg_event(BROKER_MSG_ERROR, 0, 0, code, NULL, 0);
    if (!m) {
        bk_io_fail(&b->io, -ENOMEM);
        return;
    }
    m->pub.sub_id = code == 0 ? bk_ctrl_sub_id(p, len) : 0;
    m->acall = ac;
    settle(ac);
    bk_in_push(b, m);
}

static const struct bk_ctrl_hooks async_ctrl_hooks = {
    .async_reply = on_async_reply,
};

/* Run ac's callback with an error. */
static void acall_report_err(broker_t *b, struct bk_acall *ac, int err)
{
    if (ac->sub_cb)
        ac->sub_cb(b, err, 0, ac->ud);
    else
        ac->cb(b, err, NULL, ac->ud);
}

/* Detach ac from its stream and run its callback with err. */
static void acall_fail(broker_t *b, struct bk_acall *ac, int err)
{
    struct bk_stream *s = ac->sid ? bk_stream_find(b, ac->sid) : NULL;

    bk_list_unlink(&ac->link);
    if (ac->has_timer)
        uv_timer_stop(&ac->timer);
    if (s && s->acall == ac)
        s->acall = NULL;
    acall_report_err(b, ac, err);
    acall_free(ac);
}

static void acall_answer(broker_t *b, struct bk_msg *m)
{
    struct bk_acall *ac = m->acall;

    m->acall = NULL;
    if (ac->sub_cb) {
        int err = m->pub.code;
        uint32_t id = m->pub.sub_id;

        bk_msg_free(m);
        ac->sub_cb(b, err, id, ac->ud);
    } else if (m->pub.kind == BROKER_MSG_DATA) {
        ac->cb(b, 0, &m->pub, ac->ud);
    } else {
        int err = m->pub.code ? m->pub.code : -ENODATA;
        bk_msg_free(m);
        ac->cb(b, err, NULL, ac->ud);
    }
    acall_free(ac);
}

static void on_call_timeout(uv_timer_t *t)
{
    struct bk_acall *ac = t->data;
    broker_t *b = ac->b;
    struct bk_stream *s = bk_stream_find(b, ac->sid);

    if (s && s->acall == ac) {
        s->acall = NULL;
        bk_in_abort_stream(b, ac->sid, -ETIMEDOUT);
    }
    acall_fail(b, ac, -ETIMEDOUT);
    update(b);
}

/* ---- dispatch ----------------------------------------------------------- */

static void report_disconnect(broker_t *b)
{
    struct bk_async *as = b->as;

    as->reported = true;
    uv_poll_stop(&as->poll);
    as->events = 0;
    uv_timer_stop(&as->expire);
    while (!bk_list_empty(&as->calls)) {
        acall_fail(b, calls_first(as), b->io.err);
        if (b->closing)
            return;
    }
    if (as->cbs.on_disconnect)
        as->cbs.on_disconnect(b, b->io.err, as->ud);
}

static void dispatch(broker_t *b)
{
    struct bk_async *as = b->as;
    struct bk_msg *m;

    while (!b->closing && (m = bk_in_pop(b))) {
        if (m->acall)
            acall_answer(b, m);
        else if (as->cbs.on_message)
            as->cbs.on_message(b, &m->pub, as->ud);
        else
            bk_msg_free(m);
    }
    if (!b->closing && b->io.err && !as->reported)
        report_disconnect(b);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    broker_t *b = h->data;

    if (status < 0) {
        /* libuv reports a socket error (POLLERR) as UV_EBADF and stops the
         * handle; reading gives the packets still queued and the real
         * cause (EOF, ECONNRESET). */
        bk_in_pump_past(b, UINT32_MAX);
        bk_io_fail(&b->io, status == UV_EBADF ? -ECONNRESET : status);
    } else {
        if (events & UV_READABLE)
            bk_in_pump(b, BK_PUMP_BUDGET);
        if ((events & UV_WRITABLE) && !b->io.err)
            flush_out(b);
    }
    dispatch(b);
    update(b);
}

/* Before the loop waits: everything sent during this pass leaves, packed
 * (outq.c), in one write when it fits a packet. */
static void on_prepare(uv_prepare_t *h)
{
    broker_t *b = h->data;

    if (!b->io.err)
        flush_out(b);
    update(b);
}

static void on_idle(uv_idle_t *h)
{
    broker_t *b = h->data;

    dispatch(b);
    update(b);
}

static void on_expire(uv_timer_t *h)
{
    broker_t *b = h->data;

    bk_in_run_expiry(b);
    dispatch(b);
    update(b);
}

/* Bring the handles in line with the connection's state. */
static void update(broker_t *b)
{
    struct bk_async *as = b->as;
    uint64_t when;

    if (!as || b->closing)
        return;
    if (b->io.err || as->reported) {
        if (as->events)
            uv_poll_stop(&as->poll);
        as->events = 0;
        uv_prepare_stop(&as->prepare);
        as->prepared = false;
    } else {
        bool out = bk_out_pending(b);
        /* a full FIFO stops reading until dispatch() has emptied it */
        int want = (bk_in_full(b) ? 0 : UV_READABLE) |
                   (out && as->wblocked ? UV_WRITABLE : 0);
        bool prep = out && !as->wblocked;

        if (prep != as->prepared) {
            if (prep)
                uv_prepare_start(&as->prepare, on_prepare);
            else
                uv_prepare_stop(&as->prepare);
            as->prepared = prep;
        }
        if (want != as->events && want == 0) {
            uv_poll_stop(&as->poll);
            as->events = 0;
        } else if (want != as->events) {
            int r = uv_poll_start(&as->poll, want, on_poll);
            if (r < 0)
                bk_io_fail(&b->io, r);
            else
                as->events = want;
        }
    }
    if (bk_in_has_msgs(b) || (b->io.err && !as->reported))
        uv_idle_start(&as->idle, on_idle);
    else
        uv_idle_stop(&as->idle);
    if (!b->io.err && bk_in_next_deadline(b, &when)) {
        uint64_t now = bk_io_now_ms();
        uv_timer_start(&as->expire, on_expire, when > now ? when - now : 0,
                       0);
    } else {
        uv_timer_stop(&as->expire);
    }
}

static void kick(broker_t *b)
{
    update(b);
}

/* ---- attach / close ----------------------------------------------------- */

BROKER_API int broker_attach(broker_t *b, struct uv_loop_s *loop,
                             const broker_callbacks_t *cbs, void *userdata)
{
    struct bk_async *as;
    int r;

    if (!b || !loop)
        return -EINVAL;
    if (b->as)
        return -EBUSY;
    if (b->closing)
        return -ECANCELED;
    if (b->rc)                  /* BROKER_OPT_RECONNECT: blocking only */
        return -ENOTSUP;
    as = calloc(1, sizeof(*as));
    if (!as)
        return -ENOMEM;
    r = uv_poll_init(loop, &as->poll, b->io.fd);
    if (r < 0) {
        free(as);
        return r;
    }
    uv_idle_init(loop, &as->idle);
    uv_timer_init(loop, &as->expire);
    uv_prepare_init(loop, &as->prepare);
    as->poll.data = as->idle.data = as->expire.data = as->prepare.data = b;
    as->open_handles = 4;
    as->loop = loop;
    as->ud = userdata;
    if (cbs)
        as->cbs = *cbs;
    bk_list_init(&as->calls);
    b->as = as;
    b->kick = kick;
    bk_stream_set_hooks(b, &async_stream_hooks);
    bk_in_set_hooks(b, &async_in_hooks);
    bk_ctrl_set_hooks(b, &async_ctrl_hooks);
    update(b);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    broker_t *b = h->data;

    if (--b->as->open_handles)
        return;
    free(b->as);
    b->as = NULL;
    bk_handle_free(b);
}

void bk_async_close(broker_t *b)
{
    struct bk_async *as = b->as;
    struct bk_msg *m;

    /* what this pass sent still leaves if the socket takes it */
    if (!b->io.err)
        (void)bk_out_flush(b, true, BK_FLUSH_BUDGET);
    b->closing = true;
    while (!bk_list_empty(&as->calls))
        acall_fail(b, calls_first(as), -ECANCELED);
    while ((m = bk_in_pop(b))) {
        if (m->acall) {
            struct bk_acall *ac = m->acall;
            m->acall = NULL;
            bk_msg_free(m);
            acall_report_err(b, ac, -ECANCELED);
            acall_free(ac);
        } else {
            bk_msg_free(m);
        }
    }
    uv_close((uv_handle_t *)&as->poll, on_handle_closed);
    uv_close((uv_handle_t *)&as->idle, on_handle_closed);
    uv_close((uv_handle_t *)&as->expire, on_handle_closed);
    uv_close((uv_handle_t *)&as->prepare, on_handle_closed);
}

/* ---- public async API --------------------------------------------------- */

BROKER_API int broker_call_async(broker_t *b, const char *name,
                                 const void *data, size_t len,
                                 int timeout_ms, broker_reply_cb cb,
                                 void *userdata)
{
    struct bk_acall *ac;
    struct bk_stream *s;
    uint32_t sid;
    size_t nl;
    int r = bk_send_check(b, data, len, NULL, 0);

    if (r < 0)
        return r;
    if (!b->as || !cb || !bk_conn_name_ok(b, name, &nl))
        return -EINVAL;
    if (bk_flow_busy(b, name, 0, 0))
        return -EAGAIN;
    r = bk_stream_alloc_id(b, &sid);
    if (r < 0)
        return r;
    ac = calloc(1, sizeof(*ac));
    if (!ac)
        return -ENOMEM;
    s = bk_stream_add(b, sid);
    if (!s) {
        free(ac);
        return -ENOMEM;
    }
    ac->b = b;
    ac->sid = sid;
    ac->cb = cb;
    ac->ud = userdata;
    bk_list_init(&ac->link);
    if (timeout_ms >= 0) {
        uv_timer_init(b->as->loop, &ac->timer);
        ac->timer.data = ac;
        ac->has_timer = true;
    }
    s->acall = ac;
    bk_list_push_head(&b->as->calls, &ac->link);
    r = bk_send_queued(b, sid, BK_F_OPEN | BK_F_NAME, name, 0, data, len,
                       NULL, 0, NULL);
    if (r < 0 && !bk_list_linked(&ac->link)) {
        /* answered while the send failed: the callback reports it */
        update(b);
        return 0;
    }
    if (r < 0) {
        bk_list_unlink(&ac->link);
        if ((s = bk_stream_find(b, sid))) {
            s->acall = NULL;
            bk_stream_forget(b, s);
        }
        acall_free(ac);
        update(b);
        return r;
    }
    if (ac->has_timer && bk_list_linked(&ac->link))
        uv_timer_start(&ac->timer, on_call_timeout, (uint64_t)timeout_ms, 0);
    update(b);
    return 0;
}

BROKER_API int broker_subscribe_async(broker_t *b, const char *pattern,
                                      const char *group,
                                      broker_sub_policy_t policy,
                                      broker_sub_cb cb, void *userdata)
{
    uint8_t req[BK_SUB_REQ_MAX];
    struct bk_acall *ac;
    size_t len;
    int r = bk_pubsub_sub_req(b, pattern, group, (int)policy, req, &len);

    if (r < 0)
        return r;
    if (!b->as || !cb)
        return -EINVAL;
    r = bk_conn_usable(b);
    if (r < 0)
        return r;
    ac = calloc(1, sizeof(*ac));
    if (!ac)
        return -ENOMEM;
    ac->b = b;
    ac->sub_cb = cb;
    ac->ud = userdata;
    bk_list_init(&ac->link);
    r = bk_ctrl_send_async(b, BK_OP_SUBSCRIBE, req, len, &ac->ctrl_id);
    if (r < 0) {
        free(ac);
        return r;
    }
    bk_list_push_head(&b->as->calls, &ac->link);
    update(b);
    return 0;
}

BROKER_API size_t broker_pending(const broker_t *b)
{
    return b ? bk_out_backlog(b) : 0;
}
