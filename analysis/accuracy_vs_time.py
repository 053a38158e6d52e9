#!/usr/bin/python3
"""Count accuracy against training wall-clock time for several runs (the
SuPAIR paper's figure: SuPAIR reaches AIR's accuracy in a fraction of the
time). The x axis is the metrics' time_s: training time since the run began,
evaluation excluded, continued across resumes.

  analysis/accuracy_vs_time.py runs/supair runs/air --out acc_time.png
  analysis/accuracy_vs_time.py runs/sweep --metric iou --logx --out iou_time.png
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep analysis/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import matplotlib  # noqa: E402

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402

import runs as R  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (or a sweep root holding trial_*/)")
    p.add_argument("--out", default="accuracy_vs_time.png", help="output PNG (default %(default)s)")
    p.add_argument("--metric", default="count_acc", help="eval metric on the y axis (default %(default)s)")
    p.add_argument("--target", type=float, default=None,
                   help="draw a horizontal line at this value (default 0.9 for count_acc)")
    p.add_argument("--logx", action="store_true", help="logarithmic time axis")
    p.add_argument("--minutes", action="store_true", help="time axis in minutes instead of seconds")
    p.add_argument("--title", default=None, help="figure title")
    a = p.parse_args()

    runs = R.load_runs(a.runs)
    labs = R.labels(runs)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    scale, unit = (60.0, "min") if a.minutes else (1.0, "s")
    plotted = 0
    for r, lab in zip(runs, labs):
        if a.metric not in r.eval or not len(r.eval[a.metric]):
            print(f"warning: {r.dir}: no eval metric '{a.metric}'", flush=True)
            continue
        if r.model and len(runs) > 1 and len({x.model for x in runs}) > 1:
            lab = f"{r.model}: {lab}"
        t = r.eval["time_s"] / scale
        ax.plot(t, r.eval[a.metric], marker="o", markersize=3.5, linewidth=1.6, label=lab)
        plotted += 1
    target = a.target if a.target is not None else (0.9 if a.metric == "count_acc" else None)
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {target:g}")
    if a.metric == "count_acc":
        ax.set_ylim(-0.02, 1.02)
    if a.logx:
        ax.set_xscale("log")
    ax.set_xlabel(f"training wall-clock time ({unit}, evaluation excluded)")
    ax.set_ylabel(R.metric_label(a.metric))
    ax.grid(True, alpha=0.3)
    if plotted or target is not None:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(a.title or f"{R.metric_label(a.metric).capitalize()} vs training time")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    if not plotted:
        raise SystemExit(f"no run has the eval metric '{a.metric}'")


if __name__ == "__main__":
    main()
