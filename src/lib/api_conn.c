/*
 * api_conn.c - libbroker layer 7, public API: a connection's life
 * (connect, close), what it is (id, limits, fd) and its options.
 */
#include "config.h"
#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "sockio.h"
#include "outq.h"
#include "in.h"
#include "recon.h"
#include "handle.h"
#include "shm.h"
#include "async.h"

BROKER_API int broker_default_path(char *buf, size_t len)
{
    if (!buf || !len)
        return -EINVAL;
    return bk_sock_path(NULL, buf, len);
}

BROKER_API int broker_connect(const char *path, broker_t **out)
{
    char sp[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int r;

    if (!out)
        return -EINVAL;
    *out = NULL;
    r = bk_sock_path(path, sp, sizeof(sp));
    if (r < 0)
        return r;
    return bk_handle_connect(sp, NULL, out);
}

BROKER_API int broker_flush(broker_t *b, int timeout_ms)
{
    int r;

    if (!b)
        return -EINVAL;
    if (b->closing)
        return -ECANCELED;
    if (b->io.err)
        return b->io.err;
    if (bk_conn_attached(b)) {
        r = bk_out_flush(b, true, BK_FLUSH_BUDGET);
        bk_conn_kick(b);
        return r == -EAGAIN ? 0 : r;
    }
    return bk_out_flush_wait(b, bk_io_deadline(timeout_ms));
}

/* What batching holds is written before the socket closes, waiting for
 * the broker to read at most this long. */
#define BK_CLOSE_FLUSH_MS 5000

BROKER_API void broker_close(broker_t *b)
{
    if (!b || b->closing)
        return;
    if (bk_conn_attached(b)) {
        bk_async_close(b);
        return;
    }
    if (b->opt_batch && !b->io.err && bk_out_backlog(b))
        (void)bk_out_flush_wait(b, bk_io_deadline(BK_CLOSE_FLUSH_MS));
    bk_handle_free(b);
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
    return b ? b->io.fd : -EINVAL;
}

BROKER_API int broker_set_option(broker_t *b, broker_opt_t opt,
                                 uint64_t value)
{
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
    case BROKER_OPT_MAX_QUEUED:
        if (value == 0)
            return -EINVAL;
        b->opt_max_queued = value;
        break;
    case BROKER_OPT_MAX_PARTIAL_BYTES:
        b->opt_max_partial_bytes = value;
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
    case BROKER_OPT_SHM_IDLE_MS:
        if (value > INT32_MAX)
            return -EINVAL;
        b->opt_shm_idle_ms = value;
        break;
    case BROKER_OPT_SHM_RESERVE: {
        int r = bk_shm_reserve(b, value, (int64_t)bk_io_now_ms() +
                               BK_DEF_LIB_TIMEOUT_MS);
        if (r == 0 || r == -ENOSPC)     /* what fit stays reserved */
            b->opt_shm_reserve = value;
        if (r < 0)
            return r;
        break;
    }
    case BROKER_OPT_BATCH:
        if (value > 1)
            return -EINVAL;
        b->opt_batch = value;
        if (!value && !bk_conn_attached(b) && !b->io.err)
            bk_out_flush(b, false, BK_FLUSH_BUDGET);
        break;
    case BROKER_OPT_RECONNECT:
        if (value > 1)
            return -EINVAL;
        if (bk_conn_attached(b))
            return -ENOTSUP;
        return bk_recon_enable(b, value);
    default:
        return -EINVAL;
    }
    bk_in_set_limits(b);
    bk_conn_kick(b);
    return 0;
}
