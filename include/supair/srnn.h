/* SRNN (Fraccaro et al. 2016; MODELS.md "SRNN"): the parts of the model
 * reachable beyond its vtable (sp_model_find("srnn")).
 *
 * - the KL warm-up and learning-rate schedules (pure functions, for tests and
 *   for the trainer's logs);
 * - the model's fused tape ops, public so the unit tests can check their
 *   gradients by finite differences.
 *
 * Tensors of a chunk are TIME-major, (T, B, C): a time step's rows are then
 * one contiguous (B, C) block, which is what the per-step recurrences read,
 * and every batched layer is one sgemm over all T*B rows. */
#ifndef SUPAIR_SRNN_H
#define SUPAIR_SRNN_H

#include <stdint.h>

#include "supair/config.h"
#include "supair/model.h"
#include "supair/tape.h"

/* The vtable (also listed in the registry). */
extern const sp_model_vtable sp_srnn_model;

/* KL weight beta of a training step (MODELS.md: linear 0 -> 1 over the first
 * srnn.kl_warmup_epochs epochs, per step, then 1): beta = min(1, e / warmup)
 * with e = epoch_float (epoch + fraction done; sp_batch.epoch_float), which
 * is the reference's step / (warmup * steps_per_epoch) exactly. The key
 * srnn.steps_per_epoch = S > 0 overrides e with step / S. warmup = 0 gives
 * beta = 1. */
double sp_srnn_beta(const sp_config *cfg, int64_t step, double epoch_float);

/* The learning rate of epoch floor(epoch_float): lr while the epoch is below
 * srnn.lr_const_epochs (15), then divided by srnn.lr_decay (1.1) per epoch:
 * lr * decay^-(floor(epoch_float) - const + 1). (The reference set each
 * epoch's rate after the previous one, which is lr_const_epochs = 16 here.) */
double sp_srnn_lr_at(const sp_config *cfg, double epoch_float);

/* The vtable's eval for a batch of sequences of different lengths, padded
 * to b->seq_len: lens[i] = frames of sequence i in x (counted as seq_len
 * counts them; the padding's values are ignored), NULL = all seq_len. Each
 * sequence's ELBO covers only its own frames, and its backward GRU starts at
 * its own end, so the sums equal evaluating the sequences one by one (the
 * same noise: stream id b->index[i]); batching them is what makes a TIMIT
 * test pass fast (one utterance at a time runs matrix-vector products). */
int sp_srnn_eval_lengths(void *model, sp_tape *t, const sp_params *p, const sp_batch *b,
                         const int32_t *lens, double *num, double *den, sp_error *err);

/* Parameter count of the configuration (the default TIMIT sizes with
 * smoothing: 17,227,152, the reference's count). */
long sp_srnn_param_count(const sp_config *cfg);

/* ---- fused ops (tape conventions of tape.h: outputs in the arena, backward
 * ADDS into the inputs' grads, NULL on failure with the tape marked) ---- */

/* A GRU (rnn.h's reset-after form) over a whole sequence as ONE tape node.
 * xproj (T, B, 3H) = x W_x precomputed for every step (no bias); h0 (B, H)
 * or NULL for a zero state; W_h (H, 3H); b (3H). reverse = 0 runs t = 0..T-1,
 * reverse = 1 runs t = T-1..0 (a backward GRU; h0 is then the state after
 * the end). Returns out (T, B, H), out[t] = the state after step t (time
 * order in both directions). The backward keeps the per-step work to the
 * sequential part (dh W_h^T) and forms dW_h with one sgemm over all T*B
 * rows. */
sp_tensor *sp_srnn_gru_seq(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h0,
                           const sp_tensor *W_h, const sp_tensor *b, int reverse);
/* The same with sequences of different lengths padded to T: row b's steps
 * t >= len[b] leave its state unchanged (a backward GRU thus starts from
 * h0, normally zero, at each sequence's own end). len NULL: all T. */
sp_tensor *sp_srnn_gru_seq_len(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h0,
                               const sp_tensor *W_h, const sp_tensor *b, int reverse,
                               const int *len);

/* Weights of the four latent MLPs [prior mean, prior logvar, posterior mean,
 * posterior logvar]; each is f([input_t, z_{t-1}] W1 + b1) W2 + b2 with the
 * input part of W1 applied outside (batched over all steps, see pre_p/pre_q). */
typedef struct sp_srnn_latent_w {
    const sp_tensor *W_z; /* (Z, 4M): the z_{t-1} rows of the four first layers */
    const sp_tensor *W2;  /* (4, M, Z) the output layers */
    const sp_tensor *b2;  /* (4, Z) */
} sp_srnn_latent_w;

/* The sequential stochastic layer over a chunk, one tape node:
 *   pre_p (T, B, 2M) = d_t W1[d rows] + b1 of the two prior MLPs,
 *   pre_q (T, B, 2M) = a_t W1[a rows] + b1 of the two posterior MLPs,
 *   z0 (B, Z) or NULL (zero), eps (T, B, Z) standard normals.
 * Step t: h = f(pre_t + z_{t-1} W_z) (f = clip(max(v, v/3), -3, 3));
 *   mu_p, lv_p, mu_q, lv_q = the four heads; lv <- log(exp(lv) + lv_floor)
 *   for both log-variances; resq: mu_q += mu_p;
 *   z_t = mu_q + exp(lv_q / 2) eps_t;  kl_t = sum_z KL(q_t || p_t).
 * Outputs *z_out (T, B, Z) and *kl_out (T, B). Gradients flow to pre_p,
 * pre_q, z0 and the weights; eps gets none. Returns SP_OK or SP_ERUNTIME
 * (NULL input, shape mismatch, out of memory). */
int sp_srnn_latent(sp_tape *t, const sp_tensor *pre_p, const sp_tensor *pre_q, const sp_tensor *z0,
                   const float *eps, const sp_srnn_latent_w *w, int resq, float lv_floor,
                   sp_tensor **z_out, sp_tensor **kl_out);

/* Per-row diagonal Gaussian log-density of the emission:
 * out (N, 2F) = [mean | logvar] head outputs, x (N, F) targets (no grad).
 * Returns ll (N) = sum_f log N(x; mean, exp(clamp(logvar, -lv_bound,
 * lv_bound))). The clamp only guards against overflow to inf/NaN (the
 * gradient is zero outside it); lv_bound <= 0 disables it. */
sp_tensor *sp_srnn_gauss_ll(sp_tape *t, const sp_tensor *out, const sp_tensor *x, float lv_bound);

#endif
