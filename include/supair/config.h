/* Typed configuration: keys with defaults, ranges and doc strings.
 *
 * Each module declares its keys from a static table (sp_cfg_key[]); the
 * trainer then applies a .cfg file and --set overrides. Values are validated
 * when set, so a typo or an out-of-range value fails at start-up with a
 * message naming the key and value, not hours later. The text form
 * (sp_config_to_text) is what DIR/config.cfg and the checkpoints' `config`
 * attribute hold; it parses back to the same configuration exactly, and
 * sp_config_compare decides whether a run can resume under a new one. */
#ifndef SUPAIR_CONFIG_H
#define SUPAIR_CONFIG_H

#include <stdint.h>

#include "supair/error.h"

typedef enum { SP_CFG_INT, SP_CFG_FLOAT, SP_CFG_BOOL, SP_CFG_STRING } sp_cfg_type;

typedef struct sp_cfg_key {
    const char *name;    /* [A-Za-z0-9_.]+, unique across modules */
    sp_cfg_type type;
    const char *def;     /* default, in the text form ("0.001", "true", "lstm") */
    const char *doc;     /* one line, written after the value in config.cfg */
    double min, max;     /* numeric range (inclusive), used when min < max */
    const char *choices; /* for strings: "a|b|c", or NULL for free text */
    int shape;           /* 1: changes the model's parameter shapes -> incompatible on resume */
} sp_cfg_key;

typedef struct sp_config sp_config;

/* NULL when out of memory. */
sp_config *sp_config_new(void);
void sp_config_free(sp_config *c);

/* Adds keys (the table is copied; strings must outlive the config, as static
 * tables do). A duplicate name, a bad default or a bad table entry is an
 * SP_EINPUT error naming the key. */
int sp_config_declare(sp_config *c, const sp_cfg_key *keys, int n, sp_error *err);

/* Is the key declared? */
int sp_config_has(const sp_config *c, const char *name);

/* "key = value" lines; '#' starts a comment (outside quotes); blank lines
 * ignored. Errors: "PATH:LINE: unknown key 'x'", "PATH:LINE: bad value 'v'
 * for key 'k' (expected float in [a,b])", "PATH:LINE: missing '='",
 * "PATH: cannot open: REASON". */
int sp_config_load_file(sp_config *c, const char *path, sp_error *err);

/* The same syntax from a string; `origin` names it in messages (e.g.
 * "checkpoint step_00001200.h5 config"). */
int sp_config_load_text(sp_config *c, const char *text, const char *origin, sp_error *err);

/* One "key=value" assignment (from --set). Errors name the key and value:
 * "--set: unknown key 'x'", "--set: bad value 'v' for key 'k' (...)". */
int sp_config_set(sp_config *c, const char *assignment, sp_error *err);

/* Set one key from its value text (same validation and messages as --set). */
int sp_config_set_value(sp_config *c, const char *key, const char *value, sp_error *err);

/* Getters. An undeclared key or a getter of the wrong type is a programmer
 * error: it aborts with a message naming the key. */
int64_t sp_config_int(const sp_config *c, const char *name);
double sp_config_float(const sp_config *c, const char *name);
int sp_config_bool(const sp_config *c, const char *name);
const char *sp_config_str(const sp_config *c, const char *name);
/* Canonical text of any key's value (as written by sp_config_to_text). */
const char *sp_config_value_text(const sp_config *c, const char *name);
/* Was the key set (by file, text or --set) rather than left at its default? */
int sp_config_is_set(const sp_config *c, const char *name);

/* Every key in declaration order, one "key = value  # doc" line each;
 * parseable by sp_config_load_text. malloc'ed (caller frees); NULL when out
 * of memory. */
char *sp_config_to_text(const sp_config *c);

/* For resume: compares the keys declared in both. A differing shape key is an
 * SP_EINPUT error naming the key and both values; every other difference is
 * reported through note() (may be NULL) and allowed. Keys present in only one
 * side are reported through note() with NULL for the missing value. */
int sp_config_compare(const sp_config *old_cfg, const sp_config *new_cfg, sp_error *err,
                      void (*note)(const char *key, const char *old_val, const char *new_val,
                                   void *u),
                      void *u);

#endif
