#!/usr/bin/env bash
# GPU check of the whole CUDA path (run ON the device machine, from the folder prepare.sh filled):
# trains ResNet18 and AlexNet-d2l (lr 1e-4 and 5e-3) with `cnn train --device cuda`, then predict and
# eval; copies each run's metrics and log to $OUT.
set -uo pipefail
cd "$(dirname "$0")"
lib=$(dirname "$(find / -name 'libcublas.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)")
for l in curand cudart; do
  d=$(dirname "$(find / -name "lib$l.so.1*" -not -path '*/proc/*' 2>/dev/null | head -1)"); lib="$lib:$d"
done
export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
xz -dkf cnn.xz && chmod +x cnn
tar xf data.tar
R=/tmp/runs; rm -rf $R; mkdir -p $R
run() { echo "== $*"; /usr/bin/time -v ./cnn "$@" 2>&1 | grep -v -E "^\s+(Minor|Major|Volun|Invol|Swaps|File|Socket|Signals|Page|Average|Exit|Percent|System|User)" ; }
run train --data cifar10-mini --arch resnet18 --image-size 32 --epochs 2 --batch-size 64 --lr 1e-3 --device cuda --progress plain --out $R/r18 --cache memory
run train --data cifar10-mini --arch alexnet-d2l --image-size 224 --epochs 2 --batch-size 64 --lr 1e-4 --device cuda --progress plain --out $R/alex --cache memory --log-every 20
run train --data cifar10-mini --arch alexnet-d2l --image-size 224 --epochs 1 --batch-size 64 --lr 5e-3 --device cuda --progress plain --out $R/alex005 --cache memory --log-every 20
run predict --device cuda --checkpoint $R/r18 --checkpoint $R/alex --top-k 3 photos/chelsea.png photos/rocket.jpg
run eval --device cuda --checkpoint $R/alex
for r in r18 alex alex005; do mkdir -p "$OUT/$r"; cp $R/$r/*.json $R/$r/metrics.* $R/$r/train.log "$OUT/$r/" 2>/dev/null; done
