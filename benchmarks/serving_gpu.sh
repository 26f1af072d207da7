#!/usr/bin/env bash
# scenario=serving at full size on a GPU (docs/serving.md). From the repo root, with the wheels the GPU image
# lacks in .whl/ (gpu_env.sh):
#   OUT=/some/dir bash benchmarks/serving_gpu.sh PRECISIONS [more overrides]
# Records, summary and plots come back in $OUT/records.tar.gz (sweep_gpu.sh).
SCENARIO=serving exec bash "$(dirname "$0")/sweep_gpu.sh" "${1:-bf16}" select.objective=max_streams "${@:2}"
