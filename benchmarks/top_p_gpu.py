"""The frame choice's time with top-p from top_p_kernel.py against the sort (a GPU benchmark).

    python benchmarks/top_p_gpu.py OUT.json [--rows 1,4,16,64] [--warps 1,2,4,8]

For each row count: a compiled, captured frame chooser (chooser.FrameChooser, as a compiled engine's) with the
benchmarks' sampling (temperature 0.7, top-p 0.95, RAS), replayed on random logits, once with top-p as
sampling.sorted_top_p (torch.sort) and once as the kernel; and top-p alone on the same rows, sorted and as the
kernel with each number of warps. Each timed as the GPU's work per call (device_us).
"""

from __future__ import annotations

import argparse
import json

import torch

from decode_step_gpu import gpu_work
from higgs_bench.bench.environment import describe
from higgs_bench.generate import chooser as chooser_module
from higgs_bench.generate import top_p_kernel
from higgs_bench.generate.chooser import FrameChooser
from higgs_bench.generate.sampling import SamplingConfig, sorted_top_p
from higgs_bench.model.random_checkpoint import make_config

SAMPLING = SamplingConfig(temperature=0.7, top_p=0.95, ras_win_len=7, ras_win_max_num_repeat=2, seed=0)
CALLS = 200


def device_us(fn, calls: int = CALLS) -> tuple[float, list[dict]]:
    """The GPU's work (kernels, copies) per call of fn, in microseconds, from the profiler over `calls` calls
    (after 20 unprofiled): the total and its largest kernels. Not wall time: a call's launches from the host are
    not counted, as within a captured decode loop they would not be."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = gpu_work(prof, per=calls)
    return sum(us for *_, us in kernels), [{"kernel": name, "us_per_call": us} for name, _, us in kernels[:8]]


def chooser_us(rows: int, logits: torch.Tensor) -> tuple[float, list[dict]]:
    """One frame choice of `rows` rows, compiled and captured (a fresh chooser: top-p as patched now)."""
    torch._dynamo.reset()
    chooser_module._precompiled.clear()
    chooser = FrameChooser(SAMPLING, make_config(), torch.device("cuda"), rows, compile=True)
    chooser.seed(0)
    chooser.start_rows(slice(None), 1 << 20, None)
    return device_us(lambda: chooser(logits))


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
        row["choice_us_sort"], row["choice_kernels_sort"] = chooser_us(rows, logits)
        row["top_p_us_sort"], _ = device_us(lambda: sorted_top_p(logits, SAMPLING.top_p))
        top_p_kernel.top_p_scores = kernel
        row["choice_us_kernel"], row["choice_kernels_kernel"] = chooser_us(rows, logits)
        for count in warps:
            top_p_kernel.WARPS = count
            row[f"top_p_us_kernel_{count}_warps"], _ = device_us(lambda: kernel(logits, SAMPLING.top_p))
        top_p_kernel.WARPS = default_warps
        results["rows"][rows] = row
        print(rows, json.dumps({k: v for k, v in row.items() if "kernels" not in k}), flush=True)
    with open(args.out, "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
