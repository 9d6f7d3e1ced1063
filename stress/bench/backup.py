"""Backup and export benchmark: throughput against `cp` and sqlite3's backup (issue 9).

Run ``python -m stress.bench.backup`` (``--help`` for the options).  It uses the
public API (`mvcc.open`, `db.table`, `Table.insert_many`, `Table.put`,
`db.transaction`, `db.transactional`, `db.checkpoint`, `db.backup`,
`db.export`, `db.import_`, `db.stats`, `mvcc.restore`, `mvcc.check`), as an
operator would; sizes come from the files.  Everything happens in a scratch
directory (--dir, default the temp dir), deleted at the end unless --keep.

Data: --mb megabytes (MB = 10**6 bytes; default 100, 4 with --quick) of
documents of about --doc-bytes packed (msgpack; default DOC_BYTES = 1,000):
``{"id": i, "name": f"user{i}", "age": i % 90, "email": f"user{i}@example.com",
"n": 0, "body": <base64 characters of SHAKE-128(i), as many as make the size>}``
(the body does not compress, and document i can be rebuilt from i alone).
At 4 KiB pages a leaf entry over half a node's room (2,008 B) goes to an
overflow run of its own (storage/btree.py B6): a 2,500 B document does, a
1,000 B or 1,500 B one stays in its leaf (under the earlier quarter-page
bound a 1,000 B document did not, and took 2.7 times the pages of a 900 B
one).  Document i goes to
table TABLES[i % 3]: ``users`` (indexed on ``age``), ``orders``, ``events``,
all with ``primary_key="id"``.  The same documents go to both engines:

    mvcc     `mvcc.open(dir, autovacuum=False)`, `db.table(name,
             primary_key="id")` (users with ``indexes=["age"]``), loaded by
             `Table.insert_many` in transactions of LOAD_BATCH documents, then
             `db.checkpoint()`, so the page file holds everything and the WAL
             no frame.  An mvcc index stores each record's document again
             (planner.py: covering), so the page file is larger than sqlite3's.
    sqlite3  journal_mode=WAL, synchronous=FULL (`_common.sqlite_connect`),
             ``users (id INTEGER PRIMARY KEY, age INTEGER, doc BLOB)`` with an
             index on ``age``, ``orders`` and ``events (id INTEGER PRIMARY KEY,
             doc BLOB)``, each document as `msgpack.packb(doc)`, loaded in
             transactions of LOAD_BATCH, then ``PRAGMA wal_checkpoint(TRUNCATE)``
             so the main file holds everything.

Sizes, each in the report:
    data     the documents' packed size: the same bytes in both engines.  The
             headline MB/s is data MB per second, so two candidates' MB/s
             compare as the inverse of their times (the ratios below).
    source   the files the candidate reads: mvcc's page file + WAL segments
             (backup, export); the whole data directory, lock and state files
             included (cp); sqlite3's main file + WAL (its backup); the export
             file (import); the backup directory (restore).
    output   the files the candidate wrote, after its last repetition.

What is measured, in this order (timing rules: _common.py T1-T4; T5 below)
1. load (untimed for the comparison; its seconds are reported): both engines
   as above.  Then, untimed, the inputs of 2: one export file (import's) and
   one backup directory (restore's).
2. idle source: each candidate copies the data while nothing else writes;
   the parent holds the mvcc directory and the sqlite3 file open.  Best of
   --repeat (default 3), round-robin between the candidates (T4: repetition
   1 of each, then 2, ...; a candidate is one call, not cut into parts).
   Before each run its previous output is deleted, untimed.  Every
   candidate's time ends when its output is durable:
     backup          `db.backup(dest)`: one pinned snapshot rebuilt compact,
                     every file and directory fsynced, renamed into place
                     (backup.py B1-B7)
     export          `db.export(path)`: JSON Lines, fsynced at the end
     cp              ``cp -r DIR DEST`` (a subprocess), then `os.fsync` of
                     every file and directory it made (as the backup fsyncs
                     its own; ``sync -f`` was rejected: it flushes the whole
                     file system, other processes' dirty pages too).  A raw
                     copy of an idle directory: no snapshot, no check, no
                     compaction; of a directory being written it would not
                     be a consistent copy, and of this one it is only because
                     nothing writes
     sqlite3_backup  `sqlite3.Connection.backup` from a connection to the
                     source into a new file (one step, ``pages=-1``; the
                     destination connection with synchronous=FULL, so its
                     commit syncs), the destination closed
     import          `mvcc.open(new dir, autovacuum=False)`, `db.import_(the
                     export file)`, close: returns once its commits are
                     durable in the WAL; folding them into the page file is
                     a checkpoint later (timed once, after the last
                     repetition, and reported beside it, not in it)
     restore         `mvcc.restore(backup, dest)`: `mvcc.check` of the backup,
                     then a hashed copy, fsynced, renamed into place
   Reported per candidate: seconds, data MB/s, source and output MB, source
   MB/s, the data-MB/s ratio to cp and to sqlite3's backup (> 1: faster), and
   CPU seconds (user + system of this process and of its waited-for
   children, i.e. cp's; the least of the repetitions): on a shared machine
   other processes move it far less than the wall time, and it tells work
   done by the CPU from waiting on the disk.
   All reads come from the OS page cache (the sources were just written and
   fit in memory many times over); writes go to the disk through the fsyncs.
3. while WRITERS writer processes commit: the writers (spawned; `mvcc.open`
   with its defaults, so autovacuum is on and the vacuum process runs, as
   deployed) start with the parent at a Barrier and loop until told to stop:
   one transaction each time (``@db.transactional(retries=RETRIES)``) that
   `Table.put`s a random document again with its ``n`` bumped (the users
   table's index maintained), durability "full".  Each records the end of
   every acknowledged commit.  The parent waits WARMUP s, then alternates a
   quiet window (--quiet seconds of sleep; default 3, 0.5 --quick) with one
   `db.backup` --repeat times, and ends with a quiet window; deleting a
   backup falls outside both kinds of window, and its commits count in
   neither.  Reported: the backups' best and mean seconds and data MB/s, and
   the writers' commits/s in the quiet windows and during the backups (the
   commits whose acknowledgement falls in each kind of window over the
   windows' total length), with their ratio; each backup's CPU seconds (this
   process's); the page file before and after
   the phase (a backup's pin holds back the reuse of pages: checkpoint.py K4).

(T5) Times compared across processes (the windows against the writers'
     commits) come from `time.monotonic_ns()`, never `perf_counter`.

Checks (untimed; a failure exits 1): the backup's record count per table,
the export's, the import's, the restore's, equal the data loaded; the sqlite3
copy's row counts too; cp's copy holds the same files with the same sizes;
the last backup taken under the writers passes `mvcc.check` and holds every
document; no writer error; the vacuum process exits once the directory is
closed.

No floors: issue 9 asks for the figures (docs/benchmarks.md records them), so
--strict has nothing to fail on.  ``--profile backup|export|import|restore``
runs that one mvcc operation over the loaded data under cProfile instead.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import functools
import hashlib
import io
import math
import os
import pstats
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

import mvcc

from ._common import (
    BUSY_TIMEOUT,
    CHILD_TIMEOUT,
    SPAWN,
    add_common_arguments,
    best_of_each,
    finish,
    format_number,
    format_table,
    gc_paused,
    print_header,
    print_profile,
    profile_or_measure,
    require_positive,
    sqlite_connect,
)

__all__ = ["CANDIDATES", "PROFILES", "REFERENCES", "main", "make_record"]

MODULE = "stress.bench.backup"
TABLES = ("users", "orders", "events")  # document i goes to TABLES[i % 3]
INDEXED = {"users": ["age"]}  # db.table(..., indexes=) per table
PRIMARY_KEY = "id"
DOC_BYTES = 1000  # --doc-bytes: a document's packed size, about
DOC_OVERHEAD = 66  # packed bytes of a document besides its body's characters (5-digit ids)
MB = 1_000_000
LOAD_BATCH = 1000  # documents per load transaction (both engines)
WRITERS = 2  # phase 3
RETRIES = 1000  # @db.transactional(retries=...) for the writers
WARMUP = 1.0  # seconds of writing before phase 3's first window
WRITER_DEADLINE = 900.0  # seconds: a writer stops by itself if never told (parent gone)
VACUUM_EXIT = 30.0  # seconds for the vacuum process to exit once the directory is closed

CANDIDATES = ("backup", "export", "cp", "sqlite3_backup", "import", "restore")
REFERENCES = ("cp", "sqlite3_backup")
LABELS = {
    "backup": "mvcc db.backup",
    "export": "mvcc db.export (JSON Lines)",
    "cp": "cp -r + fsync",
    "sqlite3_backup": "sqlite3 .backup",
    "import": "mvcc db.import_ (of the export)",
    "restore": "mvcc.restore (of a backup)",
}
PROFILES = ("backup", "export", "import", "restore")


# -- configuration and data ----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    mb: float
    doc_bytes: int
    docs: int
    repeat: int
    quiet: float
    writers: int
    seed: int
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = bool(args.quick)
        mb = args.mb or (4.0 if quick else 100.0)
        doc_bytes = args.doc_bytes or DOC_BYTES
        return cls(
            mb=mb,
            doc_bytes=doc_bytes,
            docs=max(len(TABLES), round(mb * MB / doc_bytes)),
            repeat=args.repeat,
            quiet=args.quiet or (0.5 if quick else 3.0),
            writers=WRITERS,
            seed=args.seed,
            quick=quick,
        )


def make_record(i: int, doc_bytes: int = DOC_BYTES, n: int = 0) -> dict[str, Any]:
    """Document `i`, about `doc_bytes` packed, its counter at `n`."""
    chars = max(0, doc_bytes - DOC_OVERHEAD)
    raw = hashlib.shake_128(i.to_bytes(8, "little")).digest(chars * 3 // 4 + 3)
    body = base64.b64encode(raw)[:chars]
    return {
        "id": i,
        "name": f"user{i}",
        "age": i % 90,
        "email": f"user{i}@example.com",
        "n": n,
        "body": body.decode("ascii"),
    }


def table_of(i: int) -> str:
    return TABLES[i % len(TABLES)]


def expected_counts(docs: int) -> dict[str, int]:
    return {name: len(range(k, docs, len(TABLES))) for k, name in enumerate(TABLES)}


def batches(cfg: Config) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """The documents in LOAD_BATCH runs of ids, each run grouped by table."""
    for start in range(0, cfg.docs, LOAD_BATCH):
        by_table: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        for i in range(start, min(cfg.docs, start + LOAD_BATCH)):
            by_table[table_of(i)].append(make_record(i, cfg.doc_bytes))
        yield by_table


def files_bytes(path: str) -> int:
    """The size of the file `path`, or of every file under the directory `path`."""
    if not os.path.isdir(path):
        return os.path.getsize(path) if os.path.exists(path) else 0
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _dirs, names in os.walk(path)
        for name in names
    )


def mvcc_store_bytes(path: str) -> tuple[int, int]:
    """The page file's size and the WAL segments' total."""
    wal = os.path.join(path, "wal")
    segments = sum(
        os.path.getsize(os.path.join(wal, n)) for n in os.listdir(wal) if n.endswith(".wal")
    )
    return os.path.getsize(os.path.join(path, "pages")), segments


def sqlite_bytes(path: str) -> int:
    return sum(files_bytes(path + suffix) for suffix in ("", "-wal"))


def load_mvcc(path: str, cfg: Config) -> dict[str, Any]:
    """Phase 1, mvcc: insert_many in LOAD_BATCH transactions, then a checkpoint."""
    with mvcc.open(path, autovacuum=False) as db:
        tables = {
            name: db.table(name, primary_key=PRIMARY_KEY, indexes=INDEXED.get(name, ()))
            for name in TABLES
        }
        began = time.perf_counter()
        for batch in batches(cfg):
            with db.transaction():
                for name, records in batch.items():
                    tables[name].insert_many(records)
        loaded = time.perf_counter()
        db.checkpoint()
        checkpointed = time.perf_counter()
    pages, wal = mvcc_store_bytes(path)
    return {
        "load_s": loaded - began,
        "checkpoint_s": checkpointed - loaded,
        "page_file_bytes": pages,
        "wal_bytes": wal,
        "directory_bytes": files_bytes(path),
    }


def load_sqlite(path: str, cfg: Config) -> dict[str, Any]:
    """Phase 1, sqlite3: the same batches, then the WAL checkpointed into the file."""
    con = sqlite_connect(path)
    try:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, age INTEGER, doc BLOB NOT NULL)")
        con.execute("CREATE INDEX users_age ON users (age)")
        for name in TABLES[1:]:
            con.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, doc BLOB NOT NULL)")
        pack = msgpack.packb
        began = time.perf_counter()
        for batch in batches(cfg):
            con.execute("BEGIN")
            con.executemany(
                "INSERT INTO users (id, age, doc) VALUES (?, ?, ?)",
                [(d["id"], d["age"], pack(d)) for d in batch["users"]],
            )
            for name in TABLES[1:]:
                con.executemany(
                    f"INSERT INTO {name} (id, doc) VALUES (?, ?)",
                    [(d["id"], pack(d)) for d in batch[name]],
                )
            con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        loaded = time.perf_counter() - began
    finally:
        con.close()
    return {"load_s": loaded, "file_bytes": sqlite_bytes(path)}


def load(directory: str, cfg: Config) -> tuple[str, str, dict[str, Any]]:
    """Phase 1: both engines; returns the mvcc directory, the sqlite3 file, the data."""
    mvcc_path = os.path.join(directory, "mvcc")
    sqlite_path = os.path.join(directory, "sqlite3.db")
    doc_bytes = sum(len(msgpack.packb(make_record(i, cfg.doc_bytes))) for i in range(cfg.docs))
    data = {
        "docs": cfg.docs,
        "tables": expected_counts(cfg.docs),
        "doc_bytes": doc_bytes,
        "mean_doc_bytes": doc_bytes / cfg.docs,
        "mvcc": load_mvcc(mvcc_path, cfg),
        "sqlite3": load_sqlite(sqlite_path, cfg),
    }
    return mvcc_path, sqlite_path, data


# -- the candidates ------------------------------------------------------------------------


def remove(path: str) -> None:
    """Delete a candidate's output (a file, a directory, sqlite3's side files)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    for p in (path, path + "-wal", path + "-shm", path + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def fsync_tree(path: str) -> None:
    """fsync every file under `path`, then every directory, deepest first."""
    for root, _dirs, names in os.walk(path, topdown=False):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cp_durable(src: str, dest: str) -> None:
    subprocess.run(["cp", "-r", src, dest], check=True)
    fsync_tree(dest)


def sqlite_backup(src: sqlite3.Connection, dest: str) -> None:
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        out.execute("PRAGMA synchronous=FULL")
        src.backup(out)
    finally:
        out.close()


def import_into(dest: str, export_file: str) -> dict[str, int]:
    with mvcc.open(dest, autovacuum=False) as db:
        return db.import_(export_file)


class Sources(NamedTuple):
    """What phase 2 reads: the open source handles and the prepared inputs."""

    db: mvcc.Database
    mvcc_path: str
    sqlite: sqlite3.Connection
    sqlite_path: str
    export_file: str  # import's input
    backup_dir: str  # restore's input


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its waited-for children (cp)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def candidate_calls(
    src: Sources, outputs: Mapping[str, str], last: dict[str, Any], cpu: dict[str, float]
) -> dict[str, Callable[[], Any]]:
    """One call per candidate; each keeps its last result in `last` (for the checks)
    and its least CPU time in `cpu`."""

    def keep(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            began = cpu_seconds()
            last[name] = fn()
            cpu[name] = min(cpu.get(name, math.inf), cpu_seconds() - began)

        return run

    o = outputs
    return {
        "backup": keep("backup", lambda: src.db.backup(o["backup"])),
        "export": keep("export", lambda: src.db.export(o["export"])),
        "cp": keep("cp", lambda: cp_durable(src.mvcc_path, o["cp"])),
        "sqlite3_backup": keep(
            "sqlite3_backup", lambda: sqlite_backup(src.sqlite, o["sqlite3_backup"])
        ),
        "import": keep("import", lambda: import_into(o["import"], src.export_file)),
        "restore": keep("restore", lambda: mvcc.restore(src.backup_dir, o["restore"])),
    }


def source_bytes(src: Sources) -> dict[str, int]:
    store = sum(mvcc_store_bytes(src.mvcc_path))
    return {
        "backup": store,
        "export": store,
        "cp": files_bytes(src.mvcc_path),
        "sqlite3_backup": sqlite_bytes(src.sqlite_path),
        "import": files_bytes(src.export_file),
        "restore": files_bytes(src.backup_dir),
    }


def measure_idle(
    src: Sources, out_dir: str, cfg: Config, data: Mapping[str, Any]
) -> dict[str, Any]:
    """Phase 2: every candidate, best of --repeat, round-robin (T3, T4); then the checks."""
    os.makedirs(out_dir)
    outputs = {name: os.path.join(out_dir, name) for name in CANDIDATES}
    last: dict[str, Any] = {}
    cpu: dict[str, float] = {}
    setups = {name: functools.partial(remove, outputs[name]) for name in CANDIDATES}
    best = best_of_each(candidate_calls(src, outputs, last, cpu), cfg.repeat, setups)
    sources = source_bytes(src)
    figures: dict[str, dict[str, Any]] = {}
    for name in CANDIDATES:
        secs = best[name]
        figures[name] = {
            "seconds": secs,
            "cpu_seconds": cpu[name],
            "data_mb_per_s": data["doc_bytes"] / MB / secs,
            "source_bytes": sources[name],
            "source_mb_per_s": sources[name] / MB / secs,
            "output_bytes": sum(files_bytes(outputs[name] + s) for s in ("", "-wal")),
        }
    for name in CANDIDATES:
        figures[name]["ratios"] = {
            ref: figures[name]["data_mb_per_s"] / figures[ref]["data_mb_per_s"]
            for ref in REFERENCES
        }
    errors = check_idle(src, outputs, last, data)
    # import's checkpoint, timed once (module docstring, 2): not in its figure
    with mvcc.open(outputs["import"], autovacuum=False) as db:
        began = time.perf_counter()
        db.checkpoint()
        import_checkpoint_s = time.perf_counter() - began
    for name in CANDIDATES:
        remove(outputs[name])
    return {"figures": figures, "import_checkpoint_s": import_checkpoint_s, "errors": errors}


def check_idle(
    src: Sources, outputs: Mapping[str, str], last: Mapping[str, Any], data: Mapping[str, Any]
) -> list[str]:
    """Every candidate's last output holds the data loaded (module docstring, Checks)."""
    want, docs = data["tables"], data["docs"]
    errors = []
    for name in ("backup", "restore"):
        tables = dict(last[name].tables)
        tables = {t: tables.get(t) for t in TABLES}
        if tables != want:
            errors.append(f"{name}: records per table {tables}, loaded {want}")
    if last["export"]["records"] != docs or last["export"]["tables"] != len(TABLES):
        errors.append(f"export: {last['export']}, loaded {docs} records in {len(TABLES)} tables")
    if last["import"]["records"] != docs:
        errors.append(f"import: {last['import']}, the export held {docs} records")
    con = sqlite3.connect(outputs["sqlite3_backup"])
    try:
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()
    if rows != want:
        errors.append(f"sqlite3 backup: rows per table {rows}, loaded {want}")
    copied, source = _listing(outputs["cp"]), _listing(src.mvcc_path)
    if copied != source:
        differ = sorted(set(copied.items()) ^ set(source.items()))
        errors.append(f"cp: the copy's files differ from the source's: {differ[:5]}")
    return errors


def _listing(path: str) -> dict[str, int]:
    return {
        os.path.relpath(os.path.join(root, n), path): os.path.getsize(os.path.join(root, n))
        for root, _dirs, names in os.walk(path)
        for n in names
    }


# -- phase 3: backups while writers commit -------------------------------------------------


class WriterReport(NamedTuple):
    worker: int
    pid: int
    ends_ns: list[int]  # monotonic end of each acknowledged commit (T5)
    errors: list[str]  # the first few
    error_count: int


def _writer(
    path: str,
    docs: int,
    doc_bytes: int,
    seed: int,
    stop: Any,
    index: int,
    barrier: Any,
    conn: Any,
) -> None:
    """Put random documents again, each in its own durable transaction, until `stop`."""
    rng = random.Random(seed * 1000 + index)
    ends: list[int] = []
    errors: list[str] = []
    error_count = 0
    with mvcc.open(path, lock_timeout=BUSY_TIMEOUT) as db:  # defaults: autovacuum on
        tables = {name: db.table(name, primary_key=PRIMARY_KEY) for name in TABLES}

        def put_one(i: int, n: int) -> None:
            tables[table_of(i)].put(i, make_record(i, doc_bytes, n))

        put: Callable[[int, int], None] = db.transactional(retries=RETRIES)(put_one)

        barrier.wait(CHILD_TIMEOUT)
        deadline = time.monotonic() + WRITER_DEADLINE
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                put(rng.randrange(docs), n)
            except Exception as exc:  # counted and reported: the run then fails
                error_count += 1
                if len(errors) < 5:
                    errors.append(repr(exc))
                continue
            ends.append(time.monotonic_ns())
    conn.send(WriterReport(index, os.getpid(), ends, errors, error_count))


def _window(fn: Callable[[], Any]) -> tuple[tuple[int, int], Any]:
    """((start, end) in monotonic ns, fn's result), the collector off (T2, T5)."""
    with gc_paused():
        start = time.monotonic_ns()
        result = fn()
        return (start, time.monotonic_ns()), result


def _rate(ends: Sequence[int], windows: Sequence[tuple[int, int]]) -> tuple[int, float, float]:
    """(commits ending inside the windows, the windows' seconds, commits/s)."""
    commits = sum(1 for t in ends for a, b in windows if a <= t < b)
    seconds = sum(b - a for a, b in windows) / 1e9
    return commits, seconds, commits / seconds if seconds > 0 else 0.0


def measure_under_writers(
    src: Sources, out_dir: str, cfg: Config, data: Mapping[str, Any]
) -> dict[str, Any]:
    """Phase 3: quiet windows and backups alternating while the writers commit."""
    pages_before = mvcc_store_bytes(src.mvcc_path)[0]
    stop = SPAWN.Event()
    barrier = SPAWN.Barrier(cfg.writers + 1)  # the writers and this process
    pipes = [SPAWN.Pipe() for _ in range(cfg.writers)]
    procs = [
        SPAWN.Process(
            target=_writer,
            args=(src.mvcc_path, cfg.docs, cfg.doc_bytes, cfg.seed, stop, i, barrier, child),
            name=f"writer-{i}",
        )
        for i, (_, child) in enumerate(pipes)
    ]
    quiet: list[tuple[int, int]] = []
    during: list[tuple[int, int]] = []
    results: list[Any] = []
    cpu: list[float] = []  # each backup's CPU seconds
    reports: list[WriterReport] = []
    last = os.path.join(out_dir, "under-writers")
    try:
        for p in procs:
            p.start()
        barrier.wait(CHILD_TIMEOUT)
        time.sleep(WARMUP)
        for _ in range(cfg.repeat):
            quiet.append(_window(lambda: time.sleep(cfg.quiet))[0])
            remove(last)  # the previous backup: outside every window
            began = time.process_time()
            window, result = _window(lambda: src.db.backup(last))
            cpu.append(time.process_time() - began)
            during.append(window)
            results.append(result)
        quiet.append(_window(lambda: time.sleep(cfg.quiet))[0])
        stop.set()
        for parent, _ in pipes:
            if not parent.poll(CHILD_TIMEOUT):
                raise RuntimeError(f"a writer sent nothing {CHILD_TIMEOUT:g} s after the stop")
            reports.append(parent.recv())
    finally:
        stop.set()
        for p in procs:
            p.join(CHILD_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join()
    ends = [t for rep in reports for t in rep.ends_ns]
    q_commits, q_secs, q_rate = _rate(ends, quiet)
    d_commits, d_secs, d_rate = _rate(ends, during)
    seconds = [(b - a) / 1e9 for a, b in during]
    errors = [
        f"writer {rep.worker}: {rep.error_count} errors, e.g. {rep.errors[:2]}"
        for rep in reports
        if rep.error_count
    ]
    errors += check_backup(last, results[-1], data)
    remove(last)
    return {
        "writers": cfg.writers,
        "backups": len(seconds),
        "backup_seconds": seconds,
        "backup_cpu_seconds": cpu,
        "best_s": min(seconds),
        "mean_s": statistics.fmean(seconds),
        "best_data_mb_per_s": data["doc_bytes"] / MB / min(seconds),
        "mean_data_mb_per_s": data["doc_bytes"] / MB / statistics.fmean(seconds),
        "backup_ts": [r.ts for r in results],
        "commits": len(ends),
        "quiet_commits": q_commits,
        "quiet_s": q_secs,
        "quiet_commits_per_s": q_rate,
        "during_commits": d_commits,
        "during_s": d_secs,
        "during_commits_per_s": d_rate,
        "commit_rate_ratio": d_rate / q_rate if q_rate else None,
        "pages_before_bytes": pages_before,
        "pages_after_bytes": mvcc_store_bytes(src.mvcc_path)[0],
        "errors": errors,
    }


def check_backup(path: str, result: Any, data: Mapping[str, Any]) -> list[str]:
    """The last backup taken under the writers: sound, and every document in it."""
    errors = []
    tables = {t: result.tables.get(t) for t in TABLES}
    if tables != data["tables"]:
        errors.append(f"backup under writers: records per table {tables}, loaded {data['tables']}")
    report = mvcc.check(path)
    if not report.ok:
        n, first = len(report.problems), report.problems[0]
        errors.append(f"backup under writers: mvcc.check found {n} problems, e.g. {first}")
    return errors


def wait_gone(pid: int | None, seconds: float) -> bool:
    """Whether process `pid` (None: nothing to wait for) is gone within `seconds`."""
    if pid is None:
        return True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return True  # exited, not reaped: its parent, a writer, is gone
        time.sleep(0.05)
    return False


# -- the whole run -------------------------------------------------------------------------


def run_all(directory: str, cfg: Config) -> dict[str, Any]:
    """Phases 1-3 of the module docstring."""
    mvcc_path, sqlite_path, data = load(directory, cfg)
    out_dir = os.path.join(directory, "out")
    errors: list[str] = []
    with mvcc.open(mvcc_path, autovacuum=False) as db:
        prepared = os.path.join(directory, "prepared")
        os.makedirs(prepared)
        export_file, backup_dir = (
            os.path.join(prepared, "export.jsonl"),
            os.path.join(prepared, "backup"),
        )
        db.export(export_file)
        db.backup(backup_dir)
        con = sqlite_connect(sqlite_path)
        try:
            src = Sources(db, mvcc_path, con, sqlite_path, export_file, backup_dir)
            idle = measure_idle(src, out_dir, cfg, data)
        finally:
            con.close()
        under = measure_under_writers(src, out_dir, cfg, data)
        vacuum_pid = db.stats()["vacuum"]["pid"]
    if not wait_gone(vacuum_pid, VACUUM_EXIT):
        errors.append(
            f"the vacuum process {vacuum_pid} still runs {VACUUM_EXIT:g} s after the last close"
        )
    errors = idle.pop("errors") + under.pop("errors") + errors
    return {"data": data, "idle": idle, "under_writers": under, "errors": errors}


# -- the report ----------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / MB:.1f}"


def idle_table(figures: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name in CANDIDATES:
        f = figures[name]
        rows.append(
            [
                LABELS[name],
                f"{f['seconds']:.3f}",
                f"{f['cpu_seconds']:.3f}",
                format_number(f["data_mb_per_s"]),
                _mb(f["source_bytes"]),
                format_number(f["source_mb_per_s"]),
                _mb(f["output_bytes"]),
                f"{f['ratios']['cp']:.3f}",
                f"{f['ratios']['sqlite3_backup']:.3f}",
            ]
        )
    headers = [
        "candidate",
        "s",
        "CPU s",
        "data MB/s",
        "source MB",
        "source MB/s",
        "output MB",
        "x cp",
        "x sqlite3",
    ]
    return format_table(headers, rows)


def print_report(header: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    cfg, data = header["config"], results["data"]
    print_header("backup", header)
    print(
        f"#   {data['docs']:,} documents (~{data['mean_doc_bytes']:.0f} B packed) in "
        f"{len(TABLES)} tables (users indexed on age); best of {cfg['repeat']}, round-robin; "
        f"{cfg['writers']} writers, quiet windows of {cfg['quiet']:g} s"
    )
    print(f"#   measured in {header['elapsed_s']:.1f} s")
    if cfg["quick"]:
        print("#   --quick: a few MB; a smoke run, too small to judge the figures")
    print()
    m, s = data["mvcc"], data["sqlite3"]
    pages, wal, whole = (_mb(m[k]) for k in ("page_file_bytes", "wal_bytes", "directory_bytes"))
    print(
        f"Data: documents {_mb(data['doc_bytes'])} MB; mvcc page file {pages} MB + WAL {wal} MB "
        f"(directory {whole} MB); sqlite3 file {_mb(s['file_bytes'])} MB"
    )
    print(
        f"Load (not compared): mvcc {m['load_s']:.1f} s + checkpoint {m['checkpoint_s']:.1f} s; "
        f"sqlite3 {s['load_s']:.1f} s (WAL checkpoint included)"
    )
    print()
    idle = results["idle"]
    print("Idle source, best of each (MB = 10^6 B; data MB/s: the documents' MB per second;")
    print("x cp, x sqlite3: data MB/s over theirs, > 1 faster):")
    print(idle_table(idle["figures"]))
    print(
        f"import's checkpoint afterwards (not in its figure): {idle['import_checkpoint_s']:.2f} s"
    )
    print()
    u = results["under_writers"]
    print(f"While {u['writers']} writer processes commit (Table.put of a random document each):")
    print(
        f"  backup: best {u['best_s']:.2f} s ({format_number(u['best_data_mb_per_s'])} data MB/s), "
        f"mean {u['mean_s']:.2f} s ({format_number(u['mean_data_mb_per_s'])} MB/s), "
        f"{u['backups']} backups; CPU {min(u['backup_cpu_seconds']):.2f} s at least"
    )
    ratio = u["commit_rate_ratio"]
    quiet = f"{u['quiet_commits']:,} in {u['quiet_s']:.1f} s"
    during = f"{u['during_commits']:,} in {u['during_s']:.1f} s"
    print(
        f"  writers: {format_number(u['quiet_commits_per_s'])} commits/s in quiet windows "
        f"({quiet}), {format_number(u['during_commits_per_s'])} during backups ({during}): "
        f"{format_number(ratio)} x"
    )
    before, after = _mb(u["pages_before_bytes"]), _mb(u["pages_after_bytes"])
    print(f"  page file {before} MB before the phase, {after} MB after")
    print()
    print(
        "Checks: "
        + ("all correct" if not results["errors"] else f"{len(results['errors'])} failed")
    )


def to_json(header: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    return {**header, **results}


# -- profiles ------------------------------------------------------------------------------


def profile(what: str, directory: str, cfg: Config, top: int) -> str:
    """One mvcc operation of phase 2 over the loaded data, under cProfile."""
    path = os.path.join(directory, "mvcc")
    load_mvcc(path, cfg)
    export_file = os.path.join(directory, "export.jsonl")
    backup_dir = os.path.join(directory, "backup")
    target = os.path.join(directory, "target")
    prof = cProfile.Profile()
    with mvcc.open(path, autovacuum=False) as db:
        if what == "import":
            db.export(export_file)
        if what == "restore":
            db.backup(backup_dir)
        calls: dict[str, Callable[[], Any]] = {
            "backup": lambda: db.backup(target),
            "export": lambda: db.export(export_file),
            "import": lambda: import_into(target, export_file),
            "restore": lambda: mvcc.restore(backup_dir, target),
        }
        with gc_paused():
            began = time.perf_counter()
            prof.runcall(calls[what])
            seconds = time.perf_counter() - began
    out = io.StringIO()
    print(f"{cfg.docs:,} documents; {what} took {seconds:.2f} s under the profiler", file=out)
    print_profile(pstats.Stats(prof, stream=out), top)
    return out.getvalue()


# -- the command ---------------------------------------------------------------------------


def cp_version() -> str:
    try:
        out = subprocess.run(["cp", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Benchmark backup and export throughput against cp and sqlite3 (issue 9).",
    )
    p.add_argument("--mb", type=float, help="MB of documents (default 100; 4 with --quick)")
    p.add_argument(
        "--doc-bytes", type=int, help=f"a document's packed size, about (default {DOC_BYTES:,})"
    )
    p.add_argument("--repeat", type=int, default=3, help="repetitions, best reported (default 3)")
    p.add_argument(
        "--quiet",
        type=float,
        help="seconds of each quiet window in phase 3 (default 3; 0.5 --quick)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed of the writers (default 1)")
    add_common_arguments(p, PROFILES)
    args = p.parse_args(argv)
    require_positive(p, args, "mb", "doc_bytes", "repeat", "quiet")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    measured = profile_or_measure(args, MODULE, "bench-backup-", cfg, run_all, profile)
    if measured is None:  # profiled
        return 0
    header, results = measured
    header["machine"]["cp"] = cp_version()
    print_report(header, results)
    return finish(args.json, to_json(header, results), [], errors=results["errors"])


if __name__ == "__main__":
    sys.exit(main())
