"""The timing arithmetic, with a scripted backend and a fake clock: which stamp each figure reads, how many
samples it pools, and what the real-time factors divide by."""

import numpy as np
import pytest

from higgs_bench.bench.timing import DecodeTimes, summarise_batch, time_decoding, time_generation
from higgs_bench.codec.streaming import Streaming
from higgs_bench.generate.sampling import SamplingConfig
from tests.test_sampling_and_loop import ScriptedBackend, prompt


class Clock:
    """Prefill takes 50 ms (up to the first stamp); each later call of the clock is 10 ms after the last."""

    def __init__(self):
        self.now, self.calls = 0.0, 0

    def __call__(self):
        self.calls += 1
        self.now += 0.05 if self.calls == 2 else (0.0 if self.calls == 1 else 0.01)
        return self.now


def test_stamps_read_the_frame_each_figure_is_defined_by():
    frames = 30
    run = time_generation(ScriptedBackend(eos_at=[1000, 1000]), [prompt(), prompt(7)], frames,
                          SamplingConfig(greedy=True), clock=Clock())
    stamps = np.array(run["stamps_s"])
    assert len(stamps) == frames and stamps[0] == pytest.approx(0.05)  # prefill + the forced BOS frame
    assert np.diff(stamps) == pytest.approx(0.01)  # every later frame 10 ms apart

    decode = DecodeTimes(first_window=14, chunk_s=0.02, utterance_s=0.1)  # a 10-frame chunk with 4 of lookahead
    summary = summarise_batch(2, [run, run], frames, num_codebooks=8, decode=decode)
    assert summary["time_to_first_frame_ms"] == pytest.approx(50 + 8 * 10)  # frame 8: codebook 7's first code
    assert summary["time_to_first_audio_ms"] == pytest.approx(50 + 21 * 10 + 20)  # frames 8..21, then decoding
    assert summary["prefill_ms"] == pytest.approx(50)
    assert summary["frame_ms"]["n"] == 2 * (frames - 1) and summary["frame_ms"]["median"] == pytest.approx(10)
    assert summary["frame_ms"]["iqr"] == pytest.approx(0, abs=1e-9) and summary["runs"] == 2
    audio_s = (frames - 8) / 25
    e2e = 0.05 + (frames - 1) * 0.01
    assert summary["rtf"] == pytest.approx(e2e / audio_s) and summary["throughput"] == pytest.approx(2 * audio_s / e2e)
    assert summary["rtf_with_codec"] == pytest.approx((e2e + 2 * 0.1) / audio_s)  # both rows decoded


def test_a_chunk_longer_than_the_run_has_no_first_audio_figure():
    run = {"stamps_s": list(np.arange(1, 13) * 0.01)}
    summary = summarise_batch(1, [run], 12, 8, DecodeTimes(first_window=10, chunk_s=0.01, utterance_s=0.01))
    assert "time_to_first_audio_ms" not in summary and summary["rtf_with_codec"] > summary["rtf"]


def test_spread_is_measured_across_runs():
    runs = [{"stamps_s": [0.05, 0.06, 0.07]}, {"stamps_s": [0.05, 0.08, 0.11]}]
    frame_ms = summarise_batch(1, runs, 3, 1)["frame_ms"]
    assert frame_ms["n"] == 4 and frame_ms["median"] == pytest.approx(20) and frame_ms["stdev"] == pytest.approx(
        np.std([10, 10, 30, 30], ddof=1))
    assert frame_ms["iqr"] == pytest.approx(20)


def test_decoding_is_timed_per_chunk_and_per_utterance():
    class Codec:
        def __init__(self):
            self.lengths = []

        def decode(self, codes):
            self.lengths.append(codes.shape[1])

    clock, codec = Clock(), Codec()
    times = time_decoding(codec, 8, Streaming(10, 10, 6), utterance_frames=250, repeats=3, clock=clock)
    assert codec.lengths == [11] * 4 + [250] * 4  # the 5-frame first chunk with its lookahead; one warm-up each
    assert times.first_window == 11 and times.chunk_s > 0 and times.utterance_s > 0
