"""Smoke test of the core benchmark: a --quick run finishes and reports every figure.

It checks that the benchmark runs, that its JSON is complete and sane, and
that no counter run lost an update (the run exits 1 otherwise); not the
speeds: a --quick run is far too short to judge them, so the floors are
reported but not asserted here.
"""

from __future__ import annotations

from pathlib import Path

from stress.bench.core import ENGINES, FIGURES, FLOORS, PROCESS_COUNTS, check_floors
from tests.support.bench import positive, run_quick


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    report, stdout = run_quick("stress.bench.core", tmp_path)

    # every figure, for both engines, with its ratio
    assert set(report["figures"]) == {fig.key for fig in FIGURES}
    for fig in FIGURES:
        entry = report["figures"][fig.key]
        for engine in ENGINES:
            assert positive(entry[engine]), (fig.key, engine, entry[engine])
        assert positive(entry["ratio_mvcc_sqlite3"]), fig.key
        ratio = entry["mvcc"] / entry["sqlite3"]
        assert abs(entry["ratio_mvcc_sqlite3"] - ratio) <= 1e-9 * ratio, fig.key

    # the counters: every engine x process count, nothing lost, nothing failed
    counters = report["counters"]
    assert set(counters) == set(ENGINES)
    for engine, runs in counters.items():
        assert set(runs) == {str(n) for n in PROCESS_COUNTS}, engine
        for n, run in runs.items():
            assert run["processes"] == int(n)
            assert positive(run["increments"]) and positive(run["increments_per_s"]), (engine, n)
            assert run["final_sum"] == run["increments"], (engine, n)
            assert run["lost_updates"] == 0 and run["wrong_counters"] == 0, (engine, n)
            assert run["errors"] == 0, (engine, n, run["error_samples"])
            assert run["retries"] >= 0, (engine, n)

    assert [f["name"] for f in report["floors"]] == list(FLOORS)
    assert all(isinstance(f["pass"], bool) for f in report["floors"])
    for fact in ("python", "platform", "cpu_count", "filesystem", "sqlite", "date"):
        assert report["machine"][fact]
    assert report["config"]["quick"] is True
    assert "-m stress.bench.core --quick" in report["command"]
    assert "Floors:" in stdout and "lost updates" in stdout


def test_floors_are_ratios_to_sqlite3_and_one_limit_in_microseconds() -> None:
    results = {
        "mvcc": {fig.key: 1.0 for fig in FIGURES},
        "sqlite3": {fig.key: 100.0 for fig in FIGURES},
    }
    floors = check_floors(results)
    by_name = {f["name"]: f for f in floors}
    assert not by_name["gets_one_tx_floor"]["pass"]  # 0.01 x sqlite3
    assert by_name["empty_tx_floor"]["pass"]  # 1 µs <= 20 µs
    assert by_name["gets_one_tx_floor"]["value"] == 0.01
