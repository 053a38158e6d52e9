/* Reverse-mode tape (see tape.h): nodes are a growable array in the arena. */
#include "supair/tape.h"

#include <stdlib.h>
#include <string.h>

typedef struct node {
    sp_backward_fn fn;
    void *ctx;
} node;

struct sp_tape {
    sp_arena *arena;
    int grad_enabled;
    int failed;
    /* Nodes live in a separately malloc'ed array that only grows (kept across
     * resets), so recording never reallocates after the first step. */
    node *nodes;
    size_t n_nodes, cap_nodes;
    sp_tape_hook hook;
    void *hook_ctx;
};

sp_tape *sp_tape_create(size_t initial_arena_bytes) {
    sp_tape *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->arena = sp_arena_create(initial_arena_bytes);
    if (!t->arena) {
        free(t);
        return NULL;
    }
    t->grad_enabled = 1;
    return t;
}

void sp_tape_destroy(sp_tape *t) {
    if (!t) return;
    sp_arena_destroy(t->arena);
    free(t->nodes);
    free(t);
}

void sp_tape_reset(sp_tape *t) {
    sp_arena_reset(t->arena);
    t->n_nodes = 0;
    t->failed = 0;
}

void sp_tape_set_grad(sp_tape *t, int enabled) { t->grad_enabled = enabled; }
int sp_tape_grad_enabled(const sp_tape *t) { return t->grad_enabled; }
int sp_tape_failed(const sp_tape *t) { return t->failed; }
void sp_tape_set_failed(sp_tape *t) { t->failed = 1; }
size_t sp_tape_nodes(const sp_tape *t) { return t->n_nodes; }
sp_arena *sp_tape_arena(sp_tape *t) { return t->arena; }

void *sp_tape_alloc(sp_tape *t, size_t bytes) {
    void *p = sp_arena_alloc(t->arena, bytes);
    if (!p) t->failed = 1;
    return p;
}

void *sp_tape_calloc(sp_tape *t, size_t bytes) {
    void *p = sp_arena_calloc(t->arena, bytes);
    if (!p) t->failed = 1;
    return p;
}

long sp_shape_size(int ndim, const int *shape) {
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static sp_tensor *header(sp_tape *t, int ndim, const int *shape) {
    if (ndim < 0 || ndim > SP_MAX_DIMS) {
        t->failed = 1;
        return NULL;
    }
    sp_tensor *x = sp_tape_alloc(t, sizeof *x);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) { /* its size would wrap into a huge allocation */
            t->failed = 1;
            return NULL;
        }
        x->shape[i] = shape[i];
    }
    x->size = sp_shape_size(ndim, shape);
    return x;
}

sp_tensor *sp_tensor_new(sp_tape *t, int ndim, const int *shape, int requires_grad) {
    sp_tensor *x = header(t, ndim, shape);
    if (!x) return NULL;
    x->val = sp_tape_alloc(t, (size_t)x->size * sizeof(float));
    if (!x->val) return NULL;
    if (requires_grad && t->grad_enabled) {
        x->grad = sp_tape_calloc(t, (size_t)x->size * sizeof(float));
        if (!x->grad) return NULL;
    }
    return x;
}

sp_tensor *sp_tensor_1d(sp_tape *t, int d0, int rg) { return sp_tensor_new(t, 1, (int[]){d0}, rg); }
sp_tensor *sp_tensor_2d(sp_tape *t, int d0, int d1, int rg) {
    return sp_tensor_new(t, 2, (int[]){d0, d1}, rg);
}
sp_tensor *sp_tensor_3d(sp_tape *t, int d0, int d1, int d2, int rg) {
    return sp_tensor_new(t, 3, (int[]){d0, d1, d2}, rg);
}

sp_tensor *sp_tensor_view(sp_tape *t, float *val, float *grad, int ndim, const int *shape) {
    sp_tensor *x = header(t, ndim, shape);
    if (!x) return NULL;
    x->val = val;
    x->grad = t->grad_enabled ? grad : NULL;
    return x;
}

sp_tensor *sp_reshape(sp_tape *t, const sp_tensor *x, int ndim, const int *shape) {
    if (!x) { /* a NULL input propagates, and the chain is marked failed */
        t->failed = 1;
        return NULL;
    }
    if (sp_shape_size(ndim, shape) != x->size) {
        t->failed = 1;
        return NULL;
    }
    return sp_tensor_view(t, x->val, x->grad, ndim, shape);
}

int sp_tape_record(sp_tape *t, sp_backward_fn fn, void *ctx) {
    if (!t->grad_enabled) return 0;
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 256;
        node *n = realloc(t->nodes, cap * sizeof *n);
        if (!n) {
            t->failed = 1;
            return -1;
        }
        t->nodes = n;
        t->cap_nodes = cap;
    }
    t->nodes[t->n_nodes++] = (node){fn, ctx};
    return 0;
}

void sp_tape_set_backward_hook(sp_tape *t, sp_tape_hook fn, void *ctx) {
    t->hook = fn;
    t->hook_ctx = ctx;
}

void sp_tape_backward(sp_tape *t, sp_tensor *loss, float seed) {
    if (!loss || !loss->grad) return;
    loss->grad[0] += seed;
    for (size_t i = t->n_nodes; i-- > 0;) {
        t->nodes[i].fn(t->nodes[i].ctx);
        if (t->hook) t->hook(t->hook_ctx, i);
    }
}
