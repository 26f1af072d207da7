"""Streaming audio: chunks decoded with context tile the utterance, and with the default context they are the
whole-utterance decode; without context they are not (the decoder is not causal)."""

import numpy as np
import pytest

from higgs_bench.codec import load_codec
from higgs_bench.codec.random_codec import embedded_codec
from higgs_bench.codec.streaming import Streaming, decode_chunks, measure, stream_error
from higgs_bench.errors import HiggsBenchError


@pytest.fixture(scope="module")
def codec():
    return load_codec(embedded_codec())


@pytest.fixture(scope="module")
def codes(codec):
    return np.random.default_rng(0).integers(0, codec.config.bins, (codec.config.num_codebooks, 47))


@pytest.mark.parametrize("frames,chunk", [(47, 10), (10, 10), (3, 10), (25, 1), (0, 4)])
def test_kept_ranges_tile_the_utterance_once(frames, chunk):
    streaming = Streaming(chunk, left_frames=3, lookahead_frames=2)
    kept = [(start, end) for _, _, start, end in streaming.windows(frames)]
    assert [i for start, end in kept for i in range(start, end)] == list(range(frames))
    for lo, hi, start, end in streaming.windows(frames):
        assert lo == max(0, start - 3) and hi == min(frames, end + 2)


def test_default_context_reproduces_the_whole_decode(codec, codes):
    streaming = Streaming()
    chunks = list(decode_chunks(codec, codes, streaming))
    assert len(chunks) == 5 and [len(c) for c in chunks] == [9600] * 4 + [7 * 960]
    error = measure(codec, codes, streaming)
    assert error["rel_error"] < 1e-4 and error["max_error"] < 1e-4


def test_too_little_context_is_measured_as_error(codec, codes):
    assert measure(codec, codes, Streaming(10, left_frames=0, lookahead_frames=0))["rel_error"] > 0.1
    one_short = measure(codec, codes, Streaming(10, left_frames=10, lookahead_frames=9))["rel_error"]
    assert 1e-4 < one_short < 0.1  # the decoder sees exactly 10 frames ahead


def test_stream_error_compares_like_with_like():
    wave = np.sin(np.arange(100.0))
    assert stream_error(wave, wave.copy()) == {"rel_error": 0.0, "max_error": 0.0}
    assert stream_error(wave, 1.1 * wave)["rel_error"] == pytest.approx(0.1)
    with pytest.raises(HiggsBenchError, match="streamed audio has 99 samples"):
        stream_error(wave, wave[:99])
    with pytest.raises(HiggsBenchError, match="must be >= 1"):
        Streaming(chunk_frames=0)
