/*
 * test_list.c - the intrusive list of src/common/list.h: queue order,
 * ring rotation, unlinking while walking, splicing.
 */
#include <criterion/criterion.h>
#include "list.h"

typedef struct item {
    int v;
    bk_list_t link;
} item_t;

static int collect(bk_list_t *head, int *out, int max)
{
    item_t *it;
    int n = 0;

    bk_list_for_each(it, head, item_t, link) {
        cr_assert_lt(n, max);
        out[n++] = it->v;
    }
    return n;
}

Test(list, empty_and_unlinked)
{
    bk_list_t head = BK_LIST_INIT(head);
    item_t a = { .v = 1 };

    bk_list_init(&a.link);
    cr_assert(bk_list_empty(&head));
    cr_assert_null(bk_list_first(&head));
    cr_assert_null(bk_list_last(&head));
    cr_assert_null(bk_list_pop_head(&head));
    cr_assert_not(bk_list_linked(&a.link));
    bk_list_unlink(&a.link);            /* harmless when unlinked */
    cr_assert_not(bk_list_linked(&a.link));
}

Test(list, fifo_order)
{
    bk_list_t head;
    item_t it[5];
    int got[5];

    bk_list_init(&head);
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        bk_list_init(&it[i].link);
        bk_list_push_tail(&head, &it[i].link);
    }
    cr_assert_eq(collect(&head, got, 5), 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(got[i], i);
    for (int i = 0; i < 5; i++) {
        bk_list_t *l = bk_list_pop_head(&head);
        cr_assert_not_null(l);
        cr_assert_eq(bk_container_of(l, item_t, link)->v, i);
        cr_assert_not(bk_list_linked(l));
    }
    cr_assert(bk_list_empty(&head));
}

Test(list, push_head_and_last)
{
    bk_list_t head = BK_LIST_INIT(head);
    item_t a = { .v = 1 }, b = { .v = 2 };

    bk_list_init(&a.link);
    bk_list_init(&b.link);
    bk_list_push_head(&head, &a.link);
    bk_list_push_head(&head, &b.link);
    cr_assert_eq(bk_list_first_entry(&head, item_t, link)->v, 2);
    cr_assert_eq(bk_container_of(bk_list_last(&head), item_t, link)->v, 1);
}

Test(list, ring_rotation)
{
    bk_list_t ring = BK_LIST_INIT(ring);
    item_t it[3];
    int order[7], n = 0;

    for (int i = 0; i < 3; i++) {
        it[i].v = i;
        bk_list_init(&it[i].link);
        bk_list_push_tail(&ring, &it[i].link);
    }
    /* Serve the first, move it to the back; item 1 leaves after one turn. */
    while (!bk_list_empty(&ring) && n < 7) {
        item_t *cur = bk_list_first_entry(&ring, item_t, link);
        order[n++] = cur->v;
        if (cur->v == 1 || n > 4)
            bk_list_unlink(&cur->link);
        else
            bk_list_move_tail(&ring, &cur->link);
    }
    int want[] = { 0, 1, 2, 0, 2, 0 };
    cr_assert_eq(n, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(order[i], want[i], "turn %d: %d", i, order[i]);
}

Test(list, unlink_while_walking)
{
    bk_list_t head = BK_LIST_INIT(head);
    item_t it[6], *pos;
    int got[6];

    for (int i = 0; i < 6; i++) {
        it[i].v = i;
        bk_list_init(&it[i].link);
        bk_list_push_tail(&head, &it[i].link);
    }
    bk_list_for_each_safe(pos, &head, item_t, link)
        if (pos->v % 2)
            bk_list_unlink(&pos->link);
    cr_assert_eq(collect(&head, got, 6), 3);
    cr_assert_eq(got[0], 0);
    cr_assert_eq(got[1], 2);
    cr_assert_eq(got[2], 4);
}

Test(list, splice_tail)
{
    bk_list_t a = BK_LIST_INIT(a), b = BK_LIST_INIT(b);
    item_t it[4];
    int got[4];

    for (int i = 0; i < 4; i++) {
        it[i].v = i;
        bk_list_init(&it[i].link);
        bk_list_push_tail(i < 2 ? &a : &b, &it[i].link);
    }
    bk_list_splice_tail(&a, &b);
    cr_assert(bk_list_empty(&b));
    cr_assert_eq(collect(&a, got, 4), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(got[i], i);
    bk_list_splice_tail(&a, &b);        /* empty source: nothing moves */
    cr_assert_eq(collect(&a, got, 4), 4);
}
