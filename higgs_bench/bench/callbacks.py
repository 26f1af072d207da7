"""Hydra callbacks: guard the output folder before any job runs (writable, one writer at a time), and print
the comparison table when the run or sweep ends. Hydra hands on_multirun_end no job results, so the sweep
is read back from its job folders; the statuses seen there decide the exit code (`outcome`)."""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from higgs_bench.bench.report import load_rows, render
from higgs_bench.errors import OutputError
from higgs_bench.files import writable_dir

LOCK = ".higgs-bench.lock"

outcome: list[str] | None = None  # the statuses of the rows the last table showed; None until a table is shown


class SummaryCallback(Callback):
    def __init__(self):
        self.lock = None

    def on_run_start(self, config, **kwargs) -> None:
        self.lock = hold_folder(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        self.lock = hold_folder(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_run_end(self, config, **kwargs) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        self._summarise(load_rows([run_dir]), config, None, f"higgs-bench run {run_dir}")

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        self._summarise(load_rows([sweep_dir]), config, sweep_dir, f"higgs-bench sweep {sweep_dir}")

    def _summarise(self, rows, config, out_dir, title) -> None:
        global outcome
        outcome = [row["status"] for row in rows]
        _, written = render(rows, config.select, out_dir=out_dir, title=title)
        if written:
            print("summary: " + ", ".join(map(str, written)))


def hold_folder(folder: Path, setting: str):
    """Make sure `folder` takes files and that no other run or sweep is writing into it; the lock lasts as
    long as this process. Refusals end the command with exit code 2 before any job starts."""
    try:
        writable_dir(folder, setting)
        handle = open(folder / LOCK, "w")
    except (OutputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: {setting}: another higgs-bench run or sweep is writing into {folder}; wait for it to "
              f"finish, or give another {setting}", file=sys.stderr)
        raise SystemExit(2) from None
    return handle
