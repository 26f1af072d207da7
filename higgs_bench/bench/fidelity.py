"""How close a variant's numerics stay to the reference: teacher-forced audio logits on the reference's own
greedy frames, and how long greedy decoding stays identical. With random weights WER is noise; this is the
quality signal that is always there, and on real weights it explains the WER."""

from __future__ import annotations

import torch

from higgs_bench.generate.backend import Backend
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig

GREEDY = SamplingConfig(greedy=True)


@torch.inference_mode()
def teacher_forced_logits(backend: Backend, prompts: list[PromptInputs], streams: torch.Tensor) -> torch.Tensor:
    """float32 audio logits [B, steps, N, C] when `backend` is fed the given frames [B, steps, N] step by step."""
    steps = streams.shape[1]
    logits = [backend.prefill(prompts, steps).float().cpu()]
    for step in range(steps - 1):
        logits.append(backend.step(streams[:, step].to(backend.device)).float().cpu())
    return torch.stack(logits, dim=1)


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """Relative L2 distance, KL(reference || candidate) per position, and top-1 agreement per codebook."""
    rel_l2 = float((candidate - reference).norm() / reference.norm())
    ref_log, cand_log = reference.log_softmax(-1), candidate.log_softmax(-1)
    kl = float((ref_log.exp() * (ref_log - cand_log)).sum(-1).mean())
    agree = (reference.argmax(-1) == candidate.argmax(-1)).float()  # [B, steps, N]
    return {"logits_rel_l2": rel_l2, "kl": kl, "top1_agreement": float(agree.mean()),
            "top1_agreement_per_codebook": agree.mean(dim=(0, 1)).tolist()}


def identical_frames(reference: torch.Tensor, candidate: torch.Tensor) -> list[int]:
    """Per row, the frames [steps, N] before the first that differs."""
    same = (reference == candidate).all(dim=-1)  # [B, steps]
    return [int(row.long().cumprod(0).sum()) for row in same]


def fidelity(reference: Backend, candidate: Backend, prompts: list[PromptInputs], frames: int) -> dict:
    """The candidate against the reference on `prompts`, `frames` greedy steps each (EOS ignored)."""
    ref_streams = generate(reference, prompts, GREEDY, frames, stop_at_eos=False).streams
    report = compare_logits(teacher_forced_logits(reference, prompts, ref_streams),
                            teacher_forced_logits(candidate, prompts, ref_streams))
    cand_streams = generate(candidate, prompts, GREEDY, frames, stop_at_eos=False).streams
    same = identical_frames(ref_streams, cand_streams)
    return report | {"greedy_frames_identical": min(same), "greedy_frames_identical_per_prompt": same,
                     "frames": frames, "prompts": len(prompts)}
