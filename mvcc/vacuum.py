"""The vacuum process: one per data directory, keeping its files bounded.

Responsibility: elect one process per directory that checkpoints the WAL,
prunes the versions no snapshot can see, frees their pages and index entries
and deletes covered WAL segments, in the background and without blocking a
commit (the work itself is mvcc/checkpoint.py's; this module decides when,
and who).  PostgreSQL's autovacuum launcher, without its shared memory: the
election is a file lock and the question "is anyone still here?" the reader
registry (locking/registry.py R7).

Invariants
(A1) At most one process serves a directory: the one holding `vacuum.lock`
     exclusive.  It holds it for its whole life; the kernel releases it when
     the process dies (kill -9 included), so another can be elected.
(A2) Election never waits for a live vacuum process: a candidate tries the
     lock for at most `ELECTION_PATIENCE` (long enough to outlast another
     process's probe of the lock, which holds it for microseconds) and
     otherwise exits.
(A3) The vacuum process exits when no other process has the directory open:
     every opener claims a registry slot at open, so an empty `others()` means
     no one is left to make work or read it.  (A parent that dies while other
     processes still have the directory open does not stop it: they would be
     left without one; a parent that was the last opener is covered by A3.)
(A4) A crash of the vacuum process at any point loses nothing: each pass is one
     checkpoint, whose invariants K1-K4 hold at every instant.
(A5) Openers (autovacuum=True) start a vacuum process when the directory has
     a pass's worth of work (`VACUUM_FRAMES` frames or `VACUUM_BYTES` of WAL
     past the checkpoint) and no process holds the vacuum lock; they look at
     open and, at most once per `PROBE_EVERY` seconds, after a commit.  So an
     idle or small directory costs no process, and a vacuum process killed
     under load is replaced within about a second.
(A6) A pass is sized to the table, not to a fixed number of frames (`Pace`).
     The page file is copy-on-write and a pass may reuse only the pages that
     earlier passes freed (checkpoint.py K4), so between passes the file holds
     its pages in use plus about the pages one pass rewrites.  A pass of k
     random updates over n leaves rewrites about 1 - e^(-k/n) of them, so after
     each pass the vacuum process compares the share of the pages in use the
     pass freed with `PASS_SHARE` and scales the work that makes the next pass
     due (frames and bytes alike, between `MIN_PACE` and 1 of `VACUUM_FRAMES`
     and `VACUUM_BYTES`) by the ratio of the two logarithms.  Measured on the
     vacuum benchmark (10,000 small documents, 680 pages): a 1,000-frame pass
     rewrote 77% of the pages, and the file sat at 1.8x its live pages; sized
     passes (~110 frames there) hold it at 1.3x (docs/benchmarks.md).
     While a long reader (a snapshot older than LONG_READER) holds the
     horizon back, nothing freed since it began can be reused and smaller
     passes only rewrite more pages per commit: the pace doubles each pass,
     up to 1, until the reader ends.

Algorithm (`serve`, the elected process)
    loop:
      every LIVENESS_EVERY s: if `registry.others()` is empty, exit (A3);
      read the shared state (no lock); a pass when the WAL past the checkpoint
      holds the pace's share (A6) of VACUUM_FRAMES frames or VACUUM_BYTES
      bytes, or PASS_EVERY s went by since the last one (the horizon may have
      moved: a reader ended);
      a pass = `checkpoint(db, wait=True, background=True)`: fold (up to the
      horizon when it lies among the new frames: checkpoint.py K7), prune the vacuum
      lists at the horizon, free pages, delete segments; then the pace learns
      from what the pass freed (A6) and the report file is written;
      nap NAP seconds (a daemon's poll, like autovacuum_naptime; no one waits
      on it: commits never wait for the vacuum process).

The report file (`vacuum`, JSON, replaced atomically) says who serves the
directory and what its passes did, for `db.stats()` in any process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from locking.statefile import State
from storage.crypto import PageCipher

from .checkpoint import CheckpointResult, checkpoint, wal_bytes_after

if TYPE_CHECKING:
    from .database import Database

__all__ = [
    "LIVENESS_EVERY",
    "MIN_PACE",
    "PASS_EVERY",
    "PASS_SHARE",
    "VACUUM_BYTES",
    "VACUUM_FRAMES",
    "Pace",
    "Report",
    "due",
    "ensure",
    "read_report",
    "serve",
    "spawn",
]

log = logging.getLogger("mvcc")

VACUUM_FRAMES: Final = 1_000  # a pass when this many frames wait past the checkpoint
VACUUM_BYTES: Final = 256 * 1024  # or this many WAL bytes (a quarter of a WAL segment)
PASS_EVERY: Final = 1.0  # seconds: a pass at least this often while there is any work
PASS_SHARE: Final = 0.25  # A6: the share of the pages in use a pass should rewrite
MIN_PACE: Final = 0.05  # A6: a pass is due at no less than this share of the above
LONG_READER: Final = 0.5  # A6: seconds a snapshot lives before it counts as a long reader
LIVENESS_EVERY: Final = 0.25  # seconds between "is anyone still here?" (A3)
NAP: Final = 0.005  # seconds between looks at the shared state (A6: a pass starts soon after due)
PROBE_EVERY: Final = 1.0  # an opener looks for a vacuum process at most this often (A5)
ELECTION_PATIENCE: Final = 0.2  # seconds (A2)
REPORT: Final = "vacuum"  # the report file in the data directory


@dataclass
class Report:
    """What the vacuum process serving a directory has done (the `vacuum` file)."""

    pid: int
    started: float  # wall-clock seconds
    passes: int = 0
    last_pass: float | None = None  # wall-clock seconds
    last_seconds: float = 0.0  # duration of the last pass
    checkpoints: int = 0  # passes that folded frames
    versions_pruned: int = 0
    pages_freed: int = 0
    pages_reused: int = 0
    segments_deleted: int = 0
    tables_dropped: int = 0
    horizon: list[int] = field(default_factory=lambda: [0, 0])
    pace: float = 1.0  # A6: the share of VACUUM_FRAMES / VACUUM_BYTES that makes a pass due

    def add(self, result: CheckpointResult) -> None:
        self.passes += 1
        self.last_pass = time.time()
        self.last_seconds = result.seconds
        self.checkpoints += result.frames > 0
        self.versions_pruned += result.pruned
        self.pages_freed += result.pages_freed
        self.pages_reused += result.pages_reused
        self.segments_deleted += result.segments_deleted
        self.tables_dropped += result.tables_dropped
        self.horizon = list(result.horizon)


def _report_path(db: Database) -> str:
    return os.path.join(db.path, REPORT)


def _write_report(db: Database, report: Report) -> None:
    path = _report_path(db)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(report), f)
    os.replace(tmp, path)  # readers see the old report or the new one, whole


def read_report(db: Database) -> Report | None:
    """The last report of the directory's vacuum process, if any was written."""
    try:
        with open(_report_path(db), encoding="utf-8") as f:
            return Report(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def due(state: State, segment_size: int, pace: float = 1.0) -> bool:
    """Whether the WAL past the checkpoint holds a pass's worth of work (A5), or
    `pace` of it (A6)."""
    return (
        state.commit_ts - state.checkpoint_ts >= VACUUM_FRAMES * pace
        or wal_bytes_after(state, segment_size) >= VACUUM_BYTES * pace
    )


class Pace:
    """A6: how much of a pass's worth of work (`due`) makes the next pass due."""

    def __init__(self) -> None:
        self.factor = 1.0

    def learn(self, frames: int, freed: int, in_use: int, *, pinned: bool = False) -> None:
        """A pass folded `frames` frames and freed `freed` of the `in_use` pages the
        page file then reached: move the factor halfway (in log terms) to the one
        at which the pass would have freed PASS_SHARE of them.  `pinned`: a long
        reader holds the horizon gen back, so no pass can reuse what the last
        ones freed: twice the factor a pass, up to whole passes, which rewrite
        fewer pages per commit."""
        if pinned:
            self.factor = min(1.0, 2 * self.factor)
            return
        if frames <= 0 or in_use <= 0:
            return  # a pass that only pruned says nothing about the frames
        share = min(freed / in_use, 0.95)
        want = frames / VACUUM_FRAMES
        if share > 0:
            want *= math.log(1 - PASS_SHARE) / math.log(1 - share)
        self.factor = min(1.0, max(MIN_PACE, math.sqrt(self.factor * want)))


def _pinned(db: Database) -> bool:
    """A6: whether a live reader's snapshot is older than LONG_READER seconds."""
    oldest = time.time_ns() - int(LONG_READER * 1e9)
    return any(r.since_ns < oldest for r in db.registry.readers())


# -- the elected process --------------------------------------------------------


def elect(db: Database) -> bool:
    """Take the vacuum lock for life, or say another process holds it (A1, A2)."""
    deadline = time.monotonic() + ELECTION_PATIENCE
    while not db.locks.vacuum.try_acquire():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)  # a probe holds the lock for microseconds
    return True


def serve(db: Database, *, passes: int | None = None) -> Report:
    """Serve the directory until no one else has it open (A3), or for `passes`
    passes (tests).  The caller has been elected (`elect`)."""
    report = Report(pid=os.getpid(), started=time.time())
    _write_report(db, report)
    log.info("vacuum: serving %s as pid %d", db.path, report.pid)
    pace = Pace()
    last_pass = last_look = time.monotonic()
    while passes is None or report.passes < passes:
        now = time.monotonic()
        if now - last_look >= LIVENESS_EVERY:
            last_look = now
            if not db.registry.others():
                log.info("vacuum: no process has %s open; exiting", db.path)
                break
        if (
            due(db.state.read(), db.wal.segment_size, pace.factor)
            or now - last_pass >= PASS_EVERY
            or passes is not None
        ):
            result = checkpoint(db, wait=True, background=True)  # checkpoint.py K5, K7
            assert result is not None  # wait=True
            last_pass = time.monotonic()
            pages = db.pages
            in_use = pages.meta.npages - pages.free_pages() - 2  # the two meta pages
            pace.learn(result.frames, result.pages_freed, in_use, pinned=_pinned(db))
            report.add(result)
            report.pace = pace.factor
            _write_report(db, report)
            continue
        time.sleep(NAP)
    return report


def run_daemon(path: str, cipher: PageCipher | None, passphrase: str | None = None) -> int:
    """`python -m mvcc vacuum --daemon`: open, stand for election, serve, exit 0.
    SIGTERM ends it between passes (a pass is never cut short by it: A4 makes
    that safe anyway)."""
    from .database import Database  # the CLI imports this module first

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    class _Daemon(Database):
        def _cipher(self, passphrase: str | bytes | None, key: bytes | None) -> PageCipher | None:
            return cipher if cipher is not None else super()._cipher(passphrase, key)

    with _Daemon(path, passphrase=passphrase, autovacuum=False) as db:
        if not elect(db):
            log.info("vacuum: another process serves %s", path)
            return 0
        serve(db)
    return 0


# -- openers --------------------------------------------------------------------


def spawn(db: Database) -> subprocess.Popen[bytes]:
    """Start `python -m mvcc vacuum --daemon --key-stdin DIR`, handing it the data
    key over a pipe (never argv or the environment: crypto.py I5)."""
    cmd = [sys.executable, "-m", "mvcc", "vacuum", "--daemon", "--key-stdin", db.path]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not killed with the opener's process group
        close_fds=True,
    )
    cipher = db._page_cipher
    key = b"" if cipher is None else cipher.data_key()
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(len(key).to_bytes(1, "big") + key)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    log.info("vacuum: started pid %d for %s", proc.pid, db.path)
    return proc


def served(db: Database) -> bool:
    """Whether a process holds the vacuum lock (a probe: held for microseconds)."""
    if db.locks.vacuum.try_acquire():
        db.locks.vacuum.release()
        return False
    return True


def ensure(db: Database, children: list[subprocess.Popen[bytes]]) -> bool:
    """A5: start a vacuum process unless one serves the directory (the caller saw work).
    `children` holds this process's earlier ones (reaped here).  Returns whether
    one serves (or was just started)."""
    for child in list(children):
        code = child.poll()
        if code is not None:
            children.remove(child)
            if code:
                log.warning("vacuum: process %d exited with status %d", child.pid, code)
    if served(db):
        return True
    if children:  # started a moment ago and not yet elected
        return True
    children.append(spawn(db))
    return True


def read_key(stream: Any) -> PageCipher | None:
    """The data key `spawn` wrote to the daemon's stdin."""
    head = stream.read(1)
    n = head[0] if head else 0
    key = stream.read(n) if n else b""
    if n and len(key) != n:
        raise SystemExit("vacuum: the data key was cut short on stdin")
    return PageCipher(key) if key else None
