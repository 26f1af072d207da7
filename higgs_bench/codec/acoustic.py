"""The acoustic half of the Higgs Audio v2 tokenizer: a DAC encoder (waveform -> latent frames) and
DAC decoder (latent frames -> waveform), in PyTorch.

Module and tensor names follow Boson's released checkpoint (model.pth: `encoder.block.*`, `decoder_2.model.*`),
with legacy weight norm (weight_g, weight_v).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x):
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class WeightNormConv(nn.Module):
    """Conv1d / ConvTranspose1d with weight = g * v / |v| (norm over all but the first dimension)."""

    def __init__(self, weight_shape, bias: int, transpose=False, **conv_args):
        super().__init__()
        self.weight_v = nn.Parameter(torch.randn(weight_shape))
        self.weight_g = nn.Parameter(torch.ones(weight_shape[0], 1, 1))
        self.bias = nn.Parameter(torch.zeros(bias))
        self.transpose, self.conv_args = transpose, conv_args

    def forward(self, x):
        v = self.weight_v
        weight = self.weight_g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
        conv = F.conv_transpose1d if self.transpose else F.conv1d
        return conv(x, weight, self.bias, **self.conv_args)


def conv(cin, cout, kernel, dilation=1):
    return WeightNormConv((cout, cin, kernel), cout, dilation=dilation, padding=dilation * (kernel - 1) // 2)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(Snake(channels), conv(channels, channels, 7, dilation), Snake(channels),
                                   conv(channels, channels, 1))

    def forward(self, x):
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Three residual units (dilations 1, 3, 9), snake, downsampling conv (stride s); channels double."""

    def __init__(self, cin: int, stride: int):
        super().__init__()
        downsample = WeightNormConv((2 * cin, cin, 2 * stride), 2 * cin, stride=stride, padding=math.ceil(stride / 2))
        self.block = nn.Sequential(ResidualUnit(cin, 1), ResidualUnit(cin, 3), ResidualUnit(cin, 9), Snake(cin),
                                   downsample)

    def forward(self, x):
        return self.block(x)


class Encoder(nn.Module):
    """DAC encoder: conv in, one downsampling block per ratio, snake, conv out to the latent width."""

    def __init__(self, channels: int, ratios: list[int], latent: int):
        super().__init__()
        self.ratios = list(ratios)
        layers = [conv(1, channels, 7)]
        for i, stride in enumerate(ratios):
            layers.append(EncoderBlock(channels * 2**i, stride))
        out = channels * 2 ** len(ratios)
        layers += [Snake(out), conv(out, latent, 3)]
        self.block = nn.Sequential(*layers)

    def frames(self, samples: int) -> int:
        """Output length for an input of `samples` (only the strided convs change it)."""
        for stride in self.ratios:
            samples = (samples + 2 * math.ceil(stride / 2) - 2 * stride) // stride + 1
        return samples

    def forward(self, x):
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, upsampling transposed conv (stride s), three residual units (dilations 1, 3, 9)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        upsample = WeightNormConv((cin, cout, 2 * stride), cout, transpose=True, stride=stride,
                                  padding=math.ceil(stride / 2), output_padding=stride % 2)
        self.block = nn.Sequential(Snake(cin), upsample, ResidualUnit(cout, 1), ResidualUnit(cout, 3),
                                   ResidualUnit(cout, 9))

    def forward(self, x):
        return self.block(x)


class Decoder(nn.Module):
    """DAC decoder: conv in, one upsampling block per ratio (channels halve each time), snake, conv out.
    No tanh: Higgs leaves the waveform unbounded."""

    def __init__(self, latent: int, channels: int, ratios: list[int]):
        super().__init__()
        layers = [conv(latent, channels, 7)]
        for i, stride in enumerate(ratios):
            layers.append(DecoderBlock(channels // 2**i, channels // 2 ** (i + 1), stride))
        out = channels // 2 ** len(ratios)
        layers += [Snake(out), conv(out, 1, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)
