/* Finite-difference gradient checker (see gradcheck.h for the method).
 *
 * Why these numbers: float32 outputs carry ~6e-8 relative rounding, and a sum
 * of K terms ~sqrt(K) times that, so a central difference with a small step
 * drowns in noise (noise ~ eps*|out|/h): with 64-term products of O(3) values
 * the noise is ~2e-5/h. Large steps (from H = |x|/8, at least 1/8) keep it
 * near 1e-4; their truncation error is removed by Richardson extrapolation,
 * (4 D(h/2) - D(h)) / 3 = f' + O(h^4), and where the large steps are spoilt
 * (strong curvature, a kink, the edge of the domain of log) the ladder of
 * smaller steps takes over. Inputs are snapped to multiples of 2^-16 of their
 * binade so every x +- h is an exact float and the divisor is the true step. */
#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A local generator keeps the checker independent of the project's RNG. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; }

void sp_gc_fill_uniform(float *out, long n, float lo, float hi, uint64_t seed) {
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    for (long i = 0; i < n; i++) out[i] = (float)(lo + (hi - lo) * uniform01(&s));
}

/* Exponent e with 2^e <= max(|x|, 1) < 2^(e+1). */
static int binade(double x) {
    double m = fabs(x) < 1 ? 1 : fabs(x);
    int ex;
    frexp(m, &ex);
    return ex - 1;
}

static float snap(float x) {
    double q = ldexp(1.0, binade(x) - 16);
    return (float)(nearbyint((double)x / q) * q);
}

typedef struct gc {
    sp_tape *t;
    sp_gc_build f;
    void *ctx;
    int n_in;
    const sp_gc_input *spec;
    float **val, **grad;
    sp_tensor **in;
    float *w;
    long n_out;
} gc;

static sp_tensor *build(gc *g, int with_grad) {
    sp_tape_reset(g->t);
    sp_tape_set_grad(g->t, with_grad);
    for (int i = 0; i < g->n_in; i++) {
        const sp_gc_input *s = &g->spec[i];
        g->in[i] = sp_tensor_view(g->t, g->val[i], s->requires_grad ? g->grad[i] : NULL, s->ndim,
                                  s->shape);
        if (!g->in[i]) return NULL;
    }
    sp_tensor *out = g->f(g->t, g->in, g->ctx);
    if (sp_tape_failed(g->t)) return NULL;
    return out;
}

/* L = sum_i w_i out_i in double; returns 0, or -1 when the build failed or
 * the output is not finite. */
static int eval_loss(gc *g, double *L) {
    sp_tensor *out = build(g, 0);
    if (!out || out->size != g->n_out) return -1;
    double s = 0;
    for (long k = 0; k < g->n_out; k++) s += (double)g->w[k] * (double)out->val[k];
    if (!isfinite(s)) return -1;
    *L = s;
    return 0;
}

/* Central difference with step h at element x (restored afterwards). */
static int central(gc *g, float *x, double h, double *d) {
    float x0 = *x, xp = (float)(x0 + h), xm = (float)(x0 - h);
    double Lp, Lm;
    *x = xp;
    int rc = eval_loss(g, &Lp);
    *x = xm;
    rc |= eval_loss(g, &Lm);
    *x = x0;
    if (rc) return -1;
    *d = (Lp - Lm) / ((double)xp - (double)xm);
    return 0;
}

/* Steps H/2^k, k < N_STEPS, with H = 2^floor(log2 max(|x|, 1)) / 8. */
#define N_STEPS 7

/* dL/dx at *x by Richardson-extrapolated central differences over a ladder of
 * halving steps; the pair of neighbouring extrapolations that agree best
 * gives the estimate, their difference its error (a kink or the domain edge
 * spoils only the large steps). Returns 0, 1 when fewer than three
 * neighbouring steps were usable (no error estimate), -1 when none was. */
static int numeric_derivative(gc *g, float *x, double atol, double rtol, double *fd,
                              double *fd_err) {
    double d[N_STEPS];
    int okd[N_STEPS], any = 0;
    double H = ldexp(1.0, binade(*x) - 3);
    for (int k = 0; k < N_STEPS; k++) {
        okd[k] = central(g, x, ldexp(H, -k), &d[k]) == 0;
        any |= okd[k];
    }
    if (!any) return -1;
    double e[N_STEPS] = {0};
    int oke[N_STEPS] = {0};
    for (int k = 0; k + 1 < N_STEPS; k++) {
        oke[k] = okd[k] && okd[k + 1];
        if (oke[k]) e[k] = (4 * d[k + 1] - d[k]) / 3;
    }
    /* The largest steps that agree well win (noise grows as steps shrink);
     * failing that, the pair that agrees best. */
    int best = -1;
    double best_err = INFINITY;
    for (int k = 0; k + 2 < N_STEPS; k++) {
        if (!oke[k] || !oke[k + 1]) continue;
        double err = fabs(e[k] - e[k + 1]);
        if (err <= 0.25 * (atol + rtol * fabs(e[k]))) {
            best_err = err;
            best = k;
            break;
        }
        if (err < best_err) {
            best_err = err;
            best = k;
        }
    }
    if (best < 0) return 1;
    *fd = e[best];
    *fd_err = best_err;
    return 0;
}

static void index_str(char *buf, size_t n, const sp_gc_input *s, long flat) {
    int idx[4] = {0, 0, 0, 0};
    for (int d = s->ndim - 1; d >= 0; d--) {
        idx[d] = (int)(flat % s->shape[d]);
        flat /= s->shape[d];
    }
    int o = snprintf(buf, n, "[");
    for (int d = 0; d < s->ndim && o < (int)n; d++)
        o += snprintf(buf + o, n - (size_t)o, d ? ",%d" : "%d", idx[d]);
    if (o < (int)n) snprintf(buf + o, n - (size_t)o, "]");
}

static int finish(gc *g, int ok) {
    if (g->t) sp_tape_destroy(g->t);
    for (int i = 0; i < g->n_in; i++) {
        if (g->val) free(g->val[i]);
        if (g->grad) free(g->grad[i]);
    }
    free(g->val);
    free(g->grad);
    free(g->in);
    free(g->w);
    return ok;
}

int sp_gradcheck(sp_gc_build f, void *ctx, int n_in, const sp_gc_input *spec, uint64_t seed,
                 double atol, double rtol, sp_gc_result *res) {
    sp_gc_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    gc g = {.f = f, .ctx = ctx, .n_in = n_in, .spec = spec};
    g.t = sp_tape_create(1 << 20);
    g.val = calloc((size_t)n_in + 1, sizeof *g.val);
    g.grad = calloc((size_t)n_in + 1, sizeof *g.grad);
    g.in = calloc((size_t)n_in + 1, sizeof *g.in);
    if (!g.t || !g.val || !g.grad || !g.in) {
        snprintf(res->worst, sizeof res->worst, "out of memory");
        return finish(&g, 0);
    }
    uint64_t rs = seed ^ 0x6A09E667F3BCC909ull;
    for (int i = 0; i < n_in; i++) {
        long n = sp_shape_size(spec[i].ndim, spec[i].shape);
        g.val[i] = malloc((size_t)(n ? n : 1) * sizeof(float));
        g.grad[i] = calloc((size_t)(n ? n : 1), sizeof(float));
        if (!g.val[i] || !g.grad[i]) {
            snprintf(res->worst, sizeof res->worst, "out of memory");
            return finish(&g, 0);
        }
        for (long k = 0; k < n; k++)
            g.val[i][k] =
                snap((float)(spec[i].lo + (spec[i].hi - spec[i].lo) * uniform01(&rs)));
    }

    /* Output size first (weights need it), without gradients. */
    sp_tensor *out = build(&g, 0);
    if (!out) {
        snprintf(res->worst, sizeof res->worst, "build returned NULL or failed the tape");
        return finish(&g, 0);
    }
    g.n_out = out->size;
    g.w = malloc((size_t)(g.n_out ? g.n_out : 1) * sizeof(float));
    if (!g.w) {
        snprintf(res->worst, sizeof res->worst, "out of memory");
        return finish(&g, 0);
    }
    for (long k = 0; k < g.n_out; k++) g.w[k] = (float)(2.0 * uniform01(&rs) - 1.0);

    /* Analytic pass: grads pre-filled with random values, so an op that
     * overwrites instead of adding is caught. */
    float **g0 = calloc((size_t)n_in + 1, sizeof *g0);
    if (!g0) {
        snprintf(res->worst, sizeof res->worst, "out of memory");
        return finish(&g, 0);
    }
    int any_grad = 0;
    for (int i = 0; i < n_in; i++) {
        if (!spec[i].requires_grad) continue;
        any_grad = 1;
        long n = sp_shape_size(spec[i].ndim, spec[i].shape);
        g0[i] = malloc((size_t)(n ? n : 1) * sizeof(float));
        if (!g0[i]) break;
        for (long k = 0; k < n; k++) g.grad[i][k] = g0[i][k] = (float)(uniform01(&rs) - 0.5);
    }
    int ok = 1;
    out = build(&g, 1);
    if (!out || out->size != g.n_out) {
        snprintf(res->worst, sizeof res->worst, "build with gradients failed or changed size");
        ok = 0;
    } else if (any_grad && !out->grad) {
        snprintf(res->worst, sizeof res->worst,
                 "output has no grad buffer although an input requires grad");
        ok = 0;
    } else if (out->grad) {
        for (long k = 0; k < g.n_out; k++) out->grad[k] += g.w[k];
        sp_tape_backward(g.t, out, 0.0f);
    }

    int worst_set = 0;
    double worst_ratio = -1;
    for (int i = 0; ok && i < n_in; i++) {
        if (!spec[i].requires_grad) continue;
        if (!g0[i]) {
            snprintf(res->worst, sizeof res->worst, "out of memory");
            ok = 0;
            break;
        }
        long n = sp_shape_size(spec[i].ndim, spec[i].shape);
        /* The analytic gradient, before the numeric passes reuse the tape. */
        double *ga = malloc((size_t)(n ? n : 1) * sizeof(double));
        if (!ga) {
            snprintf(res->worst, sizeof res->worst, "out of memory");
            ok = 0;
            break;
        }
        for (long k = 0; k < n; k++) ga[k] = (double)g.grad[i][k] - (double)g0[i][k];
        for (long k = 0; k < n; k++) {
            float *x = &g.val[i][k];
            double fd, fd_err;
            int rc = numeric_derivative(&g, x, atol, rtol, &fd, &fd_err);
            if (rc < 0) {
                char idx[64];
                index_str(idx, sizeof idx, &spec[i], k);
                snprintf(res->worst, sizeof res->worst,
                         "input %d %s = %.7g: loss not finite or build failed near it", i, idx,
                         (double)*x);
                ok = 0;
                break;
            }
            double tol = atol + rtol * fabs(fd);
            if (rc > 0 || fd_err > 0.5 * tol) {
                res->n_skipped++; /* a kink (or noise) at every step: the numbers say nothing */
                continue;
            }
            double e1 = fd;
            double err = fabs(ga[k] - e1);
            double rel = err / (fabs(e1) + atol);
            res->n_checked++;
            if (err > res->max_abs_err) res->max_abs_err = err;
            if (rel > res->max_rel_err) res->max_rel_err = rel;
            double ratio = err / tol;
            if (!isfinite(ga[k])) ratio = INFINITY;
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                char idx[64];
                index_str(idx, sizeof idx, &spec[i], k);
                snprintf(res->worst, sizeof res->worst,
                         "input %d %s (x = %.7g): analytic %.9g vs numeric %.9g (|diff| %.3g, "
                         "tol %.3g)",
                         i, idx, (double)*x, ga[k], e1, err, tol);
                worst_set = 1;
            }
            if (!(ratio <= 1.0)) ok = 0;
        }
        free(ga);
    }
    for (int i = 0; i < n_in; i++) free(g0[i]);
    free(g0);
    int total = res->n_checked + res->n_skipped;
    if (ok && total > 0 && 4 * res->n_skipped > total) {
        snprintf(res->worst, sizeof res->worst,
                 "%d of %d elements skipped as non-smooth: the forward is noisy or "
                 "discontinuous",
                 res->n_skipped, total);
        ok = 0;
    }
    if (ok && !worst_set) snprintf(res->worst, sizeof res->worst, "no element checked");
    return finish(&g, ok);
}
