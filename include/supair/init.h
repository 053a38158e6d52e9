/* Parameter initialisers: constant, uniform, truncated normal, Glorot
 * (Xavier) uniform and orthogonal, for any float array or a named entry of a
 * parameter table.
 *
 * Determinism: every random draw comes from the counter RNG (rng.h) with the
 * stream ids (SP_INIT_S0, stream, sub). The sp_init_param_* wrappers use the
 * entry's index in the table as `stream` (and the gate block as `sub`), so a
 * model's initial parameters are a pure function of (seed, order in which it
 * adds its entries), whatever the rank and thread count. SP_INIT_S0 sits in
 * the `step` slot of the trainer's (step, sample, site) convention at a value
 * no training step reaches, so init draws never collide with training noise. */
#ifndef SUPAIR_INIT_H
#define SUPAIR_INIT_H

#include <stdint.h>

#include "supair/error.h"
#include "supair/params.h"

#define SP_INIT_S0 0xFFFFFFFFu

/* ---- raw arrays ---- */

void sp_init_constant(float *w, long n, float value);
/* U(lo, hi). */
void sp_init_uniform(float *w, long n, float lo, float hi, uint64_t seed, uint32_t stream);
/* N(0, std^2) truncated at +-2 std by resampling (TF truncated_normal). */
void sp_init_trunc_normal(float *w, long n, float std, uint64_t seed, uint32_t stream);
/* TF glorot_uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), so the
 * variance is 2 / (fan_in + fan_out). Fills n floats; n is usually
 * fan_in * fan_out, but a matrix that is one block of a bigger kernel (e.g.
 * the input half of TF's fused LSTM kernel) passes the whole kernel's fans. */
void sp_init_glorot_uniform(float *w, long n, int fan_in, int fan_out, uint64_t seed,
                            uint32_t stream);

/* A (rows, cols) matrix, row-major with leading dimension ld >= cols, set to
 * gain * Q where Q is the orthogonal factor (diagonal of R made positive, so
 * Q is Haar-distributed) of the QR decomposition of a standard Gaussian
 * matrix. Non-square matrices are semi-orthogonal: rows >= cols gives
 * orthonormal columns (W^T W = I), rows < cols orthonormal rows (W W^T = I),
 * the convention of Lasagne's and TF's Orthogonal initialisers. The QR is a
 * Householder QR in double (init time only; deterministic for any thread
 * count). `sub` is the third stream id (the gate block below). Returns
 * SP_ERUNTIME when out of memory. */
int sp_init_orthogonal(float *w, int rows, int cols, int ld, float gain, uint64_t seed,
                       uint32_t stream, uint32_t sub, sp_error *err);

/* A fused recurrent weight (rows, nblocks * bc), e.g. a GRU's (H, 3H) or an
 * LSTM's (H, 4H) hidden-to-hidden matrix: each (rows, bc) column block (one
 * gate) is initialised orthogonally on its own, as Lasagne does with one
 * Orthogonal() W_hid per gate. Block b uses sub = b. */
int sp_init_orthogonal_blocks(float *w, int rows, int cols, int nblocks, float gain,
                              uint64_t seed, uint32_t stream, sp_error *err);

/* ---- named entries of a parameter table (after sp_params_finalize) ----
 * Each returns SP_OK, or SP_EINPUT naming the entry when it is missing or its
 * shape does not fit the initialiser. */

int sp_init_param_constant(sp_params *p, const char *name, float value, sp_error *err);
int sp_init_param_uniform(sp_params *p, const char *name, float lo, float hi, uint64_t seed,
                          sp_error *err);
int sp_init_param_trunc_normal(sp_params *p, const char *name, float std, uint64_t seed,
                               sp_error *err);
/* A 2-D entry (fan_in, fan_out); pass fan_in = fan_out = 0 to take them from
 * the shape, or the fans of the whole kernel this entry is a block of. */
int sp_init_param_glorot(sp_params *p, const char *name, int fan_in, int fan_out, uint64_t seed,
                         sp_error *err);
/* A 2-D entry (rows, cols) with cols divisible by nblocks (1 = one matrix). */
int sp_init_param_orthogonal(sp_params *p, const char *name, int nblocks, float gain,
                             uint64_t seed, sp_error *err);

#endif
