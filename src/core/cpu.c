/* Process-start CPU and BLAS set-up (see cpu.h): FTZ/DAZ in every thread, and
 * the OpenBLAS core-type check with a self re-exec when the library picked a
 * core far weaker than the CPU (Debian OpenBLAS 0.3.21 runs "Prescott" kernels
 * on AVX-512 Xeons: sgemm 3.6x slow). */
#include "supair/cpu.h"

#include <cblas.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define SP_HAVE_MXCSR 1
#endif

/* MXCSR bits: FTZ (bit 15) flushes denormal results, DAZ (bit 6) reads
 * denormal inputs as zero. */
#define MXCSR_FTZ 0x8000u
#define MXCSR_DAZ 0x0040u

/* Marks the re-executed process so a library that ignores the variable
 * cannot make us exec forever. */
#define REEXEC_MARKER "SUPAIR_BLAS_REEXEC"

static void flush_this_thread(void) {
#ifdef SP_HAVE_MXCSR
    _mm_setcsr(_mm_getcsr() | MXCSR_FTZ | MXCSR_DAZ);
#endif
}

int sp_cpu_denormals_flushed(void) {
#ifdef SP_HAVE_MXCSR
    return (_mm_getcsr() & (MXCSR_FTZ | MXCSR_DAZ)) == (MXCSR_FTZ | MXCSR_DAZ);
#else
    return 0;
#endif
}

void sp_cpu_flush_denormals(void) {
    /* The master first: threads created later copy its MXCSR. Then every
     * thread of the current pool, which already exists and copied nothing. */
    flush_this_thread();
#pragma omp parallel
    flush_this_thread();
}

const char *sp_cpu_best_coretype(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    /* OpenBLAS's SkylakeX kernels use AVX-512 F/BW/DQ/VL; libgcc also checks
     * that the OS saves the wider registers. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

const char *sp_blas_corename(void) {
    /* Test hook: the misdetection cannot be provoked on a machine whose
     * OpenBLAS detects it right, so tests can fake the reported core. "NAME"
     * fakes it while OPENBLAS_CORETYPE is unset (a library that honours the
     * fix), "!NAME" always (one that ignores it). */
    const char *fake = getenv("SUPAIR_TEST_BLAS_CORENAME");
    if (fake && *fake) {
        if (fake[0] == '!') return fake + 1;
        const char *set = getenv("OPENBLAS_CORETYPE");
        if (!set || !*set) return fake;
    }
    const char *n = openblas_get_corename();
    return n && *n ? n : "unknown";
}

/* How much vector hardware an OpenBLAS core name uses: 3 AVX-512, 2 AVX2,
 * 1 AVX, 0 older or unknown. */
static int core_level(const char *name) {
    static const char *avx512[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
    static const char *avx2[] = {"haswell", "zen", "excavator", NULL};
    static const char *avx[] = {"sandybridge", "bulldozer", "piledriver", "steamroller", NULL};
    for (int i = 0; avx512[i]; i++)
        if (strcasecmp(name, avx512[i]) == 0) return 3;
    for (int i = 0; avx2[i]; i++)
        if (strcasecmp(name, avx2[i]) == 0) return 2;
    for (int i = 0; avx[i]; i++)
        if (strcasecmp(name, avx[i]) == 0) return 1;
    return 0;
}

static int warned = 0;

static void warn_once(const char *have, const char *want, const char *why) {
    if (warned) return;
    warned = 1;
    sp_warn("OpenBLAS runs the '%s' kernels on a CPU that supports '%s' (%s); matrix products "
            "run several times slower. Fix: export OPENBLAS_CORETYPE=%s before starting the "
            "program (in job scripts: before mpirun)",
            have, want, why, want);
}

int sp_blas_ensure_coretype(int argc, char **argv, sp_error *err) {
    (void)err; /* a slow BLAS is worth a warning, never a failed run */
    const char *want = sp_cpu_best_coretype();
    const char *have = sp_blas_corename();
    const char *marker = getenv(REEXEC_MARKER);
    int reexeced = marker && strcmp(marker, "1") == 0;
    if (reexeced) unsetenv(REEXEC_MARKER); /* keep it from children we may start */
    if (!want || core_level(have) >= core_level(want)) return SP_OK;

    const char *set = getenv("OPENBLAS_CORETYPE");
    if (reexeced) {
        warn_once(have, want, "OPENBLAS_CORETYPE was set and the program restarted, but "
                              "this OpenBLAS ignored it");
        return SP_OK;
    }
    if (set && *set) {
        warn_once(have, want, "OPENBLAS_CORETYPE is set but not honoured by this OpenBLAS");
        return SP_OK;
    }
    const char *nofix = getenv("SUPAIR_NO_BLAS_FIX");
    if (nofix && *nofix && strcmp(nofix, "0") != 0) {
        warn_once(have, want, "SUPAIR_NO_BLAS_FIX is set, so the program does not restart "
                              "itself with the fix");
        return SP_OK;
    }
    if (argc < 1 || !argv || !argv[0] || argv[argc] != NULL) {
        warn_once(have, want, "cannot restart without the original argv");
        return SP_OK;
    }
    /* OpenBLAS reads the variable only when the library loads, so the fix
     * needs a fresh process image: same pid, argv and environment (MPI's
     * launcher variables included; MPI_Init has not run yet). */
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0 || setenv(REEXEC_MARKER, "1", 1) != 0) {
        warn_once(have, want, "setenv failed");
        return SP_OK;
    }
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);
    /* Only reached when exec failed: undo, so children do not inherit a
     * half-applied fix, and run on with the slow kernels. */
    int e = errno;
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(REEXEC_MARKER);
    char why[160];
    snprintf(why, sizeof why, "restarting with the fix failed: exec /proc/self/exe: %s",
             strerror(e));
    warn_once(have, want, why);
    return SP_OK;
}
