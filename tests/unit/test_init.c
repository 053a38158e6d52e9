/* Tests of the initialisers (init.h): orthogonality, Glorot bounds and
 * variance, truncated normal, reproducibility from (seed, entry index). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "supair/init.h"
#include "testutil.h"

/* max |(W^T W)_ij - gain^2 delta_ij| over columns [c0, c0+nc) of a row-major
 * (rows, ld) matrix; with `rows_orth` it checks W W^T instead. */
static double orth_error(const float *w, int rows, int c0, int nc, int ld, double gain,
                         int rows_orth) {
    double worst = 0.0;
    int n = rows_orth ? rows : nc, len = rows_orth ? nc : rows;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = 0.0;
            for (int k = 0; k < len; k++) {
                double x = rows_orth ? w[(long)a * ld + c0 + k] : w[(long)k * ld + c0 + a];
                double y = rows_orth ? w[(long)b * ld + c0 + k] : w[(long)k * ld + c0 + b];
                s += x * y;
            }
            double e = fabs(s - (a == b ? gain * gain : 0.0));
            if (e > worst) worst = e;
        }
    return worst;
}

static void test_orthogonal_shapes(void) {
    sp_error err = {0};
    struct { int r, c; } cases[] = {{64, 64}, {50, 20}, {20, 50}, {1, 7}, {7, 1}, {200, 200}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int r = cases[t].r, c = cases[t].c;
        float *w = malloc((size_t)r * c * sizeof *w);
        CU_ASSERT_EQUAL_FATAL(sp_init_orthogonal(w, r, c, c, 1.0f, 42, 3, 0, &err), SP_OK);
        double e = orth_error(w, r, 0, c, c, 1.0, r < c);
        SP_ASSERT_CLOSE(e, 0.0, 1e-5);
        /* Entries of a Haar matrix are ~N(0, 1/max(r,c)): not all one sign,
         * and rows are not just a permutation of the identity. */
        double mx = 0.0;
        for (long i = 0; i < (long)r * c; i++) mx = fmax(mx, fabs(w[i]));
        if (r > 1 && c > 1) CU_ASSERT(mx < 0.99);
        free(w);
    }
}

static void test_orthogonal_gain_and_ld(void) {
    /* A (16, 10) block inside a row-major (16, 13) array: the 3 extra
     * columns must stay untouched. */
    sp_error err = {0};
    float w[16 * 13];
    for (int i = 0; i < 16 * 13; i++) w[i] = 7.0f;
    CU_ASSERT_EQUAL(sp_init_orthogonal(w, 16, 10, 13, 2.0f, 1, 0, 0, &err), SP_OK);
    SP_ASSERT_CLOSE(orth_error(w, 16, 0, 10, 13, 2.0, 0), 0.0, 4e-5);
    for (int i = 0; i < 16; i++)
        for (int j = 10; j < 13; j++) CU_ASSERT_EQUAL(w[i * 13 + j], 7.0f);
    CU_ASSERT_NOT_EQUAL(sp_init_orthogonal(w, 16, 10, 9, 1.0f, 1, 0, 0, &err), SP_OK);
    CU_ASSERT_EQUAL(err.code, SP_EINPUT);
}

static void test_orthogonal_gate_blocks(void) {
    /* GRU hidden weight (H, 3H): each (H, H) gate block orthogonal. */
    sp_error err = {0};
    int h = 48;
    float *w = malloc((size_t)h * 3 * h * sizeof *w);
    CU_ASSERT_EQUAL_FATAL(sp_init_orthogonal_blocks(w, h, 3 * h, 3, 1.0f, 9, 2, &err), SP_OK);
    for (int b = 0; b < 3; b++) {
        double e = orth_error(w, h, b * h, h, 3 * h, 1.0, 0);
        SP_ASSERT_CLOSE(e, 0.0, 1e-5);
        e = orth_error(w, h, b * h, h, 3 * h, 1.0, 1);
        SP_ASSERT_CLOSE(e, 0.0, 1e-5);
    }
    /* The gates are different matrices (different sub-streams), and the whole
     * (H, 3H) matrix is NOT semi-orthogonal as one: W W^T = 3 I instead. */
    CU_ASSERT_NOT_EQUAL(w[0], w[h]);
    CU_ASSERT_NOT_EQUAL(w[h], w[2 * h]);
    SP_ASSERT_CLOSE(orth_error(w, h, 0, 3 * h, 3 * h, sqrt(3.0), 1), 0.0, 3e-5);
    CU_ASSERT_NOT_EQUAL(sp_init_orthogonal_blocks(w, h, 3 * h, 5, 1.0f, 9, 2, &err), SP_OK);
    free(w);
}

static void test_orthogonal_threads(void) {
    /* Big enough for the parallel path; bit-identical at 1 and 2 threads. */
    sp_error err = {0};
    int n = 300;
    float *a = malloc((size_t)n * n * sizeof *a), *b = malloc((size_t)n * n * sizeof *b);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    CU_ASSERT_EQUAL(sp_init_orthogonal(a, n, n, n, 1.0f, 5, 1, 0, &err), SP_OK);
    omp_set_num_threads(2);
    CU_ASSERT_EQUAL(sp_init_orthogonal(b, n, n, n, 1.0f, 5, 1, 0, &err), SP_OK);
    omp_set_num_threads(saved);
    CU_ASSERT_EQUAL(memcmp(a, b, (size_t)n * n * sizeof *a), 0);
    SP_ASSERT_CLOSE(orth_error(a, n, 0, n, n, 1.0, 0), 0.0, 1e-5);
    free(a);
    free(b);
}

static void test_glorot(void) {
    int fi = 256, fo = 512;
    long n = (long)fi * fo;
    float *w = malloc((size_t)n * sizeof *w);
    sp_init_glorot_uniform(w, n, fi, fo, 123, 0);
    double limit = sqrt(6.0 / (fi + fo)), s = 0.0, s2 = 0.0, mx = 0.0;
    for (long i = 0; i < n; i++) {
        s += w[i];
        s2 += (double)w[i] * w[i];
        mx = fmax(mx, fabs(w[i]));
    }
    CU_ASSERT(mx <= limit * (1 + 1e-7));
    CU_ASSERT(mx > 0.999 * limit); // the bound is reached, not a narrower range
    double mean = s / n, var = s2 / n - mean * mean;
    SP_ASSERT_CLOSE(mean, 0.0, 5.0 * limit / sqrt(3.0 * n));
    SP_ASSERT_CLOSE(var, 2.0 / (fi + fo), 0.02 * 2.0 / (fi + fo));
    free(w);
}

static void test_trunc_normal_uniform_constant(void) {
    long n = 50000;
    float *w = malloc((size_t)n * sizeof *w);
    sp_init_trunc_normal(w, n, 0.5f, 7, 1);
    double s2 = 0.0, mx = 0.0;
    for (long i = 0; i < n; i++) {
        s2 += (double)w[i] * w[i];
        mx = fmax(mx, fabs(w[i]));
    }
    CU_ASSERT(mx <= 1.0);
    /* std of N(0,1) truncated at +-2 is 0.8796. */
    SP_ASSERT_CLOSE(sqrt(s2 / n), 0.5 * 0.8796, 0.01);
    sp_init_uniform(w, n, -0.001f, 0.001f, 7, 1);
    double s = 0.0;
    mx = 0.0;
    for (long i = 0; i < n; i++) {
        s += w[i];
        mx = fmax(mx, fabs(w[i]));
    }
    CU_ASSERT(mx <= 0.001);
    CU_ASSERT(mx > 0.00099);
    SP_ASSERT_CLOSE(s / n, 0.0, 2e-5);
    sp_init_constant(w, n, 0.1f);
    CU_ASSERT_EQUAL(w[0], 0.1f);
    CU_ASSERT_EQUAL(w[n - 1], 0.1f);
    free(w);
}

static void build(sp_params *p) {
    sp_error err = {0};
    sp_params_init(p);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "gru/W_h", 2, (int[]){32, 96}, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "mlp/W1", 2, (int[]){40, 30}, &err), 1);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "mlp/W2", 2, (int[]){40, 30}, &err), 2);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "mlp/b", 1, (int[]){30}, &err), 3);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "spn/mu", 3, (int[]){4, 5, 6}, &err), 4);
    CU_ASSERT_EQUAL_FATAL(sp_params_finalize(p, &err), SP_OK);
}

static int init_all(sp_params *p, uint64_t seed) {
    sp_error err = {0};
    int rc = 0;
    rc |= sp_init_param_orthogonal(p, "gru/W_h", 3, 1.0f, seed, &err);
    rc |= sp_init_param_glorot(p, "mlp/W1", 0, 0, seed, &err);
    rc |= sp_init_param_glorot(p, "mlp/W2", 0, 0, seed, &err);
    rc |= sp_init_param_constant(p, "mlp/b", 0.1f, &err);
    rc |= sp_init_param_trunc_normal(p, "spn/mu", 0.1f, seed, &err);
    return rc;
}

static void test_params_reproducible(void) {
    sp_params a, b, c;
    build(&a);
    build(&b);
    build(&c);
    CU_ASSERT_EQUAL(init_all(&a, 2024), SP_OK);
    CU_ASSERT_EQUAL(init_all(&b, 2024), SP_OK);
    CU_ASSERT_EQUAL(init_all(&c, 2025), SP_OK);
    size_t bytes = (size_t)a.total * sizeof(float);
    CU_ASSERT_EQUAL(memcmp(a.val, b.val, bytes), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a.val, c.val, bytes), 0);
    /* Same shape, same seed, different entry index: different values. */
    CU_ASSERT_NOT_EQUAL(memcmp(sp_params_val(&a, 1), sp_params_val(&a, 2), 1200 * sizeof(float)), 0);
    CU_ASSERT_EQUAL(sp_params_val(&a, 3)[29], 0.1f);
    SP_ASSERT_CLOSE(orth_error(sp_params_val(&a, 0), 32, 64, 32, 96, 1.0, 0), 0.0, 1e-5);
    /* Padding untouched. */
    for (long i = a.entries[4].offset + a.entries[4].size; i < a.total; i++)
        CU_ASSERT_EQUAL(a.val[i], 0.0f);
    sp_params_free(&a);
    sp_params_free(&b);
    sp_params_free(&c);
}

static void test_param_errors(void) {
    sp_params p;
    sp_error err = {0};
    build(&p);
    CU_ASSERT_EQUAL(sp_init_param_glorot(&p, "nope", 0, 0, 1, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "nope"));
    CU_ASSERT_EQUAL(sp_init_param_glorot(&p, "spn/mu", 0, 0, 1, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "spn/mu"));
    CU_ASSERT_EQUAL(sp_init_param_orthogonal(&p, "mlp/W1", 4, 1.0f, 1, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "mlp/W1"));
    sp_params_free(&p);
}

static const sp_test_case cases[] = {
    {"orthogonal_shapes", test_orthogonal_shapes},
    {"orthogonal_gain_and_ld", test_orthogonal_gain_and_ld},
    {"orthogonal_gate_blocks", test_orthogonal_gate_blocks},
    {"orthogonal_threads", test_orthogonal_threads},
    {"glorot", test_glorot},
    {"trunc_normal_uniform_constant", test_trunc_normal_uniform_constant},
    {"params_reproducible", test_params_reproducible},
    {"param_errors", test_param_errors},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"init", cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
