#!/usr/bin/env bash
# The SLURM job scripts on a real one-node cluster (scripts/slurm-cluster.sh):
# jobs/train.sbatch with 2 MPI ranks and jobs/sweep.sbatch as a 3-task array
# finish at the planned step with metrics.h5 and a checkpoint; then, for each
# launcher (srun --mpi=pmix, mpirun), a longer job gets
# `scancel --batch --signal=USR1` while it trains: it must checkpoint, requeue
# itself (Restarts=1), resume ("resuming from" in log.txt) and finish at the
# planned step. Fails (never skips) when SLURM cannot start here.
# Run from the repository root with BUILD set (scripts/run-tests.sh does).
#
# Requeue delay: SLURM holds a requeued job for AuthInfo's cred_expire (120 s
# by default) through its BeginTime. The test cluster sets cred_expire=5, so
# the job restarts ~7 s later; should it still pend on BeginTime after 20 s
# (a cluster started with other settings), the test moves it with
# `scontrol update JobId=J StartTime=now`, which SLURM honours at once.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PY=/usr/bin/python3   # Debian's python has h5py
T=$(mktemp -d /tmp/supair_slurm.XXXXXX)
T0=$(date +%s)
fail=0
pass() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
el() { echo "$(( $(date +%s) - T0 )) s"; }

cleanup() {
  "$ROOT/scripts/slurm-cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT

for b in supair_dist supair_data; do
  [ -x "$BUILD/bin/$b" ] || { echo "FAIL: $BUILD/bin/$b not built"; exit 1; }
done
if ! envline=$(scripts/slurm-cluster.sh start 2>"$T/cluster.err"); then
  echo "FAIL: the SLURM test cluster does not start on this machine (scripts/slurm-cluster.sh start):"
  cat "$T/cluster.err"
  exit 1
fi
eval "$envline"
export SLURM_CONF
# A reused cluster may still hold jobs of an aborted earlier run: they would
# take the CPUs this test's jobs wait for.
mapfile -t left < <(squeue -h -o %A 2>/dev/null)
[ ${#left[@]} -gt 0 ] && { echo "cancelling leftover jobs ${left[*]}"; scancel "${left[@]}"; sleep 2; }
echo "cluster up ($SLURM_CONF) after $(el)"

export SUPAIR_BIN=$BUILD/bin/supair_dist SUPAIR_PROGRESS=lines
unset SUPAIR_LAUNCHER OMP_PROC_BIND OMP_PLACES
"$BUILD/bin/supair_data" scenes --out "$T/scenes.h5" --train 512 --test 128 --seed 1 >/dev/null 2>&1 \
  || { echo "FAIL: supair_data scenes"; exit 1; }
# Small and fast: eval rare and small, progress lines every 5 steps.
FAST=(--model supair --data "$T/scenes.h5" --set batch_size=16 --set eval_every=0 --set eval_n=64
      --set log_every=5)

# ---------------------------------------------------------------- jobs/configs
# Every key of every paper configuration exists for its model (file prefix;
# the shared keys while that model is not implemented), and the SuPAIR ones
# load in the trainer for real.
for cfg in "$ROOT"/jobs/configs/*.cfg; do
  name=$(basename "$cfg"); model=${name%%_*}
  known=$("$SUPAIR_BIN" keys --model "$model" 2>/dev/null) || known=$("$SUPAIR_BIN" keys)
  unknown=$(awk -F'=' '/^[ \t]*[^#[:space:]]/ { k=$1; gsub(/[ \t]/, "", k); print k }' "$cfg" \
    | while read -r k; do echo "$known" | awk -v k="$k" '$1==k{f=1} END{exit !f}' || echo "$k"; done)
  if [ -z "$unknown" ]; then pass "$name: every key known ($model)"
  else bad "$name: unknown keys: $(tr '\n' ' ' <<<"$unknown")"; fi
  if [ "$model" = supair ]; then
    OMP_NUM_THREADS=1 "$SUPAIR_BIN" train --model supair --data "$T/scenes.h5" --run "$T/cfg-$name" \
      --config "$cfg" --steps 1 --set batch_size=16 --set eval_n=16 > "$T/cfg-$name.out" 2>&1 \
      && pass "$name: loads and trains a step" || { bad "$name: does not load"; tail -3 "$T/cfg-$name.out"; }
  fi
done
echo "configs checked after $(el)"

field() { scontrol show job "$1" 2>/dev/null | grep -oP "(?<=\b$2=)\S+" | head -1; }

# wait_job JOBID SECONDS: until the job is COMPLETED/FAILED/...; moves a
# requeued job held on BeginTime for more than 20 s (see the file comment).
wait_job() {
  local j=$1 deadline=$(( $(date +%s) + $2 )) st reason held=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    st=$(field "$j" JobState); reason=$(field "$j" Reason)
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$st"; return 0 ;; esac
    if [ "$st" = PENDING ] && [ "$reason" = BeginTime ]; then
      held=$((held + 1))
      if [ "$held" -eq 20 ]; then
        echo "job $j held on BeginTime for 20 s: scontrol update StartTime=now" >&2
        scontrol update JobId="$j" StartTime=now >&2
      fi
    else held=0; fi
    sleep 1
  done
  echo "TIMEOUT(${st:-unknown})"
}

# check_run DIR STEP RANKS THREADS NAME: finished at STEP with metrics and a checkpoint.
check_run() {
  local d=$1 step=$2 ranks=$3 threads=$4 name=$5 ck
  ck=$(printf '%s/ckpt/step_%08d.h5' "$d" "$step")
  if [ ! -f "$ck" ]; then bad "$name: no checkpoint $ck (have: $(ls "$d/ckpt" 2>/dev/null | tr '\n' ' '))"; return; fi
  local got
  got=$("$PY" - "$d/metrics.h5" "$ck" <<'EOF' 2>&1
import sys, h5py
with h5py.File(sys.argv[1], "r", libver="latest", swmr=True) as f:
    s = f["train/step"][()]
    print(int(s[-1]), int(f.attrs["world_size"]), int(f.attrs["omp_threads"]), len(s), len(set(s.tolist())))
with h5py.File(sys.argv[2], "r") as c:
    print(int(c.attrs["step"]))
EOF
)
  local want
  want=$(printf '%s %s %s\n%s' "$step" "$ranks" "$threads" "$step")
  # rows = distinct steps: a resumed run must not log a step twice.
  if [ "$(echo "$got" | awk 'NR==1{print $1, $2, $3; if ($4 != $5) print "DUPLICATE"} NR==2{print}')" = "$want" ]; then
    pass "$name: step $step, $ranks ranks x $threads threads, metrics.h5 and checkpoint"
  else
    bad "$name: metrics/checkpoint (last step, world_size, omp_threads, rows, distinct / ckpt step) = $(tr '\n' ' ' <<<"$got"), want $step $ranks $threads"
  fi
}

show_job() { # on failure: the job's output and the trainer's log
  echo "---- $1"; tail -40 "$1" 2>/dev/null
  [ -n "${2:-}" ] && { echo "---- $2"; tail -20 "$2" 2>/dev/null; }
  echo "---- slurmctld.log"; tail -15 /tmp/supair-slurm/slurmctld.log 2>/dev/null
}

# ---------------------------------------------------------------- submit
cd "$T" || exit 1
# line 1 comment-only: the baseline trial, with a warning; line 2: a comment after the overrides
printf '%s\n' 'lr=0.002' '# the baseline' 'lr=0.0005 seed=3  # lower lr, another seed' > plan.txt
J1=$(sbatch --parsable --ntasks=2 --job-name=t-train "$ROOT/jobs/train.sbatch" "${FAST[@]}" --run "$T/train" --steps 20) \
  || { echo "FAIL: sbatch train.sbatch"; exit 1; }
J2=$(sbatch --parsable --array=0-2 --ntasks=1 --cpus-per-task=2 --job-name=t-sweep "$ROOT/jobs/sweep.sbatch" plan.txt \
  "${FAST[@]}" --run "$T/sweep" --steps 20) || { echo "FAIL: sbatch sweep.sbatch"; exit 1; }
echo "submitted train $J1, sweep array $J2 after $(el)"

# ---------------------------------------------------------------- train.sbatch
st=$(wait_job "$J1" 150)
out=$T/t-train-$J1.out
if [ "$st" = COMPLETED ] && [ "$(field "$J1" ExitCode)" = 0:0 ]; then pass "train.sbatch job $J1 completed ($(el))"
else bad "train.sbatch job $J1: $st exit $(field "$J1" ExitCode)"; show_job "$out" "$T/train/log.txt"; fi
check_run "$T/train" 20 2 1 "train.sbatch"
grep -q "2 ranks x 1 threads" "$out" && pass "train.sbatch: 2 ranks x 1 thread from --ntasks" \
  || bad "train.sbatch: rank/thread line missing in $out"

# ---------------------------------------------------------------- sweep.sbatch
want_lr=(0.002 0.001 0.0005); want_seed=(1 1 3)
for i in 0 1 2; do
  st=$(wait_job "${J2}_$i" 150)
  out=$T/t-sweep-${J2}_$i.out
  if [ "$st" = COMPLETED ]; then pass "sweep trial $i completed ($(el))"
  else bad "sweep trial $i: $st"; show_job "$out" "$T/sweep/trial_$i/log.txt"; fi
  check_run "$T/sweep/trial_$i" 20 1 2 "sweep trial $i"
  lr=$(awk '$1=="lr"{print $3}' "$T/sweep/trial_$i/config.cfg" 2>/dev/null)
  seed=$(awk '$1=="seed"{print $3}' "$T/sweep/trial_$i/config.cfg" 2>/dev/null)
  if [ "$lr" = "${want_lr[$i]}" ] && [ "$seed" = "${want_seed[$i]}" ]; then
    pass "sweep trial $i: plan line $i applied (lr $lr, seed $seed)"
  else
    bad "sweep trial $i: lr '$lr' seed '$seed', want ${want_lr[$i]} ${want_seed[$i]} (plan line $i)"
  fi
  # only line 1 is comment-only: its trial (and no other) warns
  if grep -q "line $i holds only a comment" "$out" 2>/dev/null; then warned=1; else warned=0; fi
  if [ "$warned" = "$((i == 1))" ]; then pass "sweep trial $i: comment-only warning $([ "$warned" = 1 ] && echo given || echo absent)"
  else bad "sweep trial $i: comment-only warning $warned, want $((i == 1))"; show_job "$out"; fi
done
[ -e "$T/sweep/trial_3" ] && bad "sweep: a trial_3 directory exists"
# A trial beyond the plan's last line is an error, not a silent baseline.
J3=$(sbatch --parsable --array=3 --ntasks=1 --job-name=t-sweep-bad "$ROOT/jobs/sweep.sbatch" plan.txt \
  "${FAST[@]}" --run "$T/sweep" --steps 20)
st=$(wait_job "${J3}_3" 60)
if [ "$st" = FAILED ] && grep -q "only 3 lines" "$T/t-sweep-bad-${J3}_3.out" && [ ! -e "$T/sweep/trial_3" ]; then
  pass "sweep trial past the plan's end fails naming the plan"
else
  bad "sweep trial 3 of a 3-line plan: $st"; show_job "$T/t-sweep-bad-${J3}_3.out"
fi

# ---------------------------------------------------------------- signal + requeue
for launcher in srun mpirun; do
  run=$T/long-$launcher
  J=$(SUPAIR_LAUNCHER=$launcher sbatch --parsable --ntasks=2 --job-name=t-long-$launcher \
      "$ROOT/jobs/train.sbatch" "${FAST[@]}" --run "$run" --steps 60 --set ckpt_every=1000)
  out=$T/t-long-$launcher-$J.out
  # Signal once it trains (a progress line past step 0 in log.txt).
  deadline=$(( $(date +%s) + 90 ))
  until grep -qE "step [0-9]+/60" "$run/log.txt" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; do sleep 0.5; done
  if ! grep -qE "step [0-9]+/60" "$run/log.txt" 2>/dev/null; then
    bad "$launcher: long job $J never started training"; show_job "$out" "$run/log.txt"; continue
  fi
  scancel --batch --signal=USR1 "$J"
  echo "sent USR1 to job $J ($launcher) after $(el)"
  st=$(wait_job "$J" 150)
  restarts=$(field "$J" Restarts)
  if [ "$st" = COMPLETED ] && [ "$restarts" = 1 ]; then pass "$launcher: job $J requeued once and completed ($(el))"
  else bad "$launcher: job $J state $st, Restarts=$restarts (want COMPLETED, 1)"; show_job "$out" "$run/log.txt"; fi
  if grep -q "got SIGUSR1" "$out" && grep -q "trainer exited with status 3" "$out" \
     && grep -q "restart 1" "$out"; then
    pass "$launcher: trap forwarded USR1, trainer exited 3, job restarted (SLURM_RESTART_COUNT=1)"
  else
    bad "$launcher: signal/requeue lines missing in $out"; show_job "$out"
  fi
  stop_step=$(sed -nE 's/.*checkpointing at step ([0-9]+).*/\1/p' "$run/log.txt" | head -1)
  if [ -n "$stop_step" ] && [ "$stop_step" -lt 60 ] \
     && grep -q "resuming from .*step_$(printf %08d "$stop_step").h5" "$run/log.txt"; then
    pass "$launcher: checkpointed at step $stop_step and resumed from it"
  else
    bad "$launcher: no checkpoint-then-resume in $run/log.txt (stop step '$stop_step')"; show_job "$run/log.txt"
  fi
  check_run "$run" 60 2 1 "$launcher long job"
done

echo "total $(el)"
exit $fail
