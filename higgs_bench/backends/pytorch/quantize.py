"""Quantised torch variants with torchao: the linears of `model.weights.quantised_linears` (the same ones the
TensorRT-LLM converter quantises; fused as the network holds them), in place, on the device they will run on.
Every scale is per output row or per group of inputs, so a fused weight gets the scales its parts would. Once
torchao has quantised them, each linear becomes one of quantised_linears.py's, which hold torchao's tensors as
plain ones (so that compiled functions can be kept whole) and compute torchao's products.

- int8: weight-only, per output channel (torchao `Int8WeightOnlyConfig`); runs on the CPU and CUDA. On CUDA its
  products of several rows take one_byte_rows.py's kernel (Int8RowsLinear), which reads each weight once.
- int4: weight-only, groups of 128 along the input, packed for torch's own int4 kernel (tinygemm,
  `Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")`); CUDA only. Its products of several rows can
  take int4_rows.py's kernel from 17 rows on, which reads the same packed weights once (Int4RowsLinear,
  INT4_ROWS_KERNEL), and its products of one row int4_one_row.py's from Hopper on (INT4_ONE_ROW_KERNEL).
- fp8: e4m3 weights with per-row scales and dynamically quantised per-row activations
  (`Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`); CUDA compute capability >= 8.9.
  A compiled product of one row takes `one_row_fp8` instead of `_scaled_mm` (quantised_linears.Float8Linear);
  one_row.py's kernels, which run one-row steps on CUDA by default, do its arithmetic too, and so can
  one_byte_rows.py's for products of several rows (Float8RowsLinear, FP8_ROWS_KERNEL).

torchao is imported only here, when a quantised variant is built (it is slow to import and prints notes about
optional kernels). Written against torchao 0.18.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from higgs_bench.backends.pytorch.network import network_linear
from higgs_bench.backends.pytorch.quantised_linears import (INT4_GROUP, Float8Linear, Int4Linear, Int8Linear,
                                                           QuantisedLinear)
from higgs_bench.errors import ConfigError
from higgs_bench.model.config import HiggsConfig
from higgs_bench.model.weights import quantised_linears

WEIGHT_KINDS = ("int8", "int4", "fp8")
# Bytes stored per quantised weight, scales included: int8 and fp8 one byte (a 16-bit scale per output row adds
# under 0.1 %), int4 half a byte plus a 16-bit scale and zero point per group of 128.
BYTES_PER_WEIGHT = {"int8": 1.0, "fp8": 1.0, "int4": 0.5 + 4 / INT4_GROUP}
FP8_CAPABILITY = (8, 9)
# Products of several rows on CUDA as one_byte_rows.rows_matmul (int8, fp8) or int4_rows.int4_rows_matmul (17-64
# rows), each measured faster than torchao's products in decode steps on an H200 (docs/performance.md)
INT8_ROWS_KERNEL, FP8_ROWS_KERNEL, INT4_ROWS_KERNEL = True, True, True
# int4's products of one row on CUDA from Hopper on as int4_one_row.py's kernel (with INT4_ROWS_KERNEL: the class
# Int4RowsLinear takes both), measured faster than tinygemm on an H200 (docs/performance.md)
INT4_ONE_ROW_KERNEL = True
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
        return Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d",
                                    set_inductor_config=False)
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)


def quantise(network: nn.Module, cfg: HiggsConfig, weights: str, device: torch.device) -> nn.Module:
    """Quantise `network`'s linears in place (it must already be on `device`, in its activation dtype)."""
    check_supported(weights, device)
    config = torchao_config(weights)
    from torchao.quantization import quantize_

    chosen = {network_linear(name) for name in quantised_linears(cfg)}
    sizes = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim)
    if weights == "int4" and any(size % INT4_GROUP for size in sizes):
        raise ConfigError(f"precision=int4 quantises in groups of {INT4_GROUP} inputs; this model's sizes (hidden "
                          f"{cfg.hidden_size}, intermediate {cfg.intermediate_size}) are not multiples of {INT4_GROUP}")
    quantize_(network, config, filter_fn=lambda module, name: name in chosen)
    engine_linear = linear_class(weights, device)
    for name in chosen:  # torchao's tensors taken out of its subclass (quantised_linears.py says why)
        network.set_submodule(name, engine_linear.of(network.get_submodule(name).weight))
    return network


def kept_quantised_linears(network: nn.Module, cfg: HiggsConfig, weights: str, device: torch.device,
                           tensors: dict[str, torch.Tensor]) -> None:
    """Put in `network` (built on the meta device) the quantised linears whose tensors an engine kept in
    `tensors`, as quantise made them."""
    check_supported(weights, device)
    engine_linear = linear_class(weights, device)
    for name in {network_linear(name) for name in quantised_linears(cfg)}:
        meta = network.get_submodule(name)
        kept = {key.removeprefix(f"{name}."): tensor for key, tensor in tensors.items() if key.startswith(f"{name}.")}
        network.set_submodule(name, engine_linear(meta.in_features, meta.out_features, **kept))


def linear_class(weights: str, device: torch.device) -> type[QuantisedLinear]:
    """The class the quantised linears take: for products of several rows on CUDA (from Ampere on)
    one_byte_rows.py's Int8RowsLinear (INT8_ROWS_KERNEL) or Float8RowsLinear (FP8_ROWS_KERNEL), or int4_rows.py's
    Int4RowsLinear (INT4_ROWS_KERNEL) (they import Triton, and on Turing their tensor-core products compile to
    spilling code), else quantised_linears.py's, with torchao's products only."""
    rows_kernel = {"int8": INT8_ROWS_KERNEL, "fp8": FP8_ROWS_KERNEL, "int4": INT4_ROWS_KERNEL}[weights]
    if rows_kernel and device.type == "cuda" and torch.cuda.get_device_capability(device) >= ROWS_CAPABILITY:
        from higgs_bench.backends.pytorch.int4_rows import Int4RowsLinear
        from higgs_bench.backends.pytorch.one_byte_rows import Float8RowsLinear, Int8RowsLinear

        return {"int8": Int8RowsLinear, "fp8": Float8RowsLinear, "int4": Int4RowsLinear}[weights]
    return {"int8": Int8Linear, "fp8": Float8Linear, "int4": Int4Linear}[weights]


def weight_bytes(shapes: dict[str, tuple[int, ...]], cfg: HiggsConfig, dtype_bytes: int, weights: str | None) -> int:
    """Bytes of the tensors `shapes` (canonical name -> shape) once the variant's linears are quantised."""
    quantised = {f"{name}.weight" for name in quantised_linears(cfg)} if weights else set()
    total = 0.0
    for name, shape in shapes.items():
        total += math.prod(shape) * (BYTES_PER_WEIGHT[weights] if name in quantised else dtype_bytes)
    return int(total)
