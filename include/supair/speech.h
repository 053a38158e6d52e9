/* Speech corpora to SRNN data files: TIMIT, Blizzard, and a demo corpus
 * synthesised from Debian's speech packages (festival, espeak-ng).
 *
 * File layout (the Speech schema of DESIGN.md, details fixed here):
 *   samples  = 16 kHz mono, PCM / 32768, then (x - mean) / std with the
 *              root attributes mean, std (population std over the training
 *              waveform, accumulated in double with Welford/Chan merges);
 *   frame    = 200 samples; chunk = row = 40 frames = 8000 samples.
 *   /SPLIT/x  (N,40,200) float32, N = n_batches * streams, BATCH-MAJOR:
 *              row i*streams + j is chunk i of stream j, i.e. chunk
 *              i + j*n_batches of the split's time-ordered chunks, so the
 *              streams [s0,s1) of batch i are the contiguous rows
 *              [i*streams+s0, i*streams+s1). Stream j is a contiguous piece
 *              of the split's waveform; its chunk i+1 follows chunk i.
 *   /SPLIT/u0 (streams,200) float32: the frame before each stream's first
 *              chunk, i.e. the model input u_1 of batch 0 (u_t = x_{t-1});
 *              for later batches u_1 is the last frame of the stream's
 *              previous chunk. Attributes on /SPLIT/x: streams, n_batches.
 *   TIMIT train/valid: the split's files concatenated (sorted order), cut to
 *              F whole frames; x = frames[1:], chunks of 40, n_batches =
 *              floor(floor((F-1)/40) / streams); the rest is dropped.
 *   TIMIT test: /test/frames (F,200) every utterance whole (truncated to whole
 *              frames), /test/offsets (U+1) int64 frame offsets.
 *   Blizzard:  all files concatenated, cut into `streams` equal pieces of
 *              floor(L/streams) samples, R = floor(piece/8000) rows each;
 *              batches [0,nt) train, [nt,nt+nv) valid, the rest test with
 *              nt = floor(0.9 R), nv = floor(0.05 R) unless given. /test/x
 *              holds the test rows batch-major like the others; /test/u0
 *              (N,200) the frame before each test row.
 *   Every split group holds `files` (the relative paths it was made from;
 *   Blizzard: /files and /file_samples at the root, and batch ranges). */
#ifndef SUPAIR_SPEECH_H
#define SUPAIR_SPEECH_H

#include <signal.h>
#include <stdint.h>

#include "supair/error.h"

#define SP_SPEECH_FRAME 200
#define SP_SPEECH_CHUNK_FRAMES 40
#define SP_SPEECH_ROW (SP_SPEECH_FRAME * SP_SPEECH_CHUNK_FRAMES) /* 8000 samples */
#define SP_SPEECH_VERSION "speech 1"

/* Progress: phase ("scan", "stats", "train", "valid", "test", "synth"),
 * units done of total (files, samples or rows as the phase says). */
typedef void (*sp_speech_progress_fn)(void *ctx, const char *phase, long long done,
                                      long long total);

/* What a build made (for the CLI's closing lines and tests). */
typedef struct sp_speech_summary {
    long n_files[3];        /* train, valid, test */
    long long rows[3];      /* x rows (test: frames for TIMIT) */
    long long n_batches[2]; /* train, valid */
    long long samples[3];   /* waveform samples of each split's files */
    double mean, std;
} sp_speech_summary;

typedef struct sp_timit_opts {
    const char *root;               /* holds TRAIN and TEST (any case) */
    const char *out;                /* written as OUT.tmp.PID, then renamed */
    const char *valid_list;         /* optional: root-relative paths, one a line */
    const char *train_list;         /* optional: root-relative paths, one a line */
    uint64_t seed;                  /* validation shuffle (default 0) */
    int streams;                    /* default 64 */
    int mix;                        /* average channels instead of rejecting */
    const char *corpus;             /* root attribute `corpus` (default "timit") */
    const char *const *extra_attrs; /* NULL or {name, value, ..., NULL}: more root strings */
    sp_speech_progress_fn progress;
    void *progress_ctx;
    volatile sig_atomic_t *stop; /* nonzero: stop, remove the temp file, SP_ESTOPPED */
} sp_timit_opts;

void sp_timit_opts_default(sp_timit_opts *o);
int sp_timit_build(const sp_timit_opts *o, sp_speech_summary *sum, sp_error *err);

typedef struct sp_blizzard_opts {
    const char *root, *out;
    int streams; /* default 128 */
    int mix;
    long long train_rows, valid_rows; /* < 0: 90 % / 5 % rule; else multiples of streams */
    sp_speech_progress_fn progress;
    void *progress_ctx;
    volatile sig_atomic_t *stop;
} sp_blizzard_opts;

void sp_blizzard_opts_default(sp_blizzard_opts *o);
int sp_blizzard_build(const sp_blizzard_opts *o, sp_speech_summary *sum, sp_error *err);

/* The TIMIT validation split: n_valid = round(0.05 n) files (231 of 4620;
 * at least 1 when n >= 2)
 * chosen by a seeded Fisher-Yates shuffle of the sorted list (Philox,
 * site below); sets valid[i] = 1 for them. Exposed for tests. */
#define SP_SPEECH_SITE_VALID 0x76616c69u /* "vali" */
long sp_timit_valid_count(long n);
void sp_timit_pick_valid(long n, uint64_t seed, unsigned char *valid);

typedef struct sp_speech_demo_opts {
    const char *out;
    double minutes;   /* total speech, default 30 */
    const char *work; /* keep the TIMIT-shaped tree here (default: temp dir, removed) */
    uint64_t seed;
    int streams; /* passed to the TIMIT conversion (default 64) */
    int jobs;    /* parallel synthesis processes (default: online CPUs) */
    sp_speech_progress_fn progress;
    void *progress_ctx;
    volatile sig_atomic_t *stop;
} sp_speech_demo_opts;

void sp_speech_demo_opts_default(sp_speech_demo_opts *o);
int sp_speech_demo_build(const sp_speech_demo_opts *o, sp_speech_summary *sum, sp_error *err);

/* `supair_data timit|blizzard|speech-demo ...`: argv[0] is the subcommand;
 * parses the flags (--help prints usage to stdout and returns 0), prints
 * progress on stderr and a closing summary on stdout. Returns an sp_status
 * (the exit code: 1 usage/input, 2 runtime, 3 interrupted) with the reason
 * in err. */
int sp_speech_cli(const char *cmd, int argc, char **argv, sp_error *err);

#endif
