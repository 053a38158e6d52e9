/* Error values with context, and rank-prefixed logging (see error.h). */
#include "supair/error.h"

#include <stdio.h>
#include <string.h>

static int log_rank = 0;
static int log_level = SP_LOG_INFO;
static FILE *log_file = NULL;

int sp_fail(sp_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int sp_error_wrap(sp_error *err, const char *fmt, ...) {
    if (!err) return SP_ERUNTIME;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation of an over-long message is acceptable: keep the prefix. */
    size_t n = strnlen(prefix, sizeof err->msg - 3);
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->code;
}

void sp_error_clear(sp_error *err) {
    if (!err) return;
    err->code = SP_OK;
    err->msg[0] = '\0';
}

void sp_log_set_rank(int rank) { log_rank = rank; }
void sp_log_set_level(int level) { log_level = level; }
void sp_log_set_file(FILE *f) { log_file = f; }

void sp_vlog(int level, const char *fmt, va_list ap) {
    if (level < log_level) return;
    char line[2048];
    vsnprintf(line, sizeof line, fmt, ap);
    static const char *tags[] = {"debug: ", "", "warning: ", "error: "};
    const char *tag = tags[level < 0 ? 0 : level > 3 ? 3 : level];
    FILE *out = level >= SP_LOG_WARN ? stderr : stdout;
    fprintf(out, "[r%d] %s%s\n", log_rank, tag, line);
    fflush(out);
    /* Only the rank that owns a log file sets one (rank 0 of a run or of a
     * sweep trial's group), so no rank test here. */
    if (log_file) {
        fprintf(log_file, "%s%s\n", tag, line);
        fflush(log_file);
    }
}

void sp_log(int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sp_vlog(level, fmt, ap);
    va_end(ap);
}
