"""The deployment pick and the sweep summary, on hand-made rows."""

import json

from higgs_bench.bench.report import COLUMNS, load_rows, one_row_tuned, pick, summary_row, write_summary


WORKLOAD = {"model": "/models/higgs", "scenario": {"name": "standard"}, "device": "NVIDIA H200"}


def row(variant, rtf, throughput, frame_ms, wer, gpu=None, status="ok", workload=WORKLOAD):
    return {"variant": variant, "status": status, "rtf": rtf, "throughput": throughput, "frame_ms": frame_ms,
            "floor_x": None, "workload": workload,
            "wer": wer, "peak_gpu_gb": gpu, "batches": [], "error": None if status == "ok" else "boom"}


ROWS = [
    row("fp16", rtf=0.10, throughput=30, frame_ms=4.0, wer=0.03, gpu=20),
    row("int8", rtf=0.06, throughput=45, frame_ms=2.5, wer=0.05, gpu=12),
    row("fp8", rtf=0.05, throughput=50, frame_ms=2.0, wer=0.40, gpu=11),
    row("int4", rtf=None, throughput=None, frame_ms=None, wer=None, status="failed"),
]


def test_pick_takes_the_fastest_variant_within_the_limits():
    chosen = pick(ROWS, "rtf", max_wer=0.25)
    assert chosen.row["variant"] == "int8" and "WER <= 0.25" in chosen.reason and "next: fp16" in chosen.reason


def test_a_pick_closer_than_a_tuned_engine_moves_between_builds_says_so():
    """int8's one-row step moved by up to 24 % between builds on an H200 (coordinate descent's configs): a pick
    closer than that with a tuned engine among the first two is a draw, and the user is told to rebuild."""
    fp8, int8 = row("fp8", rtf=0.062, throughput=623, frame_ms=2.40, wer=None), \
        row("int8", rtf=0.058, throughput=405, frame_ms=2.22, wer=None)
    bf16 = row("bf16", rtf=0.068, throughput=669, frame_ms=2.61, wer=None)
    fp32 = row("fp32", rtf=0.2, throughput=200, frame_ms=7.5, wer=None)
    fp8["one_row_tuned"], int8["one_row_tuned"], bf16["one_row_tuned"], fp32["one_row_tuned"] = True, True, False, False
    close = pick([fp8, int8, bf16], "rtf")
    assert close.row["variant"] == "int8" and "margin (6%)" in close.reason and "int8 and fp8" in close.reason
    assert "build.force=true" in close.reason
    assert "rebuild" in pick([fp8, int8, bf16], "latency").reason
    # the spread was measured at one row: throughput (the best batch, many rows) gets no warning
    assert "rebuild" not in pick([fp8, int8, bf16], "throughput").reason
    assert "rebuild" not in pick([int8, fp32], "rtf").reason  # far apart
    assert "rebuild" not in pick([bf16, fp32.copy() | {"rtf": 0.07}], "rtf").reason  # close, but nothing tuned


def test_only_engines_whose_one_row_steps_were_tuned_count_as_tuned():
    """int8 tunes its shapes of several rows, but its one-row steps run one_row.py's kernels by default: their
    frames do not move between builds, so such a pick is no draw."""
    def build(tuned, kernels):
        return {"settings": {"speed": {"one_row_kernels": kernels}}, "compile": {"kernels": {"kernels_tuned": tuned}}}

    assert one_row_tuned(build(68, False)) and not one_row_tuned(build(68, True))
    assert not one_row_tuned(build(0, False)) and not one_row_tuned({"settings": {}})  # nothing tuned, or trtllm


def test_objectives_and_memory_limit():
    assert pick(ROWS, "throughput").row["variant"] == "fp8"
    assert pick(ROWS, "latency", max_wer=0.1, max_gpu_mem_gb=15).row["variant"] == "int8"
    assert pick(ROWS, "rtf", max_wer=0.1, max_gpu_mem_gb=10).row is None


def test_no_candidate_explains_why():
    chosen = pick(ROWS, "rtf", max_wer=0.01)
    assert chosen.row is None and "fp8: WER 0.400 > 0.01" in chosen.reason and "int4: failed" in chosen.reason


def test_a_sweep_without_asr_is_told_how_to_pick_on_speed_alone():
    unmeasured = [row("bf16", rtf=0.07, throughput=600, frame_ms=2.8, wer=None),
                  row("fp8", rtf=None, throughput=None, frame_ms=None, wer=None, status="refused")]
    chosen = pick(unmeasured, "rtf", max_wer=0.25)
    assert chosen.row is None and "bf16: WER not measured (select.max_wer=null" in chosen.reason
    assert "fp8: refused" in chosen.reason
    assert pick(unmeasured, "rtf", max_wer=None).row["variant"] == "bf16"
    # a sweep of four variants with asr=none hears the reason once, with the variants it holds for
    four = [row(name, rtf=0.07, throughput=600, frame_ms=2.8, wer=None) for name in ("bf16", "fp8", "int8", "int4")]
    reason = pick(four, "rtf", max_wer=0.25).reason
    assert reason.count("WER not measured") == 1 and "bf16, fp8, int8, int4: WER not measured" in reason


def test_summary_files_keep_failed_rows(tmp_path):
    record = {"variant": "torch-fp8", "status": "failed", "error": "needs TensorRT-LLM", "config": {}}
    (tmp_path / "job0").mkdir()
    (tmp_path / "job0" / "benchmark_report.json").write_text(json.dumps(record))
    rows = load_rows([tmp_path])
    assert rows == [summary_row(record, tmp_path / "job0")]
    write_summary(rows, pick(rows), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"][0]["error"] == "needs TensorRT-LLM" and summary["pick"]["variant"] is None
    assert "torch-fp8,failed" in (tmp_path / "summary.csv").read_text()


def test_runs_on_other_gpus_or_scenarios_are_not_ranked_against_each_other():
    other_gpu = row("bf16-h100", rtf=0.01, throughput=90, frame_ms=1.0, wer=0.01, workload=WORKLOAD | {"device": "H100"})
    chosen = pick(ROWS + [other_gpu], "rtf")
    assert chosen.row is None and "differ in device" in chosen.reason and "H100" in chosen.reason
    other_scenario = row("x", rtf=0.01, throughput=90, frame_ms=1.0, wer=0.01,
                         workload=WORKLOAD | {"scenario": {"name": "quick"}})
    assert "differ in scenario" in pick(ROWS + [other_scenario], "rtf").reason


def test_latency_columns_come_from_batch_one_whatever_the_order_of_batch_sizes():
    batch = {"frame_ms": {"median": 9.0, "p99": 9.5}, "rtf": 0.3, "throughput": 10.0, "time_to_first_frame_ms": 80.0}
    record = {"variant": "torch-bf16", "status": "ok", "config": {},
              "timing": {"batches": [batch | {"batch_size": 4, "rtf": 0.5}, batch | {"batch_size": 1}]}}
    summary = summary_row(record)
    assert summary["latency_batch"] == 1 and summary["rtf"] == 0.3 and summary["first_frame_ms"] == 80.0


def test_records_say_which_code_and_settings_made_them(tmp_path):
    import subprocess

    from higgs_bench.bench.provenance import SCHEMA_VERSION, config_hash, energy_per_audio_second, git_sha

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_sha().removesuffix("-dirty") == (head or "unknown")
    assert config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1}) != config_hash({"a": 2, "b": [2]})
    assert energy_per_audio_second({"energy_mj": 1000}, {"energy_mj": 31000}, 10.0) == 3.0  # 30 J over 10 s
    assert energy_per_audio_second(None, None, 10.0) is None and SCHEMA_VERSION >= 2


def test_the_table_highlights_a_best_latency_only_beyond_the_noise():
    from higgs_bench.bench.report import _best_values

    def timed(variant, median):
        return dict.fromkeys(COLUMNS) | row(variant, rtf=median / 40, throughput=40 / median, frame_ms=median,
                                            wer=0.05) | {"frame_spread": {"median": median, "n": 400, "iqr": 0.5}}

    close = _best_values([timed("a", 10.0), timed("b", 10.01)])
    assert "frame_ms" not in close and "rtf" not in close  # 0.1 % apart, the band is about 0.5 %
    apart = _best_values([timed("a", 10.0), timed("b", 12.0)])
    assert apart["frame_ms"] == 10.0 and apart["throughput"] == 4.0


def test_each_row_shows_this_runs_engine_start_next_to_the_build():
    """A reused engine's build seconds are its cold build's; the start column is what this run paid."""
    base = {"variant": "torch-int8", "status": "ok"}
    reused = {"seconds": 140.0, "reused": True, "start": {"load_s": 5.0, "warm_s": 3.5, "warm_s_per_shape": {}}}
    built = {"seconds": 140.0, "reused": False, "compile": {"load_s": 6.5, "warm_s": 130.8}}
    trtllm = {"seconds": 600.0, "reused": True, "start": {"warm_s_per_shape": {}}}
    starts = [summary_row(base | {"build": build})["start_s"] for build in (reused, built, trtllm)]
    assert starts == [8.5, 137.3, None]
    assert COLUMNS["start_s"][0] == "start s"


def test_a_build_that_took_graphs_from_the_cache_says_so_and_is_not_ranked():
    """An interrupted build's graphs, or an earlier build's on this machine, make a build look fast."""
    from rich.console import Console

    from higgs_bench.bench.report import _best_values, table

    def built(variant, seconds, hits):
        record = {"variant": variant, "status": "ok", "build": {"seconds": seconds, "compile": {
            "load_s": 1.0, "warm_s": seconds - 1.0, "kernels": {"fxgraph_cache_hit": hits, "fxgraph_cache_miss": 3}}}}
        return summary_row(record)

    cold, partly_cached = built("torch-bf16", 90.0, 0), built("torch-int8", 20.0, 8)
    assert (cold["build_cached_graphs"], partly_cached["build_cached_graphs"]) == (0, 8)
    assert _best_values([cold, partly_cached, built("torch-fp8", 120.0, 0)])["build_s"] == 90.0
    console = Console(record=True, width=400)
    console.print(table([cold, partly_cached]))
    text = console.export_text()
    assert "20.0 (8 cached)" in text and "90.0 (" not in text
