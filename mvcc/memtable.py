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
(M5) Completeness: every version with ts > `gap_ts` and ts < position.next_ts
     is here, except those `trim` dropped (ts <= `trimmed_ts`).  A reader
     whose checkpoint floor F satisfies F >= max(gap_ts, trimmed_ts) finds
     here every version in (F, S] it needs.

Reads at snapshot S with floor F (`version`): the first chain entry with
ts <= S, if its ts > F.  The answer MISSING means "no version in (F, S]":
the caller reads the page tree of the checkpoint whose ts is F, which holds
the newest version at or below F.

Skipping and trimming.  A checkpoint folds frames into the page file and then
deletes the WAL segments it covered, so a process that fell behind cannot
read them: `skip_to` moves its position to the checkpoint's and records the
gap.  `trim(F)` drops versions at or below F once no transaction of this
process reads with a lower floor, which bounds the memtable by the WAL since
the last checkpoint.

Index parts.  For a secondary index (mvcc/index.py) a process keeps, per
table and index, a `SortedDict` from the entry of every version here to the
ts of the versions that have it: the recent part of the index, which the
page file's index trees do not have yet.
A part is built on first use (`index_part`) from the versions here, then kept
up to date by `apply`.  (M6) A built part holds the entry of every non-
tombstone version in this memtable (a superset of what any snapshot sees:
readers re-check each hit against the version they see).  `trim` and
`skip_to` drop the parts, which the next use rebuilds: both are rare (after
checkpoints), and a removal would have to know whether another version of
the same record still has that entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from sortedcontainers import SortedDict

from storage.codec import pack, unpack, unpack_doc
from storage.errors import CorruptPage
from storage.keys import decode_key
from storage.wal import WAL, LogPosition

from .index import IndexDef, entry_key

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
        self.gap_ts = base.next_ts - 1  # M5: versions at or below it may be missing
        self.trimmed_ts = 0
        self.versions = 0
        self.parts: dict[int, dict[int, tuple[IndexDef, SortedDict]]] = {}  # M6

    def skip_to(self, checkpoint: LogPosition) -> None:
        """Continue from `checkpoint` (a page file holds everything before it)
        when this memtable is behind it (M5)."""
        if checkpoint.next_ts > self.position.next_ts:
            self.position = checkpoint
            self.gap_ts = checkpoint.next_ts - 1
            self.parts.clear()

    def trim(self, floor: int) -> int:
        """Drop every version at or below `floor`; return how many (M5)."""
        if floor <= self.trimmed_ts:
            return 0
        dropped = 0
        for table in self.tables.values():
            doomed = []
            for key, chain in table.items():
                if chain[-1][0] > floor:
                    continue
                keep = [v for v in chain if v[0] > floor]
                dropped += len(chain) - len(keep)
                if keep:
                    table[key] = keep  # a new list: a reader may be walking the old one
                else:
                    doomed.append(key)
            for key in doomed:
                del table[key]
        self.trimmed_ts = floor
        self.versions -= dropped
        if dropped:
            self.parts.clear()  # M6: rebuilt on next use
        return dropped

    def apply(self, ts: int, writes: Iterable[Write]) -> None:
        """Apply the frame with commit ts `ts` (M1, M2)."""
        tables = self.tables
        n = 0
        for tid, key, value in writes:
            n += 1
            table = tables.get(tid)
            if table is None:
                table = tables[tid] = SortedDict()
            chain = table.get(key)
            if chain is None:
                table[key] = [(ts, value)]
            else:
                chain.insert(0, (ts, value))
            parts = self.parts.get(tid)
            if parts and value is not None:
                _add_entries(parts.values(), key, ts, value)
        self.versions += n

    def index_part(self, tid: int, index: IndexDef) -> SortedDict:
        """The entries of `index` for every version here, each with the tuple of
        the ts of the versions that have it (M6), built on first use."""
        parts = self.parts.setdefault(tid, {})
        part = parts.get(index.id)
        if part is None:
            entries = SortedDict()
            for key, chain in self.tables.get(tid, {}).items():
                for ts, value in reversed(chain):
                    if value is not None:
                        _add_entries(((index, entries),), key, ts, value)
            parts[index.id] = (index, entries)
            return entries
        return part[1]

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

    def versions_after(self, tid: int, snapshot: int) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) of every version of the table newer than `snapshot`."""
        table = self.tables.get(tid)
        if table is None:
            return
        for key, chain in table.items():
            for ts, value in chain:
                if ts <= snapshot:
                    break
                yield key, value

    def version(self, tid: int, key: bytes, snapshot: int, floor: int = 0) -> bytes | Any | None:
        """The value of the newest version with floor < ts <= snapshot, or MISSING."""
        table = self.tables.get(tid)
        if table is None:
            return MISSING
        chain = table.get(key)
        if chain is None:
            return MISSING
        for ts, value in chain:
            if ts <= snapshot:
                return value if ts > floor else MISSING
        return MISSING

    def version_ts(self, tid: int, key: bytes, snapshot: int, floor: int) -> int | Any:
        """The ts of the newest version with floor < ts <= snapshot, or MISSING."""
        table = self.tables.get(tid)
        chain = None if table is None else table.get(key)
        if chain is not None:
            for ts, _value in chain:
                if ts <= snapshot:
                    return ts if ts > floor else MISSING
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


def _add_entries(
    parts: Iterable[tuple[IndexDef, SortedDict]], key: bytes, ts: int, value: bytes
) -> None:
    doc = unpack_doc(value)
    pk = decode_key(key)[0]
    for index, entries in parts:
        entry = entry_key(doc, index, pk)
        if entry is not None:
            entries[entry] = (*entries.get(entry, ()), ts)
