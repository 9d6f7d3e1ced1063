"""The README opens with the two commands, and CI runs exactly the test one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_install_run_and_test_commands() -> None:
    run, test = _first_block()[:2]
    assert "pip install" in run and "python -m stress" in run
    assert "pip install '.[test]'" in test and "python -m pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    test = _first_block()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
