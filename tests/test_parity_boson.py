"""Parity with Boson's own code (boson-multimodal 0.1.1 HiggsAudioModel, batch 1, greedy with RAS off),
including a checkpoint with a fast-forward layer, which the transformers port does not support, one whose
first EOS comes from codebook 3, and Boson's repetition-aware sampling decision."""

import numpy as np
import pytest
import torch

from higgs_bench.generate.sampling import resample_repeats
from tests.oracles.venvs import run_oracle
from tests.parity import greedy, prompt_request, teacher_forced_logits

pytestmark = pytest.mark.oracle
MAX_FRAMES = 40
EOS, N = 1025, 8


@pytest.mark.parametrize("checkpoint", ["tiny_boson", "tiny_fast_forward", "tiny_boson_eos3"])
def test_greedy_frames_match_boson(checkpoint, request, prompts, prompt_inputs, tmp_path):
    model_dir = request.getfixturevalue(checkpoint)
    reply = run_oracle("boson", "boson_oracle.py", {"model_dir": str(model_dir), "task": "generate",
                                                    "max_frames": MAX_FRAMES, "prompts": prompt_request(prompts)},
                       tmp_path)
    first_eos_codebooks = []
    for row, inputs in enumerate(prompt_inputs):
        result = greedy(model_dir, [inputs], MAX_FRAMES)
        ours, theirs, eos_step = result.streams[0].numpy().T, reply[f"stream_{row}"], result.eos_step[0]
        if eos_step is None:
            assert np.array_equal(ours, theirs), f"row {row}"
            continue
        first = int(np.flatnonzero(ours[:, eos_step] == EOS)[0])  # first codebook that emitted EOS
        first_eos_codebooks.append(first)
        # Boson stops once codebook 6 has closed (no all-EOS frame), and when the first EOS comes from
        # codebook k > 0 it closes codebooks 0..k-1 in that same frame (transformers closes them later).
        assert theirs.shape[1] == eos_step + N - first, f"row {row}"
        agreed = theirs.shape[1] if first == 0 else eos_step
        assert np.array_equal(ours[:, :agreed], theirs[:, :agreed]), f"row {row}"
        assert (theirs[: first + 1, eos_step] == EOS).all()
    if checkpoint == "tiny_boson_eos3":  # guard: the k > 0 branch above really ran
        assert first_eos_codebooks and all(k == 3 for k in first_eos_codebooks), first_eos_codebooks


def test_fast_forward_teacher_forced_logits_match_boson(tiny_fast_forward, prompts, prompt_inputs, tmp_path):
    streams = greedy(tiny_fast_forward, prompt_inputs, 24).streams
    reply = run_oracle("boson", "boson_oracle.py", {"model_dir": str(tiny_fast_forward), "task": "forward",
                                                    "prompts": prompt_request(prompts), "frames": streams.tolist()},
                       tmp_path)
    mine = teacher_forced_logits(tiny_fast_forward, prompt_inputs, streams).numpy()
    for row in range(len(prompts)):
        # Boson returns logits at audio positions only: those after frames 0..K-2, i.e. ours from index 1.
        assert np.abs(mine[row, 1:] - reply[f"logits_{row}"]).max() <= 1e-4, f"row {row}"


def test_repeat_decisions_match_boson(tiny_boson, tmp_path):
    """Repetition-aware sampling decides per codebook whether the first choice repeats too often in the last
    frames; a re-draw then comes from the raw logits. Token 1000 is masked from the first choice but dominates
    the raw logits, so a re-drawn codebook shows 1000 on both sides without depending on random numbers."""
    gen = torch.Generator().manual_seed(1)
    history = torch.randint(0, 4, (N, 7), generator=gen)  # [N, W]: few distinct codes, so repeats occur
    first = torch.randint(0, 4, (N,), generator=gen)
    logits = torch.zeros(N, 1026)
    logits[torch.arange(N), first] = 5.0
    logits[:, 1000] = 1e4
    reply = run_oracle("boson", "boson_oracle.py", {"model_dir": str(tiny_boson), "task": "ras",
                                                    "logits": logits.tolist(), "history": history.tolist(),
                                                    "window": 7, "max_repeat": 2, "masked": 1000}, tmp_path)
    ours = resample_repeats(first[None], logits[None], history.T[None], 2, torch.ones_like(logits[None]),
                            bos=1024, eos=1025)[0]
    assert np.array_equal(ours.numpy(), reply["tokens"])
    assert 0 < int((ours == 1000).sum()) < N  # guard: some codebooks were re-drawn, some kept
