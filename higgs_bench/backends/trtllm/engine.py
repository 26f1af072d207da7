"""Checkpoint -> TensorRT-LLM engine directory, with what the runtime needs to read it back.

Written against TensorRT-LLM 1.2.x: `PretrainedModel.from_checkpoint(..., preprocess_weights_hook=)`
(tensorrt_llm/models/modeling_utils.py), `BuildConfig.from_dict`, `build` and `Engine.save`
(tensorrt_llm/builder.py), `preprocess_weights_for_mixed_gemm` (tensorrt_llm/quantization/functional.py).

An engine directory holds:
    checkpoint/   the converted TensorRT-LLM checkpoint (convert.py)
    engine/       config.json + rank0.engine, as TensorRT-LLM writes them
    timing.cache  TensorRT's timing cache of this build
    higgs.json    the Higgs model config, the runtime's KV-cache limits and the audio routing built
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from higgs_bench.backends.trtllm import require_tensorrt_llm
from higgs_bench.backends.trtllm.build_config import EngineSettings, build_config_dict
from higgs_bench.backends.trtllm.calibrate import calibrate_checkpoint
from higgs_bench.backends.trtllm.convert import convert, needs_calibration
from higgs_bench.backends.trtllm.names import Quant
from higgs_bench.errors import CheckpointError
from higgs_bench.files import write_json
from higgs_bench.model.config import HiggsConfig, read_config

HIGGS_RECORD = "higgs.json"


def build_engine(model_dir: Path, out_dir: Path, settings: EngineSettings, device="cuda") -> Path:
    """Convert (calibrating first for fp8), then build; returns the engine folder."""
    require_tensorrt_llm()
    from tensorrt_llm.builder import BuildConfig, build
    from tensorrt_llm.models.modeling_utils import PretrainedConfig

    from higgs_bench.backends.trtllm.network import HiggsAudioForCausalLM  # registers the architecture

    shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)  # left by an earlier build that failed
    amax = calibrate_checkpoint(model_dir, device=device) if needs_calibration(settings.quant) else None
    checkpoint = convert(model_dir, out_dir / "checkpoint", settings.quant, tp=1, amax=amax)
    config = PretrainedConfig.from_json_file(str(checkpoint / "config.json"))
    config.audio_routing = settings.audio_routing
    model = HiggsAudioForCausalLM.from_checkpoint(str(checkpoint), config=config,
                                                  preprocess_weights_hook=mixed_gemm_layout(settings.quant))
    build(model, BuildConfig.from_dict(build_config_dict(settings, out_dir))).save(str(out_dir / "engine"))
    write_json(out_dir / HIGGS_RECORD, {"model": read_config(model_dir).to_dict(), "build": settings.build_config,
                                        "kv_limits": settings.runtime, "audio_routing": config.audio_routing})
    return out_dir / "engine"


def mixed_gemm_layout(quant: Quant):
    """Weight-only values are written in their logical [in, out] layout; TensorRT-LLM's weight-only GEMM
    reads an interleaved one. Its own converter does this inside quantisation, and skips tensors that are
    already int8, so the reordering is applied here, before `preprocess_weights`."""
    if quant.weights not in ("int8", "int4"):
        return None
    from tensorrt_llm.quantization.functional import preprocess_weights_for_mixed_gemm

    kind = torch.int8 if quant.weights == "int8" else torch.quint4x2
    activation = torch.float16 if quant.dtype == "fp16" else torch.bfloat16

    def hook(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: preprocess_weights_for_mixed_gemm(t, kind, activation)
                if name.endswith(".weight") and t.dtype == torch.int8 else t for name, t in weights.items()}

    return hook


def read_engine_record(engine_dir: Path) -> dict:
    path = Path(engine_dir) / HIGGS_RECORD
    if not path.is_file() or not (Path(engine_dir) / "engine" / "rank0.engine").is_file():
        raise CheckpointError(f"{engine_dir} is not a higgs-bench engine (no {HIGGS_RECORD} or engine/rank0.engine); "
                              "build it with python -m higgs_bench backend=trtllm")
    record = json.loads(path.read_text())
    record["model"] = HiggsConfig(**{**record["model"], "layer_kinds": tuple(record["model"]["layer_kinds"])})
    return record
