/* Training metrics in DIR/metrics.h5 (src/io), written by rank 0 in HDF5 SWMR
 * mode so `supair_report --follow` and h5py (h5py.File(path, "r",
 * swmr=True)) can read it while training runs, and it stays readable after
 * the writer is killed (every flushed row is there).
 *
 * Layout (DESIGN.md contract): groups /train and /eval, each with one
 * extendible, chunked 1-D dataset per quantity, aligned by index with the
 * group's `step` (int64; every other column float64). Columns keep their
 * creation order (step first). Root attributes: model, config, version,
 * hostnames (text), world_size, omp_threads (int64), start_time (float64 Unix
 * seconds of the run's first start, kept across resumes).
 *
 * Rows are buffered and written at each flush: every `rows` appends or
 * `seconds` after the previous flush, at every eval row, and at close. Call
 * sp_metrics_flush before writing a checkpoint, so every row up to the
 * checkpoint's step survives a kill and a resume reproduces the file of an
 * uninterrupted run. */
#ifndef SUPAIR_METRICS_H
#define SUPAIR_METRICS_H

#include <stdint.h>

#include "supair/error.h"

enum { SP_METRICS_TRAIN = 0, SP_METRICS_EVAL = 1 };

typedef struct sp_metrics sp_metrics;

typedef struct sp_metrics_info {
    const char *model, *config, *version, *hostnames;
    int64_t world_size, omp_threads;
    double start_time; /* Unix seconds; an existing file's value wins on resume */
} sp_metrics_info;

/* Opens path for appending. The column lists name each group's quantities
 * EXCEPT `step`, which every group has first (train: time_s, loss, lr,
 * grad_norm, samples_per_s, compute_s, comm_s, model terms...; eval: time_s,
 * model metrics...).
 * resume_step < 0: a new file (an existing one is replaced).
 * resume_step >= 0: the existing file's rows with step <= resume_step are
 * kept (the rest, from after the checkpoint, dropped), columns matched by
 * name (new ones NaN-filled, vanished ones dropped, with a warning); a missing
 * or unreadable file starts empty (an unreadable one is kept aside as
 * PATH.damaged). The file is rewritten under a temp name and renamed, which
 * also clears the "open for writing" mark a killed SWMR writer leaves. */
int sp_metrics_open(sp_metrics **out, const char *path, const char *const *train_cols, int n_train,
                    const char *const *eval_cols, int n_eval, const sp_metrics_info *info,
                    int64_t resume_step, sp_error *err);
/* Appends one row: vals[i] is column i of the list given at open. */
int sp_metrics_append(sp_metrics *m, int group, int64_t step, const double *vals, sp_error *err);
/* Writes the buffered rows and flushes them to the file (readers see them). */
int sp_metrics_flush(sp_metrics *m, sp_error *err);
/* Flush policy (defaults 8 rows, 5 s). */
void sp_metrics_set_flush(sp_metrics *m, int rows, double seconds);
/* Rows in a group (written or buffered). */
int64_t sp_metrics_rows(const sp_metrics *m, int group);
/* The last row's value of a column (e.g. time_s, to continue the clock after
 * a resume); 0 when the group is empty or the column unknown, else 1. */
int sp_metrics_last(const sp_metrics *m, int group, const char *col, double *v);
/* Flushes and closes (NULL is a no-op); returns the flush status. */
int sp_metrics_close(sp_metrics *m, sp_error *err);

/* ---- reading (supair_report, tests), concurrent with a writer ---- */

typedef struct sp_metrics_reader sp_metrics_reader;

/* Opens read-only in SWMR-read mode (falls back to a plain read). */
int sp_metrics_reader_open(sp_metrics_reader **out, const char *path, sp_error *err);
void sp_metrics_reader_close(sp_metrics_reader *r);
/* Columns of a group in creation order (step first). */
int sp_metrics_reader_ncols(const sp_metrics_reader *r, int group);
const char *sp_metrics_reader_col(const sp_metrics_reader *r, int group, int i);
/* Refreshes from the writer and returns the rows complete in EVERY column of
 * the group (a reader may catch the writer between two columns); -1 on error. */
int64_t sp_metrics_reader_rows(sp_metrics_reader *r, int group, sp_error *err);
/* Reads rows [0, n) of a column as doubles (step included) into out[n]. */
int sp_metrics_reader_read(sp_metrics_reader *r, int group, const char *col, int64_t n, double *out,
                           sp_error *err);
/* A root attribute as text (numbers printed with %.17g); *text malloc'd. */
int sp_metrics_reader_attr(sp_metrics_reader *r, const char *name, char **text, sp_error *err);

#endif
