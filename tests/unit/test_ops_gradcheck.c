/* Tests of the finite-difference gradient checker itself: it passes correct
 * toy ops (smooth, with kinks, with many summed terms) and catches a 1%
 * gradient error, a backward that assigns instead of adding, and a missing
 * backward. The toy ops are written on the raw tape API so these tests do not
 * depend on ops.h. */
#include <math.h>
#include <stdio.h>

#include "gradcheck.h"
#include "testutil.h"

/* ---- toy op: y = x^3 * sin(x), backward scaled by (1 + err) ---- */
typedef struct toy_ctx {
    sp_tensor *x, *y;
    double err;
    int assign; /* write = instead of += */
} toy_ctx;

static void toy_backward(void *p) {
    toy_ctx *c = p;
    for (long i = 0; i < c->x->size; i++) {
        double v = c->x->val[i];
        double d = (3 * v * v * sin(v) + v * v * v * cos(v)) * (1 + c->err);
        float g = (float)(c->y->grad[i] * d);
        if (c->assign)
            c->x->grad[i] = g;
        else
            c->x->grad[i] += g;
    }
}

typedef struct toy_opts {
    double err;
    int assign, no_backward;
} toy_opts;

static sp_tensor *toy_build(sp_tape *t, sp_tensor **in, void *ctx) {
    const toy_opts *o = ctx;
    sp_tensor *x = in[0];
    sp_tensor *y = sp_tensor_new(t, x->ndim, x->shape, sp_needs_grad(x));
    if (!y) return NULL;
    for (long i = 0; i < x->size; i++) {
        float v = x->val[i];
        y->val[i] = v * v * v * sinf(v);
    }
    if (sp_needs_grad(x) && !o->no_backward) {
        toy_ctx *c = sp_tape_alloc(t, sizeof *c);
        if (!c) return NULL;
        *c = (toy_ctx){x, y, o->err, o->assign};
        sp_tape_record(t, toy_backward, c);
    }
    return y;
}

static const sp_gc_input toy_spec[] = {{2, {3, 5}, -2.0f, 2.0f, 1}};

static void test_correct_passes(void) {
    toy_opts o = {0, 0, 0};
    SP_ASSERT_GRADCHECK(toy_build, &o, 1, toy_spec, 1, SP_GC_ATOL, SP_GC_RTOL);
    sp_gc_result r;
    CU_ASSERT_EQUAL(sp_gradcheck(toy_build, &o, 1, toy_spec, 1, SP_GC_ATOL, SP_GC_RTOL, &r), 1);
    CU_ASSERT_EQUAL(r.n_checked + r.n_skipped, 15);
    CU_ASSERT_EQUAL(r.n_skipped, 0);
    printf("\n    toy x^3 sin x: max abs err %.3g, rel %.3g over %d elements\n", r.max_abs_err,
           r.max_rel_err, r.n_checked);
    CU_ASSERT(r.max_abs_err < 1e-4);
}

static void test_one_percent_error_caught(void) {
    toy_opts o = {0.01, 0, 0};
    sp_gc_result r;
    int ok = sp_gradcheck(toy_build, &o, 1, toy_spec, 1, SP_GC_ATOL, SP_GC_RTOL, &r);
    printf("\n    1%% error: ok=%d worst: %s\n", ok, r.worst);
    CU_ASSERT_EQUAL(ok, 0);
    /* Also with a sign flip of the error and another seed. */
    o.err = -0.01;
    CU_ASSERT_EQUAL(sp_gradcheck(toy_build, &o, 1, toy_spec, 7, SP_GC_ATOL, SP_GC_RTOL, &r), 0);
}

static void test_assign_caught(void) {
    toy_opts o = {0, 1, 0};
    CU_ASSERT_EQUAL(sp_gradcheck(toy_build, &o, 1, toy_spec, 2, SP_GC_ATOL, SP_GC_RTOL, NULL), 0);
}

static void test_missing_backward_caught(void) {
    toy_opts o = {0, 0, 1};
    CU_ASSERT_EQUAL(sp_gradcheck(toy_build, &o, 1, toy_spec, 3, SP_GC_ATOL, SP_GC_RTOL, NULL), 0);
}

/* ---- toy op with a kink: y = relu(x) * 2 ---- */
typedef struct relu_ctx {
    sp_tensor *x, *y;
} relu_ctx;

static void relu_backward(void *p) {
    relu_ctx *c = p;
    for (long i = 0; i < c->x->size; i++)
        if (c->x->val[i] > 0) c->x->grad[i] += 2 * c->y->grad[i];
}

static sp_tensor *relu_build(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_tensor *x = in[0];
    sp_tensor *y = sp_tensor_new(t, x->ndim, x->shape, sp_needs_grad(x));
    if (!y) return NULL;
    for (long i = 0; i < x->size; i++) y->val[i] = x->val[i] > 0 ? 2 * x->val[i] : 0;
    if (sp_needs_grad(x)) {
        relu_ctx *c = sp_tape_alloc(t, sizeof *c);
        if (!c) return NULL;
        *c = (relu_ctx){x, y};
        sp_tape_record(t, relu_backward, c);
    }
    return y;
}

static void test_kinks_skipped(void) {
    /* 400 elements in [-0.3, 0.3]: several sit within h of the kink. */
    const sp_gc_input spec[] = {{2, {20, 20}, -0.3f, 0.3f, 1}};
    sp_gc_result r;
    int ok = sp_gradcheck(relu_build, NULL, 1, spec, 5, SP_GC_ATOL, SP_GC_RTOL, &r);
    printf("\n    relu: checked %d skipped %d, %s\n", r.n_checked, r.n_skipped, r.worst);
    CU_ASSERT_EQUAL(ok, 1);
    CU_ASSERT(r.n_skipped > 0);
    CU_ASSERT(r.n_checked > 300);
}

/* ---- toy product z = x y^T with naive loops (many summed terms) ---- */
typedef struct mm_ctx {
    sp_tensor *x, *y, *z;
} mm_ctx;

static void mm_backward(void *p) {
    mm_ctx *c = p;
    int M = c->x->shape[0], K = c->x->shape[1], N = c->y->shape[0];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float g = c->z->grad[i * N + j];
            for (int k = 0; k < K; k++) {
                if (c->x->grad) c->x->grad[i * K + k] += g * c->y->val[j * K + k];
                if (c->y->grad) c->y->grad[j * K + k] += g * c->x->val[i * K + k];
            }
        }
}

static sp_tensor *mm_build(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_tensor *x = in[0], *y = in[1];
    int M = x->shape[0], K = x->shape[1], N = y->shape[0];
    int rg = sp_needs_grad(x) || sp_needs_grad(y);
    sp_tensor *z = sp_tensor_2d(t, M, N, rg);
    if (!z) return NULL;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += x->val[i * K + k] * y->val[j * K + k];
            z->val[i * N + j] = s;
        }
    if (rg) {
        mm_ctx *c = sp_tape_alloc(t, sizeof *c);
        if (!c) return NULL;
        *c = (mm_ctx){x, y, z};
        sp_tape_record(t, mm_backward, c);
    }
    return z;
}

static void test_sum_noise(void) {
    const sp_gc_input spec[] = {{2, {6, 64}, -3.0f, 3.0f, 1}, {2, {5, 64}, -3.0f, 3.0f, 1}};
    sp_gc_result r;
    int ok = sp_gradcheck(mm_build, NULL, 2, spec, 11, SP_GC_ATOL, SP_GC_RTOL, &r);
    printf("\n    64-term products: max abs err %.3g over %d (%s)\n", r.max_abs_err, r.n_checked,
           r.worst);
    CU_ASSERT_EQUAL(ok, 1);
    CU_ASSERT_EQUAL(r.n_skipped, 0);
    /* Only the second input requires grad: the first gets none. */
    const sp_gc_input spec2[] = {{2, {1, 3}, -1.0f, 1.0f, 0}, {2, {4, 3}, -1.0f, 1.0f, 1}};
    SP_ASSERT_GRADCHECK(mm_build, NULL, 2, spec2, 12, SP_GC_ATOL, SP_GC_RTOL);
}

static void test_fill_deterministic(void) {
    float a[10], b[10];
    sp_gc_fill_uniform(a, 10, -1, 2, 42);
    sp_gc_fill_uniform(b, 10, -1, 2, 42);
    for (int i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(a[i], b[i]);
        CU_ASSERT(a[i] >= -1 && a[i] <= 2);
    }
}

static const sp_test_case cases[] = {
    {"correct op passes", test_correct_passes},
    {"1% error caught", test_one_percent_error_caught},
    {"assign instead of add caught", test_assign_caught},
    {"missing backward caught", test_missing_backward_caught},
    {"kinks skipped", test_kinks_skipped},
    {"summation noise within tolerance", test_sum_noise},
    {"fill deterministic", test_fill_deterministic},
    {NULL, NULL},
};

static const sp_test_suite suites[] = {{"gradcheck", cases}, {NULL, NULL}};

int main(void) { return sp_test_main(suites); }
