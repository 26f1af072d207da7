"""Products of 17-64 rows with int4 weights as one Triton kernel that reads torchao's packed weights once.

int4 engines keep torchao's weights as torch's int4 kernel (tinygemm, `_weight_int4pack_mm`) takes them. That
kernel serves products of one row well, but a program multiplies 16 rows of x at most and reads its weights again
for every 16 rows, dequantising each time (H200, 3B shape: frames of 4.6 and 14.8 ms at 16 and 64 rows, against
bf16's 2.8 and 3.5 ms; docs/performance.md). Here the same packed weights are read once per product: a program walks
its weight rows one group of 128 inputs at a time, takes the values out of their words in registers, and multiplies
on tensor cores.

The packed layout (`torch.ops.aten._convert_weight_to_int4pack` with 8 inner k-tiles, which torchao's
Int4TilePackedTo4dTensor fixes): int32 words [N / 8][K / 128][32][4]. For output row n and group g, the 16 words at
((n // 8) * K/128 + g) * 128 + (n % 8) * 16 hold its 128 values, word i = 4c + j and nibble p = 4h + 2t + e holding
input 32j + 16t + 8e + 2c + h of the group (the places tensor cores' m16n8k16 fragments want them in). Each value
q in 0..15 stands for (q - 8) * scale + zero, with one bf16 scale and zero per output row and group, as
scale_and_zero [K / 128][N][2]. The kernel sums scale * sum((q - 8) x) + zero * sum(x) per group in float32, so its
outputs differ from tinygemm's (which rounds each dequantised weight to bf16) in the last bits only.

Under torch.compile the kernel is a user-defined Triton kernel in the compiled graph. Triton's interpreter runs it
on a CPU (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from higgs_bench.backends.pytorch import int4_one_row
from higgs_bench.backends.pytorch.one_byte_rows import Blocks, programs_wanted, widest_fitting
from higgs_bench.backends.pytorch.quantised_linears import INT4_GROUP, Int4Linear

GROUP = INT4_GROUP  # inputs per group, and per loop step of the kernel
# Blocks by weight rows per program, widest first (outputs in multiples of tinygemm's tiles of 8 rows), measured at
# the 3B shape on an H200 (benchmarks/rows_probe_gpu.py --weights int4; docs/performance.md): at 64 rows 32 weight
# rows per program were within 4 % of the best of every product (24-60 us against tinygemm's 49-227 us). Up to 16
# rows tinygemm was faster than any blocks (its step of 16 rows 4.3 ms, the kernel's 8.4 ms): taking the values out
# of tinygemm's fragment order costs the kernel a pass through shared memory per group, so products of fewer than
# MIN_ROWS rows stay tinygemm's.
BLOCKS = [Blocks(64, 32, GROUP, 3, 4), Blocks(64, 16, GROUP, 3, 4), Blocks(64, 8, GROUP, 3, 4)]
MIN_ROWS, MAX_ROWS = 17, 64


@triton.jit(do_not_specialize=["M"])  # one compilation for every row count of a block
def int4_rows_kernel(x_ptr, w_ptr, sz_ptr, out_ptr, M, N, K, N_PACKED, GROUPS_PACKED, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, STAGES: tl.constexpr, WEIGHTS_FIRST: tl.constexpr):
    """This program's BLOCK_M rows of x [M, K] (bf16, contiguous) times BLOCK_N rows of the packed weights (module
    docstring; N_PACKED and GROUPS_PACKED are the packing's padded rows and groups), into out [M, N]."""
    dtype: tl.constexpr = out_ptr.dtype.element_ty
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    in_rows = (m < M)[:, None]
    x_at = x_ptr + m[:, None] * K + tl.arange(0, 128)[None, :]
    w_at = w_ptr + ((n // 8) * GROUPS_PACKED * 128 + (n % 8) * 16)[:, None] + tl.arange(0, 16)[None, :]
    sz_at = sz_ptr + n * 2
    shifts = tl.arange(0, 8) * 4
    if WEIGHTS_FIRST:
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for group in tl.range(0, K // 128, num_stages=STAGES):
        x = tl.load(x_at + group * 128, mask=in_rows, other=0)
        words = tl.load(w_at + group * 128)
        q = (words[:, :, None] >> shifts[None, None, :]) & 15  # [n, word i = 4c + j, nibble p = 4h + 2t + e]
        q = tl.permute(tl.reshape(q, (BLOCK_N, 4, 4, 2, 2, 2)), (0, 2, 4, 5, 1, 3))  # [n, j, t, e, c, h]
        w = (tl.reshape(q, (BLOCK_N, 128)) - 8).to(dtype)  # inputs in order: 32j + 16t + 8e + 2c + h
        scale = tl.load(sz_at + group * N_PACKED * 2).to(tl.float32)
        zero = tl.load(sz_at + group * N_PACKED * 2 + 1).to(tl.float32)
        x_sum = tl.sum(x.to(tl.float32), axis=1)
        if WEIGHTS_FIRST:
            acc += tl.dot(w, tl.trans(x)) * scale[:, None] + zero[:, None] * x_sum[None, :]
        else:
            acc += tl.dot(x, tl.trans(w)) * scale[None, :] + x_sum[:, None] * zero[None, :]
    if WEIGHTS_FIRST:
        acc = tl.trans(acc)
    tl.store(out_ptr + m[:, None] * N + n[None, :], acc.to(dtype), mask=in_rows)


def blocks_for(rows: int, outputs: int, programs_wanted: int) -> Blocks | None:
    """The widest BLOCKS that divide the outputs into at least `programs_wanted` programs (else the narrowest that
    divide them); None outside MIN_ROWS..MAX_ROWS rows or for outputs no blocks divide."""
    return widest_fitting(BLOCKS, rows, outputs, programs_wanted) if MIN_ROWS <= rows <= MAX_ROWS else None


def runs(x: torch.Tensor, linear: Int4Linear) -> bool:
    """Whether int4_rows_matmul takes this product: bf16 activations, MIN_ROWS to MAX_ROWS rows, inputs in whole
    groups, outputs its blocks divide."""
    return (x.dtype == torch.bfloat16 and linear.in_features % GROUP == 0
            and blocks_for(x.numel() // linear.in_features, linear.out_features, 1) is not None)


def int4_rows_matmul(x: torch.Tensor, qdata: torch.Tensor, scale_and_zero: torch.Tensor, outputs: int,
                     blocks: Blocks | None = None) -> torch.Tensor:
    """x [..., K] (bf16) times the packed int4 weight of `outputs` rows (module docstring) -> [..., outputs], what
    torchao's Int4TilePackedTo4dTensor linear computes (`runs` says which shapes it takes)."""
    inputs = x.shape[-1]
    rows = x.numel() // inputs
    blocks = blocks or blocks_for(rows, outputs, programs_wanted(x.device))
    flat = x.reshape(rows, inputs).contiguous()
    out = flat.new_empty(rows, outputs)
    grid = (outputs // blocks.outputs, triton.cdiv(rows, blocks.rows))
    int4_rows_kernel[grid](flat, qdata, scale_and_zero, out, rows, outputs, inputs, scale_and_zero.shape[1],
                           qdata.shape[1], BLOCK_M=blocks.rows, BLOCK_N=blocks.outputs, STAGES=blocks.stages,
                           WEIGHTS_FIRST=blocks.weights_first, num_warps=blocks.warps)
    return out.view(*x.shape[:-1], outputs)


def tinygemm_pack(values: torch.Tensor) -> torch.Tensor:
    """int4 values [N, K] (0..15; N a multiple of 8, K of 128) as packed int32 words in the layout the module
    docstring gives, which torch makes on CUDA only (`_convert_weight_to_int4pack`): for tests and probes on any
    device. Word i = 4c + j and nibble p = 4h + 2t + e of a row and group hold input 32j + 16t + 8e + 2c + h."""
    rows, inputs = values.shape
    split = values.reshape(rows // 8, 8, inputs // GROUP, 4, 2, 2, 4, 2)  # [n // 8, n % 8, group, j, t, e, c, h]
    nibbles = split.permute(0, 2, 1, 6, 3, 7, 4, 5).reshape(rows // 8, inputs // GROUP, 32, 4, 8).long()
    words = (nibbles << (4 * torch.arange(8, device=values.device))).sum(-1)
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


class Int4RowsLinear(Int4Linear):
    """An int4 linear (quantised_linears.py) on CUDA whose products of MIN_ROWS to MAX_ROWS rows take
    int4_rows_matmul, and of one row int4_one_row.py's kernel where it runs (quantize.INT4_ONE_ROW_KERNEL, from
    Hopper on: its scales in the kernel's order, `one_row_scales`, a buffer not kept with the weights); others stay
    torchao's (tinygemm)."""

    def __init__(self, in_features: int, out_features: int, **tensors: torch.Tensor):
        super().__init__(in_features, out_features, **tensors)
        fits = int4_one_row.fits(self.qdata, self.scale_and_zero)
        self.register_buffer("one_row_scales", int4_one_row.pack_scales(self.scale_and_zero) if fits else None,
                             persistent=False)
        self.one_row_pair = 1

    def pair_one_row_rows(self, pair: int) -> bool:
        """Have the kernel's units pair blocks of rows `pair` blocks apart (int4_one_row.first_block), as one_row.py's
        fused epilogues need; the product is the same. False where the kernel cannot take them so."""
        if self.one_row_scales is None or not int4_one_row.fits(self.qdata, self.scale_and_zero, pair):
            return False
        if pair != self.one_row_pair:  # packed for this pairing already (o's and down's: 1, as __init__ packs)
            self.one_row_scales, self.one_row_pair = int4_one_row.pack_scales(self.scale_and_zero, pair), pair
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.one_row_scales is not None and x.dtype == torch.bfloat16 and x.numel() == self.in_features:
            return torch.ops.higgs_bench.int4_one_row(x, self.qdata, self.one_row_scales, self.out_features,
                                                      self.one_row_pair)
        if runs(x, self):  # never one row: MIN_ROWS
            return int4_rows_matmul(x, self.qdata, self.scale_and_zero, self.out_features)
        return super().forward(x)
