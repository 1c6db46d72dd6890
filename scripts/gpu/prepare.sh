#!/usr/bin/env bash
# Prepares the GPU check on this (GPU-less) machine: builds the CUDA binaries, packs them
# with the data they train on into target/cuda-bin/ (under the device tool's 64 MiB), which
# the device tool then carries:
#   run  carry=["target/cuda-bin"]  command="bash target/cuda-bin/device.sh"  timeout_s=420
#
#   scripts/gpu/prepare.sh            # --features cuda (candle's kernels: the baseline)
#   FEATURES=cudnn scripts/gpu/prepare.sh   # also a cuDNN build, timed beside it
#
# Built: `gpu_check` (example of cnn-train: CUDA-vs-CPU parity and the timed training step)
# and `cnn` (the CLI, for one epoch of each network), each stripped and xz-packed; a slice of
# the shared Imagenette (64 images a class, its JPEGs as they are); cifar10-mini and the
# photos for check.sh; the PyTorch anchor `torch_gpu_baseline.py` as it is.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(../shared/cuda/toolchain.sh)"     # CUDA 13.0 from PyPI wheels (~20 min first build)
target=${CUDA_TARGET_DIR:-target/cuda}
out=target/cuda-bin
rm -rf "$out" && mkdir -p "$out"
build() {   # build FEATURE SUFFIX: both binaries with cnn-train's/cnn-cli's FEATURE
  CARGO_TARGET_DIR=$target nice -n 19 cargo build --release -j "${JOBS:-1}" \
    -p cnn-train -p cnn-cli --features "cnn-train/$1,cnn-cli/$1" --example gpu_check --bin cnn
  for b in examples/gpu_check cnn; do
    cp "$target/release/$b" "$out/$(basename "$b")$2"
    strip "$out/$(basename "$b")$2" && xz -T2 -f "$out/$(basename "$b")$2"
  done
}
build cuda ""
for f in ${FEATURES:-}; do build "$f" "-$f"; done
slice=$(mktemp -d)/imagenette-slice
mkdir -p "$slice" && cp ../shared/datasets/imagenette-224/LABELS.tsv "$slice/"
for c in ../shared/datasets/imagenette-224/n*/; do
  mkdir -p "$slice/$(basename "$c")"
  ls "$c" | sort | sed -n 1,64p | while read -r f; do cp "$c/$f" "$slice/$(basename "$c")/"; done
done
tar cf "$out/data.tar" -C "$(dirname "$slice")" imagenette-slice -C "$PWD/../shared/datasets" cifar10-mini -C .. photos
cp scripts/gpu/device.sh scripts/gpu/check.sh ../shared/bench/torch_gpu_baseline.py "$out/"
git rev-parse --short HEAD > "$out/COMMIT"
git status --porcelain | grep -q . && echo "(uncommitted changes)" >> "$out/COMMIT"
du -sh "$out"; ls -l "$out"
