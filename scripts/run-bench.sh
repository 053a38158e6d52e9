#!/usr/bin/env bash
# The `make bench` driver: runs every $BUILD/bench/bench_* binary in turn and
# prints its table. Exit status non-zero when any benchmark failed.
#   BUILD=build scripts/run-bench.sh
# Threads: each benchmark sets its own thread counts (1 and 2, at most one
# thread per core), so idle OpenMP threads may spin: OMP_WAIT_POLICY=ACTIVE
# unless the caller set it. (DESIGN.md's PASSIVE advice is about separate
# OpenMP and BLAS pools; the OpenMP build of OpenBLAS used here shares ours,
# and waking sleeping threads at every parallel region cost SuPAIR's step 19%
# at 2 threads.) The MPI benchmarks run 1 thread per rank.
# MPI benchmarks (source top comment says "run under mpirun") run as
# `mpirun -np $BENCH_NP` (default 2); bench_allreduce gets --quick so the
# whole of `make bench` stays within its 2-minute budget.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BENCH_NP=${BENCH_NP:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# A hung benchmark must not hold `make bench` forever.
PER_BENCH_TIMEOUT=${PER_BENCH_TIMEOUT:-110}
failed=0; ran=0; failed_names=()
start=$(date +%s)
for b in "$BUILD"/bench/bench_*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  name=$(basename "$b")
  launcher=(); args=()
  if [ -f "bench/$name.c" ] && head -n 3 "bench/$name.c" | grep -q "run under mpirun"; then
    launcher=(mpirun -np "$BENCH_NP" --oversubscribe -x OMP_NUM_THREADS=1)
  fi
  case "$name" in bench_allreduce) args=(--quick) ;; esac
  echo "=== $name"
  t0=$(date +%s)
  timeout "$PER_BENCH_TIMEOUT" "${launcher[@]+"${launcher[@]}"}" "$b" "${args[@]+"${args[@]}"}"; rc=$?
  t1=$(date +%s)
  ran=$((ran+1))
  if [ "$rc" -ne 0 ]; then
    failed=$((failed+1)); failed_names+=("$name")
    echo "FAILED: $name (exit $rc, $((t1-t0)) s)"
  else
    echo "--- $name: $((t1-t0)) s"
  fi
  echo
done
# Trainer-level: exposed communication per step and predicted scaling.
echo "=== trainer_comm"
t0=$(date +%s)
if BUILD=$BUILD timeout 300 bash bench/trainer_comm.sh; then
  echo "--- trainer_comm: $(( $(date +%s) - t0 )) s"
else
  failed=$((failed+1)); failed_names+=("trainer_comm")
fi
ran=$((ran+1))
for n in "${failed_names[@]+"${failed_names[@]}"}"; do echo "FAILED: $n"; done
echo "bench: $ran run, $failed failed, $(( $(date +%s) - start )) s total"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
