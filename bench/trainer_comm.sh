#!/usr/bin/env bash
# Trainer-level benchmark (run by scripts/run-bench.sh): real training steps
# of each model at `mpirun -np 2`, reporting the compute and exposed
# communication per step from metrics.h5, then the predicted weak-scaling
# efficiency at 8, 64 and 512 ranks from the allreduce latency/bandwidth
# measured in the same run (bench_allreduce's alpha-beta fit) and each
# model's parameter count and measured compute time.
set -euo pipefail
BUILD=${BUILD:-build}
BIN=$BUILD/bin
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SUPAIR_PROGRESS=lines
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
W=$(mktemp -d /tmp/supair_bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

summary() { # summary METRICS.h5 MODEL -> prints a line, writes compute_s and params to $W/MODEL.txt
  $PY - "$1" "$2" "$W/$2.txt" <<'PY'
import sys, h5py, numpy as np
path, model, out = sys.argv[1:4]
with h5py.File(path, "r", libver="latest", swmr=True) as f:
    t = f["train"]
    c, m, s = t["compute_s"][2:], t["comm_s"][2:], t["samples_per_s"][2:]   # skip warm-up steps
    ckpt_params = None
print(f"  {model:7s} -np 2: {len(c)} steps, compute {np.median(c)*1e3:.1f} ms/step, exposed comm "
      f"{np.median(m)*1e3:.2f} ms/step = {100*np.median(m)/(np.median(c)+np.median(m)):.1f}% (median), "
      f"{np.median(s):.0f} samples/s")
open(out, "w").write(f"{np.median(c)}\n")
PY
}

params_of() { # params_of CKPT.h5
  $PY - "$1" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    n = 0
    f["params"].visititems(lambda k, o: None)
    def add(name, obj):
        global n
        if isinstance(obj, h5py.Dataset): n += obj.size
    f["params"].visititems(add)
print(n)
PY
}

echo "== exposed communication per training step (2 ranks x 1 thread)"
"$BIN/supair_data" scenes --out "$W/scenes.h5" --train 8192 --test 256 --seed 1 >/dev/null 2>&1
mpirun --oversubscribe -np 2 "$BIN/supair_dist" train --model supair --data "$W/scenes.h5" \
  --run "$W/supair" --steps 12 --set eval_every=0 --set eval_final=false >/dev/null
summary "$W/supair/metrics.h5" supair
models=(supair)
if "$BIN/supair_dist" keys --model srnn >/dev/null 2>&1; then
  "$BIN/supair_data" speech-demo --out "$W/speech.h5" >/dev/null 2>&1
  mpirun --oversubscribe -np 2 "$BIN/supair_dist" train --model srnn --data "$W/speech.h5" \
    --run "$W/srnn" --steps 6 --set eval_every=0 --set eval_final=false >/dev/null
  summary "$W/srnn/metrics.h5" srnn
  models+=(srnn)
fi

echo "== predicted weak scaling (ring allreduce, alpha-beta from the measured shared-memory fit)"
for m in "${models[@]}"; do
  p=$(params_of "$(ls "$W/$m/ckpt"/step_*.h5 | tail -1)")
  c=$(head -1 "$W/$m.txt")
  echo "-- $m: $p parameters, $c s compute per step"
  mpirun --oversubscribe -np 2 "$BUILD/bench/bench_allreduce" --quick --params "$p" --compute-s "$c" \
    | sed -n '/predicted weak scaling/,$p'
done
