/* Tests for the CPU/BLAS set-up: FTZ/DAZ in every OpenMP thread, and the
 * OpenBLAS core-type fix, including the real self re-exec (this executable
 * re-runs itself as a child in a special mode, see main). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supair/cpu.h"
#include "supair/timer.h"
#include "testutil.h"

static void test_flush_denormals(void) {
    sp_cpu_flush_denormals();
    CU_ASSERT(sp_cpu_denormals_flushed());
    int n = 0, ok = 0;
    float tiny_out = 1.0f;
#pragma omp parallel reduction(+ : n, ok)
    {
        n += 1;
        ok += sp_cpu_denormals_flushed();
        /* The real effect: a product below FLT_MIN becomes 0, not a denormal. */
        volatile float a = 1e-30f, b = 1e-10f;
        float p = a * b;
        if (omp_get_thread_num() == 0) tiny_out = p;
    }
    CU_ASSERT_EQUAL(ok, n);
    CU_ASSERT_EQUAL(tiny_out, 0.0f);
    /* Threads the runtime starts later (a bigger team, as OpenBLAS may ask
     * for) copy the MXCSR of the thread that creates them. */
    int big = omp_get_max_threads() + 3;
    n = ok = 0;
#pragma omp parallel num_threads(big) reduction(+ : n, ok)
    {
        n += 1;
        ok += sp_cpu_denormals_flushed();
    }
    CU_ASSERT_EQUAL(n, big);
    CU_ASSERT_EQUAL(ok, n);
    /* DAZ: a denormal input reads as zero. */
    volatile unsigned bits = 0x00000100u; /* a denormal float */
    float d;
    memcpy(&d, (const void *)&bits, sizeof d);
    volatile float dd = d;
    CU_ASSERT_EQUAL(dd * 1e30f, 0.0f);
}

static void test_corename(void) {
    const char *n = sp_blas_corename();
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT(strlen(n) > 0);
    const char *want = sp_cpu_best_coretype();
    printf("\n    OpenBLAS core '%s', CPU best '%s' ", n, want ? want : "(none)");
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        CU_ASSERT_PTR_NOT_NULL(want);
    if (!__builtin_cpu_supports("avx512f"))
        CU_ASSERT(!want || strcmp(want, "SkylakeX") != 0); /* SkylakeX kernels would SIGILL */
#endif
}

static char self_path[4096];

/* Runs this executable in child mode with the given extra environment
 * ("K=V" strings, "K=" to unset) and returns its stdout+stderr. */
static int run_child(const char *const *env, char *out, size_t out_size) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        for (const char *const *e = env; *e; e++) {
            char kv[256];
            snprintf(kv, sizeof kv, "%s", *e);
            char *eq = strchr(kv, '=');
            *eq = '\0';
            if (eq[1])
                setenv(kv, eq + 1, 1);
            else
                unsetenv(kv);
        }
        setenv("SP_TEST_CPU_CHILD", "1", 1);
        char *argv[] = {self_path, "child-arg", NULL};
        execv(self_path, argv);
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < out_size && (r = read(fd[0], out + len, out_size - len - 1)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

#define ASSERT_HAS(out, want)                                                          \
    do {                                                                               \
        if (!strstr(out, want)) {                                                      \
            char m_[2400];                                                             \
            snprintf(m_, sizeof m_, "child output lacks '%s':\n%s", want, out);        \
            CU_assertImplementation(CU_FALSE, __LINE__, m_, __FILE__, "", CU_FALSE);   \
        } else {                                                                       \
            CU_PASS(want);                                                             \
        }                                                                              \
    } while (0)

static void test_coretype_reexec(void) {
    const char *want = sp_cpu_best_coretype();
    if (!want) {
        printf("\n    (no AVX2: nothing to fix on this CPU) ");
        return;
    }
    char out[2048], line[128];
    /* A library that misdetects the core and honours the fix: the child
     * re-executes itself once (same pid, same argv) and ends on `want`. */
    const char *env1[] = {"SUPAIR_TEST_BLAS_CORENAME=Prescott", "OPENBLAS_CORETYPE=",
                          "SUPAIR_NO_BLAS_FIX=", "SUPAIR_BLAS_REEXEC=", NULL};
    CU_ASSERT_EQUAL(run_child(env1, out, sizeof out), 0);
    snprintf(line, sizeof line, "core=%s", want);
    ASSERT_HAS(out, line);
    snprintf(line, sizeof line, "env=%s", want);
    ASSERT_HAS(out, line);
    ASSERT_HAS(out, "argv1=child-arg");
    ASSERT_HAS(out, "marker=(unset)");
    CU_ASSERT(strstr(out, "warning") == NULL);
    CU_ASSERT_EQUAL(strstr(out, "starts=") ? 0 : 1, 0);
    /* It started twice with one pid: the pre-exec line and the final one. */
    char *a = strstr(out, "start pid="), *b = a ? strstr(a + 1, "start pid=") : NULL;
    CU_ASSERT_FATAL(a && b);
    CU_ASSERT(strncmp(a, b, strcspn(a, "\n")) == 0);

    /* A library that ignores the variable: one re-exec, then a warning with
     * the exact fix, no loop. */
    const char *env2[] = {"SUPAIR_TEST_BLAS_CORENAME=!Prescott", "OPENBLAS_CORETYPE=",
                          "SUPAIR_NO_BLAS_FIX=", "SUPAIR_BLAS_REEXEC=", NULL};
    CU_ASSERT_EQUAL(run_child(env2, out, sizeof out), 0);
    snprintf(line, sizeof line, "export OPENBLAS_CORETYPE=%s", want);
    ASSERT_HAS(out, line);
    ASSERT_HAS(out, "ignored it");
    ASSERT_HAS(out, "core=Prescott");
    int starts = 0;
    for (char *p = out; (p = strstr(p, "start pid=")); p++) starts++;
    CU_ASSERT_EQUAL(starts, 2);

    /* Disabled by SUPAIR_NO_BLAS_FIX=1: warn, run on, no restart. */
    const char *env3[] = {"SUPAIR_TEST_BLAS_CORENAME=Prescott", "OPENBLAS_CORETYPE=",
                          "SUPAIR_NO_BLAS_FIX=1", "SUPAIR_BLAS_REEXEC=", NULL};
    CU_ASSERT_EQUAL(run_child(env3, out, sizeof out), 0);
    ASSERT_HAS(out, "SUPAIR_NO_BLAS_FIX");
    ASSERT_HAS(out, line);
    ASSERT_HAS(out, "env=(unset)");
    starts = 0;
    for (char *p = out; (p = strstr(p, "start pid=")); p++) starts++;
    CU_ASSERT_EQUAL(starts, 1);

    /* A user's OPENBLAS_CORETYPE that does not help: warn, no restart. */
    const char *env4[] = {"SUPAIR_TEST_BLAS_CORENAME=!Prescott", "OPENBLAS_CORETYPE=Prescott",
                          "SUPAIR_NO_BLAS_FIX=", "SUPAIR_BLAS_REEXEC=", NULL};
    CU_ASSERT_EQUAL(run_child(env4, out, sizeof out), 0);
    ASSERT_HAS(out, "is set but not honoured");
    ASSERT_HAS(out, line);

    /* The real library, no fake: no warning, and at most one restart (one
     * happens on the AVX-512 Xeons where Debian's OpenBLAS says Prescott). */
    const char *env5[] = {"SUPAIR_TEST_BLAS_CORENAME=", "OPENBLAS_CORETYPE=",
                          "SUPAIR_NO_BLAS_FIX=", "SUPAIR_BLAS_REEXEC=", NULL};
    CU_ASSERT_EQUAL(run_child(env5, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "warning") == NULL);
    starts = 0;
    for (char *p = out; (p = strstr(p, "start pid=")); p++) starts++;
    CU_ASSERT(starts == 1 || starts == 2);
}

static void test_timer(void) {
    double t0 = sp_time_now();
    sp_stopwatch s;
    sp_stopwatch_reset(&s);
    CU_ASSERT_EQUAL(sp_stopwatch_elapsed(&s), 0.0);
    CU_ASSERT_EQUAL(sp_stopwatch_stop(&s), 0.0); /* stop without start */
    sp_stopwatch_start(&s);
    usleep(20000);
    double dt = sp_stopwatch_stop(&s);
    CU_ASSERT(dt >= 0.019 && dt < 1.0);
    usleep(5000); /* not counted */
    sp_stopwatch_start(&s);
    usleep(10000);
    CU_ASSERT(sp_stopwatch_elapsed(&s) >= dt + 0.009);
    sp_stopwatch_stop(&s);
    CU_ASSERT(s.total >= 0.029 && s.total < sp_time_now() - t0);
    CU_ASSERT(sp_time_wall() > 1.6e9); /* after 2020 */
}

static const sp_test_case cpu_cases[] = {
    {"FTZ/DAZ in every OpenMP thread", test_flush_denormals},
    {"OpenBLAS core name and CPU best core", test_corename},
    {"core-type fix re-executes once", test_coretype_reexec},
    {"timer and stopwatch", test_timer},
    {NULL, NULL},
};

int main(int argc, char **argv) {
    if (getenv("SP_TEST_CPU_CHILD")) {
        /* Child mode: what a real main does first, then report. */
        printf("start pid=%d\n", (int)getpid());
        fflush(stdout);
        sp_error err = {0};
        int rc = sp_blas_ensure_coretype(argc, argv, &err);
        const char *env = getenv("OPENBLAS_CORETYPE"), *mk = getenv("SUPAIR_BLAS_REEXEC");
        printf("starts= rc=%d core=%s env=%s argv1=%s marker=%s\n", rc, sp_blas_corename(),
               env ? env : "(unset)", argc > 1 ? argv[1] : "", mk ? mk : "(unset)");
        return rc;
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n > 0) self_path[n] = '\0';
    const sp_test_suite suites[] = {{"cpu", cpu_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
