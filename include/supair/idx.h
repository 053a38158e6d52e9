/* IDX files (the MNIST / Fashion-MNIST container), plain or gzipped.
 *
 * An IDX file is a big-endian header (magic 0x00000803 for 3-D unsigned-byte
 * images, 0x00000801 for 1-D unsigned-byte labels, then one int32 per
 * dimension) followed by the raw bytes. zlib's gzopen reads plain and gzipped
 * files alike, so callers never care which one they got. Every failure is an
 * SP_EINPUT error whose one-line message starts with the file's path. */
#ifndef SUPAIR_IDX_H
#define SUPAIR_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "supair/error.h"

#define SP_IDX_MAGIC_IMAGES 0x00000803u
#define SP_IDX_MAGIC_LABELS 0x00000801u

typedef struct sp_idx_images {
    long n;        /* number of images */
    int rows, cols;
    uint8_t *data; /* (n, rows, cols), owned */
} sp_idx_images;

typedef struct sp_idx_labels {
    long n;
    uint8_t *data; /* (n), owned */
} sp_idx_labels;

/* Reads a whole images file. Errors: cannot open, wrong magic, zero or absurd
 * dimensions, truncated data, gzip corruption. *out is zeroed on failure. */
int sp_idx_read_images(sp_idx_images *out, const char *path, sp_error *err);
int sp_idx_read_labels(sp_idx_labels *out, const char *path, sp_error *err);
void sp_idx_images_free(sp_idx_images *im);
void sp_idx_labels_free(sp_idx_labels *lb);

/* Reads an images file and its labels file and checks that the counts agree
 * (the message then names both files). */
int sp_idx_read_pair(sp_idx_images *images, sp_idx_labels *labels, const char *images_path,
                     const char *labels_path, sp_error *err);

/* Finds DIR/STEM or DIR/STEM.gz (in that order) and writes the path found to
 * out. Errors: DIR missing or not a directory, neither file present. */
int sp_idx_find(char *out, size_t cap, const char *dir, const char *stem, sp_error *err);

#endif
