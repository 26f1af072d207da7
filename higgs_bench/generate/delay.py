"""The delay pattern: codebook k runs k frames behind codebook 0.

Layouts: codes are [num_codebooks, frames] (codebook-major); delayed streams are [frames, num_codebooks]
(time-major, one row per generation step), as the decode loop produces them.
"""

from __future__ import annotations

import torch


def apply_delay(codes: torch.Tensor, bos: int, eos: int) -> torch.Tensor:
    """[N, T] codes -> [T + N + 1, N] delayed stream: a BOS frame, the codes, an EOS frame, shifted per codebook.

    Codebook k reads BOS for frames 0..k, its codes for frames k+1..k+T and EOS after them.
    """
    n, t = codes.shape
    out = torch.full((t + n + 1, n), eos, dtype=torch.long, device=codes.device)
    for k in range(n):
        out[: k + 1, k] = bos
        out[k + 1 : k + 1 + t, k] = codes[k]
    return out


def revert_delay(stream: torch.Tensor) -> torch.Tensor:
    """[L, N] delayed stream -> [N, L - N + 1]: undo the per-codebook shift (the inverse of the shift alone)."""
    length, n = stream.shape
    width = max(length - n + 1, 0)
    return torch.stack([stream[k : k + width, k] for k in range(n)]) if width else stream.new_empty((n, 0))


def codes_from_stream(stream: torch.Tensor, bos: int, eos: int) -> torch.Tensor:
    """The audio codes [N, T] in one row's generated stream [steps, N].

    Drops the BOS frame, reverts the shift, ends the audio at the first EOS in any codebook (the EOS frame
    and anything after it are not audio), and clips stray BOS values inside the data to the last code, as
    both official implementations do.
    """
    all_eos = (stream == eos).all(dim=1).nonzero()
    end = int(all_eos[0]) if len(all_eos) else stream.shape[0]
    codes = revert_delay(stream[1:end])
    has_eos = (codes == eos).any(dim=0).nonzero()
    if len(has_eos):
        codes = codes[:, : int(has_eos[0])]
    return codes.clamp(0, bos - 1)
