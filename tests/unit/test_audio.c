/* Audio input: files written here by sox from known 16-bit samples (NIST
 * SPHERE little- and big-endian, the original-TIMIT header without
 * sample_coding, WAV, FLAC, MP3, stereo, 24-bit, 22.05 kHz) must decode to
 * exactly those samples / 32768 (or to the resampled sine), and bad files
 * must be rejected with a message naming them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "supair/audio.h"
#include "testutil.h"

static char dir[64];

static void mkdir_tmp(void) {
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "/tmp/test_audio.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
}

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (dir[0] && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

/* Deterministic speech-like samples: a few sines plus LCG noise. */
static void make_samples(int16_t *v, long n, int ch, unsigned seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (long i = 0; i < n; i++)
        for (int c = 0; c < ch; c++) {
            s = s * 1664525u + 1013904223u;
            double x = 9000 * sin(0.031 * i + c) + 3000 * sin(0.0071 * i * (c + 1)) +
                       (double)((int)(s >> 20) - 2048);
            v[i * ch + c] = (int16_t)lrint(x);
        }
}

/* Writes raw little-endian samples and converts them with sox:
 * `sox -D -R -t raw ... raw ARGS out` (no dither: samples stay exact). */
static void sox_from_raw(const int16_t *v, long n, int ch, int rate, const char *args,
                         const char *out) {
    char raw[256], cmd[1024];
    snprintf(raw, sizeof raw, "%s/in.raw", dir);
    FILE *f = fopen(raw, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL_FATAL(fwrite(v, sizeof *v, (size_t)(n * ch), f), (size_t)(n * ch));
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "sox -D -R -t raw -r %d -e signed-integer -b 16 -c %d -L '%s' %s '%s'", rate, ch, raw,
             args, out);
    int rc = system(cmd);
    if (rc) printf("\n  command failed: %s\n", cmd);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
}

static void expect_exact(const char *path, const int16_t *v, long n) {
    float *x;
    long long m;
    sp_error err;
    int rc = sp_audio_load(path, 0, &x, &m, &err);
    if (rc) printf("\n  %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    CU_ASSERT_EQUAL_FATAL(m, n);
    long bad = 0;
    for (long i = 0; i < n; i++)
        if (x[i] != v[i] / 32768.0f) {
            if (!bad) printf("\n  %s sample %ld: %.9g vs %.9g\n", path, i, x[i], v[i] / 32768.0);
            bad++;
        }
    CU_ASSERT_EQUAL(bad, 0);
    free(x);
}

#define N 12345

static void test_sphere_little_big(void) {
    mkdir_tmp();
    static int16_t v[N];
    make_samples(v, N, 1, 1);
    char le[256], be[256];
    snprintf(le, sizeof le, "%s/le.sph", dir);
    snprintf(be, sizeof be, "%s/be.sph", dir);
    sox_from_raw(v, N, 1, 16000, "-t sph -L", le);
    sox_from_raw(v, N, 1, 16000, "-t sph -B", be);
    expect_exact(le, v, N);
    expect_exact(be, v, N);
    sp_audio_info info;
    sp_error err;
    CU_ASSERT_EQUAL(sp_audio_probe(be, 0, &info, &err), SP_OK);
    CU_ASSERT_EQUAL(info.rate, 16000);
    CU_ASSERT_EQUAL(info.resampled, 0);
    CU_ASSERT_EQUAL(info.length, N);
}

/* Original TIMIT: a 1024-byte header with database_id, utterance_id,
 * sample_min/max, sample_sig_bits, and no sample_coding line. */
static void write_timit_sphere(const char *path, const int16_t *v, long n, int big) {
    char hdr[1024];
    memset(hdr, ' ', sizeof hdr);
    int k = snprintf(hdr, sizeof hdr,
                     "NIST_1A\n   1024\ndatabase_id -s5 TIMIT\ndatabase_version -s3 1.0\n"
                     "utterance_id -s8 aks0_sa1\nchannel_count -i 1\nsample_count -i %ld\n"
                     "sample_rate -i 16000\nsample_min -i -2191\nsample_max -i 2790\n"
                     "sample_n_bytes -i 2\nsample_byte_format -s2 %s\nsample_sig_bits -i 16\n"
                     "end_head\n",
                     n, big ? "10" : "01");
    hdr[k] = ' ';
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fwrite(hdr, 1, sizeof hdr, f);
    for (long i = 0; i < n; i++) {
        uint16_t u = (uint16_t)v[i];
        unsigned char b[2] = {(unsigned char)(u & 0xff), (unsigned char)(u >> 8)};
        if (big) {
            unsigned char t = b[0];
            b[0] = b[1];
            b[1] = t;
        }
        fwrite(b, 1, 2, f);
    }
    fclose(f);
}

static void test_sphere_timit_header(void) {
    mkdir_tmp();
    static int16_t v[N];
    make_samples(v, N, 1, 2);
    char p[256], q[256];
    snprintf(p, sizeof p, "%s/SA1.WAV", dir);
    snprintf(q, sizeof q, "%s/SA2.WAV", dir);
    write_timit_sphere(p, v, N, 0);
    write_timit_sphere(q, v, N, 1);
    expect_exact(p, v, N);
    expect_exact(q, v, N);
    /* The same header edited out of a sox SPHERE file must agree too. */
    char s[256], cmd[1200];
    snprintf(s, sizeof s, "%s/sox.sph", dir);
    sox_from_raw(v, N, 1, 16000, "-t sph", s);
    snprintf(cmd, sizeof cmd,
             "grep -a -c 'sample_coding -s3 pcm' '%s' >/dev/null && "
             "LC_ALL=C sed -i '1,12s/sample_coding -s3 pcm/                     /' '%s'",
             s, s);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "head -c 1024 '%s' | grep -a -q sample_coding", s);
    CU_ASSERT_NOT_EQUAL(system(cmd), 0);
    expect_exact(s, v, N);
}

static void test_wav_flac_exact(void) {
    mkdir_tmp();
    static int16_t v[N];
    make_samples(v, N, 1, 3);
    char w[256], f[256];
    snprintf(w, sizeof w, "%s/a.wav", dir);
    snprintf(f, sizeof f, "%s/a.flac", dir);
    sox_from_raw(v, N, 1, 16000, "-t wav", w);
    sox_from_raw(v, N, 1, 16000, "-t flac", f);
    expect_exact(w, v, N);
    expect_exact(f, v, N);
}

/* 22.05 kHz sine -> 16 kHz: length floor(n*16000/22050) and the sine at
 * the new rate, away from the edges (SRC's filter transient). */
static void test_resample_22k(void) {
    mkdir_tmp();
    const long n = 22050;
    int16_t *v = malloc((size_t)n * sizeof *v);
    for (long i = 0; i < n; i++) v[i] = (int16_t)lrint(16000 * sin(2 * M_PI * 440.0 * i / 22050));
    char w[256];
    snprintf(w, sizeof w, "%s/r22.wav", dir);
    sox_from_raw(v, n, 1, 22050, "-t wav", w);
    float *x;
    long long m;
    sp_error err;
    CU_ASSERT_EQUAL_FATAL(sp_audio_load(w, 0, &x, &m, &err), SP_OK);
    CU_ASSERT_EQUAL(m, n * 16000 / 22050);
    double maxerr = 0;
    for (long i = 500; i < m - 500; i++) {
        double want = 16000 / 32768.0 * sin(2 * M_PI * 440.0 * i / 16000);
        double e = fabs(x[i] - want);
        if (e > maxerr) maxerr = e;
    }
    SP_ASSERT_CLOSE(maxerr, 0, 2e-3);
    /* Reading in odd pieces and skipping gives the same samples. */
    sp_audio_reader *r;
    CU_ASSERT_EQUAL_FATAL(sp_audio_open(&r, w, 0, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_audio_reader_info(r)->resampled, 1);
    CU_ASSERT_EQUAL(sp_audio_skip(r, 1001, &err), SP_OK);
    float buf[777];
    long got;
    CU_ASSERT_EQUAL(sp_audio_read(r, buf, 777, &got, &err), SP_OK);
    CU_ASSERT_EQUAL(got, 777);
    long bad = 0;
    for (long i = 0; i < 777; i++) bad += buf[i] != x[1001 + i];
    CU_ASSERT_EQUAL(bad, 0);
    sp_audio_close(r);
    free(x);
    free(v);
}

static void test_skip_seek_pcm(void) {
    mkdir_tmp();
    static int16_t v[N];
    make_samples(v, N, 1, 4);
    char w[256];
    snprintf(w, sizeof w, "%s/skip.sph", dir);
    sox_from_raw(v, N, 1, 16000, "-t sph", w);
    sp_audio_reader *r;
    sp_error err;
    CU_ASSERT_EQUAL_FATAL(sp_audio_open(&r, w, 0, &err), SP_OK);
    CU_ASSERT_EQUAL(sp_audio_skip(r, 5000, &err), SP_OK);
    float buf[100];
    long got;
    CU_ASSERT_EQUAL(sp_audio_read(r, buf, 100, &got, &err), SP_OK);
    CU_ASSERT_EQUAL(got, 100);
    for (int i = 0; i < 100; i++) CU_ASSERT_EQUAL(buf[i], v[5000 + i] / 32768.0f);
    CU_ASSERT_EQUAL(sp_audio_skip(r, N, &err), SP_OK); /* past the end: clamps */
    CU_ASSERT_EQUAL(sp_audio_read(r, buf, 100, &got, &err), SP_OK);
    CU_ASSERT_EQUAL(got, 0);
    sp_audio_close(r);
}

static void test_mp3(void) {
    mkdir_tmp();
    const long n = 16000;
    int16_t *v = malloc((size_t)n * sizeof *v);
    for (long i = 0; i < n; i++) v[i] = (int16_t)lrint(12000 * sin(2 * M_PI * 300.0 * i / 16000));
    char p[256];
    snprintf(p, sizeof p, "%s/a.mp3", dir);
    sox_from_raw(v, n, 1, 16000, "-t mp3", p);
    float *x;
    long long m;
    sp_error err;
    int rc = sp_audio_load(p, 0, &x, &m, &err);
    if (rc) printf("\n  %s\n", err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
    /* MP3 adds encoder delay and padding: about the same length and power. */
    CU_ASSERT(m >= n - 2000 && m <= n + 3000);
    double p2 = 0;
    for (long i = 2000; i < 14000; i++) p2 += (double)x[i] * x[i];
    SP_ASSERT_CLOSE(sqrt(p2 / 12000), 12000 / 32768.0 / sqrt(2.0), 0.02);
    free(x);
    free(v);
}

static void expect_error(const char *path, int mix, const char *needle) {
    sp_audio_info info;
    sp_error err;
    sp_error_clear(&err);
    int rc = sp_audio_probe(path, mix, &info, &err);
    CU_ASSERT_EQUAL(rc, SP_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, path));
    if (needle && !strstr(err.msg, needle)) {
        printf("\n  message '%s' lacks '%s'\n", err.msg, needle);
        CU_FAIL("message content");
    }
    CU_ASSERT_PTR_NULL(strchr(err.msg, '\n'));
}

static void test_stereo_mix(void) {
    mkdir_tmp();
    static int16_t v[2 * N];
    make_samples(v, N, 2, 5);
    char p[256];
    snprintf(p, sizeof p, "%s/stereo.wav", dir);
    sox_from_raw(v, N, 2, 16000, "-t wav", p);
    expect_error(p, 0, "2 channels");
    float *x;
    long long m;
    sp_error err;
    CU_ASSERT_EQUAL_FATAL(sp_audio_load(p, 1, &x, &m, &err), SP_OK);
    CU_ASSERT_EQUAL_FATAL(m, N);
    long bad = 0;
    for (long i = 0; i < N; i++) bad += x[i] != (float)((v[2 * i] + v[2 * i + 1]) / (2 * 32768.0));
    CU_ASSERT_EQUAL(bad, 0);
    free(x);
}

static void test_bad_files(void) {
    mkdir_tmp();
    static int16_t v[N];
    make_samples(v, N, 1, 6);
    char p[256];
    snprintf(p, sizeof p, "%s/b24.wav", dir);
    sox_from_raw(v, N, 1, 16000, "-t wav -b 24", p);
    expect_error(p, 0, "24-bit");
    snprintf(p, sizeof p, "%s/b8.wav", dir);
    sox_from_raw(v, N, 1, 16000, "-t wav -b 8", p);
    expect_error(p, 0, "8-bit");
    snprintf(p, sizeof p, "%s/text.wav", dir);
    FILE *f = fopen(p, "w");
    fputs("this is not audio at all, just some words in a file\n", f);
    fclose(f);
    expect_error(p, 0, "not a readable audio file");
    snprintf(p, sizeof p, "%s/missing.wav", dir);
    expect_error(p, 0, NULL);
}

static const sp_test_case cases[] = {
    {"sphere little and big endian", test_sphere_little_big},
    {"sphere original TIMIT header", test_sphere_timit_header},
    {"wav and flac exact", test_wav_flac_exact},
    {"22.05 kHz resampled", test_resample_22k},
    {"skip seeks", test_skip_seek_pcm},
    {"mp3", test_mp3},
    {"stereo rejected or mixed", test_stereo_mix},
    {"bad files named", test_bad_files},
    {NULL, NULL},
};

int main(void) {
    const sp_test_suite suites[] = {{"audio", cases}, {NULL, NULL}};
    int rc = sp_test_main(suites);
    cleanup();
    return rc;
}
