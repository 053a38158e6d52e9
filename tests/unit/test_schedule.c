/* The data schedule: the epoch shuffle is a permutation, a pure function of
 * (seed, epoch), and the rank slices of a global batch tile it exactly, so
 * any world size sees the same global batches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "supair/train.h"
#include "testutil.h"

static void test_permutation_is_permutation(void) {
    const int64_t n = 1001;
    int64_t *p = malloc(n * sizeof *p);
    char *seen = calloc(n, 1);
    sp_epoch_permutation(p, n, 42, 3);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    CU_ASSERT(ok);
    free(p);
    free(seen);
}

static void test_permutation_pure_and_varies(void) {
    const int64_t n = 500;
    int64_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    sp_epoch_permutation(a, n, 7, 0);
    sp_epoch_permutation(b, n, 7, 0);
    CU_ASSERT(memcmp(a, b, n * sizeof *a) == 0);
    sp_epoch_permutation(c, n, 7, 1);
    int64_t same = 0, fixed = 0;
    for (int64_t i = 0; i < n; i++) {
        same += a[i] == c[i];
        fixed += a[i] == i;
    }
    /* A random permutation has ~1 fixed point; two epochs agree at ~1 place. */
    CU_ASSERT(same < 10);
    CU_ASSERT(fixed < 10);
    sp_epoch_permutation(c, n, 8, 0);
    same = 0;
    for (int64_t i = 0; i < n; i++) same += a[i] == c[i];
    CU_ASSERT(same < 10);
    free(a);
    free(b);
    free(c);
}

static void test_permutation_uniform_first_position(void) {
    /* Each of 4 items should land first about 1/4 of the time over epochs. */
    int hits[4] = {0};
    int64_t p[4];
    const int epochs = 4000;
    for (int e = 0; e < epochs; e++) {
        sp_epoch_permutation(p, 4, 99, e);
        hits[p[0]]++;
    }
    for (int k = 0; k < 4; k++) SP_ASSERT_CLOSE(hits[k] / (double)epochs, 0.25, 0.03);
}

static void test_rank_slices_tile_global_batch(void) {
    const int64_t n = 103;
    const int B = 12;
    int64_t perm[103];
    sp_epoch_permutation(perm, n, 5, 2);
    CU_ASSERT_EQUAL(sp_steps_per_epoch(n, B), 8); /* drop-last: 96 of 103 rows */
    const int worlds[] = {1, 2, 3, 4, 6, 12};
    for (int w = 0; w < 6; w++) {
        int world = worlds[w];
        for (int64_t pos = 0; pos < sp_steps_per_epoch(n, B); pos++) {
            int64_t got[12], slice[12];
            int k = 0;
            for (int r = 0; r < world; r++) {
                sp_rank_slice(slice, perm, pos, B, r, world);
                for (int i = 0; i < B / world; i++) got[k++] = slice[i];
            }
            CU_ASSERT_EQUAL(k, B);
            CU_ASSERT(memcmp(got, perm + pos * B, B * sizeof *got) == 0);
        }
    }
}

int main(void) {
    static const sp_test_case perm_cases[] = {
        {"is a permutation", test_permutation_is_permutation},
        {"pure function of seed and epoch", test_permutation_pure_and_varies},
        {"uniform first position", test_permutation_uniform_first_position},
        {NULL, NULL}};
    static const sp_test_case slice_cases[] = {
        {"rank slices tile the global batch", test_rank_slices_tile_global_batch}, {NULL, NULL}};
    static const sp_test_suite suites[] = {
        {"schedule/shuffle", perm_cases}, {"schedule/slices", slice_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
