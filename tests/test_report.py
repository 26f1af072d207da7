"""The deployment pick and the sweep summary, on hand-made rows."""

import json

from higgs_bench.bench.report import load_rows, pick, summary_row, write_summary


def row(variant, rtf, throughput, frame_ms, wer, gpu=None, status="ok"):
    return {"variant": variant, "status": status, "rtf": rtf, "throughput": throughput, "frame_ms": frame_ms,
            "floor_x": None,
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


def test_objectives_and_memory_limit():
    assert pick(ROWS, "throughput").row["variant"] == "fp8"
    assert pick(ROWS, "latency", max_wer=0.1, max_gpu_mem_gb=15).row["variant"] == "int8"
    assert pick(ROWS, "rtf", max_wer=0.1, max_gpu_mem_gb=10).row is None


def test_no_candidate_explains_why():
    chosen = pick(ROWS, "rtf", max_wer=0.01)
    assert chosen.row is None and "fp8: WER 0.400 > 0.01" in chosen.reason and "int4: failed" in chosen.reason


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
