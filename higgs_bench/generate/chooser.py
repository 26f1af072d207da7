"""Each decode step's frame choice and the state it moves on (each row's step, EOS step and RAS window), for
generate() and the serving slots alike. On a GPU it is replayed as one CUDA graph, compiled as well when the
engine is: about 40 small kernels (delay-pattern masks, temperature, top-p, the race draws, RAS, the finished
flags) that would otherwise run one by one after every decode step."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import astuple, replace
from functools import partial

import torch

from higgs_bench.backends.pytorch.precompiled import Precompiled
from higgs_bench.generate.cuda_graph import capture
from higgs_bench.generate.sampling import NO_EOS_YET, SamplingConfig, choose_frame, race_draws
from higgs_bench.model.config import HiggsConfig

MAX_CHOOSERS = 8  # choosers kept (with their CUDA graphs), by (device, rows, compiled, sampling settings)
_choosers: OrderedDict[tuple, FrameChooser] = OrderedDict()
# choices compiled ahead of time for engines that keep them (precompiled_choices), by advance_key: compiled choosers
# of those settings take them rather than compiling through dynamo, also once their choosers are released
_precompiled: dict[tuple, Precompiled] = {}


class FrameChooser:
    """Per row: the step it is at, the step whose frame first held an EOS, its frame limit and (with RAS) its
    last frames. Its own random generator, seeded per request, so that a captured graph draws fresh numbers at
    every replay (the generator is registered with the graph) and the same as an eager run from one seed."""

    def __init__(self, sampling: SamplingConfig, config: HiggsConfig, device: torch.device, rows: int,
                 capture: bool = True, compile: bool = False):
        self.sampling, self.device = sampling, device
        self.mode = choice_mode(device, compile) if capture else "eager"
        self.capture = self.mode != "eager"
        self.bos, self.eos = config.stream_bos_id, config.stream_eos_id
        n = config.num_codebooks
        self.generator = torch.Generator(device)
        self.logits = torch.zeros(rows, n, config.audio_vocab_size, device=device)
        self.steps = torch.zeros(rows, dtype=torch.long, device=device)
        self.eos_step = torch.full((rows,), NO_EOS_YET, dtype=torch.long, device=device)
        self.limits = torch.ones(rows, dtype=torch.long, device=device)
        self.history = (torch.full((rows, sampling.ras_win_len, n), self.eos, dtype=torch.long, device=device)
                        if sampling.uses_ras else None)
        self.graph: torch.cuda.CUDAGraph | None = None
        # Inductor fuses the ~40 small kernels into a few (the random draws stay out); worth its compile time
        # (seconds, once per process) where the engine is compiled too
        self.advance = choice_function(sampling, config)
        if self.mode == "compiled CUDA graph":
            precompiled = _precompiled.get(advance_key(sampling, config, device))
            self.advance = precompiled or torch.compile(self.advance, fullgraph=True)
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def seed(self, seed: int | None) -> None:
        """Seed the draws of the next request(s); None: a seed from torch's global generator (so that
        torch.manual_seed still makes a run reproducible)."""
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ())))

    @torch.inference_mode()  # as every call that writes the state: it may have been made in inference mode
    def start_rows(self, rows, limits, history: torch.Tensor | None) -> None:
        """Rows (an index or a slice) begin a request: step 0, no EOS yet, at most `limits` frames, and its
        prompt's last audio frames as the RAS window (None: an empty window, all EOS)."""
        self.steps[rows] = 0
        self.eos_step[rows] = NO_EOS_YET
        self.limits[rows] = limits
        if self.history is not None:
            self.history[rows] = self.eos if history is None else history

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """advance_rows on these audio logits [B, N, C]."""
        self.logits.copy_(logits)
        if not self.capture:
            return self._advance()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        frame, finished = self.outputs
        return frame.clone(), finished.clone()

    def _advance(self) -> tuple[torch.Tensor, torch.Tensor]:
        races = race_draws(self.sampling, self.logits.shape, self.generator, self.device)
        return self.advance(self.logits, races, self.steps, self.eos_step, self.history, self.limits)

    def _capture(self) -> None:
        """Record one step in a CUDA graph, after a warm-up step whose effects (state, draws) are undone."""
        state = [t for t in (self.steps, self.eos_step, self.history) if t is not None]
        saved, drawn = [t.clone() for t in state], self.generator.get_state()

        def undo():
            for tensor, value in zip(state, saved):
                tensor.copy_(value)
            self.generator.set_state(drawn)

        self.graph, self.outputs = capture(self._advance, self.device, warmups=1, undo=undo, generator=self.generator)


def choice_mode(device: torch.device, compiled: bool) -> str:
    """How frames are chosen on this device, for a backend compiled or not: eager, a CUDA graph, or a compiled
    CUDA graph."""
    if device.type != "cuda":
        return "eager"
    return "compiled CUDA graph" if compiled else "CUDA graph"


def advance_rows(logits, races, steps, eos_step, history, limits, sampling: SamplingConfig, bos: int, eos: int):
    """Every row's next frame [B, N] and whether the row is finished with it [B] (an all-EOS frame, or its
    frame limit reached); moves each row's step, EOS step and RAS window on, in place."""
    frame = choose_frame(logits, steps, eos_step, history, sampling, races, bos, eos)
    first_eos = (frame == eos).any(dim=1) & (eos_step == NO_EOS_YET)
    eos_step.copy_(torch.where(first_eos, steps, eos_step))
    if history is not None:
        history.copy_(torch.cat([history[:, 1:], frame[:, None]], dim=1))
    finished = (frame == eos).all(dim=1) | (steps + 1 >= limits)
    steps += 1
    return frame, finished


def choice_key(sampling: SamplingConfig) -> tuple:
    """What a chooser (and its compiled graph) depends on of the sampling settings: all but the seed."""
    return astuple(replace(sampling, seed=None))


def choice_function(sampling: SamplingConfig, config: HiggsConfig):
    """advance_rows with what it holds constant bound: the function a chooser runs, compiled or not."""
    return partial(advance_rows, sampling=sampling, bos=config.stream_bos_id, eos=config.stream_eos_id)


def advance_key(sampling: SamplingConfig, config: HiggsConfig, device) -> tuple:
    """What a chooser's compiled advance_rows holds constant: the sampling settings but the seed, the stream's
    BOS and EOS, the device."""
    return str(torch.device(device)), choice_key(sampling), config.stream_bos_id, config.stream_eos_id


def precompiled_choices(plans: list[tuple[SamplingConfig, int]], config: HiggsConfig,
                        device: torch.device) -> list[Precompiled]:
    """advance_rows compiled ahead of time (precompiled.py) for the sampling settings of these plans, one function
    each (its compilations, one per row count, are made as the choosers are warmed, or loaded), for an engine to
    keep whole; choosers compiled from now on take them. Functions made before for the same settings are reused."""
    functions = {}
    for sampling, _ in plans if device.type == "cuda" else ():
        key = advance_key(sampling, config, device)
        if key not in _precompiled:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
            name = f"choose-{'greedy' if sampling.greedy else 'sampled'}-{digest}"
            _precompiled[key] = Precompiled(choice_function(sampling, config), name, {})
            for made_before in [k for k in _choosers if k[0] == key and k[2]]:  # compiled through dynamo:
                del _choosers[made_before]  # made again when next asked for, with the function
        functions[key] = _precompiled[key]
    return list(functions.values())


def frame_chooser(sampling: SamplingConfig, config: HiggsConfig, device: torch.device, rows: int,
                  compile: bool) -> FrameChooser:
    """The chooser for these settings, kept across requests so that its CUDA graph is captured once (a capture
    synchronises the device and empties its cache: not something to pay per request). The caller seeds it
    and starts its rows."""
    key = (advance_key(sampling, config, device), rows, compile, config.num_codebooks, config.audio_vocab_size)
    if key in _choosers:
        _choosers.move_to_end(key)
        return _choosers[key]
    if len(_choosers) >= MAX_CHOOSERS:
        _choosers.popitem(last=False)
    _choosers[key] = FrameChooser(sampling, config, torch.device(device), rows, compile=compile)
    return _choosers[key]


def warm_choosers(plans: list[tuple[SamplingConfig, int]], config: HiggsConfig, device: torch.device,
                  compile: bool) -> dict[str, float]:
    """Capture (and compile) now the choosers that requests of these (sampling, rows) will take, so that they do
    not; seconds each, by choice_name. On a CPU frames are chosen eagerly: nothing to prepare."""
    seconds = {}
    for sampling, rows in plans if device.type == "cuda" else ():
        start = time.perf_counter()
        chooser = frame_chooser(sampling, config, device, rows, compile)
        chooser.start_rows(slice(None), 1, None)
        chooser(torch.zeros_like(chooser.logits))
        torch.cuda.synchronize(device)
        seconds[choice_name(sampling, rows)] = time.perf_counter() - start
    return seconds


def choice_name(sampling: SamplingConfig, rows: int) -> str:
    """A chooser's name in the build record: choose-ROWS-greedy or -sampled, with -ignore-eos where it is on."""
    return f"choose-{rows}-{'greedy' if sampling.greedy else 'sampled'}{'-ignore-eos' if sampling.ignore_eos else ''}"


def release_choosers() -> None:
    """Forget the kept choosers (and their CUDA graphs' memory), so that the next request's memory is measured
    alone."""
    _choosers.clear()
