"""Many transactions at once: threads, asyncio tasks, forked children, two opens in one process,
real processes moving money, phantoms, a reader beside a held commit lock.

Invariants cited as (Dn) are mvcc/database.py's, (Tn) mvcc/transaction.py's.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mvcc
from tests.conftest import SPAWN

pytestmark = pytest.mark.timeout(180)

ACCOUNTS = 10
START = 100


def test_threads_share_one_database_and_lose_no_update(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("c")
        for k in range(4):
            t.put(k, {"n": 0})

        @db.transactional(retries=10_000)
        def bump(k: int) -> None:
            t.update(k, lambda d: {**d, "n": d["n"] + 1})

        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def worker(w: int) -> None:
            try:
                barrier.wait(10)
                for i in range(40):
                    bump((w + i) % 4)
                    with db.transaction(readonly=True):  # each thread its own (T1)
                        assert sum(d["n"] for d in t) >= 0
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors
        assert sum(d["n"] for d in t) == 8 * 40


def test_two_databases_on_one_directory_in_one_process(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        a.table("t").put(1, {"v": "a"})
        assert b.table("t").get(1) == {"v": "a", "_id": 1}
        with a.transaction(readonly=True):
            b.table("t").put(1, {"v": "b"})
            b.checkpoint()
            assert a.table("t").get(1)["v"] == "a"  # b's checkpoint kept a's version
        assert a.table("t").get(1)["v"] == "b"
    with mvcc.open(tmp_path) as a:
        assert a.table("t").get(1)["v"] == "b"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_database_opened_before_fork_keeps_working_in_the_child(tmp_path: Path) -> None:
    db = mvcc.open(tmp_path)
    t = db.table("t")
    first = t.insert({"who": "parent"})
    read_end, write_end = os.pipe()
    with db.transaction():
        t.put("held", {"v": 1})  # the parent's, uncommitted at the fork
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                tx = db.current()
                assert tx is None  # the parent's transaction is not the child's (D6)
                assert t.get(first)["who"] == "parent" and t.get("held") is None
                ids = [t.insert({"who": "child"}) for _ in range(3)]
                with db.transaction():
                    t.put("child", {"v": 2})
                os.write(write_end, json.dumps(ids).encode())
                db.close()
                code = 0
            except BaseException as exc:
                os.write(write_end, f"child failed: {exc!r}".encode())
            finally:
                os._exit(code)
        # The parent keeps its transaction open until the child has reported.
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 60)
        assert ready, "the child reported nothing"
        report = os.read(read_end, 1000).decode()
        os.close(read_end)
    assert not report.startswith("child failed"), report
    child_ids = json.loads(report)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert t.get("child") == {"v": 2, "_id": "child"}  # the child's commit is shared
    mine = [t.insert({"who": "parent"}) for _ in range(3)]
    assert not set(mine) & set(child_ids)  # id blocks are per process
    assert t.get("held")["v"] == 1
    db.close()


def _transfers(path: str, worker: int, seconds: float, isolation: str, conn: Any) -> None:
    rng = random.Random(worker)
    committed = conflicts = 0
    with mvcc.open(path, durability="normal") as db:
        acc = db.table("acc")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            a, b = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 60)
            try:
                with db.transaction(isolation=isolation):
                    if acc.get(a)["bal"] >= amount:
                        acc.update(a, lambda d, m=amount: {**d, "bal": d["bal"] - m})
                        acc.update(b, lambda d, m=amount: {**d, "bal": d["bal"] + m})
                committed += 1
            except mvcc.ConflictError:
                conflicts += 1
            with db.transaction(readonly=True):
                total = sum(d["bal"] for d in acc)
                if total != ACCOUNTS * START:
                    conn.send(("bad total", total))
                    return
    conn.send(("ok", committed, conflicts))


@pytest.mark.parametrize("isolation", ["snapshot", "serializable"])
def test_bank_transfers_keep_every_snapshot_balanced(
    tmp_path: Path, procs: Callable[..., Any], isolation: str
) -> None:
    with mvcc.open(tmp_path) as db, db.transaction():
        for k in range(ACCOUNTS):
            db.table("acc").put(k, {"bal": START})
    pipes = [SPAWN.Pipe() for _ in range(4)]
    for w, (_, child) in enumerate(pipes):
        procs(_transfers, str(tmp_path), w, 3.0, isolation, child)
    results = []
    for parent, _ in pipes:
        assert parent.poll(90), "a worker reported nothing"
        results.append(parent.recv())
    assert all(r[0] == "ok" for r in results), results
    assert sum(r[1] for r in results) > 20
    with mvcc.open(tmp_path) as db:
        balances = [d["bal"] for d in db.table("acc")]
    assert sum(balances) == ACCOUNTS * START
    assert min(balances) >= 0, balances  # a checked debit never overdraws


def test_a_phantom_insert_aborts_a_serializable_reader(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as a, mvcc.open(tmp_path) as b:
        ta, tb = a.table("oncall"), b.table("oncall")
        ta.put(1, {"doc": "alice", "on": True})
        with pytest.raises(mvcc.ConflictError), a.transaction(isolation="serializable"):
            if ta.count(lambda d: d["on"]) < 2:  # a scan: a range read (T3)
                ta.put("log", {"note": "short-staffed"})
            tb.put(2, {"doc": "bob", "on": True})  # the phantom, committed meanwhile
        assert "log" not in ta
        with a.transaction(isolation="snapshot"):  # snapshot allows it
            if ta.count(lambda d: d["on"]) < 3:
                ta.put("log", {"note": "short-staffed"})
            tb.put(3, {"doc": "carol", "on": True})
        assert "log" in ta


def _hold_commit_lock(path: str, conn: Any) -> None:
    with mvcc.open(path) as db:
        db.locks.commit.acquire(10)
        conn.send("held")
        conn.poll(60)  # until the parent is done
        db.locks.commit.release()


def test_a_reader_completes_while_another_process_holds_the_commit_lock(
    tmp_path: Path, procs: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with mvcc.open(tmp_path, lock_timeout=1.0) as db:
        t = db.table("t")
        t.put(1, {"v": 1})
        parent, child = SPAWN.Pipe()
        procs(_hold_commit_lock, str(tmp_path), child)
        assert parent.poll(60) and parent.recv() == "held"
        began = time.monotonic()
        with db.transaction(readonly=True):
            assert t.get(1)["v"] == 1 and len(t) == 1
        with db.transaction():  # a read-write one that writes nothing commits too
            assert t.get(1)["v"] == 1
        assert time.monotonic() - began < 0.5
        with pytest.raises(mvcc.LockTimeout) as info:
            t.put(2, {"v": 2})
        assert "commit" in str(info.value)
        # A wait that ends is logged when slow (silent by default: NullHandler).
        releaser = threading.Timer(0.3, parent.send, ("done",))
        releaser.start()
        with caplog.at_level("WARNING", logger="mvcc"):
            t.put(3, {"v": 3})
        releaser.join()
        assert "for the commit lock" in caplog.text
    with mvcc.open(tmp_path) as db:
        assert 2 not in db.table("t") and 3 in db.table("t")


def test_asyncio_tasks_each_get_their_own_transaction(tmp_path: Path) -> None:
    with mvcc.open(tmp_path) as db:
        t = db.table("t")
        t.put(0, {"v": "base"})

        async def task(me: int, here: asyncio.Event, there: asyncio.Event) -> list[Any]:
            with db.transaction() as tx:
                t.put(me, {"v": me})
                here.set()
                await there.wait()  # the other task is inside its own block now
                assert db.current() is tx  # contextvars: each task its own (T1)
                seen = [t.get(1), t.get(2)]
            return seen

        async def main() -> list[list[Any]]:
            one, two = asyncio.Event(), asyncio.Event()
            return list(await asyncio.gather(task(1, one, two), task(2, two, one)))

        first, second = asyncio.run(main())
        assert first == [{"v": 1, "_id": 1}, None]  # its own write, not the other's
        assert second == [None, {"v": 2, "_id": 2}]
        assert db.current() is None and len(t) == 3  # both committed


def test_a_conflict_is_raised_only_once_its_winner_is_durable(tmp_path: Path) -> None:
    """D7: while the winner's sync is held up (another object holds the sync
    lock), the loser's ConflictError waits for it; a retry then sees it."""
    with (
        mvcc.open(tmp_path) as winner_db,
        mvcc.open(tmp_path) as loser_db,
        mvcc.open(tmp_path) as syncer,
    ):
        winner, loser = winner_db.table("t"), loser_db.table("t")
        winner.put(1, {"v": 0})
        outcome: dict[str, Any] = {}
        syncer.locks.sync.acquire(5)  # no group commit can sync until released

        def commit_winner() -> None:
            winner.put(1, {"v": "winner"})

        def commit_loser(tx_ready: threading.Event) -> None:
            try:
                with loser_db.transaction():
                    loser.get(1)
                    tx_ready.set()
                    loser.put(1, {"v": "loser"})
                    while loser_db.state.read().commit_ts < target:  # the winner appended
                        time.sleep(0.001)
            except mvcc.ConflictError:
                outcome["durable at raise"] = loser_db.state.read().durable_ts

        ready = threading.Event()
        target = winner_db.state.read().commit_ts + 1
        loser_thread = threading.Thread(target=commit_loser, args=(ready,))
        loser_thread.start()
        assert ready.wait(10)  # the loser's snapshot is taken: before the winner
        winner_thread = threading.Thread(target=commit_winner)
        winner_thread.start()
        loser_thread.join(0.5)
        assert loser_thread.is_alive()  # lost, but the winner is not durable yet
        syncer.locks.sync.release()
        loser_thread.join(20)
        winner_thread.join(20)
        assert outcome["durable at raise"] >= target
        assert loser.get(1)["v"] == "winner"
