"""The batched decode loop, shared by every backend: one frame per step, all state on the device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from higgs_bench.errors import GenerationError, PromptError
from higgs_bench.generate.backend import Backend
from higgs_bench.generate.chooser import frame_chooser
from higgs_bench.generate.delay import codes_from_stream
from higgs_bench.generate.inputs import PromptInputs
from higgs_bench.generate.sampling import NO_EOS_YET, SamplingConfig


@dataclass
class GenerationResult:
    streams: torch.Tensor  # [B, steps, N] delayed frames as generated, on the CPU
    eos_step: list[int | None]  # per row, the step whose frame first held an EOS (None: hit the frame limit)

    @property
    def steps(self) -> int:
        return self.streams.shape[1]

    def codes(self, bos: int, eos: int) -> list[torch.Tensor]:
        """Per row, the audio codes [N, T] after reverting the delay pattern and trimming BOS/EOS."""
        return [codes_from_stream(stream, bos, eos) for stream in self.streams]


def check_request(backend: Backend, prompts: list[PromptInputs], max_frames: int) -> None:
    cfg = backend.config
    if not prompts:
        raise GenerationError("no prompts to generate from")
    if max_frames <= cfg.num_codebooks:
        raise GenerationError(
            f"max_frames={max_frames} leaves no audio: the delay pattern takes {cfg.num_codebooks} warm-up frames"
        )
    for i, prompt in enumerate(prompts):
        if int(prompt.token_ids[-1]) != cfg.audio_out_bos_token_id:
            raise PromptError(f"prompt {i} does not end with <|audio_out_bos|>; build it with encode_messages")
        if len(prompt) + max_frames > backend.max_positions:
            raise GenerationError(
                f"prompt {i} has {len(prompt)} positions; with max_frames={max_frames} it needs "
                f"{len(prompt) + max_frames}, above this model's limit of {backend.max_positions} positions"
            )


def generate(
    backend: Backend,
    prompts: list[PromptInputs],
    sampling: SamplingConfig,
    max_frames: int,
    stop_at_eos: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Generate up to `max_frames` delayed frames per prompt (each step is one frame, BOS warm-up included).

    A row whose frame is all EOS is finished; it keeps emitting EOS frames until every row is finished.
    With stop_at_eos=False the loop always runs `max_frames` steps (fixed work, for timing); it still evaluates
    the all-finished check, so that a timed step costs what a real one does.
    """
    check_request(backend, prompts, max_frames)
    cfg, device = backend.config, backend.device
    frames = torch.full((len(prompts), max_frames, cfg.num_codebooks), cfg.stream_eos_id, dtype=torch.long,
                        device=device)
    chooser = frame_chooser(sampling, cfg, device, len(prompts), backend.compiled)
    chooser.seed(sampling.seed)
    chooser.start_rows(slice(None), max_frames, initial_history(prompts, sampling, cfg.stream_eos_id, device))

    logits = backend.prefill(prompts, max_frames)
    for step in range(max_frames):
        frame, finished = chooser(logits)
        frames[:, step] = frame
        if on_frame is not None:
            on_frame(step)
        if step + 1 == max_frames:
            break
        copy_finished = on_host(finished)
        logits = backend.step(frame)  # queued before the check below, so that the GPU never waits for the host
        # the loop's one host synchronisation per step (on the flags alone, not on the step just queued), paid
        # also by fixed-work (timed) runs; when every row has finished, that step is wasted (one per utterance)
        if bool(copy_finished().all()) and stop_at_eos:
            break

    return GenerationResult(
        streams=frames[:, : step + 1].cpu(),
        eos_step=[None if s == NO_EOS_YET else s for s in chooser.eos_step.tolist()],
    )


def on_host(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Start copying a small device tensor to the host. The returned function waits for that copy alone, not
    for work queued on the device after it (as .tolist() or bool() would), and gives the host copy."""
    if tensor.device.type != "cuda":
        return lambda: tensor
    host = tensor.to("cpu", non_blocking=True)  # pinned: the copy is queued, not waited for
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(tensor.device))

    def wait() -> torch.Tensor:
        copied.synchronize()
        return host

    return wait


def initial_history(prompts, sampling: SamplingConfig, eos: int, device) -> torch.Tensor | None:
    """Each row's last `ras_win_len` prompt audio frames, padded with EOS (which never counts as a repeat)."""
    if not sampling.uses_ras:
        return None
    win = sampling.ras_win_len
    history = torch.full((len(prompts), win, prompts[0].audio_codes.shape[1]), eos, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tail = prompt.audio_tail(win)
        if len(tail):
            history[row, win - len(tail) :] = tail
    return history.to(device)
