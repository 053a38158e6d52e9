/* IDX reader: plain and gzipped files, and every bad-input case gives
 * SP_EINPUT with the file's path in the one-line message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "supair/idx.h"
#include "testutil.h"

static char dir[256];

static void path_of(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Header (magic + dims, big-endian) then `nbytes` of data; `cut` bytes
 * dropped from the end to make truncated files. */
static void write_idx(const char *name, uint32_t magic, const uint32_t *dims, int nd,
                      const uint8_t *data, long nbytes, int gz, long cut) {
    unsigned char buf[64];
    int h = 0;
    uint32_t words[4] = {magic, 0, 0, 0};
    for (int i = 0; i < nd; i++) words[1 + i] = dims[i];
    for (int i = 0; i <= nd; i++) {
        buf[h++] = (unsigned char)(words[i] >> 24);
        buf[h++] = (unsigned char)(words[i] >> 16);
        buf[h++] = (unsigned char)(words[i] >> 8);
        buf[h++] = (unsigned char)words[i];
    }
    long total = h + nbytes - cut;
    unsigned char *all = malloc((size_t)(h + nbytes));
    memcpy(all, buf, (size_t)h);
    if (nbytes) memcpy(all + h, data, (size_t)nbytes);
    char p[512];
    path_of(p, sizeof p, name);
    if (gz) {
        gzFile f = gzopen(p, "wb");
        CU_ASSERT_FATAL(f != NULL);
        if (total > 0) gzwrite(f, all, (unsigned)total);
        gzclose(f);
    } else {
        FILE *f = fopen(p, "wb");
        CU_ASSERT_FATAL(f != NULL);
        if (total > 0) fwrite(all, 1, (size_t)total, f);
        fclose(f);
    }
    free(all);
}

static uint8_t pixels[5 * 4 * 3], labels5[5] = {3, 1, 4, 1, 5};

static void make_pixels(void) {
    for (int i = 0; i < 60; i++) pixels[i] = (uint8_t)(i * 7 + 1);
}

static void expect_fail(int rc, const sp_error *e, const char *must_contain) {
    CU_ASSERT_EQUAL(rc, SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e->msg, must_contain));
    CU_ASSERT_PTR_NULL(strchr(e->msg, '\n'));
    if (rc != SP_EINPUT || !strstr(e->msg, must_contain))
        printf("\n  rc %d, message '%s' should name '%s'\n", rc, e->msg, must_contain);
}

static void test_read_plain_and_gz(void) {
    make_pixels();
    uint32_t d[3] = {5, 4, 3};
    for (int gz = 0; gz < 2; gz++) {
        const char *name = gz ? "img.gz" : "img";
        write_idx(name, SP_IDX_MAGIC_IMAGES, d, 3, pixels, 60, gz, 0);
        char p[512];
        path_of(p, sizeof p, name);
        sp_idx_images im;
        sp_error e;
        int rc = sp_idx_read_images(&im, p, &e);
        CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
        CU_ASSERT_EQUAL(im.n, 5);
        CU_ASSERT_EQUAL(im.rows, 4);
        CU_ASSERT_EQUAL(im.cols, 3);
        CU_ASSERT_EQUAL(memcmp(im.data, pixels, 60), 0);
        sp_idx_images_free(&im);
        CU_ASSERT_PTR_NULL(im.data);
    }
    uint32_t n = 5;
    write_idx("lab.gz", SP_IDX_MAGIC_LABELS, &n, 1, labels5, 5, 1, 0);
    char p[512];
    path_of(p, sizeof p, "lab.gz");
    sp_idx_labels lb;
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(sp_idx_read_labels(&lb, p, &e), SP_OK);
    CU_ASSERT_EQUAL(lb.n, 5);
    CU_ASSERT_EQUAL(lb.data[2], 4);
    sp_idx_labels_free(&lb);
}

static void test_pair_ok_and_mismatch(void) {
    make_pixels();
    uint32_t d[3] = {5, 4, 3}, n5 = 5, n4 = 4;
    write_idx("pi", SP_IDX_MAGIC_IMAGES, d, 3, pixels, 60, 0, 0);
    write_idx("pl", SP_IDX_MAGIC_LABELS, &n5, 1, labels5, 5, 0, 0);
    write_idx("pl4", SP_IDX_MAGIC_LABELS, &n4, 1, labels5, 4, 1, 0);
    char pi[512], pl[512], pl4[512];
    path_of(pi, sizeof pi, "pi");
    path_of(pl, sizeof pl, "pl");
    path_of(pl4, sizeof pl4, "pl4");
    sp_idx_images im;
    sp_idx_labels lb;
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(sp_idx_read_pair(&im, &lb, pi, pl, &e), SP_OK);
    CU_ASSERT_EQUAL(im.n, lb.n);
    sp_idx_images_free(&im);
    sp_idx_labels_free(&lb);
    int rc = sp_idx_read_pair(&im, &lb, pi, pl4, &e);
    expect_fail(rc, &e, pl4);
    CU_ASSERT_PTR_NULL(im.data);
    CU_ASSERT_PTR_NULL(lb.data);
}

static void test_bad_inputs(void) {
    make_pixels();
    uint32_t d[3] = {5, 4, 3}, zero[3] = {0, 4, 3}, n5 = 5;
    char p[512];
    sp_idx_images im;
    sp_idx_labels lb;
    sp_error e;
    /* wrong magic: a labels file read as images, and vice versa */
    write_idx("wm", SP_IDX_MAGIC_LABELS, &n5, 1, labels5, 5, 0, 0);
    path_of(p, sizeof p, "wm");
    expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "magic"));
    write_idx("wm2.gz", SP_IDX_MAGIC_IMAGES, d, 3, pixels, 60, 1, 0);
    path_of(p, sizeof p, "wm2.gz");
    expect_fail(sp_idx_read_labels(&lb, p, &e), &e, p);
    /* truncated data, plain and gzipped */
    for (int gz = 0; gz < 2; gz++) {
        const char *name = gz ? "tr.gz" : "tr";
        write_idx(name, SP_IDX_MAGIC_IMAGES, d, 3, pixels, 60, gz, 7);
        path_of(p, sizeof p, name);
        expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "truncated"));
        CU_ASSERT_PTR_NULL(im.data);
    }
    /* truncated header (magic only) and an empty file */
    write_idx("th", SP_IDX_MAGIC_IMAGES, d, 3, NULL, 0, 0, 6);
    path_of(p, sizeof p, "th");
    expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
    write_idx("empty", SP_IDX_MAGIC_IMAGES, d, 3, NULL, 0, 0, 16);
    path_of(p, sizeof p, "empty");
    expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
    /* zero dimension */
    write_idx("zd", SP_IDX_MAGIC_IMAGES, zero, 3, NULL, 0, 0, 0);
    path_of(p, sizeof p, "zd");
    expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
    /* missing file */
    path_of(p, sizeof p, "nope");
    expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
    /* corrupt gzip stream: a valid header then garbage after the gzip magic */
    path_of(p, sizeof p, "corrupt.gz");
    FILE *f = fopen(p, "wb");
    const unsigned char junk[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff};
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    expect_fail(sp_idx_read_images(&im, p, &e), &e, p);
}

static void test_find(void) {
    char out[512], p[512];
    sp_error e;
    uint32_t n5 = 5;
    write_idx("stem-a.gz", SP_IDX_MAGIC_LABELS, &n5, 1, labels5, 5, 1, 0);
    CU_ASSERT_EQUAL(sp_idx_find(out, sizeof out, dir, "stem-a", &e), SP_OK);
    path_of(p, sizeof p, "stem-a.gz");
    CU_ASSERT_STRING_EQUAL(out, p);
    write_idx("stem-a", SP_IDX_MAGIC_LABELS, &n5, 1, labels5, 5, 0, 0);
    CU_ASSERT_EQUAL(sp_idx_find(out, sizeof out, dir, "stem-a", &e), SP_OK);
    path_of(p, sizeof p, "stem-a");
    CU_ASSERT_STRING_EQUAL(out, p); /* the plain file wins */
    expect_fail(sp_idx_find(out, sizeof out, dir, "stem-b", &e), &e, "stem-b");
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, dir));
    snprintf(p, sizeof p, "%s/no-such-dir", dir);
    expect_fail(sp_idx_find(out, sizeof out, p, "stem-a", &e), &e, p);
}

static int cleanup(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test_idx.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    static const sp_test_case cases[] = {
        {"read plain and gzipped", test_read_plain_and_gz},
        {"image/label pair and count mismatch", test_pair_ok_and_mismatch},
        {"bad inputs name the file", test_bad_inputs},
        {"find plain or .gz", test_find},
        {NULL, NULL},
    };
    static const sp_test_suite suites[] = {{"idx", cases}, {NULL, NULL}};
    int rc = sp_test_main(suites);
    cleanup();
    return rc;
}
