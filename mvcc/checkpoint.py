"""Checkpoint: fold the WAL's durable frames into the page file's version trees.

Any process may checkpoint (`db.checkpoint()`, or inline after a commit that
leaves the WAL past `CHECKPOINT_FRAMES` frames or `CHECKPOINT_BYTES` bytes
since the last checkpoint); the checkpoint lock makes it one at a time.
Commits go on meanwhile: the commit lock is taken only to publish the result.

Algorithm (`checkpoint`, checkpoint lock held)
    1. start  = the WAL position the page file's newest meta names (K1);
       target = the durable end the shared state publishes (K2).
    2. horizon (ts, gen) = the registry's: the oldest pin of any live process,
       at most what a transaction beginning now pins (K8).
    3. If target is not past start, no vacuum list names a chain at or
       below the horizon ts (versions.py V6) and the page file need not
       shrink (K10), only make sure the state publishes the page file's
       checkpoint (a checkpointer may have died between 6 and 7).
    4. Read the frames in [start, target) and group their writes by table and
       key, newest first.  A pass of the vacuum process stops after the
       frame at the horizon ts when that lies among them, and target becomes
       the position after it (K7).
    5. Sync the WAL up to target (force: under durability "normal" too), so
       the log is whole up to the point the page file will claim.
    6. One page-file write: for each touched key, and each key a vacuum list
       names at or below the horizon ts, the new versions (if any) followed by
       the chain stored so far, pruned at the horizon ts (versions.py V2); an
       empty chain deletes the key (a put per key, or one rebuild of a table
       tree the fold rewrites most of: K6); the vacuum lists follow (V6).  The
       trees of dropped tables no snapshot sees go (V7).  Then the index
       trees, in the same write (versions.py V4): under the catalog as the
       fold leaves it, each index of a table gets, for every key the fold
       touched, the entries of its new chain that the old chain lacked and
       loses those the new one lacks; an index with no tree yet gets one built
       from the whole table tree; an index tree no catalog row names any more
       is dropped.  The
       meta's user bytes name target.  Compact (K10).  Commit (pagefile.py
       P2: pages, sync, meta, sync), reusing only pages freed at or before
       the horizon gen, which is asked again just before the commit (K5).
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
     that generation (the horizon gen bounds `PageFile.begin` and
     `WriteTxn.release`), so a reader keeps its tree for as long as its
     transaction lasts.
(K5) Pages are reused as soon as the registry allows, not as of the start of
     the pass: the horizon gen is asked again right before the commit, which
     allocates most pages (its spill), and `WriteTxn.release` makes ready
     what the newer answer allows.  A pass may reuse only pages an earlier
     checkpoint freed, and those of the last one are held by the transactions
     that began before it was published; they end within milliseconds (tens
     of them on a busy machine), so while only readers younger than YOUNG
     seconds hold the horizon gen back, a pass of the vacuum process asks
     again for up to SETTLE seconds (not an inline or explicit checkpoint:
     their callers wait for them).  An older reader is a long one: no wait.
     Nor while the shared state does not yet publish the page file's
     generation (a checkpointer died between 6 and 7): every new transaction
     pins the older one until this pass publishes, so a wait would only
     lengthen the pass.  A pass that cannot reuse the last one's pages grows
     the file by what it rewrites (docs/benchmarks.md, Vacuum).
(K6) A fold that rewrites at least REBUILD_SHARE of a table's records (and at
     least REBUILD_MIN_KEYS) rebuilds the table tree: one merge of the stored
     tree's cursor with the sorted keys, each touched key folded as in step
     6, into `BTree.bulk_load` after `clear` (the old pages are freed at this
     generation like any copy-on-write page; a read-only `BTree` over the old
     root reads them meanwhile).  The same chains, index deltas and vacuum
     lists as a put per key, in less time (2,000 records of 1 KB, all
     rewritten: 19 ms against 25-49 ms for the puts, the fold alone), and the
     leaves come out packed, where puts leave the leaves that chains of two
     versions split half full.
(K7) A pass of the vacuum process folds no frame past the horizon ts when that
     ts lies among the new frames: each key written after it would keep two
     versions (the one a snapshot at the horizon sees, and the newer one:
     V2), and with large documents a chain of two versions takes an overflow
     page.  The next pass folds them as single versions.  A frame is deferred
     by one pass at most: by the next pass the horizon is past this pass's
     target, or still behind it (a long reader) and then the whole log is
     folded.  Explicit and inline checkpoints fold up to the durable end.
(K8) The horizon is bounded by the durable ts and the generation the shared
     state publishes, which are what a transaction beginning now pins, never
     by the page file's newer generation.  The registry publishes the horizon
     and a reader whose pin is below it retries with a newer one
     (locking/registry.py R3); with the page file's generation as the bound,
     after a checkpointer died between steps 6 and 7 every new transaction
     retried, reading the same state, until a checkpoint published, and if
     that one died before step 7 too (the vacuum crash test kills one every
     few tens of milliseconds) they all spun for good.
(K9) Backpressure: when a vacuum process serves the directory, a committer
     whose commit leaves the WAL past the checkpoint larger than the page file
     (and BACKLOG_FLOOR) waits for the checkpoint lock and checkpoints itself
     (database.py `_after_commit`), so writers faster than the vacuum cannot
     grow the log without bound; the commit itself is already durable.
(K10) The file shrinks without new writes: a fold's write (not a
     committer's inline one) compacts the page file when it pays
     (pagefile.py P7: live pages off the end into ready pages below), and
     step 3 writes even with nothing to fold when `compaction_due` says a
     write would move pages or cut a free end.  The pages moved are freed
     at that generation, so the pass after the readers of older roots have
     ended cuts them (`db.vacuum()` runs that pass itself when no reader
     holds it back).

Where to start when the page file has no checkpoint yet: the WAL's first
segment (nothing was ever deleted, by K1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from locking.statefile import State
from storage.btree import BTree
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
    "BACKLOG_FLOOR",
    "CHECKPOINT_BYTES",
    "CHECKPOINT_FRAMES",
    "HARD_FACTOR",
    "CheckpointResult",
    "backlogged",
    "checkpoint",
    "due",
    "meta_position",
    "vacuum",
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


SETTLE: Final = 0.2
"""K5: seconds a vacuum pass may wait for young readers of older generations to
end (a transaction descheduled on a busy machine can take a tenth of that)."""

YOUNG: Final = 0.5
"""K5: a reader whose snapshot is younger than this many seconds is waited for."""

REBUILD_SHARE: Final = 0.5
"""K6: a fold that rewrites at least this share of a table's records rebuilds
its tree (one sorted merge and a bulk load) instead of a put per record."""

REBUILD_MIN_KEYS: Final = 256
"""K6: below this many records a fold always puts (a small table is cheap either way)."""


@dataclass
class FoldCounts:
    """What one page-file write of a checkpoint did."""

    keys: int = 0  # records rewritten (new versions, or pruned)
    pruned: int = 0  # versions dropped by pruning
    tables_dropped: int = 0  # trees of dropped tables removed (V7)
    pages_freed: int = 0  # pages the write stopped reaching
    pages_reused: int = 0  # pages it wrote over free ones instead of growing the file
    pages_moved: int = 0  # live pages moved off the end of the file (K10)


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
    pages_moved: int = 0  # K10


def meta_position(meta: Meta, wal: WAL) -> LogPosition:
    """The WAL position a page-file meta names (K1)."""
    if not meta.user:
        return wal.start()
    return LogPosition.unpack(meta.user)


HARD_FACTOR: Final = 4
# K9: below this the WAL is never a backlog, whatever the page file's size
# (a small table's log may be a few times its size between two passes).
BACKLOG_FLOOR: Final = 4 * 1024 * 1024
"""Without autovacuum, committers checkpoint only at this multiple of the thresholds."""


def wal_bytes_after(state: State, segment_size: int) -> int:
    """WAL bytes between the checkpoint position and the end (segments between
    the two count as full)."""
    return (
        (state.wal_segment - state.checkpoint_segment) * segment_size
        + state.wal_offset
        - state.checkpoint_offset
    )


def backlogged(state: State, segment_size: int, page_file_bytes: Callable[[], int]) -> bool:
    """K9: whether the WAL past the checkpoint has outgrown the page file (and
    BACKLOG_FLOOR): the vacuum process is not keeping up with the committers, and
    a committer should wait for a checkpoint rather than let the log grow."""
    behind = wal_bytes_after(state, segment_size)
    return behind >= BACKLOG_FLOOR and behind >= page_file_bytes()


def due(state: State, segment_size: int, *, hard: bool = False) -> bool:
    """Whether a committer should checkpoint inline (the soft thresholds, or with
    `hard` the hard ones)."""
    factor = HARD_FACTOR if hard else 1
    return (
        state.commit_ts - state.checkpoint_ts >= CHECKPOINT_FRAMES * factor
        or wal_bytes_after(state, segment_size) >= CHECKPOINT_BYTES * factor
    )


def _hold(start: LogPosition, target: LogPosition, horizon: tuple[int, int]) -> int | None:
    """K7: the last ts a vacuum pass folds: the horizon ts when it lies among the
    new frames, else None (up to the target)."""
    return horizon[0] if start.next_ts <= horizon[0] < target.next_ts - 1 else None


def _gather(
    wal: WAL, start: LogPosition, target: LogPosition, last: int | None = None
) -> tuple[dict[int, dict[bytes, Chain]], int, LogPosition]:
    """Step 4: table id -> key -> the new versions, newest first."""
    changes: dict[int, dict[bytes, Chain]] = {}
    reader = wal.read(start, upto=target)
    frames = 0
    for frame in reader:
        if last is not None and frame.ts > last:
            return changes, frames, frame.start
        frames += 1
        for tid, key, value in decode_frame(frame.payload, f"WAL frame {frame.ts}"):
            changes.setdefault(tid, {}).setdefault(key, []).insert(0, (frame.ts, value))
    if reader.position.next_ts != target.next_ts:
        raise CorruptPage(
            f"the log ends at ts {reader.position.next_ts - 1} ({reader.stopped}) "
            f"but ts {target.next_ts - 1} is durable",
            file=wal.directory,
        )
    return changes, frames, target


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
    reuse: Callable[[], int] | None = None,
    compact: bool = True,
) -> tuple[Meta, FoldCounts]:
    """Step 6: one page-file write; return its meta and what it did.  `reuse`,
    called just before the commit, gives the horizon gen again (K5)."""
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
            if work[tid]:
                folded[tid] = _fold_table(txn, tid, work[tid], horizon[0], where, counts)
        indexes, named = _catalog(txn, where)
        counts.tables_dropped = _drop_tables(txn, named)
        _fold_indexes(txn, folded, indexes, where)
        txn.user_meta = target.pack()
        if reuse is not None:
            txn.release(reuse())  # K5: most pages are allocated by the commit's spill
        if compact:
            counts.pages_moved = txn.compact()  # K10, after K5: the most ready pages
        meta = txn.commit()
    except BaseException:
        txn.abort()
        raise
    counts.pages_freed, counts.pages_reused = txn.pages_freed, txn.pages_reused
    return meta, counts


def _fold_table(
    txn: WriteTxn,
    tid: int,
    work: dict[bytes, Chain],
    horizon_ts: int,
    where: str,
    counts: FoldCounts,
) -> list[tuple[bytes, Chain, Chain]]:
    """Step 6 for one table: each key of `work` gets its new versions (if any)
    followed by its stored chain, pruned at the horizon ts; its vacuum list
    follows (V6).  Returns (key, stored chain, new chain) per key, in key order,
    for the index trees.  A put per key, or a rebuild of the whole tree when
    the fold rewrites most of it (K6)."""
    tree = txn.tree(tree_name(tid), create=True)
    listed = txn.tree(vacuum_tree_name(tid), create=True)
    assert tree is not None and listed is not None  # create=True
    out: list[tuple[bytes, Chain, Chain]] = []

    def fold(key: bytes, old: Chain) -> Chain:
        chain = work[key]
        kept = prune(chain + old, horizon_ts)
        counts.pruned += len(chain) + len(old) - len(kept)
        counts.keys += 1
        out.append((key, old, kept))
        was = vacuum_entry(key, old) if old else None
        now = vacuum_entry(key, kept) if kept else None
        if was != now:
            if was is not None:
                listed.delete(was)
            if now is not None:
                listed.put(now, b"")
        return kept

    if _rebuilds(txn, tree, len(work)):
        stored = BTree(txn, tree.root)  # read-only: its pages stay until the commit
        tree.clear()
        tree.bulk_load(_merged(stored, work, fold, where))
        return out
    for key in sorted(work):
        data = tree.get(key)
        kept = fold(key, [] if data is None else decode_chain(data, where))
        if kept:
            tree.put(key, encode_chain(kept))
        elif data is not None:
            tree.delete(key)
    return out


def _rebuilds(txn: WriteTxn, tree: BTree, keys: int) -> bool:
    """K6: whether a fold of `keys` records rewrites enough of `tree` to rebuild
    it.  Counts the tree's records from its leaves' key lists (no value read),
    and stops once they are too many: the cost is that of the fold's share."""
    if keys < REBUILD_MIN_KEYS or tree.changed:
        return False
    limit = keys / REBUILD_SHARE
    root = tree.root
    stack = [] if root is None else [txn.node(*root)]
    total = 0
    while stack:
        node = stack.pop()
        if node.kids is None:
            total += len(node.keys)
            if total > limit:
                return False
        else:
            stack.extend(txn.node(k, g) for k, g in zip(node.kids, node.gens))
    return True


def _merged(
    stored: BTree,
    work: dict[bytes, Chain],
    fold: Callable[[bytes, Chain], Chain],
    where: str,
) -> Iterator[tuple[bytes, bytes]]:
    """K6: the rebuilt tree's (key, encoded chain) pairs, in key order: the stored
    tree's records merged with the keys of `work`, each of those folded."""
    todo = sorted(work)
    i, n = 0, len(todo)
    for key, data in stored.cursor():
        while i < n and todo[i] < key:  # a record the stored tree lacks
            kept = fold(todo[i], [])
            if kept:
                yield todo[i], encode_chain(kept)
            i += 1
        if i < n and todo[i] == key:
            i += 1
            kept = fold(key, decode_chain(data, where))
            if kept:
                yield key, encode_chain(kept)
        else:
            yield key, data
    for key in todo[i:]:
        kept = fold(key, [])
        if kept:
            yield key, encode_chain(kept)


def _upper(state: State, meta: Meta) -> tuple[int, int]:
    """K8: the bound of the horizon a checkpoint computes: what a transaction
    beginning now pins, the durable ts and the generation the shared state
    publishes (not the page file's, which is newer when a checkpointer died
    between steps 6 and 7)."""
    return state.durable_ts, min(meta.gen, state.checkpoint_gen)


def _later(db: Database, state: State, meta: Meta, settle: float) -> Callable[[], int]:
    """K5: the horizon gen asked again when the fold is about to allocate, with
    the same bound as step 2; while it is below `meta`'s, the shared state
    publishes `meta`'s, and every reader below it took its snapshot less than
    YOUNG seconds ago (transactions that began before the last checkpoint was
    published), asked again for up to `settle` seconds.  An older reader is a
    long one: no wait for it."""

    # Readers pin the generation the shared state publishes: until it publishes
    # meta's (a checkpointer died between steps 6 and 7, and this pass publishes
    # it at step 7), every new transaction pins the one before, and a wait for
    # them would only make this pass longer (and a pass that never ends).
    published = state.checkpoint_gen == meta.gen

    def reuse() -> int:
        deadline = time.monotonic() + settle
        while True:
            gen = db.registry.horizon(_upper(state, meta))[1]
            if (
                gen >= meta.gen
                or not published
                or time.monotonic() >= deadline
                or not _young(db, meta.gen)
            ):
                return gen
            time.sleep(settle / 50)

    return reuse


def _young(db: Database, gen: int) -> bool:
    """K5: whether every live reader of a generation below `gen` pinned it less
    than YOUNG seconds ago."""
    oldest = time.time_ns() - int(YOUNG * 1e9)
    return all(r.since_ns > oldest for r in db.registry.readers() if r.gen < gen)


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


VACUUM_PASSES: Final = 3
"""K10: passes of one `db.vacuum()`: fold and free, move the live pages off the
end into the pages just freed, cut the end; it stops early when a pass
frees and moves nothing."""


def vacuum(db: Database) -> CheckpointResult:
    """`db.vacuum()`: checkpoints until the file is as small as the readers
    allow (K10), at most VACUUM_PASSES; what they did, summed."""
    first = checkpoint(db, wait=True)
    assert first is not None  # wait=True
    total = last = first
    for _ in range(VACUUM_PASSES - 1):
        if not (last.pages_freed or last.pages_moved):
            break
        step = checkpoint(db, wait=True)
        assert step is not None
        if step.gen == total.gen:  # nothing was due
            break
        last = step
        total = replace(
            step,
            frames=total.frames + step.frames,
            keys=total.keys + step.keys,
            pruned=total.pruned + step.pruned,
            segments_deleted=total.segments_deleted + step.segments_deleted,
            seconds=total.seconds + step.seconds,
            pages_freed=total.pages_freed + step.pages_freed,
            pages_reused=total.pages_reused + step.pages_reused,
            tables_dropped=total.tables_dropped + step.tables_dropped,
            pages_moved=total.pages_moved + step.pages_moved,
        )
    return total


def checkpoint(
    db: Database, *, wait: bool, background: bool = False, compact: bool = True
) -> CheckpointResult | None:
    """Run steps 1-8 now, in this process; the caller holds no lock of the directory.
    With `wait` false, return None at once if another checkpoint is running.
    `background`: a pass of the vacuum process, which no committer waits for:
    it may wait for young readers (K5) and folds no frame past the horizon ts
    when that lies among the new frames (K7).  `compact` false: no K10 (a
    committer's inline checkpoint, whose latency a compaction's walk over
    every tree would add to its commit)."""
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
        horizon = db.registry.horizon(_upper(state, meta))
        if db.faults.vacuum_ignores_horizon:  # faults.py F5: a planted bug
            horizon = (state.durable_ts, meta.gen)
        if (
            target.next_ts > start.next_ts
            or _due(pages.snapshot(meta), horizon[0])
            or (compact and pages.compaction_due(meta, horizon[1]))  # K10
        ):
            changes: dict[int, dict[bytes, Chain]] = {}
            if target.next_ts > start.next_ts:
                last = _hold(start, target, horizon) if background else None
                changes, frames, target = _gather(wal, start, target, last)
                wal.sync(target, force=True)
            reuse = _later(db, state, meta, SETTLE if background else 0.0)
            meta, counts = _fold(pages, changes, horizon, target, reuse, compact)
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
        pages_moved=counts.pages_moved,
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
