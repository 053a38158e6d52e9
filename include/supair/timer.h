/* Wall-clock timing: monotonic seconds and an accumulating stopwatch, used for
 * the compute/communication split and the time_s metric. */
#ifndef SUPAIR_TIMER_H
#define SUPAIR_TIMER_H

/* Monotonic seconds since an arbitrary origin (CLOCK_MONOTONIC). */
double sp_time_now(void);

/* Seconds since the Unix epoch (for start_time attributes and logs). */
double sp_time_wall(void);

/* A stopwatch that accumulates the time between start and stop pairs. */
typedef struct sp_stopwatch {
    double total;   /* accumulated seconds */
    double started; /* sp_time_now() at start, or < 0 when stopped */
} sp_stopwatch;

void sp_stopwatch_reset(sp_stopwatch *s);
void sp_stopwatch_start(sp_stopwatch *s);
/* Returns the seconds of this interval (0 if it was not running). */
double sp_stopwatch_stop(sp_stopwatch *s);
/* Accumulated seconds, including the running interval. */
double sp_stopwatch_elapsed(const sp_stopwatch *s);

#endif
