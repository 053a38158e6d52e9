/* RAT-SPN structure, parameters and the coarse log-likelihood op (spn.h).
 *
 * One sp_spn_logp call is one tape node. Forward and backward run per fixed
 * chunk of examples inside an OpenMP team (static partition of chunks):
 *   leaves:  L (nb, K) = sum over a region's pixels of w (A + B x + C x^2),
 *            w = 1 - clip(m, 0, 1), with A = -log(2 pi v)/2 - mu^2/(2v),
 *            B = mu/v, C = -1/(2v) ("Theta", derived once per call);
 *   sums:    Z (nb, S) = (exp(a - max a) (x) exp(b - max b)) x softmax(W)^T,
 *            value = max a + max b + log Z (an sgemm per region and chunk);
 *   root:    per repetition z_r = ea . (Wr eb), then a log-sum-exp over r.
 * The leaf layer (most of the flops) has two hand-written AVX2 kernels:
 *   gather mode (many regions, the object SPN): the chunk's x and m are
 *     transposed once to pixel-major (D, nb), and a region's pixels are
 *     then read 8 examples at a time (see the gather-mode leaf kernels);
 *   dense mode (2 regions per repetition, the background SPN): all pixels
 *     in their natural order, region membership as a bit mask, and the
 *     x-dependent part shared between the marginalisations of one scene
 *     (sp_spn_logp_multi; see the dense leaf kernels).
 * Backward recomputes the cheap exponentials instead of storing the (nb, C)
 * outer products; it keeps only the level values, Z and the root terms.
 * Parameter gradients are accumulated per thread in the "derived" layout
 * (dTheta, dsoftmax(W)) and turned into gradients of mu, the variance
 * parameter and the logits once, after a reduction in thread order. */
#include "supair/spn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "supair/rng.h"

/* RNG site ids (stream s0) of the structure draw and the initialisation. */
#define SITE_STRUCTURE 0x53504e53u /* "SPNS" */
#define SITE_INIT 0x53504e49u      /* "SPNI" */

/* exp(d) for d below -EXP_CUT is dropped: relative to the max term (1) it is
 * < 4e-18, far under float resolution, and products of two such factors stay
 * well above FLT_MIN, so the GEMMs do not meet denormals. */
#define EXP_CUT 40.0f
/* Floor of a sum's linear value: it is at least the weight of its largest
 * child, so this only guards log(0) when weights themselves underflow.
 * Applied as (z < Z_MIN ? Z_MIN : z) so a NaN passes through. */
#define Z_MIN 1e-30f

/* Dense leaf kernels (see there): pixels per tile; marginalisations per
 * scene handled in one pass, their weights and gradients in registers
 * (sp_spn_logp_multi repeats x for larger M); scenes per chunk. */
#define DENSE_TILE 256
#define DENSE_MAX_M 4
#define DENSE_SCENES 16

struct sp_spn {
    sp_spn_config cfg;
    int D, d, R, K, S, G0;
    int *perm;                    /* (R, D) variable at each position */
    int *region_of;               /* (R, D) leaf region of each variable */
    int *off;                     /* (G0 + 1) region starts */
    int width[SP_SPN_MAX_DEPTH];  /* values per region at level l */
    int groups[SP_SPN_MAX_DEPTH]; /* regions per repetition at level l */
    int ctop;                     /* width[d-1]^2 top products per repetition */
    int cmax;                     /* largest product region */
    /* "derived" layout: Theta (per region (3, n_j, K) in gather mode,
     * (Dp / 8, R, K, 3, 8) in dense mode, see dense_off), normalised sum
     * weights per level, normalised root weights. Also the layout of the
     * partial gradients. */
    long dw_off[SP_SPN_MAX_DEPTH], droot_off, n_derived;
    int nb; /* examples per chunk */
    /* Dense leaf mode (two leaf regions per repetition, the background
     * SPN): pixels in their natural order, region membership as a mask,
     * hand-written kernels over pixel tiles (see the dense leaf kernels). */
    int dense;
    long Dp;          /* dense mode: D rounded up to 8 */
    uint32_t *rmask;  /* dense mode: (Dp / 8, R, 8) all ones where the pixel is in leaf region 1 */
    int *pos_of;      /* dense mode: (R, D) each variable's position in perm, for Theta's order */
    int has_params;
    int i_mean, i_var, i_sum[SP_SPN_MAX_DEPTH], i_root;
    char prefix[48];
};

/* ---------------------------------------------------------------- config */

sp_spn_config sp_spn_config_object(uint64_t structure_seed) {
    return (sp_spn_config){.n_vars = 784,
                           .depth = 2,
                           .repetitions = 6,
                           .n_leaf = 20,
                           .n_sum = 20,
                           .var_min = 0.12f,
                           .var_max = 0.35f,
                           .structure_seed = structure_seed};
}

sp_spn_config sp_spn_config_background(uint64_t structure_seed) {
    return (sp_spn_config){.n_vars = 2500,
                           .depth = 1,
                           .repetitions = 3,
                           .n_leaf = 6,
                           .n_sum = 6,
                           .var_min = 0.002f,
                           .var_max = 0.12f,
                           .structure_seed = structure_seed};
}

static int check_config(const sp_spn_config *c, sp_error *err) {
    if (c->depth < 1 || c->depth > SP_SPN_MAX_DEPTH)
        return sp_fail(err, SP_EINPUT, "spn: depth %d out of range 1..%d", c->depth,
                       SP_SPN_MAX_DEPTH);
    if (c->n_vars < (1 << c->depth) || c->n_vars > (1 << 24))
        return sp_fail(err, SP_EINPUT, "spn: n_vars %d must be in 2^depth (%d) .. 2^24", c->n_vars,
                       1 << c->depth);
    if (c->repetitions < 1 || c->repetitions > 4096)
        return sp_fail(err, SP_EINPUT, "spn: repetitions %d out of range 1..4096", c->repetitions);
    if (c->n_leaf < 1 || c->n_leaf > 256)
        return sp_fail(err, SP_EINPUT, "spn: n_leaf %d out of range 1..256", c->n_leaf);
    if (c->depth > 1 && (c->n_sum < 1 || c->n_sum > 256))
        return sp_fail(err, SP_EINPUT, "spn: n_sum %d out of range 1..256", c->n_sum);
    if (!(c->var_min > 0.0f) || !(c->var_max >= c->var_min) || !isfinite(c->var_max))
        return sp_fail(err, SP_EINPUT, "spn: variance range [%g, %g] must satisfy 0 < min <= max",
                       (double)c->var_min, (double)c->var_max);
    return SP_OK;
}

/* Region starts of a balanced halving of n items to depth `depth`: the left
 * half of a region of m items gets m/2 (floor). */
static void split_offsets(int *off, int lo, int n, int depth, int *k) {
    if (depth == 0) {
        off[(*k)++] = lo;
        return;
    }
    split_offsets(off, lo, n / 2, depth - 1, k);
    split_offsets(off, lo + n / 2, n - n / 2, depth - 1, k);
}

static long align16(long n) { return (n + 15) / 16 * 16; }

int sp_spn_create(sp_spn **out, const sp_spn_config *cfg, sp_error *err) {
    *out = NULL;
    int rc = check_config(cfg, err);
    if (rc) return rc;
    sp_spn *s = calloc(1, sizeof *s);
    if (!s) return sp_fail(err, SP_ERUNTIME, "spn: out of memory");
    s->cfg = *cfg;
    s->D = cfg->n_vars;
    s->d = cfg->depth;
    s->R = cfg->repetitions;
    s->K = cfg->n_leaf;
    s->S = cfg->depth > 1 ? cfg->n_sum : 0;
    s->G0 = 1 << s->d;
    s->perm = malloc((size_t)s->R * s->D * sizeof(int));
    s->region_of = malloc((size_t)s->R * s->D * sizeof(int));
    s->off = malloc((size_t)(s->G0 + 1) * sizeof(int));
    if (!s->perm || !s->region_of || !s->off) {
        sp_spn_free(s);
        return sp_fail(err, SP_ERUNTIME, "spn: out of memory");
    }
    int k = 0;
    split_offsets(s->off, 0, s->D, s->d, &k);
    s->off[s->G0] = s->D;

    /* One Fisher-Yates shuffle per repetition, from its own counter-based
     * stream: repetition r's split does not depend on R. */
    for (int r = 0; r < s->R; r++) {
        int *pr = s->perm + (long)r * s->D;
        for (int i = 0; i < s->D; i++) pr[i] = i;
        sp_rng rng;
        sp_rng_init(&rng, cfg->structure_seed, SITE_STRUCTURE, (uint32_t)r, 0);
        for (int i = s->D - 1; i > 0; i--) {
            int j = (int)(((uint64_t)sp_rng_u32(&rng) * (uint64_t)(i + 1)) >> 32);
            int tmp = pr[i];
            pr[i] = pr[j];
            pr[j] = tmp;
        }
        for (int j = 0; j < s->G0; j++)
            for (int i = s->off[j]; i < s->off[j + 1]; i++)
                s->region_of[(long)r * s->D + pr[i]] = j;
    }

    s->width[0] = s->K;
    s->groups[0] = s->G0;
    for (int l = 1; l < s->d; l++) {
        s->width[l] = s->S;
        s->groups[l] = s->G0 >> l;
    }
    s->ctop = s->width[s->d - 1] * s->width[s->d - 1];
    s->cmax = s->ctop;
    s->dense = s->G0 <= 2;
    s->Dp = (s->D + 7L) / 8 * 8;
    if (s->dense) {
        s->rmask = calloc((size_t)s->R * s->Dp, sizeof(uint32_t));
        s->pos_of = malloc((size_t)s->R * s->D * sizeof(int));
        if (!s->rmask || !s->pos_of) {
            sp_spn_free(s);
            return sp_fail(err, SP_ERUNTIME, "spn: out of memory");
        }
        for (int r = 0; r < s->R; r++)
            for (int i = 0; i < s->D; i++)
                s->rmask[((long)(i >> 3) * s->R + r) * 8 + (i & 7)] =
                    s->region_of[(long)r * s->D + i] ? 0xFFFFFFFFu : 0u;
        for (long q = 0; q < (long)s->R * s->D; q++)
            s->pos_of[(q / s->D) * s->D + s->perm[q]] = (int)(q % s->D);
    }
    long o = align16(s->dense ? 3L * s->R * s->K * s->Dp : 3L * s->R * s->D * s->K);
    for (int l = 1; l < s->d; l++) {
        int c = s->width[l - 1] * s->width[l - 1];
        if (c > s->cmax) s->cmax = c;
        s->dw_off[l] = o;
        o += align16((long)s->R * s->groups[l] * s->S * c);
    }
    s->droot_off = o;
    s->n_derived = o + align16((long)s->R * s->ctop);

    /* Chunk size, a function of the config only (never of the threads):
     * gather mode sizes the chunk's pixel-major x, m and w (3 D nb floats)
     * at about L2 (~600 KB; 160 KB to 1.3 MB measured the same); dense mode
     * has its own chunks of DENSE_SCENES scenes (see the dense kernels). */
#ifndef SPN_CHUNK_BYTES
#define SPN_CHUNK_BYTES (640L * 1024)
#endif
    int nb = (int)(SPN_CHUNK_BYTES / (3L * s->D * (long)sizeof(float)));
    nb = nb / 8 * 8;
    if (nb < 16) nb = 16;
    if (nb > 128) nb = 128;
    if (s->dense) nb = DENSE_SCENES * DENSE_MAX_M; /* the largest dense chunk */
    s->nb = nb;
    *out = s;
    return SP_OK;
}

void sp_spn_free(sp_spn *s) {
    if (!s) return;
    free(s->perm);
    free(s->region_of);
    free(s->off);
    free(s->rmask);
    free(s->pos_of);
    free(s);
}

const sp_spn_config *sp_spn_get_config(const sp_spn *s) { return &s->cfg; }
uint64_t sp_spn_structure_seed(const sp_spn *s) { return s->cfg.structure_seed; }
int sp_spn_n_leaf_regions(const sp_spn *s) { return s->G0; }
const int *sp_spn_perm(const sp_spn *s, int rep) { return s->perm + (long)rep * s->D; }
const int *sp_spn_region_offsets(const sp_spn *s) { return s->off; }
int sp_spn_leaf_region(const sp_spn *s, int rep, int var) {
    return s->region_of[(long)rep * s->D + var];
}

long sp_spn_n_params(const sp_spn *s) {
    long n = 2L * s->R * s->D * s->K + (long)s->R * s->ctop;
    for (int l = 1; l < s->d; l++)
        n += (long)s->R * s->groups[l] * s->S * s->width[l - 1] * s->width[l - 1];
    return n;
}

double sp_spn_flops(const sp_spn *s, int backward, int input_grads) {
    double leaf = 2.0 * 3.0 * s->D * s->K * s->R;
    double sum = 0;
    for (int l = 1; l < s->d; l++)
        sum += 2.0 * s->R * s->groups[l] * s->S * (double)s->width[l - 1] * s->width[l - 1];
    double top = 2.0 * s->R * s->ctop;
    if (!backward) return leaf + sum + top;
    return leaf * (input_grads ? 2 : 1) + 2 * sum + 3 * top;
}

double sp_spn_flops_multi(const sp_spn *s, int M, int backward, int input_grads) {
    if (!s->dense || M > DENSE_MAX_M) return M * sp_spn_flops(s, backward, input_grads);
    double leaf = 2.0 * 3.0 * s->D * s->K * s->R; /* sp_spn_flops' leaf term, one row */
    double cells = (double)s->D * s->K * s->R;
    double shared = 2.0 * cells * (backward ? 5 + 2 * M + (input_grads ? 2 : 0) : 2 + M);
    double rest = sp_spn_flops(s, backward, input_grads) - leaf * (backward && input_grads ? 2 : 1);
    return shared + M * rest;
}

/* ------------------------------------------------------------ parameters */

int sp_spn_add_params(sp_spn *s, sp_params *p, const char *prefix, sp_error *err) {
    if (!prefix || strlen(prefix) >= sizeof s->prefix)
        return sp_fail(err, SP_EINPUT, "spn: parameter prefix '%s' empty or too long",
                       prefix ? prefix : "(null)");
    strcpy(s->prefix, prefix);
    char name[64];
    snprintf(name, sizeof name, "%s/leaf_mean", prefix);
    if ((s->i_mean = sp_params_add(p, name, 3, (int[]){s->R, s->D, s->K}, err)) < 0)
        return err ? err->code : SP_EINPUT;
    snprintf(name, sizeof name, "%s/leaf_var", prefix);
    if ((s->i_var = sp_params_add(p, name, 3, (int[]){s->R, s->D, s->K}, err)) < 0)
        return err ? err->code : SP_EINPUT;
    for (int l = 1; l < s->d; l++) {
        int c = s->width[l - 1] * s->width[l - 1];
        snprintf(name, sizeof name, "%s/sum%d", prefix, l);
        if ((s->i_sum[l] = sp_params_add(p, name, 4, (int[]){s->R, s->groups[l], s->S, c}, err)) <
            0)
            return err ? err->code : SP_EINPUT;
    }
    snprintf(name, sizeof name, "%s/root", prefix);
    if ((s->i_root = sp_params_add(p, name, 2, (int[]){s->R, s->ctop}, err)) < 0)
        return err ? err->code : SP_EINPUT;
    s->has_params = 1;
    return SP_OK;
}

static uint32_t fnv1a(const char *str) {
    uint32_t h = 2166136261u;
    for (; *str; str++) h = (h ^ (uint8_t)*str) * 16777619u;
    return h;
}

static void init_tensor(float *v, long n, float std, uint64_t seed, uint32_t prefix_hash,
                        uint32_t which) {
    sp_rng rng;
    sp_rng_init(&rng, seed, SITE_INIT, prefix_hash, which);
    for (long i = 0; i < n; i++) v[i] = sp_rng_trunc_normal(&rng, std);
}

void sp_spn_init_params(const sp_spn *s, sp_params *p, uint64_t seed) {
    if (!s->has_params) return;
    uint32_t h = fnv1a(s->prefix);
    long nleaf = (long)s->R * s->D * s->K;
    init_tensor(sp_params_val(p, s->i_mean), nleaf, 0.1f, seed, h, 0);
    init_tensor(sp_params_val(p, s->i_var), nleaf, 0.1f, seed, h, 1);
    for (int l = 1; l < s->d; l++)
        init_tensor(sp_params_val(p, s->i_sum[l]), p->entries[s->i_sum[l]].size, 0.5f, seed, h,
                    1 + (uint32_t)l);
    init_tensor(sp_params_val(p, s->i_root), (long)s->R * s->ctop, 0.5f, seed, h, 1000);
}

/* -------------------------------------------------------------- kernels */

/* Theta of region j of repetition r starts here in the derived buffer. */
static inline long theta_off(const sp_spn *s, int r, int j) {
    return 3L * s->K * ((long)r * s->D + s->off[j]);
}

static void exp_shifted(float *v, long n);
static void log_clamped(float *v, long n);

/* Leaf variances of n parameters: sg = sigmoid(pv), inv = 1 / v with
 * v = vmin + vrange sg, and logv = log v when logv is not NULL. Vectorised
 * through exp_shifted and log_clamped (libm's expf and logf calls keep a
 * loop scalar under ISO C): sigmoid(p) = 1 / (1 + e) for p >= 0 and
 * e / (1 + e) below, e = exp(-|p|), so e never overflows. Below -40,
 * exp_shifted gives 0 where e would be < 4e-18: v is the same float, and
 * the gradient through sg (1 - sg) loses only terms that small. */
#define LEAF_BLOCK 256
static void leaf_moments(float *sg, float *inv, float *logv, const float *pv, int n, float vmin,
                         float vrange) {
    for (int i = 0; i < n; i++) sg[i] = -fabsf(pv[i]);
    exp_shifted(sg, n);
    int i = 0;
#if defined(__AVX2__)
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps(),
                 lo = _mm256_set1_ps(vmin), rg = _mm256_set1_ps(vrange);
    for (; i + 8 <= n; i += 8) {
        __m256 e = _mm256_loadu_ps(sg + i), d = _mm256_add_ps(one, e);
        __m256 pos = _mm256_cmp_ps(_mm256_loadu_ps(pv + i), zero, _CMP_GE_OQ);
        __m256 g = _mm256_div_ps(_mm256_blendv_ps(e, one, pos), d);
        __m256 v = _mm256_fmadd_ps(rg, g, lo);
        _mm256_storeu_ps(sg + i, g);
        _mm256_storeu_ps(inv + i, _mm256_div_ps(one, v));
        if (logv) _mm256_storeu_ps(logv + i, v);
    }
#endif
    for (; i < n; i++) {
        float e = sg[i], g = (pv[i] >= 0.0f ? 1.0f : e) / (1.0f + e), v = vmin + vrange * g;
        sg[i] = g, inv[i] = 1.0f / v;
        if (logv) logv[i] = v;
    }
    if (logv) log_clamped(logv, n);
}

/* Softmax of each row of a (rows, n) matrix. */
static void softmax_rows(float *out, const float *in, long rows, int n) {
#pragma omp parallel for schedule(static) if (rows * n >= (1L << 15) && !omp_in_parallel())
    for (long r = 0; r < rows; r++) {
        const float *a = in + r * n;
        float *o = out + r * n;
        float mx = a[0];
        for (int i = 1; i < n; i++) mx = a[i] > mx ? a[i] : mx;
        for (int i = 0; i < n; i++) o[i] = a[i] - mx;
        exp_shifted(o, n); /* weights below e^-40 of the largest count as 0 */
        float sum = 0;
        for (int i = 0; i < n; i++) sum += o[i];
        float inv = 1.0f / sum;
        for (int i = 0; i < n; i++) o[i] *= inv;
    }
}

/* Dense mode's Theta layout (see the dense leaf kernels): entry (r, k,
 * plane) of pixel q in the block of q's 8-pixel vector. */
static inline long dense_off(const sp_spn *s, int r, int k, int plane, long q) {
    return (((q >> 3) * s->R * s->K + (long)r * s->K + k) * 3 + plane) * 8 + (q & 7);
}

/* One leaf Gaussian's Theta entries from its mean m and variance moments
 * (inv = 1 / v, logv = log v): A = -log(2 pi v)/2 - m^2/(2v), B = m/v,
 * C = -1/(2v). */
static inline void leaf_theta(float *A, float *B, float *C, float m, float inv, float logv) {
    const float half_log_2pi = 0.91893853320467274f;
    *A = -half_log_2pi - 0.5f * logv - 0.5f * m * m * inv;
    *B = m * inv;
    *C = -0.5f * inv;
}

/* leaf_theta's backward: Theta's gradient (dA, dB, dC) added to the mean's
 * and the variance parameter's (sg = sigmoid of it, see leaf_moments). */
static inline void leaf_theta_grad(float *gm, float *gv, float m, float sg, float inv, float dA,
                                   float dB, float dC, float vrange) {
    *gm += -dA * m * inv + dB * inv;
    float dv = dA * (-0.5f * inv + 0.5f * m * m * inv * inv) - dB * m * inv * inv +
               dC * 0.5f * inv * inv;
    *gv += dv * vrange * sg * (1.0f - sg);
}

/* Gaussians per block of dense_theta: DENSE_KB x 8 pixels fill LEAF_BLOCK. */
#define DENSE_KB (LEAF_BLOCK / 8)

/* Dense mode's Theta, or with dT its backward into gmu and gpv, walked in
 * Theta's own order: per 8-pixel vector and repetition one (K, 3, 8) block
 * (dense_off), whose pixels' Gaussians are gathered from parameter rows
 * (r D + the pixel's position in perm) into Gaussian-major (k, lane)
 * arrays, so that the moments and every Theta plane are 8-lane vectors. In
 * parameter order (region by region) each Theta entry was a separate
 * scattered access: ~0.45 ms more per forward + backward of the background
 * SPN, a fixed cost of every step whatever its batch. Pad pixels (D..Dp)
 * repeat the vector's first pixel and get zero Theta and no gradient. */
static void dense_theta(const sp_spn *s, const float *mu, const float *pv, float *T,
                        const float *dT, float *gmu, float *gpv, int nthreads) {
    const int R = s->R, K = s->K, D = s->D;
    const float vmin = s->cfg.var_min, vrange = s->cfg.var_max - s->cfg.var_min;
    /* Repetitions outermost: their parameter rows and Theta entries are
     * disjoint, so a thread may run ahead into the next one (nowait). */
#pragma omp parallel num_threads(nthreads)
    for (int r = 0; r < R; r++) {
        float m[LEAF_BLOCK], p[LEAF_BLOCK], sg[LEAF_BLOCK], inv[LEAF_BLOCK], logv[LEAF_BLOCK];
        float gm[LEAF_BLOCK], gv[LEAF_BLOCK];
#pragma omp for schedule(static) nowait
        for (long v = 0; v < s->Dp / 8; v++) {
            const int lanes = D - 8 * v < 8 ? (int)(D - 8 * v) : 8;
            long row[8];
            for (int l = 0; l < 8; l++) /* pad lanes repeat lane 0's row */
                row[l] = ((long)r * D + s->pos_of[(long)r * D + 8 * v + (l < lanes ? l : 0)]) * K;
            for (int k0 = 0; k0 < K; k0 += DENSE_KB) {
                const int kb = K - k0 < DENSE_KB ? K - k0 : DENSE_KB;
                for (int l = 0; l < 8; l++) {
                    const float *mr = mu + row[l] + k0, *pr = pv + row[l] + k0;
                    for (int k = 0; k < kb; k++) m[k * 8 + l] = mr[k], p[k * 8 + l] = pr[k];
                }
                leaf_moments(sg, inv, dT ? NULL : logv, p, 8 * kb, vmin, vrange);
                for (int k = 0; k < kb; k++) {
                    const long e = dense_off(s, r, k0 + k, 0, 8 * v); /* (3, 8) of this Gaussian */
                    const int i = k * 8;
                    if (dT) {
                        for (int l = 0; l < 8; l++) {
                            gm[i + l] = gv[i + l] = 0.0f;
                            leaf_theta_grad(gm + i + l, gv + i + l, m[i + l], sg[i + l], inv[i + l],
                                            dT[e + l], dT[e + 8 + l], dT[e + 16 + l], vrange);
                        }
                    } else {
                        for (int l = 0; l < 8; l++)
                            leaf_theta(T + e + l, T + e + 8 + l, T + e + 16 + l, m[i + l],
                                       inv[i + l], logv[i + l]);
                        for (int l = lanes; l < 8; l++) T[e + l] = T[e + 8 + l] = T[e + 16 + l] = 0;
                    }
                }
                if (dT)
                    for (int l = 0; l < lanes; l++)
                        for (int k = 0; k < kb; k++) {
                            gmu[row[l] + k0 + k] += gm[k * 8 + l];
                            gpv[row[l] + k0 + k] += gv[k * 8 + l];
                        }
            }
        }
    }
}

/* Theta and the normalised weights from the parameters. */
static void compute_derived(const sp_spn *s, const sp_params *p, float *der, int T) {
    const float *mu = sp_params_val(p, s->i_mean);
    const float *pv = sp_params_val(p, s->i_var);
    const float vmin = s->cfg.var_min, vrange = s->cfg.var_max - s->cfg.var_min;
    const int K = s->K;
    if (s->dense) {
        dense_theta(s, mu, pv, der, NULL, NULL, NULL, T);
    } else {
        /* Gather mode: each region's planes A, B, C in parameter order. */
#pragma omp parallel for schedule(static) num_threads(T)
        for (int rj = 0; rj < s->R * s->G0; rj++) {
            int r = rj / s->G0, j = rj % s->G0;
            const int len = s->off[j + 1] - s->off[j], n = len * K;
            const long q0 = ((long)r * s->D + s->off[j]) * K;
            float sg[LEAF_BLOCK], inv[LEAF_BLOCK], logv[LEAF_BLOCK];
            for (int e0 = 0; e0 < n; e0 += LEAF_BLOCK) {
                const int nb = n - e0 < LEAF_BLOCK ? n - e0 : LEAF_BLOCK;
                const float *m = mu + q0 + e0;
                float *t = der + theta_off(s, r, j) + e0;
                leaf_moments(sg, inv, logv, pv + q0 + e0, nb, vmin, vrange);
                for (int e = 0; e < nb; e++)
                    leaf_theta(t + e, t + n + e, t + 2L * n + e, m[e], inv[e], logv[e]);
            }
        }
    }
    for (int l = 1; l < s->d; l++) {
        int c = s->width[l - 1] * s->width[l - 1];
        softmax_rows(der + s->dw_off[l], sp_params_val(p, s->i_sum[l]),
                     (long)s->R * s->groups[l] * s->S, c);
    }
    softmax_rows(der + s->droot_off, sp_params_val(p, s->i_root), 1, s->R * s->ctop);
}

static inline float clip01(float m) {
    /* Compiles to maxss/minss (vectorisable), unlike fminf/fmaxf. */
    m = m > 0.0f ? m : 0.0f;
    return m < 1.0f ? m : 1.0f;
}

/* w = 1 - clip(m, 0, 1) of n values. */
static void features_w(float *restrict w, const float *restrict m, long n) {
    long i = 0;
#if defined(__AVX2__)
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            w + i, _mm256_sub_ps(one, _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(m + i), zero), one)));
#endif
    for (; i < n; i++) w[i] = 1.0f - clip01(m[i]);
}

/* Occluder weights (sp_spn_logp_occluded) of n pixels: w_0 = 1 and
 * w_k = w_{k-1} (1 - clip(u_{k-1}, 0, 1)) for k < M, the light left behind
 * the first k occluders. w rows ldw apart, u rows ldu apart. */
static void chain_weights(float *restrict w, long ldw, const float *restrict u, long ldu, int M,
                          long n) {
    for (long i = 0; i < n; i++) w[i] = 1.0f;
    for (int k = 1; k < M; k++) {
        float *restrict wk = w + k * ldw;
        const float *restrict prev = wk - ldw, *restrict uk = u + (k - 1) * ldu;
        long i = 0;
#if defined(__AVX2__)
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= n; i += 8) {
            __m256 c = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(uk + i), zero), one);
            _mm256_storeu_ps(wk + i, _mm256_mul_ps(_mm256_loadu_ps(prev + i), _mm256_sub_ps(one, c)));
        }
#endif
        for (; i < n; i++) wk[i] = prev[i] * (1.0f - clip01(uk[i]));
    }
}

/* Backward of chain_weights: from gw (d/dw_k, rows ldg apart) into gu (rows
 * ldu apart, like u); w rows ldw apart. With v_j = 1 - clip(u_j),
 * dw_k/dv_j = prod_{i<k, i!=j} v_i for j < k, so dv_j = w_j t_j with the
 * suffix sums
 *   t_{M-2} = gw_{M-1},  t_j = gw_{j+1} + v_{j+1} t_{j+1}
 * (no division by v, which may be 0); gu_j -= dv_j where 0 <= u_j <= 1. */
static void chain_grad(float *restrict gu, long ldu, const float *restrict u,
                       const float *restrict w, long ldw, const float *restrict gw, long ldg, int M,
                       long n) {
    if (M < 2) return;
    long i = 0;
#if defined(__AVX2__)
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_loadu_ps(gw + (M - 1) * ldg + i);
        for (int j = M - 2; j >= 0; j--) {
            if (j < M - 2) {
                __m256 un = _mm256_loadu_ps(u + (j + 1) * ldu + i);
                __m256 v = _mm256_sub_ps(one, _mm256_min_ps(_mm256_max_ps(un, zero), one));
                t = _mm256_fmadd_ps(v, t, _mm256_loadu_ps(gw + (j + 1) * ldg + i));
            }
            __m256 uj = _mm256_loadu_ps(u + j * ldu + i);
            __m256 inside = _mm256_and_ps(_mm256_cmp_ps(uj, zero, _CMP_GE_OQ),
                                          _mm256_cmp_ps(uj, one, _CMP_LE_OQ));
            __m256 dv = _mm256_mul_ps(t, _mm256_loadu_ps(w + j * ldw + i));
            float *g = gu + j * ldu + i;
            _mm256_storeu_ps(g, _mm256_sub_ps(_mm256_loadu_ps(g), _mm256_and_ps(inside, dv)));
        }
    }
#endif
    for (; i < n; i++) {
        float t = gw[(M - 1) * ldg + i];
        for (int j = M - 2; j >= 0; j--) {
            if (j < M - 2) t = fmaf(1.0f - clip01(u[(j + 1) * ldu + i]), t, gw[(j + 1) * ldg + i]);
            float uj = u[j * ldu + i];
            if (uj >= 0.0f && uj <= 1.0f) gu[j * ldu + i] -= t * w[j * ldw + i];
        }
    }
}

#if defined(__AVX2__)
/* One full 8 x 8 tile of transpose() in registers: a pure permutation, so
 * the results are those of the scalar loop. */
static inline void transpose8(const float *in, long ldi, float *out, long ldo, int add) {
    __m256 r0 = _mm256_loadu_ps(in), r1 = _mm256_loadu_ps(in + ldi),
           r2 = _mm256_loadu_ps(in + 2 * ldi), r3 = _mm256_loadu_ps(in + 3 * ldi),
           r4 = _mm256_loadu_ps(in + 4 * ldi), r5 = _mm256_loadu_ps(in + 5 * ldi),
           r6 = _mm256_loadu_ps(in + 6 * ldi), r7 = _mm256_loadu_ps(in + 7 * ldi);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
           t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
           t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 o[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                   _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                   _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                   _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    for (int c = 0; c < 8; c++) {
        float *q = out + c * ldo;
        _mm256_storeu_ps(q, add ? _mm256_add_ps(_mm256_loadu_ps(q), o[c]) : o[c]);
    }
}
#endif

/* out (cols, rows) (+)= in (rows, cols)^T, in 8 x 8 tiles. */
static void transpose(const float *restrict in, long ldi, float *restrict out, long ldo, int rows,
                      int cols, int add) {
    for (int r0 = 0; r0 < rows; r0 += 8)
        for (int c0 = 0; c0 < cols; c0 += 8) {
            int r1 = r0 + 8 < rows ? r0 + 8 : rows, c1 = c0 + 8 < cols ? c0 + 8 : cols;
#if defined(__AVX2__)
            if (r1 - r0 == 8 && c1 - c0 == 8) {
                transpose8(in + (long)r0 * ldi + c0, ldi, out + (long)c0 * ldo + r0, ldo, add);
                continue;
            }
#endif
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++) {
                    float v = in[(long)r * ldi + c];
                    if (add)
                        out[(long)c * ldo + r] += v;
                    else
                        out[(long)c * ldo + r] = v;
                }
        }
}

/* Gather mode: x and m of the chunk pixel-major, xT and mT (D, ld), ld =
 * nb rounded up to 8, so the leaf kernels load 8 examples of a pixel at
 * once where example-major data would need a gather per element, and wT =
 * 1 - clip(mT, 0, 1). Pad columns get x = 0, m = 1 (w = 0: they add
 * nothing); m NULL means m = 0. */
static void transpose_chunk(float *xT, float *mT, float *wT, const float *x, const float *m,
                            long n0, int nb, long ld, int D) {
    transpose(x + n0 * D, D, xT, ld, nb, D, 0);
    if (m) transpose(m + n0 * D, D, mT, ld, nb, D, 0);
    for (int i = 0; i < D; i++) {
        if (!m)
            for (int e = 0; e < nb; e++) mT[(long)i * ld + e] = 0.0f;
        for (long e = nb; e < ld; e++) {
            xT[(long)i * ld + e] = 0.0f;
            mT[(long)i * ld + e] = 1.0f;
        }
    }
    features_w(wT, mT, (long)D * ld);
}


/* v[i] = exp(v[i]) for v[i] in [-EXP_CUT, 0], 0 below: the shifted
 * exponentials of the sum layers. The AVX2 path is the classic Cephes-style
 * range reduction x = n ln2 + r with a degree-6 polynomial for e^r (about
 * 1 ulp); inputs never approach overflow or the denormal range. */
static void exp_shifted(float *v, long n) {
    long i = 0;
#if defined(__AVX2__)
    const __m256 cut = _mm256_set1_ps(-EXP_CUT), log2e = _mm256_set1_ps(1.44269504088896341f),
                 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f),
                 one = _mm256_set1_ps(1.0f);
    const __m256 c0 = _mm256_set1_ps(1.9875691500e-4f), c1 = _mm256_set1_ps(1.3981999507e-3f),
                 c2 = _mm256_set1_ps(8.3334519073e-3f), c3 = _mm256_set1_ps(4.1665795894e-2f),
                 c4 = _mm256_set1_ps(1.6666665459e-1f), c5 = _mm256_set1_ps(5.0000001201e-1f);
    for (; i + 8 <= n; i += 8) {
        __m256 x0 = _mm256_loadu_ps(v + i);
        __m256 keep = _mm256_cmp_ps(x0, cut, _CMP_GE_OQ);
        __m256 x = _mm256_max_ps(x0, cut);
        __m256 fn =
            _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(fn, ln2_hi, x);
        r = _mm256_fnmadd_ps(fn, ln2_lo, r);
        __m256 p = _mm256_fmadd_ps(c0, r, c1);
        p = _mm256_fmadd_ps(p, r, c2);
        p = _mm256_fmadd_ps(p, r, c3);
        p = _mm256_fmadd_ps(p, r, c4);
        p = _mm256_fmadd_ps(p, r, c5);
        p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
        __m256i e =
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127)), 23);
        __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        y = _mm256_and_ps(y, keep);
        /* NaN stays NaN, so a broken input shows up in the loss. */
        _mm256_storeu_ps(v + i, _mm256_blendv_ps(y, x0, _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q)));
    }
#endif
    for (; i < n; i++) v[i] = v[i] < -EXP_CUT ? 0.0f : expf(v[i]);
}

/* v[i] = log(max(v[i], Z_MIN)) for n values: the sums' log of the linear
 * value (positive, at most 1, or NaN, which stays NaN). The AVX2 path is
 * Cephes' logf (mantissa in [sqrt(1/2), sqrt(2)), a degree-8 polynomial;
 * about 1 ulp); inputs are normal floats after the clamp. */
static void log_clamped(float *v, long n) {
    long i = 0;
#if defined(__AVX2__)
    const __m256 zmin = _mm256_set1_ps(Z_MIN), one = _mm256_set1_ps(1.0f),
                 half = _mm256_set1_ps(0.5f), sqrthf = _mm256_set1_ps(0.707106781186547524f);
    const __m256 p0 = _mm256_set1_ps(7.0376836292e-2f), p1 = _mm256_set1_ps(-1.1514610310e-1f),
                 p2 = _mm256_set1_ps(1.1676998740e-1f), p3 = _mm256_set1_ps(-1.2420140846e-1f),
                 p4 = _mm256_set1_ps(1.4249322787e-1f), p5 = _mm256_set1_ps(-1.6668057665e-1f),
                 p6 = _mm256_set1_ps(2.0000714765e-1f), p7 = _mm256_set1_ps(-2.4999993993e-1f),
                 p8 = _mm256_set1_ps(3.3333331174e-1f), q1 = _mm256_set1_ps(-2.12194440e-4f),
                 q2 = _mm256_set1_ps(0.693359375f);
    for (; i + 8 <= n; i += 8) {
        __m256 x0 = _mm256_loadu_ps(v + i);
        __m256 x = _mm256_max_ps(x0, zmin); /* NaN -> Z_MIN here; restored below */
        __m256i bits = _mm256_castps_si256(x);
        __m256 e = _mm256_cvtepi32_ps(
            _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
        /* mantissa in [0.5, 1) */
        __m256 m = _mm256_or_ps(
            _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x007fffff))), half);
        __m256 small = _mm256_cmp_ps(m, sqrthf, _CMP_LT_OQ);
        e = _mm256_sub_ps(e, _mm256_and_ps(small, one));
        m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), one);
        __m256 z = _mm256_mul_ps(m, m);
        __m256 y = _mm256_fmadd_ps(p0, m, p1);
        y = _mm256_fmadd_ps(y, m, p2);
        y = _mm256_fmadd_ps(y, m, p3);
        y = _mm256_fmadd_ps(y, m, p4);
        y = _mm256_fmadd_ps(y, m, p5);
        y = _mm256_fmadd_ps(y, m, p6);
        y = _mm256_fmadd_ps(y, m, p7);
        y = _mm256_fmadd_ps(y, m, p8);
        y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
        y = _mm256_fmadd_ps(e, q1, y);
        y = _mm256_fnmadd_ps(half, z, y);
        __m256 r = _mm256_fmadd_ps(e, q2, _mm256_add_ps(m, y));
        _mm256_storeu_ps(v + i, _mm256_blendv_ps(r, x0, _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q)));
    }
#endif
    for (; i < n; i++) v[i] = logf(v[i] < Z_MIN ? Z_MIN : v[i]);
}

#if defined(__AVX2__)
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float hmax8(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}
static inline float hmin8(__m256 v) {
    __m128 x = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_min_ps(x, _mm_movehl_ps(x, x));
    x = _mm_min_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}
#endif

/* Shifted exponentials of nb child vectors v (stride ldv, width w):
 * e = exp(v - max v), mx = max v, cst = 1 when all entries are equal. */
static void child_exp(const float *v, long ldv, int nb, int w, float *e, float *mx, float *cst) {
    for (int n = 0; n < nb; n++) {
        const float *a = v + n * ldv;
        float hi = a[0], lo = a[0];
#if defined(__AVX2__)
        if (w >= 8) {
            /* max and min are exact, so the order does not matter (a NaN
             * makes the outputs NaN either way, through a - hi) */
            __m256 h = _mm256_loadu_ps(a), l = h;
            for (int i = 8; i < w; i += 8) {
                __m256 x = _mm256_loadu_ps(a + (i + 8 <= w ? i : w - 8));
                h = _mm256_max_ps(x, h);
                l = _mm256_min_ps(x, l);
            }
            hi = hmax8(h);
            lo = hmin8(l);
        } else
#endif
        {
            for (int i = 1; i < w; i++) {
                hi = a[i] > hi ? a[i] : hi;
                lo = a[i] < lo ? a[i] : lo;
            }
        }
        mx[n] = hi;
        cst[n] = (hi == lo) ? 1.0f : 0.0f;
        float *o = e + (long)n * w;
        for (int i = 0; i < w; i++) o[i] = a[i] - hi;
    }
    exp_shifted(e, (long)nb * w);
}

/* Gradients of one example's children from gE (w, w), the gradient of
 * its outer product E = ea (x) eb: ga[i] += ea[i] sum_j gE[i,j] eb[j] and
 * gb[j] (= ga + w) += eb[j] sum_i gE[i,j] ea[i]; tb (w) is scratch. The AVX2
 * path (w <= 24) keeps the column sums in registers: with ISO C's float
 * semantics the compiler may not vectorise the row-sum reduction itself. */
static void outer_backward(float *ga, const float *ea, const float *eb, const float *ge, float *tb,
                           int w) {
    float *gb = ga + w;
#if defined(__AVX2__)
    if (w <= 24) {
        const int nv = (w + 7) / 8;
        __m256i mask[3];
        __m256 ebv[3], tbv[3];
        for (int u = 0; u < 3; u++) {
            const int valid = w - 8 * u;
            mask[u] = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            ebv[u] = u < nv ? _mm256_maskload_ps(eb + 8 * u, mask[u]) : _mm256_setzero_ps();
            tbv[u] = _mm256_setzero_ps();
        }
        for (int i = 0; i < w; i++) {
            const __m256 ai = _mm256_broadcast_ss(ea + i);
            __m256 acc = _mm256_setzero_ps();
            for (int u = 0; u < nv; u++) {
                /* masked loads: the row's tail lanes read 0, never the next row */
                __m256 q = _mm256_maskload_ps(ge + (long)i * w + 8 * u, mask[u]);
                acc = _mm256_fmadd_ps(ebv[u], q, acc);
                tbv[u] = _mm256_fmadd_ps(ai, q, tbv[u]);
            }
            ga[i] += ea[i] * hsum8(acc);
        }
        float col[24];
        for (int u = 0; u < nv; u++) _mm256_storeu_ps(col + 8 * u, tbv[u]);
        for (int j = 0; j < w; j++) gb[j] += eb[j] * col[j];
        return;
    }
#endif
    for (int j = 0; j < w; j++) tb[j] = 0;
    for (int i = 0; i < w; i++) {
        float acc = 0, ai = ea[i];
        for (int j = 0; j < w; j++) {
            float q = ge[i * w + j];
            acc += eb[j] * q;
            tb[j] += ai * q;
        }
        ga[i] += ai * acc;
    }
    for (int j = 0; j < w; j++) gb[j] += eb[j] * tb[j];
}

/* Rows per block of sum_layer_backward. */
#define SUM_ROWS 4

/* The input gradients of a sum layer for nb examples: gE = gz W (gz (nb,
 * S), W (S, C = w*w)) and outer_backward of every row into gV (rows vsi
 * apart). gE is made SUM_ROWS rows at a time into ge (SUM_ROWS, C scratch,
 * L1-sized) and consumed at once: the (nb, C) product of an sgemm would be
 * zeroed (beta = 0), written and read back through L2, and OpenBLAS packs
 * both operands of a product this skinny (64 x 400 x 20 in SuPAIR's
 * object SPN) for about as long as it multiplies. */
static void sum_layer_backward(float *gV, long vsi, const float *ea, const float *eb,
                               const float *gz, int S, const float *W, int w, int nb, float *ge,
                               float *tb) {
    const int C = w * w;
    for (int n0 = 0; n0 < nb; n0 += SUM_ROWS) {
        const int nr = nb - n0 < SUM_ROWS ? nb - n0 : SUM_ROWS;
        const float *g = gz + (long)n0 * S;
        int c0 = 0;
#if defined(__AVX2__)
        if (nr == SUM_ROWS)
            for (; c0 + 16 <= C; c0 += 16) {
                __m256 acc[SUM_ROWS][2];
                for (int i = 0; i < SUM_ROWS; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
                for (int k = 0; k < S; k++) {
                    const __m256 w0 = _mm256_loadu_ps(W + (long)k * C + c0),
                                 w1 = _mm256_loadu_ps(W + (long)k * C + c0 + 8);
                    for (int i = 0; i < SUM_ROWS; i++) {
                        const __m256 gi = _mm256_broadcast_ss(g + i * S + k);
                        acc[i][0] = _mm256_fmadd_ps(gi, w0, acc[i][0]);
                        acc[i][1] = _mm256_fmadd_ps(gi, w1, acc[i][1]);
                    }
                }
                for (int i = 0; i < SUM_ROWS; i++) {
                    _mm256_storeu_ps(ge + (long)i * C + c0, acc[i][0]);
                    _mm256_storeu_ps(ge + (long)i * C + c0 + 8, acc[i][1]);
                }
            }
#endif
        for (int i = 0; i < nr; i++)
            for (int c = c0; c < C; c++) {
                float acc = 0.0f;
                for (int k = 0; k < S; k++) acc += g[i * S + k] * W[(long)k * C + c];
                ge[(long)i * C + c] = acc;
            }
        for (int i = 0; i < nr; i++) {
            const long n = n0 + i;
            outer_backward(gV + n * vsi, ea + n * w, eb + n * w, ge + (long)i * C, tb + n * w, w);
        }
    }
}

/* E (nb, w*w) = outer products ea[n] (x) eb[n], a major. */
static void outer(float *E, const float *ea, const float *eb, int nb, int w) {
    for (int n = 0; n < nb; n++) {
        const float *a = ea + (long)n * w, *b = eb + (long)n * w;
        float *o = E + (long)n * w * w;
        for (int i = 0; i < w; i++) {
            float ai = a[i];
            for (int j = 0; j < w; j++) o[i * w + j] = ai * b[j];
        }
    }
}

/* ------------------------------------------------ dense leaf kernels */

/* Dense mode (two leaf regions per repetition, the background SPN) keeps
 * the pixels in their natural order and Theta vector-major, (Dp / 8, R, K,
 * 3, 8) with Dp = D rounded up to 8 and zeros past D: the 3 R K vectors of
 * one 8-pixel vector form one contiguous block (1.7 KB for the background
 * SPN), which the backward kernel (a pixel vector at a time, every
 * Gaussian) reads and read-modify-writes in order; by planes over all
 * pixels it touched 54 rows 30 KB apart per vector. The leaf-region mask is
 * laid out alike, (Dp / 8, R, 8), all ones for pixels of region 1.
 * A scene's M marginalisations (sp_spn_logp_multi, one per object count)
 * share the x-dependent part of the leaf densities,
 *   G(i) = A(i) + x_i B(i) + x_i^2 C(i),
 * so the kernels compute G once per scene and pixel and give each
 * marginalisation k only its weights: value[k][g] = sum_i w_k(i) [i in g] G(i),
 * w = 1 - clip(m, 0, 1). That is 2 + 2M multiply-adds per pixel and Gaussian
 * where a GEMM over [w | w x | w x^2] rows would do 3 per region and
 * marginalisation (twice that for a GEMM that cannot skip the other
 * region). The kernels run over pixel tiles of DENSE_TILE so the tile's
 * Theta (3 R K DENSE_TILE floats, 55 KB for the background SPN) stays in L2
 * while every scene of the chunk passes over it (sizes at the file top). */

/* xs (DENSE_TILE) = pixels [p0, p0 + np) of scene row x, ws (M, DENSE_TILE)
 * = 1 - clip(m) of the scene's M marginalisation rows (1 when m is NULL),
 * or with occl the chain_weights of its M - 1 occluder rows m; zero past
 * np, where Theta is zero too. */
static void dense_tile_inputs(float *xs, float *ws, const float *x, const float *m, int occl, int M,
                              long D, long p0, int np) {
    for (int i = 0; i < DENSE_TILE; i++) xs[i] = i < np ? x[p0 + i] : 0.0f;
    if (m && occl) chain_weights(ws, DENSE_TILE, m + p0, D, M, np);
    for (int k = 0; k < M; k++) {
        float *w = ws + k * DENSE_TILE;
        if (m && !occl) {
            features_w(w, m + k * D + p0, np);
        } else if (!m) {
            for (int i = 0; i < np; i++) w[i] = 1.0f;
        }
        for (int i = np; i < DENSE_TILE; i++) w[i] = 0.0f;
    }
}

#if defined(__AVX2__)

/* Forward of one (repetition, Gaussian) over nv vectors of a tile for MG
 * marginalisations: acc (MG, 2, 8) += lane partial sums of w_k G split by
 * region. A (with B = A + 8, C = A + 16) and the mask mk at the tile's
 * first vector, ts and ms floats per vector apart. MG is a constant where
 * this is inlined. */
static inline __attribute__((always_inline)) void
dense_fwd_group(float *acc, const float *A, long ts, const uint32_t *mk, long ms, const float *xs,
                const float *ws, int nv, const int MG) {
    __m256 s0[DENSE_MAX_M], s1[DENSE_MAX_M];
    for (int j = 0; j < MG; j++) {
        s0[j] = _mm256_loadu_ps(acc + 16 * j);
        s1[j] = _mm256_loadu_ps(acc + 16 * j + 8);
    }
    for (int v = 0; v < nv; v++) {
        const float *a = A + v * ts;
        __m256 x = _mm256_loadu_ps(xs + 8 * v);
        __m256 G = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_loadu_ps(a + 16), x, _mm256_loadu_ps(a + 8)),
                                   x, _mm256_loadu_ps(a));
        __m256 msk = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(mk + v * ms)));
        __m256 g1 = _mm256_and_ps(msk, G), g0 = _mm256_andnot_ps(msk, G);
        for (int j = 0; j < MG; j++) {
            __m256 w = _mm256_loadu_ps(ws + j * DENSE_TILE + 8 * v);
            /* One load for both multiply-adds: GCC otherwise folds the load
             * into each of them, and the loop is bound by loads (1.65 ->
             * 1.39 us per scene and tile of the background SPN). */
            __asm__("" : "+x"(w));
            s0[j] = _mm256_fmadd_ps(w, g0, s0[j]);
            s1[j] = _mm256_fmadd_ps(w, g1, s1[j]);
        }
    }
    for (int j = 0; j < MG; j++) {
        _mm256_storeu_ps(acc + 16 * j, s0[j]);
        _mm256_storeu_ps(acc + 16 * j + 8, s1[j]);
    }
}

/* Backward of one scene over nv vectors of a tile, for MG marginalisations:
 * gL (MG rows of stride ldg, each (R, 2, K)) are the gradients of the leaf
 * values. Adds into dT (Theta's gradient, the vector-major layout at the
 * tile), gxs (DENSE_TILE) d/dx and gws (MG, DENSE_TILE) d/dw. Per pixel and
 * (r, Gaussian): P_k = gL[k][region] (a blend), D = sum_k w_k P_k is the
 * gradient of G, so dA += D, dB += D x, dC += D x^2, d/dx += D (B + 2 C x),
 * d/dw_k += P_k G. */
static inline __attribute__((always_inline)) void
dense_bwd_group(float *dT, float *gxs, float *gws, const float *T, const uint32_t *mask, int R,
                int K, const float *xs, const float *ws, const float *gL, long ldg, int nv,
                const int MG) {
    const long vb = (long)R * K * 24; /* one pixel vector's block of T and dT */
    for (int v = 0; v < nv; v++) {
        __m256 x = _mm256_loadu_ps(xs + 8 * v);
        __m256 x2 = _mm256_add_ps(x, x), xx = _mm256_mul_ps(x, x);
        __m256 w[DENSE_MAX_M], gw[DENSE_MAX_M];
        for (int j = 0; j < MG; j++) {
            w[j] = _mm256_loadu_ps(ws + j * DENSE_TILE + 8 * v);
            gw[j] = _mm256_loadu_ps(gws + j * DENSE_TILE + 8 * v);
        }
        __m256 gx = _mm256_loadu_ps(gxs + 8 * v);
        for (int r = 0; r < R; r++) {
            __m256 msk = _mm256_castsi256_ps(
                _mm256_loadu_si256((const __m256i *)(mask + ((long)v * R + r) * 8)));
            for (int kk = 0; kk < K; kk++) {
                const long to = v * vb + (long)(r * K + kk) * 24;
                __m256 a = _mm256_loadu_ps(T + to), b = _mm256_loadu_ps(T + to + 8),
                       c = _mm256_loadu_ps(T + to + 16);
                __m256 G = _mm256_fmadd_ps(_mm256_fmadd_ps(c, x, b), x, a);
                __m256 D = _mm256_setzero_ps();
                for (int j = 0; j < MG; j++) {
                    const float *g = gL + j * ldg + (long)r * 2 * K + kk;
                    __m256 P = _mm256_blendv_ps(_mm256_broadcast_ss(g), _mm256_broadcast_ss(g + K),
                                                msk);
                    gw[j] = _mm256_fmadd_ps(P, G, gw[j]);
                    D = _mm256_fmadd_ps(w[j], P, D);
                }
                gx = _mm256_fmadd_ps(D, _mm256_fmadd_ps(c, x2, b), gx);
                _mm256_storeu_ps(dT + to, _mm256_add_ps(_mm256_loadu_ps(dT + to), D));
                _mm256_storeu_ps(dT + to + 8, _mm256_fmadd_ps(D, x, _mm256_loadu_ps(dT + to + 8)));
                _mm256_storeu_ps(dT + to + 16, _mm256_fmadd_ps(D, xx, _mm256_loadu_ps(dT + to + 16)));
            }
        }
        for (int j = 0; j < MG; j++) _mm256_storeu_ps(gws + j * DENSE_TILE + 8 * v, gw[j]);
        _mm256_storeu_ps(gxs + 8 * v, gx);
    }
}
#endif

/* Forward of one scene over one tile (nv = tile vectors, p0 its first
 * pixel): acc (R, K, M, 2, 8) lane partial sums. */
/* noinline: called per scene and tile, and keeps the kernels apart in profiles */
__attribute__((noinline)) static void dense_tile_forward(const sp_spn *s, const float *T, float *acc, long p0, int nv,
                               const float *xs, const float *ws, int M) {
    const int R = s->R, K = s->K;
    const long ts = (long)R * K * 24, ms = (long)R * 8; /* floats per pixel vector */
    for (int r = 0; r < R; r++)
        for (int kk = 0; kk < K; kk++) {
            const float *A = T + dense_off(s, r, kk, 0, p0);
            const uint32_t *mk = s->rmask + ((p0 >> 3) * R + r) * 8;
            float *a = acc + (long)(r * K + kk) * M * 16;
#if defined(__AVX2__)
            switch (M) {
            case 1: dense_fwd_group(a, A, ts, mk, ms, xs, ws, nv, 1); break;
            case 2: dense_fwd_group(a, A, ts, mk, ms, xs, ws, nv, 2); break;
            case 3: dense_fwd_group(a, A, ts, mk, ms, xs, ws, nv, 3); break;
            default: dense_fwd_group(a, A, ts, mk, ms, xs, ws, nv, 4); break;
            }
#else
            for (int i = 0; i < 8 * nv; i++) {
                const float *t = A + (i >> 3) * ts + (i & 7);
                float G = t[0] + xs[i] * (t[8] + xs[i] * t[16]);
                int g = mk[(i >> 3) * ms + (i & 7)] != 0;
                for (int k = 0; k < M; k++) a[k * 16 + g * 8 + (i & 7)] += ws[k * DENSE_TILE + i] * G;
            }
#endif
        }
}

/* Backward of one scene over one tile; see dense_bwd_group. */
__attribute__((noinline)) static void dense_tile_backward(const sp_spn *s, const float *T, float *dT, float *gxs, float *gws,
                                long p0, int nv, const float *xs, const float *ws, const float *gL,
                                long ldg, int M) {
    const int R = s->R, K = s->K;
    T += dense_off(s, 0, 0, 0, p0);
    dT += dense_off(s, 0, 0, 0, p0);
    const uint32_t *mask = s->rmask + (p0 >> 3) * R * 8;
#if defined(__AVX2__)
    switch (M) {
    case 1: dense_bwd_group(dT, gxs, gws, T, mask, R, K, xs, ws, gL, ldg, nv, 1); break;
    case 2: dense_bwd_group(dT, gxs, gws, T, mask, R, K, xs, ws, gL, ldg, nv, 2); break;
    case 3: dense_bwd_group(dT, gxs, gws, T, mask, R, K, xs, ws, gL, ldg, nv, 3); break;
    default: dense_bwd_group(dT, gxs, gws, T, mask, R, K, xs, ws, gL, ldg, nv, 4); break;
    }
#else
    const long Dp = 8; /* plane stride within a vector's block */
    for (int i = 0; i < 8 * nv; i++) {
        float x = xs[i];
        for (int r = 0; r < R; r++) {
            int g = mask[((long)(i >> 3) * R + r) * 8 + (i & 7)] != 0;
            for (int kk = 0; kk < K; kk++) {
                const long to = ((long)(i >> 3) * R * K + r * K + kk) * 24 + (i & 7);
                float G = T[to] + x * (T[to + Dp] + x * T[to + 2 * Dp]), D = 0;
                for (int k = 0; k < M; k++) {
                    float P = gL[k * ldg + ((long)r * 2 + g) * K + kk];
                    gws[k * DENSE_TILE + i] += P * G;
                    D += ws[k * DENSE_TILE + i] * P;
                }
                gxs[i] += D * (T[to + Dp] + 2.0f * x * T[to + 2 * Dp]);
                dT[to] += D;
                dT[to + Dp] += D * x;
                dT[to + 2 * Dp] += D * x * x;
            }
        }
    }
#endif
}

/* ----------------------------------------------- gather-mode leaf kernels */

/* Gather mode (many leaf regions: the object SPN) evaluates a region's
 * leaves straight from the chunk's pixel-major x and m, xT and mT (D, ld)
 * with ld = the chunk's examples rounded up to 8 (pad columns hold x = 0,
 * m = 1, so w = 0), 8 examples per vector. A GEMM formulation would build
 * the region's (3n, nb) operand [w | w x | w x^2] first: with K = 20
 * Gaussians its products are skinny (588 x 128 x 20 per region and chunk
 * of the object SPN), OpenBLAS spent a third of their time packing, and the
 * operand (300 KB) fell out of L2 between the products. Per leaf region of
 * n pixels, with its Theta planes A, B, C (n, K) and w = 1 - clip(m, 0, 1):
 *   forward:  V[e, k] = sum_i w A[i,k] + w x B[i,k] + w x^2 C[i,k];
 *   backward: dA[i, k] += sum_e w gV[e, k] (dB with w x, dC with w x^2),
 *             g0[i, e] = sum_k A[i, k] gV[e, k] (g1 with B, g2 with C),
 *             d/dx += w (g1 + 2 x g2), d/dm -= g0 + x g1 + x^2 g2 where
 *             0 <= m <= 1 (clip passes no gradient outside).
 * Blocks are sized so accumulators and operands fit the 16 AVX registers:
 * forward 2 example vectors x 4 Gaussians, input gradients 3 example vectors
 * x 3 planes, Theta gradients 3 planes x 24 Gaussians (one pixel). The
 * weights w come precomputed (wT, next to mT) so that the forward block's
 * 15 live vectors need no constants. */
#define GATHER_FWD_KB 4
#define GATHER_FWD_NV 2
#define GATHER_IN_NV 3
#define GATHER_DT_KV 3
#define GATHER_PREFETCH 4 /* pixels ahead */

#if defined(__AVX2__)

/* Forward of one block: NV example vectors (xT, wT at the block's first
 * example) x KB Gaussians (T at A[0][k0]; planes P apart) over the n pixels
 * idx. out (NV * 8, KB) example-major. */
static inline __attribute__((always_inline)) void
gather_fwd_block(float *out, const float *T, long P, int K, const int *idx, int n,
                 const float *xT, const float *wT, long ld, const int NV, const int KB) {
    __m256 acc[GATHER_FWD_NV][GATHER_FWD_KB];
    for (int v = 0; v < NV; v++)
        for (int k = 0; k < KB; k++) acc[v][k] = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        const long q = (long)idx[i] * ld;
        /* The pixels' rows are scattered over xT and wT (L2): fetch ahead. */
        if (i + GATHER_PREFETCH < n) {
            const long qn = (long)idx[i + GATHER_PREFETCH] * ld;
            _mm_prefetch((const char *)(xT + qn), _MM_HINT_T0);
            _mm_prefetch((const char *)(wT + qn), _MM_HINT_T0);
            if (NV > 1) {
                _mm_prefetch((const char *)(xT + qn + 8), _MM_HINT_T0);
                _mm_prefetch((const char *)(wT + qn + 8), _MM_HINT_T0);
            }
        }
        __m256 w[GATHER_FWD_NV], wx[GATHER_FWD_NV], wxx[GATHER_FWD_NV];
        for (int v = 0; v < NV; v++) {
            __m256 x = _mm256_loadu_ps(xT + q + 8 * v);
            w[v] = _mm256_loadu_ps(wT + q + 8 * v);
            wx[v] = _mm256_mul_ps(w[v], x);
            wxx[v] = _mm256_mul_ps(wx[v], x);
        }
        const float *t = T + (long)i * K;
        for (int k = 0; k < KB; k++) {
            __m256 a = _mm256_broadcast_ss(t + k);
            for (int v = 0; v < NV; v++) acc[v][k] = _mm256_fmadd_ps(w[v], a, acc[v][k]);
            __m256 b = _mm256_broadcast_ss(t + P + k);
            for (int v = 0; v < NV; v++) acc[v][k] = _mm256_fmadd_ps(wx[v], b, acc[v][k]);
            __m256 c = _mm256_broadcast_ss(t + 2 * P + k);
            for (int v = 0; v < NV; v++) acc[v][k] = _mm256_fmadd_ps(wxx[v], c, acc[v][k]);
        }
    }
    float buf[8];
    for (int v = 0; v < NV; v++)
        for (int k = 0; k < KB; k++) {
            _mm256_storeu_ps(buf, acc[v][k]);
            for (int l = 0; l < 8; l++) out[(8 * v + l) * KB + k] = buf[l];
        }
}

/* Input gradients of one pixel (row q of xT, mT, wT, gxT, gmT) for NV
 * example vectors from e0: g = sum_k Theta[k] gLT[k] per plane, then d/dx
 * and d/dm (either output may be NULL); f (3, ld) gets w, w x, w x^2. */
static inline __attribute__((always_inline)) void
gather_in_block(float *gxT, float *gmT, float *f, long ld, const float *xT, const float *mT,
                const float *wT, const float *t, long P, int K, const float *gLT, const int NV) {
    __m256 g0[GATHER_IN_NV], g1[GATHER_IN_NV], g2[GATHER_IN_NV];
    for (int v = 0; v < NV; v++) g0[v] = g1[v] = g2[v] = _mm256_setzero_ps();
    if (gxT || gmT)
        for (int k = 0; k < K; k++) {
            const float *gk = gLT + (long)k * ld;
            __m256 g[GATHER_IN_NV];
            for (int v = 0; v < NV; v++) g[v] = _mm256_loadu_ps(gk + 8 * v);
            __m256 a = _mm256_broadcast_ss(t + k);
            for (int v = 0; v < NV; v++) g0[v] = _mm256_fmadd_ps(a, g[v], g0[v]);
            __m256 b = _mm256_broadcast_ss(t + P + k);
            for (int v = 0; v < NV; v++) g1[v] = _mm256_fmadd_ps(b, g[v], g1[v]);
            __m256 c = _mm256_broadcast_ss(t + 2 * P + k);
            for (int v = 0; v < NV; v++) g2[v] = _mm256_fmadd_ps(c, g[v], g2[v]);
        }
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (int v = 0; v < NV; v++) {
        __m256 x = _mm256_loadu_ps(xT + 8 * v), w = _mm256_loadu_ps(wT + 8 * v);
        __m256 wx = _mm256_mul_ps(w, x), wxx = _mm256_mul_ps(wx, x);
        _mm256_storeu_ps(f + 8 * v, w);
        _mm256_storeu_ps(f + ld + 8 * v, wx);
        _mm256_storeu_ps(f + 2 * ld + 8 * v, wxx);
        if (gxT) {
            __m256 d = _mm256_mul_ps(w, _mm256_fmadd_ps(_mm256_add_ps(x, x), g2[v], g1[v]));
            _mm256_storeu_ps(gxT + 8 * v, _mm256_add_ps(_mm256_loadu_ps(gxT + 8 * v), d));
        }
        if (gmT) {
            __m256 m = _mm256_loadu_ps(mT + 8 * v);
            __m256 inside = _mm256_and_ps(_mm256_cmp_ps(m, zero, _CMP_GE_OQ),
                                          _mm256_cmp_ps(m, one, _CMP_LE_OQ));
            __m256 dw = _mm256_fmadd_ps(x, _mm256_fmadd_ps(x, g2[v], g1[v]), g0[v]);
            _mm256_storeu_ps(gmT + 8 * v,
                             _mm256_sub_ps(_mm256_loadu_ps(gmT + 8 * v), _mm256_and_ps(inside, dw)));
        }
    }
}

/* Theta gradients of one pixel for KV * 8 Gaussians from k0: dT rows
 * (planes P apart) += sum over the nb examples of f (3, ld) times gLp
 * (nb, Kp) (zero past K). kn = valid Gaussians of the block. */
static inline __attribute__((always_inline)) void
gather_dt_block(float *dT, long P, const float *f, long ld, const float *gLp, int Kp, int nb,
                int kn, const int KV) {
    __m256 a[GATHER_DT_KV], b[GATHER_DT_KV], c[GATHER_DT_KV];
    for (int u = 0; u < KV; u++) a[u] = b[u] = c[u] = _mm256_setzero_ps();
    for (int e = 0; e < nb; e++) {
        const __m256 f0 = _mm256_broadcast_ss(f + e), f1 = _mm256_broadcast_ss(f + ld + e),
                     f2 = _mm256_broadcast_ss(f + 2 * ld + e);
        const float *g = gLp + (long)e * Kp;
        for (int u = 0; u < KV; u++) {
            __m256 gv = _mm256_loadu_ps(g + 8 * u);
            a[u] = _mm256_fmadd_ps(f0, gv, a[u]);
            b[u] = _mm256_fmadd_ps(f1, gv, b[u]);
            c[u] = _mm256_fmadd_ps(f2, gv, c[u]);
        }
    }
    float buf[3][GATHER_DT_KV * 8];
    for (int u = 0; u < KV; u++) {
        _mm256_storeu_ps(buf[0] + 8 * u, a[u]);
        _mm256_storeu_ps(buf[1] + 8 * u, b[u]);
        _mm256_storeu_ps(buf[2] + 8 * u, c[u]);
    }
    for (int pl = 0; pl < 3; pl++)
        for (int k = 0; k < kn; k++) dT[pl * P + k] += buf[pl][k];
}
#endif

/* Forward of leaf region idx[0..n) (Theta planes at T: (3, n, K)) for the
 * chunk's nb examples: V (nb rows of stride ldv) columns [0, K). */
static void gather_leaf_forward(float *V, long ldv, const float *T, int n, int K, const int *idx,
                                const float *xT, const float *wT, long ld, int nb) {
    const long P = (long)n * K;
#if defined(__AVX2__)
    float out[GATHER_FWD_NV * 8 * GATHER_FWD_KB];
    for (int e0 = 0; e0 < nb; e0 += 8 * GATHER_FWD_NV) {
        const int NV = nb - e0 > 8 ? GATHER_FWD_NV : 1;
        for (int k0 = 0; k0 < K; k0 += GATHER_FWD_KB) {
            const int KB = K - k0 < GATHER_FWD_KB ? K - k0 : GATHER_FWD_KB;
            const float *t = T + k0;
#define FWD(nv, kb)                                                                                \
    gather_fwd_block(out, t, P, K, idx, n, xT + e0, wT + e0, ld, nv, kb)
            if (NV == 2) {
                switch (KB) {
                case 1: FWD(2, 1); break;
                case 2: FWD(2, 2); break;
                case 3: FWD(2, 3); break;
                default: FWD(2, 4); break;
                }
            } else {
                switch (KB) {
                case 1: FWD(1, 1); break;
                case 2: FWD(1, 2); break;
                case 3: FWD(1, 3); break;
                default: FWD(1, 4); break;
                }
            }
#undef FWD
            for (int l = 0; l < 8 * NV && e0 + l < nb; l++)
                for (int k = 0; k < KB; k++) V[(long)(e0 + l) * ldv + k0 + k] = out[l * KB + k];
        }
    }
#else
    for (int e = 0; e < nb; e++)
        for (int k = 0; k < K; k++) {
            float acc = 0;
            for (int i = 0; i < n; i++) {
                const long q = (long)idx[i] * ld + e;
                float w = wT[q], x = xT[q];
                const float *t = T + (long)i * K + k;
                acc += w * t[0] + w * x * t[P] + w * x * x * t[2 * P];
            }
            V[(long)e * ldv + k] = acc;
        }
#endif
}

/* Backward of leaf region idx[0..n): from gL (nb rows of stride ldg, K
 * columns), Theta's gradient into dT ((3, n, K) like T) and, when gxT or
 * gmT is not NULL, the pixel-major x and m gradients (rows of ld). Scratch:
 * gLT (K, ld), gLp (nb, round8(K)), f (3, ld). */
/* noinline: called per region and chunk; keeps it apart in profiles */
__attribute__((noinline)) static void gather_leaf_backward(float *dT, float *gxT, float *gmT, const float *T, int n, int K,
                                 const int *idx, const float *xT, const float *mT,
                                 const float *wT, long ld, int nb,
                                 const float *gL, long ldg, float *gLT, float *gLp, float *f) {
    const long P = (long)n * K;
    const int Kp = (K + 7) / 8 * 8;
    for (int k = 0; k < K; k++) {
        float *row = gLT + (long)k * ld;
        for (int e = 0; e < nb; e++) row[e] = gL[(long)e * ldg + k];
        for (int e = nb; e < ld; e++) row[e] = 0.0f;
    }
    for (int e = 0; e < nb; e++) {
        for (int k = 0; k < K; k++) gLp[(long)e * Kp + k] = gL[(long)e * ldg + k];
        for (int k = K; k < Kp; k++) gLp[(long)e * Kp + k] = 0.0f;
    }
    for (int i = 0; i < n; i++) {
        const long q = (long)idx[i] * ld;
        const float *t = T + (long)i * K;
#if defined(__AVX2__)
        for (int e0 = 0; e0 < ld; e0 += 8 * GATHER_IN_NV) {
            const int nv = (int)(ld - e0) / 8 < GATHER_IN_NV ? (int)(ld - e0) / 8 : GATHER_IN_NV;
            float *gx = gxT ? gxT + q + e0 : NULL, *gm = gmT ? gmT + q + e0 : NULL;
#define IN(NV)                                                                                     \
    gather_in_block(gx, gm, f + e0, ld, xT + q + e0, mT + q + e0, wT + q + e0, t, P, K, gLT + e0, NV)
            switch (nv) {
            case 1: IN(1); break;
            case 2: IN(2); break;
            default: IN(3); break;
            }
#undef IN
        }
        for (int k0 = 0; k0 < K; k0 += 8 * GATHER_DT_KV) {
            const int kn = K - k0 < 8 * GATHER_DT_KV ? K - k0 : 8 * GATHER_DT_KV;
            float *d = dT + (long)i * K + k0;
            switch ((kn + 7) / 8) {
            case 1: gather_dt_block(d, P, f, ld, gLp + k0, Kp, nb, kn, 1); break;
            case 2: gather_dt_block(d, P, f, ld, gLp + k0, Kp, nb, kn, 2); break;
            default: gather_dt_block(d, P, f, ld, gLp + k0, Kp, nb, kn, 3); break;
            }
        }
#else
        for (int e = 0; e < nb; e++) {
            float x = xT[q + e], m = mT[q + e], w = wT[q + e];
            float g0 = 0, g1 = 0, g2 = 0;
            for (int k = 0; k < K; k++) {
                float g = gLT[(long)k * ld + e];
                g0 += t[k] * g;
                g1 += t[P + k] * g;
                g2 += t[2 * P + k] * g;
                dT[(long)i * K + k] += w * g;
                dT[P + (long)i * K + k] += w * x * g;
                dT[2 * P + (long)i * K + k] += w * x * x * g;
            }
            if (gxT) gxT[q + e] += w * (g1 + 2.0f * x * g2);
            if (gmT && m >= 0.0f && m <= 1.0f) gmT[q + e] -= g0 + x * (g1 + x * g2);
        }
        (void)gLp;
        (void)f;
#endif
    }
}

/* ------------------------------------------------------------- the op */

typedef struct spn_ctx {
    const sp_spn *s;
    const sp_params *p;
    const float *x, *m; /* x (N / M, D), m (N, D) or NULL */
    float *gx, *gm;     /* may be NULL */
    sp_tensor *out;
    int N, T;
    int M;  /* marginalisations per x row (> 1 only in dense mode) */
    int occl; /* m holds M - 1 occluder rows per x row (sp_spn_logp_occluded) */
    int nb; /* examples per chunk: s->nb, or DENSE_SCENES * M in dense mode */
    float *der;                 /* derived parameters */
    float *V[SP_SPN_MAX_DEPTH]; /* (N, R, groups[l], width[l]) values */
    float *Z[SP_SPN_MAX_DEPTH]; /* (N, R, groups[l], S) linear sums, l >= 1 */
    float *mr, *zr;             /* (N, R) root terms: shift and linear value */
    float *rootM, *rootT;       /* (N) max shift and sum of the root */
    float *scratch;             /* T x scratch_floats */
    long scratch_floats;
    float *partial; /* T x n_derived gradient partials */
} spn_ctx;

/* Per-thread scratch carved from one block. */
typedef struct spn_scratch {
    float *E, *gE, *ea, *eb, *ta, *tb, *ma, *mb, *ca, *cb, *cr, *gz, *gV[SP_SPN_MAX_DEPTH];
    /* Gather mode: the gradients wrt x and m pixel-major (2D, ld). */
    float *fp;
    float *gLT, *gLp, *f; /* gather_leaf_backward's scratch */
    /* Dense mode: a tile's inputs and input gradients, and the chunk's lane
     * partial sums of the leaf values. */
    float *xs, *ws, *gxs, *gws, *acc;
    float *xT, *mT, *wT; /* (D, ld) x, m and w transposed (gather mode) */
} spn_scratch;

static long carve(const sp_spn *s, float *base, spn_scratch *sc) {
    long o = 0;
    const int nb = s->nb;
    int wmax = s->K > s->S ? s->K : s->S;
#define TAKE(ptr, n)                                                                               \
    do {                                                                                           \
        if (base) (ptr) = base + o;                                                                \
        o += align16((long)(n));                                                                   \
    } while (0)
    if (s->dense) {
        TAKE(sc->xs, DENSE_TILE);
        TAKE(sc->ws, DENSE_MAX_M * DENSE_TILE);
        TAKE(sc->gxs, DENSE_TILE);
        TAKE(sc->gws, DENSE_MAX_M * DENSE_TILE);
        TAKE(sc->acc, (long)DENSE_SCENES * s->R * s->K * DENSE_MAX_M * 16);
    } else {
        TAKE(sc->fp, 2L * nb * s->D);
        TAKE(sc->gLT, (long)s->K * nb);
        TAKE(sc->gLp, (long)nb * ((s->K + 7) / 8 * 8));
        TAKE(sc->f, 3L * nb);
        TAKE(sc->xT, (long)nb * s->D);
        TAKE(sc->mT, (long)nb * s->D);
        TAKE(sc->wT, (long)nb * s->D);
    }
    TAKE(sc->E, (long)nb * s->cmax);
    TAKE(sc->gE, (long)SUM_ROWS * s->cmax); /* sum_layer_backward's rows of gE */
    TAKE(sc->ea, (long)nb * wmax);
    TAKE(sc->eb, (long)nb * wmax);
    TAKE(sc->ta, (long)nb * wmax);
    TAKE(sc->tb, (long)nb * wmax);
    TAKE(sc->ma, nb);
    TAKE(sc->mb, nb);
    TAKE(sc->ca, nb);
    TAKE(sc->cb, nb);
    TAKE(sc->cr, (long)nb * s->R);
    TAKE(sc->gz, (long)nb * (s->S > 1 ? s->S : 1));
    for (int l = 0; l < s->d; l++) TAKE(sc->gV[l], (long)nb * s->R * s->groups[l] * s->width[l]);
#undef TAKE
    return o;
}

static inline long vstride(const sp_spn *s, int l) {
    return (long)s->R * s->groups[l] * s->width[l];
}

/* Dense mode, leaf values of examples [n0, n0 + nb): whole scenes of M
 * examples each, tile by tile (see the dense kernels). */
static void dense_forward(const spn_ctx *c, long n0, int nb, const spn_scratch *sc) {
    const sp_spn *s = c->s;
    const int M = c->M, R = s->R, K = s->K, nsc = nb / M;
    const long D = s->D, sc0 = n0 / M, per = (long)R * K * M * 16, vs0 = vstride(s, 0);
    const int mrows = c->occl ? M - 1 : M;
    memset(sc->acc, 0, (size_t)nsc * per * sizeof(float));
    for (long p0 = 0; p0 < D; p0 += DENSE_TILE) {
        const int np = D - p0 < DENSE_TILE ? (int)(D - p0) : DENSE_TILE, nv = (np + 7) / 8;
        for (int n = 0; n < nsc; n++) {
            const long e = sc0 + n;
            dense_tile_inputs(sc->xs, sc->ws, c->x + e * D, c->m ? c->m + e * mrows * D : NULL,
                              c->occl, M, D, p0, np);
            dense_tile_forward(s, c->der, sc->acc + n * per, p0, nv, sc->xs, sc->ws, M);
        }
    }
    for (int n = 0; n < nsc; n++)
        for (int r = 0; r < R; r++)
            for (int kk = 0; kk < K; kk++)
                for (int k = 0; k < M; k++)
                    for (int g = 0; g < 2; g++) {
                        const float *a = sc->acc + n * per + ((long)(r * K + kk) * M + k) * 16 + g * 8;
                        float v = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
                        c->V[0][(n0 + (long)n * M + k) * vs0 + ((long)r * 2 + g) * K + kk] = v;
                    }
}

/* gm -= gw where 0 <= m <= 1 (dw/dm = -1; clip passes nothing outside), n
 * values. */
static void marg_grad(float *restrict gm, const float *restrict m, const float *restrict gw, int n) {
    int i = 0;
#if defined(__AVX2__)
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 mv = _mm256_loadu_ps(m + i);
        __m256 inside = _mm256_and_ps(_mm256_cmp_ps(mv, zero, _CMP_GE_OQ),
                                      _mm256_cmp_ps(mv, one, _CMP_LE_OQ));
        _mm256_storeu_ps(gm + i, _mm256_sub_ps(_mm256_loadu_ps(gm + i),
                                               _mm256_and_ps(inside, _mm256_loadu_ps(gw + i))));
    }
#endif
    for (; i < n; i++)
        if (m[i] >= 0.0f && m[i] <= 1.0f) gm[i] -= gw[i];
}

/* Dense mode, backward of the leaves of examples [n0, n0 + nb) from their
 * value gradients sc->gV[0]: Theta's gradient into part, x's and m's into
 * c->gx and c->gm (when they exist). */
static void dense_backward(const spn_ctx *c, long n0, int nb, const spn_scratch *sc, float *part) {
    const sp_spn *s = c->s;
    const int M = c->M, nsc = nb / M;
    const long D = s->D, sc0 = n0 / M, vs0 = vstride(s, 0);
    const int mrows = c->occl ? M - 1 : M;
    for (long p0 = 0; p0 < D; p0 += DENSE_TILE) {
        const int np = D - p0 < DENSE_TILE ? (int)(D - p0) : DENSE_TILE, nv = (np + 7) / 8;
        for (int n = 0; n < nsc; n++) {
            const long e = sc0 + n;
            const float *m = c->m ? c->m + e * mrows * D : NULL;
            dense_tile_inputs(sc->xs, sc->ws, c->x + e * D, m, c->occl, M, D, p0, np);
            memset(sc->gxs, 0, DENSE_TILE * sizeof(float));
            memset(sc->gws, 0, (size_t)M * DENSE_TILE * sizeof(float));
            dense_tile_backward(s, c->der, part, sc->gxs, sc->gws, p0, nv, sc->xs, sc->ws,
                                sc->gV[0] + (long)n * M * vs0, vs0, M);
            if (c->gx) {
                float *gx = c->gx + e * D + p0;
                for (int i = 0; i < np; i++) gx[i] += sc->gxs[i];
            }
            if (c->gm && c->occl)
                chain_grad(c->gm + e * mrows * D + p0, D, m + p0, sc->ws, DENSE_TILE, sc->gws,
                           DENSE_TILE, M, np);
            else if (c->gm)
                for (int k = 0; k < M; k++)
                    marg_grad(c->gm + (e * M + k) * D + p0, m + k * D + p0,
                              sc->gws + k * DENSE_TILE, np);
        }
    }
}

static void forward_chunk(const spn_ctx *c, long n0, int nb, const spn_scratch *sc) {
    const sp_spn *s = c->s;
    const int K = s->K, S = s->S, R = s->R, d = s->d;
    const long ld = (nb + 7) / 8 * 8;
    if (s->dense) {
        dense_forward(c, n0, nb, sc);
    } else {
        transpose_chunk(sc->xT, sc->mT, sc->wT, c->x, c->m, n0, nb, ld, s->D);
    }
    for (int r = 0; r < R; r++) {
        const long vs0 = vstride(s, 0);
        for (int j = 0; j < s->G0 && !s->dense; j++)
            gather_leaf_forward(c->V[0] + n0 * vs0 + ((long)r * s->G0 + j) * K, vs0,
                                c->der + theta_off(s, r, j), s->off[j + 1] - s->off[j], K,
                                s->perm + (long)r * s->D + s->off[j], sc->xT, sc->wT, ld, nb);
        for (int l = 1; l < d; l++) {
            const int w = s->width[l - 1], C = w * w;
            const long vsi = vstride(s, l - 1), vso = vstride(s, l);
            for (int g = 0; g < s->groups[l]; g++) {
                const float *a = c->V[l - 1] + n0 * vsi + ((long)r * s->groups[l - 1] + 2 * g) * w;
                child_exp(a, vsi, nb, w, sc->ea, sc->ma, sc->ca);
                child_exp(a + w, vsi, nb, w, sc->eb, sc->mb, sc->cb);
                outer(sc->E, sc->ea, sc->eb, nb, w);
                const float *W = c->der + s->dw_off[l] + ((long)r * s->groups[l] + g) * S * C;
                long o = n0 * vso + ((long)r * s->groups[l] + g) * S;
                float *z = c->Z[l] + o, *v = c->V[l] + o;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, S, C, 1.0f, sc->E, C, W, C,
                            0.0f, z, (int)vso);
                float *lz = sc->gz; /* (nb, S), free in the forward */
                for (int n = 0; n < nb; n++) memcpy(lz + (long)n * S, z + n * vso, S * sizeof(float));
                log_clamped(lz, (long)nb * S);
                for (int n = 0; n < nb; n++) {
                    float sh = sc->ma[n] + sc->mb[n];
                    /* Equal children: the normalised weights sum to 1, so the
                     * value is exact (full marginalisation gives 0). */
                    int exact = sc->ca[n] != 0.0f && sc->cb[n] != 0.0f;
                    for (int k = 0; k < S; k++)
                        v[n * vso + k] = exact ? sh : sh + lz[(long)n * S + k];
                }
            }
        }
        /* Top product of repetition r against its root weights. */
        const int w = s->width[d - 1];
        const long vsi = vstride(s, d - 1);
        const float *a = c->V[d - 1] + n0 * vsi + (long)r * 2 * w;
        child_exp(a, vsi, nb, w, sc->ea, sc->ma, sc->ca);
        child_exp(a + w, vsi, nb, w, sc->eb, sc->mb, sc->cb);
        const float *Wr = c->der + s->droot_off + (long)r * s->ctop;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, w, w, 1.0f, sc->eb, w, Wr, w, 0.0f,
                    sc->ta, w);
        for (int n = 0; n < nb; n++) {
            float z = 0;
            for (int i = 0; i < w; i++) z += sc->ea[(long)n * w + i] * sc->ta[(long)n * w + i];
            c->mr[(n0 + n) * R + r] = sc->ma[n] + sc->mb[n];
            c->zr[(n0 + n) * R + r] = z;
            sc->cr[(long)n * R + r] = (sc->ca[n] != 0.0f && sc->cb[n] != 0.0f) ? 1.0f : 0.0f;
        }
    }
    for (int n = 0; n < nb; n++) {
        const float *mr = c->mr + (n0 + n) * R, *zr = c->zr + (n0 + n) * R;
        float M = mr[0];
        int exact = 1;
        for (int r = 1; r < R; r++) M = mr[r] > M ? mr[r] : M;
        float T = 0;
        for (int r = 0; r < R; r++) {
            T += expf(mr[r] - M) * zr[r];
            exact &= sc->cr[(long)n * R + r] != 0.0f && mr[r] == M;
        }
        c->rootM[n0 + n] = M;
        c->rootT[n0 + n] = T;
        c->out->val[n0 + n] = exact ? M : M + logf(T < Z_MIN ? Z_MIN : T);
    }
}

static void backward_chunk(const spn_ctx *c, long n0, int nb, const spn_scratch *sc, float *part) {
    const sp_spn *s = c->s;
    const int K = s->K, S = s->S, R = s->R, d = s->d;
    const float *g = c->out->grad + n0;
    const int need_in = c->gx || c->gm;
    const long ld = (nb + 7) / 8 * 8;
    for (int l = 0; l < d; l++) memset(sc->gV[l], 0, (size_t)nb * vstride(s, l) * sizeof(float));
    if (!s->dense) transpose_chunk(sc->xT, sc->mT, sc->wT, c->x, c->m, n0, nb, ld, s->D);
    if (need_in && !s->dense) memset(sc->fp, 0, (size_t)2 * ld * s->D * sizeof(float));
    for (int r = 0; r < R; r++) {
        /* Root -> top product of repetition r. */
        {
            const int w = s->width[d - 1];
            const long vsi = vstride(s, d - 1);
            const float *a = c->V[d - 1] + n0 * vsi + (long)r * 2 * w;
            child_exp(a, vsi, nb, w, sc->ea, sc->ma, sc->ca);
            child_exp(a + w, vsi, nb, w, sc->eb, sc->mb, sc->cb);
            const float *Wr = c->der + s->droot_off + (long)r * s->ctop;
            for (int n = 0; n < nb; n++) {
                float T = c->rootT[n0 + n];
                sc->gz[n] = g[n] * expf(c->mr[(n0 + n) * R + r] - c->rootM[n0 + n]) /
                            (T < Z_MIN ? Z_MIN : T);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, w, w, 1.0f, sc->eb, w, Wr, w,
                        0.0f, sc->ta, w);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, w, w, 1.0f, sc->ea, w, Wr, w,
                        0.0f, sc->tb, w);
            float *ga = sc->gV[d - 1] + (long)r * 2 * w;
            for (int n = 0; n < nb; n++) {
                float gz = sc->gz[n];
                float *gar = ga + n * vsi, *gbr = gar + w;
                const float *ea = sc->ea + (long)n * w, *eb = sc->eb + (long)n * w;
                const float *ta = sc->ta + (long)n * w, *tb = sc->tb + (long)n * w;
                float *es = sc->E + (long)n * w;
                for (int i = 0; i < w; i++) {
                    gar[i] += gz * ea[i] * ta[i];
                    gbr[i] += gz * eb[i] * tb[i];
                    es[i] = gz * ea[i];
                }
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w, w, nb, 1.0f, sc->E, w, sc->eb,
                        w, 1.0f, part + s->droot_off + (long)r * s->ctop, w);
        }
        /* Sum regions, top level first. */
        for (int l = d - 1; l >= 1; l--) {
            const int w = s->width[l - 1], C = w * w;
            const long vsi = vstride(s, l - 1), vso = vstride(s, l);
            for (int gi = 0; gi < s->groups[l]; gi++) {
                const long go = ((long)r * s->groups[l] + gi) * S;
                const float *z = c->Z[l] + n0 * vso + go;
                const float *gS = sc->gV[l] + go;
                for (int n = 0; n < nb; n++)
                    for (int k = 0; k < S; k++) {
                        float zz = z[n * vso + k];
                        sc->gz[(long)n * S + k] = gS[n * vso + k] / (zz < Z_MIN ? Z_MIN : zz);
                    }
                const long ao = ((long)r * s->groups[l - 1] + 2 * gi) * w;
                const float *a = c->V[l - 1] + n0 * vsi + ao;
                child_exp(a, vsi, nb, w, sc->ea, sc->ma, sc->ca);
                child_exp(a + w, vsi, nb, w, sc->eb, sc->mb, sc->cb);
                outer(sc->E, sc->ea, sc->eb, nb, w);
                const float *W = c->der + s->dw_off[l] + go * C;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, C, nb, 1.0f, sc->gz, S,
                            sc->E, C, 1.0f, part + s->dw_off[l] + go * C, C);
                /* d value / d child = E * gE, summed over the other child. */
                sum_layer_backward(sc->gV[l - 1] + ao, vsi, sc->ea, sc->eb, sc->gz, S, W, w, nb,
                                   sc->gE, sc->tb);
            }
        }
        /* Leaves. */
        const long vs0 = vstride(s, 0);
        float *gxT = sc->fp, *gmT = sc->fp + ld * s->D;
        for (int j = 0; j < s->G0 && !s->dense; j++) {
            const long to = theta_off(s, r, j);
            gather_leaf_backward(part + to, c->gx ? gxT : NULL, c->gm ? gmT : NULL, c->der + to,
                                 s->off[j + 1] - s->off[j], K, s->perm + (long)r * s->D + s->off[j],
                                 sc->xT, sc->mT, sc->wT, ld, nb,
                                 sc->gV[0] + ((long)r * s->G0 + j) * K,
                                 vs0, sc->gLT, sc->gLp, sc->f);
        }
    }
    if (s->dense) {
        dense_backward(c, n0, nb, sc, part);
        return;
    }
    if (!need_in) return;
    /* The pixel-major gradients wrt x and m, transposed into the rows of
     * x->grad and marg->grad. */
    float *gxT = sc->fp, *gmT = sc->fp + ld * s->D;
    if (c->gx) transpose(gxT, ld, c->gx + n0 * s->D, s->D, s->D, nb, 1);
    if (c->gm) transpose(gmT, ld, c->gm + n0 * s->D, s->D, s->D, nb, 1);
}

/* Chunks [c0, c1) of thread t of nt: a static partition. */
static void thread_chunks(int nchunks, int t, int nt, int *c0, int *c1) {
    *c0 = (int)((long)nchunks * t / nt);
    *c1 = (int)((long)nchunks * (t + 1) / nt);
}

/* Softmax backward of one row: g_logit = W * (gW - <W, gW>), added to out. */
static void softmax_backward_row(float *out, const float *W, const float *gW, long n) {
    double dot = 0;
    for (long i = 0; i < n; i++) dot += (double)W[i] * gW[i];
    float fd = (float)dot;
    for (long i = 0; i < n; i++) out[i] += W[i] * (gW[i] - fd);
}

static void spn_backward(void *vctx) {
    spn_ctx *c = vctx;
    const sp_spn *s = c->s;
    const int nb = c->nb;
    const int nchunks = (c->N + nb - 1) / nb;
    sp_zero_bytes(c->partial, (size_t)c->T * s->n_derived * sizeof(float));
#pragma omp parallel num_threads(c->T)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        spn_scratch sc = {0};
        carve(s, c->scratch + t * c->scratch_floats, &sc);
        float *part = c->partial + t * s->n_derived;
        int c0, c1;
        thread_chunks(nchunks, t, nt, &c0, &c1);
        for (int ci = c0; ci < c1; ci++) {
            long n0 = (long)ci * nb;
            int m = c->N - n0 < nb ? (int)(c->N - n0) : nb;
            backward_chunk(c, n0, m, &sc, part);
        }
    }
    /* Ordered reduction of the partials into partial[0]. */
    const long nd = s->n_derived;
    float *P = c->partial;
    if (c->T > 1) {
#pragma omp parallel for schedule(static) num_threads(c->T)
        for (long i = 0; i < nd; i++) {
            float acc = P[i];
            for (int t = 1; t < c->T; t++) acc += P[t * nd + i];
            P[i] = acc;
        }
    }
    /* dTheta -> d mu, d variance parameter. */
    const sp_params *p = c->p;
    const float *mu = sp_params_val(p, s->i_mean), *pv = sp_params_val(p, s->i_var);
    float *gmu = sp_params_grad(p, s->i_mean), *gpv = sp_params_grad(p, s->i_var);
    const float vmin = s->cfg.var_min, vrange = s->cfg.var_max - s->cfg.var_min;
    const int K = s->K;
    if (s->dense) {
        dense_theta(s, mu, pv, NULL, P, gmu, gpv, c->T);
    } else {
#pragma omp parallel for schedule(static) num_threads(c->T)
        for (int rj = 0; rj < s->R * s->G0; rj++) {
            int r = rj / s->G0, j = rj % s->G0;
            const int len = s->off[j + 1] - s->off[j], n = len * K;
            const long q0 = ((long)r * s->D + s->off[j]) * K;
            const float *dT = P + theta_off(s, r, j);
            float sgb[LEAF_BLOCK], invb[LEAF_BLOCK];
            for (int e0 = 0; e0 < n; e0 += LEAF_BLOCK) {
                const int nb = n - e0 < LEAF_BLOCK ? n - e0 : LEAF_BLOCK;
                leaf_moments(sgb, invb, NULL, pv + q0 + e0, nb, vmin, vrange);
                for (int e = 0; e < nb; e++) {
                    const long q = q0 + e0 + e, i = e0 + e;
                    leaf_theta_grad(gmu + q, gpv + q, mu[q], sgb[e], invb[e], dT[i], dT[n + i],
                                    dT[2L * n + i], vrange);
                }
            }
        }
    }
    for (int l = 1; l < s->d; l++) {
        int C = s->width[l - 1] * s->width[l - 1];
        long rows = (long)s->R * s->groups[l] * s->S;
        float *gw = sp_params_grad(p, s->i_sum[l]);
        const float *W = c->der + s->dw_off[l], *dW = P + s->dw_off[l];
#pragma omp parallel for schedule(static) num_threads(c->T)
        for (long i = 0; i < rows; i++) softmax_backward_row(gw + i * C, W + i * C, dW + i * C, C);
    }
    softmax_backward_row(sp_params_grad(p, s->i_root), c->der + s->droot_off, P + s->droot_off,
                         (long)s->R * s->ctop);
}

/* log p of every (x row, marginalisation) pair: M > 1 only in dense mode
 * with M <= DENSE_MAX_M (the caller checks); occl: marg holds M - 1
 * occluder rows per x row instead of M marginalisation rows. */
static sp_tensor *spn_logp(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                           const sp_tensor *marg, int M, int occl) {
    if (!x || !s || !p || !s->has_params || x->ndim < 1) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int N = x->shape[0] * M;
    if (x->size != (long)x->shape[0] * s->D || (marg && marg->size != x->size * (occl ? M - 1 : M))) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int grad = sp_tape_grad_enabled(t);
    sp_tensor *out = sp_tensor_1d(t, N, 1);
    spn_ctx *c = sp_tape_calloc(t, sizeof *c);
    if (!out || !c) return NULL;
    c->s = s;
    c->p = p;
    c->x = x->val;
    c->m = marg ? marg->val : NULL;
    c->gx = grad ? x->grad : NULL;
    c->gm = grad && marg ? marg->grad : NULL;
    c->out = out;
    c->N = N;
    c->M = M;
    c->occl = occl && marg;
    c->nb = s->dense ? DENSE_SCENES * M : s->nb;
    /* No more threads than chunks: a small batch (the tests' finite
     * differences, evaluation tails) runs without a team at all. */
    c->T = omp_get_max_threads();
    if (c->T > (N + c->nb - 1) / c->nb) c->T = (N + c->nb - 1) / c->nb;
    if (c->T < 1) c->T = 1;
    c->der = sp_tape_alloc(t, (size_t)s->n_derived * sizeof(float));
    for (int l = 0; l < s->d; l++) {
        size_t bytes = (size_t)N * vstride(s, l) * sizeof(float);
        c->V[l] = sp_tape_alloc(t, bytes ? bytes : 1);
        if (l >= 1) c->Z[l] = sp_tape_alloc(t, bytes ? bytes : 1);
    }
    size_t nr = (size_t)N * s->R + 1;
    c->mr = sp_tape_alloc(t, nr * sizeof(float));
    c->zr = sp_tape_alloc(t, nr * sizeof(float));
    c->rootM = sp_tape_alloc(t, (size_t)(N + 1) * sizeof(float));
    c->rootT = sp_tape_alloc(t, (size_t)(N + 1) * sizeof(float));
    spn_scratch dummy = {0};
    c->scratch_floats = carve(s, NULL, &dummy);
    c->scratch = sp_tape_alloc(t, (size_t)c->T * c->scratch_floats * sizeof(float));
    if (grad) c->partial = sp_tape_alloc(t, (size_t)c->T * s->n_derived * sizeof(float));
    if (sp_tape_failed(t) || !c->der || !c->scratch || !c->mr || !c->zr || !c->rootM || !c->rootT ||
        (grad && !c->partial))
        return NULL;
    for (int l = 0; l < s->d; l++)
        if (!c->V[l] || (l >= 1 && !c->Z[l])) return NULL;
    if (N == 0) return out;

    compute_derived(s, p, c->der, c->T);
    const int nb = c->nb;
    const int nchunks = (N + nb - 1) / nb;
#pragma omp parallel num_threads(c->T)
    {
        int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        spn_scratch sc = {0};
        carve(s, c->scratch + tid * c->scratch_floats, &sc);
        int c0, c1;
        thread_chunks(nchunks, tid, nt, &c0, &c1);
        for (int ci = c0; ci < c1; ci++) {
            long n0 = (long)ci * nb;
            int m = N - n0 < nb ? (int)(N - n0) : nb;
            forward_chunk(c, n0, m, &sc);
        }
    }
    if (grad && sp_tape_record(t, spn_backward, c) != 0) return NULL;
    return out;
}

sp_tensor *sp_spn_logp(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                       const sp_tensor *marg) {
    return spn_logp(t, s, p, x, marg, 1, 0);
}

/* Repeats each x row M times for sp_spn_logp_multi; backward sums the
 * gradients of the copies into x's. */
typedef struct repeat_ctx {
    const sp_tensor *x;
    const sp_tensor *rep;
    int M;
} repeat_ctx;

static void repeat_backward(void *vctx) {
    repeat_ctx *k = vctx;
    const long D = k->x->size / k->x->shape[0];
    for (int n = 0; n < k->x->shape[0]; n++)
        for (int j = 0; j < k->M; j++) {
            const float *g = k->rep->grad + ((long)n * k->M + j) * D;
            float *gx = k->x->grad + n * D;
            for (long i = 0; i < D; i++) gx[i] += g[i];
        }
}

sp_tensor *sp_spn_logp_multi(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                             const sp_tensor *marg, int M) {
    if (!x || !s || x->ndim < 1 || M < 1 || M > SP_SPN_MAX_MULTI) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int Nx = x->shape[0];
    const long D = s->D;
    if (x->size != (long)Nx * D || (marg && marg->size != x->size * M)) {
        sp_tape_set_failed(t);
        return NULL;
    }
    if (M == 1) return sp_spn_logp(t, s, p, x, marg);
    /* Dense mode computes the x-dependent part once per row itself. */
    if (s->dense && M <= DENSE_MAX_M) return spn_logp(t, s, p, x, marg, M, 0);
    const int rg = sp_needs_grad(x);
    sp_tensor *rep = sp_tensor_2d(t, Nx * M, (int)D, rg);
    if (!rep) return NULL;
    for (int n = 0; n < Nx; n++)
        for (int j = 0; j < M; j++)
            memcpy(rep->val + ((long)n * M + j) * D, x->val + n * D, (size_t)D * sizeof(float));
    if (rg && sp_tape_grad_enabled(t)) {
        /* Recorded before the SPN node, so it runs after the SPN's backward. */
        repeat_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        *k = (repeat_ctx){x, rep, M};
        if (sp_tape_record(t, repeat_backward, k)) return NULL;
    }
    return sp_spn_logp(t, s, p, rep, marg);
}

/* sp_spn_logp_occluded's general path: the M marginalisation rows 1 - w_k
 * of each x row formed explicitly from its M - 1 occluder rows. */
typedef struct occl_ctx {
    const sp_tensor *u;
    sp_tensor *marg;
    const float *w; /* (Nx * M, D) the weights w_k, kept for backward */
    int M;
} occl_ctx;

static void occl_backward(void *vctx) {
    occl_ctx *k = vctx;
    const int M = k->M, Nx = k->u->shape[0] / (M - 1);
    const long D = k->u->size / k->u->shape[0];
#pragma omp parallel for schedule(static)
    for (int n = 0; n < Nx; n++) {
        float gw[SP_SPN_MAX_MULTI * 64];
        const float *gm = k->marg->grad + (long)n * M * D;
        for (long p0 = 0; p0 < D; p0 += 64) {
            const long np = D - p0 < 64 ? D - p0 : 64;
            for (int j = 0; j < M; j++)
                for (long i = 0; i < np; i++) gw[j * 64 + i] = -gm[j * D + p0 + i]; /* m = 1 - w */
            chain_grad(k->u->grad + (long)n * (M - 1) * D + p0, D,
                       k->u->val + (long)n * (M - 1) * D + p0, k->w + (long)n * M * D + p0, D, gw,
                       64, M, np);
        }
    }
}

sp_tensor *sp_spn_logp_occluded(sp_tape *t, const sp_spn *s, const sp_params *p, const sp_tensor *x,
                                const sp_tensor *occ, int M) {
    if (!x || !s || !occ || x->ndim < 1 || occ->ndim < 1 || M < 2 || M > SP_SPN_MAX_MULTI) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int Nx = x->shape[0];
    const long D = s->D;
    if (x->size != (long)Nx * D || occ->size != x->size * (M - 1)) {
        sp_tape_set_failed(t);
        return NULL;
    }
    /* Dense mode makes the weights per pixel tile inside its leaf kernels. */
    if (s->dense && M <= DENSE_MAX_M) return spn_logp(t, s, p, x, occ, M, 1);
    const int rg = sp_needs_grad(occ);
    sp_tensor *marg = sp_tensor_2d(t, Nx * M, (int)D, rg);
    float *w = sp_tape_alloc(t, (size_t)Nx * M * D * sizeof(float));
    if (!marg || !w) return NULL;
    for (int n = 0; n < Nx; n++) {
        float *wn = w + (long)n * M * D;
        chain_weights(wn, D, occ->val + (long)n * (M - 1) * D, D, M, D);
        for (long i = 0; i < M * D; i++) marg->val[(long)n * M * D + i] = 1.0f - wn[i];
    }
    if (rg && sp_tape_grad_enabled(t)) {
        occl_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        *k = (occl_ctx){occ, marg, w, M};
        if (sp_tape_record(t, occl_backward, k)) return NULL;
    }
    return sp_spn_logp_multi(t, s, p, x, marg, M);
}
