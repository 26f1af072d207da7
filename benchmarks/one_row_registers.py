"""Registers, spills and bytes in flight of each one-row kernel at the 3B shape, per weight kind: Triton's PTX
for a GPU architecture (Hopper by default) through its own `ptxas -v`, as the layers launch them there (with PDL
from Hopper on; attention over the 512 cache columns of the toolkit's one-row shape). Also the kernels of products
of several rows (one_byte_rows.py's for int8 and fp8, int4_rows.py's) at each of their blocks, with the shared
memory their stages take, and on Hopper int4_one_row.py's Gluon kernel. Needs no GPU.

    python benchmarks/one_row_registers.py [OUT.json] [--arch 90|89|86|80]

A program issues its whole weight tile's loads at once (backends/pytorch/one_row.py), so what an SM has in flight
is its resident programs times a tile (attention: a block of k and v columns); residency is bounded by
registers (65536 per SM) and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the compiler, not the interpreter
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import torch  # noqa: E402

from higgs_bench.backends.pytorch import int4_one_row, int4_rows, one_byte_rows, one_row  # noqa: E402
from higgs_bench.model.random_checkpoint import make_config  # noqa: E402

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
REGISTERS_PER_SM = 65536
ARCHES = {80: (2048, 163 * 1024), 86: (1536, 99 * 1024), 89: (1536, 99 * 1024), 90: (2048, 227 * 1024)}  # threads,
# shared memory per SM (the most one program may take), by compute capability
ATTENTION_COLUMNS = 512
WEIGHT_TYPES = {"16-bit": ("*bf16", "*bf16", 2), "int8": ("*i8", "*bf16", 1), "fp8": ("*i8", "*fp32", 1)}
FP8_ARCH = 89  # quantize.FP8_CAPABILITY
ARG_TYPES = {"eps": "fp32", "scale": "fp32", "cache_stride": "i32", "cos_ptr": "*fp32", "sin_ptr": "*fp32",
             "column_ptr": "*i64", "mask_ptr": "*i1", "parts_ptr": "*fp32", "stats_ptr": "*fp32", "count_ptr": "*i32"}


def signature(kernel, weights: str) -> dict:
    weight, scale, _ = WEIGHT_TYPES[weights]
    types = ARG_TYPES | {"w_ptr": weight, "scale_ptr": scale}
    return {name: "constexpr" if name.isupper() else types.get(name, "*bf16") for name in kernel.arg_names}


def ptxas_usage(kernel, types: dict, constants: dict, options: dict, arch: int,
                source=ASTSource) -> tuple[int, int, int]:
    """(registers per thread, bytes spilled, bytes of shared memory) of the kernel compiled for sm_<arch> (ptxas
    fails on what it cannot run there); `source`: ASTSource, or Gluon's for a Gluon kernel."""
    # as a launch specialises them: tensors (torch allocates them aligned) and the cache stride (one_byte_rows: the
    # product's sizes) divisible by 16, without which Triton loads a byte or two at a time
    aligned = {(i,): [["tt.divisibility", 16]] for i, (name, kind) in enumerate(types.items())
               if kind.startswith("*") or (kind == "i32" and name in ("cache_stride", "N", "K", "N_PACKED"))}
    compiled = triton.compile(source(fn=kernel, signature=types, constexprs=constants, attrs=aligned),
                              target=GPUTarget("cuda", arch, 32), options=options)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        report = subprocess.run([PTXAS, "-v", "--gpu-name", f"sm_{arch}a" if arch >= 90 else f"sm_{arch}", ptx.name,
                                 "-o", os.devnull], capture_output=True, text=True, check=True).stderr
    spilled = re.search(r"(\d+) bytes spill stores", report)
    return (int(re.search(r"Used (\d+) registers", report).group(1)), int(spilled.group(1)) if spilled else 0,
            compiled.metadata.shared)


def kernels(cfg, weights: str, shared_memory: int) -> dict:
    """name -> (kernel, its constants but WEIGHTS and PDL, compile options, rows (attention: columns) per
    program, bytes a row holds), as OneRowLayers launches them."""
    hidden, inter, head_dim = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    item = WEIGHT_TYPES[weights][2]
    blocks = one_row.product_blocks(cfg, item, weights)
    pad = triton.next_power_of_2

    def product(name, kernel, inputs, **constants):
        rows, warps = blocks[name]
        return kernel, constants, {"num_warps": warps}, rows, inputs * item

    block = one_row.attention_block_within(head_dim, 2, shared_memory)
    return {
        "qkv": product("qkv", one_row.qkv_kernel, hidden, K=hidden, K_PAD=pad(hidden), HEAD_DIM=head_dim,
                       HEADS=cfg.num_heads, KV_HEADS=cfg.num_kv_heads, HALF_BLOCK=blocks["qkv"][0] // 2),
        "attention": (one_row.attention_kernel, one_row.attention_constants(cfg, ATTENTION_COLUMNS, block, 2)
                      | {"PREFETCH": True}, {"num_warps": one_row.ATTENTION_WARPS,
                                            "num_stages": one_row.ATTENTION_STAGES}, block, 2 * head_dim * 2),
        "o": product("o", one_row.residual_kernel, hidden, K=hidden, K_PAD=pad(hidden), BLOCK=blocks["o"][0]),
        "gate_up": product("gate_up", one_row.gate_up_kernel, hidden, INTERMEDIATE=inter, K=hidden, K_PAD=pad(hidden),
                           HALF_BLOCK=blocks["gate_up"][0] // 2),
        "down": product("down", one_row.residual_kernel, inter, K=inter, K_PAD=pad(inter), BLOCK=blocks["down"][0]),
    }


def rows_name(b, kind: str) -> str:
    """Blocks of products of several rows as this table names them: kind, rows x weight rows x inputs, stages, warps."""
    return (f"{kind} rows {b.rows}x{b.outputs}x{b.inputs}/{b.stages}/{b.warps}"
            f"{' weights first' if b.weights_first else ''}")


ROWS_TYPES = {"int8": {"x_ptr": "*bf16", "x_scale_ptr": "*bf16", "w_ptr": "*i8", "scale_ptr": "*bf16"},
              "fp8": {"x_ptr": "*i8", "x_scale_ptr": "*fp32", "w_ptr": "*i8", "scale_ptr": "*fp32"},
              "int4": {"x_ptr": "*bf16", "w_ptr": "*i32", "sz_ptr": "*bf16"}}


def rows_kernels(kind: str) -> list:
    """(kernel, blocks, constants, weight bytes a block's step reads) per block of a kind's products of several
    rows, as rows_matmul and int4_rows_matmul launch them."""
    if kind == "int4":
        return [(int4_rows.int4_rows_kernel, b, dict(BLOCK_M=b.rows, BLOCK_N=b.outputs, STAGES=b.stages,
                                                      WEIGHTS_FIRST=b.weights_first), b.outputs * b.inputs // 2)
                for b in int4_rows.BLOCKS]
    return [(one_byte_rows.rows_kernel, b, dict(BLOCK_M=b.rows, BLOCK_N=b.outputs, BLOCK_K=b.inputs, STAGES=b.stages,
                                                WEIGHTS_FIRST=b.weights_first, WEIGHTS=kind), b.outputs * b.inputs)
            for b in one_byte_rows.FEW_ROWS_BLOCKS + one_byte_rows.MANY_ROWS_BLOCKS]


def rows_usage(arch: int, threads_per_sm: int, shared_memory: int) -> dict:
    """The kernels of products of several rows at each of their blocks, for int8 and int4 (and fp8 from Ada on):
    registers, spills, their stages' shared memory (which must fit the GPU's) and weight bytes in flight per SM
    (all stages but the one being read)."""
    table = {}
    for kind, pointers in ROWS_TYPES.items():
        if kind == "fp8" and arch < FP8_ARCH:
            continue
        sizes = ("M", "N", "K", "N_PACKED", "GROUPS_PACKED") if kind == "int4" else ("M", "N", "K")
        types = pointers | {"out_ptr": "*bf16"} | dict.fromkeys(sizes, "i32")
        for kernel, b, constants, step_bytes in rows_kernels(kind):
            registers, spilled, shared = ptxas_usage(kernel, types | dict.fromkeys(constants, "constexpr"), constants,
                                                     {"num_warps": b.warps}, arch)
            threads = 32 * b.warps
            resident = min(REGISTERS_PER_SM // (registers * threads), threads_per_sm // threads,
                           shared_memory // max(shared, 1))
            table[rows_name(b, kind)] = {
                "rows": b.rows, "warps": b.warps, "registers": registers, "spilled": spilled,
                "shared_kb": shared / 1024, "fits_shared_memory": shared <= shared_memory, "programs_per_sm": resident,
                "kb_in_flight_per_sm": resident * (b.stages - 1) * step_bytes / 1024}
    return table


def int4_one_row_usage(cfg, arch: int, shared_memory: int) -> dict:
    """int4_one_row.py's Gluon kernel (Hopper on) for each product of the 3B shape, as its custom op launches it
    (plain) and as OneRowLayers launches it (fused: norm, RoPE, residual, SiLU): registers (capped), spills, shared
    memory (its programs per SM must fit in the GPU's)."""
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    hidden, inter, head_dim = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    heads = dict(HEAD_DIM=head_dim, HEADS=cfg.num_heads, KV_HEADS=cfg.num_kv_heads)
    shapes = {"qkv": ((cfg.num_heads + 2 * cfg.num_kv_heads) * head_dim, hidden, head_dim // 16,
                      dict(NORM=True, EPILOGUE="rope") | heads),
              "o": (hidden, hidden, 1, dict(EPILOGUE="add")),
              "gate_up": (2 * inter, hidden, inter // 8, dict(NORM=True, EPILOGUE="silu")),
              "down": (hidden, inter, 1, dict(EPILOGUE="add"))}
    kernel = int4_one_row.int4_one_row_kernel
    pointers = dict.fromkeys(("x_ptr", "norm_ptr", "out_ptr", "k_ptr", "v_ptr", "cos_ptr", "sin_ptr"), "*bf16")
    table = {}
    for name, (outputs, inputs, pair, fused) in shapes.items():
        groups = inputs // int4_one_row.INT4_GROUP
        descs = int4_one_row.descriptors(torch.zeros(outputs // 8, groups, 32, 4, dtype=torch.int32),
                                         int4_one_row.pack_scales(torch.zeros(groups, outputs, 2, dtype=torch.bfloat16)))
        types = ({"w_desc": mangle_type(descs[0]), "sz_desc": mangle_type(descs[1])} | pointers
                 | {"eps": "fp32", "column_ptr": "*i64", "cache_stride": "i32"}
                 | {name: "constexpr" for name in kernel.arg_names if name.isupper()})
        plain = int4_one_row.constants(inputs, outputs, groups)
        for launch, constants in (("", plain), (" fused", plain | {"PAIR": pair} | fused)):
            registers, spilled, shared = ptxas_usage(
                kernel, types, constants, {"num_warps": int4_one_row.WARPS, "maxnreg": int4_one_row.MAX_REGISTERS},
                arch, source=GluonASTSource)
            table[f"int4 one-row {name}{launch}"] = {
                "registers": registers, "spilled": spilled, "shared_kb": shared / 1024,
                "fits_shared_memory": int4_one_row.PROGRAMS_PER_SM * shared <= shared_memory}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--arch", type=int, default=90, choices=sorted(ARCHES),
                        help="compute capability as one number")
    args = parser.parse_args()
    cfg = make_config("higgs-v2-3b")
    threads_per_sm, shared_memory = ARCHES[args.arch]
    pdl = one_row.programmatic_launch(divmod(args.arch, 10))
    table = {}
    for weights in WEIGHT_TYPES:
        if weights == "fp8" and args.arch < FP8_ARCH:
            continue  # quantize.check_supported refuses fp8 there
        for name, (kernel, constants, options, rows, row_bytes) in kernels(cfg, weights, shared_memory).items():
            if name == "attention" and weights != "16-bit":
                continue  # the cache is in the activations' dtype whatever the weights
            constants = constants | {"PDL": pdl} | ({} if name == "attention" else
                                                   {"WEIGHTS": weights, "DECODE": one_row.DECODE_INT8})
            registers, spilled, _ = ptxas_usage(kernel, signature(kernel, weights), constants, options, args.arch)
            threads = 32 * options["num_warps"]
            resident = min(REGISTERS_PER_SM // (registers * threads), threads_per_sm // threads)
            table[f"{weights} {name}"] = {"rows": rows, "warps": options["num_warps"], "registers": registers,
                                          "spilled": spilled, "programs_per_sm": resident,
                                          "kb_in_flight_per_sm": resident * rows * row_bytes / 1024}
    table |= rows_usage(args.arch, threads_per_sm, shared_memory)
    if divmod(args.arch, 10) >= int4_one_row.CAPABILITY:
        table |= int4_one_row_usage(cfg, args.arch, shared_memory)
    for name, row in table.items():
        print(f"{name:18s} " + "  ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                                          for key, value in row.items()))
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
