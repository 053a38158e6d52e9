/* Elementwise ops with numpy broadcasting (see ops.h): arithmetic,
 * activations and the distribution terms share one engine.
 *
 * An input stretched by broadcasting is expanded into an output-sized copy in
 * the arena, so every kernel is a flat loop over equally sized arrays (simple
 * to vectorise and to split across threads). The gradient of a stretched
 * input is computed output-sized into a temporary, then summed back over the
 * stretched dims in index order, which keeps it independent of the thread
 * count. Inputs that already have the output's size cost no copy. */
#include <math.h>
#include <string.h>

#include "supair/ops.h"

#define LOG_2PI 1.8378770664093453f

enum ew_kind {
    EW_ADD,
    EW_SUB,
    EW_MUL,
    EW_DIV,
    EW_SCALE,
    EW_ADD_SCALAR,
    EW_SIGMOID,
    EW_TANH,
    EW_RELU,
    EW_ELU,
    EW_SOFTPLUS,
    EW_CLIPPED_LEAKY,
    EW_EXP,
    EW_LOG,
    EW_CLIP,
    EW_SQUARE,
    EW_GAUSS_LOGPDF,
    EW_GAUSS_LOGPDF_STD,
    EW_BERNOULLI,
    EW_KL_DIAG,
    EW_RSAMPLE,
};

#define EW_MAX_IN 4

typedef struct ew_ctx {
    int kind, n_in;
    float a, b; /* scalar parameters (scale, clip bounds) */
    long n;     /* output size */
    sp_tensor *in[EW_MAX_IN], *out;
    const float *v[EW_MAX_IN]; /* output-sized input values */
    float *g[EW_MAX_IN];       /* output-sized grad destination; NULL when none */
    int expanded[EW_MAX_IN];   /* g[k] is a temporary to sum back into in[k]->grad */
    int oshape[SP_MAX_DIMS];   /* output shape, padded on the left with 1s */
    long stride[EW_MAX_IN][SP_MAX_DIMS]; /* input strides over oshape; 0 = stretched */
} ew_ctx;

/* A loop over i < n that OpenMP splits when n is large; each element is
 * independent, so the split cannot change any result. */
#define EW_FOR _Pragma("omp parallel for if(n > SP_OPS_OMP_MIN) schedule(static)") \
    for (long i = 0; i < n; i++)

static inline float sigmoidf_stable(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

static inline float softplusf_stable(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

/* dst (oshape) = src stretched by the strides. */
static void bcast_gather(float *dst, const float *src, const int os[4], const long st[4]) {
    long o = 0;
    for (int i0 = 0; i0 < os[0]; i0++)
        for (int i1 = 0; i1 < os[1]; i1++)
            for (int i2 = 0; i2 < os[2]; i2++) {
                const float *s = src + i0 * st[0] + i1 * st[1] + i2 * st[2];
                for (int i3 = 0; i3 < os[3]; i3++) dst[o++] = s[i3 * st[3]];
            }
}

/* dst (input layout) += src (oshape) summed over the stretched dims. */
static void bcast_reduce_add(float *dst, const float *src, const int os[4], const long st[4]) {
    long o = 0;
    for (int i0 = 0; i0 < os[0]; i0++)
        for (int i1 = 0; i1 < os[1]; i1++)
            for (int i2 = 0; i2 < os[2]; i2++) {
                float *d = dst + i0 * st[0] + i1 * st[1] + i2 * st[2];
                for (int i3 = 0; i3 < os[3]; i3++) d[i3 * st[3]] += src[o++];
            }
}

static void ew_forward(const ew_ctx *c) {
    const long n = c->n;
    const float *x = c->v[0], *y1 = c->v[1], *y2 = c->v[2], *y3 = c->v[3];
    float *out = c->out->val;
    const float a = c->a, b = c->b;
    switch (c->kind) {
    case EW_ADD: EW_FOR out[i] = x[i] + y1[i]; break;
    case EW_SUB: EW_FOR out[i] = x[i] - y1[i]; break;
    case EW_MUL: EW_FOR out[i] = x[i] * y1[i]; break;
    case EW_DIV: EW_FOR out[i] = x[i] / y1[i]; break;
    case EW_SCALE: EW_FOR out[i] = a * x[i]; break;
    case EW_ADD_SCALAR: EW_FOR out[i] = x[i] + a; break;
    case EW_SIGMOID: EW_FOR out[i] = sigmoidf_stable(x[i]); break;
    case EW_TANH: EW_FOR out[i] = tanhf(x[i]); break;
    case EW_RELU: EW_FOR out[i] = x[i] > 0 ? x[i] : 0.0f; break;
    case EW_ELU: EW_FOR out[i] = x[i] > 0 ? x[i] : expm1f(x[i]); break;
    case EW_SOFTPLUS: EW_FOR out[i] = softplusf_stable(x[i]); break;
    case EW_CLIPPED_LEAKY:
        EW_FOR {
            float m = x[i] >= 0 ? x[i] : x[i] * (1.0f / 3.0f);
            out[i] = fminf(fmaxf(m, -3.0f), 3.0f);
        }
        break;
    case EW_EXP: EW_FOR out[i] = expf(x[i]); break;
    case EW_LOG: EW_FOR out[i] = logf(x[i]); break;
    case EW_CLIP: EW_FOR out[i] = fminf(fmaxf(x[i], a), b); break;
    case EW_SQUARE: EW_FOR out[i] = x[i] * x[i]; break;
    case EW_GAUSS_LOGPDF: /* x, mu, logvar */
        EW_FOR {
            float d = x[i] - y1[i];
            out[i] = -0.5f * (LOG_2PI + y2[i] + d * d * expf(-y2[i]));
        }
        break;
    case EW_GAUSS_LOGPDF_STD: /* x, mu, std */
        EW_FOR {
            float z = (x[i] - y1[i]) / y2[i];
            out[i] = -0.5f * LOG_2PI - logf(y2[i]) - 0.5f * z * z;
        }
        break;
    case EW_BERNOULLI: /* x, logits: x l - softplus(l), with the l terms cancelled first
                        * so a near-certain outcome keeps its tiny log-probability */
        EW_FOR {
            float l = y1[i];
            out[i] = (l > 0 ? (x[i] - 1.0f) * l : x[i] * l) - log1pf(expf(-fabsf(l)));
        }
        break;
    case EW_KL_DIAG: /* mu_q, logvar_q, mu_p, logvar_p */
        EW_FOR {
            float d = x[i] - y2[i];
            out[i] = 0.5f * (y3[i] - y1[i] + expf(y1[i] - y3[i]) + d * d * expf(-y3[i]) - 1.0f);
        }
        break;
    case EW_RSAMPLE: /* mu, std, eps */
        EW_FOR out[i] = x[i] + y1[i] * y2[i];
        break;
    }
}

static void ew_backward(void *p) {
    ew_ctx *c = p;
    const long n = c->n;
    const float *gy = c->out->grad, *y = c->out->val;
    const float *x = c->v[0], *y1 = c->v[1], *y2 = c->v[2], *y3 = c->v[3];
    float *g0 = c->g[0], *g1 = c->g[1], *g2 = c->g[2], *g3 = c->g[3];
    const float a = c->a, b = c->b;
    switch (c->kind) {
    case EW_ADD:
        if (g0) EW_FOR g0[i] += gy[i];
        if (g1) EW_FOR g1[i] += gy[i];
        break;
    case EW_SUB:
        if (g0) EW_FOR g0[i] += gy[i];
        if (g1) EW_FOR g1[i] -= gy[i];
        break;
    case EW_MUL:
        if (g0) EW_FOR g0[i] += gy[i] * y1[i];
        if (g1) EW_FOR g1[i] += gy[i] * x[i];
        break;
    case EW_DIV: /* d(x/w)/dw = -(x/w)/w */
        if (g0) EW_FOR g0[i] += gy[i] / y1[i];
        if (g1) EW_FOR g1[i] -= gy[i] * y[i] / y1[i];
        break;
    case EW_SCALE: EW_FOR g0[i] += a * gy[i]; break;
    case EW_ADD_SCALAR: EW_FOR g0[i] += gy[i]; break;
    case EW_SIGMOID: EW_FOR g0[i] += gy[i] * y[i] * (1.0f - y[i]); break;
    case EW_TANH: EW_FOR g0[i] += gy[i] * (1.0f - y[i] * y[i]); break;
    case EW_RELU: EW_FOR g0[i] += x[i] > 0 ? gy[i] : 0.0f; break;
    case EW_ELU: EW_FOR g0[i] += x[i] > 0 ? gy[i] : gy[i] * (y[i] + 1.0f); break;
    case EW_SOFTPLUS: EW_FOR g0[i] += gy[i] * sigmoidf_stable(x[i]); break;
    case EW_CLIPPED_LEAKY:
        EW_FOR {
            float v = x[i];
            float s = (v >= 0 && v <= 3.0f) ? 1.0f : (v < 0 && v >= -9.0f) ? (1.0f / 3.0f) : 0.0f;
            g0[i] += gy[i] * s;
        }
        break;
    case EW_EXP: EW_FOR g0[i] += gy[i] * y[i]; break;
    case EW_LOG: EW_FOR g0[i] += gy[i] / x[i]; break;
    case EW_CLIP: EW_FOR g0[i] += (x[i] >= a && x[i] <= b) ? gy[i] : 0.0f; break;
    case EW_SQUARE: EW_FOR g0[i] += 2.0f * x[i] * gy[i]; break;
    case EW_GAUSS_LOGPDF: /* d/dx = -(x-mu)/var, d/dlogvar = ((x-mu)^2/var - 1)/2 */
        if (g0) EW_FOR g0[i] -= gy[i] * (x[i] - y1[i]) * expf(-y2[i]);
        if (g1) EW_FOR g1[i] += gy[i] * (x[i] - y1[i]) * expf(-y2[i]);
        if (g2)
            EW_FOR {
                float d = x[i] - y1[i];
                g2[i] += gy[i] * 0.5f * (d * d * expf(-y2[i]) - 1.0f);
            }
        break;
    case EW_GAUSS_LOGPDF_STD: /* d/dx = -(x-mu)/std^2, d/dstd = ((x-mu)^2/std^2 - 1)/std */
        if (g0) EW_FOR g0[i] -= gy[i] * (x[i] - y1[i]) / (y2[i] * y2[i]);
        if (g1) EW_FOR g1[i] += gy[i] * (x[i] - y1[i]) / (y2[i] * y2[i]);
        if (g2)
            EW_FOR {
                float z = (x[i] - y1[i]) / y2[i];
                g2[i] += gy[i] * (z * z - 1.0f) / y2[i];
            }
        break;
    case EW_BERNOULLI:
        if (g0) EW_FOR g0[i] += gy[i] * y1[i];
        if (g1) EW_FOR g1[i] += gy[i] * (x[i] - sigmoidf_stable(y1[i]));
        break;
    case EW_KL_DIAG:
        if (g0) EW_FOR g0[i] += gy[i] * (x[i] - y2[i]) * expf(-y3[i]);
        if (g1) EW_FOR g1[i] += gy[i] * 0.5f * (expf(y1[i] - y3[i]) - 1.0f);
        if (g2) EW_FOR g2[i] -= gy[i] * (x[i] - y2[i]) * expf(-y3[i]);
        if (g3)
            EW_FOR {
                float d = x[i] - y2[i];
                g3[i] += gy[i] * 0.5f * (1.0f - expf(y1[i] - y3[i]) - d * d * expf(-y3[i]));
            }
        break;
    case EW_RSAMPLE:
        if (g0) EW_FOR g0[i] += gy[i];
        if (g1) EW_FOR g1[i] += gy[i] * y2[i];
        if (g2) EW_FOR g2[i] += gy[i] * y1[i];
        break;
    }
    for (int k = 0; k < c->n_in; k++) {
        if (!c->expanded[k]) continue;
        bcast_reduce_add(c->in[k]->grad, c->g[k], c->oshape, c->stride[k]);
        /* A second backward over the same tape must not add this step twice. */
        memset(c->g[k], 0, (size_t)n * sizeof(float));
    }
}

/* Broadcasts the inputs, computes the output and records the backward. */
static sp_tensor *ew_apply(sp_tape *t, int kind, int n_in, sp_tensor **in, float a, float b) {
    for (int k = 0; k < n_in; k++)
        if (!in[k]) return NULL;
    int ondim = 0;
    for (int k = 0; k < n_in; k++)
        if (in[k]->ndim > ondim) ondim = in[k]->ndim;
    int pshape[EW_MAX_IN][SP_MAX_DIMS];
    int os[SP_MAX_DIMS] = {1, 1, 1, 1};
    for (int k = 0; k < n_in; k++) {
        int off = SP_MAX_DIMS - in[k]->ndim;
        for (int d = 0; d < SP_MAX_DIMS; d++) pshape[k][d] = d < off ? 1 : in[k]->shape[d - off];
    }
    for (int d = 0; d < SP_MAX_DIMS; d++)
        for (int k = 0; k < n_in; k++) {
            int s = pshape[k][d];
            if (s == os[d] || s == 1) continue;
            if (os[d] != 1) {
                sp_tape_set_failed(t); /* shapes do not broadcast */
                return NULL;
            }
            os[d] = s;
        }
    int rg = 0;
    if (sp_tape_grad_enabled(t))
        for (int k = 0; k < n_in; k++) rg |= sp_needs_grad(in[k]);
    sp_tensor *out = sp_tensor_new(t, ondim, os + SP_MAX_DIMS - ondim, rg);
    if (!out) return NULL;
    ew_ctx local, *c = rg ? sp_tape_alloc(t, sizeof *c) : &local;
    if (!c) return NULL;
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->n_in = n_in;
    c->a = a;
    c->b = b;
    c->n = out->size;
    c->out = out;
    memcpy(c->oshape, os, sizeof os);
    size_t bytes = (size_t)(c->n ? c->n : 1) * sizeof(float);
    for (int k = 0; k < n_in; k++) {
        c->in[k] = in[k];
        long st = 1;
        for (int d = SP_MAX_DIMS - 1; d >= 0; d--) {
            c->stride[k][d] = (pshape[k][d] == 1) ? 0 : st;
            st *= pshape[k][d];
        }
        if (in[k]->size == c->n) {
            c->v[k] = in[k]->val;
        } else {
            float *e = sp_tape_alloc(t, bytes);
            if (!e) return NULL;
            bcast_gather(e, in[k]->val, os, c->stride[k]);
            c->v[k] = e;
        }
    }
    ew_forward(c);
    if (!rg) return out;
    for (int k = 0; k < n_in; k++) {
        if (!sp_needs_grad(in[k])) continue;
        if (in[k]->size == c->n) {
            c->g[k] = in[k]->grad;
        } else {
            c->g[k] = sp_tape_calloc(t, bytes);
            if (!c->g[k]) return NULL;
            c->expanded[k] = 1;
        }
    }
    if (sp_tape_record(t, ew_backward, c)) return NULL;
    return out;
}

static sp_tensor *unary(sp_tape *t, int kind, sp_tensor *x, float a, float b) {
    return ew_apply(t, kind, 1, (sp_tensor *[]){x}, a, b);
}

static sp_tensor *binary(sp_tape *t, int kind, sp_tensor *x, sp_tensor *y) {
    return ew_apply(t, kind, 2, (sp_tensor *[]){x, y}, 0, 0);
}

sp_tensor *sp_add(sp_tape *t, sp_tensor *a, sp_tensor *b) { return binary(t, EW_ADD, a, b); }
sp_tensor *sp_sub(sp_tape *t, sp_tensor *a, sp_tensor *b) { return binary(t, EW_SUB, a, b); }
sp_tensor *sp_mul(sp_tape *t, sp_tensor *a, sp_tensor *b) { return binary(t, EW_MUL, a, b); }
sp_tensor *sp_div(sp_tape *t, sp_tensor *a, sp_tensor *b) { return binary(t, EW_DIV, a, b); }
sp_tensor *sp_scale(sp_tape *t, sp_tensor *x, float a) { return unary(t, EW_SCALE, x, a, 0); }
sp_tensor *sp_add_scalar(sp_tape *t, sp_tensor *x, float a) {
    return unary(t, EW_ADD_SCALAR, x, a, 0);
}
sp_tensor *sp_sigmoid(sp_tape *t, sp_tensor *x) { return unary(t, EW_SIGMOID, x, 0, 0); }
sp_tensor *sp_tanh(sp_tape *t, sp_tensor *x) { return unary(t, EW_TANH, x, 0, 0); }
sp_tensor *sp_relu(sp_tape *t, sp_tensor *x) { return unary(t, EW_RELU, x, 0, 0); }
sp_tensor *sp_elu(sp_tape *t, sp_tensor *x) { return unary(t, EW_ELU, x, 0, 0); }
sp_tensor *sp_softplus(sp_tape *t, sp_tensor *x) { return unary(t, EW_SOFTPLUS, x, 0, 0); }
sp_tensor *sp_clipped_leaky(sp_tape *t, sp_tensor *x) {
    return unary(t, EW_CLIPPED_LEAKY, x, 0, 0);
}
sp_tensor *sp_exp(sp_tape *t, sp_tensor *x) { return unary(t, EW_EXP, x, 0, 0); }
sp_tensor *sp_ln(sp_tape *t, sp_tensor *x) { return unary(t, EW_LOG, x, 0, 0); }
sp_tensor *sp_clip(sp_tape *t, sp_tensor *x, float lo, float hi) {
    return unary(t, EW_CLIP, x, lo, hi);
}
sp_tensor *sp_square(sp_tape *t, sp_tensor *x) { return unary(t, EW_SQUARE, x, 0, 0); }

sp_tensor *sp_gauss_logpdf(sp_tape *t, sp_tensor *x, sp_tensor *mu, sp_tensor *logvar) {
    return ew_apply(t, EW_GAUSS_LOGPDF, 3, (sp_tensor *[]){x, mu, logvar}, 0, 0);
}

sp_tensor *sp_gauss_logpdf_std(sp_tape *t, sp_tensor *x, sp_tensor *mu, sp_tensor *std) {
    return ew_apply(t, EW_GAUSS_LOGPDF_STD, 3, (sp_tensor *[]){x, mu, std}, 0, 0);
}

sp_tensor *sp_bernoulli_logpmf(sp_tape *t, sp_tensor *x, sp_tensor *logits) {
    return binary(t, EW_BERNOULLI, x, logits);
}

sp_tensor *sp_kl_diag_gauss(sp_tape *t, sp_tensor *mu_q, sp_tensor *logvar_q, sp_tensor *mu_p,
                            sp_tensor *logvar_p) {
    return ew_apply(t, EW_KL_DIAG, 4, (sp_tensor *[]){mu_q, logvar_q, mu_p, logvar_p}, 0, 0);
}

sp_tensor *sp_gauss_rsample(sp_tape *t, sp_tensor *mu, sp_tensor *std, sp_tensor *eps) {
    return ew_apply(t, EW_RSAMPLE, 3, (sp_tensor *[]){mu, std, eps}, 0, 0);
}
