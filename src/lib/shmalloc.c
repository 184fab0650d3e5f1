/*
 * shmalloc.c - first-fit chunk bitmap for the shared-memory pool (see
 * shmalloc.h and the overview at the top of shm.c).
 */
#include <errno.h>
#include <stdlib.h>
#include "shmalloc.h"

#define WORD_BITS 64u

static bool bit_get(const uint64_t *bits, uint32_t i)
{
    return (bits[i / WORD_BITS] >> (i % WORD_BITS)) & 1u;
}

/* Set (use) or clear the bits [first, first + n). */
static void bits_fill(uint64_t *bits, uint32_t first, uint32_t n, bool use)
{
    uint32_t i = first, end = first + n;

    while (i < end) {
        uint32_t w = i / WORD_BITS, lo = i % WORD_BITS;
        uint32_t cnt = WORD_BITS - lo < end - i ? WORD_BITS - lo : end - i;
        uint64_t mask = cnt == WORD_BITS ? UINT64_MAX
                                         : ((UINT64_C(1) << cnt) - 1) << lo;

        if (use)
            bits[w] |= mask;
        else
            bits[w] &= ~mask;
        i += cnt;
    }
}

uint32_t bk_shma_chunks_for(uint64_t bytes)
{
    uint64_t n = bytes / BK_SHMA_CHUNK + (bytes % BK_SHMA_CHUNK != 0);

    if (n == 0)
        n = 1;
    return n > BK_SHMA_MAX_CHUNKS ? 0 : (uint32_t)n;
}

int bk_shma_init(bk_shma_t *a, uint32_t nchunks)
{
    uint32_t words = (nchunks + WORD_BITS - 1) / WORD_BITS;

    a->bits = NULL;
    a->nchunks = a->nfree = a->hint = a->touched = 0;
    if (nchunks == 0 || nchunks > BK_SHMA_MAX_CHUNKS)
        return -EINVAL;
    a->bits = calloc(words, sizeof(*a->bits));
    if (!a->bits)
        return -ENOMEM;
    if (nchunks % WORD_BITS)
        bits_fill(a->bits, nchunks, words * WORD_BITS - nchunks, true);
    a->nchunks = a->nfree = nchunks;
    return 0;
}

void bk_shma_fini(bk_shma_t *a)
{
    free(a->bits);
    a->bits = NULL;
    a->nchunks = a->nfree = a->hint = a->touched = 0;
}

bool bk_shma_in_use(const bk_shma_t *a, uint32_t chunk)
{
    return chunk >= a->nchunks || bit_get(a->bits, chunk);
}

/* Scan from the hint for a run of n clear bits ending at or below end,
 * skipping whole words that are full, and taking whole empty words at
 * once.  Returns its start or -ENOSPC. */
static int64_t find_run(const bk_shma_t *a, uint32_t n, uint32_t end)
{
    uint32_t start = 0, run = 0, i = a->hint;

    if (n == 0 || n > a->nfree)
        return -ENOSPC;
    while (i < end && run < n) {
        uint64_t w = a->bits[i / WORD_BITS];

        if (i % WORD_BITS == 0 && w == UINT64_MAX) {
            run = 0;
            i += WORD_BITS;
        } else if (i % WORD_BITS == 0 && w == 0) {
            if (run == 0)
                start = i;
            run += WORD_BITS;
            i += WORD_BITS;
        } else if (bit_get(a->bits, i)) {
            run = 0;
            i++;
        } else {
            if (run == 0)
                start = i;
            run++;
            i++;
        }
    }
    /* a whole empty word may have carried the run past end */
    if (run < n || start + n > end)
        return -ENOSPC;
    return start;
}

/* Mark the free run [start, start + n) in use. */
static void mark_used(bk_shma_t *a, uint32_t start, uint32_t n)
{
    bits_fill(a->bits, start, n, true);
    a->nfree -= n;
    if (start == a->hint)
        a->hint = start + n;
    if (start + n > a->touched)
        a->touched = start + n;
}

int64_t bk_shma_alloc(bk_shma_t *a, uint32_t n)
{
    int64_t start = find_run(a, n, a->nchunks);

    if (start >= 0)
        mark_used(a, (uint32_t)start, n);
    return start;
}

int64_t bk_shma_alloc_warm(bk_shma_t *a, uint32_t n)
{
    int64_t start = find_run(a, n, a->touched);

    if (start >= 0)
        mark_used(a, (uint32_t)start, n);
    return start;
}

uint32_t bk_shma_warm_all(bk_shma_t *a)
{
    uint32_t from = a->touched;

    a->touched = a->nchunks;
    return from;
}

int bk_shma_take(bk_shma_t *a, uint32_t first, uint32_t n)
{
    if (n == 0 || first >= a->nchunks || n > a->nchunks - first)
        return -ENOSPC;
    for (uint32_t i = first; i < first + n; i++)
        if (bit_get(a->bits, i))
            return -ENOSPC;
    mark_used(a, first, n);
    return 0;
}

void bk_shma_free(bk_shma_t *a, uint32_t first, uint32_t n)
{
    if (n == 0 || first >= a->nchunks || n > a->nchunks - first)
        return;
    bits_fill(a->bits, first, n, false);
    a->nfree += n;
    if (first < a->hint)
        a->hint = first;
}

uint32_t bk_shma_plan(uint32_t need, uint32_t seg_chunks, uint64_t left)
{
    uint64_t size = seg_chunks < left ? seg_chunks : left;

    if (need == 0 || need > left)
        return 0;
    return size > need ? (uint32_t)size : need;
}
