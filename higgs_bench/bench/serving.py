"""Serving under load (scenario.serving): one seeded workload replayed through the slots (generate/slots.py)
at several load levels, with in-flight and static batching, and per level the figures a deployment is chosen
by: audio seconds delivered per second, time to first audio, per-request real-time factor, end-to-end latency
and goodput (requests per second that meet the service-level objectives).

The workload: requests of one to three scenario sentences, a share of them cloning a voice. Each request's
frame limit is the length its words would take spoken (`frames_per_word`, +-25 %), and by default
(`ignore_eos`) every request runs to it: lengths vary as speech does, and every variant and batching serves the
same work (random weights stop at random, after about a second).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

import numpy as np

from higgs_bench.codec.streaming import Streaming, playback
from higgs_bench.errors import HiggsBenchError
from higgs_bench.generate.delay import codes_from_stream
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.generate.slots import Admission, Request, Served, serve
from higgs_bench.model.config import FRAME_RATE

SPREAD = 0.25  # +- share around the spoken length of a request's words
REFERENCE_TEXT_INDEX = 0  # without a reference clip, clones copy the model's own speech of the first sentence


@dataclass(frozen=True)
class Level:
    """One load level: a closed loop of `concurrency` clients, or open-loop Poisson arrivals at `rate`/s."""

    batching: str
    concurrency: int | None = None
    rate: float | None = None

    @property
    def load(self) -> str:
        if self.concurrency is None:
            return f"{self.rate:g} req/s"
        return f"{self.concurrency} stream" + ("s" if self.concurrency > 1 else "")


@dataclass(frozen=True)
class WorkItem:
    text: str
    clone: bool
    max_frames: int


def levels(serving) -> list[Level]:
    return [Level(batching, concurrency=c) for batching in serving.batching for c in serving.concurrency] + \
           [Level(batching, rate=r) for batching in serving.batching for r in serving.rates]


def level_requests(level: Level, serving) -> int:
    """Requests a level sends: `requests`, or in a closed loop `requests_per_client` per client when set."""
    if level.concurrency is None or serving.requests_per_client is None:
        return serving.requests
    return level.concurrency * serving.requests_per_client


def workload(texts: list[str], serving, num_codebooks: int, max_frames: int) -> list[WorkItem]:
    """The requests of the largest level, the same for every level and batching (seeded): each level sends
    the first of them."""
    rng = random.Random(serving.seed)
    items = []
    for _ in range(max(level_requests(level, serving) for level in levels(serving))):
        text = " ".join(rng.sample(texts, rng.randint(1, min(3, len(texts)))))
        spoken = len(text.split()) * serving.frames_per_word * rng.uniform(1 - SPREAD, 1 + SPREAD)
        frames = min(max_frames, num_codebooks + 1 + round(spoken))
        items.append(WorkItem(text, rng.random() < serving.clone_share, frames))
    return items


def arrivals(level: Level, count: int, seed: int) -> list[float]:
    """Seconds after the start: Poisson arrivals at the level's rate; all at 0 for a closed loop (the clients
    then send each next request when their previous one is done)."""
    if level.rate is None:
        return [0.0] * count
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1 / level.rate, count)).tolist()


def reference_codes(backend, prompter, text: str, frames: int, sampling: SamplingConfig) -> np.ndarray:
    """The model's own speech of `text` (at most `frames` frames), as the voice the cloning requests copy."""
    result = generate(backend, prompter([text]), replace(sampling, seed=0), frames)
    codes = result.codes(backend.config.stream_bos_id, backend.config.stream_eos_id)[0].numpy()
    if codes.shape[1] == 0:
        raise HiggsBenchError(f"the model spoke nothing for {text!r}, so the cloning requests have no voice to "
                              "copy: give scenario.reference_audio and scenario.reference_text")
    return codes


def request_figures(result: Served, audio_frames: int, num_codebooks: int, streaming: Streaming,
                    decode_s: tuple[float, float] | None) -> dict:
    """One request's figures in milliseconds from its arrival. When there is a codec (decode_s: its time to
    decode the first window and a later one, measured once): the time to first audio, its first chunk's frames
    and their lookahead generated and decoded, and how long playback then stalls waiting for chunks."""
    audio_s = audio_frames / FRAME_RATE
    ready = result.audio_ready_s(num_codebooks)[:audio_frames]
    figures = {"id": result.id, "status": "ok", "slot": result.slot, "arrival_s": result.arrival_s,
               "queue_wait_ms": (result.admitted_s - result.arrival_s) * 1000,
               "time_to_first_frame_ms": (ready[0] - result.arrival_s) * 1000 if ready else None,
               "e2e_ms": (result.finished_s - result.arrival_s) * 1000, "audio_s": audio_s,
               "rtf": (result.finished_s - result.admitted_s) / audio_s if audio_s else None,
               "ended_by": "frame limit" if result.eos_step is None else "eos"}
    if decode_s is not None:
        first_s, stall_s = playback(streaming, ready, result.finished_s, decode_s)
        figures |= {"time_to_first_audio_ms": (first_s - result.arrival_s) * 1000, "stall_ms": stall_s * 1000}
    return figures


def percentiles(values: list[float], which=(50, 90, 99)) -> dict:
    return {f"p{q}": float(np.percentile(values, q)) for q in which} if values else dict.fromkeys(
        (f"p{q}" for q in which))


def meets_slo(row: dict, slo_ttfa_ms: float, slo_rtf: float) -> bool:
    return row["time_to_first_audio_ms"] <= slo_ttfa_ms and row["rtf"] is not None and row["rtf"] <= slo_rtf


def level_summary(level: Level, rows: list[dict], requests: int, slo_ttfa_ms: float, slo_rtf: float) -> dict:
    """A level's figures over its completed requests; the wall time runs from the start to the last finish."""
    done = [r for r in rows if r["status"] == "ok"]
    wall_s = max((r["arrival_s"] + r["e2e_ms"] / 1000 for r in done), default=0.0)
    good = [r for r in done if meets_slo(r, slo_ttfa_ms, slo_rtf)]
    return {"batching": level.batching, "concurrency": level.concurrency, "rate": level.rate, "load": level.load,
            "requests": requests, "completed": len(done), "wall_s": wall_s,
            "audio_s_per_s": sum(r["audio_s"] for r in done) / wall_s if wall_s else None,
            "time_to_first_audio_ms": percentiles([r["time_to_first_audio_ms"] for r in done]),
            "rtf": percentiles([r["rtf"] for r in done if r["rtf"] is not None], (50, 99)),
            "e2e_ms": percentiles([r["e2e_ms"] for r in done], (50, 99)),
            "queue_wait_ms": percentiles([r["queue_wait_ms"] for r in done], (50, 99)),
            "stall_ms": percentiles([r["stall_ms"] for r in done], (50, 99)),
            "stalled": sum(r["stall_ms"] > 0 for r in done),
            "goodput": len(good) / wall_s if wall_s else None,
            "slo_share": len(good) / requests if requests else None,
            "meets_slo": bool(done) and len(good) == requests}


def run_level(backend, level: Level, prompts: list, items: list[WorkItem], sampling: SamplingConfig, slots: int,
              positions: int, streaming: Streaming, decode_s: tuple[float, float], seed: int) -> list[dict]:
    """Replay the workload at one level; per request its figures, or why it was refused."""
    times = arrivals(level, len(items), seed)
    requests = [Request(f"r{i:04d}", prompt, item.max_frames, arrival)
                for i, (prompt, item, arrival) in enumerate(zip(prompts, items, times))]
    served = serve(backend, requests, sampling, slots, admission=Admission(level.batching, level.concurrency),
                   positions=positions)
    cfg = backend.config
    bos, eos = cfg.stream_bos_id, cfg.stream_eos_id
    rows = []
    for result in served:
        if result.error:
            rows.append({"id": result.id, "status": "refused", "error": result.error})
            continue
        frames = codes_from_stream(result.streams, bos, eos).shape[1]
        rows.append(request_figures(result, frames, cfg.num_codebooks, streaming, decode_s))
    return rows


def most_streams(summaries: list[dict]) -> int | None:
    """The most concurrent streams served in-flight with every request within the objectives."""
    return max((s["concurrency"] for s in summaries
                if s["batching"] == "inflight" and s["concurrency"] is not None and s["meets_slo"]), default=None)


def clone_prompter(prompter, backend, texts: list[str], serving, sampling: SamplingConfig):
    """The prompter of the cloning requests: the scenario's reference clip, or else the model's own speech."""
    if prompter.reference_codes is not None:
        return prompter
    text = texts[REFERENCE_TEXT_INDEX]
    codes = reference_codes(backend, prompter, text, serving.reference_frames, sampling)
    return replace(prompter, reference_text=text, reference_codes=codes)


def plan(scenario, prompter, num_codebooks: int) -> tuple[list[WorkItem], int]:
    """The workload and the cache positions its slots need. Without a reference clip the cloning prompts are
    sized with a stand-in reference of the longest allowed length (the real one is generated later and may
    stop earlier), so that the shape built ahead is the one served."""
    items = workload(list(scenario.texts), scenario.serving, num_codebooks, scenario.quality_max_frames)
    sizing = sizing_prompter(scenario, prompter, num_codebooks)
    positions = max(len((sizing if item.clone else prompter)([item.text])[0]) + item.max_frames for item in items)
    return items, positions


def sizing_prompter(scenario, prompter, num_codebooks: int):
    """The prompter of the cloning requests as plan() sizes them: the scenario's reference clip, else a
    stand-in of the longest reference the workload may generate."""
    if prompter.reference_codes is not None:
        return prompter
    return replace(prompter, reference_text=scenario.texts[REFERENCE_TEXT_INDEX],
                   reference_codes=np.zeros((num_codebooks, scenario.serving.reference_frames), dtype=np.int64))


def measure_serving(scenario, backend, prompter, slots: int, streaming: Streaming, decode_s: tuple[float, float],
                    slo_ttfa_ms: float, slo_rtf: float, sampling: SamplingConfig, on_level=None) -> dict:
    """Every level of scenario.serving over one workload; `on_level(level)` is called after each."""
    serving, texts = scenario.serving, list(scenario.texts)
    items, positions = plan(scenario, prompter, backend.config.num_codebooks)
    cloning = clone_prompter(prompter, backend, texts, serving, sampling) if any(i.clone for i in items) else None
    prompts = [(cloning if item.clone else prompter)([item.text])[0] for item in items]
    backend.release()
    backend.warm([(slots, positions)])
    sampling = replace(sampling, ignore_eos=serving.ignore_eos)
    replay = dict(slots=slots, positions=positions, streaming=streaming, decode_s=decode_s, seed=serving.seed,
                  sampling=sampling)
    # untimed warm-up: every request's prefill once (a captured prefill per prompt width bucket), a few steps
    short = [replace(item, max_frames=backend.config.num_codebooks + 2) for item in items]
    run_level(backend, Level("inflight", concurrency=slots), prompts, short, **replay)
    summaries, per_request = [], []
    for level in levels(serving):
        count = level_requests(level, serving)
        rows = run_level(backend, level, prompts[:count], items[:count], **replay)
        summaries.append(level_summary(level, rows, count, slo_ttfa_ms, slo_rtf))
        per_request.append({"load": level.load, "batching": level.batching, "requests": rows})
        if on_level:
            on_level(level)
    return {"slots": slots, "positions": positions, "requests": len(items),
            "clone_requests": sum(i.clone for i in items), "request_frame_limits": [i.max_frames for i in items],
            "streaming": asdict(streaming), "ignore_eos": serving.ignore_eos,
            "slo": {"time_to_first_audio_ms": slo_ttfa_ms, "rtf": slo_rtf},
            "levels": summaries, "max_streams": most_streams(summaries), "per_request": per_request}
