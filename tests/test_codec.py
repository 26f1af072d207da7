"""The codec's decode path: shapes from the released tokenizer, lengths, and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from higgs_bench.codec import CodecConfig, CodecError, load_codec
from higgs_bench.codec.network import CodecDecoder
from higgs_bench.tiny import make_codec

RELEASED_SHAPES = Path(__file__).resolve().parents[2] / "shared" / "research" / "higgs-audio-tokenizer-shapes.json"


@pytest.mark.skipif(not RELEASED_SHAPES.is_file(), reason="needs shared/research beside the checkout")
def test_decoder_names_and_shapes_match_the_released_tokenizer():
    released = json.loads(RELEASED_SHAPES.read_text())
    ours = {k: list(v.shape) for k, v in CodecDecoder(CodecConfig()).state_dict().items()}
    assert all(released.get(name) == shape for name, shape in ours.items()), [
        (n, s, released.get(n)) for n, s in ours.items() if released.get(n) != s][:5]
    decode_path = [k for k in released if k.startswith(("decoder_2.", "fc_post2.")) or
                   k.endswith(("_codebook.embed", "project_out.weight", "project_out.bias"))]
    assert sorted(decode_path) == sorted(ours)


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    return load_codec(make_codec(tmp_path_factory.mktemp("codec")))


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


def test_broken_codec_directories(tmp_path):
    with pytest.raises(CodecError, match="does not exist"):
        load_codec(tmp_path / "none")
    folder = make_codec(tmp_path / "c")
    (folder / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match="corrupt"):
        load_codec(folder)


@pytest.mark.oracle
def test_decoding_matches_bosons_own_decoder(codec, tmp_path):
    from tests.oracles.venvs import run_oracle

    codec_dir = make_codec(tmp_path / "codec")
    codes = np.random.default_rng(3).integers(0, 1024, (8, 12))
    theirs = run_oracle("boson", "boson_oracle.py", {"task": "codec_decode", "codec_dir": str(codec_dir),
                                                     "codes": codes.tolist()}, tmp_path)["wave"]
    ours = load_codec(codec_dir).decode(codes)
    assert ours.shape == theirs.shape == (12 * 960,)
    assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
