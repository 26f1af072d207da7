"""Where a record's figures come from: the record schema, the project's commit, a digest of the settings,
and the GPU's state (SM clock, temperature, power, energy counter from NVML) before and after the timing."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import torch

from higgs_bench.bench.memory import nvml_handle

# Record schema. 2: time_to_first_frame_ms / time_to_first_audio_ms, spreads, provenance; 3: memory's
# allocated_after_load_gb (was weights_gb, which held the KV caches and CUDA graphs of the warmed shapes too).
SCHEMA_VERSION = 3


def git_sha() -> str:
    """The commit of the checkout this package runs from ("-dirty" with uncommitted changes), else "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != here.parents[1]:
            return "unknown"  # installed, or inside some other repository
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def gpu_state(device: torch.device) -> dict | None:
    """SM clock, temperature, power draw and the energy counter now; None off CUDA or without NVML. A field the
    GPU does not report is None."""
    handle = nvml_handle(device)
    if handle is None:
        return None
    import pynvml

    def read(query, *args):
        try:
            return query(handle, *args)
        except pynvml.NVMLError:
            return None

    power_mw = read(pynvml.nvmlDeviceGetPowerUsage)
    return {"sm_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            "temperature_c": read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": None if power_mw is None else power_mw / 1000,
            "energy_mj": read(pynvml.nvmlDeviceGetTotalEnergyConsumption)}


def energy_per_audio_second(before: dict | None, after: dict | None, audio_s: float) -> float | None:
    """Joules the GPU used per second of audio generated between two gpu_state readings."""
    if not before or not after or before["energy_mj"] is None or after["energy_mj"] is None or audio_s <= 0:
        return None
    return (after["energy_mj"] - before["energy_mj"]) / 1000 / audio_s
