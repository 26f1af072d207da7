"""Where a compiled torch engine's start goes, cold and warm (docs/performance.md, warm start).

    python benchmarks/warm_start_gpu.py CKPT OUT.json [--precisions bf16,int8] [--shapes 1x300,16x1100] [--profile]
        [--keep-stderr] [--runs cold,local] [--inductor-options '{"int8": {"use_static_cuda_launcher": false}}']
        [--dynamo-only] [--one-row-kernels]

For each precision, fresh processes one after another:
- cold: an empty Inductor cache; compiles every shape and keeps the artefacts (what the build stage does);
- warm: another empty Inductor cache and the artefacts loaded (the engine folder on a new machine);
- local: the cold run's Inductor cache and the artefacts (the same machine again);
- local-cache-only: the cold run's Inductor cache alone (what loading the artefacts adds or undoes);
- local-in-workers: as local, with Inductor's compile workers on for every shape (load_engine turns them off
  when it has loaded artefacts, engine.WARM_START_INDUCTOR says why; tuned shapes always, backend.TUNED_REDUCTIONS).
Each reports its process time, the weight load, every shape's warm-up and dynamo's compile-time table, and
the tuned configs in its Inductor cache (`best_configs`: how many, how many found by coordinate descent, and in
a later run how many it wrote and how many the cold run did not write); --profile adds each
later run's costliest functions (cumulative and own time), --keep-stderr each run's log, in OUT's folder.
Which kernel tuned again, and why: --keep-stderr with
TORCH_LOGS="+torch._inductor.runtime.coordinate_descent_tuner,+torch._inductor.runtime.autotune_cache" logs each
tuning and each config saved, by file, between the lines that name the shape being warmed.
On our GPU image, run it through warm_start_gpu.sh, which first writes the bytecode a normal install has
(gpu_env.sh's compile_bytecode); without it every fresh process compiles its modules from source.
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

RUNS = ("cold", "warm", "local", "local-cache-only", "local-in-workers")
PRECISIONS = {"bf16": None, "int8": "int8", "int4": "int4", "fp8": "fp8"}
DEFAULT_SHAPES = "1x301,4x301,16x301,64x301,16x1067,4x1065,3x75"  # what scenario=standard plans


def child(args) -> None:
    import cProfile
    import io
    import pstats

    import torch

    from higgs_bench.backends.pytorch import engine
    from higgs_bench.backends.pytorch.backend import (CUDA_INDUCTOR_OPTIONS, IN_PROCESS_COMPILE, Speed,
                                                      override_inductor_options)
    from higgs_bench.backends.pytorch.engine import Artefacts, load_engine, save_artefacts
    from higgs_bench.backends.pytorch.kernel_cache import FOLDER as KERNEL_FOLDER

    override_inductor_options(args.inductor_options)
    if args.run == "local-in-workers":  # loaded and tuned kernels in the workers, as before either went in-process
        engine.WARM_START_INDUCTOR = {}
        workers = {option: getattr(torch._inductor.config, option) for option in IN_PROCESS_COMPILE}
        override_inductor_options({kind: workers for kind in CUDA_INDUCTOR_OPTIONS["one_row"]})
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    cache = Path(args.cache)
    device = torch.device(args.device)
    speed = Speed(cuda_graph=device.type == "cuda", compile_mode="default", max_seq_len=2048,
                  one_row_kernels=args.one_row_kernels, precompile=not args.dynamo_only)
    started = time.time()
    profile = cProfile.Profile() if args.profile else None
    if profile:
        profile.enable()
    kept = cache.parent / "artefacts.json"  # the cold run's file records, as build.json keeps them
    artefacts = None if args.run in ("cold", "local-cache-only") else Artefacts(cache.parent, **json.loads(
        kept.read_text()))
    backend, times = load_engine(Path(args.ckpt), device, torch.bfloat16, PRECISIONS[args.precision], speed,
                                 shapes, artefacts, on_part=lambda part: print("warming", part, file=sys.stderr,
                                                                               flush=True),
                                 kernel_folder=cache.parent / KERNEL_FOLDER)
    if profile:
        profile.disable()
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("cumulative").print_stats(90)
        stats.sort_stats("tottime").print_stats(30)
        times["profile"] = text.getvalue()
    if args.run == "cold":
        saved = save_artefacts(cache.parent, backend)
        kept.write_text(json.dumps({"compile_cache": saved.compile_cache, "precompiled": saved.precompiled,
                                    "kernels": saved.kernels}))
    times["compile_times"] = torch._dynamo.utils.compile_times(repr="str")
    configs = best_configs(Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]))
    times["best_configs"] = {name: found for name, (found, _) in configs.items()}
    times["best_configs_written"] = sum(written >= started for _, written in configs.values())
    print(json.dumps(times))


def best_configs(inductor_cache: Path) -> dict[str, tuple[bool, float]]:
    """Each tuned config Inductor keeps, by file name: whether coordinate descent found it, and when it was written
    (loading the artefacts writes them too)."""
    return {path.name: (json.loads(path.read_text()).get("found_by_coordesc", False), path.stat().st_mtime)
            for path in inductor_cache.rglob("*.best_config")}


def tuned_configs_summary(run: dict, cold: dict) -> dict:
    """How many tuned configs the run's Inductor cache holds, how many coordinate descent found, how many the cold
    run did not write (a kernel tuned again under a new name), and how many this run wrote (after the cold run:
    tuned again, or written by loading the artefacts)."""
    configs = run.setdefault("configs", run.pop("best_configs", {}))
    return {"files": len(configs), "coordesc": sum(configs.values()),
            "not_from_cold": len(set(configs) - set(cold.get("configs", configs))),
            "written": run.pop("best_configs_written", 0)}


def run_child(args, precision: str, run: str, work: Path) -> dict:
    inductor = work / ("inductor-cold" if run.startswith(("cold", "local")) else f"inductor-{run}")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    command = [sys.executable, __file__, args.ckpt, args.out, "--child", "--run", run, "--precision", precision,
               "--shapes", args.shapes, "--device", args.device, "--cache", str(work / "compile_cache.bin"),
               "--inductor-options", json.dumps(args.inductor_options)]
    if args.profile and run != "cold":
        command.append("--profile")
    if args.dynamo_only:
        command.append("--dynamo-only")
    if args.one_row_kernels:
        command.append("--one-row-kernels")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if args.keep_stderr:
        Path(args.out).with_name(f"{run}_stderr_{precision}.txt").write_text(done.stderr)
    if done.returncode != 0:
        return {"error": done.stderr[-3000:], "process_s": wall}
    times = json.loads(done.stdout.strip().splitlines()[-1])
    times["process_s"] = wall
    times["engine_s"] = times["load_s"] + times["warm_s"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("--precisions", default="bf16")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep-stderr", action="store_true", help="each run's log (set TORCH_LOGS for more)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dynamo-only", action="store_true", help="no function compiled ahead of time "
                        "(backend.precompile=false)")
    parser.add_argument("--one-row-kernels", action="store_true", help="one-row steps as one_row.py's kernels, "
                        "as the toolkit runs bf16, int8 and fp8 (their Triton kernels kept in the engine folder)")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--run", choices=sorted(RUNS))
    parser.add_argument("--cache")
    parser.add_argument("--runs", default=",".join(RUNS), help="which of the runs, in this order (cold first)")
    parser.add_argument("--inductor-options", type=json.loads, default={},
                        help="JSON {weight kind: {option: value}} over the engine's own Inductor settings, every shape")
    args = parser.parse_args()
    if args.child:
        return child(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for precision in args.precisions.split(","):
        results[precision] = {}
        with tempfile.TemporaryDirectory() as work:
            for run in args.runs.split(","):  # written after each run: one cut off by a time limit keeps the others
                results[precision][run] = report_run(args, precision, run, run_child(args, precision, run, Path(work)),
                                                     results[precision])
                Path(args.out).write_text(json.dumps({"shapes": args.shapes, "inductor_options": args.inductor_options,
                                                      "results": results}, indent=1))


def report_run(args, precision: str, run: str, times: dict, earlier: dict) -> dict:
    """A run's times as the record keeps them (against the cold run, the first), printed."""
    cold = earlier.get("cold", times)
    if "error" not in times:
        times["process_over_cold"] = times["process_s"] / cold["process_s"]
    times["best_configs"] = tuned_configs_summary(times, cold)
    profile = times.pop("profile", None)
    if profile:
        Path(args.out).with_name(f"{run}_profile_{precision}.txt").write_text(profile)
    print(precision, run, {k: v for k, v in times.items() if k not in ("compile_times", "configs")}, flush=True)
    print(times.get("compile_times", times.get("error", "")), flush=True)
    return times


if __name__ == "__main__":
    main()
