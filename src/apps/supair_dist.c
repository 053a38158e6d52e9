/* supair_dist: the training and evaluation binary (DESIGN.md contract).
 *
 *   supair_dist train --model {supair,air,srnn} --data FILE.h5 --run DIR
 *          [--config FILE.cfg] [--set key=value]... [--steps N | --epochs N] [--time-limit SEC]
 *   supair_dist eval  --run DIR [--data FILE.h5] [--split {valid,test}] [--ckpt FILE.h5]
 *          [--dump N] [--dump-out FILE.h5]
 *   supair_dist sweep --plan PLAN --ranks-per-trial K TRAIN-ARGS...
 *   supair_dist keys  [--model M]      every config key with its default and meaning
 *
 * A thin main: it parses arguments, starts MPI, and calls src/train. Exit
 * codes: 0 success, 1 usage or input error, 2 runtime failure, 3 stopped by a
 * signal after a clean checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supair/config.h"
#include "supair/cpu.h"
#include "supair/dist.h"
#include "supair/error.h"
#include "supair/model.h"
#include "supair/train.h"

#define SUPAIR_VERSION "0.1.0"

static const char *usage_main =
    "usage: supair_dist {train|eval|sweep|keys} [options]   (supair_dist CMD --help for details)\n"
    "Data-parallel trainer for SuPAIR, AIR and SRNN; run it under mpirun or srun.\n";

static const char *usage_train =
    "usage: supair_dist train --model {supair,air,srnn} --data FILE.h5 --run DIR\n"
    "         [--config FILE.cfg] [--set key=value]... [--steps N | --epochs N]\n"
    "         [--time-limit SEC]\n"
    "Trains with every MPI rank taking an equal slice of each global batch\n"
    "(batch_size is global). Resumes from DIR's newest complete checkpoint: the\n"
    "run's own configuration is kept, and --config/--set change it (a changed\n"
    "model shape is an error). --steps N trains until global step N; --epochs N\n"
    "until N epochs are done; --time-limit checkpoints and exits 0 when the wall\n"
    "time is up. SIGUSR1/SIGTERM: checkpoint at the next step, exit 3.\n"
    "`supair_dist keys --model M` lists every configuration key.\n";

static const char *usage_eval =
    "usage: supair_dist eval --run DIR [--data FILE.h5] [--split {valid,test}]\n"
    "         [--ckpt FILE.h5] [--dump N] [--dump-out FILE.h5]\n"
    "Evaluates a run's best checkpoint (else its newest, or --ckpt) on the whole\n"
    "split and appends the metrics to /eval of DIR/metrics.h5. --dump N writes N\n"
    "scenes with inferred boxes, counts and presence probabilities to\n"
    "--dump-out (default DIR/dump.h5).\n";

static const char *usage_sweep =
    "usage: supair_dist sweep --plan PLAN --ranks-per-trial K --model M --data FILE.h5 --run RUN\n"
    "         [train options...]\n"
    "Runs many trials in one allocation: the ranks form groups of K, each group\n"
    "trains one PLAN line at a time and takes the next line when it finishes.\n"
    "Line i (0-based; every line counts, '#' starts a comment) holds that trial's\n"
    "whitespace-separated key=value overrides, applied after the common --set\n"
    "ones; its run directory is RUN/trial_i. An empty or comment-only line is a\n"
    "trial without overrides (so line numbers stay SLURM array indices; keep\n"
    "notes about a plan outside it). A failed trial is reported and the\n"
    "others go on. A signal checkpoints the running trials and exits 3; rerunning\n"
    "the same command resumes them (finished trials return at once).\n";

static const char *usage_keys =
    "usage: supair_dist keys [--model M]\n"
    "Prints every configuration key (shared ones, then the model's) with its\n"
    "default and documentation, in the config.cfg format.\n";

/* Fetches the value of option argv[*i] into *out; SP_EINPUT when missing. */
static int take_value(int argc, char **argv, int *i, const char **out, sp_error *err) {
    if (*i + 1 >= argc) return sp_fail(err, SP_EINPUT, "option %s needs a value", argv[*i]);
    *out = argv[++*i];
    return SP_OK;
}

static int parse_int64(const char *flag, const char *s, int64_t lo, int64_t *out, sp_error *err) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo)
        return sp_fail(err, SP_EINPUT, "bad value '%s' for %s (expected an integer >= %lld)", s,
                       flag, (long long)lo);
    *out = v;
    return SP_OK;
}

typedef struct sweep_opts {
    const char *plan;
    int ranks_per_trial;
} sweep_opts;

static int parse_train(int argc, char **argv, sp_train_opts *o, const char **sets,
                       sweep_opts *sw, sp_error *err) {
    memset(o, 0, sizeof *o);
    o->sets = sets;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int rc = SP_OK;
        int64_t n;
        if (sw && !strcmp(a, "--plan")) rc = take_value(argc, argv, &i, &sw->plan, err);
        else if (sw && !strcmp(a, "--ranks-per-trial")) {
            if ((rc = take_value(argc, argv, &i, &v, err))) return rc;
            if ((rc = parse_int64("--ranks-per-trial", v, 1, &n, err))) return rc;
            sw->ranks_per_trial = (int)n;
        } else if (!strcmp(a, "--model")) rc = take_value(argc, argv, &i, &o->model, err);
        else if (!strcmp(a, "--data")) rc = take_value(argc, argv, &i, &o->data, err);
        else if (!strcmp(a, "--run")) rc = take_value(argc, argv, &i, &o->run_dir, err);
        else if (!strcmp(a, "--config")) rc = take_value(argc, argv, &i, &o->config_file, err);
        else if (!strcmp(a, "--set")) {
            if ((rc = take_value(argc, argv, &i, &v, err))) return rc;
            sets[o->n_sets++] = v;
        } else if (!strcmp(a, "--steps")) {
            if ((rc = take_value(argc, argv, &i, &v, err))) return rc;
            if ((rc = parse_int64("--steps", v, 1, &n, err))) return rc;
            o->steps = n;
        } else if (!strcmp(a, "--epochs")) {
            if ((rc = take_value(argc, argv, &i, &v, err))) return rc;
            if ((rc = parse_int64("--epochs", v, 1, &n, err))) return rc;
            o->epochs = (int)n;
        } else if (!strcmp(a, "--time-limit")) {
            if ((rc = take_value(argc, argv, &i, &v, err))) return rc;
            char *end;
            o->time_limit = strtod(v, &end);
            if (*v == '\0' || *end != '\0' || !(o->time_limit > 0))
                return sp_fail(err, SP_EINPUT, "bad value '%s' for --time-limit (expected seconds > 0)", v);
        } else return sp_fail(err, SP_EINPUT, "train: unknown option '%s' (see --help)", a);
        if (rc) return rc;
    }
    if (!o->run_dir) return sp_fail(err, SP_EINPUT, "train: --run DIR is required");
    if (!o->data) return sp_fail(err, SP_EINPUT, "train: --data FILE.h5 is required");
    if (o->steps && o->epochs)
        return sp_fail(err, SP_EINPUT, "train: give --steps or --epochs, not both");
    if (sw && !sw->plan) return sp_fail(err, SP_EINPUT, "sweep: --plan PLAN is required");
    if (sw && !sw->ranks_per_trial)
        return sp_fail(err, SP_EINPUT, "sweep: --ranks-per-trial K is required");
    if (sw && !o->model) return sp_fail(err, SP_EINPUT, "sweep: --model is required");
    return SP_OK;
}

static int parse_eval(int argc, char **argv, sp_eval_opts *o, sp_error *err) {
    memset(o, 0, sizeof *o);
    o->split = "test";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int rc = SP_OK;
        if (!strcmp(a, "--run")) rc = take_value(argc, argv, &i, &o->run_dir, err);
        else if (!strcmp(a, "--data")) rc = take_value(argc, argv, &i, &o->data, err);
        else if (!strcmp(a, "--ckpt")) rc = take_value(argc, argv, &i, &o->ckpt, err);
        else if (!strcmp(a, "--dump-out")) rc = take_value(argc, argv, &i, &o->dump_path, err);
        else if (!strcmp(a, "--split")) {
            if ((rc = take_value(argc, argv, &i, &o->split, err))) return rc;
            if (strcmp(o->split, "test") && strcmp(o->split, "valid"))
                return sp_fail(err, SP_EINPUT, "bad value '%s' for --split (expected valid or test)",
                               o->split);
        } else if (!strcmp(a, "--dump")) {
            if ((rc = take_value(argc, argv, &i, &v, err))) return rc;
            if ((rc = parse_int64("--dump", v, 1, &o->dump_n, err))) return rc;
        } else return sp_fail(err, SP_EINPUT, "eval: unknown option '%s' (see --help)", a);
        if (rc) return rc;
    }
    if (!o->run_dir) return sp_fail(err, SP_EINPUT, "eval: --run DIR is required");
    return SP_OK;
}

static int print_keys(int argc, char **argv, sp_error *err) {
    const char *model = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--model")) {
            int rc = take_value(argc, argv, &i, &model, err);
            if (rc) return rc;
        } else return sp_fail(err, SP_EINPUT, "keys: unknown option '%s'", argv[i]);
    }
    const sp_model_vtable *m = NULL;
    if (model && !(m = sp_model_find(model)))
        return sp_fail(err, SP_EINPUT, "unknown model '%s' (expected one of: %s)", model,
                       sp_model_names());
    sp_config *c = sp_config_new();
    if (!c) return sp_fail(err, SP_ERUNTIME, "out of memory");
    int rc = sp_config_declare(c, sp_train_keys, sp_train_n_keys, err);
    if (!rc && m) rc = sp_config_declare(c, m->keys, m->n_keys, err);
    if (!rc && m && m->shared_defaults)
        rc = sp_config_load_text(c, m->shared_defaults, "model defaults", err);
    if (!rc) {
        char *text = sp_config_to_text(c);
        if (text) fputs(text, stdout);
        free(text);
    }
    sp_config_free(c);
    return rc;
}

static int has_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

int main(int argc, char **argv) {
    sp_error err = {0};
    sp_blas_ensure_coretype(argc, argv, &err);
    const char *cmd = argc > 1 ? argv[1] : NULL;
    if (!cmd || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage_main, cmd ? stdout : stderr);
        return cmd ? 0 : 1;
    }
    if (!strcmp(cmd, "--version")) {
        printf("supair_dist %s\n", SUPAIR_VERSION);
        return 0;
    }
    int is_sweep = !strcmp(cmd, "sweep");
    int is_train = !strcmp(cmd, "train") || is_sweep, is_eval = !strcmp(cmd, "eval");
    if (!strcmp(cmd, "keys")) {
        if (has_help(argc, argv)) return fputs(usage_keys, stdout), 0;
        int rc = print_keys(argc, argv, &err);
        if (rc) fprintf(stderr, "supair_dist: %s\n", err.msg);
        return rc;
    }
    if (!is_train && !is_eval) {
        fprintf(stderr, "supair_dist: unknown command '%s' (expected train, eval, sweep or keys)\n",
                cmd);
        return SP_EINPUT;
    }
    if (has_help(argc, argv)) {
        fputs(is_sweep ? usage_sweep : is_train ? usage_train : usage_eval, stdout);
        return 0;
    }

    sp_train_opts topts;
    sp_eval_opts eopts;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    sweep_opts sw = {0};
    int rc = is_train ? parse_train(argc, argv, &topts, sets, is_sweep ? &sw : NULL, &err)
                      : parse_eval(argc, argv, &eopts, &err);

    sp_dist *dist = NULL;
    int drc = sp_dist_init(&argc, &argv, &dist, &err);
    if (drc) {
        fprintf(stderr, "supair_dist: %s\n", err.msg);
        free(sets);
        return drc;
    }
    sp_log_set_rank(sp_dist_rank(dist));
    sp_cpu_flush_denormals();
    if (!rc && is_sweep) rc = sp_sweep_run(&topts, sw.plan, sw.ranks_per_trial, dist, &err);
    else if (!rc) rc = is_train ? sp_train_run(&topts, dist, &err) : sp_eval_run(&eopts, dist, &err);
    if (rc && rc != SP_ESTOPPED && sp_dist_rank(dist) == 0)
        fprintf(stderr, "supair_dist: %s\n", err.msg);
    if (rc == SP_ESTOPPED && sp_dist_rank(dist) == 0)
        sp_info("stopped by signal after a clean checkpoint (exit 3: requeue to resume)");
    sp_dist_finalize(dist);
    free(sets);
    return rc;
}
