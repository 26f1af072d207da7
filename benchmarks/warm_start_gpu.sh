#!/usr/bin/env bash
# Where a compiled engine's start goes, cold and warm, at full size on a GPU (docs/performance.md). From the
# repo root, with the wheels the GPU image lacks in .whl/ (gpu_env.sh):
#   OUT=/some/dir bash benchmarks/warm_start_gpu.sh PRECISION [warm_start_gpu.py options]
set -euo pipefail
OUT=${OUT:-outputs/warm_start_gpu}
CKPT=${CKPT:-/tmp/higgs-v2-3b-random}
source benchmarks/gpu_env.sh
compile_bytecode
random_checkpoint
python3 benchmarks/warm_start_gpu.py "$CKPT" "$OUT/warm_start_$1.json" --precisions "$1" "${@:2}" 2>&1 \
    | tee "$OUT/warm_start_$1.txt"
