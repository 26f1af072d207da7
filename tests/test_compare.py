"""python -m higgs_bench.compare: each metric's change between two runs, judged against the noise."""

import json
import subprocess
import sys

import torch

from higgs_bench.bench.environment import describe
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


def test_runs_on_other_software_or_settings_are_named_before_their_figures(tmp_path, monkeypatch):
    """A faster frame on another torch, or under an Inductor setting, is not the variant's doing: compare says
    what differs. describe() records the tuning variables that were set, and which packages were installed."""
    monkeypatch.setenv("TORCHINDUCTOR_ENABLE_PDL", "1")
    monkeypatch.setenv("HOME_UNRELATED_SETTING", "x")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # a location: another machine's differs, figures do not
    tuned = describe(torch.device("cpu"))
    assert tuned["variables"]["TORCHINDUCTOR_ENABLE_PDL"] == "1"
    assert "HOME_UNRELATED_SETTING" not in tuned["variables"] and "TRITON_CACHE_DIR" not in tuned["variables"]
    assert tuned["packages"]["torch"] and tuned["packages"]["torchao"]  # the quantised variants' library
    monkeypatch.delenv("TORCHINDUCTOR_ENABLE_PDL")
    plain = describe(torch.device("cpu"))

    def run(name, environment):
        return write(tmp_path / name, record(10.0, iqr=0.5, rtf=0.3, wer=0.05) | {"environment": environment})

    base, same = run("base", plain), run("same", plain)
    other = run("other", tuned | {"packages": plain["packages"] | {"torch": "2.9.0"}})
    lines = [line for line in compare(base, other).stdout.splitlines() if "environment:" in line]
    assert len(lines) == 2 and all("not like for like" in line for line in lines)
    assert "packages.torch" in lines[0] and "2.9.0" in lines[0]
    assert "TORCHINDUCTOR_ENABLE_PDL" in lines[1] and "unset" in lines[1]
    assert "environment:" not in compare(base, same).stdout
