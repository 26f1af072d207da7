"""Choosing one frame (one token per codebook) from audio logits [batch, codebooks, vocab], on the device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from higgs_bench.errors import GenerationError

NO_EOS_YET = 1 << 30
MIN_TEMPERATURE = 1e-3  # logits divided by less overflow float32 (inf - inf = NaN probabilities)


@dataclass
class SamplingConfig:
    """Greedy is deterministic: it takes the argmax and never re-draws (RAS is off).

    Sampled decoding applies temperature, then top-k, then top-p per codebook, then repetition-aware
    sampling: a token already seen `ras_win_max_num_repeat` times in the last `ras_win_len` frames is
    re-drawn once from the raw, untempered distribution.
    """

    greedy: bool = False
    temperature: float = 0.7
    top_k: int | None = None
    top_p: float | None = 0.95
    ras_win_len: int | None = 7
    ras_win_max_num_repeat: int = 2
    seed: int | None = None
    # never choose the stream EOS, so that every request runs to its frame limit: load measured with the
    # lengths asked for, whatever the weights (vLLM's benchmarks have the same switch)
    ignore_eos: bool = False

    def __post_init__(self):
        if self.greedy:
            return
        if not self.temperature > 0:
            raise GenerationError(f"temperature must be > 0 for sampling (got {self.temperature}); use greedy instead")
        if not math.isfinite(self.temperature):
            raise GenerationError(f"temperature must be finite (got {self.temperature})")
        if self.temperature < MIN_TEMPERATURE:
            raise GenerationError(f"temperature {self.temperature} is below {MIN_TEMPERATURE}: the scaled logits "
                                  "overflow; use greedy for the most likely speech")
        if self.top_k is not None and self.top_k < 1:
            raise GenerationError(f"top_k must be >= 1 or unset (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1] or unset (got {self.top_p})")
        if self.ras_win_len is not None and (self.ras_win_len < 1 or self.ras_win_max_num_repeat < 1):
            raise GenerationError("ras_win_len and ras_win_max_num_repeat must be >= 1 (or ras_win_len unset)")

    @property
    def uses_ras(self) -> bool:
        return not self.greedy and self.ras_win_len is not None


def force_delay_pattern(logits: torch.Tensor, step: int | torch.Tensor, eos_step: torch.Tensor, bos: int,
                        eos: int) -> torch.Tensor:
    """Mask logits [B, N, C] so that the delay pattern holds at generation step `step` (one for the batch, or a
    [B] tensor: each row's own step, as rows that joined at different times have).

    Codebook k is held at stream BOS for steps 0..k. Once a row's frame at step e held an EOS in any
    codebook, codebook k is held at stream EOS from step e + 1 + k on, so the row closes one codebook per
    step and its frame at e + N is all EOS (the transformers port's schedule).
    """
    _, n, vocab = logits.shape
    k = torch.arange(n, device=logits.device)[None, :]
    ids = torch.arange(vocab, device=logits.device)
    steps = step if isinstance(step, int) else step[:, None]
    force_bos = (k >= steps)[:, :, None] & (ids != bos)
    force_eos = (k <= steps - 1 - eos_step[:, None])[:, :, None] & (ids != eos)
    return logits.masked_fill(force_bos | force_eos, float("-inf"))


def warp(scores: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, top-k and top-p over the last dimension (the transformers warpers' semantics; on a GPU top-p
    is top_p_kernel.py's, which keeps the same tokens)."""
    scores = scores / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < scores.shape[-1]:
        kth = torch.topk(scores, cfg.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        if scores.is_cuda:  # the same tokens, found without a sort
            from higgs_bench.generate.top_p_kernel import top_p_scores  # CUDA builds of torch bring Triton

            scores = top_p_scores(scores, cfg.top_p)
        else:
            scores = sorted_top_p(scores, cfg.top_p)
    return scores


def sorted_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """scores with the tokens outside each row's nucleus at -inf, as the transformers warper finds it: sorted."""
    sorted_scores, order = torch.sort(scores, dim=-1)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - top_p
    drop_sorted[..., -1] = False  # always keep the most likely token
    return scores.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))


def race_draws(cfg: SamplingConfig, logits_shape, generator: torch.Generator | None, device) -> torch.Tensor | None:
    """The random numbers one frame choice uses, drawn at once: Exp(1) [2, B, N, C], the first for the sample
    and the second for RAS's redraw (None for greedy, which draws nothing)."""
    if cfg.greedy:
        return None
    return torch.empty((2, *logits_shape), device=device).exponential_(generator=generator)


def draw(scores: torch.Tensor, race: torch.Tensor) -> torch.Tensor:
    """One sample per row of the last dimension: [..., C] -> [...], with `race` Exp(1) draws of the same shape.

    An exponential race: argmax(p / E) with E ~ Exp(1) i.i.d. picks token i with probability p_i, the same
    distribution as torch.multinomial, but with no host synchronisation (multinomial syncs twice a call), and
    with its random numbers drawn apart from the arithmetic (so that the arithmetic can be compiled)."""
    return (scores.softmax(dim=-1) / race).argmax(dim=-1)


def choose_frame(
    logits: torch.Tensor,
    step: int | torch.Tensor,
    eos_step: torch.Tensor,
    history: torch.Tensor | None,
    cfg: SamplingConfig,
    races: torch.Tensor | None,
    bos: int,
    eos: int,
) -> torch.Tensor:
    """The next frame [B, N] from raw audio logits [B, N, C] (float32); `races` from race_draws."""
    if cfg.ignore_eos:
        logits = logits.clone()
        logits[..., eos] = float("-inf")  # an index from the host, not a tensor: no copy that would synchronise
    scores = force_delay_pattern(logits, step, eos_step, bos, eos)
    if cfg.greedy:
        return scores.argmax(dim=-1)
    tokens = draw(warp(scores, cfg), races[0])
    if cfg.uses_ras and history is not None:
        tokens = resample_repeats(tokens, logits, history, cfg.ras_win_max_num_repeat, races[1], bos, eos)
    return tokens


def resample_repeats(
    tokens: torch.Tensor,
    logits: torch.Tensor,
    history: torch.Tensor,
    max_repeat: int,
    race: torch.Tensor,
    bos: int,
    eos: int,
) -> torch.Tensor:
    """Repetition-aware sampling. history [B, W, N] holds the last W frames; BOS/EOS there never count. `race`:
    Exp(1) draws shaped like the logits, for the redraw.

    Forced BOS/EOS tokens can only match BOS/EOS, so they are never re-drawn.
    """
    counted = (history == tokens[:, None, :]) & (history != bos) & (history != eos)
    repeated = counted.sum(dim=1) >= max_repeat
    redrawn = draw(logits, race)
    return torch.where(repeated, redrawn, tokens)
