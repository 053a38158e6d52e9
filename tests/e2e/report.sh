#!/usr/bin/env bash
# End-to-end test of the offline analysis: supair_report (table, --csv,
# --sort, --target, unreadable and missing runs, --follow on a run that is
# still training) and the analysis/*.py plot scripts, on tiny SuPAIR runs
# that differ only in lr. Run from the repository root with $BUILD set.
set -u
BUILD=${BUILD:-build}
BIN=$BUILD/bin
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
export OMP_NUM_THREADS=1 MPLBACKEND=Agg
T=$(mktemp -d /tmp/e2e_report.XXXXXX)
bg_pid=
cleanup() {
  [ -n "$bg_pid" ] && kill "$bg_pid" 2>/dev/null && wait "$bg_pid" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
start=$(date +%s)

# Small model: the test is about reporting, not learning.
SMALL=(--set batch_size=8 --set eval_n=32 --set supair.lstm_units=32 --set supair.obj_reps=2
       --set supair.obj_leaves=4 --set supair.obj_sums=4 --set metrics_flush_every=1)
train() { # DIR STEPS EVAL_EVERY LR [more train options]
  local dir=$1 steps=$2 every=$3 lr=$4; shift 4
  mpirun -np 2 --oversubscribe "$BIN/supair_dist" train --model supair --data "$T/s.h5" --run "$dir" \
    --steps "$steps" --set eval_every="$every" --set lr="$lr" "${SMALL[@]}" "$@"
}

"$BIN/supair_data" scenes --out "$T/s.h5" --train 256 --test 64 --seed 1 > "$T/data.log" 2>&1 ||
  { cat "$T/data.log"; fail "supair_data scenes"; }
train "$T/a" 12 4 0.001 > "$T/a.log" 2>&1 || { tail -20 "$T/a.log"; fail "training run a"; }
train "$T/b" 12 4 0.003 > "$T/b.log" 2>&1 || { tail -20 "$T/b.log"; fail "training run b"; }
echo "two runs trained ($(( $(date +%s) - start )) s)"

# --help
"$BIN/supair_report" --help | grep -q -- "--follow" || fail "--help does not document --follow"

# 1. The table: one row per run, the differing key lr, not the equal ones.
"$BIN/supair_report" "$T/a" "$T/b" > "$T/table.txt" 2> "$T/table.err" || fail "report exit $?"
cat "$T/table.txt"
[ "$(wc -l < "$T/table.txt")" -eq 3 ] || fail "expected a header and 2 rows"
head -1 "$T/table.txt" | grep -qw lr || fail "no lr column"
for k in batch_size seed eval_every supair.lstm_units data; do
  head -1 "$T/table.txt" | grep -qw -- "$k" && fail "column $k shown though equal in both runs"
done
for k in steps count_acc.best count_acc.last iou.best elbo.last 't(count_acc>=0.9)' samples_s comm_share; do
  head -1 "$T/table.txt" | grep -qF -- "$k" || fail "no column $k"
done
grep -q "$T/a .* 0.001 " "$T/table.txt" || fail "run a row lacks lr 0.001"
grep -q "$T/b .* 0.003 " "$T/table.txt" || fail "run b row lacks lr 0.003"
[ -s "$T/table.err" ] && { cat "$T/table.err"; fail "warnings on readable runs"; }

# 2. --csv parses, with the right values; --sort orders.
"$BIN/supair_report" "$T/a" "$T/b" --csv --sort lr > "$T/lr.csv" || fail "csv exit"
"$BIN/supair_report" "$T/b" "$T/a" --csv --sort count_acc > "$T/acc.csv" || fail "csv sort exit"
"$BIN/supair_report" "$T/a" "$T/b" --csv --sort comm_share > "$T/comm.csv" || fail "csv sort exit"
"$PY" - "$T" <<'EOF' || fail "csv checks"
import csv, sys, math
T = sys.argv[1]
rows = list(csv.DictReader(open(f"{T}/lr.csv")))
assert len(rows) == 2, rows
assert [r["lr"] for r in rows] == ["0.001", "0.003"], [r["lr"] for r in rows]
for r in rows:
    assert r["model"] == "supair", r
    assert int(r["steps"]) == 12, r["steps"]
    acc_b, acc_l = float(r["count_acc.best"]), float(r["count_acc.last"])
    assert 0 <= acc_l <= acc_b <= 1, (acc_b, acc_l)
    assert float(r["samples_s"]) > 0, r["samples_s"]
    assert 0 <= float(r["comm_share"]) < 1, r["comm_share"]
    assert float(r["time_s"]) > 0
acc = [float(r["count_acc.best"]) for r in csv.DictReader(open(f"{T}/acc.csv"))]
assert acc == sorted(acc, reverse=True), f"--sort count_acc not descending: {acc}"
comm = [float(r["comm_share"]) for r in csv.DictReader(open(f"{T}/comm.csv"))]
assert comm == sorted(comm), f"--sort comm_share not ascending: {comm}"
print("csv ok: lr", [r["lr"] for r in rows], "acc desc", acc, "comm asc", comm)
EOF
"$BIN/supair_report" "$T/a" --sort nosuchcol > /dev/null 2> "$T/sort.err"; rc=$?
[ "$rc" -eq 1 ] && grep -q nosuchcol "$T/sort.err" || fail "unknown sort key: exit $rc, $(cat "$T/sort.err")"

# A reachable target: --target iou=0 is met at the first evaluation (step 4).
"$BIN/supair_report" "$T/a" --csv --target iou=0 > "$T/target.csv" || fail "target exit"
"$PY" - "$T" <<'EOF' || fail "target column"
import csv, sys
r = list(csv.DictReader(open(f"{sys.argv[1]}/target.csv")))[0]
v = float(r["t(iou>=0)"])
assert 0 < v <= float(r["time_s"]), (v, r["time_s"])
print("time to iou>=0:", v, "s")
EOF

# 3. Missing and unreadable runs.
"$BIN/supair_report" "$T/a" "$T/nope" > /dev/null 2> "$T/missing.err"; rc=$?
[ "$rc" -eq 1 ] && grep -q "$T/nope" "$T/missing.err" || fail "missing dir: exit $rc, $(cat "$T/missing.err")"
mkdir -p "$T/bad" && echo "not hdf5" > "$T/bad/metrics.h5"
"$BIN/supair_report" "$T/a" "$T/bad" > "$T/bad.txt" 2> "$T/bad.err"; rc=$?
[ "$rc" -eq 0 ] || fail "one readable run + one unreadable: exit $rc"
grep -q "warning: .*$T/bad" "$T/bad.err" || fail "no warning naming the bad run: $(cat "$T/bad.err")"
[ "$(wc -l < "$T/bad.err")" -eq 1 ] || fail "warning is not one line"
grep -q "^$T/bad " "$T/bad.txt" || fail "no row for the bad run"
"$BIN/supair_report" "$T/bad" > /dev/null 2>&1; rc=$?
[ "$rc" -eq 1 ] || fail "only unreadable runs: exit $rc, expected 1"

# A sweep root stands for its trial directories.
mkdir -p "$T/sweep" && ln -s "$T/a" "$T/sweep/trial_0" && ln -s "$T/b" "$T/sweep/trial_1"
[ "$("$BIN/supair_report" "$T/sweep" --csv | wc -l)" -eq 3 ] || fail "sweep root not expanded"

# 4. --follow on a run that is still training: growing steps, then idle exit.
# The run is bounded by time, not steps, so it lasts long enough to be
# followed however fast the machine is.
train "$T/c" 1000000 20 0.001 --time-limit 8 > "$T/c.log" 2>&1 &
bg_pid=$!
for _ in $(seq 300); do [ -f "$T/c/metrics.h5" ] && break; sleep 0.1; done
[ -f "$T/c/metrics.h5" ] || fail "run c never created metrics.h5"
f0=$(date +%s)
timeout 80 "$BIN/supair_report" "$T/c" --follow --interval 0.5 --follow-idle 4 --csv \
  > "$T/follow.csv" 2> "$T/follow.err"; rc=$?
f1=$(date +%s)
wait "$bg_pid" || fail "run c failed: $(tail -5 "$T/c.log")"
bg_pid=
"$PY" -c "import h5py,sys; f=h5py.File(sys.argv[1],'r',libver='latest',swmr=True); print(int(f['train']['step'][-1]))" \
  "$T/c/metrics.h5" > "$T/c/final_step"
[ "$rc" -eq 0 ] || fail "--follow exit $rc (124 = did not stop when idle); $(cat "$T/follow.err")"
"$PY" - "$T" <<'EOF' || fail "--follow output"
import sys
steps = []
for line in open(f"{sys.argv[1]}/follow.csv"):
    f = line.rstrip("\n").split(",")
    if f[0].endswith("/c") and len(f) > 2 and f[2]:
        steps.append(int(f[2]))
d = sorted(set(steps))
print("follow tables:", len(steps), "distinct step counts:", d)
assert len(d) >= 3, f"steps did not grow while following: {steps}"
assert steps == sorted(steps), f"steps went backwards: {steps}"
final = int(open(f"{sys.argv[1]}/c/final_step").read())
assert steps[-1] == final, f"last table shows step {steps[-1]}, the run ended at {final}"
EOF
echo "--follow stopped $((f1 - f0)) s after start"

# 5. Plot scripts write non-empty PNGs.
mpirun -np 2 --oversubscribe "$BIN/supair_dist" eval --run "$T/a" --dump 8 > "$T/eval.log" 2>&1 ||
  { tail -10 "$T/eval.log"; fail "eval --dump"; }
"$PY" - "$T/speech.h5" <<'EOF' || fail "synthetic speech file"
import sys, h5py, numpy as np
t = np.arange(3200) / 16000.0
mean = 0.5 * np.sin(2 * np.pi * 180 * t) * np.exp(-4 * t)
with h5py.File(sys.argv[1], "w") as f:
    f["x"] = (mean + 0.05 * np.random.default_rng(1).standard_normal(t.size)).astype("f4")
    f["mean"] = mean.astype("f4")
    f["std"] = np.full(t.size, 0.05, "f4")
    f.attrs["sample_rate"] = 16000
EOF
analysis/learning_curves.py "$T/a" "$T/b" --out "$T/lc.png" || fail "learning_curves.py"
analysis/accuracy_vs_time.py "$T/a" "$T/b" --out "$T/at.png" || fail "accuracy_vs_time.py"
analysis/scene_grid.py "$T/a/dump.h5" --out "$T/sg.png" || fail "scene_grid.py"
analysis/speech_segment.py "$T/speech.h5" --out "$T/sp.png" || fail "speech_segment.py"
for p in lc at sg sp; do
  [ -s "$T/$p.png" ] || fail "$p.png empty"
  [ "$(head -c 4 "$T/$p.png" | tail -c 3)" = PNG ] || fail "$p.png is not a PNG"
done
analysis/learning_curves.py "$T/nope" --out "$T/x.png" > /dev/null 2>&1 && fail "plot of a missing dir succeeded"
echo "report e2e passed in $(( $(date +%s) - start )) s"
