/* Scenes files end to end: build a small file, read shuffled row lists back
 * (they must equal the generator's scenes exactly), fingerprints, inspect,
 * atomic output, and schema errors that name the file and the dataset. The
 * malformed files are written with HDF5 directly. */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "supair/dataset.h"
#include "supair/idx.h"
#include "supair/scenes.h"
#include "testutil.h"

static char dir[256];

static void path_of(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

static int count_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

/* Four small IDX files (gzipped images, plain labels) in dir/mnist. */
#define ITEMS 30
static uint8_t pix[2][ITEMS * 28 * 28], item_labs[2][ITEMS];

static void write_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void make_mnist_dir(void) {
    char d[512], p[600];
    path_of(d, sizeof d, "mnist");
    mkdir(d, 0755);
    const char *pre[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < ITEMS; k++) {
            item_labs[s][k] = (uint8_t)(k % 10);
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++) /* a bar whose position depends on k */
                    pix[s][k * 784 + y * 28 + x] =
                        (x > 4 + k % 8 && x < 14 + k % 8 && y > 3 && y < 25) ? (uint8_t)(90 + 5 * k + 20 * s) : 0;
        }
        unsigned char h[16];
        write_be32(h, SP_IDX_MAGIC_IMAGES);
        write_be32(h + 4, ITEMS);
        write_be32(h + 8, 28);
        write_be32(h + 12, 28);
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte.gz", d, pre[s]);
        gzFile g = gzopen(p, "wb");
        gzwrite(g, h, 16);
        gzwrite(g, pix[s], sizeof pix[s]);
        gzclose(g);
        write_be32(h, SP_IDX_MAGIC_LABELS);
        write_be32(h + 4, ITEMS);
        snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", d, pre[s]);
        FILE *f = fopen(p, "wb");
        fwrite(h, 1, 8, f);
        fwrite(item_labs[s], 1, ITEMS, f);
        fclose(f);
    }
}

static int build(const char *name, sp_scene_kind kind, sp_scene_noise noise, uint64_t seed,
                 long ntrain, long ntest, sp_error *e) {
    char out[512], src[600];
    path_of(out, sizeof out, name);
    snprintf(src, sizeof src, "mnist-idx:%s/mnist", dir);
    sp_scenes_opts o;
    sp_scenes_opts_default(&o);
    o.out = out;
    o.source = src;
    o.spec.kind = kind;
    o.spec.noise = noise;
    o.spec.seed = seed;
    o.n_train = ntrain;
    o.n_test = ntest;
    return sp_scenes_build(&o, e);
}

/* Reads shuffled rows with repeats and compares them with freshly generated
 * scenes: the reader must return exactly what the generator made. */
static void check_roundtrip(const char *name, sp_scene_kind kind, sp_scene_noise noise,
                            uint64_t seed, int split, long n) {
    char p[512];
    path_of(p, sizeof p, name);
    sp_scenes_data s;
    sp_error e;
    int rc = sp_scenes_data_open(&s, p, &e);
    if (rc) printf("\n  open: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT_EQUAL(s.max_objects, 2);
    const char *sname = split ? "test" : "train";
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_size(&s, sname), n);
    CU_ASSERT_EQUAL(sp_scenes_data_size(&s, "valid"), -1);
    enum { B = 40 };
    long idx[B];
    for (int i = 0; i < B; i++) idx[i] = (i * 7919L + 13) % n; /* shuffled */
    idx[5] = idx[17];                                         /* a repeat */
    idx[B - 1] = n - 1;
    idx[0] = 0;
    static float im[B * SP_SCENE_PIXELS];
    int32_t cnt[B];
    float box[B * 8];
    rc = sp_scenes_data_read(&s, sname, idx, B, im, cnt, box, &e);
    if (rc) printf("\n  read: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);

    sp_idx_images images;
    sp_idx_labels labels;
    char ip[600], lp[600];
    snprintf(ip, sizeof ip, "%s/mnist/%s-images-idx3-ubyte.gz", dir, split ? "t10k" : "train");
    snprintf(lp, sizeof lp, "%s/mnist/%s-labels-idx1-ubyte", dir, split ? "t10k" : "train");
    CU_ASSERT_EQUAL_FATAL(sp_idx_read_pair(&images, &labels, ip, lp, &e), SP_OK);
    sp_scene_pool pool = {images.data, labels.data, images.n, images.rows};
    sp_scene_spec spec = {kind, noise, 2, seed};
    long bad_px = 0, bad_meta = 0;
    for (int i = 0; i < B; i++) {
        float want[SP_SCENE_PIXELS], wbox[8];
        int32_t wc;
        CU_ASSERT_EQUAL_FATAL(sp_scene_make(want, &wc, wbox, NULL, &spec, &pool, split, idx[i], &e), SP_OK);
        for (int q = 0; q < SP_SCENE_PIXELS; q++) bad_px += im[i * SP_SCENE_PIXELS + q] != want[q];
        bad_meta += wc != cnt[i] || memcmp(wbox, box + i * 8, sizeof wbox) != 0;
    }
    CU_ASSERT_EQUAL(bad_px, 0);
    CU_ASSERT_EQUAL(bad_meta, 0);
    if (bad_px || bad_meta) printf("\n  %s: %ld pixels, %ld counts/boxes differ\n", name, bad_px, bad_meta);

    /* the generic row reader with other row shapes: labels (N, 2), boxes as rows of 8 */
    int32_t lab[B * 2];
    char dn[64];
    snprintf(dn, sizeof dn, "/%s/labels", sname);
    CU_ASSERT_EQUAL(sp_dataset_read_rows_i32(s.ds, dn, idx, B, lab, 2, &e), SP_OK);
    long bad_lab = 0;
    for (int i = 0; i < B; i++)
        for (int k = 0; k < 2; k++) bad_lab += (k < cnt[i]) != (lab[i * 2 + k] >= 0);
    CU_ASSERT_EQUAL(bad_lab, 0);
    int64_t c64[B];
    snprintf(dn, sizeof dn, "/%s/counts", sname);
    CU_ASSERT_EQUAL(sp_dataset_read_rows_i64(s.ds, dn, idx, B, c64, 1, &e), SP_OK);
    long bad64 = 0;
    for (int i = 0; i < B; i++) bad64 += c64[i] != cnt[i];
    CU_ASSERT_EQUAL(bad64, 0);
    /* errors: index out of range, wrong row length, unknown split */
    long badidx[2] = {0, n};
    CU_ASSERT_EQUAL(sp_scenes_data_read(&s, sname, badidx, 2, im, NULL, NULL, &e), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "out of range"));
    snprintf(dn, sizeof dn, "/%s/boxes", sname);
    CU_ASSERT_EQUAL(sp_dataset_read_rows(s.ds, dn, idx, 2, box, 4, &e), SP_EINPUT);
    CU_ASSERT_EQUAL(sp_scenes_data_read(&s, "valid", idx, 2, im, NULL, NULL, &e), SP_EINPUT);
    sp_idx_images_free(&images);
    sp_idx_labels_free(&labels);
    sp_scenes_data_close(&s);
}

static void test_build_and_read(void) {
    sp_error e;
    int rc = build("u8.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 9, 300, 120, &e);
    if (rc) printf("\n  build: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    check_roundtrip("u8.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 9, 0, 300);
    check_roundtrip("u8.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 9, 1, 120);
    rc = build("f32.h5", SP_SCENES_OBJECTS, SP_NOISE_GAUSS, 9, 50, 20, &e);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    check_roundtrip("f32.h5", SP_SCENES_OBJECTS, SP_NOISE_GAUSS, 9, 0, 50);
    /* attributes */
    char p[512], buf[256];
    path_of(p, sizeof p, "u8.h5");
    sp_dataset *d;
    CU_ASSERT_EQUAL_FATAL(sp_dataset_open(&d, p, &e), SP_OK);
    CU_ASSERT_EQUAL(sp_dataset_attr_string(d, "/", "kind", buf, sizeof buf, &e), SP_OK);
    CU_ASSERT_STRING_EQUAL(buf, "objects");
    CU_ASSERT_EQUAL(sp_dataset_attr_string(d, "/", "noise", buf, sizeof buf, &e), SP_OK);
    CU_ASSERT_STRING_EQUAL(buf, "none");
    CU_ASSERT_EQUAL(sp_dataset_attr_string(d, "/", "source", buf, sizeof buf, &e), SP_OK);
    CU_ASSERT(strncmp(buf, "mnist-idx:", 10) == 0);
    int64_t v = 0;
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, "/", "seed", &v, &e), SP_OK);
    CU_ASSERT_EQUAL(v, 9);
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, "/", "generator_version", &v, &e), SP_OK);
    CU_ASSERT_EQUAL(v, SP_SCENES_GENERATOR_VERSION);
    double sc = 0;
    CU_ASSERT_EQUAL(sp_dataset_attr_double(d, "/train/images", "scale", &sc, &e), SP_OK);
    CU_ASSERT_EQUAL(sc, 1.0 / 255.0);
    CU_ASSERT_EQUAL(sp_dataset_attr_string(d, "/", "nope", buf, sizeof buf, &e), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "nope"));
    long dims[3];
    const long row[2] = {50, 50};
    CU_ASSERT_EQUAL(sp_dataset_check(d, "/train/images", 3, row, dims, &e), SP_OK);
    CU_ASSERT_EQUAL(dims[0], 300);
    CU_ASSERT(sp_dataset_has(d, "/test/counts"));
    CU_ASSERT(!sp_dataset_has(d, "/test"));
    CU_ASSERT(!sp_dataset_has(d, "/valid/x"));
    sp_dataset_close(d);
}

static void test_sprites_file(void) {
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(build("sp.h5", SP_SCENES_SPRITES, SP_NOISE_GRID, 4, 64, 16, &e), SP_OK);
    char p[512];
    path_of(p, sizeof p, "sp.h5");
    sp_scenes_data s;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&s, p, &e), SP_OK);
    long idx[3] = {63, 0, 31};
    float im[3 * SP_SCENE_PIXELS], want[SP_SCENE_PIXELS];
    int32_t c[3], wc;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_read(&s, "train", idx, 3, im, c, NULL, &e), SP_OK);
    sp_scene_spec spec = {SP_SCENES_SPRITES, SP_NOISE_GRID, 2, 4};
    for (int i = 0; i < 3; i++) {
        sp_scene_make(want, &wc, NULL, NULL, &spec, NULL, 0, idx[i], &e);
        CU_ASSERT_EQUAL(memcmp(want, im + i * SP_SCENE_PIXELS, sizeof want), 0);
        CU_ASSERT_EQUAL(wc, c[i]);
    }
    sp_scenes_data_close(&s);
}

/* An attached split reads the same rows (shuffled, repeated) as the file,
 * also through a second handle that only maps the block the first filled
 * (as a node's ranks share it; a poisoned row proves the block is read);
 * a split the file lacks takes no bytes; out-of-range rows are refused. */
static void test_preload(void) {
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(build("pre.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 3, 90, 20, &e), SP_OK);
    char p[512];
    path_of(p, sizeof p, "pre.h5");
    sp_scenes_data f, a, b;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&f, p, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&a, p, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&b, p, &e), SP_OK);
    size_t bytes = 0, none = 1;
    CU_ASSERT_EQUAL(sp_scenes_data_preload_bytes(&a, "train", &bytes, &e), SP_OK);
    /* uint8 images, int32 counts, float boxes (2 objects x 4), 64-byte aligned parts */
    CU_ASSERT(bytes >= (size_t)90 * (SP_SCENE_PIXELS + 4 + 8 * 4) && bytes % 64 == 0);
    CU_ASSERT(bytes < (size_t)90 * (SP_SCENE_PIXELS + 4 + 8 * 4) + 3 * 64);
    CU_ASSERT_EQUAL(sp_scenes_data_preload_bytes(&a, "valid", &none, &e), SP_OK);
    CU_ASSERT_EQUAL(none, 0);
    unsigned char *block = aligned_alloc(64, bytes);
    CU_ASSERT_PTR_NOT_NULL_FATAL(block);
    memset(block, 0xAB, bytes);
    CU_ASSERT_EQUAL(sp_scenes_data_attach(&a, "train", block, 1, &e), SP_OK);
    CU_ASSERT_EQUAL(sp_scenes_data_attach(&b, "train", block, 0, &e), SP_OK);
    enum { B = 33 };
    long idx[B];
    for (int i = 0; i < B; i++) idx[i] = (i * 37L + 5) % 90;
    idx[3] = idx[20], idx[B - 1] = 89, idx[0] = 0;
    static float want[B * SP_SCENE_PIXELS], got[B * SP_SCENE_PIXELS], got2[B * SP_SCENE_PIXELS];
    int32_t wc[B], gc[B], gc2[B];
    float wb[B * 8], gb[B * 8], gb2[B * 8];
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_read(&f, "train", idx, B, want, wc, wb, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_read(&a, "train", idx, B, got, gc, gb, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_read(&b, "train", idx, B, got2, gc2, gb2, &e), SP_OK);
    CU_ASSERT_EQUAL(memcmp(want, got, sizeof want), 0);
    CU_ASSERT_EQUAL(memcmp(wc, gc, sizeof wc), 0);
    CU_ASSERT_EQUAL(memcmp(wb, gb, sizeof wb), 0);
    CU_ASSERT_EQUAL(memcmp(want, got2, sizeof want), 0);
    CU_ASSERT_EQUAL(memcmp(wc, gc2, sizeof wc), 0);
    CU_ASSERT_EQUAL(memcmp(wb, gb2, sizeof wb), 0);
    long bad = 90;
    CU_ASSERT_EQUAL(sp_scenes_data_read(&b, "train", &bad, 1, got, NULL, NULL, &e), SP_EINPUT);
    /* images are the last part of the block: row 89's pixels there to 255 */
    memset(block + bytes - (bytes - (size_t)90 * SP_SCENE_PIXELS) % 64 - SP_SCENE_PIXELS, 255,
           SP_SCENE_PIXELS);
    long last = 89;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_read(&b, "train", &last, 1, got, NULL, NULL, &e), SP_OK);
    long white = 0;
    for (int k = 0; k < SP_SCENE_PIXELS; k++) white += got[k] == 1.0f;
    CU_ASSERT_EQUAL(white, SP_SCENE_PIXELS);
    sp_scenes_data_close(&f);
    sp_scenes_data_close(&a);
    sp_scenes_data_close(&b);
    free(block);
}

/* A block filled in parts by two handles (as a node's ranks fill the
 * shared copy side by side), parts in reverse order, equals one filled
 * whole, byte for byte: 20 rows in 1, 3, 7 and 30 parts (the last leaves
 * some parts empty). Bad part numbers and rows out of range are refused
 * naming the dataset; a split the file lacks fills nothing. */
static void test_fill_parts(void) {
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(build("parts.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 5, 20, 20, &e),
                          SP_OK);
    char p[512];
    path_of(p, sizeof p, "parts.h5");
    sp_scenes_data a, b;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&a, p, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&b, p, &e), SP_OK);
    size_t bytes = 0;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_preload_bytes(&a, "train", &bytes, &e), SP_OK);
    unsigned char *whole = aligned_alloc(64, bytes), *parted = aligned_alloc(64, bytes);
    CU_ASSERT_FATAL(whole && parted);
    memset(whole, 0xAB, bytes);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_attach(&a, "train", whole, 1, &e), SP_OK);
    const int counts[4] = {1, 3, 7, 30};
    for (int c = 0; c < 4; c++) {
        memset(parted, 0xAB, bytes);
        for (int q = 0; q < counts[c]; q++) /* alternate handles, parts in reverse */
            CU_ASSERT_EQUAL(sp_scenes_data_fill_part(q % 2 ? &a : &b, "train", parted,
                                                     counts[c] - 1 - q, counts[c], &e),
                            SP_OK);
        CU_ASSERT_EQUAL(memcmp(whole, parted, bytes), 0);
    }
    CU_ASSERT_EQUAL(sp_scenes_data_fill_part(&b, "train", parted, 3, 3, &e), SP_EINPUT);
    CU_ASSERT_EQUAL(sp_scenes_data_fill_part(&b, "train", parted, -1, 3, &e), SP_EINPUT);
    CU_ASSERT_EQUAL(sp_scenes_data_fill_part(&b, "train", parted, 0, 0, &e), SP_EINPUT);
    CU_ASSERT_EQUAL(sp_dataset_fill_rows(b.ds, "/train/counts", parted, 5, 21, &e), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/train/counts"));
    CU_ASSERT_EQUAL(sp_scenes_data_fill_part(&b, "valid", parted, 0, 1, &e), SP_OK);
    sp_scenes_data_close(&a);
    sp_scenes_data_close(&b);
    free(whole), free(parted);
}

static void test_fingerprint_and_determinism(void) {
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(build("a.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 1, 100, 30, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(build("b.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 1, 100, 30, &e), SP_OK);
    CU_ASSERT_EQUAL_FATAL(build("c.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 2, 100, 30, &e), SP_OK);
    char pa[512], pb[512], pc[512];
    path_of(pa, sizeof pa, "a.h5");
    path_of(pb, sizeof pb, "b.h5");
    path_of(pc, sizeof pc, "c.h5");
    /* byte-identical files */
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    long same = 1, na = 0;
    int ca, cb;
    do {
        ca = fgetc(fa), cb = fgetc(fb);
        same &= ca == cb;
        na++;
    } while (ca != EOF && cb != EOF);
    fclose(fa);
    fclose(fb);
    CU_ASSERT(same);
    CU_ASSERT(na > 1000);
    uint64_t h[3];
    const char *ps[3] = {pa, pb, pc};
    for (int i = 0; i < 3; i++) {
        sp_dataset *d;
        CU_ASSERT_EQUAL_FATAL(sp_dataset_open(&d, ps[i], &e), SP_OK);
        CU_ASSERT_EQUAL(sp_dataset_fingerprint(d, &h[i], &e), SP_OK);
        sp_dataset_close(d);
    }
    CU_ASSERT_EQUAL(h[0], h[1]);
    CU_ASSERT_NOT_EQUAL(h[0], h[2]);
}

static void test_inspect(void) {
    sp_error e;
    char p[512];
    path_of(p, sizeof p, "a.h5");
    if (!file_exists(p)) CU_ASSERT_EQUAL_FATAL(build("a.h5", SP_SCENES_OBJECTS, SP_NOISE_NONE, 1, 100, 30, &e), SP_OK);
    FILE *f = tmpfile();
    CU_ASSERT_EQUAL_FATAL(sp_dataset_inspect(p, f, &e), SP_OK);
    rewind(f);
    static char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "count histogram"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "/train/counts  n=100"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "/test/images"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "kind = \"objects\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "uint8    (100, 50, 50)"));
}

static void test_build_errors(void) {
    sp_error e;
    int before = count_files();
    /* unwritable output: its directory does not exist */
    char out[512];
    path_of(out, sizeof out, "no-such-dir/x.h5");
    sp_scenes_opts o;
    sp_scenes_opts_default(&o);
    o.out = out;
    o.spec.kind = SP_SCENES_SPRITES;
    o.n_train = 10;
    o.n_test = 10;
    CU_ASSERT_EQUAL(sp_scenes_build(&o, &e), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, out));
    /* a missing source directory */
    path_of(out, sizeof out, "y.h5");
    o.out = out;
    o.spec.kind = SP_SCENES_OBJECTS;
    char src[600];
    snprintf(src, sizeof src, "mnist-idx:%s/absent", dir);
    o.source = src;
    CU_ASSERT_EQUAL(sp_scenes_build(&o, &e), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "absent"));
    o.source = "cifar";
    CU_ASSERT_EQUAL(sp_scenes_build(&o, &e), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "cifar"));
    /* a stop request: no output, no temporary left */
    volatile sig_atomic_t stop = 1;
    sp_scenes_opts_default(&o);
    o.out = out;
    o.spec.kind = SP_SCENES_SPRITES;
    o.n_train = 10;
    o.n_test = 10;
    o.stop = &stop;
    CU_ASSERT_EQUAL(sp_scenes_build(&o, &e), SP_ESTOPPED);
    CU_ASSERT(!file_exists(out));
    CU_ASSERT_EQUAL(count_files(), before);
}

/* ---- malformed files ---- */

static void make_h5(const char *name, const char *const *dsets, const int *ranks,
                    const hsize_t (*dims)[3], int n, hid_t type) {
    char p[512];
    path_of(p, sizeof p, name);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    for (int i = 0; i < n; i++) {
        hid_t sp = H5Screate_simple(ranks[i], dims[i], NULL);
        hid_t t = !strcmp(dsets[i] + strlen(dsets[i]) - 6, "images") ? type
                  : strstr(dsets[i], "counts") ? H5T_STD_I32LE : H5T_IEEE_F32LE;
        hid_t d = H5Dcreate2(f, dsets[i], t, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Dclose(d);
        H5Sclose(sp);
    }
    H5Pclose(lcpl);
    H5Fclose(f);
}

static void expect_schema_error(const char *name, const char *what) {
    char p[512];
    path_of(p, sizeof p, name);
    sp_scenes_data s;
    sp_error e;
    int rc = sp_scenes_data_open(&s, p, &e);
    CU_ASSERT_EQUAL(rc, SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, p));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, what));
    if (rc != SP_EINPUT || !strstr(e.msg, p) || !strstr(e.msg, what))
        printf("\n  %s: rc %d message '%s', expected to name '%s'\n", name, rc, e.msg, what);
}

static void test_schema_errors(void) {
    const char *names[6] = {"/train/images", "/train/counts", "/train/boxes",
                            "/test/images", "/test/counts", "/test/boxes"};
    int ranks[6] = {3, 1, 3, 3, 1, 3};
    hsize_t dims[6][3] = {{4, 50, 50}, {4}, {4, 2, 4}, {3, 50, 50}, {3}, {3, 2, 4}};
    make_h5("good.h5", names, ranks, (const hsize_t(*)[3])dims, 6, H5T_IEEE_F32LE);
    char p[512];
    path_of(p, sizeof p, "good.h5");
    sp_scenes_data s;
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_data_open(&s, p, &e), SP_OK);
    CU_ASSERT_EQUAL(s.n_train, 4);
    CU_ASSERT_EQUAL(s.n_test, 3);
    sp_scenes_data_close(&s);

    make_h5("missing.h5", names, ranks, (const hsize_t(*)[3])dims, 3, H5T_IEEE_F32LE);
    expect_schema_error("missing.h5", "/test/images");
    make_h5("u8noscale.h5", names, ranks, (const hsize_t(*)[3])dims, 6, H5T_STD_U8LE);
    expect_schema_error("u8noscale.h5", "/train/images");
    hsize_t d2[6][3];
    memcpy(d2, dims, sizeof d2);
    int r2[6];
    memcpy(r2, ranks, sizeof r2);
    r2[0] = 2;
    d2[0][1] = 2500;
    make_h5("rank.h5", names, r2, (const hsize_t(*)[3])d2, 6, H5T_IEEE_F32LE);
    expect_schema_error("rank.h5", "/train/images: rank 2");
    memcpy(d2, dims, sizeof d2);
    d2[3][2] = 40;
    make_h5("dims.h5", names, ranks, (const hsize_t(*)[3])d2, 6, H5T_IEEE_F32LE);
    expect_schema_error("dims.h5", "/test/images: dimension 2 is 40");
    memcpy(d2, dims, sizeof d2);
    d2[1][0] = 5;
    make_h5("rows.h5", names, ranks, (const hsize_t(*)[3])d2, 6, H5T_IEEE_F32LE);
    expect_schema_error("rows.h5", "/train/counts");
    memcpy(d2, dims, sizeof d2);
    d2[5][1] = 3;
    make_h5("maxo.h5", names, ranks, (const hsize_t(*)[3])d2, 6, H5T_IEEE_F32LE);
    expect_schema_error("maxo.h5", "/test/boxes");
    /* not HDF5, and absent */
    path_of(p, sizeof p, "text.h5");
    FILE *f = fopen(p, "w");
    fputs("hello\n", f);
    fclose(f);
    expect_schema_error("text.h5", "not an HDF5 file");
    expect_schema_error("absent.h5", "cannot open");
}

/* String attributes in every HDF5 flavour a user's tool may write (h5py
 * writes variable-length UTF-8; other tools fixed-length UTF-8 or ASCII):
 * each reads back, including non-ASCII bytes. */
static void test_string_attr_flavours(void) {
    char p[512], buf[64];
    path_of(p, sizeof p, "attrs.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    const char *val = "caf\xc3\xa9 fixed";
    struct {
        const char *name;
        int variable;
        H5T_cset_t cset;
    } kinds[4] = {{"fix_ascii", 0, H5T_CSET_ASCII},
                  {"fix_utf8", 0, H5T_CSET_UTF8},
                  {"var_ascii", 1, H5T_CSET_ASCII},
                  {"var_utf8", 1, H5T_CSET_UTF8}};
    for (int k = 0; k < 4; k++) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, kinds[k].variable ? H5T_VARIABLE : strlen(val));
        H5Tset_cset(t, kinds[k].cset);
        hid_t a = H5Acreate2(f, kinds[k].name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        CU_ASSERT_TRUE(a >= 0);
        CU_ASSERT_TRUE(H5Awrite(a, t, kinds[k].variable ? (const void *)&val : val) >= 0);
        H5Aclose(a);
        H5Tclose(t);
    }
    H5Sclose(sp);
    H5Fclose(f);
    sp_dataset *d;
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(sp_dataset_open(&d, p, &e), SP_OK);
    for (int k = 0; k < 4; k++) {
        int rc = sp_dataset_attr_string(d, "/", kinds[k].name, buf, sizeof buf, &e);
        if (rc) printf("\n  %s: %s\n", kinds[k].name, e.msg);
        CU_ASSERT_EQUAL(rc, SP_OK);
        CU_ASSERT_STRING_EQUAL(buf, val);
    }
    sp_dataset_close(d);
}

static int cleanup(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test_dataset.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    make_mnist_dir();
    static const sp_test_case cases[] = {
        {"build, read shuffled rows = generator", test_build_and_read},
        {"sprites file", test_sprites_file},
        {"attached splits read as the file", test_preload},
        {"a block filled in parts equals one filled whole", test_fill_parts},
        {"same seed same bytes; fingerprint", test_fingerprint_and_determinism},
        {"inspect prints schema and histogram", test_inspect},
        {"build errors leave no files", test_build_errors},
        {"schema errors name file and dataset", test_schema_errors},
        {"string attributes: fixed/variable, ASCII/UTF-8", test_string_attr_flavours},
        {NULL, NULL},
    };
    static const sp_test_suite suites[] = {{"dataset", cases}, {NULL, NULL}};
    int rc = sp_test_main(suites);
    cleanup();
    return rc;
}
