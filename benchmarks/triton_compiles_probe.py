"""Which Triton kernels a run compiles, and where a start's loading of its kept functions goes (docs/performance.md,
twentieth session).

    TAG=start1 python benchmarks/triton_compiles_probe.py OUT_DIR [python -m higgs_bench arguments]

Runs `python -m higgs_bench` with those arguments in this process and writes to OUT_DIR:
- compiles_TAG.txt: every Triton compilation this process asked for (Triton's compilation listener), one line each:
  the phase (which kept function was loading, or before/after), "hit" (loaded from Triton's cache) or "COMPILED",
  the kernel, its hash and the cache folder, then what Triton's hash is made of (its constants, attributes,
  signature and options) as JSON. Kernels compiled in Inductor's compile workers are not heard. Compilations
  within an engine's own Triton cache (kernel_cache.KernelCache.in_use: a build's loading back of its kept
  functions, a start's loading of them) are heard too, as "load:NAME" or "loadback:FILE"; a kernel compiled
  "after" them is followed by the lines of higgs_bench that launched it ("#   ...");
- profile_TAG.txt: cProfile over every precompiled.Precompiled.load of the run (cumulative, then the callers of
  Triton's compile stages).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import runpy
import sys
import time
import traceback
from pathlib import Path

import triton

from higgs_bench.backends.pytorch import engine, kernel_cache, precompiled

COMPILE_STAGES = "make_cubin|make_ptx|_load_triton_kernel_from_source|code_generator.py.*__init__"
NOT_IN_HASH = {"hash", "target", "name", "shared", "tmem_size", "global_scratch_size", "global_scratch_align",
               "profile_scratch_size", "profile_scratch_align", "triton_version"}


def made_of(src, metadata: dict) -> str:
    """What Triton hashed for this kernel, as JSON: constants, attributes, signature, options."""
    options = {key: value for key, value in metadata.items() if key not in NOT_IN_HASH}
    return json.dumps({"constants": sorted(map(str, getattr(src, "constants", {}).items())),
                       "attrs": sorted(map(str, getattr(src, "attrs", {}).items())),
                       "signature": str(getattr(src, "signature", "")), "options": options}, default=str)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tag = os.environ.get("TAG", "run")
    log = open(out / f"compiles_{tag}.txt", "w")
    phase, profile = ["before"], cProfile.Profile()

    def heard(src, metadata, metadata_group, times, cache_hit) -> None:
        folder = os.path.dirname(next(iter(metadata_group.values()), "?"))
        log.write(f"{phase[0]}\t{'hit' if cache_hit else 'COMPILED'}\t{getattr(src, 'name', '?')}\t"
                  f"{metadata.get('hash', '?')[:12]}\t{folder}\t{made_of(src, metadata)}\n")
        if not cache_hit and phase[0] == "after":  # compiled outside a start's loading: where from
            log.writelines(f"#   {line.strip()}\n" for line in traceback.format_stack()
                           if "higgs_bench" in line and "triton_compiles_probe" not in line)
        log.flush()

    load = precompiled.Precompiled.load

    def profiled_load(self, engine_dir, saved):
        phase[0], start = f"load:{self.name}", time.perf_counter()
        profile.enable()
        try:
            return load(self, engine_dir, saved)
        finally:
            profile.disable()
            log.write(f"# loaded {self.name} in {time.perf_counter() - start:.3f} s\n")
            phase[0] = "after"

    own_heard = kernel_cache.TritonCompilations._heard

    def heard_too(self, cache_hit: bool, **details) -> None:  # within an engine's own Triton cache
        heard(cache_hit=cache_hit, **details)
        own_heard(self, cache_hit=cache_hit, **details)

    read_back = engine.read_compilation

    def read_back_heard(path):
        phase[0] = f"loadback:{path.name}"
        try:
            return read_back(path)
        finally:
            phase[0] = "after"

    triton.knobs.compilation.listener = heard
    kernel_cache.TritonCompilations._heard = heard_too
    engine.read_compilation = read_back_heard
    precompiled.Precompiled.load = profiled_load
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    try:  # as `python -m higgs_bench`, so that Hydra finds its configs
        runpy.run_module("higgs_bench", run_name="__main__", alter_sys=True)
    finally:
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text) if profile.getstats() else None
        if stats:
            stats.sort_stats("cumulative").print_stats(30)
            stats.print_callers(COMPILE_STAGES)
        (out / f"profile_{tag}.txt").write_text(text.getvalue())
        log.close()


if __name__ == "__main__":
    main()
