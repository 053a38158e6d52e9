/* Allreduce benchmark (run under mpirun, e.g. -np 2): time of one sum-
 * allreduce vs message size (4 KB .. 64 MB), an alpha-beta fit of it, the
 * bucketed gradient allreduce of a model's gradient vs bucket size (blocking
 * and overlapped paths), and from the fit the predicted ring-allreduce
 * weak-scaling efficiency at 8, 64 and 512 ranks.
 *
 *   bench_allreduce [--params N] [--compute-s T] [--bucket-bytes B]
 *                   [--alpha SEC --beta SEC_PER_BYTE] [--quick]
 *
 * Model (ring allreduce of n bytes over p ranks, per bucket):
 *   T(n, p) = 2 (p-1) alpha + 2 (p-1)/p * n * beta
 * At p = 2 this is 2 alpha + n beta, so the fit T = a + b n over the 2-rank
 * measurements (b: least squares over sizes >= 1 MB; a: from sizes <= 64 KB;
 * medians of repeated calls) gives alpha = a/2, beta = b. Weak scaling keeps the per-rank
 * batch, so the compute time per step stays T_c and
 *   efficiency = T_c / (T_c + T_comm(p))                (no overlap)
 *   efficiency = T_c / (T_c + max(0, T_comm - 2/3 T_c)) (buckets hidden behind backward)
 * Measured on one node the fit is shared memory (optimistic); the table also
 * shows an InfiniBand-EDR-like network (alpha 2 us, 10 GB/s), and --alpha /
 * --beta take a cluster's own numbers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "supair/dist.h"
#include "supair/timer.h"

typedef struct opts {
    long params;
    double compute_s;
    size_t bucket_bytes;
    double alpha, beta; /* < 0: from the fit */
    int quick;
} opts;

static int parse(int argc, char **argv, opts *o) {
    o->params = 1000000;
    o->compute_s = 0.1;
    o->bucket_bytes = SP_DIST_DEFAULT_BUCKET_BYTES;
    o->alpha = o->beta = -1;
    o->quick = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) o->quick = 1;
        else if (!strcmp(a, "--params") && v) o->params = atol(argv[++i]);
        else if (!strcmp(a, "--compute-s") && v) o->compute_s = atof(argv[++i]);
        else if (!strcmp(a, "--bucket-bytes") && v) o->bucket_bytes = (size_t)atol(argv[++i]);
        else if (!strcmp(a, "--alpha") && v) o->alpha = atof(argv[++i]);
        else if (!strcmp(a, "--beta") && v) o->beta = atof(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: bench_allreduce [--params N] [--compute-s T] [--bucket-bytes B] "
                    "[--alpha SEC --beta SEC_PER_BYTE] [--quick]\n");
            return 1;
        }
    }
    if (o->params <= 0 || o->compute_s <= 0) {
        fprintf(stderr, "bench_allreduce: --params and --compute-s must be positive\n");
        return 1;
    }
    return 0;
}

static int one_call(sp_dist *d, float *buf, long n, int mode, sp_error *err) {
    if (mode == 0) return sp_dist_allreduce_sum(d, buf, n, 1.0f, err);
    int rc = sp_dist_allreduce_begin(d, buf, n, SP_DIST_DESCENDING, err);
    if (!rc) rc = sp_dist_bucket_ready(d, 0, err);
    if (!rc) rc = sp_dist_allreduce_wait(d, 1.0f, err);
    return rc;
}

/* Seconds of one timed call (barrier first), aborting the job on failure. */
static double timed_call(sp_dist *d, float *buf, long n, int mode) {
    sp_error err;
    sp_dist_barrier(d, &err);
    double t0 = sp_time_now();
    if (one_call(d, buf, n, mode, &err)) {
        fprintf(stderr, "bench_allreduce: %s\n", err.msg);
        sp_dist_abort(d, 2);
    }
    return sp_time_now() - t0;
}

/* Median seconds per call (robust to other processes on a shared node) of
 * the slowest rank, mode 0 blocking, 1 overlapped; as many calls as fit in
 * `budget` seconds (3 .. 200), a count every rank agrees on. */
static double time_reduce(sp_dist *d, float *buf, long n, int mode, double budget) {
    sp_error err;
    int64_t warm_ns = (int64_t)(timed_call(d, buf, n, mode) * 1e9) + 1;
    sp_dist_max_int64(d, &warm_ns, 1, &err);
    int reps = (int)(budget / ((double)warm_ns * 1e-9));
    reps = reps < 3 ? 3 : reps > 200 ? 200 : reps;
    double t[200];
    for (int r = 0; r < reps; r++) t[r] = timed_call(d, buf, n, mode);
    qsort(t, (size_t)reps, sizeof *t, bench_cmp_double);
    int64_t ns = (int64_t)(t[reps / 2] * 1e9);
    sp_dist_max_int64(d, &ns, 1, &err);
    return (double)ns * 1e-9;
}

static void predict(const opts *o, const char *label, double alpha, double beta) {
    double n = 4.0 * (double)o->params;
    double buckets = ceil(n / (double)o->bucket_bytes);
    printf("  %-34s", label);
    const int ps[3] = {8, 64, 512};
    for (int i = 0; i < 3; i++) {
        double p = ps[i];
        double t = buckets * 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * beta;
        double e_plain = o->compute_s / (o->compute_s + t);
        double hidden = fmax(0.0, t - 2.0 / 3.0 * o->compute_s);
        double e_ovl = o->compute_s / (o->compute_s + hidden);
        printf("  p=%-3d %7.2f ms %5.1f%% / %5.1f%%", ps[i], t * 1e3, 100 * e_plain, 100 * e_ovl);
    }
    printf("\n");
}

int main(int argc, char **argv) {
    sp_dist *d = NULL;
    sp_error err;
    if (sp_dist_init(&argc, &argv, &d, &err)) {
        fprintf(stderr, "bench_allreduce: %s\n", err.msg);
        return 2;
    }
    opts o;
    if (parse(argc, argv, &o)) {
        sp_dist_finalize(d);
        return 1;
    }
    int p = sp_dist_size(d), root = sp_dist_rank(d) == 0;
    const double budget = o.quick ? 0.1 : 0.5; /* seconds of calls per measurement */
    const size_t max_bytes = (size_t)64 << 20;
    size_t grad_bytes = (size_t)o.params * sizeof(float);
    size_t cap = grad_bytes > max_bytes ? grad_bytes : max_bytes;
    float *buf = calloc(cap / sizeof(float), sizeof(float));
    if (!buf) {
        fprintf(stderr, "bench_allreduce: out of memory\n");
        sp_dist_abort(d, 2);
    }
    if (root) {
        printf("bench_allreduce: %d ranks, float sum, slowest rank's time per call\n", p);
        if (p < 2) printf("  (one rank: no communication; run under mpirun -np 2 or more)\n");
        printf("\n  one allreduce vs message size\n");
        printf("  %10s  %12s %10s %10s  %12s %10s\n", "bytes", "blocking us", "algbw GB/s", "busbw GB/s",
               "overlap us", "algbw GB/s");
    }
    /* Message-size sweep: each size one bucket. */
    double tsize[32], xsize[32];
    int ns = 0;
    for (size_t bytes = 4096; bytes <= max_bytes && ns < 32; bytes *= 2) {
        long n = (long)(bytes / sizeof(float));
        sp_dist_set_bucket_bytes(d, bytes);
        double tb = time_reduce(d, buf, n, 0, budget);
        double to = time_reduce(d, buf, n, 1, budget);
        double bus = p > 1 ? 2.0 * (p - 1) / p * (double)bytes / tb : 0;
        if (root)
            printf("  %10zu  %12.1f %10.2f %10.2f  %12.1f %10.2f\n", bytes, tb * 1e6, (double)bytes / tb / 1e9,
                   bus / 1e9, to * 1e6, (double)bytes / to / 1e9);
        xsize[ns] = (double)bytes;
        tsize[ns++] = tb;
    }
    /* Two regimes: the slope (beta) by least squares over sizes >= 1 MB,
     * where bandwidth dominates; the intercept from the small sizes, where
     * latency does (a plain fit over all sizes lets 64 MB noise swamp it). */
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int nl = 0;
    for (int i = 0; i < ns; i++)
        if (xsize[i] >= 1048576.0) {
            sx += xsize[i];
            sy += tsize[i];
            sxx += xsize[i] * xsize[i];
            sxy += xsize[i] * tsize[i];
            nl++;
        }
    double b = (nl * sxy - sx * sy) / (nl * sxx - sx * sx);
    if (!(b > 0)) b = tsize[ns - 1] / xsize[ns - 1];
    double a = 1e30;
    for (int i = 0; i < ns && xsize[i] <= 65536.0; i++) a = fmin(a, tsize[i] - b * xsize[i]);
    if (a < 0) a = 0;
    double alpha = a / 2, beta = b; /* ring at p = 2: 2 alpha + n beta */
    if (root) {
        printf("\n  fit T = a + b*n at p=%d: a = %.2f us, b = %.4f ns/byte (%.2f GB/s)\n", p, a * 1e6,
               b * 1e9, 1.0 / b / 1e9);
        printf("  ring model: alpha = %.2f us, beta = %.4f ns/byte\n", alpha * 1e6, beta * 1e9);
    }

    /* The model's gradient, bucketed, vs bucket size. */
    long n = o.params;
    if (root) {
        printf("\n  gradient of %ld floats (%.1f MB), bucketed, vs bucket size\n", n, (double)grad_bytes / 1048576.0);
        printf("  %10s  %8s  %12s  %12s  %12s\n", "bucket", "buckets", "blocking ms", "overlap ms", "model ms");
    }
    for (size_t bytes = 16384; bytes <= max_bytes; bytes *= 4) {
        sp_dist_set_bucket_bytes(d, bytes);
        long nb = (long)((grad_bytes + bytes - 1) / bytes);
        double tb = time_reduce(d, buf, n, 0, budget);
        double to = time_reduce(d, buf, n, 1, budget);
        double model = (double)nb * 2 * (p - 1) * alpha + 2.0 * (p - 1) / p * (double)grad_bytes * beta;
        if (root) printf("  %10zu  %8ld  %12.3f  %12.3f  %12.3f\n", bytes, nb, tb * 1e3, to * 1e3, model * 1e3);
    }

    if (root) {
        printf("\n  predicted weak scaling: %ld params, %.3f s compute/step, %zu-byte buckets\n", o.params,
               o.compute_s, o.bucket_bytes);
        printf("  (T_comm per step; efficiency without overlap / with buckets hidden behind backward)\n");
        if (o.alpha >= 0 && o.beta >= 0) predict(&o, "given alpha/beta", o.alpha, o.beta);
        predict(&o, "measured here (shared memory)", alpha, beta);
        predict(&o, "IB EDR-like (2 us, 10 GB/s)", 2e-6, 1.0 / 10e9);
    }
    free(buf);
    sp_dist_finalize(d);
    return 0;
}
