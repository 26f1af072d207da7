"""A prompt as the network sees it: one position per text token and one per delayed audio frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from higgs_bench.errors import PromptError
from higgs_bench.generate.delay import apply_delay
from higgs_bench.model.config import HiggsConfig
from higgs_bench.model.prompt import Prompt


@dataclass
class PromptInputs:
    token_ids: torch.Tensor  # [S] text ids; audio positions hold the <|AUDIO_OUT|> placeholder
    audio_codes: torch.Tensor  # [S, N] delayed codes at audio positions, 0 elsewhere
    audio_mask: torch.Tensor  # [S] True at audio positions

    def __len__(self) -> int:
        return self.token_ids.shape[0]

    def audio_tail(self, frames: int) -> torch.Tensor:
        """The last `frames` audio frames of the prompt [<= frames, N] (what repetition-aware sampling sees)."""
        return self.audio_codes[self.audio_mask][-frames:] if frames else self.audio_codes[:0]


def expand_prompt(prompt: Prompt, cfg: HiggsConfig) -> PromptInputs:
    """Replace each <|AUDIO_OUT|> by its segment's frames, wrapped in stream BOS/EOS and delayed."""
    placeholder = cfg.audio_out_token_id
    n_slots = prompt.token_ids.count(placeholder)
    if n_slots != len(prompt.audio):
        raise PromptError(f"prompt has {n_slots} audio slots but {len(prompt.audio)} audio segments")
    ids, codes, mask = [], [], []
    segments = iter(prompt.audio)
    for token in prompt.token_ids:
        if token != placeholder:
            ids.append(token)
            codes.append(torch.zeros(1, cfg.num_codebooks, dtype=torch.long))
            mask.append(False)
            continue
        stream = apply_delay(_checked_segment(next(segments), cfg), cfg.stream_bos_id, cfg.stream_eos_id)
        ids.extend([placeholder] * len(stream))
        codes.append(stream)
        mask.extend([True] * len(stream))
    return PromptInputs(torch.tensor(ids), torch.cat(codes), torch.tensor(mask))


def _checked_segment(codes: np.ndarray, cfg: HiggsConfig) -> torch.Tensor:
    if codes.shape[0] != cfg.num_codebooks:
        raise PromptError(f"audio codes have {codes.shape[0]} codebooks, the model has {cfg.num_codebooks}")
    if codes.min() < 0 or codes.max() >= cfg.codebook_size:
        raise PromptError(f"audio codes must lie in 0..{cfg.codebook_size - 1}, got {codes.min()}..{codes.max()}")
    return torch.from_numpy(codes)
