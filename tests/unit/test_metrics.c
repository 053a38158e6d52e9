/* Metrics file tests: append/flush/read back, a SWMR reader in another
 * process following a writer that is then killed with SIGKILL, resume
 * truncation reproducing an uninterrupted run, column checks, and a damaged
 * old file set aside on resume. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supair/metrics.h"
#include "testutil.h"

static char dir[256], path[300];

static void new_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/sp_metrics_test_XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
}

static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CU_ASSERT(system(cmd) == 0);
}

static const char *const TRAIN[] = {"time_s", "loss", "lr"};
static const char *const EVAL[] = {"time_s", "count_acc"};

static sp_metrics_info info(void) {
    sp_metrics_info i = {"supair", "lr = 0.001\n", "test-1", "nodeA,nodeB", 4, 2, 1700000000.5};
    return i;
}

/* The row logged at step s: a pure function, so runs can be compared. */
static void train_row(int64_t s, double *v) {
    v[0] = 0.25 * (double)s;
    v[1] = 100.0 / (double)(s + 1);
    v[2] = 1e-3;
}

static sp_metrics *open_new(int64_t resume) {
    sp_metrics *m = NULL;
    sp_error err;
    sp_metrics_info in = info();
    int rc = sp_metrics_open(&m, path, TRAIN, 3, EVAL, 2, &in, resume, &err);
    if (rc) fprintf(stderr, "open: %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    return m;
}

/* Reads a whole column (rows complete in all columns); *n rows. */
static double *read_col(sp_metrics_reader *r, int g, const char *col, int64_t *n) {
    sp_error err;
    *n = sp_metrics_reader_rows(r, g, &err);
    double *v = calloc((size_t)(*n > 0 ? *n : 1), sizeof *v);
    if (*n > 0 && sp_metrics_reader_read(r, g, col, *n, v, &err)) {
        fprintf(stderr, "read %s: %s\n", col, err.msg);
        *n = -1;
    }
    return v;
}

static void test_append_read(void) {
    new_dir();
    sp_error err;
    sp_metrics *m = open_new(-1);
    sp_metrics_set_flush(m, 4, 1e9);
    double v[3];
    for (int64_t s = 10; s <= 100; s += 10) {
        train_row(s, v);
        CU_ASSERT_EQUAL(sp_metrics_append(m, SP_METRICS_TRAIN, s, v, &err), SP_OK);
    }
    double e[2] = {12.5, 0.875};
    CU_ASSERT_EQUAL(sp_metrics_append(m, SP_METRICS_EVAL, 50, e, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_metrics_rows(m, SP_METRICS_TRAIN), 10);
    double last = 0;
    CU_ASSERT(sp_metrics_last(m, SP_METRICS_TRAIN, "time_s", &last) == 1 && last == 25.0);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);

    sp_metrics_reader *r;
    CU_ASSERT_EQUAL_FATAL(sp_metrics_reader_open(&r, path, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_metrics_reader_ncols(r, SP_METRICS_TRAIN), 4);
    CU_ASSERT_STRING_EQUAL(sp_metrics_reader_col(r, SP_METRICS_TRAIN, 0), "step");
    CU_ASSERT_STRING_EQUAL(sp_metrics_reader_col(r, SP_METRICS_TRAIN, 1), "time_s");
    CU_ASSERT_STRING_EQUAL(sp_metrics_reader_col(r, SP_METRICS_TRAIN, 3), "lr");
    CU_ASSERT_STRING_EQUAL(sp_metrics_reader_col(r, SP_METRICS_EVAL, 2), "count_acc");
    int64_t n;
    double *steps = read_col(r, SP_METRICS_TRAIN, "step", &n);
    double *loss = read_col(r, SP_METRICS_TRAIN, "loss", &n);
    CU_ASSERT_EQUAL_FATAL(n, 10);
    for (int i = 0; i < 10; i++) {
        train_row(10 * (i + 1), v);
        CU_ASSERT(steps[i] == 10.0 * (i + 1));
        CU_ASSERT(loss[i] == v[1]);
    }
    free(steps);
    free(loss);
    double *acc = read_col(r, SP_METRICS_EVAL, "count_acc", &n);
    CU_ASSERT(n == 1 && acc[0] == 0.875);
    free(acc);
    char *text;
    CU_ASSERT_EQUAL(sp_metrics_reader_attr(r, "model", &text, &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(text, "supair");
    free(text);
    CU_ASSERT_EQUAL(sp_metrics_reader_attr(r, "world_size", &text, &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(text, "4");
    free(text);
    CU_ASSERT_EQUAL(sp_metrics_reader_attr(r, "hostnames", &text, &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(text, "nodeA,nodeB");
    free(text);
    CU_ASSERT_EQUAL(sp_metrics_reader_attr(r, "nope", &text, &err), SP_EINPUT);
    CU_ASSERT_EQUAL(sp_metrics_reader_read(r, SP_METRICS_TRAIN, "nope", 1, v, &err), SP_EINPUT);
    sp_metrics_reader_close(r);
    remove_dir();
}

/* Child: writes 3 flushed rows per round, telling the parent after each;
 * then 2 unflushed rows and SIGKILL. Never returns. */
static void writer_child(int ready_fd, int go_fd) {
    sp_metrics *m = NULL;
    sp_error err;
    sp_metrics_info in = info();
    if (sp_metrics_open(&m, path, TRAIN, 3, EVAL, 2, &in, -1, &err)) _exit(10);
    sp_metrics_set_flush(m, 3, 1e9);
    double v[3];
    int64_t s = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3; i++) {
            s += 10;
            train_row(s, v);
            if (sp_metrics_append(m, SP_METRICS_TRAIN, s, v, &err)) _exit(11);
        }
        char c = 'r';
        if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) != 1) _exit(12);
    }
    for (int i = 0; i < 2; i++) {
        s += 10;
        train_row(s, v);
        sp_metrics_append(m, SP_METRICS_TRAIN, s, v, &err);
    }
    raise(SIGKILL);
    _exit(13);
}

static void test_swmr_reader_and_kill(void) {
    new_dir();
    int ready[2], go[2];
    CU_ASSERT_FATAL(pipe(ready) == 0 && pipe(go) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) writer_child(ready[1], go[0]);
    sp_error err;
    sp_metrics_reader *r = NULL;
    int64_t seen[3] = {-1, -1, -1};
    for (int round = 0; round < 3; round++) {
        char c;
        CU_ASSERT_FATAL(read(ready[0], &c, 1) == 1);
        if (!r && sp_metrics_reader_open(&r, path, &err)) fprintf(stderr, "reader: %s\n", err.msg);
        if (r) seen[round] = sp_metrics_reader_rows(r, SP_METRICS_TRAIN, &err);
        CU_ASSERT(write(go[1], "g", 1) == 1);
    }
    /* The reader followed the live writer as it grew. */
    CU_ASSERT_EQUAL(seen[0], 3);
    CU_ASSERT_EQUAL(seen[1], 6);
    CU_ASSERT_EQUAL(seen[2], 9);
    int status = 0;
    CU_ASSERT(waitpid(pid, &status, 0) == pid);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    if (!WIFSIGNALED(status)) fprintf(stderr, "writer exit status %d\n", WEXITSTATUS(status));
    sp_metrics_reader_close(r);

    /* After kill -9: every flushed row is readable by a fresh reader. */
    CU_ASSERT_EQUAL_FATAL(sp_metrics_reader_open(&r, path, &err), SP_OK);
    int64_t n;
    double *steps = read_col(r, SP_METRICS_TRAIN, "step", &n);
    double *t = read_col(r, SP_METRICS_TRAIN, "time_s", &n);
    CU_ASSERT_EQUAL(n, 9);
    for (int i = 0; i < n && i < 9; i++) {
        CU_ASSERT(steps[i] == 10.0 * (i + 1));
        CU_ASSERT(t[i] == 0.25 * 10.0 * (i + 1));
    }
    free(steps);
    free(t);
    sp_metrics_reader_close(r);

    /* Resuming the killed run's file (still marked open by the dead writer). */
    sp_metrics *m = open_new(60);
    CU_ASSERT_EQUAL(sp_metrics_rows(m, SP_METRICS_TRAIN), 6);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
    remove_dir();
}

/* Writes train rows for steps (from, to] every 10 and eval rows every 50. */
static void log_steps(sp_metrics *m, int64_t from, int64_t to) {
    sp_error err;
    double v[3];
    for (int64_t s = from + 10; s <= to; s += 10) {
        train_row(s, v);
        CU_ASSERT_EQUAL(sp_metrics_append(m, SP_METRICS_TRAIN, s, v, &err), SP_OK);
        if (s % 50 == 0) {
            double e[2] = {0.25 * (double)s, (double)s / 1000.0};
            CU_ASSERT_EQUAL(sp_metrics_append(m, SP_METRICS_EVAL, s, e, &err), SP_OK);
        }
    }
}

/* Every column of both groups of two files, compared exactly. */
static int same_contents(const char *a, const char *b) {
    sp_metrics_reader *ra, *rb;
    sp_error err;
    if (sp_metrics_reader_open(&ra, a, &err) || sp_metrics_reader_open(&rb, b, &err)) return 0;
    int same = 1;
    for (int g = 0; g < 2 && same; g++) {
        same = sp_metrics_reader_ncols(ra, g) == sp_metrics_reader_ncols(rb, g);
        for (int c = 0; same && c < sp_metrics_reader_ncols(ra, g); c++) {
            const char *name = sp_metrics_reader_col(ra, g, c);
            int64_t na, nb;
            double *va = read_col(ra, g, name, &na), *vb = read_col(rb, g, name, &nb);
            same = na == nb && na >= 0 && memcmp(va, vb, (size_t)na * sizeof(double)) == 0;
            if (!same) fprintf(stderr, "column /%d/%s differs (%lld vs %lld rows)\n", g, name, (long long)na, (long long)nb);
            free(va);
            free(vb);
        }
    }
    sp_metrics_reader_close(ra);
    sp_metrics_reader_close(rb);
    return same;
}

static void test_resume_truncates(void) {
    new_dir();
    sp_error err;
    char ref[320];
    snprintf(ref, sizeof ref, "%s/reference.h5", dir);
    /* The uninterrupted run. */
    sp_metrics *m = NULL;
    sp_metrics_info in = info();
    CU_ASSERT_EQUAL_FATAL(sp_metrics_open(&m, ref, TRAIN, 3, EVAL, 2, &in, -1, &err), SP_OK);
    log_steps(m, 0, 200);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);
    /* The interrupted one: ran to 170, checkpointed at 120, resumed. */
    m = open_new(-1);
    log_steps(m, 0, 170);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);
    in.start_time = 1800000000.0; /* the resume's own start: the file's first start wins */
    CU_ASSERT_EQUAL_FATAL(sp_metrics_open(&m, path, TRAIN, 3, EVAL, 2, &in, 120, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_metrics_rows(m, SP_METRICS_TRAIN), 12);
    CU_ASSERT_EQUAL(sp_metrics_rows(m, SP_METRICS_EVAL), 2);
    double t = 0;
    CU_ASSERT(sp_metrics_last(m, SP_METRICS_TRAIN, "time_s", &t) == 1 && t == 30.0);
    log_steps(m, 120, 200);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);
    CU_ASSERT(same_contents(ref, path));
    sp_metrics_reader *r;
    CU_ASSERT_EQUAL_FATAL(sp_metrics_reader_open(&r, path, &err), SP_OK);
    char *st;
    CU_ASSERT_EQUAL(sp_metrics_reader_attr(r, "start_time", &st, &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(st, "1700000000.5");
    free(st);
    sp_metrics_reader_close(r);

    /* A column added on resume: earlier rows NaN. */
    const char *const more[] = {"time_s", "loss", "lr", "kl"};
    CU_ASSERT_EQUAL_FATAL(sp_metrics_open(&m, path, more, 4, EVAL, 2, &in, 20, &err), SP_OK);
    double v[4] = {1, 2, 3, 4};
    CU_ASSERT_EQUAL(sp_metrics_append(m, SP_METRICS_TRAIN, 30, v, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);
    CU_ASSERT_EQUAL_FATAL(sp_metrics_reader_open(&r, path, &err), SP_OK);
    int64_t n;
    double *kl = read_col(r, SP_METRICS_TRAIN, "kl", &n);
    CU_ASSERT(n == 3 && isnan(kl[0]) && isnan(kl[1]) && kl[2] == 4.0);
    free(kl);
    sp_metrics_reader_close(r);
    remove_dir();
}

static void test_bad_columns_and_damaged(void) {
    new_dir();
    sp_error err;
    sp_metrics *m = NULL;
    sp_metrics_info in = info();
    const char *const with_step[] = {"step", "loss"};
    CU_ASSERT_EQUAL(sp_metrics_open(&m, path, with_step, 2, EVAL, 2, &in, -1, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "'step'") != NULL);
    const char *const dup[] = {"loss", "loss"};
    CU_ASSERT_EQUAL(sp_metrics_open(&m, path, dup, 2, EVAL, 2, &in, -1, &err), SP_EINPUT);
    CU_ASSERT(strstr(err.msg, "'loss' given twice") != NULL);
    /* An unreadable old file on resume: set aside, a new one started. */
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("not hdf5 at all", f);
    fclose(f);
    fflush(stderr);
    CU_ASSERT_EQUAL_FATAL(sp_metrics_open(&m, path, TRAIN, 3, EVAL, 2, &in, 100, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_metrics_rows(m, SP_METRICS_TRAIN), 0);
    CU_ASSERT_EQUAL(sp_metrics_close(m, &err), SP_OK);
    char aside[320];
    snprintf(aside, sizeof aside, "%s.damaged", path);
    CU_ASSERT(access(aside, F_OK) == 0);
    sp_metrics_reader *r;
    CU_ASSERT_EQUAL(sp_metrics_reader_open(&r, path, &err), SP_OK);
    sp_metrics_reader_close(r);
    CU_ASSERT_EQUAL(sp_metrics_reader_open(&r, aside, &err), SP_ERUNTIME);
    CU_ASSERT(strstr(err.msg, "metrics.h5.damaged") != NULL);
    remove_dir();
}

static const sp_test_case metrics_cases[] = {
    {"append, flush, read back", test_append_read},
    {"SWMR reader follows writer; kill -9 keeps flushed rows", test_swmr_reader_and_kill},
    {"resume truncates to the checkpoint step", test_resume_truncates},
    {"bad columns, damaged old file", test_bad_columns_and_damaged},
    {NULL, NULL},
};

int main(void) {
    static const sp_test_suite suites[] = {{"metrics", metrics_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
