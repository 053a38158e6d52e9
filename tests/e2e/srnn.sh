#!/usr/bin/env bash
# SRNN end to end on a small synthetic-speech corpus: speech-demo (festival /
# espeak-ng through the TIMIT path), a tiny SRNN trained with mpirun -np 2
# (streams split over ranks, carried state), stopped and resumed, evaluated
# on whole test utterances, and `eval --dump` feeding the speech plot.
set -euo pipefail
BUILD=${BUILD:-build}
W=$(mktemp -d /tmp/supair_srnn.XXXXXX)
trap 'rm -rf "$W"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 SUPAIR_PROGRESS=lines
"$BUILD/bin/supair_data" speech-demo --out "$W/s.h5" --minutes 2 --streams 4 > "$W/data.txt" 2>&1 \
  || { cat "$W/data.txt"; exit 1; }
TINY=(--set batch_size=4 --set srnn.d=16 --set srnn.a=16 --set srnn.z=4 --set srnn.mlp=8
      --set eval_split=valid --set eval_every=2 --set eval_n=8)
mpirun --oversubscribe -np 2 "$BUILD/bin/supair_dist" train --model srnn --data "$W/s.h5" --run "$W/r" \
  --steps 3 "${TINY[@]}" > "$W/a.txt" 2>&1 || { cat "$W/a.txt"; exit 1; }
mpirun --oversubscribe -np 2 "$BUILD/bin/supair_dist" train --model srnn --data "$W/s.h5" --run "$W/r" \
  --steps 5 "${TINY[@]}" > "$W/b.txt" 2>&1 || { cat "$W/b.txt"; exit 1; }
grep -q "resuming from" "$W/b.txt"
grep -q "elbo_per_sample" "$W/b.txt"
mpirun --oversubscribe -np 2 "$BUILD/bin/supair_dist" eval --run "$W/r" --split test --dump 2 \
  > "$W/e.txt" 2>&1 || { cat "$W/e.txt"; exit 1; }
grep -E "elbo_per_(seq|sample)" "$W/e.txt"
/usr/bin/python3 - "$W/r/dump.h5" "$W/r/metrics.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    x, m, s, off = f["x"][()], f["mean"][()], f["std"][()], f["offsets"][()]
    assert x.shape == m.shape == s.shape and len(off) == 3 and off[-1] == len(x), (x.shape, off)
    assert np.all(np.isfinite(m)) and np.all(s > 0), "non-finite mean or non-positive std"
with h5py.File(sys.argv[2], "r", libver="latest", swmr=True) as f:
    assert list(f["train"]["step"][()]) == [1, 2, 3, 4, 5], f["train"]["step"][()]
    assert np.all(np.isfinite(f["eval"]["elbo_per_sample"][()]))
print(f"dump: {len(x)} samples of 2 test utterances; metrics steps 1..5")
PY
MPLBACKEND=Agg /usr/bin/python3 analysis/speech_segment.py "$W/r/dump.h5" --out "$W/seg.png" > /dev/null
[ -s "$W/seg.png" ]
