/*
 * test_blkcache.c - the block cache of the data path (blkcache.h): blocks
 * come back for reuse by class, most recently freed first, never more
 * than max_bytes are kept, and what is larger than the classes is plain
 * malloc.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>
#include "blkcache.h"

Test(blkcache, sizes_round_up_to_their_class)
{
    bk_blkcache_t c = { .max_bytes = 1u << 20 };
    uint8_t cls;
    void *p;

    p = bk_blk_alloc(&c, 1, &cls);
    cr_assert_eq(cls, 1);
    bk_blk_free(&c, p, cls);
    p = bk_blk_alloc(&c, BK_BLK_STEP + 1, &cls);
    cr_assert_eq(cls, 2);
    memset(p, 0xa5, 2 * BK_BLK_STEP);       /* the whole class is usable */
    bk_blk_free(&c, p, cls);
    p = bk_blk_alloc(&c, BK_BLK_MAX, &cls);
    cr_assert_eq(cls, BK_BLK_CLASSES);
    bk_blk_free(&c, p, cls);
    p = bk_blk_alloc(&c, BK_BLK_MAX + 1, &cls);
    cr_assert_eq(cls, 0, "beyond the classes: malloc");
    cr_assert_eq(bk_blk_mem(cls, BK_BLK_MAX + 1),
                 BK_BLK_MAX + 1 + BK_BLK_MALLOC_OVERHEAD);
    bk_blk_free(&c, p, cls);
    cr_assert_eq(c.bytes, BK_BLK_STEP + 2 * BK_BLK_STEP + BK_BLK_MAX,
                 "class 0 is never kept");
    bk_blk_trim(&c);
    cr_assert_eq(c.bytes, 0);
}

Test(blkcache, freed_blocks_come_back_last_freed_first)
{
    bk_blkcache_t c = { .max_bytes = 1u << 20 };
    void *p[300];
    uint8_t cls;

    for (unsigned i = 0; i < 300; i++) {
        p[i] = bk_blk_alloc(&c, 100, &cls);
        cr_assert_not_null(p[i]);
        cr_assert_eq(cls, 2);
    }
    for (unsigned i = 0; i < 300; i++)
        bk_blk_free(&c, p[i], 2);
    cr_assert_eq(c.bytes, 300 * 2 * BK_BLK_STEP);
    for (unsigned i = 300; i-- > 0; ) {
        void *q = bk_blk_alloc(&c, 128, &cls);
        cr_assert_eq(q, p[i], "block %u: the stack is LIFO", i);
    }
    cr_assert_eq(c.bytes, 0);
    for (unsigned i = 0; i < 300; i++)
        bk_blk_free(&c, p[i], 2);
    /* another class does not take them */
    void *q = bk_blk_alloc(&c, 3 * BK_BLK_STEP, &cls);
    for (unsigned i = 0; i < 300; i++)
        cr_assert_neq(q, p[i]);
    bk_blk_free(&c, q, cls);
    bk_blk_trim(&c);
}

Test(blkcache, keeps_no_more_than_max_bytes)
{
    bk_blkcache_t c = { .max_bytes = 10 * BK_BLK_STEP };
    void *p[20];
    uint8_t cls;

    for (unsigned i = 0; i < 20; i++)
        p[i] = bk_blk_alloc(&c, BK_BLK_STEP, &cls);
    for (unsigned i = 0; i < 20; i++)
        bk_blk_free(&c, p[i], cls);
    cr_assert_eq(c.bytes, 10 * BK_BLK_STEP, "the rest went to free()");
    cr_assert_eq(c.cls[1].n, 10);
    bk_blk_trim(&c);
    cr_assert_eq(c.cls[1].n, 0);
    cr_assert_null(c.cls[1].blk);
}

Test(blkcache, a_cache_of_zero_bytes_keeps_nothing)
{
    bk_blkcache_t c = { .max_bytes = 0 };
    uint8_t cls;
    void *p = bk_blk_alloc(&c, 64, &cls);

    cr_assert_not_null(p);
    bk_blk_free(&c, p, cls);
    cr_assert_eq(c.bytes, 0);
    cr_assert_null(c.cls[cls].blk);
    bk_blk_free(&c, NULL, 1);          /* NULL is allowed */
    bk_blk_trim(&c);
}
