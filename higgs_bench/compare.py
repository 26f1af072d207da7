"""Compare two runs or sweeps, variant by variant: each metric's change, and whether it lies beyond the noise.

    python -m higgs_bench.compare BASE CANDIDATE

BASE and CANDIDATE are run folders, sweep folders or records. Noise bands as bench/noise.py computes them;
figures without a recorded spread (memory, WER) show the change alone. Where the two runs of a variant ran on
another GPU, driver, library version or tuning variable (the records' `environment`), each difference is a row
first: a change may then come from the machine rather than the variant. Exits 0 whatever the verdicts; 2 for
paths that hold no records.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from higgs_bench.bench.noise import FOLLOW_LATENCY, median_band
from higgs_bench.bench.report import COLUMNS, load_rows

# metric: (label, better), as the report's table names them. Each is read from a variant's row (summary_row).
METRICS = {key: (COLUMNS[key][0], COLUMNS[key][2]) for key in ("first_audio_ms", "first_frame_ms", "rtf",
                                                                 "rtf_with_codec", "throughput", "peak_gpu_gb",
                                                                 "wer", "top1")}
METRICS["natural_throughput"] = ("audio s/s, natural stops", "high")


def verdict(base: float, candidate: float, band: float | None, better: str) -> str:
    if band is None:
        return "no spread recorded"
    change = candidate - base
    if abs(change) <= band:
        return "within noise"
    improved = change < 0 if better == "low" else change > 0
    return "[green]better[/]" if improved else "[red]worse[/]"


def comparisons(base_row: dict, candidate_row: dict) -> list[tuple[str, float, float, float | None, str]]:
    """(metric, base, candidate, band, better) for what both rows measured."""
    out = []
    base_batches = {b["batch_size"]: b for b in base_row["batches"]}
    relative = None
    for batch in candidate_row["batches"]:
        size = batch["batch_size"]
        if size not in base_batches:
            continue
        base_ms, cand_ms = base_batches[size]["frame_ms"], batch["frame_ms"]
        band = median_band(base_ms, cand_ms)
        out.append((f"frame ms p50, batch {size}", base_ms["median"], cand_ms["median"], band, "low"))
        if size == candidate_row.get("latency_batch") and band is not None:
            relative = band / base_ms["median"]
    for key, (label, better) in METRICS.items():
        base, candidate = base_row.get(key), candidate_row.get(key)
        if base is None or candidate is None:
            continue
        band = abs(base) * relative if key in FOLLOW_LATENCY and relative is not None else None
        out.append((label, base, candidate, band, better))
    return out


def environment_changes(base: dict, candidate: dict) -> list[tuple[str, object, object]]:
    """(what, base, candidate) for each part of two records' environments that differs: the entries both
    recorded, and for the tuning variables every one either set (a missing one was unset)."""
    changes = []
    for key in sorted(base.keys() & candidate.keys()):
        old, new = base[key], candidate[key]
        if isinstance(old, dict) and isinstance(new, dict):
            names = old.keys() | new.keys() if key == "variables" else old.keys() & new.keys()
            pairs = [(f"{key}.{name}", old.get(name, "unset"), new.get(name, "unset")) for name in sorted(names)]
        else:
            pairs = [(key, old, new)]
        changes += [(what, before, after) for what, before, after in pairs if before != after]
    return changes


def compare_table(base_rows: list[dict], candidate_rows: list[dict]) -> Table:
    table = Table(title="higgs-bench compare")
    for header, justify in (("variant", "left"), ("metric", "left"), ("base", "right"), ("candidate", "right"),
                            ("change", "right"), ("noise band", "right"), ("verdict", "left")):
        table.add_column(header, justify=justify)
    base_by_variant = {r["variant"]: r for r in base_rows if r["status"] == "ok"}
    for row in candidate_rows:
        base = base_by_variant.get(row["variant"])
        if row["status"] != "ok" or base is None:
            why = f"candidate {row['status']}" if row["status"] != "ok" else "not in the base"
            table.add_row(row["variant"], "-", "-", "-", "-", "-", why)
            continue
        for what, old, new in environment_changes(base["environment"], row["environment"]):
            table.add_row(row["variant"], f"environment: {what}", str(old), str(new), "-", "-",
                          "[yellow]not like for like[/]")
        for metric, old, new, band, better in comparisons(base, row):
            change = f"{(new - old) / old:+.1%}" if old else f"{new - old:+.3g}"
            table.add_row(row["variant"], metric, f"{old:.4g}", f"{new:.4g}", change,
                          "-" if band is None else f"±{band:.3g}", verdict(old, new, band, better))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", help="run folder, sweep folder or record")
    parser.add_argument("candidate", help="run folder, sweep folder or record")
    args = parser.parse_args(argv)
    rows = {}
    for name in ("base", "candidate"):
        rows[name] = load_rows([getattr(args, name)])
        if not rows[name]:
            print(f"{name} {getattr(args, name)}: no benchmark_report.json there", file=sys.stderr)
            return 2
    Console(width=max(Console().width, 160)).print(compare_table(rows["base"], rows["candidate"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
