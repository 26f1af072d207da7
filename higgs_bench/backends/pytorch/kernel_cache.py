"""The engine folder's own Triton cache, for the kernels an engine launches itself (one_row.py's) and the
user-defined kernels inside its compiled functions (one_byte_rows.py's, int4_rows.py's: engine.kernels_kept_in);
and a count of what Triton compiles elsewhere in a start (TritonCompilations).

Triton keeps each kernel it compiles, and the C launcher it builds with the host's compiler for the kernel's
arguments, in one cache folder: ~/.triton/cache, until the process's first Inductor kernel points
TRITON_CACHE_DIR at Inductor's own cache folder (torch 2.11, triton_heuristics.CachingAutotuner). So where a
one-row kernel's first launch looks depended on what the process had run before it: an H200 bf16 engine's
first start after its build found its kernels in neither place and compiled them again (its one-row shape 4.07 s,
0.38 s at the next start; docs/performance.md). Launched within `KernelCache.in_use` they are compiled into,
and loaded from, the engine folder, which the build records file by file (engine.Artefacts: a damaged file
rebuilds the engine). Triton's index of a kernel's files holds their absolute paths, so an engine folder copied
to another machine of the same GPU loads them from the same path only (elsewhere they compile again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FOLDER = "triton"  # in the engine folder


class TritonCompilations:
    """Triton's compilations in this process while `listening` (its compilation listener): kernels it loaded from
    its cache, and kernels it had to compile (not those of Inductor's compile workers, nor Inductor's kernels
    that its static launcher loads without Triton)."""

    def __init__(self):
        self.loaded, self.compiled = 0, 0

    @contextmanager
    def listening(self) -> Iterator[None]:
        knobs = triton_knobs()
        if knobs is None:
            yield
            return
        with knobs.compilation.scope():  # put back as it was afterwards
            knobs.compilation.listener = self._heard
            yield

    def _heard(self, cache_hit: bool, **_) -> None:
        if cache_hit:
            self.loaded += 1
        else:
            self.compiled += 1

    def counts(self) -> dict[str, int]:
        return {"loaded": self.loaded, "compiled": self.compiled}


class KernelCache(TritonCompilations):
    """A folder that Triton compiles kernels into and loads them from while `in_use`; it counts the kernels it
    loaded and those it had to compile."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    @contextmanager
    def in_use(self) -> Iterator[None]:
        knobs = triton_knobs()
        if knobs is None:
            yield
            return
        with knobs.cache.scope(), self.listening():  # Triton's settings put back as they were afterwards
            knobs.cache.dir = str(self.folder)
            knobs.compilation.store_binary_only = True  # the binaries, not every stage's text
            yield

    def files(self) -> list[str]:
        """Every file in the folder, by its path from the folder's parent (the engine folder)."""
        if not self.folder.is_dir():
            return []
        return sorted(str(path.relative_to(self.folder.parent)) for path in self.folder.rglob("*") if path.is_file())


def triton_knobs():
    """Triton's settings (Triton >= 3.4), or None: an older Triton keeps its default cache and is not counted, and
    a CPU install may have no Triton, which then compiles no kernel."""
    try:
        import triton
    except ImportError:
        return None
    return getattr(triton, "knobs", None)
