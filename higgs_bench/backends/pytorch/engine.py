"""A torch "engine": the checkpoint loaded (and quantised) on its device, with the decode step compiled for
the shapes a run will use. What the compilation produced (Inductor's kernels and autotuning choices,
`torch.compiler.save_cache_artifacts`) is kept in the engine folder, so that the next run loads it instead
of compiling and autotuning again.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from higgs_bench.backends.pytorch.backend import Speed, TorchBackend, cache_length
from higgs_bench.errors import HiggsBenchError
from higgs_bench.files import atomic_path

COMPILE_CACHE = "compile_cache.bin"


def load_engine(model_dir: Path, device: torch.device, dtype: torch.dtype, quantised: str | None, speed: Speed,
                shapes: list[tuple[int, int]], cache_file: Path | None = None) -> tuple[TorchBackend, dict]:
    """The backend, warmed for `shapes` (compiled, and captured when CUDA graphs are on). With `cache_file`,
    compile artefacts are loaded from it first. Returns the backend, how long each part took (each shape's
    warm-up under its (batch, cache columns) name), and how many compiled graphs came from the cache (hit) or
    had to be compiled (miss)."""
    start = time.perf_counter()
    loaded = None
    if cache_file is not None and speed.compile_mode:
        loaded = torch.compiler.load_cache_artifacts(cache_file.read_bytes())
    backend = TorchBackend.from_checkpoint(model_dir, device=device, dtype=dtype, quantised=quantised, speed=speed)
    load_s = time.perf_counter() - start
    before = dict(counters["inductor"])
    per_shape = {}
    for batch, total in shapes:
        shape_start = time.perf_counter()
        backend.warm([(batch, total)])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        name = f"{batch}x{cache_length(total, speed.max_seq_len)}"
        per_shape[name] = per_shape.get(name, 0.0) + time.perf_counter() - shape_start
    compiled = {key: counters["inductor"][key] - before.get(key, 0) for key in ("fxgraph_cache_hit", "fxgraph_cache_miss")}
    return backend, {"load_s": load_s, "warm_s": time.perf_counter() - start - load_s, "warm_s_per_shape": per_shape,
                     "artefacts_loaded": loaded is not None, "kernels": compiled}


def save_artefacts(out_dir: Path) -> dict:
    """Write what this process compiled into the engine folder; returns the file's name, size and digest."""
    artefacts = torch.compiler.save_cache_artifacts()
    if artefacts is None:
        raise HiggsBenchError("torch.compile produced no cache artefacts to keep (was anything compiled?)")
    data, _ = artefacts
    with atomic_path(out_dir / COMPILE_CACHE) as temp:
        temp.write_bytes(data)
    return {"file": COMPILE_CACHE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def artefact_damage(out_dir: Path, saved: dict | None) -> str | None:
    """Why the engine folder's compile artefacts cannot be used (None: they can, or none are expected)."""
    if not saved:
        return None
    path = out_dir / saved["file"]
    if not path.is_file():
        return f"{saved['file']} is missing"
    if hashlib.sha256(path.read_bytes()).hexdigest() != saved["sha256"]:
        return f"{saved['file']} is damaged (its digest differs from build.json's)"
    return None
