/* Adam and gradient clipping over the flat parameter buffers of params.h.
 *
 * Every routine is one loop over [0, p->total): the padding between entries
 * has zero gradient, so it stays zero in the values and both moments. Results
 * are element-wise or reduced in a fixed chunk order, so they do not depend on
 * the number of OpenMP threads (the trainer runs them identically on every
 * rank after the allreduce).
 *
 * The two Adam forms (both with m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
 * bias corrections c1 = 1 - b1^t, c2 = 1 - b2^t):
 *
 *   SP_ADAM_PYTORCH   torch.optim.Adam:  p -= lr * (m/c1) / (sqrt(v/c2) + eps)
 *                     eps is added to the bias-CORRECTED sqrt(v).
 *   SP_ADAM_LASAGNE   lasagne.updates.adam, and also TensorFlow's
 *                     tf.train.AdamOptimizer: a_t = lr * sqrt(c2) / c1,
 *                     p -= a_t * m / (sqrt(v) + eps)
 *                     eps ("epsilon hat" in TF) is added to the UNcorrected
 *                     sqrt(v), i.e. it acts as eps*sqrt(c2) would in the
 *                     PyTorch form. SRNN uses it with eps = 1e-4.
 *
 * The two agree exactly when eps = 0 and differ mostly in the first steps,
 * where c2 is small. SuPAIR and AIR use the PyTorch form with eps = 1e-8 (the
 * faithful PyTorch port of MODELS.md; with eps that small TF's form differs
 * from it only in gradients of magnitude ~1e-8). */
#ifndef SUPAIR_OPTIM_H
#define SUPAIR_OPTIM_H

#include "supair/params.h"

typedef enum sp_adam_form { SP_ADAM_PYTORCH = 0, SP_ADAM_LASAGNE = 1 } sp_adam_form;

typedef struct sp_adam {
    float lr;          /* base learning rate (a schedule passes its own to sp_adam_step) */
    float b1, b2, eps; /* eps > 0: the zero padding then stays 0 (0/eps) */
    sp_adam_form form;
    long t;            /* steps taken; the next step uses t+1. Saved in checkpoints. */
} sp_adam;

/* b1 = 0.9, b2 = 0.999, t = 0; eps = 1e-8 (PyTorch form) or 1e-4 (Lasagne form). */
void sp_adam_init(sp_adam *a, sp_adam_form form, float lr);

/* One Adam step on every parameter from p->grad, with this step's learning
 * rate lr (pass a->lr when there is no schedule; lr < 0 also means a->lr).
 * Increments a->t first. Does not touch the gradients. */
void sp_adam_step(sp_params *p, sp_adam *a, float lr);

/* The same step, and each gradient element set to 0 once it is used: the
 * next backward's sp_params_zero_grad pass is then not needed (the trainer
 * skips it). One pass over memory instead of two (Adam over SuPAIR's 3.2M
 * parameters streams ~90 MB). */
void sp_adam_step_zero_grad(sp_params *p, sp_adam *a, float lr);

/* sp_adam_step_zero_grad on the gradient gscale * p->grad, each product
 * rounded as a separate `grad *= gscale` pass would round it (so the result
 * is that pass's, bit for bit): the trainer averages the reduced gradient
 * sums here instead of in a pass of its own. */
void sp_adam_step_zero_grad_scaled(sp_params *p, sp_adam *a, float lr, float gscale);

/* sp_adam_step_zero_grad_scaled over elements [lo, hi) only (one rank's
 * slice under node-shared parameters, dist.h); a->t advances as for a
 * whole step. */
void sp_adam_step_slice(sp_params *p, sp_adam *a, float lr, float gscale, long lo, long hi);

/* ---- gradient utilities ---- */

/* sqrt(sum g^2) over the whole gradient buffer, accumulated in double in a
 * fixed order (independent of the thread count). Inf/NaN when any g is. */
double sp_grad_global_norm(const sp_params *p);
/* The same of gscale * grad (each product rounded to float first). */
double sp_grad_global_norm_scaled(const sp_params *p, float gscale);

/* Rescales the gradient to global norm max_norm when it is larger (as
 * PyTorch's clip_grad_norm_: factor max_norm / (norm + 1e-6)). Returns the
 * norm BEFORE clipping (the grad_norm metric). A non-finite norm leaves the
 * gradient untouched: check sp_grad_all_finite before stepping. */
double sp_clip_global_norm(sp_params *p, double max_norm);

/* Clamps every gradient element to [-limit, limit]; NaN stays NaN. */
void sp_clip_elementwise(sp_params *p, float limit);

/* g *= s over the whole buffer (averaging after a sum-allreduce). */
void sp_grad_scale(sp_params *p, float s);

/* 1 when every gradient element is finite, 0 when any is NaN or +-Inf: the
 * trainer then refuses to step and to checkpoint. */
int sp_grad_all_finite(const sp_params *p);
/* Same for the parameter values, and for any float array. */
int sp_params_all_finite(const sp_params *p);
int sp_floats_all_finite(const float *x, long n);

/* The array forms behind the whole-buffer functions above, for a slice:
 * sum of (scale * x)^2 (products rounded to float, summed in double in a
 * fixed order), x *= s, and clamping to [-limit, limit] (NaN stays). */
double sp_floats_sum_squares(const float *x, long n, float scale);
void sp_floats_scale(float *x, long n, float s);
void sp_floats_clip(float *x, long n, float limit);

#endif
