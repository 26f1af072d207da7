"""A tiny random audio tokenizer (encoder and decoder) with the released structure, for tests and the embedded
default run; `python -m higgs_bench.tiny --codec-out` writes one."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from higgs_bench.codec import CodecConfig
from higgs_bench.codec import layouts as codec_layouts
from higgs_bench.codec.network import CodecNetwork
from higgs_bench.files import cache_dir, cached, staged_dir
from higgs_bench.model.random_checkpoint import MARKER

TINY_CODEC = dict(latent_dim=16, codebook_dim=8, semantic_dim=16, encoder_channels=4, decoder_channels=64,
                  semantic=dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=[16] * 7,
                                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4))


def make_codec(out: Path, seed: int = 0, layout: str = "boson") -> Path:
    """A tiny random codec, encoder and decoder: the released structure (hop 960 at 24 kHz, 8 x 1024 codes,
    HuBERT's 320-sample frames) with narrow widths. Its output is noise, but a real waveform of the right
    length, and it turns a clip into varied codes."""
    out = Path(out)
    config = CodecConfig(**TINY_CODEC)
    torch.manual_seed(seed)
    network = CodecNetwork(config)  # HuBERT and the linear layers keep their own initialisation
    gen = torch.Generator().manual_seed(seed)
    state = network.state_dict()
    for name, tensor in state.items():
        if name.startswith(("encoder.", "decoder_2.")):
            shift = 1.0 if name.endswith(("alpha", "weight_g")) else 0.0
            state[name] = torch.randn(tensor.shape, generator=gen) * 0.1 + shift
        elif name.endswith("_codebook.embed"):
            state[name] = torch.randn(tensor.shape, generator=gen) * 0.5
    network.load_state_dict(state)
    with torch.no_grad():  # scale the output conv so the noise has speech-like level (std 0.1)
        level = network.decode(torch.randint(0, config.bins, (1, config.num_codebooks, 25), generator=gen)).std()
    last_conv = f"decoder_2.model.{len(config.ratios) + 2}.weight_g"
    state[last_conv] = state[last_conv] * 0.1 / level
    write_codec(out, config, state, layout)
    return out


def write_codec(out: Path, config: CodecConfig, state: dict, layout: str) -> None:
    with staged_dir(out) as staging:
        if layout == "hf":
            (staging / "config.json").write_text(json.dumps(config.to_hf(), indent=2))
            save_file({k: v.contiguous() for k, v in codec_layouts.to_hf(state, config).items()},
                      staging / "model.safetensors")
        else:
            (staging / "config.json").write_text(json.dumps(config.to_boson(), indent=2))
            torch.save(state, staging / "model.pth")
        (staging / MARKER).write_text("written by python -m higgs_bench.tiny\n")


def embedded_codec() -> Path:
    from higgs_bench.codec import load_codec

    return cached(cache_dir() / "models" / "tiny-codec-v2-seed0", make_codec,
                   lambda out: load_codec(out, encoder=True))
