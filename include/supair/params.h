/* Parameters, gradients and Adam moments, each in ONE contiguous float buffer
 * with a table of named views (the llm.c layout). The allreduce, the
 * optimizer, zeroing and checkpointing are then single loops or single calls
 * over [0, total).
 *
 * Build: sp_params_add() every tensor (name, shape), then sp_params_finalize()
 * allocates the four buffers (values zeroed). Each tensor starts at a 16-float
 * (64-byte) aligned offset; the padding is kept at zero in every buffer. */
#ifndef SUPAIR_PARAMS_H
#define SUPAIR_PARAMS_H

#include <stddef.h>

#include "supair/error.h"
#include "supair/tape.h"

typedef struct sp_param_entry {
    char name[64];  /* e.g. "lstm/W_h"; unique */
    int ndim;
    int shape[SP_MAX_DIMS];
    long offset;    /* in floats, into each buffer */
    long size;
    /* Storage order in memory: 0 = row-major (C order, as in checkpoints);
     * w > 0 = a 2-D (rows, cols) entry kept as cols / w column slabs, each a
     * contiguous row-major (rows, w) block, for kernels that walk it a slab
     * at a time (SuPAIR's input projection). Checkpoints always hold the
     * row-major order; see sp_params_to_row_major. */
    int slab;
} sp_param_entry;

typedef struct sp_params {
    sp_param_entry *entries;
    int n_entries, cap_entries;
    long total;     /* floats in each buffer, padding included */
    float *val, *grad, *adam_m, *adam_v;
    /* 1 when the four buffers belong to someone else (the node-shared
     * window of dist.h's sp_dist_sharedp): sp_params_free leaves them. */
    int external;
    /* (n_entries) per step: the tape's node count when entry i was first
     * viewed (sp_params_tensor), so no node before it can write its
     * gradient: once backward has run node first_use[i], entry i's gradient
     * is final. SP_PARAMS_UNSEEN for entries not viewed this step (their
     * gradients may be written directly, so they count as final only when
     * backward ends). Reset by sp_params_reset_use. */
    long *first_use;
} sp_params;

#define SP_PARAMS_UNSEEN (-1L)
void sp_params_reset_use(sp_params *p);

void sp_params_init(sp_params *p);
void sp_params_free(sp_params *p);
/* Returns the entry index (>= 0), or -1 with *err set (duplicate name, bad
 * shape, out of memory, already finalized). */
int sp_params_add(sp_params *p, const char *name, int ndim, const int *shape, sp_error *err);
int sp_params_finalize(sp_params *p, sp_error *err);
/* Before finalize: keep 2-D entry i in column slabs of w floats (see
 * sp_param_entry.slab); its column count must divide by w. */
int sp_params_set_slab(sp_params *p, int i, int w, sp_error *err);
/* Whole buffers (total floats) between memory order and row-major order:
 * slabbed entries are permuted, everything else copied. src != dst. */
void sp_params_to_row_major(const sp_params *p, const float *src, float *dst);
void sp_params_from_row_major(const sp_params *p, const float *src, float *dst);
/* Entry i's values were just written in row-major order (an initialiser):
 * puts them in memory order (a no-op unless slabbed), so an initialisation
 * gives the same parameters whatever the storage order. */
int sp_params_entry_to_memory_order(sp_params *p, int i, sp_error *err);
/* 1 when any entry is slabbed (the conversions above are then needed). */
int sp_params_any_slab(const sp_params *p);

/* Index of a name, or -1. */
int sp_params_find(const sp_params *p, const char *name);
/* A tape tensor viewing entry i's values and gradients. */
sp_tensor *sp_params_tensor(sp_tape *t, const sp_params *p, int i);
/* Direct pointers to entry i in each buffer. */
float *sp_params_val(const sp_params *p, int i);
float *sp_params_grad(const sp_params *p, int i);
float *sp_params_adam_m(const sp_params *p, int i);
float *sp_params_adam_v(const sp_params *p, int i);
void sp_params_zero_grad(sp_params *p);
/* Resets both Adam moments (a fresh optimizer over the same parameters). */
void sp_params_zero_adam(sp_params *p);

#endif
