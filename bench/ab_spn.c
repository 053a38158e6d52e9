/* A/B timing of two versions of src/spn/spn.c in one process (built by
 * scripts/spn-ab.sh, not by `make bench`): the versions are compiled with
 * their public symbols renamed to A_* and B_*, and each round runs one
 * forward + backward of SuPAIR's object SPN (384 glimpses: one rank's 128
 * scenes x 3 slots) or background SPN (128 scenes x 4 marginalisations from
 * 3 occluder maps) with version A, then with version B, on the same data.
 * Prints the median time of each and the median of the per-round ratios
 * B/A. On a shared host whose speed moves by +-20% from minute to minute,
 * only such interleaved comparisons resolve changes of a few percent; the
 * slot that runs second has read 4-6% faster or slower than the first
 * with identical code, so the script runs both orders and combines them.
 *   ab_spn obj|bg [rounds]
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "supair/params.h"
#include "supair/spn.h"
#include "supair/tape.h"
#include "supair/timer.h"

#define AB_DECLARE(P)                                                                              \
    sp_spn_config P##_sp_spn_config_object(uint64_t);                                             \
    sp_spn_config P##_sp_spn_config_background(uint64_t);                                         \
    int P##_sp_spn_create(sp_spn **, const sp_spn_config *, sp_error *);                          \
    void P##_sp_spn_free(sp_spn *);                                                                \
    int P##_sp_spn_add_params(sp_spn *, sp_params *, const char *, sp_error *);                   \
    void P##_sp_spn_init_params(const sp_spn *, sp_params *, uint64_t);                           \
    sp_tensor *P##_sp_spn_logp(sp_tape *, const sp_spn *, const sp_params *, const sp_tensor *,   \
                               const sp_tensor *);                                                 \
    sp_tensor *P##_sp_spn_logp_occluded(sp_tape *, const sp_spn *, const sp_params *,             \
                                        const sp_tensor *, const sp_tensor *, int);
AB_DECLARE(A)
AB_DECLARE(B)

#define MAX_ROUNDS 1000

typedef struct version {
    sp_spn *s;
    sp_params p;
} version;

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "obj") && strcmp(argv[1], "bg"))) {
        fprintf(stderr, "usage: ab_spn obj|bg [rounds]\n");
        return 1;
    }
    const int bg = !strcmp(argv[1], "bg");
    const int rounds = argc > 2 ? atoi(argv[2]) : 60;
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "ab_spn: rounds must be in 1..%d\n", MAX_ROUNDS);
        return 1;
    }
    const int N = bg ? 128 : 384, M = bg ? 4 : 1, U = bg ? N * (M - 1) : N; /* x rows, m rows */
    sp_error err = {0};
    version v[2];
    for (int k = 0; k < 2; k++) {
        sp_params_init(&v[k].p);
        sp_spn_config c = bg ? (k ? B_sp_spn_config_background(1) : A_sp_spn_config_background(1))
                             : (k ? B_sp_spn_config_object(1) : A_sp_spn_config_object(1));
        int rc = k ? B_sp_spn_create(&v[k].s, &c, &err) : A_sp_spn_create(&v[k].s, &c, &err);
        if (!rc) rc = k ? B_sp_spn_add_params(v[k].s, &v[k].p, "spn", &err)
                        : A_sp_spn_add_params(v[k].s, &v[k].p, "spn", &err);
        if (!rc) rc = sp_params_finalize(&v[k].p, &err);
        if (rc) {
            fprintf(stderr, "ab_spn: %s\n", err.msg);
            return 2;
        }
        if (k) B_sp_spn_init_params(v[k].s, &v[k].p, 3);
        else A_sp_spn_init_params(v[k].s, &v[k].p, 3);
    }
    const int D = bg ? 2500 : 784;
    float *x = malloc(sizeof(float) * N * D), *m = malloc(sizeof(float) * U * D);
    float *gx = calloc((size_t)N * D, sizeof(float)), *gm = calloc((size_t)U * D, sizeof(float));
    sp_tape *t = sp_tape_create((size_t)256 << 20);
    if (!x || !m || !gx || !gm || !t) {
        fprintf(stderr, "ab_spn: out of memory\n");
        return 2;
    }
    /* Scene-like inputs: ~90% of pixels 0; weights across the clip range. */
    srand(1);
    for (long i = 0; i < (long)N * D; i++) x[i] = rand() % 10 ? 0.0f : (float)rand() / RAND_MAX;
    for (long i = 0; i < (long)U * D; i++) m[i] = 1.4f * (float)rand() / RAND_MAX - 0.2f;
    static double ta[MAX_ROUNDS], tb[MAX_ROUNDS], ratio[MAX_ROUNDS];
    for (int r = 0; r <= rounds; r++)
        for (int k = 0; k < 2; k++) {
            sp_params *p = &v[k].p;
            sp_params_zero_grad(p);
            sp_tape_reset(t);
            const double t0 = sp_time_now();
            sp_tensor *X = sp_tensor_view(t, x, bg ? NULL : gx, 2, (int[]){N, D});
            sp_tensor *W = sp_tensor_view(t, m, gm, 2, (int[]){U, D});
            sp_tensor *y = bg ? (k ? B_sp_spn_logp_occluded(t, v[k].s, p, X, W, M)
                                   : A_sp_spn_logp_occluded(t, v[k].s, p, X, W, M))
                              : (k ? B_sp_spn_logp(t, v[k].s, p, X, W) : A_sp_spn_logp(t, v[k].s, p, X, W));
            if (!y) {
                fprintf(stderr, "ab_spn: version %c failed (out of memory?)\n", 'A' + k);
                return 2;
            }
            for (long i = 0; i < y->size; i++) y->grad[i] = 1.0f;
            sp_tape_backward(t, y, 0.0f);
            const double dt = sp_time_now() - t0;
            if (r) (k ? tb : ta)[r - 1] = dt; /* round 0 warms up */
        }
    for (int r = 0; r < rounds; r++) ratio[r] = tb[r] / ta[r];
    printf("%s forward+backward, %d rounds: median A %.2f ms, B %.2f ms, B/A per round median %.3f\n",
           bg ? "background SPN (128 scenes x 4)" : "object SPN (384 glimpses)", rounds,
           1e3 * bench_median(ta, rounds), 1e3 * bench_median(tb, rounds),
           bench_median(ratio, rounds));
    sp_tape_destroy(t);
    for (int k = 0; k < 2; k++) {
        if (k) B_sp_spn_free(v[k].s);
        else A_sp_spn_free(v[k].s);
        sp_params_free(&v[k].p);
    }
    free(x), free(m), free(gx), free(gm);
    return 0;
}
