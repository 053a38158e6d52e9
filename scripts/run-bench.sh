#!/usr/bin/env bash
# The `make bench` driver: runs every $BUILD/bench/bench_* binary in turn and
# prints its table. Exit status non-zero when any benchmark failed.
#   BUILD=build scripts/run-bench.sh
# Threads: each benchmark sets its own thread counts (1 and 2); idle OpenMP
# threads must sleep, not spin, or they steal the cores OpenBLAS needs
# (DESIGN.md "Facts"), hence OMP_WAIT_POLICY=PASSIVE unless the caller set it.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# Each benchmark is expected to take well under a minute; a hung one must not
# hold `make bench` forever.
PER_BENCH_TIMEOUT=${PER_BENCH_TIMEOUT:-110}
failed=0; ran=0
start=$(date +%s)
for b in "$BUILD"/bench/bench_*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  case "$b" in *.o|*.d) continue ;; esac
  name=$(basename "$b")
  echo "=== $name"
  t0=$(date +%s)
  timeout "$PER_BENCH_TIMEOUT" "$b"; rc=$?
  t1=$(date +%s)
  ran=$((ran+1))
  if [ "$rc" -ne 0 ]; then
    failed=$((failed+1)); echo "FAILED: $name (exit $rc, $((t1-t0)) s)"
  else
    echo "--- $name: $((t1-t0)) s"
  fi
  echo
done
echo "bench: $ran run, $failed failed, $(( $(date +%s) - start )) s total"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
