/* SWMR metrics file (see metrics.h): writer with buffered rows and periodic
 * flushes, resume by rewriting the kept rows, and a concurrent reader. */
#include "supair/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"
#include "supair/timer.h"

#define PATH_CAP 4096
#define CHUNK_ROWS 512

static const char *const GROUP_NAME[2] = {"train", "eval"};

typedef struct wgroup {
    int ncols;        /* step included, at index 0 */
    char **names;
    hid_t *ds;
    int64_t written;  /* rows in the file */
    int npend, cap;   /* buffered rows */
    int64_t *pend_step;
    double *pend;     /* (cap, ncols - 1) row-major */
    int has_last;
    int64_t last_step;
    double *last;     /* (ncols - 1) */
} wgroup;

struct sp_metrics {
    char path[PATH_CAP];
    hid_t file;
    wgroup g[2];
    int flush_rows;
    double flush_s, last_flush;
    double *col;      /* (cap) one column of the buffered rows */
};

typedef struct rgroup {
    int ncols;
    char **names;
    hid_t *ds;
} rgroup;

struct sp_metrics_reader {
    hid_t file;
    int swmr;
    rgroup g[2];
};

static void free_names(char **names, int n) {
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
}

/* ---- reader ---- */

typedef struct iter_names {
    char **names;
    int n, cap, oom;
} iter_names;

static herr_t collect_link(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    iter_names *it = data;
    if (it->n == it->cap) {
        int cap = it->cap ? 2 * it->cap : 16;
        char **t = realloc(it->names, (size_t)cap * sizeof *t);
        if (!t) {
            it->oom = 1;
            return -1;
        }
        it->names = t;
        it->cap = cap;
    }
    if (!(it->names[it->n] = strdup(name))) {
        it->oom = 1;
        return -1;
    }
    it->n++;
    return 0;
}

/* Opens every dataset of /GROUP in creation order (an absent group is empty). */
static int reader_group(sp_metrics_reader *r, int gi, const char *path, sp_error *err) {
    rgroup *g = &r->g[gi];
    if (H5Lexists(r->file, GROUP_NAME[gi], H5P_DEFAULT) <= 0) return SP_OK;
    hid_t gid = H5Gopen2(r->file, GROUP_NAME[gi], H5P_DEFAULT);
    if (gid < 0) return sp_fail(err, SP_ERUNTIME, "%s: cannot open group /%s", path, GROUP_NAME[gi]);
    iter_names it = {NULL, 0, 0, 0};
    hsize_t idx = 0;
    /* Files written here track creation order; others fall back to names. */
    herr_t rc = H5Literate(gid, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, collect_link, &it);
    if (rc < 0 && !it.oom) {
        free_names(it.names, it.n);
        memset(&it, 0, sizeof it);
        idx = 0;
        rc = H5Literate(gid, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link, &it);
    }
    if (rc < 0) {
        free_names(it.names, it.n);
        H5Gclose(gid);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot list /%s", path, GROUP_NAME[gi]);
    }
    g->names = it.names;
    g->ncols = it.n;
    g->ds = calloc((size_t)(it.n ? it.n : 1), sizeof *g->ds);
    int status = g->ds ? SP_OK : sp_fail(err, SP_ERUNTIME, "out of memory opening %s", path);
    for (int i = 0; i < g->ncols && !status; i++) {
        g->ds[i] = H5Dopen2(gid, g->names[i], H5P_DEFAULT);
        if (g->ds[i] < 0)
            status = sp_fail(err, SP_ERUNTIME, "%s: cannot open /%s/%s", path, GROUP_NAME[gi], g->names[i]);
    }
    H5Gclose(gid);
    return status;
}

int sp_metrics_reader_open(sp_metrics_reader **out, const char *path, sp_error *err) {
    *out = NULL;
    sp_h5_quiet();
    if (access(path, F_OK) != 0) return sp_fail(err, SP_EINPUT, "%s: no such metrics file", path);
    sp_metrics_reader *r = calloc(1, sizeof *r);
    if (!r) return sp_fail(err, SP_ERUNTIME, "out of memory opening %s", path);
    hid_t fapl = sp_h5_fapl(1);
    r->swmr = 1;
    r->file = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    if (r->file < 0) {
        /* Not written in SWMR mode (older format): a plain read still works. */
        r->swmr = 0;
        r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    }
    char reason[512];
    if (r->file < 0) sp_h5_reason(reason, sizeof reason);
    H5Pclose(fapl);
    if (r->file < 0) {
        free(r);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot open metrics file: %s", path, reason);
    }
    int rc = reader_group(r, 0, path, err);
    if (!rc) rc = reader_group(r, 1, path, err);
    if (rc) {
        sp_metrics_reader_close(r);
        return rc;
    }
    *out = r;
    return SP_OK;
}

void sp_metrics_reader_close(sp_metrics_reader *r) {
    if (!r) return;
    for (int gi = 0; gi < 2; gi++) {
        for (int i = 0; r->g[gi].ds && i < r->g[gi].ncols; i++)
            if (r->g[gi].ds[i] > 0) H5Dclose(r->g[gi].ds[i]);
        free(r->g[gi].ds);
        free_names(r->g[gi].names, r->g[gi].ncols);
    }
    if (r->file >= 0) H5Fclose(r->file);
    free(r);
}

int sp_metrics_reader_ncols(const sp_metrics_reader *r, int group) {
    return group == 0 || group == 1 ? r->g[group].ncols : 0;
}

const char *sp_metrics_reader_col(const sp_metrics_reader *r, int group, int i) {
    if ((group != 0 && group != 1) || i < 0 || i >= r->g[group].ncols) return NULL;
    return r->g[group].names[i];
}

static int64_t ds_length(hid_t ds) {
    hid_t sp = H5Dget_space(ds);
    if (sp < 0) return -1;
    hsize_t n = 0;
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd == 1) H5Sget_simple_extent_dims(sp, &n, NULL);
    H5Sclose(sp);
    return nd == 1 ? (int64_t)n : -1;
}

int64_t sp_metrics_reader_rows(sp_metrics_reader *r, int group, sp_error *err) {
    if (group != 0 && group != 1) {
        sp_fail(err, SP_EINPUT, "metrics group %d unknown", group);
        return -1;
    }
    rgroup *g = &r->g[group];
    int64_t rows = -1;
    for (int i = 0; i < g->ncols; i++) {
        if (r->swmr && H5Drefresh(g->ds[i]) < 0) {
            sp_fail(err, SP_ERUNTIME, "cannot refresh /%s/%s", GROUP_NAME[group], g->names[i]);
            return -1;
        }
        int64_t n = ds_length(g->ds[i]);
        if (n < 0) {
            sp_fail(err, SP_ERUNTIME, "/%s/%s is not a 1-D dataset", GROUP_NAME[group], g->names[i]);
            return -1;
        }
        if (rows < 0 || n < rows) rows = n;
    }
    return rows < 0 ? 0 : rows;
}

int sp_metrics_reader_read(sp_metrics_reader *r, int group, const char *col, int64_t n, double *out,
                           sp_error *err) {
    if (group != 0 && group != 1) return sp_fail(err, SP_EINPUT, "metrics group %d unknown", group);
    rgroup *g = &r->g[group];
    int i = 0;
    while (i < g->ncols && strcmp(g->names[i], col)) i++;
    if (i == g->ncols) return sp_fail(err, SP_EINPUT, "metrics has no column /%s/%s", GROUP_NAME[group], col);
    if (n <= 0) return SP_OK;
    hid_t fs = H5Dget_space(g->ds[i]);
    hsize_t start = 0, count = (hsize_t)n;
    hid_t ms = H5Screate_simple(1, &count, NULL);
    herr_t rc = fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
    if (rc >= 0) rc = H5Dread(g->ds[i], H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, out);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (rc < 0)
        return sp_fail(err, SP_ERUNTIME, "cannot read %lld rows of /%s/%s", (long long)n,
                       GROUP_NAME[group], col);
    return SP_OK;
}

int sp_metrics_reader_attr(sp_metrics_reader *r, const char *name, char **text, sp_error *err) {
    *text = NULL;
    if (sp_h5_attr_get_str(r->file, name, text) == 0) return SP_OK;
    double v;
    if (sp_h5_attr_get_f64(r->file, name, &v) == 0) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.17g", v);
        *text = strdup(buf);
        if (!*text) return sp_fail(err, SP_ERUNTIME, "out of memory");
        return SP_OK;
    }
    return sp_fail(err, SP_EINPUT, "metrics file has no attribute '%s'", name);
}

/* ---- writer ---- */

/* The rows of an existing file kept on resume, by column name. */
typedef struct kept_group {
    int ncols;
    const char *const *names; /* the reader's */
    double **cols;            /* (ncols, n) */
    int64_t n;
} kept_group;

static void free_kept(kept_group *k) {
    for (int i = 0; k->cols && i < k->ncols; i++) free(k->cols[i]);
    free(k->cols);
    memset(k, 0, sizeof *k);
}

/* Reads group gi's rows with step <= resume_step (steps ascend). */
static int read_kept(sp_metrics_reader *r, int gi, int64_t resume_step, kept_group *k, sp_error *err) {
    memset(k, 0, sizeof *k);
    int64_t rows = sp_metrics_reader_rows(r, gi, err);
    if (rows < 0) return err ? err->code : SP_ERUNTIME;
    k->ncols = r->g[gi].ncols;
    k->names = (const char *const *)r->g[gi].names;
    k->cols = calloc((size_t)(k->ncols ? k->ncols : 1), sizeof *k->cols);
    if (!k->cols) return sp_fail(err, SP_ERUNTIME, "out of memory reading old metrics");
    for (int i = 0; i < k->ncols; i++) {
        k->cols[i] = malloc((size_t)(rows ? rows : 1) * sizeof(double));
        if (!k->cols[i]) return sp_fail(err, SP_ERUNTIME, "out of memory reading old metrics");
        int rc = sp_metrics_reader_read(r, gi, k->names[i], rows, k->cols[i], err);
        if (rc) return rc;
    }
    int si = 0;
    while (si < k->ncols && strcmp(k->names[si], "step")) si++;
    if (rows > 0 && si == k->ncols)
        return sp_fail(err, SP_ERUNTIME, "old metrics group /%s has no step column", GROUP_NAME[gi]);
    int64_t n = 0;
    while (n < rows && k->cols[si][n] <= (double)resume_step) n++;
    k->n = n;
    return SP_OK;
}

static int setup_group(wgroup *g, const char *const *cols, int n, int cap, sp_error *err) {
    g->ncols = n + 1;
    g->names = calloc((size_t)g->ncols, sizeof *g->names);
    g->ds = calloc((size_t)g->ncols, sizeof *g->ds);
    g->cap = cap;
    g->pend_step = malloc((size_t)cap * sizeof *g->pend_step);
    g->pend = malloc((size_t)cap * (size_t)(n ? n : 1) * sizeof *g->pend);
    g->last = calloc((size_t)(n ? n : 1), sizeof *g->last);
    if (!g->names || !g->ds || !g->pend_step || !g->pend || !g->last)
        return sp_fail(err, SP_ERUNTIME, "out of memory for metrics columns");
    for (int i = 0; i < g->ncols; i++) g->ds[i] = -1;
    if (!(g->names[0] = strdup("step"))) return sp_fail(err, SP_ERUNTIME, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!cols[i] || !cols[i][0] || strchr(cols[i], '/') || !strcmp(cols[i], "step"))
            return sp_fail(err, SP_EINPUT, "metrics column '%s' is not allowed (step is implicit)",
                           cols[i] ? cols[i] : "(null)");
        for (int j = 0; j < i; j++)
            if (!strcmp(cols[i], cols[j])) return sp_fail(err, SP_EINPUT, "metrics column '%s' given twice", cols[i]);
        if (!(g->names[i + 1] = strdup(cols[i]))) return sp_fail(err, SP_ERUNTIME, "out of memory");
    }
    return SP_OK;
}

/* Creates /GROUP with its columns holding the kept rows (k may be empty). */
static int create_group(sp_metrics *m, int gi, const kept_group *k, sp_error *err) {
    wgroup *g = &m->g[gi];
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t gid = H5Gcreate2(m->file, GROUP_NAME[gi], H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (gid < 0) return sp_fail(err, SP_ERUNTIME, "%s: cannot create /%s", m->path, GROUP_NAME[gi]);
    int64_t n = k->n;
    double *fill = NULL;
    int status = SP_OK;
    for (int c = 0; c < g->ncols && !status; c++) {
        const double *src = NULL;
        for (int j = 0; j < k->ncols; j++)
            if (!strcmp(k->names[j], g->names[c])) src = k->cols[j];
        if (!src && n > 0) {
            sp_warn("%s: resumed run adds column /%s/%s; its %lld earlier rows are NaN", m->path,
                    GROUP_NAME[gi], g->names[c], (long long)n);
            if (!fill && !(fill = malloc((size_t)n * sizeof *fill))) {
                status = sp_fail(err, SP_ERUNTIME, "out of memory");
                break;
            }
            for (int64_t i = 0; i < n; i++) fill[i] = NAN;
            src = fill;
        }
        hsize_t dims = (hsize_t)n, maxd = H5S_UNLIMITED, chunk = CHUNK_ROWS;
        hid_t sp = H5Screate_simple(1, &dims, &maxd);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, &chunk);
        int is_step = c == 0;
        hid_t ds = H5Dcreate2(gid, g->names[c], is_step ? H5T_STD_I64LE : H5T_IEEE_F64LE, sp, H5P_DEFAULT,
                              dcpl, H5P_DEFAULT);
        /* Converted from double by HDF5: steps are exact integers there. */
        if (ds < 0 || (n > 0 && H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, src) < 0))
            status = sp_fail(err, SP_ERUNTIME, "%s: cannot create /%s/%s", m->path, GROUP_NAME[gi],
                             g->names[c]);
        if (ds >= 0) H5Dclose(ds);
        H5Pclose(dcpl);
        H5Sclose(sp);
        if (!status && n > 0) {
            if (is_step) {
                g->has_last = 1;
                g->last_step = (int64_t)src[n - 1];
            } else {
                g->last[c - 1] = src[n - 1];
            }
        }
    }
    for (int j = 0; j < k->ncols && n > 0; j++) {
        int used = 0;
        for (int c = 0; c < g->ncols; c++) used |= !strcmp(k->names[j], g->names[c]);
        if (!used)
            sp_warn("%s: column /%s/%s of the earlier run is dropped", m->path, GROUP_NAME[gi], k->names[j]);
    }
    free(fill);
    g->written = n;
    H5Gclose(gid);
    return status;
}

static int write_root_attrs(sp_metrics *m, const sp_metrics_info *info, double start_time, sp_error *err) {
    if (sp_h5_attr_set_str(m->file, "model", info->model) ||
        sp_h5_attr_set_str(m->file, "config", info->config) ||
        sp_h5_attr_set_str(m->file, "version", info->version) ||
        sp_h5_attr_set_str(m->file, "hostnames", info->hostnames) ||
        sp_h5_attr_set_i64(m->file, "world_size", info->world_size) ||
        sp_h5_attr_set_i64(m->file, "omp_threads", info->omp_threads) ||
        sp_h5_attr_set_f64(m->file, "start_time", start_time))
        return sp_fail(err, SP_ERUNTIME, "%s: cannot write root attributes", m->path);
    return SP_OK;
}

static void metrics_free(sp_metrics *m) {
    for (int gi = 0; gi < 2; gi++) {
        wgroup *g = &m->g[gi];
        for (int i = 0; g->ds && i < g->ncols; i++)
            if (g->ds[i] >= 0) H5Dclose(g->ds[i]);
        free(g->ds);
        free_names(g->names, g->ncols);
        free(g->pend_step);
        free(g->pend);
        free(g->last);
    }
    if (m->file >= 0) H5Fclose(m->file);
    free(m->col);
    free(m);
}

int sp_metrics_open(sp_metrics **out, const char *path, const char *const *train_cols, int n_train,
                    const char *const *eval_cols, int n_eval, const sp_metrics_info *info,
                    int64_t resume_step, sp_error *err) {
    *out = NULL;
    sp_h5_quiet();
    sp_metrics *m = calloc(1, sizeof *m);
    if (!m) return sp_fail(err, SP_ERUNTIME, "out of memory opening %s", path);
    m->file = -1;
    m->flush_rows = 8;
    m->flush_s = 5.0;
    const int cap = 64;
    char tmp[PATH_CAP];
    if ((size_t)snprintf(m->path, sizeof m->path, "%s", path) >= sizeof m->path ||
        (size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        free(m);
        return sp_fail(err, SP_EINPUT, "%s: path too long", path);
    }
    int rc = setup_group(&m->g[0], train_cols, n_train, cap, err);
    if (!rc) rc = setup_group(&m->g[1], eval_cols, n_eval, cap, err);
    if (!rc && !(m->col = malloc(cap * sizeof *m->col))) rc = sp_fail(err, SP_ERUNTIME, "out of memory");
    if (rc) {
        metrics_free(m);
        return rc == SP_EINPUT ? sp_error_wrap(err, "%s", path) : rc;
    }

    /* On resume, the rows up to the checkpoint from the existing file. */
    sp_metrics_reader *old = NULL;
    kept_group kept[2];
    memset(kept, 0, sizeof kept);
    double start_time = info->start_time;
    if (resume_step >= 0 && access(path, F_OK) == 0) {
        sp_error e2;
        sp_error_clear(&e2);
        int orc = sp_metrics_reader_open(&old, path, &e2);
        if (!orc) orc = read_kept(old, 0, resume_step, &kept[0], &e2);
        if (!orc) orc = read_kept(old, 1, resume_step, &kept[1], &e2);
        if (orc) {
            char aside[PATH_CAP + 16];
            snprintf(aside, sizeof aside, "%s.damaged", path);
            sp_warn("%s; starting a new metrics file (the old one kept as %s)", e2.msg, aside);
            free_kept(&kept[0]);
            free_kept(&kept[1]);
            sp_metrics_reader_close(old);
            old = NULL;
            rename(path, aside);
        } else {
            double st;
            if (sp_h5_attr_get_f64(old->file, "start_time", &st) == 0) start_time = st;
        }
    }
    int rewrite = old != NULL;
    hid_t fapl = sp_h5_fapl(1);
    m->file = H5Fcreate(rewrite ? tmp : path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    char reason[512];
    if (m->file < 0) sp_h5_reason(reason, sizeof reason);
    H5Pclose(fapl);
    if (m->file < 0) {
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot create metrics file: %s", rewrite ? tmp : path, reason);
    }
    if (!rc) rc = write_root_attrs(m, info, start_time, err);
    if (!rc) rc = create_group(m, 0, &kept[0], err);
    if (!rc) rc = create_group(m, 1, &kept[1], err);
    free_kept(&kept[0]);
    free_kept(&kept[1]);
    sp_metrics_reader_close(old);
    if (!rc && H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0)
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot flush", m->path);
    if (!rc && rewrite && rename(tmp, path) != 0)
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    /* Attributes and datasets exist: from here on only appends, which SWMR
     * readers can follow. */
    if (!rc && H5Fstart_swmr_write(m->file) < 0) {
        char reason[512];
        sp_h5_reason(reason, sizeof reason);
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot start SWMR writing: %s", path, reason);
    }
    for (int gi = 0; gi < 2 && !rc; gi++) {
        wgroup *g = &m->g[gi];
        for (int c = 0; c < g->ncols && !rc; c++) {
            char name[300];
            snprintf(name, sizeof name, "/%s/%s", GROUP_NAME[gi], g->names[c]);
            g->ds[c] = H5Dopen2(m->file, name, H5P_DEFAULT);
            if (g->ds[c] < 0) rc = sp_fail(err, SP_ERUNTIME, "%s: cannot open %s", path, name);
        }
    }
    if (rc) {
        if (rewrite) unlink(tmp);
        metrics_free(m);
        return rc;
    }
    m->last_flush = sp_time_now();
    *out = m;
    return SP_OK;
}

void sp_metrics_set_flush(sp_metrics *m, int rows, double seconds) {
    m->flush_rows = rows < 1 ? 1 : rows > m->g[0].cap ? m->g[0].cap : rows;
    m->flush_s = seconds;
}

static int write_pending(sp_metrics *m, int gi, sp_error *err) {
    wgroup *g = &m->g[gi];
    if (!g->npend) return SP_OK;
    hsize_t start = (hsize_t)g->written, count = (hsize_t)g->npend, total = start + count;
    hid_t ms = H5Screate_simple(1, &count, NULL);
    int nv = g->ncols - 1;
    int status = ms < 0 ? SP_ERUNTIME : SP_OK;
    for (int c = 0; c < g->ncols && !status; c++) {
        const void *src;
        hid_t mtype;
        if (c == 0) {
            src = g->pend_step;
            mtype = H5T_NATIVE_INT64;
        } else {
            for (int r = 0; r < g->npend; r++) m->col[r] = g->pend[(size_t)r * nv + (c - 1)];
            src = m->col;
            mtype = H5T_NATIVE_DOUBLE;
        }
        herr_t rc = H5Dset_extent(g->ds[c], &total);
        hid_t fs = rc < 0 ? -1 : H5Dget_space(g->ds[c]);
        if (fs < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
            H5Dwrite(g->ds[c], mtype, ms, fs, H5P_DEFAULT, src) < 0)
            status = SP_ERUNTIME;
        char reason[512];
        if (status) sp_h5_reason(reason, sizeof reason);
        if (fs >= 0) H5Sclose(fs);
        if (status) {
            sp_fail(err, SP_ERUNTIME, "%s: cannot append to /%s/%s: %s", m->path, GROUP_NAME[gi],
                    g->names[c], reason);
        }
    }
    if (ms >= 0) H5Sclose(ms);
    else sp_fail(err, SP_ERUNTIME, "%s: out of HDF5 resources", m->path);
    if (!status) {
        g->written += g->npend;
        g->npend = 0;
    }
    return status;
}

int sp_metrics_flush(sp_metrics *m, sp_error *err) {
    int rc = write_pending(m, 0, err);
    if (!rc) rc = write_pending(m, 1, err);
    if (!rc && H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0) {
        char reason[512];
        sp_h5_reason(reason, sizeof reason);
        rc = sp_fail(err, SP_ERUNTIME, "%s: cannot flush: %s", m->path, reason);
    }
    m->last_flush = sp_time_now();
    return rc;
}

int sp_metrics_append(sp_metrics *m, int group, int64_t step, const double *vals, sp_error *err) {
    if (group != SP_METRICS_TRAIN && group != SP_METRICS_EVAL)
        return sp_fail(err, SP_EINPUT, "metrics group %d unknown", group);
    wgroup *g = &m->g[group];
    if (g->npend == g->cap) {
        int rc = sp_metrics_flush(m, err);
        if (rc) return rc;
    }
    int nv = g->ncols - 1;
    g->pend_step[g->npend] = step;
    memcpy(g->pend + (size_t)g->npend * nv, vals, (size_t)nv * sizeof *vals);
    g->npend++;
    g->has_last = 1;
    g->last_step = step;
    memcpy(g->last, vals, (size_t)nv * sizeof *vals);
    if (group == SP_METRICS_EVAL || g->npend >= m->flush_rows ||
        sp_time_now() - m->last_flush >= m->flush_s)
        return sp_metrics_flush(m, err);
    return SP_OK;
}

int64_t sp_metrics_rows(const sp_metrics *m, int group) {
    if (group != 0 && group != 1) return 0;
    return m->g[group].written + m->g[group].npend;
}

int sp_metrics_last(const sp_metrics *m, int group, const char *col, double *v) {
    if ((group != 0 && group != 1) || !m->g[group].has_last) return 0;
    const wgroup *g = &m->g[group];
    if (!strcmp(col, "step")) {
        *v = (double)g->last_step;
        return 1;
    }
    for (int c = 1; c < g->ncols; c++)
        if (!strcmp(g->names[c], col)) {
            *v = g->last[c - 1];
            return 1;
        }
    return 0;
}

int sp_metrics_close(sp_metrics *m, sp_error *err) {
    if (!m) return SP_OK;
    int rc = sp_metrics_flush(m, err);
    metrics_free(m);
    return rc;
}
