#!/usr/bin/env bash
# scripts/spn-ab.sh, the in-process A/B timing of two spn.c versions, still
# builds and runs: HEAD against the working tree, 2 rounds per order (a
# smoke test of the tool, not a timing; the same code reads ~1.00 there).
# Run from the repository root. Under `make asan` (SANITIZED=1) the tool
# still times optimised code: it builds and links against build/, not
# BUILD.
set -u
if ! git rev-parse --verify -q HEAD > /dev/null 2>&1; then
  echo "ok   skipped: not a git checkout with a HEAD"
  exit 0
fi
out=$(OMP_WAIT_POLICY=PASSIVE scripts/spn-ab.sh HEAD 2 2>&1); rc=$?
if [ "$rc" -eq 0 ] && [ "$(echo "$out" | grep -Ec '^  (obj|bg): new/old time [0-9.]+ ')" -eq 2 ]; then
  echo "ok   spn-ab.sh HEAD: both SPNs timed in both orders"
  exit 0
fi
echo "FAIL spn-ab.sh HEAD (exit $rc):"
echo "$out"
exit 1
