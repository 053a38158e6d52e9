/* Tests for the Philox4x32-10 RNG: Random123 known answers, distribution
 * moments, stream layout, and the fill helpers' independence of n. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supair/rng.h"
#include "testutil.h"

/* Random123 tests/kat_vectors, the three "philox4x32 10" lines:
 * counter[4] key[2] -> output[4]. */
static const uint32_t kat[3][10] = {
    {0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x6627e8d5,
     0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
    {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
     0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
    {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
     0x94fdcceb, 0x5001e420, 0x24126ea1},
};

static void test_kat(void) {
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        sp_philox4x32_10(&kat[v][0], &kat[v][4], out);
        for (int j = 0; j < 4; j++) {
            if (out[j] != kat[v][6 + j]) {
                char m[128];
                snprintf(m, sizeof m, "KAT %d word %d: got %08x, want %08x", v, j, out[j],
                         kat[v][6 + j]);
                CU_assertImplementation(CU_FALSE, __LINE__, m, __FILE__, "", CU_FALSE);
            } else {
                CU_PASS("KAT word");
            }
        }
    }
}

/* The stream is Philox({block, s0, s1, s2}, seed) word by word. */
static void test_stream_layout(void) {
    uint64_t seed = 0x0123456789abcdefULL;
    sp_rng r;
    sp_rng_init(&r, seed, 7, 8, 9);
    uint32_t key[2] = {0x89abcdefu, 0x01234567u};
    for (uint32_t b = 0; b < 3; b++) {
        uint32_t ctr[4] = {b, 7, 8, 9}, w[4];
        sp_philox4x32_10(ctr, key, w);
        for (int j = 0; j < 4; j++) CU_ASSERT_EQUAL(sp_rng_u32(&r), w[j]);
    }
    /* Different stream ids give different streams. */
    sp_rng a, b;
    sp_rng_init(&a, 1, 0, 0, 0);
    sp_rng_init(&b, 1, 0, 0, 1);
    int same = 0;
    for (int i = 0; i < 16; i++) same += sp_rng_u32(&a) == sp_rng_u32(&b);
    CU_ASSERT(same < 2);
}

static void test_uniform(void) {
    sp_rng r;
    sp_rng_init(&r, 42, 1, 2, 3);
    const int n = 100000;
    double sum = 0, sum2 = 0;
    float lo = 1, hi = 0;
    for (int i = 0; i < n; i++) {
        float u = sp_rng_uniform(&r);
        if (u < lo) lo = u;
        if (u > hi) hi = u;
        sum += u;
        sum2 += (double)u * u;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    CU_ASSERT(lo > 0.0f);
    CU_ASSERT(hi < 1.0f);
    CU_ASSERT(lo < 1e-3f);
    CU_ASSERT(hi > 1.0f - 1e-3f);
    /* std of the mean is 0.289/sqrt(n) = 9e-4: 5 sigma. */
    SP_ASSERT_CLOSE(mean, 0.5, 0.0046);
    SP_ASSERT_CLOSE(var, 1.0 / 12.0, 0.0015);
    /* The extreme words map strictly inside (0, 1). */
    sp_rng_fill_uniform(&lo, 1, 0.0f, 1.0f, 0, 0, 0, 0);
    CU_ASSERT(lo > 0.0f && lo < 1.0f);
}

static void test_normal(void) {
    sp_rng r;
    sp_rng_init(&r, 7, 0, 0, 0);
    const int n = 100000;
    double s1 = 0, s2 = 0, s4 = 0;
    int beyond3 = 0;
    for (int i = 0; i < n; i++) {
        double z = sp_rng_normal(&r);
        s1 += z;
        s2 += z * z;
        s4 += z * z * z * z;
        beyond3 += fabs(z) > 3.0;
    }
    double mean = s1 / n, var = s2 / n - mean * mean, kurt = s4 / n / (var * var);
    SP_ASSERT_CLOSE(mean, 0.0, 0.016);  /* 5 sigma of 1/sqrt(n) */
    SP_ASSERT_CLOSE(var, 1.0, 0.03);
    SP_ASSERT_CLOSE(kurt, 3.0, 0.12);
    /* P(|z| > 3) = 0.0027 -> 270 expected. */
    CU_ASSERT(beyond3 > 190 && beyond3 < 360);
}

static void test_trunc_normal(void) {
    sp_rng r;
    sp_rng_init(&r, 9, 1, 1, 1);
    const int n = 50000;
    const float std = 0.5f;
    double s1 = 0, s2 = 0;
    float mx = 0;
    for (int i = 0; i < n; i++) {
        float z = sp_rng_trunc_normal(&r, std);
        if (fabsf(z) > mx) mx = fabsf(z);
        s1 += z;
        s2 += (double)z * z;
    }
    CU_ASSERT(mx <= 2.0f * std);
    CU_ASSERT(mx > 1.9f * std); /* the range is used up to its edge */
    double mean = s1 / n, var = s2 / n - mean * mean;
    SP_ASSERT_CLOSE(mean, 0.0, 0.01);
    /* Variance of N(0,1) truncated at +-2: 0.7737 (times std^2). */
    SP_ASSERT_CLOSE(var / (std * std), 0.7737, 0.02);
}

/* Element i of a fill depends only on (seed, ids, i): any n, any slice. */
static void test_fill_independent_of_n(void) {
    enum { N = 1001 };
    static float full[N], part[N];
    sp_rng_fill_normal(full, N, 1.0f, 2.0f, 11, 3, 4, 5);
    for (long n = 1; n <= 9; n++) {
        sp_rng_fill_normal(part, n, 1.0f, 2.0f, 11, 3, 4, 5);
        CU_ASSERT(memcmp(part, full, (size_t)n * sizeof(float)) == 0);
    }
    sp_rng_fill_normal(part, 517, 1.0f, 2.0f, 11, 3, 4, 5);
    CU_ASSERT(memcmp(part, full, 517 * sizeof(float)) == 0);

    sp_rng_fill_uniform(full, N, -1.0f, 3.0f, 11, 3, 4, 5);
    for (long n = 1; n <= 9; n++) {
        sp_rng_fill_uniform(part, n, -1.0f, 3.0f, 11, 3, 4, 5);
        CU_ASSERT(memcmp(part, full, (size_t)n * sizeof(float)) == 0);
    }
    for (int i = 0; i < N; i++) CU_ASSERT_FATAL(full[i] > -1.0f && full[i] < 3.0f);

    /* The fills equal the sequential draws of a fresh stream. */
    sp_rng r;
    sp_rng_init(&r, 11, 3, 4, 5);
    int mism = 0;
    for (int i = 0; i < N; i++) mism += full[i] != -1.0f + 4.0f * sp_rng_uniform(&r);
    CU_ASSERT_EQUAL(mism, 0);
    sp_rng_fill_normal(full, N, 0.0f, 1.0f, 11, 3, 4, 5);
    sp_rng_init(&r, 11, 3, 4, 5);
    mism = 0;
    for (int i = 0; i < N; i++) mism += full[i] != sp_rng_normal(&r);
    CU_ASSERT_EQUAL(mism, 0);
}

/* A big fill is split over threads; it must equal the same fill done in
 * slices (which runs serially below the threshold). */
static void test_fill_large_parallel(void) {
    const long n = 300001;
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    CU_ASSERT_FATAL(a && b);
    sp_rng_fill_normal(a, n, 0.0f, 1.0f, 5, 0, 0, 0);
    sp_rng r;
    sp_rng_init(&r, 5, 0, 0, 0);
    long mism = 0;
    for (long i = 0; i < n; i++) mism += a[i] != sp_rng_normal(&r);
    CU_ASSERT_EQUAL(mism, 0);
    sp_rng_fill_uniform(a, n, 0.0f, 1.0f, 5, 0, 0, 0);
    sp_rng_init(&r, 5, 0, 0, 0);
    mism = 0;
    for (long i = 0; i < n; i++) mism += a[i] != sp_rng_uniform(&r);
    CU_ASSERT_EQUAL(mism, 0);
    free(a);
    free(b);
}

static const sp_test_case rng_cases[] = {
    {"philox known answers (Random123 kat_vectors)", test_kat},
    {"stream layout", test_stream_layout},
    {"uniform range, mean, variance", test_uniform},
    {"normal mean, variance, kurtosis", test_normal},
    {"truncated normal within 2 std", test_trunc_normal},
    {"fill helpers independent of n", test_fill_independent_of_n},
    {"large parallel fill matches sequential draws", test_fill_large_parallel},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"rng", rng_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
