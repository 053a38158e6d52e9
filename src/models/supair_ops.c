/* SuPAIR's fused tape ops (declared in supair.h): the input projection, the
 * per-step head with the z_where posterior, the transformer parameters, the
 * occlusion chain and the ELBO combination. Each is one tape node with a
 * hand-written backward, so a training step records a few dozen nodes and the
 * small per-object arithmetic never goes through generic broadcasting ops. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "supair/sparse.h"
#include "supair/supair.h"

/* Below this many values, elementwise loops stay single-threaded. */
#define SUPAIR_OMP_MIN 32768

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

static int shape2(const sp_tensor *x, int d0, int d1) {
    return x && x->ndim == 2 && (d0 < 0 || x->shape[0] == d0) && (d1 < 0 || x->shape[1] == d1);
}

/* ---------------------------------------------------------------- linear */

/* Inputs with at most this fraction of nonzeros go through the sparse
 * kernels (sparse.h). Scenes on a black background have ~11%; the sparse
 * kernel does ~1/6 of sgemm's flops per second (L2-bound), so it wins below
 * roughly 1/6 and the margin covers the CSR build. Noisy scenes (every pixel
 * nonzero) keep sgemm. */
#define SPARSE_MAX_DENSITY 0.15

typedef struct lin_ctx {
    const sp_tensor *x, *W, *b;
    sp_tensor *y;
    sp_csr xt; /* x^T in CSR when the forward went sparse (xt.start NULL otherwise) */
    float *scratch; /* sp_csr_matmul_add's slab copies, room for x and for x^T */
    int B, D, G;
    int slabs; /* W (and its gradient) kept in column slabs of SP_SPARSE_SLAB */
} lin_ctx;

/* The dense products with W (D, G) in slabs W_s (D, S): one sgemm each. */
#define SLABS_OF(G) ((G) / SP_SPARSE_SLAB)

/* y (B, G) += x (B, D) W: y[:, s] += x W_s */
static void slab_forward(int B, int D, int G, const float *x, const float *W, float *y) {
    const int S = SP_SPARSE_SLAB;
    for (int s = 0; s < SLABS_OF(G); s++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, S, D, 1.0f, x, D,
                    W + (size_t)s * D * S, S, 1.0f, y + (size_t)s * S, G);
}

/* dW_s (D, S) += x^T dy[:, s] */
static void slab_dw(int B, int D, int G, const float *x, const float *dy, float *dW) {
    const int S = SP_SPARSE_SLAB;
    for (int s = 0; s < SLABS_OF(G); s++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, S, B, 1.0f, x, D,
                    dy + (size_t)s * S, G, 1.0f, dW + (size_t)s * D * S, S);
}

/* dx (B, D) += dy[:, s] W_s^T over the slabs */
static void slab_dx(int B, int D, int G, const float *dy, const float *W, float *dx) {
    const int S = SP_SPARSE_SLAB;
    for (int s = 0; s < SLABS_OF(G); s++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, D, S, 1.0f, dy + (size_t)s * S, G,
                    W + (size_t)s * D * S, S, 1.0f, dx, D);
}

static void lin_backward(void *p) {
    lin_ctx *k = p;
    const float *dy = k->y->grad;
    if (sp_needs_grad(k->W) && k->xt.start) {  // dW (D,G) += x^T (D,B) dy (B,G), x^T sparse
        if (k->slabs) sp_csr_matmul_add_yslabs(k->W->grad, &k->xt, dy, k->G, k->scratch);
        else sp_csr_matmul_add(k->W->grad, &k->xt, dy, k->G, k->scratch);
    } else if (sp_needs_grad(k->W)) {
        if (k->slabs) slab_dw(k->B, k->D, k->G, k->x->val, dy, k->W->grad);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k->D, k->G, k->B, 1.0f, k->x->val,
                        k->D, dy, k->G, 1.0f, k->W->grad, k->G);
    }
    if (sp_needs_grad(k->x)) {  // dx (B,D) += dy (B,G) W^T (G,D)
        if (k->slabs) slab_dx(k->B, k->D, k->G, dy, k->W->val, k->x->grad);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k->B, k->D, k->G, 1.0f, dy, k->G,
                        k->W->val, k->G, 1.0f, k->x->grad, k->D);
    }
    if (k->b && sp_needs_grad(k->b)) {
        /* db += column sums of dy, in blocks of 64 columns over the team;
         * every sum still runs over the rows in order */
        const int B = k->B, G = k->G, nblk = (G + 63) / 64;
        float *db = k->b->grad;
#pragma omp parallel for schedule(static) if ((long)B * G >= SUPAIR_OMP_MIN)
        for (int q = 0; q < nblk; q++) {
            const int g0 = q * 64, g1 = g0 + 64 < G ? g0 + 64 : G;
            for (int i = 0; i < B; i++)
                for (int g = g0; g < g1; g++) db[g] += dy[(size_t)i * G + g];
        }
    }
}

static sp_tensor *linear(sp_tape *t, const sp_tensor *x, const sp_tensor *W, const sp_tensor *b,
                         int slabs) {
    if (!x || !W) return NULL;
    if (!shape2(x, -1, -1) || !shape2(W, x->shape[1], -1) ||
        (b && (b->size != W->shape[1])) || (slabs && W->shape[1] % SP_SPARSE_SLAB)) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int B = x->shape[0], D = x->shape[1], G = W->shape[1];
    const int rg = sp_needs_grad(x) || sp_needs_grad(W) || (b && sp_needs_grad(b));
    sp_tensor *y = sp_tensor_2d(t, B, G, rg);
    if (!y) return NULL;
#pragma omp parallel for schedule(static) if ((long)B * G >= SUPAIR_OMP_MIN)
    for (int i = 0; i < B; i++) {
        float *row = y->val + (size_t)i * G;
        if (b)
            memcpy(row, b->val, (size_t)G * sizeof(float));
        else
            memset(row, 0, (size_t)G * sizeof(float));
    }
    const int record = rg && sp_tape_grad_enabled(t);
    lin_ctx *k = record ? sp_tape_alloc(t, sizeof *k) : NULL;
    if (record && !k) return NULL;
    sp_csr xt = {0};
    float *scratch = NULL;
    /* The row counts double as the density test (an x that needs its
     * gradient takes the dense product). */
    int *starts = sp_needs_grad(x) ? NULL : sp_tape_alloc(t, (size_t)(B + 1) * sizeof(int));
    if (!sp_needs_grad(x) && !starts) return NULL;
    const long nnz = starts ? sp_csr_row_starts(starts, x->val, B, D) : x->size;
    if (nnz <= SPARSE_MAX_DENSITY * (double)x->size) {
        /* Room for the densest input that takes this path, so every step
         * asks the arena for the same bytes (no growth after the first). */
        const size_t cap = (size_t)(SPARSE_MAX_DENSITY * (double)x->size) + 1;
        sp_csr xs = {.start = starts,
                     .col = sp_tape_alloc(t, cap * sizeof(int)),
                     .val = sp_tape_alloc(t, cap * sizeof(float))};
        const int threads = omp_get_max_threads();
        scratch = sp_tape_alloc(t, (size_t)sp_csr_matmul_scratch(D > B ? D : B, threads) *
                                       sizeof(float));
        if (!xs.col || !xs.val || !scratch) return NULL;
        sp_csr_fill(&xs, x->val, B, D);
        if (slabs) sp_csr_matmul_add_bslabs(y->val, &xs, W->val, G);
        else sp_csr_matmul_add(y->val, &xs, W->val, G, scratch);
        if (record && sp_needs_grad(W)) {
            xt = (sp_csr){.start = sp_tape_alloc(t, (size_t)(D + 1) * sizeof(int)),
                          .col = sp_tape_alloc(t, cap * sizeof(int)),
                          .val = sp_tape_alloc(t, cap * sizeof(float))};
            if (!xt.start || !xt.col || !xt.val) return NULL;
            sp_csr_transpose(&xt, &xs);
        }
    } else if (slabs) {
        slab_forward(B, D, G, x->val, W->val, y->val);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, G, D, 1.0f, x->val, D, W->val,
                    G, 1.0f, y->val, G);
    }
    if (record) {
        *k = (lin_ctx){x, W, b, y, xt, scratch, B, D, G, slabs};
        if (sp_tape_record(t, lin_backward, k)) return NULL;
    }
    return y;
}

sp_tensor *sp_supair_linear(sp_tape *t, const sp_tensor *x, const sp_tensor *W, const sp_tensor *b) {
    return linear(t, x, W, b, 0);
}

sp_tensor *sp_supair_linear_slabs(sp_tape *t, const sp_tensor *x, const sp_tensor *W,
                                  const sp_tensor *b) {
    return linear(t, x, W, b, 1);
}

/* ------------------------------------------------------------------ head */

#define HEAD_OUT 9

typedef struct head_ctx {
    const sp_tensor *h, *W1, *b1, *W2, *b2;
    sp_tensor *z;
    float *a;    // (B, A) hidden sigmoid activations
    float *so;   // (B, 9) sigmoid of the head outputs o
    float *eps;  // (B, 4) the noise (zeros when none)
    float *dO;   // (B, 9) scratch: gradient w.r.t. o
    float *dpre; // (B, A) scratch: gradient w.r.t. the hidden pre-activations
    sp_supair_bounds bd;
    int B, H, A;
} head_ctx;

/* Rows [r0, r1) of the calling thread in a team over B rows. */
static void thread_rows(int B, int *r0, int *r1) {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *r0 = (int)((long)B * t / nt);
    *r1 = (int)((long)B * (t + 1) / nt);
}

/* The head's gradients w.r.t. o of rows [r0, r1): dO = dz/do. */
static void head_dO_rows(const head_ctx *k, int r0, int r1) {
    const sp_supair_bounds *bd = &k->bd;
    const float *dz = k->z->grad;
    const float ds = bd->scale_max - bd->scale_min, dr = bd->ratio_max - bd->ratio_min;
    for (int i = r0; i < r1; i++) {
        const float *s = k->so + (size_t)i * HEAD_OUT, *e = k->eps + (size_t)i * 4;
        const float *g = dz + (size_t)i * SP_SUPAIR_ZW;
        float *d = k->dO + (size_t)i * HEAD_OUT;
        float sxm = bd->scale_min + ds * s[1], r = bd->ratio_min + dr * s[2];
        d[0] = g[0] * s[0] * (1.0f - s[0]);
        // sy's mean is sx_mean * r
        float dsxm = g[1] + g[2] * r, drr = g[2] * sxm;
        d[1] = dsxm * ds * s[1] * (1.0f - s[1]);
        d[2] = drr * dr * s[2] * (1.0f - s[2]);
        d[3] = g[3] * bd->pos_max * s[3] * (1.0f - s[3]);
        d[4] = g[4] * bd->pos_max * s[4] * (1.0f - s[4]);
        for (int j = 0; j < 4; j++) {
            float sj = s[5 + j], sd = bd->std_max * sj;
            // z_j = mu_j + std_j eps_j;  log q = sum_j -eps_j^2/2 - log std_j - log(2 pi)/2
            float dstd = g[1 + j] * e[j] - g[5] / sd;
            d[5 + j] = dstd * bd->std_max * sj * (1.0f - sj);
        }
    }
}

static void head_backward(void *p) {
    head_ctx *k = p;
    const int B = k->B, H = k->H, A = k->A;
    /* Row-local work in one parallel region, each thread on a block of rows
     * (the products single-threaded inside it); the weight and bias
     * gradients sum over all rows afterwards. */
#pragma omp parallel if ((long)B * H >= SUPAIR_OMP_MIN)
    {
        int r0, r1;
        thread_rows(B, &r0, &r1);
        if (r1 > r0) {
            const int n = r1 - r0;
            float *dpre = k->dpre + (size_t)r0 * A;
            const float *act = k->a + (size_t)r0 * A;
            head_dO_rows(k, r0, r1);
            // dpre (rows, A) = (dO W2^T) * a (1 - a)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, A, HEAD_OUT, 1.0f,
                        k->dO + (size_t)r0 * HEAD_OUT, HEAD_OUT, k->W2->val, HEAD_OUT, 0.0f,
                        dpre, A);
            for (long e = 0; e < (long)n * A; e++) dpre[e] *= act[e] * (1.0f - act[e]);
            if (sp_needs_grad(k->h))  // dh (rows, H) += dpre W1^T
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, A, 1.0f, dpre, A,
                            k->W1->val, A, 1.0f, k->h->grad + (size_t)r0 * H, H);
        }
    }
    if (sp_needs_grad(k->W2))  // dW2 (A,9) += a^T dO
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, A, HEAD_OUT, B, 1.0f, k->a, A, k->dO,
                    HEAD_OUT, 1.0f, k->W2->grad, HEAD_OUT);
    if (sp_needs_grad(k->b2))
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HEAD_OUT; j++) k->b2->grad[j] += k->dO[(size_t)i * HEAD_OUT + j];
    if (sp_needs_grad(k->W1))  // dW1 (H,A) += h^T dpre
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, A, B, 1.0f, k->h->val, H, k->dpre,
                    A, 1.0f, k->W1->grad, A);
    if (sp_needs_grad(k->b1))
        for (int i = 0; i < B; i++)
            for (int j = 0; j < A; j++) k->b1->grad[j] += k->dpre[(size_t)i * A + j];
}

sp_tensor *sp_supair_head(sp_tape *t, const sp_tensor *h, const sp_tensor *W1, const sp_tensor *b1,
                          const sp_tensor *W2, const sp_tensor *b2, const float *eps,
                          const sp_supair_bounds *bd) {
    if (!h || !W1 || !b1 || !W2 || !b2) return NULL;
    if (!shape2(h, -1, -1) || !shape2(W1, h->shape[1], -1) || b1->size != W1->shape[1] ||
        !shape2(W2, W1->shape[1], HEAD_OUT) || b2->size != HEAD_OUT) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int B = h->shape[0], H = h->shape[1], A = W1->shape[1];
    const int rg = sp_needs_grad(h) || sp_needs_grad(W1) || sp_needs_grad(b1) ||
                   sp_needs_grad(W2) || sp_needs_grad(b2);
    sp_tensor *z = sp_tensor_2d(t, B, SP_SUPAIR_ZW, rg);
    float *a = sp_tape_alloc(t, (size_t)B * A * sizeof(float));
    float *so = sp_tape_alloc(t, (size_t)B * HEAD_OUT * sizeof(float));
    float *ep = sp_tape_calloc(t, (size_t)B * 4 * sizeof(float));
    if (!z || !a || !so || !ep) return NULL;
    if (eps) memcpy(ep, eps, (size_t)B * 4 * sizeof(float));

    const float ds = bd->scale_max - bd->scale_min, dr = bd->ratio_max - bd->ratio_min;
    const float half_log_2pi = 0.91893853320467274178f;
    /* Every step of the head is row-local: one parallel region, each thread
     * on a block of rows (its products single-threaded inside it). */
#pragma omp parallel if ((long)B * H >= SUPAIR_OMP_MIN)
    {
        int r0, r1;
        thread_rows(B, &r0, &r1);
        const int n = r1 - r0;
        float *ar = a + (size_t)r0 * A, *sr = so + (size_t)r0 * HEAD_OUT;
        for (int i = 0; i < n; i++) memcpy(ar + (size_t)i * A, b1->val, (size_t)A * sizeof(float));
        if (n > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, A, H, 1.0f,
                        h->val + (size_t)r0 * H, H, W1->val, A, 1.0f, ar, A);
        for (long e = 0; e < (long)n * A; e++) ar[e] = sigm(ar[e]);
        for (int i = 0; i < n; i++)
            memcpy(sr + (size_t)i * HEAD_OUT, b2->val, HEAD_OUT * sizeof(float));
        if (n > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, HEAD_OUT, A, 1.0f, ar, A,
                        W2->val, HEAD_OUT, 1.0f, sr, HEAD_OUT);
        for (int i = r0; i < r1; i++) {
            float *s = so + (size_t)i * HEAD_OUT, *zr = z->val + (size_t)i * SP_SUPAIR_ZW;
            const float *e = ep + (size_t)i * 4;
            for (int j = 0; j < HEAD_OUT; j++) s[j] = sigm(s[j]);
            float sxm = bd->scale_min + ds * s[1];
            float r = bd->ratio_min + dr * s[2];
            float mu[4] = {sxm, sxm * r, bd->pos_max * s[3], bd->pos_max * s[4]};
            float lq = 0.0f;
            zr[0] = s[0];
            for (int j = 0; j < 4; j++) {
                float sd = bd->std_max * s[5 + j];
                zr[1 + j] = mu[j] + sd * e[j];
                lq += -0.5f * e[j] * e[j] - logf(sd) - half_log_2pi;
            }
            zr[5] = lq;
        }
    }

    if (rg && sp_tape_grad_enabled(t)) {
        head_ctx *k = sp_tape_alloc(t, sizeof *k);
        float *dO = sp_tape_alloc(t, (size_t)B * HEAD_OUT * sizeof(float));
        float *dpre = sp_tape_alloc(t, (size_t)B * A * sizeof(float));
        if (!k || !dO || !dpre) return NULL;
        *k = (head_ctx){h, W1, b1, W2, b2, z, a, so, ep, dO, dpre, *bd, B, H, A};
        if (sp_tape_record(t, head_backward, k)) return NULL;
    }
    return z;
}

/* ----------------------------------------------------------------- theta */

typedef struct theta_ctx {
    sp_tensor *z[8];
    sp_tensor *th;
    int K, B;
} theta_ctx;

static void theta_backward(void *p) {
    theta_ctx *k = p;
    for (int s = 0; s < k->K; s++) {
        if (!sp_needs_grad(k->z[s])) continue;
        for (int b = 0; b < k->B; b++) {
            const float *g = k->th->grad + ((size_t)b * k->K + s) * 6;
            float *dz = k->z[s]->grad + (size_t)b * SP_SUPAIR_ZW;
            dz[1] += g[0], dz[2] += g[4], dz[3] += g[2], dz[4] += g[5];
        }
    }
}

sp_tensor *sp_supair_theta(sp_tape *t, sp_tensor *const *z, int K, float shift) {
    if (K < 1 || K > 8) {
        sp_tape_set_failed(t);
        return NULL;
    }
    int rg = 0;
    for (int s = 0; s < K; s++) {
        if (!z[s]) return NULL;
        if (!shape2(z[s], z[0]->shape[0], SP_SUPAIR_ZW)) {
            sp_tape_set_failed(t);
            return NULL;
        }
        rg |= sp_needs_grad(z[s]);
    }
    const int B = z[0]->shape[0];
    sp_tensor *th = sp_tensor_2d(t, B * K, 6, rg);
    if (!th) return NULL;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < K; s++) {
            const float *zr = z[s]->val + (size_t)b * SP_SUPAIR_ZW;
            float *o = th->val + ((size_t)b * K + s) * 6;
            o[0] = zr[1], o[1] = 0.0f, o[2] = zr[3] + shift;
            o[3] = 0.0f, o[4] = zr[2], o[5] = zr[4] + shift;
        }
    if (rg && sp_tape_grad_enabled(t)) {
        theta_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        memset(k, 0, sizeof *k);
        for (int s = 0; s < K; s++) k->z[s] = z[s];
        k->th = th, k->K = K, k->B = B;
        if (sp_tape_record(t, theta_backward, k)) return NULL;
    }
    return th;
}

/* ------------------------------------------------------------- occlusion */

typedef struct occ_ctx {
    const sp_tensor *raw;
    sp_tensor *pad;
    int B, K, H, W;
} occ_ctx;

static inline float clip01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* Largest scene the per-thread stack buffers of the occlusion ops hold. */
#define OCC_MAX_PX 16384

/* bg *= 1 - clip(raw, 0, 1) over n pixels (AVX2 where available). */
static void occ_scale(float *restrict bg, const float *restrict raw, int n) {
    int q = 0;
#if defined(__AVX2__)
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (; q + 8 <= n; q += 8) {
        /* operands in this order pass a NaN through, as clip01 does */
        __m256 s = _mm256_min_ps(one, _mm256_max_ps(zero, _mm256_loadu_ps(raw + q)));
        _mm256_storeu_ps(bg + q, _mm256_mul_ps(_mm256_loadu_ps(bg + q), _mm256_sub_ps(one, s)));
    }
#endif
    for (; q < n; q++) bg[q] *= 1.0f - clip01(raw[q]);
}

/* One row of occ_backward: dr -= g bg where 0 <= raw <= 1 (clip_by_value's
 * gradient passes on the closed interval), then g = g (1 - clip(raw)) +
 * dpad; dr and dpad may be NULL. AVX2 where available: the scalar selects
 * do not vectorise. */
static void occ_row_backward(float *restrict dr, float *restrict g, const float *restrict raw,
                             const float *restrict bg, const float *restrict dpad, int W) {
    int x = 0;
#if defined(__AVX2__)
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (; x + 8 <= W; x += 8) {
        __m256 r = _mm256_loadu_ps(raw + x), gv = _mm256_loadu_ps(g + x);
        if (dr) {
            __m256 inside = _mm256_and_ps(_mm256_cmp_ps(r, zero, _CMP_GE_OQ),
                                          _mm256_cmp_ps(r, one, _CMP_LE_OQ));
            __m256 d = _mm256_and_ps(inside, _mm256_mul_ps(gv, _mm256_loadu_ps(bg + x)));
            _mm256_storeu_ps(dr + x, _mm256_sub_ps(_mm256_loadu_ps(dr + x), d));
        }
        /* operands in this order pass a NaN through, as clip01 does */
        __m256 s = _mm256_min_ps(one, _mm256_max_ps(zero, r));
        __m256 ng = _mm256_mul_ps(gv, _mm256_sub_ps(one, s));
        if (dpad) ng = _mm256_add_ps(ng, _mm256_loadu_ps(dpad + x));
        _mm256_storeu_ps(g + x, ng);
    }
#endif
    for (; x < W; x++) {
        float r = raw[x];
        if (dr && r >= 0.0f && r <= 1.0f) dr[x] -= g[x] * bg[x];
        g[x] = g[x] * (1.0f - clip01(r)) + (dpad ? dpad[x] : 0.0f);
    }
}

static void occ_backward(void *p) {
    occ_ctx *k = p;
    const int B = k->B, K = k->K, H = k->H, W = k->W, HW = H * W, PW = W + 2;
    const long PHW = (long)(H + 2) * PW;
    const float *dpad = k->pad->grad;
    float *draw = k->raw->grad;
#pragma omp parallel for schedule(static) if ((long)B * K * HW >= SUPAIR_OMP_MIN)
    for (int b = 0; b < B; b++) {
        // g = dL/dbg_{i+1} over the scene, walked from the last map back to
        // bg_0; bg_K feeds nothing here (the background SPN takes the raw
        // maps itself), so g starts at 0 and raw_{K-1} gets nothing
        float g[OCC_MAX_PX];
        for (int q = 0; q < HW; q++) g[q] = 0.0f;
        for (int i = K - 1; i >= 0; i--) {
            const size_t bi = (size_t)b * K + i;
            const float *rv = k->raw->val + bi * HW;
            float *dr = draw && i < K - 1 ? draw + bi * HW : NULL;
            const float *pv = k->pad->val + bi * PHW, *pg = dpad ? dpad + bi * PHW : NULL;
            for (int y = 0; y < H; y++) {
                const long po = (long)(y + 1) * PW + 1;
                float *restrict gy = g + y * W;
                occ_row_backward(dr ? dr + y * W : NULL, gy, rv + y * W, pv + po,
                                 pg ? pg + po : NULL, W);
            }
        }
    }
}

int sp_supair_occlusion(sp_tape *t, const sp_tensor *raw, int K, sp_tensor **bg_pad) {
    *bg_pad = NULL;
    if (!raw) return SP_ERUNTIME;
    if (raw->ndim != 3 || K < 1 || raw->shape[0] % K != 0 ||
        (long)raw->shape[1] * raw->shape[2] > OCC_MAX_PX) {
        sp_tape_set_failed(t);
        return SP_EINPUT;
    }
    const int B = raw->shape[0] / K, H = raw->shape[1], W = raw->shape[2], HW = H * W;
    const int PW = W + 2;
    const long PHW = (long)(H + 2) * PW;
    const int rg = sp_needs_grad(raw);
    sp_tensor *pad = sp_tensor_3d(t, B * K, H + 2, PW, rg);
    if (!pad) return SP_ERUNTIME;
#pragma omp parallel for schedule(static) if ((long)B * K * HW >= SUPAIR_OMP_MIN)
    for (int b = 0; b < B; b++) {
        float bg[OCC_MAX_PX];
        for (int q = 0; q < HW; q++) bg[q] = 1.0f;
        for (int i = 0; i < K; i++) {
            const size_t bi = (size_t)b * K + i;
            float *pv = pad->val + bi * PHW;
            const float *rv = raw->val + bi * HW;
            memset(pv, 0, (size_t)PW * sizeof(float));
            memset(pv + (long)(H + 1) * PW, 0, (size_t)PW * sizeof(float));
            for (int y = 0; y < H; y++) {
                float *row = pv + (long)(y + 1) * PW;
                row[0] = row[W + 1] = 0.0f;
                memcpy(row + 1, bg + y * W, (size_t)W * sizeof(float));
            }
            if (i + 1 < K) occ_scale(bg, rv, HW); /* bg_K is not needed */
        }
    }
    if (rg && sp_tape_grad_enabled(t)) {
        occ_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return SP_ERUNTIME;
        *k = (occ_ctx){raw, pad, B, K, H, W};
        if (sp_tape_record(t, occ_backward, k)) return SP_ERUNTIME;
    }
    *bg_pad = pad;
    return SP_OK;
}

/* ------------------------------------------------------------- one minus */

typedef struct om_ctx {
    const sp_tensor *x;
    sp_tensor *y;
} om_ctx;

/* Element-wise passes over B*K glimpses use a team from this many floats. */
#define EW_OMP_MIN (1L << 16)

static void om_backward(void *p) {
    om_ctx *k = p;
    float *restrict gx = k->x->grad;
    const float *restrict gy = k->y->grad;
    const long n = k->x->size;
#pragma omp parallel for simd schedule(static) if (n >= EW_OMP_MIN)
    for (long e = 0; e < n; e++) gx[e] -= gy[e];
}

sp_tensor *sp_supair_one_minus(sp_tape *t, const sp_tensor *x) {
    if (!x) return NULL;
    const int rg = sp_needs_grad(x);
    sp_tensor *y = sp_tensor_new(t, x->ndim, x->shape, rg);
    if (!y) return NULL;
    float *restrict yv = y->val;
    const float *restrict xv = x->val;
    const long n = x->size;
#pragma omp parallel for simd schedule(static) if (n >= EW_OMP_MIN)
    for (long e = 0; e < n; e++) yv[e] = 1.0f - xv[e];
    if (rg && sp_tape_grad_enabled(t)) {
        om_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        *k = (om_ctx){x, y};
        if (sp_tape_record(t, om_backward, k)) return NULL;
    }
    return y;
}

/* ------------------------------------------------------------------ ELBO */

#define ELBO_KMAX 8

typedef struct elbo_ctx {
    sp_tensor *z[ELBO_KMAX];
    const sp_tensor *lpo, *vis, *lpb;
    sp_tensor *loss;
    double *ov;  // (B*K) overlap ratios
    sp_supair_prior pr;
    int B, K, P;
} elbo_ctx;

/* Everything per scene that both passes need, in double: the count
 * posterior q(k) and log p(x, z | n=k). */
typedef struct scene_terms {
    double rho[ELBO_KMAX], sx[ELBO_KMAX], sy[ELBO_KMAX], lpo[ELBO_KMAX], lpov[ELBO_KMAX];
    double q[ELBO_KMAX + 1], pxz[ELBO_KMAX + 1], lq;
} scene_terms;

static double scene_eval(const elbo_ctx *k, int b, scene_terms *st) {
    const int K = k->K;
    const double log_cp = log((double)k->pr.count_p), log_rate = log((double)k->pr.overlap_rate);
    st->lq = 0.0;
    for (int i = 0; i < K; i++) {
        const float *zr = k->z[i]->val + (size_t)b * SP_SUPAIR_ZW;
        st->rho[i] = zr[0], st->sx[i] = zr[1], st->sy[i] = zr[2];
        st->lq += zr[5];
        st->lpo[i] = k->lpo->val[(size_t)b * K + i];
        st->lpov[i] = log_rate - (double)k->pr.overlap_rate * k->ov[(size_t)b * K + i];
    }
    double P = 1.0, cum = 0.0;
    for (int n = 0; n <= K; n++) {
        st->q[n] = n < K ? P * (1.0 - st->rho[n]) : P;
        st->pxz[n] = cum + k->lpb->val[(size_t)b * (K + 1) + n] + log_cp -
                     (double)k->pr.count_p * n;
        if (n < K) {
            P *= st->rho[n];
            cum += st->sx[n] * st->sy[n] * st->lpo[n] + st->lpov[n];
        }
    }
    double e = 0.0;
    for (int n = 0; n <= K; n++) e += st->q[n] * (st->pxz[n] - log(st->q[n] + 1e-37) - st->lq);
    return e;
}

static void elbo_backward(void *p) {
    elbo_ctx *k = p;
    const int K = k->K, P = k->P;
    const double dE = -(double)k->loss->grad[0];
    /* Each scene writes only its own rows of every gradient. */
#pragma omp parallel for schedule(static) if (k->B >= 64)
    for (int b = 0; b < k->B; b++) {
        scene_terms st;
        scene_eval(k, b, &st);
        double dq[ELBO_KMAX + 1], dpxz[ELBO_KMAX + 1], sumq = 0.0;
        for (int n = 0; n <= K; n++) {
            dpxz[n] = st.q[n] * dE;
            dq[n] = (st.pxz[n] - log(st.q[n] + 1e-37) - st.q[n] / (st.q[n] + 1e-37) - st.lq) * dE;
            sumq += st.q[n];
        }
        for (int j = 0; j < K; j++) {
            // q_n = prod_{i<n} rho_i (1 - rho_n) (n < K), q_K = prod_{i<K} rho_i
            double drho = 0.0;
            for (int n = j; n <= K; n++) {
                double d;
                if (n == j) {
                    d = -1.0;
                    for (int i = 0; i < n; i++) d *= st.rho[i];
                } else {
                    d = n < K ? 1.0 - st.rho[n] : 1.0;
                    for (int i = 0; i < n; i++)
                        if (i != j) d *= st.rho[i];
                }
                drho += dq[n] * d;
            }
            double dcum = 0.0;  // object j enters log p(x,z|n) for every n > j
            for (int n = j + 1; n <= K; n++) dcum += dpxz[n];
            sp_tensor *zt = k->z[j];
            if (sp_needs_grad(zt)) {
                float *g = zt->grad + (size_t)b * SP_SUPAIR_ZW;
                g[0] += (float)drho;
                g[1] += (float)(dcum * st.sy[j] * st.lpo[j]);
                g[2] += (float)(dcum * st.sx[j] * st.lpo[j]);
                g[5] += (float)(-sumq * dE);
            }
            if (sp_needs_grad(k->lpo))
                k->lpo->grad[(size_t)b * K + j] += (float)(dcum * st.sx[j] * st.sy[j]);
            if (sp_needs_grad(k->vis)) {
                // ratio = 1 - mean(vis): d/dvis = -1/P; d lpov / d ratio = -rate
                float gv = (float)(dcum * (double)k->pr.overlap_rate / P);
                float *gr = k->vis->grad + ((size_t)b * K + j) * P;
                for (int q = 0; q < P; q++) gr[q] += gv;
            }
        }
        if (sp_needs_grad(k->lpb))
            for (int n = 0; n <= K; n++) k->lpb->grad[(size_t)b * (K + 1) + n] += (float)dpxz[n];
    }
}

sp_tensor *sp_supair_elbo(sp_tape *t, sp_tensor *const *z, int K, const sp_tensor *logp_obj,
                          const sp_tensor *vis, const sp_tensor *logp_bg,
                          const sp_supair_prior *pr, double *elbo_out, double *count_out) {
    if (K < 1 || K > ELBO_KMAX) {
        sp_tape_set_failed(t);
        return NULL;
    }
    if (!logp_obj || !vis || !logp_bg) return NULL;
    int rg = sp_needs_grad(logp_obj) || sp_needs_grad(vis) || sp_needs_grad(logp_bg);
    for (int s = 0; s < K; s++) {
        if (!z[s]) return NULL;
        rg |= sp_needs_grad(z[s]);
    }
    const int B = z[0]->shape[0];
    const int P = vis->ndim >= 2 ? (int)(vis->size / vis->shape[0]) : 0;
    int ok = vis->ndim >= 2 && vis->shape[0] == B * K && P > 0 && logp_obj->size == (long)B * K &&
             logp_bg->size == (long)B * (K + 1);
    for (int s = 0; s < K; s++) ok = ok && shape2(z[s], B, SP_SUPAIR_ZW);
    if (!ok) {
        sp_tape_set_failed(t);
        return NULL;
    }
    sp_tensor *loss = sp_tensor_1d(t, 1, rg);
    elbo_ctx *k = sp_tape_alloc(t, sizeof *k);
    double *ov = sp_tape_alloc(t, (size_t)B * K * sizeof(double));
    if (!loss || !k || !ov) return NULL;
    memset(k, 0, sizeof *k);
    for (int s = 0; s < K; s++) k->z[s] = z[s];
    k->lpo = logp_obj, k->vis = vis, k->lpb = logp_bg, k->loss = loss, k->ov = ov;
    k->pr = *pr, k->B = B, k->K = K, k->P = P;
    double *es = sp_tape_alloc(t, (size_t)B * sizeof(double));
    if (!es) return NULL;
#pragma omp parallel for schedule(static) if ((long)B * K * P >= EW_OMP_MIN)
    for (long r = 0; r < (long)B * K; r++) {
        const float *v = vis->val + r * P;
        double s = 0.0;
        for (int q = 0; q < P; q++) s += v[q];
        ov[r] = 1.0 - s / P;
    }
#pragma omp parallel for schedule(static) if (B >= 64)
    for (int b = 0; b < B; b++) {
        scene_terms st;
        es[b] = scene_eval(k, b, &st);
        if (count_out) {
            double c = 0.0;
            for (int n = 1; n <= K; n++) c += n * st.q[n];
            count_out[b] = c;
        }
    }
    double total = 0.0; /* in scene order, whatever the threads */
    for (int b = 0; b < B; b++) {
        total += es[b];
        if (elbo_out) elbo_out[b] = es[b];
    }
    loss->val[0] = (float)(-total);
    if (rg && sp_tape_grad_enabled(t))
        if (sp_tape_record(t, elbo_backward, k)) return NULL;
    return loss;
}

/* ------------------------------------------------------------ evaluation */

double sp_supair_box_iou(const float *a, const float *b) {
    double ax0 = a[0], ay0 = a[1], ax1 = a[0] + a[2], ay1 = a[1] + a[3];
    double bx0 = b[0], by0 = b[1], bx1 = b[0] + b[2], by1 = b[1] + b[3];
    double ix = fmin(ax1, bx1) - fmax(ax0, bx0) + 1.0, iy = fmin(ay1, by1) - fmax(ay0, by0) + 1.0;
    double inter = (ix > 0.0 ? ix : 0.0) * (iy > 0.0 ? iy : 0.0);
    double area_a = (ax1 - ax0 + 1.0) * (ay1 - ay0 + 1.0);
    double area_b = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0);
    double uni = area_a + area_b - inter;
    return uni > 0.0 ? inter / uni : 0.0;
}

double sp_supair_scene_iou(int n_pred, int n_true, const float *pred, const float *truth,
                           float pad) {
    int matched[64] = {0};
    if (n_true > 64) n_true = 64;
    int n = n_pred < n_true ? n_pred : n_true;
    double score = 0.0;
    for (int j = 0; j < n; j++) {
        const float *pj = pred + (size_t)j * 4;
        float pb[4] = {pj[0] - pad, pj[1] - pad, pj[2] + 2.0f * pad, pj[3] + 2.0f * pad};
        double best = -1.0;
        int best_k = -1;
        for (int q = 0; q < n_true; q++) {
            if (matched[q]) continue;
            double v = sp_supair_box_iou(pb, truth + (size_t)q * 4);
            if (v > best) best = v, best_k = q;
        }
        if (best_k >= 0) {
            score += best;
            matched[best_k] = 1;
        }
    }
    return score;
}
