/*
 * handle.c - libbroker layer 7: creating and freeing a whole handle.
 */
#include "config.h"
#include <stdio.h>
#include <unistd.h>
#include "sockio.h"
#include "outq.h"
#include "subs.h"
#include "stream.h"
#include "flow.h"
#include "ctrl.h"
#include "shm.h"
#include "shmview.h"
#include "in.h"
#include "recon.h"
#include "handle.h"

broker_t *bk_handle_new(int fd)
{
    broker_t *b = bk_conn_new(fd);

    if (!b)
        return NULL;
    if (bk_out_init(b) < 0 || bk_subs_init(b) < 0 ||
        bk_stream_init(b) < 0 || bk_flow_init(b) < 0 ||
        bk_ctrl_init(b) < 0 || bk_shm_create(b) < 0 ||
        bk_shmview_init(b) < 0 || bk_in_init(b) < 0) {
        b->io.fd = -1;
        bk_handle_free(b);
        return NULL;
    }
    return b;
}

int bk_handle_connect(const char *sp, const broker_t *opts, broker_t **out)
{
    int64_t deadline;
    broker_t *b;
    int fd, r;

    fd = bk_sock_connect(sp);
    if (fd < 0)
        return fd;
    b = bk_handle_new(fd);
    if (!b) {
        close(fd);
        return -ENOMEM;
    }
    if (opts)
        bk_conn_copy_opts(b, opts);
    snprintf(b->path, sizeof(b->path), "%s", sp);
    bk_in_set_limits(b);
    deadline = bk_io_deadline(BK_HANDSHAKE_MS);
    r = bk_conn_send_hello(b, deadline);
    while (r == 0 && !b->welcomed)
        r = bk_in_wait(b, false, deadline);
    if (r == 0 && b->io.err)
        r = b->io.err;
    if (r == 0)
        r = bk_conn_apply_limits(b);
    if (r == 0)
        bk_in_set_limits(b);    /* the default partial total needs
                                   max_packet */
    if (r == 0)
        r = bk_out_resize(b);
    if (r < 0) {
        bk_handle_free(b);
        return r;
    }
    *out = b;
    return 0;
}

void bk_handle_free(broker_t *b)
{
    bk_recon_free(b);
    bk_shmview_fini(b);
    bk_flow_fini(b);
    bk_stream_fini(b);
    bk_in_fini(b);
    bk_ctrl_fini(b);
    bk_subs_fini(b);
    bk_out_fini(b);
    bk_shm_destroy(b);
    bk_conn_free(b);
}
