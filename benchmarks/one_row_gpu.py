"""Where the one-row step of Triton kernels (backends/pytorch/one_row.py) spends its time, at the 3B shape.

    python benchmarks/one_row_gpu.py CKPT OUT.json [--weights int8|fp8] [--shares] [--rounds 5] [--columns 256]
        [--variants '[{"BLOCKS": {"o": [4, 4]}}, {"ATTENTION_BLOCK": 128, "PREFETCH_CACHE": false}]']

Kernels launched with PDL overlap, so a profiler's per-kernel times count the waits twice. Here each variant is
the whole step, captured afresh and timed with CUDA events over graph replays (median of 150): the engine as
built; with `--shares`, without PDL and with one kind of kernel left out (its launches do nothing: the numbers
are garbage, the time is what the others take without it, so the difference is that kernel's share in the
chain), or all of them (what the step spends outside the layers); and with other values of one_row's settings
(BLOCKS, ATTENTION_BLOCK, ATTENTION_STAGES, PREFETCH_CACHE, ...), a variant each. One capture of the
same step can time a few percent off another, so the variants take turns over several rounds and each reports
the median of its rounds, with the range.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
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

SETTINGS = ("BLOCKS", "ATTENTION_SPLIT_COLUMNS", "ATTENTION_BLOCK", "ATTENTION_STAGES", "ATTENTION_WARPS",
            "PREFETCH_CACHE", "INT8_BLOCKS", "FP8_BLOCKS", "DECODE_INT8")  # one_row's, as the record notes them
KERNELS = ("qkv_kernel", "attention_kernel", "gate_up_kernel")  # and the residual kernel's two products


class NoLaunch:
    """Stands in for a Triton kernel: `kernel[grid](...)` launches nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@contextmanager
def unchanged(backend, _):
    yield


@contextmanager
def without_pdl(backend, _):
    pdl, backend.one_row.pdl = backend.one_row.pdl, False
    yield
    backend.one_row.pdl = pdl


@contextmanager
def kernels_left_out(backend, names: tuple[str, ...]):
    kernels = {name: getattr(one_row, name) for name in names}
    for name in names:
        setattr(one_row, name, NoLaunch())
    yield
    for name, kernel in kernels.items():
        setattr(one_row, name, kernel)


@contextmanager
def product_left_out(backend, product: str):
    residual = backend.one_row._residual
    backend.one_row._residual = lambda kind, *rest: kind == product or residual(kind, *rest)
    yield
    backend.one_row._residual = residual


@contextmanager
def settings(backend, values: dict):
    """one_row's settings changed (lists as tuples; block tables merged over the built ones), then restored."""
    built = {name: getattr(one_row, name) for name in values}
    for name, value in values.items():
        if name.endswith("BLOCKS"):
            value = built[name] | {kind: tuple(b) for kind, b in value.items()}
        setattr(one_row, name, tuple(value) if isinstance(value, list) else value)
    backend.one_row = one_row.OneRowLayers(backend.network, backend.config)
    try:
        yield
    finally:
        for name, value in built.items():
            setattr(one_row, name, value)
        backend.one_row = one_row.OneRowLayers(backend.network, backend.config)


def variants(shares: bool, others: list[dict]) -> dict:
    """name -> (context manager, its argument)."""
    chosen = {"engine": (unchanged, None)}
    if shares:
        chosen["without PDL"] = (without_pdl, None)
        chosen |= {f"without {name}": (kernels_left_out, (name,)) for name in KERNELS}
        chosen["without every layer kernel"] = (kernels_left_out, KERNELS + ("residual_kernel",))
        chosen |= {f"without the {p} product": (product_left_out, p) for p in ("o", "down")}
    return chosen | {f"variant {json.dumps(values)}": (settings, values) for values in others}


def timed(backend, prompt, columns: int) -> float:
    backend.states.clear()  # a fresh capture of the step as it is now
    backend.warm([(1, columns)])
    ms = step_ms(backend, [prompt], reserve=int(columns * 0.6))  # a prompt of < 40 % of the columns
    assert backend.state.key_valid.shape[1] == columns, "the prompt fills another cache bucket"
    return median(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", choices=("bf16", "int8", "fp8"), default="bf16",
                        help="bf16 activations with these weights")
    parser.add_argument("--shares", action="store_true", help="also without PDL, and without each kind of kernel")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--columns", type=int, default=256, help="cache columns: a power of two from 256")
    parser.add_argument("--variants", type=json.loads, default=[],
                        help="JSON list of objects, each one_row's settings for one variant (BLOCKS is merged)")
    args = parser.parse_args()
    device = torch.device("cuda")
    speed = Speed(cuda_graph=True, compile_mode="default", max_seq_len=args.columns, one_row_kernels=True)
    quantised = None if args.weights == "bf16" else args.weights
    backend, _ = load_engine(args.ckpt, device, torch.bfloat16, quantised, speed, [(1, args.columns)])
    prompt = expand_prompt(encode_messages(load_tokenizer(args.ckpt), tts_messages(TEXTS[0])), backend.config)
    chosen = variants(args.shares, args.variants)
    rounds, errors = {name: [] for name in chosen}, {}
    for _ in range(args.rounds):
        for name, (context, argument) in chosen.items():
            try:
                with context(backend, argument):
                    rounds[name].append(timed(backend, prompt, args.columns))
            except Exception as error:  # a variant that fails is a row with its error; the others go on
                errors[name] = f"{type(error).__name__}: {error}"[:2000]
    step = {name: median(ms) for name, ms in rounds.items() if ms}
    if "engine" not in step:
        raise RuntimeError(f"the engine's step failed: {errors['engine']}")
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "weights": args.weights,
              "columns": args.columns,
              "blocks": backend.one_row.blocks,
              "settings": {name: getattr(one_row, name) for name in SETTINGS},
              "floor": floor_report(backend.config, 2, quantised, device, step["engine"]), "step_ms": step,
              "step_ms_rounds": rounds, "errors": errors}
    for name, error in errors.items():
        print(f"{name:60s} failed: {error}")
    for name, ms in step.items():
        print(f"{name:60s} {ms:.3f} ms ({ms - step['engine']:+.3f}; rounds {min(rounds[name]):.3f}-"
              f"{max(rounds[name]):.3f})")
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
