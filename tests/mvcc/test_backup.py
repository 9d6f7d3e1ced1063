"""Online backup and restore (mvcc/backup.py B1-B8).

Real processes where processes matter: writers committing during a backup,
and a backup killed with SIGKILL.  Waits are on conditions with deadlines (a
pipe answers, the commit ts moves), never a bare sleep.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import random
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

import mvcc
from mvcc import backup as backup_module
from mvcc import where
from mvcc.backup import MANIFEST
from tests.support.waiting import recv, until

pytestmark = pytest.mark.timeout(120)

SPAWN = multiprocessing.get_context("spawn")
ACCOUNTS = 12
START = 100
SECRET = "plaintext-that-must-not-reach-the-disk-7f3a"


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


# -- a consistent snapshot under concurrent writers -------------------------------


def _transfers(path: str, worker: int, stop: Any, conn: Connection) -> None:
    """Bank transfers until `stop`; reports "going" after 20 commits, then the
    log of its commits: transfer id -> (a, a's n, a's balance, b, b's n, b's balance)."""
    rng = random.Random(worker)
    log: dict[str, tuple[int, int, int, int, int, int]] = {}
    with mvcc.open(path, durability="normal") as db:
        acc = db.table("acc")
        i = 0
        while not stop.is_set():
            a, b = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 30)
            name = f"{worker}-{i}"
            i += 1
            try:
                with db.transaction():
                    da, dbb = acc.get(a), acc.get(b)
                    if da["bal"] < amount:
                        continue
                    na = {"bal": da["bal"] - amount, "n": da["n"] + 1, "last": name}
                    nb = {"bal": dbb["bal"] + amount, "n": dbb["n"] + 1, "last": name}
                    acc.put(a, na)
                    acc.put(b, nb)
            except mvcc.ConflictError:
                continue
            log[name] = (a, na["n"], na["bal"], b, nb["n"], nb["bal"])
            if len(log) == 20:
                conn.send("going")
    conn.send(log)


def _assert_a_committed_state(docs: dict[int, dict[str, Any]], log: dict[str, Any]) -> None:
    """`docs` is a state the writers could have seen: the total holds, every
    account holds what the start or some committed transfer wrote, and every
    transfer seen is seen whole (its other account is at least as far on)."""
    assert sorted(docs) == list(range(ACCOUNTS))
    assert sum(d["bal"] for d in docs.values()) == ACCOUNTS * START
    for account, doc in docs.items():
        if doc["last"] is None:
            assert (doc["n"], doc["bal"]) == (0, START), doc
            continue
        a, na, bala, b, nb, balb = log[doc["last"]]
        mine, other, other_n = ((na, bala), b, nb) if account == a else ((nb, balb), a, na)
        assert (doc["n"], doc["bal"]) == mine, (account, doc, log[doc["last"]])
        assert docs[other]["n"] >= other_n, (account, doc, docs[other])


def test_backups_under_two_writer_processes_each_hold_one_committed_snapshot(
    tmp_path: Path, procs: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    with mvcc.open(src) as db, db.transaction():
        for k in range(ACCOUNTS):
            db.table("acc").put(k, {"bal": START, "n": 0, "last": None})
    stop = SPAWN.Event()
    pipes = [SPAWN.Pipe() for _ in range(2)]
    for w, (_mine, theirs) in enumerate(pipes):
        procs(_transfers, str(src), w, stop, theirs)
    for mine, _theirs in pipes:
        assert recv(mine) == "going"
    with mvcc.open(src) as db:
        pinned: list[int] = []

        def progress(done: int, total: int | None) -> None:
            now = db.state.read().commit_ts
            if not pinned:
                # The backup's snapshot is pinned: the writers go on committing
                # (B4), and a checkpoint runs meanwhile without taking its pages.
                pinned.append(now)
                until(lambda: db.state.read().commit_ts >= now + 30, 30, "30 more commits")
                db.checkpoint()
            elif done == ACCOUNTS // 2 and total is None:  # half-way through the table
                until(lambda: db.state.read().commit_ts >= now + 10, 30, "10 more commits")

        # A progress call per record: the pause half-way lets commits land
        # between the records one scan reads (a backup that is not one
        # snapshot then breaks the total: checked by mutation).
        monkeypatch.setattr(backup_module, "PROGRESS_EVERY", 1)
        results = [db.backup(tmp_path / "backup0", progress=progress)]
        monkeypatch.undo()
        assert results[0].ts <= pinned[0] < db.state.read().commit_ts - 30
        for i in (1, 2):  # and more while they go on
            until(lambda: db.state.read().commit_ts > results[-1].ts, 30, "a commit")
            results.append(db.backup(tmp_path / f"backup{i}"))
        stop.set()
        logs: dict[str, Any] = {}
        for mine, _theirs in pipes:
            logs.update(recv(mine))
    for i, result in enumerate(results):
        report = mvcc.check(result.path)
        assert report.ok, str(report)
        assert report.ts == result.ts and report.frames == 0
        restored = tmp_path / f"restored{i}"
        mvcc.restore(result.path, restored)
        with mvcc.open(restored, autovacuum=False) as db:
            docs = {d["_id"]: d for d in db.table("acc")}
            assert db.stats()["commit_ts"] == result.ts
        _assert_a_committed_state(docs, logs)
        assert any(d["last"] is not None for d in docs.values())  # transfers before the pin
        assert mvcc.check(restored).ok


# -- compact ------------------------------------------------------------------------


def test_a_backup_holds_one_version_per_live_record_and_no_wal_frame(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "backup"
    with mvcc.open(src, autovacuum=False) as db:
        t = db.table("t", indexes=["k"])
        with db.transaction():
            for i in range(200):
                t.put(i, {"k": i % 10, "v": 0})
        db.checkpoint()  # versions in the page file, and more in the WAL after it
        for r in range(3):
            for i in range(0, 200, 2):
                t.update(i, {"v": r + 1})
        assert t.delete(where("k") == 3) == 20
        db.table("dropped").insert({"x": 1})
        db.drop_table("dropped")
        source = mvcc.check(src)
        assert source.frames > 0
        result = db.backup(dest)
        assert result.ts == db.stats()["commit_ts"]
        assert result.tables == {"t": 180}
        expected = {d["_id"]: d for d in t}
    report = mvcc.check(dest)
    assert report.ok, str(report)
    assert report.records == 180 + 1  # and one catalog row: the dropped table is gone
    assert report.versions == report.records  # no dead version
    assert report.index_entries == 180  # the index tree is written, head entries only
    assert (report.frames, report.vacuum_entries, report.gen) == (0, 0, 1)
    assert report.ts == result.ts
    assert sorted(os.listdir(dest / "wal")) == ["0000000000000001.wal"]
    assert (dest / "wal" / "0000000000000001.wal").stat().st_size == 64  # a header only
    with mvcc.open(dest, autovacuum=False) as db:  # a backup opens as it is (B3)
        stats = db.stats()
        assert stats["versions"]["dead"] == 0 and stats["versions"]["live"] == 181
        assert stats["wal"]["frames"] == 0 and stats["commit_ts"] == result.ts
        assert {d["_id"]: d for d in db.table("t")} == expected
        assert db.tables() == ["t"]
        db.table("t").put("after", {"k": 1})  # the next commit is ts + 1
        assert db.stats()["commit_ts"] == result.ts + 1


# -- restore --------------------------------------------------------------------------


def _backup(tmp_path: Path, **options: Any) -> tuple[Path, list[dict[str, Any]]]:
    src, dest = tmp_path / "src", tmp_path / "backup"
    with mvcc.open(src, autovacuum=False, **options) as db:
        t = db.table("t", indexes=["k"])
        with db.transaction():
            for i in range(50):
                t.insert({"k": i % 7, "secret": SECRET})
        db.backup(dest)
        return dest, sorted(t, key=lambda d: d["_id"])


def test_restore_checks_refuses_a_non_empty_dest_and_honours_overwrite(tmp_path: Path) -> None:
    backup, docs = _backup(tmp_path)
    dest = tmp_path / "dest"
    result = mvcc.restore(backup, dest)
    assert result.records == 51 and MANIFEST not in os.listdir(dest)
    assert mvcc.check(dest).ok
    with mvcc.open(dest, autovacuum=False) as db:
        assert sorted(db.table("t"), key=lambda d: d["_id"]) == docs
        db.table("t").put("mine", {"k": 0})
    with pytest.raises(mvcc.Error, match=f"{dest} is not empty"):
        mvcc.restore(backup, dest)
    with mvcc.open(dest, autovacuum=False), pytest.raises(mvcc.Error, match="is open"):
        mvcc.restore(backup, dest, overwrite=True)  # never under a live process
    mvcc.restore(backup, dest, overwrite=True)
    with mvcc.open(dest, autovacuum=False) as db:
        assert "mine" not in db.table("t") and len(db.table("t")) == 50
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(mvcc.Error, match="not an mvcc data directory"):
        mvcc.restore(backup, other, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(mvcc.Error, match="is not a backup"):
        mvcc.restore(tmp_path / "src", tmp_path / "fresh")  # a data directory, not a backup
    assert not (tmp_path / "fresh").exists()
    with mvcc.open(tmp_path / "src", autovacuum=False) as db:
        with pytest.raises(mvcc.Error, match="not empty"):
            db.backup(backup)  # a backup never writes over anything either
        with pytest.raises(mvcc.Error, match="inside the database directory"):
            db.backup(tmp_path / "src" / "backup")
    assert not glob.glob(f"{tmp_path}/*.tmp-*") and not glob.glob(f"{tmp_path}/*.old-*")


def test_restore_refuses_a_damaged_backup_with_the_checks_problem(tmp_path: Path) -> None:
    backup, _docs = _backup(tmp_path)
    pages = backup / "pages"
    data = bytearray(pages.read_bytes())
    data[2 * 4096 + 200] ^= 0x01
    pages.write_bytes(bytes(data))
    with pytest.raises(mvcc.CorruptionError, match="page 2") as caught:
        mvcc.restore(backup, tmp_path / "dest")
    assert caught.value.problems and caught.value.problems[0].check == "H1"
    assert not (tmp_path / "dest").exists()
    data[2 * 4096 + 200] ^= 0x01  # repaired: now a file the check does not read
    pages.write_bytes(bytes(data))
    ids = backup / "ids"
    ids.write_bytes(ids.read_bytes()[:-1] + b"\x00")
    with pytest.raises(mvcc.CorruptionError, match="ids does not match the backup manifest"):
        mvcc.restore(backup, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not glob.glob(f"{tmp_path}/dest.tmp-*")


# -- encryption ------------------------------------------------------------------------


def test_an_encrypted_backup_opens_with_the_same_passphrase_only_and_holds_no_plaintext(
    tmp_path: Path,
) -> None:
    plain_backup, _ = _backup(tmp_path / "plain")
    assert any(SECRET.encode() in data for data in _files(plain_backup).values())  # the probe
    backup, docs = _backup(tmp_path / "enc", passphrase="s3cret")
    files = _files(backup)
    assert "key" in files
    assert not any(SECRET.encode() in data for data in files.values())
    dest = tmp_path / "dest"
    with pytest.raises(mvcc.InvalidKey):
        mvcc.restore(backup, dest)  # the check needs the key
    with pytest.raises(mvcc.InvalidKey):
        mvcc.restore(backup, dest, passphrase="wrong")
    assert not dest.exists()
    mvcc.restore(backup, dest, passphrase="s3cret")
    assert not any(SECRET.encode() in data for data in _files(dest).values())
    with pytest.raises(mvcc.InvalidKey):
        mvcc.open(dest, autovacuum=False)
    with mvcc.open(dest, passphrase="s3cret", autovacuum=False) as db:
        assert sorted(db.table("t"), key=lambda d: d["_id"]) == docs
        db.table("t").insert({"k": 1, "secret": SECRET})
    assert mvcc.check(dest, passphrase="s3cret").ok


# -- ids, indexes, unique constraints ------------------------------------------------


def test_after_a_restore_ids_are_fresh_and_indexes_and_unique_constraints_work(
    tmp_path: Path,
) -> None:
    src, backup, dest = tmp_path / "src", tmp_path / "backup", tmp_path / "dest"
    with mvcc.open(src, autovacuum=False) as db:
        users = db.table("users", indexes=["age", ("last", "first")], unique=["email"])
        with db.transaction():
            ids = [
                users.insert(
                    {"age": i % 40, "last": f"L{i % 9}", "first": f"F{i}", "email": f"{i}@x"}
                )
                for i in range(300)
            ]
        users.delete(where("_id") > 280)  # the newest ids handed out are not in any record
        db.backup(backup)
    report = mvcc.check(backup)
    assert report.ok and report.index_entries == 3 * 280, str(report)
    mvcc.restore(backup, dest)
    with mvcc.open(dest, autovacuum=False) as db:
        users = db.table("users")
        fresh = [users.insert({"age": 1, "email": f"new{i}@x"}) for i in range(3)]
        assert min(fresh) > max(ids), (fresh, max(ids))
        with pytest.raises(mvcc.UniqueViolation):
            users.insert({"age": 2, "email": "7@x"})
        for query in (where("age") >= 30, where("age") == 4, where("last") == "L3"):
            assert "index" in users.explain(query)
            scanned = sorted(d["_id"] for d in users if query(d))
            assert sorted(users.find(query).ids()) == scanned
    assert mvcc.check(dest).ok


# -- a backup killed half-way ------------------------------------------------------------


def _backup_and_hang(src: str, dest: str, at: int, conn: Connection) -> None:
    """Back `src` up, stopping for good at the progress call number `at`."""
    calls = []

    def progress(done: int, total: int | None) -> None:
        calls.append(done)
        if len(calls) == at:
            conn.send(done)
            conn.recv()  # never comes: the parent kills this process

    with mvcc.open(src, autovacuum=False) as db:
        db.backup(dest, progress=progress)


@pytest.mark.parametrize("at", [1, 2], ids=["pinned", "mid-table"])
def test_a_backup_killed_half_way_leaves_nothing_at_dest(
    tmp_path: Path, procs: Callable[..., Any], at: int
) -> None:
    src, dest = tmp_path / "src", tmp_path / "backup"
    with mvcc.open(src, autovacuum=False) as db, db.transaction():
        t = db.table("t", indexes=["k"])
        for i in range(2500):
            t.put(i, {"k": i % 13})
    mine, theirs = SPAWN.Pipe()
    child = procs(_backup_and_hang, str(src), str(dest), at, theirs)
    done = recv(mine)
    assert (done > 0) == (at == 2)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert not dest.exists()
    (left,) = glob.glob(f"{dest}.tmp-*")  # litter, never at dest
    with pytest.raises(mvcc.Error, match="is not a backup"):
        mvcc.restore(left, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    with mvcc.open(src, autovacuum=False) as db:  # the killed pin is gone; a new backup works
        assert db.backup(dest).records == 2501
    assert mvcc.check(dest).ok
