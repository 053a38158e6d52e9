/* CPU and BLAS set-up done once at process start: denormal flushing in every
 * thread, and the OpenBLAS core-type check (DESIGN.md "Facts": Debian's
 * OpenBLAS 0.3.21 detects this AVX-512 Xeon as "Prescott" and runs sgemm
 * 3.6x slow unless OPENBLAS_CORETYPE is set before the library loads). */
#ifndef SUPAIR_CPU_H
#define SUPAIR_CPU_H

#include "supair/error.h"

/* Sets flush-to-zero and denormals-are-zero (MXCSR) in the calling thread and
 * in every thread of the OpenMP pool (OpenBLAS's workers here are OpenMP
 * threads). SPN log-sum-exp terms underflow into denormals otherwise and run
 * 2-3x slow. Threads started later inherit nothing: call it after changing
 * the OpenMP thread count. */
void sp_cpu_flush_denormals(void);

/* 1 when FTZ and DAZ are both set in the calling thread. */
int sp_cpu_denormals_flushed(void);

/* Call first thing in main, before MPI_Init and before any BLAS call. When
 * OpenBLAS runs a core weaker than the CPU supports and OPENBLAS_CORETYPE is
 * unset, sets it and re-executes /proc/self/exe with the same argv (an
 * environment marker prevents loops); on success that call does not return.
 * When the re-exec is impossible or disabled (SUPAIR_NO_BLAS_FIX=1), or the
 * variable is set but not honoured, warns once with the exact fix. Returns
 * SP_OK in all these cases: a slow BLAS is not an error. err is reserved for
 * future hard failures. */
int sp_blas_ensure_coretype(int argc, char **argv, sp_error *err);

/* OpenBLAS's name of the core it runs ("SkylakeX", "Haswell", "Prescott"...),
 * or "unknown". */
const char *sp_blas_corename(void);

/* The core type this CPU should run: "SkylakeX" (AVX-512F), "Haswell" (AVX2),
 * or NULL when no better choice is known. */
const char *sp_cpu_best_coretype(void);

#endif
