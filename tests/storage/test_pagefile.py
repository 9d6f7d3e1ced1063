"""Page file: geometry, meta pages, reopen, keys at open."""

from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.btree import BTree
from storage.crypto import PageCipher
from storage.device import MemoryDevice
from storage.errors import CorruptPage, FormatError, InvalidKeyError, StorageError
from storage.format import PAGE_BRANCH
from storage.pagefile import PageFile

from .conftest import TEST_DEK


@pytest.mark.parametrize("size", [0, 512, 1024, 4095, 5000, 131072, "4096", None])
def test_bad_page_size_is_a_clear_error(size) -> None:
    with pytest.raises(FormatError, match="page_size must be a power of two from 4096 to 65536"):
        PageFile.memory(page_size=size)


@pytest.mark.parametrize("size", [4096, 8192, 16384, 65536])
def test_page_sizes_round_trip(tmp_path, size) -> None:
    path = str(tmp_path / "pages")
    pf = PageFile.open(path, page_size=size)
    with pf.begin() as txn:
        tree = txn.tree(b"t", create=True)
        for i in range(2000):
            tree.put(b"%08d" % i, os.urandom(50))
        expect = dict(tree.items())
    pf.close()
    pf = PageFile.open(path)  # the size comes from the file, not the argument
    assert pf.page_size == size
    assert dict(pf.snapshot().tree(b"t").items()) == expect
    assert os.path.getsize(path) == pf.meta.npages * size
    pf.close()


def test_meta_pages_alternate_and_reopen_picks_newest(make_pagefile) -> None:
    pf = make_pagefile()
    slots = []
    for i in range(4):
        with pf.begin() as txn:
            txn.tree(b"t", create=True).put(b"k", b"%d" % i)
            txn.user_meta = b"user %d" % i
        slots.append(pf.meta.slot)
    assert slots == [1, 0, 1, 0]
    again = PageFile(pf.device)
    assert again.meta.gen == 4
    assert again.meta.user == b"user 3"
    assert again.snapshot().tree(b"k") is None
    assert again.snapshot().tree(b"t").get(b"k") == b"3"


@pytest.mark.damaged
def test_torn_newest_meta_falls_back_to_previous_generation() -> None:
    pf = PageFile.memory()
    for i in range(3):
        with pf.begin() as txn:
            txn.tree(b"t", create=True).put(b"k", b"%d" % i)
    dev = pf.device
    newest = pf.meta.slot
    dev.data[newest * 4096 + 2000] ^= 0x40  # damage the newest meta
    again = PageFile(dev)
    assert again.meta.gen == 2
    assert again.snapshot().tree(b"t").get(b"k") == b"1"
    with pytest.raises(CorruptPage) as err:
        again._parse_meta(newest)
    assert err.value.pgno == newest


@pytest.mark.damaged
def test_both_metas_destroyed_is_corruption() -> None:
    pf = PageFile.memory()
    dev = pf.device
    dev.data[100] ^= 1
    dev.data[4096 + 100] ^= 1
    with pytest.raises(CorruptPage):
        PageFile(dev)


def test_not_a_page_file() -> None:
    dev = MemoryDevice()
    dev.write(0, b"hello world" * 1000)
    with pytest.raises(CorruptPage, match="not a page file"):
        PageFile(dev)


def test_user_meta_limit(make_pagefile) -> None:
    pf = make_pagefile()
    txn = pf.begin()
    txn.user_meta = b"x" * 513
    with pytest.raises(StorageError, match="user meta"):
        txn.commit()


def test_keys_at_open() -> None:
    plain = PageFile.memory()
    with pytest.raises(InvalidKeyError, match="not encrypted"):
        PageFile(plain.device, cipher=PageCipher(TEST_DEK))
    enc = PageFile.memory(cipher=PageCipher(TEST_DEK))
    with enc.begin() as txn:
        txn.tree(b"t", create=True).put(b"a", b"b")
    with pytest.raises(InvalidKeyError, match="encrypted: a passphrase or key is required"):
        PageFile(enc.device)
    with pytest.raises(InvalidKeyError, match="does not belong"):
        PageFile(enc.device, cipher=PageCipher(os.urandom(32)))
    assert PageFile(enc.device, cipher=PageCipher(TEST_DEK)).snapshot().tree(b"t").get(b"a") == b"b"


@pytest.mark.damaged
def test_future_format_version_is_refused() -> None:
    pf = PageFile.memory()
    dev = pf.device
    for slot in (0, 1):
        dev.data[slot * 4096 + 9] = 99  # version field; the CRC now fails too
    with pytest.raises(CorruptPage):
        PageFile(dev)


def test_one_write_at_a_time(make_pagefile) -> None:
    pf = make_pagefile()
    txn = pf.begin()
    with pytest.raises(StorageError, match="already in progress"):
        pf.begin()
    txn.abort()
    with pytest.raises(StorageError, match="aborted"):
        txn.tree(b"t", create=True)
    pf.begin().abort()


def test_a_write_reuses_pages_only_past_the_horizon_it_was_given_late(make_pagefile) -> None:
    """WriteTxn.release: a horizon learnt after `begin` makes ready what it allows
    (freelist F2), never more than the base generation (P1)."""
    pf = make_pagefile()
    with pf.begin() as txn:  # gen 1: a tree of several leaves
        tree = txn.tree(b"t", create=True)
        for i in range(200):
            tree.put(b"%04d" % i, os.urandom(100))
    with pf.begin() as txn:  # gen 2 rewrites every leaf: gen 1's pages are freed at 2
        tree = txn.tree(b"t")
        for i in range(200):
            tree.put(b"%04d" % i, os.urandom(100))
    freed = set(pf.freelist(pf.meta).pending[2])
    assert pf.free_pages() == len(pf.freelist(pf.meta)) >= len(freed) > 0

    def rewrite(late: int | None) -> set[int]:
        """Pages a gen-3 write of every leaf took, begun at horizon 1."""
        txn = pf.begin(horizon=1)  # a reader still holds gen 1
        tree = txn.tree(b"t")
        for i in range(200):
            tree.put(b"%04d" % i, os.urandom(100))
        if late is not None:
            txn.release(late)
        txn.commit()
        snap = pf.snapshot()
        root = snap.tree(b"t").root
        assert root is not None
        stack, taken = [pf.node(*root)], set()
        while stack:
            node = stack.pop()
            taken.add(node.pgno)
            if node.kids is not None:
                stack.extend(pf.node(k, g) for k, g in zip(node.kids, node.gens))
        return taken

    grown = pf.meta.npages
    assert not rewrite(None) & freed  # gen 1's pages stay: its reader may read them
    assert pf.meta.npages > grown
    grown = pf.meta.npages
    pending = pf.freelist(pf.meta).pending
    assert set(pending) == {2, 3}
    freed = set(pending[2]) | set(pending[3])
    taken = rewrite(10**9)  # the reader ended: up to the base gen 3, all reusable
    assert taken & freed and pf.meta.npages <= grown


def test_failed_commit_poisons_the_page_file() -> None:
    """An I/O error in commit is final until reopen (pager.c's ERROR state)."""

    class FailingSync(MemoryDevice):
        fail = False

        def sync(self) -> None:
            if self.fail:
                raise OSError(5, "Input/output error")

    dev = FailingSync()
    pf = PageFile(dev)
    with pf.begin() as txn:
        txn.tree(b"t", create=True).put(b"a", b"1")
    dev.fail = True
    txn = pf.begin()
    txn.tree(b"t").put(b"a", b"2")
    with pytest.raises(OSError):
        txn.commit()
    dev.fail = False
    with pytest.raises(StorageError, match="must be reopened"):
        pf.begin()
    again = PageFile(dev)
    assert again.snapshot().tree(b"t").get(b"a") in (b"1", b"2")


def test_warm_get_decodes_nothing(make_pagefile, monkeypatch) -> None:
    pf = make_pagefile(cache_pages=4096)
    with pf.begin() as txn:
        txn.tree(b"t", create=True).bulk_load((b"%08d" % i, b"v" * 100) for i in range(20_000))
    tree = pf.snapshot().tree(b"t")
    for i in range(0, 20_000, 7):
        tree.get(b"%08d" % i)  # warm every leaf
    loads = []
    real = PageFile._load
    monkeypatch.setattr(PageFile, "_load", lambda self, p, g: loads.append(p) or real(self, p, g))
    for i in range(20_000):
        assert tree.get(b"%08d" % i) == b"v" * 100
    assert loads == []


@pytest.mark.damaged
@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.integers(-5, 2**40) | st.binary(max_size=8) | st.text(max_size=4),
            lambda inner: st.lists(inner, max_size=4),
            max_leaves=12,
        ).map(msgpack.packb),
    ),
    ptype=st.sampled_from([1, 2, 3, 5, 9]),
)
def test_validly_sealed_garbage_is_corruption_not_a_crash(body: bytes, ptype: int) -> None:
    """A page whose seal holds but whose body is nonsense (a bug, not a flip) is
    still a CorruptPage, never a struct/msgpack/Key/Type error (storage/errors.py I1)."""
    pf = PageFile.memory()
    with pf.begin() as txn:
        txn.tree(b"t", create=True).put(b"k", b"v")
    pgno, gen = pf.snapshot().tree(b"t").root
    pf._write_page(pgno, ptype, gen, body)
    pf.clear_cache()
    try:
        value = pf.snapshot().tree(b"t").get(b"k")
    except CorruptPage as exc:
        # The damaged page, or, when it decodes as a branch, a page its nonsense
        # child references lead to (the meta page, a page past the end, ...).
        assert exc.pgno in (pgno, None) or ptype == PAGE_BRANCH
    else:
        assert value is None or isinstance(value, bytes)


@pytest.mark.damaged
@settings(max_examples=200, deadline=None)
@given(image=st.binary(min_size=1, max_size=9000))
def test_random_file_content_is_refused_cleanly(image: bytes) -> None:
    dev = MemoryDevice()
    dev.data = bytearray(image)
    with pytest.raises((CorruptPage, FormatError, InvalidKeyError)):
        PageFile(dev)


def test_live_pages_at_the_end_move_down_and_the_file_shrinks(make_pagefile) -> None:
    """P7: tree "a" fills the start of the file, tree "b" (inline values and
    overflow runs) the end; dropping "a" frees the start.  A write that
    compacts copies b's pages into it, while a reader of the old root still
    reads b's old pages; once the horizon passes, a commit cuts the file."""
    pf = make_pagefile(encrypted=True)
    b_model = {b"b%05d" % i: os.urandom(300 if i % 10 else 5000) for i in range(600)}
    with pf.begin() as txn:
        a = txn.tree(b"a", create=True)
        for i in range(3000):
            a.put(b"a%05d" % i, os.urandom(300))
    with pf.begin() as txn:
        b = txn.tree(b"b", create=True)
        for key, value in b_model.items():
            b.put(key, value)
    with pf.begin() as txn:
        txn.drop_tree(b"a")
    full = pf.meta.npages
    with pf.begin() as txn:  # a's pages are ready now; b's live pages are all past them
        assert pf.compaction_due(pf.meta, pf.meta.gen)
        reader = pf.snapshot()
        moved = txn.compact()
    assert moved > 150
    assert dict(reader.tree(b"b").items()) == b_model  # P1: the old root still reads
    with pf.begin(horizon=reader.gen) as txn:  # the reader holds the moved-from pages
        assert txn.compact() == 0
    assert pf.meta.npages == full
    with pf.begin() as txn:  # the reader is gone: the end of the file is cut
        pass
    in_use = pf.meta.npages - pf.free_pages()
    assert pf.meta.npages < full // 2 and pf.meta.npages <= in_use * 1.25 + 16, (full, in_use)
    assert dict(pf.snapshot().tree(b"b").items()) == b_model
    assert not pf.compaction_due(pf.meta, pf.meta.gen)
    if pf.device.__class__ is not MemoryDevice:
        assert pf.device.size() == pf.meta.npages * pf.page_size


def test_compaction_waits_for_room_and_for_it_to_pay(make_pagefile) -> None:
    """P7: no move while the free pages below are still pending (a reader
    holds them), and none when the file would lose too little."""
    pf = make_pagefile()
    with pf.begin() as txn:
        a = txn.tree(b"a", create=True)
        for i in range(2000):
            a.put(b"a%05d" % i, os.urandom(300))
        b = txn.tree(b"b", create=True)
        for i in range(200):
            b.put(b"b%05d" % i, os.urandom(300))
    old = pf.meta.gen
    with pf.begin(horizon=old) as txn:
        txn.drop_tree(b"a")
    with pf.begin(horizon=old) as txn:  # a's pages are pending for a reader of `old`
        assert not pf.compaction_due(pf.meta, old)
        assert txn.compact() == 0
    with pf.begin() as txn:
        for i in range(0, 2000, 50):  # a little churn: the file would lose too little
            txn.tree(b"b").put(b"b%05d" % (i % 200), os.urandom(300))
    small = make_pagefile()
    with small.begin() as txn:
        t = txn.tree(b"t", create=True)
        for i in range(40):
            t.put(b"%03d" % i, os.urandom(300))
    with small.begin() as txn:
        for i in range(0, 40, 2):
            txn.tree(b"t").delete(b"%03d" % i)
    with small.begin() as txn:
        assert txn.compact() == 0  # a few pages: below COMPACT_MIN_PAGES


def test_runs_that_cannot_move_do_not_make_every_write_compact(make_pagefile, monkeypatch) -> None:
    """P7: 3-page runs behind 2-page holes find no room below the limit; they
    stay where they are, and compaction stops being due after a pass or two
    instead of rewriting them at every pass (a review found both)."""
    pf = make_pagefile()
    with pf.begin() as txn:
        b = txn.tree(b"b", create=True)
        for i in range(1500):
            b.put(b"h%06d" % i, os.urandom(5000))  # a 2-page run
            b.put(b"r%06d" % i, os.urandom(9000))  # a 3-page run
    with pf.begin() as txn:
        for i in range(1500):
            txn.tree(b"b").delete(b"h%06d" % i)
    with pf.begin():
        pass
    passes = 0
    while pf.compaction_due(pf.meta, pf.meta.gen):
        passes += 1
        assert passes <= 3, "compaction stays due"
        with pf.begin() as txn:
            txn.compact()
    assert pf.snapshot().tree(b"b").count() == 1500
    walked: list[int] = []
    real = BTree.relocate
    monkeypatch.setattr(
        BTree, "relocate", lambda self, limit: walked.append(limit) or real(self, limit)
    )
    with pf.begin() as txn:  # a fold's write: no walk over every tree for nothing
        assert txn.compact() == 0
    assert walked == []
