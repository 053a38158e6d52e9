/* Audio files as 16 kHz mono float samples (see audio.h): libsndfile decodes,
 * libsamplerate converts the rate, channels are averaged when asked. */
#include "supair/audio.h"

#include <samplerate.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frames per libsndfile read; bounds the reader's buffers (a few 10 KB). */
#define BLOCK 4096

struct sp_audio_reader {
    SNDFILE *sf;
    sp_audio_info info;
    char *path;
    int pcm16;      /* read as shorts and scale by 1/32768 exactly */
    long long pos;  /* samples delivered so far */
    int drained;    /* the decoder (and resampler) has nothing more: zeros follow */
    short *sbuf;    /* (BLOCK, channels) */
    float *fbuf;    /* (BLOCK, channels) */
    float *scratch; /* (BLOCK) for skips */
    /* resampling state */
    SRC_STATE *src;
    double ratio;
    float *inbuf; /* (BLOCK) mono input at the file's rate */
    long in_n, in_pos;
    int in_eof;
};

static const char *subtype_name(int sub) {
    switch (sub) {
    case SF_FORMAT_PCM_S8: return "8-bit PCM";
    case SF_FORMAT_PCM_U8: return "8-bit unsigned PCM";
    case SF_FORMAT_PCM_24: return "24-bit PCM";
    case SF_FORMAT_PCM_32: return "32-bit PCM";
    case SF_FORMAT_FLOAT: return "32-bit float";
    case SF_FORMAT_DOUBLE: return "64-bit float";
    case SF_FORMAT_ULAW: return "8-bit u-law";
    case SF_FORMAT_ALAW: return "8-bit A-law";
    default: return "non-16-bit";
    }
}

/* Lossy codecs decode to float and have no sample width to check. */
static int is_lossy(int sub) {
    return sub == SF_FORMAT_MPEG_LAYER_I || sub == SF_FORMAT_MPEG_LAYER_II ||
           sub == SF_FORMAT_MPEG_LAYER_III || sub == SF_FORMAT_VORBIS || sub == SF_FORMAT_OPUS;
}

void sp_audio_close(sp_audio_reader *r) {
    if (!r) return;
    if (r->sf) sf_close(r->sf);
    if (r->src) src_delete(r->src);
    free(r->path);
    free(r->sbuf);
    free(r->fbuf);
    free(r->scratch);
    free(r->inbuf);
    free(r);
}

int sp_audio_open(sp_audio_reader **out, const char *path, int mix, sp_error *err) {
    *out = NULL;
    SF_INFO si;
    memset(&si, 0, sizeof si);
    SNDFILE *sf = sf_open(path, SFM_READ, &si);
    if (!sf)
        return sp_fail(err, SP_EINPUT, "%s: not a readable audio file (libsndfile: %s)", path,
                       sf_strerror(NULL));
    int sub = si.format & SF_FORMAT_SUBMASK;
    const char *why = NULL;
    char buf[160];
    if (sub != SF_FORMAT_PCM_16 && !is_lossy(sub)) {
        snprintf(buf, sizeof buf, "%s samples; 16-bit PCM expected", subtype_name(sub));
        why = buf;
    } else if (si.channels < 1 || si.samplerate <= 0 || si.frames < 0) {
        why = "no usable audio stream (channels, rate or length missing)";
    } else if (si.channels > 1 && !mix) {
        snprintf(buf, sizeof buf, "%d channels; mono expected (--mix averages the channels)",
                 si.channels);
        why = buf;
    }
    if (why) {
        sf_close(sf);
        return sp_fail(err, SP_EINPUT, "%s: %s", path, why);
    }
    sp_audio_reader *r = calloc(1, sizeof *r);
    if (!r) {
        sf_close(sf);
        return sp_fail(err, SP_ERUNTIME, "%s: out of memory", path);
    }
    r->sf = sf;
    r->path = strdup(path);
    r->pcm16 = sub == SF_FORMAT_PCM_16;
    r->info.frames = si.frames;
    r->info.rate = si.samplerate;
    r->info.channels = si.channels;
    r->info.format = si.format;
    r->info.resampled = si.samplerate != SP_AUDIO_RATE;
    r->info.length = r->info.resampled ? (long long)si.frames * SP_AUDIO_RATE / si.samplerate
                                       : (long long)si.frames;
    size_t ch = (size_t)si.channels;
    r->sbuf = malloc(BLOCK * ch * sizeof *r->sbuf);
    r->fbuf = malloc(BLOCK * ch * sizeof *r->fbuf);
    r->scratch = malloc(BLOCK * sizeof *r->scratch);
    int ok = r->path && r->sbuf && r->fbuf && r->scratch;
    if (ok && r->info.resampled) {
        int e = 0;
        r->src = src_new(SP_AUDIO_RESAMPLER, 1, &e);
        r->inbuf = malloc(BLOCK * sizeof *r->inbuf);
        r->ratio = (double)SP_AUDIO_RATE / si.samplerate;
        ok = r->src && r->inbuf && src_is_valid_ratio(r->ratio);
    }
    if (!ok) {
        sp_audio_close(r);
        return sp_fail(err, SP_ERUNTIME, "%s: cannot set up the decoder or resampler", path);
    }
    *out = r;
    return SP_OK;
}

const sp_audio_info *sp_audio_reader_info(const sp_audio_reader *r) { return &r->info; }

/* Up to n mono frames at the file's rate; returns the count (0 at the end)
 * or -1 on a decoder error. */
static long read_mono(sp_audio_reader *r, float *dst, long n) {
    int ch = r->info.channels;
    long total = 0;
    while (total < n) {
        long want = n - total < BLOCK ? n - total : BLOCK;
        sf_count_t got;
        if (r->pcm16) {
            got = sf_readf_short(r->sf, r->sbuf, want);
            if (ch == 1) {
                for (sf_count_t i = 0; i < got; i++) dst[total + i] = r->sbuf[i] / 32768.0f;
            } else {
                for (sf_count_t i = 0; i < got; i++) {
                    long s = 0;
                    for (int c = 0; c < ch; c++) s += r->sbuf[i * ch + c];
                    dst[total + i] = (float)(s / (32768.0 * ch));
                }
            }
        } else {
            got = sf_readf_float(r->sf, r->fbuf, want);
            for (sf_count_t i = 0; i < got; i++) {
                double s = 0;
                for (int c = 0; c < ch; c++) s += r->fbuf[i * ch + c];
                dst[total + i] = (float)(s / ch);
            }
        }
        if (got <= 0) {
            if (sf_error(r->sf) != SF_ERR_NO_ERROR) return -1;
            break;
        }
        total += (long)got;
    }
    return total;
}

static long read_resampled(sp_audio_reader *r, float *out, long n, sp_error *err, int *fail) {
    long produced = 0;
    while (produced < n) {
        if (r->in_pos == r->in_n && !r->in_eof) {
            long k = read_mono(r, r->inbuf, BLOCK);
            if (k < 0) {
                *fail = sp_fail(err, SP_EINPUT, "%s: decoding failed (libsndfile: %s)", r->path,
                                sf_strerror(r->sf));
                return produced;
            }
            r->in_n = k;
            r->in_pos = 0;
            if (k == 0) r->in_eof = 1;
        }
        SRC_DATA d;
        memset(&d, 0, sizeof d);
        d.data_in = r->inbuf + r->in_pos;
        d.input_frames = r->in_n - r->in_pos;
        d.data_out = out + produced;
        d.output_frames = n - produced;
        d.src_ratio = r->ratio;
        d.end_of_input = r->in_eof;
        int e = src_process(r->src, &d);
        if (e) {
            *fail = sp_fail(err, SP_ERUNTIME, "%s: resampling failed (libsamplerate: %s)", r->path,
                            src_strerror(e));
            return produced;
        }
        r->in_pos += d.input_frames_used;
        produced += d.output_frames_gen;
        if (r->in_eof && d.output_frames_gen == 0 && d.input_frames_used == 0) {
            r->drained = 1;
            break;
        }
    }
    return produced;
}

int sp_audio_read(sp_audio_reader *r, float *out, long n, long *got, sp_error *err) {
    long long left = r->info.length - r->pos;
    if (n > left) n = (long)left;
    if (n < 0) n = 0;
    long produced = 0;
    int fail = 0;
    if (!r->drained && n > 0) {
        if (r->src) {
            produced = read_resampled(r, out, n, err, &fail);
        } else {
            produced = read_mono(r, out, n);
            if (produced < 0)
                return sp_fail(err, SP_EINPUT, "%s: decoding failed (libsndfile: %s)", r->path,
                               sf_strerror(r->sf));
            if (produced < n) r->drained = 1;
        }
        if (fail) return fail;
    }
    /* A decoder that ends before its announced length: the rest is silence,
     * so the corpus positions computed from the lengths stay valid. */
    for (long i = produced; i < n; i++) out[i] = 0.0f;
    r->pos += n;
    *got = n;
    return SP_OK;
}

int sp_audio_skip(sp_audio_reader *r, long long n, sp_error *err) {
    long long left = r->info.length - r->pos;
    if (n > left) n = left;
    if (n <= 0) return SP_OK;
    if (!r->src && r->pcm16 && !r->drained &&
        (r->info.format & SF_FORMAT_TYPEMASK) != SF_FORMAT_MPEG) {
        if (sf_seek(r->sf, r->pos + n, SEEK_SET) < 0)
            return sp_fail(err, SP_EINPUT, "%s: cannot seek to sample %lld", r->path, r->pos + n);
        r->pos += n;
        return SP_OK;
    }
    while (n > 0) {
        long got = 0;
        int rc = sp_audio_read(r, r->scratch, n < BLOCK ? (long)n : BLOCK, &got, err);
        if (rc) return rc;
        if (got == 0) break;
        n -= got;
    }
    return SP_OK;
}

int sp_audio_probe(const char *path, int mix, sp_audio_info *info, sp_error *err) {
    sp_audio_reader *r;
    int rc = sp_audio_open(&r, path, mix, err);
    if (rc) return rc;
    *info = r->info;
    sp_audio_close(r);
    return SP_OK;
}

int sp_audio_load(const char *path, int mix, float **samples, long long *n, sp_error *err) {
    *samples = NULL;
    *n = 0;
    sp_audio_reader *r;
    int rc = sp_audio_open(&r, path, mix, err);
    if (rc) return rc;
    long long len = r->info.length;
    float *buf = malloc((size_t)(len > 0 ? len : 1) * sizeof *buf);
    if (!buf) {
        sp_audio_close(r);
        return sp_fail(err, SP_ERUNTIME, "%s: out of memory for %lld samples", path, len);
    }
    long long done = 0;
    while (done < len) {
        long want = len - done < (1 << 20) ? (long)(len - done) : (1 << 20);
        long got = 0;
        rc = sp_audio_read(r, buf + done, want, &got, err);
        if (rc || got == 0) break;
        done += got;
    }
    sp_audio_close(r);
    if (rc) {
        free(buf);
        return rc;
    }
    *samples = buf;
    *n = len;
    return SP_OK;
}
