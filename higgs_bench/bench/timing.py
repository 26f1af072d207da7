"""Timing generation with fixed work: per-frame stamps from CUDA events (no extra synchronisation)
or the host clock on CPU, warm-up runs excluded."""

from __future__ import annotations

import time

import numpy as np
import torch

from higgs_bench.generate.loop import generate
from higgs_bench.model.config import FRAME_RATE
from higgs_bench.generate.sampling import SamplingConfig



class FrameStamps:
    """Call once before prefill, then once per generated frame; seconds since the first call."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def __call__(self, *_):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> np.ndarray:
        if self.cuda:
            torch.cuda.synchronize()
            return np.array([self.marks[0].elapsed_time(m) / 1000 for m in self.marks])
        return np.array(self.marks) - self.marks[0]


def time_generation(backend, prompts, frames: int, sampling: SamplingConfig) -> dict:
    """One timed batch of exactly `frames` steps. Returns stamps relative to the start (prefill included)."""
    stamps = FrameStamps(backend.device)
    stamps()
    generate(backend, prompts, sampling, frames, stop_at_eos=False, on_frame=stamps)
    t = stamps.seconds()[1:]  # t[i]: frame i is out
    n = backend.config.num_codebooks
    return {"e2e_s": float(t[-1]), "ttfa_s": float(t[n]), "prefill_s": float(t[0]), "frame_s": np.diff(t).tolist()}


def summarise_batch(batch_size: int, runs: list[dict], frames: int, num_codebooks: int) -> dict:
    frame_ms = np.array([f for run in runs for f in run["frame_s"]]) * 1000
    e2e = float(np.median([run["e2e_s"] for run in runs]))
    audio_s = (frames - num_codebooks) / FRAME_RATE  # decodable audio per utterance
    return {
        "batch_size": batch_size,
        "frames": frames,
        "ttfa_ms": float(np.median([run["ttfa_s"] for run in runs])) * 1000,
        "prefill_ms": float(np.median([run["prefill_s"] for run in runs])) * 1000,
        "frame_ms": {q: float(np.percentile(frame_ms, p)) for q, p in (("median", 50), ("p90", 90), ("p99", 99))},
        "e2e_s": e2e,
        "rtf": e2e / audio_s,
        "throughput": batch_size * audio_s / e2e,  # seconds of audio per second
    }
