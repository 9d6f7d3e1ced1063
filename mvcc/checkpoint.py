"""Checkpoint: fold the WAL's durable frames into the page file's version trees.

Any process may checkpoint (`db.checkpoint()`, or inline after a commit that
leaves the WAL past `CHECKPOINT_FRAMES` frames or `CHECKPOINT_BYTES` bytes
since the last checkpoint); the checkpoint lock makes it one at a time.
Commits go on meanwhile: the commit lock is taken only to publish the result.

Algorithm (`checkpoint`, checkpoint lock held)
    1. start  = the WAL position the page file's newest meta names (K1);
       target = the durable end the shared state publishes (K2).
    2. horizon (ts, gen) = the registry's: the oldest pin of any live process.
    3. If target is not past start and no vacuum list names a chain at or
       below the horizon ts (versions.py V6), only make sure the state
       publishes the page file's checkpoint (a checkpointer may have died
       between 6 and 7).
    4. Read the frames in [start, target) and group their writes by table and
       key, newest first.
    5. Sync the WAL up to target (force: under durability "normal" too), so
       the log is whole up to the point the page file will claim.
    6. One page-file write: for each touched key, and each key a vacuum list
       names at or below the horizon ts, the new versions (if any) followed by
       the chain stored so far, pruned at the horizon ts (versions.py V2); an
       empty chain deletes the key; the vacuum lists follow (V6).  The trees of
       dropped tables no snapshot sees go (V7).  Then the index trees, in the same
       write (versions.py V4): under the catalog as the fold leaves it, each
       index of a table gets, for every key the fold touched, the entries of
       its new chain that the old chain lacked and loses those the new one
       lacks; an index with no tree yet gets one built from the whole table
       tree; an index tree no catalog row names any more is dropped.  The
       meta's user bytes name target.  Commit (pagefile.py P2: pages, sync,
       meta, sync), reusing only pages freed at or before the horizon gen.
    7. Under the commit lock, publish checkpoint gen, ts and position.
    8. Delete the WAL segments wholly before target's segment.

Invariants
(K1) The page file's newest meta names the WAL position its trees include
     (every frame before it, and none after).  Recovery replays the WAL from
     there, so a crash anywhere loses nothing: before 6 commits the old meta
     and the WAL still agree; after it the new meta does, and the segments 8
     deletes are covered by it.
(K2) Only durable frames are folded, so the page file never holds a commit
     that a crash could take back.
(K3) A key's stored chain holds, after the fold, everything a snapshot at or
     above the horizon can see of it up to target's ts (versions.py V2).
(K4) A generation's pages are not reused while a process holds a pin with
     that generation (the horizon gen bounds `PageFile.begin`), so a reader
     keeps its tree for as long as its transaction lasts.

Where to start when the page file has no checkpoint yet: the WAL's first
segment (nothing was ever deleted, by K1).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from locking.statefile import State
from storage.codec import unpack_doc
from storage.errors import CorruptPage
from storage.pagefile import Meta, PageFile, Snapshot, WriteTxn
from storage.wal import WAL, LogPosition

from .commitlog import durable_end
from .index import IndexDef, indexes_of
from .memtable import CATALOG, decode_frame
from .versions import (
    Chain,
    chain_entries,
    decode_chain,
    encode_chain,
    index_tree_name,
    prune,
    tree_name,
    vacuum_entry,
    vacuum_tree_name,
)

if TYPE_CHECKING:
    from .database import Database

__all__ = [
    "CHECKPOINT_BYTES",
    "CHECKPOINT_FRAMES",
    "HARD_FACTOR",
    "CheckpointResult",
    "checkpoint",
    "due",
    "meta_position",
    "wal_bytes_after",
]

log = logging.getLogger("mvcc")
SLOW_WAIT: Final = 0.1  # a lock wait this long is logged

CHECKPOINT_FRAMES: Final = 20_000
"""After a commit that leaves this many frames after the checkpoint, the
committer checkpoints inline (when no one else is).  Bounds every process's
memtable and the replay at recovery."""

CHECKPOINT_BYTES: Final = 32 * 1024 * 1024
"""The same, in WAL bytes past the checkpoint position (bulk loads)."""


@dataclass
class FoldCounts:
    """What one page-file write of a checkpoint did."""

    keys: int = 0  # records rewritten (new versions, or pruned)
    pruned: int = 0  # versions dropped by pruning
    tables_dropped: int = 0  # trees of dropped tables removed (V7)
    pages_freed: int = 0  # pages the write stopped reaching
    pages_reused: int = 0  # pages it wrote over free ones instead of growing the file


@dataclass(frozen=True)
class CheckpointResult:
    gen: int  # the page-file generation written (the old one if nothing was new)
    ts: int  # every commit at or before it is in the page file
    frames: int  # frames folded
    keys: int  # records rewritten
    pruned: int  # versions dropped by pruning
    segments_deleted: int
    seconds: float
    horizon: tuple[int, int] = (0, 0)  # the (ts, gen) pruning and page reuse went by
    pages_freed: int = 0
    pages_reused: int = 0
    tables_dropped: int = 0


def meta_position(meta: Meta, wal: WAL) -> LogPosition:
    """The WAL position a page-file meta names (K1)."""
    if not meta.user:
        return wal.start()
    return LogPosition.unpack(meta.user)


HARD_FACTOR: Final = 4
"""Without autovacuum, committers checkpoint only at this multiple of the thresholds."""


def wal_bytes_after(state: State, segment_size: int) -> int:
    """WAL bytes between the checkpoint position and the end (segments between
    the two count as full)."""
    return (
        (state.wal_segment - state.checkpoint_segment) * segment_size
        + state.wal_offset
        - state.checkpoint_offset
    )


def due(state: State, segment_size: int, *, hard: bool = False) -> bool:
    """Whether a committer should checkpoint inline (the soft thresholds, or with
    `hard` the hard ones)."""
    factor = HARD_FACTOR if hard else 1
    return (
        state.commit_ts - state.checkpoint_ts >= CHECKPOINT_FRAMES * factor
        or wal_bytes_after(state, segment_size) >= CHECKPOINT_BYTES * factor
    )


def _gather(
    wal: WAL, start: LogPosition, target: LogPosition
) -> tuple[dict[int, dict[bytes, Chain]], int]:
    """Step 4: table id -> key -> the new versions, newest first."""
    changes: dict[int, dict[bytes, Chain]] = {}
    reader = wal.read(start, upto=target)
    frames = 0
    for frame in reader:
        frames += 1
        for tid, key, value in decode_frame(frame.payload, f"WAL frame {frame.ts}"):
            changes.setdefault(tid, {}).setdefault(key, []).insert(0, (frame.ts, value))
    if reader.position.next_ts != target.next_ts:
        raise CorruptPage(
            f"the log ends at ts {reader.position.next_ts - 1} ({reader.stopped}) "
            f"but ts {target.next_ts - 1} is durable",
            file=wal.directory,
        )
    return changes, frames


def _due(snapshot: Snapshot, horizon_ts: int) -> bool:
    """Whether some vacuum list names a chain the horizon lets pruning shorten (V6)."""
    upto = (horizon_ts + 1).to_bytes(8, "big")
    for name, _root in snapshot.trees():
        if name[:1] == b"v":
            tree = snapshot.tree(name)
            if tree is not None and next(iter(tree.cursor(None, upto)), None) is not None:
                return True
    return False


def _fold(
    pages: PageFile,
    changes: dict[int, dict[bytes, Chain]],
    horizon: tuple[int, int],
    target: LogPosition,
) -> tuple[Meta, FoldCounts]:
    """Step 6: one page-file write; return its meta and what it did."""
    counts = FoldCounts()
    txn = pages.begin(horizon=horizon[1])
    try:
        where = pages.name
        upto = (horizon[0] + 1).to_bytes(8, "big")
        # Keys to rewrite: the new versions, and the chains the vacuum lists
        # say the horizon now lets pruning shorten (V6).
        work: dict[int, dict[bytes, Chain]] = {tid: dict(keys) for tid, keys in changes.items()}
        for name in txn.names():
            if name[:1] == b"v":
                listed = txn.tree(name)
                assert listed is not None  # named by the catalog
                keys = work.setdefault(int.from_bytes(name[1:], "big"), {})
                for entry, _empty in list(listed.cursor(None, upto)):
                    keys.setdefault(entry[8:], [])
        folded: dict[int, list[tuple[bytes, Chain, Chain]]] = {}
        for tid in sorted(work):
            if not work[tid]:
                continue
            tree = txn.tree(tree_name(tid), create=True)
            listed = txn.tree(vacuum_tree_name(tid), create=True)
            assert tree is not None and listed is not None  # create=True
            out = folded[tid] = []
            for key in sorted(work[tid]):
                chain = work[tid][key]
                stored = tree.get(key)
                old = [] if stored is None else decode_chain(stored, where)
                kept = prune(chain + old, horizon[0])
                counts.pruned += len(chain) + len(old) - len(kept)
                counts.keys += 1
                out.append((key, old, kept))
                if kept:
                    tree.put(key, encode_chain(kept))
                elif stored is not None:
                    tree.delete(key)
                was = vacuum_entry(key, old) if old else None
                now = vacuum_entry(key, kept) if kept else None
                if was != now:
                    if was is not None:
                        listed.delete(was)
                    if now is not None:
                        listed.put(now, b"")
        indexes, named = _catalog(txn, where)
        counts.tables_dropped = _drop_tables(txn, named)
        _fold_indexes(txn, folded, indexes, where)
        txn.user_meta = target.pack()
        meta = txn.commit()
    except BaseException:
        txn.abort()
        raise
    counts.pages_freed, counts.pages_reused = txn.pages_freed, txn.pages_reused
    return meta, counts


def _drop_tables(txn: WriteTxn, named: set[int]) -> int:
    """V7: drop the table trees (and vacuum lists) of table ids that no version of
    any catalog row names any more (`named`): a dropped table whose catalog
    row the horizon has pruned away.  No snapshot can reach them."""
    dropped = 0
    for name in txn.names():
        if name[:1] in (b"t", b"v") and int.from_bytes(name[1:], "big") not in named:
            dropped += name[:1] == b"t"
            txn.drop_tree(name)
    return dropped


def _catalog(txn: WriteTxn, where: str) -> tuple[dict[int, tuple[IndexDef, ...]], set[int]]:
    """One read of the catalog: table id -> its indexes, from the newest version
    of each row; and every table id some version of some row names (V7)."""
    tree = txn.tree(tree_name(CATALOG))
    indexes: dict[int, tuple[IndexDef, ...]] = {}
    named = {CATALOG}
    for _name, data in () if tree is None else tree.cursor():
        for i, (_ts, value) in enumerate(decode_chain(data, where)):
            if value is not None:
                row = unpack_doc(value)
                named.add(row["id"])
                if i == 0:
                    indexes[row["id"]] = indexes_of(row)
    return indexes, named


def _fold_indexes(
    txn: WriteTxn,
    folded: dict[int, list[tuple[bytes, Chain, Chain]]],
    catalog: dict[int, tuple[IndexDef, ...]],
    where: str,
) -> None:
    """Step 6's index trees (versions.py V4), under `catalog` (table id -> indexes)."""
    live = {index_tree_name(i.id) for indexes in catalog.values() for i in indexes}
    for name in txn.names():
        if name[:1] == b"i" and name not in live:
            txn.drop_tree(name)
    for tid, indexes in catalog.items():
        for index in indexes:
            tree = txn.tree(index_tree_name(index.id))
            if tree is None:
                tree = txn.tree(index_tree_name(index.id), create=True)
                assert tree is not None  # create=True
                table = txn.tree(tree_name(tid))
                for key, data in () if table is None else table.cursor():
                    for entry, value in chain_entries(
                        key, decode_chain(data, where), index
                    ).items():
                        tree.put(entry, value)
                continue
            for key, old, kept in folded.get(tid, ()):
                before = chain_entries(key, old, index)
                after = chain_entries(key, kept, index)
                for entry in before.keys() - after.keys():
                    tree.delete(entry)
                for entry, value in after.items():
                    if before.get(entry) != value:  # new, or its head changed (V5)
                        tree.put(entry, value)


def checkpoint(db: Database, *, wait: bool) -> CheckpointResult | None:
    """Run steps 1-8 now, in this process; the caller holds no lock of the directory.
    With `wait` false, return None at once if another checkpoint is running."""
    began = time.perf_counter()
    lock = db.locks.checkpoint
    if wait:
        lock.acquire(db.lock_timeout)
        if time.perf_counter() - began >= SLOW_WAIT:
            log.warning(
                "waited %.0f ms for the checkpoint lock", (time.perf_counter() - began) * 1e3
            )
    elif not lock.try_acquire():
        return None
    try:
        pages, wal = db.pages, db.wal
        meta = pages.read_meta()
        start = meta_position(meta, wal)
        state = db.state.read()
        target = durable_end(state)
        frames = 0
        counts = FoldCounts()
        horizon = db.registry.horizon((state.durable_ts, meta.gen))
        if db.faults.vacuum_ignores_horizon:  # faults.py F5: a planted bug
            horizon = (state.durable_ts, meta.gen)
        if target.next_ts > start.next_ts or _due(pages.snapshot(meta), horizon[0]):
            changes: dict[int, dict[bytes, Chain]] = {}
            if target.next_ts > start.next_ts:
                changes, frames = _gather(wal, start, target)
                wal.sync(target, force=True)
            meta, counts = _fold(pages, changes, horizon, target)
            start = target
        if state.checkpoint_gen != meta.gen or state.checkpoint_ts != start.next_ts - 1:
            db._publish_checkpoint(meta.gen, start)
        deleted = wal.delete_before(start.segment)
    finally:
        lock.release()
    result = CheckpointResult(
        gen=meta.gen,
        ts=start.next_ts - 1,
        frames=frames,
        keys=counts.keys,
        pruned=counts.pruned,
        segments_deleted=len(deleted),
        seconds=time.perf_counter() - began,
        horizon=horizon,
        pages_freed=counts.pages_freed,
        pages_reused=counts.pages_reused,
        tables_dropped=counts.tables_dropped,
    )
    if frames or counts.keys:
        log.info(
            "checkpoint: %d frames, %d records, %d versions pruned, gen %d, ts %d, %.1f ms",
            frames,
            counts.keys,
            counts.pruned,
            meta.gen,
            result.ts,
            result.seconds * 1e3,
        )
    return result
