"""The harness report's figures from events (stress/report.py)."""

from __future__ import annotations

from stress.report import Summary, percentile


def test_recovery_times_are_the_opens_of_restarted_runs_only() -> None:
    s = Summary()
    s.add(
        [
            {"e": "open", "id": "w0.0", "dt": 0.5},  # the first run: not a recovery
            {"e": "open", "id": "w0.1", "dt": 0.002},
            {"e": "open", "id": "w0.10", "dt": 0.003},  # incarnation 10 is a restart too
            {"e": "open", "id": "w12.0", "dt": 0.4},
        ]
    )
    assert sorted(s.opens) == [0.002, 0.003]


def test_commits_reads_conflicts_and_errors_are_counted_apart() -> None:
    s = Summary()
    s.add(
        [
            {"e": "ok", "id": "w0.0-1", "dt": 0.001, "ro": False},
            {"e": "ok", "id": "w0.0-2", "dt": 0.009, "ro": True},
            {"e": "fail", "id": "w0.0-3", "dt": 0.001, "why": "conflict"},
            {"e": "fail", "id": "w0.0-4", "dt": 0.001, "why": "unique"},
            {"e": "fail", "id": "w0.0-5", "dt": 0.001, "why": "error", "error": "Boom: x"},
        ]
    )
    assert (s.commits, s.reads, s.conflicts, s.unique_violations) == (1, 1, 1, 1)
    assert s.latencies == [0.001] and s.errors == ["w0.0-5: Boom: x"]
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([], 0.99) == 0.0
