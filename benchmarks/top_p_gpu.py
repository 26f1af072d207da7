"""The frame choice's time with top-p from top_p_kernel.py against the sort (a GPU benchmark).

    python benchmarks/top_p_gpu.py OUT.json [--rows 1,4,16,64] [--warps 1,2,4,8]

For each row count: a compiled, captured frame chooser (chooser.FrameChooser, as a compiled engine's) with the
benchmarks' sampling (temperature 0.7, top-p 0.95, RAS), timed with CUDA events over graph replays on random
logits, once with top-p as sampling.sorted_top_p (torch.sort) and once as the kernel; and top-p alone on the same
rows, sorted and as the kernel with each number of warps.
"""

from __future__ import annotations

import argparse
import json
from statistics import median

import torch

from higgs_bench.bench.environment import describe
from higgs_bench.generate import chooser as chooser_module
from higgs_bench.generate import top_p_kernel
from higgs_bench.generate.chooser import FrameChooser
from higgs_bench.generate.sampling import SamplingConfig, sorted_top_p
from higgs_bench.model.random_checkpoint import make_config

SAMPLING = SamplingConfig(temperature=0.7, top_p=0.95, ras_win_len=7, ras_win_max_num_repeat=2, seed=0)
CALLS = 200


def timed_us(fn, calls: int = CALLS) -> float:
    """Median microseconds of `calls` calls of fn, each between CUDA events (after 20 untimed)."""
    for _ in range(20):
        fn()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(calls + 1)]
    events[0].record()
    for i in range(calls):
        fn()
        events[i + 1].record()
    torch.cuda.synchronize()
    return 1000 * median(events[i].elapsed_time(events[i + 1]) for i in range(calls))


def chooser_us(rows: int, logits: torch.Tensor) -> float:
    """One frame choice of `rows` rows, compiled and captured (a fresh chooser: top-p as patched now)."""
    torch._dynamo.reset()
    chooser_module._precompiled.clear()
    chooser = FrameChooser(SAMPLING, make_config(), torch.device("cuda"), rows, compile=True)
    chooser.seed(0)
    chooser.start_rows(slice(None), 1 << 20, None)
    return timed_us(lambda: chooser(logits))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--rows", default="1,4,16,64")
    parser.add_argument("--warps", default="1,2,4,8")
    args = parser.parse_args()
    config, kernel, warps = make_config(), top_p_kernel.top_p_scores, [int(w) for w in args.warps.split(",")]
    default_warps = top_p_kernel.WARPS
    results = {"environment": describe(torch.device("cuda")), "sampling": repr(SAMPLING), "rows": {}}
    for rows in [int(r) for r in args.rows.split(",")]:
        logits = torch.randn(rows, config.num_codebooks, config.audio_vocab_size, device="cuda") * 3
        row = {}
        top_p_kernel.top_p_scores = lambda scores, top_p: sorted_top_p(scores, top_p)
        row["choice_us_sort"] = chooser_us(rows, logits)
        row["top_p_us_sort"] = timed_us(lambda: sorted_top_p(logits, SAMPLING.top_p))
        top_p_kernel.top_p_scores = kernel
        row["choice_us_kernel"] = chooser_us(rows, logits)
        for count in warps:
            top_p_kernel.WARPS = count
            row[f"top_p_us_kernel_{count}_warps"] = timed_us(lambda: kernel(logits, SAMPLING.top_p))
        top_p_kernel.WARPS = default_warps
        results["rows"][rows] = row
        print(rows, json.dumps(row), flush=True)
    with open(args.out, "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
