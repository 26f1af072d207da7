"""The linears of a quantised engine: the values and scales torchao computed (quantize.py), held as plain tensors,
with torchao's products over them.

torchao keeps a quantised weight as a tensor subclass (Int8Tensor, Float8Tensor, Int4TilePackedTo4dTensor) whose
linear dispatches to the products below. A function compiled ahead of time keeps its guards, and saving them
copies every weight to the meta device, which torchao's subclasses refuse (Int8Tensor: aten.empty_like is not
implemented); so the engine takes each subclass's tensors out once it is quantised, and its compiled functions are
kept whole in the engine folder as an unquantised engine's are (precompiled.py) instead of being traced by dynamo
at every start. Each product is what torchao 0.18's linear of that subclass computes (tests compare them with
torchao's own):

- int8 (Int8Tensor, weight-only per row): x @ W.to(x.dtype).T, rounded, times each output row's scale, rounded;
- fp8 (Float8Tensor, per-row scales and activations quantised per row): `torch._scaled_mm` of the fp8 rows and
  weights with both scales, fast accumulation as torchao's default config asks; a compiled product of one row is
  `one_row_fp8` instead (Float8Linear);
- int4 (Int4TilePackedTo4dTensor): torch's tinygemm (`_weight_int4pack_mm`) on bf16 activations padded, as
  torchao pads the packed weights' inputs, to a multiple of 1024.

On CUDA the rows classes (one_byte_rows.py, int4_rows.py) take products of several rows into their own kernels.
"""

from __future__ import annotations

import torch
from torch import nn

INT4_GROUP = 128  # inputs sharing one int4 scale and zero point (quantize.torchao_config)
PACKED_INPUTS = 1024  # torchao pads an int4 weight's inputs to a multiple of this before packing


class QuantisedLinear(nn.Module):
    """A linear without bias whose weight torchao quantised: its tensors as buffers, so that a compiled function
    guards on them as on any tensor."""

    def __init__(self, in_features: int, out_features: int, **tensors: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        for name, tensor in tensors.items():  # contiguous, as safetensors keeps them (engine_weights.py)
            self.register_buffer(name, tensor.contiguous())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8Linear(QuantisedLinear):
    """qdata [out, in] int8, scale [out] (the activations' dtype)."""

    @classmethod
    def of(cls, weight) -> Int8Linear:  # torchao's Int8Tensor
        outputs, inputs = weight.qdata.shape
        return cls(inputs, outputs, qdata=weight.qdata, scale=weight.scale.reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # converted, then transposed: torchao's order would match Inductor's pattern for torch's
        # _weight_int8pack_mm, whose lowering fails on a CPU (torch 2.13: an assertion on ir.Pointwise)
        product = torch.mm(x.reshape(-1, self.in_features), self.qdata.to(x.dtype).t())
        return (product * self.scale.to(product.dtype)).reshape(*x.shape[:-1], self.out_features)


class Float8Linear(QuantisedLinear):
    """qdata [out, in] e4m3, scale [out, 1] float32. torchao runs every product as `_scaled_mm`, whose kernels work
    in tiles of 64-128 rows: at one row they read the weights at under half the memory bandwidth
    (docs/performance.md). A compiled product of one row is `one_row_fp8` instead, the same arithmetic as one
    matrix-vector product that Inductor fuses with the quantisation of its row (engines compiled with
    coordinate-descent tuning turn it into one tuned reduction, backend.CUDA_INDUCTOR_OPTIONS)."""

    @classmethod
    def of(cls, weight) -> Float8Linear:  # torchao's Float8Tensor
        outputs, inputs = weight.qdata.shape
        return cls(inputs, outputs, qdata=weight.qdata, scale=weight.scale.reshape(outputs, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if torch.compiler.is_compiling() and flat.shape[0] == 1:
            out = one_row_fp8(flat, self.qdata, self.scale)
        else:
            x_fp8, x_scale = fp8_activations(flat, self.qdata.dtype)
            out = torch._scaled_mm(x_fp8, self.qdata.t(), scale_a=x_scale, scale_b=self.scale.t(),
                                   out_dtype=x.dtype, use_fast_accum=True)
        return out.view(*x.shape[:-1], self.out_features)


class Int4Linear(QuantisedLinear):
    """qdata: the packed int32 words (int4_rows.py's docstring gives their layout), scale_and_zero
    [in / INT4_GROUP][out, padded][2] bf16."""

    @classmethod
    def of(cls, weight) -> Int4Linear:  # torchao's Int4TilePackedTo4dTensor
        outputs, inputs = weight.shape
        return cls(inputs, outputs, qdata=weight.qdata, scale_and_zero=weight.scale_and_zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:  # tinygemm refuses no rows (an eager prefill's audio MLP on a text-only prompt)
            return x.new_empty(*x.shape[:-1], self.out_features)
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        padded = torch.nn.functional.pad(flat, (0, -self.in_features % PACKED_INPUTS))
        out = torch.ops.aten._weight_int4pack_mm(padded, self.qdata, INT4_GROUP, self.scale_and_zero)
        return out[:, :self.out_features].reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def fp8_activations(x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """x [R, in] quantised per row to fp8 as torchao quantises activations (scale = row's max |x| / the fp8
    maximum), the scale in float32 as a compiled torchao product computes it (Inductor keeps the division in float32;
    torchao's eager product rounds it to x's dtype first, which moves about one value in a hundred by an fp8 step)
    -> (x in fp8, scales [R, 1] float32)."""
    fp8_max = torch.finfo(dtype).max
    x_scale = x.float().abs().amax(dim=-1, keepdim=True) / fp8_max
    return (x.float() / x_scale).clamp(-fp8_max, fp8_max).to(dtype), x_scale


def one_row_fp8(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [R, in] quantised per row (fp8_activations), times the fp8 weights, products summed in float32 and
    scaled: what `_scaled_mm` computes."""
    x_fp8, x_scale = fp8_activations(x, qdata.dtype)
    out = torch.mm(x_fp8.float(), qdata.float().t()) * x_scale * scale.float().t()
    return out.to(x.dtype)
