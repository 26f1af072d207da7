"""The audio tokenizer's settings, read from either released layout.

Boson's `config.json` (beside model.pth) names the acoustic sizes (D, ratios, n_q, bins, codebook_dim);
its semantic teacher is HuBERT base, fetched from the hub at run time. The transformers port's
`config.json` (model_type higgs_audio_v2_tokenizer) nests DAC and HuBERT configs. We keep one flat
config; `semantic` holds HuBERT settings that differ from HuBERT base.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from higgs_bench.errors import HiggsBenchError

HF_MODEL_TYPE = "higgs_audio_v2_tokenizer"
SEMANTIC_SAMPLE_RATE = 16000
SEMANTIC_HOP = 320  # HuBERT's frame step at 16 kHz


class CodecError(HiggsBenchError):
    """A codec checkpoint that cannot be read, or audio or codes it cannot take."""


@dataclass(frozen=True)
class CodecConfig:
    sample_rate: int = 24000
    ratios: tuple[int, ...] = (8, 5, 4, 2, 3)
    latent_dim: int = 256  # "D": the acoustic latent
    encoder_channels: int = 64  # the DAC encoder's first width; doubles at every stride
    decoder_channels: int = 1024
    codebook_dim: int = 64
    bins: int = 1024
    num_codebooks: int = 8  # "n_q"
    semantic_dim: int = 768  # HuBERT base
    semantic: dict = field(default_factory=dict)  # HubertConfig overrides (beyond hidden_size)

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def quantizer_dim(self) -> int:
        return self.latent_dim + self.semantic_dim

    @property
    def semantic_stride(self) -> int:
        """HuBERT frames per codec frame (2 for 960 samples at 24 kHz = 640 at 16 kHz)."""
        return int(self.hop_length / (self.sample_rate / SEMANTIC_SAMPLE_RATE) / SEMANTIC_HOP)

    def hubert_config(self) -> dict:
        return {**self.semantic, "hidden_size": self.semantic_dim, "mask_time_prob": 0.0}

    # Boson's layout ------------------------------------------------------------------------------
    @classmethod
    def from_boson(cls, raw: dict) -> CodecConfig:
        return cls(sample_rate=raw.get("sample_rate", 24000), ratios=tuple(raw.get("ratios", cls.ratios)),
                   latent_dim=raw.get("D", 256), codebook_dim=raw.get("codebook_dim", 64), bins=raw.get("bins", 1024),
                   num_codebooks=raw.get("n_q", 8), semantic_dim=raw.get("semantic_dim", 768),
                   encoder_channels=raw.get("encoder_channels", 64), decoder_channels=raw.get("decoder_channels", 1024),
                   semantic=raw.get("semantic", {}))

    def to_boson(self) -> dict:
        # semantic_dim, encoder/decoder_channels and semantic are ours: Boson's code fixes them (HuBERT base, 64, 1024).
        return {"sample_rate": self.sample_rate, "ratios": list(self.ratios), "D": self.latent_dim,
                "codebook_dim": self.codebook_dim, "bins": self.bins, "n_q": self.num_codebooks,
                "semantic_techer": "hubert_base_general", "semantic_dim": self.semantic_dim,
                "encoder_channels": self.encoder_channels, "decoder_channels": self.decoder_channels,
                "semantic": self.semantic}

    # the transformers port's layout ------------------------------------------------------------------
    @classmethod
    def from_hf(cls, raw: dict) -> CodecConfig:
        acoustic, semantic = raw.get("acoustic_model_config", {}), dict(raw.get("semantic_model_config", {}))
        ratios = tuple(acoustic.get("downsampling_ratios", (8, 5, 4, 2)))
        sample_rate = raw.get("sample_rate", 24000)
        bits = math.ceil(math.log2(raw.get("codebook_size", 1024)))
        bandwidth = raw.get("target_bandwidths", [4])[-1]
        frame_rate = math.ceil(sample_rate / math.prod(ratios))
        hubert = {k: v for k, v in semantic.items() if k in HUBERT_KEYS}
        return cls(sample_rate=sample_rate, ratios=ratios, latent_dim=acoustic.get("hidden_size", 256),
                   encoder_channels=acoustic.get("encoder_hidden_size", 64),
                   decoder_channels=acoustic.get("decoder_hidden_size", 1024), codebook_dim=raw.get("codebook_dim", 64),
                   bins=raw.get("codebook_size", 1024), num_codebooks=int(1000 * bandwidth // (frame_rate * bits)),
                   semantic_dim=semantic.get("hidden_size", 768), semantic=hubert)

    def to_hf(self) -> dict:
        bandwidth = self.num_codebooks * math.ceil(self.frame_rate) * math.ceil(math.log2(self.bins)) / 1000
        dac = {"encoder_hidden_size": self.encoder_channels, "downsampling_ratios": list(self.ratios),
               "decoder_hidden_size": self.decoder_channels, "upsampling_ratios": list(self.ratios),
               "hidden_size": self.latent_dim, "model_type": "dac"}
        return {"model_type": HF_MODEL_TYPE, "architectures": ["HiggsAudioV2TokenizerModel"],
                "sample_rate": self.sample_rate, "codebook_size": self.bins, "codebook_dim": self.codebook_dim,
                "target_bandwidths": [bandwidth], "semantic_sample_rate": SEMANTIC_SAMPLE_RATE,
                "downsample_factor": SEMANTIC_HOP, "acoustic_model_config": dac,
                "semantic_model_config": {"model_type": "hubert", **self.hubert_config()}}


# The HuBERT architecture settings we carry between layouts (the rest are training-only).
HUBERT_KEYS = ("num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim", "conv_stride",
               "conv_kernel", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "feat_extract_norm",
               "conv_bias", "do_stable_layer_norm", "layer_norm_eps", "hidden_act", "feat_extract_activation")


def read_config(path: Path) -> tuple[CodecConfig, str]:
    """(config, layout) of a codec directory: layout is "boson" or "hf"."""
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CodecError(f"{path}: cannot read the codec config ({err})") from err
    if raw.get("model_type") == HF_MODEL_TYPE:
        return CodecConfig.from_hf(raw), "hf"
    if "ratios" in raw or "n_q" in raw:
        return CodecConfig.from_boson(raw), "boson"
    raise CodecError(f"{path}/config.json is neither a Higgs audio tokenizer config (Boson's: ratios, n_q) "
                     f"nor the transformers port's (model_type {HF_MODEL_TYPE})")
