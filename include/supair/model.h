/* The one interface every model (SuPAIR, AIR, SRNN) fills for the trainer.
 *
 * A model knows nothing about ranks, files or MPI (DESIGN.md's dependency
 * rules): the trainer hands it the local slice of a global batch and gets back
 * the SUM over those examples of the per-example loss, with the gradient of
 * that sum in the flat gradient buffer. The trainer then sum-allreduces and
 * divides by the global batch, which is what makes `-np 1` and `-np 4` the
 * same experiment. Evaluation metrics are likewise returned as (numerator,
 * denominator) sums so ratios such as "IoU sum over true boxes" or "nats per
 * sample" reduce exactly across ranks. */
#ifndef SUPAIR_MODEL_H
#define SUPAIR_MODEL_H

#include <stdint.h>

#include "supair/config.h"
#include "supair/error.h"
#include "supair/params.h"
#include "supair/tape.h"

#define SP_MAX_TERMS 16

/* How the trainer feeds a model: shuffled independent rows (scenes) or
 * contiguous streams whose state carries from one chunk to the next (speech,
 * stateful truncated BPTT). */
typedef enum { SP_DATA_ROWS = 0, SP_DATA_STREAMS = 1 } sp_data_layout;

typedef struct sp_batch {
    int n;               /* local examples (rows or streams) */
    int global_n;        /* examples in the global batch */
    const int64_t *index; /* (n) global identity of each example: the dataset row
                            (rows) or the stream number (streams); the RNG
                            stream id, so noise does not depend on the rank */
    const float *x;      /* (n, row...) the rows, e.g. (n,50,50) or (n,40,200) */
    const int32_t *counts; /* (n) true object counts (scenes), else NULL */
    const float *boxes;  /* (n, max_objects, 4) true boxes (scenes), else NULL */
    int max_objects;
    int64_t step;        /* global step (0-based) this batch trains */
    int epoch;
    double epoch_float;  /* epoch + fraction done (schedules such as KL warm-up) */
    int reset_state;     /* streams: start from zero state (epoch start, eval) */
    uint64_t seed;
    /* Sequences (SRNN). x holds (n, seq_len, frame) values. */
    int seq_len;         /* frames per example in x (0 for non-sequence data) */
    int frame;           /* values per frame (200) */
    /* (n, frame): the frame before each example's first frame (u_1 = x_0),
     * given when reset_state is set (epoch start: /SPLIT/u0; Blizzard test
     * rows: /test/u0); otherwise a stream continues from its own last frame,
     * which the model carries in its state. NULL with x_first_is_input. */
    const float *u0;
    /* 1: x[:, 0] is input only (TIMIT test utterances: "first frame only as
     * input"), the targets are x[:, 1:], and the ELBO covers seq_len-1 frames. */
    int x_first_is_input;
    /* (n) frames of each sequence in x when they differ (padded to seq_len;
     * padding ignored), NULL when all have seq_len. Evaluation batches
     * utterances of different lengths this way. */
    const int32_t *seq_lens;
} sp_batch;

typedef struct sp_model_vtable {
    const char *name;            /* "supair", "air", "srnn" */
    sp_data_layout layout;
    /* Model config keys (documented in README) and the defaults of shared
     * keys this model changes ("batch_size=64\nlr=1e-4\n"). */
    const sp_cfg_key *keys;
    int n_keys;
    const char *shared_defaults;
    /* Row shape the model expects from the dataset, e.g. {50,50}. */
    int row_ndim;
    int row_shape[3];
    /* Names of the per-example training terms (summed over the batch), e.g.
     * {"elbo", "kl"}; the loss itself is reported separately. */
    const char *const *train_terms;
    int n_train_terms;
    /* Eval metrics, each a ratio num/den of sums over the eval set. */
    const char *const *eval_metrics;
    int n_eval_metrics;
    /* Index of the metric deciding best.h5 (higher is better). */
    int best_metric;

    /* Declares parameters into p (before sp_params_finalize). */
    int (*create)(void **model, const sp_config *cfg, sp_params *p, sp_error *err);
    /* Fills p->val after finalize; a pure function of seed. */
    int (*init_params)(void *model, sp_params *p, uint64_t seed, sp_error *err);
    /* Loss = SUM over local examples of the per-example loss (to minimise),
     * as a (1) tensor on the tape; term_sums[i] = sum of train_terms[i]. */
    sp_tensor *(*loss)(void *model, sp_tape *t, const sp_params *p, const sp_batch *b,
                       double *term_sums, sp_error *err);
    /* Evaluation without gradients: adds into num[i], den[i]. */
    int (*eval)(void *model, sp_tape *t, const sp_params *p, const sp_batch *b, double *num,
                double *den, sp_error *err);
    /* Learning rate and KL weight schedules (NULL: constant lr from config). */
    double (*lr_at)(void *model, const sp_config *cfg, int64_t step, double epoch_float);
    /* Streams only: the carried state of this rank's n_local streams
     * (stateful truncated BPTT). state_alloc is called once before training
     * with the number of local streams; state() then points at
     * (n_local, state_floats) floats the trainer saves in checkpoints
     * (gathered over ranks, so any world size resumes) and restores. */
    int (*state_alloc)(void *model, int n_local, sp_error *err);
    long (*state_floats)(void *model);
    float *(*state)(void *model);
    void (*destroy)(void *model);
    /* Inference for `eval --dump`: n_dump float fields per example, field f
     * of shape dump_shape[f] = {rows, cols} (cols 1 for a vector), e.g.
     * SuPAIR's presence probabilities (K,1) and boxes (K,4). out[f] points at
     * (b->n, rows, cols). NULL when the model has nothing to dump. */
    int (*infer)(void *model, sp_tape *t, const sp_params *p, const sp_batch *b, float *const *out,
                 sp_error *err);
    int n_dump;
    const char *const *dump_names;
    int dump_shape[4][2];
    const char *dump_what; /* e.g. "counts and boxes", for messages */
    /* Seed of any random structure the parameters depend on (SuPAIR's SPN
     * region graphs), stored in checkpoints; NULL when there is none. */
    uint64_t (*structure_seed)(const void *model);
} sp_model_vtable;

/* The registry: every model the binary knows. NULL when unknown. */
const sp_model_vtable *sp_model_find(const char *name);
/* "supair, air, srnn" for messages; static string. */
const char *sp_model_names(void);

#endif
