"""Copy-on-write B+tree of bytes keys and bytes values over a page store.

A tree is a root reference `(pgno, gen)` into a `NodeStore`.  Committed nodes
are immutable: a write copies every node on the path it changes into a *dirty*
node (pgno 0) held in memory, and `spill` writes the dirty nodes bottom-up to
fresh pages when the write commits.  The old root, and every page it reaches,
stays readable until the freelist hands those pages out again, which it does
only past the horizon (storage/freelist.py).

Invariants
(B1) Keys within a node are strictly ascending; every key in child i of a
     branch is >= keys[i-1] and < keys[i] (the separators).
(B2) All leaves are at the same depth.
(B3) A branch has len(keys) + 1 children, at least two; it records each
     child's page number and the generation that wrote it, and a child whose
     page header carries another generation is a stale page: CorruptPage,
     never data.
(B4) A clean node (pgno != 0) is never mutated: it may be shared by the decoded
     page cache and by every snapshot that reaches it.
(B5) A node's estimated encoded size is an upper bound of its real size, and a
     dirty node is split before it is spilled if the estimate exceeds the
     capacity, so every spilled node fits its page.
(B6) A key is at most `max_key` bytes (capacity / 8: 504 for 4 KiB pages); a
     value is at most MAX_VALUE_SIZE (16 MiB).  A value stays in its leaf while
     its entry costs (`_entry_cost`: key + value + two bin headers) at most
     `max_inline` = (capacity - _NODE_COST) // 2, 2,008 B for 4 KiB pages (a
     value of 1,998 B less its key); a larger one goes to an overflow run.  So
     any two entries fit one leaf, and a branch has room for at least seven.  This
     bound is what splits need: a node over-full by one entry (at most capacity
     + max_inline), or a merge of an underfull node with its sibling (under
     1.25 x capacity), always has a cut whose halves both fit (`_cut`; a branch
     entry, at most max_key + 23 B, is far inside the bound).  It is a writer's
     policy: a reader takes inline and overflow values alike, so a file written
     under the older quarter-capacity rule reads as before.

Algorithm
- get: from the root, bisect_right the separators at each branch, bisect_left
  at the leaf.  A warm get decodes nothing: nodes come from the store's cache.
- put: descend making each node on the path dirty (copying clean ones and
  freeing their pages), insert into the leaf, then split upwards while a node is
  over capacity, each at the cut nearest half its size where both halves fit
  (B6); a split root grows the tree by one level.
- delete: descend as for put, remove, then walk up merging a node under a
  quarter of the capacity with a sibling (or redistributing when the two do not
  fit one page); a root branch with one child is replaced by that child.
- bulk_load: sorted input packed into leaves at ~90% fill (a leaf closes only
  once it holds two entries, so only the last may hold one), then branches,
  bottom-up.
- cursor: a stack of (branch, index) pairs walked forwards or backwards.
- relocate(limit): copy every node at page `limit` or beyond, and every
  overflow run there that consecutive free pages below the limit can take,
  with the path down to it (a subtree is walked only if it reaches
  such a page, found by one read-only pass); the spill writes the copies
  into the lowest free pages, and the old pages are freed as by any change.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, Union, cast

from .codec import MAX_VALUE_SIZE
from .errors import StorageError, TooLarge
from .format import CAPACITY_SLACK

__all__ = ["BTree", "Node", "NodeStore", "WritableStore", "max_key_size"]


def max_key_size(page_size: int) -> int:
    """The longest key a tree of `page_size`-byte pages holds (B6)."""
    return (page_size - CAPACITY_SLACK) // 8


# Bulk load leaves room for a few inserts before the first split.
BULK_FILL = 0.9

# A leaf value is the bytes themselves or, for a large one, a reference to an
# overflow run: [first pgno, generation, npages, length] (a list, as msgpack
# decodes it).
Value = Union[bytes, list[Any]]  # noqa: UP007 (a runtime alias; X | Y needs 3.10 at runtime)

# Cost estimates, upper bounds of msgpack's encoding (B5): a bin header is at
# most 5 bytes, an int at most 9, an overflow reference at most 1 + 4 * 9.
_BIN = 5
_REF_COST = 40
_KID_COST = 18
_NODE_COST = 16


class Node:
    """A decoded page.  Leaf: keys + vals.  Branch: keys + kids + gens (kids may
    hold dirty Node objects while a write is in progress)."""

    __slots__ = ("gen", "gens", "keys", "kids", "pgno", "size", "vals")

    def __init__(
        self,
        keys: list[bytes],
        vals: list[Any] | None = None,
        kids: list[Any] | None = None,
        gens: list[int] | None = None,
        pgno: int = 0,
        gen: int = 0,
    ) -> None:
        self.keys = keys
        self.vals: list[Any] = vals if vals is not None else []
        # None marks a leaf; a branch's list may hold dirty Node objects during
        # a write (typed Any: mypy cannot follow the leaf/branch split).
        self.kids: Any = kids
        self.gens: list[int] = gens if gens is not None else []
        self.pgno = pgno
        self.gen = gen
        self.size = -1

    @property
    def is_leaf(self) -> bool:
        return self.kids is None

    def estimate(self) -> int:
        """Upper bound of the encoded body size (B5)."""
        size = _NODE_COST + sum(len(k) for k in self.keys) + _BIN * len(self.keys)
        if self.kids is None:
            assert self.vals is not None
            for v in self.vals:
                size += len(v) + _BIN if v.__class__ is bytes else _REF_COST
        else:
            size += _KID_COST * len(self.kids)
        return size

    def __repr__(self) -> str:
        kind = "leaf" if self.kids is None else "branch"
        return f"<{kind} pgno={self.pgno} gen={self.gen} keys={len(self.keys)}>"


class NodeStore(Protocol):
    """What a tree needs to read: decoded nodes and overflow values."""

    page_size: int
    cache: dict[int, Node]  # decoded clean nodes by pgno; the tree checks the generation

    def node(self, pgno: int, gen: int) -> Node: ...
    def overflow(self, ref: list[Any]) -> bytes: ...


class WritableStore(NodeStore, Protocol):
    """What a tree needs to change: the write's generation, page frees, overflow writes."""

    gen: int

    def free(self, pgno: int, npages: int = 1) -> None: ...
    def write_overflow(self, data: bytes) -> list[Any]: ...
    def write_node(self, node: Node) -> int: ...
    def room_below(self, npages: int, limit: int) -> bool: ...


def _entry_cost(key: bytes, value: Any) -> int:
    return len(key) + _BIN + (len(value) + _BIN if value.__class__ is bytes else _REF_COST)


def _cut(costs: list[int], budget: int) -> int:
    """Where to cut a node's entries in two (the left keeps costs[:m], 1 <= m < n):
    at the first entry that brings the left to half the total, or just before
    it if the left would then exceed `budget`.

    Both parts fit `budget` whenever sum(costs) <= 2 * budget - max(costs): the
    prefix sums climb in steps of at most max(costs), so one lands in
    [total - budget, budget], and the cut above finds it (B6 keeps every split
    within that bound)."""
    total = sum(costs)
    acc = 0
    cut = len(costs) - 1
    for m in range(1, len(costs)):
        acc += costs[m - 1]
        if 2 * acc >= total:
            cut = m - 1 if acc > budget else m
            break
    # Outside the bound above a half could be empty (a branch would then move
    # up a separator it does not have): fail loudly, never write such a node.
    assert 0 < cut < len(costs), (costs, budget)
    return cut


class BTree:
    """One tree: read-only over a NodeStore, or writable inside a write (a WritableStore).

    Concurrency: a read-only tree over committed pages may be shared by threads
    (the cache is a dict and pages never change).  A writable tree belongs to
    one write and one thread.
    """

    __slots__ = (
        "_cache",
        "_dirty",
        "_root",
        "_rootnode",
        "_store",
        "_wstore",
        "capacity",
        "max_inline",
        "max_key",
    )

    def __init__(
        self, store: NodeStore, root: tuple[int, int] | None, *, writable: bool = False
    ) -> None:
        self._store = store
        self._wstore = cast(WritableStore, store) if writable else None
        self._root: Any = root if root and root[0] else None
        # A read-only tree keeps its decoded root: clean nodes never change (B4).
        self._rootnode: Node | None = None
        self._cache = store.cache
        self._dirty = False
        self.capacity = store.page_size - CAPACITY_SLACK
        self.max_key = max_key_size(store.page_size)
        # Half a node's room (B6), as LMDB's node limit (half a page, from
        # MDB_MINKEYS = 2).  Not SQLite's table-leaf limit (nearly a page): it
        # needs a balance over three siblings where a two-way split will not
        # do; nor its spilling of only a payload's tail, a new reference form.
        self.max_inline = (self.capacity - _NODE_COST) // 2

    # -- reading -------------------------------------------------------------

    @property
    def root(self) -> tuple[int, int] | None:
        """The committed root reference (None for an empty tree)."""
        r = self._root
        if r is None:
            return None
        if r.__class__ is Node:
            raise StorageError("the tree has unspilled changes")
        return cast(tuple[int, int], r)

    @property
    def changed(self) -> bool:
        return self._dirty

    def _node(self, ref: Any, gen: int) -> Node:
        return ref if ref.__class__ is Node else self._store.node(ref, gen)

    def _root_node(self) -> Node | None:
        r = self._root
        if r is None:
            return None
        return r if r.__class__ is Node else self._store.node(r[0], r[1])

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`, or None.

        The hot path: one bisect per level and a cache lookup inlined here (a
        method call per level costs a fifth of a warm get), nothing decoded.
        """
        node = self._rootnode
        if node is None:
            node = self._root_node()
            if node is None:
                return None
            if self._wstore is not None:
                return self._get_dirty(node, key)
            self._rootnode = node
        cache = self._cache
        while node.kids is not None:
            i = bisect_right(node.keys, key)
            pgno = node.kids[i]
            kid = cache.get(pgno)
            if kid is None or kid.gen != node.gens[i]:
                kid = self._store.node(pgno, node.gens[i])
            node = kid
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            v = node.vals[i]
            return v if v.__class__ is bytes else self._store.overflow(v)
        return None

    def _get_dirty(self, node: Node, key: bytes) -> bytes | None:
        """get() inside a write, where a branch may hold dirty children."""
        while node.kids is not None:
            i = bisect_right(node.keys, key)
            node = self._node(node.kids[i], node.gens[i])
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self._value(node.vals[i])
        return None

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def cursor(
        self,
        lo: bytes | None = None,
        hi: bytes | None = None,
        *,
        lo_inclusive: bool = True,
        hi_inclusive: bool = False,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with lo <(=) key <(=) hi, ascending or descending."""
        if reverse:
            pairs = self._backward(hi, hi_inclusive)
            for key, value in pairs:
                if lo is not None and (key < lo or (key == lo and not lo_inclusive)):
                    return
                yield key, value
        else:
            for key, value in self._forward(lo, lo_inclusive):
                if hi is not None and (key > hi or (key == hi and not hi_inclusive)):
                    return
                yield key, value

    def count(self) -> int:
        """The number of keys, from the leaves' key lists: no value is read or
        decoded (statistics)."""
        root = self._root_node()
        if root is None:
            return 0
        total = 0
        stack = [root]
        while stack:
            node = stack.pop()
            if node.kids is None:
                total += len(node.keys)
            else:
                stack.extend(self._node(k, g) for k, g in zip(node.kids, node.gens))
        return total

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return self._forward(None, True)

    def _value(self, v: Any) -> bytes:
        return v if v.__class__ is bytes else self._store.overflow(v)

    def _forward(self, lo: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, bytes]]:
        node = self._root_node()
        if node is None:
            return
        stack: list[list[Any]] = []
        while node.kids is not None:
            i = 0 if lo is None else bisect_right(node.keys, lo)
            stack.append([node, i])
            node = self._node(node.kids[i], node.gens[i])
        if lo is None:
            i = 0
        else:
            i = bisect_left(node.keys, lo) if inclusive else bisect_right(node.keys, lo)
        while True:
            keys, vals = node.keys, node.vals
            assert vals is not None
            while i < len(keys):
                yield keys[i], self._value(vals[i])
                i += 1
            while stack:
                top = stack[-1]
                top[1] += 1
                if top[1] < len(top[0].kids):
                    break
                stack.pop()
            else:
                return
            node = self._node(top[0].kids[top[1]], top[0].gens[top[1]])
            while node.kids is not None:
                stack.append([node, 0])
                node = self._node(node.kids[0], node.gens[0])
            i = 0

    def _backward(self, hi: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, bytes]]:
        node = self._root_node()
        if node is None:
            return
        stack: list[list[Any]] = []
        while node.kids is not None:
            i = len(node.kids) - 1 if hi is None else bisect_right(node.keys, hi)
            stack.append([node, i])
            node = self._node(node.kids[i], node.gens[i])
        if hi is None:
            i = len(node.keys)
        else:
            i = bisect_right(node.keys, hi) if inclusive else bisect_left(node.keys, hi)
        while True:
            keys, vals = node.keys, node.vals
            assert vals is not None
            while i > 0:
                i -= 1
                yield keys[i], self._value(vals[i])
            while stack:
                top = stack[-1]
                top[1] -= 1
                if top[1] >= 0:
                    break
                stack.pop()
            else:
                return
            node = self._node(top[0].kids[top[1]], top[0].gens[top[1]])
            while node.kids is not None:
                last = len(node.kids) - 1
                stack.append([node, last])
                node = self._node(node.kids[last], node.gens[last])
            i = len(node.keys)

    # -- writing -------------------------------------------------------------

    def _w(self) -> WritableStore:
        if self._wstore is None:
            raise StorageError("this tree is read-only: it belongs to a snapshot")
        return self._wstore

    def _copy(self, node: Node) -> Node:
        """A dirty copy of a clean node; its page is freed at this write (B4)."""
        w = self._w()
        if node.kids is None:
            new = Node(list(node.keys), vals=list(node.vals))
        else:
            new = Node(list(node.keys), kids=list(node.kids), gens=list(node.gens))
        new.gen = w.gen
        new.size = new.estimate()
        w.free(node.pgno)
        return new

    def _wroot(self) -> Node:
        r = self._root
        if r is None:
            node = Node([], vals=[], gen=self._w().gen)
            node.size = _NODE_COST
        elif r.__class__ is Node:
            return r
        else:
            node = self._copy(self._store.node(r[0], r[1]))
        self._root = node
        self._dirty = True
        return node

    def _wchild(self, parent: Node, i: int) -> Node:
        kid = parent.kids[i]
        if kid.__class__ is Node:
            return kid
        node = self._copy(self._store.node(kid, parent.gens[i]))
        parent.kids[i] = node
        return node

    def _check_key(self, key: bytes) -> None:
        if key.__class__ is not bytes:
            raise TypeError(f"keys are bytes, not {type(key).__name__}")
        if len(key) > self.max_key:
            raise TooLarge("key", size=len(key), limit=self.max_key)

    def _descend(self, key: bytes) -> tuple[Node, list[tuple[Node, int]]]:
        node = self._wroot()
        path: list[tuple[Node, int]] = []
        while node.kids is not None:
            i = bisect_right(node.keys, key)
            path.append((node, i))
            node = self._wchild(node, i)
        return node, path

    def _drop_value(self, v: Any) -> None:
        if v.__class__ is not bytes:
            self._w().free(v[0], v[2])

    def _store_value(self, key: bytes, value: bytes) -> Any:
        """The leaf entry for `value`: itself, or a reference to a new overflow run (B6)."""
        if value.__class__ is not bytes:
            raise TypeError(f"values are bytes, not {type(value).__name__}")
        if len(value) > MAX_VALUE_SIZE:
            raise TooLarge("value", size=len(value), limit=MAX_VALUE_SIZE)
        if _entry_cost(key, value) > self.max_inline:
            return self._w().write_overflow(value)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        """Insert or replace."""
        self._check_key(key)
        stored = self._store_value(key, value)
        leaf, path = self._descend(key)
        keys = leaf.keys
        vals = leaf.vals
        assert vals is not None
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            old = vals[i]
            vals[i] = stored
            leaf.size += _entry_cost(key, stored) - _entry_cost(key, old)
            self._drop_value(old)
        else:
            keys.insert(i, key)
            vals.insert(i, stored)
            leaf.size += _entry_cost(key, stored)
        if leaf.size > self.capacity:
            self._split_up(leaf, path)

    def delete(self, key: bytes) -> bool:
        """Remove `key`; False if it was absent (and then nothing is copied)."""
        if self.get(key) is None:
            return False
        leaf, path = self._descend(key)
        i = bisect_left(leaf.keys, key)
        old = leaf.vals[i]
        del leaf.keys[i]
        del leaf.vals[i]
        leaf.size -= _entry_cost(key, old)
        self._drop_value(old)
        self._rebalance(leaf, path)
        return True

    def apply(self, changes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply a batch of puts (value bytes) and deletes (value None)."""
        for key, value in changes:
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def clear(self) -> None:
        """Free every page of the tree; it becomes empty."""
        w = self._w()
        root = self._root
        self._root = None
        self._dirty = True
        if root is None:
            return
        stack: list[tuple[Any, int]] = [(root, 0) if root.__class__ is Node else root]
        while stack:
            ref, gen = stack.pop()
            node = self._node(ref, gen)
            if node.pgno:
                w.free(node.pgno)
            if node.kids is None:
                for v in node.vals:
                    self._drop_value(v)
            else:
                stack.extend(zip(node.kids, node.gens))

    def relocate(self, limit: int) -> int:
        """Copy every clean node lying at page `limit` or beyond, every
        overflow run there that free pages below `limit` can take whole, and
        the path down to each, so that the spill puts them in the lowest free
        pages (freelist.py allocates lowest first) and a later
        commit can cut the end of the file.  Returns the pages moved from
        there.  Reads every node of the tree once; copies only what it must."""
        store, w = self._store, self._w()
        reaches: dict[int, bool] = {}  # clean pgno -> its subtree holds a far page

        def far(ref: int, gen: int) -> bool:
            got = reaches.get(ref)
            if got is None:
                node = store.node(ref, gen)
                if ref >= limit:
                    got = True
                elif node.kids is None:
                    got = any(v.__class__ is not bytes and v[0] + v[2] > limit for v in node.vals)
                else:
                    got = any(far(k, g) for k, g in zip(node.kids, node.gens))
                reaches[ref] = got
            return got

        def move(node: Node) -> int:  # `node` is writable
            moved = 0
            if node.kids is None:
                vals = node.vals
                for j, v in enumerate(vals):
                    # A run moves only into consecutive free pages that end
                    # below the limit; else it stays, rather than be
                    # rewritten somewhere no better at every pass.
                    if (
                        v.__class__ is not bytes
                        and v[0] + v[2] > limit
                        and w.room_below(v[2], limit)
                    ):
                        vals[j] = w.write_overflow(store.overflow(v))
                        self._drop_value(v)
                        moved += v[2]
                return moved
            for i, kid in enumerate(node.kids):
                if kid.__class__ is Node:
                    moved += move(kid)
                elif far(kid, node.gens[i]):
                    moved += kid >= limit
                    moved += move(self._wchild(node, i))
            return moved

        root = self._root
        if root is None:
            return 0
        if root.__class__ is Node:
            return move(root)
        pgno, gen = root
        if not far(pgno, gen):
            return 0
        return int(pgno >= limit) + move(self._wroot())

    def _split(self, node: Node) -> tuple[Node, bytes]:
        """Cut an over-full node in two by size; `node` keeps the left half (B6)."""
        gen = self._w().gen
        budget = self.capacity - _NODE_COST
        keys = node.keys
        if node.kids is None:
            m = _cut([_entry_cost(k, v) for k, v in zip(keys, node.vals)], budget)
            right = Node(keys[m:], vals=node.vals[m:], gen=gen)
            del keys[m:]
            del node.vals[m:]
            sep = right.keys[0]
        else:
            # Entry 0 is the first child; entry i is separator i - 1 with child i,
            # and the right half's first separator moves up.  By size, not count:
            # keys run from 0 to max_key bytes, so half the keys can be most of
            # the bytes.
            costs = [_KID_COST] + [len(k) + _BIN + _KID_COST for k in keys]
            m = _cut(costs, budget)
            sep = keys[m - 1]
            right = Node(keys[m:], kids=node.kids[m:], gens=node.gens[m:], gen=gen)
            del keys[m - 1 :]
            del node.kids[m:]
            del node.gens[m:]
        node.size = node.estimate()
        right.size = right.estimate()
        return right, sep

    def _split_up(self, node: Node, path: list[tuple[Node, int]]) -> None:
        gen = self._w().gen
        while node.size > self.capacity:
            right, sep = self._split(node)
            if not path:
                root = Node([sep], kids=[node, right], gens=[gen, gen], gen=gen)
                root.size = root.estimate()
                self._root = root
                node = root
                continue
            parent, i = path.pop()
            parent.keys.insert(i, sep)
            parent.kids.insert(i + 1, right)
            parent.gens.insert(i + 1, gen)
            parent.size += len(sep) + _BIN + _KID_COST
            node = parent

    def _underfull(self, node: Node) -> bool:
        if node.kids is None:
            return node.size < self.capacity // 4
        return len(node.kids) < 2 or node.size < self.capacity // 4

    def _rebalance(self, node: Node, path: list[tuple[Node, int]]) -> None:
        while path and self._underfull(node):
            parent, i = path.pop()
            li = i - 1 if i > 0 else i
            if li + 1 >= len(parent.kids):
                node = parent  # an only child: nothing to merge with at this level
                continue
            left = self._wchild(parent, li)
            right = self._wchild(parent, li + 1)
            sep = parent.keys[li]
            left.keys.extend(([] if left.kids is None else [sep]) + right.keys)
            if left.kids is None:
                left.vals.extend(right.vals)
            else:
                left.kids.extend(right.kids)
                left.gens.extend(right.gens)
            left.size = left.estimate()
            if left.size <= self.capacity:
                del parent.keys[li]
                del parent.kids[li + 1]
                del parent.gens[li + 1]
            else:
                right2, sep2 = self._split(left)
                parent.kids[li + 1] = right2
                parent.keys[li] = sep2
            parent.size = parent.estimate()
            if parent.size > self.capacity:
                # The new separator may be longer than the one it replaced (up
                # to max_key bytes more): split the parent as a put would (B5).
                self._split_up(parent, path)
                break
            node = parent
        root = self._root
        while root is not None and root.__class__ is Node:
            if root.kids is not None and len(root.kids) == 1:
                root = self._wchild(root, 0)
            elif root.kids is None and not root.keys:
                root = None
            else:
                break
            self._root = root

    def bulk_load(self, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Load strictly ascending (key, value) pairs into an empty tree; return the count."""
        w = self._w()
        if self._root is not None:
            raise StorageError("bulk_load needs an empty tree")
        fill = int(self.capacity * BULK_FILL)
        level: list[tuple[bytes, Node]] = []
        leaf = Node([], vals=[], gen=w.gen)
        size = _NODE_COST
        prev: bytes | None = None
        count = 0
        for key, value in items:
            self._check_key(key)
            if prev is not None and key <= prev:
                raise StorageError(f"bulk_load input is not strictly ascending at key {key!r}")
            prev = key
            stored = self._store_value(key, value)
            cost = _entry_cost(key, stored)
            # A leaf closes at the fill target only once it holds two entries
            # (two always fit, B6): closing at one would give each entry over
            # 45% of a page a half-empty page of its own, for headroom that one
            # more entry of its size could not use without a split anyway.
            if len(leaf.keys) > 1 and size + cost > fill:
                leaf.size = size
                level.append((leaf.keys[0], leaf))
                leaf = Node([], vals=[], gen=w.gen)
                size = _NODE_COST
            leaf.keys.append(key)
            leaf.vals.append(stored)
            size += cost
            count += 1
        if not count:
            return 0
        leaf.size = size
        level.append((leaf.keys[0], leaf))
        while len(level) > 1:
            level = self._branch_level(level, fill)
        self._root = level[0][1]
        self._dirty = True
        return count

    def _branch_level(self, level: list[tuple[bytes, Node]], fill: int) -> list[tuple[bytes, Node]]:
        gen = self._w().gen
        out: list[tuple[bytes, Node]] = []
        first, kid = level[0]
        node = Node([], kids=[kid], gens=[gen], gen=gen)
        node_first = first
        size = _NODE_COST + _KID_COST
        for first, kid in level[1:]:
            cost = len(first) + _BIN + _KID_COST
            if size + cost > fill and len(node.kids) >= 2:
                node.size = size
                out.append((node_first, node))
                node = Node([], kids=[kid], gens=[gen], gen=gen)
                node_first = first
                size = _NODE_COST + _KID_COST
                continue
            node.keys.append(first)
            node.kids.append(kid)
            node.gens.append(gen)
            size += cost
        if len(node.kids) == 1:
            # A branch has two children (B3): the last takes the previous
            # one's last child, which closed full and keeps at least five.
            prev = out[-1][1]
            node.keys.insert(0, node_first)
            node.kids.insert(0, prev.kids.pop())
            node.gens.insert(0, prev.gens.pop())
            node_first = prev.keys.pop()
            prev.size = prev.estimate()
            size = node.estimate()
        node.size = size
        out.append((node_first, node))
        return out

    def spill(self) -> tuple[int, int] | None:
        """Write every dirty node, children first; return the new root reference."""
        w = self._w()
        root = self._root
        if root is None or root.__class__ is not Node:
            return cast("tuple[int, int] | None", root)
        # Iterative post-order: a node is written after all its dirty children.
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node.kids is not None and not expanded:
                stack.append((node, True))
                stack.extend((k, False) for k in node.kids if k.__class__ is Node)
                continue
            if node.kids is not None:
                kids = node.kids
                for i, k in enumerate(kids):
                    if k.__class__ is Node:
                        kids[i] = k.pgno
                        node.gens[i] = k.gen
            if node.size > self.capacity:
                raise StorageError(f"internal: node of {node.size} bytes was not split")
            node.gen = w.gen
            node.pgno = w.write_node(node)
        ref = (root.pgno, root.gen)
        self._root = ref
        return ref
