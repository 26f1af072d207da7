"""In-flight batching: requests join free slots between two decode steps and leave the moment they finish.

The same frame choice as generate() (delay pattern, sampling, RAS), per slot: each slot has its own step,
EOS step and history, and the backend keeps each slot's keys and values at its own cache columns. A static
batch is the case where every request arrives at once and there are as many slots as requests. Each decode
step costs one host synchronisation: which slots finished.

Who joins when is the `Admission`: in-flight or static batching, in an open loop (requests come at their
arrival times) or a closed loop of a fixed number of clients.

Backends serve it with three calls besides `step`: `open_slots(slots, positions)`, and
`prefill_slots(slot_ids, prompts)`, which writes the prompts into those slots (forgetting what they held).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from higgs_bench.errors import GenerationError, HiggsBenchError
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.generate.chooser import frame_chooser
from higgs_bench.generate.loop import check_request, initial_history, on_host
from higgs_bench.generate.sampling import NO_EOS_YET, SamplingConfig


@dataclass(frozen=True)
class Request:
    id: str
    prompt: PromptInputs
    max_frames: int
    arrival_s: float = 0.0  # seconds after the start


@dataclass
class Served:
    """One request's outcome: its frames as generate() would give them alone, or why it was refused."""

    id: str
    arrival_s: float
    streams: torch.Tensor | None = None  # [frames, N] delayed frames, on the CPU
    eos_step: int | None = None
    admitted_s: float | None = None  # its prefill done: the queue wait includes the prefill
    frame_s: list[float] = field(default_factory=list)  # when each of its frames was chosen
    finished_s: float | None = None
    slot: int | None = None
    error: str | None = None

    def audio_ready_s(self, num_codebooks: int) -> list[float]:
        """When each audio frame had all its codebooks: the delay pattern's warm-up frames dropped."""
        return self.frame_s[num_codebooks:]


@dataclass
class _Slot:
    request: Request
    served: Served
    frames: list


@dataclass(frozen=True)
class Admission:
    """Who may join, and when. inflight: a free slot takes the next request between two steps; static: requests
    join only when every slot is free (a batch runs until its last request ends). concurrency: a closed loop of
    that many clients, each sending its next request when the previous one has finished (its arrival time is
    then); None: requests arrive at their own arrival_s (an open loop)."""

    batching: str = "inflight"
    concurrency: int | None = None

    def __post_init__(self):
        if self.batching not in BATCHING:
            raise HiggsBenchError(f"batching={self.batching!r}; choose one of {', '.join(BATCHING)}")
        if self.concurrency is not None and self.concurrency < 1:
            raise HiggsBenchError(f"concurrency={self.concurrency} must be >= 1")


BATCHING = ("inflight", "static")


def serve(backend, requests: list[Request], sampling: SamplingConfig, slots: int, clock=time.perf_counter,
          sleep=time.sleep, admission: Admission = Admission(), positions: int | None = None) -> list[Served]:
    """Run the requests through `slots` slots in arrival order; returns one Served per request, in input order.
    Times are seconds after the start. `positions`: the cache positions each slot gets (default: the longest
    request's)."""
    outcomes = {r.id: Served(r.id, r.arrival_s) for r in requests}
    if len(outcomes) != len(requests):
        raise HiggsBenchError("request ids must be unique")
    pending = deque()
    for request in sorted(requests, key=lambda r: r.arrival_s):
        try:
            check_request(backend, [request.prompt], request.max_frames)
            if positions and len(request.prompt) + request.max_frames > positions:
                raise GenerationError(f"the request needs {len(request.prompt) + request.max_frames} positions, "
                                      f"above the slots' {positions}")
            pending.append(request)
        except HiggsBenchError as err:  # refused on its own; the others go on
            outcomes[request.id].error = str(err)
    if pending:
        positions = positions or max(len(r.prompt) + r.max_frames for r in pending)
        _run(backend, pending, outcomes, sampling, slots, positions, clock, sleep, admission)
    return [outcomes[r.id] for r in requests]


def _arrive(pending: deque, queue: deque, busy: int, outcomes: dict, now: float, admission: Admission) -> None:
    """Move the requests that have arrived by `now` from `pending` to `queue`; in a closed loop only while
    fewer than `concurrency` requests are in the system, each arriving now."""
    while pending and pending[0].arrival_s <= now:
        if admission.concurrency is not None:
            if busy + len(queue) >= admission.concurrency:
                return
            outcomes[pending[0].id].arrival_s = now
        queue.append(pending.popleft())


@torch.inference_mode()
def _run(backend, pending: deque, outcomes: dict, sampling: SamplingConfig, slots: int, positions: int, clock,
         sleep, admission: Admission) -> None:
    cfg, device = backend.config, backend.device
    eos, n = cfg.stream_eos_id, cfg.num_codebooks
    backend.open_slots(slots, positions)
    chooser = frame_chooser(sampling, cfg, device, slots, backend.compiled)
    chooser.seed(sampling.seed)
    chooser.start_rows(slice(None), 1, None)  # a free slot steps on, finished at every step
    logits = torch.zeros((slots, n, cfg.audio_vocab_size), device=device)
    occupied: dict[int, _Slot] = {}
    queue = deque()
    start = clock()
    while pending or queue or occupied:
        now = clock() - start
        _arrive(pending, queue, len(occupied), outcomes, now, admission)
        free = [i for i in range(slots) if i not in occupied]
        if admission.batching == "static" and occupied:
            free = []
        joining = []
        while free and queue:
            joining.append((free.pop(0), queue.popleft()))
        if joining:
            rows = [slot for slot, _ in joining]
            prompts = [r.prompt for _, r in joining]
            logits[rows] = backend.prefill_slots(rows, prompts).float()
            chooser.start_rows(torch.tensor(rows, device=device),
                               torch.tensor([r.max_frames for _, r in joining], device=device),
                               initial_history(prompts, sampling, eos, device))
            admitted = clock() - start
            for slot, request in joining:
                served = outcomes[request.id]
                served.admitted_s, served.slot = admitted, slot
                occupied[slot] = _Slot(request, served, [])
        if not occupied:
            sleep(max(0.0, pending[0].arrival_s - now))
            continue
        frame, finished = chooser(logits)
        copy_finished = on_host(finished)
        # every row steps on, finished ones too (as free slots do), queued before the one host synchronisation
        # below so that the GPU never waits for the host; when the last request finishes, that step is wasted
        logits = backend.step(frame).float()
        finished = copy_finished().tolist()
        now = clock() - start
        for slot, state in list(occupied.items()):
            state.frames.append(frame[slot])
            state.served.frame_s.append(now)
            if finished[slot]:
                _finish(state, now, chooser.eos_step[slot])
                del occupied[slot]


def _finish(state: _Slot, now: float, eos_step: torch.Tensor) -> None:
    served = state.served
    served.streams = torch.stack(state.frames).cpu()
    step = int(eos_step)
    served.eos_step = None if step == NO_EOS_YET else step
    served.finished_s = now
