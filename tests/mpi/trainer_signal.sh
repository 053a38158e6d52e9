#!/usr/bin/env bash
# A reader sees metrics.h5 grow while the run trains. SIGUSR1 mid-run: every rank stops at the same step boundary, a valid
# checkpoint is written at that step, the exit status is 3, and resuming
# finishes the planned steps.
source tests/mpi/trainer_common.bash
set +e
mpirun --oversubscribe -np 2 "$BIN/supair_dist" train --model supair --data "$WORK/scenes.h5" --run "$WORK/r" --steps 100000 "${FAST[@]}" \
  > "$WORK/out.txt" 2>&1 &
pid=$!
# Wait for training to be under way (a few progress lines), then signal mpirun,
# which forwards SIGUSR1 to every rank.
for _ in $(seq 1 300); do
  [ "$(grep -c ' step ' "$WORK/out.txt" 2>/dev/null)" -ge 2 ] && break
  sleep 0.2
done
# A separate reader process sees metrics.h5 grow while training runs (SWMR).
rows1=$($H5TOOL rows "$WORK/r/metrics.h5" train)
for _ in $(seq 1 100); do
  rows2=$($H5TOOL rows "$WORK/r/metrics.h5" train)
  [ "$rows2" -gt "$rows1" ] && break
  sleep 0.3
done
echo "metrics.h5 rows seen by a reader while training: $rows1 -> $rows2"
[ "$rows2" -gt "$rows1" ] || { echo "metrics.h5 did not grow for a reader"; kill -9 "$pid"; exit 1; }
kill -USR1 "$pid"
wait "$pid"; rc=$?
set -e
cat "$WORK/out.txt" | tail -5
[ "$rc" -eq 3 ] || { echo "exit status $rc, expected 3"; exit 1; }
ck=$(ls "$WORK/r/ckpt"/step_*.h5 | tail -1)
step=$($H5TOOL attr "$ck" step)
echo "stopped at step $step"
[ "$step" -gt 0 ]
target=$((step + 4))
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/r" --steps "$target" "${FAST[@]}"
[ -f "$WORK/r/ckpt/step_$(printf %08d "$target").h5" ]
