"""The codec: names and shapes of the released tokenizer, both layouts, lengths, clips, and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from higgs_bench.codec import CodecConfig, CodecError, load_codec
from higgs_bench.codec.audio import read_clip, resample
from higgs_bench.codec.network import CodecNetwork
from higgs_bench.codec.random_codec import make_codec

# names and shapes of the released audio tokenizer's state dict (its safetensors header), kept with the tests
RELEASED_SHAPES = Path(__file__).parent / "data" / "higgs-audio-tokenizer-shapes.json"
TRAINING_ONLY = ("decoder_semantic.", "fc_post1.", "semantic_model.masked_spec_embed", "_codebook.embed_avg",
                 "_codebook.cluster_size", "_codebook.inited")


def test_names_and_shapes_match_the_released_tokenizer():
    released = json.loads(RELEASED_SHAPES.read_text())
    ours = {k: list(v.shape) for k, v in CodecNetwork(CodecConfig()).state_dict().items()}
    assert all(released.get(name) == shape for name, shape in ours.items()), [
        (n, s, released.get(n)) for n, s in ours.items() if released.get(n) != s][:5]
    unused = [k for k in released if k not in ours]
    assert unused and all(any(part in k for part in TRAINING_ONLY) for k in unused), unused[:5]


@pytest.fixture(scope="module")
def codec_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec")
    return make_codec(root / "boson"), make_codec(root / "hf", layout="hf")


@pytest.fixture(scope="module")
def codec(codec_dirs):
    return load_codec(codec_dirs[0], encoder=True)


def at_24k(path):
    wave, rate = read_clip(path)
    return resample(wave, rate, 24000)


def test_hop_length_and_sample_rate(codec):
    assert codec.config.hop_length == 960 and codec.sample_rate == 24000
    wave = codec.decode(np.random.default_rng(0).integers(0, 1024, (8, 7)))
    assert wave.dtype == np.float32 and wave.shape == (7 * 960,) and np.isfinite(wave).all()


@pytest.mark.parametrize(
    "codes, message",
    [
        (np.zeros((7, 5), dtype=np.int64), r"shape \[8, frames\]"),
        (np.full((8, 5), 1024), r"0..1023"),
        (np.full((8, 5), -1), r"0..1023"),
        (np.zeros((8, 5), dtype=np.float32), "integers"),
    ],
)
def test_codes_the_decoder_cannot_take_are_refused(codec, codes, message):
    with pytest.raises(CodecError, match=message):
        codec.decode(codes)


def test_both_layouts_hold_the_same_codec(codec_dirs, spoken_clip):
    boson, hf = (load_codec(d, encoder=True) for d in codec_dirs)
    wave = at_24k(spoken_clip)
    codes = boson.encode(wave, 24000)
    assert np.array_equal(codes, hf.encode(wave, 24000))
    assert np.abs(boson.decode(codes) - hf.decode(codes)).max() <= 1e-4


def test_encoding_speech_gives_varied_codes_at_25_per_second(codec, spoken_clip):
    wave = at_24k(spoken_clip)
    codes = codec.encode(wave, 24000)
    assert codes.dtype == np.int64 and codes.shape[0] == 8
    assert abs(codes.shape[1] - len(wave) / codec.config.hop_length) <= 1
    assert codes.min() >= 0 and codes.max() < 1024
    assert all(len(np.unique(row)) > 5 for row in codes)  # not one code repeated: the clip's content is in them
    assert len(codec.decode(codes)) == codes.shape[1] * codec.config.hop_length


def test_a_clip_at_another_rate_is_resampled_and_stereo_is_mixed(codec, tmp_path):
    t = np.arange(48000) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    soundfile.write(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 48000)
    soundfile.write(tmp_path / "mono.wav", tone, 48000)
    (stereo, rate), (mono, _) = read_clip(tmp_path / "stereo.wav"), read_clip(tmp_path / "mono.wav")
    assert rate == 48000 and stereo.shape == (48000,) and np.allclose(stereo, mono, atol=1e-6)
    assert abs(np.abs(stereo).max() - 0.3) < 1e-3  # level left as recorded
    assert codec.encode(stereo, 48000).shape == (8, 25)  # one second at 25 frames/s, not 50: resampled to 24 kHz


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), (b"", "empty file"), (b"this is text, not sound", "not a readable audio file")],
)
def test_reference_files_that_are_not_audio(tmp_path, content, message):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CodecError, match=message):
        read_clip(path)


def test_a_wav_with_no_samples(tmp_path):
    soundfile.write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32), 24000)
    with pytest.raises(CodecError, match="no samples"):
        read_clip(tmp_path / "silent.wav")


@pytest.mark.parametrize(
    "wave, message",
    [
        (np.zeros(500, dtype=np.float32), "shorter than one codec frame"),
        (np.zeros((2, 24000), dtype=np.float32), "1-D float waveform"),
        (np.full(24000, np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_audio_the_encoder_cannot_take(codec, wave, message):
    with pytest.raises(CodecError, match=message):
        codec.encode(wave, 24000)


def test_a_codec_loaded_for_decoding_refuses_to_encode(codec_dirs):
    with pytest.raises(CodecError, match="encoder=True"):
        load_codec(codec_dirs[0]).encode(np.zeros(24000, dtype=np.float32), 24000)


def test_broken_codec_directories(tmp_path):
    with pytest.raises(CodecError, match="does not exist"):
        load_codec(tmp_path / "none")
    folder = make_codec(tmp_path / "c")
    (folder / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match="corrupt"):
        load_codec(folder)
    (folder / "config.json").write_text('{"hidden_size": 3}')
    with pytest.raises(CodecError, match="neither"):
        load_codec(folder)
    hf = make_codec(tmp_path / "hf", layout="hf")
    (hf / "model.safetensors").unlink()
    with pytest.raises(CodecError, match="no model.safetensors"):
        load_codec(hf)


def test_a_decode_only_checkpoint_cannot_encode(tmp_path):
    import torch

    folder = make_codec(tmp_path / "c")
    state = torch.load(folder / "model.pth")
    torch.save({k: v for k, v in state.items() if not k.startswith("semantic_model.")}, folder / "model.pth")
    assert load_codec(folder).decode(np.zeros((8, 2), dtype=np.int64)).shape == (1920,)
    with pytest.raises(CodecError, match="tensors missing, e.g. .'semantic_model"):
        load_codec(folder, encoder=True)


@pytest.mark.oracle
def test_matches_the_transformers_port(codec_dirs, spoken_clip, tmp_path):
    """Decode the same codes and encode the same spoken_clip as transformers' HiggsAudioV2TokenizerModel."""
    from tests.oracles.venvs import run_oracle

    codec = load_codec(codec_dirs[1], encoder=True)
    wave = at_24k(spoken_clip)
    wave_16k = resample(wave, 24000, 16000)
    codes = np.random.default_rng(3).integers(0, 1024, (8, 12))
    request = {"codec_dir": str(codec_dirs[1]), "codes": codes.tolist(), "wave": wave.tolist()}
    theirs = run_oracle("transformers5", "hf_codec_oracle.py", request, tmp_path)
    assert theirs["unexpected"].size == 0 and theirs["missing_used"].size == 0, (theirs["unexpected"], theirs["missing_used"])
    ours = codec.decode(codes)
    assert ours.shape == theirs["wave"].shape == (12 * 960,)
    assert np.abs(ours - theirs["wave"]).max() <= 1e-4 * max(1.0, np.abs(theirs["wave"]).max())
    # Same audio into HuBERT: identical codes. Their torchaudio resampler against our soxr: nearly all.
    same_16k = run_oracle("transformers5", "hf_codec_oracle.py", {**request, "wave_16k": wave_16k.tolist()}, tmp_path)
    assert np.array_equal(codec.encode_resampled(wave, wave_16k), same_16k["codes"])
    own_resampler = codec.encode(wave, 24000)
    assert own_resampler.shape == theirs["codes"].shape
    assert (own_resampler == theirs["codes"]).mean() >= 0.95


@pytest.mark.oracle
def test_decoding_matches_bosons_own_decoder(codec_dirs, tmp_path):
    from tests.oracles.venvs import run_oracle

    codes = np.random.default_rng(3).integers(0, 1024, (8, 12))
    theirs = run_oracle("boson", "boson_oracle.py", {"task": "codec_decode", "codec_dir": str(codec_dirs[0]),
                                                     "codes": codes.tolist()}, tmp_path)["wave"]
    ours = load_codec(codec_dirs[0]).decode(codes)
    assert ours.shape == theirs.shape == (12 * 960,)
    assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
