/* SPN benchmark (`make bench`): forward and forward+backward median times of
 * SuPAIR's object SPN (N = 768: 256 scenes x 3 slots) and background SPN
 * (N = 1024: 256 scenes x 4 counts) at 1 and 2 threads, with gradients to
 * the parameters, the pixels and the marginalisation weights. The
 * background SPN runs twice: on 1024 independent rows (sp_spn_logp), and as
 * in training on 256 scenes with 4 marginalisations each, made inside the
 * leaf kernels from 3 occluder maps per scene (sp_spn_logp_occluded, "bg
 * x4": gradients to the occluder maps, none to the pixels: the scene is
 * data). GF/s counts the
 * multiply-adds of the algorithm run (sp_spn_flops, sp_spn_flops_multi); next to it the
 * plain cblas_sgemm rate of a square 1024 problem and of the object leaf GEMM
 * shape alone, measured in the same run. Reference point: a PyTorch port
 * spends ~0.16 s per 256-scene step in the object SPN on one core. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "supair/cpu.h"
#include "supair/error.h"
#include "supair/params.h"
#include "supair/rng.h"
#include "supair/spn.h"
#include "supair/tape.h"
#include "supair/timer.h"

#define MIN_REPS 3
#define MAX_REPS 40
#define MIN_TIME 0.6

typedef void (*run_fn)(void *ctx);

/* CPU seconds of the whole process (all threads): on a busy machine the
 * wall time measures the neighbours, this measures our work. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Median wall seconds of fn over at least MIN_REPS calls and MIN_TIME
 * seconds; *cpu (if not NULL) gets the median CPU seconds. */
static double median_time(run_fn fn, void *ctx, double *cpu) {
    double t[MAX_REPS], c[MAX_REPS];
    int n = 0;
    fn(ctx); /* warm-up: arena growth, BLAS buffers */
    double start = sp_time_now();
    while (n < MAX_REPS && (n < MIN_REPS || sp_time_now() - start < MIN_TIME)) {
        double t0 = sp_time_now(), c0 = cpu_now();
        fn(ctx);
        t[n] = sp_time_now() - t0;
        c[n++] = cpu_now() - c0;
    }
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    qsort(c, (size_t)n, sizeof *c, bench_cmp_double);
    if (cpu) *cpu = c[n / 2];
    return t[n / 2];
}

typedef struct gemm_ctx {
    int m, n, k;
    float *a, *b, *c;
} gemm_ctx;

static void run_gemm(void *vctx) {
    gemm_ctx *g = vctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->m, g->n, g->k, 1.0f, g->a, g->k, g->b,
                g->n, 0.0f, g->c, g->n);
}

static double gemm_gflops(int m, int n, int k) {
    gemm_ctx g = {
        m, n, k, malloc((size_t)m * k * 4), malloc((size_t)k * n * 4), malloc((size_t)m * n * 4)};
    sp_rng_fill_uniform(g.a, (long)m * k, -1, 1, 1, 0, 0, 0);
    sp_rng_fill_uniform(g.b, (long)k * n, -1, 1, 2, 0, 0, 0);
    double sec = median_time(run_gemm, &g, NULL);
    free(g.a);
    free(g.b);
    free(g.c);
    return 2.0 * m * n * k / sec * 1e-9;
}

typedef struct spn_bench {
    const char *name;
    sp_spn *s;
    sp_params p;
    sp_tape *t;
    int N, M, backward; /* N results; x has N / M rows, marg N (M = 1) or N / M * (M - 1) */
    float *x, *m, *gx, *gm;
} spn_bench;

static void run_spn(void *vctx) {
    spn_bench *b = vctx;
    sp_tape_reset(b->t);
    sp_tape_set_grad(b->t, b->backward);
    const int D = sp_spn_get_config(b->s)->n_vars;
    sp_tensor *x = sp_tensor_view(b->t, b->x, b->M > 1 ? NULL : b->gx, 2, (int[]){b->N / b->M, D});
    const int mrows = b->M > 1 ? b->N / b->M * (b->M - 1) : b->N;
    sp_tensor *m = sp_tensor_view(b->t, b->m, b->gm, 2, (int[]){mrows, D});
    sp_tensor *y = b->M > 1 ? sp_spn_logp_occluded(b->t, b->s, &b->p, x, m, b->M)
                            : sp_spn_logp(b->t, b->s, &b->p, x, m);
    if (!y) {
        fprintf(stderr, "bench_spn: %s: sp_spn_logp failed (out of memory?)\n", b->name);
        exit(2);
    }
    if (b->backward) {
        for (int n = 0; n < b->N; n++) y->grad[n] = 1.0f;
        sp_tape_backward(b->t, y, 0.0f);
    }
}

static int spn_setup(spn_bench *b, const char *name, sp_spn_config cfg, int N, int M) {
    sp_error err = {0};
    memset(b, 0, sizeof *b);
    b->name = name;
    b->N = N;
    b->M = M;
    sp_params_init(&b->p);
    if (sp_spn_create(&b->s, &cfg, &err) || sp_spn_add_params(b->s, &b->p, name, &err) ||
        sp_params_finalize(&b->p, &err)) {
        fprintf(stderr, "bench_spn: %s\n", err.msg);
        return -1;
    }
    sp_spn_init_params(b->s, &b->p, 1);
    long nd = (long)N * cfg.n_vars;
    b->x = malloc(nd * sizeof(float));
    b->m = malloc(nd * sizeof(float));
    b->gx = calloc(nd, sizeof(float));
    b->gm = calloc(nd, sizeof(float));
    b->t = sp_tape_create(64u << 20);
    if (!b->x || !b->m || !b->gx || !b->gm || !b->t) return -1;
    sp_rng_fill_uniform(b->x, nd, 0, 1, 3, 0, 0, 0);
    /* Marginalisation weights (and occluder scores) as in training: many
     * pixels fully observed or fully marginalised, the rest in between. */
    sp_rng_fill_uniform(b->m, nd, -0.5f, 1.5f, 4, 0, 0, 0);
    return 0;
}

static void spn_teardown(spn_bench *b) {
    sp_tape_destroy(b->t);
    sp_spn_free(b->s);
    sp_params_free(&b->p);
    free(b->x);
    free(b->m);
    free(b->gx);
    free(b->gm);
}

int main(int argc, char **argv) {
    sp_error err = {0};
    sp_blas_ensure_coretype(argc, argv, &err);
    double t_start = sp_time_now();
    enum { NB = 3 };
    spn_bench sb[NB];
    if (spn_setup(&sb[0], "obj", sp_spn_config_object(7), 768, 1) ||
        spn_setup(&sb[1], "bg", sp_spn_config_background(7), 1024, 1) ||
        spn_setup(&sb[2], "bg x4", sp_spn_config_background(7), 1024, 4))
        return 2;
    double load[3] = {0, 0, 0};
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
        fclose(lf);
    }
    printf("OpenBLAS core: %s; load average %.2f (wall times are only meaningful when it is\n"
           "below the core count); GF/s = useful GEMM flops per wall second; cpu ms = CPU\n"
           "time of all threads per call\n",
           sp_blas_corename(), load[0]);
    printf("%-5s %7s %-5s %8s %8s %8s %9s %9s %8s\n", "spn", "threads", "N", "fwd ms", "fwd GF/s",
           "f+b ms", "f+b cpu", "f+b GF/s", "steps/s");
    double gemm_sq[2], gemm_leaf[2];
    for (int ti = 0; ti < 2; ti++) {
        int threads = ti + 1;
        omp_set_num_threads(threads);
        sp_cpu_flush_denormals();
        gemm_sq[ti] = gemm_gflops(1024, 1024, 1024);
        gemm_leaf[ti] = gemm_gflops(768, 20, 588);
        for (int k = 0; k < NB; k++) {
            spn_bench *b = &sb[k];
            const int rows = b->N / b->M;
            double ff = sp_spn_flops_multi(b->s, b->M, 0, 0) * rows;
            double fb = ff + sp_spn_flops_multi(b->s, b->M, 1, b->M == 1) * rows;
            double cb;
            b->backward = 0;
            double tf = median_time(run_spn, b, NULL);
            b->backward = 1;
            double tb = median_time(run_spn, b, &cb);
            printf("%-5s %7d %-5d %8.2f %8.1f %8.2f %9.2f %9.1f %8.1f\n", b->name, threads, b->N,
                   tf * 1e3, ff / tf * 1e-9, tb * 1e3, cb * 1e3, fb / tb * 1e-9, 1.0 / tb);
        }
    }
    for (int ti = 0; ti < 2; ti++)
        printf("cblas_sgemm %d thread%s: 1024^3 %.1f GF/s, leaf shape 768x588x20 %.1f GF/s\n",
               ti + 1, ti ? "s" : " ", gemm_sq[ti], gemm_leaf[ti]);
    printf("total bench time %.1f s\n", sp_time_now() - t_start);
    for (int k = 0; k < NB; k++) spn_teardown(&sb[k]);
    return 0;
}
