"""Which Inductor settings make one fused decode linear of the 3B shape fast, bf16 and torchao int8 weight-only,
at 1 and 64 rows, with and without coordinate-descent tuning (CUDA-graph replays, median of 200; a GPU probe):

    python benchmarks/linear_settings_gpu.py OUT.json

docs/performance.md quotes it (record: docs/results/h200-fast-engines/linear_settings.json).
"""
import json, sys, time
import torch
import torch._inductor.config as ic
from torchao.quantization import Int8WeightOnlyConfig, quantize_

def bench(fn, x, n=200):
    for _ in range(5): fn(x)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): fn(x)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    g.replay(); e0.record()
    for _ in range(n): g.replay()
    e1.record(); torch.cuda.synchronize()
    return e0.elapsed_time(e1) / n * 1000

out = {}
shapes = {"gate_up": (3072, 16384), "down": (8192, 3072), "qkv": (3072, 5120)}
for kind in ("bf16", "int8"):
    for cdt in (False, True):
        for name, (k, n) in shapes.items():
            lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            if kind == "int8":
                quantize_(lin, Int8WeightOnlyConfig(set_inductor_config=False))
            torch._dynamo.reset()
            opts = {"coordinate_descent_tuning": cdt}
            f = torch.compile(lambda x: lin(x), options=opts, dynamic=False)
            for m in (1, 64):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    f(x); torch.cuda.synchronize(); c = time.perf_counter() - t0
                    us = bench(f, x)
                tb_s = k * n * (1 if kind == "int8" else 2) / us / 1e6  # weight bytes read per microsecond
                key = f"{kind} cdt={cdt} {name} M={m}"
                out[key] = {"us": us, "weight_tb_s": tb_s, "compile_s": c}
                print(key, f"{us:.1f} us  {tb_s:.2f} TB/s  compile {c:.1f}s", flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
