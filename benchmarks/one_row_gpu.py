"""Where the bf16 one-row step of Triton kernels (backends/pytorch/one_row.py) spends its time, at the 3B shape.

    python benchmarks/one_row_gpu.py CKPT OUT.json [--blocks '[{"o": [4, 4]}, ...]'] [--attention-split-columns '[256]']

Kernels launched with PDL overlap, so a profiler's per-kernel times count the waits twice. Here each variant is
the whole captured step, timed with CUDA events over graph replays (median of 150): the engine as built; without
PDL; with one kind of kernel left out (its launches do nothing: the numbers are garbage, the time is what the
others take without it, so the difference is that kernel's share in the chain); with other block tables; and
with other least numbers of cache columns per attention program.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from decode_step_gpu import TEXTS, median, step_ms  # this folder's scripts run with it on sys.path
from higgs_bench.backends.pytorch import one_row
from higgs_bench.backends.pytorch.backend import Speed
from higgs_bench.backends.pytorch.engine import load_engine
from higgs_bench.bench.floor import floor_report
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer

KERNELS = ("qkv_kernel", "attention_kernel", "gate_up_kernel")  # and the residual kernel's two products
SHAPE = (1, 220)  # one row, 256 cache columns


class NoLaunch:
    """Stands in for a Triton kernel: `kernel[grid](...)` launches nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def timed(backend, prompt) -> float:
    backend.states.clear()  # a fresh capture of the step as it is now
    backend.warm([SHAPE])
    return median(step_ms(backend, [prompt]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--blocks", type=json.loads, default=[], help="JSON list of tables over one_row.BLOCKS")
    parser.add_argument("--attention-split-columns", type=json.loads, default=[],
                        help="JSON list of values of one_row.ATTENTION_SPLIT_COLUMNS, a variant each")
    args = parser.parse_args()
    device = torch.device("cuda")
    speed = Speed(cuda_graph=True, compile_mode="default", max_seq_len=256, one_row_kernels=True)
    backend, _ = load_engine(args.ckpt, device, torch.bfloat16, None, speed, [SHAPE])
    prompt = expand_prompt(encode_messages(load_tokenizer(args.ckpt), tts_messages(TEXTS[0])), backend.config)
    step = {"engine": timed(backend, prompt)}
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "blocks": backend.one_row.blocks,
              "floor": floor_report(backend.config, 2, None, device, step["engine"]), "step_ms": step}
    backend.one_row.pdl = False
    step["without PDL"] = timed(backend, prompt)
    backend.one_row.pdl = True
    for name in KERNELS:
        kernel = getattr(one_row, name)
        setattr(one_row, name, NoLaunch())
        step[f"without {name}"] = timed(backend, prompt)
        setattr(one_row, name, kernel)
    residual = backend.one_row._residual
    for product in ("o", "down"):
        backend.one_row._residual = lambda kind, *rest, left_out=product: kind == left_out or residual(kind, *rest)
        step[f"without the {product} product"] = timed(backend, prompt)
    backend.one_row._residual = residual
    measured = dict(one_row.BLOCKS)
    for blocks in args.blocks:
        one_row.BLOCKS = measured | {kind: tuple(b) for kind, b in blocks.items()}
        backend.one_row = one_row.OneRowLayers(backend.network, backend.config)
        step[f"blocks {json.dumps(blocks)}"] = timed(backend, prompt)
    one_row.BLOCKS = measured
    backend.one_row = one_row.OneRowLayers(backend.network, backend.config)
    least = one_row.ATTENTION_SPLIT_COLUMNS
    for columns in args.attention_split_columns:
        one_row.ATTENTION_SPLIT_COLUMNS = columns
        step[f"attention split columns {columns}"] = timed(backend, prompt)
    one_row.ATTENTION_SPLIT_COLUMNS = least
    for name, ms in step.items():
        print(f"{name:50s} {ms:.3f} ms ({ms - step['engine']:+.3f})")
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
