/*
 * async.c - libbroker on the application's libuv loop: a poll handle on
 * the socket (readable always, writable while output is queued), an idle
 * handle that dispatches messages received outside the poll callback, a
 * timer for partial-message expiry, and broker_call_async with per-call
 * timers.
 *
 * User callbacks only run from the top of a libuv callback (or, for
 * cancellations, from broker_close), never while the library is in the
 * middle of reading or writing, so they may call any libbroker function,
 * including broker_close.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "client.h"

struct bk_acall {
    struct bk_acall *prev, *next;   /* pending calls of the connection */
    bool linked;
    broker_t *b;
    uint32_t sid;
    broker_reply_cb cb;
    void *ud;
    bool has_timer;
    uv_timer_t timer;
};

struct bk_async {
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t expire;
    broker_callbacks_t cbs;
    void *ud;
    int events;                     /* current poll mask */
    unsigned open_handles;
    bool reported;                  /* on_disconnect has run */
    struct bk_acall *calls;
};

static void update(broker_t *b);

/* ---- async calls ----------------------------------------------------------- */

static void calls_link(struct bk_async *as, struct bk_acall *ac)
{
    ac->prev = NULL;
    ac->next = as->calls;
    if (as->calls)
        as->calls->prev = ac;
    as->calls = ac;
    ac->linked = true;
}

static void calls_unlink(struct bk_async *as, struct bk_acall *ac)
{
    if (!ac->linked)
        return;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        as->calls = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    ac->prev = ac->next = NULL;
    ac->linked = false;
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
void bk_async_settle(broker_t *b, struct bk_acall *ac)
{
    if (b->as)
        calls_unlink(b->as, ac);
    if (ac->has_timer)
        uv_timer_stop(&ac->timer);
}

/* Detach ac from its stream and run its callback with err. */
static void acall_fail(broker_t *b, struct bk_acall *ac, int err)
{
    struct bk_stream *s = bk_stream_find(b, ac->sid);

    calls_unlink(b->as, ac);
    if (ac->has_timer)
        uv_timer_stop(&ac->timer);
    if (s && s->acall == ac)
        s->acall = NULL;
    ac->cb(b, err, NULL, ac->ud);
    acall_free(ac);
}

static void acall_answer(broker_t *b, struct bk_lmsg *m)
{
    struct bk_acall *ac = m->acall;

    m->acall = NULL;
    if (m->pub.kind == BROKER_MSG_DATA) {
        ac->cb(b, 0, &m->pub, ac->ud);
    } else {
        int err = m->pub.code ? m->pub.code : -ENODATA;
        bk_lmsg_free(m);
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
        bk_stream_abort(b, ac->sid, -ETIMEDOUT);
    }
    acall_fail(b, ac, -ETIMEDOUT);
    update(b);
}

/* ---- dispatch ------------------------------------------------------------- */

static void report_disconnect(broker_t *b)
{
    struct bk_async *as = b->as;

    as->reported = true;
    uv_poll_stop(&as->poll);
    as->events = 0;
    uv_timer_stop(&as->expire);
    while (as->calls) {
        acall_fail(b, as->calls, b->err);
        if (b->closing)
            return;
    }
    if (as->cbs.on_disconnect)
        as->cbs.on_disconnect(b, b->err, as->ud);
}

static void dispatch(broker_t *b)
{
    struct bk_async *as = b->as;
    struct bk_lmsg *m;

    while (!b->closing && (m = bk_fifo_pop(b))) {
        if (m->acall)
            acall_answer(b, m);
        else if (as->cbs.on_message)
            as->cbs.on_message(b, &m->pub, as->ud);
        else
            bk_lmsg_free(m);
    }
    if (!b->closing && b->err && !as->reported)
        report_disconnect(b);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    broker_t *b = h->data;

    if (status < 0) {
        /* libuv reports a socket error (POLLERR) as UV_EBADF and stops the
         * handle; reading gives the packets still queued and the real
         * cause (EOF, ECONNRESET). */
        bk_pump(b, UINT32_MAX);
        bk_set_fatal(b, status == UV_EBADF ? -ECONNRESET : status);
    } else {
        if (events & UV_READABLE)
            bk_pump(b, BK_PUMP_BUDGET);
        if ((events & UV_WRITABLE) && !b->err)
            bk_out_flush(b, true, BK_FLUSH_BUDGET);
    }
    dispatch(b);
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

    bk_run_expiry(b);
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
    if (b->err || as->reported) {
        if (as->events)
            uv_poll_stop(&as->poll);
        as->events = 0;
    } else {
        int want = UV_READABLE | (bk_out_pending(b) ? UV_WRITABLE : 0);
        if (want != as->events) {
            int r = uv_poll_start(&as->poll, want, on_poll);
            if (r < 0)
                bk_set_fatal(b, r);
            else
                as->events = want;
        }
    }
    if (b->fifo_head || (b->err && !as->reported))
        uv_idle_start(&as->idle, on_idle);
    else
        uv_idle_stop(&as->idle);
    if (!b->err && bk_reasm_next_deadline(&b->reasm, &when)) {
        uint64_t now = bk_now_ms();
        uv_timer_start(&as->expire, on_expire, when > now ? when - now : 0,
                       0);
    } else {
        uv_timer_stop(&as->expire);
    }
}

void bk_async_kick(broker_t *b)
{
    update(b);
}

/* ---- attach / close -------------------------------------------------------- */

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
    as = calloc(1, sizeof(*as));
    if (!as)
        return -ENOMEM;
    r = uv_poll_init(loop, &as->poll, b->fd);
    if (r < 0) {
        free(as);
        return r;
    }
    uv_idle_init(loop, &as->idle);
    uv_timer_init(loop, &as->expire);
    as->poll.data = as->idle.data = as->expire.data = b;
    as->open_handles = 3;
    as->loop = loop;
    as->ud = userdata;
    if (cbs)
        as->cbs = *cbs;
    b->as = as;
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
    bk_free(b);
}

/* broker_close on an attached connection: cancel what waits, then close
 * the handles; memory and the socket go once libuv has released them. */
void bk_async_close(broker_t *b)
{
    struct bk_async *as = b->as;
    struct bk_lmsg *m;

    b->closing = true;
    while (as->calls)
        acall_fail(b, as->calls, -ECANCELED);
    while ((m = bk_fifo_pop(b))) {
        if (m->acall) {
            struct bk_acall *ac = m->acall;
            m->acall = NULL;
            bk_lmsg_free(m);
            ac->cb(b, -ECANCELED, NULL, ac->ud);
            acall_free(ac);
        } else {
            bk_lmsg_free(m);
        }
    }
    uv_close((uv_handle_t *)&as->poll, on_handle_closed);
    uv_close((uv_handle_t *)&as->idle, on_handle_closed);
    uv_close((uv_handle_t *)&as->expire, on_handle_closed);
}

/* ---- public async API ----------------------------------------------------- */

BROKER_API int broker_call_async(broker_t *b, const char *name,
                                 const void *data, size_t len,
                                 int timeout_ms, broker_reply_cb cb,
                                 void *userdata)
{
    struct bk_acall *ac;
    struct bk_stream *s;
    uint32_t sid;
    size_t nl;
    int r = bk_check_send(b, data, len, NULL, 0);

    if (r < 0)
        return r;
    if (!b->as || !cb || !bk_name_ok(b, name, &nl))
        return -EINVAL;
    r = bk_sid_alloc(b, &sid);
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
    if (timeout_ms >= 0) {
        uv_timer_init(b->as->loop, &ac->timer);
        ac->timer.data = ac;
        ac->has_timer = true;
    }
    s->acall = ac;
    calls_link(b->as, ac);
    r = bk_send_queued(b, sid, BK_F_OPEN | BK_F_NAME, name, 0, data, len,
                       NULL, 0, NULL);
    if (r < 0 && !ac->linked) {
        /* answered while the send failed: the callback reports it */
        update(b);
        return 0;
    }
    if (r < 0) {
        calls_unlink(b->as, ac);
        if ((s = bk_stream_find(b, sid))) {
            s->acall = NULL;
            bk_stream_forget(b, s);
        }
        acall_free(ac);
        update(b);
        return r;
    }
    if (ac->has_timer && ac->linked)
        uv_timer_start(&ac->timer, on_call_timeout, (uint64_t)timeout_ms, 0);
    update(b);
    return 0;
}

BROKER_API size_t broker_pending(const broker_t *b)
{
    return b ? b->queued_bytes + b->st_len : 0;
}
