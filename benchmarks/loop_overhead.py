"""The decode loop's own cost per frame (delay-pattern masks, sampling, RAS, bookkeeping) against the
model step, on whatever device is here. A benchmark that prints figures, not a test.

    python benchmarks/loop_overhead.py [--model DIR] [--device cpu|cuda] [--batch 1 4] [--frames 100]
"""

import argparse
import time

import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.chooser import FrameChooser
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer
from higgs_bench.model.random_checkpoint import embedded_model


def per_call_ms(fn, device, n):
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - start) / n * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    model = args.model or embedded_model()
    backend = TorchBackend.from_checkpoint(model, device=args.device, cuda_graph=True)
    tokenizer, device = load_tokenizer(model), backend.device
    sampling = SamplingConfig(seed=0)
    print(f"device {device}, model {model}, {args.frames} frames")
    for batch in args.batch:
        prompts = [expand_prompt(encode_messages(tokenizer, tts_messages("Hello world, this is a test.")),
                                 backend.config)] * batch
        logits = backend.prefill(prompts, args.frames + 64)
        frame = torch.randint(0, 1024, (batch, 8), device=device)
        step = per_call_ms(lambda: backend.step(frame), device, args.frames)
        chooser = FrameChooser(sampling, backend.config, device, batch, compile=backend.compiled)
        chooser.seed(0)
        chooser.start_rows(slice(None), 1 << 20, frame[:, None].repeat(1, 7, 1))
        choose = per_call_ms(lambda: chooser(logits), device, args.frames)
        whole = per_call_ms(lambda: generate(backend, prompts, sampling, args.frames, stop_at_eos=False), device, 3)
        per_frame = whole / args.frames
        print(f"batch {batch}: model step {step:.3f} ms, frame choice (delay+sampling+RAS) {choose:.3f} ms, "
              f"whole loop {per_frame:.3f} ms/frame -> loop's own share {100 * (per_frame - step) / per_frame:.0f}%")


if __name__ == "__main__":
    main()
