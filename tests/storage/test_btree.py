"""The copy-on-write B+tree against a dict model, on both page stores.

bbolt's simulation test in hypothesis form: every commit's model is kept with
the snapshot of that generation, and every retained snapshot is checked
against its own model after each later commit (old roots stay readable until
the horizon passes them).
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from storage.check import check_pagefile
from storage.errors import StorageError, TooLarge
from storage.pagefile import PageFile

KEYS = st.binary(min_size=1, max_size=24).map(lambda b: b[:1] + b[1:] if b else b"k")
SMALL_KEYS = st.sampled_from([bytes([c]) * n for c in b"abcdefgh" for n in (1, 2, 3)])
VALUES = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=300, max_size=900),
    st.integers(1500, 20000).map(lambda n: os.urandom(n)),  # overflow runs
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
