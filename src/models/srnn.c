/* SRNN (Fraccaro et al. 2016; MODELS.md "SRNN", reference
 * marcofraccaro/srnn): a GRU d_t over the embedded inputs u_t = x_{t-1}, a
 * Gaussian state-space layer z_t whose prior reads [d_t, z_{t-1}], a
 * posterior that reads [a_t, z_{t-1}] with a_t from a backward GRU over
 * [d_t, emb(x_t)] (smoothing) or an MLP (filtering), and a diagonal Gaussian
 * emission from [d_t, z_t]. Trained with stateful truncated BPTT on 40-frame
 * chunks of contiguous streams.
 *
 * Layout of a step: everything is TIME-major (T, B, C). The embedding of
 * the T+1 frames [u_1, x_1 .. x_T] is computed once (x_t = u_{t+1}, so emb(u)
 * and emb(x) are two overlapping views of it); every layer that does not
 * sit inside a recurrence (GRU input projections, the d- and a-parts of the
 * prior/posterior first layers, the emission MLP) is one sgemm over all T*B
 * rows; the recurrences are the fused ops of srnn_ops.c.
 *
 * Numerical guards (no effect on sane data): prior and posterior
 * log-variances are floored as the reference does, lv <- log(exp(lv) + 1e-6)
 * (srnn.logvar_floor); the emission log-variance, unbounded in the
 * reference, is clamped to [-srnn.emit_logvar_bound, +bound] (default 30:
 * std from 3e-7 to 3e6 on unit-variance data) so a diverging step gives a
 * huge but finite loss instead of NaN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "supair/init.h"
#include "supair/ops.h"
#include "supair/rng.h"
#include "supair/srnn.h"

/* RNG sites (rng.h convention: streams = (step, global example, site)). */
#define SITE_Z_TRAIN 0x53524e01u
#define SITE_Z_EVAL 0x53524e02u

static const sp_cfg_key srnn_keys[] = {
    {"srnn.d", SP_CFG_INT, "1024", "units of the deterministic GRU d_t (Blizzard: 2048)", 1, 65536,
     NULL, 1},
    {"srnn.a", SP_CFG_INT, "1024",
     "units of the inference network a_t: backward GRU (smooth) or MLP width (filter)", 1, 65536,
     NULL, 1},
    {"srnn.z", SP_CFG_INT, "256", "dimension of the stochastic state z_t", 1, 65536, NULL, 1},
    {"srnn.mlp", SP_CFG_INT, "512",
     "width of the embedding, prior, posterior and emission MLPs (Blizzard: 1024)", 1, 65536, NULL,
     1},
    {"srnn.inference", SP_CFG_STRING, "smooth",
     "posterior: smooth (backward GRU over [d_t, emb(x_t)]) or filter (2-layer MLP)", 0, 0,
     "smooth|filter", 1},
    {"srnn.resq", SP_CFG_BOOL, "true", "Resq: posterior mean = prior mean + MLP output", 0, 0, NULL,
     0},
    {"srnn.logvar_floor", SP_CFG_FLOAT, "1e-6",
     "prior/posterior log-variance floor: lv <- log(exp(lv) + this)", 0, 1, NULL, 0},
    {"srnn.emit_logvar_bound", SP_CFG_FLOAT, "30",
     "emission log-variance clamped to +-this (NaN guard; 0: off)", 0, 1e4, NULL, 0},
    {"srnn.kl_warmup_epochs", SP_CFG_FLOAT, "20",
     "KL weight rises linearly 0 -> 1 over this many epochs (0: always 1)", 0, 1e6, NULL, 0},
    {"srnn.steps_per_epoch", SP_CFG_INT, "0",
     "override: KL ramp from step / this instead of the trainer's epoch progress (0: off)", 0,
     1e15, NULL, 0},
    {"srnn.lr_const_epochs", SP_CFG_INT, "15", "epochs at the base lr before the decay starts", 0,
     1e9, NULL, 0},
    {"srnn.lr_decay", SP_CFG_FLOAT, "1.1", "lr divided by this once per epoch after that", 1, 1e3,
     NULL, 0},
    {"srnn.init_mlp", SP_CFG_STRING, "normal",
     "hidden-layer init: Glorot normal (the reference's run default) or uniform", 0, 0,
     "normal|uniform", 0},
    {"srnn.init_last", SP_CFG_FLOAT, "0.001", "output layers W ~ U(-this, this), b = 0", 0, 10, NULL,
     0},
};

static const char *const srnn_train_terms[] = {"elbo", "kl", "loglik"};
static const char *const srnn_eval_metrics[] = {"elbo_per_seq", "elbo_per_sample"};

#define FRAME 200
#define CHUNK 40

typedef struct srnn {
    int D, A, Z, M, F, smooth, resq, init_normal;
    float lv_floor, emit_bound, init_last;
    double warmup, spe;
    // parameter entries
    int e1w, e1b, e2w, e2b;            // embedding
    int dwx, dwh, db;                  // GRU d
    int awx, awh, ab;                  // GRU a (smooth)
    int f1w, f1b, f2w, f2b;            // MLP a (filter)
    int pw, pb, qw, qb;                // d- and a-rows of the latent first layers, their biases
    int wz, w2, b2;                    // z-rows of the latent first layers, the four heads
    int o1w, o1b, o2w, o2b, oow, oob;  // emission
    // carried state of the local streams: (n_state, D + Z + F) = [d_T, z_T, last frame]
    int n_state;
    float *state;
} srnn;

static long state_width(const srnn *m) { return (long)m->D + m->Z + m->F; }

/* ---- schedules ---- */

static double beta_of(double warmup, double spe, int64_t step, double epoch_float) {
    if (warmup <= 0.0) return 1.0;
    double e = spe > 0.0 ? (double)step / spe : epoch_float;
    return e >= warmup ? 1.0 : e / warmup;
}

double sp_srnn_beta(const sp_config *cfg, int64_t step, double epoch_float) {
    return beta_of(sp_config_float(cfg, "srnn.kl_warmup_epochs"),
                   (double)sp_config_int(cfg, "srnn.steps_per_epoch"), step, epoch_float);
}

double sp_srnn_lr_at(const sp_config *cfg, double epoch_float) {
    double lr = sp_config_float(cfg, "lr");
    double k = floor(epoch_float) - (double)sp_config_int(cfg, "srnn.lr_const_epochs") + 1.0;
    return k > 0.0 ? lr * pow(sp_config_float(cfg, "srnn.lr_decay"), -k) : lr;
}

static double srnn_vt_lr_at(void *model, const sp_config *cfg, int64_t step, double epoch_float) {
    (void)model, (void)step;
    return sp_srnn_lr_at(cfg, epoch_float);
}

/* ---- create / init ---- */

static int add(sp_params *p, int *idx, const char *name, int ndim, const int *shape,
               sp_error *err) {
    *idx = sp_params_add(p, name, ndim, shape, err);
    return *idx < 0 ? err->code : SP_OK;
}

static void srnn_read_sizes(srnn *m, const sp_config *cfg) {
    m->D = (int)sp_config_int(cfg, "srnn.d");
    m->A = (int)sp_config_int(cfg, "srnn.a");
    m->Z = (int)sp_config_int(cfg, "srnn.z");
    m->M = (int)sp_config_int(cfg, "srnn.mlp");
    m->F = FRAME;
    m->smooth = !strcmp(sp_config_str(cfg, "srnn.inference"), "smooth");
}

long sp_srnn_param_count(const sp_config *cfg) {
    srnn m;
    srnn_read_sizes(&m, cfg);
    const long D = m.D, A = m.A, Z = m.Z, M = m.M, F = m.F, I = D + M;
    long n = F * M + M + M * M + M;                     // embedding
    n += 3 * M * D + 3 * D * D + 3 * D;                 // GRU d
    n += m.smooth ? 3 * I * A + 3 * A * A + 3 * A       // GRU a
                  : I * A + A + A * A + A;              // MLP a
    n += D * 2 * M + 2 * M + A * 2 * M + 2 * M;         // latent first layers: d / a rows
    n += Z * 4 * M + 4 * M * Z + 4 * Z;                 // z rows, heads
    n += (D + Z) * M + M + M * M + M + M * 2 * F + 2 * F; // emission
    return n;
}

static void srnn_destroy(void *mv) {
    srnn *m = mv;
    if (!m) return;
    free(m->state);
    free(m);
}

static int srnn_create(void **out, const sp_config *cfg, sp_params *p, sp_error *err) {
    *out = NULL;
    srnn *m = calloc(1, sizeof *m);
    if (!m) return sp_fail(err, SP_ERUNTIME, "srnn: out of memory");
    srnn_read_sizes(m, cfg);
    m->resq = sp_config_bool(cfg, "srnn.resq");
    m->init_normal = !strcmp(sp_config_str(cfg, "srnn.init_mlp"), "normal");
    m->lv_floor = (float)sp_config_float(cfg, "srnn.logvar_floor");
    m->emit_bound = (float)sp_config_float(cfg, "srnn.emit_logvar_bound");
    m->init_last = (float)sp_config_float(cfg, "srnn.init_last");
    m->warmup = sp_config_float(cfg, "srnn.kl_warmup_epochs");
    m->spe = (double)sp_config_int(cfg, "srnn.steps_per_epoch");
    const int D = m->D, A = m->A, Z = m->Z, M = m->M, F = m->F, I = D + M;
    int rc;
    if ((rc = add(p, &m->e1w, "emb/W1", 2, (int[]){F, M}, err)) ||
        (rc = add(p, &m->e1b, "emb/b1", 1, (int[]){M}, err)) ||
        (rc = add(p, &m->e2w, "emb/W2", 2, (int[]){M, M}, err)) ||
        (rc = add(p, &m->e2b, "emb/b2", 1, (int[]){M}, err)) ||
        (rc = add(p, &m->dwx, "gru_d/W_x", 2, (int[]){M, 3 * D}, err)) ||
        (rc = add(p, &m->dwh, "gru_d/W_h", 2, (int[]){D, 3 * D}, err)) ||
        (rc = add(p, &m->db, "gru_d/b", 1, (int[]){3 * D}, err)))
        goto fail;
    if (m->smooth) {
        if ((rc = add(p, &m->awx, "gru_a/W_x", 2, (int[]){I, 3 * A}, err)) ||
            (rc = add(p, &m->awh, "gru_a/W_h", 2, (int[]){A, 3 * A}, err)) ||
            (rc = add(p, &m->ab, "gru_a/b", 1, (int[]){3 * A}, err)))
            goto fail;
    } else {
        if ((rc = add(p, &m->f1w, "filt/W1", 2, (int[]){I, A}, err)) ||
            (rc = add(p, &m->f1b, "filt/b1", 1, (int[]){A}, err)) ||
            (rc = add(p, &m->f2w, "filt/W2", 2, (int[]){A, A}, err)) ||
            (rc = add(p, &m->f2b, "filt/b2", 1, (int[]){A}, err)))
            goto fail;
    }
    // the four latent MLPs [prior mean, prior logvar, post mean, post logvar]:
    // first layers split by input rows (d, a: batched; z: sequential)
    if ((rc = add(p, &m->pw, "prior/W_d", 2, (int[]){D, 2 * M}, err)) ||
        (rc = add(p, &m->pb, "prior/b1", 1, (int[]){2 * M}, err)) ||
        (rc = add(p, &m->qw, "post/W_a", 2, (int[]){A, 2 * M}, err)) ||
        (rc = add(p, &m->qb, "post/b1", 1, (int[]){2 * M}, err)) ||
        (rc = add(p, &m->wz, "latent/W_z", 2, (int[]){Z, 4 * M}, err)) ||
        (rc = add(p, &m->w2, "latent/W2", 3, (int[]){4, M, Z}, err)) ||
        (rc = add(p, &m->b2, "latent/b2", 2, (int[]){4, Z}, err)) ||
        (rc = add(p, &m->o1w, "emit/W1", 2, (int[]){D + Z, M}, err)) ||
        (rc = add(p, &m->o1b, "emit/b1", 1, (int[]){M}, err)) ||
        (rc = add(p, &m->o2w, "emit/W2", 2, (int[]){M, M}, err)) ||
        (rc = add(p, &m->o2b, "emit/b2", 1, (int[]){M}, err)) ||
        (rc = add(p, &m->oow, "emit/W_out", 2, (int[]){M, 2 * F}, err)) ||
        (rc = add(p, &m->oob, "emit/b_out", 1, (int[]){2 * F}, err)))
        goto fail;
    *out = m;
    return SP_OK;
fail:
    srnn_destroy(m);
    return rc;
}

/* Glorot of a (fan_in, fan_out) layer, iid over n floats: normal with std
 * sqrt(2 / (fan_in + fan_out)) (Lasagne GlorotNormal) or uniform with the
 * same variance. Entries that hold column blocks of several layers call
 * this per block (w then points at a block of a row, see glorot_cols). */
static void glorot_fill(float *w, long n, int fan_in, int fan_out, int normal, uint64_t seed,
                        uint32_t stream, uint32_t sub) {
    double s = sqrt(2.0 / (double)(fan_in + fan_out));
    if (normal) sp_rng_fill_normal(w, n, 0.0f, (float)s, seed, SP_INIT_S0, stream, sub);
    else sp_rng_fill_uniform(w, n, (float)(-s * sqrt(3.0)), (float)(s * sqrt(3.0)), seed,
                             SP_INIT_S0, stream, sub);
}

/* Column block [c0, c0 + nc) of a (rows, cols) entry as one Glorot layer of
 * the given fans: each row's segment is filled from its own sub-stream. */
static void glorot_cols(float *w, int rows, int cols, int c0, int nc, int fan_in, int fan_out,
                        int normal, uint64_t seed, uint32_t stream) {
    for (int r = 0; r < rows; r++)
        glorot_fill(w + (size_t)r * cols + c0, nc, fan_in, fan_out, normal, seed, stream,
                    ((uint32_t)c0 << 20) ^ (uint32_t)r);
}

static int srnn_init_params(void *mv, sp_params *p, uint64_t seed, sp_error *err) {
    srnn *m = mv;
    const int D = m->D, A = m->A, Z = m->Z, M = m->M, F = m->F, I = D + M, nrm = m->init_normal;
    int rc;
    for (int i = 0; i < p->n_entries; i++)  // every bias (and anything not set below) is 0
        sp_init_constant(sp_params_val(p, i), p->entries[i].size, 0.0f);
    // GRUs: orthogonal per gate block, input and hidden weights (Lasagne Gate W_in, W_hid)
    if ((rc = sp_init_param_orthogonal(p, "gru_d/W_x", 3, 1.0f, seed, err)) ||
        (rc = sp_init_param_orthogonal(p, "gru_d/W_h", 3, 1.0f, seed, err)))
        return rc;
    if (m->smooth && ((rc = sp_init_param_orthogonal(p, "gru_a/W_x", 3, 1.0f, seed, err)) ||
                      (rc = sp_init_param_orthogonal(p, "gru_a/W_h", 3, 1.0f, seed, err))))
        return rc;
    // hidden layers: Glorot with the fans of the reference's (unsplit) layers
    glorot_fill(sp_params_val(p, m->e1w), (long)F * M, F, M, nrm, seed, (uint32_t)m->e1w, 0);
    glorot_fill(sp_params_val(p, m->e2w), (long)M * M, M, M, nrm, seed, (uint32_t)m->e2w, 0);
    if (!m->smooth) {
        glorot_fill(sp_params_val(p, m->f1w), (long)I * A, I, A, nrm, seed, (uint32_t)m->f1w, 0);
        glorot_fill(sp_params_val(p, m->f2w), (long)A * A, A, A, nrm, seed, (uint32_t)m->f2w, 0);
    }
    // prior MLPs read [d, z] (fan_in D + Z), posterior MLPs [a, z] (A + Z)
    glorot_fill(sp_params_val(p, m->pw), (long)D * 2 * M, D + Z, M, nrm, seed, (uint32_t)m->pw, 0);
    glorot_fill(sp_params_val(p, m->qw), (long)A * 2 * M, A + Z, M, nrm, seed, (uint32_t)m->qw, 0);
    float *wz = sp_params_val(p, m->wz);
    glorot_cols(wz, Z, 4 * M, 0, 2 * M, D + Z, M, nrm, seed, (uint32_t)m->wz);
    glorot_cols(wz, Z, 4 * M, 2 * M, 2 * M, A + Z, M, nrm, seed, (uint32_t)m->wz);
    glorot_fill(sp_params_val(p, m->o1w), (long)(D + Z) * M, D + Z, M, nrm, seed,
                (uint32_t)m->o1w, 0);
    glorot_fill(sp_params_val(p, m->o2w), (long)M * M, M, M, nrm, seed, (uint32_t)m->o2w, 0);
    // output layers: U(-init_last, init_last) "for stability", biases 0
    const float r = m->init_last;
    sp_init_uniform(sp_params_val(p, m->w2), 4L * M * Z, -r, r, seed, (uint32_t)m->w2);
    sp_init_uniform(sp_params_val(p, m->oow), (long)M * 2 * F, -r, r, seed, (uint32_t)m->oow);
    return SP_OK;
}

/* ---- the forward pass ---- */

typedef struct fwd {
    sp_tensor *loss;   // (1)
    sp_tensor *ll, *kl; // (T * B) per-frame log-likelihood and KL, time-major
    sp_tensor *d, *z;  // (T, B, D), (T, B, Z)
    const float *last; // (B, F) the last target frame of each stream
    sp_tensor *out;    // (T, B, 2F) emission: mean | log-variance of each target sample
    int T;
} fwd;

/* Inputs of a chunk: stream i's first input frame is u1 + i*u1_stride, its
 * T target frames start at x + i*x_stride (contiguous frames); d0/z0 (B, D),
 * (B, Z) the initial state or NULL for zero. */
typedef struct chunk_in {
    int B, T;
    const float *u1, *x;
    long u1_stride, x_stride;
    const float *d0, *z0;
    const int64_t *index;
    int64_t step;
    uint64_t seed;
    uint32_t site;
    float beta;
    const int *tlen;  // (B) target frames of each stream (padded batches, eval only), or NULL
} chunk_in;

static sp_tensor *mlp_layer(sp_tape *t, sp_tensor *x, const sp_params *p, int w, int b) {
    return sp_clipped_leaky(t, sp_linear(t, x, sp_params_tensor(t, p, w), sp_params_tensor(t, p, b)));
}

/* Frames [row0, row0 + T) of a time-major (T+1, B, C) tensor as a (T, B, C) view. */
static sp_tensor *time_view(sp_tape *t, sp_tensor *x, int row0, int T) {
    if (!x) return NULL;
    const size_t off = (size_t)row0 * x->shape[1] * x->shape[2];
    return sp_tensor_view(t, x->val + off, x->grad ? x->grad + off : NULL, 3,
                          (int[]){T, x->shape[1], x->shape[2]});
}

static int forward(srnn *m, sp_tape *t, const sp_params *p, const chunk_in *c, fwd *o,
                   sp_error *err) {
    const int B = c->B, T = c->T, D = m->D, Z = m->Z, F = m->F;
    memset(o, 0, sizeof *o);
    o->T = T;
    // U (T+1, B, F) = [u_1, x_1 .. x_T] time-major; U[1..T] are also the targets
    sp_tensor *U = sp_tensor_3d(t, T + 1, B, F, 0);
    float *eps = sp_tape_alloc(t, (size_t)T * B * Z * sizeof(float));
    if (!U || !eps) return sp_fail(err, SP_ERUNTIME, "srnn: out of memory");
    for (int i = 0; i < B; i++) {
        memcpy(U->val + (size_t)i * F, c->u1 + i * c->u1_stride, (size_t)F * sizeof(float));
        for (int s = 0; s < T; s++)
            memcpy(U->val + ((size_t)(s + 1) * B + i) * F, c->x + i * c->x_stride + (long)s * F,
                   (size_t)F * sizeof(float));
    }
    // each stream's noise is its own counter stream: any thread count gives the same draws
#pragma omp parallel for schedule(static) if ((long)B * T * Z >= 65536L)
    for (int i = 0; i < B; i++) {
        sp_rng r;
        int64_t g = c->index ? c->index[i] : i;
        sp_rng_init(&r, c->seed, (uint32_t)c->step, (uint32_t)g,
                    c->site ^ ((uint32_t)((uint64_t)g >> 32) << 16));
        for (int s = 0; s < T; s++) {
            float *e = eps + ((size_t)s * B + i) * Z;
            for (int j = 0; j < Z; j++) e[j] = sp_rng_normal(&r);
        }
    }
    sp_tensor *d0 = c->d0 ? sp_tensor_view(t, (float *)c->d0, NULL, 2, (int[]){B, D}) : NULL;
    sp_tensor *z0 = c->z0 ? sp_tensor_view(t, (float *)c->z0, NULL, 2, (int[]){B, Z}) : NULL;

    // embedding of all T+1 frames at once; emb(u_t) = E[t], emb(x_t) = E[t+1]
    sp_tensor *E = mlp_layer(t, mlp_layer(t, U, p, m->e1w, m->e1b), p, m->e2w, m->e2b);
    sp_tensor *Eu = time_view(t, E, 0, T), *Ex = time_view(t, E, 1, T);
    // d_t = GRU(d_{t-1}, emb(u_t))
    sp_tensor *Xd = sp_linear(t, Eu, sp_params_tensor(t, p, m->dwx), NULL);
    sp_tensor *d = sp_srnn_gru_seq(t, Xd, d0, sp_params_tensor(t, p, m->dwh),
                                   sp_params_tensor(t, p, m->db), 0);
    // a_t from [d_t, emb(x_t)]
    sp_tensor *in_a = sp_concat_last(t, d, Ex), *a;
    if (m->smooth) {
        sp_tensor *Xa = sp_linear(t, in_a, sp_params_tensor(t, p, m->awx), NULL);
        a = sp_srnn_gru_seq_len(t, Xa, NULL, sp_params_tensor(t, p, m->awh),
                                sp_params_tensor(t, p, m->ab), 1, c->tlen);
    } else {
        a = mlp_layer(t, mlp_layer(t, in_a, p, m->f1w, m->f1b), p, m->f2w, m->f2b);
    }
    // the stochastic layer: input-side parts of the first layers batched
    sp_tensor *Pp = sp_linear(t, d, sp_params_tensor(t, p, m->pw), sp_params_tensor(t, p, m->pb));
    sp_tensor *Pq = sp_linear(t, a, sp_params_tensor(t, p, m->qw), sp_params_tensor(t, p, m->qb));
    sp_srnn_latent_w lw = {sp_params_tensor(t, p, m->wz), sp_params_tensor(t, p, m->w2),
                           sp_params_tensor(t, p, m->b2)};
    sp_tensor *z = NULL, *kl = NULL;
    if (Pp && Pq) sp_srnn_latent(t, Pp, Pq, z0, eps, &lw, m->resq, m->lv_floor, &z, &kl);
    // emission from [d_t, z_t]
    sp_tensor *h = mlp_layer(t, mlp_layer(t, sp_concat_last(t, d, z), p, m->o1w, m->o1b), p,
                             m->o2w, m->o2b);
    sp_tensor *out = sp_linear(t, h, sp_params_tensor(t, p, m->oow), sp_params_tensor(t, p, m->oob));
    sp_tensor *ll = sp_srnn_gauss_ll(t, out, time_view(t, U, 1, T), m->emit_bound);
    // loss = -(1/T) sum_t [log N(x_t) - beta KL_t], summed over streams
    sp_tensor *kl1 = kl ? sp_reshape(t, kl, 1, (int[]){T * B}) : NULL;
    sp_tensor *loss = sp_add(t, sp_scale(t, sp_sum_all(t, ll), -1.0f / (float)T),
                             sp_scale(t, sp_sum_all(t, kl1), c->beta / (float)T));
    if (!loss || sp_tape_failed(t))
        return sp_fail(err, SP_ERUNTIME, "srnn: forward pass failed (out of memory?)");
    o->loss = loss, o->ll = ll, o->kl = kl1, o->d = d, o->z = z, o->out = out;
    o->last = U->val + (size_t)T * B * F;
    return SP_OK;
}

/* Per-stream sums over the chunk's frames (the first tlen[i] when given):
 * ll_i, kl_i. */
static void stream_sums(const fwd *o, int B, const int *tlen, double *ll, double *kl) {
    for (int i = 0; i < B; i++) ll[i] = kl[i] = 0.0;
    for (int s = 0; s < o->T; s++)
        for (int i = 0; i < B; i++) {
            if (tlen && s >= tlen[i]) continue;
            ll[i] += o->ll->val[(size_t)s * B + i];
            kl[i] += o->kl->val[(size_t)s * B + i];
        }
}

/* The chunk's inputs from a batch: u_1 from u0, the first frame
 * (x_first_is_input) or the carried state; d0/z0 from the carried state
 * unless reset (or eval: use_state = 0). Scratch comes from the tape. */
static int chunk_from_batch(srnn *m, sp_tape *t, const sp_batch *b, int use_state, chunk_in *c,
                            sp_error *err) {
    const int F = m->F;
    memset(c, 0, sizeof *c);
    if (b->frame && b->frame != F)
        return sp_fail(err, SP_EINPUT, "srnn: frames of %d values, the model needs %d", b->frame,
                       F);
    const int L = b->seq_len ? b->seq_len : CHUNK;
    c->B = b->n;
    c->x_stride = (long)L * F;
    c->index = b->index, c->step = b->step, c->seed = b->seed;
    if (b->x_first_is_input) {
        if (L < 2)
            return sp_fail(err, SP_EINPUT, "srnn: a sequence with its first frame as input needs "
                                           ">= 2 frames (got %d)", L);
        c->T = L - 1;
        c->u1 = b->x, c->u1_stride = (long)L * F;
        c->x = b->x + F;
    } else {
        c->T = L;
        c->x = b->x;
    }
    const int carry = use_state && !b->reset_state;
    if (carry && (!m->state || b->n != m->n_state))
        return sp_fail(err, SP_EINPUT,
                       "srnn: batch of %d streams continues a carried state of %d streams", b->n,
                       m->state ? m->n_state : 0);
    if (!b->x_first_is_input) {
        if (b->u0 && (b->reset_state || !carry)) {
            c->u1 = b->u0, c->u1_stride = F;
        } else if (carry) {
            c->u1 = m->state + m->D + m->Z, c->u1_stride = state_width(m);
        } else {
            return sp_fail(err, SP_EINPUT, "srnn: a batch that starts streams (reset_state) "
                                           "needs u0, the frame before each stream");
        }
    }
    if (carry) {
        const int B = b->n, D = m->D, Z = m->Z;
        float *d0 = sp_tape_alloc(t, (size_t)B * D * sizeof(float));
        float *z0 = sp_tape_alloc(t, (size_t)B * Z * sizeof(float));
        if (!d0 || !z0) return sp_fail(err, SP_ERUNTIME, "srnn: out of memory");
        for (int i = 0; i < B; i++) {
            const float *s = m->state + (size_t)i * state_width(m);
            memcpy(d0 + (size_t)i * D, s, (size_t)D * sizeof(float));
            memcpy(z0 + (size_t)i * Z, s + D, (size_t)Z * sizeof(float));
        }
        c->d0 = d0, c->z0 = z0;
    }
    return SP_OK;
}

static sp_tensor *srnn_loss(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b,
                            double *term_sums, sp_error *err) {
    srnn *m = mv;
    chunk_in c;
    fwd o;
    if (chunk_from_batch(m, t, b, 1, &c, err)) return NULL;
    c.site = SITE_Z_TRAIN;
    // a caller that fills only the whole epoch still gets the staircase of the ramp
    double ef = b->epoch_float > (double)b->epoch ? b->epoch_float : (double)b->epoch;
    c.beta = (float)beta_of(m->warmup, m->spe, b->step, ef);
    if (forward(m, t, p, &c, &o, err)) return NULL;
    const int B = b->n, D = m->D, Z = m->Z, F = m->F, T = o.T;
    if (term_sums) {
        double *ll = sp_tape_alloc(t, 2 * (size_t)B * sizeof(double));
        if (!ll) {
            sp_fail(err, SP_ERUNTIME, "srnn: out of memory");
            return NULL;
        }
        double *kl = ll + B;
        stream_sums(&o, B, NULL, ll, kl);
        term_sums[0] = term_sums[1] = term_sums[2] = 0.0;
        for (int i = 0; i < B; i++) {
            term_sums[0] += ll[i] - kl[i];
            term_sums[1] += kl[i];
            term_sums[2] += ll[i];
        }
    }
    // carry [d_T, z_T, x_T] into the streams' next chunk (truncated BPTT: values only)
    if (m->state && B == m->n_state && !b->x_first_is_input) {
        for (int i = 0; i < B; i++) {
            float *s = m->state + (size_t)i * state_width(m);
            memcpy(s, o.d->val + ((size_t)(T - 1) * B + i) * D, (size_t)D * sizeof(float));
            memcpy(s + D, o.z->val + ((size_t)(T - 1) * B + i) * Z, (size_t)Z * sizeof(float));
            memcpy(s + D + Z, o.last + (size_t)i * F, (size_t)F * sizeof(float));
        }
    }
    return o.loss;
}

/* One posterior sample, zero initial state, beta = 1; the carried training
 * state is neither read nor written. */
int sp_srnn_eval_lengths(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b,
                         const int32_t *lens, double *num, double *den, sp_error *err) {
    srnn *m = mv;
    chunk_in c;
    fwd o;
    int rc = chunk_from_batch(m, t, b, 0, &c, err);
    if (rc) return rc;
    int *tlen = NULL;
    if (lens) {
        tlen = sp_tape_alloc(t, (size_t)b->n * sizeof(int));
        if (!tlen) return sp_fail(err, SP_ERUNTIME, "srnn: out of memory");
        const int lo = b->x_first_is_input ? 2 : 1, L = b->seq_len ? b->seq_len : CHUNK;
        for (int i = 0; i < b->n; i++) {
            if (lens[i] < lo || lens[i] > L)
                return sp_fail(err, SP_EINPUT, "srnn: sequence %d of the batch has %d frames "
                                               "(must be %d..%d)", i, (int)lens[i], lo, L);
            tlen[i] = lens[i] - (b->x_first_is_input ? 1 : 0);
        }
    }
    c.site = SITE_Z_EVAL;
    c.beta = 1.0f;
    c.tlen = tlen;
    int was = sp_tape_grad_enabled(t);
    sp_tape_set_grad(t, 0);
    rc = forward(m, t, p, &c, &o, err);
    sp_tape_set_grad(t, was);
    if (rc) return rc;
    double *ll = sp_tape_alloc(t, 2 * (size_t)b->n * sizeof(double));
    if (!ll) return sp_fail(err, SP_ERUNTIME, "srnn: out of memory");
    double *kl = ll + b->n;
    stream_sums(&o, b->n, tlen, ll, kl);
    for (int i = 0; i < b->n; i++) {
        num[0] += ll[i] - kl[i], den[0] += 1.0;
        num[1] += ll[i] - kl[i], den[1] += (double)(tlen ? tlen[i] : o.T) * m->F;
    }
    return SP_OK;
}

/* `eval --dump`: the emission's mean and standard deviation of every target
 * sample of ONE sequence (b->n = 1), from zero state with one posterior
 * sample, as in eval. out[0] = mean, out[1] = std, each (T, F) with T the
 * target frames (seq_len, or seq_len - 1 when x_first_is_input). */
static int srnn_infer(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b,
                      float *const *out_fields, sp_error *err) {
    srnn *m = mv;
    if (b->n != 1) return sp_fail(err, SP_EINPUT, "srnn: inference dumps one sequence at a time");
    chunk_in c;
    fwd o;
    int rc = chunk_from_batch(m, t, b, 0, &c, err);
    if (rc) return rc;
    c.site = SITE_Z_EVAL;
    c.beta = 1.0f;
    int was = sp_tape_grad_enabled(t);
    sp_tape_set_grad(t, 0);
    rc = forward(m, t, p, &c, &o, err);
    sp_tape_set_grad(t, was);
    if (rc) return rc;
    const int F = m->F;
    for (int s = 0; s < o.T; s++) {
        const float *row = o.out->val + (size_t)s * 2 * F;
        for (int f = 0; f < F; f++) {
            float lv = row[F + f];
            if (m->emit_bound > 0.0f) lv = fminf(fmaxf(lv, -m->emit_bound), m->emit_bound);
            out_fields[0][(size_t)s * F + f] = row[f];
            out_fields[1][(size_t)s * F + f] = expf(0.5f * lv);
        }
    }
    return SP_OK;
}

static const char *const srnn_dump_names[] = {"mean", "std"};

static int srnn_eval(void *mv, sp_tape *t, const sp_params *p, const sp_batch *b, double *num,
                     double *den, sp_error *err) {
    return sp_srnn_eval_lengths(mv, t, p, b, b->seq_lens, num, den, err);
}

/* ---- carried state ---- */

static int srnn_state_alloc(void *mv, int n_local, sp_error *err) {
    srnn *m = mv;
    free(m->state);
    m->n_state = 0;
    m->state = calloc((size_t)(n_local > 0 ? n_local : 1) * state_width(m), sizeof(float));
    if (!m->state) return sp_fail(err, SP_ERUNTIME, "srnn: out of memory for the stream state");
    m->n_state = n_local;
    return SP_OK;
}

static long srnn_state_floats(void *mv) { return state_width(mv); }
static float *srnn_state(void *mv) { return ((srnn *)mv)->state; }

const sp_model_vtable sp_srnn_model = {
    .name = "srnn",
    .layout = SP_DATA_STREAMS,
    .keys = srnn_keys,
    .n_keys = (int)(sizeof srnn_keys / sizeof srnn_keys[0]),
    // evaluation walks whole test sequences: periodic ones sparse and short
    .shared_defaults = "batch_size=64\nlr=0.001\nepochs=50\nadam_form=lasagne\nadam_eps=1e-4\n"
                       "clip_norm=3000\nclip_value=1000\neval_every=500\neval_n=200\n",
    .row_ndim = 2,
    .row_shape = {CHUNK, FRAME, 0},
    .train_terms = srnn_train_terms,
    .n_train_terms = 3,
    .eval_metrics = srnn_eval_metrics,
    .n_eval_metrics = 2,
    .best_metric = 0,
    .create = srnn_create,
    .init_params = srnn_init_params,
    .loss = srnn_loss,
    .eval = srnn_eval,
    .lr_at = srnn_vt_lr_at,
    .state_alloc = srnn_state_alloc,
    .state_floats = srnn_state_floats,
    .state = srnn_state,
    .destroy = srnn_destroy,
    .infer = srnn_infer,
    .n_dump = 2,
    .dump_names = srnn_dump_names,
    .dump_what = "emission mean and standard deviation",
    .structure_seed = NULL,
};
