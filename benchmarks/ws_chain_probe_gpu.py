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
they fill and signal them free.

The chain: `layers` x (q/k/v, o, gate/up, down) of the 3B shape, each product reading the one before's output
(as gemv_pdl_probe_gpu.py chains them), int8 weights with a scale per row and torchao's weight-only numerics
(the sum rounded to bfloat16, times the scale, rounded), int8 made floats as one_row.py decodes them. Against:
the same chain of register kernels as one_row.py's (tma_gemv_probe_gpu.register_product at one_row.INT8_BLOCKS'
rows and warps, PDL), and the floor of the chain's bytes at copy bandwidth. Each is checked against a float32
chain first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from higgs_bench.backends.pytorch import one_row

HIDDEN, INTER, QKV_ROWS = 3072, 8192, 5120
LAYERS = 28
BOX = 256  # inputs per TMA copy: the widest box side TMA takes
# ROWS: output rows per unit of work (units are dealt round-robin to the programs); SUB: TMA copies per ring buffer;
# STAGES: ring buffers; WARPS: reducing warps (the loading warp is one more); LOADER_REGS: its registers per thread
# ROTATE: each product's units dealt from the program after the one that took the chain's last unit so far (else
# from program 0 each time: the programs that take one unit more do so in every product); X32: the input row kept in
# shared memory as float32 (else bfloat16, converted at each use). The records in docs/results/h200-ws-chain/ name
# their variants against these; the fastest measured was {"ROWS": 16, "WARPS": 8, "X32": False}.
SETTINGS = {"ROWS": 8, "SUB": 4, "STAGES": 12, "WARPS": 4, "LOADER_REGS": 40, "ROTATE": True, "X32": True,
            "MATH": True, "BARRIERS": True}
# MATH / BARRIERS False: diagnostics that drop the reduction (buffers are waited for and freed only) or the grid
# barriers, so that a chain's time shows what they cost; their outputs are wrong, and they are timed unchecked
INT8_FLOATS = gl.constexpr(one_row.INT8_FLOATS.value)


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
            ROTATE: gl.constexpr):
    """The units before each product of the layer in the chain (with ROTATE; else zeros)."""
    PER_LAYER: gl.constexpr = (QKV_ROWS + 2 * HIDDEN + 2 * INTER) // ROWS
    qkv = layer * PER_LAYER * ROTATE
    o = qkv + QKV_ROWS // ROWS * ROTATE
    gate_up = o + HIDDEN // ROWS * ROTATE
    return qkv, o, gate_up, gate_up + 2 * INTER // ROWS * ROTATE


@gluon.jit
def _load_product(desc, layer, N: gl.constexpr, K: gl.constexpr, first, i, ready, empty, ring, ROWS: gl.constexpr,
                  SUB: gl.constexpr, STAGES: gl.constexpr):
    """Copies this program's [ROWS, K] tiles of the product into the ring, SUB boxes a buffer; returns the count
    of buffers filled so far."""
    BOX_K: gl.constexpr = desc.block_type.shape[1]
    for unit in range(_first_unit(first), N // ROWS, gl.num_programs(0)):
        for k in range(0, K, SUB * BOX_K):
            stage = i % STAGES
            mbarrier.wait(empty.index(stage), ((i // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(stage), SUB * desc.block_type.nbytes)
            for j in gl.static_range(SUB):
                tma.async_copy_global_to_shared(desc, [layer * N + unit * ROWS, k + j * BOX_K], ready.index(stage),
                                                ring.index(stage * SUB + j))
            i += 1
    return i


@gluon.jit
def _loader(qkv_desc, o_desc, gu_desc, down_desc, ready, empty, ring, layers, HIDDEN: gl.constexpr,
            INTER: gl.constexpr, QKV_ROWS: gl.constexpr, ROWS: gl.constexpr, SUB: gl.constexpr,
            STAGES: gl.constexpr, ROTATE: gl.constexpr):
    i = gl.program_id(0) * 0
    for layer in range(layers):
        f_qkv, f_o, f_gu, f_down = _firsts(layer, HIDDEN, INTER, QKV_ROWS, ROWS, ROTATE)
        i = _load_product(qkv_desc, layer, QKV_ROWS, HIDDEN, f_qkv, i, ready, empty, ring, ROWS, SUB, STAGES)
        i = _load_product(o_desc, layer, HIDDEN, HIDDEN, f_o, i, ready, empty, ring, ROWS, SUB, STAGES)
        i = _load_product(gu_desc, layer, 2 * INTER, HIDDEN, f_gu, i, ready, empty, ring, ROWS, SUB, STAGES)
        i = _load_product(down_desc, layer, HIDDEN, INTER, f_down, i, ready, empty, ring, ROWS, SUB, STAGES)


@gluon.jit
def _grid_barrier(counter_ptr, target):
    """Waits until `target` arrivals, this program's included (release on arrival, acquire while waiting)."""
    gl.thread_barrier()
    arrived = gl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") + 1
    while arrived < target:
        arrived = gl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    gl.thread_barrier()


@gluon.jit
def _barrier_if(BARRIERS: gl.constexpr, counter_ptr, target):
    if BARRIERS:
        _grid_barrier(counter_ptr, target)


@gluon.jit
def _stage_input(x_ptr, x_smem, K: gl.constexpr, BOX_K: gl.constexpr, layout: gl.constexpr):
    """The product's input row (another program's output, so read past L1) into shared memory as [K / BOX_K,
    BOX_K]; the pieces past K are zeros, never read."""
    X_ROWS: gl.constexpr = x_smem.type.shape[0]
    pieces = gl.arange(0, X_ROWS, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, BOX_K, layout=gl.SliceLayout(0, layout))
    at = pieces[:, None] * BOX_K + cols[None, :]
    x = gl.load(x_ptr + at, mask=at < K, other=0.0, cache_modifier=".cg")
    plain: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    x_smem._reinterpret(x_smem.dtype, [X_ROWS, BOX_K], plain).store(x.to(x_smem.dtype))  # the same bytes, seen as one tensor
    gl.thread_barrier()


@gluon.jit
def _reduce_product(ready, empty, ring, x_smem, first, i, x_ptr, y_ptr, scale_ptr, layer, N: gl.constexpr,
                    K: gl.constexpr,
                    ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr,
                    x_layout: gl.constexpr, MATH: gl.constexpr):
    """y = x @ W.T of this program's units, from the ring's buffers in the order _load_product filled them."""
    BOX_K: gl.constexpr = ring.type.shape[2]
    _stage_input(x_ptr, x_smem, K, BOX_K, x_layout)
    rows_in = gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    for unit in range(_first_unit(first), N // ROWS, gl.num_programs(0)):
        acc = gl.zeros([ROWS, BOX_K], gl.float32, layout)
        for k in range(0, K, SUB * BOX_K):
            stage = i % STAGES
            mbarrier.wait(ready.index(stage), (i // STAGES) & 1)
            for j in gl.static_range(SUB if MATH else 0):
                w = ring.index(stage * SUB + j).load(layout)
                x = x_smem.index(k // BOX_K + j).load(gl.SliceLayout(0, layout)).to(gl.float32)
                floats = gl.inline_asm_elementwise(INT8_FLOATS, "=r,=r,=r,=r,r", [w], dtype=gl.float32,
                                                   is_pure=True, pack=4)
                acc += floats * x[None, :]
            fence_async_shared()  # the buffer's shared loads before TMA writes it again
            mbarrier.arrive(empty.index(stage), count=1)
            i += 1
        rows = unit * ROWS + rows_in
        total = gl.sum(acc, axis=1).to(gl.bfloat16).to(gl.float32)
        scale = gl.load(scale_ptr + layer * N + rows).to(gl.float32)
        gl.store(y_ptr + rows, (total * scale).to(gl.bfloat16))
    return i


@gluon.jit
def _reducer(ready, empty, ring, x_smem, s_qkv, s_o, s_gu, s_down, buf_ptr, counter_ptr, layers, WIDE: gl.constexpr,
             HIDDEN: gl.constexpr, INTER: gl.constexpr, QKV_ROWS: gl.constexpr, ROWS: gl.constexpr,
             SUB: gl.constexpr, STAGES: gl.constexpr, layout: gl.constexpr, x_layout: gl.constexpr,
             ROTATE: gl.constexpr, MATH: gl.constexpr, BARRIERS: gl.constexpr):
    programs = gl.num_programs(0)
    a = buf_ptr
    b = buf_ptr + WIDE
    i = gl.program_id(0) * 0
    for layer in range(layers):
        f_qkv, f_o, f_gu, f_down = _firsts(layer, HIDDEN, INTER, QKV_ROWS, ROWS, ROTATE)
        i = _reduce_product(ready, empty, ring, x_smem, f_qkv, i, a, b, s_qkv, layer, QKV_ROWS, HIDDEN, ROWS, SUB, STAGES,
                            layout, x_layout, MATH)
        _barrier_if(BARRIERS, counter_ptr, (4 * layer + 1) * programs)
        i = _reduce_product(ready, empty, ring, x_smem, f_o, i, b, a, s_o, layer, HIDDEN, HIDDEN, ROWS, SUB, STAGES,
                            layout, x_layout, MATH)
        _barrier_if(BARRIERS, counter_ptr, (4 * layer + 2) * programs)
        i = _reduce_product(ready, empty, ring, x_smem, f_gu, i, a, b, s_gu, layer, 2 * INTER, HIDDEN, ROWS, SUB, STAGES,
                            layout, x_layout, MATH)
        _barrier_if(BARRIERS, counter_ptr, (4 * layer + 3) * programs)
        i = _reduce_product(ready, empty, ring, x_smem, f_down, i, b, a, s_down, layer, HIDDEN, INTER, ROWS, SUB, STAGES,
                            layout, x_layout, MATH)
        _barrier_if(BARRIERS, counter_ptr, (4 * layer + 4) * programs)


@gluon.jit
def chain_kernel(qkv_desc, o_desc, gu_desc, down_desc, s_qkv, s_o, s_gu, s_down, buf_ptr, counter_ptr, layers,
                 WIDE: gl.constexpr, HIDDEN: gl.constexpr, INTER: gl.constexpr, QKV_ROWS: gl.constexpr,
                 ROWS: gl.constexpr, SUB: gl.constexpr, STAGES: gl.constexpr, SPT: gl.constexpr, TPW_R: gl.constexpr,
                 WPC_R: gl.constexpr, LOADER_REGS: gl.constexpr, ROTATE: gl.constexpr, X32: gl.constexpr,
                 MATH: gl.constexpr, BARRIERS: gl.constexpr):
    """The whole chain: buffers a (input of q/k/v) and b alternate as each product's input and output."""
    BOX_K: gl.constexpr = qkv_desc.block_type.shape[1]
    WARPS: gl.constexpr = gl.num_warps()
    layout: gl.constexpr = gl.BlockedLayout([1, SPT], [TPW_R, 32 // TPW_R], [WPC_R, WARPS // WPC_R], [1, 0])
    x_layout: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [WARPS, 1], [1, 0])
    ring = gl.allocate_shared_memory(gl.int8, [STAGES * SUB, ROWS, BOX_K], qkv_desc.layout)
    x_smem = gl.allocate_shared_memory(gl.float32 if X32 else gl.bfloat16, [INTER // BOX_K, BOX_K],
                                       gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    gl.warp_specialize([
        (_reducer, (ready, empty, ring, x_smem, s_qkv, s_o, s_gu, s_down, buf_ptr, counter_ptr, layers, WIDE, HIDDEN,
                    INTER, QKV_ROWS, ROWS, SUB, STAGES, layout, x_layout, ROTATE, MATH, BARRIERS)),
        (_loader, (qkv_desc, o_desc, gu_desc, down_desc, ready, empty, ring, layers, HIDDEN, INTER, QKV_ROWS, ROWS,
                   SUB, STAGES, ROTATE)),
    ], [1], [LOADER_REGS])


def tile_layout(rows: int, warps: int) -> dict:
    """SPT, TPW_R, WPC_R of a blocked layout that covers a [rows, BOX] int8 tile exactly: each thread holds up to
    16 consecutive bytes of a row (one 128-bit shared load), a warp's threads side by side along the row."""
    spt = min(16, rows * BOX // (32 * warps))
    tpw_r = 32 // min(32, BOX // spt)
    wpc_r = rows // tpw_r
    if spt < 4 or wpc_r < 1 or warps % wpc_r or (32 // tpw_r) * spt * (warps // wpc_r) != BOX:
        raise ValueError(f"no blocked layout covers [{rows}, {BOX}] with {warps} warps")
    return {"SPT": spt, "TPW_R": tpw_r, "WPC_R": wpc_r}


def constants(settings: dict) -> dict:
    s = SETTINGS | settings
    if INTER % BOX or (INTER // BOX) & (INTER // BOX - 1):
        raise ValueError("the input row is staged as [INTER / BOX, BOX], a power of two of rows")
    return dict(WIDE=2 * INTER, HIDDEN=HIDDEN, INTER=INTER, QKV_ROWS=QKV_ROWS, ROWS=s["ROWS"], SUB=s["SUB"],
                STAGES=s["STAGES"], LOADER_REGS=s["LOADER_REGS"], ROTATE=s["ROTATE"], X32=s["X32"], MATH=s["MATH"],
                BARRIERS=s["BARRIERS"],
                **tile_layout(s["ROWS"], s["WARPS"]))


def descriptor(weights: torch.Tensor, rows: int) -> TensorDescriptor:
    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
    return TensorDescriptor.from_tensor(weights, [rows, BOX], layout)


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
        self.descs = [descriptor(weights[kind][0], s["ROWS"]) for kind in kinds()]
        device = weights["qkv"][0].device
        self.buffers = torch.zeros(2 * 2 * INTER, device=device, dtype=torch.bfloat16)
        self.counter = torch.zeros(1, device=device, dtype=torch.int32)
        self.programs = torch.cuda.get_device_properties(device).multi_processor_count

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.buffers[:x.numel()].copy_(x)
        self.counter.zero_()
        chain_kernel[(self.programs,)](*self.descs, *(self.weights[kind][1] for kind in kinds()), self.buffers,
                                       self.counter, self.layers, **constants(self.settings),
                                       num_warps=self.settings["WARPS"])
        return self.buffers[:HIDDEN]  # down, the last product, writes buffer a


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
        desc = mangle_type(descriptor(torch.zeros(s["ROWS"], BOX, dtype=torch.int8), s["ROWS"]))
        types = {name: "constexpr" if name.isupper() else desc if name.endswith("_desc") else
                 "i32" if name == "layers" else "*i32" if name == "counter_ptr" else "*bf16"
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
    parser.add_argument("--variants", type=json.loads, default=[{}])
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
        diagnostic = name != "registers" and not all((SETTINGS | json.loads(name))[key] for key in ("MATH", "BARRIERS"))
        if name in record["errors"] or (record["check"].get(name, 1.0) > 2e-2 and not diagnostic):
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
