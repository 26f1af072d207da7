"""Decode-step speed and fidelity of the torch engines at full size, per precision (a GPU benchmark).

    python benchmarks/decode_step_gpu.py CKPT OUT.json [--precisions bf16,int8,fp8,int4] [--batches 1,64]
        [--mode default|max-autotune-no-cudagraphs] [--max-seq-len 256] [--profile] [--profile-loop] [--ab-loop OLD_LOOP.py]
        [--inductor-options '{"int8": {"coordinate_descent_tuning": false}}'] [--workers-ready]
        [--one-row-kernels on|off|both]   # one-row steps as one_row.py's kernels (default: on; int4 from Hopper on)
        [--one-row-blocks '[{"gate_up": [8, 8]}, ...]']   # with on: a variant per table over one_row.BLOCKS (16-bit's)
        [--int8-rows-kernel on|off] [--fp8-rows-kernel on|off]   # products of several rows as one_byte_rows.py's
                                                                  # kernel (default: on)
        [--int4-rows-kernel on|off]   # int4's of 17-64 rows as int4_rows.py's kernel (default: on)
        [--int4-one-row-kernel on|off]   # int4's of one row as int4_one_row.py's kernel, from Hopper on (default: on)
    TORCHINDUCTOR_ENABLE_PDL=1 python benchmarks/decode_step_gpu.py ...   # an Inductor variable, for every kind

For each precision: the engine is built as the benchmark builds it (torchao quantisation, the decode step
compiled per shape and captured as a CUDA graph), then timed with CUDA events over graph replays, against
the weight-read floor of its own bytes and of bf16, plus the generation loop's own work per frame
(sampling, delay pattern, RAS: generate() minus the steps) and fidelity against the bf16 reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from higgs_bench.backends.pytorch import one_row, quantize
from higgs_bench.backends.pytorch.backend import (CUDA_INDUCTOR_OPTIONS, Speed, TorchBackend, one_row_kernels_run,
                                                  override_inductor_options)
from higgs_bench.backends.pytorch.engine import load_engine, start_compile_workers
from higgs_bench.bench.environment import describe
from higgs_bench.bench.fidelity import fidelity
from higgs_bench.bench.floor import floor_report
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Please call Stella and ask her to bring these things.",
         "It was a bright cold day in April, and the clocks were striking thirteen."]
SAMPLING = SamplingConfig(temperature=0.7, top_p=0.95, ras_win_len=7, ras_win_max_num_repeat=2, seed=0)
STEPS, FRAMES = 150, 150  # with ~60 prompt positions every request lands in the 256-column cache bucket


def step_ms(backend, prompts, steps=STEPS, reserve=0) -> list[float]:
    """Each of `steps` graph replays timed (after 10 untimed), with at least `reserve` frames' cache columns."""
    frame = torch.randint(0, 1024, (len(prompts), 8), device=backend.device)
    backend.prefill(prompts, max(steps + 10, reserve))
    for _ in range(10):
        backend.step(frame)
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for i in range(steps):
        backend.step(frame)
        events[i + 1].record()
    torch.cuda.synchronize()
    return [events[i].elapsed_time(events[i + 1]) for i in range(steps)]


def loop_ms(backend, prompts, generate=generate) -> float:
    """Wall time per frame of a sampled generate() of FRAMES fixed frames, prefill excluded."""
    generate(backend, prompts, SAMPLING, FRAMES, stop_at_eos=False)
    torch.cuda.synchronize()
    start = time.perf_counter()
    backend.prefill(prompts, FRAMES)
    torch.cuda.synchronize()
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    generate(backend, prompts, SAMPLING, FRAMES, stop_at_eos=False)
    torch.cuda.synchronize()
    return (time.perf_counter() - start - prefill) / FRAMES * 1000


def loop_ab(backend, prompts, old_loop: Path, rounds: int = 5) -> dict:
    """loop_ms of this generate() and of another version's loop.py (an A/B on one engine), rounds alternated."""
    spec = importlib.util.spec_from_file_location("old_loop", old_loop)
    old = sys.modules["old_loop"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(old)
    new_ms, old_ms = [], []
    for _ in range(rounds):
        new_ms.append(loop_ms(backend, prompts))
        old_ms.append(loop_ms(backend, prompts, old.generate))
    return {"loop_ms_per_frame": median(new_ms), "loop_ms_per_frame_old_loop": median(old_ms)}


def weight_kind(precision: str) -> str | None:
    """The engine's quantised weights for a --precisions name (bf16: none)."""
    return None if precision == "bf16" else precision


def median(values):
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--precisions", default="bf16,int8,fp8,int4")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--mode", default="default")
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--fidelity-frames", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="also list the top kernels of 20 eager steps")
    parser.add_argument("--profile-loop", action="store_true",
                        help="also list the GPU work of a sampled generate() per frame (the graphs' kernels, the "
                        "loop's copies), to split the loop's work from the step's")
    parser.add_argument("--ab-loop", type=Path, help="another version's generate/loop.py to time against "
                        "(git show REV:higgs_bench/generate/loop.py > old_loop.py)")
    parser.add_argument("--inductor-options", type=json.loads, default={},
                        help="JSON {weight kind: {option: value}} over the engine's own Inductor settings, every shape")
    parser.add_argument("--workers-ready", action="store_true",
                        help="build with Inductor's compile workers up and ready (engine.start_compile_workers)")
    parser.add_argument("--one-row-kernels", choices=("on", "off", "both"), default="on",
                        help="one-row steps as one_row.py's kernels (int4: from Hopper on; both: each, two variants)")
    parser.add_argument("--one-row-blocks", type=json.loads, default=[{}],
                        help="JSON list of {product: [rows per program, warps]} over one_row.BLOCKS, a variant each")
    parser.add_argument("--int8-rows-kernel", choices=("on", "off"), default="on",
                        help="int8 products of several rows as one_byte_rows.py's kernel (quantize.INT8_ROWS_KERNEL)")
    parser.add_argument("--fp8-rows-kernel", choices=("on", "off"), default="on",
                        help="fp8 products of several rows as one_byte_rows.py's kernel (quantize.FP8_ROWS_KERNEL)")
    parser.add_argument("--int4-rows-kernel", choices=("on", "off"), default="on",
                        help="int4 products of several rows as int4_rows.py's kernel (quantize.INT4_ROWS_KERNEL)")
    parser.add_argument("--int4-one-row-kernel", choices=("on", "off"), default="on",
                        help="int4 products of one row as int4_one_row.py's kernel (quantize.INT4_ONE_ROW_KERNEL)")
    args = parser.parse_args()
    override_inductor_options(args.inductor_options)
    quantize.INT8_ROWS_KERNEL = args.int8_rows_kernel == "on"
    quantize.FP8_ROWS_KERNEL = args.fp8_rows_kernel == "on"
    quantize.INT4_ROWS_KERNEL = args.int4_rows_kernel == "on"
    quantize.INT4_ONE_ROW_KERNEL = args.int4_one_row_kernel == "on"
    workers_ready = start_compile_workers() if args.workers_ready else None
    device = torch.device("cuda")
    tokenizer = load_tokenizer(args.ckpt)
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "mode": args.mode,
               "max_seq_len": args.max_seq_len, "inductor_options": CUDA_INDUCTOR_OPTIONS,
               "compile_workers_ready": workers_ready, "int8_rows_kernel": quantize.INT8_ROWS_KERNEL,
               "fp8_rows_kernel": quantize.FP8_ROWS_KERNEL, "int4_rows_kernel": quantize.INT4_ROWS_KERNEL,
               "int4_one_row_kernel": quantize.INT4_ONE_ROW_KERNEL,
               "environment": describe(device), "variants": {}}  # environment: e.g. TORCHINDUCTOR_ENABLE_PDL
    reference = None
    on_off = {"on": [True], "off": [False], "both": [False, True]}[args.one_row_kernels]
    kernel_blocks = ([None] if False in on_off else []) + (args.one_row_blocks if True in on_off else [])  # None: off
    variants = [(p, b) for p in args.precisions.split(",")
                for b in (kernel_blocks if one_row_kernels_run(torch.bfloat16, weight_kind(p), device) else [None])]
    measured_blocks = dict(one_row.BLOCKS)
    for precision, blocks in variants:
        one_row.BLOCKS = measured_blocks | {kind: tuple(b) for kind, b in (blocks or {}).items()}
        one_row_on = blocks is not None
        weights = weight_kind(precision)
        batches = [int(b) for b in args.batches.split(",")]
        speed = Speed(cuda_graph=True, compile_mode=args.mode, max_seq_len=args.max_seq_len,
                      one_row_kernels=one_row_on)
        start = time.perf_counter()
        backend, times = load_engine(args.ckpt, device, torch.bfloat16, weights, speed,
                                     [(b, 220) for b in batches])
        prompts = [expand_prompt(encode_messages(tokenizer, tts_messages(t)), backend.config) for t in TEXTS]
        row = {"build_s": time.perf_counter() - start, **times, "batches": {}}
        for batch in batches:
            batch_prompts = [prompts[i % len(prompts)] for i in range(batch)]
            ms = step_ms(backend, batch_prompts)
            loop = loop_ab(backend, batch_prompts, args.ab_loop) if args.ab_loop else \
                {"loop_ms_per_frame": loop_ms(backend, batch_prompts)}
            row["batches"][batch] = {"step_ms_median": median(ms), "step_ms_min": min(ms), **loop}
        row["floor"] = floor_report(backend.config, 2, weights, device, row["batches"][batches[0]]["step_ms_median"])
        if weights is not None or args.inductor_options or one_row_on:
            reference = reference or TorchBackend.from_checkpoint(args.ckpt, device=device, dtype=torch.bfloat16)
            row["fidelity"] = fidelity(reference, backend, prompts[:1], args.fidelity_frames)  # batch 1: no new shape
        if args.profile:
            row["top_kernels"] = profile(backend, prompts[:1])
        if args.profile_loop:
            row["loop_kernels"] = profile_loop(backend, prompts[:1])
        name = precision + ("/one-row-kernels" if one_row_on else "") + (json.dumps(blocks) if blocks else "")
        row["one_row_blocks"] = backend.one_row.blocks if one_row_on else None
        results["variants"][name] = row
        print(name, json.dumps(row, default=str), flush=True)
        del backend
        torch.cuda.empty_cache()
        args.out.write_text(json.dumps(results, indent=2, default=str))


@torch.inference_mode()
def profile(backend, prompts) -> list[dict]:
    """The CUDA kernels of 20 compiled steps outside the graph, by total time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    backend.prefill(prompts, FRAMES)
    frame = torch.zeros((len(prompts), 8), dtype=torch.long, device=backend.device)
    state = backend.state
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            state.frame.copy_(frame)
            backend.decode_step(state, state.frame)
        torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)[:15]
    return [{"kernel": e.key[:90], "calls": e.count, "us_per_step": e.device_time_total / 20} for e in rows]


@torch.inference_mode()
def profile_loop(backend, prompts, frames: int = 40) -> list[dict]:
    """The GPU work (kernels, copies) of a sampled generate() of `frames` frames, prefill included, by total time
    per frame: what the step's graph runs and what the loop adds (the frame choice's graph, the copies)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    generate(backend, prompts, SAMPLING, frames, stop_at_eos=False)  # the chooser captured, the shapes warm
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        generate(backend, prompts, SAMPLING, frames, stop_at_eos=False)
        torch.cuda.synchronize()
    return [{"kernel": name, "calls_per_frame": calls, "us_per_frame": us}
            for name, calls, us in gpu_work(prof, per=frames)[:30]]


def gpu_work(prof, per: int) -> list[tuple[str, float, float]]:
    """A profile's GPU work (kernels, copies), longest first: (name, calls, microseconds), both per `per`."""
    events = sorted((e for e in prof.key_averages() if e.device_time_total > 0), key=lambda e: e.device_time_total,
                    reverse=True)
    return [(e.key[:90], e.count / per, e.device_time_total / per) for e in events]


if __name__ == "__main__":
    main()
