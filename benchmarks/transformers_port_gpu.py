"""Per-frame decode time of the transformers port (HiggsAudioV2ForConditionalGeneration.generate) at the
released 3B shape with random bf16 weights, batch 1: the difference between two generate() lengths, so
prefill and setup cancel. Needs transformers >= 5 (present on the GPU image, never a product import)."""

import json
import sys
import time

import torch
from transformers import HiggsAudioV2Config, HiggsAudioV2ForConditionalGeneration

from higgs_bench.model.random_checkpoint import hf_config, make_config


def main(out_path):
    raw = hf_config(make_config("higgs-v2-3b"))
    raw.pop("architectures")
    raw.pop("model_type")
    raw.pop("dtype")
    config = HiggsAudioV2Config(**raw)
    config.eos_token_id = None  # time fixed lengths: no stopping
    with torch.device("cuda"):
        model = HiggsAudioV2ForConditionalGeneration(config).to(torch.bfloat16).eval()
    prompt = torch.tensor([[128000, 128006, 882, 128007, 271, 9906, 1917, 13, 128009, 128006, 78191, 128007, 271,
                            128013]], device="cuda")

    def seconds(frames):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                       max_new_tokens=frames, pad_token_id=128001)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    seconds(20)
    short, long = min(seconds(50) for _ in range(2)), min(seconds(150) for _ in range(2))
    per_frame_ms = (long - short) / 100 * 1000
    result = {"implementation": "transformers HiggsAudioV2ForConditionalGeneration.generate", "batch_size": 1,
              "dtype": "bf16", "frame_ms": per_frame_ms, "rtf": per_frame_ms / 40,
              "transformers": __import__("transformers").__version__, "torch": torch.__version__}
    print(json.dumps(result))
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
