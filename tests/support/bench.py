"""Running a benchmark's --quick mode from a test: a subprocess, its JSON back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def run_quick(module: str, tmp_path: Path, timeout: float = 180) -> tuple[dict[str, Any], str]:
    """`python -m <module> --quick --json ... --dir ...`: check it exits 0 and
    removes its scratch directory; return the JSON report and the printed text."""
    out = tmp_path / "bench.json"
    scratch = tmp_path / "scratch"
    cmd = [sys.executable, "-m", module, "--quick", "--json", str(out), "--dir", str(scratch)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(scratch.iterdir()) == [], "the scratch directory was not removed"
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report, proc.stdout
