/* Tests of the broadcasting arithmetic and the activations: forward values
 * against double-precision references (softplus at +-50, sigmoid far out,
 * clipped_leaky's pieces), every broadcasting pattern's values and
 * gradients, and each activation's gradient on odd shapes. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/ops.h"
#include "testutil.h"

enum op {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_SCALE, OP_ADD_SCALAR,
    OP_SIGMOID, OP_TANH, OP_RELU, OP_ELU, OP_SOFTPLUS, OP_CLIPPED_LEAKY,
    OP_EXP, OP_LOG, OP_CLIP, OP_SQUARE, N_OPS
};

static const char *op_names[N_OPS] = {"add", "sub", "mul", "div", "scale", "add_scalar",
                                      "sigmoid", "tanh", "relu", "elu", "softplus",
                                      "clipped_leaky", "exp", "log", "clip", "square"};

typedef struct op_ctx {
    int op;
} op_ctx;

static sp_tensor *apply(sp_tape *t, int op, sp_tensor **in) {
    switch (op) {
    case OP_ADD: return sp_add(t, in[0], in[1]);
    case OP_SUB: return sp_sub(t, in[0], in[1]);
    case OP_MUL: return sp_mul(t, in[0], in[1]);
    case OP_DIV: return sp_div(t, in[0], in[1]);
    case OP_SCALE: return sp_scale(t, in[0], -1.75f);
    case OP_ADD_SCALAR: return sp_add_scalar(t, in[0], 0.5f);
    case OP_SIGMOID: return sp_sigmoid(t, in[0]);
    case OP_TANH: return sp_tanh(t, in[0]);
    case OP_RELU: return sp_relu(t, in[0]);
    case OP_ELU: return sp_elu(t, in[0]);
    case OP_SOFTPLUS: return sp_softplus(t, in[0]);
    case OP_CLIPPED_LEAKY: return sp_clipped_leaky(t, in[0]);
    case OP_EXP: return sp_exp(t, in[0]);
    case OP_LOG: return sp_ln(t, in[0]);
    case OP_CLIP: return sp_clip(t, in[0], -0.5f, 0.75f);
    case OP_SQUARE: return sp_square(t, in[0]);
    }
    return NULL;
}

static double reference(int op, double x, double y) {
    switch (op) {
    case OP_ADD: return x + y;
    case OP_SUB: return x - y;
    case OP_MUL: return x * y;
    case OP_DIV: return x / y;
    case OP_SCALE: return -1.75 * x;
    case OP_ADD_SCALAR: return x + 0.5;
    case OP_SIGMOID: return 1 / (1 + exp(-x));
    case OP_TANH: return tanh(x);
    case OP_RELU: return x > 0 ? x : 0;
    case OP_ELU: return x > 0 ? x : exp(x) - 1;
    case OP_SOFTPLUS: return x > 30 ? x + log1p(exp(-x)) : log1p(exp(x));
    case OP_CLIPPED_LEAKY: return fmin(fmax(fmax(x, x / 3), -3), 3);
    case OP_EXP: return exp(x);
    case OP_LOG: return log(x);
    case OP_CLIP: return fmin(fmax(x, -0.5), 0.75);
    case OP_SQUARE: return x * x;
    }
    return NAN;
}

static sp_tensor *build_op(sp_tape *t, sp_tensor **in, void *ctx) {
    return apply(t, ((op_ctx *)ctx)->op, in);
}

/* ---- activations ---- */

static void test_unary_forward(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    const float xs[] = {-50, -20, -9.5f, -9, -4, -1, -0.3f, 0, 0.3f, 1, 2.9f, 3, 3.5f, 20, 50};
    const int n = sizeof xs / sizeof *xs;
    for (int op = OP_SCALE; op < N_OPS; op++) {
        sp_tape_reset(t);
        sp_tensor *x = sp_tensor_1d(t, n, 0);
        memcpy(x->val, xs, sizeof xs);
        if (op == OP_LOG)
            for (int i = 0; i < n; i++) x->val[i] = fabsf(xs[i]) + 0.01f;
        sp_tensor *y = apply(t, op, &x);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        CU_ASSERT_EQUAL(y->size, n);
        for (int i = 0; i < n; i++) {
            double r = reference(op, x->val[i], 0);
            if (op == OP_EXP && fabs(x->val[i]) > 40) continue; /* beyond float */
            double tol = 1e-6 * (1 + fabs(r));
            if (!(fabs(y->val[i] - r) <= tol)) {
                printf("\n    %s(%g) = %.9g, expected %.9g\n", op_names[op], x->val[i], y->val[i],
                       r);
                CU_FAIL("activation value");
            }
        }
    }
    sp_tape_destroy(t);
}

static void test_stable_extremes(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *x = sp_tensor_1d(t, 4, 1);
    const float v[] = {-50, 50, -200, 200};
    memcpy(x->val, v, sizeof v);
    sp_tensor *sp = sp_softplus(t, x), *sg = sp_sigmoid(t, x);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sg);
    SP_ASSERT_CLOSE(sp->val[0], 1.9287498479639178e-22, 1e-28);
    SP_ASSERT_CLOSE(sp->val[1], 50.0, 0);
    SP_ASSERT_CLOSE(sp->val[2], 0.0, 1e-30);
    SP_ASSERT_CLOSE(sp->val[3], 200.0, 0);
    SP_ASSERT_CLOSE(sg->val[0], 1.9287498479639178e-22, 1e-28);
    SP_ASSERT_CLOSE(sg->val[1], 1.0, 0);
    SP_ASSERT_CLOSE(sg->val[2], 0.0, 1e-30);
    /* Gradients stay finite: softplus' = sigmoid. */
    sp_tensor *L = sp_sum_all(t, sp_add(t, sp, sg));
    sp_tape_backward(t, L, 1.0f);
    for (int i = 0; i < 4; i++) CU_ASSERT(isfinite(x->grad[i]));
    SP_ASSERT_CLOSE(x->grad[1], 1.0, 1e-6);
    SP_ASSERT_CLOSE(x->grad[0], 0.0, 1e-20);
    sp_tape_destroy(t);
}

static void test_unary_grad(void) {
    const int shapes[][5] = {{1, 1, 0, 0, 0}, {2, 3, 5, 0, 0}, {3, 7, 1, 4, 0},
                             {4, 2, 1, 3, 2}};
    uint64_t seed = 1000;
    for (int op = OP_SCALE; op < N_OPS; op++)
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            sp_gc_input s = {shapes[k][0],
                             {shapes[k][1], shapes[k][2], shapes[k][3], shapes[k][4]},
                             -4,
                             4,
                             1};
            if (op == OP_LOG) s.lo = 0.2f, s.hi = 3;
            if (op == OP_CLIPPED_LEAKY) s.lo = -12, s.hi = 5; /* all four pieces */
            if (op == OP_CLIP) s.lo = -1.5f, s.hi = 1.5f;
            op_ctx c = {op};
            sp_gc_result r;
            int ok = sp_gradcheck(build_op, &c, 1, &s, seed++, SP_GC_ATOL, SP_GC_RTOL, &r);
            if (!ok) printf("\n    %s shape #%zu: %s\n", op_names[op], k, r.worst);
            CU_ASSERT(ok);
        }
}

/* ---- broadcasting arithmetic ---- */

typedef struct bpat {
    int nda, a[4], ndb, b[4], ndo, o[4];
} bpat;

static const bpat patterns[] = {
    {1, {1}, 1, {1}, 1, {1}},                         /* 1 x 1 */
    {2, {3, 5}, 2, {3, 5}, 2, {3, 5}},                /* same shape */
    {2, {3, 5}, 1, {5}, 2, {3, 5}},                   /* row vector (bias) */
    {1, {5}, 2, {3, 5}, 2, {3, 5}},                   /* on the left */
    {2, {3, 1}, 2, {1, 5}, 2, {3, 5}},                /* outer */
    {2, {3, 5}, 2, {3, 1}, 2, {3, 5}},                /* column */
    {2, {2, 3}, 1, {1}, 2, {2, 3}},                   /* scalar tensor */
    {3, {7, 1, 4}, 3, {1, 3, 1}, 3, {7, 3, 4}},       /* 3-D both stretched */
    {3, {7, 1, 4}, 2, {3, 4}, 3, {7, 3, 4}},          /* rank mismatch */
    {4, {2, 1, 3, 1}, 4, {1, 4, 1, 2}, 4, {2, 4, 3, 2}}, /* 4-D alternating */
    {4, {2, 3, 1, 5}, 1, {5}, 4, {2, 3, 1, 5}},       /* 4-D with trailing */
};

static long flat_index(int nd, const int *shape, const int *oidx, int ndo) {
    long f = 0;
    for (int d = 0; d < nd; d++) {
        int od = d + ndo - nd;
        int i = shape[d] == 1 ? 0 : oidx[od];
        f = f * shape[d] + i;
    }
    return f;
}

static void test_broadcast_forward(void) {
    sp_tape *t = sp_tape_create(1 << 18);
    for (size_t p = 0; p < sizeof patterns / sizeof *patterns; p++)
        for (int op = OP_ADD; op <= OP_DIV; op++) {
            const bpat *bp = &patterns[p];
            sp_tape_reset(t);
            sp_tensor *a = sp_tensor_new(t, bp->nda, bp->a, 0);
            sp_tensor *b = sp_tensor_new(t, bp->ndb, bp->b, 0);
            sp_gc_fill_uniform(a->val, a->size, -2, 2, 3 * p + 1);
            sp_gc_fill_uniform(b->val, b->size, 0.5f, 2, 3 * p + 2);
            sp_tensor *y = apply(t, op, (sp_tensor *[]){a, b});
            CU_ASSERT_PTR_NOT_NULL_FATAL(y);
            CU_ASSERT_EQUAL(y->ndim, bp->ndo);
            for (int d = 0; d < bp->ndo; d++) CU_ASSERT_EQUAL(y->shape[d], bp->o[d]);
            int bad = 0;
            for (long i = 0; i < y->size; i++) {
                int idx[4];
                long rem = i;
                for (int d = bp->ndo - 1; d >= 0; d--) {
                    idx[d] = (int)(rem % bp->o[d]);
                    rem /= bp->o[d];
                }
                double va = a->val[flat_index(bp->nda, bp->a, idx, bp->ndo)];
                double vb = b->val[flat_index(bp->ndb, bp->b, idx, bp->ndo)];
                double r = reference(op, va, vb);
                if (fabs(y->val[i] - r) > 1e-6 * (1 + fabs(r))) bad++;
            }
            if (bad) printf("\n    %s pattern #%zu: %d wrong\n", op_names[op], p, bad);
            CU_ASSERT_EQUAL(bad, 0);
        }
    sp_tape_destroy(t);
}

static void test_broadcast_grad(void) {
    uint64_t seed = 5000;
    for (size_t p = 0; p < sizeof patterns / sizeof *patterns; p++)
        for (int op = OP_ADD; op <= OP_DIV; op++)
            for (int which = 0; which < 3; which++) { /* both, only a, only b */
                const bpat *bp = &patterns[p];
                sp_gc_input s[2] = {{bp->nda, {0}, -2, 2, which != 2},
                                    {bp->ndb, {0}, 0.5f, 2, which != 1}};
                memcpy(s[0].shape, bp->a, sizeof bp->a);
                memcpy(s[1].shape, bp->b, sizeof bp->b);
                op_ctx c = {op};
                sp_gc_result r;
                int ok = sp_gradcheck(build_op, &c, 2, s, seed++, SP_GC_ATOL, SP_GC_RTOL, &r);
                if (!ok)
                    printf("\n    %s pattern #%zu (%d): %s\n", op_names[op], p, which, r.worst);
                CU_ASSERT(ok);
            }
}

/* x * x and x + x: one tensor on both sides accumulates both gradients. */
static sp_tensor *build_self(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    return sp_add(t, sp_mul(t, in[0], in[0]), in[0]);
}

static void test_same_tensor_twice(void) {
    const sp_gc_input s[] = {{2, {3, 4}, -2, 2, 1}};
    SP_ASSERT_GRADCHECK(build_self, NULL, 1, s, 77, SP_GC_ATOL, SP_GC_RTOL);
}

static void test_broadcast_errors(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *a = sp_tensor_2d(t, 3, 4, 1), *b = sp_tensor_2d(t, 3, 5, 1);
    CU_ASSERT_PTR_NULL(sp_add(t, a, b));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    a = sp_tensor_2d(t, 3, 4, 1);
    CU_ASSERT_PTR_NULL(sp_mul(t, a, NULL));
    CU_ASSERT_PTR_NULL(sp_tanh(t, NULL));
    CU_ASSERT_PTR_NULL(sp_scale(t, NULL, 2));
    CU_ASSERT(!sp_tape_failed(t)); /* NULL inputs propagate, they do not fail anew */
    sp_tape_destroy(t);
}

static void test_no_grad_no_node(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *a = sp_tensor_2d(t, 3, 4, 0), *b = sp_tensor_1d(t, 4, 0);
    sp_gc_fill_uniform(a->val, a->size, -1, 1, 1);
    sp_gc_fill_uniform(b->val, b->size, -1, 1, 2);
    sp_tensor *y = sp_tanh(t, sp_add(t, a, b));
    CU_ASSERT_PTR_NOT_NULL(y);
    CU_ASSERT_PTR_NULL(y->grad);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    /* Gradients disabled: an input with grad records nothing either. */
    sp_tensor *w = sp_tensor_1d(t, 4, 1);
    sp_gc_fill_uniform(w->val, w->size, -1, 1, 3);
    sp_tape_set_grad(t, 0);
    y = sp_mul(t, a, w);
    CU_ASSERT_PTR_NOT_NULL(y);
    CU_ASSERT_PTR_NULL(y->grad);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    sp_tape_set_grad(t, 1);
    y = sp_mul(t, a, w);
    CU_ASSERT_PTR_NOT_NULL(y->grad);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 1);
    sp_tape_destroy(t);
}

/* Large tensors take the OpenMP path; the result must equal the serial one. */
static void test_threaded_matches_serial(void) {
    sp_tape *t = sp_tape_create(1 << 22);
    const int n = 3 * (int)SP_OPS_OMP_MIN + 17;
    sp_tensor *x = sp_tensor_1d(t, n, 1);
    sp_gc_fill_uniform(x->val, n, -5, 5, 9);
    sp_tensor *y = sp_softplus(t, x);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        float v = x->val[i];
        float r = fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
        bad += y->val[i] != r;
    }
    CU_ASSERT_EQUAL(bad, 0);
    sp_tensor *L = sp_sum_all(t, y);
    sp_tape_backward(t, L, 1.0f);
    for (int i = 0; i < n; i += 997)
        SP_ASSERT_CLOSE(x->grad[i], reference(OP_SIGMOID, x->val[i], 0), 1e-6);
    sp_tape_destroy(t);
}

static const sp_test_case cases[] = {
    {"activation values vs double reference", test_unary_forward},
    {"softplus/sigmoid at +-50, +-200", test_stable_extremes},
    {"activation gradients (1x1, 3x5, 7x1x4, 2x1x3x2)", test_unary_grad},
    {"broadcast values (11 patterns x 4 ops)", test_broadcast_forward},
    {"broadcast gradients (11 patterns x 4 ops)", test_broadcast_grad},
    {"same tensor twice accumulates", test_same_tensor_twice},
    {"incompatible shapes and NULL inputs", test_broadcast_errors},
    {"no grad, no node", test_no_grad_no_node},
    {"threaded path equals serial", test_threaded_matches_serial},
    {NULL, NULL},
};

static const sp_test_suite suites[] = {{"ops_elementwise", cases}, {NULL, NULL}};

int main(void) { return sp_test_main(suites); }
