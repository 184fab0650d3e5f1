/*
 * test_streams.c - the broker's stream table: both ends find the stream by
 * their own ids, per-client lists, closing and tombstones.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include "streams.h"

static bk_st_table_t t;
static bk_st_list_t la, lb;
static int A, B;                /* stand-in owners */

static void setup(void)
{
    bk_st_init(&t);
    bk_st_list_init(&la);
    bk_st_list_init(&lb);
}

static void teardown(void)
{
    bk_st_fini(&t);
}

TestSuite(streams, .init = setup, .fini = teardown);

Test(streams, both_ends_find_the_stream)
{
    bk_stream_t *s;

    cr_assert_eq(bk_st_open(&t, &A, 1, 7, &la, &B, 2, 0x80000001u, &lb, &s), 0);
    bk_st_end_t *ea = bk_st_find(&t, 1, 7);
    bk_st_end_t *eb = bk_st_find(&t, 2, 0x80000001u);
    cr_assert_not_null(ea);
    cr_assert_not_null(eb);
    cr_assert_eq(ea->stream, s);
    cr_assert_eq(bk_st_peer(ea), eb);
    cr_assert_eq(bk_st_peer(eb), ea);
    cr_assert_eq(eb->owner, &B);
    cr_assert_eq(la.count, 1);
    cr_assert_eq(lb.count, 1);
    cr_assert_eq(t.streams, 1);
    /* ids are per client: the same local id elsewhere is another key */
    cr_assert_null(bk_st_find(&t, 2, 7));
    cr_assert_null(bk_st_find(&t, 1, 0x80000001u));
}

Test(streams, duplicate_end_is_refused)
{
    bk_stream_t *s;

    cr_assert_eq(bk_st_open(&t, &A, 1, 7, &la, &B, 2, 9, &lb, &s), 0);
    cr_assert_eq(bk_st_open(&t, &A, 1, 7, &la, &B, 2, 10, &lb, &s), -EEXIST);
    cr_assert_eq(bk_st_open(&t, &A, 1, 8, &la, &B, 2, 9, &lb, &s), -EEXIST);
    cr_assert_eq(la.count, 1);
    cr_assert_eq(lb.count, 1);
    cr_assert_eq(t.streams, 1);
    cr_assert_not_null(bk_st_find(&t, 1, 7));
    cr_assert_null(bk_st_find(&t, 1, 8));
}

Test(streams, close_removes_both_ends)
{
    bk_stream_t *s;

    cr_assert_eq(bk_st_open(&t, &A, 1, 7, &la, &B, 2, 9, &lb, &s), 0);
    bk_st_close(&t, bk_st_find(&t, 2, 9));
    cr_assert_null(bk_st_find(&t, 1, 7));
    cr_assert_null(bk_st_find(&t, 2, 9));
    cr_assert_eq(la.count, 0);
    cr_assert_eq(lb.count, 0);
    cr_assert_eq(t.streams, 0);
}

Test(streams, close_under_a_message_leaves_a_tombstone)
{
    bk_stream_t *s;

    cr_assert_eq(bk_st_open(&t, &A, 1, 7, &la, &B, 2, 9, &lb, &s), 0);
    bk_st_end_t *ea = bk_st_find(&t, 1, 7);
    ea->in_msg = true;          /* A is half way through a message */
    bk_st_close(&t, bk_st_find(&t, 2, 9));
    ea = bk_st_find(&t, 1, 7);
    cr_assert_not_null(ea, "the sender's end must swallow its remaining fragments");
    cr_assert(ea->discard);
    cr_assert_null(bk_st_peer(ea));
    cr_assert_eq(lb.count, 0);
    cr_assert_eq(t.streams, 1);
    bk_st_remove_end(&t, ea);
    cr_assert_eq(t.streams, 0);
    cr_assert_eq(la.count, 0);
}

Test(streams, tombstone_without_peer)
{
    bk_stream_t *s;

    cr_assert_eq(bk_st_open(&t, &A, 1, 3, &la, NULL, 0, 0, NULL, &s), 0);
    bk_st_end_t *e = bk_st_find(&t, 1, 3);
    cr_assert_not_null(e);
    cr_assert_null(bk_st_peer(e));
    bk_st_remove_end(&t, e);
    cr_assert_null(bk_st_find(&t, 1, 3));
    cr_assert_eq(t.streams, 0);
}

Test(streams, many_streams_and_lists)
{
    bk_stream_t *s;
    enum { N = 20000 };

    for (uint32_t i = 1; i <= N; i++)
        cr_assert_eq(bk_st_open(&t, &A, 1, i, &la, &B, 2, 0x80000000u | i,
                                &lb, &s), 0);
    cr_assert_eq(la.count, N);
    for (uint32_t i = 1; i <= N; i += 2)
        bk_st_close(&t, bk_st_find(&t, 1, i));
    cr_assert_eq(la.count, N / 2);
    cr_assert_eq(lb.count, N / 2);
    for (uint32_t i = 1; i <= N; i++) {
        bk_st_end_t *e = bk_st_find(&t, 2, 0x80000000u | i);
        if (i % 2)
            cr_assert_null(e);
        else
            cr_assert(e && bk_st_peer(e) && bk_st_peer(e)->sid == i);
    }
    /* what a departing client does: close everything on its list */
    while (lb.count)
        bk_st_close(&t, bk_st_list_first(&lb));
    cr_assert_eq(la.count, 0);
    cr_assert_eq(t.streams, 0);
}
