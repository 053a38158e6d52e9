#!/usr/bin/python3
"""A grid of test scenes with the model's inferred boxes and counts, from
`supair_dist eval --run DIR --dump N` (DIR/dump.h5).

Input datasets: images (N,50,50), true_counts (N), true_boxes (N,K,4)
[x, y, w, h] in pixels (x = column, y = row), and the model's rho (N,K) or
(N,K,1) presence probability per inference step and boxes (N,K,4). A box is
drawn (red) where rho > --threshold; true boxes are dashed green. Each scene
is titled "true n / inferred n".

  analysis/scene_grid.py runs/a/dump.h5 --out scenes.png --n 16 --cols 4
"""
import argparse
import math
import os

import h5py
import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump", metavar="DUMP.h5", help="file written by supair_dist eval --dump N")
    p.add_argument("--out", default="scene_grid.png", help="output PNG (default %(default)s)")
    p.add_argument("--n", type=int, default=16, help="scenes to show (default %(default)s)")
    p.add_argument("--cols", type=int, default=4, help="scenes per row (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="presence probability above which a box counts (default %(default)s)")
    p.add_argument("--title", default=None, help="figure title")
    a = p.parse_args()

    with h5py.File(a.dump, "r") as f:
        for need in ("images", "rho", "boxes"):
            if need not in f:
                raise SystemExit(f"{a.dump}: no dataset '{need}' (have: {', '.join(f)})")
        images = f["images"][:]
        rho = f["rho"][:]
        boxes = f["boxes"][:]
        true_counts = f["true_counts"][:] if "true_counts" in f else None
        true_boxes = f["true_boxes"][:] if "true_boxes" in f else None
        model = _text(f.attrs.get("model", "model"))
        split = _text(f.attrs.get("split", "test"))
    rho = rho.reshape(rho.shape[0], -1)  # (N,K,1) or (N,K) -> (N,K)
    n = min(a.n, len(images))
    if n <= 0:
        raise SystemExit(f"{a.dump}: no scenes")
    cols = max(1, min(a.cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows + 0.6), squeeze=False)
    correct = 0
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        ax.axis("off")
        if i >= n:
            continue
        side = images[i].shape
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=max(1.0, float(images[i].max())),
                  interpolation="nearest")
        ax.set_xlim(-0.5, side[1] - 0.5)
        ax.set_ylim(side[0] - 0.5, -0.5)
        if true_boxes is not None:
            k_true = int(true_counts[i]) if true_counts is not None else len(true_boxes[i])
            for x, y, w, h in true_boxes[i][:k_true]:
                if w > 0 and h > 0:
                    ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime",
                                           linestyle="--", linewidth=1.2))
        present = rho[i] > a.threshold
        for k in np.flatnonzero(present):
            x, y, w, h = boxes[i][k]
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.5))
            ax.text(x, y - 1, f"{rho[i][k]:.2f}", color="red", fontsize=7, va="bottom")
        n_inf = int(present.sum())
        tc = "?" if true_counts is None else str(int(true_counts[i]))
        ok = true_counts is not None and n_inf == int(true_counts[i])
        correct += ok
        ax.set_title(f"true {tc} / inferred {n_inf}", fontsize=9, color="black" if ok else "firebrick")
    handles = [Line2D([], [], color="lime", linestyle="--", label="true box"),
               Line2D([], [], color="red", label=f"inferred box (presence > {a.threshold:g}, value shown)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    acc = f", {correct}/{n} counts right" if true_counts is not None else ""
    fig.suptitle(a.title or f"{model}: inferred objects on {n} {split} scenes{acc}", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
