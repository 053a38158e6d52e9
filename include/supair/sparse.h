/* Products of a mostly-zero matrix with a dense one.
 *
 * Why: SuPAIR's inference LSTM reads the whole 50x50 scene, and its input
 * projection x (B, 2500) W (2500, 1024) plus the weight gradient x^T dy were
 * half of a training step's flops, yet ~89% of scene pixels are exactly 0
 * (black background around 0-3 items). Multiplying only the nonzeros does
 * ~10% of the flops; the kernels below work on a 64-column slab of the
 * dense operand, copied contiguous (see sparse.c), with the 64 outputs of a
 * row in registers.
 *
 * Layout: compressed rows (CSR). The transpose of a CSR matrix is the
 * compressed-column form of the original, so the same kernel serves
 * y += X W and dW += X^T dy.
 *
 * Determinism: every output element is summed by one thread, over the
 * nonzeros of its row in ascending column order, whatever the thread count. */
#ifndef SUPAIR_SPARSE_H
#define SUPAIR_SPARSE_H

#include <stddef.h>

typedef struct sp_csr {
    int rows, cols;
    long nnz;
    int *start; /* (rows + 1) offsets into col/val */
    int *col;   /* (nnz) column of each nonzero, ascending within a row */
    float *val; /* (nnz) */
} sp_csr;

/* Number of entries of x (n floats) that are not exactly zero (NaN counts
 * as nonzero, so it propagates through the products). */
long sp_count_nonzeros(const float *x, long n);

/* Fills a CSR matrix from a dense row-major x (rows, cols). The caller
 * provides out->start (rows + 1), out->col and out->val (at least
 * sp_count_nonzeros(x, rows * cols) entries each). */
void sp_csr_from_dense(sp_csr *out, const float *x, int rows, int cols);

/* The same in two steps, so a caller can size col and val (or choose a
 * dense product) from the count without a separate pass over x:
 * sp_csr_row_starts writes start (rows + 1) and returns the nonzeros,
 * sp_csr_fill then needs out->start so filled. Both run in OpenMP threads
 * over rows when x is large. */
long sp_csr_row_starts(int *start, const float *x, int rows, int cols);
void sp_csr_fill(sp_csr *out, const float *x, int rows, int cols);

/* out = in^T, as CSR (in->cols rows). The caller provides out->start
 * (in->cols + 1), out->col and out->val (in->nnz each). */
void sp_csr_transpose(sp_csr *out, const sp_csr *in);

/* y (a->rows, n) += A (a->rows, a->cols) B (a->cols, n); row-major dense,
 * leading dimensions n. OpenMP over 64-column slabs when the work is large
 * enough to pay for a team. scratch (sp_csr_matmul_scratch(a->cols, the
 * OpenMP thread count) floats) receives each slab of B contiguous before it
 * is used, which avoids cache-set conflicts when n * 4 bytes is a multiple
 * of 4 KB; NULL reads B in place (the same results, bit for bit). */
void sp_csr_matmul_add(float *y, const sp_csr *a, const float *b, int n, float *scratch);
long sp_csr_matmul_scratch(int cols, int threads);

/* Column slabs (params.h's slabbed entries): a (rows, n) matrix kept as n /
 * SP_SPARSE_SLAB contiguous (rows, SP_SPARSE_SLAB) blocks; n must divide by
 * SP_SPARSE_SLAB. The same sums in the same order as sp_csr_matmul_add.
 *   _bslabs: y (row-major) += A B with B in slabs, read in place (no copy);
 *   _yslabs: Y in slabs += A B with B row-major (scratch as above): each of
 *            Y's slabs is written contiguously instead of 256 bytes per
 *            row at a row-length stride (the 10 MB weight gradient). */
#define SP_SPARSE_SLAB 64
void sp_csr_matmul_add_bslabs(float *y, const sp_csr *a, const float *b, int n);
void sp_csr_matmul_add_yslabs(float *y, const sp_csr *a, const float *b, int n, float *scratch);

#endif
