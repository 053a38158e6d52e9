/* The training and evaluation loops shared by every model (src/train).
 *
 * `supair_dist train` and `supair_dist eval` are thin wrappers around
 * sp_train_run and sp_eval_run. This layer ties the pieces together: config
 * resolution and resume, the per-epoch global shuffle and each rank's slice,
 * the model's loss, the bucketed gradient allreduce, clipping and Adam,
 * periodic evaluation, HDF5 checkpoints and metrics, and the collective stop
 * on signals. */
#ifndef SUPAIR_TRAIN_H
#define SUPAIR_TRAIN_H

#include <stdint.h>

#include "supair/config.h"
#include "supair/error.h"
#include "supair/model.h"

struct sp_dist; /* include/supair/dist.h */

typedef struct sp_train_opts {
    const char *model;       /* --model (NULL on resume: taken from the run) */
    const char *data;        /* --data FILE.h5 */
    const char *run_dir;     /* --run DIR */
    const char *config_file; /* --config FILE.cfg or NULL */
    const char *const *sets; /* --set key=value, n_sets of them */
    int n_sets;
    int64_t steps;           /* --steps N: train until global step N (0: unset) */
    int epochs;              /* --epochs N: train until N epochs done (0: unset) */
    double time_limit;       /* --time-limit SEC (0: none) */
} sp_train_opts;

typedef struct sp_eval_opts {
    const char *run_dir;   /* --run DIR */
    const char *data;      /* --data FILE.h5 (default: the run's) */
    const char *split;     /* "test" (default) or "valid" */
    const char *ckpt;      /* --ckpt FILE.h5 (default: best.h5, else newest) */
    int64_t dump_n;        /* --dump N scenes with inferred boxes (0: none) */
    const char *dump_path; /* --dump-out FILE.h5 (default DIR/dump.h5) */
} sp_eval_opts;

/* Both return an sp_status; on failure *err holds the one-line reason.
 * SP_ESTOPPED means a signal stopped training after a clean checkpoint. */
int sp_train_run(const sp_train_opts *o, struct sp_dist *dist, sp_error *err);
int sp_eval_run(const sp_eval_opts *o, struct sp_dist *dist, sp_error *err);

/* `supair_dist sweep`: MPI_COMM_WORLD split into groups of ranks_per_trial
 * ranks; each group trains one plan line at a time (line i: whitespace-
 * separated key=value overrides appended to base's --set list, run directory
 * RUN/trial_i), taking the next line from a shared counter when it finishes,
 * so fast trials do not wait for slow ones. Returns SP_OK when every trial
 * finished, SP_ESTOPPED when a signal stopped the sweep (each running trial
 * checkpointed; rerunning the sweep resumes them, finished trials return at
 * once), else the worst trial status. */
int sp_sweep_run(const sp_train_opts *base, const char *plan_path, int ranks_per_trial,
                 struct sp_dist *world, sp_error *err);

/* Config keys every model shares (DESIGN.md contract), declared by the
 * trainer; documented in README.md. */
extern const sp_cfg_key sp_train_keys[];
extern const int sp_train_n_keys;

/* ---- the data schedule (pure functions, unit-tested without MPI) ---- */

/* perm[0..n) = the global shuffle of epoch `epoch`: a pure function of
 * (seed, epoch), identical on every rank. */
void sp_epoch_permutation(int64_t *perm, int64_t n, uint64_t seed, int epoch);

/* Steps per epoch for rows: floor(n_rows / global_batch) (the last partial
 * batch of an epoch is dropped, so every step has the same global batch). */
int64_t sp_steps_per_epoch(int64_t n_rows, int global_batch);

/* The rows rank r of `world` trains at position `pos` of an epoch:
 * out[0..global_batch/world) = perm[pos*B + r*b .. + b). */
void sp_rank_slice(int64_t *out, const int64_t *perm, int64_t pos, int global_batch, int rank,
                   int world);

#endif
