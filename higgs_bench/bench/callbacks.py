"""Hydra callbacks: the comparison table at the end of a run or a sweep. Hydra hands on_multirun_end no
job results, so the sweep is read back from its job folders."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

from higgs_bench.bench.report import load_rows, render


class SummaryCallback(Callback):
    def on_run_end(self, config, **kwargs) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        render(load_rows([run_dir]), config.select, title=f"higgs-bench run {run_dir}")

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = load_rows([sweep_dir])
        render(rows, config.select, out_dir=sweep_dir, title=f"higgs-bench sweep {sweep_dir}")
        print(f"summary: {sweep_dir / 'summary.csv'}, {sweep_dir / 'summary.json'}, {sweep_dir / 'batch_scaling.png'}")
