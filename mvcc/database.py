"""The database of one process on a data directory: open, recovery, snapshots, commit.

Directory (docs/format.md): `pages` (storage.pagefile: the version trees of
the last checkpoint), `wal/` segments, `state` (locking.statefile),
`readers` (locking.registry), `*.lock` (locking.filelock), `ids` (mvcc.ids),
`key` when encrypted (storage.crypto).

Open
----
1. Take `recovery` exclusive; open the WAL and the page file (created here if
new, so two first openers never both write its first meta pages).  2. Try
`open` exclusive: success means no live process has the directory open, so
recover: find the WAL's valid end from the position the page file's newest
meta names, truncate a torn tail, sync what is there, and reset the shared
state (checkpoint = the page file's, commit ts = durable ts = the last frame,
epoch + 1).  3. Hold
`open` shared for life and release `recovery` (filelock.py: the lock
conversion is not atomic; `recovery` covers the window).  4. Tail the WAL from
the checkpoint position into this process's memtable.

Invariants
(D1) A snapshot is the durable ts read from the shared state at begin, pinned
     in the reader registry (register-then-confirm) until the transaction ends.
     It never includes a frame that is not durable (DESIGN section 1).
(D2) Commit (`_commit`) holds the commit lock from the catch-up to the append:
     no frame can land between the validation and this transaction's frame, so
     first-committer-wins holds at record granularity.
(D3) A commit returns only once its frame is durable (CommitLog C2); it then
     is visible to every transaction that begins afterwards, in any process.
     If that wait fails (LogFailed here, LockTimeout behind a stuck leader),
     the frame is already in the log and another process's sync may still make
     it durable: the error means "outcome unknown", as a connection lost
     during COMMIT does in PostgreSQL.
(D4) Every state change of the shared state file is made under the commit
     lock (statefile S2) or, at recovery, with `open` exclusive.
(D5) A transaction pinned at (S, G) reads the trees of a checkpoint
     generation >= G (never reused while G is pinned: checkpoint.py K4),
     whose ts F is its floor, and the memtable's versions in (F, S]
     (memtable.py M5: `_begin` catches up before it picks the view, and
     picks one whose ts is at or above any gap a skip left).  Trees pruned at
     a horizon <= S still hold the newest version <= S (versions.py V2).
(D6) Fork: a Database opened before `os.fork()` keeps working in the child.
     The child holds none of the parent's locks, its WAL object refuses work
     and its id blocks are the parent's, so on first use the child closes its
     copies and opens the directory afresh (`incarnation` + 1): it never
     unlocks, writes through or hands out ids from what is the parent's.
     Transactions begun before the fork are the parent's; in the child they
     raise ClosedError.
(D7) A commit that loses a conflict raises only once the commits it lost to are
     durable: the retry's snapshot (the durable ts, D1) then includes them,
     instead of losing to them again while their group commit is in flight.
(D8) Indexes (`_check_indexes`): inside the same validation (so under the
     commit lock when another commit landed since the early one), every
     written document is checked against the table's indexes as the *newest*
     catalog row lists them, not the snapshot's: no NaN in an indexed field,
     and a unique value held by no other record's newest version nor by
     another write of the transaction.  Two processes racing to commit one
     unique value are serialised by the commit lock: the second sees the
     first's version and raises UniqueViolation.  A transaction that creates a
     unique index checks the whole table's newest versions the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import logging
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from locking import forksafe
from locking.errors import LockWaitTimeout, StateError
from locking.filelock import LockSet
from locking.registry import Registry
from locking.statefile import State, StateFile
from storage.btree import max_key_size
from storage.codec import pack_doc, unpack_doc
from storage.crypto import (
    DEFAULT_SCRYPT_LOG2N,
    KDF_SCRYPT,
    PageCipher,
    create_key_file,
    load_key_file,
    read_key_file_info,
    rewrap_key_file,
)
from storage.errors import CorruptPage, StorageError
from storage.format import DEFAULT_PAGE_SIZE
from storage.keys import decode_key, encode_key, prefix_end
from storage.pagefile import PageFile, check_page_size
from storage.wal import WAL, Durability, LogPosition

from . import dump, faults
from .checkpoint import CheckpointResult, meta_position
from .checkpoint import backlogged as checkpoint_backlogged
from .checkpoint import checkpoint as run_checkpoint
from .checkpoint import due as checkpoint_due
from .checkpoint import vacuum as run_vacuum
from .commitlog import (
    CommitLog,
    checkpoint_fields,
    checkpoint_start,
    durable_end,
    durable_fields,
    end_fields,
    wal_end,
)
from .errors import (
    ClosedError,
    ConflictError,
    InvalidKey,
    UniqueViolation,
    ValidationError,
    translate,
)
from .ids import IdAllocator
from .index import (
    Hit,
    IndexDef,
    check_document,
    entry_key,
    entry_values,
    index_fields,
    merge_entries,
    split_entry,
    table_indexes,
    unique_prefix,
)
from .memtable import CATALOG, MISSING, Memtable, encode_frame
from .schema import Schema
from .stats import collect as collect_stats
from .table import Table
from .transaction import ISOLATIONS, Transaction
from .vacuum import PROBE_EVERY
from .vacuum import due as vacuum_due
from .vacuum import ensure as ensure_vacuum
from .versions import PageView, decode_chain, head_ts, visible

if TYPE_CHECKING:
    from .backup import BackupResult, Progress

__all__ = ["DURABILITIES", "Database"]

log = logging.getLogger("mvcc")

DURABILITIES = ("full", "normal", "off")
COMPRESSIONS = (None, "zlib")
KEY_FILE = "key"
SLOW_WAIT = 0.1  # a commit slower than this, or a lock wait, is logged (a warning)
RETRY_BASE = 0.001  # transactional(): first backoff bound, seconds; doubles per retry
RETRY_CAP = 0.1  # and never exceeds this
R = TypeVar("R")
PAGES = "pages"
# Small enough that the segments a checkpoint covers are deleted soon (bounded
# space: vacuum.py); module-level so tests can make segments smaller still.
WAL_SEGMENT_SIZE = 1024 * 1024


def _check_options(
    durability: object,
    autovacuum: object,
    lock_timeout: object,
    page_size: object,
    compression: object,
) -> None:
    """Every open option, checked before any file is touched; the error names it."""
    if durability not in DURABILITIES:
        raise ValidationError(
            f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}",
            field="durability",
        )
    if type(autovacuum) is not bool:
        raise ValidationError(
            f"autovacuum must be True or False, not {autovacuum!r}", field="autovacuum"
        )
    if lock_timeout is not None and not (
        type(lock_timeout) in (int, float) and lock_timeout > 0  # type: ignore[operator]
    ):
        raise ValidationError(
            f"lock_timeout must be a positive number of seconds or None, not {lock_timeout!r}",
            field="lock_timeout",
        )
    try:
        check_page_size(page_size)  # type: ignore[arg-type]
    except Exception as exc:
        raise ValidationError(str(exc), field="page_size") from None
    if compression not in COMPRESSIONS:
        raise ValidationError(
            f"compression must be None or 'zlib', not {compression!r}", field="compression"
        )


class Block:
    """The context manager `db.transaction()` returns (a class, not a generator:
    an empty readonly transaction is a hot path, and this halves its overhead)."""

    __slots__ = ("_depth", "_outer", "_token", "db", "isolation", "readonly", "tx")

    def __init__(self, db: Database, isolation: str, readonly: bool) -> None:
        self.db = db
        self.isolation = isolation
        self.readonly = readonly
        self._outer: Transaction | None = None

    def __enter__(self) -> Transaction:
        db = self.db
        db._check_open()
        outer = db.current()
        if outer is not None:  # a savepoint of the context's transaction
            self._outer = outer
            self._depth = outer.savepoint()
            self.tx = outer
            return outer
        self._outer = None
        with translate():
            tx = Transaction(db, isolation=self.isolation, readonly=self.readonly)
        self.tx = tx
        self._token = db._current.set(tx)
        return tx

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        tx = self.tx
        if self._outer is not None:
            if tx.active:
                if exc is None:
                    tx.release_savepoint(self._depth)
                else:
                    tx.rollback_to(self._depth)
            return
        try:
            if exc is not None:
                tx.rollback()
            elif tx.active:  # ended inside the block (tx.commit() / tx.rollback()): done
                with translate():
                    tx.commit()
        finally:
            self.db._current.reset(self._token)


class Database:
    """An open data directory; `mvcc.open(...)` makes one."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        passphrase: str | bytes | None = None,
        key: bytes | None = None,
        durability: str = "full",
        autovacuum: bool = True,
        lock_timeout: float | None = 10.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        compression: str | None = None,
    ) -> None:
        _check_options(durability, autovacuum, lock_timeout, page_size, compression)
        self.path = os.fspath(path)
        self.durability = cast(Durability, durability)  # checked above
        self.autovacuum = autovacuum
        self.lock_timeout = lock_timeout
        self.compress = compression == "zlib"
        self._closed = True
        self._latch = threading.RLock()  # the memtable and local state of this process
        self._index_cache: dict[int, tuple[tuple[int, int], tuple[IndexDef, ...]]] = {}
        self._names: dict[int, str] = {CATALOG: "the table catalog"}  # table id -> name
        self._current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            f"mvcc-tx-{id(self)}", default=None
        )
        self.incarnation = 0  # bumped when a forked child reopens (D6)
        self._forked = False
        self._page_size = page_size
        self._page_cipher: PageCipher | None = None
        self._vacuum_children: list[subprocess.Popen[bytes]] = []  # started here (vacuum A5)
        self._vacuum_look = 0.0  # monotonic time of the next look for a vacuum process
        self._vacuum_served = False  # what the last look saw
        self.faults = faults.from_environment()  # all off unless testing (faults.py)
        self._open(lambda: self._cipher(passphrase, key))
        forksafe.register(self)
        self._look_for_vacuum(self.state.read())

    def _open(self, cipher_source: Callable[[], PageCipher | None]) -> None:
        """Open every file and lock of the directory (Open, steps 1-4)."""
        lock_timeout, durability, page_size = self.lock_timeout, self.durability, self._page_size
        with contextlib.ExitStack() as stack, translate():
            os.makedirs(self.path, exist_ok=True)
            self.locks = stack.enter_context(LockSet(self.path, timeout=lock_timeout))
            self.locks.recovery.acquire(lock_timeout)
            try:
                cipher = self._page_cipher = cipher_source()
                self.wal = stack.enter_context(
                    WAL(
                        os.path.join(self.path, "wal"),
                        cipher=cipher,
                        durability=self.durability,
                        segment_size=WAL_SEGMENT_SIZE,
                    )
                )
                # Created (if new) under `recovery`: two first openers must not
                # both write the initial meta pages.
                self.pages = stack.enter_context(
                    contextlib.closing(
                        PageFile.open(
                            os.path.join(self.path, PAGES),
                            cipher=cipher,
                            page_size=page_size,
                            sync=durability != "off",
                        )
                    )
                )
                self.max_key = max_key_size(self.pages.page_size)  # keys and index entries
                state_path = os.path.join(self.path, "state")
                if self.locks.open.try_acquire():
                    self.state = stack.enter_context(self._open_state_alone(state_path))
                    self._recover()
                    self.locks.open.release()
                else:  # a live process keeps the state file valid
                    self.state = stack.enter_context(StateFile(state_path))
                self.locks.open.acquire(lock_timeout, shared=True)
            finally:
                self.locks.recovery.release()
            self.registry = stack.enter_context(
                contextlib.closing(Registry(os.path.join(self.path, "readers")))
            )
            self.registry.claim()  # at open: the vacuum process counts openers (R7)
            self.log = CommitLog(
                self.wal,
                self.state,
                self.locks.commit,
                self.locks.sync,
                (self.locks.gate0, self.locks.gate1),
                timeout=lock_timeout,
            )
            self.ids = IdAllocator(
                os.path.join(self.path, "ids"),
                self.locks.sequence,
                timeout=lock_timeout,
                sync=durability != "off",
            )
            state = self.state.read()
            self.memtable = Memtable(checkpoint_start(state))
            self._view = PageView(None, -1, self.pages.name)
            self._floors: dict[int, int] = {}  # floor -> active transactions here
            with self._latch:
                self._catch_up(state, durable_end(state))
            self._stack = stack.pop_all()
        self._pid = os.getpid()
        self._closed = False

    def _after_fork_in_child(self) -> None:
        """In a forked child (locking/forksafe.py): only note it.  The objects this
        one uses re-arm in their own hooks, in no set order, so the reopen waits
        for this database's next use (`_check_open`, D6)."""
        self._forked = True
        self._latch = threading.RLock()  # another thread may have held it at the fork

    def _reopen_in_child(self) -> None:
        """D6: drop the parent's files (their descriptions are the parent's) and open
        the directory again as a process of its own."""
        self._forked = False
        with contextlib.suppress(Exception):
            self._stack.close()
        self._closed = True
        self._vacuum_children = []  # the parent's, not this process's to reap
        self.incarnation += 1
        self._current = contextvars.ContextVar(f"mvcc-tx-{id(self)}-{os.getpid()}", default=None)
        self._open(lambda: self._page_cipher)

    # -- open, recovery, close -------------------------------------------------

    def _cipher(self, passphrase: str | bytes | None, key: bytes | None) -> PageCipher | None:
        path = os.path.join(self.path, KEY_FILE)
        if os.path.exists(path):
            return PageCipher(load_key_file(path, passphrase=passphrase, key=key))
        if passphrase is None and key is None:
            return None
        if os.path.exists(os.path.join(self.path, "wal")):
            raise InvalidKey(f"{self.path} is not encrypted: open it without passphrase or key")
        return PageCipher(create_key_file(path, passphrase=passphrase, key=key))

    @staticmethod
    def _open_state_alone(path: str) -> StateFile:
        """The state file, rebuilt if damaged: it is never synced, so a power cut may
        tear it, and with no other process here nothing else depends on it."""
        try:
            return StateFile(path)
        except StateError as exc:
            log.warning("recovery: the state file is damaged (%s); rebuilding it", exc)
            return StateFile.rebuild(path, State())

    def _recover(self) -> None:
        """No other process has the directory open: rebuild the shared state from the
        page file's checkpoint and the WAL after it (Open, step 2)."""
        meta = self.pages.read_meta()
        start = meta_position(meta, self.wal)
        state = self.state.read()._replace(checkpoint_gen=meta.gen, **checkpoint_fields(start))
        reader = self.wal.read(start)
        frames = sum(1 for _ in reader)
        end = reader.position
        stopped = reader.stopped
        if stopped is not None and not stopped.clean:
            log.warning(
                "recovery: the WAL ends at ts %d (%s); truncating", end.next_ts - 1, stopped
            )
            self.wal.truncate(end)
        self.wal.sync(end, force=True)  # frames a crashed process never synced
        self.state.reset(
            state._replace(**end_fields(end), **durable_fields(end), epoch=state.epoch + 1)
        )
        log.info(
            "recovery: %d frames after the checkpoint at ts %d, last ts %d",
            frames,
            start.next_ts - 1,
            end.next_ts - 1,
        )

    def _check_open(self) -> None:
        if self._forked and not self._closed:
            self._reopen_in_child()
        if self._closed:
            raise ClosedError(f"the database {self.path} is closed")

    def close(self) -> None:
        """Close the files and release the locks.  A transaction still open here can
        no longer read or commit: its next call raises ClosedError."""
        if self._closed:
            return
        self._closed = True
        self._stack.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------

    def transaction(self, *, isolation: str = "snapshot", readonly: bool = False) -> Block:
        """`with db.transaction():` — commit on exit, roll back on an exception.

        Inside an active transaction of this context, a nested block is a savepoint.
        """
        if isolation not in ISOLATIONS:
            raise ValidationError(
                f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}",
                field="isolation",
            )
        return Block(self, isolation, readonly)

    def transactional(
        self,
        fn: Callable[..., R] | None = None,
        *,
        retries: int = 10,
        isolation: str = "snapshot",
        readonly: bool = False,
    ) -> Any:
        """Decorator: run the function in a transaction, again on ConflictError.

        `@db.transactional` or `@db.transactional(retries=N)`.  Only
        ConflictError is retried (up to `retries` more runs, with full-jitter
        exponential backoff from RETRY_BASE up to RETRY_CAP seconds); any other
        error, or the last conflict, propagates.  Returns the function's value.
        Called inside an active transaction it joins it (as a savepoint) and
        does not retry: only the outer transaction can be re-run.
        """
        if type(retries) is not int or retries < 0:
            raise ValidationError(
                f"retries must be a non-negative int, not {retries!r}", field="retries"
            )

        def decorate(func: Callable[..., R]) -> Callable[..., R]:
            @functools.wraps(func)
            def run(*args: Any, **kwargs: Any) -> R:
                if self.current() is not None:
                    with self.transaction(isolation=isolation, readonly=readonly):
                        return func(*args, **kwargs)
                for attempt in range(retries + 1):
                    try:
                        with self.transaction(isolation=isolation, readonly=readonly):
                            return func(*args, **kwargs)
                    except ConflictError as exc:
                        if attempt == retries:
                            raise
                        delay = random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**attempt))
                        log.debug(
                            "retry %d of %s in %.1f ms: %s",
                            attempt + 1,
                            func.__qualname__,
                            delay * 1e3,
                            exc,
                        )
                        time.sleep(delay)
                raise AssertionError("unreachable: the loop returns or raises")

            return run

        return decorate if fn is None else decorate(fn)

    def current(self) -> Transaction | None:
        """The active transaction of this context (thread, task), if any."""
        if self._forked:
            self._check_open()
        tx = self._current.get()
        return tx if tx is not None and tx.active else None

    # -- the engine: called by Transaction ----------------------------------------

    def _begin(self) -> tuple[int, tuple[int, int], PageView]:
        """Pin a snapshot (D1); bring the memtable up to it; pick the page view (D5)."""
        self._check_open()
        seen: list[State] = []

        def read() -> tuple[int, int]:
            seen.append(self.state.read())
            return seen[-1].durable_ts, seen[-1].checkpoint_gen

        pin = self.registry.pin(read, self.lock_timeout)  # R8: ends in time
        state = seen[-1]  # the state the pinned pair came from
        memtable = self.memtable
        try:
            with self._latch:
                if state.durable_ts >= memtable.position.next_ts:  # frames to apply
                    self._catch_up(state, durable_end(state))
                view = self._view
                if view.gen < state.checkpoint_gen or view.ts < memtable.gap_ts:
                    view = self._refresh_view()
                floors = self._floors
                floors[view.ts] = floors.get(view.ts, 0) + 1
                if view.ts > memtable.trimmed_ts and min(floors) > memtable.trimmed_ts:
                    memtable.trim(min(floors))
        except BaseException:
            self.registry.unpin(pin)
            raise
        return pin[0], pin, view

    def _end(self, pin: tuple[int, int], view: PageView) -> None:
        with self._latch:
            floors = self._floors
            left = floors[view.ts] - 1
            if left:
                floors[view.ts] = left
            else:
                del floors[view.ts]
        if not self._closed:
            self.registry.unpin(pin)

    def _catch_up(self, state: State, upto: LogPosition) -> None:
        """Apply the frames before `upto` (latch held).  Frames a checkpoint has
        folded and perhaps deleted are skipped: the page file has them (M5)."""
        memtable = self.memtable
        memtable.skip_to(checkpoint_start(state))
        try:
            memtable.catch_up(self.wal, upto)
        except CorruptPage:
            # A checkpoint may have deleted the segment being read since `state`.
            fresh = checkpoint_start(self.state.read())
            if fresh.next_ts <= memtable.position.next_ts:
                raise
            memtable.skip_to(fresh)
            memtable.catch_up(self.wal, upto)

    def _refresh_view(self) -> PageView:
        """The newest checkpoint's trees (latch held).  Any generation at or above
        a transaction's pinned one may serve it (D5)."""
        meta = self.pages.read_meta()
        self._view = PageView(
            self.pages.snapshot(meta), meta_position(meta, self.wal).next_ts - 1, self.pages.name
        )
        return self._view

    def _read(self, tid: int, key: bytes, snapshot: int, view: PageView) -> bytes | None:
        value = self.memtable.version(tid, key, snapshot, view.ts)
        if value is MISSING:
            return view.read(tid, key, snapshot)
        return value

    def _scan(
        self, tid: int, lo: bytes | None, hi: bytes | None, snapshot: int, view: PageView
    ) -> Iterator[tuple[bytes, bytes]]:
        """Live records in [lo, hi) at `snapshot`: the memtable's keys merged with the
        page tree's, the memtable deciding where it has a version in (floor, S]."""
        memtable, floor = self.memtable, view.ts
        with self._latch:  # SortedDict is not safe to iterate while another thread applies
            mine = list(memtable.keys(tid, lo, hi))
        i, n = 0, len(mine)
        for key, stored in view.items(tid, lo, hi):
            while i < n and mine[i] < key:
                value = memtable.version(tid, mine[i], snapshot, floor)
                if value is not MISSING and value is not None:
                    yield mine[i], value
                i += 1
            if i < n and mine[i] == key:
                i += 1
                value = memtable.version(tid, key, snapshot, floor)
                if value is not MISSING:
                    if value is not None:
                        yield key, value
                    continue
            value = visible(decode_chain(stored, view.where), snapshot)
            if value is not None:
                yield key, value
        for key in mine[i:]:
            value = memtable.version(tid, key, snapshot, floor)
            if value is not MISSING and value is not None:
                yield key, value

    def _count(self, tid: int, snapshot: int, view: PageView) -> int:
        """How many records `snapshot` sees in the table, none of them decoded: the
        view's head count (versions.py V8) corrected for each memtable key with a
        version in (floor, S], by what that version and the view's head say of
        the record.  Needs view.ts <= snapshot (the heads are what S sees)."""
        memtable, floor = self.memtable, view.ts
        with self._latch:  # as in _scan
            mine = list(memtable.keys(tid))
        total = view.live(tid)
        for key in mine:
            value = memtable.version(tid, key, snapshot, floor)
            if value is not MISSING:
                total += (value is not None) - (view.read(tid, key, floor) is not None)
        return total

    # -- indexes (mvcc/index.py) ---------------------------------------------------

    def _index_entries(
        self,
        tid: int,
        index: IndexDef,
        lo: bytes | None,
        hi: bytes | None,
        view: PageView,
        reverse: bool = False,
    ) -> Iterator[Hit]:
        """Entries of `index` in [lo, hi) of committed versions, in order: the
        memtable part (M6) merged with the page view's (V4, V5).  A superset of
        what any snapshot reading through `view` sees; the caller re-checks
        each hit that covers no document."""
        with self._latch:  # a SortedDict is not safe to iterate while another thread applies
            part = self.memtable.index_part(tid, index)
            mine = [
                (e, part[e]) for e in part.irange(lo, hi, inclusive=(True, False), reverse=reverse)
            ]
        theirs = view.index_entries(tid, index, lo, hi, reverse=reverse)
        return merge_entries(mine, theirs, reverse=reverse) if mine else theirs

    def _latest_view(self, state: State) -> PageView:
        """A view that, with the memtable caught up to `state`, reads the newest
        committed versions (M5; latch held)."""
        view, memtable = self._view, self.memtable
        if view.gen < state.checkpoint_gen or view.ts < max(memtable.gap_ts, memtable.trimmed_ts):
            view = self._refresh_view()
        return view

    def _latest_indexes(self, tid: int, state: State, view: PageView) -> tuple[IndexDef, ...]:
        """The indexes of table `tid` as the newest committed catalog row has them;
        cached until the row has a newer version (or the view a newer generation)."""
        name = self._names.get(tid)
        if name is None:
            return ()
        key = encode_key((name,))
        mark = (self.memtable.newest_ts(CATALOG, key), view.gen)
        cached = self._index_cache.get(tid)
        if cached is not None and cached[0] == mark:
            return cached[1]
        indexes = table_indexes(self._read(CATALOG, key, state.commit_ts, view), tid)
        self._index_cache[tid] = (mark, indexes)
        return indexes

    def _check_indexes(self, tx: Transaction, state: State) -> None:
        """Under the newest catalog: no NaN in an indexed field (N2), and no value of
        a unique index taken by another record's newest version or by another
        write of `tx` (N3).  Latch held; the memtable is caught up to `state`."""
        view = self._latest_view(state)
        by_table: dict[int, list[tuple[bytes, bytes]]] = {}
        for (tid, key), value in tx.writes.items():
            if tid != CATALOG and value is not None:
                by_table.setdefault(tid, []).append((key, value))
        for tid, tid_writes in by_table.items():
            indexes = self._tx_indexes(tx, tid, state, view)
            if not indexes:
                continue
            uniques = [index for index in indexes if index.unique]
            taken: dict[tuple[int, bytes], bytes] = {}  # (index id, prefix) -> key
            for key, value in tid_writes:
                doc = unpack_doc(value)
                check_document(doc, indexes, key, self.max_key)
                for index in uniques:
                    prefix = unique_prefix(doc, index)
                    if prefix is None:
                        continue
                    other: bytes | None = taken.setdefault((index.id, prefix), key)
                    if other == key:
                        other = self._holder(tx, tid, index, prefix, key, state, view)
                    if other is not None:
                        raise self._unique_violation(tid, index, doc)
        for tid, index in tx.unique_builds:
            if index in self._tx_indexes(tx, tid, state, view):  # not dropped again since
                self._check_unique_build(tx, tid, index, state, view)

    def _tx_indexes(
        self, tx: Transaction, tid: int, state: State, view: PageView
    ) -> tuple[IndexDef, ...]:
        """The indexes `tx` commits table `tid` with: its own write of the catalog
        row if it made one (a concurrent change of that row conflicts on it),
        else the newest committed row's (D8)."""
        name = self._names.get(tid)
        row = MISSING if name is None else tx.writes.get((CATALOG, encode_key((name,))), MISSING)
        if row is MISSING:
            return self._latest_indexes(tid, state, view)
        return table_indexes(row, tid)

    def _holder(
        self,
        tx: Transaction,
        tid: int,
        index: IndexDef,
        prefix: bytes,
        key: bytes,
        state: State,
        view: PageView,
    ) -> bytes | None:
        """Another record whose newest version (or `tx`'s write of it) holds the
        unique value `prefix` in `index`, or None."""
        for entry, _doc in self._index_entries(tid, index, prefix, prefix_end(prefix), view):
            other = split_entry(entry)[1]
            if other == key:
                continue
            value = tx.writes.get((tid, other), MISSING)
            if value is MISSING:
                value = self._read(tid, other, state.commit_ts, view)
            if value is not None and unique_prefix(unpack_doc(value), index) == prefix:
                return other
        return None

    def _check_unique_build(
        self, tx: Transaction, tid: int, index: IndexDef, state: State, view: PageView
    ) -> None:
        """A unique index `tx` creates holds for the newest versions of the table."""
        seen: dict[bytes, bytes] = {}
        mine = {key: value for (t, key), value in tx.writes.items() if t == tid}
        for key, stored in self._scan(tid, None, None, state.commit_ts, view):
            newest = mine.pop(key, stored)
            if newest is not None:
                self._claim(seen, tid, index, unpack_doc(newest), key)
        for key, written in mine.items():
            if written is not None:
                self._claim(seen, tid, index, unpack_doc(written), key)

    def _claim(
        self, seen: dict[bytes, bytes], tid: int, index: IndexDef, doc: dict[str, Any], key: bytes
    ) -> None:
        check_document(doc, (index,), key, self.max_key)
        prefix = unique_prefix(doc, index)
        if prefix is not None and seen.setdefault(prefix, key) != key:
            raise self._unique_violation(tid, index, doc)

    def _unique_violation(self, tid: int, index: IndexDef, doc: dict[str, Any]) -> UniqueViolation:
        table = self._names.get(tid, f"table id {tid}")
        values = entry_values(doc, index)
        value = values[0] if values is not None and len(values) == 1 else values
        return UniqueViolation(table=table, field=index.name, value=value)

    def _phantom(self, tx: Transaction) -> None:
        """Serializable (T3): a version committed after the snapshot with an entry
        in an index range `tx` read aborts it (a phantom).  Latch held."""
        memtable, snapshot = self.memtable, tx.snapshot
        view = None
        if snapshot < max(memtable.gap_ts, memtable.trimmed_ts):
            view = self._refresh_view()
        for tid, index, lo, hi in tx.index_ranges:
            newer: Iterator[tuple[bytes, bytes | None]] = memtable.versions_after(tid, snapshot)
            if view is not None:
                newer = itertools.chain(newer, _chain_versions_after(view, tid, snapshot))
            for key, value in newer:
                if value is None:
                    continue
                entry = entry_key(unpack_doc(value), index, decode_key(key)[0])
                if entry is not None and (lo is None or entry >= lo) and (hi is None or entry < hi):
                    how = f"did not see in its range of the index on {index.name} (a phantom)"
                    raise self._conflict(tid, key, how)

    def _commit(self, tx: Transaction) -> int:
        """Validate and append `tx`'s write set; return its commit ts (D2, D3)."""
        commit_lock = self.locks.commit
        with translate():
            began = time.perf_counter()
            # Outside the commit lock, which every committer of the directory
            # queues on: encode the frame, apply the frames appended so far, and
            # fail early on a conflict they already show.  Under the lock only
            # the frames appended meanwhile remain (D2 still holds: the final
            # validation is under the lock).
            writes = [(tid, key, value) for (tid, key), value in tx.writes.items()]
            payload = encode_frame(writes)
            state = self.state.read()
            try:
                with self._latch:
                    self._catch_up(state, wal_end(state))
                    self._validate(tx, state)
                commit_lock.acquire(self.lock_timeout)
                waited = time.perf_counter() - began
                if waited >= SLOW_WAIT:
                    log.warning("waited %.0f ms for the commit lock", waited * 1e3)
                try:
                    early, state = state, self.state.read()
                    with self._latch:
                        if state.commit_ts != early.commit_ts:
                            self._catch_up(state, wal_end(state))
                            self._validate(tx, state)
                        state = self.log.append(state, [payload])
                        self.memtable.apply(state.commit_ts, writes)
                        self.memtable.position = wal_end(state)
                finally:
                    commit_lock.release()
            except ConflictError:
                self._await_durable(state.commit_ts)  # D7
                raise
            self.log.wait_durable(state.commit_ts)
            waited = time.perf_counter() - began
            if waited >= SLOW_WAIT:
                log.warning("commit of ts %d took %.0f ms", state.commit_ts, waited * 1e3)
        return state.commit_ts

    def _await_durable(self, ts: int) -> None:
        """D7: the commits a conflict lost to (all at or below `ts`) are durable
        before the ConflictError leaves.  Only the retry gains by the wait, so a
        wait that fails leaves the conflict as the answer."""
        if ts > self.state.read().durable_ts:
            try:
                self.log.wait_durable(ts)
            except (LockWaitTimeout, StorageError) as exc:
                log.debug("after a conflict, ts %d did not become durable: %s", ts, exc)

    def _validate(self, tx: Transaction, state: State) -> None:
        """First committer wins; under serializable, reads and ranges too (T3);
        then the indexes' rules under the newest catalog (`_check_indexes`).

        The memtable holds every version newer than the snapshot unless a skip
        or a trim passed it (M5); then the newest checkpoint's trees are asked
        too (the heads of their chains are never pruned)."""
        memtable, snapshot = self.memtable, tx.snapshot
        view = None
        if snapshot < max(memtable.gap_ts, memtable.trimmed_ts):
            view = self._refresh_view()

        def newest(tid: int, key: bytes) -> int:
            ts = memtable.newest_ts(tid, key)
            return ts if view is None or ts > snapshot else view.newest_ts(tid, key)

        faulty = self.faults
        for tid, key in () if faulty.skip_write_conflict else tx.writes:  # F1
            if newest(tid, key) > snapshot:
                raise self._conflict(tid, key, "written")
        if tx.serializable and not faulty.skip_read_validation:  # F2
            for tid, key in tx.reads:
                if newest(tid, key) > snapshot:
                    raise self._conflict(tid, key, "read")
            if tx.index_ranges:
                self._phantom(tx)
            for tid, lo, hi in tx.ranges:
                changed = memtable.changed_after(tid, snapshot, lo, hi)
                if changed is None and view is not None:
                    changed = next(
                        (
                            k
                            for k, c in view.items(tid, lo, hi)
                            if head_ts(c, view.where) > snapshot
                        ),
                        None,
                    )
                if changed is not None:
                    raise self._conflict(tid, changed, "scanned")
        self._check_indexes(tx, state)

    # -- checkpoints --------------------------------------------------------------

    def checkpoint(self) -> CheckpointResult:
        """Fold the durable WAL into the page file now (mvcc/checkpoint.py); waits
        for a checkpoint another process is running, then runs its own."""
        self._check_open()
        with translate():
            result = run_checkpoint(self, wait=True)
        assert result is not None  # wait=True
        return result

    def _publish_checkpoint(self, gen: int, start: LogPosition) -> None:
        """Publish a checkpoint in the shared state (checkpoint lock held; D4)."""
        with self.locks.commit.hold(self.lock_timeout):
            self.state.write(self.state.read(), checkpoint_gen=gen, **checkpoint_fields(start))

    def vacuum(self) -> CheckpointResult:
        """Vacuum now, in this process: what the vacuum process's passes do
        (fold the WAL, prune every version no snapshot can see with its index
        entries, free pages, delete covered WAL segments), and up to three
        passes so that the page file ends as small as the readers allow: live
        pages move off its end and the end is cut (checkpoint.py K10)."""
        self._check_open()
        with translate():
            return run_vacuum(self)  # passes until the file is small (checkpoint.py K10)

    def stats(self) -> dict[str, Any]:
        """Sizes, counts and who pins what: mvcc/stats.py."""
        self._check_open()
        with translate():
            return collect_stats(self)

    def backup(
        self, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> BackupResult:
        """Write to `dest` (a missing or empty directory) a compact copy of one
        committed snapshot, while other processes go on writing: mvcc/backup.py.
        `progress(done, total)` is called now and then; `mvcc.restore` puts it back."""
        from .backup import backup  # not at the top: backup.py imports this module

        self._check_open()
        with translate():
            return backup(self, dest, progress=progress)

    def export(
        self, path: str | os.PathLike[str], *, progress: dump.Progress | None = None
    ) -> dict[str, int]:
        """Write every table of one snapshot to `path` as JSON Lines: each table's
        definition, then its records (mvcc/dump.py).  `progress(done, total)`
        is called now and then.  Returns the counts and the snapshot ts."""
        self._check_open()
        with translate():
            return dump.export(self, path, progress=progress)

    def import_(
        self, path: str | os.PathLike[str], *, progress: dump.Progress | None = None
    ) -> dict[str, int]:
        """Add the tables and records of an export (mvcc/dump.py): every line is
        checked before any is written; a bad one is a ValidationError or
        UniqueViolation naming the line.  Returns the counts."""
        self._check_open()
        with translate():
            return dump.import_file(self, path, progress=progress)

    def rekey(self, new_passphrase: str | bytes | None = None, *, key: bytes | None = None) -> None:
        """Wrap the data key under `new_passphrase` (or a raw 32-byte `key=`):
        from now on only that opens the directory.  No page is rewritten.

        The key file is replaced atomically (storage/crypto.py I4): a crash
        at any point leaves exactly one of the old and the new secret valid,
        and a process that has the directory open keeps its data key.  Two
        rekeys (two would share `key.tmp`) are serialised by the `sequence`
        lock (below); a rekey never meets the key file's creation, which
        happens under `recovery` before the directory has any key to rekey.
        The scrypt cost stays what the key file has (the default for a
        file that had a raw key).  An unencrypted directory: InvalidKey."""
        self._check_open()
        if (new_passphrase is None) == (key is None):
            raise InvalidKey("rekey takes a new passphrase or key=, exactly one of them")
        cipher = self._page_cipher
        if cipher is None:
            raise InvalidKey(
                f"{self.path} is not encrypted: it has no data key to rekey"
                " (to encrypt a database, export it and import it into a new"
                " directory opened with a passphrase)"
            )
        path = os.path.join(self.path, KEY_FILE)
        # `sequence`, the last lock of the order: this process holds `open`
        # (shared, for life), so `recovery` would break the order, and the
        # locks between are the commit path's or held for long (`vacuum`,
        # `checkpoint`).  `sequence` guards the other small file replaced by
        # write-and-rename (`ids`); holding it for one scrypt derivation
        # (~0.1 s) only delays another process's next block of ids.
        with translate(), self.locks.sequence.hold(self.lock_timeout):
            info = read_key_file_info(path)
            log2n = info.log2n if info.kdf == KDF_SCRYPT else DEFAULT_SCRYPT_LOG2N
            rewrap_key_file(
                path, cipher.data_key(), passphrase=new_passphrase, key=key, scrypt_log2n=log2n
            )

    def _look_for_vacuum(self, state: State) -> None:
        """vacuum.py A5: start a vacuum process if there is work and none serves
        (at most once per PROBE_EVERY seconds: a probe is a lock try)."""
        if not self.autovacuum or not vacuum_due(state, self.wal.segment_size):
            return
        if time.monotonic() < self._vacuum_look:
            return
        self._vacuum_look = time.monotonic() + PROBE_EVERY
        try:
            self._vacuum_served = ensure_vacuum(self, self._vacuum_children)
        except Exception:
            log.warning("could not start a vacuum process", exc_info=True)

    def _after_commit(self) -> None:
        """Look for the vacuum process now and then; checkpoint inline when the WAL
        since the last checkpoint is past the threshold (the hard one when a
        vacuum process serves the directory or autovacuum is off, else the soft
        one) and no one else is checkpointing, or, when the WAL has outgrown the
        page file, wait for the checkpoint lock and do it (checkpoint.py K9).
        The commit is already durable: a
        failure here is logged, never raised (the next commit tries again)."""
        state = self.state.read()
        self._look_for_vacuum(state)
        hard = not self.autovacuum or self._vacuum_served
        wait = self._vacuum_served and checkpoint_backlogged(
            state, self.wal.segment_size, self._page_file_bytes
        )  # K9: the vacuum process is not keeping up
        if not wait and not checkpoint_due(state, self.wal.segment_size, hard=hard):
            return
        try:
            run_checkpoint(self, wait=wait, compact=False)  # K10: not on a commit's path
        except Exception:
            log.warning("inline checkpoint failed; the WAL keeps the commits", exc_info=True)

    def _page_file_bytes(self) -> int:
        return os.path.getsize(os.path.join(self.path, PAGES))

    def _conflict(self, tid: int, key: bytes, how: str) -> ConflictError:
        table = self._names.get(tid, f"table id {tid}")
        pk = decode_key(key)[0]
        return ConflictError(
            f"{table}: the record {pk!r} this transaction {how} was changed by a "
            "transaction that committed after its snapshot",
            table=table,
            key=pk,
        )

    # -- tables ------------------------------------------------------------------

    def table(
        self,
        name: str,
        *,
        primary_key: str = "_id",
        indexes: Iterable[Any] = (),
        unique: Iterable[Any] = (),
        schema: Any = None,
    ) -> Table:
        """The table `name`, created (in the caller's transaction, or its own) if
        missing; the indexes named in `indexes` and `unique` (a field, or a tuple
        of fields for a composite index) are created if missing, as
        `create_index` does."""
        self._check_open()
        if type(name) is not str or not name:
            raise ValidationError(f"a table name is a non-empty str, not {name!r}", field="name")
        if type(primary_key) is not str or not primary_key:
            raise ValidationError(
                f"primary_key is a non-empty str, not {primary_key!r}", field="primary_key"
            )
        wanted = [(index_fields(f, what="index"), False) for f in _listed(indexes, "indexes")]
        wanted += [(index_fields(f, what="unique index"), True) for f in _listed(unique, "unique")]
        compiled = None if schema is None else Schema.compile(schema)
        key = encode_key((name,))
        for _attempt in range(10):
            try:
                with self.transaction() as tx:
                    row = tx.read(CATALOG, key)
                    if row is not None:
                        table = self._table_from_row(name, unpack_doc(row))
                    else:
                        spec = {
                            "id": self._new_object_id(),
                            "primary_key": primary_key,
                            "schema": None if compiled is None else compiled.to_spec(),
                            "indexes": [],
                        }
                        tx.write(CATALOG, key, pack_doc(spec))
                        table = self._table_from_row(name, spec)
                    for fields, is_unique in wanted:
                        table.create_index(*fields, unique=is_unique)
                    return table
            except ConflictError:
                if self.current() is not None:
                    raise
                # another process created it at the same moment: read theirs
        raise ConflictError(f"table {name!r} kept changing while being opened", table=name)

    @staticmethod
    def _new_object_id() -> int:
        """A table or index id: random, so processes never need to agree on one."""
        return int.from_bytes(os.urandom(8), "big") >> 1 or 1

    def _table_from_row(self, name: str, row: dict[str, Any]) -> Table:
        schema = None if row.get("schema") is None else Schema.compile(row["schema"])
        self._names[row["id"]] = name
        return Table(self, name, row["id"], row["primary_key"], schema)

    def tables(self) -> list[str]:
        """Names of the tables this context's snapshot sees."""
        self._check_open()
        with self.transaction(readonly=True) as tx:  # inside one: a savepoint of it
            return [str(decode_key(k)[0]) for k, _v in tx.scan(CATALOG)]

    def drop_table(self, name: str) -> bool:
        """Drop the table (its catalog row; its records become unreachable)."""
        self._check_open()
        key = encode_key((name,))
        with self.transaction() as tx:
            if tx.read(CATALOG, key) is None:
                return False
            tx.write(CATALOG, key, None)
            return True

    def _new_id(self, tid: int) -> int:
        with translate():
            return self.ids.next(tid)

    def __repr__(self) -> str:
        return f"<mvcc.Database {self.path!r}{' closed' if self._closed else ''}>"

    def __getstate__(self) -> Any:
        raise TypeError("a Database cannot be pickled; open it in each process")


def _chain_versions_after(
    view: PageView, tid: int, snapshot: int
) -> Iterator[tuple[bytes, bytes | None]]:
    """(key, value) of the versions newer than `snapshot` in the view's table tree."""
    for key, data in view.items(tid, None, None):
        if head_ts(data, view.where) > snapshot:
            for ts, value in decode_chain(data, view.where):
                if ts <= snapshot:
                    break
                yield key, value


def _listed(value: Any, name: str) -> list[Any]:
    """`indexes=` / `unique=`: a list or tuple of index specs (a bare str is one)."""
    if type(value) is str:
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(
            f"{name} is a list of fields or tuples of fields, not {value!r}", field=name
        )
    return list(value)
