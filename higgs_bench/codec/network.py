"""The whole Higgs Audio v2 tokenizer network, in Boson's names.

encode: waveform (24 kHz) -> [DAC encoder latent ; semantic encoder(HuBERT features)] -> fc_prior -> RVQ codes
decode: codes -> RVQ sum -> fc_post2 -> DAC decoder -> waveform
Only the decode modules exist unless `with_encoder` (HuBERT alone is 95 M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from higgs_bench.codec.acoustic import Decoder, Encoder
from higgs_bench.codec.config import CodecConfig
from higgs_bench.codec.quantizer import ResidualQuantizer
from higgs_bench.codec.semantic import SemanticEncoder, hubert_features, make_hubert


class CodecNetwork(nn.Module):
    def __init__(self, cfg: CodecConfig, with_encoder: bool = True):
        super().__init__()
        self.cfg, self.with_encoder = cfg, with_encoder
        self.quantizer = ResidualQuantizer(cfg.num_codebooks, cfg.bins, cfg.codebook_dim, cfg.quantizer_dim)
        self.fc_post2 = nn.Linear(cfg.quantizer_dim, cfg.latent_dim)
        self.decoder_2 = Decoder(cfg.latent_dim, cfg.decoder_channels, cfg.ratios)
        if with_encoder:
            self.encoder = Encoder(cfg.encoder_channels, cfg.ratios, cfg.latent_dim)
            self.semantic_model = make_hubert(cfg.hubert_config())
            self.encoder_semantic = SemanticEncoder(cfg.semantic_dim)
            self.fc_prior = nn.Linear(cfg.quantizer_dim, cfg.quantizer_dim)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, N, T] -> waveform [B, 1, T * hop]."""
        return self.decoder_2(self.fc_post2(self.quantizer.decode(codes)).transpose(1, 2))

    def encode(self, wave: torch.Tensor, wave_16k: torch.Tensor) -> torch.Tensor:
        """wave [B, 1, samples] at the codec's rate and the same audio at 16 kHz [B, samples] -> codes [B, N, T]."""
        semantic = hubert_features(self.semantic_model, wave_16k, self.cfg.semantic_stride)
        semantic = self.encoder_semantic(semantic.transpose(1, 2))
        if self.encoder.frames(wave.shape[-1]) != semantic.shape[-1]:
            # as the transformers port does: half a hop on each side centres the acoustic frames
            half_hop = self.cfg.hop_length // 2
            wave = F.pad(wave, (half_hop, half_hop))
        acoustic = self.encoder(wave)
        frames = min(acoustic.shape[-1], semantic.shape[-1])  # Boson's rule where they still differ
        latent = torch.cat([acoustic[..., :frames], semantic[..., :frames]], dim=1)
        return self.quantizer.encode(self.fc_prior(latent.transpose(1, 2)))
