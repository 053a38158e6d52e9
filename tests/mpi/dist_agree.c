/* MPI test program for the collective agreements (driven by the tests/mpi scripts).
 *   dist_agree checks       checksum divergence, config/dataset mismatch at
 *                           start, stop signal on one rank, failure flag,
 *                           metric reduction; exit 0 when all pass
 *   dist_agree loop DIR     a fake training loop (20 ms steps, up to 30 s)
 *                           writing DIR/pid.RANK; stops collectively on
 *                           SIGUSR1/SIGTERM and exits 3 like the trainer */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "supair/dist.h"
#include "supair/params.h"

static int failures = 0, g_rank = 0;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            failures++;                                                           \
            fprintf(stderr, "[rank %d] FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
        }                                                                         \
    } while (0)

static void test_checksum(sp_dist *d) {
    int size = sp_dist_size(d), last = size - 1;
    sp_params p;
    sp_error err;
    sp_params_init(&p);
    int s[2] = {64, 33};
    sp_params_add(&p, "w", 2, s, &err);
    sp_params_finalize(&p, &err);
    for (long i = 0; i < p.total; i++) p.val[i] = p.adam_m[i] = p.adam_v[i] = (float)i;
    CHECK(sp_dist_check_params(d, &p, 1, &err) == SP_OK, "identical params reported: %s", err.msg);
    if (size == 1) {
        sp_params_free(&p);
        return;
    }
    /* One ulp on the last rank: a diverged replica. */
    if (sp_dist_rank(d) == last) p.val[100] = nextafterf(p.val[100], 1e9f);
    int rc = sp_dist_check_params(d, &p, 0, &err);
    char want[64];
    snprintf(want, sizeof want, "on rank %d (", last);
    CHECK(rc == SP_ERUNTIME && strstr(err.msg, want), "divergence: rc %d, '%s'", rc, err.msg);
    if (g_rank == 0) printf("checksum divergence: %s\n", err.msg);
    /* Only the Adam moments differ: caught when they are included. */
    if (sp_dist_rank(d) == last) {
        p.val[100] = 100.0f;
        p.adam_v[7] = -1.0f;
    }
    CHECK(sp_dist_check_params(d, &p, 0, &err) == SP_OK, "values equal but reported: %s", err.msg);
    CHECK(sp_dist_check_params(d, &p, 1, &err) == SP_ERUNTIME, "Adam divergence not detected");
    sp_params_free(&p);
}

static void test_config(sp_dist *d) {
    int size = sp_dist_size(d), rank = sp_dist_rank(d);
    const char *base = "batch_size = 32\nlr = 0.001\nseed = 1\n";
    sp_error err;
    CHECK(sp_dist_check_agreement(d, base, 0xabcdULL, &err) == SP_OK, "identical reported: %s", err.msg);
    if (size == 1) return;
    /* The last rank read another config; rank 1 another data file. */
    const char *cfg = rank == size - 1 ? "batch_size = 32\nlr = 0.01\nseed = 1\n" : base;
    uint64_t fp = rank == 1 ? 0x1234ULL : 0xabcdULL;
    int rc = sp_dist_check_agreement(d, cfg, fp, &err);
    char want[64];
    snprintf(want, sizeof want, "on rank %d (rank %d: config line 2", size - 1, size - 1);
    CHECK(rc == SP_EINPUT, "mismatch rc %d", rc);
    CHECK(strstr(err.msg, want) && strstr(err.msg, "'lr = 0.01', rank 0 has 'lr = 0.001'"),
          "config message: '%s'", err.msg);
    CHECK(strstr(err.msg, "dataset fingerprint differs from rank 0 on rank 1 "), "data message: '%s'", err.msg);
    if (rank == 0) printf("config mismatch: %s\n", err.msg);
    /* A config that is a prefix of rank 0's (a truncated file). */
    cfg = rank == size - 1 ? "batch_size = 32\n" : base;
    rc = sp_dist_check_agreement(d, cfg, 0xabcdULL, &err);
    CHECK(rc == SP_EINPUT && strstr(err.msg, "(end of config)"), "prefix: rc %d '%s'", rc, err.msg);
}

static void test_stop(sp_dist *d) {
    int size = sp_dist_size(d), rank = sp_dist_rank(d);
    sp_error err;
    sp_dist_verdict v;
    CHECK(sp_dist_install_signal_handlers(&err) == SP_OK, "%s", err.msg);
    int stopped_at = -1, failed_at = -1, first_failed = -2;
    for (int step = 0; step < 20 && stopped_at < 0; step++) {
        /* A real signal, delivered to one rank only. */
        if (step == 5 && rank == size - 1) raise(SIGUSR1);
        int local_failed = step == 3 && rank == size / 2;
        CHECK(sp_dist_should_stop(d, local_failed, &v, &err) == SP_OK, "%s", err.msg);
        if (v.failed && failed_at < 0) {
            failed_at = step;
            first_failed = v.first_failed;
        }
        if (v.stop) {
            stopped_at = step;
            CHECK(v.stop == SIGUSR1, "stop signal %d", v.stop);
        }
    }
    CHECK(stopped_at == 5, "stopped at step %d, want 5", stopped_at);
    CHECK(failed_at == 3 && first_failed == size / 2, "failure seen at step %d from rank %d", failed_at,
          first_failed);
    /* Every rank agrees (max == min of the stop step). */
    int64_t agree[2] = {stopped_at, -stopped_at};
    CHECK(sp_dist_max_int64(d, agree, 2, &err) == SP_OK && agree[0] == -agree[1],
          "ranks disagree on the stop step");
    sp_dist_clear_stop();
    CHECK(sp_dist_signal_pending() == 0, "flag not cleared");
}

static void test_metrics_reduce(sp_dist *d) {
    int size = sp_dist_size(d), rank = sp_dist_rank(d);
    sp_error err;
    double v[2] = {(double)rank, 1.0};
    CHECK(sp_dist_reduce_doubles(d, v, 2, 1, &err) == SP_OK, "%s", err.msg);
    CHECK(v[0] == (size - 1) / 2.0 && v[1] == 1.0, "mean %g %g", v[0], v[1]);
    double s[1] = {2.0};
    CHECK(sp_dist_reduce_doubles(d, s, 1, 0, &err) == SP_OK && s[0] == 2.0 * size, "sum %g", s[0]);
}

static int run_loop(sp_dist *d, const char *dir) {
    sp_error err;
    if (sp_dist_install_signal_handlers(&err)) return 2;
    char path[512];
    snprintf(path, sizeof path, "%s/pid.%d", dir, sp_dist_rank(d));
    FILE *f = fopen(path, "w");
    if (!f) return 2;
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    struct timespec ts = {0, 20 * 1000 * 1000};
    for (int step = 0; step < 1500; step++) {
        nanosleep(&ts, NULL); /* "compute" */
        sp_dist_verdict v;
        if (sp_dist_should_stop(d, 0, &v, &err)) return 2;
        if (v.stop) {
            printf("rank %d stopped at step %d by signal %d\n", sp_dist_rank(d), step, v.stop);
            fflush(stdout);
            return 3;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    sp_dist *d = NULL;
    sp_error err;
    if (sp_dist_init(&argc, &argv, &d, &err)) {
        fprintf(stderr, "init: %s\n", err.msg);
        return 2;
    }
    g_rank = sp_dist_rank(d);
    int rc;
    if (argc >= 3 && !strcmp(argv[1], "loop")) {
        rc = run_loop(d, argv[2]);
    } else {
        test_checksum(d);
        test_config(d);
        test_stop(d);
        test_metrics_reduce(d);
        sp_dist_verdict v;
        sp_dist_should_stop(d, failures > 0, &v, &err);
        if (g_rank == 0) printf("dist_agree np=%d: %s\n", sp_dist_size(d), v.failed ? "FAILED" : "ok");
        rc = v.failed ? 1 : 0;
    }
    sp_dist_finalize(d);
    return rc;
}
