"""Query benchmark: secondary-index queries of the public `mvcc` API against sqlite3.

Run ``python -m stress.bench.query`` (``--help`` for the options).  It uses only
the public API (`mvcc.open`, `db.table(indexes=...)`, `where`, `Table.find`,
`Table.explain`, `db.checkpoint`), as a user would.  One run loads both
engines with the same documents, in a scratch directory:

    mvcc     mvcc.open(dir, durability="full"); ``db.table("users",
             primary_key="id", indexes=["age"])``, and the same documents in
             ``db.table("users_plain", primary_key="id")``, with no index: the
             full-scan figures run the very same query there, so the index is
             the only difference
    sqlite3  journal_mode=WAL, synchronous=FULL; ``users (id INTEGER PRIMARY
             KEY, age INTEGER, doc BLOB)`` with ``CREATE INDEX users_age ON
             users (age)``, each document as `msgpack.packb(doc)`; every
             returned row's blob is unpacked inside the timed loops (mvcc
             returns decoded dicts: both sides hand back every document).
             Its full-scan figures say ``FROM users NOT INDEXED``

Data (issue 6): --docs documents ``{"id": i, "name": f"user{i}", "age": i % 90,
"email": f"user{i}@example.com"}``: an equality on age matches 222 or 223 of
20,000, the range ``20 <= age < 30`` 2,220.  Each query is its own
transaction on both sides (mvcc: `find` outside a transaction; sqlite3:
autocommit).

What is measured, in this order (timing rules: _common.py T1-T4)
1. load: one transaction per engine, untimed.  Each engine's answers are
   checked against the data (below), and then:
   eq_memtable  --queries equality queries ``find(where("age") == k)``, k
                cycling over 0..89, before any checkpoint: mvcc reads its
                memtable's index part, sqlite3 its WAL.  An extra figure,
                no floor.
2. mvcc checkpoints (`db.checkpoint()`: the page file gets its index tree)
   and reopens; sqlite3 checkpoints its WAL (TRUNCATE) and reconnects.  The
   answers are checked again (which also warms both caches), then:
   eq           the same equality queries, now from the page file's trees;
   range        --queries ``find((where("age") >= 20) & (where("age") < 30))``;
   order_limit  --queries ``find(where("age") >= 0, order_by="age",
                limit=10)``, served in index order;
   eq_scan      the equality queries on ``users_plain``: a full scan;
   sort_limit   the order_limit query on ``users_plain``: a full scan, then
                a sort.
   Each loop is cut into QUERY_PARTS parts alternating between the engines
   (T4); best of --repeat (T3).  The full scans take ~0.1 s a query on mvcc,
   so their loops are time-bounded: as many queries as fit in --slow-seconds
   by the checking pass's timing of one, at least MIN_SLOW_QUERIES and at most
   --queries, per engine.

Correctness, checked in every run (a failure exits 1 whatever --strict says):
every distinct query of each figure, on each engine, returns exactly the
documents the data says (ids, contents, and for order_limit/sort_limit the
order, ties by id); every timed loop returns the rows it should; and each
query runs the plan its figure names (mvcc `explain()`: the age index, or
"full scan", "(index order)", "then sort"; sqlite3 ``EXPLAIN QUERY PLAN``: the
index, ``SCAN users``, ``USE TEMP B-TREE FOR ORDER BY``).

Floors (issue 6; --strict turns a FAIL into exit status 1)
(F1) equality queries/s                   >= 0.5 x sqlite3
(F2) range queries/s                      >= 0.5 x sqlite3
(F3) mvcc equality with the index         >= 100 x the same query as a full scan
(F4) mvcc order_by age, limit 10, by index >= 50 x the full scan and sort

``--profile WHAT`` runs one mvcc workload under cProfile instead of the
benchmark and prints where its time goes; docs/benchmarks.md records the
findings.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import msgpack

import mvcc
from mvcc import where

from ._common import (
    add_common_arguments,
    best_of_each,
    finish,
    floor,
    format_number,
    format_table,
    make_doc,
    parts_of,
    print_floors,
    print_header,
    print_profile,
    profile_or_measure,
    ratio,
    require_positive,
    sqlite_connect,
)

__all__ = [
    "ENGINES",
    "FIGURES",
    "FLOORS",
    "PROFILES",
    "SLOW",
    "SPEEDUPS",
    "check_floors",
    "main",
]

MODULE = "stress.bench.query"
ENGINES = ("mvcc", "sqlite3")
TABLE = "users"
PLAIN = "users_plain"  # mvcc: the same documents, no index
PRIMARY_KEY = "id"
AGES = 90  # make_doc's age is i % AGES
RANGE = (20, 30)  # lo <= age < hi
LIMIT = 10
QUERY_PARTS = 10  # each loop alternates between the engines in this many parts (T4)
MIN_SLOW_QUERIES = 3


class Figure(NamedTuple):
    key: str
    label: str
    method: str  # the engine method that runs one query of it
    unit: str = "queries/s"
    better: str = "higher"


FIGURES: tuple[Figure, ...] = (
    Figure("eq", "equality age == k, index", "eq"),
    Figure("range", "range 20 <= age < 30, index", "range"),
    Figure("order_limit", "order_by age limit 10, index order", "order_limit"),
    Figure("eq_scan", "equality age == k, full scan", "eq_scan"),
    Figure("sort_limit", "order_by age limit 10, scan + sort", "sort_limit"),
    Figure("eq_memtable", "equality, before the checkpoint", "eq"),
)
SLOW = ("eq_scan", "sort_limit")  # time-bounded loops
ORDERED = ("order_limit", "sort_limit")  # methods whose answers come in a set order
AFTER_CHECKPOINT = ("eq", "range", "order_limit", "eq_scan", "sort_limit")


class Speedup(NamedTuple):
    key: str
    label: str
    fast: str  # figure keys: fast / slow, within one engine
    slow: str


SPEEDUPS: tuple[Speedup, ...] = (
    Speedup("index_eq", "equality: index / full scan", "eq", "eq_scan"),
    Speedup("index_order", "order_by limit 10: index / scan + sort", "order_limit", "sort_limit"),
)

# (floor name, figure or speedup key, limit, what the limit applies to)
FLOOR_SPECS = (
    ("eq_floor", "eq", 0.5, "ratio"),
    ("range_floor", "range", 0.5, "ratio"),
    ("index_eq_floor", "index_eq", 100.0, "speedup"),
    ("index_order_floor", "index_order", 50.0, "speedup"),
)
FLOORS = tuple(spec[0] for spec in FLOOR_SPECS)
PROFILES = tuple(fig.key for fig in FIGURES)


# -- configuration and data ----------------------------------------------------


@dataclass(frozen=True)
class Config:
    docs: int
    queries: int
    repeat: int
    slow_seconds: float
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = bool(args.quick)
        return cls(
            docs=args.docs or (2_000 if quick else 20_000),
            queries=args.queries or (20 if quick else 200),
            repeat=args.repeat or (1 if quick else 3),
            slow_seconds=args.slow_seconds or (0.1 if quick else 1.0),
            quick=quick,
        )


def query_args(fig: Figure, n: int) -> list[Any]:
    """The argument of each of the `n` queries of a loop of `fig`."""
    if fig.method in ("eq", "eq_scan"):
        return [i % AGES for i in range(n)]
    if fig.method == "range":
        return [RANGE] * n
    return [LIMIT] * n


def expected_ids(docs: Sequence[dict[str, Any]], method: str, arg: Any) -> list[int]:
    """What one query must return, from the data: ids, in result order for the
    ordered queries and sorted otherwise (the model every engine is held to)."""
    if method in ("eq", "eq_scan"):
        return [d["id"] for d in docs if d["age"] == arg]
    if method == "range":
        lo, hi = arg
        return [d["id"] for d in docs if lo <= d["age"] < hi]
    ordered = sorted(docs, key=lambda d: (d["age"], d["id"]))
    return [d["id"] for d in ordered[:arg]]


# -- engines: one adapter each, the same surface ---------------------------------


class MvccEngine:
    """An mvcc database with an indexed table and a plain one holding the same docs."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "mvcc")
        self._connect()

    def _connect(self) -> None:
        self.db = mvcc.open(self.path, durability="full")
        self.users = self.db.table(TABLE, primary_key=PRIMARY_KEY, indexes=["age"])
        self.plain = self.db.table(PLAIN, primary_key=PRIMARY_KEY)

    def load(self, docs: Sequence[dict[str, Any]]) -> None:
        users, plain = self.users.insert, self.plain.insert
        with self.db.transaction():
            for doc in docs:
                users(doc)
                plain(doc)

    def settle(self) -> None:
        """Checkpoint (documents and index entries move to the page file) and reopen."""
        self.db.checkpoint()
        self.close()
        self._connect()

    def close(self) -> None:
        self.db.close()

    def eq(self, k: int) -> Sized:
        return self.users.find(where("age") == k)

    def range(self, bounds: tuple[int, int]) -> Sized:
        lo, hi = bounds
        return self.users.find((where("age") >= lo) & (where("age") < hi))

    def order_limit(self, n: int) -> Sized:
        return self.users.find(where("age") >= 0, order_by="age", limit=n)

    def eq_scan(self, k: int) -> Sized:
        return self.plain.find(where("age") == k)

    def sort_limit(self, n: int) -> Sized:
        return self.plain.find(where("age") >= 0, order_by="age", limit=n)

    def plan(self, method: str, arg: Any) -> str:
        """`explain()` of the query `method(arg)` runs."""
        users, plain = self.users, self.plain
        lo, hi = RANGE
        return {
            "eq": lambda: users.explain(where("age") == arg),
            "range": lambda: users.explain((where("age") >= lo) & (where("age") < hi)),
            "order_limit": lambda: users.explain(where("age") >= 0, order_by="age", limit=arg),
            "eq_scan": lambda: plain.explain(where("age") == arg),
            "sort_limit": lambda: plain.explain(where("age") >= 0, order_by="age", limit=arg),
        }[method]()

    # What each figure's plan must say (the benchmark measures nothing else).
    PLAN_CHECKS: ClassVar[Mapping[str, Callable[[str], bool]]] = {
        "eq": lambda text: text.startswith("index age: age == "),
        "range": lambda text: text == f"index age: {RANGE[0]} <= age < {RANGE[1]}",
        "order_limit": lambda text: "order by age (index order)" in text,
        "eq_scan": lambda text: text == "full scan",
        "sort_limit": lambda text: text.startswith("full scan; then sort by age"),
    }


class SqliteEngine:
    """An sqlite3 file in WAL mode, synchronous=FULL; msgpack blobs plus an indexed age."""

    SQL: ClassVar[Mapping[str, str]] = {
        "eq": f"SELECT doc FROM {TABLE} WHERE age = ?",
        "range": f"SELECT doc FROM {TABLE} WHERE age >= ? AND age < ?",
        "order_limit": f"SELECT doc FROM {TABLE} WHERE age >= 0 ORDER BY age, id LIMIT ?",
        "eq_scan": f"SELECT doc FROM {TABLE} NOT INDEXED WHERE age = ?",
        "sort_limit": (
            f"SELECT doc FROM {TABLE} NOT INDEXED WHERE age >= 0 ORDER BY age, id LIMIT ?"
        ),
    }
    PLAN_CHECKS: ClassVar[Mapping[str, Callable[[str], bool]]] = {
        "eq": lambda text: "USING INDEX users_age (age=?)" in text,
        "range": lambda text: "USING INDEX users_age (age>? AND age<?)" in text,
        "order_limit": lambda text: "INDEX users_age" in text and "TEMP B-TREE" not in text,
        "eq_scan": lambda text: text == f"SCAN {TABLE}",
        "sort_limit": lambda text: "USE TEMP B-TREE FOR ORDER BY" in text,
    }

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "sqlite.db")
        self.con = sqlite_connect(self.path)
        self.con.execute(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, age INTEGER, doc BLOB NOT NULL)"
        )
        self.con.execute(f"CREATE INDEX users_age ON {TABLE} (age)")

    def load(self, docs: Sequence[dict[str, Any]]) -> None:
        execute, pack = self.con.execute, msgpack.packb
        sql = f"INSERT INTO {TABLE} (id, age, doc) VALUES (?, ?, ?)"
        execute("BEGIN")
        for doc in docs:
            execute(sql, (doc[PRIMARY_KEY], doc["age"], pack(doc)))
        execute("COMMIT")

    def settle(self) -> None:
        """Checkpoint the WAL into the database file and reconnect."""
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.close()
        self.con = sqlite_connect(self.path)

    def close(self) -> None:
        self.con.close()

    def _rows(self, method: str, params: tuple[Any, ...]) -> list[Any]:
        unpack = msgpack.unpackb
        return [unpack(blob) for (blob,) in self.con.execute(self.SQL[method], params)]

    def eq(self, k: int) -> Sized:
        return self._rows("eq", (k,))

    def range(self, bounds: tuple[int, int]) -> Sized:
        return self._rows("range", bounds)

    def order_limit(self, n: int) -> Sized:
        return self._rows("order_limit", (n,))

    def eq_scan(self, k: int) -> Sized:
        return self._rows("eq_scan", (k,))

    def sort_limit(self, n: int) -> Sized:
        return self._rows("sort_limit", (n,))

    def plan(self, method: str, arg: Any) -> str:
        """``EXPLAIN QUERY PLAN`` of the query `method(arg)` runs, its details joined."""
        params = arg if method == "range" else (arg,)
        rows = self.con.execute("EXPLAIN QUERY PLAN " + self.SQL[method], params).fetchall()
        return "; ".join(row[-1] for row in rows)


Engine = Any  # MvccEngine | SqliteEngine: the same duck-typed surface


# -- correctness -----------------------------------------------------------------


@dataclass
class Checks:
    """What the run verified; `errors` fail it."""

    queries: int = 0  # distinct queries checked against the data, all engines
    rows: dict[str, list[int]] = field(default_factory=dict)  # figure -> [min, max] per query
    plans: dict[str, dict[str, str]] = field(default_factory=dict)  # engine -> figure -> text
    errors: list[str] = field(default_factory=list)


def check_answers(
    engines: dict[str, Engine],
    docs: Sequence[dict[str, Any]],
    figs: Sequence[Figure],
    cfg: Config,
    checks: Checks,
) -> dict[tuple[str, str], float]:
    """Untimed: every distinct query of `figs`, on each engine, against the data and
    its plan check; returns the seconds the slowest run of each (engine, figure)
    took (the time-bounded loops size themselves by it)."""
    one: dict[tuple[str, str], float] = {}
    for fig in figs:
        for arg in dict.fromkeys(query_args(fig, cfg.queries)):  # distinct, in order
            want = expected_ids(docs, fig.method, arg)
            lo, hi = checks.rows.setdefault(fig.key, [len(want), len(want)])
            checks.rows[fig.key] = [min(lo, len(want)), max(hi, len(want))]
            for name, engine in engines.items():
                start = time.perf_counter()
                got = getattr(engine, fig.method)(arg)
                secs = time.perf_counter() - start
                one[(name, fig.key)] = max(one.get((name, fig.key), 0.0), secs)
                checks.queries += 1
                problem = _wrong_answer(got, want, docs, ordered=fig.method in ORDERED)
                if problem:
                    checks.errors.append(f"{fig.key}, {name}, argument {arg!r}: {problem}")
                text = engine.plan(fig.method, arg)
                checks.plans.setdefault(name, {})[fig.key] = text
                if not engine.PLAN_CHECKS[fig.method](text):
                    checks.errors.append(f"{fig.key}, {name}: unexpected plan {text!r}")
    return one


def _wrong_answer(
    got: Any, want: list[int], docs: Sequence[dict[str, Any]], *, ordered: bool
) -> str | None:
    ids = [d[PRIMARY_KEY] for d in got]
    if (ids if ordered else sorted(ids)) != want:
        return f"{len(ids)} rows {ids[:5]}..., expected {len(want)} rows {want[:5]}..."
    wrong = [d[PRIMARY_KEY] for d in got if d != docs[d[PRIMARY_KEY]]]
    return f"documents {wrong[:5]} differ from what was written" if wrong else None


class Loop:
    """A timed part: one engine runs one query per argument; each call records the
    rows it got, checked after the timing (`check_loops`)."""

    def __init__(self, run: Callable[[Any], Sized], args: Sequence[Any], want: int) -> None:
        self.run, self.args, self.want = run, args, want
        self.rows: list[int] = []

    def __call__(self) -> None:
        run, rows = self.run, 0
        for arg in self.args:
            rows += len(run(arg))
        self.rows.append(rows)


def check_loops(key: str, loops: dict[str, list[Loop]], checks: Checks) -> None:
    for name, parts in loops.items():
        for i, part in enumerate(parts):
            if any(rows != part.want for rows in part.rows):
                checks.errors.append(
                    f"{key}, {name}, timed part {i}: rows {part.rows}, expected {part.want} each"
                )


# -- measurements: each returns {engine: {figure key: value}} ----------------------

Results = dict[str, dict[str, Any]]


def measure(
    engines: dict[str, Engine],
    docs: Sequence[dict[str, Any]],
    fig: Figure,
    counts: dict[str, int],
    cfg: Config,
    checks: Checks,
) -> Results:
    """Queries/s of `fig` on each engine: `counts[engine]` queries cut into
    QUERY_PARTS parts alternating between the engines (T4), best of --repeat (T3)."""
    loops: dict[str, list[Loop]] = {}
    for name, engine in engines.items():
        args = query_args(fig, counts[name])
        rows = {a: len(expected_ids(docs, fig.method, a)) for a in dict.fromkeys(args)}
        run = getattr(engine, fig.method)
        loops[name] = [
            Loop(run, part, sum(rows[a] for a in part)) for part in parts_of(args, QUERY_PARTS)
        ]
    secs = best_of_each(dict(loops), cfg.repeat)
    check_loops(fig.key, loops, checks)
    return {name: {fig.key: counts[name] / s} for name, s in secs.items()}


def slow_counts(one: dict[tuple[str, str], float], key: str, cfg: Config) -> dict[str, int]:
    """Queries per repetition of a time-bounded loop, per engine."""
    out = {}
    for name in ENGINES:
        fit = int(cfg.slow_seconds / max(one[(name, key)], 1e-6))
        out[name] = max(MIN_SLOW_QUERIES, min(cfg.queries, fit))
    return out


def run_all(directory: str, cfg: Config) -> tuple[Results, Checks]:
    """Every measurement, in the order of the module docstring."""
    results: Results = {name: {} for name in ENGINES}

    def merge(part: Results) -> None:
        for name, figures in part.items():
            results[name].update(figures)

    docs = [make_doc(i) for i in range(cfg.docs)]
    by_key = {fig.key: fig for fig in FIGURES}
    checks = Checks()
    every = dict.fromkeys(ENGINES, cfg.queries)
    with contextlib.ExitStack() as stack:
        engines: dict[str, Engine] = {}
        for name, make in (("mvcc", MvccEngine), ("sqlite3", SqliteEngine)):
            engines[name] = engine = make(directory)
            stack.callback(engine.close)
        for engine in engines.values():
            engine.load(docs)
        # 1. before the checkpoint: the memtable / the WAL
        check_answers(engines, docs, [by_key["eq_memtable"]], cfg, checks)
        merge(measure(engines, docs, by_key["eq_memtable"], every, cfg, checks))
        # 2. after it
        for engine in engines.values():
            engine.settle()
        figs = [by_key[key] for key in AFTER_CHECKPOINT]
        one = check_answers(engines, docs, figs, cfg, checks)
        for fig in figs:
            counts = slow_counts(one, fig.key, cfg) if fig.key in SLOW else every
            merge(measure(engines, docs, fig, counts, cfg, checks))
            if fig.key in SLOW:
                for name, n in counts.items():
                    results[name][f"{fig.key}_queries"] = n
    return results, checks


# -- results: ratios, speed-ups, floors, tables, JSON ----------------------------------


def speedup(spec: Speedup, engine: str, results: Results) -> float | None:
    fast, slow = results[engine].get(spec.fast), results[engine].get(spec.slow)
    if fast is None or not slow:
        return None
    return float(fast / slow)


def check_floors(results: Results) -> list[dict[str, Any]]:
    """Each floor of the module docstring with its measured value and PASS/FAIL."""
    labels = {fig.key: fig.label for fig in FIGURES}
    speedups = {spec.key: spec for spec in SPEEDUPS}
    out = []
    for name, key, limit, what in FLOOR_SPECS:
        if what == "ratio":
            text = f"{labels[key]} >= {limit:g} x sqlite3"
            out.append(floor(name, text, ratio(key, results), limit, "x", at_least=True))
        else:
            spec = speedups[key]
            text = f"mvcc {spec.label} >= {limit:g} x"
            value = speedup(spec, "mvcc", results)
            out.append(floor(name, text, value, limit, "x", at_least=True))
    return out


def results_table(results: Results) -> str:
    headers = ["figure", "unit", *ENGINES, "mvcc/sqlite3"]
    rows = []
    for fig in FIGURES:
        r = ratio(fig.key, results)
        cells = [format_number(results[e].get(fig.key)) for e in ENGINES]
        rows.append([fig.label, fig.unit, *cells, "n/a" if r is None else f"{r:.2f}"])
    return format_table(headers, rows)


def speedups_table(results: Results) -> str:
    rows = []
    for spec in SPEEDUPS:
        values = [speedup(spec, e, results) for e in ENGINES]
        rows.append([spec.label, *("n/a" if v is None else f"{v:.1f} x" for v in values)])
    return format_table(["within one engine", *ENGINES], rows)


def to_json(
    header: dict[str, Any], results: Results, checks: Checks, floors: list[Any]
) -> dict[str, Any]:
    figures = {}
    for fig in FIGURES:
        entry: dict[str, Any] = {"label": fig.label, "unit": fig.unit, "better": fig.better}
        for engine in ENGINES:
            entry[engine] = results[engine].get(fig.key)
            if fig.key in SLOW:
                entry[f"{engine}_queries"] = results[engine].get(f"{fig.key}_queries")
        entry["ratio_mvcc_sqlite3"] = ratio(fig.key, results)
        figures[fig.key] = entry
    speedups = {
        spec.key: {"label": spec.label, **{e: speedup(spec, e, results) for e in ENGINES}}
        for spec in SPEEDUPS
    }
    return {
        **header,
        "figures": figures,
        "speedups": speedups,
        "checks": {
            "queries_checked": checks.queries,
            "rows_per_query": checks.rows,
            "plans": checks.plans,
            "errors": checks.errors,
            "ok": not checks.errors,
        },
        "floors": floors,
    }


def print_report(
    header: dict[str, Any], results: Results, checks: Checks, floors: list[Any]
) -> None:
    cfg = header["config"]
    print_header("query", header)
    slow = ", ".join(
        f"{key} {'/'.join(str(results[e].get(f'{key}_queries')) for e in ENGINES)}" for key in SLOW
    )
    print(
        f"#   {cfg['docs']:,} docs; {cfg['queries']} queries per loop (time-bounded, "
        f"mvcc/sqlite3: {slow}); best of {cfg['repeat']}"
    )
    print(f"#   measured in {header['elapsed_s']:.1f} s")
    if cfg["quick"]:
        print("#   --quick: short loops; a smoke run, too noisy to compare")
    print()
    print(results_table(results))
    print()
    print(speedups_table(results))
    print()
    rows = ", ".join(f"{key} {lo}-{hi}" for key, (lo, hi) in checks.rows.items())
    verdict = "all correct" if not checks.errors else f"{len(checks.errors)} ERRORS"
    print(f"Answers: {checks.queries} distinct queries checked against the data: {verdict}")
    print(f"  rows per query: {rows}")
    print("Plans:")
    for fig in FIGURES[:-1]:
        texts = " | ".join(checks.plans.get(e, {}).get(fig.key, "?") for e in ENGINES)
        print(f"  {fig.key}: {texts}")
    print()
    print_floors(floors)


# -- profiles -------------------------------------------------------------------------------


def profile(what: str, directory: str, cfg: Config, top: int) -> str:
    """One mvcc workload under cProfile: the top functions by cumulative and own time."""
    fig = {f.key: f for f in FIGURES}[what]
    engine = MvccEngine(directory)
    try:
        engine.load([make_doc(i) for i in range(cfg.docs)])
        if what != "eq_memtable":
            engine.settle()
        n = MIN_SLOW_QUERIES * 3 if what in SLOW else cfg.queries
        loop = Loop(getattr(engine, fig.method), query_args(fig, n), 0)
        loop()  # warm
        prof = cProfile.Profile()
        prof.runcall(loop)
    finally:
        engine.close()
    out = io.StringIO()
    print(f"{n} queries of {fig.label}, {loop.rows[-1]:,} rows", file=out)
    print_profile(pstats.Stats(prof, stream=out), top)
    return out.getvalue()


# -- the command ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Benchmark mvcc's index queries against sqlite3 with CREATE INDEX.",
    )
    p.add_argument("--docs", type=int, help="documents loaded (default 20,000; 2,000 --quick)")
    p.add_argument("--queries", type=int, help="queries per timed loop (default 200; 20 --quick)")
    p.add_argument("--repeat", type=int, help="repetitions, the best reported (default 3)")
    p.add_argument(
        "--slow-seconds",
        type=float,
        help="seconds the full-scan loops aim at per repetition (default 1; 0.1 --quick)",
    )
    add_common_arguments(p, PROFILES)
    args = p.parse_args(argv)
    require_positive(p, args, "docs", "queries", "repeat", "slow_seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    measured = profile_or_measure(args, MODULE, "bench-query-", cfg, run_all, profile)
    if measured is None:  # profiled
        return 0
    header, (results, checks) = measured
    floors = check_floors(results)
    print_report(header, results, checks, floors)
    return finish(
        args.json,
        to_json(header, results, checks, floors),
        floors,
        errors=checks.errors,
        fail_on_floors=args.strict,
    )


if __name__ == "__main__":
    sys.exit(main())
