"""Canonical Higgs weights (either checkpoint layout) -> a TensorRT-LLM checkpoint directory:
config.json + rank{N}.safetensors, one file per tensor-parallel rank (tensorrt_llm/models/modeling_utils.py,
PretrainedModel.from_checkpoint / save_checkpoint, 1.2.x). Plain torch: runs and is tested without TensorRT-LLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from higgs_bench.backends.trtllm import quantize
from higgs_bench.backends.trtllm.names import SPLIT, WEIGHT_ONLY_BITS, Quant, tensor_table
from higgs_bench.errors import HiggsBenchError
from higgs_bench.files import staged_dir
from higgs_bench.model import dtypes
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.weights import quantised_linears
from higgs_bench.model.config import DUAL, SKIP, HiggsConfig

ARCHITECTURE = "HiggsAudioForCausalLM"
SUPPORTED_WEIGHTS = (None, "int8", "int4", "fp8")


class ConversionError(HiggsBenchError):
    """A conversion that cannot be done; the message says which setting to change."""


def check_conversion(cfg: HiggsConfig, quant: Quant, tp: int) -> None:
    if quant.weights not in SUPPORTED_WEIGHTS:
        raise ConversionError(
            f"precision weights={quant.weights!r} is not converted here: int4_awq needs an AWQ search "
            "(nvidia-modelopt), which this converter does not run; use int4 (per-channel weight-only) or int8")
    if quant.kv_cache not in (None, "fp8"):
        raise ConversionError(f"kv_cache={quant.kv_cache!r}: only an fp8 KV cache is converted (or none)")
    if SKIP in cfg.layer_kinds:
        raise ConversionError(
            "this checkpoint has fast-forward layers, in which text positions must not attend to audio ones; the "
            "gpt-attention plugin's causal mask cannot express that, so the TensorRT-LLM backend refuses it "
            "(the released Higgs Audio v2 has none; use backend=torch)")
    if quant.dtype not in ("fp16", "bf16"):
        raise ConversionError(f"dtype={quant.dtype}: TensorRT-LLM engines run fp16 or bf16 activations")
    if tp < 1 or cfg.num_kv_heads % tp or cfg.num_heads % tp or cfg.intermediate_size % tp:
        raise ConversionError(f"tp_size={tp} must divide the {cfg.num_heads} query heads, {cfg.num_kv_heads} KV "
                              f"heads and intermediate size {cfg.intermediate_size}")
    if (cfg.num_codebooks * cfg.audio_vocab_size) % tp:
        raise ConversionError(f"tp_size={tp} must divide the audio head's {cfg.num_codebooks * cfg.audio_vocab_size} rows")


def trtllm_config(cfg: HiggsConfig, quant: Quant, tp: int) -> dict:
    return {
        "architecture": ARCHITECTURE, "dtype": dtypes.TENSORRT[quant.dtype],
        "logits_dtype": "float32", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "head_size": cfg.head_dim, "intermediate_size": cfg.intermediate_size,
        "hidden_act": "silu", "norm_epsilon": cfg.rms_norm_eps, "position_embedding_type": "rope_gpt_neox",
        "max_position_embeddings": cfg.max_position_embeddings, "rotary_base": cfg.rope_theta,
        "rotary_scaling": cfg.rope_scaling, "mapping": {"world_size": tp, "tp_size": tp, "pp_size": 1},
        "quantization": {"quant_algo": quant.quant_algo, "kv_cache_quant_algo": quant.kv_cache_quant_algo,
                         "exclude_modules": ["lm_head", "*vocab_embedding", "*audio_embedding"]},
        # Higgs fields (PretrainedConfig keeps unknown keys as attributes)
        "audio_num_codebooks": cfg.num_codebooks, "audio_vocab_size": cfg.audio_vocab_size,
        "audio_layer_kinds": list(cfg.layer_kinds), "audio_out_token_id": cfg.audio_out_token_id,
        "audio_stream_bos_id": cfg.stream_bos_id, "audio_stream_eos_id": cfg.stream_eos_id,
        "audio_routing": "gather",  # the engine builder may choose "select" (network.py)
    }


def split_rank(tensor: torch.Tensor, how: str, tp: int, rank: int) -> torch.Tensor:
    return torch.chunk(tensor, tp, dim=0 if how == "rows" else 1)[rank].contiguous()


def fused_qkv(w: dict, layer: int, cfg: HiggsConfig, tp: int, rank: int) -> torch.Tensor:
    """q, k and v each split by heads, then stacked: every rank holds its own heads of all three."""
    p = f"layers.{layer}.self_attn."
    return torch.cat([split_rank(w[p + f"{x}_proj.weight"], "rows", tp, rank) for x in "qkv"], dim=0)


def full_precision_linears(w: dict, cfg: HiggsConfig, tp: int, rank: int) -> dict[str, torch.Tensor]:
    """Every linear of one rank in float32, keyed by TensorRT-LLM module path. They are exactly the linears
    of model.weights.quantised_linears, which the torch backend quantises too."""
    out, sources = {}, set()
    for n, kind in enumerate(cfg.layer_kinds):
        p, c = f"transformer.layers.{n}.", f"layers.{n}."
        out[p + "attention.qkv"] = fused_qkv(w, n, cfg, tp, rank)
        out[p + "attention.dense"] = split_rank(w[c + "self_attn.o_proj.weight"], SPLIT["dense"], tp, rank)
        sources |= {c + f"self_attn.{x}" for x in ("q_proj", "k_proj", "v_proj", "o_proj")}
        for mlp in ("mlp", "audio_mlp") if kind == DUAL else ("mlp",):
            # TensorRT-LLM's GatedMLP applies the activation to `fc`: fc is gate_proj, gate is up_proj
            for leaf, source in (("fc", "gate_proj"), ("gate", "up_proj"), ("proj", "down_proj")):
                out[p + f"{mlp}.{leaf}"] = split_rank(w[c + f"{mlp}.{source}.weight"], SPLIT[leaf], tp, rank)
                sources.add(c + f"{mlp}.{source}")
    if sources != set(quantised_linears(cfg)):
        raise AssertionError(f"converter and shared quantisation table disagree: {sorted(sources ^ set(quantised_linears(cfg)))[:4]}")
    return out


def quantised_linear(module: str, weight: torch.Tensor, quant: Quant, amax: dict[str, float]) -> dict:
    dtype = dtypes.TORCH[quant.dtype]
    if quant.weights in WEIGHT_ONLY_BITS:
        q, scale = quantize.weight_only(weight, WEIGHT_ONLY_BITS[quant.weights])
        q = quantize.pack_int4(q) if quant.weights == "int4" else q
        return {f"{module}.weight": q, f"{module}.per_channel_scale": scale.to(dtype)}
    if quant.weights == "fp8":
        q, scale = quantize.fp8_weight(weight)
        return {f"{module}.weight": q, f"{module}.weights_scaling_factor": scale,
                f"{module}.activation_scaling_factor": quantize.fp8_scale(amax[module])}
    return {f"{module}.weight": weight.to(dtype)}


def rank_tensors(w: dict, cfg: HiggsConfig, quant: Quant, tp: int, rank: int, amax: dict) -> dict[str, torch.Tensor]:
    dtype = dtypes.TORCH[quant.dtype]
    out = {
        "transformer.vocab_embedding.weight": w["embed_tokens.weight"].to(dtype),
        "transformer.audio_embedding.weight": w["audio_codebook_embeddings.weight"].to(dtype),
        "transformer.ln_f.weight": w["norm.weight"].to(dtype),
        "lm_head.weight": split_rank(w["audio_lm_head.weight"], "rows", tp, rank).to(dtype),
    }
    norms = {"input_layernorm": "input_layernorm", "post_layernorm": "post_attention_layernorm",
             "audio_input_layernorm": "audio_input_layernorm", "audio_post_layernorm": "audio_post_attention_layernorm"}
    for n, kind in enumerate(cfg.layer_kinds):
        p = f"transformer.layers.{n}."
        for ours, theirs in list(norms.items())[: 4 if kind == DUAL else 2]:
            out[p + f"{ours}.weight"] = w[f"layers.{n}.{theirs}.weight"].to(dtype)
        if quant.kv_cache == "fp8":
            out[p + "attention.kv_cache_scaling_factor"] = quantize.fp8_scale(amax[p + "attention.kv_cache"])
    for module, weight in full_precision_linears(w, cfg, tp, rank).items():
        out |= quantised_linear(module, weight.float(), quant, amax)
    return out


def needs_calibration(quant: Quant) -> bool:
    return quant.weights == "fp8" or quant.kv_cache == "fp8"


def convert(model_dir: str | Path, out_dir: str | Path, quant: Quant, tp: int = 1,
            amax: dict[str, float] | None = None) -> Path:
    """Write the TensorRT-LLM checkpoint; fp8 needs `amax` from calibrate.calibrate_checkpoint."""
    checkpoint = load_checkpoint(model_dir, dtype=torch.float32)
    cfg, out_dir = checkpoint.config, Path(out_dir)
    check_conversion(cfg, quant, tp)
    if needs_calibration(quant) and not amax:
        raise ConversionError("fp8 weights or KV cache need calibration maxima (calibrate.calibrate_checkpoint)")
    if out_dir.exists():
        raise ConversionError(f"{out_dir} already exists; remove it or pick another output directory")
    expected = tensor_table(cfg, quant, tp)
    with staged_dir(out_dir) as staging:  # written beside the target, which appears only when complete
        for rank in range(tp):
            tensors = rank_tensors(checkpoint.weights, cfg, quant, tp, rank, amax or {})
            check_against_table(tensors, expected)
            save_file(tensors, staging / f"rank{rank}.safetensors")
        (staging / "config.json").write_text(json.dumps(trtllm_config(cfg, quant, tp), indent=2))
    return out_dir


def check_against_table(tensors: dict[str, torch.Tensor], expected: dict) -> None:
    """The converter and the network share names.tensor_table; a drift fails here, not inside an engine build."""
    if set(tensors) != set(expected):
        raise AssertionError(f"converter/network name drift: {sorted(set(tensors) ^ set(expected))[:5]}")
    for name, spec in expected.items():
        if tuple(tensors[name].shape) != spec.shape or tensors[name].dtype != spec.dtype:
            raise AssertionError(f"{name}: {tuple(tensors[name].shape)} {tensors[name].dtype} != {spec}")
