"""Smoke test of the query benchmark: a --quick run finishes and reports every figure.

It checks that the benchmark runs, that its JSON is complete and sane, and
that every answer was right and every query ran the plan its figure names
(the run exits 1 otherwise); not the speeds: a --quick run is far too short
to judge them, so the floors are reported but not asserted here.
"""

from __future__ import annotations

from pathlib import Path

from stress.bench.query import ENGINES, FIGURES, FLOORS, SLOW, SPEEDUPS, check_floors
from tests.support.bench import positive, run_quick


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    report, stdout = run_quick("stress.bench.query", tmp_path)

    # every figure, for both engines, with its ratio
    assert set(report["figures"]) == {fig.key for fig in FIGURES}
    for fig in FIGURES:
        entry = report["figures"][fig.key]
        for engine in ENGINES:
            assert positive(entry[engine]), (fig.key, engine, entry[engine])
            if fig.key in SLOW:
                assert positive(entry[f"{engine}_queries"]), (fig.key, engine)
        ratio = entry["mvcc"] / entry["sqlite3"]
        assert abs(entry["ratio_mvcc_sqlite3"] - ratio) <= 1e-9 * ratio, fig.key

    # the speed-ups are figure / figure within one engine
    assert set(report["speedups"]) == {spec.key for spec in SPEEDUPS}
    for spec in SPEEDUPS:
        for engine in ENGINES:
            want = report["figures"][spec.fast][engine] / report["figures"][spec.slow][engine]
            got = report["speedups"][spec.key][engine]
            assert abs(got - want) <= 1e-9 * want, (spec.key, engine)

    # the answers: checked against the data, right, and by the plan each figure names
    checks = report["checks"]
    assert checks["ok"] is True and checks["errors"] == []
    assert checks["queries_checked"] > 0
    docs = report["config"]["docs"]
    for key, (lo, hi) in checks["rows_per_query"].items():
        assert 0 < lo <= hi, key
    assert checks["rows_per_query"]["order_limit"] == [10, 10]
    in_range = sum(1 for i in range(docs) if 20 <= i % 90 < 30)  # the docs' age is i % 90
    assert checks["rows_per_query"]["range"] == [in_range, in_range]
    plans = checks["plans"]
    assert plans["mvcc"]["eq_scan"] == "full scan"
    assert "(index order)" in plans["mvcc"]["order_limit"]
    assert "USING INDEX users_age" in plans["sqlite3"]["eq"]

    assert [f["name"] for f in report["floors"]] == list(FLOORS)
    assert all(isinstance(f["pass"], bool) for f in report["floors"])
    for fact in ("python", "platform", "cpu_count", "filesystem", "sqlite", "date"):
        assert report["machine"][fact]
    assert report["config"]["quick"] is True
    assert "-m stress.bench.query --quick" in report["command"]
    assert "Floors:" in stdout and "all correct" in stdout


def test_floors_are_ratios_to_sqlite3_and_speedups_within_mvcc() -> None:
    results = {
        "mvcc": {"eq": 600.0, "range": 50.0, "eq_scan": 5.0, "order_limit": 500.0},
        "sqlite3": {"eq": 1000.0, "range": 200.0, "eq_scan": 500.0, "order_limit": 1.0},
    }
    results["mvcc"]["sort_limit"] = results["sqlite3"]["sort_limit"] = 20.0
    by_name = {f["name"]: f for f in check_floors(results)}
    assert by_name["eq_floor"]["pass"] and by_name["eq_floor"]["value"] == 0.6
    assert not by_name["range_floor"]["pass"]  # 0.25 x sqlite3
    assert by_name["index_eq_floor"]["pass"]  # 600 / 5 = 120 x, sqlite3's 2 x ignored
    assert not by_name["index_order_floor"]["pass"]  # 25 x
    assert by_name["index_order_floor"]["value"] == 25.0
