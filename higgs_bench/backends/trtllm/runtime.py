"""A built Higgs engine serving the decode loop's Backend interface (generate/backend.py), so the delay
pattern, sampling, RAS and stopping are the same code as for the torch backend.

Static batches: `prefill` packs the prompts into one context step over a fresh contiguous KV cache sized for
this batch; each `step` feeds every row one audio frame. The engine is driven through
`tensorrt_llm.runtime.Session` (tensorrt_llm/runtime/session.py, 1.2.x), the way TensorRT-LLM's own model
tests drive engines: shapes set per input, one execution context per optimisation profile.
"""

from __future__ import annotations

from pathlib import Path

import torch

from higgs_bench.backends.trtllm import require_tensorrt_llm
from higgs_bench.backends.trtllm.engine import read_engine_record
from higgs_bench.backends.trtllm.feed import (EngineLimits, attention_constants, check_kv_budget, check_request,
                                              context_inputs, kv_cache_bytes_per_position, step_inputs)
from higgs_bench.errors import GenerationError
from higgs_bench.generate.inputs import PromptInputs


class TrtllmBackend:
    def __init__(self, engine_dir: str | Path, device="cuda"):
        require_tensorrt_llm()
        import tensorrt as trt
        from tensorrt_llm._utils import trt_dtype_to_torch
        from tensorrt_llm.runtime import Session

        record = read_engine_record(engine_dir)
        self.config, self.device = record["model"], torch.device(device)
        self.limits = EngineLimits.from_build_config(record["build"])
        self.kv_limits = record["kv_limits"]
        self.session = Session.from_serialized_engine((Path(engine_dir) / "engine" / "rank0.engine").read_bytes())
        engine = self.session.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.kv_dtype = trt_dtype_to_torch(engine.get_tensor_dtype("past_key_value_0"))
        self.contexts = {0: self.session.context}
        self.stream = torch.cuda.current_stream(self.device)

    @property
    def max_positions(self) -> int:
        return self.limits.max_seq_len

    def prefill(self, prompts: list[PromptInputs], max_new_frames: int) -> torch.Tensor:
        check_request(self.limits, prompts, max_new_frames)
        cfg, batch = self.config, len(prompts)
        cache_len = max(len(p) for p in prompts) + max_new_frames
        per_position = kv_cache_bytes_per_position(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim,
                                                   torch.finfo(self.kv_dtype).bits // 8)
        check_kv_budget(batch, cache_len, per_position, torch.cuda.mem_get_info(self.device)[0],
                        self.kv_limits["kv_cache_free_gpu_memory_fraction"], self.kv_limits["kv_cache_max_tokens"])
        self.caches = []  # the previous batch's cache goes before this one is allocated
        self.caches = [torch.zeros((batch, 2, cfg.num_kv_heads, cache_len, cfg.head_dim), dtype=self.kv_dtype,
                                   device=self.device) for _ in range(cfg.num_layers)]
        self.constants = attention_constants(batch, cache_len, cfg.num_layers)
        feed = context_inputs(prompts)
        self.context_lengths = feed["context_lengths"].clone()
        self.past_lengths = feed["context_lengths"].clone()  # on the CPU: no synchronisation per step
        return self._run(feed)

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        logits = self._run(step_inputs(frame, self.config.audio_out_token_id, self.context_lengths, self.past_lengths))
        self.past_lengths += 1
        return logits

    def _run(self, feed: dict[str, torch.Tensor]) -> torch.Tensor:
        tensors = {name: t if name.startswith("host_") else t.to(self.device)
                   for name, t in (feed | self.constants).items()}
        tensors |= {f"past_key_value_{i}": cache for i, cache in enumerate(self.caches)}
        missing = self.inputs - set(tensors)
        if missing:
            raise GenerationError(f"this engine expects inputs higgs-bench does not feed: {sorted(missing)}; "
                                  "rebuild it with python -m higgs_bench backend=trtllm")
        tensors = {name: t for name, t in tensors.items() if name in self.inputs}  # unused inputs are pruned
        context = self._context_for(tensors)
        for name, t in tensors.items():
            context.set_input_shape(name, tuple(t.shape))
        batch = feed["last_token_ids"].shape[0]
        logits = torch.empty((batch, self.config.num_codebooks * self.config.audio_vocab_size), dtype=torch.float32,
                             device=self.device)
        outputs = {"logits": logits} | {f"present_key_value_{i}": c for i, c in enumerate(self.caches)}
        if not self.session.run(tensors, outputs, self.stream.cuda_stream, context):
            raise GenerationError("TensorRT could not enqueue the engine (see its log above)")
        self._in_flight = tensors  # host inputs must outlive the enqueue
        return logits.view(batch, self.config.num_codebooks, self.config.audio_vocab_size)

    def _context_for(self, tensors: dict[str, torch.Tensor]):
        """The execution context of the first optimisation profile whose ranges hold these shapes."""
        engine = self.session.engine
        for profile in range(engine.num_optimization_profiles):
            if all(_fits(engine.get_tensor_profile_shape(name, profile), t.shape) for name, t in tensors.items()):
                if profile not in self.contexts:
                    context = engine.create_execution_context()
                    context.set_optimization_profile_async(profile, self.stream.cuda_stream)
                    self.stream.synchronize()
                    self.contexts[profile] = context
                return self.contexts[profile]
        raise GenerationError(f"no optimisation profile of this engine holds a step of "
                              f"{tensors['input_ids'].shape[0]} tokens; rebuild with larger engine.* limits")


def _fits(profile_shape, shape) -> bool:
    low, _, high = profile_shape
    return len(low) == len(shape) and all(lo <= n <= hi for lo, n, hi in zip(low, shape, high))
