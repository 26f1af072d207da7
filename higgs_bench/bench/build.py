"""The build stage: each variant's engine (TensorRT-LLM) or prepared weights (torch) in
engines/<variant>-<hash of the settings that affect it>/, reused when unchanged."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch._inductor.utils import fresh_inductor_cache

from higgs_bench.backends import pytorch as torch_backend_package
from higgs_bench.backends import trtllm as trtllm_package
from higgs_bench.backends.pytorch.backend import Speed, cache_length, one_row_kernels_run
from higgs_bench.backends.pytorch.engine import Artefacts, load_engine, save_artefacts
from higgs_bench.backends.pytorch.kernel_cache import FOLDER as KERNEL_FOLDER
from higgs_bench.backends.pytorch.quantize import weight_bytes
from higgs_bench.backends.trtllm import require_tensorrt_llm
from higgs_bench.backends.trtllm.build_config import engine_settings
from higgs_bench.files import read_json, writable_dir, write_json, write_text
from higgs_bench.model import dtypes
from higgs_bench.model.checkpoint import load_checkpoint, weight_files
from higgs_bench.model.config import read_config
from higgs_bench.model.weights import expected_shapes

BUILD_RECORD = "build.json"


def variant_name(cfg) -> str:
    return f"{cfg.backend.name}-{cfg.precision.name}"


def torch_speed(cfg, device: torch.device) -> Speed:
    """The torch backend's decode-step settings: compile is on by default on CUDA (backend.compile=null), and
    with it and CUDA graphs, one-row steps of 16-bit, int8 and fp8 engines run one_row.py's kernels (int4's
    from Hopper on)."""
    compile_on = cfg.backend.compile if cfg.backend.compile is not None else device.type == "cuda"
    cuda_graph = cfg.backend.cuda_graph and device.type == "cuda"
    one_row = (cfg.backend.one_row_kernels and compile_on and cuda_graph and importlib.util.find_spec("triton")
               and one_row_kernels_run(dtypes.TORCH[cfg.precision.dtype], cfg.precision.weights, device))
    return Speed(cuda_graph=cuda_graph, compile_mode=cfg.backend.compile_mode if compile_on else None,
                 max_seq_len=cfg.engine.max_seq_len, one_row_kernels=bool(one_row), precompile=cfg.backend.precompile)


def build_settings(cfg, model_dir: Path, device: torch.device, shapes: list[tuple[int, int]],
                   prefills: list[tuple[int, bool]] = ()) -> dict:
    """Only what changes the built artefact: the checkpoint, the backend, the precision, engine limits, the
    versions of what built it (our backend's code included); for a compiled torch engine also the shapes, and
    with CUDA graphs the captured prefills."""
    settings = {"model": str(Path(model_dir).resolve()), "backend": cfg.backend.name,
                "precision": OmegaConf.to_container(cfg.precision)}
    if cfg.backend.name == "trtllm":
        settings["engine"] = OmegaConf.to_container(cfg.engine)
        settings["versions"] = {"tensorrt_llm": installed_version("tensorrt_llm"), "code": code_digest(trtllm_package)}
        return settings
    speed = torch_speed(cfg, device)
    if speed.compile_mode:
        settings |= {"speed": speed.__dict__, "shapes": [list(s) for s in bucketed(shapes, speed)],
                     "versions": compiler_versions(device)}
        if speed.cuda_graph:
            settings["prefills"] = [list(key) for key in sorted(set(prefills))]
    return settings


def bucketed(shapes: list[tuple[int, int]], speed: Speed) -> list[tuple[int, int]]:
    """The distinct (batch, cache length) shapes behind (batch, positions) requests."""
    return sorted({(batch, cache_length(total, speed.max_seq_len)) for batch, total in shapes})


def compiler_versions(device: torch.device) -> dict:
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device.type,
                "torchao": installed_version("torchao"), "code": code_digest(torch_backend_package)}
    if device.type == "cuda":
        versions["gpu"] = torch.cuda.get_device_name(device)
    return versions


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_digest(package) -> str:
    """A digest of a backend package's source files, so that an engine built by other code is not reused."""
    digest = hashlib.sha256()
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def checkpoint_stamp(model_dir: Path) -> list[dict]:
    """The checkpoint's config and weight files as a build saw them (name, size, time of the last change): an
    engine that holds the weights (TensorRT-LLM's, a quantised torch engine's) is built again when they change."""
    stats = {file.name: file.stat() for file in [Path(model_dir) / "config.json", *weight_files(Path(model_dir))]}
    return [{"file": name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns} for name, stat in stats.items()]


def engine_dir(cfg, settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.build.engines_dir) / f"{variant_name(cfg)}-{digest}"


def build(cfg, model_dir: Path, device: torch.device, shapes: list[tuple[int, int]],
          prefills: list[tuple[int, bool]] = (), choosers=(), on_part=lambda part: None) -> tuple[dict, object | None]:
    """Build (or reuse) the variant for requests of the given (batch, positions) shapes and lone prompts of the
    given (width bucket, has audio) prefills. A torch engine built here also warms the frame choosers of
    `choosers` (sampling, rows), whose compilation joins its artefacts (not its settings: other sampling
    settings reuse the engine and compile their choosers when it starts). `on_part` hears each part of a torch
    engine's build as it starts (load_engine). Returns the build record, and the backend when building made one
    (a compiled torch engine), else None."""
    settings = build_settings(cfg, model_dir, device, shapes, prefills)
    out = engine_dir(cfg, settings)
    record_path = out / BUILD_RECORD
    checkpoint = checkpoint_stamp(model_dir)
    if not cfg.build.force:
        saved = read_json(record_path)
        why = stale_reason(saved, settings, out, checkpoint) if record_path.exists() else None
        if record_path.exists() and why is None:
            return saved | {"reused": True}, None
        if why:
            print(f"rebuilding {out}: {why}", file=sys.stderr)
    writable_dir(out, "build.engines_dir")
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    start = time.perf_counter()
    backend = None
    if cfg.backend.name == "torch":
        log, backend = _build_torch(cfg, model_dir, out, device, shapes, prefills, choosers, on_part)
    else:
        log = _build_trtllm(cfg, model_dir, out, device)
    record = {"dir": str(out), "seconds": time.perf_counter() - start, "size_bytes": log.pop("size_bytes"),
              "settings": settings, "checkpoint": checkpoint, **log}
    write_json(out / "build.log", log)
    write_json(record_path, record)  # last: its presence says the build is whole
    return record | {"reused": False}, backend


def forget_build(build_record: dict) -> None:
    """Remove a build's record, so that the next build() of its variant builds it again."""
    (Path(build_record["dir"]) / BUILD_RECORD).unlink(missing_ok=True)


def load_torch_engine(cfg, model_dir: Path, device: torch.device, shapes, build_record: dict, prefills=(),
                      choosers=(), on_part=lambda part: None):
    """A built torch engine for the run: weights loaded, compile artefacts loaded, shapes, prefills and frame
    choosers warmed."""
    speed = torch_speed(cfg, device)
    return load_engine(model_dir, device, dtypes.TORCH[cfg.precision.dtype], cfg.precision.weights, speed, shapes,
                       kept_artefacts(build_record), prefills, choosers, on_part,
                       Path(build_record["dir"]) / KERNEL_FOLDER)


def kept_artefacts(build_record: dict) -> Artefacts | None:
    """What a torch engine's build kept in its folder (None: it compiled nothing)."""
    if not build_record.get("compile_cache"):
        return None
    return Artefacts(Path(build_record["dir"]), build_record["compile_cache"], build_record.get("precompiled", []),
                     build_record.get("triton_kernels", []), build_record.get("weights"))


def start_work_note(build_record: dict, start: dict) -> str | None:
    """What to tell the user when a reused torch engine's start tuned kernels or had Triton compile kernels, which
    a warm start on the machine that built it should take from Inductor's cache or the engine's folder instead
    (each costs from a tenth of a second to seconds): None when it did neither."""
    tuned = start["kernels"]["kernels_tuned"]
    compiled = start["own_kernels"]["compiled"] + start["other_triton_kernels"]["compiled"]
    work = []
    if tuned:
        work.append(f"tuned {tuned} kernels")
    if compiled:
        work.append(f"had Triton compile {compiled} kernels")
    if not work:
        return None
    start_s = start["load_s"] + start["warm_s"]
    return (f"{build_record['dir']}: this start {' and '.join(work)} and took {start_s:.0f} s, "
            f"{start_s / build_record['seconds']:.0%} of the engine's {build_record['seconds']:.0f} s build; a warm "
            "start on the machine that built it should do neither (docs/performance.md, \"Warm starts compiled in "
            "the process\" and \"The rows kernels inside the kept functions\", has the causes found so far)")


def stale_reason(saved, settings: dict, out: Path, checkpoint: list[dict]) -> str | None:
    """Why a saved build record cannot be reused for `settings` in folder `out`, from the checkpoint whose files
    checkpoint_stamp describes (None: it can)."""
    if not isinstance(saved, dict):
        return f"{BUILD_RECORD} is unreadable"
    if saved.get("settings") != settings:
        return f"{BUILD_RECORD} was written for other settings"
    if saved.get("checkpoint") != checkpoint:
        before = {entry["file"]: entry for entry in saved.get("checkpoint") or []}
        now = {entry["file"]: entry for entry in checkpoint}
        changed = sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))
        return f"the checkpoint's files changed since the build ({', '.join(changed)})"
    if Path(saved.get("dir", "")).resolve() != out.resolve():
        return f"{BUILD_RECORD} describes another folder ({saved.get('dir')})"
    if not isinstance(saved.get("size_bytes"), int):
        return f"{BUILD_RECORD} lacks the engine size"
    artefacts = kept_artefacts(saved)  # its folder is `out`: checked above
    return artefacts.damage() if artefacts else None


def _build_torch(cfg, model_dir: Path, out: Path, device: torch.device, shapes, prefills, choosers,
                 on_part) -> tuple[dict, object | None]:
    """With compile on: load (and check) the checkpoint, compile the decode step for every planned shape (and
    with CUDA graphs the prefill of every planned lone prompt, and the frame choosers) on the device and keep
    the artefacts; with compile off, check the checkpoint. Its size is the weights at the run's dtype,
    quantised linears at their own width."""
    dtype = dtypes.TORCH[cfg.precision.dtype]
    config = read_config(model_dir)
    shapes_of = expected_shapes(config)  # what a checked load holds: loading refuses any other shape
    log = {"size_bytes": weight_bytes(shapes_of, config, torch.finfo(dtype).bits // 8, cfg.precision.weights),
           "tensors": len(shapes_of), "quantised": cfg.precision.weights}
    speed = torch_speed(cfg, device)
    if not speed.compile_mode:
        load_checkpoint(model_dir, dtype=dtype)  # a damaged checkpoint fails the build, not the run after it
        return log | {"note": "torch backend: weights loaded and quantised at run time (torchao)"}, None
    # build.force compiles as on a new machine: in the machine's Inductor cache it would find the kernels, and
    # their tuning, of the build it replaces (and its time would not be a cold build's)
    # (the engine folder's Triton kernels likewise: one_row.py's kernels are compiled into it afresh)
    shutil.rmtree(out / KERNEL_FOLDER, ignore_errors=True)
    with fresh_inductor_cache() if cfg.build.force else nullcontext():
        backend, times = load_engine(model_dir, device, dtype, cfg.precision.weights, speed, shapes, None, prefills,
                                     choosers, on_part, out / KERNEL_FOLDER)
        artefacts = save_artefacts(out, backend)
    return log | {"compile": times | {"shapes": [list(s) for s in bucketed(shapes, speed)]},
                  "compile_cache": artefacts.compile_cache, "precompiled": artefacts.precompiled,
                  "triton_kernels": artefacts.kernels, "weights": artefacts.weights}, backend


def _build_trtllm(cfg, model_dir: Path, out: Path, device) -> dict:
    """Convert the checkpoint (calibrating for fp8) and build the engine (backends/trtllm/engine.py)."""
    settings = engine_settings(cfg.engine, cfg.precision, read_config(model_dir))  # named errors before any work
    require_tensorrt_llm()
    from higgs_bench.backends.trtllm.engine import build_engine

    engine = build_engine(model_dir, out, settings, device=device)
    return {"size_bytes": (engine / "rank0.engine").stat().st_size, "quant": asdict(settings.quant),
            "plugin_config": settings.plugin_config, "audio_routing": settings.audio_routing}
