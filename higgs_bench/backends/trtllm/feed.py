"""What the engine is fed each step: plain torch tensors named as TensorRT-LLM's inputs, and the checks of a
request against the limits the engine was built with. Runs and is tested without TensorRT-LLM.

Names, shapes and meanings follow the inputs of `PretrainedModel.prepare_inputs` with the gpt-attention
plugin, packed input and a contiguous KV cache (tensorrt_llm/models/modeling_utils.py and
generation_mixin.py, 1.2.x), fed as `GenerationSession._get_context_shape_buffer` /
`_get_next_step_shape_buffer` feed them (tensorrt_llm/runtime/generation.py @ b35ac1b, 1.2.0rc2). Names
starting with `host_` live on the CPU; everything else goes to the GPU.

The generation step's inputs (`StepFeed`) are allocated once per (batch, cache length) and updated in place,
as GenerationSession's buffers are: device inputs move on by device arithmetic, host inputs live in pinned
memory, so a step copies nothing from the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from higgs_bench.errors import GenerationError
from higgs_bench.generate.inputs import PromptInputs

PERF_KNOBS = 16  # host_runtime_perf_knobs: -1 leaves each knob at the plugin's default


@dataclass(frozen=True)
class EngineLimits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int

    @classmethod
    def from_build_config(cls, build: dict) -> EngineLimits:
        return cls(build["max_batch_size"], build["max_input_len"], build["max_seq_len"], build["max_num_tokens"])


def check_engine_limits(limits: EngineLimits, prompts: list[PromptInputs], max_new_frames: int) -> None:
    """A request the engine was not built for fails here, naming the limit and the setting that raises it."""
    lengths = [len(p) for p in prompts]
    problems = []
    if len(prompts) > limits.max_batch_size:
        problems.append(f"{len(prompts)} prompts exceed max_batch_size={limits.max_batch_size}")
    if max(lengths) > limits.max_input_len:
        problems.append(f"a prompt of {max(lengths)} positions exceeds max_input_len={limits.max_input_len}")
    if sum(lengths) > limits.max_num_tokens:
        problems.append(f"the batch's {sum(lengths)} prompt positions exceed max_num_tokens={limits.max_num_tokens}")
    if max(lengths) + max_new_frames > limits.max_seq_len:
        problems.append(f"{max(lengths)} prompt positions + {max_new_frames} frames exceed "
                        f"max_seq_len={limits.max_seq_len}")
    if problems:
        raise GenerationError("this engine was built for smaller requests: " + "; ".join(problems)
                              + ". Rebuild with larger engine.* limits, or send smaller batches or shorter prompts")


def context_inputs(prompts: list[PromptInputs]) -> dict[str, torch.Tensor]:
    """All prompts packed one after the other, each written into its row's empty cache. The context step's
    `host_past_key_value_lengths` is each row's context length (past + current tokens), as
    `_get_context_shape_buffer` and the C++ runtime feed it: the plugin takes its maximum as the KV length of
    context attention (gptAttentionPlugin.cpp `max_context_kv_len`)."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.int32)
    codes = [torch.where(p.audio_mask[:, None], p.audio_codes, -1) for p in prompts]  # -1 marks text positions
    return {
        "input_ids": torch.cat([p.token_ids for p in prompts]).int(),
        "audio_codes": torch.cat(codes).int(),
        "position_ids": torch.cat([torch.arange(n, dtype=torch.int32) for n in lengths.tolist()]),
        "last_token_ids": lengths.cumsum(0).int(),  # 1-based end of each row in the packed tokens
        "context_lengths": lengths,
        "host_context_lengths": lengths.clone(),
        "sequence_length": lengths.clone(),
        "host_past_key_value_lengths": lengths.clone(),
        "host_request_types": torch.zeros_like(lengths),  # 0: context
    }


class StepFeed:
    """The inputs of one (batch, cache length) shape: the plugin's constants, shared with the context step,
    and the generation step's inputs, which feed one audio position per row (the previous frame's codes)
    at position = the row's cache size."""

    def __init__(self, batch: int, cache_len: int, num_layers: int, placeholder_id: int, device: torch.device):
        pinned = device.type == "cuda"

        def host(values: torch.Tensor) -> torch.Tensor:
            return values.pin_memory() if pinned else values

        self.constants = {
            "cache_indirection": torch.zeros((batch, 1, cache_len), dtype=torch.int32, device=device),  # beam 1
            "host_max_attention_window_sizes": host(torch.full((num_layers,), cache_len, dtype=torch.int32)),
            "host_sink_token_length": host(torch.zeros(1, dtype=torch.int32)),
            "host_runtime_perf_knobs": host(torch.full((PERF_KNOBS,), -1, dtype=torch.int64)),
            "host_context_progress": host(torch.zeros(1, dtype=torch.int64)),
        }
        def rows() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.int32)

        self.step = {
            "input_ids": torch.full((batch,), placeholder_id, dtype=torch.int32, device=device),
            "audio_codes": torch.zeros((batch, 8), dtype=torch.int32, device=device),
            "position_ids": rows().to(device),
            "last_token_ids": torch.arange(1, batch + 1, dtype=torch.int32, device=device),
            "context_lengths": rows().to(device),
            "sequence_length": rows().to(device),  # including the position being fed
            "host_context_lengths": host(rows()),
            "host_past_key_value_lengths": host(rows()),
            "host_request_types": host(torch.ones(batch, dtype=torch.int32)),  # 1: generation
        }

    def start(self, context_lengths: torch.Tensor) -> None:
        """After the context step: every row's cache holds its prompt."""
        lengths = context_lengths.int()
        for name in ("context_lengths", "position_ids", "host_context_lengths", "host_past_key_value_lengths"):
            self.step[name].copy_(lengths)
        self.step["sequence_length"].copy_(lengths + 1)

    def start_rows(self, rows: list[int], context_lengths: torch.Tensor) -> None:
        """Rows that a request joined (in-flight batching): each now holds its prompt; the others go on."""
        lengths = context_lengths.int()
        for name in ("context_lengths", "position_ids", "host_context_lengths", "host_past_key_value_lengths"):
            tensor = self.step[name]
            tensor[torch.tensor(rows, device=tensor.device)] = lengths.to(tensor.device)
        self.step["sequence_length"][torch.tensor(rows, device=self.step["sequence_length"].device)] = \
            (lengths + 1).to(self.step["sequence_length"].device)

    def inputs(self, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        """The next generation step's inputs, with `frame` [B, 8] (on the device) as its audio codes."""
        self.set_frame(frame)
        return self.bindings()

    def set_frame(self, frame: torch.Tensor) -> None:
        self.step["audio_codes"].copy_(frame)

    def bindings(self) -> dict[str, torch.Tensor]:
        """The generation step's input tensors, at the same addresses for every step of this shape."""
        return self.step | self.constants

    def advance(self) -> None:
        """After a step was enqueued (TensorRT has read the host inputs by then): one more cached position."""
        for name in ("position_ids", "sequence_length", "host_past_key_value_lengths"):
            self.step[name].add_(1)


def kv_cache_bytes_per_position(num_layers: int, num_kv_heads: int, head_dim: int, bytes_per_value: int) -> int:
    return 2 * num_layers * num_kv_heads * head_dim * bytes_per_value


def check_kv_budget(batch: int, cache_len: int, per_position: int, free_bytes: int, fraction: float | None,
                    max_tokens: int | None) -> None:
    """The contiguous cache of one static batch against engine.kv_cache_* limits, before it is allocated and
    after the previous batch's cache was released (free_bytes would otherwise miss it)."""
    positions = batch * cache_len
    if max_tokens is not None and positions > max_tokens:
        raise GenerationError(f"{batch} rows x {cache_len} positions = {positions} cached positions exceed "
                              f"engine.kv_cache_max_tokens={max_tokens}; send smaller batches or fewer frames")
    needed = positions * per_position
    if fraction is not None and needed > fraction * free_bytes:
        raise GenerationError(f"the KV cache needs {needed / 2**30:.2f} GiB, above engine.kv_cache_free_gpu_memory_"
                              f"fraction={fraction} of the {free_bytes / 2**30:.2f} GiB free; send smaller batches")
