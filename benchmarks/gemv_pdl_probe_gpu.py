"""One-row products of the 3B decode step: does a GEMV that loads its weights before waiting for the kernel ahead
of it (programmatic dependent launch, PDL) close the ~4 us that each product spends above its share of the floor?

    python benchmarks/gemv_pdl_probe_gpu.py OUT.json
    python benchmarks/gemv_pdl_probe_gpu.py OUT.json --check   # tiny shapes, Triton's interpreter, on a CPU

At one row the bf16 step reads its weights in 112 products (28 layers x q/k/v, o, gate/up, down); profiled on an
H200 they took 1.72 ms against a floor of 1.33 ms, about 4 us each above their bytes' time at copy bandwidth
(docs/performance.md, seventh session), whether cuBLAS or Inductor's tuned reductions ran them. Inductor's PDL
makes a kernel wait for the one ahead before its reduction loop, so no weight is read early. Here each program of
a Triton GEMV loads its whole weight tile first, then waits (`griddepcontrol.wait`), then reads the input row:
the tile's reads overlap the tail of the kernel ahead. Per product kind and as the whole chain of 112, each in a
CUDA graph: cuBLAS (`F.linear`), the Triton GEMV without PDL, with PDL waiting first, with PDL loading first.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import triton
import triton.language as tl

LAYERS = 28
KINDS = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}  # (N, K)
TINY_KINDS = {"qkv": (40, 24), "o": (24, 24), "gate_up": (64, 24), "down": (24, 32)}
MODES = {"no_pdl": 0, "pdl_wait_first": 1, "pdl_load_first": 2}
BLOCK_NS, WARPS = (1, 2, 4, 8, 16), (4, 8)
MAX_TILE_BYTES_PER_THREAD = 512  # a program holds its whole weight tile in registers


@triton.jit
def gemv_kernel(w_ptr, x_ptr, y_ptr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
                MODE: tl.constexpr):
    """y[rows] = W[rows, :] @ x for this program's BLOCK_N rows; the whole [BLOCK_N, K] tile in one load."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, K_PAD)
    in_k = cols < K
    if MODE == 1:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=in_k[None, :], other=0.0)
    if MODE == 2:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    x = tl.load(x_ptr + cols, mask=in_k, other=0.0)
    y = tl.sum(w.to(tl.float32) * x[None, :].to(tl.float32), axis=1)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty))


def gemv(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, block_n: int, warps: int, mode: int) -> None:
    n, k = w.shape
    gemv_kernel[(n // block_n,)](w, x, y, K=k, K_PAD=triton.next_power_of_2(k), BLOCK_N=block_n, MODE=mode,
                                 num_warps=warps, **({"launch_pdl": True} if mode else {}))


def configs(n: int, k: int) -> list[tuple[int, int]]:
    """(BLOCK_N, warps) whose tile fits the register budget and divides the rows."""
    pad = triton.next_power_of_2(k)
    return [(b, w) for b in BLOCK_NS for w in WARPS
            if n % b == 0 and b * pad * 2 <= MAX_TILE_BYTES_PER_THREAD * 32 * w]


def weights(kinds: dict, device: torch.device, layers: int) -> dict[str, list[torch.Tensor]]:
    """Each kind's weights, one per layer (distinct, so that no layer finds another's in L2)."""
    return {kind: [torch.randn(n, k, device=device, dtype=torch.bfloat16) / k ** 0.5 for _ in range(layers)]
            for kind, (n, k) in kinds.items()}


def chain(ws: dict[str, list[torch.Tensor]], kinds: list[str], device: torch.device):
    """Buffers and a function that runs the products layer by layer, each reading the one before's output."""
    widest = max(max(w[0].shape) for w in ws.values())
    x0 = torch.randn(max(w[0].shape[1] for w in ws.values()), device=device, dtype=torch.bfloat16)
    buffers = [torch.zeros(widest, device=device, dtype=torch.bfloat16) for _ in range(2)]
    steps = [(ws[kind][layer], kind) for layer in range(len(next(iter(ws.values())))) for kind in kinds]

    def run(product):
        buffers[0][:x0.numel()].copy_(x0)
        for i, (w, kind) in enumerate(steps):
            src, dst = buffers[i % 2], buffers[(i + 1) % 2]
            product(kind, w, src[:w.shape[1]], dst[:w.shape[0]])
        return buffers[len(steps) % 2]

    return run


def replay_us(fn, replays: int = 100, repeats: int = 5) -> float:
    """Median over `repeats` of the microseconds per replay of `fn` captured in a CUDA graph."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / replays * 1000)
    return statistics.median(times)


def cublas(kind, w, x, y):
    torch.mm(x[None], w.t(), out=y[None])


def triton_product(choice: dict[str, tuple[int, int]], mode: int):
    def product(kind, w, x, y):
        gemv(w, x, y, *choice[kind], mode)
    return product


def check(kinds: dict, device: torch.device, modes: list[int]) -> dict:
    """Each kind's GEMV against a float32 product, at its first config: the largest relative error."""
    errors = {}
    for kind, (n, k) in kinds.items():
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        x = torch.randn(k, device=device, dtype=torch.bfloat16)
        reference = w.float() @ x.float()
        for mode in modes:
            for block_n, warps in configs(n, k)[:2]:
                y = torch.empty(n, device=device, dtype=torch.bfloat16)
                gemv(w, x, y, block_n, warps, mode)
                error = ((y.float() - reference).norm() / reference.norm()).item()
                errors[f"{kind}/{mode}/{block_n}x{warps}"] = error
                if error > 1e-2:
                    raise SystemExit(f"{kind} mode {mode} {block_n}x{warps}: relative error {error:.3g}")
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true", help="tiny shapes through Triton's interpreter")
    args = parser.parse_args()
    if args.check:
        errors = check(TINY_KINDS, torch.device("cpu"), modes=[0])
        args.out.write_text(json.dumps({"check": errors}, indent=1))
        print(f"{len(errors)} GEMVs match float32 products")
        return

    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "check": check(KINDS, device, list(MODES.values())),
              "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12, "kinds": {}, "chain": {}}
    bandwidth = record["copy_bandwidth_tb_s"] * 1e12
    ws = weights(KINDS, device, LAYERS)
    best = {mode: {} for mode in MODES}
    for kind, (n, k) in KINDS.items():
        floor_us = LAYERS * n * k * 2 / bandwidth * 1e6
        run = chain({kind: ws[kind]}, [kind], device)
        row = {"floor_us": floor_us, "cublas_us": replay_us(lambda: run(cublas)), "configs": {}}
        for mode_name, mode in MODES.items():
            for block_n, warps in configs(n, k):
                us = replay_us(lambda: run(triton_product({kind: (block_n, warps)}, mode)))
                row["configs"][f"{mode_name}/{block_n}x{warps}"] = us
                if us < best[mode_name].get(kind, (None, float("inf")))[1]:
                    best[mode_name][kind] = ((block_n, warps), us)
            row[f"{mode_name}_us"] = best[mode_name][kind][1]
        record["kinds"][kind] = row
        print(f"{kind:8s} floor {floor_us:7.1f} us  cuBLAS {row['cublas_us']:7.1f}  "
              + "  ".join(f"{m} {row[f'{m}_us']:7.1f} ({best[m][kind][0]})" for m in MODES), flush=True)

    run = chain(ws, list(KINDS), device)
    floor_us = sum(r["floor_us"] for r in record["kinds"].values())
    record["chain"] = {"floor_us": floor_us, "cublas_us": replay_us(lambda: run(cublas))}
    for mode_name, mode in MODES.items():
        choice = {kind: config for kind, (config, _) in best[mode_name].items()}
        record["chain"][f"{mode_name}_us"] = replay_us(lambda: run(triton_product(choice, mode)))
        record["chain"][f"{mode_name}_configs"] = choice
    print("chain of 112: " + "  ".join(f"{key} {value:.1f}" for key, value in record["chain"].items()
                                      if key.endswith("_us")))
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
