/* Random tensorised sum-product networks (RAT-SPN) with factorised Gaussian
 * leaves and soft marginalisation: SuPAIR's object and background likelihoods.
 *
 * Structure (a pure function of cfg.structure_seed, which checkpoints keep):
 * R repetitions; repetition r is a random balanced binary split of the D
 * variables to depth d, i.e. a random permutation of the variables cut into
 * 2^d contiguous leaf regions (sizes from halving: floor/ceil). Per
 * repetition, bottom up:
 *   level 0: each leaf region holds K factorised Gaussians over its variables;
 *   level l = 1..d-1: sibling regions 2g, 2g+1 of level l-1 form a product
 *            region (outer sum of log-values, child a major: c = a*w + b),
 *            then a sum region of S sums over those w*w products;
 *   top:     the product of the last two regions (w*w values).
 * The root is one sum over the R * w*w top products of all repetitions.
 *   Object SPN  (SuPAIR): D=784,  d=2, R=6, K=20, S=20 -> 286,560 params.
 *   Background SPN:        D=2500, d=1, R=3, K=6        ->  90,108 params.
 *
 * Leaves: mean mu, variance v = var_min + (var_max - var_min) * sigmoid(p).
 * Soft marginalisation: pixel i's leaf log-density is weighted by
 * (1 - clip(m_i, 0, 1)); m_i = 1 marginalises it exactly. The gradient wrt m
 * flows where 0 <= m <= 1 (inclusive, as torch.clamp and tf.clip_by_value).
 * Sums: logsumexp(children + log_softmax(weights)), evaluated with the
 * Einsum-network trick (shift each child vector by its max, exponentiate, one
 * GEMM with softmax(weights), log, add the max back). A sum whose children are
 * all equal returns that value exactly, so marginalising every pixel gives
 * log p = 0 exactly.
 *
 * Parameters (registered by sp_spn_add_params under a prefix, e.g. "obj"):
 *   PREFIX/leaf_mean  (R, D, K)          mu; row i of repetition r is the
 *   PREFIX/leaf_var   (R, D, K)          variable sp_spn_perm(s, r)[i], so leaf
 *                                        region j owns rows [off_j, off_j+1)
 *                                        of sp_spn_region_offsets(s)
 *   PREFIX/sum<l>     (R, 2^(d-l), S, C) sum-weight logits of level l = 1..d-1
 *                                        (C = K*K for l = 1, else S*S)
 *   PREFIX/root       (R, C_top)         root logits (softmax over all R*C_top)
 *
 * Threads: sp_spn_logp runs forward and backward in OpenMP threads over fixed
 * chunks of the batch (static partition, so results do not depend on
 * scheduling; the forward values and the gradients wrt x and marg do not even
 * depend on the thread count). Parameter gradients go to per-thread partial
 * buffers summed in thread order: deterministic for a fixed thread count,
 * and 1 vs 2 threads agree to ~1e-6 relative. A batch of one chunk runs
 * without a team. Every BLAS call is made from inside the team, where the
 * OpenMP build of OpenBLAS runs single-threaded (a pthreads OpenBLAS would
 * oversubscribe). Idle OpenMP threads may spin when each has its own core
 * (OMP_WAIT_POLICY=ACTIVE), and must sleep when cores are oversubscribed.
 * Memory: everything per call comes from the tape's arena (at 2 threads
 * about 10 MB for the object SPN at N = 768, 2 MB for the background SPN
 * on 256 scenes x 4 marginalisations through sp_spn_logp_multi). */
#ifndef SUPAIR_SPN_H
#define SUPAIR_SPN_H

#include <stdint.h>

#include "supair/error.h"
#include "supair/params.h"
#include "supair/tape.h"

#define SP_SPN_MAX_DEPTH 12

typedef struct sp_spn_config {
    int n_vars;             /* D */
    int depth;              /* d >= 1, 2^d <= D */
    int repetitions;        /* R */
    int n_leaf;             /* K Gaussians per leaf region */
    int n_sum;              /* S sums per inner sum region (unused when depth == 1) */
    float var_min, var_max; /* 0 < var_min <= var_max */
    uint64_t structure_seed;
} sp_spn_config;

typedef struct sp_spn sp_spn;

/* SuPAIR's defaults (MODELS.md): object SPN over 28x28 glimpses, background
 * SPN over 50x50 scenes. */
sp_spn_config sp_spn_config_object(uint64_t structure_seed);
sp_spn_config sp_spn_config_background(uint64_t structure_seed);

/* Validates cfg (SP_EINPUT naming the bad field) and draws the structure. */
int sp_spn_create(sp_spn **out, const sp_spn_config *cfg, sp_error *err);
void sp_spn_free(sp_spn *s);

/* Registers the tensors listed above (call before sp_params_finalize); the
 * spn remembers their indices, so it then works with that sp_params only. */
int sp_spn_add_params(sp_spn *s, sp_params *p, const char *prefix, sp_error *err);

/* Truncated-normal init (std 0.1 leaf means and variance params, 0.5 sum and
 * root logits); a pure function of (seed, prefix). */
void sp_spn_init_params(const sp_spn *s, sp_params *p, uint64_t seed);

/* log p(x) of each row with soft marginalisation: x (N, D) (any shape whose
 * size is N*D with shape[0] = N), marg the same shape or NULL (no
 * marginalisation). Returns (N). When the tape has gradients on, backward
 * ADDS into p->grad for every SPN parameter, into x->grad and marg->grad when
 * they exist. NULL (tape failed) on a shape mismatch or out of memory. */
sp_tensor *sp_spn_logp(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                       const sp_tensor *marg);

#define SP_SPN_MAX_MULTI 64

/* M marginalisations of each x row: x (Nx, D), marg (Nx * M, D) or NULL;
 * returns (Nx * M), row n * M + k = log p(x row n ; marg row n*M + k). The
 * same values and gradients as sp_spn_logp on x with every row repeated M
 * times (the copies' x gradients are summed into x->grad). 1 <= M <=
 * SP_SPN_MAX_MULTI. SuPAIR's background SPN is evaluated once per possible
 * object count (M = K + 1) on the same scene: with two leaf regions per
 * repetition and M <= 4 the leaf kernel computes the x-dependent part of
 * the leaf densities once per scene (values and marg gradients bit for bit
 * those of the repeated rows; x and parameter gradients to rounding, as a
 * scene's M terms are summed first). Other SPNs repeat x internally. */
sp_tensor *sp_spn_logp_multi(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                             const sp_tensor *marg, int M);

/* M marginalisations of each x row given by the M - 1 objects in front of
 * it: occ (Nx * (M - 1), D) holds each row's occluder maps u_j; row n * M
 * + k of the result is log p(x row n) with leaf weights w_0 = 1, w_k =
 * w_{k-1} (1 - clip(u_{k-1}, 0, 1)), the light left behind the first k
 * occluders (sp_spn_logp_multi with marg row n*M+k = 1 - w_k). SuPAIR's
 * background behind its K objects (M = K + 1, occ = the raw score maps).
 * In dense mode with M <= 4 the weights are made per pixel tile inside the
 * leaf kernels, so the (Nx * M, D) marginalisation maps and their gradient
 * never exist; otherwise they are formed and sp_spn_logp_multi runs.
 * Backward ADDS into occ->grad (nothing outside the clip range) and, like
 * sp_spn_logp_multi, x->grad and the parameters. 2 <= M <= SP_SPN_MAX_MULTI. */
sp_tensor *sp_spn_logp_occluded(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                                const sp_tensor *occ, int M);

/* ---- structure, for tests, checkpoints and visualisation ---- */
const sp_spn_config *sp_spn_get_config(const sp_spn *s);
uint64_t sp_spn_structure_seed(const sp_spn *s);
/* 2^depth leaf regions per repetition. */
int sp_spn_n_leaf_regions(const sp_spn *s);
/* (D) the variable at each position of repetition r's order. */
const int *sp_spn_perm(const sp_spn *s, int rep);
/* (2^depth + 1) start of each leaf region in that order (the same for every
 * repetition); the last entry is D. */
const int *sp_spn_region_offsets(const sp_spn *s);
/* Leaf region (0 .. 2^depth-1) of variable `var` in repetition r. */
int sp_spn_leaf_region(const sp_spn *s, int rep, int var);
/* Parameter floats (without the table's alignment padding). */
long sp_spn_n_params(const sp_spn *s);
/* Useful GEMM FLOPs per example (2 per multiply-add), for benchmarks:
 * forward only (backward = 0), or backward with (input_grads = 1) or without
 * the leaf input-gradient GEMM. */
double sp_spn_flops(const sp_spn *s, int backward, int input_grads);
/* The same per x row of sp_spn_logp_multi with M marginalisations: M times
 * the above, except where the shared leaf kernel runs (2 leaf regions per
 * repetition, M <= 4); there the leaf layer counts its own multiply-adds per
 * pixel, Gaussian and repetition: 2 + M forward (the x-dependent part once,
 * then one per marginalisation), 5 + 2M backward (+ 2 for input_grads). */
double sp_spn_flops_multi(const sp_spn *s, int M, int backward, int input_grads);

#endif
