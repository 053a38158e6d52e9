#!/usr/bin/env bash
# Damaged checkpoints: kill -9 of the job while it writes checkpoints leaves
# the previous checkpoint intact and resume works; a truncated or bit-flipped
# newest checkpoint is detected and the previous one is used, with a warning.
source tests/mpi/trainer_common.bash
# Checkpoint every step so the kill lands in or near a write.
set +e
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/k" --steps 100000 "${FAST[@]}" \
  --set ckpt_every=1 --set keep_ckpts=3 > "$WORK/out.txt" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ "$(ls "$WORK/k/ckpt" 2>/dev/null | grep -c '^step_')" -ge 3 ] && break
  sleep 0.1
done
pkill -9 -f "supair_dist train .*$WORK/k" ; kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
set -e
n=$(ls "$WORK/k/ckpt" | grep -c '^step_')
last=$(ls "$WORK/k/ckpt"/step_*.h5 | tail -1)
step=$($H5TOOL attr "$last" step)
target=$((step + 2))
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/k" --steps "$target" "${FAST[@]}" \
  --set ckpt_every=1 --set keep_ckpts=3
[ -f "$WORK/k/ckpt/step_$(printf %08d "$target").h5" ]
# Truncate the newest: resume falls back to the previous one and says so.
newest=$(ls "$WORK/k/ckpt"/step_*.h5 | tail -1)
truncate -s 5000 "$newest"
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/k" --steps $((target + 1)) "${FAST[@]}" \
  --set ckpt_every=1 --set keep_ckpts=3 > "$WORK/out2.txt" 2>&1
grep -q "warning" "$WORK/out2.txt" || { cat "$WORK/out2.txt"; exit 1; }
grep -q "resuming from .*step_$(printf %08d $((target - 1))).h5" "$WORK/out2.txt"
# Flip one byte in the middle of the newest's data: detected by the checksum.
newest=$(ls "$WORK/k/ckpt"/step_*.h5 | tail -1)
size=$(stat -c %s "$newest")
$PY - "$newest" "$size" <<'PY'
import sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(size - 4096)
    b = f.read(1)
    f.seek(size - 4096)
    f.write(bytes([b[0] ^ 0x40]))
PY
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/k" --steps $((target + 2)) "${FAST[@]}" \
  --set ckpt_every=1 --set keep_ckpts=3 > "$WORK/out3.txt" 2>&1
grep -q "warning" "$WORK/out3.txt" || { cat "$WORK/out3.txt"; exit 1; }
echo "kill -9 left $n checkpoints; damaged newest detected twice"
