"""Core benchmark: the public `mvcc` API against sqlite3 (WAL, synchronous=FULL).

Run ``python -m stress.bench.core`` (``--help`` for the options).  It uses only
the public API (`mvcc.open`, `db.table`, `Table.insert/get/update`,
`db.transaction`, `db.transactional`), as a user would; the storage and
locking benchmarks measure the layers below.  One run measures both engines
on the same documents, in a scratch directory:

    mvcc     mvcc.open(dir, durability="full"), ``db.table("users",
             primary_key="id")``: the document's own id is its key, as on
             sqlite3 (with the default "_id" an insert would draw a new id
             from the id allocator instead)
    sqlite3  journal_mode=WAL, synchronous=FULL, busy_timeout; a table
             ``users (id INTEGER PRIMARY KEY, doc BLOB)`` holding each document
             as `msgpack.packb(doc)`, packed and unpacked in the timed loops
             (mvcc packs and unpacks too: a get returns a dict on both sides)

Data (issue 5): --docs documents ``{"id": i, "name": f"user{i}", "age": i % 90,
"email": f"user{i}@example.com"}`` (~55 B packed); --seed picks the keys of
the random gets (uniform, with repeats), each counter worker's index the keys
it increments.

What is measured, in this order (timing rules: _common.py T1-T4, and T5 below)
1. bulk load: docs/s of one transaction inserting every document, its durable
   commit included, into an empty store made (untimed) before each
   repetition; best of --repeat, the engines alternating (T4).  Then each
   engine settles untimed: mvcc checkpoints and reopens, sqlite3 checkpoints
   its WAL (TRUNCATE) and reconnects; one pass reads every document back and
   checks it (which also warms both caches).
2. point gets in one readonly transaction: --gets random keys, gets/s; the
   loop is cut into 20 parts alternating between the engines (T4), all inside
   one transaction per engine held open across parts and repetitions (mvcc
   ``with db.transaction(readonly=True)``; sqlite3 one BEGIN, whose snapshot
   starts at the first SELECT, and one COMMIT); best of --repeat.
3. point gets, one transaction each: the same keys, each get in its own
   readonly transaction (mvcc ``with db.transaction(readonly=True):
   t.get(k)``; sqlite3 BEGIN, SELECT, COMMIT), gets/s, measured like 2.
4. an empty readonly transaction (begin + end), µs: batches of
   EMPTY_BATCH, the engines alternating batch by batch; the median of the
   batches' means.  sqlite3's figure is a reference: a deferred BEGIN with no
   statement takes no snapshot, while an mvcc begin pins one.
5. durable single-insert commits: --commits inserts of new documents, each
   its own transaction and commit (mvcc `t.insert(doc)` outside a
   transaction; sqlite3 BEGIN, INSERT, COMMIT), commits/s; 10 parts
   alternating (T4), best of --repeat.
6. read-modify-write counters: a fresh store holding COUNTER_KEYS documents
   ``{"id": k, "n": 0}``; 1, 2 and 4 spawned processes start together (a
   Barrier) and increment random counters for --counter-seconds each (mvcc:
   `Table.update(k, fn)` inside ``@db.transactional(retries=RETRIES)``;
   sqlite3: BEGIN IMMEDIATE, SELECT, UPDATE, COMMIT, with busy_timeout).  An
   increment counts once its commit returned (acknowledged).  Reported:
   increments/s over the window from the first start to the last finish,
   retries (mvcc: runs of the function beyond the first per increment),
   errors, and LOST UPDATES: acknowledged increments minus the final sum of
   the counters, which must be 0 (and every counter must equal the
   increments acknowledged on it).  A run with a lost update, a phantom one,
   or a worker error fails the benchmark (exit status 1, whatever --strict
   says): that is a correctness bug, not a speed.

(T5) Times compared across processes come from `time.monotonic_ns()` (one
     clock for every process of the machine), never `perf_counter`.

Floors (issue 5; ratios are mvcc / sqlite3 in the same run; --strict turns a
FAIL into exit status 1)
(F1) point gets in one transaction  >= 0.5 x sqlite3
(F2) point gets, one transaction each >= 0.35 x sqlite3
(F3) durable single-insert commits  >= 0.5 x sqlite3
(F4) bulk load                      >= 0.33 x sqlite3
(F5) counters, 4 processes          >= 1.0 x sqlite3
(F6) an empty readonly transaction  <= 20 µs

F5 depends on the disk more than any other floor: sqlite3's increments are
serial, one fsync each, while mvcc's four processes share syncs but pay
~170-350 µs of Python CPU per increment.  Where an fdatasync costs less than
that (the development VM: ~80 µs) sqlite3 is ahead; on a disk whose sync
costs a few hundred µs mvcc is.  `stress/bench/slowsync.c` emulates such a
disk for both engines at once (LD_PRELOAD; its header has the commands).

``--profile WHAT`` runs one mvcc workload under cProfile instead of the
benchmark and prints where its time goes (the counters profile every worker
and merge their statistics); docs/benchmarks.md records the findings.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import itertools
import os
import pstats
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

import mvcc

from ._common import (
    BUSY_TIMEOUT,
    CHILD_TIMEOUT,
    add_common_arguments,
    best_of_each,
    finish,
    floor,
    format_number,
    format_table,
    gc_paused,
    make_doc,
    parts_of,
    print_floors,
    print_header,
    print_profile,
    profile_or_measure,
    ratio,
    require_positive,
    run_workers,
    sqlite_connect,
)

__all__ = ["ENGINES", "FIGURES", "FLOORS", "PROCESS_COUNTS", "PROFILES", "main"]

MODULE = "stress.bench.core"
ENGINES = ("mvcc", "sqlite3")
TABLE = "users"
PRIMARY_KEY = "id"
GET_PARTS = 20  # the get loops alternate between the engines in this many parts (T4)
COMMIT_PARTS = 10
EMPTY_BATCH = 100  # empty transactions per timed batch (T1)
COUNTER_KEYS = 100
PROCESS_COUNTS = (1, 2, 4)
RETRIES = 1000  # @db.transactional(retries=...) for the counters
EMPTY_TX_LIMIT_US = 20.0


class Figure(NamedTuple):
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"


FIGURES: tuple[Figure, ...] = (
    Figure("bulk_load", "bulk load, one durable txn", "docs/s", "higher"),
    Figure("commits", "single-insert durable commits", "commits/s", "higher"),
    Figure("gets_one_tx", "point gets, one readonly txn", "gets/s", "higher"),
    Figure("gets_tx_each", "point gets, one readonly txn each", "gets/s", "higher"),
    Figure("counters_1", "counter increments, 1 process", "incr/s", "higher"),
    Figure("counters_2", "counter increments, 2 processes", "incr/s", "higher"),
    Figure("counters_4", "counter increments, 4 processes", "incr/s", "higher"),
    Figure("empty_tx_us", "empty readonly txn (begin + end)", "µs", "lower"),
)
assert {f"counters_{n}" for n in PROCESS_COUNTS} <= {fig.key for fig in FIGURES}

# (floor name, figure, limit, what the limit applies to)
FLOOR_SPECS = (
    ("gets_one_tx_floor", "gets_one_tx", 0.5, "ratio"),
    ("gets_tx_each_floor", "gets_tx_each", 0.35, "ratio"),
    ("commits_floor", "commits", 0.5, "ratio"),
    ("bulk_load_floor", "bulk_load", 0.33, "ratio"),
    ("counters_4_floor", "counters_4", 1.0, "ratio"),
    ("empty_tx_floor", "empty_tx_us", EMPTY_TX_LIMIT_US, "mvcc"),
)
FLOORS = tuple(spec[0] for spec in FLOOR_SPECS)
PROFILES = ("bulk_load", "commits", "gets_one_tx", "gets_tx_each", "empty_tx", "counters")


# -- configuration and data ----------------------------------------------------


@dataclass(frozen=True)
class Config:
    docs: int
    commits: int
    gets: int
    repeat: int
    empty_batches: int
    counter_seconds: float
    seed: int
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = bool(args.quick)
        return cls(
            docs=args.docs or (2_000 if quick else 20_000),
            commits=args.commits or (30 if quick else 300),
            gets=args.gets or (2_000 if quick else 20_000),
            repeat=args.repeat or (1 if quick else 3),
            empty_batches=20 if quick else 200,
            counter_seconds=args.counter_seconds or (0.3 if quick else 3.0),
            seed=args.seed,
            quick=quick,
        )


# -- engines: one adapter each, the same surface ---------------------------------


class MvccEngine:
    """An mvcc database directory with one table; `fresh` replaces it with an empty one."""

    def __init__(self, directory: str) -> None:
        self.root = directory
        self.generation = 0
        self.path = ""
        self.fresh()

    def fresh(self) -> None:
        """An empty store in a new directory (the previous one closed and deleted)."""
        if self.generation:
            self.close()
            shutil.rmtree(self.path, ignore_errors=True)
        self.generation += 1
        self.path = os.path.join(self.root, f"mvcc-{self.generation}")
        self._connect()

    def _connect(self) -> None:
        self.db = mvcc.open(self.path, durability="full")
        self.table = self.db.table(TABLE, primary_key=PRIMARY_KEY)

    def settle(self) -> None:
        """Checkpoint (the documents move to the page file) and reopen."""
        self.db.checkpoint()
        self.close()
        self._connect()

    def close(self) -> None:
        self.db.close()

    def bulk_load(self, docs: Sequence[dict[str, Any]]) -> None:
        insert = self.table.insert
        with self.db.transaction():
            for doc in docs:
                insert(doc)

    def insert_each(self, docs: Sequence[dict[str, Any]]) -> None:
        insert = self.table.insert  # outside a transaction: one durable commit each
        for doc in docs:
            insert(doc)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[int], Any]]:
        """One readonly transaction; yields a get."""
        with self.db.transaction(readonly=True):
            yield self.table.get

    def gets_tx_each(self, keys: Sequence[int]) -> None:
        transaction, get = self.db.transaction, self.table.get
        for key in keys:
            with transaction(readonly=True):
                get(key)

    def empty_txs(self, n: int) -> None:
        transaction = self.db.transaction
        for _ in range(n):
            with transaction(readonly=True):
                pass


class SqliteEngine:
    """An sqlite3 file in WAL mode with synchronous=FULL; documents as msgpack blobs."""

    GET = f"SELECT doc FROM {TABLE} WHERE id = ?"
    INSERT = f"INSERT INTO {TABLE} (id, doc) VALUES (?, ?)"

    def __init__(self, directory: str) -> None:
        self.root = directory
        self.generation = 0
        self.path = ""
        self.fresh()

    def fresh(self) -> None:
        if self.generation:
            self.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path + suffix)
        self.generation += 1
        self.path = os.path.join(self.root, f"sqlite-{self.generation}.db")
        self.con = sqlite_connect(self.path)
        self.con.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, doc BLOB NOT NULL)")

    def settle(self) -> None:
        """Checkpoint the WAL into the database file and reconnect."""
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.close()
        self.con = sqlite_connect(self.path)

    def close(self) -> None:
        self.con.close()

    def bulk_load(self, docs: Sequence[dict[str, Any]]) -> None:
        execute, pack, sql = self.con.execute, msgpack.packb, self.INSERT
        execute("BEGIN")
        for doc in docs:
            execute(sql, (doc[PRIMARY_KEY], pack(doc)))
        execute("COMMIT")

    def insert_each(self, docs: Sequence[dict[str, Any]]) -> None:
        execute, pack, sql = self.con.execute, msgpack.packb, self.INSERT
        for doc in docs:
            execute("BEGIN")
            execute(sql, (doc[PRIMARY_KEY], pack(doc)))
            execute("COMMIT")

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[int], Any]]:
        """One transaction (its snapshot starts at the first SELECT); yields a get."""
        execute, unpack, sql = self.con.execute, msgpack.unpackb, self.GET

        def get(key: int) -> Any:
            row = execute(sql, (key,)).fetchone()
            return None if row is None else unpack(row[0])

        execute("BEGIN")
        try:
            yield get
        finally:
            execute("COMMIT")

    def gets_tx_each(self, keys: Sequence[int]) -> None:
        execute, unpack, sql = self.con.execute, msgpack.unpackb, self.GET
        for key in keys:
            execute("BEGIN")
            row = execute(sql, (key,)).fetchone()
            execute("COMMIT")
            if row is not None:
                unpack(row[0])

    def empty_txs(self, n: int) -> None:
        execute = self.con.execute
        for _ in range(n):
            execute("BEGIN")
            execute("COMMIT")


Engine = Any  # MvccEngine | SqliteEngine: the same duck-typed surface


def get_all(get: Callable[[int], Any], keys: Sequence[int]) -> None:
    for key in keys:
        get(key)


# -- measurements: each returns {engine: {figure key: value}} ----------------------

Results = dict[str, dict[str, Any]]


def measure_bulk_load(
    engines: dict[str, Engine], docs: list[dict[str, Any]], cfg: Config
) -> Results:
    loads = {name: functools.partial(e.bulk_load, docs) for name, e in engines.items()}
    setups = {name: e.fresh for name, e in engines.items()}
    secs = best_of_each(loads, cfg.repeat, setups)
    return {name: {"bulk_load": len(docs) / s} for name, s in secs.items()}


def check_every_doc(engines: dict[str, Engine], n: int) -> None:
    """Untimed: every document reads back as it was written (and the caches warm)."""
    for name, engine in engines.items():
        with engine.reader() as get:
            for i in range(n):
                if get(i) != make_doc(i):
                    raise AssertionError(f"{name}: document {i} reads back wrong")


def measure_gets_one_tx(engines: dict[str, Engine], keys: list[int], cfg: Config) -> Results:
    with contextlib.ExitStack() as stack:
        loops = {}
        for name, engine in engines.items():
            get = stack.enter_context(engine.reader())
            loops[name] = [
                functools.partial(get_all, get, part) for part in parts_of(keys, GET_PARTS)
            ]
        secs = best_of_each(loops, cfg.repeat)
    return {name: {"gets_one_tx": len(keys) / s} for name, s in secs.items()}


def measure_gets_tx_each(engines: dict[str, Engine], keys: list[int], cfg: Config) -> Results:
    loops = {
        name: [functools.partial(e.gets_tx_each, part) for part in parts_of(keys, GET_PARTS)]
        for name, e in engines.items()
    }
    secs = best_of_each(loops, cfg.repeat)
    return {name: {"gets_tx_each": len(keys) / s} for name, s in secs.items()}


def measure_empty_tx(engines: dict[str, Engine], cfg: Config) -> Results:
    """The median over batches of the mean µs per empty transaction (T1, T4)."""
    per_batch: dict[str, list[float]] = {name: [] for name in engines}
    clock = time.perf_counter
    with gc_paused():
        for engine in engines.values():
            engine.empty_txs(EMPTY_BATCH)  # warm-up, not counted
        for _ in range(cfg.empty_batches):
            for name, engine in engines.items():
                start = clock()
                engine.empty_txs(EMPTY_BATCH)
                per_batch[name].append((clock() - start) / EMPTY_BATCH * 1e6)
    return {name: {"empty_tx_us": statistics.median(v)} for name, v in per_batch.items()}


def measure_commits(engines: dict[str, Engine], first_id: int, cfg: Config) -> Results:
    """Each part inserts the next unused ids, so every repetition inserts new documents."""
    per_part = max(1, cfg.commits // COMMIT_PARTS)
    parts = -(-cfg.commits // per_part)
    loops = {}
    for name, engine in engines.items():
        ids = itertools.count(first_id)

        def part(engine: Engine = engine, ids: Iterator[int] = ids) -> None:
            engine.insert_each([make_doc(next(ids)) for _ in range(per_part)])

        loops[name] = [part] * parts
    secs = best_of_each(loops, cfg.repeat)
    return {name: {"commits": per_part * parts / s} for name, s in secs.items()}


# -- counters: spawned processes -------------------------------------------------------


class CounterReport(NamedTuple):
    worker: int
    acked: list[int]  # increments acknowledged, per counter
    attempts: int  # runs of the increment (mvcc: retries included)
    errors: list[str]  # the first few
    error_count: int
    started_ns: int
    finished_ns: int


def _bump(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "n": doc["n"] + 1}


@contextlib.contextmanager
def _profiled(profile_path: str | None) -> Iterator[None]:
    if profile_path is None:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(profile_path)


def _counter_loop(
    increment: Callable[[int], None],
    seconds: float,
    profile_path: str | None,
    index: int,
    barrier: Any,
) -> CounterReport:
    """Increment random counters for `seconds` from the barrier; count what returned."""
    rng = random.Random(index)
    acked = [0] * COUNTER_KEYS
    errors: list[str] = []
    error_count = 0
    clock = time.monotonic_ns  # T5
    barrier.wait(CHILD_TIMEOUT)
    started = clock()
    deadline = started + int(seconds * 1e9)
    with _profiled(profile_path):
        while clock() < deadline:
            key = rng.randrange(COUNTER_KEYS)
            try:
                increment(key)
            except Exception as exc:  # counted and reported: the run then fails
                error_count += 1
                if len(errors) < 5:
                    errors.append(repr(exc))
                continue
            acked[key] += 1  # the commit returned: acknowledged
    return CounterReport(index, acked, 0, errors, error_count, started, clock())


def _mvcc_counter_worker(
    path: str, seconds: float, profiles: list[str | None], index: int, barrier: Any, conn: Any
) -> None:
    attempts = 0
    with mvcc.open(path, durability="full", lock_timeout=BUSY_TIMEOUT) as db:
        table = db.table("counters", primary_key=PRIMARY_KEY)

        def run_once(key: int) -> None:
            nonlocal attempts
            attempts += 1
            if table.update(key, _bump) != 1:
                raise AssertionError(f"counter {key} is missing")

        increment: Callable[[int], None] = db.transactional(retries=RETRIES)(run_once)
        report = _counter_loop(increment, seconds, profiles[index], index, barrier)
    conn.send(report._replace(attempts=attempts))


def _sqlite_counter_worker(
    path: str, seconds: float, profiles: list[str | None], index: int, barrier: Any, conn: Any
) -> None:
    con = sqlite_connect(path)
    execute, pack, unpack = con.execute, msgpack.packb, msgpack.unpackb

    def increment(key: int) -> None:
        try:
            execute("BEGIN IMMEDIATE")  # the write lock first: no upgrade deadlock
            (blob,) = execute("SELECT doc FROM counters WHERE id = ?", (key,)).fetchone()
            execute("UPDATE counters SET doc = ? WHERE id = ?", (pack(_bump(unpack(blob))), key))
            execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                execute("ROLLBACK")
            raise

    report = _counter_loop(increment, seconds, profiles[index], index, barrier)
    con.close()
    conn.send(report._replace(attempts=sum(report.acked) + report.error_count))


def make_counters(engine: str, directory: str) -> tuple[str, Callable[..., None]]:
    """A fresh store of COUNTER_KEYS zeroed counters; its path and the worker for it."""
    if engine == "mvcc":
        with mvcc.open(directory, durability="full") as db:
            table = db.table("counters", primary_key=PRIMARY_KEY)
            with db.transaction():
                for k in range(COUNTER_KEYS):
                    table.insert({"id": k, "n": 0})
        return directory, _mvcc_counter_worker
    os.makedirs(directory)
    path = os.path.join(directory, "counters.db")
    con = sqlite_connect(path)
    con.execute("CREATE TABLE counters (id INTEGER PRIMARY KEY, doc BLOB NOT NULL)")
    con.execute("BEGIN")
    for k in range(COUNTER_KEYS):
        con.execute("INSERT INTO counters VALUES (?, ?)", (k, msgpack.packb({"id": k, "n": 0})))
    con.execute("COMMIT")
    con.close()
    return path, _sqlite_counter_worker


def read_counters(engine: str, path: str) -> list[int]:
    if engine == "mvcc":
        with mvcc.open(path, durability="full") as db:
            table = db.table("counters", primary_key=PRIMARY_KEY)
            with db.transaction(readonly=True):
                return [table.get(k)["n"] for k in range(COUNTER_KEYS)]
    con = sqlite_connect(path)
    try:
        rows = dict(con.execute("SELECT id, doc FROM counters").fetchall())
    finally:
        con.close()
    return [msgpack.unpackb(rows[k])["n"] for k in range(COUNTER_KEYS)]


def measure_counters_run(
    engine: str, directory: str, processes: int, seconds: float, profile_dir: str | None = None
) -> dict[str, Any]:
    path, worker = make_counters(engine, os.path.join(directory, f"counters-{engine}-{processes}"))
    profile_paths = [
        None if profile_dir is None else os.path.join(profile_dir, f"counters-{engine}-{i}.prof")
        for i in range(processes)
    ]
    reports: list[CounterReport] = run_workers(
        worker, processes, (path, seconds, profile_paths), "counter"
    )
    final = read_counters(engine, path)
    acked = [sum(r.acked[k] for r in reports) for k in range(COUNTER_KEYS)]
    total = sum(acked)
    window = (max(r.finished_ns for r in reports) - min(r.started_ns for r in reports)) / 1e9
    errors = [e for r in reports for e in r.errors]
    error_count = sum(r.error_count for r in reports)
    return {
        "processes": processes,
        "seconds": window,
        "increments": total,
        "increments_per_s": total / window if window > 0 else None,
        "retries": sum(r.attempts for r in reports) - total - error_count,
        "errors": error_count,
        "error_samples": errors,
        "final_sum": sum(final),
        "lost_updates": total - sum(final),
        "wrong_counters": sum(1 for a, f in zip(acked, final) if a != f),
    }


def measure_counters(directory: str, cfg: Config) -> tuple[Results, dict[str, Any]]:
    """Every engine x process count; the figures and the per-run details."""
    runs: dict[str, dict[str, Any]] = {name: {} for name in ENGINES}
    for n in PROCESS_COUNTS:
        for name in ENGINES:  # alternating per process count (T4)
            runs[name][str(n)] = measure_counters_run(name, directory, n, cfg.counter_seconds)
    figures: Results = {
        name: {f"counters_{n}": runs[name][str(n)]["increments_per_s"] for n in PROCESS_COUNTS}
        for name in ENGINES
    }
    return figures, runs


def counter_errors(runs: dict[str, Any]) -> list[str]:
    """Correctness failures of the counter runs: each fails the benchmark."""
    out = []
    for engine, by_n in runs.items():
        for n, run in by_n.items():
            where = f"counters, {engine}, {n} processes"
            if run["lost_updates"] or run["wrong_counters"]:
                out.append(
                    f"{where}: {run['increments']} acknowledged, final sum {run['final_sum']} "
                    f"({run['wrong_counters']} counters wrong)"
                )
            if run["errors"]:
                out.append(f"{where}: {run['errors']} errors, e.g. {run['error_samples'][:2]}")
    return out


# -- the whole run ----------------------------------------------------------------------


def run_all(directory: str, cfg: Config) -> tuple[Results, dict[str, Any]]:
    """Every measurement, in the order of the module docstring."""
    results: Results = {name: {} for name in ENGINES}

    def merge(part: Results) -> None:
        for name, figures in part.items():
            results[name].update(figures)

    rng = random.Random(cfg.seed)
    docs = [make_doc(i) for i in range(cfg.docs)]
    keys = [rng.randrange(cfg.docs) for _ in range(cfg.gets)]
    with contextlib.ExitStack() as stack:
        engines: dict[str, Engine] = {}
        for name, make in (("mvcc", MvccEngine), ("sqlite3", SqliteEngine)):
            engines[name] = engine = make(directory)
            stack.callback(engine.close)
        merge(measure_bulk_load(engines, docs, cfg))
        for engine in engines.values():
            engine.settle()
        check_every_doc(engines, cfg.docs)
        merge(measure_gets_one_tx(engines, keys, cfg))
        merge(measure_gets_tx_each(engines, keys, cfg))
        merge(measure_empty_tx(engines, cfg))
        merge(measure_commits(engines, cfg.docs, cfg))
    figures, counters = measure_counters(directory, cfg)
    merge(figures)
    return results, counters


# -- results: ratios, floors, tables, JSON -------------------------------------------------


def check_floors(results: Results) -> list[dict[str, Any]]:
    """Each floor of the module docstring with its measured value and PASS/FAIL."""
    labels = {fig.key: fig.label for fig in FIGURES}
    out = []
    for name, key, limit, what in FLOOR_SPECS:
        if what == "ratio":
            text = f"{labels[key]} >= {limit:g} x sqlite3"
            out.append(floor(name, text, ratio(key, results), limit, "x", at_least=True))
        else:
            text = f"{labels[key]} <= {limit:g} µs (mvcc)"
            out.append(floor(name, text, results["mvcc"].get(key), limit, "µs"))
    return out


def results_table(results: Results) -> str:
    headers = ["figure", "unit", *ENGINES, "mvcc/sqlite3", "better"]
    rows = []
    for fig in FIGURES:
        r = ratio(fig.key, results)
        rows.append(
            [
                fig.label,
                fig.unit,
                *(format_number(results[e].get(fig.key)) for e in ENGINES),
                "n/a" if r is None else f"{r:.2f}",
                f"{fig.better} is better",
            ]
        )
    return format_table(headers, rows)


def counters_table(runs: dict[str, Any]) -> str:
    rows = []
    for n in PROCESS_COUNTS:
        for engine in ENGINES:
            run = runs[engine][str(n)]
            rows.append(
                [
                    f"{engine} / {n}",
                    format_number(run["increments"]),
                    format_number(run["increments_per_s"]),
                    format_number(run["retries"]),
                    format_number(run["errors"]),
                    format_number(run["final_sum"]),
                    format_number(run["lost_updates"]),
                ]
            )
    headers = ["engine / processes", "acked", "incr/s", "retries", "errors", "final sum"]
    return format_table([*headers, "lost updates"], rows)


def to_json(
    header: dict[str, Any], results: Results, counters: dict[str, Any], floors: list[Any]
) -> dict[str, Any]:
    figures = {}
    for fig in FIGURES:
        entry: dict[str, Any] = {"label": fig.label, "unit": fig.unit, "better": fig.better}
        for engine in ENGINES:
            entry[engine] = results[engine].get(fig.key)
        entry["ratio_mvcc_sqlite3"] = ratio(fig.key, results)
        figures[fig.key] = entry
    return {**header, "figures": figures, "counters": counters, "floors": floors}


def print_report(
    header: dict[str, Any], results: Results, counters: dict[str, Any], floors: list[Any]
) -> None:
    cfg = header["config"]
    print_header("core", header)
    print(
        f"#   {cfg['docs']:,} docs; {cfg['gets']:,} gets per loop; {cfg['commits']} commits; "
        f"best of {cfg['repeat']}; counters {cfg['counter_seconds']:g} s per run over "
        f"{COUNTER_KEYS} keys; seed {cfg['seed']}"
    )
    print(f"#   measured in {header['elapsed_s']:.1f} s")
    if cfg["quick"]:
        print("#   --quick: short loops; a smoke run, too noisy to compare")
    print()
    print(results_table(results))
    print()
    print("Read-modify-write counters (lost updates = acknowledged - final sum; must be 0):")
    print(counters_table(counters))
    print()
    print_floors(floors)


# -- profiles -------------------------------------------------------------------------------


def profile(what: str, directory: str, cfg: Config, top: int) -> str:
    """One mvcc workload under cProfile: the top functions by cumulative and own time."""
    out = io.StringIO()
    if what == "counters":
        processes = max(PROCESS_COUNTS)
        prof_dir = os.path.join(directory, "profiles")
        os.makedirs(prof_dir)
        run = measure_counters_run("mvcc", directory, processes, cfg.counter_seconds, prof_dir)
        paths = sorted(os.path.join(prof_dir, p) for p in os.listdir(prof_dir))
        stats = pstats.Stats(paths[0], stream=out)
        for path in paths[1:]:
            stats.add(path)
        print(
            f"{processes} processes, {run['increments']} increments "
            f"({format_number(run['increments_per_s'])}/s), {run['retries']} retries; "
            "statistics of every worker merged",
            file=out,
        )
    else:
        stats = pstats.Stats(_profile_one(what, directory, cfg), stream=out)
    print_profile(stats, top)
    return out.getvalue()


def _profile_one(what: str, directory: str, cfg: Config) -> cProfile.Profile:
    engine = MvccEngine(directory)
    rng = random.Random(cfg.seed)
    docs = [make_doc(i) for i in range(cfg.docs)]
    keys = [rng.randrange(cfg.docs) for _ in range(cfg.gets)]
    prof = cProfile.Profile()
    try:
        if what == "bulk_load":
            prof.runcall(engine.bulk_load, docs)
            return prof
        engine.bulk_load(docs)
        engine.settle()
        if what == "commits":
            new = [make_doc(cfg.docs + i) for i in range(cfg.commits)]
            prof.runcall(engine.insert_each, new)
        elif what == "gets_one_tx":
            with engine.reader() as get:
                get_all(get, keys)  # warm
                prof.runcall(get_all, get, keys)
        elif what == "gets_tx_each":
            engine.gets_tx_each(keys[:1000])
            prof.runcall(engine.gets_tx_each, keys)
        elif what == "empty_tx":
            engine.empty_txs(1000)
            prof.runcall(engine.empty_txs, cfg.gets)
        else:
            raise ValueError(f"no profile {what!r}")
        return prof
    finally:
        engine.close()


# -- the command ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Benchmark the public mvcc API against sqlite3 (WAL, synchronous=FULL).",
    )
    p.add_argument("--docs", type=int, help="documents loaded (default 20,000; 2,000 --quick)")
    p.add_argument("--gets", type=int, help="point gets per timed loop (default 20,000)")
    p.add_argument("--commits", type=int, help="single-insert commits per loop (default 300)")
    p.add_argument("--repeat", type=int, help="repetitions, the best reported (default 3)")
    p.add_argument(
        "--counter-seconds", type=float, help="seconds per counter run (default 3; 0.3 --quick)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    add_common_arguments(p, PROFILES)
    args = p.parse_args(argv)
    require_positive(p, args, "docs", "gets", "commits", "repeat", "counter_seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    measured = profile_or_measure(args, MODULE, "bench-core-", cfg, run_all, profile)
    if measured is None:  # profiled
        return 0
    header, (results, counters) = measured
    floors = check_floors(results)
    print_report(header, results, counters, floors)
    return finish(
        args.json,
        to_json(header, results, counters, floors),
        floors,
        errors=counter_errors(counters),
        fail_on_floors=args.strict,
    )


if __name__ == "__main__":
    sys.exit(main())
