"""Reference clips from disk: read with soundfile, mixed to mono, resampled with soxr. Level is left as recorded."""

from __future__ import annotations

import re
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


def clip_seconds(path: str | Path) -> float:
    """The clip's duration from its header, without decoding it; CodecError for anything but a whole audio file."""
    path = Path(path)
    if not path.exists():
        raise CodecError(f"reference audio {path} does not exist")
    if not path.is_file():
        raise CodecError(f"reference audio {path} is not a regular file (a folder or a device?); give an audio file")
    if path.stat().st_size == 0:
        raise CodecError(f"reference audio {path} is an empty file")
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise CodecError(f"reference audio {path} is not a readable audio file ({err})") from err
    truncated = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", info.extra_info, re.MULTILINE)
    if truncated:
        raise CodecError(f"reference audio {path} is truncated: its header announces {truncated[1]} bytes of audio "
                         f"but the file holds {truncated[2]}; re-export the clip")
    return info.duration


def read_clip(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, its sample rate) from an audio file; CodecError for anything else."""
    clip_seconds(path)
    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise CodecError(f"reference audio {path} is not a readable audio file ({err})") from err
    if wave.shape[0] == 0:
        raise CodecError(f"reference audio {path} has no samples")
    return wave.mean(axis=1), rate
