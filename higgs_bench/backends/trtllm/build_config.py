"""The Hydra engine and precision settings -> TensorRT-LLM's BuildConfig and PluginConfig fields, checked
before any build (tensorrt_llm/builder.py BuildConfig and tensorrt_llm/plugin/plugin.py PluginConfig, 1.2.x).
Plain dicts: `tensorrt_llm.BuildConfig.from_dict(...)` takes them where TensorRT-LLM is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from higgs_bench.backends.trtllm.names import Quant
from higgs_bench.errors import ConfigError
from higgs_bench.model import dtypes
from higgs_bench.model.config import HiggsConfig

TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class EngineSettings:
    quant: Quant
    build_config: dict
    plugin_config: dict
    runtime: dict  # KV-cache limits, given to the runtime rather than baked into the engine
    audio_routing: str  # written into the network's config (network.py)


def engine_settings(engine, precision, model: HiggsConfig) -> EngineSettings:
    """engine, precision: the `engine` and `precision` config groups; raises ConfigError naming the setting."""
    quant = quant_for(precision)
    check_limits(engine, model)
    plugin = {
        "gpt_attention_plugin": plugin_dtype(engine.gpt_attention_plugin, precision.dtype),
        # FP8 GEMMs are TensorRT's own; the gemm plugin serves fp16/bf16 and weight-only
        "gemm_plugin": None if quant.weights == "fp8" else plugin_dtype(engine.gemm_plugin, precision.dtype),
        "remove_input_padding": True,
        "context_fmha": True,
        "use_paged_context_fmha": False,
        "tokens_per_block": engine.tokens_per_block,
        "use_fused_mlp": True,
        "multiple_profiles": True,  # a small-token profile for decode steps
    }
    build = {
        "max_batch_size": engine.max_batch_size, "max_input_len": engine.max_input_len,
        "max_seq_len": engine.max_seq_len, "max_num_tokens": engine.max_num_tokens, "max_beam_width": 1,
        "kv_cache_type": "CONTINUOUS",
        "gather_context_logits": False, "gather_generation_logits": False, "strongly_typed": True,
    }
    runtime = {"kv_cache_free_gpu_memory_fraction": engine.kv_cache_free_gpu_memory_fraction,
               "kv_cache_max_tokens": engine.kv_cache_max_tokens}
    return EngineSettings(quant, build, plugin, runtime, engine.audio_routing)


def build_config_dict(settings: EngineSettings, out_dir: Path) -> dict:
    """What `BuildConfig.from_dict` takes: the limits, the plugins, and TensorRT's timing cache written into the
    engine folder (BuildConfig's default `output_timing_cache='model.cache'` lands in the current directory)."""
    return {**settings.build_config, "plugin_config": settings.plugin_config,
            "output_timing_cache": str(Path(out_dir) / TIMING_CACHE)}


def quant_for(precision) -> Quant:
    if precision.dtype not in dtypes.TENSORRT:
        raise ConfigError(f"precision.dtype={precision.dtype}: TensorRT-LLM engines run fp16 or bf16; "
                          "fp32 is the torch reference's (backend=torch)")
    if precision.weights == "int4_awq":
        raise ConfigError("precision=int4_awq needs an AWQ search (nvidia-modelopt), which the converter does not "
                          "run; use precision=int4 (per-channel weight-only) or precision=int8")
    if precision.weights not in (None, "int8", "int4", "fp8"):
        raise ConfigError(f"precision.weights={precision.weights!r}; choose int8, int4, fp8 or none")
    if precision.kv_cache not in (None, "fp8"):
        raise ConfigError(f"precision.kv_cache={precision.kv_cache!r}: the converter calibrates an fp8 KV cache only")
    return Quant(precision.dtype, precision.weights, precision.kv_cache)


def plugin_dtype(setting: str | None, dtype: str) -> str | None:
    return dtypes.TENSORRT[dtype] if setting == "auto" else setting


def check_limits(engine, model: HiggsConfig) -> None:
    if engine.paged_kv_cache:
        raise ConfigError("engine.paged_kv_cache=true: higgs-bench's TensorRT-LLM runtime runs static batches over "
                          "one contiguous KV cache (docs/trtllm.md); set engine.paged_kv_cache=false")
    if engine.audio_routing not in ("gather", "select"):
        raise ConfigError(f"engine.audio_routing={engine.audio_routing!r}; choose gather or select")
    if engine.gpt_attention_plugin is None:
        raise ConfigError("engine.gpt_attention_plugin=null: packed inputs and the KV cache need it; use auto")
    for key in ("max_batch_size", "max_input_len", "max_num_tokens"):
        if engine[key] < 1:
            raise ConfigError(f"engine.{key}={engine[key]} must be >= 1")
    if engine.max_seq_len <= engine.max_input_len:
        raise ConfigError(f"engine.max_seq_len={engine.max_seq_len} must exceed engine.max_input_len="
                          f"{engine.max_input_len}: the frames are generated after the prompt")
    if engine.max_seq_len > model.max_position_embeddings:
        raise ConfigError(f"engine.max_seq_len={engine.max_seq_len} exceeds the model's "
                          f"{model.max_position_embeddings} positions")
    if engine.max_num_tokens < engine.max_input_len:
        raise ConfigError(f"engine.max_num_tokens={engine.max_num_tokens} < engine.max_input_len="
                          f"{engine.max_input_len}: a whole prompt must fit in one context step")
    if engine.tokens_per_block < 1 or engine.tokens_per_block & (engine.tokens_per_block - 1):
        raise ConfigError(f"engine.tokens_per_block={engine.tokens_per_block} must be a power of two")
    fraction = engine.kv_cache_free_gpu_memory_fraction
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(f"engine.kv_cache_free_gpu_memory_fraction={fraction} must lie in (0, 1]")
    if engine.kv_cache_max_tokens is not None and engine.kv_cache_max_tokens < engine.max_seq_len:
        raise ConfigError(f"engine.kv_cache_max_tokens={engine.kv_cache_max_tokens} cannot hold one sequence of "
                          f"engine.max_seq_len={engine.max_seq_len}")
