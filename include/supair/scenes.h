/* Scene data for SuPAIR and AIR: the multi-object generator (SuPAIR's
 * multi-MNIST recipe over any IDX item set), sprites, noise variants, and the
 * HDF5 file the trainer reads (schema in DESIGN.md and data/README.md).
 *
 * Every scene is a pure function of (seed, split, index): its random draws
 * come from the counter RNG stream (seed, split, index, site). Scenes can then
 * be made in parallel, in any order, and a scene does not depend on how many
 * scenes the file holds; the same command writes the same file byte for byte. */
#ifndef SUPAIR_SCENES_H
#define SUPAIR_SCENES_H

#include <signal.h>
#include <stdint.h>

#include "supair/error.h"

#define SP_SCENE_SIZE 50           /* canvas side in pixels */
#define SP_SCENE_PIXELS (SP_SCENE_SIZE * SP_SCENE_SIZE)
#define SP_SCENES_GENERATOR_VERSION 1
#define SP_SCENES_MAX_OBJECTS 9    /* objects kind; sprites allow at most 4 */
#define SP_SPRITES_MAX_OBJECTS 4
#define SP_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef enum { SP_SCENES_OBJECTS = 0, SP_SCENES_SPRITES = 1 } sp_scene_kind;
typedef enum { SP_NOISE_NONE = 0, SP_NOISE_GAUSS = 1, SP_NOISE_GRID = 2 } sp_scene_noise;
enum { SP_SPLIT_TRAIN = 0, SP_SPLIT_TEST = 1 };

/* Sprite shapes; each has its own colour (as in the reference generator)
 * and hence its own grey level: circle red 1.0, square green 0.8, diamond
 * blue 0.7. */
enum { SP_SPRITE_CIRCLE = 0, SP_SPRITE_SQUARE = 1, SP_SPRITE_DIAMOND = 2 };

/* The items objects are drawn from: one split of an IDX set. Not owned. */
typedef struct sp_scene_pool {
    const uint8_t *items;  /* (n, side, side) */
    const uint8_t *labels; /* (n), or NULL */
    long n;
    int side;
} sp_scene_pool;

typedef struct sp_scene_spec {
    sp_scene_kind kind;
    sp_scene_noise noise;
    int max_objects; /* count ~ U{0..max_objects} */
    uint64_t seed;
} sp_scene_spec;

/* Scene `index` of `split`: image (50, 50) in [0,1]; *count; boxes
 * (max_objects, 4) [x, y, w, h] in pixels (x = column of the top-left
 * corner), rows past the count zero; labels (max_objects): the item's label
 * (objects; -1 when the pool has none) or the sprite shape, -1 past the
 * count. boxes and labels may be NULL. pool is unused for sprites. Fails
 * only if no valid layout is found within a generous number of redraws. */
int sp_scene_make(float *image, int32_t *count, float *boxes, int32_t *labels,
                  const sp_scene_spec *spec, const sp_scene_pool *pool, int split, long index,
                  sp_error *err);

/* Scenes [start, start + n) into (n, 50, 50), (n), (n, max_objects, 4),
 * (n, max_objects), made in parallel with OpenMP. */
int sp_scenes_make_range(float *images, int32_t *counts, float *boxes, int32_t *labels,
                         const sp_scene_spec *spec, const sp_scene_pool *pool, int split,
                         long start, long n, sp_error *err);

/* Bilinear resize of a square grey image, as PIL's BILINEAR filter does it
 * (the reference used scipy.misc.imresize): a triangle filter whose support
 * widens with the shrink factor (antialiasing), separable, horizontal pass
 * first, each pass rounded to 8 bits. out is (out_side, out_side). */
void sp_resize_bilinear_u8(uint8_t *out, int out_side, const uint8_t *in, int in_side);

/* True when the stored pixels are exactly k/255 (objects without Gaussian
 * noise): the file then stores uint8 with attribute scale = 1/255, a quarter
 * of the float32 size; otherwise float32. */
int sp_scenes_stores_uint8(const sp_scene_spec *spec);

typedef struct sp_scenes_opts {
    const char *out;    /* FILE.h5 */
    const char *source; /* "fashion-mnist" or "mnist-idx:DIR" (objects only) */
    sp_scene_spec spec;
    long n_train, n_test; /* < 0: the kind's default (60000/10000 objects, 40000/10000 sprites) */
    long n_valid;         /* > 0: also /valid, the training stream's next n_valid scenes */
    /* Optional progress report, called from the calling thread after each
     * block of scenes is written. */
    void (*progress)(void *ctx, const char *split, long done, long total);
    void *progress_ctx;
    /* Optional: when *stop becomes nonzero (a signal handler), the build
     * stops at the next block, removes its temporary file and returns
     * SP_ESTOPPED. */
    volatile sig_atomic_t *stop;
} sp_scenes_opts;

/* Defaults: fashion-mnist, objects, no noise, 2 objects, seed 0, kind's sizes. */
void sp_scenes_opts_default(sp_scenes_opts *o);

/* Loads the source, makes both splits and writes o->out atomically (to
 * OUT.tmp.PID, then rename): a failure or a stop never leaves a partial OUT.
 * Errors name the file at fault (IDX file, unwritable output path). */
int sp_scenes_build(const sp_scenes_opts *o, sp_error *err);

/* Names used in flags and in the file's root attributes. */
const char *sp_scene_kind_name(sp_scene_kind k);
const char *sp_scene_noise_name(sp_scene_noise n);
int sp_scene_kind_parse(sp_scene_kind *out, const char *s);   /* 0 ok, -1 unknown */
int sp_scene_noise_parse(sp_scene_noise *out, const char *s); /* 0 ok, -1 unknown */

#endif
