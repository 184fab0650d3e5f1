/*
 * blkcache.c - freed blocks kept in size classes, on stacks of pointers.
 */
#include <stdbool.h>
#include <stdlib.h>
#include "blkcache.h"

#define STACK_MIN 64u

static unsigned class_of(size_t size)
{
    return size <= BK_BLK_MAX
               ? (unsigned)((size + BK_BLK_STEP - 1) / BK_BLK_STEP) : 0;
}

void *bk_blk_alloc(bk_blkcache_t *c, size_t size, uint8_t *cls)
{
    unsigned k = class_of(size ? size : 1);
    bk_blk_stack_t *s = &c->cls[k];

    *cls = (uint8_t)k;
    if (k && s->n) {
        c->bytes -= k * BK_BLK_STEP;
        return s->blk[--s->n];
    }
    return malloc(k ? k * BK_BLK_STEP : size);
}

/* Room for one more pointer on s; false when it cannot grow. */
static bool stack_room(bk_blk_stack_t *s)
{
    uint32_t cap;
    void **b;

    if (s->n < s->cap)
        return true;
    cap = s->cap ? s->cap * 2 : STACK_MIN;
    b = realloc(s->blk, cap * sizeof(*b));
    if (!b)
        return false;
    s->blk = b;
    s->cap = cap;
    return true;
}

void bk_blk_free(bk_blkcache_t *c, void *p, uint8_t cls)
{
    bk_blk_stack_t *s = &c->cls[cls];

    if (!p)
        return;
    if (!cls || cls > BK_BLK_CLASSES ||
        c->bytes + cls * BK_BLK_STEP > c->max_bytes || !stack_room(s)) {
        free(p);
        return;
    }
    s->blk[s->n++] = p;
    c->bytes += cls * BK_BLK_STEP;
}

void bk_blk_trim(bk_blkcache_t *c)
{
    for (unsigned k = 0; k <= BK_BLK_CLASSES; k++) {
        bk_blk_stack_t *s = &c->cls[k];
        while (s->n)
            free(s->blk[--s->n]);
        free(s->blk);
        *s = (bk_blk_stack_t){ NULL, 0, 0 };
    }
    c->bytes = 0;
}
