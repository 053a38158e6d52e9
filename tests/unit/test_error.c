/* Tests for error values (formatting, wrapping, truncation) and the
 * rank-prefixed log lines. */
#include <stdio.h>
#include <string.h>

#include "supair/error.h"
#include "testutil.h"

static void test_fail(void) {
    sp_error err;
    sp_error_clear(&err);
    CU_ASSERT_EQUAL(err.code, SP_OK);
    CU_ASSERT_STRING_EQUAL(err.msg, "");
    int rc = sp_fail(&err, SP_EINPUT, "%s:%d: unknown key '%s'", "run.cfg", 7, "lrr");
    CU_ASSERT_EQUAL(rc, SP_EINPUT);
    CU_ASSERT_EQUAL(err.code, SP_EINPUT);
    CU_ASSERT_STRING_EQUAL(err.msg, "run.cfg:7: unknown key 'lrr'");
    /* A NULL err is allowed: the code still comes back. */
    CU_ASSERT_EQUAL(sp_fail(NULL, SP_ERUNTIME, "x %d", 1), SP_ERUNTIME);
    sp_error_clear(&err);
    CU_ASSERT_EQUAL(err.code, SP_OK);
    CU_ASSERT_STRING_EQUAL(err.msg, "");
    sp_error_clear(NULL);
}

static void test_fail_truncates(void) {
    sp_error err;
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sp_fail(&err, SP_EINPUT, "%s", big);
    CU_ASSERT_EQUAL(strlen(err.msg), sizeof err.msg - 1);
    CU_ASSERT_EQUAL(err.code, SP_EINPUT);
}

static void test_wrap(void) {
    sp_error err;
    sp_fail(&err, SP_EINPUT, "unknown key 'x'");
    int rc = sp_error_wrap(&err, "checkpoint %s", "step_00000100.h5");
    CU_ASSERT_EQUAL(rc, SP_EINPUT);
    CU_ASSERT_EQUAL(err.code, SP_EINPUT);
    CU_ASSERT_STRING_EQUAL(err.msg, "checkpoint step_00000100.h5: unknown key 'x'");
    sp_error_wrap(&err, "resume");
    CU_ASSERT_STRING_EQUAL(err.msg, "resume: checkpoint step_00000100.h5: unknown key 'x'");
    CU_ASSERT_EQUAL(sp_error_wrap(NULL, "ctx"), SP_ERUNTIME);
}

static void test_wrap_truncates(void) {
    sp_error err;
    char big[2000];
    memset(big, 'o', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    /* Long old message: the prefix survives whole, the tail is cut. */
    sp_fail(&err, SP_ERUNTIME, "%s", big);
    sp_error_wrap(&err, "ctx");
    CU_ASSERT_EQUAL(strlen(err.msg), sizeof err.msg - 1);
    CU_ASSERT(strncmp(err.msg, "ctx: ooo", 8) == 0);
    CU_ASSERT_EQUAL(err.code, SP_ERUNTIME);
    /* Long prefix: cut to its buffer, still followed by ": " and the old text. */
    sp_fail(&err, SP_EINPUT, "tail");
    big[700] = '\0';
    for (int i = 0; i < 700; i++) big[i] = 'p';
    sp_error_wrap(&err, "%s", big);
    size_t len = strlen(err.msg);
    CU_ASSERT(len < sizeof err.msg);
    CU_ASSERT(len >= 6);
    CU_ASSERT_STRING_EQUAL(err.msg + len - 6, ": tail");
    CU_ASSERT_EQUAL(err.msg[0], 'p');
}

static void test_log_file(void) {
    FILE *f = tmpfile();
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sp_log_set_file(f);
    sp_log_set_level(SP_LOG_WARN);
    sp_log_set_rank(0);
    sp_warn("disk %d%% full", 95);
    sp_info("hidden below the level");
    /* The rank that owns a log file (rank 0 of a run, or of a sweep trial's
     * group, whatever its world rank) writes it. */
    sp_log_set_rank(3);
    sp_warn("from rank 3");
    sp_log_set_rank(0);
    sp_log(SP_LOG_ERROR, "bad %s", "thing");
    sp_log_set_file(NULL);
    sp_warn("after the file was unset");
    sp_log_set_level(SP_LOG_INFO);
    rewind(f);
    char buf[512] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CU_ASSERT_STRING_EQUAL(buf, "warning: disk 95% full\nwarning: from rank 3\nerror: bad thing\n");
}

static const sp_test_case error_cases[] = {
    {"sp_fail formats and returns the code", test_fail},
    {"sp_fail truncates to one buffer", test_fail_truncates},
    {"sp_error_wrap prefixes context", test_wrap},
    {"sp_error_wrap truncation", test_wrap_truncates},
    {"log levels, ranks and the log file", test_log_file},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"error", error_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
