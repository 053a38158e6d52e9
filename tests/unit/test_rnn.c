/* Tests of the fused LSTM and GRU cells (rnn.h): forward values against a
 * double-precision reference written here, gradients of every input against
 * finite differences (gradcheck.h), zero-state and gate-saturation facts. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gradcheck.h"
#include "supair/rnn.h"
#include "testutil.h"

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---- references (double) ---- */

// x (B,4H), h, c (B,H) or NULL, W (H,4H) -> ho, co (B,H)
static void ref_lstm(int B, int H, const float *x, const float *h, const float *c, const float *W,
                     double fb, double *ho, double *co) {
    for (int b = 0; b < B; b++)
        for (int n = 0; n < H; n++) {
            double g[4];
            for (int q = 0; q < 4; q++) {
                double s = x[b * 4 * H + q * H + n];
                for (int k = 0; k < H && h; k++) s += (double)h[b * H + k] * W[k * 4 * H + q * H + n];
                g[q] = s;
            }
            double cp = c ? c[b * H + n] : 0.0;
            double cn = sig(g[2] + fb) * cp + sig(g[0]) * tanh(g[1]);
            co[b * H + n] = cn;
            ho[b * H + n] = sig(g[3]) * tanh(cn);
        }
}

// x (B,3H), h (B,H) or NULL, W (H,3H), bias (3H) -> ho (B,H)
static void ref_gru(int B, int H, const float *x, const float *h, const float *W,
                    const float *bias, double *ho) {
    for (int b = 0; b < B; b++)
        for (int n = 0; n < H; n++) {
            double hw[3];
            for (int q = 0; q < 3; q++) {
                double s = 0;
                for (int k = 0; k < H && h; k++) s += (double)h[b * H + k] * W[k * 3 * H + q * H + n];
                hw[q] = s;
            }
            const float *xb = x + b * 3 * H;
            double r = sig(xb[n] + hw[0] + bias[n]);
            double u = sig(xb[H + n] + hw[1] + bias[H + n]);
            double c = tanh(xb[2 * H + n] + r * hw[2] + bias[2 * H + n]);
            double hp = h ? h[b * H + n] : 0.0;
            ho[b * H + n] = (1 - u) * hp + u * c;
        }
}

static float *rnd(sp_tape *t, long n, float lo, float hi, uint64_t seed) {
    float *p = sp_tape_alloc(t, (size_t)n * sizeof(float));
    sp_gc_fill_uniform(p, n, lo, hi, seed);
    return p;
}


static const int sizes[][2] = {{1, 1}, {3, 5}, {2, 7}, {1, 4}, {5, 2}, {4, 9}};
#define N_SIZES ((int)(sizeof sizes / sizeof sizes[0]))
/* Forward checks add one SuPAIR-sized cell: threaded gates, blocked sgemm. */
static const int fwd_sizes[][2] = {{1, 1}, {3, 5}, {2, 7}, {1, 4}, {5, 2}, {4, 9}, {70, 256}};
#define N_FWD ((int)(sizeof fwd_sizes / sizeof fwd_sizes[0]))

/* ---- LSTM ---- */

static void test_lstm_forward(void) {
    sp_tape *t = sp_tape_create(8 << 20);
    for (int s = 0; s < N_FWD; s++) {
        const int B = fwd_sizes[s][0], H = fwd_sizes[s][1];
        sp_tape_reset(t);
        const float ws = 3.0f / sqrtf((float)H);  // keeps h W_h O(1), gates unsaturated
        float *x = rnd(t, (long)B * 4 * H, -2, 2, 10 + s), *W = rnd(t, (long)H * 4 * H, -ws, ws, 20 + s);
        float *h = rnd(t, (long)B * H, -1, 1, 30 + s), *c = rnd(t, (long)B * H, -2, 2, 40 + s);
        sp_tensor *tx = sp_tensor_view(t, x, NULL, 2, (int[]){B, 4 * H});
        sp_tensor *tW = sp_tensor_view(t, W, NULL, 2, (int[]){H, 4 * H});
        sp_tensor *th = sp_tensor_view(t, h, NULL, 2, (int[]){B, H});
        sp_tensor *tc = sp_tensor_view(t, c, NULL, 2, (int[]){B, H});
        double *ho = sp_tape_alloc(t, sizeof(double) * B * H);
        double *co = sp_tape_alloc(t, sizeof(double) * B * H);
        for (int state = 0; state < 2; state++) {
            sp_tensor *hn, *cn;
            int rc = sp_lstm_cell(t, tx, state ? th : NULL, state ? tc : NULL, tW, 1.0f, &hn, &cn);
            CU_ASSERT_EQUAL_FATAL(rc, 0);
            ref_lstm(B, H, x, state ? h : NULL, state ? c : NULL, W, 1.0, ho, co);
            SP_ASSERT_CLOSE_ARRAY("lstm h'", hn->val, ho, (long)B * H, 2e-6);
            SP_ASSERT_CLOSE_ARRAY("lstm c'", cn->val, co, (long)B * H, 2e-6);
        }
        CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);  // no input has a gradient
    }
    sp_tape_destroy(t);
}

typedef struct lstm_case {
    int has_h, has_c;
    int which;  // 0: h', 1: c', 2: h'' after two steps (state grads flow back)
    float fb;
} lstm_case;

// inputs: xproj (B,4H), W_h (H,4H), [h (B,H)], [c (B,H)]
static sp_tensor *build_lstm(sp_tape *t, sp_tensor **in, void *ctx) {
    const lstm_case *k = ctx;
    sp_tensor *h = k->has_h ? in[2] : NULL;
    sp_tensor *c = k->has_c ? in[2 + k->has_h] : NULL;
    sp_tensor *ho, *co;
    if (sp_lstm_cell(t, in[0], h, c, in[1], k->fb, &ho, &co)) return NULL;
    if (k->which == 2) {
        sp_tensor *h2, *c2;
        if (sp_lstm_cell(t, in[0], ho, co, in[1], k->fb, &h2, &c2)) return NULL;
        return h2;
    }
    return k->which ? co : ho;
}

static void test_lstm_grad(void) {
    uint64_t seed = 100;
    for (int s = 0; s < N_SIZES; s++) {
        const int B = sizes[s][0], H = sizes[s][1];
        for (int v = 0; v < 5; v++) {
            lstm_case k = {v != 1, v != 1 && v != 2, v % 3, v == 4 ? 0.0f : 1.0f};
            sp_gc_input spec[4] = {
                {2, {B, 4 * H}, -2, 2, 1},
                {2, {H, 4 * H}, -1, 1, 1},
            };
            int n = 2;
            if (k.has_h) spec[n++] = (sp_gc_input){2, {B, H}, -1, 1, 1};
            if (k.has_c) spec[n++] = (sp_gc_input){2, {B, H}, -2, 2, 1};
            SP_ASSERT_GRADCHECK(build_lstm, &k, n, spec, seed++, SP_GC_ATOL, SP_GC_RTOL);
        }
    }
}

/* A NULL state must mean exactly a zero state, values and gradients. */
static void test_lstm_null_state(void) {
    const int B = 3, H = 6;
    sp_tape *t = sp_tape_create(1 << 20);
    float x[3 * 24], W[6 * 24], zero[18] = {0}, gx[2][3 * 24], gW[2][6 * 24];
    sp_gc_fill_uniform(x, 72, -2, 2, 7);
    sp_gc_fill_uniform(W, 144, -1, 1, 8);
    float out[2][2][18];
    for (int z = 0; z < 2; z++) {
        sp_tape_reset(t);
        memset(gx[z], 0, sizeof gx[z]);
        memset(gW[z], 0, sizeof gW[z]);
        sp_tensor *tx = sp_tensor_view(t, x, gx[z], 2, (int[]){B, 4 * H});
        sp_tensor *tW = sp_tensor_view(t, W, gW[z], 2, (int[]){H, 4 * H});
        sp_tensor *th = z ? sp_tensor_view(t, zero, NULL, 2, (int[]){B, H}) : NULL;
        sp_tensor *tc = z ? sp_tensor_view(t, zero, NULL, 2, (int[]){B, H}) : NULL;
        sp_tensor *h1, *c1, *h2, *c2;
        CU_ASSERT_EQUAL_FATAL(sp_lstm_cell(t, tx, th, tc, tW, 1.0f, &h1, &c1), 0);
        CU_ASSERT_EQUAL_FATAL(sp_lstm_cell(t, tx, h1, c1, tW, 1.0f, &h2, &c2), 0);
        memcpy(out[z][0], h2->val, sizeof out[z][0]);
        memcpy(out[z][1], c2->val, sizeof out[z][1]);
        for (int i = 0; i < B * H; i++) h2->grad[i] = 1.0f, c2->grad[i] = 0.5f;
        sp_tape_backward(t, h2, 0.0f);
    }
    CU_ASSERT_EQUAL(memcmp(out[0], out[1], sizeof out[0]), 0);
    double dx = 0, dW = 0;
    for (int i = 0; i < 72; i++) dx = fmax(dx, fabs(gx[0][i] - gx[1][i]));
    for (int i = 0; i < 144; i++) dW = fmax(dW, fabs(gW[0][i] - gW[1][i]));
    SP_ASSERT_CLOSE(dx, 0.0, 1e-6);
    SP_ASSERT_CLOSE(dW, 0.0, 1e-6);
    sp_tape_destroy(t);
}

static void test_lstm_bad_input(void) {
    sp_tape *t = sp_tape_create(1 << 16);
    sp_tensor *x = sp_tensor_2d(t, 2, 8, 0), *W = sp_tensor_2d(t, 3, 12, 0), *ho, *co;
    CU_ASSERT_EQUAL(sp_lstm_cell(t, x, NULL, NULL, W, 1.0f, &ho, &co), 1);  // H 2 vs 3
    CU_ASSERT_PTR_NULL(ho);
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    CU_ASSERT_EQUAL(sp_lstm_cell(t, NULL, NULL, NULL, W, 1.0f, &ho, &co), 2);
    CU_ASSERT_PTR_NULL(co);
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_destroy(t);
}

/* ---- GRU ---- */

static void test_gru_forward(void) {
    sp_tape *t = sp_tape_create(8 << 20);
    for (int s = 0; s < N_FWD; s++) {
        const int B = fwd_sizes[s][0], H = fwd_sizes[s][1];
        sp_tape_reset(t);
        const float ws = 3.0f / sqrtf((float)H);
        float *x = rnd(t, (long)B * 3 * H, -2, 2, 50 + s), *W = rnd(t, (long)H * 3 * H, -ws, ws, 60 + s);
        float *h = rnd(t, (long)B * H, -1, 1, 70 + s), *bias = rnd(t, 3 * H, -1, 1, 80 + s);
        sp_tensor *tx = sp_tensor_view(t, x, NULL, 2, (int[]){B, 3 * H});
        sp_tensor *tW = sp_tensor_view(t, W, NULL, 2, (int[]){H, 3 * H});
        sp_tensor *th = sp_tensor_view(t, h, NULL, 2, (int[]){B, H});
        sp_tensor *tb = sp_tensor_view(t, bias, NULL, 1, (int[]){3 * H});
        double *ho = sp_tape_alloc(t, sizeof(double) * B * H);
        for (int state = 0; state < 2; state++) {
            sp_tensor *hn = sp_gru_cell(t, tx, state ? th : NULL, tW, tb);
            CU_ASSERT_PTR_NOT_NULL_FATAL(hn);
            ref_gru(B, H, x, state ? h : NULL, W, bias, ho);
            SP_ASSERT_CLOSE_ARRAY("gru h'", hn->val, ho, (long)B * H, 2e-6);
        }
    }
    sp_tape_destroy(t);
}

typedef struct gru_case {
    int has_h, two_steps;
} gru_case;

// inputs: xproj (B,3H), W_h (H,3H), b (3H), [h (B,H)]
static sp_tensor *build_gru(sp_tape *t, sp_tensor **in, void *ctx) {
    const gru_case *k = ctx;
    sp_tensor *h = sp_gru_cell(t, in[0], k->has_h ? in[3] : NULL, in[1], in[2]);
    if (k->two_steps) h = sp_gru_cell(t, in[0], h, in[1], in[2]);
    return h;
}

static void test_gru_grad(void) {
    uint64_t seed = 300;
    for (int s = 0; s < N_SIZES; s++) {
        const int B = sizes[s][0], H = sizes[s][1];
        for (int v = 0; v < 3; v++) {
            gru_case k = {v != 1, v == 2};
            sp_gc_input spec[4] = {
                {2, {B, 3 * H}, -2, 2, 1},
                {2, {H, 3 * H}, -1, 1, 1},
                {1, {3 * H}, -1, 1, 1},
                {2, {B, H}, -1, 1, 1},
            };
            SP_ASSERT_GRADCHECK(build_gru, &k, k.has_h ? 4 : 3, spec, seed++, SP_GC_ATOL,
                                SP_GC_RTOL);
        }
    }
}

/* Update gate shut (large negative b_u): h' = h exactly, and dh'/dh = 1. */
static void test_gru_gate_closed(void) {
    const int B = 2, H = 5;
    sp_tape *t = sp_tape_create(1 << 20);
    float x[30], W[75], bias[15], h[10], gh[10] = {0};
    sp_gc_fill_uniform(x, 30, -2, 2, 1);
    sp_gc_fill_uniform(W, 75, -1, 1, 2);
    sp_gc_fill_uniform(bias, 15, -1, 1, 3);
    sp_gc_fill_uniform(h, 10, -1, 1, 4);
    for (int n = 0; n < H; n++) bias[H + n] = -200.0f;
    sp_tensor *tx = sp_tensor_view(t, x, NULL, 2, (int[]){B, 3 * H});
    sp_tensor *tW = sp_tensor_view(t, W, NULL, 2, (int[]){H, 3 * H});
    sp_tensor *tb = sp_tensor_view(t, bias, NULL, 1, (int[]){3 * H});
    sp_tensor *th = sp_tensor_view(t, h, gh, 2, (int[]){B, H});
    sp_tensor *hn = sp_gru_cell(t, tx, th, tW, tb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(hn);
    for (int i = 0; i < B * H; i++) {
        SP_ASSERT_CLOSE(hn->val[i], h[i], 0.0);
        hn->grad[i] = 1.0f;
    }
    sp_tape_backward(t, hn, 0.0f);
    for (int i = 0; i < B * H; i++) SP_ASSERT_CLOSE(gh[i], 1.0, 1e-6);
    sp_tape_destroy(t);
}

int main(void) {
    static const sp_test_case lstm[] = {
        {"forward vs double reference", test_lstm_forward},
        {"gradients (finite differences)", test_lstm_grad},
        {"NULL state equals zero state", test_lstm_null_state},
        {"bad shapes and NULL inputs", test_lstm_bad_input},
        {NULL, NULL},
    };
    static const sp_test_case gru[] = {
        {"forward vs double reference", test_gru_forward},
        {"gradients (finite differences)", test_gru_grad},
        {"closed update gate keeps h", test_gru_gate_closed},
        {NULL, NULL},
    };
    static const sp_test_suite suites[] = {{"lstm", lstm}, {"gru", gru}, {NULL, NULL}};
    return sp_test_main(suites);
}
