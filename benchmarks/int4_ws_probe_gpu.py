"""int4 one-row products as warp-specialised Gluon kernels, one launch a product: do int4 weights read near copy
bandwidth when a loading warp streams them through TMA and the reduction runs on tensor cores, where tinygemm
(int4's one-row step today, its chain of 112 products 1.20 ms against a floor of 0.35) and every Triton kernel
tried (registers: 1.33 ms at best) did not?

    python benchmarks/int4_ws_probe_gpu.py OUT.json [--variants '[{"STAGES": 8}, ...]']   (from benchmarks/)
    python benchmarks/int4_ws_probe_gpu.py OUT.json --ptxas 90 [--variants ...]           # compile only, no GPU

The weights in a "pairs" layout of our own: the 64 bytes of a group of 128 inputs hold input j of the group in
the low nibble of byte j and input 64 + j in its high nibble; a scale and a zero point per group, the weight
(q - 8) * scale + zero as tinygemm's. Each program (one per SM) takes units of ROWS rows, dealt round-robin. Its
loading warp copies a unit's weights through TMA in buffers of [ROWS, 8 groups] (512 bytes a row) with the groups'
scales and zero points, into a ring of shared-memory buffers; it waits for nothing but a free buffer, so with PDL
(`launch_pdl`) it starts on its weights while the product before is still running. The reducing warps wait for
that product (griddepcontrol.wait), stage the input row in shared memory as float16 windows of 8 pieces of 64
inputs, and reduce each buffer on tensor cores as ws_chain_probe_gpu.py's int8 reduction does (read as A =
[8 * ROWS, 64], row i group i // ROWS of row i % ROWS; each row keeps the column of its own group): the nibbles made
float16 q - 8 by byte permutes (exactly), two products a buffer (low, high nibbles), weighed by the rows' group
scales and added with the zero points times the groups' input sums.

Against: tinygemm over torch's packing of the same values, and the floor of the chain's bytes (int4 values, scales,
zeros) at copy bandwidth. Each kind is checked against the dequantised weights in float32 first. Without --variants:
FASTEST. Measured on an H200 (docs/performance.md, twenty-fifth session): the chain of 112 products in 0.70 ms
against tinygemm's 1.21 (floor 0.35); the stream alone, one launch a product, 0.47 ms; the reduction's waits per
buffer, not its instruction count, what remains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from gemv_pdl_probe_gpu import LAYERS, chain, replay_us
from higgs_bench.backends.pytorch.int4_one_row import INT4_HALVES, ring_barriers
from int4_halves_probe_gpu import GROUP, KINDS, Int4Weight, random_int4, tinygemm_product
from ws_chain_probe_gpu import _free, _next_buffer

PIECE, PIECES = gl.constexpr(64), gl.constexpr(8)  # a buffer's row: 8 groups of 64 bytes (128 inputs)
BUFFER_INPUTS = gl.constexpr(2 * PIECE.value * PIECES.value)
SETTINGS = {"ROWS": 8, "STAGES": 16, "WARPS": 4, "LOADER_REGS": 40, "PDL": True, "MAXNREG": 128, "PER_SM": 1,
            "MATH": True, "LOP3": True, "PIPE": True, "FENCE": True, "WINDOW_ONCE": False, "X_SWIZZLE": False}
# ROWS: output rows a unit (8 * ROWS a multiple of 16 * WARPS: each warp one or more [16, 64] pieces of A); STAGES:
# ring buffers; WARPS: reducing warps (the loading warp is one more); LOADER_REGS: its registers per thread; PDL: with
# programmatic dependent launch, the weights loaded before the product ahead ends; MAXNREG: registers a thread at
# most (Gluon rounds the program to 8 warps: at 128, two programs fit an SM, so that the next product's can start);
# PER_SM: programs an SM; MATH False: a diagnostic whose reducing warps wait for the buffers and free them only;
# LOP3: nibbles decoded by INT4_BIASED (5 instructions a register) instead of INT4_HALVES (11); PIPE: each buffer's
# weights read and decoded while the buffer before is multiplied (the program's buffers as one loop, across units);
# diagnostics, timed unchecked: FENCE False frees buffers without the proxy fence before TMA may write them again;
# WINDOW_ONCE reads the input's first window pair once a program and multiplies every buffer by it; X_SWIZZLE: the
# input windows in shared memory swizzled (32-byte vectors, their order XORed by the piece's row mod 4), so that a
# warp's B operand loads meet each bank twice, not eight times
# the fastest chain measured (705 us against tinygemm's 1206, floor 350; docs/performance.md, twenty-fifth session)
FASTEST = {"PIPE": False, "ROWS": 16, "STAGES": 4, "LOP3": False, "PER_SM": 2, "X_SWIZZLE": True}
# the same four bytes as float16 1024 + q (low nibbles) and 1024 + 16 q (high nibbles), each two nibbles masked into
# the mantissa of 1024 at once (and + or: one LOP3), bytes in the order 0, 2, 1, 3 (the input row is staged in that
# order); the reduction takes the biases off the sums: sum (q - 8) x = sum (1024 + q) x - 1032 sum x, and the high
# nibbles' inputs are staged divided by 16: sum (1024 + 16 q) x / 16 - 72 sum x
INT4_BIASED = gl.constexpr("""{
.reg .b32 shifted;
shr.u32 shifted, $4, 8;
and.b32 $0, $4, 0x000f000f;
or.b32 $0, $0, 0x64006400;
and.b32 $1, shifted, 0x000f000f;
or.b32 $1, $1, 0x64006400;
and.b32 $2, $4, 0x00f000f0;
or.b32 $2, $2, 0x64006400;
and.b32 $3, shifted, 0x00f000f0;
or.b32 $3, $3, 0x64006400;
}""")


@gluon.jit
def _grid_dependence(launch_dependents: gl.constexpr, wait: gl.constexpr):
    """PDL: lets the next product's programs start (launch_dependents) / waits for the product ahead to end and its
    writes to be seen (wait)."""
    if launch_dependents:
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    if wait:
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _loader(w_desc, sz_desc, ready, empty, ring, sz_ring, UNITS: gl.constexpr, BUFFERS: gl.constexpr,
            STAGES: gl.constexpr, PDL: gl.constexpr):
    """Copies this program's units into the ring: a buffer = one tile of [8 groups x ROWS, 64] bytes and its block of
    scales and zero points."""
    _grid_dependence(PDL, False)
    i = gl.program_id(0) * 0
    for unit in range(gl.program_id(0), UNITS, gl.num_programs(0)):
        for b in range(BUFFERS):
            stage = i % STAGES
            mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(stage), w_desc.block_type.nbytes + sz_desc.block_type.nbytes)
            tile = unit * BUFFERS + b
            tma.async_copy_global_to_shared(w_desc, [tile * w_desc.block_type.shape[0], 0], ready.index(stage),
                                            ring.index(stage))
            tma.async_copy_global_to_shared(sz_desc, [tile * 2, 0], ready.index(stage),
                                            sz_ring.index(stage))
            i += 1


@gluon.jit
def _stage_input(x_ptr, x_smem, sums_smem, K: gl.constexpr, WINDOWS: gl.constexpr, LOP3: gl.constexpr):
    """The input row as float16 windows [2 * buffers (padded), 8, 64]: window 2b + h, piece p holds inputs
    128 (8 b + p) + 64 h onwards (h: the low nibbles' inputs, or the high ones'); and each piece's sum (float32).
    LOP3: each four inputs in the order 0, 2, 1, 3, the high nibbles' divided by 16 (INT4_BIASED), their sums
    multiplied back."""
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [gl.num_warps(), 1], [1, 0])
    piece = gl.arange(0, WINDOWS * PIECES, layout=gl.SliceLayout(1, layout))
    window = piece // PIECES
    start = (window // 2 * PIECES + piece % PIECES) * (2 * PIECE) + window % 2 * PIECE
    j = gl.arange(0, PIECE, layout=gl.SliceLayout(0, layout))
    if LOP3:
        j = (j & ~3) | ((j & 1) << 1) | ((j >> 1) & 1)
    at = start[:, None] + j[None, :]
    inside = (window < 2 * K // BUFFER_INPUTS)[:, None]  # WINDOWS: a power of two, the windows' count or more
    x = gl.load(x_ptr + at, mask=inside, other=0.0).to(gl.float32)
    divisor = gl.where((window % 2 == 1) & LOP3, 16.0, 1.0)
    staged = (x / divisor[:, None]).to(gl.float16)
    x_smem._reinterpret(gl.float16, [WINDOWS * PIECES, PIECE], x_smem.layout).store(staged)
    # the sums of the inputs as the tensor cores see them, so that INT4_BIASED's biases cancel to float32 roundoff
    sums_smem._reinterpret(gl.float32, [WINDOWS * PIECES], gl.SwizzledSharedLayout(1, 1, 1, [0])).store(
        gl.sum(staged.to(gl.float32), axis=1) * divisor)
    gl.thread_barrier()


@gluon.jit
def _release(empty, stage, FENCE: gl.constexpr):
    if FENCE:
        _free(empty, stage)
    else:
        mbarrier.arrive(empty.index(stage), count=1)


@gluon.jit
def _take(ring, sz, ready, empty, i, STAGES: gl.constexpr, LOP3: gl.constexpr, a_layout: gl.constexpr,
          rows_layout: gl.constexpr, FENCE: gl.constexpr):
    """The ring's i-th buffer once full: its weights decoded to float16 (low nibbles, high), its rows' scales and zero
    points; the buffer freed."""
    stage = _next_buffer(ready, i, STAGES)
    low, high = gl.inline_asm_elementwise(INT4_BIASED if LOP3 else INT4_HALVES, "=r,=r,=r,=r,r",
                                          [ring.index(stage).load(a_layout)], dtype=(gl.float16, gl.float16),
                                          is_pure=True, pack=4)
    scale = sz.index(2 * stage).load(rows_layout).to(gl.float32)
    zero = sz.index(2 * stage + 1).load(rows_layout).to(gl.float32)
    _release(empty, stage, FENCE)
    return low, high, scale, zero


@gluon.jit
def _window(x_smem, sums, b, b_layout: gl.constexpr, cols_layout: gl.constexpr):
    """The input's window pair b (low nibbles' inputs, high ones') as B operands, and their pieces' sums."""
    return (x_smem.index(2 * b).permute([1, 0]).load(b_layout), x_smem.index(2 * b + 1).permute([1, 0]).load(b_layout),
            sums.index(2 * b).load(cols_layout), sums.index(2 * b + 1).load(cols_layout))


@gluon.jit
def _accumulate(total, low, high, scale, zero, x_low, x_high, sums_low, sums_high, LOP3: gl.constexpr):
    """total plus a buffer's products (of _take's operands and its window pair), scaled, with the zero points times
    the groups' input sums."""
    nothing = gl.zeros_like(total)
    if LOP3:
        products = mma_v2(high, x_high, mma_v2(low, x_low, nothing))
        products -= (1032.0 * sums_low + 72.0 * sums_high)[None, :]
    else:
        products = mma_v2(low, x_low, nothing) + mma_v2(high, x_high, nothing)
    return total + products * scale[:, None] + zero[:, None] * (sums_low + sums_high)[None, :]


@gluon.jit
def _store(total, own, unit, y_ptr, ROWS: gl.constexpr):
    """The unit's rows of y: each A row's own column, the groups' rows added."""
    per_piece = gl.sum(gl.where(own, total, 0.0), axis=1)
    y = gl.sum(gl.reshape(per_piece, [PIECES, ROWS]), axis=0)
    rows = unit * ROWS + gl.arange(0, ROWS, layout=y.type.layout)
    gl.store(y_ptr + rows, y.to(gl.bfloat16))


@gluon.jit
def _reducer(x_ptr, y_ptr, ready, empty, ring, sz_ring, x_smem, sums_smem, K: gl.constexpr, UNITS: gl.constexpr,
             BUFFERS: gl.constexpr, WINDOWS: gl.constexpr, ROWS: gl.constexpr, STAGES: gl.constexpr,
             PDL: gl.constexpr, MATH: gl.constexpr, LOP3: gl.constexpr, PIPE: gl.constexpr, FENCE: gl.constexpr,
             WINDOW_ONCE: gl.constexpr):
    """y = W @ x of this program's units from the ring's buffers, in the order _loader filled them."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[gl.num_warps(), 1],
                                                  instr_shape=[16, 8])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)  # 4 bytes a register
    b_layout: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
    rows_layout: gl.constexpr = gl.SliceLayout(1, mma)
    cols_layout: gl.constexpr = gl.SliceLayout(0, mma)
    rowwise: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])  # rows of 1-d loads
    _grid_dependence(PDL, PDL)
    _stage_input(x_ptr, x_smem, sums_smem, K, WINDOWS, LOP3)
    sz = sz_ring._reinterpret(gl.bfloat16, [STAGES * 2, PIECES * ROWS], rowwise)
    sums = sums_smem._reinterpret(gl.float32, [WINDOWS, PIECES], rowwise)
    a_row = gl.arange(0, PIECES * ROWS, layout=rows_layout)
    own = gl.arange(0, PIECES, layout=cols_layout)[None, :] == (a_row // ROWS)[:, None]
    programs = gl.num_programs(0)
    if PIPE and MATH:
        count = (UNITS - gl.program_id(0) + programs - 1) // programs * BUFFERS  # this program's buffers
        low, high, scale, zero = _take(ring, sz, ready, empty, 0, STAGES, LOP3, a_layout, rows_layout, FENCE)
        total = gl.zeros([PIECES * ROWS, PIECES], gl.float32, mma)
        for t in range(1, count):  # buffer t read while t - 1 is multiplied
            next_low, next_high, next_scale, next_zero = _take(ring, sz, ready, empty, t, STAGES, LOP3, a_layout,
                                                               rows_layout, FENCE)
            b = (t - 1) % BUFFERS
            x_low, x_high, sums_low, sums_high = _window(x_smem, sums, b, b_layout, cols_layout)
            total = _accumulate(total, low, high, scale, zero, x_low, x_high, sums_low, sums_high, LOP3)
            if b == BUFFERS - 1:
                _store(total, own, gl.program_id(0) + (t - 1) // BUFFERS * programs, y_ptr, ROWS)
                total = gl.zeros([PIECES * ROWS, PIECES], gl.float32, mma)
            low, high, scale, zero = next_low, next_high, next_scale, next_zero
        x_low, x_high, sums_low, sums_high = _window(x_smem, sums, BUFFERS - 1, b_layout, cols_layout)
        total = _accumulate(total, low, high, scale, zero, x_low, x_high, sums_low, sums_high, LOP3)
        _store(total, own, gl.program_id(0) + (count - 1) // BUFFERS * programs, y_ptr, ROWS)
    else:
        i = gl.program_id(0) * 0
        first_low, first_high, first_sums_low, first_sums_high = _window(x_smem, sums, 0, b_layout, cols_layout)
        for unit in range(gl.program_id(0), UNITS, programs):
            total = gl.zeros([PIECES * ROWS, PIECES], gl.float32, mma)
            for b in range(BUFFERS):
                if MATH:
                    low, high, scale, zero = _take(ring, sz, ready, empty, i, STAGES, LOP3, a_layout, rows_layout,
                                                   FENCE)
                    if WINDOW_ONCE:
                        x_low, x_high, sums_low, sums_high = first_low, first_high, first_sums_low, first_sums_high
                    else:
                        x_low, x_high, sums_low, sums_high = _window(x_smem, sums, b, b_layout, cols_layout)
                    total = _accumulate(total, low, high, scale, zero, x_low, x_high, sums_low, sums_high, LOP3)
                else:
                    _free(empty, _next_buffer(ready, i, STAGES))
                i += 1
            _store(total, own, unit, y_ptr, ROWS)


@gluon.jit
def int4_ws_kernel(w_desc, sz_desc, x_ptr, y_ptr, K: gl.constexpr, UNITS: gl.constexpr, STAGES: gl.constexpr,
                   WINDOWS: gl.constexpr, LOADER_REGS: gl.constexpr, PDL: gl.constexpr, MATH: gl.constexpr,
                   LOP3: gl.constexpr, PIPE: gl.constexpr, FENCE: gl.constexpr, WINDOW_ONCE: gl.constexpr,
                   X_SWIZZLE: gl.constexpr):
    """y = W @ x, W [UNITS * ROWS, K] int4 in the pairs layout cut in tiles (w_desc: tiles() of it, a tile a box),
    sz_desc: each tile's scales and zero points as pack_scales lays them, [2, 8 * ROWS] a box."""
    ROWS: gl.constexpr = w_desc.block_type.shape[0] // PIECES
    BUFFERS: gl.constexpr = K // BUFFER_INPUTS
    ring = gl.allocate_shared_memory(gl.int8, [STAGES, PIECES * ROWS, PIECE], w_desc.layout)
    sz_ring = gl.allocate_shared_memory(gl.bfloat16, [STAGES, 2, PIECES * ROWS], sz_desc.layout)
    if X_SWIZZLE:
        x_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=16, per_phase=1, max_phase=4, order=[1, 0])
    else:
        x_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    x_smem = gl.allocate_shared_memory(gl.float16, [WINDOWS, PIECES, PIECE], x_layout)
    sums_smem = gl.allocate_shared_memory(gl.float32, [WINDOWS, PIECES],
                                          gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
    ready, empty = ring_barriers(STAGES)
    gl.warp_specialize([
        (_reducer, (x_ptr, y_ptr, ready, empty, ring, sz_ring, x_smem, sums_smem, K, UNITS, BUFFERS, WINDOWS, ROWS,
                    STAGES, PDL, MATH, LOP3, PIPE, FENCE, WINDOW_ONCE)),
        (_loader, (w_desc, sz_desc, ready, empty, ring, sz_ring, UNITS, BUFFERS, STAGES, PDL)),
    ], [1], [LOADER_REGS])


def pairs_layout(q: torch.Tensor) -> torch.Tensor:
    """int4 values [N, K] (0..15) as bytes [N, K / 2]: per group of 128 inputs, input j in the low nibble of byte j,
    input 64 + j in its high nibble."""
    n, k = q.shape
    halves = q.view(n, k // GROUP, 2, GROUP // 2)
    return (halves[:, :, 0] | (halves[:, :, 1] << 4)).reshape(n, k // 2).view(torch.int8).contiguous()


def tiles(pairs: torch.Tensor, rows: int) -> torch.Tensor:
    """The pairs layout [N, K / 2] as tiles of [8 groups x rows, 64 bytes], one a buffer, in the order of the units
    and their buffers: a buffer one TMA copy, read as the reduction's A."""
    n, half = pairs.shape
    per_row = half // PIECE.value
    return pairs.view(n // rows, rows, per_row // PIECES.value, PIECES.value, PIECE.value).permute(0, 2, 3, 1, 4) \
        .reshape(-1, PIECE.value).contiguous()


def pack_scales(scale: torch.Tensor, zero: torch.Tensor, rows: int) -> torch.Tensor:
    """Each buffer's scales and zero points in the order the reduction reads them: [units * buffers * 2, 8 * rows],
    the 2 being (scales, zeros) and entry p * rows + r that of row r's group p of the buffer."""
    n, groups = scale.shape
    pieces = PIECES.value

    def spread(t):  # [n, groups] -> [units, buffers, pieces, rows]
        return t.view(n // rows, rows, groups // pieces, pieces).permute(0, 2, 3, 1)
    return torch.stack([spread(scale), spread(zero)], dim=2).reshape(-1, pieces * rows).contiguous()


def windows(k: int) -> int:
    """Input windows of a product of k inputs (two a buffer), as a power of two."""
    return triton.next_power_of_2(2 * k // BUFFER_INPUTS.value)


def descriptors(tiled: torch.Tensor, sz: torch.Tensor, rows: int) -> tuple[TensorDescriptor, TensorDescriptor]:
    """TMA descriptors of a weight's tiles (tiles()) and of its packed scales (pack_scales()); they point into both,
    which must outlive them."""
    w_layout = gl.NVMMASharedLayout(swizzle_byte_width=PIECE.value, element_bitwidth=8, rank=2)
    sz_layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
    return (TensorDescriptor.from_tensor(tiled, [PIECES.value * rows, PIECE.value], w_layout),
            TensorDescriptor.from_tensor(sz, [2, PIECES.value * rows], sz_layout))


class Int4WsProduct:
    """One weight's descriptors and launch."""

    def __init__(self, w: Int4Weight, settings: dict):
        s = SETTINGS | settings
        self.settings, (self.n, self.k) = s, w.shape
        rows = s["ROWS"]
        if self.n % rows or self.k % BUFFER_INPUTS.value or PIECES.value * rows % (16 * s["WARPS"]):
            raise ValueError(f"[{self.n}, {self.k}] in units of {rows} rows and buffers of {BUFFER_INPUTS.value} "
                             "inputs, 8 * ROWS a multiple of 16 * WARPS")
        self.tiles = tiles(pairs_layout(w.q), rows)
        self.sz = pack_scales(w.scale, w.zero, rows)
        self.w_desc, self.sz_desc = descriptors(self.tiles, self.sz, rows)
        self.units = self.n // rows
        sms = torch.cuda.get_device_properties(w.q.device).multi_processor_count
        self.programs = min(self.units, s["PER_SM"] * sms)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        s = self.settings
        int4_ws_kernel[(self.programs,)](self.w_desc, self.sz_desc, x, y, K=self.k, UNITS=self.units,
                                         STAGES=s["STAGES"], WINDOWS=windows(self.k),
                                         LOADER_REGS=s["LOADER_REGS"], PDL=s["PDL"], MATH=s["MATH"],
                                         LOP3=s["LOP3"], PIPE=s["PIPE"], FENCE=s["FENCE"],
                                         WINDOW_ONCE=s["WINDOW_ONCE"], X_SWIZZLE=s["X_SWIZZLE"], num_warps=s["WARPS"], maxnreg=s["MAXNREG"], **({"launch_pdl": True} if s["PDL"] else {}))


def relative_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.float() - expected.float()).norm() / expected.float().norm()).item()


def check(variant: dict, device: torch.device) -> dict:
    """Each kind's product against the dequantised weights in float32, and tinygemm's against the same."""
    errors = {}
    for kind, (n, k) in KINDS.items():
        w = random_int4(n, k, device)
        x = torch.randn(k, device=device, dtype=torch.bfloat16)
        reference = w.dequantised() @ x.float()
        y = torch.empty(n, device=device, dtype=torch.bfloat16)
        Int4WsProduct(w, variant)(x, y)
        errors[kind] = relative_error(y, reference)
        tinygemm_product(kind, w, x, y)
        errors[f"{kind}/tinygemm"] = relative_error(y, reference)
    return errors


def ptxas_report(arch: int, variants: list[dict]) -> dict:
    """Registers, spills and shared memory of the kernel for each kind, compiled for sm_<arch> (no GPU)."""
    from one_row_registers import ptxas_usage
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    report = {}
    for variant in variants:
        s = SETTINGS | variant
        for kind, (n, k) in KINDS.items():
            w_desc, sz_desc = descriptors(torch.zeros(n * k // 128, PIECE.value, dtype=torch.int8),
                                          torch.zeros(64, PIECES.value * s["ROWS"], dtype=torch.bfloat16), s["ROWS"])
            types = {"w_desc": mangle_type(w_desc), "sz_desc": mangle_type(sz_desc), "x_ptr": "*bf16",
                     "y_ptr": "*bf16"} | {name: "constexpr" for name in int4_ws_kernel.arg_names if name.isupper()}
            constants = dict(K=k, UNITS=n // s["ROWS"], STAGES=s["STAGES"], WINDOWS=windows(k),
                             LOADER_REGS=s["LOADER_REGS"], PDL=s["PDL"], MATH=s["MATH"], LOP3=s["LOP3"],
                             PIPE=s["PIPE"], FENCE=s["FENCE"], WINDOW_ONCE=s["WINDOW_ONCE"],
                             X_SWIZZLE=s["X_SWIZZLE"])
            registers, spilled, shared = ptxas_usage(int4_ws_kernel, types, constants,
                                                     {"num_warps": s["WARPS"], "maxnreg": s["MAXNREG"]}, arch,
                                                     source=GluonASTSource)
            key = f"{json.dumps(variant)}/{kind}"
            report[key] = {"registers": registers, "spilled": spilled, "shared_kb": shared / 1024}
            print(key, report[key], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--variants", type=json.loads, default=[FASTEST])
    parser.add_argument("--ptxas", type=int, help="compile for this architecture only (no GPU needed)")
    args = parser.parse_args()
    if args.ptxas:
        args.out.write_text(json.dumps(ptxas_report(args.ptxas, args.variants), indent=1))
        return

    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    torch.manual_seed(0)
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12, "check": {}, "kinds": {}, "chain": {},
              "errors": {}}
    bandwidth = record["copy_bandwidth_tb_s"] * 1e12
    ws = {kind: [random_int4(n, k, device) for _ in range(LAYERS)] for kind, (n, k) in KINDS.items()}
    names = [json.dumps(v) for v in args.variants]
    products = {}
    for name, variant in zip(names, args.variants):
        try:
            record["check"][name] = check(variant, device)
            products[name] = {kind: [Int4WsProduct(w, variant) for w in ws[kind]] for kind in KINDS}
        except Exception as error:  # a variant past the GPU's limits: recorded, the others go on
            record["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
        print(name, record["check"].get(name), record["errors"].get(name, ""), flush=True)
    diagnostic = {name for name, variant in zip(names, args.variants)
                  if not (SETTINGS | variant)["MATH"] or (SETTINGS | variant)["WINDOW_ONCE"]}
    products = {name: p for name, p in products.items()
                if name in diagnostic or max(record["check"][name].values()) < 2e-2}  # diagnostics: timed unchecked
    layer_of = {id(w): layer for kind in KINDS for layer, w in enumerate(ws[kind])}

    def ws_product(name):
        return lambda kind, w, x, y: products[name][kind][layer_of[id(w)]](x, y)

    for kind, (n, k) in KINDS.items():
        bytes_per_layer = n * k // 2 + 2 * n * (k // GROUP) * 2
        run = chain({kind: ws[kind]}, [kind], device)
        row = {"floor_us": LAYERS * bytes_per_layer / bandwidth * 1e6, "tinygemm_us": replay_us(
            lambda: run(tinygemm_product))}
        row |= {name: replay_us(lambda name=name: run(ws_product(name))) for name in products}
        record["kinds"][kind] = row
        print(kind, json.dumps({key: round(value, 1) for key, value in row.items()}), flush=True)
    run = chain(ws, list(KINDS), device)
    record["chain"] = {"floor_us": sum(r["floor_us"] for r in record["kinds"].values()),
                       "tinygemm_us": replay_us(lambda: run(tinygemm_product))}
    record["chain"] |= {name: replay_us(lambda name=name: run(ws_product(name))) for name in products}
    print("chain of 112", json.dumps({key: round(value, 1) for key, value in record["chain"].items()}), flush=True)
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
