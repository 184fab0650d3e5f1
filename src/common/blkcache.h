/*
 * blkcache.h - a cache of freed memory blocks in size classes, for the
 * many short-lived small allocations of the data path (prefix bk_blk_).
 *
 * brokerd queues a frame node per delivery and libbroker a message block
 * per received message; both are freed a packet later, hundreds at a
 * time.  Blocks up to BK_BLK_MAX bytes come in classes BK_BLK_STEP bytes
 * apart.  A freed block is kept on its class's stack, at most max_bytes
 * in all, and handed out again before malloc is asked.
 *
 * The stacks are arrays of pointers, not lists threaded through the
 * blocks: a freed block is usually out of the cache by the time it is
 * reused, and taking it must not wait for its memory (a list's pop reads
 * the block for the next one, and consecutive pops then wait one after
 * the other).
 *
 * A cache is not locked: one per thread (libbroker) or one per process
 * (brokerd's single loop).  Blocks of class 0 are plain malloc'd ones.
 */
#ifndef BK_BLKCACHE_H
#define BK_BLKCACHE_H

#include <stddef.h>
#include <stdint.h>

#define BK_BLK_STEP     64u
#define BK_BLK_MAX      8192u
#define BK_BLK_CLASSES  (BK_BLK_MAX / BK_BLK_STEP)

typedef struct bk_blk_stack {
    void **blk;
    uint32_t n, cap;
} bk_blk_stack_t;

typedef struct bk_blkcache {
    bk_blk_stack_t cls[BK_BLK_CLASSES + 1];    /* [c]: blocks of c * STEP */
    size_t bytes;               /* kept, in blocks' sizes */
    size_t max_bytes;           /* 0: keep nothing */
} bk_blkcache_t;

/* A block of at least size bytes; *cls is its class, to pass back to
 * bk_blk_free (0: malloc'd, larger than BK_BLK_MAX).  NULL when out of
 * memory. */
void *bk_blk_alloc(bk_blkcache_t *c, size_t size, uint8_t *cls);

/* Give back a block of class cls: kept while the cache has room, else
 * freed. */
void bk_blk_free(bk_blkcache_t *c, void *p, uint8_t cls);

/* Free every kept block and the stacks. */
void bk_blk_trim(bk_blkcache_t *c);

/* The memory a block of class cls takes; for class 0, `size` plus
 * malloc's overhead. */
#define BK_BLK_MALLOC_OVERHEAD 16u
static inline uint64_t bk_blk_mem(uint8_t cls, size_t size)
{
    return cls ? (uint64_t)cls * BK_BLK_STEP
               : (uint64_t)size + BK_BLK_MALLOC_OVERHEAD;
}

#endif
