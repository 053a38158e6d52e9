#!/usr/bin/env bash
# A/B timing of src/spn/spn.c at a git revision against the working tree, in
# one process (bench/ab_spn.c): both versions are compiled with their public
# symbols renamed and alternate call by call on the same data, 1 thread.
#   scripts/spn-ab.sh [REV [ROUNDS]]     (defaults: HEAD, 100)
# Each SPN runs in both orders (old first, then new first) and the script
# prints new/old = sqrt(ratio1 / ratio2), which cancels the bias of the slot
# measured second. REV must have sp_spn_logp_occluded; both versions are
# compiled against the working tree's include/.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-HEAD}
ROUNDS=${2:-100}
# The library for everything but spn.c: an optimised build's, never a
# sanitised one's (the test suite's BUILD may be build-asan).
BUILD=${SPN_AB_BUILD:-build}
ARCH=${ARCH:-x86-64-v3}
make -s "$BUILD/lib/libsupair.a"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if ! git show "$REV:src/spn/spn.c" > "$dir/old.c" 2>/dev/null; then
  echo "spn-ab: no src/spn/spn.c at revision '$REV'" >&2
  exit 1
fi
PKGS="hdf5 sndfile samplerate zlib"
CFLAGS="-std=c11 -D_GNU_SOURCE -O3 -g -march=$ARCH -fopenmp -Wall -Wextra -Werror -Wno-unknown-pragmas -Iinclude $(pkg-config --cflags $PKGS) $(pkg-config --cflags openblas 2>/dev/null || true)"
LIBS="$(pkg-config --libs $PKGS) $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm"
syms=$(grep -o 'sp_spn_[a-z_]*(' include/supair/spn.h | tr -d '(' | sort -u)
rename() { for s in $syms; do printf ' -D%s=%s_%s' "$s" "$1" "$s"; done; }
build() { # $1 = file for slot A, $2 = file for slot B, $3 = output
  mpicc $CFLAGS $(rename A) -c "$1" -o "$dir/a.o"
  mpicc $CFLAGS $(rename B) -c "$2" -o "$dir/b.o"
  mpicc $CFLAGS -c bench/ab_spn.c -o "$dir/drv.o"
  mpicc -fopenmp "$dir/drv.o" "$dir/a.o" "$dir/b.o" "$BUILD/lib/libsupair.a" $LIBS -o "$3"
}
build "$dir/old.c" src/spn/spn.c "$dir/ab_on"
build src/spn/spn.c "$dir/old.c" "$dir/ab_no"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE}
echo "src/spn/spn.c: working tree (new) against $REV (old), 1 thread"
for spn in obj bg; do
  r1=$("$dir/ab_on" "$spn" "$ROUNDS")   # A = old, B = new
  r2=$("$dir/ab_no" "$spn" "$ROUNDS")   # A = new, B = old
  echo "  old first: $r1"
  echo "  new first: $r2"
  q1=${r1##* }; q2=${r2##* }
  awk -v a="$q1" -v b="$q2" -v s="$spn" 'BEGIN { printf "  %s: new/old time %.3f (the second slot'"'"'s bias %.3f)\n", s, sqrt(a / b), sqrt(a * b) }'
done
