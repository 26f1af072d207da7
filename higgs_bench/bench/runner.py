"""One benchmark run = one variant: check, build, time fixed work per batch size, generate naturally for
quality (speech -> WER), and write one record (benchmark_report.json), also when something fails."""

from __future__ import annotations

import dataclasses
import gc
import math
import time
import traceback
from dataclasses import dataclass
from statistics import mean, stdev
from pathlib import Path

import numpy as np
import soundfile
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch._dynamo.utils import counters

from higgs_bench.backends.pytorch.backend import TorchBackend, prefill_key
from higgs_bench.backends.pytorch.engine import inductor_compiles
from higgs_bench.backends.pytorch.kernel_cache import TritonCompilations
from higgs_bench.backends.pytorch.precompiled import counts as precompiled_counts
from higgs_bench.bench import asr, serving
from higgs_bench.bench.build import (build, forget_build, load_torch_engine, start_work_note, torch_speed,
                                    variant_name)
from higgs_bench.bench.config import check_variant
from higgs_bench.bench.environment import compute_capability, describe, resolve_device
from higgs_bench.bench.fidelity import GREEDY, fidelity
from higgs_bench.bench.floor import floor_report
from higgs_bench.bench.memory import MeasuredMemory
from higgs_bench.bench.process import pay_first_costs
from higgs_bench.bench.provenance import SCHEMA_VERSION, config_hash, energy_per_audio_second, git_sha, gpu_state
from higgs_bench.bench.report import RECORD
from higgs_bench.bench.timing import chunk_decode_seconds, summarise_batch, time_decoding, time_generation
from higgs_bench.codec import load_codec, streaming
from higgs_bench.errors import ConfigError, DamagedArtefact, HiggsBenchError
from higgs_bench.files import atomic_path, read_json, write_json
from higgs_bench.generate.chooser import choice_key, choice_mode, release_choosers, warm_choosers
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model import dtypes
from higgs_bench.model.checkpoint import checkpoint_config
from higgs_bench.model.config import FRAME_RATE, HiggsConfig
from higgs_bench.model.prompt import encode_messages, tts_messages
from higgs_bench.model.tokenizer import load_tokenizer
from higgs_bench.codec.random_codec import embedded_codec
from higgs_bench.model.random_checkpoint import embedded_model

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
    record = {"variant": label, "status": "running", "error": None, "schema_version": SCHEMA_VERSION,
              "provenance": {"git_sha": git_sha(), "config_hash": config_hash(config)}, "config": config}
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
    prompter = scenario_prompter(cfg, load_tokenizer(model_dir), config)
    plan = planned_shapes(cfg, prompter), planned_prefills(cfg, prompter), planned_choosers(cfg)
    first_s = pay_first_costs(device, cfg.precision.weights, torch_speed(cfg, device).compile_mode is not None) \
        if cfg.backend.name == "torch" else 0.0
    try:
        _build_and_measure(cfg, out_dir, record, model_dir, device, prompter, plan, first_s)
        return
    except DamagedArtefact as err:  # found as a kept file loaded, before anything was measured
        damage = str(err)
    _release_gpu_memory()  # out of the handler, whose traceback held what the damaged load had read
    console.print(f"rebuilding {record['build']['dir']}: {damage}", style="yellow", markup=False, highlight=False)
    forget_build(record["build"])
    _build_and_measure(cfg, out_dir, record, model_dir, device, prompter, plan, first_s)
    record["build"]["rebuilt_because"] = damage


def _build_and_measure(cfg, out_dir: Path, record: dict, model_dir: Path, device: torch.device, prompter, plan,
                       first_s: float) -> None:
    with console.status(f"building {variant_name(cfg)}") as status:
        record["build"], backend = build(cfg, model_dir, device, *plan, on_part=_show_part(status, "building", cfg))
    record["build"]["process_first_s"] = first_s  # paid before the build and start were timed (bench/process.py)
    triton_kernels = TritonCompilations()  # compiled after the start outside the engine folder
    with MeasuredMemory(device) as whole_run:
        if backend is None:
            with console.status(f"loading {variant_name(cfg)}") as status:
                backend = load_backend(cfg, model_dir, device, record["build"], *plan,
                                       on_part=_show_part(status, "loading", cfg))
        built, built_ahead = dict(counters["inductor"]), precompiled_counts["compiled"]
        own_kernels = getattr(backend, "kernel_cache", None) or TritonCompilations()  # and in it (eager prefills')
        own_before = own_kernels.compiled
        loaded_bytes = _allocated(device)
        with triton_kernels.listening():
            codec = load_codec(codec_dir(cfg), device=device)  # decodes on the run's device, timed as part of it
            record["timing"] = measure_speed(cfg, backend, prompter, codec)
            record["quality"] = measure_quality(cfg, backend, prompter, out_dir, codec)
            if cfg.scenario.serving.requests:
                record["serving"] = measure_load(cfg, backend, prompter, codec)
    record["memory"] = memory_report(record["timing"].pop("memory"), whole_run, loaded_bytes)
    batch_one = [b for b in record["timing"]["batches"] if b["batch_size"] == 1]
    if device.type == "cuda" and batch_one:
        dtype_bytes = dtypes.bytes_per_value(cfg.precision.dtype)
        record["floor"] = floor_report(backend.config, dtype_bytes, cfg.precision.weights, device,
                                       batch_one[0]["frame_ms"]["median"])
    if cfg.scenario.fidelity_frames:
        with console.status("fidelity against the reference"), triton_kernels.listening():
            record["fidelity"] = measure_fidelity(cfg, backend, prompter, model_dir, device)
    # what the build and start did not cover was compiled while measuring (all 0 when the plan was whole)
    record["build"]["compiled_during_run"] = inductor_compiles(since=built) | {
        "ahead_of_time": precompiled_counts["compiled"] - built_ahead,
        "triton_kernels": triton_kernels.compiled + own_kernels.compiled - own_before}
    if note := compiled_while_measuring_note(record["build"]):
        console.print(note, style="yellow", markup=False, highlight=False)


def compiled_while_measuring_note(build_record: dict) -> str | None:
    """What to tell the user when anything compiled after the start (build.compiled_during_run): None when
    nothing did."""
    counts = build_record["compiled_during_run"]
    graphs = counts["fxgraph_cache_hit"] + counts["fxgraph_cache_miss"] + counts["ahead_of_time"]
    compiled = [f"{n} {what}" for n, what in ((graphs, "graphs"), (counts["triton_kernels"], "Triton kernels")) if n]
    if not compiled:
        return None
    return (f"{build_record['dir']}: {' and '.join(compiled)} compiled while measuring (build.compiled_during_run); "
            "timed runs pay for that only without warm-up runs (scenario.warmup=0)")


def measure_fidelity(cfg, backend, prompter, model_dir: Path, device: torch.device) -> dict:
    """The variant against the unquantised torch reference (fp32 on the CPU, bf16 on a GPU) on the first
    scenario texts, loaded only for this and released after."""
    reference = TorchBackend.from_checkpoint(model_dir, device=device,
                                             dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    prompts = prompter(list(cfg.scenario.texts)[:FIDELITY_PROMPTS])
    result = fidelity(reference, backend, prompts, cfg.scenario.fidelity_frames)
    del reference
    _release_gpu_memory()
    return result | {"reference": f"torch {'bf16' if device.type == 'cuda' else 'fp32'} on {device.type}"}


def _show_part(status, doing: str, cfg):
    """An on_part for the build: the spinner's line names the part under way and since when."""
    start = time.perf_counter()

    def show(part: str) -> None:
        status.update(f"{doing} {variant_name(cfg)}: {part}, {time.perf_counter() - start:.0f} s in")

    return show


def load_backend(cfg, model_dir: Path, device: torch.device, build_record: dict, shapes, prefills=(), choosers=(),
                 on_part=lambda part: None):
    """The built variant, ready to time; a torch engine's load and warm-up times join the build record."""
    if cfg.backend.name == "torch":
        backend, times = load_torch_engine(cfg, model_dir, device, shapes, build_record, prefills, choosers,
                                           on_part)
        build_record["start"] = times
        note = start_work_note(build_record, times)
        if note:
            console.print(note, style="yellow", markup=False, highlight=False)
        return backend
    from higgs_bench.backends.trtllm.runtime import TrtllmBackend

    backend = TrtllmBackend(Path(build_record["dir"]), device, cuda_graph=cfg.backend.cuda_graph)
    build_record["start"] = {"warm_s_per_shape": warm_choosers(choosers, backend.config, device, backend.compiled)}
    return backend


@dataclass(frozen=True)
class Prompter:
    """Scenario texts -> prompt inputs: the scene, and with a reference clip the voice-cloning layout."""

    tokenizer: object
    config: HiggsConfig
    scene: str | None
    reference_text: str | None = None
    reference_codes: np.ndarray | None = None

    def __call__(self, texts: list[str]) -> list:
        return [expand_prompt(encode_messages(self.tokenizer, tts_messages(t, self.scene, self.reference_text,
                                                                           self.reference_codes),
                                              self.config.num_codebooks), self.config) for t in texts]


def scenario_prompter(cfg, tokenizer, config: HiggsConfig) -> Prompter:
    """The scenario's prompts; a reference clip (scenario.reference_audio) is encoded once, on the CPU."""
    scenario = cfg.scenario
    if scenario.reference_audio is None:
        return Prompter(tokenizer, config, scenario.scene)
    codes = load_codec(codec_dir(cfg), encoder=True).encode_file(scenario.reference_audio)
    return Prompter(tokenizer, config, scenario.scene, scenario.reference_text, codes)


def planned_shapes(cfg, prompter: Prompter) -> list[tuple[int, int]]:
    """(batch, positions) of every generate() call the run will make: timing, quality chunks, fidelity."""
    scenario, texts = cfg.scenario, list(cfg.scenario.texts)

    def shape(batch_texts, frames):
        return len(batch_texts), max(len(p) for p in prompter(batch_texts)) + frames

    shapes = [shape([texts[i % len(texts)] for i in range(b)], scenario.timing_frames) for b in scenario.batch_sizes]
    chunk = scenario.quality_batch_size
    shapes += [shape(texts[i : i + chunk], scenario.quality_max_frames) for i in range(0, len(texts), chunk)]
    if scenario.fidelity_frames:
        shapes.append(shape(texts[:FIDELITY_PROMPTS], scenario.fidelity_frames))
    if scenario.serving.requests:
        _, positions = serving.plan(scenario, prompter, prompter.config.num_codebooks)
        shapes.append((serving_slots(cfg), positions))
        if prompter.reference_codes is None:  # the cloning requests' reference is the model's own speech
            shapes.append(shape(texts[serving.REFERENCE_TEXT_INDEX : serving.REFERENCE_TEXT_INDEX + 1],
                                scenario.serving.reference_frames))
    return shapes


def planned_prefills(cfg, prompter: Prompter) -> list[tuple[int, bool]]:
    """(width bucket, has audio) of the captured prefills the run's lone prompts take (a batch of one, a
    serving request): each text alone, and the serving workload's cloning prompts as sized for it."""
    prompts = prompter(list(cfg.scenario.texts))
    if cfg.scenario.serving.requests:
        prompts += serving.sizing_prompter(cfg.scenario, prompter, prompter.config.num_codebooks)(
            list(cfg.scenario.texts))
    return sorted({prefill_key(prompt) for prompt in prompts})


def planned_choosers(cfg) -> list[tuple[SamplingConfig, int]]:
    """(sampling, rows) of the frame choosers the run's generate() and serving calls take: timing, quality
    chunks, fidelity (greedy), the serving reference and slots."""
    scenario, sampling, texts = cfg.scenario, sampling_config(cfg), list(cfg.scenario.texts)
    chunk = scenario.quality_batch_size
    plans = [(sampling, rows) for rows in scenario.batch_sizes]
    plans += [(sampling, len(texts[i : i + chunk])) for i in range(0, len(texts), chunk)]
    if scenario.fidelity_frames:
        plans.append((GREEDY, len(texts[:FIDELITY_PROMPTS])))
    if scenario.serving.requests:
        plans.append((sampling, 1))
        plans.append((dataclasses.replace(sampling, ignore_eos=scenario.serving.ignore_eos), serving_slots(cfg)))
    unique = {(choice_key(sampling), rows): (sampling, rows) for sampling, rows in plans}
    return list(unique.values())


def sampling_config(cfg) -> SamplingConfig:
    return SamplingConfig(**OmegaConf.to_container(cfg.scenario.sampling))  # validates the values


def streaming_config(cfg) -> streaming.Streaming:
    scenario = cfg.scenario
    return streaming.Streaming(scenario.audio_chunk_frames, scenario.audio_left_frames, scenario.audio_lookahead_frames,
                               scenario.audio_first_chunk_frames)


def codec_dir(cfg) -> Path:
    return embedded_codec() if cfg.model.embedded else Path(cfg.model.codec_path)


def timed_runs(scenario) -> int:
    """`repeats`, or more until the pooled per-frame samples reach `min_frame_samples`."""
    return max(scenario.repeats, math.ceil(scenario.min_frame_samples / (scenario.timing_frames - 1)))


def measure_speed(cfg, backend, prompter: Prompter, codec) -> dict:
    scenario, sampling = cfg.scenario, sampling_config(cfg)
    texts = list(scenario.texts)
    n = backend.config.num_codebooks
    decode = time_decoding(codec, n, streaming_config(cfg), scenario.timing_frames - n)
    runs_per_batch = scenario.warmup + timed_runs(scenario)
    batches, memory = [], []
    before = gpu_state(backend.device)
    with _progress() as progress:
        task = progress.add_task("timing", total=len(scenario.batch_sizes) * runs_per_batch)
        for batch_size in scenario.batch_sizes:
            prompts = prompter([texts[i % len(texts)] for i in range(batch_size)])
            width = max(len(p) for p in prompts)
            backend.release()  # only this batch size's state is alive while it is measured
            release_choosers()
            _release_gpu_memory()
            with MeasuredMemory(backend.device) as measured:
                backend.warm([(batch_size, width + scenario.timing_frames)])
                runs = []
                for i in range(runs_per_batch):
                    progress.update(task, description=f"timing batch {batch_size}")
                    runs.append(time_generation(backend, prompts, scenario.timing_frames, sampling))
                    progress.advance(task)
            batches.append(summarise_batch(batch_size, runs[scenario.warmup:], scenario.timing_frames, n, decode)
                           | {"prompt_positions": width})
            memory.append({"batch_size": batch_size, **measured.report(backend.kv_cache_bytes())})
    after = gpu_state(backend.device)
    audio_s = runs_per_batch * sum(scenario.batch_sizes) * (scenario.timing_frames - n) / FRAME_RATE
    return {"batches": batches, "memory": memory, "gpu_before": before, "gpu_after": after,
            "energy_j_per_audio_s": energy_per_audio_second(before, after, audio_s),
            "frame_choice": choice_mode(backend.device, backend.compiled),
            "decode": {"device": str(codec.device), "first_window_frames": decode.first_window,
                       "first_chunk_ms": decode.chunk_s * 1000, "utterance_ms": decode.utterance_s * 1000}}


def serving_slots(cfg) -> int:
    slots = cfg.scenario.serving.slots
    return cfg.engine.max_batch_size if slots is None else slots


def measure_load(cfg, backend, prompter: Prompter, codec) -> dict:
    """scenario.serving: the workload at every load level (bench/serving.py)."""
    stream, n = streaming_config(cfg), backend.config.num_codebooks
    decode_s = chunk_decode_seconds(codec, n, stream)
    levels = serving.levels(cfg.scenario.serving)
    with _progress() as progress:
        task = progress.add_task("serving", total=len(levels))

        def on_level(level):
            progress.update(task, advance=1, description=f"serving ({level.batching} {level.load} done)")

        result = serving.measure_serving(cfg.scenario, backend, prompter, serving_slots(cfg), stream, decode_s,
                                         cfg.select.slo_ttfa_ms, cfg.select.slo_rtf, sampling_config(cfg), on_level)
    return result | {"first_chunk_decode_ms": decode_s[0] * 1000, "chunk_decode_ms": decode_s[1] * 1000}


def quality_seeds(cfg) -> list[int]:
    """The seeds the quality pass samples with (one when decoding is greedy: every seed gives the same speech)."""
    seeds = list(cfg.scenario.quality_seeds)
    return seeds[:1] if cfg.scenario.sampling.greedy else seeds


def measure_quality(cfg, backend, prompter: Prompter, out_dir: Path, codec) -> dict:
    """Natural stopping on every scenario text for each seed, in batches of scenario.quality_batch_size, speech
    written as WAVs (the whole-utterance decode); the streamed decode's error against it; WER per seed and its
    mean with a 95 % confidence interval when a recogniser is on."""
    scenario, texts = cfg.scenario, list(cfg.scenario.texts)
    cfg_model, chunk, seeds = backend.config, scenario.quality_batch_size, quality_seeds(cfg)
    stream = streaming_config(cfg)
    rows, generating_s = [], 0.0
    with _progress() as progress:
        task = progress.add_task("speech for WER", total=len(texts) * len(seeds))
        for seed in seeds:
            sampling = dataclasses.replace(sampling_config(cfg), seed=seed)
            for start in range(0, len(texts), chunk):
                batch = texts[start : start + chunk]
                prompts = prompter(batch)
                started = time.perf_counter()
                result = generate(backend, prompts, sampling, scenario.quality_max_frames)  # ends on the host
                generating_s += time.perf_counter() - started
                for offset, codes in enumerate(result.codes(cfg_model.stream_bos_id, cfg_model.stream_eos_id)):
                    wav = out_dir / f"utt_s{seed}_{start + offset:03d}.wav"
                    whole = codec.decode(codes)
                    with atomic_path(wav) as temp:
                        soundfile.write(temp, whole, codec.sample_rate)
                    rows.append({"seed": seed, "text": batch[offset], "wav": wav.name, "frames": codes.shape[1],
                                 "audio_s": codes.shape[1] / FRAME_RATE,
                                 "ended_by_eos": result.eos_step[offset] is not None,
                                 "stream_error": streaming.measure(codec, codes, stream, whole)["rel_error"]})
                    progress.advance(task)
    quality = {"utterances": rows, "seeds": seeds, "wer": None, "mean_wer": None,
               "frame_cap_share": sum(not r["ended_by_eos"] for r in rows) / len(rows),
               "stream_error_max": max(r["stream_error"] for r in rows),  # relative L2, the worst utterance
               # audio produced per second of generating with natural stopping: finished rows of a static
               # batch keep decoding until the last one ends, which the fixed-work timing does not show
               "natural_throughput": sum(r["audio_s"] for r in rows) / generating_s}
    if cfg.asr.enabled:
        per_seed = []
        for seed in seeds:
            seed_rows = [r for r in rows if r["seed"] == seed]
            hypotheses = [asr.transcribe(out_dir / r["wav"], cfg.asr.model, cfg.asr.device, cfg.asr.compute_type,
                                         cfg.asr.beam_size, cfg.asr.language) for r in seed_rows]
            scored = asr.score([r["text"] for r in seed_rows], hypotheses)
            for row, scored_row in zip(seed_rows, scored.rows):
                row |= {"hypothesis": scored_row["hypothesis"], "wer": scored_row["wer"]}
            per_seed.append({"seed": seed, "wer": scored.corpus_wer, "mean_wer": scored.mean_wer})
        quality |= {"per_seed": per_seed, "wer": mean([s["wer"] for s in per_seed]),
                    "wer_ci95": confidence_interval([s["wer"] for s in per_seed]),
                    "mean_wer": mean([s["mean_wer"] for s in per_seed])}
    return quality


def confidence_interval(values: list[float]) -> list[float] | None:
    """95 % confidence interval of the mean (Student's t); None for a single value."""
    if len(values) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * stdev(values) / math.sqrt(len(values))
    return [mean(values) - half, mean(values) + half]


def memory_report(per_batch: list[dict], whole_run: MeasuredMemory, loaded_bytes: int | None) -> dict:
    """Per batch size with only that batch's state alive (what `select.max_gpu_mem_gb` compares, alike for
    every backend: the largest batch's peak), and over the whole run (loading, timing, quality). loaded_bytes:
    torch's allocation once the engine is loaded, which holds the KV caches and CUDA graphs of every shape it
    warmed besides the weights (the weights alone are the build record's size_bytes)."""
    report = {"per_batch": per_batch, "run": whole_run.report(),
              "peak_rss_gb": max(b["rss_peak_gb"] for b in per_batch)}
    if all("nvml_peak_gb" in b for b in per_batch):
        report |= {"peak_gpu_gb": max(b["nvml_peak_gb"] for b in per_batch),
                   "allocated_after_load_gb": (loaded_bytes or 0) / 1e9}
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
