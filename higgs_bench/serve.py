"""Replay a request trace through in-flight batching (generate/slots.py) and write each request's speech.

    python -m higgs_bench.serve --model DIR [--codec DIR] --requests R.jsonl --slots N --out DIR
        [--greedy | --temperature T --top-p P ...] [--max-frames F] [--batching inflight|static]
        [--first-chunk-frames F --chunk-frames K --left-frames L --lookahead-frames A] [--ignore-eos] [--device D]

R.jsonl holds one JSON object per line: {"id": "a1", "text": "...", "arrival_s": 0.25}, optionally with
"ref_audio" (a clip) and "ref_text" (its transcript) for voice cloning, and "max_frames". Requests join a
free slot once their arrival time (seconds after the start) has come. The command writes <id>.codes.npy per
request (and <id>.wav with --codec) and serving.json: per request the queue wait, time to first audio (from
arrival until the first F-frame chunk and its A lookahead frames are generated, plus the codec's time to decode
them, measured on the run's device after the run), playback stalls after it (later chunks of K frames, each
decoded with L frames before it), real-time factor, end-to-end latency and how it ended (EOS or the frame
limit). A request that cannot run (no text, a missing clip, too long) is refused in serving.json
on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.bench.serving import request_figures
from higgs_bench.bench.timing import chunk_decode_seconds
from higgs_bench.codec import load_codec
from higgs_bench.codec.streaming import Streaming
from higgs_bench.errors import HiggsBenchError, OutputError
from higgs_bench.files import atomic_path, write_json
from higgs_bench.generate.delay import codes_from_stream
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.slots import BATCHING, Admission, Request, serve
from higgs_bench.model import dtypes
from higgs_bench.model.prompt import DEFAULT_SCENE, encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer
from higgs_bench.tts import add_generation_arguments, sampling_from_args

SUMMARY = "serving.json"
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # becomes a file name in --out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m higgs_bench.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="checkpoint directory")
    parser.add_argument("--codec", type=Path, help="audio tokenizer directory: also write <id>.wav, time first audio")
    parser.add_argument("--requests", required=True, type=Path, help="JSON lines, one request each")
    parser.add_argument("--slots", required=True, type=int, help="requests decoded together at most")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scene", default=DEFAULT_SCENE, help="scene description ('' for none)")
    parser.add_argument("--chunk-frames", type=int, default=Streaming.chunk_frames, help="frames per audio chunk")
    parser.add_argument("--first-chunk-frames", type=int, default=Streaming.first_chunk_frames,
                        help="frames of the first chunk, which plays sooner the shorter it is")
    parser.add_argument("--left-frames", type=int, default=Streaming.left_frames,
                        help="frames before a chunk decoded with it (codec/streaming.py)")
    parser.add_argument("--lookahead-frames", type=int, default=Streaming.lookahead_frames,
                        help="frames after a chunk waited for and decoded with it")
    parser.add_argument("--batching", choices=BATCHING, default="inflight",
                        help="inflight: requests join free slots between steps; static: only when all are free")
    add_generation_arguments(parser)
    return parser.parse_args(argv)


def read_requests(path: Path, default_max_frames: int) -> tuple[list[dict], dict[str, str]]:
    """The trace's valid entries, and for every invalid one its id (or line) and why."""
    entries, refused = [], {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise HiggsBenchError(f"cannot read --requests {path}: {err}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            refused[f"line {number}"] = f"not JSON: {err}"
            continue
        name = entry.get("id") if isinstance(entry, dict) else None
        why = entry_problem(entry, default_max_frames)
        if not isinstance(name, str) or not SAFE_ID.fullmatch(name):
            refused[f"line {number}"] = why or f"\"id\" must be letters, digits, '.', '_' or '-' (got {name!r})"
        elif name in refused or any(e["id"] == name for e in entries):
            refused[f"line {number}"] = f"id {name!r} is used twice"
        elif why:
            refused[name] = why
        else:
            entries.append(entry | {"max_frames": entry.get("max_frames", default_max_frames),
                                    "arrival_s": float(entry.get("arrival_s", 0.0))})
    return entries, refused


def entry_problem(entry, default_max_frames: int) -> str | None:
    if not isinstance(entry, dict):
        return "not a JSON object"
    if not isinstance(entry.get("text"), str) or not entry["text"].strip():
        return "no \"text\" to speak"
    arrival = entry.get("arrival_s", 0.0)
    if not isinstance(arrival, (int, float)) or isinstance(arrival, bool) or not 0 <= arrival < float("inf"):
        return f"\"arrival_s\" must be a number of seconds >= 0 (got {arrival!r})"
    frames = entry.get("max_frames", default_max_frames)
    if not isinstance(frames, int) or isinstance(frames, bool) or frames <= 8:
        return f"\"max_frames\" must be a whole number above the 8 delay warm-up frames (got {frames!r})"
    if ("ref_audio" in entry) != ("ref_text" in entry):
        return "voice cloning needs both \"ref_audio\" and \"ref_text\""
    if "ref_audio" in entry and not Path(str(entry["ref_audio"])).is_file():
        return f"reference clip {entry['ref_audio']} does not exist"
    return None


def build_requests(entries, refused, args, backend, tokenizer) -> list[Request]:
    encoder, requests = None, []
    for entry in entries:
        reference = None
        try:
            if "ref_audio" in entry:
                if args.codec is None:
                    raise HiggsBenchError("a reference clip needs --codec to turn it into codes")
                encoder = encoder or load_codec(args.codec, encoder=True)
                reference = encoder.encode_file(entry["ref_audio"])
            messages = tts_messages(entry["text"], args.scene or None, entry.get("ref_text"), reference)
            prompt = expand_prompt(encode_messages(tokenizer, messages, backend.config.num_codebooks), backend.config)
        except HiggsBenchError as err:
            refused[entry["id"]] = str(err)
            continue
        requests.append(Request(entry["id"], prompt, entry["max_frames"], entry["arrival_s"]))
    return requests


def run(args) -> Path:
    if args.slots < 1:
        raise HiggsBenchError(f"--slots={args.slots} must be >= 1")
    stream = Streaming(args.chunk_frames, args.left_frames, args.lookahead_frames,
                       args.first_chunk_frames)  # refuses bad values first
    if (args.out / SUMMARY).exists():
        raise OutputError(f"--out {args.out} holds an earlier replay ({SUMMARY}); give another folder")
    entries, refused = read_requests(args.requests, args.max_frames)
    backend = TorchBackend.from_checkpoint(args.model, device=args.device, dtype=dtypes.TORCH[args.dtype])
    requests = build_requests(entries, refused, args, backend, load_tokenizer(args.model))
    codec = load_codec(args.codec, device=args.device) if args.codec else None
    start = time.perf_counter()
    results = serve(backend, requests, sampling_from_args(args), args.slots, admission=Admission(args.batching))
    wall_s = time.perf_counter() - start
    n = backend.config.num_codebooks
    decode_s = chunk_decode_seconds(codec, n, stream) if codec else None
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [{"id": name, "status": "refused", "error": why} for name, why in refused.items()]
    bos, eos = backend.config.stream_bos_id, backend.config.stream_eos_id
    for result in results:
        if result.error:
            rows.append({"id": result.id, "status": "refused", "error": result.error})
            continue
        codes = codes_from_stream(result.streams, bos, eos)
        with atomic_path(args.out / f"{result.id}.codes.npy") as temp, open(temp, "wb") as f:
            np.save(f, codes.numpy().astype(np.int64))
        if codec is not None:
            with atomic_path(args.out / f"{result.id}.wav") as temp:
                soundfile.write(temp, codec.decode(codes), codec.sample_rate, format="WAV")
        rows.append(request_figures(result, codes.shape[1], n, stream, decode_s))  # no codec: no first-audio time
    done = [r for r in rows if r["status"] == "ok"]
    write_json(args.out / SUMMARY, {"slots": args.slots, "batching": args.batching, "requests": len(rows),
                                    "completed": len(done), "streaming": dataclasses.asdict(stream),
                                    "refused": len(rows) - len(done), "wall_s": wall_s,
                                    "audio_s_per_s": sum(r["audio_s"] for r in done) / wall_s, "per_request": rows})
    return args.out / SUMMARY


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except HiggsBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: could not write into {args.out}: {err}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
