#!/usr/bin/env bash
# supair_dist sweep: 4 ranks in groups of 2 over a 4-line plan; each trial
# gets its own run directory and overrides; a bad plan line fails only its
# own trial.
source tests/mpi/trainer_common.bash
printf 'lr=0.001\nlr=0.002 seed=2\n\nlr=0.0005  # comment\n' > "$WORK/plan.txt"
run 4 sweep --plan "$WORK/plan.txt" --ranks-per-trial 2 --model supair --data "$WORK/scenes.h5" \
  --run "$WORK/sw" --steps 6 "${FAST[@]}" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt"; exit 1; }
grep "sweep:" "$WORK/out.txt"
for i in 0 1 2 3; do
  [ -f "$WORK/sw/trial_$i/ckpt/step_00000006.h5" ] || { echo "trial $i has no final checkpoint"; exit 1; }
  [ "$($H5TOOL rows "$WORK/sw/trial_$i/metrics.h5" train)" = 6 ]
  [ "$($H5TOOL attr "$WORK/sw/trial_$i/metrics.h5" world_size)" = 2 ]
  grep -q "done: step 6" "$WORK/sw/trial_$i/log.txt"
done
grep -q "^lr = 0.002 " "$WORK/sw/trial_1/config.cfg"
grep -q "^seed = 2 " "$WORK/sw/trial_1/config.cfg"
grep -q "^lr = 0.001 " "$WORK/sw/trial_2/config.cfg"   # blank line: defaults of the command
grep -q "^lr = 0.0005 " "$WORK/sw/trial_3/config.cfg"
! grep -q "only a comment" "$WORK/out.txt"   # a trailing comment is not a comment-only line
# A comment-only line is still a trial (line i = array index i), with a warning first.
printf '# a header\nlr=0.001\n' > "$WORK/plan5.txt"
run 2 sweep --plan "$WORK/plan5.txt" --ranks-per-trial 1 --model supair --data "$WORK/scenes.h5" \
  --run "$WORK/sw5" --steps 2 "${FAST[@]}" > "$WORK/out5.txt" 2>&1 || { cat "$WORK/out5.txt"; exit 1; }
grep -q "1 line of .*plan5.txt (the first: line 0) holds only a comment" "$WORK/out5.txt" ||
  { cat "$WORK/out5.txt"; exit 1; }
[ -f "$WORK/sw5/trial_0/ckpt/step_00000002.h5" ] && [ -f "$WORK/sw5/trial_1/ckpt/step_00000002.h5" ]
# A bad line fails its trial (exit 1 overall) while the others finish.
printf 'lr=0.001\nno_such_key=3\n' > "$WORK/plan2.txt"
set +e
run 4 sweep --plan "$WORK/plan2.txt" --ranks-per-trial 2 --model supair --data "$WORK/scenes.h5" \
  --run "$WORK/sw2" --steps 4 "${FAST[@]}" > "$WORK/out2.txt" 2>&1; rc=$?
set -e
[ "$rc" -eq 1 ] || { echo "exit $rc, expected 1"; cat "$WORK/out2.txt"; exit 1; }
grep -q "trial 1 .*unknown key 'no_such_key'" "$WORK/out2.txt"
[ -f "$WORK/sw2/trial_0/ckpt/step_00000004.h5" ]
[ ! -e "$WORK/sw2/trial_1" ]
# Ranks not divisible by the group size: an input error.
set +e
run 4 sweep --plan "$WORK/plan.txt" --ranks-per-trial 3 --model supair --data "$WORK/scenes.h5" \
  --run "$WORK/sw3" --steps 4 > "$WORK/out3.txt" 2>&1; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "ranks-per-trial 3 does not divide the 4 ranks" "$WORK/out3.txt"
# --time-limit applies to each trial: the second trial a group runs gets its
# own budget (the first trial's time-limit stop must not end it at once).
printf 'seed=1\nseed=2\nseed=3\nseed=4\n' > "$WORK/plan3.txt"
run 2 sweep --plan "$WORK/plan3.txt" --ranks-per-trial 1 --model supair --data "$WORK/scenes.h5" \
  --run "$WORK/sw4" --steps 100000 --time-limit 4 "${FAST[@]}" > "$WORK/out4.txt" 2>&1 || { cat "$WORK/out4.txt"; exit 1; }
for i in 0 1 2 3; do
  n=$($H5TOOL rows "$WORK/sw4/trial_$i/metrics.h5" train)
  echo "trial $i (time limit 4 s): $n steps"
  [ "$n" -ge 3 ] || { echo "trial $i stopped early"; exit 1; }
done
