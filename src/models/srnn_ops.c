/* SRNN's fused tape ops (srnn.h): the whole GRU over a chunk, the whole
 * sequential stochastic layer over a chunk, and the emission's Gaussian
 * log-density. Each is ONE tape node: the sequential part does only what
 * must be sequential (the small per-step products), and every weight
 * gradient is one sgemm over all T*B rows at the end of the backward, which
 * runs far closer to the BLAS peak than T products of B rows each.
 *
 * Elementwise loops run on OpenMP threads over COLUMN blocks (each thread
 * owns some units of every row), so the bias gradients, which sum over rows,
 * are still summed in one fixed order: results do not depend on the thread
 * count. */
/* Comparisons (the clamps in fast_expf, f's clip) may then be if-converted,
 * which lets the gate loops vectorise; nothing here relies on FP traps. */
#pragma GCC optimize("no-trapping-math")

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "supair/srnn.h"

#define COLS_PER_BLOCK 64
/* Below this many elements per step the loops stay on one thread. */
#define SRNN_OMP_MIN 16384L

/* exp without a libm call, so the GRU's gate loops vectorise (8 lanes):
 * Cody-Waite reduction x = n ln2 + r and a degree-6 polynomial (Cephes
 * expf), within 1e-7 relative of exp on [-87, 88]; inputs are clamped there,
 * so the 2^n scaling stays a normal float. */
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // n = round(x / ln2) by the 1.5 * 2^23 trick; its low mantissa bits are n
    const float magic = 12582912.0f;
    float tn = x * 1.44269504088896341f + magic, n = tn - magic;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t ti, mi, e;
    float sc;
    memcpy(&ti, &tn, sizeof ti);
    memcpy(&mi, &magic, sizeof mi);
    e = (ti - mi + 127) * (1 << 23);
    memcpy(&sc, &e, sizeof sc);
    return y * sc;
}
static inline float sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }
/* 1 - 2 / (e^2x + 1): absolute error ~1e-7 (what a GRU state cares about). */
static inline float fast_tanhf(float x) { return 1.0f - 2.0f / (fast_expf(2.0f * x) + 1.0f); }

/* C (M, N) = alpha op(A) op(B) + beta C with explicit leading dimensions. */
static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta == 0.0f)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static int shape_is(const sp_tensor *x, int ndim, int d0, int d1, int d2) {
    if (!x || x->ndim != ndim) return 0;
    if (x->shape[0] != d0 || x->shape[1] != d1) return 0;
    return ndim < 3 || x->shape[2] == d2;
}

/* ================================================================ GRU */

typedef struct gruseq_ctx {
    const sp_tensor *xproj, *h0, *W_h, *b;
    sp_tensor *out;
    float *act; // (T, B, 3H) activated gates [r, u, c]
    float *hc;  // (T, B, H) h W_hc, the part r scales
    int T, B, H, rev;
    float *dg_buf;    // (T, B, 3H) backward scratch
    float *carry_buf; // (B, H) backward scratch
    const float *zeros; // (B, H) the zero state when h0 is NULL
} gruseq_ctx;

/* Time index of processing step s, and the state that step starts from. */
static inline int gru_t(const gruseq_ctx *k, int s) { return k->rev ? k->T - 1 - s : s; }
static const float *gru_hprev(const gruseq_ctx *k, const float *out, int s) {
    if (s == 0) return k->h0 ? k->h0->val : NULL;
    int tp = k->rev ? k->T - s : s - 1;
    return out + (size_t)tp * k->B * k->H;
}

static void gruseq_backward(void *p) {
    gruseq_ctx *k = p;
    const int T = k->T, B = k->B, H = k->H, G = 3 * H;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;
    const int nblk = (H + COLS_PER_BLOCK - 1) / COLS_PER_BLOCK;
    const float *dout = k->out->grad, *outv = k->out->val;
    float *dx = sp_needs_grad(k->xproj) ? k->xproj->grad : NULL;
    float *db = sp_needs_grad(k->b) ? k->b->grad : NULL;
    // dg (T, B, 3H) = d[pre_r, pre_u, h W_hc]; carry (B, H) = dL/dh_prev
    float *dg = k->dg_buf, *carry = k->carry_buf;
    memset(carry, 0, BH * sizeof(float));
    for (int s = T - 1; s >= 0; s--) {
        const int t = gru_t(k, s);
        const float *hp = gru_hprev(k, outv, s);
        const float *a = k->act + (size_t)t * BG, *hc = k->hc + (size_t)t * BH;
        const float *dO = dout + (size_t)t * BH;
        float *g = dg + (size_t)t * BG;
        float *dxt = dx ? dx + (size_t)t * BG : NULL;
#pragma omp parallel for schedule(static) if ((long)BG >= SRNN_OMP_MIN)
        for (int blk = 0; blk < nblk; blk++) {
            const int n0 = blk * COLS_PER_BLOCK;
            const int n1 = n0 + COLS_PER_BLOCK < H ? n0 + COLS_PER_BLOCK : H;
            for (int bi = 0; bi < B; bi++) {
                const float *ar = a + (size_t)bi * G, *hcr = hc + (size_t)bi * H;
                const float *hr = (hp ? hp : k->zeros) + (size_t)bi * H;
                const float *dOr = dO + (size_t)bi * H;
                float *gr = g + (size_t)bi * G, *cr = carry + (size_t)bi * H;
                // branch-free loops, so each vectorises
                for (int n = n0; n < n1; n++) {
                    float r = ar[n], u = ar[H + n], c = ar[2 * H + n];
                    float d = dOr[n] + cr[n];
                    float dpc = d * u * (1.0f - c * c);
                    gr[n] = dpc * hcr[n] * r * (1.0f - r);
                    gr[H + n] = d * (c - hr[n]) * u * (1.0f - u);
                    gr[2 * H + n] = dpc;
                    cr[n] = d * (1.0f - u);
                }
                if (dxt) {
                    float *xr = dxt + (size_t)bi * G;
                    for (int q = 0; q < 3; q++)
                        for (int n = n0; n < n1; n++) xr[q * H + n] += gr[q * H + n];
                }
                if (db)
                    for (int q = 0; q < 3; q++)
                        for (int n = n0; n < n1; n++) db[q * H + n] += gr[q * H + n];
                // the recurrent product sees d(h W_hc) = d pre_c * r
                for (int n = n0; n < n1; n++) gr[2 * H + n] *= ar[n];
            }
        }
        // carry += dg W_h^T: the only sequential product of the backward
        if (hp) gemm(0, 1, B, H, G, 1.0f, g, G, k->W_h->val, G, 1.0f, carry, H);
    }
    if (k->h0 && sp_needs_grad(k->h0)) {
        float *dh0 = k->h0->grad;
        for (size_t i = 0; i < BH; i++) dh0[i] += carry[i];
    }
    if (sp_needs_grad(k->W_h)) {
        float *dW = k->W_h->grad;
        // steps 1..T-1 start from outputs that are contiguous in time order
        if (T > 1) {
            const float *hs = k->rev ? outv + BH : outv;
            const float *gs = k->rev ? dg : dg + BG;
            gemm(1, 0, H, G, (T - 1) * B, 1.0f, hs, H, gs, G, 1.0f, dW, G);
        }
        if (k->h0) gemm(1, 0, H, G, B, 1.0f, k->h0->val, H, dg + (size_t)gru_t(k, 0) * BG, G, 1.0f,
                        dW, G);
    }
}

sp_tensor *sp_srnn_gru_seq(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h0,
                           const sp_tensor *W_h, const sp_tensor *b, int reverse) {
    return sp_srnn_gru_seq_len(t, xproj, h0, W_h, b, reverse, NULL);
}

sp_tensor *sp_srnn_gru_seq_len(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h0,
                               const sp_tensor *W_h, const sp_tensor *b, int reverse,
                               const int *len) {
    if (!xproj || !W_h || !b || xproj->ndim != 3 || W_h->ndim != 2) goto bad;
    const int T = xproj->shape[0], B = xproj->shape[1], G = xproj->shape[2], H = G / 3;
    if (G % 3 || !shape_is(W_h, 2, H, G, 0) || b->size != G) goto bad;
    if (h0 && !shape_is(h0, 2, B, H, 0)) goto bad;
    const size_t BH = (size_t)B * H, BG = (size_t)B * G;
    const int nblk = (H + COLS_PER_BLOCK - 1) / COLS_PER_BLOCK;
    const int rg = sp_tape_grad_enabled(t) && (sp_needs_grad(xproj) || sp_needs_grad(b) ||
                                               sp_needs_grad(W_h) || sp_needs_grad(h0));
    sp_tensor *out = sp_tensor_3d(t, T, B, H, rg);
    float *act = sp_tape_alloc(t, (size_t)T * BG * sizeof(float));
    float *hc = sp_tape_alloc(t, (size_t)T * BH * sizeof(float));
    if (!out || !act || !hc) return NULL;
    // the zero state as memory, so the gate loops have no branch and vectorise
    const float *zeros = h0 ? NULL : sp_tape_calloc(t, BH * sizeof(float));
    if (!h0 && !zeros) return NULL;
    gruseq_ctx k0 = {xproj, h0, W_h, b, out, act, hc, T, B, H, reverse != 0, NULL, NULL, zeros};
    const float *bv = b->val;
    for (int s = 0; s < T; s++) {
        const int tt = gru_t(&k0, s);
        const float *hp = gru_hprev(&k0, out->val, s);
        float *a = act + (size_t)tt * BG, *hct = hc + (size_t)tt * BH;
        const float *x = xproj->val + (size_t)tt * BG;
        float *o = out->val + (size_t)tt * BH;
        if (hp) gemm(0, 0, B, G, H, 1.0f, hp, H, W_h->val, G, 0.0f, a, G);
        else memset(a, 0, BG * sizeof(float));
#pragma omp parallel for schedule(static) if ((long)BG >= SRNN_OMP_MIN)
        for (int blk = 0; blk < nblk; blk++) {
            const int n0 = blk * COLS_PER_BLOCK;
            const int n1 = n0 + COLS_PER_BLOCK < H ? n0 + COLS_PER_BLOCK : H;
            for (int bi = 0; bi < B; bi++) {
                float *ar = a + (size_t)bi * G;
                const float *xr = x + (size_t)bi * G;
                if (len && tt >= len[bi]) {
                    // past the sequence's end: u = 0 makes the step the identity,
                    // and the backward then passes dh through with zero gate grads
                    for (int n = n0; n < n1; n++) {
                        const size_t i = (size_t)bi * H + n;
                        o[i] = hp ? hp[i] : 0.0f;
                        hct[i] = 0.0f;
                        ar[n] = ar[H + n] = ar[2 * H + n] = 0.0f;
                    }
                    continue;
                }
                const float *hr = (hp ? hp : zeros) + (size_t)bi * H;
                float *orow = o + (size_t)bi * H, *hcr = hct + (size_t)bi * H;
#pragma omp simd
                for (int n = n0; n < n1; n++) {
                    float r = sigmoidf(xr[n] + ar[n] + bv[n]);
                    float u = sigmoidf(xr[H + n] + ar[H + n] + bv[H + n]);
                    float hcn = ar[2 * H + n];
                    float c = fast_tanhf(xr[2 * H + n] + r * hcn + bv[2 * H + n]);
                    float h = hr[n];
                    orow[n] = h + u * (c - h);
                    hcr[n] = hcn;
                    ar[n] = r, ar[H + n] = u, ar[2 * H + n] = c;
                }
            }
        }
    }
    if (!rg) return out;
    gruseq_ctx *k = sp_tape_alloc(t, sizeof *k);
    float *dg = sp_tape_alloc(t, (size_t)T * BG * sizeof(float));
    float *carry = sp_tape_alloc(t, BH * sizeof(float));
    if (!k || !dg || !carry) return NULL;
    *k = k0;
    k->dg_buf = dg, k->carry_buf = carry;
    if (sp_tape_record(t, gruseq_backward, k)) return NULL;
    return out;
bad:
    sp_tape_set_failed(t);
    return NULL;
}

/* ====================================================== stochastic layer */

/* f(v) = clip(max(v, v/3), -3, 3) and its slope read back from f(v): 1 on
 * [0, 3), 1/3 on (-3, 0), 0 where clipped. */
static inline float cleaky(float v) {
    float m = v >= 0.0f ? v : v * (1.0f / 3.0f);
    return m < -3.0f ? -3.0f : m > 3.0f ? 3.0f : m;
}
static inline float cleaky_slope(float h) {
    return (h >= 3.0f || h <= -3.0f) ? 0.0f : h >= 0.0f ? 1.0f : (1.0f / 3.0f);
}
/* log(exp(v) + fl) without overflow for large v. */
static inline float lv_floor_f(float v, float fl) {
    return v > 0.0f ? v + log1pf(fl * expf(-v)) : logf(expf(v) + fl);
}

typedef struct latent_ctx {
    const sp_tensor *pre_p, *pre_q, *z0, *W_z, *W2, *b2;
    const float *eps;
    sp_tensor *z, *kl;
    float *hid;   // (T, B, 4M) f(pre): the four MLPs' hidden layers
    float *stats; // (T, B, 4Z) [mu_p, lv_p, mu_q, lv_q] after floor and Resq
    int T, B, M, Z, resq;
    float fl;
    float *dS;    // (T, B, 4Z) backward scratch: d of the heads' raw outputs
    float *dP;    // (T, B, 4M) backward scratch: d of the first layers' pre-activations
    float *carry; // (B, Z) backward scratch: dL/dz_{t-1}
} latent_ctx;

static void latent_backward(void *p) {
    latent_ctx *k = p;
    const int T = k->T, B = k->B, M = k->M, Z = k->Z, M4 = 4 * M, Z4 = 4 * Z, M2 = 2 * M;
    const size_t BM4 = (size_t)B * M4, BZ4 = (size_t)B * Z4, BZ = (size_t)B * Z;
    const float fl = k->fl;
    const float *dzo = k->z->grad, *dklo = k->kl->grad;
    float *dpp = sp_needs_grad(k->pre_p) ? k->pre_p->grad : NULL;
    float *dpq = sp_needs_grad(k->pre_q) ? k->pre_q->grad : NULL;
    float *dS = k->dS, *dP = k->dP, *carry = k->carry;
    memset(carry, 0, BZ * sizeof(float));
    for (int t = T - 1; t >= 0; t--) {
        const float *st = k->stats + (size_t)t * BZ4, *e = k->eps + (size_t)t * BZ;
        float *ds = dS + (size_t)t * BZ4;
        for (int bi = 0; bi < B; bi++) {
            const float *sr = st + (size_t)bi * Z4;
            float *dr = ds + (size_t)bi * Z4;
            const float dkl = dklo ? dklo[(size_t)t * B + bi] : 0.0f;
            for (int j = 0; j < Z; j++) {
                const size_t i = (size_t)bi * Z + j;
                float mp = sr[j], lvp = sr[Z + j], mq = sr[2 * Z + j], lvq = sr[3 * Z + j];
                float dz = carry[i] + (dzo ? dzo[(size_t)t * BZ + i] : 0.0f);
                float ip = expf(-lvp), vq = expf(lvq), dm = mq - mp;
                float dmq = dz + dkl * dm * ip;
                float dlvq = dz * 0.5f * sqrtf(vq) * e[i] + dkl * 0.5f * (vq * ip - 1.0f);
                float dmp = -dkl * dm * ip + (k->resq ? dmq : 0.0f);
                float dlvp = dkl * 0.5f * (1.0f - (vq + dm * dm) * ip);
                // d lv_floored / d raw = exp(raw) / (exp(raw) + fl) = 1 - fl exp(-lv_floored)
                dr[j] = dmp;
                dr[Z + j] = dlvp * (1.0f - fl * ip);
                dr[2 * Z + j] = dmq;
                dr[3 * Z + j] = dlvq * (1.0f - fl / vq);
            }
        }
        // hidden layers: dh_k = dS_k W2_k^T, then through f
        float *dp = dP + (size_t)t * BM4;
        for (int q = 0; q < 4; q++)
            gemm(0, 1, B, M, Z, 1.0f, ds + (size_t)q * Z, Z4, k->W2->val + (size_t)q * M * Z, Z,
                 0.0f, dp + (size_t)q * M, M4);
        const float *h = k->hid + (size_t)t * BM4;
        for (size_t i = 0; i < BM4; i++) dp[i] *= cleaky_slope(h[i]);
        for (int bi = 0; bi < B; bi++) {
            const float *dr = dp + (size_t)bi * M4;
            if (dpp) {
                float *o = dpp + ((size_t)t * B + bi) * M2;
                for (int n = 0; n < M2; n++) o[n] += dr[n];
            }
            if (dpq) {
                float *o = dpq + ((size_t)t * B + bi) * M2;
                for (int n = 0; n < M2; n++) o[n] += dr[M2 + n];
            }
        }
        // dz_{t-1} = dpre W_z^T; needed before step 0 only for z0's gradient
        if (t > 0 || (k->z0 && sp_needs_grad(k->z0)))
            gemm(0, 1, B, Z, M4, 1.0f, dp, M4, k->W_z->val, M4, 0.0f, carry, Z);
    }
    if (k->z0 && sp_needs_grad(k->z0)) {
        float *g = k->z0->grad;
        for (size_t i = 0; i < BZ; i++) g[i] += carry[i];
    }
    if (sp_needs_grad(k->W_z)) {
        float *dW = k->W_z->grad;
        if (T > 1) gemm(1, 0, Z, M4, (T - 1) * B, 1.0f, k->z->val, Z, dP + BM4, M4, 1.0f, dW, M4);
        if (k->z0) gemm(1, 0, Z, M4, B, 1.0f, k->z0->val, Z, dP, M4, 1.0f, dW, M4);
    }
    if (sp_needs_grad(k->W2))
        for (int q = 0; q < 4; q++)
            gemm(1, 0, M, Z, T * B, 1.0f, k->hid + (size_t)q * M, M4, dS + (size_t)q * Z, Z4, 1.0f,
                 k->W2->grad + (size_t)q * M * Z, Z);
    if (sp_needs_grad(k->b2)) {
        float *g = k->b2->grad;
        for (long r = 0; r < (long)T * B; r++) {
            const float *d = dS + (size_t)r * Z4;
            for (int j = 0; j < Z4; j++) g[j] += d[j];
        }
    }
}

int sp_srnn_latent(sp_tape *t, const sp_tensor *pre_p, const sp_tensor *pre_q, const sp_tensor *z0,
                   const float *eps, const sp_srnn_latent_w *w, int resq, float lv_floor,
                   sp_tensor **z_out, sp_tensor **kl_out) {
    *z_out = NULL, *kl_out = NULL;
    if (!pre_p || !pre_q || !eps || !w || !w->W_z || !w->W2 || !w->b2 || pre_p->ndim != 3 ||
        w->W_z->ndim != 2)
        goto bad;
    const int T = pre_p->shape[0], B = pre_p->shape[1], M = pre_p->shape[2] / 2;
    const int Z = w->W_z->shape[0], M4 = 4 * M, Z4 = 4 * Z;
    if (pre_p->shape[2] != 2 * M || !shape_is(pre_q, 3, T, B, 2 * M) ||
        !shape_is(w->W_z, 2, Z, M4, 0) || !shape_is(w->W2, 3, 4, M, Z) ||
        !shape_is(w->b2, 2, 4, Z, 0) || (z0 && !shape_is(z0, 2, B, Z, 0)))
        goto bad;
    const size_t BM4 = (size_t)B * M4, BZ4 = (size_t)B * Z4, BZ = (size_t)B * Z;
    const int rg = sp_tape_grad_enabled(t) &&
                   (sp_needs_grad(pre_p) || sp_needs_grad(pre_q) || sp_needs_grad(z0) ||
                    sp_needs_grad(w->W_z) || sp_needs_grad(w->W2) || sp_needs_grad(w->b2));
    sp_tensor *z = sp_tensor_3d(t, T, B, Z, rg), *kl = sp_tensor_2d(t, T, B, rg);
    float *hid = sp_tape_alloc(t, (size_t)T * BM4 * sizeof(float));
    float *stats = sp_tape_alloc(t, (size_t)T * BZ4 * sizeof(float));
    if (!z || !kl || !hid || !stats) return SP_ERUNTIME;
    const float *W2 = w->W2->val, *b2 = w->b2->val;
    for (int tt = 0; tt < T; tt++) {
        const float *zp = tt ? z->val + (size_t)(tt - 1) * BZ : z0 ? z0->val : NULL;
        float *h = hid + (size_t)tt * BM4, *st = stats + (size_t)tt * BZ4;
        for (int bi = 0; bi < B; bi++) {
            memcpy(h + (size_t)bi * M4, pre_p->val + ((size_t)tt * B + bi) * 2 * M,
                   (size_t)2 * M * sizeof(float));
            memcpy(h + (size_t)bi * M4 + 2 * M, pre_q->val + ((size_t)tt * B + bi) * 2 * M,
                   (size_t)2 * M * sizeof(float));
            for (int q = 0; q < 4; q++)
                memcpy(st + (size_t)bi * Z4 + (size_t)q * Z, b2 + (size_t)q * Z, Z * sizeof(float));
        }
        if (zp) gemm(0, 0, B, M4, Z, 1.0f, zp, Z, w->W_z->val, M4, 1.0f, h, M4);
        for (size_t i = 0; i < BM4; i++) h[i] = cleaky(h[i]);
        for (int q = 0; q < 4; q++)
            gemm(0, 0, B, Z, M, 1.0f, h + (size_t)q * M, M4, W2 + (size_t)q * M * Z, Z, 1.0f,
                 st + (size_t)q * Z, Z4);
        const float *e = eps + (size_t)tt * BZ;
        float *zt = z->val + (size_t)tt * BZ, *klt = kl->val + (size_t)tt * B;
        for (int bi = 0; bi < B; bi++) {
            float *sr = st + (size_t)bi * Z4;
            double acc = 0.0;
            for (int j = 0; j < Z; j++) {
                float mp = sr[j], lvp = lv_floor_f(sr[Z + j], lv_floor);
                float mq = sr[2 * Z + j] + (resq ? mp : 0.0f);
                float lvq = lv_floor_f(sr[3 * Z + j], lv_floor);
                float vq = expf(lvq), dm = mq - mp;
                sr[Z + j] = lvp, sr[2 * Z + j] = mq, sr[3 * Z + j] = lvq;
                zt[(size_t)bi * Z + j] = mq + sqrtf(vq) * e[(size_t)bi * Z + j];
                acc += 0.5f * (lvp - lvq + (vq + dm * dm) * expf(-lvp) - 1.0f);
            }
            klt[bi] = (float)acc;
        }
    }
    *z_out = z, *kl_out = kl;
    if (!rg) return SP_OK;
    latent_ctx *k = sp_tape_alloc(t, sizeof *k);
    float *dS = sp_tape_alloc(t, (size_t)T * BZ4 * sizeof(float));
    float *dP = sp_tape_alloc(t, (size_t)T * BM4 * sizeof(float));
    float *carry = sp_tape_alloc(t, BZ * sizeof(float));
    if (!k || !dS || !dP || !carry) goto oom;
    *k = (latent_ctx){pre_p, pre_q, z0, w->W_z, w->W2, w->b2, eps, z, kl, hid, stats,
                      T, B, M, Z, resq != 0, lv_floor, dS, dP, carry};
    if (sp_tape_record(t, latent_backward, k)) goto oom;
    return SP_OK;
oom:
    *z_out = NULL, *kl_out = NULL;
    return SP_ERUNTIME;
bad:
    sp_tape_set_failed(t);
    return SP_ERUNTIME;
}

/* ============================================================= emission */

#define LOG_2PI 1.8378770664093453f

typedef struct gll_ctx {
    const sp_tensor *out, *x;
    sp_tensor *ll;
    int N, F;
    float bound;
} gll_ctx;

static void gll_backward(void *p) {
    gll_ctx *k = p;
    const int N = k->N, F = k->F;
    const float bd = k->bound;
#pragma omp parallel for schedule(static) if ((long)N * F >= SRNN_OMP_MIN)
    for (int r = 0; r < N; r++) {
        const float g = k->ll->grad[r];
        const float *o = k->out->val + (size_t)r * 2 * F, *x = k->x->val + (size_t)r * F;
        float *d = k->out->grad + (size_t)r * 2 * F;
        for (int f = 0; f < F; f++) {
            float lv = o[F + f], in = 1.0f;
            if (bd > 0.0f && (lv > bd || lv < -bd)) lv = lv > bd ? bd : -bd, in = 0.0f;
            float ip = expf(-lv), dx = x[f] - o[f];
            d[f] += g * dx * ip;
            d[F + f] += in * g * 0.5f * (dx * dx * ip - 1.0f);
        }
    }
}

sp_tensor *sp_srnn_gauss_ll(sp_tape *t, const sp_tensor *out, const sp_tensor *x, float lv_bound) {
    if (!out || !x || out->ndim < 1 || x->ndim < 1) goto bad;
    const int F = x->shape[x->ndim - 1];
    const long N = x->size / (F ? F : 1);
    if (out->shape[out->ndim - 1] != 2 * F || out->size != 2 * N * F) goto bad;
    const int rg = sp_tape_grad_enabled(t) && sp_needs_grad(out);
    sp_tensor *ll = sp_tensor_1d(t, (int)N, rg);
    if (!ll) return NULL;
#pragma omp parallel for schedule(static) if (N * F >= SRNN_OMP_MIN)
    for (long r = 0; r < N; r++) {
        const float *o = out->val + (size_t)r * 2 * F, *xr = x->val + (size_t)r * F;
        double acc = 0.0;
        for (int f = 0; f < F; f++) {
            float lv = o[F + f];
            if (lv_bound > 0.0f) lv = fminf(fmaxf(lv, -lv_bound), lv_bound);
            float dx = xr[f] - o[f];
            acc += -0.5f * (LOG_2PI + lv + dx * dx * expf(-lv));
        }
        ll->val[r] = (float)acc;
    }
    if (!rg) return ll;
    gll_ctx *k = sp_tape_alloc(t, sizeof *k);
    if (!k) return NULL;
    *k = (gll_ctx){out, x, ll, (int)N, F, lv_bound};
    if (sp_tape_record(t, gll_backward, k)) return NULL;
    return ll;
bad:
    sp_tape_set_failed(t);
    return NULL;
}
