/* Tests of sp_matmul and sp_linear: forward values against a naive triple
 * loop in double, gradients against finite differences for all four
 * transpose cases and odd shapes (1x1, 3x5, 7x1x4), shape errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "supair/ops.h"
#include "testutil.h"

typedef struct mm_case {
    int M, K, N, ta, tb;
} mm_case;

static sp_tensor *build_matmul(sp_tape *t, sp_tensor **in, void *ctx) {
    const mm_case *c = ctx;
    return sp_matmul(t, in[0], in[1], c->ta, c->tb);
}

static void mm_specs(const mm_case *c, sp_gc_input spec[2]) {
    spec[0] = (sp_gc_input){2, {c->ta ? c->K : c->M, c->ta ? c->M : c->K}, -1.5f, 1.5f, 1};
    spec[1] = (sp_gc_input){2, {c->tb ? c->N : c->K, c->tb ? c->K : c->N}, -1.5f, 1.5f, 1};
}

static const mm_case mm_cases[] = {
    {1, 1, 1, 0, 0}, {3, 5, 2, 0, 0}, {4, 1, 3, 0, 0}, {1, 7, 1, 0, 0}, {5, 6, 7, 0, 0},
};

static void test_matmul_forward(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    for (size_t ci = 0; ci < sizeof mm_cases / sizeof *mm_cases; ci++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                mm_case c = mm_cases[ci];
                c.ta = ta;
                c.tb = tb;
                sp_gc_input s[2];
                mm_specs(&c, s);
                sp_tape_reset(t);
                sp_tensor *A = sp_tensor_new(t, 2, s[0].shape, 0);
                sp_tensor *B = sp_tensor_new(t, 2, s[1].shape, 0);
                sp_gc_fill_uniform(A->val, A->size, -2, 2, 100 + ci);
                sp_gc_fill_uniform(B->val, B->size, -2, 2, 200 + ci);
                sp_tensor *C = sp_matmul(t, A, B, ta, tb);
                CU_ASSERT_PTR_NOT_NULL_FATAL(C);
                CU_ASSERT_EQUAL(C->ndim, 2);
                CU_ASSERT_EQUAL(C->shape[0], c.M);
                CU_ASSERT_EQUAL(C->shape[1], c.N);
                double worst = 0;
                for (int i = 0; i < c.M; i++)
                    for (int j = 0; j < c.N; j++) {
                        double s = 0;
                        for (int k = 0; k < c.K; k++) {
                            double a = ta ? A->val[k * c.M + i] : A->val[i * c.K + k];
                            double b = tb ? B->val[j * c.K + k] : B->val[k * c.N + j];
                            s += a * b;
                        }
                        double e = fabs(s - C->val[i * c.N + j]);
                        if (e > worst) worst = e;
                    }
                if (worst > 1e-5)
                    printf("\n    matmul %dx%dx%d ta=%d tb=%d: max err %g\n", c.M, c.K, c.N, ta,
                           tb, worst);
                CU_ASSERT(worst <= 1e-5);
                /* No input wants grad: no node, no output grad. */
                CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
                CU_ASSERT_PTR_NULL(C->grad);
            }
    sp_tape_destroy(t);
}

static void test_matmul_grad(void) {
    uint64_t seed = 1;
    for (size_t ci = 0; ci < sizeof mm_cases / sizeof *mm_cases; ci++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                mm_case c = mm_cases[ci];
                c.ta = ta;
                c.tb = tb;
                sp_gc_input s[2];
                mm_specs(&c, s);
                SP_ASSERT_GRADCHECK(build_matmul, &c, 2, s, seed++, SP_GC_ATOL, SP_GC_RTOL);
                /* Only one side requiring grad. */
                s[0].requires_grad = 0;
                SP_ASSERT_GRADCHECK(build_matmul, &c, 2, s, seed++, SP_GC_ATOL, SP_GC_RTOL);
                s[0].requires_grad = 1;
                s[1].requires_grad = 0;
                SP_ASSERT_GRADCHECK(build_matmul, &c, 2, s, seed++, SP_GC_ATOL, SP_GC_RTOL);
            }
}

/* The same tensor on both sides (x^T x): both contributions accumulate. */
static sp_tensor *build_gram(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    return sp_matmul(t, in[0], in[0], 1, 0);
}

static void test_matmul_shared_input(void) {
    const sp_gc_input s[] = {{2, {3, 4}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_gram, NULL, 1, s, 9, SP_GC_ATOL, SP_GC_RTOL);
}

static void test_matmul_bad_shapes(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *A = sp_tensor_2d(t, 2, 3, 1), *B = sp_tensor_2d(t, 4, 5, 1);
    CU_ASSERT_PTR_NULL(sp_matmul(t, A, B, 0, 0));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    A = sp_tensor_2d(t, 2, 3, 1);
    CU_ASSERT_PTR_NULL(sp_matmul(t, A, NULL, 0, 0));
    CU_ASSERT_PTR_NULL(sp_linear(t, NULL, A, NULL));
    sp_tensor *W = sp_tensor_2d(t, 4, 2, 1);
    CU_ASSERT_PTR_NULL(sp_linear(t, A, W, NULL)); /* I = 3 vs 4 */
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_destroy(t);
}

/* ---- linear ---- */

typedef struct lin_case {
    int bias;
} lin_case;

static sp_tensor *build_linear(sp_tape *t, sp_tensor **in, void *ctx) {
    const lin_case *c = ctx;
    return sp_linear(t, in[0], in[1], c->bias ? in[2] : NULL);
}

static void test_linear_forward(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    /* x (7, 1, 4) flattened to 7 rows; W (4, 3); b (3). */
    sp_tensor *x = sp_tensor_3d(t, 7, 1, 4, 0), *W = sp_tensor_2d(t, 4, 3, 0);
    sp_tensor *b = sp_tensor_1d(t, 3, 0);
    sp_gc_fill_uniform(x->val, x->size, -1, 1, 1);
    sp_gc_fill_uniform(W->val, W->size, -1, 1, 2);
    sp_gc_fill_uniform(b->val, b->size, -1, 1, 3);
    sp_tensor *y = sp_linear(t, x, W, b);
    sp_tensor *y0 = sp_linear(t, x, W, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y0);
    CU_ASSERT_EQUAL(y->ndim, 3);
    CU_ASSERT_EQUAL(y->shape[0], 7);
    CU_ASSERT_EQUAL(y->shape[1], 1);
    CU_ASSERT_EQUAL(y->shape[2], 3);
    for (int r = 0; r < 7; r++)
        for (int o = 0; o < 3; o++) {
            double s = 0;
            for (int i = 0; i < 4; i++) s += (double)x->val[r * 4 + i] * W->val[i * 3 + o];
            SP_ASSERT_CLOSE(y0->val[r * 3 + o], s, 1e-6);
            SP_ASSERT_CLOSE(y->val[r * 3 + o], s + b->val[o], 1e-6);
        }
    sp_tape_destroy(t);
}

static void test_linear_grad(void) {
    const int shapes[][4] = {{2, 1, 1, 1}, {2, 3, 5, 2}, {3, 7, 1, 4}, {2, 1, 6, 1}};
    uint64_t seed = 50;
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        int nd = shapes[k][0];
        int I = shapes[k][nd], O = 3;
        sp_gc_input s[3] = {{nd, {shapes[k][1], shapes[k][2], shapes[k][3]}, -1, 1, 1},
                            {2, {I, O}, -1, 1, 1},
                            {1, {O}, -1, 1, 1}};
        for (int bias = 0; bias < 2; bias++) {
            lin_case c = {bias};
            SP_ASSERT_GRADCHECK(build_linear, &c, 2 + bias, s, seed++, SP_GC_ATOL, SP_GC_RTOL);
        }
        /* Bias only. */
        lin_case c = {1};
        s[0].requires_grad = s[1].requires_grad = 0;
        SP_ASSERT_GRADCHECK(build_linear, &c, 3, s, seed++, SP_GC_ATOL, SP_GC_RTOL);
    }
}

/* A larger product with K = 300 (summation noise) in a 2-layer chain. */
static sp_tensor *build_mlp(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_tensor *h = sp_tanh(t, sp_linear(t, in[0], in[1], in[2]));
    return sp_linear(t, h, in[3], NULL);
}

static void test_linear_chain_grad(void) {
    const sp_gc_input s[] = {{2, {3, 300}, -1, 1, 1},
                             {2, {300, 8}, -0.1f, 0.1f, 1},
                             {1, {8}, -0.5f, 0.5f, 1},
                             {2, {8, 2}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_mlp, NULL, 4, s, 77, SP_GC_ATOL, SP_GC_RTOL);
}

static const sp_test_case cases[] = {
    {"matmul forward vs naive (4 transpose cases)", test_matmul_forward},
    {"matmul gradients (4 transpose cases)", test_matmul_grad},
    {"matmul with the same input twice", test_matmul_shared_input},
    {"matmul/linear bad shapes fail", test_matmul_bad_shapes},
    {"linear forward (3-D input, bias)", test_linear_forward},
    {"linear gradients", test_linear_grad},
    {"linear-tanh-linear chain gradients", test_linear_chain_grad},
    {NULL, NULL},
};

static const sp_test_suite suites[] = {{"ops_linear", cases}, {NULL, NULL}};

int main(void) { return sp_test_main(suites); }
