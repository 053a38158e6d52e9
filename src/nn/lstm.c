/* Fused TensorFlow-style LSTM cell (see rnn.h): one sgemm for the recurrent
 * product, one pass for the gates, and a backward that reuses the activated
 * gates saved in the forward pass. The gate pass is AVX2 (8 units at a time,
 * polynomial exp and tanh of about 2 ulp) where the build targets it: libm's
 * scalar tanhf/expf took as long as the recurrent sgemm. */
#include <cblas.h>
#include <math.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "supair/error.h"
#include "supair/rnn.h"

/* Rows of elementwise work below this many values stay single-threaded:
 * spawning a team costs more than the exp/tanh it would split. */
#define LSTM_OMP_MIN 16384

typedef struct lstm_ctx {
    const sp_tensor *xproj, *h, *c, *W_h;
    sp_tensor *h_out, *c_out;
    float *act;   // (B, 4H) activated gates [i, j, f, o]
    float *tc;    // (B, H) tanh(c')
    float *dg;    // (B, 4H) scratch: gradient w.r.t. pre-activation gates
    int B, H;
} lstm_ctx;

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

#if defined(__AVX2__) && defined(__FMA__)
/* exp(x) for x clamped to [-87, 87] (no overflow, no denormal results):
 * x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r. NaN -> NaN. */
static inline __m256 v_exp(__m256 x0) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 x = _mm256_min_ps(_mm256_max_ps(x0, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
    __m256 fn = _mm256_round_ps(_mm256_mul_ps(x, log2e),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fn, ln2_hi, x);
    r = _mm256_fnmadd_ps(fn, ln2_lo, r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r,
                               _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_blendv_ps(y, x0, _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q));
}

static inline __m256 v_sigmoid(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, v_exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/* tanh: an odd polynomial below |x| = 0.625 (where 1 - 2/(e^2x + 1) would
 * cancel), 1 - 2/(e^2|x| + 1) with the sign restored above. */
static inline __m256 v_tanh(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(-5.70498872745e-3f), z,
                               _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
    __m256 e = v_exp(_mm256_add_ps(ax, ax));
    __m256 big = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    big = _mm256_or_ps(big, _mm256_and_ps(x, sign));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}
#endif

/* The gates of one row (H units): act [i, j, f, o] pre-activations in,
 * activated out; c' and h' (and tanh(c') when tc is not NULL). */
static void lstm_row(float *restrict a, const float *restrict cp, float *restrict cn,
                     float *restrict hn, float *restrict tc, int H, float forget_bias) {
    int n = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 fb = _mm256_set1_ps(forget_bias);
    for (; n + 8 <= H; n += 8) {
        __m256 i = v_sigmoid(_mm256_loadu_ps(a + n)), j = v_tanh(_mm256_loadu_ps(a + H + n));
        __m256 f = v_sigmoid(_mm256_add_ps(_mm256_loadu_ps(a + 2 * H + n), fb));
        __m256 o = v_sigmoid(_mm256_loadu_ps(a + 3 * H + n));
        __m256 c = _mm256_mul_ps(i, j);
        if (cp) c = _mm256_fmadd_ps(f, _mm256_loadu_ps(cp + n), c);
        __m256 t = v_tanh(c);
        _mm256_storeu_ps(cn + n, c);
        _mm256_storeu_ps(hn + n, _mm256_mul_ps(o, t));
        if (tc) _mm256_storeu_ps(tc + n, t);
        _mm256_storeu_ps(a + n, i);
        _mm256_storeu_ps(a + H + n, j);
        _mm256_storeu_ps(a + 2 * H + n, f);
        _mm256_storeu_ps(a + 3 * H + n, o);
    }
#endif
    for (; n < H; n++) {
        float i = sigmoidf(a[n]), j = tanhf(a[H + n]);
        float f = sigmoidf(a[2 * H + n] + forget_bias), o = sigmoidf(a[3 * H + n]);
        float c = f * (cp ? cp[n] : 0.0f) + i * j;
        float t = tanhf(c);
        cn[n] = c;
        hn[n] = o * t;
        if (tc) tc[n] = t;
        a[n] = i, a[H + n] = j, a[2 * H + n] = f, a[3 * H + n] = o;
    }
}

/* Gradients wrt the pre-activation gates g (4H) of one row from dh' and
 * dc'; adds dc += dc' f when dc is not NULL. cv = c (NULL: zero state).
 * The two flags are compile-time constants at each call below, so every
 * variant is a branch-free vectorised loop. */
static inline void row_backward_body(float *restrict g, float *restrict dc,
                                     const float *restrict a, const float *restrict tcv,
                                     const float *restrict dh, const float *restrict dcn,
                                     const float *restrict cv, int H, const int has_dc,
                                     const int has_c) {
    for (int n = 0; n < H; n++) {
        float i = a[n], j = a[H + n], f = a[2 * H + n], o = a[3 * H + n];
        float tc = tcv[n], dhn = dh[n];
        // c' feeds h' through tanh and the next step directly
        float dct = dcn[n] + dhn * o * (1.0f - tc * tc);
        g[n] = dct * j * i * (1.0f - i);
        g[H + n] = dct * i * (1.0f - j * j);
        g[2 * H + n] = has_c ? dct * cv[n] * f * (1.0f - f) : 0.0f;
        g[3 * H + n] = dhn * tc * o * (1.0f - o);
        if (has_dc) dc[n] += dct * f;
    }
}

static void lstm_row_backward(float *g, float *dc, const float *a, const float *tcv,
                              const float *dh, const float *dcn, const float *cv, int H) {
    if (dc && cv)
        row_backward_body(g, dc, a, tcv, dh, dcn, cv, H, 1, 1);
    else if (dc)
        row_backward_body(g, dc, a, tcv, dh, dcn, cv, H, 1, 0);
    else if (cv)
        row_backward_body(g, dc, a, tcv, dh, dcn, cv, H, 0, 1);
    else
        row_backward_body(g, dc, a, tcv, dh, dcn, cv, H, 0, 0);
}

static void lstm_backward(void *p) {
    lstm_ctx *k = p;
    const int B = k->B, H = k->H, G = 4 * H;
    const float *dh = k->h_out->grad, *dcn = k->c_out->grad;
    const float *cv = k->c ? k->c->val : NULL;
    float *dc = sp_needs_grad(k->c) ? k->c->grad : NULL;

    float *dx = sp_needs_grad(k->xproj) ? k->xproj->grad : NULL;
    /* dx += dg row by row in the same team (a serial pass over (B, 4H)
     * here left the second thread idle) */
#pragma omp parallel for schedule(static) if ((long)B * H >= LSTM_OMP_MIN)
    for (int b = 0; b < B; b++) {
        float *g = k->dg + (size_t)b * G;
        lstm_row_backward(g, dc ? dc + (size_t)b * H : NULL, k->act + (size_t)b * G,
                          k->tc + (size_t)b * H, dh + (size_t)b * H, dcn + (size_t)b * H,
                          cv ? cv + (size_t)b * H : NULL, H);
        if (dx)
            for (int e = 0; e < G; e++) dx[(size_t)b * G + e] += g[e];
    }
    if (k->h && sp_needs_grad(k->h))  // dh (B,H) += dg (B,4H) W_h^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, G, 1.0f, k->dg, G,
                    k->W_h->val, G, 1.0f, k->h->grad, H);
    if (k->h && sp_needs_grad(k->W_h))  // dW_h (H,4H) += h^T (H,B) dg (B,4H)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, G, B, 1.0f, k->h->val, H, k->dg,
                    G, 1.0f, k->W_h->grad, G);
}

int sp_lstm_cell(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h, const sp_tensor *c,
                 const sp_tensor *W_h, float forget_bias, sp_tensor **h_out, sp_tensor **c_out) {
    *h_out = *c_out = NULL;
    if (!xproj || !W_h) {
        sp_tape_set_failed(t);
        return SP_ERUNTIME;
    }
    if (xproj->ndim != 2 || W_h->ndim != 2 || xproj->shape[1] % 4 != 0) goto bad_shape;
    const int B = xproj->shape[0], H = xproj->shape[1] / 4, G = 4 * H;
    if (W_h->shape[0] != H || W_h->shape[1] != G) goto bad_shape;
    if (h && (h->ndim != 2 || h->shape[0] != B || h->shape[1] != H)) goto bad_shape;
    if (c && (c->ndim != 2 || c->shape[0] != B || c->shape[1] != H)) goto bad_shape;

    const int rg = sp_needs_grad(xproj) || sp_needs_grad(h) || sp_needs_grad(c) ||
                   (h && sp_needs_grad(W_h));
    sp_tensor *ho = sp_tensor_2d(t, B, H, rg);
    sp_tensor *co = sp_tensor_2d(t, B, H, rg);
    float *act = sp_tape_alloc(t, (size_t)B * G * sizeof(float));  // (B, 4H)
    float *tcs = rg ? sp_tape_alloc(t, (size_t)B * H * sizeof(float)) : NULL;  // (B, H)
    if (!ho || !co || !act || (rg && !tcs)) return SP_ERUNTIME;

    // pre-activations (B,4H) = xproj + h W_h
#pragma omp parallel for schedule(static) if ((long)B * H >= LSTM_OMP_MIN)
    for (int b = 0; b < B; b++)
        memcpy(act + (size_t)b * G, xproj->val + (size_t)b * G, (size_t)G * sizeof(float));
    if (h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, G, H, 1.0f, h->val, H, W_h->val,
                    G, 1.0f, act, G);

#pragma omp parallel for schedule(static) if ((long)B * H >= LSTM_OMP_MIN)
    for (int b = 0; b < B; b++)
        lstm_row(act + (size_t)b * G, c ? c->val + (size_t)b * H : NULL, co->val + (size_t)b * H,
                 ho->val + (size_t)b * H, tcs ? tcs + (size_t)b * H : NULL, H, forget_bias);

    if (rg && sp_tape_grad_enabled(t)) {
        lstm_ctx *k = sp_tape_alloc(t, sizeof *k);
        float *dg = sp_tape_alloc(t, (size_t)B * G * sizeof(float));
        if (!k || !dg) return SP_ERUNTIME;
        *k = (lstm_ctx){xproj, h, c, W_h, ho, co, act, tcs, dg, B, H};
        if (sp_tape_record(t, lstm_backward, k)) return SP_ERUNTIME;
    }
    *h_out = ho;
    *c_out = co;
    return SP_OK;

bad_shape:
    sp_tape_set_failed(t);
    return SP_EINPUT;
}
