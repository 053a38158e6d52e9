#!/usr/bin/python3
"""Helpers for the trainer's MPI tests: compare checkpoints and metrics.

  h5tool.py params-close A.h5 B.h5 RTOL    ||pA - pB|| / ||pA|| <= RTOL over /params
  h5tool.py params-equal A.h5 B.h5         identical bytes of /params and /adam
  h5tool.py metrics-equal A.h5 B.h5 COLS   /train columns identical (comma list)
  h5tool.py attr FILE.h5 NAME              print a root attribute
  h5tool.py rows FILE.h5 GROUP             rows in GROUP/step (SWMR read)
"""
import sys

import h5py
import numpy as np


def walk(f, prefix):
    out = {}
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]
    f[prefix].visititems(visit)
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "params-close":
        a, b, rtol = sys.argv[2], sys.argv[3], float(sys.argv[4])
        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            pa, pb = walk(fa, "params"), walk(fb, "params")
        assert pa.keys() == pb.keys(), f"parameter names differ: {sorted(pa)} vs {sorted(pb)}"
        num = sum(float(np.sum((pa[k].astype(np.float64) - pb[k]) ** 2)) for k in pa)
        den = sum(float(np.sum(pa[k].astype(np.float64) ** 2)) for k in pa)
        rel = (num / den) ** 0.5
        worst = max(pa, key=lambda k: float(np.max(np.abs(pa[k].astype(np.float64) - pb[k]))))
        print(f"relative difference {rel:.3e} (worst tensor {worst}); tolerance {rtol:g}")
        sys.exit(0 if rel <= rtol else 1)
    if cmd == "params-equal":
        a, b = sys.argv[2], sys.argv[3]
        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            for g in ("params", "adam"):
                xa, xb = walk(fa, g), walk(fb, g)
                assert xa.keys() == xb.keys(), f"{g}: names differ"
                for k in xa:
                    if xa[k].tobytes() != xb[k].tobytes():
                        print(f"{g}/{k} differs: max abs {np.max(np.abs(xa[k] - xb[k])):.3e}")
                        sys.exit(1)
        print("parameters and Adam moments identical")
        return
    if cmd == "metrics-equal":
        a, b, cols = sys.argv[2], sys.argv[3], sys.argv[4].split(",")
        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            for c in cols:
                xa, xb = fa["train"][c][()], fb["train"][c][()]
                if xa.shape != xb.shape or xa.tobytes() != xb.tobytes():
                    print(f"/train/{c} differs: {xa.shape} vs {xb.shape}\n{xa}\n{xb}")
                    sys.exit(1)
        print(f"metrics identical in {cols}")
        return
    if cmd == "attr":
        with h5py.File(sys.argv[2], "r") as f:
            v = f.attrs[sys.argv[3]]
            print(v.decode() if isinstance(v, bytes) else v)
        return
    if cmd == "rows":
        with h5py.File(sys.argv[2], "r", libver="latest", swmr=True) as f:
            print(f[sys.argv[3]]["step"].shape[0])
        return
    sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
