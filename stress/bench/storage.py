"""Storage benchmark: the page file and its B+tree, plain and encrypted, against LMDB.

Run ``python -m stress.bench.storage`` (``--help`` for the options).  One run
loads the same data into three engines and measures each the same way:

    mvcc       storage.pagefile.PageFile, no key
    mvcc+TDE   the same with a PageCipher (AES-256-GCM on every page)
    lmdb       py-lmdb, when it is importable and --no-lmdb is not given

Data: N keys ``b"%016d" % i`` (16 bytes, so the sorted order is the numeric
order) with 100 random bytes each; a fixed seed shuffles the keys for point
reads and picks the keys of the one-key commits.  The benchmark imports
`storage` directly rather than the public `mvcc` API (which `stress/` uses
otherwise): it measures the layer below, and a figure per layer is what tells
where the time goes.

What is measured, in this order (timing rules: _common.py T1-T4; every figure
but the bulk load takes its repetitions round-robin across the engines, T4)
1. bulk load: keys/s of one write transaction over the sorted pairs, its
   commit included, with sync on (mvcc: `bulk_load`; lmdb: `putmulti(append=True)`).
2. warm point gets: the file is reopened with a decoded-page cache of twice its
   page count, one untimed pass reads (and checks) every key so the cache holds
   every page, then a loop of at least --gets gets in random key order is timed
   (in 20 parts that alternate between the engines); the best of --repeat
   repetitions, as gets/s and µs/get.
3. cold point gets: the cache is dropped (mvcc: `clear_cache`; lmdb: a fresh
   reopen) and one pass over every key in random order is timed, best of
   --repeat.  The OS page cache stays warm for every engine: "cold" means the
   engine's own state, not the disk.  For mvcc also the cost of a get that
   finds nothing cached (the cache is cleared before each get): lmdb keeps no
   decoded state, so it has no such figure.
4. range scans: rows/s of a forward cursor over the whole tree, and µs per range
   of 1000 rows from a random start (--ranges ranges), best of --repeat each.
5. one-key commits: --commits transactions that each update one random key,
   with sync on and then (after a reopen) with sync off; mean µs per commit of
   the best of --repeat such loops.
   For mvcc also the pages each commit wrote (`pages_written`, mean and max)
   and the tree depth, for the floor below.

Floors (from the issue; --check-floors turns a FAIL into exit status 1)
(F1) A warm point get on mvcc runs at >= 300,000 gets/s in one process.
(F2) A one-key commit writes at most depth + 3 pages: the tree path, the
     catalog leaf, the meta page and one freelist page (max over all commits,
     plain and TDE).
(F3) TDE costs warm gets at most 15%: a warm get decrypts nothing, it reads
     decoded nodes, so the two should be within noise of each other.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

from storage.crypto import PageCipher
from storage.format import DEFAULT_PAGE_SIZE
from storage.pagefile import PageFile

from ._common import (
    best_of_each,
    command_line,
    finish,
    floor,
    format_number,
    format_table,
    machine_facts,
    print_floors,
    timed,
)

try:
    import lmdb
except ImportError:  # the bench extra is optional; the lmdb column then says n/a
    lmdb = None

__all__ = ["ENGINES", "FIGURES", "FLOORS", "UNSUPPORTED", "main"]

MODULE = "stress.bench.storage"
TREE = b"bench"
KEY_SIZE = 16
VALUE_SIZE = 100
RANGE_ROWS = 1000
WARM_PARTS = 20  # the warm-get loop alternates between engines in this many parts (T4)

ENGINES = ("mvcc", "mvcc_tde", "lmdb")
ENGINE_TITLES = {"mvcc": "mvcc", "mvcc_tde": "mvcc+TDE", "lmdb": "lmdb"}


class Figure(NamedTuple):
    key: str
    label: str
    unit: str
    better: str  # "higher", "lower", or "" for a fact that is neither


FIGURES: tuple[Figure, ...] = (
    Figure("bulk_load", "bulk load, one synced txn", "keys/s", "higher"),
    Figure("warm_get", "warm point get", "gets/s", "higher"),
    Figure("warm_get_us", "warm point get", "µs/get", "lower"),
    Figure("cold_pass", "cold point gets, first pass", "gets/s", "higher"),
    Figure("cold_get_us", "cold get, cache cleared each get", "µs/get", "lower"),
    Figure("scan_full", "forward scan, whole tree", "rows/s", "higher"),
    Figure("scan_range_us", f"range of {RANGE_ROWS} rows, random start", "µs/range", "lower"),
    Figure("commit_sync_us", "one-key commit, sync on", "µs/commit", "lower"),
    Figure("commit_nosync_us", "one-key commit, sync off", "µs/commit", "lower"),
    Figure("commit_pages", "one-key commit, pages written (mean)", "pages", "lower"),
    Figure("commit_pages_max", "one-key commit, pages written (max)", "pages", "lower"),
    Figure("depth", "tree depth", "levels", ""),
    Figure("file_pages", "pages in the file", "pages", "lower"),
)

# Figures an engine cannot report: lmdb exposes no per-commit page count and
# keeps no decoded-page cache to clear.
UNSUPPORTED = {"lmdb": {"cold_get_us", "commit_pages", "commit_pages_max"}}

FLOORS = ("warm_get_floor", "commit_pages_floor", "tde_cost_floor")
WARM_GET_FLOOR = 300_000.0
TDE_COST_LIMIT_PCT = 15.0


# -- configuration and data ----------------------------------------------------


@dataclass(frozen=True)
class Config:
    keys: int
    gets: int
    repeat: int
    ranges: int
    commits: int
    cold_gets: int
    seed: int
    lmdb: bool
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = args.quick
        keys = args.keys or (5_000 if quick else 100_000)
        return cls(
            keys=keys,
            gets=args.gets or (20_000 if quick else max(200_000, keys)),
            repeat=args.repeat or (2 if quick else 3),
            ranges=20 if quick else 200,
            commits=args.commits or (30 if quick else 200),
            cold_gets=200 if quick else 2_000,
            seed=args.seed,
            lmdb=lmdb is not None and not args.no_lmdb,
            quick=quick,
        )


@dataclass
class Dataset:
    pairs: list[tuple[bytes, bytes]]  # ascending by key
    expected: dict[bytes, bytes]
    probe: list[bytes]  # every key once, shuffled
    loop: list[bytes]  # the probe repeated to at least `gets` keys
    range_starts: list[bytes]  # each has at least RANGE_ROWS keys from it on
    updates: list[tuple[bytes, bytes]]  # (existing key, new value), one per commit


def make_dataset(cfg: Config) -> Dataset:
    rng = random.Random(cfg.seed)
    keys = [b"%016d" % i for i in range(cfg.keys)]
    assert len(keys[-1]) == KEY_SIZE
    pairs = [(k, rng.randbytes(VALUE_SIZE)) for k in keys]
    probe = keys[:]
    rng.shuffle(probe)
    rounds = -(-cfg.gets // len(probe))
    last_start = max(0, cfg.keys - RANGE_ROWS)
    return Dataset(
        pairs=pairs,
        expected=dict(pairs),
        probe=probe,
        loop=(probe * rounds)[: max(cfg.gets, len(probe))],
        range_starts=[keys[rng.randint(0, last_start)] for _ in range(cfg.ranges)],
        updates=[(rng.choice(keys), rng.randbytes(VALUE_SIZE)) for _ in range(cfg.commits)],
    )


# -- engines: one small adapter each, so every measurement is written once ------------


class View(NamedTuple):
    """A read view: a point get and a forward cursor from a key (or the start)."""

    get: Callable[[bytes], bytes | None]
    cursor: Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]


class MvccEngine:
    """A PageFile holding one tree, reopened as the measurements need."""

    per_get_cold = True

    def __init__(self, directory: str, name: str, cipher: PageCipher | None) -> None:
        self.path = os.path.join(directory, f"{name}.pages")
        self.cipher = cipher
        self.cache_pages = 8192
        self.pf = self._open(sync=True)

    def _open(self, *, sync: bool) -> PageFile:
        return PageFile.open(self.path, cipher=self.cipher, sync=sync, cache_pages=self.cache_pages)

    def reopen(self, *, sync: bool = True) -> None:
        self.pf.close()
        self.pf = self._open(sync=sync)

    def close(self) -> None:
        self.pf.close()

    def bulk_load(self, pairs: list[tuple[bytes, bytes]]) -> None:
        with self.pf.begin() as txn:
            tree = txn.tree(TREE, create=True)
            assert tree is not None
            tree.bulk_load(pairs)

    def size_cache_for_all_pages(self) -> None:
        """Reopen with a cache of twice the file's pages: a warm pass then evicts nothing."""
        self.cache_pages = 2 * self.pf.meta.npages
        self.reopen()

    def _tree(self) -> Any:
        tree = self.pf.snapshot().tree(TREE)
        assert tree is not None
        return tree

    @contextlib.contextmanager
    def reader(self) -> Iterator[View]:
        tree = self._tree()
        yield View(tree.get, lambda lo: tree.cursor(lo=lo))

    def make_cold(self) -> None:
        self.pf.clear_cache()

    def commit_one(self, key: bytes, value: bytes) -> int:
        with self.pf.begin() as txn:
            tree = txn.tree(TREE)
            assert tree is not None
            tree.put(key, value)
        return txn.pages_written

    def depth(self) -> int:
        """Levels from the root to a leaf, the root and the leaf included."""
        pf = self.pf
        node = pf.node(*self._tree().root)
        levels = 1
        while node.kids is not None:
            node = pf.node(node.kids[0], node.gens[0])
            levels += 1
        return levels

    def file_pages(self) -> int:
        return self.pf.meta.npages


class LmdbEngine:
    """An LMDB environment holding the same data in its main database."""

    per_get_cold = False

    def __init__(self, directory: str, n_keys: int) -> None:
        self.path = os.path.join(directory, "lmdb")
        # A sparse mapping; generous so neither the load nor the commits hit MapFullError.
        self.map_size = max(1 << 30, n_keys * (KEY_SIZE + VALUE_SIZE) * 8)
        self.env = self._open(sync=True)

    def _open(self, *, sync: bool) -> Any:
        return lmdb.open(self.path, map_size=self.map_size, sync=sync, metasync=sync)

    def reopen(self, *, sync: bool = True) -> None:
        self.env.close()
        self.env = self._open(sync=sync)

    def close(self) -> None:
        self.env.close()

    def bulk_load(self, pairs: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            consumed, added = txn.cursor().putmulti(pairs, append=True)
        assert consumed == added == len(pairs)

    def size_cache_for_all_pages(self) -> None:
        """Nothing to size: lmdb reads its memory map, which the OS caches."""

    @contextlib.contextmanager
    def reader(self) -> Iterator[View]:
        txn = self.env.begin()
        try:

            def cursor(lo: bytes | None) -> Iterator[tuple[bytes, bytes]]:
                cur = txn.cursor()
                found = cur.first() if lo is None else cur.set_range(lo)
                return cur.iternext() if found else iter(())

            yield View(txn.get, cursor)
        finally:
            txn.abort()

    def make_cold(self) -> None:
        self.reopen()

    def commit_one(self, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value)

    def depth(self) -> int:
        return int(self.env.stat()["depth"])

    def file_pages(self) -> int:
        return int(self.env.info()["last_pgno"]) + 1


Engine = Any  # MvccEngine | LmdbEngine: the same duck-typed surface


# -- measurements: one function each, each returning {engine: {figure key: value}} --

Results = dict[str, dict[str, Any]]


def _get_all(get: Callable[[bytes], bytes | None], keys: Sequence[bytes]) -> None:
    for key in keys:
        get(key)


def _count(rows: Iterator[tuple[bytes, bytes]]) -> int:
    n = 0
    for _row in rows:
        n += 1
    return n


def _check_every_value(get: Callable[[bytes], bytes | None], data: Dataset) -> None:
    for key in data.probe:
        if get(key) != data.expected[key]:
            raise AssertionError(f"wrong value for {key!r}")


def measure_bulk_load(engine: Engine, data: Dataset) -> dict[str, float]:
    secs = timed(lambda: engine.bulk_load(data.pairs))
    return {"bulk_load": len(data.pairs) / secs}


def measure_warm_gets(engines: dict[str, Engine], data: Dataset, cfg: Config) -> Results:
    step = -(-len(data.loop) // WARM_PARTS)
    parts = [data.loop[i : i + step] for i in range(0, len(data.loop), step)]
    with contextlib.ExitStack() as stack:
        loops = {}
        for name, engine in engines.items():
            engine.size_cache_for_all_pages()
            get = stack.enter_context(engine.reader()).get
            _check_every_value(get, data)  # the warm-up pass: every page is now cached
            loops[name] = [functools.partial(_get_all, get, part) for part in parts]
        secs = best_of_each(loops, cfg.repeat)
    n = len(data.loop)
    return {name: {"warm_get": n / s, "warm_get_us": s / n * 1e6} for name, s in secs.items()}


def _cold_pass(engine: Engine, keys: list[bytes]) -> None:
    with engine.reader() as view:
        _get_all(view.get, keys)


def _cold_each(engine: Engine, keys: list[bytes]) -> None:
    drop = engine.make_cold
    with engine.reader() as view:
        get = view.get
        for key in keys:
            drop()
            get(key)


def measure_cold_gets(engines: dict[str, Engine], data: Dataset, cfg: Config) -> Results:
    passes = {name: functools.partial(_cold_pass, e, data.probe) for name, e in engines.items()}
    setups = {name: e.make_cold for name, e in engines.items()}
    secs = best_of_each(passes, cfg.repeat, setups)
    out: Results = {name: {"cold_pass": len(data.probe) / s} for name, s in secs.items()}
    keys = data.probe[: cfg.cold_gets]
    each = {n: functools.partial(_cold_each, e, keys) for n, e in engines.items() if e.per_get_cold}
    secs = best_of_each(each, cfg.repeat)
    for name in engines:
        out[name]["cold_get_us"] = secs[name] / len(keys) * 1e6 if name in secs else None
    return out


def _scan_all(cursor: Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]) -> int:
    return _count(cursor(None))


def _scan_ranges(
    cursor: Callable[[bytes | None], Iterator[tuple[bytes, bytes]]], starts: list[bytes], want: int
) -> None:
    for start in starts:
        if _count(islice(cursor(start), RANGE_ROWS)) != want:
            raise AssertionError(f"a range from {start!r} came up short")


def measure_scans(engines: dict[str, Engine], data: Dataset, cfg: Config) -> Results:
    n_rows = len(data.pairs)
    want = min(RANGE_ROWS, n_rows)
    with contextlib.ExitStack() as stack:
        full, ranges = {}, {}
        for name, engine in engines.items():
            cursor = stack.enter_context(engine.reader()).cursor
            if _scan_all(cursor) != n_rows:  # untimed: warms and checks the cursor
                raise AssertionError(f"{name}: a full scan did not return every row")
            full[name] = functools.partial(_scan_all, cursor)
            ranges[name] = functools.partial(_scan_ranges, cursor, data.range_starts, want)
        full_secs = best_of_each(full, cfg.repeat)
        range_secs = best_of_each(ranges, cfg.repeat)
    return {
        name: {
            "scan_full": n_rows / full_secs[name],
            "scan_range_us": range_secs[name] / len(data.range_starts) * 1e6,
        }
        for name in engines
    }


def _commit_all(engine: Engine, updates: list[tuple[bytes, bytes]], pages: list[Any]) -> None:
    for key, value in updates:
        pages.append(engine.commit_one(key, value))


def measure_commits(engines: dict[str, Engine], data: Dataset, cfg: Config) -> Results:
    n = len(data.updates)
    pages: dict[str, list[int | None]] = {name: [] for name in engines}
    loops = {
        name: functools.partial(_commit_all, e, data.updates, pages[name])
        for name, e in engines.items()
    }
    out: Results = {name: {} for name in engines}
    for sync, key in ((True, "commit_sync_us"), (False, "commit_nosync_us")):
        for engine in engines.values():
            engine.reopen(sync=sync)
        for name, secs in best_of_each(loops, cfg.repeat).items():
            out[name][key] = secs / n * 1e6
    for name, engine in engines.items():
        engine.reopen(sync=True)
        counted = [p for p in pages[name] if p is not None]
        out[name]["commit_pages"] = sum(counted) / len(counted) if counted else None
        out[name]["commit_pages_max"] = float(max(counted)) if counted else None
    return out


def run_all(engines: dict[str, Engine], data: Dataset, cfg: Config) -> Results:
    """Every measurement, in the order of the module docstring."""
    results: Results = {name: {} for name in engines}

    def merge(part: Results) -> None:
        for name, figures in part.items():
            results[name].update(figures)

    for name, engine in engines.items():
        results[name].update(measure_bulk_load(engine, data))
    merge(measure_warm_gets(engines, data, cfg))
    merge(measure_cold_gets(engines, data, cfg))
    merge(measure_scans(engines, data, cfg))
    for name, engine in engines.items():
        results[name]["depth"] = engine.depth()
    merge(measure_commits(engines, data, cfg))
    for name, engine in engines.items():
        results[name]["file_pages"] = engine.file_pages()
    return results


def make_engine(name: str, directory: str, cfg: Config) -> Engine:
    if name == "mvcc":
        return MvccEngine(directory, name, None)
    if name == "mvcc_tde":
        return MvccEngine(directory, name, PageCipher(os.urandom(32)))
    return LmdbEngine(directory, cfg.keys)


# -- results: ratios, floors, the table, JSON -------------------------------------


def ratio(fig: Figure, results: Results) -> float | None:
    """mvcc / lmdb for the figure as reported: > 1 is better for "higher" rows only."""
    mine = results.get("mvcc", {}).get(fig.key)
    theirs = results.get("lmdb", {}).get(fig.key)
    if mine is None or not theirs:
        return None
    return mine / theirs


def tde_cost_pct(results: Results) -> float | None:
    plain = results.get("mvcc", {}).get("warm_get")
    tde = results.get("mvcc_tde", {}).get("warm_get")
    if not plain or tde is None:
        return None
    return (plain - tde) / plain * 100


def check_floors(results: Results) -> list[dict[str, Any]]:
    """Each floor of the module docstring with its measured value and PASS/FAIL."""
    mvcc = results["mvcc"]
    warm = mvcc["warm_get"] or 0.0
    worst_pages, limit_pages = 0.0, 0.0
    for name in ("mvcc", "mvcc_tde"):
        r = results[name]
        worst_pages = max(worst_pages, r["commit_pages_max"] or 0.0)
        limit_pages = max(limit_pages, (r["depth"] or 0) + 3)
    cost = tde_cost_pct(results)
    return [
        floor(
            "warm_get_floor",
            "warm point get >= 300,000/s in one process (mvcc)",
            warm,
            WARM_GET_FLOOR,
            "gets/s",
            at_least=True,
        ),
        floor(
            "commit_pages_floor",
            "one-key commit pages <= depth + catalog leaf + meta + freelist",
            worst_pages,
            limit_pages,
            "pages",
        ),
        floor(
            "tde_cost_floor",
            f"TDE costs warm gets <= {TDE_COST_LIMIT_PCT:g}%",
            cost,
            TDE_COST_LIMIT_PCT,
            "%",
        ),
    ]


def results_table(results: Results, engines: Sequence[str]) -> str:
    headers = ["figure", "unit", *(ENGINE_TITLES[e] for e in ENGINES), "mvcc/lmdb", "better"]
    rows = []
    for fig in FIGURES:
        cells = [format_number(results.get(e, {}).get(fig.key)) for e in ENGINES]
        r = ratio(fig, results) if fig.better else None
        rows.append(
            [
                fig.label,
                fig.unit,
                *cells,
                "n/a" if r is None else f"{r:.2f}",
                f"{fig.better} is better" if fig.better else "",
            ]
        )
    return format_table(headers, rows)


def to_json(
    header: dict[str, Any],
    results: Results,
    floors: list[dict[str, Any]],
) -> dict[str, Any]:
    figures = {}
    for fig in FIGURES:
        entry: dict[str, Any] = {"label": fig.label, "unit": fig.unit, "better": fig.better}
        for e in ENGINES:
            entry[e] = results.get(e, {}).get(fig.key)
        entry["ratio_mvcc_lmdb"] = ratio(fig, results)
        figures[fig.key] = entry
    return {
        **header,
        "figures": figures,
        "tde_warm_get_cost_pct": tde_cost_pct(results),
        "floors": floors,
    }


# -- the command ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Benchmark the page file and B+tree (plain and encrypted) against lmdb.",
    )
    p.add_argument("--keys", type=int, help="number of keys (default 100,000; 5,000 with --quick)")
    p.add_argument(
        "--gets", type=int, help="point gets per timed loop (default max(200,000, keys))"
    )
    p.add_argument("--repeat", type=int, help="repetitions, the best reported (default 3)")
    p.add_argument("--commits", type=int, help="one-key commits per sync mode (default 200)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--dir", help="where to make a scratch directory (default: the temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="a small smoke run: few keys, few loops")
    p.add_argument("--no-lmdb", action="store_true", help="skip lmdb even when it is installed")
    p.add_argument("--check-floors", action="store_true", help="exit 1 if a floor fails")
    args = p.parse_args(argv)
    for name in ("keys", "gets", "repeat", "commits"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be at least 1")
    return args


def make_header(cfg: Config, directory: str) -> dict[str, Any]:
    import cryptography
    import msgpack

    versions = {
        "storage_page_size": str(DEFAULT_PAGE_SIZE),
        "msgpack": ".".join(map(str, msgpack.version)),
        "cryptography": cryptography.__version__,
        "lmdb": lmdb.__version__ if lmdb is not None else "not installed",
    }
    return {
        "command": command_line(MODULE),
        "machine": machine_facts(directory, versions),
        "config": dataclasses.asdict(cfg),
    }


def print_report(header: dict[str, Any], results: Any, floors: list[dict[str, Any]]) -> None:
    cfg = header["config"]
    print(f"# storage benchmark: {header['command']}")
    for name, value in header["machine"].items():
        print(f"#   {name}: {value}")
    print(
        f"#   keys {cfg['keys']:,} x ({KEY_SIZE} B key, {VALUE_SIZE} B value); "
        f"{cfg['gets']:,} gets per loop; best of {cfg['repeat']}; "
        f"{cfg['commits']} commits per sync mode; seed {cfg['seed']}"
    )
    if cfg["quick"]:
        print("#   --quick: loops of a few milliseconds; a smoke run, too noisy to compare")
    print()
    print(results_table(results, ENGINES))
    print()
    cost = tde_cost_pct(results)
    print(f"TDE cost on warm gets: {'n/a' if cost is None else f'{cost:+.1f}%'}")
    if "lmdb" in results:
        print(
            "Cold: mvcc drops its decoded-page cache, lmdb is reopened; the OS page cache "
            "stays warm for both (no disk reads are measured)."
        )
    else:
        print("Cold: mvcc drops its decoded-page cache; the OS page cache stays warm.")
        print("lmdb: skipped (--no-lmdb or not installed).")
    print()
    print_floors(floors)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir)
    try:
        header = make_header(cfg, directory)
        data = make_dataset(cfg)
        names = [n for n in ENGINES if n != "lmdb" or cfg.lmdb]
        with contextlib.ExitStack() as stack:
            engines = {}
            for name in names:
                engines[name] = engine = make_engine(name, directory, cfg)
                stack.callback(engine.close)
            started = time.perf_counter()
            results = run_all(engines, data, cfg)
        print(f"# measured in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    floors = check_floors(results)
    print_report(header, results, floors)
    return finish(
        args.json, to_json(header, results, floors), floors, fail_on_floors=args.check_floors
    )


if __name__ == "__main__":
    sys.exit(main())
