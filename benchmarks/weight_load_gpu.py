"""How long a checkpoint takes to reach the GPU (docs/performance.md, warm start): our loader's transfer through
pinned memory against a plain .to() of the memory-mapped tensors, and the whole engine load (read, fuse,
quantise) per precision, in one process, alternating so that both see the same page cache.

    python benchmarks/weight_load_gpu.py CKPT OUT.json [--precisions bf16,int8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.model import checkpoint

TRANSFERS = {"pinned": checkpoint.to_device, "plain": lambda tensor, device: tensor.to(device)}
PRECISIONS = {"bf16": None, "int8": "int8", "int4": "int4", "fp8": "fp8"}


def seconds(work) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = work()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del result
    torch.cuda.empty_cache()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--precisions", default="bf16,int8")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda")
    size = sum(f.stat().st_size for f in checkpoint.weight_files(args.ckpt))
    works = {"checkpoint": lambda: checkpoint.load_checkpoint(args.ckpt, torch.bfloat16, device)}
    for precision in args.precisions.split(","):
        works[f"engine-{precision}"] = lambda quantised=PRECISIONS[precision]: TorchBackend.from_checkpoint(
            args.ckpt, device=device, dtype=torch.bfloat16, quantised=quantised)
    times = {f"{work}/{transfer}": [] for work in works for transfer in TRANSFERS}
    for _ in range(args.repeats):
        for work, run in works.items():
            for transfer, move in TRANSFERS.items():
                checkpoint.to_device = move
                times[f"{work}/{transfer}"].append(seconds(run))
                print(f"{work}/{transfer}: {times[f'{work}/{transfer}'][-1]:.2f} s", flush=True)
    medians = {key: statistics.median(values) for key, values in times.items()}
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "checkpoint_bytes": size,
              "seconds": times, "median_s": medians,
              "checkpoint_gb_per_s": {key: size / 1e9 / medians[key] for key in medians if key.startswith("checkpoint")}}
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps({"median_s": medians, "gb_per_s": record["checkpoint_gb_per_s"]}, indent=1))


if __name__ == "__main__":
    main()
