"""python -m higgs_bench.wer --manifest M.jsonl [--json]: word error rate of speech files.

Each manifest line is {"audio": path, "text": reference}; relative paths are read from the manifest's folder.
Prints per-utterance and corpus WER (errors pooled), plus the mean of per-utterance WER (Seed-TTS-Eval's score).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from higgs_bench.bench import asr
from higgs_bench.errors import HiggsBenchError


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise HiggsBenchError(f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise HiggsBenchError(f"manifest {path} is not UTF-8 text ({err}); write it as JSON lines in UTF-8") from err
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            audio, text = Path(item["audio"]), item["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise HiggsBenchError(f"{path}:{number}: expected {{\"audio\": path, \"text\": reference}} ({err})") from err
        if not isinstance(text, str):
            raise HiggsBenchError(f"{path}:{number}: \"text\" must be the reference words as a string, got {text!r}")
        audio = audio if audio.is_absolute() else path.parent / audio
        if audio.exists() and not audio.is_file():
            raise HiggsBenchError(f"{path}:{number}: audio {audio} is a folder, not an audio file")
        if not audio.is_file():
            raise HiggsBenchError(f"{path}:{number}: audio file {audio} does not exist")
        items.append({"audio": audio, "text": text})
    if not items:
        raise HiggsBenchError(f"{path}: no utterances")
    return items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m higgs_bench.wer", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--model", default=asr.BUNDLED, help="faster-whisper model name or directory")
    parser.add_argument("--normaliser", choices=("whisper", "seed-tts"), default="whisper")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        items = read_manifest(args.manifest)
        hypotheses = [asr.transcribe(i["audio"], args.model, args.device, args.compute_type) for i in items]
        result = asr.score([i["text"] for i in items], hypotheses, args.normaliser)
    except HiggsBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for item, row in zip(items, result.rows):
        row["audio"] = str(item["audio"])
    if args.json:
        print(json.dumps({"corpus_wer": result.corpus_wer, "mean_wer": result.mean_wer, "utterances": result.rows}))
        return 0
    table = Table(title=f"WER ({args.normaliser} normaliser, Whisper {args.model})")
    for column in ("audio", "reference", "hypothesis", "WER"):
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(Path(row["audio"]).name, row["reference"], row["hypothesis"], f"{row['wer']:.3f}")
    table.caption = f"corpus WER {result.corpus_wer:.3f} · mean per-utterance WER {result.mean_wer:.3f}"
    Console(width=max(Console().width, 120)).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
