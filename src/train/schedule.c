/* The data schedule: one global shuffle per epoch, identical on every rank,
 * and each rank's contiguous slice of every global batch. Because the
 * shuffle depends only on (seed, epoch), `-np 1` with batch B and `-np k`
 * with the same global batch see exactly the same examples per step. */
#include "supair/rng.h"
#include "supair/train.h"

/* RNG site reserved for the data shuffle (stream ids: site, epoch, 0). */
#define SITE_SHUFFLE 0x5348u /* "SH" */

void sp_epoch_permutation(int64_t *perm, int64_t n, uint64_t seed, int epoch) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    sp_rng r;
    sp_rng_init(&r, seed, SITE_SHUFFLE, (uint32_t)epoch, 0);
    /* Fisher-Yates with 64-bit draws and rejection, so the permutation is
     * unbiased even for n beyond 2^32 / small multiples. */
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t bound = (uint64_t)i + 1;
        uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
        uint64_t v;
        do {
            v = ((uint64_t)sp_rng_u32(&r) << 32) | sp_rng_u32(&r);
        } while (v >= limit);
        int64_t j = (int64_t)(v % bound);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int64_t sp_steps_per_epoch(int64_t n_rows, int global_batch) {
    return global_batch > 0 ? n_rows / global_batch : 0;
}

void sp_rank_slice(int64_t *out, const int64_t *perm, int64_t pos, int global_batch, int rank,
                   int world) {
    int b = global_batch / world;
    const int64_t *src = perm + pos * global_batch + (int64_t)rank * b;
    for (int i = 0; i < b; i++) out[i] = src[i];
}
