"""The one-row decode step's layers as five Triton kernels each, for 16-bit, int8 (weight-only) or fp8 weights
(int4 weights: the products as int4_one_row.py's Gluon kernel, with the same work fused around them).

At one row every product reads a weight matrix once for one input row, so a step is 112 matrix-vector products
that each cost a few microseconds above their bytes' time at memory bandwidth, plus a dozen small kernels per
layer around them (docs/performance.md). Here each product is one kernel in which every program loads its whole
tile of weight rows at once (all of its reads in flight together) and does the small work around it:

- `qkv_kernel`: the input RMSNorm, the q/k/v product, RoPE on q and k, and k and v written into the cache column;
- `attention_kernel`: decode attention over the cache, split over its columns, the splits combined by the last
  program of each key/value head;
- `residual_kernel`: the o product added to the residual stream, in place (and the down product likewise);
- `gate_up_kernel`: the post-attention RMSNorm, the gate/up product and SiLU(gate) * up.

On Hopper and later each kernel is launched with programmatic dependent launch (PDL): it may start while the
kernel ahead of it ends, and waits for it (`griddepcontrol.wait`) before reading anything. int8 weights become
floats by byte permutes in PTX (DECODE_INT8), exactly as converting. Rounding follows network.py's operations
in the activation dtype. Rows are paired where the epilogue needs two of them: RoPE's
(d, d + half a head) and gate/up's (i, intermediate + i), so no weight is reordered or copied. An fp8 product
quantises its input row in each program, as torchao quantises the activations. Triton's interpreter runs these
kernels on a CPU (tests).

int4 weights (from Hopper on, int4_one_row.runs_on) take int4_one_row.py's warp-specialised kernel for the four
products, whose epilogues do the same work: the input RMSNorm before q/k/v and RoPE after, the residual added after
o and down, the post-attention norm before gate/up and SiLU(gate) * up after; attention is attention_kernel. Its
loading warp starts reading a product's weights while the kernel ahead ends (PDL), where Inductor's kernels around
tinygemm-like products could not (docs/performance.md).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from higgs_bench.backends.pytorch.kernel_cache import KernelCache
from higgs_bench.errors import ConfigError
from higgs_bench.model.config import DUAL, SKIP, HiggsConfig

if TYPE_CHECKING:
    from higgs_bench.backends.pytorch.int4_one_row import OneRowProduct

# Rows per program and warps, by product, measured at the 3B shape on an H200: the fastest chain of 28 products
# per kind with PDL (benchmarks/gemv_pdl_probe_gpu.py), then down's in the whole step (benchmarks/one_row_gpu.py:
# 4 rows 1.887 ms, 1 row 1.932 ms). A program holds its tile in registers, so rows are halved for wider inputs
# until a thread holds at most MAX_TILE_BYTES_PER_THREAD of it.
BLOCKS = {"qkv": (4, 4), "o": (8, 8), "gate_up": (2, 4), "down": (4, 8)}
# int8's, its weights decoded (DECODE_INT8), measured in the 3B step on an H200: 1.452 ms against 1.525 ms with
# BLOCKS; then gate/up's rows doubled, 1.435 against 1.462 ms (q/k/v's doubled gained as much, 1.436 ms, but
# spill 4 bytes on an A100: benchmarks/one_row_registers.py --arch 80).
INT8_BLOCKS = {"qkv": (4, 8), "o": (4, 8), "gate_up": (8, 4), "down": (4, 8)}
# fp8's products quantise their input row in every program: twice the rows per program share that work (H200,
# 3B step: 1.515 ms against 1.629 ms with BLOCKS).
FP8_BLOCKS = {"qkv": (8, 4), "o": (16, 8), "gate_up": (4, 4), "down": (8, 8)}
MAX_TILE_BYTES_PER_THREAD = 256
# Decode attention: the cache split into parts of at least ATTENTION_SPLIT_COLUMNS columns, at most
# ATTENTION_SPLITS per key/value head (a program each), each read ATTENTION_BLOCK columns at a time through
# ATTENTION_STAGES buffers of shared memory (Triton's pipelining: copies in flight while the program waits).
# Measured in the 3B step at 256 columns (H200, benchmarks/one_row_gpu.py, medians of 5 captures): one program
# per head, which combines nothing, 1.880 ms with 64-column blocks, 1.825-1.836 ms with 128, 1.808 ms with 256 in
# 2 stages (1.930 ms in 1 stage: loads to registers); parts of 64 or 128 columns gained nothing. The block is
# halved where the GPU has less shared memory than its stages need.
ATTENTION_SPLIT_COLUMNS, ATTENTION_SPLITS, ATTENTION_BLOCK, ATTENTION_WARPS, ATTENTION_STAGES = 256, 16, 256, 4, 2
ATTENTION_SHARED_MEMORY_SPARE = 16 * 1024  # bytes Triton's layout conversions take besides the stages' k and v
# With PREFETCH_CACHE attention asks L2 for its cache columns before waiting for q/k/v (only this step's column
# is then rewritten, in L2, which every load reads through): 0.2-0.5 % off the 3B step in two runs (H200). Loading
# a product's weights before waiting for the kernel ahead made the step slower for every product (o: +3 %),
# even behind attention: its reads delay attention's, which the step waits for.
PREFETCH_CACHE = True
CACHE_LINE_BYTES = 128
FP8_MAX = tl.constexpr(float(torch.finfo(torch.float8_e4m3fn).max))
# int8 weights made floats by bit arithmetic on the GPU rather than by conversion instructions (I2F: 16 per cycle
# and SM in CUDA's throughput table for Hopper): each byte made unsigned (b + 128) and placed as a float's low
# mantissa byte beside 2^23 (prmt), less 2^23 + 128, exactly. The asm reads four weights packed in one register
# (Triton's `pack=4`, so no weight or input moves between threads). H200, 3B one-row step: 1.525 ms against
# 1.593 ms converted (benchmarks/one_row_gpu.py). fp8 converts faster than it decodes so (e4m3 pairs to float16
# pairs in one instruction: 1.488 ms converted, 1.845 ms decoded by shifts and masks), so it keeps Triton's.
DECODE_INT8 = True
INT8_FLOATS = tl.constexpr("""{
.reg .b32 biased, high;
xor.b32 biased, $4, 0x80808080;
mov.b32 high, 0x4B000000;
prmt.b32 $0, biased, high, 0x7540;
prmt.b32 $1, biased, high, 0x7541;
prmt.b32 $2, biased, high, 0x7542;
prmt.b32 $3, biased, high, 0x7543;
sub.f32 $0, $0, 0f4B000080;
sub.f32 $1, $1, 0f4B000080;
sub.f32 $2, $2, 0f4B000080;
sub.f32 $3, $3, 0f4B000080;
}""")


@triton.jit
def _wait_for_previous_kernel(PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()


@triton.jit
def _prefetch_to_l2(pointers):
    """Asks L2 for the cache lines at `pointers` without waiting for them (PTX prefetch; CUDA only)."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [pointers], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _tile(w_ptr, rows, K: tl.constexpr, K_PAD: tl.constexpr):
    cols = tl.arange(0, K_PAD)
    return tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=(cols < K)[None, :], other=0)


@triton.jit
def _row(x_ptr, K: tl.constexpr, K_PAD: tl.constexpr):
    cols = tl.arange(0, K_PAD)
    return tl.load(x_ptr + cols, mask=cols < K, other=0.0)


@triton.jit
def _rounded(x, dtype: tl.constexpr):
    """x (float32) rounded to `dtype` and back: an operation of network.py in that dtype. Every operation here
    works in float32 this way (Triton's interpreter cannot do arithmetic on bfloat16 itself)."""
    return x.to(dtype).to(tl.float32)


@triton.jit
def _rms_normed(h_ptr, norm_ptr, eps, K: tl.constexpr, K_PAD: tl.constexpr, dtype: tl.constexpr):
    """network.RMSNorm of the row: normalised in float32, rounded, times the norm's weight, rounded."""
    h = _row(h_ptr, K, K_PAD).to(tl.float32)
    scaled = _rounded(h * tl.rsqrt(tl.sum(h * h, axis=0) / K + eps), dtype)
    return _rounded(scaled * _row(norm_ptr, K, K_PAD).to(tl.float32), dtype)


@triton.jit
def _input(x, WEIGHTS: tl.constexpr):
    """x (float32) as the product reads it, and its scale: for fp8 weights quantised per row to fp8 as torchao
    quantises activations (quantised_linears.one_row_fp8), else x itself and 1."""
    x_scale = 1.0
    if WEIGHTS == "fp8":
        x_scale = tl.max(tl.abs(x), axis=0) / FP8_MAX
        x = tl.clamp(x / x_scale, -FP8_MAX, FP8_MAX).to(tl.float8e4nv).to(tl.float32)
    return x, x_scale


@triton.jit
def _floats(w, WEIGHTS: tl.constexpr, DECODE: tl.constexpr):
    """The weight tile as float32: int8 by INT8_FLOATS with DECODE (PTX: CUDA only), else by Triton's
    conversions (fp8's e4m3 bytes are loaded as int8, Product.of)."""
    if WEIGHTS == "int8" and DECODE:
        return tl.inline_asm_elementwise(INT8_FLOATS, "=r,=r,=r,=r,r", [w], dtype=tl.float32, is_pure=True, pack=4)
    if WEIGHTS == "fp8":
        w = w.to(tl.float8e4nv, bitcast=True)
    return w.to(tl.float32)


@triton.jit
def _product(w, x, x_scale, scale_ptr, rows, WEIGHTS: tl.constexpr, DECODE: tl.constexpr, dtype: tl.constexpr):
    """Each tile row times x (float32, from _input), summed in float32, rounded to `dtype`. int8 (torchao's
    weight-only product): x @ W.to(dtype).T rounded, then times each row's scale, rounded. fp8 (`_scaled_mm`):
    the sum times x's scale and the row's, rounded once."""
    total = tl.sum(_floats(w, WEIGHTS, DECODE) * x[None, :], axis=1)
    if WEIGHTS == "16-bit":
        out = _rounded(total, dtype)
    elif WEIGHTS == "int8":
        out = _rounded(_rounded(total, dtype) * _rounded(tl.load(scale_ptr + rows), dtype), dtype)
    else:
        out = _rounded(total * x_scale * tl.load(scale_ptr + rows), dtype)
    return out


@triton.jit
def qkv_kernel(h_ptr, norm_ptr, eps, w_ptr, scale_ptr, cos_ptr, sin_ptr, column_ptr, q_ptr, k_ptr, v_ptr,
               cache_stride, K: tl.constexpr, K_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEADS: tl.constexpr,
               KV_HEADS: tl.constexpr, HALF_BLOCK: tl.constexpr, WEIGHTS: tl.constexpr, DECODE: tl.constexpr,
               PDL: tl.constexpr):
    """Program p: rows (d, d + HEAD_DIM/2) of one head, for HALF_BLOCK values of d; q to q_ptr, k and v to
    their caches' column."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    per_head: tl.constexpr = HEAD_DIM // 2 // HALF_BLOCK
    head = tl.program_id(0) // per_head
    d = (tl.program_id(0) % per_head) * HALF_BLOCK + tl.arange(0, HALF_BLOCK)
    rows = head * HEAD_DIM + d
    _wait_for_previous_kernel(PDL)
    w_first, w_second = _tile(w_ptr, rows, K, K_PAD), _tile(w_ptr, rows + HEAD_DIM // 2, K, K_PAD)
    x, x_scale = _input(_rms_normed(h_ptr, norm_ptr, eps, K, K_PAD, dtype), WEIGHTS)
    first = _product(w_first, x, x_scale, scale_ptr, rows, WEIGHTS, DECODE, dtype)
    second = _product(w_second, x, x_scale, scale_ptr, rows + HEAD_DIM // 2, WEIGHTS, DECODE, dtype)
    qkv_store(first, second, head, d, cos_ptr, sin_ptr, tl.load(column_ptr), q_ptr, k_ptr, v_ptr, cache_stride,
              HEAD_DIM, HEADS, KV_HEADS, dtype)


@triton.jit
def qkv_store(first, second, head, d, cos_ptr, sin_ptr, column, q_ptr, k_ptr, v_ptr, cache_stride,
              HEAD_DIM: tl.constexpr, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, dtype: tl.constexpr):
    """Rows (d, d + HEAD_DIM/2) of head `head` of the q/k/v product: RoPE on q's and k's, as network.Attention applies
    it (x * cos + rotate_half(x) * sin), then into q, or into the caches' column."""
    if head < HEADS + KV_HEADS:
        cos, sin = tl.load(cos_ptr + d).to(tl.float32), tl.load(sin_ptr + d).to(tl.float32)
        first, second = (_rounded(_rounded(first * cos, dtype) - _rounded(second * sin, dtype), dtype),
                         _rounded(_rounded(second * cos, dtype) + _rounded(first * sin, dtype), dtype))
    if head < HEADS:
        out = q_ptr + head * HEAD_DIM
    elif head < HEADS + KV_HEADS:
        out = k_ptr + (head - HEADS) * cache_stride + column * HEAD_DIM
    else:
        out = v_ptr + (head - HEADS - KV_HEADS) * cache_stride + column * HEAD_DIM
    tl.store(out + d, first.to(dtype))
    tl.store(out + d + HEAD_DIM // 2, second.to(dtype))


@triton.jit
def attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, parts_ptr, stats_ptr, count_ptr, out_ptr, scale, cache_stride,
                     COLUMNS: tl.constexpr, SPLIT: tl.constexpr, SPLITS: tl.constexpr, BLOCK_T: tl.constexpr,
                     HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, PDL: tl.constexpr,
                     PREFETCH: tl.constexpr, LINES: tl.constexpr):
    """Decode attention of one row, split over the cache (flash decoding): program (kv, split) runs
    attention_split."""
    kv, split = tl.program_id(0), tl.program_id(1)
    if PREFETCH:  # this program's columns, LINES cache lines each
        for start in range(split * SPLIT, split * SPLIT + SPLIT, BLOCK_T):
            cols = tl.minimum(start + tl.arange(0, BLOCK_T), COLUMNS - 1)
            lines = kv * cache_stride + cols[:, None] * HEAD_DIM + (tl.arange(0, LINES) * (HEAD_DIM // LINES))[None, :]
            _prefetch_to_l2(k_ptr + lines)
            _prefetch_to_l2(v_ptr + lines)
    _wait_for_previous_kernel(PDL)
    attention_split(kv, split, q_ptr, k_ptr, v_ptr, mask_ptr, parts_ptr, stats_ptr, count_ptr, out_ptr, scale,
                    cache_stride, COLUMNS, SPLIT, SPLITS, BLOCK_T, HEAD_DIM, GROUP, GROUP_PAD, "")


@triton.jit
def attention_split(kv, split, q_ptr, k_ptr, v_ptr, mask_ptr, parts_ptr, stats_ptr, count_ptr, out_ptr, scale,
                    cache_stride, COLUMNS: tl.constexpr, SPLIT: tl.constexpr, SPLITS: tl.constexpr,
                    BLOCK_T: tl.constexpr, HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
                    LOADS: tl.constexpr):
    """The GROUP query heads of key/value head kv over cache columns [split * SPLIT, + SPLIT), by online softmax;
    its partial output and (max, sum) go to parts/stats. The last split of a kv head to finish (an atomic count)
    combines them into out, rounded to the activation dtype as SDPA's output is, and resets the count. LOADS: the
    cache modifier of the q, k and v loads (".cg" where they were written by another SM in the same launch)."""
    dtype: tl.constexpr = q_ptr.dtype.element_ty
    g, d = tl.arange(0, GROUP_PAD), tl.arange(0, HEAD_DIM)
    in_group = g < GROUP
    heads = kv * GROUP + g
    q = tl.load(q_ptr + heads[:, None] * HEAD_DIM + d[None, :], mask=in_group[:, None], other=0.0,
                cache_modifier=LOADS)
    best = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    total = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
    for start in range(split * SPLIT, split * SPLIT + SPLIT, BLOCK_T):
        cols = start + tl.arange(0, BLOCK_T)
        inside = cols < COLUMNS
        at = kv * cache_stride + cols[:, None] * HEAD_DIM + d[None, :]
        k = tl.load(k_ptr + at, mask=inside[:, None], other=0.0, cache_modifier=LOADS)
        v = tl.load(v_ptr + at, mask=inside[:, None], other=0.0, cache_modifier=LOADS)
        kept_columns = tl.load(mask_ptr + cols, mask=inside, other=0) != 0
        scores = tl.where(kept_columns[None, :], tl.dot(q, tl.trans(k)) * scale, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        shift = tl.where(new_best == float("-inf"), 0.0, new_best)  # a block with every column masked
        weights = tl.exp(scores - shift[:, None])
        kept = tl.exp(best - shift)
        total = total * kept + tl.sum(weights, axis=1)
        acc = acc * kept[:, None] + tl.dot(weights.to(dtype), v)
        best = new_best
    if SPLITS == 1:
        tl.store(out_ptr + heads[:, None] * HEAD_DIM + d[None, :], (acc / total[:, None]).to(dtype),
                 mask=in_group[:, None])
    else:
        part = (kv * SPLITS + split) * GROUP_PAD + g
        tl.store(parts_ptr + part[:, None] * HEAD_DIM + d[None, :], acc)
        tl.store(stats_ptr + 2 * part, best)
        tl.store(stats_ptr + 2 * part + 1, total)
        if tl.atomic_add(count_ptr + kv, 1) == SPLITS - 1:  # acquire: every split's stores of this kv head are seen
            overall = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
            for other in range(SPLITS):
                overall = tl.maximum(overall, tl.load(stats_ptr + 2 * ((kv * SPLITS + other) * GROUP_PAD + g),
                                                      cache_modifier=".cg"))
            overall = tl.where(overall == float("-inf"), 0.0, overall)
            out = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
            norm = tl.zeros((GROUP_PAD,), tl.float32)
            for other in range(SPLITS):
                part = (kv * SPLITS + other) * GROUP_PAD + g
                weight = tl.exp(tl.load(stats_ptr + 2 * part, cache_modifier=".cg") - overall)
                norm += weight * tl.load(stats_ptr + 2 * part + 1, cache_modifier=".cg")
                out += weight[:, None] * tl.load(parts_ptr + part[:, None] * HEAD_DIM + d[None, :],
                                                 cache_modifier=".cg")
            tl.store(out_ptr + heads[:, None] * HEAD_DIM + d[None, :], (out / norm[:, None]).to(dtype),
                     mask=in_group[:, None])
            tl.atomic_xchg(count_ptr + kv, 0)


@triton.jit
def residual_kernel(x_ptr, w_ptr, scale_ptr, h_ptr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
                    WEIGHTS: tl.constexpr, DECODE: tl.constexpr, PDL: tl.constexpr):
    """h[rows] += W[rows] @ x, for this program's BLOCK rows."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    _wait_for_previous_kernel(PDL)
    w = _tile(w_ptr, rows, K, K_PAD)
    x, x_scale = _input(_row(x_ptr, K, K_PAD).to(tl.float32), WEIGHTS)
    out = _product(w, x, x_scale, scale_ptr, rows, WEIGHTS, DECODE, dtype)
    tl.store(h_ptr + rows, (tl.load(h_ptr + rows).to(tl.float32) + out).to(dtype))


@triton.jit
def gate_up_kernel(h_ptr, norm_ptr, eps, w_ptr, scale_ptr, act_ptr, INTERMEDIATE: tl.constexpr, K: tl.constexpr,
                   K_PAD: tl.constexpr, HALF_BLOCK: tl.constexpr, WEIGHTS: tl.constexpr, DECODE: tl.constexpr,
                   PDL: tl.constexpr):
    """act[i] = SiLU(gate[i]) * up[i] for this program's HALF_BLOCK values of i (gate rows i, up rows
    INTERMEDIATE + i), of the RMSNormed row."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    i = tl.program_id(0) * HALF_BLOCK + tl.arange(0, HALF_BLOCK)
    _wait_for_previous_kernel(PDL)
    w_gate, w_up = _tile(w_ptr, i, K, K_PAD), _tile(w_ptr, i + INTERMEDIATE, K, K_PAD)
    x, x_scale = _input(_rms_normed(h_ptr, norm_ptr, eps, K, K_PAD, dtype), WEIGHTS)
    gate = _product(w_gate, x, x_scale, scale_ptr, i, WEIGHTS, DECODE, dtype)
    up = _product(w_up, x, x_scale, scale_ptr, i + INTERMEDIATE, WEIGHTS, DECODE, dtype)
    silu = _rounded(gate / (1.0 + tl.exp(-gate)), dtype)
    tl.store(act_ptr + i, (silu * up).to(dtype))


def programmatic_launch(capability: tuple[int, int]) -> bool:
    """Whether a GPU of this compute capability runs PDL (`griddepcontrol`, PTX for sm_90 and later): before Hopper
    the kernels are launched one after another, without it."""
    return capability >= (9, 0)


def attention_block(head_dim: int, itemsize: int, device: torch.device) -> int:
    """ATTENTION_BLOCK, halved until its stages' k and v fit the GPU's shared memory for one program."""
    if device.type != "cuda":
        return ATTENTION_BLOCK  # Triton's interpreter
    index = device.index if device.index is not None else torch.cuda.current_device()
    return attention_block_within(head_dim, itemsize,
                                  triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"])


def attention_block_within(head_dim: int, itemsize: int, shared_memory: int) -> int:
    """ATTENTION_BLOCK, halved until its stages' k and v fit `shared_memory` bytes."""
    block = ATTENTION_BLOCK
    while block > 16 and max(1, ATTENTION_STAGES - 1) * 2 * block * head_dim * itemsize > \
            shared_memory - ATTENTION_SHARED_MEMORY_SPARE:
        block //= 2
    return block


def attention_constants(cfg: HiggsConfig, columns: int, block: int, itemsize: int) -> dict:
    """attention_kernel's constants for a cache of `columns` columns read `block` at a time: its split into
    parts (a program each per key/value head), the query heads of a group (padded for tl.dot), cache lines."""
    split = max(ATTENTION_SPLIT_COLUMNS, block, triton.next_power_of_2(triton.cdiv(columns, ATTENTION_SPLITS)))
    split = min(split, triton.cdiv(columns, block) * block)  # no block past the cache
    group = cfg.num_heads // cfg.num_kv_heads
    return dict(COLUMNS=columns, SPLIT=split, SPLITS=triton.cdiv(columns, split), BLOCK_T=block,
                HEAD_DIM=cfg.head_dim, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
                LINES=max(1, cfg.head_dim * itemsize // CACHE_LINE_BYTES))


def rows_per_program(kind: str, rows: int, inputs: int, itemsize: int, pair: int = 1,
                     weights: str = "16-bit") -> tuple[int, int]:
    """(rows per program, warps) for a product: BLOCKS' (INT8_BLOCKS', FP8_BLOCKS') choice, halved until its tile
    fits the register budget and the rows (in groups of `pair`) divide evenly."""
    block, warps = {"int8": INT8_BLOCKS, "fp8": FP8_BLOCKS}.get(weights, BLOCKS)[kind]
    while block > pair and (block * triton.next_power_of_2(inputs) * itemsize > MAX_TILE_BYTES_PER_THREAD * 32 * warps
                            or rows % block):
        block //= 2
    return block, warps


def product_blocks(cfg: HiggsConfig, itemsize: int, weights: str = "16-bit") -> dict[str, tuple[int, int]]:
    """(rows per program, warps) of each product kind of a layer (q/k/v and gate/up rows in pairs)."""
    hidden, inter = cfg.hidden_size, cfg.intermediate_size
    return {"qkv": rows_per_program("qkv", cfg.head_dim, hidden, itemsize, 2, weights),
            "o": rows_per_program("o", hidden, cfg.num_heads * cfg.head_dim, itemsize, 1, weights),
            "gate_up": rows_per_program("gate_up", inter, hidden, itemsize, 2, weights),
            "down": rows_per_program("down", hidden, inter, itemsize, 1, weights)}


@dataclass
class Product:
    """A linear's weight as the kernels read it: 16-bit values, or torchao's one-byte values (int8, or fp8 e4m3
    read as int8) and their per-row scales (quantised_linears.py), or int4 as int4_one_row.py's kernel takes it."""

    weight: torch.Tensor
    scale: torch.Tensor | None = None
    kind: str = "16-bit"  # or "int8", "fp8": the kernels' WEIGHTS; or "int4"
    int4: OneRowProduct | None = None  # an int4 weight's, which int4_one_row.py's kernel takes

    @classmethod
    def of(cls, linear: torch.nn.Module, pair: int = 1) -> Product:
        """`pair`: for int4, the blocks of 8 rows a fused epilogue takes together are `pair` blocks apart."""
        if hasattr(linear, "one_row_pair"):  # int4_rows.Int4RowsLinear
            from higgs_bench.backends.pytorch.int4_one_row import OneRowProduct  # imports Gluon

            if not pair or not linear.pair_one_row_rows(pair):
                raise ConfigError(f"backend.one_row_kernels: int4_one_row.py's kernel does not take this int4 weight "
                                  f"({linear.out_features} x {linear.in_features}, rows paired {pair} blocks apart); "
                                  "set backend.one_row_kernels=false")
            return cls(linear.qdata, linear.one_row_scales, "int4",
                       OneRowProduct(linear.qdata, linear.one_row_scales, linear.in_features, linear.out_features,
                                     pair))
        if hasattr(linear, "qdata"):  # quantised_linears.Int8Linear or Float8Linear
            kind = "fp8" if linear.qdata.dtype == torch.float8_e4m3fn else "int8"
            return cls(linear.qdata.view(torch.int8), linear.scale.reshape(-1), kind)
        return cls(linear.weight)

    def args(self) -> tuple:
        """weight, scale pointers and WEIGHTS, as the kernels take them (an unused scale pointer is the weight's)."""
        return self.weight, self.weight if self.scale is None else self.scale, self.kind


@dataclass
class LayerWeights:
    qkv: Product
    o: Product
    gate_up: Product
    down: Product
    input_norm: torch.Tensor
    post_norm: torch.Tensor


class OneRowLayers:
    """The network's layers for a decode step of one row: `run` replaces HiggsNetwork.forward's layer loop for
    an all-audio frame (the final norm stays the network's)."""

    def __init__(self, network, cfg: HiggsConfig):
        self.cfg = cfg
        self.layers = [None if kind == SKIP else _weights(layer, kind, cfg) for layer, kind in
                       zip(network.layers, cfg.layer_kinds)]
        device = network.inv_freq.device
        self.pdl = device.type == "cuda" and programmatic_launch(torch.cuda.get_device_capability(device))
        self.prefetch_cache = PREFETCH_CACHE and device.type == "cuda"  # the interpreter runs no PTX
        self.decode = DECODE_INT8 and device.type == "cuda"
        first = next(layer for layer in self.layers if layer)
        item, weights = first.qkv.weight.element_size(), first.qkv.kind
        cache_item = first.input_norm.element_size()  # the activations'
        self.attention_block = attention_block(cfg.head_dim, cache_item, device)
        self.arrivals = torch.zeros(cfg.num_kv_heads, dtype=torch.int32, device=device)
        self.blocks = product_blocks(cfg, item, weights)
        self.kernel_cache: KernelCache | None = None  # where Triton keeps these kernels (None: its default)

    def run(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, column: torch.Tensor,
            caches: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> torch.Tensor:
        """h [1, 1, H] (overwritten: the residual stream is updated in place), RoPE's cos and sin at the row's
        position (HiggsNetwork.rope: [1, 1, 1, head_dim]), its cache column [1] (long), caches [1, KV heads,
        columns, head_dim] each, mask [1, 1, 1, columns] -> h after every layer."""
        with self.kernel_cache.in_use() if self.kernel_cache else nullcontext():
            return self._run(h, cos, sin, column, caches, mask)

    def _run(self, h, cos, sin, column, caches, mask) -> torch.Tensor:
        cfg = self.cfg
        q, attended = h.new_empty(cfg.num_heads * cfg.head_dim), h.new_empty(cfg.num_heads * cfg.head_dim)
        act = h.new_empty(cfg.intermediate_size)
        launch = {"launch_pdl": True} if self.pdl else {}
        for weights, (cache_k, cache_v) in zip(self.layers, caches):
            if weights is None:
                continue  # fast-forward: an all-audio step skips the layer
            self._qkv(weights, h, cos, sin, column, q, cache_k, cache_v, launch)
            self._attend(q, cache_k, cache_v, mask.reshape(-1), attended, launch)
            self._residual("o", attended, weights.o, h, launch)
            self._gate_up(weights, h, act, launch)
            self._residual("down", act, weights.down, h, launch)
        return h

    def _qkv(self, weights: LayerWeights, h, cos, sin, column, q, cache_k, cache_v, launch: dict) -> None:
        cfg = self.cfg
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        if weights.qkv.int4:
            weights.qkv.int4.launch(h, q, (weights.input_norm, cfg.rms_norm_eps), "rope",
                                    (cache_k, cache_v, cos, sin, column, head_dim, heads, kv_heads))
            return
        block, warps = self.blocks["qkv"]
        w, scale, weight_kind = weights.qkv.args()
        hidden = cfg.hidden_size
        qkv_kernel[((heads + 2 * kv_heads) * head_dim // block,)](
            h, weights.input_norm, cfg.rms_norm_eps, w, scale, cos, sin, column, q, cache_k, cache_v,
            cache_k.stride(1), K=hidden, K_PAD=triton.next_power_of_2(hidden), HEAD_DIM=head_dim, HEADS=heads,
            KV_HEADS=kv_heads, HALF_BLOCK=block // 2, WEIGHTS=weight_kind, DECODE=self.decode, PDL=self.pdl,
            num_warps=warps, **launch)

    def _gate_up(self, weights: LayerWeights, h, act, launch: dict) -> None:
        cfg = self.cfg
        if weights.gate_up.int4:
            weights.gate_up.int4.launch(h, act, (weights.post_norm, cfg.rms_norm_eps), "silu")
            return
        block, warps = self.blocks["gate_up"]
        w, scale, weight_kind = weights.gate_up.args()
        hidden = cfg.hidden_size
        gate_up_kernel[(cfg.intermediate_size // (block // 2),)](
            h, weights.post_norm, cfg.rms_norm_eps, w, scale, act, INTERMEDIATE=cfg.intermediate_size, K=hidden,
            K_PAD=triton.next_power_of_2(hidden), HALF_BLOCK=block // 2, WEIGHTS=weight_kind, DECODE=self.decode,
            PDL=self.pdl, num_warps=warps, **launch)

    def _attend(self, q, cache_k, cache_v, mask, out, launch: dict) -> None:
        cfg = self.cfg
        constants = attention_constants(cfg, cache_k.shape[2], self.attention_block, cache_k.element_size())
        splits, group_pad = constants["SPLITS"], constants["GROUP_PAD"]
        parts = q.new_empty(cfg.num_kv_heads * splits * group_pad * cfg.head_dim, dtype=torch.float32)
        stats = q.new_empty(cfg.num_kv_heads * splits * group_pad * 2, dtype=torch.float32)
        attention_kernel[(cfg.num_kv_heads, splits)](
            q, cache_k, cache_v, mask, parts, stats, self.arrivals, out, cfg.head_dim ** -0.5, cache_k.stride(1),
            PDL=self.pdl, PREFETCH=self.prefetch_cache, num_warps=ATTENTION_WARPS, num_stages=ATTENTION_STAGES,
            **constants, **launch)

    def _residual(self, kind: str, x: torch.Tensor, product: Product, h: torch.Tensor, launch: dict) -> None:
        if product.int4:
            product.int4.launch(x, h, epilogue="add")
            return
        block, warps = self.blocks[kind]
        w, scale, weight_kind = product.args()
        rows, inputs = w.shape
        residual_kernel[(rows // block,)](x, w, scale, h, K=inputs, K_PAD=triton.next_power_of_2(inputs), BLOCK=block,
                                          WEIGHTS=weight_kind, DECODE=self.decode, PDL=self.pdl, num_warps=warps,
                                          **launch)


def _weights(layer, kind: str, cfg: HiggsConfig) -> LayerWeights:
    """A layer's tensors as an all-audio step reads them (network.Layer: audio norms and MLP in dual layers); int4's
    rows paired as the epilogues take them (RoPE's d and d + half a head, gate's i and up's intermediate + i)."""
    audio = kind == DUAL
    mlp = layer.audio_mlp if audio else layer.mlp
    norms = ("audio_input_layernorm", "audio_post_attention_layernorm") if audio else \
        ("input_layernorm", "post_attention_layernorm")
    linears = (layer.self_attn.qkv_proj, layer.self_attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
    pairs = (_blocks_apart(cfg.head_dim // 2), 1, _blocks_apart(cfg.intermediate_size), 1)
    return LayerWeights(*(Product.of(linear, pair) for linear, pair in zip(linears, pairs)),
                        *(getattr(layer, n).weight for n in norms))


def _blocks_apart(rows: int) -> int:
    """Rows as blocks of 8 (int4_one_row.first_block's pair); 0 where they are not whole blocks (cannot be paired)."""
    return rows // 8 if rows % 8 == 0 else 0
