/*
 * shmalloc.h - the chunk allocator of libbroker's shared-memory pool
 * (prefix bk_shma_), kept apart from the I/O in shm.c so that it can be
 * unit-tested.  Not installed.
 *
 * A segment is cut into chunks of BK_SHMA_CHUNK bytes; a buffer is a run
 * of contiguous chunks.  The state is a bitmap in private memory (one bit
 * per chunk, set = in use); nothing is ever stored in the segment itself.
 * Under first fit the chunks never handed out are always the tail of the
 * segment, from `touched` on: that is all it takes to prefer memory whose
 * pages were faulted in and zeroed already (bk_shma_alloc_warm).
 */
#ifndef BK_SHMALLOC_H
#define BK_SHMALLOC_H

#include <stdbool.h>
#include <stdint.h>

#define BK_SHMA_CHUNK       (UINT64_C(64) << 10)
#define BK_SHMA_MAX_CHUNKS  (UINT32_C(1) << 26)     /* 4 TiB per segment */

typedef struct bk_shma {
    uint64_t *bits;         /* nchunks bits, padding bits set */
    uint32_t nchunks;
    uint32_t nfree;
    uint32_t hint;          /* every chunk below it is in use */
    uint32_t touched;       /* no chunk from here on was ever handed out */
} bk_shma_t;

/* Chunks needed for `bytes` (at least 1), or 0 if that is more than
 * BK_SHMA_MAX_CHUNKS. */
uint32_t bk_shma_chunks_for(uint64_t bytes);

/* A segment of nchunks (1..BK_SHMA_MAX_CHUNKS), all free.  Returns 0,
 * -EINVAL or -ENOMEM. */
int bk_shma_init(bk_shma_t *a, uint32_t nchunks);
void bk_shma_fini(bk_shma_t *a);

/* First fit: the lowest-numbered run of n free chunks is marked in use.
 * Returns its first chunk index, or -ENOSPC (also for n == 0). */
int64_t bk_shma_alloc(bk_shma_t *a, uint32_t n);

/* The same among the warm chunks only (those below a->touched, handed
 * out before, so their pages are already there): -ENOSPC if no run of n
 * ends at or below a->touched. */
int64_t bk_shma_alloc_warm(bk_shma_t *a, uint32_t n);

/* The caller made the pages of every chunk there (it populated the
 * segment): from now on all chunks count as warm.  Returns the old
 * `touched`, where the chunks never used before began. */
uint32_t bk_shma_warm_all(bk_shma_t *a);

/* Mark exactly [first, first + n) in use if every chunk of it is free.
 * Returns 0, or -ENOSPC (some chunk is in use, the run leaves the
 * segment, or n == 0). */
int bk_shma_take(bk_shma_t *a, uint32_t first, uint32_t n);

/* Give back the run [first, first + n), which must be in use. */
void bk_shma_free(bk_shma_t *a, uint32_t first, uint32_t n);

bool bk_shma_in_use(const bk_shma_t *a, uint32_t chunk);

/* Size in chunks of a new pool segment for a request of `need` chunks:
 * the configured size (seg_chunks), or the request if it is larger, but
 * no more than the `left` chunks the pool limit still allows.  0 if even
 * the request does not fit in `left`. */
uint32_t bk_shma_plan(uint32_t need, uint32_t seg_chunks, uint64_t left);

#endif
