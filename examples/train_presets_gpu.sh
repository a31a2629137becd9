#!/usr/bin/env bash
# Trains the three shipped presets at once on one GPU with JAX (no TensorFlow needed), each stage ending
# at its time budget, and packs each preset folder as OUT/<name>.tgz next to the training logs.
#
#   bash examples/train_presets_gpu.sh OUT   # unpack with: tar xzf OUT/<name>.tgz -C keras_ldm/presets
#
# The shipped weights come from exactly this script (see each preset's README.md for the card and times).
set -u
out=$(realpath -m "${1:-outputs/presets_gpu}")
work=${WORK_DIR:-/tmp/keras_ldm_presets_gpu}
mkdir -p "$out" "$work/presets"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # keras_ldm from this checkout, installed or not
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.25 PYTHONUNBUFFERED=1
common="--examples 100000 --log-every 500"
photo="python3 examples/train_photo_presets.py $common --work-dir $work/photo"

python3 examples/train_shapes_t2i.py $common --work-dir "$work/shapes" --out "$work/presets/shapes_t2i" \
  --ae-steps 100000 --ae-batch-size 64 --ae-time-budget 90 \
  --ldm-steps 200000 --batch-size 128 --ldm-time-budget 270 >"$out/shapes_t2i.log" 2>&1 &
(
  $photo --ae-steps 100000 --ae-batch-size 64 --ae-time-budget 140 >"$out/photo_autoencoder.log" 2>&1 || exit 1
  $photo --task sr --ldm-steps 200000 --batch-size 128 --ldm-time-budget 210 \
    --out "$work/presets/photo_sr4x" >"$out/photo_sr4x.log" 2>&1 &
  $photo --task inpaint --examples 60000 --ldm-steps 200000 --batch-size 64 --ldm-time-budget 210 \
    --out "$work/presets/photo_inpaint" >"$out/photo_inpaint.log" 2>&1 &
  wait
) &
wait
for name in shapes_t2i photo_sr4x photo_inpaint; do
  [ -d "$work/presets/$name" ] && tar czf "$out/$name.tgz" -C "$work/presets" "$name"
done
tail -n 3 "$out"/*.log
