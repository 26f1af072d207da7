"""What admitting a request costs on a GPU: prefill of one prompt (eager, and as the captured graph per width
bucket the slots use, with its layers eager or compiled), placing it into a slot, and one decode step of the
full slot batch.

    python benchmarks/admission_gpu.py CKPT [--slots 16] [--profile]

Medians of 9 runs after a warm-up, milliseconds, with a CUDA synchronisation around each. --profile: the GPU
kernels of one compiled captured prefill of the longest prompt (torch.profiler).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from higgs_bench.backends.pytorch.backend import Speed, TorchBackend
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer

TEXTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background. " * 4]


def median_ms(fn, runs: int = 9) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 2)


def prompts_of(checkpoint, cfg) -> dict:
    tokenizer = load_tokenizer(checkpoint)
    reference = np.zeros((cfg.num_codebooks, 100), dtype=np.int64)  # a 4 s clip's worth of codes
    messages = {"short text": tts_messages(TEXTS[0]), "long text": tts_messages(TEXTS[1]),
                "voice clone": tts_messages(TEXTS[0], None, "Hello there.", reference)}
    return {name: expand_prompt(encode_messages(tokenizer, m), cfg) for name, m in messages.items()}


@torch.inference_mode()
def measure(checkpoint, compile_mode: str | None, slots: int, profile: bool) -> None:
    speed = Speed(cuda_graph=True, compile_mode=compile_mode, max_seq_len=2048)
    backend = TorchBackend.from_checkpoint(checkpoint, device="cuda", dtype=torch.bfloat16, speed=speed)
    prompts = prompts_of(checkpoint, backend.config)
    backend.open_slots(slots, 700)
    print(f"layers {'compiled' if compile_mode else 'eager'}:", flush=True)
    for name, prompt in prompts.items():
        start = time.perf_counter()
        backend.prefill_slots([0], [prompt])
        torch.cuda.synchronize()
        build = time.perf_counter() - start
        line = f"  {name} ({len(prompt)} positions): captured prefill into a slot " \
               f"{median_ms(lambda: backend.prefill_slots([0], [prompt]))} ms (first call {build:.1f} s)"
        if compile_mode is None:
            eager = backend._new_state(1, len(prompt))
            line += f", eager prefill {median_ms(lambda: backend._prefill_into(eager, [prompt]))} ms"
        print(line, flush=True)
    frame = torch.zeros((slots, backend.config.num_codebooks), dtype=torch.long, device="cuda")
    print(f"  decode step over {slots} slots: {median_ms(lambda: backend.step(frame), 50)} ms", flush=True)
    if profile and compile_mode:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            backend.prefill_slots([0], [prompts["voice clone"]])
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for compile_mode in (None, "default"):
        measure(args.checkpoint, compile_mode, args.slots, args.profile)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
