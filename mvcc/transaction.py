"""A transaction: a snapshot to read, a buffered write set, savepoints, one commit.

States: ACTIVE -> COMMITTED | ROLLED_BACK.  A transaction reads at its
snapshot ts S (the durable ts when it began, pinned in the reader registry)
and buffers its writes; `Database._commit` validates and appends them.

Invariants
(T1) Reads see the write set first, then the newest version with ts <= S:
     a transaction reads its own writes and nothing committed after S.
(T2) The write set holds, per (table id, key), the last value written (packed
     document bytes, or None for a delete); nothing reaches the WAL before
     commit, so a rollback is dropping the write set.
(T3) Under "serializable" every key read (found or not), every range
     scanned and every index range read is recorded, and the commit aborts if
     any changed after S (for an index range: a version committed after S has
     an entry in it, a phantom).
(T4) A savepoint is a copy of the write set taken when a nested block starts;
     an exception in the block restores it.  Reads and scanned ranges are
     kept: what the block read may leave it (in the exception, say) and
     decide later writes, so a serializable commit validates them all, as
     PostgreSQL keeps the predicate locks of a rolled-back subtransaction.
(T5) A readonly transaction has no write set: a write raises ReadOnlyError
     before anything is buffered, and its commit takes no lock.
(T6) Index reads see the write set's entries through a per-(table, index)
     sorted copy, built on the first index read of that pair and kept in step
     by every later write, so that n inserts checking a unique index cost
     n log n, not n squared.  A savepoint rollback drops the copies (rebuilt
     from the restored write set) and restores the catalog cache and the
     unique builds with the writes.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList

from storage.codec import unpack_doc
from storage.keys import decode_key

from . import faults
from .errors import ClosedError, ReadOnlyError
from .index import Hit, IndexDef, entry_key, merge_entries
from .memtable import MISSING

if TYPE_CHECKING:
    from .database import Database

__all__ = ["ISOLATIONS", "Transaction", "TxState", "sees_every_head"]


def sees_every_head(key: bytes) -> bool:
    """`Transaction.head_reader`'s answer when no record's head can be hidden."""
    return True


ISOLATIONS = ("snapshot", "serializable")


class TxState(enum.Enum):
    ACTIVE = "active"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"


class Transaction:
    """One transaction of `db`; made by `db.transaction()`, not directly."""

    def __init__(self, db: Database, *, isolation: str, readonly: bool) -> None:
        self.db = db
        self.isolation = isolation
        self.readonly = readonly
        self.serializable = isolation == "serializable"
        self.state = TxState.ACTIVE
        self.snapshot, self._pin, self._view = db._begin()
        self._incarnation = db.incarnation
        self.writes: dict[tuple[int, bytes], bytes | None] = {}
        self.reads: set[tuple[int, bytes]] = set()
        self.ranges: list[tuple[int, bytes | None, bytes | None]] = []
        self.index_ranges: list[tuple[int, IndexDef, bytes | None, bytes | None]] = []
        self.unique_builds: list[tuple[int, IndexDef]] = []  # unique indexes it creates
        self.catalog: dict[int, tuple[IndexDef, ...]] = {}  # table id -> its indexes, read once
        # (table id, index id) -> (key -> entry, sorted entries) of the write set (T6)
        self._own: dict[tuple[int, int], tuple[IndexDef, dict[bytes, bytes], SortedList]] = {}
        self._savepoints: list[tuple[dict[Any, Any], dict[Any, Any], int]] = []
        self.commit_ts: int | None = None
        self._late = db.faults.late_snapshot  # faults.py F4

    # -- state ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state is TxState.ACTIVE

    def _check_active(self) -> None:
        if self.state is not TxState.ACTIVE:
            raise ClosedError(f"the transaction is {self.state.value}")
        self.db._check_open()
        if self._incarnation != self.db.incarnation:
            self.state = TxState.ROLLED_BACK  # its pin and files were the parent's (D6)
            raise ClosedError("this transaction was begun before os.fork(), by the parent")
        if self._late:  # faults.py F4: a planted bug, a new snapshot at every access
            self.db._end(self._pin, self._view)
            self.snapshot, self._pin, self._view = self.db._begin()

    def commit(self) -> None:
        """Validate and append the write set (Database._commit); a no-op once committed.
        A failed commit (ConflictError, ...) rolls the transaction back."""
        if self.state is TxState.COMMITTED:
            return
        self._check_active()
        if self.writes and self.db.faults.ack_before_sync:
            faults.later(self._commit_now)  # F3: a planted bug, acknowledged first
            return
        self._commit_now()

    def _commit_now(self) -> None:
        ok = False
        try:
            if self.writes:
                self.commit_ts = self.db._commit(self)
            ok = True
        finally:
            self._end(TxState.COMMITTED if ok else TxState.ROLLED_BACK)
        if self.commit_ts is not None:
            self.db._after_commit()

    def rollback(self) -> None:
        if self.state is TxState.ACTIVE:
            self._end(TxState.ROLLED_BACK)

    def _end(self, state: TxState) -> None:
        """Leave ACTIVE and release the snapshot."""
        self.state = state
        self.writes = {}
        self.db._end(self._pin, self._view)

    # -- savepoints (T4) -----------------------------------------------------

    def savepoint(self) -> int:
        self._check_active()
        self._savepoints.append((dict(self.writes), dict(self.catalog), len(self.unique_builds)))
        return len(self._savepoints)

    def release_savepoint(self, depth: int) -> None:
        del self._savepoints[depth - 1 :]

    def rollback_to(self, depth: int) -> None:
        self.writes, self.catalog, builds = self._savepoints[depth - 1]
        del self.unique_builds[builds:]
        del self._savepoints[depth - 1 :]
        self._own.clear()  # T6: rebuilt from the restored write set on next use

    # -- reads (T1, T3) ------------------------------------------------------

    def read(self, tid: int, key: bytes) -> bytes | None:
        """The packed document under `key` as this transaction sees it, or None."""
        self._check_active()
        value = self.writes.get((tid, key), MISSING)
        if value is not MISSING:
            return value  # type: ignore[no-any-return]
        if self.serializable:
            self.reads.add((tid, key))
        return self.db._read(tid, key, self.snapshot, self._view)

    def reader(self, tid: int) -> Callable[[bytes], bytes | None]:
        """`read(tid, key)` as a function of the key, for a loop over many keys
        of one table (an index read): with no writes and no read set to keep,
        it goes straight to the memtable and the page view."""
        self._check_active()
        if self.writes or self.serializable:
            return functools.partial(self.read, tid)
        version, floor, snapshot = self.db.memtable.version, self._view.ts, self.snapshot
        view_read = self._view.read

        def read(key: bytes) -> bytes | None:
            value = version(tid, key, snapshot, floor)
            return view_read(tid, key, snapshot) if value is MISSING else value

        return read

    def head_reader(self, tid: int) -> Callable[[bytes], bool] | None:
        """For an index read's covered hits (versions.py V5): a function telling
        whether this transaction sees the page view's head version of a record
        (no write of its own, no memtable version in (floor, S]); it records
        the read under serializable.  None when the view is newer than the
        snapshot, where the head may not be what it sees."""
        self._check_active()
        view = self._view
        if view.ts > self.snapshot:
            return None
        memtable = self.db.memtable
        if not self.writes and not self.serializable and not memtable.tables.get(tid):
            # Nothing can hide a head: frames at or below S were applied at begin.
            return sees_every_head
        version, floor, snapshot = memtable.version, view.ts, self.snapshot
        reads = self.reads if self.serializable else None

        def sees_head(key: bytes) -> bool:
            if self.writes and (tid, key) in self.writes:
                return False
            if version(tid, key, snapshot, floor) is not MISSING:
                return False
            if reads is not None:
                reads.add((tid, key))
            return True

        return sees_head

    def version_reader(self, tid: int) -> Callable[[bytes], int | Any]:
        """For an index read's memtable hits (memtable.py M6): a function giving
        the ts of the memtable version this transaction sees of a record, or
        MISSING (none there, or a write of its own); records the read under
        serializable."""
        self._check_active()
        version_ts, floor, snapshot = self.db.memtable.version_ts, self._view.ts, self.snapshot
        reads = self.reads if self.serializable else None

        def visible_ts(key: bytes) -> int | Any:
            if self.writes and (tid, key) in self.writes:
                return MISSING
            ts = version_ts(tid, key, snapshot, floor)
            if reads is not None and ts is not MISSING:
                reads.add((tid, key))
            return ts

        return visible_ts

    def scan(
        self, tid: int, lo: bytes | None = None, hi: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, packed document) of every live record in [lo, hi), in key order."""
        self._check_active()
        if self.serializable:
            self.ranges.append((tid, lo, hi))
        mine = sorted(
            (key, value)
            for (t, key), value in self.writes.items()
            if t == tid and (lo is None or key >= lo) and (hi is None or key < hi)
        )
        theirs = self.db._scan(tid, lo, hi, self.snapshot, self._view)
        i = 0
        for key, value in theirs:
            while i < len(mine) and mine[i][0] < key:
                if mine[i][1] is not None:
                    yield mine[i]  # type: ignore[misc]
                i += 1
            if i < len(mine) and mine[i][0] == key:
                if mine[i][1] is not None:
                    yield mine[i]  # type: ignore[misc]
                i += 1
                continue
            yield key, value
        for rest, last in mine[i:]:
            if last is not None:
                yield rest, last

    def count(self, tid: int) -> int:
        """How many live records the table holds as this transaction sees it:
        `len(list(scan(tid)))` without reading the records (versions.py V8),
        recording the same read range under serializable."""
        self._check_active()
        view = self._view
        if view.ts > self.snapshot:  # a newer generation serves: its heads are not S's
            return sum(1 for _record in self.scan(tid))
        if self.serializable:
            self.ranges.append((tid, None, None))
        total = self.db._count(tid, self.snapshot, view)
        for (t, key), value in self.writes.items():
            if t == tid:
                before = self.db._read(tid, key, self.snapshot, view)
                total += (value is not None) - (before is not None)
        return total

    def index_entries(
        self,
        tid: int,
        index: IndexDef,
        lo: bytes | None,
        hi: bytes | None,
        *,
        reverse: bool = False,
    ) -> Iterator[Hit]:
        """Entries of `index` in [lo, hi), in order (descending when `reverse`),
        lazily: committed ones (a superset of what the snapshot sees) and those
        of this transaction's writes.  The caller re-checks each against the
        document `read` returns (T1)."""
        self._check_active()
        if self.serializable:
            self.index_ranges.append((tid, index, lo, hi))
        committed = self.db._index_entries(tid, index, lo, hi, self._view, reverse)
        own = self._own.get((tid, index.id))
        if own is None:
            own = self._own[(tid, index.id)] = (index, {}, SortedList())
            for (t, key), value in self.writes.items():
                if t == tid:
                    self._own_entry(own, key, value)
        entries = own[2]
        if not entries:
            return committed
        mine = [(e, None) for e in entries.irange(lo, hi, inclusive=(True, False), reverse=reverse)]
        return merge_entries(mine, committed, reverse=reverse) if mine else committed

    @staticmethod
    def _own_entry(
        own: tuple[IndexDef, dict[bytes, bytes], SortedList], key: bytes, value: bytes | None
    ) -> None:
        """T6: keep one index's entries of the write set in step with a write."""
        index, by_key, entries = own
        old = by_key.pop(key, None)
        if old is not None:
            entries.remove(old)
        if value is not None:
            entry = entry_key(unpack_doc(value), index, decode_key(key)[0])
            if entry is not None:
                by_key[key] = entry
                entries.add(entry)

    # -- writes (T2, T5) -----------------------------------------------------

    def write(self, tid: int, key: bytes, value: bytes | None) -> None:
        self._check_active()
        if self.readonly:
            raise ReadOnlyError("this transaction is readonly: it cannot write")
        self.writes[(tid, key)] = value
        for (t, _index_id), own in self._own.items():
            if t == tid:
                self._own_entry(own, key, value)
