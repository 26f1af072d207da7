"""Parity with Boson's own code (boson-multimodal 0.1.1 HiggsAudioModel, batch 1, greedy with RAS off),
including a checkpoint with a fast-forward layer, which the transformers port does not support."""

import numpy as np
import pytest

from tests.oracles.venvs import run_oracle
from tests.parity import greedy, prompt_request, teacher_forced_logits

pytestmark = pytest.mark.oracle
MAX_FRAMES = 40
EOS, N = 1025, 8


@pytest.mark.parametrize("checkpoint", ["tiny_boson", "tiny_fast_forward"])
def test_greedy_frames_match_boson(checkpoint, request, prompts, prompt_inputs, tmp_path):
    model_dir = request.getfixturevalue(checkpoint)
    reply = run_oracle("boson", "boson_oracle.py", {"model_dir": str(model_dir), "task": "generate",
                                                    "max_frames": MAX_FRAMES, "prompts": prompt_request(prompts)},
                       tmp_path)
    for row, inputs in enumerate(prompt_inputs):
        result = greedy(model_dir, [inputs], MAX_FRAMES)
        ours, theirs, eos_step = result.streams[0].numpy().T, reply[f"stream_{row}"], result.eos_step[0]
        if eos_step is None:
            assert np.array_equal(ours, theirs), f"row {row}"
            continue
        first = int(np.flatnonzero(ours[:, eos_step] == EOS)[0])  # first codebook that emitted EOS
        # Boson stops once codebook 6 has closed (no all-EOS frame), and when the first EOS comes from
        # codebook k > 0 it closes codebooks 0..k-1 in that same frame (transformers closes them later).
        assert theirs.shape[1] == eos_step + N - first, f"row {row}"
        agreed = theirs.shape[1] if first == 0 else eos_step
        assert np.array_equal(ours[:, :agreed], theirs[:, :agreed]), f"row {row}"
        assert (theirs[: first + 1, eos_step] == EOS).all()


def test_fast_forward_teacher_forced_logits_match_boson(tiny_fast_forward, prompts, prompt_inputs, tmp_path):
    streams = greedy(tiny_fast_forward, prompt_inputs, 24).streams
    reply = run_oracle("boson", "boson_oracle.py", {"model_dir": str(tiny_fast_forward), "task": "forward",
                                                    "prompts": prompt_request(prompts), "frames": streams.tolist()},
                       tmp_path)
    mine = teacher_forced_logits(tiny_fast_forward, prompt_inputs, streams).numpy()
    for row in range(len(prompts)):
        # Boson returns logits at audio positions only: those after frames 0..K-2, i.e. ours from index 1.
        assert np.abs(mine[row, 1:] - reply[f"logits_{row}"]).max() <= 1e-4, f"row {row}"
