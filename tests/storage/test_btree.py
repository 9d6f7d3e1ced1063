"""The copy-on-write B+tree against a dict model, on both page stores.

bbolt's simulation test in hypothesis form: every commit's model is kept with
the snapshot of that generation, and every retained snapshot is checked
against its own model after each later commit (old roots stay readable until
the horizon passes them).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from storage.btree import Node
from storage.check import check_pagefile
from storage.errors import StorageError, TooLarge
from storage.pagefile import PageFile

KEYS = st.binary(min_size=1, max_size=24).map(lambda b: b[:1] + b[1:] if b else b"k")
SMALL_KEYS = st.sampled_from([bytes([c]) * n for c in b"abcdefgh" for n in (1, 2, 3)])
VALUES = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=300, max_size=900),
    st.binary(min_size=1800, max_size=1990),  # inline, two to a leaf (B6)
    st.integers(2100, 20000).map(lambda n: os.urandom(n)),  # overflow runs
)


def _expected_range(model, lo, hi, lo_inc, hi_inc, reverse):
    keys = sorted(model)
    out = [
        k
        for k in keys
        if (lo is None or k > lo or (lo_inc and k == lo))
        and (hi is None or k < hi or (hi_inc and k == hi))
    ]
    return list(reversed(out)) if reverse else out


class TreeMachine(RuleBasedStateMachine):
    """Random put/delete/bulk/range operations; snapshots kept with their models."""

    store = "memory"

    @initialize()
    def setup(self) -> None:
        if self.store == "memory":
            self.pf = PageFile.memory(cache_pages=64)
        else:
            import tempfile

            self.dir = tempfile.mkdtemp()
            self.pf = PageFile.open(os.path.join(self.dir, "pages"), cache_pages=64, sync=False)
        self.model: dict[bytes, bytes] = {}
        self.txn = self.pf.begin()
        self.tree = self.txn.tree(b"t", create=True)
        self.snaps: list[tuple[object, dict[bytes, bytes]]] = []

    def teardown(self) -> None:
        if hasattr(self, "pf"):
            self.txn.abort()
            report = check_pagefile(self.pf)
            assert report.ok, str(report)
            self.pf.close()

    @rule(key=st.one_of(KEYS, SMALL_KEYS), value=VALUES)
    def put(self, key: bytes, value: bytes) -> None:
        self.tree.put(key, value)
        self.model[key] = value

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        if self.model and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(self.model)))
        else:
            key = data.draw(KEYS)
        assert self.tree.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(n=st.integers(1, 400), seed=st.integers(0, 2**32))
    def many(self, n: int, seed: int) -> None:
        """A batch big enough to split and merge several levels."""
        rng = random.Random(seed)
        changes = []
        for _ in range(n):
            if self.model and rng.random() < 0.45:
                key = rng.choice(sorted(self.model))
                changes.append((key, None))
                self.model.pop(key)
            else:
                key = rng.randbytes(rng.randint(1, 12))
                value = rng.randbytes(rng.choice([0, 8, 100, 700]))
                changes.append((key, value))
                self.model[key] = value
        self.tree.apply(changes)

    @precondition(lambda self: not self.model)
    @rule(n=st.integers(0, 3000), seed=st.integers(0, 2**32))
    def bulk(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        items = {
            rng.randbytes(rng.randint(1, 10)): rng.randbytes(rng.choice([4, 60, 1500]))
            for _ in range(n)
        }
        self.tree.clear()
        assert self.tree.bulk_load(sorted(items.items())) == len(items)
        self.model = dict(items)

    def _bound(self, data: st.DataObject) -> bytes | None:
        # Half the bounds are keys that exist, so inclusive/exclusive edges are hit.
        if self.model and data.draw(st.booleans()):
            return data.draw(st.sampled_from(sorted(self.model)))
        return data.draw(st.none() | KEYS)

    @rule(data=st.data(), lo_inc=st.booleans(), hi_inc=st.booleans(), reverse=st.booleans())
    def scan(self, data, lo_inc, hi_inc, reverse) -> None:
        lo, hi = self._bound(data), self._bound(data)
        got = [
            k
            for k, _ in self.tree.cursor(
                lo, hi, lo_inclusive=lo_inc, hi_inclusive=hi_inc, reverse=reverse
            )
        ]
        assert got == _expected_range(self.model, lo, hi, lo_inc, hi_inc, reverse)

    @rule(keep=st.integers(0, 4))
    def commit(self, keep: int) -> None:
        meta = self.txn.commit()
        self.snaps.append((self.pf.snapshot(meta), dict(self.model)))
        # Forget all but the newest `keep` snapshots; the horizon follows them.
        self.snaps = self.snaps[-keep:] if keep else []
        horizon = self.snaps[0][0].gen if self.snaps else None
        self.txn = self.pf.begin(horizon=horizon)
        self.tree = self.txn.tree(b"t", create=True)

    @invariant()
    def snapshots_match_their_models(self) -> None:
        if not hasattr(self, "pf"):
            return
        for snap, model in self.snaps:
            tree = snap.tree(b"t")
            assert dict(tree.items()) == model
            assert tree.count() == len(model)
            for key in list(model)[:5]:
                assert tree.get(key) == model[key]

    @invariant()
    def write_view_matches(self) -> None:
        if hasattr(self, "tree"):
            assert dict(self.tree.items()) == self.model
            assert self.tree.count() == len(self.model)


MODEL_SETTINGS = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)


TestTreeMemory = TreeMachine.TestCase
TestTreeMemory.settings = MODEL_SETTINGS


class FileTreeMachine(TreeMachine):
    store = "file"


TestTreeFile = FileTreeMachine.TestCase
TestTreeFile.settings = settings(
    max_examples=15, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)


# -- direct tests ---------------------------------------------------------------


def test_many_named_trees_and_drop(make_pagefile) -> None:
    pf = make_pagefile()
    with pf.begin() as txn:
        for i in range(50):
            tree = txn.tree(b"tree%03d" % i, create=True)
            for j in range(i * 10):
                tree.put(b"%05d" % j, b"v%d" % (i * j))
    snap = pf.snapshot()
    assert snap.names() == [b"tree%03d" % i for i in range(50)]
    assert snap.tree(b"tree049").get(b"00100") == b"v4900"
    with pf.begin() as txn:
        assert txn.drop_tree(b"tree049")
        assert not txn.drop_tree(b"nope")
    assert pf.snapshot().tree(b"tree049") is None
    assert snap.tree(b"tree049").get(b"00100") == b"v4900"  # the old root still reads


def test_key_and_value_limits(make_pagefile) -> None:
    pf = make_pagefile()
    with pf.begin() as txn:
        tree = txn.tree(b"t", create=True)
        tree.put(b"k" * tree.max_key, b"ok")
        with pytest.raises(TooLarge) as err:
            tree.put(b"k" * (tree.max_key + 1), b"no")
        assert err.value.limit == tree.max_key
        with pytest.raises(TypeError):
            tree.put("str", b"v")  # type: ignore[arg-type]
        big = os.urandom(300_000)
        tree.put(b"big", big)
    assert pf.snapshot().tree(b"t").get(b"big") == big


def test_bulk_load_rejects_unsorted(make_pagefile) -> None:
    pf = make_pagefile()
    txn = pf.begin()
    tree = txn.tree(b"t", create=True)
    with pytest.raises(StorageError, match="ascending"):
        tree.bulk_load([(b"b", b"1"), (b"a", b"2")])
    txn.abort()


def test_snapshot_tree_is_read_only(make_pagefile) -> None:
    pf = make_pagefile()
    with pf.begin() as txn:
        txn.tree(b"t", create=True).put(b"a", b"1")
    with pytest.raises(StorageError, match="read-only"):
        pf.snapshot().tree(b"t").put(b"b", b"2")


def test_one_key_change_writes_a_path(make_pagefile) -> None:
    """A one-key change writes the tree's path, the catalog leaf, the freelist and the meta."""
    pf = make_pagefile()
    with pf.begin() as txn:
        txn.tree(b"t", create=True).bulk_load((b"%016d" % i, b"x" * 100) for i in range(100_000))
    depth = 1
    node = pf.node(*pf.snapshot().tree(b"t").root)
    while node.kids is not None:
        node = pf.node(node.kids[0], node.gens[0])
        depth += 1
    for _ in range(3):
        txn = pf.begin()
        txn.tree(b"t").put(b"%016d" % 5000, os.urandom(100))
        txn.commit()
        # tree path + catalog leaf + one freelist page + the meta page
        assert txn.pages_written == depth + 1 + 1 + 1


def test_space_is_reused_and_file_shrinks(make_pagefile) -> None:
    pf = make_pagefile()
    for _ in range(20):
        with pf.begin() as txn:
            tree = txn.tree(b"t", create=True)
            for i in range(500):
                tree.put(b"%06d" % i, os.urandom(200))
    size_steady = pf.meta.npages
    for _ in range(20):
        with pf.begin() as txn:
            tree = txn.tree(b"t", create=True)
            for i in range(500):
                tree.put(b"%06d" % i, os.urandom(200))
    assert pf.meta.npages <= size_steady + 5
    with pf.begin() as txn:
        txn.drop_tree(b"t")
    with pf.begin() as txn:  # the dropped pages become ready, then the tail is cut
        txn.tree(b"u", create=True).put(b"a", b"b")
    with pf.begin() as txn:
        txn.tree(b"u").put(b"a", b"c")
    assert pf.meta.npages < 10
    assert pf.device.size() == pf.meta.npages * pf.page_size


# -- the inline bound (B6) --------------------------------------------------------

# A 4 KiB page's node capacity is 4,032 B; a node costs 16 B of its own, and an
# entry whose cost (key + value + 10) is at most half of the rest stays inline.
INLINE_4K = (4032 - 16) // 2


def _nodes(pf: PageFile, root: tuple[int, int]) -> Iterator[tuple[Node, int]]:
    """(node, depth) for every node of a committed tree."""
    stack = [(root, 0)]
    while stack:
        (pgno, gen), depth = stack.pop()
        node = pf.node(pgno, gen)
        yield node, depth
        if node.kids is not None:
            stack.extend(((k, g), depth + 1) for k, g in zip(node.kids, node.gens))


def _assert_shape(pf: PageFile, *, inline_rule: bool = True) -> list[Node]:
    """Every node of tree b"t" fits its page (B5), every branch has two
    children, all leaves are at one depth (B2), and (with `inline_rule`) a value
    is inline exactly when its entry costs at most INLINE_4K (B6).  Returns the
    leaves, in no particular order."""
    tree = pf.snapshot().tree(b"t")
    if tree is None or tree.root is None:
        return []
    leaves, depths = [], set()
    for node, depth in _nodes(pf, tree.root):
        assert node.estimate() <= tree.capacity, node
        if node.kids is not None:
            assert len(node.kids) >= 2, node
            continue
        leaves.append(node)
        depths.add(depth)
        for k, v in zip(node.keys, node.vals):
            size = len(v) if type(v) is bytes else v[3]  # a reference ends with the length
            if inline_rule:
                assert (type(v) is bytes) == (len(k) + size + 10 <= INLINE_4K), (len(k), size)
    assert len(depths) == 1, depths
    return leaves


def _value(key: bytes, cost: int) -> bytes:
    """A value whose entry under `key` costs exactly `cost`."""
    return os.urandom(cost - len(key) - 10)


def test_inline_bound(make_pagefile) -> None:
    """An entry of INLINE_4K stays in its leaf, one byte more goes to an
    overflow run, and two entries at the bound share one leaf."""
    pf = make_pagefile()
    at, over = _value(b"a", INLINE_4K), _value(b"b", INLINE_4K + 1)
    with pf.begin() as txn:
        tree = txn.tree(b"t", create=True)
        tree.put(b"a", at)
        tree.put(b"b", over)
    (leaf,) = _assert_shape(pf)
    assert leaf.keys == [b"a", b"b"] and leaf.vals[0] == at and type(leaf.vals[1]) is list
    with pf.begin() as txn:
        tree = txn.tree(b"t")
        tree.put(b"b", _value(b"b", INLINE_4K))
    (leaf,) = _assert_shape(pf)  # two entries at the bound fill a page exactly
    assert [type(v) for v in leaf.vals] == [bytes, bytes]
    with pf.begin() as txn:
        txn.tree(b"t").put(b"c", _value(b"c", INLINE_4K))
    assert len(_assert_shape(pf)) == 2
    assert pf.snapshot().tree(b"t").get(b"a") == at


def test_a_full_leaf_splits_around_a_largest_entry(make_pagefile) -> None:
    """A leaf full of small entries takes a largest one just before its middle:
    the cut that halves the size would leave the left over capacity, so the
    split cuts before the large entry (B6, `_cut`)."""
    pf = make_pagefile()
    model = {b"%03d" % i: os.urandom(100) for i in range(35)}  # 16 + 35 * 113 <= 4,032
    with pf.begin() as txn:
        tree = txn.tree(b"t", create=True)
        for key, value in model.items():
            tree.put(key, value)
    assert len(_assert_shape(pf)) == 1
    model[b"023x"] = _value(b"023x", INLINE_4K)
    with pf.begin() as txn:
        txn.tree(b"t").put(b"023x", model[b"023x"])
    leaves = sorted(_assert_shape(pf), key=lambda n: n.keys[0])
    assert [len(n.keys) for n in leaves] == [24, 12]
    assert dict(pf.snapshot().tree(b"t").items()) == model


def test_a_branch_splits_by_size_not_count(make_pagefile) -> None:
    """A branch of 8 separators of max_key bytes and 11 of 3 bytes is over
    capacity; cutting it at half its keys left 8 long ones (4,276 B) in one
    node, which then could not be written."""
    pf = make_pagefile()
    model = {}
    with pf.begin() as txn:
        tree = txn.tree(b"t", create=True)
        for i in range(32):
            model[b"b%02d" % i] = b"v" * 990
        for j in range(26):
            model[b"a" + j.to_bytes(2, "big") + b"x" * 501] = b"w" * 490
        for key, value in model.items():
            tree.put(key, value)
    _assert_shape(pf)
    assert dict(pf.snapshot().tree(b"t").items()) == model


def test_bulk_load_of_half_page_values(make_pagefile) -> None:
    """Entries at the bound load two to a leaf, inline; so do entries too
    large for two under the fill target (2 x 1,900 B); puts then split them."""
    pf = make_pagefile()
    for cost in (INLINE_4K, 1900):
        model = {b"%05d" % i: _value(b"%05d" % i, cost) for i in range(301)}
        with pf.begin() as txn:
            tree = txn.tree(b"t", create=True)
            tree.clear()
            assert tree.bulk_load(sorted(model.items())) == len(model)
        leaves = _assert_shape(pf)
        assert sorted(len(n.keys) for n in leaves) == [1] + [2] * 150
        with pf.begin() as txn:
            tree = txn.tree(b"t")
            for i in range(0, 301, 7):
                model[b"%05da" % i] = _value(b"%05da" % i, cost)
                tree.put(b"%05da" % i, model[b"%05da" % i])
        _assert_shape(pf)
        assert dict(pf.snapshot().tree(b"t").items()) == model


def test_bulk_load_gives_the_last_branch_two_children(make_pagefile) -> None:
    """Leaves for one full branch and one more: the level's last branch took
    that leaf alone, a branch of one child (B3); it now takes two."""
    pf = make_pagefile()

    def load(n: int) -> list[Node]:
        with pf.begin() as txn:
            tree = txn.tree(b"t", create=True)
            tree.clear()
            tree.bulk_load((b"%08d" % i, b"v" * 100) for i in range(n))
        return _assert_shape(pf)

    leaves = load(10_000)
    per_leaf = max(len(n.keys) for n in leaves)
    fanout = max(len(n.kids) for n, _d in _nodes(pf, pf.snapshot().tree(b"t").root) if n.kids)
    assert len(load(per_leaf * fanout + 1)) == fanout + 1
    assert pf.snapshot().tree(b"t").count() == per_leaf * fanout + 1


def test_a_merge_that_lengthens_a_separator_splits_the_parent(make_pagefile) -> None:
    """A delete merges two leaves that do not fit one page and splits them
    again: the new separator (504 B) replaces a 1-byte one, which took a root
    of 3,747 B over capacity, and the next spill failed ("was not split")."""

    def key(name: str) -> bytes:
        return name.encode() + b"k" * (502 if len(name) == 2 else 0)

    pf = make_pagefile()
    model = {key(f"{c}{d}"): _value(key(f"{c}{d}"), 1800) for c in "ABCDEFG" for d in "01"}
    model[b"Z"] = _value(b"Z", 900)
    model[key("Z1")] = _value(key("Z1"), 1800)
    with pf.begin() as txn:
        txn.tree(b"t", create=True).bulk_load(sorted(model.items()))
    for puts in ([("G2", 1800)], [("G2", 2008), ("G3", 1000), ("G4", 1000)]):
        with pf.begin() as txn:
            tree = txn.tree(b"t")
            for name, cost in puts:
                model[key(name)] = _value(key(name), cost)
                tree.put(key(name), model[key(name)])
    root = pf.node(*pf.snapshot().tree(b"t").root)
    # The case: a nearly full root whose last separator is short.
    assert root.estimate() > 3700 and len(root.keys[-1]) == 1
    with pf.begin() as txn:
        assert txn.tree(b"t").delete(key("Z1"))
    del model[key("Z1")]
    _assert_shape(pf)
    assert dict(pf.snapshot().tree(b"t").items()) == model


def test_overflow_values_of_the_quarter_rule_still_read(make_pagefile) -> None:
    """A file whose mid-sized values went to overflow runs (the rule before
    B6 took half a page) reads, and a rewrite brings each value inline."""
    pf = make_pagefile()
    model = {b"%04d" % i: os.urandom(1200 + i) for i in range(40)}
    with pf.begin() as txn:
        tree = txn.tree(b"t", create=True)
        tree.max_inline = tree.capacity // 4  # the old writer's policy
        for key, value in model.items():
            tree.put(key, value)
    leaves = [n for n, _d in _nodes(pf, pf.snapshot().tree(b"t").root) if n.kids is None]
    assert all(type(v) is list for n in leaves for v in n.vals)
    assert dict(pf.snapshot().tree(b"t").items()) == model
    keys = list(model)
    rewritten = set(keys[::2])
    with pf.begin() as txn:
        tree = txn.tree(b"t")
        for key in rewritten:
            tree.put(key, model[key])
        for key in keys[1::4]:
            assert tree.delete(key)
            del model[key]
    for leaf in _assert_shape(pf, inline_rule=False):
        for k, v in zip(leaf.keys, leaf.vals):
            assert (type(v) is bytes) == (k in rewritten), k
    assert dict(pf.snapshot().tree(b"t").items()) == model


NEAR_HALF = st.sampled_from([0, INLINE_4K, INLINE_4K + 1, 1900, 1500, 1030, 700])
MIXED = st.one_of(
    st.integers(0, 64),
    st.integers(300, INLINE_4K + 8),
    st.integers(INLINE_4K + 1, 13_000),  # overflow runs of one to four pages
)


@pytest.mark.parametrize("costs", [NEAR_HALF, MIXED], ids=["near-half", "mixed"])
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_puts_and_deletes_keep_the_shape(costs, data: st.DataObject) -> None:
    """Puts and deletes of large entries against a dict model, committed every
    few steps: every node fits its page, all leaves are at one depth, every
    branch has two children, and the tree reads as the model (B2, B3, B5, B6);
    then `relocate` at any limit keeps all of that, and moves every page past
    the limit when the free pages below can take them."""
    pf = PageFile.memory(cache_pages=64)
    model: dict[bytes, bytes] = {}
    with pf.begin() as txn:  # first in the file; dropped before the relocation
        pad = txn.tree(b"pad", create=True)
        for i in range(300):
            pad.put(b"%04d" % i, bytes(1000))
    long_keys = data.draw(st.booleans())  # separators up to max_key bytes
    keys = st.integers(0, 80).map(
        lambda i: b"%03d" % i + (b"k" * 480 if long_keys and i % 3 else b"")
    )
    for _ in range(data.draw(st.integers(1, 6))):
        with pf.begin() as txn:
            tree = txn.tree(b"t", create=True)
            for _ in range(data.draw(st.integers(1, 60))):
                key = data.draw(keys)
                if model and data.draw(st.integers(0, 2)) == 0:
                    assert tree.delete(key) == (key in model)
                    model.pop(key, None)
                else:
                    model[key] = os.urandom(max(0, data.draw(costs) - len(key) - 10))
                    tree.put(key, model[key])
        _assert_shape(pf)
        assert dict(pf.snapshot().tree(b"t").items()) == model
    # relocate at any limit: the same tree, and no page it reaches left at or
    # past the limit when the ready pages below could take them all
    with pf.begin() as txn:
        txn.drop_tree(b"pad")
    limit = data.draw(st.integers(2, pf.meta.npages))
    with pf.begin() as txn:
        ready_below = txn._freelist.ready.bisect_left(limit)
        tree = txn.tree(b"t", create=True)
        moved = tree.relocate(limit)
    _assert_shape(pf)
    assert dict(pf.snapshot().tree(b"t").items()) == model
    root = pf.snapshot().tree(b"t").root
    if root is not None and ready_below >= 2 * moved + 8:
        for node, _depth in _nodes(pf, root):
            assert node.pgno < limit, (node.pgno, limit)
            for v in node.vals if node.kids is None else ():
                assert type(v) is bytes or v[0] + v[2] <= limit, (v, limit)
    report = check_pagefile(pf)
    assert report.ok, str(report)
