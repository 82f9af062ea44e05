#!/usr/bin/env bash
# Train the shipped weights: one run per configs/<model>.yaml (then configs/<model>_stage2.yaml,
# _stage3.yaml ... where there are: each stage starts from the one before's best
# checkpoint), then export the last stage's best.ckpt to checkpoints/ as safetensors + model card.
#   bash tools/train_pretrained.sh [model ...]   (default: all below)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(vgg4_strided vgg4_maxpool vgg4_stitch cascade10 cascade10_depthwise resnet18_strided
          vgg4_large_kernel resnet18_dilated resnet18_dilated_degrid unet_small unet vgg7_dilated vgg7_dilated_context)
fi
for m in "${models[@]}"; do
  echo "== $m"
  python train.py fit --config "configs/$m.yaml" --trainer.enable_progress_bar false
  run="checkpoints/runs/$m"
  for stage in 2 3 4 5; do
    if [ -f "configs/${m}_stage$stage.yaml" ]; then
      python train.py fit --config "configs/${m}_stage$stage.yaml" --trainer.enable_progress_bar false
      run="checkpoints/runs/${m}_stage$stage"
    fi
  done
  python -m zoo export "$run/best.ckpt" checkpoints/
done
