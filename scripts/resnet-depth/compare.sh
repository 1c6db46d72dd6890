#!/usr/bin/env bash
# ResNet18 against ResNet34, in this project and in PyTorch, on one recipe and one split:
# 250 training and 80 test images a class of Imagenette, 64 px, RandomResizedCrop + flip,
# Adam 1e-3, batch 64, 5 epochs, seeds 0 and 1 (or $SEEDS). Usage:
# [SEEDS="2 3"] scripts/resnet-depth/compare.sh OUT (needs .torch, the PyTorch venv of
# ../shared/bench/torch_baseline.py). A finished run (report.json, a RESULT line) is kept,
# so a later call with more seeds adds to the same OUT. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: compare.sh OUT}
data=$out/data
.torch/bin/python scripts/resnet-depth/make_split.py ../shared/datasets/imagenette-224 "$data" 250 80
cargo build --release -p cnn-cli
for seed in ${SEEDS:-0 1}; do
  for arch in resnet18 resnet34; do
    [ -f "$out/ours-$arch-$seed/report.json" ] || ./target/release/cnn train --data "$data" --arch "$arch" --image-size 64 --epochs 5 \
      --lr 1e-3 --optimizer adam --batch-size 64 --augment crop-flip --seed "$seed" \
      --progress plain --log-every 0 --out "$out/ours-$arch-$seed" > "$out/ours-$arch-$seed.log" 2>&1
    grep -qs "^RESULT" "$out/torch-$arch-$seed.log" || .torch/bin/python scripts/resnet-depth/torch_train.py "$data" "$arch" --size 64 --epochs 5 \
      --lr 1e-3 --batch 64 --seed "$seed" > "$out/torch-$arch-$seed.log" 2>&1
  done
done
