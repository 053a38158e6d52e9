/* Last-axis ops on the tape (see ops.h): log-softmax, log-sum-exp, sums and
 * means, concatenation and slicing. A tensor (..., L) is viewed as R rows of
 * L; rows are independent, so splitting them across threads cannot change a
 * result, and each row is summed sequentially in double. */
#include <math.h>
#include <string.h>

#include "supair/ops.h"

typedef struct rows_ctx {
    sp_tensor *x, *y;
    long R, L;
} rows_ctx;

static long last_dim(const sp_tensor *x) { return x->ndim ? x->shape[x->ndim - 1] : 1; }
static long n_rows(const sp_tensor *x) {
    return x->ndim ? sp_shape_size(x->ndim - 1, x->shape) : 1;
}

/* Output of a reduction over the last axis: the leading dims, or (1). */
static sp_tensor *dropped_last(sp_tape *t, const sp_tensor *x, int rg) {
    if (x->ndim <= 1) return sp_tensor_1d(t, 1, rg);
    return sp_tensor_new(t, x->ndim - 1, x->shape, rg);
}

static int wants_grad(sp_tape *t, const sp_tensor *x) {
    return sp_tape_grad_enabled(t) && sp_needs_grad(x);
}

static sp_tensor *record_rows(sp_tape *t, sp_backward_fn fn, sp_tensor *x, sp_tensor *y, long R,
                              long L) {
    rows_ctx *c = sp_tape_alloc(t, sizeof *c);
    if (!c) return NULL;
    *c = (rows_ctx){x, y, R, L};
    if (sp_tape_record(t, fn, c)) return NULL;
    return y;
}

/* log sum_j exp(x_j), shifted by the row max; -inf when every entry is -inf. */
static float row_lse(const float *x, long L) {
    float m = -INFINITY;
    for (long j = 0; j < L; j++) m = fmaxf(m, x[j]);
    if (m == -INFINITY || m == INFINITY) return m;
    double s = 0;
    for (long j = 0; j < L; j++) s += (double)expf(x[j] - m);
    return m + (float)log(s);
}

/* ---- log-softmax: y = x - lse(x); dx = dy - softmax * sum(dy) ---- */

static void log_softmax_backward(void *p) {
    rows_ctx *c = p;
    const long R = c->R, L = c->L, n = R * L;
    _Pragma("omp parallel for if(n > SP_OPS_OMP_MIN) schedule(static)")
    for (long r = 0; r < R; r++) {
        const float *y = c->y->val + r * L, *gy = c->y->grad + r * L;
        float *gx = c->x->grad + r * L;
        float m = -INFINITY;
        for (long j = 0; j < L; j++) m = fmaxf(m, y[j]);
        if (m == -INFINITY) continue; /* an all -inf row: no gradient */
        double s = 0;
        for (long j = 0; j < L; j++) s += gy[j];
        for (long j = 0; j < L; j++) gx[j] += gy[j] - expf(y[j]) * (float)s;
    }
}

sp_tensor *sp_log_softmax(sp_tape *t, sp_tensor *x) {
    if (!x) return NULL;
    const long R = n_rows(x), L = last_dim(x), n = R * L;
    int rg = wants_grad(t, x);
    sp_tensor *y = sp_tensor_new(t, x->ndim, x->shape, rg); // (..., L)
    if (!y) return NULL;
    _Pragma("omp parallel for if(n > SP_OPS_OMP_MIN) schedule(static)")
    for (long r = 0; r < R; r++) {
        const float *xr = x->val + r * L;
        float *yr = y->val + r * L;
        float lse = row_lse(xr, L);
        for (long j = 0; j < L; j++) yr[j] = lse == -INFINITY ? -INFINITY : xr[j] - lse;
    }
    return rg ? record_rows(t, log_softmax_backward, x, y, R, L) : y;
}

/* ---- log-sum-exp: dx_j = dy * exp(x_j - y) ---- */

static void logsumexp_backward(void *p) {
    rows_ctx *c = p;
    const long R = c->R, L = c->L, n = R * L;
    _Pragma("omp parallel for if(n > SP_OPS_OMP_MIN) schedule(static)")
    for (long r = 0; r < R; r++) {
        const float *x = c->x->val + r * L;
        float *gx = c->x->grad + r * L;
        float y = c->y->val[r], g = c->y->grad[r];
        if (y == -INFINITY) continue;
        for (long j = 0; j < L; j++) gx[j] += g * expf(x[j] - y);
    }
}

sp_tensor *sp_logsumexp(sp_tape *t, sp_tensor *x) {
    if (!x) return NULL;
    const long R = n_rows(x), L = last_dim(x), n = R * L;
    int rg = wants_grad(t, x);
    sp_tensor *y = dropped_last(t, x, rg); // (...)
    if (!y) return NULL;
    _Pragma("omp parallel for if(n > SP_OPS_OMP_MIN) schedule(static)")
    for (long r = 0; r < R; r++) y->val[r] = row_lse(x->val + r * L, L);
    return rg ? record_rows(t, logsumexp_backward, x, y, R, L) : y;
}

/* ---- sums ---- */

static void sum_last_backward(void *p) {
    rows_ctx *c = p;
    for (long r = 0; r < c->R; r++) {
        float g = c->y->grad[r];
        float *gx = c->x->grad + r * c->L;
        for (long j = 0; j < c->L; j++) gx[j] += g;
    }
}

sp_tensor *sp_sum_last(sp_tape *t, sp_tensor *x) {
    if (!x) return NULL;
    const long R = n_rows(x), L = last_dim(x);
    int rg = wants_grad(t, x);
    sp_tensor *y = dropped_last(t, x, rg); // (...)
    if (!y) return NULL;
    for (long r = 0; r < R; r++) {
        const float *xr = x->val + r * L;
        double s = 0;
        for (long j = 0; j < L; j++) s += xr[j];
        y->val[r] = (float)s;
    }
    return rg ? record_rows(t, sum_last_backward, x, y, R, L) : y;
}

typedef struct sum_all_ctx {
    sp_tensor *x, *y;
    float scale; /* 1, or 1/n for the mean */
} sum_all_ctx;

static void sum_all_backward(void *p) {
    sum_all_ctx *c = p;
    float g = c->y->grad[0] * c->scale;
    float *gx = c->x->grad;
    for (long i = 0; i < c->x->size; i++) gx[i] += g;
}

static sp_tensor *sum_all(sp_tape *t, sp_tensor *x, int mean) {
    if (!x) return NULL;
    int rg = wants_grad(t, x);
    sp_tensor *y = sp_tensor_1d(t, 1, rg); // (1)
    if (!y) return NULL;
    double s = 0;
    for (long i = 0; i < x->size; i++) s += x->val[i];
    float scale = mean ? (x->size ? 1.0f / (float)x->size : NAN) : 1.0f;
    y->val[0] = (float)(mean ? (x->size ? s / (double)x->size : NAN) : s);
    if (!rg) return y;
    sum_all_ctx *c = sp_tape_alloc(t, sizeof *c);
    if (!c) return NULL;
    *c = (sum_all_ctx){x, y, scale};
    if (sp_tape_record(t, sum_all_backward, c)) return NULL;
    return y;
}

sp_tensor *sp_sum_all(sp_tape *t, sp_tensor *x) { return sum_all(t, x, 0); }
sp_tensor *sp_mean_all(sp_tape *t, sp_tensor *x) { return sum_all(t, x, 1); }

/* ---- concatenation and slicing along the last axis ---- */

typedef struct concat_ctx {
    sp_tensor *a, *b, *y;
    long R, La, Lb;
} concat_ctx;

static void concat_backward(void *p) {
    concat_ctx *c = p;
    const long L = c->La + c->Lb;
    for (long r = 0; r < c->R; r++) {
        const float *g = c->y->grad + r * L;
        if (c->a->grad)
            for (long j = 0; j < c->La; j++) c->a->grad[r * c->La + j] += g[j];
        if (c->b->grad)
            for (long j = 0; j < c->Lb; j++) c->b->grad[r * c->Lb + j] += g[c->La + j];
    }
}

sp_tensor *sp_concat_last(sp_tape *t, sp_tensor *a, sp_tensor *b) {
    if (!a || !b) return NULL;
    int ok = a->ndim == b->ndim && a->ndim >= 1;
    for (int d = 0; ok && d + 1 < a->ndim; d++) ok = a->shape[d] == b->shape[d];
    if (!ok) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const long R = n_rows(a), La = last_dim(a), Lb = last_dim(b);
    int shape[SP_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = (int)(La + Lb);
    int rg = sp_tape_grad_enabled(t) && (sp_needs_grad(a) || sp_needs_grad(b));
    sp_tensor *y = sp_tensor_new(t, a->ndim, shape, rg); // (..., La + Lb)
    if (!y) return NULL;
    for (long r = 0; r < R; r++) {
        memcpy(y->val + r * (La + Lb), a->val + r * La, (size_t)La * sizeof(float));
        memcpy(y->val + r * (La + Lb) + La, b->val + r * Lb, (size_t)Lb * sizeof(float));
    }
    if (!rg) return y;
    concat_ctx *c = sp_tape_alloc(t, sizeof *c);
    if (!c) return NULL;
    *c = (concat_ctx){a, b, y, R, La, Lb};
    if (sp_tape_record(t, concat_backward, c)) return NULL;
    return y;
}

typedef struct slice_ctx {
    sp_tensor *x, *y;
    long R, L, start, len;
} slice_ctx;

static void slice_backward(void *p) {
    slice_ctx *c = p;
    for (long r = 0; r < c->R; r++) {
        float *gx = c->x->grad + r * c->L + c->start;
        const float *g = c->y->grad + r * c->len;
        for (long j = 0; j < c->len; j++) gx[j] += g[j];
    }
}

sp_tensor *sp_slice_last(sp_tape *t, sp_tensor *x, int start, int len) {
    if (!x) return NULL;
    const long R = n_rows(x), L = last_dim(x);
    if (x->ndim < 1 || start < 0 || len < 0 || start + (long)len > L) {
        sp_tape_set_failed(t);
        return NULL;
    }
    int shape[SP_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = len;
    int rg = wants_grad(t, x);
    sp_tensor *y = sp_tensor_new(t, x->ndim, shape, rg); // (..., len)
    if (!y) return NULL;
    for (long r = 0; r < R; r++)
        memcpy(y->val + r * len, x->val + r * L + start, (size_t)len * sizeof(float));
    if (!rg) return y;
    slice_ctx *c = sp_tape_alloc(t, sizeof *c);
    if (!c) return NULL;
    *c = (slice_ctx){x, y, R, L, start, len};
    if (sp_tape_record(t, slice_backward, c)) return NULL;
    return y;
}
