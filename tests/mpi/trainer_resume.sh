#!/usr/bin/env bash
# Exact resume: 2N steps straight equal N, stop, resume, N more (same world
# size): identical parameter bytes and identical metrics. Then a checkpoint
# written at -np 4 resumes at -np 2.
source tests/mpi/trainer_common.bash
cols=step,loss,grad_norm,elbo
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/straight" --steps 16 "${FAST[@]}"
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/split" --steps 8 "${FAST[@]}"
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/split" --steps 16 "${FAST[@]}"
$H5TOOL params-equal "$WORK/straight/ckpt/step_00000016.h5" "$WORK/split/ckpt/step_00000016.h5"
$H5TOOL metrics-equal "$WORK/straight/metrics.h5" "$WORK/split/metrics.h5" "$cols"
grep -q "resuming from" "$WORK/split/log.txt"
# A different world size resumes too (the schedule depends only on the global batch).
run 4 train --model supair --data "$WORK/scenes.h5" --run "$WORK/w" --steps 8 "${FAST[@]}"
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/w" --steps 12 "${FAST[@]}"
[ -f "$WORK/w/ckpt/step_00000012.h5" ]
[ "$($H5TOOL rows "$WORK/w/metrics.h5" train)" = 12 ]
# Evaluating an earlier checkpoint of a run appends an /eval row and keeps
# every /train row (it must not truncate metrics.h5 to that step).
run 2 eval --run "$WORK/split" --ckpt "$WORK/split/ckpt/step_00000008.h5" > "$WORK/eval.txt"
grep -q "count_acc" "$WORK/eval.txt"
[ "$($H5TOOL rows "$WORK/split/metrics.h5" train)" = 16 ] || { echo "eval truncated /train"; exit 1; }
# Resume compatibility: a key that changes parameter shapes is an error
# naming it (nothing written); a changed lr is allowed and logged.
set +e
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/split" --steps 20 "${FAST[@]}" \
  --set supair.lstm_units=128 > "$WORK/shape.txt" 2>&1; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "supair.lstm_units" "$WORK/shape.txt" || { echo "shape change: exit $rc"; cat "$WORK/shape.txt"; exit 1; }
[ ! -f "$WORK/split/ckpt/step_00000020.h5" ]
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/split" --steps 18 "${FAST[@]}" \
  --set lr=0.0005 > "$WORK/lr.txt" 2>&1
grep -q "config change on resume: lr = 0.001 -> 0.0005" "$WORK/split/log.txt" || { cat "$WORK/lr.txt"; exit 1; }
grep -q "^lr = 0.0005 " "$WORK/split/config.cfg"
