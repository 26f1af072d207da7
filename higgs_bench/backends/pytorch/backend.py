"""The PyTorch reference backend: serves the decode loop's Backend interface with HiggsNetwork."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from higgs_bench.backends.pytorch.network import HiggsNetwork, rope_inv_freq
from higgs_bench.backends.pytorch.quantize import quantise
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.config import HiggsConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_STATES = 6  # KV caches (and CUDA graphs) kept for this many (batch, length) shapes


@dataclass
class DecodeState:
    """Everything a decode step touches, allocated once per (batch, cache length) and reused, so that a
    captured CUDA graph stays valid across generate() calls of the same shape."""

    caches: list[tuple[torch.Tensor, torch.Tensor]]
    key_valid: torch.Tensor  # [B, total] cache columns that hold a real position
    key_audio: torch.Tensor  # [B, total] ... that hold an audio frame
    next_position: torch.Tensor  # [B] RoPE position of each row's next frame
    column: torch.Tensor  # [1] the cache column the next frame goes to
    frame: torch.Tensor  # [B, N] input buffer of the captured step
    graph: torch.cuda.CUDAGraph | None = None
    logits: torch.Tensor | None = None


class TorchBackend:
    def __init__(self, config: HiggsConfig, weights: dict[str, torch.Tensor], device="cpu", dtype=torch.float32,
                 cuda_graph: bool = False, quantised: str | None = None):
        """quantised: None, or int8 / int4 / fp8 for the linears quantise.py names (torchao)."""
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        with torch.device("meta"):
            network = HiggsNetwork(config)
        network.load_state_dict(weights, strict=True, assign=True)
        network.codebook_offsets = torch.arange(config.num_codebooks) * config.audio_vocab_size
        network.inv_freq = rope_inv_freq(config)
        self.network = network.to(device=self.device, dtype=dtype).eval()
        self.network.inv_freq = rope_inv_freq(config).to(self.device)  # RoPE frequencies stay in float32
        if quantised:
            quantise(self.network, config, quantised, self.device)
        self.states: dict[tuple[int, int], DecodeState] = {}
        self.state: DecodeState | None = None

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path, device="cpu", dtype=torch.float32, cuda_graph=False,
                        quantised: str | None = None):
        checkpoint = load_checkpoint(model_dir, dtype=dtype)
        return cls(checkpoint.config, checkpoint.weights, device, dtype, cuda_graph, quantised)

    @property
    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    @torch.inference_mode()
    def prefill(self, prompts: list[PromptInputs], max_new_frames: int) -> torch.Tensor:
        """Left-pad the prompts to one length, run them, and reserve cache columns for the frames to come."""
        cfg, dev = self.config, self.device
        batch, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((batch, width), cfg.pad_token_id, dtype=torch.long)
        codes = torch.zeros((batch, width, cfg.num_codebooks), dtype=torch.long)
        audio = torch.zeros((batch, width), dtype=torch.bool)
        valid = torch.zeros((batch, width), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            pad = width - len(prompt)
            ids[row, pad:], codes[row, pad:], audio[row, pad:] = prompt.token_ids, prompt.audio_codes, prompt.audio_mask
            valid[row, pad:] = True
        ids, codes, audio, valid = ids.to(dev), codes.to(dev), audio.to(dev), valid.to(dev)

        state = self.state = self._state(batch, width + max_new_frames)
        state.key_valid.zero_()
        state.key_audio.zero_()
        state.key_valid[:, :width], state.key_audio[:, :width] = valid, audio
        state.next_position.copy_(valid.sum(dim=1))
        state.column.fill_(width)

        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        h = self.network.embed(ids, codes, audio)
        columns = torch.arange(width, device=dev)
        hidden = self.network(h, audio, positions, state.caches, columns, *self._prefill_masks(state, width))
        if self.cuda_graph and state.graph is None:
            self._capture(state)
        return self.network.audio_logits(hidden[:, -1])

    @torch.inference_mode()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        state = self.state
        if state.graph is None:
            return self._decode(state, frame)
        state.frame.copy_(frame)
        state.graph.replay()
        return state.logits.clone()

    def _decode(self, state: DecodeState, frame: torch.Tensor) -> torch.Tensor:
        """One audio frame per row. Fixed shapes: attention spans the whole cache, masked to valid columns."""
        state.key_valid.index_fill_(1, state.column, True)
        state.key_audio.index_fill_(1, state.column, True)
        h = self.network.embed_audio(frame)[:, None]
        mask = state.key_valid[:, None, None, :]
        hidden = self.network(h, True, state.next_position[:, None], state.caches, state.column, mask, mask)
        state.column += 1
        state.next_position += 1
        return self.network.audio_logits(hidden[:, -1])

    def _capture(self, state: DecodeState) -> None:
        """Record the decode step in a CUDA graph (after two warm-up steps whose effects are undone)."""
        saved = [t.clone() for t in (state.key_valid, state.key_audio, state.next_position, state.column)]

        def restore():
            for tensor, value in zip((state.key_valid, state.key_audio, state.next_position, state.column), saved):
                tensor.copy_(value)

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._decode(state, state.frame)
        torch.cuda.current_stream(self.device).wait_stream(side)
        restore()
        state.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(state.graph):
            state.logits = self._decode(state, state.frame)
        restore()

    def _state(self, batch: int, total: int) -> DecodeState:
        key = (batch, total)
        if key not in self.states and len(self.states) >= MAX_STATES:
            self.states.pop(next(iter(self.states)))  # the oldest shape's cache and graph
        if key not in self.states:
            cfg, dev = self.config, self.device
            shape = (batch, cfg.num_kv_heads, total, cfg.head_dim)
            self.states[key] = DecodeState(
                caches=[(torch.zeros(shape, dtype=self.dtype, device=dev), torch.zeros(shape, dtype=self.dtype, device=dev))
                        for _ in range(cfg.num_layers)],
                key_valid=torch.zeros((batch, total), dtype=torch.bool, device=dev),
                key_audio=torch.zeros((batch, total), dtype=torch.bool, device=dev),
                next_position=torch.zeros(batch, dtype=torch.long, device=dev),
                column=torch.zeros(1, dtype=torch.long, device=dev),
                frame=torch.zeros((batch, cfg.num_codebooks), dtype=torch.long, device=dev),
            )
        return self.states[key]

    @staticmethod
    def _prefill_masks(state: DecodeState, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks [B, 1, width, width]: causal over valid keys, and the same without audio keys (for
        fast-forward layers). A query always sees itself, so padded rows never go all-masked."""
        cols = torch.arange(width, device=state.key_valid.device)
        valid = state.key_valid[:, None, :width] & (cols <= cols[:, None])
        itself = cols == cols[:, None]
        text_only = (valid & ~state.key_audio[:, None, :width]) | itself
        return (valid | itself)[:, None], text_only[:, None]
