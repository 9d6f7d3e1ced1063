"""Locking benchmark: lock hand-off between processes, the shared-state read, lock costs.

Run ``python -m stress.bench.locking`` (``--help`` for the options).  It imports
`locking` directly rather than the public `mvcc` API: it measures the layer
below, as stress/bench/storage.py does for `storage`.

What is measured, in this order (timing rules: _common.py T1-T4, plus T5)
1. lock hand-off between processes: 2 and 4 spawned processes share one
   `FileLock` ("commit") and loop: note the time, acquire, note the time, hold,
   note the time, release, then wait a moment outside the lock.  Two loads:
     tight   hold nothing, no gap (acquire -> record -> release, back to back):
             waiters mostly catch the lock while they spin;
     commit  hold ~0.5 ms off the CPU (a sleep, as an fsync would), then 20 µs
             of work outside: waiters outlast the spin and block in the
             kernel (the helper-thread phase of filelock.py);
     commit-untimed  the same without a timeout, so the caller blocks in
             `flock` itself: a reference for the cost of the helper thread,
             not counted by F1.
   A hand-off is an acquisition by a process that was already waiting when the
   previous holder, another process, released; its latency is the next
   holder's acquisition time minus the previous holder's release time.
   Reported: hand-offs counted, p50, p99 and max, and the p99 of every wait
   (acquisition - start of the wait), which shows starvation that the
   hand-off figure alone hides.
2. the shared state: `StateFile.read()`, `generation()`, `write(**changes)`,
   ns per call, best of --repeat loops.
3. one uncontended lock + unlock, µs: bare `fcntl.flock` on a kept descriptor,
   `FileLock.acquire` + `release`, portalocker on a kept descriptor, and
   open + flock + close (what a lock file opened per acquire would cost);
   interleaved in parts (T4), best of --repeat.

(T5) Times that are compared across processes come from
     `time.monotonic_ns()` (CLOCK_MONOTONIC on Linux, QueryPerformanceCounter
     on Windows: one clock for every process of the machine); never
     `perf_counter`, which need not be comparable between processes.

Floors (from issue 4; --check-floors turns a FAIL into exit status 1)
(F1) Lock hand-off p50 <= 100 µs, for every load with 2 and with 4 processes.
(F2) A shared-state read <= 2 µs.

4. WAL append + fdatasync against the limit: N times (--quick: fewer)
   `wal.append(end, [200-byte payload])` + `wal.sync(new end)` with
   durability "full", against a bare `os.write` + `os.fdatasync` of the same
   number of bytes (`wal.frame_size(200)`) to a file in the same directory.
   The two alternate op by op (which goes first alternating too, T4), each op
   timed alone: an fdatasync takes 100s of µs, far above the timer's grain.
   Reported: p50 and p99 of each, µs, and the p50 ratio WAL / bare.
5. group commit: `sync_delay=0.001` (the WAL's test knob: a 1 ms disk), 1, 2
   and 4 spawned processes start together (a Barrier) and commit one frame
   at a time for a fixed time (2 s; --quick 0.5 s), each in a fresh
   directory, through `mvcc.commitlog.CommitLog` (the commit path's own
   group commit; its docstring has the algorithm): commit lock -> append
   one frame at the state's WAL end, publish the new end -> release; then
   `wait_durable`: covered by another's sync, or lead one (gather for up to
   0.4 of the last sync's duration until as many frames are pending as the
   last sync covered, fsync, publish the durable position).
   Rejected, measured here (4 processes / 1): no gather (the processes
   split into two halves taking turns, ~N/2 frames per fsync: 2.0-2.2x);
   followers queueing on the sync lock (each covered follower still passes
   the lock in turn: 1.69x); followers blocking on the sync lock shared, or
   spinning instead of polling (no better: the woken followers' appends
   queue on the commit lock either way); the last appender leading instead
   of a gathering leader (2.6x: the groups do not stay whole); every process
   syncing on its own (no fsync shared; the emulated disk's sleeps overlap,
   so it scales without batching and proves nothing).
   A frame counts once acknowledged (covered by a sync).  Reported: durable
   frames/s for 1, 2, 4 processes, the ratio 4 / 1, and the fsyncs issued
   against the frames (frames per fsync: the point of group commit).  Then
   the whole log is read back: ts consecutive from 1, as many frames as were
   acknowledged, ending at the state's commit_ts; anything else fails the
   run (exit status 1, whatever --check-floors says).

Floors (continued)
(F3) WAL append + fdatasync p50 <= 1.3 x a bare write + fdatasync p50.
(F4) Group commit: 4 processes >= 3 x the durable frames/s of one.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from locking.filelock import SPIN_SECONDS, FileLock, LockSet
from locking.statefile import StateFile
from mvcc.commitlog import CommitLog, end_fields, wal_end
from storage.wal import END_OF_FILE, WAL

from ._common import (
    CHILD_TIMEOUT,
    best_of_each,
    command_line,
    finish,
    floor,
    format_number,
    format_table,
    gc_paused,
    machine_facts,
    print_floors,
    run_workers,
)

try:
    import fcntl
except ImportError:  # Windows: the bare-flock reference figure is n/a
    fcntl = None  # type: ignore[assignment]

__all__ = ["FLOORS", "LOADS", "PROCESS_COUNTS", "SECTIONS", "main"]

MODULE = "stress.bench.locking"
PROCESS_COUNTS = (2, 4)
HANDOFF_P50_LIMIT_US = 100.0
STATE_READ_LIMIT_NS = 2000.0
WAL_RATIO_LIMIT = 1.3
GROUP_RATIO_LIMIT = 3.0
FLOORS = ("handoff_p50_floor", "state_read_floor", "wal_append_floor", "group_commit_floor")
WAL_PAYLOAD = 200  # bytes of payload per frame (sections 4 and 5)
GROUP_SYNC_DELAY = 0.001  # seconds: the WAL's slow-disk test knob (section 5)
GROUP_PROCESSES = (1, 2, 4)


@dataclass(frozen=True)
class Load:
    name: str
    hold_sleep: float  # seconds slept while holding (off the CPU, like an fsync)
    gap_busy: float  # seconds of busy work between release and the next acquire
    rounds: int  # acquisitions per process
    quick_rounds: int
    timed: bool = True  # acquire(timeout); False: acquire(None), a reference
    floor: bool = True  # counted by F1


LOADS = (
    Load("tight", hold_sleep=0.0, gap_busy=0.0, rounds=3000, quick_rounds=300),
    Load("commit", hold_sleep=0.0005, gap_busy=20e-6, rounds=300, quick_rounds=40),
    # Reference, not a floor: no timeout, so the caller blocks in flock itself
    # (one wake-up instead of the helper thread's two).
    Load("commit-untimed", 0.0005, 20e-6, rounds=300, quick_rounds=40, timed=False, floor=False),
)


@dataclass(frozen=True)
class Config:
    repeat: int
    state_reads: int
    lock_loops: int
    wal_appends: int
    group_seconds: float
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = bool(args.quick)
        return cls(
            repeat=args.repeat or (2 if quick else 5),
            state_reads=200_000 if not quick else 20_000,
            lock_loops=20_000 if not quick else 2_000,
            wal_appends=500 if not quick else 100,
            group_seconds=2.0 if not quick else 0.5,
            quick=quick,
        )


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


# -- 1. hand-off -----------------------------------------------------------------


def _handoff_worker(
    path: str, load: Load, rounds: int, index: int, barrier: Any, conn: Any
) -> None:
    """One contender: `rounds` acquisitions; sends (wait, acquired, released) times."""
    lock = FileLock(path, "commit")
    clock = time.monotonic_ns  # T5
    times = array.array("q", bytes(8 * 3 * rounds))
    hold, gap = load.hold_sleep, load.gap_busy
    timeout = CHILD_TIMEOUT if load.timed else None
    barrier.wait(CHILD_TIMEOUT)
    for i in range(rounds):
        t_wait = clock()
        lock.acquire(timeout)
        t_acq = clock()
        if hold:
            time.sleep(hold)
        t_rel = clock()
        lock.release()
        if gap:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:
                pass
        times[3 * i : 3 * i + 3] = array.array("q", (t_wait, t_acq, t_rel))
    lock.close()
    conn.send((index, times.tobytes()))


def measure_handoff(directory: str, load: Load, processes: int, quick: bool) -> dict[str, Any]:
    path = os.path.join(directory, f"handoff-{load.name}-{processes}.lock")
    rounds = load.quick_rounds if quick else load.rounds
    records: list[tuple[int, int, int, int]] = []  # (acquired, released, wait start, proc)
    for index, raw in run_workers(_handoff_worker, processes, (path, load, rounds), "hand-off"):
        times = array.array("q")
        times.frombytes(raw)
        records += [(times[j + 1], times[j + 2], times[j], index) for j in range(0, len(times), 3)]
    return handoff_figures(records)


def handoff_figures(records: list[tuple[int, int, int, int]]) -> dict[str, Any]:
    """Hand-off latencies (µs) from (acquired, released, wait start, process) records."""
    records.sort()
    handoffs: list[float] = []
    for prev, nxt in zip(records, records[1:]):
        waiting_at_release = nxt[2] < prev[1]
        if nxt[3] != prev[3] and waiting_at_release:
            handoffs.append((nxt[0] - prev[1]) / 1000)
    handoffs.sort()
    waits = sorted((acq - start) / 1000 for acq, _rel, start, _p in records)
    return {
        "acquisitions": len(records),
        "handoffs": len(handoffs),
        "p50_us": percentile(handoffs, 50),
        "p99_us": percentile(handoffs, 99),
        "max_us": handoffs[-1] if handoffs else None,
        "mean_us": statistics.fmean(handoffs) if handoffs else None,
        "wait_p99_us": percentile(waits, 99),
    }


def bench_handoff(cfg: Config, directory: str) -> dict[str, Any]:
    return {
        f"{load.name}/{n}": measure_handoff(directory, load, n, cfg.quick)
        for load in LOADS
        for n in PROCESS_COUNTS
    }


# -- 2. the shared state ---------------------------------------------------------------


def bench_state(cfg: Config, directory: str) -> dict[str, Any]:
    n = cfg.state_reads
    with StateFile(os.path.join(directory, "state")) as sf:
        sf.write(commit_ts=1, wal_offset=4096)
        read, generation, write = sf.read, sf.generation, sf.write

        def reads() -> None:
            for _ in range(n):
                read()

        def generations() -> None:
            for _ in range(n):
                generation()

        def writes() -> None:
            for i in range(n // 10):
                write(commit_ts=i)

        best = best_of_each({"read": reads, "generation": generations, "write": writes}, cfg.repeat)
    return {
        "read_ns": best["read"] / n * 1e9,
        "generation_ns": best["generation"] / n * 1e9,
        "write_ns": best["write"] / (n // 10) * 1e9,
    }


# -- 3. uncontended lock costs -------------------------------------------------------------


def bench_lock_costs(cfg: Config, directory: str) -> dict[str, Any]:
    import portalocker

    path = os.path.join(directory, "costs.lock")
    n, parts = cfg.lock_loops, 10
    per_part = n // parts
    with contextlib.ExitStack() as stack:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        stack.callback(os.close, fd)
        lock = FileLock(path + ".filelock", "commit")
        stack.callback(lock.close)
        ex, nb = portalocker.LockFlags.EXCLUSIVE, portalocker.LockFlags.NON_BLOCKING

        def filelock_loop() -> None:
            for _ in range(per_part):
                lock.acquire(10.0)
                lock.release()

        def portalocker_loop() -> None:
            for _ in range(per_part):
                portalocker.lock(fd, ex | nb)
                portalocker.unlock(fd)

        candidates: dict[str, list[Callable[[], Any]]] = {
            "filelock": [filelock_loop] * parts,
            "portalocker": [portalocker_loop] * parts,
        }
        if fcntl is not None:
            flock, lock_ex, unlock = fcntl.flock, fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

            def flock_loop() -> None:
                for _ in range(per_part):
                    flock(fd, lock_ex)
                    flock(fd, unlock)

            def open_flock_close_loop() -> None:
                for _ in range(per_part):
                    f = os.open(path, flags, 0o644)
                    flock(f, lock_ex)
                    flock(f, unlock)
                    os.close(f)

            candidates["flock"] = [flock_loop] * parts
            candidates["open_flock_close"] = [open_flock_close_loop] * parts
        best = best_of_each(candidates, cfg.repeat)
    done = per_part * parts
    figures: dict[str, Any] = {
        "flock_us": None,
        "filelock_us": best["filelock"] / done * 1e6,
        "portalocker_us": best["portalocker"] / done * 1e6,
        "open_flock_close_us": None,
    }
    if "flock" in best:
        figures["flock_us"] = best["flock"] / done * 1e6
        figures["open_flock_close_us"] = best["open_flock_close"] / done * 1e6
    return figures


# -- 4. WAL append + fdatasync against the limit ---------------------------------------------


def bench_wal_append(cfg: Config, directory: str) -> dict[str, Any]:
    n = cfg.wal_appends
    payload = os.urandom(WAL_PAYLOAD)
    wal_times: list[float] = []
    bare_times: list[float] = []
    clock = time.perf_counter_ns
    with contextlib.ExitStack() as stack:
        wal = stack.enter_context(WAL(os.path.join(directory, "wal-append"), durability="full"))
        frame = wal.frame_size(WAL_PAYLOAD)
        bare_path = os.path.join(wal.directory, "bare.dat")
        fd = os.open(bare_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stack.callback(os.close, fd)
        os.fdatasync(fd)  # the file's creation is not part of the first write's cost
        blob = os.urandom(frame)
        append, sync, write, datasync = wal.append, wal.sync, os.write, os.fdatasync
        pos = wal.start()

        def wal_op() -> None:
            nonlocal pos
            t0 = clock()
            end = append(pos, [payload])
            sync(end)
            wal_times.append((clock() - t0) / 1000)
            pos = end

        def bare_op() -> None:
            t0 = clock()
            write(fd, blob)
            datasync(fd)
            bare_times.append((clock() - t0) / 1000)

        with gc_paused():
            for _ in range(min(20, n)):  # warm-up, not counted
                wal_op()
                bare_op()
            wal_times.clear()
            bare_times.clear()
            for i in range(n):
                first, second = (wal_op, bare_op) if i % 2 == 0 else (bare_op, wal_op)
                first()
                second()
        if pos.offset - wal.start().offset != (n + min(20, n)) * frame:
            raise RuntimeError("the WAL frames are not frame_size() bytes each")
    wal_times.sort()
    bare_times.sort()
    wal_p50, bare_p50 = percentile(wal_times, 50), percentile(bare_times, 50)
    return {
        "appends": n,
        "payload_bytes": WAL_PAYLOAD,
        "frame_bytes": frame,
        "wal_p50_us": wal_p50,
        "wal_p99_us": percentile(wal_times, 99),
        "bare_p50_us": bare_p50,
        "bare_p99_us": percentile(bare_times, 99),
        "ratio": wal_p50 / bare_p50 if wal_p50 and bare_p50 else None,
    }


# -- 5. group commit ------------------------------------------------------------------------------


def _group_worker(directory: str, seconds: float, index: int, barrier: Any, conn: Any) -> None:
    """One committer: frames one at a time for `seconds`; sends its counts and times."""
    clock = time.monotonic_ns  # T5: compared across processes
    payload = index.to_bytes(4, "big") * (WAL_PAYLOAD // 4)
    with contextlib.ExitStack() as stack:
        wal = stack.enter_context(
            WAL(os.path.join(directory, "wal"), durability="full", sync_delay=GROUP_SYNC_DELAY)
        )
        locks = stack.enter_context(LockSet(directory, timeout=CHILD_TIMEOUT))
        state = stack.enter_context(StateFile(os.path.join(directory, "state")))
        log = CommitLog(
            wal, state, locks.commit, locks.sync, (locks.gate0, locks.gate1), timeout=CHILD_TIMEOUT
        )
        commit, read, append, wait_durable = locks.commit, state.read, log.append, log.wait_durable
        frames = 0
        barrier.wait(CHILD_TIMEOUT)
        started = clock()
        deadline = started + int(seconds * 1e9)
        while clock() < deadline:
            commit.acquire(CHILD_TIMEOUT)
            try:
                mine = append(read(), [payload]).commit_ts
            finally:
                commit.release()
            wait_durable(mine)
            frames += 1  # acknowledged: durable
        finished = clock()
        conn.send((index, frames, wal.syncs, log.syncs_led, started, finished))


def _verify_log(directory: str, frames: int) -> list[str]:
    """Read the whole log back; the problems found (none: consecutive ts, all there)."""
    errors: list[str] = []
    with (
        WAL(os.path.join(directory, "wal"), durability="full") as wal,
        StateFile(os.path.join(directory, "state")) as sf,
    ):
        state = sf.read()
        reader = wal.read(wal.start())
        count, expected = 0, 1
        for frame in reader:
            if frame.ts != expected:
                errors.append(f"frame {count + 1} has ts {frame.ts}, expected {expected}")
                break
            count += 1
            expected += 1
        stopped = reader.stopped
        if stopped is None or stopped.reason != END_OF_FILE:
            errors.append(f"the log ended with {stopped}")
        if count != frames:
            errors.append(f"{count} frames in the log, {frames} acknowledged")
        if state.commit_ts != count:
            errors.append(f"state commit_ts {state.commit_ts}, {count} frames in the log")
        if state.durable_ts != state.commit_ts:
            errors.append(f"state durable_ts {state.durable_ts} < commit_ts {state.commit_ts}")
        if wal_end(state) != reader.position:
            errors.append(f"state WAL end {wal_end(state)} != log end {reader.position}")
    return errors


def measure_group_commit(directory: str, processes: int, seconds: float) -> dict[str, Any]:
    directory = os.path.join(directory, f"group-{processes}")
    os.makedirs(directory)
    with (
        WAL(os.path.join(directory, "wal"), durability="full") as wal,
        StateFile(os.path.join(directory, "state")) as sf,
    ):
        start = wal.start()
        sf.write(**end_fields(start))
    reports = run_workers(_group_worker, processes, (directory, seconds), "group-commit")
    frames = sum(r[1] for r in reports)
    fsyncs = sum(r[2] for r in reports)
    waits = sum(r[3] for r in reports)
    window = (max(r[5] for r in reports) - min(r[4] for r in reports)) / 1e9
    return {
        "processes": processes,
        "seconds": window,
        "frames": frames,
        "frames_per_s": frames / window,
        "fsyncs": fsyncs,
        "frames_per_fsync": frames / fsyncs if fsyncs else None,
        "covered_by_others": frames - waits,
        "errors": _verify_log(directory, frames),
    }


def bench_group_commit(cfg: Config, directory: str) -> dict[str, Any]:
    runs = {str(n): measure_group_commit(directory, n, cfg.group_seconds) for n in GROUP_PROCESSES}
    one, four = runs["1"]["frames_per_s"], runs["4"]["frames_per_s"]
    return {
        "sync_delay_s": GROUP_SYNC_DELAY,
        "runs": runs,
        "ratio_4_1": four / one if one else None,
        "verified": not any(run["errors"] for run in runs.values()),
    }


# -- the floors, the report -------------------------------------------------------------------


def check_floors(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each floor of the module docstring with its measured value and PASS/FAIL."""
    floors: list[dict[str, Any]] = []
    handoff = results.get("handoff", {})
    floor_loads = {load.name for load in LOADS if load.floor}
    p50s = [fig["p50_us"] for key, fig in handoff.items() if key.split("/")[0] in floor_loads]
    worst = None if not p50s or None in p50s else max(p50s)
    floors.append(
        floor(
            "handoff_p50_floor",
            "lock hand-off p50 <= 100 µs (worst of tight/commit x 2/4 processes)",
            worst,
            HANDOFF_P50_LIMIT_US,
            "µs",
        )
    )
    read_ns = results.get("state", {}).get("read_ns")
    floors.append(
        floor("state_read_floor", "shared-state read <= 2 µs", read_ns, STATE_READ_LIMIT_NS, "ns")
    )
    ratio = results.get("wal_append", {}).get("ratio")
    floors.append(
        floor(
            "wal_append_floor",
            "WAL append + fdatasync p50 <= 1.3 x bare write + fdatasync",
            ratio,
            WAL_RATIO_LIMIT,
            "x",
        )
    )
    group = results.get("group_commit", {}).get("ratio_4_1")
    floors.append(
        floor(
            "group_commit_floor",
            "group commit: 4 processes >= 3 x the durable frames/s of 1",
            group,
            GROUP_RATIO_LIMIT,
            "x",
            at_least=True,
        )
    )
    return floors


def verification_errors(results: dict[str, Any]) -> list[str]:
    """Problems found reading the group-commit logs back: each fails the run."""
    runs = results.get("group_commit", {}).get("runs", {})
    return [f"group commit, {n} processes: {e}" for n, run in runs.items() for e in run["errors"]]


def handoff_table(handoff: dict[str, Any]) -> str:
    headers = ["load / processes", "acquisitions", "hand-offs", "p50 µs", "p99 µs", "max µs"]
    headers.append("wait p99 µs")
    rows = []
    for key, fig in handoff.items():
        rows.append(
            [
                key,
                format_number(fig["acquisitions"]),
                format_number(fig["handoffs"]),
                format_number(fig["p50_us"]),
                format_number(fig["p99_us"]),
                format_number(fig["max_us"]),
                format_number(fig["wait_p99_us"]),
            ]
        )
    return format_table(headers, rows)


def costs_table(results: dict[str, Any]) -> str:
    state, locks = results.get("state", {}), results.get("locks", {})
    rows = [
        ["StateFile.read()", "ns", format_number(state.get("read_ns"))],
        ["StateFile.generation()", "ns", format_number(state.get("generation_ns"))],
        ["StateFile.write(commit_ts=...)", "ns", format_number(state.get("write_ns"))],
        ["fcntl.flock lock + unlock, kept fd", "µs", format_number(locks.get("flock_us"))],
        ["FileLock acquire + release", "µs", format_number(locks.get("filelock_us"))],
        ["portalocker lock + unlock, kept fd", "µs", format_number(locks.get("portalocker_us"))],
        ["open + flock + unlock + close", "µs", format_number(locks.get("open_flock_close_us"))],
    ]
    return format_table(["uncontended operation", "unit", "cost"], rows)


def wal_append_table(fig: dict[str, Any]) -> str:
    rows = [
        [
            f"WAL append + sync, {fig['payload_bytes']} B payload",
            format_number(fig["frame_bytes"]),
            format_number(fig["wal_p50_us"]),
            format_number(fig["wal_p99_us"]),
        ],
        [
            "bare os.write + os.fdatasync",
            format_number(fig["frame_bytes"]),
            format_number(fig["bare_p50_us"]),
            format_number(fig["bare_p99_us"]),
        ],
        ["ratio WAL / bare", "", format_number(fig["ratio"]), ""],
    ]
    return format_table(["durable append", "bytes", "p50 µs", "p99 µs"], rows)


def group_commit_table(fig: dict[str, Any]) -> str:
    rows = []
    for n, run in fig["runs"].items():
        rows.append(
            [
                n,
                format_number(run["frames"]),
                format_number(run["frames_per_s"]),
                format_number(run["fsyncs"]),
                format_number(run["frames_per_fsync"]),
                format_number(run["covered_by_others"]),
                "ok" if not run["errors"] else "FAILED",
            ]
        )
    headers = ["processes", "frames", "frames/s", "fsyncs", "frames/fsync", "covered"]
    return format_table([*headers, "log check"], rows)


def print_report(header: dict[str, Any], results: dict[str, Any], floors: list[Any]) -> None:
    print(f"# locking benchmark: {header['command']}")
    for name, value in header["machine"].items():
        print(f"#   {name}: {value}")
    cfg = header["config"]
    print(f"#   best of {cfg['repeat']}; spin phase {SPIN_SECONDS * 1e6:.0f} µs")
    print(f"#   measured in {header['elapsed_s']:.1f} s")
    if cfg["quick"]:
        print("#   --quick: short loops; a smoke run, too noisy to compare")
    print()
    if "handoff" in results:
        print("Lock hand-off between processes (next acquisition - previous release):")
        print(handoff_table(results["handoff"]))
        print()
    print(costs_table(results))
    print()
    if "wal_append" in results:
        print(
            f"WAL append + fdatasync against the limit ({results['wal_append']['appends']} each):"
        )
        print(wal_append_table(results["wal_append"]))
        print()
    if "group_commit" in results:
        fig = results["group_commit"]
        print(f"Group commit, {fig['sync_delay_s'] * 1e3:g} ms sync delay (durable frames):")
        print(group_commit_table(fig))
        print(f"ratio 4 / 1 processes: {format_number(fig['ratio_4_1'])}")
        print()
    print_floors(floors)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Benchmark lock hand-off between processes and the shared state file.",
    )
    p.add_argument("--repeat", type=int, help="repetitions, the best reported (default 5)")
    p.add_argument("--dir", help="where to make a scratch directory (default: the temp dir)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="a small smoke run: few rounds")
    p.add_argument("--check-floors", action="store_true", help="exit 1 if a floor fails")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


# The sections, run in this order: name -> function(cfg, scratch dir) -> figures.
SECTIONS: list[tuple[str, Callable[[Config, str], dict[str, Any]]]] = [
    ("handoff", bench_handoff),
    ("state", bench_state),
    ("locks", bench_lock_costs),
    ("wal_append", bench_wal_append),
    ("group_commit", bench_group_commit),
]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="bench-locking-", dir=args.dir)
    results: dict[str, Any] = {}
    try:
        header = {
            "command": command_line(MODULE),
            "machine": machine_facts(directory),
            "config": dataclasses.asdict(cfg),
        }
        started = time.perf_counter()
        for name, run in SECTIONS:
            results[name] = run(cfg, directory)
        elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    header["elapsed_s"] = round(elapsed, 2)
    floors = check_floors(results)
    print_report(header, results, floors)
    return finish(
        args.json,
        {**header, "results": results, "floors": floors},
        floors,
        errors=verification_errors(results),
        fail_on_floors=args.check_floors,
    )


if __name__ == "__main__":
    sys.exit(main())
