/* supair_report: compares training runs (a sweep) from their run directories.
 *
 * A thin main: parses flags, then loops sp_report_refresh + sp_report_print
 * (src/io/report.c). --follow owns the terminal handling and the idle stop,
 * which are a main's business, not the library's. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "supair/error.h"
#include "supair/report.h"
#include "supair/timer.h"

static const char usage[] =
    "usage: supair_report DIR... [--csv] [--sort KEY] [--target METRIC=VALUE]\n"
    "                     [--follow] [--interval SEC] [--follow-idle SEC]\n"
    "Prints one row per run directory (DIR/config.cfg, DIR/metrics.h5; a sweep\n"
    "root holding trial_*/ run directories stands for all of them):\n"
    "  run, model, the config keys whose values differ between the runs, steps\n"
    "  (last training step), time_s (training wall time), METRIC.best and\n"
    "  METRIC.last of each eval metric (count_acc, iou, elbo for SuPAIR/AIR;\n"
    "  elbo_per_seq, elbo_per_sample for SRNN), t(METRIC>=VALUE) (training\n"
    "  time_s of the first evaluation reaching the target, '-' if none),\n"
    "  samples_s (median over the training rows) and comm_share (sum comm_s /\n"
    "  (sum compute_s + sum comm_s)). '-' (empty in CSV) = unknown.\n"
    "Options:\n"
    "  --csv               comma-separated output (full precision) for scripts\n"
    "  --sort KEY          sort by a column header; a bare metric means METRIC.best,\n"
    "                      'target' the t(...) column. Higher-is-better columns\n"
    "                      (accuracies, iou, elbo*, samples_s, steps) sort\n"
    "                      descending, the rest ascending; '-' last\n"
    "  --target M=V        the time-to-target column (default count_acc=0.9 when a\n"
    "                      SuPAIR/AIR run is present); lower-is-better metrics use <=\n"
    "  --follow            re-read every --interval seconds (default 2) while runs\n"
    "                      train: redraws on a terminal, else prints a new table\n"
    "                      each refresh; stops on Ctrl-C or when no run changed for\n"
    "                      --follow-idle seconds (default 300)\n"
    "Exit: 0 when at least one run was read, 1 on bad usage, a missing DIR or no\n"
    "readable run (unreadable runs get a warning line and a row of what is known).\n";

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static int usage_error(const char *fmt, const char *what) {
    fprintf(stderr, "supair_report: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (see supair_report --help)\n");
    return SP_EINPUT;
}

static int parse_seconds(const char *flag, const char *v, double *out) {
    char *end = NULL;
    errno = 0;
    double d = v ? strtod(v, &end) : NAN;
    if (!v || errno || !end || *end || !(d > 0) || !isfinite(d)) {
        fprintf(stderr, "supair_report: %s: expected a positive number of seconds, got '%s'\n", flag,
                v ? v : "");
        return SP_EINPUT;
    }
    *out = d;
    return SP_OK;
}

/* Warnings only when they change, so --follow does not repeat them each refresh. */
static void print_warnings(const sp_report *r, char **last) {
    for (int i = 0; i < sp_report_nruns(r); i++) {
        const char *w = sp_report_warning(r, i);
        if (w && (!last[i] || strcmp(last[i], w))) fprintf(stderr, "supair_report: warning: %s\n", w);
        free(last[i]);
        last[i] = w ? strdup(w) : NULL;
    }
    fflush(stderr);
}

/* Sleeps up to sec seconds, waking early on a signal. */
static void nap(double sec) {
    double end = sp_time_now() + sec;
    while (!stop_requested) {
        double left = end - sp_time_now();
        if (left <= 0) break;
        if (left > 0.1) left = 0.1;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv) {
    sp_report_opts o = {0};
    int follow = 0;
    double interval = 2.0, idle = 300.0;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    int nd = 0;
    if (!dirs) return fprintf(stderr, "supair_report: out of memory\n"), SP_ERUNTIME;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            free(dirs);
            return 0;
        }
        int rc = SP_OK;
        if (!strcmp(a, "--csv")) o.csv = 1;
        else if (!strcmp(a, "--follow")) follow = 1;
        else if (!strcmp(a, "--sort") || !strcmp(a, "--target")) {
            if (!next) rc = usage_error("%s needs a value", a);
            else if (a[2] == 's') o.sort_key = argv[++i];
            else o.target = argv[++i];
        } else if (!strcmp(a, "--interval")) {
            rc = parse_seconds(a, next, &interval);
            i++;
        } else if (!strcmp(a, "--follow-idle")) {
            rc = parse_seconds(a, next, &idle);
            i++;
        } else if (a[0] == '-' && a[1]) rc = usage_error("unknown option '%s'", a);
        else dirs[nd++] = a;
        if (rc) {
            free(dirs);
            return rc;
        }
    }
    if (!nd) {
        free(dirs);
        return usage_error("%s", "no run directory given");
    }

    sp_error err = {0};
    sp_report *r = NULL;
    int rc = sp_report_new(&r, dirs, nd, &o, &err);
    free(dirs);
    if (rc) {
        fprintf(stderr, "supair_report: %s\n", err.msg);
        return rc;
    }
    char **last_warn = calloc((size_t)sp_report_nruns(r) + 1, sizeof *last_warn);
    if (!last_warn) {
        sp_report_free(r);
        return fprintf(stderr, "supair_report: out of memory\n"), SP_ERUNTIME;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int tty = isatty(STDOUT_FILENO);
    int ever_read = 0, first = 1;
    double last_change = sp_time_now();
    for (;;) {
        int changed = 0;
        int nread = sp_report_refresh(r, &changed);
        if (nread > 0) ever_read = 1;
        if (changed) last_change = sp_time_now();
        print_warnings(r, last_warn);
        if (follow && tty) fputs("\033[H\033[2J", stdout); /* home + clear: redraw in place */
        else if (follow && !first) fputc('\n', stdout);
        rc = sp_report_print(r, stdout, &err);
        if (rc) {
            fprintf(stderr, "supair_report: %s\n", err.msg);
            break;
        }
        if (follow && tty) {
            time_t now = time(NULL);
            char hm[16];
            strftime(hm, sizeof hm, "%H:%M:%S", localtime(&now));
            printf("\n%s  every %g s; stops after %g s without change or on Ctrl-C\n", hm, interval, idle);
        }
        fflush(stdout);
        first = 0;
        if (!follow) break;
        nap(interval);
        if (stop_requested || sp_time_now() - last_change >= idle) break;
    }
    if (!rc && !ever_read) {
        fprintf(stderr, "supair_report: none of the %d run(s) could be read\n", sp_report_nruns(r));
        rc = SP_EINPUT;
    }
    for (int i = 0; i < sp_report_nruns(r); i++) free(last_warn[i]);
    free(last_warn);
    sp_report_free(r);
    return rc;
}
