"""Precision names (`precision.dtype`): one table for every backend and tool."""

from __future__ import annotations

import torch

TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TENSORRT = {"fp16": "float16", "bf16": "bfloat16"}  # TensorRT-LLM's names; its engines run these two


def bytes_per_value(name: str) -> int:
    return TORCH[name].itemsize
