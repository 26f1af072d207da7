"""The semantic half of the Higgs Audio v2 tokenizer: HuBERT features of the 16 kHz waveform, averaged
over all hidden states and taken at the codec's frame rate, then a small convolutional encoder.

HuBERT is transformers' `HubertModel` (4.57.x, the TensorRT-LLM pin). Names follow Boson's model.pth
(`semantic_model.*`, `encoder_semantic.*`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HUBERT_PAD = 160  # samples at 16 kHz on each side, so HuBERT's frames are centred like the codec's


class Conv(nn.Module):
    """A Conv1d one level down (`.conv.weight`), as Boson's semantic module names it."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=(kernel - 1) // 2, bias=bias)

    def forward(self, x):
        return self.conv(x)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = Conv(channels, channels, 3, bias=False)
        self.conv2 = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x):
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.res_units = nn.ModuleList([ResidualUnit(channels), ResidualUnit(channels)])
        self.conv = Conv(channels, channels, 3, bias=True)

    def forward(self, x):
        for unit in self.res_units:
            x = unit(x)
        return self.conv(x)


class SemanticEncoder(nn.Module):
    """conv, then two blocks of (two ELU residual units, conv); stride 1 throughout, width unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, 3, bias=False)
        self.conv_blocks = nn.ModuleList([Block(channels), Block(channels)])

    def forward(self, x):
        x = self.conv(x)
        for block in self.conv_blocks:
            x = block(x)
        return x


def make_hubert(config: dict) -> nn.Module:
    from transformers import HubertConfig, HubertModel  # imported here: only encoding needs it

    return HubertModel(HubertConfig(**config)).eval()


def hubert_features(hubert: nn.Module, wave_16k: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, samples] at 16 kHz -> [B, frames, hidden]: the mean of all hidden states, every `stride`-th frame."""
    states = hubert(F.pad(wave_16k, (HUBERT_PAD, HUBERT_PAD)), output_hidden_states=True).hidden_states
    return torch.stack(states, dim=1).mean(dim=1)[:, ::stride]
