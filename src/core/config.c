/* Typed configuration keys: declaration, parsing, validation, text form and
 * resume compatibility (see config.h).
 *
 * Every value is validated when it is set and kept both parsed (for the
 * getters) and as canonical text (for config.cfg, checkpoints and compare), so
 * the text form of a configuration is unique and parses back to itself. */
#include "supair/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct entry {
    sp_cfg_key key;
    char *text;     /* canonical value text, malloc'ed */
    int64_t i;      /* parsed value, by type */
    double f;
    int b;
    int is_set;     /* set by a file, text or --set (not the default) */
    int load_line;  /* line that set it in the current load, 0 if none */
} entry;

struct sp_config {
    entry *e;
    int n, cap;
};

static const char *type_name(sp_cfg_type t) {
    switch (t) {
    case SP_CFG_INT: return "integer";
    case SP_CFG_FLOAT: return "float";
    case SP_CFG_BOOL: return "bool";
    case SP_CFG_STRING: return "string";
    }
    return "?";
}

sp_config *sp_config_new(void) { return calloc(1, sizeof(sp_config)); }

void sp_config_free(sp_config *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->e[i].text);
    free(c->e);
    free(c);
}

static entry *find(const sp_config *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].key.name, name) == 0) return &c->e[i];
    return NULL;
}

int sp_config_has(const sp_config *c, const char *name) { return find(c, name) != NULL; }

/* ---- value parsing ---- */

/* Shortest "%.Ng" that reads back as the same double, so "0.001" stays
 * "0.001" and every value survives the text form bit for bit. */
static void format_double(char *buf, size_t size, double v) {
    /* Whole numbers print as integers ("120", not "1.2e+02"). */
    if (v == (double)(long long)v && fabs(v) < 1e15) {
        snprintf(buf, size, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* Does `v` appear in the '|'-separated list `choices`? */
static int in_choices(const char *choices, const char *v) {
    size_t len = strlen(v);
    for (const char *p = choices;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, v, n) == 0) return 1;
        if (!bar) return 0;
        p = bar + 1;
    }
}

static int has_range(const sp_cfg_key *k) { return k->min < k->max; }

/* What a valid value looks like, for the "(expected ...)" part of messages. */
static void expectation(const sp_cfg_key *k, char *buf, size_t size) {
    char lo[32], hi[32];
    switch (k->type) {
    case SP_CFG_INT:
        if (has_range(k))
            snprintf(buf, size, "expected integer in [%.0f,%.0f]", k->min, k->max);
        else
            snprintf(buf, size, "expected integer");
        break;
    case SP_CFG_FLOAT:
        if (has_range(k)) {
            format_double(lo, sizeof lo, k->min);
            format_double(hi, sizeof hi, k->max);
            snprintf(buf, size, "expected float in [%s,%s]", lo, hi);
        } else {
            snprintf(buf, size, "expected float");
        }
        break;
    case SP_CFG_BOOL: snprintf(buf, size, "expected true|false|yes|no|1|0"); break;
    case SP_CFG_STRING:
        if (k->choices)
            snprintf(buf, size, "expected one of %s", k->choices);
        else
            snprintf(buf, size, "expected text without control characters");
        break;
    }
}

typedef struct parsed {
    int64_t i;
    double f;
    int b;
    char text[64]; /* canonical text for numbers and bools */
} parsed;

/* Validates `v` for key k. Returns 0 and fills *out, or -1. */
static int parse_value(const sp_cfg_key *k, const char *v, parsed *out) {
    char *end;
    switch (k->type) {
    case SP_CFG_INT: {
        if (!*v || isspace((unsigned char)*v)) return -1;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno == ERANGE || *end != '\0') return -1;
        if (has_range(k) && ((double)x < k->min || (double)x > k->max)) return -1;
        out->i = x;
        out->f = (double)x;
        snprintf(out->text, sizeof out->text, "%" PRId64, out->i);
        return 0;
    }
    case SP_CFG_FLOAT: {
        if (!*v || isspace((unsigned char)*v)) return -1;
        errno = 0;
        double x = strtod(v, &end);
        /* ERANGE on underflow still yields a usable (tiny or zero) value;
         * overflow, inf and nan are never meant. */
        if (*end != '\0' || !isfinite(x)) return -1;
        if (has_range(k) && (x < k->min || x > k->max)) return -1;
        out->f = x;
        format_double(out->text, sizeof out->text, x);
        return 0;
    }
    case SP_CFG_BOOL: {
        static const char *yes[] = {"true", "yes", "1", "on"}, *no[] = {"false", "no", "0", "off"};
        for (int j = 0; j < 4; j++) {
            if (strcasecmp(v, yes[j]) == 0) {
                out->b = 1;
                strcpy(out->text, "true");
                return 0;
            }
            if (strcasecmp(v, no[j]) == 0) {
                out->b = 0;
                strcpy(out->text, "false");
                return 0;
            }
        }
        return -1;
    }
    case SP_CFG_STRING:
        /* Control characters (newlines above all) would break the one-line-
         * per-key text form. */
        for (const char *p = v; *p; p++)
            if (iscntrl((unsigned char)*p)) return -1;
        if (k->choices && !in_choices(k->choices, v)) return -1;
        return 0;
    }
    return -1;
}

/* Shows a value in a message: control characters escaped, long values cut,
 * so the message stays one line. */
static void show(char *buf, size_t size, const char *v) {
    size_t o = 0;
    for (const char *p = v; *p && o + 8 < size; p++) {
        unsigned char ch = (unsigned char)*p;
        if (iscntrl(ch))
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
        if (o > 80 && p[1]) {
            o += (size_t)snprintf(buf + o, size - o, "...");
            break;
        }
    }
    buf[o < size ? o : size - 1] = '\0';
}

/* Stores an already validated value. Returns -1 when out of memory. */
static int store(entry *e, const char *v, const parsed *p) {
    char *t = strdup(e->key.type == SP_CFG_STRING ? v : p->text);
    if (!t) return -1;
    free(e->text);
    e->text = t;
    e->i = p->i;
    e->f = p->f;
    e->b = p->b;
    return 0;
}

/* ---- declaration ---- */

static int valid_name(const char *s) {
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-') return 0;
    return 1;
}

int sp_config_declare(sp_config *c, const sp_cfg_key *keys, int n, sp_error *err) {
    /* Check the whole table first so a failed declare changes nothing. */
    for (int j = 0; j < n; j++) {
        const sp_cfg_key *k = &keys[j];
        if (!valid_name(k->name))
            return sp_fail(err, SP_EINPUT, "config: bad key name '%s' (entry %d)",
                           k->name ? k->name : "(null)", j);
        if (find(c, k->name))
            return sp_fail(err, SP_EINPUT, "config: key '%s' declared twice", k->name);
        for (int m = 0; m < j; m++)
            if (strcmp(keys[m].name, k->name) == 0)
                return sp_fail(err, SP_EINPUT, "config: key '%s' declared twice", k->name);
        if (k->type < SP_CFG_INT || k->type > SP_CFG_STRING)
            return sp_fail(err, SP_EINPUT, "config: key '%s' has an unknown type", k->name);
        if (k->doc && strpbrk(k->doc, "\r\n"))
            return sp_fail(err, SP_EINPUT, "config: doc of key '%s' spans lines", k->name);
        if (k->type == SP_CFG_STRING && k->choices && strpbrk(k->choices, " #\"\t"))
            return sp_fail(err, SP_EINPUT, "config: choices of key '%s' must be a|b|c",
                           k->name);
        parsed p = {0};
        if (!k->def || parse_value(k, k->def, &p) != 0) {
            char exp[160];
            expectation(k, exp, sizeof exp);
            return sp_fail(err, SP_EINPUT, "config: bad default '%s' for key '%s' (%s)",
                           k->def ? k->def : "(null)", k->name, exp);
        }
    }
    if (c->n + n > c->cap) {
        int cap = c->cap ? c->cap : 32;
        while (cap < c->n + n) cap *= 2;
        entry *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e) return sp_fail(err, SP_ERUNTIME, "config: out of memory");
        c->e = e;
        c->cap = cap;
    }
    for (int j = 0; j < n; j++) {
        entry *e = &c->e[c->n];
        memset(e, 0, sizeof *e);
        e->key = keys[j];
        parsed p = {0};
        parse_value(&keys[j], keys[j].def, &p);
        if (store(e, keys[j].def, &p) != 0) return sp_fail(err, SP_ERUNTIME, "config: out of memory");
        c->n++;
    }
    return SP_OK;
}

/* ---- setting ---- */

/* Levenshtein distance, capped, for "did you mean" hints. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static int unknown_key(const sp_config *c, sp_error *err, const char *where, const char *key) {
    const char *best = NULL;
    int best_d = 3; /* only suggest close spellings */
    for (int i = 0; i < c->n; i++) {
        int d = edit_distance(key, c->e[i].key.name);
        if (d < best_d) best_d = d, best = c->e[i].key.name;
    }
    char k[128];
    show(k, sizeof k, key);
    if (best) return sp_fail(err, SP_EINPUT, "%s: unknown key '%s' (did you mean '%s'?)", where, k, best);
    return sp_fail(err, SP_EINPUT, "%s: unknown key '%s'", where, k);
}

static int set_checked(entry *e, const char *value, const char *where, sp_error *err) {
    parsed p = {0};
    if (parse_value(&e->key, value, &p) != 0) {
        char exp[160], v[128];
        expectation(&e->key, exp, sizeof exp);
        show(v, sizeof v, value);
        return sp_fail(err, SP_EINPUT, "%s: bad value '%s' for key '%s' (%s)", where, v,
                       e->key.name, exp);
    }
    if (store(e, value, &p) != 0) return sp_fail(err, SP_ERUNTIME, "config: out of memory");
    e->is_set = 1;
    return SP_OK;
}

int sp_config_set_value(sp_config *c, const char *key, const char *value, sp_error *err) {
    entry *e = find(c, key);
    if (!e) return unknown_key(c, err, "--set", key);
    return set_checked(e, value, "--set", err);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

int sp_config_set(sp_config *c, const char *assignment, sp_error *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq) {
        char a[128];
        show(a, sizeof a, assignment);
        return sp_fail(err, SP_EINPUT, "--set: missing '=' in '%s' (expected key=value)", a);
    }
    size_t klen = (size_t)(eq - assignment);
    char *buf = malloc(strlen(assignment) + 1);
    if (!buf) return sp_fail(err, SP_ERUNTIME, "config: out of memory");
    memcpy(buf, assignment, klen);
    buf[klen] = '\0';
    strcpy(buf + klen + 1, eq + 1);
    char *key = trim(buf), *value = trim(buf + klen + 1);
    int rc;
    if (!*key)
        rc = sp_fail(err, SP_EINPUT, "--set: empty key in '%s'", assignment);
    else
        rc = sp_config_set_value(c, key, value, err);
    free(buf);
    return rc;
}

/* ---- the text form ---- */

/* A string value is written in double quotes when it would not survive the
 * unquoted form: empty, with '#', quotes or edge spaces. */
static int needs_quotes(const char *v) {
    if (!*v) return 1;
    if (isspace((unsigned char)v[0]) || isspace((unsigned char)v[strlen(v) - 1])) return 1;
    return strpbrk(v, "#\"\\") != NULL;
}

/* Parses one line in place. Returns 0 (blank or comment: *key = NULL), 0 with
 * key and value set, or -1 with a message in `why`. */
static int parse_line(char *line, char **key, char **value, char *why, size_t why_size) {
    *key = *value = NULL;
    char *s = line;
    while (isspace((unsigned char)*s)) s++;
    if (!*s || *s == '#') return 0;
    char *eq = strchr(s, '=');
    char *hash = strchr(s, '#');
    if (!eq || (hash && hash < eq)) {
        char shown[128];
        if (hash) *hash = '\0';
        show(shown, sizeof shown, trim(s));
        snprintf(why, why_size, "missing '=' in '%s' (expected key = value)", shown);
        return -1;
    }
    *eq = '\0';
    *key = trim(s);
    if (!**key) {
        snprintf(why, why_size, "empty key before '='");
        return -1;
    }
    char *v = eq + 1;
    while (isspace((unsigned char)*v)) v++;
    if (*v == '"') {
        /* Quoted: \" and \\ escapes; after the closing quote only a comment. */
        char *r = v + 1, *w = v;
        for (;; r++) {
            if (!*r) {
                snprintf(why, why_size, "unterminated quoted value for key '%s'", *key);
                return -1;
            }
            if (*r == '\\' && (r[1] == '"' || r[1] == '\\')) {
                *w++ = *++r;
            } else if (*r == '"') {
                break;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        char *rest = r + 1;
        while (isspace((unsigned char)*rest)) rest++;
        if (*rest && *rest != '#') {
            snprintf(why, why_size, "text after the quoted value of key '%s'", *key);
            return -1;
        }
        *value = v;
        return 0;
    }
    char *h = strchr(v, '#');
    if (h) *h = '\0';
    *value = trim(v);
    return 0;
}

int sp_config_load_text(sp_config *c, const char *text, const char *origin, sp_error *err) {
    for (int i = 0; i < c->n; i++) c->e[i].load_line = 0;
    int rc = SP_OK, lineno = 0;
    const char *p = text;
    char *line = NULL;
    size_t cap = 0;
    while (*p && rc == SP_OK) {
        lineno++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len + 1 > cap) {
            cap = 2 * (len + 1);
            char *b = realloc(line, cap);
            if (!b) {
                rc = sp_fail(err, SP_ERUNTIME, "config: out of memory");
                break;
            }
            line = b;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        if (len && line[len - 1] == '\r') line[len - 1] = '\0'; /* files edited on Windows */
        p = nl ? nl + 1 : p + len;

        char *key, *value, why[256];
        if (parse_line(line, &key, &value, why, sizeof why) != 0) {
            rc = sp_fail(err, SP_EINPUT, "%s:%d: %s", origin, lineno, why);
            break;
        }
        if (!key) continue;
        char where[512];
        snprintf(where, sizeof where, "%s:%d", origin, lineno);
        entry *e = find(c, key);
        if (!e) {
            rc = unknown_key(c, err, where, key);
            break;
        }
        if (e->load_line) {
            rc = sp_fail(err, SP_EINPUT, "%s: key '%s' set twice (first on line %d)", where, key,
                         e->load_line);
            break;
        }
        rc = set_checked(e, value, where, err);
        e->load_line = lineno;
    }
    free(line);
    return rc;
}

int sp_config_load_file(sp_config *c, const char *path, sp_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sp_fail(err, SP_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int rc = SP_OK;
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1) break;
        char *b = realloc(buf, cap * 2);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    if (!buf) {
        rc = sp_fail(err, SP_ERUNTIME, "%s: out of memory", path);
    } else if (ferror(f)) {
        rc = sp_fail(err, SP_EINPUT, "%s: read error: %s", path, strerror(errno));
    } else {
        buf[len] = '\0';
        if (strlen(buf) != len)
            rc = sp_fail(err, SP_EINPUT, "%s: not a text file (contains NUL bytes)", path);
        else
            rc = sp_config_load_text(c, buf, path, err);
    }
    free(buf);
    fclose(f);
    return rc;
}

char *sp_config_to_text(const sp_config *c) {
    size_t cap = 256, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    out[0] = '\0';
    for (int i = 0; i < c->n; i++) {
        const entry *e = &c->e[i];
        /* Worst case: every value byte escaped, plus quotes. */
        size_t need = strlen(e->key.name) + 2 * strlen(e->text) +
                      (e->key.doc ? strlen(e->key.doc) : 0) + 16;
        if (len + need + 1 > cap) {
            while (len + need + 1 > cap) cap *= 2;
            char *b = realloc(out, cap);
            if (!b) {
                free(out);
                return NULL;
            }
            out = b;
        }
        len += (size_t)sprintf(out + len, "%s = ", e->key.name);
        if (e->key.type == SP_CFG_STRING && needs_quotes(e->text)) {
            out[len++] = '"';
            for (const char *p = e->text; *p; p++) {
                if (*p == '"' || *p == '\\') out[len++] = '\\';
                out[len++] = *p;
            }
            out[len++] = '"';
        } else {
            len += (size_t)sprintf(out + len, "%s", e->text);
        }
        if (e->key.doc && *e->key.doc) len += (size_t)sprintf(out + len, "  # %s", e->key.doc);
        out[len++] = '\n';
        out[len] = '\0';
    }
    return out;
}

/* ---- getters ---- */

/* Getter misuse is a bug in the calling module, not bad input: stop at once
 * with the key's name rather than run with a made-up value. */
static const entry *get(const sp_config *c, const char *name, sp_cfg_type want, int any) {
    const entry *e = find(c, name);
    if (!e) {
        fprintf(stderr, "sp_config: getter on undeclared key '%s'\n", name);
        abort();
    }
    if (!any && e->key.type != want) {
        fprintf(stderr, "sp_config: key '%s' is %s, read as %s\n", name, type_name(e->key.type),
                type_name(want));
        abort();
    }
    return e;
}

int64_t sp_config_int(const sp_config *c, const char *name) {
    return get(c, name, SP_CFG_INT, 0)->i;
}
double sp_config_float(const sp_config *c, const char *name) {
    return get(c, name, SP_CFG_FLOAT, 0)->f;
}
int sp_config_bool(const sp_config *c, const char *name) {
    return get(c, name, SP_CFG_BOOL, 0)->b;
}
const char *sp_config_str(const sp_config *c, const char *name) {
    return get(c, name, SP_CFG_STRING, 0)->text;
}
const char *sp_config_value_text(const sp_config *c, const char *name) {
    return get(c, name, SP_CFG_STRING, 1)->text;
}
int sp_config_is_set(const sp_config *c, const char *name) {
    return get(c, name, SP_CFG_STRING, 1)->is_set;
}

/* ---- resume compatibility ---- */

int sp_config_compare(const sp_config *old_cfg, const sp_config *new_cfg, sp_error *err,
                      void (*note)(const char *key, const char *old_val, const char *new_val,
                                   void *u),
                      void *u) {
    const entry *bad = NULL, *bad_old = NULL;
    int n_bad = 0;
    for (int i = 0; i < new_cfg->n; i++) {
        const entry *e = &new_cfg->e[i];
        const entry *o = find(old_cfg, e->key.name);
        if (!o) {
            if (note) note(e->key.name, NULL, e->text, u);
            continue;
        }
        if (strcmp(o->text, e->text) == 0) continue;
        if (e->key.shape || o->key.shape) {
            if (!bad) bad = e, bad_old = o;
            n_bad++;
        } else if (note) {
            note(e->key.name, o->text, e->text, u);
        }
    }
    for (int i = 0; i < old_cfg->n; i++)
        if (!find(new_cfg, old_cfg->e[i].key.name) && note)
            note(old_cfg->e[i].key.name, old_cfg->e[i].text, NULL, u);
    if (bad) {
        char ov[128], nv[128];
        show(ov, sizeof ov, bad_old->text);
        show(nv, sizeof nv, bad->text);
        if (n_bad > 1)
            return sp_fail(err, SP_EINPUT,
                           "cannot resume: key '%s' changes parameter shapes (checkpoint has "
                           "'%s', now '%s'; and %d more shape keys differ)",
                           bad->key.name, ov, nv, n_bad - 1);
        return sp_fail(err, SP_EINPUT,
                       "cannot resume: key '%s' changes parameter shapes (checkpoint has '%s', "
                       "now '%s')",
                       bad->key.name, ov, nv);
    }
    return SP_OK;
}
