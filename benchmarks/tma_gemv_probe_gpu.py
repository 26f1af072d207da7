"""One-row products with one-byte weights: do Hopper's tensor-memory loads (TMA), pipelined through shared memory,
read int8 weights faster than the one-row kernels, whose programs hold their whole tile in registers?

    python benchmarks/tma_gemv_probe_gpu.py OUT.json [--weights int8|bf16]
    python benchmarks/tma_gemv_probe_gpu.py OUT.json --check   # tiny shapes, Triton's interpreter, on a CPU

A one-row kernel's program issues its whole weight tile's loads at once, into registers, so what an SM has in
flight is bounded by registers, and a one-byte tile of the same rows holds half a 16-bit tile's bytes. Here a program walks its rows' inputs BLOCK_K at a time
through STAGES - 1 buffers of shared memory that TMA fills (Triton pipelines descriptor loads in a `tl.range` with
`num_stages`; it does not pipeline plain loads that feed no dot), so bytes in flight are bounded by shared memory
(227 KB per SM). Also int8 made floats by one_row.INT8_FLOATS (byte permutes) instead of Triton's conversion.
Per product kind, a chain of 28 products (one per layer, each reading the one before's output), in a CUDA
graph, with PDL: the register kernel at one_row.BLOCKS (q/k/v's and gate/up's rows as one_row pairs them, twice
over), at each of REGISTER_CONFIGS converted and decoded, and the TMA kernel at each of TMA_CONFIGS.
(docs/performance.md, section "int8 decoded in registers".)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from gemv_pdl_probe_gpu import replay_us  # this folder's scripts run with it on sys.path
from higgs_bench.backends.pytorch.one_row import _floats

LAYERS = 28
KINDS = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}  # (N, K)
TINY_KINDS = {"qkv": (64, 256), "o": (32, 256), "gate_up": (128, 256), "down": (32, 512)}
REGISTER_BLOCKS = {"qkv": (4, 4), "o": (8, 8), "gate_up": (2, 4), "down": (4, 8)}  # one_row.BLOCKS then
TMA_CONFIGS = [(8, 256, 4, 4), (16, 256, 4, 4), (32, 256, 4, 4), (32, 256, 13, 4)]  # (rows, BLOCK_K, stages, warps)
REGISTER_CONFIGS = [(rows, warps) for rows in (2, 4, 8, 16) for warps in (4, 8)]


@triton.jit
def register_gemv(w_ptr, s_ptr, x_ptr, y_ptr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
                  ONE_BYTE: tl.constexpr, PDL: tl.constexpr, DECODE: tl.constexpr = False):
    """one_row.residual_kernel's product without the residual: the whole [BLOCK, K] tile loaded at once (int8
    made floats by one_row.INT8_FLOATS with DECODE)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, K_PAD)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=(cols < K)[None, :], other=0)
    x = tl.load(x_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
    y = tl.sum(_floats(w, "int8" if ONE_BYTE else "16-bit", DECODE) * x[None, :], axis=1)
    if ONE_BYTE:
        y = y.to(tl.bfloat16).to(tl.float32) * tl.load(s_ptr + rows).to(tl.float32)
    tl.store(y_ptr + rows, y.to(tl.bfloat16))


@triton.jit
def tma_gemv(w_desc, s_ptr, x_ptr, y_ptr, K: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
             STAGES: tl.constexpr, ONE_BYTE: tl.constexpr, PDL: tl.constexpr):
    """The same product, the tile read BLOCK_K columns at a time through TMA, STAGES - 1 reads in flight."""
    first = tl.program_id(0) * BLOCK
    rows = first + tl.arange(0, BLOCK)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    acc = tl.zeros((BLOCK, BLOCK_K), tl.float32)
    for k in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        w = w_desc.load([first, k])
        x = tl.load(x_ptr + k + tl.arange(0, BLOCK_K)).to(tl.float32)
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1)
    if ONE_BYTE:
        y = y.to(tl.bfloat16).to(tl.float32) * tl.load(s_ptr + rows).to(tl.float32)
    tl.store(y_ptr + rows, y.to(tl.bfloat16))


def register_product(w, s, x, y, rows: int, warps: int, pdl: bool = True, decode: bool = False) -> None:
    n, k = w.shape
    register_gemv[(n // rows,)](w, s, x, y, K=k, K_PAD=triton.next_power_of_2(k), BLOCK=rows,
                                ONE_BYTE=w.dtype == torch.int8, PDL=pdl, DECODE=decode, num_warps=warps,
                                **({"launch_pdl": True} if pdl else {}))


def tma_product(desc, w, s, x, y, rows: int, block_k: int, stages: int, warps: int, pdl: bool = True) -> None:
    n, k = w.shape
    tma_gemv[(n // rows,)](desc, s, x, y, K=k, BLOCK=rows, BLOCK_K=block_k, STAGES=stages,
                           ONE_BYTE=w.dtype == torch.int8, PDL=pdl, num_warps=warps,
                           **({"launch_pdl": True} if pdl else {}))


def layer_weights(n: int, k: int, dtype: torch.dtype, device, layers: int):
    """(weight, per-row scale) per layer, distinct so that no layer finds another's in L2."""
    if dtype == torch.int8:
        return [(torch.randint(-127, 128, (n, k), dtype=torch.int8, device=device),
                 torch.rand(n, device=device, dtype=torch.bfloat16) / (127 * k ** 0.5)) for _ in range(layers)]
    return [(torch.randn(n, k, device=device, dtype=dtype) / k ** 0.5, torch.ones(n, device=device, dtype=dtype))
            for _ in range(layers)]


def reference(w, s, x):
    return (w.float() @ x.float()) * s.float()


def check(kinds: dict, dtype, device, pdl: bool) -> dict:
    """Each kind's register and TMA products against a float32 product: the largest relative error."""
    errors = {}
    for kind, (n, k) in kinds.items():
        (w, s), = layer_weights(n, k, dtype, device, 1)
        x = torch.randn(k, device=device, dtype=torch.bfloat16)
        expected = reference(w, s, x)
        for name, product in [("registers", lambda y: register_product(w, s, x, y, 4, 4, pdl))] + [
                (f"tma {c}", lambda y, c=c: tma_product(TensorDescriptor.from_tensor(w, [c[0], c[1]]), w, s, x, y,
                                                          *c, pdl=pdl)) for c in [(8, 64, 3, 4), (16, 128, 2, 4)]]:
            y = torch.empty(n, device=device, dtype=torch.bfloat16)
            product(y)
            errors[f"{kind}/{name}"] = ((y.float() - expected).norm() / expected.norm()).item()
            if errors[f"{kind}/{name}"] > 1e-2:
                raise SystemExit(f"{kind} {name}: relative error {errors[f'{kind}/{name}']:.3g}")
        if device.type == "cuda" and dtype == torch.int8:  # decoding is exact: the same sums as converting
            converted, decoded = (torch.empty(n, device=device, dtype=torch.bfloat16) for _ in range(2))
            register_product(w, s, x, converted, 4, 4, pdl)
            register_product(w, s, x, decoded, 4, 4, pdl, decode=True)
            errors[f"{kind}/decode identical"] = torch.equal(converted, decoded)
            if not errors[f"{kind}/decode identical"]:
                raise SystemExit(f"{kind}: decoded int8 products differ from converted ones")
    return errors


def chain_us(ws, product, k: int) -> float:
    """Microseconds per replay of 28 products in a CUDA graph, each reading the one before's output (the first k
    values of it: every kind's inputs are as many as or fewer than its outputs, but down's)."""
    n = ws[0][0].shape[0]
    buffers = [torch.randn(max(n, k), device="cuda", dtype=torch.bfloat16) for _ in range(2)]

    def run():
        for i, (w, s) in enumerate(ws):
            product(i, w, s, buffers[i % 2][:k], buffers[(i + 1) % 2][:n])

    return replay_us(run, replays=50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", choices=("int8", "bf16"), default="int8")
    parser.add_argument("--check", action="store_true", help="tiny shapes through Triton's interpreter")
    args = parser.parse_args()
    dtype = torch.int8 if args.weights == "int8" else torch.bfloat16
    if args.check:
        errors = check(TINY_KINDS, dtype, torch.device("cpu"), pdl=False)
        args.out.write_text(json.dumps({"check": errors}, indent=1))
        print(f"{len(errors)} products match float32 products")
        return

    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "weights": args.weights, "check": check(KINDS, dtype, device, pdl=True),
              "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12, "kinds": {}}
    bandwidth = record["copy_bandwidth_tb_s"] * 1e12
    for kind, (n, k) in KINDS.items():
        ws = layer_weights(n, k, dtype, device, LAYERS)
        floor_us = LAYERS * n * k * dtype.itemsize / bandwidth * 1e6
        rows, warps = REGISTER_BLOCKS[kind]
        rows = rows * (2 if kind in ("qkv", "gate_up") else 1)  # one_row reads rows in pairs there
        row = {"floor_us": floor_us, "registers_us": chain_us(ws, lambda i, w, s, x, y: register_product(
            w, s, x, y, rows, warps), k), "tma_us": {}, "register_configs_us": {}}
        for decode in ((False, True) if dtype == torch.int8 else (False,)):
            for rows_r, warps_r in REGISTER_CONFIGS:
                if n % rows_r == 0:
                    row["register_configs_us"][f"{'decode' if decode else 'convert'} {rows_r}x{warps_r}"] = chain_us(
                        ws, lambda i, w, s, x, y: register_product(w, s, x, y, rows_r, warps_r, decode=decode), k)
        for config in TMA_CONFIGS:
            rows_t, block_k, stages, warps_t = config
            if n % rows_t or (stages - 1) * rows_t * block_k * dtype.itemsize > 200 * 1024:
                continue
            descs = [TensorDescriptor.from_tensor(w, [rows_t, block_k]) for w, _ in ws]
            try:
                row["tma_us"][str(config)] = chain_us(ws, lambda i, w, s, x, y: tma_product(
                    descs[i], w, s, x, y, *config), k)
            except Exception as error:  # a config past the GPU's limits: recorded, the others go on
                row["tma_us"][str(config)] = repr(error)[:200]
        timed = {c: us for c, us in row["tma_us"].items() if isinstance(us, float)}
        best = min(timed, key=timed.get)
        row["best_tma"] = [best, timed[best]]
        record["kinds"][kind] = row
        for prefix in ("convert", "decode"):
            mine = {c: us for c, us in row["register_configs_us"].items() if c.startswith(prefix)}
            if mine:
                choice = min(mine, key=mine.get)
                print(f"{kind:8s} best {choice} {mine[choice]:7.1f} us ({mine[choice] / floor_us:.2f}x)", flush=True)
        print(f"{kind:8s} floor {floor_us:7.1f} us  registers {row['registers_us']:7.1f} "
              f"({row['registers_us'] / floor_us:.2f}x)  best TMA {timed[best]:7.1f} ({timed[best] / floor_us:.2f}x) "
              f"at {best}", flush=True)
        args.out.write_text(json.dumps(record, indent=1))
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
