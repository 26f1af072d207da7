"""The audio codec (Higgs Audio v2 tokenizer): waveform <-> audio codes [codebooks, frames] at 25 frames/s.

Reads Boson's release layout (config.json + model.pth) and the transformers port's (config.json +
model.safetensors). Decoding needs only the quantizer and DAC decoder; `load_codec(..., encoder=True)`
also loads the DAC encoder, HuBERT and the semantic encoder, for turning reference clips into codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from higgs_bench.codec import layouts
from higgs_bench.codec.audio import read_clip, resample
from higgs_bench.codec.config import SEMANTIC_SAMPLE_RATE, CodecConfig, CodecError, read_config
from higgs_bench.codec.network import CodecNetwork

__all__ = ["Codec", "CodecConfig", "CodecError", "load_codec"]


class Codec:
    def __init__(self, config: CodecConfig, network: CodecNetwork, device="cpu"):
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
        wave = self.network.decode(codes.long()[None].to(self.device))
        return wave[0, 0].float().cpu().numpy()

    @torch.inference_mode()
    def encode_file(self, path: str | Path) -> np.ndarray:
        """The codes [N, frames] of a clip file (any rate; stereo is mixed to mono)."""
        return self.encode(*read_clip(path))

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """A mono waveform [samples] -> int64 codes [num_codebooks, frames], about samples / hop frames."""
        if not self.network.with_encoder:
            raise CodecError("this codec was loaded for decoding only; load it with encoder=True")
        wave = np.asarray(wave)
        if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.floating):
            raise CodecError(f"audio must be a 1-D float waveform (mono), got {wave.dtype} {list(wave.shape)}")
        if not np.isfinite(wave).all():
            raise CodecError("audio holds NaN or infinite samples")
        wave = resample(wave, sample_rate, self.sample_rate)
        if len(wave) < self.config.hop_length:
            seconds = self.config.hop_length / self.sample_rate
            raise CodecError(f"audio is {len(wave)} samples long, shorter than one codec frame ({seconds * 1000:.0f} ms)")
        return self.encode_resampled(wave, resample(wave, self.sample_rate, SEMANTIC_SAMPLE_RATE))

    def encode_resampled(self, wave: np.ndarray, wave_16k: np.ndarray) -> np.ndarray:
        """Encode from the waveform at the codec's rate and the same audio at 16 kHz for HuBERT."""
        as_tensor = lambda w: torch.as_tensor(w, dtype=torch.float32, device=self.device)[None]  # noqa: E731
        codes = self.network.encode(as_tensor(wave)[None], as_tensor(wave_16k))
        return codes[0].cpu().numpy().astype(np.int64)


def load_codec(path: str | Path, device="cpu", encoder: bool = False) -> Codec:
    """A codec directory in Boson's layout (config.json + model.pth) or the transformers port's."""
    path = Path(path)
    if not path.is_dir():
        raise CodecError(f"codec directory {path} does not exist")
    config, layout = read_config(path)
    network = CodecNetwork(config, with_encoder=encoder)
    expected = network.state_dict()
    if layout == "hf":
        state = layouts.from_hf(read_weights(path / "model.safetensors"), list(expected), config)
    else:
        state = with_current_weight_norm_names(read_weights(path / "model.pth"))
    missing = [k for k in expected if k not in state]
    if missing:
        raise CodecError(f"{path}: {len(missing)} tensors missing, e.g. {missing[:3]}")
    wrong = [f"{k} {list(state[k].shape)} != {list(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CodecError(f"{path}: tensors disagree with config.json: {wrong[:3]}")
    network.load_state_dict({k: state[k].float() for k in expected})
    return Codec(config, network, device)


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CodecError(f"{file.parent}: no {file.name}")
    try:
        if file.suffix == ".safetensors":
            return load_file(file)
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise errors of several kinds for a bad file
        raise CodecError(f"{file}: corrupt or unreadable ({err})") from err


def with_current_weight_norm_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HuBERT's positional conv saved by an older torch (weight_g/weight_v) under today's parametrization names."""
    old = "semantic_model.encoder.pos_conv_embed.conv."
    renames = {old + "weight_g": old + "parametrizations.weight.original0",
               old + "weight_v": old + "parametrizations.weight.original1"}
    return {renames.get(k, k): v for k, v in state.items()}
