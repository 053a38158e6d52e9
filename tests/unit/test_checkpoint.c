/* Checkpoint tests: exact round trip, NaN refusal, keep-K, damaged newest
 * files (truncated, bit-flipped) detected with fallback, shape mismatches
 * naming the parameter, and temp files never taken for checkpoints. */
#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supair/checkpoint.h"
#include "supair/dist.h"
#include "supair/params.h"
#include "testutil.h"

static char run_dir[256];

/* A fresh run directory per test. */
static void new_run_dir(void) {
    snprintf(run_dir, sizeof run_dir, "/tmp/sp_ckpt_test_XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(run_dir) != NULL);
}

static void remove_run_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
    CU_ASSERT(system(cmd) == 0);
}

/* Three tensors; enc_w_cols changes one shape for the mismatch tests. */
static void build(sp_params *p, int enc_w_cols, const char *extra) {
    sp_error err;
    sp_params_init(p);
    int s1[2] = {3, enc_w_cols}, s2[1] = {5}, s3[3] = {2, 3, 4};
    CU_ASSERT_FATAL(sp_params_add(p, "enc/W", 2, s1, &err) >= 0);
    CU_ASSERT_FATAL(sp_params_add(p, "enc/b", 1, s2, &err) >= 0);
    CU_ASSERT_FATAL(sp_params_add(p, "dec/W", 3, s3, &err) >= 0);
    if (extra) CU_ASSERT_FATAL(sp_params_add(p, extra, 1, s2, &err) >= 0);
    CU_ASSERT_FATAL(sp_params_finalize(p, &err) == SP_OK);
}

/* Arbitrary finite bit patterns (denormals and negative zero included). */
static void fill(sp_params *p, uint32_t seed) {
    float *bufs[3] = {p->val, p->adam_m, p->adam_v};
    uint32_t x = seed * 2654435761u + 1;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < p->n_entries; i++)
            for (long j = 0; j < p->entries[i].size; j++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                uint32_t bits = x & 0xbf7fffffu; /* exponent < 255: finite */
                memcpy(&bufs[k][p->entries[i].offset + j], &bits, 4);
            }
}

static sp_ckpt_meta meta_for(int64_t step) {
    sp_ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.step = step;
    m.epoch = 3;
    m.epoch_pos = 17;
    m.seed = 0xfeedfacecafebeefULL;
    m.structure_seed = 42;
    m.world_size = 4;
    m.time_s = 123.25;
    snprintf(m.model, sizeof m.model, "supair");
    m.config = "lr = 0.001\nbatch_size = 32\n";
    return m;
}

static int entries_equal(const sp_params *a, const sp_params *b) {
    const float *ba[3] = {a->val, a->adam_m, a->adam_v}, *bb[3] = {b->val, b->adam_m, b->adam_v};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < a->n_entries; i++)
            if (memcmp(ba[k] + a->entries[i].offset, bb[k] + b->entries[i].offset,
                       (size_t)a->entries[i].size * 4))
                return 0;
    return 1;
}

static void test_round_trip(void) {
    new_run_dir();
    sp_params p, q;
    build(&p, 4, NULL);
    build(&q, 4, NULL);
    fill(&p, 1);
    float h[12];
    int64_t pos[7];
    for (int i = 0; i < 12; i++) h[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 7; i++) pos[i] = (int64_t)i * 1000000007LL;
    sp_ckpt_array st[2] = {{"srnn/h", SP_CKPT_F32, 2, {4, 3}, h}, {"pos", SP_CKPT_I64, 1, {7}, pos}};
    sp_ckpt_meta m = meta_for(1200);
    sp_error err;
    char path[512];
    int rc = sp_ckpt_save(run_dir, &p, &m, st, 2, 3, path, sizeof path, &err);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT(strstr(path, "/ckpt/step_00001200.h5") != NULL);

    sp_ckpt_meta got;
    sp_ckpt_state gs;
    int found = 0;
    char loaded[512];
    rc = sp_ckpt_load_latest(run_dir, &q, &got, &gs, &found, loaded, sizeof loaded, &err);
    if (rc) fprintf(stderr, "load: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT_EQUAL(found, 1);
    CU_ASSERT_STRING_EQUAL(loaded, path);
    CU_ASSERT(entries_equal(&p, &q));
    CU_ASSERT_EQUAL(got.step, 1200);
    CU_ASSERT_EQUAL(got.epoch, 3);
    CU_ASSERT_EQUAL(got.epoch_pos, 17);
    CU_ASSERT(got.seed == 0xfeedfacecafebeefULL);
    CU_ASSERT(got.structure_seed == 42);
    CU_ASSERT_EQUAL(got.world_size, 4);
    CU_ASSERT(got.time_s == 123.25);
    CU_ASSERT_STRING_EQUAL(got.model, "supair");
    CU_ASSERT_STRING_EQUAL(got.config, m.config);
    CU_ASSERT_EQUAL(gs.n, 2);
    const sp_ckpt_array *a = sp_ckpt_state_find(&gs, "srnn/h");
    const sp_ckpt_array *b = sp_ckpt_state_find(&gs, "pos");
    CU_ASSERT_FATAL(a && b);
    CU_ASSERT(a->type == SP_CKPT_F32 && a->ndim == 2 && a->shape[0] == 4 && a->shape[1] == 3);
    CU_ASSERT(memcmp(a->data, h, sizeof h) == 0);
    CU_ASSERT(b->type == SP_CKPT_I64 && b->ndim == 1 && b->shape[0] == 7);
    CU_ASSERT(memcmp(b->data, pos, sizeof pos) == 0);
    sp_ckpt_meta_free(&got);
    sp_ckpt_state_free(&gs);

    /* Attributes alone, and the explicit-file path. */
    rc = sp_ckpt_read_meta(path, &got, &err);
    CU_ASSERT_EQUAL(rc, SP_OK);
    CU_ASSERT_EQUAL(got.step, 1200);
    sp_ckpt_meta_free(&got);
    CU_ASSERT_EQUAL(sp_ckpt_save_best(run_dir, &p, &m, NULL, 0, &err), SP_OK);
    char best[512];
    snprintf(best, sizeof best, "%s/ckpt/best.h5", run_dir);
    memset(q.val, 0, (size_t)q.total * 4);
    CU_ASSERT_EQUAL(sp_ckpt_load(best, &q, NULL, NULL, &err), SP_OK);
    CU_ASSERT(entries_equal(&p, &q));
    snprintf(best, sizeof best, "%s/ckpt/nope.h5", run_dir);
    CU_ASSERT_EQUAL(sp_ckpt_load(best, &q, NULL, NULL, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "nope.h5") != NULL);
    sp_params_free(&p);
    sp_params_free(&q);
    remove_run_dir();
}

/* Files in DIR/ckpt whose name starts with prefix. */
static int count_files(const char *prefix) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/ckpt", run_dir);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* A slabbed entry (params.h: kept in column slabs in memory): the file
 * holds it row-major (what h5py users read), the load puts it back in
 * memory order, and the rest is untouched. */
static void test_slabbed_entry(void) {
    new_run_dir();
    sp_error err;
    sp_params p, q, plain;
    sp_params *all[3] = {&p, &q, &plain};
    int sw[2] = {3, 8}, sb[1] = {5};
    for (int k = 0; k < 3; k++) {
        sp_params_init(all[k]);
        CU_ASSERT_FATAL(sp_params_add(all[k], "enc/W", 2, sw, &err) == 0);
        CU_ASSERT_FATAL(sp_params_add(all[k], "enc/b", 1, sb, &err) == 1);
        if (k < 2) CU_ASSERT_EQUAL_FATAL(sp_params_set_slab(all[k], 0, 4, &err), SP_OK);
        CU_ASSERT_FATAL(sp_params_finalize(all[k], &err) == SP_OK);
    }
    CU_ASSERT_EQUAL(sp_params_set_slab(&p, 0, 4, &err), SP_ERUNTIME); /* after finalize */
    /* W[r][c] = 10 r + c, in memory order: slab k holds columns 4k..4k+3 of every row */
    fill(&p, 9); /* arbitrary moments (and values, W's set again below) */
    for (int c = 0; c < 8; c++)
        for (int r = 0; r < 3; r++) p.val[((c / 4) * 3 + r) * 4 + c % 4] = (float)(10 * r + c);
    sp_ckpt_meta m = meta_for(5);
    char path[512];
    CU_ASSERT_EQUAL_FATAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 3, path, sizeof path, &err), SP_OK);
    /* the file, read as a plain row-major table */
    CU_ASSERT_EQUAL_FATAL(sp_ckpt_load(path, &plain, NULL, NULL, &err), SP_OK);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 8; c++) CU_ASSERT_EQUAL(plain.val[r * 8 + c], (float)(10 * r + c));
    CU_ASSERT_EQUAL_FATAL(sp_ckpt_load(path, &q, NULL, NULL, &err), SP_OK);
    CU_ASSERT(entries_equal(&p, &q));
    float *rm = malloc((size_t)p.total * sizeof *rm), *mo = malloc((size_t)p.total * sizeof *mo);
    CU_ASSERT_FATAL(rm && mo);
    sp_params_to_row_major(&p, p.val, rm);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 8; c++) CU_ASSERT_EQUAL(rm[r * 8 + c], (float)(10 * r + c));
    sp_params_from_row_major(&p, rm, mo);
    CU_ASSERT_EQUAL(memcmp(mo, p.val, (size_t)p.total * sizeof *mo), 0);
    free(rm), free(mo);
    for (int k = 0; k < 3; k++) sp_params_free(all[k]);
    remove_run_dir();
}

static void test_nan_refused(void) {
    new_run_dir();
    sp_params p;
    build(&p, 4, NULL);
    fill(&p, 2);
    sp_ckpt_meta m = meta_for(10);
    sp_error err;
    p.val[p.entries[1].offset + 2] = NAN;
    CU_ASSERT_EQUAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 0, NULL, 0, &err), SP_ERUNTIME);
    CU_ASSERT(strstr(err.msg, "'enc/b' [2]") != NULL);
    p.val[p.entries[1].offset + 2] = 1.0f;
    p.adam_v[p.entries[2].offset + 5] = INFINITY;
    CU_ASSERT_EQUAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 0, NULL, 0, &err), SP_ERUNTIME);
    CU_ASSERT(strstr(err.msg, "Adam v of 'dec/W' [5]") != NULL);
    p.adam_v[p.entries[2].offset + 5] = 1.0f;
    float bad[2] = {1.0f, -NAN};
    sp_ckpt_array st = {"h", SP_CKPT_F32, 1, {2}, bad};
    CU_ASSERT_EQUAL(sp_ckpt_save(run_dir, &p, &m, &st, 1, 0, NULL, 0, &err), SP_ERUNTIME);
    CU_ASSERT(strstr(err.msg, "state 'h' [1]") != NULL);
    CU_ASSERT_EQUAL(count_files("step_"), 0);
    CU_ASSERT_EQUAL(count_files(".tmp_"), 0);
    sp_params_free(&p);
    remove_run_dir();
}

static void test_keep_k(void) {
    new_run_dir();
    sp_params p;
    build(&p, 4, NULL);
    fill(&p, 3);
    sp_error err;
    for (int s = 1; s <= 5; s++) {
        sp_ckpt_meta m = meta_for(s * 100);
        CU_ASSERT_EQUAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 2, NULL, 0, &err), SP_OK);
        if (s == 1) CU_ASSERT_EQUAL(sp_ckpt_save_best(run_dir, &p, &m, NULL, 0, &err), SP_OK);
    }
    int64_t *steps;
    int n;
    CU_ASSERT_EQUAL(sp_ckpt_list(run_dir, &steps, &n, &err), SP_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(steps[0], 400);
    CU_ASSERT_EQUAL(steps[1], 500);
    free(steps);
    char best[512];
    snprintf(best, sizeof best, "%s/ckpt/best.h5", run_dir);
    CU_ASSERT(access(best, F_OK) == 0);
    CU_ASSERT_EQUAL(count_files(".tmp_"), 0);
    sp_params_free(&p);
    remove_run_dir();
}

/* Offset in the file of /params/NAME's data (contiguous layout). */
static long data_offset(const char *path, const char *dset) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    haddr_t off = H5Dget_offset(d);
    H5Dclose(d);
    H5Fclose(f);
    return (long)off;
}

static void flip_byte(const char *path, long off) {
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    unsigned char c;
    CU_ASSERT(pread(fd, &c, 1, off) == 1);
    c ^= 0x10;
    CU_ASSERT(pwrite(fd, &c, 1, off) == 1);
    close(fd);
}

/* Runs load_latest with stderr captured into *log (malloc'd). */
static int load_latest_captured(sp_params *q, sp_ckpt_meta *m, int *found, char *loaded, size_t cap,
                                sp_error *err, char **log) {
    char logpath[300];
    snprintf(logpath, sizeof logpath, "%s/stderr.txt", run_dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    int rc = sp_ckpt_load_latest(run_dir, q, m, NULL, found, loaded, cap, err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(logpath, "r");
    *log = calloc(8192, 1);
    if (f) {
        size_t n = fread(*log, 1, 8191, f);
        (*log)[n] = '\0';
        fclose(f);
    }
    return rc;
}

static void test_damaged_fallback(void) {
    new_run_dir();
    sp_params p, q;
    build(&p, 4, NULL);
    build(&q, 4, NULL);
    sp_error err;
    for (int s = 1; s <= 3; s++) {
        fill(&p, 10 + s);
        sp_ckpt_meta m = meta_for(s * 100);
        CU_ASSERT_EQUAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 0, NULL, 0, &err), SP_OK);
    }
    char p100[512], p200[512], p300[512];
    snprintf(p100, sizeof p100, "%s/ckpt/step_00000100.h5", run_dir);
    snprintf(p200, sizeof p200, "%s/ckpt/step_00000200.h5", run_dir);
    snprintf(p300, sizeof p300, "%s/ckpt/step_00000300.h5", run_dir);
    /* Newest truncated to half, the one before bit-flipped in its data. */
    struct stat sb;
    CU_ASSERT_FATAL(stat(p300, &sb) == 0);
    CU_ASSERT_FATAL(truncate(p300, sb.st_size / 2) == 0);
    long off = data_offset(p200, "/params/dec/W");
    CU_ASSERT_FATAL(off > 0);
    flip_byte(p200, off + 37);

    CU_ASSERT_EQUAL(sp_ckpt_load(p300, &q, NULL, NULL, &err), SP_ERUNTIME);
    CU_ASSERT(strstr(err.msg, "step_00000300.h5") != NULL);
    CU_ASSERT_EQUAL(sp_ckpt_load(p200, &q, NULL, NULL, &err), SP_ERUNTIME);
    CU_ASSERT(strstr(err.msg, "step_00000200.h5") && strstr(err.msg, "checksum mismatch"));
    /* p untouched by failed loads: still all zero. */
    int zero = 1;
    for (long i = 0; i < q.total; i++) zero &= q.val[i] == 0.0f;
    CU_ASSERT(zero);

    sp_ckpt_meta m;
    int found = 0;
    char loaded[512], *log = NULL;
    int rc = load_latest_captured(&q, &m, &found, loaded, sizeof loaded, &err, &log);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT_EQUAL(found, 1);
    CU_ASSERT_EQUAL(m.step, 100);
    CU_ASSERT_STRING_EQUAL(loaded, p100);
    fill(&p, 11); /* the content saved at step 100 */
    CU_ASSERT(entries_equal(&p, &q));
    CU_ASSERT(strstr(log, "step_00000300.h5") != NULL);
    CU_ASSERT(strstr(log, "step_00000200.h5") != NULL);
    CU_ASSERT(strstr(log, "warning") != NULL);
    free(log);
    sp_ckpt_meta_free(&m);

    /* All damaged: a runtime error, not a silent fresh start. */
    flip_byte(p100, data_offset(p100, "/adam/v/enc/W") + 3);
    rc = load_latest_captured(&q, &m, &found, loaded, sizeof loaded, &err, &log);
    CU_ASSERT_EQUAL(rc, SP_ERUNTIME);
    CU_ASSERT_EQUAL(found, 0);
    CU_ASSERT(strstr(err.msg, "none of the 3 checkpoints") != NULL);
    free(log);
    sp_params_free(&p);
    sp_params_free(&q);
    remove_run_dir();
}

/* Single-bit flips anywhere in a checkpoint: each is either reported as
 * damage or leaves every loaded value intact; never a silent change or a
 * crash (variable-length strings in HDF5's unchecksummed global heap used to
 * crash the reader). */
static void test_random_bit_flips(void) {
    new_run_dir();
    sp_params p, q;
    build(&p, 4, NULL);
    build(&q, 4, NULL);
    fill(&p, 9);
    float h[6] = {1, 2, 3, 4, 5, 6};
    sp_ckpt_array st = {"h", SP_CKPT_F32, 1, {6}, h};
    sp_ckpt_meta m = meta_for(5);
    sp_error err;
    char path[512];
    CU_ASSERT_EQUAL_FATAL(sp_ckpt_save(run_dir, &p, &m, &st, 1, 0, path, sizeof path, &err), SP_OK);
    struct stat sb;
    CU_ASSERT_FATAL(stat(path, &sb) == 0);
    int detected = 0, intact = 0, silent = 0;
    uint32_t x = 12345;
    for (int t = 0; t < 150; t++) {
        x = x * 1664525u + 1013904223u;
        long off = (long)(x % (uint32_t)sb.st_size);
        int bit = (int)((x >> 24) % 8);
        int fd = open(path, O_RDWR);
        unsigned char c;
        CU_ASSERT_FATAL(fd >= 0 && pread(fd, &c, 1, off) == 1);
        c ^= (unsigned char)(1 << bit);
        CU_ASSERT(pwrite(fd, &c, 1, off) == 1);
        sp_params_zero_adam(&q);
        memset(q.val, 0, (size_t)q.total * 4);
        sp_ckpt_meta got;
        sp_ckpt_state gs;
        if (sp_ckpt_load(path, &q, &got, &gs, &err) != SP_OK) {
            detected++;
        } else {
            const sp_ckpt_array *a = sp_ckpt_state_find(&gs, "h");
            int same = entries_equal(&p, &q) && got.step == 5 && got.epoch == 3 &&
                       !strcmp(got.model, "supair") && !strcmp(got.config, m.config) && a &&
                       !memcmp(a->data, h, sizeof h);
            if (same) intact++;
            else {
                silent++;
                fprintf(stderr, "undetected change: bit %d of byte %ld\n", bit, off);
            }
            sp_ckpt_meta_free(&got);
            sp_ckpt_state_free(&gs);
        }
        c ^= (unsigned char)(1 << bit); /* restore */
        CU_ASSERT(pwrite(fd, &c, 1, off) == 1);
        close(fd);
    }
    CU_ASSERT_EQUAL(silent, 0);
    CU_ASSERT(detected > 100);
    sp_params_free(&p);
    sp_params_free(&q);
    remove_run_dir();
}

static void test_shape_mismatch(void) {
    new_run_dir();
    sp_params p, wrong, more, fewer;
    build(&p, 4, NULL);
    build(&wrong, 6, NULL);
    build(&more, 4, "new/x");
    fill(&p, 5);
    sp_error err;
    sp_ckpt_meta m = meta_for(7);
    CU_ASSERT_EQUAL_FATAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 0, NULL, 0, &err), SP_OK);
    int found;
    CU_ASSERT_EQUAL(sp_ckpt_load_latest(run_dir, &wrong, NULL, NULL, &found, NULL, 0, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "'enc/W' has shape (3, 4) in the checkpoint but (3, 6) in the model") != NULL);
    CU_ASSERT_EQUAL(sp_ckpt_load_latest(run_dir, &more, NULL, NULL, &found, NULL, 0, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "'new/x'") != NULL);
    /* The file has a parameter the model lacks. */
    sp_params_init(&fewer);
    int s2[1] = {5};
    CU_ASSERT_FATAL(sp_params_add(&fewer, "enc/b", 1, s2, &err) >= 0);
    CU_ASSERT_FATAL(sp_params_finalize(&fewer, &err) == SP_OK);
    CU_ASSERT_EQUAL(sp_ckpt_load_latest(run_dir, &fewer, NULL, NULL, &found, NULL, 0, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "'dec/W' is not in the model") != NULL);
    sp_params_free(&p);
    sp_params_free(&wrong);
    sp_params_free(&more);
    sp_params_free(&fewer);
    remove_run_dir();
}

static void touch(const char *name, const char *content) {
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt/%s", run_dir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(content, f);
    fclose(f);
}

static void test_temp_files_ignored(void) {
    new_run_dir();
    sp_params p, q;
    build(&p, 4, NULL);
    build(&q, 4, NULL);
    fill(&p, 6);
    sp_error err;
    int found = 1;
    CU_ASSERT_EQUAL(sp_ckpt_load_latest(run_dir, &q, NULL, NULL, &found, NULL, 0, &err), SP_OK);
    CU_ASSERT_EQUAL(found, 0);
    sp_ckpt_meta m = meta_for(50);
    CU_ASSERT_EQUAL_FATAL(sp_ckpt_save(run_dir, &p, &m, NULL, 0, 0, NULL, 0, &err), SP_OK);
    /* What a crash mid-write or a stray editor leaves behind. */
    touch(".tmp_step_00000900.h5.999999999", "partial");
    touch("step_00000800.h5.tmp", "x");
    touch("step_800.h5", "x");
    touch("step_00000700.h5~", "x");
    touch("step_0000070a.h5", "x");
    int64_t *steps;
    int n;
    CU_ASSERT_EQUAL(sp_ckpt_list(run_dir, &steps, &n, &err), SP_OK);
    CU_ASSERT_EQUAL(n, 1);
    if (n == 1) CU_ASSERT_EQUAL(steps[0], 50);
    free(steps);
    sp_ckpt_meta got;
    char loaded[512];
    CU_ASSERT_EQUAL(sp_ckpt_load_latest(run_dir, &q, &got, NULL, &found, loaded, sizeof loaded, &err), SP_OK);
    CU_ASSERT_EQUAL(found, 1);
    CU_ASSERT_EQUAL(got.step, 50);
    sp_ckpt_meta_free(&got);
    /* The dead writer's temp file is cleaned up at load. */
    CU_ASSERT_EQUAL(count_files(".tmp_"), 0);
    sp_params_free(&p);
    sp_params_free(&q);
    remove_run_dir();
}

/* The checksum is standard 64-bit FNV-1a (published test vectors), so files
 * can be verified by other tools. */
static void test_fnv_vectors(void) {
    CU_ASSERT(sp_fnv1a64(SP_FNV_OFFSET, "", 0) == 0xcbf29ce484222325ULL);
    CU_ASSERT(sp_fnv1a64(SP_FNV_OFFSET, "a", 1) == 0xaf63dc4c8601ec8cULL);
    CU_ASSERT(sp_fnv1a64(SP_FNV_OFFSET, "foobar", 6) == 0x85944171f73967e8ULL);
    /* Chaining equals hashing the concatenation. */
    CU_ASSERT(sp_fnv1a64(sp_fnv1a64(SP_FNV_OFFSET, "foo", 3), "bar", 3) == 0x85944171f73967e8ULL);
}

static const sp_test_case ckpt_cases[] = {
    {"FNV-1a test vectors", test_fnv_vectors},
    {"round trip is byte-exact", test_round_trip},
    {"slabbed entry: row-major in the file, memory order after load", test_slabbed_entry},
    {"NaN/Inf refused", test_nan_refused},
    {"keep newest K, never best", test_keep_k},
    {"damaged newest falls back", test_damaged_fallback},
    {"random bit flips never load silently", test_random_bit_flips},
    {"shape mismatch names the parameter", test_shape_mismatch},
    {"temp files never checkpoints", test_temp_files_ignored},
    {NULL, NULL},
};

int main(void) {
    static const sp_test_suite suites[] = {{"checkpoint", ckpt_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
