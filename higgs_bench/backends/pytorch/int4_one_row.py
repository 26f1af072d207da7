"""Products of one row with int4 weights as a warp-specialised Gluon kernel that reads tinygemm's packed weights
where they lie (Hopper on), alone (the custom op `int4_one_row`) or with the work around a product fused
(`OneRowProduct.launch`: the input RMSNormed first; RoPE into q and the caches, the residual added, or
SiLU(gate) * up after), as one_row.py's layers launch it. Measured on an H200 at the 3B shape (docs/performance.md,
twenty-fifth and twenty-sixth sessions): 112 products chained with PDL in 0.70 ms against tinygemm's 1.20 (floor
0.35); int4's one-row step through one_row.py's layers 1.11 ms, against 1.57 ms with the custom op between the
step's Inductor kernels launched with PDL (backend.INT4_ONE_ROW_OPTIONS) and 1.72-1.74 with tinygemm.

tinygemm (`_weight_int4pack_mm`, int4's one-row product before) reads its weights at a third of the copy bandwidth.
Here each program (two per SM) takes units of 16 output rows. Its loading warp copies a unit's weights through TMA
in buffers of 8 groups of 128 inputs, with their scales and zero points, into a ring of shared-memory buffers; it
waits for nothing but a free buffer. Its four reducing warps wait for the kernel ahead (PDL), stage the input row
in shared memory as float16, and multiply each buffer on tensor cores (`mma.sync`): the nibbles made float16 q - 8
by byte permutes (exactly), the groups' sums weighed by their scales, plus the zero points times the groups' input
sums, in float32 (as int4_rows.py's kernel sums; tinygemm rounds each dequantised weight to bf16 first).

The weights need no copy. In tinygemm's packing (int4_rows.py's docstring) the 16 words of output row n and group
g lie together, and the 8 rows of a block of rows n // 8 with one group make 512 bytes: viewed as rows of 64 bytes,
8 groups of a block are one TMA box of [64, 64] bytes, row (g, r) of the box holding row r's group g. Read as the
tensor cores' A operand, row i keeps the column of its group in a product with 8 groups of the input side by side
(B = [64, 8]; the others are computed and dropped). Byte k of a row's 64 holds, in its low nibble, input
`input_order()[k]` of the group and, in its high nibble, that input + 8; the input row is staged in that order.
The scales and zero points are copied once into the order the buffers read them (`pack_scales`: 1/16 of the int4
bytes). A unit's two blocks of 8 rows may lie `pair` blocks apart (`first_block`), so that a fused epilogue finds
the rows it combines in one unit; the scales are packed for that pairing.

Gluon is Triton's experimental dialect (triton.experimental.gluon); this module is written against Triton 3.6 and
takes no earlier one. Without it, before Hopper, or for a weight the kernel does not take (`fits`), one-row products
stay tinygemm's. Triton's interpreter does not run Gluon: the tests compile the kernel for Hopper on a CPU and check
its layouts against tinygemm's packing with the same arithmetic in torch; `pytest -m gpu` runs it.
"""

from __future__ import annotations

import torch

from higgs_bench.backends.pytorch.quantised_linears import INT4_GROUP

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import mma_v2
    from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except ImportError:  # a Triton without Gluon's Hopper API: one-row products stay tinygemm's
    gluon = None
WRITTEN_AGAINST = (3, 6)  # Triton: Gluon's API is experimental and changed between versions (warp_specialize's)


def written_for(triton_version: str) -> bool:
    """Whether this Triton is one the kernel was written against or later (Triton 3.5, under torch 2.9 as
    TensorRT-LLM 1.2 pins it, is not: its products stay tinygemm's)."""
    return tuple(int(part) for part in triton_version.split(".")[:2]) >= WRITTEN_AGAINST


if gluon is not None and not written_for(triton.__version__):
    gluon = None

CAPABILITY = (9, 0)  # TMA and mbarrier
ROWS = 16  # output rows a unit: two of tinygemm's blocks of 8
GROUPS = 8  # groups of 128 inputs a buffer (the B operand's 8 columns)
ROW_BYTES = INT4_GROUP // 2  # a row's bytes of one group
# measured at the 3B shape on an H200 (benchmarks/int4_ws_probe_gpu.py FASTEST): 4 buffers a program, 2 programs an
# SM, 4 reducing warps, registers capped at 128 a thread (Gluon rounds a program to 8 warps)
STAGES, PROGRAMS_PER_SM, WARPS, MAX_REGISTERS, LOADER_REGISTERS = 4, 2, 4, 128, 40


def input_order() -> list[int]:
    """Input of the group (0..127) in the low nibble of byte k (0..63) of a row's group in tinygemm's packing; the
    high nibble holds that input + 8 (word i = 4c + j, nibble 4h + 2t + e: input 32j + 16t + 8e + 2c + h)."""
    order = []
    for k in range(ROW_BYTES):
        (c, j), (h, t) = divmod(k // 4, 4), divmod(k % 4, 2)
        order.append(32 * j + 16 * t + 2 * c + h)
    return order


def first_block(unit: int, pair: int) -> int:
    """The first of a unit's two blocks of 8 output rows; the second is `pair` blocks on. With pair 1 a unit is 16
    rows in a row; with more it pairs rows a fused epilogue needs together (RoPE's d and d + half a head, gate's
    and up's i and intermediate + i)."""
    return unit // pair * 2 * pair + unit % pair


def unit_rows(rows: int, pair: int) -> torch.Tensor:
    """The output rows in the order the kernel's units take them (first_block): unit u's 16 rows, u by u."""
    blocks = torch.arange(rows // 8).reshape(-1, 2, pair).transpose(1, 2)  # [pair groups, unit in group, block]
    return (blocks.reshape(-1, 1) * 8 + torch.arange(8)).reshape(-1)


def pack_scales(scale_and_zero: torch.Tensor, pair: int = 1) -> torch.Tensor:
    """torchao's scale_and_zero [groups][rows][2] (bf16) in the order the kernel's buffers read them:
    [units * buffers * 2, 8 * ROWS], a unit's buffer b holding its scales then its zero points, entry (block, g, r)
    that of row 8 (first_block(u, pair) + block * pair) + r and group 8 b + g."""
    groups, rows, _ = scale_and_zero.shape
    in_units = scale_and_zero[:, unit_rows(rows, pair).to(scale_and_zero.device)]
    by_row = in_units.permute(1, 0, 2).reshape(rows // ROWS, 2, 8, groups // GROUPS, GROUPS, 2)
    return by_row.permute(0, 3, 5, 1, 4, 2).reshape(-1, GROUPS * ROWS).contiguous()


def runs_on(device: torch.device) -> bool:
    """Whether int4 engines on this device take the kernel: asked for (quantize.INT4_ONE_ROW_KERNEL), on CUDA from
    Hopper on, with Gluon."""
    from higgs_bench.backends.pytorch.quantize import INT4_ONE_ROW_KERNEL  # quantize imports this module's users

    return (INT4_ONE_ROW_KERNEL and gluon is not None and device.type == "cuda" and torch.cuda.is_available()
            and torch.cuda.get_device_capability(device) >= CAPABILITY)


def fits(qdata: torch.Tensor, scale_and_zero: torch.Tensor, pair: int = 1) -> bool:
    """Whether the kernel takes this weight's products of one row: it runs on the weight's device, the weight's rows
    come in whole units (of blocks `pair` apart) and its inputs (as packed) in whole buffers."""
    groups, rows, _ = scale_and_zero.shape
    return (runs_on(qdata.device) and rows % (ROWS * pair) == 0 and rows == qdata.shape[0] * 8
            and groups % GROUPS == 0)


if gluon is not None:
    @gluon.jit
    def _wait_for_kernel_ahead():
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)

    # four int8 (one register: bytes b0..b3, each two nibbles) as float16 q - 8: the low nibbles' four, then the
    # high nibbles', each nibble the low mantissa byte of 1024 (0x64__), less 1032 (1024 + 8) in float16x2
    INT4_HALVES = gl.constexpr("""{
    .reg .b32 low, high, magic, bias;
    and.b32 low, $4, 0x0f0f0f0f;
    shr.u32 high, $4, 4;
    and.b32 high, high, 0x0f0f0f0f;
    mov.b32 magic, 0x64646464;
    mov.b32 bias, 0x64086408;
    prmt.b32 $0, low, magic, 0x4140;
    prmt.b32 $1, low, magic, 0x4342;
    prmt.b32 $2, high, magic, 0x4140;
    prmt.b32 $3, high, magic, 0x4342;
    sub.f16x2 $0, $0, bias;
    sub.f16x2 $1, $1, bias;
    sub.f16x2 $2, $2, bias;
    sub.f16x2 $3, $3, bias;
    }""")

    @gluon.jit
    def _launch_dependents():
        """PDL: the next kernel may start launching its programs (they wait for this one's end before reading what
        it writes)."""
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)

    @gluon.jit
    def ring_barriers(STAGES: gl.constexpr):
        """A ring's barriers, initialised: `ready[s]` (the loader's copies into buffer s have landed) and `empty[s]`
        (the reducers are done with it)."""
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(ready.index(s), count=1)
            mbarrier.init(empty.index(s), count=1)
        return ready, empty

    @gluon.jit
    def _first_block(unit, PAIR: gl.constexpr):
        return unit // PAIR * 2 * PAIR + unit % PAIR  # first_block()

    @gluon.jit
    def _loader(w_desc, sz_desc, ready, empty, ring, sz_ring, UNITS: gl.constexpr, GROUPS_IN: gl.constexpr,
                STAGES: gl.constexpr, PAIR: gl.constexpr):
        """Copies this program's units into the ring: a buffer = the unit's two blocks of 8 rows at 8 groups (two
        boxes) and its block of scales and zero points. Waits for no kernel: the weights are constant."""
        _launch_dependents()
        BUFFERS: gl.constexpr = GROUPS_IN // 8
        i = gl.program_id(0) * 0
        for unit in range(gl.program_id(0), UNITS, gl.num_programs(0)):
            first = _first_block(unit, PAIR)
            for b in range(BUFFERS):
                stage = i % STAGES
                mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
                mbarrier.expect(ready.index(stage), 2 * w_desc.block_type.nbytes + sz_desc.block_type.nbytes)
                for block in gl.static_range(2):
                    tma.async_copy_global_to_shared(w_desc, [((first + block * PAIR) * GROUPS_IN + 8 * b) * 8, 0],
                                                    ready.index(stage), ring.index(2 * stage + block))
                tma.async_copy_global_to_shared(sz_desc, [(unit * BUFFERS + b) * 2, 0], ready.index(stage),
                                                sz_ring.index(stage))
                i += 1

    @gluon.jit
    def _rounded(x):
        """x (float32) rounded to bfloat16 and back: an operation of network.py in int4 engines' dtype."""
        return x.to(gl.bfloat16).to(gl.float32)

    @gluon.jit
    def _stage_input(x_ptr, norm_ptr, eps, x_smem, sums_smem, K: gl.constexpr, WINDOWS: gl.constexpr,
                     NORM: gl.constexpr):
        """The input row as float16 windows [2 * buffers (padded to a power of two), 8, 64]: window 2b + h, piece
        g, column k holds input 128 (8 b + g) + input_order()[k] + 8 h (h: the low nibbles' inputs, or the high ones');
        and each piece's sum of those float16 values (float32). Inputs past K are zeros. NORM: the row RMSNormed
        first, rounding as network.RMSNorm does (every input is loaded once, so the windows give its mean square)."""
        layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [gl.num_warps(), 1], [1, 0])
        piece = gl.arange(0, WINDOWS * 8, layout=gl.SliceLayout(1, layout))
        window = piece // 8
        start = (window // 2 * 8 + piece % 8) * 128 + window % 2 * 8
        k = gl.arange(0, 64, layout=gl.SliceLayout(0, layout))  # input_order(), as arithmetic
        at = start[:, None] + (32 * (k // 4 % 4) + 16 * (k % 2) + 2 * (k // 16) + k % 4 // 2)[None, :]
        row = gl.load(x_ptr + at, mask=at < K, other=0.0).to(gl.float32)
        if NORM:
            mean_square = gl.sum(gl.sum(row * row, axis=1), axis=0) / K
            row = _rounded(_rounded(row * gl.rsqrt(mean_square + eps))
                           * gl.load(norm_ptr + at, mask=at < K, other=0.0).to(gl.float32))
        staged = row.to(gl.float16)
        x_smem._reinterpret(gl.float16, [WINDOWS * 8, 64], x_smem.layout).store(staged)
        sums_smem._reinterpret(gl.float32, [WINDOWS * 8], gl.SwizzledSharedLayout(1, 1, 1, [0])).store(
            gl.sum(staged.to(gl.float32), axis=1))
        gl.thread_barrier()

    @gluon.jit
    def _epilogue(y, first, out_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, column_ptr, cache_stride, N_OUT: gl.constexpr,
                  PAIR: gl.constexpr, EPILOGUE: gl.constexpr, HEAD_DIM: gl.constexpr, HEADS: gl.constexpr,
                  KV_HEADS: gl.constexpr):
        """A unit's products y [2, 8] (float32; block b, row r: output row 8 (first + b PAIR) + r), rounded to
        bfloat16, then: "store" to out; "add" to out (the residual stream, in place); "rope" as one_row.qkv_store
        (its blocks: rows d and d + HEAD_DIM / 2 of one head); "silu": out[i] = SiLU(gate[i]) * up[i] (its blocks:
        rows i and INTERMEDIATE + i)."""
        layout: gl.constexpr = gl.BlockedLayout([1, 1], [2, 16], [1, gl.num_warps()], [1, 0])
        y = _rounded(gl.convert_layout(y, layout))
        block = gl.arange(0, 2, layout=gl.SliceLayout(1, layout))[:, None]
        r = gl.arange(0, 8, layout=gl.SliceLayout(0, layout))
        if EPILOGUE == "store" or EPILOGUE == "add":
            rows = 8 * (first + block * PAIR) + r[None, :]
            if EPILOGUE == "add":
                y = gl.load(out_ptr + rows, mask=rows < N_OUT, other=0.0).to(gl.float32) + y
            gl.store(out_ptr + rows, y.to(gl.bfloat16), mask=rows < N_OUT)
        else:
            one, two = gl.sum(gl.where(block == 0, y, 0.0), axis=0), gl.sum(gl.where(block == 1, y, 0.0), axis=0)
            if EPILOGUE == "silu":
                gl.store(out_ptr + 8 * first + r, (_rounded(one / (1.0 + gl.exp(-one))) * two).to(gl.bfloat16))
            else:
                head = 8 * first // HEAD_DIM
                d = 8 * first % HEAD_DIM + r
                if head < HEADS + KV_HEADS:
                    cos, sin = gl.load(cos_ptr + d).to(gl.float32), gl.load(sin_ptr + d).to(gl.float32)
                    one, two = (_rounded(_rounded(one * cos) - _rounded(two * sin)),
                                _rounded(_rounded(two * cos) + _rounded(one * sin)))
                if head < HEADS:
                    at = out_ptr + head * HEAD_DIM
                elif head < HEADS + KV_HEADS:
                    at = k_ptr + (head - HEADS) * cache_stride + gl.load(column_ptr) * HEAD_DIM
                else:
                    at = v_ptr + (head - HEADS - KV_HEADS) * cache_stride + gl.load(column_ptr) * HEAD_DIM
                gl.store(at + d, one.to(gl.bfloat16))
                gl.store(at + d + HEAD_DIM // 2, two.to(gl.bfloat16))

    @gluon.jit
    def _reducer(x_ptr, norm_ptr, eps, out_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, column_ptr, cache_stride, ready, empty,
                 ring, sz_ring, x_smem, sums_smem, K: gl.constexpr, N_OUT: gl.constexpr, UNITS: gl.constexpr,
                 GROUPS_IN: gl.constexpr, WINDOWS: gl.constexpr, STAGES: gl.constexpr, PAIR: gl.constexpr,
                 NORM: gl.constexpr, EPILOGUE: gl.constexpr, HEAD_DIM: gl.constexpr, HEADS: gl.constexpr,
                 KV_HEADS: gl.constexpr):
        """W @ x of this program's units from the ring's buffers, in the order _loader filled them, each unit's
        through _epilogue."""
        BUFFERS: gl.constexpr = GROUPS_IN // 8
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[gl.num_warps(), 1],
                                                      instr_shape=[16, 8])
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)  # 4 bytes a register
        b_layout: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
        rows_layout: gl.constexpr = gl.SliceLayout(1, mma)
        cols_layout: gl.constexpr = gl.SliceLayout(0, mma)
        rowwise: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
        _launch_dependents()
        _wait_for_kernel_ahead()
        _stage_input(x_ptr, norm_ptr, eps, x_smem, sums_smem, K, WINDOWS, NORM)
        stages = ring._reinterpret(gl.int8, [STAGES, 128, 64], ring.layout)  # A: rows (block, group, row)
        sz = sz_ring._reinterpret(gl.bfloat16, [STAGES * 2, 128], rowwise)
        sums = sums_smem._reinterpret(gl.float32, [WINDOWS, 8], rowwise)
        a_row = gl.arange(0, 128, layout=rows_layout)
        own = gl.arange(0, 8, layout=cols_layout)[None, :] == (a_row // 8 % 8)[:, None]
        i = gl.program_id(0) * 0
        for unit in range(gl.program_id(0), UNITS, gl.num_programs(0)):
            total = gl.zeros([128, 8], gl.float32, mma)
            for b in range(BUFFERS):
                stage = i % STAGES
                mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
                low, high = gl.inline_asm_elementwise(INT4_HALVES, "=r,=r,=r,=r,r",
                                                      [stages.index(stage).load(a_layout)],
                                                      dtype=(gl.float16, gl.float16), is_pure=True, pack=4)
                scale = sz.index(2 * stage).load(rows_layout).to(gl.float32)
                zero = sz.index(2 * stage + 1).load(rows_layout).to(gl.float32)
                fence_async_shared()  # the buffer's shared loads before TMA writes it again
                mbarrier.arrive(empty.index(stage), count=1)
                x_low = x_smem.index(2 * b).permute([1, 0]).load(b_layout)
                x_high = x_smem.index(2 * b + 1).permute([1, 0]).load(b_layout)
                sums_low = sums.index(2 * b).load(cols_layout)
                sums_high = sums.index(2 * b + 1).load(cols_layout)
                nothing = gl.zeros([128, 8], gl.float32, mma)
                products = mma_v2(low, x_low, nothing) + mma_v2(high, x_high, nothing)
                total += products * scale[:, None] + zero[:, None] * (sums_low + sums_high)[None, :]
                i += 1
            per_group = gl.sum(gl.where(own, total, 0.0), axis=1)  # each A row's own column
            y = gl.sum(gl.reshape(per_group, [2, 8, 8]), axis=1)  # the groups added: [block, row]
            _epilogue(y, _first_block(unit, PAIR), out_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, column_ptr, cache_stride,
                      N_OUT, PAIR, EPILOGUE, HEAD_DIM, HEADS, KV_HEADS)

    @gluon.jit
    def int4_one_row_kernel(w_desc, sz_desc, x_ptr, norm_ptr, eps, out_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr,
                            column_ptr, cache_stride, K: gl.constexpr, N_OUT: gl.constexpr, UNITS: gl.constexpr,
                            GROUPS_IN: gl.constexpr, WINDOWS: gl.constexpr, STAGES: gl.constexpr,
                            LOADER_REGISTERS: gl.constexpr, PAIR: gl.constexpr, NORM: gl.constexpr,
                            EPILOGUE: gl.constexpr, HEAD_DIM: gl.constexpr, HEADS: gl.constexpr,
                            KV_HEADS: gl.constexpr):
        """W @ x [K] (x RMSNormed first with NORM), N_OUT products through _epilogue: w_desc over tinygemm's words as
        rows of 64 bytes (boxes of [64, 64]), sz_desc over pack_scales' blocks ([2, 128] a box, packed for PAIR);
        GROUPS_IN: the packed weight's groups (inputs padded to buffers). Pointers an epilogue does not use may be
        any tensor's."""
        ring = gl.allocate_shared_memory(gl.int8, [2 * STAGES, 64, 64], w_desc.layout)
        sz_ring = gl.allocate_shared_memory(gl.bfloat16, [STAGES, 2, 128], sz_desc.layout)
        # 32-byte vectors of a window's rows XORed by the row mod 4: a warp's B loads meet each bank twice
        x_smem = gl.allocate_shared_memory(gl.float16, [WINDOWS, 8, 64],
                                           gl.SwizzledSharedLayout(vec=16, per_phase=1, max_phase=4, order=[1, 0]))
        sums_smem = gl.allocate_shared_memory(gl.float32, [WINDOWS, 8],
                                              gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))
        ready, empty = ring_barriers(STAGES)
        gl.warp_specialize([
            (_reducer, (x_ptr, norm_ptr, eps, out_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, column_ptr, cache_stride, ready,
                        empty, ring, sz_ring, x_smem, sums_smem, K, N_OUT, UNITS, GROUPS_IN, WINDOWS, STAGES, PAIR,
                        NORM, EPILOGUE, HEAD_DIM, HEADS, KV_HEADS)),
            (_loader, (w_desc, sz_desc, ready, empty, ring, sz_ring, UNITS, GROUPS_IN, STAGES, PAIR)),
        ], [1], [LOADER_REGISTERS])


def descriptors(qdata: torch.Tensor, packed_scales: torch.Tensor) -> tuple:
    """TMA descriptors of tinygemm's words as rows of 64 bytes and of pack_scales' blocks (they point into both)."""
    w_layout = gl.NVMMASharedLayout(swizzle_byte_width=ROW_BYTES, element_bitwidth=8, rank=2)
    sz_layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
    return (TensorDescriptor.from_tensor(qdata.view(torch.int8).reshape(-1, ROW_BYTES), [64, ROW_BYTES], w_layout),
            TensorDescriptor.from_tensor(packed_scales, [2, GROUPS * ROWS], sz_layout))


def constants(in_features: int, out_features: int, groups: int, pair: int = 1) -> dict:
    """The kernel's constants for a weight of `groups` packed groups (in_features real inputs), rows paired as
    pack_scales packed them; a plain product's epilogue (see OneRowProduct.launch for the fused ones)."""
    return dict(K=in_features, N_OUT=out_features, UNITS=(out_features + ROWS - 1) // ROWS, GROUPS_IN=groups,
                WINDOWS=triton.next_power_of_2(2 * groups // GROUPS), STAGES=STAGES, LOADER_REGISTERS=LOADER_REGISTERS,
                PAIR=pair, NORM=False, EPILOGUE="store", HEAD_DIM=0, HEADS=0, KV_HEADS=0)


class OneRowProduct:
    """An int4 weight's product of one row as the kernel takes it: TMA descriptors into its words and scales
    (packed for `pair`), constants, programs. The tensors must stay where they are while it is used."""

    def __init__(self, qdata: torch.Tensor, packed_scales: torch.Tensor, in_features: int, out_features: int,
                 pair: int = 1):
        self.descriptors = descriptors(qdata, packed_scales)
        self.constants = constants(in_features, out_features, qdata.shape[1], pair)
        sms = torch.cuda.get_device_properties(qdata.device).multi_processor_count
        self.programs = min(self.constants["UNITS"], PROGRAMS_PER_SM * sms)

    def launch(self, x: torch.Tensor, out: torch.Tensor, norm: tuple[torch.Tensor, float] | None = None,
               epilogue: str = "store", rope: tuple | None = None) -> None:
        """The product of x (one bf16 row, contiguous) into `out` through the epilogue (_epilogue): norm = (the
        RMSNorm's weight, eps) to norm x first; rope = (k cache, v cache, cos, sin, column, head_dim, heads,
        kv heads) for "rope", whose out takes q."""
        norm_weight, eps = norm or (x, 0.0)
        k, v, cos, sin, column, head_dim, heads, kv_heads = rope or (x, x, x, x, x, 0, 0, 0)
        int4_one_row_kernel[(self.programs,)](
            *self.descriptors, x, norm_weight, eps, out, k, v, cos, sin, column, k.stride(1) if rope else 0,
            **self.constants | dict(NORM=norm is not None, EPILOGUE=epilogue, HEAD_DIM=head_dim, HEADS=heads,
                                    KV_HEADS=kv_heads),
            num_warps=WARPS, maxnreg=MAX_REGISTERS, launch_pdl=True)


@torch.library.custom_op("higgs_bench::int4_one_row", mutates_args=())
def int4_one_row(x: torch.Tensor, qdata: torch.Tensor, packed_scales: torch.Tensor, out_features: int,
                 pair: int) -> torch.Tensor:
    """x [..., K] of one row (bf16) times the int4 weight (tinygemm's words, pack_scales' scales for `pair`) ->
    [..., N]."""
    y = x.new_empty(*x.shape[:-1], out_features)
    OneRowProduct(qdata, packed_scales, x.shape[-1], out_features, pair).launch(x.contiguous(), y)
    return y


@int4_one_row.register_fake
def _(x: torch.Tensor, qdata: torch.Tensor, packed_scales: torch.Tensor, out_features: int, pair: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)
