#!/usr/bin/env bash
# Bad input: exit 1 with a one-line reason naming the key, value or file; the
# run directory is never created.
source tests/mpi/trainer_common.bash
expect_fail() { # expect_fail PATTERN NP ARGS...
  local pattern=$1 np=$2; shift 2
  set +e
  run "$np" "$@" > "$WORK/err.txt" 2>&1; local rc=$?
  set -e
  [ "$rc" -eq 1 ] || { echo "exit $rc, expected 1 for: $*"; cat "$WORK/err.txt"; exit 1; }
  grep -q "$pattern" "$WORK/err.txt" || { echo "message lacks '$pattern'"; cat "$WORK/err.txt"; exit 1; }
  [ ! -e "$WORK/bad" ] || { echo "run directory was created for: $*"; exit 1; }
  grep "supair_dist:" "$WORK/err.txt" | head -1
}
T=(train --model supair --run "$WORK/bad")
expect_fail "unknown key 'no_such_key'" 2 "${T[@]}" --data "$WORK/scenes.h5" --set no_such_key=1
expect_fail "bad value 'abc' for key 'lr'" 2 "${T[@]}" --data "$WORK/scenes.h5" --set lr=abc
expect_fail "batch_size 10 is not divisible by the 4 ranks" 4 "${T[@]}" --data "$WORK/scenes.h5" --set batch_size=10
expect_fail "$WORK/missing.h5" 2 "${T[@]}" --data "$WORK/missing.h5"
$PY - "$WORK/wrong.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f["train/images"] = np.zeros((4, 28, 28), np.float32)
PY
expect_fail "wrong.h5" 2 "${T[@]}" --data "$WORK/wrong.h5"
expect_fail "unknown model 'nope'" 1 train --model nope --run "$WORK/bad" --data "$WORK/scenes.h5"
expect_fail "unknown option '--bogus'" 1 "${T[@]}" --data "$WORK/scenes.h5" --bogus
