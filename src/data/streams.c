/* SRNN speech files for the trainer (see streams.h). */
#include "supair/streams.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dsname(char *out, size_t cap, const char *split, const char *what) {
    snprintf(out, cap, "/%s/%s", split, what);
}

int sp_streams_open(sp_streams_data *s, const char *path, sp_error *err) {
    memset(s, 0, sizeof *s);
    int rc = sp_dataset_open(&s->ds, path, err);
    if (rc) return rc;
    s->path = sp_dataset_path(s->ds);
    s->chunk = 40;
    s->frame = 200;
    long row[2] = {s->chunk, s->frame}, u0row[1] = {s->frame}, dims[3];
    int64_t streams = 0, nb = 0;
    if ((rc = sp_dataset_check(s->ds, "/train/x", 3, row, dims, err)) ||
        (rc = sp_dataset_attr_int64(s->ds, "/train/x", "streams", &streams, err)) ||
        (rc = sp_dataset_attr_int64(s->ds, "/train/x", "n_batches", &nb, err)))
        goto fail;
    if (streams < 1 || nb * streams != dims[0]) {
        rc = sp_fail(err, SP_EINPUT, "%s: /train/x: %ld rows, not n_batches %lld x streams %lld",
                     path, dims[0], (long long)nb, (long long)streams);
        goto fail;
    }
    long u0dims[2];
    if ((rc = sp_dataset_check(s->ds, "/train/u0", 2, u0row, u0dims, err))) goto fail;
    if (u0dims[0] != streams) {
        rc = sp_fail(err, SP_EINPUT, "%s: /train/u0: %ld rows, expected %lld streams", path, u0dims[0],
                     (long long)streams);
        goto fail;
    }
    s->streams = (int)streams;
    return SP_OK;
fail:
    sp_dataset_close(s->ds);
    s->ds = NULL;
    return rc;
}

void sp_streams_close(sp_streams_data *s) {
    if (s->ds) sp_dataset_close(s->ds);
    s->ds = NULL;
}

int64_t sp_streams_batches(sp_streams_data *s, const char *split) {
    char name[64];
    dsname(name, sizeof name, split, "x");
    if (!sp_dataset_has(s->ds, name)) return 0;
    long dims[3];
    long row[2] = {s->chunk, s->frame};
    sp_error e = {0};
    if (sp_dataset_check(s->ds, name, 3, row, dims, &e)) return 0;
    return dims[0] / s->streams;
}

/* The frame before row r of /SPLIT/x: /SPLIT/u0 per row when it has a row
 * per chunk, else per stream for batch 0 and the previous chunk's last
 * frame of the same stream after that. */
static int frame_before(sp_streams_data *s, const char *split, int64_t r, float *u0, sp_error *err) {
    char xname[64], uname[64];
    dsname(xname, sizeof xname, split, "x");
    dsname(uname, sizeof uname, split, "u0");
    long udims[2], urow[1] = {s->frame};
    int has_u0 = sp_dataset_has(s->ds, uname);
    if (has_u0) {
        int rc = sp_dataset_check(s->ds, uname, 2, urow, udims, err);
        if (rc) return rc;
        long xdims[3], xrow[2] = {s->chunk, s->frame};
        if ((rc = sp_dataset_check(s->ds, xname, 3, xrow, xdims, err))) return rc;
        if (udims[0] == xdims[0]) {
            long idx = (long)r;
            return sp_dataset_read_rows(s->ds, uname, &idx, 1, u0, s->frame, err);
        }
    }
    if (r < s->streams) {
        if (!has_u0) return sp_fail(err, SP_EINPUT, "%s: %s missing", s->path, uname);
        long idx = (long)r;
        return sp_dataset_read_rows(s->ds, uname, &idx, 1, u0, s->frame, err);
    }
    /* Last frame of the previous chunk: read that row whole (8000 floats). */
    float *prev = malloc((size_t)s->chunk * (size_t)s->frame * sizeof *prev);
    if (!prev) return sp_fail(err, SP_ERUNTIME, "out of memory");
    long idx = (long)(r - s->streams);
    int rc = sp_dataset_read_rows(s->ds, xname, &idx, 1, prev, (long)s->chunk * s->frame, err);
    if (!rc) memcpy(u0, prev + (size_t)(s->chunk - 1) * (size_t)s->frame, (size_t)s->frame * sizeof *u0);
    free(prev);
    return rc;
}

int sp_streams_read_chunk(sp_streams_data *s, const char *split, int64_t i, int s0, int n, float *x,
                          float *u0, sp_error *err) {
    char name[64];
    dsname(name, sizeof name, split, "x");
    long idx[4096];
    if (n > 4096) return sp_fail(err, SP_EINPUT, "%s: %d streams per rank is more than 4096", s->path, n);
    for (int k = 0; k < n; k++) idx[k] = (long)(i * s->streams + s0 + k);
    int rc = sp_dataset_read_rows(s->ds, name, idx, n, x, (long)s->chunk * s->frame, err);
    for (int k = 0; !rc && u0 && k < n; k++)
        rc = frame_before(s, split, i * s->streams + s0 + k, u0 + (size_t)k * (size_t)s->frame, err);
    return rc;
}

/* Frame range [lo, hi) of utterance k. Offsets are int64 on disk; they are
 * read through the int32 row reader (HDF5 converts), which holds any test
 * split below 2^31 frames (TIMIT's is ~416k); larger or non-monotonic values
 * are rejected rather than silently wrapped. */
static int read_offsets(sp_streams_data *s, const char *split, int64_t k, int64_t *lo, int64_t *hi,
                        sp_error *err) {
    char name[64];
    dsname(name, sizeof name, split, "offsets");
    long idx[2] = {(long)k, (long)k + 1};
    int32_t v[2];
    int rc = sp_dataset_read_rows_i32(s->ds, name, idx, 2, v, 1, err);
    if (rc) return rc;
    if (v[0] < 0 || v[1] <= v[0] || v[1] == INT32_MAX)
        return sp_fail(err, SP_EINPUT, "%s: %s[%lld..%lld] = %d, %d: not increasing offsets", s->path,
                       name, (long long)k, (long long)k + 1, v[0], v[1]);
    *lo = v[0];
    *hi = v[1];
    return SP_OK;
}

int64_t sp_streams_n_seqs(sp_streams_data *s, const char *split) {
    char name[64];
    dsname(name, sizeof name, split, "offsets");
    if (sp_dataset_has(s->ds, name)) {
        long dims[1];
        sp_error e = {0};
        if (sp_dataset_check(s->ds, name, 1, NULL, dims, &e)) return -1;
        return dims[0] - 1;
    }
    dsname(name, sizeof name, split, "x");
    if (!sp_dataset_has(s->ds, name)) return -1;
    long dims[3], row[2] = {s->chunk, s->frame};
    sp_error e = {0};
    if (sp_dataset_check(s->ds, name, 3, row, dims, &e)) return -1;
    return dims[0];
}

int64_t sp_streams_seq_frames(sp_streams_data *s, const char *split, int64_t k) {
    char name[64];
    dsname(name, sizeof name, split, "offsets");
    if (!sp_dataset_has(s->ds, name)) return s->chunk;
    int64_t lo, hi;
    sp_error e = {0};
    if (read_offsets(s, split, k, &lo, &hi, &e)) return -1;
    return hi - lo;
}

int sp_streams_read_seq(sp_streams_data *s, const char *split, int64_t k, float *x, float *u0,
                        int *first_is_input, sp_error *err) {
    char name[64];
    dsname(name, sizeof name, split, "offsets");
    if (sp_dataset_has(s->ds, name)) {
        int64_t lo, hi;
        int rc = read_offsets(s, split, k, &lo, &hi, err);
        if (rc) return rc;
        long *idx = malloc((size_t)(hi - lo) * sizeof *idx);
        if (!idx) return sp_fail(err, SP_ERUNTIME, "out of memory");
        for (int64_t f = lo; f < hi; f++) idx[f - lo] = (long)f;
        dsname(name, sizeof name, split, "frames");
        rc = sp_dataset_read_rows(s->ds, name, idx, (long)(hi - lo), x, s->frame, err);
        free(idx);
        *first_is_input = 1;
        return rc;
    }
    dsname(name, sizeof name, split, "x");
    long idx = (long)k;
    int rc = sp_dataset_read_rows(s->ds, name, &idx, 1, x, (long)s->chunk * s->frame, err);
    *first_is_input = 0;
    return rc ? rc : frame_before(s, split, k, u0, err);
}
