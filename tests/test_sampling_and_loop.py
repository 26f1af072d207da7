"""Delay-pattern forcing, sampling, RAS and per-row stopping on hand-made logits (no network)."""

from dataclasses import replace

import pytest
import torch

from higgs_bench.errors import GenerationError, PromptError
from higgs_bench.generate.chooser import release_choosers
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import (
    NO_EOS_YET,
    SamplingConfig,
    choose_frame,
    force_delay_pattern,
    race_draws,
    resample_repeats,
    warp,
)
from higgs_bench.model.random_checkpoint import make_config

BOS, EOS, N, C = 1024, 1025, 8, 1026
GREEDY = SamplingConfig(greedy=True)


def no_eos(batch=1):
    return torch.full((batch,), NO_EOS_YET)


def test_codebook_k_is_held_at_bos_for_steps_0_to_k():
    logits = torch.randn(1, N, C)
    logits[..., BOS] = -1e9  # the model never asks for BOS itself
    for step in range(N + 2):
        frame = choose_frame(logits, step, no_eos(), None, GREEDY, None, BOS, EOS)[0]
        for k in range(N):
            assert (frame[k] == BOS) == (k >= step), (step, k)


def test_after_an_eos_codebooks_close_one_per_step():
    eos_step = torch.tensor([20])
    logits = torch.randn(1, N, C)
    logits[..., EOS] = -1e9  # the model never asks for EOS itself
    for step in range(20, 20 + N + 2):
        frame = choose_frame(logits, step, eos_step, None, GREEDY, None, BOS, EOS)[0]
        closed = [bool(frame[k] == EOS) for k in range(N)]
        assert closed == [k <= step - 21 for k in range(N)], step
    assert (force_delay_pattern(logits, 20 + N, eos_step, BOS, EOS).argmax(-1) == EOS).all()


def test_top_k_and_top_p_keep_the_expected_tokens():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept_k = warp(logits, SamplingConfig(temperature=1.0, top_k=3, top_p=None)).isfinite()
    assert kept_k.tolist() == [[False, True, True, True]]
    kept_p = warp(logits, SamplingConfig(temperature=1.0, top_k=None, top_p=0.75)).isfinite()
    assert kept_p.tolist() == [[False, True, False, True]]


def test_temperature_sharpens_the_distribution():
    logits = torch.tensor([[1.0, 2.0]])
    cold = warp(logits, SamplingConfig(temperature=0.5, top_p=None)).softmax(-1)
    assert cold[0, 1] > logits.softmax(-1)[0, 1]


def test_ras_redraws_a_token_repeated_in_the_window_from_the_raw_distribution():
    tokens = torch.tensor([[7, 8, BOS, 3, 3, 3, 3, 3]])
    history = torch.full((1, 4, N), 3)
    history[:, :, 0] = 7  # codebook 0 repeats 7
    history[:, :2, 1] = 8  # codebook 1 saw 8 twice
    history[:, :, 2] = BOS  # BOS never counts
    history[:, 3:, 3] = 9  # codebook 3 saw its token three times, not four: still a repeat
    raw = torch.full((1, N, C), -1e9)
    raw[..., 5] = 0  # the raw distribution always gives 5
    out = resample_repeats(tokens, raw, history, max_repeat=2, race=torch.ones_like(raw), bos=BOS, eos=EOS)
    assert out.tolist() == [[5, 5, BOS, 5, 5, 5, 5, 5]]
    out = resample_repeats(tokens, raw, history, max_repeat=5, race=torch.ones_like(raw), bos=BOS, eos=EOS)
    assert out.tolist() == tokens.tolist()


def test_invalid_sampling_settings_are_refused():
    for bad in (dict(temperature=0.0), dict(top_k=0), dict(top_p=1.5), dict(ras_win_len=0)):
        with pytest.raises(GenerationError):
            SamplingConfig(**bad)


class ScriptedBackend:
    """Row b emits frame value 10*b + step in every free codebook, and EOS on codebook 0 at eos_at[b]."""

    def __init__(self, eos_at, max_positions=1000):
        self.config = make_config("tiny")
        self.device = torch.device("cpu")
        self.compiled = False
        self.eos_at, self.max_positions = eos_at, max_positions
        self.fed: list[torch.Tensor] = []

    def _logits(self):
        step = len(self.fed)
        logits = torch.zeros(len(self.eos_at), N, C)
        for b, at in enumerate(self.eos_at):
            logits[b, :, (10 * b + step) % 1000] = 1.0
            if step == at:
                logits[b, 0, EOS] = 2.0
        return logits

    def prefill(self, prompts, max_new_frames):
        return self._logits()

    def step(self, frame):
        self.fed.append(frame.clone())
        return self._logits()


def prompt(length=5):
    ids = torch.full((length,), 128000)
    ids[-1] = 128013
    return PromptInputs(ids, torch.zeros(length, N, dtype=torch.long), torch.zeros(length, dtype=torch.bool))


def test_rows_stop_on_their_own_and_finished_rows_emit_eos_frames():
    backend = ScriptedBackend(eos_at=[12, 20])
    result = generate(backend, [prompt(), prompt(7)], GREEDY, max_frames=100)
    assert result.eos_step == [12, 20]
    assert result.steps == 20 + N + 1  # the last row's all-EOS frame ends the loop
    assert (result.streams[0, 12 + N :] == EOS).all()  # row 0 finished and is padded
    assert not (result.streams[1, 20 + N - 1] == EOS).all()
    codes = result.codes(BOS, EOS)
    assert [c.shape[1] for c in codes] == [12 - 1, 20 - 1]
    assert codes[1][3, 0] == 10 * 1 + 1 + 3  # codebook 3's first code was generated at step 1 + 3


def test_fixed_work_runs_every_step_even_after_all_rows_finished():
    result = generate(ScriptedBackend(eos_at=[9]), [prompt()], GREEDY, max_frames=40, stop_at_eos=False)
    assert result.steps == 40


def test_a_row_that_never_ends_is_cut_at_the_frame_limit():
    result = generate(ScriptedBackend(eos_at=[999]), [prompt()], GREEDY, max_frames=30)
    assert result.eos_step == [None] and result.steps == 30
    assert result.codes(BOS, EOS)[0].shape == (N, 30 - N)


def test_ignore_eos_runs_a_row_to_its_frame_limit():
    assert generate(ScriptedBackend(eos_at=[12]), [prompt()], GREEDY, max_frames=40).eos_step == [12]
    result = generate(ScriptedBackend(eos_at=[12]), [prompt()], replace(GREEDY, ignore_eos=True), max_frames=40)
    assert result.eos_step == [None] and result.steps == 40 and not (result.streams == EOS).any()


@pytest.mark.parametrize("sampling", [GREEDY, SamplingConfig(temperature=1.0, top_p=None, ras_win_len=2)])
def test_ignore_eos_never_chooses_eos_however_likely(sampling):
    """Also not through RAS's redraw from the raw logits."""
    logits = torch.zeros(64, N, C)
    logits[..., EOS] = 50.0
    logits[..., BOS] = -50.0  # the model never asks for BOS itself (RAS's redraw would otherwise find it)
    history = torch.randint(0, 4, (64, 2, N))
    races = race_draws(sampling, logits.shape, torch.Generator().manual_seed(0), "cpu")
    insisted = choose_frame(logits, N + 1, no_eos(64), history, sampling, races, BOS, EOS)
    assert (insisted == EOS).all()
    ignored = choose_frame(logits, N + 1, no_eos(64), history, replace(sampling, ignore_eos=True), races, BOS, EOS)
    assert not (ignored == EOS).any() and not (ignored == BOS).any()


def test_seeded_sampling_is_reproducible():
    cfg = SamplingConfig(temperature=1.0, top_p=None, seed=3)
    runs = [generate(ScriptedBackend(eos_at=[999]), [prompt()], cfg, max_frames=20).streams for _ in range(2)]
    other = generate(ScriptedBackend(eos_at=[999]), [prompt()], SamplingConfig(temperature=1.0, seed=4), 20).streams
    assert torch.equal(*runs) and not torch.equal(runs[0], other)


def test_a_request_starts_fresh_after_one_that_ended():
    """generate() keeps its frame chooser (and on a GPU its captured graph) across requests: the second request
    must not inherit the first one's EOS step, step count or RAS window."""
    ras = SamplingConfig(temperature=0.05, top_p=None, ras_win_len=3, seed=5)  # cold: the scripted EOS wins
    for sampling in (GREEDY, ras):
        first = generate(ScriptedBackend(eos_at=[5]), [prompt()], sampling, max_frames=40)
        second = generate(ScriptedBackend(eos_at=[12]), [prompt()], sampling, max_frames=40)
        release_choosers()
        alone = generate(ScriptedBackend(eos_at=[12]), [prompt()], sampling, max_frames=40)
        assert first.eos_step == [5] and second.eos_step == [12]
        assert torch.equal(second.streams, alone.streams)  # the same as from a chooser never used before


def test_requests_the_loop_cannot_serve_are_refused():
    with pytest.raises(GenerationError, match="warm-up"):
        generate(ScriptedBackend([5]), [prompt()], GREEDY, max_frames=N)
    with pytest.raises(GenerationError, match="limit of 40 positions"):
        generate(ScriptedBackend([5], max_positions=40), [prompt(30)], GREEDY, max_frames=20)
    bad = prompt()
    bad.token_ids[-1] = 128009
    with pytest.raises(PromptError, match="audio_out_bos"):
        generate(ScriptedBackend([5]), [bad], GREEDY, max_frames=20)


def chi_square_p_value(counts: torch.Tensor, expected: torch.Tensor) -> float:
    statistic = ((counts - expected) ** 2 / expected).sum()
    dof = torch.tensor(float(len(counts) - 1))
    return float(torch.special.gammaincc(dof / 2, statistic / 2))  # the chi-square survival function


def test_the_exponential_race_draws_from_the_softmax_distribution():
    from higgs_bench.generate.sampling import draw

    scores = torch.tensor([1.0, 0.2, -1.0, float("-inf"), 2.0, 0.0])
    probs = scores.softmax(-1)
    draws = 200_000
    generator = torch.Generator().manual_seed(0)
    race = draw(scores.expand(draws, -1), torch.empty(draws, len(scores)).exponential_(generator=generator))
    counts = torch.bincount(race, minlength=len(scores)).double()
    assert counts[3] == 0  # a masked token is never drawn
    kept = probs > 0
    assert chi_square_p_value(counts[kept], draws * probs[kept].double()) > 1e-3
    reference = torch.multinomial(probs, draws, replacement=True, generator=generator)
    pooled = (counts + torch.bincount(reference, minlength=len(scores)).double())[kept] / 2
    assert chi_square_p_value(counts[kept], pooled) > 1e-3  # the same distribution as multinomial's draws
    exponential = torch.empty(draws, len(scores)).exponential_(generator=generator)
    skewed = torch.bincount(draw((scores * 1.1).expand(draws, -1), exponential), minlength=len(scores)).double()
    assert chi_square_p_value(skewed[kept], draws * probs[kept].double()) < 1e-6  # the test can tell a 10 % skew
