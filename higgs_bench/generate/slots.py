"""In-flight batching: requests join free slots between two decode steps and leave the moment they finish.

The same frame choice as generate() (delay pattern, sampling, RAS), per slot: each slot has its own step,
EOS step and history, and the backend keeps each slot's keys and values at its own cache columns. A static
batch is the case where every request arrives at once and there are as many slots as requests. Each decode
step costs one host synchronisation: which slots finished.

Backends serve it with three calls besides `step`: `open_slots(slots, positions)`, and
`prefill_slots(slot_ids, prompts)`, which writes the prompts into those slots (forgetting what they held).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import torch

from higgs_bench.errors import HiggsBenchError
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.generate.loop import check_request, initial_history, record_frame
from higgs_bench.generate.sampling import NO_EOS_YET, SamplingConfig, choose_frame


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
    admitted_s: float | None = None
    first_frame_s: float | None = None  # the first frame every codebook has reached
    first_chunk_s: float | None = None  # the last frame of the first `chunk_frames` decodable ones
    finished_s: float | None = None
    slot: int | None = None
    error: str | None = None


@dataclass
class _Slot:
    request: Request
    served: Served
    frames: list


def serve(backend, requests: list[Request], sampling: SamplingConfig, slots: int, clock=time.perf_counter,
          sleep=time.sleep, chunk_frames: int = 10) -> list[Served]:
    """Run the requests through `slots` slots in arrival order; returns one Served per request, in input order.
    Times are seconds after the start; `chunk_frames` sets when the first audio chunk is complete."""
    outcomes = {r.id: Served(r.id, r.arrival_s) for r in requests}
    if len(outcomes) != len(requests):
        raise HiggsBenchError("request ids must be unique")
    waiting = deque()
    for request in sorted(requests, key=lambda r: r.arrival_s):
        try:
            check_request(backend, [request.prompt], request.max_frames)
            waiting.append(request)
        except HiggsBenchError as err:  # refused on its own; the others go on
            outcomes[request.id].error = str(err)
    if waiting:
        _run(backend, waiting, outcomes, sampling, slots, clock, sleep, chunk_frames)
    return [outcomes[r.id] for r in requests]


@torch.inference_mode()
def _run(backend, waiting: deque, outcomes: dict, sampling: SamplingConfig, slots: int, clock, sleep,
         chunk_frames: int) -> None:
    cfg, device = backend.config, backend.device
    bos, eos, n = cfg.stream_bos_id, cfg.stream_eos_id, cfg.num_codebooks
    backend.open_slots(slots, max(len(r.prompt) + r.max_frames for r in waiting))
    generator = torch.Generator(device).manual_seed(sampling.seed) if sampling.seed is not None else None
    steps = torch.zeros(slots, dtype=torch.long, device=device)
    eos_step = torch.full((slots,), NO_EOS_YET, dtype=torch.long, device=device)
    limits = torch.ones(slots, dtype=torch.long, device=device)
    history = torch.full((slots, sampling.ras_win_len, n), eos, dtype=torch.long, device=device) \
        if sampling.uses_ras else None
    logits = torch.zeros((slots, n, cfg.audio_vocab_size), device=device)
    occupied: dict[int, _Slot] = {}
    start = clock()
    while waiting or occupied:
        now = clock() - start
        free = [i for i in range(slots) if i not in occupied]
        joining = []
        while free and waiting and waiting[0].arrival_s <= now:
            joining.append((free.pop(0), waiting.popleft()))
        if joining:
            rows = [slot for slot, _ in joining]
            logits[rows] = backend.prefill_slots(rows, [r.prompt for _, r in joining]).float()
            for slot, request in joining:
                served = outcomes[request.id]
                served.admitted_s, served.slot = clock() - start, slot
                occupied[slot] = _Slot(request, served, [])
                steps[slot], eos_step[slot], limits[slot] = 0, NO_EOS_YET, request.max_frames
                if history is not None:
                    history[slot] = initial_history([request.prompt], sampling, eos, device)[0]
        if not occupied:
            sleep(max(0.0, waiting[0].arrival_s - now))
            continue
        frame = choose_frame(logits, steps, eos_step, history, sampling, generator, bos, eos)
        eos_step, history = record_frame(frame, steps, eos_step, history, eos)
        finished = ((frame == eos).all(dim=1) | (steps + 1 >= limits)).tolist()  # the one host synchronisation
        now = clock() - start
        for slot, state in list(occupied.items()):
            state.frames.append(frame[slot])
            if len(state.frames) == n + 1:
                state.served.first_frame_s = now
            if len(state.frames) == n + chunk_frames:
                state.served.first_chunk_s = now
            if finished[slot]:
                _finish(state, now, eos_step[slot])
                del occupied[slot]
        steps += 1
        if occupied:
            logits = backend.step(frame).float()


def _finish(state: _Slot, now: float, eos_step: torch.Tensor) -> None:
    served = state.served
    served.streams = torch.stack(state.frames).cpu()
    step = int(eos_step)
    served.eos_step = None if step == NO_EOS_YET else step
    served.finished_s = now
