"""Speak text with a Higgs Audio v2 checkpoint; writes the audio codes of each request.

    python -m higgs_bench.tts --model DIR --text "Hello world." [--text ...] --out DIR
        [--greedy | --temperature T --top-k K --top-p P --seed S] [--max-frames N]
        [--codec DIR]                                   (also write NNN.wav, 24 kHz mono)
        [--ref-text "transcript" --ref-audio clip.wav]  (voice cloning; needs --codec to encode the clip)
        [--ref-text "transcript" --ref-codes ref.npy]   (voice cloning from a clip's codes [8, frames])

Per request NNN (000, 001, ...): NNN.codes.npy, int64 [codebooks, frames] after reverting the delay
pattern and trimming, and NNN.prompt.json, the prompt token ids. Files appear only once every request
has been generated. An --out folder that holds an earlier run's NNN.* files is refused unless --overwrite
is given, which removes those files (and only those) when the new ones move in.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.bench.environment import resolve_device
from higgs_bench.codec import Codec, load_codec
from higgs_bench.codec.audio import clip_seconds
from higgs_bench.errors import HiggsBenchError, OutputError, PromptError
from higgs_bench.files import writable_dir
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model import dtypes
from higgs_bench.model.checkpoint import checkpoint_config
from higgs_bench.model.config import FRAME_RATE
from higgs_bench.model.prompt import DEFAULT_SCENE, encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m higgs_bench.tts", description="Speak text with Higgs Audio v2.")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint directory (Boson or transformers layout)")
    parser.add_argument("--text", required=True, action="append", help="text to speak; repeat for a batch")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's NNN.* files in --out")
    parser.add_argument("--codec", type=Path, help="audio tokenizer directory: also write NNN.wav")
    parser.add_argument("--scene", default=DEFAULT_SCENE, help="scene description ('' for none)")
    parser.add_argument("--ref-text", help="transcript of the reference clip (voice cloning)")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--ref-audio", type=Path, help="reference clip (any rate; stereo is mixed to mono)")
    reference.add_argument("--ref-codes", type=Path, help="reference clip's audio codes, .npy [codebooks, frames]")
    add_generation_arguments(parser)
    return parser.parse_args(argv)


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Sampling, frame limit, dtype and device: the options every command that generates speech takes."""
    parser.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic, no RAS)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--ras-win-len", type=int, default=7, help="repetition-aware sampling window (0: off)")
    parser.add_argument("--ras-max-repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ignore-eos", action="store_true",
                        help="never end at EOS: every request runs to its frame limit (load tests)")
    parser.add_argument("--max-frames", type=int, default=1024,
                        help="generation steps per request (25 per second; the first 8 are delay warm-up)")
    parser.add_argument("--dtype", choices=sorted(dtypes.TORCH), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def sampling_from_args(args) -> SamplingConfig:
    return SamplingConfig(
        greedy=args.greedy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        ras_win_len=args.ras_win_len or None,
        ras_win_max_num_repeat=args.ras_max_repeat,
        seed=args.seed,
        ignore_eos=args.ignore_eos,
    )


RESULT_FILE = re.compile(r"^\d{3,}\.(codes\.npy|prompt\.json|wav)$")


def check_arguments(args) -> None:
    """Everything that can be refused before a model is loaded: the text, the device, the output folder."""
    for text in args.text + [args.ref_text or "", args.scene or ""]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise PromptError(f"the text {text!r} is not valid UTF-8 ({err.reason}); pass UTF-8 text") from err
    resolve_device(args.device, "--device")
    writable_dir(args.out, "--out", create=False)
    earlier = earlier_results(args.out) if args.out.is_dir() else []
    if earlier and not args.overwrite:
        raise OutputError(f"--out {args.out} holds an earlier run's results ({', '.join(earlier[:3])}"
                          f"{', ...' if len(earlier) > 3 else ''}); give another folder, or add --overwrite to "
                          "replace them")


def earlier_results(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if RESULT_FILE.match(p.name))


def reference_codes(args, max_positions: int) -> tuple[np.ndarray | None, Codec | None]:
    """The reference clip's codes (encoded here from --ref-audio, or read from --ref-codes) and the codec."""
    if args.ref_audio is not None:
        if args.codec is None:
            raise PromptError("--ref-audio needs --codec: the audio tokenizer turns the clip into codes")
        seconds = clip_seconds(args.ref_audio)  # from the header: a bad or overlong file fails before decoding
        if seconds * FRAME_RATE >= max_positions:
            raise PromptError(f"the reference clip is {seconds:.1f} s ({seconds * FRAME_RATE:.0f} frames), more than "
                              f"the model's {max_positions} positions; use a shorter clip than {args.ref_audio}")
        codec = load_codec(args.codec, encoder=True)
        return codec.encode_file(args.ref_audio), codec
    codec = load_codec(args.codec) if args.codec else None
    if args.ref_codes is None:
        return None, codec
    try:
        return np.load(args.ref_codes), codec
    except (OSError, ValueError) as err:
        raise PromptError(f"cannot read reference codes {args.ref_codes}: {err}") from err


def run(args) -> list[Path]:
    sampling = sampling_from_args(args)
    check_arguments(args)
    ref, codec = reference_codes(args, checkpoint_config(args.model).max_position_embeddings)
    backend = TorchBackend.from_checkpoint(args.model, device=args.device, dtype=dtypes.TORCH[args.dtype])
    tokenizer = load_tokenizer(args.model)
    prompts = [
        encode_messages(tokenizer, tts_messages(text, args.scene or None, args.ref_text, ref), backend.config.num_codebooks)
        for text in args.text
    ]
    inputs = [expand_prompt(p, backend.config) for p in prompts]
    if ref is not None:
        check_reference_fits(ref, max(len(i) for i in inputs), backend)
    result = generate(backend, inputs, sampling, args.max_frames)
    codes = result.codes(backend.config.stream_bos_id, backend.config.stream_eos_id)
    return write_outputs(args.out, prompts, codes, codec, replace=args.overwrite)


def check_reference_fits(ref: np.ndarray, prompt_positions: int, backend) -> None:
    """A clip whose codes fill the model's positions leaves no room to speak: say so in the clip's terms."""
    room = backend.max_positions - prompt_positions
    if room <= backend.config.num_codebooks:
        frames = ref.shape[-1]
        raise PromptError(
            f"the reference clip is {frames / FRAME_RATE:.1f} s ({frames} frames); with the text its prompt takes "
            f"{prompt_positions} of the model's {backend.max_positions} positions, leaving no room to speak. "
            "Use a shorter clip."
        )


def write_outputs(out: Path, prompts, codes, codec=None, replace: bool = False) -> list[Path]:
    """Write every file into a staging folder inside `out`, then move them in together (each move is a
    rename, so no file is ever half-written). With `replace`, an earlier run's NNN.* files go first."""
    written = []
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".staging-") as staging:
        staging = Path(staging)
        for i, (prompt, row_codes) in enumerate(zip(prompts, codes)):
            np.save(staging / f"{i:03d}.codes.npy", row_codes.numpy().astype(np.int64))
            (staging / f"{i:03d}.prompt.json").write_text(json.dumps({"token_ids": prompt.token_ids}))
            if codec is not None:
                soundfile.write(staging / f"{i:03d}.wav", codec.decode(row_codes), codec.sample_rate)
        if replace:
            for name in earlier_results(out):
                (out / name).unlink()
        for file in sorted(staging.iterdir()):
            written.append(file.rename(out / file.name))
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        written = run(args)
    except HiggsBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk or a folder that went away while writing
        print(f"error: could not write the results into {args.out}: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
