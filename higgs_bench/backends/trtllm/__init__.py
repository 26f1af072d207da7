"""TensorRT-LLM backend (written against TensorRT-LLM 1.2.x). Importing higgs_bench never imports tensorrt_llm."""

from __future__ import annotations

from higgs_bench.errors import HiggsBenchError

INSTALL = (
    "backend=trtllm needs TensorRT-LLM 1.2.x on a Linux machine with an NVIDIA GPU (driver >= 580, CUDA 13, "
    "Python 3.10 or 3.12): `pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cu130`, "
    "`apt-get install libopenmpi-dev`, then `pip install tensorrt_llm==1.2.1 --extra-index-url "
    "https://pypi.nvidia.com` (or use the NGC image nvcr.io/nvidia/tensorrt-llm/release)."
)


class BackendUnavailable(HiggsBenchError):
    """The requested backend cannot run on this machine."""


def require_tensorrt_llm():
    try:
        import tensorrt_llm
    except ImportError as err:
        raise BackendUnavailable(f"tensorrt_llm is not installed. {INSTALL}") from err
    return tensorrt_llm
