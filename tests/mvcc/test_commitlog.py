"""The commit log: appends under the commit lock, group commit, its failure paths.

Invariants cited as (Cn) are those of mvcc/commitlog.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from locking.errors import LockWaitTimeout
from locking.filelock import FileLock, LockSet
from locking.statefile import StateFile
from mvcc.commitlog import (
    GATHER_FRACTION,
    CommitLog,
    durable_end,
    durable_fields,
    end_fields,
    wal_end,
)
from storage.errors import LogFailed
from storage.wal import END_OF_FILE, WAL
from tests.support.faults import FsyncSwitch

pytestmark = pytest.mark.timeout(120)


def init(directory: Path) -> None:
    """A fresh directory whose state publishes the WAL's start as its end."""
    with WAL(directory / "wal") as wal, StateFile(directory / "state") as sf:
        sf.write(**end_fields(wal.start()))


@contextlib.contextmanager
def opened(
    directory: Path, *, durability: str = "full", timeout: float = 30.0, **wal_options: Any
) -> Iterator[CommitLog]:
    with (
        WAL(directory / "wal", durability=durability, **wal_options) as wal,
        LockSet(directory, timeout=timeout) as locks,
        StateFile(directory / "state") as sf,
    ):
        yield CommitLog(
            wal, sf, locks.commit, locks.sync, (locks.gate0, locks.gate1), timeout=timeout
        )


def commit(log: CommitLog, payload: bytes) -> int:
    log.commit_lock.acquire(log.timeout)
    try:
        ts = log.append(log.state.read(), [payload]).commit_ts
    finally:
        log.commit_lock.release()
    log.wait_durable(ts)
    return ts


def _committer(directory: str, index: int, count: int, barrier: Any, conn: Any) -> None:
    """Commit `count` frames; report (ts, durable_ts seen at the ack) and syncs led."""
    acks = []
    with opened(Path(directory), sync_delay=0.002) as log:
        barrier.wait(60)  # start together: groups form only among concurrent committers
        for i in range(count):
            ts = commit(log, f"{index}:{i}".encode())
            acks.append((ts, log.state.read().durable_ts))
        conn.send((acks, log.syncs_led))


def test_processes_commit_consecutive_durable_frames_sharing_fsyncs(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    """C1-C3 across 4 real processes with a slow emulated disk."""
    import multiprocessing

    init(tmp_path)
    workers, count = 4, 40
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(workers)
    pipes = [spawn.Pipe() for _ in range(workers)]
    for i, (_, child) in enumerate(pipes):
        procs(_committer, str(tmp_path), i, count, barrier, child)
    reports = []
    for parent, _ in pipes:
        assert parent.poll(90), "a committer sent nothing"
        reports.append(parent.recv())
    acks = [a for r, _ in reports for a in r]
    assert sorted(ts for ts, _ in acks) == list(range(1, workers * count + 1))  # C1
    assert all(durable >= ts for ts, durable in acks)  # C2: acknowledged only when durable
    led = sum(n for _, n in reports)
    assert led < workers * count * 0.8, f"{led} syncs for {workers * count} frames"  # C3
    with WAL(tmp_path / "wal") as wal, StateFile(tmp_path / "state") as sf:
        reader = wal.read(wal.start())
        frames = list(reader)
        assert reader.stopped is not None and reader.stopped.reason == END_OF_FILE
        state = sf.read()
        assert [f.ts for f in frames] == list(range(1, workers * count + 1))
        assert sorted(f.payload for f in frames) == sorted(
            f"{i}:{k}".encode() for i in range(workers) for k in range(count)
        )
        assert state.durable_ts == state.commit_ts == workers * count
        assert wal_end(state) == durable_end(state) == reader.position


def test_a_lone_committer_syncs_every_frame_and_never_gathers(tmp_path: Path) -> None:
    init(tmp_path)
    with opened(tmp_path, sync_delay=0.001) as log:
        for i in range(20):
            assert commit(log, b"x") == i + 1
        state = log.state.read()
        assert (log.syncs_led, log.frames_gathered, log.wal.syncs) == (20, 20, 20)
        assert state.sync_frames == 1 and state.sync_us >= 1000
        assert log.gathers == 0


def test_a_leader_gathers_the_last_group_size_then_syncs_them_all(tmp_path: Path) -> None:
    """The gather waits for as many frames as the last sync covered, no longer."""
    init(tmp_path)
    with opened(tmp_path, sync_delay=0.002) as log, opened(tmp_path) as other:
        with log.commit_lock:
            log.state.write(sync_frames=2, sync_us=50_000)  # last group: 2 frames, 50 ms
            mine = log.append(log.state.read(), [b"mine"]).commit_ts

        def sibling() -> None:
            time.sleep(0.005)  # it arrives after the leader began to gather
            with other.commit_lock:
                other.append(other.state.read(), [b"sibling"])

        t = threading.Thread(target=sibling)
        t.start()
        started = time.monotonic()
        log.wait_durable(mine)
        took = time.monotonic() - started
        t.join()
        state = log.state.read()
        assert state.durable_ts == 2 and state.sync_frames == 2  # one sync for both
        assert log.wal.syncs == 1
        assert log.gathers == 1
        assert took < GATHER_FRACTION * 0.050, took  # ended by the sibling, not the cap


def test_a_gather_gives_up_after_its_share_of_a_sync(tmp_path: Path) -> None:
    init(tmp_path)
    with opened(tmp_path) as log:
        with log.commit_lock:
            log.state.write(sync_frames=4, sync_us=20_000)
            mine = log.append(log.state.read(), [b"alone"]).commit_ts
        started = time.monotonic()
        log.wait_durable(mine)
        took = time.monotonic() - started
        assert GATHER_FRACTION * 0.020 <= took < 0.020 + GATHER_FRACTION * 0.020
        assert log.state.read().sync_frames == 1  # the group shrank to what came


@pytest.mark.parametrize("durability", ["normal", "off"])
def test_without_full_durability_append_publishes_durable(tmp_path: Path, durability: str) -> None:
    init(tmp_path)
    with opened(tmp_path, durability=durability) as log:
        for i in range(5):
            assert commit(log, b"x") == i + 1
        state = log.state.read()
        assert state.durable_ts == state.commit_ts == 5
        assert wal_end(state) == durable_end(state)
        assert log.wal.syncs == 0 and log.syncs_led == 0


def test_a_failed_sync_publishes_nothing_and_another_leader_covers(tmp_path: Path) -> None:
    """C4: the failing leader raises LogFailed; the frame stays non-durable until a
    healthy process syncs it."""
    init(tmp_path)
    fsync = FsyncSwitch(failing=True)
    with opened(tmp_path, device_factory=fsync.device) as bad, opened(tmp_path) as good:
        with bad.commit_lock:
            mine = bad.append(bad.state.read(), [b"x"]).commit_ts
        with pytest.raises(LogFailed, match="fsync"):
            bad.wait_durable(mine)
        assert bad.state.read().durable_ts == 0
        assert not bad.sync_lock.held and not bad.commit_lock.held
        good.wait_durable(mine)
        assert good.state.read().durable_ts == mine
        with pytest.raises(LogFailed), bad.commit_lock:
            bad.append(bad.state.read(), [b"y"])  # the failed log refuses for good


@pytest.mark.parametrize("gate", [None, "gate1"], ids=["sync-lock-only", "sync-lock-and-gate"])
def test_a_wait_behind_a_stuck_leader_times_out_naming_the_sync_lock(
    tmp_path: Path, gate: str | None
) -> None:
    """C5, whether the follower finds the gate open (it polls) or closed (it
    blocks on it shared): after `timeout` it raises, naming the sync lock."""
    init(tmp_path)
    with opened(tmp_path, timeout=0.2) as log:
        with log.commit_lock:
            mine = log.append(log.state.read(), [b"x"]).commit_ts
        stuck = [FileLock(tmp_path / "sync.lock", "sync")]
        if gate is not None:
            stuck.append(FileLock(tmp_path / f"{gate}.lock", gate))  # sync_gen 0: gate 1
        for lock in stuck:
            lock.acquire(1)  # a leader that never finishes
        try:
            started = time.monotonic()
            with pytest.raises(LockWaitTimeout, match="sync") as info:
                log.wait_durable(mine)
            assert 0.2 <= time.monotonic() - started < 2
            assert info.value.seconds >= 0.2
            assert info.value.name == "sync"
        finally:
            for lock in stuck:
                lock.close()
        log.wait_durable(mine)  # the lock is free again: it leads and syncs
        assert log.state.read().durable_ts == mine
        assert log.state.read().sync_gen == 1


def test_a_follower_sleeps_on_the_gate_until_the_leader_publishes(tmp_path: Path) -> None:
    """C6: a follower blocks on the closed gate (no poll: `open_gates` stays 0)
    and returns once the leader published its sync and opened the gate."""
    init(tmp_path)
    with opened(tmp_path) as log, opened(tmp_path) as leader:
        with log.commit_lock:
            mine = log.append(log.state.read(), [b"x"]).commit_ts
        leader.sync_lock.acquire(1)
        leader.gates[1].acquire(1)  # what a leader of sync 1 holds
        returned = threading.Event()
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                log.wait_durable(mine)
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)
            returned.set()

        thread = threading.Thread(target=follow)
        thread.start()
        try:
            assert not returned.wait(0.3)  # the frame is not durable: it waits
            state = leader.state.read()
            leader.wal.sync(wal_end(state))
            with leader.commit_lock:
                leader.state.write(
                    state, **durable_fields(wal_end(state)), sync_gen=state.sync_gen + 1
                )
            assert not returned.wait(0.1) or errors  # published, but the gate is closed
        finally:
            leader.sync_lock.release()
            leader.gates[1].release()
        assert returned.wait(5)
        thread.join(5)
        assert errors == []
        assert log.open_gates == 0 and log.syncs_led == 0 and log.wal.syncs == 0


def test_append_refuses_without_the_commit_lock(tmp_path: Path) -> None:
    init(tmp_path)
    with opened(tmp_path) as log:
        before = log.state.read()
        with pytest.raises(RuntimeError, match="commit lock"):
            log.append(before, [b"x"])
        assert log.state.read() == before
        assert list(log.wal.read(log.wal.start())) == []
