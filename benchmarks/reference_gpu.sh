#!/usr/bin/env bash
# The reference backend measured at full size on a GPU (docs/performance.md). From the repo root:
#   OUT=/some/dir bash benchmarks/reference_gpu.sh [probe] [sweep] [port]      (all three by default)
set -euo pipefail
OUT=${OUT:-outputs/reference_gpu}
CKPT=${CKPT:-/tmp/higgs-v2-3b-random}
STEPS=${*:-probe sweep port}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
if [[ $STEPS == *probe* ]]; then
    python3 benchmarks/gpu_probe.py | tee "$OUT/probe.txt"
fi
if [[ $STEPS == *sweep* ]]; then
    [ -f "$CKPT/config.json" ] || python3 -m higgs_bench.tiny --shape higgs-v2-3b --dtype bf16 --device cuda \
        --out "$CKPT" --codec-out "$CKPT-codec"
    python3 -m higgs_bench -m model=higgs-v2-3b model.path="$CKPT" model.codec_path="$CKPT-codec" precision=bf16 \
        scenario=standard scenario.quality_max_frames=300 asr=none engine.max_batch_size=64 \
        backend.cuda_graph=true,false hydra.sweep.dir=/tmp/reference_sweep
    cp /tmp/reference_sweep/summary.json /tmp/reference_sweep/batch_scaling.png "$OUT/"
    for job in /tmp/reference_sweep/*/; do
        cp "$job/benchmark_report.json" "$OUT/report_$(basename "$job" | tr -c 'a-zA-Z0-9_.\n-' '_').json"
    done
fi
if [[ $STEPS == *port* ]]; then
    python3 benchmarks/transformers_port_gpu.py "$OUT/transformers_port.json" || echo "transformers port not measured"
fi
