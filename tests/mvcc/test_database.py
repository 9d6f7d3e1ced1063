"""The database core: open/close, tables, transactions, conflicts, snapshots, processes.

Invariants cited as (Dn), (Tn) are those of mvcc/database.py and mvcc/transaction.py.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mvcc

pytestmark = pytest.mark.timeout(120)


def test_documents_round_trip_exactly_and_survive_reopen(tmp_path: Path) -> None:
    doc = {"s": "x", "b": b"x", "i": 1, "f": 1.0, "n": None, "l": [1, [2.5, "y"]], "d": {"k": True}}
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        pk = t.insert(doc)
        assert t.get(pk) == {**doc, "_id": pk}
        assert type(t.get(pk)["f"]) is float and type(t.get(pk)["b"]) is bytes
    with mvcc.open(tmp_path) as db:  # recovery replays the WAL
        assert db.tables() == ["t"]
        assert db.table("t").get(pk) == {**doc, "_id": pk}


def test_conflicting_writers_first_committer_wins(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("acc"), b.table("acc")
        ta.put(1, {"v": 0})
        with pytest.raises(mvcc.ConflictError) as info, b.transaction():
            tb.update(1, {"v": 2})
            with a.transaction():
                ta.update(1, {"v": 1})
        assert isinstance(info.value, mvcc.Retryable)
        assert (info.value.table, info.value.key) == ("acc", 1)
        assert "acc" in str(info.value)
        assert ta.get(1)["v"] == 1 == tb.get(1)["v"]
        with a.transaction(), b.transaction():  # disjoint keys never conflict
            ta.put(2, {"v": 2})
            tb.put(3, {"v": 3})
        assert len(ta) == 3


def test_a_snapshot_is_stable_while_another_commits(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("t"), b.table("t")
        ta.put(1, {"v": 1})
        with a.transaction(readonly=True):
            assert ta.get(1) == {"v": 1, "_id": 1}
            tb.put(1, {"v": 2})
            tb.put(2, {"v": 2})
            assert ta.get(1) == {"v": 1, "_id": 1}  # D1: the snapshot of the block
            assert ta.count() == 1
        assert ta.get(1)["v"] == 2 and ta.count() == 2


def test_write_skew_allowed_under_snapshot_prevented_under_serializable(tmp_path: Path) -> None:
    def go_off_call(db: mvcc.Database, me: int, other: Callable[[], None], iso: str) -> None:
        doctors = db.table("doctors")
        with db.transaction(isolation=iso):
            on_call = doctors.count({"on_call": True})
            other()
            if on_call >= 2:
                doctors.update(me, {"on_call": False})

    for iso, expect_conflict in (("snapshot", False), ("serializable", True)):
        path = tmp_path / iso
        with mvcc.open(path) as a, mvcc.open(path) as b:
            a.table("doctors").put(1, {"on_call": True})
            a.table("doctors").put(2, {"on_call": True})

            def bob(b: mvcc.Database = b, iso: str = iso) -> None:
                go_off_call(b, 2, lambda: None, iso)

            if expect_conflict:
                with pytest.raises(mvcc.ConflictError):
                    go_off_call(a, 1, bob, iso)
                assert a.table("doctors").count({"on_call": True}) == 1
            else:
                go_off_call(a, 1, bob, iso)
                assert a.table("doctors").count({"on_call": True}) == 0  # the anomaly


def test_nested_block_is_a_savepoint_and_readonly_refuses_writes(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        with db.transaction():
            t.put(1, {"v": 1})
            with pytest.raises(KeyError), db.transaction():
                t.put(2, {"v": 2})
                raise KeyError("undo the inner block only")
            assert 2 not in t
        assert 1 in t and 2 not in t
        with db.transaction(readonly=True), pytest.raises(mvcc.ReadOnlyError):
            t.put(3, {})
        with pytest.raises(mvcc.ValidationError) as info:
            t.insert_many([{"ok": 1}, {"bad": {1, 2}}])
        assert "bad" in str(info.value)
        assert len(t) == 1  # none of insert_many's documents


def test_closed_and_bad_options(tmp_path: Path) -> None:
    db = mvcc.open(tmp_path)
    t = db.table("t")
    db.close()
    with pytest.raises(mvcc.ClosedError):
        t.get(1)
    with pytest.raises(mvcc.ClosedError):
        db.table("u")
    with pytest.raises(mvcc.ValidationError) as info:
        mvcc.open(tmp_path, durability="sometimes")
    assert info.value.field == "durability"
    bad = {
        "durability": "sometimes",
        "lock_timeout": -1,
        "autovacuum": "yes",
        "page_size": 1000,
        "compression": "lz4",
    }
    for option, value in bad.items():
        with pytest.raises(mvcc.ValidationError) as info:
            mvcc.open(tmp_path / "new", **{option: value})
        assert info.value.field == option and option in str(info.value)
    assert not (tmp_path / "new").exists()  # checked before anything is written
    with pytest.raises(TypeError):
        mvcc.open(tmp_path, no_such_option=1)
    with pytest.raises(mvcc.ClosedError):
        db.checkpoint()


def test_page_size_and_compression_options(tmp_path: Path) -> None:
    text = "compressible " * 200
    with mvcc.open(tmp_path, page_size=8192, compression="zlib") as db:
        db.table("t").put(1, {"text": text})
        assert db.pages.page_size == 8192
        db.checkpoint()
    assert (tmp_path / "pages").stat().st_size % 8192 == 0
    assert text.encode()[:200] not in (tmp_path / "pages").read_bytes()  # stored deflated
    with mvcc.open(tmp_path) as db:  # the page size is the file's, whatever is asked
        assert db.pages.page_size == 8192
        assert db.table("t").get(1)["text"] == text


def test_encrypted_directory_needs_the_right_passphrase(tmp_path: Path) -> None:
    with mvcc.open(tmp_path, passphrase="s3cret") as db:
        db.table("t").put(1, {"secret": "plaintext-marker"})
    for wal in (tmp_path / "wal").iterdir():
        assert b"plaintext-marker" not in wal.read_bytes()
    with pytest.raises(mvcc.InvalidKey):
        mvcc.open(tmp_path)
    with pytest.raises(mvcc.InvalidKey):
        mvcc.open(tmp_path, passphrase="wrong")
    with mvcc.open(tmp_path, passphrase="s3cret") as db:
        assert db.table("t").get(1)["secret"] == "plaintext-marker"


def _incrementer(path: str, worker: int, rounds: int, conn: Any) -> None:
    acknowledged = [0] * 10
    with mvcc.open(path) as db:
        counters = db.table("counters")

        @db.transactional(retries=1000)
        def bump(key: int) -> int:
            return counters.update(key, lambda d: {**d, "n": d["n"] + 1})

        for i in range(rounds):
            key = (worker * 7 + i) % 10
            assert bump(key) == 1
            acknowledged[key] += 1
    conn.send(acknowledged)


def test_processes_incrementing_shared_counters_lose_no_update(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    with mvcc.open(tmp_path) as db:
        for k in range(10):
            db.table("counters").put(k, {"n": 0})
    workers, rounds = 4, 40
    pipes = [multiprocessing.get_context("spawn").Pipe() for _ in range(workers)]
    for w, (_, child) in enumerate(pipes):
        procs(_incrementer, str(tmp_path), w, rounds, child)
    acked = [0] * 10
    for parent, _ in pipes:
        assert parent.poll(90), "a worker sent nothing"
        acked = [a + b for a, b in zip(acked, parent.recv())]
    with mvcc.open(tmp_path) as db:
        final = [db.table("counters").get(k)["n"] for k in range(10)]
    assert sum(acked) == workers * rounds
    assert final == acked


def test_transactional_retries_conflicts_only_and_returns_the_value(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("t"), b.table("t")
        ta.put(1, {"n": 0})
        runs: list[int] = []

        @a.transactional(retries=3)
        def bump() -> int:
            n = ta.get(1)["n"]
            runs.append(n)
            if len(runs) == 1:
                tb.put(1, {"n": 100})  # another writer commits after our snapshot
            ta.put(1, {"n": n + 1})
            return n + 1

        assert bump() == 101 and runs == [0, 100]  # re-run once, on a fresh snapshot

        @a.transactional(retries=2)
        def always_loses() -> None:
            ta.put(1, {"n": -1})
            tb.put(1, {"n": len(runs)})
            runs.append(0)

        runs.clear()
        with pytest.raises(mvcc.ConflictError):
            always_loses()
        assert len(runs) == 3  # the first run and two retries

        @a.transactional
        def fails() -> None:
            runs.append(0)
            raise KeyError("not retried")

        runs.clear()
        with pytest.raises(KeyError):
            fails()
        assert len(runs) == 1 and ta.get(1)["n"] == 2
        with a.transaction():  # inside a transaction it joins it, no retry
            assert bump() == 3
        with pytest.raises(mvcc.ValidationError) as info:
            a.transactional(retries=-1)
        assert info.value.field == "retries"


def test_reopen_after_a_torn_wal_tail_keeps_every_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        ids = [t.insert({"n": n}) for n in range(3)]
    with mvcc.open(tmp_path) as db:
        end = db.state.read().wal_offset
    segment = max((tmp_path / "wal").iterdir())
    with open(segment, "r+b") as f:  # after the last frame: the preallocated zeros
        f.seek(end)
        f.write(b"\xab" * 37)  # a frame torn mid-write, as a crash leaves it
    with caplog.at_level("WARNING", logger="mvcc"), mvcc.open(tmp_path) as db:
        t = db.table("t")
        assert [t.get(i)["n"] for i in ids] == [0, 1, 2]
        assert "truncating" in caplog.text
        t.insert({"n": 3})
    with mvcc.open(tmp_path) as db:
        assert sorted(d["n"] for d in db.table("t")) == [0, 1, 2, 3]


def test_a_damaged_state_file_is_rebuilt_by_the_first_opener(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mvcc.open(tmp_path) as db:
        pk = db.table("t").insert({"v": 1})
    raw = bytearray((tmp_path / "state").read_bytes())
    raw[128:512] = b"\xff" * 384  # both slots: what a torn, never-synced page may hold
    (tmp_path / "state").write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="mvcc"), mvcc.open(tmp_path) as db:
        assert db.table("t").get(pk)["v"] == 1
    assert "state file is damaged" in caplog.text


def _writer(path: str, conn: Any) -> None:
    """Insert records forever, sending each acknowledged id (the parent kills us)."""
    with mvcc.open(path) as db:
        t = db.table("t")
        while True:
            conn.send(t.insert({"payload": "x" * 100}))


def test_sigkill_of_a_writer_loses_no_acknowledged_commit(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    acked: list[int] = []
    for round_ in range(5):
        parent, child = multiprocessing.get_context("spawn").Pipe()
        p = procs(_writer, str(tmp_path), child)
        wanted = len(acked) + 10 + 7 * round_
        while len(acked) < wanted:
            assert parent.poll(60), "the writer stopped acknowledging"
            acked.append(parent.recv())
        p.kill()  # SIGKILL, most likely inside the next commit
        p.join(30)
        with contextlib.suppress(EOFError):
            while parent.poll():  # acknowledged before it died
                acked.append(parent.recv())
        with mvcc.open(tmp_path) as db:
            t = db.table("t")
            assert all(i in t for i in acked), f"round {round_}: an acknowledged id is gone"
            assert len(t) >= len(acked)
