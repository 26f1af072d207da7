"""Every name the code uses is defined. Much of it runs only on a GPU or with TensorRT-LLM, which CI has
neither of: a misspelt name there would first fail on a user's machine."""

from pathlib import Path

import pytest

pytest.importorskip("pyflakes", reason="pyflakes comes with the test extras (pip install -e .[test])")
from pyflakes import api, messages, reporter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNDEFINED = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)


class Collect(reporter.Reporter):
    def __init__(self):
        super().__init__(None, None)
        self.found = []

    def flake(self, message):
        if isinstance(message, UNDEFINED):
            self.found.append(str(message))

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.found.append(f"{filename}:{lineno}: {msg}")

    def unexpectedError(self, filename, msg):
        self.found.append(f"{filename}: {msg}")


@pytest.mark.parametrize("folder", ["higgs_bench", "benchmarks", "tests"])
def test_no_undefined_names(folder):
    collect = Collect()
    for path in sorted((ROOT / folder).rglob("*.py")):
        api.checkPath(str(path), collect)
    assert not collect.found, "\n".join(collect.found)
