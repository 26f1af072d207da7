"""Residual vector quantisation with factorised codebooks: each of the 8 stages projects the residual down
to 64 dims, picks the nearest of 1024 codes (L2), and projects it back up. Names follow Boson's model.pth
(`quantizer.vq.layers.K.{project_in, _codebook.embed, project_out}`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Codebook(nn.Module):
    def __init__(self, bins: int, dim: int, quantizer_dim: int):
        super().__init__()
        self.project_in = nn.Linear(quantizer_dim, dim)
        self._codebook = nn.Module()
        self._codebook.register_buffer("embed", torch.zeros(bins, dim))
        self.project_out = nn.Linear(dim, quantizer_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, quantizer_dim] -> nearest code ids [B, T]."""
        x, embed = self.project_in(x), self._codebook.embed
        distance = x.pow(2).sum(-1, keepdim=True) - 2 * x @ embed.T + embed.pow(2).sum(-1)
        return distance.argmin(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.embedding(codes, self._codebook.embed))


class ResidualQuantizer(nn.Module):
    def __init__(self, num_codebooks: int, bins: int, dim: int, quantizer_dim: int):
        super().__init__()
        self.vq = nn.Module()
        self.vq.layers = nn.ModuleList(Codebook(bins, dim, quantizer_dim) for _ in range(num_codebooks))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, quantizer_dim] -> codes [B, num_codebooks, T]."""
        codes = []
        for layer in self.vq.layers:
            codes.append(layer.encode(x))
            x = x - layer.decode(codes[-1])
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, num_codebooks, T] -> [B, T, quantizer_dim]."""
        return sum(layer.decode(codes[:, k]) for k, layer in enumerate(self.vq.layers))
