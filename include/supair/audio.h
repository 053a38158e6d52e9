/* Audio input for the speech converters: any file libsndfile reads (WAV, NIST
 * SPHERE including original-TIMIT headers and big-endian files, FLAC, MP3,
 * Ogg) delivered as 16 kHz mono float samples, PCM scaled by 1/32768.
 *
 * Files at another rate go through libsamplerate (SP_AUDIO_RESAMPLER). A
 * reader always delivers exactly `length` samples (sp_audio_info): the
 * resampled length is floor(frames * 16000 / rate), and a decoder that ends
 * early (MP3 frame counts are estimates) is padded with zeros, so every pass
 * over a corpus sees the same positions. Accepted sample types: 16-bit PCM
 * and the lossy codecs (MP3, Vorbis, Opus), which have no sample width;
 * anything else (8/24/32-bit, float, u-law) is an input error naming the
 * file, as is more than one channel unless `mix` is set (channels averaged). */
#ifndef SUPAIR_AUDIO_H
#define SUPAIR_AUDIO_H

#include "supair/error.h"

#define SP_AUDIO_RATE 16000
/* libsamplerate converter used for files not at 16 kHz, and its name as it is
 * recorded in the data files: SRC_SINC_MEDIUM_QUALITY (97 dB SNR, 90 %
 * bandwidth) is far below 16-bit quantisation noise of speech and ~4x faster
 * than SRC_SINC_BEST_QUALITY, which matters for Blizzard's 300 h of MP3. */
#define SP_AUDIO_RESAMPLER 1 /* SRC_SINC_MEDIUM_QUALITY */
#define SP_AUDIO_RESAMPLER_NAME "SRC_SINC_MEDIUM_QUALITY"

typedef struct sp_audio_info {
    long long frames; /* frames in the file at its own rate (libsndfile's count) */
    int rate;         /* the file's sample rate */
    int channels;
    int format;       /* libsndfile SF_FORMAT_* (major | subtype) */
    int resampled;    /* 1 when rate != 16000 */
    long long length; /* samples a reader delivers (16 kHz, mono) */
} sp_audio_info;

typedef struct sp_audio_reader sp_audio_reader;

/* Opens and checks PATH; errors are SP_EINPUT with one line naming the file
 * (unreadable or not audio, wrong sample type, multi-channel without mix). */
int sp_audio_open(sp_audio_reader **out, const char *path, int mix, sp_error *err);
const sp_audio_info *sp_audio_reader_info(const sp_audio_reader *r);
/* Reads the next min(n, remaining) samples into out; *got says how many
 * (0 at the end). Decoder failures are SP_EINPUT naming the file. */
int sp_audio_read(sp_audio_reader *r, float *out, long n, long *got, sp_error *err);
/* Skips n samples (seeks when the file is 16 kHz PCM, else decodes). */
int sp_audio_skip(sp_audio_reader *r, long long n, sp_error *err);
void sp_audio_close(sp_audio_reader *r);

/* Open + close: the checks and the info, without decoding. */
int sp_audio_probe(const char *path, int mix, sp_audio_info *info, sp_error *err);
/* The whole file: *samples (malloc'd, *n of them). */
int sp_audio_load(const char *path, int mix, float **samples, long long *n, sp_error *err);

#endif
