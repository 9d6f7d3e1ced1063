"""What the harness shows: a live progress line, then the final report.

On a terminal the progress is one line redrawn in place each second; when
stderr is not a terminal (CI, a pipe) it is a plain line every PLAIN_EVERY
seconds.  The final report goes to stdout: throughput, commit latency,
conflicts, kills and recovery times, vacuum and space, then every check with
its verdict; `--json FILE` writes the same as one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from .history import Event
from .workloads import Verdict

__all__ = ["PLAIN_EVERY", "Progress", "Summary", "percentile"]

PLAIN_EVERY = 5.0
VACUUM_COUNTS = ("passes", "versions_pruned", "pages_freed", "pages_reused", "segments_deleted")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class Summary:
    """Every figure of a run, built from the events as they are read."""

    commits: int = 0  # acknowledged transactions that wrote
    reads: int = 0  # acknowledged readonly transactions
    conflicts: int = 0
    unique_violations: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, commits only
    opens: list[float] = field(default_factory=list)  # open times after a kill
    kills_worker: int = 0
    kills_vacuum: int = 0
    restarts: int = 0
    crashes: list[str] = field(default_factory=list)
    vacuum: dict[str, Any] = field(default_factory=dict)
    _vacuum_before: dict[str, int] = field(default_factory=dict)  # killed processes' counts
    _vacuum_now: dict[str, int] = field(default_factory=dict)  # the current process's
    space_peak: int = 0
    space_final: int = 0
    seconds: float = 0.0

    def add(self, events: list[Event]) -> None:
        for event in events:
            kind = event["e"]
            if kind == "ok":
                if event.get("ro"):
                    self.reads += 1
                else:
                    self.commits += 1
                    self.latencies.append(event["dt"])
            elif kind == "fail":
                why = event.get("why")
                if why == "conflict":
                    self.conflicts += 1
                elif why == "unique":
                    self.unique_violations += 1
                else:
                    self.errors.append(f"{event['id']}: {event.get('error')}")
            elif kind == "open" and event["id"].rsplit(".", 1)[1] != "0":  # a restart
                self.opens.append(event["dt"])

    def space(self, stats: dict[str, Any]) -> int:
        """Take sizes and vacuum figures from `db.stats()`; returns the size."""
        size = int(stats["page_file_bytes"]) + int(stats["wal"]["bytes"])
        self.space_peak = max(self.space_peak, size)
        self.space_final = size
        now = {k: v for k, v in stats["vacuum"].items() if k in VACUUM_COUNTS}
        if now.get("passes", 0) < self._vacuum_now.get("passes", 0):
            # A new vacuum process (the last one was killed): its report starts at 0.
            for k, v in self._vacuum_now.items():
                self._vacuum_before[k] = self._vacuum_before.get(k, 0) + v
        self._vacuum_now = now
        self.vacuum = {k: self._vacuum_before.get(k, 0) + now.get(k, 0) for k in VACUUM_COUNTS}
        return size


class Progress:
    """The live display (module docstring)."""

    def __init__(self, total: float, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = total
        self.began = time.monotonic()
        self._last_line = 0.0
        self._last_commits = 0
        self._last_at = self.began

    def show(self, summary: Summary, size: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last_line < PLAIN_EVERY:
            return
        rate = (summary.commits - self._last_commits) / max(now - self._last_at, 1e-9)
        self._last_commits, self._last_at, self._last_line = summary.commits, now, now
        elapsed = now - self.began
        line = (
            f"{elapsed:5.1f} s, {max(0.0, self.total - elapsed):3.0f} s left  "
            f"{rate:6.0f} commits/s  "
            f"{summary.commits} commits  {summary.conflicts} conflicts  "
            f"kills {summary.kills_worker}+{summary.kills_vacuum}v  "
            f"restarts {summary.restarts}  vacuum passes {summary.vacuum.get('passes', 0)}  "
            f"files {_mib(size)}"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def render(summary: Summary, checks: list[Verdict], facts: dict[str, Any]) -> str:
    """The final report as text."""
    s = summary
    lat = s.latencies
    lines = [
        f"mvcc stress: {facts['workers']} workers, {s.seconds:.1f} s, "
        f"workloads {', '.join(facts['workloads'])}, isolation {facts['isolation']}, "
        f"durability {facts['durability']}, seed {facts['seed']}"
        + (", encrypted" if facts.get("encrypted") else ""),
        f"  throughput  {s.commits / max(s.seconds, 1e-9):.0f} commits/s "
        f"({s.commits} commits, {s.reads} readonly transactions)",
        f"  latency     commit p50 {percentile(lat, 0.5) * 1e3:.2f} ms, "
        f"p99 {percentile(lat, 0.99) * 1e3:.2f} ms",
        f"  conflicts   {s.conflicts} ({s.conflicts / max(s.commits + s.conflicts, 1):.1%} "
        f"of write attempts), unique violations {s.unique_violations}",
        f"  kills       {s.kills_worker} workers, {s.kills_vacuum} vacuum processes; "
        f"{s.restarts} restarts; recovery (open after a kill) p50 "
        f"{percentile(s.opens, 0.5) * 1e3:.0f} ms, max {max(s.opens, default=0) * 1e3:.0f} ms",
        f"  vacuum      {s.vacuum.get('passes', 0)} passes, "
        f"{s.vacuum.get('versions_pruned', 0)} versions pruned, "
        f"{s.vacuum.get('pages_reused', 0)} pages reused",
        f"  space       page file + WAL {_mib(s.space_final)} at the end, "
        f"{_mib(s.space_peak)} at peak",
        "checks:",
    ]
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        lines.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
    failed = [c.name for c in checks if not c.ok]
    lines.append("FAILED: " + ", ".join(failed) if failed else "all checks hold")
    return "\n".join(lines)


def to_json(summary: Summary, checks: list[Verdict], facts: dict[str, Any]) -> str:
    s = summary
    out = {
        **facts,
        "seconds": s.seconds,
        "commits": s.commits,
        "readonly_transactions": s.reads,
        "commits_per_second": s.commits / max(s.seconds, 1e-9),
        "commit_latency_ms": {
            "p50": percentile(s.latencies, 0.5) * 1e3,
            "p99": percentile(s.latencies, 0.99) * 1e3,
        },
        "conflicts": s.conflicts,
        "unique_violations": s.unique_violations,
        "kills": {"workers": s.kills_worker, "vacuum": s.kills_vacuum},
        "restarts": s.restarts,
        "recovery_ms": [round(x * 1e3, 3) for x in s.opens],
        "vacuum": s.vacuum,
        "space_bytes": {"final": s.space_final, "peak": s.space_peak},
        "errors": s.errors,
        "crashes": s.crashes,
        "checks": [asdict(c) for c in checks],
        "ok": all(c.ok for c in checks),
    }
    return json.dumps(out, indent=2, default=str)
