"""A built Higgs engine serving the decode loop's Backend interface (generate/backend.py), so the delay
pattern, sampling, RAS and stopping are the same code as for the torch backend.

Static batches: `prefill` packs the prompts into one context step over a contiguous KV cache sized for this
batch; each `step` feeds every row one audio frame. In-flight batching (generate/slots.py): `open_slots` and
`prefill_slots`, whose rows then go on at their own lengths, which the gpt-attention plugin takes per row. Run the way TensorRT-LLM's own Python runtime runs an
engine (`_Runtime` and `GenerationSession` in tensorrt_llm/runtime/generation.py @ b35ac1b, 1.2.0rc2):
- one device-memory buffer of `device_memory_size_v2` bytes shared by the execution contexts of every
  optimisation profile (`create_execution_context_without_device_memory` + `set_device_memory`);
- the KV caches and the step's inputs allocated once per (batch, cache length) shape and reused by every
  request of that shape (a cache is not cleared: the plugin reads each row only up to its length);
- device inputs updated in place, host inputs in pinned memory (feed.StepFeed).
Enqueueing is `set_input_shape` + `set_tensor_address` + `execute_async_v3`, what `Session.run` does
(tensorrt_llm/runtime/session.py); Session itself is not used because it gives its default context memory of
its own;
- with `cuda_graph` (backend.cuda_graph), each generation step after the first replays a CUDA graph captured
  while the step before ran, as GenerationSession does with cuda_graph_mode (step_graph.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from higgs_bench.backends.trtllm import require_tensorrt_llm
from higgs_bench.backends.trtllm.engine import read_engine_record
from higgs_bench.backends.trtllm.step_graph import StepGraphs, load_cudart
from higgs_bench.backends.trtllm.feed import (EngineLimits, StepFeed, check_kv_budget, check_engine_limits, context_inputs,
                                              kv_cache_bytes_per_position)
from higgs_bench.errors import GenerationError
from higgs_bench.generate.inputs import PromptInputs


class TrtllmBackend:
    def __init__(self, engine_dir: str | Path, device="cuda", cuda_graph: bool = True):
        require_tensorrt_llm()
        import tensorrt as trt
        from tensorrt_llm._utils import trt_dtype_to_torch
        from tensorrt_llm.logger import logger

        record = read_engine_record(engine_dir)
        self.config, self.device = record["model"], torch.device(device)
        self.compiled = True  # a built engine
        self.limits = EngineLimits.from_build_config(record["build"])
        self.kv_limits = record["kv_limits"]
        self.runtime = trt.Runtime(logger.trt_logger)
        self.engine = self.runtime.deserialize_cuda_engine((Path(engine_dir) / "engine" / "rank0.engine").read_bytes())
        if self.engine is None:
            raise GenerationError(f"TensorRT could not load {engine_dir}/engine/rank0.engine (see its log above); "
                                  "rebuild it with python -m higgs_bench backend=trtllm")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = {n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.kv_dtype = trt_dtype_to_torch(self.engine.get_tensor_dtype("past_key_value_0"))
        # the largest profile's activation memory, shared by every profile's context
        self.memory = torch.empty(self.engine.device_memory_size_v2, dtype=torch.uint8, device=self.device)
        self.contexts = {}
        self.stream = torch.cuda.current_stream(self.device)
        self.shape, self.caches, self.feed, self.step_logits = None, [], None, None
        self.graphs = StepGraphs(load_cudart()) if cuda_graph else None

    @property
    def max_positions(self) -> int:
        return self.limits.max_seq_len

    def prefill(self, prompts: list[PromptInputs], max_new_frames: int) -> torch.Tensor:
        check_engine_limits(self.limits, prompts, max_new_frames)
        self._allocate(len(prompts), max(len(p) for p in prompts) + max_new_frames)
        feed = context_inputs(prompts)
        logits = self._run(self._on_device(feed) | self.feed.constants)
        self.feed.start(feed["context_lengths"])
        self._reset_graph()
        return logits

    def open_slots(self, slots: int, positions: int) -> None:
        """Caches for `slots` rows of up to `positions` positions each, all free (in-flight batching)."""
        if slots > self.limits.max_batch_size or positions > self.limits.max_seq_len:
            raise GenerationError(f"{slots} slots of {positions} positions exceed this engine's max_batch_size="
                                  f"{self.limits.max_batch_size} or max_seq_len={self.limits.max_seq_len}")
        self._allocate(slots, positions)
        self.feed.start(torch.zeros(slots, dtype=torch.int32))
        self._reset_graph()

    def prefill_slots(self, slots: list[int], prompts: list[PromptInputs]) -> torch.Tensor:
        """A context step of the joining prompts over caches of their own, whose rows then replace those of the
        slots (the plugin reads each row only up to its length, so nothing of a previous occupant is seen)."""
        check_engine_limits(self.limits, prompts, 0)
        cfg, cache_len = self.config, self.shape[1]
        caches = [torch.empty((len(prompts), 2, cfg.num_kv_heads, cache_len, cfg.head_dim), dtype=self.kv_dtype,
                              device=self.device) for _ in range(cfg.num_layers)]
        constants = StepFeed(len(prompts), cache_len, cfg.num_layers, cfg.audio_out_token_id, self.device).constants
        feed = context_inputs(prompts)
        logits = self._run(self._on_device(feed) | constants, caches)
        rows = torch.tensor(slots, device=self.device)
        for cache, joined in zip(self.caches, caches):
            cache[rows] = joined
        self.feed.start_rows(slots, feed["context_lengths"])
        self._reset_graph()
        return logits

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        self.feed.set_frame(frame)
        if self.graphs is None:
            self._run_step()
        else:
            self.graphs.run(self._run_step, self.stream.cuda_stream)
        self.feed.advance()
        if self.graphs is not None:
            self.graphs.capture_next(self._run_step, self.stream.cuda_stream)
        cfg = self.config
        return self.step_logits.view(-1, cfg.num_codebooks, cfg.audio_vocab_size).clone()

    def _run_step(self, _stream=None) -> None:
        """Enqueue the generation step with the feed's inputs as they are now, into the fixed logits buffer (a
        captured step must find every tensor at the address it was captured with)."""
        self._run(self.feed.bindings(), logits=self.step_logits)

    def _reset_graph(self) -> None:
        if self.graphs is not None:
            self.graphs.reset()

    def warm(self, shapes: list[tuple[int, int]]) -> None:
        """Allocate for the last shape (the runtime keeps one shape's caches)."""
        for batch, positions in shapes[-1:]:
            self._allocate(batch, positions)

    def release(self) -> None:
        self.shape, self.caches, self.feed, self.step_logits = None, [], None, None
        self._reset_graph()  # its buffers are gone: the next step is enqueued and captured anew

    def kv_cache_bytes(self) -> int:
        return sum(cache.nbytes for cache in self.caches)

    def _allocate(self, batch: int, cache_len: int) -> None:
        """KV caches and step inputs for this shape; kept while requests keep the shape."""
        if self.shape == (batch, cache_len):
            return
        cfg = self.config
        self.release()  # before the budget reads free memory
        torch.cuda.empty_cache()
        per_position = kv_cache_bytes_per_position(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim,
                                                   torch.finfo(self.kv_dtype).bits // 8)
        check_kv_budget(batch, cache_len, per_position, torch.cuda.mem_get_info(self.device)[0],
                        self.kv_limits["kv_cache_free_gpu_memory_fraction"], self.kv_limits["kv_cache_max_tokens"])
        self.caches = [torch.empty((batch, 2, cfg.num_kv_heads, cache_len, cfg.head_dim), dtype=self.kv_dtype,
                                   device=self.device) for _ in range(cfg.num_layers)]
        self.feed = StepFeed(batch, cache_len, cfg.num_layers, cfg.audio_out_token_id, self.device)
        self.step_logits = torch.empty((batch, cfg.num_codebooks * cfg.audio_vocab_size), dtype=torch.float32,
                                       device=self.device)
        self.shape = (batch, cache_len)

    def _on_device(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs named host_* stay on the CPU; the others go to the GPU."""
        return {name: t if name.startswith("host_") else t.to(self.device) for name, t in feed.items()}

    def _run(self, tensors: dict[str, torch.Tensor], caches: list[torch.Tensor] | None = None,
             logits: torch.Tensor | None = None) -> torch.Tensor:
        caches = self.caches if caches is None else caches
        tensors = tensors | {f"past_key_value_{i}": cache for i, cache in enumerate(caches)}
        missing = self.inputs - set(tensors)
        if missing:
            raise GenerationError(f"this engine expects inputs higgs-bench does not feed: {sorted(missing)}; "
                                  "rebuild it with python -m higgs_bench backend=trtllm")
        tensors = {name: t for name, t in tensors.items() if name in self.inputs}  # unused inputs are pruned
        context = self._context_for(tensors)
        batch = tensors["last_token_ids"].shape[0]
        if logits is None:
            logits = torch.empty((batch, self.config.num_codebooks * self.config.audio_vocab_size),
                                 dtype=torch.float32, device=self.device)
        outputs = {"logits": logits} | {f"present_key_value_{i}": c for i, c in enumerate(caches)}
        for name, t in tensors.items():
            context.set_input_shape(name, tuple(t.shape))
        for name, t in (tensors | outputs).items():
            context.set_tensor_address(name, t.data_ptr())
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise GenerationError("TensorRT could not enqueue the engine (see its log above)")
        self._in_flight = tensors  # a prefill's inputs must outlive the enqueued work
        return logits.view(batch, self.config.num_codebooks, self.config.audio_vocab_size)

    def _context_for(self, tensors: dict[str, torch.Tensor]):
        """The execution context of the first optimisation profile whose ranges hold these shapes."""
        engine = self.engine
        for profile in range(engine.num_optimization_profiles):
            if all(_fits(engine.get_tensor_profile_shape(name, profile), t.shape) for name, t in tensors.items()):
                if profile not in self.contexts:
                    context = engine.create_execution_context_without_device_memory()
                    context.set_device_memory(self.memory.data_ptr(), self.memory.numel())
                    context.set_optimization_profile_async(profile, self.stream.cuda_stream)
                    self.stream.synchronize()
                    self.contexts[profile] = context
                return self.contexts[profile]
        raise GenerationError(f"no optimisation profile of this engine holds a step of "
                              f"{tensors['input_ids'].shape[0]} tokens; rebuild with larger engine.* limits")


def _fits(profile_shape, shape) -> bool:
    low, _, high = profile_shape
    return len(low) == len(shape) and all(lo <= n <= hi for lo, n, hi in zip(low, shape, high))
