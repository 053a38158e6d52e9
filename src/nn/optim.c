/* Adam (PyTorch and Lasagne/TF forms) and gradient clipping, each a single
 * loop over the flat buffers of params.h (see optim.h for the formulas). */
#include "supair/optim.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

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

/* Elements per chunk of the Adam loop (a multiple of 8). */
#define ADAM_CHUNK 8192

/* The Adam update of elements [lo, hi). The AVX2 path does the scalar
 * loop's operations in the same order (separate multiplies and adds, as ISO
 * C compiles them; vsqrtps and vdivps round like sqrtf and /), so the two
 * agree bit for bit. Explicit: the compiler keeps sqrtf scalar (errno). */
static void adam_range(float *restrict val, float *restrict m, float *restrict v,
                       float *restrict g, long lo, long hi, float b1, float b2, float ob1,
                       float ob2, float step, float vscale, float eps, float gscale, int zero) {
    long i = lo;
#if defined(__AVX2__)
    const __m256 B1 = _mm256_set1_ps(b1), B2 = _mm256_set1_ps(b2), OB1 = _mm256_set1_ps(ob1),
                 OB2 = _mm256_set1_ps(ob2), ST = _mm256_set1_ps(step),
                 VS = _mm256_set1_ps(vscale), EPS = _mm256_set1_ps(eps),
                 GS = _mm256_set1_ps(gscale);
    for (; i + 8 <= hi; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        if (gscale != 1.0f) gi = _mm256_mul_ps(gi, GS);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(B1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(OB1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(B2, _mm256_loadu_ps(v + i)),
                                  _mm256_mul_ps(_mm256_mul_ps(OB2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), VS), EPS);
        _mm256_storeu_ps(val + i, _mm256_sub_ps(_mm256_loadu_ps(val + i),
                                                _mm256_mul_ps(ST, _mm256_div_ps(mi, den))));
        if (zero) _mm256_storeu_ps(g + i, _mm256_setzero_ps());
    }
#endif
    for (; i < hi; i++) {
        float gi = gscale != 1.0f ? g[i] * gscale : g[i];
        float mi = b1 * m[i] + ob1 * gi;
        float vi = b2 * v[i] + ob2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        val[i] -= step * (mi / (sqrtf(vi) * vscale + eps));
        if (zero) g[i] = 0.0f;
    }
}

/* Adam over elements [lo, hi) of the buffers (the whole buffer, or one
 * rank's slice under grad_reduce=node). */
static void adam_step(sp_params *p, sp_adam *a, float lr, float gscale, int zero, long lo,
                      long hi) {
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
    const long n = hi - lo, nchunks = (n + ADAM_CHUNK - 1) / ADAM_CHUNK;
#pragma omp parallel for schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (long c = 0; c < nchunks; c++) {
        long a0 = lo + c * ADAM_CHUNK, a1 = a0 + ADAM_CHUNK < hi ? a0 + ADAM_CHUNK : hi;
        adam_range(p->val, p->adam_m, p->adam_v, p->grad, a0, a1, b1, b2, ob1, ob2, step, vscale,
                   eps, gscale, zero);
    }
}

void sp_adam_step(sp_params *p, sp_adam *a, float lr) {
    adam_step(p, a, lr, 1.0f, 0, 0, p->total);
}
void sp_adam_step_zero_grad(sp_params *p, sp_adam *a, float lr) {
    adam_step(p, a, lr, 1.0f, 1, 0, p->total);
}
void sp_adam_step_zero_grad_scaled(sp_params *p, sp_adam *a, float lr, float gscale) {
    adam_step(p, a, lr, gscale, 1, 0, p->total);
}
void sp_adam_step_slice(sp_params *p, sp_adam *a, float lr, float gscale, long lo, long hi) {
    adam_step(p, a, lr, gscale, 1, lo, hi);
}

double sp_floats_sum_squares(const float *x, long n, float scale) {
    double part[SP_OPTIM_CHUNKS];
    long chunk = (n + SP_OPTIM_CHUNKS - 1) / SP_OPTIM_CHUNKS;
#pragma omp parallel for schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (int c = 0; c < SP_OPTIM_CHUNKS; c++) {
        long lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0.0;
        /* Vector partial sums: a fixed order for a given build, whatever the
         * thread count (chunks are fixed, each summed by one thread). */
#pragma omp simd reduction(+ : s)
        for (long i = lo; i < hi; i++) {
            const double y = x[i] * scale; /* the float product, as a scaled buffer holds */
            s += y * y;
        }
        part[c] = s;
    }
    double s = 0.0;
    for (int c = 0; c < SP_OPTIM_CHUNKS; c++) s += part[c];
    return s;
}

double sp_grad_global_norm(const sp_params *p) { return sqrt(sp_floats_sum_squares(p->grad, p->total, 1.0f)); }
double sp_grad_global_norm_scaled(const sp_params *p, float gscale) {
    return sqrt(sp_floats_sum_squares(p->grad, p->total, gscale));
}

void sp_floats_scale(float *restrict g, long n, float s) {
#pragma omp parallel for simd schedule(static) if (n >= SP_OPTIM_PAR_MIN)
    for (long i = 0; i < n; i++) g[i] *= s;
}

void sp_grad_scale(sp_params *p, float s) { sp_floats_scale(p->grad, p->total, s); }

double sp_clip_global_norm(sp_params *p, double max_norm) {
    double norm = sp_grad_global_norm(p);
    if (!isfinite(norm)) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) sp_grad_scale(p, (float)coef);
    return norm;
}

void sp_clip_elementwise(sp_params *p, float limit) { sp_floats_clip(p->grad, p->total, limit); }

void sp_floats_clip(float *restrict g, long n, float limit) {
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
