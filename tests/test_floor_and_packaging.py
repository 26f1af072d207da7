"""The bandwidth floor's weight count, the tiny checkpoint's determinism, and the product's imports."""

import hashlib
import math
import subprocess
import sys

import torch

from higgs_bench.backends.pytorch.quantize import weight_bytes
from higgs_bench.bench import floor
from higgs_bench.bench.floor import weights_read_per_frame
from higgs_bench.model.config import SKIP
from higgs_bench.model.random_checkpoint import make_checkpoint, make_config


def test_an_audio_step_reads_the_released_models_2_84_billion_weights():
    # attention + audio MLP + audio norms of 28 layers, final norm, audio head, 8 embedding rows
    # (Boson's HiggsAudioModel on the meta device, counted per module)
    assert params(weights_read_per_frame(make_config("higgs-v2-3b"))) == 2_843_986_944


def params(shapes):
    return sum(math.prod(shape) for shape in shapes.values())


def test_quantised_variants_read_fewer_bytes_per_frame():
    cfg = make_config("higgs-v2-3b")
    read = weights_read_per_frame(cfg)
    bf16, int8, int4 = (weight_bytes(read, cfg, 2, kind) for kind in (None, "int8", "int4"))
    assert bf16 == 2 * 2_843_986_944
    # the audio head (25.2M) and norms stay in bf16; attention and MLP (2.82B) shrink
    assert 0.50 < int8 / bf16 < 0.51 and 0.27 < int4 / bf16 < 0.28  # int4: half a byte + group scales


def test_fast_forward_layers_are_not_read_by_audio_steps():
    dual = make_config("tiny", "boson")
    skipping = make_config("tiny", "boson", fast_forward_layers=(1,))
    assert skipping.layer_kinds[1] == SKIP
    h, q, kv, mlp = dual.hidden_size, dual.num_heads * dual.head_dim, dual.num_kv_heads * dual.head_dim, dual.intermediate_size
    one_layer = h * (2 * q + 2 * kv) + 3 * h * mlp + 2 * h  # attention, one MLP, two norms
    assert params(weights_read_per_frame(dual)) - params(weights_read_per_frame(skipping)) == one_layer


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_checkpoints_are_deterministic(tmp_path):
    make_checkpoint(tmp_path / "a", layout="boson", seed=3)
    make_checkpoint(tmp_path / "b", layout="boson", seed=3)
    make_checkpoint(tmp_path / "c", layout="boson", seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["model.safetensors"] != digest(tmp_path / "c")["model.safetensors"]


def test_importing_the_product_loads_none_of_transformers_tensorrt_llm_torchao():
    # transformers (4.57, for HuBERT) loads only when a clip is encoded; tensorrt_llm only for backend=trtllm;
    # torchao only when a quantised variant is built
    code = ("import sys, higgs_bench.tts, higgs_bench.bench.runner, higgs_bench.report, higgs_bench.wer, "
            "higgs_bench.__main__; print(sorted(m for m in ('transformers', 'tensorrt_llm', 'torchao') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_floor_takes_the_fastest_of_several_timed_copies(monkeypatch):
    """One slow copy (a GPU not yet at its clocks, say) must not lower the floor and flatter a ratio."""
    copies = []
    seconds = floor.copy_seconds(torch.device("cpu"), lambda: copies.append(1), repeats=5, warmup=2)
    assert len(seconds) == 5 and len(copies) == 7 and all(s >= 0 for s in seconds)
    monkeypatch.setattr(floor, "copy_seconds", lambda device, copy, repeats: [0.004, 0.001, 0.002])
    floor.copy_bandwidth.cache_clear()
    try:
        assert floor.copy_bandwidth(torch.device("cpu"), gigabytes=0.001) == 2e6 / 0.001
    finally:
        floor.copy_bandwidth.cache_clear()
