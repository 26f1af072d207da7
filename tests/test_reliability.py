"""Bad and hostile input, given as a user would (../shared/reviews/reliability.md): nothing of the user's is
deleted or mixed up, every write is atomic, exit codes tell outcomes apart, caches repair themselves,
unknown settings are refused, ordinary mistakes get a message instead of a traceback, and damaged inputs
never give silent wrong results."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

SMALL = ["scenario.timing_frames=14", "scenario.repeats=1", "scenario.batch_sizes=[1]",
         "scenario.quality_max_frames=40", "scenario.min_frame_samples=0", "asr=none"]


def command(module, *args, cwd=None, env=None, max_file_bytes=None):
    """Run `python -m module args` as a user would; max_file_bytes makes larger writes fail like a full disk."""
    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write then fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, preexec_fn=limit_writes if max_file_bytes else None)


def clean_failure(done, rc, *fragments):
    assert done.returncode == rc, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr[-2000:])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private HIGGS_BENCH_CACHE holding the embedded model and codec, made once for this module."""
    root = tmp_path_factory.mktemp("cache")
    done = command("higgs_bench", *SMALL, "hydra.run.dir=first", cwd=root, env={"HIGGS_BENCH_CACHE": str(root)})
    assert done.returncode == 0, done.stderr
    return root


def bench(tmp_path, cache, *args, **kwargs):
    return command("higgs_bench", *args, cwd=tmp_path, env={"HIGGS_BENCH_CACHE": str(cache)}, **kwargs)


def record(folder: Path) -> dict:
    return json.loads((folder / "benchmark_report.json").read_text())


def user_files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. Nothing of the user's is deleted


def test_tiny_never_replaces_a_folder_it_did_not_write(tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "thesis.txt").write_text("years of work")
    (victim / "sub" / "notes.md").write_text("more")
    before = user_files(victim)
    clean_failure(command("higgs_bench.tiny", "--out", victim), 2, "did not write", "--force")
    assert user_files(victim) == before
    clean_failure(command("higgs_bench.tiny", "--out", tmp_path / "same", "--codec-out", tmp_path / "same"), 2,
                  "two separate folders")
    assert not (tmp_path / "same").exists()

    ours = tmp_path / "ours"
    for _ in range(2):  # its own folder it may write again
        assert command("higgs_bench.tiny", "--out", ours).returncode == 0
    assert command("higgs_bench.tiny", "--out", victim, "--force").returncode == 0
    assert not (victim / "thesis.txt").exists() and (victim / "config.json").is_file()


def test_tts_refuses_to_mix_runs_in_one_folder(tiny_hf, tmp_path):
    out = tmp_path / "out"
    three = ["--text", "One.", "--text", "Two.", "--text", "Three."]
    assert command("higgs_bench.tts", "--model", tiny_hf, *three, "--greedy", "--max-frames", 20, "--out", out).returncode == 0
    (out / "notes.txt").write_text("mine")
    before = user_files(out)
    again = ["--model", tiny_hf, "--text", "Only one now.", "--greedy", "--max-frames", 20, "--out", out]
    clean_failure(command("higgs_bench.tts", *again), 2, "earlier run's results", "--overwrite")
    assert user_files(out) == before

    assert command("higgs_bench.tts", *again, "--overwrite").returncode == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000.codes.npy", "000.prompt.json", "notes.txt"]  # the old 001.*, 002.* are gone, notes kept
    assert (out / "000.prompt.json").read_bytes() != before[Path("000.prompt.json")]


# 2. No results are mixed up


def test_a_sweep_over_checkpoints_gives_one_folder_per_checkpoint(tmp_path, cache):
    for name in ("a", "b"):
        shutil.copytree(cache / "models" / "tiny-random-hf-seed0", tmp_path / name)
    done = bench(tmp_path, cache, "-m", "model=higgs-v2-3b", "model.path=a,b",
                 f"model.codec_path={cache / 'models' / 'tiny-codec-v2-seed0'}", *SMALL, "hydra.sweep.dir=sweep")
    assert done.returncode == 0, done.stderr
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/benchmark_report.json"))]
    assert sorted(r["config"]["model"]["path"] for r in records) == ["a", "b"]
    assert len(json.loads((tmp_path / "sweep" / "summary.json").read_text())["rows"]) == 2


def test_resume_measures_again_when_the_settings_changed(tmp_path, cache):
    assert bench(tmp_path, cache, *SMALL, "hydra.run.dir=run").returncode == 0
    first = (tmp_path / "run" / "benchmark_report.json").read_text()
    same = bench(tmp_path, cache, *SMALL, "hydra.run.dir=run", "resume=true")
    assert "already measured" in same.stderr and (tmp_path / "run" / "benchmark_report.json").read_text() == first
    changed = bench(tmp_path, cache, *SMALL, "hydra.run.dir=run", "resume=true", "scenario.sampling.seed=5")
    assert changed.returncode == 0 and "measuring torch-fp32 again" in changed.stderr
    assert "scenario.sampling.seed: 0 -> 5" in changed.stderr.replace("\n", " ")
    assert record(tmp_path / "run")["config"]["scenario"]["sampling"]["seed"] == 5


def test_a_second_sweep_into_a_busy_folder_is_refused(tmp_path, cache):
    (tmp_path / "sweep").mkdir()
    with open(tmp_path / "sweep" / ".higgs-bench.lock", "w") as held:  # as the first sweep holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = bench(tmp_path, cache, "-m", "precision=fp32,bf16", *SMALL, "hydra.sweep.dir=sweep")
    clean_failure(done, 2, "another higgs-bench run or sweep is writing into")
    assert not list((tmp_path / "sweep").glob("*/benchmark_report.json"))


# 3. Every write is atomic


def test_a_full_disk_leaves_no_partial_file(tmp_path, cache):
    done = bench(tmp_path, cache, *SMALL, "hydra.run.dir=run", max_file_bytes=40_000)  # a WAV is larger
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert record(tmp_path / "run")["status"] == "failed"
    assert not list((tmp_path / "run").glob("*.wav")) and not list((tmp_path / "run").glob(".*tmp*"))

    model = command("higgs_bench.tiny", "--out", tmp_path / "m", max_file_bytes=1_000_000)
    clean_failure(model, 1, "could not write")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".m", "m"))) == []


def test_resume_and_report_get_past_a_damaged_record(tmp_path, cache):
    sweep = ["-m", "precision=fp32,bf16", *SMALL, "hydra.sweep.dir=sweep"]
    assert bench(tmp_path, cache, *sweep).returncode == 0
    damaged, kept = sorted((tmp_path / "sweep").glob("*/benchmark_report.json"))
    damaged.write_text(damaged.read_text()[:700])
    kept_variant = record(kept.parent)["variant"]
    report = command("higgs_bench.report", tmp_path / "sweep", "--out", tmp_path / "summary")
    assert report.returncode == 0 and "unreadable:" in report.stdout and kept_variant in report.stdout
    rows = json.loads((tmp_path / "summary" / "summary.json").read_text())["rows"]
    assert sorted(r["variant"] for r in rows) == sorted([f"unreadable: {damaged}", kept_variant])
    kept_text = kept.read_text()
    assert bench(tmp_path, cache, *sweep, "resume=true").returncode == 0
    assert record(damaged.parent)["status"] == "ok" and kept.read_text() == kept_text


# 4. Exit codes


def test_exit_codes_tell_outcomes_apart(tmp_path, cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    codec = cache / "models" / "tiny-codec-v2-seed0"
    failed = bench(tmp_path, cache, "model=higgs-v2-3b", f"model.path={empty}", f"model.codec_path={codec}", *SMALL)
    assert failed.returncode == 1 and "no config.json" in failed.stderr
    assert bench(tmp_path, cache, *SMALL, "scenario.repeats=0").returncode == 2  # refused for its settings
    assert bench(tmp_path, cache, *SMALL, "scenario.batchsizes=[1]").returncode == 2  # Hydra refuses the key
    assert bench(tmp_path, cache, "-m", "precision=fp32,fp64").returncode == 2


# 5. Caches repair themselves


def test_damaged_embedded_caches_are_made_again(tmp_path, monkeypatch, capsys):
    from higgs_bench.bench.asr import bundled_whisper_base
    from higgs_bench.codec.random_codec import embedded_codec
    from higgs_bench.model.random_checkpoint import embedded_model

    monkeypatch.setenv("HIGGS_BENCH_CACHE", str(tmp_path))
    model, codec, whisper = embedded_model(), embedded_codec(), bundled_whisper_base()
    damages = [
        (model / "model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:1000]), embedded_model),
        (model / "tokenizer.json", lambda p: p.unlink(), embedded_model),
        (codec / "model.pth", lambda p: p.write_bytes(p.read_bytes()[:20000]), embedded_codec),
        (whisper / "model.bin", lambda p: p.write_bytes(p.read_bytes()[:1000]), bundled_whisper_base),
        (whisper / "tokenizer.json", lambda p: p.write_text(""), bundled_whisper_base),
    ]
    for path, damage, make in damages:
        good = path.read_bytes()
        damage(path)
        assert make() == path.parent and path.read_bytes() == good, path
        assert f"{path.parent}" in capsys.readouterr().err


def test_a_build_record_is_reused_only_for_its_own_settings_and_folder(tmp_path, cache):
    for precision in ("fp32", "bf16"):
        assert bench(tmp_path, cache, *SMALL, f"precision={precision}", f"hydra.run.dir={precision}").returncode == 0
    fp32, bf16 = (Path(record(tmp_path / p)["build"]["dir"]) for p in ("fp32", "bf16"))
    for damage, reason in [(lambda: shutil.copy(tmp_path / bf16 / "build.json", tmp_path / fp32 / "build.json"),
                            "other settings"),
                           (lambda: (tmp_path / fp32 / "build.json").write_text("{\"dir"), "unreadable")]:
        damage()
        done = bench(tmp_path, cache, *SMALL, "hydra.run.dir=fp32")
        assert done.returncode == 0 and f"rebuilding {fp32}: build.json" in done.stderr and reason in done.stderr
        build = record(tmp_path / "fp32")["build"]
        assert build["reused"] is False and Path(build["dir"]) == fp32 and build["settings"]["precision"]["name"] == "fp32"


# 6. Unknown keys and nonsense values are refused before any work


def test_unknown_settings_are_refused_also_with_plus(tmp_path, cache):
    done = bench(tmp_path, cache, *SMALL, "+scenario.batchsizes=[4]", "hydra.run.dir=run")
    clean_failure(done, 2)
    assert "unknown setting scenario.batchsizes (did you mean scenario.batch_sizes?)" in done.stdout + done.stderr.replace("\n", "")
    assert record(tmp_path / "run")["status"] == "refused" and "timing" not in record(tmp_path / "run")
    assert bench(tmp_path, cache, *SMALL, "+foo=1").returncode == 2


@pytest.mark.parametrize("override, message", [
    ("scenario.warmup=-1", "scenario.warmup=-1"),
    ("scenario.repeats=0", "scenario.repeats=0"),
    ("scenario.texts=[]", "scenario.texts is empty"),
    ("scenario.texts=['Fine.','  ']", "scenario.texts[1] is empty"),
    ("scenario.batch_sizes=[]", "scenario.batch_sizes is empty"),
    ("scenario.quality_max_frames=0", "scenario.quality_max_frames=0"),
    ("scenario.audio_first_chunk_frames=0", "scenario.audio_first_chunk_frames=0 must be >= 1"),
    ("scenario.serving.requests_per_client=0", "scenario.serving.requests_per_client=0 must be >= 1"),
    ("scenario.sampling.temperature=inf", "temperature must be finite"),
    ("scenario.sampling.temperature=1e-40", "below 0.001"),
    ("scenario.sampling.temperature=nan", "temperature must be > 0"),
    ("select.max_wer=-1", "select.max_wer=-1"),
    ("select.objective=speed", "select.objective='speed'"),
    ("engine.max_batch_size=-1", "engine.max_batch_size=-1"),
    ("backend.compile_mode=reduce-overhead", "backend.compile_mode='reduce-overhead'; choose one of default"),
])
def test_nonsense_values_are_refused_naming_the_setting(override, message):
    from hydra import compose, initialize_config_dir

    from higgs_bench.bench.config import check_variant, register
    from higgs_bench.errors import ConfigError

    register()
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[override])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_variant(cfg, None)


# 7. No tracebacks for ordinary bad input


@pytest.mark.parametrize("args, message", [
    (["--text", "Hi.", "--temperature", "inf"], "temperature must be finite"),
    (["--text", "Hi.", "--temperature", "1e-40"], "below 0.001"),
    (["--text", "Hi.", "--greedy", "--device", "potato"], "--device='potato' is not a device"),
    (["--greedy", "--text", b"\xff\xfe bad \xc3".decode("utf-8", "surrogateescape")], "not valid UTF-8"),
])
def test_tts_bad_arguments_get_a_message(tiny_hf, tmp_path, args, message):
    clean_failure(command("higgs_bench.tts", "--model", tiny_hf, *args, "--out", tmp_path / "o"), 2, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_machine_without_it(tiny_hf, tmp_path):
    clean_failure(command("higgs_bench.tts", "--model", tiny_hf, "--text", "Hi.", "--device", "cuda",
                          "--out", tmp_path / "o"), 2, "no usable CUDA GPU")


def test_an_unusable_out_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "afile").write_text("keep")
    done = command("higgs_bench.tts", "--model", tmp_path / "no-model", "--text", "Hi.", "--out", tmp_path / "afile")
    clean_failure(done, 2, "--out", "is a file")  # named before the missing model
    assert (tmp_path / "afile").read_text() == "keep"
    clean_failure(command("higgs_bench.tiny", "--out", tmp_path / "afile"), 2, "is a file")
    clean_failure(command("higgs_bench.tiny", "--out", "."), 2, "current folder")
    assert not list(tmp_path.glob("*.partial"))


def test_folders_that_cannot_be_written_name_the_setting_that_moves_them(tmp_path, cache):
    (tmp_path / "afile").write_text("keep")
    clean_failure(bench(tmp_path, cache, *SMALL, "hydra.run.dir=afile"), 2, "hydra.run.dir")
    clean_failure(bench(tmp_path, cache, "-m", *SMALL, "hydra.sweep.dir=afile"), 2, "hydra.sweep.dir")
    engines = bench(tmp_path, cache, *SMALL, "build.engines_dir=afile", "hydra.run.dir=run")
    assert engines.returncode == 1 and "build.engines_dir" in record(tmp_path / "run")["error"]
    no_cache = command("higgs_bench", *SMALL, "hydra.run.dir=run2", cwd=tmp_path,
                       env={"HIGGS_BENCH_CACHE": str(tmp_path / "afile" / "cache")})
    assert no_cache.returncode == 1 and "HIGGS_BENCH_CACHE" in record(tmp_path / "run2")["error"]
    assert (tmp_path / "afile").read_text() == "keep"


def test_a_config_json_that_is_not_an_object(tiny_hf, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    (model / "config.json").write_text("[1, 2, 3]")
    clean_failure(command("higgs_bench.tts", "--model", model, "--text", "Hi.", "--out", tmp_path / "o"), 2,
                  "not an object")


def test_wer_bad_inputs_get_a_message(tmp_path):
    (tmp_path / "text.wav").write_text("not sound")
    (tmp_path / "empty.wav").write_bytes(b"")
    soundfile.write(tmp_path / "ok.wav", np.zeros(1600, np.float32), 16000)
    manifests = {
        "nonaudio": ('{"audio": "text.wav", "text": "hi"}', 2, "text.wav: not a readable audio file"),
        "zerobyte": ('{"audio": "empty.wav", "text": "hi"}', 2, "empty.wav: not a readable audio file"),
        "textint": ('{"audio": "ok.wav", "text": 42}', 2, "must be the reference words as a string"),
        "folder": ('{"audio": ".", "text": "hi"}', 2, "is a folder"),
        "punct": ('{"audio": "ok.wav", "text": "..."}', 2, "empty after normalisation"),
    }
    for name, (line, rc, message) in manifests.items():
        (tmp_path / f"{name}.jsonl").write_text(line + "\n")
        clean_failure(command("higgs_bench.wer", "--manifest", tmp_path / f"{name}.jsonl"), rc, message)
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00bad")
    clean_failure(command("higgs_bench.wer", "--manifest", tmp_path / "binary.jsonl"), 2, "not UTF-8")


def test_report_on_foreign_files_shows_them_as_rows(tmp_path):
    for name, text in {"list": "[1, 2]", "novariant": '{"status": "ok"}', "zero": ""}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "benchmark_report.json").write_text(text)
    done = command("higgs_bench.report", tmp_path)
    assert done.returncode == 0 and done.stdout.count("unreadable") >= 3, done.stdout + done.stderr
    clean_failure(command("higgs_bench.report", tmp_path, "--max-wer", "-1"), 2, "not a limit")
    (tmp_path / "afile").write_text("")
    clean_failure(command("higgs_bench.report", tmp_path, "--out", tmp_path / "afile"), 2, "--out", "is a file")


# 8. No silent wrong results


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.index_fill_(0, torch.tensor([0]), float("nan")), "NaN or infinite"),
    (lambda t: t.fill_(float("inf")), "NaN or infinite"),
    (lambda t: t.to(torch.int32), "stored as torch.int32"),
])
def test_damaged_weights_are_refused_at_load(tiny_hf, tmp_path, damage, message):
    from higgs_bench.errors import CheckpointError
    from higgs_bench.model.checkpoint import load_checkpoint

    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    weights = load_file(model / "model.safetensors")
    name = "model.layers.0.self_attn.o_proj.weight"
    weights[name] = damage(weights[name].clone())
    save_file(weights, model / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{name}.*{message}".replace("(", r"\(")):
        load_checkpoint(model)


def test_finite_weights_whose_sum_overflows_still_load(tiny_hf, tmp_path):
    """The load checks a tensor by its sum; large finite values can sum to infinity without being damaged."""
    from higgs_bench.model.checkpoint import load_checkpoint

    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    weights = load_file(model / "model.safetensors")
    name = "model.layers.0.self_attn.o_proj.weight"
    weights[name] = torch.full_like(weights[name], 3e38)
    save_file(weights, model / "model.safetensors")
    loaded = load_checkpoint(model).weights["layers.0.self_attn.o_proj.weight"]
    assert torch.isinf(weights[name].sum()) and bool((loaded == 3e38).all())


def test_an_overlong_reference_clip_is_refused_from_its_header(tiny_hf, tmp_path):
    soundfile.write(tmp_path / "long.wav", np.zeros(170 * 8000, np.float32), 8000)  # 170 s > 4096 frames
    (tmp_path / "no-codec").mkdir()  # the clip is refused before any codec is loaded or any audio decoded
    done = command("higgs_bench.tts", "--model", tiny_hf, "--codec", tmp_path / "no-codec", "--text", "Hi.",
                   "--ref-text", "Long.", "--ref-audio", tmp_path / "long.wav", "--out", tmp_path / "o")
    clean_failure(done, 2, "reference clip is 170.0 s")


def test_a_truncated_clip_is_refused(tmp_path):
    from higgs_bench.codec.audio import read_clip
    from higgs_bench.codec.config import CodecError

    soundfile.write(tmp_path / "clip.wav", np.zeros(30000, np.float32), 22050)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "clip.wav").read_bytes()[:5000])
    with pytest.raises(CodecError, match="truncated"):
        read_clip(tmp_path / "cut.wav")


def test_the_whisper_error_names_the_real_cause():
    from higgs_bench.bench.asr import AsrError, load_whisper

    with pytest.raises(AsrError) as bad_type:
        load_whisper("base", "cpu", "bogus")
    assert "compute_type='bogus'" in str(bad_type.value) and "network" not in str(bad_type.value)
    with pytest.raises(AsrError, match="without network access a model name cannot be downloaded"):
        load_whisper("not-a-real-whisper-model", "cpu", "int8")
