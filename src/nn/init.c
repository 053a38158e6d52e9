/* Parameter initialisers (see init.h). The orthogonal one runs a Householder
 * QR in double on a Gaussian matrix: no LAPACKE header ships with Debian's
 * OpenBLAS, and init-time cost is small (see householder_q). */
#include "supair/init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "supair/rng.h"

void sp_init_constant(float *w, long n, float value) {
    for (long i = 0; i < n; i++) w[i] = value;
}

void sp_init_uniform(float *w, long n, float lo, float hi, uint64_t seed, uint32_t stream) {
    sp_rng_fill_uniform(w, n, lo, hi, seed, SP_INIT_S0, stream, 0);
}

void sp_init_trunc_normal(float *w, long n, float std, uint64_t seed, uint32_t stream) {
    sp_rng r;
    sp_rng_init(&r, seed, SP_INIT_S0, stream, 0);
    for (long i = 0; i < n; i++) w[i] = sp_rng_trunc_normal(&r, std);
}

void sp_init_glorot_uniform(float *w, long n, int fan_in, int fan_out, uint64_t seed,
                            uint32_t stream) {
    float limit = (float)sqrt(6.0 / ((double)fan_in + (double)fan_out));
    sp_init_uniform(w, n, -limit, limit, seed, stream);
}

/* Reflectors are applied in panels of this many: a trailing column then
 * stays in L1 while the whole panel passes over it, instead of streaming the
 * trailing matrix from memory once per reflector. Measured here: a 1024^2
 * Q in ~0.85 s and 2048^2 in ~6.5 s of CPU time on one thread (the SRNN
 * GRUs need 6 such blocks), against 1.0 s / 8.3 s unblocked. */
#define QR_PANEL 16

/* c[k:m] = (I - 2 x x^T) c[k:m] for a unit Householder vector x[k:m]. */
static inline void reflect(const double *restrict x, double *restrict c, int k, int m) {
    double d = 0.0;
    /* A vectorised dot product: its (fixed, compile-time) summation order is
     * the same for every thread count. */
#pragma omp simd reduction(+ : d)
    for (int i = k; i < m; i++) d += x[i] * c[i];
    d *= 2.0;
    for (int i = k; i < m; i++) c[i] -= d * x[i];
}

/* Thin Q (m, n), m >= n, of A = QR with diag(R) > 0; A and Q column-major
 * (column j at [j*m, (j+1)*m)). A is overwritten by the Householder vectors.
 * Every column sees the reflectors in the same order as unblocked Householder
 * QR, and each column is owned by one thread: the result does not depend on
 * the thread count. */
static void householder_q(double *a, double *q, double *rdiag, int m, int n) {
    for (int k0 = 0; k0 < n; k0 += QR_PANEL) {
        int k1 = k0 + QR_PANEL < n ? k0 + QR_PANEL : n;
        for (int k = k0; k < k1; k++) {
            double *x = a + (long)k * m;
            double norm = 0.0;
            for (int i = k; i < m; i++) norm += x[i] * x[i];
            norm = sqrt(norm);
            if (norm == 0.0) { /* a zero column: reflector x = 0 is the identity */
                rdiag[k] = 0.0;
                continue;
            }
            /* alpha of the sign opposite to x_k avoids cancellation in v_k. */
            double alpha = x[k] >= 0 ? -norm : norm;
            rdiag[k] = alpha;
            x[k] -= alpha;
            double vn = 0.0;
            for (int i = k; i < m; i++) vn += x[i] * x[i];
            vn = 1.0 / sqrt(vn);
            for (int i = k; i < m; i++) x[i] *= vn;
            for (int j = k + 1; j < k1; j++) reflect(x, a + (long)j * m, k, m);
        }
#pragma omp parallel for schedule(static) if ((long)m * (n - k1) > 65536)
        for (int j = k1; j < n; j++)
            for (int k = k0; k < k1; k++) reflect(a + (long)k * m, a + (long)j * m, k, m);
    }
    /* Q = H_0 ... H_{n-1} I[:, :n]: column j is H_0 ... H_j e_j (H_k fixes
     * e_j for k > j), built right to left one panel at a time. */
    memset(q, 0, (size_t)m * n * sizeof *q);
    for (int j = 0; j < n; j++) q[(long)j * m + j] = 1.0;
    for (int k1 = n; k1 > 0; k1 -= QR_PANEL) {
        int k0 = k1 - QR_PANEL > 0 ? k1 - QR_PANEL : 0;
#pragma omp parallel for schedule(dynamic, 8) if ((long)m * (n - k0) > 65536)
        for (int j = k0; j < n; j++)
            for (int k = (j < k1 - 1 ? j : k1 - 1); k >= k0; k--)
                reflect(a + (long)k * m, q + (long)j * m, k, m);
    }
    /* Make diag(R) positive: Q's distribution is then uniform (Haar) rather
     * than depending on the sign convention of the reflections. */
    for (int j = 0; j < n; j++)
        if (rdiag[j] < 0)
            for (int i = 0; i < m; i++) q[(long)j * m + i] = -q[(long)j * m + i];
}

int sp_init_orthogonal(float *w, int rows, int cols, int ld, float gain, uint64_t seed,
                       uint32_t stream, uint32_t sub, sp_error *err) {
    if (rows <= 0 || cols <= 0 || ld < cols)
        return sp_fail(err, SP_EINPUT, "init: orthogonal matrix (%d, %d) with ld %d", rows, cols,
                       ld);
    int m = rows >= cols ? rows : cols, n = rows >= cols ? cols : rows;
    size_t mn = (size_t)m * n;
    float *g = malloc(mn * sizeof *g);
    double *a = malloc(mn * sizeof *a), *q = malloc(mn * sizeof *q), *rd = malloc(n * sizeof *rd);
    if (!g || !a || !q || !rd) {
        free(g), free(a), free(q), free(rd);
        return sp_fail(err, SP_ERUNTIME, "init: out of memory for a (%d, %d) orthogonal matrix",
                       rows, cols);
    }
    sp_rng_fill_normal(g, (long)mn, 0.0f, 1.0f, seed, SP_INIT_S0, stream, sub);
    for (size_t i = 0; i < mn; i++) a[i] = g[i];
    householder_q(a, q, rd, m, n);
    if (rows >= cols) { /* W = Q: W[i][j] = Q(i, j) */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) w[(long)i * ld + j] = (float)(gain * q[(long)j * m + i]);
    } else { /* W = Q^T: W[i][j] = Q(j, i), column i of Q */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) w[(long)i * ld + j] = (float)(gain * q[(long)i * m + j]);
    }
    free(g), free(a), free(q), free(rd);
    return SP_OK;
}

int sp_init_orthogonal_blocks(float *w, int rows, int cols, int nblocks, float gain,
                              uint64_t seed, uint32_t stream, sp_error *err) {
    if (nblocks <= 0 || cols % nblocks != 0)
        return sp_fail(err, SP_EINPUT, "init: %d columns do not split into %d gate blocks", cols,
                       nblocks);
    int bc = cols / nblocks;
    for (int b = 0; b < nblocks; b++) {
        int rc = sp_init_orthogonal(w + (long)b * bc, rows, bc, cols, gain, seed, stream,
                                    (uint32_t)b, err);
        if (rc) return rc;
    }
    return SP_OK;
}

/* ---- named entries ---- */

static int entry(const sp_params *p, const char *name, int ndim2, sp_error *err) {
    if (!p->val) {
        sp_fail(err, SP_EINPUT, "init: parameter table not finalized (initialising '%s')", name);
        return -1;
    }
    int i = sp_params_find(p, name);
    if (i < 0) {
        sp_fail(err, SP_EINPUT, "init: no parameter named '%s'", name);
        return -1;
    }
    if (ndim2 && p->entries[i].ndim != 2) {
        sp_fail(err, SP_EINPUT, "init: parameter '%s' has %d dimensions, the initialiser needs 2",
                name, p->entries[i].ndim);
        return -1;
    }
    return i;
}

int sp_init_param_constant(sp_params *p, const char *name, float value, sp_error *err) {
    int i = entry(p, name, 0, err);
    if (i < 0) return err ? err->code : SP_EINPUT;
    sp_init_constant(sp_params_val(p, i), p->entries[i].size, value);
    return SP_OK;
}

int sp_init_param_uniform(sp_params *p, const char *name, float lo, float hi, uint64_t seed,
                          sp_error *err) {
    int i = entry(p, name, 0, err);
    if (i < 0) return err ? err->code : SP_EINPUT;
    sp_init_uniform(sp_params_val(p, i), p->entries[i].size, lo, hi, seed, (uint32_t)i);
    return sp_params_entry_to_memory_order(p, i, err);
}

int sp_init_param_trunc_normal(sp_params *p, const char *name, float std, uint64_t seed,
                               sp_error *err) {
    int i = entry(p, name, 0, err);
    if (i < 0) return err ? err->code : SP_EINPUT;
    sp_init_trunc_normal(sp_params_val(p, i), p->entries[i].size, std, seed, (uint32_t)i);
    return sp_params_entry_to_memory_order(p, i, err);
}

int sp_init_param_glorot(sp_params *p, const char *name, int fan_in, int fan_out, uint64_t seed,
                         sp_error *err) {
    int i = entry(p, name, 1, err);
    if (i < 0) return err ? err->code : SP_EINPUT;
    if (fan_in <= 0 || fan_out <= 0) {
        fan_in = p->entries[i].shape[0];
        fan_out = p->entries[i].shape[1];
    }
    sp_init_glorot_uniform(sp_params_val(p, i), p->entries[i].size, fan_in, fan_out, seed,
                           (uint32_t)i);
    return sp_params_entry_to_memory_order(p, i, err);
}

int sp_init_param_orthogonal(sp_params *p, const char *name, int nblocks, float gain,
                             uint64_t seed, sp_error *err) {
    int i = entry(p, name, 1, err);
    if (i < 0) return err ? err->code : SP_EINPUT;
    int rc = sp_init_orthogonal_blocks(sp_params_val(p, i), p->entries[i].shape[0],
                                       p->entries[i].shape[1], nblocks, gain, seed, (uint32_t)i,
                                       err);
    if (!rc) rc = sp_params_entry_to_memory_order(p, i, err);
    if (rc) sp_error_wrap(err, "parameter '%s'", name);
    return rc;
}
