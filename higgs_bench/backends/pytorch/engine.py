"""A torch "engine": the checkpoint loaded (and quantised) on its device, with the decode step compiled for
the shapes a run will use. What the compilation produced (Inductor's kernels and autotuning choices,
`torch.compiler.save_cache_artifacts`; and each compiled function whole, precompiled.py) is
kept in the engine folder, so that the next run loads it instead of tracing, compiling and autotuning again; so
are a quantised engine's weights (engine_weights.py), which the next run reads instead of the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch._dynamo.utils import compilation_time_metrics, counters

from higgs_bench.backends.pytorch.backend import IN_PROCESS_COMPILE, Speed, TorchBackend, cache_length
from higgs_bench.backends.pytorch.engine_weights import read_weights, save_weights
from higgs_bench.backends.pytorch.kernel_cache import FOLDER as KERNEL_FOLDER
from higgs_bench.backends.pytorch.kernel_cache import KernelCache, TritonCompilations
from higgs_bench.backends.pytorch.precompiled import AOT_COMPILE, as_a_fresh_process_loads, read_compilation
from higgs_bench.backends.pytorch.precompiled import counts as precompiled_counts
from higgs_bench.errors import HiggsBenchError
from higgs_bench.files import atomic_path, file_damage, file_record
from higgs_bench.generate.chooser import choice_name, precompiled_choices, warm_choosers
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.checkpoint import checkpoint_config

COMPILE_CACHE = "compile_cache.bin"
PRECOMPILED_PART = "compiled functions"  # a start's part that loads those compiled ahead of time
COORDINATE_DESCENT = "CachingAutotuner.coordinate_descent_tuning"  # its name in dynamo's compile-time table
# Inductor settings while an engine whose artefacts were loaded warms up. Its compile workers, once started, send
# each kernel back pickled, and triton.Config.__setstate__ (Triton 3.6) keeps Triton's own fields only: the cached
# config arrives without Inductor's found_by_coordesc mark, so coordinate descent tunes it again (H200, int8 over
# the seven shapes of scenario=standard: 66 of 76 kernels, 45 s of a 62 s start; the first shape escaped because
# the workers were not up yet). Kernels that are in the cache load in the process within seconds (the same
# start: 4.3-12.1 s for all seven shapes, no kernel tuned again).
WARM_START_INDUCTOR = IN_PROCESS_COMPILE


@dataclass(frozen=True)
class Artefacts:
    """What a build kept in its engine folder: Inductor's cache artefacts, the functions it compiled ahead of
    time, the kernels Triton compiled for the engine's own launches (kernel_cache.py) (file records: name from
    the folder, size, digest), and a quantised engine's weights (engine_weights.py: name, size, checksum)."""

    folder: Path
    compile_cache: dict
    precompiled: list[dict] = field(default_factory=list)
    kernels: list[dict] = field(default_factory=list)
    weights: dict | None = None

    def damage(self) -> str | None:
        """Why these files cannot be used (None: they can; the weights' contents are checked as they load)."""
        for saved in (self.compile_cache, *self.precompiled, *self.kernels, *([self.weights] if self.weights else [])):
            if why := file_damage(self.folder, saved):
                return why
        return None


def load_engine(model_dir: Path, device: torch.device, dtype: torch.dtype, quantised: str | None, speed: Speed,
                shapes: list[tuple[int, int]], artefacts: Artefacts | None = None,
                prefills: list[tuple[int, bool]] = (),
                choosers: list[tuple[SamplingConfig, int]] = (),
                on_part: Callable[[str], None] = lambda part: None,
                kernel_folder: Path | None = None) -> tuple[TorchBackend, dict]:
    """The backend, warmed for `shapes` and `prefills` (compiled, and captured when CUDA graphs are on), and
    the generation loop's frame choosers for `choosers` (sampling, rows) (on a GPU: captured, and compiled with
    the engine). With `artefacts`, what a build kept is loaded first, a quantised engine's weights instead of the
    checkpoint's. `on_part` hears what starts next ("weights", then "compiled functions" where the build kept
    some whole, then "NAME (I of N)"). Returns the backend, where its weights came from, how long each part
    took (loading the kept functions under PRECOMPILED_PART, each shape's warm-up under its (batch, cache
    columns) name, each prefill's as prefill-WIDTH[-audio], each chooser's as
    choice_name gives it), how many compiled graphs came from the cache (hit) or had to be compiled (miss),
    how many kernels coordinate descent tuned, how many functions compiled ahead of time were loaded or
    compiled, how many of the engine's own Triton kernels (one_row.py's, and those inside its compiled
    functions) Triton loaded from `kernel_folder` or compiled into it (with no folder, Triton's default cache
    keeps them and they count among the others), and how many other kernels Triton loaded or compiled in this
    process (Inductor's that its static launcher does not load, with no folder the engine's own)."""
    start = time.perf_counter()
    on_part("weights")
    loaded = None
    if artefacts is not None and speed.compile_mode:
        loaded = torch.compiler.load_cache_artifacts((artefacts.folder / artefacts.compile_cache["file"]).read_bytes())
    kept_weights = artefacts is not None and artefacts.weights is not None
    if kept_weights:
        backend = TorchBackend(checkpoint_config(model_dir), read_weights(artefacts.folder, artefacts.weights, device),
                               device, dtype, quantised=quantised, speed=speed, kept=True)
    else:
        backend = TorchBackend.from_checkpoint(model_dir, device=device, dtype=dtype, quantised=quantised, speed=speed)
    load_s = time.perf_counter() - start
    kernels = KernelCache(kernel_folder) if kernel_folder is not None and backend.compiled else None
    if kernels:
        backend.keep_kernels_in(kernels)
    if backend.compiled and speed.precompile and AOT_COMPILE:
        backend.choices = precompiled_choices(choosers, backend.config, device)
    before, tunings_before = dict(counters["inductor"]), kernel_tunings()
    precompiled_before, per_shape = dict(precompiled_counts), {}
    elsewhere = TritonCompilations()  # Triton's, in this process, outside the engine folder
    with elsewhere.listening():
        if loaded is not None and artefacts.precompiled:
            on_part(PRECOMPILED_PART)
            part_start = time.perf_counter()
            with kernels_kept_in(kernels):
                for function in backend.precompiled():
                    if not function.compilations:  # a chooser's may have come with an engine this process ran before
                        function.load(artefacts.folder, artefacts.precompiled)
            per_shape[PRECOMPILED_PART] = time.perf_counter() - part_start
        parts = warm_up_parts(backend, shapes, prefills, choosers)
        with torch._inductor.config.patch(WARM_START_INDUCTOR if loaded is not None else {}):
            for i, (name, warm) in enumerate(parts, 1):
                on_part(f"{name} ({i} of {len(parts)})")
                per_shape[name] = per_shape.get(name, 0.0) + _seconds(device, warm)
    compiled = inductor_compiles(since=before) | {"kernels_tuned": kernel_tunings() - tunings_before}
    return backend, {"load_s": load_s, "weights_from": "engine" if kept_weights else "checkpoint",
                     "warm_s": time.perf_counter() - start - load_s, "warm_s_per_shape": per_shape,
                     "artefacts_loaded": loaded is not None, "kernels": compiled,
                     "precompiled": {key: precompiled_counts[key] - precompiled_before[key]
                                     for key in ("loaded", "compiled")},
                     "own_kernels": kernels.counts() if kernels else {"loaded": 0, "compiled": 0},
                     "other_triton_kernels": elsewhere.counts()}


@contextmanager
def kernels_kept_in(kernels: KernelCache | None) -> Iterator[None]:
    """Where the Triton kernels that the compiled functions compile as they load (precompiled.read_compilation) are
    kept: in the engine folder (`kernels`), compiled in this process. A start found neither kind in Triton's other
    caches: the rows kernels inside the functions, which the build compiled in Inductor's compile workers (H200,
    int8: four, 0.5-1.8 s of a 2.3-3.2 s start), and the kernels that coordinate descent tuned, which a loaded
    function compiles with their tuned configs (int8 with its one-row step compiled: ten). save_artefacts loads
    each function back as a start does (precompiled.as_a_fresh_process_loads), so that the folder holds them."""
    if kernels is None:
        yield
        return
    with kernels.in_use(), torch._inductor.config.patch(IN_PROCESS_COMPILE):
        yield


def warm_up_parts(backend: TorchBackend, shapes, prefills, choosers) -> list[tuple[str, Callable[[], object]]]:
    """What load_engine warms, in order, by name: decode-step shapes (two that share a cache bucket share a
    name), prefills (only CUDA graphs capture one) and frame choosers (prepared on a GPU only)."""
    speed, device = backend.speed, backend.device
    parts = [(f"{batch}x{cache_length(total, speed.max_seq_len)}", partial(backend.warm, [(batch, total)]))
             for batch, total in shapes]
    if backend.cuda_graph:
        parts += [(f"prefill-{width}{'-audio' if audio else ''}", partial(backend.warm_prefills, [(width, audio)]))
                  for width, audio in prefills]
    if device.type == "cuda":
        parts += [(choice_name(sampling, rows),
                   partial(warm_choosers, [(sampling, rows)], backend.config, device, backend.compiled))
                  for sampling, rows in choosers]
    return parts


def inductor_compiles(since: dict) -> dict:
    """Inductor graphs compiled since the `since` snapshot of counters["inductor"]: from the cache (hit) or not."""
    return {key: counters["inductor"][key] - since.get(key, 0) for key in ("fxgraph_cache_hit", "fxgraph_cache_miss")}


def kernel_tunings() -> int:
    """How many Triton kernels coordinate descent has tuned in this process (what a warm start should not redo)."""
    return len(compilation_time_metrics.get(COORDINATE_DESCENT, []))


def start_compile_workers(limit_s: float = 120.0) -> bool:
    """Start Inductor's compile workers and wait until they take work, as a sweep's later variants find them (a
    lone process compiles its first shapes before they are up); whether they did within limit_s. For benchmarks."""
    from torch._inductor.async_compile import AsyncCompile

    AsyncCompile.warm_pool()
    deadline = time.time() + limit_s
    while not AsyncCompile.use_process_pool() and time.time() < deadline:
        time.sleep(0.2)
    return AsyncCompile.use_process_pool()


def _seconds(device: torch.device, warm) -> float:
    start = time.perf_counter()
    warm()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def save_artefacts(out_dir: Path, backend: TorchBackend) -> Artefacts:
    """Write what this process compiled (and the backend's functions compiled ahead of time, and a quantised
    engine's weights) into the engine folder, and record it with the kernels Triton compiled there
    (kernel_cache.FOLDER)."""
    artefacts = torch.compiler.save_cache_artifacts()
    if artefacts is None:
        raise HiggsBenchError("torch.compile produced no cache artefacts to keep (was anything compiled?)")
    data, _ = artefacts
    with atomic_path(out_dir / COMPILE_CACHE) as temp:
        temp.write_bytes(data)
    precompiled = [saved for function in backend.precompiled() for saved in function.save(out_dir)]
    kernels = KernelCache(out_dir / KERNEL_FOLDER)
    # functions are kept only with torch >= 2.11 (AOT_COMPILE), whose Inductor has the caches set aside here
    if precompiled:
        with kernels_kept_in(kernels), as_a_fresh_process_loads():  # each function loads as a start loads it
            for saved in precompiled:
                read_compilation(out_dir / saved["file"])
    weights = save_weights(out_dir, backend.network) if backend.quantised else None
    return Artefacts(out_dir, file_record(out_dir, COMPILE_CACHE), precompiled,
                     [file_record(out_dir, name) for name in kernels.files()], weights)
