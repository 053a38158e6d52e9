/* supair_report's logic (see report.h): read run directories through the
 * metrics reader API, summarise each run, build a table of text cells, sort
 * and print it aligned or as CSV. No HDF5 here: metrics.h5 is only read via
 * sp_metrics_reader_*, which handles SWMR and half-written rows. */
#include "supair/report.h"

#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "supair/metrics.h"

typedef struct kv {
    char *key, *val;
} kv;

typedef struct run {
    char *dir;   /* as given (trailing '/' removed) */
    char *warn;  /* NULL when read; else one line naming dir */
    char *model;
    kv *cfg;
    int ncfg, has_cfg;
    int read_ok; /* metrics opened and its rows read */
    double steps, time_s, sps, comm, t_target; /* NAN = unknown */
    int nmet;
    char **met;
    double *best, *last;
    uint64_t sig; /* what --follow compares between refreshes */
} run;

struct sp_report {
    int n;
    run *runs;
    int csv;
    char *sort_key;
    char *tmetric, *tvalue_text; /* NULL metric: the default target */
    double tvalue;
};

/* A table cell: text as printed, num for numeric sorting (NAN: compare the
 * text), missing for '-' (always sorted last). */
typedef struct cell {
    char *text;
    double num;
    int missing;
} cell;

typedef struct table {
    int nrows, ncols;
    char **head;
    int *desc;     /* per column: higher is better -> sort descending */
    int *left;     /* per column: left-aligned text */
    cell *cells;   /* (nrows, ncols) */
} table;

/* ---- small helpers ---- */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static char *fmt_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_alloc(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_run_files(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/metrics.h5", dir);
    if (is_file(p)) return 1;
    snprintf(p, sizeof p, "%s/config.cfg", dir);
    return is_file(p);
}

/* Natural order, so trial_2 comes before trial_10. */
static int natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la])) la++;
            while (isdigit((unsigned char)b[lb])) lb++;
            if (la != lb) return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c) return c;
            a += la;
            b += lb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}

static int natural_qsort(const void *a, const void *b) {
    return natural_cmp(*(char *const *)a, *(char *const *)b);
}

/* Metrics where a larger value is better (best = max, sort descending). */
static int higher_better(const char *m) {
    static const char *const names[] = {"count_acc", "iou", "elbo", "elbo_per_seq", "elbo_per_sample",
                                        "samples_s", "steps"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(m, names[i])) return 1;
    return strstr(m, "acc") != NULL;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return s ? fnv(h, s, strlen(s) + 1) : fnv(h, "", 1); }

/* ---- config text: "key = value  # doc" lines ---- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static void free_cfg(run *u) {
    for (int i = 0; i < u->ncfg; i++) {
        free(u->cfg[i].key);
        free(u->cfg[i].val);
    }
    free(u->cfg);
    u->cfg = NULL;
    u->ncfg = 0;
    u->has_cfg = 0;
}

/* Parses the text into u->cfg; lines without '=' are skipped (the trainer
 * validated the file when it wrote it: a report only needs the values). */
static int parse_cfg(run *u, const char *text) {
    char *buf = strdup(text);
    if (!buf) return -1;
    int cap = 0;
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        int inq = 0;
        for (char *c = line; *c; c++) { /* '#' starts a comment outside quotes */
            if (*c == '"') inq = !inq;
            else if (*c == '#' && !inq) {
                *c = '\0';
                break;
            }
        }
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = '\0';
        char *k = trim(line), *v = trim(eq + 1);
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = '\0';
            v++;
        }
        if (!*k) continue;
        if (u->ncfg == cap) {
            cap = cap ? 2 * cap : 64;
            kv *t = realloc(u->cfg, (size_t)cap * sizeof *t);
            if (!t) {
                free(buf);
                return -1;
            }
            u->cfg = t;
        }
        u->cfg[u->ncfg].key = strdup(k);
        u->cfg[u->ncfg].val = strdup(v);
        if (!u->cfg[u->ncfg].key || !u->cfg[u->ncfg].val) {
            free(u->cfg[u->ncfg].key);
            free(u->cfg[u->ncfg].val);
            free(buf);
            return -1;
        }
        u->ncfg++;
    }
    free(buf);
    u->has_cfg = 1;
    return 0;
}

static const char *cfg_get(const run *u, const char *key) {
    for (int i = 0; i < u->ncfg; i++)
        if (!strcmp(u->cfg[i].key, key)) return u->cfg[i].val;
    return NULL;
}

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    while (s) {
        if (n + 1 >= cap) {
            char *t = realloc(s, cap *= 2);
            if (!t) {
                free(s);
                s = NULL;
                break;
            }
            s = t;
        }
        size_t got = fread(s + n, 1, cap - n - 1, f);
        n += got;
        if (!got) break;
    }
    fclose(f);
    if (s) s[n] = '\0';
    return s;
}

/* ---- reading one run ---- */

static void clear_run(run *u) {
    free(u->warn);
    free(u->model);
    free_cfg(u);
    for (int i = 0; i < u->nmet; i++) free(u->met[i]);
    free(u->met);
    free(u->best);
    free(u->last);
    u->warn = u->model = NULL;
    u->met = NULL;
    u->best = u->last = NULL;
    u->nmet = 0;
    u->read_ok = 0;
    u->steps = u->time_s = u->sps = u->comm = u->t_target = NAN;
}

static void set_warn(run *u, const char *msg) {
    if (u->warn) return; /* the first problem is the one worth a line */
    size_t dl = strlen(u->dir); /* reader messages start with the path already */
    u->warn = !strncmp(msg, u->dir, dl) && msg[dl] == '/' ? xstrdup(msg)
                                                          : fmt_alloc("%s: %s", u->dir, msg);
}

static int has_col(sp_metrics_reader *m, int g, const char *col) {
    for (int i = 0; i < sp_metrics_reader_ncols(m, g); i++)
        if (!strcmp(sp_metrics_reader_col(m, g, i), col)) return 1;
    return 0;
}

/* Reads column col of group g (n rows) into a malloc'd array; NULL when the
 * column is absent or unreadable (the latter leaves a warning). */
static double *read_col(run *u, sp_metrics_reader *m, int g, const char *col, int64_t n) {
    if (n <= 0 || !has_col(m, g, col)) return NULL;
    double *v = malloc((size_t)n * sizeof *v);
    sp_error err = {0};
    if (!v) {
        set_warn(u, "out of memory");
        return NULL;
    }
    if (sp_metrics_reader_read(m, g, col, n, v, &err)) {
        set_warn(u, err.msg);
        free(v);
        return NULL;
    }
    return v;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_finite(double *v, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) v[k++] = v[i]; /* v is ours: compact in place */
    if (!k) return NAN;
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
}

static void read_train(run *u, sp_metrics_reader *m) {
    sp_error err = {0};
    int64_t n = sp_metrics_reader_rows(m, SP_METRICS_TRAIN, &err);
    if (n < 0) {
        set_warn(u, err.msg);
        return;
    }
    u->sig = fnv(u->sig, &n, sizeof n);
    if (!n) return;
    double *step = read_col(u, m, SP_METRICS_TRAIN, "step", n);
    double *t = read_col(u, m, SP_METRICS_TRAIN, "time_s", n);
    if (step) u->steps = step[n - 1];
    if (t) u->time_s = t[n - 1];
    u->sig = fnv(u->sig, &u->steps, sizeof u->steps);
    free(step);
    free(t);
    double *sps = read_col(u, m, SP_METRICS_TRAIN, "samples_per_s", n);
    if (sps) u->sps = median_finite(sps, n);
    free(sps);
    double *cs = read_col(u, m, SP_METRICS_TRAIN, "compute_s", n);
    double *ms = read_col(u, m, SP_METRICS_TRAIN, "comm_s", n);
    if (cs && ms) {
        double sc = 0, sm = 0;
        for (int64_t i = 0; i < n; i++)
            if (isfinite(cs[i]) && isfinite(ms[i])) {
                sc += cs[i];
                sm += ms[i];
            }
        if (sc + sm > 0) u->comm = sm / (sc + sm);
    }
    free(cs);
    free(ms);
}

static void read_eval(run *u, sp_metrics_reader *m, const char *tmetric, double tvalue) {
    sp_error err = {0};
    int64_t n = sp_metrics_reader_rows(m, SP_METRICS_EVAL, &err);
    if (n < 0) {
        set_warn(u, err.msg);
        return;
    }
    u->sig = fnv(u->sig, &n, sizeof n);
    int nc = sp_metrics_reader_ncols(m, SP_METRICS_EVAL);
    u->met = calloc((size_t)(nc ? nc : 1), sizeof *u->met);
    u->best = calloc((size_t)(nc ? nc : 1), sizeof *u->best);
    u->last = calloc((size_t)(nc ? nc : 1), sizeof *u->last);
    if (!u->met || !u->best || !u->last) {
        set_warn(u, "out of memory");
        return;
    }
    double *t = read_col(u, m, SP_METRICS_EVAL, "time_s", n);
    for (int c = 0; c < nc; c++) {
        const char *name = sp_metrics_reader_col(m, SP_METRICS_EVAL, c);
        if (!strcmp(name, "step") || !strcmp(name, "time_s")) continue;
        int k = u->nmet;
        if (!(u->met[k] = strdup(name))) break;
        u->nmet++;
        u->best[k] = u->last[k] = NAN;
        double *v = read_col(u, m, SP_METRICS_EVAL, name, n);
        if (!v) continue;
        int hb = higher_better(name);
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(v[i])) continue;
            u->last[k] = v[i];
            if (isnan(u->best[k]) || (hb ? v[i] > u->best[k] : v[i] < u->best[k])) u->best[k] = v[i];
        }
        if (tmetric && t && !strcmp(name, tmetric)) {
            for (int64_t i = 0; i < n; i++)
                if (isfinite(v[i]) && (hb ? v[i] >= tvalue : v[i] <= tvalue)) {
                    u->t_target = t[i];
                    break;
                }
        }
        free(v);
    }
    free(t);
}

static void load_run(run *u, const char *tmetric, double tvalue) {
    clear_run(u);
    u->sig = 1469598103934665603ull;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.cfg", u->dir);
    char *text = read_text_file(path);
    if (text && parse_cfg(u, text)) set_warn(u, "out of memory reading config.cfg");
    free(text);

    snprintf(path, sizeof path, "%s/metrics.h5", u->dir);
    if (!is_file(path)) {
        set_warn(u, "no metrics.h5 (run not started, or not a run directory)");
    } else {
        sp_metrics_reader *m = NULL;
        sp_error err = {0};
        if (sp_metrics_reader_open(&m, path, &err)) {
            set_warn(u, err.msg);
        } else {
            char *s = NULL;
            sp_error e2 = {0};
            if (!sp_metrics_reader_attr(m, "model", &s, &e2)) u->model = s;
            /* config.cfg is the newest resolved configuration (rewritten on
             * resume); the attribute is the fallback when it is gone. */
            if (!u->has_cfg && !sp_metrics_reader_attr(m, "config", &s, &e2)) {
                if (parse_cfg(u, s)) set_warn(u, "out of memory reading the config attribute");
                free(s);
            }
            read_train(u, m);
            read_eval(u, m, tmetric, tvalue);
            if (!u->warn) u->read_ok = 1;
            else u->read_ok = isfinite(u->steps) || u->nmet > 0;
            sp_metrics_reader_close(m);
        }
    }
    if (!u->model) {
        const char *mm = cfg_get(u, "model"); /* in case a config names it */
        u->model = xstrdup(mm);
    }
    u->sig = fnv_str(u->sig, u->warn);
    u->sig = fnv_str(u->sig, u->model);
    for (int i = 0; i < u->ncfg; i++) {
        u->sig = fnv_str(u->sig, u->cfg[i].key);
        u->sig = fnv_str(u->sig, u->cfg[i].val);
    }
}

/* ---- setup ---- */

static int add_run(sp_report *r, int *cap, const char *dir, sp_error *err) {
    if (r->n == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        run *t = realloc(r->runs, (size_t)*cap * sizeof *t);
        if (!t) return sp_fail(err, SP_ERUNTIME, "out of memory");
        r->runs = t;
    }
    run *u = &r->runs[r->n];
    memset(u, 0, sizeof *u);
    u->steps = u->time_s = u->sps = u->comm = u->t_target = NAN;
    if (!(u->dir = strdup(dir))) return sp_fail(err, SP_ERUNTIME, "out of memory");
    r->n++;
    return SP_OK;
}

/* A sweep root (RUN holding trial_i/): its run subdirectories, in natural
 * order; 0 when there are none (then DIR is reported as a run itself). */
static int expand_sweep(sp_report *r, int *cap, const char *dir, int *added, sp_error *err) {
    *added = 0;
    DIR *d = opendir(dir);
    if (!d) return SP_OK;
    char **subs = NULL;
    int ns = 0, scap = 0, rc = SP_OK;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = fmt_alloc("%s/%s", dir, e->d_name);
        if (!p) {
            rc = sp_fail(err, SP_ERUNTIME, "out of memory");
            break;
        }
        if (!is_dir(p) || !has_run_files(p)) {
            free(p);
            continue;
        }
        if (ns == scap) {
            scap = scap ? 2 * scap : 16;
            char **t = realloc(subs, (size_t)scap * sizeof *t);
            if (!t) {
                free(p);
                rc = sp_fail(err, SP_ERUNTIME, "out of memory");
                break;
            }
            subs = t;
        }
        subs[ns++] = p;
    }
    closedir(d);
    if (!rc && ns) qsort(subs, (size_t)ns, sizeof *subs, natural_qsort);
    for (int i = 0; i < ns; i++) {
        if (!rc) rc = add_run(r, cap, subs[i], err);
        free(subs[i]);
    }
    free(subs);
    if (!rc) *added = ns;
    return rc;
}

static int parse_target(sp_report *r, const char *t, sp_error *err) {
    const char *eq = strchr(t, '=');
    if (!eq || eq == t || !eq[1])
        return sp_fail(err, SP_EINPUT, "--target '%s': expected METRIC=VALUE (e.g. count_acc=0.9)", t);
    char *end = NULL;
    errno = 0;
    double v = strtod(eq + 1, &end);
    if (errno || !end || *end || !isfinite(v))
        return sp_fail(err, SP_EINPUT, "--target '%s': value '%s' is not a number", t, eq + 1);
    r->tmetric = strndup(t, (size_t)(eq - t));
    r->tvalue_text = strdup(eq + 1);
    if (!r->tmetric || !r->tvalue_text) return sp_fail(err, SP_ERUNTIME, "out of memory");
    r->tvalue = v;
    return SP_OK;
}

int sp_report_new(sp_report **out, const char *const *dirs, int n, const sp_report_opts *opts,
                  sp_error *err) {
    *out = NULL;
    if (n <= 0) return sp_fail(err, SP_EINPUT, "no run directory given");
    for (int i = 0; i < n; i++) {
        if (!is_dir(dirs[i])) {
            struct stat st;
            return sp_fail(err, SP_EINPUT, "%s: %s", dirs[i],
                           stat(dirs[i], &st) ? "no such run directory" : "not a directory");
        }
    }
    sp_report *r = calloc(1, sizeof *r);
    if (!r) return sp_fail(err, SP_ERUNTIME, "out of memory");
    r->csv = opts && opts->csv;
    int rc = SP_OK, cap = 0;
    if (opts && opts->sort_key && !(r->sort_key = strdup(opts->sort_key)))
        rc = sp_fail(err, SP_ERUNTIME, "out of memory");
    if (!rc && opts && opts->target) rc = parse_target(r, opts->target, err);
    for (int i = 0; i < n && !rc; i++) {
        char *d = strdup(dirs[i]);
        if (!d) {
            rc = sp_fail(err, SP_ERUNTIME, "out of memory");
            break;
        }
        size_t l = strlen(d);
        while (l > 1 && d[l - 1] == '/') d[--l] = '\0';
        int added = 0;
        if (!has_run_files(d)) rc = expand_sweep(r, &cap, d, &added, err);
        if (!rc && !added) rc = add_run(r, &cap, d, err);
        free(d);
    }
    if (rc) {
        sp_report_free(r);
        return rc;
    }
    *out = r;
    return SP_OK;
}

void sp_report_free(sp_report *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        clear_run(&r->runs[i]);
        free(r->runs[i].dir);
    }
    free(r->runs);
    free(r->sort_key);
    free(r->tmetric);
    free(r->tvalue_text);
    free(r);
}

int sp_report_nruns(const sp_report *r) { return r->n; }

const char *sp_report_warning(const sp_report *r, int i) {
    return i >= 0 && i < r->n ? r->runs[i].warn : NULL;
}

/* The default target (count_acc >= 0.9, the SuPAIR paper's threshold) applies
 * when any run is a SuPAIR/AIR run or logs count_acc. */
static int default_target_applies(const sp_report *r) {
    for (int i = 0; i < r->n; i++) {
        const run *u = &r->runs[i];
        if (u->model && (!strcmp(u->model, "supair") || !strcmp(u->model, "air"))) return 1;
        for (int k = 0; k < u->nmet; k++)
            if (!strcmp(u->met[k], "count_acc")) return 1;
    }
    return 0;
}

int sp_report_refresh(sp_report *r, int *changed) {
    int ok = 0, ch = 0;
    const char *tm = r->tmetric ? r->tmetric : "count_acc";
    double tv = r->tmetric ? r->tvalue : 0.9;
    for (int i = 0; i < r->n; i++) {
        uint64_t old = r->runs[i].sig;
        load_run(&r->runs[i], tm, tv);
        if (r->runs[i].sig != old) ch = 1;
        ok += r->runs[i].read_ok;
    }
    if (changed) *changed = ch;
    return ok;
}

/* ---- the table ---- */

static void table_free(table *t) {
    for (int i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i].text);
    for (int j = 0; j < t->ncols; j++) free(t->head[j]);
    free(t->cells);
    free(t->head);
    free(t->desc);
    free(t->left);
}

static int str_in(char **list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

/* Config keys whose values differ between the runs that have a config (a
 * key missing from some of them counts as differing), in first-seen order. */
static int differing_keys(const sp_report *r, char ***out, int *nout) {
    char **keys = NULL;
    int n = 0, cap = 0;
    for (int i = 0; i < r->n; i++) {
        const run *u = &r->runs[i];
        for (int k = 0; k < u->ncfg; k++) {
            const char *key = u->cfg[k].key;
            if (str_in(keys, n, key)) continue;
            const char *first = NULL;
            int differs = 0, seen = 0;
            for (int j = 0; j < r->n && !differs; j++) {
                if (!r->runs[j].has_cfg) continue;
                const char *v = cfg_get(&r->runs[j], key);
                if (!v) differs = 1;
                else if (!seen++) first = v;
                else if (strcmp(first, v)) differs = 1;
            }
            if (!differs) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                char **t = realloc(keys, (size_t)cap * sizeof *t);
                if (!t) {
                    free(keys);
                    return -1;
                }
                keys = t;
            }
            keys[n++] = (char *)key; /* borrowed from the run */
        }
    }
    *out = keys;
    *nout = n;
    return 0;
}

static int metric_union(const sp_report *r, char ***out, int *nout) {
    char **m = NULL;
    int n = 0, cap = 0;
    for (int i = 0; i < r->n; i++)
        for (int k = 0; k < r->runs[i].nmet; k++) {
            if (str_in(m, n, r->runs[i].met[k])) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                char **t = realloc(m, (size_t)cap * sizeof *t);
                if (!t) {
                    free(m);
                    return -1;
                }
                m = t;
            }
            m[n++] = r->runs[i].met[k];
        }
    *out = m;
    *nout = n;
    return 0;
}

/* Number formats: CSV keeps precision for machines; the table is for eyes. */
typedef enum { F_INT, F_METRIC, F_SECONDS, F_RATE, F_FRACTION } numfmt;

static int set_num(cell *c, double v, numfmt f, int csv) {
    c->num = v;
    c->missing = !isfinite(v);
    if (c->missing) c->text = strdup("-");
    else if (f == F_INT) c->text = fmt_alloc("%.0f", v);
    else if (csv) c->text = fmt_alloc("%.9g", v);
    else if (f == F_METRIC) c->text = fmt_alloc("%.5g", v);
    else if (f == F_FRACTION) c->text = fmt_alloc("%.3f", v);
    else c->text = fmt_alloc("%.1f", v);
    return c->text ? 0 : -1;
}

static int set_text(cell *c, const char *s) {
    c->missing = !s || !*s;
    c->text = strdup(c->missing ? "-" : s);
    char *end = NULL;
    c->num = c->missing ? NAN : strtod(s, &end);
    if (!c->missing && (end == s || *end)) c->num = NAN; /* not a number: compare text */
    return c->text ? 0 : -1;
}

static int build_table(const sp_report *r, table *t) {
    memset(t, 0, sizeof *t);
    char **keys = NULL, **mets = NULL;
    int nk = 0, nm = 0, rc = -1;
    if (differing_keys(r, &keys, &nk) || metric_union(r, &mets, &nm)) goto out;
    int target = r->tmetric || default_target_applies(r);
    t->nrows = r->n;
    t->ncols = 2 + nk + 2 + 2 * nm + target + 2;
    t->head = calloc((size_t)t->ncols, sizeof *t->head);
    t->desc = calloc((size_t)t->ncols, sizeof *t->desc);
    t->left = calloc((size_t)t->ncols, sizeof *t->left);
    t->cells = calloc((size_t)t->ncols * (size_t)(t->nrows ? t->nrows : 1), sizeof *t->cells);
    if (!t->head || !t->desc || !t->left || !t->cells) goto out;
    int c = 0;
    t->head[c] = strdup("run");
    t->left[c++] = 1;
    t->head[c] = strdup("model");
    t->left[c++] = 1;
    for (int k = 0; k < nk; k++) t->head[c++] = strdup(keys[k]);
    t->head[c] = strdup("steps");
    t->desc[c++] = 1;
    t->head[c++] = strdup("time_s");
    for (int k = 0; k < nm; k++) {
        t->desc[c] = t->desc[c + 1] = higher_better(mets[k]);
        t->head[c++] = fmt_alloc("%s.best", mets[k]);
        t->head[c++] = fmt_alloc("%s.last", mets[k]);
    }
    if (target) {
        const char *tm = r->tmetric ? r->tmetric : "count_acc";
        t->head[c++] = fmt_alloc("t(%s%s%s)", tm, higher_better(tm) ? ">=" : "<=",
                                 r->tmetric ? r->tvalue_text : "0.9");
    }
    t->head[c] = strdup("samples_s");
    t->desc[c++] = 1;
    t->head[c++] = strdup("comm_share");
    for (int j = 0; j < t->ncols; j++)
        if (!t->head[j]) goto out;

    for (int i = 0; i < r->n; i++) {
        const run *u = &r->runs[i];
        cell *row = t->cells + (size_t)i * (size_t)t->ncols;
        int e = 0;
        c = 0;
        e |= set_text(&row[c++], u->dir);
        e |= set_text(&row[c++], u->model);
        for (int k = 0; k < nk; k++) e |= set_text(&row[c++], cfg_get(u, keys[k]));
        e |= set_num(&row[c++], u->steps, F_INT, r->csv);
        e |= set_num(&row[c++], u->time_s, F_SECONDS, r->csv);
        for (int k = 0; k < nm; k++) {
            int j = 0;
            while (j < u->nmet && strcmp(u->met[j], mets[k])) j++;
            e |= set_num(&row[c++], j < u->nmet ? u->best[j] : NAN, F_METRIC, r->csv);
            e |= set_num(&row[c++], j < u->nmet ? u->last[j] : NAN, F_METRIC, r->csv);
        }
        if (target) e |= set_num(&row[c++], u->t_target, F_SECONDS, r->csv);
        e |= set_num(&row[c++], u->sps, F_RATE, r->csv);
        e |= set_num(&row[c++], u->comm, F_FRACTION, r->csv);
        if (e) goto out;
    }
    rc = 0;
out:
    free(keys);
    free(mets);
    if (rc) table_free(t);
    return rc;
}

/* The sort column: an exact header, a bare metric name (its .best), or
 * "target" for the t(...) column. -1 when unknown. */
static int find_sort_col(const table *t, const char *key) {
    for (int j = 0; j < t->ncols; j++)
        if (!strcmp(t->head[j], key)) return j;
    size_t kl = strlen(key);
    for (int j = 0; j < t->ncols; j++)
        if (!strncmp(t->head[j], key, kl) && !strcmp(t->head[j] + kl, ".best")) return j;
    if (!strcmp(key, "target") || !strcmp(key, "time_to_target"))
        for (int j = 0; j < t->ncols; j++)
            if (!strncmp(t->head[j], "t(", 2)) return j;
    return -1;
}

/* Does row a come before row b in column j? */
static int before(const table *t, int j, int a, int b) {
    const cell *x = &t->cells[(size_t)a * (size_t)t->ncols + (size_t)j];
    const cell *y = &t->cells[(size_t)b * (size_t)t->ncols + (size_t)j];
    if (x->missing || y->missing) return !x->missing && y->missing;
    int c;
    if (!isnan(x->num) && !isnan(y->num)) c = x->num < y->num ? -1 : x->num > y->num;
    else c = natural_cmp(x->text, y->text);
    return t->desc[j] ? c > 0 : c < 0;
}

static void put_csv(FILE *out, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"') fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

int sp_report_print(const sp_report *r, FILE *out, sp_error *err) {
    table t;
    if (build_table(r, &t)) return sp_fail(err, SP_ERUNTIME, "out of memory building the table");
    int *order = malloc((size_t)(t.nrows ? t.nrows : 1) * sizeof *order);
    size_t *w = calloc((size_t)t.ncols, sizeof *w);
    int rc = SP_OK;
    if (!order || !w) {
        rc = sp_fail(err, SP_ERUNTIME, "out of memory");
        goto out;
    }
    for (int i = 0; i < t.nrows; i++) order[i] = i;
    if (r->sort_key) {
        int j = find_sort_col(&t, r->sort_key);
        if (j < 0) {
            char cols[768] = "";
            size_t used = 0;
            for (int k = 0; k < t.ncols && used < sizeof cols; k++)
                used += (size_t)snprintf(cols + used, sizeof cols - used, "%s%s", k ? ", " : "", t.head[k]);
            rc = sp_fail(err, SP_EINPUT, "--sort: unknown column '%s' (columns: %s)", r->sort_key, cols);
            goto out;
        }
        /* Insertion sort: stable, and a report has tens of runs, not millions. */
        for (int i = 1; i < t.nrows; i++) {
            int v = order[i], k = i;
            while (k > 0 && before(&t, j, v, order[k - 1])) {
                order[k] = order[k - 1];
                k--;
            }
            order[k] = v;
        }
    }
    if (r->csv) {
        for (int j = 0; j < t.ncols; j++) {
            if (j) fputc(',', out);
            put_csv(out, t.head[j]);
        }
        fputc('\n', out);
        for (int i = 0; i < t.nrows; i++) {
            const cell *row = t.cells + (size_t)order[i] * (size_t)t.ncols;
            for (int j = 0; j < t.ncols; j++) {
                if (j) fputc(',', out);
                put_csv(out, row[j].missing ? "" : row[j].text);
            }
            fputc('\n', out);
        }
    } else {
        for (int j = 0; j < t.ncols; j++) {
            w[j] = strlen(t.head[j]);
            for (int i = 0; i < t.nrows; i++) {
                size_t l = strlen(t.cells[(size_t)i * (size_t)t.ncols + (size_t)j].text);
                if (l > w[j]) w[j] = l;
            }
        }
        for (int i = -1; i < t.nrows; i++) {
            for (int j = 0; j < t.ncols; j++) {
                const char *s =
                    i < 0 ? t.head[j] : t.cells[(size_t)order[i] * (size_t)t.ncols + (size_t)j].text;
                int wide = (int)w[j];
                if (j) fputs("  ", out);
                if (t.left[j] && j == t.ncols - 1) fputs(s, out);
                else if (t.left[j]) fprintf(out, "%-*s", wide, s);
                else fprintf(out, "%*s", wide, s);
            }
            fputc('\n', out);
        }
    }
    if (fflush(out) || ferror(out))
        rc = sp_fail(err, SP_ERUNTIME, "cannot write the table: %s", strerror(errno));
out:
    free(order);
    free(w);
    table_free(&t);
    return rc;
}
