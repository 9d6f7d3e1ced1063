"""Checkpoints: the WAL folded into the page file while snapshots and commits go on.

Invariants cited as (Kn) are mvcc/checkpoint.py's, (Mn) mvcc/memtable.py's,
(Vn) mvcc/versions.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mvcc
from mvcc import checkpoint as checkpoint_module
from mvcc import database as database_module
from mvcc.versions import decode_chain, tree_name, vacuum_tree_name
from storage.check import check_pagefile
from storage.keys import decode_key, encode_key

pytestmark = pytest.mark.timeout(120)


def _chain(db: mvcc.Database, table: str, pk: object) -> list[tuple[int, bytes | None]] | None:
    """The version chain the page file's newest meta stores for one record."""
    snap = db.pages.snapshot(db.pages.read_meta())
    tree = snap.tree(tree_name(db.table(table).tid))
    data = None if tree is None else tree.get(encode_key((pk,)))
    return None if data is None else decode_chain(data, "test")


def _segments(path: Path) -> list[str]:
    return sorted(os.listdir(path / "wal"))


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """WAL segments of 8 KiB, so a few hundred commits span several."""
    monkeypatch.setattr(database_module, "WAL_SEGMENT_SIZE", 8192)


def test_checkpoint_moves_records_into_the_page_file_and_survives_reopen(
    tmp_path: Path, small_segments: None
) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        for i in range(300):
            t.put(i, {"v": i})
        t.delete(7)
        before = _segments(tmp_path)
        result = db.checkpoint()
        state = db.state.read()
        assert result.ts == state.commit_ts == state.checkpoint_ts  # K1
        assert result.frames == 302  # the catalog row, 300 puts, 1 delete
        assert state.checkpoint_gen == result.gen == db.pages.read_meta().gen
        assert len(_segments(tmp_path)) < len(before)  # covered segments deleted
        assert _chain(db, "t", 3) is not None and _chain(db, "t", 7) is None  # V1
        assert db.memtable.versions == 0  # trimmed at the next begin (M5)
        assert t.get(3) == {"v": 3, "_id": 3} and t.get(7) is None
        assert db.memtable.versions == 0
        assert check_pagefile(db.pages).ok
    with mvcc.open(tmp_path) as db:  # recovery starts at the page file's position
        t = db.table("t")
        assert len(t) == 299 and t.get(299) == {"v": 299, "_id": 299}
        t.put(7, {"v": "back"})
    with mvcc.open(tmp_path) as db:
        assert db.table("t").get(7) == {"v": "back", "_id": 7}


def test_reads_merge_the_page_tree_with_newer_versions(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        for i in range(0, 20, 2):
            t.put(i, {"v": "old"})
        db.checkpoint()
        t.put(3, {"v": "new"})  # only in the memtable
        t.put(4, {"v": "new"})  # newer than the tree's
        t.delete(6)  # a tombstone hiding a tree record
        with db.transaction():
            t.put(5, {"v": "mine"})
            t.delete(8)
            assert [d["_id"] for d in t] == [0, 2, 3, 4, 5, 10, 12, 14, 16, 18]
            assert t.get(4)["v"] == "new" and t.get(2)["v"] == "old" and 6 not in t
        assert len(t) == 10


def test_a_snapshot_outlives_checkpoints_that_prune_what_others_see(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("t"), b.table("t")
        ta.put(1, {"v": 0})
        ta.put(2, {"v": 0})
        with a.transaction(readonly=True):
            assert ta.get(1)["v"] == 0
            for v in range(1, 4):
                tb.put(1, {"v": v})
                tb.delete(2)
                tb.put(2, {"v": v})
                b.checkpoint()  # K4: a's pages are not reused; V2: its versions kept
            assert ta.get(1)["v"] == 0 and ta.get(2)["v"] == 0
            assert sorted(d["v"] for d in ta) == [0, 0]
            assert [ts for ts, _v in _chain(b, "t", 1) or []][-1] <= a.current().snapshot
        tb.put(1, {"v": 4})
        b.checkpoint()  # a's reader is gone: a record the fold touches keeps one version
        assert len(_chain(b, "t", 1) or []) == 1
        assert ta.get(1)["v"] == 4 and tb.get(2)["v"] == 3


def _listed(db: mvcc.Database, table: str) -> list[tuple[int, object]]:
    """The vacuum list of a table in the newest meta: (head ts, pk) pairs (V6)."""
    snap = db.pages.snapshot(db.pages.read_meta())
    tree = snap.tree(vacuum_tree_name(db.table(table).tid))
    return [
        (int.from_bytes(k[:8], "big"), decode_key(k[8:])[0])
        for k, _v in (() if tree is None else tree.cursor())
    ]


def test_a_checkpoint_prunes_chains_no_frame_touches_once_the_reader_goes(
    tmp_path: Path,
) -> None:
    """V6: the versions a reader pinned go at the first checkpoint after it ends,
    though no later commit touches their records; a delete goes entirely."""
    with mvcc.open(tmp_path, autovacuum=False) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("t", indexes=["v"]), b.table("t")
        for pk in (1, 2, 3):
            ta.put(pk, {"v": 0})
        with a.transaction(readonly=True):
            tb.put(1, {"v": 1})
            tb.delete(2)
            result = b.checkpoint()
            assert result.pruned == 0
            assert [pk for _ts, pk in _listed(b, "t")] == [1, 2]  # 3 has one version
            assert len(_chain(b, "t", 1) or []) == 2 and len(_chain(b, "t", 2) or []) == 2
        result = b.checkpoint()  # no frame since: the vacuum list alone is the work
        assert result.frames == 0 and result.keys == 2 and result.pruned == 3
        assert _listed(b, "t") == [] and _chain(b, "t", 2) is None
        assert len(_chain(b, "t", 1) or []) == 1
        assert ta.find(mvcc.where("v") == 0).ids() == [3]  # the index lost the old entries
        assert b.checkpoint().keys == 0  # nothing left to do
        assert check_pagefile(b.pages).ok


def test_a_dropped_table_s_trees_go_when_no_snapshot_sees_it(tmp_path: Path) -> None:
    """V7: the table tree and its vacuum list are dropped once the catalog row's
    delete is past the horizon, not before."""
    with mvcc.open(tmp_path, autovacuum=False) as a, mvcc.open(tmp_path) as b:
        t = a.table("gone", indexes=["v"])
        t.insert_many([{"v": i} for i in range(50)])
        a.checkpoint()
        name = tree_name(t.tid)
        with b.transaction(readonly=True):
            assert b.table("gone").count() == 50
            a.drop_table("gone")
            assert a.checkpoint().tables_dropped == 0
            assert b.table("gone").count() == 50  # b's snapshot still has it
        result = a.checkpoint()
        assert result.tables_dropped == 1
        names = a.pages.snapshot(a.pages.read_meta()).names()
        assert name not in names and vacuum_tree_name(t.tid) not in names
        assert not any(n[:1] == b"i" for n in names)
        assert check_pagefile(a.pages).ok


def test_a_process_behind_deleted_segments_skips_to_the_checkpoint(
    tmp_path: Path, small_segments: None
) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("t"), b.table("t")
        ta.put(0, {"v": 0})
        with a.transaction() as old:  # begun before: snapshot below the gap
            assert ta.get(0)["v"] == 0
            for i in range(200):
                tb.put(i, {"v": i + 1000})
            b.checkpoint()
            first = _segments(tmp_path)[0]
            assert first != "0000000000000001.wal"  # a's position is in a deleted segment
            assert tb.get(5)["v"] == 1005
            with a.transaction() as new:  # a nested block is a savepoint: same snapshot
                assert new is old and ta.get(5) is None
            ta.put(0, {"v": "lost update?"})
            with pytest.raises(mvcc.ConflictError):  # found through the page tree
                old.commit()
        assert ta.get(0)["v"] == 1000 and ta.get(199)["v"] == 1199  # a new snapshot
        assert a.memtable.gap_ts >= b.state.read().checkpoint_ts


def test_committers_checkpoint_inline_past_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_FRAMES", 50)
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        for i in range(120):
            t.put(i % 10, {"v": i})
        state = db.state.read()
        assert state.commit_ts - state.checkpoint_ts < 50
        assert state.checkpoint_gen >= 2
        assert db.memtable.versions < 60
        assert [t.get(i)["v"] for i in range(10)] == list(range(110, 120))
    with mvcc.open(tmp_path, autovacuum=False) as db:  # only the hard limit now
        t = db.table("t")
        gen = db.state.read().checkpoint_gen
        for i in range(100):
            t.put(1, {"v": i})
        assert db.state.read().checkpoint_gen == gen
        for i in range(100):
            t.put(1, {"v": i})
        assert db.state.read().checkpoint_gen == gen + 1


def test_a_checkpoint_that_dies_before_publishing_is_adopted_at_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        for i in range(50):
            t.put(i, {"v": i})

        def die(*_args: object) -> None:
            raise OSError("killed between the page-file commit and the state write")

        monkeypatch.setattr(db, "_publish_checkpoint", die)
        with pytest.raises(OSError):
            db.checkpoint()
        assert db.state.read().checkpoint_gen == 0  # not published
        t.put(50, {"v": 50})  # commits go on; the state still names the old position
    with mvcc.open(tmp_path) as db:  # K1: the page file's meta wins at recovery
        state = db.state.read()
        assert state.checkpoint_gen >= 1 and state.checkpoint_ts == 51
        assert [db.table("t").get(i)["v"] for i in range(51)] == list(range(51))


def test_encrypted_pages_hold_no_plaintext(tmp_path: Path) -> None:
    with mvcc.open(tmp_path, passphrase="pw") as db:
        db.table("secrets").put(1, {"text": "attack at dawn"})
        db.checkpoint()
    assert b"attack at dawn" not in (tmp_path / "pages").read_bytes()
    with pytest.raises(mvcc.InvalidKey):
        mvcc.open(tmp_path, passphrase="wrong")
    with mvcc.open(tmp_path, passphrase="pw") as db:
        assert db.table("secrets").get(1)["text"] == "attack at dawn"


def test_a_segment_deleted_while_it_is_being_read_is_skipped(
    tmp_path: Path, small_segments: None
) -> None:
    """The race `Database._catch_up` handles: a process read the state (old
    checkpoint) and starts tailing a segment that a checkpoint deletes before
    it gets there; the log ends early, it re-reads the state and skips (M5)."""
    from mvcc.commitlog import durable_end

    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        a.table("t").put(0, {"v": 0})
        stale = a.state.read()  # names the checkpoint before the one below
        for i in range(200):  # several segments a has never opened
            b.table("t").put(i, {"v": i, "pad": "x" * 100})
        b.checkpoint()
        fresh = a.state.read()
        assert fresh.checkpoint_ts > stale.checkpoint_ts
        assert fresh.checkpoint_segment > 3 and _segments(tmp_path)[0] > "0000000000000002"
        with a._latch:
            a._catch_up(stale, durable_end(fresh))
        assert a.memtable.position == durable_end(fresh)
        assert a.memtable.gap_ts == fresh.checkpoint_ts
        assert a.table("t").get(150)["v"] == 150
