"""python -m higgs_bench.compare: each metric's change between two runs, judged against the noise."""

import json
import subprocess
import sys

from higgs_bench.bench.noise import median_band


def record(frame_median: float, iqr: float, rtf: float, wer: float) -> dict:
    batch = {"batch_size": 1, "frame_ms": {"median": frame_median, "p90": frame_median, "p99": frame_median,
                                          "n": 400, "iqr": iqr, "stdev": iqr}, "rtf": rtf, "throughput": 1 / rtf,
             "time_to_first_frame_ms": 50.0}
    return {"variant": "torch-bf16", "status": "ok", "config": {}, "timing": {"batches": [batch]},
            "quality": {"wer": wer}}


def write(folder, rec):
    folder.mkdir()
    (folder / "benchmark_report.json").write_text(json.dumps(rec))
    return folder


def compare(*args):
    return subprocess.run([sys.executable, "-m", "higgs_bench.compare", *map(str, args)], capture_output=True,
                          text=True)


def test_a_slower_step_is_worse_and_a_tiny_change_is_noise(tmp_path):
    base = write(tmp_path / "base", record(frame_median=10.0, iqr=0.5, rtf=0.3, wer=0.05))
    slower = write(tmp_path / "slower", record(frame_median=12.0, iqr=0.5, rtf=0.36, wer=0.05))
    same = write(tmp_path / "same", record(frame_median=10.01, iqr=0.5, rtf=0.3003, wer=0.05))
    done = compare(base, slower)
    assert done.returncode == 0, done.stderr
    lines = {line.split("│")[2].strip(): line for line in done.stdout.splitlines() if line.count("│") > 6}
    assert "worse" in lines["frame ms p50, batch 1"] and "+20.0%" in lines["frame ms p50, batch 1"]
    assert "worse" in lines["RTF"] and "no spread recorded" in lines["WER"]
    done = compare(base, same)
    assert done.returncode == 0 and "within noise" in done.stdout and "worse" not in done.stdout


def test_the_band_narrows_with_more_samples_and_needs_a_spread():
    few = {"median": 10.0, "iqr": 1.0, "n": 100}
    many = {"median": 10.0, "iqr": 1.0, "n": 10000}
    assert median_band(many, many) < median_band(few, few) / 5
    assert median_band({"median": 10.0}, few) is None  # an old record without n


def test_paths_without_records_are_refused(tmp_path):
    done = compare(tmp_path, tmp_path)
    assert done.returncode == 2 and "no benchmark_report.json" in done.stderr
