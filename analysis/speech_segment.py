#!/usr/bin/python3
"""A speech segment against a model's predicted mean and spread.

Input (documented here because the SRNN model that will write it does not
exist yet): an HDF5 file with float datasets
  x    (T,)  the waveform (normalised samples, as in the speech data files)
  mean (T,)  the model's predicted mean of each sample
  std  (T,)  the model's predicted standard deviation of each sample
and optional root attributes sample_rate (default 16000) and model.

  analysis/speech_segment.py pred.h5 --out speech.png
  analysis/speech_segment.py pred.h5 --start 0.25 --length 0.05 --out zoom.png   # seconds
"""
import argparse
import os

import h5py
import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE.h5", help="HDF5 file with datasets x, mean, std (T,)")
    p.add_argument("--out", default="speech_segment.png", help="output PNG (default %(default)s)")
    p.add_argument("--start", type=float, default=0.0, help="segment start in seconds (default 0)")
    p.add_argument("--length", type=float, default=None,
                   help="segment length in seconds (default: all, at most 0.1 s)")
    p.add_argument("--sigmas", type=float, default=2.0,
                   help="half-width of the shaded band in standard deviations (default %(default)s)")
    p.add_argument("--sample-rate", type=float, default=None,
                   help="samples per second (default: the file's sample_rate, else 16000)")
    p.add_argument("--title", default=None, help="figure title")
    a = p.parse_args()

    with h5py.File(a.file, "r") as f:
        for need in ("x", "mean", "std"):
            if need not in f:
                raise SystemExit(f"{a.file}: no dataset '{need}' (have: {', '.join(f)})")
        x = np.asarray(f["x"][:], dtype=np.float64).ravel()
        mean = np.asarray(f["mean"][:], dtype=np.float64).ravel()
        std = np.asarray(f["std"][:], dtype=np.float64).ravel()
        sr = a.sample_rate or float(f.attrs.get("sample_rate", 16000))
        model = _text(f.attrs.get("model", "model"))
    if not (len(x) == len(mean) == len(std)):
        raise SystemExit(f"{a.file}: x, mean, std lengths differ ({len(x)}, {len(mean)}, {len(std)})")
    length = a.length if a.length is not None else min(len(x) / sr, 0.1)
    i0 = max(0, int(round(a.start * sr)))
    i1 = min(len(x), i0 + max(1, int(round(length * sr))))
    if i0 >= len(x):
        raise SystemExit(f"{a.file}: --start {a.start} s is past the end ({len(x) / sr:.3f} s)")
    t_ms = np.arange(i0, i1) / sr * 1000.0
    xs, ms, ss = x[i0:i1], mean[i0:i1], std[i0:i1]
    inside = np.mean(np.abs(xs - ms) <= a.sigmas * ss)

    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.fill_between(t_ms, ms - a.sigmas * ss, ms + a.sigmas * ss, color="tab:orange", alpha=0.3,
                    linewidth=0, label=f"predicted mean ± {a.sigmas:g} std")
    ax.plot(t_ms, ms, color="tab:orange", linewidth=1.2, label="predicted mean")
    ax.plot(t_ms, xs, color="tab:blue", linewidth=1.0, label="speech signal")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("amplitude (normalised)")
    ax.set_xlim(t_ms[0], t_ms[-1] if len(t_ms) > 1 else t_ms[0] + 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(a.title or (f"{model}: speech segment {i0 / sr:.3f}-{i1 / sr:.3f} s at {sr:g} Hz "
                             f"({100 * inside:.0f}% of samples inside the band)"), fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
