/* TIMIT and Blizzard converters, HDF5 speech writer and the speech CLI (see
 * speech.h for the file layout).
 *
 * Memory stays bounded whatever the corpus size: a corpus is a list of files
 * with their exact 16 kHz lengths (probed without decoding), read through
 * cursors over the virtual concatenation. Statistics take one decoding pass,
 * writing another, with one cursor per stream so each batch is written as
 * one contiguous block of rows. Streams decode on OpenMP threads; partial
 * statistics merge in stream order, so the bytes do not depend on the
 * thread count. */
#include "supair/speech.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supair/audio.h"
#include "supair/rng.h"
#include "supair/timer.h"

#define FRAME SP_SPEECH_FRAME
#define ROW SP_SPEECH_ROW
/* Rows per HDF5 chunk of x: 256 KB; a rank's slice of a batch (>= 8 streams
 * at 64 streams and 8 ranks) touches whole chunks. */
#define X_CHUNK_ROWS 8
#define FRAMES_CHUNK_ROWS 1024
#define STAT_BLOCK 65536

/* ---- corpus: files and their lengths ---- */

typedef struct sfile {
    char *rel;     /* path relative to the root */
    long long len; /* samples at 16 kHz */
} sfile;

typedef struct flist {
    sfile *v;
    long n, cap;
} flist;

static void flist_free(flist *l) {
    for (long i = 0; i < l->n; i++) free(l->v[i].rel);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int flist_push(flist *l, const char *rel, long long len) {
    if (l->n == l->cap) {
        long cap = l->cap ? 2 * l->cap : 64;
        sfile *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].rel = strdup(rel);
    if (!l->v[l->n].rel) return -1;
    l->v[l->n].len = len;
    l->n++;
    return 0;
}

/* Case-insensitive first, so TIMIT copies in upper or lower case give the
 * same order (and the same validation split); bytes break ties. */
static int relcmp(const char *a, const char *b) {
    int c = strcasecmp(a, b);
    return c ? c : strcmp(a, b);
}

static int sfile_cmp(const void *a, const void *b) {
    return relcmp(((const sfile *)a)->rel, ((const sfile *)b)->rel);
}

static int has_ext(const char *name, const char *ext) {
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcasecmp(name + n - e, ext) == 0;
}

static const char *const audio_exts[] = {".wav", ".flac", ".mp3", ".sph", ".nist", ".ogg", ".opus",
                                         ".aif", ".aiff", ".au",  ".w64", ".caf",  NULL};

static int is_audio_name(const char *name) {
    for (int i = 0; audio_exts[i]; i++)
        if (has_ext(name, audio_exts[i])) return 1;
    return 0;
}

static int path_join(char *out, size_t cap, const char *a, const char *b) {
    int n = *a ? snprintf(out, cap, "%s/%s", a, b) : snprintf(out, cap, "%s", b);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

typedef struct walk_ctx {
    const char *root;
    int wav_only; /* TIMIT: *.WAV only */
    flist *out;
    long skipped; /* files that are not audio by name */
    sp_error *err;
} walk_ctx;

/* Collects the audio files under root/rel recursively (names only; the
 * lengths come from probing later). Hidden entries are skipped. */
static int walk(walk_ctx *w, const char *rel) {
    char dir[4096];
    if (path_join(dir, sizeof dir, w->root, rel))
        return sp_fail(w->err, SP_EINPUT, "%s/%s: path too long", w->root, rel);
    DIR *d = opendir(dir);
    if (!d)
        return sp_fail(w->err, SP_EINPUT, "%s: cannot read directory: %s", dir, strerror(errno));
    int rc = SP_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[4096], full[4096];
        if (path_join(sub, sizeof sub, rel, e->d_name) ||
            path_join(full, sizeof full, w->root, sub)) {
            rc = sp_fail(w->err, SP_EINPUT, "%s/%s: path too long", dir, e->d_name);
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0) {
            rc = sp_fail(w->err, SP_EINPUT, "%s: %s", full, strerror(errno));
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            rc = walk(w, sub);
        } else if (S_ISREG(st.st_mode)) {
            int take = w->wav_only ? has_ext(e->d_name, ".wav") : is_audio_name(e->d_name);
            if (take && w->wav_only) {
                /* Some TIMIT copies add converted "X.WAV.wav" beside the SPHERE
                 * "X.WAV": keep one of the pair. */
                size_t n = strlen(full);
                char twin[4096];
                memcpy(twin, full, n - 4);
                twin[n - 4] = '\0';
                if (has_ext(twin, ".wav") && access(twin, R_OK) == 0) take = 0;
            }
            if (take) {
                if (flist_push(w->out, sub, -1))
                    rc = sp_fail(w->err, SP_ERUNTIME, "out of memory listing %s", dir);
            } else {
                w->skipped++;
            }
        }
    }
    closedir(d);
    return rc;
}

/* Fills each file's 16 kHz length, checking it is readable audio. */
static int probe_all(const char *root, flist *l, int mix, long long *total, long base, long all,
                     const char *phase, sp_speech_progress_fn progress, void *pctx,
                     volatile sig_atomic_t *stop, sp_error *err) {
    long long t = 0;
    for (long i = 0; i < l->n; i++) {
        if (stop && *stop) return sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
        char full[4096];
        if (path_join(full, sizeof full, root, l->v[i].rel))
            return sp_fail(err, SP_EINPUT, "%s/%s: path too long", root, l->v[i].rel);
        sp_audio_info info;
        int rc = sp_audio_probe(full, mix, &info, err);
        if (rc) return rc;
        l->v[i].len = info.length;
        t += info.length;
        if (progress && ((base + i + 1) % 256 == 0 || base + i + 1 == all))
            progress(pctx, phase, base + i + 1, all);
    }
    if (total) *total = t;
    return SP_OK;
}

/* ---- cursor over the concatenation of a file list ---- */

typedef struct corpus {
    const char *root;
    const sfile *files;
    long n;
    long long *start; /* (n+1) prefix sums of the lengths */
    int mix;
} corpus;

static int corpus_init(corpus *c, const char *root, const flist *l, int mix) {
    c->root = root;
    c->files = l->v;
    c->n = l->n;
    c->mix = mix;
    c->start = malloc((size_t)(l->n + 1) * sizeof *c->start);
    if (!c->start) return -1;
    c->start[0] = 0;
    for (long i = 0; i < l->n; i++) c->start[i + 1] = c->start[i] + l->v[i].len;
    return 0;
}

static long long corpus_len(const corpus *c) { return c->start[c->n]; }

typedef struct cursor {
    const corpus *c;
    long k; /* file index of the open reader */
    sp_audio_reader *r;
    long long pos; /* absolute sample position */
} cursor;

static void cursor_close(cursor *cu) {
    sp_audio_close(cu->r);
    cu->r = NULL;
}

static int cursor_open_file(cursor *cu, long k, long long skip, sp_error *err) {
    cursor_close(cu);
    char full[4096];
    if (path_join(full, sizeof full, cu->c->root, cu->c->files[k].rel))
        return sp_fail(err, SP_EINPUT, "%s/%s: path too long", cu->c->root, cu->c->files[k].rel);
    int rc = sp_audio_open(&cu->r, full, cu->c->mix, err);
    if (rc) return rc;
    if (sp_audio_reader_info(cu->r)->length != cu->c->files[k].len)
        return sp_fail(err, SP_EINPUT, "%s: changed while being converted", full);
    cu->k = k;
    return skip ? sp_audio_skip(cu->r, skip, err) : SP_OK;
}

/* Positions the cursor at absolute sample p (p < corpus length). */
static int cursor_seek(cursor *cu, const corpus *c, long long p, sp_error *err) {
    cu->c = c;
    long lo = 0, hi = c->n - 1;
    while (lo < hi) { /* last file with start <= p and a nonzero length */
        long mid = (lo + hi + 1) / 2;
        if (c->start[mid] <= p)
            lo = mid;
        else
            hi = mid - 1;
    }
    while (lo < c->n - 1 && c->start[lo + 1] <= p) lo++;
    cu->pos = p;
    return cursor_open_file(cu, lo, p - c->start[lo], err);
}

/* Reads exactly n samples (the caller stays within the corpus). */
static int cursor_read(cursor *cu, float *out, long n, sp_error *err) {
    long done = 0;
    while (done < n) {
        long got = 0;
        int rc = sp_audio_read(cu->r, out + done, n - done, &got, err);
        if (rc) return rc;
        done += got;
        cu->pos += got;
        if (got == 0) {
            if (cu->k + 1 >= cu->c->n)
                return sp_fail(err, SP_ERUNTIME, "internal: read past the corpus end");
            rc = cursor_open_file(cu, cu->k + 1, 0, err);
            if (rc) return rc;
        }
    }
    return SP_OK;
}

/* ---- exact statistics: Welford within blocks, Chan's merge across ---- */

typedef struct stats {
    double n, mean, m2;
} stats;

static void stats_add(stats *s, const float *x, long n) {
    if (n <= 0) return;
    double sum = 0;
    for (long i = 0; i < n; i++) sum += x[i];
    double bm = sum / n, m2 = 0;
    for (long i = 0; i < n; i++) {
        double d = x[i] - bm;
        m2 += d * d;
    }
    double tot = s->n + n, delta = bm - s->mean;
    s->mean += delta * n / tot;
    s->m2 += m2 + delta * delta * s->n * n / tot;
    s->n = tot;
}

/* Accumulates the samples [p, p+len) of the corpus. */
static int stats_range(stats *s, const corpus *c, long long p, long long len, float *buf,
                       const char *phase, long long *done, long long total,
                       sp_speech_progress_fn progress, void *pctx, volatile sig_atomic_t *stop,
                       sp_error *err) {
    if (len <= 0) return SP_OK;
    cursor cu = {0};
    int rc = cursor_seek(&cu, c, p, err);
    while (!rc && len > 0) {
        if (stop && *stop) {
            rc = sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
            break;
        }
        long n = len < STAT_BLOCK ? (long)len : STAT_BLOCK;
        rc = cursor_read(&cu, buf, n, err);
        if (rc) break;
        stats_add(s, buf, n);
        len -= n;
        *done += n;
        if (progress) progress(pctx, phase, *done, total);
    }
    cursor_close(&cu);
    return rc;
}

/* Chan et al.'s merge of two partial results. */
static void stats_merge(stats *s, const stats *b) {
    if (b->n <= 0) return;
    double tot = s->n + b->n, delta = b->mean - s->mean;
    s->mean += delta * b->n / tot;
    s->m2 += b->m2 + delta * delta * s->n * b->n / tot;
    s->n = tot;
}

static void normalise(float *x, long n, double mean, double std) {
    for (long i = 0; i < n; i++) x[i] = (float)(((double)x[i] - mean) / std);
}

/* ---- HDF5 output ---- */

typedef struct h5out {
    char tmp[4096];
    const char *out;
    hid_t file;
} h5out;

static int h5_open(h5out *h, const char *out, sp_error *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h->out = out;
    h->file = -1;
    if (snprintf(h->tmp, sizeof h->tmp, "%s.tmp.%ld", out, (long)getpid()) >= (int)sizeof h->tmp)
        return sp_fail(err, SP_EINPUT, "%s: path too long", out);
    /* Check the directory is writable before the long passes run. */
    int fd = open(h->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return sp_fail(err, SP_EINPUT, "%s: cannot create: %s", h->tmp, strerror(errno));
    close(fd);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_obj_track_times(fcpl, 0);
    h->file = H5Fcreate(h->tmp, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
    H5Pclose(fapl);
    if (h->file < 0) {
        unlink(h->tmp);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot create the HDF5 file", h->tmp);
    }
    return SP_OK;
}

/* Closes; on success fsyncs and renames over OUT, else removes the temp. */
static int h5_finish(h5out *h, int rc, sp_error *err) {
    if (h->file >= 0) {
        if (H5Fclose(h->file) < 0 && !rc)
            rc = sp_fail(err, SP_ERUNTIME, "%s: error closing (disk full?)", h->tmp);
        h->file = -1;
    }
    if (!rc) {
        int fd = open(h->tmp, O_RDONLY);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        if (rename(h->tmp, h->out) != 0)
            rc = sp_fail(err, SP_EINPUT, "%s: cannot rename from %s: %s", h->out, h->tmp,
                         strerror(errno));
    }
    if (rc) unlink(h->tmp);
    return rc;
}

static int attr_write(hid_t obj, const char *name, hid_t type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return e < 0 ? -1 : 0;
}

static int attr_i64(hid_t obj, const char *name, long long v) {
    int64_t x = v;
    return attr_write(obj, name, H5T_NATIVE_INT64, &x);
}

static int attr_f64(hid_t obj, const char *name, double v) {
    return attr_write(obj, name, H5T_NATIVE_DOUBLE, &v);
}

static int attr_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) > 0 ? strlen(s) : 1);
    /* ASCII like the other data files' attributes (readers convert to ASCII
     * memory types; HDF5 has no UTF-8 -> ASCII conversion path). */
    H5Tset_cset(t, H5T_CSET_ASCII);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    char one[2] = {0, 0};
    int r = attr_write(obj, name, t, strlen(s) ? s : one);
    H5Tclose(t);
    return r;
}

/* Groups and datasets carry no modification times: the same input gives
 * the same file bytes. */
static hid_t group_create(hid_t loc, const char *name) {
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_obj_track_times(gcpl, 0);
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    return g;
}

static hid_t plain_dcpl(void) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    return dcpl;
}

/* A float32 dataset (dims[0], row...) chunked by chunk_rows rows. */
static hid_t dset_create(hid_t loc, const char *name, int rank, const hsize_t *dims,
                         hsize_t chunk_rows) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = plain_dcpl();
    hsize_t chunk[3] = {chunk_rows < dims[0] ? chunk_rows : dims[0], rank > 1 ? dims[1] : 0,
                        rank > 2 ? dims[2] : 0};
    if (chunk[0] < 1) chunk[0] = 1;
    if (dims[0] > 0) H5Pset_chunk(dcpl, rank, chunk);
    hid_t d = H5Dcreate2(loc, name, H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* Writes rows [r0, r0+n) of a float dataset whose rows hold row_len values. */
static int dset_write_rows(hid_t d, hsize_t r0, hsize_t n, const float *buf) {
    if (n == 0) return 0;
    hid_t fs = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[3], start[3] = {r0, 0, 0}, count[3];
    H5Sget_simple_extent_dims(fs, dims, NULL);
    count[0] = n;
    for (int i = 1; i < rank; i++) count[i] = dims[i];
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    herr_t e = H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return e < 0 ? -1 : 0;
}

static int write_i64(hid_t loc, const char *name, const long long *v, long n) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t dcpl = plain_dcpl();
    hid_t d = H5Dcreate2(loc, name, H5T_STD_I64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    herr_t e = d < 0 ? -1 : n ? H5Dwrite(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return e < 0 ? -1 : 0;
}

/* A 1-D variable-length UTF-8 string dataset of the files' relative paths. */
static int write_names(hid_t loc, const char *name, const sfile *f, long n) {
    const char **v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return -1;
    for (long i = 0; i < n; i++) v[i] = f[i].rel;
    hsize_t dims[1] = {(hsize_t)n};
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t dcpl = plain_dcpl();
    hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    herr_t e = d < 0 ? -1 : n ? H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    free(v);
    return e < 0 ? -1 : 0;
}

static int write_root_attrs(hid_t f, const char *corpus, const char *layout, const char *root,
                            double mean, double std, int streams, int mix) {
    int e = 0;
    e |= attr_str(f, "corpus", corpus);
    e |= attr_str(f, "layout", layout);
    e |= attr_str(f, "source", root);
    e |= attr_i64(f, "sample_rate", SP_AUDIO_RATE);
    e |= attr_i64(f, "frame", FRAME);
    e |= attr_i64(f, "chunk_frames", SP_SPEECH_CHUNK_FRAMES);
    e |= attr_f64(f, "mean", mean);
    e |= attr_f64(f, "std", std);
    e |= attr_i64(f, "streams", streams);
    e |= attr_i64(f, "mix", mix);
    e |= attr_str(f, "pcm_scale", "1/32768");
    e |= attr_str(f, "resampler", SP_AUDIO_RESAMPLER_NAME);
    e |= attr_str(f, "x_order", "batch-major: row i*streams+j = chunk i of stream j");
    e |= attr_str(f, "generator_version", SP_SPEECH_VERSION);
    return e;
}

/* The lowest-numbered stream's error (deterministic whatever the threads). */
static int first_error(const int *rcs, const sp_error *errs, int n, sp_error *err) {
    for (int j = 0; j < n; j++)
        if (rcs[j]) {
            if (err) *err = errs[j];
            return rcs[j];
        }
    return SP_OK;
}

/* ---- streams writer ----
 * Stream j of a split starts at sample start[j] of its corpus; batch b holds
 * row b of every stream. Batches [0, n_batch) are visited in order; batch b
 * goes to target tg[k] when tg[k].b0 <= b < tg[k].b1, at row
 * (b - tg[k].b0) * streams. A target's u0 gets the frame before each
 * stream's row of its first batch (per_row_u0: before every row). */

typedef struct stream_target {
    long long b0, b1;
    hid_t x, u0;
    int per_row_u0;
    const char *phase;
} stream_target;

static int write_streams(const corpus *c, int S, const long long *start, long long n_batch,
                         stream_target *tg, int ntg, double mean, double std,
                         sp_speech_progress_fn progress, void *pctx, volatile sig_atomic_t *stop,
                         const char *tmp, sp_error *err) {
    cursor *cu = calloc((size_t)S, sizeof *cu);
    float *rows = malloc((size_t)S * ROW * sizeof *rows);
    float *prev = malloc((size_t)S * FRAME * sizeof *prev); /* raw frame before the next row */
    float *prevn = malloc((size_t)S * FRAME * sizeof *prevn);
    int rc = SP_OK;
    if (!cu || !rows || !prev || !prevn) rc = sp_fail(err, SP_ERUNTIME, "out of memory");
    int *rcs = calloc((size_t)S, sizeof *rcs);
    sp_error *errs = calloc((size_t)S, sizeof *errs);
    if (!rc && (!rcs || !errs)) rc = sp_fail(err, SP_ERUNTIME, "out of memory");
    /* Streams decode independently (own files, decoder and resampler), so
     * they run on OpenMP threads; the file is the same for any thread count. */
    if (!rc) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int j = 0; j < S; j++) {
            long long p = start[j] - FRAME;
            if (p >= 0) {
                rcs[j] = cursor_seek(&cu[j], c, p, &errs[j]);
                if (!rcs[j])
                    rcs[j] = cursor_read(&cu[j], prev + (size_t)j * FRAME, FRAME, &errs[j]);
            } else {
                /* Nothing precedes the corpus start: u_1 is silence. */
                memset(prev + (size_t)j * FRAME, 0, FRAME * sizeof *prev);
                rcs[j] = cursor_seek(&cu[j], c, start[j], &errs[j]);
            }
        }
        rc = first_error(rcs, errs, S, err);
    }
    for (long long b = 0; !rc && b < n_batch; b++) {
        if (stop && *stop) {
            rc = sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
            break;
        }
        stream_target *t = NULL;
        for (int k = 0; k < ntg; k++)
            if (b >= tg[k].b0 && b < tg[k].b1) t = &tg[k];
#pragma omp parallel for schedule(dynamic, 1)
        for (int j = 0; j < S; j++)
            rcs[j] = cursor_read(&cu[j], rows + (size_t)j * ROW, ROW, &errs[j]);
        rc = first_error(rcs, errs, S, err);
        if (rc) break;
        if (t) {
            memcpy(prevn, prev, (size_t)S * FRAME * sizeof *prev);
            normalise(prevn, (long)S * FRAME, mean, std);
            hsize_t r0 = (hsize_t)(b - t->b0) * S;
            if (t->per_row_u0) {
                if (dset_write_rows(t->u0, r0, S, prevn) < 0)
                    rc = sp_fail(err, SP_ERUNTIME, "%s: write error (disk full?)", tmp);
            } else if (b == t->b0 && dset_write_rows(t->u0, 0, S, prevn) < 0) {
                rc = sp_fail(err, SP_ERUNTIME, "%s: write error (disk full?)", tmp);
            }
        }
        for (int j = 0; j < S; j++)
            memcpy(prev + (size_t)j * FRAME, rows + (size_t)j * ROW + ROW - FRAME,
                   FRAME * sizeof *prev);
        if (t && !rc) {
            normalise(rows, (long)S * ROW, mean, std);
            if (dset_write_rows(t->x, (hsize_t)(b - t->b0) * S, S, rows) < 0)
                rc = sp_fail(err, SP_ERUNTIME, "%s: write error (disk full?)", tmp);
            if (progress) progress(pctx, t->phase, (b - t->b0 + 1) * S, (t->b1 - t->b0) * S);
        }
    }
    if (cu)
        for (int j = 0; j < S; j++) cursor_close(&cu[j]);
    free(cu);
    free(rows);
    free(prev);
    free(prevn);
    free(rcs);
    free(errs);
    return rc;
}

static hid_t make_x(hid_t g, long long rows, int S, long long n_batches) {
    hsize_t dims[3] = {(hsize_t)rows, SP_SPEECH_CHUNK_FRAMES, FRAME};
    hid_t d = dset_create(g, "x", 3, dims, X_CHUNK_ROWS);
    if (d >= 0 && (attr_i64(d, "streams", S) || attr_i64(d, "n_batches", n_batches))) {
        H5Dclose(d);
        return -1;
    }
    return d;
}

static hid_t make_u0(hid_t g, long long rows) {
    hsize_t dims[2] = {(hsize_t)rows, FRAME};
    return dset_create(g, "u0", 2, dims, FRAMES_CHUNK_ROWS);
}

/* ---- TIMIT ---- */

void sp_timit_opts_default(sp_timit_opts *o) {
    memset(o, 0, sizeof *o);
    o->streams = 64;
    o->corpus = "timit";
}

/* round(0.05 n) with halves up (231 of 4620); at least one file when there
 * are two or more, so that tiny corpora still get a validation split. */
long sp_timit_valid_count(long n) {
    long v = (n + 10) / 20;
    return v < 1 && n >= 2 ? 1 : v;
}

void sp_timit_pick_valid(long n, uint64_t seed, unsigned char *valid) {
    if (n <= 0) return;
    long *perm = malloc((size_t)n * sizeof *perm);
    memset(valid, 0, (size_t)n);
    if (!perm) return;
    for (long i = 0; i < n; i++) perm[i] = i;
    sp_rng r;
    sp_rng_init(&r, seed, SP_SPEECH_SITE_VALID, 0, 0);
    for (long i = n - 1; i > 0; i--) {
        /* Uniform in [0, i] by rejection (no modulo bias). */
        uint32_t bound = (uint32_t)(i + 1), lim = UINT32_MAX - UINT32_MAX % bound, u;
        do u = sp_rng_u32(&r);
        while (u >= lim);
        long j = (long)(u % bound);
        long t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    long nv = sp_timit_valid_count(n);
    for (long i = 0; i < nv; i++) valid[perm[i]] = 1;
    free(perm);
}

/* Finds root/NAME in any letter case. */
static int find_subdir(const char *root, const char *name, char *out, size_t cap) {
    DIR *d = opendir(root);
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while ((e = readdir(d))) {
        if (strcasecmp(e->d_name, name)) continue;
        char full[4096];
        struct stat st;
        if (path_join(full, sizeof full, root, e->d_name) || stat(full, &st) ||
            !S_ISDIR(st.st_mode))
            continue;
        snprintf(out, cap, "%s", e->d_name);
        found = 0;
        break;
    }
    closedir(d);
    return found;
}

/* Reads a list file: root-relative paths, one a line; blank lines and lines
 * starting with '#' ignored. Marks each in `mark` (index into train). */
static int read_list(const char *path, const flist *train, unsigned char *mark, sp_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return sp_fail(err, SP_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    char line[4096];
    long lineno = 0;
    int rc = SP_OK;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        while (n && isspace((unsigned char)line[n - 1])) line[--n] = '\0';
        char *s = line;
        while (*s && isspace((unsigned char)*s)) s++;
        while (s[0] == '.' && s[1] == '/') s += 2;
        if (!*s || *s == '#') continue;
        long lo = 0, hi = train->n - 1, hit = -1;
        while (lo <= hi) { /* train is sorted by strcasecmp first */
            long mid = (lo + hi) / 2;
            int c = strcasecmp(s, train->v[mid].rel);
            if (c == 0) {
                hit = mid;
                break;
            }
            if (c < 0)
                hi = mid - 1;
            else
                lo = mid + 1;
        }
        if (hit < 0)
            rc = sp_fail(err, SP_EINPUT, "%s:%ld: '%s' is not a TRAIN file under the root", path,
                         lineno, s);
        else if (mark[hit])
            rc = sp_fail(err, SP_EINPUT, "%s:%ld: '%s' listed twice", path, lineno, s);
        else
            mark[hit] = 1;
    }
    fclose(f);
    return rc;
}

/* Stream starts for a split of L samples: x = frames[1:], stream j starts at
 * chunk j*nb. Returns nb (0 when the split cannot fill one batch). */
static long long timit_plan(long long L, int S, long long *start) {
    long long F = L / FRAME;
    long long chunks = F > 0 ? (F - 1) / SP_SPEECH_CHUNK_FRAMES : 0;
    long long nb = chunks / S;
    for (int j = 0; j < S; j++) start[j] = FRAME + (long long)j * nb * ROW;
    return nb;
}

static int write_files_attr(hid_t g, const flist *l, long long samples) {
    return write_names(g, "files", l->v, l->n) | attr_i64(g, "samples", samples) |
           attr_i64(g, "n_files", l->n);
}

static int timit_stream_split(hid_t file, const char *name, const char *root, const flist *l,
                              const sp_timit_opts *o, double mean, double std, long long *rows_out,
                              long long *nb_out, const char *tmp, sp_error *err) {
    int S = o->streams;
    corpus c;
    long long *start = malloc((size_t)S * sizeof *start);
    if (!start || corpus_init(&c, root, l, o->mix)) {
        free(start);
        return sp_fail(err, SP_ERUNTIME, "out of memory");
    }
    long long L = corpus_len(&c);
    long long nb = timit_plan(L, S, start);
    int rc = SP_OK;
    if (nb < 1) {
        rc = sp_fail(err, SP_EINPUT,
                     "%s: the %s split has %ld files, %.1f s of audio: fewer than %d chunks of "
                     "40 frames (lower --streams or give it more files)",
                     root, name, l->n, L / (double)SP_AUDIO_RATE, S);
    }
    hid_t g = -1, x = -1, u0 = -1;
    if (!rc) {
        g = group_create(file, name);
        x = g < 0 ? -1 : make_x(g, nb * S, S, nb);
        u0 = g < 0 ? -1 : make_u0(g, S);
        if (x < 0 || u0 < 0 || write_files_attr(g, l, L) || attr_i64(g, "streams", S) ||
            attr_i64(g, "n_batches", nb))
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create /%s", tmp, name);
    }
    if (!rc) {
        stream_target t = {0, nb, x, u0, 0, name};
        rc = write_streams(&c, S, start, nb, &t, 1, mean, std, o->progress, o->progress_ctx,
                           o->stop, tmp, err);
    }
    if (u0 >= 0) H5Dclose(u0);
    if (x >= 0) H5Dclose(x);
    if (g >= 0) H5Gclose(g);
    free(c.start);
    free(start);
    *rows_out = nb * S;
    *nb_out = nb;
    return rc;
}

static int timit_test_split(hid_t file, const char *root, const flist *l, const sp_timit_opts *o,
                            double mean, double std, long long *frames_out, const char *tmp,
                            sp_error *err) {
    long long *off = malloc((size_t)(l->n + 1) * sizeof *off);
    float *buf = malloc((size_t)FRAMES_CHUNK_ROWS * FRAME * sizeof *buf);
    corpus c;
    if (!off || !buf || corpus_init(&c, root, l, o->mix)) {
        free(off);
        free(buf);
        return sp_fail(err, SP_ERUNTIME, "out of memory");
    }
    off[0] = 0;
    for (long i = 0; i < l->n; i++) off[i + 1] = off[i] + l->v[i].len / FRAME;
    long long F = off[l->n];
    int rc = SP_OK;
    hid_t g = group_create(file, "test");
    hsize_t dims[2] = {(hsize_t)F, FRAME};
    hid_t d = g < 0 ? -1 : dset_create(g, "frames", 2, dims, FRAMES_CHUNK_ROWS);
    if (d < 0 || write_i64(g, "offsets", off, l->n + 1) || write_files_attr(g, l, corpus_len(&c)))
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create /test", tmp);
    for (long i = 0; !rc && i < l->n; i++) {
        if (o->stop && *o->stop) {
            rc = sp_fail(err, SP_ESTOPPED, "interrupted; no file written");
            break;
        }
        cursor cu = {0};
        rc = cursor_seek(&cu, &c, c.start[i], err);
        for (long long f = off[i]; !rc && f < off[i + 1]; f += FRAMES_CHUNK_ROWS) {
            long long nf = off[i + 1] - f < FRAMES_CHUNK_ROWS ? off[i + 1] - f : FRAMES_CHUNK_ROWS;
            rc = cursor_read(&cu, buf, (long)(nf * FRAME), err);
            if (rc) break;
            normalise(buf, (long)(nf * FRAME), mean, std);
            if (dset_write_rows(d, (hsize_t)f, (hsize_t)nf, buf) < 0)
                rc = sp_fail(err, SP_ERUNTIME, "%s: write error (disk full?)", tmp);
        }
        cursor_close(&cu);
        if (o->progress) o->progress(o->progress_ctx, "test", i + 1, l->n);
    }
    if (d >= 0) H5Dclose(d);
    if (g >= 0) H5Gclose(g);
    free(c.start);
    free(off);
    free(buf);
    *frames_out = F;
    return rc;
}

int sp_timit_build(const sp_timit_opts *o, sp_speech_summary *sum, sp_error *err) {
    sp_speech_summary local;
    if (!sum) sum = &local;
    memset(sum, 0, sizeof *sum);
    if (!o->root || !o->out) return sp_fail(err, SP_EINPUT, "timit: --root and --out are required");
    if (o->streams < 1)
        return sp_fail(err, SP_EINPUT, "timit: streams %d must be >= 1", o->streams);
    struct stat st;
    if (stat(o->root, &st) != 0 || !S_ISDIR(st.st_mode))
        return sp_fail(err, SP_EINPUT, "%s: not a directory", o->root);
    char trn[256], tst[256];
    if (find_subdir(o->root, "TRAIN", trn, sizeof trn) ||
        find_subdir(o->root, "TEST", tst, sizeof tst))
        return sp_fail(err, SP_EINPUT,
                       "%s: not a TIMIT root (no TRAIN and TEST directories; expected "
                       "TRAIN|TEST/DRn/SPEAKER/*.WAV)",
                       o->root);
    flist all_train = {0}, test = {0}, train = {0}, valid = {0};
    unsigned char *mark_v = NULL, *mark_t = NULL;
    h5out h = {.file = -1};
    int rc = SP_OK, opened = 0;
    walk_ctx w = {o->root, 1, &all_train, 0, err};
    rc = walk(&w, trn);
    if (!rc) {
        w.out = &test;
        rc = walk(&w, tst);
    }
    if (!rc && all_train.n == 0)
        rc = sp_fail(err, SP_EINPUT, "%s/%s: no *.WAV files", o->root, trn);
    if (!rc && test.n == 0) rc = sp_fail(err, SP_EINPUT, "%s/%s: no *.WAV files", o->root, tst);
    if (rc) goto done;
    qsort(all_train.v, (size_t)all_train.n, sizeof *all_train.v, sfile_cmp);
    qsort(test.v, (size_t)test.n, sizeof *test.v, sfile_cmp);

    /* The validation split. */
    mark_v = calloc((size_t)all_train.n, 1);
    mark_t = calloc((size_t)all_train.n, 1);
    if (!mark_v || !mark_t) {
        rc = sp_fail(err, SP_ERUNTIME, "out of memory");
        goto done;
    }
    if (o->valid_list) rc = read_list(o->valid_list, &all_train, mark_v, err);
    if (!rc && o->train_list) rc = read_list(o->train_list, &all_train, mark_t, err);
    if (rc) goto done;
    if (!o->valid_list && !o->train_list) {
        sp_timit_pick_valid(all_train.n, o->seed, mark_v);
        for (long i = 0; i < all_train.n; i++) mark_t[i] = !mark_v[i];
    } else if (!o->train_list) {
        for (long i = 0; i < all_train.n; i++) mark_t[i] = !mark_v[i];
    } else if (!o->valid_list) {
        for (long i = 0; i < all_train.n; i++) mark_v[i] = !mark_t[i];
    } else {
        for (long i = 0; i < all_train.n; i++)
            if (mark_v[i] && mark_t[i]) {
                rc = sp_fail(err, SP_EINPUT, "%s: '%s' is also in %s", o->valid_list,
                             all_train.v[i].rel, o->train_list);
                goto done;
            }
    }
    for (long i = 0; i < all_train.n && !rc; i++) {
        if (mark_v[i] && flist_push(&valid, all_train.v[i].rel, -1)) rc = SP_ERUNTIME;
        if (mark_t[i] && flist_push(&train, all_train.v[i].rel, -1)) rc = SP_ERUNTIME;
    }
    if (rc) {
        rc = sp_fail(err, SP_ERUNTIME, "out of memory");
        goto done;
    }
    if (train.n == 0 || valid.n == 0) {
        rc = sp_fail(err, SP_EINPUT, "%s: %ld TRAIN files leave an empty %s split", o->root,
                     all_train.n, train.n == 0 ? "train" : "validation");
        goto done;
    }

    /* Probe every file before anything long runs: a bad file fails fast. */
    long all = train.n + valid.n + test.n;
    rc = probe_all(o->root, &train, o->mix, &sum->samples[0], 0, all, "scan", o->progress,
                   o->progress_ctx, o->stop, err);
    if (!rc)
        rc = probe_all(o->root, &valid, o->mix, &sum->samples[1], train.n, all, "scan", o->progress,
                       o->progress_ctx, o->stop, err);
    if (!rc)
        rc = probe_all(o->root, &test, o->mix, &sum->samples[2], train.n + valid.n, all, "scan",
                       o->progress, o->progress_ctx, o->stop, err);
    if (rc) goto done;
    rc = h5_open(&h, o->out, err);
    if (rc) goto done;
    opened = 1;

    /* Normalisation: the whole training waveform (validation excluded). */
    stats s = {0, 0, 0};
    {
        corpus c;
        float *buf = malloc(STAT_BLOCK * sizeof *buf);
        if (!buf || corpus_init(&c, o->root, &train, o->mix)) {
            free(buf);
            rc = sp_fail(err, SP_ERUNTIME, "out of memory");
            goto done;
        }
        long long done_n = 0;
        rc = stats_range(&s, &c, 0, corpus_len(&c), buf, "stats", &done_n, corpus_len(&c),
                         o->progress, o->progress_ctx, o->stop, err);
        free(buf);
        free(c.start);
        if (rc) goto done;
    }
    double mean = s.mean, std = s.n > 0 ? sqrt(s.m2 / s.n) : 0;
    if (!(std > 0)) {
        rc = sp_fail(err, SP_EINPUT, "%s: the training waveform is silent (std 0)", o->root);
        goto done;
    }
    sum->mean = mean;
    sum->std = std;
    /* An extra `source` replaces the root path (written once: a rewritten
     * attribute would leave the old text in the file's free space). */
    const char *source = o->root;
    for (const char *const *a = o->extra_attrs; a && a[0] && a[1]; a += 2)
        if (!strcmp(a[0], "source")) source = a[1];
    if (write_root_attrs(h.file, o->corpus ? o->corpus : "timit", "timit", source, mean, std,
                         o->streams, o->mix) ||
        attr_i64(h.file, "seed", (long long)o->seed) ||
        attr_str(h.file, "valid_rule",
                 o->valid_list || o->train_list ? "explicit lists"
                                                : "round(0.05*N) (at least 1) of the sorted TRAIN "
                                                  "files, Philox shuffle with seed")) {
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write root attributes", h.tmp);
        goto done;
    }
    for (const char *const *a = o->extra_attrs; a && a[0] && a[1]; a += 2)
        if (strcmp(a[0], "source") && attr_str(h.file, a[0], a[1])) {
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write attribute %s", h.tmp, a[0]);
            goto done;
        }
    rc = timit_stream_split(h.file, "train", o->root, &train, o, mean, std, &sum->rows[0],
                            &sum->n_batches[0], h.tmp, err);
    if (!rc)
        rc = timit_stream_split(h.file, "valid", o->root, &valid, o, mean, std, &sum->rows[1],
                                &sum->n_batches[1], h.tmp, err);
    if (!rc) rc = timit_test_split(h.file, o->root, &test, o, mean, std, &sum->rows[2], h.tmp, err);
    sum->n_files[0] = train.n;
    sum->n_files[1] = valid.n;
    sum->n_files[2] = test.n;
done:
    if (opened) rc = h5_finish(&h, rc, err);
    flist_free(&all_train);
    flist_free(&test);
    flist_free(&train);
    flist_free(&valid);
    free(mark_v);
    free(mark_t);
    return rc;
}

/* ---- Blizzard ---- */

void sp_blizzard_opts_default(sp_blizzard_opts *o) {
    memset(o, 0, sizeof *o);
    o->streams = 128;
    o->train_rows = -1;
    o->valid_rows = -1;
}

int sp_blizzard_build(const sp_blizzard_opts *o, sp_speech_summary *sum, sp_error *err) {
    sp_speech_summary local;
    if (!sum) sum = &local;
    memset(sum, 0, sizeof *sum);
    if (!o->root || !o->out)
        return sp_fail(err, SP_EINPUT, "blizzard: --root and --out are required");
    int S = o->streams;
    if (S < 1) return sp_fail(err, SP_EINPUT, "blizzard: streams %d must be >= 1", S);
    struct stat st;
    if (stat(o->root, &st) != 0 || !S_ISDIR(st.st_mode))
        return sp_fail(err, SP_EINPUT, "%s: not a directory", o->root);
    flist files = {0};
    h5out h = {.file = -1};
    long long *start = NULL;
    corpus c = {0};
    hid_t g[3] = {-1, -1, -1}, x[3] = {-1, -1, -1}, u0[3] = {-1, -1, -1};
    int rc, opened = 0;
    walk_ctx w = {o->root, 0, &files, 0, err};
    rc = walk(&w, "");
    if (!rc && files.n == 0)
        rc = sp_fail(err, SP_EINPUT, "%s: no audio files (%s ...) found", o->root, audio_exts[0]);
    if (rc) goto done;
    qsort(files.v, (size_t)files.n, sizeof *files.v, sfile_cmp);
    long long L = 0;
    rc = probe_all(o->root, &files, o->mix, &L, 0, files.n, "scan", o->progress, o->progress_ctx,
                   o->stop, err);
    if (rc) goto done;

    /* Layout: S equal pieces, R rows each; batches split 90 / 5 / rest. */
    long long piece = L / S, R = piece / ROW;
    long long nt = (9 * R) / 10, nv = R / 20;
    if (o->train_rows >= 0 || o->valid_rows >= 0) {
        long long tr = o->train_rows, va = o->valid_rows;
        if (tr < 0 || va < 0 || tr % S || va % S) {
            rc = sp_fail(err, SP_EINPUT,
                         "blizzard: --split-rows %lld,%lld: both must be "
                         "multiples of --streams %d",
                         tr, va, S);
            goto done;
        }
        nt = tr / S;
        nv = va / S;
        if (nt + nv > R) {
            rc = sp_fail(err, SP_EINPUT,
                         "blizzard: --split-rows %lld,%lld exceeds the %lld rows "
                         "of the corpus",
                         tr, va, R * S);
            goto done;
        }
    }
    long long ns = R - nt - nv;
    if (nt < 1 || nv < 1 || ns < 1) {
        rc = sp_fail(err, SP_EINPUT,
                     "%s: %.1f s of audio in %ld files make %lld rows of 8000 samples per stream "
                     "(%d streams): too few for train/valid/test splits",
                     o->root, L / (double)SP_AUDIO_RATE, files.n, R, S);
        goto done;
    }
    start = malloc((size_t)S * sizeof *start);
    if (!start || corpus_init(&c, o->root, &files, o->mix)) {
        rc = sp_fail(err, SP_ERUNTIME, "out of memory");
        goto done;
    }
    for (int j = 0; j < S; j++) start[j] = (long long)j * piece;
    rc = h5_open(&h, o->out, err);
    if (rc) goto done;
    opened = 1;

    /* Statistics over the training rows: the first nt rows of every stream. */
    /* One partial result per stream (threads), merged in stream order. */
    stats s = {0, 0, 0};
    {
        stats *ps = calloc((size_t)S, sizeof *ps);
        int *rcs = calloc((size_t)S, sizeof *rcs);
        sp_error *errs = calloc((size_t)S, sizeof *errs);
        long long done_n = 0, total_n = (long long)S * nt * ROW;
        if (!ps || !rcs || !errs) rc = sp_fail(err, SP_ERUNTIME, "out of memory");
        if (!rc) {
#pragma omp parallel for schedule(dynamic, 1)
            for (int j = 0; j < S; j++) {
                float *tb = malloc(STAT_BLOCK * sizeof *tb);
                long long local = 0;
                rcs[j] = tb ? stats_range(&ps[j], &c, start[j], nt * ROW, tb, "stats", &local,
                                          total_n, NULL, NULL, o->stop, &errs[j])
                            : sp_fail(&errs[j], SP_ERUNTIME, "out of memory");
                free(tb);
#pragma omp critical(speech_progress)
                {
                    done_n += nt * ROW;
                    if (o->progress) o->progress(o->progress_ctx, "stats", done_n, total_n);
                }
            }
            rc = first_error(rcs, errs, S, err);
            for (int j = 0; j < S; j++) stats_merge(&s, &ps[j]);
        }
        free(ps);
        free(rcs);
        free(errs);
    }
    if (rc) goto done;
    double mean = s.mean, std = s.n > 0 ? sqrt(s.m2 / s.n) : 0;
    if (!(std > 0)) {
        rc = sp_fail(err, SP_EINPUT, "%s: the training rows are silent (std 0)", o->root);
        goto done;
    }
    sum->mean = mean;
    sum->std = std;
    if (write_root_attrs(h.file, "blizzard", "blizzard", o->root, mean, std, S, o->mix) ||
        write_names(h.file, "files", files.v, files.n) ||
        attr_i64(h.file, "stream_samples", piece) || attr_i64(h.file, "rows_per_stream", R) ||
        attr_i64(h.file, "samples", L) ||
        attr_str(h.file, "split_rule",
                 o->train_rows >= 0
                     ? "explicit --split-rows"
                     : "batches: train floor(0.9 R), valid floor(0.05 R), test rest")) {
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write root attributes", h.tmp);
        goto done;
    }
    {
        long long *lens = malloc((size_t)files.n * sizeof *lens);
        if (!lens) {
            rc = sp_fail(err, SP_ERUNTIME, "out of memory");
            goto done;
        }
        for (long i = 0; i < files.n; i++) lens[i] = files.v[i].len;
        int e = write_i64(h.file, "file_samples", lens, files.n);
        free(lens);
        if (e) {
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write /file_samples", h.tmp);
            goto done;
        }
    }
    static const char *names[3] = {"train", "valid", "test"};
    long long b0[3] = {0, nt, nt + nv}, b1[3] = {nt, nt + nv, R};
    stream_target tg[3];
    for (int k = 0; k < 3; k++) {
        long long nb = b1[k] - b0[k];
        g[k] = group_create(h.file, names[k]);
        x[k] = g[k] < 0 ? -1 : make_x(g[k], nb * S, S, nb);
        u0[k] = g[k] < 0 ? -1 : make_u0(g[k], k == 2 ? nb * S : S);
        if (x[k] < 0 || u0[k] < 0 || attr_i64(g[k], "streams", S) ||
            attr_i64(g[k], "n_batches", nb) || attr_i64(g[k], "batch_begin", b0[k]) ||
            attr_i64(g[k], "batch_end", b1[k])) {
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create /%s", h.tmp, names[k]);
            goto done;
        }
        tg[k] = (stream_target){b0[k], b1[k], x[k], u0[k], k == 2, names[k]};
        sum->rows[k] = nb * S;
        if (k < 2) sum->n_batches[k] = nb;
        sum->samples[k] = nb * S * ROW;
    }
    sum->n_files[0] = files.n;
    rc = write_streams(&c, S, start, R, tg, 3, mean, std, o->progress, o->progress_ctx, o->stop,
                       h.tmp, err);
done:
    for (int k = 0; k < 3; k++) {
        if (u0[k] >= 0) H5Dclose(u0[k]);
        if (x[k] >= 0) H5Dclose(x[k]);
        if (g[k] >= 0) H5Gclose(g[k]);
    }
    if (opened) rc = h5_finish(&h, rc, err);
    free(c.start);
    free(start);
    flist_free(&files);
    return rc;
}

/* ---- command line: supair_data timit | blizzard | speech-demo ---- */

static volatile sig_atomic_t cli_stop = 0;

static void cli_on_signal(int sig) {
    (void)sig;
    cli_stop = 1;
}

typedef struct cli_progress {
    int tty;
    char phase[16];
    int last;
} cli_progress;

static void cli_progress_fn(void *ctx, const char *phase, long long done, long long total) {
    cli_progress *p = ctx;
    if (strncmp(p->phase, phase, sizeof p->phase)) {
        snprintf(p->phase, sizeof p->phase, "%s", phase);
        p->last = -1;
    }
    int pct = total > 0 ? (int)(100 * done / total) : 100;
    if (p->tty) {
        if (pct != p->last || done == total)
            fprintf(stderr, "\r%-6s %3d%% (%lld / %lld)%s", phase, pct, done, total,
                    done >= total ? "\n" : "");
        p->last = pct;
    } else if (pct / 10 > p->last) {
        p->last = pct / 10;
        fprintf(stderr, "%s: %d%% (%lld / %lld)\n", phase, pct, done, total);
    }
    fflush(stderr);
}

typedef struct cli_args {
    const char *cmd;
    int argc, i;
    char **argv;
    char name[64];
    const char *value;
    const char *inline_value;
} cli_args;

/* 1 = a flag (it->name), 0 = a positional (it->value), -1 = the end. */
static int cli_next(cli_args *a) {
    if (a->i >= a->argc) return -1;
    const char *s = a->argv[a->i++];
    a->inline_value = NULL;
    if (!strcmp(s, "-h")) s = "--help";
    if (s[0] != '-' || !s[1]) {
        a->value = s;
        return 0;
    }
    const char *eq = strncmp(s, "--", 2) ? NULL : strchr(s, '=');
    size_t n = eq ? (size_t)(eq - s) : strlen(s);
    if (n >= sizeof a->name) n = sizeof a->name - 1;
    memcpy(a->name, s, n);
    a->name[n] = '\0';
    if (eq) a->inline_value = eq + 1;
    return 1;
}

static int cli_value(cli_args *a, sp_error *err) {
    if (a->inline_value) {
        a->value = a->inline_value;
        return 0;
    }
    if (a->i >= a->argc)
        return sp_fail(err, SP_EINPUT, "flag '%s' needs a value (see supair_data %s --help)",
                       a->name, a->cmd);
    a->value = a->argv[a->i++];
    return 0;
}

static int cli_long(cli_args *a, long long lo, long long hi, long long *out, sp_error *err) {
    if (cli_value(a, err)) return SP_EINPUT;
    char *end;
    errno = 0;
    long long v = strtoll(a->value, &end, 10);
    if (errno || end == a->value || *end || v < lo || v > hi)
        return sp_fail(err, SP_EINPUT, "%s '%s': expected an integer in [%lld, %lld]", a->name,
                       a->value, lo, hi);
    *out = v;
    return 0;
}

static int cli_u64(cli_args *a, uint64_t *out, sp_error *err) {
    if (cli_value(a, err)) return SP_EINPUT;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(a->value, &end, 10);
    if (errno || end == a->value || *end || a->value[0] == '-')
        return sp_fail(err, SP_EINPUT, "%s '%s': expected a non-negative integer", a->name,
                       a->value);
    *out = v;
    return 0;
}

static int cli_unknown(cli_args *a, int r, sp_error *err) {
    if (r == 0)
        return sp_fail(err, SP_EINPUT, "unexpected argument '%s' (see supair_data %s --help)",
                       a->value, a->cmd);
    return sp_fail(err, SP_EINPUT, "unknown flag '%s' (see supair_data %s --help)", a->name,
                   a->cmd);
}

static void timit_help(FILE *f) {
    fprintf(f,
            "usage: supair_data timit --root DIR --out FILE.h5 [options]\n"
            "Converts TIMIT (DIR/TRAIN|TEST/DRn/SPEAKER/*.WAV, NIST SPHERE or any audio\n"
            "libsndfile reads; names in any case) to an SRNN speech file: train/valid as\n"
            "40-frame chunks in streams, test as whole utterances (see data/README.md).\n"
            "  --root DIR         the TIMIT directory holding TRAIN and TEST\n"
            "  --out FILE.h5      output (written to FILE.h5.tmp.PID, then renamed)\n"
            "  --seed S           validation shuffle seed (default 0): round(0.05*N) of the\n"
            "                     sorted TRAIN files (231 of 4620)\n"
            "  --valid-list F     validation files instead (root-relative paths, one a line)\n"
            "  --train-list F     training files (default: TRAIN minus validation)\n"
            "  --streams N        streams per batch (default 64, the SRNN batch)\n"
            "  --mix              average the channels of multi-channel files (else an error)\n"
            "Exit: 0 ok, 1 bad flag or input, 2 runtime failure, 3 interrupted (no file left).\n");
}

static void blizzard_help(FILE *f) {
    fprintf(f,
            "usage: supair_data blizzard --root DIR --out FILE.h5 [options]\n"
            "Converts every audio file under DIR (recursively, sorted; WAV, FLAC, MP3, SPHERE,\n"
            "...; resampled to 16 kHz) to an SRNN speech file: the concatenation is cut\n"
            "into N streams of rows of 8000 samples; per stream the first 90%% of rows are\n"
            "train, the next 5%% valid, the rest test. Streams the audio: memory stays bounded.\n"
            "  --root DIR         directory of audio files\n"
            "  --out FILE.h5      output (written to FILE.h5.tmp.PID, then renamed)\n"
            "  --streams N        streams (default 128)\n"
            "  --split-rows T,V   train and valid rows instead of 90%% / 5%% (multiples of N;\n"
            "                     the canonical file: 2040064,112640)\n"
            "  --mix              average the channels of multi-channel files (else an error)\n"
            "Exit: 0 ok, 1 bad flag or input, 2 runtime failure, 3 interrupted (no file left).\n");
}

static void demo_help(FILE *f) {
    fprintf(f,
            "usage: supair_data speech-demo --out FILE.h5 [options]\n"
            "Synthesises a TIMIT-shaped corpus from text on this machine with espeak-ng\n"
            "(11 voices) and festival (kal), writes it with sox as NIST SPHERE files and\n"
            "converts it like `supair_data timit`. Needs festival festvox-kallpc16k\n"
            "espeak-ng sox. Deterministic given the seed.\n"
            "  --out FILE.h5      output\n"
            "  --minutes M        total speech (default 30)\n"
            "  --work DIR         keep the corpus tree in DIR (default: a temp dir, removed)\n"
            "  --seed S           voice assignment and validation seed (default 0)\n"
            "  --streams N        streams per batch (default 64)\n"
            "  --jobs N           parallel synthesis processes (default: CPUs)\n"
            "Exit: 0 ok, 1 bad flag or input, 2 runtime failure, 3 interrupted (no file left).\n");
}

static void print_summary(const char *cmd, const char *out, const sp_speech_summary *s,
                          int test_frames, double secs) {
    struct stat st;
    long long size = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    printf("%s: wrote %s (%lld bytes) in %.1f s\n", cmd, out, size, secs);
    printf("  train: %lld rows (%lld batches), valid: %lld rows (%lld batches), test: %lld %s\n",
           s->rows[0], s->n_batches[0], s->rows[1], s->n_batches[1], s->rows[2],
           test_frames ? "frames" : "rows");
    if (test_frames)
        printf("  files: train %ld, valid %ld, test %ld\n", s->n_files[0], s->n_files[1],
               s->n_files[2]);
    printf("  mean %.9g, std %.9g\n", s->mean, s->std);
}

int sp_speech_cli(const char *cmd, int argc, char **argv, sp_error *err) {
    sp_error_clear(err);
    cli_args a = {.cmd = cmd, .argc = argc, .argv = argv, .i = 1};
    int which = !strcmp(cmd, "timit")         ? 0
                : !strcmp(cmd, "blizzard")    ? 1
                : !strcmp(cmd, "speech-demo") ? 2
                                              : -1;
    if (which < 0) return sp_fail(err, SP_EINPUT, "unknown speech command '%s'", cmd);
    sp_timit_opts to;
    sp_blizzard_opts bo;
    sp_speech_demo_opts dopt;
    sp_timit_opts_default(&to);
    sp_blizzard_opts_default(&bo);
    sp_speech_demo_opts_default(&dopt);
    int r;
    long long v;
    while ((r = cli_next(&a)) >= 0) {
        if (r == 0) return cli_unknown(&a, r, err);
        const char *f = a.name;
        if (!strcmp(f, "--help")) {
            if (which == 0)
                timit_help(stdout);
            else if (which == 1)
                blizzard_help(stdout);
            else
                demo_help(stdout);
            return SP_OK;
        }
        if (which < 2 && !strcmp(f, "--root")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            to.root = bo.root = a.value;
        } else if (!strcmp(f, "--out")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            to.out = bo.out = dopt.out = a.value;
        } else if (!strcmp(f, "--streams")) {
            if (cli_long(&a, 1, 1 << 20, &v, err)) return SP_EINPUT;
            to.streams = bo.streams = dopt.streams = (int)v;
        } else if (which < 2 && !strcmp(f, "--mix")) {
            to.mix = bo.mix = 1;
        } else if (which != 1 && !strcmp(f, "--seed")) {
            if (cli_u64(&a, &to.seed, err)) return SP_EINPUT;
            dopt.seed = to.seed;
        } else if (which == 0 && !strcmp(f, "--valid-list")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            to.valid_list = a.value;
        } else if (which == 0 && !strcmp(f, "--train-list")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            to.train_list = a.value;
        } else if (which == 1 && !strcmp(f, "--split-rows")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            char *end;
            errno = 0;
            bo.train_rows = strtoll(a.value, &end, 10);
            if (*end == ',') bo.valid_rows = strtoll(end + 1, &end, 10);
            if (errno || *end || bo.train_rows < 0 || bo.valid_rows < 0)
                return sp_fail(err, SP_EINPUT, "--split-rows '%s': expected TRAIN,VALID row counts",
                               a.value);
        } else if (which == 2 && !strcmp(f, "--minutes")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            char *end;
            double m = strtod(a.value, &end);
            if (end == a.value || *end || !(m > 0) || m > 100000)
                return sp_fail(err, SP_EINPUT, "--minutes '%s': expected a number > 0", a.value);
            dopt.minutes = m;
        } else if (which == 2 && !strcmp(f, "--work")) {
            if (cli_value(&a, err)) return SP_EINPUT;
            dopt.work = a.value;
        } else if (which == 2 && !strcmp(f, "--jobs")) {
            if (cli_long(&a, 1, 1024, &v, err)) return SP_EINPUT;
            dopt.jobs = (int)v;
        } else {
            return cli_unknown(&a, r, err);
        }
    }
    if (!to.out)
        return sp_fail(err, SP_EINPUT, "--out FILE.h5 is required (see supair_data %s --help)",
                       cmd);
    if (which < 2 && !to.root)
        return sp_fail(err, SP_EINPUT, "--root DIR is required (see supair_data %s --help)", cmd);

    cli_progress ps = {isatty(2), "", -1};
    to.progress = bo.progress = dopt.progress = cli_progress_fn;
    to.progress_ctx = bo.progress_ctx = dopt.progress_ctx = &ps;
    to.stop = bo.stop = dopt.stop = &cli_stop;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cli_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double t0 = sp_time_now();
    sp_speech_summary s;
    int rc = which == 0   ? sp_timit_build(&to, &s, err)
             : which == 1 ? sp_blizzard_build(&bo, &s, err)
                          : sp_speech_demo_build(&dopt, &s, err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (!rc) print_summary(cmd, to.out, &s, which != 1, sp_time_now() - t0);
    return rc;
}
