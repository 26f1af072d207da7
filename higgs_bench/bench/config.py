"""The benchmark's structured config: Hydra composes conf/ onto these dataclasses, which check the types.

Combinations that cannot run are refused by `check_variant` with a message that says what to change.
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from higgs_bench.backends.pytorch.backend import COMPILE_MODES
from higgs_bench.backends.pytorch.quantize import WEIGHT_KINDS
from higgs_bench.errors import ConfigError, HiggsBenchError
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.generate.slots import BATCHING
from higgs_bench.model import dtypes


@dataclass
class ModelConfig:
    name: str = MISSING
    embedded: bool = False  # the tiny random model and codec, made on first use; else path and codec_path
    path: str | None = None  # checkpoint directory
    codec_path: str | None = None  # audio tokenizer directory


@dataclass
class BackendConfig:
    name: str = MISSING  # torch | trtllm
    device: str = "auto"  # auto: cuda when there is a GPU, else cpu
    cuda_graph: bool = True  # on CUDA: replay the decode step as one CUDA graph (torch and TensorRT-LLM)
    compile: bool | None = None  # torch backend: torch.compile the decode step (null: on CUDA only)
    # torch.compile mode: default | max-autotune-no-cudagraphs (autotunes the matrix products: minutes more per
    # shape). The CUDA graph is ours. Times per shape are in docs/performance.md.
    compile_mode: str = "default"
    # torch backend, compiled on CUDA with CUDA graphs, precision bf16, fp16, int8 or fp8: a decode step of one row
    # runs its layers as hand-written Triton kernels (backends/pytorch/one_row.py); false: as the compiled layer
    one_row_kernels: bool = True
    # torch backend, compiled, torch >= 2.11: the engine folder keeps each compiled function whole
    # (backends/pytorch/precompiled.py), which a start loads without tracing it again: its layers, quantised or not,
    # and its frame choosers on a GPU (H200: a bf16 start 2.1 s of a 32.0 s build, fp8 1.6 s of 20.9 s;
    # docs/performance.md); false: a start traces them again
    precompile: bool = True


@dataclass
class PrecisionConfig:
    name: str = MISSING
    dtype: str = "fp32"  # activation / non-quantised weight dtype: fp32 | bf16 | fp16
    weights: str | None = None  # quantised linears: int8 | int4 | fp8 (torch and TensorRT-LLM)
    kv_cache: str | None = None  # fp8 KV cache (TensorRT-LLM only); None: same as dtype
    min_compute_capability: float | None = None


@dataclass
class EngineConfig:
    max_batch_size: int = 16
    max_input_len: int = 1024
    max_seq_len: int = 2048
    max_num_tokens: int = 8192
    gpt_attention_plugin: str | None = "auto"
    gemm_plugin: str | None = "auto"
    paged_kv_cache: bool = False  # the TensorRT-LLM runtime here keeps one contiguous cache per static batch
    tokens_per_block: int = 64
    kv_cache_free_gpu_memory_fraction: float | None = 0.9  # the KV cache may take at most this share of free memory
    kv_cache_max_tokens: int | None = None  # at most this many cached positions (batch x length)
    audio_routing: str = "gather"  # dual-FFN routing in the engine: gather (by row index) | select (both MLPs)


@dataclass
class ServingConfig:
    """Serving under load (bench/serving.py): the workload replayed at each load level and batching."""

    requests: int = 0  # requests per open-loop level (0: no serving measurement)
    # a closed loop of c clients sends c x requests_per_client requests (null: `requests`), so that every level
    # runs mostly at its full concurrency rather than ramping up and draining
    requests_per_client: int | None = None
    # every request runs to its frame limit (the spoken length of its words): the same work for every variant
    # and batching, also with weights that stop at random (random weights do, after one second on average)
    ignore_eos: bool = True
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])  # closed loops of this many clients
    rates: list[float] = field(default_factory=list)  # open loops: Poisson arrivals per second
    batching: list[str] = field(default_factory=lambda: ["inflight", "static"])
    slots: int | None = None  # requests decoded together at most (null: engine.max_batch_size)
    clone_share: float = 0.25  # requests that clone a voice (the reference clip, or else the model's own speech)
    reference_frames: int = 100  # the longest self-made reference (4 s)
    frames_per_word: float = 10.0  # a request's frame limit: its words spoken at 2.5 words/s, +-25 %
    seed: int = 0


@dataclass
class ScenarioConfig:
    name: str = MISSING
    texts: list[str] = field(default_factory=list)
    scene: str | None = "Audio is recorded from a quiet room."
    # voice cloning: every prompt carries this clip (any rate, encoded by the model's codec) and its transcript;
    # clone_voice (scenario=voice-clone) demands them
    clone_voice: bool = False
    reference_audio: str | None = None
    reference_text: str | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    timing_frames: int = 58  # fixed work per timed utterance: 8 warm-up frames + 2 s of audio
    warmup: int = 1
    repeats: int = 3
    # timed runs go on beyond `repeats` until the pooled per-frame latencies number at least this many (a p99
    # of fewer than 100 samples is just their maximum)
    min_frame_samples: int = 100
    # streaming audio (codec/streaming.py): chunks of audio_chunk_frames frames (10 = 0.4 s), each decoded with
    # audio_left_frames before it and, once generated, audio_lookahead_frames after it; time_to_first_audio_ms
    # waits for the first chunk and its lookahead. 10 and 10 reproduce the whole-utterance decode exactly.
    audio_chunk_frames: int = 10
    audio_left_frames: int = 10
    audio_lookahead_frames: int = 10
    # the first chunk's own length (null: audio_chunk_frames); codec/streaming.py says what it trades
    audio_first_chunk_frames: int | None = 5
    quality_max_frames: int = 400  # natural stopping, capped
    quality_batch_size: int = 4  # the quality pass's own batch size, so that timing settings never change the speech
    quality_seeds: list[int] = field(default_factory=lambda: [0])  # sampled speech per seed; WER with a 95 % CI
    fidelity_frames: int = 32  # teacher-forced steps against the reference per prompt (0: no fidelity check)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(seed=0))
    serving: ServingConfig = field(default_factory=ServingConfig)


@dataclass
class AsrConfig:
    enabled: bool = True
    model: str = "base"  # "base": the bundled Whisper base; any faster-whisper name or local directory
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    language: str = "en"


@dataclass
class SelectConfig:
    objective: str = "rtf"  # rtf | throughput | latency | max_streams (needs scenario.serving)
    max_wer: float | None = 0.25
    max_gpu_mem_gb: float | None = None
    # service-level objectives of scenario.serving (goodput, max_streams): time from a request's arrival to its
    # first decoded audio, and its real-time factor from admission to the end
    slo_ttfa_ms: float = 200.0
    slo_rtf: float = 1.0


@dataclass
class BuildSettings:
    force: bool = False  # rebuild; a torch engine compiles in an empty Inductor cache, as on a new machine
    engines_dir: str = "engines"


@dataclass
class BenchConfig:
    model: ModelConfig = MISSING
    backend: BackendConfig = MISSING
    precision: PrecisionConfig = MISSING
    engine: EngineConfig = field(default_factory=EngineConfig)
    scenario: ScenarioConfig = MISSING
    asr: AsrConfig = field(default_factory=AsrConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    build: BuildSettings = field(default_factory=BuildSettings)
    resume: bool = False


def register() -> None:
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


TORCH_DTYPES = tuple(dtypes.TORCH)
OBJECTIVES = ("rtf", "throughput", "latency", "max_streams")


def check_config(cfg) -> None:
    """Refuse keys the schema does not know (Hydra accepts any `+key=value`) and values that make no sense,
    before any work. Each message names the setting."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False), BenchConfig)
    if unknown:
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} {'; '.join(unknown)}")
    scenario, engine, select = cfg.scenario, cfg.engine, cfg.select
    rules = [
        (scenario.warmup >= 0, f"scenario.warmup={scenario.warmup}: give 0 or more warm-up runs"),
        (scenario.repeats >= 1, f"scenario.repeats={scenario.repeats}: give at least 1 timed run"),
        (scenario.min_frame_samples >= 0, f"scenario.min_frame_samples={scenario.min_frame_samples} must be >= 0"),
        (scenario.audio_chunk_frames >= 1, f"scenario.audio_chunk_frames={scenario.audio_chunk_frames} must be >= 1"),
        (scenario.audio_first_chunk_frames is None or scenario.audio_first_chunk_frames >= 1,
         f"scenario.audio_first_chunk_frames={scenario.audio_first_chunk_frames} must be >= 1 (or null)"),
        (min(scenario.audio_left_frames, scenario.audio_lookahead_frames) >= 0,
         "scenario.audio_left_frames and scenario.audio_lookahead_frames must be >= 0"),
        (len(scenario.batch_sizes) > 0, "scenario.batch_sizes is empty; give at least one batch size"),
        (min(scenario.batch_sizes, default=1) >= 1, f"scenario.batch_sizes={list(scenario.batch_sizes)}: each must be >= 1"),
        (len(scenario.texts) > 0, "scenario.texts is empty; give at least one sentence to speak"),
        (scenario.timing_frames > 8, "scenario.timing_frames must exceed the 8 delay-pattern warm-up frames"),
        (scenario.quality_max_frames > 8, f"scenario.quality_max_frames={scenario.quality_max_frames} must exceed "
                                          "the 8 delay-pattern warm-up frames"),
        (1 <= scenario.quality_batch_size <= engine.max_batch_size,
         f"scenario.quality_batch_size={scenario.quality_batch_size}: give 1 to engine.max_batch_size="
         f"{engine.max_batch_size}"),
        (len(scenario.quality_seeds) > 0, "scenario.quality_seeds is empty; give at least one seed"),
        (scenario.fidelity_frames == 0 or scenario.fidelity_frames > 8,
         f"scenario.fidelity_frames={scenario.fidelity_frames}: give 0 (off) or more than the 8 warm-up frames"),
        (select.objective in OBJECTIVES, f"select.objective={select.objective!r}; choose one of {OBJECTIVES}"),
        (select.max_wer is None or (math.isfinite(select.max_wer) and select.max_wer >= 0),
         f"select.max_wer={select.max_wer}: give a WER limit >= 0, or null for none"),
        (select.max_gpu_mem_gb is None or (math.isfinite(select.max_gpu_mem_gb) and select.max_gpu_mem_gb > 0),
         f"select.max_gpu_mem_gb={select.max_gpu_mem_gb}: give a positive number of GB, or null for none"),
        (cfg.asr.beam_size >= 1, f"asr.beam_size={cfg.asr.beam_size} must be >= 1"),
        (cfg.backend.compile_mode in COMPILE_MODES,
         f"backend.compile_mode={cfg.backend.compile_mode!r}; choose one of {', '.join(COMPILE_MODES)}"),
    ]
    rules += [(engine[key] >= 1, f"engine.{key}={engine[key]} must be >= 1")
              for key in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "tokens_per_block")]
    rules += [(bool(text.strip()), f"scenario.texts[{i}] is empty; give the words to speak")
              for i, text in enumerate(scenario.texts)]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    check_reference(scenario)
    check_serving(scenario.serving, engine, select)
    try:
        SamplingConfig(**OmegaConf.to_container(scenario.sampling))
    except HiggsBenchError as err:
        raise ConfigError(f"scenario.sampling: {err}") from err


def check_serving(serving, engine, select) -> None:
    """The serving levels must be runnable: positive loads, known batching, slots within the engine."""
    slots = serving.slots if serving.slots is not None else engine.max_batch_size
    rules = [
        (serving.requests >= 0, f"scenario.serving.requests={serving.requests} must be >= 0 (0: no serving run)"),
        (serving.requests_per_client is None or serving.requests_per_client >= 1,
         f"scenario.serving.requests_per_client={serving.requests_per_client} must be >= 1 (or null)"),
        (all(c >= 1 for c in serving.concurrency), f"scenario.serving.concurrency={list(serving.concurrency)}: each "
                                                   "must be >= 1"),
        (all(math.isfinite(r) and r > 0 for r in serving.rates),
         f"scenario.serving.rates={list(serving.rates)}: each must be a positive number of requests per second"),
        (all(b in BATCHING for b in serving.batching),
         f"scenario.serving.batching={list(serving.batching)}: choose from {', '.join(BATCHING)}"),
        (not serving.requests or len(serving.batching) > 0, "scenario.serving.batching is empty"),
        (not serving.requests or len(serving.concurrency) + len(serving.rates) > 0,
         "scenario.serving has requests but no load levels: give concurrency or rates"),
        (1 <= slots <= engine.max_batch_size,
         f"scenario.serving.slots={slots}: give 1 to engine.max_batch_size={engine.max_batch_size}"),
        (0 <= serving.clone_share <= 1, f"scenario.serving.clone_share={serving.clone_share} must lie in 0..1"),
        (serving.reference_frames > 0, f"scenario.serving.reference_frames={serving.reference_frames} must be > 0"),
        (serving.frames_per_word > 0, f"scenario.serving.frames_per_word={serving.frames_per_word} must be > 0"),
        (select.slo_ttfa_ms > 0 and select.slo_rtf > 0, "select.slo_ttfa_ms and select.slo_rtf must be > 0"),
        (select.objective != "max_streams" or serving.requests > 0,
         "select.objective=max_streams needs a serving measurement: use scenario=serving"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)


def check_reference(scenario) -> None:
    """Voice cloning needs the clip and its transcript, and the clip must be a file."""
    audio, text = scenario.reference_audio, scenario.reference_text
    if scenario.clone_voice and audio is None and text is None:
        raise ConfigError(f"scenario={scenario.name} clones a voice: give scenario.reference_audio=CLIP and "
                          "scenario.reference_text='its transcript'")
    if (audio is None) != (text is None):
        raise ConfigError("voice cloning needs both scenario.reference_audio and scenario.reference_text")
    if audio is not None and not Path(audio).is_file():
        raise ConfigError(f"scenario.reference_audio={audio}: no such file")
    if text is not None and not text.strip():
        raise ConfigError("scenario.reference_text is empty; give the words spoken in the reference clip")


def unknown_keys(values: dict, schema, prefix: str = "") -> list[str]:
    """Dotted names in `values` that the dataclass `schema` (and those nested in it) does not declare."""
    hints = typing.get_type_hints(schema)
    known = [f.name for f in fields(schema)]
    found = []
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            found.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
        elif is_dataclass(hints[key]) and isinstance(value, dict):
            found += unknown_keys(value, hints[key], f"{prefix}{key}.")
    return found


def check_variant(cfg, compute_capability: float | None) -> None:
    """Refuse settings and combinations that cannot run, before any work. compute_capability: None on CPU."""
    check_config(cfg)
    missing = [f"model.{key}" for key in ("path", "codec_path") if cfg.model[key] is None]
    if missing and not cfg.model.embedded:
        raise ConfigError(f"model={cfg.model.name} needs {' and '.join(f'{m}=DIR' for m in missing)}")
    prec, backend = cfg.precision, cfg.backend.name
    if backend not in ("torch", "trtllm"):
        raise ConfigError(f"backend={backend!r} is unknown; choose backend=torch or backend=trtllm")
    if backend == "torch" and prec.dtype not in TORCH_DTYPES:
        raise ConfigError(f"precision.dtype={prec.dtype}: the torch backend runs {', '.join(TORCH_DTYPES)}")
    if backend == "torch" and prec.kv_cache:
        raise ConfigError(f"precision.kv_cache={prec.kv_cache}: the torch backend keeps its KV cache in "
                          f"{prec.dtype}; an fp8 KV cache needs backend=trtllm (or set precision.kv_cache=null). "
                          "In torch, decode attention over fp8 k/v measured 1.4-6.7x slower than SDPA over "
                          "bf16 on an H200 (docs/performance.md)")
    if backend == "torch" and prec.weights not in (None, *WEIGHT_KINDS):
        raise ConfigError(f"precision.weights={prec.weights!r}: the torch backend quantises weights to "
                          f"{', '.join(WEIGHT_KINDS)}")
    if prec.min_compute_capability and (compute_capability or 0) < prec.min_compute_capability:
        where = "this machine has no GPU" if compute_capability is None else f"this GPU is {compute_capability}"
        raise ConfigError(
            f"precision={prec.name} needs an NVIDIA GPU of compute capability >= {prec.min_compute_capability} "
            f"({where}); pick a precision this machine runs (fp32, bf16, fp16, int8)"
        )
    if prec.dtype in ("bf16", "fp16") and compute_capability is None and backend == "trtllm":
        raise ConfigError("backend=trtllm needs an NVIDIA GPU")
    scenario = cfg.scenario
    too_big = [b for b in scenario.batch_sizes if b > cfg.engine.max_batch_size]
    if too_big:
        raise ConfigError(
            f"scenario.batch_sizes {too_big} exceed engine.max_batch_size={cfg.engine.max_batch_size}; "
            "raise engine.max_batch_size or drop those batch sizes"
        )

