/* IDX reader (MNIST / Fashion-MNIST files) over zlib, see idx.h. */
#include "supair/idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Far above any real IDX set (MNIST is 47 MB) but small enough that a
 * corrupted header cannot make us try to allocate terabytes. */
#define IDX_MAX_BYTES (1L << 34)
#define IDX_MAX_SIDE 4096

/* Reads exactly n bytes; returns the number read, or -1 on a zlib error. */
static long gz_read_all(gzFile f, void *buf, long n) {
    long got = 0;
    while (got < n) {
        long want = n - got;
        if (want > (1L << 30)) want = 1L << 30;
        int r = gzread(f, (char *)buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += r;
    }
    return got;
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int gz_fail(gzFile f, const char *path, sp_error *err, const char *what) {
    int zerr = 0;
    const char *msg = gzerror(f, &zerr);
    if (zerr == Z_ERRNO) msg = strerror(errno);
    return sp_fail(err, SP_EINPUT, "%s: %s: %s", path, what, msg && *msg ? msg : "read error");
}

/* Opens the file and reads magic + ndims dimensions; *f is left open on success. */
static int read_header(gzFile *fout, const char *path, uint32_t magic, int ndims, uint32_t *dims,
                       sp_error *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) return sp_fail(err, SP_EINPUT, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    unsigned char hdr[4 + 4 * 3];
    long want = 4 + 4L * ndims;
    long got = gz_read_all(f, hdr, want);
    if (got < 0) {
        int rc = gz_fail(f, path, err, "cannot read header");
        gzclose(f);
        return rc;
    }
    if (got < 4) {
        gzclose(f);
        return sp_fail(err, SP_EINPUT, "%s: truncated: file too short for an IDX header", path);
    }
    uint32_t m = be32(hdr);
    if (m != magic) {
        gzclose(f);
        return sp_fail(err, SP_EINPUT,
                       "%s: bad magic 0x%08x (expected 0x%08x: IDX %s of unsigned bytes)", path,
                       m, magic, ndims == 3 ? "images" : "labels");
    }
    if (got < want) {
        gzclose(f);
        return sp_fail(err, SP_EINPUT, "%s: truncated: header ends after %ld of %ld bytes", path,
                       got, want);
    }
    for (int i = 0; i < ndims; i++) dims[i] = be32(hdr + 4 + 4 * i);
    *fout = f;
    return SP_OK;
}

static int read_body(gzFile f, const char *path, uint8_t **out, long nbytes, sp_error *err) {
    uint8_t *buf = malloc(nbytes > 0 ? (size_t)nbytes : 1);
    if (!buf) return sp_fail(err, SP_ERUNTIME, "%s: out of memory for %ld bytes", path, nbytes);
    long got = gz_read_all(f, buf, nbytes);
    if (got < 0) {
        free(buf);
        return gz_fail(f, path, err, "cannot read data");
    }
    if (got < nbytes) {
        free(buf);
        return sp_fail(err, SP_EINPUT, "%s: truncated: %ld of %ld data bytes present", path, got,
                       nbytes);
    }
    *out = buf;
    return SP_OK;
}

int sp_idx_read_images(sp_idx_images *out, const char *path, sp_error *err) {
    memset(out, 0, sizeof *out);
    gzFile f = NULL;
    uint32_t d[3] = {0, 0, 0};
    int rc = read_header(&f, path, SP_IDX_MAGIC_IMAGES, 3, d, err);
    if (rc) return rc;
    if (d[0] == 0 || d[1] == 0 || d[2] == 0 || d[1] > IDX_MAX_SIDE || d[2] > IDX_MAX_SIDE ||
        (double)d[0] * d[1] * d[2] > (double)IDX_MAX_BYTES) {
        gzclose(f);
        return sp_fail(err, SP_EINPUT, "%s: bad dimensions %u x %u x %u", path, d[0], d[1], d[2]);
    }
    long nbytes = (long)d[0] * d[1] * d[2];
    rc = read_body(f, path, &out->data, nbytes, err);
    gzclose(f);
    if (rc) return rc;
    out->n = d[0];
    out->rows = (int)d[1];
    out->cols = (int)d[2];
    return SP_OK;
}

int sp_idx_read_labels(sp_idx_labels *out, const char *path, sp_error *err) {
    memset(out, 0, sizeof *out);
    gzFile f = NULL;
    uint32_t d[1] = {0};
    int rc = read_header(&f, path, SP_IDX_MAGIC_LABELS, 1, d, err);
    if (rc) return rc;
    if (d[0] == 0) {
        gzclose(f);
        return sp_fail(err, SP_EINPUT, "%s: bad label count %u", path, d[0]);
    }
    rc = read_body(f, path, &out->data, (long)d[0], err);
    gzclose(f);
    if (rc) return rc;
    out->n = d[0];
    return SP_OK;
}

void sp_idx_images_free(sp_idx_images *im) {
    if (!im) return;
    free(im->data);
    memset(im, 0, sizeof *im);
}

void sp_idx_labels_free(sp_idx_labels *lb) {
    if (!lb) return;
    free(lb->data);
    memset(lb, 0, sizeof *lb);
}

int sp_idx_read_pair(sp_idx_images *images, sp_idx_labels *labels, const char *images_path,
                     const char *labels_path, sp_error *err) {
    memset(labels, 0, sizeof *labels);
    int rc = sp_idx_read_images(images, images_path, err);
    if (rc) return rc;
    rc = sp_idx_read_labels(labels, labels_path, err);
    if (rc) {
        sp_idx_images_free(images);
        return rc;
    }
    if (images->n != labels->n) {
        rc = sp_fail(err, SP_EINPUT, "%s: %ld labels but %s has %ld images", labels_path,
                     labels->n, images_path, images->n);
        sp_idx_images_free(images);
        sp_idx_labels_free(labels);
        return rc;
    }
    return SP_OK;
}

int sp_idx_find(char *out, size_t cap, const char *dir, const char *stem, sp_error *err) {
    struct stat st;
    if (stat(dir, &st) != 0)
        return sp_fail(err, SP_EINPUT, "%s: cannot open directory: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return sp_fail(err, SP_EINPUT, "%s: not a directory", dir);
    const char *suffixes[] = {"", ".gz"};
    for (int i = 0; i < 2; i++) {
        int n = snprintf(out, cap, "%s/%s%s", dir, stem, suffixes[i]);
        if (n < 0 || (size_t)n >= cap)
            return sp_fail(err, SP_EINPUT, "%s: path too long", dir);
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return SP_OK;
    }
    return sp_fail(err, SP_EINPUT, "%s/%s: not found (nor %s.gz)", dir, stem, stem);
}
