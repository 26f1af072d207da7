#!/usr/bin/env bash
# scenario=serving at full size on a GPU (docs/serving.md). From the repo root, with the wheels the GPU image
# lacks in .whl/ (gpu_env.sh):
#   OUT=/some/dir bash benchmarks/serving_gpu.sh PRECISIONS [more overrides]
set -euo pipefail
OUT=${OUT:-outputs/serving_gpu}
CKPT=${CKPT:-/tmp/higgs-v2-3b-random}
source benchmarks/gpu_env.sh
[ -f "$CKPT/config.json" ] && [ -f "$CKPT-codec/config.json" ] || python3 -m higgs_bench.tiny --shape higgs-v2-3b --dtype bf16 --device cuda \
    --out "$CKPT" --codec-out "$CKPT-codec"
SWEEP=/tmp/serving_sweep_$(date +%s)
python3 -m higgs_bench -m model=higgs-v2-3b model.path="$CKPT" model.codec_path="$CKPT-codec" \
    precision="${1:-bf16}" scenario=serving asr=none select.objective=max_streams \
    build.engines_dir=/tmp/engines hydra.sweep.dir="$SWEEP" "${@:2}" 2>&1 | tee "$OUT/sweep.txt"
# the records, summary and plots (not the WAVs) come back flat
for record in "$SWEEP"/*/benchmark_report.json; do
    cp "$record" "$OUT/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["variant"])' "$record").json"
done
cp "$SWEEP"/summary.json "$SWEEP"/*.png "$OUT/" 2>/dev/null || true
