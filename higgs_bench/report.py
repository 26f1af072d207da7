"""python -m higgs_bench.report PATH... : re-render and compare saved runs and sweeps."""

import argparse
import math
import sys

from higgs_bench.bench.config import OBJECTIVES, SelectConfig
from higgs_bench.bench.report import load_rows, render
from higgs_bench.errors import HiggsBenchError
from higgs_bench.files import writable_dir


def limit(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a limit; give a finite number >= 0")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m higgs_bench.report", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders or benchmark_report.json files")
    parser.add_argument("--objective", choices=OBJECTIVES, default="rtf")
    parser.add_argument("--max-wer", type=limit, default=None)
    parser.add_argument("--max-gpu-mem-gb", type=limit, default=None)
    parser.add_argument("--out", help="also write summary.csv/json and the plot here")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            writable_dir(args.out, "--out")
        rows = load_rows(args.paths)
        if not rows:
            print(f"error: no benchmark_report.json under {args.paths}", file=sys.stderr)
            return 2
        render(rows, SelectConfig(args.objective, args.max_wer, args.max_gpu_mem_gb), out_dir=args.out)
    except HiggsBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: could not write the summary into {args.out}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
