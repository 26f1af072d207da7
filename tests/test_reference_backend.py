"""Behaviour of the PyTorch reference backend that users and the TensorRT-LLM parity suite rely on."""

import pytest
import torch

from higgs_bench.backends.pytorch.backend import MAX_STATES, TorchBackend
from higgs_bench.model.dtypes import TORCH as DTYPES
from higgs_bench.generate.loop import generate
from tests.parity import GREEDY, greedy, teacher_forced_logits


def test_batched_rows_generate_what_they_generate_alone(tiny_hf, prompt_inputs):
    batched = greedy(tiny_hf, prompt_inputs, 40)
    for row, inputs in enumerate(prompt_inputs):
        alone = greedy(tiny_hf, [inputs], 40)
        assert torch.equal(batched.streams[row, : alone.steps], alone.streams[0]), f"row {row}"


# Relative L2 error of the logits against fp32, per dtype: about 5x what the tiny model shows (fp16 1e-3, bf16
# 8e-3 on the CPU), well below what a norm or RoPE computed in half precision would add.
HALF_TOLERANCE = {"fp16": 5e-3, "bf16": 3e-2}


@pytest.mark.parametrize("dtype", sorted(HALF_TOLERANCE))
def test_half_precisions_track_fp32(tiny_hf, prompt_inputs, dtype):
    streams = greedy(tiny_hf, prompt_inputs, 20).streams
    reference = teacher_forced_logits(tiny_hf, prompt_inputs, streams)[:, :4]
    backend = TorchBackend.from_checkpoint(tiny_hf, dtype=DTYPES[dtype])
    half = [backend.prefill(prompt_inputs, 20)] + [backend.step(streams[:, j]) for j in range(3)]
    half = torch.stack(half, dim=1)
    assert half.dtype == torch.float32 and half.isfinite().all()
    error = float((half - reference).norm() / reference.norm())
    assert error < HALF_TOLERANCE[dtype], f"{dtype} relative error {error:.4f}"
    agreement = (half.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agreement >= 0.95, f"{dtype} greedy choices agree on {agreement:.1%}"  # bf16 may flip a near-tie


def zero_(module):
    for p in module.parameters():
        p.data.zero_()


def first_step(backend, prompts, frame):
    backend.prefill(prompts, 10)
    return backend.step(frame)


def test_an_audio_step_never_reads_the_text_mlp(tiny_hf, prompt_inputs):
    backend = TorchBackend.from_checkpoint(tiny_hf)
    frame = torch.randint(0, 1024, (len(prompt_inputs), 8))
    before = first_step(backend, prompt_inputs, frame)
    backend.prefill(prompt_inputs, 10)
    for layer in backend.network.layers:
        zero_(layer.mlp)
        zero_(layer.post_attention_layernorm)
    assert torch.equal(backend.step(frame), before)
    zero_(backend.network.layers[0].audio_mlp)
    assert not torch.equal(first_step(backend, prompt_inputs, frame), before)


def test_a_prefill_of_prompts_without_audio_never_runs_an_audio_mlp(tiny_hf, prompt_inputs):
    """Several prompts prefilled at once (eagerly) route their rows by kind; without an audio position among them
    every layer runs its text MLP alone. Before, the audio MLPs ran on no rows, and on a GPU the products of no
    rows compiled a kernel of their own while a run measured (H200, 3B int8 sweep, docs/performance.md)."""
    backend = TorchBackend.from_checkpoint(tiny_hf)
    text, clones = ([p for p in prompt_inputs if bool(p.audio_mask.any()) == audio] for audio in (False, True))
    assert len(text) >= 2 and clones  # guard: prompts of both kinds
    calls = []
    for layer in backend.network.layers:
        layer.audio_mlp.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    together = backend.prefill(text, 10)
    assert calls == []
    alone = torch.cat([backend.prefill([prompt], 10) for prompt in text])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    backend.prefill(text + clones[:1], 10)
    assert calls and all(shape[0] > 0 for shape in calls)  # guard: the hooks hear audio MLPs that run


def test_fast_forward_layers_are_skipped_by_audio_steps(tiny_fast_forward, prompt_inputs):
    backend = TorchBackend.from_checkpoint(tiny_fast_forward)
    frame = torch.randint(0, 1024, (len(prompt_inputs), 8))
    before = first_step(backend, prompt_inputs, frame)
    backend.prefill(prompt_inputs, 10)
    zero_(backend.network.layers[1])
    assert torch.equal(backend.step(frame), before)


def test_a_second_request_of_the_same_shape_reuses_the_cache_cleanly(tiny_hf, prompt_inputs):
    backend = TorchBackend.from_checkpoint(tiny_hf)
    first = generate(backend, prompt_inputs, GREEDY, 30).streams
    generate(backend, prompt_inputs[::-1], GREEDY, 30)
    assert torch.equal(generate(backend, prompt_inputs, GREEDY, 30).streams, first)
    assert len(backend.states) == 1
    for frames in range(31, 31 + MAX_STATES):  # other shapes: old caches are let go, results unchanged
        generate(backend, prompt_inputs, GREEDY, frames)
    assert len(backend.states) == MAX_STATES
    assert torch.equal(generate(backend, prompt_inputs, GREEDY, 30).streams, first)


def test_weights_fused_in_place_leave_one_copy(tiny_hf):
    """A loader fuses q/k/v and gate/up as it goes, so that a 3B load does not hold every group twice; a
    caller's own dict stays as it was."""
    from higgs_bench.backends.pytorch.network import fuse_weights
    from higgs_bench.model.checkpoint import load_checkpoint

    weights = load_checkpoint(tiny_hf).weights
    parts = [weights[f"layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]
    copied = fuse_weights(weights)
    assert "layers.0.self_attn.q_proj.weight" in weights and copied is not weights
    fused = fuse_weights(weights, in_place=True)
    assert fused is weights and not any(name.endswith((".q_proj.weight", ".up_proj.weight")) for name in fused)
    assert torch.equal(fused["layers.0.self_attn.qkv_proj.weight"], torch.cat(parts))
    assert fuse_weights(fused).keys() == fused.keys()  # already fused: nothing to do
