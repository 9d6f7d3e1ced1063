"""Smoke test of the locking benchmark: a --quick run finishes and reports every figure.

It checks that the benchmark runs, that the group-commit logs read back whole
(the run exits 1 otherwise) and that its JSON is complete, not the figures
themselves: a --quick run is far too short to judge speed, so the floors are
reported but not asserted here.
"""

from __future__ import annotations

from pathlib import Path

from stress.bench.locking import FLOORS, GROUP_PROCESSES, LOADS, PROCESS_COUNTS
from tests.support.bench import positive, run_quick


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    report, stdout = run_quick("stress.bench.locking", tmp_path)
    results = report["results"]

    # 1. hand-off: every load x process count, with its acquisitions counted
    handoff = results["handoff"]
    assert set(handoff) == {f"{load.name}/{n}" for load in LOADS for n in PROCESS_COUNTS}
    for key, fig in handoff.items():
        assert positive(fig["acquisitions"]), key
        assert {"handoffs", "p50_us", "p99_us", "max_us", "wait_p99_us"} <= set(fig), key

    # 2. the state read (and its neighbours)
    for name in ("read_ns", "generation_ns", "write_ns"):
        assert positive(results["state"][name]), name

    # 4. WAL append + fdatasync against a bare write + fdatasync
    wal = results["wal_append"]
    assert wal["frame_bytes"] > wal["payload_bytes"] == 200
    for name in ("wal_p50_us", "wal_p99_us", "bare_p50_us", "bare_p99_us", "ratio"):
        assert positive(wal[name]), name

    # 5. group commit: 1, 2, 4 processes, each log read back whole
    group = results["group_commit"]
    assert set(group["runs"]) == {str(n) for n in GROUP_PROCESSES}
    for n, run in group["runs"].items():
        assert run["errors"] == [], n
        assert positive(run["frames"]) and positive(run["frames_per_s"]), n
        assert 0 < run["fsyncs"] <= run["frames"], n
        assert positive(run["frames_per_fsync"]), n
    assert positive(group["ratio_4_1"])
    assert group["verified"] is True

    assert [f["name"] for f in report["floors"]] == list(FLOORS)
    assert all(isinstance(f["pass"], bool) for f in report["floors"])
    assert "-m stress.bench.locking --quick" in report["command"]
    assert "Group commit" in stdout and "Floors:" in stdout
