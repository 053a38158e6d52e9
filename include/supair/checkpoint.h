/* HDF5 checkpoints (src/io): atomic writes, verified loads with fallback.
 *
 * Layout of DIR/ckpt/step_%08d.h5 (DESIGN.md contract):
 *   /params/NAME, /adam/m/NAME, /adam/v/NAME   float32, the entry's shape
 *   /state/NAME   extra model state (float32 or int64), each with attribute
 *                 `checksum` over its bytes
 *   attributes: step, epoch, epoch_pos, seed, structure_seed, world_size
 *   (integers), model, config (text), time_s (training clock), checksum
 *   (uint64) and checksum_alg.
 * `checksum` is 64-bit FNV-1a (sp_fnv1a64) chained over the bytes of every
 * /params dataset, then every /adam/m, then every /adam/v one, each in
 * ascending strcmp order of the names, so it does not depend on the order the
 * model declared its parameters.
 *
 * Writes go to DIR/ckpt/.tmp_<name>.PID, are fsync'ed, renamed into place and
 * the directory fsync'ed: a crash leaves either the old set or the new file,
 * never a partial file under a checkpoint name. Only rank 0 calls these. */
#ifndef SUPAIR_CHECKPOINT_H
#define SUPAIR_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "supair/error.h"
#include "supair/params.h"

enum { SP_CKPT_F32 = 0, SP_CKPT_I64 = 1 };

/* A named model-state array (e.g. SRNN's carried stream states). */
typedef struct sp_ckpt_array {
    char name[64];
    int type;                   /* SP_CKPT_F32 (float) or SP_CKPT_I64 (int64_t) */
    int ndim;                   /* 1..SP_MAX_DIMS */
    int64_t shape[SP_MAX_DIMS];
    void *data;                 /* save: the caller's; load: malloc'd (sp_ckpt_state_free) */
} sp_ckpt_array;

typedef struct sp_ckpt_state {
    sp_ckpt_array *arrays;
    int n;
} sp_ckpt_state;

typedef struct sp_ckpt_meta {
    int64_t step, epoch, epoch_pos;
    uint64_t seed, structure_seed;
    int64_t world_size;
    double time_s;   /* training wall time at this step (continues across resumes) */
    char model[32];
    char *config;    /* resolved config text; save: the caller's; load: malloc'd */
} sp_ckpt_meta;

/* Writes DIR/ckpt/step_%08d.h5 (meta->step) atomically, creating DIR/ckpt,
 * then deletes all but the newest `keep` step_*.h5 (keep <= 0: none deleted;
 * best.h5 never). Refuses (SP_ERUNTIME, naming the tensor and index) when any
 * parameter, moment or float state value is NaN or Inf. path_out (may be
 * NULL) receives the file written. */
int sp_ckpt_save(const char *run_dir, const sp_params *p, const sp_ckpt_meta *meta,
                 const sp_ckpt_array *state, int n_state, int keep, char *path_out,
                 size_t path_cap, sp_error *err);
/* The same content, atomically, as DIR/ckpt/best.h5. */
int sp_ckpt_save_best(const char *run_dir, const sp_params *p, const sp_ckpt_meta *meta,
                      const sp_ckpt_array *state, int n_state, sp_error *err);
/* The same, to any path (its directory must exist). */
int sp_ckpt_write(const char *path, const sp_params *p, const sp_ckpt_meta *meta,
                  const sp_ckpt_array *state, int n_state, sp_error *err);

/* Loads one file into p (names and shapes must match exactly: SP_EINPUT
 * naming the parameter otherwise), filling *meta and *state (either may be
 * NULL). A damaged or foreign file is SP_ERUNTIME naming it. p is modified
 * only on success. */
int sp_ckpt_load(const char *path, sp_params *p, sp_ckpt_meta *meta, sp_ckpt_state *state,
                 sp_error *err);
/* Loads the newest intact DIR/ckpt/step_*.h5: a damaged one (truncated,
 * corrupted, unreadable) is reported with sp_warn and the previous one tried.
 * *found = 0 (and SP_OK) when the directory holds no checkpoint; all damaged
 * is SP_ERUNTIME. Also removes temp files left by dead writers. path_out
 * (may be NULL) receives the file loaded. */
int sp_ckpt_load_latest(const char *run_dir, sp_params *p, sp_ckpt_meta *meta,
                        sp_ckpt_state *state, int *found, char *path_out, size_t path_cap,
                        sp_error *err);
/* Only the attributes (config is malloc'd), e.g. to resolve a resume's config
 * before the model exists. Does not verify the data checksum. */
int sp_ckpt_read_meta(const char *path, sp_ckpt_meta *meta, sp_error *err);

/* Steps of the complete checkpoints in DIR/ckpt, ascending: *steps malloc'd
 * (NULL when n = 0). Temp files never count. */
int sp_ckpt_list(const char *run_dir, int64_t **steps, int *n, sp_error *err);

void sp_ckpt_meta_free(sp_ckpt_meta *m);
const sp_ckpt_array *sp_ckpt_state_find(const sp_ckpt_state *s, const char *name);
void sp_ckpt_state_free(sp_ckpt_state *s);

#endif
