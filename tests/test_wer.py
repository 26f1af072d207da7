"""The WER harness on real speech (espeak-ng) with the bundled Whisper base."""

import json
import shutil
import subprocess
import sys

import pytest

from higgs_bench.bench import asr

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "She sells sea shells by the sea shore.",
    "We will meet at the old library after lunch.",
]
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    lines = []
    for i, text in enumerate(SENTENCES):
        subprocess.run(["espeak-ng", "-w", str(folder / f"{i}.wav"), text], check=True)
        lines.append(json.dumps({"audio": f"{i}.wav", "text": text}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def wer_cli(*args):
    return subprocess.run([sys.executable, "-m", "higgs_bench.wer", *map(str, args)], capture_output=True, text=True)


def test_real_speech_transcribes_back(manifest):
    done = wer_cli("--manifest", manifest, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["corpus_wer"] < 0.15
    assert len(report["utterances"]) == len(SENTENCES)


def test_a_wrong_reference_scores_high(manifest, tmp_path):
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    wrong = [{"audio": str(manifest.parent / l["audio"]), "text": "Completely different words were expected here."}
             for l in lines]
    (tmp_path / "wrong.jsonl").write_text("\n".join(map(json.dumps, wrong)))
    report = json.loads(wer_cli("--manifest", tmp_path / "wrong.jsonl", "--json").stdout)
    assert report["corpus_wer"] > 0.8


def test_broken_manifests_are_named(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio": "missing.wav", "text": "x"}\n')
    done = wer_cli("--manifest", tmp_path / "m.jsonl")
    assert done.returncode == 2 and "missing.wav does not exist" in done.stderr
    (tmp_path / "m.jsonl").write_text("not json\n")
    assert "expected {" in wer_cli("--manifest", tmp_path / "m.jsonl").stderr


def test_a_hub_model_name_offline_points_to_the_bundled_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(asr.AsrError, match="asr.model=base"):
        asr.load_whisper("large-v3")


def test_normalisers():
    assert asr.normalise("Hello, World! It's 3 P.M.", "seed-tts") == "hello world it's 3 pm"
    assert asr.score(["Birds sing in the morning."], ["birds sing in the"]).corpus_wer == pytest.approx(0.2)
