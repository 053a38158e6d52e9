/* Offline run comparison for `supair_report` (src/io/report.c).
 *
 * Loads the run directories of a sweep (DIR/config.cfg, DIR/metrics.h5 read
 * through the SWMR metrics reader, so runs that are still training work) and
 * prints one row per run: the hyperparameters that differ between the runs,
 * steps, best/last eval metrics, time to a target, throughput and the
 * communication share. Kept apart from the main so `--follow` is only a loop
 * of sp_report_refresh + sp_report_print, and so the logic is testable
 * without a terminal.
 *
 * Columns, in order: run, model, <differing config keys>, steps, time_s,
 * <metric>.best and <metric>.last for each eval metric (union over the runs,
 * in the order the first run holding it lists them), the target column
 * "t(METRIC>=VALUE)" (training time_s at the first eval row reaching the
 * target; '-' when never reached), samples_s (median over the train rows) and
 * comm_share (sum comm_s / (sum compute_s + sum comm_s), a fraction). A
 * missing value prints as '-'. */
#ifndef SUPAIR_REPORT_H
#define SUPAIR_REPORT_H

#include <stdio.h>

#include "supair/error.h"

typedef struct sp_report_opts {
    int csv;              /* comma-separated (RFC 4180 quoting) instead of an aligned table */
    const char *sort_key; /* a column header (or an alias, see sp_report_print); NULL: order given */
    const char *target;   /* "METRIC=VALUE"; NULL: count_acc=0.9 when a SuPAIR/AIR run is present */
} sp_report_opts;

typedef struct sp_report sp_report;

/* Validates the options and the directories (a DIR that does not exist or is
 * not a directory, or a malformed --target: SP_EINPUT naming it). A DIR with
 * neither metrics.h5 nor config.cfg but with subdirectories that have one (a
 * sweep's RUN/trial_i) stands for those subdirectories, in natural order.
 * Nothing is read yet: call sp_report_refresh. */
int sp_report_new(sp_report **out, const char *const *dirs, int n, const sp_report_opts *opts,
                  sp_error *err);
void sp_report_free(sp_report *r);

/* (Re)reads every run (each refresh reopens metrics.h5, since a resumed run
 * replaces the file). A run that cannot be read is not an error here: it gets
 * a warning (sp_report_warning) and keeps whatever was readable. *changed
 * (may be NULL) is set when any run's rows, warning or config differ from the
 * previous refresh. Returns the number of runs whose metrics were read. */
int sp_report_refresh(sp_report *r, int *changed);

/* Runs after expansion, and the one-line warning of run i (NULL when it was
 * read). The warning names the directory. */
int sp_report_nruns(const sp_report *r);
const char *sp_report_warning(const sp_report *r, int i);

/* Writes the table of the last refresh. Sorting: by the column header given
 * (or an alias: a bare metric name means METRIC.best, "target" the target
 * column); higher-is-better columns (count_acc, iou, elbo, elbo_per_seq,
 * elbo_per_sample, accuracy-like *acc*, samples_s, steps) sort descending,
 * every other column ascending (numerically when both values are numbers);
 * '-' always sorts last; ties keep the given order. An unknown sort key is
 * SP_EINPUT listing the columns. */
int sp_report_print(const sp_report *r, FILE *out, sp_error *err);

#endif
