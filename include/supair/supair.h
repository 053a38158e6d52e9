/* SuPAIR (Sum-Product Attend-Infer-Repeat, MODELS.md): the parts of the model
 * reachable beyond its vtable (sp_model_find("supair")).
 *
 * - the structure seed the SPNs were drawn with (checkpoints store it, so a
 *   resumed or evaluated run rebuilds the same random region graphs);
 * - inference for dumps and plots (presence probabilities and boxes);
 * - the evaluation helpers (greedy IoU of the reference's iou_score.py);
 * - the model's fused tape ops, public so the unit tests can check their
 *   gradients by finite differences.
 *
 * Per-object rows ("z rows") hold SP_SUPAIR_ZW floats:
 *   [rho, sx, sy, x, y, log q(z_where)]
 * rho = presence probability; (sx, sy, x, y) = the reparameterised sample of
 * the glimpse scales and top-left corner (pixels); log q is the Gaussian
 * log-density of that sample. */
#ifndef SUPAIR_SUPAIR_H
#define SUPAIR_SUPAIR_H

#include <stdint.h>

#include "supair/model.h"
#include "supair/tape.h"

#define SP_SUPAIR_ZW 6

/* The vtable (also listed in the registry). */
extern const sp_model_vtable sp_supair_model;

/* The structure seed the model's SPNs were built with: the config key
 * supair.structure_seed, or when that is -1, a value derived from `seed`. */
uint64_t sp_supair_structure_seed(const void *model);

/* Forward inference without gradients on n scenes x (n, 50, 50):
 * rho (n, K) presence probabilities, boxes (n, K, 4) [x, y, w, h] in pixels
 * from the posterior MEAN of z_where (w = 28 sx, h = 28 sy); K =
 * supair.max_objects. Either output may be NULL. Allocates from the tape
 * (the caller resets it). The vtable's infer (eval --dump) wraps this. */
int sp_supair_infer(void *model, sp_tape *t, const sp_params *p, const float *x, int n, float *rho,
                    float *boxes, sp_error *err);

/* Time per component of training steps, for the benchmark: forward sections
 * timed directly, backward attributed by marker nodes on the tape. Adds up
 * over steps; set last_mark = 0 and the arrays to zero to start. */
enum { SP_SUPAIR_T_LSTM = 0, SP_SUPAIR_T_SPN, SP_SUPAIR_T_STN, SP_SUPAIR_T_REST, SP_SUPAIR_T_N };
typedef struct sp_supair_profile {
    double fwd[SP_SUPAIR_T_N], bwd[SP_SUPAIR_T_N];
    double last_mark;
    int pending; /* internal: the section whose backward is running */
} sp_supair_profile;

/* NULL turns profiling off (the default). */
void sp_supair_set_profile(void *model, sp_supair_profile *prof);

/* ---- evaluation helpers (the reference's iou_score.py) ---- */

/* IoU of two boxes [x, y, w, h] with the reference's inclusive-pixel
 * convention (corners x..x+w, areas (w+1)(h+1)). */
double sp_supair_box_iou(const float *a, const float *b);

/* Greedy matching of one scene: for each of the first min(n_pred, n_true)
 * predicted boxes in order, the best unmatched true box; returns the sum of
 * the matched IoUs (the caller divides by the total number of true boxes).
 * Predicted boxes are padded by `pad` pixels on every side first. */
double sp_supair_scene_iou(int n_pred, int n_true, const float *pred, const float *truth,
                           float pad);

/* ---- fused ops (tape conventions of tape.h) ---- */

typedef struct sp_supair_bounds {
    float scale_min, scale_max; /* sx */
    float ratio_min, ratio_max; /* sy / sx */
    float pos_max;              /* x, y in [0, pos_max] */
    float std_max;              /* std = std_max * sigmoid(.) */
} sp_supair_bounds;

/* y (B, G) = x (B, D) W (D, G) + b (G); gradients to W, b (and x if it has a
 * gradient buffer). The LSTM's input projection, computed once per batch.
 * An x without gradient that is mostly exact zeros (scenes on a black
 * background) goes through the sparse kernels of sparse.h, forward and for
 * dW; the result differs from sgemm's only in float summation order. */
sp_tensor *sp_supair_linear(sp_tape *t, const sp_tensor *x, const sp_tensor *W, const sp_tensor *b);
/* The same with W (D, G) stored in column slabs (params.h sp_params_set_slab
 * with SP_SPARSE_SLAB; G must divide by it): the sparse forward reads W's
 * slabs in place and the sparse dW writes each slab contiguously (SuPAIR's
 * 10 MB lstm/W_x). The same sums in the same order as sp_supair_linear on
 * the row-major W. */
sp_tensor *sp_supair_linear_slabs(sp_tape *t, const sp_tensor *x, const sp_tensor *W,
                                  const sp_tensor *b);

/* The per-step head and z_where posterior: h (B, H) -> sigmoid(h W1 + b1)
 * (B, A) -> o = . W2 + b2 (B, 9) -> z rows (B, SP_SUPAIR_ZW) as above, with
 * eps (B, 4) the standard normal noise of the sample (constant); eps NULL
 * means eps = 0 (the sample is the mean: evaluation boxes). */
sp_tensor *sp_supair_head(sp_tape *t, const sp_tensor *h, const sp_tensor *W1, const sp_tensor *b1,
                          const sp_tensor *W2, const sp_tensor *b2, const float *eps,
                          const sp_supair_bounds *bd);

/* theta (B*K, 6) for the transformer from K z row tensors (B, SP_SUPAIR_ZW):
 * row b*K+k = [sx, 0, x + shift, 0, sy, y + shift]. */
sp_tensor *sp_supair_theta(sp_tape *t, sp_tensor *const *z, int K, float shift);

/* Occlusion: raw object score maps (B*K, H, W) (scattered bilinear weights)
 * -> s = clip(raw, 0, 1); bg_0 = 1, bg_{i+1} = bg_i (1 - s_i). Outputs
 * *bg_pad (B*K, H+2, W+2) = bg_0..bg_{K-1} zero-padded by one pixel
 * (visibility is sampled from it). The background SPN's weights for k
 * objects, bg_k, are made from the raw maps inside its leaf kernels
 * (sp_spn_logp_occluded), not here. */
int sp_supair_occlusion(sp_tape *t, const sp_tensor *raw, int K, sp_tensor **bg_pad);

/* y = 1 - x (any shape); the object SPN's marginalisation from visibility. */
sp_tensor *sp_supair_one_minus(sp_tape *t, const sp_tensor *x);

typedef struct sp_supair_prior {
    float count_p;      /* log p(n=k) = log(count_p) - count_p k */
    float overlap_rate; /* log p(ratio) = log(rate) - rate ratio */
} sp_supair_prior;

/* The ELBO of MODELS.md from its pieces, per scene b:
 *   z[k] (B, SP_SUPAIR_ZW) the K steps' z rows; logp_obj (B*K) object SPN
 *   log-likelihoods of the glimpses (row b*K+k); vis (B*K, P) visibilities;
 *   logp_bg (B*(K+1)) background SPN log-likelihoods (row b*(K+1)+k).
 * Returns the loss (1) = -sum_b ELBO_b. elbo_out[b] (may be NULL) gets each
 * scene's ELBO, count_out[b] (may be NULL) the expected count sum_k k q(k). */
sp_tensor *sp_supair_elbo(sp_tape *t, sp_tensor *const *z, int K, const sp_tensor *logp_obj,
                          const sp_tensor *vis, const sp_tensor *logp_bg,
                          const sp_supair_prior *pr, double *elbo_out, double *count_out);

#endif
