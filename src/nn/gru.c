/* Fused GRU cell, reset gate after the recurrent product (see rnn.h): one
 * sgemm for h W_h, one pass for the gates, a backward from saved gates. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "supair/rnn.h"

#define GRU_OMP_MIN 16384

typedef struct gru_ctx {
    const sp_tensor *xproj, *h, *W_h, *b;
    sp_tensor *out;
    float *act;  // (B, 3H) activated gates [r, u, c]
    float *hc;   // (B, H) h W_hc, the part r scales
    float *dg;   // (B, 3H) scratch: gradient w.r.t. [pre_r, pre_u, h W_hc (pre_c for x, b)]
    int B, H;
} gru_ctx;

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void gru_backward(void *p) {
    gru_ctx *k = p;
    const int B = k->B, H = k->H, G = 3 * H;
    const float *dh = k->out->grad;
    const float *hv = k->h ? k->h->val : NULL;
    float *dhp = (k->h && sp_needs_grad(k->h)) ? k->h->grad : NULL;
    float *dx = sp_needs_grad(k->xproj) ? k->xproj->grad : NULL;

    // dg holds [d pre_r, d pre_u, d pre_c] for xproj and b; the recurrent
    // product needs d(h W_hc) = d pre_c * r instead, patched in after.
#pragma omp parallel for schedule(static) if ((long)B * H >= GRU_OMP_MIN)
    for (int bi = 0; bi < B; bi++) {
        const float *a = k->act + (size_t)bi * G;
        float *g = k->dg + (size_t)bi * G;
        for (int n = 0; n < H; n++) {
            float r = a[n], u = a[H + n], c = a[2 * H + n];
            float hp = hv ? hv[(size_t)bi * H + n] : 0.0f;
            float d = dh[(size_t)bi * H + n];
            float dpc = d * u * (1.0f - c * c);
            g[n] = dpc * k->hc[(size_t)bi * H + n] * r * (1.0f - r);
            g[H + n] = d * (c - hp) * u * (1.0f - u);
            g[2 * H + n] = dpc;
            if (dhp) dhp[(size_t)bi * H + n] += d * (1.0f - u);
        }
        if (dx) {
            float *x = dx + (size_t)bi * G;
            for (int e = 0; e < G; e++) x[e] += g[e];
        }
    }
    if (sp_needs_grad(k->b)) {
        float *db = k->b->grad;
        for (int bi = 0; bi < B; bi++) {
            const float *g = k->dg + (size_t)bi * G;
            for (int e = 0; e < G; e++) db[e] += g[e];
        }
    }
    if (!k->h || !(sp_needs_grad(k->h) || sp_needs_grad(k->W_h))) return;
    for (int bi = 0; bi < B; bi++) {
        float *g = k->dg + (size_t)bi * G + 2 * H;
        const float *r = k->act + (size_t)bi * G;
        for (int n = 0; n < H; n++) g[n] *= r[n];
    }
    if (dhp)  // dh (B,H) += dg (B,3H) W_h^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, G, 1.0f, k->dg, G,
                    k->W_h->val, G, 1.0f, dhp, H);
    if (sp_needs_grad(k->W_h))  // dW_h (H,3H) += h^T (H,B) dg (B,3H)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, G, B, 1.0f, hv, H, k->dg, G,
                    1.0f, k->W_h->grad, G);
}

sp_tensor *sp_gru_cell(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h,
                       const sp_tensor *W_h, const sp_tensor *b) {
    if (!xproj || !W_h || !b) {
        sp_tape_set_failed(t);
        return NULL;
    }
    if (xproj->ndim != 2 || W_h->ndim != 2 || xproj->shape[1] % 3 != 0) goto bad_shape;
    const int B = xproj->shape[0], H = xproj->shape[1] / 3, G = 3 * H;
    if (W_h->shape[0] != H || W_h->shape[1] != G || b->size != G) goto bad_shape;
    if (h && (h->ndim != 2 || h->shape[0] != B || h->shape[1] != H)) goto bad_shape;

    const int rg = sp_needs_grad(xproj) || sp_needs_grad(b) || sp_needs_grad(h) ||
                   (h && sp_needs_grad(W_h));
    sp_tensor *out = sp_tensor_2d(t, B, H, rg);
    float *act = sp_tape_alloc(t, (size_t)B * G * sizeof(float));  // (B, 3H)
    float *hc = sp_tape_alloc(t, (size_t)B * H * sizeof(float));   // (B, H)
    if (!out || !act || !hc) return NULL;

    // act (B,3H) = h W_h, or 0 for a zero state
    if (h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, G, H, 1.0f, h->val, H, W_h->val,
                    G, 0.0f, act, G);
    else
        memset(act, 0, (size_t)B * G * sizeof(float));

    const float *bv = b->val;
#pragma omp parallel for schedule(static) if ((long)B * H >= GRU_OMP_MIN)
    for (int bi = 0; bi < B; bi++) {
        float *a = act + (size_t)bi * G;
        const float *x = xproj->val + (size_t)bi * G;
        for (int n = 0; n < H; n++) {
            float r = sigmoidf(x[n] + a[n] + bv[n]);
            float u = sigmoidf(x[H + n] + a[H + n] + bv[H + n]);
            float hcn = a[2 * H + n];
            float c = tanhf(x[2 * H + n] + r * hcn + bv[2 * H + n]);
            float hp = h ? h->val[(size_t)bi * H + n] : 0.0f;
            out->val[(size_t)bi * H + n] = hp + u * (c - hp);
            hc[(size_t)bi * H + n] = hcn;
            a[n] = r, a[H + n] = u, a[2 * H + n] = c;
        }
    }

    if (rg && sp_tape_grad_enabled(t)) {
        gru_ctx *k = sp_tape_alloc(t, sizeof *k);
        float *dg = sp_tape_alloc(t, (size_t)B * G * sizeof(float));
        if (!k || !dg) return NULL;
        *k = (gru_ctx){xproj, h, W_h, b, out, act, hc, dg, B, H};
        if (sp_tape_record(t, gru_backward, k)) return NULL;
    }
    return out;

bad_shape:
    sp_tape_set_failed(t);
    return NULL;
}
