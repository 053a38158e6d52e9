/* Speech converters: a small TIMIT tree and a Blizzard directory written
 * here with sox (SPHERE little/big-endian, original-TIMIT headers, WAV,
 * FLAC, 22.05 kHz WAV), converted, and read back through the dataset
 * reader: the normalisation, split sizes, stream layout, u0 frames and test
 * offsets must be exactly as speech.h specifies; bad inputs must fail with a
 * message naming the file or directory and leave no output file. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <omp.h>
#include <unistd.h>

#include "supair/audio.h"
#include "supair/dataset.h"
#include "supair/speech.h"
#include "testutil.h"

static char dir[64];

static void mkdir_tmp(void) {
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "/tmp/test_speech.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
}

static void sh(const char *cmd) {
    int rc = system(cmd);
    if (rc) printf("\n  command failed: %s\n", cmd);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
}

static void make_samples(int16_t *v, long n, unsigned seed) {
    uint32_t s = seed * 2654435761u + 7;
    for (long i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        double x = 7000 * sin(0.013 * i * (1 + seed % 5)) + (double)((int)(s >> 19) - 4096) +
                   300 * (seed % 3);
        v[i] = (int16_t)lrint(x);
    }
}

/* sox from raw samples (no dither, so the samples stay exact). */
static void sox_write(const int16_t *v, long n, int ch, int rate, const char *args,
                      const char *out) {
    char raw[256], cmd[1400];
    snprintf(raw, sizeof raw, "%s/in.raw", dir);
    FILE *f = fopen(raw, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fwrite(v, sizeof *v, (size_t)(n * ch), f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "mkdir -p \"$(dirname '%s')\" && sox -D -R -t raw -r %d -e signed-integer -b 16 "
             "-c %d -L '%s' %s '%s'",
             out, rate, ch, raw, args, out);
    sh(cmd);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* No OUT.tmp.* beside OUT. */
static void expect_no_tmp(const char *out) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s'.tmp.* >/dev/null 2>&1", out);
    CU_ASSERT_NOT_EQUAL(system(cmd), 0);
}

/* No OUT, and no OUT.tmp.* beside it. */
static void expect_no_output(const char *out) {
    CU_ASSERT_FALSE(exists(out));
    expect_no_tmp(out);
}

/* ---- a small TIMIT tree ---- */

#define NTRAIN 21
#define NTEST 4
typedef struct tfile {
    char rel[128];
    long n;
    int16_t *v;
} tfile;
static tfile trn[NTRAIN], tst[NTEST];
static char troot[256];

static int tfile_cmp(const void *a, const void *b) {
    const tfile *x = a, *y = b;
    int c = strcasecmp(x->rel, y->rel);
    return c ? c : strcmp(x->rel, y->rel);
}

/* TRAIN in upper case with mixed SPHERE flavours, test in lower case. */
static void make_timit(void) {
    if (troot[0]) return;
    mkdir_tmp();
    snprintf(troot, sizeof troot, "%s/timit", dir);
    for (int i = 0; i < NTRAIN + NTEST; i++) {
        tfile *t = i < NTRAIN ? &trn[i] : &tst[i - NTRAIN];
        t->n = 17000 + 731L * i + (i % 3) * 199;
        t->v = malloc((size_t)t->n * sizeof *t->v);
        make_samples(t->v, t->n, (unsigned)i + 1);
        if (i < NTRAIN)
            snprintf(t->rel, sizeof t->rel, "TRAIN/DR%d/%cSPK%d/S%c%d.WAV", 1 + i % 2,
                     i % 2 ? 'F' : 'M', i % 4, 'X', i);
        else
            snprintf(t->rel, sizeof t->rel, "test/dr1/mtst%d/si%d.wav", i % 2, i);
        char p[512];
        snprintf(p, sizeof p, "%s/%s", troot, t->rel);
        sox_write(t->v, t->n, 1, 16000, i % 3 == 1 ? "-t sph -B" : "-t sph", p);
        if (i % 3 == 2) { /* the original-TIMIT form: no sample_coding line */
            char cmd[700];
            snprintf(cmd, sizeof cmd,
                     "LC_ALL=C sed -i '1,12s/sample_coding -s3 pcm/                     /' '%s'",
                     p);
            sh(cmd);
        }
    }
    /* Files that are not *.WAV are ignored (TIMIT's .PHN, .TXT). */
    char p[512];
    snprintf(p, sizeof p, "%s/TRAIN/DR1/MSPK0/SX0.PHN", troot);
    FILE *f = fopen(p, "w");
    fputs("0 3000 h#\n", f);
    fclose(f);
    qsort(trn, NTRAIN, sizeof *trn, tfile_cmp);
    qsort(tst, NTEST, sizeof *tst, tfile_cmp);
}

typedef struct expect {
    double mean, std;
} expect;

static expect stats_of(const unsigned char *valid) {
    double s = 0, n = 0;
    for (int i = 0; i < NTRAIN; i++)
        if (!valid[i])
            for (long k = 0; k < trn[i].n; k++) {
                s += trn[i].v[k] / 32768.0;
                n++;
            }
    double mean = s / n, m2 = 0;
    for (int i = 0; i < NTRAIN; i++)
        if (!valid[i])
            for (long k = 0; k < trn[i].n; k++) {
                double d = trn[i].v[k] / 32768.0 - mean;
                m2 += d * d;
            }
    return (expect){mean, sqrt(m2 / n)};
}

/* The concatenated raw waveform (PCM / 32768) of the chosen files. */
static float *concat(int want_valid, const unsigned char *valid, long *len) {
    long n = 0;
    for (int i = 0; i < NTRAIN; i++)
        if (valid[i] == want_valid) n += trn[i].n;
    float *x = malloc((size_t)n * sizeof *x);
    long k = 0;
    for (int i = 0; i < NTRAIN; i++)
        if (valid[i] == want_valid)
            for (long j = 0; j < trn[i].n; j++) x[k++] = trn[i].v[j] / 32768.0f;
    *len = n;
    return x;
}

static float norm(float v, double mean, double std) { return (float)(((double)v - mean) / std); }

/* Checks /SPLIT/x and /SPLIT/u0 against the TIMIT stream layout. */
static void check_streams(sp_dataset *d, const char *split, const float *w, long L, int S,
                          double mean, double std) {
    long F = L / 200, chunks = (F - 1) / 40, nb = chunks / S;
    CU_ASSERT_FATAL(nb >= 1);
    char name[64];
    snprintf(name, sizeof name, "/%s/x", split);
    long dims[3], row[2] = {40, 200};
    sp_error err;
    CU_ASSERT_EQUAL_FATAL(sp_dataset_check(d, name, 3, row, dims, &err), SP_OK);
    CU_ASSERT_EQUAL(dims[0], nb * S);
    int64_t a;
    char obj[64];
    snprintf(obj, sizeof obj, "/%s/x", split);
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, obj, "streams", &a, &err), SP_OK);
    CU_ASSERT_EQUAL(a, S);
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, obj, "n_batches", &a, &err), SP_OK);
    CU_ASSERT_EQUAL(a, nb);
    float *x = malloc(8000 * sizeof *x);
    long bad = 0;
    for (long i = 0; i < nb; i++)
        for (int j = 0; j < S; j++) {
            long r = i * S + j, c = i + j * nb; /* batch-major: chunk i of stream j */
            CU_ASSERT_EQUAL_FATAL(sp_dataset_read_rows(d, name, &r, 1, x, 8000, &err), SP_OK);
            for (long k = 0; k < 8000; k++) {
                float want = norm(w[200 * (1 + 40 * c) + k], mean, std);
                if (x[k] != want && !bad++)
                    printf("\n  %s row %ld [%ld]: %.9g vs %.9g\n", name, r, k, x[k], want);
            }
        }
    CU_ASSERT_EQUAL(bad, 0);
    snprintf(name, sizeof name, "/%s/u0", split);
    long rowu[1] = {200};
    CU_ASSERT_EQUAL_FATAL(sp_dataset_check(d, name, 2, rowu, dims, &err), SP_OK);
    CU_ASSERT_EQUAL(dims[0], S);
    for (long j = 0; j < S; j++) {
        CU_ASSERT_EQUAL_FATAL(sp_dataset_read_rows(d, name, &j, 1, x, 200, &err), SP_OK);
        for (long k = 0; k < 200; k++) bad += x[k] != norm(w[200 * 40 * j * nb + k], mean, std);
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(x);
}

static void test_timit_layout(void) {
    make_timit();
    char out[300];
    snprintf(out, sizeof out, "%s/timit.h5", dir);
    sp_timit_opts o;
    sp_timit_opts_default(&o);
    o.root = troot;
    o.out = out;
    o.seed = 11;
    o.streams = 2;
    sp_speech_summary s;
    sp_error err;
    int rc = sp_timit_build(&o, &s, &err);
    if (rc) printf("\n  %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    unsigned char valid[NTRAIN];
    sp_timit_pick_valid(NTRAIN, 11, valid);
    int nv = 0;
    for (int i = 0; i < NTRAIN; i++) nv += valid[i];
    CU_ASSERT_EQUAL(nv, 1); /* round(0.05 * 21) */
    CU_ASSERT_EQUAL(s.n_files[0], NTRAIN - 1);
    CU_ASSERT_EQUAL(s.n_files[1], 1);
    CU_ASSERT_EQUAL(s.n_files[2], NTEST);
    expect e = stats_of(valid);
    sp_dataset *d;
    CU_ASSERT_EQUAL_FATAL(sp_dataset_open(&d, out, &err), SP_OK);
    double mean, std;
    CU_ASSERT_EQUAL(sp_dataset_attr_double(d, "/", "mean", &mean, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_dataset_attr_double(d, "/", "std", &std, &err), SP_OK);
    SP_ASSERT_CLOSE(mean, e.mean, 1e-12);
    SP_ASSERT_CLOSE(std, e.std, 1e-12 * e.std);
    int64_t a;
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, "/", "sample_rate", &a, &err), SP_OK);
    CU_ASSERT_EQUAL(a, 16000);
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, "/", "frame", &a, &err), SP_OK);
    CU_ASSERT_EQUAL(a, 200);
    CU_ASSERT_EQUAL(sp_dataset_attr_int64(d, "/", "streams", &a, &err), SP_OK);
    CU_ASSERT_EQUAL(a, 2);
    char corpus[32];
    CU_ASSERT_EQUAL(sp_dataset_attr_string(d, "/", "corpus", corpus, sizeof corpus, &err), SP_OK);
    CU_ASSERT_STRING_EQUAL(corpus, "timit");
    long L;
    float *w = concat(0, valid, &L);
    check_streams(d, "train", w, L, 2, mean, std);
    free(w);
    w = concat(1, valid, &L);
    check_streams(d, "valid", w, L, 2, mean, std);
    free(w);
    /* Test: whole utterances truncated to whole frames, with offsets. */
    long dims[2], row[1] = {200};
    CU_ASSERT_EQUAL_FATAL(sp_dataset_check(d, "/test/frames", 2, row, dims, &err), SP_OK);
    long F = 0;
    for (int i = 0; i < NTEST; i++) F += tst[i].n / 200;
    CU_ASSERT_EQUAL(dims[0], F);
    CU_ASSERT_EQUAL(s.rows[2], F);
    long od[1];
    CU_ASSERT_EQUAL_FATAL(sp_dataset_check(d, "/test/offsets", 1, NULL, od, &err), SP_OK);
    CU_ASSERT_EQUAL_FATAL(od[0], NTEST + 1);
    float *fr = malloc(200 * sizeof *fr);
    long off = 0, bad = 0;
    for (int i = 0; i < NTEST; i++) {
        long idx = i + 1;
        int32_t o32;
        CU_ASSERT_EQUAL(sp_dataset_read_rows_i32(d, "/test/offsets", &idx, 1, &o32, 1, &err),
                        SP_OK);
        CU_ASSERT_EQUAL(o32, off + tst[i].n / 200);
        for (long f = 0; f < tst[i].n / 200; f++) {
            long r = off + f;
            CU_ASSERT_EQUAL_FATAL(sp_dataset_read_rows(d, "/test/frames", &r, 1, fr, 200, &err),
                                  SP_OK);
            for (int k = 0; k < 200; k++)
                bad += fr[k] != norm(tst[i].v[f * 200 + k] / 32768.0f, mean, std);
        }
        off += tst[i].n / 200;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(fr);
    sp_dataset_close(d);
    expect_no_tmp(out);
}

static void test_timit_lists(void) {
    make_timit();
    char out[300], vl[300], tl[300];
    snprintf(out, sizeof out, "%s/lists.h5", dir);
    snprintf(vl, sizeof vl, "%s/valid.lst", dir);
    snprintf(tl, sizeof tl, "%s/train.lst", dir);
    FILE *f = fopen(vl, "w");
    /* Case-insensitive paths, comments and blank lines. */
    fprintf(f, "# validation\n%s\n\n", trn[3].rel);
    for (char *c = trn[5].rel; *c; c++) fputc(tolower((unsigned char)*c), f);
    fputc('\n', f);
    fclose(f);
    sp_timit_opts o;
    sp_timit_opts_default(&o);
    o.root = troot;
    o.out = out;
    o.streams = 2;
    o.valid_list = vl;
    sp_speech_summary s;
    sp_error err;
    int rc = sp_timit_build(&o, &s, &err);
    if (rc) printf("\n  %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT_EQUAL(s.n_files[1], 2);
    CU_ASSERT_EQUAL(s.n_files[0], NTRAIN - 2);
    unsigned char valid[NTRAIN] = {0};
    valid[3] = valid[5] = 1;
    expect e = stats_of(valid);
    SP_ASSERT_CLOSE(s.mean, e.mean, 1e-12);
    SP_ASSERT_CLOSE(s.std, e.std, 1e-12);
    /* A list naming a file that is not there fails, naming list and line. */
    f = fopen(tl, "w");
    fprintf(f, "%s\nTRAIN/DR9/NOPE/SA1.WAV\n", trn[0].rel);
    fclose(f);
    o.train_list = tl;
    unlink(out);
    rc = sp_timit_build(&o, &s, &err);
    CU_ASSERT_EQUAL(rc, SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "train.lst:2"));
    expect_no_output(out);
}

static void test_valid_pick(void) {
    CU_ASSERT_EQUAL(sp_timit_valid_count(4620), 231);
    CU_ASSERT_EQUAL(sp_timit_valid_count(30), 2); /* 1.5 rounds up */
    CU_ASSERT_EQUAL(sp_timit_valid_count(5), 1);
    static unsigned char a[4620], b[4620], c[4620];
    sp_timit_pick_valid(4620, 0, a);
    sp_timit_pick_valid(4620, 0, b);
    sp_timit_pick_valid(4620, 1, c);
    long na = 0, same = 0, diff = 0;
    for (int i = 0; i < 4620; i++) {
        na += a[i];
        same += a[i] == b[i];
        diff += a[i] != c[i];
    }
    CU_ASSERT_EQUAL(na, 231);
    CU_ASSERT_EQUAL(same, 4620);
    CU_ASSERT(diff > 100);
}

static void test_timit_bad_inputs(void) {
    make_timit();
    char out[300], root[300], p[400];
    snprintf(out, sizeof out, "%s/bad.h5", dir);
    sp_timit_opts o;
    sp_timit_opts_default(&o);
    o.out = out;
    o.streams = 2;
    sp_error err;
    /* An empty directory and a root without TRAIN/TEST. */
    snprintf(root, sizeof root, "%s/empty", dir);
    mkdir(root, 0755);
    o.root = root;
    CU_ASSERT_EQUAL(sp_timit_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, root));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "TRAIN"));
    expect_no_output(out);
    snprintf(root, sizeof root, "%s/nonexistent", dir);
    o.root = root;
    CU_ASSERT_EQUAL(sp_timit_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, root));
    /* A non-audio *.WAV, then a 24-bit and a stereo one, inside a copy. */
    snprintf(root, sizeof root, "%s/badtimit", dir);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", root, troot, root);
    sh(cmd);
    o.root = root;
    snprintf(p, sizeof p, "%s/TRAIN/DR1/MSPK0/ZZ1.WAV", root);
    FILE *f = fopen(p, "w");
    fputs("not audio\n", f);
    fclose(f);
    CU_ASSERT_EQUAL(sp_timit_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "ZZ1.WAV"));
    CU_ASSERT_PTR_NULL(strchr(err.msg, '\n'));
    expect_no_output(out);
    unlink(p);
    int16_t v[4000];
    make_samples(v, 2000, 9);
    sox_write(v, 2000, 1, 16000, "-t wav -b 24", p); /* RIFF inside a .WAV: allowed */
    CU_ASSERT_EQUAL(sp_timit_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "ZZ1.WAV"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "24-bit"));
    expect_no_output(out);
    unlink(p);
    make_samples(v, 4000, 10);
    sox_write(v, 2000, 2, 16000, "-t sph", p);
    CU_ASSERT_EQUAL(sp_timit_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "ZZ1.WAV"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "channels"));
    expect_no_output(out);
    o.mix = 1;
    int rc = sp_timit_build(&o, NULL, &err);
    if (rc) printf("\n  %s\n", err.msg);
    CU_ASSERT_EQUAL(rc, SP_OK);
    CU_ASSERT_TRUE(exists(out));
    unlink(out);
    /* TEST without any *.WAV. */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/test/*", root);
    sh(cmd);
    CU_ASSERT_EQUAL(sp_timit_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "test"));
    expect_no_output(out);
}

/* ---- Blizzard ---- */

static void test_blizzard_layout(void) {
    mkdir_tmp();
    char root[300], out[300], p[400];
    snprintf(root, sizeof root, "%s/bliz", dir);
    snprintf(out, sizeof out, "%s/bliz.h5", dir);
    /* Sorted order: a/ch01.wav, a/ch02.flac, b/ch03.wav (22.05 kHz), c.sph */
    static const char *names[] = {"a/ch01.wav", "a/ch02.flac", "b/ch03.wav", "c.sph"};
    static const char *args[] = {"-t wav", "-t flac", "-t wav", "-t sph -B"};
    long lens[] = {121000, 97003, 110250, 90000};
    int rates[] = {16000, 16000, 22050, 16000};
    for (int i = 0; i < 4; i++) {
        int16_t *v = malloc((size_t)lens[i] * sizeof *v);
        make_samples(v, lens[i], 20u + (unsigned)i);
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        sox_write(v, lens[i], 1, rates[i], args[i], p);
        free(v);
    }
    snprintf(p, sizeof p, "%s/a/notes.txt", root);
    FILE *f = fopen(p, "w");
    fputs("not audio; skipped by name\n", f);
    fclose(f);
    /* The expected waveform: each file decoded (the audio tests check that). */
    long L = 0;
    float *w = NULL;
    sp_error err;
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        float *x;
        long long m;
        CU_ASSERT_EQUAL_FATAL(sp_audio_load(p, 0, &x, &m, &err), SP_OK);
        w = realloc(w, (size_t)(L + m) * sizeof *w);
        memcpy(w + L, x, (size_t)m * sizeof *x);
        L += (long)m;
        free(x);
    }
    const int S = 2;
    long piece = L / S, R = piece / 8000, nt = 9 * R / 10, nv = R / 20, ns = R - nt - nv;
    CU_ASSERT_FATAL(nv >= 1 && ns >= 1);
    sp_blizzard_opts o;
    sp_blizzard_opts_default(&o);
    o.root = root;
    o.out = out;
    o.streams = S;
    sp_speech_summary s;
    int rc = sp_blizzard_build(&o, &s, &err);
    if (rc) printf("\n  %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT_EQUAL(s.rows[0], nt * S);
    CU_ASSERT_EQUAL(s.rows[1], nv * S);
    CU_ASSERT_EQUAL(s.rows[2], ns * S);
    /* Exact statistics over the training rows. */
    double sum = 0, n = 0, m2 = 0;
    for (int j = 0; j < S; j++)
        for (long k = 0; k < nt * 8000; k++) {
            sum += w[j * piece + k];
            n++;
        }
    double mean = sum / n;
    for (int j = 0; j < S; j++)
        for (long k = 0; k < nt * 8000; k++) {
            double dd = w[j * piece + k] - mean;
            m2 += dd * dd;
        }
    double std = sqrt(m2 / n);
    SP_ASSERT_CLOSE(s.mean, mean, 1e-12);
    SP_ASSERT_CLOSE(s.std, std, 1e-12);
    sp_dataset *d;
    CU_ASSERT_EQUAL_FATAL(sp_dataset_open(&d, out, &err), SP_OK);
    double fm, fs;
    CU_ASSERT_EQUAL(sp_dataset_attr_double(d, "/", "mean", &fm, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_dataset_attr_double(d, "/", "std", &fs, &err), SP_OK);
    static const char *splits[] = {"train", "valid", "test"};
    long b0[] = {0, nt, nt + nv}, b1[] = {nt, nt + nv, R};
    float *x = malloc(8000 * sizeof *x);
    long bad = 0;
    for (int k = 0; k < 3; k++) {
        char name[64], uname[64];
        snprintf(name, sizeof name, "/%s/x", splits[k]);
        snprintf(uname, sizeof uname, "/%s/u0", splits[k]);
        long dims[3], row[2] = {40, 200};
        CU_ASSERT_EQUAL_FATAL(sp_dataset_check(d, name, 3, row, dims, &err), SP_OK);
        CU_ASSERT_EQUAL(dims[0], (b1[k] - b0[k]) * S);
        for (long b = b0[k]; b < b1[k]; b++)
            for (int j = 0; j < S; j++) {
                long r = (b - b0[k]) * S + j;
                CU_ASSERT_EQUAL_FATAL(sp_dataset_read_rows(d, name, &r, 1, x, 8000, &err), SP_OK);
                long p0 = j * piece + b * 8000;
                for (long q = 0; q < 8000; q++)
                    if (x[q] != norm(w[p0 + q], fm, fs) && !bad++)
                        printf("\n  %s row %ld [%ld]: %.9g vs %.9g\n", name, r, q, x[q],
                               norm(w[p0 + q], fm, fs));
                /* u0: the frame before the row (train: first batch only;
                 * test: every row); silence before the corpus start. */
                if (k == 2 || b == b0[k]) {
                    long ur = k == 2 ? r : j;
                    CU_ASSERT_EQUAL_FATAL(sp_dataset_read_rows(d, uname, &ur, 1, x, 200, &err),
                                          SP_OK);
                    for (long q = 0; q < 200; q++) {
                        float raw = p0 - 200 + q >= 0 ? w[p0 - 200 + q] : 0.0f;
                        bad += x[q] != norm(raw, fm, fs);
                    }
                }
            }
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(x);
    sp_dataset_close(d);
    /* One thread or several: the same bytes. */
    char out1[320], cmd[800];
    snprintf(out1, sizeof out1, "%s/bliz1.h5", dir);
    sp_blizzard_opts o1 = o;
    o1.out = out1;
    int nth = omp_get_max_threads();
    omp_set_num_threads(1);
    CU_ASSERT_EQUAL(sp_blizzard_build(&o1, NULL, &err), SP_OK);
    omp_set_num_threads(nth > 1 ? nth : 2);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", out, out1);
    CU_ASSERT_EQUAL(system(cmd), 0);
    omp_set_num_threads(nth);
    /* Explicit split rows: must be multiples of the streams. */
    unlink(out);
    o.train_rows = 2 * S;
    o.valid_rows = S;
    CU_ASSERT_EQUAL_FATAL(sp_blizzard_build(&o, &s, &err), SP_OK);
    CU_ASSERT_EQUAL(s.rows[0], 2 * S);
    CU_ASSERT_EQUAL(s.rows[1], S);
    CU_ASSERT_EQUAL(s.rows[2], (R - 3) * S);
    unlink(out);
    o.train_rows = 2 * S + 1;
    CU_ASSERT_EQUAL(sp_blizzard_build(&o, &s, &err), SP_EINPUT);
    expect_no_output(out);
    free(w);
}

static void test_blizzard_bad_inputs(void) {
    mkdir_tmp();
    char root[300], out[300], p[400];
    snprintf(out, sizeof out, "%s/bb.h5", dir);
    sp_blizzard_opts o;
    sp_blizzard_opts_default(&o);
    o.out = out;
    o.streams = 2;
    sp_error err;
    snprintf(root, sizeof root, "%s/bempty", dir);
    mkdir(root, 0755);
    o.root = root;
    CU_ASSERT_EQUAL(sp_blizzard_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, root));
    expect_no_output(out);
    snprintf(p, sizeof p, "%s/fake.mp3", root);
    FILE *f = fopen(p, "w");
    fputs("ID3? no, just text pretending to be an mp3 file\n", f);
    fclose(f);
    CU_ASSERT_EQUAL(sp_blizzard_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "fake.mp3"));
    expect_no_output(out);
    unlink(p);
    /* Too little audio for three splits: a clear error, no file. */
    int16_t v[16000];
    make_samples(v, 16000, 3);
    snprintf(p, sizeof p, "%s/short.wav", root);
    sox_write(v, 16000, 1, 16000, "-t wav", p);
    CU_ASSERT_EQUAL(sp_blizzard_build(&o, NULL, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "too few"));
    expect_no_output(out);
}

static void test_cli(void) {
    mkdir_tmp();
    sp_error err;
    char *help[] = {"timit", "--help", NULL};
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w");
    int rc = sp_speech_cli("timit", 2, help, &err);
    fclose(stdout);
    stdout = saved;
    CU_ASSERT_EQUAL(rc, SP_OK);
    char *bad[] = {"blizzard", "--root", "/x", "--bogus", NULL};
    CU_ASSERT_EQUAL(sp_speech_cli("blizzard", 4, bad, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "--bogus"));
    char *noout[] = {"timit", "--root", "/x", NULL};
    CU_ASSERT_EQUAL(sp_speech_cli("timit", 3, noout, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "--out"));
    char *badmin[] = {"speech-demo", "--out", "x.h5", "--minutes", "zero", NULL};
    CU_ASSERT_EQUAL(sp_speech_cli("speech-demo", 5, badmin, &err), SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "--minutes"));
}

static const sp_test_case cases[] = {
    {"valid pick: 231 of 4620, seeded", test_valid_pick},
    {"timit layout and values", test_timit_layout},
    {"timit explicit lists", test_timit_lists},
    {"timit bad inputs", test_timit_bad_inputs},
    {"blizzard layout and values", test_blizzard_layout},
    {"blizzard bad inputs", test_blizzard_bad_inputs},
    {"cli flags", test_cli},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"speech", cases}, {NULL, NULL}};
    int rc = sp_test_main(suites);
    for (int i = 0; i < NTRAIN; i++) free(trn[i].v);
    for (int i = 0; i < NTEST; i++) free(tst[i].v);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (dir[0] && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return rc;
}
