/*
 * th_uv.h - the one helper the libuv-attached tests share: run a loop
 * until a condition holds, hang-guarded.  Header-only so that only the
 * tests that use libuv include uv.h.
 */
#ifndef TH_UV_H
#define TH_UV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <criterion/criterion.h>
#include "harness.h"

static void th_uv_tick(uv_timer_t *t)
{
    (void)t;        /* only wakes the loop so the condition is checked */
}

/* Run loop until cond(arg); fails the test after TH_HANG_MS. */
static inline void th_uv_run_until(uv_loop_t *loop, bool (*cond)(void *),
                                   void *arg)
{
    uv_timer_t t;
    uint64_t end;

    uv_timer_init(loop, &t);
    uv_timer_start(&t, th_uv_tick, 20, 20);
    uv_update_time(loop);
    end = uv_now(loop) + TH_HANG_MS;
    while (!cond(arg)) {
        uv_update_time(loop);
        cr_assert_lt(uv_now(loop), end, "async: nothing happened "
                     "(hang guard)");
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

#endif
