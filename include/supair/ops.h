/* Generic tensor ops on the tape (tape.h): products, broadcasting arithmetic,
 * activations, last-axis reductions, concatenation, and the elementwise
 * log-densities and KL terms the models' ELBOs are built from.
 *
 * Every op computes its output at once. When gradients are enabled and any
 * input has a grad buffer, the output gets a (zeroed) grad buffer and a
 * backward node is recorded; the backward ADDS into the grads of the inputs
 * that have one. Every op returns NULL when an input is NULL, when the arena
 * is exhausted, or when the shapes do not fit (the tape's failed flag is then
 * set, so a chain of ops can be checked once with sp_tape_failed()).
 *
 * Broadcasting (sp_add, sp_sub, sp_mul, sp_div and the distribution ops)
 * follows numpy: shapes are aligned on the right, a dimension of 1 (or a
 * missing leading one) stretches to the other's size; the output has the
 * larger rank; gradients of a stretched input are summed over the stretched
 * dimensions. Example: (B, T, C) + (C) or (B, 1, C) -> (B, T, C).
 *
 * Determinism: elementwise ops compute each element independently, and every
 * sum (broadcast gradients, reductions, bias gradients) runs in a fixed
 * sequential order, so results do not depend on the OpenMP thread count.
 * Matrix products use OpenBLAS sgemm (forward and backward). */
#ifndef SUPAIR_OPS_H
#define SUPAIR_OPS_H

#include "supair/tape.h"

/* Elementwise loops run on OpenMP threads from this many elements on. */
#define SP_OPS_OMP_MIN 32768L

/* ---- products ---- */

/* C = op(A) op(B) -> (M, N), op(X) = X or X^T. A is (M, K), or (K, M) when
 * transA; B is (K, N), or (N, K) when transB. Both 2-D. */
sp_tensor *sp_matmul(sp_tape *t, sp_tensor *A, sp_tensor *B, int transA, int transB);

/* y = x W + b. x (..., I) with any number of leading dims (flattened into
 * rows), W (I, O), b (O) or NULL -> (..., O). */
sp_tensor *sp_linear(sp_tape *t, sp_tensor *x, sp_tensor *W, sp_tensor *b);

/* ---- broadcasting arithmetic ---- */

sp_tensor *sp_add(sp_tape *t, sp_tensor *a, sp_tensor *b);
sp_tensor *sp_sub(sp_tape *t, sp_tensor *a, sp_tensor *b);
sp_tensor *sp_mul(sp_tape *t, sp_tensor *a, sp_tensor *b);
sp_tensor *sp_div(sp_tape *t, sp_tensor *a, sp_tensor *b);
/* a * x and x + a for a constant a. */
sp_tensor *sp_scale(sp_tape *t, sp_tensor *x, float a);
sp_tensor *sp_add_scalar(sp_tape *t, sp_tensor *x, float a);

/* ---- elementwise functions (same shape out) ---- */

sp_tensor *sp_sigmoid(sp_tape *t, sp_tensor *x);
sp_tensor *sp_tanh(sp_tape *t, sp_tensor *x);
sp_tensor *sp_relu(sp_tape *t, sp_tensor *x);          /* gradient 0 at 0 */
sp_tensor *sp_elu(sp_tape *t, sp_tensor *x);           /* alpha = 1 */
sp_tensor *sp_softplus(sp_tape *t, sp_tensor *x);      /* log(1 + e^x), stable for any x */
/* SRNN's activation f(v) = clip(max(v, v/3), -3, 3): slope 1 on [0, 3],
 * 1/3 on [-9, 0), 0 outside [-9, 3]. */
sp_tensor *sp_clipped_leaky(sp_tape *t, sp_tensor *x);
sp_tensor *sp_exp(sp_tape *t, sp_tensor *x);
/* Natural log (named sp_ln: sp_log is the logger of error.h). */
sp_tensor *sp_ln(sp_tape *t, sp_tensor *x);
/* min(max(x, lo), hi); gradient 1 on [lo, hi], 0 outside. */
sp_tensor *sp_clip(sp_tape *t, sp_tensor *x, float lo, float hi);
sp_tensor *sp_square(sp_tape *t, sp_tensor *x);

/* ---- last-axis ops (rows = all leading dims) ---- */

/* x - logsumexp(x) along the last axis: (..., L) -> (..., L). A row of all
 * -inf gives all -inf (and no gradient). */
sp_tensor *sp_log_softmax(sp_tape *t, sp_tensor *x);
/* log sum exp along the last axis, max-shifted: (..., L) -> (...); a 1-D
 * input gives shape (1). -inf entries contribute 0; an all -inf row gives
 * -inf with zero gradient. */
sp_tensor *sp_logsumexp(sp_tape *t, sp_tensor *x);
/* Sum along the last axis: (..., L) -> (...); a 1-D input gives shape (1). */
sp_tensor *sp_sum_last(sp_tape *t, sp_tensor *x);
/* Sum / mean of all elements -> (1), accumulated in double in index order. */
sp_tensor *sp_sum_all(sp_tape *t, sp_tensor *x);
sp_tensor *sp_mean_all(sp_tape *t, sp_tensor *x);

/* (..., La) ++ (..., Lb) -> (..., La + Lb); leading dims must match exactly. */
sp_tensor *sp_concat_last(sp_tape *t, sp_tensor *a, sp_tensor *b);
/* x[..., start : start + len] (a copy) -> (..., len). */
sp_tensor *sp_slice_last(sp_tape *t, sp_tensor *x, int start, int len);

/* ---- distributions, elementwise with broadcasting ---- */

/* log N(x; mu, exp(logvar)) per element. */
sp_tensor *sp_gauss_logpdf(sp_tape *t, sp_tensor *x, sp_tensor *mu, sp_tensor *logvar);
/* log N(x; mu, std^2) per element (std > 0). */
sp_tensor *sp_gauss_logpdf_std(sp_tape *t, sp_tensor *x, sp_tensor *mu, sp_tensor *std);
/* log Bernoulli(x; sigmoid(logits)) = x*logits - softplus(logits); x may be
 * fractional (a [0,1] intensity), stable for any logits. */
sp_tensor *sp_bernoulli_logpmf(sp_tape *t, sp_tensor *x, sp_tensor *logits);
/* KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) per element:
 * 0.5 (logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1). */
sp_tensor *sp_kl_diag_gauss(sp_tape *t, sp_tensor *mu_q, sp_tensor *logvar_q, sp_tensor *mu_p,
                            sp_tensor *logvar_p);
/* Reparameterised sample mu + std * eps. eps is noise the caller filled from
 * the counter RNG (normally without grad; if it has one, it gets std * g). */
sp_tensor *sp_gauss_rsample(sp_tape *t, sp_tensor *mu, sp_tensor *std, sp_tensor *eps);

#endif
