/* Op benchmark (`make bench`): forward+backward median times of the model's
 * hot ops at the models' sizes, at 1 and 2 threads, next to the plain
 * OpenBLAS sgemm rate on a square 1024 problem measured in the same run, so a
 * slow op shows up as a low fraction of what the BLAS reaches here.
 *
 * Op sections appear as their headers do (__has_include): the sgemm baseline
 * always builds. Rates: GF/s counts only the matrix-product flops of an op
 * (fwd 2MKN, fwd+bwd 6MKN); memory-bound ops report GB/s of the buffers they
 * stream, the transformer millions of grid points per second, elementwise
 * ops millions of elements per second. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "supair/cpu.h"
#include "supair/error.h"
#include "supair/optim.h"
#include "supair/params.h"
#include "supair/tape.h"
#include "supair/timer.h"

#if __has_include("supair/ops.h")
#include "supair/ops.h"
#define HAVE_OPS 1
#endif
#if __has_include("supair/rnn.h")
#include "supair/rnn.h"
#define HAVE_RNN 1
#endif
#if __has_include("supair/stn.h")
#include "supair/stn.h"
#define HAVE_STN 1
#endif

/* Each measurement runs at least MIN_REPS times and at least MIN_TIME s
 * (after one warm-up call), capped at MAX_REPS: ~0.2 s per op and thread
 * count keeps the whole table at ~15 s on an idle machine. */
#define MIN_REPS 3
#define MAX_REPS 50
#define MIN_TIME 0.15

enum unit { U_GFLOPS, U_GBS, U_MPTS, U_MELEM };

typedef struct bench_op {
    const char *name;
    char shape[64];
    double work;     /* per call: flops, bytes or points, per `unit` */
    enum unit unit;
    void (*run)(struct bench_op *op);
    void *ctx;
    double sec[2];   /* median seconds at 1 and 2 threads */
} bench_op;

static double measure(bench_op *op) {
    double t[MAX_REPS];
    int n = 0;
    op->run(op); /* warm-up: first-touch pages, arena growth, BLAS buffers */
    double start = sp_time_now();
    while (n < MAX_REPS && (n < MIN_REPS || sp_time_now() - start < MIN_TIME)) {
        double t0 = sp_time_now();
        op->run(op);
        t[n++] = sp_time_now() - t0;
    }
    return bench_median(t, n);
}

static float *frand(long n, float scale, unsigned seed) {
    float *x = malloc((size_t)n * sizeof *x);
    if (!x) {
        fprintf(stderr, "bench_ops: out of memory (%ld floats)\n", n);
        exit(2);
    }
    srand(seed);
    for (long i = 0; i < n; i++) x[i] = scale * ((float)rand() / (float)RAND_MAX - 0.5f);
    return x;
}

/* ---- plain sgemm ---- */

typedef struct { int m, k, n; float *a, *b, *c, *da, *db, *dc; } gemm_ctx;

static void run_sgemm(bench_op *op) {
    gemm_ctx *g = op->ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->m, g->n, g->k, 1.0f, g->a, g->k,
                g->b, g->n, 0.0f, g->c, g->n);
}

/* What a linear layer's forward+backward costs in BLAS calls:
 * Y = X W; dX = dY W^T; dW += X^T dY. */
static void run_linear_sgemm(bench_op *op) {
    gemm_ctx *g = op->ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->m, g->n, g->k, 1.0f, g->a, g->k,
                g->b, g->n, 0.0f, g->c, g->n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, g->k, g->n, 1.0f, g->dc, g->n,
                g->b, g->n, 0.0f, g->da, g->k);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->k, g->n, g->m, 1.0f, g->a, g->k,
                g->dc, g->n, 1.0f, g->db, g->n);
}

static gemm_ctx *gemm_new(int m, int k, int n) {
    gemm_ctx *g = calloc(1, sizeof *g);
    *g = (gemm_ctx){m, k, n, frand((long)m * k, 1, 1), frand((long)k * n, 1, 2),
                    frand((long)m * n, 1, 3), frand((long)m * k, 1, 4), frand((long)k * n, 1, 5),
                    frand((long)m * n, 1, 6)};
    return g;
}

static void gemm_free(gemm_ctx *g) {
    free(g->a), free(g->b), free(g->c), free(g->da), free(g->db), free(g->dc), free(g);
}

/* ---- tape ops: inputs are persistent buffers viewed into a fresh tape
 * every call; backward is driven by a dummy scalar after the output
 * gradients are seeded directly. ---- */

static sp_tape *tape;

static sp_tensor *view(float *val, float *grad, int ndim, const int *shape) {
    return sp_tensor_view(tape, val, grad, ndim, shape);
}

static void seed_and_backward(sp_tensor **outs, int n_outs) {
    for (int i = 0; i < n_outs; i++)
        if (outs[i] && outs[i]->grad)
            for (long j = 0; j < outs[i]->size; j++) outs[i]->grad[j] = 1e-3f;
    sp_tensor *dummy = sp_tensor_1d(tape, 1, 1);
    sp_tape_backward(tape, dummy, 1.0f);
    if (sp_tape_failed(tape)) {
        fprintf(stderr, "bench_ops: an op failed (tape failed flag set)\n");
        exit(2);
    }
}

#ifdef HAVE_OPS
/* sp_linear: the same three products as run_linear_sgemm, through the tape. */
typedef struct { int m, k, n; float *x, *dx, *w, *dw, *b, *db; } lin_ctx;

static lin_ctx *lin_new(int m, int k, int n) {
    lin_ctx *l = calloc(1, sizeof *l);
    *l = (lin_ctx){m, k, n, frand((long)m * k, 1, 21), frand((long)m * k, 0, 21),
                   frand((long)k * n, 0.1f, 22), frand((long)k * n, 0, 22), frand(n, 0.1f, 23),
                   frand(n, 0, 23)};
    return l;
}

static void lin_free(lin_ctx *l) {
    free(l->x), free(l->dx), free(l->w), free(l->dw), free(l->b), free(l->db), free(l);
}

static void run_linear(bench_op *op) {
    lin_ctx *l = op->ctx;
    sp_tape_reset(tape);
    sp_tensor *x = view(l->x, l->dx, 2, (int[]){l->m, l->k});
    sp_tensor *w = view(l->w, l->dw, 2, (int[]){l->k, l->n});
    sp_tensor *b = view(l->b, l->db, 1, (int[]){l->n});
    sp_tensor *y = sp_linear(tape, x, w, b);
    seed_and_backward(&y, 1);
}

/* Elementwise ops on (rows, cols) inputs with gradients. */
typedef struct { int rows, cols, which; float *a, *da, *b, *db, *c, *dc; } ew_ctx;
enum { EW_TANH, EW_SIGMOID, EW_CLIPPED_LEAKY, EW_ADD_BIAS, EW_GAUSS_LOGPDF, EW_KL };

static ew_ctx *ew_new(int rows, int cols, int which) {
    ew_ctx *e = calloc(1, sizeof *e);
    long n = (long)rows * cols;
    *e = (ew_ctx){rows, cols, which, frand(n, 4, 31), frand(n, 0, 31), frand(n, 1, 32),
                  frand(n, 0, 32), frand(n, 1, 33), frand(n, 0, 33)};
    return e;
}

static void ew_free(ew_ctx *e) {
    free(e->a), free(e->da), free(e->b), free(e->db), free(e->c), free(e->dc), free(e);
}

static void run_ew(bench_op *op) {
    ew_ctx *e = op->ctx;
    sp_tape_reset(tape);
    int sh[2] = {e->rows, e->cols};
    sp_tensor *a = view(e->a, e->da, 2, sh), *b = view(e->b, e->db, 2, sh);
    sp_tensor *c = view(e->c, e->dc, 2, sh), *y = NULL;
    switch (e->which) {
    case EW_TANH: y = sp_tanh(tape, a); break;
    case EW_SIGMOID: y = sp_sigmoid(tape, a); break;
    case EW_CLIPPED_LEAKY: y = sp_clipped_leaky(tape, a); break;
    case EW_ADD_BIAS: y = sp_add(tape, a, view(e->b, e->db, 1, (int[]){e->cols})); break;
    case EW_GAUSS_LOGPDF: y = sp_gauss_logpdf(tape, a, b, c); break;
    case EW_KL: y = sp_kl_diag_gauss(tape, a, b, c, view(e->c, e->dc, 2, sh)); break;
    }
    seed_and_backward(&y, 1);
}
#endif

#ifdef HAVE_RNN
typedef struct { int B, H; float *x, *dx, *h, *dh, *c, *dc, *w, *dw, *b, *db; } rnn_ctx;

static rnn_ctx *rnn_new(int B, int H, int gates) {
    rnn_ctx *r = calloc(1, sizeof *r);
    long G = (long)gates * H;
    *r = (rnn_ctx){B, H, frand(B * G, 1, 7), frand(B * G, 0, 7), frand((long)B * H, 1, 8),
                   frand((long)B * H, 0, 8), frand((long)B * H, 1, 9), frand((long)B * H, 0, 9),
                   frand(H * G, 0.1f, 10), frand(H * G, 0, 10), frand(G, 0.1f, 11),
                   frand(G, 0, 11)};
    return r;
}

static void rnn_free(rnn_ctx *r) {
    free(r->x), free(r->dx), free(r->h), free(r->dh), free(r->c), free(r->dc), free(r->w);
    free(r->dw), free(r->b), free(r->db), free(r);
}

static void run_lstm(bench_op *op) {
    rnn_ctx *r = op->ctx;
    int B = r->B, H = r->H;
    sp_tape_reset(tape);
    sp_tensor *x = view(r->x, r->dx, 2, (int[]){B, 4 * H});
    sp_tensor *h = view(r->h, r->dh, 2, (int[]){B, H});
    sp_tensor *c = view(r->c, r->dc, 2, (int[]){B, H});
    sp_tensor *w = view(r->w, r->dw, 2, (int[]){H, 4 * H});
    sp_tensor *out[2];
    sp_lstm_cell(tape, x, h, c, w, 1.0f, &out[0], &out[1]);
    seed_and_backward(out, 2);
}

static void run_gru(bench_op *op) {
    rnn_ctx *r = op->ctx;
    int B = r->B, H = r->H;
    sp_tape_reset(tape);
    sp_tensor *x = view(r->x, r->dx, 2, (int[]){B, 3 * H});
    sp_tensor *h = view(r->h, r->dh, 2, (int[]){B, H});
    sp_tensor *w = view(r->w, r->dw, 2, (int[]){H, 3 * H});
    sp_tensor *b = view(r->b, r->db, 1, (int[]){3 * H});
    sp_tensor *out = sp_gru_cell(tape, x, h, w, b);
    seed_and_backward(&out, 1);
}
#endif

#ifdef HAVE_STN
/* SuPAIR at batch 256: 3 glimpses of 28x28 from each 50x50 scene, and the
 * score maps scattered back onto the scene. */
typedef struct { int Bi, K, H, W, o; float *img, *dimg, *th, *dth, *ones; } stn_ctx;

static stn_ctx *stn_new(int Bi, int K, int H, int W, int o) {
    stn_ctx *s = calloc(1, sizeof *s);
    long B = (long)Bi * K;
    *s = (stn_ctx){Bi, K, H, W, o, frand((long)Bi * H * W, 2, 12), frand((long)Bi * H * W, 0, 12),
                   frand(B * 6, 0, 13), frand(B * 6, 0, 13), frand(B * o * o, 0, 14)};
    srand(15);
    for (long b = 0; b < B; b++) { /* boxes of 17..34 px anywhere in the scene */
        float sc = 0.6f + 0.6f * (float)rand() / (float)RAND_MAX;
        float *t = s->th + 6 * b;
        t[0] = sc, t[1] = 0, t[2] = (float)(rand() % 30);
        t[3] = 0, t[4] = sc, t[5] = (float)(rand() % 30);
    }
    for (long i = 0; i < B * o * o; i++) s->ones[i] = 1.0f;
    return s;
}

static void stn_free(stn_ctx *s) {
    free(s->img), free(s->dimg), free(s->th), free(s->dth), free(s->ones), free(s);
}

static void run_stn(bench_op *op) {
    stn_ctx *s = op->ctx;
    int B = s->Bi * s->K;
    sp_tape_reset(tape);
    sp_tensor *img = view(s->img, s->dimg, 3, (int[]){s->Bi, s->H, s->W});
    sp_tensor *th = view(s->th, s->dth, 2, (int[]){B, 6});
    sp_tensor *ones = view(s->ones, NULL, 3, (int[]){B, s->o, s->o});
    sp_tensor *out[2];
    out[0] = sp_stn_sample(tape, img, th, s->o, s->o, (float)s->o, (float)s->o);
    out[1] = sp_stn_scatter(tape, ones, th, s->H, s->W, (float)s->o, (float)s->o);
    seed_and_backward(out, 2);
}
#endif

/* ---- optimizer (element-wise over the whole flat buffer) ---- */

static void run_adam(bench_op *op) {
    sp_adam a;
    sp_adam_init(&a, SP_ADAM_LASAGNE, 1e-3f);
    sp_adam_step(op->ctx, &a, -1.0f);
}

static void run_clip(bench_op *op) {
    sp_params *p = op->ctx;
    sp_clip_global_norm(p, 3000.0);
    sp_clip_elementwise(p, 1000.0f);
    if (!sp_grad_all_finite(p)) fprintf(stderr, "bench_ops: non-finite gradient\n");
}

static void set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    sp_cpu_flush_denormals();
}

static const char *rate(char *buf, size_t len, const bench_op *op, double sec) {
    static const char *units[] = {"GF/s", "GB/s", "Mpt/s", "Mel/s"};
    double r = op->unit >= U_MPTS ? op->work / sec * 1e-6 : op->work / sec * 1e-9;
    snprintf(buf, len, "%8.1f %-5s", r, units[op->unit]);
    return buf;
}

int main(int argc, char **argv) {
    sp_error err = {0};
    if (sp_blas_ensure_coretype(argc, argv, &err) != SP_OK) {
        fprintf(stderr, "bench_ops: %s\n", err.msg);
        return 2;
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_ops: OpenBLAS core %s (OPENBLAS_CORETYPE=%s), %d OpenMP threads max, "
           "OMP_WAIT_POLICY=%s\n",
           openblas_get_corename(), ct ? ct : "unset", omp_get_max_threads(),
           getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "unset");

    tape = sp_tape_create((size_t)64 << 20);
    if (!tape) {
        fprintf(stderr, "bench_ops: cannot create the tape\n");
        return 2;
    }

    bench_op ops[32]; /* 21 with every op header present */
    int n = 0;
#define ADD(nm, w, u, fn, c, ...)                                           \
    do {                                                                   \
        ops[n] = (bench_op){.name = nm, .work = (w), .unit = u, .run = fn, .ctx = c}; \
        snprintf(ops[n].shape, sizeof ops[n].shape, __VA_ARGS__);          \
        n++;                                                               \
    } while (0)

    gemm_ctx *sq = gemm_new(1024, 1024, 1024);
    ADD("sgemm (baseline)", 2.0 * 1024 * 1024 * 1024, U_GFLOPS, run_sgemm, sq, "1024^3");
    /* Linear layers at the models' sizes, as the three sgemms of fwd+bwd.
     * SRNN GRU x: the input projection of 10 steps of 64 streams at once
     * (a whole 40-step chunk is 4x this, at the same rate). */
    static const struct { const char *what; int m, k, n; } lin[] = {
        {"linear sgemm f+b: SuPAIR LSTM in", 256, 2500, 1024},
        {"linear sgemm f+b: SRNN GRU h", 64, 1024, 3072},
        {"linear sgemm f+b: SRNN GRU x", 640, 512, 3072},
        {"linear sgemm f+b: SRNN MLP", 2560, 200, 512},
    };
    gemm_ctx *lg[4];
    for (int i = 0; i < 4; i++) {
        lg[i] = gemm_new(lin[i].m, lin[i].k, lin[i].n);
        ADD(lin[i].what, 6.0 * lin[i].m * lin[i].k * lin[i].n, U_GFLOPS, run_linear_sgemm, lg[i],
            "(%d,%d)x(%d,%d)", lin[i].m, lin[i].k, lin[i].k, lin[i].n);
    }
#ifdef HAVE_OPS
    lin_ctx *ll[4];
    static const char *lin_names[4] = {"sp_linear f+b: SuPAIR LSTM in", "sp_linear f+b: SRNN GRU h",
                                       "sp_linear f+b: SRNN GRU x", "sp_linear f+b: SRNN MLP"};
    for (int i = 0; i < 4; i++) {
        ll[i] = lin_new(lin[i].m, lin[i].k, lin[i].n);
        ADD(lin_names[i], 6.0 * lin[i].m * lin[i].k * lin[i].n, U_GFLOPS, run_linear, ll[i],
            "(%d,%d)x(%d,%d)+b", lin[i].m, lin[i].k, lin[i].k, lin[i].n);
    }
    /* SRNN activations and ELBO terms over 10 steps of 64 streams. */
    static const struct { const char *what; int rows, cols, which; } ew[] = {
        {"sp_tanh f+b", 640, 1024, EW_TANH},
        {"sp_sigmoid f+b", 640, 1024, EW_SIGMOID},
        {"sp_clipped_leaky f+b", 640, 512, EW_CLIPPED_LEAKY},
        {"sp_add bias broadcast f+b", 640, 512, EW_ADD_BIAS},
        {"sp_gauss_logpdf f+b", 640, 200, EW_GAUSS_LOGPDF},
        {"sp_kl_diag_gauss f+b", 640, 256, EW_KL},
    };
    ew_ctx *ec[6];
    for (int i = 0; i < 6; i++) {
        ec[i] = ew_new(ew[i].rows, ew[i].cols, ew[i].which);
        ADD(ew[i].what, (double)ew[i].rows * ew[i].cols, U_MELEM, run_ew, ec[i], "(%d,%d)",
            ew[i].rows, ew[i].cols);
    }
#endif
#ifdef HAVE_RNN
    rnn_ctx *lstm = rnn_new(256, 256, 4), *gru = rnn_new(64, 1024, 3),
            *gru2 = rnn_new(128, 2048, 3);
    ADD("lstm cell f+b (SuPAIR)", 6.0 * 256 * 256 * 1024, U_GFLOPS, run_lstm, lstm,
        "B=256 H=256");
    ADD("gru cell f+b (SRNN TIMIT)", 6.0 * 64 * 1024 * 3072, U_GFLOPS, run_gru, gru,
        "B=64 H=1024");
    ADD("gru cell f+b (SRNN Blizzard)", 6.0 * 128 * 2048 * 6144, U_GFLOPS, run_gru, gru2,
        "B=128 H=2048");
#endif
#ifdef HAVE_STN
    stn_ctx *stn = stn_new(256, 3, 50, 50, 28);
    ADD("stn sample+scatter f+b", 2.0 * 768 * 28 * 28, U_MPTS, run_stn, stn,
        "256x50^2 -> 768x28^2 -> 768x50^2");
#endif
    /* SRNN TIMIT's 17.2M parameters. */
    sp_params big;
    sp_params_init(&big);
    if (sp_params_add(&big, "all", 1, (int[]){17200000}, &err) < 0 ||
        sp_params_finalize(&big, &err) != SP_OK) {
        fprintf(stderr, "bench_ops: %s\n", err.msg);
        return 2;
    }
    for (long i = 0; i < big.total; i++) big.grad[i] = 1e-3f * (float)(i % 101 - 50);
    /* Adam reads p, g, m, v and writes p, m, v; clipping reads g three times
     * (norm, element-wise, finiteness) and writes it once. */
    ADD("adam step (lasagne form)", 28.0 * big.total, U_GBS, run_adam, &big, "17.2M params");
    ADD("clip norm+elementwise+finite", 16.0 * big.total, U_GBS, run_clip, &big,
        "17.2M params");

    for (int th = 0; th < 2; th++) {
        set_threads(th + 1);
        for (int i = 0; i < n; i++) ops[i].sec[th] = measure(&ops[i]);
    }
    set_threads(2);

    printf("\n%-34s %-34s %10s %14s %10s %14s %7s %10s\n", "op (forward+backward)", "shape",
           "1T ms", "1T rate", "2T ms", "2T rate", "2T/1T", "%sgemm1/2T");
    char r1[32], r2[32];
    for (int i = 0; i < n; i++) {
        bench_op *op = &ops[i];
        char pct[16] = "-";
        if (op->unit == U_GFLOPS)
            snprintf(pct, sizeof pct, "%.0f/%.0f%%",
                     100.0 * (op->work / op->sec[0]) / (ops[0].work / ops[0].sec[0]),
                     100.0 * (op->work / op->sec[1]) / (ops[0].work / ops[0].sec[1]));
        printf("%-34s %-34s %10.3f %14s %10.3f %14s %6.2fx %10s\n", op->name, op->shape,
               1e3 * op->sec[0], rate(r1, sizeof r1, op, op->sec[0]), 1e3 * op->sec[1],
               rate(r2, sizeof r2, op, op->sec[1]), op->sec[0] / op->sec[1], pct);
    }
    printf("(%%sgemm: rate as a fraction of the 1024^3 sgemm at the same thread count; GF/s "
           "counts matmul flops only)\n");

    gemm_free(sq);
    for (int i = 0; i < 4; i++) gemm_free(lg[i]);
#ifdef HAVE_OPS
    for (int i = 0; i < 4; i++) lin_free(ll[i]);
    for (int i = 0; i < 6; i++) ew_free(ec[i]);
#endif
#ifdef HAVE_RNN
    rnn_free(lstm), rnn_free(gru), rnn_free(gru2);
#endif
#ifdef HAVE_STN
    stn_free(stn);
#endif
    sp_params_free(&big);
    sp_tape_destroy(tape);
    return 0;
}
