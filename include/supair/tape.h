/* Tensors and the reverse-mode tape.
 *
 * A training step builds its computation as a sequence of coarse ops (a whole
 * LSTM cell, a whole SPN, the whole transformer sampling). Each op computes its
 * output immediately (define-by-run) and, when gradients are wanted, records a
 * node {backward function, context} on the tape. sp_tape_backward runs the
 * nodes in reverse order; every backward ADDS into the .grad buffers of its
 * inputs, so a tensor used twice accumulates both contributions.
 *
 * All memory of a step (tensors, grads, contexts, scratch) comes from the
 * tape's arena; sp_tape_reset drops it at once and keeps the memory, so after
 * the first step no step mallocs. Parameter tensors are views into the flat
 * buffers of params.h and live outside the tape.
 *
 * Failure: an op returns NULL when the arena cannot grow (out of memory) and
 * when any input is NULL, so a chain of ops can be checked once at the end
 * with sp_tape_failed(). */
#ifndef SUPAIR_TAPE_H
#define SUPAIR_TAPE_H

#include <stddef.h>

#include "supair/arena.h"

#define SP_MAX_DIMS 4

typedef struct sp_tensor {
    float *val;   /* values, row-major (C order) */
    float *grad;  /* dLoss/dval in the same layout; NULL when no gradient flows here */
    int ndim;
    int shape[SP_MAX_DIMS];
    long size;    /* product of shape[0..ndim) */
} sp_tensor;

typedef void (*sp_backward_fn)(void *ctx);

typedef struct sp_tape sp_tape;

sp_tape *sp_tape_create(size_t initial_arena_bytes);
void sp_tape_destroy(sp_tape *t);

/* Start a new step: forget every node and tensor, keep the memory. */
void sp_tape_reset(sp_tape *t);

/* When off (evaluation), ops neither allocate gradients nor record nodes. */
void sp_tape_set_grad(sp_tape *t, int enabled);
int sp_tape_grad_enabled(const sp_tape *t);

/* Scratch memory from the tape's arena, 64-byte aligned, valid until reset.
 * Sets the failed flag and returns NULL when out of memory. */
void *sp_tape_alloc(sp_tape *t, size_t bytes);
void *sp_tape_calloc(sp_tape *t, size_t bytes);

/* A new tensor in the tape's arena. val is uninitialised; grad is zeroed and
 * allocated only when requires_grad and gradients are enabled. */
sp_tensor *sp_tensor_new(sp_tape *t, int ndim, const int *shape, int requires_grad);
sp_tensor *sp_tensor_1d(sp_tape *t, int d0, int requires_grad);
sp_tensor *sp_tensor_2d(sp_tape *t, int d0, int d1, int requires_grad);
sp_tensor *sp_tensor_3d(sp_tape *t, int d0, int d1, int d2, int requires_grad);
/* A tensor header over existing memory (val, grad may be NULL); nothing copied. */
sp_tensor *sp_tensor_view(sp_tape *t, float *val, float *grad, int ndim, const int *shape);
/* Same data, another shape of the same size (no copy; grads shared). */
sp_tensor *sp_reshape(sp_tape *t, const sp_tensor *x, int ndim, const int *shape);

/* Record a backward node; ctx must live in the tape's arena (or outlive the
 * step). Returns 0, or -1 (and sets failed) when out of memory. */
int sp_tape_record(sp_tape *t, sp_backward_fn fn, void *ctx);

/* Seed loss->grad with `seed` (loss must hold one value) and run all recorded
 * nodes in reverse. */
void sp_tape_backward(sp_tape *t, sp_tensor *loss, float seed);

/* Called after each backward node with that node's index (decreasing to 0):
 * lets the trainer start reducing gradients that are already final while
 * backward goes on. NULL removes it. */
typedef void (*sp_tape_hook)(void *ctx, size_t node);
void sp_tape_set_backward_hook(sp_tape *t, sp_tape_hook fn, void *ctx);

int sp_tape_failed(const sp_tape *t);
void sp_tape_set_failed(sp_tape *t);
size_t sp_tape_nodes(const sp_tape *t);
sp_arena *sp_tape_arena(sp_tape *t);

/* Helpers for op implementations. */
static inline int sp_needs_grad(const sp_tensor *x) { return x && x->grad != NULL; }
long sp_shape_size(int ndim, const int *shape);

#endif
