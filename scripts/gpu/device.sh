#!/usr/bin/env bash
# The GPU check, run ON the device machine from the folder scripts/gpu/prepare.sh filled
# (carry target/cuda-bin; command `bash target/cuda-bin/device.sh`; < 5 minutes):
#  1. card, driver, CUDA/cuDNN libraries, the python3 with CUDA torch and its TF32 settings;
#  2. each packed gpu_check build (cuda; cudnn where packed): CUDA against the CPU on the
#     same weights and batch (PARITY lines), then the training step of the four networks at
#     224 px, batch 64 (OURS lines);
#  3. ../shared/bench/torch_gpu_baseline.py as it is, on the same card (RESULT torch_gpu lines);
#  4. the issue's `RESULT gpu ...` line per network (and build), joined from 2 and 3;
#  5. one epoch of each network with `cnn train --device cuda` on the Imagenette slice
#     (images/s and the memory lines); run folders' metrics copied to $OUT.
# Every section has its own time limit, so one that hangs leaves the others their time.
# A dry run without a GPU (the script's own logic; binaries built without CUDA):
#   GPU_CHECK_ARGS="--cpu --batch 4 --size 96 --steps 2 --rounds 3" DEVICE=cpu SIZE=96 device.sh
set -uo pipefail
cd "$(dirname "$0")"
T0=$SECONDS
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
section() { echo; echo "=== $* (t=$((SECONDS - T0)) s)"; }

section "card and driver"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv
nvidia-smi | grep -m1 "CUDA Version" || true
cat COMMIT 2>/dev/null

section "python and torch"
PY=""
for p in python3 /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python3 /opt/venv/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c "import torch, torchvision; assert torch.cuda.is_available()" 2>/dev/null; then
    PY=$p; break
  fi
done
if [ -n "$PY" ]; then
  echo "python: $(command -v "$PY") ($("$PY" --version 2>&1))"
  "$PY" -c "import torch, torchvision; b = torch.backends
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', b.cudnn.version(), 'torchvision', torchvision.__version__)
print('tf32: cudnn.allow_tf32 =', b.cudnn.allow_tf32, '(convolutions), cuda.matmul.allow_tf32 =', b.cuda.matmul.allow_tf32, '(matmuls); cudnn.benchmark =', b.cudnn.benchmark)"
  NV=$("$PY" -c "import nvidia, os; print(' '.join(nvidia.__path__))" 2>/dev/null)
else
  echo "python: none with CUDA torch found (tried python3 and the usual prefixes)"; NV=""
fi

section "libraries"
# The binaries need libcuda.so.1 (driver), cuBLAS/cuBLASLt 13, cuRAND 10, cudart 13, NVRTC 13 (and cuDNN 9
# for the cudnn build): from torch's nvidia wheels where they are, else anywhere on the disk.
find_lib() {   # the first $1 under torch's nvidia wheels, else anywhere on this disk (20 s at most)
  local f=""
  [ -n "$NV" ] && f=$(find $NV -name "$1" 2>/dev/null | head -1)
  [ -n "$f" ] || f=$(timeout 20 find / -xdev -name "$1" -not -path '/proc/*' 2>/dev/null | head -1)
  echo "$f"
}
libdirs=""
for l in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13 libcudnn.so.9; do
  f=$(find_lib "$l")
  echo "$l: ${f:-not found}"
  [ -n "$f" ] && libdirs="$libdirs:$(dirname "$f")"
done
export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for x in *.xz; do xz -dkf "$x"; chmod +x "${x%.xz}"; done
tar xf data.tar
for b in gpu_check*; do case $b in *.xz) continue;; esac
  missing=$(ldd "./$b" | grep "not found"); echo "ldd $b: ${missing:-every library found}"
done

for b in gpu_check gpu_check-cudnn; do
  [ -x "./$b" ] || continue
  section "$b: CUDA against the CPU, then the training step (AdamW, 224 px, batch 64)"
  timeout 150 "./$b" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/$b.txt"
  echo "exit: ${PIPESTATUS[0]}"
done

section "PyTorch anchor: torch_gpu_baseline.py all --precision fp32 (as it is)"
if [ -n "$PY" ]; then
  timeout 100 "$PY" torch_gpu_baseline.py all --precision fp32 2>&1 | tee "$OUT/torch.txt"
else
  echo "skipped: no python3 with CUDA torch" | tee "$OUT/torch.txt"
fi

section "side by side (peak_mb: MiB, the pool's high-water mark / max_memory_allocated)"
for b in gpu_check gpu_check-cudnn; do
  [ -f "$OUT/$b.txt" ] || continue
  cat "$OUT/$b.txt" "$OUT/torch.txt" | awk -v build="${b#gpu_check}" '
    function fields(   i, kv) { delete v; for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    /^RESULT torch_gpu/ { fields(); a = v["arch"]; gsub("_", "-", a); ti[a] = v["img_per_s"]; tp[a] = v["peak_mb"] }
    /^OURS/ { fields(); a = v["arch"]; oi[a] = v["img_per_s"]; op[a] = v["peak_mb"]; order[++n] = a }
    END { for (k = 1; k <= n; k++) { a = order[k]
      t = (a in ti) ? ti[a] : "na"; r = (t != "na" && t > 0) ? sprintf("%.2f", oi[a] / t) : "na"
      printf "RESULT gpu arch=%s precision=fp32 ours_img_s=%s torch_img_s=%s ratio=%s ours_peak_mb=%s torch_peak_mb=%s%s\n",
        a, oi[a], t, r, op[a], (a in tp) ? tp[a] : "na", (build == "" ? "" : " build=" substr(build, 2)) } }'
done | tee "$OUT/results.txt"

section "cnn train --device cuda: one epoch of each network on the Imagenette slice (640 images, 80/20)"
cnn=./cnn; [ -x ./cnn-cudnn ] && cnn=./cnn-cudnn
for arch in alexnet alexnet-d2l resnet18 resnet34; do
  echo "--- $cnn $arch"
  timeout 60 "$cnn" train --data imagenette-slice --arch "$arch" --epochs 1 --batch-size 64 \
    --image-size "${SIZE:-224}" --device "${DEVICE:-cuda}" --cache memory --progress plain --log-every 2 \
    --out "runs/$arch" 2>&1 | tail -12
  mkdir -p "$OUT/train-$arch" && cp runs/"$arch"/metrics.* runs/"$arch"/train.log "$OUT/train-$arch/" 2>/dev/null
done
section "done"
