/* Finite-difference gradient checker used by every op test.
 *
 * sp_gradcheck builds the op(s) under test on fresh random inputs, reduces
 * the output to L = sum_i w_i out_i with fixed random weights w in [-1, 1],
 * runs the tape backward, and compares each input element that requires grad
 * against a numerical derivative of L.
 *
 * How the numerical derivative is made reliable in float32 (see gradcheck.c):
 * - L is summed in double from the float outputs, and outputs that do not
 *   depend on the perturbed element are bit-identical between evaluations, so
 *   their rounding cancels exactly;
 * - inputs are snapped to a grid so x +- h is exact in float; steps halve
 *   from H = max(|x|, 1)/8 (rounded to a power of two) down to H/64, with
 *   Richardson extrapolation over each neighbouring pair (truncation O(h^4));
 *   the two neighbouring extrapolations that agree best give the estimate
 *   and their gap its error. When even the best gap exceeds half the
 *   tolerance, the element sits on a kink (relu, clip, ...) at every step and
 *   is skipped; more than a quarter of the elements skipped is a failure.
 * - input grads are pre-filled with random values before backward and the
 *   check uses the difference, so a backward that assigns instead of adding
 *   fails.
 *
 * The build function must be deterministic (same inputs -> bit-identical
 * outputs) and must not keep state between calls. */
#ifndef SUPAIR_GRADCHECK_H
#define SUPAIR_GRADCHECK_H

#include <stdint.h>
#include <stdio.h>

#include "supair/tape.h"

/* Builds the op(s) under test from the inputs; returns the output tensor (any
 * shape). inputs[i] has spec[i]'s shape and a grad buffer when that input
 * requires grad and the tape has gradients enabled. */
typedef sp_tensor *(*sp_gc_build)(sp_tape *t, sp_tensor **inputs, void *ctx);

typedef struct sp_gc_input {
    int ndim;
    int shape[4];
    float lo, hi;      /* values drawn uniformly in [lo, hi] */
    int requires_grad;
} sp_gc_input;

typedef struct sp_gc_result {
    double max_abs_err, max_rel_err; /* over checked elements */
    int n_checked;                   /* elements compared (skipped ones excluded) */
    int n_skipped;                   /* elements on a kink (see above) */
    char worst[256];                 /* the worst element, or why the check failed */
} sp_gc_result;

/* Default tolerances for float32 ops. The numerical derivative's error on
 * this checker's own tests is below 1e-4 absolute (64-term products of O(3)
 * values: 7e-5; x^3 sin x on [-2, 2]: 3e-5), so atol = 1e-3 leaves a 10x
 * margin for ops that sum more terms, while rtol = 2e-3 still catches a 1%
 * error in any gradient of magnitude above 0.125 (test_ops_gradcheck proves
 * it). Ops whose forward sums many terms (K >> 100) may need a larger atol. */
#define SP_GC_ATOL 1e-3
#define SP_GC_RTOL 2e-3

/* Returns 1 when every checked element passes |g - fd| <= atol + rtol*|fd|,
 * 0 otherwise (res->worst then says why). res may be NULL. */
int sp_gradcheck(sp_gc_build f, void *ctx, int n_in, const sp_gc_input *spec, uint64_t seed,
                 double atol, double rtol, sp_gc_result *res);

/* Fills out[0..n) uniformly in [lo, hi] from a fixed generator (seeded);
 * handy for forward-value tests. */
void sp_gc_fill_uniform(float *out, long n, float lo, float hi, uint64_t seed);

/* CUnit assertion: runs sp_gradcheck and fails loudly with the worst element,
 * the analytic and numerical values (also printed to stdout). */
#define SP_ASSERT_GRADCHECK(f, ctx, n_in, spec, seed, atol, rtol)                          \
    do {                                                                                   \
        sp_gc_result r_;                                                                   \
        int ok_ = sp_gradcheck((f), (ctx), (n_in), (spec), (seed), (atol), (rtol), &r_);   \
        if (!ok_) {                                                                        \
            char m_[512];                                                                  \
            snprintf(m_, sizeof m_, "gradcheck %s (seed %llu): %s [max abs %.3g, rel %.3g]", \
                     #f, (unsigned long long)(seed), r_.worst, r_.max_abs_err,             \
                     r_.max_rel_err);                                                      \
            printf("\n    FAIL %s\n", m_);                                                 \
            CU_assertImplementation(CU_FALSE, __LINE__, m_, __FILE__, "", CU_FALSE);       \
        } else {                                                                           \
            CU_PASS("gradcheck " #f);                                                      \
        }                                                                                  \
    } while (0)

#endif
