/* The flat parameter table of params.h: one 64-byte aligned buffer each for
 * values, gradients and the two Adam moments, with named views at 16-float
 * aligned offsets. Keeping the padding zero in every buffer lets the
 * optimizer, the allreduce and the checksums run over [0, total) blindly. */
#include "supair/params.h"

#include <stdlib.h>
#include <string.h>

/* Floats per 64-byte cache line: every entry starts on a line boundary. */
#define SP_PARAMS_ALIGN 16L

static long round_up(long n) { return (n + SP_PARAMS_ALIGN - 1) / SP_PARAMS_ALIGN * SP_PARAMS_ALIGN; }

void sp_params_init(sp_params *p) { memset(p, 0, sizeof *p); }

void sp_params_free(sp_params *p) {
    free(p->entries);
    if (!p->external) {
        free(p->val);
        free(p->grad);
        free(p->adam_m);
        free(p->adam_v);
    }
    free(p->first_use);
    memset(p, 0, sizeof *p);
}

int sp_params_add(sp_params *p, const char *name, int ndim, const int *shape, sp_error *err) {
    if (p->val) {
        sp_fail(err, SP_ERUNTIME, "params: cannot add '%s' after finalize", name ? name : "(null)");
        return -1;
    }
    if (!name || !name[0] || strlen(name) >= sizeof p->entries[0].name) {
        sp_fail(err, SP_EINPUT, "params: bad parameter name '%s' (empty or over %zu chars)",
                name ? name : "(null)", sizeof p->entries[0].name - 1);
        return -1;
    }
    if (ndim < 1 || ndim > SP_MAX_DIMS) {
        sp_fail(err, SP_EINPUT, "params: '%s' has %d dimensions (1..%d allowed)", name, ndim,
                SP_MAX_DIMS);
        return -1;
    }
    long size = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0) {
            sp_fail(err, SP_EINPUT, "params: '%s' has dimension %d of size %d", name, d, shape[d]);
            return -1;
        }
        size *= shape[d];
    }
    if (sp_params_find(p, name) >= 0) {
        sp_fail(err, SP_EINPUT, "params: duplicate parameter name '%s'", name);
        return -1;
    }
    if (p->n_entries == p->cap_entries) {
        int cap = p->cap_entries ? 2 * p->cap_entries : 32;
        sp_param_entry *e = realloc(p->entries, (size_t)cap * sizeof *e);
        if (!e) {
            sp_fail(err, SP_ERUNTIME, "params: out of memory adding '%s'", name);
            return -1;
        }
        p->entries = e;
        p->cap_entries = cap;
    }
    sp_param_entry *e = &p->entries[p->n_entries];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->offset = round_up(p->total);
    e->size = size;
    p->total = e->offset + size;
    return p->n_entries++;
}

static float *alloc_zeroed(long n) {
    size_t bytes = (size_t)n * sizeof(float);
    float *b = aligned_alloc(64, bytes);
    if (b) memset(b, 0, bytes);
    return b;
}

int sp_params_finalize(sp_params *p, sp_error *err) {
    if (p->val) return sp_fail(err, SP_ERUNTIME, "params: finalize called twice");
    /* The tail is padded too, so vector loops over total never need a remainder,
     * and an empty table still gets real (non-NULL) buffers. */
    p->total = round_up(p->total > 0 ? p->total : 1);
    p->val = alloc_zeroed(p->total);
    p->grad = alloc_zeroed(p->total);
    p->adam_m = alloc_zeroed(p->total);
    p->adam_v = alloc_zeroed(p->total);
    if (!p->val || !p->grad || !p->adam_m || !p->adam_v) {
        long total = p->total;
        free(p->val);
        free(p->grad);
        free(p->adam_m);
        free(p->adam_v);
        p->val = p->grad = p->adam_m = p->adam_v = NULL;
        return sp_fail(err, SP_ERUNTIME, "params: out of memory allocating 4 x %ld floats", total);
    }
    p->first_use = malloc((size_t)(p->n_entries > 0 ? p->n_entries : 1) * sizeof *p->first_use);
    if (!p->first_use) return sp_fail(err, SP_ERUNTIME, "params: out of memory");
    sp_params_reset_use(p);
    return SP_OK;
}

int sp_params_find(const sp_params *p, const char *name) {
    for (int i = 0; i < p->n_entries; i++)
        if (strcmp(p->entries[i].name, name) == 0) return i;
    return -1;
}

int sp_params_set_slab(sp_params *p, int i, int w, sp_error *err) {
    if (i < 0 || i >= p->n_entries) return sp_fail(err, SP_EINPUT, "params: no entry %d", i);
    sp_param_entry *e = &p->entries[i];
    if (p->val) return sp_fail(err, SP_ERUNTIME, "params: '%s': slabs set after finalize", e->name);
    if (e->ndim != 2 || w <= 0 || e->shape[1] % w)
        return sp_fail(err, SP_EINPUT, "params: '%s' cannot be kept in slabs of %d columns", e->name,
                       w);
    e->slab = w;
    return SP_OK;
}

int sp_params_any_slab(const sp_params *p) {
    for (int i = 0; i < p->n_entries; i++)
        if (p->entries[i].slab) return 1;
    return 0;
}

/* Element (r, c) of a slabbed (rows, cols) entry sits at slab c / w, row r,
 * column c % w: offset (c / w) rows w + r w + c % w. s and d: the entry's
 * data, distinct. */
static void permute_entry(const sp_param_entry *e, const float *s, float *d, int to_row_major) {
    const int rows = e->shape[0], cols = e->shape[1], w = e->slab;
    for (int k = 0; k < cols / w; k++)
        for (int r = 0; r < rows; r++) {
            const size_t blk = ((size_t)k * rows + r) * w, rm = (size_t)r * cols + (size_t)k * w;
            if (to_row_major) memcpy(d + rm, s + blk, (size_t)w * sizeof(float));
            else memcpy(d + blk, s + rm, (size_t)w * sizeof(float));
        }
}

static void convert(const sp_params *p, const float *src, float *dst, int to_row_major) {
    memcpy(dst, src, (size_t)p->total * sizeof(float));
    for (int i = 0; i < p->n_entries; i++) {
        const sp_param_entry *e = &p->entries[i];
        if (e->slab) permute_entry(e, src + e->offset, dst + e->offset, to_row_major);
    }
}

int sp_params_entry_to_memory_order(sp_params *p, int i, sp_error *err) {
    const sp_param_entry *e = &p->entries[i];
    if (!e->slab) return SP_OK;
    float *tmp = malloc((size_t)e->size * sizeof *tmp);
    if (!tmp) return sp_fail(err, SP_ERUNTIME, "params: out of memory reordering '%s'", e->name);
    memcpy(tmp, p->val + e->offset, (size_t)e->size * sizeof *tmp);
    permute_entry(e, tmp, p->val + e->offset, 0);
    free(tmp);
    return SP_OK;
}

void sp_params_to_row_major(const sp_params *p, const float *src, float *dst) { convert(p, src, dst, 1); }
void sp_params_from_row_major(const sp_params *p, const float *src, float *dst) { convert(p, src, dst, 0); }

sp_tensor *sp_params_tensor(sp_tape *t, const sp_params *p, int i) {
    if (i < 0 || i >= p->n_entries || !p->val) {
        sp_tape_set_failed(t);
        return NULL;
    }
    const sp_param_entry *e = &p->entries[i];
    if (p->first_use && p->first_use[i] == SP_PARAMS_UNSEEN) p->first_use[i] = (long)sp_tape_nodes(t);
    return sp_tensor_view(t, p->val + e->offset, p->grad + e->offset, e->ndim, e->shape);
}

void sp_params_reset_use(sp_params *p) {
    for (int i = 0; p->first_use && i < p->n_entries; i++) p->first_use[i] = SP_PARAMS_UNSEEN;
}

float *sp_params_val(const sp_params *p, int i) { return p->val + p->entries[i].offset; }
float *sp_params_grad(const sp_params *p, int i) { return p->grad + p->entries[i].offset; }
float *sp_params_adam_m(const sp_params *p, int i) { return p->adam_m + p->entries[i].offset; }
float *sp_params_adam_v(const sp_params *p, int i) { return p->adam_v + p->entries[i].offset; }

void sp_params_zero_grad(sp_params *p) {
    if (p->grad) memset(p->grad, 0, (size_t)p->total * sizeof(float));
}

void sp_params_zero_adam(sp_params *p) {
    if (p->adam_m) memset(p->adam_m, 0, (size_t)p->total * sizeof(float));
    if (p->adam_v) memset(p->adam_v, 0, (size_t)p->total * sizeof(float));
}
