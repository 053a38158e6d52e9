/* Scene generator (multi-object items, sprites, noise) and the scenes HDF5
 * writer, see scenes.h. The generator follows SuPAIR's multi-MNIST and sprite
 * code (stelzner/supair, src/datasets.py) draw for draw in meaning, with the
 * counter RNG in place of numpy's global state. */
#include "supair/scenes.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "supair/idx.h"
#include "supair/rng.h"

/* RNG sites within a scene's stream (seed, split, index, site). The noise has
 * its own stream so it does not depend on how many layouts were redrawn. */
#define SITE_LAYOUT 1u
#define SITE_NOISE 2u

/* A redraw happens when objects overlap too much; with <= 9 items of ~21 px
 * on a 50 px canvas, 100k attempts is never reached in practice. */
#define MAX_ATTEMPTS 100000

/* Scenes per generated and written block: bounds memory (41 MB of floats)
 * and sets how often progress and the stop flag are looked at. */
#define BLOCK 4096
/* Rows per HDF5 chunk of /SPLIT/images. One row per chunk: a shuffled batch
 * then decompresses only the rows it reads. Measured on the 60k Fashion
 * file, batch 256: 8.7 ms CPU per batch at 1 row/chunk, 16-28 ms at 4-16
 * rows; the file is 21% larger (30.9 vs 25.4 MB). */
#define IMG_CHUNK_ROWS 1
#define DEFLATE_LEVEL 4

/* ---- random helpers ---- */

/* Uniform integer in [0, n) without modulo bias (Lemire's method). */
static uint32_t rand_below(sp_rng *r, uint32_t n) {
    uint64_t m = (uint64_t)sp_rng_u32(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (low < t) {
            m = (uint64_t)sp_rng_u32(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* ---- resize (PIL BILINEAR semantics) ---- */

#define RS_MAX_SIDE 256
#define RS_MAX_TAPS 64

/* Per output pixel: first input pixel, number of taps, normalised weights. */
static int resize_coeffs(int in, int out, int *first, int *taps, double *w) {
    double scale = (double)in / out;
    double fscale = scale > 1.0 ? scale : 1.0;
    double support = fscale; /* triangle filter has support 1 */
    int kmax = (int)ceil(support) * 2 + 1;
    if (kmax > RS_MAX_TAPS) return -1;
    for (int o = 0; o < out; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        double total = 0;
        for (int j = lo; j < hi; j++) {
            double x = (j - center + 0.5) / fscale;
            double t = fabs(x) < 1.0 ? 1.0 - fabs(x) : 0.0;
            w[o * kmax + (j - lo)] = t;
            total += t;
        }
        for (int j = lo; j < hi; j++) w[o * kmax + (j - lo)] /= total > 0 ? total : 1.0;
        first[o] = lo;
        taps[o] = hi - lo;
    }
    return kmax;
}

static uint8_t round_u8(double v) {
    if (v <= 0) return 0;
    if (v >= 255) return 255;
    return (uint8_t)(v + 0.5);
}

void sp_resize_bilinear_u8(uint8_t *out, int out_side, const uint8_t *in, int in_side) {
    int first[RS_MAX_SIDE], taps[RS_MAX_SIDE];
    double w[RS_MAX_SIDE * RS_MAX_TAPS];
    uint8_t tmp[RS_MAX_SIDE * RS_MAX_SIDE]; /* (in_side, out_side) after the horizontal pass */
    if (out_side < 1 || in_side < 1 || out_side > RS_MAX_SIDE || in_side > RS_MAX_SIDE) return;
    int k = resize_coeffs(in_side, out_side, first, taps, w);
    if (k < 0) return;
    for (int r = 0; r < in_side; r++)
        for (int o = 0; o < out_side; o++) {
            double s = 0;
            for (int t = 0; t < taps[o]; t++) s += w[o * k + t] * in[r * in_side + first[o] + t];
            tmp[r * out_side + o] = round_u8(s);
        }
    for (int o = 0; o < out_side; o++)
        for (int c = 0; c < out_side; c++) {
            double s = 0;
            for (int t = 0; t < taps[o]; t++) s += w[o * k + t] * tmp[(first[o] + t) * out_side + c];
            out[o * out_side + c] = round_u8(s);
        }
}

/* ---- one scene ---- */

static int make_objects(float *image, int32_t *count_out, float *boxes, int32_t *labels,
                        const sp_scene_spec *spec, const sp_scene_pool *pool, int split,
                        long index, sp_error *err) {
    if (!pool || !pool->items || pool->n < 1 || pool->side < 1 || pool->side > RS_MAX_SIDE)
        return sp_fail(err, SP_EINPUT, "scene generator: no items to draw objects from");
    sp_rng r;
    sp_rng_init(&r, spec->seed, (uint32_t)split, (uint32_t)index, SITE_LAYOUT);
    int count = (int)rand_below(&r, (uint32_t)spec->max_objects + 1);
    uint16_t canvas[SP_SCENE_PIXELS];
    uint8_t item[(SP_SCENE_SIZE - 1) * (SP_SCENE_SIZE - 1)];
    for (int attempt = 0;; attempt++) {
        if (attempt == MAX_ATTEMPTS)
            return sp_fail(err, SP_ERUNTIME,
                           "scene %ld: no layout of %d objects without pixels > 255 in %d draws",
                           index, count, MAX_ATTEMPTS);
        memset(canvas, 0, sizeof canvas);
        int over = 0;
        for (int k = 0; k < count; k++) {
            long which = (long)rand_below(&r, (uint32_t)pool->n);
            int w;
            for (;;) { /* floor(side / scale) must fit the canvas with a free pixel */
                double scale = 1.3 + 0.1 * (double)sp_rng_normal(&r);
                w = scale > 0 ? (int)floor(pool->side / scale) : 0;
                if (w >= 1 && w <= SP_SCENE_SIZE - 1) break;
            }
            sp_resize_bilinear_u8(item, w, pool->items + which * pool->side * pool->side,
                                  pool->side);
            /* top-left row and column ~ U{0 .. 50-w-1}, as np.random.randint(0, 50-w) */
            int row = (int)rand_below(&r, (uint32_t)(SP_SCENE_SIZE - w));
            int col = (int)rand_below(&r, (uint32_t)(SP_SCENE_SIZE - w));
            for (int y = 0; y < w; y++)
                for (int x = 0; x < w; x++) {
                    uint16_t v = canvas[(row + y) * SP_SCENE_SIZE + col + x] + item[y * w + x];
                    canvas[(row + y) * SP_SCENE_SIZE + col + x] = v;
                    over |= v > 255;
                }
            if (boxes) {
                boxes[4 * k + 0] = (float)col;
                boxes[4 * k + 1] = (float)row;
                boxes[4 * k + 2] = (float)w;
                boxes[4 * k + 3] = (float)w;
            }
            if (labels) labels[k] = pool->labels ? pool->labels[which] : -1;
        }
        if (!over) break;
    }
    for (int i = 0; i < SP_SCENE_PIXELS; i++) image[i] = (float)canvas[i] / 255.0f;
    *count_out = count;
    return SP_OK;
}

static int make_sprites(float *image, int32_t *count_out, float *boxes, int32_t *labels,
                        const sp_scene_spec *spec, int split, long index, sp_error *err) {
    static const float grey[3] = {1.0f, 0.8f, 0.7f}; /* r*1.0, g*0.8, b*0.7 */
    sp_rng r;
    sp_rng_init(&r, spec->seed, (uint32_t)split, (uint32_t)index, SITE_LAYOUT);
    int count = (int)rand_below(&r, (uint32_t)spec->max_objects + 1);
    for (int i = 0; i < SP_SCENE_PIXELS; i++) image[i] = 0.0f;
    for (int k = 0; k < count; k++) {
        for (int attempt = 0;; attempt++) {
            if (attempt == MAX_ATTEMPTS)
                return sp_fail(err, SP_ERUNTIME, "scene %ld: cannot place sprite %d of %d", index,
                               k + 1, count);
            int pr = (int)rand_below(&r, 39), pc = (int)rand_below(&r, 39);
            int smax = 16;
            if (SP_SCENE_SIZE - pr < smax) smax = SP_SCENE_SIZE - pr;
            if (SP_SCENE_SIZE - pc < smax) smax = SP_SCENE_SIZE - pc;
            int size = 12 + (int)rand_below(&r, (uint32_t)(smax - 12 + 1));
            int shape = (int)rand_below(&r, 3);
            int h = size / 2, cr = pr + h, cc = pc + h;
            /* The shape lies inside its bounding square; test, then draw. */
            int pass, clash = 0;
            for (pass = 0; pass < 2 && !clash; pass++)
                for (int y = pr; y < pr + size; y++)
                    for (int x = pc; x < pc + size; x++) {
                        int dy = y - cr, dx = x - cc, in;
                        if (shape == SP_SPRITE_CIRCLE) in = dy * dy + dx * dx < h * h;
                        else if (shape == SP_SPRITE_SQUARE) in = 1;
                        else in = abs(dy) + abs(dx) < h;
                        if (!in) continue;
                        float *p = &image[y * SP_SCENE_SIZE + x];
                        if (pass == 0) clash |= *p != 0.0f;
                        else *p = grey[shape] > 1.0f ? 1.0f : grey[shape];
                    }
            if (clash) continue;
            if (boxes) {
                boxes[4 * k + 0] = (float)pc;
                boxes[4 * k + 1] = (float)pr;
                boxes[4 * k + 2] = (float)size;
                boxes[4 * k + 3] = (float)size;
            }
            if (labels) labels[k] = shape;
            break;
        }
    }
    *count_out = count;
    return SP_OK;
}

static void add_noise(float *image, const sp_scene_spec *spec, int split, long index) {
    if (spec->noise == SP_NOISE_NONE) return;
    sp_rng r;
    sp_rng_init(&r, spec->seed, (uint32_t)split, (uint32_t)index, SITE_NOISE);
    if (spec->noise == SP_NOISE_GAUSS) {
        for (int i = 0; i < SP_SCENE_PIXELS; i++) {
            float v = 0.8f * image[i] + 0.1f + 0.2f * sp_rng_normal(&r);
            image[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
    } else {
        int off_col = (int)rand_below(&r, 5), off_row = (int)rand_below(&r, 5);
        const float line = 102.0f / 255.0f; /* 0.4, written so it is exactly k/255 */
        for (int y = off_row; y < SP_SCENE_SIZE; y += 5)
            for (int x = 0; x < SP_SCENE_SIZE; x++)
                if (image[y * SP_SCENE_SIZE + x] < line) image[y * SP_SCENE_SIZE + x] = line;
        for (int x = off_col; x < SP_SCENE_SIZE; x += 5)
            for (int y = 0; y < SP_SCENE_SIZE; y++)
                if (image[y * SP_SCENE_SIZE + x] < line) image[y * SP_SCENE_SIZE + x] = line;
    }
}

int sp_scene_make(float *image, int32_t *count, float *boxes, int32_t *labels,
                  const sp_scene_spec *spec, const sp_scene_pool *pool, int split, long index,
                  sp_error *err) {
    if (spec->max_objects < 1 || spec->max_objects > SP_SCENES_MAX_OBJECTS ||
        (spec->kind == SP_SCENES_SPRITES && spec->max_objects > SP_SPRITES_MAX_OBJECTS))
        return sp_fail(err, SP_EINPUT, "max_objects %d out of range", spec->max_objects);
    if (boxes) memset(boxes, 0, sizeof(float) * 4 * spec->max_objects);
    if (labels)
        for (int k = 0; k < spec->max_objects; k++) labels[k] = -1;
    int rc = spec->kind == SP_SCENES_SPRITES
                 ? make_sprites(image, count, boxes, labels, spec, split, index, err)
                 : make_objects(image, count, boxes, labels, spec, pool, split, index, err);
    if (rc) return rc;
    add_noise(image, spec, split, index);
    return SP_OK;
}

int sp_scenes_make_range(float *images, int32_t *counts, float *boxes, int32_t *labels,
                         const sp_scene_spec *spec, const sp_scene_pool *pool, int split,
                         long start, long n, sp_error *err) {
    int status = SP_OK;
    sp_error first;
    sp_error_clear(&first);
    long first_at = -1;
    const int m = spec->max_objects;
#pragma omp parallel for schedule(dynamic, 64)
    for (long i = 0; i < n; i++) {
        sp_error e;
        int rc = sp_scene_make(images + i * SP_SCENE_PIXELS, counts + i,
                               boxes ? boxes + i * m * 4 : NULL, labels ? labels + i * m : NULL,
                               spec, pool, split, start + i, &e);
        if (rc) {
#pragma omp critical(sp_scenes_err)
            if (first_at < 0 || i < first_at) { /* report the lowest index: deterministic */
                first_at = i;
                status = rc;
                first = e;
            }
        }
    }
    if (status) {
        if (err) *err = first;
        return status;
    }
    return SP_OK;
}

int sp_scenes_stores_uint8(const sp_scene_spec *spec) {
    return spec->kind == SP_SCENES_OBJECTS && spec->noise != SP_NOISE_GAUSS;
}

/* ---- names ---- */

static const char *kind_names[] = {"objects", "sprites"};
static const char *noise_names[] = {"none", "gauss", "grid"};

const char *sp_scene_kind_name(sp_scene_kind k) {
    return (unsigned)k < 2 ? kind_names[k] : "?";
}
const char *sp_scene_noise_name(sp_scene_noise n) {
    return (unsigned)n < 3 ? noise_names[n] : "?";
}
int sp_scene_kind_parse(sp_scene_kind *out, const char *s) {
    for (int i = 0; i < 2; i++)
        if (!strcmp(s, kind_names[i])) return *out = (sp_scene_kind)i, 0;
    return -1;
}
int sp_scene_noise_parse(sp_scene_noise *out, const char *s) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, noise_names[i])) return *out = (sp_scene_noise)i, 0;
    return -1;
}

void sp_scenes_opts_default(sp_scenes_opts *o) {
    memset(o, 0, sizeof *o);
    o->source = "fashion-mnist";
    o->spec.kind = SP_SCENES_OBJECTS;
    o->spec.noise = SP_NOISE_NONE;
    o->spec.max_objects = 2;
    o->spec.seed = 0;
    o->n_train = -1;
    o->n_test = -1;
    o->n_valid = 0;
}

/* ---- source ---- */

typedef struct source_data {
    sp_idx_images images[2];
    sp_idx_labels labels[2];
} source_data;

static void source_free(source_data *s) {
    for (int i = 0; i < 2; i++) {
        sp_idx_images_free(&s->images[i]);
        sp_idx_labels_free(&s->labels[i]);
    }
}

static int source_load(source_data *s, const char *source, sp_error *err) {
    memset(s, 0, sizeof *s);
    const char *dir;
    if (!strcmp(source, "fashion-mnist")) dir = SP_FASHION_MNIST_DIR;
    else if (!strncmp(source, "mnist-idx:", 10) && source[10]) dir = source + 10;
    else
        return sp_fail(err, SP_EINPUT,
                       "--source '%s': expected fashion-mnist or mnist-idx:DIR", source);
    static const char *prefix[2] = {"train", "t10k"};
    for (int i = 0; i < 2; i++) {
        char ip[4096], lp[4096], stem[64];
        snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", prefix[i]);
        int rc = sp_idx_find(ip, sizeof ip, dir, stem, err);
        if (!rc) {
            snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", prefix[i]);
            rc = sp_idx_find(lp, sizeof lp, dir, stem, err);
        }
        if (!rc) rc = sp_idx_read_pair(&s->images[i], &s->labels[i], ip, lp, err);
        if (!rc && s->images[i].rows != s->images[i].cols)
            rc = sp_fail(err, SP_EINPUT, "%s: items are %dx%d, expected square items", ip,
                         s->images[i].rows, s->images[i].cols);
        if (!rc && s->images[i].rows >= SP_SCENE_SIZE)
            rc = sp_fail(err, SP_EINPUT, "%s: items of %d px do not fit a %d px canvas", ip,
                         s->images[i].rows, SP_SCENE_SIZE);
        if (rc) {
            source_free(s);
            return rc;
        }
    }
    return SP_OK;
}

/* ---- HDF5 writing ---- */

/* Creation properties without timestamps, so equal content gives equal bytes. */
static hid_t no_times_gcpl(void) {
    hid_t p = H5Pcreate(H5P_GROUP_CREATE);
    if (p >= 0) H5Pset_obj_track_times(p, 0);
    return p;
}

static int attr_write(hid_t obj, const char *name, hid_t mem_type, hid_t file_type,
                      const void *value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, mem_type, value) : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return st < 0 ? -1 : 0;
}

static int attr_string(hid_t obj, const char *name, const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = attr_write(obj, name, t, t, &value);
    H5Tclose(t);
    return rc;
}

/* (N, d1, d2) dataset; images are chunked and compressed, the small per-row
 * arrays stay contiguous (random rows then cost one seek each). */
static hid_t create_dataset(hid_t group, const char *name, hid_t file_type, int rank,
                            const hsize_t *dims, int compress) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    if (compress && dims[0] > 0) {
        hsize_t chunk[3] = {dims[0] < IMG_CHUNK_ROWS ? dims[0] : IMG_CHUNK_ROWS, dims[1], dims[2]};
        H5Pset_chunk(dcpl, rank, chunk);
        if (H5Tget_size(file_type) > 1) H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, DEFLATE_LEVEL);
    }
    hid_t d = H5Dcreate2(group, name, file_type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

static int write_rows(hid_t d, hid_t mem_type, int rank, const hsize_t *dims, long start,
                      long n, const void *buf) {
    hsize_t off[3] = {(hsize_t)start, 0, 0}, cnt[3] = {(hsize_t)n, 0, 0};
    for (int i = 1; i < rank; i++) cnt[i] = dims[i];
    hid_t fs = H5Dget_space(d);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t st = H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (st >= 0) st = H5Dwrite(d, mem_type, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return st < 0 ? -1 : 0;
}

typedef struct block_buf {
    float *images;
    uint8_t *bytes;
    int32_t *counts, *labels;
    float *boxes;
    uint8_t *zbuf; /* (BLOCK, zbound) compressed rows */
    size_t zbound;
    size_t *zlen;
} block_buf;

_Static_assert(IMG_CHUNK_ROWS == 1, "write_chunks stores one row per chunk");

/* Writes rows [start, start+nb) of a one-row-per-chunk dataset with HDF5's
 * shuffle (for elem > 1) and deflate filters applied by us, in parallel, then
 * stored with H5Dwrite_chunk: single-threaded compression inside H5Dwrite
 * was the largest serial cost of a build. The chunks are the same bytes
 * whatever the thread count, and read back through the standard filters. */
static int write_chunks(hid_t d, long start, long nb, const uint8_t *raw, size_t row_bytes,
                        size_t elem, block_buf *b) {
    int bad = 0;
#pragma omp parallel reduction(| : bad)
    {
        /* One deflate state per thread, reset per row: compress2 would set
         * up and free ~270 KB of zlib state for every 2.5 KB row, and the
         * allocator hands that memory back to the kernel each time (half
         * the build's time went to brk/madvise and page clearing). The
         * output is the same as compress2's (same level, window, memLevel). */
        z_stream z;
        memset(&z, 0, sizeof z);
        int ok = deflateInit(&z, DEFLATE_LEVEL) == Z_OK;
        bad |= !ok;
        uint8_t shuf[SP_SCENE_PIXELS * sizeof(float)];
#pragma omp for schedule(static)
        for (long i = 0; i < nb; i++) {
            if (!ok) continue;
            const uint8_t *src = raw + i * row_bytes;
            if (elem > 1) { /* HDF5's shuffle filter: byte j of every element together */
                size_t ne = row_bytes / elem;
                for (size_t j = 0; j < elem; j++)
                    for (size_t k = 0; k < ne; k++) shuf[j * ne + k] = src[k * elem + j];
                src = shuf;
            }
            deflateReset(&z);
            z.next_in = (Bytef *)src;
            z.avail_in = (uInt)row_bytes;
            z.next_out = b->zbuf + i * b->zbound;
            z.avail_out = (uInt)b->zbound;
            bad |= deflate(&z, Z_FINISH) != Z_STREAM_END;
            b->zlen[i] = z.total_out;
        }
        if (ok) deflateEnd(&z);
    }
    for (long i = 0; i < nb && !bad; i++) {
        hsize_t off[3] = {(hsize_t)(start + i), 0, 0};
        bad |= H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, b->zlen[i], b->zbuf + i * b->zbound) < 0;
    }
    return bad ? -1 : 0;
}

/* Writes scenes first .. first+n-1 of RNG split `split` as group
 * /split_name (the validation split continues the training stream). */
static int write_split(hid_t file, const char *split_name, int split, long first, long n,
                       const sp_scene_spec *spec, const sp_scene_pool *pool, block_buf *b,
                       const sp_scenes_opts *o, const char *tmp, sp_error *err) {
    const int m = spec->max_objects;
    const int as_u8 = sp_scenes_stores_uint8(spec);
    hid_t gcpl = no_times_gcpl();
    hid_t g = H5Gcreate2(file, split_name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (g < 0) return sp_fail(err, SP_ERUNTIME, "%s: cannot create group /%s", tmp, split_name);
    hsize_t dim_img[3] = {(hsize_t)n, SP_SCENE_SIZE, SP_SCENE_SIZE};
    hsize_t dim_cnt[1] = {(hsize_t)n};
    hsize_t dim_box[3] = {(hsize_t)n, (hsize_t)m, 4};
    hsize_t dim_lab[2] = {(hsize_t)n, (hsize_t)m};
    hid_t di = create_dataset(g, "images", as_u8 ? H5T_STD_U8LE : H5T_IEEE_F32LE, 3, dim_img, 1);
    hid_t dc = create_dataset(g, "counts", H5T_STD_I32LE, 1, dim_cnt, 0);
    hid_t db = create_dataset(g, "boxes", H5T_IEEE_F32LE, 3, dim_box, 0);
    hid_t dl = create_dataset(g, "labels", H5T_STD_I32LE, 2, dim_lab, 0);
    int rc = SP_OK;
    if (di < 0 || dc < 0 || db < 0 || dl < 0)
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create the datasets of /%s", tmp, split_name);
    if (!rc && as_u8) {
        double scale = 1.0 / 255.0;
        if (attr_write(di, "scale", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, &scale))
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write /%s/images scale", tmp, split_name);
    }
    for (long start = 0; !rc && start < n; start += BLOCK) {
        if (o->stop && *o->stop) {
            rc = sp_fail(err, SP_ESTOPPED, "%s: interrupted; nothing written", o->out);
            break;
        }
        long nb = n - start < BLOCK ? n - start : BLOCK;
        rc = sp_scenes_make_range(b->images, b->counts, b->boxes, b->labels, spec, pool, split,
                                  first + start, nb, err);
        if (rc) break;
        const uint8_t *img = (const uint8_t *)b->images;
        if (as_u8) {
            /* Exact: every pixel is k/255 (sp_scenes_stores_uint8). */
#pragma omp parallel for schedule(static)
            for (long i = 0; i < nb * SP_SCENE_PIXELS; i++)
                b->bytes[i] = (uint8_t)(b->images[i] * 255.0f + 0.5f);
            img = b->bytes;
        }
        if (write_chunks(di, start, nb, img, as_u8 ? SP_SCENE_PIXELS : SP_SCENE_PIXELS * 4,
                         as_u8 ? 1 : sizeof(float), b) ||
            write_rows(dc, H5T_NATIVE_INT32, 1, dim_cnt, start, nb, b->counts) ||
            write_rows(db, H5T_NATIVE_FLOAT, 3, dim_box, start, nb, b->boxes) ||
            write_rows(dl, H5T_NATIVE_INT32, 2, dim_lab, start, nb, b->labels)) {
            rc = sp_fail(err, SP_ERUNTIME, "%s: write error in /%s (disk full?)", tmp,
                         split_name);
            break;
        }
        if (o->progress) o->progress(o->progress_ctx, split_name, start + nb, n);
    }
    if (di >= 0) H5Dclose(di);
    if (dc >= 0) H5Dclose(dc);
    if (db >= 0) H5Dclose(db);
    if (dl >= 0) H5Dclose(dl);
    H5Gclose(g);
    return rc;
}

static int write_root_attrs(hid_t file, const sp_scenes_opts *o, const char *source) {
    int32_t version = SP_SCENES_GENERATOR_VERSION, maxo = o->spec.max_objects;
    int32_t canvas = SP_SCENE_SIZE;
    uint64_t seed = o->spec.seed;
    int bad = 0;
    bad |= attr_string(file, "kind", sp_scene_kind_name(o->spec.kind));
    bad |= attr_string(file, "source", source);
    bad |= attr_write(file, "seed", H5T_NATIVE_UINT64, H5T_STD_U64LE, &seed);
    bad |= attr_string(file, "noise", sp_scene_noise_name(o->spec.noise));
    bad |= attr_write(file, "generator_version", H5T_NATIVE_INT32, H5T_STD_I32LE, &version);
    bad |= attr_write(file, "max_objects", H5T_NATIVE_INT32, H5T_STD_I32LE, &maxo);
    bad |= attr_write(file, "canvas", H5T_NATIVE_INT32, H5T_STD_I32LE, &canvas);
    return bad ? -1 : 0;
}

int sp_scenes_build(const sp_scenes_opts *o, sp_error *err) {
    const sp_scene_spec *spec = &o->spec;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported through err, not printed */
    if (!o->out || !*o->out) return sp_fail(err, SP_EINPUT, "--out FILE.h5 is required");
    if (spec->max_objects < 1 || spec->max_objects > SP_SCENES_MAX_OBJECTS)
        return sp_fail(err, SP_EINPUT, "--max-objects %d: expected 1..%d", spec->max_objects,
                       SP_SCENES_MAX_OBJECTS);
    if (spec->kind == SP_SCENES_SPRITES && spec->max_objects > SP_SPRITES_MAX_OBJECTS)
        return sp_fail(err, SP_EINPUT, "--max-objects %d: sprites allow at most %d",
                       spec->max_objects, SP_SPRITES_MAX_OBJECTS);
    struct stat st;
    if (stat(o->out, &st) == 0 && S_ISDIR(st.st_mode))
        return sp_fail(err, SP_EINPUT, "%s: is a directory", o->out);
    int sprites = spec->kind == SP_SCENES_SPRITES;
    long n[2] = {o->n_train >= 0 ? o->n_train : sprites ? 40000 : 60000,
                 o->n_test >= 0 ? o->n_test : 10000};

    source_data src;
    memset(&src, 0, sizeof src);
    const char *source = sprites ? "sprites" : o->source ? o->source : "fashion-mnist";
    if (!sprites) {
        int rc = source_load(&src, source, err);
        if (rc) return rc;
    }

    /* The temporary file sits beside OUT so the final rename is atomic. Try
     * it with open() first: that gives the real reason (EACCES, ENOENT) for
     * an unwritable path, which HDF5's error stack does not. */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", o->out, (long)getpid()) >= (int)sizeof tmp) {
        source_free(&src);
        return sp_fail(err, SP_EINPUT, "%s: path too long", o->out);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        source_free(&src);
        return sp_fail(err, SP_EINPUT, "%s: cannot write: %s", o->out, strerror(e));
    }
    close(fd);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (file < 0) {
        unlink(tmp);
        source_free(&src);
        return sp_fail(err, SP_EINPUT, "%s: cannot create HDF5 file", o->out);
    }

    block_buf b;
    long blk = BLOCK;
    b.images = malloc(sizeof(float) * blk * SP_SCENE_PIXELS);
    b.bytes = malloc((size_t)blk * SP_SCENE_PIXELS);
    b.counts = malloc(sizeof(int32_t) * blk);
    b.boxes = malloc(sizeof(float) * blk * spec->max_objects * 4);
    b.labels = malloc(sizeof(int32_t) * blk * spec->max_objects);
    b.zbound = compressBound(SP_SCENE_PIXELS * sizeof(float));
    b.zbuf = malloc(b.zbound * blk);
    b.zlen = malloc(sizeof(size_t) * blk);
    int rc = SP_OK;
    if (!b.images || !b.bytes || !b.counts || !b.boxes || !b.labels || !b.zbuf || !b.zlen)
        rc = sp_fail(err, SP_ERUNTIME, "out of memory for a block of %ld scenes", blk);
    if (!rc && write_root_attrs(file, o, source))
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write root attributes", tmp);
    static const char *names[2] = {"train", "test"};
    for (int s = 0; s < 2 && !rc; s++) {
        sp_scene_pool pool = {0};
        if (!sprites)
            pool = (sp_scene_pool){src.images[s].data, src.labels[s].data, src.images[s].n,
                                   src.images[s].rows};
        rc = write_split(file, names[s], s, 0, n[s], spec, &pool, &b, o, tmp, err);
        /* Validation scenes are carved from the training stream: scenes
         * n_train .. n_train+n_valid-1 of split 0, made from the training
         * items, so model selection never looks at the test split. */
        if (!rc && s == 0 && o->n_valid > 0)
            rc = write_split(file, "valid", 0, n[0], o->n_valid, spec, &pool, &b, o, tmp, err);
    }
    free(b.images);
    free(b.bytes);
    free(b.counts);
    free(b.boxes);
    free(b.labels);
    free(b.zbuf);
    free(b.zlen);
    source_free(&src);
    if (H5Fclose(file) < 0 && !rc)
        rc = sp_fail(err, SP_ERUNTIME, "%s: error closing (disk full?)", tmp);
    if (!rc) {
        /* Data on disk before the name points at it. */
        int f = open(tmp, O_RDONLY);
        if (f >= 0) {
            fsync(f);
            close(f);
        }
        if (rename(tmp, o->out) != 0)
            rc = sp_fail(err, SP_EINPUT, "%s: cannot rename from %s: %s", o->out, tmp,
                         strerror(errno));
    }
    if (rc) unlink(tmp);
    return rc;
}
