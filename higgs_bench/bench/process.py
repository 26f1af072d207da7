"""What a process pays once, whichever variant comes first: starting CUDA, importing torchao, and Inductor's (and on
CUDA Triton's) first compilation. A sweep's variants share one process, so its first variant paid these inside its
build or start and the others did not (H200, docs/performance.md: int8 ran first and started in 20 s, the variants
after it in 3-5 s). The runner pays them before it times a torch engine's build or start, and the record keeps what
they took (`build.process_first_s`: 0 for every variant after the first that needed them)."""

from __future__ import annotations

import time

import torch

PAID: set[str] = set()  # the parts this process has paid


def pay_first_costs(device: torch.device, quantised: str | None, compiled: bool) -> float:
    """Pay what this variant needs of the process's first costs and has not been paid yet; the seconds it took
    (0.0 when nothing was left to pay)."""
    parts = [("cuda", device.type == "cuda", lambda: _start_cuda(device)),
             ("torchao", quantised is not None, lambda: _import_torchao(quantised)),
             ("inductor", compiled, lambda: _first_compile(device))]
    due = [(name, pay) for name, needed, pay in parts if needed and name not in PAID]
    if not due:
        return 0.0
    start = time.perf_counter()
    for name, pay in due:
        pay()
        PAID.add(name)
    return time.perf_counter() - start


def _start_cuda(device: torch.device) -> None:
    torch.zeros(1, device=device)
    torch.cuda.synchronize(device)


def _import_torchao(quantised: str) -> None:
    from higgs_bench.backends.pytorch.quantize import torchao_config

    torchao_config(quantised)  # imports torchao's quantisation configs, quietly


def _first_compile(device: torch.device) -> None:
    """A one-line function through dynamo and Inductor (and on CUDA a Triton kernel) in this process's compile
    threads, so that no compile worker starts here that a variant's build would not have started itself."""
    doubled = torch.compile(lambda x: x * 2 + 1, dynamic=False, options={"compile_threads": 1})
    doubled(torch.ones(16, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
