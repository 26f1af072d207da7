"""Compiled functions kept whole in the engine folder, so that a start loads them instead of having dynamo trace
them again (torch.compile's `aot_compile` and `torch.compiler.load_compiled_function`, torch >= 2.11).

A start through dynamo traces each (function, shape) again and then finds its graph in Inductor's cache: on an
H200 at the 3B shape 0.21-0.23 s per later shape of the decode step's layer, against 0.04-0.06 s loading the
function compiled ahead of time (benchmarks/precompile_probe.py, docs/performance.md). Saving a function saves its
guards, which copies each weight to the meta device: quantised engines hold torchao's tensors as plain ones for
that (quantised_linears.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from higgs_bench.errors import ConfigError
from higgs_bench.files import atomic_path, file_record

FOLDER = "precompiled"  # in the engine folder
AOT_COMPILE = hasattr(torch._dynamo.config, "enable_aot_compile") and hasattr(torch.compiler, "load_compiled_function")
# compilations loaded from files and compiled in this process, by every Precompiled (as dynamo's counters count
# its own): a start's record counts the difference
counts = Counter(loaded=0, compiled=0)


class Precompiled:
    """A function compiled ahead of time once for each set of inputs its compilations so far do not accept (its
    guards: shapes, dtypes, the layer's kind), as dynamo would compile it once per guard set; `save` writes the
    compilations, `load` reads them back in another process."""

    def __init__(self, fn: Callable, name: str, options: dict):
        self.name, self.compilations = name, []
        with torch._dynamo.config.patch(enable_aot_compile=True):  # off by default in torch 2.11
            self.compiled = torch.compile(fn, fullgraph=True, dynamic=False, options=options)

    def __call__(self, *args):
        for compilation in self.compilations:
            if compilation.guard_check(*args):
                return compilation(*args)
        try:
            compilation = self.compiled.aot_compile((args, {}))
        except Exception as error:  # an experimental torch API: name the setting that goes around it
            raise precompile_error(f"compiling {self.name} ahead of time", error) from error
        self._keep(compilation)
        counts["compiled"] += 1
        return compilation(*args)

    def _keep(self, compilation) -> None:
        compilation.disable_guard_check()  # __call__ checks the guards once, to choose the compilation
        self.compilations.append(compilation)

    def save(self, engine_dir: Path) -> list[dict]:
        """Write each compilation to the engine folder; each file's name (from the folder), size and digest."""
        (engine_dir / FOLDER).mkdir(exist_ok=True)
        saved = []
        for i, compilation in enumerate(self.compilations):
            name = f"{FOLDER}/{self.name}-{i}.bin"
            with atomic_path(engine_dir / name) as temp:
                compilation.save_compiled_function(str(temp))
            saved.append({"function": self.name} | file_record(engine_dir, name))
        return saved

    def load(self, engine_dir: Path, saved: list[dict]) -> int:
        """Read this function's compilations among `saved` (file records from save) back; how many."""
        mine = [entry for entry in saved if entry["function"] == self.name]
        for entry in mine:
            self._keep(read_compilation(engine_dir / entry["file"]))
            counts["loaded"] += 1
        return len(mine)


def read_compilation(path: Path):
    """One compilation that Precompiled.save wrote. Loading it runs its Inductor module, which has Triton compile
    the user-defined kernels inside it (one_byte_rows.py's, int4_rows.py's) unless Triton's cache holds them."""
    # the guards are rebuilt as they load, against the grad mode of the moment: the engine's functions run in
    # inference mode, and guards rebuilt outside it refuse every inference tensor (torch 2.13: "dispatch key
    # set mismatch")
    with torch._dynamo.config.patch(enable_aot_compile=True), torch.inference_mode():
        try:
            with open(path, "rb") as file:
                return torch.compiler.load_compiled_function(file)
        except Exception as error:
            raise precompile_error(f"loading {path}", error) from error


@contextmanager
def as_a_fresh_process_loads() -> Iterator[None]:
    """read_compilation as in a process that has compiled nothing: Inductor's in-memory modules and kernels set
    aside meanwhile. A function loaded back in the process that compiled it runs the modules and kernels already
    in memory, so Triton compiles none of the kernels that coordinate descent tuned; a start, which reads their
    tuned configs, compiled them (H200, int8 with its one-row step compiled: 10 kernels at the first start, none
    at the second; docs/performance.md)."""
    from torch._inductor.async_compile import CompiledTritonKernels
    from torch._inductor.codecache import PyCodeCache

    kept = PyCodeCache.modules_no_attr, CompiledTritonKernels._cache
    PyCodeCache.modules_no_attr, CompiledTritonKernels._cache = {}, {}
    try:
        yield
    finally:
        PyCodeCache.modules_no_attr, CompiledTritonKernels._cache = kept


def precompile_error(action: str, error: Exception) -> ConfigError:
    """What failed in torch's compilation ahead of time, and how to do without it."""
    first_line = next(iter(str(error).splitlines()), "")
    return ConfigError(f"{action} failed ({type(error).__name__}: {first_line}); backend.precompile=false compiles "
                       "through dynamo instead")
