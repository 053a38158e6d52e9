#!/usr/bin/env bash
# The same command at -np 1 and -np 4 (same global batch and seed) is the same
# experiment: parameters after 20 steps agree to 1e-5 relative.
source tests/mpi/trainer_common.bash
run 1 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np1" --steps 20 "${FAST[@]}"
run 4 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np4" --steps 20 "${FAST[@]}"
$H5TOOL params-close "$WORK/np1/ckpt/step_00000020.h5" "$WORK/np4/ckpt/step_00000020.h5" 1e-5
[ "$($H5TOOL attr "$WORK/np4/ckpt/step_00000020.h5" world_size)" = 4 ]
