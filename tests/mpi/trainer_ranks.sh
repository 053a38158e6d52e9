#!/usr/bin/env bash
# The same command at -np 1 and -np 4 (same global batch and seed) is the same
# experiment: parameters after 20 steps agree to 1e-5 relative, with the
# node-shared parameters (grad_reduce=node, the default) as one group of 4
# and as two groups of 2 (the slices then allreduced across groups).
# At 2 ranks both gradient paths give the same bits (a sum of two floats has
# one rounding whichever rank adds them); only the logged norm's double sum
# is split differently. 3 ranks in groups of 2 cannot cut
# the buffer alike: the run says so and falls back to the allreduce.
source tests/mpi/trainer_common.bash
run 1 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np1" --steps 20 "${FAST[@]}"
run 4 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np4" --steps 20 "${FAST[@]}" > "$WORK/np4.out" 2>&1
grep -q "node-shared parameters, 1 group(s) of 4 ranks" "$WORK/np4.out" || { cat "$WORK/np4.out"; exit 1; }
$H5TOOL params-close "$WORK/np1/ckpt/step_00000020.h5" "$WORK/np4/ckpt/step_00000020.h5" 1e-5
[ "$($H5TOOL attr "$WORK/np4/ckpt/step_00000020.h5" world_size)" = 4 ]
run 4 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np4g2" --steps 20 "${FAST[@]}" \
  --set grad_group=2 > "$WORK/np4g2.out" 2>&1
grep -q "2 group(s) of 2 ranks" "$WORK/np4g2.out" || { cat "$WORK/np4g2.out"; exit 1; }
$H5TOOL params-close "$WORK/np1/ckpt/step_00000020.h5" "$WORK/np4g2/ckpt/step_00000020.h5" 1e-5

run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np2node" --steps 12 "${FAST[@]}" --set ckpt_every=4
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np2mpi" --steps 12 "${FAST[@]}" --set grad_reduce=mpi
$H5TOOL params-equal "$WORK/np2node/ckpt/step_00000012.h5" "$WORK/np2mpi/ckpt/step_00000012.h5"
$H5TOOL metrics-equal "$WORK/np2node/metrics.h5" "$WORK/np2mpi/metrics.h5" loss,elbo,count
# Clipping (norm, then value) on the slices: the norm's double sum is split
# differently, so the clip factor may differ in its last bits.
CLIP=(--set clip_norm=50 --set clip_value=0.05)
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np2nodec" --steps 8 "${FAST[@]}" "${CLIP[@]}"
run 2 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np2mpic" --steps 8 "${FAST[@]}" "${CLIP[@]}" --set grad_reduce=mpi
$H5TOOL params-close "$WORK/np2mpic/ckpt/step_00000008.h5" "$WORK/np2nodec/ckpt/step_00000008.h5" 1e-6
! $H5TOOL params-close "$WORK/np2node/ckpt/step_00000008.h5" "$WORK/np2nodec/ckpt/step_00000008.h5" 1e-4 2>/dev/null \
  || { echo "clipping changed nothing"; exit 1; }

run 3 train --model supair --data "$WORK/scenes.h5" --run "$WORK/np3" --steps 6 "${FAST[@]}" \
  --set batch_size=12 --set grad_group=2 > "$WORK/np3.out" 2>&1
grep -q "falls back to the allreduce" "$WORK/np3.out" || { cat "$WORK/np3.out"; exit 1; }
[ -f "$WORK/np3/ckpt/step_00000006.h5" ]
