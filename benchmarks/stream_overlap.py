"""How much context chunked decoding needs: stream_error of every (left, lookahead) pair against the
whole-utterance decode, for one chunk size, over a few utterances of random codes.

    python benchmarks/stream_overlap.py [--codec DIR] [--chunk 10] [--frames 250] [--utterances 4] [--out F.json]
                                        [--device cuda [--no-tf32]]

Without --codec it uses the embedded tiny random codec, whose decoder has the released structure (kernel
sizes, dilations, upsampling ratios), so the context it needs is the released decoder's; the size of the
error also depends on the weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from higgs_bench.codec import load_codec
from higgs_bench.codec.random_codec import embedded_codec
from higgs_bench.codec.streaming import Streaming, measure, snr_db

LEFT = (0, 4, 8, 10, 11, 12, 16)
LOOKAHEAD = (0, 2, 4, 6, 8, 9, 10, 11, 12)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codec", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-tf32", action="store_true", help="cuDNN convolutions in full float32 on a GPU")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    codec = load_codec(args.codec or embedded_codec(), device=args.device)
    rng = np.random.default_rng(0)
    utterances = [rng.integers(0, codec.config.bins, (codec.config.num_codebooks, args.frames))
                  for _ in range(args.utterances)]
    wholes = [codec.decode(codes) for codes in utterances]
    rows = []
    for left in LEFT:
        for lookahead in LOOKAHEAD:
            streaming = Streaming(args.chunk, left, lookahead, first_chunk_frames=None)  # every chunk alike
            errors = [measure(codec, codes, streaming, whole) for codes, whole in zip(utterances, wholes)]
            rows.append({"left_frames": left, "lookahead_frames": lookahead,
                         "rel_error_max": max(e["rel_error"] for e in errors),
                         "max_error": max(e["max_error"] for e in errors)})
    table = Table(title=f"chunk {args.chunk} frames: SNR (dB, worst of {args.utterances}) against the whole decode")
    table.add_column("left \\ lookahead")
    for lookahead in LOOKAHEAD:
        table.add_column(str(lookahead), justify="right")
    for left in LEFT:
        table.add_row(str(left), *[f"{snr_db(r['rel_error_max']):.1f}" for r in rows if r["left_frames"] == left])
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps({"codec": str(args.codec or "embedded tiny random"), "chunk_frames": args.chunk,
                                        "device": args.device, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                                        "frames": args.frames, "utterances": args.utterances, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
