"""One decode linear of the 3B shape under torch.compile, on a GPU: which Inductor settings make it fast.

    python benchmarks/linear_probes_gpu.py settings OUT.json    # bf16 and int8 weight-only, 1 and 64 rows,
                                                                # with and without coordinate-descent tuning
    python benchmarks/linear_probes_gpu.py int8-rows OUT.json   # int8 weight-only at 4 and 64 rows: what Inductor
                                                                # makes of it and what else would run it (GEMM
                                                                # templates with the dequantisation fused in)
    python benchmarks/linear_probes_gpu.py gemlite OUT.json     # GemLite's int8 Triton GEMV/GEMM kernels at 1, 4
                                                                # and 64 rows, against cuBLAS bf16, torch's int4
                                                                # kernel and the engine's tuned int8 reduction

Times are CUDA-graph replays (mean of 100-200). docs/performance.md quotes them (records:
docs/results/h200-fast-engines/linear_settings.json and int8_rows.json, docs/results/h200-gemlite-probe/).
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
DECODE_SHAPES = SHAPES | {"o": (3072, 3072)}


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


def gemlite_int8(k: int, n: int):
    """GemLite's own int8 weight-only linear (torchao 0.18's UIntxWeightOnlyConfig expects an older GemLite)."""
    import gemlite

    weight = linear(k, n, int8=False).weight.float()
    scale = weight.abs().amax(1, keepdim=True) / 127
    qdata = (weight / scale).round().clamp(-128, 127).to(torch.int8)
    return gemlite.helper.A16W8(device="cuda").from_weights(qdata, scales=scale.to(torch.bfloat16), bias=None)


def gemlite_cases(k: int, n: int) -> dict:
    """Each way of running one (k -> n) linear, by name, as a function of its input rows."""
    from torchao.quantization import Int4WeightOnlyConfig

    from higgs_bench.backends.pytorch.backend import CUDA_INDUCTOR_OPTIONS

    def quantised(config):
        layer = linear(k, n, int8=False)
        quantize_(layer, config)
        return layer

    int8 = linear(k, n, int8=True)
    one_row = torch.compile(lambda x: int8(x), dynamic=False, options=CUDA_INDUCTOR_OPTIONS["one_row"]["int8"])
    return {
        "bf16 cuBLAS": linear(k, n, int8=False),
        "int8 engine (tuned reduction, 1 row)": one_row,
        "int8 GemLite": gemlite_int8(k, n),
        "int4 torch (tinygemm, g128)": quantised(Int4WeightOnlyConfig(
            group_size=128, int4_packing_format="tile_packed_to_4d", set_inductor_config=False)),
    }


def gemlite(out_path: Path) -> dict:
    """Written after every case, so that a run stopped at the device's time limit keeps what it measured."""
    bytes_per_weight = {"bf16": 2, "int8": 1, "int4": 0.5 + 4 / 128}
    out = {}
    for name, (k, n) in DECODE_SHAPES.items():
        torch._dynamo.reset()
        cases = gemlite_cases(k, n)
        for rows in (1, 64, 4):
            x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
            for case, fn in cases.items():
                if case.startswith("int8 engine") and rows != 1:
                    continue
                with torch.inference_mode():
                    first_s = first_call_s(fn, x)  # GemLite autotunes here, Inductor compiles
                    us, kernels = replay_us(fn, x, 200), top_kernels(fn, x)
                tb_s = k * n * bytes_per_weight[case.split()[0]] / us / 1e6
                out[f"{case} {name} M={rows}"] = {"us": us, "weight_tb_s": tb_s, "first_call_s": first_s,
                                                  "kernels": kernels}
                print(f"{name} M={rows} {case}: {us:.1f} us {tb_s:.2f} TB/s first call {first_s:.1f}s", kernels,
                      flush=True)
                out_path.write_text(json.dumps(out, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probe", choices=("settings", "int8-rows", "gemlite"))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.probe == "gemlite":
        gemlite(args.out)
        return
    results = settings() if args.probe == "settings" else int8_rows()
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
