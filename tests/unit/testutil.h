/* Shared CUnit scaffolding: each tests/unit/test_*.c is its own executable
 * with a table of suites, run in verbose basic mode; the exit status is
 * non-zero on any failure, so scripts/run-tests.sh can aggregate. */
#ifndef SUPAIR_TESTUTIL_H
#define SUPAIR_TESTUTIL_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

typedef struct sp_test_case {
    const char *name;
    void (*fn)(void);
} sp_test_case;

typedef struct sp_test_suite {
    const char *name;
    const sp_test_case *cases; /* terminated by {NULL, NULL} */
} sp_test_suite;

/* Runs the suites (terminated by {NULL, NULL}); returns the process exit
 * status: 0 when every test passed, 1 otherwise. */
int sp_test_main(const sp_test_suite *suites);

/* Float comparison with a message naming both values on failure. */
#define SP_ASSERT_CLOSE(a, b, tol)                                                        \
    do {                                                                                  \
        double a_ = (a), b_ = (b), t_ = (tol);                                            \
        if (!(fabs(a_ - b_) <= t_)) {                                                     \
            char m_[256];                                                                 \
            snprintf(m_, sizeof m_, "%s = %.9g vs %s = %.9g (tol %.3g)", #a, a_, #b, b_, \
                     t_);                                                                 \
            CU_assertImplementation(CU_FALSE, __LINE__, m_, __FILE__, "", CU_FALSE);      \
        } else {                                                                          \
            CU_PASS(#a " close to " #b);                                                  \
        }                                                                                 \
    } while (0)

/* Element-wise |got[i] - want[i]| <= tol over n values; on failure one
 * message naming the worst element, both values and the caller's line. */
void sp_assert_close_array_at(const char *what, const float *got, const double *want, long n,
                              double tol, int line, const char *file);
#define SP_ASSERT_CLOSE_ARRAY(what, got, want, n, tol) \
    sp_assert_close_array_at(what, got, want, n, tol, __LINE__, __FILE__)

#endif
