/* Tests of the RAT-SPN op (spn.h): structure from the seed, normalisation by
 * quadrature, exact and soft marginalisation against a naive double-precision
 * evaluation and against numerical integration, gradients (finite
 * differences for x, marg and every parameter), thread-count agreement. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/ops.h"
#include "supair/params.h"
#include "supair/spn.h"
#include "supair/tape.h"
#include "testutil.h"

/* An SPN with its own parameter table, initialised from `seed`. */
typedef struct fixture {
    sp_spn *s;
    sp_params p;
    sp_tape *t;
} fixture;

static int fx_make(fixture *f, const sp_spn_config *cfg, uint64_t seed) {
    sp_error err = {0};
    memset(f, 0, sizeof *f);
    sp_params_init(&f->p);
    if (sp_spn_create(&f->s, cfg, &err) != SP_OK) {
        printf("\n    create: %s\n", err.msg);
        return -1;
    }
    if (sp_spn_add_params(f->s, &f->p, "spn", &err) != SP_OK ||
        sp_params_finalize(&f->p, &err) != SP_OK) {
        printf("\n    params: %s\n", err.msg);
        return -1;
    }
    sp_spn_init_params(f->s, &f->p, seed);
    f->t = sp_tape_create(1 << 20);
    return f->t ? 0 : -1;
}

static void fx_free(fixture *f) {
    sp_tape_destroy(f->t);
    sp_spn_free(f->s);
    sp_params_free(&f->p);
}

/* Scales the logits and variance parameters so the test SPNs are far from
 * uniform (init std 0.5 / 0.1 makes every sum nearly an average). */
static void fx_sharpen(fixture *f, float scale) {
    for (long i = 0; i < f->p.total; i++) f->p.val[i] *= scale;
}

/* log p of N rows with the op, no gradients. */
static void op_logp(fixture *f, const float *x, const float *m, int N, float *out) {
    const int D = sp_spn_get_config(f->s)->n_vars;
    sp_tape_reset(f->t);
    sp_tape_set_grad(f->t, 0);
    sp_tensor *tx = sp_tensor_view(f->t, (float *)x, NULL, 2, (int[]){N, D});
    sp_tensor *tm = m ? sp_tensor_view(f->t, (float *)m, NULL, 2, (int[]){N, D}) : NULL;
    sp_tensor *y = sp_spn_logp(f->t, f->s, &f->p, tx, tm);
    CU_ASSERT_FATAL(y != NULL && !sp_tape_failed(f->t));
    memcpy(out, y->val, (size_t)N * sizeof(float));
    sp_tape_set_grad(f->t, 1);
}

/* ---- naive reference in double, straight from the definition ---- */

static double lse(const double *v, int n) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = v[i] > mx ? v[i] : mx;
    if (mx == -INFINITY) return mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(v[i] - mx);
    return mx + log(s);
}

static void log_softmax(double *out, const float *logits, int n) {
    for (int i = 0; i < n; i++) out[i] = logits[i];
    double z = lse(out, n);
    for (int i = 0; i < n; i++) out[i] -= z;
}

static double ref_logp(const fixture *f, const float *x, const float *m) {
    const sp_spn_config *c = sp_spn_get_config(f->s);
    const int D = c->n_vars, R = c->repetitions, K = c->n_leaf, S = c->n_sum, d = c->depth;
    const int G0 = sp_spn_n_leaf_regions(f->s);
    const int *off = sp_spn_region_offsets(f->s);
    const float *mu = sp_params_val(&f->p, sp_params_find(&f->p, "spn/leaf_mean"));
    const float *pv = sp_params_val(&f->p, sp_params_find(&f->p, "spn/leaf_var"));
    const float *root = sp_params_val(&f->p, sp_params_find(&f->p, "spn/root"));
    int wtop = d == 1 ? K : S, ctop = wtop * wtop;
    double *top = malloc((size_t)R * ctop * sizeof(double));
    double *cur = malloc((size_t)G0 * (K > S ? K : S) * sizeof(double));
    double *nxt = malloc((size_t)G0 * (K > S ? K : S) * sizeof(double));
    int cmax = (K > S ? K : S) * (K > S ? K : S);
    double *prod = malloc((size_t)cmax * sizeof(double));
    double *lw = malloc((size_t)cmax * sizeof(double));
    double *tmp = malloc((size_t)cmax * sizeof(double));
    for (int r = 0; r < R; r++) {
        const int *perm = sp_spn_perm(f->s, r);
        for (int j = 0; j < G0; j++)
            for (int k = 0; k < K; k++) {
                double acc = 0;
                for (int i = off[j]; i < off[j + 1]; i++) {
                    int q = perm[i];
                    long pi = ((long)r * D + i) * K + k;
                    double v = c->var_min + (c->var_max - c->var_min) / (1 + exp(-(double)pv[pi]));
                    double dx = x[q] - (double)mu[pi];
                    double ll = -0.5 * log(2 * M_PI * v) - dx * dx / (2 * v);
                    double mm = m ? m[q] : 0;
                    mm = mm < 0 ? 0 : (mm > 1 ? 1 : mm);
                    acc += (1 - mm) * ll;
                }
                cur[j * K + k] = acc;
            }
        int w = K, groups = G0;
        for (int l = 1; l < d; l++) {
            const float *W = sp_params_val(&f->p, sp_params_find(&f->p, l == 1   ? "spn/sum1"
                                                                        : l == 2 ? "spn/sum2"
                                                                                 : "spn/sum3"));
            int ng = groups / 2, C = w * w;
            for (int g = 0; g < ng; g++) {
                for (int a = 0; a < w; a++)
                    for (int b = 0; b < w; b++)
                        prod[a * w + b] = cur[(2 * g) * w + a] + cur[(2 * g + 1) * w + b];
                for (int s = 0; s < S; s++) {
                    log_softmax(lw, W + (((long)r * ng + g) * S + s) * C, C);
                    for (int q = 0; q < C; q++) tmp[q] = prod[q] + lw[q];
                    nxt[g * S + s] = lse(tmp, C);
                }
            }
            memcpy(cur, nxt, (size_t)ng * S * sizeof(double));
            w = S;
            groups = ng;
        }
        for (int a = 0; a < w; a++)
            for (int b = 0; b < w; b++) top[r * ctop + a * w + b] = cur[a] + cur[w + b];
    }
    double *lr = malloc((size_t)R * ctop * sizeof(double));
    log_softmax(lr, root, R * ctop);
    for (int i = 0; i < R * ctop; i++) lr[i] += top[i];
    double out = lse(lr, R * ctop);
    free(top);
    free(cur);
    free(nxt);
    free(prod);
    free(lw);
    free(tmp);
    free(lr);
    return out;
}

/* ---- structure ---- */

static void test_structure_from_seed(void) {
    sp_error err = {0};
    sp_spn_config c = sp_spn_config_object(1234);
    sp_spn *a, *b, *o;
    CU_ASSERT_FATAL(sp_spn_create(&a, &c, &err) == SP_OK);
    CU_ASSERT_FATAL(sp_spn_create(&b, &c, &err) == SP_OK);
    c.structure_seed = 1235;
    CU_ASSERT_FATAL(sp_spn_create(&o, &c, &err) == SP_OK);
    CU_ASSERT_EQUAL(sp_spn_structure_seed(a), 1234);
    CU_ASSERT_EQUAL(sp_spn_n_leaf_regions(a), 4);
    const int *off = sp_spn_region_offsets(a);
    for (int j = 0; j <= 4; j++) CU_ASSERT_EQUAL(off[j], 196 * j);
    int same_other = 0, same_reps = 0;
    for (int r = 0; r < 6; r++) {
        CU_ASSERT_EQUAL(memcmp(sp_spn_perm(a, r), sp_spn_perm(b, r), 784 * sizeof(int)), 0);
        if (memcmp(sp_spn_perm(a, r), sp_spn_perm(o, r), 784 * sizeof(int)) == 0) same_other++;
        if (r && memcmp(sp_spn_perm(a, r), sp_spn_perm(a, 0), 784 * sizeof(int)) == 0) same_reps++;
        /* A permutation, consistent with leaf_region. */
        int seen[784] = {0};
        const int *pr = sp_spn_perm(a, r);
        for (int i = 0; i < 784; i++) {
            CU_ASSERT_FATAL(pr[i] >= 0 && pr[i] < 784);
            seen[pr[i]]++;
            CU_ASSERT_EQUAL(sp_spn_leaf_region(a, r, pr[i]), i / 196);
        }
        for (int i = 0; i < 784; i++) CU_ASSERT_EQUAL(seen[i], 1);
    }
    CU_ASSERT_EQUAL(same_other, 0);
    CU_ASSERT_EQUAL(same_reps, 0);
    CU_ASSERT_EQUAL(sp_spn_n_params(a), 286560);
    sp_spn_free(a);
    sp_spn_free(b);
    sp_spn_free(o);

    sp_spn_config bg = sp_spn_config_background(7);
    CU_ASSERT_FATAL(sp_spn_create(&a, &bg, &err) == SP_OK);
    CU_ASSERT_EQUAL(sp_spn_n_params(a), 90108);
    CU_ASSERT_EQUAL(sp_spn_region_offsets(a)[1], 1250);
    sp_spn_free(a);

    /* Uneven sizes: 13 variables to depth 3 -> halves 6|7 -> 3,3|3,4 -> ... */
    sp_spn_config u = {.n_vars = 13,
                       .depth = 3,
                       .repetitions = 2,
                       .n_leaf = 2,
                       .n_sum = 2,
                       .var_min = 0.1f,
                       .var_max = 0.5f,
                       .structure_seed = 3};
    CU_ASSERT_FATAL(sp_spn_create(&a, &u, &err) == SP_OK);
    const int want[9] = {0, 1, 3, 4, 6, 7, 9, 11, 13};
    for (int j = 0; j <= 8; j++) CU_ASSERT_EQUAL(sp_spn_region_offsets(a)[j], want[j]);
    sp_spn_free(a);

    /* Bad configs name the field. */
    sp_spn_config bad = sp_spn_config_object(1);
    bad.depth = 11;
    CU_ASSERT_EQUAL(sp_spn_create(&a, &bad, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "n_vars"));
    bad = sp_spn_config_object(1);
    bad.var_min = 0;
    CU_ASSERT_EQUAL(sp_spn_create(&a, &bad, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "variance"));
}

static void test_param_names_and_init(void) {
    fixture f;
    sp_spn_config c = sp_spn_config_object(5);
    CU_ASSERT_FATAL(fx_make(&f, &c, 99) == 0);
    int im = sp_params_find(&f.p, "spn/leaf_mean"), iv = sp_params_find(&f.p, "spn/leaf_var"),
        is = sp_params_find(&f.p, "spn/sum1"), ir = sp_params_find(&f.p, "spn/root");
    CU_ASSERT_FATAL(im >= 0 && iv >= 0 && is >= 0 && ir >= 0);
    CU_ASSERT_EQUAL(f.p.entries[is].shape[0], 6);
    CU_ASSERT_EQUAL(f.p.entries[is].shape[1], 2);
    CU_ASSERT_EQUAL(f.p.entries[is].shape[2], 20);
    CU_ASSERT_EQUAL(f.p.entries[is].shape[3], 400);
    CU_ASSERT_EQUAL(f.p.entries[ir].size, 2400);
    /* Truncated normals: std near 0.1 / 0.5 (of a +-2 sd truncation: 0.88 sd),
     * bounded by 2 sd. */
    struct {
        int i;
        float sd;
    } t[3] = {{im, 0.1f}, {is, 0.5f}, {ir, 0.5f}};
    for (int k = 0; k < 3; k++) {
        const float *v = sp_params_val(&f.p, t[k].i);
        long n = f.p.entries[t[k].i].size;
        double s2 = 0, mx = 0;
        for (long i = 0; i < n; i++) {
            s2 += (double)v[i] * v[i];
            mx = fabs(v[i]) > mx ? fabs(v[i]) : mx;
        }
        SP_ASSERT_CLOSE(sqrt(s2 / n), 0.88 * t[k].sd, 0.05 * t[k].sd);
        CU_ASSERT(mx <= 2 * t[k].sd + 1e-6);
    }
    fx_free(&f);
}

/* ---- values ---- */

static void test_matches_reference(void) {
    sp_spn_config cfgs[3] = {
        sp_spn_config_object(11),
        {.n_vars = 13,
         .depth = 3,
         .repetitions = 3,
         .n_leaf = 3,
         .n_sum = 4,
         .var_min = 0.05f,
         .var_max = 0.5f,
         .structure_seed = 4},
        sp_spn_config_background(12),
    };
    for (int ci = 0; ci < 3; ci++) {
        fixture f;
        CU_ASSERT_FATAL(fx_make(&f, &cfgs[ci], 100 + ci) == 0);
        fx_sharpen(&f, 6.0f);
        const int D = cfgs[ci].n_vars, N = 5;
        float *x = malloc((size_t)N * D * sizeof(float)),
              *m = malloc((size_t)N * D * sizeof(float));
        sp_gc_fill_uniform(x, (long)N * D, -0.2f, 1.0f, 1 + ci);
        sp_gc_fill_uniform(m, (long)N * D, -0.3f, 1.3f, 2 + ci);
        float out[5], out_nm[5];
        op_logp(&f, x, m, N, out);
        op_logp(&f, x, NULL, N, out_nm);
        for (int n = 0; n < N; n++) {
            double want = ref_logp(&f, x + (long)n * D, m + (long)n * D);
            double want_nm = ref_logp(&f, x + (long)n * D, NULL);
            /* Leaf sums of ~1000 float terms of size ~5: 1e-5 relative; the
             * 13-variable SPN is held to 2e-6. */
            double rel = ci == 1 ? 2e-6 : 2e-5, abs_tol = ci == 1 ? 2e-6 : 1e-4;
            SP_ASSERT_CLOSE(out[n], want, rel * fabs(want) + abs_tol);
            SP_ASSERT_CLOSE(out_nm[n], want_nm, rel * fabs(want_nm) + abs_tol);
        }
        free(x);
        free(m);
        fx_free(&f);
    }
}

static void test_full_marginal_is_zero(void) {
    sp_spn_config cfgs[2] = {sp_spn_config_object(21), sp_spn_config_background(22)};
    for (int ci = 0; ci < 2; ci++) {
        fixture f;
        CU_ASSERT_FATAL(fx_make(&f, &cfgs[ci], 3) == 0);
        fx_sharpen(&f, 5.0f);
        const int D = cfgs[ci].n_vars, N = 70;
        float *x = malloc((size_t)N * D * sizeof(float)),
              *m = malloc((size_t)N * D * sizeof(float));
        sp_gc_fill_uniform(x, (long)N * D, 0.0f, 1.0f, 5);
        sp_gc_fill_uniform(m, (long)N * D, 1.0f, 2.0f, 6); /* clipped to 1 */
        float out[70];
        op_logp(&f, x, m, N, out);
        for (int n = 0; n < N; n++) CU_ASSERT_EQUAL(out[n], 0.0f);
        if (out[0] != 0.0f) printf("\n    full marginal: log p = %.9g, want 0 exactly\n", out[0]);
        free(x);
        free(m);
        fx_free(&f);
    }
}

/* A NaN pixel poisons its row (training must see it), and only its row. */
static void test_nan_propagates(void) {
    fixture f;
    sp_spn_config c = sp_spn_config_object(23);
    CU_ASSERT_FATAL(fx_make(&f, &c, 4) == 0);
    const int N = 3, D = 784;
    float *x = malloc((size_t)N * D * sizeof(float)), out[3];
    sp_gc_fill_uniform(x, (long)N * D, 0.0f, 1.0f, 8);
    x[D + 100] = NAN;
    op_logp(&f, x, NULL, N, out);
    CU_ASSERT(isfinite(out[0]) && isfinite(out[2]));
    CU_ASSERT(isnan(out[1]));
    free(x);
    fx_free(&f);
}

/* int p(x) dx = 1 over a 2-variable SPN by the midpoint rule. */
static void test_integrates_to_one(void) {
    sp_spn_config c = {.n_vars = 2,
                       .depth = 1,
                       .repetitions = 3,
                       .n_leaf = 4,
                       .n_sum = 1,
                       .var_min = 0.05f,
                       .var_max = 0.3f,
                       .structure_seed = 8};
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 17) == 0);
    fx_sharpen(&f, 8.0f); /* means spread over ~+-1.6 */
    const int G = 400;
    const double lo = -4.0, h = 8.0 / G;
    float *x = malloc((size_t)G * G * 2 * sizeof(float)),
          *out = malloc((size_t)G * G * sizeof(float));
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            x[((long)i * G + j) * 2] = (float)(lo + (i + 0.5) * h);
            x[((long)i * G + j) * 2 + 1] = (float)(lo + (j + 0.5) * h);
        }
    op_logp(&f, x, NULL, G * G, out);
    double total = 0;
    for (long i = 0; i < (long)G * G; i++) total += exp((double)out[i]) * h * h;
    SP_ASSERT_CLOSE(total, 1.0, 2e-4);
    free(x);
    free(out);
    fx_free(&f);
}

/* The marginal over m = 1 pixels equals the joint integrated over them
 * (depth 2, four variables, two integrated out numerically). */
static void test_marginal_matches_integral(void) {
    sp_spn_config c = {.n_vars = 4,
                       .depth = 2,
                       .repetitions = 2,
                       .n_leaf = 3,
                       .n_sum = 3,
                       .var_min = 0.05f,
                       .var_max = 0.3f,
                       .structure_seed = 9};
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 18) == 0);
    fx_sharpen(&f, 8.0f);
    const int G = 300;
    const double lo = -4.0, h = 8.0 / G;
    const float x0 = 0.3f, x2 = -0.4f; /* observed: pixels 0 and 2; 1 and 3 integrated */
    float *x = malloc((size_t)G * G * 4 * sizeof(float)),
          *out = malloc((size_t)G * G * sizeof(float));
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            float *r = x + ((long)i * G + j) * 4;
            r[0] = x0;
            r[1] = (float)(lo + (i + 0.5) * h);
            r[2] = x2;
            r[3] = (float)(lo + (j + 0.5) * h);
        }
    op_logp(&f, x, NULL, G * G, out);
    double total = 0;
    for (long i = 0; i < (long)G * G; i++) total += exp((double)out[i]) * h * h;
    float xm[4] = {x0, 123.0f, x2, -77.0f}, mm[4] = {0.0f, 1.0f, -0.5f, 1.0f}, lm;
    op_logp(&f, xm, mm, 1, &lm);
    SP_ASSERT_CLOSE(lm, log(total), 2e-4);
    free(x);
    free(out);
    fx_free(&f);
}

/* ---- gradients ---- */

typedef struct gc_ctx {
    fixture *f;
} gc_ctx;

static sp_tensor *build_logp(sp_tape *t, sp_tensor **in, void *vctx) {
    gc_ctx *g = vctx;
    return sp_spn_logp(t, g->f->s, &g->f->p, in[0], in[1]);
}

static void test_grad_inputs(void) {
    sp_spn_config c = {.n_vars = 12,
                       .depth = 2,
                       .repetitions = 2,
                       .n_leaf = 3,
                       .n_sum = 3,
                       .var_min = 0.1f,
                       .var_max = 0.4f,
                       .structure_seed = 10};
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 19) == 0);
    fx_sharpen(&f, 6.0f);
    gc_ctx g = {&f};
    sp_gc_input spec[2] = {{2, {5, 12}, -0.3f, 1.2f, 1}, {2, {5, 12}, 0.02f, 0.98f, 1}};
    SP_ASSERT_GRADCHECK(build_logp, &g, 2, spec, 1, SP_GC_ATOL, SP_GC_RTOL);
    /* x only, no marginalisation input. */
    spec[1].requires_grad = 0;
    SP_ASSERT_GRADCHECK(build_logp, &g, 2, spec, 2, SP_GC_ATOL, SP_GC_RTOL);
    fx_free(&f);
    /* Depth 1 runs the dense leaf path. */
    sp_spn_config c1 = {.n_vars = 9,
                        .depth = 1,
                        .repetitions = 3,
                        .n_leaf = 3,
                        .n_sum = 1,
                        .var_min = 0.1f,
                        .var_max = 0.4f,
                        .structure_seed = 11};
    CU_ASSERT_FATAL(fx_make(&f, &c1, 20) == 0);
    fx_sharpen(&f, 6.0f);
    sp_gc_input spec1[2] = {{2, {4, 9}, -0.3f, 1.2f, 1}, {2, {4, 9}, 0.02f, 0.98f, 1}};
    SP_ASSERT_GRADCHECK(build_logp, &g, 2, spec1, 3, SP_GC_ATOL, SP_GC_RTOL);
    fx_free(&f);
}

/* clip(m, 0, 1) passes no gradient outside [0, 1]; inside it does. */
static void test_grad_marg_clip(void) {
    sp_spn_config c = {.n_vars = 12,
                       .depth = 2,
                       .repetitions = 2,
                       .n_leaf = 3,
                       .n_sum = 3,
                       .var_min = 0.1f,
                       .var_max = 0.4f,
                       .structure_seed = 10};
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 19) == 0);
    fx_sharpen(&f, 6.0f);
    float x[24], m[24], gm[24] = {0};
    sp_gc_fill_uniform(x, 24, 0.0f, 1.0f, 3);
    for (int i = 0; i < 24; i++) m[i] = (i % 3 == 0) ? -0.5f : (i % 3 == 1) ? 1.5f : 0.5f;
    sp_tape_reset(f.t);
    sp_tensor *tx = sp_tensor_view(f.t, x, NULL, 2, (int[]){2, 12});
    sp_tensor *tm = sp_tensor_view(f.t, m, gm, 2, (int[]){2, 12});
    sp_tensor *y = sp_spn_logp(f.t, f.s, &f.p, tx, tm);
    CU_ASSERT_FATAL(y != NULL);
    y->grad[0] = 1.0f;
    y->grad[1] = -0.5f;
    sp_tape_backward(f.t, y, 0.0f);
    for (int i = 0; i < 24; i++) {
        if (i % 3 != 2) CU_ASSERT_EQUAL(gm[i], 0.0f);
        if (i % 3 == 2) CU_ASSERT(gm[i] != 0.0f);
    }
    fx_free(&f);
}

/* L = sum_n w_n log p_n in double. */
static double loss_of(fixture *f, const float *x, const float *m, const float *w, int N) {
    float out[64];
    op_logp(f, x, m, N, out);
    double L = 0;
    for (int n = 0; n < N; n++) L += (double)w[n] * out[n];
    return L;
}

/* Every parameter entry against central differences with Richardson
 * extrapolation; p->grad pre-filled so a backward that assigns fails. */
static void check_param_grads(const sp_spn_config *c, float sharpen, uint64_t seed) {
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, c, seed) == 0);
    fx_sharpen(&f, sharpen);
    const int D = c->n_vars, N = 6;
    float x[6 * 16], m[6 * 16], w[6];
    CU_ASSERT_FATAL(D <= 16);
    sp_gc_fill_uniform(x, (long)N * D, -0.3f, 1.2f, seed + 1);
    sp_gc_fill_uniform(m, (long)N * D, -0.2f, 1.2f, seed + 2);
    sp_gc_fill_uniform(w, N, -1.0f, 1.0f, seed + 3);
    float *pre = malloc((size_t)f.p.total * sizeof(float));
    sp_gc_fill_uniform(pre, f.p.total, -1.0f, 1.0f, seed + 4);
    memcpy(f.p.grad, pre, (size_t)f.p.total * sizeof(float));
    sp_tape_reset(f.t);
    sp_tensor *tx = sp_tensor_view(f.t, x, NULL, 2, (int[]){N, D});
    sp_tensor *tm = sp_tensor_view(f.t, m, NULL, 2, (int[]){N, D});
    sp_tensor *y = sp_spn_logp(f.t, f.s, &f.p, tx, tm);
    CU_ASSERT_FATAL(y && y->grad);
    for (int n = 0; n < N; n++) y->grad[n] = w[n];
    sp_tape_backward(f.t, y, 0.0f);
    int bad = 0, checked = 0;
    double worst = 0;
    for (int e = 0; e < f.p.n_entries; e++) {
        const sp_param_entry *pe = &f.p.entries[e];
        for (long i = 0; i < pe->size; i++) {
            long q = pe->offset + i;
            float v0 = f.p.val[q];
            const float h = 0.05f;
            double dd[2];
            for (int k = 0; k < 2; k++) {
                float hh = k ? h / 2 : h;
                f.p.val[q] = v0 + hh;
                double lp = loss_of(&f, x, m, w, N);
                f.p.val[q] = v0 - hh;
                double lm = loss_of(&f, x, m, w, N);
                dd[k] = (lp - lm) / (2.0 * hh);
            }
            f.p.val[q] = v0;
            double fd = (4 * dd[1] - dd[0]) / 3;
            double an = (double)f.p.grad[q] - pre[q];
            double err = fabs(an - fd);
            checked++;
            if (err > 2e-3 + 5e-3 * fabs(fd)) {
                if (bad < 5)
                    printf("\n    %s[%ld]: analytic %.6g, numeric %.6g\n", pe->name, i, an, fd);
                bad++;
            }
            worst = err > worst ? err : worst;
        }
    }
    if (bad)
        printf("    %d of %d parameter gradients wrong (worst abs err %.3g)\n", bad, checked,
               worst);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(checked > 100);
    free(pre);
    fx_free(&f);
}

static void test_grad_params(void) {
    sp_spn_config c2 = {.n_vars = 12,
                        .depth = 2,
                        .repetitions = 2,
                        .n_leaf = 3,
                        .n_sum = 3,
                        .var_min = 0.1f,
                        .var_max = 0.4f,
                        .structure_seed = 12};
    check_param_grads(&c2, 6.0f, 40);
    sp_spn_config c1 = {.n_vars = 7,
                        .depth = 1,
                        .repetitions = 3,
                        .n_leaf = 4,
                        .n_sum = 1,
                        .var_min = 0.05f,
                        .var_max = 0.2f,
                        .structure_seed = 13};
    check_param_grads(&c1, 6.0f, 41);
    sp_spn_config c3 = {.n_vars = 11,
                        .depth = 3,
                        .repetitions = 2,
                        .n_leaf = 2,
                        .n_sum = 3,
                        .var_min = 0.1f,
                        .var_max = 0.4f,
                        .structure_seed = 14};
    check_param_grads(&c3, 6.0f, 42);
}

/* The leaf kernels at shapes the small gradchecks do not reach, through
 * sp_spn_logp_multi with M marginalisations per x row (M = 1: sp_spn_logp):
 * values against the naive double evaluation, and the gradients of x, marg
 * and the leaf parameters at the pixels px (in several tiles or regions)
 * against central differences of that double evaluation (float differences
 * of sums over hundreds of pixels would be too noisy). */
static void leaf_kernel_case(sp_spn_config c, int NX, int M, const int *px, int npx, int seed) {
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, seed) == 0);
    fx_sharpen(&f, 3.0f);
    const int N = NX * M, D = c.n_vars, K = c.n_leaf;
    float *x = malloc(sizeof(float) * NX * D), *m = malloc(sizeof(float) * N * D);
    float *gx = calloc((size_t)NX * D, sizeof(float)), *gm = calloc((size_t)N * D, sizeof(float));
    float *gy = malloc(sizeof(float) * N);
    sp_gc_fill_uniform(x, (long)NX * D, -0.2f, 1.1f, seed + 1);
    sp_gc_fill_uniform(m, (long)N * D, -0.2f, 1.2f, seed + 2);
    sp_gc_fill_uniform(gy, N, -1.0f, 1.0f, seed + 3);
    const int em = N - 1 - (N > 2); /* the example whose marg is checked */
    for (int a = 0; a < npx; a++) m[(long)em * D + px[a]] = 0.1f + 0.8f * a / npx; /* inside [0,1] */
    sp_params_zero_grad(&f.p);
    sp_tape_reset(f.t);
    sp_tensor *tx = sp_tensor_view(f.t, x, gx, 2, (int[]){NX, D});
    sp_tensor *tm = sp_tensor_view(f.t, m, gm, 2, (int[]){N, D});
    sp_tensor *y = M > 1 ? sp_spn_logp_multi(f.t, f.s, &f.p, tx, tm, M)
                         : sp_spn_logp(f.t, f.s, &f.p, tx, tm);
    CU_ASSERT_FATAL(y != NULL);
    for (int e = 0; e < N; e++) {
        double want = ref_logp(&f, x + (long)(e / M) * D, m + (long)e * D);
        SP_ASSERT_CLOSE(y->val[e], want, 2e-5 * fabs(want) + 1e-4);
    }
    memcpy(y->grad, gy, sizeof(float) * N);
    sp_tape_backward(f.t, y, 0.0f);
    float *mean = sp_params_val(&f.p, sp_params_find(&f.p, "spn/leaf_mean"));
    float *var = sp_params_val(&f.p, sp_params_find(&f.p, "spn/leaf_var"));
    const float *gmean = sp_params_grad(&f.p, sp_params_find(&f.p, "spn/leaf_mean"));
    const float *gvar = sp_params_grad(&f.p, sp_params_find(&f.p, "spn/leaf_var"));
    const int xs = (NX - 1) / 2; /* the x row checked */
    int bad = 0, checked = 0;
    for (int kind = 0; kind < 4; kind++)
        for (int a = 0; a < npx; a++) {
            /* kind 0: x; 1: marg; 2, 3: mean / variance parameter at row
             * px[a] of the last repetition, of Gaussians in every block. */
            const int gk[6] = {1 % K, K - 1, 23 % K, K / 2, 0, K > 1 ? K - 2 : 0};
            const long pi = ((long)(c.repetitions - 1) * D + px[a]) * K + gk[a % 6];
            float *v = kind == 0 ? x + (long)xs * D + px[a]
                     : kind == 1 ? m + (long)em * D + px[a]
                     : kind == 2 ? mean + pi : var + pi;
            const double an = kind == 0 ? gx[(long)xs * D + px[a]]
                            : kind == 1 ? gm[(long)em * D + px[a]]
                            : kind == 2 ? gmean[pi] : gvar[pi];
            const float v0 = *v, h = 1e-3f, vs[2] = {v0 + h, v0 - h};
            /* Only the examples the entry reaches. */
            const int e0 = kind == 0 ? xs * M : kind == 1 ? em : 0;
            const int e1 = kind == 0 ? e0 + M : kind == 1 ? em + 1 : N;
            double L[2];
            for (int sg = 0; sg < 2; sg++) {
                *v = vs[sg];
                L[sg] = 0;
                for (int e = e0; e < e1; e++)
                    L[sg] += gy[e] * ref_logp(&f, x + (long)(e / M) * D, m + (long)e * D);
            }
            *v = v0;
            const double fd = (L[0] - L[1]) / ((double)vs[0] - vs[1]);
            checked++;
            if (fabs(an - fd) > 1e-3 * fabs(fd) + 1e-4 && bad++ < 5)
                printf("\n    D %d K %d M %d: kind %d pixel %d: analytic %.7g, numeric %.7g\n", D, K,
                       M, kind, px[a], an, fd);
        }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(checked, 4 * npx);
    free(x), free(m), free(gx), free(gm), free(gy);
    fx_free(&f);
}

static void test_leaf_kernels(void) {
    /* Dense kernel: 601 pixels = 3 pixel tiles and a ragged last vector;
     * 4 marginalisations per scene (the background SPN's use), and 1. */
    const int dpx[] = {0, 7, 94, 255, 256, 300, 511, 512, 599, 600};
    sp_spn_config dense = {.n_vars = 601, .depth = 1, .repetitions = 2, .n_leaf = 3, .n_sum = 1,
                           .var_min = 0.05f, .var_max = 0.3f, .structure_seed = 16};
    leaf_kernel_case(dense, 3, 4, dpx, 10, 44);
    leaf_kernel_case(dense, 5, 1, dpx, 10, 54);
    /* Gather kernels: K = 26 Gaussians (forward blocks of 4 and a tail of 2,
     * Theta-gradient blocks of 24 and 2), 21 examples (example vectors of 16,
     * then a ragged one), 4 leaf regions of 25 pixels; and the object SPN
     * itself (K = 20, regions of 196 pixels) on 20 examples. */
    const int gpx[] = {0, 13, 26, 51, 77, 99};
    sp_spn_config gather = {.n_vars = 100, .depth = 2, .repetitions = 2, .n_leaf = 26, .n_sum = 3,
                            .var_min = 0.05f, .var_max = 0.3f, .structure_seed = 17};
    leaf_kernel_case(gather, 21, 1, gpx, 6, 64);
    const int opx[] = {0, 200, 391, 392, 600, 783};
    leaf_kernel_case(sp_spn_config_object(18), 20, 1, opx, 6, 74);
}

/* ---- threads ---- */

/* Forward values and every gradient, at a given thread count. */
static void run_threads(fixture *f, int threads, const float *x, const float *m, int N, float *out,
                        float *gx, float *gm, float *gp) {
    const int D = sp_spn_get_config(f->s)->n_vars;
    omp_set_num_threads(threads);
    sp_params_zero_grad(&f->p);
    sp_tape_reset(f->t);
    memset(gx, 0, (size_t)N * D * sizeof(float));
    memset(gm, 0, (size_t)N * D * sizeof(float));
    sp_tensor *tx = sp_tensor_view(f->t, (float *)x, gx, 2, (int[]){N, D});
    sp_tensor *tm = sp_tensor_view(f->t, (float *)m, gm, 2, (int[]){N, D});
    sp_tensor *y = sp_spn_logp(f->t, f->s, &f->p, tx, tm);
    CU_ASSERT_FATAL(y != NULL);
    for (int n = 0; n < N; n++) y->grad[n] = 1.0f / N;
    sp_tape_backward(f->t, y, 0.0f);
    memcpy(out, y->val, (size_t)N * sizeof(float));
    memcpy(gp, f->p.grad, (size_t)f->p.total * sizeof(float));
}

static double max_rel_diff(const float *a, const float *b, long n) {
    double scale = 0, diff = 0;
    for (long i = 0; i < n; i++) {
        scale = fabs(a[i]) > scale ? fabs(a[i]) : scale;
        diff = fabs(a[i] - b[i]) > diff ? fabs(a[i] - b[i]) : diff;
    }
    return scale > 0 ? diff / scale : diff;
}

static void threads_agree(sp_spn_config c, int N) {
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 32) == 0);
    fx_sharpen(&f, 4.0f);
    const int D = c.n_vars;
    long nd = (long)N * D;
    float *x = malloc(nd * sizeof(float)), *m = malloc(nd * sizeof(float));
    sp_gc_fill_uniform(x, nd, 0.0f, 1.0f, 33);
    sp_gc_fill_uniform(m, nd, -0.2f, 1.2f, 34);
    float *o[3], *gx[3], *gm[3], *gp[3];
    for (int k = 0; k < 3; k++) {
        o[k] = malloc(N * sizeof(float));
        gx[k] = malloc(nd * sizeof(float));
        gm[k] = malloc(nd * sizeof(float));
        gp[k] = malloc((size_t)f.p.total * sizeof(float));
    }
    int saved = omp_get_max_threads();
    run_threads(&f, 1, x, m, N, o[0], gx[0], gm[0], gp[0]);
    run_threads(&f, 2, x, m, N, o[1], gx[1], gm[1], gp[1]);
    run_threads(&f, 2, x, m, N, o[2], gx[2], gm[2], gp[2]);
    omp_set_num_threads(saved);
    /* Forward and per-example gradients do not depend on the thread count
     * (fixed chunks); parameter gradients to summation order. */
    CU_ASSERT_EQUAL(memcmp(o[0], o[1], N * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(gx[0], gx[1], nd * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(gm[0], gm[1], nd * sizeof(float)), 0);
    double rel = max_rel_diff(gp[0], gp[1], f.p.total);
    if (rel > 1e-5) printf("\n    1 vs 2 threads: parameter gradients differ by %.3g\n", rel);
    CU_ASSERT(rel <= 1e-5);
    /* Same thread count: bit-identical. */
    CU_ASSERT_EQUAL(memcmp(gp[1], gp[2], (size_t)f.p.total * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(o[1], o[2], N * sizeof(float)), 0);
    for (int k = 0; k < 3; k++) {
        free(o[k]);
        free(gx[k]);
        free(gm[k]);
        free(gp[k]);
    }
    free(x);
    free(m);
    fx_free(&f);
}

static void test_threads_agree(void) {
    threads_agree(sp_spn_config_object(31), 203); /* not a multiple of the chunk */
    threads_agree(sp_spn_config_background(35), 150);
}

/* ---- sp_spn_logp_multi ---- */

static int multi_M;

static sp_tensor *build_multi(sp_tape *t, sp_tensor **in, void *vctx) {
    gc_ctx *g = vctx;
    return sp_spn_logp_multi(t, g->f->s, &g->f->p, in[0], in[1], multi_M);
}

/* Entries of a that differ from b by more than rel * max|b| (0: bit for
 * bit). */
static long count_differ(const float *a, const float *b, long n, double rel) {
    double scale = 0;
    for (long i = 0; i < n; i++) scale = fabs(b[i]) > scale ? fabs(b[i]) : scale;
    long bad = 0;
    for (long i = 0; i < n; i++) bad += rel == 0 ? a[i] != b[i] : fabs(a[i] - b[i]) > rel * scale;
    return bad;
}

/* y (N) after a backward pass seeded with gy (N). */
static sp_tensor *backward_seeded(fixture *f, sp_tensor *y, const float *gy, int N) {
    CU_ASSERT_FATAL(y != NULL && y->size == N);
    memcpy(y->grad, gy, sizeof(float) * N);
    sp_tape_backward(f->t, y, 0.0f);
    return y;
}

typedef sp_tensor *(*multi_fn)(sp_tape *, const sp_spn *, const sp_params *, const sp_tensor *,
                               const sp_tensor *, int);

/* Shape errors of a many-marginalisation entry point fn(x, m, M), two x
 * rows of a 9-variable SPN c: m of bad_rows rows at M = bad_M, and an empty m
 * at M = low_M, fail the tape; good_rows rows at M = 4 give 8 values. */
static void multi_shape_errors(sp_spn_config c, multi_fn fn, int bad_rows, int bad_M, int low_M,
                               int good_rows) {
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 1) == 0);
    float buf[9 * 8] = {0};
    const int rows[3] = {bad_rows, 0, good_rows}, Ms[3] = {bad_M, low_M, 4};
    for (int k = 0; k < 3; k++) {
        sp_tape_reset(f.t);
        sp_tensor *x = sp_tensor_view(f.t, buf, NULL, 2, (int[]){2, 9});
        sp_tensor *m = sp_tensor_view(f.t, buf, NULL, 2, (int[]){rows[k], 9});
        sp_tensor *y = fn(f.t, f.s, &f.p, x, m, Ms[k]);
        if (k < 2) {
            CU_ASSERT_PTR_NULL(y);
            CU_ASSERT(sp_tape_failed(f.t));
        } else {
            CU_ASSERT(y != NULL && y->size == 8);
        }
    }
    fx_free(&f);
}

/* Values and every gradient of logp_multi(x, marg, M) against sp_spn_logp
 * on x with each row repeated M times, then finite differences, for a
 * gather-mode and a dense-mode SPN, with and without a team. Values and the
 * marg gradients agree bit for bit (the same arithmetic per row); the
 * gradients of x and of the parameters too in gather mode (it repeats x),
 * while the dense kernel sums a scene's M marginalisations before
 * accumulating them, a different rounding order (held to 1e-5). */
static void multi_case(sp_spn_config c, int threads, int M) {
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 70) == 0);
    fx_sharpen(&f, 6.0f);
    const int D = c.n_vars, Nx = 70, N = Nx * M;
    const double rel = c.depth == 1 ? 1e-5 : 0;
    float *x = malloc(sizeof(float) * Nx * D), *xr = malloc(sizeof(float) * N * D);
    float *m = malloc(sizeof(float) * N * D), *gy = malloc(sizeof(float) * N);
    float *gx1 = calloc((size_t)Nx * D, sizeof(float)), *gm1 = calloc((size_t)N * D, sizeof(float));
    float *gxr = calloc((size_t)N * D, sizeof(float)), *gm2 = calloc((size_t)N * D, sizeof(float));
    float *y1 = malloc(sizeof(float) * N), *gp1 = malloc(sizeof(float) * f.p.total);
    sp_gc_fill_uniform(x, (long)Nx * D, 0.0f, 1.0f, 71);
    sp_gc_fill_uniform(m, (long)N * D, -0.2f, 1.2f, 72);
    sp_gc_fill_uniform(gy, N, -1.0f, 1.0f, 73);
    for (int n = 0; n < N; n++) memcpy(xr + (long)n * D, x + (long)(n / M) * D, sizeof(float) * D);
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    sp_params_zero_grad(&f.p);
    sp_tape_reset(f.t);
    sp_tensor *y = backward_seeded(
        &f,
        sp_spn_logp_multi(f.t, f.s, &f.p, sp_tensor_view(f.t, x, gx1, 2, (int[]){Nx, D}),
                          sp_tensor_view(f.t, m, gm1, 2, (int[]){N, D}), M),
        gy, N);
    memcpy(y1, y->val, sizeof(float) * N);
    memcpy(gp1, f.p.grad, sizeof(float) * f.p.total);
    sp_params_zero_grad(&f.p);
    sp_tape_reset(f.t);
    y = backward_seeded(&f,
                        sp_spn_logp(f.t, f.s, &f.p, sp_tensor_view(f.t, xr, gxr, 2, (int[]){N, D}),
                                    sp_tensor_view(f.t, m, gm2, 2, (int[]){N, D})),
                        gy, N);
    omp_set_num_threads(saved);
    float *want_x = calloc((size_t)Nx * D, sizeof(float));
    for (int n = 0; n < Nx; n++)
        for (int i = 0; i < D; i++)
            for (int k = 0; k < M; k++)
                want_x[(long)n * D + i] += gxr[((long)n * M + k) * D + i];
    long bad_x = count_differ(gx1, want_x, (long)Nx * D, rel);
    long bad_p = count_differ(gp1, f.p.grad, f.p.total, rel);
    CU_ASSERT_EQUAL(memcmp(y1, y->val, sizeof(float) * N), 0);
    CU_ASSERT_EQUAL(memcmp(gm1, gm2, sizeof(float) * N * D), 0);
    CU_ASSERT_EQUAL(bad_p, 0);
    CU_ASSERT_EQUAL(bad_x, 0);
    if (bad_x || bad_p)
        printf("\n    logp_multi (depth %d, M %d): %ld x and %ld parameter gradients differ\n",
               c.depth, M, bad_x, bad_p);
    free(want_x);
    /* Finite differences (a small batch: no team). */
    gc_ctx g = {&f};
    multi_M = M;
    /* Float differences of sums over many pixels are too noisy: wide
     * SPNs are checked against the double evaluation (test_dense_tiles). */
    if (D <= 16) {
        sp_gc_input spec[2] = {{2, {2, D}, -0.3f, 1.2f, 1}, {2, {2 * M, D}, 0.02f, 0.98f, 1}};
        SP_ASSERT_GRADCHECK(build_multi, &g, 2, spec, 74 + c.depth, SP_GC_ATOL, SP_GC_RTOL);
    }
    free(x), free(xr), free(m), free(gy), free(gx1), free(gm1), free(gxr), free(gm2), free(y1);
    free(gp1);
    fx_free(&f);
}

static void test_logp_multi(void) {
    sp_spn_config gather = {.n_vars = 12, .depth = 2, .repetitions = 2, .n_leaf = 3, .n_sum = 3,
                            .var_min = 0.1f, .var_max = 0.4f, .structure_seed = 75};
    sp_spn_config dense = {.n_vars = 9, .depth = 1, .repetitions = 3, .n_leaf = 3, .n_sum = 1,
                           .var_min = 0.1f, .var_max = 0.4f, .structure_seed = 76};
    for (int th = 1; th <= 2; th++) {
        multi_case(gather, th, 3);
        /* Dense mode: every register-blocked width (1..4 marginalisations
         * per pass) and the repeat fallback above it. */
        for (int M = 2; M <= 5; M++) multi_case(dense, th, M);
    }
    /* Several pixel tiles, a ragged last vector (gradients: test_dense_tiles). */
    sp_spn_config wide = {.n_vars = 601, .depth = 1, .repetitions = 2, .n_leaf = 3, .n_sum = 1,
                          .var_min = 0.1f, .var_max = 0.4f, .structure_seed = 77};
    multi_case(wide, 2, 4);
    /* marg must hold M rows per x row; M in range */
    multi_shape_errors(dense, sp_spn_logp_multi, 4, 3, 0, 8);
}

/* ---- sp_spn_logp_occluded ---- */

static sp_tensor *build_occluded(sp_tape *t, sp_tensor **in, void *vctx) {
    gc_ctx *g = vctx;
    return sp_spn_logp_occluded(t, g->f->s, &g->f->p, in[0], in[1], multi_M);
}

/* build_occluded on u = v + a fixed offset per element: 0 and 0.52 (inside
 * [0, 1]), 1.0 (above), -0.5 (below), for v in [0.02, 0.46]: every row
 * crosses the clip range while staying 0.02 from its kinks (closer than the
 * checker's smallest step, a difference would straddle the kink). */
static sp_tensor *build_occluded_mixed(sp_tape *t, sp_tensor **in, void *vctx) {
    sp_tensor *off = sp_tensor_new(t, in[1]->ndim, in[1]->shape, 0);
    if (!off) return NULL;
    const float pattern[4] = {0.0f, 0.52f, 1.0f, -0.5f};
    for (long e = 0; e < off->size; e++) off->val[e] = pattern[(e * 7 + e / 11) % 4];
    sp_tensor *moved[2] = {in[0], sp_add(t, in[1], off)};
    return build_occluded(t, moved, vctx);
}

/* logp_occluded(x, u, M) against sp_spn_logp_multi on the marginalisation
 * rows m_k = 1 - w_k formed here in double (w_0 = 1, w_k = w_{k-1}
 * (1 - clip(u_{k-1}))), its m gradients taken back to u by the product rule
 * (also in double), then finite differences of small cases. u straddles the
 * clip range. Dense mode with M <= 4 makes the weights inside its kernels,
 * larger M and gather mode form the rows; both are held to rounding. */
static void occluded_case(sp_spn_config c, int threads, int M) {
    fixture f;
    CU_ASSERT_FATAL(fx_make(&f, &c, 80) == 0);
    fx_sharpen(&f, 6.0f);
    const int D = c.n_vars, Nx = 37, N = Nx * M, U = Nx * (M - 1);
    float *x = malloc(sizeof(float) * Nx * D), *u = malloc(sizeof(float) * U * D);
    float *m = malloc(sizeof(float) * N * D), *gy = malloc(sizeof(float) * N);
    float *gx1 = calloc((size_t)Nx * D, sizeof(float)), *gu1 = calloc((size_t)U * D, sizeof(float));
    float *gx2 = calloc((size_t)Nx * D, sizeof(float)), *gm2 = calloc((size_t)N * D, sizeof(float));
    float *y1 = malloc(sizeof(float) * N), *gp1 = malloc(sizeof(float) * f.p.total);
    double *w = malloc(sizeof(double) * N * D);
    sp_gc_fill_uniform(x, (long)Nx * D, 0.0f, 1.0f, 81);
    sp_gc_fill_uniform(u, (long)U * D, -0.3f, 1.3f, 82);
    sp_gc_fill_uniform(gy, N, -1.0f, 1.0f, 83);
    for (int n = 0; n < Nx; n++)
        for (int i = 0; i < D; i++) {
            double wk = 1.0;
            for (int k = 0; k < M; k++) {
                if (k > 0) {
                    double uk = u[((long)n * (M - 1) + k - 1) * D + i];
                    wk *= 1.0 - (uk < 0 ? 0 : uk > 1 ? 1 : uk);
                }
                w[((long)n * M + k) * D + i] = wk;
                m[((long)n * M + k) * D + i] = (float)(1.0 - wk);
            }
        }
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    sp_params_zero_grad(&f.p);
    sp_tape_reset(f.t);
    sp_tensor *y = backward_seeded(
        &f,
        sp_spn_logp_occluded(f.t, f.s, &f.p, sp_tensor_view(f.t, x, gx1, 2, (int[]){Nx, D}),
                             sp_tensor_view(f.t, u, gu1, 2, (int[]){U, D}), M),
        gy, N);
    memcpy(y1, y->val, sizeof(float) * N);
    memcpy(gp1, f.p.grad, sizeof(float) * f.p.total);
    sp_params_zero_grad(&f.p);
    sp_tape_reset(f.t);
    y = backward_seeded(&f,
                        sp_spn_logp_multi(f.t, f.s, &f.p, sp_tensor_view(f.t, x, gx2, 2, (int[]){Nx, D}),
                                          sp_tensor_view(f.t, m, gm2, 2, (int[]){N, D}), M),
                        gy, N);
    omp_set_num_threads(saved);
    /* d/du_j = sum_{k>j} dL/dw_k dw_k/du_j with dL/dw_k = -dL/dm_k and
     * dw_k/du_j = -w_k / (1 - u_j) inside the clip range (u_j < 1 there
     * for every tested entry; entries at 1 or outside get 0). */
    float *want_u = calloc((size_t)U * D, sizeof(float));
    for (int n = 0; n < Nx; n++)
        for (int j = 0; j < M - 1; j++)
            for (int i = 0; i < D; i++) {
                double uj = u[((long)n * (M - 1) + j) * D + i], acc = 0;
                if (uj < 0 || uj >= 1) continue;
                for (int k = j + 1; k < M; k++)
                    acc += gm2[((long)n * M + k) * D + i] * w[((long)n * M + k) * D + i] / (1 - uj);
                want_u[((long)n * (M - 1) + j) * D + i] = (float)acc;
            }
    long bad_y = count_differ(y1, y->val, N, 2e-6), bad_x = count_differ(gx1, gx2, (long)Nx * D, 1e-5);
    long bad_u = count_differ(gu1, want_u, (long)U * D, 1e-4);
    long bad_p = count_differ(gp1, f.p.grad, f.p.total, 1e-5);
    CU_ASSERT_EQUAL(bad_y + bad_x + bad_u + bad_p, 0);
    if (bad_y || bad_x || bad_u || bad_p)
        printf("\n    logp_occluded (depth %d, M %d, %d threads): %ld values, %ld x, %ld u and %ld "
               "parameter gradients differ\n", c.depth, M, threads, bad_y, bad_x, bad_u, bad_p);
    free(want_u);
    if (D <= 16) {
        gc_ctx g = {&f};
        multi_M = M;
        /* u inside the clip range, then across it */
        sp_gc_input in[2] = {{2, {2, D}, -0.3f, 1.2f, 1}, {2, {2 * (M - 1), D}, 0.02f, 0.98f, 1}};
        SP_ASSERT_GRADCHECK(build_occluded, &g, 2, in, 84 + M, SP_GC_ATOL, SP_GC_RTOL);
        sp_gc_input mixed[2] = {{2, {2, D}, -0.3f, 1.2f, 1}, {2, {2 * (M - 1), D}, 0.02f, 0.46f, 1}};
        SP_ASSERT_GRADCHECK(build_occluded_mixed, &g, 2, mixed, 90 + M, SP_GC_ATOL, SP_GC_RTOL);
    }
    free(x), free(u), free(m), free(gy), free(gx1), free(gu1), free(gx2), free(gm2), free(y1);
    free(gp1), free(w);
    fx_free(&f);
}

static void test_logp_occluded(void) {
    sp_spn_config gather = {.n_vars = 12, .depth = 2, .repetitions = 2, .n_leaf = 3, .n_sum = 3,
                            .var_min = 0.1f, .var_max = 0.4f, .structure_seed = 85};
    sp_spn_config dense = {.n_vars = 9, .depth = 1, .repetitions = 3, .n_leaf = 3, .n_sum = 1,
                           .var_min = 0.1f, .var_max = 0.4f, .structure_seed = 86};
    /* several pixel tiles and a ragged last vector */
    sp_spn_config wide = {.n_vars = 601, .depth = 1, .repetitions = 2, .n_leaf = 3, .n_sum = 1,
                          .var_min = 0.1f, .var_max = 0.4f, .structure_seed = 87};
    for (int th = 1; th <= 2; th++) {
        occluded_case(gather, th, 3);
        for (int M = 2; M <= 5; M++) occluded_case(dense, th, M);
        occluded_case(wide, th, 4);
    }
    /* M - 1 occluder rows per x row; M >= 2 */
    multi_shape_errors(dense, sp_spn_logp_occluded, 8, 4, 1, 6);
}

/* Errors: mismatched shapes fail the tape instead of reading out of bounds. */
static void test_shape_errors(void) {
    fixture f;
    sp_spn_config c = {.n_vars = 8,
                       .depth = 1,
                       .repetitions = 1,
                       .n_leaf = 2,
                       .n_sum = 1,
                       .var_min = 0.1f,
                       .var_max = 0.2f,
                       .structure_seed = 1};
    CU_ASSERT_FATAL(fx_make(&f, &c, 1) == 0);
    float buf[64] = {0};
    sp_tape_reset(f.t);
    sp_tensor *x = sp_tensor_view(f.t, buf, NULL, 2, (int[]){3, 7});
    CU_ASSERT_PTR_NULL(sp_spn_logp(f.t, f.s, &f.p, x, NULL));
    CU_ASSERT(sp_tape_failed(f.t));
    sp_tape_reset(f.t);
    x = sp_tensor_view(f.t, buf, NULL, 2, (int[]){4, 8});
    sp_tensor *m = sp_tensor_view(f.t, buf, NULL, 2, (int[]){3, 8});
    CU_ASSERT_PTR_NULL(sp_spn_logp(f.t, f.s, &f.p, x, m));
    sp_tape_reset(f.t);
    /* Images (N, H, W) are fine. */
    x = sp_tensor_view(f.t, buf, NULL, 3, (int[]){4, 2, 4});
    CU_ASSERT_PTR_NOT_NULL(sp_spn_logp(f.t, f.s, &f.p, x, NULL));
    fx_free(&f);
}

int main(void) {
    static const sp_test_case structure[] = {
        {"structure is a pure function of the seed", test_structure_from_seed},
        {"parameter names, shapes and init", test_param_names_and_init},
        {"shape errors", test_shape_errors},
        {NULL, NULL}};
    static const sp_test_case values[] = {
        {"matches a naive double evaluation", test_matches_reference},
        {"marginalising every pixel gives 0 exactly", test_full_marginal_is_zero},
        {"integrates to one (quadrature)", test_integrates_to_one},
        {"NaN input gives NaN, only in its row", test_nan_propagates},
        {"marginal equals the integral of the joint", test_marginal_matches_integral},
        {NULL, NULL}};
    static const sp_test_case grads[] = {
        {"gradients wrt x and marg (gradcheck)", test_grad_inputs},
        {"no marg gradient where clip saturates", test_grad_marg_clip},
        {"gradients wrt every parameter", test_grad_params},
        {"1 vs 2 threads agree", test_threads_agree},
        {"logp_multi == logp on repeated rows", test_logp_multi},
        {"logp_occluded == logp_multi on the chained weights", test_logp_occluded},
        {"leaf kernels at full shapes vs double differences", test_leaf_kernels},
        {NULL, NULL}};
    static const sp_test_suite suites[] = {{"spn structure", structure},
                                           {"spn values", values},
                                           {"spn gradients", grads},
                                           {NULL, NULL}};
    return sp_test_main(suites);
}
