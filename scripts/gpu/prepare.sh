#!/usr/bin/env bash
# Prepares the GPU check on this (GPU-less) machine: builds `cnn` with CUDA, packs it with
# cifar10-mini and the photos into target/cuda-bin/, which the device tool carries over
# (`carry: ["target/cuda-bin"]`, command `bash target/cuda-bin/check.sh`).
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(../shared/cuda/toolchain.sh)"          # CUDA 13.0 compiler from PyPI wheels (~20 min first build)
CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-target/cuda} cargo build --release -p cnn-cli --features cuda
out=target/cuda-bin
mkdir -p "$out"
cp "${CUDA_TARGET_DIR:-target/cuda}/release/cnn" "$out/cnn" && strip "$out/cnn" && xz -T2 -f "$out/cnn"
tar cf "$out/data.tar" -C ../shared/datasets cifar10-mini -C .. photos
cp scripts/gpu/check.sh "$out/check.sh"
du -sh "$out"
