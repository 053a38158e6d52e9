/* SuPAIR training-step benchmark (`make bench`): one forward+backward pass of
 * the paper model (MODELS.md) on 256 random scenes, at 1 and 2 threads.
 * Prints scenes/s, the time per component (LSTM with its input projection and
 * head, SPNs, spatial transformer, the rest: occlusion, ELBO, copies), forward
 * and backward apart, and the achieved GFLOP/s of the model's GEMM-shaped work
 * next to a plain cblas_sgemm measured in the same run. The thread counts
 * take turns step by step, and the scaling is printed next to what the
 * machine gives at the same counts in the same rounds: a register-only FMA
 * loop (the cores' compute), a 1024^3 sgemm split over the team and one
 * single-threaded sgemm per thread at once (split work against independent
 * work), a STREAM triad (memory), and the hypervisor's steal time.
 * Reference point: a faithful PyTorch port runs ~470 scenes/s per core. */
#include <cblas.h>
#if defined(__FMA__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "supair/config.h"
#include "supair/cpu.h"
#include "supair/idx.h"
#include "supair/rng.h"
#include "supair/scenes.h"
#include "supair/sparse.h"
#include "supair/spn.h"
#include "supair/supair.h"
#include "supair/timer.h"
#include "supair/train.h"

#define B 256
#define MAX_STEPS 64

static const char *comp_names[SP_SUPAIR_T_N] = {"LSTM+head", "SPNs", "STN", "rest"};

/* One n^3 sgemm at the current thread count (the OpenMP OpenBLAS shares our
 * team), its operands already in cache from the previous round. */
static double sgemm_seconds(const float *a, const float *b, float *c, int n) {
    double t0 = sp_time_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return sp_time_now() - t0;
}

/* GFLOP/s of the best of 5 n^3 sgemms on a, b (n x n each) into c, after a
 * warm-up call, at the current thread count. */
static double gemm_gflops(const float *a, const float *b, float *c, int n) {
    sgemm_seconds(a, b, c, n);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double dt = sgemm_seconds(a, b, c, n);
        if (dt < best) best = dt;
    }
    return 2.0 * n * n * n / best / 1e9;
}

/* Per-round references, run right after each step at the same thread
 * count so that both see the same machine. */

/* n iterations of 10 independent 8-wide FMA chains, split over the team:
 * no memory traffic at all, so its 1 -> 2 thread ratio is what the two
 * vCPUs give in compute (a shared or throttled core shows here). */
static double fma_seconds(long n) {
    float sink = 0.0f;
    double t0 = sp_time_now();
#pragma omp parallel reduction(+ : sink)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const long m = n * (t + 1) / nt - n * t / nt;
#if defined(__FMA__)
        __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
               a7 = a0, a8 = a0, a9 = a0;
        const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
        for (long k = 0; k < m; k++) {
            a0 = _mm256_fmadd_ps(a0, b, c), a1 = _mm256_fmadd_ps(a1, b, c);
            a2 = _mm256_fmadd_ps(a2, b, c), a3 = _mm256_fmadd_ps(a3, b, c);
            a4 = _mm256_fmadd_ps(a4, b, c), a5 = _mm256_fmadd_ps(a5, b, c);
            a6 = _mm256_fmadd_ps(a6, b, c), a7 = _mm256_fmadd_ps(a7, b, c);
            a8 = _mm256_fmadd_ps(a8, b, c), a9 = _mm256_fmadd_ps(a9, b, c);
        }
        __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                 _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
        s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
        float v[8];
        _mm256_storeu_ps(v, s);
        sink += v[0];
#else
        float a[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
        for (long k = 0; k < 8 * m; k++)
            for (int i = 0; i < 10; i++) a[i] = a[i] * 0.999999f + 1e-7f;
        sink += a[0] + a[9];
#endif
    }
    double dt = sp_time_now() - t0;
    volatile float keep = sink; /* the loop's result is used */
    (void)keep;
    return dt;
}

/* One n^3 sgemm per thread of the team at once, each single-threaded (the
 * OpenMP OpenBLAS runs one thread inside a parallel region) into its own c:
 * independent work, so the throughput ratio shows what the machine gives
 * two streams that never wait for each other, next to one sgemm split over
 * the team. */
static double indep_sgemm_seconds(const float *a, const float *b, float *c, int n) {
    double t0 = sp_time_now();
#pragma omp parallel
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                c + (size_t)omp_get_thread_num() * n * n, n);
    return sp_time_now() - t0;
}

/* Steal time of all CPUs so far in seconds (the 8th field of /proc/stat's
 * "cpu" line: time the hypervisor ran something else while our vCPUs had
 * work), or -1 where the file or field is missing. */
static double steal_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1.0;
    unsigned long long v[8] = {0};
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    return got == 8 ? (double)v[7] / 100.0 : -1.0; /* USER_HZ = 100 on Linux */
}

/* STREAM triad a = b + s c over 3 x 32 MB (far beyond the L3), best of 5,
 * at the current OpenMP thread count: the memory bandwidth this machine
 * gives now. */
static double triad_gbs(void) {
    const long n = 8L << 20;
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    float *c = malloc((size_t)n * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0.0;
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = sp_time_now();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + 1.5f * c[i];
        double dt = sp_time_now() - t0;
        if (dt < best) best = dt;
    }
    free(a), free(b), free(c);
    return 3.0 * n * sizeof(float) / best / 1e9;
}

static double min_of(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

static double max_of(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* CPU seconds of the whole process: on a busy machine the wall time also
 * measures the neighbours, this measures our work. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Median of v[0..n) (n <= MAX_STEPS), v left as it is. */
static double median(const double *v, int n) {
    double w[MAX_STEPS];
    memcpy(w, v, (size_t)n * sizeof *w);
    return bench_median(w, n);
}

/* The benchmark's batch: the default training scenes (multi-object
 * Fashion-MNIST, MODELS.md) made in memory with the data generator from
 * Debian's dataset-fashion-mnist, as `supair_data scenes` would. Their
 * density matters: ~89% of pixels are exactly 0, which the sparse input
 * projection uses. Without the dataset: squares on a black background with
 * about the same density, and a note saying so. Returns the source's name. */
static const char *make_scenes(float *x, int n) {
    sp_error err = {0};
    char ip[1024], lp[1024];
    sp_idx_images im = {0};
    sp_idx_labels lb = {0};
    if (!sp_idx_find(ip, sizeof ip, SP_FASHION_MNIST_DIR, "train-images-idx3-ubyte", &err) &&
        !sp_idx_find(lp, sizeof lp, SP_FASHION_MNIST_DIR, "train-labels-idx1-ubyte", &err) &&
        !sp_idx_read_pair(&im, &lb, ip, lp, &err)) {
        sp_scene_pool pool = {im.data, lb.data, im.n, im.rows};
        sp_scene_spec spec = {SP_SCENES_OBJECTS, SP_NOISE_NONE, 2, 1}; // the default set
        int32_t *counts = malloc((size_t)n * sizeof(int32_t));
        int rc = sp_scenes_make_range(x, counts, NULL, NULL, &spec, &pool, SP_SPLIT_TRAIN, 0, n,
                                      &err);
        free(counts);
        sp_idx_images_free(&im);
        sp_idx_labels_free(&lb);
        if (!rc) return "Fashion-MNIST scenes, 0-2 items";
    }
    fprintf(stderr, "bench_supair: %s; using synthetic scenes\n", err.msg);
    memset(x, 0, (size_t)n * 2500 * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < i % 3; o++) {
            int x0 = 2 + 24 * o + i % 7, y0 = 4 + (i * 5) % 20;
            for (int y = y0; y < y0 + 18; y++)
                for (int xx = x0; xx < x0 + 18; xx++) x[(size_t)i * 2500 + y * 50 + xx] = 0.8f;
        }
    return "synthetic scenes (squares on black)";
}

/* The LSTM input projection alone, forward + weight gradient, 1 thread:
 * y (256, 1024) = x (256, 2500) W and dW = x^T dy, through the CSR kernels
 * (build included) and through two sgemm calls, on the batch's scenes with
 * pixels dropped or added to reach each density. Shows where the sparse
 * path stops paying (sp_supair_linear switches at 15%). */
static void projection_crossover(const float *scenes) {
    const int Bn = B, D = 2500, G = 1024;
    float *x = malloc((size_t)Bn * D * sizeof(float)), *W = malloc((size_t)D * G * sizeof(float));
    float *y = malloc((size_t)Bn * G * sizeof(float)), *dW = malloc((size_t)D * G * sizeof(float));
    float *dy = malloc((size_t)Bn * G * sizeof(float));
    int *start = malloc((size_t)(D + 1) * sizeof(int)), *col = malloc((size_t)Bn * D * sizeof(int));
    int *tstart = malloc((size_t)(D + 1) * sizeof(int)), *tcol = malloc((size_t)Bn * D * sizeof(int));
    float *val = malloc((size_t)Bn * D * sizeof(float)), *tval = malloc((size_t)Bn * D * sizeof(float));
    float *scratch = malloc((size_t)sp_csr_matmul_scratch(D, 1) * sizeof(float));
    sp_rng_fill_uniform(W, (long)D * G, -0.05f, 0.05f, 5, 0, 0, 0);
    sp_rng_fill_uniform(dy, (long)Bn * G, -1.0f, 1.0f, 6, 0, 0, 0);
    omp_set_num_threads(1);
    printf("input projection (256 x 2500 -> 1024), forward + weight gradient, 1 thread:\n");
    printf("%9s %12s %10s %8s\n", "nonzeros", "sparse ms", "sgemm ms", "ratio");
    const double dens[] = {-1, 0.05, 0.10, 0.15, 0.20, 0.30};
    for (int di = 0; di < 6; di++) {
        /* -1: the scenes as they are; otherwise pixels kept or filled (with
         * 0.5) by a fixed hash until about that density */
        for (long e = 0; e < (long)Bn * D; e++) {
            double h = (double)((e * 2654435761u) % 1000) / 1000.0;
            x[e] = dens[di] < 0 ? scenes[e] : (h < dens[di] ? (scenes[e] ? scenes[e] : 0.5f) : 0.0f);
        }
        double d = (double)sp_count_nonzeros(x, (long)Bn * D) / ((double)Bn * D);
        double ts[5], tg[5];
        for (int r = 0; r < 5; r++) {
            double t0 = cpu_now();
            sp_csr xs = {.start = start, .col = col, .val = val};
            sp_csr xt = {.start = tstart, .col = tcol, .val = tval};
            sp_csr_from_dense(&xs, x, Bn, D);
            memset(y, 0, (size_t)Bn * G * sizeof(float));
            sp_csr_matmul_add(y, &xs, W, G, scratch);
            sp_csr_transpose(&xt, &xs);
            memset(dW, 0, (size_t)D * G * sizeof(float));
            sp_csr_matmul_add(dW, &xt, dy, G, scratch);
            double t1 = cpu_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Bn, G, D, 1.0f, x, D, W, G, 0.0f,
                        y, G);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, G, Bn, 1.0f, x, D, dy, G, 0.0f,
                        dW, G);
            double t2 = cpu_now();
            ts[r] = t1 - t0, tg[r] = t2 - t1;
        }
        double ms = median(ts, 5) * 1e3, mg = median(tg, 5) * 1e3;
        printf("%8.1f%% %12.2f %10.2f %7.2fx%s\n", 100 * d, ms, mg, mg / ms,
               dens[di] < 0 ? "  (the scenes as they are)" : "");
    }
    free(x), free(W), free(y), free(dW), free(dy), free(start), free(col), free(tstart), free(tcol);
    free(val), free(tval), free(scratch);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_supair [--threads N[,N...]] [--steps S] [--steps-only]\n"
                    "  defaults: --threads 1,2 --steps 11 (plus one warm-up step; the thread counts take turns)\n"
                    "  --steps-only: skip the input projection's density table (for profilers)\n");
}

int main(int argc, char **argv) {
    sp_error err = {0};
    sp_blas_ensure_coretype(argc, argv, &err);
    int threads[8] = {1, 2}, n_threads = 2, steps = 11, steps_only = 0;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--threads") && a + 1 < argc) {
            n_threads = 0;
            for (char *q = argv[++a]; *q && n_threads < 8;) {
                char *end;
                long th = strtol(q, &end, 10);
                if (end == q || th < 1 || th > 256) {
                    usage();
                    return 1;
                }
                threads[n_threads++] = (int)th;
                q = *end == ',' ? end + 1 : end;
            }
        } else if (!strcmp(argv[a], "--steps") && a + 1 < argc) {
            steps = atoi(argv[++a]);
            if (steps < 1 || steps > MAX_STEPS) {
                usage();
                return 1;
            }
        } else if (!strcmp(argv[a], "--steps-only")) {
            steps_only = 1;
        } else {
            usage();
            return 1;
        }
    }
    const sp_model_vtable *v = sp_model_find("supair");
    sp_config *cfg = sp_config_new();
    if (sp_config_declare(cfg, sp_train_keys, sp_train_n_keys, &err) ||
        sp_config_declare(cfg, v->keys, v->n_keys, &err) ||
        sp_config_load_text(cfg, v->shared_defaults, "defaults", &err)) {
        fprintf(stderr, "bench_supair: %s\n", err.msg);
        return 1;
    }
    sp_params p;
    sp_params_init(&p);
    void *m = NULL;
    if (v->create(&m, cfg, &p, &err) || sp_params_finalize(&p, &err) ||
        v->init_params(m, &p, 1, &err)) {
        fprintf(stderr, "bench_supair: %s\n", err.msg);
        return 2;
    }
    float *x = malloc((size_t)B * 2500 * sizeof(float));
    const char *source = make_scenes(x, B);
    const double density = (double)sp_count_nonzeros(x, (long)B * 2500) / ((double)B * 2500);
    int64_t idx[B];
    for (int i = 0; i < B; i++) idx[i] = i;
    sp_tape *t = sp_tape_create((size_t)256 << 20);

    // GEMM-shaped FLOPs of one step (2 per multiply-add)
    const double H = 256, G4 = 1024, K = 3;
    // Executed flops: on sparse scenes the input projection and its weight
    // gradient multiply only the nonzero pixels (sp_supair_linear).
    const double proj_share = density <= 0.15 ? density : 1.0;
    double f_lstm = 2.0 * B * 2500 * G4 * 2 * proj_share  // input projection + its weight grad
                    + (K - 1) * 2.0 * B * H * G4 * 3;      // recurrent product, fwd + 2 bwd
    sp_spn *so, *sb;
    sp_spn_config oc = sp_spn_config_object(1), bc = sp_spn_config_background(1);
    sp_spn_create(&so, &oc, &err);
    sp_spn_create(&sb, &bc, &err);
    double f_spn = K * B * (sp_spn_flops(so, 0, 0) + sp_spn_flops(so, 1, 1)) +
                   B * (sp_spn_flops_multi(sb, K + 1, 0, 0) + sp_spn_flops_multi(sb, K + 1, 1, 0));
    sp_spn_free(so);
    sp_spn_free(sb);

    printf("SuPAIR training step (forward + backward), %d scenes of 50x50 (%s, %.1f%% nonzero "
           "pixels), paper model (%ld params), BLAS core %s, median of %d steps\n",
           B, source, 100.0 * density, p.total, sp_blas_corename(), steps);
    printf("%-7s %10s %9s %9s %9s | %-28s | %9s %9s %9s\n", "threads", "scenes/s", "step ms",
           "cpu ms", "GFLOP/s", "ms fwd/bwd: LSTM SPN STN rest", "sgemm GF", "LSTM GF", "SPN GF");
    /* The thread counts take turns step by step (round r runs one step at
     * each), so every count sees the same machine: on a shared VM the
     * memory bandwidth left by other tenants changes from minute to minute
     * and moves all counts alike, and the ratio of a round is then the
     * scaling itself. */
    static double wall[8][MAX_STEPS], cpu[8][MAX_STEPS], comp_s[8][SP_SUPAIR_T_N][2][MAX_STEPS];
    static double ref_fma[8][MAX_STEPS], ref_gemm[8][MAX_STEPS], ref_indep[8][MAX_STEPS];
    int max_th = 1;
    for (int ti = 0; ti < n_threads; ti++) max_th = threads[ti] > max_th ? threads[ti] : max_th;
    const int gn = 1024; /* the GF column's sgemm and the per-round references */
    float *ga = malloc((size_t)(2 + max_th) * gn * gn * sizeof(float));
    if (!ga) {
        fprintf(stderr, "bench_supair: out of memory\n");
        return 2;
    }
    sp_rng_fill_uniform(ga, 2L * gn * gn, -1, 1, 1, 0, 0, 2);
    const float *gA = ga, *gB = ga + (size_t)gn * gn;
    float *gC = ga + 2 * (size_t)gn * gn; /* max_th outputs for the per-thread sgemms */
    const long fma_iters = 2L << 20; /* ~3 ms at one thread */
    double peak[8], triad[8];
    for (int ti = 0; ti < n_threads; ti++) {
        omp_set_num_threads(threads[ti]);
        peak[ti] = gemm_gflops(gA, gB, gC, gn);
        triad[ti] = triad_gbs();
    }
    sp_cpu_flush_denormals();
    double wall0 = sp_time_now(), steal0 = steal_seconds();
    for (int s = 0; s <= steps; s++) {
        for (int ti = 0; ti < n_threads; ti++) {
            omp_set_num_threads(threads[ti]);
            sp_batch b = {0};
            b.n = B, b.global_n = B, b.index = idx, b.x = x, b.seed = 1, b.step = s;
            sp_supair_profile prof;
            memset(&prof, 0, sizeof prof);
            sp_supair_set_profile(m, s ? &prof : NULL);
            sp_params_zero_grad(&p);
            sp_tape_reset(t);
            double term[2];
            double t0 = sp_time_now(), c0 = cpu_now();
            sp_tensor *loss = v->loss(m, t, &p, &b, term, &err);
            if (!loss) {
                fprintf(stderr, "bench_supair: %s\n", err.msg);
                return 2;
            }
            sp_tape_backward(t, loss, 1.0f);
            double dt = sp_time_now() - t0, dc = cpu_now() - c0;
            sp_supair_set_profile(m, NULL);
            double tg = sgemm_seconds(gA, gB, gC, gn);
            double tf = fma_seconds(fma_iters);
            double tind = indep_sgemm_seconds(gA, gB, gC, gn);
            if (s == 0) continue;  // warm-up: arena growth, BLAS buffers
            wall[ti][s - 1] = dt, cpu[ti][s - 1] = dc;
            ref_gemm[ti][s - 1] = tg, ref_fma[ti][s - 1] = tf, ref_indep[ti][s - 1] = tind;
            for (int c = 0; c < SP_SUPAIR_T_N; c++)
                comp_s[ti][c][0][s - 1] = prof.fwd[c], comp_s[ti][c][1][s - 1] = prof.bwd[c];
        }
    }
    double loop_s = sp_time_now() - wall0, steal1 = steal_seconds();
    free(ga);
    for (int ti = 0; ti < n_threads; ti++) {
        const int th = threads[ti];
        double comp[SP_SUPAIR_T_N][2];
        for (int c = 0; c < SP_SUPAIR_T_N; c++)
            for (int d = 0; d < 2; d++) comp[c][d] = median(comp_s[ti][c][d], steps);
        double step_s = median(wall[ti], steps), cpu_s = median(cpu[ti], steps);
        double lstm_s = comp[SP_SUPAIR_T_LSTM][0] + comp[SP_SUPAIR_T_LSTM][1];
        double spn_s = comp[SP_SUPAIR_T_SPN][0] + comp[SP_SUPAIR_T_SPN][1];
        char br[64];
        snprintf(br, sizeof br, "%.0f/%.0f %.0f/%.0f %.0f/%.0f %.0f/%.0f",
                 comp[0][0] * 1e3, comp[0][1] * 1e3, comp[1][0] * 1e3, comp[1][1] * 1e3,
                 comp[2][0] * 1e3, comp[2][1] * 1e3, comp[3][0] * 1e3, comp[3][1] * 1e3);
        printf("%-7d %10.0f %9.1f %9.1f %9.1f | %-28s | %9.1f %9.1f %9.1f\n", th, B / step_s,
               step_s * 1e3, cpu_s * 1e3, (f_lstm + f_spn) / step_s / 1e9, br, peak[ti],
               f_lstm / lstm_s / 1e9, f_spn / spn_s / 1e9);
    }
    /* Scaling against the first count, round by round, and what this
     * machine allowed in the same rounds: the FMA loop (compute only), the
     * in-cache sgemm, and the STREAM triad measured before the rounds. */
    for (int ti = 1; ti < n_threads; ti++) {
        double ratio[MAX_STEPS], rf[MAX_STEPS], rg[MAX_STEPS], rel[MAX_STEPS], ri[MAX_STEPS];
        for (int s = 0; s < steps; s++) {
            ratio[s] = wall[0][s] / wall[ti][s];
            rf[s] = ref_fma[0][s] / ref_fma[ti][s];
            rg[s] = ref_gemm[0][s] / ref_gemm[ti][s];
            rel[s] = ratio[s] / rg[s];
            ri[s] = (double)threads[ti] / threads[0] * ref_indep[0][s] / ref_indep[ti][s];
        }
        printf("%d vs %d threads: step %.2fx (median of %d rounds, %.2f-%.2fx); same rounds: "
               "FMA loop %.2fx, one %d^3 sgemm on the team %.2fx (step/sgemm %.2f), one "
               "single-threaded sgemm per thread %.2fx throughput; memory triad %.2fx (%.1f vs "
               "%.1f GB/s)\n",
               threads[ti], threads[0], median(ratio, steps), steps, min_of(ratio, steps),
               max_of(ratio, steps), median(rf, steps), gn, median(rg, steps), median(rel, steps),
               median(ri, steps), triad[ti] / triad[0], triad[ti], triad[0]);
        /* per component, forward + backward, median of the per-round ratios:
         * which parts hold the step's scaling back */
        printf("  by component:");
        for (int c = 0; c < SP_SUPAIR_T_N; c++) {
            for (int s = 0; s < steps; s++)
                ratio[s] = (comp_s[0][c][0][s] + comp_s[0][c][1][s]) /
                           (comp_s[ti][c][0][s] + comp_s[ti][c][1][s]);
            printf(" %s %.2fx", comp_names[c], median(ratio, steps));
        }
        printf("\n");
    }
    if (steal0 >= 0.0 && steal1 >= 0.0)
        printf("steal time during the rounds: %.2f s of %.1f s x %d vCPUs (%.1f%%)\n",
               steal1 - steal0, loop_s, omp_get_num_procs(),
               100.0 * (steal1 - steal0) / (loop_s * omp_get_num_procs()));
    printf("components: %s, %s, %s, %s; step = median wall time, cpu = median CPU time of "
           "all threads; GFLOP/s counts the GEMM-shaped work executed (LSTM %.2f GF + SPN %.2f "
           "GF per step; the input projection over nonzero pixels only)\n",
           comp_names[0], comp_names[1], comp_names[2], comp_names[3], f_lstm / 1e9, f_spn / 1e9);
    printf("reference: PyTorch port ~470 scenes/s per core\n\n");
    if (!steps_only) projection_crossover(x);
    sp_tape_destroy(t);
    free(x);
    v->destroy(m);
    sp_params_free(&p);
    sp_config_free(cfg);
    return 0;
}
