/* Reading SRNN speech files (the layout of speech.h) for training and
 * evaluation, on top of the generic row reader of dataset.h.
 *
 * Training and validation chunks are batch-major streams: batch i of stream
 * s is row i*streams + s of /SPLIT/x, so a rank's streams of one batch are
 * contiguous rows. Evaluation sequences are either whole utterances
 * (/SPLIT/frames + /SPLIT/offsets, TIMIT's test layout: the first frame is
 * input only) or rows of /SPLIT/x evaluated from zero state, with the frame
 * before each row as u_1 (/SPLIT/u0 per row, or per stream for batch 0 and
 * the previous chunk's last frame after that). */
#ifndef SUPAIR_STREAMS_H
#define SUPAIR_STREAMS_H

#include <stdint.h>

#include "supair/dataset.h"
#include "supair/error.h"

typedef struct sp_streams_data {
    sp_dataset *ds;
    const char *path;
    int streams;        /* attribute `streams` of /train/x */
    int chunk, frame;   /* 40, 200 */
} sp_streams_data;

/* Opens and validates a speech file: /train/x (N,40,200) with attributes
 * streams and n_batches, /train/u0 (streams,200). */
int sp_streams_open(sp_streams_data *s, const char *path, sp_error *err);
void sp_streams_close(sp_streams_data *s);

/* Batches of a chunked split (0 when the split has no /SPLIT/x). */
int64_t sp_streams_batches(sp_streams_data *s, const char *split);

/* Batch i, streams [s0, s0+n): x (n, chunk, frame); when u0 is not NULL it
 * receives (n, frame) the frame before each stream's chunk i. */
int sp_streams_read_chunk(sp_streams_data *s, const char *split, int64_t i, int s0, int n, float *x,
                          float *u0, sp_error *err);

/* Evaluation sequences of a split: utterances when /SPLIT/offsets exists,
 * else the rows of /SPLIT/x. -1 when the split does not exist. */
int64_t sp_streams_n_seqs(sp_streams_data *s, const char *split);
/* Frames of sequence k as stored (an utterance's frames, or `chunk`). */
int64_t sp_streams_seq_frames(sp_streams_data *s, const char *split, int64_t k);
/* Reads sequence k: x (frames, frame); *first_is_input = 1 for utterances
 * (u0 untouched), else u0 (frame) receives the frame before the row. */
int sp_streams_read_seq(sp_streams_data *s, const char *split, int64_t k, float *x, float *u0,
                        int *first_is_input, sp_error *err);

#endif
