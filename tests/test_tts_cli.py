"""The `python -m higgs_bench.tts` command: outputs a user can reopen, and clear failures."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile


def tts(*args):
    return subprocess.run([sys.executable, "-m", "higgs_bench.tts", *map(str, args)], capture_output=True, text=True)


def test_writes_codes_and_prompt_per_request(tiny_hf, tmp_path):
    done = tts("--model", tiny_hf, "--text", "Hello world.", "--text", "A second, longer request.", "--greedy",
               "--max-frames", 60, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["000.codes.npy", "000.prompt.json", "001.codes.npy", "001.prompt.json"]
    codes = np.load(tmp_path / "out" / "000.codes.npy")
    assert codes.dtype == np.int64 and codes.shape[0] == 8 and 0 < codes.shape[1] <= 60 - 8
    assert codes.min() >= 0 and codes.max() <= 1023
    ids = json.loads((tmp_path / "out" / "000.prompt.json").read_text())["token_ids"]
    assert ids[0] == 128000 and ids[-1] == 128013


def test_with_a_codec_each_request_gets_a_24khz_wav_of_its_frames(tiny_hf, tmp_path):
    from higgs_bench.codec.random_codec import make_codec

    codec = make_codec(tmp_path / "codec")
    done = tts("--model", tiny_hf, "--codec", codec, "--text", "Hello.", "--greedy", "--max-frames", 40,
               "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    audio, rate = soundfile.read(tmp_path / "out" / "000.wav")
    frames = np.load(tmp_path / "out" / "000.codes.npy").shape[1]
    assert rate == 24000 and len(audio) == frames * 960 and np.abs(audio).max() > 0


def test_voice_cloning_from_reference_codes(tiny_hf, tmp_path, reference_codes):
    np.save(tmp_path / "ref.npy", reference_codes)
    done = tts("--model", tiny_hf, "--text", "In my voice.", "--ref-text", "Reference words.", "--ref-codes",
               tmp_path / "ref.npy", "--greedy", "--max-frames", 30, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    ids = json.loads((tmp_path / "out" / "000.prompt.json").read_text())["token_ids"]
    assert 128016 in ids  # the reference clip's audio slot


def test_sampled_runs_repeat_with_a_seed(tiny_hf, tmp_path):
    for name in ("a", "b"):
        assert tts("--model", tiny_hf, "--text", "Hi.", "--seed", 5, "--max-frames", 30, "--out", tmp_path / name).returncode == 0
    assert np.array_equal(np.load(tmp_path / "a" / "000.codes.npy"), np.load(tmp_path / "b" / "000.codes.npy"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", " "], "text is empty"),
        (["--text", "word " * 5000], "above this model's limit of 4096 positions"),
        (["--text", "Hi.", "--max-frames", 8], "warm-up"),
        (["--text", "Hi.", "--temperature", 0], "temperature must be > 0"),
    ],
)
def test_bad_requests_fail_clearly_and_write_nothing(tiny_hf, tmp_path, args, message):
    done = tts("--model", tiny_hf, *args, "--out", tmp_path / "out")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_model_directory(tmp_path):
    done = tts("--model", tmp_path / "missing", "--text", "Hi.", "--out", tmp_path / "out")
    assert done.returncode == 2 and "does not exist" in done.stderr


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    from higgs_bench.codec.random_codec import make_codec

    return make_codec(tmp_path_factory.mktemp("codec") / "codec")


def test_voice_cloning_from_a_recording_end_to_end(tiny_hf, codec_dir, spoken_clip, tmp_path):
    clip = spoken_clip
    from higgs_bench.codec import load_codec
    from higgs_bench.codec.audio import read_clip

    common = ["--model", tiny_hf, "--codec", codec_dir, "--text", "Now say this in my voice.",
              "--ref-text", "This is how I sound.", "--greedy", "--max-frames", 40]
    done = tts(*common, "--ref-audio", clip, "--out", tmp_path / "audio")
    assert done.returncode == 0, done.stderr
    audio, rate = soundfile.read(tmp_path / "audio" / "000.wav")
    codec = load_codec(codec_dir, encoder=True)
    frames = np.load(tmp_path / "audio" / "000.codes.npy").shape[1]
    assert rate == codec.config.sample_rate == 24000
    assert len(audio) == frames * np.prod(codec.config.ratios)
    # The clip's codes go where precomputed reference codes go (the layout both oracles check).
    np.save(tmp_path / "ref.npy", codec.encode(*read_clip(clip)))
    assert tts(*common, "--ref-codes", tmp_path / "ref.npy", "--out", tmp_path / "codes").returncode == 0
    for name in ("000.prompt.json", "000.codes.npy"):
        assert (tmp_path / "audio" / name).read_bytes() == (tmp_path / "codes" / name).read_bytes()


def test_a_reference_clip_too_long_for_the_model(tiny_hf, codec_dir, tmp_path):
    noise = np.random.default_rng(0).normal(0, 0.1, 170 * 16000).astype(np.float32)  # 170 s > 4096 frames
    soundfile.write(tmp_path / "long.wav", noise, 16000)
    done = tts("--model", tiny_hf, "--codec", codec_dir, "--text", "Hi.", "--ref-text", "Long.", "--ref-audio",
               tmp_path / "long.wav", "--out", tmp_path / "out")
    assert done.returncode == 2 and "reference clip is 170.0 s" in done.stderr and "shorter clip" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (None, [], "does not exist"),
        (lambda p: p.write_bytes(b""), [], "empty file"),
        (lambda p: p.write_text("not sound"), [], "not a readable audio file"),
        (lambda p: soundfile.write(p, np.zeros(100, np.float32), 24000), [], "shorter than one codec frame"),
        (lambda p: soundfile.write(p, np.zeros(24000, np.float32), 24000), ["--no-codec"], "--ref-audio needs --codec"),
    ],
)
def test_bad_reference_clips(tiny_hf, codec_dir, tmp_path, make, extra, message):
    path = tmp_path / "ref.wav"
    if make is not None:
        make(path)
    codec = [] if "--no-codec" in extra else ["--codec", codec_dir]
    done = tts("--model", tiny_hf, *codec, "--text", "Hi.", "--ref-text", "Words.", "--ref-audio", path,
               "--out", tmp_path / "out")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
