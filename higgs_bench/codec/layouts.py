"""The transformers port's tensor names (`higgs_audio_v2_tokenizer`) for Boson's, and back.

Boson's checkpoint stores the DAC convolutions with legacy weight norm (weight_g, weight_v); the port
stores the plain `weight`. Reading the port's layout we take weight_v = weight and weight_g = |weight|
per output channel (the product is the same weight); writing it we fold the two back together.
"""

from __future__ import annotations

import re

import torch

from higgs_bench.codec.config import CodecConfig

RESIDUAL = ("snake1", "conv1", "snake2", "conv2")  # the port's names for [Snake, conv, Snake, conv]


def hf_module(name: str, cfg: CodecConfig) -> str:
    """The port's module path for one of Boson's (without the parameter name)."""
    n = len(cfg.ratios)
    rules = [
        (r"encoder\.block\.0", lambda m: "acoustic_encoder.conv1"),
        (r"encoder\.block\.(\d+)\.block\.([0-2])\.block\.(\d)",
         lambda m: f"acoustic_encoder.block.{int(m[1]) - 1}.res_unit{int(m[2]) + 1}.{RESIDUAL[int(m[3])]}"),
        (r"encoder\.block\.(\d+)\.block\.3", lambda m: f"acoustic_encoder.block.{int(m[1]) - 1}.snake1"),
        (r"encoder\.block\.(\d+)\.block\.4", lambda m: f"acoustic_encoder.block.{int(m[1]) - 1}.conv1"),
        (rf"encoder\.block\.{n + 1}", lambda m: "acoustic_encoder.snake1"),
        (rf"encoder\.block\.{n + 2}", lambda m: "acoustic_encoder.conv2"),
        (r"decoder_2\.model\.0", lambda m: "acoustic_decoder.conv1"),
        (r"decoder_2\.model\.(\d+)\.block\.0", lambda m: f"acoustic_decoder.block.{int(m[1]) - 1}.snake1"),
        (r"decoder_2\.model\.(\d+)\.block\.1", lambda m: f"acoustic_decoder.block.{int(m[1]) - 1}.conv_t1"),
        (r"decoder_2\.model\.(\d+)\.block\.([2-4])\.block\.(\d)",
         lambda m: f"acoustic_decoder.block.{int(m[1]) - 1}.res_unit{int(m[2]) - 1}.{RESIDUAL[int(m[3])]}"),
        (rf"decoder_2\.model\.{n + 1}", lambda m: "acoustic_decoder.snake1"),
        (rf"decoder_2\.model\.{n + 2}", lambda m: "acoustic_decoder.conv2"),
        (r"(encoder_semantic\..*)\.conv", lambda m: m[1]),
        (r"(encoder_semantic\..*)", lambda m: m[1]),
        (r"fc_prior", lambda m: "fc"),
        (r"fc_post2", lambda m: "fc2"),
        (r"quantizer\.vq\.layers\.(\d+)\._codebook", lambda m: f"quantizer.quantizers.{m[1]}.codebook"),
        (r"quantizer\.vq\.layers\.(\d+)\.(project_\w+)", lambda m: f"quantizer.quantizers.{m[1]}.{m[2]}"),
        (r"(semantic_model\..*)", lambda m: m[1]),
    ]
    for pattern, replace in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return replace(match)
    raise KeyError(f"no transformers-port name for {name}")


def split(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def to_hf(state: dict[str, torch.Tensor], cfg: CodecConfig) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        module, param = split(name)
        if param == "weight_v":
            continue
        if param == "weight_g":
            v = state[f"{module}.weight_v"]
            out[f"{hf_module(module, cfg)}.weight"] = tensor * v / norm_per_first_dim(v)
        else:
            out[f"{hf_module(module, cfg)}.{param}"] = tensor
    return out


def from_hf(hf_state: dict[str, torch.Tensor], boson_names: list[str], cfg: CodecConfig) -> dict[str, torch.Tensor]:
    """Boson-named tensors for `boson_names`, from the port's state dict; names it lacks are left out."""
    out = {}
    for name in boson_names:
        module, param = split(name)
        hf_param = "weight" if param in ("weight_g", "weight_v") else param
        tensor = hf_state.get(f"{hf_module(module, cfg)}.{hf_param}")
        if tensor is None:
            continue
        out[name] = norm_per_first_dim(tensor) if param == "weight_g" else tensor
    return out


def norm_per_first_dim(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1).norm(dim=1).view(-1, *[1] * (weight.ndim - 1))
