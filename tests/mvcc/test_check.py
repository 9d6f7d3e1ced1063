"""`mvcc.check`: a clean database checks ok; every kind of damage injected into
the page file or the WAL is reported, naming the tree and the page or frame,
all of them and not only the first, without one bad page turning into a flood
of derived mismatches; the checker writes nothing and works next to a
process that commits and checkpoints.

Checks cited as (Hn) are mvcc/check.py's, invariants (Vn) mvcc/versions.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import mvcc
from mvcc import database as database_module
from mvcc.check import MAX_LISTED, Problem
from mvcc.index import IndexDef, make_entry
from mvcc.versions import (
    decode_chain,
    encode_chain,
    index_tree_name,
    tree_name,
    vacuum_tree_name,
)
from storage.codec import pack, pack_doc
from storage.keys import decode_key, encode_key
from storage.pagefile import PageFile, WriteTxn
from storage.wal import WAL, LogPosition, segment_name

pytestmark = pytest.mark.timeout(120)

PASSPHRASE = "correct horse"


@dataclass(frozen=True)
class Built:
    """A database made by `_build`, and the ids its trees are named by."""

    path: Path
    users: int  # table id
    items: int
    age: IndexDef
    name: IndexDef  # ("last", "first")
    email: IndexDef  # unique


def _build(path: Path) -> Built:
    """Two tables, three indexes, updates and deletes kept by a pinned reader
    (so chains have several versions and vacuum lists have entries), a dropped
    table, and commits after the last checkpoint (WAL frames to read)."""
    with mvcc.open(str(path), autovacuum=False) as db:
        reader = mvcc.open(str(path), autovacuum=False)
        users = db.table("users", indexes=["age", ("last", "first")], unique=["email"])
        items = db.table("items")
        gone = db.table("gone", indexes=["n"])
        users.insert_many(
            [
                {"_id": i, "age": i % 7, "last": f"L{i % 3}", "first": "F", "email": f"e{i}"}
                for i in range(60)
            ]
        )
        items.insert_many(
            [{"n": i, "pad": "x" * (i * 80)} for i in range(40)]
        )  # up to 3 KB: the larger ones overflow (btree.py B6)
        gone.insert_many([{"n": i} for i in range(5)])
        db.checkpoint()
        with reader.transaction(readonly=True):
            for i in range(0, 60, 3):
                users.update(i, {"age": 100 + i})
            for i in range(1, 60, 10):
                users.delete(i)
            db.drop_table("gone")
            db.checkpoint()
        for i in range(20):
            users.update(2, {"age": i})
        with db.transaction(readonly=True) as tx:
            age, name, email = users._indexes(tx)
        reader.close()
    return Built(path, users.tid, items.tid, age, name, email)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return _build(tmp_path_factory.mktemp("template"))


@pytest.fixture
def built(template: Built, tmp_path: Path) -> Built:
    """A fresh copy of the template database (building one takes longer)."""
    path = tmp_path / "db"
    shutil.copytree(template.path, path)
    return Built(path, template.users, template.items, template.age, template.name, template.email)


@contextlib.contextmanager
def _damage(path: Path) -> Iterator[WriteTxn]:
    """One page-file write straight through the storage layer (no mvcc rules)."""
    pages = PageFile.open(str(path / "pages"), sync=False)
    try:
        with pages.begin() as txn:
            yield txn
    finally:
        pages.close()


def _tree(txn: WriteTxn, name: bytes) -> dict[bytes, bytes]:
    tree = txn.tree(name)
    assert tree is not None, name
    return dict(tree.cursor())


def _files(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and p.name != "readers"
    }


# -- a clean database ----------------------------------------------------------------


def test_a_clean_database_checks_ok_with_plausible_counts(built: Built) -> None:
    before = _files(built.path)
    report = mvcc.check(built.path)
    assert report.ok, str(report)
    assert report.problems == [] and report.notes == []
    assert report.records >= 59 + 40  # users (some deleted, kept as tombstones) + items
    assert report.versions > report.records  # the pinned reader kept old versions
    assert report.index_entries >= 3 * 54  # three indexes of the live users, and more
    assert report.vacuum_entries >= 20  # the updated and deleted users (V6)
    assert report.frames == 20  # the updates after the last checkpoint
    assert report.pages > 10 and report.trees >= 6 and report.gen >= 2 and report.ts > 0
    assert str(report).startswith(f"{built.path}: ok: generation {report.gen}")
    assert _files(built.path) == before  # read-only


def test_check_runs_inside_another_open_database_and_its_transaction(built: Built) -> None:
    with mvcc.open(str(built.path), autovacuum=False) as db:
        users = db.table("users")
        with db.transaction(readonly=True):
            assert users.get(0) is not None
            report = mvcc.check(built.path)  # attaches next to `db`: no recovery, a pin
        users.put(1000, {"age": 1})
        db.checkpoint()
        assert mvcc.check(built.path).ok
    assert report.ok, str(report)


def test_check_while_another_thread_commits_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pinned generation stays readable (K4), and WAL segments a checkpoint
    deletes under the check are skipped, not reported (H6)."""
    monkeypatch.setattr(database_module, "WAL_SEGMENT_SIZE", 8192)
    stop = threading.Event()
    errors: list[BaseException] = []
    checkpoints = 0
    with mvcc.open(str(tmp_path), autovacuum=False) as db:
        t = db.table("t", indexes=["n"])

        def churn() -> None:
            nonlocal checkpoints
            try:
                i = 0
                while not stop.is_set():
                    t.put(i % 50, {"n": i, "pad": "p" * 100})
                    i += 1
                    if i % 10 == 0:
                        db.checkpoint()
                        checkpoints += 1
            except BaseException as exc:
                errors.append(exc)

        writer = threading.Thread(target=churn)
        writer.start()
        reports: list[mvcc.CheckReport] = []
        try:
            deadline = time.monotonic() + 20
            while (checkpoints < 6 or len(reports) < 10) and time.monotonic() < deadline:
                reports.append(mvcc.check(tmp_path))
        finally:
            stop.set()
            writer.join(30)
    assert not errors, errors
    assert all(r.ok for r in reports), "\n".join(str(r) for r in reports if not r.ok)
    assert len({r.gen for r in reports}) > 1  # checkpoints did land in between


# -- one injected problem at a time ----------------------------------------------------


def test_a_missing_index_entry(built: Built) -> None:
    name = index_tree_name(built.age.id)
    with _damage(built.path) as txn:
        entry = next(iter(_tree(txn, name)))
        assert txn.tree(name).delete(entry)  # type: ignore[union-attr]
    report = mvcc.check(built.path)
    (problem,) = report.problems
    assert (problem.check, problem.tree) == ("H3", f"i{built.age.id}")
    assert "no entry for" in problem.reason and problem.about == "index age of table users"
    assert f"i{built.age.id}" in str(report) and not report.ok


def test_a_stray_index_entry(built: Built) -> None:
    name = index_tree_name(built.name.id)
    stray = make_entry(encode_key(("Nobody", "Ever")), encode_key((999,)))
    with _damage(built.path) as txn:
        txn.tree(name).put(stray, b"")  # type: ignore[union-attr]
    (problem,) = mvcc.check(built.path).problems
    assert (problem.check, problem.tree) == ("H3", f"i{built.name.id}")
    assert "record 999" in problem.reason and "no retained version" in problem.reason
    assert problem.pgno is not None  # the leaf that holds it


def test_a_head_entry_with_another_document(built: Built) -> None:
    name = index_tree_name(built.email.id)
    with _damage(built.path) as txn:
        head = next(e for e, v in _tree(txn, name).items() if v)
        txn.tree(name).put(head, pack_doc({"forged": True}))  # type: ignore[union-attr]
    (problem,) = mvcc.check(built.path).problems
    assert (problem.check, problem.tree) == ("H3", f"i{built.email.id}")
    assert "another document" in problem.reason and problem.pgno is not None


def test_an_older_entry_with_a_document_and_a_head_entry_without(built: Built) -> None:
    name = index_tree_name(built.age.id)
    with _damage(built.path) as txn:
        entries = _tree(txn, name)
        older = next(e for e, v in entries.items() if not v)
        head = next(e for e, v in entries.items() if v)
        tree = txn.tree(name)
        assert tree is not None
        tree.put(older, pack_doc({"age": 1}))
        tree.put(head, b"")
    reasons = [p.reason for p in mvcc.check(built.path).problems]
    assert len(reasons) == 2
    assert any("head entry" in r and "is empty" in r for r in reasons), reasons
    assert any("older version" in r and "carries a document" in r for r in reasons), reasons


def test_a_chain_out_of_order_is_one_problem(built: Built) -> None:
    """H2 (V1, V3); the record becomes a gap, so its index entries and vacuum
    list key are not reported as mismatches too."""
    doc = pack_doc({"_id": 3, "age": 3})
    with _damage(built.path) as txn:
        txn.tree(tree_name(built.users)).put(  # type: ignore[union-attr]
            encode_key((3,)), encode_chain([(3, doc), (5, doc)])
        )
    (problem,) = mvcc.check(built.path).problems
    assert (problem.check, problem.tree) == ("H2", f"t{built.users}")
    assert "record 3" in problem.reason and "out of order" in problem.reason
    assert problem.pgno is not None and problem.about == "table users"


def test_a_version_after_the_checkpoint_ts_and_a_bad_document(built: Built) -> None:
    report = mvcc.check(built.path)
    with _damage(built.path) as txn:
        items = txn.tree(tree_name(built.items))
        assert items is not None
        items.put(encode_key((5000,)), encode_chain([(report.ts + 100, pack_doc({"n": 1}))]))
        items.put(encode_key((5001,)), pack([7, pack([1, 2])]))  # a list, not a document
    problems = sorted(mvcc.check(built.path).problems, key=lambda p: p.reason)
    assert [(p.check, p.tree) for p in problems] == [("H2", f"t{built.items}")] * 2
    assert "record 5000" in problems[0].reason and "after the generation's" in problems[0].reason
    assert "record 5001" in problems[1].reason and "document at ts 7" in problems[1].reason


def test_a_missing_and_a_stray_vacuum_list_key(built: Built) -> None:
    name = vacuum_tree_name(built.users)
    with _damage(built.path) as txn:
        listed = next(iter(_tree(txn, name)))
        tree = txn.tree(name)
        assert tree is not None
        tree.delete(listed)
        tree.put((1).to_bytes(8, "big") + encode_key((10,)), b"")  # record 10: one version
    problems = sorted(mvcc.check(built.path).problems, key=lambda p: p.reason)
    assert [(p.check, p.tree) for p in problems] == [("H4", f"v{built.users}")] * 2
    assert "does not list record" in problems[0].reason
    assert "lists record 10 at head ts 1" in problems[1].reason and problems[1].pgno


def test_a_vacuum_list_that_is_missing_altogether(built: Built) -> None:
    with _damage(built.path) as txn:
        wanted = len(_tree(txn, vacuum_tree_name(built.users)))
        assert txn.drop_tree(vacuum_tree_name(built.users))
    report = mvcc.check(built.path)
    assert {(p.check, p.tree) for p in report.problems} == {("H4", f"v{built.users}")}
    listed = [p for p in report.problems if "does not list" in p.reason]
    assert len(listed) == min(wanted, MAX_LISTED)
    if wanted > MAX_LISTED:  # the rest are counted, not listed
        assert f"{wanted - MAX_LISTED} more problems" in report.problems[-1].reason


def test_orphan_trees_and_an_unlisted_index(built: Built) -> None:
    with _damage(built.path) as txn:
        orphan = txn.tree(tree_name(12345), create=True)
        assert orphan is not None
        orphan.put(encode_key((1,)), encode_chain([(1, pack_doc({"a": 1}))]))
        txn.tree(vacuum_tree_name(777), create=True).put(  # type: ignore[union-attr]
            (1).to_bytes(8, "big") + encode_key((1,)), b""
        )
        txn.tree(index_tree_name(4242), create=True).put(b"x", b"")  # type: ignore[union-attr]
    problems = {(p.check, p.tree): p.reason for p in mvcc.check(built.path).problems}
    assert "orphan tree" in problems["H5", "t12345"]
    assert "orphan tree" in problems["H5", "v777"]
    assert "no newest catalog row lists" in problems["H3", "i4242"]
    assert "which no chain" in problems["H4", "v777"]  # and it lists what is not there
    assert len(problems) == 4


def _first_leaf(path: Path, name: bytes) -> tuple[int, list[object]]:
    """The page number of the first leaf of a tree, and its values."""
    pages = PageFile.open(str(path / "pages"), sync=False)
    try:
        tree = pages.snapshot().tree(name)
        assert tree is not None and tree.root is not None
        node = pages.node(*tree.root)
        while node.kids is not None:
            node = pages.node(node.kids[0], node.gens[0])
        return node.pgno, list(node.vals)
    finally:
        pages.close()


def _flip(path: Path, pgno: int) -> None:
    """Flip one byte in the middle of a page: it no longer unseals."""
    pages = PageFile.open(str(path / "pages"), sync=False)
    page_size = pages.page_size
    pages.close()
    with open(path / "pages", "r+b") as f:
        f.seek(pgno * page_size + page_size // 2)
        byte = f.read(1)
        f.seek(pgno * page_size + page_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_page_failing_its_checksum_names_the_page_and_nothing_else(built: Built) -> None:
    """H1 names the page; the walk names what it could not read there; the
    records of that page are a gap, so no index or vacuum mismatch follows."""
    pgno, _values = _first_leaf(built.path, tree_name(built.users))
    _flip(built.path, pgno)
    report = mvcc.check(built.path)
    assert not report.ok
    assert {(p.check, p.tree, p.pgno) for p in report.problems} == {
        ("H1", f"t{built.users}", pgno),
        ("H2", f"t{built.users}", pgno),
    }, str(report)
    assert all(p.file == str(built.path / "pages") for p in report.problems)
    assert f"page {pgno}" in str(report) and "checksum" in str(report)


def test_a_bad_index_page_is_not_a_flood_of_missing_entries(built: Built) -> None:
    pgno, values = _first_leaf(built.path, index_tree_name(built.age.id))
    _flip(built.path, pgno)
    report = mvcc.check(built.path)
    assert {(p.check, p.tree, p.pgno) for p in report.problems} == {
        ("H1", f"i{built.age.id}", pgno),
        ("H3", f"i{built.age.id}", pgno),
    }, str(report)
    assert len(values) > 2  # the entries the bad page held are not each reported


def test_a_bad_overflow_page_is_one_record(built: Built) -> None:
    """A large document lives in an overflow run; a damaged run is a problem
    naming its page and the record, and the rest of the table is checked."""
    pages = PageFile.open(str(built.path / "pages"), sync=False)
    try:
        tree = pages.snapshot().tree(tree_name(built.items))
        assert tree is not None and tree.root is not None
        leaves, refs = [tree.root], []
        while leaves:
            node = pages.node(*leaves.pop())
            if node.kids is not None:
                leaves.extend(zip(node.kids, node.gens))
            else:
                refs += [(k, v) for k, v in zip(node.keys, node.vals) if type(v) is not bytes]
    finally:
        pages.close()
    assert refs, "no document of the template is large enough for an overflow run"
    key, (pgno, _gen, _n, _len) = refs[0]
    _flip(built.path, pgno)
    report = mvcc.check(built.path)
    assert {(p.check, p.tree, p.pgno) for p in report.problems} == {
        ("H1", f"t{built.items}", pgno),
        ("H2", f"t{built.items}", pgno),
    }, str(report)
    walked = next(p for p in report.problems if p.check == "H2")
    assert walked.reason.startswith(repr(decode_key(key)[0]))
    assert report.records >= 59 + 39  # every other record was read


def test_several_problems_are_all_reported(built: Built) -> None:
    doc = pack_doc({"_id": 4})
    with _damage(built.path) as txn:
        age = txn.tree(index_tree_name(built.age.id))
        listed = txn.tree(vacuum_tree_name(built.users))
        users = txn.tree(tree_name(built.users))
        assert age is not None and listed is not None and users is not None
        age.delete(next(iter(age.cursor()))[0])
        age.put(make_entry(encode_key((77,)), encode_key((888,))), b"")
        listed.delete(next(iter(listed.cursor()))[0])
        users.put(encode_key((4,)), encode_chain([(1, doc), (2, doc)]))
        txn.tree(tree_name(999), create=True).put(  # type: ignore[union-attr]
            encode_key((1,)), encode_chain([(1, doc)])
        )
    report = mvcc.check(built.path)
    found = {(p.check, p.tree) for p in report.problems}
    assert found == {
        ("H3", f"i{built.age.id}"),
        ("H4", f"v{built.users}"),
        ("H2", f"t{built.users}"),
        ("H5", "t999"),
    }, str(report)
    reasons = " | ".join(p.reason for p in report.problems)
    assert "no entry for" in reasons and "record 888" in reasons
    assert len(report.problems) == 5
    assert len(str(report).splitlines()) == 1 + 5  # the summary, then one line each


def test_the_report_reads_as_a_summary_and_one_line_a_problem(built: Built) -> None:
    with _damage(built.path) as txn:
        txn.tree(index_tree_name(4242), create=True).put(b"x", b"")  # type: ignore[union-attr]
    report = mvcc.check(built.path)
    head, line = str(report).splitlines()
    assert head.startswith(f"{built.path}: 1 PROBLEMS: generation {report.gen} ")
    assert f"{report.records} records" in head and f"{report.frames} WAL frames" in head
    (problem,) = report.problems
    assert line == str(problem)
    assert line.startswith(f"[H3] {built.path / 'pages'}: page {problem.pgno} (i4242): ")
    assert isinstance(problem, Problem) and isinstance(report, mvcc.CheckReport)


# -- the WAL -------------------------------------------------------------------------


def _frames(path: Path) -> list[tuple[int, int, int, int]]:
    """(ts, segment, start offset, end offset) of the frames after the page
    file's checkpoint."""
    pages = PageFile.open(str(path / "pages"), sync=False)
    try:
        start = LogPosition.unpack(pages.read_meta().user)
    finally:
        pages.close()
    with WAL(path / "wal") as wal:
        return [(f.ts, f.start.segment, f.start.offset, f.end.offset) for f in wal.read(start)]


def test_a_damaged_frame_in_the_middle_of_the_wal_and_nothing_truncated(built: Built) -> None:
    frames = _frames(built.path)
    assert len(frames) == 20
    ts, segment, offset, _end = frames[10]
    segment_path = built.path / "wal" / segment_name(segment)
    with open(segment_path, "r+b") as f:
        f.seek(offset + 40)  # inside the payload: the checksum chain breaks
        byte = f.read(1)
        f.seek(offset + 40)
        f.write(bytes([byte[0] ^ 0x01]))
    before = _files(built.path)
    report = mvcc.check(built.path)
    (problem,) = report.problems
    assert (problem.check, problem.tree, problem.frame) == ("H6", "wal", ts)
    assert problem.file == str(segment_path)
    assert "checksum mismatch" in problem.reason and "are durable" in problem.reason
    assert report.frames == 10
    assert _files(built.path) == before  # no recovery, no truncation: read-only


def test_a_torn_tail_past_the_durable_end_is_a_note(built: Built) -> None:
    ts, segment, _start, end = _frames(built.path)[-1]
    with open(built.path / "wal" / segment_name(segment), "r+b") as f:
        f.seek(end)  # where the next frame would go: a header of garbage
        f.write(b"\x07" * 40)
    report = mvcc.check(built.path)
    assert report.ok, str(report)
    (note,) = report.notes
    assert "past the durable end" in note and f"before frame {ts + 1}" in note
    assert "bad frame magic" in note


# -- keys and directories ------------------------------------------------------------


def test_an_encrypted_database_checks_ok_and_a_wrong_key_is_invalid_key(tmp_path: Path) -> None:
    path = tmp_path / "enc"
    with mvcc.open(str(path), passphrase=PASSPHRASE, autovacuum=False) as db:
        t = db.table("t", indexes=["n"])
        t.insert_many([{"n": i % 5} for i in range(50)])
        db.checkpoint()
        t.update(3, {"n": 9})
    report = mvcc.check(path, passphrase=PASSPHRASE)
    assert report.ok and report.records >= 50 and report.frames == 1, str(report)
    with pytest.raises(mvcc.InvalidKey):
        mvcc.check(path, passphrase="wrong")
    with pytest.raises(mvcc.InvalidKey):
        mvcc.check(path)


def test_a_key_for_an_unencrypted_database_and_no_database(built: Built, tmp_path: Path) -> None:
    with pytest.raises(mvcc.InvalidKey):
        mvcc.check(built.path, passphrase=PASSPHRASE)
    with pytest.raises(mvcc.Error, match="no database"):
        mvcc.check(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_the_template_has_what_the_tests_assume(built: Built) -> None:
    """The fixtures are what the tests assume: several versions, tombstones."""
    pages = PageFile.open(str(built.path / "pages"), sync=False)
    try:
        tree = pages.snapshot().tree(tree_name(built.users))
        assert tree is not None
        chains = [decode_chain(v, "test") for _k, v in tree.cursor()]
    finally:
        pages.close()
    assert any(len(c) > 1 for c in chains) and any(c[0][1] is None for c in chains)


def _leaves(path: Path, name: bytes) -> list[int]:
    """The page numbers of every leaf of a tree."""
    pages = PageFile.open(str(path / "pages"), sync=False)
    try:
        tree = pages.snapshot().tree(name)
        assert tree is not None and tree.root is not None
        out, stack = [], [tree.root]
        while stack:
            node = pages.node(*stack.pop())
            if node.kids is None:
                out.append(node.pgno)
            else:
                stack.extend(zip(node.kids, node.gens))
        return sorted(out)
    finally:
        pages.close()


def test_a_sweep_of_damaged_pages_reports_every_one(built: Built) -> None:
    """Every leaf of two trees damaged at once: each is named by H1, none is
    missed after the first, and the walk goes on to the end (counts, WAL)."""
    damaged = _leaves(built.path, tree_name(built.users)) + _leaves(
        built.path, tree_name(built.items)
    )
    assert len(damaged) >= 4, damaged
    for pgno in damaged:
        _flip(built.path, pgno)
    calls: list[tuple[int, int | None]] = []
    report = mvcc.check(built.path, progress=lambda done, total: calls.append((done, total)))
    named = {p.pgno for p in report.problems if p.check == "H1" and "checksum" in p.reason}
    assert named == set(damaged), str(report)
    assert report.pages > 0 and report.frames >= 0
    assert all(total and done > 0 for done, total in calls)


def test_check_reports_progress_in_pages(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["mvcc.check"], "PROGRESS_EVERY", 4)
    calls: list[tuple[int, int | None]] = []
    report = mvcc.check(built.path, progress=lambda done, total: calls.append((done, total)))
    assert report.ok and len(calls) >= 3
    assert [done for done, _ in calls] == [4 * (i + 1) for i in range(len(calls))]
    assert {total for _, total in calls} == {report.pages}
