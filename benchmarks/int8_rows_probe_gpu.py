"""int8 weight-only products of several rows: int8_rows.py's kernel at several blocks, against cuBLAS over bf16
weights and against the conversion to bf16 + cuBLAS that int8 engines compiled before it.

    python benchmarks/int8_rows_probe_gpu.py OUT.json [--rows 4,16,64,256]
    python benchmarks/int8_rows_probe_gpu.py OUT.json --check   # tiny shapes, Triton's interpreter, on a CPU

Per product kind of the 3B shape and row count: 28 products (one per layer, distinct weights, so that none is
read from L2) in a CUDA graph, microseconds per product, and the weight bytes' rate. Every kernel's output is
first checked against torchao's arithmetic (docs/performance.md, section "int8 products of several rows").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton

from gemv_pdl_probe_gpu import replay_us  # this folder's scripts run with it on sys.path
from higgs_bench.backends.pytorch.int8_rows import Blocks, blocks_for, int8_matmul, programs_wanted

LAYERS = 28
KINDS = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}  # (N, K)
TINY_KINDS = {"qkv": (64, 256), "down": (32, 512)}
# (outputs, inputs, stages, warps, weights first) per program, for 16 rows of x per program and for 64
FEW_ROWS = [(16, 128, 4, 4, False), (16, 128, 6, 4, False), (32, 128, 6, 4, False), (16, 256, 4, 4, False), (32, 128, 5, 2, False), (32, 256, 4, 4, False), (64, 128, 4, 4, False),
            (64, 256, 3, 4, False), (128, 128, 4, 8, False), (128, 128, 4, 4, False), (128, 64, 5, 8, False),
            (64, 128, 4, 4, True), (128, 128, 4, 4, True), (128, 128, 4, 8, True), (64, 256, 3, 4, True)]
MANY_ROWS = [(16, 64, 4, 8, False), (16, 128, 4, 4, False), (32, 64, 4, 8, False), (32, 128, 4, 4, False), (64, 64, 4, 4, False), (64, 128, 4, 4, False), (128, 64, 4, 8, False),
             (128, 128, 3, 8, False), (64, 128, 4, 4, True), (128, 64, 4, 8, True), (128, 128, 3, 8, True)]


def torchao_product(x, w, s):
    """Int8Tensor's weight-only linear: x @ W.to(x.dtype).T rounded, times the row scales, rounded."""
    return torch.mm(x, w.to(x.dtype).t()) * s.reshape(-1).to(x.dtype)


def weights(n, k, device, layers):
    return [(torch.randint(-127, 128, (n, k), dtype=torch.int8, device=device),
             (torch.rand(n, 1, device=device) / (127 * k ** 0.5)).to(torch.bfloat16)) for _ in range(layers)]


def candidates(rows: int) -> list[Blocks]:
    block_rows = 16 if rows <= 16 else 64
    return [Blocks(block_rows, *c) for c in (FEW_ROWS if block_rows == 16 else MANY_ROWS)]


def check(kinds: dict, rows_list, device, dtype) -> dict:
    """The largest difference from torchao's arithmetic per kind, row count and blocks, in units of the output's
    rounding step (the sums' order differs: at most a step or two)."""
    errors = {}
    for kind, (n, k) in kinds.items():
        (w, s), = weights(n, k, device, 1)
        s = s.to(dtype)
        for rows in rows_list:
            x = torch.randn(rows, k, device=device, dtype=dtype)
            expected = torchao_product(x, w, s).float()
            step = expected.abs().max().item() * 2 ** -7
            for blocks in [None] + (candidates(rows) if device.type == "cuda" else [Blocks(16, 32, 64, 2, 4, True)]):
                if blocks and (n % blocks.outputs or k % blocks.inputs):
                    continue
                got = int8_matmul(x, w, s, blocks).float()
                error = (got - expected).abs().max().item() / step
                errors[f"{kind}/{rows}/{blocks}"] = error
                if error > 2:
                    raise SystemExit(f"{kind} {rows} rows {blocks}: off by {error:.2f} steps")
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", default="4,16,64,256")
    parser.add_argument("--check", action="store_true", help="tiny shapes through Triton's interpreter")
    args = parser.parse_args()
    rows_list = [int(r) for r in args.rows.split(",")]
    if args.check:
        errors = check(TINY_KINDS, rows_list, torch.device("cpu"), torch.float16)
        args.out.write_text(json.dumps({"check": errors}, indent=1))
        print(f"{len(errors)} products match torchao's")
        return

    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "check": check(KINDS, rows_list, device, torch.bfloat16),
              "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12, "kinds": {}}
    bandwidth = record["copy_bandwidth_tb_s"] * 1e12
    for kind, (n, k) in KINDS.items():
        ws = weights(n, k, device, LAYERS)
        w16 = [w.to(torch.bfloat16) for w, _ in ws]
        floor_us = n * k / bandwidth * 1e6
        for rows in rows_list:
            x = torch.randn(rows, k, device=device, dtype=torch.bfloat16)
            out = torch.empty(rows, n, device=device, dtype=torch.bfloat16)

            def per_product(product) -> float:
                return replay_us(lambda: [product(i) for i in range(LAYERS)], replays=50) / LAYERS

            row = {"floor_us": floor_us,
                   "bf16_cublas_us": per_product(lambda i: torch.mm(x, w16[i].t(), out=out)),
                   "convert_cublas_us": per_product(lambda i: torchao_product(x, *ws[i])),
                   "engine_blocks": str(blocks_for(rows, n, k, programs_wanted(device))),
                   "engine_us": per_product(lambda i: int8_matmul(x, *ws[i])), "blocks_us": {}}
            for blocks in candidates(rows):
                if n % blocks.outputs == 0 and k % blocks.inputs == 0:
                    try:
                        row["blocks_us"][str(blocks)] = per_product(lambda i: int8_matmul(x, *ws[i], blocks))
                    except Exception as error:  # past the GPU's limits: recorded, the others go on
                        row["blocks_us"][str(blocks)] = repr(error)[:200]
            timed = {b: us for b, us in row["blocks_us"].items() if isinstance(us, float)}
            row["best"] = min(timed, key=timed.get)
            record["kinds"][f"{kind}/{rows}"] = row
            print(f"{kind:8s} {rows:3d} rows: floor {floor_us:6.1f} us, bf16 cuBLAS {row['bf16_cublas_us']:6.1f}, "
                  f"convert+cuBLAS {row['convert_cublas_us']:6.1f}, engine {row['engine_us']:6.1f}, best "
                  f"{timed[row['best']]:6.1f} ({timed[row['best']] / floor_us:.2f}x) {row['best']}", flush=True)
            args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
