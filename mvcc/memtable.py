"""The versions committed since a WAL position, per table, built by tailing the WAL.

Every process keeps one `Memtable`.  It holds, for each table id, a
`SortedDict` from encoded primary key to that key's version chain: a list of
``(commit_ts, packed document or None)`` newest first, None being a tombstone.
Frames are applied in ts order as the process tails the shared WAL
(`catch_up`), whoever appended them.

Frame payload (msgpack, `storage.codec`): ``[FRAME_FORMAT, writes]`` where
``writes`` is a list of ``[table_id, key, value]``: `key` the encoded primary
key (bytes), `value` the packed document (bytes) or nil for a delete.  Table
definitions are writes too, to table id CATALOG (docs/format.md).

Invariants
(M1) `position` is the WAL position after the last applied frame; frames are
     applied exactly once, in ts order (`ts` = position.next_ts - 1 after each).
(M2) Every chain is sorted by ts, newest first, with distinct ts.
(M3) For any snapshot S >= base.next_ts - 1, the newest version of a key with
     ts <= S among the versions committed after `base` is in this memtable
     once it is caught up to S: nothing is dropped while a transaction of
     this process may read it.
(M4) A frame that does not decode is corruption, never skipped: the log
     passed its checksum, so a bad payload is a bug or tampering.

Reads at snapshot S (`version`): the first chain entry with ts <= S.  The
answer MISSING means "no version after base at or before S": the caller looks
in the page tree of the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from sortedcontainers import SortedDict

from storage.codec import pack, unpack
from storage.errors import CorruptPage
from storage.wal import WAL, LogPosition

__all__ = [
    "CATALOG",
    "FRAME_FORMAT",
    "MISSING",
    "Memtable",
    "Write",
    "decode_frame",
    "encode_frame",
]

FRAME_FORMAT: Final = 1
CATALOG: Final = 0  # the table id of the table of tables

Write = tuple[int, bytes, bytes | None]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()


def encode_frame(writes: Iterable[Write]) -> bytes:
    """The WAL payload of one commit."""
    return pack([FRAME_FORMAT, [list(w) for w in writes]])


def decode_frame(payload: bytes, where: str) -> list[Write]:
    """The writes of one frame; CorruptPage naming `where` if it is not one (M4)."""
    try:
        version, writes = unpack(payload)
        if version != FRAME_FORMAT or type(writes) is not list:
            raise ValueError(f"frame format {version!r}")
        out: list[Write] = []
        for tid, key, value in writes:
            if type(tid) is not int or type(key) is not bytes:
                raise ValueError("bad write")
            if value is not None and type(value) is not bytes:
                raise ValueError("bad value")
            out.append((tid, key, value))
        return out
    except (ValueError, TypeError) as exc:
        raise CorruptPage(f"WAL frame payload does not decode: {exc}", file=where) from exc


class Memtable:
    """Versions after `base`, per table id (M1-M3)."""

    def __init__(self, base: LogPosition) -> None:
        self.base = base
        self.position = base
        self.tables: dict[int, SortedDict] = {}

    def apply(self, ts: int, writes: Iterable[Write]) -> None:
        """Apply the frame with commit ts `ts` (M1, M2)."""
        tables = self.tables
        for tid, key, value in writes:
            table = tables.get(tid)
            if table is None:
                table = tables[tid] = SortedDict()
            chain = table.get(key)
            if chain is None:
                table[key] = [(ts, value)]
            else:
                chain.insert(0, (ts, value))

    def catch_up(self, wal: WAL, upto: LogPosition) -> int:
        """Apply every frame before `upto` not applied yet; return how many.

        CorruptPage if the log ends (damage or a torn frame) before `upto`,
        which the shared state says was published: a frame this process needs
        is gone.
        """
        if upto.next_ts <= self.position.next_ts:
            return 0
        reader = wal.read(self.position, upto=upto)
        applied = 0
        try:
            for frame in reader:
                self.apply(frame.ts, decode_frame(frame.payload, f"WAL frame {frame.ts}"))
                applied += 1
        finally:
            self.position = reader.position
        if reader.position.next_ts < upto.next_ts:
            raise CorruptPage(
                f"the log ends at ts {reader.position.next_ts - 1} ({reader.stopped}), "
                f"but ts {upto.next_ts - 1} was published",
                file=wal.directory,
            )
        return applied

    # -- reads -------------------------------------------------------------------------

    def version(self, tid: int, key: bytes, snapshot: int) -> bytes | Any | None:
        """The value of the newest version with ts <= snapshot, or MISSING."""
        table = self.tables.get(tid)
        if table is None:
            return MISSING
        chain = table.get(key)
        if chain is None:
            return MISSING
        for ts, value in chain:
            if ts <= snapshot:
                return value
        return MISSING

    def newest_ts(self, tid: int, key: bytes) -> int:
        """The ts of the key's newest version here, 0 if none."""
        table = self.tables.get(tid)
        chain = None if table is None else table.get(key)
        return chain[0][0] if chain else 0

    def keys(
        self, tid: int, lo: bytes | None = None, hi: bytes | None = None, reverse: bool = False
    ) -> Iterator[bytes]:
        """Keys of the table with any version here, lo <= key < hi, in key order."""
        table = self.tables.get(tid)
        if table is None:
            return iter(())
        return iter(table.irange(lo, hi, inclusive=(True, False), reverse=reverse))

    def changed_after(
        self, tid: int, snapshot: int, lo: bytes | None = None, hi: bytes | None = None
    ) -> bytes | None:
        """A key in [lo, hi) with a version newer than `snapshot`, or None."""
        table = self.tables.get(tid)
        if table is None:
            return None
        for key in table.irange(lo, hi, inclusive=(True, False)):
            if table[key][0][0] > snapshot:
                return key  # type: ignore[no-any-return]
        return None
