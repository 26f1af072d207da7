"""What admitting a request costs on a GPU: prefill of one prompt (eager, and as the captured graph per width
bucket the slots use), placing it into a slot, and one decode step of the full slot batch.

    python benchmarks/admission_gpu.py CKPT [--slots 16] [--profile]

Medians of 9 runs after a warm-up, milliseconds, with a CUDA synchronisation around each.
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


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="kernel launches and host time of one eager prefill")
    args = parser.parse_args()
    speed = Speed(cuda_graph=True, compile_mode="default", max_seq_len=2048)
    backend = TorchBackend.from_checkpoint(args.checkpoint, device="cuda", dtype=torch.bfloat16, speed=speed)
    tokenizer, cfg = load_tokenizer(args.checkpoint), backend.config
    reference = np.zeros((cfg.num_codebooks, 100), dtype=np.int64)  # a 4 s clip's worth of codes
    prompts = [expand_prompt(encode_messages(tokenizer, tts_messages(t)), cfg) for t in TEXTS]
    cloning = tts_messages(TEXTS[0], None, "Hello there.", reference)
    prompts.append(expand_prompt(encode_messages(tokenizer, cloning), cfg))
    backend.open_slots(args.slots, 700)
    for prompt in prompts:
        eager = backend._new_state(1, len(prompt))
        print(f"{len(prompt)} positions: eager prefill {median_ms(lambda: backend._prefill_into(eager, [prompt]))} ms, "
              f"captured prefill into a slot {median_ms(lambda: backend.prefill_slots([0], [prompt]))} ms", flush=True)
    alone, _ = backend._captured_prefill(prompts[0])
    place = median_ms(lambda: backend._place(backend.state, [0], alone, [len(prompts[0])]))
    print(f"placing a prompt into its slot: {place} ms")
    frame = torch.zeros((args.slots, cfg.num_codebooks), dtype=torch.long, device="cuda")
    print(f"decode step over {args.slots} slots: {median_ms(lambda: backend.step(frame), 50)} ms")
    if args.profile:
        eager = backend._new_state(1, len(prompts[0]))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            backend._prefill_into(eager, [prompts[0]])
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=50))


if __name__ == "__main__":
    main()
