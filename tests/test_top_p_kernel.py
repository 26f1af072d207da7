"""top_p_kernel.py's nucleus against the sorted one that the transformers warper finds (sampling.sorted_top_p,
checked against transformers in test_parity_transformers.py). On a CPU the kernel runs in Triton's interpreter
(conftest sets TRITON_INTERPRET); on CUDA see tests/test_gpu.py."""

import pytest
import torch

from higgs_bench.generate.sampling import SamplingConfig, force_delay_pattern, sorted_top_p, warp

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's; on CUDA see tests/test_gpu.py")
top_p_kernel = pytest.importorskip("higgs_bench.generate.top_p_kernel", reason="needs Triton (its interpreter)")


def stable_nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which tokens the nucleus holds with equally likely tokens taken in index order (a stable sort's):
    those whose more likely tokens hold less than top_p of the mass."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    probabilities = scores.softmax(dim=-1).gather(-1, order)
    kept_sorted = probabilities.cumsum(dim=-1) - probabilities < top_p
    return torch.zeros_like(kept_sorted).scatter(-1, order, kept_sorted)


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.95, 0.999])
def test_the_kernel_keeps_what_the_sorted_warper_keeps(top_p):
    """Distinct scores, as a model's float32 logits are: the same tokens kept, their scores untouched."""
    scores = torch.randn(2, 8, 1026, generator=torch.Generator().manual_seed(7)) * 3
    kept = top_p_kernel.top_p_scores(scores, top_p)
    expected = sorted_top_p(scores, top_p)
    assert torch.equal(kept.isfinite(), expected.isfinite())
    assert torch.equal(kept[kept.isfinite()], scores[kept.isfinite()])
    assert (kept.isfinite().sum(-1) < 1026).all()  # guard: tokens were dropped


def test_equally_likely_tokens_are_kept_in_index_order_until_the_mass_is_reached():
    """Scores rounded to few values (as bfloat16 logits are) tie often: the kernel keeps as many tokens as a sort
    does, the tied ones of lowest index."""
    scores = torch.randint(-6, 3, (4, 1026), generator=torch.Generator().manual_seed(1)).float() / 2
    for top_p in (0.3, 0.8, 0.97):
        kept = top_p_kernel.top_p_scores(scores, top_p).isfinite()
        assert torch.equal(kept, stable_nucleus(scores, top_p))
        assert torch.equal(kept.sum(-1), sorted_top_p(scores, top_p).isfinite().sum(-1))
    uniform = torch.zeros(1, 10)
    assert top_p_kernel.top_p_scores(uniform, 0.35).isfinite().tolist() == [[True] * 4 + [False] * 6]


def test_masked_tokens_stay_masked_and_a_lone_token_is_kept():
    """After the delay pattern's masks (a codebook held at BOS has one finite score) and top-k (-inf elsewhere)."""
    logits = torch.randn(3, 8, 1026, generator=torch.Generator().manual_seed(2))
    scores = force_delay_pattern(logits, 2, torch.full((3,), 1 << 30), bos=1024, eos=1025)
    cfg = SamplingConfig(temperature=0.7, top_k=40, top_p=0.8)
    top_k_only = warp(scores, SamplingConfig(temperature=0.7, top_k=40, top_p=None))
    kept = top_p_kernel.top_p_scores(top_k_only, cfg.top_p)
    assert torch.equal(kept.isfinite(), warp(scores, cfg).isfinite())
    assert kept[:, 3:].isfinite().sum(-1).eq(1).all() and kept[:, 3:, 1024].isfinite().all()  # held at BOS
    assert (kept[:, :3].isfinite().sum(-1) <= 40).all() and (kept[:, :3].isfinite().sum(-1) > 1).any()
