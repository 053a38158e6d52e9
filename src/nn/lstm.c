/* Fused TensorFlow-style LSTM cell (see rnn.h): one sgemm for the recurrent
 * product, one pass for the gates, and a backward that reuses the activated
 * gates saved in the forward pass. */
#include <cblas.h>
#include <math.h>
#include <string.h>

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

static void lstm_backward(void *p) {
    lstm_ctx *k = p;
    const int B = k->B, H = k->H, G = 4 * H;
    const float *dh = k->h_out->grad, *dcn = k->c_out->grad;
    const float *cv = k->c ? k->c->val : NULL;
    float *dc = sp_needs_grad(k->c) ? k->c->grad : NULL;

#pragma omp parallel for schedule(static) if ((long)B * H >= LSTM_OMP_MIN)
    for (int b = 0; b < B; b++) {
        const float *a = k->act + (size_t)b * G;
        float *g = k->dg + (size_t)b * G;
        for (int n = 0; n < H; n++) {
            float i = a[n], j = a[H + n], f = a[2 * H + n], o = a[3 * H + n];
            float tc = k->tc[(size_t)b * H + n];
            float dhn = dh[(size_t)b * H + n];
            // c' feeds h' through tanh and the next step directly
            float dct = dcn[(size_t)b * H + n] + dhn * o * (1.0f - tc * tc);
            float cp = cv ? cv[(size_t)b * H + n] : 0.0f;
            g[n] = dct * j * i * (1.0f - i);
            g[H + n] = dct * i * (1.0f - j * j);
            g[2 * H + n] = dct * cp * f * (1.0f - f);
            g[3 * H + n] = dhn * tc * o * (1.0f - o);
            if (dc) dc[(size_t)b * H + n] += dct * f;
        }
    }
    if (sp_needs_grad(k->xproj)) {
        float *dx = k->xproj->grad;
        for (long e = 0; e < (long)B * G; e++) dx[e] += k->dg[e];
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
    memcpy(act, xproj->val, (size_t)B * G * sizeof(float));
    if (h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, G, H, 1.0f, h->val, H, W_h->val,
                    G, 1.0f, act, G);

#pragma omp parallel for schedule(static) if ((long)B * H >= LSTM_OMP_MIN)
    for (int b = 0; b < B; b++) {
        float *a = act + (size_t)b * G;
        for (int n = 0; n < H; n++) {
            float i = sigmoidf(a[n]), j = tanhf(a[H + n]);
            float f = sigmoidf(a[2 * H + n] + forget_bias), o = sigmoidf(a[3 * H + n]);
            float cp = c ? c->val[(size_t)b * H + n] : 0.0f;
            float cn = f * cp + i * j;
            float tc = tanhf(cn);
            co->val[(size_t)b * H + n] = cn;
            ho->val[(size_t)b * H + n] = o * tc;
            if (tcs) tcs[(size_t)b * H + n] = tc;
            a[n] = i, a[H + n] = j, a[2 * H + n] = f, a[3 * H + n] = o;
        }
    }

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
