"""Quantised torch variants with torchao: the linears of `model.weights.quantised_linears` (the same ones the
TensorRT-LLM converter quantises; fused as the network holds them), in place, on the device they will run on.
Every scale is per output row or per group of inputs, so a fused weight gets the scales its parts would.

- int8: weight-only, per output channel (torchao `Int8WeightOnlyConfig`); runs on the CPU and CUDA. On CUDA its
  products of several rows take one_byte_rows.py's kernel (Int8Linear), which reads each weight once.
- int4: weight-only, groups of 128 along the input, packed for torch's own int4 kernel (tinygemm,
  `Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")`); CUDA only. Its products of several rows can
  take int4_rows.py's kernel from 17 rows on, which reads the same packed weights once (Int4Linear,
  INT4_ROWS_KERNEL).
- fp8: e4m3 weights with per-row scales and dynamically quantised per-row activations
  (`Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`); CUDA compute capability >= 8.9.
  A compiled product of one row takes `one_row_fp8` instead of torchao's `_scaled_mm` (Float8Linear); one_row.py's
  kernels, which run one-row steps on CUDA by default, do its arithmetic too, and so can one_byte_rows.py's for
  products of several rows (Float8RowsLinear, FP8_ROWS_KERNEL).

torchao is imported only here, when a quantised variant is built (it is slow to import and prints notes about
optional kernels). Written against torchao 0.18.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from higgs_bench.backends.pytorch.network import network_linear
from higgs_bench.errors import ConfigError
from higgs_bench.model.config import HiggsConfig
from higgs_bench.model.weights import quantised_linears

WEIGHT_KINDS = ("int8", "int4", "fp8")
# Bytes stored per quantised weight, scales included: int8 and fp8 one byte (a 16-bit scale per output row adds
# under 0.1 %), int4 half a byte plus a 16-bit scale and zero point per group of 128.
BYTES_PER_WEIGHT = {"int8": 1.0, "fp8": 1.0, "int4": 0.5 + 4 / 128}
FP8_CAPABILITY = (8, 9)
# Products of several rows on CUDA as one_byte_rows.rows_matmul (int8, fp8) or int4_rows.int4_rows_matmul (17-64
# rows), each measured faster than torchao's products in decode steps on an H200 (docs/performance.md)
INT8_ROWS_KERNEL, FP8_ROWS_KERNEL, INT4_ROWS_KERNEL = True, True, True
ROWS_CAPABILITY = (8, 0)


def check_supported(weights: str, device: torch.device) -> None:
    """ConfigError naming what the kind needs when this device cannot run it."""
    if weights not in WEIGHT_KINDS:
        raise ConfigError(f"precision weights={weights!r}: the torch backend runs {', '.join(WEIGHT_KINDS)}")
    if weights in ("int4", "fp8") and device.type != "cuda":
        need = "an NVIDIA GPU of compute capability >= 8.9 (Ada, Hopper)" if weights == "fp8" else "an NVIDIA GPU"
        raise ConfigError(f"precision={weights} on the torch backend needs {need}: torchao's {weights} kernels run "
                          "only on CUDA. On the CPU use precision=int8")
    if weights == "fp8" and torch.cuda.get_device_capability(device) < FP8_CAPABILITY:
        major, minor = torch.cuda.get_device_capability(device)
        raise ConfigError(f"precision=fp8 needs compute capability >= 8.9 (this GPU is {major}.{minor}); "
                          "use precision=int8 or int4")


def torchao_config(weights: str):
    for noisy in ("torchao", "torch.utils._pytree"):  # notes about optional kernels this run does not use
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    # set_inductor_config=False: torchao would otherwise change Inductor's settings for the whole process, so
    # that a bf16 variant compiled after a quantised one in a sweep would differ from one compiled alone
    if weights == "int8":
        return Int8WeightOnlyConfig(set_inductor_config=False)
    if weights == "int4":
        return Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d", set_inductor_config=False)
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)


def quantise(network: nn.Module, cfg: HiggsConfig, weights: str, device: torch.device) -> nn.Module:
    """Quantise `network`'s linears in place (it must already be on `device`, in its activation dtype)."""
    check_supported(weights, device)
    config = torchao_config(weights)
    from torchao.quantization import quantize_

    chosen = {network_linear(name) for name in quantised_linears(cfg)}
    if weights == "int4" and (cfg.hidden_size % 128 or cfg.intermediate_size % 128 or cfg.num_heads * cfg.head_dim % 128):
        raise ConfigError(f"precision=int4 quantises in groups of 128 inputs; this model's sizes (hidden "
                          f"{cfg.hidden_size}, intermediate {cfg.intermediate_size}) are not multiples of 128")
    quantize_(network, config, filter_fn=lambda module, name: name in chosen)
    chosen_class = linear_class(weights, device)
    for name, module in network.named_modules():
        if name in chosen and chosen_class is not None:
            module.__class__ = chosen_class
    return network


def linear_class(weights: str, device: torch.device):
    """The class the quantised linears take, if not torchao's own: for products of several rows on CUDA (from
    Ampere on) one_byte_rows.py's Int8Linear (INT8_ROWS_KERNEL) or Float8RowsLinear (FP8_ROWS_KERNEL), or
    int4_rows.py's Int4Linear (INT4_ROWS_KERNEL) (they import Triton, and on Turing their tensor-core products
    compile to spilling code), else Float8Linear for fp8."""
    rows_kernel = {"int8": INT8_ROWS_KERNEL, "fp8": FP8_ROWS_KERNEL, "int4": INT4_ROWS_KERNEL}[weights]
    if rows_kernel and device.type == "cuda" and torch.cuda.get_device_capability(device) >= ROWS_CAPABILITY:
        from higgs_bench.backends.pytorch.int4_rows import Int4Linear
        from higgs_bench.backends.pytorch.one_byte_rows import Float8RowsLinear, Int8Linear

        return {"int8": Int8Linear, "fp8": Float8RowsLinear, "int4": Int4Linear}[weights]
    return Float8Linear if weights == "fp8" else None


class Float8Linear(nn.Linear):
    """A linear holding torchao's fp8 weight (qdata [out, in] e4m3, scale [out, 1]). torchao runs every product
    as `_scaled_mm`, whose kernels work in tiles of 64-128 rows: at one row they read the weights at under half
    the memory bandwidth (docs/performance.md). A compiled product of one row is `one_row_fp8` instead, the same
    arithmetic as one matrix-vector product that Inductor fuses with the dequantisation (engines compiled with
    coordinate-descent tuning turn it into one tuned reduction, backend.CUDA_INDUCTOR_OPTIONS)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.numel() == x.shape[-1]:
            out = one_row_fp8(x.reshape(1, -1), self.weight.qdata, self.weight.scale)
            return out.view(*x.shape[:-1], -1)
        return super().forward(x)


def fp8_activations(x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """x [R, in] quantised per row to fp8 as torchao quantises activations (scale = row's max |x| / the fp8
    maximum, in float32 as Inductor computes it) -> (x in fp8, scales [R, 1] float32)."""
    fp8_max = torch.finfo(dtype).max
    x_scale = x.float().abs().amax(dim=-1, keepdim=True) / fp8_max
    return (x.float() / x_scale).clamp(-fp8_max, fp8_max).to(dtype), x_scale


def one_row_fp8(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [R, in] quantised per row (fp8_activations), times the fp8 weights, products summed in float32 and
    scaled: what `_scaled_mm` computes."""
    x_fp8, x_scale = fp8_activations(x, qdata.dtype)
    out = torch.mm(x_fp8.float(), qdata.float().t()) * x_scale * scale.float().t()
    return out.to(x.dtype)


def weight_bytes(shapes: dict[str, tuple[int, ...]], cfg: HiggsConfig, dtype_bytes: int, weights: str | None) -> int:
    """Bytes of the tensors `shapes` (canonical name -> shape) once the variant's linears are quantised."""
    quantised = {f"{name}.weight" for name in quantised_linears(cfg)} if weights else set()
    total = 0.0
    for name, shape in shapes.items():
        total += math.prod(shape) * (BYTES_PER_WEIGHT[weights] if name in quantised else dtype_bytes)
    return int(total)
