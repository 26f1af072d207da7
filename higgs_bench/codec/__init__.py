"""The audio codec (Higgs Audio v2 tokenizer): audio codes [codebooks, frames] -> mono waveform.

Reads Boson's release layout (config.json + model.pth). Encoding reference audio into codes is not here
yet; voice cloning takes precomputed codes until it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from higgs_bench.codec.network import CodecDecoder
from higgs_bench.errors import HiggsBenchError


class CodecError(HiggsBenchError):
    """A codec checkpoint that cannot be read, or codes it cannot decode."""


@dataclass(frozen=True)
class CodecConfig:
    sample_rate: int = 24000
    ratios: tuple[int, ...] = (8, 5, 4, 2, 3)
    latent_dim: int = 256  # "D"
    codebook_dim: int = 64
    bins: int = 1024
    num_codebooks: int = 8  # "n_q"
    semantic_dim: int = 768  # HuBERT base
    decoder_channels: int = 1024

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def quantizer_dim(self) -> int:
        return self.latent_dim + self.semantic_dim

    @classmethod
    def from_file(cls, path: Path) -> CodecConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CodecError(f"{path}: cannot read the codec config ({err})") from err
        return cls(sample_rate=raw.get("sample_rate", 24000), ratios=tuple(raw.get("ratios", cls.ratios)),
                   latent_dim=raw.get("D", 256), codebook_dim=raw.get("codebook_dim", 64), bins=raw.get("bins", 1024),
                   num_codebooks=raw.get("n_q", 8), semantic_dim=raw.get("semantic_dim", 768),
                   decoder_channels=raw.get("decoder_channels", 1024))

    def to_boson_dict(self) -> dict:
        return {"sample_rate": self.sample_rate, "ratios": list(self.ratios), "D": self.latent_dim,
                "codebook_dim": self.codebook_dim, "bins": self.bins, "n_q": self.num_codebooks,
                "semantic_dim": self.semantic_dim, "decoder_channels": self.decoder_channels}


class Codec:
    def __init__(self, config: CodecConfig, network: CodecDecoder, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.network = network.to(self.device).eval()

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @torch.inference_mode()
    def decode(self, codes) -> np.ndarray:
        """codes [num_codebooks, frames] (ints in 0..bins-1) -> float32 waveform [frames * hop_length]."""
        codes = torch.as_tensor(np.asarray(codes))
        n, bins = self.config.num_codebooks, self.config.bins
        if codes.ndim != 2 or codes.shape[0] != n:
            raise CodecError(f"codes must have shape [{n}, frames], got {list(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise CodecError(f"codes must be integers, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= bins):
            raise CodecError(f"codes must lie in 0..{bins - 1}, got {int(codes.min())}..{int(codes.max())}")
        if codes.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        wave = self.network(codes.long()[None].to(self.device))
        return wave[0, 0].float().cpu().numpy()


def load_codec(path: str | Path, device="cpu") -> Codec:
    """A codec directory in Boson's layout (config.json + model.pth)."""
    path = Path(path)
    if not path.is_dir():
        raise CodecError(f"codec directory {path} does not exist")
    config = CodecConfig.from_file(path / "config.json")
    weights_file = path / "model.pth"
    if not weights_file.is_file():
        raise CodecError(f"{path}: no model.pth")
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle/zip errors of several kinds
        raise CodecError(f"{weights_file}: corrupt or unreadable ({err})") from err
    network = CodecDecoder(config)
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CodecError(f"{weights_file}: {len(missing)} decoder tensors missing, e.g. {missing[:3]}")
    wrong = [f"{k} {list(state[k].shape)} != {list(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CodecError(f"{weights_file}: tensors disagree with config.json: {wrong[:3]}")
    network.load_state_dict({k: state[k].float() for k in expected})
    return Codec(config, network, device)
