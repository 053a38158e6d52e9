/* Spatial transformer ops (see stn.h): bilinear sampling through an affine
 * map in pixel units, its adjoint scatter, and the one-pixel zero pad.
 *
 * Every op shares one per-point computation (point_at): map the grid point,
 * clip it into the image, split it into the top-left pixel and fractional
 * weights. Clipping makes every neighbour index valid, so the inner loops
 * have no bounds branches; NaN coordinates clip to 0 instead of indexing
 * wildly. The clip is written as comparisons, not fminf/fmaxf: those stay
 * libm calls without -ffinite-math-only, and this runs per grid point. */
#include <math.h>
#include <string.h>

#include "supair/stn.h"

/* Fewer grid points than this in one call stay on one thread: a parallel
 * region costs a few microseconds (much more when cores are oversubscribed),
 * about what a thousand points take. */
#define STN_OMP_MIN 8192

typedef struct pt {
    int off;      // y0 * W + x0, index of the top-left neighbour
    float wx, wy; // fractional parts: weight of the right / bottom neighbours
    float mx, my; // 1 where the coordinate was not clipped (gradient passes)
} pt;

/* Clips one coordinate into [0, hi] and splits it into its integer part i0
 * and the fractional weight of the next pixel; m = 1 where it was not
 * clipped (clip_by_value's gradient passes on the closed interval). */
static inline void clip_coord(float X, float hi, int *i0, float *w, float *m) {
    *m = (X >= 0.0f && X <= hi) ? 1.0f : 0.0f;
    float c = X > 0.0f ? X : 0.0f;  // NaN -> 0
    c = c < hi ? c : hi;
    int k = (int)c;  // floor: c >= 0
    *i0 = k;
    *w = c - (float)k;
}

static inline pt point_at(const float *th, float u, float v, int W, float xhi, float yhi) {
    float X = th[0] * u + th[1] * v + th[2];
    float Y = th[3] * u + th[4] * v + th[5];
    pt p;
    int x0, y0;
    clip_coord(X, xhi, &x0, &p.wx, &p.mx);
    clip_coord(Y, yhi, &y0, &p.wy, &p.my);
    p.off = y0 * W + x0;
    return p;
}

static inline float bilinear(const float *im, const pt *p, int W) {
    const float *q = im + p->off;
    return (1.0f - p->wy) * ((1.0f - p->wx) * q[0] + p->wx * q[1]) +
           p->wy * ((1.0f - p->wx) * q[W] + p->wx * q[W + 1]);
}

/* d bilinear(im) / dX and / dY at p, zero along a clipped coordinate. */
static inline void bilinear_d(const float *im, const pt *p, int W, float *dX, float *dY) {
    const float *q = im + p->off;
    *dX = p->mx * ((1.0f - p->wy) * (q[1] - q[0]) + p->wy * (q[W + 1] - q[W]));
    *dY = p->my * ((1.0f - p->wx) * (q[W] - q[0]) + p->wx * (q[W + 1] - q[1]));
}

static inline void splat(float *im, const pt *p, int W, float g) {
    float *q = im + p->off;
    float gy0 = g * (1.0f - p->wy), gy1 = g * p->wy;
    q[0] += gy0 * (1.0f - p->wx);
    q[1] += gy0 * p->wx;
    q[W] += gy1 * (1.0f - p->wx);
    q[W + 1] += gy1 * p->wx;
}

typedef struct grid {
    float *u, *v;       // (out_w), (out_h) grid coordinates
    int oh, ow, H, W;   // output grid and image sizes
    float xhi, yhi;     // clip bounds W - 1.0001, H - 1.0001
} grid;

/* numpy linspace(0, extent, n), computed in double and rounded once, as the
 * reference builds its grid in numpy before the float32 constant. */
static int grid_init(sp_tape *t, grid *g, int oh, int ow, int H, int W, float eh, float ew) {
    g->u = sp_tape_alloc(t, (size_t)ow * sizeof(float));
    g->v = sp_tape_alloc(t, (size_t)oh * sizeof(float));
    if (!g->u || !g->v) return -1;
    for (int j = 0; j < ow; j++) g->u[j] = ow > 1 ? (float)((double)ew * j / (ow - 1)) : 0.0f;
    for (int i = 0; i < oh; i++) g->v[i] = oh > 1 ? (float)((double)eh * i / (oh - 1)) : 0.0f;
    g->oh = oh, g->ow = ow, g->H = H, g->W = W;
    g->xhi = (float)W - 1.0001f;
    g->yhi = (float)H - 1.0001f;
    return 0;
}

/* Axis-aligned transforms (theta[1] = theta[3] = 0, SuPAIR's boxes): X
 * depends on the grid column only and Y on the row only, so the clipped
 * coordinates and weights are computed once per column and per row instead
 * of per point. The values are bit-identical to point_at's: th[1] * v and
 * th[3] * u are +-0, which leave the sums unchanged. */
typedef struct axpt {
    int i0;      // integer part (times W for rows: a row offset)
    float w, w1; // weight of the next pixel and 1 - w
    float m;     // 1 where not clipped
} axpt;

/* Largest output side the fast path's per-thread tables hold. */
#define STN_AX_MAX 512

static inline int axis_aligned(const float *th, const grid *g) {
    return th[1] == 0.0f && th[3] == 0.0f && g->ow <= STN_AX_MAX && g->oh <= STN_AX_MAX;
}

static void axis_tables(const float *th, const grid *g, axpt *xs, axpt *ys) {
    for (int j = 0; j < g->ow; j++) {
        axpt *a = xs + j;
        clip_coord(th[0] * g->u[j] + th[2], g->xhi, &a->i0, &a->w, &a->m);
        a->w1 = 1.0f - a->w;
    }
    for (int i = 0; i < g->oh; i++) {
        axpt *a = ys + i;
        clip_coord(th[4] * g->v[i] + th[5], g->yhi, &a->i0, &a->w, &a->m);
        a->w1 = 1.0f - a->w;
        a->i0 *= g->W;
    }
}

/* Theta-gradient sums of one grid row: dL/dX and dL/dY summed plain and
 * weighted by u (v is constant along the row). Float within a row (at most
 * out_w terms), double across rows. */
typedef struct rowacc {
    float gx, gxu, gy, gyu;
} rowacc;

static inline void row_add(rowacc *r, float gX, float gY, float u) {
    r->gx += gX, r->gxu += gX * u;
    r->gy += gY, r->gyu += gY * u;
}

static inline void row_flush(double *s, const rowacc *r, float v) {
    s[0] += r->gxu, s[1] += (double)r->gx * v, s[2] += r->gx;
    s[3] += r->gyu, s[4] += (double)r->gy * v, s[5] += r->gy;
}

/* Axis-aligned fast path: one output row's contribution to the theta
 * gradient, with w[j] the upstream weight of output column j (the output
 * gradient when sampling, the scattered values when scattering) and q0, q1
 * the two source rows that output row i reads (or writes) bilinearly. */
static inline void axis_row_dtheta(double *s, const axpt *xs, axpt y, const float *q0,
                                   const float *q1, const float *w, const float *u, int ow,
                                   float v) {
    rowacc r = {0, 0, 0, 0};
    for (int j = 0; j < ow; j++) {
        const axpt x = xs[j];
        const float a0 = q0[x.i0], a1 = q0[x.i0 + 1];
        const float b0 = q1[x.i0], b1 = q1[x.i0 + 1];
        float dX = x.m * (y.w1 * (a1 - a0) + y.w * (b1 - b0));
        float dY = y.m * (x.w1 * (b0 - a0) + x.w * (b1 - a1));
        row_add(&r, w[j] * dX, w[j] * dY, u[j]);
    }
    row_flush(s, &r, v);
}

/* Separable form of the axis-aligned path. Grid column j reads source
 * columns x0_j and x0_j + 1 of whichever source row an output row reads, so
 * those two pixels of each source row are gathered once (rows A and Bn of
 * the gather below), and each output row then works on contiguous arrays
 * over j that the compiler vectorises: 2 gathers per source row and column
 * instead of 4 per output point. Every value is computed by the same
 * expression as in the per-point forms above, and the theta sums still run
 * over j in order, so results are bit for bit those of the other paths. */
#define STN_SEP_MAX 4096 /* floats per gathered plane (rows x out_w) */

typedef struct axcols {
    float w[STN_AX_MAX], w1[STN_AX_MAX], m[STN_AX_MAX];
} axcols;

typedef struct axrows {
    float A[STN_SEP_MAX], Bn[STN_SEP_MAX]; /* (rows, ow): im[r][x0_j], im[r][x0_j + 1] */
    int r_lo;                              /* the first source row gathered */
} axrows;

static void axis_cols(const axpt *xs, int ow, axcols *c) {
    for (int j = 0; j < ow; j++) c->w[j] = xs[j].w, c->w1[j] = xs[j].w1, c->m[j] = xs[j].m;
}

/* The source rows output rows ys[0..oh) read: from the lowest y0 to the
 * highest y0 + 1. Returns their count (first one in *lo), or 0 when
 * count x ow exceeds the separable path's buffers. */
static int axis_row_range(const axpt *ys, int oh, int W, int ow, int *lo) {
    int l = ys[0].i0, h = ys[0].i0;
    for (int i = 1; i < oh; i++) {
        l = ys[i].i0 < l ? ys[i].i0 : l;
        h = ys[i].i0 > h ? ys[i].i0 : h;
    }
    l /= W, h = h / W + 1;
    *lo = l;
    return (long)(h - l + 1) * ow > STN_SEP_MAX ? 0 : h - l + 1;
}

/* Gathers the source rows that the output rows read (axis_row_range).
 * Returns 0 when they exceed the buffer (then the per-point loops run). */
static int axis_gather(const float *im, int W, const axpt *xs, int ow, const axpt *ys, int oh,
                       axrows *g) {
    int lo;
    const int nr = axis_row_range(ys, oh, W, ow, &lo);
    if (!nr) return 0;
    for (int r = 0; r < nr; r++) {
        const float *row = im + (size_t)(lo + r) * W;
        float *a = g->A + r * ow, *b = g->Bn + r * ow;
        for (int j = 0; j < ow; j++) a[j] = row[xs[j].i0], b[j] = row[xs[j].i0 + 1];
    }
    g->r_lo = lo;
    return 1;
}

/* Output row i of a bilinear read (sampling, or the scatter's data
 * gradient): out[j] (+)= bilinear value at (row y, column j). */
static inline void axis_row_read(float *restrict out, int add, const axrows *g, const axcols *c,
                                 axpt y, int W, int ow) {
    const int r = y.i0 / W - g->r_lo;
    const float *restrict a0 = g->A + r * ow, *restrict a1 = g->Bn + r * ow;
    const float *restrict b0 = a0 + ow, *restrict b1 = a1 + ow;
    const float wy = y.w, wy1 = y.w1;
    if (add)
        for (int j = 0; j < ow; j++)
            out[j] += wy1 * (c->w1[j] * a0[j] + c->w[j] * a1[j]) +
                      wy * (c->w1[j] * b0[j] + c->w[j] * b1[j]);
    else
        for (int j = 0; j < ow; j++)
            out[j] = wy1 * (c->w1[j] * a0[j] + c->w[j] * a1[j]) +
                     wy * (c->w1[j] * b0[j] + c->w[j] * b1[j]);
}

/* axis_row_dtheta from the gathered rows: the per-point products in
 * vectorised loops, then the row sums in order. */
static inline void axis_row_dtheta_sep(double *s, const axrows *g, const axcols *c, axpt y, int W,
                                       const float *restrict w, const float *restrict u, int ow,
                                       float v) {
    const int r = y.i0 / W - g->r_lo;
    const float *restrict a0 = g->A + r * ow, *restrict a1 = g->Bn + r * ow;
    const float *restrict b0 = a0 + ow, *restrict b1 = a1 + ow;
    float gX[STN_AX_MAX], gY[STN_AX_MAX];
    for (int j = 0; j < ow; j++) {
        float dX = c->m[j] * (y.w1 * (a1[j] - a0[j]) + y.w * (b1[j] - b0[j]));
        float dY = y.m * (c->w1[j] * (b0[j] - a0[j]) + c->w[j] * (b1[j] - a1[j]));
        gX[j] = w[j] * dX, gY[j] = w[j] * dY;
    }
    rowacc acc = {0, 0, 0, 0};
    for (int j = 0; j < ow; j++) row_add(&acc, gX[j], gY[j], u[j]);
    row_flush(s, &acc, v);
}

/* The adjoint of axis_row_read over a whole grid (the sampling's data
 * gradient, or the scatter itself): canvas += R^T G C with R, C the row and
 * column interpolation weights. G's rows are first spread over the source
 * rows they read (contiguous loops over j into S (nr, ow)), then each source
 * row is splatted once into the canvas: 2 scattered adds per source row and
 * column instead of 4 per grid point. A canvas pixel's contributions are
 * summed in another order than the per-point splat, so results agree with
 * it to rounding, not bit for bit. S: scratch of STN_SEP_MAX floats.
 * Returns 0 (nothing done) when the rows exceed it. */
static int axis_splat(float *canvas, int W, const float *G, const axpt *xs, int ow,
                      const axpt *ys, int oh, float *S) {
    int lo;
    const int nr = axis_row_range(ys, oh, W, ow, &lo);
    if (!nr) return 0;
    memset(S, 0, (size_t)nr * ow * sizeof(float));
    for (int i = 0; i < oh; i++) {
        float *restrict s0 = S + (ys[i].i0 / W - lo) * ow, *restrict s1 = s0 + ow;
        const float *restrict gi = G + (size_t)i * ow;
        const float wy = ys[i].w, wy1 = ys[i].w1;
        for (int j = 0; j < ow; j++) s0[j] += gi[j] * wy1;
        for (int j = 0; j < ow; j++) s1[j] += gi[j] * wy;
    }
    for (int r = 0; r < nr; r++) {
        float *d = canvas + (size_t)(lo + r) * W;
        const float *sr = S + r * ow;
        for (int j = 0; j < ow; j++) {
            d[xs[j].i0] += sr[j] * xs[j].w1;
            d[xs[j].i0 + 1] += sr[j] * xs[j].w;
        }
    }
    return 1;
}

static int theta_ok(const sp_tensor *theta) {
    return theta->ndim == 2 && theta->shape[1] == 6;
}

/* ---- sample ---- */

typedef struct sample_ctx {
    const sp_tensor *img, *theta;
    sp_tensor *out;
    grid g;
    int B, K;  // theta rows, transforms per image
} sample_ctx;

static void sample_backward(void *p) {
    sample_ctx *k = p;
    const grid *g = &k->g;
    const int HW = g->H * g->W, P = g->oh * g->ow, W = g->W;
    const int Bi = k->B / k->K;
    float *dimg = sp_needs_grad(k->img) ? k->img->grad : NULL;
    float *dth = sp_needs_grad(k->theta) ? k->theta->grad : NULL;

    // one thread per image: its K transforms all splat into the same grad
#pragma omp parallel for schedule(static) if ((long)k->B * P >= STN_OMP_MIN)
    for (int bi = 0; bi < Bi; bi++) {
        axrows rows;
        axcols cols;
        const float *im = k->img->val + (size_t)bi * HW;
        for (int kk = 0; kk < k->K; kk++) {
            const int b = bi * k->K + kk;
            const float *th = k->theta->val + 6 * b;
            const float *go = k->out->grad + (size_t)b * P;
            double s[6] = {0};
            if (axis_aligned(th, g)) {
                axpt xs[STN_AX_MAX], ys[STN_AX_MAX];
                axis_tables(th, g, xs, ys);
                float *di = dimg ? dimg + (size_t)bi * HW : NULL;
                const int sep = dth && axis_gather(im, W, xs, g->ow, ys, g->oh, &rows);
                if (sep) axis_cols(xs, g->ow, &cols);
                float S[STN_SEP_MAX];
                if (di && axis_splat(di, W, go, xs, g->ow, ys, g->oh, S)) di = NULL;
                for (int i = 0; i < g->oh; i++) {
                    const axpt y = ys[i];
                    const float *q0 = im + y.i0, *q1 = q0 + W;
                    const float *gi = go + i * g->ow;
                    if (di) {
                        float *d0 = di + y.i0, *d1 = d0 + W;
                        for (int j = 0; j < g->ow; j++) {
                            const axpt x = xs[j];
                            float gy0 = gi[j] * y.w1, gy1 = gi[j] * y.w;
                            d0[x.i0] += gy0 * x.w1;
                            d0[x.i0 + 1] += gy0 * x.w;
                            d1[x.i0] += gy1 * x.w1;
                            d1[x.i0 + 1] += gy1 * x.w;
                        }
                    }
                    if (sep)
                        axis_row_dtheta_sep(s, &rows, &cols, y, W, gi, g->u, g->ow, g->v[i]);
                    else if (dth)
                        axis_row_dtheta(s, xs, y, q0, q1, gi, g->u, g->ow, g->v[i]);
                }
                if (dth)
                    for (int e = 0; e < 6; e++) dth[6 * b + e] += (float)s[e];
                continue;
            }
            for (int i = 0; i < g->oh; i++) {
                rowacc r = {0, 0, 0, 0};
                for (int j = 0; j < g->ow; j++) {
                    pt q = point_at(th, g->u[j], g->v[i], W, g->xhi, g->yhi);
                    float gr = go[i * g->ow + j];
                    if (dimg) splat(dimg + (size_t)bi * HW, &q, W, gr);
                    if (dth) {
                        float dX, dY;
                        bilinear_d(im, &q, W, &dX, &dY);
                        row_add(&r, gr * dX, gr * dY, g->u[j]);
                    }
                }
                row_flush(s, &r, g->v[i]);
            }
            if (dth)
                for (int e = 0; e < 6; e++) dth[6 * b + e] += (float)s[e];
        }
    }
}

sp_tensor *sp_stn_sample(sp_tape *t, const sp_tensor *img, const sp_tensor *theta, int out_h,
                         int out_w, float extent_h, float extent_w) {
    if (!img || !theta) {
        sp_tape_set_failed(t);
        return NULL;
    }
    if (img->ndim != 3 || !theta_ok(theta) || out_h < 1 || out_w < 1 || img->shape[1] < 2 ||
        img->shape[2] < 2 || img->shape[0] < 1 || theta->shape[0] % img->shape[0] != 0) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int B = theta->shape[0], H = img->shape[1], W = img->shape[2];
    const int K = B / img->shape[0], HW = H * W, P = out_h * out_w;
    const int rg = sp_needs_grad(img) || sp_needs_grad(theta);
    sp_tensor *out = sp_tensor_3d(t, B, out_h, out_w, rg);  // (B, out_h, out_w)
    grid g;
    if (!out || grid_init(t, &g, out_h, out_w, H, W, extent_h, extent_w)) return NULL;

#pragma omp parallel for schedule(static) if ((long)B * P >= STN_OMP_MIN)
    for (int b = 0; b < B; b++) {
        const float *im = img->val + (size_t)(b / K) * HW;
        const float *th = theta->val + 6 * b;
        float *o = out->val + (size_t)b * P;
        if (axis_aligned(th, &g)) {
            axpt xs[STN_AX_MAX], ys[STN_AX_MAX];
            axis_tables(th, &g, xs, ys);
            axrows rows;
            if (axis_gather(im, W, xs, out_w, ys, out_h, &rows)) {
                axcols cols;
                axis_cols(xs, out_w, &cols);
                for (int i = 0; i < out_h; i++)
                    axis_row_read(o + i * out_w, 0, &rows, &cols, ys[i], W, out_w);
                continue;
            }
            for (int i = 0; i < out_h; i++) {
                const float *r0 = im + ys[i].i0, *r1 = r0 + W;
                const float wy = ys[i].w, wy1 = ys[i].w1;
                float *oi = o + i * out_w;
                for (int j = 0; j < out_w; j++) {
                    const axpt x = xs[j];
                    oi[j] = wy1 * (x.w1 * r0[x.i0] + x.w * r0[x.i0 + 1]) +
                            wy * (x.w1 * r1[x.i0] + x.w * r1[x.i0 + 1]);
                }
            }
            continue;
        }
        for (int i = 0; i < out_h; i++)
            for (int j = 0; j < out_w; j++) {
                pt q = point_at(th, g.u[j], g.v[i], W, g.xhi, g.yhi);
                o[i * out_w + j] = bilinear(im, &q, W);
            }
    }

    if (rg && sp_tape_grad_enabled(t)) {
        sample_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        *k = (sample_ctx){img, theta, out, g, B, K};
        if (sp_tape_record(t, sample_backward, k)) return NULL;
    }
    return out;
}

/* ---- scatter ---- */

typedef struct scatter_ctx {
    const sp_tensor *vals, *theta; /* vals NULL: a block of ones (sp_stn_scatter_ones) */
    const float *one_row;          /* (out_w) ones when vals is NULL */
    sp_tensor *out;
    grid g;
    int B;
} scatter_ctx;

static void scatter_backward(void *p) {
    scatter_ctx *k = p;
    const grid *g = &k->g;
    const int HW = g->H * g->W, P = g->oh * g->ow, W = g->W;
    float *dv = sp_needs_grad(k->vals) ? k->vals->grad : NULL;
    float *dth = sp_needs_grad(k->theta) ? k->theta->grad : NULL;
    /* grid row i of the values: row i of vals, or the one row of ones */
    const long vstride = k->vals ? g->ow : 0;

#pragma omp parallel for schedule(static) if ((long)k->B * P >= STN_OMP_MIN)
    for (int b = 0; b < k->B; b++) {
        const float *th = k->theta->val + 6 * b;
        const float *gc = k->out->grad + (size_t)b * HW;  // dL/dcanvas (H, W)
        const float *v = k->vals ? k->vals->val + (size_t)b * P : k->one_row;
        double s[6] = {0};
        if (axis_aligned(th, g)) {
            axpt xs[STN_AX_MAX], ys[STN_AX_MAX];
            axis_tables(th, g, xs, ys);
            axrows rows;
            if (axis_gather(gc, W, xs, g->ow, ys, g->oh, &rows)) {
                axcols cols;
                axis_cols(xs, g->ow, &cols);
                for (int i = 0; i < g->oh; i++) {
                    if (dv) axis_row_read(dv + (size_t)b * P + i * g->ow, 1, &rows, &cols, ys[i], W, g->ow);
                    if (dth)
                        axis_row_dtheta_sep(s, &rows, &cols, ys[i], W, v + i * vstride, g->u,
                                            g->ow, g->v[i]);
                }
                if (dth)
                    for (int e = 0; e < 6; e++) dth[6 * b + e] += (float)s[e];
                continue;
            }
            for (int i = 0; i < g->oh; i++) {
                const axpt y = ys[i];
                const float *q0 = gc + y.i0, *q1 = q0 + W;
                const float *vi = v + i * vstride;
                if (dv) {
                    float *dvi = dv + (size_t)b * P + i * g->ow;
                    for (int j = 0; j < g->ow; j++) {
                        const axpt x = xs[j];
                        dvi[j] += y.w1 * (x.w1 * q0[x.i0] + x.w * q0[x.i0 + 1]) +
                                  y.w * (x.w1 * q1[x.i0] + x.w * q1[x.i0 + 1]);
                    }
                }
                if (dth) axis_row_dtheta(s, xs, y, q0, q1, vi, g->u, g->ow, g->v[i]);
            }
            if (dth)
                for (int e = 0; e < 6; e++) dth[6 * b + e] += (float)s[e];
            continue;
        }
        for (int i = 0; i < g->oh; i++) {
            rowacc r = {0, 0, 0, 0};
            const float *vi = v + i * vstride;
            for (int j = 0; j < g->ow; j++) {
                pt q = point_at(th, g->u[j], g->v[i], W, g->xhi, g->yhi);
                const int pi = i * g->ow + j;
                // a point's contribution is vals * bilinear weights, so its
                // gradient is the bilinear read of dL/dcanvas
                if (dv) dv[(size_t)b * P + pi] += bilinear(gc, &q, W);
                if (dth) {
                    float dX, dY;
                    bilinear_d(gc, &q, W, &dX, &dY);
                    row_add(&r, vi[j] * dX, vi[j] * dY, g->u[j]);
                }
            }
            row_flush(s, &r, g->v[i]);
        }
        if (dth)
            for (int e = 0; e < 6; e++) dth[6 * b + e] += (float)s[e];
    }
}

sp_tensor *sp_stn_scatter(sp_tape *t, const sp_tensor *vals, const sp_tensor *theta, int H, int W,
                          float extent_h, float extent_w) {
    if (!vals || !theta) {
        sp_tape_set_failed(t);
        return NULL;
    }
    if (vals->ndim != 3 || !theta_ok(theta) || vals->shape[0] != theta->shape[0] || H < 2 ||
        W < 2) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int B = theta->shape[0], oh = vals->shape[1], ow = vals->shape[2];
    const int HW = H * W, P = oh * ow;
    const int rg = sp_needs_grad(vals) || sp_needs_grad(theta);
    sp_tensor *out = sp_tensor_3d(t, B, H, W, rg);  // (B, H, W)
    grid g;
    if (!out || grid_init(t, &g, oh, ow, H, W, extent_h, extent_w)) return NULL;

#pragma omp parallel for schedule(static) if ((long)B * P >= STN_OMP_MIN)
    for (int b = 0; b < B; b++) {
        const float *th = theta->val + 6 * b;
        const float *v = vals->val + (size_t)b * P;
        float *o = out->val + (size_t)b * HW;
        memset(o, 0, (size_t)HW * sizeof(float));
        if (axis_aligned(th, &g)) {
            axpt xs[STN_AX_MAX], ys[STN_AX_MAX];
            axis_tables(th, &g, xs, ys);
            float S[STN_SEP_MAX];
            if (axis_splat(o, W, v, xs, ow, ys, oh, S)) continue;
            for (int i = 0; i < oh; i++) {
                const axpt y = ys[i];
                float *d0 = o + y.i0, *d1 = d0 + W;
                const float *vi = v + i * ow;
                for (int j = 0; j < ow; j++) {
                    const axpt x = xs[j];
                    float gy0 = vi[j] * y.w1, gy1 = vi[j] * y.w;
                    d0[x.i0] += gy0 * x.w1;
                    d0[x.i0 + 1] += gy0 * x.w;
                    d1[x.i0] += gy1 * x.w1;
                    d1[x.i0 + 1] += gy1 * x.w;
                }
            }
            continue;
        }
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                pt q = point_at(th, g.u[j], g.v[i], W, g.xhi, g.yhi);
                splat(o, &q, W, v[i * ow + j]);
            }
    }

    if (rg && sp_tape_grad_enabled(t)) {
        scatter_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        *k = (scatter_ctx){vals, theta, NULL, out, g, B};
        if (sp_tape_record(t, scatter_backward, k)) return NULL;
    }
    return out;
}

/* Scatter of ones. Through an axis-aligned map, grid point (i, j) splats
 * weight R(i, y) C(j, x) onto pixel (y, x), where R(i, .) holds row i's two
 * bilinear row weights (after the clip) and C(j, .) column j's, so the
 * canvas is sum_i R(i, y) times sum_j C(j, x): the outer product of two
 * profiles, 2 (oh + ow) adds and one multiply per pixel instead of a
 * (B, oh, ow) block of ones splatted point by point over a zeroed canvas. */
sp_tensor *sp_stn_scatter_ones(sp_tape *t, const sp_tensor *theta, int out_h, int out_w, int H,
                               int W, float extent_h, float extent_w) {
    if (!theta || !theta_ok(theta) || out_h < 1 || out_w < 1 || H < 2 || W < 2) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int B = theta->shape[0], HW = H * W;
    const int rg = sp_needs_grad(theta);
    sp_tensor *out = sp_tensor_3d(t, B, H, W, rg);  // (B, H, W)
    grid g;
    if (!out || grid_init(t, &g, out_h, out_w, H, W, extent_h, extent_w)) return NULL;

#pragma omp parallel for schedule(static) if ((long)B * HW >= STN_OMP_MIN)
    for (int b = 0; b < B; b++) {
        const float *th = theta->val + 6 * b;
        float *o = out->val + (size_t)b * HW;
        if (axis_aligned(th, &g) && H <= STN_AX_MAX && W <= STN_AX_MAX) {
            axpt xs[STN_AX_MAX], ys[STN_AX_MAX];
            axis_tables(th, &g, xs, ys);
            float r[STN_AX_MAX], c[STN_AX_MAX];
            memset(r, 0, (size_t)H * sizeof(float));
            memset(c, 0, (size_t)W * sizeof(float));
            for (int i = 0; i < out_h; i++) {
                const int y0 = ys[i].i0 / W;
                r[y0] += ys[i].w1, r[y0 + 1] += ys[i].w;
            }
            for (int j = 0; j < out_w; j++) c[xs[j].i0] += xs[j].w1, c[xs[j].i0 + 1] += xs[j].w;
            for (int y = 0; y < H; y++) {
                float *oy = o + (size_t)y * W;
                const float ry = r[y];
                for (int x = 0; x < W; x++) oy[x] = ry * c[x];
            }
            continue;
        }
        memset(o, 0, (size_t)HW * sizeof(float));
        for (int i = 0; i < out_h; i++)
            for (int j = 0; j < out_w; j++) {
                pt q = point_at(th, g.u[j], g.v[i], W, g.xhi, g.yhi);
                splat(o, &q, W, 1.0f);
            }
    }

    if (rg && sp_tape_grad_enabled(t)) {
        scatter_ctx *k = sp_tape_alloc(t, sizeof *k);
        float *one_row = sp_tape_alloc(t, (size_t)out_w * sizeof(float));
        if (!k || !one_row) return NULL;
        for (int j = 0; j < out_w; j++) one_row[j] = 1.0f;
        *k = (scatter_ctx){NULL, theta, one_row, out, g, B};
        if (sp_tape_record(t, scatter_backward, k)) return NULL;
    }
    return out;
}

/* ---- pad ---- */

typedef struct pad_ctx {
    const sp_tensor *img;
    sp_tensor *out;
} pad_ctx;

static void pad_backward(void *p) {
    pad_ctx *k = p;
    const int B = k->img->shape[0], H = k->img->shape[1], W = k->img->shape[2];
    const int W2 = W + 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++) {
            const float *go = k->out->grad + ((size_t)b * (H + 2) + i + 1) * W2 + 1;
            float *gi = k->img->grad + ((size_t)b * H + i) * W;
            for (int j = 0; j < W; j++) gi[j] += go[j];
        }
}

sp_tensor *sp_pad1(sp_tape *t, const sp_tensor *img) {
    if (!img || img->ndim != 3) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const int B = img->shape[0], H = img->shape[1], W = img->shape[2], W2 = W + 2;
    sp_tensor *out = sp_tensor_3d(t, B, H + 2, W2, sp_needs_grad(img));  // (B, H+2, W+2)
    if (!out) return NULL;
    memset(out->val, 0, (size_t)out->size * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            memcpy(out->val + ((size_t)b * (H + 2) + i + 1) * W2 + 1,
                   img->val + ((size_t)b * H + i) * W, (size_t)W * sizeof(float));
    if (sp_needs_grad(img) && sp_tape_grad_enabled(t)) {
        pad_ctx *k = sp_tape_alloc(t, sizeof *k);
        if (!k) return NULL;
        *k = (pad_ctx){img, out};
        if (sp_tape_record(t, pad_backward, k)) return NULL;
    }
    return out;
}
