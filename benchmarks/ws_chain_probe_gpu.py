"""The int8 products of the 3B one-row step streamed by one persistent, warp-specialised kernel (Gluon): do they
read their bytes at copy bandwidth when loading their weights never waits for the grid barriers between them?

    python benchmarks/ws_chain_probe_gpu.py OUT.json [--layers 28] [--variants '[{"STAGES": 16}, ...]']
    python benchmarks/ws_chain_probe_gpu.py OUT.json --ptxas 90 [--variants ...]   # compile only, no GPU

A decode layer as one persistent Triton kernel (docs/performance.md, twenty-third session) kept too few bytes in
flight: each program loads a tile into registers, then reduces it, and every grid barrier drains its loads. Here
each program (one per SM) is split into warps that only load and warps that only reduce. The loading warp walks
every product of the chain in order and copies this program's weight tiles into a ring of shared-memory buffers
through TMA (Hopper's tensor-memory copies), waiting only for a free buffer: weights depend on no data, so it runs
ahead across the barriers, and the ring absorbs the time the reducing warps spend waiting at them. The reducing
warps wait at each grid barrier for the product's input row, copy it to shared memory, then reduce buffers as
they fill and signal them free: on CUDA cores, or on tensor cores (TC: int8 decoded to float16, mma.sync).

The chain: `layers` x (q/k/v, o, gate/up, down) of the 3B shape, each product reading the one before's output
(as gemv_pdl_probe_gpu.py chains them), int8 weights with a scale per row and torchao's weight-only numerics
(the sum rounded to bfloat16, times the scale, rounded), int8 made floats as one_row.py decodes them. Against:
the same chain of register kernels as one_row.py's (tma_gemv_probe_gpu.register_product at one_row.INT8_BLOCKS'
rows and warps, PDL), and the floor of the chain's bytes at copy bandwidth. Each is checked against a float32
chain first. Without --variants: FASTEST. Measured on an H200 (docs/performance.md, twenty-fourth session): the
stream at the floor, the reduction on tensor cores at its pace, the grid barriers between products about 1.7 us
each. Twenty-eighth session: the dependences alone (no weights) 146 us, and with the stream they add to its time
rather than hide behind it; the fence before a barrier's arrival is 0.4-0.6 us of each.
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
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from higgs_bench.backends.pytorch import one_row

HIDDEN, INTER, QKV_ROWS = 3072, 8192, 5120
LAYERS = 28
# ROWS: output rows per unit of work (units are dealt round-robin to the programs); BOX: inputs per TMA copy (256,
# the widest box side TMA takes); SUB: TMA copies per ring buffer (SUB * BOX = 512 with TC);
# STAGES: ring buffers; WARPS: reducing warps (the loading warp is one more); LOADER_REGS: its registers per thread
# ROTATE: each product's units dealt from the program after the one that took the chain's last unit so far (else
# from program 0 each time: the programs that take one unit more do so in every product); X32: the input row kept in
# shared memory as float32 (else bfloat16, converted at each use). The records in docs/results/h200-ws-chain/ name
# their variants against these; the fastest measured on CUDA cores was {"ROWS": 16, "WARPS": 8, "X32": False}.
# TC: the reduction on tensor cores (_unit_on_tensor_cores), the input row kept as float16. SWIZZLE: the bytes of
# the ring's swizzle (TMA writes it, the tensor cores' operand loads read it without bank conflicts; <= BOX).
# SPLIT: inputs a unit takes (0: all of its rows'); units of a part of the inputs add their float32 partial sums
# atomically into a zeroed buffer, and the next product rounds and scales them as it stages its input row.
# CLAIM: each program's loading warp claims the product's units one at a time from an atomic count (faster SMs
# take more of them) and tells the reducing warps each buffer's unit, a product's end by a buffer without weights.
# BACKOFF: nanoseconds a program sleeps between polls of a grid barrier's count (0: it polls without pause).
# ARRIVE: how a program's arrival at a grid barrier is ordered after its outputs. "acq_rel": the arrival is an
# acquire-release atomic (compiled to MEMBAR.ALL.GPU before it); "relaxed": not ordered at all (a diagnostic: what
# the fence costs; outputs may be read before they land); "ordered" (SPLIT only): the outputs, and the zeros of the
# buffer after next, are atomics whose returned values the arrival waits for (it adds their count of NaNs, 0), so
# they have been performed in L2 before it is sent, without a fence; readers read past L1.
SETTINGS = {"ROWS": 8, "SUB": 4, "STAGES": 12, "WARPS": 4, "LOADER_REGS": 40, "ROTATE": True, "X32": True,
            "MATH": True, "BARRIERS": True, "BOX": 256, "TC": False, "SWIZZLE": 0, "SPLIT": 0, "CLAIM": False,
            "BACKOFF": 0, "STREAM": True, "ARRIVE": "acq_rel"}
# the fastest whole chain measured (948-954 us against the register kernels' 1020-1026, floor 655-660)
FASTEST = {"TC": True, "BOX": 64, "SUB": 8, "SWIZZLE": 64, "ROWS": 32, "STAGES": 12, "SPLIT": 1024}
# MATH / BARRIERS / STREAM False: diagnostics that drop the reduction (buffers are waited for and freed only), the
# grid barriers, or the weights altogether (no loads; each product only stages its input row and passes its grid
# barrier: what the chain's dependences cost without the stream), so that a chain's time shows what each costs;
# their outputs are wrong, and they are timed unchecked
INT8_FLOATS = gl.constexpr(one_row.INT8_FLOATS.value)
# four int8 weights (one register) as four float16, exactly: each byte made unsigned (b + 128) and placed as the low
# mantissa byte of 1024 (0x64__), two to a register (prmt), less 1152 (1024 + 128) in one float16x2 subtraction
INT8_HALVES = gl.constexpr("""{
.reg .b32 biased, magic, bias;
xor.b32 biased, $2, 0x80808080;
mov.b32 magic, 0x64646464;
mov.b32 bias, 0x64806480;
prmt.b32 $0, biased, magic, 0x4140;
prmt.b32 $1, biased, magic, 0x4342;
sub.f16x2 $0, $0, bias;
sub.f16x2 $1, $1, bias;
}""")


def kinds() -> dict[str, tuple[int, int]]:
    """(rows N, inputs K) of each product of a layer, in the order the chain runs them."""
    return {"qkv": (QKV_ROWS, HIDDEN), "o": (HIDDEN, HIDDEN), "gate_up": (2 * INTER, HIDDEN), "down": (HIDDEN, INTER)}


@gluon.jit
def _first_unit(first):
    """This program's first unit of a product whose unit 0 goes to program `first` (units dealt round-robin)."""
    programs = gl.num_programs(0)
    return (gl.program_id(0) + programs - first % programs) % programs


@gluon.jit
def _firsts(layer, HIDDEN: gl.constexpr, INTER: gl.constexpr, QKV_ROWS: gl.constexpr, ROWS: gl.constexpr,
            KS_H: gl.constexpr, KS_I: gl.constexpr, ROTATE: gl.constexpr):
    """The units before each product of the layer in the chain (with ROTATE; else zeros); KS_H, KS_I: units a
    row block of HIDDEN and of INTER inputs makes."""
    PER_LAYER: gl.constexpr = (QKV_ROWS + HIDDEN + 2 * INTER) // ROWS * KS_H + HIDDEN // ROWS * KS_I
    qkv = layer * PER_LAYER * ROTATE
    o = qkv + QKV_ROWS // ROWS * KS_H * ROTATE
    gate_up = o + HIDDEN // ROWS * KS_H * ROTATE
    return qkv, o, gate_up, gate_up + 2 * INTER // ROWS * KS_H * ROTATE


@gluon.jit
def _fill_unit(desc, row, k0, k1, unit, i, ready, empty, ring, ids, SUB: gl.constexpr, STAGES: gl.constexpr):
    """Copies the descriptor's box of rows from `row`, inputs k0 to k1, into the ring, SUB boxes a buffer, each
    buffer marked with its unit; returns the count of buffers filled so far."""
    BOX_K: gl.constexpr = desc.block_type.shape[1]
    one: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
    for k in range(k0, k1, SUB * BOX_K):
        stage = i % STAGES
        mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
        ids.index(stage).store(gl.full([1], unit, gl.int32, one))
        mbarrier.expect(ready.index(stage), SUB * desc.block_type.nbytes)
        for j in gl.static_range(SUB):
            tma.async_copy_global_to_shared(desc, [row, k + j * BOX_K], ready.index(stage),
                                            ring.index(stage * SUB + j))
        i += 1
    return i


@gluon.jit
def _load_product(desc, layer, N: gl.constexpr, K: gl.constexpr, KS: gl.constexpr, first, claim_ptr, i, ready, empty,
                  ring, ids, ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr, CLAIM: gl.constexpr):
    """Copies this program's tiles of the product ([ROWS, K / KS] a unit) into the ring: dealt round-robin, or
    claimed from the count at claim_ptr (CLAIM; then a buffer marked -1, without weights, ends the product)."""
    SPAN: gl.constexpr = K // KS
    UNITS: gl.constexpr = N // ROWS * KS
    if CLAIM:
        unit = gl.atomic_add(claim_ptr, 1, sem="relaxed", scope="gpu")
        while unit < UNITS:
            k0 = unit % KS * SPAN
            i = _fill_unit(desc, layer * N + unit // KS * ROWS, k0, k0 + SPAN, unit, i, ready, empty, ring, ids, SUB,
                           STAGES)
            unit = gl.atomic_add(claim_ptr, 1, sem="relaxed", scope="gpu")
        stage = i % STAGES
        mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
        ids.index(stage).store(gl.full([1], -1, gl.int32, gl.BlockedLayout([1], [32], [gl.num_warps()], [0])))
        mbarrier.arrive(ready.index(stage), count=1)
        i += 1
    else:
        for unit in range(_first_unit(first), UNITS, gl.num_programs(0)):
            k0 = unit % KS * SPAN
            i = _fill_unit(desc, layer * N + unit // KS * ROWS, k0, k0 + SPAN, unit, i, ready, empty, ring, ids, SUB,
                           STAGES)
    return i


@gluon.jit
def _loader(qkv_desc, o_desc, gu_desc, down_desc, ready, empty, ring, ids, counter_ptr, layers, HIDDEN: gl.constexpr,
            INTER: gl.constexpr, QKV_ROWS: gl.constexpr, ROWS: gl.constexpr, SUB: gl.constexpr,
            STAGES: gl.constexpr, KS_H: gl.constexpr, KS_I: gl.constexpr, ROTATE: gl.constexpr, CLAIM: gl.constexpr,
            STREAM: gl.constexpr):
    i = gl.program_id(0) * 0
    for layer in range(layers * STREAM):
        f_qkv, f_o, f_gu, f_down = _firsts(layer, HIDDEN, INTER, QKV_ROWS, ROWS, KS_H, KS_I, ROTATE)
        claims = counter_ptr + 1 + 4 * layer  # the products' counts of claimed units, after the barriers' count
        i = _load_product(qkv_desc, layer, QKV_ROWS, HIDDEN, KS_H, f_qkv, claims, i, ready, empty, ring, ids, ROWS,
                          SUB, STAGES, CLAIM)
        i = _load_product(o_desc, layer, HIDDEN, HIDDEN, KS_H, f_o, claims + 1, i, ready, empty, ring, ids, ROWS, SUB,
                          STAGES, CLAIM)
        i = _load_product(gu_desc, layer, 2 * INTER, HIDDEN, KS_H, f_gu, claims + 2, i, ready, empty, ring, ids,
                          ROWS, SUB, STAGES, CLAIM)
        i = _load_product(down_desc, layer, HIDDEN, INTER, KS_I, f_down, claims + 3, i, ready, empty, ring, ids,
                          ROWS, SUB, STAGES, CLAIM)


@gluon.jit
def _grid_barrier(counter_ptr, target, BACKOFF: gl.constexpr, ARRIVE: gl.constexpr, token):
    """Waits until `target` arrivals, this program's included (the arrival as ARRIVE says, acquire while waiting),
    sleeping about BACKOFF ns between polls (0: none). token: 0, computed from the returns of the atomics that must
    be performed before the arrival ("ordered")."""
    gl.thread_barrier()
    if ARRIVE == "acq_rel":
        arrived = gl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") + 1
    else:
        arrived = gl.atomic_add(counter_ptr, 1 + token, sem="relaxed", scope="gpu") + 1
    while arrived < target:
        if BACKOFF:
            arrived = gl.inline_asm_elementwise(f"nanosleep.u32 {BACKOFF}; mov.u32 $0, $1;", "=r,r", [arrived],
                                                dtype=gl.int32, is_pure=False, pack=1)
        arrived = gl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    gl.thread_barrier()


@gluon.jit
def _barrier_if(BARRIERS: gl.constexpr, counter_ptr, target, BACKOFF: gl.constexpr, ARRIVE: gl.constexpr, token):
    if BARRIERS:
        _grid_barrier(counter_ptr, target, BACKOFF, ARRIVE, token)


@gluon.jit
def _input_offsets(x_smem, BOX_K: gl.constexpr, layout: gl.constexpr):
    """Offsets of the input row as x_smem holds it: [its bytes / BOX_K pieces, BOX_K]."""
    pieces = gl.arange(0, x_smem.numel // BOX_K, layout=gl.SliceLayout(1, layout))
    return pieces[:, None] * BOX_K + gl.arange(0, BOX_K, layout=gl.SliceLayout(0, layout))[None, :]


@gluon.jit
def _keep_input(x, x_smem):
    """x, laid out as _input_offsets, into shared memory (x_smem's dtype) for every reducing warp."""
    plain: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    x_smem._reinterpret(x_smem.dtype, x.shape, plain).store(x.to(x_smem.dtype))  # the same bytes as one tensor
    gl.thread_barrier()


@gluon.jit
def _stage_input(x_ptr, x_smem, K: gl.constexpr, BOX_K: gl.constexpr, layout: gl.constexpr):
    """The product's input row (another program's output, so read past L1) into shared memory; the pieces past K
    are zeros, never read."""
    at = _input_offsets(x_smem, BOX_K, layout)
    _keep_input(gl.load(x_ptr + at, mask=at < K, other=0.0, cache_modifier=".cg"), x_smem)


@gluon.jit
def _stage_sums(sums_ptr, scale_ptr, scaled, K: gl.constexpr, x_smem, BOX_K: gl.constexpr, layout: gl.constexpr):
    """SPLIT's input row: the previous product's float32 sums (other programs' atomic adds) rounded to bfloat16,
    times its rows' scales (where `scaled`; the chain's input has none), rounded, into shared memory."""
    at = _input_offsets(x_smem, BOX_K, layout)
    sums = gl.load(sums_ptr + at, mask=at < K, other=0.0, cache_modifier=".cg")
    scale = gl.load(scale_ptr + at, mask=(at < K) & scaled, other=1.0).to(gl.float32)
    _keep_input((sums.to(gl.bfloat16).to(gl.float32) * scale).to(gl.bfloat16), x_smem)


@gluon.jit
def _nans(values, mask):
    """How many of the values are NaN (0 here): a use of an atomic's returned values that the compiler keeps."""
    return gl.sum(gl.where(mask & (values != values), 1, 0), axis=0)


@gluon.jit
def _zero(ptr, WIDE: gl.constexpr, layout: gl.constexpr, ARRIVE: gl.constexpr, token):
    """This program's share of the buffer the product after next adds its sums into."""
    CHUNK: gl.constexpr = 1024
    at = gl.arange(0, CHUNK, layout=layout)
    for start in range(gl.program_id(0) * CHUNK, WIDE, gl.num_programs(0) * CHUNK):
        mask = start + at < WIDE
        if ARRIVE == "ordered":
            old = gl.atomic_xchg(ptr + start + at, gl.zeros([CHUNK], gl.float32, layout), mask=mask, sem="relaxed",
                                 scope="gpu")
            token += _nans(old, mask)
        else:
            gl.store(ptr + start + at, gl.zeros([CHUNK], gl.float32, layout), mask=mask)
    return token


@gluon.jit
def _next_buffer(ready, i, STAGES: gl.constexpr):
    """Waits until the ring's i-th buffer is full; returns its stage."""
    stage = i % STAGES
    mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
    return stage


@gluon.jit
def _free(empty, stage):
    fence_async_shared()  # the buffer's shared loads before TMA writes it again
    mbarrier.arrive(empty.index(stage), count=1)


@gluon.jit
def _unit_unreduced(ready, empty, i, k0, k1, ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr,
                    BOX_K: gl.constexpr, layout: gl.constexpr):
    """MATH False: the unit's buffers waited for and freed, nothing reduced (zeros). The bounds come from the
    caller: Gluon 3.6 put a constant made of a constexpr here outside this function when called in a while loop."""
    for k in range(k0, k1, SUB * BOX_K):
        _free(empty, _next_buffer(ready, i, STAGES))
        i += 1
    return gl.zeros([ROWS], gl.float32, gl.SliceLayout(1, layout)), i


@gluon.jit
def _unit_on_cuda_cores(ready, empty, ring, x_smem, i, k0, k1, ROWS: gl.constexpr,
                        SUB: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr):
    """The unit's [ROWS] sums over inputs k0 to k1: each weight made a float (one_row.py's byte permutes),
    times its input, in float32."""
    BOX_K: gl.constexpr = ring.type.shape[2]
    acc = gl.zeros([ROWS, BOX_K], gl.float32, layout)
    for k in range(k0, k1, SUB * BOX_K):
        stage = _next_buffer(ready, i, STAGES)
        for j in gl.static_range(SUB):
            w = ring.index(stage * SUB + j).load(layout)
            x = x_smem.index(k // BOX_K + j).load(gl.SliceLayout(0, layout)).to(gl.float32)
            floats = gl.inline_asm_elementwise(INT8_FLOATS, "=r,=r,=r,=r,r", [w], dtype=gl.float32, is_pure=True,
                                               pack=4)
            acc += floats * x[None, :]
        _free(empty, stage)
        i += 1
    return gl.sum(acc, axis=1), i


@gluon.jit
def _unit_on_tensor_cores(ready, empty, ring, x_smem, i, k0, k1, ROWS: gl.constexpr,
                          SUB: gl.constexpr, STAGES: gl.constexpr):
    """The unit's [ROWS] sums over inputs k0 to k1 on tensor cores (mma.sync m16n8k16, float16 in, float32 sums).
    A buffer holds the rows' next 8 pieces of PIECE inputs (SUB copies of BOX_K); read as A = [8 * ROWS, PIECE], its
    row i holds piece (i // (ROWS * Q)) * Q + i % Q of row (i // Q) % ROWS (Q pieces a copy's row). B = the same 8
    pieces of the input row side by side, [PIECE, 8] (8: mma's narrowest N). Of A @ B each row keeps the column of
    its own piece: the other columns are computed and dropped (tensor cores have the throughput to spare)."""
    BOX_K: gl.constexpr = ring.type.shape[2]
    PIECE: gl.constexpr = x_smem.type.shape[2]
    Q: gl.constexpr = BOX_K // PIECE
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[gl.num_warps(), 1],
                                                  instr_shape=[16, 8])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)  # 4 int8 a register
    b_layout: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
    stages = ring._reinterpret(gl.int8, [STAGES, SUB * ROWS * Q, PIECE], ring.layout)  # unswizzled: the same bytes
    acc = gl.zeros([SUB * ROWS * Q, SUB * Q], gl.float32, mma)
    for k in range(k0, k1, SUB * BOX_K):
        stage = _next_buffer(ready, i, STAGES)
        w = gl.inline_asm_elementwise(INT8_HALVES, "=r,=r,r", [stages.index(stage).load(a_layout)],
                                      dtype=gl.float16, is_pure=True, pack=4)
        x = x_smem.index(k // (SUB * BOX_K)).permute([1, 0]).load(b_layout)
        _free(empty, stage)
        acc = mma_v2(w, x, acc)
        i += 1
    a_row = gl.arange(0, SUB * ROWS * Q, layout=gl.SliceLayout(1, mma))
    piece = gl.arange(0, SUB * Q, layout=gl.SliceLayout(0, mma))
    own = (a_row // (ROWS * Q)) * Q + a_row % Q
    partial = gl.sum(gl.where(piece[None, :] == own[:, None], acc, 0.0), axis=1)
    return gl.sum(gl.sum(gl.reshape(partial, [SUB, ROWS, Q]), axis=2), axis=0), i


@gluon.jit
def _reduce_unit(unit, ready, empty, ring, x_smem, i, y_ptr, scale_ptr, layer, N: gl.constexpr, K: gl.constexpr,
                 KS: gl.constexpr, ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr,
                 MATH: gl.constexpr, TC: gl.constexpr, SUMS: gl.constexpr, ARRIVE: gl.constexpr, token):
    """The unit's rows of y from its buffers: added into y's float32 sums (SUMS), else rounded, scaled, stored."""
    BOX_K: gl.constexpr = ring.type.shape[2]
    SPAN: gl.constexpr = K // KS
    k0 = unit % KS * SPAN
    if not MATH:
        total, i = _unit_unreduced(ready, empty, i, k0, k0 + SPAN, ROWS, SUB, STAGES, BOX_K, layout)
    elif TC:
        total, i = _unit_on_tensor_cores(ready, empty, ring, x_smem, i, k0, k0 + SPAN, ROWS, SUB, STAGES)
    else:
        total, i = _unit_on_cuda_cores(ready, empty, ring, x_smem, i, k0, k0 + SPAN, ROWS, SUB, STAGES, layout)
    rows = unit // KS * ROWS + gl.arange(0, ROWS, layout=total.type.layout)
    if SUMS:
        old = gl.atomic_add(y_ptr + rows, total, sem="relaxed", scope="gpu")
        if ARRIVE == "ordered":
            token += _nans(old, rows >= 0)
    else:
        scale = gl.load(scale_ptr + layer * N + rows).to(gl.float32)
        gl.store(y_ptr + rows, (total.to(gl.bfloat16).to(gl.float32) * scale).to(gl.bfloat16))
    return i, token


@gluon.jit
def _next_unit(ready, ids, i, STAGES: gl.constexpr):
    """CLAIM: the unit of the ring's i-th buffer once it is full (-1: the product's end), the buffer kept."""
    marks = ids.index(_next_buffer(ready, i, STAGES)).load(gl.BlockedLayout([1], [32], [gl.num_warps()], [0]))
    return gl.max(marks, axis=0)


@gluon.jit
def _reduce_product(ready, empty, ring, ids, x_smem, first, i, x_ptr, y_ptr, scale_ptr, prev_scale_ptr, scaled,
                    zero_ptr, layer, N: gl.constexpr, K: gl.constexpr, KS: gl.constexpr, WIDE: gl.constexpr,
                    ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr,
                    x_layout: gl.constexpr, MATH: gl.constexpr, TC: gl.constexpr, SUMS: gl.constexpr,
                    CLAIM: gl.constexpr, STREAM: gl.constexpr, ARRIVE: gl.constexpr):
    """y = x @ W.T of this program's units, from the ring's buffers in the order _load_product filled them. SUMS:
    x is the previous product's float32 sums (rounded and scaled by prev_scale_ptr's here), y gets this one's."""
    BOX_K: gl.constexpr = ring.type.shape[2]
    token = gl.program_id(0) * 0
    if SUMS:
        _stage_sums(x_ptr, prev_scale_ptr, scaled, K, x_smem, BOX_K, x_layout)
        token = _zero(zero_ptr, WIDE, gl.SliceLayout(0, x_layout), ARRIVE, token)
    else:
        _stage_input(x_ptr, x_smem, K, BOX_K, x_layout)
    if CLAIM:
        unit = _next_unit(ready, ids, i, STAGES)
        while unit >= 0:
            i, token = _reduce_unit(unit, ready, empty, ring, x_smem, i, y_ptr, scale_ptr, layer, N, K, KS, ROWS,
                                    SUB, STAGES, layout, MATH, TC, SUMS, ARRIVE, token)
            unit = _next_unit(ready, ids, i, STAGES)
        _free(empty, i % STAGES)  # the end's buffer
        i += 1
    else:
        for unit in range(_first_unit(first), N // ROWS * KS * STREAM, gl.num_programs(0)):
            i, token = _reduce_unit(unit, ready, empty, ring, x_smem, i, y_ptr, scale_ptr, layer, N, K, KS, ROWS,
                                    SUB, STAGES, layout, MATH, TC, SUMS, ARRIVE, token)
    return i, token


@gluon.jit
def _reducer(ready, empty, ring, ids, x_smem, s_qkv, s_o, s_gu, s_down, buf_ptr, counter_ptr, layers,
             WIDE: gl.constexpr,
             HIDDEN: gl.constexpr, INTER: gl.constexpr, QKV_ROWS: gl.constexpr, ROWS: gl.constexpr,
             SUB: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr, x_layout: gl.constexpr,
             ROTATE: gl.constexpr, MATH: gl.constexpr, BARRIERS: gl.constexpr, TC: gl.constexpr,
             KS_H: gl.constexpr, KS_I: gl.constexpr, SUMS: gl.constexpr, CLAIM: gl.constexpr,
             BACKOFF: gl.constexpr, STREAM: gl.constexpr, ARRIVE: gl.constexpr):
    """Buffers: without SUMS, a (q/k/v's input) and b alternate as each product's input and output; with SUMS,
    three take turns: a product reads one, adds into the next and zeroes the one after."""
    programs = gl.num_programs(0)
    i = gl.program_id(0) * 0
    for layer in range(layers):
        f_qkv, f_o, f_gu, f_down = _firsts(layer, HIDDEN, INTER, QKV_ROWS, ROWS, KS_H, KS_I, ROTATE)
        scales = (s_down + (layer - 1) * HIDDEN, s_qkv + layer * QKV_ROWS, s_o + layer * HIDDEN,
                  s_gu + layer * 2 * INTER)  # the previous product's, as staging the input of each takes them
        firsts = (f_qkv, f_o, f_gu, f_down)
        products = ((s_qkv, QKV_ROWS, HIDDEN, KS_H), (s_o, HIDDEN, HIDDEN, KS_H), (s_gu, 2 * INTER, HIDDEN, KS_H),
                    (s_down, HIDDEN, INTER, KS_I))
        for kind in gl.static_range(4):
            p = 4 * layer + kind
            if SUMS:
                x_ptr = buf_ptr + p % 3 * WIDE
                y_ptr = buf_ptr + (p + 1) % 3 * WIDE
            else:
                x_ptr = buf_ptr + kind % 2 * WIDE
                y_ptr = buf_ptr + (kind + 1) % 2 * WIDE
            scale_ptr, N, K, KS = products[kind]
            i, token = _reduce_product(ready, empty, ring, ids, x_smem, firsts[kind], i, x_ptr, y_ptr, scale_ptr,
                                scales[kind], (layer > 0) | (kind > 0), buf_ptr + (p + 2) % 3 * WIDE, layer, N, K, KS,
                                WIDE, ROWS, SUB, STAGES, layout, x_layout, MATH, TC, SUMS, CLAIM, STREAM,
                                       ARRIVE)
            _barrier_if(BARRIERS, counter_ptr, (p + 1) * programs, BACKOFF, ARRIVE, token)


@gluon.jit
def chain_kernel(qkv_desc, o_desc, gu_desc, down_desc, s_qkv, s_o, s_gu, s_down, buf_ptr, counter_ptr, layers,
                 WIDE: gl.constexpr, HIDDEN: gl.constexpr, INTER: gl.constexpr, QKV_ROWS: gl.constexpr,
                 ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr, SPT: gl.constexpr, TPW_R: gl.constexpr,
                 WPC_R: gl.constexpr, LOADER_REGS: gl.constexpr, ROTATE: gl.constexpr, X32: gl.constexpr,
                 MATH: gl.constexpr, BARRIERS: gl.constexpr, TC: gl.constexpr, KS_H: gl.constexpr,
                 KS_I: gl.constexpr, SUMS: gl.constexpr, CLAIM: gl.constexpr, BACKOFF: gl.constexpr,
                 STREAM: gl.constexpr, ARRIVE: gl.constexpr):
    """The whole chain (the buffers' turns: _reducer). counter_ptr: the grid barriers' count, then CLAIM's count
    of each product's claimed units."""
    BOX_K: gl.constexpr = qkv_desc.block_type.shape[1]
    WARPS: gl.constexpr = gl.num_warps()
    layout: gl.constexpr = gl.BlockedLayout([1, SPT], [TPW_R, 32 // TPW_R], [WPC_R, WARPS // WPC_R], [1, 0])
    x_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // (BOX_K // 8), BOX_K // 8], [WARPS, 1], [1, 0])
    ring = gl.allocate_shared_memory(gl.int8, [STAGES * SUB, ROWS, BOX_K], qkv_desc.layout)
    if TC:  # windows of 8 pieces of 64 inputs, B of the tensor cores' products
        x_smem = gl.allocate_shared_memory(gl.float16, [INTER // (8 * 64), 8, 64],
                                           gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
    else:
        x_smem = gl.allocate_shared_memory(gl.float32 if X32 else gl.bfloat16, [INTER // BOX_K, BOX_K],
                                           gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    ids = gl.allocate_shared_memory(gl.int32, [STAGES, 1], gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1,
                                                                                    order=[0]))
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    gl.warp_specialize([
        (_reducer, (ready, empty, ring, ids, x_smem, s_qkv, s_o, s_gu, s_down, buf_ptr, counter_ptr, layers, WIDE,
                    HIDDEN, INTER, QKV_ROWS, ROWS, SUB, STAGES, layout, x_layout, ROTATE, MATH, BARRIERS, TC, KS_H,
                    KS_I, SUMS, CLAIM, BACKOFF, STREAM, ARRIVE)),
        (_loader, (qkv_desc, o_desc, gu_desc, down_desc, ready, empty, ring, ids, counter_ptr, layers, HIDDEN, INTER,
                   QKV_ROWS, ROWS, SUB, STAGES, KS_H, KS_I, ROTATE, CLAIM, STREAM)),
    ], [1], [LOADER_REGS])


def tile_layout(rows: int, warps: int, box: int) -> dict:
    """SPT, TPW_R, WPC_R of a blocked layout over a [rows, box] int8 tile: each thread holds up to 16 consecutive
    bytes of a row (one 128-bit shared load), a warp's threads side by side along the row, the warps down the rows
    (repeated where the tile has more rows than they cover)."""
    spt = min(16, max(4, rows * box // (32 * warps)))
    tpw_r = 32 // min(32, box // spt)
    wpc_r = min(warps, max(1, rows // tpw_r))
    if box % ((32 // tpw_r) * spt * (warps // wpc_r)) or rows % (tpw_r * wpc_r):
        raise ValueError(f"no blocked layout covers [{rows}, {box}] with {warps} warps")
    return {"SPT": spt, "TPW_R": tpw_r, "WPC_R": wpc_r}


def constants(settings: dict) -> dict:
    s = SETTINGS | settings
    pieces = INTER // s["BOX"]
    if INTER % s["BOX"] or pieces & (pieces - 1):
        raise ValueError("the input row is staged as [INTER / BOX, BOX], a power of two of rows")
    if s["TC"] and (s["SUB"] * s["BOX"] != 8 * 64 or 8 * s["ROWS"] % (16 * s["WARPS"])):
        raise ValueError("tensor cores take 8 pieces of 64 inputs a buffer (mma's N) and 16 stacked rows a warp")
    split = s["SPLIT"]
    if s["ARRIVE"] not in ("acq_rel", "relaxed", "ordered") or (s["ARRIVE"] == "ordered" and not split):
        raise ValueError("ARRIVE is acq_rel, relaxed or ordered, and ordered needs SPLIT (outputs as atomics)")
    if s["CLAIM"] and not s["STREAM"]:
        raise ValueError("CLAIM's products end with a buffer from the loading warp, which STREAM false never sends")
    if split and (split % (s["SUB"] * s["BOX"]) or HIDDEN % split or INTER % split):
        raise ValueError("SPLIT must be a multiple of a buffer's inputs and divide each product's inputs")
    return dict(WIDE=2 * INTER, HIDDEN=HIDDEN, INTER=INTER, QKV_ROWS=QKV_ROWS, ROWS=s["ROWS"], SUB=s["SUB"],
                STAGES=s["STAGES"], LOADER_REGS=s["LOADER_REGS"], ROTATE=s["ROTATE"], X32=s["X32"], MATH=s["MATH"],
                BARRIERS=s["BARRIERS"], TC=s["TC"], KS_H=HIDDEN // split if split else 1,
                KS_I=INTER // split if split else 1, SUMS=bool(split), CLAIM=s["CLAIM"], BACKOFF=s["BACKOFF"],
                STREAM=s["STREAM"], ARRIVE=s["ARRIVE"],
                **tile_layout(s["ROWS"], s["WARPS"], s["BOX"]))


def descriptor(weights: torch.Tensor, rows: int, box: int, swizzle: int = 0) -> TensorDescriptor:
    layout = gl.NVMMASharedLayout(swizzle_byte_width=swizzle, element_bitwidth=8, rank=2)
    return TensorDescriptor.from_tensor(weights, [rows, box], layout)


def chain_weights(layers: int, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each kind's int8 weights of every layer stacked as [layers * N, K], and its bfloat16 scales per row
    (products keep their input's size: uniform int8 has a standard deviation of about 73)."""
    return {kind: (torch.randint(-127, 128, (layers * n, k), dtype=torch.int8, device=device),
                   (torch.rand(layers * n, device=device) + 0.5).div(73 * k ** 0.5).to(torch.bfloat16))
            for kind, (n, k) in kinds().items()}


def reference_chain(weights: dict, x: torch.Tensor, layers: int) -> torch.Tensor:
    """The chain in float32 with the kernels' roundings: each product's sum and output rounded to bfloat16."""
    for layer in range(layers):
        for kind, (n, k) in kinds().items():
            w, s = weights[kind]
            total = (w[layer * n:(layer + 1) * n].float() @ x[:k].float()).to(torch.bfloat16).float()
            x = (total * s[layer * n:(layer + 1) * n].float()).to(torch.bfloat16)
    return x


class WarpSpecialisedChain:
    def __init__(self, weights: dict, layers: int, settings: dict):
        s = SETTINGS | settings
        self.weights, self.layers, self.settings = weights, layers, s
        self.descs = [descriptor(weights[kind][0], s["ROWS"], s["BOX"], s["SWIZZLE"]) for kind in kinds()]
        device = weights["qkv"][0].device
        self.sums = bool(s["SPLIT"])  # float32 sums in three buffers, else bfloat16 outputs in two
        self.buffers = torch.zeros((3 if self.sums else 2) * 2 * INTER, device=device,
                                   dtype=torch.float32 if self.sums else torch.bfloat16)
        self.counter = torch.zeros(1 + 4 * layers, device=device, dtype=torch.int32)  # barriers, claims
        self.programs = torch.cuda.get_device_properties(device).multi_processor_count

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.sums:
            self.buffers.zero_()
        self.buffers[:x.numel()].copy_(x)
        self.counter.zero_()
        chain_kernel[(self.programs,)](*self.descs, *(self.weights[kind][1] for kind in kinds()), self.buffers,
                                       self.counter, self.layers, **constants(self.settings),
                                       num_warps=self.settings["WARPS"])
        if not self.sums:
            return self.buffers[:HIDDEN]  # down, the last product, writes buffer a
        at = 4 * self.layers % 3 * 2 * INTER  # the buffer the last product added into
        scale = self.weights["down"][1][(self.layers - 1) * HIDDEN:self.layers * HIDDEN]
        return (self.buffers[at:at + HIDDEN].to(torch.bfloat16).float() * scale.float()).to(torch.bfloat16)


class RegisterChain:
    """The chain as one_row.py's register kernels launch it: one kernel a product, PDL between them."""

    def __init__(self, weights: dict, layers: int):
        self.weights, self.layers = weights, layers
        device = weights["qkv"][0].device
        self.buffers = [torch.zeros(2 * INTER, device=device, dtype=torch.bfloat16) for _ in range(2)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from tma_gemv_probe_gpu import register_product  # this folder's scripts run with it on sys.path

        self.buffers[0][:x.numel()].copy_(x)
        p = 0
        for layer in range(self.layers):
            for kind, (n, k) in kinds().items():
                w, s = self.weights[kind]
                rows, warps = one_row.INT8_BLOCKS[kind]
                register_product(w[layer * n:(layer + 1) * n], s[layer * n:(layer + 1) * n],
                                 self.buffers[p % 2][:k], self.buffers[(p + 1) % 2][:n], rows, warps, decode=True)
                p += 1
        return self.buffers[p % 2][:HIDDEN]


def diagnostic(name: str) -> bool:
    """Whether a chain is one of the diagnostics, whose outputs are timed unchecked."""
    if name == "registers":
        return False
    s = SETTINGS | json.loads(name)
    return not (s["MATH"] and s["BARRIERS"] and s["STREAM"]) or s["ARRIVE"] == "relaxed"


def relative_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.float() - expected.float()).norm() / expected.float().norm()).item()


def ptxas_report(arch: int, variants: list[dict]) -> dict:
    """Registers, spills and shared memory of chain_kernel compiled for sm_<arch>, per variant (no GPU)."""
    from one_row_registers import ptxas_usage
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    report = {}
    for variant in variants:
        s = SETTINGS | variant
        desc = mangle_type(descriptor(torch.zeros(s["ROWS"], s["BOX"], dtype=torch.int8), s["ROWS"], s["BOX"],
                                      s["SWIZZLE"]))
        types = {name: "constexpr" if name.isupper() else desc if name.endswith("_desc") else
                 "i32" if name == "layers" else "*i32" if name == "counter_ptr" else
                 "*fp32" if name == "buf_ptr" and s["SPLIT"] else "*bf16"
                 for name in chain_kernel.arg_names}
        registers, spilled, shared = ptxas_usage(chain_kernel, types, constants(s), {"num_warps": s["WARPS"]}, arch,
                                                 source=GluonASTSource)
        report[json.dumps(variant)] = {"registers": registers, "spilled": spilled, "shared_kb": shared / 1024}
        print(json.dumps(variant), report[json.dumps(variant)], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--check-layers", type=int, default=2)
    parser.add_argument("--variants", type=json.loads, default=[FASTEST])
    parser.add_argument("--ptxas", type=int, help="compile for this architecture only (no GPU needed)")
    args = parser.parse_args()
    if args.ptxas:
        args.out.write_text(json.dumps(ptxas_report(args.ptxas, args.variants), indent=1))
        return

    from gemv_pdl_probe_gpu import replay_us
    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    torch.manual_seed(0)
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "layers": args.layers, "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12, "check": {},
              "chain_us": {}, "errors": {}}
    weights = chain_weights(args.layers, device)
    x = torch.randn(HIDDEN, device=device, dtype=torch.bfloat16)
    expected = reference_chain(weights, x, args.check_layers)
    chains = {"registers": lambda: RegisterChain(weights, args.check_layers)}
    chains |= {json.dumps(v): (lambda v=v: WarpSpecialisedChain(weights, args.check_layers, v)) for v in args.variants}
    for name, make in chains.items():
        try:
            record["check"][name] = relative_error(make()(x), expected)
        except Exception as error:  # a variant past the GPU's limits: recorded, the others go on
            record["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
        print(name, record["check"].get(name), record["errors"].get(name, ""), flush=True)

    chain_bytes = args.layers * sum(n * k + 2 * n for n, k in kinds().values())
    record["floor_us"] = chain_bytes / (record["copy_bandwidth_tb_s"] * 1e12) * 1e6
    full = {"registers": RegisterChain(weights, args.layers)}
    full |= {json.dumps(v): WarpSpecialisedChain(weights, args.layers, v) for v in args.variants}
    for name, chain in full.items():
        if name in record["errors"] or (record["check"].get(name, 1.0) > 2e-2 and not diagnostic(name)):
            continue
        try:
            record["chain_us"][name] = replay_us(lambda chain=chain: chain(x), replays=20)
        except Exception as error:
            record["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
            continue
        us = record["chain_us"][name]
        print(f"{name:70s} {us:8.1f} us = {us / record['floor_us']:.2f}x the floor ({record['floor_us']:.1f} us)",
              flush=True)
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
