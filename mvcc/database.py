"""The database of one process on a data directory: open, recovery, snapshots, commit.

Directory (docs/format.md): `wal/` segments, `state` (locking.statefile),
`readers` (locking.registry), `*.lock` (locking.filelock), `ids` (mvcc.ids),
`key` when encrypted (storage.crypto).

Open
----
1. Take `recovery` exclusive.  2. Try `open` exclusive: success means no live
process has the directory open, so recover: find the WAL's valid end from the
checkpoint position, truncate a torn tail, sync what is there, and reset the
shared state (commit ts = durable ts = the last frame, epoch + 1).  3. Hold
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
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, cast

from locking.errors import StateError
from locking.filelock import LockSet
from locking.registry import Registry
from locking.statefile import State, StateFile
from storage.codec import pack_doc, unpack_doc
from storage.crypto import PageCipher, create_key_file, load_key_file
from storage.keys import decode_key, encode_key
from storage.wal import WAL, Durability

from .commitlog import (
    CommitLog,
    checkpoint_fields,
    checkpoint_start,
    durable_end,
    durable_fields,
    end_fields,
    wal_end,
)
from .errors import ClosedError, ConflictError, InvalidKey, ValidationError, translate
from .ids import IdAllocator
from .memtable import CATALOG, MISSING, Memtable, encode_frame
from .schema import Schema
from .table import Table
from .transaction import ISOLATIONS, Transaction

__all__ = ["DURABILITIES", "Database"]

log = logging.getLogger("mvcc")

DURABILITIES = ("full", "normal", "off")
KEY_FILE = "key"


class Database:
    """An open data directory; `mvcc.open(...)` makes one."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        passphrase: str | bytes | None = None,
        key: bytes | None = None,
        durability: str = "full",
        lock_timeout: float | None = 10.0,
    ) -> None:
        if durability not in DURABILITIES:
            raise ValidationError(
                f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}",
                field="durability",
            )
        if lock_timeout is not None and not (
            isinstance(lock_timeout, (int, float)) and lock_timeout > 0
        ):
            raise ValidationError(
                f"lock_timeout must be a positive number of seconds or None, not {lock_timeout!r}",
                field="lock_timeout",
            )
        self.path = os.fspath(path)
        self.durability = cast(Durability, durability)  # checked above
        self.lock_timeout = lock_timeout
        self._closed = True
        self._latch = threading.RLock()  # the memtable and local state of this process
        self._names: dict[int, str] = {CATALOG: "the table catalog"}  # table id -> name
        self._current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            f"mvcc-tx-{id(self)}", default=None
        )
        with contextlib.ExitStack() as stack, translate():
            os.makedirs(self.path, exist_ok=True)
            self.locks = stack.enter_context(LockSet(self.path, timeout=lock_timeout))
            self.locks.recovery.acquire(lock_timeout)
            try:
                cipher = self._cipher(passphrase, key)
                self.wal = stack.enter_context(
                    WAL(os.path.join(self.path, "wal"), cipher=cipher, durability=self.durability)
                )
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
            self.log = CommitLog(
                self.wal, self.state, self.locks.commit, self.locks.sync, timeout=lock_timeout
            )
            self.ids = IdAllocator(
                os.path.join(self.path, "ids"),
                self.locks.sequence,
                timeout=lock_timeout,
                sync=durability != "off",
            )
            state = self.state.read()
            self.memtable = Memtable(checkpoint_start(state))
            self.memtable.catch_up(self.wal, durable_end(state))
            self._stack = stack.pop_all()
        self._closed = False

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
        WAL (Open, step 2).  Until checkpoints exist the WAL is read from its start
        (a zero checkpoint position: a new or rebuilt state file)."""
        state = self.state.read()
        if state.checkpoint_segment == 0:
            state = state._replace(**checkpoint_fields(self.wal.start()))
        reader = self.wal.read(checkpoint_start(state))
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
        log.info("recovery: %d frames after the checkpoint, last ts %d", frames, end.next_ts - 1)

    def _check_open(self) -> None:
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

    @contextlib.contextmanager
    def transaction(
        self, *, isolation: str = "snapshot", readonly: bool = False
    ) -> Iterator[Transaction]:
        """`with db.transaction():` — commit on exit, roll back on an exception.

        Inside an active transaction of this context, a nested block is a savepoint.
        """
        self._check_open()
        if isolation not in ISOLATIONS:
            raise ValidationError(
                f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}",
                field="isolation",
            )
        outer = self.current()
        if outer is not None:
            depth = outer.savepoint()
            try:
                yield outer
            except BaseException:
                if outer.active:
                    outer.rollback_to(depth)
                raise
            else:
                if outer.active:
                    outer.release_savepoint(depth)
            return
        with translate():
            tx = Transaction(self, isolation=isolation, readonly=readonly)
        token = self._current.set(tx)
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
        else:
            with translate():
                tx.commit()
        finally:
            self._current.reset(token)

    def current(self) -> Transaction | None:
        """The active transaction of this context (thread, task), if any."""
        tx = self._current.get()
        return tx if tx is not None and tx.active else None

    # -- the engine: called by Transaction ----------------------------------------

    def _begin(self) -> tuple[int, tuple[int, int]]:
        """Pin a snapshot (D1) and bring the memtable up to it."""
        self._check_open()
        seen: list[State] = []

        def read() -> tuple[int, int]:
            seen.append(self.state.read())
            return seen[-1].durable_ts, 0

        pin = self.registry.pin(read)
        upto = durable_end(seen[-1])  # the state the pinned ts came from
        if upto.next_ts > self.memtable.position.next_ts:
            try:
                with self._latch:
                    self.memtable.catch_up(self.wal, upto)
            except BaseException:
                self.registry.unpin(pin)
                raise
        return pin[0], pin

    def _end(self, pin: tuple[int, int]) -> None:
        if not self._closed:
            self.registry.unpin(pin)

    def _read(self, tid: int, key: bytes, snapshot: int) -> bytes | None:
        value = self.memtable.version(tid, key, snapshot)
        return None if value is MISSING else value

    def _scan(
        self, tid: int, lo: bytes | None, hi: bytes | None, snapshot: int
    ) -> Iterator[tuple[bytes, bytes]]:
        memtable = self.memtable
        with self._latch:  # SortedDict is not safe to iterate while another thread applies
            keys = list(memtable.keys(tid, lo, hi))
        for key in keys:
            value = memtable.version(tid, key, snapshot)
            if value is not MISSING and value is not None:
                yield key, value

    def _commit(self, tx: Transaction) -> int:
        """Validate and append `tx`'s write set; return its commit ts (D2, D3)."""
        commit_lock = self.locks.commit
        with translate():
            commit_lock.acquire(self.lock_timeout)
            try:
                state = self.state.read()
                with self._latch:
                    self.memtable.catch_up(self.wal, wal_end(state))
                    self._validate(tx)
                    writes = [(tid, key, value) for (tid, key), value in tx.writes.items()]
                    state = self.log.append(state, [encode_frame(writes)])
                    self.memtable.apply(state.commit_ts, writes)
                    self.memtable.position = wal_end(state)
            finally:
                commit_lock.release()
            self.log.wait_durable(state.commit_ts)
        return state.commit_ts

    def _validate(self, tx: Transaction) -> None:
        """First committer wins; under serializable, reads and ranges too (T3)."""
        memtable, snapshot = self.memtable, tx.snapshot
        for tid, key in tx.writes:
            if memtable.newest_ts(tid, key) > snapshot:
                raise self._conflict(tid, key, "written")
        if tx.serializable:
            for tid, key in tx.reads:
                if memtable.newest_ts(tid, key) > snapshot:
                    raise self._conflict(tid, key, "read")
            for tid, lo, hi in tx.ranges:
                changed = memtable.changed_after(tid, snapshot, lo, hi)
                if changed is not None:
                    raise self._conflict(tid, changed, "scanned")

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

    def table(self, name: str, *, primary_key: str = "_id", schema: Any = None) -> Table:
        """The table `name`, created (in the caller's transaction, or its own) if missing."""
        self._check_open()
        if type(name) is not str or not name:
            raise ValidationError(f"a table name is a non-empty str, not {name!r}", field="name")
        if type(primary_key) is not str or not primary_key:
            raise ValidationError(
                f"primary_key is a non-empty str, not {primary_key!r}", field="primary_key"
            )
        compiled = None if schema is None else Schema.compile(schema)
        key = encode_key((name,))
        for _attempt in range(10):
            try:
                with self.transaction() as tx:
                    row = tx.read(CATALOG, key)
                    if row is not None:
                        return self._table_from_row(name, unpack_doc(row))
                    tid = int.from_bytes(os.urandom(8), "big") >> 1 or 1
                    spec = {
                        "id": tid,
                        "primary_key": primary_key,
                        "schema": None if compiled is None else compiled.to_spec(),
                    }
                    tx.write(CATALOG, key, pack_doc(spec))
                    return self._table_from_row(name, spec)
            except ConflictError:
                if self.current() is not None:
                    raise
                # another process created it at the same moment: read theirs
        raise ConflictError(f"table {name!r} kept changing while being opened", table=name)

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
