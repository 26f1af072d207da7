"""The README's two set-up commands, and CI running exactly the second."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines[2:4]]


def test_readme_starts_with_the_two_commands():
    main_job, tests = readme_commands()
    assert main_job == "pip install -e . && python -m higgs_bench"
    assert tests.endswith("pip install -e '.[test]' && python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [readme_commands()[1]]
