"""The memory-bandwidth floor of an audio decode step: the weights it must read once, over the device's
measured copy bandwidth."""

from __future__ import annotations

import time

import torch

from higgs_bench.model.config import SKIP, HiggsConfig


def weights_read_per_frame(cfg: HiggsConfig) -> int:
    """Parameters an all-audio step reads: attention and the audio (or, in plain layers, text) MLP and norms
    of every layer that is not fast-forward, the final norm, the audio head and N codebook embedding rows.
    The text head and the text MLP of dual-FFN layers are not read."""
    h, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    per_layer = h * (2 * q + 2 * kv) + 3 * h * cfg.intermediate_size + 2 * h
    layers = sum(1 for kind in cfg.layer_kinds if kind != SKIP)
    head = cfg.num_codebooks * cfg.audio_vocab_size * h
    return layers * per_layer + h + head + cfg.num_codebooks * h


def copy_bandwidth(device: torch.device, gigabytes: float = 4.0, repeats: int = 10) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read and written."""
    source = torch.empty(int(gigabytes * 1e9) // 2, dtype=torch.bfloat16, device=device).normal_()
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    del source, target
    return 2 * int(gigabytes * 1e9) // 2 * 2 * repeats / seconds


def floor_report(cfg: HiggsConfig, bytes_per_param: int, device: torch.device, measured_frame_ms: float) -> dict:
    bandwidth = copy_bandwidth(device)
    frame_bytes = weights_read_per_frame(cfg) * bytes_per_param
    floor_ms = frame_bytes / bandwidth * 1000
    return {"bytes_per_frame": frame_bytes, "copy_bandwidth_tb_s": bandwidth / 1e12, "floor_ms": floor_ms,
            "measured_frame_ms_batch1": measured_frame_ms, "measured_over_floor": measured_frame_ms / floor_ms}

