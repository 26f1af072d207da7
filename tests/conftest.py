from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():  # Triton kernels (backends/pytorch/one_row.py) run in Triton's interpreter,
    os.environ.setdefault("TRITON_INTERPRET", "1")  # which Triton reads once, so before anything imports it

from hydra import compose, initialize_config_dir  # noqa: E402

from higgs_bench.bench.config import register
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer
from higgs_bench.model.random_checkpoint import make_checkpoint

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def compose_cfg():
    """The main job's config composed from conf/ with the given overrides, as Hydra composes it."""
    register()

    def make(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return make


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny-hf"
    make_checkpoint(out, layout="hf", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_boson_eos3(tmp_path_factory):
    """tiny_boson with codebook 3's EOS boosted instead of codebook 0's: the first EOS comes from k > 0."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny-boson-eos3"
    make_checkpoint(out, layout="boson", seed=0, eos_codebook=3)
    return out


@pytest.fixture(scope="session")
def tiny_trtllm(tmp_path_factory):
    """A head size TensorRT-LLM's decode kernels take (tiny's 16 is not among them)."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny-trtllm"
    make_checkpoint(out, layout="hf", seed=0, shape="tiny-trtllm")
    return out


@pytest.fixture(scope="session")
def tiny_boson(tmp_path_factory):
    """Same seed and shape as tiny_hf, so the same weights in Boson's layout."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny-boson"
    make_checkpoint(out, layout="boson", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_fast_forward(tmp_path_factory):
    """Boson layout, adapter dual_ffn_fast_forward, layer 1 fast-forward."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny-ff"
    make_checkpoint(out, layout="boson", seed=1, fast_forward_layers=(1,))
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_hf):
    return load_tokenizer(tiny_hf)


@pytest.fixture(scope="session")
def reference_codes():
    return np.random.default_rng(7).integers(0, 1024, size=(8, 23))


@pytest.fixture(scope="session")
def prompts(tokenizer, reference_codes):
    """Three requests of different lengths; the last is voice cloning (audio frames in the prompt)."""
    return [
        encode_messages(tokenizer, tts_messages("Hello world.")),
        encode_messages(tokenizer, tts_messages("The quick brown fox jumps over the lazy dog, twice.", scene=None)),
        encode_messages(tokenizer, tts_messages("Now say this in my voice.", reference_text="This is how I sound.",
                                                reference_codes=reference_codes)),
    ]


@pytest.fixture(scope="session")
def prompt_inputs(prompts, tiny_hf):
    from higgs_bench.model.config import read_config

    cfg = read_config(tiny_hf)
    return [expand_prompt(p, cfg) for p in prompts]


SPOKEN = "This is how I sound."


@pytest.fixture(scope="session")
def spoken_clip(tmp_path_factory):
    """Real speech from espeak-ng (22.05 kHz mono WAV) saying SPOKEN."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SPOKEN], check=True)
    return path
