"""One decode linear of the 3B shape under torch.compile, on a GPU: which Inductor settings make it fast.

    python benchmarks/linear_probes_gpu.py settings OUT.json    # bf16 and int8 weight-only, 1 and 64 rows,
                                                                # with and without coordinate-descent tuning
    python benchmarks/linear_probes_gpu.py int8-rows OUT.json   # int8 weight-only at 4 and 64 rows: what Inductor
                                                                # makes of it and what else would run it (GEMM
                                                                # templates with the dequantisation fused in)

Times are CUDA-graph replays (mean of 100-200). docs/performance.md quotes both (records:
docs/results/h200-fast-engines/linear_settings.json and int8_rows.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torchao.quantization import Int8WeightOnlyConfig, quantize_

SHAPES = {"gate_up": (3072, 16384), "down": (8192, 3072), "qkv": (3072, 5120)}  # (in, out) of the fused linears


def replay_us(fn, x, replays: int) -> float:
    """Microseconds per call of `fn(x)` captured in a CUDA graph."""
    for _ in range(3):
        fn(x)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays * 1000


def top_kernels(fn, x) -> list:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(x)
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:4]
    return [(e.key[:100], round(e.device_time_total, 1)) for e in events]


def linear(k: int, n: int, int8: bool) -> torch.nn.Linear:
    layer = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    if int8:
        quantize_(layer, Int8WeightOnlyConfig(set_inductor_config=False))
    return layer


def first_call_s(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def settings() -> dict:
    out = {}
    for kind in ("bf16", "int8"):
        for tuning in (False, True):
            for name, (k, n) in SHAPES.items():
                layer = linear(k, n, kind == "int8")
                torch._dynamo.reset()
                compiled = torch.compile(lambda x, layer=layer: layer(x), dynamic=False,
                                         options={"coordinate_descent_tuning": tuning})
                for rows in (1, 64):
                    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
                    with torch.inference_mode():
                        compile_s = first_call_s(compiled, x)
                        us = replay_us(compiled, x, 200)
                    tb_s = k * n * (1 if kind == "int8" else 2) / us / 1e6  # weight bytes read per microsecond
                    key = f"{kind} cdt={tuning} {name} M={rows}"
                    out[key] = {"us": us, "weight_tb_s": tb_s, "compile_s": compile_s}
                    print(key, f"{us:.1f} us  {tb_s:.2f} TB/s  compile {compile_s:.1f}s", flush=True)
    return out


def int8_rows() -> dict:
    k, n = SHAPES["gate_up"]
    torch._dynamo.config.recompile_limit = 64  # every case compiles the same lambda again, at two row counts
    layer = linear(k, n, int8=True)
    weight = layer.weight

    @torch.compiler.disable
    def converted():
        return weight.qdata.to(torch.bfloat16)

    tuned = {"coordinate_descent_tuning": True}
    unquantised = linear(k, n, int8=False)
    cases = {"eager": lambda x: layer(x), "bf16 (reference)": lambda x: unquantised(x)}
    # the engine's int8 rows settings (pattern matcher off), alone and with Triton GEMM templates that can take
    # the int8-to-bf16 conversion in as a prologue (cuBLAS among the choices, or Triton only)
    rows = tuned | {"pattern_matcher": False}
    for options in (tuned, tuned | {"max_autotune": True}, rows, rows | {"max_autotune_gemm": True},
                    rows | {"max_autotune_gemm": True, "max_autotune_gemm_backends": "TRITON"}):
        torch._dynamo.reset()
        cases[f"compiled {options}"] = torch.compile(lambda x: layer(x), options=options, dynamic=False)
    cases["dequant outside"] = torch.compile(lambda x: torch.mm(x, converted().t()) * weight.scale.flatten(),
                                             options=tuned, dynamic=False)
    cases["mm of qdata.to(bf16)"] = torch.compile(
        lambda x: torch.mm(x, weight.qdata.to(torch.bfloat16).t()) * weight.scale.flatten(), options=tuned,
        dynamic=False)
    out = {}
    for rows in (64, 4):
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        for name, fn in cases.items():
            with torch.inference_mode():
                compile_s = first_call_s(fn, x)
                us, kernels = replay_us(fn, x, 100), top_kernels(fn, x)
            out[f"{name} M={rows}"] = {"us": us, "compile_s": compile_s, "kernels": kernels}
            print(f"M={rows} {name}: {us:.1f} us compile {compile_s:.1f}s", kernels, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probe", choices=("settings", "int8-rows"))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    results = settings() if args.probe == "settings" else int8_rows()
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
