"""torchao int8 weight-only at 4 and 64 rows (one 3072x16384 linear): what Inductor makes of it, and what else
would run it, with the top CUDA kernels of each (a GPU probe):

    python benchmarks/int8_rows_gpu.py OUT.json

docs/performance.md quotes it (record: docs/results/h200-fast-engines/int8_rows.json).
"""
import json, sys, time
import torch
from torch.profiler import ProfilerActivity, profile
from torchao.quantization import Int8WeightOnlyConfig, quantize_

def bench(fn, x, n=100):
    for _ in range(3): fn(x)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): fn(x)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    g.replay(); e0.record()
    for _ in range(n): g.replay()
    e1.record(); torch.cuda.synchronize()
    return e0.elapsed_time(e1) / n * 1000

def kernels(fn, x):
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn(x); torch.cuda.synchronize()
    return [(e.key[:100], round(e.device_time_total, 1)) for e in sorted(p.key_averages(), key=lambda e: -e.device_time_total)[:4]]

k, n = 3072, 16384
lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
quantize_(lin, Int8WeightOnlyConfig(set_inductor_config=False))
w = lin.weight
print(type(w).__name__, w.qdata.shape, w.qdata.stride(), w.scale.shape, flush=True)
out = {}

@torch.compiler.disable
def dequant(w):
    return w.qdata.to(torch.bfloat16)

def outside(x):
    return torch.mm(x, dequant(w).t()) * w.scale.flatten()

def split_weight(x):
    wb = w.qdata.to(torch.bfloat16)
    return torch.mm(x, wb.t()) * w.scale.flatten()

cases = {"eager": lambda x: lin(x)}
for opts in ({"coordinate_descent_tuning": True}, {"coordinate_descent_tuning": True, "max_autotune": True}):
    torch._dynamo.reset()
    cases[f"compiled {opts}"] = torch.compile(lambda x: lin(x), options=opts, dynamic=False)
cases["dequant outside"] = torch.compile(outside, options={"coordinate_descent_tuning": True}, dynamic=False)
cases["mm of qdata.to(bf16)"] = torch.compile(split_weight, options={"coordinate_descent_tuning": True}, dynamic=False)
for m in (64, 4):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    for name, fn in cases.items():
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                fn(x); torch.cuda.synchronize(); c = time.perf_counter() - t0
                us = bench(fn, x); ks = kernels(fn, x)
        except Exception as err:
            print(name, m, "ERROR", repr(err)[:300], flush=True); continue
        out[f"{name} M={m}"] = {"us": us, "compile_s": c, "kernels": ks}
        print(f"M={m} {name}: {us:.1f} us compile {c:.1f}s", ks, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
