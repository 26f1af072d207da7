"""Streaming audio: chunks decoded with context tile the utterance, and with the default context they are the
whole-utterance decode; without context they are not (the decoder is not causal)."""

from dataclasses import replace

import numpy as np
import pytest

from higgs_bench.codec import load_codec
from higgs_bench.codec.random_codec import embedded_codec
from higgs_bench.codec.streaming import Streaming, decode_chunks, measure, playback, stream_error
from higgs_bench.errors import HiggsBenchError


@pytest.fixture(scope="module")
def codec():
    return load_codec(embedded_codec())


@pytest.fixture(scope="module")
def codes(codec):
    return np.random.default_rng(0).integers(0, codec.config.bins, (codec.config.num_codebooks, 47))


@pytest.mark.parametrize("frames,chunk,first", [(47, 10, None), (47, 10, 4), (10, 10, 3), (3, 10, None), (25, 1, 1),
                                                (0, 4, 2)])
def test_kept_ranges_tile_the_utterance_once(frames, chunk, first):
    streaming = Streaming(chunk, left_frames=3, lookahead_frames=2, first_chunk_frames=first)
    kept = [(start, end) for _, _, start, end in streaming.windows(frames)]
    assert [i for start, end in kept for i in range(start, end)] == list(range(frames))
    assert all(end - start == chunk for start, end in kept[1:-1])
    assert not kept or kept[0][1] == min(frames, first or chunk)
    for lo, hi, start, end in streaming.windows(frames):
        assert lo == max(0, start - 3) and hi == min(frames, end + 2)


def test_default_context_reproduces_the_whole_decode(codec, codes):
    streaming = Streaming()
    chunks = list(decode_chunks(codec, codes, streaming))
    assert [len(c) for c in chunks] == [5 * 960] + [9600] * 4 + [2 * 960]  # a short first chunk, then 10 frames
    error = measure(codec, codes, streaming)
    assert error["rel_error"] < 1e-4 and error["max_error"] < 1e-4


def test_too_little_context_is_measured_as_error(codec, codes):
    assert measure(codec, codes, Streaming(10, left_frames=0, lookahead_frames=0))["rel_error"] > 0.1
    one_short = measure(codec, codes, Streaming(10, left_frames=10, lookahead_frames=9))["rel_error"]
    assert 1e-4 < one_short < 0.1  # the decoder sees exactly 10 frames ahead


def test_playback_stalls_when_the_first_chunk_plays_out_before_the_next_is_decoded():
    """A 5-frame first chunk (0.2 s) needs the next 10 frames within 0.2 s: at 30 ms a frame (RTF 0.75) playback
    waits; at 10 ms a frame, or with a first chunk as long as the others, it does not."""
    short = Streaming(chunk_frames=10, left_frames=0, lookahead_frames=2, first_chunk_frames=5)
    slow = [0.03 * i for i in range(25)]
    first, stall = playback(short, slow, end_s=0.8, decode_s=(0.01, 0.02))
    # first window: frames 0-6, ready at 0.18, decoded 0.19, plays to 0.39; the second needs frame 16 (0.48),
    # decoded 0.50: 0.11 s of silence; the third is cut by the end (0.8), decoded 0.82, before 0.90
    assert first == pytest.approx(0.19) and stall == pytest.approx(0.11)
    assert playback(short, [0.01 * i for i in range(25)], 0.3, (0.01, 0.02))[1] == 0.0
    assert playback(replace(short, first_chunk_frames=None), slow, 0.8, (0.01, 0.02))[1] == 0.0
    assert playback(short, [], end_s=0.4, decode_s=(0.01, 0.02)) == (0.4, 0.0)  # no audio: known at the end


def test_stream_error_compares_like_with_like():
    wave = np.sin(np.arange(100.0))
    assert stream_error(wave, wave.copy()) == {"rel_error": 0.0, "max_error": 0.0}
    assert stream_error(wave, 1.1 * wave)["rel_error"] == pytest.approx(0.1)
    with pytest.raises(HiggsBenchError, match="streamed audio has 99 samples"):
        stream_error(wave, wave[:99])
    with pytest.raises(HiggsBenchError, match="must be >= 1"):
        Streaming(chunk_frames=0)
