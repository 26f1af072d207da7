"""The memory-bandwidth floor of an audio decode step: the weights it must read once, over the device's
measured copy bandwidth."""

from __future__ import annotations

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
