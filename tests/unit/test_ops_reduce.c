/* Tests of the last-axis ops: log-softmax and log-sum-exp (values in double,
 * -inf entries, all -inf rows, huge values), sums and means, concatenation
 * and slicing; every gradient against finite differences on odd shapes. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/ops.h"
#include "testutil.h"

enum op { OP_LOG_SOFTMAX, OP_LOGSUMEXP, OP_SUM_LAST, OP_SUM_ALL, OP_MEAN_ALL, N_OPS };
static const char *op_names[N_OPS] = {"log_softmax", "logsumexp", "sum_last", "sum_all",
                                      "mean_all"};

static sp_tensor *apply(sp_tape *t, int op, sp_tensor *x) {
    switch (op) {
    case OP_LOG_SOFTMAX: return sp_log_softmax(t, x);
    case OP_LOGSUMEXP: return sp_logsumexp(t, x);
    case OP_SUM_LAST: return sp_sum_last(t, x);
    case OP_SUM_ALL: return sp_sum_all(t, x);
    case OP_MEAN_ALL: return sp_mean_all(t, x);
    }
    return NULL;
}

static sp_tensor *build_op(sp_tape *t, sp_tensor **in, void *ctx) {
    return apply(t, *(int *)ctx, in[0]);
}

static const int shapes[][5] = {{1, 1, 0, 0, 0}, {2, 3, 5, 0, 0}, {3, 7, 1, 4, 0},
                                {4, 2, 1, 3, 2}, {1, 6, 0, 0, 0}, {2, 4, 1, 0, 0}};

static void test_grads(void) {
    uint64_t seed = 300;
    for (int op = 0; op < N_OPS; op++)
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            sp_gc_input s = {shapes[k][0],
                             {shapes[k][1], shapes[k][2], shapes[k][3], shapes[k][4]},
                             -4,
                             4,
                             1};
            sp_gc_result r;
            int ok = sp_gradcheck(build_op, &op, 1, &s, seed++, SP_GC_ATOL, SP_GC_RTOL, &r);
            if (!ok) printf("\n    %s shape #%zu: %s\n", op_names[op], k, r.worst);
            CU_ASSERT(ok);
            CU_ASSERT_EQUAL(r.n_skipped, 0);
        }
}

static void test_output_shapes(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *a = sp_tensor_2d(t, 3, 5, 0), *b = sp_tensor_1d(t, 5, 0);
    sp_tensor *c = sp_tensor_3d(t, 7, 1, 4, 0);
    sp_gc_fill_uniform(a->val, a->size, -1, 1, 1);
    sp_gc_fill_uniform(b->val, b->size, -1, 1, 2);
    sp_gc_fill_uniform(c->val, c->size, -1, 1, 3);
    sp_tensor *y = sp_logsumexp(t, a);
    CU_ASSERT(y && y->ndim == 1 && y->shape[0] == 3);
    y = sp_sum_last(t, b);
    CU_ASSERT(y && y->ndim == 1 && y->shape[0] == 1);
    y = sp_logsumexp(t, c);
    CU_ASSERT(y && y->ndim == 2 && y->shape[0] == 7 && y->shape[1] == 1);
    y = sp_log_softmax(t, c);
    CU_ASSERT(y && y->ndim == 3 && y->size == 28);
    y = sp_mean_all(t, c);
    CU_ASSERT(y && y->ndim == 1 && y->shape[0] == 1);
    sp_tape_destroy(t);
}

static double ref_lse(const float *x, int n) {
    double m = -INFINITY;
    for (int i = 0; i < n; i++) m = fmax(m, x[i]);
    if (m == -INFINITY) return m;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}

static void test_lse_values(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    const float ninf = -INFINITY;
    /* Rows: ordinary, with -inf entries, all -inf, huge, a single element. */
    const float v[5][4] = {{0.5f, -1, 2, 0.25f},
                           {ninf, 1, ninf, -2},
                           {ninf, ninf, ninf, ninf},
                           {1000, 1000, -1000, 999},
                           {ninf, ninf, ninf, -7}};
    sp_tensor *x = sp_tensor_2d(t, 5, 4, 1);
    memcpy(x->val, v, sizeof v);
    sp_tensor *lse = sp_logsumexp(t, x), *ls = sp_log_softmax(t, x);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lse);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ls);
    for (int r = 0; r < 5; r++) {
        double e = ref_lse(v[r], 4);
        if (isinf(e)) {
            CU_ASSERT(lse->val[r] == -INFINITY);
        } else {
            SP_ASSERT_CLOSE(lse->val[r], e, 1e-6 * (1 + fabs(e)));
        }
        for (int j = 0; j < 4; j++) {
            double y = ls->val[r * 4 + j];
            if (v[r][j] == ninf) {
                CU_ASSERT(y == -INFINITY);
            } else {
                /* float keeps ~7 digits of the ~1000-sized entries */
                SP_ASSERT_CLOSE(y, v[r][j] - e, 1e-7 * (1 + fabs(v[r][j]) + fabs(e)));
            }
        }
    }
    SP_ASSERT_CLOSE(lse->val[3], 1000 + log(2 + exp(-1.0)), 1e-3);
    SP_ASSERT_CLOSE(lse->val[4], -7, 0);

    /* Gradients: softmax weights, 0 for -inf entries, nothing for the all
     * -inf row, and finite everywhere. */
    /* Row 2's lse is -inf, so L is -inf, but the backward only needs
     * dL/dlse = 1 per row. */
    sp_tensor *L = sp_sum_all(t, lse);
    sp_tape_backward(t, L, 1.0f);
    for (int r = 0; r < 5; r++)
        for (int j = 0; j < 4; j++) {
            float g = x->grad[r * 4 + j];
            CU_ASSERT(isfinite(g));
            double e = ref_lse(v[r], 4);
            double want = (v[r][j] == ninf || isinf(e)) ? 0 : exp(v[r][j] - e);
            SP_ASSERT_CLOSE(g, want, r == 3 ? 1e-5 : 1e-6); /* row 3: ulp(1000) = 6e-5 */
        }
    sp_tape_destroy(t);
}

static void test_log_softmax_inf_grad(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    const float v[2][3] = {{-INFINITY, 0.5f, -1}, {-INFINITY, -INFINITY, -INFINITY}};
    sp_tensor *x = sp_tensor_2d(t, 2, 3, 1);
    memcpy(x->val, v, sizeof v);
    sp_tensor *y = sp_log_softmax(t, x);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    /* Seed dL/dy = (1, 2, 3) on each row. */
    for (int i = 0; i < 6; i++) y->grad[i] = (float)(i % 3 + 1);
    sp_tape_backward(t, y, 0.0f);
    double p1 = 1 / (1 + exp(-1.5)), p2 = 1 - p1; /* softmax over (0.5, -1) */
    SP_ASSERT_CLOSE(x->grad[0], 1.0, 1e-6);       /* -inf entry: dy - 0 * sum */
    SP_ASSERT_CLOSE(x->grad[1], 2 - p1 * 6, 1e-5);
    SP_ASSERT_CLOSE(x->grad[2], 3 - p2 * 6, 1e-5);
    for (int j = 3; j < 6; j++) SP_ASSERT_CLOSE(x->grad[j], 0.0, 0); /* all -inf row */
    sp_tape_destroy(t);
}

static void test_sum_values(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *x = sp_tensor_3d(t, 2, 3, 4, 0);
    for (int i = 0; i < 24; i++) x->val[i] = (float)i;
    sp_tensor *s = sp_sum_last(t, x), *a = sp_sum_all(t, x), *m = sp_mean_all(t, x);
    CU_ASSERT(s && s->ndim == 2 && s->shape[0] == 2 && s->shape[1] == 3);
    for (int r = 0; r < 6; r++) SP_ASSERT_CLOSE(s->val[r], 16 * r + 6, 0);
    SP_ASSERT_CLOSE(a->val[0], 276, 0);
    SP_ASSERT_CLOSE(m->val[0], 11.5, 0);
    sp_tape_destroy(t);
}

/* ---- concat / slice ---- */

typedef struct cs_ctx {
    int start, len;
} cs_ctx;

static sp_tensor *build_concat(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    return sp_concat_last(t, in[0], in[1]);
}

static sp_tensor *build_slice(sp_tape *t, sp_tensor **in, void *ctx) {
    const cs_ctx *c = ctx;
    return sp_slice_last(t, in[0], c->start, c->len);
}

/* Slices of a concatenation: the pieces' gradients route back. */
static sp_tensor *build_concat_slice(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_tensor *c = sp_concat_last(t, in[0], in[1]);
    return sp_mul(t, sp_slice_last(t, c, 1, 3), sp_slice_last(t, c, 2, 3));
}

static void test_concat_slice(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *a = sp_tensor_3d(t, 2, 1, 3, 0), *b = sp_tensor_3d(t, 2, 1, 2, 0);
    for (int i = 0; i < 6; i++) a->val[i] = (float)i;
    for (int i = 0; i < 4; i++) b->val[i] = (float)(100 + i);
    sp_tensor *c = sp_concat_last(t, a, b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT(c->ndim == 3 && c->shape[0] == 2 && c->shape[1] == 1 && c->shape[2] == 5);
    const float want[] = {0, 1, 2, 100, 101, 3, 4, 5, 102, 103};
    for (int i = 0; i < 10; i++) CU_ASSERT_EQUAL(c->val[i], want[i]);
    sp_tensor *s = sp_slice_last(t, c, 2, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const float want_s[] = {2, 100, 5, 102};
    for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(s->val[i], want_s[i]);
    CU_ASSERT_PTR_NOT_NULL(sp_slice_last(t, c, 5, 0)); /* empty slice at the end is fine */
    CU_ASSERT(!sp_tape_failed(t));
    CU_ASSERT_PTR_NULL(sp_slice_last(t, c, 4, 2));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    a = sp_tensor_2d(t, 2, 3, 0);
    b = sp_tensor_2d(t, 3, 3, 0);
    CU_ASSERT_PTR_NULL(sp_concat_last(t, a, b));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_destroy(t);

    uint64_t seed = 900;
    const sp_gc_input cat[][2] = {
        {{1, {1}, -1, 1, 1}, {1, {1}, -1, 1, 1}},
        {{2, {3, 5}, -1, 1, 1}, {2, {3, 2}, -1, 1, 1}},
        {{3, {7, 1, 4}, -1, 1, 1}, {3, {7, 1, 1}, -1, 1, 0}},
        {{3, {7, 1, 4}, -1, 1, 0}, {3, {7, 1, 3}, -1, 1, 1}},
    };
    for (size_t k = 0; k < sizeof cat / sizeof *cat; k++)
        SP_ASSERT_GRADCHECK(build_concat, NULL, 2, cat[k], seed++, SP_GC_ATOL, SP_GC_RTOL);
    const sp_gc_input sl[] = {{3, {7, 1, 5}, -1, 1, 1}};
    const cs_ctx cs[] = {{0, 5}, {0, 1}, {4, 1}, {1, 3}};
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        cs_ctx c2 = cs[k];
        SP_ASSERT_GRADCHECK(build_slice, &c2, 1, sl, seed++, SP_GC_ATOL, SP_GC_RTOL);
    }
    const sp_gc_input cs_in[] = {{2, {3, 2}, -1, 1, 1}, {2, {3, 3}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_concat_slice, NULL, 2, cs_in, seed++, SP_GC_ATOL, SP_GC_RTOL);
}

static const sp_test_case cases[] = {
    {"reduction gradients (6 shapes x 5 ops)", test_grads},
    {"output shapes", test_output_shapes},
    {"logsumexp/log_softmax values with -inf and huge entries", test_lse_values},
    {"log_softmax gradient with -inf entries", test_log_softmax_inf_grad},
    {"sum values", test_sum_values},
    {"concat and slice", test_concat_slice},
    {NULL, NULL},
};

static const sp_test_suite suites[] = {{"ops_reduce", cases}, {NULL, NULL}};

int main(void) { return sp_test_main(suites); }
