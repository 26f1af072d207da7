"""Recording work as a CUDA graph, the one way the decode step, the captured prefill and the frame chooser do it."""

from __future__ import annotations

from typing import Any, Callable

import torch


def capture(run: Callable[[], Any], device: torch.device, warmups: int, undo: Callable[[], None] | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Call `run` `warmups` times on a side stream (first calls allocate, compile and choose kernels, which a
    graph cannot record), then `undo` (what those calls changed), then record one call. Returns the graph and
    what the recorded call returned: the buffers each replay writes. A `generator` is registered with the
    graph, so that each replay draws fresh numbers from it."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmups):
            run()
    torch.cuda.current_stream(device).wait_stream(side)
    if undo is not None:
        undo()
    graph = torch.cuda.CUDAGraph()
    if generator is not None:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        outputs = run()
    return graph, outputs
