/* MPI test (run by tests/mpi/dist.sh at -np 1, 2, 3, 4): parameter
 * broadcast, and the bucketed gradient allreduce (blocking, overlapped
 * ascending and descending, several bucket sizes) equal to the serial sum;
 * results bitwise identical on every rank; sub-communicators from
 * sp_dist_split; node-shared parameters (one group per node, groups of 1 and
 * 2 ranks: the slice allreduce across groups, uneven groups refused) against
 * a serial Adam step on the serial gradient sum.
 * Exit 0 when every check passed on every rank. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supair/dist.h"
#include "supair/optim.h"
#include "supair/params.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            fprintf(stderr, "[rank %d] FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fputc('\n', stderr);                           \
        }                                                  \
    } while (0)

static int g_rank;

/* Rank r's gradient: multiples of 1/16 in [-2, 2), so any sum of a few
 * ranks is exact in float whatever the order. */
static float exact_grad(long i, int r) { return (float)((i * 7 + r * 13) % 64 - 32) / 16.0f; }

/* A non-exact gradient: sums depend on the order (rounding). */
static float rough_grad(long i, int r) { return sinf((float)i * 0.001f + (float)r) * 1.37f; }

/* 1 when buf is bitwise the same on every rank of d. */
static int same_on_all(sp_dist *d, const float *buf, long n) {
    int64_t h[2];
    uint64_t u = sp_fnv1a64(SP_FNV_OFFSET, buf, (size_t)n * sizeof(float));
    h[0] = (int64_t)(u >> 1);
    h[1] = -(int64_t)(u >> 1);
    sp_error err;
    if (sp_dist_max_int64(d, h, 2, &err)) return 0;
    return h[0] == -h[1];
}

/* Reduces with the chosen path; mode 0 blocking, 1 ascending overlapped
 * (ready in 7 uneven steps), 2 descending overlapped. */
static int reduce(sp_dist *d, float *buf, long n, int mode, float scale, sp_error *err) {
    if (mode == 0) return sp_dist_allreduce_sum(d, buf, n, scale, err);
    int order = mode == 1 ? SP_DIST_ASCENDING : SP_DIST_DESCENDING;
    int rc = sp_dist_allreduce_begin(d, buf, n, order, err);
    for (int k = 1; k <= 7 && !rc; k++) {
        long done = n * k * k / 49; /* how far "backward" has got */
        rc = sp_dist_bucket_ready(d, mode == 1 ? done : n - done, err);
    }
    return rc ? rc : sp_dist_allreduce_wait(d, scale, err);
}

static void test_allreduce(sp_dist *d) {
    int size = sp_dist_size(d), rank = sp_dist_rank(d);
    const long n = 400003; /* not a multiple of any bucket */
    float *buf = malloc((size_t)n * sizeof *buf);
    float *want = malloc((size_t)n * sizeof *want);
    double *ref = malloc((size_t)n * sizeof *ref);
    const size_t buckets[] = {4096, 65536, SP_DIST_DEFAULT_BUCKET_BYTES, 64u << 20};
    sp_error err;
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < size; r++) s += exact_grad(i, r);
        want[i] = (float)(s * 0.25);
    }
    for (size_t b = 0; b < sizeof buckets / sizeof *buckets; b++) {
        sp_dist_set_bucket_bytes(d, buckets[b]);
        for (int mode = 0; mode < 3; mode++) {
            for (long i = 0; i < n; i++) buf[i] = exact_grad(i, rank);
            int rc = reduce(d, buf, n, mode, 0.25f, &err);
            CHECK(rc == SP_OK, "reduce: %s", err.msg);
            long bad = -1;
            for (long i = 0; i < n && bad < 0; i++)
                if (buf[i] != want[i]) bad = i;
            CHECK(bad < 0, "bucket %zu mode %d: [%ld] = %.9g, serial sum %.9g", buckets[b], mode, bad,
                  bad < 0 ? 0.0 : (double)buf[bad], bad < 0 ? 0.0 : (double)want[bad]);
        }
    }
    /* Rounding-sensitive values: close to the serial double sum, and the
     * same bits on every rank for each path. */
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < size; r++) s += rough_grad(i, r);
        ref[i] = s / size;
    }
    sp_dist_set_bucket_bytes(d, SP_DIST_DEFAULT_BUCKET_BYTES);
    for (int mode = 0; mode < 3; mode++) {
        for (long i = 0; i < n; i++) buf[i] = rough_grad(i, rank);
        CHECK(reduce(d, buf, n, mode, 1.0f / (float)size, &err) == SP_OK, "reduce: %s", err.msg);
        double worst = 0;
        for (long i = 0; i < n; i++) worst = fmax(worst, fabs(buf[i] - ref[i]));
        CHECK(worst < 1e-5, "mode %d: max |allreduce - serial| = %.3g", mode, worst);
        CHECK(same_on_all(d, buf, n), "mode %d: result differs between ranks", mode);
    }
    /* Misuse is an error, not a hang or a crash. */
    CHECK(sp_dist_allreduce_wait(d, 1.0f, &err) == SP_ERUNTIME, "wait without begin accepted");
    CHECK(sp_dist_bucket_ready(d, 0, &err) == SP_ERUNTIME, "ready without begin accepted");
    CHECK(sp_dist_comm_take(d) > 0.0, "no communication time measured");
    CHECK(sp_dist_comm_take(d) == 0.0, "comm_take did not reset");
    free(buf);
    free(want);
    free(ref);
}

static void test_bcast(sp_dist *d) {
    sp_params p;
    sp_error err;
    sp_params_init(&p);
    int s1[2] = {100, 37}, s2[1] = {5};
    CHECK(sp_params_add(&p, "a/W", 2, s1, &err) >= 0, "%s", err.msg);
    CHECK(sp_params_add(&p, "a/b", 1, s2, &err) >= 0, "%s", err.msg);
    CHECK(sp_params_finalize(&p, &err) == SP_OK, "%s", err.msg);
    if (sp_dist_rank(d) == 0)
        for (long i = 0; i < p.total; i++) {
            p.val[i] = (float)i * 0.5f;
            p.adam_m[i] = (float)i;
            p.adam_v[i] = (float)i * 2.0f;
        }
    CHECK(sp_dist_bcast_params(d, &p, 1, &err) == SP_OK, "%s", err.msg);
    long bad = -1;
    for (long i = 0; i < p.total && bad < 0; i++)
        if (p.val[i] != (float)i * 0.5f || p.adam_m[i] != (float)i || p.adam_v[i] != (float)i * 2.0f)
            bad = i;
    CHECK(bad < 0, "broadcast params wrong at %ld", bad);
    CHECK(sp_dist_check_params(d, &p, 1, &err) == SP_OK, "%s", err.msg);
    char text[32] = "";
    if (sp_dist_rank(d) == 0) snprintf(text, sizeof text, "hello from 0");
    CHECK(sp_dist_bcast(d, text, sizeof text, &err) == SP_OK, "%s", err.msg);
    CHECK(!strcmp(text, "hello from 0"), "bcast bytes: '%s'", text);
    sp_params_free(&p);
}

static void test_split(sp_dist *world) {
    sp_dist *sub = NULL;
    sp_error err;
    int wr = sp_dist_rank(world);
    CHECK(sp_dist_split(world, wr % 2, &sub, &err) == SP_OK, "split: %s", err.msg);
    if (!sub) return;
    int ws = sp_dist_size(world);
    int expect = ws / 2 + (wr % 2 == 0 ? ws % 2 : 0);
    CHECK(sp_dist_size(sub) == expect, "group size %d, want %d", sp_dist_size(sub), expect);
    CHECK(sp_dist_rank(sub) == wr / 2, "group rank %d, want %d", sp_dist_rank(sub), wr / 2);
    /* A group's allreduce sums its own members only. */
    float v[3] = {(float)wr, 1.0f, 2.0f};
    CHECK(sp_dist_allreduce_sum(sub, v, 3, 1.0f, &err) == SP_OK, "%s", err.msg);
    float want = 0;
    for (int r = wr % 2; r < ws; r += 2) want += (float)r;
    CHECK(v[0] == want && v[1] == (float)expect, "group sum %g (want %g), count %g", v[0], want, v[1]);
    sp_dist_free(sub);
}

/* A table of three entries whose total is not a multiple of the rank count. */
static int make_params(sp_params *p, sp_error *err) {
    sp_params_init(p);
    int s1[2] = {301, 97}, s2[1] = {5}, s3[2] = {33, 7};
    if (sp_params_add(p, "a/W", 2, s1, err) < 0 || sp_params_add(p, "a/b", 1, s2, err) < 0 ||
        sp_params_add(p, "c/W", 2, s3, err) < 0)
        return err->code;
    return sp_params_finalize(p, err);
}

static float init_val(long i) { return (float)((i * 5) % 17 - 8) / 8.0f; }

/* Node-shared parameters with sharing groups of `group` ranks (0: node). */
static void test_shared(sp_dist *d, int group) {
    const int size = sp_dist_size(d), rank = sp_dist_rank(d);
    const int L = group > 0 && group < sp_dist_local_size(d) ? group : sp_dist_local_size(d);
    sp_params p, ref;
    sp_error err;
    CHECK(make_params(&p, &err) == SP_OK && make_params(&ref, &err) == SP_OK, "%s", err.msg);
    const long n = p.total;
    for (long i = 0; i < n; i++) p.val[i] = ref.val[i] = init_val(i);
    sp_dist_sharedp *sh = NULL;
    int rc = sp_dist_sharedp_create(d, &p, group, &sh, &err);
    CHECK(rc == SP_OK, "create (group %d): %s", group, err.msg);
    if (size % L != 0 || sp_dist_local_size(d) % L != 0) {
        /* uneven groups (e.g. 3 ranks in groups of 2): refused, p untouched */
        CHECK(!sh && !p.external && p.val[7] == init_val(7), "uneven groups of %d accepted", group);
        sp_params_free(&p), sp_params_free(&ref);
        return;
    }
    CHECK(sh != NULL && p.external, "no shared parameters at %d ranks, group %d", size, group);
    if (!sh) return;
    CHECK(sp_dist_sharedp_group_size(sh) == L && sp_dist_sharedp_groups(sh) == size / L,
          "groups %d x %d, want %d x %d", sp_dist_sharedp_groups(sh), sp_dist_sharedp_group_size(sh),
          size / L, L);
    long lo, hi;
    sp_dist_sharedp_slice(sh, &lo, &hi);
    CHECK(lo % 16 == 0 && lo <= hi && hi <= n, "slice [%ld, %ld) of %ld", lo, hi, n);
    /* The slices tile [0, n) once per group. */
    double cover[1] = {(double)(hi - lo)};
    CHECK(sp_dist_reduce_doubles(d, cover, 1, 0, &err) == SP_OK, "%s", err.msg);
    CHECK(cover[0] == (double)n * (size / L), "slices cover %g floats, want %g", cover[0],
          (double)n * (size / L));
    long bad = -1;
    for (long i = 0; i < n && bad < 0; i++)
        if (p.val[i] != init_val(i) || p.grad[i] != 0.0f || p.adam_m[i] != 0.0f) bad = i;
    CHECK(bad < 0, "shared buffers wrong at %ld after create", bad);
    sp_adam ad, adr;
    sp_adam_init(&ad, SP_ADAM_PYTORCH, 0.01f);
    sp_adam_init(&adr, SP_ADAM_PYTORCH, 0.01f);
    const float gscale = 1.0f / (float)size;
    for (int step = 0; step < 3; step++) {
        /* backward: each rank fills its own gradient buffer */
        for (long i = 0; i < n; i++) p.grad[i] = exact_grad(i + step, rank);
        CHECK(sp_dist_sharedp_reduce(sh, &err) == SP_OK, "reduce: %s", err.msg);
        bad = -1;
        for (long i = lo; i < hi && bad < 0; i++) {
            float want = 0.0f;
            for (int r = 0; r < size; r++) want += exact_grad(i + step, r);
            if (p.grad[i] != want) bad = i;
        }
        CHECK(bad < 0, "group %d step %d: reduced slice wrong at %ld", group, step, bad);
        double ss = sp_floats_sum_squares(p.grad + lo, hi - lo, gscale);
        CHECK(sp_dist_sharedp_sum(sh, &ss, &err) == SP_OK, "%s", err.msg);
        sp_adam_step_slice(&p, &ad, 0.01f, gscale, lo, hi);
        CHECK(sp_dist_sharedp_publish(sh, &err) == SP_OK, "%s", err.msg);
        /* serial reference: the whole sum, one Adam step over everything */
        for (long i = 0; i < n; i++) {
            float s = 0.0f;
            for (int r = 0; r < size; r++) s += exact_grad(i + step, r);
            ref.grad[i] = s;
        }
        double want_ss = sp_floats_sum_squares(ref.grad, n, gscale);
        CHECK(fabs(ss - want_ss) <= 1e-12 * want_ss, "norm^2 %.17g, serial %.17g", ss, want_ss);
        sp_adam_step_zero_grad_scaled(&ref, &adr, 0.01f, gscale);
        bad = -1;
        for (long i = 0; i < n && bad < 0; i++)
            if (p.val[i] != ref.val[i] || p.adam_m[i] != ref.adam_m[i] ||
                p.adam_v[i] != ref.adam_v[i])
                bad = i;
        CHECK(bad < 0, "group %d step %d: values differ from serial Adam at %ld", group, step, bad);
        /* every rank's own buffer is clean again: its slice zeroed by Adam,
         * the rest by the other members' reductions */
        bad = -1;
        for (long i = 0; i < n && bad < 0; i++)
            if (p.grad[i] != 0.0f) bad = i;
        CHECK(bad < 0, "group %d step %d: gradient left at %ld", group, step, bad);
        CHECK(same_on_all(d, p.val, n), "group %d: values differ between ranks", group);
    }
    CHECK(sp_dist_comm_take(d) > 0.0 || size == 1, "no communication time measured");
    sp_dist_sharedp_free(sh, &p);
    CHECK(!p.val && !p.external, "buffers still attached after free");
    sp_params_free(&p);
    sp_params_free(&ref);
}

int main(int argc, char **argv) {
    sp_dist *d = NULL;
    sp_error err;
    if (sp_dist_init(&argc, &argv, &d, &err)) {
        fprintf(stderr, "init: %s\n", err.msg);
        return 2;
    }
    g_rank = sp_dist_rank(d);
    char *hosts = NULL;
    CHECK(sp_dist_hostnames(d, &hosts, &err) == SP_OK && hosts && hosts[0], "hostnames");
    CHECK(sp_dist_local_size(d) >= 1 && sp_dist_local_rank(d) < sp_dist_local_size(d), "local rank");
    test_bcast(d);
    test_allreduce(d);
    test_split(d);
    test_shared(d, 0);
    test_shared(d, 1);
    test_shared(d, 2);
    sp_dist_verdict v;
    CHECK(sp_dist_should_stop(d, failures > 0, &v, &err) == SP_OK, "%s", err.msg);
    if (g_rank == 0)
        printf("dist_allreduce np=%d hosts=%s: %s\n", sp_dist_size(d), hosts ? hosts : "?",
               v.failed ? "FAILED" : "ok");
    free(hosts);
    int rc = v.failed ? 1 : 0;
    sp_dist_finalize(d);
    return rc;
}
