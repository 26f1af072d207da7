"""What the run ran on: device, driver and library versions, for every record."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from higgs_bench.errors import ConfigError

PACKAGES = ("torch", "torchao", "triton", "numpy", "tensorrt_llm", "tensorrt", "faster-whisper", "jiwer", "hydra-core")
# Environment variables that change what a run compiles or how fast it runs (Inductor's and Triton's settings,
# TensorRT-LLM's, the allocator's, which GPUs are visible): a record keeps those that were set, but for the
# locations among them (cache folders), which differ from machine to machine without changing a figure.
TUNING_VARIABLES = ("TORCHINDUCTOR_", "TORCH_COMPILE", "TORCHDYNAMO_", "TRITON_", "TRTLLM_", "TLLM_",
                    "PYTORCH_CUDA_ALLOC_CONF", "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE")
LOCATIONS = ("_DIR", "_HOME", "_PATH")


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """A torch device this machine has; ConfigError naming `setting` otherwise. "auto": cuda if there is a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"{setting}={name!r} is not a device; use cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{setting}={name!r}: this machine has no usable CUDA GPU (torch {torch.__version__}); "
                              "use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{setting}={name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise ConfigError(f"{setting}={name!r}: only cpu and cuda devices are supported")
    return device


def compute_capability(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return major + minor / 10


def describe(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(), "device": str(device),
           "cpu": platform.processor() or platform.machine(), "packages": {},
           "variables": {name: value for name, value in sorted(os.environ.items())
                         if name.startswith(TUNING_VARIABLES) and not name.endswith(LOCATIONS)}}
    for name in PACKAGES:
        try:
            env["packages"][name] = version(name)
        except PackageNotFoundError:
            continue
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        # the board itself: our H200 figures moved by a few percent from board to board, beyond one run's noise
        env |= {"gpu": props.name, "gpu_uuid": str(getattr(props, "uuid", "")) or None,
                "gpu_memory_gb": round(props.total_memory / 2**30, 1),
                "compute_capability": compute_capability(device), "cuda": torch.version.cuda,
                "driver": _nvml_driver()}
    return env


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no NVML on this machine: the record just lacks the driver
        return None
