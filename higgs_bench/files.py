"""Files on disk: every write is atomic (a temporary file or folder beside the target, then a rename), and
folders are checked for writing before any work, with the setting that moves them named in the error.

A write that fails (a full disk, a read-only folder) removes its temporary file, so nothing half-written is
ever left under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from higgs_bench.errors import HiggsBenchError, OutputError

CACHE_SETTING = "HIGGS_BENCH_CACHE"


def cache_dir() -> Path:
    """Where made-once artefacts live (the embedded model and codec, the assembled Whisper model)."""
    return Path(os.environ.get(CACHE_SETTING) or Path.home() / ".cache" / "higgs-bench")


def cached(out: Path, make, check) -> Path:
    """A made-once artefact in the cache: `out` once `check(out)` passes; made (again) by `make(out)` when it
    is missing or `check` raises a HiggsBenchError, with the folder named."""
    if out.exists():
        try:
            check(out)
            return out
        except HiggsBenchError as err:
            print(f"the cached copy in {out} is damaged ({err}); making it again", file=sys.stderr)
    try:
        make(out)
    except OSError as err:
        raise OutputError(f"cannot write the cache folder {out.parent} ({err.strerror or err}); point "
                          f"{CACHE_SETTING} at a writable folder") from err
    return out


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that go by the suffix still work); it replaces
    `path` when the block ends without error and is removed otherwise."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    temp = Path(temp)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as temp:
        temp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path):
    """The parsed file, or None if it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def file_record(folder: Path, name: str) -> dict:
    """What a build record keeps of a file it wrote under `folder`: its name there, size and digest."""
    data = (folder / name).read_bytes()
    return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_damage(folder: Path, record: dict) -> str | None:
    """Why the file a file_record describes cannot be used (None: it can). A record without a digest (an engine's
    weights, whose contents are checked as they load) is checked by its size."""
    path = folder / record["file"]
    if not path.is_file():
        return f"{record['file']} is missing"
    if "sha256" not in record:
        size = path.stat().st_size
        return None if size == record["bytes"] else f"{record['file']} is damaged ({size} bytes, not {record['bytes']})"
    if hashlib.sha256(path.read_bytes()).hexdigest() != record["sha256"]:
        return f"{record['file']} is damaged (its digest differs from build.json's)"
    return None


@contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """A fresh folder beside `target` to fill; it replaces `target` when the block ends without error and is
    removed otherwise."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        yield staging
        if target.is_dir():
            old = staging.with_suffix(".old")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def writable_dir(path: str | Path, setting: str, create: bool = True) -> Path:
    """Prove that `path` takes files (creating it, or with create=False the nearest folder that exists above
    it); OutputError naming `setting` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{setting}: {path} is a file, not a folder; give a folder")
    probe = path if create else next(p for p in [path, *path.absolute().parents] if p.exists())
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{setting}: {probe} is a file, so {path} cannot be a folder; give another folder")
    try:
        probe.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"{setting}: cannot write into {path} ({err.strerror or err}); point {setting} "
                          "at a writable folder") from err
    return path
