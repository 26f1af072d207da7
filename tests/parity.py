"""Helpers shared by the parity tests: requests for the oracles and our side of each comparison."""

import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig

GREEDY = SamplingConfig(greedy=True)


def prompt_request(prompts):
    return [{"token_ids": p.token_ids, "audio": [a.tolist() for a in p.audio]} for p in prompts]


def greedy(model_dir, inputs, max_frames):
    return generate(TorchBackend.from_checkpoint(model_dir), inputs, GREEDY, max_frames)


def teacher_forced_logits(model_dir, inputs, streams):
    """Audio logits [B, K, N, C]: after the prompt, then after feeding each of frames 0..K-2."""
    backend = TorchBackend.from_checkpoint(model_dir)
    logits = [backend.prefill(inputs, streams.shape[1])]
    for j in range(streams.shape[1] - 1):
        logits.append(backend.step(streams[:, j]))
    return torch.stack(logits, dim=1)
