#!/usr/bin/env bash
# A sweep of precisions at full size on a GPU, random 3B weights (docs/performance.md). From the repo root, with
# the wheels the GPU image lacks in .whl/ (gpu_env.sh):
#   OUT=/some/dir [SCENARIO=standard] [RESUME_FROM=records.tar.gz] bash benchmarks/sweep_gpu.sh PRECISIONS [overrides]
# Stops itself before the device tool's 10-minute limit (SWEEP_LIMIT_S) and returns what it measured as
# $OUT/records.tar.gz (records, summary, plots; no WAVs); RESUME_FROM=that file finishes the sweep next time.
set -euo pipefail
OUT=${OUT:-outputs/sweep_gpu}
CKPT=${CKPT:-/tmp/higgs-v2-3b-random}
SCENARIO=${SCENARIO:-standard}
SWEEP=${SWEEP:-/tmp/sweep_${SCENARIO}_$(date +%s)}  # a fresh folder: RESUME_FROM brings back what it needs
source benchmarks/gpu_env.sh
random_checkpoint codec
RESUME=()
if [ -n "${RESUME_FROM:-}" ]; then
    mkdir -p "$SWEEP" && tar -xzf "$RESUME_FROM" -C "$SWEEP" && RESUME=(resume=true)
fi
status=0
timeout -s INT "${SWEEP_LIMIT_S:-540}" python3 -m higgs_bench -m model=higgs-v2-3b model.path="$CKPT" \
    model.codec_path="$CKPT-codec" precision="$1" scenario="$SCENARIO" asr=none build.engines_dir=/tmp/engines \
    hydra.sweep.dir="$SWEEP" "${RESUME[@]}" "${@:2}" 2>&1 | tee -a "$OUT/sweep.txt" || status=$?
tar -czf "$OUT/records.tar.gz" -C "$SWEEP" --exclude='*.wav' .
cp "$SWEEP"/summary.json "$SWEEP"/*.png "$OUT/" 2>/dev/null || true
exit $status
