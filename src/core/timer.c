/* Monotonic and wall-clock time, and the accumulating stopwatch (see timer.h). */
#include "supair/timer.h"

#include <time.h>

double sp_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double sp_time_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sp_stopwatch_reset(sp_stopwatch *s) {
    s->total = 0.0;
    s->started = -1.0;
}

void sp_stopwatch_start(sp_stopwatch *s) { s->started = sp_time_now(); }

double sp_stopwatch_stop(sp_stopwatch *s) {
    if (s->started < 0.0) return 0.0;
    double dt = sp_time_now() - s->started;
    s->total += dt;
    s->started = -1.0;
    return dt;
}

double sp_stopwatch_elapsed(const sp_stopwatch *s) {
    double t = s->total;
    if (s->started >= 0.0) t += sp_time_now() - s->started;
    return t;
}
