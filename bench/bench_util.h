/* Helpers shared by the benchmarks (header-only: each benchmark is one
 * translation unit linked against the library). */
#ifndef SUPAIR_BENCH_UTIL_H
#define SUPAIR_BENCH_UTIL_H

#include <stdlib.h>

/* qsort order of doubles, ascending. */
static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) (n >= 1) and returns its median (the mean of the two middle
 * values when n is even). */
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
