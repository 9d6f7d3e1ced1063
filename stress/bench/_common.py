"""Helpers shared by the benchmarks: machine facts, timing, number formatting, tables.

Timing rules every benchmark here follows (so their figures compare):
(T1) Wall time from `time.perf_counter`, around a loop of many operations,
     never around one operation.
(T2) The cyclic garbage collector is off while a loop is timed, as `timeit`
     does: a collection landing in one repetition but not another is noise,
     not a property of the code under test.
(T3) A repeated measurement reports the best repetition: the others measured
     the same code plus interference from the rest of the machine.
(T4) Figures that are compared with each other are measured round-robin
     (repetition 1 of every candidate, then repetition 2, ...), and a long loop
     is cut into parts that alternate between the candidates too, so a burst of
     load from elsewhere on the machine falls on all of them rather than on one.
     Measuring one candidate completely before the next was rejected: on a
     shared two-CPU machine it once made TDE warm gets (which decrypt nothing)
     look 40% slower than plain ones; whole 0.4 s loops alternated still left
     +-20% between the two.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import mmap
import multiprocessing
import os
import platform
import pstats
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import msgpack

__all__ = [
    "BUSY_TIMEOUT",
    "add_common_arguments",
    "best_of_each",
    "command_line",
    "filesystem_of",
    "format_number",
    "format_table",
    "gc_paused",
    "machine_facts",
    "make_doc",
    "parts_of",
    "print_header",
    "print_profile",
    "profile_or_measure",
    "ratio",
    "require_positive",
    "run_measured",
    "scratch_directory",
    "sqlite_connect",
    "timed",
]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off, after one collection, for the block (T2)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes, with the garbage collector off (T1, T2)."""
    with gc_paused():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


def best_of_each(
    fns: Mapping[str, Callable[[], Any] | Sequence[Callable[[], Any]]],
    repeat: int,
    setups: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """The fastest of `repeat` timed runs of each candidate, interleaved (T3, T4).

    A candidate is one function, or a list of parts whose times add up to one
    run; the parts of all candidates alternate (part 1 of each, then part 2 of
    each, ...), so a burst of load lasting longer than a part falls on every
    candidate.  `setups[name]`, when given, runs untimed before each run of
    `fns[name]`.
    """
    parts = {name: [fn] if callable(fn) else list(fn) for name, fn in fns.items()}
    rounds = max((len(p) for p in parts.values()), default=0)
    best = dict.fromkeys(parts, math.inf)
    for _ in range(max(1, repeat)):
        total = dict.fromkeys(parts, 0.0)
        with gc_paused():
            for i in range(rounds):
                for name, run in parts.items():
                    if i >= len(run):
                        continue
                    if i == 0 and setups and name in setups:
                        setups[name]()
                    start = time.perf_counter()
                    run[i]()
                    total[name] += time.perf_counter() - start
        for name, secs in total.items():
            best[name] = min(best[name], secs)
    return best


def command_line(module: str) -> str:
    """The command that started this run, as a user would type it."""
    return shlex.join([os.path.basename(sys.executable), "-m", module, *sys.argv[1:]])


def filesystem_of(path: str) -> str:
    """The type of the file system holding `path` (from /proc/mounts), or "unknown".

    fsync costs depend on it far more than on the code: tmpfs makes a synced
    commit look free, so the header of a benchmark that syncs says which it was.
    """
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return "unknown"
    real = os.path.realpath(path)
    best = ("", "unknown")
    for mountpoint, fstype in mounts:
        inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) > len(best[0]):
            best = (mountpoint, fstype)
    return best[1]


def machine_facts(directory: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a reader needs to compare this run with another one."""
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "os_page_size": str(mmap.PAGESIZE),
        "directory": directory,
        "filesystem": filesystem_of(directory),
    }
    facts.update(extra or {})
    return facts


def format_number(value: float | None) -> str:
    """Thousands separators for big figures, three significant digits for small ones."""
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == int(value) and abs(value) < 100:
        return str(int(value))
    return f"{value:.3g}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def floor(
    name: str, text: str, value: float | None, limit: float, unit: str, *, at_least: bool = False
) -> dict[str, Any]:
    """One floor of a benchmark: the measured value against its limit.

    A missing value (the figure could not be measured) fails the floor.
    """
    ok = value is not None and (value >= limit if at_least else value <= limit)
    return {"name": name, "text": text, "value": value, "limit": limit, "unit": unit, "pass": ok}


def print_floors(floors: Sequence[Mapping[str, Any]]) -> None:
    print("Floors:")
    for f in floors:
        verdict = "PASS" if f["pass"] else "FAIL"
        value, limit, unit = format_number(f["value"]), format_number(f["limit"]), f["unit"]
        print(f"  {verdict}  {f['text']}: {value} {unit} (limit {limit} {unit})")


SPAWN = multiprocessing.get_context("spawn")
CHILD_TIMEOUT = 120.0
"""Seconds a benchmark waits for one worker process before giving up on it."""


def run_workers(
    target: Callable[..., None], processes: int, args: tuple[Any, ...], what: str
) -> list[Any]:
    """Start `processes` spawned `target(*args, index, barrier, conn)`; return what each
    sends on `conn`, in index order; every process is joined (killed if it hangs)."""
    barrier = SPAWN.Barrier(processes)
    pipes = [SPAWN.Pipe() for _ in range(processes)]
    procs = [
        SPAWN.Process(target=target, args=(*args, i, barrier, child))
        for i, (_, child) in enumerate(pipes)
    ]
    reports = []
    try:
        for p in procs:
            p.start()
        for parent, _ in pipes:
            if not parent.poll(CHILD_TIMEOUT):
                raise RuntimeError(f"a {what} worker sent nothing in {CHILD_TIMEOUT} s")
            reports.append(parent.recv())
    finally:
        for p in procs:
            p.join(CHILD_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join()
    return reports


def finish(
    json_path: str | None,
    report: Mapping[str, Any],
    floors: Sequence[Mapping[str, Any]],
    *,
    errors: Sequence[str] = (),
    fail_on_floors: bool = False,
) -> int:
    """The end of every benchmark's main(): write the JSON report if asked, print
    the errors, and return the exit status (1 on an error, or on a failed floor
    when asked to fail on floors)."""
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    for error in errors:
        print(f"ERROR  {error}", file=sys.stderr)
    if errors or (fail_on_floors and not all(f["pass"] for f in floors)):
        return 1
    return 0


# -- shared by the benchmarks against sqlite3 (core.py, query.py) ----------------------

BUSY_TIMEOUT = 30.0  # seconds: sqlite3's busy_timeout (core.py: the counters' lock_timeout too)


def make_doc(i: int) -> dict[str, Any]:
    """Document `i` of issue 5's data (~55 B packed); its age is i % 90."""
    return {"id": i, "name": f"user{i}", "age": i % 90, "email": f"user{i}@example.com"}


def parts_of(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    """`items` cut into at most `parts` slices of equal length (the last shorter)."""
    step = max(1, -(-len(items) // parts))
    return [items[i : i + step] for i in range(0, len(items), step)]


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, FULL sync.

    journal_mode is stored in the file; synchronous is per connection, so every
    connection (the counter workers' too) sets it.
    """
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    return con


def ratio(key: str, results: Mapping[str, Mapping[str, Any]]) -> float | None:
    """mvcc / sqlite3 for the figure as reported: > 1 is better for "higher" rows only."""
    mine, theirs = results["mvcc"].get(key), results["sqlite3"].get(key)
    if mine is None or not theirs:
        return None
    return float(mine / theirs)


def add_common_arguments(p: argparse.ArgumentParser, profiles: Sequence[str]) -> None:
    """The options after a benchmark's own: --dir, --keep, --json, --quick,
    --strict (--check-floors), --profile (one of `profiles`), --top."""
    p.add_argument("--dir", help="where to make a scratch directory (default: the temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="a small smoke run: few docs, short loops")
    p.add_argument(
        "--strict",
        "--check-floors",
        dest="strict",
        action="store_true",
        help="exit 1 if a floor fails",
    )
    p.add_argument(
        "--profile",
        choices=profiles,
        help="instead of the benchmark, profile one mvcc workload with cProfile",
    )
    p.add_argument("--top", type=int, default=30, help="functions listed per profile table")


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """p.error() unless each of the options `names` is absent or positive."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")


@contextlib.contextmanager
def scratch_directory(args: argparse.Namespace, prefix: str) -> Iterator[str]:
    """A new directory under --dir (or the temp dir), deleted at the end unless --keep."""
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    directory = tempfile.mkdtemp(prefix=prefix, dir=args.dir)
    try:
        yield directory
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def print_profile(stats: pstats.Stats, top: int) -> None:
    """The `top` functions by cumulative time, then by own time, to the stats' stream."""
    stats.strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


R = TypeVar("R")


def run_measured(
    module: str, directory: str, cfg: Any, run: Callable[[str, Any], R]
) -> tuple[dict[str, Any], R]:
    """`run(directory, cfg)` (`cfg` a dataclass), and the report's header: the
    command, the machine with the sqlite3 and msgpack versions, the config, and
    the seconds the run took."""
    versions = {"sqlite": sqlite3.sqlite_version, "msgpack": ".".join(map(str, msgpack.version))}
    header: dict[str, Any] = {
        "command": command_line(module),
        "machine": machine_facts(directory, versions),
        "config": dataclasses.asdict(cfg),
    }
    started = time.perf_counter()
    out = run(directory, cfg)
    header["elapsed_s"] = round(time.perf_counter() - started, 2)
    return header, out


def profile_or_measure(
    args: argparse.Namespace,
    module: str,
    prefix: str,
    cfg: Any,
    run: Callable[[str, Any], R],
    profile: Callable[[str, str, Any, int], str],
) -> tuple[dict[str, Any], R] | None:
    """A benchmark's main run in a scratch directory: with `--profile WHAT`,
    print `profile(WHAT, directory, cfg, top)` and return None; otherwise
    `run_measured`."""
    with scratch_directory(args, prefix) as directory:
        if args.profile:
            print(f"# cProfile of mvcc {args.profile}: {command_line(module)}")
            print(profile(args.profile, directory, cfg, args.top))
            return None
        return run_measured(module, directory, cfg, run)


def print_header(name: str, header: Mapping[str, Any]) -> None:
    """The first lines of a report: the benchmark and its command, the machine."""
    print(f"# {name} benchmark: {header['command']}")
    for fact, value in header["machine"].items():
        print(f"#   {fact}: {value}")
