/* The training loop shared by every model (see train.h).
 *
 * One step: the global batch of this step is a slice of the epoch's global
 * shuffle; each rank reads only its share from the HDF5 file, builds the
 * model's loss on the tape, runs backward, and the gradient SUMS are
 * allreduced in fixed-order buckets and divided by the global batch. Clipping
 * and Adam then run identically on every rank. Every decision that could
 * differ between ranks (stop, failure, NaN) is agreed collectively at the
 * step boundary, so no rank is ever left waiting in a collective.
 *
 * Rank 0 alone writes: config.cfg, log.txt, metrics.h5 and checkpoints. All
 * input validation happens before anything is written, so a bad flag, key,
 * file or batch size leaves the run directory untouched. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <omp.h>

#include "supair/checkpoint.h"
#include "supair/dataset.h"
#include "supair/dist.h"
#include "supair/h5arrays.h"
#include "supair/metrics.h"
#include "supair/optim.h"
#include "supair/streams.h"
#include "supair/timer.h"
#include "supair/train.h"

#define SP_VERSION "0.1.0"
/* The stop "signal" of the time limit: below every real signal number, so a
 * real signal on any rank wins the MAX agreement and the run exits 3. */
#define STOP_TIME_LIMIT 1
#define EVAL_SEED_MIX 0x9e3779b97f4a7c15ULL /* eval noise: fixed, apart from training's */

typedef struct trainer {
    const sp_model_vtable *vt;
    void *model;
    sp_config *cfg;
    char *cfg_text;
    sp_params params;
    sp_adam adam;
    int grad_clean; /* the last Adam step left every gradient at 0 */
    sp_tape *tape;
    sp_dist *dist;
    int rank, world;
    sp_scenes_data data;      /* SP_DATA_ROWS */
    sp_streams_data sdata;    /* SP_DATA_STREAMS */
    int streams;              /* layout is SP_DATA_STREAMS */
    int data_open;
    sp_dist_shm *shm; /* the node's copy of the scenes (preload_data) */
    sp_dist_sharedp *sharedp; /* grad_reduce=node: node-shared parameters, or NULL */
    const char *data_path;
    const char *run_dir;
    /* schedule */
    int global_b, local_b;
    int64_t n_train, steps_per_epoch;
    int64_t step, epoch, epoch_pos;
    int64_t target_step;
    double last_lr;
    double time_s;      /* training wall time, evaluation excluded, across resumes */
    double best;        /* best value of the best metric so far (-inf: none) */
    int64_t *perm;      /* (n_train) this epoch's shuffle */
    int perm_epoch;
    /* per-step buffers, allocated once */
    int64_t *idx;       /* (local_b) */
    long *idx_long;
    float *x;           /* (local_b, row) */
    int32_t *counts;
    float *boxes;
    float *u0;          /* (local_b, frame) streams: frame before each chunk */
    float *state_all;   /* resume: every stream's carried state, while loading */
    long row_len;
    /* output (rank 0) */
    sp_metrics *metrics;
    FILE *log;
    char *hostnames;
    char resumed_from[4200]; /* rank 0: the checkpoint loaded, for the log */
    char *resume_notes;      /* rank 0: allowed config changes, for the log */
    int tty;
} trainer;

static int omp_threads(void) { return omp_get_max_threads(); }

/* ------------------------------------------------------------------ config */

/* Changes allowed on resume (lr, step budget...) are collected here and
 * logged once log.txt is open, so the run's own log records them. */
static void note_change(const char *key, const char *old_val, const char *new_val, void *u) {
    char **notes = u;
    char line[512];
    int n = snprintf(line, sizeof line, "config change on resume: %s = %s -> %s\n", key,
                     old_val ? old_val : "(absent)", new_val ? new_val : "(absent)");
    size_t have = *notes ? strlen(*notes) : 0;
    char *grown = realloc(*notes, have + (size_t)n + 1);
    if (!grown) return; /* a lost log line is not worth failing the run */
    memcpy(grown + have, line, (size_t)n + 1);
    *notes = grown;
}

/* Declares the shared and model keys and applies the model's defaults. */
static sp_config *config_base(const sp_model_vtable *vt, sp_error *err) {
    sp_config *c = sp_config_new();
    if (!c) {
        sp_fail(err, SP_ERUNTIME, "out of memory");
        return NULL;
    }
    if (sp_config_declare(c, sp_train_keys, sp_train_n_keys, err) ||
        sp_config_declare(c, vt->keys, vt->n_keys, err) ||
        (vt->shared_defaults &&
         sp_config_load_text(c, vt->shared_defaults, "model defaults", err))) {
        sp_config_free(c);
        return NULL;
    }
    return c;
}

/* ------------------------------------------------------------------ helpers */

static int mkdir_p(const char *path, sp_error *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return sp_fail(err, SP_EINPUT, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) && errno != EEXIST)
            return sp_fail(err, SP_EINPUT, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST)
        return sp_fail(err, SP_EINPUT, "%s: cannot create directory: %s", buf, strerror(errno));
    return SP_OK;
}

/* Writes text to path atomically (temp file, fsync, rename). */
static int write_file_atomic(const char *path, const char *text, sp_error *err) {
    char tmp[4300];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return sp_fail(err, SP_EINPUT, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return sp_fail(err, SP_ERUNTIME, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot write: %s", path, strerror(errno));
    }
    return SP_OK;
}

/* Every rank passes its local status; all get the same verdict. The first
 * failing rank keeps its message; the others get one naming it. */
static int agree(trainer *T, int rc, sp_error *err) {
    sp_dist_verdict v;
    sp_error e2 = {0};
    if (sp_dist_should_stop(T->dist, rc != SP_OK, &v, &e2)) {
        if (rc == SP_OK) *err = e2;
        return rc ? rc : e2.code;
    }
    if (!v.failed) return SP_OK;
    if (rc != SP_OK) return rc;
    return sp_fail(err, SP_ERUNTIME, "rank %d failed (see its message)", v.first_failed);
}

/* ------------------------------------------------------------------ data */

static sp_dataset *data_handle(trainer *T) { return T->streams ? T->sdata.ds : T->data.ds; }

/* Rows of an evaluation split: scenes, or speech sequences. -1: no split. */
static int64_t split_size(trainer *T, const char *split) {
    return T->streams ? sp_streams_n_seqs(&T->sdata, split) : sp_scenes_data_size(&T->data, split);
}

static int read_rows(trainer *T, const char *split, const int64_t *rows, int n, sp_error *err) {
    for (int i = 0; i < n; i++) T->idx_long[i] = (long)rows[i];
    return sp_scenes_data_read(&T->data, split, T->idx_long, n, T->x, T->counts, T->boxes, err);
}

static void ensure_perm(trainer *T) {
    if (T->perm_epoch == (int)T->epoch) return;
    sp_epoch_permutation(T->perm, T->n_train, (uint64_t)sp_config_int(T->cfg, "seed"),
                         (int)T->epoch);
    T->perm_epoch = (int)T->epoch;
}

/* ------------------------------------------------------------------ eval */

/* Speech: sequences [lo, hi) in batches of up to EVAL_SEQ_BATCH, padded to
 * the batch's longest (utterances differ in length; batching turns the
 * recurrences' matrix-vector products into matrix products). Each from zero
 * state with one posterior sample. */
#define EVAL_SEQ_BATCH 16
static int evaluate_sequences(trainer *T, const char *split, int64_t lo, int64_t hi, double *num,
                              double *den, sp_error *err) {
    const int frame = T->sdata.frame;
    int rc = SP_OK;
    int64_t cap = 0, ids[EVAL_SEQ_BATCH];
    int32_t lens[EVAL_SEQ_BATCH];
    float *x = NULL, *one = NULL, *u0 = malloc((size_t)EVAL_SEQ_BATCH * (size_t)frame * sizeof *u0);
    if (!u0) return sp_fail(err, SP_ERUNTIME, "out of memory");
    for (int64_t k0 = lo; k0 < hi && !rc; k0 += EVAL_SEQ_BATCH) {
        int n = (int)(hi - k0 < EVAL_SEQ_BATCH ? hi - k0 : EVAL_SEQ_BATCH);
        int64_t longest = 0;
        for (int i = 0; i < n && !rc; i++) {
            int64_t f = sp_streams_seq_frames(&T->sdata, split, k0 + i);
            if (f < 2)
                rc = sp_fail(err, SP_EINPUT, "%s: /%s sequence %lld has %lld frames (need 2)",
                             T->data_path, split, (long long)(k0 + i), (long long)f);
            lens[i] = (int32_t)f;
            ids[i] = k0 + i;
            if (f > longest) longest = f;
        }
        if (rc) break;
        if (longest > cap) {
            float *nx = realloc(x, (size_t)EVAL_SEQ_BATCH * (size_t)longest * (size_t)frame * sizeof *x);
            float *no = realloc(one, (size_t)longest * (size_t)frame * sizeof *one);
            if (nx) x = nx;
            if (no) one = no;
            if (!nx || !no) {
                rc = sp_fail(err, SP_ERUNTIME, "out of memory for %d sequences of %lld frames", n,
                             (long long)longest);
                break;
            }
            cap = longest;
        }
        int first_is_input = 0, all_full = 1;
        for (int i = 0; i < n && !rc; i++) {
            rc = sp_streams_read_seq(&T->sdata, split, k0 + i, one, u0 + (size_t)i * frame,
                                     &first_is_input, err);
            size_t row = (size_t)longest * (size_t)frame, have = (size_t)lens[i] * (size_t)frame;
            memcpy(x + (size_t)i * row, one, have * sizeof *x);
            memset(x + (size_t)i * row + have, 0, (row - have) * sizeof *x); /* padding */
            all_full &= lens[i] == longest;
        }
        if (rc) break;
        sp_batch b = {.n = n, .global_n = n, .index = ids, .x = x, .step = 0, .reset_state = 1,
                      .seed = (uint64_t)sp_config_int(T->cfg, "seed") ^ EVAL_SEED_MIX,
                      .seq_len = (int)longest, .frame = frame, .u0 = first_is_input ? NULL : u0,
                      .x_first_is_input = first_is_input, .seq_lens = all_full ? NULL : lens};
        sp_tape_reset(T->tape);
        rc = T->vt->eval(T->model, T->tape, &T->params, &b, num, den, err);
    }
    free(x);
    free(one);
    free(u0);
    return rc;
}

/* Evaluates rows [0, n) of `split`, spread over the ranks in chunks of the
 * local batch; out[i] = sum num_i / sum den_i over all ranks. */
static int evaluate(trainer *T, const char *split, int64_t n, double *out, sp_error *err) {
    const sp_model_vtable *vt = T->vt;
    int m = vt->n_eval_metrics;
    double num[SP_MAX_TERMS] = {0}, den[SP_MAX_TERMS] = {0};
    int64_t lo = n * T->rank / T->world, hi = n * (T->rank + 1) / T->world;
    int rc = SP_OK;
    sp_tape_set_grad(T->tape, 0);
    if (T->streams) rc = evaluate_sequences(T, split, lo, hi, num, den, err);
    else
    for (int64_t s = lo; s < hi && !rc; s += T->local_b) {
        int k = (int)((hi - s) < T->local_b ? (hi - s) : T->local_b);
        for (int i = 0; i < k; i++) T->idx[i] = s + i;
        rc = read_rows(T, split, T->idx, k, err);
        if (rc) break;
        sp_batch b = {.n = k, .global_n = (int)n, .index = T->idx, .x = T->x,
                      .counts = T->counts, .boxes = T->boxes, .max_objects = T->data.max_objects,
                      .step = 0, .epoch = 0, .reset_state = 1,
                      .seed = (uint64_t)sp_config_int(T->cfg, "seed") ^ EVAL_SEED_MIX};
        sp_tape_reset(T->tape);
        rc = vt->eval(T->model, T->tape, &T->params, &b, num, den, err);
    }
    sp_tape_set_grad(T->tape, 1);
    rc = agree(T, rc, err);
    if (rc) return rc;
    double buf[2 * SP_MAX_TERMS];
    for (int i = 0; i < m; i++) buf[i] = num[i], buf[m + i] = den[i];
    if ((rc = sp_dist_reduce_doubles(T->dist, buf, 2 * m, 0, err))) return rc;
    for (int i = 0; i < m; i++) out[i] = buf[m + i] > 0 ? buf[i] / buf[m + i] : NAN;
    return SP_OK;
}

/* ------------------------------------------------------------------ checkpoints */

/* Streams: the carried state of every stream, (streams, floats), assembled
 * from each rank's slice (a sum-reduce of disjoint slices is exact), so the
 * checkpoint does not depend on the world size. *out is malloc'd on rank 0. */
static int gather_state(trainer *T, float **out, long *per_stream, sp_error *err) {
    long F = T->vt->state_floats(T->model);
    long total = (long)T->global_b * F;
    double *buf = calloc((size_t)total, sizeof *buf);
    if (!buf) return sp_fail(err, SP_ERUNTIME, "out of memory gathering stream states");
    const float *mine = T->vt->state(T->model);
    long off = (long)T->rank * T->local_b * F;
    for (long i = 0; i < (long)T->local_b * F; i++) buf[off + i] = mine[i];
    int rc = SP_OK;
    /* In pieces: the reduction takes an int count. */
    for (long o = 0; o < total && !rc; o += 1 << 24) {
        long k = total - o < (1 << 24) ? total - o : (1 << 24);
        rc = sp_dist_reduce_doubles(T->dist, buf + o, (int)k, 0, err);
    }
    if (!rc && T->rank == 0) {
        *out = malloc((size_t)total * sizeof **out);
        if (!*out) rc = sp_fail(err, SP_ERUNTIME, "out of memory gathering stream states");
        for (long i = 0; !rc && i < total; i++) (*out)[i] = (float)buf[i];
    }
    free(buf);
    *per_stream = F;
    return rc;
}

static int save_checkpoint(trainer *T, int as_best, sp_error *err) {
    int rc = SP_OK;
    float *state = NULL;
    long state_f = 0;
    if (T->streams && (rc = gather_state(T, &state, &state_f, err))) return rc;
    /* Rows up to this step must be on disk before the checkpoint that
     * claims them: a resume then reproduces an uninterrupted run's file. */
    if (T->rank == 0 && T->metrics) rc = sp_metrics_flush(T->metrics, err);
    if (T->rank == 0 && !rc) {
        sp_ckpt_meta meta = {
            .step = T->step, .epoch = T->epoch, .epoch_pos = T->epoch_pos,
            .seed = (uint64_t)sp_config_int(T->cfg, "seed"), .config = T->cfg_text,
            .world_size = T->world, .time_s = T->time_s,
            .structure_seed = T->vt->structure_seed ? T->vt->structure_seed(T->model) : 0};
        snprintf(meta.model, sizeof meta.model, "%s", T->vt->name);
        /* Trainer state beyond the contract's attributes: Adam's step count
         * (it differs from `step` after skipped non-finite steps) and the best
         * metric so far (absent until there is one). */
        int64_t adam_t = T->adam.t;
        float best = (float)T->best;
        sp_ckpt_array st[3] = {
            {.name = "trainer/adam_t", .type = SP_CKPT_I64, .ndim = 1, .shape = {1}, .data = &adam_t},
            {.name = "trainer/best", .type = SP_CKPT_F32, .ndim = 1, .shape = {1}, .data = &best}};
        int n_st = isfinite(T->best) ? 2 : 1; /* the best entry only once there is one */
        if (state) {
            sp_ckpt_array *a = &st[n_st++];
            memset(a, 0, sizeof *a);
            snprintf(a->name, sizeof a->name, "model/stream_state");
            a->type = SP_CKPT_F32;
            a->ndim = 2;
            a->shape[0] = T->global_b, a->shape[1] = state_f;
            a->data = state;
        }
        rc = as_best ? sp_ckpt_save_best(T->run_dir, &T->params, &meta, st, n_st, err)
                     : sp_ckpt_save(T->run_dir, &T->params, &meta, st, n_st,
                                    (int)sp_config_int(T->cfg, "keep_ckpts"), NULL, 0, err);
    }
    free(state);
    return agree(T, rc, err);
}

/* ------------------------------------------------------------------ progress */

static void progress(trainer *T, double loss, double sps, double comm_share, double eta_s) {
    char eta[32];
    if (eta_s >= 3600) snprintf(eta, sizeof eta, "%dh%02dm", (int)(eta_s / 3600), (int)fmod(eta_s / 60, 60));
    else snprintf(eta, sizeof eta, "%dm%02ds", (int)(eta_s / 60), (int)fmod(eta_s, 60));
    if (T->tty) {
        int width = 24, done = (int)(width * (double)T->step / (double)T->target_step);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < done ? '#' : '.';
        bar[width] = '\0';
        fprintf(stdout, "\r[%s] step %lld/%lld epoch %lld loss %.4f %.0f samples/s comm %.1f%% ETA %s  ",
                bar, (long long)T->step, (long long)T->target_step, (long long)T->epoch, loss, sps,
                100 * comm_share, eta);
        fflush(stdout);
        if (T->log)
            fprintf(T->log, "step %lld/%lld epoch %lld loss %.4f %.0f samples/s comm %.1f%% ETA %s\n",
                    (long long)T->step, (long long)T->target_step, (long long)T->epoch, loss, sps,
                    100 * comm_share, eta), fflush(T->log);
    } else {
        sp_info("step %lld/%lld epoch %lld loss %.4f %.0f samples/s comm %.1f%% ETA %s",
                (long long)T->step, (long long)T->target_step, (long long)T->epoch, loss, sps,
                100 * comm_share, eta);
    }
}

/* Live bar or plain lines. Open MPI gives every rank a pty whether or not
 * mpirun's own output is a terminal, so isatty() cannot be trusted under a
 * launcher: there lines are the default and SUPAIR_PROGRESS=bar asks for the
 * bar (SUPAIR_PROGRESS=lines forces lines anywhere). */
static int progress_bar_wanted(void) {
    const char *p = getenv("SUPAIR_PROGRESS");
    if (p && !strcmp(p, "bar")) return 1;
    if (p && !strcmp(p, "lines")) return 0;
    int launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_RANK") || getenv("SLURM_STEP_ID");
    const char *term = getenv("TERM");
    return !launched && isatty(fileno(stdout)) && term && strcmp(term, "dumb");
}

static void end_progress_line(trainer *T) {
    if (T->tty && T->rank == 0) fputc('\n', stdout);
}

/* ------------------------------------------------------------------ setup */

/* Resolves the configuration: model defaults, then (on resume) the run's own
 * configuration from its newest checkpoint, then --config, then --set.
 * Collective; every rank resolves from the same inputs and the results are
 * compared later (sp_dist_check_agreement). */
static int resolve_config(trainer *T, const sp_train_opts *o, sp_ckpt_meta *resume, int resuming,
                          sp_error *err) {
    const char *model = o->model;
    if (resuming) {
        if (model && strcmp(model, resume->model))
            return sp_fail(err, SP_EINPUT, "--model %s: run %s holds a %s model", model, o->run_dir,
                           resume->model);
        model = resume->model;
    }
    if (!model) return sp_fail(err, SP_EINPUT, "train: --model is required for a new run");
    T->vt = sp_model_find(model);
    if (!T->vt)
        return sp_fail(err, SP_EINPUT, "unknown model '%s' (expected one of: %s)", model,
                       sp_model_names());
    T->cfg = config_base(T->vt, err);
    if (!T->cfg) return err->code;
    sp_config *old = NULL;
    if (resuming) {
        if (sp_config_load_text(T->cfg, resume->config, "checkpoint config", err)) return err->code;
        old = config_base(T->vt, err);
        if (!old) return err->code;
        if (sp_config_load_text(old, resume->config, "checkpoint config", err)) {
            sp_config_free(old);
            return err->code;
        }
    }
    int rc = SP_OK;
    if (o->config_file) rc = sp_config_load_file(T->cfg, o->config_file, err);
    for (int i = 0; !rc && i < o->n_sets; i++) rc = sp_config_set(T->cfg, o->sets[i], err);
    if (!rc && old)
        rc = sp_config_compare(old, T->cfg, err, T->rank == 0 ? note_change : NULL, &T->resume_notes);
    sp_config_free(old);
    if (rc) return rc;
    /* The data file is part of the record (eval defaults to it). */
    if (o->data && (rc = sp_config_set_value(T->cfg, "data", o->data, err))) return rc;
    T->cfg_text = sp_config_to_text(T->cfg);
    if (!T->cfg_text) return sp_fail(err, SP_ERUNTIME, "out of memory");
    T->global_b = (int)sp_config_int(T->cfg, "batch_size");
    if (T->global_b % T->world)
        return sp_fail(err, SP_EINPUT, "batch_size %d is not divisible by the %d ranks", T->global_b,
                       T->world);
    T->local_b = T->global_b / T->world;
    return SP_OK;
}

/* Rank 0 finds the newest checkpoint's attributes and sends them to all. */
static int find_resume(trainer *T, const char *run_dir, sp_ckpt_meta *meta, int *resuming,
                       sp_error *err) {
    int rc = SP_OK;
    int64_t have = 0;
    char *cfg = NULL;
    size_t cfg_len = 0;
    if (T->rank == 0) {
        int64_t *steps = NULL;
        int n = 0;
        struct stat sb;
        if (stat(run_dir, &sb) == 0 && (rc = sp_ckpt_list(run_dir, &steps, &n, err)) == SP_OK) {
            /* The newest readable attributes; load later verifies the data. */
            for (int i = n - 1; i >= 0 && !have; i--) {
                char path[4200];
                sp_error e2 = {0};
                snprintf(path, sizeof path, "%s/ckpt/step_%08lld.h5", run_dir, (long long)steps[i]);
                if (sp_ckpt_read_meta(path, meta, &e2) == SP_OK) have = 1;
                else sp_warn("%s", e2.msg);
            }
        }
        free(steps);
        if (have) {
            cfg = meta->config;
            cfg_len = strlen(cfg) + 1;
        }
    }
    if ((rc = agree(T, rc, err))) return rc;
    int64_t hdr[2] = {have, (int64_t)cfg_len};
    if ((rc = sp_dist_bcast(T->dist, hdr, sizeof hdr, err))) return rc;
    *resuming = (int)hdr[0];
    if (!*resuming) return SP_OK;
    if (T->rank != 0) {
        cfg = malloc((size_t)hdr[1]);
        if (!cfg) return sp_fail(err, SP_ERUNTIME, "out of memory");
        meta->config = cfg;
    }
    if ((rc = sp_dist_bcast(T->dist, meta->model, sizeof meta->model, err))) return rc;
    return sp_dist_bcast(T->dist, meta->config, (size_t)hdr[1], err);
}

static int alloc_buffers(trainer *T, sp_error *err) {
    T->row_len = 1;
    for (int i = 0; i < T->vt->row_ndim; i++) T->row_len *= T->vt->row_shape[i];
    int mo = T->streams ? 0 : T->data.max_objects;
    /* Streams are read in order: no shuffle. */
    T->perm = malloc((size_t)(T->streams ? 1 : T->n_train) * sizeof *T->perm);
    T->u0 = malloc((size_t)T->local_b * 512 * sizeof *T->u0);
    T->idx = malloc((size_t)T->local_b * sizeof *T->idx);
    T->idx_long = malloc((size_t)T->local_b * sizeof *T->idx_long);
    T->x = malloc((size_t)T->local_b * (size_t)T->row_len * sizeof *T->x);
    T->counts = malloc((size_t)T->local_b * sizeof *T->counts);
    T->boxes = malloc((size_t)T->local_b * (size_t)(mo > 0 ? mo : 1) * 4 * sizeof *T->boxes);
    T->tape = sp_tape_create((size_t)64 << 20);
    if (!T->perm || !T->idx || !T->idx_long || !T->x || !T->counts || !T->boxes || !T->tape || !T->u0)
        return sp_fail(err, SP_ERUNTIME, "out of memory for the step buffers (local batch %d)",
                       T->local_b);
    T->perm_epoch = -1;
    return SP_OK;
}

static void trainer_free(trainer *T) {
    if (T->metrics) {
        sp_error e2 = {0};
        sp_metrics_close(T->metrics, &e2);
    }
    if (T->log) {
        sp_log_set_file(NULL);
        fclose(T->log);
    }
    if (T->model) T->vt->destroy(T->model);
    sp_dist_sharedp_free(T->sharedp, &T->params); /* collective */
    sp_params_free(&T->params);
    sp_tape_destroy(T->tape);
    if (T->data_open && T->streams) sp_streams_close(&T->sdata);
    else if (T->data_open) sp_scenes_data_close(&T->data);
    sp_dist_node_free(T->shm); /* after the data that maps it; collective */
    free(T->u0);
    free(T->state_all);
    sp_config_free(T->cfg);
    free(T->cfg_text);
    free(T->hostnames);
    free(T->resume_notes);
    free(T->perm);
    free(T->idx);
    free(T->idx_long);
    free(T->x);
    free(T->counts);
    free(T->boxes);
}

/* Opens the data, builds the model and its parameters (rank 0's values
 * broadcast: every replica starts identical). */
static int build(trainer *T, const char *data_path, sp_error *err) {
    T->streams = T->vt->layout == SP_DATA_STREAMS;
    int rc = T->streams ? sp_streams_open(&T->sdata, data_path, err)
                        : sp_scenes_data_open(&T->data, data_path, err);
    if (rc) return rc;
    T->data_open = 1;
    T->data_path = data_path;
    if (T->streams) {
        /* One global batch = one chunk of every stream: the file's stream
         * count is the batch, and rank r carries streams [r*b, (r+1)*b). */
        if (T->global_b != T->sdata.streams)
            return sp_fail(err, SP_EINPUT, "batch_size %d does not match the %d streams of %s",
                           T->global_b, T->sdata.streams, data_path);
        T->steps_per_epoch = sp_streams_batches(&T->sdata, "train");
        T->n_train = T->steps_per_epoch * T->global_b;
    } else {
        T->n_train = sp_scenes_data_size(&T->data, "train");
        T->steps_per_epoch = sp_steps_per_epoch(T->n_train, T->global_b);
    }
    if (T->steps_per_epoch < 1)
        return sp_fail(err, SP_EINPUT, "%s: %lld training rows, fewer than one batch of %d",
                       data_path, (long long)T->n_train, T->global_b);
    if ((rc = alloc_buffers(T, err))) return rc;
    sp_params_init(&T->params);
    if ((rc = T->vt->create(&T->model, T->cfg, &T->params, err))) return rc;
    if (T->streams && (!T->vt->state_alloc || !T->vt->state || !T->vt->state_floats))
        return sp_fail(err, SP_ERUNTIME, "model %s: streamed model without carried state", T->vt->name);
    if (T->streams && (rc = T->vt->state_alloc(T->model, T->local_b, err))) return rc;
    if ((rc = sp_params_finalize(&T->params, err))) return rc;
    if ((rc = T->vt->init_params(T->model, &T->params, (uint64_t)sp_config_int(T->cfg, "seed"), err)))
        return rc;
    sp_adam_init(&T->adam, strcmp(sp_config_str(T->cfg, "adam_form"), "lasagne") ? SP_ADAM_PYTORCH
                                                                                   : SP_ADAM_LASAGNE,
                 (float)sp_config_float(T->cfg, "lr"));
    T->adam.b1 = (float)sp_config_float(T->cfg, "adam_b1");
    T->adam.b2 = (float)sp_config_float(T->cfg, "adam_b2");
    T->adam.eps = (float)sp_config_float(T->cfg, "adam_eps");
    sp_dist_set_bucket_bytes(T->dist, (size_t)(sp_config_float(T->cfg, "bucket_mb") * (1 << 20)));
    return SP_OK;
}

static int load_resume(trainer *T, sp_error *err) {
    int rc = SP_OK;
    int64_t st[5] = {0};
    double dst[2] = {0, -INFINITY};
    if (T->rank == 0) {
        sp_ckpt_meta meta = {0};
        sp_ckpt_state state = {0};
        int found = 0;
        char path[4200];
        rc = sp_ckpt_load_latest(T->run_dir, &T->params, &meta, &state, &found, path, sizeof path, err);
        if (!rc && !found) rc = sp_fail(err, SP_ERUNTIME, "%s/ckpt: the checkpoint disappeared", T->run_dir);
        if (!rc) {
            const sp_ckpt_array *a = sp_ckpt_state_find(&state, "trainer/adam_t");
            const sp_ckpt_array *b = sp_ckpt_state_find(&state, "trainer/best");
            st[0] = meta.step, st[1] = meta.epoch, st[2] = meta.epoch_pos;
            st[3] = a ? *(int64_t *)a->data : meta.step;
            dst[0] = meta.time_s;
            dst[1] = b ? *(float *)b->data : -INFINITY;
            if (T->streams) {
                const sp_ckpt_array *ss = sp_ckpt_state_find(&state, "model/stream_state");
                long F = T->vt->state_floats(T->model);
                if (!ss || ss->ndim != 2 || ss->shape[0] != T->global_b || ss->shape[1] != F)
                    rc = sp_fail(err, SP_EINPUT, "%s: no stream state of %d x %ld floats", path,
                                 T->global_b, F);
                else if (!(T->state_all = malloc((size_t)T->global_b * (size_t)F * sizeof(float))))
                    rc = sp_fail(err, SP_ERUNTIME, "out of memory");
                else
                    memcpy(T->state_all, ss->data, (size_t)T->global_b * (size_t)F * sizeof(float));
            }
            snprintf(T->resumed_from, sizeof T->resumed_from, "%s", path);
        }
        sp_ckpt_meta_free(&meta);
        sp_ckpt_state_free(&state);
    }
    if ((rc = agree(T, rc, err))) return rc;
    if ((rc = sp_dist_bcast(T->dist, st, sizeof st, err))) return rc;
    if ((rc = sp_dist_bcast(T->dist, dst, sizeof dst, err))) return rc;
    T->step = st[0], T->epoch = st[1], T->epoch_pos = st[2], T->adam.t = st[3];
    T->time_s = dst[0], T->best = dst[1];
    if (T->streams) {
        long F = T->vt->state_floats(T->model);
        size_t bytes = (size_t)T->global_b * (size_t)F * sizeof(float);
        if (T->rank != 0 && !(T->state_all = malloc(bytes))) rc = sp_fail(err, SP_ERUNTIME, "out of memory");
        if ((rc = agree(T, rc, err)) || (rc = sp_dist_bcast(T->dist, T->state_all, bytes, err))) return rc;
        memcpy(T->vt->state(T->model), T->state_all + (size_t)T->rank * (size_t)T->local_b * (size_t)F,
               (size_t)T->local_b * (size_t)F * sizeof(float));
        free(T->state_all);
        T->state_all = NULL;
    }
    return sp_dist_bcast_params(T->dist, &T->params, 1, err);
}

static const char *const train_cols_shared[] = {"time_s",      "loss",      "lr",    "grad_norm",
                                                "samples_per_s", "compute_s", "comm_s"};
#define N_TRAIN_SHARED 7

/* Rank 0: metrics.h5. keep_upto < 0: a new file; otherwise the existing
 * rows with step <= keep_upto are kept (a resume keeps those up to its
 * checkpoint; `eval` keeps everything: INT64_MAX). */
static int open_metrics(trainer *T, int64_t keep_upto, sp_error *err) {
    const sp_model_vtable *vt = T->vt;
    const char *tcols[N_TRAIN_SHARED + SP_MAX_TERMS], *ecols[1 + SP_MAX_TERMS];
    for (int i = 0; i < N_TRAIN_SHARED; i++) tcols[i] = train_cols_shared[i];
    for (int i = 0; i < vt->n_train_terms; i++) tcols[N_TRAIN_SHARED + i] = vt->train_terms[i];
    ecols[0] = "time_s";
    for (int i = 0; i < vt->n_eval_metrics; i++) ecols[1 + i] = vt->eval_metrics[i];
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.h5", T->run_dir);
    sp_metrics_info info = {.model = vt->name, .config = T->cfg_text, .version = SP_VERSION,
                            .world_size = T->world, .omp_threads = omp_threads(),
                            .start_time = sp_time_wall(), .hostnames = T->hostnames};
    int rc = sp_metrics_open(&T->metrics, path, tcols, N_TRAIN_SHARED + vt->n_train_terms, ecols,
                             1 + vt->n_eval_metrics, &info, keep_upto, err);
    if (!rc)
        sp_metrics_set_flush(T->metrics, (int)sp_config_int(T->cfg, "metrics_flush_every"), 5.0);
    return rc;
}

/* Rank 0: one /eval row (step, time_s, the model's metrics), flushed. */
static int append_eval_row(trainer *T, const double *m, sp_error *err) {
    if (!T->metrics) {
        /* `supair_dist eval` on a run: reopen keeping every row (evaluating
         * best.h5 must not drop the rows trained after it). */
        int rc = open_metrics(T, INT64_MAX, err);
        if (rc) return rc;
    }
    double row[1 + SP_MAX_TERMS];
    row[0] = T->time_s;
    for (int i = 0; i < T->vt->n_eval_metrics; i++) row[1 + i] = m[i];
    int rc = sp_metrics_append(T->metrics, SP_METRICS_EVAL, T->step, row, err);
    return rc ? rc : sp_metrics_flush(T->metrics, err);
}

/* Rank 0: the run directory, config.cfg, log.txt and metrics.h5. Reached
 * only after every input was validated, so bad input never touches DIR. */
static int open_outputs(trainer *T, int resuming, sp_error *err) {
    int rc = SP_OK;
    if (T->rank == 0) {
        char path[4200];
        rc = mkdir_p(T->run_dir, err);
        if (!rc) {
            snprintf(path, sizeof path, "%s/config.cfg", T->run_dir);
            rc = write_file_atomic(path, T->cfg_text, err);
        }
        if (!rc) {
            snprintf(path, sizeof path, "%s/log.txt", T->run_dir);
            T->log = fopen(path, "a");
            if (!T->log) rc = sp_fail(err, SP_EINPUT, "%s: cannot open: %s", path, strerror(errno));
            else sp_log_set_file(T->log);
        }
        if (!rc) rc = open_metrics(T, resuming ? T->step : -1, err);
    }
    return agree(T, rc, err);
}

/* Step budget: --steps N (absolute), --epochs N, else config `epochs`. */
static int64_t target_step(const trainer *T, const sp_train_opts *o) {
    if (o->steps) return o->steps;
    int64_t epochs = o->epochs ? o->epochs : sp_config_int(T->cfg, "epochs");
    return epochs * T->steps_per_epoch;
}

/* Backward hook: entries whose first forward use is at or after `node`
 * have their final gradient once node has run. Buckets go from the top of
 * the buffer down (SP_DIST_DESCENDING): the largest offset below which some
 * entry is not final yet is the boundary; everything above it can be
 * reduced while backward continues. */
typedef struct overlap_ctx {
    trainer *T;
    long boundary;
    int rc;
    sp_error err;
} overlap_ctx;

static void overlap_hook(void *vctx, size_t node) {
    overlap_ctx *o = vctx;
    const sp_params *p = &o->T->params;
    long boundary = o->boundary;
    for (int i = p->n_entries - 1; i >= 0; i--) {
        long fu = p->first_use[i];
        if (fu == SP_PARAMS_UNSEEN || fu < (long)node) break;
        boundary = p->entries[i].offset;
    }
    if (boundary < o->boundary) o->boundary = boundary;
    /* Also tests the started buckets: Open MPI progresses them only here. */
    if (!o->rc) o->rc = sp_dist_bucket_ready(o->T->dist, o->boundary, &o->err);
}

/* This step's learning rate (the model's schedule, or the config's lr). */
static double step_lr(trainer *T) {
    return T->vt->lr_at ? T->vt->lr_at(T->model, T->cfg, T->step,
                                       T->epoch + (double)T->epoch_pos / T->steps_per_epoch)
                        : sp_config_float(T->cfg, "lr");
}

static void advance(trainer *T) {
    T->step++;
    if (++T->epoch_pos >= T->steps_per_epoch) {
        T->epoch++;
        T->epoch_pos = 0;
    }
}

/* Sums the loss and train terms over the ranks; averages over the global
 * batch into *loss_out and terms. */
static int reduce_terms(trainer *T, double *local, double *terms, double *loss_out, sp_error *err) {
    const int nt = T->vt->n_train_terms + 1;
    int rc = sp_dist_reduce_doubles(T->dist, local, nt, 0, err);
    if (rc) return rc;
    *loss_out = local[0] / T->global_b;
    for (int i = 1; i < nt; i++) terms[i - 1] = local[i] / T->global_b;
    return SP_OK;
}

/* Clipping and the Adam step over gradient elements [lo, hi) (the whole
 * buffer, or this rank's slice of node-shared parameters), whose reduced
 * SUMS still need the average gscale; gnorm is the averaged gradient's
 * global norm. Zeroes the range's gradient. */
static void apply_update(trainer *T, long lo, long hi, double gnorm, float gscale) {
    float *g = T->params.grad + lo;
    const long n = hi - lo;
    double cn = sp_config_float(T->cfg, "clip_norm"), cv = sp_config_float(T->cfg, "clip_value");
    if (cn > 0 || cv > 0) { /* clipping works on the averaged gradient */
        sp_floats_scale(g, n, gscale);
        gscale = 1.0f;
    }
    /* as sp_clip_global_norm: rescale to cn when above it */
    if (cn > 0 && cn / (gnorm + 1e-6) < 1.0) sp_floats_scale(g, n, (float)(cn / (gnorm + 1e-6)));
    if (cv > 0) sp_floats_clip(g, n, (float)cv);
    double lr = step_lr(T);
    sp_adam_step_slice(&T->params, &T->adam, (float)lr, gscale, lo, hi);
    T->last_lr = lr;
}

/* The rest of a step under grad_reduce=node (dist.h, node-shared
 * parameters): backward into this rank's own gradient buffer, this rank's
 * slice summed over the group (and allreduced across groups), the norm from
 * the slices' partial sums, clipping and Adam over the slice only, then the
 * hand-over that makes the new values visible to every rank. A rank whose
 * forward failed still takes part (its gradient is zero). */
static int finish_shared(trainer *T, int rc, sp_tensor *loss, double *local, double t0,
                         double *terms, double *loss_out, double *gnorm, double *compute_s,
                         double *comm_s, int *applied, sp_error *err) {
    sp_dist_comm_take(T->dist);
    if (!rc) sp_tape_backward(T->tape, loss, 1.0f);
    int frc = rc;
    /* An MPI failure here cannot be agreed on any more: returned at once. */
    if ((rc = sp_dist_sharedp_reduce(T->sharedp, err))) return rc;
    if ((rc = agree(T, frc, err)) || (rc = reduce_terms(T, local, terms, loss_out, err))) return rc;
    long lo, hi;
    sp_dist_sharedp_slice(T->sharedp, &lo, &hi);
    const float gscale = 1.0f / (float)T->global_b;
    double ss = sp_floats_sum_squares(T->params.grad + lo, hi - lo, gscale);
    if ((rc = sp_dist_sharedp_sum(T->sharedp, &ss, err))) return rc;
    *gnorm = sqrt(ss);
    /* Every rank holds the same loss and norm: the same decision. */
    *applied = isfinite(*loss_out) && isfinite(*gnorm);
    if (*applied) apply_update(T, lo, hi, *gnorm, gscale);
    else memset(T->params.grad + lo, 0, (size_t)(hi - lo) * sizeof(float));
    T->grad_clean = 1; /* the other slices were zeroed by their reducers */
    if ((rc = sp_dist_sharedp_publish(T->sharedp, err))) return rc;
    *comm_s = sp_dist_comm_take(T->dist);
    *compute_s = sp_time_now() - t0 - *comm_s;
    advance(T);
    return SP_OK;
}

/* One optimisation step. Returns SP_OK, or an error agreed by all ranks.
 * *applied = 0 when the reduced gradient was not finite (step skipped). */
static int train_step(trainer *T, double *terms, double *loss_out, double *gnorm, double *compute_s,
                      double *comm_s, int *applied, sp_error *err) {
    const sp_model_vtable *vt = T->vt;
    double t0 = sp_time_now();
    int rc;
    if (T->streams) {
        int s0 = T->rank * T->local_b;
        for (int i = 0; i < T->local_b; i++) T->idx[i] = s0 + i; /* stream ids */
        rc = sp_streams_read_chunk(&T->sdata, "train", T->epoch_pos, s0, T->local_b, T->x,
                                   T->epoch_pos == 0 ? T->u0 : NULL, err);
    } else {
        ensure_perm(T);
        sp_rank_slice(T->idx, T->perm, T->epoch_pos, T->global_b, T->rank, T->world);
        rc = read_rows(T, "train", T->idx, T->local_b, err);
    }
    double local[SP_MAX_TERMS + 1] = {0};
    sp_tensor *loss = NULL;
    if (!rc) {
        sp_batch b = {.n = T->local_b, .global_n = T->global_b, .index = T->idx, .x = T->x,
                      .counts = T->counts, .boxes = T->boxes, .max_objects = T->data.max_objects,
                      .step = T->step, .epoch = (int)T->epoch, .reset_state = T->epoch_pos == 0,
                      .epoch_float = T->epoch + (double)T->epoch_pos / (double)T->steps_per_epoch,
                      .seed = (uint64_t)sp_config_int(T->cfg, "seed"),
                      .seq_len = T->streams ? T->sdata.chunk : 0, .frame = T->streams ? T->sdata.frame : 0,
                      .u0 = T->streams && T->epoch_pos == 0 ? T->u0 : NULL};
        sp_tape_reset(T->tape);
        if (!T->grad_clean) sp_params_zero_grad(&T->params);
        T->grad_clean = 0;
        sp_params_reset_use(&T->params);
        loss = vt->loss(T->model, T->tape, &T->params, &b, local + 1, err);
        if (!loss || sp_tape_failed(T->tape)) {
            if (!err->code) sp_fail(err, SP_ERUNTIME, "model %s: out of memory in the step", vt->name);
            rc = err->code ? err->code : SP_ERUNTIME;
        } else {
            local[0] = loss->val[0];
        }
    }
    if (T->sharedp) return finish_shared(T, rc, loss, local, t0, terms, loss_out, gnorm, compute_s,
                                         comm_s, applied, err);
    /* Gradient SUMS are reduced while backward runs (buckets start as their
     * entries become final), then scaled to the mean over the global batch.
     * Every rank issues the same collectives, so a rank whose forward failed
     * still takes part (with zero gradients) before the failure is agreed. */
    sp_dist_comm_take(T->dist);
    sp_error e2 = {0};
    int arc = sp_dist_allreduce_begin(T->dist, T->params.grad, T->params.total, SP_DIST_DESCENDING, &e2);
    overlap_ctx ov = {.T = T, .boundary = T->params.total};
    if (!rc && !arc) {
        sp_tape_set_backward_hook(T->tape, overlap_hook, &ov);
        sp_tape_backward(T->tape, loss, 1.0f);
        sp_tape_set_backward_hook(T->tape, NULL, NULL);
        if (ov.rc) arc = ov.rc, e2 = ov.err;
    }
    double t1 = sp_time_now();
    /* The reduced sums are averaged (times gscale) inside the passes that
     * read them next, the norm and Adam, not in a pass of their own. */
    const float gscale = 1.0f / (float)T->global_b;
    if (!arc) arc = sp_dist_allreduce_wait(T->dist, 1.0f, &e2);
    if (arc) {
        *err = e2;
        return arc; /* MPI failed: no agreement possible any more */
    }
    if ((rc = agree(T, rc, err)) || (rc = reduce_terms(T, local, terms, loss_out, err))) return rc;
    *comm_s = sp_dist_comm_take(T->dist);
    double t2 = sp_time_now();
    /* The reduced gradient is identical on every rank: so is this decision. */
    /* One pass for both: the norm (squares summed in double, which cannot
     * overflow for finite floats) is finite exactly when every entry is. */
    *gnorm = sp_grad_global_norm_scaled(&T->params, gscale);
    *applied = isfinite(*loss_out) && isfinite(*gnorm);
    if (*applied) {
        apply_update(T, 0, T->params.total, *gnorm, gscale);
        T->grad_clean = 1;
    }
    *compute_s = (t1 - t0) + (sp_time_now() - t2);
    advance(T);
    return SP_OK;
}

static int run_eval(trainer *T, int64_t n, int final, sp_error *err) {
    const sp_model_vtable *vt = T->vt;
    const char *split = sp_config_str(T->cfg, "eval_split");
    int64_t size = split_size(T, split);
    if (size < 0) return sp_fail(err, SP_EINPUT, "%s: no '%s' split to evaluate on", T->data_path, split);
    if (n <= 0 || n > size) n = size;
    double m[SP_MAX_TERMS];
    double t0 = sp_time_now();
    int rc = evaluate(T, split, n, m, err);
    if (rc) return rc;
    char line[512];
    int len = snprintf(line, sizeof line, "eval step %lld (%s, %lld %s rows, %.1f s):",
                       (long long)T->step, final ? "final" : "periodic", (long long)n, split,
                       sp_time_now() - t0);
    for (int i = 0; i < vt->n_eval_metrics && len < (int)sizeof line; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, " %s %.4f", vt->eval_metrics[i], m[i]);
    if (T->rank == 0) {
        end_progress_line(T);
        sp_info("%s", line);
        rc = append_eval_row(T, m, err);
    }
    if ((rc = agree(T, rc, err))) return rc;
    double v = m[vt->best_metric];
    if (isfinite(v) && v > T->best) {
        T->best = v;
        rc = save_checkpoint(T, 1, err);
    }
    return rc;
}

/* Attaches the preloaded (filled) splits: train at block, the eval split
 * after it. */
static int attach_splits(trainer *T, char *block, size_t train_bytes, int with_train,
                         int with_eval, sp_error *err) {
    int rc = with_train ? sp_scenes_data_attach(&T->data, "train", block, 0, err) : SP_OK;
    if (!rc && with_eval)
        rc = sp_scenes_data_attach(&T->data, sp_config_str(T->cfg, "eval_split"),
                                   block + (with_train ? train_bytes : 0), 0, err);
    return rc;
}

/* Training reads random rows every step, and a scenes file stores each
 * scene as its own compressed chunk: a rank's 128 rows took 3.5 ms of HDF5
 * per step on an idle machine, 7 ms with both cores busy; from memory
 * 0.3 ms. So the train split (and the evaluation split, budget permitting)
 * is held in memory, one copy per node that the node's ranks share and
 * fill side by side. Collective; called once the ranks agree on the data
 * (same sizes everywhere). */
static int preload_data(trainer *T, sp_error *err) {
    if (T->streams) return SP_OK;
    const size_t budget = (size_t)sp_config_int(T->cfg, "data_preload_mb") << 20;
    const char *es = sp_config_str(T->cfg, "eval_split");
    size_t bt = 0, be = 0;
    int rc = sp_scenes_data_preload_bytes(&T->data, "train", &bt, err);
    if (!rc && strcmp(es, "train")) rc = sp_scenes_data_preload_bytes(&T->data, es, &be, err);
    if ((rc = agree(T, rc, err))) return rc;
    const int with_train = bt > 0 && bt <= budget;
    const int with_eval = be > 0 && (with_train ? bt : 0) + be <= budget;
    const size_t total = (with_train ? bt : 0) + (with_eval ? be : 0);
    if (total == 0) return SP_OK;
    void *block = NULL;
    double t0 = sp_time_now();
    if ((rc = agree(T, sp_dist_node_alloc(T->dist, total, &T->shm, &block, err), err)))
        return rc;
    /* The node's ranks decompress one share of the rows each (one image is
     * one compressed chunk: ~2 s for the default scenes on one core), then
     * every rank attaches the block once it is published. */
    const int part = sp_dist_local_rank(T->dist), parts = sp_dist_local_size(T->dist);
    if (with_train) rc = sp_scenes_data_fill_part(&T->data, "train", block, part, parts, err);
    if (!rc && with_eval)
        rc = sp_scenes_data_fill_part(&T->data, es, (char *)block + (with_train ? bt : 0), part,
                                      parts, err);
    sp_error e2 = {0};
    int prc = sp_dist_node_publish(T->shm, &e2);
    if (!rc && prc) rc = prc, *err = e2;
    if ((rc = agree(T, rc, err))) return rc;
    rc = attach_splits(T, block, bt, with_train, with_eval, err);
    if ((rc = agree(T, rc, err))) return rc;
    if (T->rank == 0)
        sp_info("data: %s%s%s split%s (%.0f MB) held in memory, one copy per node, read in %.1f s",
                with_train ? "train" : "", with_train && with_eval ? " and " : "",
                with_eval ? es : "", with_train && with_eval ? "s" : "", total / 1048576.0,
                sp_time_now() - t0);
    return SP_OK;
}

/* grad_reduce=node with more than one rank: from here on the node's ranks
 * share one copy of the parameters (every replica is identical now: after
 * the broadcasts and the resume). */
static int share_params(trainer *T, sp_error *err) {
    if (T->world == 1 || strcmp(sp_config_str(T->cfg, "grad_reduce"), "node")) return SP_OK;
    int rc = sp_dist_sharedp_create(T->dist, &T->params, (int)sp_config_int(T->cfg, "grad_group"),
                                    &T->sharedp, err);
    if ((rc = agree(T, rc, err))) return rc;
    if (T->rank == 0) {
        if (T->sharedp)
            sp_info("gradients: node-shared parameters, %d group(s) of %d ranks, each rank "
                    "updates 1/%d of them",
                    sp_dist_sharedp_groups(T->sharedp), sp_dist_sharedp_group_size(T->sharedp),
                    sp_dist_sharedp_group_size(T->sharedp));
        else
            sp_info("gradients: the parameter groups would differ in size (grad_group, or nodes "
                    "with different rank counts): grad_reduce=node falls back to the allreduce");
    }
    return SP_OK;
}

int sp_train_run(const sp_train_opts *o, sp_dist *dist, sp_error *err) {
    trainer T0 = {0}, *T = &T0;
    T->dist = dist;
    T->rank = sp_dist_rank(dist);
    T->world = sp_dist_size(dist);
    T->run_dir = o->run_dir;
    T->best = -INFINITY;
    T->tty = T->rank == 0 && progress_bar_wanted();
    sp_ckpt_meta resume = {0};
    int resuming = 0;
    int rc = find_resume(T, o->run_dir, &resume, &resuming, err);
    if (!rc) rc = agree(T, resolve_config(T, o, &resume, resuming, err), err);
    sp_ckpt_meta_free(&resume);
    if (!rc) rc = agree(T, build(T, o->data, err), err);
    uint64_t fp = 0;
    if (!rc) rc = agree(T, sp_dataset_fingerprint(data_handle(T), &fp, err), err);
    if (!rc) rc = sp_dist_check_agreement(dist, T->cfg_text, fp, err);
    if (!rc) rc = preload_data(T, err);
    if (!rc) rc = sp_dist_bcast_params(dist, &T->params, 0, err);
    if (!rc && resuming) rc = load_resume(T, err);
    if (!rc) rc = agree(T, sp_dist_install_signal_handlers(err), err);
    if (!rc) rc = sp_dist_hostnames(dist, &T->hostnames, err);
    if (!rc) rc = open_outputs(T, resuming, err);
    if (!rc) rc = share_params(T, err);
    if (rc) {
        trainer_free(T);
        return rc;
    }
    T->target_step = target_step(T, o);
    if (T->rank == 0 && resuming) {
        sp_info("resuming from %s (step %lld, epoch %lld)", T->resumed_from, (long long)T->step,
                (long long)T->epoch);
        for (char *line = T->resume_notes, *end; line && *line; line = end + 1) {
            end = strchr(line, '\n');
            *end = '\0';
            sp_info("%s", line);
        }
    }
    if (T->rank == 0)
        sp_info("%s %s: %lld parameters, %d ranks x %d threads, global batch %d (%d per rank), "
                "%lld steps per epoch, training to step %lld%s",
                resuming ? "resuming" : "starting", T->vt->name, (long long)T->params.total, T->world,
                omp_threads(), T->global_b, T->local_b, (long long)T->steps_per_epoch,
                (long long)T->target_step, resuming ? "" : "");

    const sp_model_vtable *vt = T->vt;
    int64_t ckpt_every = sp_config_int(T->cfg, "ckpt_every");
    int64_t eval_every = sp_config_int(T->cfg, "eval_every");
    int64_t eval_n = sp_config_int(T->cfg, "eval_n");
    int64_t log_every = sp_config_int(T->cfg, "log_every");
    int64_t checksum_every = sp_config_int(T->cfg, "checksum_every");
    int64_t max_bad = sp_config_int(T->cfg, "max_bad_steps");
    double started = sp_time_now();
    int64_t bad = 0, start_step = T->step;
    int stopped = 0, time_up = 0;
    double sps_avg = 0;
    while (!rc && T->step < T->target_step) {
        double terms[SP_MAX_TERMS], loss, gnorm, compute_s, comm_s;
        int applied;
        double ts = sp_time_now();
        rc = train_step(T, terms, &loss, &gnorm, &compute_s, &comm_s, &applied, err);
        if (rc) break;
        double step_s = sp_time_now() - ts;
        T->time_s += step_s;
        double sps = T->global_b / step_s;
        sps_avg = sps_avg ? 0.9 * sps_avg + 0.1 * sps : sps;
        if (!applied) {
            if (T->rank == 0)
                sp_warn("step %lld: non-finite loss or gradient (loss %g, grad norm %g): update skipped",
                        (long long)T->step, loss, gnorm);
            if (++bad >= max_bad) {
                rc = sp_fail(err, SP_ERUNTIME,
                             "%lld consecutive non-finite steps up to step %lld: giving up (last "
                             "checkpoint kept; lower lr or enable clip_norm)",
                             (long long)bad, (long long)T->step);
                break;
            }
        } else bad = 0;
        if (T->rank == 0) {
            double row[7 + SP_MAX_TERMS] = {T->time_s, loss, T->last_lr, gnorm, sps, compute_s, comm_s};
            for (int i = 0; i < vt->n_train_terms; i++) row[7 + i] = terms[i];
            rc = sp_metrics_append(T->metrics, SP_METRICS_TRAIN, T->step, row, err);
            if (T->step % log_every == 0 || T->step == T->target_step) {
                double eta = (T->target_step - T->step) / (sps_avg / T->global_b);
                progress(T, loss, sps_avg, comm_s / step_s, eta);
            }
        }
        if ((rc = agree(T, rc, err))) break;
        if (T->step % checksum_every == 0 && (rc = sp_dist_check_params(dist, &T->params, 1, err)))
            break;
        if (eval_every > 0 && T->step % eval_every == 0 && T->step < T->target_step &&
            (rc = run_eval(T, eval_n, 0, err)))
            break;
        /* Time limit and signals: one collective decision per step. */
        if (o->time_limit > 0 && sp_time_now() - started >= o->time_limit) sp_dist_request_stop(STOP_TIME_LIMIT);
        sp_dist_verdict v;
        if ((rc = sp_dist_should_stop(dist, 0, &v, err))) break;
        if (v.stop) {
            time_up = v.stop == STOP_TIME_LIMIT;
            /* The time limit is this run's own: a sweep's next trial in the
             * same process starts with a fresh clock (a real signal stays
             * pending and stops the sweep). */
            if (time_up && sp_dist_signal_pending() == STOP_TIME_LIMIT) sp_dist_clear_stop();
            stopped = !time_up;
            if (T->rank == 0) {
                end_progress_line(T);
                sp_info(time_up ? "time limit reached at step %lld: checkpointing"
                                : "signal received: checkpointing at step %lld and stopping",
                        (long long)T->step);
            }
            break;
        }
        if (T->step % ckpt_every == 0 && T->step < T->target_step && (rc = save_checkpoint(T, 0, err)))
            break;
    }
    if (!rc) {
        rc = save_checkpoint(T, 0, err);
        if (!rc && !stopped && !time_up && T->step > start_step && sp_config_bool(T->cfg, "eval_final"))
            rc = run_eval(T, 0, 1, err);
    }
    if (T->rank == 0 && T->metrics) {
        sp_error e2 = {0};
        if (sp_metrics_flush(T->metrics, &e2) && !rc) rc = e2.code, *err = e2;
    }
    if (!rc && T->rank == 0) {
        end_progress_line(T);
        sp_info("done: step %lld, epoch %lld, training time %.1f s", (long long)T->step,
                (long long)T->epoch, T->time_s);
    }
    trainer_free(T);
    if (!rc && stopped) return sp_fail(err, SP_ESTOPPED, "stopped by signal");
    return rc;
}

/* ------------------------------------------------------------------ eval */

/* `eval --dump N`: the first N scenes of the split with the model's inferred
 * quantities (e.g. presence probabilities and boxes), for plotting. */
static int dump_scenes(trainer *T, const sp_eval_opts *o, const char *split, sp_error *err) {
    const sp_model_vtable *vt = T->vt;
    if (!vt->infer) return sp_fail(err, SP_EINPUT, "--dump: model %s has no inference dump", vt->name);
    int rc = SP_OK;
    if (T->rank == 0) {
        int64_t size = sp_scenes_data_size(&T->data, split);
        int64_t n = o->dump_n < size ? o->dump_n : size;
        int nf = vt->n_dump;
        float *fields[SP_MAX_TERMS] = {0};
        float *images = malloc((size_t)n * (size_t)T->row_len * sizeof *images);
        int32_t *counts = malloc((size_t)n * sizeof *counts);
        int mo = T->data.max_objects > 0 ? T->data.max_objects : 1;
        float *boxes = malloc((size_t)n * (size_t)mo * 4 * sizeof *boxes);
        int ok = images && counts && boxes;
        for (int f = 0; f < nf; f++)
            ok = ok && (fields[f] = malloc((size_t)n * (size_t)(vt->dump_shape[f][0] * vt->dump_shape[f][1]) * sizeof(float)));
        if (!ok) rc = sp_fail(err, SP_ERUNTIME, "out of memory for --dump %lld", (long long)n);
        sp_tape_set_grad(T->tape, 0);
        for (int64_t s = 0; s < n && !rc; s += T->local_b) {
            int k = (int)((n - s) < T->local_b ? (n - s) : T->local_b);
            for (int i = 0; i < k; i++) T->idx[i] = s + i;
            if ((rc = read_rows(T, split, T->idx, k, err))) break;
            memcpy(images + s * T->row_len, T->x, (size_t)k * (size_t)T->row_len * sizeof *T->x);
            memcpy(counts + s, T->counts, (size_t)k * sizeof *counts);
            memcpy(boxes + s * mo * 4, T->boxes, (size_t)k * (size_t)mo * 4 * sizeof *boxes);
            float *out[SP_MAX_TERMS];
            for (int f = 0; f < nf; f++) out[f] = fields[f] + s * vt->dump_shape[f][0] * vt->dump_shape[f][1];
            sp_batch b = {.n = k, .global_n = (int)n, .index = T->idx, .x = T->x, .counts = T->counts,
                          .boxes = T->boxes, .max_objects = T->data.max_objects, .reset_state = 1,
                          .seed = (uint64_t)sp_config_int(T->cfg, "seed") ^ EVAL_SEED_MIX};
            sp_tape_reset(T->tape);
            rc = vt->infer(T->model, T->tape, &T->params, &b, out, err);
        }
        if (!rc) {
            char path[4200];
            if (o->dump_path) snprintf(path, sizeof path, "%s", o->dump_path);
            else snprintf(path, sizeof path, "%s/dump.h5", T->run_dir);
            sp_h5_array arr[3 + SP_MAX_TERMS] = {
                {"images", SP_H5_F32, 3, {n, T->vt->row_shape[0], T->vt->row_shape[1]}, images},
                {"true_counts", SP_H5_I32, 1, {n}, counts},
                {"true_boxes", SP_H5_F32, 3, {n, mo, 4}, boxes}};
            for (int f = 0; f < nf; f++) {
                sp_h5_array *a = &arr[3 + f];
                a->name = vt->dump_names[f];
                a->type = SP_H5_F32;
                a->ndim = vt->dump_shape[f][1] > 1 ? 3 : 2;
                a->shape[0] = n, a->shape[1] = vt->dump_shape[f][0], a->shape[2] = vt->dump_shape[f][1];
                a->data = fields[f];
            }
            const char *attrs[] = {"model", vt->name, "split", split, "data", T->data_path, NULL};
            rc = sp_h5_write_arrays(path, arr, 3 + nf, attrs, err);
            if (!rc) printf("wrote %lld scenes with inferred %s to %s\n", (long long)n, vt->dump_what, path);
        }
        free(images);
        free(counts);
        free(boxes);
        for (int f = 0; f < nf; f++) free(fields[f]);
    }
    return agree(T, rc, err);
}

/* `eval --dump N` for speech: the first N sequences of the split with the
 * model's predicted mean and standard deviation of every target sample, as
 * 1-D datasets x, mean, std (the sequences one after the other) and
 * offsets (N+1) into them: the input of analysis/speech_segment.py. */
static int dump_speech(trainer *T, const sp_eval_opts *o, const char *split, sp_error *err) {
    const sp_model_vtable *vt = T->vt;
    if (!vt->infer || vt->n_dump != 2)
        return sp_fail(err, SP_EINPUT, "--dump: model %s has no inference dump", vt->name);
    int rc = SP_OK;
    if (T->rank == 0) {
        const int frame = T->sdata.frame;
        int64_t n = sp_streams_n_seqs(&T->sdata, split);
        if (o->dump_n < n) n = o->dump_n;
        int64_t total = 0, longest = 0;
        for (int64_t k = 0; k < n; k++) {
            int64_t f = sp_streams_seq_frames(&T->sdata, split, k);
            total += f;
            if (f > longest) longest = f;
        }
        size_t cap = (size_t)total * (size_t)frame;
        float *x = malloc(cap * sizeof *x), *mean = malloc(cap * sizeof *mean);
        float *sd = malloc(cap * sizeof *sd), *seq = malloc((size_t)longest * frame * sizeof *seq);
        int64_t *offsets = malloc((size_t)(n + 1) * sizeof *offsets);
        float u0[512];
        if (!x || !mean || !sd || !seq || !offsets) rc = sp_fail(err, SP_ERUNTIME, "out of memory for --dump");
        int64_t at = 0;
        sp_tape_set_grad(T->tape, 0);
        for (int64_t k = 0; k < n && !rc; k++) {
            int64_t frames = sp_streams_seq_frames(&T->sdata, split, k);
            int first_is_input = 0;
            if ((rc = sp_streams_read_seq(&T->sdata, split, k, seq, u0, &first_is_input, err))) break;
            int64_t targets = frames - (first_is_input ? 1 : 0);
            memcpy(x + at, seq + (first_is_input ? frame : 0), (size_t)targets * frame * sizeof *x);
            float *out[2] = {mean + at, sd + at};
            int64_t id = k;
            sp_batch b = {.n = 1, .global_n = 1, .index = &id, .x = seq, .reset_state = 1,
                          .seed = (uint64_t)sp_config_int(T->cfg, "seed") ^ EVAL_SEED_MIX,
                          .seq_len = (int)frames, .frame = frame, .u0 = first_is_input ? NULL : u0,
                          .x_first_is_input = first_is_input};
            sp_tape_reset(T->tape);
            rc = vt->infer(T->model, T->tape, &T->params, &b, out, err);
            offsets[k] = at;
            at += targets * frame;
        }
        if (!rc) {
            offsets[n] = at;
            char path[4200];
            if (o->dump_path) snprintf(path, sizeof path, "%s", o->dump_path);
            else snprintf(path, sizeof path, "%s/dump.h5", T->run_dir);
            sp_h5_array arr[4] = {{"x", SP_H5_F32, 1, {at}, x},
                                  {"mean", SP_H5_F32, 1, {at}, mean},
                                  {"std", SP_H5_F32, 1, {at}, sd},
                                  {"offsets", SP_H5_I64, 1, {n + 1}, offsets}};
            const char *attrs[] = {"model", vt->name, "split", split, "data", T->data_path, NULL};
            rc = sp_h5_write_arrays(path, arr, 4, attrs, err);
            if (!rc) printf("wrote %lld sequences with the predicted %s to %s\n", (long long)n, vt->dump_what, path);
        }
        free(x), free(mean), free(sd), free(seq), free(offsets);
    }
    return agree(T, rc, err);
}

int sp_eval_run(const sp_eval_opts *o, sp_dist *dist, sp_error *err) {
    trainer T0 = {0}, *T = &T0;
    T->dist = dist;
    T->rank = sp_dist_rank(dist);
    T->world = sp_dist_size(dist);
    T->run_dir = o->run_dir;
    T->best = -INFINITY;
    /* Which checkpoint: --ckpt, else best.h5, else the newest step. */
    char path[4200] = "";
    sp_ckpt_meta meta = {0};
    int rc = SP_OK;
    if (T->rank == 0) {
        struct stat sb;
        if (o->ckpt) snprintf(path, sizeof path, "%s", o->ckpt);
        else {
            snprintf(path, sizeof path, "%s/ckpt/best.h5", o->run_dir);
            if (stat(path, &sb)) {
                int64_t *steps = NULL;
                int n = 0;
                if (stat(o->run_dir, &sb))
                    rc = sp_fail(err, SP_EINPUT, "%s: no such run directory", o->run_dir);
                else if (!(rc = sp_ckpt_list(o->run_dir, &steps, &n, err)) && n == 0)
                    rc = sp_fail(err, SP_EINPUT, "%s: no checkpoint to evaluate", o->run_dir);
                if (!rc)
                    snprintf(path, sizeof path, "%s/ckpt/step_%08lld.h5", o->run_dir,
                             (long long)steps[n - 1]);
                free(steps);
            }
        }
        if (!rc) rc = sp_ckpt_read_meta(path, &meta, err);
    }
    if ((rc = agree(T, rc, err))) return rc;
    int64_t len = T->rank == 0 ? (int64_t)strlen(meta.config) + 1 : 0;
    if ((rc = sp_dist_bcast(dist, &len, sizeof len, err))) return rc;
    if (T->rank != 0 && !(meta.config = malloc((size_t)len))) return sp_fail(err, SP_ERUNTIME, "out of memory");
    if ((rc = sp_dist_bcast(dist, meta.config, (size_t)len, err)) ||
        (rc = sp_dist_bcast(dist, meta.model, sizeof meta.model, err)) ||
        (rc = sp_dist_bcast(dist, &meta.step, sizeof meta.step, err))) {
        sp_ckpt_meta_free(&meta);
        return rc;
    }
    sp_train_opts topts = {.model = meta.model, .run_dir = o->run_dir};
    rc = resolve_config(T, &topts, &meta, 1, err);
    const char *data = o->data;
    if (!rc && !data) {
        data = sp_config_str(T->cfg, "data");
        if (!*data) rc = sp_fail(err, SP_EINPUT, "%s: the run records no data file: give --data", path);
    }
    char data_buf[4200];
    if (!rc) {
        snprintf(data_buf, sizeof data_buf, "%s", data);
        rc = build(T, data_buf, err);
    }
    rc = agree(T, rc, err);
    if (!rc && T->rank == 0) {
        sp_ckpt_meta m2 = {0};
        rc = sp_ckpt_load(path, &T->params, &m2, NULL, err);
        sp_ckpt_meta_free(&m2);
    }
    if (!rc) rc = agree(T, rc, err);
    if (!rc) rc = sp_dist_bcast_params(dist, &T->params, 0, err);
    T->step = meta.step;
    T->time_s = meta.time_s;
    sp_ckpt_meta_free(&meta);
    if (rc) {
        trainer_free(T);
        return rc;
    }
    const char *split = o->split ? o->split : "test";
    int64_t size = split_size(T, split);
    double m[SP_MAX_TERMS];
    if (size <= 0) rc = sp_fail(err, SP_EINPUT, "%s: no '%s' split", data_buf, split);
    if (!rc) rc = evaluate(T, split, size, m, err);
    if (!rc && T->rank == 0) {
        printf("eval %s step %lld on %lld %s rows of %s:\n", path, (long long)T->step,
               (long long)size, split, data_buf);
        for (int i = 0; i < T->vt->n_eval_metrics; i++) printf("  %-16s %.6f\n", T->vt->eval_metrics[i], m[i]);
        fflush(stdout);
        rc = append_eval_row(T, m, err);
    }
    if (!rc) rc = agree(T, rc, err);
    if (!rc && o->dump_n > 0) rc = T->streams ? dump_speech(T, o, split, err) : dump_scenes(T, o, split, err);
    trainer_free(T);
    return rc;
}
