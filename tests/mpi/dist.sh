#!/usr/bin/env bash
# Broadcast and bucketed allreduce equal to the serial sum at 1, 2, 3 and 4
# ranks (3: Open MPI's non-power-of-two algorithms); checksum divergence,
# config/dataset mismatch at start (under a timeout: a mismatch must be an
# error, never a hang), stop and failure agreement, metric reduction at 1, 2
# and 4 ranks.
set -u
dir=${BUILD:-build}/tests-mpi
fail=0
for np in 1 2 3 4; do
  timeout 60 mpirun --oversubscribe -np $np "$dir/dist_allreduce" || { echo "FAIL dist_allreduce np=$np (exit $?)"; fail=1; }
  [ $np = 3 ] && continue
  timeout 30 mpirun --oversubscribe -np $np "$dir/dist_agree" checks || { echo "FAIL dist_agree np=$np (exit $?)"; fail=1; }
done
exit $fail
