"""Memory during a run: GPU memory from NVML (sampled in a thread, so TensorRT's allocations count too)
and the process's peak resident set on the CPU."""

from __future__ import annotations

import os
import resource
import threading

import torch


class GpuMemoryMonitor:
    """Peak device memory in use (NVML, whole device) while the `with` block runs."""

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        self.device, self.interval_s = device, interval_s
        self.peak_bytes: int | None = None
        self.baseline_bytes: int | None = None
        self._stop = threading.Event()

    def __enter__(self):
        if self.device.type != "cuda":
            return self
        import pynvml

        pynvml.nvmlInit()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(_physical_index(index))
        self.baseline_bytes = self.peak_bytes = self._used()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _used(self) -> int:
        import pynvml

        return pynvml.nvmlDeviceGetMemoryInfo(self._handle).used

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self._used())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._used())


def _physical_index(index: int) -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v for v in visible.split(",") if v.strip()]
        if index < len(ids) and ids[index].strip().isdigit():
            return int(ids[index])
    return index


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def kv_cache_bytes(cfg, positions: int, batch: int, bytes_per_value: int) -> int:
    """Keys and values of every layer for `positions` per row."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * bytes_per_value * positions * batch
