/* Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11).
 *
 * A draw is a pure function of (seed, stream ids, counter): no generator state
 * has to be saved in checkpoints, and the noise a sample gets does not depend
 * on which rank draws it or how many ranks there are. Convention used by the
 * trainer and models: stream ids = (step, global sample index, site), where
 * `site` names the place in the model that draws (see the SP_SITE_* values the
 * models define).
 *
 * Key = the 64-bit seed split in two 32-bit words; counter = {block, s0, s1, s2}
 * where `block` counts 4-word blocks within the stream. */
#ifndef SUPAIR_RNG_H
#define SUPAIR_RNG_H

#include <stdint.h>

/* The raw bijection: out = Philox4x32-10(ctr, key). */
void sp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* A stream: sequential draws, each one a pure function of its position. */
typedef struct sp_rng {
    uint32_t key[2];
    uint32_t ctr[4]; /* ctr[0] = next block; ctr[1..3] = stream ids */
    uint32_t buf[4];
    int avail;       /* unused words left in buf (taken from buf[4-avail]) */
    int has_spare;   /* Box-Muller makes normals in pairs */
    float spare;
} sp_rng;

void sp_rng_init(sp_rng *r, uint64_t seed, uint32_t s0, uint32_t s1, uint32_t s2);
uint32_t sp_rng_u32(sp_rng *r);
/* Uniform in the open interval (0, 1): never 0, so log() is safe. */
float sp_rng_uniform(sp_rng *r);
/* Standard normal. */
float sp_rng_normal(sp_rng *r);
/* Normal(0, std^2) truncated to +-2 std by resampling (TensorFlow's
 * truncated_normal, used by the SPN initialisation). */
float sp_rng_trunc_normal(sp_rng *r, float std);

/* Fill helpers: element i of the output depends only on (seed, s0, s1, s2, i),
 * whatever n is, so slices can be filled independently. */
void sp_rng_fill_uniform(float *out, long n, float lo, float hi, uint64_t seed, uint32_t s0,
                         uint32_t s1, uint32_t s2);
void sp_rng_fill_normal(float *out, long n, float mean, float std, uint64_t seed, uint32_t s0,
                        uint32_t s1, uint32_t s2);

#endif
