"""Write a deterministic, randomly initialised Higgs Audio v2 checkpoint (no download needed).

    python -m higgs_bench.tiny --out DIR [--layout boson|hf] [--seed S] [--shape tiny|tiny-trtllm|higgs-v2-3b]

The tiny shape is the project's embedded default model. Its weights are random, so its "speech" is
noise, but every code path (prompts, dual-FFN routing, delay pattern, stopping) runs for real. One
weight is not plain noise: codebook 0's stream-EOS row of the audio head is scaled by `eos_boost`, so
utterances end by themselves after a few dozen frames instead of always running into the frame limit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError

from higgs_bench.codec.random_codec import make_codec
from higgs_bench.errors import HiggsBenchError, OutputError
from higgs_bench.model.random_checkpoint import MARKER, SHAPES, make_checkpoint


def check_out(out: Path, force: bool, option: str) -> None:
    """Refuse to replace a folder this tool did not write (unless forced), a file, or the current folder."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file; give a folder to create")
    if out == Path.cwd() or out in Path.cwd().parents:
        raise OutputError(f"{option} {out} holds the current folder; give a new folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not force:
        raise OutputError(f"{option} {out} already holds files this tool did not write; it would replace them. "
                          "Give an empty or new folder, or add --force to replace it")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m higgs_bench.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--layout", choices=("boson", "hf"), default="hf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--fast-forward-layers", type=int, nargs="*", default=[],
                        help="layers whose audio positions skip the layer (Boson layout only)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--codec-out", type=Path, help="also write a tiny random codec here (in --layout)")
    parser.add_argument("--force", action="store_true", help="replace --out / --codec-out even if they hold other files")
    args = parser.parse_args(argv)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    try:
        check_out(args.out, args.force, "--out")
        if args.codec_out:
            check_out(args.codec_out, args.force, "--codec-out")
            outs = sorted([args.out.absolute(), args.codec_out.absolute()], key=lambda p: len(p.parts))
            if outs[0] == outs[1] or outs[0] in outs[1].parents:
                raise OutputError("--out and --codec-out must be two separate folders, neither inside the other")
        make_checkpoint(args.out, args.layout, args.seed, args.shape, args.fast_forward_layers, dtype, args.device)
        if args.codec_out:
            make_codec(args.codec_out, args.seed, args.layout)
    except HiggsBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, SafetensorError) as err:  # a full disk, a read-only folder, too little memory
        print(f"error: could not write the checkpoint: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.shape} Higgs checkpoint ({args.layout} layout, seed {args.seed}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
