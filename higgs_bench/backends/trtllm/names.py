"""The TensorRT-LLM checkpoint's tensors: one table that the converter writes and the network declares.

Names follow TensorRT-LLM's Llama (tensorrt_llm/models/llama/model.py and convert.py, 1.2.x): fused
`attention.qkv`, `attention.dense`, `mlp.fc` (gate_proj: GatedMLP activates fc), `mlp.gate` (up_proj),
`mlp.proj` (down_proj), `ln_f`. The Higgs parts:
`audio_input_layernorm`, `audio_post_layernorm` and `audio_mlp` on dual-FFN layers, the summed codebook
embedding `transformer.audio_embedding`, and `lm_head` is the audio head (8 x 1026 rows; there is no text head).
Shapes are per tensor-parallel rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from higgs_bench.model import dtypes
from higgs_bench.model.config import DUAL, HiggsConfig

LINEAR_LEAVES = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj",
                 "audio_mlp.fc", "audio_mlp.gate", "audio_mlp.proj")
# How each linear is split across ranks: "rows" (output features) or "columns" (input features).
SPLIT = {"qkv": "rows", "fc": "rows", "gate": "rows", "dense": "columns", "proj": "columns"}
WEIGHT_ONLY_BITS = {"int8": 8, "int4": 4}


@dataclass(frozen=True)
class Quant:
    """What the converter writes: `weights` None (plain dtype), int8 / int4 (weight-only) or fp8; `kv_cache` None or fp8."""

    dtype: str = "bf16"
    weights: str | None = None
    kv_cache: str | None = None

    @property
    def quant_algo(self) -> str | None:
        return {None: None, "int8": "W8A16", "int4": "W4A16", "fp8": "FP8"}[self.weights]

    @property
    def kv_cache_quant_algo(self) -> str | None:
        return {None: None, "fp8": "FP8"}[self.kv_cache]




@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype


def linear_shapes(cfg: HiggsConfig, tp: int) -> dict[str, tuple[int, int]]:
    """(out, in) of every linear on one rank, keyed by module path."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
    shapes = {}
    for n, kind in enumerate(cfg.layer_kinds):
        p = f"transformer.layers.{n}."
        shapes |= {p + "attention.qkv": (qkv // tp, h), p + "attention.dense": (h, cfg.num_heads * cfg.head_dim // tp)}
        for mlp in ("mlp", "audio_mlp") if kind == DUAL else ("mlp",):
            shapes |= {p + f"{mlp}.fc": (i // tp, h), p + f"{mlp}.gate": (i // tp, h), p + f"{mlp}.proj": (h, i // tp)}
    return shapes


def tensor_table(cfg: HiggsConfig, quant: Quant, tp: int = 1) -> dict[str, TensorSpec]:
    dtype = dtypes.TORCH[quant.dtype]
    h, audio_rows = cfg.hidden_size, cfg.num_codebooks * cfg.audio_vocab_size
    table = {
        "transformer.vocab_embedding.weight": TensorSpec((cfg.vocab_size, h), dtype),
        "transformer.audio_embedding.weight": TensorSpec((audio_rows, h), dtype),
        "transformer.ln_f.weight": TensorSpec((h,), dtype),
        "lm_head.weight": TensorSpec((audio_rows // tp, h), dtype),
    }
    for n, kind in enumerate(cfg.layer_kinds):
        p = f"transformer.layers.{n}."
        norms = ("input_layernorm", "post_layernorm")
        norms += ("audio_input_layernorm", "audio_post_layernorm") if kind == DUAL else ()
        table |= {p + f"{norm}.weight": TensorSpec((h,), dtype) for norm in norms}
        if quant.kv_cache == "fp8":
            table[p + "attention.kv_cache_scaling_factor"] = TensorSpec((1,), torch.float32)
    for module, (out, inp) in linear_shapes(cfg, tp).items():
        table |= linear_specs(module, out, inp, quant, dtype)
    return table


def linear_specs(module: str, out: int, inp: int, quant: Quant, dtype: torch.dtype) -> dict[str, TensorSpec]:
    if quant.weights in WEIGHT_ONLY_BITS:
        # [in, out] (int4: two values per byte along out), the layout TensorRT-LLM's weight-only kernels start from
        packed_out = out * WEIGHT_ONLY_BITS[quant.weights] // 8
        return {f"{module}.weight": TensorSpec((inp, packed_out), torch.int8),
                f"{module}.per_channel_scale": TensorSpec((out,), dtype)}
    if quant.weights == "fp8":
        return {f"{module}.weight": TensorSpec((out, inp), torch.float8_e4m3fn),
                f"{module}.weights_scaling_factor": TensorSpec((1,), torch.float32),
                f"{module}.activation_scaling_factor": TensorSpec((1,), torch.float32)}
    return {f"{module}.weight": TensorSpec((out, inp), dtype)}
