"""Version chains in the page file, and the read view of one checkpoint.

A table's records live in the page-file tree ``tree_name(table id)``, keyed by
the encoded primary key.  Each value is the key's version chain: the versions
the last checkpoints folded in (and pruning kept), newest first.

Chain encoding (docs/format.md "Version chains"): one msgpack array
``[ts1, doc1, ts2, doc2, ...]``, ts descending, each doc the packed document
(bin) or nil for a tombstone.  Flat rather than nested: one array header per
record instead of one per version.

Invariants
(V1) A chain is non-empty, its ts strictly decrease, and it never ends in a
     tombstone at or below the horizon it was pruned with (that tombstone and
     "no record" read the same to every snapshot at or above the horizon).
(V2) `prune(chain, h)` keeps every version newer than h and the newest one at
     or below h: exactly what snapshots S >= h can see (the newest version with
     ts <= S).  Nothing a live snapshot can read is dropped, since the horizon
     is at or below every live snapshot (locking/registry.py R3).
(V3) A chain that does not decode is a CorruptionError naming the tree and
     key's page file, never read as data.

Index trees: ``index_tree_name(index id)`` holds, for every version a table
tree's chains hold, the version's entry in that index (mvcc/index.py), as a
key with an empty value.  The checkpoint maintains them with the table trees
in the same page-file commit (mvcc/checkpoint.py), and builds an index's tree
at the first checkpoint after the index was created.
(V4) In one generation an index tree, when it exists, holds exactly the
     entries of the versions in its table's tree.  Until it exists,
     `PageView.index_entries` computes the same set from the table tree.
(V5) An entry's value is the packed document of its chain's head (newest)
     version when it is that version's entry, and empty otherwise.  A reader
     whose snapshot S is at or above the view's ts F, with no version of the
     record in the memtable in (F, S], sees exactly the head: it takes the
     document from the entry (no table-tree read, no re-check) and skips
     empty entries unread.  The cost: the head documents are stored once
     more per index (a covering index).

Vacuum lists: ``vacuum_tree_name(table id)`` lists the chains of that table's
tree that a later horizon could shorten, so that a vacuum pass reads only them
and not the whole table (PostgreSQL's visibility map, inverted).
(V6) In one generation the vacuum list of a table holds exactly one key,
     ``due ts (8 bytes, big-endian) + record key``, with an empty value, for
     each chain of the table tree that has more than one version or a delete
     at its head (`vacuum_entry`).  The due ts is the smallest horizon at
     which pruning shortens the chain: the ts of its second-oldest version
     (then the oldest is no longer the newest one at or below the horizon),
     or for a lone delete its own ts.  Below it nothing of the chain is
     prunable, so a pass prunes the keys in [0, horizon + 1) of the list and
     reads no other chain; the rewritten chain gets its new due ts.
(V7) A table tree and its vacuum list exist only while some version of some
     catalog row names the table id: once pruning has removed the last one (a
     dropped table no snapshot can see), the same fold drops both trees.

(V8) Counting without reading: the records a snapshot at or above a
     generation's ts sees in a table tree are its chains less those headed
     by a delete, and V6 lists every one of those.  So `PageView.live` is the
     tree's key count (`BTree.count`: leaf key lists only) less the listed
     chains whose head is a delete: it reads the chains the vacuum list names
     and no other, so it costs what the dead versions cost, not the table.

`PageView` is one process's handle on one checkpoint generation: the page
file's `Snapshot` plus a cache of opened trees.  A transaction keeps the view
it began with, so a checkpoint that lands meanwhile changes nothing it reads
(the pages of its generation are not reused while it is pinned: the
registry's gen and `PageFile.begin(horizon=)`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from storage.btree import BTree
from storage.codec import pack, unpack, unpack_doc
from storage.errors import CorruptPage
from storage.keys import decode_key
from storage.pagefile import Snapshot

from .index import IndexDef, entry_key

__all__ = [
    "Chain",
    "PageView",
    "chain_entries",
    "decode_chain",
    "encode_chain",
    "head_ts",
    "index_tree_name",
    "prune",
    "tree_name",
    "vacuum_entry",
    "vacuum_tree_name",
    "visible",
]

Chain = list[tuple[int, bytes | None]]


def tree_name(tid: int) -> bytes:
    """The page-file tree of table id `tid`."""
    return b"t" + tid.to_bytes(8, "big")


def index_tree_name(index_id: int) -> bytes:
    """The page-file tree of the index with id `index_id`."""
    return b"i" + index_id.to_bytes(8, "big")


def vacuum_tree_name(tid: int) -> bytes:
    """The page-file tree listing the chains of table `tid` that pruning may
    shorten later (V6)."""
    return b"v" + tid.to_bytes(8, "big")


def vacuum_entry(key: bytes, chain: Chain) -> bytes | None:
    """The chain's key in its table's vacuum list, or None when it has nothing a
    later horizon could prune: one version, and not a delete (V6)."""
    if len(chain) == 1:
        return None if chain[0][1] is not None else chain[0][0].to_bytes(8, "big") + key
    return chain[-2][0].to_bytes(8, "big") + key


def chain_entries(key: bytes, chain: Chain, index: IndexDef) -> dict[bytes, bytes]:
    """The entries in `index` of the versions of one chain, each with its value
    in the index tree: the head version's packed document for the head's
    entry, empty for the others (V4, V5)."""
    pk = decode_key(key)[0]
    out: dict[bytes, bytes] = {}
    for i, (_ts, value) in enumerate(chain):
        if value is not None:
            entry = entry_key(unpack_doc(value), index, pk)
            if entry is not None and entry not in out:
                out[entry] = value if i == 0 else b""
    return out


def encode_chain(chain: Chain) -> bytes:
    flat: list[Any] = []
    for ts, value in chain:
        flat.append(ts)
        flat.append(value)
    return pack(flat)


def decode_chain(data: bytes, where: str) -> Chain:
    """The chain stored in `data`; CorruptPage naming `where` if it is not one (V3)."""
    try:
        flat = unpack(data)
        if type(flat) is not list or not flat or len(flat) % 2:
            raise ValueError("not a flat list of (ts, value) pairs")
        chain: Chain = []
        last = None
        for i in range(0, len(flat), 2):
            ts, value = flat[i], flat[i + 1]
            if type(ts) is not int or (last is not None and ts >= last):
                raise ValueError(f"ts {ts!r} out of order")
            if value is not None and type(value) is not bytes:
                raise ValueError("a version is neither a document nor a tombstone")
            chain.append((ts, value))
            last = ts
        return chain
    except (ValueError, TypeError) as exc:
        raise CorruptPage(f"a version chain does not decode: {exc}", file=where) from exc


def head_ts(data: bytes, where: str) -> int:
    """The ts of the newest version in an encoded chain."""
    return decode_chain(data, where)[0][0]


def visible(chain: Chain, snapshot: int) -> bytes | None:
    """The document snapshot `snapshot` sees in `chain` (None: no record)."""
    for ts, value in chain:
        if ts <= snapshot:
            return value
    return None


def prune(chain: Chain, horizon: int) -> Chain:
    """The versions some snapshot at or above `horizon` can see (V1, V2)."""
    for i, (ts, value) in enumerate(chain):
        if ts <= horizon:
            return chain[:i] if value is None else chain[: i + 1]
    return chain


class PageView:
    """The trees of one checkpoint generation, as one process reads them.

    `ts` is the checkpoint's ts: the trees hold every version committed at or
    before it that pruning kept, and nothing newer.
    """

    __slots__ = ("_computed", "_live", "_trees", "gen", "snapshot", "ts", "where")

    def __init__(self, snapshot: Snapshot | None, ts: int, where: str) -> None:
        self.snapshot = snapshot
        self.gen = 0 if snapshot is None else snapshot.gen
        self.ts = ts
        self.where = where
        self._trees: dict[int | bytes, BTree | None] = {}
        # (tid, index id) -> sorted entries and (entry, value) pairs (V4, V5)
        self._computed: dict[tuple[int, int], tuple[list[bytes], list[tuple[bytes, bytes]]]] = {}
        self._live: dict[int, int] = {}  # tid -> records at the head (V8)

    def tree(self, tid: int) -> BTree | None:
        try:
            return self._trees[tid]
        except KeyError:
            tree = None if self.snapshot is None else self.snapshot.tree(tree_name(tid))
            self._trees[tid] = tree
            return tree

    def index_entries(
        self,
        tid: int,
        index: IndexDef,
        lo: bytes | None,
        hi: bytes | None,
        *,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """The entries of `index` in [lo, hi) for the versions of this generation,
        in order (descending when `reverse`): its index tree's, read lazily (the
        generation's pages stay while it is pinned), or computed from the table
        tree (V4)."""
        name = index_tree_name(index.id)
        try:
            tree = self._trees[name]
        except KeyError:
            tree = None if self.snapshot is None else self.snapshot.tree(name)
            self._trees[name] = tree
        if tree is not None:
            return tree.cursor(lo, hi, reverse=reverse)
        computed = self._computed.get((tid, index.id))
        if computed is None:
            found: dict[bytes, bytes] = {}
            for key, data in self.items(tid, None, None):
                found.update(chain_entries(key, decode_chain(data, self.where), index))
            pairs = sorted(found.items())
            computed = self._computed[(tid, index.id)] = ([e for e, _v in pairs], pairs)
        entries, pairs = computed
        start = 0 if lo is None else bisect.bisect_left(entries, lo)
        end = len(entries) if hi is None else bisect.bisect_left(entries, hi)
        return reversed(pairs[start:end]) if reverse else iter(pairs[start:end])

    def chain(self, tid: int, key: bytes) -> Chain | None:
        tree = self.tree(tid)
        if tree is None:
            return None
        data = tree.get(key)
        return None if data is None else decode_chain(data, self.where)

    def read(self, tid: int, key: bytes, snapshot: int) -> bytes | None:
        """The document `snapshot` sees under `key` (None: no record).  The point
        read's hot path: decodes the flat chain once and stops at the first
        version at or below the snapshot, checking only what it returns (V3)."""
        tree = self.tree(tid)
        if tree is None:
            return None
        data = tree.get(key)
        if data is None:
            return None
        try:
            flat = unpack(data)
            for i in range(0, len(flat), 2):
                if flat[i] <= snapshot:
                    value = flat[i + 1]
                    if value is None or type(value) is bytes:
                        return value
                    break
            else:
                return None
        except (ValueError, TypeError, IndexError):
            pass
        return visible(decode_chain(data, self.where), snapshot)  # raises the CorruptPage

    def live(self, tid: int) -> int:
        """How many records a snapshot at or above `ts` sees in this generation's
        tree of the table (V8), cached: a generation never changes."""
        count = self._live.get(tid)
        if count is None:
            tree = self.tree(tid)
            count = 0 if tree is None else tree.count()
            listed = None if self.snapshot is None else self.snapshot.tree(vacuum_tree_name(tid))
            if tree is not None and listed is not None:
                for entry, _empty in listed.cursor():
                    data = tree.get(entry[8:])
                    if data is not None and decode_chain(data, self.where)[0][1] is None:
                        count -= 1
            self._live[tid] = count
        return count

    def newest_ts(self, tid: int, key: bytes) -> int:
        chain = self.chain(tid, key)
        return 0 if chain is None else chain[0][0]

    def items(self, tid: int, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, encoded chain) in [lo, hi), in key order."""
        tree = self.tree(tid)
        if tree is None:
            return iter(())
        return tree.cursor(lo, hi)
