"""Products of several rows with one-byte weights (int8 weight-only, fp8) as one Triton kernel that reads each
weight once.

torchao's weight-only int8 product is `x @ W.to(x.dtype).T`, rounded, times each output row's scale, rounded
(Int8Tensor's linear). Compiled by Inductor it becomes a kernel that writes the weights out as 16-bit values and
cuBLAS reads them back: three bytes moved per weight instead of one, which made int8 engines slower than bf16
at every batch of several rows (H200, 3B shape: 5.3-6.4 ms a frame at 4-64 rows against bf16's 2.6-3.5 ms,
docs/performance.md). Inductor's own GEMM templates fuse the conversion, but autotune every shape at every build
(43 s for one shape). Here the same arithmetic is a GEMM whose program walks its weight rows BLOCK_K inputs at a
time (Triton pipelines the loads through shared memory), converts them in registers and multiplies on tensor
cores, with blocks measured once (FEW_ROWS_BLOCKS, MANY_ROWS_BLOCKS) rather than tuned at every build.

fp8 (Float8RowsLinear, quantize.FP8_ROWS_KERNEL): the rows quantised to fp8 as torchao
quantises activations (quantised_linears.fp8_activations, fused by Inductor before the kernel), fp8 products on tensor
cores summed in float32, times both scales, rounded once: what quantised_linears.one_row_fp8 and `_scaled_mm` compute.

Under torch.compile the kernel is a user-defined Triton kernel in the compiled graph. Triton's interpreter runs it
on a CPU (tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from higgs_bench.backends.pytorch.quantised_linears import Float8Linear, Int8Linear, fp8_activations

WEIGHT_KINDS = {torch.int8: "int8", torch.float8_e4m3fn: "fp8"}  # the kernel's WEIGHTS, by the weights' dtype


@dataclass(frozen=True)
class Blocks:
    """A launch of rows_kernel: rows of x per program, weight rows per program, inputs per loop step,
    loads in flight (stages), warps, and whether the weight tile is the product's left operand (W @ x.T: the
    tile is then what tensor cores take from registers, converted there)."""

    rows: int
    outputs: int
    inputs: int
    stages: int
    warps: int
    weights_first: bool = False


# Blocks by weight rows per program, widest first, for products of up to 16 rows of x and of 17-64, measured at the
# 3B shape on an H200 (benchmarks/rows_probe_gpu.py: 28 products of each kind in a CUDA graph; figures in
# docs/performance.md). Up to 16 rows the first block was the fastest for o and down; at 64 rows the fastest width
# gave each product at least half as many programs as SMs (q/k/v 64, o and down 32, gate/up 128). Products of more
# rows (prefills of longer prompts) stay torchao's: at 256 rows the best blocks took 2.1-2.7x cuBLAS's time over
# bf16 weights, more than converting the weights first adds to cuBLAS's (estimated from bytes, not timed).
# fp8 takes int8's blocks (its steps of 4/16/64 rows 2.12/2.15/3.07 ms against _scaled_mm's 2.60/2.76/3.11 ms).
FEW_ROWS_BLOCKS = [Blocks(16, 32, 256, 4, 4), Blocks(16, 16, 256, 4, 4)]
MANY_ROWS_BLOCKS = [Blocks(64, 128, 128, 3, 8, weights_first=True), Blocks(64, 64, 128, 4, 4),
                    Blocks(64, 32, 128, 4, 4), Blocks(64, 16, 128, 4, 4)]
MAX_ROWS = 64
MIN_INPUTS = 32  # inputs per step: fp8 products on tensor cores take 32 at a time


@triton.jit(do_not_specialize=["M"])  # one compilation for every row count of a block
def rows_kernel(x_ptr, x_scale_ptr, w_ptr, scale_ptr, out_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, STAGES: tl.constexpr, WEIGHTS_FIRST: tl.constexpr, WEIGHTS: tl.constexpr):
    """This program's BLOCK_M rows of x times BLOCK_N rows of W, x [M, K] and W [N, K] contiguous (N and K
    multiples of the blocks), into out [M, N] (16-bit). int8: x 16-bit, out = rounded(rounded(sum_k x W) * scale).
    fp8: x and W e4m3 (read as int8), out = rounded(sum_k x W * x_scale[m] * scale[n]) in float32."""
    dtype: tl.constexpr = out_ptr.dtype.element_ty
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    k = tl.arange(0, BLOCK_K)
    in_rows = (m < M)[:, None]
    x_at = x_ptr + m[:, None] * K + k[None, :]
    w_at = w_ptr + n[:, None] * K + k[None, :]
    if WEIGHTS_FIRST:
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        x = tl.load(x_at + start, mask=in_rows, other=0)
        w = tl.load(w_at + start)
        if WEIGHTS == "fp8":
            x, w = x.to(tl.float8e4nv, bitcast=True), w.to(tl.float8e4nv, bitcast=True)
        else:
            w = w.to(dtype)
        if WEIGHTS_FIRST:
            acc = tl.dot(w, tl.trans(x), acc)
        else:
            acc = tl.dot(x, tl.trans(w), acc)
    if WEIGHTS_FIRST:
        acc = tl.trans(acc)
    if WEIGHTS == "fp8":
        x_scale = tl.load(x_scale_ptr + m, mask=m < M, other=0.0)
        out = acc * x_scale[:, None] * tl.load(scale_ptr + n).to(tl.float32)[None, :]
    else:
        out = acc.to(dtype).to(tl.float32) * tl.load(scale_ptr + n).to(dtype).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None] * N + n[None, :], out.to(dtype), mask=in_rows)


def blocks_for(rows: int, outputs: int, inputs: int, programs_wanted: int) -> Blocks | None:
    """The widest blocks of the row count's table that divide the outputs into at least `programs_wanted`
    programs (else the narrowest that divide them), inputs per step halved (down to MIN_INPUTS) until they divide
    the inputs; None over MAX_ROWS rows or for sizes that no blocks divide."""
    table = FEW_ROWS_BLOCKS if rows <= FEW_ROWS_BLOCKS[0].rows else MANY_ROWS_BLOCKS
    blocks = widest_fitting(table, rows, outputs, programs_wanted)
    if rows > MAX_ROWS or blocks is None:
        return None
    depth = blocks.inputs
    while depth > MIN_INPUTS and inputs % depth:
        depth //= 2
    return None if inputs % depth else replace(blocks, inputs=depth)


def widest_fitting(table: list[Blocks], rows: int, outputs: int, programs_wanted: int) -> Blocks | None:
    """The first (widest) blocks of `table` that divide the outputs into at least `programs_wanted` programs, else
    the narrowest that divide them; None when none do."""
    fitting = [b for b in table if outputs % b.outputs == 0]
    return next((b for b in fitting if outputs // b.outputs * triton.cdiv(rows, b.rows) >= programs_wanted),
                fitting[-1] if fitting else None)


def programs_wanted(device: torch.device) -> int:
    """Half as many programs as the GPU has SMs (blocks_for); any number in Triton's interpreter."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).multi_processor_count // 2


def runs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether rows_matmul takes this product: 16-bit activations, int8 or fp8 weights, at most MAX_ROWS rows,
    sizes its blocks divide."""
    return (x.dtype in (torch.float16, torch.bfloat16) and weight.dtype in WEIGHT_KINDS
            and blocks_for(x.numel() // x.shape[-1], weight.shape[0], weight.shape[1], 1) is not None)


def rows_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                blocks: Blocks | None = None) -> torch.Tensor:
    """x [..., K] (16-bit) times a one-byte weight [N, K] with per-row scales [N] (or [N, 1]) -> [..., N], as
    torchao's weight-only int8 linear or its fp8 linear (quantised_linears.one_row_fp8's arithmetic) computes it (`runs`
    says which shapes it takes)."""
    rows, (outputs, inputs) = x.numel() // x.shape[-1], weight.shape
    blocks = blocks or blocks_for(rows, outputs, inputs, programs_wanted(x.device))
    flat = x.reshape(rows, inputs).contiguous()
    out = flat.new_empty(rows, outputs)
    kind = WEIGHT_KINDS[weight.dtype]
    if kind == "fp8":
        flat, x_scale = fp8_activations(flat, weight.dtype)
    else:
        x_scale = scale  # unused
    grid = (outputs // blocks.outputs, triton.cdiv(rows, blocks.rows))
    rows_kernel[grid](flat.view(torch.int8) if kind == "fp8" else flat, x_scale, weight.view(torch.int8),
                      scale.reshape(-1), out, rows, outputs, inputs, BLOCK_M=blocks.rows, BLOCK_N=blocks.outputs,
                      BLOCK_K=blocks.inputs, STAGES=blocks.stages, WEIGHTS_FIRST=blocks.weights_first, WEIGHTS=kind,
                      num_warps=blocks.warps)
    return out.view(*x.shape[:-1], outputs)


class RowsKernel:
    """A quantised linear with one-byte weights (quantised_linears.py: qdata [out, in], scale) on CUDA whose products
    of 2 to MAX_ROWS rows (decode steps of several rows, prefills of short prompts) take rows_matmul; others stay
    with the class it is mixed into (a one-row step runs one_row.py's kernels by default)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.shape[-1] and runs(x, self.qdata):
            return rows_matmul(x, self.qdata, self.scale)
        return super().forward(x)


class Int8RowsLinear(RowsKernel, Int8Linear):
    """int8 weights; other products are torchao's weight-only product."""


class Float8RowsLinear(RowsKernel, Float8Linear):
    """fp8 weights; other products are Float8Linear's (`_scaled_mm`, or one_row_fp8 for one compiled row)."""
