"""Streaming audio: decode the codes chunk by chunk while the rest is generated.

The codec's decoder is not causal (its convolutions see about ten frames on each side), so a chunk decoded
alone is wrong at its edges. Each chunk is therefore decoded with `left_frames` of the frames before it and,
once they exist, `lookahead_frames` of the frames after it; only the chunk's own samples are kept. Lookahead
costs latency (the first audio waits for chunk + lookahead frames); left context costs decoding time only.
`stream_error` measures what a setting loses against decoding the whole utterance at once; the defaults are
picked by that measurement (docs/serving.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from higgs_bench.errors import HiggsBenchError
from higgs_bench.model.config import FRAME_RATE


@dataclass(frozen=True)
class Streaming:
    chunk_frames: int = 10  # 0.4 s of audio per chunk
    # the decoder sees exactly 10 frames on each side: with 10 and 10 the chunks equal the whole decode
    # (docs/serving.md), and 10 frames of lookahead cost 10 decode steps, not 0.4 s
    left_frames: int = 10
    lookahead_frames: int = 10
    # a shorter first chunk plays sooner, but the next chunk needs chunk_frames more frames generated while it
    # plays: playback waits unless the RTF stays at most first_chunk_frames / chunk_frames. 5 frames (0.2 s)
    # save 5 steps of first audio and hold up to an RTF of 0.5 (`playback` measures the stalls)
    first_chunk_frames: int | None = 5  # None: chunk_frames

    def __post_init__(self):
        if self.chunk_frames < 1:
            raise HiggsBenchError(f"chunk_frames={self.chunk_frames} must be >= 1")
        if self.first_chunk_frames is not None and self.first_chunk_frames < 1:
            raise HiggsBenchError(f"first_chunk_frames={self.first_chunk_frames} must be >= 1 (or unset)")
        if self.left_frames < 0 or self.lookahead_frames < 0:
            raise HiggsBenchError(f"left_frames={self.left_frames} and lookahead_frames={self.lookahead_frames} "
                                  "must be >= 0")

    @property
    def first_chunk(self) -> int:
        return self.first_chunk_frames or self.chunk_frames

    @property
    def first_window(self) -> int:
        """Frames decoded for the first chunk (it has no left context)."""
        return self.first_chunk + self.lookahead_frames

    @property
    def window(self) -> int:
        """Frames decoded for each later chunk."""
        return self.left_frames + self.chunk_frames + self.lookahead_frames

    def windows(self, frames: int) -> Iterator[tuple[int, int, int, int]]:
        """(decode_from, decode_to, keep_from, keep_to) frame indices of each chunk of an utterance of
        `frames` frames; the kept ranges tile 0..frames exactly once."""
        start = 0
        while start < frames:
            end = min(frames, start + (self.chunk_frames if start else self.first_chunk))
            yield max(0, start - self.left_frames), min(frames, end + self.lookahead_frames), start, end
            start = end


def decode_chunks(codec, codes: np.ndarray, streaming: Streaming) -> Iterator[np.ndarray]:
    """The waveform of `codes` [N, frames] chunk by chunk, as a player would receive it."""
    hop = codec.config.hop_length
    for lo, hi, start, end in streaming.windows(codes.shape[1]):
        wave = codec.decode(codes[:, lo:hi])
        yield wave[(start - lo) * hop : (end - lo) * hop]


def stream_error(whole: np.ndarray, streamed: np.ndarray) -> dict:
    """How far the chunked waveform is from the whole-utterance decode: the error's L2 norm relative to the
    signal's (0 when identical; 0.01 is a 40 dB signal-to-error ratio) and the largest sample error relative
    to the largest sample."""
    if whole.shape != streamed.shape:
        raise HiggsBenchError(f"streamed audio has {streamed.shape[0]} samples, the whole decode {whole.shape[0]}")
    whole = whole.astype(np.float64)
    error = whole - streamed
    signal, peak = float(np.linalg.norm(whole)), float(np.max(np.abs(whole), initial=0.0))
    return {"rel_error": float(np.linalg.norm(error)) / signal if signal else 0.0,
            "max_error": float(np.max(np.abs(error), initial=0.0)) / peak if peak else 0.0}


def playback(streaming: Streaming, frame_ready_s: list[float], end_s: float,
             decode_s: tuple[float, float]) -> tuple[float, float]:
    """What a listener gets: when the first audio plays, and for how long playback then stalls waiting for
    chunks. frame_ready_s[i]: when audio frame i was generated; end_s: when the utterance ended (a chunk whose
    lookahead runs past the end can only be decoded then); decode_s: the time to decode the first window and a
    later one. Chunks are decoded one after another, each once its frames exist."""
    first = playing = None
    decoded = stalled = 0.0
    for _, hi, start, end in streaming.windows(len(frame_ready_s)):
        cut = hi < end + streaming.lookahead_frames
        decoded = max(end_s if cut else frame_ready_s[hi - 1], decoded) + decode_s[0 if start == 0 else 1]
        if playing is None:
            first = playing = decoded
        stalled += max(0.0, decoded - playing)
        playing = max(playing, decoded) + (end - start) / FRAME_RATE
    if playing is None:
        return end_s, 0.0  # no audio: the listener learns so at the end
    return first, stalled


def snr_db(rel_error: float) -> float:
    return float("inf") if rel_error == 0 else -20 * float(np.log10(rel_error))


def measure(codec, codes: np.ndarray, streaming: Streaming, whole: np.ndarray | None = None) -> dict:
    """stream_error of one utterance under `streaming` (pass `whole` when it is already decoded)."""
    whole = codec.decode(codes) if whole is None else whole
    streamed = np.concatenate(list(decode_chunks(codec, codes, streaming))) if codes.shape[1] else whole
    return stream_error(whole, streamed)
