/* `supair_dist sweep`: many trials in one allocation (see train.h).
 *
 * Clusters that cap the number of jobs per user make job arrays of hundreds
 * of small trials impractical; here one job of W ranks runs W/K trials at a
 * time. Groups are independent communicators, so each trial is exactly what
 * `supair_dist train` would do with K ranks (same checkpoints, metrics and
 * resume), and a trial's failure is reported without stopping the others. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supair/dist.h"
#include "supair/dist_counter.h"
#include "supair/train.h"

#define MAX_PLAN_LINE 4096
#define MAX_LINE_SETS 256

typedef struct plan {
    char **lines;
    int n;
    int n_comment_only; /* lines that held only a comment (trials without overrides) */
    int first_comment_only;
} plan;

static void plan_free(plan *p) {
    for (int i = 0; i < p->n; i++) free(p->lines[i]);
    free(p->lines);
}

/* Every line is a trial (blank or comment-only: no overrides) and '#' starts
 * a comment, the same format as jobs/sweep.sbatch, where array index i takes
 * line i. */
static int plan_load(plan *p, const char *path, sp_error *err) {
    memset(p, 0, sizeof *p);
    FILE *f = fopen(path, "r");
    if (!f) return sp_fail(err, SP_EINPUT, "%s: cannot open plan", path);
    char buf[MAX_PLAN_LINE];
    int cap = 0, lineno = 0;
    while (fgets(buf, sizeof buf, f)) {
        lineno++;
        size_t len = strlen(buf);
        if (len == sizeof buf - 1 && buf[len - 1] != '\n') {
            fclose(f);
            plan_free(p);
            return sp_fail(err, SP_EINPUT, "%s:%d: line longer than %d characters", path, lineno,
                           MAX_PLAN_LINE - 2);
        }
        char *hash = strchr(buf, '#');
        if (hash) *hash = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        if (hash && buf[strspn(buf, " \t")] == '\0' && p->n_comment_only++ == 0)
            p->first_comment_only = p->n;
        if (p->n == cap) {
            cap = cap ? 2 * cap : 16;
            char **l = realloc(p->lines, (size_t)cap * sizeof *l);
            if (!l) {
                fclose(f);
                plan_free(p);
                return sp_fail(err, SP_ERUNTIME, "out of memory");
            }
            p->lines = l;
        }
        if (!(p->lines[p->n++] = strdup(buf))) {
            fclose(f);
            plan_free(p);
            return sp_fail(err, SP_ERUNTIME, "out of memory");
        }
    }
    fclose(f);
    if (p->n == 0) return sp_fail(err, SP_EINPUT, "%s: empty plan", path);
    return SP_OK;
}

/* Trains plan line i in group g. */
static int run_trial(const sp_train_opts *base, const plan *p, int i, sp_dist *group, sp_error *err) {
    char run_dir[4200], line[MAX_PLAN_LINE];
    snprintf(run_dir, sizeof run_dir, "%s/trial_%d", base->run_dir, i);
    snprintf(line, sizeof line, "%s", p->lines[i]);
    const char *sets[MAX_LINE_SETS];
    int n = 0;
    for (int k = 0; k < base->n_sets && n < MAX_LINE_SETS; k++) sets[n++] = base->sets[k];
    for (char *save = NULL, *tok = strtok_r(line, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (n == MAX_LINE_SETS) return sp_fail(err, SP_EINPUT, "plan line %d: too many overrides", i);
        sets[n++] = tok;
    }
    sp_train_opts o = *base;
    o.run_dir = run_dir;
    o.sets = sets;
    o.n_sets = n;
    if (sp_dist_rank(group) == 0) sp_info("trial %d: %s -> %s", i, *p->lines[i] ? p->lines[i] : "(defaults)", run_dir);
    int rc = sp_train_run(&o, group, err);
    if (rc && rc != SP_ESTOPPED) sp_error_wrap(err, "trial %d (%s)", i, run_dir);
    return rc;
}

int sp_sweep_run(const sp_train_opts *base, const char *plan_path, int ranks_per_trial,
                 sp_dist *world, sp_error *err) {
    int wr = sp_dist_rank(world), ws = sp_dist_size(world);
    if (ranks_per_trial < 1 || ws % ranks_per_trial)
        return sp_fail(err, SP_EINPUT, "--ranks-per-trial %d does not divide the %d ranks",
                       ranks_per_trial, ws);
    plan p;
    int rc = plan_load(&p, plan_path, err);
    int64_t ok_all = rc == SP_OK;
    int64_t v = ok_all ? 0 : 1;
    sp_error e2 = {0};
    if (sp_dist_max_int64(world, &v, 1, &e2)) return e2.code;
    if (v) {
        if (!rc) rc = sp_fail(err, SP_EINPUT, "%s: unreadable on some rank", plan_path);
        return rc;
    }
    sp_dist *group = NULL;
    sp_dist_counter *ctr = NULL;
    if ((rc = sp_dist_split(world, wr / ranks_per_trial, &group, err)) ||
        (rc = sp_dist_counter_create(world, &ctr, err))) {
        plan_free(&p);
        sp_dist_free(group);
        return rc;
    }
    if (wr == 0)
        sp_info("sweep: %d trials from %s, %d groups of %d ranks", p.n, plan_path, ws / ranks_per_trial,
                ranks_per_trial);
    /* Every line is a trial (line i = SLURM array index i), so a comment
     * header runs as extra baseline trials: say so before they start. */
    if (wr == 0 && p.n_comment_only)
        sp_warn("sweep: %d line%s of %s (the first: line %d) hold%s only a comment: %s as a "
                "trial without overrides",
                p.n_comment_only, p.n_comment_only > 1 ? "s" : "", plan_path, p.first_comment_only,
                p.n_comment_only > 1 ? "" : "s", p.n_comment_only > 1 ? "each runs" : "it runs");
    int worst = SP_OK, done = 0, failed = 0, stopped = 0;
    for (;;) {
        int64_t next = 0;
        /* The group's rank 0 takes the next line and tells its group. */
        if (sp_dist_rank(group) == 0) rc = sp_dist_counter_next(ctr, &next, err);
        if (rc) break;
        if ((rc = sp_dist_bcast(group, &next, sizeof next, err))) break;
        if (next >= p.n) break;
        sp_error terr = {0};
        int trc = run_trial(base, &p, (int)next, group, &terr);
        if (trc == SP_ESTOPPED) {
            stopped = 1;
            break;
        }
        if (trc) {
            failed++;
            if (sp_dist_rank(group) == 0) sp_log(SP_LOG_ERROR, "%s", terr.msg);
            if (trc > worst && trc != SP_ESTOPPED) worst = trc;
        } else done++;
    }
    /* Totals over the groups (counted once, by each group's rank 0). */
    int64_t tot[4] = {sp_dist_rank(group) == 0 ? done : 0, sp_dist_rank(group) == 0 ? failed : 0,
                      stopped, rc ? rc : worst};
    double d[2] = {(double)tot[0], (double)tot[1]};
    sp_error e3 = {0};
    if (!sp_dist_reduce_doubles(world, d, 2, 0, &e3)) tot[0] = (int64_t)d[0], tot[1] = (int64_t)d[1];
    int64_t mx[2] = {tot[2], tot[3]};
    sp_dist_max_int64(world, mx, 2, &e3);
    sp_dist_counter_free(ctr);
    sp_dist_free(group);
    plan_free(&p);
    if (wr == 0)
        sp_info("sweep: %lld trials finished, %lld failed%s", (long long)tot[0], (long long)tot[1],
                mx[0] ? ", stopped by a signal (rerun the sweep to resume)" : "");
    if (rc) return rc;
    if (mx[0]) return sp_fail(err, SP_ESTOPPED, "sweep stopped by a signal");
    if (mx[1]) return sp_fail(err, (int)mx[1], "%lld of %d trials failed (see the messages above)",
                              (long long)tot[1], p.n);
    return SP_OK;
}
