"""GPU facts for the reference backend: CUDA vs CPU parity on the tiny model (eager and CUDA graph),
copy bandwidth, and per-frame latency at the released 3B shape (random bf16 weights, in memory),
split into the backend step and the decode loop's own work (sampling, delay pattern, RAS)."""

import time

import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.bench.floor import copy_bandwidth
from higgs_bench.bench.timing import summarise_batch, time_generation
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.chooser import FrameChooser
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer
from higgs_bench.model.random_checkpoint import embedded_model, make_config, random_weights

TEXTS = ["Hello world.", "The quick brown fox jumps over the lazy dog.", "Third one."]


def ms(fn, n=50):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1000


def main():
    tiny = embedded_model()
    tok = load_tokenizer(tiny)
    cpu = TorchBackend.from_checkpoint(tiny)
    prompts = [expand_prompt(encode_messages(tok, tts_messages(t)), cpu.config) for t in TEXTS]
    reference = generate(cpu, prompts, SamplingConfig(greedy=True), 60).streams
    for graph in (False, True):
        gpu = TorchBackend.from_checkpoint(tiny, device="cuda", cuda_graph=graph)
        runs = [generate(gpu, prompts, SamplingConfig(greedy=True), 60).streams for _ in range(2)]
        print(f"tiny fp32 greedy CPU == CUDA (graph={graph}):", all(torch.equal(reference, r) for r in runs))
    print(f"copy bandwidth {copy_bandwidth(torch.device('cuda')) / 1e12:.2f} TB/s")

    cfg = make_config("higgs-v2-3b")
    weights = random_weights(cfg, 0, torch.bfloat16, "cuda")
    sampling = SamplingConfig(seed=0)
    for graph in (False, True):
        big = TorchBackend(cfg, weights, device="cuda", dtype=torch.bfloat16, cuda_graph=graph)
        for batch in (1, 64) if not graph else (1, 4, 16, 64):
            prompts = [expand_prompt(encode_messages(tok, tts_messages(TEXTS[i % 3])), cfg) for i in range(batch)]
            time_generation(big, prompts, 258, sampling)
            summary = summarise_batch(batch, [time_generation(big, prompts, 258, sampling)], 258, 8)
            logits = big.prefill(prompts, 258)
            frame = torch.randint(0, 1024, (batch, 8), device="cuda")
            step_ms = ms(lambda: big.step(frame)) if graph else float("nan")
            chooser = FrameChooser(sampling, cfg, torch.device("cuda"), batch, compile=big.compiled)
            chooser.seed(0)
            chooser.start_rows(slice(None), 1 << 20, frame[:, None].repeat(1, 7, 1))
            loop_ms = ms(lambda: chooser(logits))
            print(f"3B bf16 graph={graph} batch {batch}: frame median {summary['frame_ms']['median']:.2f} ms "
                  f"p90 {summary['frame_ms']['p90']:.2f}, first frame {summary['time_to_first_frame_ms']:.1f} ms, "
                  f"step alone {step_ms:.2f} ms, sampling+delay+RAS {loop_ms:.2f} ms, "
                  f"peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")
        big = None  # freed before the next engine loads
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
