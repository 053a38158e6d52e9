/* Errors with context and rank-prefixed logging.
 *
 * Library code never calls exit(): a failing function fills an sp_error with a
 * one-line message that names the file, key or value at fault, and returns its
 * code. The code doubles as the process exit status the mains use, so the
 * layers agree on what "bad input" (1) versus "runtime failure" (2) means. */
#ifndef SUPAIR_ERROR_H
#define SUPAIR_ERROR_H

#include <stdarg.h>
#include <stdio.h>

enum sp_status {
    SP_OK = 0,
    SP_EINPUT = 1,   /* usage or input error: bad flag, file, key or value */
    SP_ERUNTIME = 2, /* runtime failure: out of memory, I/O error, NaN, MPI */
    SP_ESTOPPED = 3, /* stopped by a signal after a clean checkpoint */
};

typedef struct sp_error {
    int code;       /* one of enum sp_status; SP_OK when no error */
    char msg[1024]; /* one line, no trailing newline */
} sp_error;

/* Sets *err (if err is not NULL) to code + formatted message; returns code, so
 * library functions can write `return sp_fail(err, SP_EINPUT, "%s: ...", path);` */
int sp_fail(sp_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in *err with more context ("ctx: old message")
 * and returns err->code. Used by callers that know the file a callee did not. */
int sp_error_wrap(sp_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void sp_error_clear(sp_error *err);

/* ---- logging ----
 * Lines look like "[r3] message". Rank defaults to 0; sp_log_set_rank is
 * called once after MPI init. Warnings and errors go to stderr, info to
 * stdout; when a log file is set (by the rank that owns the run's log.txt),
 * every line is also appended to it. */
enum sp_log_level { SP_LOG_DEBUG = 0, SP_LOG_INFO = 1, SP_LOG_WARN = 2, SP_LOG_ERROR = 3 };

void sp_log_set_rank(int rank);
void sp_log_set_level(int level);
void sp_log_set_file(FILE *f); /* not owned; NULL to stop */
void sp_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sp_vlog(int level, const char *fmt, va_list ap);

#define sp_debug(...) sp_log(SP_LOG_DEBUG, __VA_ARGS__)
#define sp_info(...) sp_log(SP_LOG_INFO, __VA_ARGS__)
#define sp_warn(...) sp_log(SP_LOG_WARN, __VA_ARGS__)

#endif
