/* SRNN training-step benchmark (`make bench`): forward + backward + Adam on
 * 40-frame chunks of random "speech" at TIMIT sizes (d = a = 1024, z = 256,
 * MLP 512, 64 streams) and Blizzard sizes (d = a = 2048, MLP 1024; fewer
 * streams than the paper's 128 so the table stays within its time budget),
 * at 1 and 2 threads. Prints frames/s, the time split forward / backward /
 * Adam, and the achieved GFLOP/s of the model's matrix products next to a
 * plain cblas_sgemm measured in the same run (shape 1536 x 3072 x 1024, like
 * the model's own), each per wall second and per CPU second of each thread
 * (the [cpu] columns: on a shared, busy machine the wall clock also counts
 * other jobs' time; the ratio "of it" compares CPU-second rates).
 * Reference point: a PyTorch implementation runs 979 frames/s per core at
 * TIMIT sizes (target: 1.5x that).
 * Options: --steps N (timed steps per row, default 1, after a warm-up
 * forward), --timit-batch N (64), --blizzard-batch N (16). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "supair/config.h"
#include "supair/cpu.h"
#include "supair/optim.h"
#include "supair/rng.h"
#include "supair/srnn.h"
#include "supair/timer.h"
#include "supair/train.h"

#define F 200
#define T 40

/* OpenBLAS's own thread count (the pthreads build ignores OpenMP's). */
void openblas_set_num_threads(int n);

/* CPU seconds of the whole process: on a shared machine the wall clock also
 * counts the time other jobs hold the cores; per-thread CPU time does not. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* sgemm rate per wall second and per CPU second (per thread: CPU time / threads). */
static void gemm_gflops(int M, int N, int K, int threads, double *wall, double *cpu) {
    float *a = malloc((size_t)M * K * sizeof(float)), *b = malloc((size_t)K * N * sizeof(float));
    float *c = malloc((size_t)M * N * sizeof(float));
    sp_rng_fill_uniform(a, (long)M * K, -1, 1, 1, 0, 0, 0);
    sp_rng_fill_uniform(b, (long)K * N, -1, 1, 1, 0, 0, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double best = 1e30, bestc = 1e30;
    for (int r = 0; r < 2; r++) {
        double t0 = sp_time_now(), c0 = cpu_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c,
                    N);
        double dt = sp_time_now() - t0, dc = (cpu_now() - c0) / threads;
        if (dt < best) best = dt;
        if (dc < bestc) bestc = dc;
    }
    free(a), free(b), free(c);
    *wall = 2.0 * M * N * K / best / 1e9;
    *cpu = 2.0 * M * N * K / bestc / 1e9;
}

/* Matrix-product FLOPs of one training step per frame: forward MACs, the
 * backward's two products per forward one (minus the input gradient of the
 * first embedding layer, which nothing needs). */
static double step_flops_per_frame(long D, long A, long Z, long M, int smooth) {
    double emb = (double)(T + 1) / T * (F * M + M * M);
    double fwd = emb + M * 3 * D + D * 3 * D;
    fwd += smooth ? (D + M) * 3 * A + A * 3 * A : (D + M) * A + A * A;
    fwd += D * 2 * M + A * 2 * M + Z * 4 * M + 4 * M * Z;
    fwd += (D + Z) * M + M * M + M * 2 * F;
    return 2.0 * (3.0 * fwd - (double)(T + 1) / T * F * M);
}

typedef struct result {
    double fps, fps_cpu, fwd, bwd, adam, gflops, gflops_cpu;
} result;

static int run(const char *sizes, int B, int steps, int threads, result *res, sp_error *err) {
    const sp_model_vtable *v = sp_model_find("srnn");
    sp_config *cfg = sp_config_new();
    int rc = sp_config_declare(cfg, sp_train_keys, sp_train_n_keys, err);
    if (!rc) rc = sp_config_declare(cfg, v->keys, v->n_keys, err);
    if (!rc) rc = sp_config_load_text(cfg, v->shared_defaults, "defaults", err);
    if (!rc) rc = sp_config_load_text(cfg, sizes, "bench", err);
    if (rc) return rc;
    sp_params p;
    sp_params_init(&p);
    void *m = NULL;
    if ((rc = v->create(&m, cfg, &p, err)) || (rc = sp_params_finalize(&p, err))) return rc;
    // speed does not depend on the values: a cheap uniform init instead of
    // the orthogonal one (a QR per gate block at these sizes takes seconds)
    sp_rng_fill_uniform(p.val, p.total, -0.02f, 0.02f, 1, 0, 0, 3);
    float *x = malloc((size_t)B * T * F * sizeof(float)), *u0 = malloc((size_t)B * F * sizeof(float));
    sp_rng_fill_normal(x, (long)B * T * F, 0, 1, 2, 0, 0, 0);
    sp_rng_fill_normal(u0, (long)B * F, 0, 1, 2, 0, 0, 1);
    int64_t *idx = malloc((size_t)B * sizeof(int64_t));
    for (int i = 0; i < B; i++) idx[i] = i;
    if ((rc = v->state_alloc(m, B, err))) return rc;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    sp_cpu_flush_denormals();
    sp_tape *t = sp_tape_create((size_t)256 << 20);
    sp_adam adam;
    sp_adam_init(&adam, SP_ADAM_LASAGNE, 1e-3f);
    memset(res, 0, sizeof *res);
    double cpu = 0.0;
    // step 0 warms up (arena growth, page faults): a forward pass is enough,
    // the backward allocates nothing
    for (int s = 0; s <= steps; s++) {
        sp_batch b = {0};
        b.n = B, b.global_n = B, b.index = idx, b.x = x, b.step = s, b.seed = 1;
        b.seq_len = T, b.frame = F, b.u0 = u0, b.reset_state = s == 0;
        double t0 = sp_time_now(), c0 = cpu_now();
        sp_tape_reset(t);
        sp_params_zero_grad(&p);
        double terms[3];
        sp_tensor *loss = v->loss(m, t, &p, &b, terms, err);
        if (!loss) return err->code ? err->code : SP_ERUNTIME;
        double t1 = sp_time_now();
        if (s == 0) continue;
        sp_tape_backward(t, loss, 1.0f);
        double t2 = sp_time_now();
        sp_grad_scale(&p, 1.0f / B);
        sp_clip_global_norm(&p, 3000);
        sp_clip_elementwise(&p, 1000);
        sp_adam_step(&p, &adam, -1.0f);
        double t3 = sp_time_now();
        cpu += (cpu_now() - c0) / threads;
        res->fwd += t1 - t0, res->bwd += t2 - t1, res->adam += t3 - t2;
    }
    double per = (res->fwd + res->bwd + res->adam) / steps;
    res->fwd /= steps, res->bwd /= steps, res->adam /= steps;
    res->fps = (double)B * T / per;
    res->fps_cpu = (double)B * T * steps / cpu;
    sp_srnn_model.destroy(m);
    long D = sp_config_int(cfg, "srnn.d"), A = sp_config_int(cfg, "srnn.a");
    long Z = sp_config_int(cfg, "srnn.z"), M = sp_config_int(cfg, "srnn.mlp");
    res->gflops = step_flops_per_frame(D, A, Z, M, 1) * res->fps / 1e9;
    res->gflops_cpu = step_flops_per_frame(D, A, Z, M, 1) * res->fps_cpu / 1e9;
    sp_tape_destroy(t);
    sp_params_free(&p);
    sp_config_free(cfg);
    free(x), free(u0), free(idx);
    return SP_OK;
}

int main(int argc, char **argv) {
    sp_error err = {0};
    sp_blas_ensure_coretype(argc, argv, &err);
    int steps = 1, bt = 64, bb = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timit-batch") && i + 1 < argc) bt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--blizzard-batch") && i + 1 < argc) bb = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_srnn [--steps N] [--timit-batch N] [--blizzard-batch N]\n");
            return 1;
        }
    }
    if (steps < 1 || bt < 1 || bb < 1) {
        fprintf(stderr, "bench_srnn: --steps and batches must be >= 1\n");
        return 1;
    }
    printf("SRNN training step (smooth + Resq; fwd + bwd + clip + Adam), %d-frame chunks; "
           "BLAS core %s\n", T, sp_blas_corename());
    printf("Rates per wall second; [cpu]: per CPU second of each thread, which a busy shared "
           "machine does not distort.\n");
    printf("%-9s %5s %3s %9s %11s %7s %7s %7s %8s %8s %11s %11s %5s\n", "sizes", "batch", "thr",
           "frames/s", "[cpu] fr/s", "fwd ms", "bwd ms", "adam ms", "GFLOP/s", "sgemm",
           "[cpu] GF/s", "[cpu] sgemm", "of it");
    const struct {
        const char *name, *cfg;
        int batch;
    } rows[2] = {{"TIMIT", "srnn.d=1024\nsrnn.a=1024\nsrnn.z=256\nsrnn.mlp=512\n", bt},
                 {"Blizzard", "srnn.d=2048\nsrnn.a=2048\nsrnn.z=256\nsrnn.mlp=1024\n", bb}};
    for (int r = 0; r < 2; r++)
        for (int th = 1; th <= 2; th++) {
            omp_set_num_threads(th);
            openblas_set_num_threads(th);
            double sg, sgc;
            gemm_gflops(1536, 3072, 1024, th, &sg, &sgc);
            result res;
            if (run(rows[r].cfg, rows[r].batch, steps, th, &res, &err)) {
                fprintf(stderr, "bench_srnn: %s\n", err.msg);
                return 2;
            }
            printf("%-9s %5d %3d %9.0f %11.0f %7.0f %7.0f %7.1f %8.1f %8.1f %11.1f %11.1f %4.0f%%\n",
                   rows[r].name, rows[r].batch, th, res.fps, res.fps_cpu, 1e3 * res.fwd,
                   1e3 * res.bwd, 1e3 * res.adam, res.gflops, sg, res.gflops_cpu, sgc,
                   100.0 * res.gflops_cpu / sgc);
            fflush(stdout);
        }
    return 0;
}
