"""The engine folder's own Triton cache, for the kernels an engine launches itself (one_row.py's) and the
user-defined kernels inside its compiled functions (one_byte_rows.py's, int4_rows.py's: engine.kernels_kept_in).

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


class KernelCache:
    """A folder that Triton compiles kernels into and loads them from while `in_use`; it counts the kernels it
    loaded and those it had to compile."""

    def __init__(self, folder: Path):
        self.folder, self.loaded, self.compiled = folder, 0, 0

    @contextmanager
    def in_use(self) -> Iterator[None]:
        try:
            import triton
        except ImportError:  # a CPU install without Triton compiles no Triton kernel
            yield
            return
        knobs = getattr(triton, "knobs", None)  # Triton >= 3.4; an older one keeps its default cache
        if knobs is None:
            yield
            return
        with knobs.cache.scope(), knobs.compilation.scope():  # both put back as they were afterwards
            knobs.cache.dir = str(self.folder)
            knobs.compilation.store_binary_only = True  # the binaries, not every stage's text
            knobs.compilation.listener = self._heard
            yield

    def _heard(self, cache_hit: bool, **_) -> None:
        if cache_hit:
            self.loaded += 1
        else:
            self.compiled += 1

    def counts(self) -> dict[str, int]:
        return {"loaded": self.loaded, "compiled": self.compiled}

    def files(self) -> list[str]:
        """Every file in the folder, by its path from the folder's parent (the engine folder)."""
        if not self.folder.is_dir():
            return []
        return sorted(str(path.relative_to(self.folder.parent)) for path in self.folder.rglob("*") if path.is_file())
