#!/usr/bin/env bash
# Collective stop through the real launcher: SIGUSR1 to mpirun (which forwards
# it to every rank), then SIGTERM to ONE rank only. Either way every rank must
# report the same stop step and the job must exit 3, as the trainer does.
set -u
prog=${BUILD:-build}/tests-mpi/dist_agree
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
np=3

run() { # $1: usr1-mpirun | term-rank1; $2: the signal number expected
  rm -f "$tmp"/pid.*
  mpirun --oversubscribe --timeout 60 -np $np "$prog" loop "$tmp" > "$tmp/out" 2>&1 &
  local mp=$! i
  for i in $(seq 200); do
    [ "$(ls "$tmp"/pid.* 2>/dev/null | wc -l)" -eq $np ] && break
    sleep 0.05
  done
  sleep 0.2
  if [ "$1" = usr1-mpirun ]; then kill -USR1 $mp; else kill -TERM "$(cat "$tmp/pid.1")"; fi
  wait $mp
  local rc=$?
  cat "$tmp/out"
  local lines steps
  lines=$(grep -c "stopped at step .* by signal $2\$" "$tmp/out")
  steps=$(grep -o "stopped at step [0-9]*" "$tmp/out" | sort -u | wc -l)
  if [ $rc -ne 3 ] || [ "$lines" -ne $np ] || [ "$steps" -ne 1 ]; then
    echo "FAIL ($1): exit $rc, $lines of $np ranks stopped by signal $2, $steps distinct stop steps"
    return 1
  fi
  echo "ok ($1): all $np ranks stopped at the same step, exit 3"
}

fail=0
run usr1-mpirun 10 || fail=1
run term-rank1 15 || fail=1
exit $fail
