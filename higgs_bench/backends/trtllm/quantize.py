"""Quantisation maths of the converter, in plain torch: symmetric per-channel weight-only (int8, int4) and
per-tensor fp8 (e4m3). Scales are what TensorRT-LLM multiplies by: value ~= quantised * scale."""

from __future__ import annotations

import torch

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def weight_only(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (int8 values [in, out] in -2^(b-1)+1 .. 2^(b-1)-1, per-output-channel scale [out])."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / qmax
    q = torch.round(w / scale[:, None]).clamp(-qmax, qmax).to(torch.int8)
    return q.T.contiguous(), scale


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 [in, out] holding int4 values -> [in, out / 2], two per byte: even column low nibble, odd high."""
    if q.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even number of output features, got {q.shape[-1]}")
    low, high = q[..., 0::2], q[..., 1::2]
    return ((low & 0x0F) | (high << 4)).to(torch.int8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low = (packed << 4) >> 4  # arithmetic shifts sign-extend the nibbles
    high = packed >> 4
    return torch.stack([low, high], dim=-1).flatten(-2)


def dequantize_weight_only(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of weight_only: [in, out] values and [out] scales -> weight [out, in]."""
    return (q.float() * scale[None, :]).T


def fp8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight -> (float8_e4m3fn weight, per-tensor scale [1])."""
    scale = (weight.float().abs().amax().clamp(min=1e-12) / FP8_MAX).reshape(1)
    return (weight.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def fp8_scale(amax: float) -> torch.Tensor:
    """An activation or KV-cache scale from a calibrated absolute maximum."""
    return torch.tensor([max(amax, 1e-12) / FP8_MAX], dtype=torch.float32)
