"""Shared helpers of the analysis/ plot scripts: read run directories.

A run directory (DESIGN.md) holds config.cfg ("key = value  # doc" lines)
and metrics.h5 (groups /train and /eval of 1-D datasets aligned by index
with their `step`). metrics.h5 is opened in SWMR-read mode so a plot can be
made while the run still trains. The rules here match supair_report's: a
sweep root holding trial_*/ run directories stands for all of them, and runs
are labelled by the configuration keys whose values differ between them.
"""
import os
import re

import h5py
import numpy as np

# Metrics where a larger value is better (supair_report uses the same list).
HIGHER_IS_BETTER = {"count_acc", "iou", "elbo", "elbo_per_seq", "elbo_per_sample"}

# Human names and units of the metrics, for axis labels.
METRIC_LABELS = {
    "count_acc": "count accuracy",
    "iou": "IoU of inferred boxes",
    "elbo": "ELBO (nats per scene)",
    "elbo_per_seq": "ELBO per sequence (nats)",
    "elbo_per_sample": "ELBO per sample (nats)",
    "loss": "training loss (negative ELBO)",
}


def _natural_key(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _is_run_dir(d):
    return os.path.isfile(os.path.join(d, "metrics.h5")) or os.path.isfile(
        os.path.join(d, "config.cfg"))


def expand_runs(dirs):
    """Run directories for the given paths; a sweep root expands to its run
    subdirectories in natural order (trial_2 before trial_10). A missing
    directory raises SystemExit with a message naming it."""
    out = []
    for d in dirs:
        d = d.rstrip("/") or "/"
        if not os.path.isdir(d):
            raise SystemExit(f"{d}: no such run directory")
        if not _is_run_dir(d):
            subs = sorted((s for s in os.listdir(d)
                           if not s.startswith(".") and _is_run_dir(os.path.join(d, s))),
                          key=_natural_key)
            if subs:
                out.extend(os.path.join(d, s) for s in subs)
                continue
        out.append(d)
    return out


def parse_config(text):
    """{key: value text} of "key = value  # doc" lines ('#' outside quotes
    starts a comment; surrounding double quotes are removed)."""
    cfg = {}
    for line in text.splitlines():
        inq, cut = False, len(line)
        for i, ch in enumerate(line):
            if ch == '"':
                inq = not inq
            elif ch == "#" and not inq:
                cut = i
                break
        line = line[:cut]
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        k, v = k.strip(), v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        if k:
            cfg[k] = v
    return cfg


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


class Run:
    """One run directory: .dir, .model, .config (dict), .train and .eval
    (dicts of column name -> numpy float array, equal lengths)."""

    def __init__(self, d):
        self.dir = d
        self.model = None
        self.config = {}
        self.train, self.eval = {}, {}
        cfg_path = os.path.join(d, "config.cfg")
        if os.path.isfile(cfg_path):
            with open(cfg_path, encoding="utf-8", errors="replace") as f:
                self.config = parse_config(f.read())
        path = os.path.join(d, "metrics.h5")
        if not os.path.isfile(path):
            raise ValueError(f"{d}: no metrics.h5")
        try:
            f = h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            f = h5py.File(path, "r")  # a file not written in SWMR mode
        with f:
            self.model = _text(f.attrs["model"]) if "model" in f.attrs else None
            if not self.config and "config" in f.attrs:
                self.config = parse_config(_text(f.attrs["config"]))
            for group, out in (("train", self.train), ("eval", self.eval)):
                if group not in f:
                    continue
                cols = {k: f[group][k] for k in f[group]}
                for ds in cols.values():
                    ds.refresh()  # SWMR: see the writer's newest rows
                # A reader can catch the writer between two columns: keep the
                # rows complete in every column.
                n = min((len(ds) for ds in cols.values()), default=0)
                for k, ds in cols.items():
                    out[k] = np.asarray(ds[:n], dtype=np.float64)


def load_runs(dirs):
    """Run objects of the readable runs; unreadable ones get a warning line.
    SystemExit when none can be read."""
    runs = []
    for d in expand_runs(dirs):
        try:
            runs.append(Run(d))
        except (OSError, ValueError, KeyError) as e:
            print(f"warning: {d}: {e}", flush=True)
    if not runs:
        raise SystemExit("no readable run among: " + " ".join(dirs))
    return runs


def differing_keys(runs):
    """Config keys whose values differ between the runs, in first-seen order."""
    keys = []
    for r in runs:
        for k in r.config:
            if k not in keys:
                keys.append(k)
    with_cfg = [r for r in runs if r.config]
    return [k for k in keys if len({r.config.get(k) for r in with_cfg}) > 1]


def labels(runs):
    """A legend label per run: the differing hyperparameters ("lr=0.003"),
    else the directory name."""
    keys = [k for k in differing_keys(runs) if k != "data"] or differing_keys(runs)
    out = []
    for r in runs:
        parts = [f"{k.split('.')[-1]}={r.config.get(k, '-')}" for k in keys]
        out.append(", ".join(parts) if parts else os.path.basename(r.dir) or r.dir)
    if len(set(out)) < len(out):  # same settings (e.g. repeats): say which dir
        out = [f"{os.path.basename(r.dir)}: {lab}" for r, lab in zip(runs, out)]
    return out


def smooth(y, window):
    """Moving average over `window` rows (shorter at the start), NaN-safe."""
    y = np.asarray(y, dtype=np.float64)
    if window <= 1 or len(y) == 0:
        return y
    ok = np.isfinite(y)
    c = np.cumsum(np.where(ok, y, 0.0))
    k = np.cumsum(ok.astype(np.float64))
    c = np.concatenate([[0.0], c])
    k = np.concatenate([[0.0], k])
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    cnt = k[idx] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[idx] - c[lo]) / cnt, np.nan)


def metric_label(name):
    return METRIC_LABELS.get(name, name)
