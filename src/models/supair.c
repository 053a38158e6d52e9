/* SuPAIR (MODELS.md, reference stelzner/supair): an LSTM over the whole scene
 * proposes up to K objects (presence probability and a Gaussian z_where);
 * glimpses are cut out with a spatial transformer and scored by an object SPN,
 * the rest of the scene by a background SPN, with occluded and out-of-scene
 * pixels marginalised at the SPN leaves. The object count is enumerated
 * exactly (k = 0..K), so there is no REINFORCE: the whole ELBO is
 * differentiable and one training step is one forward and one backward pass.
 *
 * The model fills the vtable of model.h; its loss is the SUM over the local
 * scenes of -ELBO. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "supair/init.h"
#include "supair/rng.h"
#include "supair/rnn.h"
#include "supair/sparse.h"
#include "supair/spn.h"
#include "supair/stn.h"
#include "supair/supair.h"
#include "supair/timer.h"

#define SCENE 50
#define SCENE_PX (SCENE * SCENE)
#define KMAX 8

/* RNG sites (rng.h convention: streams = (step, global example, site)). */
#define SITE_ZWHERE 0x53500001u
#define SITE_EVAL 0x53500002u

static const sp_cfg_key supair_keys[] = {
    {"supair.max_objects", SP_CFG_INT, "3", "N_max: inference steps = most objects per scene", 1,
     KMAX, NULL, 0},
    {"supair.lstm_units", SP_CFG_INT, "256", "units of the inference LSTM", 1, 8192, NULL, 1},
    {"supair.head_units", SP_CFG_INT, "50", "hidden sigmoid units of the per-step output MLP", 1,
     4096, NULL, 1},
    {"supair.forget_bias", SP_CFG_FLOAT, "1.0", "LSTM forget-gate bias (TF BasicLSTMCell)", -100,
     100, NULL, 0},
    {"supair.glimpse", SP_CFG_INT, "28", "glimpse side in pixels (object SPN sees glimpse^2)", 2,
     256, NULL, 1},
    {"supair.scale_min", SP_CFG_FLOAT, "0.3", "smallest glimpse scale sx (box = glimpse*sx px)",
     1e-3, 100, NULL, 0},
    {"supair.scale_max", SP_CFG_FLOAT, "0.9", "largest glimpse scale sx", 1e-3, 100, NULL, 0},
    {"supair.ratio_min", SP_CFG_FLOAT, "0.75", "smallest aspect ratio sy/sx", 1e-3, 100, NULL, 0},
    {"supair.ratio_max", SP_CFG_FLOAT, "1.25", "largest aspect ratio sy/sx", 1e-3, 100, NULL, 0},
    {"supair.pos_max", SP_CFG_FLOAT, "45", "box top-left x and y lie in [0, pos_max] pixels", 0,
     1e4, NULL, 0},
    {"supair.std_max", SP_CFG_FLOAT, "0.3", "z_where posterior std = std_max * sigmoid(.)", 1e-6,
     100, NULL, 0},
    {"supair.count_prior", SP_CFG_FLOAT, "0.7", "log p(n=k) = log(c) - c*k", 1e-6, 100, NULL, 0},
    {"supair.overlap_rate", SP_CFG_FLOAT, "120",
     "rate of the Exponential prior on each present object's overlap ratio", 1e-6, 1e6, NULL, 0},
    {"supair.obj_depth", SP_CFG_INT, "2", "object SPN: depth of each random binary split", 1, 12,
     NULL, 1},
    {"supair.obj_reps", SP_CFG_INT, "6", "object SPN: repetitions", 1, 1024, NULL, 1},
    {"supair.obj_leaves", SP_CFG_INT, "20", "object SPN: Gaussians per leaf region", 1, 1024, NULL,
     1},
    {"supair.obj_sums", SP_CFG_INT, "20", "object SPN: sums per inner sum region", 1, 1024, NULL,
     1},
    {"supair.obj_var_min", SP_CFG_FLOAT, "0.12", "object SPN: smallest leaf variance (noisy: 0.25)",
     1e-6, 100, NULL, 0},
    {"supair.obj_var_max", SP_CFG_FLOAT, "0.35", "object SPN: largest leaf variance", 1e-6, 100,
     NULL, 0},
    {"supair.bg_depth", SP_CFG_INT, "1", "background SPN: depth of each random binary split", 1, 12,
     NULL, 1},
    {"supair.bg_reps", SP_CFG_INT, "3", "background SPN: repetitions", 1, 1024, NULL, 1},
    {"supair.bg_leaves", SP_CFG_INT, "6", "background SPN: Gaussians per leaf region", 1, 1024, NULL,
     1},
    {"supair.bg_sums", SP_CFG_INT, "3", "background SPN: sums per inner region (depth > 1 only)", 1,
     1024, NULL, 1},
    {"supair.bg_var_min", SP_CFG_FLOAT, "0.002", "background SPN: smallest leaf variance", 1e-6, 100,
     NULL, 0},
    {"supair.bg_var_max", SP_CFG_FLOAT, "0.12",
     "background SPN: largest leaf variance (sprites 0.16, noisy 0.06)", 1e-6, 100, NULL, 0},
    {"supair.structure_seed", SP_CFG_INT, "-1",
     "seed of the SPNs' random structure (-1: derived from seed); kept in checkpoints", -1, 4e18,
     NULL, 1},
    {"supair.iou_pad", SP_CFG_FLOAT, "5", "pixels added on each side of a predicted box for IoU", 0,
     100, NULL, 0},
};

static const char *const supair_train_terms[] = {"elbo", "count"};
static const char *const supair_eval_metrics[] = {"count_acc", "iou", "elbo"};

typedef struct supair {
    int K, H, A, G;  // steps, LSTM units, head units, glimpse side
    float forget_bias, iou_pad;
    sp_supair_bounds bd;
    sp_supair_prior pr;
    uint64_t structure_seed;
    sp_spn *obj, *bg;
    int i_wx, i_wh, i_b, i_w1, i_b1, i_w2, i_b2;
    int wx_slabs; /* lstm/W_x kept in column slabs (sp_supair_linear_slabs) */
    sp_supair_profile *prof;
} supair;

/* Everything one forward pass produces that loss and eval read. */
typedef struct fwd {
    sp_tensor *z[KMAX];    // (B, SP_SUPAIR_ZW) sampled z rows per step
    sp_tensor *zm[KMAX];   // (B, SP_SUPAIR_ZW) posterior-mean rows (eval only)
    sp_tensor *loss;       // (1)
    double *elbo, *count;  // (B)
} fwd;

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sp_supair_structure_seed(const void *model) {
    return ((const supair *)model)->structure_seed;
}

void sp_supair_set_profile(void *model, sp_supair_profile *prof) {
    ((supair *)model)->prof = prof;
}

/* ---- profiling: forward sections are timed directly. Backward time is
 * attributed by marker nodes: the marker recorded right after a section runs
 * right before that section's backward, so each marker closes the interval
 * of the section named by the marker before it (pending) and opens its own. */

typedef struct marker_ctx {
    sp_supair_profile *prof;
    int comp;
} marker_ctx;

static void marker_backward(void *p) {
    marker_ctx *k = p;
    sp_supair_profile *pf = k->prof;
    double now = sp_time_now();
    if (pf->last_mark > 0.0 && pf->pending >= 0) pf->bwd[pf->pending] += now - pf->last_mark;
    pf->last_mark = now;
    pf->pending = k->comp;
}

static void mark(supair *m, sp_tape *t, int comp, double *t0) {
    if (!m->prof) return;
    double now = sp_time_now();
    if (*t0 > 0.0 && comp >= 0) m->prof->fwd[comp] += now - *t0;
    *t0 = now;
    if (!sp_tape_grad_enabled(t)) return;
    marker_ctx *k = sp_tape_alloc(t, sizeof *k);
    if (!k) return;
    *k = (marker_ctx){m->prof, comp};
    sp_tape_record(t, marker_backward, k);
}

/* ---- vtable: create / init ---- */

static int add(sp_params *p, int *idx, const char *name, int ndim, const int *shape,
               sp_error *err) {
    *idx = sp_params_add(p, name, ndim, shape, err);
    return *idx < 0 ? err->code : SP_OK;
}

static void supair_destroy(void *mv) {
    supair *m = mv;
    if (!m) return;
    sp_spn_free(m->obj);
    sp_spn_free(m->bg);
    free(m);
}

static int supair_create(void **out, const sp_config *cfg, sp_params *p, sp_error *err) {
    *out = NULL;
    supair *m = calloc(1, sizeof *m);
    if (!m) return sp_fail(err, SP_ERUNTIME, "supair: out of memory");
    m->K = (int)sp_config_int(cfg, "supair.max_objects");
    m->H = (int)sp_config_int(cfg, "supair.lstm_units");
    m->A = (int)sp_config_int(cfg, "supair.head_units");
    m->G = (int)sp_config_int(cfg, "supair.glimpse");
    m->forget_bias = (float)sp_config_float(cfg, "supair.forget_bias");
    m->iou_pad = (float)sp_config_float(cfg, "supair.iou_pad");
    m->bd = (sp_supair_bounds){(float)sp_config_float(cfg, "supair.scale_min"),
                               (float)sp_config_float(cfg, "supair.scale_max"),
                               (float)sp_config_float(cfg, "supair.ratio_min"),
                               (float)sp_config_float(cfg, "supair.ratio_max"),
                               (float)sp_config_float(cfg, "supair.pos_max"),
                               (float)sp_config_float(cfg, "supair.std_max")};
    m->pr = (sp_supair_prior){(float)sp_config_float(cfg, "supair.count_prior"),
                              (float)sp_config_float(cfg, "supair.overlap_rate")};
    int rc = SP_OK;
    if (m->bd.scale_min > m->bd.scale_max) {
        rc = sp_fail(err, SP_EINPUT, "supair.scale_min %g > supair.scale_max %g",
                     m->bd.scale_min, m->bd.scale_max);
        goto fail;
    }
    if (m->bd.ratio_min > m->bd.ratio_max) {
        rc = sp_fail(err, SP_EINPUT, "supair.ratio_min %g > supair.ratio_max %g",
                     m->bd.ratio_min, m->bd.ratio_max);
        goto fail;
    }
    int64_t ss = sp_config_int(cfg, "supair.structure_seed");
    uint64_t seed = sp_config_has(cfg, "seed") ? (uint64_t)sp_config_int(cfg, "seed") : 1;
    // derived seeds stay below 2^62 so the value fits the key's range if written back
    m->structure_seed = ss >= 0 ? (uint64_t)ss : (mix64(seed ^ 0x5350414952ull) >> 2);

    sp_spn_config oc = {m->G * m->G,
                        (int)sp_config_int(cfg, "supair.obj_depth"),
                        (int)sp_config_int(cfg, "supair.obj_reps"),
                        (int)sp_config_int(cfg, "supair.obj_leaves"),
                        (int)sp_config_int(cfg, "supair.obj_sums"),
                        (float)sp_config_float(cfg, "supair.obj_var_min"),
                        (float)sp_config_float(cfg, "supair.obj_var_max"),
                        m->structure_seed};
    sp_spn_config bc = {SCENE_PX,
                        (int)sp_config_int(cfg, "supair.bg_depth"),
                        (int)sp_config_int(cfg, "supair.bg_reps"),
                        (int)sp_config_int(cfg, "supair.bg_leaves"),
                        (int)sp_config_int(cfg, "supair.bg_sums"),
                        (float)sp_config_float(cfg, "supair.bg_var_min"),
                        (float)sp_config_float(cfg, "supair.bg_var_max"),
                        mix64(m->structure_seed) >> 2};
    if ((rc = sp_spn_create(&m->obj, &oc, err))) {
        sp_error_wrap(err, "supair object SPN (supair.obj_*)");
        goto fail;
    }
    if ((rc = sp_spn_create(&m->bg, &bc, err))) {
        sp_error_wrap(err, "supair background SPN (supair.bg_*)");
        goto fail;
    }
    const int G4 = 4 * m->H;
    /* W_x (10 MB) in column slabs when its width allows: the sparse input
     * projection then reads it, and writes its gradient, a slab at a time
     * in address order (sparse.h); checkpoints stay row-major. */
    m->wx_slabs = G4 % SP_SPARSE_SLAB == 0;
    if ((rc = add(p, &m->i_wx, "lstm/W_x", 2, (int[]){SCENE_PX, G4}, err)) ||
        (m->wx_slabs && (rc = sp_params_set_slab(p, m->i_wx, SP_SPARSE_SLAB, err))) ||
        (rc = add(p, &m->i_wh, "lstm/W_h", 2, (int[]){m->H, G4}, err)) ||
        (rc = add(p, &m->i_b, "lstm/b", 1, (int[]){G4}, err)) ||
        (rc = add(p, &m->i_w1, "head/W1", 2, (int[]){m->H, m->A}, err)) ||
        (rc = add(p, &m->i_b1, "head/b1", 1, (int[]){m->A}, err)) ||
        (rc = add(p, &m->i_w2, "head/W2", 2, (int[]){m->A, 9}, err)) ||
        (rc = add(p, &m->i_b2, "head/b2", 1, (int[]){9}, err)) ||
        (rc = sp_spn_add_params(m->obj, p, "obj", err)) ||
        (rc = sp_spn_add_params(m->bg, p, "bg", err)))
        goto fail;
    *out = m;
    return SP_OK;
fail:
    supair_destroy(m);
    return rc;
}

static int supair_init_params(void *mv, sp_params *p, uint64_t seed, sp_error *err) {
    supair *m = mv;
    // TF's BasicLSTMCell draws ONE Glorot kernel over [input, h] x 4H: both
    // blocks use the fans of the whole kernel
    const int fan_in = SCENE_PX + m->H, fan_out = 4 * m->H;
    int rc;
    if ((rc = sp_init_param_glorot(p, "lstm/W_x", fan_in, fan_out, seed, err)) ||
        (rc = sp_init_param_glorot(p, "lstm/W_h", fan_in, fan_out, seed, err)) ||
        (rc = sp_init_param_constant(p, "lstm/b", 0.0f, err)) ||
        (rc = sp_init_param_glorot(p, "head/W1", 0, 0, seed, err)) ||
        (rc = sp_init_param_constant(p, "head/b1", 0.1f, err)) ||
        (rc = sp_init_param_glorot(p, "head/W2", 0, 0, seed, err)) ||
        (rc = sp_init_param_constant(p, "head/b2", 0.1f, err)))
        return rc;
    sp_spn_init_params(m->obj, p, seed);
    sp_spn_init_params(m->bg, p, seed);
    return SP_OK;
}

/* ---- the forward pass ---- */

/* eps (K, B, 4): standard normals of scene `index[b]` at (step, site). */
static void draw_eps(float *eps, int K, int B, const int64_t *index, int64_t step, uint64_t seed,
                     uint32_t site) {
    for (int b = 0; b < B; b++) {
        sp_rng r;
        int64_t g = index ? index[b] : b;
        sp_rng_init(&r, seed, (uint32_t)step, (uint32_t)g, site ^ ((uint32_t)(g >> 32) << 16));
        for (int s = 0; s < K; s++)
            for (int j = 0; j < 4; j++) eps[((size_t)s * B + b) * 4 + j] = sp_rng_normal(&r);
    }
}

/* Builds the whole ELBO of B scenes x (B, 50, 50) on the tape. mean_rows:
 * also compute the posterior-mean z rows (eval boxes). Returns SP_OK or an
 * error (tape failure = out of memory or a shape bug). */
static int forward(supair *m, sp_tape *t, const sp_params *p, const float *x, int B,
                   const int64_t *index, int64_t step, uint64_t seed, uint32_t site,
                   int mean_rows, fwd *o, sp_error *err) {
    const int K = m->K, G = m->G, GG = G * G;
    double t0 = 0.0;
    memset(o, 0, sizeof *o);
    o->elbo = sp_tape_alloc(t, (size_t)B * sizeof(double));
    o->count = sp_tape_alloc(t, (size_t)B * sizeof(double));
    float *eps = sp_tape_alloc(t, (size_t)K * B * 4 * sizeof(float));
    if (!o->elbo || !o->count || !eps) return sp_fail(err, SP_ERUNTIME, "supair: out of memory");
    draw_eps(eps, K, B, index, step, seed, site);

    sp_tensor *X = sp_tensor_view(t, (float *)x, NULL, 2, (int[]){B, SCENE_PX});
    sp_tensor *Wx = sp_params_tensor(t, p, m->i_wx), *Wh = sp_params_tensor(t, p, m->i_wh);
    sp_tensor *bl = sp_params_tensor(t, p, m->i_b);
    sp_tensor *W1 = sp_params_tensor(t, p, m->i_w1), *b1 = sp_params_tensor(t, p, m->i_b1);
    sp_tensor *W2 = sp_params_tensor(t, p, m->i_w2), *b2 = sp_params_tensor(t, p, m->i_b2);

    // inference network: the input projection is the same at every step
    mark(m, t, SP_SUPAIR_T_REST, &t0);
    sp_tensor *xproj = m->wx_slabs ? sp_supair_linear_slabs(t, X, Wx, bl)
                                   : sp_supair_linear(t, X, Wx, bl);
    sp_tensor *h = NULL, *c = NULL;
    for (int s = 0; s < K; s++) {
        sp_tensor *hn, *cn;
        sp_lstm_cell(t, xproj, h, c, Wh, m->forget_bias, &hn, &cn);
        h = hn, c = cn;
        o->z[s] = sp_supair_head(t, h, W1, b1, W2, b2, eps + (size_t)s * B * 4, &m->bd);
        if (mean_rows) o->zm[s] = sp_supair_head(t, h, W1, b1, W2, b2, NULL, &m->bd);
    }
    mark(m, t, SP_SUPAIR_T_LSTM, &t0);

    // glimpses, object score maps, occlusion and visibility
    sp_tensor *theta = sp_supair_theta(t, o->z, K, 0.0f);
    sp_tensor *theta1 = sp_supair_theta(t, o->z, K, 1.0f);  // for the padded maps
    sp_tensor *img = sp_tensor_view(t, (float *)x, NULL, 3, (int[]){B, SCENE, SCENE});
    sp_tensor *glim = sp_stn_sample(t, img, theta, G, G, (float)G, (float)G);
    sp_tensor *raw = sp_stn_scatter_ones(t, theta, G, G, SCENE, SCENE, (float)G, (float)G);
    mark(m, t, SP_SUPAIR_T_STN, &t0);
    sp_tensor *pad = NULL;
    sp_supair_occlusion(t, raw, K, &pad);
    mark(m, t, SP_SUPAIR_T_REST, &t0);
    sp_tensor *vis = sp_stn_sample(t, pad, theta1, G, G, (float)G, (float)G);
    mark(m, t, SP_SUPAIR_T_STN, &t0);
    sp_tensor *marg_obj = sp_supair_one_minus(t, vis);

    // likelihoods: each glimpse once, the scene once per possible count
    // (the background SPN shares a scene's x-dependent leaf terms between
    // its K + 1 marginalisations and makes their weights, the light left
    // behind the first k objects, from the raw score maps in its kernels)
    sp_tensor *glim2 = glim ? sp_reshape(t, glim, 2, (int[]){B * K, GG}) : NULL;
    sp_tensor *marg2 = marg_obj ? sp_reshape(t, marg_obj, 2, (int[]){B * K, GG}) : NULL;
    mark(m, t, SP_SUPAIR_T_REST, &t0);
    sp_tensor *lpo = sp_spn_logp(t, m->obj, p, glim2, marg2);
    sp_tensor *raw2 = raw ? sp_reshape(t, raw, 2, (int[]){B * K, SCENE_PX}) : NULL;
    sp_tensor *lpb = sp_spn_logp_occluded(t, m->bg, p, X, raw2, K + 1);
    mark(m, t, SP_SUPAIR_T_SPN, &t0);
    sp_tensor *vis2 = vis ? sp_reshape(t, vis, 2, (int[]){B * K, GG}) : NULL;
    o->loss = sp_supair_elbo(t, o->z, K, lpo, vis2, lpb, &m->pr, o->elbo, o->count);
    mark(m, t, SP_SUPAIR_T_REST, &t0);
    if (m->prof) {
        m->prof->pending = -1;
        mark(m, t, -1, &t0);  // the first marker backward meets: starts its clock
    }
    if (!o->loss || sp_tape_failed(t))
        return sp_fail(err, SP_ERUNTIME, "supair: forward pass failed (out of memory?)");
    return SP_OK;
}

static sp_tensor *supair_loss(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b,
                              double *term_sums, sp_error *err) {
    supair *m = mv;
    fwd o;
    if (forward(m, t, p, b->x, b->n, b->index, b->step, b->seed, SITE_ZWHERE, 0, &o, err))
        return NULL;
    if (term_sums) {
        double se = 0.0, sc = 0.0;
        for (int i = 0; i < b->n; i++) se += o.elbo[i], sc += o.count[i];
        term_sums[0] = se;
        term_sums[1] = sc;
    }
    return o.loss;
}

/* Box [x, y, w, h] of a z row. */
static void zrow_box(const supair *m, const float *zr, float *box) {
    box[0] = zr[3], box[1] = zr[4], box[2] = (float)m->G * zr[1], box[3] = (float)m->G * zr[2];
}

static int supair_eval(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b, double *num,
                       double *den, sp_error *err) {
    supair *m = mv;
    const int K = m->K;
    int was = sp_tape_grad_enabled(t);
    sp_tape_set_grad(t, 0);
    fwd o;
    int rc = forward(m, t, p, b->x, b->n, b->index, b->step, b->seed, SITE_EVAL, 1, &o, err);
    sp_tape_set_grad(t, was);
    if (rc) return rc;
    for (int i = 0; i < b->n; i++) {
        int n_pred = 0;
        float pred[KMAX * 4];
        for (int s = 0; s < K; s++) {
            const float *zr = o.zm[s]->val + (size_t)i * SP_SUPAIR_ZW;
            n_pred += zr[0] > 0.5f;  // np.rint: ties to even, so 0.5 rounds to 0
            zrow_box(m, zr, pred + 4 * s);
        }
        if (b->counts) {
            int n_true = b->counts[i];
            num[0] += n_pred == n_true;
            den[0] += 1.0;
            if (b->boxes && n_true > 0) {
                int nt = n_true < b->max_objects ? n_true : b->max_objects;
                num[1] += sp_supair_scene_iou(n_pred, nt, pred,
                                              b->boxes + (size_t)i * b->max_objects * 4,
                                              m->iou_pad);
                den[1] += n_true;
            }
        }
        num[2] += o.elbo[i];
        den[2] += 1.0;
    }
    return SP_OK;
}

/* Rows of each dump field: the paper's N_max (see the vtable's dump_shape). */
#define DUMP_K 3

int sp_supair_infer(void *mv, sp_tape *t, const sp_params *p, const float *x, int n, float *rho,
                    float *boxes, sp_error *err) {
    supair *m = mv;
    const int K = m->K;
    int was = sp_tape_grad_enabled(t);
    sp_tape_set_grad(t, 0);
    sp_tensor *X = sp_tensor_view(t, (float *)x, NULL, 2, (int[]){n, SCENE_PX});
    sp_tensor *Wx = sp_params_tensor(t, p, m->i_wx), *bl = sp_params_tensor(t, p, m->i_b);
    sp_tensor *xproj = m->wx_slabs ? sp_supair_linear_slabs(t, X, Wx, bl)
                                   : sp_supair_linear(t, X, Wx, bl);
    sp_tensor *W1 = sp_params_tensor(t, p, m->i_w1), *b1 = sp_params_tensor(t, p, m->i_b1);
    sp_tensor *W2 = sp_params_tensor(t, p, m->i_w2), *b2 = sp_params_tensor(t, p, m->i_b2);
    sp_tensor *h = NULL, *c = NULL;
    int rc = SP_OK;
    for (int s = 0; s < K; s++) {
        sp_tensor *hn, *cn;
        sp_lstm_cell(t, xproj, h, c, sp_params_tensor(t, p, m->i_wh), m->forget_bias, &hn, &cn);
        h = hn, c = cn;
        sp_tensor *z = sp_supair_head(t, h, W1, b1, W2, b2, NULL, &m->bd);
        if (!z) {
            rc = sp_fail(err, SP_ERUNTIME, "supair: inference failed (out of memory?)");
            break;
        }
        for (int i = 0; i < n; i++) {
            const float *zr = z->val + (size_t)i * SP_SUPAIR_ZW;
            if (rho) rho[(size_t)i * K + s] = zr[0];
            if (boxes) zrow_box(m, zr, boxes + ((size_t)i * K + s) * 4);
        }
    }
    sp_tape_set_grad(t, was);
    return rc;
}

/* vtable infer: out[0] = rho (n, 3, 1), out[1] = boxes (n, 3, 4); rows past
 * supair.max_objects stay zero. */
static int supair_vt_infer(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b,
                           float *const *out, sp_error *err) {
    supair *m = mv;
    const int K = m->K, n = b->n;
    if (K > DUMP_K)
        return sp_fail(err, SP_EINPUT, "eval --dump: supports supair.max_objects <= %d (run has %d)",
                       DUMP_K, K);
    float *rho = sp_tape_alloc(t, (size_t)n * K * sizeof(float));
    float *bx = sp_tape_alloc(t, (size_t)n * K * 4 * sizeof(float));
    if (!rho || !bx) return sp_fail(err, SP_ERUNTIME, "supair: out of memory in --dump");
    int rc = sp_supair_infer(m, t, p, b->x, n, rho, bx, err);
    if (rc) return rc;
    memset(out[0], 0, (size_t)n * DUMP_K * sizeof(float));
    memset(out[1], 0, (size_t)n * DUMP_K * 4 * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int s = 0; s < K; s++) {
            out[0][(size_t)i * DUMP_K + s] = rho[(size_t)i * K + s];
            memcpy(out[1] + ((size_t)i * DUMP_K + s) * 4, bx + ((size_t)i * K + s) * 4,
                   4 * sizeof(float));
        }
    return SP_OK;
}

static const char *const supair_dump_names[] = {"rho", "boxes"};

const sp_model_vtable sp_supair_model = {
    .name = "supair",
    .layout = SP_DATA_ROWS,
    .keys = supair_keys,
    .n_keys = (int)(sizeof supair_keys / sizeof supair_keys[0]),
    .shared_defaults = "batch_size=256\nlr=0.001\nepochs=20\nadam_form=pytorch\nadam_eps=1e-8\n"
                       "clip_norm=0\nclip_value=0\neval_every=50\neval_n=1000\n",
    .row_ndim = 2,
    .row_shape = {SCENE, SCENE, 0},
    .train_terms = supair_train_terms,
    .n_train_terms = 2,
    .eval_metrics = supair_eval_metrics,
    .n_eval_metrics = 3,
    .best_metric = 0,
    .create = supair_create,
    .init_params = supair_init_params,
    .loss = supair_loss,
    .eval = supair_eval,
    .lr_at = NULL,
    .state_floats = NULL,
    .state = NULL,
    .destroy = supair_destroy,
    .infer = supair_vt_infer,
    .n_dump = 2,
    .dump_names = supair_dump_names,
    .dump_shape = {{DUMP_K, 1}, {DUMP_K, 4}},
    .dump_what = "presence probabilities and boxes [x, y, w, h] (posterior mean)",
    .structure_seed = sp_supair_structure_seed,
};
