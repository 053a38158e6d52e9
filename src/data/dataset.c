/* HDF5 dataset reader with per-rank row selections, fingerprint and the
 * `inspect` report, see dataset.h. */
#include "supair/dataset.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "supair/scenes.h"

#define DS_CACHE 16
/* Chunk cache per open dataset: scenes files hold one row per chunk, but
 * other writers (speech files) may use larger chunks that several rows of a
 * sorted batch share; 32 MB keeps a batch's worth of them. */
#define DS_CHUNK_CACHE_BYTES (32u << 20)
#define DS_CHUNK_CACHE_SLOTS 12421

typedef struct ds_entry {
    char name[256];
    hid_t id;
    int rank;
    hsize_t dims[SP_DATASET_MAX_RANK];
    long row_len;
    int is_int;
    int is_u8; /* read raw and converted by us: HDF5's conversion path costs 3x */
    int has_scale;
    double scale;
    /* sp_dataset_attach: the whole dataset in the caller's memory as
     * mem_type (NULL: rows come from the file). */
    void *mem;
    hid_t mem_type;
} ds_entry;

typedef struct row_ref {
    long row, pos;
} row_ref;

struct sp_dataset {
    char *path;
    hid_t file;
    ds_entry cache[DS_CACHE];
    int ncache;
    /* Grow-only scratch, so steady-state batch reads allocate nothing. */
    row_ref *refs;
    long refs_cap;
    void *buf;
    size_t buf_cap;
};

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

int sp_dataset_open(sp_dataset **out, const char *path, sp_error *err) {
    *out = NULL;
    quiet_hdf5();
    struct stat st;
    if (stat(path, &st) != 0)
        return sp_fail(err, SP_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return sp_fail(err, SP_EINPUT, "%s: not a regular file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return sp_fail(err, SP_EINPUT, "%s: not an HDF5 file (or unreadable)", path);
    sp_dataset *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(path))) {
        free(d);
        H5Fclose(f);
        return sp_fail(err, SP_ERUNTIME, "%s: out of memory", path);
    }
    d->file = f;
    *out = d;
    return SP_OK;
}

void sp_dataset_close(sp_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->ncache; i++) H5Dclose(d->cache[i].id);
    if (d->file >= 0) H5Fclose(d->file);
    free(d->refs);
    free(d->buf);
    free(d->path);
    free(d);
}

const char *sp_dataset_path(const sp_dataset *d) { return d->path; }

/* H5Lexists needs every intermediate group to exist: walk the components. */
static int link_exists(hid_t file, const char *name) {
    char buf[256];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, name, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        htri_t e = H5Lexists(file, buf, H5P_DEFAULT);
        buf[i] = c;
        if (e <= 0) return 0;
    }
    return 1;
}

/* Opens (or finds open) dataset NAME with its shape and scale. */
static int get_entry(sp_dataset *d, const char *name, ds_entry **out, sp_error *err) {
    for (int i = 0; i < d->ncache; i++)
        if (!strcmp(d->cache[i].name, name)) return *out = &d->cache[i], SP_OK;
    if (strlen(name) >= sizeof d->cache[0].name)
        return sp_fail(err, SP_EINPUT, "%s: %s: name too long", d->path, name);
    if (!link_exists(d->file, name))
        return sp_fail(err, SP_EINPUT, "%s: %s: missing dataset", d->path, name);
    hid_t o = H5Oopen(d->file, name, H5P_DEFAULT);
    if (o < 0) return sp_fail(err, SP_EINPUT, "%s: %s: cannot open", d->path, name);
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds) return sp_fail(err, SP_EINPUT, "%s: %s: not a dataset", d->path, name);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, DS_CHUNK_CACHE_SLOTS, DS_CHUNK_CACHE_BYTES, 1.0);
    hid_t id = H5Dopen2(d->file, name, dapl);
    H5Pclose(dapl);
    if (id < 0) return sp_fail(err, SP_EINPUT, "%s: %s: cannot open dataset", d->path, name);
    ds_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "%s", name);
    e.id = id;
    hid_t t = H5Dget_type(id);
    H5T_class_t cls = H5Tget_class(t);
    e.is_u8 = cls == H5T_INTEGER && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_NONE;
    H5Tclose(t);
    hid_t sp = H5Dget_space(id);
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank > SP_DATASET_MAX_RANK || rank < 0) rank = -1;
    else H5Sget_simple_extent_dims(sp, e.dims, NULL);
    H5Sclose(sp);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        H5Dclose(id);
        return sp_fail(err, SP_EINPUT, "%s: %s: not numeric data", d->path, name);
    }
    if (rank < 1) {
        H5Dclose(id);
        return sp_fail(err, SP_EINPUT, "%s: %s: unsupported rank", d->path, name);
    }
    e.rank = rank;
    e.is_int = cls == H5T_INTEGER;
    e.row_len = 1;
    for (int i = 1; i < rank; i++) e.row_len *= (long)e.dims[i];
    if (H5Aexists(id, "scale") > 0) {
        hid_t a = H5Aopen(id, "scale", H5P_DEFAULT);
        if (a >= 0 && H5Aread(a, H5T_NATIVE_DOUBLE, &e.scale) >= 0) e.has_scale = 1;
        if (a >= 0) H5Aclose(a);
    }
    if (d->ncache == DS_CACHE) { /* rarely more than a handful: evict the oldest */
        H5Dclose(d->cache[0].id); /* an attached copy is the caller's: reads go to the file */
        memmove(&d->cache[0], &d->cache[1], sizeof(ds_entry) * (DS_CACHE - 1));
        d->ncache--;
    }
    d->cache[d->ncache] = e;
    *out = &d->cache[d->ncache++];
    return SP_OK;
}

int sp_dataset_has(sp_dataset *d, const char *name) {
    if (!link_exists(d->file, name)) return 0;
    hid_t o = H5Oopen(d->file, name, H5P_DEFAULT);
    if (o < 0) return 0;
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    return is_ds;
}

int sp_dataset_check(sp_dataset *d, const char *name, int rank, const long *row_shape,
                     long *dims_out, sp_error *err) {
    ds_entry *e;
    int rc = get_entry(d, name, &e, err);
    if (rc) return rc;
    if (e->rank != rank)
        return sp_fail(err, SP_EINPUT, "%s: %s: rank %d, expected %d", d->path, name, e->rank,
                       rank);
    for (int i = 1; i < rank; i++)
        if (row_shape && row_shape[i - 1] >= 0 && (long)e->dims[i] != row_shape[i - 1])
            return sp_fail(err, SP_EINPUT, "%s: %s: dimension %d is %ld, expected %ld", d->path,
                           name, i, (long)e->dims[i], row_shape[i - 1]);
    if (dims_out)
        for (int i = 0; i < rank; i++) dims_out[i] = (long)e->dims[i];
    return SP_OK;
}

static int cmp_ref(const void *a, const void *b) {
    const row_ref *x = a, *y = b;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int grow(void **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    void *q = realloc(*p, n);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Reads the sorted unique rows of idx into d->buf as mem_type; fills d->refs
 * (sorted) and returns the unique count in *nu. */
static int read_unique(sp_dataset *d, ds_entry *e, const long *idx, long n, hid_t mem_type,
                       long row_len, long *nu_out, sp_error *err) {
    if (row_len != e->row_len)
        return sp_fail(err, SP_EINPUT, "%s: %s: rows hold %ld values, caller expects %ld",
                       d->path, e->name, e->row_len, row_len);
    size_t refs_bytes = (size_t)d->refs_cap * sizeof(row_ref);
    if (grow((void **)&d->refs, &refs_bytes, (size_t)n * sizeof(row_ref)))
        return sp_fail(err, SP_ERUNTIME, "%s: out of memory", d->path);
    d->refs_cap = (long)(refs_bytes / sizeof(row_ref));
    for (long i = 0; i < n; i++) {
        if (idx[i] < 0 || (hsize_t)idx[i] >= e->dims[0])
            return sp_fail(err, SP_EINPUT, "%s: %s: row %ld out of range [0, %ld)", d->path,
                           e->name, idx[i], (long)e->dims[0]);
        d->refs[i].row = idx[i];
        d->refs[i].pos = i;
    }
    qsort(d->refs, (size_t)n, sizeof(row_ref), cmp_ref);
    long nu = 0;
    for (long i = 0; i < n; i++)
        if (i == 0 || d->refs[i].row != d->refs[i - 1].row) nu++;
    size_t esz = H5Tget_size(mem_type);
    if (grow(&d->buf, &d->buf_cap, (size_t)nu * row_len * esz))
        return sp_fail(err, SP_ERUNTIME, "%s: out of memory", d->path);
    if (e->mem && H5Tequal(e->mem_type, mem_type) > 0) {
        const size_t row_bytes = (size_t)row_len * esz;
        long u = 0;
        for (long i = 0; i < n; i++)
            if (i == 0 || d->refs[i].row != d->refs[i - 1].row)
                memcpy((char *)d->buf + (size_t)u++ * row_bytes,
                       (const char *)e->mem + (size_t)d->refs[i].row * row_bytes, row_bytes);
        *nu_out = nu;
        return SP_OK;
    }

    /* One read per run of consecutive rows. A single read of the union of
     * all runs is 10x slower: HDF5 1.10 maps an irregular selection onto
     * chunks element by element, while a plain block takes its fast path.
     * Sorted runs visit each chunk once, and the chunk cache keeps it. */
    hid_t fs = H5Dget_space(e->id);
    hsize_t start[SP_DATASET_MAX_RANK] = {0}, count[SP_DATASET_MAX_RANK];
    for (int k = 1; k < e->rank; k++) count[k] = e->dims[k];
    herr_t st = 0;
    long u = 0;
    for (long i = 0; i < n && st >= 0;) {
        long j = i; /* extend the run of consecutive rows */
        while (j + 1 < n && d->refs[j + 1].row <= d->refs[j].row + 1) j++;
        start[0] = (hsize_t)d->refs[i].row;
        count[0] = (hsize_t)(d->refs[j].row - d->refs[i].row + 1);
        /* Memory space of the file selection's own shape: with another
         * shape HDF5 maps memory to chunks element by element (10x slower). */
        hid_t ms = H5Screate_simple(e->rank, count, NULL);
        st = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
        if (st >= 0)
            st = H5Dread(e->id, mem_type, ms, fs, H5P_DEFAULT, (char *)d->buf + u * row_len * esz);
        H5Sclose(ms);
        u += (long)count[0];
        i = j + 1;
    }
    H5Sclose(fs);
    if (st < 0) return sp_fail(err, SP_ERUNTIME, "%s: %s: read error", d->path, e->name);
    *nu_out = nu;
    return SP_OK;
}

int sp_dataset_read_rows(sp_dataset *d, const char *name, const long *idx, long n, float *out,
                         long row_len, sp_error *err) {
    if (n <= 0) return SP_OK;
    ds_entry *e;
    long nu;
    int rc = get_entry(d, name, &e, err);
    if (!rc)
        rc = read_unique(d, e, idx, n, e->is_u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, row_len,
                         &nu, err);
    if (rc) return rc;
    /* Dividing by 255 gives the correctly rounded k/255, the same float the
     * generator made; multiplying by a rounded 1/255 could be off by an ulp. */
    int div255 = e->has_scale && e->scale == 1.0 / 255.0;
    double scale = e->has_scale ? e->scale : 1.0;
    long u = -1;
    for (long i = 0; i < n; i++) {
        if (i == 0 || d->refs[i].row != d->refs[i - 1].row) u++;
        float *o = out + d->refs[i].pos * row_len;
        if (e->is_u8) {
            const uint8_t *s = (const uint8_t *)d->buf + u * row_len;
            if (div255)
                for (long k = 0; k < row_len; k++) o[k] = (float)s[k] / 255.0f;
            else
                for (long k = 0; k < row_len; k++) o[k] = (float)(s[k] * scale);
        } else {
            const float *s = (const float *)d->buf + u * row_len;
            if (div255)
                for (long k = 0; k < row_len; k++) o[k] = s[k] / 255.0f;
            else if (e->has_scale)
                for (long k = 0; k < row_len; k++) o[k] = (float)((double)s[k] * scale);
            else
                memcpy(o, s, sizeof(float) * row_len);
        }
    }
    return SP_OK;
}

/* Integer rows: read in `mem_type` (HDF5 converts) and scattered back. */
static int read_rows_int(sp_dataset *d, const char *name, const long *idx, long n, void *out,
                         hid_t mem_type, long row_len, sp_error *err) {
    if (n <= 0) return SP_OK;
    ds_entry *e;
    long nu;
    int rc = get_entry(d, name, &e, err);
    if (!rc) rc = read_unique(d, e, idx, n, mem_type, row_len, &nu, err);
    if (rc) return rc;
    size_t row_bytes = H5Tget_size(mem_type) * (size_t)row_len;
    long u = -1;
    for (long i = 0; i < n; i++) {
        if (i == 0 || d->refs[i].row != d->refs[i - 1].row) u++;
        memcpy((char *)out + d->refs[i].pos * row_bytes, (const char *)d->buf + u * row_bytes,
               row_bytes);
    }
    return SP_OK;
}

int sp_dataset_read_rows_i32(sp_dataset *d, const char *name, const long *idx, long n,
                             int32_t *out, long row_len, sp_error *err) {
    return read_rows_int(d, name, idx, n, out, H5T_NATIVE_INT32, row_len, err);
}

int sp_dataset_read_rows_i64(sp_dataset *d, const char *name, const long *idx, long n,
                             int64_t *out, long row_len, sp_error *err) {
    return read_rows_int(d, name, idx, n, out, H5T_NATIVE_INT64, row_len, err);
}

/* The type the readers ask for: uint8 scenes raw, other integers as int32
 * (counts, labels) or int64 (offsets), the rest as float. */
static hid_t preload_type(const ds_entry *e) {
    hid_t ft = H5Dget_type(e->id);
    const size_t fsz = H5Tget_size(ft);
    H5Tclose(ft);
    return e->is_u8 ? H5T_NATIVE_UINT8
           : e->is_int ? (fsz <= 4 ? H5T_NATIVE_INT32 : H5T_NATIVE_INT64)
                       : H5T_NATIVE_FLOAT;
}

int sp_dataset_preload_bytes(sp_dataset *d, const char *name, size_t *bytes, sp_error *err) {
    *bytes = 0;
    ds_entry *e;
    int rc = get_entry(d, name, &e, err);
    if (rc) return rc;
    *bytes = (size_t)e->dims[0] * (size_t)e->row_len * H5Tget_size(preload_type(e));
    return SP_OK;
}

int sp_dataset_fill_rows(sp_dataset *d, const char *name, void *buf, long r0, long r1,
                         sp_error *err) {
    ds_entry *e;
    int rc = get_entry(d, name, &e, err);
    if (rc) return rc;
    if (r0 < 0 || r1 < r0 || (hsize_t)r1 > e->dims[0])
        return sp_fail(err, SP_EINPUT, "%s: %s: rows [%ld, %ld) outside [0, %llu)", d->path, name,
                       r0, r1, (unsigned long long)e->dims[0]);
    if (r0 == r1) return SP_OK;
    const hid_t mt = preload_type(e);
    hsize_t start[SP_DATASET_MAX_RANK] = {0}, count[SP_DATASET_MAX_RANK];
    for (int k = 0; k < e->rank; k++) count[k] = e->dims[k];
    start[0] = (hsize_t)r0, count[0] = (hsize_t)(r1 - r0);
    hid_t fs = H5Dget_space(e->id), ms = H5Screate_simple(e->rank, count, NULL);
    herr_t h = fs < 0 || ms < 0
                   ? -1
                   : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    char *dst = (char *)buf + (size_t)r0 * (size_t)e->row_len * H5Tget_size(mt);
    if (h >= 0) h = H5Dread(e->id, mt, ms, fs, H5P_DEFAULT, dst);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (h < 0)
        return sp_fail(err, SP_ERUNTIME, "%s: %s: read error in rows [%ld, %ld)", d->path, name, r0,
                       r1);
    return SP_OK;
}

int sp_dataset_attach(sp_dataset *d, const char *name, void *buf, int fill, sp_error *err) {
    ds_entry *e;
    int rc = get_entry(d, name, &e, err);
    if (rc) return rc;
    if (fill && (rc = sp_dataset_fill_rows(d, name, buf, 0, (long)e->dims[0], err))) return rc;
    e->mem = buf, e->mem_type = preload_type(e);
    return SP_OK;
}

/* ---- attributes ---- */

static hid_t open_attr(sp_dataset *d, const char *obj, const char *name, sp_error *err) {
    if (strcmp(obj, "/") && !link_exists(d->file, obj)) {
        sp_fail(err, SP_EINPUT, "%s: %s: missing object", d->path, obj);
        return -1;
    }
    if (H5Aexists_by_name(d->file, obj, name, H5P_DEFAULT) <= 0) {
        sp_fail(err, SP_EINPUT, "%s: attribute %s%s%s missing", d->path,
                strcmp(obj, "/") ? obj : "", "/", name);
        return -1;
    }
    hid_t a = H5Aopen_by_name(d->file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) sp_fail(err, SP_EINPUT, "%s: attribute %s/%s unreadable", d->path, obj, name);
    return a;
}

/* Reads a string attribute (fixed or variable length) into out. */
static int read_attr_string(hid_t a, char *out, size_t cap) {
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ft));
            char *s = NULL;
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(out, cap, "%s", s);
                H5free_memory(s);
                rc = 0;
            }
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(ft);
            char *tmp = calloc(1, sz + 1);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, sz + 1);
            H5Tset_cset(mt, H5Tget_cset(ft)); /* UTF-8 -> ASCII has no HDF5 conversion */
            if (tmp && H5Aread(a, mt, tmp) >= 0) {
                snprintf(out, cap, "%s", tmp);
                rc = 0;
            }
            H5Tclose(mt);
            free(tmp);
        }
    }
    H5Tclose(ft);
    return rc;
}

int sp_dataset_attr_string(sp_dataset *d, const char *obj, const char *name, char *out,
                           size_t cap, sp_error *err) {
    hid_t a = open_attr(d, obj, name, err);
    if (a < 0) return err ? err->code : SP_EINPUT;
    int rc = read_attr_string(a, out, cap);
    H5Aclose(a);
    if (rc) return sp_fail(err, SP_EINPUT, "%s: attribute %s is not a string", d->path, name);
    return SP_OK;
}

static int attr_num(sp_dataset *d, const char *obj, const char *name, hid_t mt, void *out,
                    sp_error *err) {
    hid_t a = open_attr(d, obj, name, err);
    if (a < 0) return err ? err->code : SP_EINPUT;
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ft);
    H5Tclose(ft);
    hid_t sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    herr_t st = -1;
    if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && np == 1) st = H5Aread(a, mt, out);
    H5Aclose(a);
    if (st < 0)
        return sp_fail(err, SP_EINPUT, "%s: attribute %s is not a numeric scalar", d->path, name);
    return SP_OK;
}

int sp_dataset_attr_double(sp_dataset *d, const char *obj, const char *name, double *out,
                           sp_error *err) {
    return attr_num(d, obj, name, H5T_NATIVE_DOUBLE, out, err);
}

int sp_dataset_attr_int64(sp_dataset *d, const char *obj, const char *name, int64_t *out,
                          sp_error *err) {
    return attr_num(d, obj, name, H5T_NATIVE_INT64, out, err);
}

/* ---- walking the file ---- */

typedef struct name_list {
    char **names;
    int n, cap;
    int *is_group;
} name_list;

static herr_t collect_cb(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    name_list *l = op;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return 0;
    H5I_type_t t = H5Iget_type(o);
    H5Oclose(o);
    if (t != H5I_DATASET && t != H5I_GROUP) return 0;
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 32;
        char **nn = realloc(l->names, sizeof(char *) * nc);
        if (!nn) return -1;
        l->names = nn;
        int *ng = realloc(l->is_group, sizeof(int) * nc);
        if (!ng) return -1;
        l->is_group = ng;
        l->cap = nc;
    }
    size_t len = strlen(name) + 2;
    char *s = malloc(len);
    if (!s) return -1;
    snprintf(s, len, "/%s", name);
    l->names[l->n] = s;
    l->is_group[l->n++] = t == H5I_GROUP;
    return 0;
}

static void names_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->is_group);
}

static int collect(hid_t file, name_list *l) {
    memset(l, 0, sizeof *l);
    return H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_cb, l) < 0 ? -1 : 0;
}

/* ---- fingerprint ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

typedef struct attr_hash_ctx {
    uint64_t h;
    int bad;
} attr_hash_ctx;

static herr_t hash_attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
    (void)info;
    attr_hash_ctx *c = op;
    c->h = fnv(c->h, name, strlen(name) + 1);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return c->bad = 1, 0;
    hid_t ft = H5Aget_type(a);
    if (H5Tget_class(ft) == H5T_STRING) {
        char s[4096];
        if (read_attr_string(a, s, sizeof s) == 0) c->h = fnv(c->h, s, strlen(s) + 1);
    } else {
        hid_t mt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
        hid_t sp = H5Aget_space(a);
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        size_t bytes = (size_t)(np > 0 ? np : 0) * H5Tget_size(mt);
        void *buf = malloc(bytes ? bytes : 1);
        if (buf && H5Aread(a, mt, buf) >= 0 && H5Tget_class(ft) != H5T_VLEN)
            c->h = fnv(c->h, buf, bytes);
        free(buf);
        H5Sclose(sp);
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return 0;
}

int sp_dataset_fingerprint(sp_dataset *d, uint64_t *out, sp_error *err) {
    attr_hash_ctx c = {0xcbf29ce484222325ull, 0};
    hsize_t pos = 0;
    if (H5Aiterate2(d->file, H5_INDEX_NAME, H5_ITER_INC, &pos, hash_attr_cb, &c) < 0 || c.bad)
        return sp_fail(err, SP_EINPUT, "%s: cannot read root attributes", d->path);
    name_list l;
    if (collect(d->file, &l)) {
        names_free(&l);
        return sp_fail(err, SP_EINPUT, "%s: cannot list contents", d->path);
    }
    int rc = SP_OK;
    for (int i = 0; i < l.n && !rc; i++) {
        if (l.is_group[i]) continue;
        c.h = fnv(c.h, l.names[i], strlen(l.names[i]) + 1);
        hid_t id = H5Dopen2(d->file, l.names[i], H5P_DEFAULT);
        if (id < 0) {
            rc = sp_fail(err, SP_EINPUT, "%s: %s: cannot open", d->path, l.names[i]);
            break;
        }
        hid_t ft = H5Dget_type(id), sp = H5Dget_space(id);
        int rank = H5Sget_simple_extent_ndims(sp);
        hsize_t dims[32] = {0};
        if (rank > 0 && rank <= 32) H5Sget_simple_extent_dims(sp, dims, NULL);
        H5T_class_t cls = H5Tget_class(ft);
        int32_t meta[3] = {(int32_t)cls, (int32_t)H5Tget_size(ft), rank};
        c.h = fnv(c.h, meta, sizeof meta);
        c.h = fnv(c.h, dims, sizeof(hsize_t) * (rank > 0 && rank <= 32 ? rank : 0));
        if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && rank >= 1 && rank <= 32 && dims[0] > 0) {
            hid_t mt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
            size_t row = H5Tget_size(mt);
            for (int k = 1; k < rank; k++) row *= dims[k];
            void *buf = malloc(row ? row : 1);
            hsize_t rows[2] = {0, dims[0] - 1};
            for (int r = 0; r < 2 && buf; r++) {
                hsize_t start[32] = {0}, cnt[32];
                for (int k = 0; k < rank; k++) cnt[k] = dims[k];
                start[0] = rows[r];
                cnt[0] = 1;
                hid_t fs = H5Dget_space(id);
                hid_t ms = H5Screate_simple(rank, cnt, NULL);
                if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0 ||
                    H5Dread(id, mt, ms, fs, H5P_DEFAULT, buf) < 0)
                    rc = sp_fail(err, SP_EINPUT, "%s: %s: read error", d->path, l.names[i]);
                else
                    c.h = fnv(c.h, buf, row);
                H5Sclose(ms);
                H5Sclose(fs);
            }
            free(buf);
            H5Tclose(mt);
        }
        H5Sclose(sp);
        H5Tclose(ft);
        H5Dclose(id);
    }
    names_free(&l);
    if (!rc) *out = c.h;
    return rc;
}

/* ---- inspect ---- */

static void type_name(hid_t t, char *buf, size_t cap) {
    size_t sz = H5Tget_size(t);
    switch (H5Tget_class(t)) {
    case H5T_INTEGER:
        snprintf(buf, cap, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", sz * 8);
        break;
    case H5T_FLOAT: snprintf(buf, cap, "float%zu", sz * 8); break;
    case H5T_STRING: snprintf(buf, cap, "string"); break;
    default: snprintf(buf, cap, "other"); break;
    }
}

static herr_t print_attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
    (void)info;
    FILE *out = op;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ft);
    fprintf(out, "    %s = ", name);
    if (cls == H5T_STRING) {
        char s[4096];
        if (read_attr_string(a, s, sizeof s) == 0) {
            size_t n = strlen(s);
            if (n > 200) fprintf(out, "\"%.200s...\" (%zu chars)", s, n);
            else fprintf(out, "\"%s\"", s);
        } else {
            fprintf(out, "(unreadable string)");
        }
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
        hid_t sp = H5Aget_space(a);
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        H5Sclose(sp);
        double *v = malloc(sizeof(double) * (np > 0 ? np : 1));
        if (v && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) {
            if (np != 1) fprintf(out, "[");
            for (hssize_t i = 0; i < np && i < 8; i++)
                fprintf(out, "%s%.10g", i ? ", " : "", v[i]);
            if (np > 8) fprintf(out, ", ... (%lld values)", (long long)np);
            if (np != 1) fprintf(out, "]");
        }
        free(v);
    } else {
        fprintf(out, "(non-numeric)");
    }
    fprintf(out, "\n");
    H5Tclose(ft);
    H5Aclose(a);
    return 0;
}

static void print_dataset(hid_t file, const char *name, FILE *out) {
    hid_t id = H5Dopen2(file, name, H5P_DEFAULT);
    if (id < 0) return;
    hid_t ft = H5Dget_type(id), sp = H5Dget_space(id), dcpl = H5Dget_create_plist(id);
    char tn[32];
    type_name(ft, tn, sizeof tn);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[32];
    if (rank > 32) rank = 32;
    if (rank > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
    fprintf(out, "  %-20s %-8s (", name, tn);
    for (int i = 0; i < rank; i++) fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    fprintf(out, ")");
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t ch[32];
        int cr = H5Pget_chunk(dcpl, 32, ch);
        fprintf(out, "  chunks (");
        for (int i = 0; i < cr; i++) fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)ch[i]);
        fprintf(out, ")");
        int nf = H5Pget_nfilters(dcpl);
        for (int i = 0; i < nf; i++) {
            unsigned flags, cd[8];
            size_t ncd = 8;
            char fname[64];
            H5Z_filter_t f = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname,
                                            fname, NULL);
            if (f == H5Z_FILTER_DEFLATE) fprintf(out, " deflate=%u", ncd ? cd[0] : 0);
            else if (f == H5Z_FILTER_SHUFFLE) fprintf(out, " shuffle");
            else fprintf(out, " filter=%d", (int)f);
        }
    } else {
        fprintf(out, "  contiguous");
    }
    fprintf(out, "\n");
    hsize_t pos = 0;
    H5Aiterate2(id, H5_INDEX_NAME, H5_ITER_INC, &pos, print_attr_cb, out);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(ft);
    H5Dclose(id);
}

#define HIST_MAX 64

static void print_histogram(sp_dataset *d, const char *name, FILE *out) {
    ds_entry *e;
    sp_error err;
    if (get_entry(d, name, &e, &err) || e->rank != 1 || !e->is_int) return;
    long n = (long)e->dims[0], hist[HIST_MAX + 1] = {0}, other = 0;
    double sum = 0;
    enum { B = 65536 };
    long *idx = malloc(sizeof(long) * B);
    int32_t *v = malloc(sizeof(int32_t) * B);
    int ok = idx && v;
    for (long s = 0; ok && s < n; s += B) {
        long nb = n - s < B ? n - s : B;
        for (long i = 0; i < nb; i++) idx[i] = s + i;
        if (sp_dataset_read_rows_i32(d, name, idx, nb, v, 1, &err)) ok = 0;
        for (long i = 0; ok && i < nb; i++) {
            if (v[i] >= 0 && v[i] <= HIST_MAX) hist[v[i]]++;
            else other++;
            sum += v[i];
        }
    }
    free(idx);
    free(v);
    if (!ok) {
        fprintf(out, "  %s: unreadable\n", name);
        return;
    }
    fprintf(out, "  %-14s n=%ld", name, n);
    int top = 0;
    for (int k = 0; k <= HIST_MAX; k++)
        if (hist[k]) top = k;
    for (int k = 0; k <= top; k++)
        fprintf(out, "  %d: %ld (%.1f%%)", k, hist[k], n ? 100.0 * hist[k] / n : 0.0);
    if (other) fprintf(out, "  other: %ld", other);
    fprintf(out, "  mean %.4f\n", n ? sum / n : 0.0);
}

int sp_dataset_inspect(const char *path, FILE *out, sp_error *err) {
    sp_dataset *d;
    int rc = sp_dataset_open(&d, path, err);
    if (rc) return rc;
    name_list l;
    if (collect(d->file, &l)) {
        names_free(&l);
        sp_dataset_close(d);
        return sp_fail(err, SP_EINPUT, "%s: cannot list contents", path);
    }
    struct stat st;
    stat(path, &st);
    fprintf(out, "file: %s (%lld bytes)\n", path, (long long)st.st_size);
    fprintf(out, "root attributes:\n");
    hsize_t pos = 0;
    H5Aiterate2(d->file, H5_INDEX_NAME, H5_ITER_INC, &pos, print_attr_cb, out);
    fprintf(out, "datasets:\n");
    for (int i = 0; i < l.n; i++)
        if (!l.is_group[i]) print_dataset(d->file, l.names[i], out);
    int any = 0;
    for (int i = 0; i < l.n; i++) {
        size_t n = strlen(l.names[i]);
        if (l.is_group[i] || n < 7 || strcmp(l.names[i] + n - 7, "/counts")) continue;
        if (!any) fprintf(out, "count histogram:\n");
        any = 1;
        print_histogram(d, l.names[i], out);
    }
    names_free(&l);
    sp_dataset_close(d);
    return SP_OK;
}

/* ---- scenes files ---- */

int sp_scenes_data_open(sp_scenes_data *s, const char *path, sp_error *err) {
    memset(s, 0, sizeof *s);
    int rc = sp_dataset_open(&s->ds, path, err);
    if (rc) return rc;
    /* train and test are required; valid (model selection) is optional. */
    static const char *splits[3] = {"train", "test", "valid"};
    long n[3] = {0, 0, -1}, maxo = -1;
    for (int i = 0; i < 3 && !rc; i++) {
        char name[64];
        long dims[3];
        if (i == 2 && !sp_dataset_has(s->ds, "/valid/images")) break;
        const long img_row[2] = {SP_SCENE_SIZE, SP_SCENE_SIZE};
        snprintf(name, sizeof name, "/%s/images", splits[i]);
        rc = sp_dataset_check(s->ds, name, 3, img_row, dims, err);
        if (rc) break;
        n[i] = dims[0];
        ds_entry *e;
        get_entry(s->ds, name, &e, err);
        if (e->is_int && !e->has_scale) {
            rc = sp_fail(err, SP_EINPUT, "%s: %s: integer images need a `scale` attribute",
                         path, name);
            break;
        }
        snprintf(name, sizeof name, "/%s/counts", splits[i]);
        rc = sp_dataset_check(s->ds, name, 1, NULL, dims, err);
        if (!rc && dims[0] != n[i])
            rc = sp_fail(err, SP_EINPUT, "%s: %s: %ld rows, images have %ld", path, name,
                         dims[0], n[i]);
        if (rc) break;
        snprintf(name, sizeof name, "/%s/boxes", splits[i]);
        const long box_row[2] = {maxo, 4};
        rc = sp_dataset_check(s->ds, name, 3, box_row, dims, err);
        if (!rc && dims[0] != n[i])
            rc = sp_fail(err, SP_EINPUT, "%s: %s: %ld rows, images have %ld", path, name,
                         dims[0], n[i]);
        if (!rc && dims[1] < 1)
            rc = sp_fail(err, SP_EINPUT, "%s: %s: no object slots", path, name);
        maxo = dims[1];
    }
    if (rc) {
        sp_dataset_close(s->ds);
        memset(s, 0, sizeof *s);
        return rc;
    }
    s->n_train = n[0];
    s->n_test = n[1];
    s->n_valid = n[2];
    s->max_objects = (int)maxo;
    return SP_OK;
}

void sp_scenes_data_close(sp_scenes_data *s) {
    if (!s) return;
    sp_dataset_close(s->ds);
    memset(s, 0, sizeof *s);
}

long sp_scenes_data_size(const sp_scenes_data *s, const char *split) {
    if (!strcmp(split, "train")) return s->n_train;
    if (!strcmp(split, "test")) return s->n_test;
    if (!strcmp(split, "valid")) return s->n_valid;
    return -1;
}

static const char *const SCENE_PARTS[3] = {"counts", "boxes", "images"};

static void scene_part(char *name, size_t cap, const char *split, int i) {
    snprintf(name, cap, "/%s/%s", split, SCENE_PARTS[i]);
}

/* A split's three arrays laid out one after another in a block, each at a
 * 64-byte boundary: their offsets, and the block's size in *total. */
static int scenes_layout(sp_scenes_data *s, const char *split, size_t off[3], size_t *total,
                         sp_error *err) {
    *total = 0;
    for (int i = 0; i < 3; i++) {
        char name[64];
        size_t b;
        scene_part(name, sizeof name, split, i);
        int rc = sp_dataset_preload_bytes(s->ds, name, &b, err);
        if (rc) return rc;
        off[i] = *total;
        *total += (b + 63) / 64 * 64;
    }
    return SP_OK;
}

int sp_scenes_data_preload_bytes(sp_scenes_data *s, const char *split, size_t *bytes,
                                 sp_error *err) {
    size_t off[3];
    *bytes = 0;
    if (sp_scenes_data_size(s, split) < 0) return SP_OK;
    return scenes_layout(s, split, off, bytes, err);
}

int sp_scenes_data_fill_part(sp_scenes_data *s, const char *split, void *block, int part,
                             int parts, sp_error *err) {
    size_t off[3], total;
    if (sp_scenes_data_size(s, split) < 0) return SP_OK;
    if (parts < 1 || part < 0 || part >= parts)
        return sp_fail(err, SP_EINPUT, "%s: part %d of %d", s->ds->path, part, parts);
    int rc = scenes_layout(s, split, off, &total, err);
    const long n = sp_scenes_data_size(s, split);
    for (int i = 0; i < 3 && !rc; i++) {
        char name[64];
        scene_part(name, sizeof name, split, i);
        rc = sp_dataset_fill_rows(s->ds, name, (char *)block + off[i], n * part / parts,
                                  n * (part + 1) / parts, err);
    }
    return rc;
}

int sp_scenes_data_attach(sp_scenes_data *s, const char *split, void *block, int fill,
                          sp_error *err) {
    size_t off[3], total;
    if (sp_scenes_data_size(s, split) < 0) return SP_OK;
    int rc = scenes_layout(s, split, off, &total, err);
    for (int i = 0; i < 3 && !rc; i++) {
        char name[64];
        scene_part(name, sizeof name, split, i);
        rc = sp_dataset_attach(s->ds, name, (char *)block + off[i], fill, err);
    }
    return rc;
}

int sp_scenes_data_read(sp_scenes_data *s, const char *split, const long *idx, long n,
                        float *images, int32_t *counts, float *boxes, sp_error *err) {
    if (sp_scenes_data_size(s, split) < 0)
        return sp_fail(err, SP_EINPUT, "%s: no split '%s' (train, test%s)", s->ds->path, split,
                       s->n_valid >= 0 ? ", valid" : "");
    char name[64];
    snprintf(name, sizeof name, "/%s/images", split);
    int rc = sp_dataset_read_rows(s->ds, name, idx, n, images, SP_SCENE_PIXELS, err);
    if (!rc && counts) {
        snprintf(name, sizeof name, "/%s/counts", split);
        rc = sp_dataset_read_rows_i32(s->ds, name, idx, n, counts, 1, err);
    }
    if (!rc && boxes) {
        snprintf(name, sizeof name, "/%s/boxes", split);
        rc = sp_dataset_read_rows(s->ds, name, idx, n, boxes, 4L * s->max_objects, err);
    }
    return rc;
}
