"""What a start would save by loading the decode step's compiled layer ahead of time instead of having dynamo trace
it again (docs/performance.md, warm start): `torch.compile(...).aot_compile()` per shape, saved, and loaded in a
new process (`torch.compiler.load_compiled_function`), against the path engines take today (a new process whose
Inductor cache holds the graphs: dynamo traces the layer, then finds the graph in the cache).

    python benchmarks/precompile_probe.py CKPT OUT.json [--device cuda] [--precisions bf16,int8]
        [--shapes 4x256,16x512,3x256,64x512]

Fresh processes one after another, per precision, over one Inductor cache: `build` compiles each shape through the
engine's compiled layer (filling the cache) and then ahead of time, saving a file per shape; `dynamo` and `aot`
each time every shape's first call of the layer (what a start pays for it before capturing), the first through the
engine's compiled layer, the second loading the shape's file. bf16 runs in float32 on a CPU. A precision or
process that fails is a row with its error. Needs torch with `aot_compile` and `load_compiled_function` (on this
project's CPU machine torch 2.13, where they are on by default; torch 2.11 has them behind
`torch._dynamo.config.enable_aot_compile`, which the probe sets).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warm_start_gpu import PRECISIONS  # this folder's scripts run with it on sys.path

RUNS = ("build", "dynamo", "aot")


def layer_calls(backend, batch: int, columns: int) -> list[tuple]:
    """The arguments of every layer call of one decode step of `batch` rows over `columns` cache columns."""
    import torch

    state = backend._state(batch, columns)
    calls = []
    network = backend.network
    with torch.inference_mode():
        h = network.embed_audio(state.frame)[:, None]
        mask = state.key_valid[:, None, None, :]
        network(h, True, state.next_position[:, None], state.caches, state.column[:, None], mask, mask,
                run_layer=lambda layer, *args: calls.append((layer, *args)) or layer(*args))
    return calls


def child(args) -> None:
    import torch

    from higgs_bench.backends.pytorch.backend import Speed, TorchBackend, compile_options
    from higgs_bench.backends.pytorch.network import call_layer

    if hasattr(torch._dynamo.config, "enable_aot_compile"):  # off by default in torch 2.11, on in 2.13
        torch._dynamo.config.enable_aot_compile = True
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    speed = Speed(compile_mode="default", max_seq_len=2048)
    with torch.inference_mode():
        backend = TorchBackend.from_checkpoint(args.ckpt, device=device, dtype=dtype,
                                               quantised=PRECISIONS[args.precision], speed=speed)
    times = {}
    for shape in args.shapes.split(","):
        batch, columns = (int(n) for n in shape.split("x"))
        calls = layer_calls(backend, batch, columns)
        compiled = backend.decode_layers[batch == 1]
        path = Path(args.work) / f"layer-{shape}.bin"
        start = time.perf_counter()
        with torch.inference_mode():
            if args.run == "aot":
                with open(path, "rb") as file:
                    compiled = torch.compiler.load_compiled_function(file)
            for call in calls:
                compiled(*call)
            if args.run == "build":
                layer = torch.compile(call_layer, fullgraph=True, dynamic=False, options=compile_options(
                    speed.compile_mode, PRECISIONS[args.precision], device, batch == 1))
                layer.aot_compile((calls[0], {})).save_compiled_function(str(path))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[shape] = time.perf_counter() - start
    print(json.dumps(times))


def run_child(args, precision: str, run: str, work: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
    command = [sys.executable, __file__, args.ckpt, args.out, "--child", "--run", run, "--precision", precision,
               "--shapes", args.shapes, "--device", args.device, "--work", str(work)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr[-3000:], "process_s": time.perf_counter() - start}
    return {"per_shape_s": json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default="bf16")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--shapes", default="4x256,16x512,3x256,64x512")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--run", choices=RUNS)
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {}
    for precision in args.precisions.split(","):
        with tempfile.TemporaryDirectory() as work:
            results[precision] = {}
            for run in RUNS:
                results[precision][run] = run_child(args, precision, run, Path(work))
                print(precision, run, json.dumps(results[precision][run])[:3000], flush=True)
                Path(args.out).write_text(json.dumps({"shapes": args.shapes, "device": args.device,
                                                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
