#!/usr/bin/env bash
# metrics.h5 as users read it: an h5py process (SWMR mode) follows a writer
# process appending rows and sees the file grow; after the writer is killed
# with SIGKILL, every flushed row is still readable.
set -u
writer=${BUILD:-build}/tests-mpi/metrics_writer
py=""
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import h5py' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "FAIL: no python3 with h5py (apt-get install python3-h5py)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# 1. Follow a live writer: 40 rows, 40 ms apart.
"$writer" "$tmp/m.h5" 40 40 &
wp=$!
"$py" - "$tmp/m.h5" <<'PY' || fail=1
import sys, time, os
import h5py
path = sys.argv[1]
deadline = time.time() + 20
while not os.path.exists(path) and time.time() < deadline:
    time.sleep(0.01)
time.sleep(0.1)
f = h5py.File(path, "r", swmr=True)
step, loss = f["train/step"], f["train/loss"]
sizes = []
while time.time() < deadline:
    step.refresh(); loss.refresh()
    n = min(step.shape[0], loss.shape[0])
    if not sizes or sizes[-1] != n:
        sizes.append(n)
    if n >= 40:
        break
    time.sleep(0.03)
step.refresh(); loss.refresh()
s, l = step[:40], loss[:40]
ok = len(sizes) >= 4 and sizes[-1] == 40
ok = ok and all(int(s[i]) == i + 1 and abs(l[i] - 1.0 / (i + 1)) == 0 for i in range(40))
ok = ok and f.attrs["model"] == "srnn" and list(f["train"].keys()) == ["step", "time_s", "loss"]
print("reader saw sizes", sizes, "dtype", step.dtype, "->", "ok" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
wait $wp || { echo "FAIL: writer exit $?"; fail=1; }

# 2. Writer killed with SIGKILL after 25 flushed rows.
"$writer" "$tmp/k.h5" 100 1 25
rc=$?
[ $rc -eq 137 ] || { echo "FAIL: writer was not killed (exit $rc)"; fail=1; }
"$py" - "$tmp/k.h5" <<'PY' || fail=1
import sys
import h5py
f = h5py.File(sys.argv[1], "r", swmr=True)
n = f["train/step"].shape[0]
ok = n == 25 and int(f["train/step"][24]) == 25 and f["train/loss"][24] == 1.0 / 25
print("after kill -9:", n, "rows readable ->", "ok" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
exit $fail
