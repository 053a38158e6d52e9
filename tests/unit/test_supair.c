/* Tests of the SuPAIR model (src/models/supair*.c): finite-difference
 * gradients of each fused op and of the whole loss, the ELBO against a
 * double-precision re-derivation, evaluation metrics on hand-made scenes,
 * the sum-over-examples property ranks rely on, bit determinism, and a short
 * Adam run that must lower the loss. Models here are shrunk (small LSTM and
 * SPNs) so the whole file runs in seconds; the scenes keep their 50x50. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/config.h"
#include "supair/optim.h"
#include "supair/ops.h"
#include "supair/supair.h"
#include "supair/train.h"
#include "testutil.h"

static const sp_supair_bounds BD = {0.3f, 0.9f, 0.75f, 1.25f, 45.0f, 0.3f};

/* ------------------------------------------------------ op gradchecks */

static sp_tensor *build_linear(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    return sp_supair_linear(t, in[0], in[1], in[2]);
}

static void test_linear_grad(void) {
    sp_gc_input spec[3] = {{2, {3, 7}, -1, 1, 1}, {2, {7, 5}, -1, 1, 1}, {1, {5}, -1, 1, 1}};
    SP_ASSERT_GRADCHECK(build_linear, NULL, 3, spec, 11, SP_GC_ATOL, SP_GC_RTOL);
}

typedef struct head_case {
    float eps[5 * 4];
    int use_eps;
} head_case;

static sp_tensor *build_head(sp_tape *t, sp_tensor **in, void *ctx) {
    head_case *hc = ctx;
    return sp_supair_head(t, in[0], in[1], in[2], in[3], in[4], hc->use_eps ? hc->eps : NULL, &BD);
}

static void test_head_grad(void) {
    head_case hc;
    sp_gc_fill_uniform(hc.eps, 20, -2, 2, 5);
    sp_gc_input spec[5] = {{2, {5, 6}, -1, 1, 1},
                           {2, {6, 4}, -1, 1, 1},
                           {1, {4}, -0.5f, 0.5f, 1},
                           {2, {4, 9}, -1, 1, 1},
                           {1, {9}, -0.5f, 0.5f, 1}};
    for (int use = 0; use < 2; use++) {
        hc.use_eps = use;
        SP_ASSERT_GRADCHECK(build_head, &hc, 5, spec, 21 + use, SP_GC_ATOL, SP_GC_RTOL);
    }
}

/* The z row against the formula, with W2 = 0 so o = b2 exactly. */
static void test_head_values(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    sp_tape_set_grad(t, 0);
    float hv[3] = {0.3f, -0.2f, 0.9f}, w1[3 * 2] = {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f};
    float b1v[2] = {0.1f, 0.1f}, w2[2 * 9] = {0}, b2v[9] = {2.0f, -1.0f, 0.5f, 0.0f, 1.0f,
                                                            -0.5f, 0.3f, 0.0f, 2.0f};
    float eps[4] = {0.5f, -1.0f, 2.0f, 0.25f};
    sp_tensor *h = sp_tensor_view(t, hv, NULL, 2, (int[]){1, 3});
    sp_tensor *W1 = sp_tensor_view(t, w1, NULL, 2, (int[]){3, 2});
    sp_tensor *b1 = sp_tensor_view(t, b1v, NULL, 1, (int[]){2});
    sp_tensor *W2 = sp_tensor_view(t, w2, NULL, 2, (int[]){2, 9});
    sp_tensor *b2 = sp_tensor_view(t, b2v, NULL, 1, (int[]){9});
    sp_tensor *z = sp_supair_head(t, h, W1, b1, W2, b2, eps, &BD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
#define S(v) (1.0 / (1.0 + exp(-(double)(v))))
    double sx = 0.3 + 0.6 * S(-1.0), r = 0.75 + 0.5 * S(0.5);
    double mu[4] = {sx, sx * r, 45 * S(0.0), 45 * S(1.0)};
    double lq = 0;
    for (int j = 0; j < 4; j++) {
        double sd = 0.3 * S(b2v[5 + j]);
        SP_ASSERT_CLOSE(z->val[1 + j], mu[j] + sd * eps[j], 1e-5);
        lq += -0.5 * eps[j] * eps[j] - log(sd) - 0.5 * log(2 * M_PI);
    }
    SP_ASSERT_CLOSE(z->val[0], S(2.0), 1e-6);
    SP_ASSERT_CLOSE(z->val[5], lq, 1e-5);
#undef S
    sp_tape_destroy(t);
}

/* The head at a batch big enough for its OpenMP path (200 rows: uneven
 * blocks at 3 threads): z and every gradient at 2 and 3 threads against 1
 * thread (whose path the finite-difference check above covers). */
static void head_run(int threads, float *out) {
    enum { B = 200, H = 256, A = 50 };
    omp_set_num_threads(threads);
    sp_tape *t = sp_tape_create(1 << 22);
    sp_tensor *h = sp_tensor_2d(t, B, H, 1), *W1 = sp_tensor_2d(t, H, A, 1);
    sp_tensor *b1 = sp_tensor_1d(t, A, 1), *W2 = sp_tensor_2d(t, A, 9, 1);
    sp_tensor *b2 = sp_tensor_1d(t, 9, 1);
    sp_gc_fill_uniform(h->val, h->size, -1, 1, 90);
    sp_gc_fill_uniform(W1->val, W1->size, -0.2f, 0.2f, 91);
    sp_gc_fill_uniform(b1->val, b1->size, -0.5f, 0.5f, 92);
    sp_gc_fill_uniform(W2->val, W2->size, -0.5f, 0.5f, 93);
    sp_gc_fill_uniform(b2->val, b2->size, -0.5f, 0.5f, 94);
    float eps[B * 4];
    sp_gc_fill_uniform(eps, B * 4, -2, 2, 95);
    sp_tensor *z = sp_supair_head(t, h, W1, b1, W2, b2, eps, &BD);
    CU_ASSERT_PTR_NOT_NULL_FATAL(z);
    sp_gc_fill_uniform(z->grad, z->size, -1, 1, 96);
    sp_tape_backward(t, sp_tensor_1d(t, 1, 1), 1.0f); /* runs the node on the seeded z grads */
    long o = 0;
    const sp_tensor *all[6] = {z, h, W1, b1, W2, b2};
    for (int q = 0; q < 6; q++)
        for (long i = 0; i < all[q]->size; i++) out[o++] = q ? all[q]->grad[i] : all[q]->val[i];
    sp_tape_destroy(t);
}

static void test_head_threads(void) {
    /* z, dh, dW1, db1, dW2, db2: each compared relative to its largest
     * entry (the gradients are sums with cancellation, and the row blocks'
     * products may round differently from the whole batch's) */
    const long len[6] = {200 * SP_SUPAIR_ZW, 200 * 256, 256 * 50, 50, 50 * 9, 9};
    const long n = len[0] + len[1] + len[2] + len[3] + len[4] + len[5];
    float *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
    const int saved = omp_get_max_threads();
    head_run(1, a);
    for (int th = 2; th <= 3; th++) {
        head_run(th, b);
        long o = 0;
        for (int q = 0; q < 6; o += len[q], q++) {
            double scale = 0.0, worst = 0.0;
            long nz = 0;
            for (long i = o; i < o + len[q]; i++) scale = fmax(scale, fabs((double)a[i]));
            for (long i = o; i < o + len[q]; i++) {
                double d = fabs((double)a[i] - b[i]) / scale;
                if (!(d <= worst)) worst = d; /* NaN too */
                nz += a[i] != 0.0f;
            }
            SP_ASSERT_CLOSE(worst, 0.0, 1e-5);
            CU_ASSERT(nz > len[q] * 9 / 10); /* the gradients really flowed */
        }
    }
    omp_set_num_threads(saved);
    free(a), free(b);
}

static sp_tensor *build_theta(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    return sp_supair_theta(t, in, 3, 1.0f);
}

static void test_theta_grad(void) {
    sp_gc_input spec[3];
    for (int i = 0; i < 3; i++) spec[i] = (sp_gc_input){2, {4, SP_SUPAIR_ZW}, -1, 1, 1};
    SP_ASSERT_GRADCHECK(build_theta, NULL, 3, spec, 31, SP_GC_ATOL, SP_GC_RTOL);
}

static sp_tensor *build_occ(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_tensor *pad;
    sp_supair_occlusion(t, in[0], 3, &pad);
    return pad;
}

// build_occ on raw = u + a fixed offset per element: 0 and 0.52 (inside
// [0, 1]), 1.0 (above), -0.5 (below), for u in [0.02, 0.46]
static sp_tensor *build_occ_mixed(sp_tape *t, sp_tensor **in, void *ctx) {
    sp_tensor *off = sp_tensor_new(t, in[0]->ndim, in[0]->shape, 0);
    if (!off) return NULL;
    const float pattern[4] = {0.0f, 0.52f, 1.0f, -0.5f};
    for (long e = 0; e < off->size; e++) off->val[e] = pattern[(e * 7 + e / 11) % 4];
    sp_tensor *raw = sp_add(t, in[0], off);
    return build_occ(t, &raw, ctx);
}

static void test_occlusion_grad(void) {
    // raw scores straddle the clip range: elements on the clip's kinks are skipped
    sp_gc_input spec[1] = {{3, {2 * 3, 4, 5}, -0.3f, 1.3f, 1}};
    SP_ASSERT_GRADCHECK(build_occ, NULL, 1, spec, 41, SP_GC_ATOL, SP_GC_RTOL);
    // rows of 11: one 8-wide vector of the AVX2 path plus a scalar tail, with
    // raw values inside the clip range, above and below it, mixed in every
    // row and kept 0.02 from the kinks (differences cannot resolve a kink
    // closer than their smallest step): raw = u + offset pattern
    sp_gc_input wide[1] = {{3, {2 * 3, 3, 11}, 0.02f, 0.46f, 1}};
    SP_ASSERT_GRADCHECK(build_occ_mixed, NULL, 1, wide, 43, SP_GC_ATOL, SP_GC_RTOL);
}

static void test_occlusion_values(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    sp_tape_set_grad(t, 0);
    // one scene, K = 3, 2x2 maps (the third map shapes no output: bg_3 is
    // the background SPN's business)
    float raw[3 * 4] = {0.5f, 1.5f, -1.0f, 0.25f, 0.5f, 0.5f, 0.0f, 1.0f, 0.3f, 0.3f, 0.3f, 0.3f};
    sp_tensor *r = sp_tensor_view(t, raw, NULL, 3, (int[]){3, 2, 2});
    sp_tensor *pad;
    CU_ASSERT_EQUAL_FATAL(sp_supair_occlusion(t, r, 3, &pad), SP_OK);
    // bg_1 = 1 - clip(raw_0) = {0.5, 0, 1, 0.75}; bg_2 = bg_1 (1 - clip(raw_1))
    const double bg1[4] = {0.5, 0.0, 1.0, 0.75}, bg2[4] = {0.25, 0.0, 1.0, 0.0};
    for (int q = 0; q < 4; q++) {
        int y = q / 2, x = q % 2;
        SP_ASSERT_CLOSE(pad->val[(y + 1) * 4 + x + 1], 1.0, 0);     // bg_0
        SP_ASSERT_CLOSE(pad->val[16 + (y + 1) * 4 + x + 1], bg1[q], 1e-7);
        SP_ASSERT_CLOSE(pad->val[32 + (y + 1) * 4 + x + 1], bg2[q], 1e-7);
    }
    SP_ASSERT_CLOSE(pad->val[0], 0.0, 0);  // the border is zero
    SP_ASSERT_CLOSE(pad->val[16 + 15], 0.0, 0);
    sp_tape_destroy(t);
}

#define EB 3
#define EK 3
#define EP 5

static sp_tensor *build_elbo(sp_tape *t, sp_tensor **in, void *ctx) {
    (void)ctx;
    sp_supair_prior pr = {0.7f, 2.0f};
    return sp_supair_elbo(t, in, EK, in[3], in[4], in[5], &pr, NULL, NULL);
}

static void test_elbo_grad(void) {
    sp_gc_input spec[6];
    // z rows: rho, sx, sy, x, y, log q all in (0.05, 0.95) keeps q(k) away from 0
    for (int i = 0; i < EK; i++) spec[i] = (sp_gc_input){2, {EB, SP_SUPAIR_ZW}, 0.05f, 0.95f, 1};
    spec[3] = (sp_gc_input){1, {EB * EK}, -2, 2, 1};
    spec[4] = (sp_gc_input){2, {EB * EK, EP}, 0, 1, 1};
    spec[5] = (sp_gc_input){1, {EB * (EK + 1)}, -2, 2, 1};
    SP_ASSERT_GRADCHECK(build_elbo, NULL, 6, spec, 51, SP_GC_ATOL, SP_GC_RTOL);
}

/* The ELBO of one scene written out directly from MODELS.md's formula. */
static void test_elbo_values(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    sp_tape_set_grad(t, 0);
    const int K = 3, P = 4;
    float zv[3][SP_SUPAIR_ZW] = {{0.9f, 0.5f, 0.6f, 1, 2, -1.5f},
                                 {0.6f, 0.4f, 0.3f, 3, 4, 0.5f},
                                 {0.2f, 0.7f, 0.8f, 5, 6, -0.25f}};
    float lpo[3] = {-10.0f, 5.0f, 2.0f}, lpb[4] = {100.0f, 90.0f, 95.0f, 80.0f};
    float vis[3 * 4] = {1, 1, 1, 1, 0.5f, 1, 0, 1, 0, 0, 0.25f, 0.25f};
    sp_tensor *z[3];
    for (int k = 0; k < K; k++) z[k] = sp_tensor_view(t, zv[k], NULL, 2, (int[]){1, SP_SUPAIR_ZW});
    sp_tensor *to = sp_tensor_view(t, lpo, NULL, 1, (int[]){3});
    sp_tensor *tb = sp_tensor_view(t, lpb, NULL, 1, (int[]){4});
    sp_tensor *tv = sp_tensor_view(t, vis, NULL, 2, (int[]){3, P});
    sp_supair_prior pr = {0.7f, 120.0f};
    double e, cnt;
    sp_tensor *loss = sp_supair_elbo(t, z, K, to, tv, tb, &pr, &e, &cnt);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    double rho[3] = {zv[0][0], zv[1][0], zv[2][0]}, q[4];
    q[0] = 1 - rho[0];
    q[1] = rho[0] * (1 - rho[1]);
    q[2] = rho[0] * rho[1] * (1 - rho[2]);
    q[3] = rho[0] * rho[1] * rho[2];
    double ov[3] = {0.0, 1 - 2.5 / 4, 1 - 0.5 / 4}, want = 0, wc = 0;
    double lq = (double)zv[0][5] + zv[1][5] + zv[2][5];
    for (int k = 0; k <= K; k++) {
        double pxz = lpb[k] + log(0.7) - 0.7 * k;
        for (int i = 0; i < k; i++)
            pxz += (double)zv[i][1] * zv[i][2] * lpo[i] + log(120.0) - 120.0 * ov[i];
        want += q[k] * pxz - q[k] * (log(q[k] + 1e-37) + lq);
        wc += k * q[k];
    }
    SP_ASSERT_CLOSE(e, want, 1e-9 * fabs(want) + 1e-9);
    SP_ASSERT_CLOSE(loss->val[0], -want, 1e-5 * fabs(want));
    SP_ASSERT_CLOSE(cnt, wc, 1e-12);
    sp_tape_destroy(t);
}

/* The ELBO and 1 - vis over 96 scenes (their OpenMP paths): the same bits
 * at 1 and 2 threads, values and every gradient. */
static void elbo_run(int threads, float *out, double *e) {
    enum { B = 96, K = 3, P = 256 }; /* 73,728 visibilities: past EW_OMP_MIN */
    omp_set_num_threads(threads);
    sp_tape *t = sp_tape_create(1 << 20);
    sp_tensor *z[K], *lpo = sp_tensor_1d(t, B * K, 1), *lpb = sp_tensor_1d(t, B * (K + 1), 1);
    sp_tensor *vis = sp_tensor_2d(t, B * K, P, 1);
    for (int k = 0; k < K; k++) {
        z[k] = sp_tensor_2d(t, B, SP_SUPAIR_ZW, 1);
        sp_gc_fill_uniform(z[k]->val, z[k]->size, 0.05f, 0.95f, 70 + k);
    }
    sp_gc_fill_uniform(lpo->val, lpo->size, -30, 30, 80);
    sp_gc_fill_uniform(lpb->val, lpb->size, -300, 300, 81);
    sp_gc_fill_uniform(vis->val, vis->size, 0, 1, 82);
    sp_tensor *marg = sp_supair_one_minus(t, vis);
    sp_supair_prior pr = {0.7f, 120.0f};
    double cnt[B];
    sp_tensor *loss = sp_supair_elbo(t, z, K, lpo, marg, lpb, &pr, e, cnt);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    sp_tape_backward(t, loss, 1.0f);
    long o = 0;
    out[o++] = loss->val[0];
    for (int k = 0; k < K; k++)
        for (long i = 0; i < z[k]->size; i++) out[o++] = z[k]->grad[i];
    for (long i = 0; i < lpo->size; i++) out[o++] = lpo->grad[i];
    for (long i = 0; i < lpb->size; i++) out[o++] = lpb->grad[i];
    for (long i = 0; i < vis->size; i++) out[o++] = vis->grad[i];
    for (int b = 0; b < B; b++) out[o++] = (float)cnt[b];
    sp_tape_destroy(t);
}

static void test_elbo_threads(void) {
    const long n = 1 + 3 * 96 * SP_SUPAIR_ZW + 96 * 3 + 96 * 4 + 96 * 3 * 256 + 96;
    float *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
    double ea[96], eb[96];
    const int saved = omp_get_max_threads();
    elbo_run(1, a, ea);
    elbo_run(2, b, eb);
    omp_set_num_threads(saved);
    CU_ASSERT_EQUAL(memcmp(a, b, (size_t)n * sizeof *a), 0);
    CU_ASSERT_EQUAL(memcmp(ea, eb, sizeof ea), 0);
    long nz = 0;
    for (long i = 0; i < n; i++) nz += a[i] != 0.0f;
    CU_ASSERT(nz > n / 2); /* the gradients really flowed */
    free(a), free(b);
}

/* ------------------------------------------------------ IoU helpers */

static void test_iou(void) {
    float a[4] = {10, 20, 15, 12}, b[4] = {10, 20, 15, 12}, c[4] = {100, 100, 5, 5};
    SP_ASSERT_CLOSE(sp_supair_box_iou(a, b), 1.0, 1e-12);
    SP_ASSERT_CLOSE(sp_supair_box_iou(a, c), 0.0, 1e-12);
    // inclusive pixels: [0,10]x[0,10] vs [5,15]x[0,10] -> 6*11 / (2*121 - 66)
    float d[4] = {0, 0, 10, 10}, e[4] = {5, 0, 10, 10};
    SP_ASSERT_CLOSE(sp_supair_box_iou(d, e), 66.0 / (242.0 - 66.0), 1e-12);
    // greedy: the first prediction takes its best truth, the second gets the rest
    float pred[8] = {5, 0, 10, 10, 0, 0, 10, 10}, truth[8] = {0, 0, 10, 10, 5, 0, 10, 10};
    SP_ASSERT_CLOSE(sp_supair_scene_iou(2, 2, pred, truth, 0.0f), 2.0, 1e-12);
    SP_ASSERT_CLOSE(sp_supair_scene_iou(1, 2, pred, truth, 0.0f), 1.0, 1e-12);
    SP_ASSERT_CLOSE(sp_supair_scene_iou(0, 2, pred, truth, 0.0f), 0.0, 0);
    // padding grows the predicted box by pad on every side
    float p5[4] = {5, 5, 10, 10}, t5[4] = {0, 0, 20, 20};
    SP_ASSERT_CLOSE(sp_supair_scene_iou(1, 1, p5, t5, 5.0f), 1.0, 1e-12);
}

/* ------------------------------------------------------ whole model */

/* A small SuPAIR: same code paths, tiny LSTM and SPNs. */
typedef struct tmodel {
    sp_config *cfg;
    sp_params p;
    void *m;
    sp_tape *t;
} tmodel;

static const char *SMALL =
    "seed = 7\n"
    "supair.lstm_units = 12\n"
    "supair.head_units = 6\n"
    "supair.glimpse = 10\n"
    "supair.obj_reps = 2\nsupair.obj_leaves = 3\nsupair.obj_sums = 3\n"
    "supair.bg_reps = 2\nsupair.bg_leaves = 3\n";

static int tmodel_init(tmodel *tm, const char *extra) {
    sp_error err = {0};
    const sp_model_vtable *v = sp_model_find("supair");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    tm->cfg = sp_config_new();
    int rc = sp_config_declare(tm->cfg, sp_train_keys, sp_train_n_keys, &err);
    if (!rc) rc = sp_config_declare(tm->cfg, v->keys, v->n_keys, &err);
    if (!rc) rc = sp_config_load_text(tm->cfg, SMALL, "test", &err);
    if (!rc && extra) rc = sp_config_load_text(tm->cfg, extra, "test extra", &err);
    sp_params_init(&tm->p);
    if (!rc) rc = v->create(&tm->m, tm->cfg, &tm->p, &err);
    if (!rc) rc = sp_params_finalize(&tm->p, &err);
    if (!rc) rc = v->init_params(tm->m, &tm->p, 7, &err);
    if (rc) printf("\n    setup failed: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    tm->t = sp_tape_create(1 << 22);
    return rc;
}

static void tmodel_free(tmodel *tm) {
    sp_model_find("supair")->destroy(tm->m);
    sp_params_free(&tm->p);
    sp_config_free(tm->cfg);
    sp_tape_destroy(tm->t);
}

/* Random scenes: a dim background with 0..2 bright squares. */
static void make_scenes(float *x, int32_t *counts, float *boxes, int n, uint64_t seed) {
    sp_gc_fill_uniform(x, (long)n * 2500, 0.0f, 0.1f, seed);
    for (int i = 0; i < n; i++) {
        int c = (int)((seed + 3 * i) % 3);
        if (counts) counts[i] = c;
        for (int o = 0; o < c; o++) {
            int x0 = 3 + 25 * o + (int)((seed + i) % 5), y0 = 5 + 7 * (i % 4), w = 14;
            for (int y = y0; y < y0 + w; y++)
                for (int xx = x0; xx < x0 + w; xx++) x[(size_t)i * 2500 + y * 50 + xx] = 0.9f;
            if (boxes) {
                float *b = boxes + ((size_t)i * 2 + o) * 4;
                b[0] = (float)x0, b[1] = (float)y0, b[2] = (float)w, b[3] = (float)w;
            }
        }
    }
}

/* Smooth scenes (Gaussian blobs on a gentle gradient): the bilinear sampler is
 * piecewise linear with kinks at integer coordinates, whose slope jumps scale
 * with the image's second differences; smooth images keep finite differences
 * across those kinks close to the derivative. */
static void make_smooth_scenes(float *x, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        double cx = 12 + (seed * 7 + i * 13) % 25, cy = 15 + (seed * 3 + i * 5) % 20;
        for (int y = 0; y < 50; y++)
            for (int xx = 0; xx < 50; xx++) {
                double d2 = (xx - cx) * (xx - cx) + (y - cy) * (y - cy);
                x[(size_t)i * 2500 + y * 50 + xx] =
                    (float)(0.05 + 0.001 * (xx + y) + 0.8 * exp(-d2 / (2 * 5.0 * 5.0)));
            }
    }
}

static double loss_of(tmodel *tm, const float *x, const int64_t *idx, int n, int64_t step,
                      int backward, double *terms) {
    sp_error err = {0};
    sp_batch b = {0};
    b.n = n, b.global_n = n, b.index = idx, b.x = x, b.step = step, b.seed = 99;
    sp_tape_reset(tm->t);
    sp_tape_set_grad(tm->t, backward);
    double tl[2];
    sp_tensor *loss = sp_model_find("supair")->loss(tm->m, tm->t, &tm->p, &b, terms ? terms : tl,
                                                   &err);
    if (!loss) printf("\n    loss failed: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    if (backward) sp_tape_backward(tm->t, loss, 1.0f);
    return loss->val[0];
}

static int64_t *iota(int n, int64_t start) {
    int64_t *r = malloc((size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) r[i] = start + i;
    return r;
}

static void test_loss_finite(void) {
    tmodel tm;
    tmodel_init(&tm, NULL);
    const int n = 6;
    float *x = malloc((size_t)n * 2500 * sizeof(float));
    make_scenes(x, NULL, NULL, n, 3);
    int64_t *idx = iota(n, 0);
    double terms[2];
    sp_params_zero_grad(&tm.p);
    double L = loss_of(&tm, x, idx, n, 0, 1, terms);
    printf("\n    loss %.6g, elbo sum %.6g, expected count sum %.4g\n", L, terms[0], terms[1]);
    CU_ASSERT(isfinite(L));
    SP_ASSERT_CLOSE(L, -terms[0], 1e-3 * fabs(L));
    CU_ASSERT(terms[1] >= 0 && terms[1] <= 3.0 * n);
    CU_ASSERT(sp_grad_all_finite(&tm.p));
    double gn = sp_grad_global_norm(&tm.p);
    CU_ASSERT(gn > 0 && isfinite(gn));
    // with gradients off the same loss comes out, and no nodes are recorded
    double L2 = loss_of(&tm, x, idx, n, 0, 0, NULL);
    CU_ASSERT_EQUAL(sp_tape_nodes(tm.t), 0);
    SP_ASSERT_CLOSE(L2, L, 0);
    free(x);
    free(idx);
    tmodel_free(&tm);
}

/* Directional derivatives of the whole loss, per parameter tensor, along the
 * tensor's own gradient: (L(p + h u) - L(p - h u)) / 2h must equal |g_T|,
 * u = g_T / |g_T|. Plus single elements of the largest gradients. The loss
 * is a sum over thousands of float terms, so the tolerance is a few percent;
 * a wrong backward is off by far more. */
static void test_whole_grad(void) {
    tmodel tm;
    tmodel_init(&tm, NULL);
    const int n = 2;
    float *x = malloc((size_t)n * 2500 * sizeof(float));
    make_smooth_scenes(x, n, 4);
    int64_t *idx = iota(n, 10);
    sp_params_zero_grad(&tm.p);
    double L0 = loss_of(&tm, x, idx, n, 3, 1, NULL);
    CU_ASSERT_FATAL(isfinite(L0));
    float *g = malloc((size_t)tm.p.total * sizeof(float));
    memcpy(g, tm.p.grad, (size_t)tm.p.total * sizeof(float));
    int bad = 0;
    for (int e = 0; e < tm.p.n_entries; e++) {
        const sp_param_entry *en = &tm.p.entries[e];
        float *v = tm.p.val + en->offset;
        const float *ge = g + en->offset;
        double gn = 0;
        for (long i = 0; i < en->size; i++) gn += (double)ge[i] * ge[i];
        gn = sqrt(gn);
        if (gn < 1e-3) {
            printf("\n    %-16s |g| %.3g (too small to check)", en->name, gn);
            continue;
        }
        // two steps, both small enough for the curvature of the loss along u
        // (checked: the estimates converge to |g_T| as h shrinks)
        double fds[2], errs[2];
        for (int hs = 0; hs < 2; hs++) {
            double h = 0.0012 * (1.0 + 10.0 / gn) / (hs ? 3.0 : 1.0);
            float *save = malloc((size_t)en->size * sizeof(float));
            memcpy(save, v, (size_t)en->size * sizeof(float));
            for (long i = 0; i < en->size; i++) v[i] = save[i] + (float)(h * ge[i] / gn);
            double Lp = loss_of(&tm, x, idx, n, 3, 0, NULL);
            for (long i = 0; i < en->size; i++) v[i] = save[i] - (float)(h * ge[i] / gn);
            double Lm = loss_of(&tm, x, idx, n, 3, 0, NULL);
            memcpy(v, save, (size_t)en->size * sizeof(float));
            free(save);
            fds[hs] = (Lp - Lm) / (2 * h);
            errs[hs] = fabs(fds[hs] - gn) / gn;
        }
        double best_err = fmin(errs[0], errs[1]), worst_err = fmax(errs[0], errs[1]);
        printf("\n    %-16s |g| %10.4g  fd %10.4g %10.4g  rel err %.2e", en->name, gn, fds[0],
               fds[1], best_err);
        if (!(best_err < 0.01 && worst_err < 0.03)) bad++;
        // and the single element with the largest gradient
        long im = 0;
        for (long i = 1; i < en->size; i++)
            if (fabsf(ge[i]) > fabsf(ge[im])) im = i;
        double h = 0.0012 * (1.0 + 1.0 / fabs(ge[im]));
        float save = v[im];
        v[im] = (float)(save + h);
        double hp = (double)v[im] - save;  // the step float really took
        double Lp = loss_of(&tm, x, idx, n, 3, 0, NULL);
        v[im] = (float)(save - h);
        double hm = save - (double)v[im];
        double Lm = loss_of(&tm, x, idx, n, 3, 0, NULL);
        v[im] = save;
        double fd1 = (Lp - Lm) / (hp + hm), e1 = fabs(fd1 - ge[im]) / fabs(ge[im]);
        printf("\n    %-16s [%ld] g %10.4g  fd %10.4g  rel err %.2e", en->name, im, ge[im], fd1, e1);
        if (!(e1 < 0.03)) bad++;
    }
    printf("\n");
    CU_ASSERT_EQUAL(bad, 0);
    free(g);
    free(x);
    free(idx);
    tmodel_free(&tm);
}

static void test_sum_over_examples(void) {
    tmodel tm;
    tmodel_init(&tm, NULL);
    const int n = 8, na = 3;
    float *x = malloc((size_t)n * 2500 * sizeof(float));
    make_scenes(x, NULL, NULL, n, 5);
    int64_t *idx = iota(n, 100);
    float *g_all = malloc((size_t)tm.p.total * sizeof(float));
    sp_params_zero_grad(&tm.p);
    double L = loss_of(&tm, x, idx, n, 2, 1, NULL);
    memcpy(g_all, tm.p.grad, (size_t)tm.p.total * sizeof(float));
    // the two halves, as two ranks would see them, accumulating into one grad
    sp_params_zero_grad(&tm.p);
    double La = loss_of(&tm, x, idx, na, 2, 1, NULL);
    double Lb = loss_of(&tm, x + (size_t)na * 2500, idx + na, n - na, 2, 1, NULL);
    printf("\n    L(A u B) = %.9g, L(A) + L(B) = %.9g\n", L, La + Lb);
    SP_ASSERT_CLOSE(La + Lb, L, 2e-6 * fabs(L));
    double worst = 0, gmax = 0;
    for (long i = 0; i < tm.p.total; i++) {
        double d = fabs((double)tm.p.grad[i] - g_all[i]);
        if (d > worst) worst = d;
        if (fabs(g_all[i]) > gmax) gmax = fabs(g_all[i]);
    }
    printf("    max |grad difference| %.3g (max |grad| %.3g)\n", worst, gmax);
    CU_ASSERT(worst <= 1e-4 * gmax);
    free(g_all);
    free(x);
    free(idx);
    tmodel_free(&tm);
}

static void test_determinism(void) {
    const int n = 5;
    float *x = malloc((size_t)n * 2500 * sizeof(float));
    make_scenes(x, NULL, NULL, n, 6);
    int64_t *idx = iota(n, 7);
    float L[2];
    uint32_t gsum[2] = {0, 0};
    for (int r = 0; r < 2; r++) {
        tmodel tm;
        tmodel_init(&tm, NULL);
        sp_params_zero_grad(&tm.p);
        L[r] = (float)loss_of(&tm, x, idx, n, 1, 1, NULL);
        for (long i = 0; i < tm.p.total; i++) {
            uint32_t u;
            memcpy(&u, &tm.p.grad[i], 4);
            gsum[r] = gsum[r] * 31u + u;
        }
        tmodel_free(&tm);
    }
    uint32_t a, b;
    memcpy(&a, &L[0], 4);
    memcpy(&b, &L[1], 4);
    CU_ASSERT_EQUAL(a, b);
    CU_ASSERT_EQUAL(gsum[0], gsum[1]);
    // a different step draws different noise, so a different loss
    tmodel tm;
    tmodel_init(&tm, NULL);
    float L3 = (float)loss_of(&tm, x, idx, n, 2, 0, NULL);
    CU_ASSERT(L3 != L[0]);
    tmodel_free(&tm);
    free(x);
    free(idx);
}

/* Eval on hand-made cases: W2 = 0 and b2 chosen so every step is present
 * with a known mean box; iou_pad = 0. */
static void test_eval_metrics(void) {
    tmodel tm;
    tmodel_init(&tm, "supair.iou_pad = 0\n");
    const sp_model_vtable *v = sp_model_find("supair");
    int iw2 = sp_params_find(&tm.p, "head/W2"), ib2 = sp_params_find(&tm.p, "head/b2");
    CU_ASSERT_FATAL(iw2 >= 0 && ib2 >= 0);
    memset(sp_params_val(&tm.p, iw2), 0, (size_t)tm.p.entries[iw2].size * sizeof(float));
    float *b2 = sp_params_val(&tm.p, ib2);
    // rho = sigmoid(20) ~ 1; sx = 0.6, r = 1, x = y = 22.5; std tiny
    const float b2v[9] = {20, 0, 0, 0, 0, -8, -8, -8, -8};
    memcpy(b2, b2v, sizeof b2v);
    const float w = 0.6f * 10;  // glimpse 10 in the small model
    const int n = 2;
    float *x = calloc((size_t)n * 2500, sizeof(float));
    int32_t counts[2] = {3, 1};
    float boxes[2 * 3 * 4] = {22.5f, 22.5f, w, w, 22.5f, 22.5f, w, w, 22.5f, 22.5f, w, w,
                              22.5f, 22.5f, 2 * w, w, 0, 0, 0, 0, 0, 0, 0, 0};
    int64_t idx[2] = {0, 1};
    sp_batch b = {0};
    b.n = n, b.global_n = n, b.index = idx, b.x = x, b.counts = counts, b.boxes = boxes;
    b.max_objects = 3, b.seed = 1;
    double num[3] = {0}, den[3] = {0};
    sp_error err = {0};
    int rc = v->eval(tm.m, tm.t, &tm.p, &b, num, den, &err);
    if (rc) printf("\n    eval failed: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    // predicted count 3 for both: scene 0 right, scene 1 wrong
    SP_ASSERT_CLOSE(num[0], 1.0, 0);
    SP_ASSERT_CLOSE(den[0], 2.0, 0);
    // scene 0: three identical boxes -> 3; scene 1: one box twice as wide
    double w1 = w + 1.0, inter = w1 * w1, uni = (2 * w + 1.0) * w1;
    SP_ASSERT_CLOSE(num[1], 3.0 + inter / uni, 1e-4);
    SP_ASSERT_CLOSE(den[1], 4.0, 0);
    CU_ASSERT(isfinite(num[2]));
    SP_ASSERT_CLOSE(den[2], 2.0, 0);
    // the eval leaves the tape's gradient mode alone
    CU_ASSERT(sp_tape_grad_enabled(tm.t));
    // infer gives the same boxes
    float rho[6], bx[24];
    CU_ASSERT_EQUAL(sp_supair_infer(tm.m, tm.t, &tm.p, x, n, rho, bx, &err), SP_OK);
    SP_ASSERT_CLOSE(rho[0], 1.0, 1e-6);
    SP_ASSERT_CLOSE(bx[0], 22.5, 1e-4);
    SP_ASSERT_CLOSE(bx[2], w, 1e-4);
    // and so does the vtable's dump hook, in its (n, 3, 1) and (n, 3, 4) fields
    CU_ASSERT_PTR_NOT_NULL_FATAL(v->infer);
    CU_ASSERT_EQUAL(v->n_dump, 2);
    CU_ASSERT_EQUAL(v->dump_shape[1][0], 3);
    CU_ASSERT_EQUAL(v->dump_shape[1][1], 4);
    float drho[6], dbox[24];
    float *outs[2] = {drho, dbox};
    sp_tape_reset(tm.t);
    CU_ASSERT_EQUAL(v->infer(tm.m, tm.t, &tm.p, &b, outs, &err), SP_OK);
    for (int i = 0; i < 6; i++) SP_ASSERT_CLOSE(drho[i], rho[i], 0);
    for (int i = 0; i < 24; i++) SP_ASSERT_CLOSE(dbox[i], bx[i], 0);
    CU_ASSERT_EQUAL(v->structure_seed(tm.m), sp_supair_structure_seed(tm.m));
    free(x);
    tmodel_free(&tm);
}

/* A few hundred Adam steps on 16 scenes must lower the loss clearly. */
static void test_training_reduces_loss(void) {
    tmodel tm;
    tmodel_init(&tm, NULL);
    const int n = 16, steps = 150;
    float *x = malloc((size_t)n * 2500 * sizeof(float));
    make_scenes(x, NULL, NULL, n, 8);
    int64_t *idx = iota(n, 0);
    sp_adam adam;
    sp_adam_init(&adam, SP_ADAM_PYTORCH, 0.01f);
    double first = 0, last = 0;
    for (int s = 0; s < steps; s++) {
        sp_params_zero_grad(&tm.p);
        double L = loss_of(&tm, x, idx, n, s, 1, NULL) / n;
        sp_grad_scale(&tm.p, 1.0f / n);
        CU_ASSERT_FATAL(isfinite(L) && sp_grad_all_finite(&tm.p));
        sp_adam_step(&tm.p, &adam, -1.0f);
        if (s < 5) first += L / 5;
        if (s >= steps - 5) last += L / 5;
    }
    printf("\n    mean loss per scene: first 5 steps %.2f, last 5 steps %.2f\n", first, last);
    CU_ASSERT(last < first - 0.05 * fabs(first));
    free(x);
    free(idx);
    tmodel_free(&tm);
}

static void test_config_errors(void) {
    const sp_model_vtable *v = sp_model_find("supair");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_PTR_NULL(sp_model_find("nope"));
    CU_ASSERT(strstr(sp_model_names(), "supair") != NULL);
    sp_error err = {0};
    sp_config *cfg = sp_config_new();
    CU_ASSERT_EQUAL(sp_config_declare(cfg, sp_train_keys, sp_train_n_keys, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_declare(cfg, v->keys, v->n_keys, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_load_text(cfg, v->shared_defaults, "defaults", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_set(cfg, "supair.scale_min=0.95", &err), SP_OK);
    sp_params p;
    sp_params_init(&p);
    void *m = NULL;
    CU_ASSERT_EQUAL(v->create(&m, cfg, &p, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "supair.scale_min") != NULL);
    CU_ASSERT_PTR_NULL(m);
    sp_params_free(&p);
    // structure seed: derived from seed when -1, else the key
    CU_ASSERT_EQUAL(sp_config_set(cfg, "supair.scale_min=0.3", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_set(cfg, "supair.structure_seed=1234", &err), SP_OK);
    sp_params_init(&p);
    CU_ASSERT_EQUAL_FATAL(v->create(&m, cfg, &p, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_supair_structure_seed(m), 1234u);
    // the paper model's parameter count (MODELS.md: SPNs 286,560 + 90,108)
    long n = 0;
    for (int i = 0; i < p.n_entries; i++) n += p.entries[i].size;
    long lstm = 2500L * 1024 + 256L * 1024 + 1024, head = 256L * 50 + 50 + 50 * 9 + 9;
    printf("\n    paper model: %ld parameters\n", n);
    CU_ASSERT_EQUAL(n, lstm + head + 286560 + 90108);
    v->destroy(m);
    sp_params_free(&p);
    sp_config_free(cfg);
}

static const sp_test_case op_cases[] = {
    {"linear gradient", test_linear_grad},
    {"head gradient", test_head_grad},
    {"head values", test_head_values},
    {"theta gradient", test_theta_grad},
    {"occlusion gradient", test_occlusion_grad},
    {"occlusion values", test_occlusion_values},
    {"elbo gradient", test_elbo_grad},
    {"elbo values", test_elbo_values},
    {"elbo and 1 - vis: 1 and 2 threads bit for bit", test_elbo_threads},
    {"head: 2 and 3 threads agree with 1", test_head_threads},
    {"iou", test_iou},
    {NULL, NULL},
};

static const sp_test_case model_cases[] = {
    {"config and parameter count", test_config_errors},
    {"loss finite", test_loss_finite},
    {"whole-loss gradient", test_whole_grad},
    {"sum over examples", test_sum_over_examples},
    {"determinism", test_determinism},
    {"eval metrics", test_eval_metrics},
    {"training reduces loss", test_training_reduces_loss},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {
        {"supair ops", op_cases},
        {"supair model", model_cases},
        {NULL, NULL},
    };
    return sp_test_main(suites);
}
