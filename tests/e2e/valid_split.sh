#!/usr/bin/env bash
# --valid N carves N validation scenes from the training stream (scenes
# n_train.. of split 0, from the training items): they equal the extra
# training scenes of a bigger build, are not in /train, and the trainer can
# select on them (eval_split=valid) without touching the test split.
set -euo pipefail
BUILD=${BUILD:-build}
W=$(mktemp -d /tmp/supair_valid.XXXXXX)
trap 'rm -rf "$W"' EXIT
"$BUILD/bin/supair_data" scenes --out "$W/a.h5" --train 100 --test 10 --valid 20 --seed 5 >/dev/null 2>&1
"$BUILD/bin/supair_data" scenes --out "$W/b.h5" --train 120 --test 10 --seed 5 >/dev/null 2>&1
/usr/bin/python3 - "$W/a.h5" "$W/b.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for d in ("images", "counts", "boxes"):
    assert np.array_equal(a["valid"][d][()], b["train"][d][100:120]), d
    assert np.array_equal(a["train"][d][()], b["train"][d][:100]), d
assert np.array_equal(a["test"]["images"][()], b["test"]["images"][()])
print("valid = training scenes 100..119; train and test unchanged")
PY
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 SUPAIR_PROGRESS=lines
mpirun --oversubscribe -np 1 "$BUILD/bin/supair_dist" train --model supair --data "$W/a.h5" --run "$W/r" \
  --steps 2 --set batch_size=8 --set eval_split=valid --set eval_every=1 --set eval_n=8 > "$W/out.txt" 2>&1
grep -q "eval step 1 (periodic, 8 valid rows" "$W/out.txt" || { cat "$W/out.txt"; exit 1; }
grep -q "eval step 2 (final, 20 valid rows" "$W/out.txt" || { cat "$W/out.txt"; exit 1; }
