"""Vacuum benchmark: space, pruning and commit latency under steady updates (issue 7).

Run ``python -m stress.bench.vacuum`` (``--help`` for the options).  It uses the
public API (`mvcc.open`, `db.table`, `Table.update`, `db.transactional`,
`db.transaction`, `db.vacuum`, `db.stats`) and `mvcc.vacuum.read_report`, the
vacuum process's report, as an operator would; file sizes come from the files.
Each phase below starts from its own freshly loaded directory, in a scratch
directory, so no phase inherits another's dead versions or vacuum process.

Data: --docs documents (default DOCS = 10,000) ``{"id": i, "name":
f"user{i}", "age": i % 90, "email": f"user{i}@example.com", "bio": BIO, "n":
0}``, ~117 B each packed (msgpack; the store adds a one-byte header), in
``db.table("users", primary_key="id")``.

What is measured, in this order (timing rules: _common.py T1-T4; T5 below)
1. live data: one transaction inserts every document (autovacuum off), then
   `db.vacuum()` folds it into the page file.  Live data = the page file's
   size right after that vacuum (the figure the goal is a ratio to); the sum
   of the documents' packed sizes is reported next to it.  Every phase loads
   its own directory this way and reports against its own page file.
2. steady updates, with vacuum: PROCESSES spawned workers (`mvcc.open(path)`:
   autovacuum on, durability "full") start together (a Barrier) and loop for
   --seconds: one transaction that reads a random document and writes it back
   with ``n + 1`` (`Table.update(k, fn)` inside
   ``@db.transactional(retries=RETRIES)``).  A worker's first commit that
   sees a pass's worth of WAL starts the vacuum process (vacuum.py A5), so the
   warm-up includes its start.  Each worker records every acknowledged
   commit's latency (the whole transactional call, retries included) and end
   time.  The parent samples every SAMPLE_EVERY s, on a grid from the
   workers' start: the page file's and the WAL segments' sizes (from the
   files) and the vacuum report (passes, versions pruned).  Reported: file
   size over time, its ratio to live data (the page file alone, and the page
   file + WAL), the maximum and the final ratio after warm-up (the first
   WARMUP of the run), versions pruned/s (over the run, and after warm-up
   next to the commits/s of the same window: a vacuum that keeps up prunes
   about one version per commit), commits/s, retries, commit latency
   p50/p90/p99/max, the CPU the workers used (`time.process_time()` around
   each loop) and the vacuum process (/proc/PID/stat, Linux; from its start
   to the end of the run), in cores (CPU seconds per second of the run), and
   the vacuum report's pages freed per pass.
3. steady updates, without vacuum: the same with ``autovacuum=False`` in
   every worker: no vacuum process; committers fold the WAL inline only at
   the hard limit (checkpoint.py HARD_FACTOR x CHECKPOINT_FRAMES frames), so
   the WAL grows and the page file holds still.  The same figures; the p99
   ratio with / without is the goal's.
   The two runs go one after the other rather than alternating in parts
   (T4): each run's state (file size, dead versions, the vacuum process) is
   what is measured, and cannot be cut into parts.  On a shared machine a
   burst of load during one run moves its p99: run it twice before trusting
   a ratio near the limit.
4. a killed reader's pin: with the workers updating and the vacuum process
   serving (after its first pass), a reader process (spawned with the
   workers, the directory open, waiting on a pipe) is told to pin: it opens a
   readonly transaction, reads every document and says so; the parent waits
   until `db.stats()["oldest_snapshot"]` names the reader (its snapshot ts is
   the pin), holds it --hold seconds while the updates go on, records what
   the pin retains, and SIGKILLs the reader.  Then it polls, with deadlines:
     registry   until `db.stats()["oldest_snapshot"]` no longer names the
                reader's pid (the registry's lock probe: locking/registry.py);
                the time is taken when that stats() call returns;
     pass       until the vacuum report shows a pass whose horizon is past the
                reader's snapshot ts: the first pass free to prune what the
                reader alone kept.  Its time is the report's end-of-pass
                wall-clock time minus the kill's; the versions pruned since the
                kill and the dead versions `db.stats()` counts right after are
                reported next to what the pin retained at the kill;
     dead == 0  until `db.stats()["versions"]["dead"]` is 0 (or DEAD_WAIT s
                pass after the pass above; 1 s --quick): under steady updates a
                chain updated twice since the oldest live snapshot keeps a dead
                version, so 0 may not come, and "never" is not an error.
   The page file's size is reported at the pin, at the kill, after the pass
   and when the workers stop (what a pin costs in space, and whether it comes
   back).

(T5) Times compared across processes come from `time.monotonic_ns()` (one
     clock for every process of the machine), never `perf_counter`; the
     vacuum report's times are wall-clock, compared with the kill's
     `time.time()`.

Correctness, checked in every phase (a failure exits 1 whatever --strict
says): the final sum of ``n`` equals the commits the workers acknowledged, and
each document's ``n`` the commits acknowledged on it (LOST UPDATES must be 0);
no worker error; the killed reader's pin clears (registry and pass) before
its deadline; the vacuum process exits once the phase closes the directory.

Goals (issue 7; --strict turns a FAIL into exit status 1)
(G1) with vacuum, after warm-up, the page file <= 1.5 x live data at every
     sample (the page file + WAL is reported next to it, not a goal: the
     WAL's current segment is 1 MiB whatever the data)
(G2) commit p99 with vacuum <= 2 x commit p99 without

``--profile vacuum`` runs phase 2 with the vacuum process under cProfile
(``python -m cProfile -m mvcc vacuum --daemon DIR``, the daemon openers start,
started here before the workers so they find it serving); ``--profile
workers`` profiles every worker of phase 2 and merges their statistics.
docs/benchmarks.md records the findings.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

import mvcc

# Below the public API (so it needs an entry in tests/test_layers.py's
# LAYER_BENCHMARKS, as mvcc.commitlog has one for the locking benchmark): the
# vacuum report's horizon and pass duration have no public accessor, and
# db.stats(), which gives the rest, pins a snapshot on every call: a sampler
# calling it every 0.5 s would hold the vacuum's horizon back.
from mvcc.vacuum import read_report

from ._common import (
    BUSY_TIMEOUT,
    CHILD_TIMEOUT,
    SPAWN,
    add_common_arguments,
    finish,
    floor,
    format_number,
    format_table,
    make_doc,
    print_floors,
    print_header,
    print_profile,
    profile_or_measure,
    require_positive,
    run_workers,
)
from .locking import percentile

__all__ = ["DOCS", "FLOORS", "PHASES", "PROFILES", "RUNS", "check_floors", "main"]

MODULE = "stress.bench.vacuum"
TABLE = "users"
PRIMARY_KEY = "id"
DOCS = 10_000
BIO = "likes long walks, short transactions and bounded files."  # 56 B
PROCESSES = 4
RETRIES = 1000  # @db.transactional(retries=...) for the updates
SAMPLE_EVERY = 0.5  # seconds between samples of the file sizes
WARMUP = 0.2  # the first fraction of a run, left out of the "after warm-up" figures
FILE_RATIO_LIMIT = 1.5  # G1
P99_RATIO_LIMIT = 2.0  # G2
POLL = 0.01  # seconds between looks while waiting for a pin to clear
PIN_DEADLINE = 60.0  # seconds after the kill before "never cleared"
DEAD_WAIT = 10.0  # seconds after the pass that may find dead == 0 (1 s --quick)
VACUUM_EXIT = 30.0  # seconds for the vacuum process to exit once the directory is closed
TABLE_ROWS = 12  # rows of the file-size-over-time table
# run_workers (_common.py) gives up on a worker that has not reported within
# CHILD_TIMEOUT of its start, so a run must end well before that.
MAX_SECONDS = CHILD_TIMEOUT - 20
PIN_WORKER_SECONDS = MAX_SECONDS  # phase 4's workers run until stopped, or this long
MAX_HOLD = 30.0
MIB = 1024 * 1024

RUNS = ("with_vacuum", "without_vacuum")  # phases 2 and 3
AUTOVACUUM = {"with_vacuum": True, "without_vacuum": False}  # each run's workers open with
PHASES = (*RUNS, "pin")
FLOORS = ("file_size_floor", "p99_ratio_floor")
PROFILES = ("vacuum", "workers")


# -- configuration and data ----------------------------------------------------


@dataclass(frozen=True)
class Config:
    docs: int
    seconds: float
    hold: float
    dead_wait: float
    processes: int
    seed: int
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = bool(args.quick)
        return cls(
            docs=args.docs or DOCS,
            seconds=args.seconds or (5.0 if quick else 60.0),
            hold=args.hold or (1.0 if quick else 5.0),
            dead_wait=1.0 if quick else DEAD_WAIT,
            processes=PROCESSES,
            seed=args.seed,
            quick=quick,
        )


def make_user(i: int) -> dict[str, Any]:
    """Document `i`: issue 5's document, a bio and the counter the updates bump."""
    return {**make_doc(i), "bio": BIO, "n": 0}


def _bump(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "n": doc["n"] + 1}


def disk_bytes(path: str) -> tuple[int, int]:
    """The page file's size and the WAL segments' total, from the files."""
    wal_dir = os.path.join(path, "wal")
    pages = wal = 0
    with contextlib.suppress(FileNotFoundError):
        pages = os.path.getsize(os.path.join(path, "pages"))
    for name in os.listdir(wal_dir) if os.path.isdir(wal_dir) else ():
        with contextlib.suppress(FileNotFoundError):  # a segment the vacuum just deleted
            wal += os.path.getsize(os.path.join(wal_dir, name)) if name.endswith(".wal") else 0
    return pages, wal


def load(path: str, docs: int) -> dict[str, Any]:
    """Phase 1: every document in one transaction, then a vacuum; the live data."""
    users = [make_user(i) for i in range(docs)]
    with mvcc.open(path, autovacuum=False) as db:
        table = db.table(TABLE, primary_key=PRIMARY_KEY)
        with db.transaction():
            for doc in users:
                table.insert(doc)
        db.vacuum()
        pages, wal = disk_bytes(path)
    packed = sum(len(msgpack.packb(doc)) for doc in users)
    return {
        "docs": docs,
        "doc_bytes": packed,
        "mean_doc_bytes": packed / docs,
        "page_file_bytes": pages,
        "wal_bytes": wal,
    }


def read_counters(db: mvcc.Database, docs: int) -> list[int]:
    """Every document's ``n``, from one snapshot."""
    table = db.table(TABLE, primary_key=PRIMARY_KEY)
    with db.transaction(readonly=True):
        return [table.get(i)["n"] for i in range(docs)]


def _until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `condition` until truthy (its value returned); RuntimeError after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {seconds:g} s")
        time.sleep(POLL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust kill(0)


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) process `pid` has used so far, from /proc (Linux);
    None elsewhere or once it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def wait_vacuum_exit(pid: int | None) -> str | None:
    """The vacuum process exits once no process has the directory open (vacuum.py
    A3); an error message if it has not within VACUUM_EXIT seconds."""
    if pid is None:
        return None
    try:
        _until(lambda: not _alive(pid), VACUUM_EXIT, "exit")
    except RuntimeError:
        return f"the vacuum process {pid} still runs {VACUUM_EXIT:g} s after the last close"
    return None


# -- the update workers ------------------------------------------------------------


class UpdateReport(NamedTuple):
    worker: int
    pid: int
    acked: dict[int, int]  # document -> increments acknowledged on it
    attempts: int  # runs of the transaction function (retries included)
    ends_ns: list[int]  # monotonic end of each acknowledged commit
    latencies_ns: list[int]  # the whole transactional call, per acknowledged commit
    errors: list[str]  # the first few
    error_count: int
    started_ns: int
    finished_ns: int
    cpu_s: float  # CPU time (user + system) the loop used


def _update_worker(
    path: str,
    autovacuum: bool,
    seconds: float,
    docs: int,
    seed: int,
    stop: Any,
    started: Any,
    profile_dir: str | None,
    index: int,
    barrier: Any,
    conn: Any,
) -> None:
    """Read-modify-write random documents from the barrier for `seconds` or until `stop`."""
    rng = random.Random(seed * 1000 + index)
    acked: dict[int, int] = {}
    ends: list[int] = []
    latencies: list[int] = []
    errors: list[str] = []
    error_count = attempts = 0
    clock = time.monotonic_ns  # T5
    prof = cProfile.Profile() if profile_dir else None
    with mvcc.open(path, autovacuum=autovacuum, lock_timeout=BUSY_TIMEOUT) as db:
        table = db.table(TABLE, primary_key=PRIMARY_KEY)

        def bump_one(key: int) -> None:
            nonlocal attempts
            attempts += 1
            if table.update(key, _bump) != 1:
                raise AssertionError(f"document {key} is missing")

        increment: Callable[[int], None] = db.transactional(retries=RETRIES)(bump_one)
        barrier.wait(CHILD_TIMEOUT)
        begun = clock()
        if index == 0:
            started.value = begun
        deadline = begun + int(seconds * 1e9)
        cpu = time.process_time()
        if prof is not None:
            prof.enable()
        while clock() < deadline and not stop.is_set():
            key = rng.randrange(docs)
            t0 = clock()
            try:
                increment(key)
            except Exception as exc:  # counted and reported: the run then fails
                error_count += 1
                if len(errors) < 5:
                    errors.append(repr(exc))
                continue
            t1 = clock()  # the commit returned: acknowledged
            ends.append(t1)
            latencies.append(t1 - t0)
            acked[key] = acked.get(key, 0) + 1
        if prof is not None:
            prof.disable()
            assert profile_dir is not None
            prof.dump_stats(os.path.join(profile_dir, f"worker-{index}.prof"))
        finished = clock()
        cpu = time.process_time() - cpu
    conn.send(
        UpdateReport(
            index,
            os.getpid(),
            acked,
            attempts,
            ends,
            latencies,
            errors,
            error_count,
            begun,
            finished,
            cpu,
        )
    )


class Workload:
    """The update workers on one directory, run by `run_workers` in a thread (it
    blocks until they report) while the parent samples or runs the pin test."""

    def __init__(
        self,
        path: str,
        cfg: Config,
        *,
        autovacuum: bool,
        seconds: float,
        profile_dir: str | None = None,
    ) -> None:
        self.stop = SPAWN.Event()
        self.started = SPAWN.Value("q", 0)  # worker 0's monotonic_ns at the barrier
        args = (path, autovacuum, seconds, cfg.docs, cfg.seed, self.stop, self.started)
        self._args = (*args, profile_dir)
        self._processes = cfg.processes
        self.reports: list[UpdateReport] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="update-workers", daemon=True)

    def _run(self) -> None:
        try:
            self.reports = run_workers(_update_worker, self._processes, self._args, "update")
        except BaseException as exc:  # re-raised by finish(), in the main thread
            self._error = exc

    def start(self) -> None:
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_started(self) -> int:
        """The workers' start (monotonic_ns), once they passed the barrier."""
        _until(lambda: self.started.value or not self.running(), CHILD_TIMEOUT, "worker start")
        if not self.started.value:
            self.finish()  # raises what stopped them
            raise RuntimeError("the update workers ended before they started")
        return int(self.started.value)

    def finish(self, *, stop: bool = True) -> list[UpdateReport]:
        """Stop the workers (or, with stop=False, let them run out their time) and
        return their reports."""
        if stop:
            self.stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.reports


def check_counts(reports: Sequence[UpdateReport], final: Sequence[int]) -> dict[str, Any]:
    """Acknowledged increments against the documents' counters (0 lost, 0 wrong)."""
    acked = [0] * len(final)
    for r in reports:
        for key, n in r.acked.items():
            acked[key] += n
    total = sum(acked)
    return {
        "acknowledged": total,
        "final_sum": sum(final),
        "lost_updates": total - sum(final),
        "wrong_documents": sum(1 for a, f in zip(acked, final) if a != f),
        "errors": sum(r.error_count for r in reports),
        "error_samples": [e for r in reports for e in r.errors][:5],
    }


def commit_figures(reports: Sequence[UpdateReport], warm_ns: int) -> dict[str, Any]:
    """Commits, rates and latency percentiles over every acknowledged commit."""
    begun = min(r.started_ns for r in reports)
    window = (max(r.finished_ns for r in reports) - begun) / 1e9
    commits = sum(len(r.latencies_ns) for r in reports)
    latencies = sorted(ns / 1e6 for r in reports for ns in r.latencies_ns)
    after = sum(1 for r in reports for end in r.ends_ns if end >= begun + warm_ns)
    after_window = window - warm_ns / 1e9
    return {
        "processes": len(reports),
        "window_s": window,
        "commits": commits,
        "commits_per_s": commits / window if window > 0 else None,
        "commits_per_s_after_warmup": after / after_window if after_window > 0 else None,
        "retries": sum(r.attempts for r in reports) - commits - sum(r.error_count for r in reports),
        "workers_cpu_s": sum(r.cpu_s for r in reports),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
    }


# -- phases 2 and 3: steady updates -----------------------------------------------------


def sample(path: str, monitor: mvcc.Database, start_ns: int) -> dict[str, Any]:
    """The files' sizes and the vacuum report now; `t` in seconds from the start."""
    now = time.monotonic_ns()
    pages, wal = disk_bytes(path)
    report = read_report(monitor)
    return {
        "t": round((now - start_ns) / 1e9, 3),
        "pages_bytes": pages,
        "wal_bytes": wal,
        "passes": 0 if report is None else report.passes,
        "versions_pruned": 0 if report is None else report.versions_pruned,
        "pages_freed": 0 if report is None else report.pages_freed,
        "pages_reused": 0 if report is None else report.pages_reused,
        "last_pass_s": None if report is None else report.last_seconds,
    }


def sample_run(path: str, monitor: mvcc.Database, work: Workload) -> list[dict[str, Any]]:
    """Samples every SAMPLE_EVERY s on a grid from the workers' start, while they run."""
    start_ns = work.wait_started()
    samples = []
    k = 0
    while work.running():
        samples.append(sample(path, monitor, start_ns))
        k += 1
        delay = start_ns / 1e9 + k * SAMPLE_EVERY - time.monotonic_ns() / 1e9
        while delay > 0 and work.running():
            time.sleep(min(delay, 0.05))
            delay = start_ns / 1e9 + k * SAMPLE_EVERY - time.monotonic_ns() / 1e9
    return samples


def space_figures(
    samples: Sequence[Mapping[str, Any]], live: Mapping[str, Any], warm_s: float
) -> dict[str, Any]:
    """File size against live data after warm-up; versions pruned per second."""
    base = live["page_file_bytes"]
    after = [s for s in samples if s["t"] >= warm_s] or list(samples[-1:])
    pages = [s["pages_bytes"] / base for s in after]
    total = [(s["pages_bytes"] + s["wal_bytes"]) / base for s in after]
    first, last = samples[0], samples[-1]
    span = last["t"] - first["t"]
    warm, span_after = after[0], last["t"] - after[0]["t"]
    return {
        "max_ratio_pages": max(pages),
        "final_ratio_pages": pages[-1],
        "max_ratio_total": max(total),
        "final_ratio_total": total[-1],
        "max_pages_bytes": max(s["pages_bytes"] for s in after),
        "max_wal_bytes": max(s["wal_bytes"] for s in after),
        "passes": last["passes"],
        "versions_pruned": last["versions_pruned"],
        "pages_freed": last["pages_freed"],
        "pages_reused": last["pages_reused"],
        "pages_freed_per_pass": last["pages_freed"] / last["passes"] if last["passes"] else None,
        "pruned_per_s": (last["versions_pruned"] - first["versions_pruned"]) / span
        if span > 0
        else None,
        "pruned_per_s_after_warmup": (last["versions_pruned"] - warm["versions_pruned"])
        / span_after
        if span_after > 0
        else None,
        "max_pass_s": max((s["last_pass_s"] or 0.0 for s in samples), default=0.0),
    }


def steady_run(directory: str, cfg: Config, name: str) -> dict[str, Any]:
    """Phase 2 or 3 in its own directory: load, then --seconds of updates, sampled."""
    path = os.path.join(directory, name)
    live = load(path, cfg.docs)
    with mvcc.open(path, autovacuum=False) as monitor:  # the parent's: samples, checks
        work = Workload(path, cfg, autovacuum=AUTOVACUUM[name], seconds=cfg.seconds)
        work.start()
        try:
            samples = sample_run(path, monitor, work)
        finally:
            reports = work.finish()
        start_ns = min(r.started_ns for r in reports)
        samples.append(sample(path, monitor, start_ns))  # the workers closed
        stats = monitor.stats()
        vacuum_cpu = cpu_seconds(stats["vacuum"]["pid"])  # before it exits (A3)
        counts = check_counts(reports, read_counters(monitor, cfg.docs))
    vacuum_pid = stats["vacuum"]["pid"]
    exit_error = wait_vacuum_exit(vacuum_pid)
    warm_s = WARMUP * cfg.seconds
    return {
        "autovacuum": AUTOVACUUM[name],
        "live": live,
        **commit_figures(reports, int(warm_s * 1e9)),
        **space_figures(samples, live, warm_s),
        "counts": counts,
        "page_size": stats["page_file_bytes"] // max(1, stats["pages"]),
        "end_stats": {
            "page_file_bytes": stats["page_file_bytes"],
            "pages": stats["pages"],
            "free_pages": stats["free_pages"],
            "wal": stats["wal"],
            "versions": stats["versions"],
            "vacuum_pid": vacuum_pid,
        },
        "vacuum_cpu_s": vacuum_cpu,
        "vacuum_exit_error": exit_error,
        "samples": samples,
    }


# -- phase 4: a killed reader's pin -------------------------------------------------------


def _pinning_reader(path: str, conn: Any) -> None:
    """Open the directory; when told, open a readonly transaction, read every
    document, say so, and hold it until killed."""
    with mvcc.open(path, autovacuum=False) as db:
        table = db.table(TABLE, primary_key=PRIMARY_KEY)
        conn.recv()  # "pin"
        with db.transaction(readonly=True):
            seen = sum(1 for _doc in table)
            conn.send((os.getpid(), seen))
            conn.recv()  # never comes: the parent kills this process


def _oldest_pid(db: mvcc.Database) -> int | None:
    oldest = db.stats()["oldest_snapshot"]
    return None if oldest is None else int(oldest["pid"])


def _pinned_by(db: mvcc.Database, pid: int) -> dict[str, Any] | None:
    """`db.stats()` when its oldest snapshot is `pid`'s, else None."""
    stats = db.stats()
    oldest = stats["oldest_snapshot"]
    return stats if oldest is not None and oldest["pid"] == pid else None


def _has_passed(db: mvcc.Database) -> bool:
    report = read_report(db)
    return report is not None and report.passes >= 1


def measure_pin(path: str, monitor: mvcc.Database, cfg: Config, conn: Any) -> dict[str, Any]:
    """Tell the reader (on `conn`) to pin, hold the pin, kill the reader, time the
    pin clearing (module docstring)."""
    conn.send("pin")
    if not conn.poll(CHILD_TIMEOUT):
        raise RuntimeError(f"the reader said nothing in {CHILD_TIMEOUT} s")
    pid, _seen = conn.recv()  # it holds its snapshot now
    pages_at_pin = disk_bytes(path)[0]
    stats = _until(lambda: _pinned_by(monitor, pid), 30, "pin named in stats()")
    pin_ts = stats["oldest_snapshot"]["ts"]
    time.sleep(cfg.hold)  # the pin held while the updates go on (what is measured)
    before = monitor.stats()
    report0 = read_report(monitor)
    kill_wall, kill_ns = time.time(), time.monotonic_ns()
    os.kill(pid, signal.SIGKILL)
    out = _after_kill(monitor, pid, pin_ts, (kill_wall, kill_ns), report0, cfg.dead_wait)
    oldest = before["oldest_snapshot"] or {}
    return {
        "reader_pid": pid,
        "pin_ts": pin_ts,
        "hold_s": cfg.hold,
        "at_kill": {
            "oldest_pid": oldest.get("pid"),
            "age_s": oldest.get("age_seconds"),
            "retains_versions": oldest.get("retains_versions"),
            "retains_bytes": oldest.get("retains_bytes"),
            "dead_versions": before["versions"]["dead"],
            "pages_bytes_at_pin": pages_at_pin,
            "pages_bytes": before["page_file_bytes"],
        },
        **out,
    }


def _after_kill(
    monitor: mvcc.Database,
    pid: int,
    pin_ts: int,
    killed: tuple[float, int],
    report0: Any,
    dead_wait: float,
) -> dict[str, Any]:
    """Poll for the registry to forget the reader and for a pass past its pin;
    `killed` is the kill's (time.time(), time.monotonic_ns())."""
    kill_wall, kill_ns = killed
    passes0 = 0 if report0 is None else report0.passes
    pruned0 = 0 if report0 is None else report0.versions_pruned
    registry_s: float | None = None
    stats_call_s: float | None = None
    the_pass: dict[str, Any] | None = None
    deadline = kill_ns + int(PIN_DEADLINE * 1e9)
    while (registry_s is None or the_pass is None) and time.monotonic_ns() < deadline:
        if registry_s is None:
            called = time.monotonic_ns()
            oldest_pid = _oldest_pid(monitor)
            done = time.monotonic_ns()
            if oldest_pid != pid:
                registry_s, stats_call_s = (done - kill_ns) / 1e9, (done - called) / 1e9
        report = read_report(monitor)
        if (
            the_pass is None
            and report is not None
            and report.passes > passes0
            and report.horizon[0] > pin_ts
        ):
            seen_ns = time.monotonic_ns()
            after = monitor.stats()
            the_pass = {
                "pass_end_s": report.last_pass - kill_wall if report.last_pass else None,
                "seen_s": (seen_ns - kill_ns) / 1e9,
                "pass_seconds": report.last_seconds,
                "horizon_ts": report.horizon[0],
                "passes_since_kill": report.passes - passes0,
                "pruned_since_kill": report.versions_pruned - pruned0,
                "dead_versions_after": after["versions"]["dead"],
                "pages_bytes_after": after["page_file_bytes"],
                "free_pages_after": after["free_pages"],
            }
        time.sleep(POLL)
    dead_zero_s = None
    if the_pass is not None:
        dead_deadline = time.monotonic_ns() + int(dead_wait * 1e9)
        while time.monotonic_ns() < dead_deadline:
            if monitor.stats()["versions"]["dead"] == 0:
                dead_zero_s = (time.monotonic_ns() - kill_ns) / 1e9
                break
            time.sleep(10 * POLL)
    return {
        "registry_clear_s": registry_s,
        "stats_call_s": stats_call_s,
        "pass": the_pass,
        "dead_zero_s": dead_zero_s,
    }


def pin_phase(directory: str, cfg: Config) -> dict[str, Any]:
    """Phase 4 in its own directory: updates with vacuum, a reader pinned and killed."""
    path = os.path.join(directory, "pin")
    live = load(path, cfg.docs)
    mine, theirs = SPAWN.Pipe()
    # Started with the workers (its start-up overlaps theirs); it pins when told.
    reader = SPAWN.Process(target=_pinning_reader, args=(path, theirs), name="pinning-reader")
    with mvcc.open(path, autovacuum=False) as monitor:
        work = Workload(path, cfg, autovacuum=True, seconds=PIN_WORKER_SECONDS)  # or stopped
        reader.start()
        work.start()
        try:
            work.wait_started()
            _until(lambda: _has_passed(monitor), CHILD_TIMEOUT, "vacuum pass")
            pin = measure_pin(path, monitor, cfg, mine)
        finally:
            if reader.is_alive():
                reader.kill()
            reader.join(CHILD_TIMEOUT)
            reports = work.finish()
        end = monitor.stats()
        counts = check_counts(reports, read_counters(monitor, cfg.docs))
    vacuum_pid = end["vacuum"]["pid"]
    return {
        "live": live,
        **pin,
        "end": {"pages_bytes": end["page_file_bytes"], "free_pages": end["free_pages"]},
        "commits": sum(len(r.latencies_ns) for r in reports),
        "counts": counts,
        "vacuum_exit_error": wait_vacuum_exit(vacuum_pid),
    }


# -- the whole run ----------------------------------------------------------------------


def run_all(directory: str, cfg: Config) -> dict[str, Any]:
    """Every phase, in the order of the module docstring."""
    out = {name: steady_run(directory, cfg, name) for name in RUNS}
    out["pin"] = pin_phase(directory, cfg)
    return out


def p99_ratio(runs: Mapping[str, Mapping[str, Any]]) -> float | None:
    mine, theirs = runs["with_vacuum"].get("p99_ms"), runs["without_vacuum"].get("p99_ms")
    return None if mine is None or not theirs else float(mine / theirs)


def check_floors(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """G1 and G2 of the module docstring with their measured values and PASS/FAIL."""
    text = f"with vacuum, page file after warm-up <= {FILE_RATIO_LIMIT:g} x live data (max)"
    size = runs["with_vacuum"].get("max_ratio_pages")
    return [
        floor("file_size_floor", text, size, FILE_RATIO_LIMIT, "x"),
        floor(
            "p99_ratio_floor",
            f"commit p99 with vacuum <= {P99_RATIO_LIMIT:g} x without",
            p99_ratio(runs),
            P99_RATIO_LIMIT,
            "x",
        ),
    ]


def run_errors(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Correctness failures: each fails the benchmark whatever --strict says."""
    out = []
    for name in PHASES:
        phase = results[name]
        c = phase["counts"]
        if c["lost_updates"] or c["wrong_documents"]:
            out.append(
                f"{name}: {c['acknowledged']} commits acknowledged, final sum "
                f"{c['final_sum']} ({c['wrong_documents']} documents wrong)"
            )
        if c["errors"]:
            out.append(f"{name}: {c['errors']} worker errors, e.g. {c['error_samples'][:2]}")
        if phase["vacuum_exit_error"]:
            out.append(f"{name}: {phase['vacuum_exit_error']}")
    pin = results["pin"]
    if pin["registry_clear_s"] is None:
        out.append(f"pin: stats() still names the killed reader after {PIN_DEADLINE:g} s")
    if pin["pass"] is None:
        out.append(f"pin: no vacuum pass past the killed reader's pin in {PIN_DEADLINE:g} s")
    return out


# -- the report: tables, JSON ----------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / MIB:.2f}"


def size_table(runs: Mapping[str, Mapping[str, Any]], seconds: float) -> str:
    """File size over time, both runs side by side: about TABLE_ROWS rows of the
    samples nearest each mark, then the sample taken after the workers closed."""
    step = max(SAMPLE_EVERY, round(seconds / TABLE_ROWS / SAMPLE_EVERY) * SAMPLE_EVERY)
    marks = [k * step for k in range(int(seconds / step) + 1)]
    rows = []
    for mark in [*marks, None]:
        cells = ["end" if mark is None else f"{mark:g}"]
        for name in RUNS:
            samples = runs[name]["samples"]
            s = samples[-1] if mark is None else min(samples[:-1], key=lambda s: abs(s["t"] - mark))
            base = runs[name]["live"]["page_file_bytes"]
            pages, total = s["pages_bytes"], s["pages_bytes"] + s["wal_bytes"]
            cells += [
                _mib(pages),
                _mib(s["wal_bytes"]),
                f"{pages / base:.2f}",
                f"{total / base:.2f}",
            ]
        rows.append(cells)
    sub = ["pages MiB", "WAL MiB", "pages/live", "+WAL/live"]
    headers = ["t s", *(f"{h} {tag}" for tag in ("(with)", "(without)") for h in sub)]
    return format_table(headers, rows)


def _per_second(value: float | None, seconds: float) -> float | None:
    return None if value is None or seconds <= 0 else value / seconds


def summary_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    specs: tuple[tuple[str, str, Callable[[Mapping[str, Any]], float | None]], ...] = (
        ("commits", "", lambda r: r["commits"]),
        ("commits/s", "", lambda r: r["commits_per_s"]),
        ("commits/s after warm-up", "", lambda r: r["commits_per_s_after_warmup"]),
        ("retries", "", lambda r: r["retries"]),
        ("workers' CPU", "cores", lambda r: r["workers_cpu_s"] / r["window_s"]),
        ("vacuum process CPU", "cores", lambda r: _per_second(r["vacuum_cpu_s"], r["window_s"])),
        ("commit p50", "ms", lambda r: r["p50_ms"]),
        ("commit p90", "ms", lambda r: r["p90_ms"]),
        ("commit p99", "ms", lambda r: r["p99_ms"]),
        ("commit max", "ms", lambda r: r["max_ms"]),
        ("page file after warm-up, max", "x live", lambda r: r["max_ratio_pages"]),
        ("page file at the end", "x live", lambda r: r["final_ratio_pages"]),
        ("page file + WAL after warm-up, max", "x live", lambda r: r["max_ratio_total"]),
        ("page file + WAL at the end", "x live", lambda r: r["final_ratio_total"]),
        ("vacuum passes", "", lambda r: r["passes"]),
        ("versions pruned", "", lambda r: r["versions_pruned"]),
        ("versions pruned/s", "", lambda r: r["pruned_per_s"]),
        ("versions pruned/s after warm-up", "", lambda r: r["pruned_per_s_after_warmup"]),
        ("longest pass seen", "s", lambda r: r["max_pass_s"]),
        ("pages freed per pass", "", lambda r: r["pages_freed_per_pass"]),
        ("live data", "pages", lambda r: r["live"]["page_file_bytes"] / r["page_size"]),
        ("free pages at the end", "", lambda r: r["end_stats"]["free_pages"]),
        ("dead versions at the end", "", lambda r: r["end_stats"]["versions"]["dead"]),
        ("lost updates", "", lambda r: r["counts"]["lost_updates"]),
    )
    rows = [
        [label, unit, *(format_number(get(runs[name])) for name in RUNS)]
        for label, unit, get in specs
    ]
    return format_table(["figure", "unit", "with vacuum", "without vacuum"], rows)


def pin_lines(pin: Mapping[str, Any]) -> list[str]:
    k, p = pin["at_kill"], pin["pass"]

    def secs(v: float | None) -> str:
        return "never" if v is None else f"{v * 1000:.0f} ms"

    lines = [
        f"  reader pid {pin['reader_pid']} pinned ts {pin['pin_ts']}, held {pin['hold_s']:g} s; "
        f"at the kill it alone retained {format_number(k['retains_versions'])} versions "
        f"({format_number(k['retains_bytes'])} B), {format_number(k['dead_versions'])} dead "
        f"in all; page file {_mib(k['pages_bytes_at_pin'])} -> {_mib(k['pages_bytes'])} MiB",
        f"  stats() stops naming it: {secs(pin['registry_clear_s'])} after the kill "
        f"(that stats() call took {secs(pin['stats_call_s'])})",
    ]
    if p is None:
        lines.append("  a vacuum pass past its pin: never (within the deadline)")
    else:
        lines.append(
            f"  first vacuum pass past its pin ended {secs(p['pass_end_s'])} after the kill "
            f"(seen at {secs(p['seen_s'])}; the pass took {secs(p['pass_seconds'])}); "
            f"{p['passes_since_kill']} pass(es) since the kill pruned "
            f"{format_number(p['pruned_since_kill'])} versions; dead versions after: "
            f"{format_number(p['dead_versions_after'])}; page file then "
            f"{_mib(p['pages_bytes_after'])} MiB, {format_number(p['free_pages_after'])} pages free"
        )
    lines.append(f"  stats() shows 0 dead versions: {secs(pin['dead_zero_s'])} after the kill")
    end = pin["end"]
    lines.append(
        f"  when the workers stopped: page file {_mib(end['pages_bytes'])} MiB, "
        f"{format_number(end['free_pages'])} pages free"
    )
    return lines


def to_json(
    header: dict[str, Any], results: dict[str, Any], floors: list[Any], errors: list[str]
) -> dict[str, Any]:
    return {
        **header,
        "runs": {name: results[name] for name in RUNS},
        "p99_ratio": p99_ratio(results),
        "pin": results["pin"],
        "floors": floors,
        "errors": errors,
    }


def print_report(header: dict[str, Any], results: dict[str, Any], floors: list[Any]) -> None:
    cfg = header["config"]
    print_header("vacuum", header)
    live = results["with_vacuum"]["live"]
    print(
        f"#   {cfg['docs']:,} docs (~{live['mean_doc_bytes']:.0f} B packed); "
        f"{cfg['processes']} update processes, {cfg['seconds']:g} s per run; warm-up the "
        f"first {WARMUP:.0%}; pin held {cfg['hold']:g} s; seed {cfg['seed']}"
    )
    print(f"#   measured in {header['elapsed_s']:.1f} s")
    if cfg["quick"]:
        print("#   --quick: short runs; a smoke run, too short to judge the goals")
    print()
    print(
        f"Live data: page file {_mib(live['page_file_bytes'])} MiB after the load's vacuum "
        f"(documents {_mib(live['doc_bytes'])} MiB packed; WAL {_mib(live['wal_bytes'])} MiB)"
    )
    print()
    print("File size over time (ratios to the live page file):")
    print(size_table(results, cfg["seconds"]))
    print()
    print(summary_table(results))
    print(f"commit p99 with / without vacuum: {format_number(p99_ratio(results))}")
    print()
    print("A killed reader's pin:")
    print("\n".join(pin_lines(results["pin"])))
    print()
    print_floors(floors)


# -- profiles -------------------------------------------------------------------------------


def profile(what: str, directory: str, cfg: Config, top: int) -> str:
    """Phase 2 with the vacuum process, or every worker, under cProfile."""
    path = os.path.join(directory, "profile")
    prof_dir = os.path.join(directory, "profiles")
    os.makedirs(prof_dir)
    load(path, cfg.docs)
    daemon = _profiled_daemon(path, prof_dir) if what == "vacuum" else contextlib.nullcontext()
    with mvcc.open(path, autovacuum=False) as monitor, daemon:  # the daemon needs an opener
        if what == "vacuum":
            _until(lambda: monitor.stats()["vacuum"]["running"], 30, "profiled daemon")
        work = Workload(
            path,
            cfg,
            autovacuum=True,
            seconds=cfg.seconds,
            profile_dir=prof_dir if what == "workers" else None,
        )
        work.start()
        reports = work.finish(stop=False)
        report = read_report(monitor)
        counts = check_counts(reports, read_counters(monitor, cfg.docs))
    out = io.StringIO()
    paths = sorted(os.path.join(prof_dir, p) for p in os.listdir(prof_dir))
    stats = pstats.Stats(paths[0], stream=out)
    for p in paths[1:]:
        stats.add(p)
    figures = commit_figures(reports, 0)
    print(
        f"{cfg.processes} processes, {figures['commits']:,} commits "
        f"({format_number(figures['commits_per_s'])}/s, p99 {format_number(figures['p99_ms'])} "
        f"ms), lost updates {counts['lost_updates']}; vacuum passes "
        f"{0 if report is None else report.passes}, versions pruned "
        f"{0 if report is None else report.versions_pruned}; "
        + ("the vacuum process" if what == "vacuum" else "every worker's statistics merged"),
        file=out,
    )
    print_profile(stats, top)
    return out.getvalue()


@contextlib.contextmanager
def _profiled_daemon(path: str, prof_dir: str) -> Iterator[None]:
    """`python -m cProfile -m mvcc vacuum --daemon DIR` for the block (the caller
    keeps the directory open meanwhile, or the daemon would leave: A3); SIGTERM
    then ends it between passes, and cProfile writes its statistics."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(mvcc.__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    out = os.path.join(prof_dir, "vacuum.prof")
    cmd = [sys.executable, "-m", "cProfile", "-o", out, "-m", "mvcc", "vacuum", "--daemon", path]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # run_daemon exits 0 on it; cProfile then saves
        proc.wait(VACUUM_EXIT)


# -- the command ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Benchmark the vacuum process under a steady update workload (issue 7).",
    )
    p.add_argument("--seconds", type=float, help="seconds per update run (default 60; 5 --quick)")
    p.add_argument("--docs", type=int, help=f"documents loaded (default {DOCS:,})")
    p.add_argument(
        "--hold", type=float, help="seconds the reader holds its pin (default 5; 1 --quick)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    add_common_arguments(p, PROFILES)
    args = p.parse_args(argv)
    require_positive(p, args, "seconds", "docs", "hold")
    if args.seconds is not None and args.seconds > MAX_SECONDS:
        p.error(f"--seconds must be at most {MAX_SECONDS:g} (a worker reports within that)")
    if args.hold is not None and args.hold > MAX_HOLD:
        p.error(f"--hold must be at most {MAX_HOLD:g}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    measured = profile_or_measure(args, MODULE, "bench-vacuum-", cfg, run_all, profile)
    if measured is None:  # profiled
        return 0
    header, results = measured
    floors = check_floors(results)
    errors = run_errors(results)
    print_report(header, results, floors)
    return finish(
        args.json,
        to_json(header, results, floors, errors),
        floors,
        errors=errors,
        fail_on_floors=args.strict,
    )


if __name__ == "__main__":
    sys.exit(main())
