"""Smoke test of the vacuum benchmark: a short --quick run finishes and reports every figure.

It runs the benchmark's `main` with half-second update runs and checks that it
exits 0 (no worker error, no lost update, the killed reader's pin cleared, the
vacuum process exited: the run exits 1 otherwise), that its JSON is complete
and consistent, and that every phase's acknowledged commits equal the sum of
the documents' counters.  Not the goals: a half-second run is far too short to
judge space or latency, so the floors are reported but not asserted here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stress.bench.vacuum import FLOORS, PHASES, RUNS, check_floors, main
from tests.support.bench import positive

SAMPLE_FIELDS = {"t", "pages_bytes", "wal_bytes", "passes", "versions_pruned"}
RUN_FIGURES = (
    "commits_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "max_ratio_pages",
    "final_ratio_pages",
    "max_ratio_total",
    "final_ratio_total",
)


def test_short_quick_run_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, scratch = tmp_path / "bench.json", tmp_path / "scratch"
    argv = [
        "--quick",
        "--seconds",
        "0.5",
        "--hold",
        "0.5",
        "--json",
        str(out),
        "--dir",
        str(scratch),
    ]
    monkeypatch.setattr(sys, "argv", ["vacuum.py", *argv])  # the report's command line
    status = main(argv)
    stdout = capsys.readouterr().out
    assert status == 0, stdout
    assert list(scratch.iterdir()) == [], "the scratch directory was not removed"
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["errors"] == []

    # every phase: nothing lost, nothing failed, commits acknowledged = sum of n
    for name in PHASES:
        phase = report["runs"][name] if name in RUNS else report["pin"]
        counts = phase["counts"]
        assert positive(counts["acknowledged"]), name
        assert counts["final_sum"] == counts["acknowledged"], (name, counts)
        assert counts["lost_updates"] == 0 and counts["wrong_documents"] == 0, (name, counts)
        assert counts["errors"] == 0, (name, counts["error_samples"])
        assert phase["vacuum_exit_error"] is None, name
        live = phase["live"]
        assert live["docs"] == report["config"]["docs"]
        assert live["page_file_bytes"] > live["doc_bytes"] > 0, name

    # the two steady runs: figures, samples on the grid, the vacuum only in one
    for name in RUNS:
        run = report["runs"][name]
        assert run["commits"] == run["counts"]["acknowledged"], name
        assert run["processes"] == report["config"]["processes"] == 4
        for figure in RUN_FIGURES:
            assert positive(run[figure]), (name, figure, run[figure])
        assert run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"] <= run["max_ms"], name
        assert run["retries"] >= 0, name
        samples = run["samples"]
        assert len(samples) >= 2 and all(set(s) >= SAMPLE_FIELDS for s in samples), name
        assert [s["t"] for s in samples] == sorted(s["t"] for s in samples), name
        assert all(s["pages_bytes"] > 0 for s in samples), name
    without = report["runs"]["without_vacuum"]
    assert without["autovacuum"] is False and report["runs"]["with_vacuum"]["autovacuum"]
    assert without["passes"] == 0 and without["versions_pruned"] == 0  # no vacuum process
    assert without["end_stats"]["vacuum_pid"] is None
    p99 = report["runs"]["with_vacuum"]["p99_ms"] / without["p99_ms"]
    assert abs(report["p99_ratio"] - p99) <= 1e-9 * p99

    # the killed reader: the registry forgot it, and a pass went past its pin
    pin = report["pin"]
    assert positive(pin["registry_clear_s"]) and positive(pin["stats_call_s"])
    assert pin["at_kill"]["oldest_pid"] == pin["reader_pid"]
    assert pin["at_kill"]["retains_versions"] >= 0
    assert pin["pass"] is not None and pin["pass"]["horizon_ts"] > pin["pin_ts"]
    assert pin["pass"]["passes_since_kill"] >= 1 and pin["pass"]["pruned_since_kill"] >= 0

    assert [f["name"] for f in report["floors"]] == list(FLOORS)
    assert all(isinstance(f["pass"], bool) for f in report["floors"])
    for fact in ("python", "platform", "cpu_count", "filesystem", "date"):
        assert report["machine"][fact]
    assert report["config"]["quick"] is True and report["config"]["seconds"] == 0.5
    assert "-m stress.bench.vacuum --quick" in report["command"]
    assert "A killed reader's pin" in stdout and "Floors:" in stdout


def test_goals_are_the_page_file_ratio_and_the_p99_ratio() -> None:
    runs = {
        "with_vacuum": {"max_ratio_pages": 1.4, "p99_ms": 5.0},
        "without_vacuum": {"p99_ms": 2.0},
    }
    by_name = {f["name"]: f for f in check_floors(runs)}
    assert by_name["file_size_floor"]["pass"] and by_name["file_size_floor"]["value"] == 1.4
    assert not by_name["p99_ratio_floor"]["pass"]  # 2.5 x
    assert by_name["p99_ratio_floor"]["value"] == 2.5
    runs["with_vacuum"]["max_ratio_pages"] = 1.6
    assert not check_floors(runs)[0]["pass"]
