/*
 * test_batch.c - batched sends (BROKER_OPT_BATCH, broker_flush) and the
 * attached mode's packing, against a real brokerd: what a batch holds
 * stays in the library until one of the documented points writes it,
 * and then arrives whole and in order, interleaved correctly with
 * messages that cannot be batched.
 *
 * "Not yet delivered" is checked with a short receive timeout: that
 * check can only pass wrongly, never fail wrongly, on a slow machine.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE         /* memfd_create */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <criterion/criterion.h>
#include "harness.h"
#include "th_uv.h"

TH_BROKER_SUITE(batch, 240);

#define SEED 0xba7c4ULL

static broker_t *batched(void)
{
    broker_t *b = th_connect(&br);

    cr_assert_eq(broker_set_option(b, BROKER_OPT_BATCH, 1), 0);
    return b;
}

/* Message i: a u32 sequence number, then a pattern; sizes vary.  The
 * tests send before they receive, in one thread, so what they send at once
 * stays well under the broker's queue limit (4 MiB). */
static size_t msg_len(uint32_t i)
{
    return 4 + (i * 37u) % 300u;
}

static void send_numbered(broker_t *b, const char *to, uint32_t i)
{
    uint8_t buf[4 + 300];
    size_t len = msg_len(i);
    int r;

    memcpy(buf, &i, 4);
    th_pattern(buf + 4, len - 4, SEED, i);
    r = broker_send(b, to, buf, len, NULL, 0);
    cr_assert_eq(r, 0, "send %" PRIu32 ": %s", i, broker_strerror(r));
}

static void expect_numbered(broker_t *b, uint32_t i)
{
    broker_msg_t *m = th_recv_kind(b, BROKER_MSG_DATA);
    uint32_t got;

    cr_assert_eq(m->len, msg_len(i), "message %" PRIu32 ": %zu bytes", i,
                 m->len);
    memcpy(&got, m->data, 4);
    cr_assert_eq(got, i, "message %" PRIu32 " arrived as number %" PRIu32,
                 i, got);
    cr_assert_eq(th_pattern_check((const uint8_t *)m->data + 4, m->len - 4,
                                  SEED, i), -1, "message %" PRIu32
                 " corrupted", i);
    broker_msg_free(m);
}

/* Nothing arrives at b within ms. */
static void expect_nothing(broker_t *b, int ms)
{
    broker_msg_t *m = NULL;
    int r = broker_recv(b, &m, ms);

    cr_assert_eq(r, -ETIMEDOUT, "a message arrived (kind %s) while the "
                 "batch should hold it", m ? th_kind_str(m->kind) : "-");
}

Test(batch, option_and_flush_validate)
{
    broker_t *b = th_connect(&br);

    cr_assert_eq(broker_set_option(b, BROKER_OPT_BATCH, 2), -EINVAL);
    cr_assert_eq(broker_flush(NULL, 0), -EINVAL);
    cr_assert_eq(broker_flush(b, 0), 0, "nothing to write is success");
    broker_close(b);
}

Test(batch, many_messages_arrive_whole_and_in_order)
{
    broker_t *rx = th_connect(&br), *tx = batched();
    uint32_t n = (uint32_t)th_scaled(10000, 500);

    th_register(rx, "batch.rx1");
    for (uint32_t i = 0; i < n; i++)
        send_numbered(tx, "batch.rx1", i);
    cr_assert_eq(broker_flush(tx, TH_HANG_MS), 0);
    cr_assert_eq(broker_pending(tx), 0);
    for (uint32_t i = 0; i < n; i++)
        expect_numbered(rx, i);
    broker_close(tx);
    broker_close(rx);
}

Test(batch, a_batched_message_waits_for_flush)
{
    broker_t *rx = th_connect(&br), *tx = batched();

    th_register(rx, "batch.rx2");
    send_numbered(tx, "batch.rx2", 7);
    cr_assert_gt(broker_pending(tx), 0, "the batch holds the message");
    expect_nothing(rx, 200);
    cr_assert_eq(broker_flush(tx, TH_HANG_MS), 0);
    cr_assert_eq(broker_pending(tx), 0);
    expect_numbered(rx, 7);
    broker_close(tx);
    broker_close(rx);
}

Test(batch, waiting_calls_write_the_batch_first)
{
    broker_t *rx = th_connect(&br), *tx = batched();
    broker_msg_t *m = NULL;

    th_register(rx, "batch.rx3");
    /* a request to the broker */
    send_numbered(tx, "batch.rx3", 1);
    cr_assert_eq(broker_ping(tx, TH_HANG_MS), 0);
    expect_numbered(rx, 1);
    /* a receive that has to wait */
    send_numbered(tx, "batch.rx3", 2);
    cr_assert_eq(broker_recv(tx, &m, 100), -ETIMEDOUT);
    expect_numbered(rx, 2);
    /* turning batching off */
    send_numbered(tx, "batch.rx3", 3);
    cr_assert_eq(broker_set_option(tx, BROKER_OPT_BATCH, 0), 0);
    expect_numbered(rx, 3);
    broker_close(tx);
    broker_close(rx);
}

Test(batch, close_writes_the_batch)
{
    broker_t *rx = th_connect(&br), *tx = batched();
    uint32_t n = (uint32_t)th_scaled(2000, 100);

    th_register(rx, "batch.rx4");
    for (uint32_t i = 0; i < n; i++)
        send_numbered(tx, "batch.rx4", i);
    broker_close(tx);
    for (uint32_t i = 0; i < n; i++)
        expect_numbered(rx, i);
    broker_close(rx);
}

/* A message with an fd cannot be batched: it writes the batch first, so
 * the order stays, and its fd travels with it. */
Test(batch, a_message_with_fds_keeps_its_place)
{
    broker_t *rx = th_connect(&br), *tx = batched();
    int fd = memfd_create("batch-fd", MFD_CLOEXEC);
    struct stat want, got;
    broker_msg_t *m;

    cr_assert_geq(fd, 0);
    cr_assert_eq(fstat(fd, &want), 0);
    th_register(rx, "batch.rx5");
    for (uint32_t i = 0; i < 50; i++)
        send_numbered(tx, "batch.rx5", i);
    cr_assert_eq(broker_send(tx, "batch.rx5", "fd", 2, &fd, 1), 0);
    for (uint32_t i = 50; i < 100; i++)
        send_numbered(tx, "batch.rx5", i);
    cr_assert_eq(broker_flush(tx, TH_HANG_MS), 0);
    for (uint32_t i = 0; i < 50; i++)
        expect_numbered(rx, i);
    m = th_recv_kind(rx, BROKER_MSG_DATA);
    cr_assert_eq(m->len, 2);
    cr_assert_eq(memcmp(m->data, "fd", 2), 0, "the fd message is next");
    cr_assert_eq(m->nfds, 1);
    cr_assert_eq(fstat(m->fds[0], &got), 0);
    cr_assert_eq(got.st_ino, want.st_ino, "its own fd came with it");
    broker_msg_free(m);
    for (uint32_t i = 50; i < 100; i++)
        expect_numbered(rx, i);
    close(fd);
    broker_close(tx);
    broker_close(rx);
}

Test(batch, publications_are_batched_in_order)
{
    broker_t *s1 = th_connect(&br), *s2 = th_connect(&br), *tx = batched();
    uint32_t n = (uint32_t)th_scaled(5000, 200), id1, id2;
    char text[32];

    cr_assert_eq(broker_subscribe(s1, "batch.pub.*", NULL, BROKER_SUB_BLOCK,
                                  &id1), 0);
    cr_assert_eq(broker_subscribe(s2, "batch.pub.x", NULL, BROKER_SUB_BLOCK,
                                  &id2), 0);
    for (uint32_t i = 0; i < n; i++) {
        int len = snprintf(text, sizeof(text), "p%" PRIu32, i);
        cr_assert_eq(broker_publish(tx, "batch.pub.x", text, (size_t)len,
                                    NULL, 0), 0);
    }
    cr_assert_eq(broker_flush(tx, TH_HANG_MS), 0);
    for (int k = 0; k < 2; k++) {
        broker_t *s = k ? s2 : s1;
        for (uint32_t i = 0; i < n; i++) {
            broker_msg_t *m = th_recv_kind(s, BROKER_MSG_DATA);
            int len = snprintf(text, sizeof(text), "p%" PRIu32, i);

            cr_assert_str_eq(m->topic, "batch.pub.x");
            cr_assert_eq(m->sub_id, k ? id2 : id1);
            cr_assert_eq(m->len, (size_t)len);
            cr_assert_eq(memcmp(m->data, text, m->len), 0,
                         "subscriber %d: publication %" PRIu32 " out of "
                         "order", k + 1, i);
            broker_msg_free(m);
        }
    }
    broker_close(tx);
    broker_close(s1);
    broker_close(s2);
}

/* A message that goes through shared memory is batched as its
 * descriptor; the receiver still gets the bytes. */
Test(batch, shared_memory_descriptors_are_batched)
{
    broker_t *rx = th_connect(&br), *tx = batched();
    size_t len = 300000;
    uint8_t *buf = malloc(len);
    broker_shm_stats_t st;

    cr_assert_not_null(buf);
    th_register(rx, "batch.rx6");
    for (uint32_t i = 0; i < 4; i++) {
        memcpy(buf, &i, 4);
        th_pattern(buf + 4, len - 4, SEED, i);
        cr_assert_eq(broker_send(tx, "batch.rx6", buf, len, NULL, 0), 0);
        send_numbered(tx, "batch.rx6", i);
    }
    broker_shm_stats(tx, &st);
    cr_assert_gt(st.segments, 0, "the large messages went by shm");
    cr_assert_eq(broker_flush(tx, TH_HANG_MS), 0);
    for (uint32_t i = 0; i < 4; i++) {
        broker_msg_t *m = th_recv_kind(rx, BROKER_MSG_DATA);
        uint32_t got;

        cr_assert_eq(m->len, len);
        memcpy(&got, m->data, 4);
        cr_assert_eq(got, i, "large message %" PRIu32 " out of order", i);
        cr_assert_eq(th_pattern_check((const uint8_t *)m->data + 4, len - 4,
                                      SEED, i), -1);
        broker_msg_free(m);
        expect_numbered(rx, i);
    }
    free(buf);
    broker_close(tx);
    broker_close(rx);
}

Test(batch, an_unknown_name_is_reported_after_the_flush)
{
    broker_t *tx = batched();
    broker_msg_t *m;

    cr_assert_eq(broker_send(tx, "batch.nobody", "x", 1, NULL, 0), 0,
                 "a batched send cannot know the name yet");
    cr_assert_eq(broker_flush(tx, TH_HANG_MS), 0);
    m = th_recv_kind(tx, BROKER_MSG_ERROR);
    cr_assert_eq(m->code, -ENOENT, "code %d", m->code);
    broker_msg_free(m);
    broker_close(tx);
}

/* ---- attached mode ------------------------------------------------------- */

typedef struct burst {
    broker_t *tx;
    uint32_t n;
    size_t pending_after_sends;
    bool sent;
} burst_t;

static void burst_cb(uv_timer_t *t)
{
    burst_t *bu = t->data;

    for (uint32_t i = 0; i < bu->n; i++)
        send_numbered(bu->tx, "batch.rx7", i);
    bu->pending_after_sends = broker_pending(bu->tx);
    bu->sent = true;
}

static bool burst_written(void *arg)
{
    burst_t *bu = arg;

    return bu->sent && broker_pending(bu->tx) == 0;
}

Test(batch, attached_sends_from_one_callback_leave_packed_in_order)
{
    broker_t *rx = th_connect(&br);
    burst_t bu = { .tx = th_connect(&br), .n = 3000 };
    uv_loop_t loop;
    uv_timer_t t;

    th_register(rx, "batch.rx7");
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(bu.tx, &loop, NULL, NULL), 0);
    uv_timer_init(&loop, &t);
    t.data = &bu;
    uv_timer_start(&t, burst_cb, 0, 0);
    th_uv_run_until(&loop, burst_written, &bu);
    cr_assert_gt(bu.pending_after_sends, 0,
                 "inside the callback nothing was written yet");
    for (uint32_t i = 0; i < bu.n; i++)
        expect_numbered(rx, i);
    uv_close((uv_handle_t *)&t, NULL);
    broker_close(bu.tx);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    broker_close(rx);
}

/* broker_close in attached mode writes what this pass sent. */
Test(batch, attached_close_writes_what_was_sent)
{
    broker_t *rx = th_connect(&br), *tx = th_connect(&br);
    uv_loop_t loop;

    th_register(rx, "batch.rx8");
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(broker_attach(tx, &loop, NULL, NULL), 0);
    for (uint32_t i = 0; i < 20; i++)
        send_numbered(tx, "batch.rx8", i);
    broker_close(tx);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    for (uint32_t i = 0; i < 20; i++)
        expect_numbered(rx, i);
    broker_close(rx);
}
