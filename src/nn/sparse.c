/* Sparse (CSR) times dense products; see include/supair/sparse.h for why.
 *
 * The kernel walks the output in slabs of SLAB columns: a slab of the dense
 * operand (cols x SLAB floats) is read once per row of the sparse matrix
 * that touches it, and the SLAB outputs of a row live in AVX registers
 * across that row's nonzeros: one broadcast and SLAB/8 FMAs per nonzero,
 * with no stores in the inner loop.
 *
 * With scratch, each slab is first copied to a contiguous (cols, SLAB)
 * block. In place, its rows sit n floats apart: 4 KB for the scene
 * projection (n = 1024), so every row of the slab maps to the same few
 * cache sets, and an L2 of 8 ways kept ~32 KB of the 640 KB slab; the copy
 * costs one pass over the operand and made the forward product 2-3x
 * faster. */
#include "supair/sparse.h"

#include <omp.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define SLAB SP_SPARSE_SLAB
/* Below this many multiply-adds a team costs more than it saves. */
#define SPARSE_OMP_MIN (1L << 20)
/* Dense inputs of fewer floats are converted to CSR on one thread. */
#define CSR_OMP_MIN (1L << 18)
/* Transposes of fewer nonzeros run on one thread. */
#define TRANSPOSE_OMP_MIN (1L << 14)

long sp_count_nonzeros(const float *x, long n) {
    long c = 0;
    for (long i = 0; i < n; i++) c += x[i] != 0.0f; /* NaN != 0: counted */
    return c;
}

/* Nonzeros of a row; 8 at a time by comparison mask where AVX2 is there. */
static int row_nonzeros(const float *r, int cols) {
    int c = 0, j = 0;
#if defined(__AVX2__)
    for (; j + 8 <= cols; j += 8)
        c += __builtin_popcount((unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(r + j), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
#endif
    for (; j < cols; j++) c += r[j] != 0.0f;
    return c;
}

long sp_csr_row_starts(int *start, const float *x, int rows, int cols) {
#pragma omp parallel for schedule(static) if ((long)rows * cols >= CSR_OMP_MIN)
    for (int i = 0; i < rows; i++) start[i + 1] = row_nonzeros(x + (size_t)i * cols, cols);
    start[0] = 0;
    long e = 0;
    for (int i = 0; i < rows; i++) start[i + 1] = (int)(e += start[i + 1]);
    return e;
}

void sp_csr_fill(sp_csr *out, const float *x, int rows, int cols) {
    out->rows = rows, out->cols = cols, out->nnz = out->start[rows];
#pragma omp parallel for schedule(static) if ((long)rows * cols >= CSR_OMP_MIN)
    for (int i = 0; i < rows; i++) {
        const float *r = x + (size_t)i * cols;
        int *col = out->col;
        float *val = out->val;
        long e = out->start[i];
        int j = 0;
#if defined(__AVX2__)
        /* Scenes are mostly black: skip whole zero vectors. */
        for (; j + 8 <= cols; j += 8) {
            unsigned nz = (unsigned)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_loadu_ps(r + j), _mm256_setzero_ps(), _CMP_NEQ_UQ));
            for (; nz; nz &= nz - 1) {
                const int c = j + __builtin_ctz(nz);
                col[e] = c, val[e] = r[c], e++;
            }
        }
#endif
        for (; j < cols; j++)
            if (r[j] != 0.0f) col[e] = j, val[e] = r[j], e++;
    }
}

void sp_csr_from_dense(sp_csr *out, const float *x, int rows, int cols) {
    sp_csr_row_starts(out->start, x, rows, cols);
    sp_csr_fill(out, x, rows, cols);
}

/* First entry of row e0..e1 (columns ascending) whose column is >= j. */
static int lower_col(const int *col, int e0, int e1, int j) {
    while (e0 < e1) {
        const int mid = e0 + (e1 - e0) / 2;
        if (col[mid] < j) e0 = mid + 1;
        else e1 = mid;
    }
    return e0;
}

/* A counting sort by column. Each thread owns a range of columns [j0, j1),
 * i.e. of output rows: as a row's columns ascend, its entries in that range
 * are one run found by binary search, so each thread counts, offsets and
 * places only its own entries, in rows' order, into its own contiguous part
 * of the output (no shared cursors, no barrier). The output is the same at
 * any thread count. */
void sp_csr_transpose(sp_csr *out, const sp_csr *in) {
    const int R = in->rows, C = in->cols;
    out->rows = C, out->cols = R, out->nnz = in->nnz;
    out->start[0] = 0;
#pragma omp parallel if (in->nnz >= TRANSPOSE_OMP_MIN)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int j0 = (int)((long)C * t / nt), j1 = (int)((long)C * (t + 1) / nt);
        /* start[j + 1] counts column j, then holds its fill cursor (the
         * start of column j), and ends as the end of column j */
        int *st = out->start + 1;
        memset(st + j0, 0, (size_t)(j1 - j0) * sizeof(int));
        long base = 0; /* entries in columns < j0 */
        for (int i = 0; i < R; i++) {
            const int a = in->start[i], b = in->start[i + 1];
            const int s0 = j0 ? lower_col(in->col, a, b, j0) : a;
            const int s1 = j1 < C ? lower_col(in->col, s0, b, j1) : b;
            base += s0 - a;
            for (int e = s0; e < s1; e++) st[in->col[e]]++;
        }
        int acc = (int)base;
        for (int j = j0; j < j1; j++) {
            const int n = st[j];
            st[j] = acc, acc += n;
        }
        for (int i = 0; i < R; i++) {
            const int a = in->start[i], b = in->start[i + 1];
            const int s0 = j0 ? lower_col(in->col, a, b, j0) : a;
            const int s1 = j1 < C ? lower_col(in->col, s0, b, j1) : b;
            for (int e = s0; e < s1; e++) {
                const int p = st[in->col[e]]++;
                out->col[p] = i, out->val[p] = in->val[e];
            }
        }
    }
}

/* One full slab: y[:, j0:j0+SLAB] += A B[:, j0:j0+SLAB], where row r of
 * the slab is bs + r * ldb. The constant trip counts let the compiler unroll
 * the lane loops and keep acc in registers. */
static void slab_full(float *restrict y, const sp_csr *a, const float *restrict bs, size_t ldb,
                      int n, int j0) {
    for (int i = 0; i < a->rows; i++) {
        float *yr = y + (size_t)i * n + j0;
        const int e0 = a->start[i], e1 = a->start[i + 1];
        if (e0 == e1) continue;
#if defined(__AVX2__) && defined(__FMA__)
        __m256 acc[SLAB / 8];
        for (int q = 0; q < SLAB / 8; q++) acc[q] = _mm256_loadu_ps(yr + 8 * q);
        for (int e = e0; e < e1; e++) {
            const __m256 v = _mm256_set1_ps(a->val[e]);
            const float *br = bs + (size_t)a->col[e] * ldb;
            for (int q = 0; q < SLAB / 8; q++)
                acc[q] = _mm256_fmadd_ps(v, _mm256_loadu_ps(br + 8 * q), acc[q]);
        }
        for (int q = 0; q < SLAB / 8; q++) _mm256_storeu_ps(yr + 8 * q, acc[q]);
#else
        float acc[SLAB];
        memcpy(acc, yr, sizeof acc);
        for (int e = e0; e < e1; e++) {
            const float v = a->val[e];
            const float *br = bs + (size_t)a->col[e] * ldb;
            for (int j = 0; j < SLAB; j++) acc[j] += v * br[j];
        }
        memcpy(yr, acc, sizeof acc);
#endif
    }
}

/* The last, narrower slab (w < SLAB columns). */
static void slab_tail(float *restrict y, const sp_csr *a, const float *restrict b, int n, int j0,
                      int w) {
    for (int i = 0; i < a->rows; i++) {
        float *yr = y + (size_t)i * n + j0;
        for (int e = a->start[i]; e < a->start[i + 1]; e++) {
            const float v = a->val[e];
            const float *br = b + (size_t)a->col[e] * n + j0;
            for (int j = 0; j < w; j++) yr[j] += v * br[j];
        }
    }
}

long sp_csr_matmul_scratch(int cols, int threads) { return (long)threads * cols * SLAB; }

/* bs (rows, SLAB) = columns [j0, j0 + SLAB) of b (rows, n), contiguous. */
static void copy_slab(float *restrict bs, const float *restrict b, int rows, int n, int j0) {
    for (int r = 0; r < rows; r++)
        memcpy(bs + (size_t)r * SLAB, b + (size_t)r * n + j0, SLAB * sizeof(float));
}

void sp_csr_matmul_add_bslabs(float *y, const sp_csr *a, const float *b, int n) {
    const int nslab = n / SLAB;
    /* each slab of B is already contiguous: no copy */
#pragma omp parallel for schedule(static) if (a->nnz * (long)n >= SPARSE_OMP_MIN && nslab > 1)
    for (int s = 0; s < nslab; s++)
        slab_full(y, a, b + (size_t)s * a->cols * SLAB, SLAB, n, s * SLAB);
}

void sp_csr_matmul_add_yslabs(float *y, const sp_csr *a, const float *b, int n, float *scratch) {
    const int nslab = n / SLAB;
#pragma omp parallel for schedule(static) if (a->nnz * (long)n >= SPARSE_OMP_MIN && nslab > 1)
    for (int s = 0; s < nslab; s++) {
        /* the slab of B contiguous (as sp_csr_matmul_add), Y's slab is */
        float *bs = scratch + (size_t)omp_get_thread_num() * a->cols * SLAB;
        copy_slab(bs, b, a->cols, n, s * SLAB);
        slab_full(y + (size_t)s * a->rows * SLAB, a, bs, SLAB, SLAB, 0);
    }
}

void sp_csr_matmul_add(float *y, const sp_csr *a, const float *b, int n, float *scratch) {
    const int full = n / SLAB, w = n % SLAB;
    const int nslab = full + (w > 0);
#pragma omp parallel for schedule(static) if (a->nnz * (long)n >= SPARSE_OMP_MIN && nslab > 1)
    for (int s = 0; s < nslab; s++) {
        if (s < full && scratch) {
            /* the slab, contiguous (see the top of the file) */
            float *bs = scratch + (size_t)omp_get_thread_num() * a->cols * SLAB;
            copy_slab(bs, b, a->cols, n, s * SLAB);
            slab_full(y, a, bs, SLAB, n, s * SLAB);
        } else if (s < full) {
            slab_full(y, a, b + (size_t)s * SLAB, (size_t)n, n, s * SLAB);
        } else {
            slab_tail(y, a, b, n, s * SLAB, w);
        }
    }
}
