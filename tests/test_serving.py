"""Serving under load: the seeded workload, arrival processes, per-level figures against the objectives, the
max_streams pick, and scenario=serving end to end on the embedded model."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from higgs_bench.bench import serving
from higgs_bench.bench.report import pick
from tests.test_main_job import SMALL, bench

TEXTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
         "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish."]


def settings(**changes):
    defaults = {"requests": 200, "requests_per_client": None, "concurrency": [1, 4], "rates": [2.0],
                "batching": ["inflight", "static"],
                "clone_share": 0.25, "frames_per_word": 10.0, "reference_frames": 50, "seed": 0}
    return SimpleNamespace(**(defaults | changes))


def test_the_workload_is_seeded_and_varies_like_speech():
    items = serving.workload(TEXTS, settings(), num_codebooks=8, max_frames=400)
    assert items == serving.workload(TEXTS, settings(), 8, 400)  # every level replays the same requests
    assert items != serving.workload(TEXTS, settings(seed=1), 8, 400)
    words = np.array([len(i.text.split()) for i in items])
    frames = np.array([i.max_frames for i in items]) - 9
    assert words.min() < 10 < 20 < words.max()  # one to three sentences
    assert np.all(np.abs(frames / (10 * words) - 1) <= 0.25 + 1 / 40)  # spoken length +-25 % (rounded)
    assert 0.15 < np.mean([i.clone for i in items]) < 0.35
    assert max(i.max_frames for i in serving.workload(TEXTS, settings(), 8, 100)) == 100  # the cap holds


def test_open_loops_arrive_as_poisson_and_closed_loops_at_once():
    times = serving.arrivals(serving.Level("inflight", rate=4.0), 4000, seed=0)
    gaps = np.diff([0.0] + times)
    assert times == sorted(times) and abs(gaps.mean() - 0.25) < 0.02 and abs(gaps.std() - 0.25) < 0.02
    assert serving.arrivals(serving.Level("inflight", concurrency=4), 5, seed=0) == [0.0] * 5


def request_row(ttfa_ms, rtf, arrival_s=0.0, e2e_ms=1000.0, audio_s=2.0):
    return {"status": "ok", "time_to_first_audio_ms": ttfa_ms, "rtf": rtf, "arrival_s": arrival_s,
            "e2e_ms": e2e_ms, "audio_s": audio_s, "queue_wait_ms": 0.0, "stall_ms": 0.0}


def test_a_level_meets_the_objectives_only_when_every_request_does():
    level = serving.Level("inflight", concurrency=2)
    rows = [request_row(100, 0.5, arrival_s=0.0), request_row(150, 0.9, arrival_s=1.0),
            request_row(250, 0.5, arrival_s=1.0, e2e_ms=3000)]
    summary = serving.level_summary(level, rows, requests=3, slo_ttfa_ms=200, slo_rtf=1.0)
    assert summary["wall_s"] == pytest.approx(4.0) and summary["audio_s_per_s"] == pytest.approx(1.5)
    assert summary["goodput"] == pytest.approx(2 / 4.0) and summary["slo_share"] == pytest.approx(2 / 3)
    assert not summary["meets_slo"] and summary["time_to_first_audio_ms"]["p50"] == 150
    refused = serving.level_summary(level, rows[:2] + [{"status": "refused"}], 3, 200, 1.0)
    assert refused["completed"] == 2 and not refused["meets_slo"]  # a refused request is not served in time
    assert serving.level_summary(level, rows[:2], 2, 200, 1.0)["meets_slo"]


def test_max_streams_is_the_largest_inflight_closed_loop_within_the_objectives():
    def level(batching, concurrency, ok, rate=None):
        return {"batching": batching, "concurrency": concurrency, "rate": rate, "meets_slo": ok}

    levels = [level("inflight", 1, True), level("inflight", 4, True), level("inflight", 16, False),
              level("static", 16, True), level("inflight", None, True, rate=8.0)]
    assert serving.most_streams(levels) == 4
    assert serving.most_streams([level("inflight", 1, False)]) is None


def test_the_pick_by_max_streams_explains_variants_without_a_level_in_the_objectives():
    workload = {"model": "m", "scenario": {"name": "serving"}, "device": "H200"}
    rows = [{"variant": v, "status": "ok", "max_streams": m, "serving": [{}], "wer": None, "peak_gpu_gb": None,
             "workload": workload} for v, m in (("bf16", 16), ("int8", 32), ("fp8", None))]
    chosen = pick(rows, "max_streams")
    assert chosen.row["variant"] == "int8" and "next: bf16" in chosen.reason
    assert pick(rows[2:], "max_streams").reason.endswith("fp8: no in-flight load level within the SLOs)")


def test_scenario_serving_runs_every_level_and_reports_them(tmp_path):
    done = bench(tmp_path, "scenario=serving", "asr=none", *SMALL, "scenario.quality_seeds=[0]",
                 "scenario.texts=[Hi there.,The birch canoe slid on the smooth planks.]",
                 "scenario.serving.requests=5", "scenario.serving.requests_per_client=2",
                 "scenario.serving.concurrency=[1,3]", "scenario.serving.rates=[50]",
                 "scenario.serving.slots=3", "scenario.serving.clone_share=0.5", "scenario.serving.reference_frames=20",
                 "select.objective=max_streams", "select.slo_ttfa_ms=100000", "select.slo_rtf=100",
                 "hydra.run.dir=run")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "benchmark_report.json").read_text())
    load = record["serving"]
    assert [(lv["batching"], lv["load"]) for lv in load["levels"]] == [
        ("inflight", "1 stream"), ("inflight", "3 streams"), ("static", "1 stream"), ("static", "3 streams"),
        ("inflight", "50 req/s"), ("static", "50 req/s")]
    # closed loops send 2 requests per client, open loops `requests`; each runs to its frame limit (ignore_eos)
    assert [lv["completed"] for lv in load["levels"]] == [2, 6, 2, 6, 5, 5] and load["ignore_eos"]
    assert all(lv["audio_s_per_s"] > 0 and lv["meets_slo"] for lv in load["levels"])
    assert all(r["ended_by"] == "frame limit" for level in load["per_request"] for r in level["requests"])
    assert load["clone_requests"] >= 1 and load["max_streams"] == 3 and load["slots"] == 3
    one = load["per_request"][0]["requests"]
    assert all(r["time_to_first_audio_ms"] >= r["queue_wait_ms"] for r in one)
    assert "serving under load" in done.stdout and "deploy: torch-fp32 has the best streams in SLO (3)" in done.stdout


def test_serving_settings_are_checked_before_any_work(tmp_path):
    for setting, message in (("scenario.serving.batching=[dynamic]", "choose from inflight, static"),
                             ("scenario.serving.slots=99", "give 1 to engine.max_batch_size=16"),
                             ("scenario.serving.rates=[0]", "positive number of requests per second")):
        done = bench(tmp_path, "scenario=serving", "asr=none", setting, "hydra.run.dir=run")
        record = json.loads((tmp_path / "run" / "benchmark_report.json").read_text())
        assert record["status"] == "refused" and message in record["error"], setting
    done = bench(tmp_path, "asr=none", "select.objective=max_streams", "hydra.run.dir=run2")
    record = json.loads((tmp_path / "run2" / "benchmark_report.json").read_text())
    assert record["status"] == "refused" and "use scenario=serving" in record["error"]
