/* HDF5 checkpoints (see checkpoint.h): atomic write (temp name, fsync,
 * rename, directory fsync), keep-newest-K, verified load with fallback to the
 * previous checkpoint when the newest is damaged. */
#include "supair/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"
#include "supair/dist.h" /* sp_fnv1a64: one checksum function for ranks and files */

#define PATH_CAP 4096

static const char *const BUF_GROUP[3] = {"params", "adam/m", "adam/v"};
static const char *const BUF_WHAT[3] = {"parameter", "Adam m of", "Adam v of"};

static const float *buffer_of(const sp_params *p, int k) {
    return k == 0 ? p->val : k == 1 ? p->adam_m : p->adam_v;
}

/* ---- names ---- */

/* 1 when name is exactly "step_" + at least 8 digits + ".h5". Temp files
 * (".tmp_step_...h5.PID") and anything else never match. */
static int parse_step_name(const char *name, int64_t *step) {
    if (strncmp(name, "step_", 5) != 0) return 0;
    const char *d = name + 5;
    size_t nd = strspn(d, "0123456789");
    if (nd < 8 || nd > 18 || strcmp(d + nd, ".h5") != 0) return 0;
    *step = strtoll(d, NULL, 10);
    return 1;
}

static int ckpt_dir(char *out, size_t cap, const char *run_dir, sp_error *err) {
    if ((size_t)snprintf(out, cap, "%s/ckpt", run_dir) >= cap)
        return sp_fail(err, SP_EINPUT, "%s: run directory path too long", run_dir);
    return SP_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int sp_ckpt_list(const char *run_dir, int64_t **steps, int *n, sp_error *err) {
    *steps = NULL;
    *n = 0;
    char dir[PATH_CAP];
    int rc = ckpt_dir(dir, sizeof dir, run_dir, err);
    if (rc) return rc;
    DIR *dh = opendir(dir);
    if (!dh) {
        if (errno == ENOENT) return SP_OK;
        return sp_fail(err, SP_ERUNTIME, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    }
    int cap = 0;
    int64_t *s = NULL;
    struct dirent *de;
    while ((de = readdir(dh))) {
        int64_t step;
        if (!parse_step_name(de->d_name, &step)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *t = realloc(s, (size_t)cap * sizeof *t);
            if (!t) {
                free(s);
                closedir(dh);
                return sp_fail(err, SP_ERUNTIME, "out of memory listing %s", dir);
            }
            s = t;
        }
        s[(*n)++] = step;
    }
    closedir(dh);
    if (*n) qsort(s, (size_t)*n, sizeof *s, cmp_i64);
    *steps = s;
    return SP_OK;
}

static int step_path(char *out, size_t cap, const char *run_dir, int64_t step, sp_error *err) {
    if ((size_t)snprintf(out, cap, "%s/ckpt/step_%08lld.h5", run_dir, (long long)step) >= cap)
        return sp_fail(err, SP_EINPUT, "%s: run directory path too long", run_dir);
    return SP_OK;
}

/* ---- checksums ---- */

static int cmp_entry_name(const void *a, const void *b) {
    const sp_param_entry *x = *(const sp_param_entry *const *)a;
    const sp_param_entry *y = *(const sp_param_entry *const *)b;
    return strcmp(x->name, y->name);
}

/* Entries in ascending name order (the checksum's order); malloc'd. */
static const sp_param_entry **sorted_entries(const sp_params *p) {
    const sp_param_entry **ord = malloc((size_t)(p->n_entries ? p->n_entries : 1) * sizeof *ord);
    if (!ord) return NULL;
    for (int i = 0; i < p->n_entries; i++) ord[i] = &p->entries[i];
    qsort(ord, (size_t)p->n_entries, sizeof *ord, cmp_entry_name);
    return ord;
}

/* The file checksum over three buffers laid out like p (values, m, v). */
static uint64_t checksum_of(const sp_params *p, const sp_param_entry **ord, const float *const bufs[3]) {
    uint64_t h = SP_FNV_OFFSET;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < p->n_entries; i++)
            h = sp_fnv1a64(h, bufs[k] + ord[i]->offset, (size_t)ord[i]->size * sizeof(float));
    return h;
}

static long array_count(const sp_ckpt_array *a) {
    long n = 1;
    for (int d = 0; d < a->ndim; d++) n *= (long)a->shape[d];
    return n;
}

static size_t array_bytes(const sp_ckpt_array *a) {
    return (size_t)array_count(a) * (a->type == SP_CKPT_I64 ? sizeof(int64_t) : sizeof(float));
}

/* ---- write ---- */

static int check_finite(const sp_params *p, const sp_ckpt_array *st, int n_state, sp_error *err) {
    for (int k = 0; k < 3; k++) {
        const float *b = buffer_of(p, k);
        for (int i = 0; i < p->n_entries; i++) {
            const sp_param_entry *e = &p->entries[i];
            for (long j = 0; j < e->size; j++)
                if (!isfinite(b[e->offset + j]))
                    return sp_fail(err, SP_ERUNTIME,
                                   "refusing to write a checkpoint: %s '%s' [%ld] is %g", BUF_WHAT[k],
                                   e->name, j, (double)b[e->offset + j]);
        }
    }
    for (int s = 0; s < n_state; s++) {
        if (st[s].type != SP_CKPT_F32) continue;
        const float *b = st[s].data;
        long n = array_count(&st[s]);
        for (long j = 0; j < n; j++)
            if (!isfinite(b[j]))
                return sp_fail(err, SP_ERUNTIME, "refusing to write a checkpoint: state '%s' [%ld] is %g",
                               st[s].name, j, (double)b[j]);
    }
    return SP_OK;
}

static hid_t write_dataset(hid_t file, const char *name, hid_t ftype, hid_t mtype, int ndim,
                           const hsize_t *dims, const void *data) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t sp = ndim > 0 ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t ds = sp < 0 ? -1 : H5Dcreate2(file, name, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (ds >= 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        H5Dclose(ds);
        ds = -1;
    }
    if (sp >= 0) H5Sclose(sp);
    H5Pclose(lcpl);
    return ds;
}

static int fsync_path(const char *path, int directory) {
    int fd = open(path, O_RDONLY | (directory ? O_DIRECTORY : 0));
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Writes every object into the open file f; returns 0 or -1 with what[]
 * naming the object that failed. */
static int write_contents(hid_t f, const sp_params *p, const sp_ckpt_meta *meta,
                          const sp_ckpt_array *state, int n_state, char *what, size_t cap) {
    const sp_param_entry **ord = sorted_entries(p);
    if (!ord) {
        snprintf(what, cap, "(out of memory)");
        return -1;
    }
    const float *bufs[3] = {p->val, p->adam_m, p->adam_v};
    uint64_t sum = checksum_of(p, ord, bufs);
    free(ord);
    snprintf(what, cap, "attributes");
    if (sp_h5_attr_set_i64(f, "step", meta->step) || sp_h5_attr_set_i64(f, "epoch", meta->epoch) ||
        sp_h5_attr_set_i64(f, "epoch_pos", meta->epoch_pos) ||
        sp_h5_attr_set_u64(f, "seed", meta->seed) ||
        sp_h5_attr_set_u64(f, "structure_seed", meta->structure_seed) ||
        sp_h5_attr_set_i64(f, "world_size", meta->world_size) ||
        sp_h5_attr_set_f64(f, "time_s", meta->time_s) ||
        sp_h5_attr_set_fixed_str(f, "model", meta->model) ||
        sp_h5_attr_set_fixed_str(f, "config", meta->config ? meta->config : "") ||
        sp_h5_attr_set_u64(f, "checksum", sum) ||
        sp_h5_attr_set_fixed_str(f, "checksum_alg",
                           "fnv1a64 over /params, /adam/m, /adam/v bytes, names ascending"))
        return -1;
    char name[256];
    for (int k = 0; k < 3; k++) {
        const float *b = buffer_of(p, k);
        for (int i = 0; i < p->n_entries; i++) {
            const sp_param_entry *e = &p->entries[i];
            hsize_t dims[SP_MAX_DIMS];
            for (int d = 0; d < e->ndim; d++) dims[d] = (hsize_t)e->shape[d];
            snprintf(name, sizeof name, "/%s/%s", BUF_GROUP[k], e->name);
            hid_t ds = write_dataset(f, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, e->ndim, dims,
                                     b + e->offset);
            if (ds < 0) {
                snprintf(what, cap, "%s", name);
                return -1;
            }
            H5Dclose(ds);
        }
    }
    for (int s = 0; s < n_state; s++) {
        const sp_ckpt_array *a = &state[s];
        hsize_t dims[SP_MAX_DIMS];
        for (int d = 0; d < a->ndim && d < SP_MAX_DIMS; d++) dims[d] = (hsize_t)a->shape[d];
        snprintf(name, sizeof name, "/state/%s", a->name);
        snprintf(what, cap, "%s", name);
        if (a->ndim < 0 || a->ndim > SP_MAX_DIMS) return -1;
        int i64 = a->type == SP_CKPT_I64;
        hid_t ds = write_dataset(f, name, i64 ? H5T_STD_I64LE : H5T_IEEE_F32LE,
                                 i64 ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, a->ndim, dims, a->data);
        if (ds < 0) return -1;
        int rc = sp_h5_attr_set_u64(ds, "checksum", sp_fnv1a64(SP_FNV_OFFSET, a->data, array_bytes(a)));
        H5Dclose(ds);
        if (rc) return -1;
    }
    return 0;
}

static int write_file(const char *path, const sp_params *p, const sp_ckpt_meta *meta,
                      const sp_ckpt_array *state, int n_state, sp_error *err);

int sp_ckpt_write(const char *path, const sp_params *p, const sp_ckpt_meta *meta,
                  const sp_ckpt_array *state, int n_state, sp_error *err) {
    if (!sp_params_any_slab(p)) return write_file(path, p, meta, state, n_state, err);
    /* Files hold row-major arrays whatever the memory order: a copy of the
     * three buffers in that order (entries keep their offsets). */
    const size_t total = (size_t)p->total;
    float *rm = malloc(3 * total * sizeof *rm);
    if (!rm) return sp_fail(err, SP_ERUNTIME, "%s: out of memory for the row-major copy", path);
    sp_params lp = *p;
    lp.val = rm, lp.adam_m = rm + total, lp.adam_v = rm + 2 * total;
    sp_params_to_row_major(p, p->val, lp.val);
    sp_params_to_row_major(p, p->adam_m, lp.adam_m);
    sp_params_to_row_major(p, p->adam_v, lp.adam_v);
    int rc = write_file(path, &lp, meta, state, n_state, err);
    free(rm);
    return rc;
}

static int write_file(const char *path, const sp_params *p, const sp_ckpt_meta *meta,
                      const sp_ckpt_array *state, int n_state, sp_error *err) {
    sp_h5_quiet();
    int rc = check_finite(p, state, n_state, err);
    if (rc) return sp_error_wrap(err, "%s", path);
    char dir[PATH_CAP], tmp[PATH_CAP];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dlen = slash ? (int)(slash - path) : 1;
    const char *dsrc = slash ? path : ".";
    if (slash == path) dlen = 1; /* "/x.h5": the root directory */
    if ((size_t)snprintf(dir, sizeof dir, "%.*s", dlen, dsrc) >= sizeof dir ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.tmp_%s.%ld", dir, base, (long)getpid()) >= sizeof tmp)
        return sp_fail(err, SP_EINPUT, "%s: path too long", path);

    hid_t fapl = sp_h5_fapl(0);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    char reason[512], what[300];
    if (f < 0) sp_h5_reason(reason, sizeof reason);
    H5Pclose(fapl);
    if (f < 0) {
        return sp_fail(err, SP_ERUNTIME, "%s: cannot create checkpoint file: %s", tmp, reason);
    }
    int bad = write_contents(f, p, meta, state, n_state, what, sizeof what);
    if (bad) sp_h5_reason(reason, sizeof reason);
    if (H5Fclose(f) < 0 && !bad) {
        bad = 1;
        snprintf(what, sizeof what, "(closing the file)");
        sp_h5_reason(reason, sizeof reason);
    }
    if (bad) {
        unlink(tmp);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot write %s: %s", tmp, what, reason);
    }
    /* Data on disk before the name appears, and the name itself durable. */
    if (fsync_path(tmp, 0) != 0) {
        int e = errno;
        unlink(tmp);
        return sp_fail(err, SP_ERUNTIME, "%s: fsync failed: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot rename to %s: %s", tmp, path, strerror(e));
    }
    if (fsync_path(dir, 1) != 0)
        return sp_fail(err, SP_ERUNTIME, "%s: fsync of the directory failed: %s", dir, strerror(errno));
    return SP_OK;
}

static int make_ckpt_dir(const char *run_dir, char *dir, size_t cap, sp_error *err) {
    int rc = ckpt_dir(dir, cap, run_dir, err);
    if (rc) return rc;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return sp_fail(err, SP_ERUNTIME, "%s: cannot create directory: %s", dir, strerror(errno));
    return SP_OK;
}

int sp_ckpt_save(const char *run_dir, const sp_params *p, const sp_ckpt_meta *meta,
                 const sp_ckpt_array *state, int n_state, int keep, char *path_out,
                 size_t path_cap, sp_error *err) {
    char dir[PATH_CAP], path[PATH_CAP];
    int rc = make_ckpt_dir(run_dir, dir, sizeof dir, err);
    if (!rc) rc = step_path(path, sizeof path, run_dir, meta->step, err);
    if (!rc) rc = sp_ckpt_write(path, p, meta, state, n_state, err);
    if (rc) return rc;
    if (path_out && path_cap) snprintf(path_out, path_cap, "%s", path);
    if (keep <= 0) return SP_OK;
    int64_t *steps;
    int n;
    rc = sp_ckpt_list(run_dir, &steps, &n, err);
    if (rc) return rc;
    for (int i = 0; i < n - keep; i++) {
        char old[PATH_CAP];
        if (step_path(old, sizeof old, run_dir, steps[i], NULL) == SP_OK && unlink(old) != 0 &&
            errno != ENOENT)
            sp_warn("%s: cannot delete old checkpoint: %s", old, strerror(errno));
    }
    free(steps);
    return SP_OK;
}

int sp_ckpt_save_best(const char *run_dir, const sp_params *p, const sp_ckpt_meta *meta,
                      const sp_ckpt_array *state, int n_state, sp_error *err) {
    char dir[PATH_CAP], path[PATH_CAP];
    int rc = make_ckpt_dir(run_dir, dir, sizeof dir, err);
    if (rc) return rc;
    if ((size_t)snprintf(path, sizeof path, "%s/best.h5", dir) >= sizeof path)
        return sp_fail(err, SP_EINPUT, "%s: run directory path too long", run_dir);
    return sp_ckpt_write(path, p, meta, state, n_state, err);
}

/* ---- read ---- */

static int read_meta_from(hid_t f, const char *path, sp_ckpt_meta *m, sp_error *err) {
    memset(m, 0, sizeof *m);
    const char *missing = NULL;
    char *model = NULL;
    if (sp_h5_attr_get_i64(f, "step", &m->step)) missing = "step";
    else if (sp_h5_attr_get_i64(f, "epoch", &m->epoch)) missing = "epoch";
    else if (sp_h5_attr_get_i64(f, "epoch_pos", &m->epoch_pos)) missing = "epoch_pos";
    else if (sp_h5_attr_get_u64(f, "seed", &m->seed)) missing = "seed";
    else if (sp_h5_attr_get_u64(f, "structure_seed", &m->structure_seed)) missing = "structure_seed";
    else if (sp_h5_attr_get_i64(f, "world_size", &m->world_size)) missing = "world_size";
    else if (sp_h5_attr_get_str(f, "model", &model)) missing = "model";
    else if (sp_h5_attr_get_str(f, "config", &m->config)) missing = "config";
    if (missing) {
        free(model);
        free(m->config);
        m->config = NULL;
        return sp_fail(err, SP_ERUNTIME, "%s: not a complete checkpoint (attribute '%s' unreadable)",
                       path, missing);
    }
    if (sp_h5_attr_get_f64(f, "time_s", &m->time_s)) m->time_s = 0; /* older files */
    snprintf(m->model, sizeof m->model, "%s", model);
    free(model);
    return SP_OK;
}

static hid_t open_ckpt(const char *path, sp_error *err) {
    sp_h5_quiet();
    if (access(path, F_OK) != 0) {
        sp_fail(err, SP_EINPUT, "%s: no such checkpoint file", path);
        return -1;
    }
    hid_t fapl = sp_h5_fapl(0);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    char reason[512];
    if (f < 0) sp_h5_reason(reason, sizeof reason);
    H5Pclose(fapl);
    if (f < 0) {
        sp_fail(err, SP_ERUNTIME, "%s: unreadable checkpoint (damaged or truncated?): %s", path, reason);
    }
    return f;
}

int sp_ckpt_read_meta(const char *path, sp_ckpt_meta *meta, sp_error *err) {
    hid_t f = open_ckpt(path, err);
    if (f < 0) return err ? err->code : SP_ERUNTIME;
    int rc = read_meta_from(f, path, meta, err);
    H5Fclose(f);
    return rc;
}

/* Dataset names below a group, collected by H5Lvisit. */
typedef struct name_list {
    char **names;
    int n, cap;
    int oom;
} name_list;

static herr_t collect_datasets(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    name_list *l = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1; /* damaged: stop the visit with an error */
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds) return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **t = realloc(l->names, (size_t)cap * sizeof *t);
        if (!t) {
            l->oom = 1;
            return -1;
        }
        l->names = t;
        l->cap = cap;
    }
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) {
        l->oom = 1;
        return -1;
    }
    l->n++;
    return 0;
}

static void name_list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* Lists the datasets below group gname (absent group: empty list). */
static int list_group(hid_t f, const char *gname, const char *path, name_list *l, sp_error *err) {
    memset(l, 0, sizeof *l);
    if (H5Lexists(f, gname, H5P_DEFAULT) <= 0) return SP_OK;
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    herr_t rc = g < 0 ? -1 : H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, collect_datasets, l);
    char reason[512] = "";
    if (rc < 0) sp_h5_reason(reason, sizeof reason);
    if (g >= 0) H5Gclose(g);
    if (rc < 0) {
        int oom = l->oom;
        name_list_free(l);
        if (oom) return sp_fail(err, SP_ERUNTIME, "out of memory listing %s in %s", gname, path);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot list %s (damaged?): %s", path, gname, reason);
    }
    return SP_OK;
}

static void format_shape(char *out, size_t cap, int ndim, const hsize_t *dims) {
    size_t pos = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && pos < cap; d++)
        pos += (size_t)snprintf(out + pos, cap - pos, "%s%llu", d ? ", " : "", (unsigned long long)dims[d]);
    if (pos < cap) snprintf(out + pos, cap - pos, ")");
}

/* Reads /GROUP/NAME of entry e into dst after checking its shape. */
static int read_param(hid_t f, const char *path, int k, const sp_param_entry *e, float *dst,
                      sp_error *err) {
    char name[256], reason[512];
    snprintf(name, sizeof name, "/%s/%s", BUF_GROUP[k], e->name);
    /* H5Lexists fails (< 0) when an intermediate group is missing: absent too. */
    hid_t ds = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    if (ds < 0) {
        if (k == 0)
            return sp_fail(err, SP_EINPUT,
                           "%s: the model's parameter '%s' is not in the checkpoint (different model "
                           "or shape-changing config?)",
                           path, e->name);
        return sp_fail(err, SP_ERUNTIME, "%s: %s is missing (damaged checkpoint)", path, name);
    }
    hid_t sp = H5Dget_space(ds);
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t dims[8] = {0};
    int same = nd == e->ndim;
    if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
    for (int d = 0; same && d < nd; d++) same = dims[d] == (hsize_t)e->shape[d];
    if (sp >= 0) H5Sclose(sp);
    if (!same) {
        H5Dclose(ds);
        char have[128], want[128];
        hsize_t wd[SP_MAX_DIMS];
        for (int d = 0; d < e->ndim; d++) wd[d] = (hsize_t)e->shape[d];
        format_shape(have, sizeof have, nd < 0 ? 0 : nd > 8 ? 8 : nd, dims);
        format_shape(want, sizeof want, e->ndim, wd);
        return sp_fail(err, SP_EINPUT,
                       "%s: %s '%s' has shape %s in the checkpoint but %s in the model", path,
                       BUF_WHAT[k], e->name, have, want);
    }
    herr_t r = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst);
    if (r < 0) sp_h5_reason(reason, sizeof reason);
    H5Dclose(ds);
    if (r < 0) return sp_fail(err, SP_ERUNTIME, "%s: cannot read %s (damaged?): %s", path, name, reason);
    return SP_OK;
}

static int read_state(hid_t f, const char *path, sp_ckpt_state *out, sp_error *err) {
    memset(out, 0, sizeof *out);
    name_list l;
    int rc = list_group(f, "/state", path, &l, err);
    if (rc || l.n == 0) return rc;
    out->arrays = calloc((size_t)l.n, sizeof *out->arrays);
    if (!out->arrays) {
        name_list_free(&l);
        return sp_fail(err, SP_ERUNTIME, "out of memory reading state of %s", path);
    }
    for (int i = 0; i < l.n && rc == SP_OK; i++) {
        sp_ckpt_array *a = &out->arrays[out->n++];
        char name[300];
        snprintf(name, sizeof name, "/state/%s", l.names[i]);
        if (strlen(l.names[i]) >= sizeof a->name) {
            rc = sp_fail(err, SP_ERUNTIME, "%s: state name %s too long", path, name);
            break;
        }
        snprintf(a->name, sizeof a->name, "%s", l.names[i]);
        hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
        hid_t ft = ds < 0 ? -1 : H5Dget_type(ds);
        hid_t sp = ds < 0 ? -1 : H5Dget_space(ds);
        H5T_class_t c = ft < 0 ? H5T_NO_CLASS : H5Tget_class(ft);
        int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
        hsize_t dims[SP_MAX_DIMS] = {0};
        uint64_t stored = 0;
        if (ds < 0 || (c != H5T_FLOAT && c != H5T_INTEGER) || nd < 0 || nd > SP_MAX_DIMS ||
            sp_h5_attr_get_u64(ds, "checksum", &stored)) {
            rc = sp_fail(err, SP_ERUNTIME, "%s: unreadable state array %s (damaged?)", path, name);
        } else {
            H5Sget_simple_extent_dims(sp, dims, NULL);
            a->type = c == H5T_FLOAT ? SP_CKPT_F32 : SP_CKPT_I64;
            a->ndim = nd;
            for (int d = 0; d < nd; d++) a->shape[d] = (int64_t)dims[d];
            a->data = malloc(array_bytes(a) ? array_bytes(a) : 1);
            if (!a->data)
                rc = sp_fail(err, SP_ERUNTIME, "out of memory reading %s of %s", name, path);
            else if (H5Dread(ds, a->type == SP_CKPT_F32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, H5S_ALL,
                             H5S_ALL, H5P_DEFAULT, a->data) < 0)
                rc = sp_fail(err, SP_ERUNTIME, "%s: cannot read %s (damaged?)", path, name);
            else if (sp_fnv1a64(SP_FNV_OFFSET, a->data, array_bytes(a)) != stored)
                rc = sp_fail(err, SP_ERUNTIME, "%s: checksum mismatch in %s: the file is damaged", path,
                             name);
        }
        if (sp >= 0) H5Sclose(sp);
        if (ft >= 0) H5Tclose(ft);
        if (ds >= 0) H5Dclose(ds);
    }
    name_list_free(&l);
    if (rc) sp_ckpt_state_free(out);
    return rc;
}

int sp_ckpt_load(const char *path, sp_params *p, sp_ckpt_meta *meta, sp_ckpt_state *state,
                 sp_error *err) {
    hid_t f = open_ckpt(path, err);
    if (f < 0) return err ? err->code : SP_ERUNTIME;
    sp_ckpt_meta m;
    memset(&m, 0, sizeof m);
    sp_ckpt_state st = {NULL, 0};
    float *scratch = NULL;
    const sp_param_entry **ord = NULL;
    name_list extra = {NULL, 0, 0, 0};
    uint64_t stored = 0;
    int rc = read_meta_from(f, path, &m, err);
    if (rc) goto done;
    if (sp_h5_attr_get_u64(f, "checksum", &stored)) {
        rc = sp_fail(err, SP_ERUNTIME, "%s: not a complete checkpoint (attribute 'checksum' unreadable)", path);
        goto done;
    }
    /* A parameter the model does not have means another model or config. */
    rc = list_group(f, "/params", path, &extra, err);
    if (rc) goto done;
    for (int i = 0; i < extra.n; i++)
        if (sp_params_find(p, extra.names[i]) < 0) {
            rc = sp_fail(err, SP_EINPUT,
                         "%s: checkpoint parameter '%s' is not in the model (different model or "
                         "shape-changing config?)",
                         path, extra.names[i]);
            goto done;
        }
    size_t total = (size_t)p->total;
    /* Read into scratch so a damaged file leaves p untouched. */
    scratch = calloc(3 * total + 1, sizeof *scratch);
    ord = sorted_entries(p);
    if (!scratch || !ord) {
        rc = sp_fail(err, SP_ERUNTIME, "out of memory loading %s", path);
        goto done;
    }
    for (int k = 0; k < 3 && !rc; k++)
        for (int i = 0; i < p->n_entries && !rc; i++)
            rc = read_param(f, path, k, &p->entries[i], scratch + k * total + p->entries[i].offset, err);
    if (rc) goto done;
    const float *bufs[3] = {scratch, scratch + total, scratch + 2 * total};
    uint64_t sum = checksum_of(p, ord, bufs);
    if (sum != stored) {
        rc = sp_fail(err, SP_ERUNTIME,
                     "%s: parameter checksum mismatch (stored %016llx, computed %016llx): the file "
                     "is damaged",
                     path, (unsigned long long)stored, (unsigned long long)sum);
        goto done;
    }
    rc = read_state(f, path, &st, err);
    if (rc) goto done;
    if (sp_params_any_slab(p)) {
        /* memory order for slabbed entries: permuted into the free part
         * of scratch, then pointed at */
        float *mo = realloc(scratch, 6 * total * sizeof *scratch);
        if (!mo) {
            rc = sp_fail(err, SP_ERUNTIME, "out of memory loading %s", path);
            goto done;
        }
        scratch = mo;
        for (int k = 0; k < 3; k++) {
            sp_params_from_row_major(p, scratch + k * total, scratch + (3 + k) * total);
            bufs[k] = scratch + (3 + k) * total;
        }
    }
    /* Entry by entry so the buffers' zero padding stays as it is. */
    float *dst[3] = {p->val, p->adam_m, p->adam_v};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < p->n_entries; i++) {
            const sp_param_entry *e = &p->entries[i];
            memcpy(dst[k] + e->offset, bufs[k] + e->offset, (size_t)e->size * sizeof(float));
        }
    if (meta) {
        *meta = m;
        m.config = NULL;
    }
    if (state) {
        *state = st;
        st.arrays = NULL;
        st.n = 0;
    }
done:
    H5Fclose(f);
    free(m.config);
    sp_ckpt_state_free(&st);
    free(scratch);
    free(ord);
    name_list_free(&extra);
    return rc;
}

/* Removes DIR/ckpt/.tmp_* files whose writer process no longer exists (a
 * crash mid-write); a live writer's temp file is left alone. */
static void clean_temps(const char *dir) {
    DIR *dh = opendir(dir);
    if (!dh) return;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (strncmp(de->d_name, ".tmp_", 5) != 0) continue;
        const char *dot = strrchr(de->d_name, '.');
        if (!dot || !dot[1] || strspn(dot + 1, "0123456789") != strlen(dot + 1)) continue;
        long pid = strtol(dot + 1, NULL, 10);
        if (pid == (long)getpid() || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[PATH_CAP];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path) continue;
        if (unlink(path) == 0) sp_info("removed %s left by a crashed writer", path);
    }
    closedir(dh);
}

int sp_ckpt_load_latest(const char *run_dir, sp_params *p, sp_ckpt_meta *meta,
                        sp_ckpt_state *state, int *found, char *path_out, size_t path_cap,
                        sp_error *err) {
    *found = 0;
    char dir[PATH_CAP];
    int rc = ckpt_dir(dir, sizeof dir, run_dir, err);
    if (rc) return rc;
    clean_temps(dir);
    int64_t *steps;
    int n;
    rc = sp_ckpt_list(run_dir, &steps, &n, err);
    if (rc) return rc;
    int damaged = 0;
    char newest[PATH_CAP] = "";
    for (int i = n - 1; i >= 0; i--) {
        char path[PATH_CAP];
        rc = step_path(path, sizeof path, run_dir, steps[i], err);
        if (rc) break;
        if (!newest[0]) snprintf(newest, sizeof newest, "%s", path);
        rc = sp_ckpt_load(path, p, meta, state, err);
        if (rc == SP_OK) {
            *found = 1;
            if (path_out && path_cap) snprintf(path_out, path_cap, "%s", path);
            break;
        }
        /* A mismatch with the model holds for every file of the run. */
        if (rc == SP_EINPUT) break;
        damaged++;
        sp_warn("%s; falling back to the previous checkpoint", err ? err->msg : path);
        rc = SP_OK;
    }
    free(steps);
    if (rc) return rc;
    if (!*found && damaged)
        return sp_fail(err, SP_ERUNTIME, "%s: none of the %d checkpoints is readable (newest: %s)", dir,
                       damaged, newest);
    return SP_OK;
}

void sp_ckpt_meta_free(sp_ckpt_meta *m) {
    if (!m) return;
    free(m->config);
    m->config = NULL;
}

const sp_ckpt_array *sp_ckpt_state_find(const sp_ckpt_state *s, const char *name) {
    for (int i = 0; s && i < s->n; i++)
        if (!strcmp(s->arrays[i].name, name)) return &s->arrays[i];
    return NULL;
}

void sp_ckpt_state_free(sp_ckpt_state *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->arrays[i].data);
    free(s->arrays);
    s->arrays = NULL;
    s->n = 0;
}
