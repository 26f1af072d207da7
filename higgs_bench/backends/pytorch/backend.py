"""The PyTorch reference backend: serves the decode loop's Backend interface with HiggsNetwork.

Fast path (backend.compile, on by default on CUDA): the decode step's layers compiled by torch.compile with
fixed shapes, and the whole step replayed as a CUDA graph. One compiled layer serves every layer (they differ
only in their weights, which torch.compile takes as inputs), so a shape compiles several times faster than
the whole step would, at the cost of fusions across layer boundaries (docs/performance.md measures both). Shapes stay fixed
because KV caches come in length buckets (powers of two from 256 up to the engine's max_seq_len): a run
touches a handful of (batch, bucket) shapes, each compiled once, ahead of the timing (`warm`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from higgs_bench.backends.pytorch.engine_weights import kept_network
from higgs_bench.backends.pytorch.network import (HiggsNetwork, Rows, call_layer, call_prefill_layer, fuse_weights,
                                                  place_constants)
from higgs_bench.backends.pytorch.precompiled import AOT_COMPILE, Precompiled
from higgs_bench.backends.pytorch.quantize import quantise
from higgs_bench.errors import ConfigError, GenerationError
from higgs_bench.generate.cuda_graph import capture
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.config import HiggsConfig

MAX_STATES = 8  # KV caches (and CUDA graphs) kept for this many (batch, length) shapes (scenario=standard: 7)
SMALLEST_BUCKET = 256
SMALLEST_PROMPT_BUCKET = 64
RECOMPILE_LIMIT = 64  # each (batch, bucket) shape is one compilation of the decode step's layer
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # the CUDA graph is ours, so no mode that makes one
# Inductor settings of compiled engines on CUDA, by weight kind, ours rather than torchao's (quantize.py keeps
# torchao from setting its own process-wide, which would change every variant compiled after a quantised one in
# a sweep). Measured on an H200 at the 3B shape (docs/performance.md): weight-only int8 needs coordinate-descent
# tuning, which makes each batch-1 product a tuned Triton reduction (one 3072x16384 product: 242 us without,
# 19 us with), searching all directions (batch-1 step 1.87 against 2.34 ms, for a build of 68 s against 36 s),
# and pattern matching off, which would rewrite a batched product into torch's _weight_int8pack_mm (7.3 ms at
# 64 rows, where conversion + cuBLAS take 72 us). fp8's one-row products (quantised_linears.Float8Linear) need the same
# tuning (batch-1 step 1.92 against 2.36 ms without all directions, for a build of 140 s against 31 s). For bf16
# it made the step slower (batch 1: 2.75 against 2.50 ms), so bf16 keeps Inductor's defaults.
TUNED_REDUCTIONS = {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True}
# Kernels that Inductor's static CUDA launcher loads from its cache are tuned again at every start in torch <= 2.11
# (pytorch/pytorch#172819); loaded the usual way they take the tuned config from the cache (H200, int8 one-row
# shape: a second start on one machine 2.9 s against 10.2 s). Launch cost does not matter under our CUDA graphs.
if hasattr(torch._inductor.config, "use_static_cuda_launcher"):
    TUNED_REDUCTIONS["use_static_cuda_launcher"] = False
# A reduction's tuned config read back from the cache gets a second launcher with half its R0_BLOCK when it holds
# many registers, and two launchers are autotuned again, coordinate descent included (pytorch/pytorch#181292,
# fixed after torch 2.11). That is the signature of the one kernel an H200 fp8 start tuned again (32 s: one
# benchmark_all_configs, one coordinate descent). Coordinate descent searches R0_BLOCK itself, so the halving is off.
TUNED_REDUCTIONS["dynamic_scale_rblock"] = False
# Tuned shapes compile their kernels in the process, cold builds too, so that a variant builds alike alone and
# in a sweep. Inductor's compile workers send each kernel back pickled, which drops Inductor's mark on a config
# that coordinate descent found (engine.WARM_START_INDUCTOR), and a process uses them once their pool is up: a
# lone build compiles its first shapes itself, a sweep's later variants all in the workers. In an H200 sweep
# fp8's and int8's one-row frames came out at 3.06 and 2.43 ms, int8 tuning 87 kernels where lone builds tuned
# 76, against a 2.20 ms step for fp8 built alone (docs/performance.md, seventh session); whether this setting
# restores them is not yet measured. Inductor leaves compile_threads out of its cache key.
IN_PROCESS_COMPILE = {"compile_threads": 1}
TUNED_REDUCTIONS |= IN_PROCESS_COMPILE
# By the shapes they compile: the one-row decode step, and every other (more rows, prefills). fp8 tunes its one-row
# step only: with more rows its products are torchao's _scaled_mm, and tuning the kernels around them cost 35-74 s
# per shape of scenario=standard for frames no faster (H200: 4 rows 2.97 ms tuned, 2.74 ms not). So does int8: its
# products of up to 64 rows are one_byte_rows.py's kernel on CUDA, and what is left to tune made its decode steps no
# faster (H200, 3B shape, 4/16/64 rows: 2.52/2.59/5.89 ms tuned, 2.50/2.53/5.79 ms not) for a build 3x as long (51
# against 17 s for the three shapes). Its products of more rows (prefills) stay torchao's conversion + cuBLAS, with
# Inductor's pattern for them off (it would call torch's _weight_int8pack_mm: 7.3 ms at 64 rows, where conversion +
# cuBLAS take 72 us). Where the mode autotunes GEMMs they become Triton GEMM templates that convert the weights as
# they load them (H200, 4 rows: 20 against 70 us for gate/up), with cuBLAS left out of the choice, because the
# autotuner times each candidate without the conversion and would pick cuBLAS.
INT8_GEMMS_AS_TEMPLATES = {"max_autotune_gemm_backends": "TRITON"}
INT8_OPTIONS = TUNED_REDUCTIONS | {"pattern_matcher": False}
INT8_ROWS_OPTIONS = {"pattern_matcher": False}
# int4's one-row decode step, compiled (backend.one_row_kernels=false), where int4_one_row.py's kernel runs
# (int4_one_row.runs_on): Inductor's kernels launched with PDL, so that the product kernel's loading warp starts on
# its weights while the kernel before it ends. H200, 3B shape: 1.63 ms against 1.72 with tinygemm, 1.74 with the
# kernel without PDL; tinygemm with PDL 1.76 (docs/performance.md, twenty-fifth session). By default the step runs
# one_row.py's layers instead: 1.11 ms (twenty-sixth session).
INT4_ONE_ROW_OPTIONS = {"triton.enable_pdl": True}
UNQUANTISED = "unquantised"  # the weight kind of bf16, fp16 and fp32 engines in CUDA_INDUCTOR_OPTIONS
CUDA_INDUCTOR_OPTIONS = {
    "one_row": {"int8": INT8_OPTIONS, "fp8": TUNED_REDUCTIONS},
    "rows": {"int8": INT8_ROWS_OPTIONS},
}


def override_inductor_options(overrides: dict[str, dict]) -> None:
    """An experiment's settings, {weight kind: {option: value}}, over ours for every compiled shape."""
    for kinds in CUDA_INDUCTOR_OPTIONS.values():
        for kind, options in overrides.items():
            kinds[kind] = kinds.get(kind, {}) | options


@dataclass(frozen=True)
class Speed:
    """How the decode step runs: CUDA graph replay, torch.compile mode (None: eager), the KV-cache length
    limit that sets the buckets (None: each request's exact length, no buckets), whether a step of one row
    runs its layers as one_row.py's kernels (16-bit, int8 or fp8 weights; int4 from Hopper on), and whether
    compiled functions are compiled ahead of time where they can be (precompiled.py)."""

    cuda_graph: bool = False
    compile_mode: str | None = None
    max_seq_len: int | None = None
    one_row_kernels: bool = False
    precompile: bool = True


def one_row_kernels_run(dtype: torch.dtype, quantised: str | None, device: torch.device) -> bool:
    """Whether one_row.py's kernels run an engine of this activation dtype and weight kind on this device: 16-bit
    activations with 16-bit, int8 or fp8 weights; bf16 with int4 weights where int4_one_row.py's kernel runs."""
    if quantised == "int4":
        from higgs_bench.backends.pytorch import int4_one_row  # Gluon: int4 engines only

        return dtype == torch.bfloat16 and int4_one_row.runs_on(device)
    return dtype in (torch.bfloat16, torch.float16) and quantised in (None, "int8", "fp8")


def compile_options(mode: str, quantised: str | None, device: torch.device, one_row: bool = False) -> dict:
    """Inductor options of a compile mode, with ours on top (those of the one-row decode step, or of the rest)."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"backend.compile_mode={mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    options = dict(torch._inductor.list_mode_options(mode))
    if device.type == "cuda":
        options |= CUDA_INDUCTOR_OPTIONS["one_row" if one_row else "rows"].get(quantised or UNQUANTISED, {})
        if quantised == "int8" and not one_row and (options.get("max_autotune") or options.get("max_autotune_gemm")):
            options |= INT8_GEMMS_AS_TEMPLATES
        if quantised == "int4" and one_row:
            from higgs_bench.backends.pytorch import int4_one_row  # Gluon and the custom op: int4 engines only

            if int4_one_row.runs_on(device):
                options |= INT4_ONE_ROW_OPTIONS
    return options


def compiled_function(fn: Callable, name: str, options: dict, ahead_of_time: bool) -> Callable:
    """fn compiled for fixed shapes: ahead of time, to be kept in the engine folder (precompiled.py), or by dynamo."""
    if ahead_of_time:
        return Precompiled(fn, name, options)
    return torch.compile(fn, dynamic=False, options=options)


def text_only(audio_mask: torch.Tensor) -> bool:
    """The routing of a prompt without audio positions: every layer runs its text weights alone."""
    return False


def prompt_bucket(width: int) -> int:
    """The width a lone prompt is left-padded to for the captured prefill: a power of two from 64."""
    bucket = SMALLEST_PROMPT_BUCKET
    while bucket < width:
        bucket *= 2
    return bucket


def prefill_key(prompt: PromptInputs) -> tuple[int, bool]:
    """The captured prefill a lone prompt takes: its width bucket, and whether it holds audio."""
    return prompt_bucket(len(prompt)), bool(prompt.audio_mask.any())


def cache_length(total: int, max_seq_len: int | None) -> int:
    """Cache columns for a request of `total` positions: the smallest power-of-two bucket from 256 that holds
    it, capped at max_seq_len (exact when there is no limit)."""
    if max_seq_len is None:
        return total
    bucket = SMALLEST_BUCKET
    while bucket < total:
        bucket *= 2
    return min(bucket, max_seq_len)


def mark_columns(column: torch.Tensor, key_valid: torch.Tensor, key_audio: torch.Tensor) -> torch.Tensor:
    """Each row's cache column for this step (a free slot's clamped to the cache), marked valid and audio."""
    rows = torch.arange(column.shape[0], device=column.device)
    columns = column.clamp(max=key_valid.shape[1] - 1)
    marked = torch.ones_like(columns, dtype=torch.bool)  # on the device: a host True cannot be captured
    key_valid[rows, columns] = marked
    key_audio[rows, columns] = marked
    return columns


def step_logits(network: HiggsNetwork, hidden: torch.Tensor, column: torch.Tensor,
                next_position: torch.Tensor) -> torch.Tensor:
    """A decode step's end: each row moves on a column and a position; the audio logits of its last state."""
    column += 1
    next_position += 1
    return network.audio_logits(hidden[:, -1])


def one_row_inputs(network: HiggsNetwork, frame: torch.Tensor, column: torch.Tensor, key_valid: torch.Tensor,
                   key_audio: torch.Tensor, next_position: torch.Tensor):
    """A one-row step's work before one_row.py's layers: its column marked, the frame embedded, RoPE at its
    position -> h [1, 1, H], cos, sin, columns [1]."""
    columns = mark_columns(column, key_valid, key_audio)
    h = network.embed_audio(frame)[:, None]
    cos, sin = network.rope(next_position[:, None], h.dtype)
    return h, cos, sin, columns


def one_row_logits(network: HiggsNetwork, hidden: torch.Tensor, column: torch.Tensor,
                   next_position: torch.Tensor) -> torch.Tensor:
    """A one-row step's work after one_row.py's layers: the final norm, then step_logits."""
    return step_logits(network, network.norm(hidden), column, next_position)


@dataclass
class DecodeState:
    """Everything a decode step touches, allocated once per (batch, cache length) and reused, so that a
    captured CUDA graph stays valid across generate() calls of the same shape."""

    caches: list[tuple[torch.Tensor, torch.Tensor]]
    key_valid: torch.Tensor  # [B, total] cache columns that hold a real position
    key_audio: torch.Tensor  # [B, total] ... that hold an audio frame
    next_position: torch.Tensor  # [B] RoPE position of each row's next frame
    column: torch.Tensor  # [B] the cache column each row's next frame goes to
    frame: torch.Tensor  # [B, N] input buffer of the captured step
    graph: torch.cuda.CUDAGraph | None = None
    logits: torch.Tensor | None = None


@dataclass
class PrefillGraph:
    """A captured prefill of one prompt left-padded to a fixed width: host-bound as eager (about 1500 kernel
    launches, 30-40 ms of host time against 6 ms of GPU work for a 60-position prompt at the 3B shape on an
    H200), one replay when captured, and its layers compiled when the engine is. A prompt with audio (a voice
    to clone) runs both MLPs on every position (Rows.selected), so no shape depends on where its audio is; a
    text-only prompt runs the text MLP alone."""

    inputs: tuple[torch.Tensor, ...]  # token ids, audio codes, audio mask, valid mask [1, width]
    state: DecodeState
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor


def checkpoint_network(config: HiggsConfig, weights: dict[str, torch.Tensor], device: torch.device,
                       dtype: torch.dtype, quantised: str | None) -> HiggsNetwork:
    """The network of a checkpoint's weights on `device` in `dtype`, its linears quantised where asked."""
    with torch.device("meta"):
        network = HiggsNetwork(config)
    moved = {name: tensor.to(device=device, dtype=dtype) for name, tensor in fuse_weights(weights).items()}
    network.load_state_dict(moved, strict=True, assign=True)
    network = place_constants(network, config, device).eval()
    if quantised:
        quantise(network, config, quantised, device)
    return network


class TorchBackend:
    def __init__(self, config: HiggsConfig, weights: dict[str, torch.Tensor], device="cpu", dtype=torch.float32,
                 cuda_graph: bool = False, quantised: str | None = None, speed: Speed | None = None,
                 kept: bool = False):
        """quantised: None, or int8 / int4 / fp8 for the linears quantise.py names (torchao). kept: `weights` are
        an engine's kept weights (engine_weights.py), already quantised and on `device`, else a checkpoint's."""
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        self.speed = speed or Speed(cuda_graph=cuda_graph)
        self.cuda_graph = self.speed.cuda_graph and self.device.type == "cuda"
        self.compiled = self.speed.compile_mode is not None
        self.quantised = quantised
        if kept:
            self.network = kept_network(config, weights, self.device, quantised).eval()
        else:
            self.network = checkpoint_network(config, weights, self.device, dtype, quantised)
        self.one_row = self._one_row_layers(quantised)
        self.one_row_ends = (one_row_inputs, one_row_logits)
        self.kernel_cache = None  # kernel_cache.KernelCache of the kernels it launches itself (keep_kernels_in)
        self.states: dict[tuple[int, int], DecodeState] = {}
        self.prefill_graphs: dict[tuple[int, bool], PrefillGraph] = {}  # by (width, has audio)
        self.state: DecodeState | None = None
        self.decode_layers: dict[bool, Callable] = {}  # compiled, by whether the step has one row
        self.prefill_layer = None
        self.choices: list[Precompiled] = []  # the frame choosers' functions compiled ahead of time, kept with it
        if self.speed.compile_mode:
            logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's notes, seen by inductor
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            compiled = partial(compiled_function, ahead_of_time=self.speed.precompile and AOT_COMPILE)
            self.decode_layers = {one_row: compiled(call_layer, "decode-one-row" if one_row else "decode-rows",
                                                    compile_options(self.speed.compile_mode, quantised, self.device,
                                                                    one_row)) for one_row in (True, False)}
            # a prefill's products have tens to hundreds of rows, which cuBLAS serves well: fusing the rest is the
            # gain, and autotuning every width bucket would cost minutes each
            self.prefill_layer = compiled(call_prefill_layer, "prefill",
                                          compile_options("default", quantised, self.device))
            # about 20 small kernels in eager (76 us of a 1.82 ms one-row step on an H200, docs/performance.md)
            self.one_row_ends = tuple(compiled(end, end.__name__, compile_options("default", None, self.device))
                                      for end in self.one_row_ends)

    def precompiled(self) -> list[Precompiled]:
        """The functions this engine compiled ahead of time (none without backend.precompile or AOT_COMPILE), with
        the frame choices its start warms where they are (`choices`, set by engine.load_engine)."""
        functions = [*self.decode_layers.values(), self.prefill_layer, *self.one_row_ends, *self.choices]
        return [function for function in functions if isinstance(function, Precompiled)]

    def keep_kernels_in(self, kernels) -> None:
        """Have Triton compile the kernels this engine launches outside its compiled functions into the folder of
        `kernels` (kernel_cache.KernelCache), and load them from there: one_row.py's, and the rows kernels of an
        eager prefill (several prompts), which otherwise went to whichever Triton cache the process had set up (a
        start after its build on an H200 compiled int8's two again)."""
        self.kernel_cache = kernels
        if self.one_row is not None:
            self.one_row.kernel_cache = kernels

    def _one_row_layers(self, quantised: str | None):
        """one_row.py's layers for steps of one row, when the speed settings ask for them."""
        if not self.speed.one_row_kernels:
            return None
        if not one_row_kernels_run(self.dtype, quantised, self.device):
            raise ConfigError("backend.one_row_kernels runs 16-bit activations with 16-bit, int8 or fp8 weights "
                              "(precision=bf16, fp16, int8 or fp8), and bf16 with int4 weights from Hopper on "
                              f"(Triton >= 3.6); this engine has {quantised or self.dtype} on {self.device}")
        from higgs_bench.backends.pytorch.one_row import OneRowLayers  # imports Triton

        return OneRowLayers(self.network, self.config)

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path, device="cpu", dtype=torch.float32, cuda_graph=False,
                        quantised: str | None = None, speed: Speed | None = None):
        """Weights are read straight onto `device` and fused there, one group at a time."""
        checkpoint = load_checkpoint(model_dir, dtype=dtype, device=device)
        weights = fuse_weights(checkpoint.weights, in_place=True)
        return cls(checkpoint.config, weights, device, dtype, cuda_graph, quantised, speed)

    @property
    def max_positions(self) -> int:
        limit = self.speed.max_seq_len
        return min(self.config.max_position_embeddings, limit) if limit else self.config.max_position_embeddings

    def release(self) -> None:
        self.states.clear()
        self.prefill_graphs.clear()
        self.state = None

    def kv_cache_bytes(self) -> int:
        return sum(t.nbytes for state in self.states.values() for pair in state.caches for t in pair)

    @torch.inference_mode()
    def warm(self, shapes: list[tuple[int, int]]) -> None:
        """Compile (and capture) the decode step for each (batch, positions) shape a run will use, so that no
        timed step ever compiles."""
        for batch, total in shapes:
            state = self._state(batch, cache_length(total, self.speed.max_seq_len))
            if self.cuda_graph and state.graph is None:
                self._capture(state)
            elif not self.cuda_graph:
                restore = self._snapshot(state)
                self.decode_step(state, state.frame)
                restore()

    @torch.inference_mode()
    def warm_prefills(self, keys: list[tuple[int, bool]]) -> None:
        """Capture (and compile) the prefill of each (width bucket, has audio) that the run's lone prompts take
        (prefill_key), so that the build keeps its compilation and no request waits for one."""
        for width, audio in keys:
            if self.cuda_graph and width <= self.max_positions and (width, audio) not in self.prefill_graphs:
                self._capture_prefill(width, audio)

    @torch.inference_mode()
    def prefill(self, prompts: list[PromptInputs], max_new_frames: int) -> torch.Tensor:
        """Left-pad the prompts to one length, run them, and reserve cache columns for the frames to come."""
        width = max(len(p) for p in prompts)
        self._check_positions(width + max_new_frames)
        state = self.state = self._state(len(prompts), cache_length(width + max_new_frames, self.speed.max_seq_len))
        if len(prompts) == 1 and self._captures_prefill(prompts, state):
            self._clear(state)
            logits = self.prefill_slots([0], prompts)
        else:
            logits = self._prefill_into(state, prompts)
        if self.cuda_graph and state.graph is None:
            self._capture(state)
        return logits

    @torch.inference_mode()
    def open_slots(self, slots: int, positions: int) -> None:
        """A decode state of `slots` rows, each for requests of up to `positions` positions, all free. Requests
        join with prefill_slots and leave by being ignored; `step` runs every row."""
        self._check_positions(positions)
        state = self.state = self._state(slots, cache_length(positions, self.speed.max_seq_len))
        self._clear(state)
        if self.cuda_graph and state.graph is None:
            self._capture(state)

    @staticmethod
    def _clear(state: DecodeState) -> None:
        for tensor in (state.key_valid, state.key_audio, state.next_position, state.column):
            tensor.zero_()

    @torch.inference_mode()
    def prefill_slots(self, slots: list[int], prompts: list[PromptInputs]) -> torch.Tensor:
        """Run the prompts as a batch of their own (with CUDA graphs: each alone, a captured prefill, see
        PrefillGraph), then place their keys and values into rows `slots` of the open state, each prompt from
        column 0 (its left padding dropped: keys carry their RoPE position, not their column), so that a request
        needs only its own positions; whatever those rows held before is forgotten. Returns their logits."""
        state, longest = self.state, max(len(p) for p in prompts)
        if longest >= state.key_valid.shape[1]:
            raise GenerationError(f"a prompt of {longest} positions does not fit the open slots' "
                                  f"{state.key_valid.shape[1]} cache columns")
        if self._captures_prefill(prompts, state):  # one replay per prompt: no shape depends on who joins
            logits = []
            for slot, prompt in zip(slots, prompts):
                alone, prompt_logits = self._captured_prefill(prompt)
                self._place(state, [slot], alone, [len(prompt)])
                logits.append(prompt_logits)
            return torch.cat(logits)
        alone = self._new_state(len(prompts), longest)
        logits = self._prefill_into(alone, prompts)
        self._place(state, slots, alone, [len(p) for p in prompts])
        return logits

    def _place(self, state: DecodeState, slots: list[int], alone: DecodeState, lengths: list[int]) -> None:
        """Rows `slots` of `state` take the left-padded prompts of `alone`, moved to start at column 0."""
        width, longest = alone.key_valid.shape[1], max(lengths)
        lengths = torch.tensor(lengths, device=self.device)
        source = torch.arange(longest, device=self.device) + (width - lengths)[:, None]
        source = source.clamp(max=width - 1)
        rows = torch.tensor(slots, device=self.device)
        _, heads, _, head_dim = alone.caches[0][0].shape  # every layer's keys and values have this shape
        index = source[:, None, :, None].expand(-1, heads, -1, head_dim)
        for pair, new_pair in zip(state.caches, alone.caches):
            for cache, new in zip(pair, new_pair):
                cache[rows, :, :longest] = new.gather(2, index)
        in_prompt = torch.arange(longest, device=self.device) < lengths[:, None]
        for mine, theirs in ((state.key_valid, alone.key_valid), (state.key_audio, alone.key_audio)):
            mine[rows] = False
            mine[rows, :longest] = theirs.gather(1, source) & in_prompt
        state.next_position[rows], state.column[rows] = alone.next_position, lengths

    def _captures_prefill(self, prompts: list[PromptInputs], state: DecodeState) -> bool:
        """Whether these prompts take the captured prefill, one by one: CUDA graphs on, and buckets that the
        state can hold. Eager prefill of several prompts at once builds a cuDNN attention plan for every new
        (prompts, width) shape: 70-700 ms each on an H200 at the 3B shape."""
        bucket = prompt_bucket(max(len(p) for p in prompts))
        return self.cuda_graph and bucket <= min(state.key_valid.shape[1], self.max_positions)

    def _captured_prefill(self, prompt: PromptInputs) -> tuple[DecodeState, torch.Tensor]:
        width, audio = prefill_key(prompt)
        captured = self.prefill_graphs.get((width, audio)) or self._capture_prefill(width, audio)
        for buffer, value in zip(captured.inputs, self._prompt_tensors([prompt], width, self.device)):
            buffer.copy_(value)
        captured.graph.replay()
        return captured.state, captured.logits.clone()

    def _capture_prefill(self, width: int, audio: bool) -> PrefillGraph:
        state = self._new_state(1, width)
        inputs = tuple(t.to(self.device) for t in self._prompt_tensors([], width, "cpu", batch=1))
        inputs[3].fill_(True)  # warm-up rows see valid positions
        routing = Rows.selected if audio else text_only

        def run():
            return self._run_prefill(state, *inputs, routing=routing, run_layer=self.prefill_layer)

        graph, logits = capture(run, self.device, warmups=2)  # a prefill overwrites all it writes: nothing to undo
        self.prefill_graphs[width, audio] = PrefillGraph(inputs, state, graph, logits)
        return self.prefill_graphs[width, audio]

    def _check_positions(self, positions: int) -> None:
        if positions > self.max_positions:
            raise GenerationError(f"{positions} positions exceed this engine's {self.max_positions}; "
                                  "raise engine.max_seq_len")

    def _prefill_into(self, state: DecodeState, prompts: list[PromptInputs]) -> torch.Tensor:
        """The prompts left-padded to one width, written into `state` from column 0; logits at their ends."""
        width = max(len(p) for p in prompts)
        with self.kernel_cache.in_use() if self.kernel_cache else nullcontext():
            return self._run_prefill(state, *self._prompt_tensors(prompts, width, self.device))

    def _prompt_tensors(self, prompts: list[PromptInputs], width: int, device, batch: int | None = None):
        """Token ids, audio codes, audio mask and valid mask [B, width] of the prompts, left-padded."""
        cfg, batch = self.config, batch or len(prompts)
        ids = torch.full((batch, width), cfg.pad_token_id, dtype=torch.long)
        codes = torch.zeros((batch, width, cfg.num_codebooks), dtype=torch.long)
        audio = torch.zeros((batch, width), dtype=torch.bool)
        valid = torch.zeros((batch, width), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            pad = width - len(prompt)
            ids[row, pad:], codes[row, pad:], audio[row, pad:] = prompt.token_ids, prompt.audio_codes, prompt.audio_mask
            valid[row, pad:] = True
        return ids.to(device), codes.to(device), audio.to(device), valid.to(device)

    def _run_prefill(self, state: DecodeState, ids, codes, audio, valid, routing=Rows.of,
                     run_layer=None) -> torch.Tensor:
        """Write the prompt tensors' keys and values into `state` from column 0; logits at the last column."""
        width = ids.shape[1]
        state.key_valid.zero_()
        state.key_audio.zero_()
        state.key_valid[:, :width], state.key_audio[:, :width] = valid, audio
        state.next_position.copy_(valid.sum(dim=1))
        state.column.fill_(width)

        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        h = self.network.embed(ids, codes, audio)
        columns = torch.arange(width, device=self.device)
        hidden = self.network(h, routing(audio), positions, state.caches, columns, *self._prefill_masks(state, width),
                              run_layer=run_layer)
        return self.network.audio_logits(hidden[:, -1])

    @torch.inference_mode()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        state = self.state
        state.frame.copy_(frame)  # one input buffer, so that compiled and captured steps see the same tensor
        if state.graph is None:
            return self.decode_step(state, state.frame)
        state.graph.replay()
        return state.logits.clone()

    def decode_step(self, state: DecodeState, frame: torch.Tensor) -> torch.Tensor:
        """One audio frame per row, each at its own cache column. Fixed shapes: attention spans the whole cache,
        masked to each row's valid columns. A free slot's column is clamped to the cache (its writes are
        forgotten when a request joins it)."""
        if self.one_row is not None and frame.shape[0] == 1:
            return self._one_row_step(state, frame)
        columns = mark_columns(state.column, state.key_valid, state.key_audio)
        h = self.network.embed_audio(frame)[:, None]
        mask = state.key_valid[:, None, None, :]
        hidden = self.network(h, True, state.next_position[:, None], state.caches, columns[:, None], mask, mask,
                              run_layer=self.decode_layers.get(frame.shape[0] == 1))
        return step_logits(self.network, hidden, state.column, state.next_position)

    def _one_row_step(self, state: DecodeState, frame: torch.Tensor) -> torch.Tensor:
        """decode_step of one row through one_row.py's layers; the work before and after them compiled when the
        engine is."""
        inputs, logits = self.one_row_ends
        h, cos, sin, columns = inputs(self.network, frame, state.column, state.key_valid, state.key_audio,
                                      state.next_position)
        hidden = self.one_row.run(h, cos, sin, columns, state.caches, state.key_valid[:, None, None, :])
        return logits(self.network, hidden, state.column, state.next_position)

    def _capture(self, state: DecodeState) -> None:
        """Record the decode step in a CUDA graph (after two warm-up steps whose effects are undone)."""
        state.graph, state.logits = capture(lambda: self.decode_step(state, state.frame), self.device, warmups=2,
                                            undo=self._snapshot(state))

    @staticmethod
    def _snapshot(state: DecodeState):
        """A function that puts the state's bookkeeping back as it is now (a trial step moves it on)."""
        tensors = (state.key_valid, state.key_audio, state.next_position, state.column)
        saved = [t.clone() for t in tensors]

        def restore():
            for tensor, value in zip(tensors, saved):
                tensor.copy_(value)

        return restore

    def _state(self, batch: int, total: int) -> DecodeState:
        key = (batch, total)
        if key not in self.states and len(self.states) >= MAX_STATES:
            self.states.pop(next(iter(self.states)))  # the oldest shape's cache and graph
        if key not in self.states:
            self.states[key] = self._new_state(batch, total)
        return self.states[key]

    def _new_state(self, batch: int, total: int) -> DecodeState:
        cfg, dev = self.config, self.device
        shape = (batch, cfg.num_kv_heads, total, cfg.head_dim)
        return DecodeState(
            caches=[(torch.zeros(shape, dtype=self.dtype, device=dev), torch.zeros(shape, dtype=self.dtype, device=dev))
                    for _ in range(cfg.num_layers)],
            key_valid=torch.zeros((batch, total), dtype=torch.bool, device=dev),
            key_audio=torch.zeros((batch, total), dtype=torch.bool, device=dev),
            next_position=torch.zeros(batch, dtype=torch.long, device=dev),
            column=torch.zeros(batch, dtype=torch.long, device=dev),
            frame=torch.zeros((batch, cfg.num_codebooks), dtype=torch.long, device=dev),
        )

    @staticmethod
    def _prefill_masks(state: DecodeState, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks [B, 1, width, width]: causal over valid keys, and the same without audio keys (for
        fast-forward layers). A query always sees itself, so padded rows never go all-masked."""
        cols = torch.arange(width, device=state.key_valid.device)
        valid = state.key_valid[:, None, :width] & (cols <= cols[:, None])
        itself = cols == cols[:, None]
        text_only = (valid & ~state.key_audio[:, None, :width]) | itself
        return (valid | itself)[:, None], text_only[:, None]
