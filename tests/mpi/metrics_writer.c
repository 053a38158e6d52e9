/* Helper for tests/mpi/metrics_swmr.sh: appends train rows to a metrics file
 * (step i, loss 1/i, one flush per row) with a pause between rows, so a
 * separate h5py process can follow it in SWMR mode.
 *   metrics_writer FILE ROWS SLEEP_MS [KILL_AFTER]
 * With KILL_AFTER, the writer sends itself SIGKILL after that many rows. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "supair/metrics.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s FILE ROWS SLEEP_MS [KILL_AFTER]\n", argv[0]);
        return 1;
    }
    long rows = atol(argv[2]), ms = atol(argv[3]), kill_after = argc > 4 ? atol(argv[4]) : -1;
    const char *const train[] = {"time_s", "loss"};
    const char *const eval[] = {"time_s", "elbo"};
    sp_metrics_info info = {"srnn", "lr = 0.001\n", "test", "localhost", 1, 1, 0.0};
    sp_metrics *m;
    sp_error err;
    if (sp_metrics_open(&m, argv[1], train, 2, eval, 2, &info, -1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    sp_metrics_set_flush(m, 1, 0.0);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    for (long i = 1; i <= rows; i++) {
        double v[2] = {(double)i * 0.5, 1.0 / (double)i};
        if (sp_metrics_append(m, SP_METRICS_TRAIN, i, v, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 2;
        }
        if (i == kill_after) raise(SIGKILL);
        nanosleep(&ts, NULL);
    }
    if (sp_metrics_close(m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    return 0;
}
