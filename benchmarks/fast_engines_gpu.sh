#!/usr/bin/env bash
# The fast torch engines at full size on a GPU (docs/performance.md). From the repo root, with the wheels the
# GPU image lacks in .whl/ (gpu_env.sh):
#   OUT=/some/dir bash benchmarks/fast_engines_gpu.sh [tests] [PRECISIONS BATCHES MODE]
set -euo pipefail
OUT=${OUT:-outputs/fast_engines_gpu}
CKPT=${CKPT:-/tmp/higgs-v2-3b-random}
source benchmarks/gpu_env.sh
if [ "${1:-}" = tests ]; then
    shift
    python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
fi
random_checkpoint
NAME=decode_step_$(echo "${1:-bf16,int8}_${3:-default}" | tr ',' '-')
python3 benchmarks/decode_step_gpu.py "$CKPT" "$OUT/$NAME.json" --precisions "${1:-bf16,int8}" \
    --batches "${2:-1,64}" --mode "${3:-default}" --profile 2>&1 | tee "$OUT/$NAME.txt"
