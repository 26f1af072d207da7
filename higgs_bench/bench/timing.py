"""Timing generation with fixed work: per-frame stamps from preallocated CUDA events (no extra
synchronisation) or the host clock on CPU, warm-up runs excluded. A timed run pays what real generation pays,
the all-finished check included (generate evaluates it every step and only ignores it here).

Per batch size: time to the first frame every codebook has reached (`time_to_first_frame_ms`), time to the
first decoded audio (the first chunk's window, lookahead included (codec/streaming.py), generated, then
decoded with the run's codec on the run's device: `time_to_first_audio_ms`), per-frame latency percentiles
pooled over every run with their sample count and spread, and real-time factors without and with decoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from higgs_bench.codec.streaming import Streaming
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.config import FRAME_RATE


class FrameStamps:
    """Call once before prefill, then once per generated frame; seconds since the first call."""

    def __init__(self, device: torch.device, count: int, clock=time.perf_counter):
        self.cuda = device.type == "cuda"
        self.clock = clock
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(count)] if self.cuda else []
        self.marks: list = []

    def __call__(self, *_):
        if self.cuda:
            event = self.events[len(self.marks)]
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(self.clock())

    def seconds(self) -> np.ndarray:
        if self.cuda:
            torch.cuda.synchronize()
            return np.array([self.marks[0].elapsed_time(m) / 1000 for m in self.marks])
        return np.array(self.marks) - self.marks[0]


@dataclass(frozen=True)
class DecodeTimes:
    """Seconds the codec takes, on the run's device, for the first audio chunk (decoded from its first
    `first_window` frames: the chunk and its lookahead) and for a whole utterance."""

    first_window: int
    chunk_s: float
    utterance_s: float


def decode_seconds(codec, num_codebooks: int, frames: int, repeats: int = 3, clock=time.perf_counter) -> float:
    """Median seconds of decoding `frames` frames of one row (decoding time does not depend on the code values;
    the codec returns audio on the host, as a player needs it)."""
    codes = np.zeros((num_codebooks, frames), dtype=np.int64)
    codec.decode(codes)  # warm-up
    times = []
    for _ in range(repeats):
        start = clock()
        codec.decode(codes)
        times.append(clock() - start)
    return float(np.median(times))


def time_decoding(codec, num_codebooks: int, streaming: Streaming, utterance_frames: int, repeats: int = 3,
                  clock=time.perf_counter) -> DecodeTimes:
    """Decoding times of the first chunk's window and of a whole utterance of `utterance_frames` frames."""
    return DecodeTimes(streaming.first_window,
                       decode_seconds(codec, num_codebooks, streaming.first_window, repeats, clock),
                       decode_seconds(codec, num_codebooks, utterance_frames, repeats, clock))


def chunk_decode_seconds(codec, num_codebooks: int, streaming: Streaming) -> tuple[float, float]:
    """Decoding times of the first chunk's window and of a later chunk's, as the serving figures use them."""
    return (decode_seconds(codec, num_codebooks, streaming.first_window),
            decode_seconds(codec, num_codebooks, streaming.window))


def time_generation(backend, prompts, frames: int, sampling: SamplingConfig, clock=time.perf_counter) -> dict:
    """One timed batch of exactly `frames` steps. Returns stamps relative to the start (prefill included)."""
    stamps = FrameStamps(backend.device, frames + 1, clock)
    stamps()
    generate(backend, prompts, sampling, frames, stop_at_eos=False, on_frame=stamps)
    return {"stamps_s": stamps.seconds()[1:].tolist()}  # [i]: frame i is out


def spread(values_ms: np.ndarray) -> dict:
    q1, median, q3 = np.percentile(values_ms, [25, 50, 75])
    return {"median": float(median), "p90": float(np.percentile(values_ms, 90)),
            "p99": float(np.percentile(values_ms, 99)), "n": int(values_ms.size), "iqr": float(q3 - q1),
            "stdev": float(values_ms.std(ddof=1)) if values_ms.size > 1 else 0.0}


def summarise_batch(batch_size: int, runs: list[dict], frames: int, num_codebooks: int,
                    decode: DecodeTimes | None = None) -> dict:
    """Figures of one batch size from its timed runs. After the forced BOS frame 0, codebook k starts at frame
    k + 1 (the delay pattern), so with n codebooks frame n is the first whole one, and a chunk of K decodable
    frames is complete at frame n + K - 1."""
    stamps = np.array([run["stamps_s"] for run in runs])  # [runs, frames]
    frame_ms = np.diff(stamps, axis=1).ravel() * 1000
    e2e = float(np.median(stamps[:, -1]))
    audio_s = (frames - num_codebooks) / FRAME_RATE  # decodable audio per utterance
    summary = {
        "batch_size": batch_size,
        "frames": frames,
        "runs": len(runs),
        "time_to_first_frame_ms": float(np.median(stamps[:, num_codebooks])) * 1000,
        "prefill_ms": float(np.median(stamps[:, 0])) * 1000,
        "frame_ms": spread(frame_ms),
        "e2e_s": e2e,
        "rtf": e2e / audio_s,
        "throughput": batch_size * audio_s / e2e,  # seconds of audio per second
    }
    if decode is not None:
        last = num_codebooks + decode.first_window - 1
        if last < frames:
            summary["time_to_first_audio_ms"] = (float(np.median(stamps[:, last])) + decode.chunk_s) * 1000
        summary["rtf_with_codec"] = (e2e + batch_size * decode.utterance_s) / audio_s
    return summary
