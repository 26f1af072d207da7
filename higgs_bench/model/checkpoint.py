"""Load a Higgs Audio v2 checkpoint directory (either layout) into canonical weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from higgs_bench.errors import CheckpointError
from higgs_bench.model.config import HiggsConfig, read_config
from higgs_bench.model.weights import canonical_name, expected_shapes


@dataclass
class Checkpoint:
    path: Path
    config: HiggsConfig
    weights: dict[str, torch.Tensor]


def load_checkpoint(model_dir: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> Checkpoint:
    model_dir = Path(model_dir)
    config = checkpoint_config(model_dir)
    weights = _read_weights(model_dir, config, dtype, device)
    return Checkpoint(model_dir, config, weights)


def checkpoint_config(model_dir: str | Path) -> HiggsConfig:
    """The model config of a checkpoint folder, without reading its weights."""
    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} is a file; give the folder that holds config.json")
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist")
    return read_config(model_dir)


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index}: not a safetensors index ({err})") from err
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{model_dir}: the index names weight files that are missing: {missing}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir}: no *.safetensors weight files")
    return files


def _read_weights(model_dir: Path, config: HiggsConfig, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    shapes = expected_shapes(config)
    weights: dict[str, torch.Tensor] = {}
    sums: dict[str, tuple[torch.Tensor, Path, str]] = {}  # each tensor's sum, and where it is stored
    unknown: list[str] = []
    staging = PinnedStaging(device) if torch.device(device).type == "cuda" else None
    for file in weight_files(model_dir):
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for stored in f.keys():
                    name = canonical_name(stored, config.layout)
                    if name is None:
                        continue
                    if name not in shapes:
                        unknown.append(stored)
                        continue
                    shape = tuple(f.get_slice(stored).get_shape())
                    if shape != shapes[name]:
                        raise CheckpointError(
                            f"{file.name}: tensor {stored} has shape {list(shape)} but the config implies "
                            f"{list(shapes[name])}"
                        )
                    tensor = _floating(f.get_tensor(stored), file, stored)
                    tensor = staging.to_device(tensor) if staging else tensor.to(device)
                    # summed before any conversion to the run's dtype could make the values infinite
                    sums[name] = tensor.sum(), file, stored
                    weights[name] = tensor.to(dtype=dtype)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{file}: corrupt or unreadable weight file ({err})") from err
    if unknown:
        raise CheckpointError(
            f"{model_dir}: tensors this model config does not describe (unsupported modules?): {unknown[:8]}"
        )
    missing = sorted(set(shapes) - set(weights))
    if missing:
        raise CheckpointError(f"{model_dir}: {len(missing)} tensors missing from the weight files, e.g. {missing[:5]}")
    _refuse_non_finite(sums)
    return weights


STAGING_BYTES = 64 << 20  # each of the two pinned buffers that weights pass through on their way to a GPU


class PinnedStaging:
    """Copies tensors (memory-mapped from their files) to a GPU in chunks through two pinned buffers: a chunk's
    copy into one buffer overlaps the transfer of the chunk before it from the other, which waits for nothing
    else. Pinning memory costs about as much as copying it: a fresh process's first load of the 3B checkpoint took
    0.90 s with each tensor pinned, 0.49 s through two buffers pinned once (H200, docs/performance.md)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.buffers = [torch.empty(STAGING_BYTES, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        self.sent: list[torch.cuda.Event | None] = [None, None]  # each buffer's last transfer
        self.turn = 0

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        out = torch.empty(tensor.shape, dtype=tensor.dtype, device=self.device)
        source, target = _as_bytes(tensor.contiguous()), _as_bytes(out)
        chunk = self.buffers[0].numel()
        for start in range(0, source.numel(), chunk):
            buffer, sent = self.buffers[self.turn], self.sent[self.turn]
            if sent is not None:
                sent.synchronize()  # the buffer's previous chunk has left
            end = min(start + chunk, source.numel())
            buffer[:end - start].copy_(source[start:end])
            target[start:end].copy_(buffer[:end - start], non_blocking=True)
            self.sent[self.turn] = torch.cuda.Event()
            self.sent[self.turn].record(torch.cuda.current_stream(self.device))
            self.turn = 1 - self.turn
        return out


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def _floating(tensor: torch.Tensor, file: Path, stored: str) -> torch.Tensor:
    """Integer storage would load as silent garbage: refused."""
    if not tensor.dtype.is_floating_point:
        raise CheckpointError(f"{file.name}: tensor {stored} is stored as {tensor.dtype}; model weights must be "
                              "floating point (a damaged or foreign checkpoint?)")
    return tensor


def _refuse_non_finite(sums: dict[str, tuple[torch.Tensor, Path, str]]) -> None:
    """Refuse the checkpoint if a tensor holds NaN or infinite values. A sum is finite only if every value is,
    so one read of each tensor where it landed (a GPU sums 10 GB in milliseconds), and one wait for all of them,
    clear the usual case; a tensor whose sum is not finite is counted exactly from its file, since finite values
    can also sum past the dtype's range."""
    checks = list(sums.values())
    finite = torch.stack([total.float() for total, _, _ in checks]).isfinite().tolist() if checks else []
    for (_, file, stored), ok in zip(checks, finite):
        if ok:
            continue
        with safe_open(file, framework="pt", device="cpu") as f:
            bad = int((~torch.isfinite(f.get_tensor(stored))).sum())
        if bad:
            raise CheckpointError(f"{file.name}: tensor {stored} holds {bad} NaN or infinite values; the "
                                  "checkpoint is damaged")
