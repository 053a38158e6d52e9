/* Tests for the arena allocator and the reverse-mode tape core: alignment,
 * reuse after reset, no mallocs after the first step, node order, gradient
 * accumulation, grad-disabled mode and failure propagation. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supair/arena.h"
#include "supair/tape.h"
#include "testutil.h"

static void test_alignment(void) {
    sp_arena *a = sp_arena_create(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    static const size_t sizes[] = {1, 3, 64, 65, 127, 4000, 5000, 1, 100000, 7};
    unsigned char *prev = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = sp_arena_alloc(a, sizes[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL((uintptr_t)p % 64, 0);
        memset(p, 0xab, sizes[i]); /* ASan catches an overlap or overrun */
        if (prev) CU_ASSERT(p != prev);
        prev = p;
    }
    CU_ASSERT_EQUAL(sp_arena_used(a), 64 + 64 + 64 + 128 + 128 + 4032 + 5056 + 64 + 100032 + 64);
    unsigned char *z = sp_arena_calloc(a, 1000);
    int nonzero = 0;
    for (int i = 0; i < 1000; i++) nonzero += z[i] != 0;
    CU_ASSERT_EQUAL(nonzero, 0);
    CU_ASSERT_PTR_NOT_NULL(sp_arena_alloc(a, 0)); /* a distinct, valid pointer */
    /* A request whose rounding would wrap (a negative size cast to size_t). */
    CU_ASSERT_PTR_NULL(sp_arena_alloc(a, SIZE_MAX - 10));
    CU_ASSERT_PTR_NULL(sp_arena_alloc(a, (size_t)-4 * sizeof(float)));
    sp_arena_destroy(a);
}

static void test_zero_fill_threads(void) {
    /* Large fills go through the OpenMP team: every byte of odd sizes at 1,
     * 2 and 3 threads is zeroed, and nothing past the end is touched. */
    const size_t sizes[] = {(size_t)1 << 20, ((size_t)3 << 20) + 37, ((size_t)1 << 20) - 1, 4097};
    unsigned char *buf = malloc(((size_t)3 << 20) + 37 + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    const int saved = omp_get_max_threads();
    for (int th = 1; th <= 3; th++) {
        omp_set_num_threads(th);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            memset(buf, 0x5a, sizes[k] + 64);
            sp_zero_bytes(buf + 1, sizes[k] - 1); /* unaligned start */
            size_t bad = 0;
            for (size_t i = 1; i < sizes[k]; i++) bad += buf[i] != 0;
            CU_ASSERT_EQUAL(bad, 0);
            CU_ASSERT_EQUAL(buf[0], 0x5a);
            for (size_t i = sizes[k]; i < sizes[k] + 64; i++) CU_ASSERT_EQUAL(buf[i], 0x5a);
        }
    }
    omp_set_num_threads(saved);
    free(buf);
}

static void test_reset_reuses(void) {
    sp_arena *a = sp_arena_create(1 << 16);
    void *p1 = sp_arena_alloc(a, 1000);
    void *p2 = sp_arena_alloc(a, 2000);
    size_t allocs = sp_arena_system_allocs(a), cap = sp_arena_capacity(a);
    CU_ASSERT_EQUAL(allocs, 1);
    sp_arena_reset(a);
    CU_ASSERT_EQUAL(sp_arena_used(a), 0);
    CU_ASSERT_PTR_EQUAL(sp_arena_alloc(a, 1000), p1);
    CU_ASSERT_PTR_EQUAL(sp_arena_alloc(a, 2000), p2);
    CU_ASSERT_EQUAL(sp_arena_system_allocs(a), allocs);
    CU_ASSERT_EQUAL(sp_arena_capacity(a), cap);
    sp_arena_destroy(a);
}

/* One "training step": an uneven mix of sizes, far beyond the first block. */
static void step_pattern(sp_arena *a, int step) {
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(i * 37 % 5000) + 1;
        if (i % 50 == 0) n = 300000;
        unsigned char *p = sp_arena_alloc(a, n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        memset(p, step, n);
    }
}

static void test_spill_then_coalesce(void) {
    sp_arena *a = sp_arena_create(4096);
    step_pattern(a, 1);
    size_t used = sp_arena_used(a);
    CU_ASSERT(sp_arena_system_allocs(a) > 5); /* the first step spilled */
    sp_arena_reset(a);
    size_t allocs = sp_arena_system_allocs(a), cap = sp_arena_capacity(a);
    CU_ASSERT(cap >= used);
    for (int s = 2; s <= 11; s++) {
        step_pattern(a, s);
        CU_ASSERT_EQUAL(sp_arena_used(a), used);
        sp_arena_reset(a);
    }
    if (sp_arena_system_allocs(a) != allocs) {
        char m[128];
        snprintf(m, sizeof m, "system allocs grew from %zu to %zu over 10 steps", allocs,
                 sp_arena_system_allocs(a));
        CU_assertImplementation(CU_FALSE, __LINE__, m, __FILE__, "", CU_FALSE);
    }
    CU_ASSERT_EQUAL(sp_arena_capacity(a), cap);
    sp_arena_destroy(a);
}

/* ---- tape ---- */

typedef struct order_ctx {
    int id;
    int *log, *n;
} order_ctx;

static void log_backward(void *ctx) {
    order_ctx *c = ctx;
    c->log[(*c->n)++] = c->id;
}

static void test_reverse_order(void) {
    sp_tape *t = sp_tape_create(0);
    int log[8], n = 0;
    for (int i = 0; i < 5; i++) {
        order_ctx *c = sp_tape_alloc(t, sizeof *c);
        *c = (order_ctx){i, log, &n};
        CU_ASSERT_EQUAL(sp_tape_record(t, log_backward, c), 0);
    }
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 5);
    sp_tensor *loss = sp_tensor_1d(t, 1, 1);
    loss->val[0] = 0;
    sp_tape_backward(t, loss, 1.0f);
    CU_ASSERT_EQUAL(n, 5);
    for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(log[i], 4 - i);
    CU_ASSERT_EQUAL(loss->grad[0], 1.0f);
    sp_tape_reset(t);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    sp_tape_destroy(t);
}

/* Two tiny ops written the way real ops are: forward now, backward recorded. */
typedef struct scale_ctx {
    const sp_tensor *x;
    sp_tensor *y;
    float a;
} scale_ctx;

static void scale_backward(void *ctx) {
    scale_ctx *c = ctx;
    for (long i = 0; i < c->x->size; i++) c->x->grad[i] += c->a * c->y->grad[i];
}

static sp_tensor *op_scale(sp_tape *t, const sp_tensor *x, float a) {
    if (!x) {
        sp_tape_set_failed(t);
        return NULL;
    }
    sp_tensor *y = sp_tensor_new(t, x->ndim, x->shape, sp_needs_grad(x));
    if (!y) return NULL;
    for (long i = 0; i < x->size; i++) y->val[i] = a * x->val[i];
    if (sp_needs_grad(x) && sp_tape_grad_enabled(t)) {
        scale_ctx *c = sp_tape_alloc(t, sizeof *c);
        if (!c) return NULL;
        *c = (scale_ctx){x, y, a};
        if (sp_tape_record(t, scale_backward, c) != 0) return NULL;
    }
    return y;
}

typedef struct sum_ctx {
    const sp_tensor *a, *b;
    sp_tensor *y;
} sum_ctx;

static void sum_backward(void *ctx) {
    sum_ctx *c = ctx;
    float g = c->y->grad[0];
    for (long i = 0; i < c->a->size; i++) {
        if (c->a->grad) c->a->grad[i] += g;
        if (c->b->grad) c->b->grad[i] += g;
    }
}

/* y = sum(a + b), one value. */
static sp_tensor *op_sum2(sp_tape *t, const sp_tensor *a, const sp_tensor *b) {
    if (!a || !b) {
        sp_tape_set_failed(t);
        return NULL;
    }
    int rg = sp_needs_grad(a) || sp_needs_grad(b);
    sp_tensor *y = sp_tensor_1d(t, 1, rg);
    if (!y) return NULL;
    y->val[0] = 0;
    for (long i = 0; i < a->size; i++) y->val[0] += a->val[i] + b->val[i];
    if (rg && sp_tape_grad_enabled(t)) {
        sum_ctx *c = sp_tape_alloc(t, sizeof *c);
        if (!c) return NULL;
        *c = (sum_ctx){a, b, y};
        if (sp_tape_record(t, sum_backward, c) != 0) return NULL;
    }
    return y;
}

static void test_grads_accumulate(void) {
    sp_tape *t = sp_tape_create(0);
    float xv[6] = {1, 2, 3, 4, 5, 6}, xg[6] = {0};
    sp_tensor *x = sp_tensor_view(t, xv, xg, 2, (int[]){2, 3});
    /* x used twice: dL/dx = 2 + 3 per element, times the seed. */
    sp_tensor *loss = op_sum2(t, op_scale(t, x, 2.0f), op_scale(t, x, 3.0f));
    CU_ASSERT_FALSE(sp_tape_failed(t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    SP_ASSERT_CLOSE(loss->val[0], 5.0 * 21.0, 1e-5);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 3);
    sp_tape_backward(t, loss, 0.5f);
    for (int i = 0; i < 6; i++) SP_ASSERT_CLOSE(xg[i], 2.5, 1e-6);
    /* A second step accumulates into the parameter grads again (the caller
     * zeroes them), and the tape's own memory is reused: no new mallocs. */
    sp_tape_reset(t);
    size_t allocs = sp_arena_system_allocs(sp_tape_arena(t));
    for (int step = 0; step < 3; step++) {
        x = sp_tensor_view(t, xv, xg, 2, (int[]){2, 3});
        loss = op_sum2(t, op_scale(t, x, 2.0f), op_scale(t, x, 3.0f));
        sp_tape_backward(t, loss, 1.0f);
        sp_tape_reset(t);
    }
    for (int i = 0; i < 6; i++) SP_ASSERT_CLOSE(xg[i], 2.5 + 3 * 5.0, 1e-5);
    CU_ASSERT_EQUAL(sp_arena_system_allocs(sp_tape_arena(t)), allocs);
    sp_tape_destroy(t);
}

static void test_grad_disabled(void) {
    sp_tape *t = sp_tape_create(0);
    sp_tape_set_grad(t, 0);
    CU_ASSERT_FALSE(sp_tape_grad_enabled(t));
    float xv[3] = {1, 2, 3}, xg[3] = {0};
    sp_tensor *x = sp_tensor_view(t, xv, xg, 1, (int[]){3});
    CU_ASSERT_PTR_NULL(x->grad);
    sp_tensor *y = sp_tensor_1d(t, 3, 1);
    CU_ASSERT_PTR_NULL(y->grad);
    sp_tensor *loss = op_sum2(t, op_scale(t, x, 2.0f), y);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    CU_ASSERT_EQUAL(sp_tape_record(t, log_backward, NULL), 0); /* ignored */
    CU_ASSERT_EQUAL(sp_tape_nodes(t), 0);
    sp_tape_backward(t, loss, 1.0f); /* no grad: nothing runs */
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(xg[i], 0.0f);
    sp_tape_set_grad(t, 1);
    CU_ASSERT(sp_tape_grad_enabled(t));
    sp_tape_destroy(t);
}

static void test_failure_propagation(void) {
    sp_tape *t = sp_tape_create(0);
    CU_ASSERT_FALSE(sp_tape_failed(t));
    /* A NULL input flows through a chain of ops and marks the tape. */
    sp_tensor *r = sp_reshape(t, NULL, 1, (int[]){4});
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(sp_tape_failed(t));
    sp_tensor *y = op_sum2(t, op_scale(t, r, 2.0f), r);
    CU_ASSERT_PTR_NULL(y);
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    CU_ASSERT_FALSE(sp_tape_failed(t));
    /* Bad shapes fail instead of allocating garbage. */
    CU_ASSERT_PTR_NULL(sp_tensor_2d(t, -1, 4, 1));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    CU_ASSERT_PTR_NULL(sp_tensor_new(t, SP_MAX_DIMS + 1, (int[]){1, 1, 1, 1, 1}, 0));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    sp_tensor *x = sp_tensor_2d(t, 2, 3, 1);
    CU_ASSERT_PTR_NULL(sp_reshape(t, x, 1, (int[]){5}));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    CU_ASSERT_PTR_NULL(sp_tape_alloc(t, SIZE_MAX - 1));
    CU_ASSERT(sp_tape_failed(t));
    sp_tape_reset(t);
    /* Reshape shares memory and grads. */
    x = sp_tensor_2d(t, 2, 3, 1);
    sp_tensor *v = sp_reshape(t, x, 1, (int[]){6});
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_PTR_EQUAL(v->val, x->val);
    CU_ASSERT_PTR_EQUAL(v->grad, x->grad);
    CU_ASSERT_EQUAL(v->size, 6);
    /* A zero-size tensor is valid. */
    sp_tensor *e = sp_tensor_2d(t, 0, 3, 1);
    CU_ASSERT_PTR_NOT_NULL(e);
    CU_ASSERT_FALSE(sp_tape_failed(t));
    sp_tape_destroy(t);
}

static const sp_test_case arena_cases[] = {
    {"64-byte alignment and sizes", test_alignment},
    {"reset reuses the same memory", test_reset_reuses},
    {"zero fills split over threads", test_zero_fill_threads},
    {"spill then coalesce: no mallocs after step 1", test_spill_then_coalesce},
    {NULL, NULL},
};
static const sp_test_case tape_cases[] = {
    {"nodes run in reverse order", test_reverse_order},
    {"gradients accumulate", test_grads_accumulate},
    {"grad disabled records nothing", test_grad_disabled},
    {"NULL and bad shapes set failed", test_failure_propagation},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"arena", arena_cases}, {"tape", tape_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
