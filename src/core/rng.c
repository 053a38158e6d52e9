/* Philox4x32-10 counter-based RNG and the distributions built on it (see rng.h).
 *
 * Word w of stream (seed, s0, s1, s2) is word w%4 of
 * Philox({w/4, s0, s1, s2}, {seed_lo, seed_hi}); normals come in Box-Muller
 * pairs from words (2k, 2k+1). The fill helpers use exactly this layout, so a
 * fill equals the first n sequential draws of a fresh stream, and element i
 * never depends on n. */
#include "supair/rng.h"

#include <math.h>

/* Multipliers and Weyl key increments of Salmon et al. (SC'11). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void sp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round > 0) { /* the key is bumped between rounds, not before the first */
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * x0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * x2;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
        uint32_t y1 = (uint32_t)p1;
        uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        uint32_t y3 = (uint32_t)p0;
        x0 = y0, x1 = y1, x2 = y2, x3 = y3;
    }
    out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3;
}

static inline void seed_key(uint32_t key[2], uint64_t seed) {
    key[0] = (uint32_t)seed;
    key[1] = (uint32_t)(seed >> 32);
}

/* 23 random bits centred in their cell: (k + 0.5) * 2^-23 is exact in a float
 * and lies in [2^-24, 1 - 2^-24], so neither 0 nor 1 can come out (24 bits
 * would round the top cell to 1.0f). */
static inline float u32_to_open01(uint32_t u) {
    return ((float)(u >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

/* Box-Muller from two words. The radius uses all 32 bits in double so the
 * tails reach ~6.7 sigma instead of the ~5.8 that a float uniform allows. */
static inline void box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
    double u1 = ((double)a + 0.5) * (1.0 / 4294967296.0);
    double u2 = ((double)b + 0.5) * (1.0 / 4294967296.0);
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925 * u2;
    *z0 = (float)(r * cos(th));
    *z1 = (float)(r * sin(th));
}

void sp_rng_init(sp_rng *r, uint64_t seed, uint32_t s0, uint32_t s1, uint32_t s2) {
    seed_key(r->key, seed);
    r->ctr[0] = 0;
    r->ctr[1] = s0;
    r->ctr[2] = s1;
    r->ctr[3] = s2;
    r->avail = 0;
    r->has_spare = 0;
    r->spare = 0.0f;
}

uint32_t sp_rng_u32(sp_rng *r) {
    if (r->avail == 0) {
        sp_philox4x32_10(r->ctr, r->key, r->buf);
        r->ctr[0]++;
        r->avail = 4;
    }
    return r->buf[4 - r->avail--];
}

float sp_rng_uniform(sp_rng *r) { return u32_to_open01(sp_rng_u32(r)); }

float sp_rng_normal(sp_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    uint32_t a = sp_rng_u32(r);
    uint32_t b = sp_rng_u32(r);
    float z0, z1;
    box_muller(a, b, &z0, &z1);
    r->spare = z1;
    r->has_spare = 1;
    return z0;
}

float sp_rng_trunc_normal(sp_rng *r, float std) {
    float z;
    do z = sp_rng_normal(r);
    while (fabsf(z) > 2.0f); /* accepts ~95.4%: the loop is short */
    return z * std;
}

/* Big fills (parameter initialisation) are split over threads; each element is
 * a pure function of its index, so the result does not depend on the split. */
#define FILL_PARALLEL_MIN (1L << 16)

void sp_rng_fill_uniform(float *out, long n, float lo, float hi, uint64_t seed, uint32_t s0,
                         uint32_t s1, uint32_t s2) {
    uint32_t key[2];
    seed_key(key, seed);
    long nblocks = (n + 3) / 4;
    float scale = hi - lo;
#pragma omp parallel for schedule(static) if (n >= FILL_PARALLEL_MIN)
    for (long b = 0; b < nblocks; b++) {
        uint32_t ctr[4] = {(uint32_t)b, s0, s1, s2}, w[4];
        sp_philox4x32_10(ctr, key, w);
        long m = n - 4 * b < 4 ? n - 4 * b : 4;
        for (long j = 0; j < m; j++) out[4 * b + j] = lo + scale * u32_to_open01(w[j]);
    }
}

void sp_rng_fill_normal(float *out, long n, float mean, float std, uint64_t seed, uint32_t s0,
                        uint32_t s1, uint32_t s2) {
    uint32_t key[2];
    seed_key(key, seed);
    long nblocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n >= FILL_PARALLEL_MIN)
    for (long b = 0; b < nblocks; b++) {
        uint32_t ctr[4] = {(uint32_t)b, s0, s1, s2}, w[4];
        sp_philox4x32_10(ctr, key, w);
        float z[4];
        box_muller(w[0], w[1], &z[0], &z[1]);
        box_muller(w[2], w[3], &z[2], &z[3]);
        long m = n - 4 * b < 4 ? n - 4 * b : 4;
        for (long j = 0; j < m; j++) out[4 * b + j] = mean + std * z[j];
    }
}
