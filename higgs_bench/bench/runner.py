"""One benchmark run = one variant: check, build, time fixed work per batch size, generate naturally for
quality (speech -> WER), and write one record (benchmark_report.json), also when something fails."""

from __future__ import annotations

import gc
import traceback
from pathlib import Path

import soundfile
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from higgs_bench.backends.pytorch.backend import DTYPES, TorchBackend
from higgs_bench.bench import asr
from higgs_bench.bench.build import build, load_torch_engine, variant_name
from higgs_bench.bench.config import check_variant
from higgs_bench.bench.environment import compute_capability, describe, resolve_device
from higgs_bench.bench.fidelity import fidelity
from higgs_bench.bench.floor import floor_report
from higgs_bench.bench.report import RECORD
from higgs_bench.bench.memory import GpuMemoryMonitor, kv_cache_bytes, peak_rss_bytes
from higgs_bench.bench.timing import summarise_batch, time_generation
from higgs_bench.model.config import FRAME_RATE
from higgs_bench.codec import load_codec
from higgs_bench.errors import ConfigError, HiggsBenchError
from higgs_bench.files import atomic_path, read_json, write_json
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.checkpoint import checkpoint_config
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer
from higgs_bench.tiny import embedded_codec, embedded_model

console = Console(stderr=True, soft_wrap=True)  # messages stay one line each, also in logs


FIDELITY_PROMPTS = 3  # the first scenario texts, teacher-forced against the reference
NOT_COMPARED = ("resume", "build.force")  # settings that do not change what a run measures


def run(cfg, out_dir: Path, label: str | None = None) -> dict:
    out_dir = Path(out_dir)
    record_path = out_dir / RECORD
    config = OmegaConf.to_container(cfg, resolve=True)
    label = label or variant_name(cfg)
    if cfg.resume:
        previous = read_json(record_path)
        why = rerun_reason(previous, config)
        if why is None:
            console.print(f"[dim]resume: {label} already measured in {out_dir}[/]")
            return previous
        if record_path.exists():
            console.print(f"[yellow]resume: measuring {label} again in {out_dir}: {why}[/]")
    record = {"variant": label, "status": "running", "error": None, "config": config}
    try:
        _measure(cfg, out_dir, record)
        record["status"] = "ok"
    except ConfigError as err:
        record |= {"status": "refused", "error": str(err)}
    except HiggsBenchError as err:
        record |= {"status": "failed", "error": str(err)}
    except KeyboardInterrupt:
        record |= {"status": "interrupted", "error": "interrupted before the run finished; its figures are partial"}
        raise
    except Exception as err:  # a crash in one variant must not lose the sweep's other rows
        record |= {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    finally:
        _save(record, record_path)
        _release_gpu_memory()  # sweep jobs share a process: the next job's NVML figures start clean
    if record["status"] != "ok":
        console.print(f"[red]{record['variant']} {record['status']}:[/] {record['error']}")
    return record


def rerun_reason(previous, config: dict) -> str | None:
    """Why a saved record cannot stand for this run (None: it can)."""
    if previous is None:
        return "no readable record"
    if not isinstance(previous, dict) or previous.get("status") != "ok":
        return f"the saved run did not finish ({previous.get('status') if isinstance(previous, dict) else 'foreign file'})"
    changed = _differences(_comparable(previous.get("config")), _comparable(config))
    if changed:
        return "its settings differ from the saved run's: " + ", ".join(changed[:3])
    return None


def _comparable(config) -> dict:
    flat = _flatten(config if isinstance(config, dict) else {})
    return {key: value for key, value in flat.items() if key not in NOT_COMPARED}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(saved: dict, current: dict) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def _save(record: dict, record_path: Path) -> None:
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record_path, record)
    except OSError as err:  # the record is the run's only result: say loudly that it is not on disk
        record |= {"status": "failed", "error": f"could not write {record_path}: {err}"}


def _measure(cfg, out_dir: Path, record: dict) -> None:
    device = resolve_device(cfg.backend.device, "backend.device")
    record["environment"] = describe(device)
    check_variant(cfg, compute_capability(device))
    if cfg.asr.enabled:  # a recogniser that cannot load fails the run now, not after the timing
        asr.load_whisper(cfg.asr.model, cfg.asr.device, cfg.asr.compute_type)
    model_dir = embedded_model() if cfg.model.embedded else Path(cfg.model.path)
    config = checkpoint_config(model_dir)  # a missing or foreign checkpoint is named before anything else
    tokenizer = load_tokenizer(model_dir)
    shapes = planned_shapes(cfg, tokenizer, config)
    with console.status(f"building {variant_name(cfg)}"):
        record["build"], backend = build(cfg, model_dir, device, shapes)
    with GpuMemoryMonitor(device) as gpu:
        if backend is None:
            with console.status(f"loading {variant_name(cfg)}"):
                backend = load_backend(cfg, model_dir, device, shapes, record["build"])
        weights_bytes = _allocated(device)
        record["timing"] = measure_speed(cfg, backend, tokenizer)
        record["quality"] = measure_quality(cfg, backend, tokenizer, out_dir)
    record["memory"] = memory_report(cfg, backend, gpu, weights_bytes)
    batch_one = [b for b in record["timing"]["batches"] if b["batch_size"] == 1]
    if device.type == "cuda" and batch_one:
        dtype_bytes = torch.finfo(DTYPES[cfg.precision.dtype]).bits // 8
        record["floor"] = floor_report(backend.config, dtype_bytes, cfg.precision.weights, device,
                                       batch_one[0]["frame_ms"]["median"])
    if cfg.scenario.fidelity_frames:
        with console.status("fidelity against the reference"):
            record["fidelity"] = measure_fidelity(cfg, backend, tokenizer, model_dir, device)


def measure_fidelity(cfg, backend, tokenizer, model_dir: Path, device: torch.device) -> dict:
    """The variant against the unquantised torch reference (fp32 on the CPU, bf16 on a GPU) on the first
    scenario texts, loaded only for this and released after."""
    reference = TorchBackend.from_checkpoint(model_dir, device=device,
                                             dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    prompts = make_prompts(cfg, tokenizer, backend.config, list(cfg.scenario.texts)[:FIDELITY_PROMPTS])
    result = fidelity(reference, backend, prompts, cfg.scenario.fidelity_frames)
    del reference
    _release_gpu_memory()
    return result | {"reference": f"torch {'bf16' if device.type == 'cuda' else 'fp32'} on {device.type}"}


def load_backend(cfg, model_dir: Path, device: torch.device, shapes, build_record: dict):
    """The built variant, ready to time; a torch engine's load and warm-up times join the build record."""
    if cfg.backend.name == "torch":
        backend, times = load_torch_engine(cfg, model_dir, device, shapes, build_record)
        build_record["start"] = times
        return backend
    from higgs_bench.backends.trtllm.runtime import TrtllmBackend

    return TrtllmBackend(Path(build_record["dir"]), device)


def make_prompts(cfg, tokenizer, config, texts):
    return [expand_prompt(encode_messages(tokenizer, tts_messages(t, cfg.scenario.scene)), config) for t in texts]


def planned_shapes(cfg, tokenizer, config) -> list[tuple[int, int]]:
    """(batch, positions) of every generate() call the run will make: timing, quality chunks, fidelity."""
    scenario, texts = cfg.scenario, list(cfg.scenario.texts)

    def shape(batch_texts, frames):
        return len(batch_texts), max(len(p) for p in make_prompts(cfg, tokenizer, config, batch_texts)) + frames

    shapes = [shape([texts[i % len(texts)] for i in range(b)], scenario.timing_frames) for b in scenario.batch_sizes]
    chunk = max(scenario.batch_sizes)
    shapes += [shape(texts[i : i + chunk], scenario.quality_max_frames) for i in range(0, len(texts), chunk)]
    if scenario.fidelity_frames:
        shapes.append(shape(texts[:FIDELITY_PROMPTS], scenario.fidelity_frames))
    return shapes


def sampling_config(cfg) -> SamplingConfig:
    return SamplingConfig(**OmegaConf.to_container(cfg.scenario.sampling))  # validates the values


def measure_speed(cfg, backend, tokenizer) -> dict:
    scenario, sampling = cfg.scenario, sampling_config(cfg)
    texts = list(scenario.texts)
    runs_per_batch = scenario.warmup + scenario.repeats
    batches = []
    with _progress() as progress:
        task = progress.add_task("timing", total=len(scenario.batch_sizes) * runs_per_batch)
        for batch_size in scenario.batch_sizes:
            prompts = make_prompts(cfg, tokenizer, backend.config, [texts[i % len(texts)] for i in range(batch_size)])
            runs = []
            for i in range(runs_per_batch):
                progress.update(task, description=f"timing batch {batch_size}")
                run = time_generation(backend, prompts, scenario.timing_frames, sampling)
                if i >= scenario.warmup:
                    runs.append(run)
                progress.advance(task)
            batches.append(summarise_batch(batch_size, runs, scenario.timing_frames, backend.config.num_codebooks))
    return {"batches": batches}


def measure_quality(cfg, backend, tokenizer, out_dir: Path) -> dict:
    """Natural stopping on every scenario text, speech written as WAVs, and WER when a recogniser is on."""
    codec = load_codec(embedded_codec() if cfg.model.embedded else cfg.model.codec_path)
    scenario, texts = cfg.scenario, list(cfg.scenario.texts)
    cfg_model = backend.config
    chunk = max(scenario.batch_sizes)
    rows = []
    with _progress() as progress:
        task = progress.add_task("speech for WER", total=len(texts))
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            result = generate(backend, make_prompts(cfg, tokenizer, backend.config, batch), sampling_config(cfg),
                              scenario.quality_max_frames)
            for offset, codes in enumerate(result.codes(cfg_model.stream_bos_id, cfg_model.stream_eos_id)):
                wav = out_dir / f"utt_{start + offset:03d}.wav"
                with atomic_path(wav) as temp:
                    soundfile.write(temp, codec.decode(codes), codec.sample_rate)
                rows.append({"text": batch[offset], "wav": wav.name, "frames": codes.shape[1],
                             "audio_s": codes.shape[1] / FRAME_RATE,
                             "ended_by_eos": result.eos_step[offset] is not None})
                progress.advance(task)
    quality = {"utterances": rows, "wer": None, "mean_wer": None}
    if cfg.asr.enabled:
        hypotheses = [asr.transcribe(out_dir / r["wav"], cfg.asr.model, cfg.asr.device, cfg.asr.compute_type,
                                     cfg.asr.beam_size, cfg.asr.language) for r in rows]
        scored = asr.score(texts, hypotheses)
        for row, scored_row in zip(rows, scored.rows):
            row |= {"hypothesis": scored_row["hypothesis"], "wer": scored_row["wer"]}
        quality |= {"wer": scored.corpus_wer, "mean_wer": scored.mean_wer}
    return quality


def memory_report(cfg, backend, gpu: GpuMemoryMonitor, weights_bytes: int | None) -> dict:
    positions = cfg.engine.max_input_len if cfg.backend.name == "trtllm" else cfg.scenario.quality_max_frames
    kv_bytes = kv_cache_bytes(backend.config, positions, max(cfg.scenario.batch_sizes),
                              torch.finfo(DTYPES[cfg.precision.dtype]).bits // 8)
    report = {"peak_rss_gb": peak_rss_bytes() / 1e9, "kv_cache_gb_at_max_batch": kv_bytes / 1e9}
    if gpu.peak_bytes is not None:
        report |= {"peak_gpu_gb": gpu.peak_bytes / 1e9, "gpu_baseline_gb": gpu.baseline_bytes / 1e9,
                   "weights_gb": (weights_bytes or 0) / 1e9}
    return report


def _release_gpu_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _allocated(device: torch.device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
