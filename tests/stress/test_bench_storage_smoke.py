"""Smoke test of the storage benchmark: a --quick run finishes and reports every figure.

It checks that the benchmark runs and that its JSON is complete, not the
figures themselves: a --quick run is far too short to judge speed, so the
floors are reported but not asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from stress.bench.storage import ENGINES, FIGURES, FLOORS, UNSUPPORTED

ROOT = Path(__file__).resolve().parents[2]
HAS_LMDB = importlib.util.find_spec("lmdb") is not None


def run_quick(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "bench.json"
    scratch = tmp_path / "scratch"
    cmd = [sys.executable, "-m", "stress.bench.storage", "--quick"]
    cmd += ["--json", str(out), "--dir", str(scratch)]
    if not HAS_LMDB:
        cmd.append("--no-lmdb")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(scratch.iterdir()) == [], "the scratch directory was not removed"
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    proc, report = run_quick(tmp_path)
    engines = [e for e in ENGINES if e != "lmdb" or HAS_LMDB]
    assert set(report["figures"]) == {fig.key for fig in FIGURES}
    for fig in FIGURES:
        entry = report["figures"][fig.key]
        for engine in engines:
            value = entry[engine]
            if fig.key in UNSUPPORTED.get(engine, ()):
                assert value is None, (fig.key, engine)
            else:
                assert isinstance(value, (int, float)) and value > 0, (fig.key, engine, value)
        if not HAS_LMDB:
            assert entry["lmdb"] is None
    assert isinstance(report["tde_warm_get_cost_pct"], float)
    assert [f["name"] for f in report["floors"]] == list(FLOORS)
    assert all(isinstance(f["pass"], bool) for f in report["floors"])
    for fact in ("python", "platform", "cpu_count", "storage_page_size", "date"):
        assert report["machine"][fact]
    assert "-m stress.bench.storage --quick" in report["command"]
    assert "Floors:" in proc.stdout
