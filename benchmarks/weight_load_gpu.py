"""How long a checkpoint takes to reach the GPU (docs/performance.md, warm start): our loader's transfer through
two pinned buffers against each tensor pinned and against a plain .to() of the memory-mapped tensors, and the whole
engine load (read, fuse, quantise) per precision, in one process, alternating so that all see the same page cache
(the first load in a process also pays for pinning what it pins: run it first, alone, with --first).

    python benchmarks/weight_load_gpu.py CKPT OUT.json [--precisions bf16,int8] [--repeats 3]
    python benchmarks/weight_load_gpu.py CKPT OUT.json --first staged  # in a fresh process
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

TRANSFERS = {"staged": checkpoint.PinnedStaging.to_device,  # the loader's
             "pinned": lambda self, tensor: tensor.pin_memory().to(self.device, non_blocking=True),  # until 2026-12-03
             "plain": lambda self, tensor: tensor.to(self.device)}
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
    parser.add_argument("--first", choices=sorted(TRANSFERS), help="one load of the checkpoint, this process's first")
    args = parser.parse_args()
    device = torch.device("cuda")
    size = sum(f.stat().st_size for f in checkpoint.weight_files(args.ckpt))
    load = lambda: checkpoint.load_checkpoint(args.ckpt, torch.bfloat16, device)  # noqa: E731
    if args.first:
        torch.ones(1, device=device).sum().item()  # CUDA started before the timing
        checkpoint.PinnedStaging.to_device = TRANSFERS[args.first]
        record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "checkpoint_bytes": size,
                  "first_load": args.first, "seconds": seconds(load)}
        args.out.write_text(json.dumps(record, indent=1))
        print(json.dumps(record))
        return
    works = {"checkpoint": load}
    for precision in args.precisions.split(","):
        works[f"engine-{precision}"] = lambda quantised=PRECISIONS[precision]: TorchBackend.from_checkpoint(
            args.ckpt, device=device, dtype=torch.bfloat16, quantised=quantised)
    times = {f"{work}/{transfer}": [] for work in works for transfer in TRANSFERS}
    for _ in range(args.repeats):
        for work, run in works.items():
            for transfer, move in TRANSFERS.items():
                checkpoint.PinnedStaging.to_device = move
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
