"""Token-for-token parity with the transformers port (HiggsAudioV2ForConditionalGeneration, transformers>=5),
run in its own venv on the same tiny random weights."""

import numpy as np
import pytest
import torch

from higgs_bench.generate.sampling import SamplingConfig, warp
from tests.oracles.venvs import run_oracle
from tests.parity import greedy, prompt_request, teacher_forced_logits

pytestmark = pytest.mark.oracle
FRAME_LIMITS = (25, 60)  # 25 ends one row and cuts two mid-way; 60 lets every row end through EOS
BOS, EOS = 1024, 1025


@pytest.fixture(scope="module")
def port(tiny_hf, prompts, tmp_path_factory):
    request = {"model_dir": str(tiny_hf), "task": "generate", "max_frames": list(FRAME_LIMITS),
               "prompts": prompt_request(prompts)}
    return run_oracle("transformers5", "hf_oracle.py", request, tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def ours(tiny_hf, prompt_inputs):
    return [greedy(tiny_hf, prompt_inputs, limit) for limit in FRAME_LIMITS]


@pytest.mark.parametrize("run", range(len(FRAME_LIMITS)))
def test_greedy_batch_generates_the_same_frames(port, ours, run):
    assert np.array_equal(ours[run].streams.numpy(), port[f"streams_{run}"])


def test_runs_cover_eos_stopping_and_the_frame_limit(ours):
    cut, ended = ours
    assert all(step is not None for step in ended.eos_step)
    assert ended.steps < FRAME_LIMITS[1]
    assert any(step is None or step + 8 >= FRAME_LIMITS[0] for step in cut.eos_step)
    assert any(step is not None and step + 8 < FRAME_LIMITS[0] for step in cut.eos_step)


@pytest.mark.parametrize("run", range(len(FRAME_LIMITS)))
def test_codes_are_the_ports_codes_without_its_eos_frame(port, ours, run):
    """The port's batch_decode keeps the EOS column (clipped to 1023) as a last frame; we drop it."""
    for row, codes in enumerate(ours[run].codes(BOS, EOS)):
        theirs = port[f"codes_{run}_{row}"]
        assert np.array_equal(codes.numpy(), theirs[:, : codes.shape[1]])
        if ours[run].eos_step[row] is not None and ours[run].eos_step[row] + 8 < ours[run].steps:
            assert theirs.shape[1] == codes.shape[1] + 1 and theirs[0, -1] == 1023


def test_teacher_forced_logits_match(tiny_hf, prompts, prompt_inputs, ours, tmp_path):
    streams = ours[1].streams
    request = {"model_dir": str(tiny_hf), "task": "forward", "prompts": prompt_request(prompts),
               "frames": streams.tolist()}
    theirs = run_oracle("transformers5", "hf_oracle.py", request, tmp_path)["logits"]
    mine = teacher_forced_logits(tiny_hf, prompt_inputs, streams).numpy()
    assert mine.shape == theirs.shape
    assert np.abs(mine - theirs).max() <= 1e-4


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, None, 0.95), (1.0, 50, None), (0.5, 20, 0.8),
                                                       (1.3, None, 0.5), (0.9, 1, 0.9)])
def test_kept_tokens_match_the_transformers_warpers(tmp_path, temperature, top_k, top_p):
    """Temperature, then top-k, then top-p on the same scores: the same tokens kept, the same scaled scores.
    No random numbers are involved."""
    scores = torch.randn(16, 1026, generator=torch.Generator().manual_seed(3)) * 3
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    ours = warp(scores, cfg)
    reply = run_oracle("transformers5", "hf_oracle.py", {"task": "warp", "scores": scores.tolist(),
                                                         "temperature": temperature, "top_k": top_k, "top_p": top_p},
                       tmp_path)
    assert np.array_equal(ours.isfinite().numpy(), reply["kept"])
    kept = reply["kept"]
    assert np.allclose(ours.numpy()[kept], reply["scores"][kept], atol=1e-6)
    assert kept.sum(-1).min() >= 1 and (kept.sum(-1) < 1026).any()  # guard: the warpers really dropped tokens
