#!/usr/bin/env bash
# Runs the test suites and prints one closing line "check: N passed, N failed".
#   scripts/run-tests.sh [unit|mpi|e2e|all]     (default all)
# Unit tests: every build/tests/test_* CUnit executable (counts its tests).
# MPI and end-to-end tests: every tests/mpi/*.sh and tests/e2e/*.sh, run from
# the repository root with BUILD set; each script is one test (exit 0 = pass).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WHAT=${1:-all}
export BUILD
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [ "${SANITIZED:-0}" = 1 ]; then
  # Open MPI and OpenBLAS keep global allocations until exit: leak reports
  # there are not ours. Everything else in ASan/UBSan stays fatal.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
passed=0; failed=0; failed_names=()
log=$(mktemp -d)

run_unit() {
  for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "=== $name"
    "$t" > "$log/$name.out" 2>&1; rc=$?
    cat "$log/$name.out"
    # CUnit's summary row: "tests  Total  Ran  Passed  Failed  Inactive"
    read -r ran pass fail < <(awk '$1=="tests" && NF>=5 {print $3, $4, $5}' "$log/$name.out" | tail -1)
    if [ -z "${ran:-}" ]; then
      failed=$((failed+1)); failed_names+=("$name (no CUnit summary, exit $rc)")
      continue
    fi
    passed=$((passed+pass)); failed=$((failed+fail))
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
      failed=$((failed+1)); failed_names+=("$name (exit $rc)")
    elif [ "$fail" -ne 0 ]; then
      failed_names+=("$name ($fail failed)")
    fi
  done
}

run_scripts() {
  for s in "$@"; do
    [ -f "$s" ] || continue
    name=${s#tests/}
    echo "=== $name"
    start=$(date +%s)
    bash "$s" > "$log/$(basename "$s").out" 2>&1; rc=$?
    end=$(date +%s)
    if [ "$rc" -eq 0 ]; then
      passed=$((passed+1)); echo "    passed ($((end-start)) s)"
    else
      failed=$((failed+1)); failed_names+=("$name")
      echo "    FAILED (exit $rc, $((end-start)) s); output:"
      sed 's/^/    | /' "$log/$(basename "$s").out" | tail -40
    fi
  done
}

case "$WHAT" in
  unit) run_unit ;;
  mpi) run_scripts tests/mpi/*.sh ;;
  e2e) run_scripts tests/e2e/*.sh ;;
  all) run_unit; run_scripts tests/mpi/*.sh; run_scripts tests/e2e/*.sh ;;
  *) echo "usage: $0 [unit|mpi|e2e|all]" >&2; exit 1 ;;
esac
rm -rf "$log"
for n in "${failed_names[@]+"${failed_names[@]}"}"; do echo "FAILED: $n"; done
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
