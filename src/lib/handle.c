/*
 * handle.c - libbroker layer 7: creating and freeing a whole handle.
 */
#include "config.h"
#include "outq.h"
#include "subs.h"
#include "stream.h"
#include "ctrl.h"
#include "shm.h"
#include "shmview.h"
#include "in.h"
#include "handle.h"

broker_t *bk_handle_new(int fd)
{
    broker_t *b = bk_conn_new(fd);

    if (!b)
        return NULL;
    if (bk_out_init(b) < 0 || bk_subs_init(b) < 0 ||
        bk_stream_init(b) < 0 ||
        bk_ctrl_init(b) < 0 || bk_shm_create(b) < 0 ||
        bk_shmview_init(b) < 0 || bk_in_init(b) < 0) {
        b->io.fd = -1;
        bk_handle_free(b);
        return NULL;
    }
    return b;
}

void bk_handle_free(broker_t *b)
{
    bk_shmview_fini(b);
    bk_stream_fini(b);
    bk_in_fini(b);
    bk_ctrl_fini(b);
    bk_subs_fini(b);
    bk_out_fini(b);
    bk_shm_destroy(b);
    bk_conn_free(b);
}
