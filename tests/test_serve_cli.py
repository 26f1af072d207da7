"""python -m higgs_bench.serve: a request trace replayed through in-flight batching, each request's speech
and figures written, bad requests refused on their own."""

import json
import subprocess
import sys

import numpy as np
import soundfile
import torch

from higgs_bench.codec.random_codec import make_codec
from higgs_bench.generate.delay import codes_from_stream
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.model.config import read_config
from higgs_bench.model.prompt import DEFAULT_SCENE, encode_messages, tts_messages
from tests.parity import GREEDY


def test_a_trace_is_replayed_and_bad_requests_are_refused_alone(tiny_hf, tokenizer, tmp_path):
    codec = make_codec(tmp_path / "codec")
    clip = tmp_path / "me.wav"
    soundfile.write(clip, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    trace = [
        {"id": "a1", "text": "Hello world.", "arrival_s": 0.0, "max_frames": 40},
        {"id": "a2", "text": "The birch canoe slid on the smooth planks.", "arrival_s": 0.05, "max_frames": 30},
        {"id": "clone", "text": "Say it like me.", "arrival_s": 0.1, "ref_audio": str(clip),
         "ref_text": "This is how I sound.", "max_frames": 30},
        {"id": "no-text", "arrival_s": 0.0},
        {"id": "lost-clip", "text": "Hi.", "ref_audio": str(tmp_path / "gone.wav"), "ref_text": "Gone."},
        {"id": "../escape", "text": "Hi."},
        "not an object",
    ]
    requests = tmp_path / "trace.jsonl"
    requests.write_text("\n".join(json.dumps(t) for t in trace) + "\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "higgs_bench.serve", "--model", str(tiny_hf), "--codec", str(codec),
                           "--requests", str(requests), "--slots", "2", "--out", str(out), "--greedy"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "serving.json").read_text())
    rows = {r["id"]: r for r in summary["per_request"]}
    assert summary["completed"] == 3 and summary["refused"] == 4 and summary["audio_s_per_s"] > 0
    assert "no \"text\"" in rows["no-text"]["error"] and "does not exist" in rows["lost-clip"]["error"]
    assert rows["line 6"]["status"] == rows["line 7"]["status"] == "refused"  # unsafe id, not an object
    assert not (tmp_path / "escape.codes.npy").exists()
    for name in ("a1", "a2", "clone"):
        row = rows[name]
        assert row["status"] == "ok" and row["queue_wait_ms"] >= 0 and row["e2e_ms"] > 0
        assert row["ended_by"] in ("eos", "frame limit") and (out / f"{name}.wav").stat().st_size > 0
    # what a request got in the trace is what it gets alone
    cfg = read_config(tiny_hf)
    prompt = expand_prompt(encode_messages(tokenizer, tts_messages("Hello world.", DEFAULT_SCENE)), cfg)
    alone = generate(TorchBackend.from_checkpoint(tiny_hf), [prompt], GREEDY, 40)
    expected = codes_from_stream(alone.streams[0], cfg.stream_bos_id, cfg.stream_eos_id)
    assert torch.equal(torch.from_numpy(np.load(out / "a1.codes.npy")), expected)


def test_static_batching_and_streaming_settings_are_served_and_recorded(tiny_hf, tmp_path):
    codec = make_codec(tmp_path / "codec")
    requests = tmp_path / "trace.jsonl"
    requests.write_text("\n".join(json.dumps({"id": f"r{i}", "text": "Hello world.", "max_frames": 20 + 5 * i})
                                  for i in range(3)) + "\n")

    def serve(out, *flags):
        return subprocess.run([sys.executable, "-m", "higgs_bench.serve", "--model", str(tiny_hf), "--codec",
                               str(codec), "--requests", str(requests), "--slots", "2", "--out", str(out), "--greedy",
                               *flags], capture_output=True, text=True)

    done = serve(tmp_path / "static", "--batching", "static", "--lookahead-frames", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "static" / "serving.json").read_text())
    assert summary["batching"] == "static" and summary["streaming"] == {"chunk_frames": 10, "left_frames": 10,
                                                                        "lookahead_frames": 4, "first_chunk_frames": 5}
    rows = {r["id"]: r for r in summary["per_request"]}
    assert rows["r2"]["queue_wait_ms"] > rows["r1"]["e2e_ms"] - 1  # the third waits for the first batch to end
    refused = serve(tmp_path / "bad", "--lookahead-frames", "-1")
    assert refused.returncode == 2 and "lookahead_frames=-1 must be >= 0" in refused.stderr
    assert not (tmp_path / "bad").exists()  # nothing written for a refused command
