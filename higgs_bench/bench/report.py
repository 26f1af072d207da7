"""Comparing runs: one row per variant from the run records, a rich table, the deployment pick,
summary files (CSV, JSON) and a plot of throughput and frame latency against batch size; with scenario.serving
also a table per load level and a plot of latency against delivered throughput."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from higgs_bench.bench.noise import FOLLOW_LATENCY, relative_band
from higgs_bench.files import atomic_path, read_json, write_json

RECORD = "benchmark_report.json"

COLUMNS = {  # key: (header, format, better)
    "status": ("status", "{}", None),
    "build_s": ("build s", "{:.1f}", "low"),  # the engine's build, whenever it was (a reused engine's too)
    "start_s": ("start s", "{:.1f}", "low"),  # this run's engine start: weights loaded and every shape ready
    "size_gb": ("size GB", "{:.3f}", "low"),
    "latency_batch": ("lat. batch", "{}", None),  # the batch size of the latency columns: 1, or the smallest
    "first_audio_ms": ("first audio ms", "{:.1f}", "low"),
    "first_frame_ms": ("first frame ms", "{:.1f}", "low"),
    "frame_ms": ("frame ms p50", "{:.2f}", "low"),
    "frame_p99_ms": ("p99", "{:.2f}", "low"),
    "rtf": ("RTF", "{:.3f}", "low"),
    "rtf_with_codec": ("RTF+codec", "{:.3f}", "low"),
    "throughput": ("audio s/s (best b)", "{:.2f}", "high"),
    "floor_x": ("x floor (b1)", "{:.1f}", "low"),
    "peak_gpu_gb": ("peak GPU GB", "{:.2f}", "low"),
    "peak_rss_gb": ("peak RSS GB", "{:.2f}", "low"),
    "wer": ("WER", "{:.3f}", "low"),
    "top1": ("top-1 vs ref", "{:.1%}", "high"),
    "max_streams": ("streams in SLO", "{}", "high"),  # scenario.serving: most in-flight streams within the SLOs
}
OBJECTIVE_KEYS = {"rtf": ("rtf", "low"), "throughput": ("throughput", "high"), "latency": ("frame_ms", "low"),
                  "max_streams": ("max_streams", "high")}
# How far a rebuild moves the one-row frames of an engine whose kernels were tuned at build time (coordinate
# descent lands on other configs; docs/performance.md): on one H200, int8's step took 1.94-2.40 ms over four builds
# from empty Inductor caches (24 % apart), fp8's frame 2.15-2.40 ms over three sweeps and 3.06 ms in a fourth.
TUNED_BUILD_SPREAD = 0.20
SERVING_COLUMNS = {  # key in a level summary: (header, format)
    "completed": ("done", "{}"),
    "audio_s_per_s": ("audio s/s", "{:.2f}"),
    "time_to_first_audio_ms.p50": ("first audio p50", "{:.0f}"),
    "time_to_first_audio_ms.p99": ("p99", "{:.0f}"),
    "rtf.p50": ("RTF p50", "{:.3f}"),
    "rtf.p99": ("p99", "{:.3f}"),
    "e2e_ms.p50": ("e2e ms p50", "{:.0f}"),
    "e2e_ms.p99": ("p99", "{:.0f}"),
    "queue_wait_ms.p99": ("queue p99", "{:.0f}"),
    "goodput": ("goodput req/s", "{:.2f}"),
}


def find_records(paths) -> list[Path]:
    """Record files under each path (a run folder, a sweep folder, or a record itself), in sweep order."""
    found = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif (path / RECORD).is_file():
            found.append(path / RECORD)
        else:
            found.extend(sorted(path.rglob(RECORD)))
    return found


def summary_row(record: dict, source: Path | None = None) -> dict:
    batches = record.get("timing", {}).get("batches", [])
    first = min(batches, key=lambda b: b["batch_size"]) if batches else {}  # batch 1 when it was measured
    memory, quality, build = record.get("memory", {}), record.get("quality") or {}, record.get("build", {})
    measured_on = workload(record)
    return {
        "variant": record["variant"],
        "status": record["status"],
        "build_s": build.get("seconds"),
        "start_s": engine_start_s(build),
        "build_cached_graphs": cached_graphs(build),
        "kernels_tuned": build_kernels(build).get("kernels_tuned"),
        "one_row_tuned": one_row_tuned(build),
        "size_gb": build["size_bytes"] / 1e9 if "size_bytes" in build else None,
        "latency_batch": first.get("batch_size"),
        "first_audio_ms": first.get("time_to_first_audio_ms"),
        "first_frame_ms": first.get("time_to_first_frame_ms"),
        "frame_ms": first.get("frame_ms", {}).get("median"),
        "frame_spread": first.get("frame_ms"),  # median, n, IQR: the noise band of the latency columns
        "frame_p99_ms": first.get("frame_ms", {}).get("p99"),
        "rtf": first.get("rtf"),
        "rtf_with_codec": first.get("rtf_with_codec"),
        "throughput": max((b["throughput"] for b in batches), default=None),
        "floor_x": record.get("floor", {}).get("measured_over_floor"),
        "peak_gpu_gb": memory.get("peak_gpu_gb"),
        "peak_rss_gb": memory.get("peak_rss_gb"),
        "wer": quality.get("wer"),
        "wer_ci95": quality.get("wer_ci95"),
        "natural_throughput": quality.get("natural_throughput"),
        "top1": (record.get("fidelity") or {}).get("top1_agreement"),
        "max_streams": (record.get("serving") or {}).get("max_streams"),
        "serving": (record.get("serving") or {}).get("levels", []),
        "slo": (record.get("serving") or {}).get("slo"),
        "error": record.get("error"),
        "device": measured_on["device"],
        "environment": record.get("environment") or {},
        "workload": measured_on,
        "source": str(source) if source else None,
        "batches": batches,
    }


def engine_start_s(build: dict) -> float | None:
    """Seconds from nothing to a torch engine ready to time in this run: its start after the build (a reused
    engine, or one without compilation), else the part of this run's build that started it. None for
    TensorRT-LLM, whose runtime loads the engine."""
    times = build.get("start") or build.get("compile")
    if not times or "load_s" not in times:
        return None
    return times["load_s"] + times["warm_s"]


def build_kernels(build: dict) -> dict:
    """A torch build's compile counts: graphs from Inductor's cache (hit) or compiled (miss), kernels tuned."""
    return (build.get("compile") or {}).get("kernels") or {}


def one_row_tuned(build: dict) -> bool:
    """Whether a torch build tuned kernels that its one-row steps run, so that their frames move from build to
    build: not when one_row.py's hand-written kernels run them (backend.one_row_kernels)."""
    speed = (build.get("settings") or {}).get("speed") or {}
    return bool(build_kernels(build).get("kernels_tuned")) and not speed.get("one_row_kernels")


def cached_graphs(build: dict) -> int | None:
    """How many of a torch build's compiled graphs Inductor's cache already held (an earlier build or an
    interrupted one on this machine): a build with any is not a cold build, and its seconds do not compare."""
    return build_kernels(build).get("fxgraph_cache_hit")


def load_rows(paths) -> list[dict]:
    """One row per record; a record that cannot be read (damaged, foreign) is a row saying so."""
    rows = []
    for path in find_records(paths):
        record = read_json(path)
        if isinstance(record, dict) and isinstance(record.get("variant"), str) and isinstance(record.get("status"), str):
            try:
                rows.append(summary_row(record, path.parent))
                continue
            except (KeyError, TypeError, AttributeError, ValueError):
                pass
        rows.append(unreadable_row(path))
    return rows


def unreadable_row(path: Path) -> dict:
    row = dict.fromkeys([*COLUMNS, "device", "frame_spread", "wer_ci95", "slo"])
    return row | {"variant": f"unreadable: {path}", "status": "unreadable", "source": str(path.parent),
                  "error": "damaged or not a higgs-bench record", "batches": [], "serving": [], "workload": {}}


@dataclass
class Pick:
    row: dict | None
    reason: str


def workload(record: dict) -> dict:
    """What a figure depends on besides the variant: rows that differ here are not ranked against each other."""
    config = record.get("config") or {}
    return {"model": (config.get("model") or {}).get("path") or (config.get("model") or {}).get("name"),
            "scenario": config.get("scenario"),
            "device": record.get("environment", {}).get("gpu") or record.get("environment", {}).get("device")}


def unlike(rows: list[dict]) -> str | None:
    """What the measured rows differ in (model, scenario, device), or None when they are alike."""
    measured = [r for r in rows if r["status"] == "ok"]
    for key in ("model", "scenario", "device"):
        values = {repr(r["workload"][key]) for r in measured}
        if len(values) > 1:
            return f"the runs differ in {key}" + (f" ({', '.join(sorted(values))})" if key != "scenario" else "")
    return None


def pick(rows: list[dict], objective="rtf", max_wer=None, max_gpu_mem_gb=None) -> Pick:
    if objective not in OBJECTIVE_KEYS:
        return Pick(None, f"objective {objective!r} is unknown; choose one of {sorted(OBJECTIVE_KEYS)}")
    differ = unlike(rows)
    if differ:
        return Pick(None, f"no pick: {differ}, so their figures do not compare; report like runs together")
    key, better = OBJECTIVE_KEYS[objective]
    candidates, excluded = [], []
    for row in rows:
        why = _disqualified(row, key, max_wer, max_gpu_mem_gb)
        (excluded if why else candidates).append((row, why))
    if not candidates:
        return Pick(None, f"no variant meets the limits ({_reasons(excluded) or 'no runs'})")
    ordered = sorted(candidates, key=lambda c: c[0][key], reverse=better == "high")
    best = ordered[0][0]
    limits = []
    if max_wer is not None:
        limits.append(f"WER <= {max_wer}")
    if max_gpu_mem_gb is not None:
        limits.append(f"peak GPU memory <= {max_gpu_mem_gb} GB")
    runner_up = f"; next: {ordered[1][0]['variant']} at {ordered[1][0][key]:.3g}" if len(ordered) > 1 else ""
    within = f" among variants with {' and '.join(limits)}" if limits else ""
    draw = _tuning_draw(key, [row for row, _ in ordered[:2]])
    return Pick(best, f"{best['variant']} has the best {COLUMNS[key][0]} ({best[key]:.3g}){within}{runner_up}{draw}")


def _tuning_draw(key: str, first_two: list[dict]) -> str:
    """A warning when the pick's margin at the latency batch (one row, where the spread was measured) is within
    what a rebuild of a tuned engine moves."""
    if key not in ("rtf", "frame_ms") or len(first_two) < 2:
        return ""
    best, second = (row[key] for row in first_two)
    tuned = [row["variant"] for row in first_two if row.get("one_row_tuned")]
    margin = abs(best - second) / max(abs(best), abs(second), 1e-12)
    if not tuned or margin >= TUNED_BUILD_SPREAD:
        return ""
    return (f"; the margin ({margin:.0%}) is within what a rebuild moves an engine whose kernels were tuned at build "
            f"time ({' and '.join(tuned)}: up to about {TUNED_BUILD_SPREAD:.0%}, docs/performance.md): rebuild "
            "(build.force=true) and measure again before relying on the order")


def _reasons(excluded: list[tuple[dict, str]]) -> str:
    """Why each variant was left out, a reason that several share said once: 'bf16, fp8: WER not measured (...)'."""
    by_reason: dict[str, list[str]] = {}
    for row, why in excluded:
        by_reason.setdefault(why, []).append(row["variant"])
    return "; ".join(f"{', '.join(variants)}: {why}" for why, variants in by_reason.items())


def _disqualified(row, key, max_wer, max_gpu_mem_gb) -> str | None:
    if row["status"] != "ok":
        return row["status"]  # failed, refused, interrupted
    if row[key] is None:
        return "no in-flight load level within the SLOs" if key == "max_streams" and row["serving"] else \
            f"no {key} measured"
    if max_wer is not None and (row["wer"] is None or row["wer"] > max_wer):
        return "WER not measured (select.max_wer=null picks without it)" if row["wer"] is None else \
            f"WER {row['wer']:.3f} > {max_wer}"
    if max_gpu_mem_gb is not None and row["peak_gpu_gb"] is not None and row["peak_gpu_gb"] > max_gpu_mem_gb:
        return f"peak GPU {row['peak_gpu_gb']:.1f} GB > {max_gpu_mem_gb} GB"
    return None


def table(rows: list[dict], chosen: Pick | None = None, title="higgs-bench") -> Table:
    out = Table(title=title)
    out.add_column("variant", style="bold")
    for header, _, _ in COLUMNS.values():
        out.add_column(header, justify="right")
    out.add_column("error", overflow="fold", min_width=30, max_width=60)
    best = _best_values(rows)
    for row in rows:
        cells = [row["variant"] + (" *" if chosen and chosen.row is row else "")]
        for key, (_, fmt, _) in COLUMNS.items():
            value = row[key]
            text = "-" if value is None else fmt.format(value)
            if key == "build_s" and row.get("build_cached_graphs"):
                text += f" ({row['build_cached_graphs']} cached)"
            if key == "status":
                text = f"[green]{text}[/]" if value == "ok" else f"[red]{text}[/]"
            elif value is not None and best.get(key) == value:
                text = f"[bold cyan]{text}[/]"
            cells.append(text)
        cells.append(row["error"] or "")
        out.add_row(*cells)
    if chosen is not None:
        out.caption = ("deploy: " if chosen.row else "") + chosen.reason
    return out


def serving_table(rows: list[dict]) -> Table | None:
    """Per variant, batching and load level: what was delivered and how fast, against the objectives."""
    measured = [r for r in rows if r["serving"]]
    if not measured:
        return None
    out = Table(title="serving under load")
    for header in ("variant", "batching", "load"):
        out.add_column(header, style="bold" if header == "variant" else None)
    for header, _ in SERVING_COLUMNS.values():
        out.add_column(header, justify="right")
    out.add_column("in SLO")
    for row in measured:
        for level in row["serving"]:
            cells = [row["variant"], level["batching"], level["load"]]
            for key, (_, fmt) in SERVING_COLUMNS.items():
                value = _dotted(level, key)
                cells.append("-" if value is None else fmt.format(value))
            cells.append("[green]yes[/]" if level["meets_slo"] else "[red]no[/]")
            out.add_row(*cells)
    slo = measured[0]["slo"] or {}
    out.caption = (f"in SLO: every request's first audio within {slo.get('time_to_first_audio_ms')} ms and RTF <= "
                   f"{slo.get('rtf')}; goodput: requests per second that met both")
    return out


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = (tree or {}).get(part)
    return tree


def _best_values(rows) -> dict:
    """The best value of each column, where it stands out from the runner-up by more than the noise."""
    ok = [r for r in rows if r["status"] == "ok"]
    best = {}
    for key, (_, _, better) in COLUMNS.items():
        comparable = [r for r in ok if r[key] is not None and not (key == "build_s" and r.get("build_cached_graphs"))]
        ranked = sorted(comparable, key=lambda r: r[key], reverse=better == "high")
        if better and len(ranked) > 1 and not _within_noise(key, ranked[0], ranked[1]):
            best[key] = ranked[0][key]
    return best


def _within_noise(key: str, first: dict, second: dict) -> bool:
    """Whether the two rows' values of `key` differ by no more than the measurement's noise band."""
    gap = abs(first[key] - second[key])
    if key in FOLLOW_LATENCY:
        band = relative_band(first.get("frame_spread") or {}, second.get("frame_spread") or {})
        return band is not None and gap <= band * abs(first[key])
    if key == "wer" and first.get("wer_ci95") and second.get("wer_ci95"):
        half = max((ci[1] - ci[0]) / 2 for ci in (first["wer_ci95"], second["wer_ci95"]))
        return gap <= half
    return False


def write_summary(rows: list[dict], chosen: Pick, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat_keys = ["variant", *COLUMNS, "error", "device", "source"]
    with atomic_path(out_dir / "summary.csv") as temp, open(temp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=flat_keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = {"rows": rows, "pick": {"variant": chosen.row["variant"] if chosen.row else None,
                                      "reason": chosen.reason}}
    write_json(out_dir / "summary.json", summary)
    written = [out_dir / "summary.csv", out_dir / "summary.json"]
    plots = [plot_batches(rows, out_dir / "batch_scaling.png"), plot_serving(rows, out_dir / "serving.png")]
    return written + [plot for plot in plots if plot]


def plot_batches(rows: list[dict], path: Path) -> Path | None:
    measured = [r for r in rows if r["batches"]]
    if not measured:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4 + 0.3 * len(measured)))
    for row in measured:
        sizes = [b["batch_size"] for b in row["batches"]]
        left.plot(sizes, [b["throughput"] for b in row["batches"]], marker="o", label=row["variant"])
        right.plot(sizes, [b["frame_ms"]["median"] for b in row["batches"]], marker="o", label=row["variant"])
    left.set(xlabel="batch size", ylabel="audio seconds per second", title="throughput")
    right.set(xlabel="batch size", ylabel="ms per frame (median)", title="decode step latency")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.08 * len(measured), 1, 1))
    fig.legend(handles, labels, loc="lower center", frameon=False)
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=120)
    plt.close(fig)
    return path


def plot_serving(rows: list[dict], path: Path) -> Path | None:
    """Latency against delivered throughput, one line per variant and batching over its load levels."""
    measured = [r for r in rows if r["serving"]]
    if not measured:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    for row in measured:
        for batching in dict.fromkeys(level["batching"] for level in row["serving"]):
            for loop, marker in (("concurrency", "o"), ("rate", "s")):
                levels = sorted((lv for lv in row["serving"] if lv["batching"] == batching and lv[loop] is not None
                                 and lv["audio_s_per_s"]), key=lambda lv: lv["audio_s_per_s"])
                if not levels:
                    continue
                label = f"{row['variant']} {batching} ({'closed loop' if loop == 'concurrency' else 'Poisson'})"
                x = [lv["audio_s_per_s"] for lv in levels]
                left.plot(x, [lv["time_to_first_audio_ms"]["p99"] for lv in levels], marker=marker, label=label)
                right.plot(x, [lv["e2e_ms"]["p50"] for lv in levels], marker=marker, label=label)
    slo = measured[0]["slo"] or {}
    if slo.get("time_to_first_audio_ms"):
        left.axhline(slo["time_to_first_audio_ms"], color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="audio seconds delivered per second", ylabel="ms", title="time to first audio, p99")
    right.set(xlabel="audio seconds delivered per second", ylabel="ms", title="end-to-end latency, p50")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=120)
    plt.close(fig)
    return path


def render(rows, select, out_dir: Path | None = None, console: Console | None = None,
           title="higgs-bench") -> tuple[Pick, list[Path]]:
    """Print the table with the pick; with `out_dir`, also write the summary files. Returns the pick and the
    files written."""
    chosen = pick(rows, select.objective, select.max_wer, select.max_gpu_mem_gb)
    console = console or Console(width=max(Console().width, 250))
    console.print(table(rows, chosen, title))
    under_load = serving_table(rows)
    if under_load is not None:
        console.print(under_load)
    return chosen, write_summary(rows, chosen, out_dir) if out_dir is not None else []
