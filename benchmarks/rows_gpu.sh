#!/usr/bin/env bash
# Quantised products of several rows (backends/pytorch/one_byte_rows.py, int4_rows.py) at full size on a GPU, with
# and without the kernel (docs/performance.md). From the repo root, with the wheels the GPU image lacks in .whl/
# (gpu_env.sh):
#   OUT=/some/dir bash benchmarks/rows_gpu.sh int8|fp8|int4
# Writes rows_probe_KIND.json (blocks per product and row count) and decode_step_rows_KIND_on.json, _off.json
# (decode steps of 4, 16 and 64 rows); a device call returns at most 8 files, so the consoles go to one log.
set -euo pipefail
OUT=${OUT:-outputs/rows_gpu}
CKPT=${CKPT:-/tmp/higgs-v2-3b-random}
source benchmarks/gpu_env.sh
random_checkpoint
(cd benchmarks && python3 rows_probe_gpu.py "$OUT/rows_probe_$1.json" --weights "$1") 2>&1 | tee -a "$OUT/rows_$1.log"
for kernel in on off; do
    python3 benchmarks/decode_step_gpu.py "$CKPT" "$OUT/decode_step_rows_$1_$kernel.json" --precisions "$1" \
        --batches 4,16,64 "--$1-rows-kernel" "$kernel" 2>&1 | tee -a "$OUT/rows_$1.log"
done
