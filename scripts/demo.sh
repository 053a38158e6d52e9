#!/usr/bin/env bash
# The README's run command (`make demo`): makes the default multi-object
# Fashion-MNIST scenes (once), trains SuPAIR with `mpirun -np 2` for a few
# minutes, evaluates the best checkpoint on the whole test split and prints a
# summary. Environment: DEMO_SECONDS (training time, default 240), DEMO_NP
# (ranks, default 2), DEMO_RUN (run directory, default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_BUDGET=${DEMO_SECONDS:-240}
NP=${DEMO_NP:-2}
RUN=${DEMO_RUN:-runs/demo}
DATA=data/scenes_fashion.h5
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ ! -f "$DATA" ]; then
  echo "== making $DATA (60k/10k multi-object Fashion-MNIST scenes)"
  "$BUILD/bin/supair_data" scenes --out "$DATA" --seed 1
fi
"$BUILD/bin/supair_data" inspect "$DATA" | tail -12

echo "== training SuPAIR: mpirun -np $NP, ${SECONDS_BUDGET}s of training, run directory $RUN"
rm -rf "$RUN"
# jobs/configs/supair_fashion.cfg: the paper's SuPAIR with the z_where bound
# chosen on a validation split (README, "On a cluster").
mpirun --oversubscribe -np "$NP" "$BUILD/bin/supair_dist" train --model supair --data "$DATA" \
  --run "$RUN" --config jobs/configs/supair_fashion.cfg --time-limit "$SECONDS_BUDGET"

echo "== evaluating the best checkpoint on the full test split"
mpirun --oversubscribe -np "$NP" "$BUILD/bin/supair_dist" eval --run "$RUN" --dump 16

echo "== summary"
/usr/bin/python3 - "$RUN/metrics.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as f:
    tr, ev = f["train"], f["eval"]
    n = tr["step"].shape[0]
    print(f"trained {n} steps in {tr['time_s'][-1]:.0f} s of training time, "
          f"{sum(tr['samples_per_s'][n//2:]) / max(1, n - n//2):.0f} scenes/s (second half), "
          f"exposed communication {100 * sum(tr['comm_s'][:]) / max(1e-9, sum(tr['compute_s'][:]) + sum(tr['comm_s'][:])):.1f}%")
    for i in range(ev["step"].shape[0]):
        print(f"  eval at step {int(ev['step'][i]):5d}, {ev['time_s'][i]:6.1f} s: "
              f"count_acc {ev['count_acc'][i]:.3f}  iou {ev['iou'][i]:.3f}  elbo {ev['elbo'][i]:.1f}")
    best = max(ev["count_acc"][:])
    print(f"best test count accuracy {best:.3f}; checkpoints in {sys.argv[1].rsplit('/', 1)[0]}/ckpt")
PY
