"""The memory-bandwidth floor of an audio decode step: the weights it must read once, over the device's
measured copy bandwidth."""

from __future__ import annotations

import functools
import time

import torch

from higgs_bench.backends.pytorch.quantize import weight_bytes
from higgs_bench.model.config import DUAL, SKIP, HiggsConfig
from higgs_bench.model.weights import ATTENTION, AUDIO_NORMS, MLP, TEXT_NORMS, expected_shapes


def weights_read_per_frame(cfg: HiggsConfig) -> dict[str, tuple[int, ...]]:
    """The tensors an all-audio step reads (canonical name -> shape read): attention and the audio (or, in
    plain layers, text) MLP and norms of every layer that is not fast-forward, the final norm, the audio head
    and N rows of the codebook embedding. The text head and the text MLP of dual-FFN layers are not read."""
    shapes = expected_shapes(cfg)
    read = {}
    for i, kind in enumerate(cfg.layer_kinds):
        if kind == SKIP:
            continue
        mlp, norms = ("audio_mlp", AUDIO_NORMS) if kind == DUAL else ("mlp", TEXT_NORMS)
        names = [f"self_attn.{leaf}" for leaf in ATTENTION] + [f"{mlp}.{leaf}" for leaf in MLP] + list(norms)
        read |= {f"layers.{i}.{name}.weight": shapes[f"layers.{i}.{name}.weight"] for name in names}
    read |= {"norm.weight": shapes["norm.weight"], "audio_lm_head.weight": shapes["audio_lm_head.weight"],
             "audio_codebook_embeddings.weight": (cfg.num_codebooks, cfg.hidden_size)}
    return read


@functools.cache
def copy_bandwidth(device: torch.device, gigabytes: float = 4.0, repeats: int = 20) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read and written: the fastest of
    `repeats` copies, measured once per device and process. A floor is what the memory does at best, and one
    figure per process keeps the floors of a sweep's variants comparable (a single timed run of ten copies
    once read 3.68 TB/s on an H200 where the next three variants read 4.28)."""
    size = int(gigabytes * 1e9) // 2 * 2
    source = torch.empty(size // 2, dtype=torch.bfloat16, device=device).normal_()
    target = torch.empty_like(source)
    seconds = min(copy_seconds(device, functools.partial(target.copy_, source), repeats))
    del source, target  # 8 GB on a GPU, freed before the caller goes on
    return 2 * size / seconds


def copy_seconds(device: torch.device, copy, repeats: int, warmup: int = 3) -> list[float]:
    """Seconds of each of `repeats` calls of `copy`, after `warmup` untimed ones (CUDA events on a GPU)."""
    for _ in range(warmup):
        copy()
    if device.type != "cuda":
        return [_timed(copy) for _ in range(repeats)]
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        copy()
        end.record()
    torch.cuda.synchronize(device)
    return [start.elapsed_time(end) / 1000 for start, end in events]


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def floor_report(cfg: HiggsConfig, dtype_bytes: int, weights: str | None, device: torch.device,
                 measured_frame_ms: float) -> dict:
    """The variant's own floor (its weight bytes, quantised ones included) and the bf16 floor, each with the
    measured batch-1 step over it."""
    bandwidth = copy_bandwidth(device)
    read = weights_read_per_frame(cfg)
    own = weight_bytes(read, cfg, dtype_bytes, weights)
    bf16 = weight_bytes(read, cfg, 2, None)
    own_ms, bf16_ms = own / bandwidth * 1000, bf16 / bandwidth * 1000
    return {"bytes_per_frame": own, "copy_bandwidth_tb_s": bandwidth / 1e12, "floor_ms": own_ms,
            "measured_frame_ms_batch1": measured_frame_ms, "measured_over_floor": measured_frame_ms / own_ms,
            "bf16_bytes_per_frame": bf16, "bf16_floor_ms": bf16_ms, "measured_over_bf16_floor": measured_frame_ms / bf16_ms}
