/* CUnit runner shared by every unit-test executable (see testutil.h). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>

int sp_test_main(const sp_test_suite *suites) {
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: cannot initialise registry\n");
        return 1;
    }
    for (const sp_test_suite *s = suites; s->name; s++) {
        CU_pSuite suite = CU_add_suite(s->name, NULL, NULL);
        if (!suite) {
            fprintf(stderr, "CUnit: cannot add suite %s\n", s->name);
            CU_cleanup_registry();
            return 1;
        }
        for (const sp_test_case *c = s->cases; c->name; c++) {
            if (!CU_add_test(suite, c->name, c->fn)) {
                fprintf(stderr, "CUnit: cannot add test %s/%s\n", s->name, c->name);
                CU_cleanup_registry();
                return 1;
            }
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

void sp_assert_close_array_at(const char *what, const float *got, const double *want, long n,
                              double tol, int line, const char *file) {
    double worst = 0;
    long wi = 0;
    for (long i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        if (!(e <= worst)) worst = e, wi = i; /* NaN counts as worst */
    }
    if (!(worst <= tol)) {
        char m[256];
        snprintf(m, sizeof m, "%s[%ld] = %.9g, reference %.9g (|diff| %.3g > %.3g)", what, wi,
                 (double)got[wi], want[wi], worst, tol);
        printf("\n    FAIL %s\n", m);
        CU_assertImplementation(CU_FALSE, (unsigned)line, m, file, "", CU_FALSE);
    } else {
        CU_assertImplementation(CU_TRUE, (unsigned)line, what, file, "", CU_FALSE);
    }
}
