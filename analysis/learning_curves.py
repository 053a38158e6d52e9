#!/usr/bin/python3
"""Learning curves of a sweep: smoothed training loss and every evaluation
metric against the global step, one line per run, labelled by the
hyperparameters that differ between the runs.

  analysis/learning_curves.py runs/sweep --out curves.png
  analysis/learning_curves.py runs/a runs/b --smooth 50 --out curves.png
"""
import argparse
import math
import os
import sys

sys.dont_write_bytecode = True  # keep analysis/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import matplotlib  # noqa: E402

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import runs as R  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (or a sweep root holding trial_*/)")
    p.add_argument("--out", default="learning_curves.png", help="output PNG (default %(default)s)")
    p.add_argument("--smooth", type=int, default=0,
                   help="moving-average window of the training loss in rows (default: ~1/20 of the run)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated eval metrics to plot (default: every one the runs log)")
    p.add_argument("--title", default=None, help="figure title")
    a = p.parse_args()

    runs = R.load_runs(a.runs)
    labs = R.labels(runs)
    metrics = []
    for r in runs:
        for k in r.eval:
            if k not in ("step", "time_s") and k not in metrics:
                metrics.append(k)
    if a.metrics:
        metrics = [m for m in a.metrics.split(",") if m]
    panels = ["loss"] + metrics
    ncols = min(len(panels), 2 if len(panels) <= 4 else 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    for i, (r, lab) in enumerate(zip(runs, labs)):
        c = colors[i % len(colors)]
        ax = axes[0][0]
        if "loss" in r.train and len(r.train["loss"]):
            step, loss = r.train["step"], r.train["loss"]
            w = a.smooth if a.smooth > 0 else max(1, len(loss) // 20)
            ax.plot(step, loss, color=c, alpha=0.2, linewidth=0.8)
            ax.plot(step, R.smooth(loss, w), color=c, linewidth=1.8, label=lab)
        for j, m in enumerate(metrics, start=1):
            ax = axes[j // ncols][j % ncols]
            if m in r.eval and len(r.eval[m]):
                ax.plot(r.eval["step"], r.eval[m], color=c, marker="o", markersize=3.5, linewidth=1.5,
                        label=lab)

    for j, name in enumerate(panels):
        ax = axes[j // ncols][j % ncols]
        ax.set_xlabel("training step")
        ax.set_ylabel(R.metric_label(name))
        ax.set_title(("training loss (faint: raw, bold: moving average)" if name == "loss"
                      else f"eval: {R.metric_label(name)}"), fontsize=10)
        ax.grid(True, alpha=0.3)
        if name == "count_acc":
            ax.set_ylim(-0.02, 1.02)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    model = ", ".join(sorted({r.model for r in runs if r.model})) or "?"
    fig.suptitle(a.title or f"Learning curves ({model}, {len(runs)} run{'s' * (len(runs) > 1)})")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
