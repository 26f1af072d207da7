"""The build stage: each variant's engine (TensorRT-LLM) or prepared weights (torch) in
engines/<variant>-<hash of the settings that affect it>/, reused when unchanged."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

import torch

from higgs_bench.backends.pytorch.backend import DTYPES
from higgs_bench.backends.pytorch.quantize import weight_bytes
from higgs_bench.backends.trtllm import require_tensorrt_llm
from higgs_bench.backends.trtllm.build_config import engine_settings
from higgs_bench.files import read_json, writable_dir, write_json, write_text
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.config import read_config

BUILD_RECORD = "build.json"


def variant_name(cfg) -> str:
    return f"{cfg.backend.name}-{cfg.precision.name}"


def build_settings(cfg, model_dir: Path) -> dict:
    """Only what changes the built artefact: the checkpoint, the backend, the precision, engine limits."""
    settings = {"model": str(Path(model_dir).resolve()), "backend": cfg.backend.name,
                "precision": OmegaConf.to_container(cfg.precision)}
    if cfg.backend.name == "trtllm":
        settings["engine"] = OmegaConf.to_container(cfg.engine)
    return settings


def engine_dir(cfg, model_dir: Path) -> Path:
    digest = hashlib.sha256(json.dumps(build_settings(cfg, model_dir), sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.build.engines_dir) / f"{variant_name(cfg)}-{digest}"


def build(cfg, model_dir: Path, device="cpu") -> dict:
    """Build (or reuse) the variant; returns the build record."""
    out = engine_dir(cfg, model_dir)
    record_path = out / BUILD_RECORD
    if not cfg.build.force:
        saved = read_json(record_path)
        why = stale_reason(saved, build_settings(cfg, model_dir), out) if record_path.exists() else None
        if record_path.exists() and why is None:
            return saved | {"reused": True}
        if why:
            print(f"rebuilding {out}: {why}", file=sys.stderr)
    writable_dir(out, "build.engines_dir")
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    start = time.perf_counter()
    log = _build_torch(cfg, model_dir) if cfg.backend.name == "torch" else _build_trtllm(cfg, model_dir, out, device)
    record = {"dir": str(out), "seconds": time.perf_counter() - start, "size_bytes": log.pop("size_bytes"),
              "settings": build_settings(cfg, model_dir), **log}
    write_json(out / "build.log", log)
    write_json(record_path, record)  # last: its presence says the build is whole
    return record | {"reused": False}


def stale_reason(saved, settings: dict, out: Path) -> str | None:
    """Why a saved build record cannot be reused for `settings` in folder `out` (None: it can)."""
    if not isinstance(saved, dict):
        return f"{BUILD_RECORD} is unreadable"
    if saved.get("settings") != settings:
        return f"{BUILD_RECORD} was written for other settings"
    if Path(saved.get("dir", "")).resolve() != out.resolve():
        return f"{BUILD_RECORD} describes another folder ({saved.get('dir')})"
    if not isinstance(saved.get("size_bytes"), int):
        return f"{BUILD_RECORD} lacks the engine size"
    return None


def _build_torch(cfg, model_dir: Path) -> dict:
    """The torch backend runs the checkpoint as is: preparing it means loading and casting, which checks
    that it is whole. Its size is the weights at the run's dtype, quantised linears at their own width."""
    dtype = DTYPES[cfg.precision.dtype]
    checkpoint = load_checkpoint(model_dir, dtype=dtype)
    shapes = {name: tuple(t.shape) for name, t in checkpoint.weights.items()}
    size = weight_bytes(shapes, checkpoint.config, torch.finfo(dtype).bits // 8, cfg.precision.weights)
    return {"size_bytes": size, "tensors": len(checkpoint.weights), "quantised": cfg.precision.weights,
            "note": "torch backend: weights loaded from the checkpoint, quantised at load (torchao)"}


def _build_trtllm(cfg, model_dir: Path, out: Path, device) -> dict:
    """Convert the checkpoint (calibrating for fp8) and build the engine (backends/trtllm/engine.py)."""
    settings = engine_settings(cfg.engine, cfg.precision, read_config(model_dir))  # named errors before any work
    require_tensorrt_llm()
    from higgs_bench.backends.trtllm.engine import build_engine

    engine = build_engine(model_dir, out, settings, device=device)
    return {"size_bytes": (engine / "rank0.engine").stat().st_size, "quant": asdict(settings.quant),
            "plugin_config": settings.plugin_config, "audio_routing": settings.audio_routing}
