"""python -m higgs_bench.report PATH... : re-render and compare saved runs and sweeps."""

import argparse
import sys

from higgs_bench.bench.config import OBJECTIVES, SelectConfig
from higgs_bench.bench.report import load_rows, render


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m higgs_bench.report", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders or benchmark_report.json files")
    parser.add_argument("--objective", choices=OBJECTIVES, default="rtf")
    parser.add_argument("--max-wer", type=float, default=None)
    parser.add_argument("--max-gpu-mem-gb", type=float, default=None)
    parser.add_argument("--out", help="also write summary.csv/json and the plot here")
    args = parser.parse_args(argv)
    rows = load_rows(args.paths)
    if not rows:
        print(f"error: no benchmark_report.json under {args.paths}", file=sys.stderr)
        return 2
    render(rows, SelectConfig(args.objective, args.max_wer, args.max_gpu_mem_gb), out_dir=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
