/* Tests of the SRNN model (src/models/srnn*.c): finite-difference gradients
 * of each fused op and of the whole loss in all four variants (smooth /
 * filter x Resq on / off), the fused GRU against rnn.h's cell, the parameter
 * count of the reference, schedules, the sum-over-streams property ranks rely
 * on, the carried stream state, evaluation bookkeeping, bit determinism, and
 * a short Adam run on sine-wave streams that must raise the ELBO. Models are
 * shrunk (d = a = 16, z = 4, mlp = 8) so the whole file runs in seconds; the
 * frames keep their 200 samples. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/config.h"
#include "supair/ops.h"
#include "supair/optim.h"
#include "supair/rng.h"
#include "supair/rnn.h"
#include "supair/srnn.h"
#include "supair/train.h"
#include "testutil.h"

#define F 200

/* ------------------------------------------------------ op gradchecks */

typedef struct gru_case {
    int use_h0, reverse;
    const int *len;
} gru_case;

static sp_tensor *build_gru(sp_tape *t, sp_tensor **in, void *ctx) {
    gru_case *c = ctx;
    return sp_srnn_gru_seq_len(t, in[0], c->use_h0 ? in[3] : NULL, in[1], in[2], c->reverse,
                               c->len);
}

static void test_gru_seq_grad(void) {
    // T = 4, B = 3, H = 5
    sp_gc_input spec[4] = {{3, {4, 3, 15}, -1, 1, 1},
                           {2, {5, 15}, -0.7f, 0.7f, 1},
                           {1, {15}, -0.5f, 0.5f, 1},
                           {2, {3, 5}, -1, 1, 1}};
    const int len[3] = {4, 2, 1};  // padded sequences
    for (int masked = 0; masked < 2; masked++)
        for (int h0 = 0; h0 < 2; h0++)
            for (int rev = 0; rev < 2; rev++) {
                gru_case c = {h0, rev, masked ? len : NULL};
                SP_ASSERT_GRADCHECK(build_gru, &c, 3 + h0, spec, 31 + 4 * masked + 2 * h0 + rev,
                                    SP_GC_ATOL, SP_GC_RTOL);
            }
}

/* A padded row of a backward GRU equals the unpadded sequence run alone. */
static void test_gru_seq_len_values(void) {
    enum { T = 6, B = 2, H = 4, G = 3 * H, L1 = 3 };
    float xp[T * B * G], wh[H * G], bb[G], x1[L1 * G];
    sp_gc_fill_uniform(xp, T * B * G, -1, 1, 11);
    sp_gc_fill_uniform(wh, H * G, -0.5f, 0.5f, 12);
    sp_gc_fill_uniform(bb, G, -0.3f, 0.3f, 13);
    for (int t = 0; t < L1; t++) memcpy(x1 + t * G, xp + ((size_t)t * B + 1) * G, G * sizeof(float));
    sp_tape *t = sp_tape_create(1 << 20);
    sp_tape_set_grad(t, 0);
    const int len[B] = {T, L1};
    sp_tensor *W = sp_tensor_view(t, wh, NULL, 2, (int[]){H, G});
    sp_tensor *bt = sp_tensor_view(t, bb, NULL, 1, (int[]){G});
    sp_tensor *o = sp_srnn_gru_seq_len(t, sp_tensor_view(t, xp, NULL, 3, (int[]){T, B, G}), NULL, W,
                                       bt, 1, len);
    sp_tensor *o1 = sp_srnn_gru_seq(t, sp_tensor_view(t, x1, NULL, 3, (int[]){L1, 1, G}), NULL, W,
                                    bt, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o1);
    double worst = 0;
    for (int tt = 0; tt < L1; tt++)
        for (int n = 0; n < H; n++)
            worst = fmax(worst, fabs(o->val[((size_t)tt * B + 1) * H + n] - o1->val[tt * H + n]));
    SP_ASSERT_CLOSE(worst, 0.0, 1e-6);
    for (int tt = L1; tt < T; tt++)
        for (int n = 0; n < H; n++) CU_ASSERT_EQUAL(o->val[((size_t)tt * B + 1) * H + n], 0.0f);
    sp_tape_destroy(t);
}

/* The fused sequence equals a loop of rnn.h's cell, both directions. */
static void test_gru_seq_matches_cell(void) {
    enum { T = 5, B = 3, H = 7, G = 3 * H };
    float xp[T * B * G], wh[H * G], bb[G], h0[B * H];
    sp_gc_fill_uniform(xp, T * B * G, -1, 1, 1);
    sp_gc_fill_uniform(wh, H * G, -0.5f, 0.5f, 2);
    sp_gc_fill_uniform(bb, G, -0.3f, 0.3f, 3);
    sp_gc_fill_uniform(h0, B * H, -1, 1, 4);
    sp_tape *t = sp_tape_create(1 << 20);
    sp_tape_set_grad(t, 0);
    for (int rev = 0; rev < 2; rev++) {
        sp_tape_reset(t);
        sp_tensor *X = sp_tensor_view(t, xp, NULL, 3, (int[]){T, B, G});
        sp_tensor *W = sp_tensor_view(t, wh, NULL, 2, (int[]){H, G});
        sp_tensor *bt = sp_tensor_view(t, bb, NULL, 1, (int[]){G});
        sp_tensor *h = sp_tensor_view(t, h0, NULL, 2, (int[]){B, H});
        sp_tensor *out = sp_srnn_gru_seq(t, X, h, W, bt, rev);
        CU_ASSERT_PTR_NOT_NULL_FATAL(out);
        double worst = 0;
        for (int s = 0; s < T; s++) {
            int tt = rev ? T - 1 - s : s;
            sp_tensor *xs = sp_tensor_view(t, xp + (size_t)tt * B * G, NULL, 2, (int[]){B, G});
            h = sp_gru_cell(t, xs, h, W, bt);
            for (int i = 0; i < B * H; i++)
                worst = fmax(worst, fabs(h->val[i] - out->val[(size_t)tt * B * H + i]));
        }
        SP_ASSERT_CLOSE(worst, 0.0, 1e-6);
    }
    sp_tape_destroy(t);
}

typedef struct lat_case {
    float eps[3 * 2 * 2];
    int resq, use_z0, out_kl;
    float fl;
} lat_case;

/* Output (T*B, Z+1) = [z | kl]: the checker weights every element. */
static sp_tensor *build_latent(sp_tape *t, sp_tensor **in, void *ctx) {
    lat_case *c = ctx;
    sp_srnn_latent_w w = {in[2], in[3], in[4]};
    sp_tensor *z, *kl;
    if (sp_srnn_latent(t, in[0], in[1], c->use_z0 ? in[5] : NULL, c->eps, &w, c->resq, c->fl, &z,
                       &kl))
        return NULL;
    const int TB = z->shape[0] * z->shape[1], Z = z->shape[2];
    return sp_concat_last(t, sp_reshape(t, z, 2, (int[]){TB, Z}),
                          sp_reshape(t, kl, 2, (int[]){TB, 1}));
}

/* f = clip(max(v, v/3), -3, 3) has kinks at 0, 3 and -9; a finite difference
 * that straddles one averages two slopes however small its step, so the
 * inputs keep every pre-activation inside one linear piece: the positive
 * (slope 1) or the negative (slope 1/3) one. */
static void test_latent_grad(void) {
    // T = 3, B = 2, M = 3, Z = 2
    sp_gc_input spec[6] = {{3, {3, 2, 6}, 1.0f, 1.8f, 1},   {3, {3, 2, 6}, 1.0f, 1.8f, 1},
                           {2, {2, 12}, -0.05f, 0.05f, 1},  {3, {4, 3, 2}, -0.25f, 0.25f, 1},
                           {2, {4, 2}, -0.3f, 0.3f, 1},     {2, {2, 2}, -1, 1, 1}};
    lat_case c;
    sp_gc_fill_uniform(c.eps, 12, -2, 2, 9);
    int k = 0;
    for (int neg = 0; neg < 2; neg++) {
        for (int i = 0; i < 2; i++) spec[i].lo = neg ? -6.5f : 1.0f, spec[i].hi = neg ? -2.5f : 1.8f;
        for (int resq = 0; resq < 2; resq++)
            for (int z0 = 0; z0 < 2; z0++) {
                c.resq = resq, c.use_z0 = z0, c.fl = z0 ? 0.2f : 1e-6f;
                SP_ASSERT_GRADCHECK(build_latent, &c, 5 + z0, spec, 41 + k++, SP_GC_ATOL,
                                    SP_GC_RTOL);
            }
    }
}

/* Forward values of one step against the formulas, in double. */
static void test_latent_values(void) {
    enum { M = 3, Z = 2 };
    float pp[2 * M], pq[2 * M], wz[Z * 4 * M], w2[4 * M * Z], b2[4 * Z], eps[Z], z0[Z];
    sp_gc_fill_uniform(pp, 2 * M, -2, 2, 1);
    sp_gc_fill_uniform(pq, 2 * M, -2, 2, 2);
    sp_gc_fill_uniform(wz, Z * 4 * M, -1, 1, 3);
    sp_gc_fill_uniform(w2, 4 * M * Z, -1, 1, 4);
    sp_gc_fill_uniform(b2, 4 * Z, -0.5f, 0.5f, 5);
    sp_gc_fill_uniform(eps, Z, -2, 2, 6);
    sp_gc_fill_uniform(z0, Z, -1, 1, 7);
    const float fl = 0.05f;
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tape_set_grad(t, 0);
    for (int resq = 0; resq < 2; resq++) {
        sp_tape_reset(t);
        sp_srnn_latent_w w = {sp_tensor_view(t, wz, NULL, 2, (int[]){Z, 4 * M}),
                              sp_tensor_view(t, w2, NULL, 3, (int[]){4, M, Z}),
                              sp_tensor_view(t, b2, NULL, 2, (int[]){4, Z})};
        sp_tensor *z, *kl;
        int rc = sp_srnn_latent(t, sp_tensor_view(t, pp, NULL, 3, (int[]){1, 1, 2 * M}),
                                sp_tensor_view(t, pq, NULL, 3, (int[]){1, 1, 2 * M}),
                                sp_tensor_view(t, z0, NULL, 2, (int[]){1, Z}), eps, &w, resq, fl,
                                &z, &kl);
        CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
        double st[4][Z];
        for (int q = 0; q < 4; q++) {
            double h[M];
            for (int n = 0; n < M; n++) {
                double v = q < 2 ? pp[q * M + n] : pq[(q - 2) * M + n];
                for (int j = 0; j < Z; j++) v += z0[j] * wz[j * 4 * M + q * M + n];
                v = v >= 0 ? v : v / 3;
                h[n] = fmin(fmax(v, -3), 3);
            }
            for (int j = 0; j < Z; j++) {
                double o = b2[q * Z + j];
                for (int n = 0; n < M; n++) o += h[n] * w2[(q * M + n) * Z + j];
                st[q][j] = o;
            }
        }
        double klsum = 0;
        for (int j = 0; j < Z; j++) {
            double mp = st[0][j], lvp = log(exp(st[1][j]) + fl);
            double mq = st[2][j] + (resq ? mp : 0), lvq = log(exp(st[3][j]) + fl);
            SP_ASSERT_CLOSE(z->val[j], mq + exp(0.5 * lvq) * eps[j], 1e-5);
            klsum += 0.5 * (lvp - lvq + (exp(lvq) + (mq - mp) * (mq - mp)) / exp(lvp) - 1);
        }
        SP_ASSERT_CLOSE(kl->val[0], klsum, 1e-5);
    }
    sp_tape_destroy(t);
}

typedef struct gll_case {
    float x[3 * 4];
    float bound;
} gll_case;

static sp_tensor *build_gll(sp_tape *t, sp_tensor **in, void *ctx) {
    gll_case *c = ctx;
    return sp_srnn_gauss_ll(t, in[0], sp_tensor_view(t, c->x, NULL, 2, (int[]){3, 4}), c->bound);
}

static void test_gauss_ll_grad(void) {
    gll_case c;
    sp_gc_fill_uniform(c.x, 12, -2, 2, 3);
    sp_gc_input spec[1] = {{2, {3, 8}, -2.5f, 2.5f, 1}};
    c.bound = 0.0f;
    SP_ASSERT_GRADCHECK(build_gll, &c, 1, spec, 51, SP_GC_ATOL, SP_GC_RTOL);
    c.bound = 1.7f;  // some log-variances clamped: zero gradient there, both ways
    SP_ASSERT_GRADCHECK(build_gll, &c, 1, spec, 52, SP_GC_ATOL, SP_GC_RTOL);
    // value: N(x; 0, 1) at x = 0 is -0.5 log(2 pi) per element
    sp_tape *t = sp_tape_create(1 << 16);
    float o[8] = {0}, x[4] = {0};
    sp_tensor *ll = sp_srnn_gauss_ll(t, sp_tensor_view(t, o, NULL, 2, (int[]){1, 8}),
                                     sp_tensor_view(t, x, NULL, 2, (int[]){1, 4}), 30.0f);
    SP_ASSERT_CLOSE(ll->val[0], -2.0 * log(2 * M_PI), 1e-5);
    // clamped: logvar -100 is treated as -30, finite
    o[4] = -100.0f, x[0] = 1e-3f;
    ll = sp_srnn_gauss_ll(t, sp_tensor_view(t, o, NULL, 2, (int[]){1, 8}),
                          sp_tensor_view(t, x, NULL, 2, (int[]){1, 4}), 30.0f);
    CU_ASSERT(isfinite(ll->val[0]));
    sp_tape_destroy(t);
}

/* ------------------------------------------------------ whole model */

typedef struct tmodel {
    sp_config *cfg;
    sp_params p;
    void *m;
    sp_tape *t;
    const sp_model_vtable *v;
} tmodel;

static const char *SMALL = "seed = 7\nsrnn.d = 16\nsrnn.a = 16\nsrnn.z = 4\nsrnn.mlp = 8\n";

static sp_config *make_cfg(const char *extra) {
    sp_error err = {0};
    const sp_model_vtable *v = sp_model_find("srnn");
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    sp_config *cfg = sp_config_new();
    int rc = sp_config_declare(cfg, sp_train_keys, sp_train_n_keys, &err);
    if (!rc) rc = sp_config_declare(cfg, v->keys, v->n_keys, &err);
    if (!rc) rc = sp_config_load_text(cfg, v->shared_defaults, "defaults", &err);
    if (!rc && extra) rc = sp_config_load_text(cfg, extra, "test extra", &err);
    if (rc) printf("\n    config failed: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    return cfg;
}

static void tmodel_init(tmodel *tm, const char *extra) {
    sp_error err = {0};
    char text[1024];
    snprintf(text, sizeof text, "%s%s", SMALL, extra ? extra : "");
    tm->v = sp_model_find("srnn");
    tm->cfg = make_cfg(text);
    sp_params_init(&tm->p);
    int rc = tm->v->create(&tm->m, tm->cfg, &tm->p, &err);
    if (!rc) rc = sp_params_finalize(&tm->p, &err);
    if (!rc) rc = tm->v->init_params(tm->m, &tm->p, 7, &err);
    if (rc) printf("\n    setup failed: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    tm->t = sp_tape_create(1 << 22);
}

static void tmodel_free(tmodel *tm) {
    tm->v->destroy(tm->m);
    sp_params_free(&tm->p);
    sp_config_free(tm->cfg);
    sp_tape_destroy(tm->t);
}

/* n streams of sine waves, (n, L, 200) frames, stream i's frame before the
 * first in u0 (n, 200). make_sines: unit variance (amplitude sqrt(2)). */
static void make_sines_amp(float *x, float *u0, int n, int L, long offset, double amp) {
    for (int i = 0; i < n; i++) {
        double w = 0.011 + 0.004 * i, ph = 0.7 * i;
        for (long s = -F; s < (long)L * F; s++) {
            float v = (float)(amp * sin(w * (double)(s + offset) + ph));
            if (s < 0) {
                if (u0) u0[(size_t)i * F + (s + F)] = v;
            } else {
                x[(size_t)i * L * F + s] = v;
            }
        }
    }
}

static void make_sines(float *x, float *u0, int n, int L, long offset) {
    make_sines_amp(x, u0, n, L, offset, sqrt(2.0));
}

static sp_batch make_batch(const float *x, const float *u0, const int64_t *idx, int n, int L,
                           int64_t step, int reset) {
    sp_batch b = {0};
    b.n = n, b.global_n = n, b.index = idx, b.x = x, b.step = step, b.seed = 99;
    b.seq_len = L, b.frame = F, b.u0 = u0, b.reset_state = reset;
    return b;
}

static double loss_of(tmodel *tm, const sp_batch *b, int backward, double *terms) {
    sp_error err = {0};
    double tl[3];
    sp_tape_reset(tm->t);
    sp_tape_set_grad(tm->t, backward);
    if (backward) sp_params_zero_grad(&tm->p);
    sp_tensor *loss = tm->v->loss(tm->m, tm->t, &tm->p, b, terms ? terms : tl, &err);
    if (!loss) printf("\n    loss failed: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    if (backward) sp_tape_backward(tm->t, loss, 1.0f);
    sp_tape_set_grad(tm->t, 1);
    return loss->val[0];
}

static void test_param_count(void) {
    sp_config *cfg = make_cfg(NULL);
    CU_ASSERT_EQUAL(sp_srnn_param_count(cfg), 17227152L);
    // the parameter table holds exactly that many values (padding aside)
    sp_error err = {0};
    sp_params p;
    sp_params_init(&p);
    void *m = NULL;
    CU_ASSERT_EQUAL_FATAL(sp_srnn_model.create(&m, cfg, &p, &err), SP_OK);
    long n = 0;
    for (int i = 0; i < p.n_entries; i++) n += p.entries[i].size;
    CU_ASSERT_EQUAL(n, 17227152L);
    printf("\n    TIMIT smooth params: %ld", n);
    sp_srnn_model.destroy(m);
    sp_params_free(&p);
    CU_ASSERT_EQUAL(sp_config_set(cfg, "srnn.inference=filter", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_srnn_param_count(cfg), 11983248L);
    sp_config_free(cfg);
}

static void test_schedules(void) {
    sp_config *cfg = make_cfg(NULL);
    sp_error err = {0};
    SP_ASSERT_CLOSE(sp_srnn_lr_at(cfg, 0.0), 1e-3, 1e-15);
    SP_ASSERT_CLOSE(sp_srnn_lr_at(cfg, 14.99), 1e-3, 1e-15);
    SP_ASSERT_CLOSE(sp_srnn_lr_at(cfg, 15.0), 1e-3 / 1.1, 1e-15);
    SP_ASSERT_CLOSE(sp_srnn_lr_at(cfg, 16.5), 1e-3 / 1.21, 1e-15);
    SP_ASSERT_CLOSE(sp_srnn_model.lr_at(NULL, cfg, 0, 49.0), 1e-3 * pow(1.1, -35), 1e-15);
    // from the trainer's epoch progress
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 12345, 0.0), 0.0, 0);
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 12345, 5.5), 0.275, 1e-15);
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 12345, 25.0), 1.0, 0);
    // steps per epoch given: linear per step, the reference's j / (20 n_batches)
    CU_ASSERT_EQUAL(sp_config_set(cfg, "srnn.steps_per_epoch=100", &err), SP_OK);
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 0, 3.0), 0.0, 0);
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 150, 0.0), 150.0 / 2000.0, 1e-15);
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 2000, 0.0), 1.0, 0);
    CU_ASSERT_EQUAL(sp_config_set(cfg, "srnn.kl_warmup_epochs=0", &err), SP_OK);
    SP_ASSERT_CLOSE(sp_srnn_beta(cfg, 0, 0.0), 1.0, 0);
    sp_config_free(cfg);
}

static void test_init(void) {
    tmodel tm;
    tmodel_init(&tm, NULL);
    const sp_params *p = &tm.p;
    // GRU hidden weights: each (H, H) gate block orthogonal
    const float *wh = sp_params_val(p, sp_params_find(p, "gru_d/W_h"));
    double worst = 0;
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                double s = 0;
                for (int k = 0; k < 16; k++) s += wh[k * 48 + g * 16 + i] * wh[k * 48 + g * 16 + j];
                worst = fmax(worst, fabs(s - (i == j)));
            }
    SP_ASSERT_CLOSE(worst, 0.0, 1e-5);
    // output layers tiny, biases zero
    const char *last[] = {"latent/W2", "emit/W_out"};
    for (int k = 0; k < 2; k++) {
        int e = sp_params_find(p, last[k]);
        const float *w = sp_params_val(p, e);
        float mx = 0;
        for (long i = 0; i < p->entries[e].size; i++) mx = fmaxf(mx, fabsf(w[i]));
        CU_ASSERT(mx <= 0.001f && mx > 0.0005f);
    }
    const char *bias[] = {"gru_d/b", "gru_a/b", "emb/b1", "latent/b2", "emit/b_out"};
    for (int k = 0; k < 5; k++) {
        int e = sp_params_find(p, bias[k]);
        CU_ASSERT_FATAL(e >= 0);
        const float *w = sp_params_val(p, e);
        for (long i = 0; i < p->entries[e].size; i++) CU_ASSERT_EQUAL_FATAL(w[i], 0.0f);
    }
    // Glorot normal: emb/W1 (200, 8) std sqrt(2 / 208)
    int e = sp_params_find(p, "emb/W1");
    const float *w = sp_params_val(p, e);
    double ss = 0;
    for (long i = 0; i < 1600; i++) ss += (double)w[i] * w[i];
    SP_ASSERT_CLOSE(sqrt(ss / 1600), sqrt(2.0 / 208.0), 0.1 * sqrt(2.0 / 208.0));
    tmodel_free(&tm);
}

/* Finite differences of the whole loss (in double from the term sums) for a
 * few elements of EVERY parameter entry, at six step sizes; the estimate is
 * the smallest neighbouring pair of steps that agree within the tolerance
 * (1% + the float rounding of the loss over the step); elements where no pair agrees sit
 * on a kink of f at every step and are skipped (at most a quarter). */
static void check_loss_grad(const char *label, const char *variant) {
    char extra[256];
    // beta = 0.5 (step 5 of a 10-step warm-up) so both terms carry weight;
    // larger output layers so every path has a visible gradient
    snprintf(extra, sizeof extra,
             "%ssrnn.kl_warmup_epochs = 1\nsrnn.steps_per_epoch = 10\nsrnn.init_last = 0.3\n"
             "srnn.logvar_floor = 0.01\n",
             variant);
    tmodel tm;
    tmodel_init(&tm, extra);
    enum { N = 2, L = 6 };
    float x[N * L * F], u0[N * F], st_x[N * L * F], st_u0[N * F];
    // float rounding of the loss limits the finite differences: small
    // targets and an emission variance that fits them keep |loss| near 0
    make_sines_amp(x, u0, N, L, 0, 0.1);
    make_sines_amp(st_x, st_u0, N, L, 3 * F, 0.1);
    float *blv = sp_params_val(&tm.p, sp_params_find(&tm.p, "emit/b_out")) + F;
    for (int j = 0; j < F; j++) blv[j] = -1.9f;
    int64_t idx[N] = {3, 8};
    // also carried state: first run a chunk to fill it, then check the next chunk
    sp_error err = {0};
    CU_ASSERT_EQUAL_FATAL(tm.v->state_alloc(tm.m, N, &err), SP_OK);
    sp_batch b0 = make_batch(st_x, st_u0, idx, N, L, 4, 1);
    loss_of(&tm, &b0, 0, NULL);
    float *state = tm.v->state(tm.m);
    long sw = tm.v->state_floats(tm.m);
    float *saved = malloc(sizeof(float) * N * sw);
    memcpy(saved, state, sizeof(float) * N * sw);
    sp_batch b = make_batch(x, NULL, idx, N, L, 5, 0);

    loss_of(&tm, &b, 1, NULL);
    float *g = malloc(sizeof(float) * tm.p.total);
    memcpy(g, tm.p.grad, sizeof(float) * tm.p.total);
    int checked = 0, skipped = 0, failed = 0, sensitive = 0;
    double worst = 0;
    char what[256] = "";
    for (int e = 0; e < tm.p.n_entries; e++) {
        const sp_param_entry *pe = &tm.p.entries[e];
        for (int k = 0; k < 3; k++) {
            long i = pe->offset + (long)((k * 7919L + e * 104729L) % pe->size);
            float w0 = tm.p.val[i];
            enum { NH = 6 };
            double est[NH];
            for (int hs = 0; hs < NH; hs++) {
                double h = 1.6e-2 / (1 << hs), lp[2];
                for (int sg = 0; sg < 2; sg++) {
                    tm.p.val[i] = w0 + (float)(sg ? -h : h);
                    memcpy(state, saved, sizeof(float) * N * sw);
                    double terms[3];
                    loss_of(&tm, &b, 0, terms);
                    lp[sg] = -(terms[2] - 0.5 * terms[1]) / L;
                }
                double hh = (double)(float)(w0 + h) - (double)(float)(w0 - h);
                est[hs] = (lp[0] - lp[1]) / hh;
            }
            tm.p.val[i] = w0;
            // the smallest neighbouring pair of steps that agree: large steps
            // straddle kinks of f, the smallest drown in float rounding
            int bp = -1;
            double fd = 0, an = g[i], tol = 0;
            for (int hs = NH - 2; hs >= 0 && bp < 0; hs--) {
                fd = 0.5 * (est[hs] + est[hs + 1]);
                // float32 rounding of the loss (~4e-6 here) over the step
                tol = 8e-6 / (1.6e-2 / (1 << (hs + 1))) + 1e-2 * fabs(fd);
                if (fabs(est[hs] - est[hs + 1]) <= 0.5 * tol) bp = hs;
            }
            if (bp < 0) {
                skipped++;
                continue;
            }
            checked++;
            sensitive += fabs(1.1 * an - fd) > tol;  // would a 10% error be caught?
            double dev = fabs(an - fd);
            if (dev > tol) {
                failed++;
                if (dev > worst) {
                    worst = dev;
                    snprintf(what, sizeof what, "%s[%ld]: analytic %.6g vs fd %.6g", pe->name,
                             i - pe->offset, an, fd);
                }
            }
        }
    }
    memcpy(state, saved, sizeof(float) * N * sw);
    printf("\n    %s: %d checked, %d skipped, %d failed %s; a 10%% error caught in %d", label,
           checked, skipped, failed, what, sensitive);
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT(sensitive * 2 > checked);
    CU_ASSERT(skipped * 4 < checked + skipped);
    free(g);
    free(saved);
    tmodel_free(&tm);
}

static void test_loss_grad_smooth_resq(void) { check_loss_grad("smooth+resq", ""); }
static void test_loss_grad_smooth(void) { check_loss_grad("smooth", "srnn.resq = false\n"); }
static void test_loss_grad_filter_resq(void) {
    check_loss_grad("filter+resq", "srnn.inference = filter\n");
}
static void test_loss_grad_filter(void) {
    check_loss_grad("filter", "srnn.inference = filter\nsrnn.resq = false\n");
}

/* The loss of 4 streams is the sum of the losses of 2 + 2 (same stream ids),
 * gradients too: what lets ranks split a batch. */
static void test_split_sum(void) {
    tmodel tm;
    tmodel_init(&tm, "srnn.init_last = 0.1\n");
    enum { N = 4, L = 40 };
    float *x = malloc(sizeof(float) * N * L * F), u0[N * F];
    make_sines(x, u0, N, L, 0);
    int64_t idx[N] = {0, 1, 2, 3};
    sp_batch b = make_batch(x, u0, idx, N, L, 3, 1);
    double t4[3], ta[3], tb[3];
    double l4 = loss_of(&tm, &b, 1, t4);
    float *g4 = malloc(sizeof(float) * tm.p.total);
    memcpy(g4, tm.p.grad, sizeof(float) * tm.p.total);
    sp_batch b1 = make_batch(x, u0, idx, 2, L, 3, 1);
    double l1 = loss_of(&tm, &b1, 1, ta);
    float *g1 = malloc(sizeof(float) * tm.p.total);
    memcpy(g1, tm.p.grad, sizeof(float) * tm.p.total);
    sp_batch b2 = make_batch(x + 2 * L * F, u0 + 2 * F, idx + 2, 2, L, 3, 1);
    double l2 = loss_of(&tm, &b2, 1, tb);
    SP_ASSERT_CLOSE(l4, l1 + l2, 1e-4 * fabs(l4));
    for (int k = 0; k < 3; k++) SP_ASSERT_CLOSE(t4[k], ta[k] + tb[k], 1e-5 * fabs(t4[k]) + 1e-4);
    double worst = 0, gmax = 0;
    for (long i = 0; i < tm.p.total; i++) {
        worst = fmax(worst, fabs(g4[i] - (g1[i] + tm.p.grad[i])));
        gmax = fmax(gmax, fabs(g4[i]));
    }
    SP_ASSERT_CLOSE(worst, 0.0, 1e-4 * gmax);
    // the elbo term is loglik - kl, per chunk
    SP_ASSERT_CLOSE(t4[0], t4[2] - t4[1], 1e-6 * fabs(t4[0]));
    free(x), free(g4), free(g1);
    tmodel_free(&tm);
}

/* Carried state: two 40-frame chunks end in the same d_T and last frame as
 * one 80-frame pass (d is deterministic; z is sampled, so only checked to
 * change and stay finite); a reset ignores the state. */
static void test_carried_state(void) {
    tmodel tm;
    tmodel_init(&tm, "srnn.init_last = 0.1\n");
    enum { N = 3, L = 40 };
    sp_error err = {0};
    float *x = malloc(sizeof(float) * N * 2 * L * F), u0[N * F];
    float *c1 = malloc(sizeof(float) * N * L * F), *c2 = malloc(sizeof(float) * N * L * F);
    make_sines(x, u0, N, 2 * L, 0);
    for (int i = 0; i < N; i++) {
        memcpy(c1 + (size_t)i * L * F, x + (size_t)i * 2 * L * F, sizeof(float) * L * F);
        memcpy(c2 + (size_t)i * L * F, x + (size_t)i * 2 * L * F + L * F, sizeof(float) * L * F);
    }
    int64_t idx[N] = {5, 6, 7};
    CU_ASSERT_EQUAL_FATAL(tm.v->state_alloc(tm.m, N, &err), SP_OK);
    const long sw = tm.v->state_floats(tm.m);
    CU_ASSERT_EQUAL(sw, 16 + 4 + F);
    float *st = tm.v->state(tm.m);
    for (long i = 0; i < N * sw; i++) CU_ASSERT_EQUAL_FATAL(st[i], 0.0f);

    sp_batch whole = make_batch(x, u0, idx, N, 2 * L, 0, 1);
    loss_of(&tm, &whole, 0, NULL);
    float *ref = malloc(sizeof(float) * N * sw);
    memcpy(ref, st, sizeof(float) * N * sw);

    sp_batch b1 = make_batch(c1, u0, idx, N, L, 0, 1);
    double l1 = loss_of(&tm, &b1, 1, NULL);
    float *mid = malloc(sizeof(float) * N * sw);
    memcpy(mid, st, sizeof(float) * N * sw);
    sp_batch b2 = make_batch(c2, NULL, idx, N, L, 1, 0);  // continues: no u0
    loss_of(&tm, &b2, 1, NULL);
    double dd = 0, dz = 0, dx = 0, zmax = 0;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 16; j++) dd = fmax(dd, fabs(st[i * sw + j] - ref[i * sw + j]));
        for (int j = 16; j < 20; j++) {
            dz = fmax(dz, fabs(st[i * sw + j] - mid[i * sw + j]));
            zmax = fmax(zmax, fabs(st[i * sw + j]));
            CU_ASSERT(isfinite(st[i * sw + j]));
        }
        for (int j = 20; j < sw; j++) dx = fmax(dx, fabs(st[i * sw + j] - ref[i * sw + j]));
    }
    SP_ASSERT_CLOSE(dd, 0.0, 1e-5);
    SP_ASSERT_CLOSE(dx, 0.0, 0.0);
    CU_ASSERT(dz > 0 && zmax > 0);
    // the state matters: chunk 2 from zero state (reset, u0 = last frame of chunk 1) differs
    float u1[N * F];
    for (int i = 0; i < N; i++) memcpy(u1 + i * F, c1 + (size_t)i * L * F + (L - 1) * F, sizeof(float) * F);
    memcpy(st, mid, sizeof(float) * N * sw);
    double carried = loss_of(&tm, &b2, 0, NULL);
    sp_batch b2r = make_batch(c2, u1, idx, N, L, 1, 1);
    double fresh = loss_of(&tm, &b2r, 0, NULL);
    CU_ASSERT(fabs(carried - fresh) > 1e-6 * fabs(fresh));
    // a reset restores the zero state whatever the state holds
    for (long i = 0; i < N * sw; i++) st[i] = 0.5f;
    SP_ASSERT_CLOSE(loss_of(&tm, &b1, 0, NULL), l1, 1e-5 * fabs(l1));
    // a continuing batch of a different stream count is an error naming both
    sp_batch bad = make_batch(c2, NULL, idx, 2, L, 1, 0);
    sp_tape_reset(tm.t);
    CU_ASSERT_PTR_NULL(tm.v->loss(tm.m, tm.t, &tm.p, &bad, NULL, &err));
    CU_ASSERT(strstr(err.msg, "2 streams") != NULL);
    free(x), free(c1), free(c2), free(ref), free(mid);
    tmodel_free(&tm);
}

/* Eval bookkeeping: elbo_per_seq counts sequences, elbo_per_sample target
 * samples; a TIMIT-style utterance (first frame input only) equals the same
 * frames given as u0 + targets; the training state is untouched. */
static void test_eval(void) {
    tmodel tm;
    tmodel_init(&tm, "srnn.init_last = 0.1\n");
    enum { N = 2, L = 57 };
    sp_error err = {0};
    float *x = malloc(sizeof(float) * N * L * F);
    make_sines(x, NULL, N, L, 11);
    int64_t idx[N] = {0, 1};
    CU_ASSERT_EQUAL_FATAL(tm.v->state_alloc(tm.m, N, &err), SP_OK);
    float *st = tm.v->state(tm.m);
    for (long i = 0; i < N * tm.v->state_floats(tm.m); i++) st[i] = 0.25f;

    sp_batch b = {0};
    b.n = N, b.global_n = N, b.index = idx, b.x = x, b.seed = 5, b.seq_len = L, b.frame = F;
    b.reset_state = 1, b.x_first_is_input = 1;
    double num[2] = {0}, den[2] = {0};
    sp_tape_reset(tm.t);
    CU_ASSERT_EQUAL_FATAL(tm.v->eval(tm.m, tm.t, &tm.p, &b, num, den, &err), SP_OK);
    CU_ASSERT(isfinite(num[0]) && num[0] < 0);
    SP_ASSERT_CLOSE(den[0], N, 0);
    SP_ASSERT_CLOSE(den[1], (double)N * (L - 1) * F, 0);
    SP_ASSERT_CLOSE(num[1], num[0], 0);
    printf("\n    eval: ELBO/seq %.2f, /sample %.4f", num[0] / den[0], num[1] / den[1]);
    for (long i = 0; i < N * tm.v->state_floats(tm.m); i++) CU_ASSERT_EQUAL_FATAL(st[i], 0.25f);

    // the same sequences as u0 + (L-1) target frames
    float *tx = malloc(sizeof(float) * N * (L - 1) * F), u0[N * F];
    for (int i = 0; i < N; i++) {
        memcpy(u0 + i * F, x + (size_t)i * L * F, sizeof(float) * F);
        memcpy(tx + (size_t)i * (L - 1) * F, x + (size_t)i * L * F + F, sizeof(float) * (L - 1) * F);
    }
    sp_batch b2 = b;
    b2.x = tx, b2.seq_len = L - 1, b2.u0 = u0, b2.x_first_is_input = 0;
    double n2[2] = {0}, d2[2] = {0};
    sp_tape_reset(tm.t);
    CU_ASSERT_EQUAL_FATAL(tm.v->eval(tm.m, tm.t, &tm.p, &b2, n2, d2, &err), SP_OK);
    SP_ASSERT_CLOSE(n2[0], num[0], 1e-6 * fabs(num[0]));
    SP_ASSERT_CLOSE(d2[1], den[1], 0);
    // one stream at a time adds up to the same sums
    double n3[2] = {0}, d3[2] = {0};
    for (int i = 0; i < N; i++) {
        sp_batch bi = b;
        bi.n = 1, bi.index = idx + i, bi.x = x + (size_t)i * L * F;
        sp_tape_reset(tm.t);
        CU_ASSERT_EQUAL_FATAL(tm.v->eval(tm.m, tm.t, &tm.p, &bi, n3, d3, &err), SP_OK);
    }
    SP_ASSERT_CLOSE(n3[0], num[0], 1e-5 * fabs(num[0]));
    SP_ASSERT_CLOSE(d3[1], den[1], 0);
    // no u0, not first-frame-input: a clear error
    b2.u0 = NULL;
    sp_tape_reset(tm.t);
    CU_ASSERT_EQUAL(tm.v->eval(tm.m, tm.t, &tm.p, &b2, n2, d2, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "u0") != NULL);
    free(x), free(tx);
    tmodel_free(&tm);
}

/* A padded batch of sequences of different lengths gives the sums of the
 * sequences evaluated one by one, in both inference variants. */
static void check_eval_lengths(const char *variant) {
    tmodel tm;
    tmodel_init(&tm, variant);
    enum { N = 3, L = 23 };
    sp_error err = {0};
    const int32_t lens[N] = {L, 9, 2};
    float *x = malloc(sizeof(float) * N * L * F);
    make_sines(x, NULL, N, L, 5);
    for (int i = 0; i < N; i++)  // padding: garbage that must not matter
        for (long k = (long)lens[i] * F; k < (long)L * F; k++) x[(size_t)i * L * F + k] = 7.0f;
    int64_t idx[N] = {4, 9, 2};
    sp_batch b = {0};
    b.n = N, b.global_n = N, b.index = idx, b.x = x, b.seed = 5, b.seq_len = L, b.frame = F;
    b.reset_state = 1, b.x_first_is_input = 1;
    double num[2] = {0}, den[2] = {0}, n1[2] = {0}, d1[2] = {0};
    sp_tape_reset(tm.t);
    CU_ASSERT_EQUAL_FATAL(sp_srnn_eval_lengths(tm.m, tm.t, &tm.p, &b, lens, num, den, &err), SP_OK);
    for (int i = 0; i < N; i++) {
        sp_batch bi = b;
        bi.n = 1, bi.index = idx + i, bi.x = x + (size_t)i * L * F, bi.seq_len = lens[i];
        sp_tape_reset(tm.t);
        CU_ASSERT_EQUAL_FATAL(tm.v->eval(tm.m, tm.t, &tm.p, &bi, n1, d1, &err), SP_OK);
    }
    SP_ASSERT_CLOSE(num[0], n1[0], 1e-5 * fabs(n1[0]));
    SP_ASSERT_CLOSE(den[0], N, 0);
    SP_ASSERT_CLOSE(den[1], (double)(L - 1 + 8 + 1) * F, 0);
    const int32_t bad[N] = {L, 1, 3};
    sp_tape_reset(tm.t);
    CU_ASSERT_EQUAL(sp_srnn_eval_lengths(tm.m, tm.t, &tm.p, &b, bad, num, den, &err), SP_EINPUT);
    free(x);
    tmodel_free(&tm);
}

static void test_eval_lengths(void) {
    check_eval_lengths("srnn.init_last = 0.1\n");
    check_eval_lengths("srnn.init_last = 0.1\nsrnn.inference = filter\n");
}

/* The KL weight follows the batch's epoch progress: loss = -(ll - beta kl) / T. */
static void test_beta_from_batch(void) {
    tmodel tm;
    tmodel_init(&tm, "srnn.init_last = 0.1\n");
    enum { N = 2, L = 40 };
    float *x = malloc(sizeof(float) * N * L * F), u0[N * F];
    make_sines(x, u0, N, L, 0);
    int64_t idx[N] = {0, 1};
    const double ef[3] = {0.0, 5.0, 30.0}, beta[3] = {0.0, 0.25, 1.0};
    for (int k = 0; k < 3; k++) {
        sp_batch b = make_batch(x, u0, idx, N, L, 7, 1);
        b.epoch = (int)ef[k], b.epoch_float = ef[k];
        double terms[3];
        double l = loss_of(&tm, &b, 0, terms);
        SP_ASSERT_CLOSE(l, -(terms[2] - beta[k] * terms[1]) / L, 1e-5 * fabs(l));
    }
    free(x);
    tmodel_free(&tm);
}

static void test_determinism(void) {
    tmodel tm;
    tmodel_init(&tm, NULL);
    enum { N = 3, L = 40 };
    float *x = malloc(sizeof(float) * N * L * F), u0[N * F];
    make_sines(x, u0, N, L, 0);
    int64_t idx[N] = {1, 2, 3};
    sp_batch b = make_batch(x, u0, idx, N, L, 2, 1);
    double l1 = loss_of(&tm, &b, 1, NULL);
    float *g1 = malloc(sizeof(float) * tm.p.total);
    memcpy(g1, tm.p.grad, sizeof(float) * tm.p.total);
    double l2 = loss_of(&tm, &b, 1, NULL);
    CU_ASSERT_EQUAL(l1, l2);
    CU_ASSERT_EQUAL(memcmp(g1, tm.p.grad, sizeof(float) * tm.p.total), 0);
    // another step draws other noise
    sp_batch b3 = make_batch(x, u0, idx, N, L, 3, 1);
    CU_ASSERT(loss_of(&tm, &b3, 0, NULL) != l1);
    free(x), free(g1);
    tmodel_free(&tm);
}

/* Stateful training on sine-wave streams with the SRNN's own recipe (Lasagne
 * Adam, clipping, KL warm-up) must raise the held-out ELBO. */
static void test_training_improves(void) {
    tmodel tm;
    tmodel_init(&tm, "srnn.kl_warmup_epochs = 1\nsrnn.steps_per_epoch = 100\n");
    enum { N = 4, L = 40, STEPS = 300, EPOCH = 10 };
    sp_error err = {0};
    float *x = malloc(sizeof(float) * N * L * F), u0[N * F];
    float *ex = malloc(sizeof(float) * N * L * F), eu0[N * F];
    make_sines(ex, eu0, N, L, 123457);
    int64_t idx[N] = {0, 1, 2, 3};
    CU_ASSERT_EQUAL_FATAL(tm.v->state_alloc(tm.m, N, &err), SP_OK);
    double en[2], ed[2];
    double elbo0 = 0;
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) {
            sp_adam adam;
            sp_adam_init(&adam, SP_ADAM_LASAGNE, 3e-3f);
            for (int s = 0; s < STEPS; s++) {
                int pos = s % EPOCH;  // an "epoch" of 10 chunks per stream, then restart
                make_sines(x, u0, N, L, (long)pos * L * F);
                sp_batch b = make_batch(x, pos == 0 ? u0 : NULL, idx, N, L, s, pos == 0);
                loss_of(&tm, &b, 1, NULL);
                sp_grad_scale(&tm.p, 1.0f / N);
                sp_clip_global_norm(&tm.p, 3000);
                sp_clip_elementwise(&tm.p, 1000);
                sp_adam_step(&tm.p, &adam, -1.0f);
            }
        }
        en[0] = en[1] = ed[0] = ed[1] = 0;
        sp_batch b = make_batch(ex, eu0, idx, N, L, 0, 1);
        sp_tape_reset(tm.t);
        CU_ASSERT_EQUAL_FATAL(tm.v->eval(tm.m, tm.t, &tm.p, &b, en, ed, &err), SP_OK);
        if (phase == 0) elbo0 = en[1] / ed[1];
    }
    double elbo1 = en[1] / ed[1];
    printf("\n    ELBO per sample: %.4f -> %.4f after %d steps", elbo0, elbo1, STEPS);
    CU_ASSERT(isfinite(elbo1));
    CU_ASSERT(elbo1 > elbo0 + 0.5);
    free(x), free(ex);
    tmodel_free(&tm);
}

int main(void) {
    const sp_test_case ops[] = {{"gru_seq gradient", test_gru_seq_grad},
                                {"gru_seq = gru_cell loop", test_gru_seq_matches_cell},
                                {"gru_seq_len padding", test_gru_seq_len_values},
                                {"latent gradient", test_latent_grad},
                                {"latent values", test_latent_values},
                                {"gauss_ll gradient and values", test_gauss_ll_grad},
                                {NULL, NULL}};
    const sp_test_case model[] = {{"parameter count", test_param_count},
                                  {"schedules", test_schedules},
                                  {"init", test_init},
                                  {"loss gradient smooth+resq", test_loss_grad_smooth_resq},
                                  {"loss gradient smooth", test_loss_grad_smooth},
                                  {"loss gradient filter+resq", test_loss_grad_filter_resq},
                                  {"loss gradient filter", test_loss_grad_filter},
                                  {"sum over streams", test_split_sum},
                                  {"carried state", test_carried_state},
                                  {"eval", test_eval},
                                  {"eval of padded sequences", test_eval_lengths},
                                  {"KL weight from the batch", test_beta_from_batch},
                                  {"determinism", test_determinism},
                                  {"training raises the ELBO", test_training_improves},
                                  {NULL, NULL}};
    const sp_test_suite suites[] = {{"srnn ops", ops}, {"srnn model", model}, {NULL, NULL}};
    return sp_test_main(suites);
}
