"""Registers, spills and weight bytes in flight of each one-row product kernel at the 3B shape, per weight kind:
Triton's PTX for Hopper (sm_90a) through its own `ptxas -v`. Needs no GPU.

    python benchmarks/one_row_registers.py [OUT.json]

A program issues its whole weight tile's loads at once (backends/pytorch/one_row.py), so what an SM has in flight
is its resident programs times a tile; residency is bounded by registers (65536 per SM, 2048 threads). Padding
the input to a power of two (3072 -> 4096) holds masked columns in registers too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the compiler, not the interpreter
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from higgs_bench.backends.pytorch import one_row  # noqa: E402
from higgs_bench.model.random_checkpoint import make_config  # noqa: E402

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
REGISTERS_PER_SM, THREADS_PER_SM = 65536, 2048
WEIGHT_TYPES = {"16-bit": ("*bf16", "*bf16", 2), "int8": ("*i8", "*bf16", 1), "fp8": ("*i8", "*fp32", 1)}
ARG_TYPES = {"eps": "fp32", "cache_stride": "i32", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "column_ptr": "*i64"}


def signature(kernel, weights: str) -> dict:
    weight, scale, _ = WEIGHT_TYPES[weights]
    types = ARG_TYPES | {"w_ptr": weight, "scale_ptr": scale}
    return {name: "constexpr" if name.isupper() else types.get(name, "*bf16") for name in kernel.arg_names}


def ptxas_usage(kernel, weights: str, constants: dict, warps: int) -> tuple[int, int]:
    """(registers per thread, bytes spilled) of the kernel compiled for sm_90a."""
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature(kernel, weights), constexprs=constants),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        report = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx.name, "-o", os.devnull],
                                capture_output=True, text=True, check=True).stderr
    spilled = re.search(r"(\d+) bytes spill stores", report)
    return int(re.search(r"Used (\d+) registers", report).group(1)), int(spilled.group(1)) if spilled else 0


def products(cfg, weights: str) -> dict:
    """product -> (kernel, its constants but WEIGHTS and PDL, rows per program, warps, input columns), as
    OneRowLayers launches them."""
    hidden, inter, head_dim = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    blocks = one_row.product_blocks(cfg, WEIGHT_TYPES[weights][2], weights)
    pad = triton.next_power_of_2
    return {
        "qkv": (one_row.qkv_kernel, dict(K=hidden, K_PAD=pad(hidden), HEAD_DIM=head_dim, HEADS=cfg.num_heads,
                                          KV_HEADS=cfg.num_kv_heads, HALF_BLOCK=blocks["qkv"][0] // 2),
                *blocks["qkv"], hidden),
        "o": (one_row.residual_kernel, dict(K=hidden, K_PAD=pad(hidden), BLOCK=blocks["o"][0]), *blocks["o"], hidden),
        "gate_up": (one_row.gate_up_kernel, dict(INTERMEDIATE=inter, K=hidden, K_PAD=pad(hidden),
                                                 HALF_BLOCK=blocks["gate_up"][0] // 2), *blocks["gate_up"], hidden),
        "down": (one_row.residual_kernel, dict(K=inter, K_PAD=pad(inter), BLOCK=blocks["down"][0]), *blocks["down"],
                 inter),
    }


def main() -> None:
    cfg = make_config("higgs-v2-3b")
    table = {}
    for weights, (_, _, item) in WEIGHT_TYPES.items():
        for name, (kernel, constants, rows, warps, inputs) in products(cfg, weights).items():
            registers, spilled = ptxas_usage(kernel, weights, constants | {"WEIGHTS": weights, "PDL": True}, warps)
            threads = 32 * warps
            resident = min(REGISTERS_PER_SM // (registers * threads), THREADS_PER_SM // threads)
            table[f"{weights} {name}"] = {"rows": rows, "warps": warps, "registers": registers, "spilled": spilled,
                                          "programs_per_sm": resident,
                                          "kb_in_flight_per_sm": resident * rows * inputs * item / 1024,
                                          "padded_share": 1 - inputs / triton.next_power_of_2(inputs)}
    for name, row in table.items():
        print(f"{name:16s} " + "  ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                                          for key, value in row.items()))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
