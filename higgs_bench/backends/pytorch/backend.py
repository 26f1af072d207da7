"""The PyTorch reference backend: serves the decode loop's Backend interface with HiggsNetwork."""

from __future__ import annotations

from pathlib import Path

import torch

from higgs_bench.backends.pytorch.network import HiggsNetwork, rope_inv_freq
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.config import HiggsConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    def __init__(self, config: HiggsConfig, weights: dict[str, torch.Tensor], device="cpu", dtype=torch.float32):
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        with torch.device("meta"):
            network = HiggsNetwork(config)
        network.load_state_dict(weights, strict=True, assign=True)
        network.codebook_offsets = torch.arange(config.num_codebooks) * config.audio_vocab_size
        network.inv_freq = rope_inv_freq(config)
        self.network = network.to(device=self.device, dtype=dtype).eval()
        self.network.inv_freq = rope_inv_freq(config).to(self.device)  # RoPE frequencies stay in float32

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path, device="cpu", dtype=torch.float32) -> TorchBackend:
        checkpoint = load_checkpoint(model_dir, dtype=dtype)
        return cls(checkpoint.config, checkpoint.weights, device, dtype)

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

        total = width + max_new_frames
        self.caches = [
            tuple(torch.zeros(batch, cfg.num_kv_heads, total, cfg.head_dim, dtype=self.dtype, device=dev) for _ in "kv")
            for _ in range(cfg.num_layers)
        ]
        self.key_valid = torch.zeros((batch, total), dtype=torch.bool, device=dev)
        self.key_audio = torch.zeros((batch, total), dtype=torch.bool, device=dev)
        self.key_valid[:, :width], self.key_audio[:, :width] = valid, audio
        self.next_position = valid.sum(dim=1)
        self.column = width

        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        h = self.network.embed(ids, codes, audio)
        hidden = self.network(h, audio, positions, self.caches, 0, *self._masks(0, width))
        return self.network.audio_logits(hidden[:, -1])

    @torch.inference_mode()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        col = self.column
        self.key_valid[:, col] = True
        self.key_audio[:, col] = True
        h = self.network.embed_audio(frame)[:, None]
        hidden = self.network(h, True, self.next_position[:, None], self.caches, col, *self._masks(col, 1))
        self.column += 1
        self.next_position += 1
        return self.network.audio_logits(hidden[:, -1])

    def _masks(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention masks [B, 1, length, start+length]: causal over valid keys, and the same without audio
        keys (for fast-forward layers). A query always sees itself, so padded rows never go all-masked."""
        end = start + length
        cols = torch.arange(end, device=self.device)
        rows = torch.arange(start, end, device=self.device)[:, None]
        valid = self.key_valid[:, None, :end] & (cols <= rows)
        itself = cols == rows
        text_only = (valid & ~self.key_audio[:, None, :end]) | itself
        return (valid | itself)[:, None], text_only[:, None]

