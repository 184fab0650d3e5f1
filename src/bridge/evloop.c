/*
 * evloop.c - libnats's sockets on the bridge's libuv loop (prefix
 * bn_evloop_): the four callbacks of natsOptions_SetEventLoop.
 *
 * libnats calls them from the loop's thread and, while it reconnects,
 * from threads of its own.  Every request (attach a new socket, start or
 * stop polling for reading or writing, detach) is applied on the loop's
 * thread in the order libnats made it: at once when it comes from the
 * loop's thread and nothing is waiting, else through a queue and a
 * uv_async_t.  The polling state (reading, writing) lives only on the
 * loop's thread, and an attach always starts a socket reading.
 *
 * A socket's poll handle is closed as soon as libnats stops polling it
 * (it does so before it closes the socket).  Closing a poll handle makes
 * libuv drop its descriptor number from epoll; when that number already
 * belongs to the new socket of another connection (both connections of
 * the bridge reconnect at once after a server dies), that connection
 * would never be polled again, "connected" with its messages unread in
 * the kernel.  So a poll handle closed late re-arms any other handle on
 * the same number.  (nats/adapters/libuv.h closes the old handle only at
 * the next attach, and lost the group connection that way in
 * test_bridge's server kill.)
 */
#include <errno.h>
#include <stdlib.h>
#include "bridge.h"

enum { BN_EV_ATTACH, BN_EV_READ, BN_EV_WRITE, BN_EV_DETACH };

typedef struct bn_evreq {
    struct bn_evreq *next;
    int op;
    bool add;                   /* READ, WRITE: start (true) or stop */
    natsSock sock;              /* ATTACH */
} bn_evreq_t;

typedef struct bn_evconn {
    struct bn_evconn *next;     /* every connection (the loop's thread) */
    natsConnection *nc;
    uv_loop_t *loop;
    uv_thread_t loop_thread;
    uv_async_t async;           /* wakes the loop for queued requests */
    uv_mutex_t lock;            /* head, tail */
    bn_evreq_t *head, *tail;
    uv_poll_t *poll;            /* the current socket's, or NULL */
    natsSock fd;                /* its socket */
    bool reading, writing;
    bool detached;
} bn_evconn_t;

static bn_evconn_t *bn_evloop_all;

static void bn_evloop_update(bn_evconn_t *c);

static void bn_evloop_on_poll(uv_poll_t *h, int status, int events)
{
    bn_evconn_t *c = h->data;

    /* an error is handed to libnats as a read: it then sees the socket's
     * state and reconnects */
    if (status < 0 || (events & UV_READABLE))
        natsConnection_ProcessReadEvent(c->nc);
    if (status == 0 && (events & UV_WRITABLE) && !c->detached &&
        c->poll == h)
        natsConnection_ProcessWriteEvent(c->nc);
}

static void bn_evloop_free_poll(uv_handle_t *h)
{
    free(h);
}

static void bn_evloop_free_conn(uv_handle_t *h)
{
    bn_evconn_t *c = h->data, **p;

    for (p = &bn_evloop_all; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    uv_mutex_destroy(&c->lock);
    free(c);
}

static void bn_evloop_drop_poll(bn_evconn_t *c)
{
    if (!c->poll)
        return;
    uv_close((uv_handle_t *)c->poll, bn_evloop_free_poll);
    c->poll = NULL;
    /* libuv took c->fd out of epoll: it may be another's socket now */
    for (bn_evconn_t *o = bn_evloop_all; o; o = o->next)
        if (o != c && o->poll && o->fd == c->fd) {
            uv_poll_stop(o->poll);
            bn_evloop_update(o);
        }
}

static void bn_evloop_update(bn_evconn_t *c)
{
    int ev = (c->reading ? UV_READABLE : 0) | (c->writing ? UV_WRITABLE : 0);

    if (!c->poll)
        return;
    if (ev)
        uv_poll_start(c->poll, ev, bn_evloop_on_poll);
    else
        uv_poll_stop(c->poll);
}

/* libnats stops reading only to leave the socket (disconnected, or
 * closing), before it closes it: the handle goes now, while the number
 * is still this socket's. */
static void bn_evloop_stopped(bn_evconn_t *c)
{
    if (!c->reading && !c->writing)
        bn_evloop_drop_poll(c);
}

/* One request, on the loop's thread.  NATS_ERR when a socket cannot be
 * polled. */
static natsStatus bn_evloop_apply(bn_evconn_t *c, const bn_evreq_t *r)
{
    if (c->detached)
        return NATS_OK;
    switch (r->op) {
    case BN_EV_ATTACH:
        bn_evloop_drop_poll(c);
        c->poll = malloc(sizeof(*c->poll));
        if (!c->poll || uv_poll_init_socket(c->loop, c->poll, r->sock) < 0) {
            free(c->poll);
            c->poll = NULL;
            return NATS_ERR;
        }
        c->poll->data = c;
        c->fd = r->sock;
        c->reading = true;
        c->writing = false;
        break;
    case BN_EV_READ:
        c->reading = r->add;
        if (!r->add) {
            c->writing = false;     /* libnats stops writing as well */
            bn_evloop_stopped(c);
        }
        break;
    case BN_EV_WRITE:
        c->writing = r->add;
        break;
    case BN_EV_DETACH:
        c->detached = true;
        bn_evloop_drop_poll(c);
        uv_close((uv_handle_t *)&c->async, bn_evloop_free_conn);
        return NATS_OK;
    }
    bn_evloop_update(c);
    return NATS_OK;
}

static void bn_evloop_on_async(uv_async_t *a)
{
    bn_evconn_t *c = a->data;

    for (;;) {
        bn_evreq_t *r;

        uv_mutex_lock(&c->lock);
        r = c->head;
        if (r) {
            c->head = r->next;
            if (!c->head)
                c->tail = NULL;
        }
        uv_mutex_unlock(&c->lock);
        if (!r)
            return;
        /* libnats holds no lock here: it may close the connection (and
         * then detach) */
        if (bn_evloop_apply(c, r) != NATS_OK)
            natsConnection_Close(c->nc);
        free(r);
        if (c->detached)        /* the rest (none is expected) with c */
            break;
    }
    while (c->head) {
        bn_evreq_t *r = c->head;
        c->head = r->next;
        free(r);
    }
}

/* Apply now when on the loop's thread with nothing queued, else queue. */
static natsStatus bn_evloop_request(bn_evconn_t *c, int op, bool add,
                                    natsSock sock)
{
    uv_thread_t self = uv_thread_self();
    bn_evreq_t now = { .op = op, .add = add, .sock = sock }, *r;

    uv_mutex_lock(&c->lock);
    if (!c->head && uv_thread_equal(&self, &c->loop_thread)) {
        uv_mutex_unlock(&c->lock);
        return bn_evloop_apply(c, &now);    /* libnats handles an error */
    }
    r = malloc(sizeof(*r));
    if (!r) {
        uv_mutex_unlock(&c->lock);
        return NATS_NO_MEMORY;
    }
    *r = now;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    uv_mutex_unlock(&c->lock);
    uv_async_send(&c->async);
    return NATS_OK;
}

natsStatus bn_evloop_attach(void **userData, void *loop, natsConnection *nc,
                            natsSock socket)
{
    bn_evconn_t *c = *userData;
    bool first = !c;
    natsStatus s;

    if (first) {                /* from natsConnection_Connect, on the
                                   loop's thread */
        c = calloc(1, sizeof(*c));
        if (!c)
            return NATS_NO_MEMORY;
        c->nc = nc;
        c->loop = loop;
        c->loop_thread = uv_thread_self();
        if (uv_mutex_init(&c->lock) < 0) {
            free(c);
            return NATS_ERR;
        }
        if (uv_async_init(c->loop, &c->async, bn_evloop_on_async) < 0) {
            uv_mutex_destroy(&c->lock);
            free(c);
            return NATS_ERR;
        }
        c->async.data = c;
        c->fd = (natsSock)-1;
        c->next = bn_evloop_all;
        bn_evloop_all = c;
        *userData = c;
    }
    s = bn_evloop_request(c, BN_EV_ATTACH, true, socket);
    if (s != NATS_OK && first) {    /* libnats will not detach it */
        bn_evloop_apply(c, &(bn_evreq_t){ .op = BN_EV_DETACH });
        *userData = NULL;
    }
    return s;
}

natsStatus bn_evloop_read(void *userData, bool add)
{
    return bn_evloop_request(userData, BN_EV_READ, add, (natsSock)-1);
}

natsStatus bn_evloop_write(void *userData, bool add)
{
    return bn_evloop_request(userData, BN_EV_WRITE, add, (natsSock)-1);
}

natsStatus bn_evloop_detach(void *userData)
{
    return bn_evloop_request(userData, BN_EV_DETACH, false,
                             (natsSock)-1);
}
