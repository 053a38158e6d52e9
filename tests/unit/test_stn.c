/* Tests of the spatial transformer ops (stn.h): forward values against a
 * double-precision reference written here, identity and adjointness facts,
 * batching of several transforms per image, the pad + shift convention, and
 * gradients against finite differences (gradcheck.h).
 *
 * Theta gradients: sampling is piecewise linear in theta with kinks where a
 * coordinate crosses an integer, so finite differences are only meaningful
 * away from them. Those tests use an integer grid (extent = n - 1), integer
 * matrix entries and half-integer translations, and perturb theta by at most
 * 0.02 around that base: every coordinate then stays within 0.3 of k + 1/2. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gradcheck.h"
#include "supair/stn.h"
#include "testutil.h"

/* ---- references (double) ---- */

static double clipd(double x, double hi) { return x < 0 ? 0 : x > hi ? hi : x; }

static double lin(int n, double extent, int j) { return n > 1 ? extent * j / (n - 1) : 0.0; }

typedef struct rpt {
    int x0, y0;
    double wx, wy;
} rpt;

static rpt ref_point(const float *th, double u, double v, int H, int W) {
    double X = clipd(th[0] * u + th[1] * v + th[2], W - 1.0001);
    double Y = clipd(th[3] * u + th[4] * v + th[5], H - 1.0001);
    rpt p = {(int)floor(X), (int)floor(Y), 0, 0};
    p.wx = X - p.x0;
    p.wy = Y - p.y0;
    return p;
}

// img (H,W), theta (6) -> out (oh,ow)
static void ref_sample(const float *img, int H, int W, const float *th, int oh, int ow, double eh,
                       double ew, double *out) {
    for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) {
            rpt p = ref_point(th, lin(ow, ew, j), lin(oh, eh, i), H, W);
            const float *q = img + p.y0 * W + p.x0;
            out[i * ow + j] = (1 - p.wy) * ((1 - p.wx) * q[0] + p.wx * q[1]) +
                              p.wy * ((1 - p.wx) * q[W] + p.wx * q[W + 1]);
        }
}

// vals (oh,ow), theta (6) -> canvas (H,W)
static void ref_scatter(const float *vals, int oh, int ow, const float *th, int H, int W,
                        double eh, double ew, double *out) {
    memset(out, 0, (size_t)H * W * sizeof *out);
    for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) {
            rpt p = ref_point(th, lin(ow, ew, j), lin(oh, eh, i), H, W);
            double v = vals[i * ow + j], *q = out + p.y0 * W + p.x0;
            q[0] += v * (1 - p.wy) * (1 - p.wx);
            q[1] += v * (1 - p.wy) * p.wx;
            q[W] += v * p.wy * (1 - p.wx);
            q[W + 1] += v * p.wy * p.wx;
        }
}

/* ---- helpers ---- */

/* Random transforms in pixel units: scales of either sign, some shear, and
 * translations that push part of the grid outside the image (clipping). */
static void random_theta(float *th, int B, int H, int W, uint64_t seed) {
    float r[6];
    for (int b = 0; b < B; b++) {
        sp_gc_fill_uniform(r, 6, 0, 1, seed * 131 + b);
        th[6 * b + 0] = -0.6f + 1.8f * r[0];
        th[6 * b + 1] = -0.4f + 0.8f * r[1];
        th[6 * b + 2] = -3.0f + (W + 2.0f) * r[2];
        th[6 * b + 3] = -0.4f + 0.8f * r[3];
        th[6 * b + 4] = -0.6f + 1.8f * r[4];
        th[6 * b + 5] = -3.0f + (H + 2.0f) * r[5];
    }
}


static sp_tensor *view3(sp_tape *t, float *v, float *g, int a, int b, int c) {
    return sp_tensor_view(t, v, g, 3, (int[]){a, b, c});
}
static sp_tensor *view2(sp_tape *t, float *v, float *g, int a, int b) {
    return sp_tensor_view(t, v, g, 2, (int[]){a, b});
}

/* ---- forward ---- */

static void test_sample_forward(void) {
    // (Bi, H, W, K transforms per image, oh, ow, extent_h, extent_w)
    static const struct { int Bi, H, W, K, oh, ow; float eh, ew; } cs[] = {
        {2, 7, 9, 3, 5, 6, 7.3f, 4.1f}, {1, 2, 2, 1, 3, 3, 2.0f, 2.0f},
        {3, 11, 5, 1, 1, 4, 0.0f, 3.0f}, {1, 28, 28, 2, 28, 28, 28.0f, 28.0f},
    };
    sp_tape *t = sp_tape_create(1 << 20);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        const int Bi = cs[c].Bi, H = cs[c].H, W = cs[c].W, B = Bi * cs[c].K;
        const int oh = cs[c].oh, ow = cs[c].ow, P = oh * ow;
        sp_tape_reset(t);
        float *img = sp_tape_alloc(t, sizeof(float) * Bi * H * W);
        float *th = sp_tape_alloc(t, sizeof(float) * B * 6);
        double *ref = sp_tape_alloc(t, sizeof(double) * B * P);
        sp_gc_fill_uniform(img, (long)Bi * H * W, -1, 1, 5 + c);
        random_theta(th, B, H, W, 9 + c);
        sp_tensor *out = sp_stn_sample(t, view3(t, img, NULL, Bi, H, W), view2(t, th, NULL, B, 6),
                                       oh, ow, cs[c].eh, cs[c].ew);
        CU_ASSERT_PTR_NOT_NULL_FATAL(out);
        CU_ASSERT(out->ndim == 3 && out->shape[0] == B && out->shape[1] == oh &&
                  out->shape[2] == ow);
        for (int b = 0; b < B; b++)
            ref_sample(img + (size_t)(b / cs[c].K) * H * W, H, W, th + 6 * b, oh, ow, cs[c].eh,
                       cs[c].ew, ref + (size_t)b * P);
        SP_ASSERT_CLOSE_ARRAY("sample", out->val, ref, (long)B * P, 2e-5);
        CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    }
    sp_tape_destroy(t);
}

static void test_scatter_forward(void) {
    const int B = 3, H = 8, W = 6, oh = 5, ow = 7, HW = H * W;
    sp_tape *t = sp_tape_create(1 << 20);
    float vals[3 * 35], th[18];
    double ref[3 * 48];
    sp_gc_fill_uniform(vals, B * oh * ow, -1, 1, 3);
    random_theta(th, B, H, W, 4);
    sp_tensor *out = sp_stn_scatter(t, view3(t, vals, NULL, B, oh, ow), view2(t, th, NULL, B, 6),
                                    H, W, 6.5f, 4.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    for (int b = 0; b < B; b++)
        ref_scatter(vals + b * oh * ow, oh, ow, th + 6 * b, H, W, 6.5, 4.0, ref + b * HW);
    SP_ASSERT_CLOSE_ARRAY("scatter", out->val, ref, (long)B * HW, 2e-5);
    // SuPAIR's score map: vals = 1 adds exactly one unit of weight per point
    for (int i = 0; i < B * oh * ow; i++) vals[i] = 1.0f;
    out = sp_stn_scatter(t, view3(t, vals, NULL, B, oh, ow), view2(t, th, NULL, B, 6), H, W, 6.5f,
                         4.0f);
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int p = 0; p < HW; p++) s += out->val[b * HW + p];
        SP_ASSERT_CLOSE(s, oh * ow, 1e-4);
    }
    sp_tape_destroy(t);
}

/* Identity theta on a grid of one pixel per point reads the pixels back; the
 * last row and column sit on the clip bound W - 1.0001 and blend 1e-4 of
 * their neighbour, as in the reference. */
static void test_identity(void) {
    const int B = 2, H = 6, W = 8;
    sp_tape *t = sp_tape_create(1 << 20);
    float img[2 * 48], th[12] = {1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0};
    sp_gc_fill_uniform(img, B * H * W, 0, 1, 11);
    sp_tensor *out = sp_stn_sample(t, view3(t, img, NULL, B, H, W), view2(t, th, NULL, B, 6), H, W,
                                   H - 1.0f, W - 1.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    double interior = 0, edge = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                double e = fabs(out->val[(b * H + i) * W + j] - img[(b * H + i) * W + j]);
                if (i < H - 1 && j < W - 1) interior = fmax(interior, e);
                else edge = fmax(edge, e);
            }
    SP_ASSERT_CLOSE(interior, 0.0, 0.0);
    SP_ASSERT_CLOSE(edge, 0.0, 2.1e-4);
    sp_tape_destroy(t);
}

/* <scatter(v), img> == <v, sample(img)>: scatter is sampling's adjoint. */
static void test_adjoint(void) {
    const int B = 5, H = 9, W = 11, oh = 7, ow = 8;
    sp_tape *t = sp_tape_create(1 << 20);
    float img[5 * 99], v[5 * 56], th[30];
    sp_gc_fill_uniform(img, B * H * W, -1, 1, 21);
    sp_gc_fill_uniform(v, B * oh * ow, -1, 1, 22);
    random_theta(th, B, H, W, 23);
    sp_tensor *tth = view2(t, th, NULL, B, 6);
    sp_tensor *s = sp_stn_sample(t, view3(t, img, NULL, B, H, W), tth, oh, ow, 10.0f, 9.5f);
    sp_tensor *c = sp_stn_scatter(t, view3(t, v, NULL, B, oh, ow), tth, H, W, 10.0f, 9.5f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    double lhs = 0, rhs = 0, mag = 0;
    for (int i = 0; i < B * H * W; i++) lhs += (double)c->val[i] * img[i], mag += fabs(c->val[i] * img[i]);
    for (int i = 0; i < B * oh * ow; i++) rhs += (double)v[i] * s->val[i];
    SP_ASSERT_CLOSE(lhs, rhs, 1e-5 * mag);
    sp_tape_destroy(t);
}

/* K transforms per image read the same pixels as a replicated image batch. */
static void test_shared_images(void) {
    const int Bi = 3, K = 4, B = Bi * K, H = 7, W = 6;
    sp_tape *t = sp_tape_create(1 << 20);
    float img[3 * 42], rep[12 * 42], th[72];
    sp_gc_fill_uniform(img, Bi * H * W, -1, 1, 31);
    for (int b = 0; b < B; b++) memcpy(rep + b * H * W, img + (b / K) * H * W, sizeof(float) * H * W);
    random_theta(th, B, H, W, 32);
    sp_tensor *tth = view2(t, th, NULL, B, 6);
    sp_tensor *a = sp_stn_sample(t, view3(t, img, NULL, Bi, H, W), tth, 5, 5, 5.0f, 5.0f);
    sp_tensor *r = sp_stn_sample(t, view3(t, rep, NULL, B, H, W), tth, 5, 5, 5.0f, 5.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(memcmp(a->val, r->val, sizeof(float) * a->size), 0);
    // a theta batch that is not a multiple of the image batch is refused
    CU_ASSERT_PTR_NULL(sp_stn_sample(t, view3(t, img, NULL, Bi, H, W), view2(t, th, NULL, 4, 6), 5,
                                     5, 5.0f, 5.0f));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_destroy(t);
}

/* NaN or huge coordinates clip into the image instead of indexing outside. */
static void test_nonfinite_theta(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    float img[16], th[12] = {NAN, 0, 0, 0, 1, 1e30f, 1, 0, -INFINITY, 0, 1, 0}, v[8];
    float gimg[16] = {0};
    sp_gc_fill_uniform(img, 16, 0, 1, 41);
    sp_gc_fill_uniform(v, 8, 0, 1, 42);
    sp_tensor *s = sp_stn_sample(t, view3(t, img, gimg, 1, 4, 4), view2(t, th, NULL, 2, 6), 2, 2,
                                 3.0f, 3.0f);
    sp_tensor *c = sp_stn_scatter(t, view3(t, v, NULL, 2, 2, 2), view2(t, th, NULL, 2, 6), 4, 4,
                                  3.0f, 3.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (int i = 0; i < 8; i++) {
        CU_ASSERT(isfinite(s->val[i]));
        s->grad[i] = 1.0f;
    }
    for (int i = 0; i < 32; i++) CU_ASSERT(isfinite(c->val[i]));
    sp_tape_backward(t, s, 0.0f);
    for (int i = 0; i < 16; i++) CU_ASSERT(isfinite(gimg[i]));
    sp_tape_destroy(t);
}

/* ---- pad ---- */

/* Sampling the padded image with theta + [0,0,1,0,0,1] matches sampling the
 * original wherever the point lies inside it, and reads 0 a pixel outside. */
static void test_pad_shift(void) {
    const int B = 2, H = 5, W = 7;
    sp_tape *t = sp_tape_create(1 << 20);
    float img[70], th[12], ths[12];
    sp_gc_fill_uniform(img, B * H * W, 0.5f, 1, 51);
    // b = 0: a box well inside; b = 1: a box reaching 3 px past the top-left
    const float base[12] = {0.5f, 0, 1.25f, 0, 0.5f, 0.75f, 1, 0, -3.0f, 0, 1, -3.0f};
    memcpy(th, base, sizeof th);
    memcpy(ths, base, sizeof ths);
    for (int b = 0; b < B; b++) ths[6 * b + 2] += 1, ths[6 * b + 5] += 1;
    sp_tensor *ti = view3(t, img, NULL, B, H, W);
    sp_tensor *p = sp_pad1(t, ti);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(p->shape[0] == B && p->shape[1] == H + 2 && p->shape[2] == W + 2);
    double border = 0, inner = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H + 2; i++)
            for (int j = 0; j < W + 2; j++) {
                float x = p->val[(b * (H + 2) + i) * (W + 2) + j];
                if (i == 0 || j == 0 || i == H + 1 || j == W + 1) border = fmax(border, fabs(x));
                else inner = fmax(inner, fabs(x - img[(b * H + i - 1) * W + j - 1]));
            }
    SP_ASSERT_CLOSE(border, 0.0, 0.0);
    SP_ASSERT_CLOSE(inner, 0.0, 0.0);
    const int oh = 6, ow = 6;
    sp_tensor *a = sp_stn_sample(t, ti, view2(t, th, NULL, B, 6), oh, ow, 5.0f, 5.0f);
    sp_tensor *s = sp_stn_sample(t, p, view2(t, ths, NULL, B, 6), oh, ow, 5.0f, 5.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (int j = 0; j < oh * ow; j++) SP_ASSERT_CLOSE(s->val[j], a->val[j], 1e-6);
    // b = 1: grid points with X or Y <= -1 read only the zero border
    for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) {
            double X = -3.0 + j, Y = -3.0 + i;
            float got = s->val[oh * ow + i * ow + j];
            if (X <= -1 || Y <= -1) SP_ASSERT_CLOSE(got, 0.0, 0.0);
            else SP_ASSERT_CLOSE(got, a->val[oh * ow + i * ow + j], 1e-6);
        }
    sp_tape_destroy(t);
}

/* ---- gradients ---- */

typedef struct stn_case {
    int op;           // 0 sample, 1 scatter, 2 pad then sample
    int H, W, oh, ow; // image and grid sizes
    float eh, ew;     // grid extents
    const float *base;  // (B, 6) base theta; the theta input is a small delta on it
} stn_case;

/* theta = base + delta with d theta / d delta = 1, so the op's theta tensor
 * shares delta's grad buffer. */
static sp_tensor *theta_of(sp_tape *t, const stn_case *k, sp_tensor *delta) {
    const int B = delta->shape[0];
    float *v = sp_tape_alloc(t, sizeof(float) * 6 * B);
    if (!v) return NULL;
    for (int i = 0; i < 6 * B; i++) v[i] = k->base[i] + delta->val[i];
    return view2(t, v, delta->grad, B, 6);
}

// inputs: op 0, 2: img (Bi, H, W), delta (B, 6); op 1: vals (B, oh, ow), delta (B, 6)
static sp_tensor *build_stn(sp_tape *t, sp_tensor **in, void *ctx) {
    const stn_case *k = ctx;
    sp_tensor *th = theta_of(t, k, in[1]);
    switch (k->op) {
    case 0: return sp_stn_sample(t, in[0], th, k->oh, k->ow, k->eh, k->ew);
    case 1: return sp_stn_scatter(t, in[0], th, k->H, k->W, k->eh, k->ew);
    default: return sp_stn_sample(t, sp_pad1(t, in[0]), th, k->oh, k->ow, k->eh, k->ew);
    }
}

/* Gradients to the image / values, at general transforms (the op is linear in
 * them, so there are no kinks). */
static void test_grad_data(void) {
    static const struct { int Bi, K, H, W, oh, ow; float eh, ew; } cs[] = {
        {1, 1, 2, 2, 1, 1, 0.0f, 0.0f}, {2, 3, 5, 7, 4, 3, 6.0f, 3.3f}, {1, 4, 6, 5, 3, 5, 5.0f, 5.0f},
        {3, 1, 4, 9, 5, 5, 4.0f, 8.0f},
    };
    float base[72];
    uint64_t seed = 500;
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        const int B = cs[c].Bi * cs[c].K;
        random_theta(base, B, cs[c].H, cs[c].W, 60 + c);
        for (int op = 0; op < 3; op++) {
            stn_case k = {op, cs[c].H, cs[c].W, cs[c].oh, cs[c].ow, cs[c].eh, cs[c].ew, base};
            sp_gc_input spec[2] = {
                {3, {cs[c].Bi, cs[c].H, cs[c].W}, -1, 1, 1},
                {2, {B, 6}, -0.02f, 0.02f, 0},
            };
            if (op == 1) spec[0] = (sp_gc_input){3, {B, cs[c].oh, cs[c].ow}, -1, 1, 1};
            SP_ASSERT_GRADCHECK(build_stn, &k, 2, spec, seed++, SP_GC_ATOL, SP_GC_RTOL);
        }
    }
}

/* Gradients to theta (and data at the same time) away from the kinks; see
 * the file comment. Some points of each grid are clipped. */
static void test_grad_theta(void) {
    // integer linear part, half-integer translation: (Bi=1) x K=4
    static const float base[24] = {
        1, 0, 0.5f, 0, 1, 1.5f,      // plain shift
        2, -1, 1.5f, 1, 1, -0.5f,    // shear + scale, partly clipped
        -1, 0, 4.5f, 0, 2, -2.5f,    // mirrored, top rows clipped
        0, 1, 6.5f, -1, 0, 3.5f,     // rotation, right side clipped
    };
    static const struct { int Bi, H, W, oh, ow; } cs[] = {{1, 6, 7, 3, 4}, {4, 5, 5, 4, 2}, {2, 8, 6, 5, 3}};
    uint64_t seed = 700;
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        const int B = 4, Bi = cs[c].Bi;
        for (int op = 0; op < 3; op++) {
            stn_case k = {op, cs[c].H, cs[c].W, cs[c].oh, cs[c].ow, cs[c].oh - 1.0f,
                          cs[c].ow - 1.0f, base};
            sp_gc_input spec[2] = {
                {3, {Bi, cs[c].H, cs[c].W}, -1, 1, 1},
                {2, {B, 6}, -0.02f, 0.02f, 1},
            };
            if (op == 1) spec[0] = (sp_gc_input){3, {B, cs[c].oh, cs[c].ow}, -1, 1, 1};
            sp_gc_result r;
            int ok = sp_gradcheck(build_stn, &k, 2, spec, seed, SP_GC_ATOL, SP_GC_RTOL, &r);
            if (!ok) printf("\n    op %d case %zu: %s\n", op, c, r.worst);
            CU_ASSERT(ok);
            CU_ASSERT_EQUAL(r.n_skipped, 0);  // the construction keeps clear of kinks
            SP_ASSERT_GRADCHECK(build_stn, &k, 2, spec, seed + 1, SP_GC_ATOL, SP_GC_RTOL);
            seed += 2;
        }
    }
}

/* Axis-aligned transforms (theta[1] = theta[3] = 0, SuPAIR's boxes) take a
 * fast path with per-row and per-column coordinates. Its values and
 * gradients must equal the general per-point path, which the same theta
 * takes once theta[1] and theta[3] are 2e-38: those products are far below
 * the resolution of the other terms (translations are kept away from 0), so
 * the coordinates are the same floats. Bilinear reads and theta gradients
 * must agree bit for bit; the splats (the scatter's values, sampling's data
 * gradient) sum a pixel's contributions in another order, so to 1e-5
 * (up to ~30 terms of size <= 1 per pixel: a few 1e-6 of rounding). The general path is checked against the references and finite
 * differences above. */
static long count_differ(const float *a, const float *b, long n, int exact) {
    long bad = 0;
    for (long i = 0; i < n; i++)
        bad += exact ? a[i] != b[i] : !(fabsf(a[i] - b[i]) <= 1e-5f * fmaxf(1.0f, fabsf(b[i])));
    return bad;
}

typedef struct axis_geom {
    int H, W, oh, ow;
    float eh, ew;
} axis_geom;

static void run_axis_case(sp_tape *t, const axis_geom *gm, int op, int Bi, int K, const float *th,
                          float **val, float **gimg, float **gth) {
    const int B = Bi * K, H = gm->H, W = gm->W, oh = gm->oh, ow = gm->ow;
    const int n_in = op == 1 ? B * oh * ow : Bi * H * W;
    float *in = sp_tape_alloc(t, sizeof(float) * n_in);
    *gimg = sp_tape_calloc(t, sizeof(float) * n_in);
    *gth = sp_tape_calloc(t, sizeof(float) * B * 6);
    float *thc = sp_tape_alloc(t, sizeof(float) * B * 6);
    memcpy(thc, th, sizeof(float) * B * 6);
    sp_gc_fill_uniform(in, n_in, -1, 1, 77 + op);
    sp_tensor *tth = view2(t, thc, *gth, B, 6), *out;
    if (op == 1)
        out = sp_stn_scatter(t, view3(t, in, *gimg, B, oh, ow), tth, H, W, gm->eh, gm->ew);
    else if (op == 0)
        out = sp_stn_sample(t, view3(t, in, *gimg, Bi, H, W), tth, oh, ow, gm->eh, gm->ew);
    else
        out = sp_stn_sample(t, sp_pad1(t, view3(t, in, *gimg, Bi, H, W)), tth, oh, ow, gm->eh,
                            gm->ew);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    sp_gc_fill_uniform(out->grad, out->size, -1, 1, 88 + op);
    *val = out->val;
    sp_tape_backward(t, out, 0.0f);
    *val = sp_tape_alloc(t, sizeof(float) * out->size);
    memcpy(*val, out->val, sizeof(float) * out->size);
}

/* Theta rows of Bi * K axis-aligned boxes over an image of about h x w:
 * scales of either sign (b = 5 mirrored), boxes reaching past the edges. */
static void axis_thetas(float *th, int B, float h, float w, float scale) {
    float r[4];
    for (int b = 0; b < B; b++) {
        sp_gc_fill_uniform(r, 4, 0, 1, 600 + b);
        float sx = (b == 5 ? -1.0f : 1.0f) * scale * (0.3f + 1.2f * r[0]);
        float sy = scale * (0.4f + r[1]);
        th[6 * b + 0] = sx, th[6 * b + 1] = 0.0f, th[6 * b + 2] = -0.3f * w + 1.1f * w * r[2];
        th[6 * b + 3] = 0.0f, th[6 * b + 4] = sy, th[6 * b + 5] = -0.3f * h + h * r[3];
    }
}

static void check_axis_aligned(const axis_geom *gm, float scale) {
    const int Bi = 3, K = 4, B = Bi * K;
    // one tape per path: backward runs every node recorded on a tape
    sp_tape *t = sp_tape_create(1 << 24), *t2 = sp_tape_create(1 << 24);
    float th[72], thg[72];
    axis_thetas(th, B, (float)gm->H, (float)gm->W, scale);
    memcpy(thg, th, sizeof th);
    for (int b = 0; b < B; b++) thg[6 * b + 1] = thg[6 * b + 3] = 2e-38f;
    for (int op = 0; op < 3; op++) {
        sp_tape_reset(t);
        sp_tape_reset(t2);
        float *va, *ga, *gta, *vg, *gg, *gtg;
        run_axis_case(t, gm, op, Bi, K, th, &va, &ga, &gta);
        run_axis_case(t2, gm, op, Bi, K, thg, &vg, &gg, &gtg);
        const long img = (long)Bi * gm->H * gm->W, grid = (long)B * gm->oh * gm->ow;
        const long nv = op == 1 ? (long)B * gm->H * gm->W : grid;
        const long ni = op == 1 ? grid : img;
        // splats: the scatter's values (op 1), sampling's data gradients
        const long bad_v = count_differ(va, vg, nv, op != 1);
        const long bad_g = count_differ(ga, gg, ni, op == 1);
        const long bad_t = count_differ(gta, gtg, (long)B * 6, 1);
        if (bad_v || bad_g || bad_t)
            printf("\n    %dx%d grid on %dx%d, op %d: %ld values, %ld data grads, %ld theta grads "
                   "differ\n", gm->oh, gm->ow, gm->H, gm->W, op, bad_v, bad_g, bad_t);
        CU_ASSERT_EQUAL(bad_v, 0);
        CU_ASSERT_EQUAL(bad_g, 0);
        CU_ASSERT_EQUAL(bad_t, 0);
    }
    sp_tape_destroy(t);
    sp_tape_destroy(t2);
}

static void test_axis_aligned(void) {
    // small grids: the separable path (source rows gathered once)
    check_axis_aligned(&(axis_geom){9, 11, 6, 7, 6.0f, 5.5f}, 1.0f);
    // a wide grid over many source rows: more than the separable path's
    // buffers hold, so the per-point loops of the fast path run
    check_axis_aligned(&(axis_geom){120, 130, 60, 300, 60.0f, 150.0f}, 1.0f);
}

/* sp_stn_scatter_ones against sp_stn_scatter of a block of ones: the values
 * against the double reference, at least as close as the point-by-point
 * splats, the theta gradient bit for bit (the same backward, each grid
 * row's values read from one row of ones). Axis-aligned boxes (the
 * separable form; SuPAIR's 28 x 28 glimpse on a 50 x 50 scene among them)
 * and general maps (the splat loop). */
static void check_scatter_ones(const axis_geom *gm, int general) {
    const int B = 12, H = gm->H, W = gm->W, oh = gm->oh, ow = gm->ow, HW = H * W;
    sp_tape *t = sp_tape_create(1 << 24), *t2 = sp_tape_create(1 << 24);
    float th[72], ga[72] = {0}, gb[72] = {0};
    if (general) random_theta(th, B, H, W, 31);
    else axis_thetas(th, B, (float)H, (float)W, (float)oh / (float)H);
    float *ones = sp_tape_alloc(t2, sizeof(float) * B * oh * ow);
    for (int e = 0; e < B * oh * ow; e++) ones[e] = 1.0f;
    sp_tensor *a = sp_stn_scatter_ones(t, view2(t, th, ga, B, 6), oh, ow, H, W, gm->eh, gm->ew);
    sp_tensor *b = sp_stn_scatter(t2, view3(t2, ones, NULL, B, oh, ow), view2(t2, th, gb, B, 6), H,
                                  W, gm->eh, gm->ew);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(a->ndim, 3);
    CU_ASSERT(a->shape[0] == B && a->shape[1] == H && a->shape[2] == W);
    /* values: both against the double reference, relative to the largest */
    double *ref = sp_tape_alloc(t2, sizeof(double) * HW);
    double err_a = 0, err_b = 0;
    for (int k = 0; k < B; k++) {
        ref_scatter(ones, oh, ow, th + 6 * k, H, W, gm->eh, gm->ew, ref);
        double top = 1.0;
        for (int p = 0; p < HW; p++) top = fabs(ref[p]) > top ? fabs(ref[p]) : top;
        for (int p = 0; p < HW; p++) {
            err_a = fmax(err_a, fabs(a->val[(long)k * HW + p] - ref[p]) / top);
            err_b = fmax(err_b, fabs(b->val[(long)k * HW + p] - ref[p]) / top);
        }
    }
    /* the float coordinates alone cost a few 1e-6 against the double
     * reference (test_scatter_forward allows 2e-5); the product of two
     * profiles sums fewer terms per pixel, so it must be no further off
     * than the splats */
    const long bad_v = !(err_a <= 2e-5) || !(err_a <= err_b + 1e-6);
    double mass = 0;  // every grid point adds one unit of weight
    for (int p = 0; p < HW; p++) mass += a->val[p];
    sp_gc_fill_uniform(a->grad, a->size, -1, 1, 901);
    memcpy(b->grad, a->grad, sizeof(float) * a->size);
    sp_tape_backward(t, a, 0.0f);
    sp_tape_backward(t2, b, 0.0f);
    const long bad_t = count_differ(ga, gb, (long)B * 6, 1);
    if (bad_v || bad_t)
        printf("\n    %dx%d ones on %dx%d (%s): values off by %.3g (splats %.3g), %ld theta "
               "grads differ\n", oh, ow, H, W, general ? "general" : "axis-aligned", err_a, err_b,
               bad_t);
    CU_ASSERT_EQUAL(bad_v, 0);
    CU_ASSERT_EQUAL(bad_t, 0);
    SP_ASSERT_CLOSE(mass, oh * ow, 1e-3);
    sp_tape_destroy(t);
    sp_tape_destroy(t2);
}

static void test_scatter_ones(void) {
    const axis_geom small = {9, 11, 6, 7, 6.0f, 5.5f}, supair = {50, 50, 28, 28, 28.0f, 28.0f};
    const axis_geom wide = {120, 130, 60, 300, 60.0f, 150.0f};
    for (int general = 0; general < 2; general++) {
        check_scatter_ones(&small, general);
        check_scatter_ones(&supair, general);
        check_scatter_ones(&wide, general);
    }
    sp_tape *t = sp_tape_create(1 << 16);
    CU_ASSERT_PTR_NULL(sp_stn_scatter_ones(t, NULL, 4, 4, 8, 8, 3.0f, 3.0f));
    float th[6] = {1, 0, 0, 0, 1, 0};
    CU_ASSERT_PTR_NULL(sp_stn_scatter_ones(t, view2(t, th, NULL, 2, 3), 4, 4, 8, 8, 3.0f, 3.0f));
    CU_ASSERT_PTR_NULL(sp_stn_scatter_ones(t, view2(t, th, NULL, 1, 6), 4, 4, 1, 8, 3.0f, 3.0f));
    sp_tape_destroy(t);
}

/* Without gradients nothing is recorded; with them, one node per op. */
static void test_nodes(void) {
    sp_tape *t = sp_tape_create(1 << 20);
    float img[2 * 16], th[12], g[32] = {0};
    sp_gc_fill_uniform(img, 32, 0, 1, 1);
    random_theta(th, 2, 4, 4, 2);
    sp_tensor *s = sp_stn_sample(t, view3(t, img, g, 2, 4, 4), view2(t, th, NULL, 2, 6), 3, 3, 3, 3);
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 1);
    CU_ASSERT_PTR_NOT_NULL(s->grad);
    sp_tape_reset(t);
    sp_tape_set_grad(t, 0);
    s = sp_stn_sample(t, sp_pad1(t, view3(t, img, g, 2, 4, 4)), view2(t, th, NULL, 2, 6), 3, 3, 3, 3);
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    CU_ASSERT_PTR_NULL(s->grad);
    CU_ASSERT_PTR_NULL(sp_stn_sample(t, NULL, view2(t, th, NULL, 2, 6), 3, 3, 3, 3));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_destroy(t);
}

/* SuPAIR's sizes: 256 scenes x 3 glimpses of 28x28 from 50x50 (+ the padded
 * 52x52 visibility pass) and the 3 score-map scatters, forward + backward.
 * Prints the process CPU time (wall time means little on a shared machine);
 * asserts only a generous bound that also holds under the sanitizers. */
static void test_speed(void) {
    const int Bi = 256, K = 3, B = Bi * K, H = 50, W = 50, P = 28 * 28;
    sp_tape *t = sp_tape_create(64u << 20);
    float *img = sp_tape_alloc(t, sizeof(float) * Bi * H * W);
    float *gimg = sp_tape_calloc(t, sizeof(float) * Bi * H * W);
    float *th = sp_tape_alloc(t, sizeof(float) * B * 6), *gth = sp_tape_calloc(t, sizeof(float) * B * 6);
    float *ones = sp_tape_alloc(t, sizeof(float) * B * P);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ones);
    sp_gc_fill_uniform(img, (long)Bi * H * W, 0, 1, 1);
    for (int b = 0; b < B; b++) {
        float r[4];
        sp_gc_fill_uniform(r, 4, 0, 1, 100 + b);
        float sx = 0.3f + 0.6f * r[0];
        const float v[6] = {sx, 0, 45 * r[2], 0, sx * (0.75f + 0.5f * r[1]), 45 * r[3]};
        memcpy(th + 6 * b, v, sizeof v);
    }
    for (int i = 0; i < B * P; i++) ones[i] = 1.0f;
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    sp_tensor *ti = view3(t, img, gimg, Bi, H, W), *tth = view2(t, th, gth, B, 6);
    sp_tensor *g = sp_stn_sample(t, ti, tth, 28, 28, 28, 28);
    sp_tensor *v = sp_stn_sample(t, sp_pad1(t, ti), tth, 28, 28, 28, 28);
    sp_tensor *s = sp_stn_scatter(t, view3(t, ones, NULL, B, 28, 28), tth, H, W, 28, 28);
    CU_ASSERT_FATAL(g && v && s);
    for (long i = 0; i < g->size; i++) g->grad[i] = 1e-3f, v->grad[i] = 1e-3f;
    for (long i = 0; i < s->size; i++) s->grad[i] = 1e-3f;
    sp_tape_backward(t, g, 0.0f);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    printf("(%d x %d points, 3 ops fwd+bwd: %.1f ms CPU) ", B, P, ms);
    CU_ASSERT(ms < 5000);
    sp_tape_destroy(t);
}

int main(void) {
    static const sp_test_case fwd[] = {
        {"sample vs double reference", test_sample_forward},
        {"scatter vs double reference", test_scatter_forward},
        {"identity theta reads the pixels", test_identity},
        {"scatter is the adjoint of sample", test_adjoint},
        {"K transforms per image", test_shared_images},
        {"non-finite theta stays in bounds", test_nonfinite_theta},
        {"pad1 and the +1 theta shift", test_pad_shift},
        {NULL, NULL},
    };
    static const sp_test_case grad[] = {
        {"image / values gradients", test_grad_data},
        {"theta gradients away from kinks", test_grad_theta},
        {"axis-aligned fast path == general path", test_axis_aligned},
        {"scatter of ones == scatter of a block of ones", test_scatter_ones},
        {"tape nodes and grad switch", test_nodes},
        {"SuPAIR-sized speed", test_speed},
        {NULL, NULL},
    };
    static const sp_test_suite suites[] = {{"stn forward", fwd}, {"stn gradients", grad}, {NULL, NULL}};
    return sp_test_main(suites);
}
