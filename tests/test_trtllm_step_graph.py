"""The TensorRT-LLM generation step as a CUDA graph (step_graph.py), against a stand-in CUDA runtime that
records what it is asked: which steps are enqueued, captured, launched, updated or instantiated again."""

from enum import Enum
from types import SimpleNamespace

import pytest

from higgs_bench.backends.trtllm.step_graph import StepGraphs

Error = Enum("Error", "cudaSuccess cudaErrorGraphExecUpdateFailure cudaErrorStreamCaptureUnsupported")


class FakeCudart:
    cudaError_t = Error
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeGlobal="global")

    def __init__(self, update_fails=False):
        self.log, self.capturing, self.update_fails, self.graphs = [], False, update_fails, 0

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = True
        return (Error.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.capturing = False
        self.graphs += 1
        return Error.cudaSuccess, f"graph{self.graphs}"

    def cudaGraphInstantiate(self, graph, flags):
        self.log.append(("instantiate", graph))
        return Error.cudaSuccess, f"exec of {graph}"

    def cudaGraphExecUpdate(self, instance, graph):
        self.log.append(("update", instance, graph))
        return (Error.cudaErrorGraphExecUpdateFailure if self.update_fails else Error.cudaSuccess), None

    def cudaGraphExecDestroy(self, instance):
        self.log.append(("destroy", instance))
        return (Error.cudaSuccess,)

    def cudaGraphLaunch(self, instance, stream):
        self.log.append(("launch", instance))
        return (Error.cudaSuccess,)

    def cudaGraphDestroy(self, graph):
        return (Error.cudaSuccess,)

    def cudaGraphUpload(self, instance, stream):
        return (Error.cudaSuccess,)


def steps(graphs, cudart, count, enqueue=None):
    """Run `count` steps as the runtime does: run the step, then capture the next one."""
    def record(stream):
        cudart.log.append(("capture" if cudart.capturing else "enqueue",))

    for _ in range(count):
        graphs.run(enqueue or record, stream=7)
        graphs.capture_next(enqueue or record, stream=7)


def test_each_step_after_the_first_replays_the_graph_captured_while_the_one_before_ran():
    cudart = FakeCudart()
    graphs = StepGraphs(cudart)
    steps(graphs, cudart, 4)
    assert cudart.log == [("enqueue",), ("capture",), ("instantiate", "graph1"),
                          ("launch", "exec of graph1"), ("capture",), ("instantiate", "graph2"),
                          ("launch", "exec of graph2"), ("capture",), ("update", "exec of graph1", "graph3"),
                          ("launch", "exec of graph1"), ("capture",), ("update", "exec of graph2", "graph4")]


def test_a_context_step_drops_the_captured_step():
    cudart = FakeCudart()
    graphs = StepGraphs(cudart)
    steps(graphs, cudart, 2)
    graphs.reset()  # a prefill, or requests joining slots: the host lengths changed out of turn
    cudart.log.clear()
    steps(graphs, cudart, 1)
    assert cudart.log[0] == ("enqueue",)


def test_a_failed_update_instantiates_the_graph_again():
    cudart = FakeCudart(update_fails=True)
    graphs = StepGraphs(cudart)
    steps(graphs, cudart, 3)
    assert ("destroy", "exec of graph1") in cudart.log and ("instantiate", "graph3") in cudart.log
    assert cudart.log[-1] == ("instantiate", "graph3")


def test_an_engine_that_cannot_be_captured_runs_without_graphs():
    cudart = FakeCudart()
    graphs = StepGraphs(cudart)
    enqueued = []

    def enqueue(stream):
        if cudart.capturing:
            raise RuntimeError("plugin synchronises the stream")
        enqueued.append(stream)

    steps(graphs, cudart, 3, enqueue)
    assert enqueued == [7, 7, 7] and not cudart.capturing  # capture mode was left, every step enqueued
    assert "could not be captured" in graphs.disabled and "plugin synchronises" in graphs.disabled
    assert not any(entry[0] == "launch" for entry in cudart.log)


def test_a_cuda_error_is_raised_with_its_code():
    cudart = FakeCudart()
    cudart.cudaGraphLaunch = lambda instance, stream: (Error.cudaErrorStreamCaptureUnsupported,)
    graphs = StepGraphs(cudart)
    steps(graphs, cudart, 1)
    with pytest.raises(RuntimeError, match="cudaErrorStreamCaptureUnsupported"):
        graphs.run(lambda stream: None, stream=7)
