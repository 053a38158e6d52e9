/* Spatial transformer: bilinear sampling of an image through a per-item
 * affine map, its adjoint (scatter), and the one-pixel zero pad SuPAIR uses
 * for visibility. Semantics follow SuPAIR's TensorFlow transformer:
 *
 *   output grid  u_j = extent_w * j / (out_w - 1),  v_i = extent_h * i / (out_h - 1)
 *                (numpy linspace(0, extent, n); SuPAIR: extent 28 over 28 points,
 *                 so the grid step is 28/27 pixel, not 1)
 *   theta        [a, b, tx, c, d, ty] in PIXEL units
 *   X = a*u + b*v + tx   (column of the input)
 *   Y = c*u + d*v + ty   (row of the input)
 *   X, Y are clipped to [0, W - 1.0001] and [0, H - 1.0001] before bilinear
 *   interpolation: a point outside the image reads the border pixels (edge
 *   replication), and its gradient with respect to theta is zero along the
 *   clipped coordinate. (Hence sp_pad1 when "outside" must read as 0.)
 *
 * Batching: theta is (B, 6); img may hold B or B/K images (K = transforms per
 * image), theta row b then uses image b / K, as SuPAIR's batch_transformer
 * does for its [n, steps] transforms. So the scene need not be replicated.
 *
 * Ops follow the tape conventions (tape.h): backward ADDS into input grads,
 * NULL input -> NULL output, shape errors set the tape's failed flag. H and W
 * must be >= 2 (the clip range is empty otherwise). */
#ifndef SUPAIR_STN_H
#define SUPAIR_STN_H

#include "supair/tape.h"

/* img (Bi, H, W), theta (B, 6) with B % Bi == 0 -> (B, out_h, out_w).
 * Gradients to img and theta (theta through the bilinear weights; the
 * bilinear map is piecewise linear in theta, kinks at integer coordinates). */
sp_tensor *sp_stn_sample(sp_tape *t, const sp_tensor *img, const sp_tensor *theta, int out_h,
                         int out_w, float extent_h, float extent_w);

/* The adjoint of sampling: vals (B, out_h, out_w), theta (B, 6) -> canvas
 * (B, H, W), each grid point adding vals * its bilinear weights onto its 4
 * neighbouring pixels. With vals = 1 this is SuPAIR's object score map (before
 * its clip to [0, 1]). <scatter(v), img> == <v, sample(img)> for equal B.
 * Gradients to vals and theta. */
sp_tensor *sp_stn_scatter(sp_tape *t, const sp_tensor *vals, const sp_tensor *theta, int H, int W,
                          float extent_h, float extent_w);

/* sp_stn_scatter of a (B, out_h, out_w) block of ones, without the block:
 * SuPAIR's object score maps (B, H, W), the bilinear footprint of each box.
 * Axis-aligned maps (SuPAIR's) take a separable form, the outer product of a
 * row and a column profile, equal to the scatter up to float rounding.
 * Gradient to theta. */
sp_tensor *sp_stn_scatter_ones(sp_tape *t, const sp_tensor *theta, int out_h, int out_w, int H,
                               int W, float extent_h, float extent_w);

/* Zero-pads every image by one pixel on each side: (B, H, W) -> (B, H+2, W+2),
 * gradient to img. To sample the padded image at the places theta meant in
 * the unpadded one, shift the translation by one pixel: tx += 1, ty += 1
 * (SuPAIR: z_where + [0, 0, 1, 0, 0, 1]). Points then read zeros once they
 * are a pixel or more outside the original image. */
sp_tensor *sp_pad1(sp_tape *t, const sp_tensor *img);

#endif
