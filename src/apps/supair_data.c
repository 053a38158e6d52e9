/* supair_data: makes and inspects the training data files.
 *
 * A thin main: each subcommand parses its flags and calls src/data. New
 * subcommands (speech corpora) are one more row in `commands` and one more
 * cmd_* function; the flag helpers below are shared. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supair/cpu.h"
#include "supair/dataset.h"
#include "supair/error.h"
#include "supair/scenes.h"
#include "supair/speech.h"
#include "supair/timer.h"

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- flag helpers ---- */

typedef struct flag_iter {
    const char *cmd;
    int argc, i;
    char **argv;
    char name[64];
    const char *value; /* set by flag_value */
    const char *inline_value;
} flag_iter;

static int usage_error(const char *cmd, const char *fmt, const char *what) {
    fprintf(stderr, "supair_data %s: ", cmd);
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (see supair_data %s --help)\n", cmd);
    return 1;
}

/* Next argument: 1 = a flag (name in it->name), 0 = a positional (it->value),
 * -1 = the end. "--name=value" and "--name value" are both accepted. */
static int flag_next(flag_iter *it) {
    if (it->i >= it->argc) return -1;
    const char *a = it->argv[it->i++];
    it->inline_value = NULL;
    if (strncmp(a, "--", 2) != 0 || !a[2]) {
        if (a[0] == '-' && a[1] && strcmp(a, "-h")) { /* "-x": not a flag we know */
            snprintf(it->name, sizeof it->name, "%s", a);
            return 1;
        }
        if (!strcmp(a, "-h")) {
            snprintf(it->name, sizeof it->name, "--help");
            return 1;
        }
        it->value = a;
        return 0;
    }
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    if (n >= sizeof it->name) n = sizeof it->name - 1;
    memcpy(it->name, a, n);
    it->name[n] = '\0';
    if (eq) it->inline_value = eq + 1;
    return 1;
}

/* The value of the current flag; 0 ok, 1 (message printed) when missing. */
static int flag_value(flag_iter *it) {
    if (it->inline_value) {
        it->value = it->inline_value;
        return 0;
    }
    if (it->i >= it->argc) return usage_error(it->cmd, "flag '%s' needs a value", it->name);
    it->value = it->argv[it->i++];
    return 0;
}

static int parse_long(flag_iter *it, long lo, long hi, long *out) {
    if (flag_value(it)) return 1;
    char *end;
    errno = 0;
    long v = strtol(it->value, &end, 10);
    if (errno || end == it->value || *end || v < lo || v > hi) {
        fprintf(stderr, "supair_data %s: %s '%s': expected an integer in [%ld, %ld]\n", it->cmd,
                it->name, it->value, lo, hi);
        return 1;
    }
    *out = v;
    return 0;
}

static int parse_u64(flag_iter *it, uint64_t *out) {
    if (flag_value(it)) return 1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(it->value, &end, 10);
    if (errno || end == it->value || *end || it->value[0] == '-') {
        fprintf(stderr, "supair_data %s: %s '%s': expected a non-negative integer\n", it->cmd,
                it->name, it->value);
        return 1;
    }
    *out = v;
    return 0;
}

static int exit_code(int status) {
    return status == SP_EINPUT ? 1 : status == SP_ESTOPPED ? 3 : 2;
}

/* ---- scenes ---- */

static void scenes_help(FILE *f) {
    fprintf(f,
            "usage: supair_data scenes --out FILE.h5 [options]\n"
            "Makes a scenes file (50x50 grey scenes, object counts and boxes) for SuPAIR/AIR.\n"
            "  --out FILE.h5          output file (written to FILE.h5.tmp.PID, then renamed)\n"
            "  --source SRC           fashion-mnist (default; Debian's dataset-fashion-mnist in\n"
            "                         %s) or mnist-idx:DIR (the four\n"
            "                         MNIST IDX files in DIR, gzipped or not)\n"
            "  --kind objects|sprites objects (default): resized items from SRC;\n"
            "                         sprites: circles, squares, diamonds (no SRC)\n"
            "  --noise none|gauss|grid  background noise (default none)\n"
            "  --max-objects N        count ~ U{0..N} (default 2; objects <= %d, sprites <= %d)\n"
            "  --train N              training scenes (default 60000 objects, 40000 sprites)\n"
            "  --test N               test scenes (default 10000)\n"
            "  --valid N              also N validation scenes (/valid), carved from the\n"
            "                         training stream (for model selection; default 0)\n"
            "  --seed S               seed (default 0); same flags + seed = same file bytes\n"
            "Exit: 0 ok, 1 bad flag or input, 2 runtime failure, 3 interrupted (no file left).\n",
            SP_FASHION_MNIST_DIR, SP_SCENES_MAX_OBJECTS, SP_SPRITES_MAX_OBJECTS);
}

typedef struct progress_state {
    int tty;
    int last_decile;
    const char *last_split;
} progress_state;

static void scenes_progress(void *ctx, const char *split, long done, long total) {
    progress_state *p = ctx;
    if (p->last_split != split) {
        p->last_split = split;
        p->last_decile = -1;
    }
    int pct = total ? (int)(100 * done / total) : 100;
    if (p->tty) {
        fprintf(stderr, "\r%-5s %8ld / %ld scenes (%3d%%)%s", split, done, total, pct,
                done == total ? "\n" : "");
    } else if (pct / 10 > p->last_decile) {
        p->last_decile = pct / 10;
        fprintf(stderr, "%s: %ld / %ld scenes (%d%%)\n", split, done, total, pct);
    }
    fflush(stderr);
}

static int cmd_scenes(int argc, char **argv) {
    sp_scenes_opts o;
    sp_scenes_opts_default(&o);
    flag_iter it = {.cmd = "scenes", .argc = argc, .argv = argv, .i = 0};
    int source_given = 0, r;
    long v;
    while ((r = flag_next(&it)) >= 0) {
        if (r == 0) return usage_error("scenes", "unexpected argument '%s'", it.value);
        const char *f = it.name;
        if (!strcmp(f, "--help")) {
            scenes_help(stdout);
            return 0;
        } else if (!strcmp(f, "--out")) {
            if (flag_value(&it)) return 1;
            o.out = it.value;
        } else if (!strcmp(f, "--source")) {
            if (flag_value(&it)) return 1;
            o.source = it.value;
            source_given = 1;
        } else if (!strcmp(f, "--kind")) {
            if (flag_value(&it)) return 1;
            if (sp_scene_kind_parse(&o.spec.kind, it.value))
                return usage_error("scenes", "--kind '%s': expected objects or sprites", it.value);
        } else if (!strcmp(f, "--noise")) {
            if (flag_value(&it)) return 1;
            if (sp_scene_noise_parse(&o.spec.noise, it.value))
                return usage_error("scenes", "--noise '%s': expected none, gauss or grid",
                                   it.value);
        } else if (!strcmp(f, "--max-objects")) {
            if (parse_long(&it, 1, SP_SCENES_MAX_OBJECTS, &v)) return 1;
            o.spec.max_objects = (int)v;
        } else if (!strcmp(f, "--train")) {
            if (parse_long(&it, 0, 100000000, &o.n_train)) return 1;
        } else if (!strcmp(f, "--test")) {
            if (parse_long(&it, 0, 100000000, &o.n_test)) return 1;
        } else if (!strcmp(f, "--valid")) {
            if (parse_long(&it, 0, 100000000, &o.n_valid)) return 1;
        } else if (!strcmp(f, "--seed")) {
            if (parse_u64(&it, &o.spec.seed)) return 1;
        } else {
            return usage_error("scenes", "unknown flag '%s'", f);
        }
    }
    if (!o.out) return usage_error("scenes", "%s", "--out FILE.h5 is required");
    if (o.spec.kind == SP_SCENES_SPRITES && source_given)
        return usage_error("scenes", "%s", "--source applies to --kind objects only");
    if (o.spec.kind == SP_SCENES_SPRITES && o.spec.max_objects > SP_SPRITES_MAX_OBJECTS)
        return usage_error("scenes", "--max-objects: sprites allow at most %s", "4");

    progress_state ps = {isatty(2), -1, NULL};
    o.progress = scenes_progress;
    o.progress_ctx = &ps;
    o.stop = &stop_requested;
    install_signals();
    double t0 = sp_time_now();
    sp_error err;
    sp_error_clear(&err);
    int rc = sp_scenes_build(&o, &err);
    if (rc) {
        fprintf(stderr, "supair_data scenes: %s\n", err.msg);
        return exit_code(rc);
    }
    struct stat st;
    long long size = stat(o.out, &st) == 0 ? (long long)st.st_size : -1;
    printf("wrote %s (%lld bytes) in %.1f s\n", o.out, size, sp_time_now() - t0);
    return 0;
}

/* ---- inspect ---- */

static void inspect_help(FILE *f) {
    fprintf(f, "usage: supair_data inspect FILE.h5\n"
               "Prints a data file's root attributes, its datasets (type, shape, storage,\n"
               "attributes) and, for scenes files, the count histogram of each split.\n");
}

static int cmd_inspect(int argc, char **argv) {
    flag_iter it = {.cmd = "inspect", .argc = argc, .argv = argv, .i = 0};
    const char *path = NULL;
    int r;
    while ((r = flag_next(&it)) >= 0) {
        if (r == 1) {
            if (!strcmp(it.name, "--help")) {
                inspect_help(stdout);
                return 0;
            }
            return usage_error("inspect", "unknown flag '%s'", it.name);
        }
        if (path) return usage_error("inspect", "unexpected argument '%s'", it.value);
        path = it.value;
    }
    if (!path) return usage_error("inspect", "%s", "FILE.h5 is required");
    sp_error err;
    sp_error_clear(&err);
    int rc = sp_dataset_inspect(path, stdout, &err);
    if (rc) {
        fprintf(stderr, "supair_data inspect: %s\n", err.msg);
        return exit_code(rc);
    }
    return 0;
}

/* ---- speech corpora (src/data/speech*.c parses their flags) ---- */

/* argv holds the subcommand's arguments; sp_speech_cli wants the subcommand
 * name in front, which main's argv has just before them. */
static int speech_command(const char *cmd, int argc, char **argv) {
    sp_error err;
    sp_error_clear(&err);
    int rc = sp_speech_cli(cmd, argc + 1, argv - 1, &err);
    if (rc) fprintf(stderr, "supair_data %s: %s\n", cmd, err.msg);
    return rc;
}

static int cmd_timit(int argc, char **argv) { return speech_command("timit", argc, argv); }
static int cmd_blizzard(int argc, char **argv) { return speech_command("blizzard", argc, argv); }
static int cmd_speech_demo(int argc, char **argv) { return speech_command("speech-demo", argc, argv); }

/* ---- dispatch ---- */

typedef struct command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv holds only the subcommand's arguments */
} command;

static const command commands[] = {
    {"scenes", "make a scenes file (multi-object items or sprites)", cmd_scenes},
    {"timit", "convert a TIMIT tree (NIST SPHERE) to an SRNN speech file", cmd_timit},
    {"blizzard", "convert a directory of audio files (Blizzard) to an SRNN speech file", cmd_blizzard},
    {"speech-demo", "synthesise a demo speech corpus (festival, espeak-ng) and convert it", cmd_speech_demo},
    {"inspect", "print a data file's schema, attributes and count histogram", cmd_inspect},
    {NULL, NULL, NULL},
};

static void main_help(FILE *f) {
    fprintf(f, "usage: supair_data COMMAND [options]   (supair_data COMMAND --help)\n"
               "Makes and inspects the HDF5 data files supair_dist trains on.\n");
    for (const command *c = commands; c->name; c++) fprintf(f, "  %-12s %s\n", c->name, c->summary);
}

int main(int argc, char **argv) {
    sp_error err;
    sp_error_clear(&err);
    sp_blas_ensure_coretype(argc, argv, &err);
    if (argc < 2) {
        main_help(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        main_help(stdout);
        return 0;
    }
    for (const command *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->run(argc - 2, argv + 2);
    fprintf(stderr, "supair_data: unknown command '%s' (see supair_data --help)\n", argv[1]);
    return 1;
}
