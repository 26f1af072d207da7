"""Reference clips from disk: read with soundfile, mixed to mono, resampled with soxr. Level is left as recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from higgs_bench.codec.config import CodecError


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """soxr's high-quality resampler (librosa's default, which Boson uses for clips at other rates)."""
    if from_rate == to_rate:
        return wave.astype(np.float32)
    return soxr.resample(wave.astype(np.float32), from_rate, to_rate, quality="HQ")


def read_clip(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, its sample rate) from an audio file; CodecError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"reference audio {path} does not exist")
    if path.stat().st_size == 0:
        raise CodecError(f"reference audio {path} is an empty file")
    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise CodecError(f"reference audio {path} is not a readable audio file ({err})") from err
    if wave.shape[0] == 0:
        raise CodecError(f"reference audio {path} has no samples")
    return wave.mean(axis=1), rate
