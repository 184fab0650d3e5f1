/*
 * client.c - libbroker: connection, handshake, streams table, received
 * message objects, options and control requests.
 */
#include "config.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "sockio.h"
#include "client.h"

_Static_assert(BK_REASM_OPEN == BROKER_MSGF_OPEN &&
               BK_REASM_CLOSE == BROKER_MSGF_CLOSE &&
               BK_REASM_CHUNK == BROKER_MSGF_CHUNK &&
               BK_REASM_LAST == BROKER_MSGF_LAST,
               "reassembly flags must match BROKER_MSGF_*");

/* ---- time and failure ---------------------------------------------------- */

uint64_t bk_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t bk_deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return -1;
    return (int64_t)bk_now_ms() + timeout_ms;
}

void bk_set_fatal(broker_t *b, int err)
{
    if (!b->err)
        b->err = err < 0 ? err : -EPROTO;
}

void bk_conn_lost(broker_t *b)
{
    bk_set_fatal(b, b->bye ? -ESHUTDOWN : -ECONNRESET);
}

/* 0 if new work may start on b, else the error to return. */
int bk_usable(const broker_t *b)
{
    if (b->closing)
        return -ECANCELED;
    if (b->err)
        return b->err;
    if (b->bye)
        return -ESHUTDOWN;
    return 0;
}

/* ---- streams ------------------------------------------------------------- */

struct bk_stream *bk_stream_find(broker_t *b, uint32_t id)
{
    uint8_t key[4];
    bk_hnode_t *n;

    bk_put32(key, id);
    n = bk_ht_find(&b->streams, key, sizeof(key));
    return n ? bk_container_of(n, struct bk_stream, node) : NULL;
}

struct bk_stream *bk_stream_add(broker_t *b, uint32_t id)
{
    struct bk_stream *s = b->spare;

    if (s) {
        b->spare = s->rnext;
        b->nspare--;
        memset(s, 0, sizeof(*s));
    } else {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
    }
    s->id = id;
    s->ours = !(id & BK_SID_PEER_BIT);
    bk_put32(s->key, id);
    s->node.key = s->key;
    s->node.keylen = sizeof(s->key);
    if (bk_ht_insert(&b->streams, &s->node) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* Remove s from every structure and free it with its pending output.  An
 * async call still waiting on it completes with -ECANCELED. */
void bk_stream_forget(broker_t *b, struct bk_stream *s)
{
    if (s->acall) {
        struct bk_lmsg *m = bk_lmsg_event(BROKER_MSG_ERROR, s->id, 0,
                                          -ECANCELED, NULL, 0);
        if (m) {
            m->acall = s->acall;
            bk_async_settle(b, s->acall);
            bk_fifo_push(b, m);
        } else {
            bk_set_fatal(b, -ENOMEM);
        }
        s->acall = NULL;
    }
    bk_stream_drop_output(b, s);
    bk_ht_remove(&b->streams, &s->node);
    free(s->name);
    s->name = NULL;
    if (b->nspare < BK_MAX_SPARE && !b->closing) {
        s->rnext = b->spare;
        b->spare = s;
        b->nspare++;
    } else {
        free(s);
    }
}

int bk_sid_alloc(broker_t *b, uint32_t *sid)
{
    for (size_t tries = 0; tries <= b->streams.count; tries++) {
        uint32_t id = b->sid_next;

        b->sid_next = id >= BK_SID_MAX_LOCAL ? 1 : id + 1;
        if (!bk_stream_find(b, id)) {
            *sid = id;
            return 0;
        }
    }
    return -ENOSR;
}

bool bk_name_ok(const broker_t *b, const char *name, size_t *len)
{
    size_t max = b->lim.max_name;
    size_t n;

    if (!name)
        return false;
    n = strnlen(name, max + 1);
    if (!bk_name_valid(name, n, max))
        return false;
    *len = n;
    return true;
}

/* ---- received messages ---------------------------------------------------- */

void bk_fifo_push(broker_t *b, struct bk_lmsg *m)
{
    m->next = NULL;
    if (b->fifo_tail)
        b->fifo_tail->next = m;
    else
        b->fifo_head = m;
    b->fifo_tail = m;
    b->fifo_len++;
}

struct bk_lmsg *bk_fifo_pop(broker_t *b)
{
    struct bk_lmsg *m = b->fifo_head;

    if (!m)
        return NULL;
    b->fifo_head = m->next;
    if (!b->fifo_head)
        b->fifo_tail = NULL;
    b->fifo_len--;
    m->next = NULL;
    return m;
}

/* A CLOSE or ERROR event; its text (if any) is copied and NUL-terminated
 * into data/len. */
struct bk_lmsg *bk_lmsg_event(broker_kind_t kind, uint32_t stream,
                              uint64_t source, int code, const void *text,
                              size_t textlen)
{
    struct bk_lmsg *m = calloc(1, sizeof(*m) + textlen + 1);

    if (!m)
        return NULL;
    m->pub.kind = kind;
    m->pub.stream = stream;
    m->pub.source = source;
    m->pub.code = code;
    if (kind == BROKER_MSG_ERROR || textlen) {
        char *t = (char *)(m + 1);
        if (textlen)
            memcpy(t, text, textlen);
        t[textlen] = '\0';
        m->pub.data = t;
        m->pub.len = textlen;
    }
    return m;
}

/* Wrap a reassembled message.  Takes the output's data (when owned) and
 * fds; on failure the output is left for the caller to release. */
struct bk_lmsg *bk_lmsg_from_out(bk_reasm_out_t *o)
{
    size_t namelen = o->named ? strlen(o->name) + 1 : 0;
    size_t inl = o->data_owned ? 0 : o->len + 1;
    size_t fdsz = o->nfds * sizeof(int);
    struct bk_lmsg *m = malloc(sizeof(*m) + fdsz + namelen + inl);
    char *p;

    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m));
    p = (char *)(m + 1);
    m->pub.kind = BROKER_MSG_DATA;
    m->pub.flags = o->flags;
    m->pub.source = o->source;
    m->pub.stream = o->stream;
    if (o->nfds) {
        m->pub.fds = (int *)p;
        memcpy(p, o->fds, fdsz);
        m->pub.nfds = o->nfds;
        p += fdsz;
        o->nfds = 0;
    }
    if (namelen) {
        m->pub.name = p;
        memcpy(p, o->name, namelen);
        p += namelen;
    }
    if (o->data_owned) {
        m->own_data = o->data;
        m->pub.data = o->data;
        o->data_owned = false;
    } else {
        if (o->len)
            memcpy(p, o->data, o->len);
        p[o->len] = '\0';
        m->pub.data = p;
    }
    m->pub.len = o->len;
    o->data = NULL;
    o->len = 0;
    return m;
}

void bk_lmsg_free(struct bk_lmsg *m)
{
    if (!m)
        return;
    if (m->view)
        bk_shm_view_put(m->view, m->view_off, false);
    for (unsigned i = 0; i < m->pub.nfds; i++)
        if (m->pub.fds && m->pub.fds[i] >= 0)
            close(m->pub.fds[i]);
    free(m->own_data);
    free(m);
}

BROKER_API void broker_msg_free(broker_msg_t *msg)
{
    struct bk_lmsg *m;

    if (!msg)
        return;
    m = bk_container_of(msg, struct bk_lmsg, pub);
    if (m->view) {
        bk_shm_view_put(m->view, m->view_off, true);
        m->view = NULL;
    }
    bk_lmsg_free(m);
}

void bk_watch_begin(broker_t *b, uint32_t sid, bool data)
{
    b->watch_sid = sid;
    b->watch_data = data;
    b->watch_msg = NULL;
}

/* The watched stream was closed or failed while a blocking send ran. */
bool bk_watch_aborted(const broker_t *b)
{
    return b->watch_msg && b->watch_msg->pub.kind != BROKER_MSG_DATA;
}

struct bk_lmsg *bk_watch_end(broker_t *b)
{
    struct bk_lmsg *m = b->watch_msg;

    b->watch_sid = 0;
    b->watch_data = false;
    b->watch_msg = NULL;
    return m;
}

/* ---- connection --------------------------------------------------------- */

BROKER_API int broker_default_path(char *buf, size_t len)
{
    if (!buf || !len)
        return -EINVAL;
    return bk_sock_path(NULL, buf, len);
}

static broker_t *broker_new(int fd)
{
    broker_t *b = calloc(1, sizeof(*b));
    bk_reasm_limits_t rl;

    if (!b)
        return NULL;
    b->fd = fd;
    b->sid_next = 1;
    b->ctrl_next = 1;
    b->opt_max_msg = BK_DEF_LIB_MAX_MSG;
    b->opt_max_partial = BK_DEF_LIB_MAX_PARTIAL;
    b->opt_timeout_ms = BK_DEF_LIB_TIMEOUT_MS;
    b->opt_shm_threshold = BK_DEF_SHM_THRESHOLD;
    b->opt_shm_seg_size = BK_DEF_SHM_SEGMENT;
    b->opt_shm_pool_max = UINT64_MAX;
    b->opt_shm_fallback = true;
    b->flim.max_packet = BK_MIN_MAX_PACKET;
    b->flim.max_fds = BK_MAX_FDS_HARD;
    b->flim.max_name = BK_MAX_NAME;
    b->lim.max_packet = BK_MIN_MAX_PACKET;
    b->lim.max_name = BK_MAX_NAME;
    b->pkt_cap = BK_MIN_MAX_PACKET;
    bk_ht_init(&b->streams);
    bk_reasm_limits_of(b, &rl);
    bk_reasm_init(&b->reasm, &rl);
    b->rbuf_len = BK_MIN_MAX_PACKET;
    b->rbuf = malloc(b->rbuf_len);
    b->sbuf = malloc(BK_MIN_MAX_PACKET);
    if (!b->rbuf || !b->sbuf || bk_shm_create(b) < 0) {
        free(b->rbuf);
        free(b->sbuf);
        bk_reasm_fini(&b->reasm);
        free(b);
        return NULL;
    }
    return b;
}

static int send_hello(broker_t *b, int64_t deadline)
{
    uint8_t hdr[BK_HDR_SIZE], ver[4];
    const char *desc = program_invocation_short_name;
    size_t dlen = desc ? strnlen(desc, BK_MAX_HELLO_DESC) : 0;
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_HELLO,
        .length = (uint32_t)(sizeof(ver) + dlen),
    };
    struct iovec iov[3] = {
        { hdr, sizeof(hdr) }, { ver, sizeof(ver) }, { (void *)desc, dlen },
    };

    bk_hdr_encode(&h, hdr);
    bk_put32(ver, BK_PROTO_VERSION);
    return bk_send_direct(b, iov, dlen ? 3 : 2, NULL, 0, deadline);
}

/* Size the buffers and the largest packet we send after WELCOME. */
static int apply_limits(broker_t *b)
{
    size_t need = b->lim.max_packet;
    int cur = 0;
    socklen_t sl = sizeof(cur);
    uint8_t *rb, *sb;

    rb = realloc(b->rbuf, need);
    if (!rb)
        return -ENOMEM;
    b->rbuf = rb;
    b->rbuf_len = need;
    if (getsockopt(b->fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) == 0 &&
        (size_t)cur < 2 * need + 4096) {
        int want = (int)(2 * need + 4096);
        setsockopt(b->fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
        sl = sizeof(cur);
        if (getsockopt(b->fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) < 0)
            cur = 0;
    }
    b->pkt_cap = need;
    if (cur > 0 && (size_t)cur < need + 512)
        b->pkt_cap = (size_t)cur > BK_MIN_MAX_PACKET + 512 ?
                     (size_t)cur - 512 : BK_MIN_MAX_PACKET;
    sb = realloc(b->sbuf, b->pkt_cap);
    if (!sb)
        return -ENOMEM;
    b->sbuf = sb;
    return 0;
}

BROKER_API int broker_connect(const char *path, broker_t **out)
{
    char sp[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int64_t deadline;
    broker_t *b;
    int fd, r;

    if (!out)
        return -EINVAL;
    *out = NULL;
    r = bk_sock_path(path, sp, sizeof(sp));
    if (r < 0)
        return r;
    fd = bk_sock_connect(sp);
    if (fd < 0)
        return fd;
    b = broker_new(fd);
    if (!b) {
        close(fd);
        return -ENOMEM;
    }
    deadline = bk_deadline(BK_HANDSHAKE_MS);
    r = send_hello(b, deadline);
    while (r == 0 && !b->welcomed)
        r = bk_wait(b, false, deadline);
    if (r == 0 && b->err)
        r = b->err;
    if (r == 0)
        r = apply_limits(b);
    if (r < 0) {
        bk_free(b);
        return r;
    }
    *out = b;
    return 0;
}

void bk_free(broker_t *b)
{
    struct bk_lmsg *m;
    bk_hnode_t *n;

    bk_shm_close_rx(b);
    for (n = bk_ht_next(&b->streams, NULL); n; ) {
        struct bk_stream *s = bk_container_of(n, struct bk_stream, node);
        n = bk_ht_next(&b->streams, n);
        s->acall = NULL;
        bk_stream_forget(b, s);
    }
    bk_ht_fini(&b->streams);
    while (b->spare) {
        struct bk_stream *s = b->spare;
        b->spare = s->rnext;
        free(s);
    }
    while ((m = bk_fifo_pop(b)))
        bk_lmsg_free(m);
    bk_lmsg_free(bk_watch_end(b));
    bk_oqueue_free(&b->urgent);
    bk_stream_drop_output(b, &b->ctlq);
    bk_close_fds(b->st_fds, b->st_nfds);
    bk_reasm_fini(&b->reasm);
    free(b->ctrl_payload);
    free(b->rbuf);
    free(b->sbuf);
    bk_shm_destroy(b);
    if (b->fd >= 0)
        close(b->fd);
    free(b);
}

BROKER_API void broker_close(broker_t *b)
{
    if (!b || b->closing)
        return;
    if (b->as) {
        bk_async_close(b);
        return;
    }
    bk_free(b);
}

BROKER_API uint64_t broker_client_id(const broker_t *b)
{
    return b ? b->id : 0;
}

BROKER_API const broker_limits_t *broker_limits(const broker_t *b)
{
    return b ? &b->lim : NULL;
}

BROKER_API int broker_fd(const broker_t *b)
{
    return b ? b->fd : -EINVAL;
}

BROKER_API int broker_set_option(broker_t *b, broker_opt_t opt,
                                 uint64_t value)
{
    bk_reasm_limits_t rl;

    if (!b)
        return -EINVAL;
    switch (opt) {
    case BROKER_OPT_MAX_MSG:
        if (value == 0 || value > SIZE_MAX / 2)
            return -EINVAL;
        b->opt_max_msg = value;
        break;
    case BROKER_OPT_CHUNKED:
        if (value > 1)
            return -EINVAL;
        b->opt_chunked = value;
        break;
    case BROKER_OPT_MAX_PARTIAL:
        if (value == 0 || value > UINT32_MAX)
            return -EINVAL;
        b->opt_max_partial = (uint32_t)value;
        break;
    case BROKER_OPT_PARTIAL_TIMEOUT:
        if (value > INT32_MAX)
            return -EINVAL;
        b->opt_timeout_ms = value;
        break;
    case BROKER_OPT_SHM_THRESHOLD:
        b->opt_shm_threshold = value;
        break;
    case BROKER_OPT_SHM_SEGMENT_SIZE:
        if (value == 0 || value > BK_MAX_SHM_SEGMENT)
            return -EINVAL;
        b->opt_shm_seg_size = value;
        break;
    case BROKER_OPT_SHM_POOL_MAX:
        b->opt_shm_pool_max = value;
        break;
    case BROKER_OPT_SHM_FALLBACK:
        if (value > 1)
            return -EINVAL;
        b->opt_shm_fallback = value;
        break;
    default:
        return -EINVAL;
    }
    bk_reasm_limits_of(b, &rl);
    bk_reasm_set_limits(&b->reasm, &rl);
    if (b->as)
        bk_async_kick(b);
    return 0;
}

/* ---- control requests ---------------------------------------------------- */

/* Attached mode: queue the request in the ring and write until it is out
 * (reading meanwhile). */
static int ctrl_send_queued(broker_t *b, uint32_t id, uint32_t op,
                            const void *arg, size_t len, int fd,
                            int64_t deadline)
{
    int r = bk_queue_ctrl(b, id, op, arg, len, fd >= 0 ? &fd : NULL,
                          fd >= 0);

    if (r < 0)
        return r;
    while (b->ctrl_queued) {
        r = bk_out_flush(b, true, BK_FLUSH_BUDGET);
        if (!b->ctrl_queued)
            break;
        if (r == -EAGAIN)
            r = bk_wait(b, true, deadline);
        if (r < 0) {
            bk_unqueue_ctrl(b);
            return r;
        }
    }
    return b->err;
}

/* Send a CTRL request (with fd attached unless it is -1; the caller
 * keeps it) and wait for its reply.  Returns the broker's answer (0 or a
 * negative errno) and, when asked for, the reply payload (malloc, owned
 * by the caller). */
int bk_ctrl_call(broker_t *b, uint32_t op, const void *arg, size_t len,
                 int fd, int64_t deadline, uint8_t **payload, size_t *plen)
{
    uint8_t hdr[BK_HDR_SIZE];
    bk_hdr_t h = { .version = BK_PROTO_VERSION, .type = BK_T_CTRL,
                   .length = (uint32_t)len, .aux = op, .nfds = fd >= 0 };
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)arg, len } };
    int r = bk_usable(b);

    if (r < 0)
        return r;
    h.stream = b->ctrl_next++;
    if (b->ctrl_next == 0)
        b->ctrl_next = 1;
    bk_hdr_encode(&h, hdr);
    free(b->ctrl_payload);
    b->ctrl_payload = NULL;
    b->ctrl_len = 0;
    b->ctrl_done = false;
    b->ctrl_id = h.stream;
    if (b->as)
        r = ctrl_send_queued(b, h.stream, op, arg, len, fd, deadline);
    else
        r = bk_send_direct(b, iov, len ? 2 : 1, fd >= 0 ? &fd : NULL,
                           fd >= 0, deadline);
    while (r == 0 && !b->ctrl_done)
        r = bk_wait(b, false, deadline);
    b->ctrl_id = 0;
    if (r == 0 || b->ctrl_done) {
        r = b->ctrl_code;
        if (payload) {
            *payload = b->ctrl_payload;
            *plen = b->ctrl_len;
            b->ctrl_payload = NULL;
        }
    }
    free(b->ctrl_payload);
    b->ctrl_payload = NULL;
    if (b->as)
        bk_async_kick(b);
    return r;
}

static int ctrl_call(broker_t *b, uint32_t op, const char *arg, size_t len,
                     int timeout_ms, uint8_t **payload, size_t *plen)
{
    return bk_ctrl_call(b, op, arg, len, -1, bk_deadline(timeout_ms),
                        payload, plen);
}

static int name_op(broker_t *b, uint32_t op, const char *name,
                   uint8_t **payload, size_t *plen)
{
    size_t len;

    if (!b)
        return -EINVAL;
    if (!bk_name_ok(b, name, &len))
        return -EINVAL;
    return ctrl_call(b, op, name, len, -1, payload, plen);
}

BROKER_API int broker_register(broker_t *b, const char *name)
{
    return name_op(b, BK_OP_REGISTER, name, NULL, NULL);
}

BROKER_API int broker_release(broker_t *b, const char *name)
{
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

/* ---- operator control ------------------------------------------------------ */

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
        len > b->lim.max_name)
        return -EINVAL;
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

/* Split a LIST page into its records and the `next=N` trailer (the last
 * line).  Returns the length of the records part or -EPROTO. */
static ssize_t list_page_split(const char *page, size_t len, uint32_t *next)
{
    size_t i;
    char *end;
    unsigned long v;

    if (len < 7 || page[len - 1] != '\n')
        return -EPROTO;
    i = len - 1;
    while (i > 0 && page[i - 1] != '\n')
        i--;
    if (strncmp(page + i, "next=", 5) != 0)
        return -EPROTO;
    errno = 0;
    v = strtoul(page + i + 5, &end, 10);
    if (errno || end != page + len - 1 || v > UINT32_MAX ||
        page[i + 5] < '0' || page[i + 5] > '9')
        return -EPROTO;
    *next = (uint32_t)v;
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
    uint32_t start = 0, next;
    size_t total = 0;
    char *all = NULL;
    int r;

    if (!b || !text || op < BK_OP_LIST_CLIENTS || op > BK_OP_LIST_SHM)
        return -EINVAL;
    r = list_append(&all, &total, "", 0);
    while (r == 0) {
        uint8_t req[BK_LIST_REQ_SIZE];
        void *page = NULL;
        size_t plen = 0;
        ssize_t rec;

        bk_put32(req, start);
        r = broker_ctrl(b, op, req, sizeof(req), &page, &plen);
        if (r < 0)
            break;
        rec = list_page_split(page, plen, &next);
        if (rec < 0 || (next != 0 && next <= start))
            r = -EPROTO;
        else
            r = list_append(&all, &total, page, (size_t)rec);
        free(page);
        if (r < 0 || next == 0)
            break;
        start = next;
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

/* ---- monitoring ---------------------------------------------------------- */

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
