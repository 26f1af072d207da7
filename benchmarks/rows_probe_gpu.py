"""Products of several rows with quantised weights: one_byte_rows.py's kernel (int8, fp8) or int4_rows.py's (int4)
at several blocks, against cuBLAS over bf16 weights and against torchao's own product (int8: the conversion to bf16
+ cuBLAS that int8 engines compiled before the kernel; fp8: the rows quantised, then `_scaled_mm`; int4: torch's
int4 kernel, tinygemm).

    python benchmarks/rows_probe_gpu.py OUT.json [--weights int8|fp8|int4] [--rows 4,16,64,256]
    python benchmarks/rows_probe_gpu.py OUT.json --check [--weights fp8|int4]   # tiny shapes, Triton's interpreter

Per product kind of the 3B shape and row count: 28 products (one per layer, distinct weights, so that none is
read from L2) in a CUDA graph, microseconds per product, and the weight bytes' rate. Every kernel's output is
first checked against the reference arithmetic (docs/performance.md, section "int8 products of several rows").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton

from gemv_pdl_probe_gpu import replay_us  # this folder's scripts run with it on sys.path
from higgs_bench.backends.pytorch import int4_rows, one_byte_rows
from higgs_bench.backends.pytorch.one_byte_rows import Blocks, programs_wanted
from higgs_bench.backends.pytorch.quantised_linears import fp8_activations, one_row_fp8

LAYERS = 28
KINDS = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}  # (N, K)
TINY_KINDS = {"qkv": (64, 256), "down": (32, 512)}
# (outputs, inputs, stages, warps, weights first) per program, for 16 rows of x per program and for 64
FEW_ROWS = [(16, 128, 4, 4, False), (16, 128, 6, 4, False), (32, 128, 6, 4, False), (16, 256, 4, 4, False),
            (32, 128, 5, 2, False), (32, 256, 4, 4, False), (64, 128, 4, 4, False), (64, 256, 3, 4, False),
            (128, 128, 4, 8, False), (128, 128, 4, 4, False), (128, 64, 5, 8, False), (64, 128, 4, 4, True),
            (128, 128, 4, 4, True), (128, 128, 4, 8, True), (64, 256, 3, 4, True)]
MANY_ROWS = [(16, 64, 4, 8, False), (16, 128, 4, 4, False), (32, 64, 4, 8, False), (32, 128, 4, 4, False),
             (64, 64, 4, 4, False), (64, 128, 4, 4, False), (128, 64, 4, 8, False), (128, 128, 3, 8, False),
             (64, 128, 4, 4, True), (128, 64, 4, 8, True), (128, 128, 3, 8, True)]
# int4: inputs per step are one group of 128
INT4_FEW_ROWS = [(8, 128, 4, 4, False), (16, 128, 4, 4, False), (32, 128, 4, 4, False), (32, 128, 3, 8, False),
                 (64, 128, 3, 4, False), (64, 128, 3, 8, False), (16, 128, 4, 4, True), (32, 128, 4, 4, True),
                 (64, 128, 3, 4, True), (128, 128, 3, 8, True)]
INT4_MANY_ROWS = [(8, 128, 3, 4, False), (16, 128, 3, 4, False), (32, 128, 3, 4, False), (64, 128, 3, 4, False),
                  (64, 128, 3, 8, False), (32, 128, 3, 4, True), (64, 128, 3, 4, True), (128, 128, 3, 8, True)]
BYTES_PER_WEIGHT = {"int8": 1.0, "fp8": 1.0, "int4": 0.5}


def weights(n, k, device, layers, kind="int8"):
    """Per layer, the quantised weight as the kernel takes it: (int8 values, bf16 row scales), (e4m3 values,
    float32 row scales), or (tinygemm-packed int4 words, bf16 scales and zeros per group, rows)."""
    if kind == "fp8":
        return [(torch.randn(n, k, device=device).to(torch.float8_e4m3fn),
                 torch.rand(n, 1, device=device) / (448 * k ** 0.5)) for _ in range(layers)]
    if kind == "int4":
        return [int4_weight(n, k, device) for _ in range(layers)]
    return [(torch.randint(-127, 128, (n, k), dtype=torch.int8, device=device),
             (torch.rand(n, 1, device=device) / (127 * k ** 0.5)).to(torch.bfloat16)) for _ in range(layers)]


def int4_weight(n, k, device):
    """Random int4 values packed as torch packs them on CUDA (int4_rows.tinygemm_pack's layout, checked against
    torch's own packing there), with random scales and zeros."""
    values = torch.randint(0, 16, (n, k), device=device)
    packed = int4_rows.tinygemm_pack(values.cpu()).to(device)
    if device.type == "cuda":
        theirs = torch.ops.aten._convert_weight_to_int4pack((values[:, ::2] << 4 | values[:, 1::2]).to(torch.uint8), 8)
        if not torch.equal(packed, theirs):
            raise SystemExit("int4_rows.tinygemm_pack's layout differs from torch's _convert_weight_to_int4pack")
    groups = k // int4_rows.GROUP
    scale = (torch.rand(n, groups, device=device) / (8 * k ** 0.5)).to(torch.bfloat16)
    zero = (torch.randn(n, groups, device=device) / (8 * k ** 0.5)).to(torch.bfloat16)
    return packed, torch.stack([scale, zero], -1).transpose(0, 1).contiguous(), values


def dequantised(w, *rest):
    """The weight as 16-bit values (for cuBLAS, and int4's reference): int8 and fp8 values as they are, int4's
    (q - 8) * scale + zero (in float32, then bf16)."""
    if w.dtype != torch.int32:
        return w.to(torch.bfloat16)
    sz, values = rest
    scale, zero = (sz[..., i].t().float().repeat_interleave(int4_rows.GROUP, dim=1) for i in (0, 1))
    return ((values.float() - 8) * scale + zero).to(torch.bfloat16)


def reference(x, w, *rest):
    """torchao's arithmetic. int8 (Int8Tensor's weight-only linear): x @ W.to(x.dtype).T rounded, times the row
    scales, rounded. fp8: quantised_linears.one_row_fp8. int4: x times the dequantised weights, in float32."""
    if w.dtype == torch.float8_e4m3fn:
        return one_row_fp8(x, w, *rest)
    if w.dtype == torch.int32:
        return (x.float() @ dequantised(w, *rest).float().t()).to(x.dtype)
    return torch.mm(x, w.to(x.dtype).t()) * rest[0].reshape(-1).to(x.dtype)


def torchao_product(x, w, *rest):
    """What the engine ran without the kernel: int8 as `reference`, fp8 through `_scaled_mm`, int4 tinygemm."""
    if w.dtype == torch.int32:
        return torch.ops.aten._weight_int4pack_mm(x, w, int4_rows.GROUP, rest[0])
    if w.dtype != torch.float8_e4m3fn:
        return reference(x, w, *rest)
    x_fp8, x_scale = fp8_activations(x, w.dtype)
    return torch._scaled_mm(x_fp8, w.t(), scale_a=x_scale, scale_b=rest[0].reshape(1, -1), out_dtype=x.dtype)


def kernel(x, w, *rest, blocks=None):
    """The engine's product of several rows: int4_rows_matmul or one_byte_rows.rows_matmul."""
    if w.dtype == torch.int32:
        return int4_rows.int4_rows_matmul(x, w, rest[0], rest[1].shape[0], blocks)
    return one_byte_rows.rows_matmul(x, w, rest[0], blocks)


def engine_blocks(kind: str, rows: int, n: int, k: int, programs: int) -> Blocks | None:
    if kind == "int4":
        return int4_rows.blocks_for(rows, n, programs)
    return one_byte_rows.blocks_for(rows, n, k, programs)


def candidates(rows: int, kind: str = "int8") -> list[Blocks]:
    block_rows = 16 if rows <= 16 else 64
    few, many = (INT4_FEW_ROWS, INT4_MANY_ROWS) if kind == "int4" else (FEW_ROWS, MANY_ROWS)
    return [Blocks(block_rows, *c) for c in (few if block_rows == 16 else many)]


def check(kinds: dict, rows_list, device, dtype, weight_kind: str) -> dict:
    """The largest difference from torchao's arithmetic per kind, row count and blocks, in units of the output's
    rounding step (the sums' order differs: at most a step or two)."""
    errors = {}
    for kind, (n, k) in kinds.items():
        (w, *rest), = weights(n, k, device, 1, weight_kind)
        rest[0] = rest[0].to(dtype) if weight_kind == "int8" else rest[0]
        for rows in rows_list:
            x = torch.randn(rows, k, device=device, dtype=dtype)
            expected = reference(x, w, *rest).float()
            step = expected.abs().max().item() * 2 ** -7
            engine = [None] if engine_blocks(weight_kind, rows, n, k, 1) else []  # the engine's own, up to 64 rows
            tried = candidates(rows, weight_kind) if device.type == "cuda" else [
                Blocks(16, 32, 128 if weight_kind == "int4" else 64, 2, 4, True)]
            for blocks in engine + tried:
                if blocks and (n % blocks.outputs or k % blocks.inputs):
                    continue
                got = kernel(x, w, *rest, blocks=blocks).float()
                error = (got - expected).abs().max().item() / step
                errors[f"{kind}/{rows}/{blocks}"] = error
                if error > 2:
                    raise SystemExit(f"{kind} {rows} rows {blocks}: off by {error:.2f} steps")
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", default="4,16,64,256")
    parser.add_argument("--weights", choices=("int8", "fp8", "int4"), default="int8")
    parser.add_argument("--check", action="store_true", help="tiny shapes through Triton's interpreter")
    args = parser.parse_args()
    rows_list = [int(r) for r in args.rows.split(",")]
    if args.check:
        errors = check(TINY_KINDS, rows_list, torch.device("cpu"), torch.float16, args.weights)
        args.out.write_text(json.dumps({"check": errors}, indent=1))
        print(f"{len(errors)} products match torchao's")
        return

    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "weights": args.weights, "check": check(KINDS, rows_list, device, torch.bfloat16, args.weights),
              "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12, "kinds": {}}
    bandwidth = record["copy_bandwidth_tb_s"] * 1e12
    for kind, (n, k) in KINDS.items():
        ws = weights(n, k, device, LAYERS, args.weights)
        w16 = [dequantised(*w) for w in ws]
        floor_us = n * k * BYTES_PER_WEIGHT[args.weights] / bandwidth * 1e6
        for rows in rows_list:
            x = torch.randn(rows, k, device=device, dtype=torch.bfloat16)
            out = torch.empty(rows, n, device=device, dtype=torch.bfloat16)

            def per_product(product) -> float:
                return replay_us(lambda: [product(i) for i in range(LAYERS)], replays=50) / LAYERS

            row = {"floor_us": floor_us,
                   "bf16_cublas_us": per_product(lambda i: torch.mm(x, w16[i].t(), out=out)),
                   "torchao_us": per_product(lambda i: torchao_product(x, *ws[i])),
                   "engine_blocks": str(engine_blocks(args.weights, rows, n, k, programs_wanted(device))),
                   "blocks_us": {}}
            row["engine_us"] = (per_product(lambda i: kernel(x, *ws[i]))
                                if engine_blocks(args.weights, rows, n, k, 1) else None)
            for blocks in candidates(rows, args.weights):
                if n % blocks.outputs == 0 and k % blocks.inputs == 0:
                    try:
                        row["blocks_us"][str(blocks)] = per_product(lambda i: kernel(x, *ws[i], blocks=blocks))
                    except Exception as error:  # past the GPU's limits: recorded, the others go on
                        row["blocks_us"][str(blocks)] = repr(error)[:200]
            timed = {b: us for b, us in row["blocks_us"].items() if isinstance(us, float)}
            row["best"] = min(timed, key=timed.get)
            record["kinds"][f"{kind}/{rows}"] = row
            print(f"{kind:8s} {rows:3d} rows: floor {floor_us:6.1f} us, bf16 cuBLAS {row['bf16_cublas_us']:6.1f}, "
                  f"torchao {row['torchao_us']:6.1f}, engine {row['engine_us'] or float('nan'):6.1f}, best "
                  f"{timed[row['best']]:6.1f} ({timed[row['best']] / floor_us:.2f}x) {row['best']}", flush=True)
            args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
