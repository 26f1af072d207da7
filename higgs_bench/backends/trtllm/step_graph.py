"""The generation step replayed as a CUDA graph, the way TensorRT-LLM's GenerationSession runs it with
cuda_graph_mode=True (tensorrt_llm/runtime/generation.py, 1.2.x: `_capture_cuda_graph_and_instantiate`,
`_update_cuda_graph_instance`, the launch in `handle_per_step`).

The gpt-attention plugin reads its host inputs (each row's cached length) when a step is enqueued, so a
captured graph holds one step only. After each step is launched and the feed has moved on, the next step is
captured (recorded, not run) into one of two instances used in turn; an instance is updated in place
(cudaGraphExecUpdate) or, when that fails, instantiated again. The next step launches it. A context step
(a prefill, requests joining) changes host inputs out of turn, so it drops the captured step (`reset`). An
engine whose enqueue cannot be captured runs without graphs from then on, with the reason kept.
"""

from __future__ import annotations

from collections.abc import Callable


def load_cudart():
    """The CUDA runtime bindings TensorRT-LLM itself uses (cuda-python, a TensorRT-LLM dependency)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


class StepGraphs:
    def __init__(self, cudart):
        self.cudart = cudart
        self.instances = [None, None]
        self.turn = 0  # the instance the last capture went to
        self.ready = False  # whether instances[turn] holds the step to come
        self.disabled: str | None = None  # why graphs are off for this engine

    def reset(self) -> None:
        """The host inputs changed out of turn: the next step is enqueued, not replayed."""
        self.ready = False

    def run(self, enqueue: Callable[[int], None], stream: int) -> None:
        """Run the step to come: replay its captured graph, or enqueue it."""
        if self.ready:
            self._check(self.cudart.cudaGraphLaunch(self.instances[self.turn], stream))
            self.ready = False
        else:
            enqueue(stream)

    def capture_next(self, enqueue: Callable[[int], None], stream: int) -> None:
        """Record the step to come (its inputs are in place) into the other instance."""
        if self.disabled:
            return
        cudart = self.cudart
        self._check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        try:
            enqueue(stream)
        except Exception as err:  # leave capture mode, and run without graphs from now on
            cudart.cudaStreamEndCapture(stream)
            self.disabled = f"the engine's step could not be captured in a CUDA graph: {err}"
            return
        graph = self._check(cudart.cudaStreamEndCapture(stream))[0]
        turn = 1 - self.turn
        self.instances[turn] = self._instance(self.instances[turn], graph)
        self._check(cudart.cudaGraphDestroy(graph))
        self._check(cudart.cudaGraphUpload(self.instances[turn], stream))
        self.turn, self.ready = turn, True

    def _instance(self, instance, graph):
        cudart = self.cudart
        if instance is not None:
            if _error(cudart.cudaGraphExecUpdate(instance, graph)) == cudart.cudaError_t.cudaSuccess:
                return instance
            self._check(cudart.cudaGraphExecDestroy(instance))
        return self._check(cudart.cudaGraphInstantiate(graph, 0))[0]

    def _check(self, result):
        """cuda-python returns (error, *values); raise on an error, return the values."""
        if _error(result) != self.cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {_error(result)} while running the step's CUDA graph")
        return list(result[1:]) if isinstance(result, tuple) else []


def _error(result):
    return result[0] if isinstance(result, tuple) else result
