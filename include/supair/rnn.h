/* Fused recurrent cells as single tape ops: one node per cell step.
 *
 * Both cells take the input projection x W_x (+ bias for the LSTM) already
 * computed by the caller, because every model here projects a whole sequence
 * (or, in SuPAIR, the same image at every step) with one big sgemm; the cell
 * then only does the recurrent product h W_h (OpenBLAS) and the gate math.
 *
 * Conventions of every op here: the outputs live in the tape's arena; a
 * backward node is recorded only when some input carries a gradient; backward
 * ADDS into the inputs' .grad; a NULL required input (a failed earlier op)
 * gives NULL outputs. Shape mismatches set the tape's failed flag. */
#ifndef SUPAIR_RNN_H
#define SUPAIR_RNN_H

#include "supair/tape.h"

/* TensorFlow BasicLSTMCell (SuPAIR's inference LSTM). Gates along the 4H axis
 * in the order [i, j, f, o]:
 *   c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(j)
 *   h' = sigmoid(o) * tanh(c')
 * xproj (B, 4H) = x W_x + b; h, c (B, H), either may be NULL for a zero state;
 * W_h (H, 4H). Outputs *h_out, *c_out (B, H). Gradients flow to xproj, h, c
 * and W_h. Returns SP_OK, SP_EINPUT on a shape mismatch, SP_ERUNTIME when an
 * input is NULL or the arena is exhausted (outputs NULL in both cases). */
int sp_lstm_cell(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h, const sp_tensor *c,
                 const sp_tensor *W_h, float forget_bias, sp_tensor **h_out, sp_tensor **c_out);

/* GRU with the reset gate applied after the recurrent product (Lasagne's
 * GRULayer, SRNN). Gates along the 3H axis in the order [r, u, c]:
 *   r  = sigmoid(xr + h W_hr + b_r)
 *   u  = sigmoid(xu + h W_hu + b_u)
 *   c  = tanh(xc + r * (h W_hc) + b_c)        (r does not scale b_c)
 *   h' = (1 - u) * h + u * c
 * xproj (B, 3H) = x W_x (no bias); h (B, H) or NULL for a zero state;
 * W_h (H, 3H); b (3H). Returns h' (B, H), or NULL on failure. Gradients flow
 * to xproj, h, W_h and b. */
sp_tensor *sp_gru_cell(sp_tape *t, const sp_tensor *xproj, const sp_tensor *h,
                       const sp_tensor *W_h, const sp_tensor *b);

#endif
