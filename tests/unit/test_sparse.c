/* Tests of the CSR kernels (sparse.h) and of the sparse path of SuPAIR's
 * input projection: CSR round trips, the transpose, products against a
 * naive double loop over slab and tail widths, empty rows and an all-zero
 * matrix, bit-identical results for 1 and 2 threads, NaN propagation, and
 * finite-difference gradients of sp_supair_linear on a mostly-zero input. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/sparse.h"
#include "supair/supair.h"
#include "testutil.h"

/* x (rows, cols) with about `density` nonzeros in [-2, 2]; row 1 all zero
 * when rows > 1 (empty rows must be skipped correctly). */
static float *sparse_matrix(int rows, int cols, double density, uint64_t seed) {
    float *x = malloc((size_t)rows * cols * sizeof(float));
    float *u = malloc((size_t)rows * cols * sizeof(float));
    sp_gc_fill_uniform(x, (long)rows * cols, -2, 2, seed);
    sp_gc_fill_uniform(u, (long)rows * cols, 0, 1, seed + 1);
    for (long e = 0; e < (long)rows * cols; e++)
        if (u[e] >= density || (rows > 1 && e / cols == 1)) x[e] = 0.0f;
    free(u);
    return x;
}


static sp_csr csr_alloc(int rows, long nnz) {
    sp_csr m = {0};
    m.start = malloc((size_t)(rows + 1) * sizeof(int));
    m.col = malloc((size_t)(nnz + 1) * sizeof(int));
    m.val = malloc((size_t)(nnz + 1) * sizeof(float));
    return m;
}

static void csr_free(sp_csr *m) { free(m->start), free(m->col), free(m->val); }

static void test_csr_round_trip(void) {
    const int R = 9, C = 37;
    float *x = sparse_matrix(R, C, 0.2, 5);
    long nnz = sp_count_nonzeros(x, (long)R * C);
    CU_ASSERT_TRUE(nnz > 0 && nnz < R * C / 2);
    sp_csr m = csr_alloc(R, nnz);
    sp_csr_from_dense(&m, x, R, C);
    CU_ASSERT_EQUAL(m.nnz, nnz);
    CU_ASSERT_EQUAL(m.start[1], m.start[2]); /* the empty row */
    float *back = calloc((size_t)R * C, sizeof(float));
    for (int i = 0; i < R; i++)
        for (int e = m.start[i]; e < m.start[i + 1]; e++) {
            if (e > m.start[i]) CU_ASSERT_TRUE(m.col[e] > m.col[e - 1]);
            back[(size_t)i * C + m.col[e]] = m.val[e];
        }
    CU_ASSERT_EQUAL(memcmp(back, x, (size_t)R * C * sizeof(float)), 0);

    sp_csr t = csr_alloc(C, nnz);
    sp_csr_transpose(&t, &m);
    CU_ASSERT_EQUAL(t.rows, C);
    CU_ASSERT_EQUAL(t.cols, R);
    CU_ASSERT_EQUAL(t.start[C], nnz);
    memset(back, 0, (size_t)R * C * sizeof(float));
    for (int j = 0; j < C; j++)
        for (int e = t.start[j]; e < t.start[j + 1]; e++) {
            if (e > t.start[j]) CU_ASSERT_TRUE(t.col[e] > t.col[e - 1]);
            back[(size_t)t.col[e] * C + j] = t.val[e];
        }
    CU_ASSERT_EQUAL(memcmp(back, x, (size_t)R * C * sizeof(float)), 0);

    float nan_row[3] = {0.0f, NAN, -0.0f};
    CU_ASSERT_EQUAL(sp_count_nonzeros(nan_row, 3), 1); /* NaN kept, -0 dropped */
    csr_free(&m), csr_free(&t), free(back), free(x);
}

/* The threaded, vectorised conversion of a scene-sized batch against a
 * plain loop: 300 x 2501 (odd width: a scalar tail after the vectors) at 1
 * and 2 threads, with NaN kept and -0 dropped inside the vector part, and
 * the two-step API (row starts, then fill) giving the same matrix. */
static void test_csr_large_threads(void) {
    const int R = 300, C = 2501;
    float *x = sparse_matrix(R, C, 0.1, 41);
    x[(size_t)5 * C + 17] = NAN;
    x[(size_t)7 * C + 8] = -0.0f;
    x[(size_t)R * C - 1] = 3.0f; /* the last (tail) entry */
    const long nnz = sp_count_nonzeros(x, (long)R * C);
    sp_csr want = csr_alloc(R, nnz);
    long e = 0;
    for (int i = 0; i < R; i++) {
        want.start[i] = (int)e;
        for (int j = 0; j < C; j++)
            if (x[(size_t)i * C + j] != 0.0f) want.col[e] = j, want.val[e] = x[(size_t)i * C + j], e++;
    }
    want.start[R] = (int)e;
    CU_ASSERT_EQUAL(e, nnz);
    const int saved = omp_get_max_threads();
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        sp_csr m = csr_alloc(R, nnz);
        CU_ASSERT_EQUAL(sp_csr_row_starts(m.start, x, R, C), nnz);
        sp_csr_fill(&m, x, R, C);
        CU_ASSERT_EQUAL(m.nnz, nnz);
        CU_ASSERT_EQUAL(memcmp(m.start, want.start, (size_t)(R + 1) * sizeof(int)), 0);
        CU_ASSERT_EQUAL(memcmp(m.col, want.col, (size_t)nnz * sizeof(int)), 0);
        CU_ASSERT_EQUAL(memcmp(m.val, want.val, (size_t)nnz * sizeof(float)), 0); /* NaN bits too */
        csr_free(&m);
    }
    omp_set_num_threads(saved);
    csr_free(&want), free(x);
}

/* y0 + A B against a double loop, for n across slab boundaries. */
static void check_product(int R, int C, int n, double density, uint64_t seed) {
    float *a = sparse_matrix(R, C, density, seed);
    float *b = malloc((size_t)C * n * sizeof(float)), *y = malloc((size_t)R * n * sizeof(float));
    double *want = malloc((size_t)R * n * sizeof(double));
    sp_gc_fill_uniform(b, (long)C * n, -1, 1, seed + 7);
    sp_gc_fill_uniform(y, (long)R * n, -1, 1, seed + 8);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < n; j++) {
            double s = y[(size_t)i * n + j];
            for (int k = 0; k < C; k++) s += (double)a[(size_t)i * C + k] * b[(size_t)k * n + j];
            want[(size_t)i * n + j] = s;
        }
    long nnz = sp_count_nonzeros(a, (long)R * C);
    sp_csr m = csr_alloc(R, nnz);
    sp_csr_from_dense(&m, a, R, C);
    /* in place, and through contiguous slab copies: bit for bit the same */
    float *y2 = malloc((size_t)R * n * sizeof(float));
    memcpy(y2, y, (size_t)R * n * sizeof(float));
    float *scratch = malloc((size_t)sp_csr_matmul_scratch(C, omp_get_max_threads()) * sizeof(float));
    sp_csr_matmul_add(y, &m, b, n, NULL);
    sp_csr_matmul_add(y2, &m, b, n, scratch);
    char what[64];
    snprintf(what, sizeof what, "A B (%d x %d x %d, density %.2f)", R, C, n, density);
    SP_ASSERT_CLOSE_ARRAY(what, y, want, (long)R * n, 1e-5 * (1 + C * density));
    CU_ASSERT_EQUAL(memcmp(y, y2, (size_t)R * n * sizeof(float)), 0);
    csr_free(&m), free(a), free(b), free(y), free(y2), free(want), free(scratch);
}

static void test_product_shapes(void) {
    check_product(1, 1, 1, 1.0, 1);
    check_product(5, 40, 5, 0.3, 2);    /* tail only */
    check_product(6, 150, 64, 0.1, 3);  /* exactly one slab */
    check_product(7, 90, 130, 0.25, 4); /* two slabs + a 2-wide tail */
    check_product(4, 30, 70, 0.0, 5);   /* all zero: y unchanged */
    check_product(64, 300, 256, 0.1, 6); /* large enough for a thread team */
    check_product(40, 600, 200, 0.2, 8);  /* several slabs per thread */
    check_product(16, 2600, 300, 0.1, 7); /* B of 3.1 MB, the scale of the projection */
}

static void threads_bit_identical(int R, int C, int n) {
    float *a = sparse_matrix(R, C, 0.12, 21);
    float *b = malloc((size_t)C * n * sizeof(float));
    float *y1 = calloc((size_t)R * n, sizeof(float)), *y2 = calloc((size_t)R * n, sizeof(float));
    sp_gc_fill_uniform(b, (long)C * n, -1, 1, 22);
    long nnz = sp_count_nonzeros(a, (long)R * C);
    sp_csr m = csr_alloc(R, nnz);
    sp_csr_from_dense(&m, a, R, C);
    float *scratch = malloc((size_t)sp_csr_matmul_scratch(C, 2) * sizeof(float));
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    sp_csr_matmul_add(y1, &m, b, n, scratch);
    omp_set_num_threads(2);
    sp_csr_matmul_add(y2, &m, b, n, scratch);
    omp_set_num_threads(saved);
    CU_ASSERT_EQUAL(memcmp(y1, y2, (size_t)R * n * sizeof(float)), 0);
    csr_free(&m), free(a), free(b), free(y1), free(y2), free(scratch);
}

static void test_threads_bit_identical(void) {
    threads_bit_identical(128, 700, 520);
    threads_bit_identical(96, 2500, 256); /* B 2.6 MB */
}

static void test_nan_propagates(void) {
    float a[2 * 3] = {0, NAN, 0, 0, 0, 1};
    float b[3 * 2] = {1, 1, 1, 1, 1, 1}, y[2 * 2] = {0, 0, 0, 0};
    sp_csr m = csr_alloc(2, 2);
    sp_csr_from_dense(&m, a, 2, 3);
    sp_csr_matmul_add(y, &m, b, 2, NULL);
    CU_ASSERT_TRUE(isnan(y[0]) && isnan(y[1]));
    CU_ASSERT_EQUAL(y[2], 1.0f);
    csr_free(&m);
}

/* sp_supair_linear on an input that is ~10% nonzero and has no gradient:
 * takes the sparse path forward and for dW. */
static sp_tensor *build_sparse_linear(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_tensor *xs = sp_tensor_2d(t, in[0]->shape[0], in[0]->shape[1], 0);
    for (long e = 0; e < xs->size; e++) xs->val[e] = (e * 7) % 10 == 3 ? in[0]->val[e] : 0.0f;
    return sp_supair_linear(t, xs, in[1], in[2]);
}

static void test_sparse_linear_grad(void) {
    sp_gc_input spec[3] = {
        {2, {6, 150}, -1, 1, 0}, {2, {150, 70}, -1, 1, 1}, {1, {70}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_sparse_linear, NULL, 3, spec, 12, SP_GC_ATOL, SP_GC_RTOL);
}

/* Same product through the sparse and the dense (sgemm) path. */
static void test_sparse_linear_matches_dense(void) {
    const int B = 16, D = 400, G = 96;
    sp_tape *t = sp_tape_create(1 << 22);
    sp_tensor *x = sp_tensor_2d(t, B, D, 0), *xd = sp_tensor_2d(t, B, D, 0);
    sp_tensor *W = sp_tensor_2d(t, D, G, 0), *b = sp_tensor_1d(t, G, 0);
    float *xv = sparse_matrix(B, D, 0.1, 31);
    memcpy(x->val, xv, (size_t)B * D * sizeof(float));
    memcpy(xd->val, xv, (size_t)B * D * sizeof(float));
    for (long e = 0; e < xd->size; e++)
        if (xd->val[e] == 0.0f) xd->val[e] = 1e-30f; /* every entry nonzero: sgemm path */
    sp_gc_fill_uniform(W->val, W->size, -1, 1, 32);
    sp_gc_fill_uniform(b->val, b->size, -1, 1, 33);
    sp_tensor *ys = sp_supair_linear(t, x, W, b), *yd = sp_supair_linear(t, xd, W, b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ys);
    CU_ASSERT_PTR_NOT_NULL_FATAL(yd);
    double *want = malloc((size_t)B * G * sizeof(double));
    for (long e = 0; e < yd->size; e++) want[e] = yd->val[e];
    SP_ASSERT_CLOSE_ARRAY("sparse path vs sgemm path", ys->val, want, ys->size, 1e-4);
    free(want), free(xv);
    sp_tape_destroy(t);
}

/* (rows, n) row-major <-> column slabs of SP_SPARSE_SLAB (params.h). */
static void to_slabs(const float *rm, float *sl, int rows, int n) {
    const int S = SP_SPARSE_SLAB;
    for (int k = 0; k < n / S; k++)
        for (int r = 0; r < rows; r++)
            memcpy(sl + ((size_t)k * rows + r) * S, rm + (size_t)r * n + (size_t)k * S,
                   S * sizeof(float));
}

/* The slab kernels: the same bits as the row-major kernel, 1 and 2 threads. */
static void test_slab_kernels(void) {
    const int R = 96, C = 700, n = 3 * SP_SPARSE_SLAB;
    float *a = sparse_matrix(R, C, 0.12, 41);
    float *b = malloc((size_t)C * n * sizeof(float)), *bs = malloc((size_t)C * n * sizeof(float));
    float *y0 = malloc((size_t)R * n * sizeof(float)), *y1 = malloc((size_t)R * n * sizeof(float));
    float *yT = malloc((size_t)C * n * sizeof(float)), *yTs = malloc((size_t)C * n * sizeof(float));
    float *want = malloc((size_t)C * n * sizeof(float));
    float *dy = malloc((size_t)R * n * sizeof(float));
    sp_gc_fill_uniform(b, (long)C * n, -1, 1, 42);
    sp_gc_fill_uniform(dy, (long)R * n, -1, 1, 43);
    to_slabs(b, bs, C, n);
    long nnz = sp_count_nonzeros(a, (long)R * C);
    sp_csr m = csr_alloc(R, nnz), mt = csr_alloc(C, nnz);
    sp_csr_from_dense(&m, a, R, C);
    sp_csr_transpose(&mt, &m);
    float *scratch = malloc((size_t)sp_csr_matmul_scratch(C, 2) * sizeof(float));
    const int saved = omp_get_max_threads();
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        sp_gc_fill_uniform(y0, (long)R * n, -1, 1, 44);
        memcpy(y1, y0, (size_t)R * n * sizeof(float));
        sp_csr_matmul_add(y0, &m, b, n, scratch);
        sp_csr_matmul_add_bslabs(y1, &m, bs, n);
        CU_ASSERT_EQUAL(memcmp(y0, y1, (size_t)R * n * sizeof(float)), 0);
        /* the transposed product into a slabbed y */
        sp_gc_fill_uniform(yT, (long)C * n, -1, 1, 45);
        to_slabs(yT, yTs, C, n);
        sp_csr_matmul_add(yT, &mt, dy, n, scratch);
        sp_csr_matmul_add_yslabs(yTs, &mt, dy, n, scratch);
        to_slabs(yT, want, C, n);
        CU_ASSERT_EQUAL(memcmp(yTs, want, (size_t)C * n * sizeof(float)), 0);
    }
    omp_set_num_threads(saved);
    csr_free(&m), csr_free(&mt);
    free(a), free(b), free(bs), free(y0), free(y1), free(yT), free(yTs), free(want), free(dy);
    free(scratch);
}

/* sp_supair_linear_slabs: gradients through both paths (a sparse x without
 * gradient; a dense x with one, through the per-slab sgemms). */
static sp_tensor *build_slab_linear(sp_tape *t, sp_tensor **in, void *ctx) {
    if (ctx) return sp_supair_linear_slabs(t, in[0], in[1], in[2]);
    sp_tensor *xs = sp_tensor_2d(t, in[0]->shape[0], in[0]->shape[1], 0);
    for (long e = 0; e < xs->size; e++) xs->val[e] = (e * 7) % 10 == 3 ? in[0]->val[e] : 0.0f;
    return sp_supair_linear_slabs(t, xs, in[1], in[2]);
}

static void test_slab_linear_grad(void) {
    const int G = 2 * SP_SPARSE_SLAB;
    sp_gc_input sparse[3] = {{2, {6, 150}, -1, 1, 0}, {2, {150, G}, -1, 1, 1}, {1, {G}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_slab_linear, NULL, 3, sparse, 14, SP_GC_ATOL, SP_GC_RTOL);
    int dense = 1;
    sp_gc_input full[3] = {{2, {5, 30}, -1, 1, 1}, {2, {30, G}, -1, 1, 1}, {1, {G}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_slab_linear, &dense, 3, full, 15, SP_GC_ATOL, SP_GC_RTOL);
}

/* The slab op on slabbed W equals the row-major op: y and dW bit for bit
 * on the sparse path. */
static void test_slab_linear_matches(void) {
    const int B = 24, D = 500, G = 2 * SP_SPARSE_SLAB;
    sp_tape *t = sp_tape_create(1 << 22);
    sp_tensor *x = sp_tensor_2d(t, B, D, 0);
    sp_tensor *W = sp_tensor_2d(t, D, G, 1), *Ws = sp_tensor_2d(t, D, G, 1);
    sp_tensor *b = sp_tensor_1d(t, G, 0);
    float *xv = sparse_matrix(B, D, 0.1, 51);
    memcpy(x->val, xv, (size_t)B * D * sizeof(float));
    sp_gc_fill_uniform(W->val, W->size, -1, 1, 52);
    sp_gc_fill_uniform(b->val, b->size, -1, 1, 53);
    to_slabs(W->val, Ws->val, D, G);
    sp_tensor *y = sp_supair_linear(t, x, W, b), *ys = sp_supair_linear_slabs(t, x, Ws, b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ys);
    CU_ASSERT_EQUAL(memcmp(y->val, ys->val, (size_t)B * G * sizeof(float)), 0);
    sp_gc_fill_uniform(y->grad, y->size, -1, 1, 54);
    memcpy(ys->grad, y->grad, (size_t)B * G * sizeof(float));
    sp_tape_backward(t, sp_tensor_1d(t, 1, 1), 1.0f); /* runs the nodes on the seeded y grads */
    float *want = malloc((size_t)D * G * sizeof(float));
    to_slabs(W->grad, want, D, G);
    CU_ASSERT_EQUAL(memcmp(Ws->grad, want, (size_t)D * G * sizeof(float)), 0);
    long nz = 0;
    for (long e = 0; e < Ws->size; e++) nz += Ws->grad[e] != 0.0f;
    CU_ASSERT(nz > Ws->size / 2);
    /* a width that is not a whole number of slabs is refused */
    sp_tensor *Wbad = sp_tensor_2d(t, D, G + 8, 0);
    CU_ASSERT_PTR_NULL(sp_supair_linear_slabs(t, x, Wbad, NULL));
    free(want), free(xv);
    sp_tape_destroy(t);
}

/* The threaded transpose against the single-threaded one, entry for entry,
 * at 2 and 3 threads: a scene-sized batch (empty row 1), a matrix whose
 * nonzeros all sit in one row, and one below the threading threshold. */
static void test_transpose_threads(void) {
    const int shapes[3][2] = {{256, 2500}, {40, 20000}, {7, 30}};
    const int saved = omp_get_max_threads();
    for (int sh = 0; sh < 3; sh++) {
        const int R = shapes[sh][0], C = shapes[sh][1];
        float *x = sparse_matrix(R, C, 0.12, 60 + sh);
        if (sh == 1) /* everything in row 3, all of it nonzero */
            for (long e = 0; e < (long)R * C; e++) x[e] = e / C == 3 ? 1.0f + (float)(e % 7) : 0.0f;
        const long nnz = sp_count_nonzeros(x, (long)R * C);
        if (sh < 2) CU_ASSERT_TRUE(nnz >= 1L << 14); /* large enough to take the threaded path */
        sp_csr m = csr_alloc(R, nnz), want = csr_alloc(C, nnz), got = csr_alloc(C, nnz);
        sp_csr_from_dense(&m, x, R, C);
        omp_set_num_threads(1);
        sp_csr_transpose(&want, &m);
        for (int th = 2; th <= 3; th++) {
            omp_set_num_threads(th);
            memset(got.start, 0xff, (size_t)(C + 1) * sizeof(int));
            memset(got.col, 0xff, (size_t)nnz * sizeof(int));
            memset(got.val, 0xff, (size_t)nnz * sizeof(float));
            sp_csr_transpose(&got, &m);
            CU_ASSERT_EQUAL(got.rows, C);
            CU_ASSERT_EQUAL(got.cols, R);
            CU_ASSERT_EQUAL(got.nnz, nnz);
            CU_ASSERT_EQUAL(memcmp(got.start, want.start, (size_t)(C + 1) * sizeof(int)), 0);
            CU_ASSERT_EQUAL(memcmp(got.col, want.col, (size_t)nnz * sizeof(int)), 0);
            CU_ASSERT_EQUAL(memcmp(got.val, want.val, (size_t)nnz * sizeof(float)), 0);
        }
        omp_set_num_threads(saved);
        csr_free(&m), csr_free(&want), csr_free(&got), free(x);
    }
}

static const sp_test_case cases[] = {
    {"CSR round trip and transpose", test_csr_round_trip},
    {"CSR of a scene-sized batch at 1 and 2 threads", test_csr_large_threads},
    {"threaded transpose equals the single-threaded one", test_transpose_threads},
    {"CSR x dense against a double loop (slabs, tails, empty rows)", test_product_shapes},
    {"1 and 2 threads bit-identical", test_threads_bit_identical},
    {"NaN in the sparse operand propagates", test_nan_propagates},
    {"sparse input projection gradients", test_sparse_linear_grad},
    {"sparse input projection matches the sgemm path", test_sparse_linear_matches_dense},
    {"slab kernels: the row-major kernel's bits, 1 and 2 threads", test_slab_kernels},
    {"input projection with W in slabs: gradients", test_slab_linear_grad},
    {"input projection with W in slabs equals the row-major op", test_slab_linear_matches},
    {NULL, NULL},
};

static const sp_test_suite suites[] = {{"sparse", cases}, {NULL, NULL}};

int main(void) { return sp_test_main(suites); }
