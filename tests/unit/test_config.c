/* Tests for typed configuration: declaration, every error path of files and
 * --set, exact text round trips, and the resume compatibility check. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supair/config.h"
#include "testutil.h"

static const sp_cfg_key keys[] = {
    {"batch_size", SP_CFG_INT, "32", "global batch", 1, 1e6, NULL, 0},
    {"lr", SP_CFG_FLOAT, "1e-4", "learning rate", 0, 1, NULL, 0},
    {"steps", SP_CFG_INT, "-1", "free integer", 0, 0, NULL, 0},
    {"beta", SP_CFG_FLOAT, "0.1", "free float", 0, 0, NULL, 0},
    {"use_bg", SP_CFG_BOOL, "true", "background SPN", 0, 0, NULL, 1},
    {"cell", SP_CFG_STRING, "lstm", "recurrent cell", 0, 0, "lstm|gru", 1},
    {"hidden", SP_CFG_INT, "256", "hidden units", 1, 4096, NULL, 1},
    {"name", SP_CFG_STRING, "", "free text", 0, 0, NULL, 0},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

static sp_config *make(void) {
    sp_config *c = sp_config_new();
    sp_error err = {0};
    CU_ASSERT_FATAL(c != NULL);
    int rc = sp_config_declare(c, keys, NKEYS, &err);
    if (rc) fprintf(stderr, "declare: %s\n", err.msg);
    CU_ASSERT_FATAL(rc == SP_OK);
    return c;
}

/* Asserts that rc is an input error whose message contains `want`. */
#define ASSERT_ERR(rc, err, want)                                                          \
    do {                                                                                   \
        CU_ASSERT_EQUAL(rc, SP_EINPUT);                                                    \
        CU_ASSERT_EQUAL((err).code, SP_EINPUT);                                            \
        if (!strstr((err).msg, want)) {                                                    \
            char m_[1400];                                                                 \
            snprintf(m_, sizeof m_, "message '%s' lacks '%s'", (err).msg, want);           \
            CU_assertImplementation(CU_FALSE, __LINE__, m_, __FILE__, "", CU_FALSE);                                                                   \
        }                                                                                  \
    } while (0)

static void test_defaults(void) {
    sp_config *c = make();
    CU_ASSERT_EQUAL(sp_config_int(c, "batch_size"), 32);
    CU_ASSERT_EQUAL(sp_config_float(c, "lr"), 1e-4);
    CU_ASSERT_EQUAL(sp_config_int(c, "steps"), -1);
    CU_ASSERT_EQUAL(sp_config_bool(c, "use_bg"), 1);
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "cell"), "lstm");
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "name"), "");
    CU_ASSERT_STRING_EQUAL(sp_config_value_text(c, "lr"), "0.0001");
    CU_ASSERT(sp_config_has(c, "lr"));
    CU_ASSERT(!sp_config_has(c, "nope"));
    CU_ASSERT(!sp_config_is_set(c, "lr"));
    sp_config_free(c);
}

static void test_declare_errors(void) {
    sp_config *c = make();
    sp_error err = {0};
    sp_cfg_key dup[] = {{"lr", SP_CFG_FLOAT, "0.1", "again", 0, 0, NULL, 0}};
    ASSERT_ERR(sp_config_declare(c, dup, 1, &err), err, "'lr' declared twice");
    sp_cfg_key dup2[] = {{"a", SP_CFG_INT, "1", "", 0, 0, NULL, 0},
                         {"a", SP_CFG_INT, "2", "", 0, 0, NULL, 0}};
    ASSERT_ERR(sp_config_declare(c, dup2, 2, &err), err, "'a' declared twice");
    CU_ASSERT(!sp_config_has(c, "a")); /* a failed declare adds nothing */
    sp_cfg_key bad_def[] = {{"k", SP_CFG_INT, "1.5", "", 0, 0, NULL, 0}};
    ASSERT_ERR(sp_config_declare(c, bad_def, 1, &err), err, "bad default '1.5' for key 'k'");
    sp_cfg_key bad_name[] = {{"a b", SP_CFG_INT, "1", "", 0, 0, NULL, 0}};
    ASSERT_ERR(sp_config_declare(c, bad_name, 1, &err), err, "bad key name 'a b'");
    sp_cfg_key bad_choice[] = {{"k", SP_CFG_STRING, "x", "", 0, 0, "a|b", 0}};
    ASSERT_ERR(sp_config_declare(c, bad_choice, 1, &err), err, "expected one of a|b");
    sp_config_free(c);
}

static void test_set(void) {
    sp_config *c = make();
    sp_error err = {0};
    CU_ASSERT_EQUAL(sp_config_set(c, "batch_size=64", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_int(c, "batch_size"), 64);
    CU_ASSERT(sp_config_is_set(c, "batch_size"));
    CU_ASSERT_EQUAL(sp_config_set(c, " lr = 3e-4 ", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_float(c, "lr"), 3e-4);
    CU_ASSERT_STRING_EQUAL(sp_config_value_text(c, "lr"), "0.0003");
    const char *yes[] = {"true", "1", "yes", "YES", "on"}, *no[] = {"false", "0", "no", "No", "off"};
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(sp_config_set_value(c, "use_bg", no[i], &err), SP_OK);
        CU_ASSERT_EQUAL(sp_config_bool(c, "use_bg"), 0);
        CU_ASSERT_EQUAL(sp_config_set_value(c, "use_bg", yes[i], &err), SP_OK);
        CU_ASSERT_EQUAL(sp_config_bool(c, "use_bg"), 1);
    }
    CU_ASSERT_EQUAL(sp_config_set(c, "cell=gru", &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "cell"), "gru");
    CU_ASSERT_EQUAL(sp_config_set(c, "name=a=b # c", &err), SP_OK); /* literal after the first '=' */
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "name"), "a=b # c");
    CU_ASSERT_EQUAL(sp_config_set(c, "steps=-9223372036854775808", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_int(c, "steps"), INT64_MIN);
    sp_config_free(c);
}

static void test_set_errors(void) {
    sp_config *c = make();
    sp_error err = {0};
    ASSERT_ERR(sp_config_set(c, "nosuch=1", &err), err, "--set: unknown key 'nosuch'");
    ASSERT_ERR(sp_config_set(c, "batch_sise=1", &err), err, "did you mean 'batch_size'");
    ASSERT_ERR(sp_config_set(c, "lr", &err), err, "--set: missing '=' in 'lr'");
    ASSERT_ERR(sp_config_set(c, "=3", &err), err, "empty key");
    ASSERT_ERR(sp_config_set(c, "batch_size=1.5", &err), err,
               "bad value '1.5' for key 'batch_size' (expected integer in [1,1000000])");
    ASSERT_ERR(sp_config_set(c, "batch_size=12abc", &err), err, "bad value '12abc'");
    ASSERT_ERR(sp_config_set(c, "batch_size=", &err), err, "bad value ''");
    ASSERT_ERR(sp_config_set(c, "batch_size=0", &err), err, "bad value '0' for key 'batch_size'");
    ASSERT_ERR(sp_config_set(c, "steps=9223372036854775808", &err), err, "(expected integer)");
    ASSERT_ERR(sp_config_set(c, "steps=0x10", &err), err, "bad value '0x10'");
    ASSERT_ERR(sp_config_set(c, "lr=2", &err), err,
               "bad value '2' for key 'lr' (expected float in [0,1])");
    ASSERT_ERR(sp_config_set(c, "lr=fast", &err), err, "bad value 'fast' for key 'lr'");
    ASSERT_ERR(sp_config_set(c, "beta=nan", &err), err, "(expected float)");
    ASSERT_ERR(sp_config_set(c, "beta=inf", &err), err, "bad value 'inf'");
    ASSERT_ERR(sp_config_set(c, "beta=1e999", &err), err, "bad value '1e999'");
    ASSERT_ERR(sp_config_set(c, "use_bg=maybe", &err), err,
               "bad value 'maybe' for key 'use_bg' (expected true|false");
    ASSERT_ERR(sp_config_set(c, "cell=rnn", &err), err,
               "bad value 'rnn' for key 'cell' (expected one of lstm|gru)");
    ASSERT_ERR(sp_config_set(c, "name=a\nb", &err), err, "bad value 'a\\x0ab'");
    /* Failed sets leave the values alone. */
    CU_ASSERT_EQUAL(sp_config_int(c, "batch_size"), 32);
    CU_ASSERT_EQUAL(sp_config_float(c, "lr"), 1e-4);
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "cell"), "lstm");
    sp_config_free(c);
}

static char *write_tmp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sp_test_config_%d.cfg", (int)getpid());
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_file(void) {
    sp_config *c = make();
    sp_error err = {0};
    const char *path = write_tmp("# a comment\n"
                                 "\n"
                                 "batch_size = 128   # trailing comment\n"
                                 "  lr=0.002\r\n"
                                 "cell = gru\n"
                                 "name = \"quoted # not a comment \\\" \\\\ \"  # comment\n"
                                 "use_bg = no");
    int rc = sp_config_load_file(c, path, &err);
    if (rc) fprintf(stderr, "load: %s\n", err.msg);
    CU_ASSERT_EQUAL(rc, SP_OK);
    CU_ASSERT_EQUAL(sp_config_int(c, "batch_size"), 128);
    CU_ASSERT_EQUAL(sp_config_float(c, "lr"), 0.002);
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "cell"), "gru");
    CU_ASSERT_STRING_EQUAL(sp_config_str(c, "name"), "quoted # not a comment \" \\ ");
    CU_ASSERT_EQUAL(sp_config_bool(c, "use_bg"), 0);
    CU_ASSERT(!sp_config_is_set(c, "hidden"));
    unlink(path);
    sp_config_free(c);
}

/* Loads `text` from a file and expects an error containing "PATH:want". */
static void expect_file_error(const char *text, const char *want) {
    sp_config *c = make();
    sp_error err = {0};
    const char *path = write_tmp(text);
    char full[256];
    snprintf(full, sizeof full, "%s:%s", path, want);
    ASSERT_ERR(sp_config_load_file(c, path, &err), err, full);
    unlink(path);
    sp_config_free(c);
}

static void test_file_errors(void) {
    expect_file_error("lr = 0.1\nbogus = 3\n", "2: unknown key 'bogus'");
    expect_file_error("\n\nlr = 5\n", "3: bad value '5' for key 'lr' (expected float in [0,1])");
    expect_file_error("batch_size = 1.5\n", "1: bad value '1.5' for key 'batch_size'");
    expect_file_error("cell = rnn  # comment\n", "1: bad value 'rnn' for key 'cell' (expected one of lstm|gru)");
    expect_file_error("lr 0.1\n", "1: missing '=' in 'lr 0.1'");
    expect_file_error("lr # = 0.1\n", "1: missing '=' in 'lr'");
    expect_file_error(" = 0.1\n", "1: empty key");
    expect_file_error("name = \"open\n", "1: unterminated quoted value for key 'name'");
    expect_file_error("name = \"a\" b\n", "1: text after the quoted value of key 'name'");
    expect_file_error("lr = 0.1\nlr = 0.2\n", "2: key 'lr' set twice (first on line 1)");

    sp_config *c = make();
    sp_error err = {0};
    ASSERT_ERR(sp_config_load_file(c, "/nonexistent/x.cfg", &err), err,
               "/nonexistent/x.cfg: cannot open: No such file or directory");
    ASSERT_ERR(sp_config_load_text(c, "hidden = 4097\n", "ckpt config", &err), err,
               "ckpt config:1: bad value '4097' for key 'hidden' (expected integer in [1,4096])");
    sp_config_free(c);
}

static void test_round_trip(void) {
    sp_config *a = make(), *b = make();
    sp_error err = {0};
    /* Values whose shortest text is long, awkward strings, extremes. */
    CU_ASSERT_EQUAL(sp_config_set(a, "lr=0.1234567890123456789", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_set_value(a, "beta", "1e-300", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_set(a, "steps=9223372036854775807", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_set(a, "name= sp#aced \"q\" \\ ", &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(sp_config_str(a, "name"), "sp#aced \"q\" \\");
    CU_ASSERT_EQUAL(sp_config_set_value(a, "name", " edge ", &err), SP_OK);
    char *t1 = sp_config_to_text(a);
    CU_ASSERT_FATAL(t1 != NULL);
    int rc = sp_config_load_text(b, t1, "text", &err);
    if (rc) fprintf(stderr, "reload: %s\n%s", err.msg, t1);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    char *t2 = sp_config_to_text(b);
    CU_ASSERT_STRING_EQUAL(t1, t2);
    CU_ASSERT_EQUAL(sp_config_float(b, "lr"), 0.1234567890123456789);
    CU_ASSERT_EQUAL(sp_config_float(b, "beta"), 1e-300);
    CU_ASSERT_STRING_EQUAL(sp_config_str(b, "name"), " edge ");
    CU_ASSERT_EQUAL(sp_config_int(b, "steps"), INT64_MAX);
    /* Every key, in declaration order, with its doc. */
    const char *p = t1;
    for (int i = 0; i < NKEYS; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s = ", keys[i].name);
        CU_ASSERT_FATAL(strncmp(p, head, strlen(head)) == 0);
        const char *nl = strchr(p, '\n');
        CU_ASSERT_FATAL(nl != NULL);
        char doc[96];
        snprintf(doc, sizeof doc, "  # %s\n", keys[i].doc);
        CU_ASSERT(strncmp(nl + 1 - strlen(doc), doc, strlen(doc)) == 0);
        p = nl + 1;
    }
    CU_ASSERT_EQUAL(*p, '\0');
    /* Float texts are the shortest that read back exactly. */
    CU_ASSERT(strstr(t1, "lr = 0.12345678901234568  #") != NULL);
    CU_ASSERT(strstr(t1, "beta = 1e-300  #") != NULL);
    CU_ASSERT(strstr(t1, "name = \" edge \"  #") != NULL);
    CU_ASSERT(strstr(t1, "use_bg = true  #") != NULL);
    /* Many floats through text, bit for bit. */
    int bad = 0;
    for (int i = 0; i < 2000; i++) {
        double v = ldexp((double)(i * 2654435761u % 1000003u) / 1000003.0, i % 40 - 30);
        char s[64];
        snprintf(s, sizeof s, "%.17g", v);
        sp_config_set_value(a, "beta", s, &err);
        const char *text = sp_config_value_text(a, "beta");
        char line[96];
        snprintf(line, sizeof line, "beta = %s", text);
        sp_config_load_text(b, line, "x", &err);
        bad += sp_config_float(b, "beta") != v;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(t1);
    free(t2);
    sp_config_free(a);
    sp_config_free(b);
}

typedef struct notes {
    int n;
    char keys[8][32];
    char vals[8][64];
} notes;

static void note(const char *key, const char *old_val, const char *new_val, void *u) {
    notes *ns = u;
    if (ns->n < 8) {
        snprintf(ns->keys[ns->n], sizeof ns->keys[0], "%s", key);
        snprintf(ns->vals[ns->n], sizeof ns->vals[0], "%s->%s", old_val ? old_val : "(none)",
                 new_val ? new_val : "(none)");
    }
    ns->n++;
}

static void test_compare(void) {
    sp_config *a = make(), *b = make();
    sp_error err = {0};
    notes ns = {0};
    CU_ASSERT_EQUAL(sp_config_compare(a, b, &err, note, &ns), SP_OK);
    CU_ASSERT_EQUAL(ns.n, 0);

    /* Non-shape differences are allowed and reported. */
    sp_config_set(b, "lr=0.001", &err);
    sp_config_set(b, "batch_size=64", &err);
    CU_ASSERT_EQUAL(sp_config_compare(a, b, &err, note, &ns), SP_OK);
    CU_ASSERT_EQUAL(ns.n, 2);
    CU_ASSERT_STRING_EQUAL(ns.keys[0], "batch_size");
    CU_ASSERT_STRING_EQUAL(ns.vals[0], "32->64");
    CU_ASSERT_STRING_EQUAL(ns.keys[1], "lr");
    CU_ASSERT_STRING_EQUAL(ns.vals[1], "0.0001->0.001");
    CU_ASSERT_EQUAL(sp_config_compare(a, b, &err, NULL, NULL), SP_OK);

    /* A shape key differing is an input error naming it and both values. */
    sp_config_set(b, "hidden=128", &err);
    ns.n = 0;
    ASSERT_ERR(sp_config_compare(a, b, &err, note, &ns), err,
               "key 'hidden' changes parameter shapes (checkpoint has '256', now '128')");
    sp_config_set(b, "cell=gru", &err);
    ASSERT_ERR(sp_config_compare(a, b, &err, NULL, NULL), err, "key 'cell'");
    CU_ASSERT(strstr(err.msg, "1 more") != NULL);

    /* Keys on one side only (a newer or older program) are noted. */
    sp_config *c = sp_config_new();
    sp_cfg_key extra[] = {{"extra", SP_CFG_INT, "5", "new key", 0, 0, NULL, 0}};
    sp_config_declare(c, keys, NKEYS, &err);
    sp_config_declare(c, extra, 1, &err);
    ns.n = 0;
    CU_ASSERT_EQUAL(sp_config_compare(a, c, &err, note, &ns), SP_OK);
    CU_ASSERT_EQUAL(ns.n, 1);
    CU_ASSERT_STRING_EQUAL(ns.vals[0], "(none)->5");
    ns.n = 0;
    CU_ASSERT_EQUAL(sp_config_compare(c, a, &err, note, &ns), SP_OK);
    CU_ASSERT_STRING_EQUAL(ns.vals[0], "5->(none)");

    /* The resume path: old config from its text form. */
    char *text = sp_config_to_text(a);
    sp_config *old = make();
    CU_ASSERT_EQUAL(sp_config_load_text(old, text, "ckpt", &err), SP_OK);
    CU_ASSERT_EQUAL(sp_config_compare(old, a, &err, NULL, NULL), SP_OK);
    free(text);
    sp_config_free(old);
    sp_config_free(c);
    sp_config_free(a);
    sp_config_free(b);
}

/* Runs fn in a child process; returns its stderr and whether it aborted. */
static int child_aborts(void (*fn)(void), char *out, size_t size) {
    int fd[2];
    CU_ASSERT_FATAL(pipe(fd) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        fn();
        _exit(0);
    }
    close(fd[1]);
    ssize_t n = read(fd[0], out, size - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void get_undeclared(void) {
    sp_config *c = make();
    (void)sp_config_int(c, "no_such_key");
}

static void get_wrong_type(void) {
    sp_config *c = make();
    (void)sp_config_int(c, "lr");
}

static void test_getter_misuse_aborts(void) {
    char out[512];
    CU_ASSERT(child_aborts(get_undeclared, out, sizeof out));
    CU_ASSERT(strstr(out, "undeclared key 'no_such_key'") != NULL);
    CU_ASSERT(child_aborts(get_wrong_type, out, sizeof out));
    CU_ASSERT(strstr(out, "key 'lr' is float, read as integer") != NULL);
}

static const sp_test_case config_cases[] = {
    {"defaults and getters", test_defaults},
    {"declare errors", test_declare_errors},
    {"--set values", test_set},
    {"--set errors", test_set_errors},
    {"cfg file", test_file},
    {"cfg file errors", test_file_errors},
    {"text round trip", test_round_trip},
    {"resume compare", test_compare},
    {"getter misuse aborts naming the key", test_getter_misuse_aborts},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"config", config_cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
