"""What the decode loop needs from a backend: two calls, both returning float32 audio logits [B, N, C]."""

from __future__ import annotations

from typing import Protocol

import torch

from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.model.config import HiggsConfig


class Backend(Protocol):
    config: HiggsConfig
    device: torch.device
    compiled: bool  # its step is compiled ahead of time; the loop then compiles its frame choice too

    def prefill(self, prompts: list[PromptInputs], max_new_frames: int) -> torch.Tensor:
        """Run the prompts (reserving room for `max_new_frames` more positions each); logits at their last positions."""

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """Feed each row's last frame [B, N] as one audio position; logits at that position."""

    @property
    def max_positions(self) -> int:
        """The most positions (prompt + generated frames) one row may hold."""

    def warm(self, shapes: list[tuple[int, int]]) -> None:
        """Prepare for requests of these (batch, positions) shapes (compile, capture, allocate), so that no
        timed step pays for it."""

    def release(self) -> None:
        """Free what earlier requests left allocated (KV caches, captured graphs), so that the next request's
        memory is measured alone."""

    def kv_cache_bytes(self) -> int:
        """Bytes of KV cache allocated now."""


class SlotBackend(Backend, Protocol):
    """A backend that in-flight batching (generate/slots.py) can drive: `step` runs every slot."""

    def open_slots(self, slots: int, positions: int) -> None:
        """A decode state of `slots` free rows, each for requests of up to `positions` positions."""

    def prefill_slots(self, slots: list[int], prompts: list[PromptInputs]) -> torch.Tensor:
        """Write the prompts into those rows (forgetting what they held); logits at their last positions."""
