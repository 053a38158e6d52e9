#!/usr/bin/env bash
# Speech converters end to end: speech-demo synthesises a one-minute corpus
# (espeak-ng, festival, sox) and converts it; the same seed gives identical
# bytes; `timit` on the kept tree gives the same datasets; `blizzard` converts
# the same audio as one stream corpus; bad inputs exit 1 with one line naming
# the file or directory and leave no output behind.
# Run from the repository root with BUILD set (scripts/run-tests.sh does).
# Uses build/bin/supair_data when it has the speech commands, else a tiny
# driver over the same library entry point (sp_speech_cli).
set -u
BUILD=${BUILD:-build}
BIN=$BUILD/bin/supair_data
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
pass() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }

if [ -x "$BIN" ] && "$BIN" timit --help > /dev/null 2>&1; then
  CLI=$BIN
else
  [ -f "$BUILD/lib/libsupair.a" ] || { echo "FAIL: $BUILD/lib/libsupair.a not built"; exit 1; }
  echo "note: $BIN has no speech commands yet; using a driver over sp_speech_cli"
  cat > "$T/drv.c" <<'EOF'
#include <stdio.h>
#include "supair/speech.h"
int main(int argc, char **argv) {
    sp_error err;
    sp_error_clear(&err);
    if (argc < 2) return 1;
    int rc = sp_speech_cli(argv[1], argc - 1, argv + 1, &err);
    if (rc) fprintf(stderr, "supair_data %s: %s\n", argv[1], err.msg);
    return rc;
}
EOF
  mpicc -std=c11 -Iinclude "$T/drv.c" "$BUILD/lib/libsupair.a" \
    $(pkg-config --libs hdf5 sndfile samplerate zlib) \
    $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm -fopenmp -o "$T/supair_data" \
    || { echo "FAIL: cannot build the driver"; exit 1; }
  CLI=$T/supair_data
fi

# --- help
for c in timit blizzard speech-demo; do
  if "$CLI" $c --help | grep -q -- "--out"; then pass "$c --help"; else bad "$c --help"; fi
done

# --- speech-demo: synthesis, TIMIT tree, conversion
start=$(date +%s.%N)
if "$CLI" speech-demo --out "$T/demo.h5" --minutes 1 --streams 4 --work "$T/work" > "$T/demo.out" 2> "$T/demo.err"; then
  pass "speech-demo --minutes 1 ($(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
else
  bad "speech-demo"; cat "$T/demo.err"
fi
n=$(find "$T/work/timit" -name '*.WAV' | wc -l)
head -c 7 "$(find "$T/work/timit/TRAIN" -name '*.WAV' | head -1)" | grep -q NIST_1A \
  && [ -d "$T/work/timit/TEST/DR1" ] && [ "$n" -ge 8 ] && pass "TIMIT-shaped SPHERE tree ($n files)" \
  || bad "TIMIT-shaped tree"
hdr=$(h5dump -H "$T/demo.h5" 2>&1)
if echo "$hdr" | grep -A3 'DATASET "x"' | grep -Eq "SIMPLE \{ \( [0-9]+, 40, 200 \)" \
   && echo "$hdr" | grep -q 'DATASET "frames"' && echo "$hdr" | grep -q 'DATASET "offsets"' \
   && echo "$hdr" | grep -q 'DATASET "u0"' && echo "$hdr" | grep -q 'ATTRIBUTE "std"'; then
  pass "demo file schema"
else
  bad "demo file schema"; echo "$hdr" | head -60
fi
h5dump -a /corpus "$T/demo.h5" | grep -q '"speech-demo"' && pass "corpus attribute" || bad "corpus attribute"
grep -q "train: [0-9]* rows" "$T/demo.out" && pass "summary printed" || bad "summary: $(cat "$T/demo.out")"

# Same seed, another (temporary) work dir: identical bytes.
"$CLI" speech-demo --out "$T/demo2.h5" --minutes 1 --streams 4 > /dev/null 2>&1
cmp -s "$T/demo.h5" "$T/demo2.h5" && pass "speech-demo deterministic (identical bytes)" || bad "speech-demo not deterministic"

# --- timit on the kept tree: the same datasets as the demo file
if "$CLI" timit --root "$T/work/timit" --out "$T/t.h5" --streams 4 > /dev/null 2>&1 \
   && h5diff "$T/demo.h5" "$T/t.h5" /train/x /train/x > /dev/null \
   && h5diff "$T/demo.h5" "$T/t.h5" /test/frames /test/frames > /dev/null \
   && h5diff "$T/demo.h5" "$T/t.h5" /valid/u0 /valid/u0 > /dev/null; then
  pass "timit on the tree = speech-demo datasets"
else
  bad "timit on the tree"
fi
"$CLI" timit --root "$T/work/timit" --out "$T/t7.h5" --streams 4 --seed 7 > /dev/null 2>&1 \
  && ! h5diff -q "$T/t.h5" "$T/t7.h5" /valid/files /valid/files > /dev/null 2>&1 \
  && pass "--seed changes the validation files" || bad "--seed"

# --- blizzard on the same audio (2 streams)
if "$CLI" blizzard --root "$T/work/timit" --out "$T/b.h5" --streams 2 > "$T/b.out" 2>&1; then
  h=$(h5dump -H "$T/b.h5")
  if echo "$h" | grep -q 'GROUP "test"' && echo "$h" | grep -A3 'DATASET "x"' | grep -Eq "\( [0-9]+, 40, 200 \)" \
     && h5dump -a /corpus "$T/b.h5" | grep -q '"blizzard"'; then
    pass "blizzard schema"
  else
    bad "blizzard schema"
  fi
else
  bad "blizzard"; cat "$T/b.out"
fi

# --- bad inputs: exit 1, one line naming the culprit, no output
expect_fail() { # name, culprit, command...
  local name=$1 culprit=$2; shift 2
  local err
  err=$("$@" 2>&1 > /dev/null); local rc=$?
  if [ $rc -eq 1 ] && [ "$(echo "$err" | wc -l)" -eq 1 ] && echo "$err" | grep -qF -- "$culprit" \
     && ! ls "$T"/out.h5* > /dev/null 2>&1; then
    pass "$name -> exit 1: $err"
  else
    bad "$name (exit $rc): $err"
  fi
}
mkdir -p "$T/empty" "$T/junk/sub"
expect_fail "timit on an empty dir" "$T/empty" "$CLI" timit --root "$T/empty" --out "$T/out.h5"
expect_fail "timit root without TRAIN/TEST" "$T/junk" "$CLI" timit --root "$T/junk" --out "$T/out.h5"
expect_fail "blizzard on an empty dir" "$T/empty" "$CLI" blizzard --root "$T/empty" --out "$T/out.h5"
echo "not audio" > "$T/junk/sub/fake.wav"
expect_fail "non-audio file" "fake.wav" "$CLI" blizzard --root "$T/junk" --out "$T/out.h5"
rm "$T/junk/sub/fake.wav"
sox -D -R -n -r 16000 -b 16 -c 2 "$T/junk/sub/stereo.wav" synth 30 sine 200 sine 300
expect_fail "stereo without --mix" "stereo.wav" "$CLI" blizzard --root "$T/junk" --out "$T/out.h5" --streams 2
"$CLI" blizzard --root "$T/junk" --out "$T/mix.h5" --streams 2 --mix > /dev/null 2>&1 \
  && pass "stereo with --mix" || bad "stereo with --mix"
sox -D -R -n -r 16000 -b 24 -c 1 "$T/junk/sub/deep.wav" synth 1 sine 200
expect_fail "24-bit samples" "deep.wav" "$CLI" blizzard --root "$T/junk" --out "$T/out.h5" --mix
expect_fail "unknown flag" "--bogus" "$CLI" timit --root "$T/work/timit" --out "$T/out.h5" --bogus
expect_fail "missing --out" "--out" "$CLI" timit --root "$T/work/timit"
expect_fail "bad --minutes" "--minutes" "$CLI" speech-demo --out "$T/out.h5" --minutes -3
echo "TRAIN/DR1/NOPE/S1.WAV" > "$T/v.lst"
expect_fail "bad --valid-list entry" "v.lst:1" "$CLI" timit --root "$T/work/timit" --out "$T/out.h5" --valid-list "$T/v.lst"

exit $fail
