/* Adam (PyTorch and Lasagne/TF forms) and gradient clipping, each a single
 * loop over the flat buffers of params.h (see optim.h for the formulas). */
#include "supair/optim.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Below this many floats a loop stays on one thread: waking the pool costs
 * more than it saves. */
#define SP_OPTIM_PAR_MIN (1L << 16)

/* Reductions split [0, n) into this many fixed chunks and add the chunk sums
 * in order, so the result is the same for any thread count. */
#define SP_OPTIM_CHUNKS 64

void sp_adam_init(sp_adam *a, sp_adam_form form, float lr) {
    memset(a, 0, sizeof *a);
    a->lr = lr;
    a->b1 = 0.9f;
    a->b2 = 0.999f;
    a->eps = form == SP_ADAM_LASAGNE ? 1e-4f : 1e-8f;
    a->form = form;
    a->t = 0;
}

static void adam_step(sp_params *p, sp_adam *a, float lr, int zero) {
    if (lr < 0) lr = a->lr;
    a->t++;
    /* Bias corrections in double: b2^t for t of a few thousand loses digits in float. */
    double c1 = 1.0 - pow((double)a->b1, (double)a->t);
    double c2 = 1.0 - pow((double)a->b2, (double)a->t);
    /* Both forms are p -= step * (m / (sqrt(v) * vscale + eps)). */
    float step, vscale;
    if (a->form == SP_ADAM_LASAGNE) {
        step = (float)(lr * sqrt(c2) / c1);
        vscale = 1.0f;
    } else {
        /* As torch.optim.Adam computes it: denom = sqrt(v)/sqrt(c2) + eps. */
        step = (float)(lr / c1);
        vscale = (float)(1.0 / sqrt(c2));
    }
    const float b1 = a->b1, b2 = a->b2, ob1 = 1.0f - a->b1, ob2 = 1.0f - a->b2, eps = a->eps;
    float *restrict val = p->val, *restrict m = p->adam_m, *restrict v = p->adam_v;
    float *restrict g = p->grad;
    const long n = p->total;
    if (zero) {
#pragma omp parallel for simd schedule(static) if (n >= SP_OPTIM_PAR_MIN)
        for (long i = 0; i < n; i++) {
            float gi = g[i];
            float mi = b1 * m[i] + ob1 * gi;
            float vi = b2 * v[i] + ob2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            val[i] -= step * (mi / (sqrtf(vi) * vscale + eps));
            g[i] = 0.0f;
        }
        return;
    }
#pragma omp parallel for simd schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (long i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + ob1 * gi;
        float vi = b2 * v[i] + ob2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        val[i] -= step * (mi / (sqrtf(vi) * vscale + eps));
    }
}

void sp_adam_step(sp_params *p, sp_adam *a, float lr) { adam_step(p, a, lr, 0); }
void sp_adam_step_zero_grad(sp_params *p, sp_adam *a, float lr) { adam_step(p, a, lr, 1); }

static double sum_squares(const float *x, long n) {
    double part[SP_OPTIM_CHUNKS];
    long chunk = (n + SP_OPTIM_CHUNKS - 1) / SP_OPTIM_CHUNKS;
#pragma omp parallel for schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (int c = 0; c < SP_OPTIM_CHUNKS; c++) {
        long lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0.0;
        /* Vector partial sums: a fixed order for a given build, whatever the
         * thread count (chunks are fixed, each summed by one thread). */
#pragma omp simd reduction(+ : s)
        for (long i = lo; i < hi; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0.0;
    for (int c = 0; c < SP_OPTIM_CHUNKS; c++) s += part[c];
    return s;
}

double sp_grad_global_norm(const sp_params *p) { return sqrt(sum_squares(p->grad, p->total)); }

void sp_grad_scale(sp_params *p, float s) {
    float *restrict g = p->grad;
    const long n = p->total;
#pragma omp parallel for simd schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (long i = 0; i < n; i++) g[i] *= s;
}

double sp_clip_global_norm(sp_params *p, double max_norm) {
    double norm = sp_grad_global_norm(p);
    if (!isfinite(norm)) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) sp_grad_scale(p, (float)coef);
    return norm;
}

void sp_clip_elementwise(sp_params *p, float limit) {
    float *restrict g = p->grad;
    const long n = p->total;
    /* Comparisons rather than fminf/fmaxf: those would turn NaN into +-limit
     * and hide a diverged step from sp_grad_all_finite. */
#pragma omp parallel for simd schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (long i = 0; i < n; i++) {
        float x = g[i];
        g[i] = x > limit ? limit : (x < -limit ? -limit : x);
    }
}

int sp_floats_all_finite(const float *x, long n) {
    /* Exponent bits all ones <=> Inf or NaN; an integer OR vectorises where a
     * float reduction (without -ffast-math) would not. */
    const uint32_t *bits = (const uint32_t *)(const void *)x;
    uint32_t bad = 0;
#pragma omp parallel for simd schedule(static) reduction(| : bad) if (n >= SP_OPTIM_PAR_MIN)
    for (long i = 0; i < n; i++) bad |= (uint32_t)((bits[i] & 0x7f800000u) == 0x7f800000u);
    return bad == 0;
}

int sp_grad_all_finite(const sp_params *p) { return sp_floats_all_finite(p->grad, p->total); }
int sp_params_all_finite(const sp_params *p) { return sp_floats_all_finite(p->val, p->total); }
