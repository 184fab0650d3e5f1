/*
 * test_shm_alloc.c - unit tests for the shared-memory pool's chunk
 * allocator (src/lib/shmalloc.c): first fit, the warm mark (memory handed
 * out before comes first) and taking an exact run (reuse of the run freed
 * last).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "shmalloc.h"

static bk_shma_t A;

static void teardown(void)
{
    bk_shma_fini(&A);
}

TestSuite(shma, .fini = teardown);

Test(shma, chunks_for_rounds_up)
{
    cr_expect_eq(bk_shma_chunks_for(0), 1);
    cr_expect_eq(bk_shma_chunks_for(1), 1);
    cr_expect_eq(bk_shma_chunks_for(BK_SHMA_CHUNK), 1);
    cr_expect_eq(bk_shma_chunks_for(BK_SHMA_CHUNK + 1), 2);
    cr_expect_eq(bk_shma_chunks_for(UINT64_C(64) << 20), 1024);
    cr_expect_eq(bk_shma_chunks_for(BK_SHMA_CHUNK * BK_SHMA_MAX_CHUNKS),
                 BK_SHMA_MAX_CHUNKS);
    cr_expect_eq(bk_shma_chunks_for(BK_SHMA_CHUNK * BK_SHMA_MAX_CHUNKS + 1),
                 0);
    cr_expect_eq(bk_shma_chunks_for(UINT64_MAX), 0);
}

Test(shma, init_bounds)
{
    cr_expect_eq(bk_shma_init(&A, 0), -EINVAL);
    cr_expect_eq(bk_shma_init(&A, BK_SHMA_MAX_CHUNKS + 1), -EINVAL);
    cr_assert_eq(bk_shma_init(&A, 1000), 0);
    cr_expect_eq(A.nchunks, 1000);
    cr_expect_eq(A.nfree, 1000);
    for (uint32_t i = 0; i < 1000; i++)
        cr_expect(!bk_shma_in_use(&A, i));
    cr_expect(bk_shma_in_use(&A, 1000), "past the end counts as in use");
}

Test(shma, first_fit_reuses_the_lowest_hole)
{
    cr_assert_eq(bk_shma_init(&A, 16), 0);
    cr_expect_eq(bk_shma_alloc(&A, 3), 0);
    cr_expect_eq(bk_shma_alloc(&A, 2), 3);
    cr_expect_eq(bk_shma_alloc(&A, 4), 5);
    bk_shma_free(&A, 0, 3);
    cr_expect_eq(A.nfree, 16 - 6);
    cr_expect_eq(bk_shma_alloc(&A, 4), 9, "hole of 3 is too small for 4");
    cr_expect_eq(bk_shma_alloc(&A, 2), 0, "first fit takes the hole");
    cr_expect_eq(bk_shma_alloc(&A, 1), 2);
    cr_expect_eq(bk_shma_alloc(&A, 3), 13);
    cr_expect_eq(A.nfree, 0);
    cr_expect_eq(bk_shma_alloc(&A, 1), -ENOSPC);
}

Test(shma, zero_and_oversized_requests_fail)
{
    cr_assert_eq(bk_shma_init(&A, 8), 0);
    cr_expect_eq(bk_shma_alloc(&A, 0), -ENOSPC);
    cr_expect_eq(bk_shma_alloc(&A, 9), -ENOSPC);
    cr_expect_eq(bk_shma_alloc(&A, 8), 0);
    cr_expect_eq(A.nfree, 0);
}

Test(shma, fragmentation_needs_a_contiguous_run)
{
    cr_assert_eq(bk_shma_init(&A, 10), 0);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(bk_shma_alloc(&A, 1), i);
    for (uint32_t i = 0; i < 10; i += 2)
        bk_shma_free(&A, i, 1);
    cr_expect_eq(A.nfree, 5);
    cr_expect_eq(bk_shma_alloc(&A, 2), -ENOSPC, "5 free chunks, no run of 2");
    bk_shma_free(&A, 5, 1);
    cr_expect_eq(bk_shma_alloc(&A, 3), 4, "4, 5 and 6 joined");
    cr_expect_eq(bk_shma_alloc(&A, 1), 0);
}

Test(shma, runs_cross_word_boundaries)
{
    cr_assert_eq(bk_shma_init(&A, 200), 0);
    cr_expect_eq(bk_shma_alloc(&A, 63), 0);
    cr_expect_eq(bk_shma_alloc(&A, 2), 63, "bit 63 of word 0 and bit 0 of 1");
    cr_expect_eq(bk_shma_alloc(&A, 100), 65, "spans a whole empty word");
    cr_expect(bk_shma_in_use(&A, 164));
    cr_expect(!bk_shma_in_use(&A, 165));
    cr_expect_eq(bk_shma_alloc(&A, 36), -ENOSPC);
    cr_expect_eq(bk_shma_alloc(&A, 35), 165);
    cr_expect_eq(A.nfree, 0);
    bk_shma_free(&A, 63, 102);
    cr_expect_eq(bk_shma_alloc(&A, 102), 63);
}

Test(shma, padding_of_the_last_word_is_never_handed_out)
{
    cr_assert_eq(bk_shma_init(&A, 70), 0);
    cr_expect_eq(bk_shma_alloc(&A, 71), -ENOSPC);
    cr_expect_eq(bk_shma_alloc(&A, 70), 0);
    cr_expect_eq(bk_shma_alloc(&A, 1), -ENOSPC);
    bk_shma_free(&A, 0, 70);
    cr_expect_eq(bk_shma_alloc(&A, 6), 0);
    cr_expect_eq(bk_shma_alloc(&A, 64), 6);
    cr_expect_eq(bk_shma_alloc(&A, 1), -ENOSPC);
}

Test(shma, free_rejects_runs_outside_the_segment)
{
    cr_assert_eq(bk_shma_init(&A, 8), 0);
    cr_assert_eq(bk_shma_alloc(&A, 8), 0);
    bk_shma_free(&A, 8, 1);
    bk_shma_free(&A, 6, 3);
    bk_shma_free(&A, 2, 0);
    cr_expect_eq(A.nfree, 0);
}

/* Naive first fit over a bool array, as the reference. */
static int64_t model_alloc(bool *used, uint32_t n, uint32_t want)
{
    for (uint32_t s = 0; s + want <= n; s++) {
        uint32_t k = 0;
        while (k < want && !used[s + k])
            k++;
        if (k == want) {
            memset(used + s, 1, want);
            return s;
        }
    }
    return -ENOSPC;
}

Test(shma, matches_a_naive_first_fit)
{
    enum { N = 333, LIVE = 64 };
    struct { uint32_t first, n; } live[LIVE];
    bool used[N] = { 0 };
    unsigned nlive = 0, seed = 12345;

    cr_assert_eq(bk_shma_init(&A, N), 0);
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245u + 12345u;
        if (nlive < LIVE && (nlive == 0 || (seed >> 16) % 3)) {
            uint32_t want = 1 + (seed >> 8) % ((seed >> 20) % 4 ? 8 : 80);
            int64_t got = bk_shma_alloc(&A, want);
            int64_t exp = model_alloc(used, N, want);

            cr_assert_eq(got, exp, "step %d: alloc %u gave %ld, want %ld",
                         step, want, (long)got, (long)exp);
            if (got >= 0) {
                live[nlive].first = (uint32_t)got;
                live[nlive++].n = want;
            }
        } else {
            unsigned i = (seed >> 10) % nlive;

            bk_shma_free(&A, live[i].first, live[i].n);
            memset(used + live[i].first, 0, live[i].n);
            live[i] = live[--nlive];
        }
        if (step % 1000 == 0) {
            uint32_t nfree = 0;
            for (uint32_t c = 0; c < N; c++) {
                cr_assert_eq(bk_shma_in_use(&A, c), used[c]);
                nfree += !used[c];
            }
            cr_assert_eq(A.nfree, nfree);
        }
    }
}

Test(shma, touched_marks_the_never_used_tail)
{
    cr_assert_eq(bk_shma_init(&A, 16), 0);
    cr_expect_eq(A.touched, 0);
    cr_expect_eq(bk_shma_alloc_warm(&A, 1), -ENOSPC, "nothing used yet");
    cr_expect_eq(bk_shma_alloc(&A, 3), 0);
    cr_expect_eq(bk_shma_alloc(&A, 2), 3);
    cr_expect_eq(A.touched, 5);
    bk_shma_free(&A, 0, 3);
    cr_expect_eq(A.touched, 5, "freeing keeps memory warm");
    cr_expect_eq(bk_shma_alloc_warm(&A, 4), -ENOSPC, "only 3 warm chunks");
    cr_expect_eq(bk_shma_alloc_warm(&A, 2), 0);
    cr_expect_eq(bk_shma_alloc_warm(&A, 2), -ENOSPC, "chunk 2 alone is left");
    cr_expect_eq(bk_shma_alloc_warm(&A, 1), 2);
    cr_expect_eq(A.touched, 5);
    cr_expect_eq(bk_shma_alloc(&A, 4), 5, "new memory from the tail");
    cr_expect_eq(A.touched, 9);
    cr_expect_eq(A.nfree, 7);
}

Test(shma, a_warm_run_never_reaches_past_touched)
{
    cr_assert_eq(bk_shma_init(&A, 200), 0);
    cr_expect_eq(bk_shma_alloc(&A, 64), 0, "exactly word 0");
    cr_expect_eq(bk_shma_alloc(&A, 10), 64);
    bk_shma_free(&A, 0, 64);
    bk_shma_free(&A, 64, 10);
    cr_expect_eq(A.touched, 74);
    /* words 0 and 1 are empty: the scan takes them whole, but a run of
     * 100 would end in memory never used */
    cr_expect_eq(bk_shma_alloc_warm(&A, 100), -ENOSPC);
    cr_expect_eq(bk_shma_alloc_warm(&A, 75), -ENOSPC);
    cr_expect_eq(bk_shma_alloc_warm(&A, 74), 0);
    cr_expect_eq(A.nfree, 200 - 74);
}

/* A populated segment (BROKER_OPT_SHM_RESERVE): every chunk is warm, and
 * the never-used tail that was is what warm_all returns. */
Test(shma, warm_all_makes_every_chunk_warm)
{
    cr_assert_eq(bk_shma_init(&A, 200), 0);
    cr_expect_eq(bk_shma_alloc(&A, 10), 0);
    cr_expect_eq(bk_shma_warm_all(&A), 10);
    cr_expect_eq(A.touched, 200);
    cr_expect_eq(bk_shma_alloc_warm(&A, 190), 10, "the rest is warm");
    cr_expect_eq(bk_shma_alloc_warm(&A, 1), -ENOSPC, "and all in use");
    cr_expect_eq(bk_shma_warm_all(&A), 200, "nothing new the second time");
}

Test(shma, take_claims_exactly_a_free_run)
{
    cr_assert_eq(bk_shma_init(&A, 16), 0);
    cr_expect_eq(bk_shma_take(&A, 4, 3), 0);
    cr_expect(bk_shma_in_use(&A, 4) && bk_shma_in_use(&A, 6));
    cr_expect(!bk_shma_in_use(&A, 3) && !bk_shma_in_use(&A, 7));
    cr_expect_eq(A.nfree, 13);
    cr_expect_eq(A.touched, 7);
    cr_expect_eq(bk_shma_take(&A, 6, 2), -ENOSPC, "chunk 6 is in use");
    cr_expect_eq(bk_shma_take(&A, 15, 2), -ENOSPC, "leaves the segment");
    cr_expect_eq(bk_shma_take(&A, 16, 1), -ENOSPC);
    cr_expect_eq(bk_shma_take(&A, 0, 0), -ENOSPC);
    cr_expect_eq(A.nfree, 13, "failed takes change nothing");
    cr_expect_eq(bk_shma_alloc(&A, 4), 0, "first fit still sees the hole");
    cr_expect_eq(bk_shma_alloc(&A, 1), 7);
    bk_shma_free(&A, 4, 3);
    cr_expect_eq(bk_shma_take(&A, 4, 3), 0, "a freed run can be taken again");
}

Test(shma, warm_and_take_match_a_naive_model)
{
    enum { N = 333, LIVE = 64 };
    struct { uint32_t first, n; } live[LIVE];
    bool used[N] = { 0 };
    uint32_t touched = 0;
    unsigned nlive = 0, seed = 777;

    cr_assert_eq(bk_shma_init(&A, N), 0);
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245u + 12345u;
        unsigned op = (seed >> 16) % 4;
        uint32_t want = 1 + (seed >> 8) % ((seed >> 20) % 4 ? 8 : 80);
        int64_t got = -ENOSPC, exp = -ENOSPC;

        if (nlive && (op == 0 || nlive == LIVE)) {
            unsigned i = (seed >> 10) % nlive;

            bk_shma_free(&A, live[i].first, live[i].n);
            memset(used + live[i].first, 0, live[i].n);
            live[i] = live[--nlive];
            continue;
        }
        if (op == 1) {
            got = bk_shma_alloc_warm(&A, want);
            /* the model of the warm mark: first fit in [0, touched) */
            exp = model_alloc(used, touched, want);
        } else if (op == 2) {
            uint32_t first = (seed >> 4) % N, k = 0;

            while (k < want && first + k < N && !used[first + k])
                k++;
            got = bk_shma_take(&A, first, want) == 0 ? (int64_t)first : -ENOSPC;
            exp = k == want ? (int64_t)first : -ENOSPC;
            if (exp >= 0)
                memset(used + first, 1, want);
        } else {
            got = bk_shma_alloc(&A, want);
            exp = model_alloc(used, N, want);
        }
        cr_assert_eq(got, exp, "step %d op %u: %u chunks gave %ld, want %ld",
                     step, op, want, (long)got, (long)exp);
        if (got >= 0) {
            if ((uint32_t)got + want > touched)
                touched = (uint32_t)got + want;
            live[nlive].first = (uint32_t)got;
            live[nlive++].n = want;
        }
        cr_assert_eq(A.touched, touched, "step %d", step);
        if (step % 1000 == 0) {
            uint32_t nfree = 0;
            for (uint32_t c = 0; c < N; c++) {
                cr_assert_eq(bk_shma_in_use(&A, c), used[c]);
                nfree += !used[c];
            }
            cr_assert_eq(A.nfree, nfree);
        }
    }
}

Test(shma, plan_sizes_new_segments)
{
    /* the configured size when the request is smaller */
    cr_expect_eq(bk_shma_plan(3, 1024, 32768), 1024);
    /* a request larger than the configured size gets its own size */
    cr_expect_eq(bk_shma_plan(4096, 1024, 32768), 4096);
    /* near the pool limit: whatever is left, if the request fits */
    cr_expect_eq(bk_shma_plan(3, 1024, 500), 500);
    cr_expect_eq(bk_shma_plan(500, 1024, 500), 500);
    cr_expect_eq(bk_shma_plan(501, 1024, 500), 0);
    cr_expect_eq(bk_shma_plan(1, 1024, 0), 0);
    cr_expect_eq(bk_shma_plan(0, 1024, 500), 0);
}
