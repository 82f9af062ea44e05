#!/usr/bin/env bash
# Train the shipped weights: one run per model of configs/shared.yaml, the shared comparison recipe
# (for the scatter weights, configs/scatter/<model>.yaml); then
# configs/<model>_long.yaml where there is one; then <that>_stage2.yaml, _stage3.yaml ... where
# there are (each stage starts from the one before's best checkpoint); then export the last
# stage's best.ckpt to checkpoints/ as safetensors + model card.
#   bash tools/train_pretrained.sh [model ...]            # the .m2nist weights (default: all below)
#   TAG=scatter bash tools/train_pretrained.sh [model ...]  # the .scatter weights, configs/scatter/
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${TAG:-m2nist}
if [ "$tag" = m2nist ]; then configs=configs; runs=checkpoints/runs; else configs=configs/$tag; runs=checkpoints/runs/$tag; fi
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(vgg4_dilated vgg4_dilated_context vgg4_strided vgg4_maxpool vgg4_stitch unet_small vgg7_dilated unet cascade10_depthwise
          resnet18_strided cascade10 vgg4_large_kernel vgg7_dilated_context resnet18_dilated resnet18_dilated_degrid
          vgg7_dilated_skip_context vgg7_dilated_skip16_context)
fi
for m in "${models[@]}"; do
  echo "== $m ($tag)"
  if [ "$tag" = m2nist ]; then
    python train.py fit --config configs/shared.yaml --model.arch "$m" --trainer.enable_progress_bar false
  else
    python train.py fit --config "$configs/$m.yaml" --trainer.enable_progress_bar false
  fi
  shared="$runs/$m/results.json"
  # a longer recipe (<model>_long.yaml, then its own stages) replaces the shared one's weights;
  # the card keeps the shared recipe's run for the model table
  base=$m; extra=()
  if [ -f "$configs/${m}_long.yaml" ]; then
    base=${m}_long; extra=(--shared-recipe "$shared")
    python train.py fit --config "$configs/$base.yaml" --trainer.enable_progress_bar false
  fi
  run="$runs/$base"
  for stage in 2 3 4 5; do
    if [ -f "$configs/${base}_stage$stage.yaml" ]; then
      python train.py fit --config "$configs/${base}_stage$stage.yaml" --trainer.enable_progress_bar false
      run="$runs/${base}_stage$stage"
    fi
  done
  python -m zoo export "$run/best.ckpt" checkpoints/ --tag "$tag" "${extra[@]}"
done
