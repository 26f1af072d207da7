"""Top-p (the nucleus) of each row of scores as one Triton kernel, without sorting: what frames choose from on a GPU.

The transformers warper sorts each row, sums the softmax in that order and keeps the smallest set of most likely
tokens whose mass reaches top_p (sampling.warp does so on a CPU). On an H200 that sort alone (torch.sort's radix
sort, 8 rows of 1026) took 24.7 us of a frame's ~70 us of loop work, 2.2 % of int4's 1.11 ms one-row step
(docs/performance.md). The kept set is every token at least as likely as the last one kept, so it is found by
bisection on that token's weight instead: one program per row holds the row in registers, and each of SEARCH_STEPS
steps halves the range of the weight's bits (floats >= 0 order as their bits do) by one masked sum, of the
weights at or below the middle, compared with the mass to drop, as the warper compares its sum from the least
likely token up. Tokens as likely as the last kept one are kept in index order until the mass is reached (the
order a stable sort gives them; an unstable sort, as the warper's, keeps any of them).

Under torch.compile the kernel is a user-defined Triton kernel in the compiled frame choice. It needs a GPU that
Triton compiles for, as compiled engines do. Triton's interpreter runs it on a CPU (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ONE_BITS = 0x3F800000  # 1.0's bits: a weight exp(score - max) is in [0, 1]
SEARCH_STEPS = 30  # 2^30 > ONE_BITS + 1: the bisection ends on one weight's bits
WARPS = 4


@triton.jit
def top_p_kernel(scores_ptr, out_ptr, top_p, columns, BLOCK: tl.constexpr, SEARCH_STEPS: tl.constexpr,
                 ONE_BITS: tl.constexpr):
    """Row program_id(0) of scores [rows, columns] (float32) into out: its scores where kept, -inf elsewhere."""
    row = tl.program_id(0).to(tl.int64)
    column = tl.arange(0, BLOCK)
    inside = column < columns
    scores = tl.load(scores_ptr + row * columns + column, mask=inside, other=float("-inf"))
    finite = scores > float("-inf")
    weights = tl.where(finite, tl.exp(scores - tl.max(scores, axis=0)), 0.0)  # softmax's, unnormalised
    # the least likely tokens are dropped while their mass is at most 1 - top_p, summed from the least likely up
    # as the warper's ascending cumsum is: a top_p near 1 compares a small sum, accurately
    dropped = (1 - top_p) * tl.sum(weights, axis=0)
    bits = weights.to(tl.int32, bitcast=True)
    # the smallest `high` whose weights at or below it hold more than the mass dropped: the last kept weight's bits
    low, high = -1, ONE_BITS
    for _ in range(SEARCH_STEPS):
        middle = (low + high + 1) // 2
        more = tl.sum(tl.where(bits <= middle, weights, 0.0), axis=0) > dropped
        high = tl.where(more, middle, high)
        low = tl.where(more, low, middle)
    mass_below = tl.sum(tl.where(bits < high, weights, 0.0), axis=0)
    tied = bits == high
    weight_tied = tl.max(tl.where(tied, weights, 0.0), axis=0)
    # tied tokens count up from the highest index (so that those of lowest index are kept)
    tied_from_end = tl.sum(tied.to(tl.int32), axis=0) - tl.cumsum(tied.to(tl.int32), axis=0) + 1
    keep = (bits > high) | (tied & (mass_below + tied_from_end.to(tl.float32) * weight_tied > dropped))
    tl.store(out_ptr + row * columns + column, tl.where(keep, scores, float("-inf")), mask=inside)


def top_p_scores(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """scores [..., C] (float32) with the tokens outside each row's nucleus at -inf."""
    columns = scores.shape[-1]
    flat = scores.reshape(-1, columns).contiguous()
    out = torch.empty_like(flat)
    top_p_kernel[(flat.shape[0],)](flat, out, top_p, columns, BLOCK=triton.next_power_of_2(columns),
                                   SEARCH_STEPS=SEARCH_STEPS, ONE_BITS=ONE_BITS, num_warps=WARPS)
    return out.view(scores.shape)
