/*
 * conn.c - libbroker layer 2: the handle's core, defaults, the HELLO /
 * WELCOME handshake and the limits it brings.
 */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "conn.h"

broker_t *bk_conn_new(int fd)
{
    broker_t *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    if (bk_io_init(&b->io, fd, BK_MIN_MAX_PACKET) < 0) {
        free(b);
        return NULL;
    }
    b->opt_max_msg = BK_DEF_LIB_MAX_MSG;
    b->opt_max_partial = BK_DEF_LIB_MAX_PARTIAL;
    b->opt_max_queued = BK_DEF_LIB_MAX_QUEUED;
    b->opt_timeout_ms = BK_DEF_LIB_TIMEOUT_MS;
    b->opt_shm_threshold = BK_DEF_SHM_THRESHOLD;
    b->opt_shm_seg_size = BK_DEF_SHM_SEGMENT;
    b->opt_shm_pool_max = UINT64_MAX;
    b->opt_shm_fallback = true;
    b->opt_shm_idle_ms = BK_DEF_SHM_IDLE_MS;
    b->flim.max_packet = BK_MIN_MAX_PACKET;
    b->flim.max_fds = BK_MAX_FDS_HARD;
    b->flim.max_name = BK_MAX_NAME;
    b->lim.max_packet = BK_MIN_MAX_PACKET;
    b->lim.max_name = BK_MAX_NAME;
    b->pkt_cap = BK_MIN_MAX_PACKET;
    return b;
}

void bk_conn_copy_opts(broker_t *dst, const broker_t *src)
{
    dst->opt_max_msg = src->opt_max_msg;
    dst->opt_chunked = src->opt_chunked;
    dst->opt_max_partial = src->opt_max_partial;
    dst->opt_max_partial_bytes = src->opt_max_partial_bytes;
    dst->opt_max_queued = src->opt_max_queued;
    dst->opt_timeout_ms = src->opt_timeout_ms;
    dst->opt_shm_threshold = src->opt_shm_threshold;
    dst->opt_shm_seg_size = src->opt_shm_seg_size;
    dst->opt_shm_pool_max = src->opt_shm_pool_max;
    dst->opt_shm_fallback = src->opt_shm_fallback;
    dst->opt_shm_idle_ms = src->opt_shm_idle_ms;
    dst->opt_shm_reserve = src->opt_shm_reserve;
    dst->opt_batch = src->opt_batch;
    memcpy(dst->path, src->path, sizeof(dst->path));
}

void bk_conn_free(broker_t *b)
{
    bk_io_fini(&b->io);
    free(b);
}

int bk_conn_send_hello(broker_t *b, int64_t deadline)
{
    uint8_t hdr[BK_HDR_SIZE], ver[4];
    const char *desc = program_invocation_short_name;
    size_t dlen = desc ? strnlen(desc, BK_MAX_HELLO_DESC) : 0;
    bk_hdr_t h = {
        .version = BK_PROTO_VERSION, .type = BK_T_HELLO,
        /* shmview.c maps what others share; flow.c holds back what
         * is for a busy receiver */
        .aux = BK_HELLO_SHM | BK_HELLO_FLOW,
        .length = (uint32_t)(sizeof(ver) + dlen),
    };
    struct iovec iov[3] = {
        { hdr, sizeof(hdr) }, { ver, sizeof(ver) }, { (void *)desc, dlen },
    };

    bk_hdr_encode(&h, hdr);
    bk_put32(ver, BK_PROTO_VERSION);
    for (;;) {
        int r;

        if (b->io.err)
            return b->io.err;
        r = bk_io_send(&b->io, iov, dlen ? 3 : 2, NULL, 0);
        if (r != -EAGAIN)
            return r;
        r = bk_io_wait(&b->io, true, deadline);
        if (r < 0)
            return r;
    }
}

int bk_conn_on_welcome(broker_t *b, const uint8_t *p)
{
    bk_welcome_t w;

    bk_welcome_decode(p, &w);
    if (w.client_id == 0 || w.max_packet < BK_MIN_MAX_PACKET ||
        w.max_packet > BK_MAX_MAX_PACKET || w.max_fds > BK_MAX_FDS_HARD ||
        w.max_name == 0 || w.max_name > BK_MAX_NAME || w.max_msg == 0)
        return -EPROTO;
    b->id = w.client_id;
    b->lim.max_packet = w.max_packet;
    b->lim.max_fds = w.max_fds;
    b->lim.max_msg = w.max_msg;
    b->lim.max_name = w.max_name;
    b->lim.max_streams = w.max_streams;
    b->lim.queue_limit = w.queue_limit;
    b->lim.max_segments = w.max_segments;
    b->lim.max_shm = w.max_shm;
    b->flim.max_packet = w.max_packet;
    b->flim.max_fds = w.max_fds;
    b->flim.max_name = w.max_name;
    b->welcomed = true;
    return 0;
}

int bk_conn_apply_limits(broker_t *b)
{
    size_t need = b->lim.max_packet;
    int cur = 0;
    socklen_t sl = sizeof(cur);

    if (bk_io_resize(&b->io, need) < 0)
        return -ENOMEM;
    if (getsockopt(b->io.fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) == 0 &&
        (size_t)cur < 2 * need + 4096) {
        int want = (int)(2 * need + 4096);
        setsockopt(b->io.fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
        sl = sizeof(cur);
        if (getsockopt(b->io.fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl) < 0)
            cur = 0;
    }
    b->pkt_cap = need;
    if (cur > 0 && (size_t)cur < need + 512)
        b->pkt_cap = (size_t)cur > BK_MIN_MAX_PACKET + 512 ?
                     (size_t)cur - 512 : BK_MIN_MAX_PACKET;
    return 0;
}

int bk_conn_usable(const broker_t *b)
{
    if (b->closing)
        return -ECANCELED;
    if (b->io.err)
        return b->io.err;
    if (b->io.bye)
        return -ESHUTDOWN;
    return 0;
}

bool bk_conn_name_ok(const broker_t *b, const char *name, size_t *len)
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
