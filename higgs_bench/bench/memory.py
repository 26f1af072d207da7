"""Memory of one measurement, started afresh for each (a sweep runs its variants in one process):
- the process's peak resident set since the start (Linux VmHWM, reset through /proc/self/clear_refs);
- on CUDA, torch's peak allocated and reserved bytes, and NVML's device-wide peak (TensorRT's own
  allocations count too), sampled by a child process so that no thread of ours competes with timed steps;
- the KV-cache bytes the backend actually holds.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import torch

# The NVML sampler: prints the device's used bytes at start, samples until its stdin closes, prints the peak.
SAMPLER = """
import select, sys, pynvml
pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(int(sys.argv[1]))
used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
peak = used()
print(peak, flush=True)
while not select.select([sys.stdin], [], [], float(sys.argv[2]))[0]:
    peak = max(peak, used())
print(max(peak, used()), flush=True)
"""


def reset_peak_rss() -> bool:
    """Start the peak resident set afresh (False where the kernel does not allow it)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set since the last reset_peak_rss (else the process's lifetime peak)."""
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class GpuMemoryMonitor:
    """Device-wide memory in use (NVML) while the `with` block runs: at its start and at its peak."""

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        self.device, self.interval_s = device, interval_s
        self.peak_bytes: int | None = None
        self.baseline_bytes: int | None = None
        self._sampler = None

    def __enter__(self):
        if self.device.type != "cuda":
            return self
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self._sampler = subprocess.Popen([sys.executable, "-c", SAMPLER, str(_physical_index(index)),
                                          str(self.interval_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        first = self._sampler.stdout.readline()
        if not first.strip().isdigit():  # no NVML here: the record lacks the device-wide figures
            self._sampler.kill()
            self._sampler = None
        else:
            self.baseline_bytes = int(first)
        return self

    def __exit__(self, *exc):
        if self._sampler is not None:
            self._sampler.stdin.close()
            last = self._sampler.stdout.readline().strip()
            self._sampler.wait()
            self.peak_bytes = int(last) if last.isdigit() else None  # a sampler that died leaves no figure


class MeasuredMemory:
    """Everything above for the `with` block: peak RSS, torch's peaks and NVML's on CUDA. Measurements nest (a
    whole run holds one per batch size): before one resets the peak counters, the peaks so far are credited to
    every measurement still open, so an outer one keeps what happened before and between the inner ones."""

    open: list[MeasuredMemory] = []  # in progress, outermost first

    def __init__(self, device: torch.device):
        self.device, self.gpu = device, GpuMemoryMonitor(device)
        self.rss_peak = self.torch_allocated = self.torch_reserved = 0

    def __enter__(self):
        self._credit_open()
        self.rss_fresh = reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        MeasuredMemory.open.append(self)
        self.gpu.__enter__()
        return self

    def __exit__(self, *exc):
        self.gpu.__exit__(*exc)
        self._credit_open()
        MeasuredMemory.open.remove(self)

    def _credit_open(self) -> None:
        """The peaks since the last reset, credited to every open measurement."""
        rss = peak_rss_bytes()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        for measurement in MeasuredMemory.open:
            measurement.rss_peak = max(measurement.rss_peak, rss)
            if measurement.device.type == "cuda":
                measurement.torch_allocated = max(measurement.torch_allocated,
                                                  torch.cuda.max_memory_allocated(measurement.device))
                measurement.torch_reserved = max(measurement.torch_reserved,
                                                 torch.cuda.max_memory_reserved(measurement.device))

    def report(self, kv_cache_bytes: int | None = None) -> dict:
        gb = 1e9
        out = {"rss_peak_gb": self.rss_peak / gb, "rss_since": "start" if self.rss_fresh else "process start"}
        if kv_cache_bytes is not None:
            out["kv_cache_gb"] = kv_cache_bytes / gb
        if self.device.type == "cuda":
            out |= {"torch_max_allocated_gb": self.torch_allocated / gb, "torch_max_reserved_gb": self.torch_reserved / gb}
        if self.gpu.peak_bytes is not None:
            out |= {"nvml_peak_gb": self.gpu.peak_bytes / gb, "nvml_baseline_gb": self.gpu.baseline_bytes / gb}
        return out


def nvml_handle(device: torch.device):
    """NVML's handle of a CUDA device (None on the CPU or where NVML cannot start)."""
    if device.type != "cuda":
        return None
    import pynvml

    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        return pynvml.nvmlDeviceGetHandleByIndex(_physical_index(index))
    except pynvml.NVMLError:
        return None


def _physical_index(index: int) -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v for v in visible.split(",") if v.strip()]
        if index < len(ids) and ids[index].strip().isdigit():
            return int(ids[index])
    return index
