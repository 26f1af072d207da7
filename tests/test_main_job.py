"""`python -m higgs_bench`: the main job on the embedded default, sweeps, failure rows, resume, validation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from higgs_bench.bench.config import ConfigError, check_variant

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = ["scenario.timing_frames=14", "scenario.repeats=1", "scenario.batch_sizes=[1,2]", "scenario.quality_max_frames=60",
         "scenario.min_frame_samples=0"]


def bench(cwd, *args):
    return subprocess.run([sys.executable, "-m", "higgs_bench", *args], cwd=cwd, capture_output=True, text=True)


def test_default_run_measures_speed_and_wer_and_prints_the_table(tmp_path):
    done = bench(tmp_path, *SMALL, "scenario.timing_frames=20", "scenario.audio_chunk_frames=4",
                 "scenario.audio_lookahead_frames=2",
                 "scenario.min_frame_samples=30", "scenario.quality_seeds=[0,1]", "hydra.run.dir=run")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "benchmark_report.json").read_text())
    assert record["status"] == "ok", record.get("error")
    batches = record["timing"]["batches"]
    assert [b["batch_size"] for b in batches] == [1, 2]
    assert all(b["frame_ms"]["median"] > 0 and b["rtf"] > 0 and b["time_to_first_frame_ms"] > 0 for b in batches)
    # 20 frames hold the first 4-frame chunk and its 2 lookahead frames; one run has 19 frame latencies, so two
    # runs reach 30
    assert all(b["time_to_first_audio_ms"] > b["time_to_first_frame_ms"] and b["frame_ms"]["n"] == 38
               for b in batches)
    quality = record["quality"]
    assert quality["wer"] is not None and record["memory"]["peak_rss_gb"] > 0
    assert [s["seed"] for s in quality["per_seed"]] == [0, 1] and len(quality["utterances"]) == 2 * 3
    low, high = quality["wer_ci95"]  # two seeds: a confidence interval around their mean
    assert low <= quality["wer"] <= high and 0 <= quality["frame_cap_share"] <= 1 and quality["natural_throughput"] > 0
    assert quality["stream_error_max"] > 1e-3  # 2 lookahead frames of the 10 the decoder sees: measurably off
    per_batch = record["memory"]["per_batch"]  # each batch size measured with only its own KV cache alive
    assert [m["batch_size"] for m in per_batch] == [1, 2] and 0 < per_batch[0]["kv_cache_gb"] < per_batch[1]["kv_cache_gb"]
    assert record["schema_version"] == 3 and len(record["provenance"]["config_hash"]) == 12
    assert record["provenance"]["git_sha"] and record["timing"]["gpu_before"] is None  # no GPU state on a CPU
    assert record["timing"]["frame_choice"] == "eager"  # CUDA graphs (compiled with the engine) on a GPU only
    assert record["fidelity"]["top1_agreement"] == 1.0  # fp32 on the CPU is the reference itself
    for utterance in record["quality"]["utterances"]:
        audio, rate = soundfile.read(tmp_path / "run" / utterance["wav"])
        assert rate == 24000 and len(audio) == utterance["frames"] * 960
    assert "torch-fp32" in done.stdout and "WER" in done.stdout
    assert Path(record["build"]["dir"]).name.startswith("torch-fp32-")


def test_sweep_keeps_failed_variants_as_rows_and_resumes(tmp_path):
    sweep = ["-m", "precision=fp32,fp16,fp8", "asr=none", *SMALL, "hydra.sweep.dir=sweep"]
    done = bench(tmp_path, *sweep)
    assert done.returncode == 3, done.stderr  # some variants ok, some not
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    rows = {r["variant"]: r for r in summary["rows"]}
    assert rows["torch-fp8"]["status"] == "refused" and "compute capability >= 8.9" in rows["torch-fp8"]["error"]
    assert rows["torch-fp32"]["status"] == rows["torch-fp16"]["status"] == "ok"
    assert rows["torch-fp16"]["rtf"] > 0 and summary["pick"]["variant"] in ("torch-fp32", "torch-fp16")
    assert (tmp_path / "sweep" / "batch_scaling.png").stat().st_size > 0
    fp8_line = next(line for line in done.stdout.splitlines() if "torch-fp8" in line)
    assert "refused" in fp8_line and "precision=fp8" in fp8_line  # the table shows the refused row and its error

    records = sorted((tmp_path / "sweep").glob("*/benchmark_report.json"))
    before = {p: p.read_text() for p in records}
    # eager, unquantised variants on a CPU need none of the process's first costs (bench/process.py)
    assert [record["build"]["process_first_s"] for record in map(json.loads, before.values())
            if record["status"] == "ok"] == [0.0, 0.0]
    again = bench(tmp_path, *sweep, "resume=true")
    assert again.returncode == 3, again.stderr
    for path, text in before.items():
        finished = json.loads(text)["status"] == "ok"
        assert (path.read_text() == text) == finished, path  # ok rows are kept, failed rows run again


def test_an_unchanged_variant_reuses_its_build(tmp_path):
    for _ in range(2):
        assert bench(tmp_path, *SMALL, "asr=none", "hydra.run.dir=run").returncode == 0
    record = json.loads((tmp_path / "run" / "benchmark_report.json").read_text())
    assert record["build"]["reused"] is True
    bench(tmp_path, *SMALL, "asr=none", "hydra.run.dir=run", "build.force=true")
    assert json.loads((tmp_path / "run" / "benchmark_report.json").read_text())["build"]["reused"] is False


def test_wrong_types_are_refused_before_running(tmp_path):
    done = bench(tmp_path, "scenario.repeats=many")
    assert done.returncode != 0 and "repeats" in done.stderr


@pytest.mark.parametrize(
    "overrides, capability, message",
    [
        (["precision.weights=int2"], 9.0, "precision.weights='int2': the torch backend quantises weights to"),
        (["precision=fp8"], None, "precision=fp8 needs an NVIDIA GPU of compute capability >= 8.9"),
        (["precision=int4"], None, "precision=int4 needs an NVIDIA GPU"),
        (["precision=fp8", "precision.kv_cache=fp8"], 9.0,
         "an fp8 KV cache needs backend=trtllm (or set precision.kv_cache=null). In torch"),
        (["backend=trtllm", "precision=fp8"], None, "compute capability >= 8.9 (this machine has no GPU)"),
        (["scenario.fidelity_frames=5"], None, "scenario.fidelity_frames=5"),
        (["backend=trtllm", "precision=fp8"], 8.0, "compute capability >= 8.9 (this GPU is 8.0)"),
        (["scenario.batch_sizes=[1,32]"], None, "exceed engine.max_batch_size=16"),
        (["scenario.timing_frames=8"], None, "timing_frames"),
        (["select.objective=cheapest"], None, "select.objective"),
        (["model=higgs-v2-3b", "model.path=/m"], None, "model=higgs-v2-3b needs model.codec_path=DIR"),
    ],
)
def test_impossible_combinations_say_what_to_change(compose_cfg, overrides, capability, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_variant(compose_cfg(*overrides), capability)


def test_valid_combinations_pass(compose_cfg):
    check_variant(compose_cfg("precision=bf16"), None)
    check_variant(compose_cfg("precision=int8"), None)  # torchao's int8 runs on the CPU
    check_variant(compose_cfg("precision=fp8"), 9.0)
    check_variant(compose_cfg("backend=trtllm", "precision=fp8"), 9.0)
    assert compose_cfg().select.max_wer is None  # the tiny model's noise has no meaningful WER
    assert compose_cfg("model=higgs-v2-3b", "model.path=x", "model.codec_path=y").select.max_wer == 0.25


def test_the_slurm_launcher_example_composes():
    done = subprocess.run([sys.executable, "-m", "higgs_bench", "hydra/launcher=slurm", "--cfg", "hydra"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in done.stdout
    assert "gpus_per_node: 1" in done.stdout


def test_an_engine_made_by_other_code_or_another_tensorrt_llm_is_not_reused(compose_cfg, tmp_path, monkeypatch):
    import torch

    from higgs_bench.backends import trtllm
    from higgs_bench.bench import build

    cfg = compose_cfg("backend=trtllm", f"build.engines_dir={tmp_path}")
    settings = build.build_settings(cfg, tmp_path, torch.device("cpu"), [])
    assert settings["versions"] == {"tensorrt_llm": build.installed_version("tensorrt_llm"),
                                    "code": build.code_digest(trtllm)}
    monkeypatch.setattr(build, "installed_version", lambda package: "1.2.99")
    assert build.engine_dir(cfg, build.build_settings(cfg, tmp_path, torch.device("cpu"), [])) != \
        build.engine_dir(cfg, settings)

    for name, source in (("a", "x = 1\n"), ("b", "x = 2\n")):  # one byte of the converter differs
        (tmp_path / name).mkdir()
        (tmp_path / name / "convert.py").write_text(source)
    digests = {build.code_digest(type("package", (), {"__file__": str(tmp_path / n / "__init__.py")})) for n in "ab"}
    assert len(digests) == 2


def test_a_voice_cloning_scenario_puts_the_reference_clip_in_every_prompt(tmp_path):
    import numpy as np

    clip = tmp_path / "me.wav"
    soundfile.write(clip, np.random.default_rng(0).normal(0, 0.1, 32000), 16000)  # 2 s: 50 code frames
    common = ["asr=none", "scenario.batch_sizes=[1]", *SMALL[:2], "scenario.quality_max_frames=40",
              "scenario.min_frame_samples=0", "scenario.fidelity_frames=0"]
    plain = bench(tmp_path, *common, "hydra.run.dir=plain")
    cloned = bench(tmp_path, *common, "scenario=voice-clone", f"scenario.reference_audio={clip}",
                   "scenario.reference_text='Hello there.'", "hydra.run.dir=cloned")
    assert plain.returncode == 0 and cloned.returncode == 0, cloned.stderr[-2000:]
    positions = [json.loads((tmp_path / run / "benchmark_report.json").read_text())["timing"]["batches"][0]
                 ["prompt_positions"] for run in ("plain", "cloned")]
    assert positions[1] >= positions[0] + 50  # the clip's 50 frames (and its transcript) are in the prompt

    missing = bench(tmp_path, *common, "scenario=voice-clone", "hydra.run.dir=missing")
    assert missing.returncode == 2 and "give scenario.reference_audio=CLIP" in missing.stdout + missing.stderr


def test_the_plan_names_every_frame_chooser_the_run_takes(compose_cfg, tmp_path, monkeypatch):
    """The build warms (on a GPU: captures and compiles) the frame choosers planned_choosers names; one that a
    run takes beyond them would compile while the run is measured. A run with timing, quality, fidelity and
    serving (cloning requests included) takes none beyond them."""
    from higgs_bench.bench.runner import planned_choosers, run
    from higgs_bench.generate import chooser, loop, slots

    cfg = compose_cfg(*SMALL, "asr=none", "scenario.fidelity_frames=10", "scenario.quality_seeds=[0,1]",
                      "scenario.texts=[Hi there.,The birch canoe slid on the smooth planks.,Four hours.]",
                      "scenario.quality_batch_size=2", "scenario.serving.requests=3", "scenario.serving.slots=2",
                      "scenario.serving.concurrency=[1]", "scenario.serving.rates=[]",
                      "scenario.serving.batching=[inflight]", "scenario.serving.clone_share=0.5",
                      "scenario.serving.reference_frames=12")
    taken = set()

    def recording(sampling, config, device, rows, compile):
        taken.add((chooser.choice_key(sampling), rows))
        return chooser.frame_chooser(sampling, config, device, rows, compile)

    monkeypatch.setattr(loop, "frame_chooser", recording)
    monkeypatch.setattr(slots, "frame_chooser", recording)
    record = run(cfg, tmp_path)
    assert record["status"] == "ok", record["error"]
    planned = {(chooser.choice_key(sampling), rows) for sampling, rows in planned_choosers(cfg)}
    assert len(taken) >= 4 and taken <= planned, taken - planned  # guard: timing, quality, fidelity, serving
