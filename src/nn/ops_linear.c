/* Matrix products on the tape (see ops.h): sp_matmul with all four transpose
 * cases and sp_linear (x W + b over any number of leading dims). Every
 * product, forward and backward, is one OpenBLAS sgemm with beta = 1 in the
 * backward, so gradients are added in place without temporaries.
 * (cblas.h includes complex.h, whose macro I rules out single-letter I.) */
#include <cblas.h>
#include <string.h>

#include "supair/ops.h"

/* C (M, N) = alpha op(A) op(B) + beta C, row-major, op(A) (M, K), op(B) (K, N).
 * A is stored (M, K) or (K, M) when ta; B (K, N) or (N, K) when tb. Empty
 * products are skipped: BLAS rejects leading dimensions of 0. */
static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, const float *B,
                 float beta, float *C) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta == 0.0f) memset(C, 0, (size_t)M * N * sizeof(float));
        return; /* beta == 1 in every backward: nothing to add */
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

typedef struct matmul_ctx {
    sp_tensor *A, *B, *C;
    int ta, tb, M, N, K;
} matmul_ctx;

/* With G = dL/dC (M, N):
 *   dop(A) = G op(B)^T (M, K), stored transposed when ta: op(B) G^T (K, M);
 *   dop(B) = op(A)^T G (K, N), stored transposed when tb: G^T op(A) (N, K).
 * Writing op(B)^T as B with the transpose flag flipped keeps each case one
 * sgemm on the stored layouts. */
static void matmul_backward(void *p) {
    matmul_ctx *c = p;
    const float *G = c->C->grad;
    if (c->A->grad) {
        if (!c->ta) /* (M,N) x op(B)^T (N,K) */
            gemm(0, !c->tb, c->M, c->K, c->N, 1.0f, G, c->B->val, 1.0f, c->A->grad);
        else /* op(B) (K,N) x G^T (N,M) */
            gemm(c->tb, 1, c->K, c->M, c->N, 1.0f, c->B->val, G, 1.0f, c->A->grad);
    }
    if (c->B->grad) {
        if (!c->tb) /* op(A)^T (K,M) x G (M,N) */
            gemm(!c->ta, 0, c->K, c->N, c->M, 1.0f, c->A->val, G, 1.0f, c->B->grad);
        else /* G^T (N,M) x op(A) (M,K) */
            gemm(1, c->ta, c->N, c->K, c->M, 1.0f, G, c->A->val, 1.0f, c->B->grad);
    }
}

sp_tensor *sp_matmul(sp_tape *t, sp_tensor *A, sp_tensor *B, int transA, int transB) {
    if (!A || !B) return NULL;
    if (A->ndim != 2 || B->ndim != 2) {
        sp_tape_set_failed(t);
        return NULL;
    }
    int M = transA ? A->shape[1] : A->shape[0];
    int K = transA ? A->shape[0] : A->shape[1];
    int Kb = transB ? B->shape[1] : B->shape[0];
    int N = transB ? B->shape[0] : B->shape[1];
    if (K != Kb) {
        sp_tape_set_failed(t);
        return NULL;
    }
    int rg = sp_tape_grad_enabled(t) && (sp_needs_grad(A) || sp_needs_grad(B));
    sp_tensor *C = sp_tensor_2d(t, M, N, rg); // (M, N)
    if (!C) return NULL;
    gemm(transA, transB, M, N, K, 1.0f, A->val, B->val, 0.0f, C->val);
    if (!rg) return C;
    matmul_ctx *c = sp_tape_alloc(t, sizeof *c);
    if (!c) return NULL;
    *c = (matmul_ctx){A, B, C, transA != 0, transB != 0, M, N, K};
    if (sp_tape_record(t, matmul_backward, c)) return NULL;
    return C;
}

typedef struct linear_ctx {
    sp_tensor *x, *W, *b, *y;
    int rows, n_in, n_out; /* rows = all leading dims of x */
} linear_ctx;

static void linear_backward(void *p) {
    linear_ctx *c = p;
    const float *G = c->y->grad; // (rows, n_out)
    if (c->x->grad) /* dx (rows, n_in) += G W^T */
        gemm(0, 1, c->rows, c->n_in, c->n_out, 1.0f, G, c->W->val, 1.0f, c->x->grad);
    if (c->W->grad) /* dW (n_in, n_out) += x^T G */
        gemm(1, 0, c->n_in, c->n_out, c->rows, 1.0f, c->x->val, G, 1.0f, c->W->grad);
    if (c->b && c->b->grad) {
        /* Row by row in order: deterministic, and the inner loop vectorises. */
        float *gb = c->b->grad;
        for (int r = 0; r < c->rows; r++) {
            const float *g = G + (long)r * c->n_out;
            for (int o = 0; o < c->n_out; o++) gb[o] += g[o];
        }
    }
}

sp_tensor *sp_linear(sp_tape *t, sp_tensor *x, sp_tensor *W, sp_tensor *b) {
    if (!x || !W) return NULL;
    if (x->ndim < 1 || W->ndim != 2 || x->shape[x->ndim - 1] != W->shape[0] ||
        (b && b->size != W->shape[1])) {
        sp_tape_set_failed(t);
        return NULL;
    }
    int n_in = W->shape[0], n_out = W->shape[1];
    int rows = (int)sp_shape_size(x->ndim - 1, x->shape);
    int shape[SP_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = n_out;
    int rg = sp_tape_grad_enabled(t) && (sp_needs_grad(x) || sp_needs_grad(W) || sp_needs_grad(b));
    sp_tensor *y = sp_tensor_new(t, x->ndim, shape, rg); // (..., n_out)
    if (!y) return NULL;
    if (b) {
        /* Bias first, then sgemm accumulates onto it with beta = 1. */
        for (int r = 0; r < rows; r++)
            memcpy(y->val + (long)r * n_out, b->val, (size_t)n_out * sizeof(float));
        gemm(0, 0, rows, n_out, n_in, 1.0f, x->val, W->val, 1.0f, y->val);
    } else {
        gemm(0, 0, rows, n_out, n_in, 1.0f, x->val, W->val, 0.0f, y->val);
    }
    if (!rg) return y;
    linear_ctx *c = sp_tape_alloc(t, sizeof *c);
    if (!c) return NULL;
    *c = (linear_ctx){x, W, b, y, rows, n_in, n_out};
    if (sp_tape_record(t, linear_backward, c)) return NULL;
    return y;
}
