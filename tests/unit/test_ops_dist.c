/* Tests of the elementwise distribution ops: Gaussian log-densities (logvar
 * and std forms), Bernoulli log-pmf (stable at +-50 logits), the analytic
 * diagonal-Gaussian KL, and the reparameterised sample. Values against
 * double-precision formulas, gradients against finite differences, with
 * equal shapes and with broadcasting (per-feature parameters, scalars). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/ops.h"
#include "testutil.h"

enum op { OP_GAUSS, OP_GAUSS_STD, OP_BERN, OP_KL, OP_RSAMPLE, N_OPS };
static const char *op_names[N_OPS] = {"gauss_logpdf", "gauss_logpdf_std", "bernoulli_logpmf",
                                      "kl_diag_gauss", "gauss_rsample"};
static const int n_args[N_OPS] = {3, 3, 2, 4, 3};

static sp_tensor *apply(sp_tape *t, int op, sp_tensor **in) {
    switch (op) {
    case OP_GAUSS: return sp_gauss_logpdf(t, in[0], in[1], in[2]);
    case OP_GAUSS_STD: return sp_gauss_logpdf_std(t, in[0], in[1], in[2]);
    case OP_BERN: return sp_bernoulli_logpmf(t, in[0], in[1]);
    case OP_KL: return sp_kl_diag_gauss(t, in[0], in[1], in[2], in[3]);
    case OP_RSAMPLE: return sp_gauss_rsample(t, in[0], in[1], in[2]);
    }
    return NULL;
}

static double reference(int op, const double *v) {
    const double log2pi = log(2 * M_PI);
    switch (op) {
    case OP_GAUSS: {
        double d = v[0] - v[1];
        return -0.5 * (log2pi + v[2] + d * d / exp(v[2]));
    }
    case OP_GAUSS_STD: {
        double z = (v[0] - v[1]) / v[2];
        return -0.5 * log2pi - log(v[2]) - 0.5 * z * z;
    }
    case OP_BERN: { /* x log p + (1-x) log(1-p) with p = sigmoid(l), in double */
        double l = v[1];
        double logp = l >= 0 ? -log1p(exp(-l)) : l - log1p(exp(l));
        double log1mp = l >= 0 ? -l - log1p(exp(-l)) : -log1p(exp(l));
        return v[0] * logp + (1 - v[0]) * log1mp;
    }
    case OP_KL: {
        double vq = exp(v[1]), vp = exp(v[3]), d = v[0] - v[2];
        return 0.5 * (log(vp / vq) + (vq + d * d) / vp - 1);
    }
    case OP_RSAMPLE: return v[0] + v[1] * v[2];
    }
    return NAN;
}

/* Input ranges per op and argument: std > 0, x in [0, 1] for Bernoulli. */
static void ranges(int op, int k, float *lo, float *hi) {
    *lo = -2, *hi = 2;
    if (op == OP_GAUSS_STD && k == 2) *lo = 0.3f, *hi = 2;
    if (op == OP_BERN && k == 0) *lo = 0, *hi = 1;
    if (op == OP_RSAMPLE && k == 1) *lo = 0.1f, *hi = 2;
}

typedef struct dshape {
    int nd, s[4];
} dshape;

/* Argument shapes per pattern: all equal; per-feature params; scalar and
 * column params; a leading batch dim only on the data. */
static const dshape patterns[][4] = {
    {{1, {1}}, {1, {1}}, {1, {1}}, {1, {1}}},
    {{2, {3, 5}}, {2, {3, 5}}, {2, {3, 5}}, {2, {3, 5}}},
    {{2, {3, 5}}, {1, {5}}, {1, {5}}, {2, {3, 5}}},
    {{3, {7, 1, 4}}, {1, {1}}, {3, {7, 1, 1}}, {2, {1, 4}}},
    {{2, {4, 3}}, {2, {4, 3}}, {1, {1}}, {1, {3}}},
};

typedef struct op_ctx {
    int op;
} op_ctx;

static sp_tensor *build_op(sp_tape *t, sp_tensor **in, void *ctx) {
    return apply(t, ((op_ctx *)ctx)->op, in);
}

static void make_specs(int op, size_t p, sp_gc_input *s, int grad_mask) {
    for (int k = 0; k < n_args[op]; k++) {
        s[k].ndim = patterns[p][k].nd;
        memcpy(s[k].shape, patterns[p][k].s, sizeof s[k].shape);
        ranges(op, k, &s[k].lo, &s[k].hi);
        s[k].requires_grad = (grad_mask >> k) & 1;
    }
}

static void test_values(void) {
    sp_tape *t = sp_tape_create(1 << 18);
    for (int op = 0; op < N_OPS; op++)
        for (size_t p = 0; p < sizeof patterns / sizeof *patterns; p++) {
            sp_gc_input s[4];
            make_specs(op, p, s, 0);
            sp_tape_reset(t);
            sp_tensor *in[4];
            for (int k = 0; k < n_args[op]; k++) {
                in[k] = sp_tensor_new(t, s[k].ndim, s[k].shape, 0);
                sp_gc_fill_uniform(in[k]->val, in[k]->size, s[k].lo, s[k].hi, 10 * p + k);
            }
            sp_tensor *y = apply(t, op, in);
            CU_ASSERT_PTR_NOT_NULL_FATAL(y);
            int bad = 0;
            for (long i = 0; i < y->size; i++) {
                /* Output index -> each argument's element (numpy rules). */
                int idx[4];
                long rem = i;
                for (int d = y->ndim - 1; d >= 0; d--) {
                    idx[d] = (int)(rem % y->shape[d]);
                    rem /= y->shape[d];
                }
                double v[4];
                for (int k = 0; k < n_args[op]; k++) {
                    long f = 0;
                    for (int d = 0; d < in[k]->ndim; d++) {
                        int od = d + y->ndim - in[k]->ndim;
                        f = f * in[k]->shape[d] + (in[k]->shape[d] == 1 ? 0 : idx[od]);
                    }
                    v[k] = in[k]->val[f];
                }
                double r = reference(op, v);
                if (!(fabs(y->val[i] - r) <= 2e-6 * (1 + fabs(r)))) {
                    if (!bad)
                        printf("\n    %s #%zu: %.9g vs %.9g\n", op_names[op], p, y->val[i], r);
                    bad++;
                }
            }
            CU_ASSERT_EQUAL(bad, 0);
        }
    sp_tape_destroy(t);
}

static void test_grads(void) {
    uint64_t seed = 4000;
    for (int op = 0; op < N_OPS; op++)
        for (size_t p = 0; p < sizeof patterns / sizeof *patterns; p++) {
            int all = (1 << n_args[op]) - 1;
            /* All inputs, then each one alone. */
            for (int m = -1; m < n_args[op]; m++) {
                sp_gc_input s[4];
                make_specs(op, p, s, m < 0 ? all : 1 << m);
                op_ctx c = {op};
                sp_gc_result r;
                int ok = sp_gradcheck(build_op, &c, n_args[op], s, seed++, SP_GC_ATOL,
                                      SP_GC_RTOL, &r);
                if (!ok) printf("\n    %s #%zu mask %d: %s\n", op_names[op], p, m, r.worst);
                CU_ASSERT(ok);
                CU_ASSERT_EQUAL(r.n_skipped, 0);
            }
        }
}

static void test_known_values(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *z = sp_tensor_1d(t, 1, 0), *one = sp_tensor_1d(t, 1, 0);
    sp_tensor *two = sp_tensor_1d(t, 1, 0);
    z->val[0] = 0;
    one->val[0] = 1;
    two->val[0] = 2;
    /* Standard normal at 0: -log(2 pi)/2. */
    SP_ASSERT_CLOSE(sp_gauss_logpdf(t, z, z, z)->val[0], -0.9189385332, 1e-6);
    SP_ASSERT_CLOSE(sp_gauss_logpdf_std(t, one, z, one)->val[0], -1.4189385332, 1e-6);
    /* KL(N(0,1) || N(1, e^2)) = (2 + 2 e^-2 - 1) / 2. */
    SP_ASSERT_CLOSE(sp_kl_diag_gauss(t, z, z, one, two)->val[0], 0.5 * (1 + 2 * exp(-2.0)),
                    1e-6);
    SP_ASSERT_CLOSE(sp_kl_diag_gauss(t, one, two, one, two)->val[0], 0, 1e-7);
    /* Bernoulli at extreme logits: finite and exact. */
    sp_tensor *l = sp_tensor_1d(t, 4, 1), *x = sp_tensor_1d(t, 4, 0);
    const float lv[] = {50, -50, 50, -50}, xv[] = {1, 1, 0, 0};
    memcpy(l->val, lv, sizeof lv);
    memcpy(x->val, xv, sizeof xv);
    sp_tensor *b = sp_bernoulli_logpmf(t, x, l);
    SP_ASSERT_CLOSE(b->val[0], -1.9287498e-22, 1e-27);
    SP_ASSERT_CLOSE(b->val[1], -50, 1e-5);
    SP_ASSERT_CLOSE(b->val[2], -50, 1e-5);
    SP_ASSERT_CLOSE(b->val[3], -1.9287498e-22, 1e-27);
    sp_tape_backward(t, sp_sum_all(t, b), 1.0f);
    /* d/dl = x - sigmoid(l). */
    SP_ASSERT_CLOSE(l->grad[0], 0, 1e-7);
    SP_ASSERT_CLOSE(l->grad[1], 1, 1e-7);
    SP_ASSERT_CLOSE(l->grad[2], -1, 1e-7);
    SP_ASSERT_CLOSE(l->grad[3], 0, 1e-7);
    sp_tape_destroy(t);
}

static void test_rsample_eps_plain(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *mu = sp_tensor_2d(t, 2, 3, 1), *sd = sp_tensor_1d(t, 3, 1);
    sp_tensor *eps = sp_tensor_2d(t, 2, 3, 0);
    sp_gc_fill_uniform(mu->val, 6, -1, 1, 1);
    sp_gc_fill_uniform(sd->val, 3, 0.5f, 1, 2);
    sp_gc_fill_uniform(eps->val, 6, -2, 2, 3);
    sp_tensor *y = sp_gauss_rsample(t, mu, sd, eps);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    for (int i = 0; i < 6; i++)
        SP_ASSERT_CLOSE(y->val[i], mu->val[i] + sd->val[i % 3] * eps->val[i], 1e-6);
    sp_tape_backward(t, sp_sum_all(t, y), 1.0f);
    for (int j = 0; j < 3; j++)
        SP_ASSERT_CLOSE(sd->grad[j], (double)eps->val[j] + eps->val[3 + j], 1e-6);
    CU_ASSERT_PTR_NULL(eps->grad);
    sp_tape_destroy(t);
}

static const sp_test_case cases[] = {
    {"values vs double formulas (5 patterns)", test_values},
    {"gradients (5 patterns, each input)", test_grads},
    {"known values, Bernoulli at +-50", test_known_values},
    {"rsample with plain eps", test_rsample_eps_plain},
    {NULL, NULL},
};

static const sp_test_suite suites[] = {{"ops_dist", cases}, {NULL, NULL}};

int main(void) { return sp_test_main(suites); }
