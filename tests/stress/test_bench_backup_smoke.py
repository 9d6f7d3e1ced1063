"""Smoke test of the backup benchmark: a --quick run finishes and reports every figure.

It checks that the benchmark runs (the run exits 1 when a copy does not hold
the data loaded, the backup taken under the writers fails `mvcc.check`, or a
writer fails), that its JSON holds every figure, positive, and that the
ratios and rates are what the figures make them; not the speeds: a few MB is
far too little to judge them.
"""

from __future__ import annotations

from pathlib import Path

from stress.bench.backup import CANDIDATES, REFERENCES
from tests.support.bench import positive, run_quick

FIGURES = ("seconds", "data_mb_per_s", "source_bytes", "source_mb_per_s", "output_bytes")
UNDER_WRITERS = (
    "best_s",
    "mean_s",
    "best_data_mb_per_s",
    "mean_data_mb_per_s",
    "commits",
    "quiet_commits",
    "quiet_s",
    "quiet_commits_per_s",
    "during_commits",
    "during_s",
    "during_commits_per_s",
    "commit_rate_ratio",
    "pages_before_bytes",
    "pages_after_bytes",
)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    report, stdout = run_quick("stress.bench.backup", tmp_path)
    assert report["errors"] == []

    # the data: the same documents in both engines
    data, cfg = report["data"], report["config"]
    assert data["docs"] == cfg["docs"] == sum(data["tables"].values()) > 0
    assert positive(data["doc_bytes"]) and abs(data["mean_doc_bytes"] - cfg["doc_bytes"]) < 20
    for key in ("load_s", "checkpoint_s", "page_file_bytes", "wal_bytes", "directory_bytes"):
        assert positive(data["mvcc"][key]), key
    assert positive(data["sqlite3"]["load_s"]) and positive(data["sqlite3"]["file_bytes"])

    # phase 2: every candidate, every figure, ratios = MB/s over the reference's
    figures = report["idle"]["figures"]
    assert set(figures) == set(CANDIDATES)
    for name in CANDIDATES:
        f = figures[name]
        for key in FIGURES:
            assert positive(f[key]), (name, key, f[key])
        # cp's own CPU time may round to 0 on a few MB; mvcc's work is all CPU
        assert f["cpu_seconds"] >= 0 and (name in REFERENCES or positive(f["cpu_seconds"]))
        assert close(f["data_mb_per_s"], data["doc_bytes"] / 1e6 / f["seconds"]), name
        assert close(f["source_mb_per_s"], f["source_bytes"] / 1e6 / f["seconds"]), name
        for ref in REFERENCES:
            want = f["data_mb_per_s"] / figures[ref]["data_mb_per_s"]
            assert close(f["ratios"][ref], want), (name, ref)
    assert figures["cp"]["ratios"]["cp"] == 1.0
    assert figures["cp"]["output_bytes"] == figures["cp"]["source_bytes"]  # a copy
    assert positive(report["idle"]["import_checkpoint_s"])

    # phase 3: the backups under the writers and the writers' rates
    u = report["under_writers"]
    assert u["writers"] == 2 and u["backups"] == cfg["repeat"] == len(u["backup_seconds"])
    for key in UNDER_WRITERS:
        assert positive(u[key]), (key, u[key])
    assert u["best_s"] == min(u["backup_seconds"]) <= u["mean_s"]
    assert len(u["backup_cpu_seconds"]) == u["backups"]
    assert all(positive(c) for c in u["backup_cpu_seconds"])
    assert u["quiet_commits"] + u["during_commits"] <= u["commits"]
    assert close(u["commit_rate_ratio"], u["during_commits_per_s"] / u["quiet_commits_per_s"])
    assert u["backup_ts"] == sorted(u["backup_ts"]) and len(set(u["backup_ts"])) == u["backups"]

    for fact in ("python", "platform", "cpu_count", "filesystem", "sqlite", "cp", "date"):
        assert report["machine"][fact]
    assert cfg["quick"] is True and cfg["mb"] == 4
    assert "-m stress.bench.backup --quick" in report["command"]
    assert "Checks: all correct" in stdout
