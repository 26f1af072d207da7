"""fp8 calibration on the PyTorch reference network: absolute maxima of each linear's input and of the
KV cache, recorded with forward hooks while the reference generates speech for calibration texts.

This is plain amax calibration (no percentile clipping, no ModelOpt), the simplest scheme TensorRT-LLM's
per-tensor FP8 accepts. RoPE rotates pairs of key features, so the cached keys' maximum is bounded by the
largest pair norm of the pre-RoPE keys; that bound, not the pre-RoPE maximum, sets the KV scale.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer

# reference network's linear -> the TensorRT-LLM linears whose input it shares (the reference fuses gate and up,
# TensorRT-LLM's GatedMLP keeps fc and gate apart)
TRT_LINEARS = {"self_attn.qkv_proj": ("attention.qkv",), "self_attn.o_proj": ("attention.dense",),
               "mlp.gate_up_proj": ("mlp.fc", "mlp.gate"), "mlp.down_proj": ("mlp.proj",),
               "audio_mlp.gate_up_proj": ("audio_mlp.fc", "audio_mlp.gate"), "audio_mlp.down_proj": ("audio_mlp.proj",)}

CALIBRATION_TEXTS = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
)


def pair_norm_max(keys: torch.Tensor, head_dim: int) -> float:
    """Largest norm of the (i, i + head_dim/2) feature pairs that RoPE rotates together."""
    k = keys.float().reshape(-1, head_dim)
    half = head_dim // 2
    return float(torch.sqrt(k[:, :half] ** 2 + k[:, half:] ** 2).max())


def calibrate(backend: TorchBackend, tokenizer, texts=CALIBRATION_TEXTS, frames: int = 64) -> dict[str, float]:
    """{TensorRT-LLM module path: input amax} and {"transformer.layers.N.attention.kv_cache": amax}."""
    cfg = backend.config
    amax: dict[str, float] = defaultdict(float)
    hooks = []
    sizes = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim)

    def record(name: str, value: float):
        amax[name] = max(amax[name], value)

    for module_name, module in backend.network.named_modules():
        layer, _, leaf = module_name.partition(".")[2].partition(".")
        if not module_name.startswith("layers.") or leaf not in TRT_LINEARS:
            continue
        prefix = f"transformer.layers.{layer}."
        targets = [prefix + target for target in TRT_LINEARS[leaf]]
        kv = prefix + "attention.kv_cache"

        def hook(mod, inputs, output, targets=targets, kv=kv, leaf=leaf):
            if inputs[0].numel() == 0:  # a routed MLP with no positions of its kind in this call
                return
            for target in targets:
                record(target, float(inputs[0].detach().abs().max()))
            if leaf == "self_attn.qkv_proj":
                _, keys, values = output.detach().split(sizes, dim=-1)
                record(kv, max(pair_norm_max(keys, cfg.head_dim), float(values.abs().max())))

        hooks.append(module.register_forward_hook(hook))
    try:
        prompts = [expand_prompt(encode_messages(tokenizer, tts_messages(t)), cfg) for t in texts]
        generate(backend, prompts, SamplingConfig(greedy=True), frames, stop_at_eos=False)
    finally:
        for handle in hooks:
            handle.remove()
    return dict(amax)


def calibrate_checkpoint(model_dir, device="cpu", frames: int = 64) -> dict[str, float]:
    backend = TorchBackend.from_checkpoint(model_dir, device=device, dtype=torch.float32)
    return calibrate(backend, load_tokenizer(model_dir), frames=frames)
