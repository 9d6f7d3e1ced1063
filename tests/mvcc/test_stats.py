"""`db.stats()` and counting without reading (mvcc/stats.py S1, versions.py V8).

A table's count is the page-file tree's keys less the listed chains headed by
a delete, corrected by the memtable and the transaction's own writes.  These
tests put records in every place that correction must handle: folded heads,
folded deletes a reader still pins (a delete at a chain's head), memtable
inserts, updates and deletes of folded records, a re-insert of a deleted key,
and uncommitted writes; at each step the count must equal a scan's, while the
count itself never scans a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mvcc
from mvcc.database import Database
from mvcc.memtable import CATALOG

pytestmark = pytest.mark.timeout(120)


def test_a_count_reads_no_record_and_agrees_with_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts: list[tuple[str, int, int]] = []
    real_scan = Database._scan
    counting = {"on": False}

    def guarded(self: Database, tid: int, *args: Any) -> Any:
        assert tid == CATALOG or not counting["on"], "a count scanned the table"
        return real_scan(self, tid, *args)

    monkeypatch.setattr(Database, "_scan", guarded)

    def check(step: str, table: mvcc.Table) -> None:
        counting["on"] = True
        try:
            fast = len(table)
            again = table.count()
        finally:
            counting["on"] = False
        slow = sum(1 for _doc in table)
        counts.append((step, fast, slow))
        assert fast == again == slow, step

    with (
        mvcc.open(tmp_path, autovacuum=False) as db,
        mvcc.open(tmp_path, autovacuum=False) as other,
    ):
        t = db.table("t")
        t.insert_many([{"_id": i, "v": 0} for i in range(100)])
        check("memtable inserts", t)
        db.checkpoint()
        check("folded", t)
        with other.transaction(readonly=True):  # pins the folded versions
            other.table("t").count()
            for i in range(10):
                t.delete(i)
            for i in range(10, 20):
                t.put(i, {"v": 1})
            db.checkpoint()  # deletes at chain heads, kept for the reader
            check("folded deletes at the heads", t)
            t.put(0, {"v": 2})  # re-insert over a folded delete
            t.delete(10)  # delete of a folded update
            t.delete(50)  # delete of a folded head
            t.insert({"_id": 500, "v": 3})
            t.put(20, {"v": 4})  # update: the count does not move
            check("memtable over folded heads", t)
            with db.transaction():
                t.delete(1)  # already deleted: no change
                t.put(2, {"v": 5})  # own insert over a delete
                t.delete(500)  # own delete of a memtable insert
                t.delete(30)  # own delete of a folded record
                t.insert({"_id": 600, "v": 6})
                check("own writes", t)
            check("after the commit", t)
        db.checkpoint()  # the reader is gone: the deletes are pruned away
        check("pruned", t)
    assert [c[1] for c in counts] == [100, 100, 90, 90, 90, 90, 90]


def test_a_snapshot_older_than_the_served_generation_counts_what_it_sees(
    tmp_path: Path,
) -> None:
    """A transaction may be served by a generation newer than its snapshot
    (database.py D5: a checkpoint can land between the pin and the choice of
    view); its heads are then not the snapshot's, and the count must still be
    the snapshot's.  The race is made here by handing the transaction the
    newer view."""
    with (
        mvcc.open(tmp_path, autovacuum=False) as db,
        mvcc.open(tmp_path, autovacuum=False) as writer,
    ):
        t, w = db.table("t"), writer.table("t")
        t.insert_many([{"_id": i} for i in range(10)])
        with db.transaction(readonly=True) as tx:
            assert len(t) == 10
            for i in range(5):
                w.delete(i)
            w.insert({"_id": 99})
            writer.checkpoint()
            began_with = tx._view
            tx._view = db._refresh_view()
            try:
                assert tx._view.ts > tx.snapshot
                assert len(t) == 10 == sum(1 for _doc in t)
            finally:
                tx._view = began_with  # what the transaction's end unpins
        assert len(t) == 6


def test_stats_count_records_and_dead_versions_without_scanning_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanned: list[int] = []
    real_scan = Database._scan

    def watched(self: Database, tid: int, *args: Any) -> Any:
        scanned.append(tid)
        return real_scan(self, tid, *args)

    with (
        mvcc.open(tmp_path, autovacuum=False) as db,
        mvcc.open(tmp_path, autovacuum=False) as other,
    ):
        a, b = db.table("a", indexes=["v"]), db.table("b")
        a.insert_many([{"_id": i, "v": i % 3} for i in range(300)])
        b.insert_many([{"_id": i} for i in range(7)])
        db.checkpoint()
        with other.transaction(readonly=True):
            other.table("a").get(0)
            for i in range(40):
                a.put(i, {"v": 9})  # 40 dead versions once folded
            for i in range(40, 50):
                a.delete(i)  # 10 deletes: 10 dead versions and 10 tombstones
            db.checkpoint()
            b.insert({"_id": 7})  # in the memtable only
            monkeypatch.setattr(Database, "_scan", watched)
            stats = db.stats()
            monkeypatch.undo()
            assert set(scanned) == {CATALOG}
            assert stats["tables"] == {"a": 290, "b": 8}
            # The page file's, catalog rows included: b's 8th is not folded yet.
            assert stats["versions"]["live"] == 290 + 7 + 2
            assert stats["versions"]["dead"] == 40 + 10 + 10
            oldest = stats["oldest_snapshot"]
            assert oldest is not None and oldest["retains_versions"] == 60  # the deletes too
        db.checkpoint()
        stats = db.stats()
        assert stats["tables"] == {"a": 290, "b": 8}
        assert stats["versions"] == {
            "live": 298 + 2,
            "dead": 0,
            "dead_bytes": 0,
            "retained": 0,
            "retained_bytes": 0,
        }
