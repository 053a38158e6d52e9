/* Reading training data from HDF5 files: the scenes files (SuPAIR, AIR) and
 * the speech files (SRNN) share one row reader.
 *
 * A rank reads only its slice of each shuffled global batch: a list of row
 * indices, in any order, read with one hyperslab selection over the sorted
 * unique rows (locality, each compressed chunk decompressed once) and then
 * scattered back into the caller's order. Nothing loads a whole split
 * unless asked to (sp_dataset_attach). The handle is not thread-safe
 * (serial HDF5): one reader per thread. */
#ifndef SUPAIR_DATASET_H
#define SUPAIR_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "supair/error.h"

#define SP_DATASET_MAX_RANK 8

typedef struct sp_dataset sp_dataset;

/* Opens PATH read-only. Errors (SP_EINPUT): missing file, not HDF5. */
int sp_dataset_open(sp_dataset **out, const char *path, sp_error *err);
void sp_dataset_close(sp_dataset *d);
const char *sp_dataset_path(const sp_dataset *d);

/* 1 when the dataset NAME (e.g. "/train/images") exists. */
int sp_dataset_has(sp_dataset *d, const char *name);

/* Validates NAME: it exists, is a numeric dataset of rank `rank`, and its
 * dims after the first equal row_shape[0 .. rank-2] (an entry < 0 matches
 * anything). dims_out (rank entries) may be NULL. Errors are SP_EINPUT
 * naming the file and the dataset path ("f.h5: /train/images: rank 2, expected 3"). */
int sp_dataset_check(sp_dataset *d, const char *name, int rank, const long *row_shape,
                     long *dims_out, sp_error *err);

/* Reads rows idx[0..n) (any order, repeats allowed, each in [0, N)) of NAME
 * into out (n, row_len) as float: integer data is converted and multiplied by
 * the dataset's `scale` attribute when it has one (uint8 scenes, k/255 exactly
 * as 255 divides). row_len must equal the product of the row dims. */
int sp_dataset_read_rows(sp_dataset *d, const char *name, const long *idx, long n, float *out,
                         long row_len, sp_error *err);
/* The same into int32 (counts, labels); no scale applied. */
int sp_dataset_read_rows_i32(sp_dataset *d, const char *name, const long *idx, long n,
                             int32_t *out, long row_len, sp_error *err);
/* The same into int64 (e.g. the speech files' /test/offsets). */
int sp_dataset_read_rows_i64(sp_dataset *d, const char *name, const long *idx, long n,
                             int64_t *out, long row_len, sp_error *err);

/* In-memory copies: a scenes file stores each image as its own compressed
 * chunk, and 128 random rows cost ~3 ms of HDF5 per step. The bytes a copy
 * of NAME takes, in the type the readers above ask for (uint8 scenes stay
 * uint8): */
int sp_dataset_preload_bytes(sp_dataset *d, const char *name, size_t *bytes, sp_error *err);
/* Uses buf (that many bytes, owned by the caller, alive while d is open) as
 * NAME's copy: later row reads copy from it. fill: read it from the file
 * first (fill = 0: another process sharing buf has filled it). */
int sp_dataset_attach(sp_dataset *d, const char *name, void *buf, int fill, sp_error *err);
/* Reads rows [r0, r1) of NAME into their place in such a copy (buf is the
 * start of the whole copy), so that several processes can fill one shared
 * copy side by side before each attaches it with fill = 0. */
int sp_dataset_fill_rows(sp_dataset *d, const char *name, void *buf, long r0, long r1,
                         sp_error *err);

/* Attributes of an object ("/" for the root). Numeric attributes convert to
 * the requested type; a missing attribute is SP_EINPUT naming it. */
int sp_dataset_attr_string(sp_dataset *d, const char *obj, const char *name, char *out,
                           size_t cap, sp_error *err);
int sp_dataset_attr_double(sp_dataset *d, const char *obj, const char *name, double *out,
                           sp_error *err);
int sp_dataset_attr_int64(sp_dataset *d, const char *obj, const char *name, int64_t *out,
                          sp_error *err);

/* A cheap content fingerprint the trainer compares across ranks (different
 * files under one path, a half-copied file): a 64-bit hash of the root
 * attributes, and of each dataset's name, type, shape and first and last
 * rows. Independent of the file's path and timestamps. */
int sp_dataset_fingerprint(sp_dataset *d, uint64_t *out, sp_error *err);

/* `supair_data inspect`: prints the root attributes, every dataset with type,
 * shape, storage and attributes, and for each group holding `counts` the
 * histogram of counts. */
int sp_dataset_inspect(const char *path, FILE *out, sp_error *err);

/* ---- scenes files ---- */

typedef struct sp_scenes_data {
    sp_dataset *ds;
    long n_train, n_test;
    long n_valid;    /* -1 when the file has no /valid (it is optional) */
    int max_objects; /* second dim of /SPLIT/boxes */
} sp_scenes_data;

/* Opens and validates a scenes file: /train and /test each with images
 * (N,50,50) float32 or integer + `scale`, counts (N), boxes (N,MAX,4), the
 * same MAX in both splits. */
int sp_scenes_data_open(sp_scenes_data *s, const char *path, sp_error *err);
void sp_scenes_data_close(sp_scenes_data *s);
/* Rows of split "train", "test" or "valid" (-1 for another name, or for
 * "valid" when the file has none). */
long sp_scenes_data_size(const sp_scenes_data *s, const char *split);
/* A split's counts, boxes and images in one caller-owned block (e.g.
 * node-shared memory): its size (0 for a split the file lacks), then attach
 * (fill as sp_dataset_attach). */
int sp_scenes_data_preload_bytes(sp_scenes_data *s, const char *split, size_t *bytes,
                                 sp_error *err);
int sp_scenes_data_attach(sp_scenes_data *s, const char *split, void *block, int fill,
                          sp_error *err);
/* Fills part `part` of `parts` (rows split evenly) of a split's block: the
 * ranks of a node each decompress their share, then all attach with
 * fill = 0. */
int sp_scenes_data_fill_part(sp_scenes_data *s, const char *split, void *block, int part,
                             int parts, sp_error *err);
/* images (n,50,50) in [0,1]; counts (n); boxes (n,MAX,4); counts or boxes
 * may be NULL. */
int sp_scenes_data_read(sp_scenes_data *s, const char *split, const long *idx, long n,
                        float *images, int32_t *counts, float *boxes, sp_error *err);

#endif
