/* Tests of Adam (both forms) against hand-computed steps, gradient clipping,
 * the global norm and the finiteness check (optim.h). */
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/optim.h"
#include "testutil.h"

/* Two entries, 5 + 20 floats, so the buffer has padding between and after. */
static void make_params(sp_params *p) {
    sp_error err = {0};
    sp_params_init(p);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "w", 1, (int[]){5}, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(p, "u", 2, (int[]){4, 5}, &err), 1);
    CU_ASSERT_EQUAL_FATAL(sp_params_finalize(p, &err), SP_OK);
}

static void check_padding_zero(const sp_params *p) {
    for (int b = 0; b < 4; b++) {
        const float *buf = b == 0 ? p->val : b == 1 ? p->grad : b == 2 ? p->adam_m : p->adam_v;
        long prev_end = 0;
        for (int e = 0; e <= p->n_entries; e++) {
            long start = e < p->n_entries ? p->entries[e].offset : p->total;
            for (long i = prev_end; i < start; i++) CU_ASSERT_EQUAL(buf[i], 0.0f);
            if (e < p->n_entries) prev_end = start + p->entries[e].size;
        }
    }
}

/* The single-parameter trajectory p0 = 1, lr = 0.1, g = 0.5, -0.25, 2.0,
 * worked out by hand (in double, from the formulas in optim.h):
 *   PyTorch, eps 1e-8: step 1: m = 0.05, v = 2.5e-4, c1 = 0.1, c2 = 1e-3,
 *     m/c1 = 0.5, sqrt(v/c2) = 0.5 -> p = 1 - 0.1 * 0.5/(0.5 + 1e-8) = 0.900000002
 *   Lasagne, eps 1e-4: step 1: a = 0.1 * sqrt(1e-3)/0.1 = 0.0316227766,
 *     m/(sqrt(v) + eps) = 0.05/(0.0158113883 + 1e-4) = 3.14245... -> p = 0.90062848 */
static const double traj_g[3] = {0.5, -0.25, 2.0};
static const double traj_pytorch[3] = {0.900000002, 0.8733662987078463, 0.8063015345291531};
static const double traj_lasagne[3] = {0.9006284806712606, 0.8741446518270045,
                                       0.8071818629292986};

static void run_trajectory(sp_adam_form form, const double *expect) {
    sp_params p;
    make_params(&p);
    sp_adam a;
    sp_adam_init(&a, form, 0.1f);
    CU_ASSERT_EQUAL(a.t, 0);
    CU_ASSERT_EQUAL(a.eps, form == SP_ADAM_LASAGNE ? 1e-4f : 1e-8f);
    float *w = sp_params_val(&p, 0);
    w[2] = 1.0f;
    for (int t = 0; t < 3; t++) {
        sp_params_grad(&p, 0)[2] = (float)traj_g[t];
        sp_adam_step(&p, &a, -1.0f); // negative: use a.lr
        CU_ASSERT_EQUAL(a.t, t + 1);
        SP_ASSERT_CLOSE(w[2], expect[t], 2e-7);
    }
    check_padding_zero(&p);
    sp_params_free(&p);
}

static void test_adam_pytorch_by_hand(void) { run_trajectory(SP_ADAM_PYTORCH, traj_pytorch); }
static void test_adam_lasagne_by_hand(void) { run_trajectory(SP_ADAM_LASAGNE, traj_lasagne); }

/* Every element of the buffer, with a different learning rate each step
 * (schedules pass it), against a double-precision reference. */
static void run_reference(sp_adam_form form) {
    sp_params p;
    make_params(&p);
    sp_adam a;
    sp_adam_init(&a, form, 1e-3f);
    const double lrs[3] = {1e-2, 5e-3, 2e-2};
    int n = 25;
    double ref_p[25], ref_m[25] = {0}, ref_v[25] = {0};
    float *ptrs[25];
    float *gptrs[25];
    for (int k = 0; k < n; k++) {
        int e = k < 5 ? 0 : 1, j = k < 5 ? k : k - 5;
        ptrs[k] = sp_params_val(&p, e) + j;
        gptrs[k] = sp_params_grad(&p, e) + j;
        *ptrs[k] = (float)(0.1 * k - 1.0);
        ref_p[k] = *ptrs[k];
    }
    for (int t = 1; t <= 3; t++) {
        for (int k = 0; k < n; k++) {
            /* Magnitudes from 1e-6 to 1e2: eps matters at the small end. */
            double g = pow(10.0, (k % 9) - 6) * ((k + t) % 3 == 0 ? -1.0 : 1.0) * (1.0 + 0.1 * t);
            *gptrs[k] = (float)g;
            g = *gptrs[k];
            double b1 = 0.9, b2 = 0.999;
            ref_m[k] = b1 * ref_m[k] + (1 - b1) * g;
            ref_v[k] = b2 * ref_v[k] + (1 - b2) * g * g;
            double c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t);
            if (form == SP_ADAM_PYTORCH)
                ref_p[k] -= lrs[t - 1] * (ref_m[k] / c1) / (sqrt(ref_v[k] / c2) + 1e-8);
            else
                ref_p[k] -= lrs[t - 1] * sqrt(c2) / c1 * ref_m[k] / (sqrt(ref_v[k]) + 1e-4);
        }
        sp_adam_step(&p, &a, (float)lrs[t - 1]);
        for (int k = 0; k < n; k++) SP_ASSERT_CLOSE(*ptrs[k], ref_p[k], 1e-6);
    }
    check_padding_zero(&p);
    sp_params_free(&p);
}

static void test_adam_pytorch_reference(void) { run_reference(SP_ADAM_PYTORCH); }
static void test_adam_lasagne_reference(void) { run_reference(SP_ADAM_LASAGNE); }

static void test_forms_differ_only_by_eps(void) {
    /* With eps = 0 the two forms are the same update (only the first 5
     * floats are compared: with eps = 0 the zero padding would turn 0/0). */
    sp_params p1, p2;
    make_params(&p1);
    make_params(&p2);
    sp_adam a1, a2;
    sp_adam_init(&a1, SP_ADAM_PYTORCH, 1e-2f);
    sp_adam_init(&a2, SP_ADAM_LASAGNE, 1e-2f);
    a1.eps = a2.eps = 0.0f;
    for (int t = 0; t < 3; t++) {
        for (int k = 0; k < 5; k++) p1.grad[k] = p2.grad[k] = (float)((k + 1) * (t % 2 ? -0.3 : 0.7));
        sp_adam_step(&p1, &a1, -1);
        sp_adam_step(&p2, &a2, -1);
    }
    for (int k = 0; k < 5; k++) SP_ASSERT_CLOSE(p1.val[k], p2.val[k], 1e-7);
    sp_params_free(&p1);
    sp_params_free(&p2);
}

static void test_adam_zero_grad_variant(void) {
    /* sp_adam_step_zero_grad: bit for bit the update of sp_adam_step, and
     * every gradient entry (padding included) 0 afterwards. */
    sp_params p1, p2;
    make_params(&p1);
    make_params(&p2);
    sp_adam a1, a2;
    sp_adam_init(&a1, SP_ADAM_PYTORCH, 1e-2f);
    sp_adam_init(&a2, SP_ADAM_PYTORCH, 1e-2f);
    for (int t = 0; t < 3; t++) {
        for (int k = 0; k < 5; k++) p1.grad[k] = p2.grad[k] = (float)((k + 1) * (t % 2 ? -0.3 : 0.7));
        sp_adam_step(&p1, &a1, -1);
        sp_adam_step_zero_grad(&p2, &a2, -1);
        for (long i = 0; i < p2.total; i++) CU_ASSERT_EQUAL(p2.grad[i], 0.0f);
    }
    CU_ASSERT_EQUAL(memcmp(p1.val, p2.val, (size_t)p1.total * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(p1.adam_m, p2.adam_m, (size_t)p1.total * sizeof(float)), 0);
    CU_ASSERT_EQUAL(memcmp(p1.adam_v, p2.adam_v, (size_t)p1.total * sizeof(float)), 0);
    sp_params_free(&p1);
    sp_params_free(&p2);
}

/* Two tables of one 40,003-float entry (a vector body, a scalar tail and
 * several Adam chunks) with the same random values. */
static void twin_params(sp_params *p1, sp_params *p2, uint64_t seed) {
    sp_error err = {0};
    sp_params *p[2] = {p1, p2};
    for (int k = 0; k < 2; k++) {
        sp_params_init(p[k]);
        CU_ASSERT_EQUAL_FATAL(sp_params_add(p[k], "w", 1, (int[]){40003}, &err), 0);
        CU_ASSERT_EQUAL_FATAL(sp_params_finalize(p[k], &err), SP_OK);
    }
    sp_gc_fill_uniform(p1->val, p1->total, -1.0f, 1.0f, seed);
    memcpy(p2->val, p1->val, sizeof(float) * p1->total);
}

/* Values and moments the same bits; p2's gradient zeroed by its steps. */
static void assert_same_step(const sp_params *p1, const sp_params *p2) {
    const size_t bytes = (size_t)p1->total * sizeof(float);
    CU_ASSERT_EQUAL(memcmp(p1->val, p2->val, bytes), 0);
    CU_ASSERT_EQUAL(memcmp(p1->adam_m, p2->adam_m, bytes), 0);
    CU_ASSERT_EQUAL(memcmp(p1->adam_v, p2->adam_v, bytes), 0);
    for (long i = 0; i < p2->total; i++) CU_ASSERT_EQUAL(p2->grad[i], 0.0f);
}

static void test_adam_scaled_variant(void) {
    /* The trainer's fused average: sp_adam_step_zero_grad_scaled(g, s) and
     * sp_grad_global_norm_scaled bit for bit sp_grad_scale(s) followed by
     * the unscaled calls, over a vector body, a scalar tail and several
     * chunks (40,003 parameters, gradient sums of a 256 batch). */
    sp_params p1, p2;
    twin_params(&p1, &p2, 12);
    const long n = p1.total;
    sp_adam a1, a2;
    sp_adam_init(&a1, SP_ADAM_PYTORCH, 1e-3f);
    sp_adam_init(&a2, SP_ADAM_PYTORCH, 1e-3f);
    const float s = 1.0f / 256.0f * 3.0f; /* not a power of two: products round */
    for (int t = 0; t < 3; t++) {
        sp_gc_fill_uniform(p1.grad, n, -40.0f, 40.0f, 30 + t);
        memcpy(p2.grad, p1.grad, sizeof(float) * n);
        sp_grad_scale(&p1, s);
        const double n1 = sp_grad_global_norm(&p1), n2 = sp_grad_global_norm_scaled(&p2, s);
        CU_ASSERT_EQUAL(memcmp(&n1, &n2, sizeof n1), 0);
        sp_adam_step_zero_grad(&p1, &a1, -1);
        sp_adam_step_zero_grad_scaled(&p2, &a2, -1, s);
    }
    assert_same_step(&p1, &p2);
    sp_params_free(&p1);
    sp_params_free(&p2);
}

static void test_adam_slices_make_the_whole_step(void) {
    /* Node-shared parameters: each rank steps its own slice with its own
     * sp_adam (same t). Three slices (16-float aligned, one past the scalar
     * tail and several chunks) give the whole step bit for bit, and a slice's
     * step touches nothing outside it. */
    sp_params p1, p2;
    twin_params(&p1, &p2, 13);
    const long n = p1.total, cut[4] = {0, 8192 + 48, 30000, n};
    sp_adam a1, a2[3];
    sp_adam_init(&a1, SP_ADAM_LASAGNE, 1e-3f);
    for (int k = 0; k < 3; k++) a2[k] = a1;
    const float s = 3.0f / 256.0f;
    for (int t = 0; t < 3; t++) {
        sp_gc_fill_uniform(p1.grad, n, -40.0f, 40.0f, 40 + t);
        memcpy(p2.grad, p1.grad, sizeof(float) * n);
        sp_adam_step_zero_grad_scaled(&p1, &a1, -1, s);
        for (int k = 0; k < 3; k++) {
            sp_adam_step_slice(&p2, &a2[k], -1, s, cut[k], cut[k + 1]);
            CU_ASSERT_EQUAL(a2[k].t, a1.t);
            if (k < 2) CU_ASSERT_NOT_EQUAL(p2.grad[cut[k + 1]], 0.0f); /* the next slice's: untouched */
        }
    }
    assert_same_step(&p1, &p2);
    /* The array helpers are the whole-buffer functions over a range. */
    sp_gc_fill_uniform(p1.grad, n, -4.0f, 4.0f, 50);
    memcpy(p2.grad, p1.grad, sizeof(float) * n);
    const double whole = sp_grad_global_norm_scaled(&p1, s);
    const double parts = sp_floats_sum_squares(p1.grad, cut[1], s) +
                         sp_floats_sum_squares(p1.grad + cut[1], n - cut[1], s);
    SP_ASSERT_CLOSE(sqrt(parts), whole, 1e-12);
    sp_grad_scale(&p1, 0.5f);
    sp_clip_elementwise(&p1, 1.0f);
    sp_floats_scale(p2.grad, cut[1], 0.5f);
    sp_floats_scale(p2.grad + cut[1], n - cut[1], 0.5f);
    sp_floats_clip(p2.grad, cut[2], 1.0f);
    sp_floats_clip(p2.grad + cut[2], n - cut[2], 1.0f);
    CU_ASSERT_EQUAL(memcmp(p1.grad, p2.grad, (size_t)n * sizeof(float)), 0);
    sp_params_free(&p1);
    sp_params_free(&p2);
}

static void test_adam_vector_matches_scalar(void) {
    /* A large parameter set (vector body, scalar tail, several chunks and a
     * thread team): both Adam forms bit for bit against the update written
     * out in scalar ISO C, the operations in the documented order. */
    sp_error err = {0};
    sp_params p;
    sp_params_init(&p);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(&p, "big", 1, (int[]){70001}, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sp_params_finalize(&p, &err), SP_OK);
    const long n = p.total;
    float *val = malloc(sizeof(float) * n), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    sp_gc_fill_uniform(p.val, n, -1.0f, 1.0f, 91);
    memcpy(val, p.val, sizeof(float) * n);
    for (int form = 0; form < 2; form++) {
        sp_adam a;
        sp_adam_init(&a, form ? SP_ADAM_LASAGNE : SP_ADAM_PYTORCH, 1e-3f);
        for (int t = 1; t <= 3; t++) {
            sp_gc_fill_uniform(p.grad, n, -2.0f, 2.0f, 92 + t);
            double c1 = 1.0 - pow((double)a.b1, t), c2 = 1.0 - pow((double)a.b2, t);
            float step = form ? (float)(a.lr * sqrt(c2) / c1) : (float)(a.lr / c1);
            float vscale = form ? 1.0f : (float)(1.0 / sqrt(c2));
            for (long i = 0; i < n; i++) {
                float gi = p.grad[i];
                m[i] = a.b1 * m[i] + (1.0f - a.b1) * gi;
                v[i] = a.b2 * v[i] + (1.0f - a.b2) * gi * gi;
                val[i] -= step * (m[i] / (sqrtf(v[i]) * vscale + a.eps));
            }
            sp_adam_step(&p, &a, -1);
        }
        CU_ASSERT_EQUAL(memcmp(val, p.val, sizeof(float) * n), 0);
        CU_ASSERT_EQUAL(memcmp(m, p.adam_m, sizeof(float) * n), 0);
        CU_ASSERT_EQUAL(memcmp(v, p.adam_v, sizeof(float) * n), 0);
        memset(m, 0, sizeof(float) * n), memset(v, 0, sizeof(float) * n);
        sp_params_zero_adam(&p);
    }
    free(val), free(m), free(v);
    sp_params_free(&p);
}

static void fill_grad(sp_params *p) {
    /* Norm of entry w: sqrt(9 + 16) = 5; entry u: sqrt(20 * 1.5^2). */
    float *gw = sp_params_grad(p, 0), *gu = sp_params_grad(p, 1);
    memset(p->grad, 0, (size_t)p->total * sizeof(float));
    gw[0] = 3.0f;
    gw[4] = -4.0f;
    for (int i = 0; i < 20; i++) gu[i] = i % 2 ? 1.5f : -1.5f;
}

static void test_global_norm_and_clip(void) {
    sp_params p;
    make_params(&p);
    fill_grad(&p);
    double expect = sqrt(25.0 + 20 * 2.25); // sqrt(70)
    SP_ASSERT_CLOSE(sp_grad_global_norm(&p), expect, 1e-12);
    /* Above the norm: nothing changes, the norm is still reported. */
    SP_ASSERT_CLOSE(sp_clip_global_norm(&p, 100.0), expect, 1e-12);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 0)[0], 3.0f);
    /* Below: rescaled to norm 2, direction kept. */
    SP_ASSERT_CLOSE(sp_clip_global_norm(&p, 2.0), expect, 1e-12);
    SP_ASSERT_CLOSE(sp_grad_global_norm(&p), 2.0, 1e-5);
    SP_ASSERT_CLOSE(sp_params_grad(&p, 0)[0], 3.0 * 2.0 / expect, 1e-6);
    SP_ASSERT_CLOSE(sp_params_grad(&p, 0)[4], -4.0 * 2.0 / expect, 1e-6);
    SP_ASSERT_CLOSE(sp_params_grad(&p, 1)[7], 1.5 * 2.0 / expect, 1e-6);
    check_padding_zero(&p);

    /* Element-wise: SRNN's order, global 3000 then +-1000, at a small scale. */
    fill_grad(&p);
    sp_clip_elementwise(&p, 2.0f);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 0)[0], 2.0f);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 0)[4], -2.0f);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 1)[0], -1.5f);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 1)[1], 1.5f);
    check_padding_zero(&p);

    sp_grad_scale(&p, 0.5f);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 0)[0], 1.0f);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 1)[1], 0.75f);
    sp_params_free(&p);
}

static void test_norm_large_and_deterministic(void) {
    /* Big enough to go parallel; the sum must match a serial double sum to
     * rounding, and be bit-identical on repeat. */
    sp_params p;
    sp_error err = {0};
    sp_params_init(&p);
    CU_ASSERT_EQUAL_FATAL(sp_params_add(&p, "big", 2, (int[]){1000, 301}, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sp_params_finalize(&p, &err), SP_OK);
    double s = 0.0;
    for (long i = 0; i < 301000; i++) {
        p.grad[i] = (float)((i % 1013) * 1e-3 - 0.5);
        s += (double)p.grad[i] * p.grad[i];
    }
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    double n1 = sp_grad_global_norm(&p);
    omp_set_num_threads(2);
    double n2 = sp_grad_global_norm(&p);
    SP_ASSERT_CLOSE(n1, sqrt(s), 1e-9 * sqrt(s));
    CU_ASSERT_EQUAL(n1, n2); // bit-identical at 1 and 2 threads
    /* Adam is element-wise: bit-identical at any thread count too. */
    sp_adam a1, a2;
    sp_adam_init(&a1, SP_ADAM_PYTORCH, 1e-3f);
    sp_adam_init(&a2, SP_ADAM_PYTORCH, 1e-3f);
    omp_set_num_threads(1);
    sp_adam_step(&p, &a1, -1);
    size_t bytes = (size_t)p.total * sizeof(float);
    float *val1 = malloc(bytes), *v_1 = malloc(bytes);
    memcpy(val1, p.val, bytes);
    memcpy(v_1, p.adam_v, bytes);
    float v1 = p.val[12345], m1 = p.adam_m[300001];
    memset(p.val, 0, (size_t)p.total * sizeof(float));
    sp_params_zero_adam(&p);
    omp_set_num_threads(2);
    sp_adam_step(&p, &a2, -1);
    omp_set_num_threads(saved);
    CU_ASSERT_EQUAL(v1, p.val[12345]);
    CU_ASSERT_EQUAL(m1, p.adam_m[300001]);
    CU_ASSERT_NOT_EQUAL(v1, 0.0f);
    CU_ASSERT_EQUAL(memcmp(val1, p.val, bytes), 0);
    CU_ASSERT_EQUAL(memcmp(v_1, p.adam_v, bytes), 0);
    free(val1);
    free(v_1);
    CU_ASSERT_TRUE(sp_grad_all_finite(&p));
    p.grad[300999] = NAN;
    CU_ASSERT_FALSE(sp_grad_all_finite(&p));
    sp_params_free(&p);
}

static void test_finite(void) {
    sp_params p;
    make_params(&p);
    fill_grad(&p);
    CU_ASSERT_TRUE(sp_grad_all_finite(&p));
    CU_ASSERT_TRUE(sp_params_all_finite(&p));
    sp_params_grad(&p, 1)[19] = INFINITY;
    CU_ASSERT_FALSE(sp_grad_all_finite(&p));
    CU_ASSERT_FALSE(isfinite(sp_grad_global_norm(&p)));
    /* A non-finite norm must not rescale (it would spread NaN everywhere). */
    sp_clip_global_norm(&p, 1.0);
    CU_ASSERT_EQUAL(sp_params_grad(&p, 0)[0], 3.0f);
    sp_params_grad(&p, 1)[19] = -INFINITY;
    CU_ASSERT_FALSE(sp_grad_all_finite(&p));
    sp_params_grad(&p, 1)[19] = NAN;
    CU_ASSERT_FALSE(sp_grad_all_finite(&p));
    /* Element-wise clipping must not turn NaN into a finite value. */
    sp_clip_elementwise(&p, 1.0f);
    CU_ASSERT_FALSE(sp_grad_all_finite(&p));
    sp_params_grad(&p, 1)[19] = 3.4e38f; // large but finite
    CU_ASSERT_TRUE(sp_grad_all_finite(&p));
    sp_params_val(&p, 0)[1] = NAN;
    CU_ASSERT_FALSE(sp_params_all_finite(&p));
    float x[3] = {1.0f, -0.0f, 1e-45f};
    CU_ASSERT_TRUE(sp_floats_all_finite(x, 3));
    x[1] = -NAN;
    CU_ASSERT_FALSE(sp_floats_all_finite(x, 3));
    sp_params_free(&p);
}

static const sp_test_case cases[] = {
    {"adam_pytorch_by_hand", test_adam_pytorch_by_hand},
    {"adam_lasagne_by_hand", test_adam_lasagne_by_hand},
    {"adam_pytorch_reference", test_adam_pytorch_reference},
    {"adam_lasagne_reference", test_adam_lasagne_reference},
    {"forms_differ_only_by_eps", test_forms_differ_only_by_eps},
    {"adam_zero_grad_variant", test_adam_zero_grad_variant},
    {"adam_scaled_variant", test_adam_scaled_variant},
    {"adam_slices_make_the_whole_step", test_adam_slices_make_the_whole_step},
    {"adam_vector_matches_scalar", test_adam_vector_matches_scalar},
    {"global_norm_and_clip", test_global_norm_and_clip},
    {"norm_large_and_deterministic", test_norm_large_and_deterministic},
    {"finite", test_finite},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"optim", cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
