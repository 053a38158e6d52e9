/* Tests of the flat parameter table (params.h): layout, lookup, errors,
 * tensor views and gradient zeroing. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "supair/params.h"
#include "testutil.h"

static void build3(sp_params *p) {
    sp_error err = {0};
    sp_params_init(p);
    CU_ASSERT_EQUAL(sp_params_add(p, "a", 2, (int[]){3, 5}, &err), 0);     // 15 floats
    CU_ASSERT_EQUAL(sp_params_add(p, "b", 1, (int[]){16}, &err), 1);       // exactly one line
    CU_ASSERT_EQUAL(sp_params_add(p, "c/W", 3, (int[]){2, 3, 7}, &err), 2); // 42 floats
    CU_ASSERT_EQUAL(sp_params_finalize(p, &err), SP_OK);
}

static void test_offsets_alignment(void) {
    sp_params p;
    build3(&p);
    CU_ASSERT_EQUAL(p.n_entries, 3);
    CU_ASSERT_EQUAL(p.entries[0].offset, 0);
    CU_ASSERT_EQUAL(p.entries[0].size, 15);
    CU_ASSERT_EQUAL(p.entries[1].offset, 16);
    CU_ASSERT_EQUAL(p.entries[2].offset, 32);
    CU_ASSERT_EQUAL(p.entries[2].size, 42);
    CU_ASSERT_EQUAL(p.total, 80); // 32 + 42 rounded up to 16
    float *bufs[4] = {p.val, p.grad, p.adam_m, p.adam_v};
    for (int b = 0; b < 4; b++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(bufs[b]);
        CU_ASSERT_EQUAL((uintptr_t)bufs[b] % 64, 0);
        for (long i = 0; i < p.total; i++) CU_ASSERT_EQUAL(bufs[b][i], 0.0f);
    }
    for (int i = 0; i < p.n_entries; i++) {
        CU_ASSERT_EQUAL(p.entries[i].offset % 16, 0);
        CU_ASSERT_EQUAL((uintptr_t)sp_params_val(&p, i) % 64, 0);
        CU_ASSERT_EQUAL((uintptr_t)sp_params_grad(&p, i) % 64, 0);
        CU_ASSERT_PTR_EQUAL(sp_params_adam_m(&p, i), p.adam_m + p.entries[i].offset);
        CU_ASSERT_PTR_EQUAL(sp_params_adam_v(&p, i), p.adam_v + p.entries[i].offset);
    }
    CU_ASSERT_EQUAL(p.entries[2].ndim, 3);
    CU_ASSERT_EQUAL(p.entries[2].shape[2], 7);
    sp_params_free(&p);
    CU_ASSERT_PTR_NULL(p.val);
    CU_ASSERT_EQUAL(p.n_entries, 0);
}

static void test_find(void) {
    sp_params p;
    build3(&p);
    CU_ASSERT_EQUAL(sp_params_find(&p, "a"), 0);
    CU_ASSERT_EQUAL(sp_params_find(&p, "b"), 1);
    CU_ASSERT_EQUAL(sp_params_find(&p, "c/W"), 2);
    CU_ASSERT_EQUAL(sp_params_find(&p, "c"), -1);
    CU_ASSERT_EQUAL(sp_params_find(&p, ""), -1);
    sp_params_free(&p);
}

static void test_errors(void) {
    sp_params p;
    sp_error err = {0};
    sp_params_init(&p);
    CU_ASSERT_EQUAL(sp_params_add(&p, "w", 1, (int[]){4}, &err), 0);
    CU_ASSERT_EQUAL(sp_params_add(&p, "w", 1, (int[]){4}, &err), -1);
    CU_ASSERT_EQUAL(err.code, SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "duplicate"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'w'"));
    sp_error_clear(&err);
    CU_ASSERT_EQUAL(sp_params_add(&p, "z", 2, (int[]){4, 0}, &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'z'"));
    CU_ASSERT_EQUAL(sp_params_add(&p, "y", 0, (int[]){4}, &err), -1);
    CU_ASSERT_EQUAL(sp_params_add(&p, "y", SP_MAX_DIMS + 1, (int[]){1, 1, 1, 1, 1}, &err), -1);
    CU_ASSERT_EQUAL(sp_params_add(&p, "", 1, (int[]){4}, &err), -1);
    char longname[100];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CU_ASSERT_EQUAL(sp_params_add(&p, longname, 1, (int[]){4}, &err), -1);
    CU_ASSERT_EQUAL(p.n_entries, 1);
    CU_ASSERT_EQUAL(sp_params_finalize(&p, &err), SP_OK);
    sp_error_clear(&err);
    CU_ASSERT_EQUAL(sp_params_add(&p, "late", 1, (int[]){4}, &err), -1);
    CU_ASSERT_EQUAL(err.code, SP_ERUNTIME);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "late"));
    CU_ASSERT_NOT_EQUAL(sp_params_finalize(&p, &err), SP_OK);
    sp_params_free(&p);
}

static void test_many_entries(void) {
    /* More entries than the initial table capacity: the table must grow. */
    sp_params p;
    sp_error err = {0};
    sp_params_init(&p);
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "layer%d/b", i);
        CU_ASSERT_EQUAL(sp_params_add(&p, name, 1, (int[]){i + 1}, &err), i);
    }
    CU_ASSERT_EQUAL(sp_params_finalize(&p, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_params_find(&p, "layer77/b"), 77);
    CU_ASSERT_EQUAL(p.entries[77].size, 78);
    for (int i = 1; i < 100; i++)
        CU_ASSERT(p.entries[i].offset >= p.entries[i - 1].offset + p.entries[i - 1].size);
    sp_params_free(&p);
}

static void test_tensor_view_and_zero_grad(void) {
    sp_params p;
    build3(&p);
    for (long i = 0; i < p.entries[2].size; i++) sp_params_val(&p, 2)[i] = (float)i;
    sp_tape *t = sp_tape_create(1 << 16);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    sp_tensor *x = sp_params_tensor(t, &p, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_PTR_EQUAL(x->val, p.val + 32);
    CU_ASSERT_PTR_EQUAL(x->grad, p.grad + 32);
    CU_ASSERT_EQUAL(x->ndim, 3);
    CU_ASSERT_EQUAL(x->shape[0], 2);
    CU_ASSERT_EQUAL(x->shape[1], 3);
    CU_ASSERT_EQUAL(x->shape[2], 7);
    CU_ASSERT_EQUAL(x->size, 42);
    CU_ASSERT_EQUAL(x->val[41], 41.0f);
    /* Writing through the tensor's grad lands in the flat buffer. */
    x->grad[5] = 2.5f;
    CU_ASSERT_EQUAL(p.grad[37], 2.5f);
    for (long i = 0; i < p.total; i++) p.grad[i] = 1.0f;
    sp_params_zero_grad(&p);
    for (long i = 0; i < p.total; i++) CU_ASSERT_EQUAL(p.grad[i], 0.0f);
    CU_ASSERT_EQUAL(p.val[41 + 32], 41.0f); // values untouched
    /* No gradient view when gradients are off (evaluation). */
    sp_tape_set_grad(t, 0);
    sp_tensor *y = sp_params_tensor(t, &p, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    CU_ASSERT_PTR_NULL(y->grad);
    CU_ASSERT_FALSE(sp_tape_failed(t));
    CU_ASSERT_PTR_NULL(sp_params_tensor(t, &p, 3));
    CU_ASSERT_TRUE(sp_tape_failed(t));
    p.adam_m[3] = 1.0f;
    p.adam_v[79] = 1.0f;
    sp_params_zero_adam(&p);
    CU_ASSERT_EQUAL(p.adam_m[3], 0.0f);
    CU_ASSERT_EQUAL(p.adam_v[79], 0.0f);
    sp_tape_destroy(t);
    sp_params_free(&p);
}

static const sp_test_case cases[] = {
    {"offsets_alignment", test_offsets_alignment},
    {"find", test_find},
    {"errors", test_errors},
    {"many_entries", test_many_entries},
    {"tensor_view_and_zero_grad", test_tensor_view_and_zero_grad},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"params", cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
