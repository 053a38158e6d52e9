# Shared by the trainer MPI tests (sourced, not run): a small scenes file and
# a fast SuPAIR configuration, built once per test run under $WORK.
set -euo pipefail
BUILD=${BUILD:-build}
BIN=$BUILD/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
export OMP_NUM_THREADS=1 SUPAIR_PROGRESS=lines
WORK=$(mktemp -d /tmp/supair_test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PY=/usr/bin/python3   # Debian's python: h5py and numpy are Debian packages
H5TOOL="$PY tests/mpi/h5tool.py"
"$BIN/supair_data" scenes --out "$WORK/scenes.h5" --train 1024 --test 128 --seed 11 >/dev/null 2>&1
# Global batch 16 divides by 1, 2 and 4 ranks; evaluation small and rare.
FAST=(--set batch_size=16 --set eval_every=0 --set eval_n=64 --set log_every=5 --set checksum_every=5 --set metrics_flush_every=2)
run() { # run NP ARGS...: mpirun with NP ranks
  local np=$1; shift
  mpirun --oversubscribe -np "$np" "$BIN/supair_dist" "$@"
}
